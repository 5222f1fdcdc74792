/* check_x400_timeline.c - the X.400 timeline of a capture and the X.400
 * expectations (x400-minor-sync-valid, x400-association-completed,
 * x400-recovers-after-abort).
 *
 * Each test writes a capture by hand (libpcap's pcap_open_dead and
 * pcap_dump, Ethernet/IPv4/TCP) carrying an X.400 exchange made with the
 * shared codec's encoders, cut into TCP segments of every size, and checks
 * the events, their frames, the rules broken, and the verdicts with their
 * evidence.
 */
#include <arpa/inet.h>
#include <check.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/judge.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"
#include "faultgate/x400_timeline.h"

#define X400_PORT 10102
#define BASE_US (1700000000ull * 1000000)

static char path[128], ypath[128];

static void setup(void)
{
    snprintf(path, sizeof path, "/tmp/fg-check-x4tl-%ld.pcap", (long)getpid());
    snprintf(ypath, sizeof ypath, "/tmp/fg-check-x4tl-%ld.yaml", (long)getpid());
}

static void teardown(void)
{
    unlink(path);
    unlink(ypath);
}

/* --- writing a capture ------------------------------------------------------ */

enum { FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10 };

struct writer {
    pcap_t *p;
    pcap_dumper_t *d;
    uint64_t us, frames;
};

static void w_open(struct writer *w)
{
    memset(w, 0, sizeof *w);
    w->p = pcap_open_dead(DLT_EN10MB, 65535);
    ck_assert_ptr_nonnull(w->p);
    w->d = pcap_dump_open(w->p, path);
    ck_assert_ptr_nonnull(w->d);
    w->us = BASE_US;
}

static void w_close(struct writer *w)
{
    pcap_dump_close(w->d);
    pcap_close(w->p);
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

static void w_seg(struct writer *w, int sport, int dport, uint32_t seq, uint32_t ack, uint8_t flags,
                  const uint8_t *data, size_t len)
{
    static uint8_t f[14 + 40 + 65536];
    ck_assert_uint_le(len, 65000);
    memset(f, 0x02, 12);
    put16(f + 12, 0x0800);
    uint8_t *b = f + 14;
    memset(b, 0, 40);
    b[0] = 0x45;
    put16(b + 2, (uint16_t)(40 + len));
    put16(b + 6, 0x4000);
    b[8] = 64;
    b[9] = 6;
    inet_pton(AF_INET, "127.0.0.1", b + 12);
    inet_pton(AF_INET, "127.0.0.1", b + 16);
    uint8_t *t = b + 20;
    put16(t, (uint16_t)sport);
    put16(t + 2, (uint16_t)dport);
    put32(t + 4, seq);
    put32(t + 8, ack);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 65535);
    if (len)
        memcpy(t + 20, data, len);
    struct pcap_pkthdr h;
    memset(&h, 0, sizeof h);
    w->us += 1000;
    h.ts.tv_sec = (time_t)(w->us / 1000000);
    h.ts.tv_usec = (suseconds_t)(w->us % 1000000);
    h.caplen = h.len = (bpf_u_int32)(14 + 40 + len);
    pcap_dump((u_char *)w->d, &h, f);
    w->frames++;
}

/* One TCP connection; seg is the largest segment written (the bytes of one
 * send are cut into segments of at most seg octets). */
struct tconn {
    struct writer *w;
    int cport;
    uint32_t next[2];
    size_t seg;
    /* The frame holding the last octet of each send, for the checks. */
    uint64_t last_frame;
};

static void c_open(struct tconn *c, struct writer *w, int cport, size_t seg)
{
    memset(c, 0, sizeof *c);
    c->w = w;
    c->cport = cport;
    c->seg = seg;
    c->next[0] = 1000;
    c->next[1] = 5000;
    w_seg(w, cport, X400_PORT, c->next[0]++, 0, SYN, NULL, 0);
    w_seg(w, X400_PORT, cport, c->next[1]++, c->next[0], SYN | ACK, NULL, 0);
    w_seg(w, cport, X400_PORT, c->next[0], c->next[1], ACK, NULL, 0);
}

static void c_send(struct tconn *c, int from, const struct fg_x400_buf *b)
{
    for (size_t off = 0; off < b->len;) {
        size_t n = b->len - off < c->seg ? b->len - off : c->seg;
        if (from == 0)
            w_seg(c->w, c->cport, X400_PORT, c->next[0], c->next[1], PSH | ACK, b->p + off, n);
        else
            w_seg(c->w, X400_PORT, c->cport, c->next[1], c->next[0], PSH | ACK, b->p + off, n);
        c->next[from] += (uint32_t)n;
        off += n;
    }
    c->last_frame = c->w->frames;
}

static void c_fin(struct tconn *c, int from)
{
    if (from == 0)
        w_seg(c->w, c->cport, X400_PORT, c->next[0]++, c->next[1], FIN | ACK, NULL, 0);
    else
        w_seg(c->w, X400_PORT, c->cport, c->next[1]++, c->next[0], FIN | ACK, NULL, 0);
}

/* --- X.400 building blocks (the shared codec's encoders) -------------------- */

/* A TSDU in DT TPDUs of 128 octets (so a large one is segmented). */
static void tsdu(struct tconn *c, int from, const struct fg_x400_buf *t)
{
    struct fg_x400_buf b = {0};
    fg_x400_put_dt(&b, t->p, t->len, 128);
    c_send(c, from, &b);
    fg_x400_buf_free(&b);
}

/* A category-0 SPDU then one SPDU with an optional serial. */
static void pair(struct tconn *c, int from, uint8_t si0, uint8_t si, int serial)
{
    struct fg_x400_buf t = {0}, p = {0};
    fg_x400_put_spdu(&t, si0, NULL, 0, NULL, 0, 0);
    if (serial >= 0)
        fg_x400_put_serial(&p, (uint32_t)serial);
    fg_x400_put_spdu(&t, si, p.p, p.len, NULL, 0, 0);
    tsdu(c, from, &t);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&p);
}

static void bare_mip(struct tconn *c, int serial)
{
    struct fg_x400_buf t = {0}, p = {0};
    fg_x400_put_serial(&p, (uint32_t)serial);
    fg_x400_put_spdu(&t, FG_SI_MIP, p.p, p.len, NULL, 0, 0);
    tsdu(c, 0, &t);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&p);
}

static void one(struct tconn *c, int from, uint8_t si, const struct fg_x400_buf *params)
{
    struct fg_x400_buf t = {0};
    fg_x400_put_spdu(&t, si, params ? params->p : NULL, params ? params->len : 0, NULL, 0, 0);
    tsdu(c, from, &t);
    fg_x400_buf_free(&t);
}

/* CR/CC, CN (PConnect: checkpoint 1, window 3, open data of open_len
 * octets: above 254 the CN needs the long length form) and AC. */
static void associate(struct tconn *c, size_t open_len)
{
    struct fg_x400_buf b = {0};
    fg_x400_put_cr(&b, 0x0001, 0x0b, "\x00\x01", 2, "\x00\x01", 2);
    c_send(c, 0, &b);
    b.len = 0;
    fg_x400_put_cc(&b, 0x0001, 0x4242, 0x0b, "\x00\x01", 2, "\x00\x01", 2);
    c_send(c, 1, &b);
    b.len = 0;

    uint8_t open[600];
    ck_assert_uint_le(open_len, sizeof open);
    /* a BER OCTET STRING (04 82 hi lo ...) standing for a P1 bind value */
    memset(open, 'b', sizeof open);
    if (open_len >= 4) {
        open[0] = 0x04;
        open[1] = 0x82;
        open[2] = (uint8_t)((open_len - 4) >> 8);
        open[3] = (uint8_t)(open_len - 4);
    }
    struct fg_x400_buf ud = {0}, p = {0}, g = {0};
    fg_x400_rts_pconnect(&ud, 1, 3, 1, open_len ? open : NULL, open_len);
    fg_x400_put_pi_byte(&g, FG_PI_PROTO_OPT, 0);
    fg_x400_put_pi_byte(&g, FG_PI_VERSION, 2);
    fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    one(c, 0, FG_SI_CN, &p);
    p.len = ud.len = 0;
    fg_x400_rts_paccept(&ud, 1, 3, NULL, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    one(c, 1, FG_SI_AC, &p);
    fg_x400_buf_free(&b);
    fg_x400_buf_free(&ud);
    fg_x400_buf_free(&p);
    fg_x400_buf_free(&g);
}

static void activity_start(struct tconn *c)
{
    struct fg_x400_buf t = {0}, p = {0};
    fg_x400_put_pi(&p, FG_PI_ACT_ID, "\x02\x01\x01", 3);
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_AS, p.p, p.len, NULL, 0, 0);
    tsdu(c, 0, &t);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&p);
}

static void data(struct tconn *c, const char *text)
{
    struct fg_x400_buf t = {0};
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_DT, NULL, 0, text, strlen(text), 0);
    tsdu(c, 0, &t);
    fg_x400_buf_free(&t);
}

static void abort_provider(struct tconn *c)
{
    struct fg_x400_buf p = {0};
    fg_x400_put_pi_byte(&p, FG_PI_TDISC, FG_TDISC_RELEASED | FG_TDISC_PROTO_ERROR);
    one(c, 1, FG_SI_AB, &p);
    fg_x400_buf_free(&p);
    c_fin(c, 1);
    c_fin(c, 0);
}

static void release(struct tconn *c)
{
    struct fg_x400_buf p = {0};
    fg_x400_put_pi_byte(&p, FG_PI_TDISC, FG_TDISC_RELEASED);
    one(c, 0, FG_SI_FN, &p);
    one(c, 1, FG_SI_DN, NULL);
    fg_x400_buf_free(&p);
    c_fin(c, 0);
    c_fin(c, 1);
}

static char *body(const char *token)
{
    return fg_asprintf("From: a@b.test\r\nX-Faultgate-Token: %s\r\nSubject: t\r\n\r\nhello "
                       "world\r\n",
                       token);
}

/* A whole transfer: nmip MIPs with the given serials (NULL: 1, 2, ...),
 * each answered by MIA, then AE/AEA and release.  abort_at: abort by the
 * peer right after MIP number abort_at (1-based), 0 never. */
static void transfer(struct tconn *c, const char *token, unsigned nmip, const int *serials,
                     unsigned abort_at, size_t open_len)
{
    associate(c, open_len);
    activity_start(c);
    char *b = body(token);
    for (unsigned k = 1; k <= nmip; k++) {
        data(c, b);
        int sn = serials ? serials[k - 1] : (int)k;
        pair(c, 0, FG_SI_GT, FG_SI_MIP, sn);
        if (k == abort_at) {
            abort_provider(c);
            free(b);
            return;
        }
        pair(c, 1, FG_SI_PT, FG_SI_MIA, sn);
    }
    free(b);
    pair(c, 0, FG_SI_GT, FG_SI_AE, (int)nmip + 1);
    pair(c, 1, FG_SI_PT, FG_SI_AEA, (int)nmip + 1);
    release(c);
}

/* --- judging ----------------------------------------------------------------- */

static struct fg_meta *meta_new(const char *const *tokens, size_t ntok)
{
    struct fg_meta *m = fg_calloc(1, sizeof *m);
    m->scenario_id = fg_strdup("x400-test");
    m->capture_mode = fg_strdup("synth");
    m->x400_port = X400_PORT;
    m->start_us = BASE_US;
    m->ntimeouts = 1;
    m->timeouts = fg_calloc(1, sizeof *m->timeouts);
    m->timeouts[0].name = fg_strdup("retry");
    m->timeouts[0].ms = 1000;
    m->tokens = ntok ? fg_calloc(ntok, sizeof *m->tokens) : NULL;
    m->ntokens = ntok;
    for (size_t i = 0; i < ntok; i++) {
        snprintf(m->tokens[i].token, sizeof m->tokens[i].token, "%s", tokens[i]);
        m->tokens[i].accepted = 1;
        m->tokens[i].reply_code = 250;
    }
    return m;
}

static struct fg_scenario *scen(const char *expects)
{
    FILE *f = fopen(ypath, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "id: x400-test\ntitle: t\nleg: x400\nexpect:\n%s", expects);
    fclose(f);
    struct fg_scenario *sc = NULL;
    char err[FG_ERRBUF_SIZE];
    int rc = fg_scenario_load(ypath, &sc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(sc->leg, FG_LEG_X400);
    return sc;
}

static const struct fg_outcome *outcome(const struct fg_scenario_result *r, const char *rule)
{
    for (size_t i = 0; i < r->noutcomes; i++)
        if (strcmp(r->outcomes[i].rule, rule) == 0)
            return &r->outcomes[i];
    ck_abort_msg("no outcome for %s", rule);
    return NULL;
}

static const char ALL3[] = "  - {rule: x400-minor-sync-valid}\n"
                           "  - {rule: x400-association-completed, within: 10s}\n"
                           "  - {rule: x400-recovers-after-abort, within: 10s}\n";

static struct fg_x400_timeline *build(void)
{
    struct fg_x400_timeline *tl = NULL;
    char err[FG_ERRBUF_SIZE];
    int port = X400_PORT;
    int rc = fg_x400_timeline_build(path, &port, 1, &tl, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    return tl;
}

/* SPDU events as "NAME[serial]" words, for comparing timelines. */
static char *spdu_words(const struct fg_x400_timeline *tl)
{
    char *s = fg_strdup("");
    for (size_t k = 0; k < tl->nconn; k++)
        for (size_t i = 0; i < tl->conn[k].nev; i++) {
            const struct fg_x4_event *e = &tl->conn[k].ev[i];
            if (e->kind != FG_X4_SPDU && e->kind != FG_X4_TPDU && e->kind != FG_X4_ERROR)
                continue;
            char *n = fg_asprintf("%s %s%s%s%s%s", s,
                                  e->kind == FG_X4_TPDU    ? fg_cotp_name(e->tpdu)
                                  : e->kind == FG_X4_ERROR ? "ERROR"
                                                           : fg_spdu_name(e->spdu),
                                  e->has_serial ? "/" : "", e->has_serial ? e->serial_text : "",
                                  e->rule ? "!" : "", e->rule ? e->rule : "");
            free(s);
            s = n;
        }
    return s;
}

/* --- tests ------------------------------------------------------------------- */

/* A valid association under every TCP segmentation: the same events, each
 * in the frame that holds its last octet, and passing verdicts. */
START_TEST(valid_every_split)
{
    static const size_t segs[] = {1, 2, 3, 5, 7, 13, 64, 200, 65000};
    char *ref = NULL;
    for (size_t si = 0; si < sizeof segs / sizeof segs[0]; si++) {
        struct writer w;
        struct tconn c;
        w_open(&w);
        c_open(&c, &w, 40001, segs[si]);
        /* the CN's user data is long enough for the long length form */
        transfer(&c, "tok-1", 4, NULL, 0, 300);
        w_close(&w);

        struct fg_x400_timeline *tl = build();
        ck_assert_uint_eq(tl->nconn, 1);
        const struct fg_x4_conn *xc = &tl->conn[0];
        ck_assert_int_eq(xc->accepted, 1);
        ck_assert_int_eq(xc->end, FG_X4_END_RELEASED);
        ck_assert_uint_eq(xc->violations, 0);
        ck_assert_uint_eq(xc->nact, 1);
        ck_assert_int_eq(xc->act[0].completed, 1);
        ck_assert_uint_eq(xc->act[0].mips, 4);
        ck_assert_str_eq(xc->act[0].token, "tok-1");
        ck_assert_uint_eq(xc->checkpoint, 1);
        ck_assert_uint_eq(xc->window, 3);
        /* the last SPDU (DN) is in the frame of the responder's last data */
        size_t last = FG_TL_NONE;
        for (size_t i = 0; i < xc->nev; i++)
            if (xc->ev[i].kind == FG_X4_SPDU)
                last = i;
        ck_assert_uint_ne(last, FG_TL_NONE);
        ck_assert_int_eq(xc->ev[last].spdu, FG_SPDU_DN);
        ck_assert_uint_eq(xc->ev[last].frame, w.frames - 2); /* then FIN, FIN */
        char *words = spdu_words(tl);
        if (!ref)
            ref = words;
        else {
            ck_assert_str_eq(words, ref);
            free(words);
        }
        fg_x400_timeline_free(tl);
    }
    ck_assert_ptr_nonnull(strstr(ref, " CN "));
    ck_assert_ptr_nonnull(strstr(ref, " MIP/1 PT MIA/1 GT DT GT MIP/2"));
    ck_assert_ptr_nonnull(strstr(ref, " AE/5 PT AEA/5 FN DN"));
    free(ref);

    const char *tok[] = {"tok-1"};
    struct fg_scenario *sc = scen(ALL3);
    struct fg_scenario_result r;
    fg_judge(sc, meta_new(tok, 1), path, &r);
    const struct fg_outcome *o = outcome(&r, "x400-minor-sync-valid");
    ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
    ck_assert_ptr_nonnull(strstr(o->summary, "4 minor sync point(s)"));
    o = outcome(&r, "x400-association-completed");
    ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
    o = outcome(&r, "x400-recovers-after-abort");
    ck_assert_msg(o->verdict == FG_V_INCONC, "%s\n%s", o->summary, o->evidence);
    fg_scenario_result_clear(&r);
    fg_scenario_free(sc);
}
END_TEST

/* Each invalid minor sync point: the rule, the SPDU and serial, the frame
 * in the evidence, the abort that followed; in-flight SPDUs after the AB
 * are not judged. */
struct badcase {
    const char *name;
    int serials[4];
    int bare; /* send MIP number 1 without a GT */
    const char *rule, *spdu_text;
};

static const struct badcase bad_cases[] = {
    {"first-serial-0", {0, 1, 2, 3}, 0, "serial-not-vm", "GT+MIP serial 0"},
    {"duplicate", {1, 1, 2, 3}, 0, "serial-not-vm", "GT+MIP serial 1"},
    {"skipped", {1, 3, 4, 5}, 0, "serial-not-vm", "GT+MIP serial 3"},
    {"no-gt", {1, 2, 3, 4}, 1, "concatenation", "MIP serial 1"},
};

START_TEST(invalid_sync_fails_with_evidence)
{
    const struct badcase *bc = &bad_cases[_i];
    struct writer w;
    struct tconn c;
    w_open(&w);
    c_open(&c, &w, 40001, 1448);
    associate(&c, 0);
    activity_start(&c);
    char *b = body("tok-1");
    uint64_t bad_frame = 0;
    for (unsigned k = 0; k < 4; k++) {
        data(&c, b);
        if (bc->bare && k == 0)
            bare_mip(&c, bc->serials[k]);
        else
            pair(&c, 0, FG_SI_GT, FG_SI_MIP, bc->serials[k]);
        int broken = (bc->bare && k == 0) || (int)k + 1 != bc->serials[k];
        if (broken) {
            bad_frame = c.last_frame;
            abort_provider(&c);
            /* what the gateway had already sent: in flight, not judged */
            pair(&c, 0, FG_SI_GT, FG_SI_MIP, 99);
            break;
        }
        pair(&c, 1, FG_SI_PT, FG_SI_MIA, bc->serials[k]);
    }
    free(b);
    w_close(&w);
    ck_assert_uint_ne(bad_frame, 0);

    struct fg_x400_timeline *tl = build();
    ck_assert_uint_eq(tl->nconn, 1);
    ck_assert_int_eq(tl->conn[0].end, FG_X4_END_ABORTED);
    ck_assert_int_eq(tl->conn[0].end_dir, FG_S2C);
    size_t fv = tl->conn[0].first_violation;
    ck_assert_uint_ne(fv, FG_TL_NONE);
    ck_assert_str_eq(tl->conn[0].ev[fv].rule, bc->rule);
    ck_assert_uint_eq(tl->conn[0].ev[fv].frame, bad_frame);
    fg_x400_timeline_free(tl);

    const char *tok[] = {"tok-1"};
    struct fg_scenario *sc = scen(ALL3);
    struct fg_scenario_result r;
    fg_judge(sc, meta_new(tok, 1), path, &r);
    const struct fg_outcome *o = outcome(&r, "x400-minor-sync-valid");
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s", o->summary);
    ck_assert_msg(strstr(o->summary, bc->spdu_text), "%s", o->summary);
    ck_assert_msg(strstr(o->summary, bc->rule), "%s", o->summary);
    ck_assert_msg(strstr(o->summary, "X.225"), "%s", o->summary);
    char fr[32];
    snprintf(fr, sizeof fr, "frame %llu", (unsigned long long)bad_frame);
    ck_assert_msg(strstr(o->summary, fr), "%s", o->summary);
    ck_assert_msg(strstr(o->evidence, "AB (transport disconnect 05: protocol error)"), "%s",
                  o->evidence);
    ck_assert_msg(!strstr(o->evidence, "serial 99"), "%s", o->evidence);
    ck_assert_msg(strstr(o->summary, "; ") == NULL, "one invalid sync SPDU only: %s", o->summary);
    int has = 0;
    for (size_t i = 0; i < o->nframes; i++)
        has |= o->frames[i] == bad_frame;
    ck_assert(has);
    o = outcome(&r, "x400-association-completed");
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s", o->summary);
    ck_assert_msg(strstr(o->summary, bc->rule), "%s", o->summary);
    o = outcome(&r, "x400-recovers-after-abort");
    ck_assert_msg(o->verdict == FG_V_FAIL, "%s", o->summary); /* never transferred */
    ck_assert_msg(strstr(o->evidence, "tok-1 was never transferred"), "%s", o->evidence);
    fg_scenario_result_clear(&r);
    fg_scenario_free(sc);
}
END_TEST

/* Numbering not reset at the second activity of one association. */
START_TEST(no_reset_second_activity)
{
    struct writer w;
    struct tconn c;
    w_open(&w);
    c_open(&c, &w, 40001, 1448);
    associate(&c, 0);
    char *b = body("tok-1");
    for (int a = 0; a < 2; a++) {
        activity_start(&c);
        for (int k = 1; k <= 2; k++) {
            data(&c, b);
            int sn = a * 3 + k; /* 1, 2, AE 3; then 4, 5: not reset */
            pair(&c, 0, FG_SI_GT, FG_SI_MIP, sn);
            pair(&c, 1, FG_SI_PT, FG_SI_MIA, sn);
        }
        pair(&c, 0, FG_SI_GT, FG_SI_AE, a * 3 + 3);
        pair(&c, 1, FG_SI_PT, FG_SI_AEA, a * 3 + 3);
    }
    free(b);
    release(&c);
    w_close(&w);
    struct fg_x400_timeline *tl = build();
    const struct fg_x4_conn *xc = &tl->conn[0];
    ck_assert_uint_ge(xc->violations, 1);
    const struct fg_x4_event *e = &xc->ev[xc->first_violation];
    ck_assert_int_eq(e->spdu, FG_SPDU_MIP);
    ck_assert_str_eq(e->serial_text, "4");
    ck_assert_str_eq(e->rule, "serial-not-vm");
    ck_assert_uint_eq(xc->nact, 2);
    fg_x400_timeline_free(tl);
}
END_TEST

/* An aborted association followed by a new one that transfers the message:
 * recovery passes; with a limit shorter than the pause it fails; a message
 * transferred twice fails. */
START_TEST(recovery)
{
    for (int variant = 0; variant < 3; variant++) {
        struct writer w;
        struct tconn c1, c2, c3;
        w_open(&w);
        c_open(&c1, &w, 40001, 1448);
        transfer(&c1, "tok-1", 3, NULL, 2, 0); /* aborted after MIP 2 */
        w.us += 2000000;                       /* the gateway's retry, 2 s later */
        c_open(&c2, &w, 40002, 1448);
        transfer(&c2, "tok-1", 3, NULL, 0, 0);
        if (variant == 2) {
            c_open(&c3, &w, 40003, 1448);
            transfer(&c3, "tok-1", 3, NULL, 0, 0);
        }
        w_close(&w);
        const char *tok[] = {"tok-1"};
        struct fg_scenario *sc = scen(variant == 1 ? "  - {rule: x400-recovers-after-abort, "
                                                     "within: \"timeouts.retry\"}\n"
                                                   : ALL3);
        struct fg_scenario_result r;
        fg_judge(sc, meta_new(tok, 1), path, &r);
        const struct fg_outcome *o = outcome(&r, "x400-recovers-after-abort");
        if (variant == 0) {
            ck_assert_msg(o->verdict == FG_V_PASS, "%s\n%s", o->summary, o->evidence);
            ck_assert_ptr_nonnull(strstr(o->evidence, "re-associated: connection 2"));
            ck_assert_ptr_nonnull(strstr(o->evidence, "message tok-1 transferred on connection 2"));
            /* the aborted association is still an incomplete one */
            const struct fg_outcome *a = outcome(&r, "x400-association-completed");
            ck_assert_int_eq(a->verdict, FG_V_FAIL);
            ck_assert_ptr_nonnull(strstr(a->summary, "1 of 2 association(s)"));
        } else if (variant == 1) {
            ck_assert_msg(o->verdict == FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
            ck_assert_ptr_nonnull(strstr(o->evidence, "later than the limit of 1.0 s"));
        } else {
            ck_assert_msg(o->verdict == FG_V_FAIL, "%s\n%s", o->summary, o->evidence);
            ck_assert_ptr_nonnull(strstr(o->evidence, "tok-1 was transferred 2 times"));
        }
        fg_scenario_result_clear(&r);
        fg_scenario_free(sc);
    }
}
END_TEST

/* No X.400 leg in the run: inconclusive, not pass. */
START_TEST(no_leg)
{
    struct writer w;
    w_open(&w);
    w_close(&w);
    struct fg_scenario *sc = scen(ALL3);
    struct fg_scenario_result r;
    /* a trace with no frames supports no verdict at all */
    fg_judge(sc, meta_new(NULL, 0), path, &r);
    ck_assert_int_eq(r.verdict, FG_V_ERROR);
    ck_assert_ptr_nonnull(strstr(r.error, "the trace holds no frames"));
    fg_scenario_result_clear(&r);
    /* frames, but none on the X.400 leg (a connection to another port) */
    w_open(&w);
    w_seg(&w, 40025, 2525, 1000, 0, SYN, NULL, 0);
    w_seg(&w, 2525, 40025, 5000, 1001, SYN | ACK, NULL, 0);
    w_close(&w);
    struct fg_meta *m = meta_new(NULL, 0);
    m->x400_port = 0;
    fg_judge(sc, m, path, &r);
    ck_assert_int_eq(outcome(&r, "x400-minor-sync-valid")->verdict, FG_V_INCONC);
    fg_scenario_result_clear(&r);
    /* a leg with no connection on it: sync inconclusive, completion fails */
    fg_judge(sc, meta_new(NULL, 0), path, &r);
    ck_assert_int_eq(outcome(&r, "x400-minor-sync-valid")->verdict, FG_V_INCONC);
    ck_assert_int_eq(outcome(&r, "x400-association-completed")->verdict, FG_V_FAIL);
    fg_scenario_result_clear(&r);
    fg_scenario_free(sc);
}
END_TEST

/* Without ports, only connections that start with a TPKT are kept. */
START_TEST(autodetect)
{
    struct writer w;
    struct tconn c, s;
    w_open(&w);
    c_open(&s, &w, 40009, 1448);
    struct fg_x400_buf smtp = {0};
    fg_x400_buf_put(&smtp, "EHLO x\r\n", 8);
    c_send(&s, 0, &smtp);
    fg_x400_buf_free(&smtp);
    c_open(&c, &w, 40001, 1448);
    transfer(&c, "tok-1", 1, NULL, 0, 0);
    w_close(&w);
    struct fg_x400_timeline *tl = NULL;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_x400_timeline_build(path, NULL, 0, &tl, err, sizeof err), 0);
    ck_assert_uint_eq(tl->nconn, 1);
    ck_assert_int_eq(tl->conn[0].client_port, 40001);
    /* the text and JSON forms name the SPDUs and serials */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fg_x400_timeline_print(tl, f, 0);
    fg_x400_timeline_json(tl, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "GT+MIP serial 1 [si 49"));
    ck_assert_ptr_nonnull(strstr(buf, "\"spdu\": \"AEA\""));
    free(buf);
    fg_x400_timeline_free(tl);
}
END_TEST

/* The command: bad usage and an unreadable capture exit 2. */
START_TEST(command_errors)
{
    char a0[] = "x400-timeline", a1[] = "--port", a2[] = "0", a3[] = "/nonexistent.pcap";
    char *argv1[] = {a0, a1, a2, a3, NULL};
    ck_assert_int_eq(fg_cmd_x400_timeline(4, argv1), 2);
    char *argv2[] = {a0, a3, NULL};
    ck_assert_int_eq(fg_cmd_x400_timeline(2, argv2), 2);
    char *argv3[] = {a0, NULL};
    ck_assert_int_eq(fg_cmd_x400_timeline(1, argv3), 2);
}
END_TEST

/* A scenario with an x400 rule and a parameter it does not take. */
START_TEST(validation)
{
    FILE *f = fopen(ypath, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "id: x\ntitle: t\nleg: x400\nexpect:\n  - {rule: x400-minor-sync-valid, within: "
               "1s}\n");
    fclose(f);
    struct fg_scenario *sc = NULL;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_ne(fg_scenario_load(ypath, &sc, err, sizeof err), 0);
    ck_assert_msg(strstr(err, ":5:") && strstr(err, "within"), "%s", err);
    f = fopen(ypath, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "id: x\ntitle: t\nleg: x400\nexpect:\n  - {rule: x400-recovers-after-abort}\n");
    fclose(f);
    ck_assert_int_ne(fg_scenario_load(ypath, &sc, err, sizeof err), 0);
    ck_assert_msg(strstr(err, ":5:") && strstr(err, "needs `within`"), "%s", err);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("x400_timeline");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, valid_every_split);
    tcase_add_loop_test(tc, invalid_sync_fails_with_evidence, 0,
                        (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, no_reset_second_activity);
    tcase_add_test(tc, recovery);
    tcase_add_test(tc, no_leg);
    tcase_add_test(tc, autodetect);
    tcase_add_test(tc, command_errors);
    tcase_add_test(tc, validation);
    suite_add_tcase(s, tc);
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
