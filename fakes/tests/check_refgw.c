/* check_refgw.c - end-to-end tests of the reference gateway binary.
 *
 * Each test spawns refgw (FG_BUILD_ROOT/fakes/refgw/refgw) on 127.0.0.1:0
 * with a scratch spool, learns its port from --ready-file, and drives it
 * with a small scripted SMTP client; refgw relays to a small upstream SMTP
 * server written here, whose behaviour per connection the test chooses
 * (hang after the final dot, drop on EHLO, reject a recipient).  Both sides
 * use the shared SMTP parser.  Every loop run has a deadline timer.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/smtp.h"
#include "faultgate/util.h"

/* ---- upstream SMTP server ---------------------------------------------- */

enum up_mode {
    UP_NORMAL,
    UP_HANG_EOD_FIRST,  /* connection 1 never answers the final dot */
    UP_DROP_EHLO_FIRST, /* connection 1 is closed on EHLO, no reply */
    UP_EHLO_500         /* EHLO is not recognised (an old server) */
};

struct delivery {
    char from[256];
    char *body; /* as on the wire: still dot-stuffed */
    size_t len;
    unsigned conn;
};

struct up_conn {
    struct up_conn *next;
    uv_tcp_t tcp;
    struct fg_smtp_parser p;
    unsigned n; /* 1-based connection number */
    int closing;
    int ev; /* 1 command, 2 end of data */
    enum fg_smtp_verb verb;
    char arg[FG_SMTP_LINE_MAX + 1];
    char from[256];
    char *body;
    size_t len, cap;
};

static struct {
    uv_loop_t loop;
    uv_timer_t deadline, poll;
    int timed_out;
    int (*pred)(void);
    /* upstream */
    uv_tcp_t up_srv;
    int up_port;
    enum up_mode mode;
    const char *reject_rcpt; /* RCPT TO:<this> gets 550 */
    struct up_conn *up_conns;
    unsigned up_nconn;
    int used_helo[8]; /* per connection: HELO seen */
    int used_ehlo[8];
    uint64_t t_eod1, t_close1; /* ms: connection 1's final dot and its close */
    int closed1;
    struct delivery dl[8];
    unsigned ndl;
    /* refgw process */
    uv_process_t proc;
    int proc_running;
    int64_t exit_status;
    int term_signal;
    uint64_t t_exit;
    char spool[64];
    char ready[128];
    int gw_port;
    /* injector */
    uv_tcp_t cli;
    uv_connect_t creq;
    struct fg_smtp_parser cp;
    int cli_open;
    int cli_step;
    int cli_codes[16];
    int cli_nreplies;
    int cli_done, cli_greeted;
    const char *const *script;
    /* a second, raw client that only notes whether a greeting came */
    uv_tcp_t probe;
    uv_connect_t preq;
    int probe_greeted;
} T;

static void poke(void)
{
    if (T.pred && T.pred())
        uv_stop(&T.loop);
}

static void deadline_cb(uv_timer_t *t)
{
    T.timed_out = 1;
    uv_stop(&T.loop);
}

/* Run the loop until pred() holds; 0 if the deadline came first. */
static int run_until(int (*pred)(void), uint64_t ms)
{
    T.pred = pred;
    T.timed_out = 0;
    if (pred())
        return 1;
    uv_timer_start(&T.deadline, deadline_cb, ms, 0);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    uv_timer_stop(&T.deadline);
    T.pred = NULL;
    return !T.timed_out;
}

/* Close handle h and let the loop finish closing it, so it can be reused. */
static void close_now(uv_handle_t *h)
{
    uv_close(h, NULL);
    uv_run(&T.loop, UV_RUN_NOWAIT);
}

static void free_conn_cb(uv_handle_t *h)
{
    struct up_conn *c = h->data;
    free(c->body);
    free(c);
}

static void up_close(struct up_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->n == 1) {
        T.closed1 = 1;
        T.t_close1 = fg_now_ms();
    }
    for (struct up_conn **pp = &T.up_conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    uv_close((uv_handle_t *)&c->tcp, free_conn_cb);
    poke();
}

static void wr_cb(uv_write_t *req, int status)
{
    free(req);
}

static void tcp_send(uv_tcp_t *tcp, const char *s, size_t n)
{
    uv_write_t *w = fg_malloc(sizeof(*w) + n);
    memcpy(w + 1, s, n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    if (uv_write(w, (uv_stream_t *)tcp, &b, 1, wr_cb) < 0)
        free(w);
}

static void up_reply(struct up_conn *c, const char *s)
{
    fg_smtp_parser_feed(&c->p, FG_S2C, s, strlen(s));
    tcp_send(&c->tcp, s, strlen(s));
}

static int up_cb(void *ud, const struct fg_smtp_event *ev)
{
    struct up_conn *c = ud;
    if (ev->dir != FG_C2S)
        return 0;
    if (ev->type == FG_SMTP_EV_COMMAND) {
        c->ev = 1;
        c->verb = ev->verb;
        size_t n = ev->arg_len < FG_SMTP_LINE_MAX ? ev->arg_len : FG_SMTP_LINE_MAX;
        memcpy(c->arg, ev->arg, n);
        c->arg[n] = '\0';
        return 1;
    }
    if (ev->type == FG_SMTP_EV_DATA) {
        fg_array_reserve((void **)&c->body, &c->cap, c->len + ev->data_len + 1, 1);
        memcpy(c->body + c->len, ev->data, ev->data_len);
        c->len += ev->data_len;
        c->body[c->len] = '\0';
    }
    if (ev->type == FG_SMTP_EV_END_OF_DATA) {
        c->ev = 2;
        return 1;
    }
    return 0;
}

static void up_command(struct up_conn *c)
{
    unsigned k = c->n < 8 ? c->n : 7;
    switch (c->verb) {
    case FG_VERB_EHLO:
        T.used_ehlo[k] = 1;
        if (T.mode == UP_DROP_EHLO_FIRST && c->n == 1) {
            up_close(c);
            return;
        }
        if (T.mode == UP_EHLO_500) {
            up_reply(c, "500 5.5.1 command unrecognized\r\n");
            return;
        }
        up_reply(c, "250-upstream.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        break;
    case FG_VERB_HELO:
        T.used_helo[k] = 1;
        up_reply(c, "250 upstream.test\r\n");
        break;
    case FG_VERB_MAIL: {
        const char *lt = strchr(c->arg, '<'), *gt = lt ? strchr(lt, '>') : NULL;
        snprintf(c->from, sizeof(c->from), "%.*s", lt && gt ? (int)(gt - lt - 1) : 0,
                 lt ? lt + 1 : "");
        c->len = 0;
        up_reply(c, "250 2.1.0 ok\r\n");
        break;
    }
    case FG_VERB_RCPT:
        if (T.reject_rcpt && strstr(c->arg, T.reject_rcpt))
            up_reply(c, "550 5.1.1 no such user\r\n");
        else
            up_reply(c, "250 2.1.5 ok\r\n");
        break;
    case FG_VERB_DATA:
        up_reply(c, "354 go ahead\r\n");
        break;
    case FG_VERB_QUIT:
        up_reply(c, "221 bye\r\n");
        break;
    default:
        up_reply(c, "250 ok\r\n");
        break;
    }
}

static void up_eod(struct up_conn *c)
{
    if (T.mode == UP_HANG_EOD_FIRST && c->n == 1) {
        T.t_eod1 = fg_now_ms();
        poke();
        return; /* never answer: the Q129140 next hop */
    }
    if (T.ndl < 8) {
        struct delivery *d = &T.dl[T.ndl++];
        snprintf(d->from, sizeof(d->from), "%s", c->from);
        d->body = fg_strndup(c->body ? c->body : "", c->len);
        d->len = c->len;
        d->conn = c->n;
    }
    c->len = 0;
    up_reply(c, "250 2.0.0 queued\r\n");
    poke();
}

static void up_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof(buf));
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct up_conn *c = s->data;
    if (nread < 0) {
        up_close(c);
        return;
    }
    size_t off = 0, len = (size_t)nread;
    while (!c->closing && (off < len || fg_smtp_parser_queued(&c->p, FG_C2S))) {
        c->ev = 0;
        size_t n = fg_smtp_parser_feed(&c->p, FG_C2S, b->base + off, len - off);
        off += n;
        if (c->ev == 1)
            up_command(c);
        else if (c->ev == 2)
            up_eod(c);
        else if (n == 0 && off < len)
            break;
    }
}

static void up_connection(uv_stream_t *srv, int status)
{
    ck_assert_int_eq(status, 0);
    struct up_conn *c = fg_calloc(1, sizeof(*c));
    uv_tcp_init(&T.loop, &c->tcp);
    c->tcp.data = c;
    ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&c->tcp), 0);
    c->n = ++T.up_nconn;
    c->next = T.up_conns;
    T.up_conns = c;
    fg_smtp_parser_init(&c->p, up_cb, c);
    uv_read_start((uv_stream_t *)&c->tcp, up_alloc, up_read);
    up_reply(c, "220 upstream.test ESMTP\r\n");
    poke();
}

static void up_start(void)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    ck_assert_int_eq(uv_tcp_init(&T.loop, &T.up_srv), 0);
    ck_assert_int_eq(uv_tcp_bind(&T.up_srv, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&T.up_srv, 16, up_connection), 0);
    int l = sizeof(a);
    uv_tcp_getsockname(&T.up_srv, (struct sockaddr *)&a, &l);
    T.up_port = ntohs(a.sin_port);
}

/* ---- the refgw process -------------------------------------------------- */

static void exit_cb(uv_process_t *p, int64_t status, int sig)
{
    T.proc_running = 0;
    T.exit_status = status;
    T.term_signal = sig;
    T.t_exit = fg_now_ms();
    poke();
}

static char *refgw_path(void)
{
    const char *root = getenv("FG_BUILD_ROOT");
    return fg_asprintf("%s/fakes/refgw/refgw", root ? root : "..");
}

/* Spawn refgw with argv (NULL-terminated, without the program name). */
static void spawn(const char *const *args)
{
    const char *argv[32];
    size_t n = 0;
    char *path = refgw_path();
    argv[n++] = path;
    for (; *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o = {
        .exit_cb = exit_cb, .file = path, .args = (char **)argv, .stdio_count = 3, .stdio = stdio};
    int rc = uv_spawn(&T.loop, &T.proc, &o);
    ck_assert_msg(rc == 0, "spawn %s: %s", path, uv_strerror(rc));
    T.proc_running = 1;
    free(path);
}

static int ready_pred(void)
{
    if (T.gw_port > 0 || !T.proc_running)
        return 1;
    FILE *f = fopen(T.ready, "r");
    if (!f)
        return 0;
    char line[128] = "";
    if (fgets(line, sizeof(line), f)) {
        char *colon = strrchr(line, ':');
        if (colon && strchr(colon, '\n'))
            T.gw_port = atoi(colon + 1);
    }
    fclose(f);
    return T.gw_port > 0;
}

static void poll_cb(uv_timer_t *t)
{
    poke();
}

/* Start refgw against the upstream with the given extra options and wait
 * until it has written its ready file. */
static void start_refgw(const char *bug, const char *timeouts, const char *retry)
{
    char listen[] = "127.0.0.1:0";
    char *up = fg_asprintf("127.0.0.1:%d", T.up_port);
    const char *args[] = {"--listen",     listen,       "--upstream", up,       "--spool", T.spool,
                          "--ready-file", T.ready,      "--timeout",  timeouts, "--retry", retry,
                          "--hostname",   "refgw.test", "--bug",      bug,      NULL};
    spawn(args);
    free(up);
    /* The ready file appears once refgw listens; check it every 20 ms
     * until the deadline. */
    uv_timer_start(&T.poll, poll_cb, 20, 20);
    int ok = run_until(ready_pred, 10000);
    uv_timer_stop(&T.poll);
    ck_assert_msg(ok && T.gw_port > 0, "refgw did not become ready");
}

/* ---- scripted client (the injector's part) ------------------------------ */

static const char *const basic_script[] = {
    "EHLO client.test\r\n",
    "MAIL FROM:<alice@a.test>\r\n",
    "RCPT TO:<bob@b.test>\r\n",
    "DATA\r\n",
    "Subject: hello\r\nX-Faultgate-Token: tok-1234\r\n\r\nfirst line\r\n..a line that starts with "
    "a "
    "dot\r\nlast line\r\n.\r\n",
    "QUIT\r\n",
    NULL};

static void cli_send_step(void)
{
    const char *s = T.script[T.cli_step];
    if (!s) {
        T.cli_done = 1;
        poke();
        return;
    }
    fg_smtp_parser_feed(&T.cp, FG_C2S, s, strlen(s));
    tcp_send(&T.cli, s, strlen(s));
}

static int cli_cb(void *ud, const struct fg_smtp_event *ev)
{
    if (ev->type != FG_SMTP_EV_REPLY)
        return 0;
    if (T.cli_nreplies < 16)
        T.cli_codes[T.cli_nreplies++] = ev->code;
    if (!T.cli_greeted) {
        T.cli_greeted = 1;
    } else {
        T.cli_step++;
    }
    return 1;
}

static void cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    if (nread < 0) {
        T.cli_done = 1;
        uv_read_stop(s);
        poke();
        return;
    }
    size_t off = 0, len = (size_t)nread;
    while (!T.cli_done && (off < len || fg_smtp_parser_queued(&T.cp, FG_S2C))) {
        int before = T.cli_nreplies;
        size_t n = fg_smtp_parser_feed(&T.cp, FG_S2C, b->base + off, len - off);
        off += n;
        if (T.cli_nreplies > before) {
            int code = T.cli_codes[T.cli_nreplies - 1];
            if (code >= 400 || (T.script[T.cli_step] == NULL)) {
                T.cli_done = 1;
                poke();
            } else {
                cli_send_step();
            }
        } else if (n == 0 && off < len) {
            break;
        }
    }
    poke();
}

static void cli_connected(uv_connect_t *req, int status)
{
    ck_assert_msg(status == 0, "connect to refgw: %s", uv_strerror(status));
    uv_read_start((uv_stream_t *)&T.cli, up_alloc, cli_read);
}

static void cli_start(const char *const *script)
{
    struct sockaddr_in a;
    if (T.cli_open)
        close_now((uv_handle_t *)&T.cli);
    T.script = script;
    T.cli_step = T.cli_nreplies = T.cli_done = T.cli_greeted = 0;
    uv_ip4_addr("127.0.0.1", T.gw_port, &a);
    uv_tcp_init(&T.loop, &T.cli);
    T.cli_open = 1;
    fg_smtp_parser_init(&T.cp, cli_cb, NULL);
    ck_assert_int_eq(uv_tcp_connect(&T.creq, &T.cli, (struct sockaddr *)&a, cli_connected), 0);
}

static int cli_done_pred(void)
{
    return T.cli_done;
}

/* Submit the basic message and check every reply was positive. */
static void submit_basic(void)
{
    cli_start(basic_script);
    ck_assert_msg(run_until(cli_done_pred, 10000), "submission did not finish");
    /* greeting, EHLO, MAIL, RCPT, DATA(354), end of data, QUIT */
    ck_assert_int_eq(T.cli_nreplies, 7);
    ck_assert_int_eq(T.cli_codes[0], 220);
    ck_assert_int_eq(T.cli_codes[4], 354);
    ck_assert_int_eq(T.cli_codes[5], 250);
    ck_assert_int_eq(T.cli_codes[6], 221);
}

/* ---- fixture -------------------------------------------------------------- */

static void setup(void)
{
    memset(&T, 0, sizeof(T));
    ck_assert_int_eq(uv_loop_init(&T.loop), 0);
    uv_timer_init(&T.loop, &T.deadline);
    uv_timer_init(&T.loop, &T.poll);
    snprintf(T.spool, sizeof(T.spool), "/tmp/check_refgw.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(T.spool));
    snprintf(T.ready, sizeof(T.ready), "%s/ready", T.spool);
    up_start();
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int exited_pred(void)
{
    return !T.proc_running;
}

static void teardown(void)
{
    if (T.proc_running) {
        uv_process_kill(&T.proc, SIGKILL);
        run_until(exited_pred, 5000);
    }
    while (T.up_conns)
        up_close(T.up_conns);
    uv_walk(&T.loop, close_walk, NULL);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    uv_loop_close(&T.loop);
    for (unsigned i = 0; i < T.ndl; i++)
        free(T.dl[i].body);
    nftw(T.spool, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- tests ---------------------------------------------------------------- */

static int two_deliveries(void)
{
    return T.ndl >= 2;
}

static int one_delivery(void)
{
    return T.ndl >= 1;
}

START_TEST(relays_once)
{
    start_refgw("none", "data_done=5s", "200ms");
    submit_basic();
    ck_assert_msg(run_until(one_delivery, 10000), "message not relayed");
    /* Nothing more arrives within half a second (no duplicate). */
    ck_assert_msg(!run_until(two_deliveries, 500), "delivered twice");
    struct delivery *d = &T.dl[0];
    ck_assert_str_eq(d->from, "alice@a.test");
    /* Our Received: line first (RFC 5321 §4.4), the body re-stuffed. */
    ck_assert_msg(strncmp(d->body, "Received: from client.test", 26) == 0, "body: %s", d->body);
    ck_assert_ptr_nonnull(strstr(d->body, "\r\nX-Faultgate-Token: tok-1234\r\n"));
    ck_assert_ptr_nonnull(strstr(d->body, "\r\n..a line that starts with a dot\r\nlast line\r\n"));
    ck_assert_int_eq(T.ndl, 1);
    ck_assert_int_eq(T.up_nconn, 1);
}
END_TEST

static int second_conn_delivered(void)
{
    return T.ndl >= 1 && T.up_nconn >= 2;
}

START_TEST(hang_after_data_times_out_and_retries)
{
    T.mode = UP_HANG_EOD_FIRST;
    start_refgw("none", "data_done=1s", "200ms");
    submit_basic();
    ck_assert_msg(run_until(second_conn_delivered, 10000), "no retry after the hang");
    ck_assert(T.t_eod1 > 0);
    ck_assert(T.closed1);
    uint64_t waited = T.t_close1 - T.t_eod1;
    /* refgw waited data_done (1 s), not much less and not much more. */
    ck_assert_msg(waited >= 800 && waited <= 3000, "closed %llu ms after the dot",
                  (unsigned long long)waited);
    ck_assert_int_eq(T.ndl, 1);
    ck_assert_uint_eq(T.dl[0].conn, 2);
}
END_TEST

static int closed1_or_retry(void)
{
    return T.closed1 || T.up_nconn >= 2;
}

static int eod1_seen(void)
{
    return T.t_eod1 > 0;
}

START_TEST(bug_no_data_timeout_hangs)
{
    T.mode = UP_HANG_EOD_FIRST;
    start_refgw("no-data-timeout", "data_done=1s", "200ms");
    submit_basic();
    ck_assert(run_until(eod1_seen, 10000));
    /* Q129140: within data_done plus a margin, refgw neither closes nor
     * retries; the deadline ending this wait is the expected outcome. */
    ck_assert_msg(!run_until(closed1_or_retry, 2500), "refgw closed or retried");
    ck_assert_int_eq(T.up_nconn, 1);
    ck_assert_int_eq(T.ndl, 0);
    ck_assert(T.proc_running);
}
END_TEST

START_TEST(ehlo_drop_retries_with_helo)
{
    T.mode = UP_DROP_EHLO_FIRST;
    start_refgw("none", "ehlo=2s", "200ms");
    submit_basic();
    ck_assert_msg(run_until(second_conn_delivered, 10000), "no retry after the EHLO drop");
    ck_assert(T.used_ehlo[1]);
    ck_assert(T.used_helo[2]); /* Q197142 fix: HELO on the retry */
    ck_assert_int_eq(T.ndl, 1);
    ck_assert(T.proc_running);
}
END_TEST

START_TEST(ehlo_500_falls_back_to_helo)
{
    T.mode = UP_EHLO_500;
    start_refgw("none", "ehlo=2s", "200ms");
    submit_basic();
    ck_assert_msg(run_until(one_delivery, 10000), "not delivered after EHLO 500");
    /* RFC 5321 §3.2: HELO in the same session, no extensions after it. */
    ck_assert_uint_eq(T.dl[0].conn, 1);
    ck_assert(T.used_helo[1]);
}
END_TEST

START_TEST(bug_crash_on_ehlo_drop_aborts)
{
    T.mode = UP_DROP_EHLO_FIRST;
    start_refgw("crash-on-ehlo-drop", "ehlo=2s", "200ms");
    submit_basic();
    ck_assert_msg(run_until(exited_pred, 10000), "refgw did not stop");
    ck_assert_int_eq(T.term_signal, SIGABRT);
    ck_assert_int_eq(T.ndl, 0);
}
END_TEST

static const char *const bounce_script[] = {
    "EHLO client.test\r\n",
    "MAIL FROM:<alice@a.test>\r\n",
    "RCPT TO:<bob@b.test>\r\n",
    "RCPT TO:<nobody@b.test>\r\n",
    "DATA\r\n",
    "Subject: hi\r\nX-Faultgate-Token: tok-bounce\r\n\r\nbody\r\n.\r\n",
    "QUIT\r\n",
    NULL};

START_TEST(rejected_rcpt_bounces)
{
    static const char *const *const script = bounce_script;
    T.reject_rcpt = "nobody@";
    start_refgw("none", "data_done=5s", "200ms");
    cli_start(script);
    ck_assert(run_until(cli_done_pred, 10000));
    ck_assert_int_eq(T.cli_codes[6], 250);
    ck_assert_msg(run_until(two_deliveries, 10000), "no bounce");
    /* The message to bob, then the bounce to alice with a null sender. */
    ck_assert_str_eq(T.dl[0].from, "alice@a.test");
    ck_assert_str_eq(T.dl[1].from, "");
    ck_assert_ptr_nonnull(strstr(T.dl[1].body, "Subject: Undelivered Mail Returned to Sender"));
    ck_assert_ptr_nonnull(strstr(T.dl[1].body, "X-Faultgate-Token: tok-bounce\r\n"));
    ck_assert_ptr_nonnull(strstr(T.dl[1].body, "550 5.1.1"));
}
END_TEST

START_TEST(sigterm_exits_promptly)
{
    start_refgw("none", "idle=5s", "200ms");
    uint64_t t0 = fg_now_ms();
    ck_assert_int_eq(uv_process_kill(&T.proc, SIGTERM), 0);
    ck_assert_msg(run_until(exited_pred, 5000), "refgw ignored SIGTERM");
    ck_assert_int_eq(T.term_signal, 0);
    ck_assert_int_eq(T.exit_status, 0);
    ck_assert_msg(T.t_exit - t0 < 2000, "took %llu ms", (unsigned long long)(T.t_exit - t0));
}
END_TEST

static void expect_exit2(const char *const *args)
{
    spawn(args);
    ck_assert_msg(run_until(exited_pred, 5000), "refgw did not exit");
    ck_assert_int_eq(T.term_signal, 0);
    ck_assert_int_eq(T.exit_status, 2);
    close_now((uv_handle_t *)&T.proc); /* the next spawn reuses it */
}

START_TEST(bad_args_exit_2)
{
    const char *const unknown_bug[] = {"--listen",     "127.0.0.1:0",  "--upstream",
                                       "127.0.0.1:25", "--spool",      T.spool,
                                       "--bug",        "no-such-mode", NULL};
    const char *const no_listen[] = {"--upstream", "127.0.0.1:25", "--spool", T.spool, NULL};
    const char *const bad_timeout[] = {"--listen",     "127.0.0.1:0", "--upstream",
                                       "127.0.0.1:25", "--spool",     T.spool,
                                       "--timeout",    "bogus=1s",    NULL};
    const char *const bad_dur[] = {"--listen",     "127.0.0.1:0", "--upstream",
                                   "127.0.0.1:25", "--spool",     T.spool,
                                   "--retry",      "soon",        NULL};
    expect_exit2(unknown_bug);
    expect_exit2(no_listen);
    expect_exit2(bad_timeout);
    expect_exit2(bad_dur);
}
END_TEST

static void probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    if (nread > 0 && b->base[0] == '2')
        T.probe_greeted = 1;
    if (nread < 0)
        uv_read_stop(s);
    poke();
}

static void probe_connected(uv_connect_t *req, int status)
{
    if (status == 0)
        uv_read_start((uv_stream_t *)&T.probe, up_alloc, probe_read);
}

static void probe_start(void)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", T.gw_port, &a);
    uv_tcp_init(&T.loop, &T.probe);
    ck_assert_int_eq(uv_tcp_connect(&T.preq, &T.probe, (struct sockaddr *)&a, probe_connected), 0);
}

static int probe_greeted_pred(void)
{
    return T.probe_greeted;
}

static const char *const noop_script[] = {"NOOP\r\n", NULL};

START_TEST(concurrent_inbound)
{
    start_refgw("none", "idle=5s", "200ms");
    cli_start(noop_script); /* stays connected after its NOOP */
    ck_assert(run_until(cli_done_pred, 5000));
    probe_start();
    ck_assert_msg(run_until(probe_greeted_pred, 5000), "second connection not served");
}
END_TEST

START_TEST(bug_serial_inbound_blocks_second)
{
    start_refgw("serial-inbound", "idle=5s", "200ms");
    cli_start(noop_script);
    ck_assert(run_until(cli_done_pred, 5000));
    ck_assert_int_eq(T.cli_codes[0], 220);
    probe_start();
    /* Q131150: while the first conversation lasts, the second one is not
     * answered; the deadline ending this wait is the expected outcome. */
    ck_assert_msg(!run_until(probe_greeted_pred, 700), "second connection served");
    close_now((uv_handle_t *)&T.cli); /* the first client leaves */
    T.cli_open = 0;
    ck_assert_msg(run_until(probe_greeted_pred, 5000), "not served after the first left");
}
END_TEST

static int spool_count(void)
{
    DIR *d = opendir(T.spool);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        n += l > 4 && !strcmp(e->d_name + l - 4, ".msg");
    }
    if (d)
        closedir(d);
    return n;
}

static int any_upstream_conn(void)
{
    return T.up_nconn > 0;
}

START_TEST(bug_silent_drop_keeps_message)
{
    /* Q135031: mail for a destination it cannot route (a 550 at RCPT) is
     * kept in the spool, neither retried nor bounced; other mail flows. */
    T.reject_rcpt = "nobody@";
    start_refgw("silent-drop", "data_done=5s", "200ms");
    cli_start(bounce_script);
    ck_assert(run_until(cli_done_pred, 10000));
    ck_assert_int_eq(T.cli_codes[6], 250);
    ck_assert_msg(run_until(any_upstream_conn, 5000), "nothing relayed");
    ck_assert_msg(!run_until(two_deliveries, 1500), "silent-drop bounced");
    ck_assert_int_eq(T.ndl, 1);
    ck_assert_str_eq(T.dl[0].from, "alice@a.test");
    ck_assert_int_eq(spool_count(), 1);
    ck_assert(T.proc_running);
}
END_TEST

START_TEST(sigterm_mid_delivery_keeps_spool)
{
    T.mode = UP_HANG_EOD_FIRST;
    start_refgw("none", "data_done=30s", "200ms");
    submit_basic();
    ck_assert(run_until(eod1_seen, 10000));
    cli_start(noop_script); /* an idle inbound session too */
    ck_assert(run_until(cli_done_pred, 5000));
    uint64_t t0 = fg_now_ms();
    ck_assert_int_eq(uv_process_kill(&T.proc, SIGTERM), 0);
    ck_assert_msg(run_until(exited_pred, 5000), "refgw ignored SIGTERM");
    ck_assert_int_eq(T.term_signal, 0);
    ck_assert_int_eq(T.exit_status, 0);
    ck_assert(T.t_exit - t0 < 2000);
    /* No 250 after the dot, so the message is still ours (RFC 5321 §6.1)
     * and a new refgw on the same spool delivers it. */
    ck_assert_int_eq(spool_count(), 1);
    close_now((uv_handle_t *)&T.proc);
    T.gw_port = 0;
    remove(T.ready);
    start_refgw("none", "data_done=5s", "200ms");
    ck_assert_msg(run_until(one_delivery, 10000), "spooled message not delivered after restart");
    ck_assert_ptr_nonnull(strstr(T.dl[0].body, "X-Faultgate-Token: tok-1234\r\n"));
}
END_TEST

static Suite *refgw_suite(void)
{
    Suite *s = suite_create("refgw");
    TCase *tc = tcase_create("e2e");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, relays_once);
    tcase_add_test(tc, hang_after_data_times_out_and_retries);
    tcase_add_test(tc, bug_no_data_timeout_hangs);
    tcase_add_test(tc, ehlo_drop_retries_with_helo);
    tcase_add_test(tc, ehlo_500_falls_back_to_helo);
    tcase_add_test(tc, bug_crash_on_ehlo_drop_aborts);
    tcase_add_test(tc, rejected_rcpt_bounces);
    tcase_add_test(tc, sigterm_exits_promptly);
    tcase_add_test(tc, bad_args_exit_2);
    tcase_add_test(tc, concurrent_inbound);
    tcase_add_test(tc, bug_serial_inbound_blocks_second);
    tcase_add_test(tc, bug_silent_drop_keeps_message);
    tcase_add_test(tc, sigterm_mid_delivery_keeps_spool);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(refgw_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
