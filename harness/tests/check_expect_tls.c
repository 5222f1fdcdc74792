/* check_expect_tls.c - the rule tls-policy-honoured on synthetic traces: a
 * stripped STARTTLS, a 454 and a killed handshake on the outbound leg,
 * judged against each declared TLS policy (mandatory, opportunistic, none,
 * none declared); the profile key `tls_policy` and its round trip through
 * the run's metadata.
 *
 * Traces are written frame by frame with chosen timestamps (pcap_open_dead
 * + pcap_dump) and judged through fg_judge, as `faultgate judge` does.
 */
#include <check.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/profile.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"

#define BASE_US 1700000000000000ull
#define GW_PORT 2525
#define PROXY_PORT 39001
#define MTA_PORT 39002
#define TOKEN "fgt-test-0001"
#define SYNTHPCAP_TAG "tls"
#include "synthpcap.h"

/* --- the outbound sessions ------------------------------------------------ */

enum how { OFFERED, STRIPPED, REFUSED, KILLED };

/* Greeting, EHLO and what STARTTLS meets.  Returns 1 when the session
 * goes on in clear (stripped or refused), 0 when it ended (killed) or is
 * inside TLS (offered: a handshake in opaque records, then FINs). */
static int opening(struct tc *c, enum how how)
{
    say(c, 1, "220 proxy ESMTP\r\n");
    say(c, 0, "EHLO gw.test\r\n");
    if (how == STRIPPED) {
        say(c, 1, "250-proxy\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        return 1;
    }
    say(c, 1, "250-proxy\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    say(c, 0, "STARTTLS\r\n");
    if (how == REFUSED) {
        say(c, 1, "454 4.7.0 TLS not available\r\n");
        return 1;
    }
    say(c, 1, "220 2.0.0 go ahead\r\n");
    /* A ClientHello's record header and a little of it. */
    sayn(c, 0, "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10);
    if (how == KILLED) {
        rst(c, 1);
        return 0;
    }
    sayn(c, 1, "\x16\x03\x03\x00\x05\x02\x00\x00\x01\x00", 10);
    sayn(c, 0, "\x17\x03\x03\x00\x03\x01\x02\x03", 8);
    sayn(c, 1, "\x17\x03\x03\x00\x03\x01\x02\x03", 8);
    fin(c, 0);
    fin(c, 1);
    return 0;
}

/* The transaction in clear, accepted (250) or not (451). */
static void plain_txn(struct tc *c, int accepted)
{
    say(c, 0, "MAIL FROM:<user1@company1.test>\r\n");
    say(c, 1, "250 ok\r\n");
    say(c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(c, 1, "250 ok\r\n");
    say(c, 0, "DATA\r\n");
    say(c, 1, "354 go\r\n");
    say(c, 0, "X-Faultgate-Token: " TOKEN "\r\n\r\nbody\r\n.\r\n");
    say(c, 1, accepted ? "250 queued\r\n" : "451 try later\r\n");
}

static void quit(struct tc *c)
{
    say(c, 0, "QUIT\r\n");
    say(c, 1, "221 bye\r\n");
    fin(c, 0);
    fin(c, 1);
}

/* --- judging -------------------------------------------------------------- */

static struct fg_meta *meta_new(int policy, int client)
{
    struct fg_meta *m = fg_calloc(1, sizeof *m);
    m->scenario_id = fg_strdup("test");
    m->capture_mode = fg_strdup("synth");
    m->gateway_port = GW_PORT;
    m->proxy_port = PROXY_PORT;
    m->mta_port = MTA_PORT;
    m->gateway_running_at_end = 1;
    m->start_us = BASE_US;
    m->tls_policy = policy;
    m->tokens = fg_calloc(1, sizeof *m->tokens);
    m->ntokens = 1;
    snprintf(m->tokens[0].token, sizeof m->tokens[0].token, "%s", TOKEN);
    if (client) { /* a client profile: one run of its command */
        m->clients = fg_calloc(1, sizeof *m->clients);
        m->nclients = 1;
        snprintf(m->clients[0].token, sizeof m->clients[0].token, "%s", TOKEN);
        m->clients[0].exit_status = 1;
        m->clients[0].spawned = 1;
    }
    return m;
}

/* Judge tls-policy-honoured (within: NULL for none); returns the verdict,
 * copies summary and evidence into *text (caller frees). */
static enum fg_verdict judge(struct tw *w, int policy, int client, const char *within, char **text)
{
    struct fg_expect_spec e = {0};
    e.rule = "tls-policy-honoured";
    e.within = (char *)within;
    e.line = 10, e.col = 5;
    struct fg_msg_spec ms = {0};
    ms.from = "user1@company1.test";
    ms.count = 1;
    struct fg_scenario sc = {0};
    sc.path = "scenarios/security/test.yaml";
    sc.id = "test";
    sc.title = "test";
    sc.leg = FG_LEG_OUTBOUND;
    sc.msgs = &ms;
    sc.nmsgs = 1;
    sc.expects = &e;
    sc.nexpects = 1;
    struct fg_scenario_result res;
    fg_judge(&sc, meta_new(policy, client), w->path, &res);
    ck_assert_msg(res.tl != NULL, "timeline: %s", res.error ? res.error : "?");
    ck_assert_uint_eq(res.noutcomes, 1);
    enum fg_verdict v = res.outcomes[0].verdict;
    *text = fg_asprintf("%s\n%s", res.outcomes[0].summary ? res.outcomes[0].summary : "",
                        res.outcomes[0].evidence ? res.outcomes[0].evidence : "");
    if (getenv("FG_TEST_VERBOSE"))
        fprintf(stderr, "[%s] %s\n", fg_verdict_name(v), *text);
    fg_scenario_result_clear(&res);
    return v;
}

/* One scenario shape: the first connection meets `how`; then `plain` says
 * whether the client sends the transaction in clear on it (stripped,
 * refused) or on a second connection (killed), accepted or not. */
enum next { DEFER, PLAIN_SAME, PLAIN_NEW, REFUSED_TXN };

static void write_trace(struct tw *w, const char *name, enum how how, enum next next,
                        uint64_t gap_ms)
{
    tw_open(w, name);
    struct tc c = conn_open(w, 41000, PROXY_PORT);
    int open = opening(&c, how);
    if (open && (next == PLAIN_SAME || next == REFUSED_TXN)) {
        plain_txn(&c, next == PLAIN_SAME);
        quit(&c);
    } else if (open) {
        quit(&c);
    }
    if (next == PLAIN_NEW) {
        w->t_ms += gap_ms;
        struct tc d = conn_open(w, 41001, PROXY_PORT);
        say(&d, 1, "220 proxy ESMTP\r\n");
        say(&d, 0, "EHLO gw.test\r\n");
        say(&d, 1, "250-proxy\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
        plain_txn(&d, 1);
        quit(&d);
    }
    tw_close(w);
}

static enum fg_verdict run(enum how how, enum next next, int policy, int client, const char *within,
                           uint64_t gap_ms, char **text)
{
    struct tw w;
    write_trace(&w, "t", how, next, gap_ms);
    enum fg_verdict v = judge(&w, policy, client, within, text);
    unlink(w.path);
    return v;
}

#define EXPECT(v, want, text, needle)                                                              \
    do {                                                                                           \
        ck_assert_msg((v) == (want), "verdict %s, wanted %s: %s", fg_verdict_name(v),              \
                      fg_verdict_name(want), text);                                                \
        ck_assert_msg(strstr(text, needle), "'%s' lacks '%s'", text, needle);                      \
        free(text);                                                                                \
    } while (0)

START_TEST(mandatory_defers_passes)
{
    char *t;
    enum fg_verdict v = run(STRIPPED, DEFER, FG_TLS_POLICY_MANDATORY, 0, NULL, 0, &t);
    EXPECT(v, FG_V_PASS, t, "STARTTLS not offered (EHLO reply, frame 6)");
    v = run(REFUSED, DEFER, FG_TLS_POLICY_MANDATORY, 0, NULL, 0, &t);
    EXPECT(v, FG_V_PASS, t, "STARTTLS refused with 454 (frame 8)");
    v = run(KILLED, DEFER, FG_TLS_POLICY_MANDATORY, 1, NULL, 0, &t);
    EXPECT(v, FG_V_PASS, t, "handshake failed after the 220 (connection reset, frame 10)");
}
END_TEST

START_TEST(mandatory_plaintext_fails)
{
    char *t;
    /* Stripped: MAIL (frame 7) in clear right after the EHLO reply (6). */
    enum fg_verdict v = run(STRIPPED, PLAIN_SAME, FG_TLS_POLICY_MANDATORY, 0, NULL, 0, &t);
    EXPECT(v, FG_V_FAIL, t,
           "\"MAIL FROM:<user1@company1.test>\" in clear (frame 7) after conn #1: "
           "STARTTLS not offered (EHLO reply, frame 6)");
    /* Refused, even when the server then refuses the message. */
    v = run(REFUSED, REFUSED_TXN, FG_TLS_POLICY_MANDATORY, 0, NULL, 0, &t);
    EXPECT(v, FG_V_FAIL, t, "in clear (frame 9) after conn #1: STARTTLS refused with 454");
    /* Killed, then a new connection in clear with STARTTLS offered. */
    v = run(KILLED, PLAIN_NEW, FG_TLS_POLICY_MANDATORY, 0, NULL, 10, &t);
    EXPECT(v, FG_V_FAIL, t, "conn #2 sent \"MAIL FROM:<user1@company1.test>\" in clear");
}
END_TEST

START_TEST(opportunistic_verdicts)
{
    char *t;
    enum fg_verdict v = run(STRIPPED, PLAIN_SAME, FG_TLS_POLICY_OPPORTUNISTIC, 0, NULL, 0, &t);
    EXPECT(v, FG_V_PASS, t, "accepted in clear on conn #1");
    v = run(REFUSED, PLAIN_SAME, FG_TLS_POLICY_OPPORTUNISTIC, 1, "5s", 0, &t);
    EXPECT(v, FG_V_PASS, t, "STARTTLS refused with 454");
    /* A 454 taken as final: never delivered. */
    v = run(REFUSED, DEFER, FG_TLS_POLICY_OPPORTUNISTIC, 1, NULL, 0, &t);
    EXPECT(v, FG_V_FAIL, t, "never delivered");
    /* Refused and the message refused too (451): not delivered. */
    v = run(REFUSED, REFUSED_TXN, FG_TLS_POLICY_OPPORTUNISTIC, 0, NULL, 0, &t);
    EXPECT(v, FG_V_FAIL, t, "never delivered");
    /* Killed: a relay retries in clear on a new connection, in time... */
    v = run(KILLED, PLAIN_NEW, FG_TLS_POLICY_OPPORTUNISTIC, 0, "5s", 2000, &t);
    EXPECT(v, FG_V_PASS, t, "accepted in clear on conn #2");
    /* ... or too late for `within`. */
    v = run(KILLED, PLAIN_NEW, FG_TLS_POLICY_OPPORTUNISTIC, 0, "1s", 2000, &t);
    EXPECT(v, FG_V_FAIL, t, "beyond within (1.0 s)");
    /* A relay that never retries fails; a one-shot client is undecided. */
    v = run(KILLED, DEFER, FG_TLS_POLICY_OPPORTUNISTIC, 0, NULL, 0, &t);
    EXPECT(v, FG_V_FAIL, t, "never delivered");
    v = run(KILLED, DEFER, FG_TLS_POLICY_OPPORTUNISTIC, 1, NULL, 0, &t);
    EXPECT(v, FG_V_INCONC, t, "cannot retry");
}
END_TEST

START_TEST(no_policy_and_not_exercised)
{
    char *t;
    enum fg_verdict v = run(STRIPPED, PLAIN_SAME, FG_TLS_POLICY_UNKNOWN, 0, NULL, 0, &t);
    EXPECT(v, FG_V_INCONC, t, "declares no TLS policy");
    v = run(STRIPPED, PLAIN_SAME, FG_TLS_POLICY_NONE, 0, NULL, 0, &t);
    EXPECT(v, FG_V_INCONC, t, "tls_policy: none");
    /* TLS offered, accepted and through its handshake: nothing to judge. */
    v = run(OFFERED, DEFER, FG_TLS_POLICY_MANDATORY, 0, NULL, 0, &t);
    EXPECT(v, FG_V_INCONC, t, "not exercised");
    v = run(OFFERED, DEFER, FG_TLS_POLICY_OPPORTUNISTIC, 0, NULL, 0, &t);
    EXPECT(v, FG_V_INCONC, t, "conn #1 127.0.0.1:41000 -> 127.0.0.1:39001: TLS (not read)");
}
END_TEST

/* The profile key and the metadata field. */
static int load_profile_text(const char *text, struct fg_profile **p, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/fg-check-tls-%ld.yaml", (long)getpid());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    int rc = fg_profile_load(path, p, err, errlen);
    unlink(path);
    return rc;
}

START_TEST(profile_and_meta)
{
    char err[512];
    struct fg_profile *p = NULL;
    ck_assert_int_eq(load_profile_text("name: c\nsubmit: {command: [true]}\n", &p, err, sizeof err),
                     0);
    ck_assert_int_eq(p->tls_policy, FG_TLS_POLICY_UNKNOWN);
    fg_profile_free(p);
    static const char *const names[] = {"none", "opportunistic", "mandatory"};
    for (int i = 0; i < 3; i++) {
        char text[128];
        snprintf(text, sizeof text, "name: c\nsubmit: {command: [true]}\ntls_policy: %s\n",
                 names[i]);
        ck_assert_int_eq(load_profile_text(text, &p, err, sizeof err), 0);
        ck_assert_int_eq(p->tls_policy, fg_tls_policy_parse(names[i]));
        ck_assert_str_eq(fg_tls_policy_name(p->tls_policy), names[i]);
        fg_profile_free(p);
    }
    int rc = load_profile_text("name: c\nsubmit: {command: [true]}\ntls_policy: required\n", &p,
                               err, sizeof err);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, ":3:13: 'tls_policy' is none, opportunistic or mandatory"), "%s",
                  err);

    /* Written, read back; absent means unknown; a bad value is refused. */
    char path[128];
    snprintf(path, sizeof path, "/tmp/fg-check-tls-%ld.meta.json", (long)getpid());
    for (int pol = FG_TLS_POLICY_UNKNOWN; pol <= FG_TLS_POLICY_MANDATORY; pol++) {
        struct fg_meta *m = meta_new(pol, 0), *back = NULL;
        ck_assert_int_eq(fg_meta_write(path, m, err, sizeof err), 0);
        ck_assert_int_eq(fg_meta_read(path, &back, err, sizeof err), 0);
        ck_assert_int_eq(back->tls_policy, pol);
        fg_meta_free(m);
        fg_meta_free(back);
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"version\": 1, \"scenario_id\": \"t\", \"seed\": 1, \"tls_policy\": \"strict\"}", f);
    fclose(f);
    struct fg_meta *back = NULL;
    ck_assert_int_lt(fg_meta_read(path, &back, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "tls_policy"), "%s", err);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("expect_tls");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, mandatory_defers_passes);
    tcase_add_test(tc, mandatory_plaintext_fails);
    tcase_add_test(tc, opportunistic_verdicts);
    tcase_add_test(tc, no_policy_and_not_exercised);
    tcase_add_test(tc, profile_and_meta);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
