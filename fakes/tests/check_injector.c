/* check_injector.c - the injector against the fake MTA, a silent listener
 * and a closed port, all in one loop with a deadline timer per run.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/injector.h"
#include "faultgate/util.h"

#define DEADLINE_MS 20000

struct ctx {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct fg_mta *mta;
    struct fg_injector *inj;
    unsigned inj_conns; /* fg_injector_connections at the done callback */
    int done;
    int closed;
    int probe;
    uint64_t t_start, t_done;
    /* silent listener */
    uv_tcp_t silent;
    uv_tcp_t *accepted[8];
    unsigned naccepted;
};

static void on_deadline(uv_timer_t *t)
{
    ck_abort_msg("deadline passed");
}

static void on_inj_closed(void *ud)
{
    struct ctx *c = ud;
    c->closed = 1;
}

static void on_done(struct fg_injector *inj, void *ud)
{
    struct ctx *c = ud;
    ck_assert_ptr_eq(inj, c->inj);
    ck_assert_int_eq(c->done, 0);
    c->done = 1;
    c->t_done = fg_now_ms();
    c->probe = fg_injector_probe_status(inj);
    c->inj_conns = fg_injector_connections(inj);
    /* Closing from the done callback is allowed. */
    fg_injector_close(inj, on_inj_closed, c);
}

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof(*c));
    ck_assert_int_eq(uv_loop_init(&c->loop), 0);
    uv_timer_init(&c->loop, &c->deadline);
    uv_timer_start(&c->deadline, on_deadline, DEADLINE_MS, 0);
}

static void start_mta(struct ctx *c, uint64_t max_size)
{
    struct fg_mta_opts o = {.host = "127.0.0.1", .max_size = max_size};
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_mta_new(&c->loop, &o, &c->mta, err, sizeof(err)) == 0, "%s", err);
}

static void run_injector(struct ctx *c, struct fg_injector_opts *o)
{
    c->t_start = fg_now_ms();
    ck_assert_int_eq(fg_injector_start(&c->loop, o, on_done, c, &c->inj), 0);
    while (!c->closed)
        uv_run(&c->loop, UV_RUN_ONCE);
    ck_assert(c->done);
}

static int mta_closed;
static void on_mta_closed(void *ud)
{
    mta_closed = 1;
}

static void ctx_finish(struct ctx *c)
{
    if (c->mta) {
        mta_closed = 0;
        fg_mta_close(c->mta, on_mta_closed, NULL);
        while (!mta_closed)
            uv_run(&c->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&c->deadline, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&c->loop), 0);
}

static void sha256_hex(const char *d, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    ck_assert(EVP_Digest(d, len, md, &mdlen, EVP_sha256(), NULL));
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

START_TEST(body_shape)
{
    const char *to[] = {"b@two.test", "c@two.test"};
    struct fg_inject_msg m = {.from = "a@one.test", .to = to, .nto = 2, .size = 4096};
    snprintf(m.token, sizeof(m.token), "tok-shape");
    size_t len, len2;
    char *b = fg_injector_body(&m, &len);
    char *b2 = fg_injector_body(&m, &len2);
    /* Reproducible, so hashes can be recomputed. */
    ck_assert_uint_eq(len, len2);
    ck_assert(memcmp(b, b2, len) == 0);
    ck_assert_uint_ge(len, 4096);
    ck_assert_uint_le(len, 4096 + 80);
    char tok[FG_TOKEN_MAX];
    ck_assert_uint_gt(fg_smtp_token_find(b, len, tok, sizeof(tok)), 0);
    ck_assert_str_eq(tok, "tok-shape");
    ck_assert_ptr_nonnull(strstr(b, "Message-ID: <tok-shape@"));
    ck_assert_ptr_nonnull(strstr(b, "\r\n\r\n"));
    ck_assert_ptr_nonnull(strstr(b, "\r\n.\r\n"));   /* a lone dot line */
    ck_assert_ptr_nonnull(strstr(b, "\r\n.dotted")); /* a line starting with '.' */
    unsigned dotted = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)b[i];
        if (ch == '\r') {
            ck_assert(i + 1 < len && b[i + 1] == '\n');
            i++;
            if (i + 1 < len && b[i + 1] == '.')
                dotted++;
            continue;
        }
        ck_assert_msg(ch >= 0x20 && ch < 0x7f, "octet %zu is 0x%02x", i, ch);
    }
    ck_assert_uint_ge(dotted, 3);
    ck_assert(b[len - 2] == '\r' && b[len - 1] == '\n');
    free(b);
    free(b2);
}
END_TEST

START_TEST(delivers_to_fake_mta)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    const char *to1[] = {"b@two.test"};
    const char *to3[] = {"b@two.test", "c@two.test", "d@two.test"};
    const uint64_t sizes[] = {10, 700, 5000, 70000, 300000};
    enum { N = 5 };
    struct fg_inject_msg msgs[N];
    memset(msgs, 0, sizeof(msgs));
    for (unsigned i = 0; i < N; i++) {
        snprintf(msgs[i].token, sizeof(msgs[i].token), "tok-%u-%u", i, (unsigned)getpid());
        msgs[i].from = "a@one.test";
        msgs[i].to = i % 2 ? to3 : to1;
        msgs[i].nto = i % 2 ? 3 : 1;
        msgs[i].size = sizes[i];
    }
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = fg_mta_port(c.mta),
                                 .msgs = msgs,
                                 .nmsgs = N,
                                 .timeout_ms = 5000};
    run_injector(&c, &o);

    size_t n;
    const struct fg_ledger_entry *e = fg_mta_ledger(c.mta, &n);
    ck_assert_uint_eq(n, N);
    for (unsigned i = 0; i < N; i++) {
        ck_assert_msg(msgs[i].status == 0, "message %u: %s", i, fg_strerror(msgs[i].status));
        ck_assert_int_eq(msgs[i].reply_code, 250);
        ck_assert_uint_gt(msgs[i].accepted_us, 0);
        ck_assert_uint_eq(fg_mta_count_token(c.mta, msgs[i].token), 1);
        ck_assert_str_eq(e[i].token, msgs[i].token);
        ck_assert_uint_eq(e[i].conn, 1); /* all on one connection */
        ck_assert_uint_eq(e[i].nrcpt, msgs[i].nto);
        size_t len;
        char *b = fg_injector_body(&msgs[i], &len);
        char hex[65];
        sha256_hex(b, len, hex);
        ck_assert_uint_eq(e[i].size, len);
        ck_assert_str_eq(e[i].sha256, hex);
        free(b);
    }
    ctx_finish(&c);
}
END_TEST

START_TEST(rejected_message_then_next)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 2000); /* the second message is over SIZE */
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg msgs[3];
    memset(msgs, 0, sizeof(msgs));
    const uint64_t sizes[] = {500, 9000, 600};
    for (unsigned i = 0; i < 3; i++) {
        snprintf(msgs[i].token, sizeof(msgs[i].token), "rej-%u", i);
        msgs[i].from = "a@one.test";
        msgs[i].to = to;
        msgs[i].nto = 1;
        msgs[i].size = sizes[i];
    }
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = fg_mta_port(c.mta),
                                 .msgs = msgs,
                                 .nmsgs = 3,
                                 .timeout_ms = 5000};
    run_injector(&c, &o);
    ck_assert_int_eq(msgs[0].status, 0);
    ck_assert_int_eq(msgs[1].status, FG_EPROTO);
    ck_assert_int_eq(msgs[1].reply_code, 552);
    ck_assert_int_eq(msgs[2].status, 0);
    ck_assert_uint_eq(fg_mta_count_token(c.mta, "rej-1"), 0);
    ck_assert_uint_eq(fg_mta_count_token(c.mta, "rej-2"), 1);
    ctx_finish(&c);
}
END_TEST

static void on_silent_conn(uv_stream_t *s, int status)
{
    struct ctx *c = s->data;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_lt(c->naccepted, 8);
    uv_tcp_t *t = fg_malloc(sizeof(*t));
    uv_tcp_init(&c->loop, t);
    ck_assert_int_eq(uv_accept(s, (uv_stream_t *)t), 0);
    c->accepted[c->naccepted++] = t; /* never says anything */
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

START_TEST(no_greeting_times_out)
{
    struct ctx c;
    ctx_init(&c);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&c.loop, &c.silent);
    c.silent.data = &c;
    ck_assert_int_eq(uv_tcp_bind(&c.silent, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&c.silent, 8, on_silent_conn), 0);
    struct sockaddr_in name;
    int nl = sizeof(name);
    ck_assert_int_eq(uv_tcp_getsockname(&c.silent, (struct sockaddr *)&name, &nl), 0);

    const char *to[] = {"b@two.test"};
    struct fg_inject_msg msgs[2];
    memset(msgs, 0, sizeof(msgs));
    for (unsigned i = 0; i < 2; i++) {
        snprintf(msgs[i].token, sizeof(msgs[i].token), "silent-%u", i);
        msgs[i].from = "a@one.test";
        msgs[i].to = to;
        msgs[i].nto = 1;
        msgs[i].size = 100;
    }
    const uint64_t timeout = 200;
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = ntohs(name.sin_port),
                                 .msgs = msgs,
                                 .nmsgs = 2,
                                 .timeout_ms = timeout};
    run_injector(&c, &o);
    /* Each message waited for a greeting on its own connection. */
    for (unsigned i = 0; i < 2; i++)
        ck_assert_int_eq(msgs[i].status, FG_ETIMEOUT);
    ck_assert_uint_eq(c.naccepted, 2);
    uint64_t took = c.t_done - c.t_start;
    ck_assert_uint_ge(took, 2 * timeout - 10);
    ck_assert_uint_lt(took, 2 * timeout + 2000);

    for (unsigned i = 0; i < c.naccepted; i++)
        uv_close((uv_handle_t *)c.accepted[i], free_handle);
    uv_close((uv_handle_t *)&c.silent, NULL);
    ctx_finish(&c);
}
END_TEST

START_TEST(probe_alive)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    struct fg_injector_opts o = {
        .host = "127.0.0.1", .port = fg_mta_port(c.mta), .timeout_ms = 5000};
    run_injector(&c, &o);
    ck_assert_int_eq(c.probe, 0);
    ctx_finish(&c);
}
END_TEST

static void on_probe_done(struct fg_injector *inj, void *ud)
{
    int *st = ud;
    *st = fg_injector_probe_status(inj);
}

START_TEST(probe_status_values)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    /* Against the fake MTA: alive. */
    int st = 1;
    struct fg_injector *inj;
    struct fg_injector_opts o = {
        .host = "127.0.0.1", .port = fg_mta_port(c.mta), .timeout_ms = 5000};
    ck_assert_int_eq(fg_injector_start(&c.loop, &o, on_probe_done, &st, &inj), 0);
    ck_assert_int_eq(fg_injector_probe_status(inj), FG_ENOTAVAIL);
    while (st == 1)
        uv_run(&c.loop, UV_RUN_ONCE);
    ck_assert_int_eq(st, 0);
    c.closed = 0;
    fg_injector_close(inj, on_inj_closed, &c);
    while (!c.closed)
        uv_run(&c.loop, UV_RUN_ONCE);

    /* A port nobody listens on (bound, read back, closed): refused. */
    uv_tcp_t t;
    struct sockaddr_in a, name;
    int nl = sizeof(name);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&c.loop, &t);
    ck_assert_int_eq(uv_tcp_bind(&t, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_tcp_getsockname(&t, (struct sockaddr *)&name, &nl), 0);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&c.loop, UV_RUN_NOWAIT);
    st = 1;
    o.port = ntohs(name.sin_port);
    ck_assert_int_eq(fg_injector_start(&c.loop, &o, on_probe_done, &st, &inj), 0);
    while (st == 1)
        uv_run(&c.loop, UV_RUN_ONCE);
    ck_assert_int_lt(st, 0);
    ck_assert_int_ne(st, FG_ENOTAVAIL);
    c.closed = 0;
    fg_injector_close(inj, on_inj_closed, &c);
    while (!c.closed)
        uv_run(&c.loop, UV_RUN_ONCE);
    ctx_finish(&c);
}
END_TEST

START_TEST(close_while_running)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg m = {.from = "a@one.test", .to = to, .nto = 1, .size = 100};
    snprintf(m.token, sizeof(m.token), "early");
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = fg_mta_port(c.mta),
                                 .msgs = &m,
                                 .nmsgs = 1,
                                 .timeout_ms = 5000};
    ck_assert_int_eq(fg_injector_start(&c.loop, &o, on_done, &c, &c.inj), 0);
    fg_injector_close(c.inj, on_inj_closed, &c);
    while (!c.closed)
        uv_run(&c.loop, UV_RUN_ONCE);
    ck_assert_int_eq(c.done, 0); /* no done callback after close */
    ck_assert_int_lt(m.status, 0);
    ctx_finish(&c);
}
END_TEST

START_TEST(reports_to_capture)
{
    char dir[] = "/tmp/fg-inj-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *pcap = fg_asprintf("%s/leg.pcap", dir);
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    struct fg_capture *cap = NULL;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(
        fg_capture_open(&c.loop, FG_CAPTURE_SYNTH, pcap, NULL, 0, &cap, err, sizeof(err)) == 0,
        "%s", err);
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg m = {.from = "a@one.test", .to = to, .nto = 1, .size = 20000};
    snprintf(m.token, sizeof(m.token), "captured");
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = fg_mta_port(c.mta),
                                 .msgs = &m,
                                 .nmsgs = 1,
                                 .timeout_ms = 5000,
                                 .capture = cap};
    run_injector(&c, &o);
    ck_assert_int_eq(m.status, 0);
    /* Handshake, commands and replies, a 20 kB body in segments, FINs. */
    ck_assert_uint_ge(fg_capture_frames(cap), 20);
    ck_assert_int_eq(fg_capture_close(cap), 0);
    ctx_finish(&c);
    unlink(pcap);
    rmdir(dir);
    free(pcap);
}
END_TEST

/* --- per-message options (flags, concurrency) against the fake MTA ------ */

static void start_mta_script(struct ctx *c, const struct fg_mta_script *sc)
{
    struct fg_mta_opts o = {.host = "127.0.0.1", .script = sc};
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_mta_new(&c->loop, &o, &c->mta, err, sizeof(err)) == 0, "%s", err);
}

static void fill_msgs(struct fg_inject_msg *msgs, unsigned n, const char *tag,
                      const char *const *to, size_t nto, uint64_t size, unsigned flags,
                      unsigned conc)
{
    memset(msgs, 0, n * sizeof(*msgs));
    for (unsigned i = 0; i < n; i++) {
        snprintf(msgs[i].token, sizeof(msgs[i].token), "%s-%u-%u", tag, i, (unsigned)getpid());
        msgs[i].from = "a@one.test";
        msgs[i].to = to;
        msgs[i].nto = nto;
        msgs[i].size = size;
        msgs[i].flags = flags;
        msgs[i].concurrency = conc;
    }
}

static void run_msgs(struct ctx *c, struct fg_inject_msg *msgs, unsigned n)
{
    struct fg_injector_opts o = {.host = "127.0.0.1",
                                 .port = fg_mta_port(c->mta),
                                 .msgs = msgs,
                                 .nmsgs = n,
                                 .timeout_ms = 5000};
    run_injector(c, &o);
}

static const struct fg_ledger_entry *ledger_of(struct ctx *c, const char *token)
{
    size_t n;
    const struct fg_ledger_entry *e = fg_mta_ledger(c->mta, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].token, token) == 0)
            return &e[i];
    ck_abort_msg("%s not in the ledger", token);
    return NULL;
}

/* What arrived is what was meant: size and SHA-256 of the body, the
 * recipients, and no violation on the way. */
static void check_arrived(struct ctx *c, const struct fg_inject_msg *m, int bdat)
{
    ck_assert_msg(m->status == 0, "%s: %s (reply %d)", m->token, fg_strerror(m->status),
                  m->reply_code);
    ck_assert_uint_eq(fg_mta_count_token(c->mta, m->token), 1);
    const struct fg_ledger_entry *e = ledger_of(c, m->token);
    size_t len;
    char *b = fg_injector_body(m, &len);
    char hex[65];
    sha256_hex(b, len, hex);
    free(b);
    ck_assert_uint_eq(e->size, len);
    ck_assert_str_eq(e->sha256, hex);
    ck_assert_uint_eq(e->nrcpt, m->nto);
    ck_assert_int_eq(e->bdat, bdat);
    ck_assert_msg(e->nviol == 0, "%s: violations 0x%x", m->token, e->viol_mask);
}

static void no_violations(struct ctx *c)
{
    size_t nv;
    const struct fg_mta_violation *v = fg_mta_violations(c->mta, &nv);
    ck_assert_msg(nv == 0, "violation %s: %s", nv ? fg_mta_viol_name(v[0].kind) : "",
                  nv ? v[0].detail : "");
}

START_TEST(concurrency_spreads_connections)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    const char *to[] = {"b@two.test"};
    enum { N = 24 };
    struct fg_inject_msg msgs[N];
    fill_msgs(msgs, N, "conc", to, 1, 3000, 0, 4);
    run_msgs(&c, msgs, N);
    /* Four at once, each connection taking messages until none is left. */
    ck_assert_uint_eq(c.inj_conns, 4);
    unsigned per_conn[8] = {0};
    for (unsigned i = 0; i < N; i++) {
        check_arrived(&c, &msgs[i], 0);
        unsigned conn = ledger_of(&c, msgs[i].token)->conn;
        ck_assert_uint_ge(conn, 1);
        ck_assert_uint_le(conn, 4);
        per_conn[conn]++;
    }
    for (unsigned k = 1; k <= 4; k++)
        ck_assert_uint_ge(per_conn[k], 1);
    no_violations(&c);
    ctx_finish(&c);
}
END_TEST

/* A second batch with concurrency 1 after one with 3: the scenario's
 * order is kept, and the connections shrink to one. */
START_TEST(concurrency_per_message)
{
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg msgs[9];
    fill_msgs(msgs, 6, "wide", to, 1, 500, 0, 3);
    fill_msgs(msgs + 6, 3, "narrow", to, 1, 500, 0, 1);
    run_msgs(&c, msgs, 9);
    for (unsigned i = 0; i < 9; i++)
        check_arrived(&c, &msgs[i], 0);
    ck_assert_uint_eq(c.inj_conns, 3);
    no_violations(&c);
    ctx_finish(&c);
}
END_TEST

START_TEST(pipelining_when_offered)
{
    const char *to[] = {"b@two.test", "c@two.test", "d@two.test"};
    for (int hide = 0; hide < 2; hide++) {
        struct ctx c;
        ctx_init(&c);
        struct fg_mta_script sc;
        fg_mta_script_init(&sc);
        if (hide)
            sc.caps &= ~FG_MTA_CAP(PIPELINING);
        start_mta_script(&c, &sc);
        fg_mta_script_clear(&sc);
        struct fg_inject_msg msgs[4];
        fill_msgs(msgs, 4, hide ? "lockstep" : "piped", to, 3, 2500, FG_INJ_PIPELINING, 1);
        run_msgs(&c, msgs, 4);
        for (unsigned i = 0; i < 4; i++) {
            check_arrived(&c, &msgs[i], 0);
            ck_assert_uint_eq(msgs[i].used & FG_INJ_PIPELINING, hide ? 0 : FG_INJ_PIPELINING);
        }
        /* Without PIPELINING offered, a pipelined group would be a
         * violation: none is recorded. */
        no_violations(&c);
        ctx_finish(&c);
    }
}
END_TEST

START_TEST(bdat_chunks)
{
    const char *to[] = {"b@two.test"};
    /* 150 kB: three chunks; lock-step and pipelined; and CHUNKING hidden */
    for (int mode = 0; mode < 3; mode++) {
        struct ctx c;
        ctx_init(&c);
        struct fg_mta_script sc;
        fg_mta_script_init(&sc);
        if (mode == 2)
            sc.caps &= ~FG_MTA_CAP(CHUNKING);
        start_mta_script(&c, &sc);
        fg_mta_script_clear(&sc);
        struct fg_inject_msg msgs[3];
        unsigned flags = FG_INJ_BDAT | (mode == 1 ? FG_INJ_PIPELINING : 0);
        fill_msgs(msgs, 3, "bdat", to, 1, 150000, flags, 1);
        msgs[1].size = 40; /* one small chunk */
        run_msgs(&c, msgs, 3);
        for (unsigned i = 0; i < 3; i++) {
            check_arrived(&c, &msgs[i], mode != 2);
            ck_assert_uint_eq(msgs[i].used & FG_INJ_BDAT, mode != 2 ? FG_INJ_BDAT : 0);
        }
        no_violations(&c);
        ctx_finish(&c);
    }
}
END_TEST

START_TEST(eightbit_body)
{
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg m;
    fill_msgs(&m, 1, "8bit", to, 1, 3000, FG_INJ_8BIT, 1);
    size_t len;
    char *b = fg_injector_body(&m, &len);
    size_t high = 0;
    for (size_t i = 0; i < len; i++)
        high += (unsigned char)b[i] >= 0x80;
    ck_assert_uint_gt(high, 20);
    ck_assert_ptr_nonnull(strstr(b, "charset=utf-8"));
    free(b);

    for (int hide = 0; hide < 2; hide++) {
        struct ctx c;
        ctx_init(&c);
        struct fg_mta_script sc;
        fg_mta_script_init(&sc);
        if (hide)
            sc.caps &= ~FG_MTA_CAP(8BITMIME);
        start_mta_script(&c, &sc);
        fg_mta_script_clear(&sc);
        struct fg_inject_msg msgs[2];
        fill_msgs(msgs, 2, hide ? "8bit-no" : "8bit", to, 1, 3000, FG_INJ_8BIT, 1);
        msgs[1].flags = FG_INJ_8BIT | FG_INJ_BDAT | FG_INJ_PIPELINING;
        run_msgs(&c, msgs, 2);
        if (!hide) {
            check_arrived(&c, &msgs[0], 0);
            check_arrived(&c, &msgs[1], 1);
        } else {
            /* RFC 6152: not sent to a server without 8BITMIME */
            for (unsigned i = 0; i < 2; i++) {
                ck_assert_int_eq(msgs[i].status, FG_EPROTO);
                ck_assert_int_eq(msgs[i].reply_code, 0);
                ck_assert_uint_eq(fg_mta_count_token(c.mta, msgs[i].token), 0);
            }
        }
        no_violations(&c);
        ctx_finish(&c);
    }
}
END_TEST

START_TEST(dot_lines_on_and_off)
{
    const char *to[] = {"b@two.test"};
    struct fg_inject_msg m[2];
    fill_msgs(m, 2, "dots", to, 1, 8000, 0, 1);
    m[1].flags = FG_INJ_NO_DOTS;
    for (unsigned k = 0; k < 2; k++) {
        size_t len;
        char *b = fg_injector_body(&m[k], &len);
        unsigned dotted = 0;
        for (size_t i = 0; i + 1 < len; i++)
            if (b[i] == '\n' && b[i + 1] == '.')
                dotted++;
        if (k == 0)
            ck_assert_uint_ge(dotted, 10);
        else
            ck_assert_uint_eq(dotted, 0);
        free(b);
    }
    struct ctx c;
    ctx_init(&c);
    start_mta(&c, 0);
    run_msgs(&c, m, 2);
    check_arrived(&c, &m[0], 0);
    check_arrived(&c, &m[1], 0);
    no_violations(&c);
    ctx_finish(&c);
}
END_TEST

START_TEST(many_recipients)
{
    enum { R = 250 };
    char *addr[R];
    for (unsigned i = 0; i < R; i++)
        addr[i] = fg_asprintf("user+%u@two.test", i);
    for (int piped = 0; piped < 2; piped++) {
        struct ctx c;
        ctx_init(&c);
        start_mta(&c, 0);
        struct fg_inject_msg msgs[2];
        fill_msgs(msgs, 2, "many", (const char *const *)addr, R, 2000,
                  piped ? FG_INJ_PIPELINING : 0, 1);
        run_msgs(&c, msgs, 2);
        for (unsigned i = 0; i < 2; i++) {
            check_arrived(&c, &msgs[i], 0);
            const struct fg_ledger_entry *e = ledger_of(&c, msgs[i].token);
            ck_assert_str_eq(e->rcpt[0], addr[0]);
            ck_assert_str_eq(e->rcpt[R - 1], addr[R - 1]);
        }
        no_violations(&c);
        ctx_finish(&c);
    }
    for (unsigned i = 0; i < R; i++)
        free(addr[i]);
}
END_TEST

/* Refused recipients, pipelined: one refused leaves the others; all
 * refused fails the message with the RCPT's code, and the next message
 * on the connection goes through. */
START_TEST(pipelined_refusals)
{
    struct ctx c;
    ctx_init(&c);
    struct fg_mta_script sc;
    fg_mta_script_init(&sc);
    sc.rules = fg_calloc(2, sizeof(*sc.rules));
    sc.nrules = 1;
    sc.rules[0].stage = FG_MTA_ST_RCPT;
    sc.rules[0].nth = 2;
    sc.rules[0].p = 1.0;
    sc.rules[0].code = 452;
    sc.rules[0].text = fg_strdup("4.5.3 Too many recipients");
    start_mta_script(&c, &sc);
    fg_mta_script_clear(&sc);
    const char *to3[] = {"b@two.test", "c@two.test", "d@two.test"};
    const char *to1[] = {"b@two.test"};
    struct fg_inject_msg msgs[3];
    fill_msgs(msgs, 3, "refuse", to3, 3, 1000, FG_INJ_PIPELINING, 1);
    msgs[1].to = to1; /* RCPT #2 on the connection: the only one, refused */
    msgs[1].nto = 1;
    msgs[2].to = to1;
    msgs[2].nto = 1;
    run_msgs(&c, msgs, 3);
    ck_assert_int_eq(msgs[0].status, 0);
    ck_assert_uint_eq(ledger_of(&c, msgs[0].token)->nrcpt, 2);
    /* RCPT #2 of the connection is the first message's second */
    ck_assert_uint_eq(fg_mta_count_token(c.mta, msgs[1].token), 1);
    ck_assert_int_eq(msgs[2].status, 0);
    no_violations(&c);
    ctx_finish(&c);

    /* every RCPT refused */
    ctx_init(&c);
    fg_mta_script_init(&sc);
    sc.rules = fg_calloc(1, sizeof(*sc.rules));
    sc.nrules = 1;
    sc.rules[0].stage = FG_MTA_ST_RCPT;
    sc.rules[0].p = 1.0;
    sc.rules[0].conn = 1;
    sc.rules[0].code = 550;
    sc.rules[0].text = fg_strdup("5.1.1 No such user");
    start_mta_script(&c, &sc);
    fg_mta_script_clear(&sc);
    fill_msgs(msgs, 3, "allrefused", to3, 3, 1000, FG_INJ_PIPELINING, 1);
    msgs[1].flags |= FG_INJ_BDAT;
    run_msgs(&c, msgs, 3);
    for (unsigned i = 0; i < 3; i++) {
        ck_assert_int_eq(msgs[i].status, FG_EPROTO);
        ck_assert_int_eq(msgs[i].reply_code, 550);
        ck_assert_uint_eq(fg_mta_count_token(c.mta, msgs[i].token), 0);
    }
    no_violations(&c);
    ctx_finish(&c);
}
END_TEST

static Suite *injector_suite(void)
{
    Suite *s = suite_create("injector");
    TCase *tc = tcase_create("injector");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, body_shape);
    tcase_add_test(tc, delivers_to_fake_mta);
    tcase_add_test(tc, rejected_message_then_next);
    tcase_add_test(tc, no_greeting_times_out);
    tcase_add_test(tc, probe_alive);
    tcase_add_test(tc, probe_status_values);
    tcase_add_test(tc, close_while_running);
    tcase_add_test(tc, reports_to_capture);
    tcase_add_test(tc, concurrency_spreads_connections);
    tcase_add_test(tc, concurrency_per_message);
    tcase_add_test(tc, pipelining_when_offered);
    tcase_add_test(tc, bdat_chunks);
    tcase_add_test(tc, eightbit_body);
    tcase_add_test(tc, dot_lines_on_and_off);
    tcase_add_test(tc, many_recipients);
    tcase_add_test(tc, pipelined_refusals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(injector_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
