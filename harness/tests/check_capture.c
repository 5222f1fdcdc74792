/* check_capture.c - synthesized and live captures, read back.
 *
 * A synthesized SMTP exchange (data both ways, FIN both ways; a second
 * connection ending in RST; an IPv6 one) is written, read back with
 * libpcap and with fg_trace_read, and, when tshark is installed, decoded
 * by tshark without malformed packets or sequence warnings.  When this
 * process may capture, a loopback exchange made by the test is captured
 * live and read back.
 */
#include <arpa/inet.h>
#include <check.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"

static char tmpdir[64];
static char pcap_path[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fgcapture-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(pcap_path, sizeof(pcap_path), "%s/t.pcap", tmpdir);
}

static void teardown(void)
{
    unlink(pcap_path);
    rmdir(tmpdir);
}

/* ---- collecting what the trace reader delivers ------------------------ */

struct stream {
    unsigned id;
    char client[64], server[64];
    char *buf[2];
    size_t len[2];
    int fin[2], rst[2], closed, saw_syn;
    uint64_t gap[2];
};

struct collect {
    struct stream s[8];
    size_t n;
};

static void c_open(void *ud, struct fg_trace_conn *c)
{
    struct collect *co = ud;
    ck_assert_uint_lt(co->n, 8);
    struct stream *s = &co->s[co->n++];
    memset(s, 0, sizeof(*s));
    s->id = c->id;
    s->saw_syn = c->saw_syn;
    snprintf(s->client, sizeof(s->client), "%s", c->client_str);
    snprintf(s->server, sizeof(s->server), "%s", c->server_str);
    c->user = s;
}

static void c_data(void *ud, struct fg_trace_conn *c, enum fg_dir dir, const uint8_t *buf,
                   size_t len, uint64_t frame, uint64_t us)
{
    struct stream *s = c->user;
    s->buf[dir] = fg_realloc(s->buf[dir], s->len[dir] + len + 1);
    memcpy(s->buf[dir] + s->len[dir], buf, len);
    s->len[dir] += len;
    s->buf[dir][s->len[dir]] = '\0';
}

static void c_fin(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->fin[dir]++;
}

static void c_rst(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->rst[dir]++;
}

static void c_gap(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t missing,
                  uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->gap[dir] += missing;
}

static void c_close(void *ud, struct fg_trace_conn *c)
{
    ((struct stream *)c->user)->closed++;
}

static const struct fg_trace_cbs collect_cbs = {c_open, c_data, c_fin, c_rst, c_gap, c_close};

static void collect_free(struct collect *co)
{
    for (size_t i = 0; i < co->n; i++)
        for (int d = 0; d < 2; d++)
            free(co->s[i].buf[d]);
}

/* ---- synth ------------------------------------------------------------ */

static struct sockaddr_in sin4(const char *ip, int port)
{
    struct sockaddr_in s;
    ck_assert_int_eq(uv_ip4_addr(ip, port, &s), 0);
    return s;
}

static struct sockaddr_in6 sin6(const char *ip, int port)
{
    struct sockaddr_in6 s;
    ck_assert_int_eq(uv_ip6_addr(ip, port, &s), 0);
    return s;
}

static const char *cmds[] = {"EHLO client.test", "MAIL FROM:<a@one.test>", "RCPT TO:<b@two.test>",
                             "DATA", "QUIT"};

/* The made-up exchange; returns the C2S and S2C texts written. */
static void write_exchange(struct fg_capture *cap, char **c2s_out, char **s2c_out, size_t *c2s_len,
                           size_t *big_len)
{
    struct sockaddr_in cl = sin4("127.0.0.1", 40001), sv = sin4("127.0.0.1", 2525);
    struct fg_synth_conn *sc =
        fg_capture_conn_open(cap, (struct sockaddr *)&cl, (struct sockaddr *)&sv);
    ck_assert_ptr_nonnull(sc);

    /* A body larger than one window, so segmentation and ACK pacing show. */
    size_t blen = 100000;
    char *body = fg_malloc(blen + 8);
    static const char line50[] = "Lorem ipsum dolor sit amet, consectetur adipisci\r\n";
    ck_assert_uint_eq(strlen(line50), 50);
    for (size_t i = 0; i < blen; i += 50)
        memcpy(body + i, line50, 50);
    memcpy(body + blen, ".\r\n", 4);
    blen += 3;
    *big_len = blen;

    const char *replies[] = {"220 mx.test ESMTP\r\n",
                             "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                             "250 ok\r\n",
                             "250 ok\r\n",
                             "354 go\r\n",
                             "250 queued\r\n",
                             "221 bye\r\n"};
    char *c2s = fg_calloc(1, 300 + blen), *s2c = fg_calloc(1, 300);
    size_t cl_len = 0;
    fg_capture_conn_data(sc, FG_S2C, replies[0], strlen(replies[0]));
    strcat(s2c, replies[0]);
    for (int i = 0; i < 5; i++) {
        char line[80];
        int n = snprintf(line, sizeof(line), "%s\r\n", cmds[i]);
        fg_capture_conn_data(sc, FG_C2S, line, (size_t)n);
        memcpy(c2s + cl_len, line, (size_t)n);
        cl_len += (size_t)n;
        fg_capture_conn_data(sc, FG_S2C, replies[i + 1], strlen(replies[i + 1]));
        strcat(s2c, replies[i + 1]);
        if (i == 3) {
            fg_capture_conn_data(sc, FG_C2S, body, blen);
            memcpy(c2s + cl_len, body, blen);
            cl_len += blen;
            fg_capture_conn_data(sc, FG_S2C, replies[5], strlen(replies[5]));
            strcat(s2c, replies[5]);
            i++; /* the QUIT reply comes with QUIT below */
            n = snprintf(line, sizeof(line), "%s\r\n", cmds[4]);
            fg_capture_conn_data(sc, FG_C2S, line, (size_t)n);
            memcpy(c2s + cl_len, line, (size_t)n);
            cl_len += (size_t)n;
            fg_capture_conn_data(sc, FG_S2C, replies[6], strlen(replies[6]));
            strcat(s2c, replies[6]);
        }
    }
    fg_capture_conn_fin(sc, FG_S2C);
    fg_capture_conn_fin(sc, FG_C2S);
    fg_capture_conn_data(sc, FG_C2S, "late", 4); /* after its FIN: ignored */
    fg_capture_conn_free(sc);
    free(body);

    /* Second connection: reset by the server after the greeting. */
    struct sockaddr_in cl2 = sin4("127.0.0.1", 40002);
    sc = fg_capture_conn_open(cap, (struct sockaddr *)&cl2, (struct sockaddr *)&sv);
    ck_assert_ptr_nonnull(sc);
    fg_capture_conn_data(sc, FG_S2C, "220 hi\r\n", 8);
    fg_capture_conn_data(sc, FG_C2S, "EHLO x\r\n", 8);
    fg_capture_conn_rst(sc, FG_S2C);
    fg_capture_conn_data(sc, FG_S2C, "250 no\r\n", 8); /* after RST: ignored */
    fg_capture_conn_free(sc);

    /* Third: IPv6, the client closes first. */
    struct sockaddr_in6 cl6 = sin6("::1", 40003), sv6 = sin6("::1", 2525);
    sc = fg_capture_conn_open(cap, (struct sockaddr *)&cl6, (struct sockaddr *)&sv6);
    ck_assert_ptr_nonnull(sc);
    fg_capture_conn_data(sc, FG_S2C, "220 six\r\n", 9);
    fg_capture_conn_data(sc, FG_C2S, "QUIT\r\n", 6);
    fg_capture_conn_fin(sc, FG_C2S);
    fg_capture_conn_data(sc, FG_S2C, "221 bye\r\n", 9);
    fg_capture_conn_fin(sc, FG_S2C);
    fg_capture_conn_free(sc);

    *c2s_out = c2s;
    *s2c_out = s2c;
    *c2s_len = cl_len;
}

static int have_tshark(void)
{
    return system("command -v tshark >/dev/null 2>&1") == 0;
}

/* Runs cmd and returns its standard output (owned). */
static char *run_output(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char *out = fg_calloc(1, 1);
    size_t len = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        out = fg_realloc(out, len + n + 1);
        memcpy(out + len, buf, n);
        len += n;
        out[len] = '\0';
    }
    ck_assert_int_eq(pclose(f), 0);
    return out;
}

START_TEST(synth_roundtrip)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_capture *cap = NULL;
    int rc = fg_capture_open(NULL, FG_CAPTURE_SYNTH, pcap_path, NULL, 0, &cap, err, sizeof(err));
    ck_assert_msg(rc == 0, "open: %s", err);
    ck_assert_int_eq(fg_capture_mode(cap), FG_CAPTURE_SYNTH);
    ck_assert_str_eq(fg_capture_mode_name(fg_capture_mode(cap)), "synth");

    char *c2s, *s2c;
    size_t c2s_len, big;
    write_exchange(cap, &c2s, &s2c, &c2s_len, &big);
    uint64_t frames = fg_capture_frames(cap);
    /* At least the handshakes and one segment per 1448 body octets. */
    ck_assert_uint_gt(frames, 3 * 3 + big / 1448);
    ck_assert_int_eq(fg_capture_close(cap), 0);

    /* libpcap reads it back, frame for frame, each within the MTU. */
    char pe[PCAP_ERRBUF_SIZE];
    pcap_t *p = pcap_open_offline(pcap_path, pe);
    ck_assert_msg(p != NULL, "%s", pe);
    ck_assert_int_eq(pcap_datalink(p), DLT_EN10MB);
    struct pcap_pkthdr *h;
    const u_char *bytes;
    uint64_t n = 0, prev_us = 0;
    while (pcap_next_ex(p, &h, &bytes) == 1) {
        n++;
        ck_assert_uint_le(h->caplen, 14 + 40 + 20 + 1448);
        ck_assert_uint_eq(h->caplen, h->len);
        uint64_t us = (uint64_t)h->ts.tv_sec * 1000000 + (uint64_t)h->ts.tv_usec;
        ck_assert_uint_ge(us, prev_us);
        prev_us = us;
    }
    pcap_close(p);
    ck_assert_uint_eq(n, frames);

    /* The trace reader gets exactly the bytes written, per direction. */
    struct collect co = {.n = 0};
    struct fg_trace_stats st;
    rc = fg_trace_read(pcap_path, &collect_cbs, &co, &st, err, sizeof(err));
    ck_assert_msg(rc == 0, "read: %s", err);
    ck_assert_uint_eq(st.frames, frames);
    ck_assert_uint_eq(st.tcp_frames, frames);
    ck_assert_uint_eq(st.conns, 3);
    ck_assert_uint_eq(st.retrans, 0);
    ck_assert_uint_eq(st.gaps, 0);
    ck_assert_uint_eq(co.n, 3);

    struct stream *s = &co.s[0];
    ck_assert_uint_eq(s->id, 1);
    ck_assert(s->saw_syn);
    ck_assert_str_eq(s->client, "127.0.0.1:40001");
    ck_assert_str_eq(s->server, "127.0.0.1:2525");
    ck_assert_uint_eq(s->len[FG_C2S], c2s_len);
    ck_assert(memcmp(s->buf[FG_C2S], c2s, c2s_len) == 0);
    ck_assert_str_eq(s->buf[FG_S2C], s2c);
    ck_assert_int_eq(s->fin[FG_C2S], 1);
    ck_assert_int_eq(s->fin[FG_S2C], 1);
    ck_assert_int_eq(s->rst[0] + s->rst[1], 0);
    ck_assert_int_eq(s->closed, 1);

    s = &co.s[1];
    ck_assert_uint_eq(s->id, 2);
    ck_assert_str_eq(s->buf[FG_S2C], "220 hi\r\n");
    ck_assert_str_eq(s->buf[FG_C2S], "EHLO x\r\n");
    ck_assert_int_eq(s->rst[FG_S2C], 1);
    ck_assert_int_eq(s->rst[FG_C2S], 0);
    ck_assert_int_eq(s->fin[0] + s->fin[1], 0);
    ck_assert_int_eq(s->closed, 1);

    s = &co.s[2];
    ck_assert_str_eq(s->client, "[::1]:40003");
    ck_assert_str_eq(s->buf[FG_S2C], "220 six\r\n221 bye\r\n");
    ck_assert_str_eq(s->buf[FG_C2S], "QUIT\r\n");
    ck_assert_int_eq(s->fin[FG_C2S], 1);
    ck_assert_int_eq(s->fin[FG_S2C], 1);
    ck_assert_int_eq(s->closed, 1);
    collect_free(&co);

    if (have_tshark()) {
        char cmd[512];
        /* No malformed frame, no expert warning but the RST's own (lost
         * segments, ACKs of unseen data), checksums good with validation
         * on, no TCP analysis flag at all (retransmission, dup ACK, window
         * full). */
        snprintf(cmd, sizeof(cmd),
                 "tshark -n -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE "
                 "-d tcp.port==2525,smtp -r '%s' "
                 "-Y '_ws.malformed || tcp.analysis.flags || tcp.checksum.status != 1 "
                 "|| (ip && ip.checksum.status != 1) "
                 "|| (_ws.expert.severity >= 0x00600000 && tcp.flags.reset == 0)' 2>/dev/null",
                 pcap_path);
        char *out = run_output(cmd);
        ck_assert_msg(out[0] == '\0', "tshark flagged: %.300s", out);
        free(out);
        snprintf(
            cmd, sizeof(cmd),
            "tshark -n -d tcp.port==2525,smtp -r '%s' -Y 'smtp.req.command && tcp.port==40001' "
            "-T fields -e smtp.req.command 2>/dev/null",
            pcap_path);
        out = run_output(cmd);
        ck_assert_str_eq(out, "EHLO\nMAIL\nRCPT\nDATA\nQUIT\n");
        free(out);
        /* And the frame count agrees with tshark's. */
        snprintf(cmd, sizeof(cmd), "tshark -n -r '%s' 2>/dev/null | wc -l", pcap_path);
        out = run_output(cmd);
        ck_assert_uint_eq(strtoull(out, NULL, 10), frames);
        free(out);
    }
    free(c2s);
    free(s2c);
}
END_TEST

START_TEST(synth_misc)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_capture *cap = NULL;
    /* NULLs are harmless. */
    fg_capture_conn_data(NULL, FG_C2S, "x", 1);
    fg_capture_conn_fin(NULL, FG_C2S);
    fg_capture_conn_rst(NULL, FG_C2S);
    fg_capture_conn_free(NULL);
    ck_assert_int_eq(fg_capture_close(NULL), 0);
    ck_assert_ptr_null(fg_capture_conn_open(NULL, NULL, NULL));

    /* An unwritable path fails with a reason. */
    int rc = fg_capture_open(NULL, FG_CAPTURE_SYNTH, "/nonexistent-dir/x.pcap", NULL, 0, &cap, err,
                             sizeof(err));
    ck_assert_int_eq(rc, FG_ECAPTURE);
    ck_assert_ptr_null(cap);
    ck_assert_uint_gt(strlen(err), 0);

    /* AUTO without a loop cannot go live: synth, with the reason kept. */
    rc = fg_capture_open(NULL, FG_CAPTURE_AUTO, pcap_path, NULL, 0, &cap, err, sizeof(err));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(fg_capture_mode(cap), FG_CAPTURE_SYNTH);
    ck_assert_uint_gt(strlen(err), 0);
    ck_assert_int_eq(fg_capture_close(cap), 0);
    cap = NULL;
    rc = fg_capture_open(NULL, FG_CAPTURE_LIVE, pcap_path, NULL, 0, &cap, err, sizeof(err));
    ck_assert_int_eq(rc, FG_EINPUT);

    int ports[] = {70000};
    rc = fg_capture_open(NULL, FG_CAPTURE_SYNTH, pcap_path, ports, 1, &cap, err, sizeof(err));
    ck_assert_int_eq(rc, FG_EINPUT);

    rc = fg_capture_open(NULL, FG_CAPTURE_SYNTH, pcap_path, NULL, 0, &cap, err, sizeof(err));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(fg_capture_add_port(cap, 25), 0);
    ck_assert_int_eq(fg_capture_add_port(cap, 0), FG_EINPUT);
    /* Mixed families are refused. */
    struct sockaddr_in a = sin4("127.0.0.1", 1000);
    struct sockaddr_in6 b = sin6("::1", 25);
    ck_assert_ptr_null(fg_capture_conn_open(cap, (struct sockaddr *)&a, (struct sockaddr *)&b));
    ck_assert_uint_eq(fg_capture_frames(cap), 0);

    /* A connection left open outlives the capture safely. */
    struct sockaddr_in s = sin4("127.0.0.1", 25);
    struct fg_synth_conn *sc =
        fg_capture_conn_open(cap, (struct sockaddr *)&a, (struct sockaddr *)&s);
    ck_assert_ptr_nonnull(sc);
    fg_capture_conn_data(sc, FG_C2S, "HELO x\r\n", 8);
    ck_assert_int_eq(fg_capture_flush(cap), 0);
    uint64_t frames = fg_capture_frames(cap);
    ck_assert_uint_eq(frames, 5); /* handshake, data, its ACK */

    /* Flushed: readable while the capture is open. */
    struct fg_trace_stats st;
    ck_assert_int_eq(fg_trace_read(pcap_path, NULL, NULL, &st, err, sizeof(err)), 0);
    ck_assert_uint_eq(st.frames, frames);
    ck_assert_uint_eq(st.bytes, 8);

    ck_assert_int_eq(fg_capture_close(cap), 0);
    fg_capture_conn_data(sc, FG_C2S, "more", 4);
    fg_capture_conn_free(sc);
}
END_TEST

/* ---- live ------------------------------------------------------------- */

struct live {
    uv_loop_t loop;
    uv_tcp_t server, accepted, client;
    uv_connect_t conn;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uv_timer_t deadline;
    char *payload;
    size_t payload_len, received;
    int eof, timed_out, nclosed;
    struct fg_capture *cap;
};

static void on_closed(uv_handle_t *h)
{
    struct live *l = h->loop->data;
    l->nclosed++;
}

static void finish(struct live *l)
{
    uv_close((uv_handle_t *)&l->server, on_closed);
    uv_close((uv_handle_t *)&l->accepted, on_closed);
    uv_close((uv_handle_t *)&l->client, on_closed);
    uv_close((uv_handle_t *)&l->deadline, on_closed);
}

static void deadline_cb(uv_timer_t *t)
{
    struct live *l = t->loop->data;
    l->timed_out = 1;
    uv_stop(t->loop);
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    static char b[65536];
    *buf = uv_buf_init(b, sizeof(b));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct live *l = s->loop->data;
    if (n > 0) {
        l->received += (size_t)n;
    } else if (n == UV_EOF) {
        l->eof = 1;
        finish(l);
    } else if (n < 0) {
        finish(l);
    }
}

static void accept_cb(uv_stream_t *srv, int status)
{
    struct live *l = srv->loop->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(uv_tcp_init(srv->loop, &l->accepted), 0);
    ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&l->accepted), 0);
    ck_assert_int_eq(uv_read_start((uv_stream_t *)&l->accepted, alloc_cb, read_cb), 0);
}

static void shutdown_cb(uv_shutdown_t *r, int status)
{
    ck_assert_int_eq(status, 0);
}

static void write_cb(uv_write_t *r, int status)
{
    struct live *l = r->handle->loop->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(uv_shutdown(&l->sreq, (uv_stream_t *)&l->client, shutdown_cb), 0);
}

static void connect_cb(uv_connect_t *r, int status)
{
    struct live *l = r->handle->loop->data;
    ck_assert_int_eq(status, 0);
    uv_buf_t b = uv_buf_init(l->payload, (unsigned)l->payload_len);
    ck_assert_int_eq(uv_write(&l->wreq, (uv_stream_t *)&l->client, &b, 1, write_cb), 0);
}

START_TEST(live_loopback)
{
    if (!fg_capture_can_live()) {
        fprintf(stderr, "check_capture: no live capture here, live test skipped\n");
        return;
    }
    struct live l;
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(uv_loop_init(&l.loop), 0);
    l.loop.data = &l;
    l.payload_len = 200000;
    l.payload = fg_malloc(l.payload_len);
    for (size_t i = 0; i < l.payload_len; i++)
        l.payload[i] = (char)('a' + i % 26);

    struct sockaddr_in any = sin4("127.0.0.1", 0), bound;
    ck_assert_int_eq(uv_tcp_init(&l.loop, &l.server), 0);
    ck_assert_int_eq(uv_tcp_bind(&l.server, (struct sockaddr *)&any, 0), 0);
    int blen = sizeof(bound);
    ck_assert_int_eq(uv_tcp_getsockname(&l.server, (struct sockaddr *)&bound, &blen), 0);
    int port = ntohs(bound.sin_port);

    /* Start with another port, add the real one later: the filter is
     * recompiled. */
    char err[FG_ERRBUF_SIZE];
    int other = port == 9 ? 10 : 9;
    int rc =
        fg_capture_open(&l.loop, FG_CAPTURE_AUTO, pcap_path, &other, 1, &l.cap, err, sizeof(err));
    ck_assert_msg(rc == 0, "open: %s", err);
    ck_assert_int_eq(fg_capture_mode(l.cap), FG_CAPTURE_LIVE);
    ck_assert_int_eq(fg_capture_add_port(l.cap, port), 0);
    struct sockaddr_in a = sin4("127.0.0.1", 1);
    ck_assert_ptr_null(fg_capture_conn_open(l.cap, (struct sockaddr *)&a, (struct sockaddr *)&a));

    ck_assert_int_eq(uv_listen((uv_stream_t *)&l.server, 8, accept_cb), 0);
    ck_assert_int_eq(uv_tcp_init(&l.loop, &l.client), 0);
    ck_assert_int_eq(uv_tcp_connect(&l.conn, &l.client, (struct sockaddr *)&bound, connect_cb), 0);
    ck_assert_int_eq(uv_timer_init(&l.loop, &l.deadline), 0);
    ck_assert_int_eq(uv_timer_start(&l.deadline, deadline_cb, 10000, 0), 0);
    uv_run(&l.loop, UV_RUN_DEFAULT);
    ck_assert_msg(!l.timed_out, "live exchange did not finish in time");
    ck_assert(l.eof);
    ck_assert_uint_eq(l.received, l.payload_len);

    uint64_t before = fg_capture_frames(l.cap);
    ck_assert_int_eq(fg_capture_close(l.cap), 0);
    uv_run(&l.loop, UV_RUN_DEFAULT); /* lets the poll handle's close callback run */
    ck_assert_int_eq(uv_loop_close(&l.loop), 0);

    struct collect co = {.n = 0};
    struct fg_trace_stats st;
    rc = fg_trace_read(pcap_path, &collect_cbs, &co, &st, err, sizeof(err));
    ck_assert_msg(rc == 0, "read: %s", err);
    ck_assert_uint_ge(st.frames, before);
    ck_assert_uint_eq(co.n, 1);
    struct stream *s = &co.s[0];
    ck_assert(s->saw_syn);
    ck_assert_uint_eq(s->len[FG_C2S], l.payload_len);
    ck_assert(memcmp(s->buf[FG_C2S], l.payload, l.payload_len) == 0);
    ck_assert_uint_eq(s->len[FG_S2C], 0);
    ck_assert_int_eq(s->fin[FG_C2S], 1);
    ck_assert_uint_eq(s->gap[0] + s->gap[1], 0);
    collect_free(&co);
    free(l.payload);
}
END_TEST

static Suite *capture_suite(void)
{
    Suite *s = suite_create("capture");
    TCase *tc = tcase_create("synth");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, synth_roundtrip);
    tcase_add_test(tc, synth_misc);
    suite_add_tcase(s, tc);
    tc = tcase_create("live");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, live_loopback);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(capture_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
