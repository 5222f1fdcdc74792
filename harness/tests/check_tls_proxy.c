/* check_tls_proxy.c - the proxy's TLS-terminating mode at the socket level:
 * a TLS client (fakes/tls.c, verifying the proxy's test CA) -> the proxy in
 * terminate mode -> the fake MTA with STARTTLS, all libuv on 127.0.0.1 with
 * ephemeral ports.  Covers: triggers after STARTTLS fire on the plaintext
 * (reply replace at MAIL, stall at DATA), a whole message goes through
 * both TLS sessions, the key log holds well-formed NSS lines for both
 * sessions, and a client that does not trust the proxy's CA fails its
 * handshake cleanly.  Every loop run has a deadline. */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/proxy.h"
#include "faultgate/smtp.h"
#include "faultgate/util.h"

#include "../fakes/tls.h"

#define DEADLINE_MS 20000

/* One step of the client's dialogue: send `cmd` (NULL: nothing, the
 * greeting), then wait for a reply.  `tls`: start TLS after the reply. */
struct step {
    const char *cmd;
    int tls;
};

struct env {
    uv_loop_t loop;
    uv_timer_t deadline;
    uv_timer_t poll; /* the stall test: watches the proxy's state */
    struct fg_mta *mta;
    struct fg_proxy *proxy;
    struct fg_fault_set faults;
    char *logbuf;
    size_t loglen;
    FILE *log;
    /* the client */
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct fg_tls_ctx *cctx;
    struct fg_tls *tls;
    int tls_failed;
    struct fg_smtp_parser parser;
    const struct step *steps;
    size_t nsteps, step;
    char replies[8192]; /* every reply, in order */
    size_t rlen;
    int codes[32];
    size_t ncodes;
    int done; /* client closed */
    int peer_closed;
    int expect_stall; /* the last step is held by a stall: no reply */
    int stalled_seen;
    int tls_up_seen;
    unsigned closes;
};

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    ck_abort_msg("deadline passed: the test would have hung");
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    buf->base = fg_malloc(sz);
    buf->len = sz;
}

struct owrite {
    uv_write_t req;
    char data[];
};

static void owrite_done(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void raw_send(struct env *e, const char *s, size_t n)
{
    if (!n || e->done)
        return;
    struct owrite *w = fg_malloc(sizeof *w + n);
    memcpy(w->data, s, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&e->tcp, &b, 1, owrite_done) != 0)
        free(w);
}

static void tls_out(struct env *e)
{
    size_t n;
    char *b = fg_tls_take_output(e->tls, &n);
    raw_send(e, b, n);
    free(b);
}

static void client_send(struct env *e, const char *s)
{
    if (e->tls) {
        ck_assert_int_eq(fg_tls_write(e->tls, s, strlen(s)), 0);
        tls_out(e);
    } else {
        raw_send(e, s, strlen(s));
    }
}

static void closed_one(uv_handle_t *h)
{
    struct env *e = h->data;
    e->closes++;
}

static void client_close(struct env *e)
{
    if (e->done)
        return;
    e->done = 1;
    uv_close((uv_handle_t *)&e->tcp, closed_one);
}

static void next_step(struct env *e)
{
    if (e->step >= e->nsteps) {
        client_close(e);
        return;
    }
    const struct step *s = &e->steps[e->step];
    if (s->cmd)
        client_send(e, s->cmd);
}

/* The stall test: once the proxy holds the connection, stop. */
static void on_poll(uv_timer_t *t)
{
    struct env *e = t->data;
    if (fg_proxy_stalled_open(e->proxy) > 0) {
        e->stalled_seen = 1;
        uv_timer_stop(t);
        client_close(e);
    }
}

static int on_reply(void *ud, const struct fg_smtp_event *ev)
{
    struct env *e = ud;
    if (ev->type != FG_SMTP_EV_REPLY)
        return 0;
    size_t n = ev->text_len < sizeof e->replies - e->rlen - 1 ? ev->text_len
                                                              : sizeof e->replies - e->rlen - 1;
    memcpy(e->replies + e->rlen, ev->text, n);
    e->rlen += n;
    e->replies[e->rlen] = '\0';
    if (e->ncodes < sizeof e->codes / sizeof e->codes[0])
        e->codes[e->ncodes++] = ev->code;
    const struct step *s = &e->steps[e->step];
    e->step++;
    if (s->tls && ev->code == 220) {
        e->tls = fg_tls_new(e->cctx);
        fg_tls_set_server_name(e->tls, "mta.faultgate.test");
        ck_assert_int_eq(fg_tls_handshake(e->tls), 0);
        tls_out(e);
        return 1; /* the rest is TLS */
    }
    if (e->expect_stall && e->step == e->nsteps - 1)
        uv_timer_start(&e->poll, on_poll, 5, 5);
    next_step(e);
    return 0;
}

static void feed_plain(struct env *e, const char *d, size_t n)
{
    size_t off = fg_smtp_parser_feed(&e->parser, FG_S2C, d, n);
    if (e->tls) {
        /* Stopped at the 220 to STARTTLS: the session starts over (RFC
         * 3207 §4.2), the parser too; what followed is TLS. */
        fg_smtp_parser_init(&e->parser, on_reply, e);
        e->parser.greeted = 1;
        fg_tls_put(e->tls, d + off, n - off);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct env *e = st->data;
    if (nread < 0) {
        e->peer_closed = 1;
        client_close(e);
    } else if (nread > 0 && !e->done) {
        if (!e->tls) {
            feed_plain(e, buf->base, (size_t)nread);
        } else {
            fg_tls_put(e->tls, buf->base, (size_t)nread);
        }
        if (e->tls && !e->done) {
            int r = fg_tls_handshake(e->tls);
            tls_out(e);
            if (r < 0) {
                e->tls_failed = 1;
                client_close(e);
            } else if (r == 1) {
                if (!e->tls_up_seen) {
                    /* The handshake just ended: the client speaks first
                     * (EHLO again, RFC 3207 §4.2). */
                    e->tls_up_seen = 1;
                    next_step(e);
                }
                char pt[16384];
                int k;
                while (!e->done && (k = fg_tls_read(e->tls, pt, sizeof pt)) > 0)
                    fg_smtp_parser_feed(&e->parser, FG_S2C, pt, (size_t)k);
                tls_out(e);
            }
        }
    }
    free(buf->base);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct env *e = req->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(uv_read_start((uv_stream_t *)&e->tcp, alloc_cb, on_read), 0);
}

static void world_init(struct env *e, const struct step *steps, size_t nsteps)
{
    memset(e, 0, sizeof *e);
    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->deadline);
    uv_timer_start(&e->deadline, on_deadline, DEADLINE_MS, 0);
    uv_timer_init(&e->loop, &e->poll);
    e->poll.data = e;
    e->deadline.data = e;
    fg_fault_set_init(&e->faults, 1);
    e->log = open_memstream(&e->logbuf, &e->loglen);
    e->steps = steps;
    e->nsteps = nsteps;
    fg_smtp_parser_init(&e->parser, on_reply, e);
}

static void add_fault(struct env *e, const char *line)
{
    struct fg_fault f;
    char err[256];
    int col;
    ck_assert_msg(fg_fault_parse(line, &f, err, sizeof err, &col) == 0, "%s: %s", line, err);
    ck_assert_int_eq(fg_fault_set_add(&e->faults, &f), 0);
}

static void start(struct env *e, int trust_proxy)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_mta_opts mo = {.host = "127.0.0.1", .port = 0};
    ck_assert_msg(fg_mta_new(&e->loop, &mo, &e->mta, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(fg_mta_ca_pem(e->mta));
    struct fg_proxy_opts po = {.listen_host = "127.0.0.1",
                               .listen_port = 0,
                               .upstream_host = "127.0.0.1",
                               .upstream_port = fg_mta_port(e->mta),
                               .faults = &e->faults,
                               .log = e->log,
                               .tls_terminate = 1,
                               .tls_upstream_ca = fg_mta_ca_pem(e->mta)};
    ck_assert_msg(fg_proxy_new(&e->loop, &po, &e->proxy, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(fg_proxy_tls_ca_pem(e->proxy));
    /* The client verifies the chain: to the proxy's CA, or (the refusal
     * test) to the fake MTA's, which did not sign the proxy's certificate. */
    ck_assert_msg(
        fg_tls_client_ctx_new(trust_proxy ? fg_proxy_tls_ca_pem(e->proxy) : fg_mta_ca_pem(e->mta),
                              &e->cctx, err, sizeof err) == 0,
        "%s", err);
    uv_tcp_init(&e->loop, &e->tcp);
    e->tcp.data = e;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fg_proxy_port(e->proxy), &a);
    e->creq.data = e;
    ck_assert_int_eq(uv_tcp_connect(&e->creq, &e->tcp, (struct sockaddr *)&a, on_connect), 0);
}

static void mta_closed(void *ud)
{
    struct env *e = ud;
    e->closes++;
}

static void proxy_closed(void *ud)
{
    struct env *e = ud;
    e->closes++;
}

/* Run until the client is done, then close everything and run dry. */
static void run(struct env *e)
{
    while (!e->done)
        uv_run(&e->loop, UV_RUN_ONCE);
    fg_proxy_close(e->proxy, proxy_closed, e);
    fg_mta_close(e->mta, mta_closed, e);
    uv_close((uv_handle_t *)&e->deadline, NULL);
    uv_close((uv_handle_t *)&e->poll, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);
    fclose(e->log);
}

static void world_free(struct env *e)
{
    fg_tls_free(e->tls);
    fg_tls_ctx_free(e->cctx);
    fg_fault_set_free(&e->faults);
    free(e->logbuf);
}

static const struct step to_tls[] = {
    {NULL, 0},
    {"EHLO client.faultgate.test\r\n", 0},
    {"STARTTLS\r\n", 1},
    /* under TLS */
    {"EHLO client.faultgate.test\r\n", 0},
};

START_TEST(reply_trigger_after_starttls)
{
    struct step steps[] = {
        to_tls[0],      to_tls[1], to_tls[2], to_tls[3], {"MAIL FROM:<a@company1.test>\r\n", 0},
        {"QUIT\r\n", 0}};
    struct env e;
    world_init(&e, steps, sizeof steps / sizeof steps[0]);
    add_fault(&e, "command MAIL: reply 451 4.3.0 injected under TLS, replace");
    start(&e, 1);
    run(&e);
    ck_assert_msg(!e.tls_failed, "handshake failed: %s", e.tls ? fg_tls_error(e.tls) : "");
    ck_assert_ptr_nonnull(e.tls);
    ck_assert_int_eq(fg_tls_is_up(e.tls), 1);
    /* 220 greeting, 250 EHLO, 220 STARTTLS, (handshake), 250 EHLO, 451, 221 */
    ck_assert_msg(strstr(e.replies, "451 4.3.0 injected under TLS\r\n") != NULL, "replies: %s",
                  e.replies);
    ck_assert_msg(strstr(e.replies, "221") != NULL, "replies: %s", e.replies);
    ck_assert_msg(strstr(e.logbuf, "command MAIL #1 -> reply 451") != NULL, "log: %s", e.logbuf);
    ck_assert_msg(strstr(e.logbuf, "TLS terminated at the proxy") != NULL, "log: %s", e.logbuf);
    /* The proxy answered in the server's place: 451 came right after the
     * second EHLO's reply, and the server's own answer never did. */
    ck_assert_uint_eq(e.ncodes, 6);
    ck_assert_int_eq(e.codes[4], 451);
    ck_assert_int_eq(e.codes[5], 221);
    world_free(&e);
}
END_TEST

/* A stall on DATA after STARTTLS: the client's DATA is held; no 354. */
START_TEST(stall_after_starttls)
{
    struct step steps[] = {to_tls[0],
                           to_tls[1],
                           to_tls[2],
                           to_tls[3],
                           {"MAIL FROM:<a@company1.test>\r\n", 0},
                           {"RCPT TO:<b@company2.test>\r\n", 0},
                           {"DATA\r\n", 0}};
    struct env e;
    world_init(&e, steps, sizeof steps / sizeof steps[0]);
    e.expect_stall = 1;
    add_fault(&e, "command DATA: stall");
    start(&e, 1);
    run(&e);
    ck_assert_msg(!e.tls_failed, "handshake failed");
    ck_assert_int_eq(e.stalled_seen, 1);
    /* Replies to everything before DATA, none to it. */
    ck_assert_uint_eq(e.ncodes, 6);
    ck_assert_msg(strstr(e.replies, "354") == NULL, "replies: %s", e.replies);
    ck_assert_msg(strstr(e.logbuf, "stall") != NULL, "log: %s", e.logbuf);
    world_free(&e);
}
END_TEST

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A whole message through both sessions; the key log has each session's
 * secrets in the NSS format. */
START_TEST(message_and_keylog)
{
    struct step steps[] = {
        to_tls[0],
        to_tls[1],
        to_tls[2],
        to_tls[3],
        {"MAIL FROM:<a@company1.test>\r\n", 0},
        {"RCPT TO:<b@company2.test>\r\n", 0},
        {"DATA\r\n", 0},
        {"Subject: t\r\nX-Faultgate-Token: tok-tls-1\r\n\r\n.dot\r\nbody\r\n.\r\n", 0},
        {"QUIT\r\n", 0}};
    char *klbuf = NULL;
    size_t kllen = 0;
    FILE *kl = open_memstream(&klbuf, &kllen);
    fg_tls_keylog_set(kl);
    struct env e;
    world_init(&e, steps, sizeof steps / sizeof steps[0]);
    start(&e, 1);
    /* run() frees the loop; check the ledger before that. */
    while (!e.done)
        uv_run(&e.loop, UV_RUN_ONCE);
    ck_assert_uint_eq(fg_mta_count_token(e.mta, "tok-tls-1"), 1);
    size_t n = 0;
    const struct fg_ledger_entry *le = fg_mta_ledger(e.mta, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(le[0].tls, 1);
    ck_assert_uint_eq(fg_proxy_tls_sessions(e.proxy), 1);
    e.done = 1;
    run(&e);
    fg_tls_keylog_set(NULL);
    fclose(kl);
    ck_assert_msg(strstr(e.replies, "354") && strstr(e.replies, "221"), "replies: %s", e.replies);

    /* Every line: LABEL <client random, 64 hex> <secret, 64 or 96 hex>
     * (TLS 1.3, SHA-256 or SHA-384 suites) or CLIENT_RANDOM with a 96-hex
     * master secret (TLS 1.2). */
    char randoms[8][65];
    size_t nrand = 0, lines = 0, traffic = 0;
    char *save = NULL;
    for (char *ln = strtok_r(klbuf, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char label[64], cr[200], sec[200];
        ck_assert_msg(sscanf(ln, "%63s %199s %199s", label, cr, sec) == 3, "line: %s", ln);
        ck_assert_msg(strlen(cr) == 64 && is_hex(cr, 64), "client random: %s", ln);
        size_t sl = strlen(sec);
        ck_assert_msg(is_hex(sec, sl), "secret: %s", ln);
        if (strcmp(label, "CLIENT_RANDOM") == 0)
            ck_assert_uint_eq(sl, 96);
        else
            ck_assert_msg(sl == 64 || sl == 96, "secret length %zu: %s", sl, ln);
        ck_assert_msg(strcmp(label, "CLIENT_RANDOM") == 0 ||
                          strcmp(label, "CLIENT_HANDSHAKE_TRAFFIC_SECRET") == 0 ||
                          strcmp(label, "SERVER_HANDSHAKE_TRAFFIC_SECRET") == 0 ||
                          strcmp(label, "CLIENT_TRAFFIC_SECRET_0") == 0 ||
                          strcmp(label, "SERVER_TRAFFIC_SECRET_0") == 0 ||
                          strcmp(label, "EXPORTER_SECRET") == 0,
                      "label: %s", ln);
        if (strcmp(label, "CLIENT_TRAFFIC_SECRET_0") == 0 || strcmp(label, "CLIENT_RANDOM") == 0)
            traffic++;
        size_t k;
        for (k = 0; k < nrand && strcmp(randoms[k], cr) != 0; k++)
            ;
        if (k == nrand && nrand < 8)
            memcpy(randoms[nrand++], cr, 65);
        lines++;
    }
    /* Two sessions: client <-> proxy and proxy <-> fake MTA (both ends of
     * each log, all in this process). */
    ck_assert_uint_eq(nrand, 2);
    ck_assert_uint_ge(traffic, 2);
    ck_assert_uint_ge(lines, 10);
    free(klbuf);
    world_free(&e);
}
END_TEST

/* A client that does not trust the proxy's CA: its handshake fails and the
 * proxy closes both legs; nothing hangs. */
START_TEST(untrusted_client_fails_cleanly)
{
    struct step steps[] = {to_tls[0], to_tls[1], to_tls[2], to_tls[3]};
    struct env e;
    world_init(&e, steps, sizeof steps / sizeof steps[0]);
    start(&e, 0);
    run(&e);
    ck_assert_int_eq(e.tls_failed, 1);
    ck_assert_uint_eq(e.ncodes, 3);
    world_free(&e);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tls_proxy");
    TCase *tc = tcase_create("terminate");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reply_trigger_after_starttls);
    tcase_add_test(tc, stall_after_starttls);
    tcase_add_test(tc, message_and_keylog);
    tcase_add_test(tc, untrusted_client_fails_cleanly);
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
