/* check_expect_ext.c - the extension honesty rules (expect_ext.c) and the
 * quit-at-end fix, over real traces: a script of outbound segments becomes
 * a pcap (pcap_open_dead + pcap_dump, chosen timestamps), which the judge
 * reads back through the trace reader, the shared SMTP parser and the
 * timeline, as `faultgate judge` does.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/util.h"

#define BASE_US 1700000000000000ull
#define GW_PORT 2525
#define PROXY_PORT 39001
#define MTA_PORT 39002

/* --- a small pcap writer ---------------------------------------------- */

struct tw {
    pcap_t *dead;
    pcap_dumper_t *d;
    char path[256];
    uint64_t frames;
};

struct tc {
    struct tw *w;
    uint16_t cport, sport;
    uint32_t seq[2];
};

static uint32_t sum16(uint32_t s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)(p[n - 1] << 8);
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

#define F_FIN 0x01
#define F_SYN 0x02
#define F_PSH 0x08
#define F_ACK 0x10

static void frame(struct tc *c, int from, uint8_t flags, const char *data, size_t len,
                  uint64_t t_ms)
{
    static uint8_t b[9000];
    ck_assert_uint_lt(len, sizeof b - 54);
    memset(b, 0, 54);
    b[12] = 0x08;
    uint8_t *ip = b + 14, *tcp = b + 34;
    ip[0] = 0x45;
    uint16_t tot = (uint16_t)(40 + len);
    ip[2] = (uint8_t)(tot >> 8), ip[3] = (uint8_t)tot;
    ip[6] = 0x40;
    ip[8] = 64, ip[9] = 6;
    uint8_t lo[4] = {127, 0, 0, 1};
    memcpy(ip + 12, lo, 4);
    memcpy(ip + 16, lo, 4);
    uint16_t ck = fold(sum16(0, ip, 20));
    ip[10] = (uint8_t)(ck >> 8), ip[11] = (uint8_t)ck;
    uint16_t sp = from ? c->sport : c->cport, dp = from ? c->cport : c->sport;
    tcp[0] = (uint8_t)(sp >> 8), tcp[1] = (uint8_t)sp, tcp[2] = (uint8_t)(dp >> 8),
    tcp[3] = (uint8_t)dp;
    uint32_t seq = c->seq[from], ack = (flags & F_ACK) ? c->seq[!from] : 0;
    for (int i = 0; i < 4; i++) {
        tcp[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
        tcp[8 + i] = (uint8_t)(ack >> (24 - 8 * i));
    }
    tcp[12] = 0x50, tcp[13] = flags, tcp[14] = 0xff, tcp[15] = 0xff;
    if (len)
        memcpy(tcp + 20, data, len);
    uint8_t ph[12];
    memcpy(ph, ip + 12, 8);
    ph[8] = 0, ph[9] = 6, ph[10] = (uint8_t)((20 + len) >> 8), ph[11] = (uint8_t)(20 + len);
    ck = fold(sum16(sum16(0, ph, 12), tcp, 20 + len));
    tcp[16] = (uint8_t)(ck >> 8), tcp[17] = (uint8_t)ck;
    c->seq[from] += (uint32_t)len + ((flags & (F_SYN | F_FIN)) ? 1 : 0);
    struct pcap_pkthdr h;
    uint64_t us = BASE_US + t_ms * 1000;
    h.ts.tv_sec = (time_t)(us / 1000000);
    h.ts.tv_usec = (suseconds_t)(us % 1000000);
    h.caplen = h.len = (bpf_u_int32)(54 + len);
    pcap_dump((u_char *)c->w->d, &h, b);
    c->w->frames++;
}

static struct tc conn_open(struct tw *w, uint16_t cport, uint16_t sport, uint64_t t_ms)
{
    struct tc c = {w, cport, sport, {1000u * cport, 5000u * sport}};
    frame(&c, 0, F_SYN, NULL, 0, t_ms);
    frame(&c, 1, F_SYN | F_ACK, NULL, 0, t_ms);
    frame(&c, 0, F_ACK, NULL, 0, t_ms);
    return c;
}

/* --- running a script --------------------------------------------------- */

/* "C:text" from the gateway (the client), "S:text" from the proxy, "c:" /
 * "s:" a FIN from that side, "N:" a new outbound connection; 10 ms apart.
 * The frame number of each script line is stored in frames[] (0 for "N:"),
 * so the tests name the frame they expect in the evidence. */
struct outcome {
    struct fg_scenario_result res;
    uint64_t frames[64];
};

static void run_script(const char *name, const struct fg_expect_spec *spec,
                       const char *const *script, struct outcome *out)
{
    struct tw w = {0};
    snprintf(w.path, sizeof w.path, "/tmp/fg-check-expect-ext-%ld-%s.pcap", (long)getpid(), name);
    w.dead = pcap_open_dead(DLT_EN10MB, 65535);
    ck_assert_ptr_nonnull(w.dead);
    w.d = pcap_dump_open(w.dead, w.path);
    ck_assert_ptr_nonnull(w.d);
    uint16_t port = 41001;
    uint64_t t = 100;
    struct tc c = conn_open(&w, port, PROXY_PORT, t);
    memset(out, 0, sizeof *out);
    for (size_t i = 0; script[i]; i++) {
        const char *l = script[i];
        const char *text = l + 2;
        t += 10;
        if (text[0] == '@') { /* "@ms " sets the time */
            t = strtoull(text + 1, (char **)&text, 10);
            if (*text == ' ')
                text++;
        }
        ck_assert_uint_lt(i, 64);
        if (l[0] == 'N') {
            c = conn_open(&w, ++port, PROXY_PORT, t);
            continue;
        }
        int from = (l[0] == 'C' || l[0] == 'c') ? 0 : 1;
        if (l[0] == 'c' || l[0] == 's')
            frame(&c, from, F_FIN | F_ACK, NULL, 0, t);
        else
            frame(&c, from, F_PSH | F_ACK, text, strlen(text), t);
        out->frames[i] = w.frames;
    }
    /* the run goes on for 20 s: an inbound connection then */
    struct tc x = conn_open(&w, 42001, GW_PORT, 20000);
    (void)x;
    pcap_dump_close(w.d);
    pcap_close(w.dead);

    struct fg_meta *m = fg_calloc(1, sizeof *m);
    m->scenario_id = fg_strdup("test");
    m->capture_mode = fg_strdup("synth");
    m->gateway_port = GW_PORT;
    m->proxy_port = PROXY_PORT;
    m->mta_port = MTA_PORT;
    m->gateway_running_at_end = 1;
    m->start_us = BASE_US;
    struct fg_expect_spec e = *spec;
    e.line = 12, e.col = 5;
    struct fg_scenario sc = {0};
    sc.path = "scenarios/rfc5321/test.yaml";
    sc.id = "test";
    sc.title = "test";
    sc.expects = &e;
    sc.nexpects = 1;
    fg_judge(&sc, m, w.path, &out->res);
    ck_assert_msg(out->res.tl != NULL, "timeline: %s", out->res.error ? out->res.error : "?");
    ck_assert_uint_eq(out->res.noutcomes, 1);
    if (getenv("FG_TEST_VERBOSE"))
        fprintf(stderr, "%s [%s] %s\n  %s\n", name, fg_verdict_name(out->res.outcomes[0].verdict),
                out->res.outcomes[0].summary, out->res.outcomes[0].evidence);
    unlink(w.path); /* m is the result's now */
}

/* Judge script under rule; the verdict must be want; when at >= 0 the
 * frame of script line `at` must be in the evidence; text (if any) must be
 * in the summary or the evidence. */
static void expect_spec(const char *name, const struct fg_expect_spec *spec,
                        const char *const *script, enum fg_verdict want, int at, const char *text)
{
    struct outcome out;
    run_script(name, spec, script, &out);
    const struct fg_outcome *o = &out.res.outcomes[0];
    ck_assert_msg(o->verdict == want, "%s: %s: %s\n%s", name, fg_verdict_name(o->verdict),
                  o->summary, o->evidence);
    if (at >= 0) {
        int found = 0;
        for (size_t i = 0; i < o->nframes; i++)
            found |= o->frames[i] == out.frames[at];
        ck_assert_msg(found, "%s: frame %llu not in the evidence: %s", name,
                      (unsigned long long)out.frames[at], o->evidence);
    }
    if (text)
        ck_assert_msg(strstr(o->summary, text) || strstr(o->evidence, text),
                      "%s: no \"%s\" in %s / %s", name, text, o->summary, o->evidence);
    fg_scenario_result_clear(&out.res);
}

static void expect(const char *name, const char *rule, const char *const *script,
                   enum fg_verdict want, int at, const char *text)
{
    struct fg_expect_spec e = {0};
    e.rule = (char *)rule;
    expect_spec(name, &e, script, want, at, text);
}

#define GREET "S:220 proxy ESMTP\r\n", "C:EHLO gw.test\r\n"
#define RCPT_DATA                                                                                  \
    "S:250 ok\r\n", "C:RCPT TO:<b@company2.test>\r\n", "S:250 ok\r\n", "C:DATA\r\n", "S:354 go\r\n"
#define END "S:250 done\r\n", "C:QUIT\r\n", "S:221 bye\r\n", "c:"

/* --- registration ---------------------------------------------------- */

START_TEST(rules_registered)
{
    const char *names[] = {"size-honoured", "8bitmime-honoured", "chunking-honoured",
                           "dsn-honoured", "ehlo-extensions-only-if-advertised"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ck_assert_ptr_nonnull(fg_expect_rule_find(names[i]));
        ck_assert_ptr_nonnull(strstr(fg_expect_source(names[i]), "RFC "));
        ck_assert_int_eq(fg_expect_param_known(names[i], "within"), 0);
        int listed = 0;
        for (size_t k = 0; fg_expect_rules[k]; k++)
            listed |= strcmp(fg_expect_rules[k], names[i]) == 0;
        ck_assert_msg(listed, "%s not in fg_expect_rules", names[i]);
    }
}
END_TEST

/* --- size-honoured ----------------------------------------------------- */

START_TEST(size_rule)
{
    /* index:               0..1   2                                      3 */
    const char *ok[] = {GREET, "S:250-proxy\r\n250-SIZE 1000\r\n250 PIPELINING\r\n",
                        "C:MAIL FROM:<a@company1.test> SIZE=40\r\n", RCPT_DATA,
                        /* 40 octets with CRLFs; the stuffing dot is not counted */
                        "C:Subject: s\r\n\r\n..dot\r\n0123456789012345\r\n.\r\n", END, NULL};
    expect("size-ok", "size-honoured", ok, FG_V_PASS, -1, NULL);

    const char *unoffered[] = {GREET,
                               "S:250-proxy\r\n250 8BITMIME\r\n",
                               "C:MAIL FROM:<a@company1.test> SIZE=40\r\n",
                               RCPT_DATA,
                               "C:hello\r\n.\r\n",
                               END,
                               NULL};
    expect("size-unoffered", "size-honoured", unoffered, FG_V_FAIL, 3, "did not list SIZE");
    expect("size-unoffered-umbrella", "ehlo-extensions-only-if-advertised", unoffered, FG_V_FAIL, 3,
           "SIZE=");
    /* the evidence names the EHLO reply's frame too */
    expect("size-unoffered-frame", "size-honoured", unoffered, FG_V_FAIL, 3, "frame 6)");

    const char *helo[] = {"S:220 proxy\r\n",
                          "C:HELO gw.test\r\n",
                          "S:250 proxy\r\n",
                          "C:MAIL FROM:<a@company1.test> SIZE=40\r\n",
                          RCPT_DATA,
                          "C:hello\r\n.\r\n",
                          END,
                          NULL};
    expect("size-helo", "size-honoured", helo, FG_V_FAIL, 3, "HELO");

    const char *declared_over[] = {GREET,
                                   "S:250-proxy\r\n250 SIZE 100\r\n",
                                   "C:MAIL FROM:<a@company1.test> SIZE=5000\r\n",
                                   "S:552 5.3.4 too big\r\n",
                                   "C:QUIT\r\n",
                                   "S:221 bye\r\n",
                                   "c:",
                                   NULL};
    /* Declaring more than the maximum is how a client asks; the 552
     * answers it and nothing is sent (RFC 1870 §6.1, §6.2). */
    expect("size-declared-over", "size-honoured", declared_over, FG_V_PASS, -1, NULL);

    static char big[400];
    memset(big, 'x', sizeof big);
    memcpy(big, "C:", 2);
    memcpy(big + sizeof big - 8, "\r\n.\r\n", 6);
    const char *sent_over[] = {GREET,
                               "S:250-proxy\r\n250 SIZE 100\r\n",
                               "C:MAIL FROM:<a@company1.test>\r\n",
                               RCPT_DATA,
                               big,
                               END,
                               NULL};
    expect("size-sent-over", "size-honoured", sent_over, FG_V_FAIL, 9,
           "without a SIZE= declaration");
    /* without a limit (SIZE alone or SIZE 0) any size is fine */
    const char *no_limit[] = {GREET,
                              "S:250-proxy\r\n250 SIZE 0\r\n",
                              "C:MAIL FROM:<a@company1.test>\r\n",
                              RCPT_DATA,
                              big,
                              END,
                              NULL};
    expect("size-no-limit", "size-honoured", no_limit, FG_V_PASS, -1, NULL);

    /* 552 to MAIL, then the same MAIL on a new connection */
    const char *retry[] = {GREET,
                           "S:250-proxy\r\n250 SIZE\r\n",
                           "C:MAIL FROM:<a@company1.test> SIZE=5000\r\n",
                           "S:552 5.3.4 message too big\r\n",
                           "C:QUIT\r\n",
                           "S:221 bye\r\n",
                           "c:",
                           "N:",
                           GREET,
                           "S:250-proxy\r\n250 SIZE\r\n",
                           "C:MAIL FROM:<a@company1.test> SIZE=5000\r\n",
                           "S:552 5.3.4 message too big\r\n",
                           "C:QUIT\r\n",
                           "S:221 bye\r\n",
                           "c:",
                           NULL};
    expect("size-retry", "size-honoured", retry, FG_V_FAIL, 12, "sent again unchanged");

    const char *nomail[] = {GREET, "S:250 proxy\r\n", "C:QUIT\r\n", "S:221 bye\r\n", "c:", NULL};
    expect("size-nomail", "size-honoured", nomail, FG_V_INCONC, -1, "not exercised");
}
END_TEST

/* --- 8bitmime-honoured --------------------------------------------------- */

START_TEST(eightbit_rule)
{
    const char *ok[] = {GREET,
                        "S:250-proxy\r\n250 8BITMIME\r\n",
                        "C:MAIL FROM:<a@company1.test> BODY=8BITMIME\r\n",
                        RCPT_DATA,
                        "C:Subject: s\r\n\r\nGr\xc3\xbc\xc3\x9f"
                        "e\r\n.\r\n",
                        END,
                        NULL};
    expect("8bit-ok", "8bitmime-honoured", ok, FG_V_PASS, -1, NULL);

    const char *body_unoffered[] = {GREET,
                                    "S:250-proxy\r\n250 SIZE\r\n",
                                    "C:MAIL FROM:<a@company1.test> BODY=8BITMIME\r\n",
                                    RCPT_DATA,
                                    "C:hello\r\n.\r\n",
                                    END,
                                    NULL};
    expect("8bit-param-unoffered", "8bitmime-honoured", body_unoffered, FG_V_FAIL, 3,
           "did not list 8BITMIME");

    const char *undeclared[] = {GREET,
                                "S:250-proxy\r\n250 8BITMIME\r\n",
                                "C:MAIL FROM:<a@company1.test>\r\n",
                                RCPT_DATA,
                                "C:Subject: s\r\n\r\nGr\xc3\xbc\xc3\x9f"
                                "e\r\n.\r\n",
                                END,
                                NULL};
    expect("8bit-undeclared", "8bitmime-honoured", undeclared, FG_V_FAIL, 9,
           "declared no BODY=8BITMIME");

    const char *unoffered[] = {GREET,
                               "S:250 proxy\r\n",
                               "C:MAIL FROM:<a@company1.test>\r\n",
                               RCPT_DATA,
                               "C:Subject: s\r\n\r\nna\xefve\r\n.\r\n",
                               END,
                               NULL};
    expect("8bit-unoffered", "8bitmime-honoured", unoffered, FG_V_FAIL, 9,
           "1 body octet above 0x7F");
    /* the umbrella judges advertisement only: 8-bit octets are not a
     * parameter or a verb */
    expect("8bit-unoffered-umbrella", "ehlo-extensions-only-if-advertised", unoffered, FG_V_PASS,
           -1, NULL);

    /* 8-bit octets in a BDAT chunk count too */
    const char *bdat[] = {GREET,
                          "S:250-proxy\r\n250 CHUNKING\r\n",
                          "C:MAIL FROM:<a@company1.test>\r\n",
                          "S:250 ok\r\n",
                          "C:RCPT TO:<b@company2.test>\r\n",
                          "S:250 ok\r\n",
                          "C:BDAT 6 LAST\r\nna\xefve\r\n",
                          END,
                          NULL};
    expect("8bit-bdat", "8bitmime-honoured", bdat, FG_V_FAIL, 7, "above 0x7F");

    const char *binary[] = {GREET, "S:250-proxy\r\n250-8BITMIME\r\n250 CHUNKING\r\n",
                            "C:MAIL FROM:<a@company1.test> BODY=BINARYMIME\r\n", "S:250 ok\r\n",
                            NULL};
    expect("8bit-binarymime", "8bitmime-honoured", binary, FG_V_FAIL, 3, "BINARYMIME");
}
END_TEST

/* --- chunking-honoured --------------------------------------------------- */

#define CHUNK_SESSION(caps)                                                                        \
    GREET, "S:250-proxy\r\n" caps, "C:MAIL FROM:<a@company1.test>\r\n", "S:250 ok\r\n",            \
        "C:RCPT TO:<b@company2.test>\r\n", "S:250 ok\r\n"

START_TEST(chunking_rule)
{
    /* index 0..1 greeting and EHLO, 2 reply, 3 MAIL, 4, 5 RCPT, 6, then 7 */
    const char *ok[] = {CHUNK_SESSION("250 CHUNKING\r\n"),
                        "C:BDAT 7\r\nhello\r\n",
                        "S:250 ok\r\n",
                        "C:BDAT 5 LAST\r\nbye\r\n",
                        END,
                        NULL};
    expect("chunk-ok", "chunking-honoured", ok, FG_V_PASS, -1, NULL);
    /* a conforming DATA session passes too: BDAT was never misused */
    const char *data[] = {GREET,     "S:250 proxy\r\n",  "C:MAIL FROM:<a@company1.test>\r\n",
                          RCPT_DATA, "C:hello\r\n.\r\n", END,
                          NULL};
    expect("chunk-data-ok", "chunking-honoured", data, FG_V_PASS, -1, NULL);

    const char *unoffered[] = {CHUNK_SESSION("250 PIPELINING\r\n"), "C:BDAT 5 LAST\r\nhello", END,
                               NULL};
    expect("chunk-unoffered", "chunking-honoured", unoffered, FG_V_FAIL, 7,
           "did not list CHUNKING");
    expect("chunk-unoffered-umbrella", "ehlo-extensions-only-if-advertised", unoffered, FG_V_FAIL,
           7, "CHUNKING");

    const char *more[] = {CHUNK_SESSION("250 CHUNKING\r\n"), "C:BDAT 3 LAST\r\nhello\r\n",
                          "S:250 ok\r\n", NULL};
    expect("chunk-more-octets", "chunking-honoured", more, FG_V_FAIL, 7,
           "more octets than declared");

    const char *fewer[] = {CHUNK_SESSION("250 CHUNKING\r\n"), "C:BDAT 50 LAST\r\nhello\r\n",
                           "c:", NULL};
    expect("chunk-fewer-octets", "chunking-honoured", fewer, FG_V_FAIL, 8, "fewer octets");

    const char *mixed[] = {CHUNK_SESSION("250 CHUNKING\r\n"),
                           "C:BDAT 5\r\nhello",
                           "S:250 ok\r\n",
                           "C:DATA\r\n",
                           "S:503 5.5.1 mixed\r\n",
                           "C:QUIT\r\n",
                           NULL};
    expect("chunk-data-mixed", "chunking-honoured", mixed, FG_V_FAIL, 9, "not mixed");

    const char *after_last[] = {CHUNK_SESSION("250 CHUNKING\r\n"),
                                "C:BDAT 5 LAST\r\nhello",
                                "S:250 ok\r\n",
                                "C:BDAT 3 LAST\r\nbye",
                                "S:503 no\r\n",
                                NULL};
    expect("chunk-after-last", "chunking-honoured", after_last, FG_V_FAIL, 9,
           "after the LAST chunk");

    const char *after_fail[] = {CHUNK_SESSION("250 CHUNKING\r\n"),
                                "C:BDAT 5\r\nhello",
                                "S:554 5.6.0 no\r\n",
                                "C:BDAT 3 LAST\r\nbye",
                                "S:503 no\r\n",
                                NULL};
    expect("chunk-after-failure", "chunking-honoured", after_fail, FG_V_FAIL, 9, "no further BDAT");

    const char *no_rset[] = {
        CHUNK_SESSION("250 CHUNKING\r\n"),   "C:BDAT 5\r\nhello", "S:554 5.6.0 no\r\n",
        "C:MAIL FROM:<a@company1.test>\r\n", "S:250 ok\r\n",      NULL};
    expect("chunk-no-rset", "chunking-honoured", no_rset, FG_V_FAIL, 9, "without RSET");
    const char *rset[] = {CHUNK_SESSION("250 CHUNKING\r\n"),
                          "C:BDAT 5\r\nhello",
                          "S:554 5.6.0 no\r\n",
                          "C:RSET\r\n",
                          "S:250 ok\r\n",
                          "C:QUIT\r\n",
                          "S:221 bye\r\n",
                          "c:",
                          NULL};
    expect("chunk-rset", "chunking-honoured", rset, FG_V_PASS, -1, NULL);
}
END_TEST

/* --- dsn-honoured -------------------------------------------------------- */

START_TEST(dsn_rule)
{
    const char *ok[] = {GREET,
                        "S:250-proxy\r\n250 DSN\r\n",
                        "C:MAIL FROM:<a@company1.test> RET=HDRS ENVID=q+2Bx1\r\n",
                        "S:250 ok\r\n",
                        "C:RCPT TO:<b@company2.test> NOTIFY=SUCCESS,FAILURE "
                        "ORCPT=rfc822;b@company2.test\r\n",
                        "S:250 ok\r\n",
                        "C:QUIT\r\n",
                        "S:221 bye\r\n",
                        "c:",
                        NULL};
    expect("dsn-ok", "dsn-honoured", ok, FG_V_PASS, -1, NULL);

    const char *unoffered[] = {GREET,
                               "S:250-proxy\r\n250 SIZE\r\n",
                               "C:MAIL FROM:<a@company1.test>\r\n",
                               "S:250 ok\r\n",
                               "C:RCPT TO:<b@company2.test> NOTIFY=NEVER\r\n",
                               "S:250 ok\r\n",
                               NULL};
    expect("dsn-unoffered", "dsn-honoured", unoffered, FG_V_FAIL, 5, "did not list DSN");
    expect("dsn-unoffered-umbrella", "ehlo-extensions-only-if-advertised", unoffered, FG_V_FAIL, 5,
           "NOTIFY=");

    const char *ret[] = {GREET, "S:250-proxy\r\n250 SIZE\r\n",
                         "C:MAIL FROM:<a@company1.test> RET=FULL\r\n", "S:250 ok\r\n", NULL};
    expect("dsn-ret-unoffered", "dsn-honoured", ret, FG_V_FAIL, 3, "RET=");

    const char *never_and[] = {GREET,
                               "S:250-proxy\r\n250 DSN\r\n",
                               "C:MAIL FROM:<a@company1.test>\r\n",
                               "S:250 ok\r\n",
                               "C:RCPT TO:<b@company2.test> NOTIFY=NEVER,SUCCESS\r\n",
                               "S:250 ok\r\n",
                               NULL};
    expect("dsn-notify-syntax", "dsn-honoured", never_and, FG_V_FAIL, 5, "not valid");
    const char *envid[] = {GREET, "S:250-proxy\r\n250 DSN\r\n",
                           "C:MAIL FROM:<a@company1.test> ENVID=a=b\r\n", "S:250 ok\r\n", NULL};
    expect("dsn-envid-syntax", "dsn-honoured", envid, FG_V_FAIL, 3, "xtext");
    /* a quoted local part with a space and '>' is still one path */
    const char *quoted[] = {GREET,
                            "S:250-proxy\r\n250 DSN\r\n",
                            "C:MAIL FROM:<\"a b>c\"@company1.test> RET=HDRS\r\n",
                            "S:250 ok\r\n",
                            "C:QUIT\r\n",
                            "S:221 bye\r\n",
                            "c:",
                            NULL};
    expect("dsn-quoted-path", "dsn-honoured", quoted, FG_V_PASS, -1, NULL);
}
END_TEST

START_TEST(umbrella_rule)
{
    const char *utf8[] = {GREET, "S:250-proxy\r\n250 8BITMIME\r\n",
                          "C:MAIL FROM:<a@company1.test> SMTPUTF8\r\n", "S:250 ok\r\n", NULL};
    expect("adv-smtputf8", "ehlo-extensions-only-if-advertised", utf8, FG_V_FAIL, 3, "RFC 6531");
    /* a new EHLO replaces what the previous one offered (RFC 5321 §4.1.1.1) */
    const char *reset[] = {GREET,
                           "S:250-proxy\r\n250 SIZE\r\n",
                           "C:EHLO gw.test\r\n",
                           "S:250 proxy\r\n",
                           "C:MAIL FROM:<a@company1.test> SIZE=10\r\n",
                           "S:250 ok\r\n",
                           NULL};
    expect("adv-second-ehlo", "ehlo-extensions-only-if-advertised", reset, FG_V_FAIL, 5,
           "frame 8)");
    const char *ok[] = {GREET,
                        "S:250-proxy\r\n250-SIZE 100000\r\n250-8BITMIME\r\n250-DSN\r\n250 "
                        "SMTPUTF8\r\n",
                        "C:MAIL FROM:<a@company1.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL\r\n",
                        "S:250 ok\r\n",
                        "C:QUIT\r\n",
                        "S:221 bye\r\n",
                        "c:",
                        NULL};
    expect("adv-ok", "ehlo-extensions-only-if-advertised", ok, FG_V_PASS, -1, NULL);
}
END_TEST

/* --- quit-at-end: the server closing first after its 221 ---------------- */

START_TEST(quit_server_closes_first)
{
    const char *race[] = {GREET,
                          "S:250 proxy\r\n",
                          "C:MAIL FROM:<a@company1.test>\r\n",
                          RCPT_DATA,
                          "C:hello\r\n.\r\n",
                          "S:250 done\r\n",
                          "C:QUIT\r\n",
                          "S:221 bye\r\n",
                          "s:",
                          "c:",
                          NULL};
    expect("quit-race", "quit-at-end", race, FG_V_PASS, -1, "ended with QUIT");
    /* the server closing without a QUIT from the client is still not judged */
    const char *server_first[] = {GREET, "S:250 proxy\r\n", "s:", "c:", NULL};
    expect("quit-server-first", "quit-at-end", server_first, FG_V_INCONC, -1, "not exercised");
}
END_TEST

/* --- timeout-at-least: the oldest unanswered command sets the stage ----- */

START_TEST(timeout_oldest_command)
{
    struct fg_expect_spec e = {0};
    e.rule = "timeout-at-least";
    e.min = "4s";
    e.stage = "data_done";
    /* QUIT pipelined behind the final dot (Postfix does so): still the
     * wait for the reply to the end of data; the dot is frame 10 */
    const char *dot_quit[] = {
        GREET,
        "S:250-proxy\r\n250 PIPELINING\r\n",
        "C:MAIL FROM:<a@company1.test>\r\nRCPT TO:<b@company2.test>\r\nDATA\r\n",
        "S:250 ok\r\n250 ok\r\n354 go\r\n",
        "C:hello\r\n.\r\nQUIT\r\n",
        "c:@5200",
        NULL};
    expect_spec("timeout-dot-quit", &e, dot_quit, FG_V_PASS, -1, "waited 5.0");
    const char *dot_quit_early[] = {GREET,
                                    "S:250-proxy\r\n250 PIPELINING\r\n",
                                    "C:MAIL FROM:<a@company1.test>\r\nRCPT "
                                    "TO:<b@company2.test>\r\nDATA\r\n",
                                    "S:250 ok\r\n250 ok\r\n354 go\r\n",
                                    "C:hello\r\n.\r\nQUIT\r\n",
                                    "c:@1200",
                                    NULL};
    expect_spec("timeout-dot-quit-early", &e, dot_quit_early, FG_V_FAIL, 6, "data_done");
    /* MAIL, RCPT and DATA in one group, no reply at all: the MAIL stage */
    e.stage = "mail";
    const char *mail[] = {GREET, "S:250-proxy\r\n250 PIPELINING\r\n",
                          "C:MAIL FROM:<a@company1.test>\r\nRCPT TO:<b@company2.test>\r\nDATA\r\n",
                          "c:@5200", NULL};
    expect_spec("timeout-pipelined-mail", &e, mail, FG_V_PASS, -1, "at mail");
    /* the RCPT sent in that group waited as long for its reply */
    e.stage = "rcpt";
    expect_spec("timeout-pipelined-rcpt-unanswered", &e, mail, FG_V_PASS, -1, "at rcpt");
    /* the RCPT stage once MAIL is answered */
    e.stage = "rcpt";
    const char *rcpt[] = {GREET,
                          "S:250-proxy\r\n250 PIPELINING\r\n",
                          "C:MAIL FROM:<a@company1.test>\r\nRCPT TO:<b@company2.test>\r\nDATA\r\n",
                          "S:250 ok\r\n",
                          "c:@1300",
                          NULL};
    expect_spec("timeout-pipelined-rcpt", &e, rcpt, FG_V_FAIL, 5, "rcpt");
}
END_TEST

/* --- handles-421: RSET and QUIT in one segment end the session ---------- */

START_TEST(handles_421_rset_quit)
{
    struct fg_expect_spec e = {0};
    e.rule = "handles-421";
    e.within = "10s";
    e.within_line = 12, e.within_col = 40;
    const char *rset_quit[] = {
        GREET,
        "S:250-proxy\r\n250 PIPELINING\r\n",
        "C:MAIL FROM:<a@company1.test>\r\nRCPT TO:<b@company2.test>\r\nDATA\r\n",
        "S:421 4.3.2 shutting down\r\n503 need MAIL\r\n503 need MAIL\r\n",
        "C:RSET\r\nQUIT\r\n",
        "S:250 ok\r\n221 bye\r\n",
        "s:",
        "c:",
        "N:",
        "S:@1500 220 proxy ESMTP\r\n",
        "C:EHLO gw.test\r\n",
        "S:250 proxy\r\n",
        NULL};
    expect_spec("421-rset-quit", &e, rset_quit, FG_V_PASS, -1, NULL);
    /* RSET on its own, then the transaction goes on: the session was over */
    const char *rset_more[] = {GREET,
                               "S:250 proxy\r\n",
                               "C:MAIL FROM:<a@company1.test>\r\n",
                               "S:421 4.3.2 shutting down\r\n",
                               "C:RSET\r\n",
                               "S:250 ok\r\n",
                               "C:RCPT TO:<b@company2.test>\r\n",
                               "S:250 ok\r\n",
                               NULL};
    expect_spec("421-rset-more", &e, rset_more, FG_V_FAIL, 5, "sent after 421");
}
END_TEST

/* --- pipelining-only-if-advertised: nothing before the greeting -------- */

START_TEST(command_before_greeting)
{
    const char *early[] = {"C:EHLO gw.test\r\n",
                           "S:220 proxy ESMTP\r\n",
                           "S:250 proxy\r\n",
                           "C:QUIT\r\n",
                           "S:221 bye\r\n",
                           "c:",
                           NULL};
    expect("early-ehlo", "pipelining-only-if-advertised", early, FG_V_FAIL, 0,
           "before the server's greeting");
    const char *ok[] = {GREET, "S:250 proxy\r\n", "C:QUIT\r\n", "S:221 bye\r\n", "c:", NULL};
    expect("greeting-first", "pipelining-only-if-advertised", ok, FG_V_PASS, -1, NULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("expect_ext");
    TCase *tc = tcase_create("rules");
    tcase_add_test(tc, rules_registered);
    tcase_add_test(tc, size_rule);
    tcase_add_test(tc, eightbit_rule);
    tcase_add_test(tc, chunking_rule);
    tcase_add_test(tc, dsn_rule);
    tcase_add_test(tc, umbrella_rule);
    tcase_add_test(tc, quit_server_closes_first);
    tcase_add_test(tc, timeout_oldest_command);
    tcase_add_test(tc, handles_421_rset_quit);
    tcase_add_test(tc, command_before_greeting);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
