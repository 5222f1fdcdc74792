/* check_expect.c - the expectation catalog, the judge and the run metadata
 * file, over real traces: pcap -> trace -> timeline -> rule.
 *
 * The rules are about time ("closed within 9 s", "never closed in 14 s of
 * trace"), and the capture module stamps synthesized frames with the wall
 * clock, so most traces here are written by a small frame builder with
 * chosen timestamps (pcap_open_dead + pcap_dump) instead of waiting.  The
 * liveness case without timing goes through the capture module's synth mode.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/util.h"

#define BASE_US 1700000000000000ull /* trace epoch: all times are offsets */
#define GW_PORT 2525                /* inbound: injector -> gateway */
#define PROXY_PORT 39001            /* outbound: gateway -> proxy */
#define MTA_PORT 39002              /* outbound: proxy -> fake MTA */

/* --- a tiny pcap writer with chosen timestamps ------------------------ */

#define SYNTHPCAP_TAG "expect"
#include "synthpcap.h"

/* synthpcap.h's frames, each at a time the test gives (BASE_US + t_ms). */
static void frame_at(struct tc *c, int from, uint8_t flags, const char *data, size_t len,
                     uint64_t t_ms)
{
    c->w->t_ms = t_ms;
    frame(c, from, flags, data, len);
}

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

static struct tc conn_at(struct tw *w, uint16_t cport, uint16_t sport, uint64_t t_ms)
{
    struct tc c = {w, cport, sport, {1000u * cport, 5000u * sport}};
    frame_at(&c, 0, F_SYN, NULL, 0, t_ms);
    frame_at(&c, 1, F_SYN | F_ACK, NULL, 0, t_ms);
    frame_at(&c, 0, F_ACK, NULL, 0, t_ms);
    return c;
}

static void say_at(struct tc *c, int from, const char *text, uint64_t t_ms)
{
    frame_at(c, from, F_PSH | F_ACK, text, strlen(text), t_ms);
}

static void fin_at(struct tc *c, int from, uint64_t t_ms)
{
    frame_at(c, from, F_FIN | F_ACK, NULL, 0, t_ms);
}

/* A whole transaction from greeting to the reply to end of data. */
static void transaction(struct tc *c, const char *from, const char *token, int eod_code,
                        uint64_t t_ms)
{
    char line[256];
    say_at(c, 1, "220 peer ESMTP\r\n", t_ms);
    say_at(c, 0, "EHLO gw.test\r\n", t_ms + 1);
    say_at(c, 1, "250 peer\r\n", t_ms + 2);
    snprintf(line, sizeof line, "MAIL FROM:%s\r\n", from);
    say_at(c, 0, line, t_ms + 3);
    say_at(c, 1, "250 2.1.0 ok\r\n", t_ms + 4);
    say_at(c, 0, "RCPT TO:<user2@company2.test>\r\n", t_ms + 5);
    say_at(c, 1, "250 2.1.5 ok\r\n", t_ms + 6);
    say_at(c, 0, "DATA\r\n", t_ms + 7);
    say_at(c, 1, "354 go ahead\r\n", t_ms + 8);
    snprintf(line, sizeof line,
             "From: user1@company1.test\r\nX-Faultgate-Token: %s\r\nSubject: t\r\n\r\nhello\r\n"
             ".\r\n",
             token);
    say_at(c, 0, line, t_ms + 9);
    snprintf(line, sizeof line, "%d done\r\n", eod_code);
    say_at(c, 1, line, t_ms + 10);
}

/* --- metadata and scenarios ------------------------------------------- */

static struct fg_meta *meta_new(void)
{
    struct fg_meta *m = fg_calloc(1, sizeof *m);
    m->scenario_id = fg_strdup("test");
    m->capture_mode = fg_strdup("synth");
    m->gateway_port = GW_PORT;
    m->proxy_port = PROXY_PORT;
    m->mta_port = MTA_PORT;
    m->gateway_running_at_end = 1;
    m->start_us = BASE_US;
    m->ntimeouts = 1;
    m->timeouts = fg_calloc(1, sizeof *m->timeouts);
    m->timeouts[0].name = fg_strdup("data_done");
    m->timeouts[0].ms = 4000;
    return m;
}

static void meta_decision(struct fg_meta *m, unsigned conn, const char *trig, const char *act,
                          uint64_t t_ms)
{
    m->decisions = fg_realloc(m->decisions, (m->ndecisions + 1) * sizeof *m->decisions);
    struct fg_decision *d = &m->decisions[m->ndecisions++];
    memset(d, 0, sizeof *d);
    d->t_us = BASE_US + t_ms * 1000;
    d->conn = conn;
    snprintf(d->trigger, sizeof d->trigger, "%s", trig);
    snprintf(d->action, sizeof d->action, "%s", act);
}

static void meta_token(struct fg_meta *m, const char *tok)
{
    m->tokens = fg_realloc(m->tokens, (m->ntokens + 1) * sizeof *m->tokens);
    struct fg_meta_token *t = &m->tokens[m->ntokens++];
    memset(t, 0, sizeof *t);
    snprintf(t->token, sizeof t->token, "%s", tok);
}

static struct fg_expect_spec spec(const char *rule, const char *within, const char *fate)
{
    struct fg_expect_spec e = {0};
    e.rule = (char *)rule;
    e.within = (char *)within;
    e.fate = (char *)fate;
    e.line = 12, e.col = 5, e.within_line = 12, e.within_col = 40;
    return e;
}

/* Judge one expectation over the trace w wrote; res is cleared by caller. */
static void judge1(struct tw *w, struct fg_meta *m, struct fg_expect_spec *e,
                   struct fg_scenario_result *res)
{
    struct fg_scenario sc = {0};
    sc.path = "scenarios/kb/test.yaml";
    sc.id = "test";
    sc.title = "test";
    sc.expects = e;
    sc.nexpects = 1;
    fg_judge(&sc, m, w->path, res);
    ck_assert_msg(res->tl != NULL, "timeline: %s", res->error ? res->error : "?");
    ck_assert_uint_eq(res->noutcomes, 1);
    if (getenv("FG_TEST_VERBOSE")) /* show what a person would read */
        fprintf(stderr, "[%s] %s\n  %s\n", fg_verdict_name(res->outcomes[0].verdict),
                res->outcomes[0].summary, res->outcomes[0].evidence);
    if (!getenv("FG_TEST_KEEP"))
        unlink(w->path);
}

static int has_frame(const struct fg_outcome *o, uint64_t f)
{
    for (size_t i = 0; i < o->nframes; i++)
        if (o->frames[i] == f)
            return 1;
    return 0;
}

/* The frame number of the last frame written so far: 3 handshake frames
 * per connection plus one per say/fin, counted by the tests below. */

/* --- closes-after-stall ----------------------------------------------- */

/* The outbound leg up to a 354 from the proxy at t=500 ms; the 354 is
 * frame 3 + 8 + 1 = 12 (handshake 3, greeting..DATA 8 frames before it). */
static struct tc stalled_conn(struct tw *w)
{
    struct tc c = conn_at(w, 41001, PROXY_PORT, 400);
    say_at(&c, 1, "220 proxy ESMTP\r\n", 410);
    say_at(&c, 0, "EHLO gw.test\r\n", 420);
    say_at(&c, 1, "250 proxy\r\n", 430);
    say_at(&c, 0, "MAIL FROM:<user1@company1.test>\r\n", 440);
    say_at(&c, 1, "250 ok\r\n", 450);
    say_at(&c, 0, "RCPT TO:<user2@company2.test>\r\n", 460);
    say_at(&c, 1, "250 ok\r\n", 470);
    say_at(&c, 0, "DATA\r\n", 480);
    say_at(&c, 1, "354 go ahead\r\n", 500); /* frame 12 */
    say_at(&c, 0, "From: a\r\n\r\nbody line\r\n", 510);
    return c;
}

START_TEST(stall_pass)
{
    struct tw w;
    tw_open(&w, "stall-pass");
    struct tc c = stalled_conn(&w);
    fin_at(&c, 0, 2500); /* frame 14 */
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("closes-after-stall", "5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_int_eq(res.verdict, FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(o->evidence, "connection #1"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "127.0.0.1:41001 -> 127.0.0.1:39001"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "FIN (frame 14"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "after 2.0 s, limit 5.0 s"));
    ck_assert_ptr_nonnull(strstr(o->source, "Q129140"));
    ck_assert(has_frame(o, 12));
    ck_assert(has_frame(o, 14));
    ck_assert_uint_ne(o->conn, 0);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(stall_fail_never_closed)
{
    struct tw w;
    tw_open(&w, "stall-fail");
    stalled_conn(&w);
    /* Something else keeps the trace going to t=+10.4 s (10 s after the
     * first frame at 0.4 s): the harness's liveness probe. */
    struct tc p = conn_at(&w, 40100, GW_PORT, 10400);
    say_at(&p, 1, "220 gw ready\r\n", 10400);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("closes-after-stall", "timeouts.data_done + 5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_int_eq(res.verdict, FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(o->evidence, "stall"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "connection #1"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "never closed"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "frame 12, t=+0.1 s"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "9.9 s of trace after the stall"));
    ck_assert_ptr_nonnull(
        strstr(o->evidence, "limit 9.0 s = timeouts.data_done + 5s (data_done = 4.0 s)"));
    ck_assert(has_frame(o, 12));
    fg_scenario_result_clear(&res);
}
END_TEST

/* A close that comes only once faultgate ends the run (the liveness probe,
 * then the stop signal) is not the gateway timing out. */
START_TEST(stall_fail_closed_at_run_end)
{
    struct tw w;
    tw_open(&w, "stall-run-end");
    struct tc c = stalled_conn(&w);
    fin_at(&c, 0, 12500); /* frame 14, after the probe started */
    tw_close(&w);
    struct fg_meta *m = meta_new();
    m->probe_start_us = BASE_US + 12000 * 1000;
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("closes-after-stall", "5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "never closed it"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "until faultgate ended the run"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(stall_fail_late)
{
    struct tw w;
    tw_open(&w, "stall-late");
    struct tc c = stalled_conn(&w);
    frame_at(&c, 0, F_RST, NULL, 0, 12500);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("closes-after-stall", "timeouts.data_done + 5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "RST"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "only after 12.0 s"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(stall_inconc_short_trace)
{
    struct tw w;
    tw_open(&w, "stall-short");
    struct tc c = stalled_conn(&w);
    say_at(&c, 0, "more body\r\n", 3000);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("closes-after-stall", "timeouts.data_done + 5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "ended 2.5 s after the stall"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(stall_inconc_not_fired)
{
    struct tw w;
    tw_open(&w, "stall-none");
    stalled_conn(&w);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "command EHLO", "delay 1s", 420); /* not a stall */
    struct fg_expect_spec e = spec("closes-after-stall", "5s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_int_eq(o->verdict, FG_V_INCONC);
    ck_assert_ptr_nonnull(strstr(o->evidence, "never reached"));
    fg_scenario_result_clear(&res);
}
END_TEST

/* The trigger names a command with a sequence number: the stall point is
 * that command, not the first of its verb. */
START_TEST(stall_eod_trigger)
{
    struct tw w;
    tw_open(&w, "stall-cmd");
    struct tc c = stalled_conn(&w);
    say_at(&c, 0, ".\r\n", 520); /* frame 14: end of data */
    fin_at(&c, 0, 1520);         /* frame 15 */
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "end-of-data", "stall s2c", 521);
    struct fg_expect_spec e = spec("closes-after-stall", "2s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert(has_frame(o, 14));
    ck_assert_ptr_nonnull(strstr(o->evidence, "after 1.0 s"));
    fg_scenario_result_clear(&res);
}
END_TEST

/* --- message-fate ------------------------------------------------------- */

/* Inbound acceptance of tok at t=1 s (reply frame 14), then n deliveries
 * (bounce: with <>) at the fake MTA, and the trace's last frame at end_ms. */
static void fate_trace(struct tw *w, const char *tok, int in_code, int ndeliver, int bounce,
                       uint64_t end_ms)
{
    struct tc in = conn_at(w, 40001, GW_PORT, 990);
    transaction(&in, "<user1@company1.test>", tok, in_code, 1000);
    for (int i = 0; i < ndeliver; i++) {
        struct tc out = conn_at(w, (uint16_t)(42001 + i), MTA_PORT, 1500 + 1000 * (uint64_t)i);
        transaction(&out, "<user1@company1.test>", tok, 250, 1500 + 1000 * (uint64_t)i);
        fin_at(&out, 0, 1600 + 1000 * (uint64_t)i);
    }
    if (bounce) {
        struct tc out = conn_at(w, 43001, MTA_PORT, 4000);
        transaction(&out, "<>", tok, 250, 4000);
    }
    struct tc last = conn_at(w, 44001, 9, end_ms); /* unrelated: ends the trace */
    (void)last;
}

static struct fg_outcome *fate_run(const char *name, const char *fate, int in_code, int ndeliver,
                                   int bounce, uint64_t end_ms, struct fg_scenario_result *res)
{
    struct tw w;
    tw_open(&w, name);
    fate_trace(&w, "tok-1", in_code, ndeliver, bounce, end_ms);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_token(m, "tok-1");
    struct fg_expect_spec e = spec("message-fate", "20s", fate);
    judge1(&w, m, &e, res);
    return &res->outcomes[0];
}

START_TEST(fate_delivered_once)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = fate_run("once", "delivered-once", 250, 1, 0, 30000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "message tok-1: accepted on inbound connection #1"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "frame 14"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "delivered once"));
    ck_assert(has_frame(o, 14));
    ck_assert_uint_ge(o->nframes, 2);
    fg_scenario_result_clear(&res);
    o = fate_run("once2", "delivered", 250, 1, 0, 30000, &res);
    ck_assert_int_eq(o->verdict, FG_V_PASS);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(fate_duplicated)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = fate_run("dup", "delivered-once", 250, 2, 0, 30000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "duplicated: 2 deliveries"));
    ck_assert_ptr_nonnull(strstr(o->summary, "duplicated, expected delivered-once"));
    fg_scenario_result_clear(&res);
    o = fate_run("dup2", "duplicated", 250, 2, 0, 30000, &res);
    ck_assert_int_eq(o->verdict, FG_V_PASS);
    fg_scenario_result_clear(&res);
    o = fate_run("dup3", "delivered", 250, 2, 0, 30000, &res);
    ck_assert_int_eq(o->verdict, FG_V_PASS);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(fate_lost_and_deferred)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = fate_run("lost", "delivered-once", 250, 0, 0, 30000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(
        strstr(o->evidence, "lost: neither delivered nor bounced within 20.0 s (0 deliveries"));
    fg_scenario_result_clear(&res);
    o = fate_run("deferred", "delivered-once", 250, 0, 0, 8000, &res);
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "deferred"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(fate_bounced)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = fate_run("bounce", "bounced", 250, 0, 1, 30000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "bounced"));
    fg_scenario_result_clear(&res);
    o = fate_run("bounce2", "delivered-once", 250, 0, 1, 30000, &res);
    ck_assert_int_eq(o->verdict, FG_V_FAIL);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(fate_refused)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = fate_run("refused", "delivered-once", 554, 0, 0, 30000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "refused"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "554"));
    fg_scenario_result_clear(&res);
}
END_TEST

/* The fake MTA's ledger beside the trace (meta->ledger is relative to the
 * meta file, which is beside the capture): ndeliver deliveries of tok-1 on
 * the wire, then the ledger's lines (NULL: no ledger file at all). */
static struct fg_outcome *ledger_run(const char *name, const char *fate, int ndeliver,
                                     const char *ledger, struct fg_scenario_result *res)
{
    struct tw w;
    tw_open(&w, name);
    fate_trace(&w, "tok-1", 250, ndeliver, 0, 30000);
    tw_close(&w);
    char lpath[300];
    snprintf(lpath, sizeof lpath, "/tmp/fg-check-expect-%ld-%s.ledger.jsonl", (long)getpid(), name);
    if (ledger) {
        FILE *f = fopen(lpath, "w");
        ck_assert_ptr_nonnull(f);
        fputs(ledger, f);
        fclose(f);
    }
    struct fg_meta *m = meta_new();
    meta_token(m, "tok-1");
    m->ledger = fg_strdup(strrchr(lpath, '/') + 1);
    struct fg_expect_spec e = spec("message-fate", "20s", fate);
    judge1(&w, m, &e, res);
    unlink(lpath);
    return &res->outcomes[0];
}

#define LMSG(tok, conn)                                                                            \
    "{\"event\": \"message\", \"token\": \"" tok "\", \"mail_from\": \"<a@b.test>\", \"rcpt\": "   \
    "[\"<c@d.test>\"], \"size\": 42, \"sha256\": \"00\", \"start_us\": 1, \"t_us\": 2, "           \
    "\"conn\": " #conn ", \"tls\": false, \"bdat\": false, \"violations\": []}\n"

START_TEST(fate_ledger)
{
    struct fg_scenario_result res;
    /* Agreement, with a violation event and an empty line in the ledger. */
    struct fg_outcome *o = ledger_run(
        "l-agree", "delivered-once", 1,
        "{\"event\": \"violation\", \"rule\": \"bare-lf\", \"detail\": \"x\", \"conn\": 1, "
        "\"t_us\": 1}\n\n" LMSG("tok-1", 1),
        &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "ledger agrees: 1 message"), "%s", o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "1 message: delivered-once as expected"));
    fg_scenario_result_clear(&res);

    /* Delivered on the wire (the 250 of the MTA connection is frame 28),
     * missing from the ledger: not a pass. */
    o = ledger_run("l-missing", "delivered-once", 1, "", &res);
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "token tok-1: 1 delivery on the wire (first: proxy-to-MTA "
                                      "connection #1, frame 28) but 0 in the fake MTA's ledger"),
                  "%s", o->evidence);
    ck_assert_msg(strstr(o->evidence, "l-missing.ledger.jsonl"), "%s", o->evidence);
    ck_assert_msg(strstr(o->summary, "delivered-once"), "%s", o->summary);
    ck_assert_msg(strstr(o->summary, "ledger disagrees"), "%s", o->summary);
    fg_scenario_result_clear(&res);

    /* In the ledger, never seen on the wire: "lost" is not asserted. */
    o = ledger_run("l-unseen", "delivered-once", 0, LMSG("tok-1", 3), &res);
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "token tok-1: 1 message in the fake MTA's ledger"), "%s",
                  o->evidence);
    ck_assert_msg(
        strstr(o->evidence, "(first: its connection 3) but 0 deliveries seen on the wire"), "%s",
        o->evidence);
    ck_assert_msg(strstr(o->summary, "lost"), "%s", o->summary);
    fg_scenario_result_clear(&res);

    /* Duplicated on the wire, once in the ledger. */
    o = ledger_run("l-dup", "delivered-once", 2, LMSG("tok-1", 1), &res);
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "2 deliveries on the wire"), "%s", o->evidence);
    fg_scenario_result_clear(&res);

    /* The injected message agrees, but the ledger holds another one. */
    o = ledger_run("l-extra", "delivered-once", 1, LMSG("tok-1", 1) LMSG("tok-9", 2), &res);
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "token tok-9: 1 message in the fake MTA's ledger"), "%s",
                  o->evidence);
    ck_assert_msg(!strstr(o->evidence, "token tok-1:"), "%s", o->evidence);
    fg_scenario_result_clear(&res);

    /* The MTA found no token where the wire did (or the reverse): the same
     * message all the same. */
    o = ledger_run("l-untok", "delivered-once", 1, LMSG("", 1), &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "ledger agrees: 1 message"), "%s", o->evidence);
    fg_scenario_result_clear(&res);

    /* No ledger file, or a broken one: the trace alone decides, and the
     * evidence says the ledger was not read (with file:line:col). */
    o = ledger_run("l-none", "delivered-once", 1, NULL, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "ledger not read"), "%s", o->evidence);
    fg_scenario_result_clear(&res);
    o = ledger_run("l-bad", "delivered-once", 1, LMSG("tok-1", 1) "{\"event\": \n", &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_msg(strstr(o->evidence, "l-bad.ledger.jsonl:2:"), "%s", o->evidence);
    fg_scenario_result_clear(&res);
}
END_TEST

/* --- gateway-alive ------------------------------------------------------ */

struct loopguard {
    uv_loop_t loop;
    uv_timer_t deadline;
};

static void deadline_cb(uv_timer_t *t)
{
    ck_abort_msg("deadline passed");
}

/* The capture module's synth mode, for the real write path. */
START_TEST(alive_greeting_synth)
{
    struct loopguard g;
    ck_assert_int_eq(uv_loop_init(&g.loop), 0);
    uv_timer_init(&g.loop, &g.deadline);
    uv_timer_start(&g.deadline, deadline_cb, 10000, 0);
    char path[256], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "/tmp/fg-check-expect-%ld-alive.pcap", (long)getpid());
    struct fg_capture *cap = NULL;
    ck_assert_int_eq(
        fg_capture_open(&g.loop, FG_CAPTURE_SYNTH, path, NULL, 0, &cap, err, sizeof err), 0);
    struct sockaddr_in cl, sv;
    uv_ip4_addr("127.0.0.1", 40001, &cl);
    uv_ip4_addr("127.0.0.1", GW_PORT, &sv);
    uint64_t before = fg_wall_us();
    struct fg_synth_conn *sc =
        fg_capture_conn_open(cap, (struct sockaddr *)&cl, (struct sockaddr *)&sv);
    fg_capture_conn_data(sc, FG_S2C, "220 gw ready\r\n", 14);
    fg_capture_conn_data(sc, FG_C2S, "QUIT\r\n", 6);
    fg_capture_conn_data(sc, FG_S2C, "221 bye\r\n", 9);
    fg_capture_conn_fin(sc, FG_C2S);
    fg_capture_conn_fin(sc, FG_S2C);
    fg_capture_conn_free(sc);
    ck_assert_int_eq(fg_capture_close(cap), 0);
    uv_close((uv_handle_t *)&g.deadline, NULL);
    uv_run(&g.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&g.loop), 0);

    struct fg_meta *m = meta_new();
    m->probe_start_us = before;
    struct fg_expect_spec e = spec("gateway-alive", NULL, NULL);
    struct fg_scenario_result res;
    struct tw w;
    snprintf(w.path, sizeof w.path, "%s", path);
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "got the greeting 220"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "127.0.0.1:40001 -> 127.0.0.1:2525"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(alive_refused)
{
    struct tw w;
    tw_open(&w, "refused");
    struct tc old = conn_at(&w, 40001, GW_PORT, 100); /* before the probe */
    say_at(&old, 1, "220 gw\r\n", 110);
    struct tc p = {&w, 40002, GW_PORT, {7000, 9000}};
    frame_at(&p, 0, F_SYN, NULL, 0, 5000);         /* frame 5 */
    frame_at(&p, 1, F_RST | F_ACK, NULL, 0, 5000); /* frame 6 */
    tw_close(&w);
    struct fg_meta *m = meta_new();
    m->probe_start_us = BASE_US + 4000 * 1000;
    struct fg_expect_spec e = spec("gateway-alive", NULL, NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "RST"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "connection #2"));
    ck_assert(has_frame(o, 6));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(alive_died)
{
    struct tw w;
    tw_open(&w, "died");
    struct tc p = conn_at(&w, 40002, GW_PORT, 5000);
    say_at(&p, 1, "220 gw\r\n", 5010);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    m->probe_start_us = BASE_US + 4000 * 1000;
    m->gateway_running_at_end = 0;
    m->gateway_term_signal = 6;
    struct fg_expect_spec e = spec("gateway-alive", NULL, NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    const struct fg_outcome *o = &res.outcomes[0];
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "died with signal 6 (SIGABRT)"));
    ck_assert_ptr_nonnull(strstr(o->summary, "SIGABRT"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(alive_no_probe)
{
    struct tw w;
    tw_open(&w, "noprobe");
    struct tc p = conn_at(&w, 40002, GW_PORT, 100);
    say_at(&p, 1, "220 gw\r\n", 110);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    m->probe_start_us = BASE_US + 4000 * 1000;
    struct fg_expect_spec e = spec("gateway-alive", NULL, NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    ck_assert_int_eq(res.outcomes[0].verdict, FG_V_INCONC);
    fg_scenario_result_clear(&res);
}
END_TEST

/* --- the judge ------------------------------------------------------------ */

START_TEST(judge_unreadable_trace)
{
    struct fg_scenario sc = {0};
    struct fg_expect_spec e = spec("gateway-alive", NULL, NULL);
    sc.id = "x";
    sc.expects = &e;
    sc.nexpects = 1;
    struct fg_scenario_result res;
    fg_judge(&sc, meta_new(), "/nonexistent/trace.pcap", &res);
    ck_assert_int_eq(res.verdict, FG_V_ERROR);
    ck_assert_ptr_nonnull(res.error);
    ck_assert_ptr_nonnull(strstr(res.error, "/nonexistent/trace.pcap"));
    ck_assert_ptr_null(res.tl);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(judge_worst_of_many)
{
    struct tw w;
    tw_open(&w, "worst");
    struct tc p = conn_at(&w, 40002, GW_PORT, 5000);
    say_at(&p, 1, "220 gw\r\n", 5010);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    m->probe_start_us = BASE_US;
    struct fg_expect_spec e[2] = {spec("gateway-alive", NULL, NULL),
                                  spec("closes-after-stall", "5s", NULL)};
    struct fg_scenario sc = {0};
    sc.id = "worst";
    sc.expects = e;
    sc.nexpects = 2;
    struct fg_scenario_result res;
    fg_judge(&sc, m, w.path, &res);
    unlink(w.path);
    ck_assert_uint_eq(res.noutcomes, 2);
    ck_assert_int_eq(res.outcomes[0].verdict, FG_V_PASS);
    ck_assert_int_eq(res.outcomes[1].verdict, FG_V_INCONC);
    ck_assert_int_eq(res.verdict, FG_V_INCONC);
    fg_scenario_result_clear(&res);
}
END_TEST

/* --- pure parts ----------------------------------------------------------- */

START_TEST(verdict_order)
{
    const enum fg_verdict order[] = {FG_V_SKIP, FG_V_PASS, FG_V_INCONC, FG_V_FAIL, FG_V_ERROR};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 5; j++) {
            enum fg_verdict w = fg_verdict_worst(order[i], order[j]);
            ck_assert_int_eq(w, order[i > j ? i : j]);
        }
    ck_assert_str_eq(fg_verdict_name(FG_V_INCONC), "inconc");
    ck_assert_str_eq(fg_verdict_name(FG_V_SKIP), "skip");
    ck_assert_str_eq(fg_expect_rules[0], "closes-after-stall");
    ck_assert_str_eq(fg_expect_rules[3], "inbound-accepts-while-busy");
    ck_assert_str_eq(fg_expect_rules[4], "retries-after-drop");
    /* every row of the core table is listed, once */
    size_t nr = 0;
    while (fg_expect_rules[nr])
        nr++;
    for (const struct fg_expect_rule *r = fg_expect_core_rules; r->name; r++) {
        size_t seen = 0;
        for (size_t i = 0; i < nr; i++)
            seen += strcmp(fg_expect_rules[i], r->name) == 0;
        ck_assert_msg(seen == 1, "%s listed %zu times", r->name, seen);
        ck_assert_ptr_nonnull(fg_expect_source(r->name));
    }
    ck_assert_ptr_nonnull(fg_expect_rule_find("quit-at-end"));
    ck_assert_int_eq(fg_expect_param_known("timeout-at-least", "stage"), 1);
    ck_assert_int_eq(fg_expect_param_known("crlf-only", "leg"), 1);
    ck_assert_int_eq(fg_expect_param_known("quit-at-end", "leg"), 0);
    ck_assert_int_eq(fg_expect_param_known("message-fate", "fate"), 1);
    ck_assert_int_eq(fg_expect_param_known("gateway-alive", "within"), 0);
    ck_assert_int_eq(fg_expect_param_known("nope", "within"), -1);
}
END_TEST

START_TEST(validate_errors)
{
    struct fg_scenario sc = {0};
    sc.path = "scenarios/kb/x.yaml";
    char err[FG_ERRBUF_SIZE];
    struct fg_expect_spec e = spec("closes-after-stall", "timeouts.data_done + 5s", NULL);
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), 0);

    e = spec("closes-after-stal", "5s", NULL);
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "scenarios/kb/x.yaml:12:5: unknown expectation rule"));

    e = spec("closes-after-stall", NULL, NULL);
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, ":12:5: rule closes-after-stall needs `within`"));

    e = spec("message-fate", "60s", "vanished");
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "unknown fate \"vanished\""));

    e = spec("message-fate", "60s", NULL);
    ck_assert_int_ne(fg_expect_validate(&sc, &e, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "needs `fate`"));

    e = spec("gateway-alive", "5s", NULL);
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "takes no parameter `within`"));

    e = spec("message-fate", "timeouts.data_dun + 5s", "lost");
    ck_assert_int_ne(fg_expect_validate(&sc, &e, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "scenarios/kb/x.yaml:12:") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "data_dun") != NULL, "%s", err);

    e = spec("message-fate", "5 parsecs", "lost");
    ck_assert_int_ne(fg_expect_validate(&sc, &e, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "scenarios/kb/x.yaml:12:") != NULL, "%s", err);

    e = spec("message-fate", "2 * timeouts.retry + 250ms", "delivered");
    ck_assert_int_eq(fg_expect_validate(&sc, &e, err, sizeof err), 0);
}
END_TEST

START_TEST(horizon)
{
    struct fg_meta *m = meta_new();
    struct fg_expect_spec e[3] = {spec("closes-after-stall", "timeouts.data_done + 5s", NULL),
                                  spec("message-fate", "20s", "lost"),
                                  spec("gateway-alive", NULL, NULL)};
    struct fg_scenario sc = {0};
    sc.expects = e;
    sc.nexpects = 3;
    ck_assert_uint_eq(fg_expect_horizon_ms(&sc, m), 20000);
    e[1].within = "1s";
    ck_assert_uint_eq(fg_expect_horizon_ms(&sc, m), 9000);
    fg_meta_free(m);
}
END_TEST

START_TEST(meta_roundtrip)
{
    char path[256], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "/tmp/fg-check-expect-%ld.meta.json", (long)getpid());
    struct fg_meta *m = meta_new();
    m->seed = UINT64_MAX - 5; /* beyond a JSON integer */
    m->pcap = fg_strdup("test.pcap");
    m->profile_name = fg_strdup("refgw");
    m->gateway_version = fg_strdup("refgw 0.1");
    m->probe_start_us = BASE_US + 77;
    m->end_us = BASE_US + 99;
    m->gateway_running_at_end = 0;
    m->gateway_exit_status = 3;
    m->gateway_term_signal = 9;
    meta_decision(m, 2, "reply 354", "stall both", 501);
    meta_token(m, "tok-9");
    m->tokens[0].accepted = 1;
    m->tokens[0].reply_code = 250;
    m->tokens[0].accepted_us = BASE_US + 5;
    ck_assert_int_eq(fg_meta_write(path, m, err, sizeof err), 0);
    struct fg_meta *r = NULL;
    ck_assert_msg(fg_meta_read(path, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(r->seed, m->seed);
    ck_assert_str_eq(r->pcap, "test.pcap");
    ck_assert_str_eq(r->gateway_version, "refgw 0.1");
    ck_assert_int_eq(r->proxy_port, PROXY_PORT);
    ck_assert_uint_eq(r->probe_start_us, BASE_US + 77);
    ck_assert_int_eq(r->gateway_running_at_end, 0);
    ck_assert_int_eq(r->gateway_exit_status, 3);
    ck_assert_int_eq(r->gateway_term_signal, 9);
    ck_assert_int_eq(fg_meta_timeout(r, "data_done"), 4000);
    ck_assert_int_eq(fg_meta_timeout(r, "retry"), -1);
    ck_assert_uint_eq(r->ndecisions, 1);
    ck_assert_str_eq(r->decisions[0].trigger, "reply 354");
    ck_assert_str_eq(r->decisions[0].action, "stall both");
    ck_assert_uint_eq(r->decisions[0].conn, 2);
    ck_assert_uint_eq(r->decisions[0].t_us, BASE_US + 501000);
    ck_assert_uint_eq(r->ntokens, 1);
    ck_assert_str_eq(r->tokens[0].token, "tok-9");
    ck_assert_int_eq(r->tokens[0].reply_code, 250);
    ck_assert_int_eq(r->tokens[0].accepted, 1);
    fg_meta_free(r);
    fg_meta_free(m);

    /* Another version is refused, not guessed at. */
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"version\": 99, \"gateway_port\": 1}\n", f);
    fclose(f);
    r = NULL;
    ck_assert_int_eq(fg_meta_read(path, &r, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err, "version 99"));
    f = fopen(path, "w");
    fputs("{\"version\": 1, \"gateway_port\": \"x\"}\n", f);
    fclose(f);
    ck_assert_int_eq(fg_meta_read(path, &r, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "gateway_port"));
    unlink(path);
}
END_TEST

/* --- inbound-accepts-while-busy ------------------------------------ */

/* The outbound connection stalls at t=501 ms and is closed at t=9000; an
 * inbound connection opens at t=2000 and is greeted (or not). */
static struct fg_outcome *busy_run(const char *name, int greet, struct fg_scenario_result *res)
{
    struct tw w;
    tw_open(&w, name);
    struct tc c = stalled_conn(&w);
    struct tc in = conn_at(&w, 42001, GW_PORT, 2000); /* frames 14-16 */
    if (greet)
        say_at(&in, 1, "220 gw ESMTP\r\n", 2300); /* frame 17 */
    else
        frame_at(&in, 1, F_RST | F_ACK, NULL, 0, 2001); /* frame 17 */
    fin_at(&c, 0, 9000);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    static struct fg_expect_spec e;
    e = spec("inbound-accepts-while-busy", "1s", NULL);
    judge1(&w, m, &e, res);
    return &res->outcomes[0];
}

START_TEST(busy_pass_and_fail)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = busy_run("busy-pass", 1, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert(has_frame(o, 14) && has_frame(o, 17));
    ck_assert_ptr_nonnull(strstr(o->evidence, "greeted with 220 after 0.3 s"));
    ck_assert_ptr_nonnull(strstr(o->source, "Q131150"));
    fg_scenario_result_clear(&res);

    o = busy_run("busy-fail", 0, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert(has_frame(o, 17));
    ck_assert_ptr_nonnull(strstr(o->evidence, "refused"));
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(busy_inconc)
{
    struct tw w;
    tw_open(&w, "busy-none");
    struct tc c = stalled_conn(&w);
    fin_at(&c, 0, 9000);
    tw_close(&w);
    struct fg_meta *m = meta_new();
    meta_decision(m, 1, "reply 354", "stall", 501);
    struct fg_expect_spec e = spec("inbound-accepts-while-busy", "1s", NULL);
    struct fg_scenario_result res;
    judge1(&w, m, &e, &res);
    ck_assert_int_eq(res.outcomes[0].verdict, FG_V_INCONC);
    ck_assert_ptr_nonnull(strstr(res.outcomes[0].summary, "no inbound connection"));
    fg_scenario_result_clear(&res);
}
END_TEST

/* --- retries-after-drop ------------------------------------------------ */

static struct fg_outcome *retry_run(const char *name, int retry_ms, const char *verb,
                                    uint64_t end_ms, struct fg_scenario_result *res)
{
    struct tw w;
    tw_open(&w, name);
    struct tc c = conn_at(&w, 41001, PROXY_PORT, 100);
    say_at(&c, 1, "220 proxy ESMTP\r\n", 110); /* frame 4 */
    say_at(&c, 0, "EHLO gw.test\r\n", 120);    /* frame 5 */
    fin_at(&c, 1, 121);                        /* frame 6 */
    fin_at(&c, 0, 122);                        /* frame 7 */
    if (retry_ms >= 0) {
        struct tc d = conn_at(&w, 41002, PROXY_PORT, (uint64_t)retry_ms); /* frames 8-10 */
        say_at(&d, 1, "220 proxy ESMTP\r\n", (uint64_t)retry_ms + 10);    /* frame 11 */
        char line[64];
        snprintf(line, sizeof line, "%s gw.test\r\n", verb);
        say_at(&d, 0, line, (uint64_t)retry_ms + 20); /* frame 12 */
        say_at(&d, 1, "250 proxy\r\n", (uint64_t)retry_ms + 30);
    }
    struct tc x = conn_at(&w, 42001, GW_PORT, end_ms); /* the trace goes on to end_ms */
    (void)x;
    tw_close(&w);
    struct fg_meta *m = meta_new();
    static struct fg_expect_spec e;
    e = spec("retries-after-drop", "5s", NULL);
    judge1(&w, m, &e, res);
    return &res->outcomes[0];
}

START_TEST(retry_rule)
{
    struct fg_scenario_result res;
    struct fg_outcome *o = retry_run("retry-helo", 2121, "HELO", 3000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s", o->summary, o->evidence);
    ck_assert(has_frame(o, 5) && has_frame(o, 6) && has_frame(o, 8) && has_frame(o, 12));
    ck_assert_ptr_nonnull(strstr(o->summary, "with HELO"));
    ck_assert_ptr_nonnull(strstr(o->evidence, "after 2.0 s"));
    fg_scenario_result_clear(&res);

    o = retry_run("retry-late", 8121, "EHLO", 9000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->evidence, "used EHLO"));
    fg_scenario_result_clear(&res);

    o = retry_run("retry-never", -1, NULL, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s: %s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "did not connect again"));
    fg_scenario_result_clear(&res);

    o = retry_run("retry-short", -1, NULL, 1000, &res);
    ck_assert_int_eq(o->verdict, FG_V_INCONC);
    fg_scenario_result_clear(&res);
}
END_TEST

START_TEST(meta_optional_fields)
{
    char dir[] = "/tmp/fgmeta-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/m.meta.json", dir);
    struct fg_meta *m = meta_new();
    m->x400_port = 10102;
    m->ledger = fg_strdup("ledger.jsonl");
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_meta_write(path, m, err, sizeof err), 0);
    struct fg_meta *r = NULL;
    ck_assert_int_eq(fg_meta_read(path, &r, err, sizeof err), 0);
    ck_assert_int_eq(r->x400_port, 10102);
    ck_assert_str_eq(r->ledger, "ledger.jsonl");
    fg_meta_free(r);
    fg_meta_free(m);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* --- the conformance catalog ------------------------------------------- */

/* One outbound session from a script: "C:text" from the gateway (client),
 * "S:text" from the proxy, "c:" / "s:" a FIN from that side; lines 10 ms
 * apart from t=100 ms unless "@ms " leads the text.  The trace goes on
 * to end_ms (an inbound connection opened then). */
static struct fg_outcome *conf_run(const char *name, const char *const *script,
                                   struct fg_expect_spec *e, uint64_t end_ms,
                                   struct fg_scenario_result *res)
{
    struct tw w;
    tw_open(&w, name);
    struct tc c = conn_at(&w, 41001, PROXY_PORT, 100);
    uint16_t port = 41001;
    uint64_t t = 100;
    for (size_t i = 0; script[i]; i++) {
        const char *l = script[i];
        int from = (l[0] == 'C' || l[0] == 'c') ? 0 : 1;
        const char *text = l + 2;
        t += 10;
        if (text[0] == '@') {
            t = strtoull(text + 1, (char **)&text, 10);
            text++;
        }
        if (l[0] == 'N') { /* a new outbound connection */
            c = conn_at(&w, ++port, PROXY_PORT, t);
            continue;
        }
        if (l[0] == 'c' || l[0] == 's')
            fin_at(&c, from, t);
        else
            say_at(&c, from, text, t);
    }
    struct tc x = conn_at(&w, 42001, GW_PORT, end_ms);
    (void)x;
    tw_close(&w);
    struct fg_meta *m = meta_new();
    judge1(&w, m, e, res);
    return &res->outcomes[0];
}

#define HELLO "S:220 proxy ESMTP\r\n", "C:EHLO gw.test\r\n", "S:250 proxy\r\n"
#define TXN(body)                                                                                  \
    "C:MAIL FROM:<a@company1.test>\r\n", "S:250 ok\r\n", "C:RCPT TO:<b@company2.test>\r\n",        \
        "S:250 ok\r\n", "C:DATA\r\n", "S:354 go\r\n", "C:" body ".\r\n", "S:250 done\r\n"

static void conf_expect(const char *name, const char *rule, const char *const *script,
                        enum fg_verdict want, uint64_t frame, const char *text)
{
    struct fg_scenario_result res;
    struct fg_expect_spec e = spec(rule, NULL, NULL);
    struct fg_outcome *o = conf_run(name, script, &e, 20000, &res);
    ck_assert_msg(o->verdict == want, "%s: %s: %s\n%s", name, fg_verdict_name(o->verdict),
                  o->summary, o->evidence);
    if (frame)
        ck_assert_msg(has_frame(o, frame), "%s: frame %llu not in the evidence: %s", name,
                      (unsigned long long)frame, o->evidence);
    if (text)
        ck_assert_msg(strstr(o->summary, text) || strstr(o->evidence, text), "%s: no \"%s\" in %s",
                      name, text, o->evidence);
    fg_scenario_result_clear(&res);
}

START_TEST(conf_crlf_length_dots)
{
    const char *good[] = {HELLO,        TXN("Subject: x\r\n\r\n..dot line\r\nhello\r\n"),
                          "C:QUIT\r\n", "S:221 bye\r\n",
                          "c:",         NULL};
    conf_expect("crlf-pass", "crlf-only", good, FG_V_PASS, 0, NULL);
    conf_expect("len-pass", "line-length", good, FG_V_PASS, 0, NULL);
    conf_expect("dots-pass", "dot-stuffing", good, FG_V_PASS, 0, NULL);
    conf_expect("quit-pass", "quit-at-end", good, FG_V_PASS, 0, NULL);
    conf_expect("nested-pass", "no-nested-mail", good, FG_V_PASS, 0, NULL);
    conf_expect("d354-pass", "no-data-without-354", good, FG_V_PASS, 0, NULL);
    conf_expect("pipe-pass", "pipelining-only-if-advertised", good, FG_V_PASS, 0, NULL);
    /* frame 4 greeting, 5 EHLO, ... 13 the body (handshake 3 + 9) */
    const char *barelf[] = {HELLO, TXN("Subject: x\nhello\r\n"), NULL};
    conf_expect("crlf-fail", "crlf-only", barelf, FG_V_FAIL, 13, "bare LF");
    const char *unstuffed[] = {HELLO, TXN("Subject: x\r\n\r\n.hidden\r\n"), NULL};
    conf_expect("dots-fail", "dot-stuffing", unstuffed, FG_V_FAIL, 13, "single '.'");
    static char longline[1200];
    memset(longline, 'x', sizeof longline - 1);
    memcpy(longline, "C:", 2);
    memcpy(longline + sizeof longline - 5, "\r\n", 3);
    const char *longtxt[] = {HELLO,
                             "C:MAIL FROM:<a@company1.test>\r\n",
                             "S:250 ok\r\n",
                             "C:RCPT TO:<b@company2.test>\r\n",
                             "S:250 ok\r\n",
                             "C:DATA\r\n",
                             "S:354 go\r\n",
                             longline,
                             "C:.\r\n",
                             "S:250 ok\r\n",
                             NULL};
    conf_expect("len-fail", "line-length", longtxt, FG_V_FAIL, 13, "1000 octets");
    const char *noquit[] = {HELLO, TXN("hi\r\n"), "c:", NULL};
    conf_expect("quit-fail", "quit-at-end", noquit, FG_V_FAIL, 0, "without QUIT");
    /* a gap in the client's stream: undecided, never a guess */
    const char *none[] = {"S:220 proxy\r\n", NULL};
    conf_expect("quit-na", "quit-at-end", none, FG_V_INCONC, 0, "not exercised");
}
END_TEST

START_TEST(conf_session_rules)
{
    const char *fb_ok[] = {"S:220 proxy\r\n", "C:EHLO gw\r\n", "S:502 no\r\n",
                           "C:HELO gw\r\n",   "S:250 ok\r\n",  NULL};
    conf_expect("fb-pass", "ehlo-helo-fallback", fb_ok, FG_V_PASS, 0, NULL);
    const char *fb_bad[] = {"S:220 proxy\r\n", "C:EHLO gw\r\n", "S:500 what\r\n",
                            "C:MAIL FROM:<a@b>\r\n", NULL};
    conf_expect("fb-fail", "ehlo-helo-fallback", fb_bad, FG_V_FAIL, 7, "not HELO");
    const char *fb_close[] = {"S:220 proxy\r\n", "C:EHLO gw\r\n", "S:502 no\r\n", "c:", NULL};
    conf_expect("fb-close", "ehlo-helo-fallback", fb_close, FG_V_FAIL, 7, "without trying HELO");
    const char *fb_na[] = {HELLO, NULL};
    conf_expect("fb-na", "ehlo-helo-fallback", fb_na, FG_V_INCONC, 0, NULL);

    const char *d_early[] = {HELLO,
                             "C:MAIL FROM:<a@b>\r\n",
                             "S:250 ok\r\n",
                             "C:RCPT TO:<c@d>\r\n",
                             "S:250 ok\r\n",
                             "C:DATA\r\n",
                             "C:Subject: x\r\n",
                             "S:354 go\r\n",
                             NULL};
    conf_expect("d354-early", "no-data-without-354", d_early, FG_V_FAIL, 12, "before its reply");
    const char *d_refused[] = {HELLO,
                               "C:MAIL FROM:<a@b>\r\n",
                               "S:250 ok\r\n",
                               "C:RCPT TO:<c@d>\r\n",
                               "S:250 ok\r\n",
                               "C:DATA\r\n",
                               "S:554 no\r\n",
                               "C:Subject: x\r\n",
                               NULL};
    conf_expect("d354-refused", "no-data-without-354", d_refused, FG_V_FAIL, 13, "not 354");

    const char *nested[] = {
        HELLO, "C:MAIL FROM:<a@b>\r\n", "S:250 ok\r\n", "C:MAIL FROM:<c@d>\r\n", "S:503 nested\r\n",
        NULL};
    conf_expect("nested-fail", "no-nested-mail", nested, FG_V_FAIL, 9, "still open");
    const char *rset[] = {HELLO,          "C:MAIL FROM:<a@b>\r\n", "S:250 ok\r\n", "C:RSET\r\n",
                          "S:250 ok\r\n", "C:MAIL FROM:<c@d>\r\n", "S:250 ok\r\n", NULL};
    conf_expect("nested-rset", "no-nested-mail", rset, FG_V_PASS, 0, NULL);

    const char *pipe_noadv[] = {HELLO, "C:MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", "S:250 ok\r\n",
                                "S:250 ok\r\n", NULL};
    conf_expect("pipe-noadv", "pipelining-only-if-advertised", pipe_noadv, FG_V_FAIL, 7,
                "not advertised");
    const char *pipe_adv[] = {"S:220 proxy\r\n",
                              "C:EHLO gw\r\n",
                              "S:250-proxy\r\n250 PIPELINING\r\n",
                              "C:MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                              "S:250 ok\r\n",
                              "S:250 ok\r\n",
                              "S:354 go\r\n",
                              NULL};
    conf_expect("pipe-adv", "pipelining-only-if-advertised", pipe_adv, FG_V_PASS, 0, NULL);
    const char *pipe_group[] = {"S:220 proxy\r\n",
                                "C:EHLO gw\r\n",
                                "S:250-proxy\r\n250 PIPELINING\r\n",
                                "C:NOOP\r\nMAIL FROM:<a@b>\r\n",
                                "S:250 ok\r\n",
                                "S:250 ok\r\n",
                                NULL};
    conf_expect("pipe-group", "pipelining-only-if-advertised", pipe_group, FG_V_FAIL, 7,
                "must end a group");
}
END_TEST

static void conf_within(const char *name, const char *rule, const char *within,
                        const char *const *script, uint64_t end_ms, enum fg_verdict want,
                        const char *text)
{
    struct fg_scenario_result res;
    struct fg_expect_spec e = spec(rule, within, NULL);
    struct fg_outcome *o = conf_run(name, script, &e, end_ms, &res);
    ck_assert_msg(o->verdict == want, "%s: %s: %s\n%s", name, fg_verdict_name(o->verdict),
                  o->summary, o->evidence);
    if (text)
        ck_assert_msg(strstr(o->summary, text) || strstr(o->evidence, text), "%s: no \"%s\" in %s",
                      name, text, o->evidence);
    fg_scenario_result_clear(&res);
}

#define TOKTXN(from, code)                                                                         \
    "C:MAIL FROM:" from "\r\n", "S:250 ok\r\n", "C:RCPT TO:<b@company2.test>\r\n", "S:250 ok\r\n", \
        "C:DATA\r\n", "S:354 go\r\n", "C:X-Faultgate-Token: tok-1\r\n\r\nhi\r\n.\r\n",             \
        "S:" code " result\r\n", "C:QUIT\r\n", "S:221 bye\r\n", "c:"

START_TEST(conf_retry_rules)
{
    const char *r4_ok[] = {HELLO, TOKTXN("<a@b>", "451"), "N:@3000 ",
                           HELLO, TOKTXN("<a@b>", "250"), NULL};
    conf_within("r4-pass", "retry-after-4xx", "10s", r4_ok, 20000, FG_V_PASS, "tried again");
    const char *r4_bounce[] = {HELLO, TOKTXN("<a@b>", "451"), "N:@3000 ",
                               HELLO, TOKTXN("<>", "250"),    NULL};
    conf_within("r4-bounce", "retry-after-4xx", "10s", r4_bounce, 20000, FG_V_FAIL, "bounce");
    const char *r4_never[] = {HELLO, TOKTXN("<a@b>", "451"), NULL};
    conf_within("r4-never", "retry-after-4xx", "10s", r4_never, 20000, FG_V_FAIL,
                "not tried again");
    conf_within("r4-short", "retry-after-4xx", "10s", r4_never, 2000, FG_V_INCONC, NULL);

    const char *r5_ok[] = {HELLO, TOKTXN("<a@b>", "554"), "N:@3000 ",
                           HELLO, TOKTXN("<>", "250"),    NULL};
    conf_within("r5-pass", "no-retry-after-5xx", "10s", r5_ok, 20000, FG_V_PASS, "bounce");
    const char *r5_retry[] = {HELLO, TOKTXN("<a@b>", "554"), "N:@3000 ",
                              HELLO, TOKTXN("<a@b>", "250"), NULL};
    conf_within("r5-retry", "no-retry-after-5xx", "10s", r5_retry, 20000, FG_V_FAIL, "tried again");
    const char *r5_nobounce[] = {HELLO, TOKTXN("<a@b>", "554"), NULL};
    conf_within("r5-nobounce", "no-retry-after-5xx", "10s", r5_nobounce, 20000, FG_V_FAIL,
                "no bounce");

    const char *h421_ok[] = {"S:421 busy\r\n", "C:QUIT\r\n", "c:", "N:@2000 ", HELLO, NULL};
    conf_within("421-pass", "handles-421", "10s", h421_ok, 20000, FG_V_PASS, "connected again");
    const char *h421_cont[] = {"S:421 busy\r\n", "C:EHLO gw\r\n", NULL};
    conf_within("421-cont", "handles-421", "10s", h421_cont, 20000, FG_V_FAIL, "after 421");
    const char *h421_gone[] = {"S:421 busy\r\n", "c:", NULL};
    conf_within("421-gone", "handles-421", "10s", h421_gone, 20000, FG_V_FAIL,
                "did not connect again");
}
END_TEST

START_TEST(conf_timeout_at_least)
{
    /* data_done of the profile is 4 s (meta_new) */
    const char *early[] = {HELLO,          "C:MAIL FROM:<a@b>\r\n",
                           "S:250 ok\r\n", "C:RCPT TO:<c@d>\r\n",
                           "S:250 ok\r\n", "C:DATA\r\n",
                           "S:354 go\r\n", "C:hi\r\n.\r\n",
                           "c:@2300 ",     NULL};
    struct fg_scenario_result res;
    struct fg_expect_spec e = spec("timeout-at-least", NULL, NULL);
    e.stage = "data_done";
    struct fg_outcome *o = conf_run("to-early", early, &e, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "less than 4.0 s"));
    fg_scenario_result_clear(&res);

    const char *late[] = {HELLO,          "C:MAIL FROM:<a@b>\r\n",
                          "S:250 ok\r\n", "C:RCPT TO:<c@d>\r\n",
                          "S:250 ok\r\n", "C:DATA\r\n",
                          "S:354 go\r\n", "C:hi\r\n.\r\n",
                          "c:@9000 ",     NULL};
    o = conf_run("to-late", late, &e, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
    fg_scenario_result_clear(&res);

    e.min = "1s"; /* an explicit minimum */
    o = conf_run("to-min", early, &e, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
    fg_scenario_result_clear(&res);

    e.min = NULL;
    e.stage = "greeting"; /* no greeting stall in this trace */
    o = conf_run("to-na", late, &e, 20000, &res);
    ck_assert_int_eq(o->verdict, FG_V_INCONC);
    fg_scenario_result_clear(&res);

    /* the greeting never comes; the RFC's 5 min is not reached: fail */
    const char *nogreet[] = {"c:@60100 ", NULL};
    o = conf_run("to-greet", nogreet, &e, 70000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "300.0"));
    fg_scenario_result_clear(&res);
}
END_TEST

/* The BDAT and HELO paths: rules judge them, or skip with the reason where
 * they do not apply (never inconc for a healthy path). */
#define BDAT_TXN(n, body)                                                                          \
    "C:MAIL FROM:<a@company1.test>\r\n", "S:250 ok\r\n", "C:RCPT TO:<b@company2.test>\r\n",        \
        "S:250 ok\r\n", "C:BDAT " n " LAST\r\n" body
START_TEST(conf_bdat_and_helo_paths)
{
    const char *bdat[] = {HELLO,        BDAT_TXN("5", "hi\r\n."), "S:250 done\r\n",
                          "C:QUIT\r\n", "S:221 bye\r\n",          "c:",
                          NULL};
    conf_expect("bdat-dots", "dot-stuffing", bdat, FG_V_SKIP, 0, "not dot-stuffed");
    conf_expect("bdat-354", "no-data-without-354", bdat, FG_V_SKIP, 0, "no 354");
    conf_expect("bdat-crlf", "crlf-only", bdat, FG_V_PASS, 0, NULL);
    const char *helo[] = {"S:220 proxy\r\n",
                          "C:HELO gw.test\r\n",
                          "S:250 proxy\r\n",
                          TXN("hi\r\n"),
                          "C:QUIT\r\n",
                          "S:221 bye\r\n",
                          "c:",
                          NULL};
    conf_expect("helo-fallback", "ehlo-helo-fallback", helo, FG_V_SKIP, 0, "opens with HELO");

    /* timeout-at-least on the BDAT path: the wait for the reply to the
     * LAST chunk is data_done, from the chunk's last octet (4 s in
     * meta_new). */
    const char *early[] = {HELLO, BDAT_TXN("3", "hi\n"), "c:@2300 ", NULL};
    struct fg_scenario_result res;
    struct fg_expect_spec e = spec("timeout-at-least", NULL, NULL);
    e.stage = "data_done";
    struct fg_outcome *o = conf_run("bdat-to-early", early, &e, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "data_done"));
    fg_scenario_result_clear(&res);
    /* MAIL, RCPT, the LAST chunk and QUIT in one pipelined write and the
     * client's side shut at once, the replies after (Exim with PIPELINING):
     * ending the session is not giving up at mail after 0.0 s. */
    const char *quit_fin[] = {HELLO,
                              "C:MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3 LAST\r\nhi\nQUIT\r\n",
                              "c:", "S:250 ok\r\n250 ok\r\n250 done\r\n221 bye\r\n", NULL};
    e.stage = "mail";
    o = conf_run("quit-fin", quit_fin, &e, 20000, &res);
    ck_assert_msg(o->verdict != FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
    fg_scenario_result_clear(&res);
    e.stage = "data_done";
    const char *late[] = {HELLO, BDAT_TXN("3", "hi\n"), "c:@9000 ", NULL};
    o = conf_run("bdat-to-late", late, &e, 20000, &res);
    ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
    fg_scenario_result_clear(&res);
}
END_TEST

/* A stall at the end of data or the start of data finds its event on the
 * BDAT path: the LAST chunk, the first BDAT command. */
START_TEST(stall_bdat_triggers)
{
    const char *trig[] = {"end-of-data", "start-of-data", "reply-to end-of-data"};
    for (size_t i = 0; i < 3; i++) {
        struct tw w;
        tw_open(&w, "stall-bdat");
        struct tc c = conn_at(&w, 41001, PROXY_PORT, 100);
        say_at(&c, 1, "220 proxy\r\n", 110);
        say_at(&c, 0, "EHLO gw\r\n", 120);
        say_at(&c, 1, "250-proxy\r\n250 CHUNKING\r\n", 130);
        say_at(&c, 0, "MAIL FROM:<a@b>\r\n", 140);
        say_at(&c, 1, "250 ok\r\n", 150);
        say_at(&c, 0, "RCPT TO:<c@d>\r\n", 160);
        say_at(&c, 1, "250 ok\r\n", 170);
        say_at(&c, 0, "BDAT 3 LAST\r\nhi\n", 500); /* frame 11 */
        if (i == 2)
            say_at(&c, 1, "250 ok\r\n", 600); /* frame 12 */
        fin_at(&c, 0, 1500);
        tw_close(&w);
        struct fg_meta *m = meta_new();
        meta_decision(m, 1, trig[i], "stall", i == 2 ? 601 : 501);
        struct fg_expect_spec e = spec("closes-after-stall", "2s", NULL);
        struct fg_scenario_result res;
        judge1(&w, m, &e, &res);
        const struct fg_outcome *o = &res.outcomes[0];
        ck_assert_msg(o->verdict == FG_V_PASS, "%s: %s: %s", trig[i], o->summary, o->evidence);
        ck_assert_msg(has_frame(o, i == 2 ? 12 : 11), "%s: %s", trig[i], o->evidence);
        ck_assert_msg(strstr(o->evidence, "trigger event is not in the trace") == NULL, "%s: %s",
                      trig[i], o->evidence);
        fg_scenario_result_clear(&res);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("expect");
    TCase *tc = tcase_create("rules");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stall_pass);
    tcase_add_test(tc, stall_fail_never_closed);
    tcase_add_test(tc, stall_fail_late);
    tcase_add_test(tc, stall_fail_closed_at_run_end);
    tcase_add_test(tc, stall_inconc_short_trace);
    tcase_add_test(tc, stall_inconc_not_fired);
    tcase_add_test(tc, stall_eod_trigger);
    tcase_add_test(tc, fate_delivered_once);
    tcase_add_test(tc, fate_duplicated);
    tcase_add_test(tc, fate_ledger);
    tcase_add_test(tc, fate_lost_and_deferred);
    tcase_add_test(tc, fate_bounced);
    tcase_add_test(tc, fate_refused);
    tcase_add_test(tc, alive_greeting_synth);
    tcase_add_test(tc, alive_refused);
    tcase_add_test(tc, alive_died);
    tcase_add_test(tc, alive_no_probe);
    tcase_add_test(tc, judge_unreadable_trace);
    tcase_add_test(tc, judge_worst_of_many);
    tcase_add_test(tc, busy_pass_and_fail);
    tcase_add_test(tc, busy_inconc);
    tcase_add_test(tc, retry_rule);
    tcase_add_test(tc, conf_crlf_length_dots);
    tcase_add_test(tc, conf_session_rules);
    tcase_add_test(tc, conf_retry_rules);
    tcase_add_test(tc, conf_timeout_at_least);
    tcase_add_test(tc, conf_bdat_and_helo_paths);
    tcase_add_test(tc, stall_bdat_triggers);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("pure");
    tcase_set_timeout(tp, 10);
    tcase_add_test(tp, verdict_order);
    tcase_add_test(tp, validate_errors);
    tcase_add_test(tp, horizon);
    tcase_add_test(tp, meta_roundtrip);
    tcase_add_test(tp, meta_optional_fields);
    suite_add_tcase(s, tp);
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
