/* check_mta_inject.c - the fake MTA's `starttls_inject` (STARTTLS response
 * injection, RFC 3207 §4.2): the octets follow the 220 in the same write,
 * the TLS handshake then proceeds and the session inside TLS answers with
 * its own replies; a scripted refusal of STARTTLS carries none; bad values
 * are refused with their position.
 *
 * A libuv client walks the session: greeting, EHLO, STARTTLS, then a TLS
 * client session (fakes/tls.h, memory BIOs) with EHLO and QUIT inside.
 * Every loop run has a deadline timer that fails the test.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../tls.h"
#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

#define DEADLINE_MS 10000

enum phase { P_GREETING, P_EHLO, P_STARTTLS, P_HANDSHAKE, P_TLS_EHLO, P_QUIT, P_DONE };

struct tclient {
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t deadline;
    struct fg_mta *mta;
    enum phase phase;
    struct fg_tls_ctx *cctx;
    struct fg_tls *tls;
    char rx[65536]; /* plaintext not yet consumed */
    size_t rxlen;
    char *after_220; /* what the read of the 220 brought behind it */
    size_t after_220_len;
    int starttls_code;
    char tls_ehlo[4096]; /* the EHLO reply inside TLS */
    int quit_code;
};

struct wreq {
    uv_write_t req;
    char data[];
};

static void on_deadline(uv_timer_t *t)
{
    ck_abort_msg("deadline passed");
}

static void on_wr(uv_write_t *req, int status)
{
    ck_assert_int_eq(status, 0);
    free(req);
}

static void raw_write(struct tclient *tc, const char *d, size_t n)
{
    struct wreq *w = fg_malloc(sizeof *w + n);
    memcpy(w->data, d, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    ck_assert_int_eq(uv_write(&w->req, (uv_stream_t *)&tc->tcp, &b, 1, on_wr), 0);
}

static void flush_tls(struct tclient *tc)
{
    size_t n;
    char *out = fg_tls_take_output(tc->tls, &n);
    if (out && n)
        raw_write(tc, out, n);
    free(out);
}

static void say(struct tclient *tc, const char *line)
{
    if (tc->tls) {
        ck_assert_int_eq(fg_tls_write(tc->tls, line, strlen(line)), 0);
        flush_tls(tc);
    } else {
        raw_write(tc, line, strlen(line));
    }
}

/* One whole reply at the start of rx: its length (0 if incomplete) and
 * code. */
static size_t whole_reply(const struct tclient *tc, int *code)
{
    size_t off = 0;
    for (;;) {
        const char *nl = memchr(tc->rx + off, '\n', tc->rxlen - off);
        if (!nl)
            return 0;
        size_t end = (size_t)(nl - tc->rx) + 1;
        if (end - off >= 4 && tc->rx[off + 3] != '-') {
            *code = atoi(tc->rx);
            return end;
        }
        off = end;
    }
}

static void consume(struct tclient *tc, size_t n)
{
    memmove(tc->rx, tc->rx + n, tc->rxlen - n);
    tc->rxlen -= n;
}

static void on_closed(uv_handle_t *h)
{
    uv_stop(h->loop);
}

static void finish(struct tclient *tc)
{
    tc->phase = P_DONE;
    if (!uv_is_closing((uv_handle_t *)&tc->tcp))
        uv_close((uv_handle_t *)&tc->tcp, on_closed);
}

/* Replies in rx drive the session on. */
static void step(struct tclient *tc)
{
    int code;
    size_t n;
    while (tc->phase != P_DONE && tc->phase != P_HANDSHAKE && (n = whole_reply(tc, &code))) {
        switch (tc->phase) {
        case P_GREETING:
            ck_assert_int_eq(code, 220);
            say(tc, "EHLO client.test\r\n");
            tc->phase = P_EHLO;
            break;
        case P_EHLO:
            ck_assert_int_eq(code, 250);
            say(tc, "STARTTLS\r\n");
            tc->phase = P_STARTTLS;
            break;
        case P_STARTTLS:
            /* RFC 3207 §4.2: all of this read after the 220 is what a
             * conforming client throws away; the test keeps it. */
            tc->starttls_code = code;
            tc->after_220_len = tc->rxlen - n;
            tc->after_220 = fg_malloc(tc->after_220_len + 1);
            memcpy(tc->after_220, tc->rx + n, tc->after_220_len);
            tc->after_220[tc->after_220_len] = '\0';
            tc->rxlen = 0;
            if (code != 220) {
                say(tc, "QUIT\r\n");
                tc->phase = P_QUIT;
                continue;
            }
            tc->tls = fg_tls_new(tc->cctx);
            ck_assert_int_lt(fg_tls_handshake(tc->tls), 1);
            flush_tls(tc);
            tc->phase = P_HANDSHAKE;
            return;
        case P_TLS_EHLO:
            ck_assert_uint_lt(n, sizeof tc->tls_ehlo);
            memcpy(tc->tls_ehlo, tc->rx, n);
            tc->tls_ehlo[n] = '\0';
            say(tc, "QUIT\r\n");
            tc->phase = P_QUIT;
            break;
        case P_QUIT:
            tc->quit_code = code;
            consume(tc, n);
            finish(tc);
            return;
        default:
            break;
        }
        consume(tc, n);
    }
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof buf);
}

static void on_rd(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tclient *tc = s->data;
    if (n < 0) {
        ck_assert_msg(tc->phase == P_DONE || tc->phase == P_QUIT, "closed early in phase %d",
                      tc->phase);
        finish(tc);
        return;
    }
    if (!tc->tls) {
        ck_assert_uint_lt(tc->rxlen + (size_t)n, sizeof tc->rx);
        memcpy(tc->rx + tc->rxlen, b->base, (size_t)n);
        tc->rxlen += (size_t)n;
        step(tc);
        return;
    }
    ck_assert_int_eq(fg_tls_put(tc->tls, b->base, (size_t)n), 0);
    if (tc->phase == P_HANDSHAKE) {
        int r = fg_tls_handshake(tc->tls);
        flush_tls(tc);
        ck_assert_msg(r >= 0, "handshake: %s", fg_tls_error(tc->tls));
        if (r == 0)
            return;
        tc->phase = P_TLS_EHLO;
        say(tc, "EHLO client.test\r\n");
    }
    int k;
    while ((k = fg_tls_read(tc->tls, tc->rx + tc->rxlen, sizeof tc->rx - 1 - tc->rxlen)) > 0)
        tc->rxlen += (size_t)k;
    flush_tls(tc);
    step(tc);
}

static void on_conn(uv_connect_t *req, int status)
{
    struct tclient *tc = req->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(uv_read_start((uv_stream_t *)&tc->tcp, on_alloc, on_rd), 0);
}

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

static int mta_closed;
static void on_mta_closed(void *ud)
{
    mta_closed = 1;
}

/* run - one session against a fake MTA with the script yaml. */
static struct tclient *run(const char *yaml)
{
    struct fg_mta_script sc;
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    script_from(yaml, &sc, err, sizeof err, &rc);
    ck_assert_msg(rc == 0, "script: %s", err);
    struct tclient *tc = fg_calloc(1, sizeof *tc);
    ck_assert_int_eq(uv_loop_init(&tc->loop), 0);
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = &sc};
    ck_assert_msg(fg_mta_new(&tc->loop, &o, &tc->mta, err, sizeof err) == 0, "%s", err);
    fg_mta_script_clear(&sc); /* the MTA holds its own copy */
    ck_assert_int_eq(fg_tls_client_ctx_new(fg_mta_ca_pem(tc->mta), &tc->cctx, err, sizeof err), 0);
    uv_timer_init(&tc->loop, &tc->deadline);
    uv_timer_start(&tc->deadline, on_deadline, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&tc->deadline);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fg_mta_port(tc->mta), &a);
    uv_tcp_init(&tc->loop, &tc->tcp);
    tc->tcp.data = tc;
    tc->creq.data = tc;
    ck_assert_int_eq(uv_tcp_connect(&tc->creq, &tc->tcp, (struct sockaddr *)&a, on_conn), 0);
    uv_run(&tc->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(tc->phase, P_DONE);
    return tc;
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
    fg_tls_free(tc->tls);
    fg_tls_ctx_free(tc->cctx);
    free(tc->after_220);
    free(tc);
}

START_TEST(inject_after_220_then_tls)
{
    struct tclient *tc = run("hide_after_tls: [PIPELINING]\n"
                             "starttls_inject: '250-PIPELINING\\r\\n250 OK\\r\\n'\n");
    ck_assert_int_eq(tc->starttls_code, 220);
    /* The injected octets came with the 220, in the same read. */
    ck_assert_str_eq(tc->after_220, "250-PIPELINING\r\n250 OK\r\n");
    /* Inside TLS the EHLO got the server's own reply, without PIPELINING. */
    ck_assert_msg(strncmp(tc->tls_ehlo, "250-", 4) == 0, "%s", tc->tls_ehlo);
    ck_assert_ptr_null(strstr(tc->tls_ehlo, "PIPELINING"));
    ck_assert_ptr_nonnull(strstr(tc->tls_ehlo, "SIZE"));
    ck_assert_int_eq(tc->quit_code, 221);
    teardown(tc);
}
END_TEST

START_TEST(inject_escapes_and_nul)
{
    struct tclient *tc = run("starttls_inject: '\\x32\\x35\\x30 a\\tb\\0c\\r\\n'\n");
    ck_assert_int_eq(tc->starttls_code, 220);
    ck_assert_uint_eq(tc->after_220_len, 11);
    ck_assert_int_eq(memcmp(tc->after_220, "250 a\tb\0c\r\n", 11), 0);
    ck_assert_int_eq(tc->quit_code, 221);
    teardown(tc);
}
END_TEST

START_TEST(no_inject_without_key)
{
    struct tclient *tc = run("seed: 1\n");
    ck_assert_int_eq(tc->starttls_code, 220);
    ck_assert_uint_eq(tc->after_220_len, 0);
    ck_assert_int_eq(tc->quit_code, 221);
    teardown(tc);
}
END_TEST

START_TEST(no_inject_on_refusal)
{
    struct tclient *tc = run("starttls_inject: '250 OK\\r\\n'\n"
                             "stages:\n  - {stage: starttls, reply: \"454 4.7.0 not now\"}\n");
    ck_assert_int_eq(tc->starttls_code, 454);
    ck_assert_uint_eq(tc->after_220_len, 0);
    ck_assert_int_eq(tc->quit_code, 221);
    teardown(tc);
}
END_TEST

static void expect_error(const char *yaml, const char *where, const char *what)
{
    struct fg_mta_script sc;
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    script_from(yaml, &sc, err, sizeof err, &rc);
    ck_assert_int_eq(rc, FG_EINPUT);
    ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "%s: want %s", err, where);
    ck_assert_msg(strstr(err, what) != NULL, "%s: want %s", err, what);
}

START_TEST(inject_errors_have_positions)
{
    expect_error("seed: 1\nstarttls_inject: ''\n", "t.yaml:2:18:", "empty");
    /* the bad escape's own column: the quote at 18, the text from 19 */
    expect_error("seed: 1\nstarttls_inject: '250 \\q\\r\\n'\n", "t.yaml:2:23:", "\\q");
    expect_error("starttls_inject: 'x\\x1'\n", "t.yaml:1:20:", "hex");
    expect_error("starttls_inject: '\\x16\\x03\\x01'\n", "t.yaml:1:18:", "0x14 to 0x17");
    expect_error("starttls_inject: [a]\n", "t.yaml:1:18:", "starttls_inject");
    char big[5000 + 64];
    strcpy(big, "starttls_inject: '");
    size_t l = strlen(big);
    memset(big + l, 'a', 4097);
    strcpy(big + l + 4097, "'\n");
    expect_error(big, "t.yaml:1:18:", "4096");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mta_inject");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, inject_after_220_then_tls);
    tcase_add_test(tc, inject_escapes_and_nul);
    tcase_add_test(tc, no_inject_without_key);
    tcase_add_test(tc, no_inject_on_refusal);
    tcase_add_test(tc, inject_errors_have_positions);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
