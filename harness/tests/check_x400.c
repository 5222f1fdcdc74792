/* check_x400.c - the X.400 codec over every byte split (TPKT, COTP,
 * session SPDUs with long-form lengths and concatenation, RTS X.410), the
 * byte templates of x400-wire.md §8, and the X.225 serial-number, token,
 * activity and window rules of x400_state.c.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"
#include "faultgate/x400_state.h"

/* --- an event recorder: each event as a line of text --------------------- */

struct rec {
    char *s;
    size_t len, cap;
    unsigned nspdu, ntpdu, nerr;
};

static void rec_add(struct rec *r, const char *line)
{
    size_t n = strlen(line);
    fg_array_reserve((void **)&r->s, &r->cap, r->len + n + 2, 1);
    memcpy(r->s + r->len, line, n);
    r->len += n;
    r->s[r->len++] = '\n';
    r->s[r->len] = 0;
}

static void rec_cb(void *ud, const struct fg_x400_event *ev)
{
    struct rec *r = ud;
    char line[512];
    if (ev->kind == FG_X400_EV_TPDU) {
        r->ntpdu++;
        snprintf(line, sizeof(line),
                 "TPDU %s @%llu..%llu li=%u eot=%d dst=%u src=%u size=%u rsn=%u",
                 fg_cotp_name(ev->tpdu->code), (unsigned long long)ev->offset,
                 (unsigned long long)ev->end, ev->tpdu->li, ev->tpdu->eot, ev->tpdu->dst_ref,
                 ev->tpdu->src_ref, ev->tpdu->tpdu_size, ev->tpdu->reason);
    } else if (ev->kind == FG_X400_EV_SPDU) {
        const struct fg_spdu *s = ev->spdu;
        r->nspdu++;
        char sb[40];
        snprintf(line, sizeof(line),
                 "SPDU %s %u/%u li=%u long=%d sn=%s tok=%02x td=%02x sur=%04x ud=%zu end=%llu",
                 fg_spdu_name(s->type), s->index, s->count, (unsigned)s->li, s->long_li,
                 fg_x400_serial_str(s, sb, sizeof(sb)), s->token_item, s->tdisc, s->sur,
                 s->user_data_len, (unsigned long long)ev->end);
    } else {
        r->nerr++;
        snprintf(line, sizeof(line), "ERROR %s fatal=%d", ev->text, ev->fatal);
    }
    rec_add(r, line);
}

static void rec_free(struct rec *r)
{
    free(r->s);
    memset(r, 0, sizeof(*r));
}

static void decode_split(const uint8_t *p, size_t n, const size_t *cuts, size_t ncuts,
                         struct rec *r)
{
    struct fg_x400_dec d;
    fg_x400_dec_init(&d, 0, rec_cb, r);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        fg_x400_dec_feed(&d, p + at, to - at);
        at = to;
    }
    fg_x400_dec_free(&d);
}

/* A whole association: CR, CC, CN with long-form LI, AC, GT+AS, a
 * segmented GT+DT, GT+MIP(1), PT+MIA(1), a GT+MIP with a long-form LI,
 * PT+MIA, GT+AE(3), PT+AEA(3), AB, DR, ER. */
static void build_stream(struct fg_x400_buf *b)
{
    struct fg_x400_buf t = {0}, p = {0}, g = {0}, ud = {0};
    uint8_t sel[2] = {0, 1};
    fg_x400_put_cr(b, 1, 0x0B, sel, 2, sel, 2);
    fg_x400_put_cc(b, 1, 0x4242, 0x0B, sel, 2, sel, 2);

    /* CN whose user data needs the long length form (> 254 octets). */
    uint8_t bind[300];
    memset(bind, 'B', sizeof(bind));
    bind[0] = 0x04; /* an OCTET STRING, opaque to the session layer */
    bind[1] = 0x82;
    bind[2] = 0x01;
    bind[3] = 0x28;
    fg_x400_rts_pconnect(&ud, 1, 3, 1, bind, sizeof(bind));
    fg_x400_put_pi_byte(&g, FG_PI_PROTO_OPT, 0);
    fg_x400_put_pi_byte(&g, FG_PI_VERSION, 2);
    fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    fg_x400_put_spdu(&t, FG_SI_CN, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 128);
    t.len = p.len = g.len = ud.len = 0;

    fg_x400_rts_paccept(&ud, 1, 3, NULL, 0);
    fg_x400_put_pi_byte(&g, FG_PI_VERSION, 2);
    fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, 0);
    fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
    fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
    fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
    fg_x400_put_spdu(&t, FG_SI_AC, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 2048);
    t.len = p.len = 0;

    uint8_t act[3] = {0x02, 0x01, 0x01};
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_pi(&p, FG_PI_ACT_ID, act, 3);
    fg_x400_put_spdu(&t, FG_SI_AS, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 2048);
    t.len = p.len = 0;

    uint8_t data[700];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7);
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_DT, NULL, 0, data, sizeof(data), 0);
    fg_x400_put_dt(b, t.p, t.len, 256); /* three DT TPDUs */
    t.len = 0;

    for (uint32_t sn = 1; sn <= 2; sn++) {
        fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
        fg_x400_put_serial(&p, sn);
        fg_x400_put_spdu(&t, FG_SI_MIP, p.p, p.len, NULL, 0, sn == 2);
        fg_x400_put_dt(b, t.p, t.len, 2048);
        t.len = 0;
        fg_x400_put_spdu(&t, FG_SI_PT, NULL, 0, NULL, 0, 0);
        fg_x400_put_spdu(&t, FG_SI_MIA, p.p, p.len, NULL, 0, 0);
        fg_x400_put_dt(b, t.p, t.len, 2048);
        t.len = p.len = 0;
    }
    fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_serial(&p, 3);
    fg_x400_put_spdu(&t, FG_SI_AE, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 2048);
    t.len = 0;
    fg_x400_put_spdu(&t, FG_SI_PT, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, FG_SI_AEA, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 2048);
    t.len = p.len = 0;

    fg_x400_put_pi_byte(&p, FG_PI_TDISC, 0x05);
    fg_x400_put_spdu(&t, FG_SI_AB, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(b, t.p, t.len, 2048);
    fg_x400_put_dr(b, 0x4242, 1, 0x85);
    fg_x400_put_er(b, 1, 0x02);
    fg_x400_buf_free(&t);
    fg_x400_buf_free(&p);
    fg_x400_buf_free(&g);
    fg_x400_buf_free(&ud);
}

START_TEST(test_stream_whole)
{
    struct fg_x400_buf b = {0};
    build_stream(&b);
    struct rec r = {0};
    decode_split(b.p, b.len, NULL, 0, &r);
    ck_assert_uint_eq(r.nerr, 0);
    /* CR CC CN(3 DTs) AC AS DT(3) MIP MIA MIP MIA AE AEA AB + DR ER */
    ck_assert_uint_eq(r.ntpdu, 2 + 3 + 1 + 1 + 3 + 6 + 1 + 2);
    ck_assert_uint_eq(r.nspdu, 1 + 1 + 2 + 2 + 8 + 4 + 1);
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU CN 0/1"));
    ck_assert_ptr_nonnull(strstr(r.s, "long=1 sn=<none> tok=00 td=00 sur=0249 ud=3"));
    ck_assert_ptr_nonnull(
        strstr(r.s, "SPDU DT 1/2 li=0 long=0 sn=<none> tok=00 td=00 sur=0000 ud=700"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU MIP 1/2 li=3 long=0 sn=1"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU MIP 1/2 li=3 long=1 sn=2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU MIA 1/2 li=3 long=0 sn=2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AE 1/2 li=3 long=0 sn=3"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AEA 1/2 li=3 long=0 sn=3"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AB 0/1 li=3 long=0 sn=<none> tok=00 td=05"));
    ck_assert_ptr_nonnull(strstr(r.s, "TPDU DR"));
    ck_assert_ptr_nonnull(strstr(r.s, "rsn=133"));
    ck_assert_ptr_nonnull(strstr(r.s, "TPDU ER"));
    ck_assert_ptr_nonnull(strstr(r.s, "TPDU CC"));
    /* the last event ends at the end of the stream */
    char endtag[64];
    snprintf(endtag, sizeof(endtag), "..%zu ", b.len);
    ck_assert_ptr_nonnull(strstr(r.s, endtag));
    rec_free(&r);
    fg_x400_buf_free(&b);
}
END_TEST

START_TEST(test_every_split)
{
    struct fg_x400_buf b = {0};
    build_stream(&b);
    struct rec whole = {0};
    decode_split(b.p, b.len, NULL, 0, &whole);
    /* every single cut point */
    for (size_t i = 0; i <= b.len; i++) {
        struct rec r = {0};
        decode_split(b.p, b.len, &i, 1, &r);
        ck_assert_msg(strcmp(r.s, whole.s) == 0, "split at %zu differs", i);
        rec_free(&r);
    }
    /* one octet at a time */
    size_t *cuts = fg_malloc(b.len * sizeof(*cuts));
    for (size_t i = 0; i < b.len; i++)
        cuts[i] = i;
    struct rec r1 = {0};
    decode_split(b.p, b.len, cuts, b.len, &r1);
    ck_assert_str_eq(r1.s, whole.s);
    rec_free(&r1);
    /* every pair of cuts within the long-form CN and around the MIPs */
    for (size_t i = 0; i < 160 && i < b.len; i++)
        for (size_t j = i; j < b.len; j += 13) {
            size_t c[2] = {i, j};
            struct rec r = {0};
            decode_split(b.p, b.len, c, 2, &r);
            ck_assert_msg(strcmp(r.s, whole.s) == 0, "split at %zu,%zu differs", i, j);
            rec_free(&r);
        }
    free(cuts);
    rec_free(&whole);
    fg_x400_buf_free(&b);
}
END_TEST

static size_t hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    unsigned v;
    int k;
    while (sscanf(s, " %2x%n", &v, &k) == 1) {
        out[n++] = (uint8_t)v;
        s += k;
    }
    return n;
}

/* x400-wire.md §8: templates that tshark decodes. */
START_TEST(test_templates)
{
    uint8_t buf[512];
    struct rec r = {0};
    size_t n = hex("03 00 00 0e 02 f0 80 01 00 31 03 2a 01 31"
                   " 03 00 00 0e 02 f0 80 02 00 32 03 2a 01 31"
                   " 03 00 00 0e 02 f0 80 01 00 29 03 2a 01 32"
                   " 03 00 00 0e 02 f0 80 02 00 2a 03 2a 01 32"
                   " 03 00 00 13 02 f0 80 19 0a 11 01 03 c1 05 31 03 80 01 04"
                   " 03 00 00 09 02 f0 80 15 00"
                   " 03 00 00 0b 06 80 00 01 42 42 80",
                   buf);
    decode_split(buf, n, NULL, 0, &r);
    ck_assert_uint_eq(r.nerr, 0);
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU GT 0/2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU MIP 1/2 li=3 long=0 sn=1"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU PT 0/2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU MIA 1/2 li=3 long=0 sn=1"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AE 1/2 li=3 long=0 sn=2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AEA 1/2 li=3 long=0 sn=2"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU AB 0/1 li=10 long=0 sn=<none> tok=00 td=03"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU GTC 0/1"));
    ck_assert_ptr_nonnull(strstr(r.s, "TPDU DR"));
    rec_free(&r);

    /* CN (X.410, authenticated bind, ckpt 1, twa, P1) and its RTS. */
    n = hex("03 00 00 4d 02 f0 80 0d 44 05 09 13 01 00 16 01 02 1a 01 00 14 02 02 49 33 02 00 01 "
            "34 02 00 01 c1 2b 31 29 a0 03 80 01 00 a1 22 80 01 01 82 01 01 a3 17 a0 15 a1 13 80 "
            "07 46 41 4b 45 4d 54 41 a1 08 16 06 73 65 63 72 65 74 84 01 01",
            buf);
    ck_assert_uint_eq(n, 0x4d);
    struct fg_cotp t;
    ck_assert_int_eq(fg_x400_cotp_parse(buf + 4, n - 4, &t, NULL, 0), 0);
    ck_assert_uint_eq(t.code, FG_COTP_DT);
    ck_assert_int_eq(t.eot, 1);
    ck_assert_int_eq(fg_x400_tsdu_parse(t.data, t.data_len, NULL, NULL, NULL, 0), 1);
    rec_free(&r);
    decode_split(buf, n, NULL, 0, &r);
    ck_assert_ptr_nonnull(
        strstr(r.s, "SPDU CN 0/1 li=68 long=0 sn=<none> tok=00 td=00 sur=0249 ud=43"));
    rec_free(&r);
    struct fg_rts rts;
    /* user data starts at "31 29" */
    const uint8_t *u = memchr(buf + 30, 0x31, n - 30);
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_CN, u, (size_t)(buf + n - u), &rts), 0);
    ck_assert_int_eq(rts.kind, FG_RTS_PCONNECT);
    ck_assert_int_eq(rts.x410, 1);
    ck_assert_uint_eq(rts.checkpoint, 1);
    ck_assert_uint_eq(rts.window, 3);
    ck_assert_int_eq(rts.dialogue, 1);
    ck_assert_int_eq(rts.app_protocol, 1);
    ck_assert_uint_eq(rts.open_len, 0x15);

    /* Our PAccept encodes as the template's AC user data does. */
    struct fg_x400_buf pa = {0};
    fg_x400_rts_paccept(&pa, 1, 3, NULL, 0);
    uint8_t want[32];
    size_t wn = hex("31 13 a0 03 80 01 00 a1 0c 80 01 01 81 01 03 a2 04 a0 02 05 00", want);
    ck_assert_uint_eq(pa.len, wn);
    ck_assert_mem_eq(pa.p, want, wn);
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_AC, pa.p, pa.len, &rts), 0);
    ck_assert_uint_eq(rts.checkpoint, 1);
    fg_x400_buf_free(&pa);

    /* The encoder reproduces the MIP and ER templates byte for byte. */
    struct fg_x400_buf e = {0}, p = {0}, ts = {0};
    fg_x400_put_spdu(&ts, FG_SI_GT, NULL, 0, NULL, 0, 0);
    fg_x400_put_serial(&p, 1);
    fg_x400_put_spdu(&ts, FG_SI_MIP, p.p, p.len, NULL, 0, 0);
    fg_x400_put_dt(&e, ts.p, ts.len, 2048);
    wn = hex("03 00 00 0e 02 f0 80 01 00 31 03 2a 01 31", want);
    ck_assert_uint_eq(e.len, wn);
    ck_assert_mem_eq(e.p, want, wn);
    e.len = 0;
    fg_x400_put_er(&e, 1, 2);
    wn = hex("03 00 00 0d 08 70 00 01 02 c1 02 02 f0", want);
    ck_assert_mem_eq(e.p, want, wn);
    fg_x400_buf_free(&e);
    fg_x400_buf_free(&p);
    fg_x400_buf_free(&ts);
}
END_TEST

START_TEST(test_errors)
{
    uint8_t buf[64];
    struct rec r = {0};
    /* not TPKT: fatal, nothing after it is decoded */
    size_t n = hex("45 48 4c 4f 03 00 00 0e 02 f0 80 01 00 31 03 2a 01 31", buf);
    decode_split(buf, n, NULL, 0, &r);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.nspdu, 0);
    ck_assert_ptr_nonnull(strstr(r.s, "fatal=1"));
    rec_free(&r);
    /* an SPDU whose LI runs past its TSDU; the GT before it is delivered */
    n = hex("03 00 00 0e 02 f0 80 01 00 31 09 2a 01 31 03 00 00 09 02 f0 80 15 00", buf);
    decode_split(buf, n, NULL, 0, &r);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_ptr_nonnull(strstr(r.s, "MIP (SPDU 2): LI 9 runs past"));
    ck_assert_ptr_nonnull(strstr(r.s, "SPDU GTC")); /* framing kept */
    rec_free(&r);
    /* a malformed serial (leading zero, binary) is carried, not valid */
    n = hex("03 00 00 0f 02 f0 80 01 00 31 04 2a 02 30 31"
            " 03 00 00 0e 02 f0 80 01 00 31 03 2a 01 07",
            buf);
    decode_split(buf, n, NULL, 0, &r);
    ck_assert_uint_eq(r.nerr, 0);
    ck_assert_ptr_nonnull(strstr(r.s, "sn=01 "));
    ck_assert_ptr_nonnull(strstr(r.s, "sn=0x07 "));
    rec_free(&r);
    uint32_t v;
    ck_assert_int_eq(fg_x400_serial_parse((const uint8_t *)"999999", 6, &v), 1);
    ck_assert_uint_eq(v, 999999);
    ck_assert_int_eq(fg_x400_serial_parse((const uint8_t *)"1000000", 7, &v), 0);
    ck_assert_int_eq(fg_x400_serial_parse((const uint8_t *)"0", 1, &v), 1);
    ck_assert_int_eq(fg_x400_serial_parse((const uint8_t *)"", 0, &v), 0);
}
END_TEST

/* --- state rules ------------------------------------------------------------------ */

struct sm_run {
    struct fg_x400_sm sm;
    enum fg_x400_side side;
    int nbad;
    struct fg_x400_violation v[8];
};

static void sm_cb(void *ud, const struct fg_spdu *s)
{
    struct sm_run *r = ud;
    struct fg_x400_violation v;
    if (fg_x400_sm_apply(&r->sm, r->side, s, &v) && r->nbad < 8)
        r->v[r->nbad++] = v;
}

static void feed(struct sm_run *r, enum fg_x400_side side, const char *hexs)
{
    uint8_t buf[256];
    size_t n = hex(hexs, buf);
    r->side = side;
    ck_assert_int_ge(fg_x400_tsdu_parse(buf, n, sm_cb, r, NULL, 0), 1);
}

static void associate(struct sm_run *r, unsigned ckpt, unsigned window)
{
    fg_x400_sm_init(&r->sm);
    r->nbad = 0;
    char cn[256], ac[256];
    /* CN / AC with SUR 0249, token setting 00 and a PConnect/PAccept */
    snprintf(cn, sizeof(cn),
             "0d 20 05 06 16 01 02 1a 01 00 14 02 02 49 c1 12 31 10 a0 03 80 01 00 a1 09 80 01 "
             "%02x 81 01 %02x 82 01 01",
             ckpt, window);
    snprintf(ac, sizeof(ac),
             "0e 1d 05 06 16 01 02 1a 01 00 14 02 02 49 c1 0f 31 0d a0 03 80 01 00 a1 06 80 01 "
             "%02x 81 01 %02x",
             ckpt, window);
    feed(r, FG_X400_INITIATOR, cn);
    feed(r, FG_X400_RESPONDER, ac);
    ck_assert_int_eq(r->nbad, 0);
    ck_assert_uint_eq(r->sm.checkpoint, ckpt);
    ck_assert_uint_eq(r->sm.window, window);
}

#define GT_AS "01 00 2d 05 29 03 02 01 01"
#define MIP(x) "01 00 31 03 2a 01 " x
#define MIA(x) "02 00 32 03 2a 01 " x

START_TEST(test_rules_valid)
{
    struct sm_run r;
    associate(&r, 1, 3);
    for (int act = 0; act < 2; act++) {
        feed(&r, FG_X400_INITIATOR, GT_AS);
        feed(&r, FG_X400_INITIATOR, "01 00 01 00 41 42 43");
        feed(&r, FG_X400_INITIATOR, MIP("31"));
        feed(&r, FG_X400_INITIATOR, MIP("32"));
        feed(&r, FG_X400_INITIATOR, MIP("33"));
        feed(&r, FG_X400_RESPONDER, MIA("31"));
        feed(&r, FG_X400_RESPONDER, MIA("33"));
        feed(&r, FG_X400_INITIATOR, MIP("34"));
        feed(&r, FG_X400_RESPONDER, MIA("34"));
        feed(&r, FG_X400_INITIATOR, "01 00 29 03 2a 01 35");
        feed(&r, FG_X400_RESPONDER, "02 00 2a 03 2a 01 35");
    }
    feed(&r, FG_X400_INITIATOR, "09 03 11 01 01");
    feed(&r, FG_X400_RESPONDER, "0a 00");
    ck_assert_int_eq(r.nbad, 0);
    ck_assert_uint_eq(r.sm.messages, 2);
    ck_assert_int_eq(r.sm.phase, FG_X400_PH_ENDED);
}
END_TEST

static const char *first_bad(const char *const *seq, size_t n, unsigned window, char *text,
                             size_t tl)
{
    static struct sm_run r;
    associate(&r, 1, window);
    for (size_t i = 0; i < n; i++)
        feed(&r, seq[i][0] == 'R' ? FG_X400_RESPONDER : FG_X400_INITIATOR, seq[i] + 2);
    if (r.nbad == 0)
        return "none";
    snprintf(text, tl, "%s", r.v[0].text);
    return r.v[0].rule;
}

START_TEST(test_rules_invalid)
{
    char t[320];
#define BAD(window, rule, needle, ...)                                                             \
    do {                                                                                           \
        const char *const seq[] = {__VA_ARGS__};                                                   \
        ck_assert_str_eq(first_bad(seq, sizeof(seq) / sizeof(seq[0]), window, t, sizeof(t)),       \
                         rule);                                                                    \
        ck_assert_msg(strstr(t, needle) != NULL, "'%s' not in '%s'", needle, t);                   \
    } while (0)
    /* first serial 0 */
    BAD(3, "serial-not-vm", "MIP serial 0, expected V(M) = 1", "I " GT_AS, "I " MIP("30"));
    /* duplicate */
    BAD(3, "serial-not-vm", "MIP serial 1, expected V(M) = 2", "I " GT_AS, "I " MIP("31"),
        "R " MIA("31"), "I " MIP("31"));
    /* skipped */
    BAD(3, "serial-not-vm", "skipped", "I " GT_AS, "I " MIP("31"), "I " MIP("33"));
    /* not reset at the activity start */
    BAD(3, "serial-not-vm", "not reset", "I " GT_AS, "I " MIP("31"), "R " MIA("31"),
        "I 01 00 29 03 2a 01 32", "R 02 00 2a 03 2a 01 32", "I " GT_AS, "I " MIP("33"));
    /* bare MIP, MIP after PT */
    BAD(3, "concatenation", "bare MIP", "I " GT_AS, "I 31 03 2a 01 31");
    BAD(3, "concatenation", "MIP after PT", "I " GT_AS, "I 02 00 31 03 2a 01 31");
    /* window: 3 unacknowledged, then a fourth */
    BAD(3, "window-exceeded", "MIP serial 4 with 4 sync point(s) unacknowledged", "I " GT_AS,
        "I " MIP("31"), "I " MIP("32"), "I " MIP("33"), "I " MIP("34"));
    BAD(1, "window-exceeded", "window of 1", "I " GT_AS, "I " MIP("31"), "I " MIP("32"));
    /* outside an activity, after the tokens were given away */
    BAD(3, "outside-activity", "no AS", "I " MIP("31"));
    BAD(3, "token-not-held", "does not hold", "I " GT_AS, "I 01 03 10 01 05", "I " MIP("31"));
    /* malformed serials */
    BAD(3, "serial-malformed", "\"01\"", "I " GT_AS, "I 01 00 31 04 2a 02 30 31");
    BAD(3, "serial-malformed", "without a Serial Number", "I " GT_AS, "I 01 00 31 00");
    /* MIA out of range, AEA with another SN */
    BAD(3, "mia-serial", "MIA serial 2 outside", "I " GT_AS, "I " MIP("31"), "R " MIA("32"));
    BAD(3, "aea-serial", "AEA serial 3 answers AE serial 2", "I " GT_AS, "I " MIP("31"),
        "R " MIA("31"), "I 01 00 29 03 2a 01 32", "R 02 00 2a 03 2a 01 33");
    /* MIP while the AE awaits its AEA */
    BAD(3, "sync-while-ending", "awaits", "I " GT_AS, "I 01 00 29 03 2a 01 31", "I " MIP("32"));
    /* no confirmation asked */
    BAD(3, "no-confirmation", "Sync Type 01", "I " GT_AS, "I 01 00 31 06 0f 01 01 2a 01 31");
#undef BAD
    /* checkpoint size 0: no MIP at all */
    struct sm_run r;
    associate(&r, 0, 3);
    feed(&r, FG_X400_INITIATOR, GT_AS);
    feed(&r, FG_X400_INITIATOR, MIP("31"));
    ck_assert_int_eq(r.nbad, 1);
    ck_assert_str_eq(r.v[0].rule, "checkpointing-not-agreed");
}
END_TEST

/* 1988 normal mode: what ISODE's isoc and tsapd send ("isode/rtse sink":
 * indefinite lengths, ten contexts), and our CPA, P-DATA and release
 * answers read back through the same decoder. */
START_TEST(test_normal_mode)
{
    static const char isode_cp[] =
        "3180a003800101a280a480300e020101060328c478300406025101300e020103060328c4783004060251"
        "01300e020105060328c478300406025101300e020107060328c478300406025101300e020109060328c4"
        "78300406025101300e02010b060328c478300406025101300e02010d060328c478300406025101300e02"
        "010f060328c478300406025101300d02011106025300300406025101300f020113060452010001300406"
        "0251010000a60a8004390002018102510161383036020113a031602fa106060439000201a20806063904"
        "6383881fbe1b281906025101020111a010b00e80013f820101a306a00402025e2200000000";
    static const char isode_cpa[] =
        "3180a003800101a280a55a300780010081025101300780010081025101300780010081025101300780"
        "010081025101300780010081025101300780010081025101300780010081025101300780010081025101"
        "300780010081025101300780010081025101613a3038020113a0336131a106060439000201a203020100"
        "a305a103020100be1b281906025101020111a010b10e800101810103a206a00402025e2300000000";
    uint8_t b[512];
    size_t n = 0;
    for (const char *h = isode_cp; h[0] && h[1]; h += 2)
        sscanf(h, "%2hhx", &b[n++]);
    struct fg_rts r;
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_CN, b, n, &r), 0);
    ck_assert_int_eq(r.x410, 0);
    ck_assert_int_eq(r.normal, 1);
    ck_assert_uint_eq(r.nctx, 10);
    ck_assert_int_eq(r.ctx_id[9], 19);
    ck_assert_int_eq(r.acse, 0x60);
    ck_assert_int_eq(r.acse_ctx, 19);
    ck_assert_int_eq(r.rtse_ctx, 17);
    ck_assert_int_eq(r.rtse_apdu, 0xB0);
    ck_assert_uint_eq(r.checkpoint, 63);
    ck_assert_uint_eq(r.window, 3);
    ck_assert_int_eq(r.dialogue, 1);
    uint32_t hello;
    ck_assert_int_eq(fg_x400_ber_int(r.open, r.open_len, &hello), 1);
    ck_assert_uint_eq(hello, 0x5e22);
    ck_assert_uint_eq(r.app_ctx_len, 6); /* 1.17.0.2.1, "isode sink pci" */

    /* Our CPA for it: ten acceptances, the contexts and greeting echoed. */
    struct fg_x400_buf cpa = {0}, g = {0};
    fg_x400_ber_put_uint(&g, 0x02, hello + 1);
    fg_x400_rts_cpa(&cpa, &r, 1, 3, g.p, g.len);
    struct fg_rts a;
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_AC, cpa.p, cpa.len, &a), 0);
    ck_assert_int_eq(a.normal, 1);
    ck_assert_uint_eq(a.nctx, 10);
    ck_assert_int_eq(a.acse, 0x61);
    ck_assert_int_eq(a.acse_result, 0);
    ck_assert_int_eq(a.acse_ctx, 19);
    ck_assert_int_eq(a.rtse_ctx, 17);
    ck_assert_int_eq(a.rtse_apdu, 0xB1);
    ck_assert_uint_eq(a.checkpoint, 1);
    ck_assert_int_eq(fg_x400_ber_int(a.open, a.open_len, &hello), 1);
    ck_assert_uint_eq(hello, 0x5e23);
    ck_assert_mem_eq(a.app_ctx, r.app_ctx, r.app_ctx_len);

    /* tsapd's own CPA reads the same way. */
    n = 0;
    for (const char *h = isode_cpa; h[0] && h[1]; h += 2)
        sscanf(h, "%2hhx", &b[n++]);
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_AC, b, n, &a), 0);
    ck_assert_int_eq(a.normal, 1);
    ck_assert_uint_eq(a.nctx, 10);
    ck_assert_int_eq(a.acse_result, 0);
    ck_assert_uint_eq(a.checkpoint, 1);

    /* A truncated CP (no end-of-contents) is refused. */
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_CN, b, n - 2, &a), FG_EPROTO);

    /* P-DATA with an RTTR segment, and RLRE. */
    struct fg_x400_buf pd = {0};
    static const uint8_t seg[5] = {1, 2, 3, 4, 5};
    fg_x400_rts_pdata(&pd, 17, seg, sizeof seg);
    ck_assert_int_eq(fg_x400_rts_decode(FG_SPDU_DT, pd.p, pd.len, &a), 0);
    ck_assert_int_eq(a.data_ctx, 17);
    ck_assert_uint_eq(a.rttr_len, 5);
    ck_assert_mem_eq(a.rttr, seg, 5);
    pd.len = 0;
    fg_x400_rts_release(&pd, 1, 19);
    uint8_t want[16];
    size_t wn = hex("61 0c 30 0a 02 01 13 a0 05 63 03 80 01 00", want);
    ck_assert_uint_eq(pd.len, wn);
    ck_assert_mem_eq(pd.p, want, wn); /* as ISODE's tsapd sends it */
    fg_x400_buf_free(&pd);
    fg_x400_buf_free(&cpa);
    fg_x400_buf_free(&g);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("x400");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_stream_whole);
    tcase_add_test(tc, test_every_split);
    tcase_add_test(tc, test_templates);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_normal_mode);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("rules");
    tcase_add_test(tr, test_rules_valid);
    tcase_add_test(tr, test_rules_invalid);
    suite_add_tcase(s, tr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
