/* check_x400_proxy.c - the X.400 proxy's fault syntax (good lines and their
 * canonical text, bad lines and their columns), and each action on
 * loopback: the fake X.400 initiator (as the gateway) -> the proxy -> the
 * fake X.400 MTA, plus rewrite-serial against a scripted responder that
 * records what the proxy forwards, for every TPDU size.  No sleeps: the
 * loop runs until the callbacks say done; every test has a deadline timer.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fake_x400.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"
#include "faultgate/x400_proxy.h"

/* --- the parser ------------------------------------------------------------- */

START_TEST(test_parse_good)
{
    static const char *const cases[][2] = {
        {"spdu AC s2c, first: abort provider", "spdu AC s2c, first: abort provider"},
        {"SPDU mip c2s #2 , nth 2: ABORT user rts",
         "spdu MIP c2s #2, nth 2: abort user reason protocol-error rts"},
        {"spdu MIP serial 3: abort reason temporary-problem",
         "spdu MIP serial 3: abort provider reason temporary-problem rts"},
        {"spdu MIP #2: rewrite-serial +1", "spdu MIP #2: rewrite-serial +1"},
        {"activity-end: rewrite-serial -2", "activity-end: rewrite-serial -2"},
        {"activity-start #2, from 3, each: dr reason 85",
         "activity-start #2, from 3, each: dr reason 85"},
        {"tpkt s2c 1: reset, forward", "tpkt s2c 1: reset, forward"},
        {"tpkt 7, p 0.5: er", "tpkt 7, p 0.5: er cause 02"},
        {"connect: close", "connect: close"},
        {"spdu MIA s2c #1: stall", "spdu MIA s2c #1: stall"},
        {"spdu MIP: rewrite-serial 1000000", "spdu MIP: rewrite-serial 1000000"},
        {"spdu DN: dr", "spdu DN: dr reason 80"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fg_x400_fault f;
        char err[256] = "";
        int col = 0;
        ck_assert_msg(fg_x400_fault_parse(cases[i][0], &f, err, sizeof err, &col) == 0, "%s: %s",
                      cases[i][0], err);
        ck_assert_str_eq(f.spec, cases[i][1]);
        /* The canonical text parses to the same fault. */
        struct fg_x400_fault g;
        ck_assert_int_eq(fg_x400_fault_parse(f.spec, &g, err, sizeof err, &col), 0);
        ck_assert_str_eq(g.spec, f.spec);
        ck_assert_int_eq(g.trig, f.trig);
        ck_assert_int_eq(g.action, f.action);
        fg_x400_fault_clear(&g);
        fg_x400_fault_clear(&f);
    }
    struct fg_x400_fault f;
    char err[256];
    ck_assert_int_eq(
        fg_x400_fault_parse("spdu MIP c2s #2 serial 4, first: abort", &f, err, sizeof err, NULL),
        0);
    ck_assert_int_eq(f.trig, FG_X4F_SPDU);
    ck_assert_int_eq(f.spdu, FG_SPDU_MIP);
    ck_assert_int_eq(f.dir, FG_X4F_C2S);
    ck_assert_uint_eq(f.seq, 2);
    ck_assert_int_eq(f.has_serial, 1);
    ck_assert_uint_eq(f.serial, 4);
    ck_assert_int_eq(f.sel, FG_SEL_FIRST);
    ck_assert_int_eq(f.user, 0);
    fg_x400_fault_clear(&f);
}
END_TEST

START_TEST(test_parse_bad)
{
    static const struct {
        const char *line;
        int col;
        const char *msg;
    } cases[] = {
        {"spdu MIP abort", 15, "':'"},
        {"spdu XYZ: abort", 6, "unknown SPDU type"},
        {"tpkt c2s: reset", 9, "count"},
        {"tpkt 0: reset", 6, "bad TPKT count"},
        {"spdu MIP #0: abort", 10, "bad count"},
        {"spdu CN serial 2: abort", 9, "carries no serial"},
        {"spdu MIP serial x: abort", 17, "bad serial number"},
        {"frobnicate: abort", 1, "unknown trigger"},
        {"spdu AC, nth 0: abort", 14, "connection number"},
        {"spdu AC, sometimes: abort", 10, "unknown selector"},
        {"spdu AC: explode", 10, "unknown action"},
        {"spdu AC: abort sideways", 16, "unexpected 'sideways'"},
        {"spdu AC: abort reason 9", 23, "bad abort reason"},
        {"spdu AC: dr reason zz", 20, "bad reason"},
        {"spdu AC: er 02", 13, "unexpected '02'"},
        {"spdu MIP: rewrite-serial", 25, "needs N"},
        {"spdu MIP: rewrite-serial +x", 26, "bad serial"},
        {"spdu CN: rewrite-serial 3", 10, "carries a serial number"},
        {"spdu MIP: rewrite-serial 3, forward", 11, "always forwards"},
        {"connect: abort, forward", 10, "not valid on connect"},
        {"spdu AC: abort, later", 17, "unknown option"},
        {"activity-end 3: close", 14, "bad count"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fg_x400_fault f;
        char err[256] = "";
        int col = 0;
        ck_assert_msg(fg_x400_fault_parse(cases[i].line, &f, err, sizeof err, &col) == FG_ESYNTAX,
                      "accepted: %s", cases[i].line);
        ck_assert_msg(strstr(err, cases[i].msg) != NULL, "%s: message '%s'", cases[i].line, err);
        ck_assert_msg(col == cases[i].col, "%s: column %d, expected %d (%s)", cases[i].line, col,
                      cases[i].col, err);
        ck_assert_ptr_null(f.spec);
    }
}
END_TEST

/* --- loopback: fake initiator -> proxy -> fake X.400 MTA ------------------------------ */

struct world {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct fg_x400_fault_set fs;
    struct fg_x400_peer *peer;
    struct fg_x400_proxy *proxy;
    int done, status, closes;
    char detail[400];
    uint8_t msg[4096];
};

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    ck_abort_msg("deadline passed");
}

static void closed(void *ud)
{
    struct world *w = ud;
    w->closes++;
}

static void counted(void *ud)
{
    (*(int *)ud)++;
}

static void sent(void *ud, int status, const char *detail)
{
    struct world *w = ud;
    w->done = 1;
    w->status = status;
    snprintf(w->detail, sizeof w->detail, "%s", detail ? detail : "");
}

/* One transfer through the proxy with fault line (NULL: none). */
static void transfer(struct world *w, const char *line, uint64_t timeout_ms)
{
    memset(w, 0, sizeof *w);
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    uv_timer_init(&w->loop, &w->deadline);
    uv_timer_start(&w->deadline, on_deadline, 20000, 0);
    fg_x400_fault_set_init(&w->fs, 1);
    if (line) {
        struct fg_x400_fault f;
        char err[256];
        ck_assert_msg(fg_x400_fault_parse(line, &f, err, sizeof err, NULL) == 0, "%s", err);
        ck_assert_int_eq(fg_x400_fault_set_add(&w->fs, &f), 0);
        fg_x400_fault_clear(&f);
    }
    char err[256];
    struct fg_x400_peer_opts po = {.host = "127.0.0.1"};
    ck_assert_msg(fg_x400_peer_new(&w->loop, &po, &w->peer, err, sizeof err) == 0, "%s", err);
    struct fg_x400_proxy_opts xo = {.listen_host = "127.0.0.1",
                                    .upstream_host = "127.0.0.1",
                                    .upstream_port = fg_x400_peer_port(w->peer),
                                    .faults = &w->fs};
    ck_assert_msg(fg_x400_proxy_new(&w->loop, &xo, &w->proxy, err, sizeof err) == 0, "%s", err);
    for (size_t i = 0; i < sizeof w->msg; i++)
        w->msg[i] = (uint8_t)('a' + i % 26);
    struct fg_x400_send_opts so = {.host = "127.0.0.1",
                                   .port = fg_x400_proxy_port(w->proxy),
                                   .msg = w->msg,
                                   .len = sizeof w->msg,
                                   .checkpoint = 1,
                                   .window = 3,
                                   .timeout_ms = timeout_ms};
    struct fg_x400_sender *snd;
    ck_assert_int_eq(fg_x400_send(&w->loop, &so, sent, w, &snd), 0);
    while (!w->done)
        uv_run(&w->loop, UV_RUN_ONCE);
}

static void finish(struct world *w)
{
    fg_x400_proxy_close(w->proxy, closed, w);
    fg_x400_peer_close(w->peer, closed, w);
    uv_close((uv_handle_t *)&w->deadline, NULL);
    while (w->closes < 2)
        uv_run(&w->loop, UV_RUN_ONCE);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    fg_x400_fault_set_free(&w->fs);
}

static size_t ledger_n(struct world *w)
{
    size_t n = 0;
    fg_x400_peer_ledger(w->peer, &n);
    return n;
}

START_TEST(test_no_fault_forwards)
{
    struct world w;
    transfer(&w, NULL, 5000);
    ck_assert_msg(w.status == 0, "%s", w.detail);
    ck_assert_uint_eq(ledger_n(&w), 1);
    ck_assert_uint_eq(fg_x400_peer_aborts(w.peer), 0);
    ck_assert_uint_eq(w.fs.nlog, 0);
    ck_assert_uint_eq(fg_x400_proxy_accepted(w.proxy), 1);
    finish(&w);
}
END_TEST

/* Each terminal action: the transfer fails the way the action says, the
 * fake MTA never gets the message, and the decision is logged. */
START_TEST(test_actions)
{
    static const struct {
        const char *line, *detail, *trigger, *action;
    } cases[] = {
        {"spdu MIP c2s #2: abort provider", "AB, transport disconnect 05",
         "spdu MIP c2s #2 serial 2", "x400 abort provider"},
        {"spdu MIP #1: abort user rts", "AB, transport disconnect 03", "spdu MIP c2s #1 serial 1",
         "x400 abort user reason protocol-error rts"},
        {"activity-start: dr reason 85", "DR reason 85", "activity-start #1", "x400 dr reason 85"},
        {"spdu AC s2c: er", "ER cause 02", "spdu AC s2c #1", "x400 er cause 02"},
        {"spdu MIP serial 3: reset", "", "spdu MIP c2s #3 serial 3", "x400 reset"},
        {"tpkt c2s 3: close", "", "tpkt c2s 3", "x400 close"},
        {"activity-end: abort provider", "AB, transport disconnect 05", "activity-end #1 serial 6",
         "x400 abort provider"},
        {"connect: close", "", "connect", "x400 close"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct world w;
        transfer(&w, cases[i].line, 5000);
        ck_assert_msg(w.status < 0, "%s: transfer succeeded", cases[i].line);
        ck_assert_msg(strstr(w.detail, cases[i].detail) != NULL, "%s: %s", cases[i].line, w.detail);
        ck_assert_uint_eq(ledger_n(&w), 0);
        ck_assert_uint_eq(w.fs.nlog, 1);
        ck_assert_str_eq(w.fs.log[0].trigger, cases[i].trigger);
        ck_assert_str_eq(w.fs.log[0].action, cases[i].action);
        ck_assert_uint_eq(w.fs.log[0].conn, 1);
        finish(&w);
    }
}
END_TEST

/* `forward`: the AEA reaches the initiator before the FIN, so the
 * transfer is confirmed and the fake MTA has the message. */
START_TEST(test_forward)
{
    struct world w;
    transfer(&w, "spdu AEA s2c: close, forward", 5000);
    ck_assert_msg(w.status == 0, "%s", w.detail);
    ck_assert_uint_eq(ledger_n(&w), 1);
    ck_assert_uint_eq(w.fs.nlog, 1);
    finish(&w);
    /* Without it the AEA is withheld: not confirmed. */
    transfer(&w, "spdu AEA s2c: close", 5000);
    ck_assert_int_lt(w.status, 0);
    ck_assert_uint_eq(ledger_n(&w), 1);
    finish(&w);
}
END_TEST

/* stall: nothing more flows; the initiator's own deadline ends it. */
START_TEST(test_stall)
{
    struct world w;
    transfer(&w, "spdu MIA s2c #1: stall", 300);
    ck_assert_int_lt(w.status, 0);
    ck_assert_uint_eq(ledger_n(&w), 0);
    ck_assert_uint_eq(w.fs.nlog, 1);
    ck_assert_str_eq(w.fs.log[0].action, "x400 stall");
    finish(&w);
}
END_TEST

/* Selectors: `nth 2` spares connection 1. */
START_TEST(test_selector)
{
    struct world w;
    transfer(&w, "spdu MIP #1, nth 2: abort", 5000);
    ck_assert_msg(w.status == 0, "%s", w.detail);
    ck_assert_uint_eq(w.fs.nlog, 0);
    finish(&w);
    transfer(&w, "spdu MIP #1, p 0: abort", 5000);
    ck_assert_msg(w.status == 0, "%s", w.detail);
    finish(&w);
}
END_TEST

/* rewrite-serial through to the strict fake MTA: it sees a skipped serial
 * number and aborts (KB Q194685), while the initiator's own were valid. */
START_TEST(test_rewrite_to_strict_peer)
{
    struct world w;
    transfer(&w, "spdu MIP c2s #2: rewrite-serial +1", 5000);
    ck_assert_int_lt(w.status, 0);
    ck_assert_msg(strstr(w.detail, "AB, transport disconnect 05") != NULL, "%s", w.detail);
    ck_assert_uint_eq(fg_x400_peer_aborts(w.peer), 1);
    ck_assert_uint_eq(ledger_n(&w), 0);
    ck_assert_str_eq(w.fs.log[0].action, "x400 rewrite-serial +1 (MIP serial 2 -> 3)");
    finish(&w);
}
END_TEST

/* --- rewrite-serial against a scripted responder, every TPDU size ---------------------- */

struct rec {
    uv_tcp_t srv, conn, cli;
    uv_connect_t creq;
    uv_write_t wreq;
    struct fg_x400_dec dec;
    size_t tpdu_max; /* largest TPDU seen (after the TPKT header) */
    unsigned ndt;
    int got_mip, srv_done;
    uint32_t serial;
    size_t ud_len;
    int ud_ok, long_li;
    uint8_t rbuf[65536];
    struct fg_x400_buf out;
    const uint8_t *ud;
    size_t udn;
};

static void rec_ev(void *ud, const struct fg_x400_event *ev)
{
    struct rec *r = ud;
    if (ev->kind == FG_X400_EV_TPDU && ev->tpdu->code == FG_COTP_DT) {
        r->ndt++;
        if ((size_t)ev->tpkt_len - 4 > r->tpdu_max)
            r->tpdu_max = (size_t)ev->tpkt_len - 4;
    }
    if (ev->kind == FG_X400_EV_SPDU && ev->spdu->type == FG_SPDU_MIP) {
        r->got_mip = 1;
        r->serial = ev->spdu->serial_ok ? ev->spdu->serial : 0xFFFFFFFF;
        r->long_li = ev->spdu->long_li;
        r->ud_len = ev->spdu->user_data_len;
        r->ud_ok =
            ev->spdu->user_data_len == r->udn && memcmp(ev->spdu->user_data, r->ud, r->udn) == 0;
    }
}

static void rec_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct rec *r = h->data;
    (void)sz;
    *b = uv_buf_init((char *)r->rbuf, sizeof r->rbuf);
}

static void rec_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct rec *r = s->data;
    if (n > 0)
        fg_x400_dec_feed(&r->dec, (const uint8_t *)b->base, (size_t)n);
    if (n < 0 || r->got_mip) {
        uv_read_stop(s);
        r->srv_done = 1;
    }
}

static void rec_accept(uv_stream_t *srv, int status)
{
    struct rec *r = srv->data;
    ck_assert_int_eq(status, 0);
    uv_tcp_init(srv->loop, &r->conn);
    r->conn.data = r;
    ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&r->conn), 0);
    uv_read_start((uv_stream_t *)&r->conn, rec_alloc, rec_read);
}

static void cli_written(uv_write_t *req, int status)
{
    (void)req;
    ck_assert_int_eq(status, 0);
}

static void cli_connected(uv_connect_t *req, int status)
{
    struct rec *r = req->data;
    ck_assert_int_eq(status, 0);
    uv_buf_t b = uv_buf_init((char *)r->out.p, (unsigned)r->out.len);
    ck_assert_int_eq(uv_write(&r->wreq, (uv_stream_t *)&r->cli, &b, 1, cli_written), 0);
}

START_TEST(test_rewrite_every_tpdu_size)
{
    /* A MIP with 600 octets of user data (PGI 193): its LI needs the long
     * form (X.225 §8.2.5), and the TSDU spans several DTs below 1024. */
    uint8_t ud[600];
    for (size_t i = 0; i < sizeof ud; i++)
        ud[i] = (uint8_t)(i * 7);
    for (uint8_t lg = 7; lg <= 13; lg++) {
        size_t size = (size_t)1 << lg;
        for (int forms = 0; forms < 2; forms++) {
            uv_loop_t loop;
            ck_assert_int_eq(uv_loop_init(&loop), 0);
            uv_timer_t deadline;
            uv_timer_init(&loop, &deadline);
            uv_timer_start(&deadline, on_deadline, 10000, 0);
            struct rec *r = fg_calloc(1, sizeof *r);
            r->ud = ud;
            r->udn = forms ? 100 : sizeof ud; /* short and long SPDU lengths */
            fg_x400_dec_init(&r->dec, 0, rec_ev, r);
            uv_tcp_init(&loop, &r->srv);
            r->srv.data = r;
            struct sockaddr_in a;
            uv_ip4_addr("127.0.0.1", 0, &a);
            ck_assert_int_eq(uv_tcp_bind(&r->srv, (struct sockaddr *)&a, 0), 0);
            ck_assert_int_eq(uv_listen((uv_stream_t *)&r->srv, 4, rec_accept), 0);
            struct sockaddr_in sa;
            int sl = sizeof sa;
            uv_tcp_getsockname(&r->srv, (struct sockaddr *)&sa, &sl);

            struct fg_x400_fault_set fs;
            fg_x400_fault_set_init(&fs, 1);
            struct fg_x400_fault f;
            char err[256];
            ck_assert_int_eq(fg_x400_fault_parse("spdu MIP c2s serial 1: rewrite-serial 123456", &f,
                                                 err, sizeof err, NULL),
                             0);
            fg_x400_fault_set_add(&fs, &f);
            fg_x400_fault_clear(&f);
            struct fg_x400_proxy *px;
            struct fg_x400_proxy_opts xo = {.listen_host = "127.0.0.1",
                                            .upstream_host = "127.0.0.1",
                                            .upstream_port = ntohs(sa.sin_port),
                                            .faults = &fs};
            ck_assert_int_eq(fg_x400_proxy_new(&loop, &xo, &px, err, sizeof err), 0);

            /* CR proposing this TPDU size, then GT + MIP(1, user data) as
             * DTs of that size. */
            fg_x400_put_cr(&r->out, 1, lg, NULL, 0, NULL, 0);
            struct fg_x400_buf prm = {0}, tsdu = {0};
            fg_x400_put_serial(&prm, 1);
            fg_x400_put_pi(&prm, FG_PGI_USER_DATA, ud, r->udn);
            fg_x400_put_spdu(&tsdu, FG_SI_GT, NULL, 0, NULL, 0, 0);
            fg_x400_put_spdu(&tsdu, FG_SI_MIP, prm.p, prm.len, NULL, 0, 0);
            fg_x400_put_dt(&r->out, tsdu.p, tsdu.len, size);
            fg_x400_buf_free(&prm);
            fg_x400_buf_free(&tsdu);

            uv_tcp_init(&loop, &r->cli);
            r->creq.data = r;
            struct sockaddr_in pa;
            uv_ip4_addr("127.0.0.1", fg_x400_proxy_port(px), &pa);
            ck_assert_int_eq(
                uv_tcp_connect(&r->creq, &r->cli, (struct sockaddr *)&pa, cli_connected), 0);
            while (!r->srv_done)
                uv_run(&loop, UV_RUN_ONCE);
            ck_assert_msg(r->got_mip, "size %zu: no MIP forwarded", size);
            ck_assert_uint_eq(r->serial, 123456);
            ck_assert_msg(r->ud_ok, "size %zu: user data changed (%zu octets)", size, r->ud_len);
            ck_assert_int_eq(r->long_li, forms ? 0 : 1);
            ck_assert_msg(r->tpdu_max <= size, "size %zu: a TPDU of %zu", size, r->tpdu_max);
            /* Re-segmented: as many DTs as the TSDU needs at this size. */
            size_t tsdu_len = 2 + (forms ? 2 : 4) + 8 + (forms ? 2 : 4) + r->udn;
            ck_assert_uint_eq(r->ndt, (tsdu_len + size - 4) / (size - 3));
            ck_assert_uint_eq(fs.nlog, 1);

            int closes = 0;
            fg_x400_proxy_close(px, counted, &closes);
            uv_close((uv_handle_t *)&r->cli, NULL);
            uv_close((uv_handle_t *)&r->conn, NULL);
            uv_close((uv_handle_t *)&r->srv, NULL);
            uv_close((uv_handle_t *)&deadline, NULL);
            uv_run(&loop, UV_RUN_DEFAULT);
            ck_assert_int_eq(closes, 1);
            ck_assert_int_eq(uv_loop_close(&loop), 0);
            fg_x400_dec_free(&r->dec);
            fg_x400_buf_free(&r->out);
            free(r);
            fg_x400_fault_set_free(&fs);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("x400_proxy");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_parse_good);
    tcase_add_test(tc, test_parse_bad);
    suite_add_tcase(s, tc);
    tc = tcase_create("loopback");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_no_fault_forwards);
    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_forward);
    tcase_add_test(tc, test_stall);
    tcase_add_test(tc, test_selector);
    tcase_add_test(tc, test_rewrite_to_strict_peer);
    tcase_add_test(tc, test_rewrite_every_tpdu_size);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
