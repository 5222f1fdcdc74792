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
#include <unistd.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/proxy.h"
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
    uint64_t t_354; /* uv_now when the upstream sent its 354 */
};

struct env {
    uv_loop_t loop;
    uv_timer_t deadline;
    uv_tcp_t up_listener;
    int up_port;
    enum up_mode mode;
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
    ck_assert_int_eq(status, 0);
    e->connected = 1;
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
                              .log = e->log};
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
