/* check_diagnose.c - the knowledge-base symptom detectors.
 *
 * Each test writes a capture by hand (libpcap's pcap_open_dead and
 * pcap_dump, Ethernet/IPv4 or IPv6/TCP frames with chosen timestamps and
 * sequence numbers), runs fg_diagnose over it and checks which symptoms
 * it reports and at which frames: one capture per symptom (and its
 * variants), and healthy captures where nothing may be found.
 */
#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/diagnose.h"
#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"

static char tmpdir[64];
static char path[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fgdiag-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(path, sizeof path, "%s/t.pcap", tmpdir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(tmpdir);
}

/* ---- writing a capture -------------------------------------------------- */

enum { FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10 };

struct writer {
    pcap_t *p;
    pcap_dumper_t *d;
    uint64_t base, us, frames;
};

static void w_open(struct writer *w)
{
    memset(w, 0, sizeof *w);
    w->p = pcap_open_dead(DLT_EN10MB, 65535);
    w->d = pcap_dump_open(w->p, path);
    ck_assert_ptr_nonnull(w->d);
    w->base = w->us = 1700000000ull * 1000000;
}

static void w_close(struct writer *w)
{
    pcap_dump_close(w->d);
    pcap_close(w->p);
}

/* Move the clock to t seconds after the start (never backwards). */
static void at(struct writer *w, double t)
{
    uint64_t us = w->base + (uint64_t)(t * 1e6);
    if (us > w->us)
        w->us = us;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

struct conn {
    struct writer *w;
    const char *cip, *sip;
    int cport, sport;
    uint32_t seq[2];
};

/* One segment from side dir (0 client, 1 server); returns its frame. */
static uint64_t seg(struct conn *c, int dir, uint8_t flags, const char *data, size_t len)
{
    static uint8_t f[70000];
    const char *src = dir ? c->sip : c->cip, *dst = dir ? c->cip : c->sip;
    int v6 = strchr(src, ':') != NULL;
    memset(f, 0x02, 12);
    put16(f + 12, v6 ? 0x86dd : 0x0800);
    uint8_t *ip = f + 14, *t;
    if (v6) {
        memset(ip, 0, 40);
        put32(ip, 0x60000000);
        put16(ip + 4, (uint16_t)(20 + len));
        ip[6] = IPPROTO_TCP;
        ip[7] = 64;
        ck_assert_int_eq(inet_pton(AF_INET6, src, ip + 8), 1);
        ck_assert_int_eq(inet_pton(AF_INET6, dst, ip + 24), 1);
        t = ip + 40;
    } else {
        memset(ip, 0, 20);
        ip[0] = 0x45;
        put16(ip + 2, (uint16_t)(40 + len));
        put16(ip + 6, 0x4000);
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ck_assert_int_eq(inet_pton(AF_INET, src, ip + 12), 1);
        ck_assert_int_eq(inet_pton(AF_INET, dst, ip + 16), 1);
        t = ip + 20;
    }
    memset(t, 0, 20);
    put16(t, (uint16_t)(dir ? c->sport : c->cport));
    put16(t + 2, (uint16_t)(dir ? c->cport : c->sport));
    put32(t + 4, c->seq[dir]);
    put32(t + 8, (flags & ACK) ? c->seq[!dir] : 0);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 65535);
    memcpy(t + 20, data, len);
    c->seq[dir] += (uint32_t)len + ((flags & (SYN | FIN)) ? 1 : 0);
    struct pcap_pkthdr h;
    memset(&h, 0, sizeof h);
    c->w->us += 1; /* distinct times, in order */
    h.ts.tv_sec = (time_t)(c->w->us / 1000000);
    h.ts.tv_usec = (suseconds_t)(c->w->us % 1000000);
    h.caplen = h.len = (bpf_u_int32)((size_t)(t - f) + 20 + len);
    pcap_dump((u_char *)c->w->d, &h, f);
    return ++c->w->frames;
}

static struct conn c_open(struct writer *w, const char *cip, int cport, const char *sip, int sport)
{
    struct conn c = {w, cip, sip, cport, sport, {1000u * (uint32_t)cport, 7777u}};
    seg(&c, 0, SYN, "", 0);
    seg(&c, 1, SYN | ACK, "", 0);
    seg(&c, 0, ACK, "", 0);
    return c;
}

static uint64_t say(struct conn *c, int dir, const char *text)
{
    return seg(c, dir, PSH | ACK, text, strlen(text));
}

static uint64_t fin(struct conn *c, int dir)
{
    return seg(c, dir, FIN | ACK, "", 0);
}

/* A session up to and with one message's end of data, its reply not yet
 * given. */
static struct conn session_to_eod(struct writer *w, const char *cip, int cport, const char *sip,
                                  int sport, const char *from, const char *hdr)
{
    struct conn c = c_open(w, cip, cport, sip, sport);
    say(&c, 1, "220 mx ESMTP\r\n");
    say(&c, 0, "EHLO client.test\r\n");
    say(&c, 1, "250-mx\r\n250 PIPELINING\r\n");
    char mail[256];
    snprintf(mail, sizeof mail, "MAIL FROM:<%s>\r\n", from);
    say(&c, 0, mail);
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(&c, 1, "250 ok\r\n");
    say(&c, 0, "DATA\r\n");
    say(&c, 1, "354 go ahead\r\n");
    say(&c, 0, hdr);
    char body[128];
    snprintf(body, sizeof body, "\r\nHello from %s port %d.\r\n.\r\n", cip, cport);
    say(&c, 0, body);
    return c;
}

/* A complete session delivering one message; returns the frame of the
 * 250 to its end of data. */
static uint64_t session(struct writer *w, const char *cip, int cport, const char *sip, int sport,
                        const char *from, const char *hdr)
{
    struct conn c = session_to_eod(w, cip, cport, sip, sport, from, hdr);
    uint64_t f = say(&c, 1, "250 queued\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 bye\r\n");
    fin(&c, 0);
    fin(&c, 1);
    return f;
}

/* ---- reading the findings ----------------------------------------------- */

static struct fg_diag_report *diagnose(void)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_diag_report *r = NULL;
    int rc = fg_diagnose(path, NULL, &r, err, sizeof err);
    ck_assert_msg(rc == 0, "fg_diagnose: %s", err);
    ck_assert_ptr_nonnull(r);
    return r;
}

static size_t count_kb(const struct fg_diag_report *r, const char *kb)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += strcmp(r->f[i].kb, kb) == 0;
    return n;
}

static const struct fg_diag_finding *find_kb(const struct fg_diag_report *r, const char *kb)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->f[i].kb, kb) == 0)
            return &r->f[i];
    return NULL;
}

static int has_frame(const struct fg_diag_finding *f, uint64_t frame)
{
    for (size_t i = 0; i < f->nframes; i++)
        if (f->frames[i] == frame)
            return 1;
    return 0;
}

static void dump(const struct fg_diag_report *r)
{
    for (size_t i = 0; i < r->n; i++)
        fprintf(stderr, "  %s conn %u: %s\n", r->f[i].kb, r->f[i].conn, r->f[i].summary);
}

/* ---- healthy captures --------------------------------------------------- */

/* A gateway (10.0.0.1) accepts two messages on port 25 and relays each to
 * the next hop (10.0.0.9:25); a third message without a token is followed
 * by its Message-ID; one message bounces back to its sender with <>. */
START_TEST(healthy_relay)
{
    struct writer w;
    w_open(&w);
    session(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@company1.test",
            "X-Faultgate-Token: tok-1\r\nSubject: one\r\n");
    at(&w, 1);
    session(&w, "10.0.0.1", 50001, "10.0.0.9", 25, "a@company1.test",
            "Received: by gw\r\nX-Faultgate-Token: tok-1\r\nSubject: one\r\n");
    at(&w, 2);
    session(&w, "10.0.0.5", 40002, "10.0.0.1", 25, "b@company1.test",
            "Message-ID: <m2@company1.test>\r\nSubject: two\r\n");
    at(&w, 3);
    session(&w, "10.0.0.1", 50002, "10.0.0.9", 25, "b@company1.test",
            "Received: by gw\r\nMessage-ID: <m2@company1.test>\r\nSubject: two\r\n");
    at(&w, 4);
    session(&w, "10.0.0.5", 40003, "10.0.0.1", 25, "c@company1.test",
            "X-Faultgate-Token: tok-3\r\nSubject: three\r\n");
    at(&w, 5);
    session(&w, "10.0.0.1", 50003, "10.0.0.5", 25, "",
            "Subject: Undeliverable\r\n\r\nOriginal:\r\nX-Faultgate-Token: tok-3\r\n");
    at(&w, 100);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n)
        dump(r);
    ck_assert_uint_eq(r->n, 0);
    ck_assert_uint_eq(r->stats.conns, 6);
    ck_assert_uint_eq(r->smtp_conns, 6);
    ck_assert_uint_eq(r->messages, 6);
    ck_assert_uint_eq(r->relayed, 3);
    ck_assert_ptr_null(r->notes);
    fg_diag_report_free(r);
}
END_TEST

/* The relayed copy appears before the reply to the original's end of
 * data, and records expire in between (a connection opens 700 s later):
 * the message is relayed once, and the record the inbound connection still
 * awaits survives until its reply (the fuzzer found it freed under it). */
START_TEST(relayed_before_own_reply)
{
    struct writer w;
    w_open(&w);
    struct conn in = session_to_eod(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@company1.test",
                                    "X-Faultgate-Token: tok-early\r\nSubject: s\r\n");
    at(&w, 1);
    session(&w, "10.0.0.1", 50001, "10.0.0.9", 25, "a@company1.test",
            "Received: by gw\r\nX-Faultgate-Token: tok-early\r\nSubject: s\r\n");
    at(&w, 700);
    session(&w, "10.0.0.5", 40002, "10.0.0.1", 25, "b@company1.test",
            "X-Faultgate-Token: tok-other\r\nSubject: o\r\n");
    uint64_t late = say(&in, 1, "250 queued\r\n");
    fin(&in, 0);
    fin(&in, 1);
    at(&w, 701);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(r->messages, 3);
    ck_assert_uint_eq(r->relayed, 1);
    for (size_t i = 0; i < r->n; i++) /* the early message is not stuck */
        ck_assert_msg(!has_frame(&r->f[i], late), "%s: %s", r->f[i].kb, r->f[i].summary);
    fg_diag_report_free(r);
}
END_TEST

/* Plain sessions over IPv6 loopback, one of them slow but answered, and
 * an inbound-only capture (no relaying: Q135031 cannot be judged). */
START_TEST(healthy_slow_and_one_leg)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "::1", 40010, "::1", 2525);
    say(&c, 1, "220 mx\r\n");
    say(&c, 0, "HELO client.test\r\n");
    at(&w, 3); /* a slow reply, under the stall threshold */
    say(&c, 1, "250 mx\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 bye\r\n");
    fin(&c, 1);
    fin(&c, 0);
    at(&w, 4);
    session(&w, "::1", 40011, "::1", 2525, "a@b.test", "X-Faultgate-Token: only-in\r\n");
    at(&w, 60);
    session(&w, "::1", 40012, "::1", 2525, "a@b.test", "X-Faultgate-Token: only-in-2\r\n");
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n)
        dump(r);
    ck_assert_uint_eq(r->n, 0);
    ck_assert_uint_eq(r->relayed, 0);
    ck_assert_ptr_nonnull(r->notes);
    ck_assert_ptr_nonnull(strstr(r->notes, "Q135031 cannot be judged"));
    fg_diag_report_free(r);
}
END_TEST

/* ---- Q129140 ------------------------------------------------------------ */

static uint64_t to_body(struct conn *c)
{
    say(c, 1, "220 mx\r\n");
    say(c, 0, "EHLO gw.test\r\n");
    say(c, 1, "250 mx\r\n");
    say(c, 0, "MAIL FROM:<user1@company1.test>\r\n");
    say(c, 1, "250 Sender ok\r\n");
    say(c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(c, 1, "250 Recipient ok\r\n");
    say(c, 0, "DATA\r\n");
    return say(c, 1, "354 Enter mail, end with \".\" on a line by itself\r\n");
}

START_TEST(q129140_client_gives_up)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&c);
    say(&c, 0, "Subject: x\r\n\r\n...message body...\r\n");
    uint64_t eod = say(&c, 0, ".\r\n");
    at(&w, 601);
    uint64_t gave_up = fin(&c, 0);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(r->n, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q129140");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->conn, 1);
    ck_assert_int_eq(f->certain, 1);
    ck_assert(has_frame(f, eod));
    ck_assert(has_frame(f, gave_up));
    ck_assert_ptr_nonnull(strstr(f->summary, "never answered"));
    ck_assert_ptr_nonnull(strstr(f->summary, "gave up after 601"));
    fg_diag_report_free(r);
}
END_TEST

START_TEST(q129140_still_waiting_and_body_stalled)
{
    struct writer w;
    w_open(&w);
    /* Connection 1: the end of data is never answered, the client waits
     * to the end of the capture. */
    struct conn a = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&a);
    say(&a, 0, "Subject: x\r\n\r\nbody\r\n");
    uint64_t eod = say(&a, 0, ".\r\n");
    /* Connection 2: the body stops half-way (a hung next hop stops
     * reading), the client resets after 180 s. */
    at(&w, 10);
    struct conn b = c_open(&w, "10.0.0.1", 50001, "10.0.0.9", 25);
    to_body(&b);
    uint64_t b0 = say(&b, 0, "Subject: y\r\n\r\nfirst part\r\n");
    uint64_t b1 = say(&b, 0, "second part\r\n");
    at(&w, 190);
    uint64_t rst = seg(&b, 0, RST | ACK, "", 0);
    at(&w, 300);
    session(&w, "10.0.0.7", 40000, "10.0.0.8", 25, "x@y.test", "Subject: other\r\n");
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(count_kb(r, "Q129140"), 2);
    const struct fg_diag_finding *f = &r->f[0];
    ck_assert_uint_eq(f->conn, 1);
    ck_assert(has_frame(f, eod));
    ck_assert_ptr_nonnull(strstr(f->summary, "still waiting"));
    f = &r->f[1];
    ck_assert_uint_eq(f->conn, 2);
    ck_assert_str_eq(f->symptom, "message body stopped before its end");
    ck_assert(has_frame(f, b0) && has_frame(f, b1) && has_frame(f, rst));
    ck_assert_ptr_nonnull(strstr(f->summary, "RST"));
    fg_diag_report_free(r);
}
END_TEST

/* The server's bytes after the end of data are missing from the trace
 * (the client acknowledged them): the reply may be there, so the finding
 * is only possible. */
START_TEST(q129140_gap_is_not_a_guess)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&c);
    say(&c, 0, "Subject: x\r\n\r\nbody\r\n.\r\n");
    c.seq[1] += 12; /* "250 queued\r\n" never captured */
    say(&c, 1, "221 bye\r\n");
    at(&w, 30);
    fin(&c, 0);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(r->stats.gaps, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q129140");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->certain, 0);
    fg_diag_report_free(r);
}
END_TEST

/* ---- Q197142 ------------------------------------------------------------ */

START_TEST(q197142_retry_with_helo)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    say(&c, 1, "220 mx\r\n");
    uint64_t ehlo = say(&c, 0, "EHLO gw.test\r\n");
    uint64_t close = fin(&c, 1);
    fin(&c, 0);
    at(&w, 2);
    struct conn d = c_open(&w, "10.0.0.1", 50001, "10.0.0.9", 25);
    uint64_t reopen = d.w->frames - 2;
    say(&d, 1, "220 mx\r\n");
    uint64_t helo = say(&d, 0, "HELO gw.test\r\n");
    say(&d, 1, "250 mx\r\n");
    say(&d, 0, "MAIL FROM:<a@b.test>\r\n");
    say(&d, 1, "250 ok\r\n");
    say(&d, 0, "RCPT TO:<c@d.test>\r\n");
    say(&d, 1, "250 ok\r\n");
    say(&d, 0, "DATA\r\n");
    say(&d, 1, "354 go\r\n");
    say(&d, 0, "Subject: s\r\n\r\nx\r\n.\r\n");
    uint64_t ok = say(&d, 1, "250 ok\r\n");
    fin(&d, 0);
    fin(&d, 1);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(r->n, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q197142");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->conn, 1);
    ck_assert(has_frame(f, ehlo) && has_frame(f, close));
    ck_assert(has_frame(f, reopen) && has_frame(f, helo) && has_frame(f, ok));
    ck_assert_ptr_nonnull(strstr(f->summary, "used HELO"));
    ck_assert_ptr_nonnull(strstr(f->summary, "connection #2"));
    fg_diag_report_free(r);
}
END_TEST

START_TEST(q197142_never_again)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "192.0.2.1", 50000, "192.0.2.9", 25);
    say(&c, 1, "220 mx\r\n");
    uint64_t ehlo = say(&c, 0, "EHLO gw.test\r\n");
    uint64_t close = seg(&c, 1, RST | ACK, "", 0);
    /* Other traffic goes on for two minutes; the gateway never returns. */
    at(&w, 120);
    session(&w, "192.0.2.5", 40000, "192.0.2.1", 25, "x@y.test", "Subject: s\r\n");
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    const struct fg_diag_finding *f = find_kb(r, "Q197142");
    ck_assert_ptr_nonnull(f);
    ck_assert(has_frame(f, ehlo) && has_frame(f, close));
    ck_assert_ptr_nonnull(strstr(f->summary, "reset"));
    ck_assert_ptr_nonnull(strstr(f->summary, "did not connect"));
    ck_assert_int_eq(f->certain, 1);
    fg_diag_report_free(r);
}
END_TEST

/* ---- Q135031 ------------------------------------------------------------ */

START_TEST(q135031_stuck_message)
{
    struct writer w;
    w_open(&w);
    /* tok-a relayed; tok-b accepted and never seen again; tok-c accepted
     * after it and relayed. */
    session(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@po.test", "X-Faultgate-Token: tok-a\r\n");
    session(&w, "10.0.0.1", 50001, "10.0.0.9", 25, "a@po.test", "X-Faultgate-Token: tok-a\r\n");
    at(&w, 1);
    uint64_t acc_b =
        session(&w, "10.0.0.5", 40002, "10.0.0.1", 25, "b@po.test", "X-Faultgate-Token: tok-b\r\n");
    at(&w, 2);
    session(&w, "10.0.0.5", 40003, "10.0.0.1", 25, "c@po.test", "X-Faultgate-Token: tok-c\r\n");
    at(&w, 3);
    session(&w, "10.0.0.1", 50002, "10.0.0.9", 25, "c@po.test", "X-Faultgate-Token: tok-c\r\n");
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    ck_assert_uint_eq(r->n, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q135031");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->conn, 3);
    ck_assert_int_eq(f->certain, 1);
    ck_assert(has_frame(f, acc_b));
    ck_assert_ptr_nonnull(strstr(f->summary, "tok-b"));
    ck_assert_uint_eq(r->relayed, 2);
    fg_diag_report_free(r);
}
END_TEST

/* ---- Q131150 ------------------------------------------------------------ */

START_TEST(q131150_inbound_refused_while_stalled)
{
    struct writer w;
    w_open(&w);
    /* Inbound before the stall is answered: 10.0.0.1:25 is an SMTP
     * service. */
    session(&w, "10.0.0.5", 40000, "10.0.0.1", 25, "a@b.test", "Subject: before\r\n");
    at(&w, 1);
    /* The gateway's outbound session stalls after DATA's 354: no end of
     * data for 60 s. */
    struct conn o = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&o);
    uint64_t last = say(&o, 0, "Subject: x\r\n\r\npart\r\n");
    /* Inbound during the stall: one refused, one never greeted. */
    at(&w, 10);
    struct conn i1 = c_open(&w, "10.0.0.6", 40001, "10.0.0.1", 25);
    uint64_t i1_open = i1.w->frames - 2;
    uint64_t i1_rst = seg(&i1, 1, RST | ACK, "", 0);
    at(&w, 20);
    struct conn i2 = c_open(&w, "10.0.0.7", 40002, "10.0.0.1", 25);
    uint64_t i2_open = i2.w->frames - 2;
    at(&w, 50);
    uint64_t i2_fin = fin(&i2, 0);
    at(&w, 61);
    uint64_t resume = say(&o, 0, "rest\r\n.\r\n");
    say(&o, 1, "250 ok\r\n");
    fin(&o, 0);
    fin(&o, 1);
    /* After the stall, inbound is answered again. */
    at(&w, 70);
    session(&w, "10.0.0.5", 40003, "10.0.0.1", 25, "a@b.test", "Subject: after\r\n");
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n != 1)
        dump(r);
    ck_assert_uint_eq(r->n, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q131150");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->conn, 2);
    ck_assert(has_frame(f, last) && has_frame(f, resume));
    ck_assert(has_frame(f, i1_open) && has_frame(f, i1_rst));
    ck_assert(has_frame(f, i2_open) && has_frame(f, i2_fin));
    ck_assert_ptr_nonnull(strstr(f->summary, "2 connections"));
    ck_assert_ptr_nonnull(f->detail);
    ck_assert_ptr_nonnull(strstr(f->detail, "refused"));
    fg_diag_report_free(r);
}
END_TEST

/* The same stall, but inbound connections are greeted at once: no
 * Q131150 (and the body did resume, so no Q129140 either). */
START_TEST(q131150_healthy_while_stalled)
{
    struct writer w;
    w_open(&w);
    struct conn o = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&o);
    say(&o, 0, "Subject: x\r\n\r\npart\r\n");
    at(&w, 10);
    session(&w, "10.0.0.6", 40001, "10.0.0.1", 25, "a@b.test", "Subject: during\r\n");
    at(&w, 61);
    say(&o, 0, "rest\r\n.\r\n");
    say(&o, 1, "250 ok\r\n");
    fin(&o, 0);
    fin(&o, 1);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n)
        dump(r);
    ck_assert_uint_eq(r->n, 0);
    fg_diag_report_free(r);
}
END_TEST

/* A multihomed gateway: mail arrives on 10.0.0.1 and leaves from
 * 10.0.0.2 (the first message shows it).  The second message's outbound
 * session waits 60 s for the reply to its end of data while SYNs to
 * 10.0.0.1:25 get RST (tie = 1), or are greeted (tie = 1, healthy = 1);
 * with no message seen on both addresses nothing ties them (tie = 0). */
static struct fg_diag_report *multihomed(int tie, int healthy, uint64_t *rst)
{
    struct writer w;
    w_open(&w);
    if (tie) {
        session(&w, "10.0.0.5", 40000, "10.0.0.1", 25, "a@b.test", "Message-ID: <m1@b.test>\r\n");
        at(&w, 0.5);
        session(&w, "10.0.0.2", 50000, "10.0.0.9", 25, "a@b.test", "Message-ID: <m1@b.test>\r\n");
    } else {
        session(&w, "10.0.0.5", 40000, "10.0.0.1", 25, "a@b.test", "Subject: x\r\n");
    }
    at(&w, 1);
    session(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@b.test", "Message-ID: <m2@b.test>\r\n");
    struct conn o =
        session_to_eod(&w, "10.0.0.2", 50001, "10.0.0.9", 25, "a@b.test",
                       tie ? "Message-ID: <m2@b.test>\r\n" : "Message-ID: <m9@b.test>\r\n");
    at(&w, 10);
    if (healthy) {
        session(&w, "10.0.0.6", 40002, "10.0.0.1", 25, "a@b.test", "Message-ID: <m3@b.test>\r\n");
    } else {
        struct conn i1 = c_open(&w, "10.0.0.6", 40002, "10.0.0.1", 25);
        *rst = seg(&i1, 1, RST | ACK, "", 0);
    }
    at(&w, 61);
    say(&o, 1, "250 ok\r\n");
    say(&o, 0, "QUIT\r\n");
    say(&o, 1, "221 bye\r\n");
    fin(&o, 0);
    fin(&o, 1);
    if (healthy) {
        at(&w, 62);
        session(&w, "10.0.0.2", 50002, "10.0.0.9", 25, "a@b.test", "Message-ID: <m3@b.test>\r\n");
    }
    w_close(&w);
    return diagnose();
}

START_TEST(q131150_multihomed)
{
    uint64_t rst = 0;
    struct fg_diag_report *r = multihomed(1, 0, &rst);
    const struct fg_diag_finding *f = find_kb(r, "Q131150");
    if (!f)
        dump(r);
    ck_assert_ptr_nonnull(f);
    ck_assert(has_frame(f, rst));
    /* It names both addresses it tied together, and why. */
    ck_assert_ptr_nonnull(strstr(f->summary, "to 10.0.0.1 "));
    ck_assert_ptr_nonnull(strstr(f->summary, "left from 10.0.0.2"));
    ck_assert_str_eq(f->client, "10.0.0.2:50001");
    fg_diag_report_free(r);

    /* Greeted at once: quiet. */
    r = multihomed(1, 1, &rst);
    if (count_kb(r, "Q131150"))
        dump(r);
    ck_assert_uint_eq(count_kb(r, "Q131150"), 0);
    fg_diag_report_free(r);

    /* Nothing ties 10.0.0.1 to 10.0.0.2: another host's refusals are not
     * this stall's. */
    r = multihomed(0, 0, &rst);
    ck_assert_uint_eq(count_kb(r, "Q131150"), 0);
    fg_diag_report_free(r);
}
END_TEST

/* ---- output and errors -------------------------------------------------- */

START_TEST(json_and_text)
{
    struct writer w;
    w_open(&w);
    struct conn c = c_open(&w, "10.0.0.1", 50000, "10.0.0.9", 25);
    to_body(&c);
    say(&c, 0, "Subject: x\r\n\r\nbody\r\n");
    uint64_t eod = say(&c, 0, ".\r\n");
    at(&w, 20);
    fin(&c, 0);
    w_close(&w);
    struct fg_diag_report *r = diagnose();

    char out[256];
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    FILE *f = fopen(out, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fg_diag_print_json(f, path, r), 0);
    fclose(f);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    ck_assert_msg(j != NULL, "json: %s", je.text);
    json_t *fa = json_object_get(j, "findings");
    ck_assert_uint_eq(json_array_size(fa), 1);
    json_t *x = json_array_get(fa, 0);
    ck_assert_str_eq(json_string_value(json_object_get(x, "kb")), "Q129140");
    ck_assert_int_eq(json_integer_value(json_object_get(x, "connection")), 1);
    json_t *fr = json_object_get(x, "frames");
    int seen = 0;
    for (size_t i = 0; i < json_array_size(fr); i++)
        seen |= (uint64_t)json_integer_value(json_array_get(fr, i)) == eod;
    ck_assert(seen);
    json_decref(j);

    f = fopen(out, "w");
    fg_diag_print(f, path, r);
    fclose(f);
    f = fopen(out, "r");
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "Q129140  end of data never answered"));
    unlink(out);
    fg_diag_report_free(r);
}
END_TEST

START_TEST(bad_captures)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_diag_report *r = NULL;
    ck_assert_int_eq(fg_diagnose("/nonexistent/x.pcap", NULL, &r, err, sizeof err), FG_ETRACE);
    ck_assert_ptr_null(r);
    ck_assert_uint_gt(strlen(err), 0);
    FILE *f = fopen(path, "w");
    fputs("not a capture\n", f);
    fclose(f);
    ck_assert_int_eq(fg_diagnose(path, NULL, &r, err, sizeof err), FG_ETRACE);

    /* Cut inside its last record: diagnosed up to the cut, and said so. */
    struct writer w;
    w_open(&w);
    session(&w, "10.0.0.5", 40000, "10.0.0.1", 25, "a@b.test", "Subject: s\r\n");
    w_close(&w);
    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    ck_assert_int_eq(truncate(path, sz - 3), 0);
    ck_assert_int_eq(fg_diagnose(path, NULL, &r, err, sizeof err), 0);
    ck_assert_int_eq(r->stats.truncated, 1);
    ck_assert_ptr_nonnull(r->notes);
    ck_assert_ptr_nonnull(strstr(r->notes, "cut short"));
    fg_diag_report_free(r);
}
END_TEST

/* ---- Q194685: X.400 over RFC 1006 --------------------------------------- */

/* Bytes of one side cut into segments of at most mss octets; returns the
 * frame holding the last octet. */
static uint64_t xsend(struct conn *c, int dir, const struct fg_x400_buf *b, size_t mss)
{
    uint64_t f = 0;
    for (size_t off = 0; off < b->len; off += mss)
        f = seg(c, dir, PSH | ACK, (const char *)b->p + off,
                b->len - off < mss ? b->len - off : mss);
    return f;
}

/* SPDUs (a TSDU) in DT TPDUs of 128 octets. */
static uint64_t xtsdu(struct conn *c, int dir, const struct fg_x400_buf *t, size_t mss)
{
    struct fg_x400_buf b = {0};
    fg_x400_put_dt(&b, t->p, t->len, 128);
    uint64_t f = xsend(c, dir, &b, mss);
    fg_x400_buf_free(&b);
    return f;
}

/* A category-0 SPDU (GT or PT; 0: none) then si with a serial (< 0: none). */
static uint64_t xpair(struct conn *c, int dir, uint8_t si0, uint8_t si, int serial, size_t mss)
{
    struct fg_x400_buf t = {0}, p = {0};
    if (si0)
        fg_x400_put_spdu(&t, si0, NULL, 0, NULL, 0, 0);
    if (serial >= 0)
        fg_x400_put_serial(&p, (uint32_t)serial);
    fg_x400_put_spdu(&t, si, p.p, p.len, NULL, 0, 0);
    uint64_t f = xtsdu(c, dir, &t, mss);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&p);
    return f;
}

static uint64_t xone(struct conn *c, int dir, uint8_t si, const struct fg_x400_buf *params,
                     size_t mss)
{
    struct fg_x400_buf t = {0};
    fg_x400_put_spdu(&t, si, params ? params->p : NULL, params ? params->len : 0, NULL, 0, 0);
    uint64_t f = xtsdu(c, dir, &t, mss);
    fg_x400_buf_free(&t);
    return f;
}

/* CR/CC, CN with PConnect, AC with PAccept, and an activity (GT+AS). */
static void xassociate(struct conn *c, size_t mss)
{
    struct fg_x400_buf b = {0}, ud = {0}, p = {0}, g = {0};
    fg_x400_put_cr(&b, 1, 0x0b, "\x00\x01", 2, "\x00\x01", 2);
    xsend(c, 0, &b, mss);
    b.len = 0;
    fg_x400_put_cc(&b, 1, 0x4242, 0x0b, "\x00\x01", 2, "\x00\x01", 2);
    xsend(c, 1, &b, mss);
    fg_x400_rts_pconnect(&ud, 1, 3, 1, NULL, 0);
    fg_x400_put_pi_byte(&g, FG_PI_PROTO_OPT, 0);
    fg_x400_put_pi_byte(&g, FG_PI_VERSION, 2);
    fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    xone(c, 0, FG_SI_CN, &p, mss);
    p.len = ud.len = 0;
    fg_x400_rts_paccept(&ud, 1, 3, NULL, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    xone(c, 1, FG_SI_AC, &p, mss);
    struct fg_x400_buf t = {0};
    p.len = 0;
    fg_x400_put_pi(&p, FG_PI_ACT_ID, "\x02\x01\x01", 3);
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_AS, p.p, p.len, NULL, 0, 0);
    xtsdu(c, 0, &t, mss);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&b);
    fg_x400_buf_free(&ud);
    fg_x400_buf_free(&p);
    fg_x400_buf_free(&g);
}

static void xdata(struct conn *c, size_t mss)
{
    static const char text[] = "From: a@b.test\r\nX-Faultgate-Token: tok-x4\r\n\r\nhello\r\n";
    struct fg_x400_buf t = {0};
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_DT, NULL, 0, text, sizeof text - 1, 0);
    xtsdu(c, 0, &t, mss);
    fg_x400_buf_free(&t);
}

enum xabort { XA_AB, XA_DR, XA_RST, XA_NONE };

/* The peer (the responder) ends the association; returns the frame. */
static uint64_t xabort(struct conn *c, enum xabort how, size_t mss)
{
    struct fg_x400_buf p = {0};
    uint64_t f = 0;
    switch (how) {
    case XA_AB:
        fg_x400_put_pi_byte(&p, FG_PI_TDISC, FG_TDISC_RELEASED | FG_TDISC_PROTO_ERROR);
        f = xone(c, 1, FG_SI_AB, &p, mss);
        fin(c, 1);
        fin(c, 0);
        break;
    case XA_DR:
        fg_x400_put_dr(&p, 1, 0x4242, 0);
        f = xsend(c, 1, &p, mss);
        fin(c, 1);
        fin(c, 0);
        break;
    case XA_RST:
        f = seg(c, 1, RST | ACK, "", 0);
        break;
    case XA_NONE:
        break;
    }
    fg_x400_buf_free(&p);
    return f;
}

/* AE/AEA then FN/DN: a released association. */
static void xrelease(struct conn *c, unsigned next_sn, size_t mss)
{
    xpair(c, 0, FG_SI_GT, FG_SI_AE, (int)next_sn, mss);
    xpair(c, 1, FG_SI_PT, FG_SI_AEA, (int)next_sn, mss);
    struct fg_x400_buf p = {0};
    fg_x400_put_pi_byte(&p, FG_PI_TDISC, FG_TDISC_RELEASED);
    xone(c, 0, FG_SI_FN, &p, mss);
    xone(c, 1, FG_SI_DN, NULL, mss);
    fg_x400_buf_free(&p);
    fin(c, 0);
    fin(c, 1);
}

/* A healthy transfer: nmip valid MIPs, each answered, then release. */
static void xhealthy(struct conn *c, unsigned nmip, size_t mss)
{
    xassociate(c, mss);
    for (unsigned k = 1; k <= nmip; k++) {
        xdata(c, mss);
        xpair(c, 0, FG_SI_GT, FG_SI_MIP, (int)k, mss);
        xpair(c, 1, FG_SI_PT, FG_SI_MIA, (int)k, mss);
    }
    xrelease(c, nmip + 1, mss);
}

struct x4case {
    int serials[3]; /* of the MIPs sent; the first invalid one is the symptom */
    int bare;       /* that MIP is sent without its GT */
    const char *rule, *desc;
};

static const struct x4case x4cases[] = {
    {{0, 1, 2}, 0, "serial-not-vm", "GT+MIP serial 0"},
    {{1, 1, 2}, 0, "serial-not-vm", "GT+MIP serial 1"},
    {{1, 2, 4}, 0, "serial-not-vm", "GT+MIP serial 4"},
    {{1, 2, 3}, 1, "concatenation", "MIP serial 1"},
};

/* Each invalid minor sync point, each kind of abort, on the standard port
 * and another, segmented finely and coarsely, between healthy SMTP and
 * X.400 traffic: one finding at the bad SPDU's frame and the abort's, with
 * the rule and its X.225 source, in the report, the person's text and the
 * JSON. */
START_TEST(q194685_invalid_sync_then_abort)
{
    const struct x4case *xc = &x4cases[_i % 4];
    enum xabort how = (enum xabort)((_i / 4) % 3);
    int port = (_i / 12) % 2 ? 102 : 7001;
    size_t mss = (_i / 24) % 2 ? 1 : 1448;

    struct writer w;
    w_open(&w);
    session(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@company1.test", "Subject: s\r\n");
    struct conn ok = c_open(&w, "10.0.0.1", 41000, "10.0.0.7", port);
    xhealthy(&ok, 2, mss);

    struct conn c = c_open(&w, "10.0.0.1", 41001, "10.0.0.7", port);
    xassociate(&c, mss);
    uint64_t bad = 0;
    for (unsigned k = 0; k < 3 && !bad; k++) {
        xdata(&c, mss);
        int broken = (xc->bare && k == 0) || xc->serials[k] != (int)k + 1;
        uint64_t f =
            xpair(&c, 0, xc->bare && k == 0 ? 0 : FG_SI_GT, FG_SI_MIP, xc->serials[k], mss);
        if (broken)
            bad = f;
        else
            xpair(&c, 1, FG_SI_PT, FG_SI_MIA, xc->serials[k], mss);
    }
    ck_assert_uint_ne(bad, 0);
    at(&w, 0.5);
    uint64_t ab = xabort(&c, how, mss);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n != 1)
        dump(r);
    ck_assert_uint_eq(r->n, 1);
    ck_assert_uint_eq(r->x400_conns, 2);
    ck_assert_uint_eq(r->smtp_conns, 1);
    const struct fg_diag_finding *f = find_kb(r, "Q194685");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->conn, 3);
    ck_assert_int_eq(f->certain, 1);
    ck_assert_uint_eq(f->nframes, 2);
    ck_assert_uint_eq(f->frames[0], bad);
    ck_assert_uint_eq(f->frames[1], ab);
    ck_assert_str_eq(f->rule, xc->rule);
    ck_assert_msg(strncmp(f->source, "X.225", 5) == 0, "%s", f->source);
    ck_assert_msg(strstr(f->summary, xc->desc), "%s", f->summary);
    char fr[64];
    snprintf(fr, sizeof fr, "frame %llu", (unsigned long long)bad);
    ck_assert_msg(strstr(f->summary, fr), "%s", f->summary);
    snprintf(fr, sizeof fr, "frame %llu", (unsigned long long)ab);
    ck_assert_msg(strstr(f->summary, fr), "%s", f->summary);
    const char *abname = how == XA_AB   ? "AB (transport disconnect 05: protocol error)"
                         : how == XA_DR ? "COTP DR"
                                        : "TCP RST";
    ck_assert_msg(strstr(f->summary, abname), "%s", f->summary);
    ck_assert_msg(strstr(f->summary, "the responder ended"), "%s", f->summary);

    /* The person's text and the JSON carry the rule and its source. */
    char out[256];
    snprintf(out, sizeof out, "%s/out.txt", tmpdir);
    FILE *o = fopen(out, "w");
    ck_assert_ptr_nonnull(o);
    fg_diag_print(o, path, r);
    fclose(o);
    o = fopen(out, "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, o);
    text[n] = '\0';
    fclose(o);
    char want[160];
    snprintf(want, sizeof want, "rule broken: %s (%s)", f->rule, f->source);
    ck_assert_msg(strstr(text, want), "%s", text);
    ck_assert_msg(strstr(text, "Q194685  invalid minor sync point followed by an abort"), "%s",
                  text);
    o = fopen(out, "w");
    ck_assert_int_eq(fg_diag_print_json(o, path, r), 0);
    fclose(o);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    ck_assert_msg(j != NULL, "json: %s", je.text);
    json_t *x = json_array_get(json_object_get(j, "findings"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(x, "kb")), "Q194685");
    ck_assert_str_eq(json_string_value(json_object_get(x, "rule")), xc->rule);
    ck_assert_str_eq(json_string_value(json_object_get(x, "rule_source")), f->source);
    json_t *jf = json_object_get(x, "frames");
    ck_assert_uint_eq(json_array_size(jf), 2);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_array_get(jf, 0)), bad);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_array_get(jf, 1)), ab);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(j, "stats"), "x400_connections")), 2);
    json_decref(j);
    unlink(out);
    fg_diag_report_free(r);
}
END_TEST

/* No abort to report: healthy associations (one of them on an unusual
 * port, one segmented octet by octet), an abort with no invalid sync
 * point before it, and a capture that starts in the middle of an
 * association (no CR: the session state is unknown, so nothing is
 * judged).  An invalid sync point the peer let pass (the association was
 * released), and one followed by an abort only after a release (a RST
 * once DN was sent), are the cause of Q194685 without its abort: each is
 * reported as such, with the MIP's frame alone. */
START_TEST(q194685_healthy)
{
    struct writer w;
    w_open(&w);
    struct conn a = c_open(&w, "10.0.0.1", 41000, "10.0.0.7", 102);
    xhealthy(&a, 3, 1448);
    struct conn b = c_open(&w, "10.0.0.1", 41001, "10.0.0.8", 5000);
    xhealthy(&b, 2, 1);
    session(&w, "10.0.0.5", 40001, "10.0.0.1", 25, "a@company1.test", "Subject: s\r\n");

    struct conn c = c_open(&w, "10.0.0.1", 41002, "10.0.0.7", 102);
    xassociate(&c, 1448);
    xdata(&c, 1448);
    xpair(&c, 0, FG_SI_GT, FG_SI_MIP, 1, 1448);
    xpair(&c, 1, FG_SI_PT, FG_SI_MIA, 1, 1448);
    xabort(&c, XA_AB, 1448); /* an abort, but every sync point was valid */

    struct conn d = c_open(&w, "10.0.0.1", 41003, "10.0.0.7", 102);
    xassociate(&d, 1448);
    xdata(&d, 1448);
    xpair(&d, 0, FG_SI_GT, FG_SI_MIP, 5, 1448); /* invalid, but no abort follows */
    xpair(&d, 1, FG_SI_PT, FG_SI_MIA, 5, 1448);
    xrelease(&d, 6, 1448);

    struct conn e = c_open(&w, "10.0.0.1", 41004, "10.0.0.7", 102);
    xassociate(&e, 1448);
    xdata(&e, 1448);
    xpair(&e, 0, FG_SI_GT, FG_SI_MIP, 9, 1448); /* invalid, then released, then RST */
    xpair(&e, 1, FG_SI_PT, FG_SI_MIA, 9, 1448);
    xpair(&e, 0, FG_SI_GT, FG_SI_AE, 10, 1448);
    xpair(&e, 1, FG_SI_PT, FG_SI_AEA, 10, 1448);
    struct fg_x400_buf p = {0};
    fg_x400_put_pi_byte(&p, FG_PI_TDISC, FG_TDISC_RELEASED);
    xone(&e, 0, FG_SI_FN, &p, 1448);
    xone(&e, 1, FG_SI_DN, NULL, 1448);
    fg_x400_buf_free(&p);
    seg(&e, 1, RST | ACK, "", 0);

    /* Mid-association: no handshake, no CR; a MIP then an abort. */
    struct conn m = {&w, "10.0.0.1", "10.0.0.7", 41005, 102, {5000, 9000}};
    xdata(&m, 1448);
    xpair(&m, 0, FG_SI_GT, FG_SI_MIP, 7, 1448);
    xabort(&m, XA_AB, 1448);
    w_close(&w);

    struct fg_diag_report *r = diagnose();
    if (r->n != 2)
        dump(r);
    ck_assert_uint_eq(r->n, 2);
    for (size_t i = 0; i < r->n; i++) {
        ck_assert_str_eq(r->f[i].kb, "Q194685");
        ck_assert_str_eq(r->f[i].symptom, "invalid minor sync point, no abort followed");
        ck_assert_str_eq(r->f[i].rule, "serial-not-vm");
        ck_assert_uint_eq(r->f[i].nframes, 1);
        ck_assert_ptr_nonnull(strstr(r->f[i].summary, "no abort followed"));
    }
    ck_assert_uint_eq(r->x400_conns, 5);
    ck_assert_uint_eq(r->smtp_conns, 1);
    fg_diag_report_free(r);
}
END_TEST

static Suite *diag_suite(void)
{
    Suite *s = suite_create("diagnose");
    TCase *tc = tcase_create("symptoms");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, healthy_relay);
    tcase_add_test(tc, relayed_before_own_reply);
    tcase_add_test(tc, healthy_slow_and_one_leg);
    tcase_add_test(tc, q129140_client_gives_up);
    tcase_add_test(tc, q129140_still_waiting_and_body_stalled);
    tcase_add_test(tc, q129140_gap_is_not_a_guess);
    tcase_add_test(tc, q197142_retry_with_helo);
    tcase_add_test(tc, q197142_never_again);
    tcase_add_test(tc, q135031_stuck_message);
    tcase_add_test(tc, q131150_inbound_refused_while_stalled);
    tcase_add_test(tc, q131150_healthy_while_stalled);
    tcase_add_test(tc, q131150_multihomed);
    tcase_add_test(tc, json_and_text);
    tcase_add_test(tc, bad_captures);
    tcase_add_loop_test(tc, q194685_invalid_sync_then_abort, 0, 48);
    tcase_add_test(tc, q194685_healthy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(diag_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
