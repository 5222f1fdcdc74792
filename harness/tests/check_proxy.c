/* check_proxy.c - the proxy at the socket level: a tiny SMTP-ish (or echo)
 * upstream and a client, both libuv on 127.0.0.1 with ephemeral ports, and
 * the proxy between them.  Covers byte-exact bulk forwarding both ways
 * with bounded buffering and half-close, and each fault action: stall
 * (with the client leaving by FIN and by RST), close, reset, reply
 * (inject and replace) and delay.  Every loop run has a deadline. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/proxy.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

#define DEADLINE_MS 20000

/* --- a growable byte log --------------------------------------------------- */

struct bytes {
    char *d;
    size_t n, cap;
};

static void bytes_add(struct bytes *b, const char *p, size_t n)
{
    fg_array_reserve((void **)&b->d, &b->cap, b->n + n + 1, 1);
    memcpy(b->d + b->n, p, n);
    b->n += n;
    b->d[b->n] = '\0';
}

static int bytes_has(const struct bytes *b, const char *s)
{
    return b->d && strstr(b->d, s) != NULL;
}

/* --- the test world ---------------------------------------------------------- */

enum up_mode { UP_SMTP, UP_ECHO };

struct env;

struct peer {
    struct env *e;
    uv_tcp_t tcp;
    int open;
    struct bytes in;
    int eof;      /* read EOF */
    int err;      /* read error (UV_ECONNRESET ...) */
    int werr;     /* first write error */
    uint64_t got; /* bytes read */
    size_t scan;  /* SMTP upstream: start of the next line in `in` */
    int in_data;
    uint64_t t_354;   /* uv_now when the upstream sent its 354 */
    uint64_t t_greet; /* uv_now when the client read the greeting */
    uint64_t t_conn;  /* uv_now when the client connected */
    size_t max_read;  /* the largest single read */
    unsigned reads;
};

struct env {
    uv_loop_t loop;
    uv_timer_t deadline;
    uv_tcp_t up_listener;
    int up_port;
    enum up_mode mode;
    unsigned threads;     /* fg_proxy_opts.threads */
    int extra_after_ehlo; /* upstream sends "421 bye" right after its EHLO reply */
    struct peer up;       /* the upstream's accepted connection */
    struct peer cli;      /* the client */
    uv_connect_t creq;
    int connected;
    struct fg_proxy *proxy;
    struct fg_fault_set faults;
    char *logbuf;
    size_t loglen;
    FILE *log;
    /* bulk */
    char *payload;
    size_t plen;
    uint64_t up_verified, cli_verified;
    uv_timer_t up_pause;
    uint64_t up_since_pause;
    /* client write */
    uv_write_t wreq;
    int write_done;
    int write_status;
    uv_shutdown_t sreq;
    int proxy_closed;
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
    struct peer *peer;
    char data[];
};

static void owrite_done(uv_write_t *req, int status)
{
    struct owrite *w = (struct owrite *)req;
    if (status < 0 && !w->peer->werr)
        w->peer->werr = status;
    free(req);
}

static void shutdown_free(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* A write that owns a copy of its bytes. */
static void send_copy(uv_tcp_t *tcp, const char *s, size_t n)
{
    struct env *e = tcp->data;
    struct owrite *w = fg_malloc(sizeof *w + n);
    w->peer = tcp == &e->up.tcp ? &e->up : &e->cli;
    memcpy(w->data, s, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    ck_assert_int_eq(uv_write(&w->req, (uv_stream_t *)tcp, &b, 1, owrite_done), 0);
}

static void send_str(uv_tcp_t *tcp, const char *s)
{
    send_copy(tcp, s, strlen(s));
}

/* The SMTP-ish upstream: one reply per command line, a 354 for DATA, then
 * a 250 after the body's lone ".". */
static void up_smtp_lines(struct env *e)
{
    struct peer *u = &e->up;
    for (;;) {
        char *nl = memchr(u->in.d + u->scan, '\n', u->in.n - u->scan);
        if (!nl)
            return;
        size_t len = (size_t)(nl - (u->in.d + u->scan)) + 1;
        const char *line = u->in.d + u->scan;
        u->scan += len;
        if (u->in_data) {
            if (len == 3 && line[0] == '.') {
                u->in_data = 0;
                send_str(&u->tcp, "250 queued\r\n");
            }
            continue;
        }
        if (strncasecmp(line, "EHLO", 4) == 0) {
            send_str(&u->tcp, e->extra_after_ehlo ? "250 ok\r\n421 bye\r\n" : "250 ok\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            u->in_data = 1;
            u->t_354 = uv_now(&e->loop);
            send_str(&u->tcp, "354 go\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            send_str(&u->tcp, "221 bye\r\n");
            uv_shutdown(fg_calloc(1, sizeof(uv_shutdown_t)), (uv_stream_t *)&u->tcp, shutdown_free);
        } else {
            send_str(&u->tcp, "250 ok\r\n");
        }
    }
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void up_resume(uv_timer_t *t)
{
    struct env *e = t->data;
    if (e->up.open && !e->up.eof && !e->up.err)
        uv_read_start((uv_stream_t *)&e->up.tcp, alloc_cb, up_read);
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct env *e = s->data;
    struct peer *u = &e->up;
    if (nread > 0) {
        u->got += (uint64_t)nread;
        if (e->mode == UP_ECHO) {
            ck_assert_msg(e->up_verified + (size_t)nread <= e->plen, "upstream got too much");
            ck_assert_msg(memcmp(buf->base, e->payload + e->up_verified, (size_t)nread) == 0,
                          "upstream: bytes differ at %llu", (unsigned long long)e->up_verified);
            e->up_verified += (uint64_t)nread;
            send_copy(&u->tcp, buf->base, (size_t)nread);
            /* A slow reader: pause now and then so queues build up. */
            e->up_since_pause += (uint64_t)nread;
            if (e->up_since_pause >= 256 * 1024) {
                e->up_since_pause = 0;
                uv_read_stop(s);
                uv_timer_start(&e->up_pause, up_resume, 2, 0);
            }
        } else {
            bytes_add(&u->in, buf->base, (size_t)nread);
            up_smtp_lines(e);
        }
    } else if (nread == UV_EOF) {
        u->eof = 1;
        uv_read_stop(s);
        if (e->mode == UP_ECHO)
            uv_shutdown(fg_calloc(1, sizeof(uv_shutdown_t)), s, shutdown_free);
    } else if (nread < 0) {
        u->err = (int)nread;
        uv_read_stop(s);
    }
    free(buf->base);
}

static void up_accept(uv_stream_t *l, int status)
{
    struct env *e = l->data;
    ck_assert_int_eq(status, 0);
    ck_assert_msg(!e->up.open, "one upstream connection expected");
    uv_tcp_init(&e->loop, &e->up.tcp);
    e->up.tcp.data = e;
    e->up.open = 1;
    ck_assert_int_eq(uv_accept(l, (uv_stream_t *)&e->up.tcp), 0);
    if (e->mode == UP_ECHO)
        uv_recv_buffer_size((uv_handle_t *)&e->up.tcp, &(int){65536});
    else
        send_str(&e->up.tcp, "220 up\r\n");
    uv_read_start((uv_stream_t *)&e->up.tcp, alloc_cb, up_read);
}

static void cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct env *e = s->data;
    struct peer *c = &e->cli;
    if (nread > 0) {
        c->got += (uint64_t)nread;
        if (e->mode == UP_ECHO) {
            ck_assert_msg(e->cli_verified + (size_t)nread <= e->plen, "client got too much");
            ck_assert_msg(memcmp(buf->base, e->payload + e->cli_verified, (size_t)nread) == 0,
                          "client: bytes differ at %llu", (unsigned long long)e->cli_verified);
            e->cli_verified += (uint64_t)nread;
        } else {
            bytes_add(&c->in, buf->base, (size_t)nread);
            if (!c->t_354 && bytes_has(&c->in, "354 go\r\n"))
                c->t_354 = uv_now(&e->loop);
            if (!c->t_greet && bytes_has(&c->in, "220 up\r\n"))
                c->t_greet = uv_now(&e->loop);
            c->reads++;
            if ((size_t)nread > c->max_read)
                c->max_read = (size_t)nread;
        }
    } else if (nread == UV_EOF) {
        c->eof = 1;
        uv_read_stop(s);
    } else if (nread < 0) {
        c->err = (int)nread;
        uv_read_stop(s);
    }
    free(buf->base);
}

static void cli_connected(uv_connect_t *req, int status)
{
    struct env *e = req->data;
    if (status == UV_ECONNRESET) {
        /* refuse: the RST can beat the connect callback. */
        e->cli.err = status;
        return;
    }
    ck_assert_int_eq(status, 0);
    e->connected = 1;
    e->cli.t_conn = uv_now(&e->loop);
    uv_read_start((uv_stream_t *)&e->cli.tcp, alloc_cb, cli_read);
}

static void env_init(struct env *e, enum up_mode mode)
{
    memset(e, 0, sizeof *e);
    e->mode = mode;
    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->deadline);
    uv_timer_start(&e->deadline, on_deadline, DEADLINE_MS, 0);
    uv_timer_init(&e->loop, &e->up_pause);
    e->up_pause.data = e;
    e->up.e = e->cli.e = e;
    fg_fault_set_init(&e->faults, 1234);
    e->log = open_memstream(&e->logbuf, &e->loglen);

    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&e->loop, &e->up_listener);
    e->up_listener.data = e;
    ck_assert_int_eq(uv_tcp_bind(&e->up_listener, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&e->up_listener, 8, up_accept), 0);
    struct sockaddr_in b;
    int bl = sizeof b;
    uv_tcp_getsockname(&e->up_listener, (struct sockaddr *)&b, &bl);
    e->up_port = ntohs(b.sin_port);
}

static void add_fault(struct env *e, const char *line)
{
    struct fg_fault f;
    char err[256];
    int col;
    ck_assert_msg(fg_fault_parse(line, &f, err, sizeof err, &col) == 0, "%s: %s", line, err);
    ck_assert_int_eq(fg_fault_set_add(&e->faults, &f), 0);
}

static void start(struct env *e, size_t high_water, struct fg_capture *cap)
{
    struct fg_proxy_opts o = {.listen_host = "127.0.0.1",
                              .listen_port = 0,
                              .upstream_host = "127.0.0.1",
                              .upstream_port = e->up_port,
                              .faults = &e->faults,
                              .capture = cap,
                              .high_water = high_water,
                              .log = e->log,
                              .threads = e->threads};
    char err[256];
    ck_assert_msg(fg_proxy_new(&e->loop, &o, &e->proxy, err, sizeof err) == 0, "%s", err);
    int port = fg_proxy_port(e->proxy);
    ck_assert_int_gt(port, 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&e->loop, &e->cli.tcp);
    e->cli.tcp.data = e;
    e->cli.open = 1;
    if (e->mode == UP_ECHO)
        uv_recv_buffer_size((uv_handle_t *)&e->cli.tcp, &(int){65536});
    e->creq.data = e;
    ck_assert_int_eq(uv_tcp_connect(&e->creq, &e->cli.tcp, (struct sockaddr *)&a, cli_connected),
                     0);
}

/* Runs the loop until pred holds; the deadline timer fails the test
 * otherwise. */
typedef int (*pred_fn)(struct env *e);

static void run_until(struct env *e, pred_fn pred)
{
    while (!pred(e))
        uv_run(&e->loop, UV_RUN_ONCE);
}

/* An observation window: run the loop for ms, then return. */
static void window_done(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

static void run_for(struct env *e, uint64_t ms)
{
    uv_timer_t t;
    int done = 0;
    uv_timer_init(&e->loop, &t);
    t.data = &done;
    uv_timer_start(&t, window_done, ms, 0);
    while (!done)
        uv_run(&e->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
}

static void proxy_closed(void *ud)
{
    ((struct env *)ud)->proxy_closed = 1;
}

static int is_proxy_closed(struct env *e)
{
    return e->proxy_closed;
}

static void env_free(struct env *e)
{
    if (e->proxy) {
        fg_proxy_close(e->proxy, proxy_closed, e);
        run_until(e, is_proxy_closed);
    }
    if (e->cli.open && !uv_is_closing((uv_handle_t *)&e->cli.tcp))
        uv_close((uv_handle_t *)&e->cli.tcp, NULL);
    if (e->up.open && !uv_is_closing((uv_handle_t *)&e->up.tcp))
        uv_close((uv_handle_t *)&e->up.tcp, NULL);
    uv_close((uv_handle_t *)&e->up_listener, NULL);
    uv_close((uv_handle_t *)&e->up_pause, NULL);
    uv_close((uv_handle_t *)&e->deadline, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);
    fg_fault_set_free(&e->faults);
    fclose(e->log);
    free(e->logbuf);
    free(e->up.in.d);
    free(e->cli.in.d);
    free(e->payload);
}

/* --- predicates --------------------------------------------------------------- */

static int cli_greeted(struct env *e)
{
    return bytes_has(&e->cli.in, "220 up\r\n");
}
static int cli_has_250(struct env *e)
{
    return bytes_has(&e->cli.in, "250 ok\r\n");
}
static int cli_has_354(struct env *e)
{
    return e->cli.t_354 != 0;
}
static int cli_has_queued(struct env *e)
{
    return bytes_has(&e->cli.in, "250 queued\r\n");
}
static int cli_ended(struct env *e)
{
    return e->cli.eof || e->cli.err;
}
static int up_ended(struct env *e)
{
    return e->up.eof || e->up.err;
}
static int both_ended(struct env *e)
{
    return cli_ended(e) && up_ended(e);
}
static int proxy_idle(struct env *e)
{
    return fg_proxy_open(e->proxy) == 0;
}

/* --- bulk forwarding ------------------------------------------------------------ */

static void cli_wrote(uv_write_t *req, int status)
{
    struct env *e = req->data;
    e->write_done = 1;
    e->write_status = status;
}

static int bulk_echoed(struct env *e)
{
    return e->cli_verified == e->plen;
}

static int bulk_finished(struct env *e)
{
    return e->cli.eof && e->up.eof && fg_proxy_open(e->proxy) == 0;
}

START_TEST(bulk_byte_exact_bounded)
{
    struct env e;
    env_init(&e, UP_ECHO);
    e.plen = 8u << 20;
    e.payload = fg_malloc(e.plen);
    struct fg_rng r;
    fg_rng_seed(&r, 77);
    for (size_t i = 0; i < e.plen; i += 8) {
        uint64_t v = fg_rng_next(&r);
        memcpy(e.payload + i, &v, 8);
    }
    /* Faults present, so the parser watches the (non-SMTP) bytes too. */
    add_fault(&e, "command QUIT: close");
    size_t hw = 64 * 1024;
    start(&e, hw, NULL);
    uv_buf_t b = uv_buf_init(e.payload, (unsigned)e.plen);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    run_until(&e, bulk_echoed);
    ck_assert(e.write_done);
    ck_assert_int_eq(e.write_status, 0);
    ck_assert_uint_eq(e.up_verified, e.plen);
    /* Half-close: the client's FIN reaches the upstream, whose FIN comes
     * back; then the proxy closes the pair. */
    ck_assert_int_eq(uv_shutdown(&e.sreq, (uv_stream_t *)&e.cli.tcp, NULL), 0);
    run_until(&e, bulk_finished);
    ck_assert_int_eq(e.cli.err, 0);
    ck_assert_int_eq(e.up.err, 0);
    ck_assert_uint_eq(fg_proxy_bytes(e.proxy, FG_C2S), e.plen);
    ck_assert_uint_eq(fg_proxy_bytes(e.proxy, FG_S2C), e.plen);
    size_t peak = fg_proxy_peak_buffered(e.proxy);
    ck_assert_msg(peak > 0 && peak <= 2 * (hw + 256 * 1024), "peak buffered %zu", peak);
    ck_assert_uint_eq(fg_proxy_accepted(e.proxy), 1);
    ck_assert_uint_eq(e.faults.nlog, 0);
    env_free(&e);
}
END_TEST

/* --- actions ------------------------------------------------------------------- */

static void smtp_to_data(struct env *e)
{
    run_until(e, cli_greeted);
    send_str(&e->cli.tcp, "EHLO client.test\r\n");
    run_until(e, cli_has_250);
    send_str(&e->cli.tcp, "DATA\r\n");
    run_until(e, cli_has_354);
}

static int stall_cleared(struct env *e)
{
    return up_ended(e) && fg_proxy_stalled_open(e->proxy) == 0 && fg_proxy_open(e->proxy) == 0;
}

/* The client leaves with FIN: noticed without reading it. */
START_TEST(stall_then_client_fin)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "reply 354: stall");
    start(&e, 0, NULL);
    smtp_to_data(&e);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n354 go\r\n");
    send_str(&e.cli.tcp, "Subject: x\r\n\r\nhello\r\n.\r\n");
    run_for(&e, 300);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    ck_assert(!cli_has_queued(&e));
    ck_assert_uint_eq(fg_proxy_stalled_open(e.proxy), 1);
    ck_assert(!up_ended(&e));
    /* The client gives up. */
    uv_close((uv_handle_t *)&e.cli.tcp, NULL);
    run_until(&e, stall_cleared);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    fflush(e.log);
    ck_assert_msg(strstr(e.logbuf, "faultgate: conn #1 t=+"), "log: %s", e.logbuf);
    ck_assert_msg(strstr(e.logbuf, " reply 354 -> stall\n"), "log: %s", e.logbuf);
    env_free(&e);
}
END_TEST

/* The client's writes stop completing; then it resets. */
START_TEST(stall_blocks_writes_then_client_rst)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "reply 354, first: stall");
    start(&e, 0, NULL);
    smtp_to_data(&e);
    size_t n = 32u << 20; /* more than any socket buffers hold */
    e.payload = fg_malloc(n);
    memset(e.payload, 'a', n);
    uv_buf_t b = uv_buf_init(e.payload, (unsigned)n);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    run_for(&e, 300);
    ck_assert(!e.write_done);
    size_t q1 = uv_stream_get_write_queue_size((uv_stream_t *)&e.cli.tcp);
    ck_assert_uint_gt(q1, 0);
    run_for(&e, 100);
    ck_assert_uint_eq(uv_stream_get_write_queue_size((uv_stream_t *)&e.cli.tcp), q1);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    ck_assert_uint_eq(fg_proxy_stalled_open(e.proxy), 1);
    ck_assert_uint_le(fg_proxy_peak_buffered(e.proxy), 2 * (256 * 1024 + 256 * 1024));
    ck_assert_int_eq(uv_tcp_close_reset(&e.cli.tcp, NULL), 0);
    run_until(&e, stall_cleared);
    ck_assert(e.write_done);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    env_free(&e);
}
END_TEST

/* FIN right after the triggering reply; what followed it never arrives. */
START_TEST(close_after_trigger)
{
    struct env e;
    env_init(&e, UP_SMTP);
    e.extra_after_ehlo = 1;
    add_fault(&e, "reply 250: close");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO client.test\r\n");
    run_until(&e, both_ended);
    ck_assert_int_eq(e.cli.err, 0);
    ck_assert(e.cli.eof);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n");
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\n");
    run_until(&e, proxy_idle);
    env_free(&e);
}
END_TEST

START_TEST(close_one_direction)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command DATA: close c2s");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO client.test\r\nDATA\r\nQUIT\r\n");
    run_until(&e, up_ended);
    /* The upstream got DATA and then FIN; the client still hears it. */
    ck_assert(e.up.eof);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    run_until(&e, cli_has_354);
    ck_assert(!cli_ended(&e));
    env_free(&e);
}
END_TEST

START_TEST(reset_both)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command MAIL: reset");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO client.test\r\n");
    run_until(&e, cli_has_250);
    send_str(&e.cli.tcp, "MAIL FROM:<a@b.test>\r\n");
    run_until(&e, both_ended);
    ck_assert_int_eq(e.cli.err, UV_ECONNRESET);
    /* The upstream learns of the RST from its read, or from the write of
     * its reply to MAIL (which then takes the socket's error). */
    ck_assert_msg(e.up.err == UV_ECONNRESET || e.up.werr == UV_ECONNRESET || e.up.werr == UV_EPIPE,
                  "upstream: read %d write %d", e.up.err, e.up.werr);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n");
    run_until(&e, proxy_idle);
    env_free(&e);
}
END_TEST

/* An injected reply goes before the server's, on the trigger. */
START_TEST(reply_inject)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "reply 354: reply 451 4.3.0 injected");
    char path[] = "/tmp/fg-proxy-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    struct fg_capture *cap = NULL;
    char err[256];
    ck_assert_int_eq(
        fg_capture_open(&e.loop, FG_CAPTURE_SYNTH, path, NULL, 0, &cap, err, sizeof err), 0);
    start(&e, 0, cap);
    smtp_to_data(&e);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n451 4.3.0 injected\r\n354 go\r\n");
    send_str(&e.cli.tcp, "hello\r\n.\r\n");
    run_until(&e, cli_has_queued);
    fg_proxy_close(e.proxy, proxy_closed, &e);
    e.proxy = NULL;
    run_until(&e, is_proxy_closed);
    ck_assert_uint_gt(fg_capture_frames(cap), 10);
    ck_assert_int_eq(fg_capture_close(cap), 0);
    unlink(path);
    env_free(&e);
}
END_TEST

/* With replace, the proxy answers the command in the server's place. */
START_TEST(reply_replace_command)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command RCPT #2: reply 452 4.5.3 too many|try later, replace");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
                         "RCPT TO:<z@y.test>\r\nQUIT\r\n");
    run_until(&e, cli_ended);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n250 ok\r\n250 ok\r\n"
                                 "452-4.5.3 too many\r\n452 try later\r\n221 bye\r\n");
    ck_assert_str_eq(e.up.in.d, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nQUIT\r\n");
    env_free(&e);
}
END_TEST

START_TEST(reply_replace_reply)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "reply-to end-of-data: reply 554 5.7.1 rejected, replace");
    start(&e, 0, NULL);
    smtp_to_data(&e);
    send_str(&e.cli.tcp, "hello\r\n.\r\nQUIT\r\n");
    run_until(&e, cli_ended);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n354 go\r\n554 5.7.1 rejected\r\n221 bye\r\n");
    env_free(&e);
}
END_TEST

/* The 354 reaches the client no earlier than D after the upstream sent it,
 * and the session goes on afterwards. */
START_TEST(delay_holds)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "reply 354: delay 300ms");
    start(&e, 0, NULL);
    smtp_to_data(&e);
    ck_assert_uint_gt(e.up.t_354, 0);
    ck_assert_msg(e.cli.t_354 - e.up.t_354 >= 300, "354 after %llu ms",
                  (unsigned long long)(e.cli.t_354 - e.up.t_354));
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n354 go\r\n");
    send_str(&e.cli.tcp, "hello\r\n.\r\n");
    run_until(&e, cli_has_queued);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n354 go\r\n250 queued\r\n");
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\nhello\r\n.\r\n");
    env_free(&e);
}
END_TEST

/* connect: the fault applies as soon as the upstream leg is up. */
START_TEST(connect_reply_and_nth)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "connect, nth 2: reset");
    add_fault(&e, "connect, first: reply 220 proxy says hi");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    ck_assert_str_eq(e.cli.in.d, "220 proxy says hi\r\n220 up\r\n");
    ck_assert_uint_eq(e.faults.nlog, 1);
    ck_assert_str_eq(e.faults.log[0].trigger, "connect");
    env_free(&e);
}
END_TEST

static int upstream_refused_seen(struct env *e)
{
    return cli_ended(e) && fg_proxy_open(e->proxy) == 0;
}

/* An upstream that is not there: the client sees a reset, and nothing
 * leaks. */
START_TEST(upstream_refused)
{
    struct env e;
    env_init(&e, UP_SMTP);
    uv_close((uv_handle_t *)&e.up_listener, NULL);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    uv_tcp_init(&e.loop, &e.up_listener); /* env_free closes it again */
    start(&e, 0, NULL);
    run_until(&e, upstream_refused_seen);
    ck_assert(e.cli.err == UV_ECONNRESET || e.cli.eof);
    ck_assert_uint_eq(fg_proxy_accepted(e.proxy), 1);
    env_free(&e);
}
END_TEST

START_TEST(bad_addresses)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fg_proxy *p = NULL;
    char err[256];
    struct fg_proxy_opts o = {
        .listen_host = "localhost", .upstream_host = "127.0.0.1", .upstream_port = 25};
    ck_assert_int_eq(fg_proxy_new(&loop, &o, &p, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_null(p);
    o.listen_host = "127.0.0.1";
    o.upstream_port = 0;
    ck_assert_int_eq(fg_proxy_new(&loop, &o, &p, err, sizeof err), FG_EINPUT);
    /* A port in use. */
    uv_tcp_t busy;
    uv_tcp_init(&loop, &busy);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    ck_assert_int_eq(uv_tcp_bind(&busy, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&busy, 1, NULL), 0);
    int al = sizeof a;
    uv_tcp_getsockname(&busy, (struct sockaddr *)&a, &al);
    o.listen_port = ntohs(a.sin_port);
    o.upstream_port = 25;
    ck_assert_int_eq(fg_proxy_new(&loop, &o, &p, err, sizeof err), UV_EADDRINUSE);
    ck_assert_ptr_null(p);
    ck_assert(strstr(err, "listen"));
    uv_close((uv_handle_t *)&busy, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* --- the complete action set, each observed at the socket level ----------- */

static uv_buf_t filler(struct env *e, size_t n)
{
    if (!e->payload) {
        e->plen = n;
        e->payload = fg_malloc(n);
        memset(e->payload, 'a', n);
    }
    return uv_buf_init(e->payload, (unsigned)n);
}

/* Non-blocking writes until EAGAIN; returns how many bytes went, or
 * (size_t)-1 if `limit` bytes went without one. */
static size_t write_until_eagain(struct env *e, size_t limit)
{
    uv_buf_t b = filler(e, 65536);
    size_t total = 0;
    while (total < limit) {
        int rc = uv_try_write((uv_stream_t *)&e->cli.tcp, &b, 1);
        if (rc == UV_EAGAIN)
            return total;
        ck_assert_int_gt(rc, 0);
        total += (size_t)rc;
    }
    return (size_t)-1;
}

/* stall: the client's non-blocking writes end in EAGAIN and stay so while
 * the loop runs; blackhole: after an EAGAIN, one turn of the loop (the
 * proxy reads and discards) makes room again, and 64 MiB go through. */
START_TEST(stall_eagain_blackhole_not)
{
    for (int bh = 0; bh <= 1; bh++) {
        struct env e;
        env_init(&e, UP_SMTP);
        add_fault(&e, bh ? "reply 354: blackhole c2s" : "reply 354: stall c2s");
        start(&e, 0, NULL);
        smtp_to_data(&e);
        if (!bh) {
            size_t n = write_until_eagain(&e, 256u << 20);
            ck_assert_msg(n != (size_t)-1, "stall: 256 MiB written without EAGAIN");
            /* And it stays so: with the loop running, the kernel may open
             * a little more window, but writes soon block again. */
            for (int k = 0; k < 3; k++) {
                run_for(&e, 200);
                ck_assert_msg(write_until_eagain(&e, 16u << 20) != (size_t)-1,
                              "stall: 16 MiB more written without EAGAIN");
            }
        } else {
            size_t total = 0;
            unsigned eagain = 0;
            while (total < (64u << 20)) {
                size_t n = write_until_eagain(&e, (64u << 20) - total);
                if (n == (size_t)-1)
                    break;
                total += n;
                eagain++;
                /* The proxy drains the socket within a few turns. */
                int ok = 0;
                for (int k = 0; k < 1000 && !ok; k++) {
                    uv_run(&e.loop, UV_RUN_ONCE);
                    uv_buf_t b = filler(&e, 65536);
                    int rc = uv_try_write((uv_stream_t *)&e.cli.tcp, &b, 1);
                    if (rc > 0) {
                        total += (size_t)rc;
                        ok = 1;
                    }
                }
                ck_assert_msg(ok, "blackhole: writes stayed blocked after %zu bytes", total);
            }
            (void)eagain;
        }
        /* Either way, nothing of the body reached the server. */
        ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
        ck_assert(!up_ended(&e));
        env_free(&e);
    }
}
END_TEST

static int up_eof_and_cli_354(struct env *e)
{
    return e->up.eof && cli_has_354(e);
}

/* half-close: FIN to the server after DATA; the server's 354 still
 * reaches the client, whose later bytes are read and discarded. */
START_TEST(half_close_c2s)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command DATA: half-close");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO client.test\r\nDATA\r\n");
    run_until(&e, up_eof_and_cli_354);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    ck_assert(!cli_ended(&e));
    /* The client's next 1 MiB is accepted (read and discarded). */
    uv_buf_t b = filler(&e, 1u << 20);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    while (!e.write_done)
        uv_run(&e.loop, UV_RUN_ONCE);
    ck_assert_int_eq(e.write_status, 0);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\nDATA\r\n");
    env_free(&e);
}
END_TEST

static int up_has_all(struct env *e)
{
    return e->up_verified == e->plen;
}

/* throttle 20000 B/s from connect: 10000 bytes need at least 0.5 s (the
 * bucket starts empty). */
START_TEST(throttle_rate)
{
    struct env e;
    env_init(&e, UP_ECHO);
    add_fault(&e, "connect: throttle 20000 c2s");
    start(&e, 0, NULL);
    while (!e.connected)
        uv_run(&e.loop, UV_RUN_ONCE);
    uv_buf_t b = filler(&e, 10000);
    uint64_t t0 = uv_now(&e.loop);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    run_until(&e, up_has_all);
    uint64_t dt = uv_now(&e.loop) - t0;
    ck_assert_msg(dt >= 450, "10000 bytes at 20000 B/s took %llu ms", (unsigned long long)dt);
    env_free(&e);
}
END_TEST

static int cli_has_ok(struct env *e)
{
    return bytes_has(&e->cli.in, "250 ok\r\n");
}

/* slice 3 pause 50ms on the server's bytes: the client reads them 3
 * octets at a time. */
START_TEST(slice_segments)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command EHLO: slice 3 pause 50ms s2c");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    unsigned reads0 = e.cli.reads;
    e.cli.max_read = 0;
    uint64_t t0 = uv_now(&e.loop);
    send_str(&e.cli.tcp, "EHLO client.test\r\n");
    run_until(&e, cli_has_ok);
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n");
    ck_assert_uint_le(e.cli.max_read, 3);
    ck_assert_uint_eq(e.cli.reads - reads0, 3); /* "250", " ok", "\r\n" */
    ck_assert_uint_ge(uv_now(&e.loop) - t0, 100);
    env_free(&e);
}
END_TEST

static int up_eof(struct env *e)
{
    return e->up.eof || e->up.err;
}

/* limit 1000 c2s: exactly 1000 octets reach the server, then FIN. */
START_TEST(limit_bytes)
{
    struct env e;
    env_init(&e, UP_ECHO);
    add_fault(&e, "connect: limit 1000 c2s");
    start(&e, 0, NULL);
    while (!e.connected)
        uv_run(&e.loop, UV_RUN_ONCE);
    uv_buf_t b = filler(&e, 5000);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    run_until(&e, up_eof);
    ck_assert(e.up.eof);
    ck_assert_uint_eq(e.up_verified, 1000);
    run_until(&e, cli_ended);
    env_free(&e);
}
END_TEST

/* drop the first RCPT: the server never sees it, the client never gets
 * its reply, and the parser stays in step: the reply to the end of data
 * is still recognised as such (and replaced). */
START_TEST(drop_keeps_parser_in_step)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command RCPT #1: drop");
    add_fault(&e, "reply-to end-of-data: reply 554 5.0.0 replaced, replace");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
                         "RCPT TO:<z@y.test>\r\nDATA\r\n");
    run_until(&e, cli_has_354);
    send_str(&e.cli.tcp, "hi\r\n.\r\nQUIT\r\n");
    run_until(&e, cli_ended);
    ck_assert_str_eq(e.up.in.d, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<z@y.test>\r\n"
                                "DATA\r\nhi\r\n.\r\nQUIT\r\n");
    ck_assert_str_eq(e.cli.in.d, "220 up\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"
                                 "554 5.0.0 replaced\r\n221 bye\r\n");
    env_free(&e);
}
END_TEST

static int up_has_mail(struct env *e)
{
    return bytes_has(&e->up.in, "FROM:<a@b.test>\r\n");
}

START_TEST(corrupt_octet)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "command MAIL: corrupt at 1 set 0x58");
    add_fault(&e, "command RCPT: corrupt");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    send_str(&e.cli.tcp, "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n");
    run_until(&e, up_has_mail);
    while (e.up.in.n < 42)
        uv_run(&e.loop, UV_RUN_ONCE);
    ck_assert_uint_eq(e.up.in.n, 42);
    ck_assert_int_eq(memcmp(e.up.in.d, "MXIL FROM:<a@b.test>\r\n", 22), 0);
    ck_assert_int_eq((unsigned char)e.up.in.d[22], (unsigned char)('R' ^ 0xff));
    ck_assert_int_eq(memcmp(e.up.in.d + 23, "CPT TO:<x@y.test>\r\n", 19), 0);
    env_free(&e);
}
END_TEST

START_TEST(refuse_resets)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "connect: refuse");
    start(&e, 0, NULL);
    run_until(&e, cli_ended);
    ck_assert_int_eq(e.cli.err, UV_ECONNRESET);
    ck_assert_uint_eq(e.cli.got, 0);
    run_until(&e, proxy_idle);
    ck_assert(!e.up.open); /* the upstream was never connected */
    env_free(&e);
}
END_TEST

START_TEST(accept_then_close_fin)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "connect: accept-then-close");
    start(&e, 0, NULL);
    run_until(&e, cli_ended);
    ck_assert(e.cli.eof);
    ck_assert_int_eq(e.cli.err, 0);
    ck_assert_uint_eq(e.cli.got, 0);
    run_until(&e, proxy_idle);
    ck_assert(!e.up.open);
    env_free(&e);
}
END_TEST

START_TEST(banner_delay_greeting)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "connect: banner-delay 400ms");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    ck_assert_msg(e.cli.t_greet - e.cli.t_conn >= 390, "greeting after %llu ms",
                  (unsigned long long)(e.cli.t_greet - e.cli.t_conn));
    ck_assert(e.up.open);
    env_free(&e);
}
END_TEST

/* delay is per chunk and one-way: after the trigger, each server reply
 * arrives D after the server sent it, the client's bytes are not held. */
START_TEST(delay_per_chunk_s2c)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "greeting: delay 200ms");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    ck_assert_uint_ge(e.cli.t_greet - e.cli.t_conn, 190);
    uint64_t t0 = uv_now(&e.loop);
    send_str(&e.cli.tcp, "EHLO client.test\r\n");
    run_until(&e, cli_has_ok);
    ck_assert_uint_ge(uv_now(&e.loop) - t0, 190);
    ck_assert_str_eq(e.up.in.d, "EHLO client.test\r\n");
    env_free(&e);
}
END_TEST

START_TEST(trigger_byte_offset)
{
    struct env e;
    env_init(&e, UP_ECHO);
    add_fault(&e, "byte c2s 1000: close c2s");
    start(&e, 0, NULL);
    while (!e.connected)
        uv_run(&e.loop, UV_RUN_ONCE);
    uv_buf_t b = filler(&e, 300000);
    e.wreq.data = &e;
    ck_assert_int_eq(uv_write(&e.wreq, (uv_stream_t *)&e.cli.tcp, &b, 1, cli_wrote), 0);
    run_until(&e, up_eof);
    ck_assert(e.up.eof);
    ck_assert_uint_eq(e.up_verified, 1000);
    ck_assert_uint_eq(e.faults.nlog, 1);
    ck_assert_str_eq(e.faults.log[0].trigger, "byte c2s 1000");
    env_free(&e);
}
END_TEST

START_TEST(trigger_after_time)
{
    struct env e;
    env_init(&e, UP_SMTP);
    add_fault(&e, "after 300ms: reset");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    run_until(&e, cli_ended);
    ck_assert_int_eq(e.cli.err, UV_ECONNRESET);
    ck_assert_uint_ge(uv_now(&e.loop) - e.cli.t_conn, 290);
    ck_assert_str_eq(e.faults.log[0].trigger, "after 300ms");
    env_free(&e);
}
END_TEST

/* The same seed and traffic through the real proxy give the same
 * decisions; a probability of 0.5 over 40 events fires some, not all. */
static size_t decisions_run(uint64_t seed, unsigned threads, char *out, size_t outlen)
{
    struct env e;
    env_init(&e, UP_SMTP);
    e.threads = threads;
    fg_fault_set_free(&e.faults);
    fg_fault_set_init(&e.faults, seed);
    add_fault(&e, "command NOOP, p 0.5, each: reply 250 2.0.0 injected");
    start(&e, 0, NULL);
    run_until(&e, cli_greeted);
    char cmds[1024] = "";
    for (int i = 0; i < 40; i++)
        strcat(cmds, "NOOP\r\n");
    strcat(cmds, "QUIT\r\n");
    send_str(&e.cli.tcp, cmds);
    run_until(&e, cli_ended);
    ck_assert_uint_eq(fg_proxy_accepted(e.proxy), 1);
    ck_assert_uint_eq(fg_proxy_bytes(e.proxy, FG_C2S), strlen(cmds));
    /* Closed (workers joined) before the log is read. */
    fg_proxy_close(e.proxy, proxy_closed, &e);
    run_until(&e, is_proxy_closed);
    e.proxy = NULL;
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < e.faults.nlog; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%u %u %s -> %s\n", e.faults.log[i].conn,
                              e.faults.log[i].fault, e.faults.log[i].trigger,
                              e.faults.log[i].action);
    size_t fired = e.faults.nlog;
    ck_assert_uint_eq(fired, (size_t)(strstr(e.cli.in.d, "221 bye") ? 1 : 0) * 0 + fired);
    env_free(&e);
    return fired;
}

START_TEST(same_seed_same_decisions)
{
    static char a[8192], b[8192], c[8192];
    size_t na = decisions_run(4242, 1, a, sizeof a);
    size_t nb = decisions_run(4242, 1, b, sizeof b);
    size_t nc = decisions_run(4243, 1, c, sizeof c);
    ck_assert_uint_gt(na, 0);
    ck_assert_uint_lt(na, 40);
    ck_assert_uint_eq(na, nb);
    ck_assert_str_eq(a, b);
    ck_assert_msg(strcmp(a, c) != 0 || na != nc, "another seed, the same decisions");
}
END_TEST

/* Worker threads (proxy.h): the connection is carried by another loop,
 * and the decisions are those of the single-threaded proxy. */
START_TEST(threads_same_decisions)
{
    static char a[8192], b[8192];
    size_t na = decisions_run(4242, 1, a, sizeof a);
    size_t nb = decisions_run(4242, 2, b, sizeof b);
    ck_assert_uint_gt(na, 0);
    ck_assert_uint_eq(na, nb);
    ck_assert_str_eq(a, b);
}
END_TEST

/* fg_serve_run with busy polling: timers still fire while it spins, it
 * returns once nothing is left, and with nothing to do it sleeps (the
 * CPU it burns is a small part of the time it runs). */
struct ticks {
    uv_timer_t t;
    int left;
};

static void on_tick(uv_timer_t *t)
{
    struct ticks *k = t->data;
    if (--k->left == 0)
        uv_close((uv_handle_t *)t, NULL);
}

static uint64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

START_TEST(serve_run_busy_poll)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ticks k = {.left = 5};
    uv_timer_init(&loop, &k.t);
    k.t.data = &k;
    /* 5 ticks 40 ms apart, a 100 us polling window: mostly asleep. */
    uv_timer_start(&k.t, on_tick, 40, 40);
    uint64_t c0 = cpu_us(), w0 = uv_hrtime();
    ck_assert_int_eq(fg_serve_run(&loop, 100), 0);
    uint64_t cpu = cpu_us() - c0, wall = (uv_hrtime() - w0) / 1000;
    ck_assert_int_eq(k.left, 0);
    ck_assert_uint_ge(wall, 4 * 40 * 1000); /* the first tick counts from loop init */
    ck_assert_msg(cpu < wall / 2, "busy polling did not sleep: %llu us CPU in %llu us",
                  (unsigned long long)cpu, (unsigned long long)wall);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static Suite *proxy_suite(void)
{
    Suite *s = suite_create("proxy");
    TCase *tc = tcase_create("forwarding");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bulk_byte_exact_bounded);
    tcase_add_test(tc, upstream_refused);
    tcase_add_test(tc, bad_addresses);
    suite_add_tcase(s, tc);
    tc = tcase_create("actions");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stall_then_client_fin);
    tcase_add_test(tc, stall_blocks_writes_then_client_rst);
    tcase_add_test(tc, close_after_trigger);
    tcase_add_test(tc, close_one_direction);
    tcase_add_test(tc, reset_both);
    tcase_add_test(tc, reply_inject);
    tcase_add_test(tc, reply_replace_command);
    tcase_add_test(tc, reply_replace_reply);
    tcase_add_test(tc, delay_holds);
    tcase_add_test(tc, connect_reply_and_nth);
    tcase_add_test(tc, stall_eagain_blackhole_not);
    tcase_add_test(tc, half_close_c2s);
    tcase_add_test(tc, throttle_rate);
    tcase_add_test(tc, slice_segments);
    tcase_add_test(tc, limit_bytes);
    tcase_add_test(tc, drop_keeps_parser_in_step);
    tcase_add_test(tc, corrupt_octet);
    tcase_add_test(tc, refuse_resets);
    tcase_add_test(tc, accept_then_close_fin);
    tcase_add_test(tc, banner_delay_greeting);
    tcase_add_test(tc, delay_per_chunk_s2c);
    tcase_add_test(tc, trigger_byte_offset);
    tcase_add_test(tc, trigger_after_time);
    tcase_add_test(tc, same_seed_same_decisions);
    tcase_add_test(tc, threads_same_decisions);
    tcase_add_test(tc, serve_run_busy_poll);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proxy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
