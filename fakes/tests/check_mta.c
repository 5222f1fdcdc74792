/* check_mta.c - the fake MTA against a scripted libuv client.
 *
 * Each test starts the fake MTA on 127.0.0.1:0 and runs a script of
 * steps: send some bytes, then wait for a number of complete replies.
 * Every loop run has a deadline timer that fails the test.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

#define DEADLINE_MS 10000

struct step {
    const char *send; /* may be NULL */
    unsigned replies; /* complete replies to wait for after sending */
};

struct tclient {
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t deadline;
    uv_write_t wreq;
    struct fg_mta *mta;
    const struct step *steps;
    size_t nsteps, step;
    unsigned target, finals;
    int wait_eof, eof;
    char rx[65536];
    size_t rxlen, scanned;
    int codes[64];
    unsigned ncodes;
};

static void on_deadline(uv_timer_t *t)
{
    ck_abort_msg("deadline passed");
}

static void on_client_closed(uv_handle_t *h)
{
    uv_stop(h->loop);
}

static void run_step(struct tclient *tc);

static void on_wr(uv_write_t *req, int status)
{
    ck_assert_int_eq(status, 0);
}

/* Count complete replies: a reply ends with a line "ddd SP ..." or "ddd". */
static void scan(struct tclient *tc)
{
    for (;;) {
        char *start = tc->rx + tc->scanned;
        char *nl = memchr(start, '\n', tc->rxlen - tc->scanned);
        if (!nl)
            return;
        size_t n = (size_t)(nl - start) + 1;
        if (n >= 5 && (start[3] == ' ' || start[3] == '\r')) {
            ck_assert_uint_lt(tc->ncodes, 64);
            tc->codes[tc->ncodes++] = atoi(start);
            tc->finals++;
        }
        tc->scanned += n;
    }
}

static void advance(struct tclient *tc)
{
    while (tc->finals >= tc->target) {
        if (tc->step == tc->nsteps) {
            if (!tc->wait_eof || tc->eof) {
                if (!uv_is_closing((uv_handle_t *)&tc->tcp))
                    uv_close((uv_handle_t *)&tc->tcp, on_client_closed);
            }
            return;
        }
        run_step(tc);
    }
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct tclient *tc = h->data;
    ck_assert_uint_lt(tc->rxlen, sizeof(tc->rx) - 1);
    *b = uv_buf_init(tc->rx + tc->rxlen, (unsigned)(sizeof(tc->rx) - 1 - tc->rxlen));
}

static void on_rd(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tclient *tc = s->data;
    if (n < 0) {
        tc->eof = 1;
        ck_assert_msg(tc->step == tc->nsteps && tc->finals >= tc->target,
                      "connection closed early (step %zu, %u/%u replies): %.*s", tc->step,
                      tc->finals, tc->target, (int)tc->rxlen, tc->rx);
        advance(tc);
        return;
    }
    tc->rxlen += (size_t)n;
    tc->rx[tc->rxlen] = '\0';
    scan(tc);
    advance(tc);
}

static void run_step(struct tclient *tc)
{
    const struct step *s = &tc->steps[tc->step++];
    tc->target += s->replies;
    if (s->send) {
        uv_buf_t b = uv_buf_init((char *)s->send, (unsigned)strlen(s->send));
        /* Steps only send after the previous replies came, so one write
         * request is ever pending. */
        ck_assert_int_eq(uv_write(&tc->wreq, (uv_stream_t *)&tc->tcp, &b, 1, on_wr), 0);
    }
}

static void on_conn(uv_connect_t *req, int status)
{
    struct tclient *tc = req->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(uv_read_start((uv_stream_t *)&tc->tcp, on_alloc, on_rd), 0);
    tc->target = 1; /* the greeting */
    advance(tc);
}

static struct tclient *setup(const struct fg_mta_opts *o)
{
    struct tclient *tc = fg_calloc(1, sizeof(*tc));
    ck_assert_int_eq(uv_loop_init(&tc->loop), 0);
    char err[FG_ERRBUF_SIZE] = "";
    int r = fg_mta_new(&tc->loop, o, &tc->mta, err, sizeof(err));
    ck_assert_msg(r == 0, "fg_mta_new: %s", err);
    ck_assert_int_gt(fg_mta_port(tc->mta), 0);
    uv_timer_init(&tc->loop, &tc->deadline);
    uv_timer_start(&tc->deadline, on_deadline, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&tc->deadline);
    return tc;
}

/* session - run one scripted client connection to the end. */
static void session(struct tclient *tc, const struct step *steps, size_t nsteps, int wait_eof)
{
    tc->steps = steps;
    tc->nsteps = nsteps;
    tc->step = 0;
    tc->target = tc->finals = 0;
    tc->ncodes = 0;
    tc->rxlen = tc->scanned = 0;
    tc->wait_eof = wait_eof;
    tc->eof = 0;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fg_mta_port(tc->mta), &a);
    uv_tcp_init(&tc->loop, &tc->tcp);
    tc->tcp.data = tc;
    tc->creq.data = tc;
    ck_assert_int_eq(uv_tcp_connect(&tc->creq, &tc->tcp, (struct sockaddr *)&a, on_conn), 0);
    uv_run(&tc->loop, UV_RUN_DEFAULT);
    ck_assert_msg(uv_is_closing((uv_handle_t *)&tc->tcp), "session did not finish");
}

static int mta_closed;
static void on_mta_closed(void *ud)
{
    mta_closed = 1;
}

static void teardown(struct tclient *tc)
{
    mta_closed = 0;
    fg_mta_close(tc->mta, on_mta_closed, NULL);
    uv_ref((uv_handle_t *)&tc->deadline);
    while (!mta_closed)
        uv_run(&tc->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tc->deadline, NULL);
    uv_run(&tc->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&tc->loop), 0);
    free(tc);
}

static void sha256_hex(const char *d, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    ck_assert(EVP_Digest(d, len, md, &mdlen, EVP_sha256(), NULL));
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

START_TEST(ehlo_capabilities)
{
    struct fg_mta_opts o = {.host = "127.0.0.1", .max_size = 123456};
    struct tclient *tc = setup(&o);
    const struct step s[] = {{"EHLO client.test\r\n", 1}, {"QUIT\r\n", 1}};
    session(tc, s, 2, 1);
    ck_assert_uint_eq(tc->ncodes, 3);
    ck_assert_int_eq(tc->codes[0], 220);
    ck_assert_int_eq(tc->codes[1], 250);
    ck_assert_int_eq(tc->codes[2], 221);
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-PIPELINING\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-SIZE 123456\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-8BITMIME\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-ENHANCEDSTATUSCODES\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-SMTPUTF8\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-CHUNKING\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-DSN\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250-STARTTLS\r\n"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "250 AUTH PLAIN LOGIN\r\n"));
    ck_assert(tc->eof);
    teardown(tc);
}
END_TEST

START_TEST(helo_noop_rset_unknown)
{
    struct fg_mta_opts o = {.host = "127.0.0.1"};
    struct tclient *tc = setup(&o);
    const struct step s[] = {
        {"HELO client.test\r\n", 1}, {"NOOP\r\n", 1}, {"RSET\r\n", 1},
        {"FROB x\r\n", 1},           {"EHLO\r\n", 1}, {"VRFY x\r\n", 1},
    };
    session(tc, s, 6, 0);
    ck_assert_uint_eq(tc->ncodes, 7);
    const int want[] = {220, 250, 250, 250, 500, 501, 252};
    for (unsigned i = 0; i < 7; i++)
        ck_assert_int_eq(tc->codes[i], want[i]);
    teardown(tc);
}
END_TEST

START_TEST(message_unstuffed_in_ledger)
{
    char dir[] = "/tmp/fg-mta-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *ledger = fg_asprintf("%s/ledger.jsonl", dir);
    char *maildir = fg_asprintf("%s/mail", dir);
    struct fg_mta_opts o = {.host = "127.0.0.1", .ledger_path = ledger, .maildir = maildir};
    struct tclient *tc = setup(&o);
    const struct step s[] = {
        {"EHLO client.test\r\n", 1},
        {"MAIL FROM:<a@one.test>\r\n", 1},
        {"RCPT TO:<b@two.test>\r\n", 1},
        {"RCPT TO:<c@two.test>\r\n", 1},
        {"DATA\r\n", 1},
        {"Subject: t\r\nX-Faultgate-Token: tok-42\r\n\r\n..leading dot\r\nplain\r\n...two\r\n"
         "..\r\nend\r\n.\r\n",
         1},
        {"QUIT\r\n", 1},
    };
    session(tc, s, 7, 1);
    ck_assert_uint_eq(tc->ncodes, 8);
    ck_assert_int_eq(tc->codes[5], 354);
    ck_assert_int_eq(tc->codes[6], 250);
    const char *want = "Subject: t\r\nX-Faultgate-Token: tok-42\r\n\r\n.leading dot\r\nplain\r\n"
                       "..two\r\n.\r\nend\r\n";
    char hex[65];
    sha256_hex(want, strlen(want), hex);

    size_t n;
    const struct fg_ledger_entry *e = fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(e[0].token, "tok-42");
    ck_assert_str_eq(e[0].mail_from, "a@one.test");
    ck_assert_uint_eq(e[0].nrcpt, 2);
    ck_assert_str_eq(e[0].rcpt[0], "b@two.test");
    ck_assert_str_eq(e[0].rcpt[1], "c@two.test");
    ck_assert_uint_eq(e[0].size, strlen(want));
    ck_assert_str_eq(e[0].sha256, hex);
    ck_assert_uint_eq(e[0].conn, 1);
    ck_assert_uint_gt(e[0].t_us, 0);
    ck_assert_uint_eq(fg_mta_count_token(tc->mta, "tok-42"), 1);
    ck_assert_uint_eq(fg_mta_count_token(tc->mta, "tok-43"), 0);

    /* A second connection gets number 2. */
    const struct step s2[] = {
        {"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<d@two.test>\r\nDATA\r\n", 4},
        {"X-Faultgate-Token: tok-43\r\n\r\nx\r\n.\r\n", 1},
    };
    session(tc, s2, 2, 0);
    ck_assert_int_eq(tc->codes[5], 250);
    e = fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(e[1].conn, 2);
    ck_assert_str_eq(e[1].mail_from, "");
    ck_assert_uint_eq(fg_mta_count_token(tc->mta, "tok-43"), 1);
    teardown(tc);

    /* The ledger file: one JSON object per line. */
    FILE *f = fopen(ledger, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    ck_assert_msg(j != NULL, "ledger line: %s", jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "tok-42");
    ck_assert_str_eq(json_string_value(json_object_get(j, "mail_from")), "a@one.test");
    ck_assert_str_eq(json_string_value(json_object_get(j, "sha256")), hex);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "size")), (json_int_t)strlen(want));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "conn")), 1);
    ck_assert(json_integer_value(json_object_get(j, "t_us")) > 0);
    json_t *rc = json_object_get(j, "rcpt");
    ck_assert_uint_eq(json_array_size(rc), 2);
    ck_assert_str_eq(json_string_value(json_array_get(rc, 1)), "c@two.test");
    json_decref(j);
    /* Violation events are lines too ("event": "violation"); skip them. */
    int messages = 0;
    while (fgets(line, sizeof(line), f)) {
        j = json_loads(line, 0, &jerr);
        ck_assert_ptr_nonnull(j);
        const char *ev = json_string_value(json_object_get(j, "event"));
        ck_assert_ptr_nonnull(ev);
        if (strcmp(ev, "message") == 0) {
            ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "tok-43");
            messages++;
        } else {
            ck_assert_str_eq(ev, "violation");
        }
        json_decref(j);
    }
    ck_assert_int_eq(messages, 1);
    fclose(f);

    /* The stored message is the un-stuffed body. */
    char *p = fg_asprintf("%s/1.eml", maildir);
    f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    char buf[1024];
    size_t got = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    ck_assert_uint_eq(got, strlen(want));
    ck_assert(memcmp(buf, want, got) == 0);
    unlink(p);
    free(p);
    p = fg_asprintf("%s/2.eml", maildir);
    unlink(p);
    free(p);
    unlink(ledger);
    rmdir(maildir);
    rmdir(dir);
    free(ledger);
    free(maildir);
}
END_TEST

START_TEST(pipelined_in_order)
{
    struct fg_mta_opts o = {.host = "127.0.0.1"};
    struct tclient *tc = setup(&o);
    /* RFC 2920 §3.1: the whole group in one write; DATA ends the group. */
    const struct step s[] = {
        {"EHLO c\r\nMAIL FROM:<a@one.test>\r\nRCPT TO:<x@two.test>\r\nRCPT TO:<>\r\n"
         "RCPT TO:<y@two.test>\r\nDATA\r\n",
         6},
        {"X-Faultgate-Token: pipe-1\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n", 4},
    };
    session(tc, s, 2, 1);
    ck_assert_uint_eq(tc->ncodes, 11);
    const int want[] = {220, 250, 250, 250, 501, 250, 354, 250, 250, 250, 221};
    for (unsigned i = 0; i < 11; i++)
        ck_assert_msg(tc->codes[i] == want[i], "reply %u: %d, want %d", i, tc->codes[i], want[i]);
    size_t n;
    const struct fg_ledger_entry *e = fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(e[0].nrcpt, 2);
    ck_assert_str_eq(e[0].token, "pipe-1");
    teardown(tc);
}
END_TEST

START_TEST(out_of_sequence)
{
    struct fg_mta_opts o = {.host = "127.0.0.1"};
    struct tclient *tc = setup(&o);
    const struct step s[] = {
        {"MAIL FROM:<a@one.test>\r\n", 1}, /* before EHLO */
        {"EHLO c\r\n", 1},
        {"RCPT TO:<b@two.test>\r\n", 1}, /* before MAIL */
        {"DATA\r\n", 1},                 /* before MAIL */
        {"MAIL FROM:<a@one.test>\r\n", 1},
        {"MAIL FROM:<a@one.test>\r\n", 1}, /* nested */
        {"DATA\r\n", 1},                   /* before RCPT */
        {"RCPT TO:<b@two.test>\r\n", 1},
        {"RSET\r\n", 1},
        {"DATA\r\n", 1}, /* RSET ended the transaction */
    };
    session(tc, s, 10, 0);
    const int want[] = {220, 503, 250, 503, 503, 250, 503, 503, 250, 250, 503};
    ck_assert_uint_eq(tc->ncodes, 11);
    for (unsigned i = 0; i < 11; i++)
        ck_assert_msg(tc->codes[i] == want[i], "reply %u: %d, want %d", i, tc->codes[i], want[i]);
    size_t n;
    fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 0);
    teardown(tc);
}
END_TEST

START_TEST(size_limits)
{
    struct fg_mta_opts o = {.host = "127.0.0.1", .max_size = 100};
    struct tclient *tc = setup(&o);
    char big[400];
    size_t k = 0;
    for (int i = 0; i < 5; i++)
        k += (size_t)snprintf(big + k, sizeof(big) - k, "%s\r\n",
                              "0123456789012345678901234567890123456789012345678901234567");
    snprintf(big + k, sizeof(big) - k, ".\r\n");
    const struct step s[] = {
        {"EHLO c\r\n", 1},
        {"MAIL FROM:<a@one.test> SIZE=101\r\n", 1}, /* RFC 1870 §6.1 */
        {"MAIL FROM:<a@one.test> SIZE=100 BODY=8BITMIME\r\n", 1},
        {"RCPT TO:<b@two.test>\r\n", 1},
        {"DATA\r\n", 1},
        {big, 1}, /* over SIZE after all: refused at the end of data */
        {"MAIL FROM:<a@one.test> FOO=1\r\n", 1},
    };
    session(tc, s, 7, 0);
    const int want[] = {220, 250, 552, 250, 250, 354, 552, 555};
    ck_assert_uint_eq(tc->ncodes, 8);
    for (unsigned i = 0; i < 8; i++)
        ck_assert_msg(tc->codes[i] == want[i], "reply %u: %d, want %d", i, tc->codes[i], want[i]);
    size_t n;
    fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 0);
    teardown(tc);
}
END_TEST

START_TEST(bad_listen_address)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    struct fg_mta_opts o = {.host = "not-an-address"};
    struct fg_mta *m = NULL;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_int_lt(fg_mta_new(&loop, &o, &m, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "not-an-address"));
    struct fg_mta_opts o2 = {.host = "127.0.0.1", .ledger_path = "/nonexistent-dir/x/ledger"};
    ck_assert_int_lt(fg_mta_new(&loop, &o2, &m, err, sizeof(err)), 0);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* --- strictness: one test per rule --------------------------------------- */

static unsigned viol_count(struct tclient *tc, enum fg_mta_viol k)
{
    size_t n;
    const struct fg_mta_violation *v = fg_mta_violations(tc->mta, &n);
    unsigned c = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].kind == k)
            c++;
    return c;
}

static unsigned viol_total(struct tclient *tc)
{
    size_t n;
    fg_mta_violations(tc->mta, &n);
    return (unsigned)n;
}

/* strict - a session with PIPELINING (or without, hide) and the
 * violation it must produce, and only that kind. */
static void strict(const struct step *s, size_t n, unsigned hide, enum fg_mta_viol want)
{
    struct fg_mta_script sc;
    fg_mta_script_init(&sc);
    sc.caps &= ~hide;
    sc.caps_tls &= ~hide;
    sc.max_size = 1000;
    char ledger[] = "/tmp/fg-mta-ledger-XXXXXX";
    int fd = mkstemp(ledger);
    ck_assert_int_ge(fd, 0);
    close(fd);
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = &sc, .ledger_path = ledger};
    struct tclient *tc = setup(&o);
    fg_mta_script_clear(&sc);
    session(tc, s, n, 0);
    ck_assert_msg(viol_count(tc, want) >= 1, "no %s event (%u events)", fg_mta_viol_name(want),
                  viol_total(tc));
    size_t nv;
    const struct fg_mta_violation *v = fg_mta_violations(tc->mta, &nv);
    for (size_t i = 0; i < nv; i++)
        ck_assert_msg(v[i].kind == want, "unexpected %s: %s", fg_mta_viol_name(v[i].kind),
                      v[i].detail);
    ck_assert_uint_eq(v[0].conn, 1);
    teardown(tc);
    /* The event is in the ledger too, as a JSON line. */
    FILE *f = fopen(ledger, "r");
    ck_assert_ptr_nonnull(f);
    char line[2048];
    int found = 0;
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *o2 = json_loads(line, 0, &je);
        ck_assert_msg(o2 != NULL, "ledger line is not JSON: %s", line);
        const char *ev = json_string_value(json_object_get(o2, "event"));
        const char *rule = json_string_value(json_object_get(o2, "rule"));
        if (ev && strcmp(ev, "violation") == 0 && rule && strcmp(rule, fg_mta_viol_name(want)) == 0)
            found = 1;
        json_decref(o2);
    }
    fclose(f);
    unlink(ledger);
    ck_assert_msg(found, "no ledger line for %s", fg_mta_viol_name(want));
}

#define TXN                                                                                        \
    "EHLO c\r\n", 1                                                                                \
    }                                                                                              \
    , {"MAIL FROM:<a@one.test>\r\n", 1},                                                           \
    {                                                                                              \
        "RCPT TO:<b@two.test>\r\n", 1

START_TEST(strict_clean_session)
{
    struct fg_mta_opts o = {.host = "127.0.0.1"};
    struct tclient *tc = setup(&o);
    const struct step s[] = {
        {TXN}, {"DATA\r\n", 1}, {"Subject: x\r\n\r\n.line\r\n.\r\n", 1}, {"QUIT\r\n", 1}};
    session(tc, s, 6, 1);
    ck_assert_uint_eq(viol_total(tc), 0);
    teardown(tc);
}
END_TEST

START_TEST(strict_bare_cr)
{
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {"a\rb\r\n.\r\n", 1}};
    strict(s, 5, 0, FG_MTA_V_BARE_CR);
}
END_TEST

START_TEST(strict_bare_lf)
{
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {"a\nb\r\n.\r\n", 1}};
    strict(s, 5, 0, FG_MTA_V_BARE_LF);
}
END_TEST

START_TEST(strict_long_line)
{
    static char body[1100 + 16];
    memset(body, 'x', 1001);
    strcpy(body + 1001, "\r\n.\r\n");
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {body, 1}};
    /* 1003 octets of text are over SIZE 1000 too: count only long-line. */
    struct fg_mta_script sc;
    fg_mta_script_init(&sc);
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = &sc};
    struct tclient *tc = setup(&o);
    session(tc, s, 5, 0);
    ck_assert_uint_eq(viol_count(tc, FG_MTA_V_LONG_LINE), 1);
    ck_assert_uint_eq(viol_total(tc), 1);
    teardown(tc);
    /* 998 octets plus CRLF is the limit and is fine (RFC 5321 §4.5.3.1.6). */
    memset(body, 'y', 998);
    strcpy(body + 998, "\r\n.\r\n");
    tc = setup(&o);
    session(tc, s, 5, 0);
    ck_assert_uint_eq(viol_total(tc), 0);
    teardown(tc);
}
END_TEST

START_TEST(strict_long_command)
{
    static char cmd[700];
    snprintf(cmd, sizeof(cmd), "NOOP %0600d\r\n", 7);
    const struct step s[] = {{"EHLO c\r\n", 1}, {cmd, 1}};
    strict(s, 2, 0, FG_MTA_V_LONG_COMMAND);
}
END_TEST

START_TEST(strict_out_of_sequence)
{
    const struct step s[] = {{"EHLO c\r\n", 1}, {"RCPT TO:<b@two.test>\r\n", 1}};
    strict(s, 2, 0, FG_MTA_V_OUT_OF_SEQUENCE);
}
END_TEST

START_TEST(strict_nested_mail)
{
    const struct step s[] = {{TXN}, {"MAIL FROM:<c@one.test>\r\n", 1}};
    strict(s, 4, 0, FG_MTA_V_NESTED_MAIL);
}
END_TEST

START_TEST(strict_data_without_354)
{
    /* The body goes out with DATA, before the 354 could be read. */
    const struct step s[] = {{TXN}, {"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n", 2}};
    strict(s, 4, 0, FG_MTA_V_DATA_WITHOUT_354);
}
END_TEST

START_TEST(strict_pipelining_not_offered)
{
    const struct step s[] = {{"EHLO c\r\n", 1},
                             {"MAIL FROM:<a@one.test>\r\nRCPT TO:<b@two.test>\r\n", 2}};
    strict(s, 2, FG_MTA_CAP(PIPELINING), FG_MTA_V_PIPELINING);
}
END_TEST

START_TEST(strict_pipelining_ehlo_not_last)
{
    /* RFC 2920 §3.1: EHLO may only end a group, even with PIPELINING. */
    const struct step s[] = {{"EHLO c\r\nNOOP\r\n", 2}};
    strict(s, 1, 0, FG_MTA_V_PIPELINING);
}
END_TEST

START_TEST(strict_bdat_mixed_with_data)
{
    const struct step s[] = {{TXN}, {"BDAT 3\r\nabc", 1}, {"DATA\r\n", 1}};
    strict(s, 5, 0, FG_MTA_V_BDAT_MIXED);
}
END_TEST

START_TEST(strict_8bit_without_8bitmime)
{
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {"caf\xc3\xa9\r\n.\r\n", 1}};
    strict(s, 5, 0, FG_MTA_V_EIGHTBIT);
}
END_TEST

START_TEST(strict_utf8_without_smtputf8)
{
    const struct step s[] = {{"EHLO c\r\n", 1}, {"MAIL FROM:<j\xc3\xb6rg@one.test>\r\n", 1}};
    strict(s, 2, 0, FG_MTA_V_UTF8);
}
END_TEST

/* A declaration above the maximum is how the client asks (RFC 1870
 * §6.1-§6.2): 552, and no violation; data above it is one (below). */
START_TEST(strict_size_exceeded)
{
    struct fg_mta_script sc;
    fg_mta_script_init(&sc);
    sc.max_size = 1000;
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = &sc};
    struct tclient *tc = setup(&o);
    fg_mta_script_clear(&sc);
    const struct step s[] = {{"EHLO c\r\n", 1}, {"MAIL FROM:<a@one.test> SIZE=5000\r\n", 1}};
    session(tc, s, 2, 0);
    ck_assert_uint_eq(tc->ncodes, 3);
    ck_assert_int_eq(tc->codes[2], 552);
    ck_assert_uint_eq(viol_total(tc), 0);
    teardown(tc);
}
END_TEST

START_TEST(strict_size_exceeded_body)
{
    static char body[1400];
    size_t k = 0;
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(body + k, sizeof(body) - k, "%060d\r\n", i);
    strcpy(body + k, ".\r\n");
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {body, 1}};
    strict(s, 5, 0, FG_MTA_V_SIZE);
}
END_TEST

START_TEST(strict_unadvertised_extension)
{
    const struct step s[] = {{TXN}, {"BDAT 2 LAST\r\nhi", 1}};
    strict(s, 4, FG_MTA_CAP(CHUNKING), FG_MTA_V_UNADVERTISED);
}
END_TEST

START_TEST(strict_starttls_plaintext_after)
{
    const struct step s[] = {{"EHLO c\r\n", 1}, {"STARTTLS\r\nMAIL FROM:<a@one.test>\r\n", 1}};
    strict(s, 2, 0, FG_MTA_V_STARTTLS_INJECTION);
}
END_TEST

/* --- scripts --------------------------------------------------------------- */

static void script_from(const char *yaml, struct fg_mta_script *sc, char *err, size_t errlen,
                        int *rc)
{
    struct fg_yaml_doc *d = NULL;
    *rc = fg_yaml_load_string("t.yaml", yaml, strlen(yaml), &d, err, errlen);
    if (*rc == 0) {
        *rc = fg_mta_script_parse_node(d, d->root, sc, err, errlen);
        fg_yaml_free(d);
    }
}

static struct tclient *setup_script(const char *yaml)
{
    struct fg_mta_script sc;
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    script_from(yaml, &sc, err, sizeof(err), &rc);
    ck_assert_msg(rc == 0, "script: %s", err);
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = &sc};
    struct tclient *tc = setup(&o);
    fg_mta_script_clear(&sc);
    return tc;
}

START_TEST(script_reply_rcpt_nth_multiline)
{
    struct tclient *tc = setup_script(
        "stages:\n  - {stage: rcpt, nth: 2, reply: \"452 4.5.3 Too many|try later\"}\n");
    const struct step s[] = {
        {TXN}, {"RCPT TO:<c@two.test>\r\n", 1}, {"RCPT TO:<d@two.test>\r\n", 1}};
    session(tc, s, 5, 0);
    const int want[] = {220, 250, 250, 250, 452, 250};
    for (unsigned i = 0; i < 6; i++)
        ck_assert_msg(tc->codes[i] == want[i], "reply %u: %d, want %d", i, tc->codes[i], want[i]);
    ck_assert_ptr_nonnull(strstr(tc->rx, "452-4.5.3 Too many\r\n452 try later\r\n"));
    teardown(tc);
}
END_TEST

START_TEST(script_drop_after_dot)
{
    /* smtp-sink -q .: the message arrives, the reply never does (RFC 1047). */
    struct tclient *tc = setup_script("drop: [end-of-data]\n");
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {"Subject: x\r\n\r\nhi\r\n.\r\n", 0}};
    session(tc, s, 5, 1);
    ck_assert(tc->eof);
    ck_assert_uint_eq(tc->ncodes, 5);
    size_t n;
    fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 0);
    teardown(tc);
}
END_TEST

START_TEST(script_shutdown_421)
{
    struct tclient *tc = setup_script("shutdown: mail\n");
    const struct step s[] = {{"EHLO c\r\n", 1}, {"MAIL FROM:<a@one.test>\r\n", 1}};
    session(tc, s, 2, 1);
    ck_assert(tc->eof);
    ck_assert_int_eq(tc->codes[2], 421);
    teardown(tc);
}
END_TEST

START_TEST(script_soft_hard_reject)
{
    struct tclient *tc = setup_script("soft_reject: [rcpt]\nhard_reject: [end-of-data]\n"
                                      "hard_reply: \"554 5.6.0 rejected\"\n");
    const struct step s[] = {{TXN}, {"DATA\r\n", 1}, {"x\r\n.\r\n", 1}};
    session(tc, s, 5, 0);
    /* RCPT soft-rejected, so DATA has no recipient. */
    ck_assert_int_eq(tc->codes[3], 450);
    ck_assert_int_eq(tc->codes[4], 503);
    teardown(tc);
    tc = setup_script("hard_reject: [end-of-data]\nhard_reply: \"554 5.6.0 rejected\"\n");
    session(tc, s, 5, 0);
    ck_assert_int_eq(tc->codes[5], 554);
    ck_assert_ptr_nonnull(strstr(tc->rx, "554 5.6.0 rejected\r\n"));
    size_t n;
    fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 0);
    teardown(tc);
}
END_TEST

START_TEST(script_no_esmtp_pix_banner)
{
    struct tclient *tc = setup_script("esmtp: false\nbanner: \"********\"\n");
    const struct step s[] = {{"EHLO c\r\n", 1}, {"HELO c\r\n", 1}};
    session(tc, s, 2, 0);
    ck_assert(strncmp(tc->rx, "220 ********\r\n", 14) == 0);
    ck_assert_int_eq(tc->codes[1], 500);
    ck_assert_int_eq(tc->codes[2], 250);
    teardown(tc);
}
END_TEST

START_TEST(script_hide_and_delay)
{
    struct tclient *tc = setup_script("hide: [PIPELINING, DSN]\n"
                                      "stages:\n  - {stage: greeting, delay: 200ms}\n");
    uint64_t t0 = fg_now_ms();
    const struct step s[] = {{"EHLO c\r\n", 1}};
    session(tc, s, 1, 0);
    /* The delay is a lower bound, never an upper one. */
    ck_assert_uint_ge(fg_now_ms() - t0, 190);
    ck_assert_ptr_null(strstr(tc->rx, "PIPELINING"));
    ck_assert_ptr_null(strstr(tc->rx, "DSN"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "CHUNKING"));
    teardown(tc);
}
END_TEST

/* extensions: pins each capability on or off over capabilities and hide,
 * so a scenario fixes the path (DATA or BDAT, RFC 3030). */
START_TEST(script_extensions_pinned)
{
    struct tclient *tc = setup_script(
        "hide: [CHUNKING]\nextensions: {chunking: on, PIPELINING: off, SMTPUTF8: no}\n");
    const struct step s[] = {{"EHLO c\r\n", 1}};
    session(tc, s, 1, 0);
    ck_assert_ptr_nonnull(strstr(tc->rx, "CHUNKING"));
    ck_assert_ptr_null(strstr(tc->rx, "PIPELINING"));
    ck_assert_ptr_null(strstr(tc->rx, "SMTPUTF8"));
    ck_assert_ptr_nonnull(strstr(tc->rx, "8BITMIME"));
    teardown(tc);

    struct fg_mta_script sc;
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    script_from("extensions: {CHUNKING: on, FOO: off}\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "t.yaml:1:28") && strstr(err, "FOO"), "%s", err);
    script_from("extensions: {CHUNKING: maybe}\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "t.yaml:1:24") && strstr(err, "on or off"), "%s", err);
    script_from("extensions: [CHUNKING]\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
}
END_TEST

/* Stages that hold on every path: `opening` answers EHLO or HELO, and
 * `end-of-data` the final dot or the LAST BDAT chunk. */
START_TEST(script_opening_and_last_chunk)
{
    struct tclient *tc = setup_script(
        "stages:\n  - {stage: opening, nth: 2, reply: \"421 4.3.2 bye\", action: close}\n"
        "  - {stage: end-of-data, reply: \"451 4.3.0 later\"}\n");
    const struct step s[] = {{"EHLO c\r\n", 1},
                             {"MAIL FROM:<a@one.test>\r\n", 1},
                             {"RCPT TO:<b@two.test>\r\n", 1},
                             {"BDAT 3 LAST\r\nabc", 1},
                             {"HELO c\r\n", 1}};
    session(tc, s, 5, 1);
    ck_assert_uint_eq(tc->ncodes, 6);
    ck_assert_int_eq(tc->codes[4], 451); /* the LAST chunk is the end of data */
    ck_assert_int_eq(tc->codes[5], 421); /* HELO is the second opening command */
    ck_assert(tc->eof);
    teardown(tc);
}
END_TEST

START_TEST(script_reset_on_mail)
{
    struct tclient *tc = setup_script("stages:\n  - {stage: mail, action: reset}\n");
    const struct step s[] = {{"EHLO c\r\n", 1}, {"MAIL FROM:<a@one.test>\r\n", 0}};
    session(tc, s, 2, 1);
    ck_assert(tc->eof);
    ck_assert_uint_eq(tc->ncodes, 2);
    teardown(tc);
}
END_TEST

START_TEST(script_errors_have_positions)
{
    struct fg_mta_script sc;
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    script_from("stages:\n  - {stage: mial, reply: \"451 x\"}\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "t.yaml:2:") && strstr(err, "mial"), "%s", err);
    script_from("hide: [PIPELINING, FOO]\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "t.yaml:1:20") != NULL, "%s", err);
    script_from("stages:\n  - {stage: rcpt, reply: \"99 no\"}\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    script_from("stages:\n  - {stage: mail, read_delay: 1s}\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    script_from("bogus: 1\n", &sc, err, sizeof(err), &rc);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "t.yaml:1:1") != NULL, "%s", err);
}
END_TEST

START_TEST(auth_plain_login_and_dsn)
{
    struct fg_mta_opts o = {.host = "127.0.0.1"};
    struct tclient *tc = setup(&o);
    const struct step s[] = {
        {"EHLO c\r\n", 1},
        {"AUTH LOGIN\r\n", 1},
        {"dXNlcg==\r\n", 1},
        {"cGFzcw==\r\n", 1},
        {"MAIL FROM:<a@one.test> RET=HDRS ENVID=abc+2B1\r\n", 1},
        {"RCPT TO:<b@two.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@two.test\r\n", 1},
        {"RCPT TO:<c@two.test> NOTIFY=SOMETIMES\r\n", 1},
        {"BDAT 4 LAST\r\nhi\r\n", 1},
    };
    session(tc, s, 8, 0);
    const int want[] = {220, 250, 334, 334, 235, 250, 250, 501, 250};
    for (unsigned i = 0; i < 9; i++)
        ck_assert_msg(tc->codes[i] == want[i], "reply %u: %d, want %d", i, tc->codes[i], want[i]);
    size_t n;
    const struct fg_ledger_entry *e = fg_mta_ledger(tc->mta, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert(e[0].bdat);
    ck_assert_uint_eq(e[0].size, 4);
    ck_assert_uint_eq(viol_total(tc), 0);
    teardown(tc);
}
END_TEST

static Suite *mta_suite(void)
{
    Suite *s = suite_create("mta");
    TCase *tc = tcase_create("session");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, ehlo_capabilities);
    tcase_add_test(tc, helo_noop_rset_unknown);
    tcase_add_test(tc, message_unstuffed_in_ledger);
    tcase_add_test(tc, pipelined_in_order);
    tcase_add_test(tc, out_of_sequence);
    tcase_add_test(tc, size_limits);
    tcase_add_test(tc, bad_listen_address);
    tcase_add_test(tc, strict_clean_session);
    tcase_add_test(tc, strict_bare_cr);
    tcase_add_test(tc, strict_bare_lf);
    tcase_add_test(tc, strict_long_line);
    tcase_add_test(tc, strict_long_command);
    tcase_add_test(tc, strict_out_of_sequence);
    tcase_add_test(tc, strict_nested_mail);
    tcase_add_test(tc, strict_data_without_354);
    tcase_add_test(tc, strict_pipelining_not_offered);
    tcase_add_test(tc, strict_pipelining_ehlo_not_last);
    tcase_add_test(tc, strict_bdat_mixed_with_data);
    tcase_add_test(tc, strict_8bit_without_8bitmime);
    tcase_add_test(tc, strict_utf8_without_smtputf8);
    tcase_add_test(tc, strict_size_exceeded);
    tcase_add_test(tc, strict_size_exceeded_body);
    tcase_add_test(tc, strict_unadvertised_extension);
    tcase_add_test(tc, strict_starttls_plaintext_after);
    tcase_add_test(tc, script_reply_rcpt_nth_multiline);
    tcase_add_test(tc, script_drop_after_dot);
    tcase_add_test(tc, script_shutdown_421);
    tcase_add_test(tc, script_soft_hard_reject);
    tcase_add_test(tc, script_no_esmtp_pix_banner);
    tcase_add_test(tc, script_hide_and_delay);
    tcase_add_test(tc, script_extensions_pinned);
    tcase_add_test(tc, script_opening_and_last_chunk);
    tcase_add_test(tc, script_reset_on_mail);
    tcase_add_test(tc, script_errors_have_positions);
    tcase_add_test(tc, auth_plain_login_and_dsn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mta_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
