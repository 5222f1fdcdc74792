/* check_tls_decrypt.c - the trace-side TLS decoder (faultgate/tls_decrypt.h)
 * against real sessions made in-process: the server is the fakes' TLS
 * (fakes/tls.c, its test CA), the client plain OpenSSL over memory BIOs
 * so that each case can pin the version and the suite; both log their
 * secrets to one memory FILE, which is the key log the decoder reads.
 *
 * Every exchange is recorded as the sequence of ciphertext flights each
 * side sent, then fed to the decoder: whole, one octet at a time, split at
 * every position of a short exchange, and in random pieces for a longer
 * one with KeyUpdate (TLS 1.3).  The plaintext out must be exactly what
 * each side wrote.  Also: a flipped bit in a record -> auth failure and
 * nothing more delivered; no secret -> no-key; a CBC suite -> suite;
 * plaintext injected before the ServerHello is skipped and counted; bad
 * key log lines -> file:line:col errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "faultgate/error.h"
#include "faultgate/tls_decrypt.h"
#include "faultgate/util.h"

#include "../fakes/tls.h"

/* --- one recorded session ---------------------------------------------- */

struct flight {
    int dir;
    uint8_t *b;
    size_t n;
};

struct sess {
    struct fg_tls_ctx *sctx;
    SSL_CTX *cctx;
    SSL *cli;
    BIO *crb, *cwb;
    struct fg_tls *srv;
    struct flight *f;
    size_t nf, capf;
    char *sent[2]; /* plaintext each side wrote */
    size_t nsent[2], capsent[2];
    FILE *klf;
    char *klbuf;
    size_t kllen;
};

static FILE *client_keylog;

static void cli_keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    fprintf(client_keylog, "%s\n", line);
    fflush(client_keylog);
}

static void add_flight(struct sess *s, int dir, const uint8_t *b, size_t n)
{
    if (!n)
        return;
    struct flight *f = FG_ARRAY_PUSH(s->f, s->nf, s->capf);
    f->dir = dir;
    f->b = fg_malloc(n);
    memcpy(f->b, b, n);
    f->n = n;
}

/* Move ciphertext both ways until neither side has anything to send. */
static void pump(struct sess *s)
{
    for (int moved = 1; moved;) {
        moved = 0;
        if (!SSL_is_init_finished(s->cli))
            SSL_do_handshake(s->cli);
        ERR_clear_error();
        size_t n = BIO_ctrl_pending(s->cwb);
        if (n) {
            uint8_t *b = fg_malloc(n);
            ck_assert_int_eq(BIO_read(s->cwb, b, (int)n), (int)n);
            add_flight(s, FG_C2S, b, n);
            ck_assert_int_eq(fg_tls_put(s->srv, (const char *)b, n), 0);
            free(b);
            moved = 1;
        }
        ck_assert_int_ge(fg_tls_handshake(s->srv), 0);
        size_t m;
        char *o = fg_tls_take_output(s->srv, &m);
        if (o && m) {
            add_flight(s, FG_S2C, (const uint8_t *)o, m);
            ck_assert_int_eq(BIO_write(s->crb, o, (int)m), (int)m);
            moved = 1;
        }
        free(o);
    }
}

static void sess_open(struct sess *s, int max_version, const char *ciphers, const char *suites13)
{
    memset(s, 0, sizeof *s);
    char err[FG_ERRBUF_SIZE];
    s->klf = open_memstream(&s->klbuf, &s->kllen);
    ck_assert_ptr_nonnull(s->klf);
    fg_tls_keylog_set(s->klf);
    client_keylog = s->klf;
    ck_assert_int_eq(fg_tls_server_ctx_new("mx.faultgate.test", &s->sctx, err, sizeof err), 0);
    s->cctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(s->cctx);
    SSL_CTX_set_verify(s->cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(s->cctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(s->cctx, max_version);
    if (ciphers)
        ck_assert_int_eq(SSL_CTX_set_cipher_list(s->cctx, ciphers), 1);
    if (suites13)
        ck_assert_int_eq(SSL_CTX_set_ciphersuites(s->cctx, suites13), 1);
    SSL_CTX_set_keylog_callback(s->cctx, cli_keylog);
    s->cli = SSL_new(s->cctx);
    s->crb = BIO_new(BIO_s_mem());
    s->cwb = BIO_new(BIO_s_mem());
    SSL_set_bio(s->cli, s->crb, s->cwb);
    SSL_set_connect_state(s->cli);
    s->srv = fg_tls_new(s->sctx);
    pump(s);
    ck_assert_int_eq(SSL_is_init_finished(s->cli), 1);
}

static void note_sent(struct sess *s, int dir, const char *b, size_t n)
{
    fg_array_reserve((void **)&s->sent[dir], &s->capsent[dir], s->nsent[dir] + n + 1, 1);
    memcpy(s->sent[dir] + s->nsent[dir], b, n);
    s->nsent[dir] += n;
}

static void drain(struct sess *s)
{
    char buf[4096];
    int r;
    while ((r = fg_tls_read(s->srv, buf, sizeof buf)) > 0)
        ;
    while ((r = SSL_read(s->cli, buf, sizeof buf)) > 0)
        ;
    ERR_clear_error();
}

static void cli_says(struct sess *s, const char *b, size_t n)
{
    ck_assert_int_eq(SSL_write(s->cli, b, (int)n), (int)n);
    note_sent(s, FG_C2S, b, n);
    pump(s);
    drain(s);
    pump(s);
}

static void srv_says(struct sess *s, const char *b, size_t n)
{
    ck_assert_int_eq(fg_tls_write(s->srv, b, n), 0);
    note_sent(s, FG_S2C, b, n);
    pump(s);
    drain(s);
    pump(s);
}

static void short_exchange(struct sess *s)
{
    cli_says(s, "EHLO client.test\r\n", 18);
    srv_says(s, "250-mx.faultgate.test\r\n250 PIPELINING\r\n", 39);
    cli_says(s, "MAIL FROM:<a@b.test>\r\n", 22);
    srv_says(s, "250 ok\r\n", 8);
}

static struct fg_keylog *sess_keylog(struct sess *s)
{
    fflush(s->klf);
    struct fg_keylog *kl = NULL;
    char err[FG_ERRBUF_SIZE];
    ck_assert_msg(fg_keylog_parse(s->klbuf, s->kllen, "mem", &kl, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(fg_keylog_count(kl), 1);
    return kl;
}

static void sess_close(struct sess *s)
{
    fg_tls_keylog_set(NULL);
    SSL_free(s->cli);
    SSL_CTX_free(s->cctx);
    fg_tls_free(s->srv);
    fg_tls_ctx_free(s->sctx);
    fclose(s->klf);
    free(s->klbuf);
    for (size_t i = 0; i < s->nf; i++)
        free(s->f[i].b);
    free(s->f);
    free(s->sent[0]);
    free(s->sent[1]);
}

/* --- the decoder's side ---------------------------------------------------- */

struct got {
    char *b[2];
    size_t n[2], cap[2];
};

static void on_plain(void *ud, enum fg_dir dir, const char *p, size_t n)
{
    struct got *g = ud;
    fg_array_reserve((void **)&g->b[dir], &g->cap[dir], g->n[dir] + n + 1, 1);
    memcpy(g->b[dir] + g->n[dir], p, n);
    g->n[dir] += n;
}

static void got_free(struct got *g)
{
    free(g->b[0]);
    free(g->b[1]);
    memset(g, 0, sizeof *g);
}

/* Feed the recorded flights; `cut` chooses piece sizes (0: whole flight). */
typedef size_t (*cut_fn)(void *st, size_t left);

static struct fg_tlsdec *replay(struct sess *s, const struct fg_keylog *kl, struct got *g,
                                cut_fn cut, void *st)
{
    memset(g, 0, sizeof *g);
    struct fg_tlsdec *d = fg_tlsdec_new(kl, on_plain, g);
    for (size_t i = 0; i < s->nf; i++) {
        const uint8_t *p = s->f[i].b;
        size_t left = s->f[i].n;
        while (left) {
            size_t k = cut ? cut(st, left) : left;
            if (k == 0 || k > left)
                k = left;
            fg_tlsdec_feed(d, (enum fg_dir)s->f[i].dir, p, k);
            p += k;
            left -= k;
        }
    }
    return d;
}

static void assert_same(struct sess *s, struct fg_tlsdec *d, struct got *g)
{
    ck_assert_msg(fg_tlsdec_status(d) == FG_TLSDEC_OK, "status %s: %s",
                  fg_tlsdec_status_name(fg_tlsdec_status(d)), fg_tlsdec_reason(d));
    ck_assert_int_eq(fg_tlsdec_ready(d), 1);
    for (int dir = 0; dir < 2; dir++) {
        ck_assert_uint_eq(g->n[dir], s->nsent[dir]);
        ck_assert_int_eq(memcmp(g->b[dir], s->sent[dir], s->nsent[dir]), 0);
    }
}

static size_t cut_one(void *st, size_t left)
{
    (void)st;
    (void)left;
    return 1;
}

/* Split the whole exchange at one global position. */
struct at {
    size_t pos, seen;
};

static size_t cut_at(void *st, size_t left)
{
    struct at *a = st;
    size_t k = left;
    if (a->pos > a->seen && a->pos < a->seen + left)
        k = a->pos - a->seen;
    a->seen += k;
    return k;
}

static size_t cut_rand(void *st, size_t left)
{
    struct fg_rng *r = st;
    uint64_t x = fg_rng_next(r);
    /* mostly small pieces, sometimes a large one */
    size_t k = x % 4 == 0 ? (size_t)(x >> 8) % 40000 : (size_t)(x >> 8) % 300;
    return k ? k : 1;
}

struct vcase {
    const char *name;
    int max_version;
    const char *ciphers, *suites13;
    unsigned suite;
};

static const struct vcase cases[] = {
    {"1.3 AES-128-GCM", TLS1_3_VERSION, NULL, "TLS_AES_128_GCM_SHA256", 0x1301},
    {"1.3 AES-256-GCM", TLS1_3_VERSION, NULL, "TLS_AES_256_GCM_SHA384", 0x1302},
    {"1.3 ChaCha20", TLS1_3_VERSION, NULL, "TLS_CHACHA20_POLY1305_SHA256", 0x1303},
    {"1.2 AES-128-GCM", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL, 0xC02B},
    {"1.2 AES-256-GCM", TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", NULL, 0xC02C},
    {"1.2 ChaCha20", TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", NULL, 0xCCA9},
};
#define NCASES (sizeof cases / sizeof cases[0])

START_TEST(short_every_split)
{
    const struct vcase *vc = &cases[_i];
    struct sess s;
    sess_open(&s, vc->max_version, vc->ciphers, vc->suites13);
    short_exchange(&s);
    struct fg_keylog *kl = sess_keylog(&s);
    struct got g;

    struct fg_tlsdec *d = replay(&s, kl, &g, NULL, NULL);
    assert_same(&s, d, &g);
    const struct fg_tlsdec_info *in = fg_tlsdec_info(d);
    ck_assert_msg(in->suite == vc->suite, "%s: suite %04x", vc->name, in->suite);
    ck_assert_uint_eq(in->version, vc->max_version == TLS1_3_VERSION ? 0x0304 : 0x0303);
    ck_assert_uint_eq(in->skipped[0] + in->skipped[1], 0);
    fg_tlsdec_free(d);
    got_free(&g);

    d = replay(&s, kl, &g, cut_one, NULL);
    assert_same(&s, d, &g);
    fg_tlsdec_free(d);
    got_free(&g);

    size_t total = 0;
    for (size_t i = 0; i < s.nf; i++)
        total += s.f[i].n;
    for (size_t pos = 1; pos < total; pos++) {
        struct at a = {pos, 0};
        d = replay(&s, kl, &g, cut_at, &a);
        assert_same(&s, d, &g);
        fg_tlsdec_free(d);
        got_free(&g);
    }
    fg_keylog_free(kl);
    sess_close(&s);
}
END_TEST

START_TEST(long_random_splits)
{
    const struct vcase *vc = &cases[_i];
    struct sess s;
    sess_open(&s, vc->max_version, vc->ciphers, vc->suites13);
    struct fg_rng r;
    fg_rng_seed(&r, 0x5eed + (uint64_t)_i);
    char *buf = fg_malloc(40000);
    for (int k = 0; k < 40; k++) {
        size_t n = 1 + (size_t)(fg_rng_next(&r) % 40000);
        for (size_t j = 0; j < n; j++)
            buf[j] = (char)fg_rng_next(&r);
        if (k % 2)
            srv_says(&s, buf, n);
        else
            cli_says(&s, buf, n);
        if (k == 20 && vc->max_version == TLS1_3_VERSION) {
            /* RFC 8446 §4.6.3: both sides move to the next secret. */
            ck_assert_int_eq(SSL_key_update(s.cli, SSL_KEY_UPDATE_REQUESTED), 1);
            cli_says(&s, "NOOP\r\n", 6);
            srv_says(&s, "250 ok\r\n", 8);
        }
    }
    free(buf);
    struct fg_keylog *kl = sess_keylog(&s);
    for (int round = 0; round < 5; round++) {
        struct got g;
        struct fg_tlsdec *d = replay(&s, kl, &g, cut_rand, &r);
        assert_same(&s, d, &g);
        if (vc->max_version == TLS1_3_VERSION)
            ck_assert_uint_eq(fg_tlsdec_info(d)->key_updates, 2);
        fg_tlsdec_free(d);
        got_free(&g);
    }
    fg_keylog_free(kl);
    sess_close(&s);
}
END_TEST

/* A bit flipped in the last client record: the tag check fails, the
 * status says so, and nothing of that record (or after it) comes out. */
START_TEST(tampered_record)
{
    const struct vcase *vc = &cases[_i];
    struct sess s;
    sess_open(&s, vc->max_version, vc->ciphers, vc->suites13);
    short_exchange(&s);
    cli_says(&s, "RCPT TO:<c@d.test>\r\n", 20);
    struct fg_keylog *kl = sess_keylog(&s);
    struct flight *last = NULL;
    for (size_t i = 0; i < s.nf; i++)
        if (s.f[i].dir == FG_C2S)
            last = &s.f[i];
    ck_assert_ptr_nonnull(last);
    last->b[last->n - 3] ^= 0x10;
    struct got g;
    struct fg_tlsdec *d = replay(&s, kl, &g, NULL, NULL);
    ck_assert_int_eq(fg_tlsdec_status(d), FG_TLSDEC_AUTH);
    ck_assert_ptr_nonnull(strstr(fg_tlsdec_reason(d), "client to server"));
    ck_assert_uint_eq(g.n[FG_C2S], 18 + 22); /* EHLO and MAIL, not RCPT */
    ck_assert_int_eq(fg_tlsdec_feed(d, FG_C2S, "x", 1), FG_EPROTO);
    fg_tlsdec_free(d);
    got_free(&g);
    fg_keylog_free(kl);
    sess_close(&s);
}
END_TEST

START_TEST(missing_key_and_unknown_suite)
{
    struct sess s;
    sess_open(&s, TLS1_3_VERSION, NULL, NULL);
    short_exchange(&s);
    struct fg_keylog *empty = NULL;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_keylog_parse("# nothing\n", 10, "mem", &empty, err, sizeof err), 0);
    struct got g;
    struct fg_tlsdec *d = replay(&s, empty, &g, NULL, NULL);
    ck_assert_int_eq(fg_tlsdec_status(d), FG_TLSDEC_NO_KEY);
    ck_assert_ptr_nonnull(strstr(fg_tlsdec_reason(d), "client random"));
    ck_assert_uint_eq(g.n[0] + g.n[1], 0);
    fg_tlsdec_free(d);
    got_free(&g);
    /* No key log at all behaves the same. */
    d = replay(&s, NULL, &g, NULL, NULL);
    ck_assert_int_eq(fg_tlsdec_status(d), FG_TLSDEC_NO_KEY);
    fg_tlsdec_free(d);
    got_free(&g);
    fg_keylog_free(empty);
    sess_close(&s);

    /* A CBC suite (TLS 1.2): reported, not decrypted. */
    sess_open(&s, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256", NULL);
    short_exchange(&s);
    struct fg_keylog *kl = sess_keylog(&s);
    d = replay(&s, kl, &g, NULL, NULL);
    ck_assert_int_eq(fg_tlsdec_status(d), FG_TLSDEC_SUITE);
    ck_assert_uint_eq(fg_tlsdec_info(d)->suite, 0xC023);
    ck_assert_uint_eq(g.n[0] + g.n[1], 0);
    fg_tlsdec_free(d);
    got_free(&g);
    fg_keylog_free(kl);
    sess_close(&s);
}
END_TEST

/* Plaintext after the 220 and before the handshake (the CVE-2011-0411
 * class, RFC 3207 §4) is counted, not read as TLS; the session still
 * decrypts. */
START_TEST(plaintext_before_handshake)
{
    struct sess s;
    sess_open(&s, TLS1_3_VERSION, NULL, NULL);
    short_exchange(&s);
    struct fg_keylog *kl = sess_keylog(&s);
    struct got g;
    memset(&g, 0, sizeof g);
    struct fg_tlsdec *d = fg_tlsdec_new(kl, on_plain, &g);
    const char *inj = "250-PIPELINING\r\n\026\001250 X\r\n";
    ck_assert_int_eq(fg_tlsdec_feed(d, FG_C2S, "RSET\r\n", 6), 0);
    int s2c_first = 1;
    for (size_t i = 0; i < s.nf; i++) {
        if (s.f[i].dir == FG_S2C && s2c_first) {
            s2c_first = 0;
            ck_assert_int_eq(fg_tlsdec_feed(d, FG_S2C, inj, strlen(inj)), 0);
        }
        fg_tlsdec_feed(d, (enum fg_dir)s.f[i].dir, s.f[i].b, s.f[i].n);
    }
    assert_same(&s, d, &g);
    ck_assert_uint_eq(fg_tlsdec_info(d)->skipped[FG_C2S], 6);
    ck_assert_uint_eq(fg_tlsdec_info(d)->skipped[FG_S2C], strlen(inj));
    fg_tlsdec_free(d);
    got_free(&g);
    /* After the first record, bytes that are not a record stop it. */
    d = replay(&s, kl, &g, NULL, NULL);
    ck_assert_int_eq(fg_tlsdec_feed(d, FG_C2S, "QUIT\r\n", 6), FG_EPROTO);
    ck_assert_int_eq(fg_tlsdec_status(d), FG_TLSDEC_NOT_TLS);
    fg_tlsdec_free(d);
    got_free(&g);
    fg_keylog_free(kl);
    sess_close(&s);
}
END_TEST

START_TEST(keylog_errors)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_keylog *kl = NULL;
    char rnd[65], sec[97];
    memset(rnd, 'a', 64);
    rnd[64] = 0;
    memset(sec, '0', 96);
    sec[96] = 0;
    char *ok = fg_asprintf("# comment\nEXPORTER_SECRET zz\nCLIENT_RANDOM %s %s\r\n"
                           "CLIENT_RANDOM %s %s\n",
                           rnd, sec, rnd, sec);
    ck_assert_int_eq(fg_keylog_parse(ok, strlen(ok), "k.keys", &kl, err, sizeof err), 0);
    ck_assert_uint_eq(fg_keylog_count(kl), 1);
    fg_keylog_free(kl);
    free(ok);

    char *bad = fg_asprintf("CLIENT_RANDOM %s %s\nCLIENT_RANDOM %.10sg%s %s\n", rnd, sec, rnd,
                            rnd + 11, sec);
    ck_assert_int_eq(fg_keylog_parse(bad, strlen(bad), "k.keys", &kl, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_null(kl);
    ck_assert_msg(strncmp(err, "k.keys:2:25: ", 13) == 0, "%s", err);
    free(bad);

    bad = fg_asprintf("SERVER_TRAFFIC_SECRET_0 %s %.40s\n", rnd, sec);
    ck_assert_int_eq(fg_keylog_parse(bad, strlen(bad), "k.keys", &kl, err, sizeof err), FG_EINPUT);
    ck_assert_msg(strncmp(err, "k.keys:1:90: ", 13) == 0, "%s", err);
    free(bad);

    ck_assert_int_eq(fg_keylog_load("/nonexistent/x.keys", &kl, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.keys"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tls_decrypt");
    TCase *tc = tcase_create("decrypt");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, short_every_split, 0, NCASES);
    tcase_add_loop_test(tc, long_random_splits, 0, NCASES);
    tcase_add_loop_test(tc, tampered_record, 0, NCASES);
    tcase_add_test(tc, missing_key_and_unknown_suite);
    tcase_add_test(tc, plaintext_before_handshake);
    tcase_add_test(tc, keylog_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
