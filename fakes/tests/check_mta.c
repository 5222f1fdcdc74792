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
    ck_assert_ptr_nonnull(strstr(tc->rx, "250 ENHANCEDSTATUSCODES\r\n"));
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
    const int want[] = {220, 250, 250, 250, 500, 501, 502};
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
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    j = json_loads(line, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "tok-43");
    json_decref(j);
    ck_assert_ptr_null(fgets(line, sizeof(line), f));
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
