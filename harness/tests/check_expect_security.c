/* check_expect_security.c - the inbound security rules (no-smuggled-message,
 * early-commands-handled, starttls-no-injected-commands) on synthetic
 * traces, the `smuggle` and `starttls_inject` value parsers, and the
 * scenario keys `smuggle`, `smuggle_from`, `desync` and `starttls_inject`
 * with their file:line:col errors.
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
#include "faultgate/expect_security.h"
#include "faultgate/injector.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"

#define BASE_US 1700000000000000ull
#define GW_PORT 2525
#define PROXY_PORT 39001
#define MTA_PORT 39002
#define TOKEN "fgt-test-0001"
#define SYNTHPCAP_TAG "sec"
#include "synthpcap.h"

/* --- scenarios and judging ------------------------------------------------ */

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
    m->tokens = fg_calloc(1, sizeof *m->tokens);
    m->ntokens = 1;
    snprintf(m->tokens[0].token, sizeof m->tokens[0].token, "%s", TOKEN);
    return m;
}

/* Judge `rule` for a scenario with one message spec ms; returns the verdict
 * and copies the evidence (caller frees). */
static enum fg_verdict judge(struct tw *w, const char *rule, struct fg_msg_spec *ms,
                             char **evidence)
{
    struct fg_expect_spec e = {0};
    e.rule = (char *)rule;
    e.line = 10, e.col = 5;
    struct fg_scenario sc = {0};
    sc.path = "scenarios/security/test.yaml";
    sc.id = "test";
    sc.title = "test";
    sc.leg = FG_LEG_INBOUND;
    sc.msgs = ms;
    sc.nmsgs = 1;
    sc.expects = &e;
    sc.nexpects = 1;
    struct fg_scenario_result res;
    fg_judge(&sc, meta_new(), w->path, &res);
    ck_assert_msg(res.tl != NULL, "timeline: %s", res.error ? res.error : "?");
    ck_assert_uint_eq(res.noutcomes, 1);
    enum fg_verdict v = res.outcomes[0].verdict;
    *evidence = fg_strdup(res.outcomes[0].evidence ? res.outcomes[0].evidence : "");
    if (getenv("FG_TEST_VERBOSE"))
        fprintf(stderr, "[%s] %s\n  %s\n", fg_verdict_name(v), res.outcomes[0].summary, *evidence);
    fg_scenario_result_clear(&res);
    unlink(w->path);
    return v;
}

static struct fg_msg_spec smuggle_spec(const char *variant)
{
    struct fg_msg_spec ms = {0};
    ms.from = "user1@company1.test";
    ms.count = 1;
    char err[256];
    int col;
    ck_assert_int_eq(fg_smuggle_parse(variant, &ms.smuggle, &ms.smuggle_len, &ms.smuggle_name, err,
                                      sizeof err, &col),
                     0);
    ms.smuggle_from = fg_strdup("smuggled@company1.test");
    return ms;
}

static void spec_free(struct fg_msg_spec *ms)
{
    free(ms->smuggle);
    free(ms->smuggle_name);
    free(ms->smuggle_from);
}

/* The inbound leg up to the 354, then the payload: the carrier's text,
 * the sequence, the smuggled transaction and CRLF.CRLF, in one segment. */
static struct tc inbound_payload(struct tw *w, const struct fg_msg_spec *ms)
{
    struct tc c = conn_open(w, 40001, GW_PORT);
    say(&c, 1, "220 gw ESMTP\r\n");
    say(&c, 0, "EHLO injector\r\n");
    say(&c, 1, "250 gw\r\n");
    say(&c, 0, "MAIL FROM:<user1@company1.test>\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "DATA\r\n");
    say(&c, 1, "354 go\r\n");
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof buf,
                                "Subject: carrier\r\nX-Faultgate-Token: " TOKEN "\r\n\r\nhello");
    memcpy(buf + n, ms->smuggle, ms->smuggle_len);
    n += ms->smuggle_len;
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "MAIL FROM:<smuggled@company1.test>\r\nRCPT TO:<user2@company2.test>"
                          "\r\nDATA\r\nX-Faultgate-Token: " TOKEN FG_INJ_SMUGGLED_SUFFIX
                          "\r\n\r\nsmuggled\r\n.\r\n");
    sayn(&c, 0, buf, n);
    return c;
}

/* One message relayed on the outbound leg. */
static void outbound(struct tw *w, uint16_t cport, const char *from, const char *token)
{
    struct tc c = conn_open(w, cport, PROXY_PORT);
    char line[256];
    say(&c, 1, "220 proxy\r\n");
    say(&c, 0, "EHLO gw\r\n");
    say(&c, 1, "250 proxy\r\n");
    snprintf(line, sizeof line, "MAIL FROM:<%s>\r\n", from);
    say(&c, 0, line);
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "DATA\r\n");
    say(&c, 1, "354 go\r\n");
    snprintf(line, sizeof line, "X-Faultgate-Token: %s\r\n\r\nbody\r\n.\r\n", token);
    say(&c, 0, line);
    say(&c, 1, "250 queued\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 bye\r\n");
    fin(&c, 0);
    fin(&c, 1);
}

/* --- the variants ----------------------------------------------------------- */

START_TEST(smuggle_parse)
{
    char *seq, *name, err[256];
    size_t len;
    int col;
    size_t nv = 0;
    for (const struct fg_smuggle_variant *v = fg_smuggle_variants; v->name; v++, nv++) {
        ck_assert_int_eq(fg_smuggle_parse(v->name, &seq, &len, &name, err, sizeof err, &col), 0);
        ck_assert_uint_eq(len, v->len);
        ck_assert_mem_eq(seq, v->seq, len);
        ck_assert_str_eq(name, v->name);
        /* none is the standard end of data, each has a dot */
        ck_assert(!(len == 5 && memcmp(seq, "\r\n.\r\n", 5) == 0));
        ck_assert_ptr_nonnull(memchr(seq, '.', len));
        /* the description reads back to the same octets */
        char d[64], *seq2, *name2;
        size_t len2;
        fg_smuggle_describe(seq, len, d, sizeof d);
        ck_assert_int_eq(fg_smuggle_parse(d, &seq2, &len2, &name2, err, sizeof err, &col), 0);
        ck_assert_uint_eq(len2, len);
        ck_assert_mem_eq(seq2, seq, len);
        ck_assert_str_eq(name2, "custom");
        free(seq), free(name), free(seq2), free(name2);
    }
    ck_assert_uint_eq(nv, 12);
    /* the NUL of nullbefore survives */
    ck_assert_int_eq(
        fg_smuggle_parse("\\r\\n\\x00.\\r\\n", &seq, &len, &name, err, sizeof err, &col), 0);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(seq[2], 0);
    free(seq), free(name);
    /* errors, with the column of the bad escape */
    ck_assert_int_eq(fg_smuggle_parse("lflff", &seq, &len, &name, err, sizeof err, &col),
                     FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "unknown variant 'lflff'"));
    ck_assert_ptr_nonnull(strstr(err, "crcrlf-dot-crcrlf"));
    ck_assert_int_eq(fg_smuggle_parse("\\r\\q.", &seq, &len, &name, err, sizeof err, &col),
                     FG_EINPUT);
    ck_assert_int_eq(col, 3);
    ck_assert_int_eq(fg_smuggle_parse("\\n.\\x4", &seq, &len, &name, err, sizeof err, &col),
                     FG_EINPUT);
    ck_assert_int_eq(col, 4);
    ck_assert_int_eq(fg_smuggle_parse("\\r\\n.\\r\\n", &seq, &len, &name, err, sizeof err, &col),
                     FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "standard end of data"));
}
END_TEST

/* --- no-smuggled-message ------------------------------------------------------ */

START_TEST(smuggle_pass_one_message)
{
    struct tw w;
    tw_open(&w, "sm-pass");
    struct fg_msg_spec ms = smuggle_spec("lflf");
    struct tc c = inbound_payload(&w, &ms);
    say(&c, 1, "250 queued as 1\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 bye\r\n");
    fin(&c, 1);
    fin(&c, 0);
    outbound(&w, 41001, "user1@company1.test", TOKEN);
    tw_close(&w);
    char *ev;
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &ms, &ev), FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(ev, "stayed inside its text"));
    ck_assert_ptr_nonnull(strstr(ev, "lflf (\\n.\\n)"));
    free(ev);
    spec_free(&ms);
}
END_TEST

START_TEST(smuggle_fail_inbound)
{
    struct tw w;
    tw_open(&w, "sm-fail");
    struct fg_msg_spec ms = smuggle_spec("nullbefore");
    struct tc c = inbound_payload(&w, &ms);
    /* frames: 3 handshake + 9 + payload = 13; the replies 14..18 */
    say(&c, 1, "250 queued as 1\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 1, "354 go\r\n");
    say(&c, 1, "250 queued as 2\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 bye\r\n");
    fin(&c, 1);
    fin(&c, 0);
    tw_close(&w);
    char *ev;
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &ms, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "5 positive replies"));
    ck_assert_ptr_nonnull(strstr(ev, "nullbefore (\\r\\n\\x00.\\r\\n)"));
    ck_assert_ptr_nonnull(strstr(ev, "first extra reply at frame 15"));
    ck_assert_ptr_nonnull(strstr(ev, "354 to the smuggled DATA at frame 17"));
    free(ev);
    spec_free(&ms);
}
END_TEST

START_TEST(smuggle_fail_outbound_only)
{
    /* One reply inbound, but the gateway relays a message from the
     * smuggled sender: it split the text after answering. */
    struct tw w;
    tw_open(&w, "sm-out");
    struct fg_msg_spec ms = smuggle_spec("crlfcr");
    struct tc c = inbound_payload(&w, &ms);
    say(&c, 1, "250 queued as 1\r\n");
    fin(&c, 1);
    fin(&c, 0);
    outbound(&w, 41001, "user1@company1.test", TOKEN);
    outbound(&w, 41002, "smuggled@company1.test", "none-here");
    tw_close(&w);
    char *ev;
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &ms, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "relayed on outbound connection #3"));
    ck_assert_ptr_nonnull(strstr(ev, "MAIL FROM:<smuggled@company1.test>"));
    free(ev);
    spec_free(&ms);
}
END_TEST

START_TEST(smuggle_refused_and_inconc)
{
    struct tw w;
    tw_open(&w, "sm-ref");
    struct fg_msg_spec ms = smuggle_spec("crcr");
    struct tc c = inbound_payload(&w, &ms);
    say(&c, 1, "550 5.5.2 bare CR received\r\n");
    fin(&c, 1);
    fin(&c, 0);
    tw_close(&w);
    char *ev;
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &ms, &ev), FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(ev, "refused as a whole"));
    free(ev);
    /* refused at DATA: no text to judge */
    tw_open(&w, "sm-inc");
    struct tc d = conn_open(&w, 40002, GW_PORT);
    say(&d, 1, "220 gw\r\n");
    say(&d, 0, "EHLO injector\r\n");
    say(&d, 1, "250 gw\r\n");
    say(&d, 0, "MAIL FROM:<user1@company1.test>\r\n");
    say(&d, 1, "550 no\r\n");
    tw_close(&w);
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &ms, &ev), FG_V_INCONC);
    ck_assert_ptr_nonnull(strstr(ev, "nothing to judge"));
    free(ev);
    /* no smuggling message in the scenario at all */
    tw_open(&w, "sm-none");
    struct tc e = conn_open(&w, 40003, GW_PORT);
    say(&e, 1, "220 gw\r\n");
    tw_close(&w);
    struct fg_msg_spec plain = {.from = "a@b.test", .count = 1};
    ck_assert_int_eq(judge(&w, "no-smuggled-message", &plain, &ev), FG_V_INCONC);
    free(ev);
    spec_free(&ms);
}
END_TEST

/* --- early-commands-handled ---------------------------------------------------- */

static enum fg_verdict early(const char *name, unsigned flags, const char *const *lines, char **ev)
{
    struct tw w;
    tw_open(&w, name);
    struct tc c = conn_open(&w, 40010, GW_PORT);
    for (size_t i = 0; lines[i]; i++) {
        int from = lines[i][0] == 'S' || lines[i][0] == 's';
        if (lines[i][0] == 'c' || lines[i][0] == 's')
            fin(&c, from);
        else
            say(&c, from, lines[i] + 2);
    }
    tw_close(&w);
    struct fg_msg_spec ms = {.from = "user1@company1.test", .count = 1, .flags = flags};
    return judge(&w, "early-commands-handled", &ms, ev);
}

START_TEST(early_before_greeting)
{
    char *ev;
    const char *inorder[] = {"C:EHLO injector\r\n", "S:220 gw ESMTP\r\n", "S:250 gw\r\n",
                             "C:QUIT\r\n",          "S:221 bye\r\n",      NULL};
    ck_assert_int_eq(early("eg-pass", FG_INJ_EARLY_GREETING, inorder, &ev), FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(ev, "EHLO sent before the greeting (frame 4"));
    ck_assert_ptr_nonnull(strstr(ev, "greeting 220 first (frame 5)"));
    free(ev);
    /* frames: 3 handshake, EHLO 4, the 250 at 5 */
    const char *early250[] = {"C:EHLO injector\r\n", "S:250 gw\r\n", "S:220 gw ESMTP\r\n", NULL};
    ck_assert_int_eq(early("eg-fail", FG_INJ_EARLY_GREETING, early250, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "first reply (frame 5"));
    ck_assert_ptr_nonnull(strstr(ev, "is 250, not a greeting"));
    free(ev);
    /* refused: 554 greeting, then 503 to everything (RFC 5321 §3.1) */
    const char *refused[] = {"C:EHLO injector\r\n", "S:554 go away\r\n", "S:503 bad sequence\r\n",
                             NULL};
    ck_assert_int_eq(early("eg-554", FG_INJ_EARLY_GREETING, refused, &ev), FG_V_PASS);
    free(ev);
    /* no reply and the client gives up: input lost */
    const char *lost[] = {"C:EHLO injector\r\n", "c:", NULL};
    ck_assert_int_eq(early("eg-lost", FG_INJ_EARLY_GREETING, lost, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "never answered"));
    free(ev);
    /* the greeting won the race on the wire: still judged, in step */
    const char *race[] = {"S:220 gw ESMTP\r\n", "C:EHLO injector\r\n",
                          "S:250 gw\r\n",       "C:MAIL FROM:<a@b>\r\n",
                          "S:250 ok\r\n",       "C:RCPT TO:<c@d>\r\n",
                          "S:250 ok\r\n",       "C:DATA\r\n",
                          "S:354 go\r\n",       "C:X-Faultgate-Token: " TOKEN "\r\n\r\nx\r\n.\r\n",
                          "S:250 ok\r\n",       NULL};
    ck_assert_int_eq(early("eg-race", FG_INJ_EARLY_GREETING, race, &ev), FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(ev, "the greeting was on the wire first"));
    free(ev);
    /* nothing early and no desync message: not exercised */
    ck_assert_int_eq(early("eg-none", 0, race, &ev), FG_V_INCONC);
    free(ev);
}
END_TEST

START_TEST(early_before_ehlo_reply)
{
    char *ev;
    const char *inorder[] = {"S:220 gw\r\n", "C:EHLO injector\r\nRCPT TO:<c@d>\r\n",
                             "S:250-gw\r\n250 PIPELINING\r\n", "S:503 need MAIL\r\n", NULL};
    ck_assert_int_eq(early("ee-pass", FG_INJ_EARLY_EHLO, inorder, &ev), FG_V_PASS);
    ck_assert_ptr_nonnull(strstr(ev, "RCPT sent before the reply to EHLO"));
    free(ev);
    /* the RCPT answered first: 503 in EHLO's place (frame 6) */
    const char *swapped[] = {"S:220 gw\r\n", "C:EHLO injector\r\nRCPT TO:<c@d>\r\n",
                             "S:503 need MAIL\r\n", "S:250-gw\r\n250 PIPELINING\r\n", NULL};
    ck_assert_int_eq(early("ee-fail", FG_INJ_EARLY_EHLO, swapped, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "in EHLO's place (frame 6) is 503"));
    free(ev);
    /* the RCPT accepted without MAIL: §4.1.4 wants 503 */
    const char *accepted[] = {"S:220 gw\r\n", "C:EHLO injector\r\nRCPT TO:<c@d>\r\n",
                              "S:250 gw\r\n", "S:250 ok\r\n", NULL};
    ck_assert_int_eq(early("ee-250", FG_INJ_EARLY_EHLO, accepted, &ev), FG_V_FAIL);
    ck_assert_ptr_nonnull(strstr(ev, "early RCPT's place"));
    free(ev);
}
END_TEST

/* --- starttls-no-injected-commands ----------------------------------------- */

/* A TLS record (RFC 5246 §6.2.1): type, version 3.3, length, then len
 * octets of filler, or of body when given. */
static size_t tls_rec(char *out, uint8_t type, const uint8_t *body, size_t len)
{
    out[0] = (char)type, out[1] = 3, out[2] = 3;
    out[3] = (char)(len >> 8), out[4] = (char)len;
    for (size_t i = 0; i < len; i++)
        out[5 + i] = body ? (char)body[i] : (char)(0x40 + i % 50);
    return 5 + len;
}

/* A ServerHello handshake message (RFC 5246 §7.4.1.3); with tls13 the
 * supported_versions extension says TLS 1.3 (RFC 8446 §4.2.1). */
static size_t server_hello(uint8_t *h, int tls13)
{
    size_t n = 0;
    h[n++] = 2, h[n++] = 0, h[n++] = 0, h[n++] = 0; /* length patched below */
    h[n++] = 3, h[n++] = 3;
    for (int i = 0; i < 32; i++)
        h[n++] = (uint8_t)(i * 7);
    h[n++] = 0;                   /* session id */
    h[n++] = 0xc0, h[n++] = 0x2f; /* TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 */
    h[n++] = 0;
    size_t ext = n;
    h[n++] = 0, h[n++] = 0;
    h[n++] = 0xff, h[n++] = 0x01, h[n++] = 0, h[n++] = 1, h[n++] = 0; /* renegotiation_info */
    if (tls13)
        h[n++] = 0, h[n++] = 43, h[n++] = 0, h[n++] = 2, h[n++] = 3, h[n++] = 4;
    h[ext] = (uint8_t)((n - ext - 2) >> 8), h[ext + 1] = (uint8_t)(n - ext - 2);
    h[3] = (uint8_t)(n - 4);
    return n;
}

enum x3_case {
    X3_PASS,
    X3_EARLY_APP,    /* application data from the gateway before the client's */
    X3_CLEARTEXT,    /* a reply in clear after the 220 */
    X3_NO_HANDSHAKE, /* an alert instead of the ServerHello */
    X3_TLS13,
    X3_REFUSED, /* 454 to STARTTLS */
    X3_NOT_OFFERED,
    X3_SPLIT /* X3_EARLY_APP with records split across segments */
};

/* out: the octets of the records, sent in frames of at most `seg` octets */
static void send_split(struct tc *c, int from, const char *d, size_t n, size_t seg)
{
    for (size_t i = 0; i < n; i += seg)
        sayn(c, from, d + i, n - i < seg ? n - i : seg);
}

static enum fg_verdict x3_run(enum x3_case k, char **ev)
{
    struct tw w;
    tw_open(&w, "x3");
    struct tc c = conn_open(&w, 40100, GW_PORT);
    say(&c, 1, "220 gw.test ESMTP\r\n");
    say(&c, 0, "EHLO injector.test\r\n");
    if (k == X3_NOT_OFFERED) {
        say(&c, 1, "250-gw.test\r\n250 PIPELINING\r\n");
        say(&c, 0, "QUIT\r\n");
        say(&c, 1, "221 bye\r\n");
    } else {
        say(&c, 1, "250-gw.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
        say(&c, 0, "STARTTLS\r\nRSET\r\n");
    }
    if (k == X3_REFUSED) {
        say(&c, 1, "454 4.7.0 TLS not available\r\n250 2.0.0 Ok\r\n");
        say(&c, 0, "QUIT\r\n");
        say(&c, 1, "221 bye\r\n");
    } else if (k != X3_NOT_OFFERED) {
        char b[4096];
        size_t n;
        uint8_t sh[128];
        say(&c, 1,
            k == X3_CLEARTEXT ? "220 2.0.0 Ready\r\n250 2.0.0 Ok\r\n" : "220 2.0.0 Ready\r\n");
        n = tls_rec(b, 22, NULL, 180); /* ClientHello */
        sayn(&c, 0, b, n);
        if (k == X3_NO_HANDSHAKE) {
            uint8_t alert[2] = {2, 70}; /* fatal protocol_version */
            n = tls_rec(b, 21, alert, 2);
            sayn(&c, 1, b, n);
        } else {
            size_t shl = server_hello(sh, k == X3_TLS13);
            n = tls_rec(b, 22, sh, shl);
            n += tls_rec(b + n, 22, NULL, 700); /* Certificate ... ServerHelloDone */
            send_split(&c, 1, b, n, k == X3_SPLIT ? 3 : n);
            n = tls_rec(b, 22, NULL, 70);      /* ClientKeyExchange */
            n += tls_rec(b + n, 20, NULL, 1);  /* ChangeCipherSpec */
            n += tls_rec(b + n, 22, NULL, 40); /* Finished */
            sayn(&c, 0, b, n);
            n = tls_rec(b, 20, NULL, 1);
            n += tls_rec(b + n, 22, NULL, 40);
            if (k == X3_EARLY_APP || k == X3_SPLIT)
                n += tls_rec(b + n, 23, NULL, 37); /* "250 2.0.0 Ok" to the injected RSET */
            send_split(&c, 1, b, n, k == X3_SPLIT ? 4 : n);
            n = tls_rec(b, 23, NULL, 41); /* EHLO */
            sayn(&c, 0, b, n);
            n = tls_rec(b, 23, NULL, 90); /* its reply */
            sayn(&c, 1, b, n);
            n = tls_rec(b, 23, NULL, 30); /* QUIT */
            sayn(&c, 0, b, n);
            n = tls_rec(b, 23, NULL, 35);
            sayn(&c, 1, b, n);
        }
    }
    fin(&c, 1);
    fin(&c, 0);
    tw_close(&w);
    struct fg_msg_spec ms = {0};
    ms.from = "user1@company1.test";
    ms.count = 1;
    ms.starttls_inject = "RSET\r\n";
    ms.starttls_inject_len = 6;
    return judge(&w, "starttls-no-injected-commands", &ms, ev);
}

START_TEST(x3_verdicts)
{
    static const struct {
        enum x3_case k;
        enum fg_verdict v;
        const char *want;
    } cases[] = {
        {X3_PASS, FG_V_PASS, "came after the client's (frame"},
        {X3_EARLY_APP, FG_V_FAIL, "before the client's first (frame"},
        {X3_SPLIT, FG_V_FAIL, "CVE-2011-0411"},
        {X3_CLEARTEXT, FG_V_FAIL, "in clear (frame"},
        {X3_NO_HANDSHAKE, FG_V_INCONC, "did not complete"},
        {X3_TLS13, FG_V_INCONC, "TLS 1.3"},
        {X3_REFUSED, FG_V_INCONC, "STARTTLS answered 454"},
        {X3_NOT_OFFERED, FG_V_SKIP, "does not offer STARTTLS"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *ev = NULL;
        enum fg_verdict v = x3_run(cases[i].k, &ev);
        ck_assert_msg(v == cases[i].v, "case %zu: %s, evidence: %s", i, fg_verdict_name(v), ev);
        ck_assert_msg(strstr(ev, cases[i].want), "case %zu: '%s' lacks '%s'", i, ev, cases[i].want);
        if (cases[i].k != X3_NOT_OFFERED)
            ck_assert_msg(strstr(ev, "(\"RSET\\r\\n"), "case %zu: %s", i, ev);
        free(ev);
    }
}
END_TEST

START_TEST(x3_fail_names_frames)
{
    /* The frames in the evidence are the ones the trace holds: STARTTLS
     * (frame 7: SYN, SYN-ACK, ACK, greeting, EHLO, its reply, then it) and
     * the early record after the handshake. */
    char *ev = NULL;
    ck_assert_int_eq(x3_run(X3_EARLY_APP, &ev), FG_V_FAIL);
    ck_assert_msg(strstr(ev, "STARTTLS at frame 7 "), "%s", ev);
    ck_assert_msg(strstr(ev, "1 application data record(s) (first at frame 12)"), "%s", ev);
    ck_assert_msg(strstr(ev, "client's first (frame 13"), "%s", ev);
    free(ev);
}
END_TEST

START_TEST(starttls_inject_parse)
{
    char *o = NULL, err[256];
    size_t n = 0;
    int col = -1;
    ck_assert_int_eq(
        fg_starttls_inject_parse("RSET\\r\\nMAIL FROM:<a@b>\\r\\n", &o, &n, err, sizeof err, &col),
        0);
    ck_assert_uint_eq(n, 23);
    ck_assert_int_eq(memcmp(o, "RSET\r\nMAIL FROM:<a@b>\r\n", 23), 0);
    free(o);
    /* Already CR LF (a double-quoted YAML string) */
    ck_assert_int_eq(fg_starttls_inject_parse("NOOP\r\n", &o, &n, err, sizeof err, &col), 0);
    ck_assert_uint_eq(n, 6);
    free(o);
    ck_assert_int_lt(fg_starttls_inject_parse("", &o, &n, err, sizeof err, &col), 0);
    ck_assert_int_lt(fg_starttls_inject_parse("RSET", &o, &n, err, sizeof err, &col), 0);
    ck_assert_ptr_nonnull(strstr(err, "end with"));
    ck_assert_int_lt(fg_starttls_inject_parse("RSET\\q\\r\\n", &o, &n, err, sizeof err, &col), 0);
    ck_assert_int_eq(col, 5);
    ck_assert_int_lt(fg_starttls_inject_parse("\\x16\\x03\\r\\n", &o, &n, err, sizeof err, &col),
                     0);
    ck_assert_ptr_nonnull(strstr(err, "TLS record"));
}
END_TEST

/* --- scenario keys ---------------------------------------------------------- */

static int load_text(const char *name, const char *text, struct fg_scenario **out, char *err,
                     size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/fg-check-sec-%ld-%s.yaml", (long)getpid(), name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    int rc = fg_scenario_load(path, out, err, errlen);
    unlink(path);
    return rc;
}

START_TEST(scenario_keys)
{
    struct fg_scenario *sc = NULL;
    char err[FG_ERRBUF_SIZE];
    const char *good = "id: t\nleg: inbound\nmessages:\n"
                       "  - {from: a@x.test, smuggle: crlfcr}\n"
                       "  - {smuggle: '\\r\\n.\\x00\\r\\n', smuggle_from: boss@bank.test}\n"
                       "  - {desync: before-ehlo-reply}\n"
                       "  - {starttls_inject: 'RSET\\r\\n'}\n"
                       "expect:\n  - {rule: no-smuggled-message}\n"
                       "  - {rule: starttls-no-injected-commands}\n";
    ck_assert_int_eq(load_text("good", good, &sc, err, sizeof err), 0);
    ck_assert_uint_eq(sc->nmsgs, 4);
    ck_assert_uint_eq(sc->msgs[3].starttls_inject_len, 6);
    ck_assert_int_eq(memcmp(sc->msgs[3].starttls_inject, "RSET\r\n", 6), 0);
    ck_assert_ptr_null(sc->msgs[0].starttls_inject);
    ck_assert_str_eq(sc->msgs[0].smuggle_name, "crlfcr");
    ck_assert_str_eq(sc->msgs[0].smuggle_from, "smuggled@x.test");
    ck_assert_str_eq(sc->msgs[1].smuggle_name, "custom");
    ck_assert_uint_eq(sc->msgs[1].smuggle_len, 6);
    ck_assert_str_eq(sc->msgs[1].smuggle_from, "boss@bank.test");
    ck_assert_ptr_null(sc->msgs[2].smuggle);
    ck_assert_uint_eq(sc->msgs[2].flags & FG_INJ_EARLY_EHLO, FG_INJ_EARLY_EHLO);
    fg_scenario_free(sc);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"id: t\nmessages:\n  - {smuggle: lflff}\n", ":3:15: 'smuggle': unknown variant"},
        {"id: t\nmessages:\n  - {smuggle: '\\r\\q'}\n", ":3:18: 'smuggle': unknown escape"},
        {"id: t\nmessages:\n  - {desync: later}\n", ":3:14: bad desync 'later'"},
        {"id: t\nmessages:\n  - {smuggle_from: a@b}\n", ":3:20: 'smuggle_from' needs"},
        {"id: t\nmessages:\n  - {smuggle: lflf, bdat: on}\n", ":3:15: 'smuggle' goes with DATA"},
        {"id: t\nmessages:\n  - {smuggle: lflf, smuggle_from: \"a b\"}\n",
         ":3:35: bad smuggle_from"},
        {"id: t\nmessages:\n  - {starttls_inject: 'RSET'}\n",
         ":3:23: 'starttls_inject': the text must end with"},
        {"id: t\nmessages:\n  - {starttls_inject: 'RSET\\q\\r\\n'}\n",
         ":3:28: 'starttls_inject': unknown escape"},
        {"id: t\nmessages:\n  - {desync: before-greeting, starttls_inject: 'RSET\\r\\n'}\n",
         ":3:48: 'starttls_inject' does not go with desync"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sc = NULL;
        int rc = load_text("bad", bad[i].text, &sc, err, sizeof err);
        ck_assert_msg(rc < 0, "case %zu loaded", i);
        ck_assert_msg(strstr(err, bad[i].want), "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("expect_security");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, smuggle_parse);
    tcase_add_test(tc, smuggle_pass_one_message);
    tcase_add_test(tc, smuggle_fail_inbound);
    tcase_add_test(tc, smuggle_fail_outbound_only);
    tcase_add_test(tc, smuggle_refused_and_inconc);
    tcase_add_test(tc, early_before_greeting);
    tcase_add_test(tc, early_before_ehlo_reply);
    tcase_add_test(tc, x3_verdicts);
    tcase_add_test(tc, x3_fail_names_frames);
    tcase_add_test(tc, starttls_inject_parse);
    tcase_add_test(tc, scenario_keys);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
