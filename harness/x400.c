/* x400.c - the X.400-over-RFC-1006 codec: TPKT, COTP class 0, ISO 8327
 * session SPDUs, RTS in X.410-1984 mode (faultgate/x400.h).
 *
 * Hand-written: Debian packages no OSI session or RTS library (ISODE and
 * libiec61850 are not packaged, and libiec61850 handles only MMS's
 * one-octet lengths and no tokens or sync points; x400-wire.md §5), and the
 * BER used by X.410 RTS here is a handful of small SETs, so the few BER
 * helpers below are written by hand as well rather than pulling in an
 * ASN.1 compiler runtime.
 */
#include "faultgate/x400.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/util.h"

/* --- names ----------------------------------------------------------------- */

const char *fg_cotp_name(uint8_t code)
{
    switch (code & 0xF0) {
    case FG_COTP_CR:
        return "CR";
    case FG_COTP_CC:
        return "CC";
    case FG_COTP_DR:
        return "DR";
    case FG_COTP_DC:
        return "DC";
    case FG_COTP_DT:
        return "DT";
    case FG_COTP_ED:
        return "ED";
    case FG_COTP_AK:
        return "AK";
    case FG_COTP_EA:
        return "EA";
    case FG_COTP_RJ:
        return "RJ";
    case FG_COTP_ER:
        return "ER";
    default:
        return "?";
    }
}

static const struct {
    const char *name;
    uint8_t si;
    int cat;
} spdu_tab[FG_SPDU_COUNT] = {
    [FG_SPDU_UNKNOWN] = {"?", 0xFF, 1},    [FG_SPDU_CN] = {"CN", FG_SI_CN, 1},
    [FG_SPDU_AC] = {"AC", FG_SI_AC, 1},    [FG_SPDU_RF] = {"RF", FG_SI_RF, 1},
    [FG_SPDU_FN] = {"FN", FG_SI_FN, 1},    [FG_SPDU_DN] = {"DN", FG_SI_DN, 1},
    [FG_SPDU_NF] = {"NF", FG_SI_NF, 1},    [FG_SPDU_AB] = {"AB", FG_SI_AB, 1},
    [FG_SPDU_AA] = {"AA", FG_SI_AA, 1},    [FG_SPDU_GT] = {"GT", FG_SI_GT, 0},
    [FG_SPDU_DT] = {"DT", FG_SI_DT, 2},    [FG_SPDU_PT] = {"PT", FG_SI_PT, 0},
    [FG_SPDU_EX] = {"EX", FG_SI_EX, 1},    [FG_SPDU_TD] = {"TD", FG_SI_TD, 1},
    [FG_SPDU_CD] = {"CD", FG_SI_CD, 2},    [FG_SPDU_CDA] = {"CDA", FG_SI_CDA, 2},
    [FG_SPDU_GTC] = {"GTC", FG_SI_GTC, 1}, [FG_SPDU_GTA] = {"GTA", FG_SI_GTA, 1},
    [FG_SPDU_MIP] = {"MIP", FG_SI_MIP, 2}, [FG_SPDU_MIA] = {"MIA", FG_SI_MIA, 2},
    [FG_SPDU_MAP] = {"MAP", FG_SI_MAP, 2}, [FG_SPDU_AE] = {"AE", FG_SI_AE, 2},
    [FG_SPDU_AEA] = {"AEA", FG_SI_AEA, 2}, [FG_SPDU_RS] = {"RS", FG_SI_RS, 2},
    [FG_SPDU_RA] = {"RA", FG_SI_RA, 2},    [FG_SPDU_PR] = {"PR", FG_SI_PR, 1},
    [FG_SPDU_ER] = {"ER", FG_SI_ER, 2},    [FG_SPDU_ED] = {"ED", FG_SI_ED, 2},
    [FG_SPDU_AS] = {"AS", FG_SI_AS, 2},    [FG_SPDU_AR] = {"AR", FG_SI_AR, 2},
    [FG_SPDU_AD] = {"AD", FG_SI_AD, 2},    [FG_SPDU_ADA] = {"ADA", FG_SI_ADA, 2},
    [FG_SPDU_AI] = {"AI", FG_SI_AI, 2},    [FG_SPDU_AIA] = {"AIA", FG_SI_AIA, 2},
    [FG_SPDU_CDO] = {"CDO", FG_SI_CDO, 1}, [FG_SPDU_OA] = {"OA", FG_SI_OA, 1},
};

const char *fg_spdu_name(enum fg_spdu_type t)
{
    return (unsigned)t < FG_SPDU_COUNT ? spdu_tab[t].name : "?";
}

enum fg_spdu_type fg_spdu_type_parse(const char *s)
{
    for (int t = 1; t < FG_SPDU_COUNT; t++)
        if (strcasecmp(s, spdu_tab[t].name) == 0)
            return (enum fg_spdu_type)t;
    return FG_SPDU_UNKNOWN;
}

uint8_t fg_spdu_si(enum fg_spdu_type t)
{
    return (unsigned)t < FG_SPDU_COUNT ? spdu_tab[t].si : 0xFF;
}

int fg_spdu_category(enum fg_spdu_type t)
{
    return (unsigned)t < FG_SPDU_COUNT ? spdu_tab[t].cat : 1;
}

/* The type of an SI at place index of its TSDU, before parameters are
 * known (MAP/AE is settled after them).  X.225 §6.3.7: SIs 1, 25 and 26
 * mean a category-0/1 SPDU first in a TSDU and a category-2 one after. */
static enum fg_spdu_type si_type(uint8_t si, unsigned index)
{
    switch (si) {
    case 1:
        return index == 0 ? FG_SPDU_GT : FG_SPDU_DT;
    case 25:
        return index == 0 ? FG_SPDU_AB : FG_SPDU_AI;
    case 26:
        return index == 0 ? FG_SPDU_AA : FG_SPDU_AIA;
    case 41:
        return FG_SPDU_AE;
    case 42:
        return FG_SPDU_AEA;
    default:
        break;
    }
    for (int t = 1; t < FG_SPDU_COUNT; t++)
        if (spdu_tab[t].si == si && t != FG_SPDU_GT && t != FG_SPDU_DT && t != FG_SPDU_AB &&
            t != FG_SPDU_AI && t != FG_SPDU_AA && t != FG_SPDU_AIA)
            return (enum fg_spdu_type)t;
    return FG_SPDU_UNKNOWN;
}

/* --- session parameters ------------------------------------------------------ */

int fg_x400_serial_parse(const uint8_t *p, size_t n, uint32_t *v)
{
    /* X.225 §8.3.12.3 (and ISODE's sprintf("%lu")): 1 to 6 IA5 digits;
     * a leading zero is not a canonical encoding and counts as malformed. */
    if (n == 0 || n > 6 || (n > 1 && p[0] == '0'))
        return 0;
    uint32_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        x = x * 10 + (uint32_t)(p[i] - '0');
    }
    *v = x;
    return 1;
}

/* A session length at p (limit end): 1 octet, or FF hi lo (X.225 §8.2.5). */
static int get_len(const uint8_t **p, const uint8_t *end, uint32_t *v, int *long_form)
{
    if (*p >= end)
        return -1;
    if (**p != 0xFF) {
        *v = **p;
        (*p)++;
        if (long_form)
            *long_form = 0;
        return 0;
    }
    if (end - *p < 3)
        return -1;
    *v = ((uint32_t)(*p)[1] << 8) | (*p)[2];
    *p += 3;
    if (long_form)
        *long_form = 1;
    return 0;
}

static int parse_params(const uint8_t *p, const uint8_t *end, struct fg_spdu *s, int depth,
                        char *err, size_t errlen)
{
    while (p < end) {
        uint8_t code = *p++;
        uint32_t n;
        if (get_len(&p, end, &n, NULL) < 0 || (size_t)(end - p) < n)
            return fg_errf(err, errlen, FG_EPROTO,
                           "%s: parameter %u: length runs past the end of the SPDU",
                           fg_spdu_name(s->type), code);
        const uint8_t *v = p;
        p += n;
        switch (code) {
        case FG_PGI_CONN_ID:
        case FG_PGI_CONN_ACC:
        case FG_PGI_LINKING:
            if (depth > 0)
                return fg_errf(err, errlen, FG_EPROTO, "%s: PGI %u nested in a group",
                               fg_spdu_name(s->type), code);
            if (parse_params(v, v + n, s, depth + 1, err, errlen) < 0)
                return FG_EPROTO;
            break;
        case FG_PGI_USER_DATA:
        case FG_PGI_EXT_USER_DATA:
            s->has |= FG_SP_USER_DATA;
            s->user_data = v;
            s->user_data_len = n;
            break;
        case FG_PI_SYNC_TYPE:
            s->has |= FG_SP_SYNC_TYPE;
            s->sync_type = n ? v[0] : 0;
            break;
        case FG_PI_TOKEN:
            s->has |= FG_SP_TOKEN;
            s->token_item = n ? v[0] : 0;
            break;
        case FG_PI_TDISC:
            s->has |= FG_SP_TDISC;
            s->tdisc = n ? v[0] : 0;
            break;
        case FG_PI_PROTO_OPT:
            s->has |= FG_SP_PROTO_OPT;
            s->proto_opt = n ? v[0] : 0;
            break;
        case FG_PI_SUR:
            s->has |= FG_SP_SUR;
            s->sur = n >= 2 ? (uint16_t)((v[0] << 8) | v[1]) : (n ? v[0] : 0);
            break;
        case FG_PI_TSDU_MAX:
            s->has |= FG_SP_TSDU_MAX;
            break;
        case FG_PI_VERSION:
            s->has |= FG_SP_VERSION;
            s->version = n ? v[0] : 0;
            break;
        case FG_PI_ISN: {
            uint32_t x = 0;
            s->has |= FG_SP_ISN;
            s->isn = fg_x400_serial_parse(v, n, &x) ? x : 0;
            break;
        }
        case FG_PI_ENCLOSURE:
            s->has |= FG_SP_ENCLOSURE;
            s->enclosure = n ? v[0] : 0;
            break;
        case FG_PI_TOKEN_SETTING:
            s->has |= FG_SP_TOKEN_SETTING;
            s->token_setting = n ? v[0] : 0;
            break;
        case FG_PI_ACT_ID:
            s->has |= FG_SP_ACT_ID;
            s->act_id = v;
            s->act_id_len = n;
            break;
        case FG_PI_SERIAL:
            s->has |= FG_SP_SERIAL;
            s->serial_len = n;
            memcpy(s->serial_raw, v, n < FG_SERIAL_RAW_MAX ? n : FG_SERIAL_RAW_MAX);
            s->serial_ok = fg_x400_serial_parse(v, n, &s->serial);
            break;
        case FG_PI_REASON:
            s->has |= FG_SP_REASON;
            s->reason = n ? v[0] : 0;
            s->reason_data = n ? v + 1 : v;
            s->reason_data_len = n ? n - 1 : 0;
            break;
        default:
            break; /* other PIs are carried but not needed */
        }
    }
    return 0;
}

/* One SPDU at *pp; returns 0, 1 at the end of the TSDU, or FG_EPROTO. */
static int parse_one(const uint8_t **pp, const uint8_t *end, unsigned index, enum fg_spdu_type prev,
                     struct fg_spdu *s, char *err, size_t errlen)
{
    const uint8_t *p = *pp, *start = p;
    memset(s, 0, sizeof(*s));
    s->si = *p++;
    s->index = index;
    s->prev = prev;
    s->type = si_type(s->si, index);
    if (s->type == FG_SPDU_UNKNOWN)
        return fg_errf(err, errlen, FG_EPROTO, "SPDU %u: unknown SI %u", index + 1, s->si);
    if (get_len(&p, end, &s->li, &s->long_li) < 0 || (size_t)(end - p) < s->li)
        return fg_errf(err, errlen, FG_EPROTO, "%s (SPDU %u): LI %u runs past the end of the TSDU",
                       fg_spdu_name(s->type), index + 1, (unsigned)s->li);
    const uint8_t *pend = p + s->li;
    if (parse_params(p, pend, s, 0, err, errlen) < 0)
        return FG_EPROTO;
    if (s->type == FG_SPDU_AE && (s->has & FG_SP_SYNC_TYPE))
        s->type = FG_SPDU_MAP; /* X.225 §8.3.29: a MAP carries a Sync Type Item */
    p = pend;
    if (s->type == FG_SPDU_DT || s->type == FG_SPDU_EX || s->type == FG_SPDU_TD) {
        /* The User Information field runs to the end of the TSDU (§8.2.6). */
        s->has |= p < end ? FG_SP_USER_DATA : 0;
        s->user_data = p;
        s->user_data_len = (size_t)(end - p);
        p = end;
    }
    s->raw = start;
    s->raw_len = (size_t)(p - start);
    *pp = p;
    return 0;
}

int fg_x400_tsdu_parse(const uint8_t *tsdu, size_t len,
                       void (*cb)(void *ud, const struct fg_spdu *s), void *ud, char *err,
                       size_t errlen)
{
    /* Two passes: the first counts (so that every SPDU knows how many share
     * its TSDU), the second delivers.  SPDUs before an error are still
     * delivered; the error is returned after them. */
    struct fg_spdu s;
    unsigned count = 0;
    int rc = 0;
    const uint8_t *p = tsdu, *end = tsdu + len;
    enum fg_spdu_type prev = FG_SPDU_UNKNOWN;
    while (p < end) {
        rc = parse_one(&p, end, count, prev, &s, err, errlen);
        if (rc < 0)
            break;
        prev = s.type;
        count++;
    }
    if (!cb)
        return rc < 0 ? rc : (int)count;
    p = tsdu;
    prev = FG_SPDU_UNKNOWN;
    for (unsigned i = 0; i < count; i++) {
        parse_one(&p, end, i, prev, &s, NULL, 0);
        s.count = count;
        prev = s.type;
        cb(ud, &s);
    }
    return rc < 0 ? rc : (int)count;
}

/* --- COTP ---------------------------------------------------------------------- */

static void parse_varpart(const uint8_t *p, const uint8_t *end, struct fg_cotp *t)
{
    while (end - p >= 2) {
        uint8_t code = p[0], n = p[1];
        p += 2;
        if ((size_t)(end - p) < n)
            return;
        switch (code) {
        case 0xC0:
            t->tpdu_size = n ? p[0] : 0;
            break;
        case 0xC1:
            t->calling = p;
            t->calling_len = n;
            break;
        case 0xC2:
            t->called = p;
            t->called_len = n;
            break;
        default:
            break;
        }
        p += n;
    }
}

int fg_x400_cotp_parse(const uint8_t *p, size_t len, struct fg_cotp *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (len < 2)
        return fg_errf(err, errlen, FG_EPROTO, "TPDU of %zu octets", len);
    t->li = p[0];
    t->code = p[1] & 0xF0;
    if (t->li == 0xFF || (size_t)t->li + 1 > len)
        return fg_errf(err, errlen, FG_EPROTO, "TPDU LI %u exceeds its TPKT (%zu octets)", t->li,
                       len);
    const uint8_t *hend = p + t->li + 1;
    switch (t->code) {
    case FG_COTP_DT:
        if (t->li < 2)
            return fg_errf(err, errlen, FG_EPROTO, "DT with LI %u (class 0 needs 2)", t->li);
        t->eot = (p[2] & 0x80) != 0;
        break;
    case FG_COTP_CR:
    case FG_COTP_CC:
    case FG_COTP_DR:
        if (t->li < 6)
            return fg_errf(err, errlen, FG_EPROTO, "%s with LI %u (needs 6)", fg_cotp_name(t->code),
                           t->li);
        t->dst_ref = (uint16_t)((p[2] << 8) | p[3]);
        t->src_ref = (uint16_t)((p[4] << 8) | p[5]);
        if (t->code == FG_COTP_DR)
            t->reason = p[6];
        else
            t->class_opt = p[6];
        parse_varpart(p + 7, hend, t);
        break;
    case FG_COTP_ER:
        if (t->li < 4)
            return fg_errf(err, errlen, FG_EPROTO, "ER with LI %u (needs 4)", t->li);
        t->dst_ref = (uint16_t)((p[2] << 8) | p[3]);
        t->reason = p[4];
        break;
    default:
        break;
    }
    t->data = hend;
    t->data_len = (size_t)(p + len - hend);
    return 0;
}

/* --- decoder ---------------------------------------------------------------------- */

int fg_x400_looks_like_tpkt(const uint8_t *p, size_t len)
{
    if (len < 4)
        return len == 0 || (p[0] == 3 && (len < 2 || p[1] == 0));
    return p[0] == 3 && p[1] == 0 && ((p[2] << 8) | p[3]) >= 7;
}

void fg_x400_dec_init(struct fg_x400_dec *d, size_t tsdu_max, fg_x400_cb cb, void *ud)
{
    memset(d, 0, sizeof(*d));
    d->cb = cb;
    d->ud = ud;
    d->pkt = fg_malloc(FG_TPKT_MAX);
    d->tsdu_max = tsdu_max ? tsdu_max : (size_t)1 << 20;
}

void fg_x400_dec_free(struct fg_x400_dec *d)
{
    FG_FREE(d->pkt);
    FG_FREE(d->tsdu);
    d->tsdu_cap = d->tsdu_len = 0;
}

struct spdu_ctx {
    struct fg_x400_dec *d;
    const struct fg_cotp *t;
    size_t tsdu_len;
};

static void emit_error(struct fg_x400_dec *d, const char *text, int fatal)
{
    struct fg_x400_event ev = {.kind = FG_X400_EV_ERROR,
                               .offset = d->pkt_off,
                               .end = d->off,
                               .text = text,
                               .fatal = fatal};
    if (d->cb)
        d->cb(d->ud, &ev);
}

static void spdu_cb(void *ud, const struct fg_spdu *s)
{
    struct spdu_ctx *c = ud;
    struct fg_x400_event ev = {.kind = FG_X400_EV_SPDU,
                               .offset = c->d->pkt_off,
                               .end = c->d->off,
                               .tpkt_len = (uint16_t)(c->d->pkt_need + 4),
                               .tpdu = c->t,
                               .spdu = s,
                               .tsdu_len = c->tsdu_len};
    if (c->d->cb)
        c->d->cb(c->d->ud, &ev);
}

static void handle_tpdu(struct fg_x400_dec *d)
{
    struct fg_cotp t;
    if (fg_x400_cotp_parse(d->pkt, d->pkt_need, &t, d->err, sizeof(d->err)) < 0) {
        emit_error(d, d->err, 0);
        return;
    }
    struct fg_x400_event ev = {.kind = FG_X400_EV_TPDU,
                               .offset = d->pkt_off,
                               .end = d->off,
                               .tpkt_len = (uint16_t)(d->pkt_need + 4),
                               .tpdu = &t};
    if (d->cb)
        d->cb(d->ud, &ev);
    if (t.code != FG_COTP_DT)
        return;
    if (!d->tsdu_overflow) {
        if (d->tsdu_len + t.data_len > d->tsdu_max) {
            d->tsdu_overflow = 1;
            snprintf(d->err, sizeof(d->err), "TSDU longer than %zu octets: not decoded",
                     d->tsdu_max);
            emit_error(d, d->err, 0);
        } else {
            fg_array_reserve((void **)&d->tsdu, &d->tsdu_cap, d->tsdu_len + t.data_len, 1);
            if (t.data_len)
                memcpy(d->tsdu + d->tsdu_len, t.data, t.data_len);
            d->tsdu_len += t.data_len;
        }
    }
    if (!t.eot)
        return;
    if (!d->tsdu_overflow && d->tsdu_len > 0) {
        struct spdu_ctx c = {d, &t, d->tsdu_len};
        if (fg_x400_tsdu_parse(d->tsdu, d->tsdu_len, spdu_cb, &c, d->err, sizeof(d->err)) < 0)
            emit_error(d, d->err, 0);
    }
    d->tsdu_len = 0;
    d->tsdu_overflow = 0;
}

int fg_x400_dec_feed(struct fg_x400_dec *d, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        if (d->dead)
            return FG_EPROTO;
        if (d->hdr_n < 4) {
            if (d->hdr_n == 0)
                d->pkt_off = d->off;
            d->hdr[d->hdr_n++] = *buf++;
            len--;
            d->off++;
            if (d->hdr_n < 4)
                continue;
            size_t tl = ((size_t)d->hdr[2] << 8) | d->hdr[3];
            /* RFC 1006 §6: version 3, reserved 0; 7 = header + the
             * smallest TPDU (a DT header), as Wireshark's is_tpkt asks. */
            if (d->hdr[0] != FG_TPKT_VERSION || d->hdr[1] != 0 || tl < 7) {
                snprintf(d->err, sizeof(d->err),
                         "not a TPKT header: %02x %02x %02x %02x (RFC 1006 §6 needs 03 00 and a "
                         "length of at least 7)",
                         d->hdr[0], d->hdr[1], d->hdr[2], d->hdr[3]);
                d->dead = 1;
                emit_error(d, d->err, 1);
                return FG_EPROTO;
            }
            d->pkt_need = tl - 4;
            d->pkt_have = 0;
            continue;
        }
        size_t take = d->pkt_need - d->pkt_have;
        if (take > len)
            take = len;
        memcpy(d->pkt + d->pkt_have, buf, take);
        d->pkt_have += take;
        buf += take;
        len -= take;
        d->off += take;
        if (d->pkt_have == d->pkt_need) {
            handle_tpdu(d);
            d->hdr_n = 0;
        }
    }
    return d->dead ? FG_EPROTO : 0;
}

/* --- encoder -------------------------------------------------------------------- */

void fg_x400_buf_put(struct fg_x400_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    fg_array_reserve((void **)&b->p, &b->cap, b->len + n, 1);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void fg_x400_buf_byte(struct fg_x400_buf *b, uint8_t c)
{
    fg_x400_buf_put(b, &c, 1);
}

void fg_x400_buf_free(struct fg_x400_buf *b)
{
    FG_FREE(b->p);
    b->len = b->cap = 0;
}

void fg_x400_put_len(struct fg_x400_buf *b, size_t v, int force_long)
{
    if (v < 255 && !force_long) {
        fg_x400_buf_byte(b, (uint8_t)v);
    } else {
        uint8_t l[3] = {0xFF, (uint8_t)(v >> 8), (uint8_t)v};
        fg_x400_buf_put(b, l, 3);
    }
}

void fg_x400_put_pi(struct fg_x400_buf *b, uint8_t pi, const void *v, size_t n)
{
    fg_x400_buf_byte(b, pi);
    fg_x400_put_len(b, n, 0);
    fg_x400_buf_put(b, v, n);
}

void fg_x400_put_pi_byte(struct fg_x400_buf *b, uint8_t pi, uint8_t v)
{
    fg_x400_put_pi(b, pi, &v, 1);
}

void fg_x400_put_pi_u16(struct fg_x400_buf *b, uint8_t pi, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    fg_x400_put_pi(b, pi, x, 2);
}

void fg_x400_put_serial(struct fg_x400_buf *b, uint32_t sn)
{
    char d[16];
    int n = snprintf(d, sizeof(d), "%u", (unsigned)sn);
    fg_x400_put_pi(b, FG_PI_SERIAL, d, (size_t)n);
}

void fg_x400_put_spdu(struct fg_x400_buf *b, uint8_t si, const void *params, size_t plen,
                      const void *uinfo, size_t ulen, int force_long)
{
    fg_x400_buf_byte(b, si);
    fg_x400_put_len(b, plen, force_long);
    fg_x400_buf_put(b, params, plen);
    fg_x400_buf_put(b, uinfo, ulen);
}

static void put_tpkt_hdr(struct fg_x400_buf *b, size_t tpdu_len)
{
    size_t l = tpdu_len + 4;
    uint8_t h[4] = {FG_TPKT_VERSION, 0, (uint8_t)(l >> 8), (uint8_t)l};
    fg_x400_buf_put(b, h, 4);
}

static void put_crcc(struct fg_x400_buf *b, uint8_t code, uint16_t dst, uint16_t src,
                     uint8_t tpdu_size, const void *calling, size_t calling_len, const void *called,
                     size_t called_len)
{
    struct fg_x400_buf t = {0};
    uint8_t fixed[7] = {
        0,   code, (uint8_t)(dst >> 8), (uint8_t)dst, (uint8_t)(src >> 8), (uint8_t)src,
        0x00 /* class 0, no options */};
    fg_x400_buf_put(&t, fixed, 7);
    if (tpdu_size) {
        uint8_t v[3] = {0xC0, 1, tpdu_size};
        fg_x400_buf_put(&t, v, 3);
    }
    if (calling) {
        uint8_t v[2] = {0xC1, (uint8_t)calling_len};
        fg_x400_buf_put(&t, v, 2);
        fg_x400_buf_put(&t, calling, calling_len);
    }
    if (called) {
        uint8_t v[2] = {0xC2, (uint8_t)called_len};
        fg_x400_buf_put(&t, v, 2);
        fg_x400_buf_put(&t, called, called_len);
    }
    t.p[0] = (uint8_t)(t.len - 1);
    put_tpkt_hdr(b, t.len);
    fg_x400_buf_put(b, t.p, t.len);
    fg_x400_buf_free(&t);
}

void fg_x400_put_cr(struct fg_x400_buf *b, uint16_t src_ref, uint8_t tpdu_size, const void *calling,
                    size_t calling_len, const void *called, size_t called_len)
{
    put_crcc(b, FG_COTP_CR, 0, src_ref, tpdu_size, calling, calling_len, called, called_len);
}

void fg_x400_put_cc(struct fg_x400_buf *b, uint16_t dst_ref, uint16_t src_ref, uint8_t tpdu_size,
                    const void *calling, size_t calling_len, const void *called, size_t called_len)
{
    put_crcc(b, FG_COTP_CC, dst_ref, src_ref, tpdu_size, calling, calling_len, called, called_len);
}

void fg_x400_put_dr(struct fg_x400_buf *b, uint16_t dst_ref, uint16_t src_ref, uint8_t reason)
{
    uint8_t t[7] = {6,
                    FG_COTP_DR,
                    (uint8_t)(dst_ref >> 8),
                    (uint8_t)dst_ref,
                    (uint8_t)(src_ref >> 8),
                    (uint8_t)src_ref,
                    reason};
    put_tpkt_hdr(b, sizeof(t));
    fg_x400_buf_put(b, t, sizeof(t));
}

void fg_x400_put_er(struct fg_x400_buf *b, uint16_t dst_ref, uint8_t cause)
{
    /* With the "invalid TPDU" parameter kept to 2 octets: Wireshark gives
     * up on an ER whose LI exceeds 8 (x400-wire.md §1.4). */
    uint8_t t[9] = {8,    FG_COTP_ER, (uint8_t)(dst_ref >> 8), (uint8_t)dst_ref, cause, 0xC1, 2,
                    0x02, 0xF0};
    put_tpkt_hdr(b, sizeof(t));
    fg_x400_buf_put(b, t, sizeof(t));
}

void fg_x400_put_dt(struct fg_x400_buf *b, const void *tsdu, size_t len, size_t tpdu_size)
{
    if (tpdu_size < 8)
        tpdu_size = 128;
    if (tpdu_size > FG_TPKT_MAX - 4)
        tpdu_size = FG_TPKT_MAX - 4;
    size_t room = tpdu_size - 3; /* X.224 §13.7: DT header LI F0 EOT */
    const uint8_t *p = tsdu;
    do {
        size_t n = len > room ? room : len;
        uint8_t h[3] = {2, FG_COTP_DT, (uint8_t)(n == len ? 0x80 : 0x00)};
        put_tpkt_hdr(b, 3 + n);
        fg_x400_buf_put(b, h, 3);
        fg_x400_buf_put(b, p, n);
        p += n;
        len -= n;
    } while (len > 0);
}

/* --- RTS, X.410-1984 mode ------------------------------------------------------------ */

/* One BER element.  X.410 RTS PDUs are small definite-length SETs
 * (X.409); the 1988 presentation, ACSE and RTSE PDUs that real stacks send
 * (ISODE, for one) use the indefinite form too (X.690 §8.1.3.6): the
 * contents then end at the end-of-contents octets, which *v / *n leave
 * out.  Single-octet tags only: no PDU read here needs more. */
static int ber_get_d(const uint8_t **pp, const uint8_t *end, uint8_t *tag, const uint8_t **v,
                     size_t *n, int depth)
{
    const uint8_t *p = *pp;
    if (end - p < 2 || depth > 24)
        return -1;
    *tag = *p++;
    if ((*tag & 0x1F) == 0x1F)
        return -1;
    size_t l = *p++;
    if (l == 0x80) {
        if (!(*tag & 0x20))
            return -1; /* indefinite only for constructed encodings */
        const uint8_t *q = p;
        for (;;) {
            if (end - q >= 2 && q[0] == 0 && q[1] == 0)
                break;
            uint8_t t;
            const uint8_t *cv;
            size_t cn;
            if (ber_get_d(&q, end, &t, &cv, &cn, depth + 1) < 0)
                return -1;
        }
        *v = p;
        *n = (size_t)(q - p);
        *pp = q + 2;
        return 0;
    }
    if (l & 0x80) {
        size_t k = l & 0x7F;
        if (k == 0 || k > 3 || (size_t)(end - p) < k)
            return -1;
        l = 0;
        for (size_t i = 0; i < k; i++)
            l = (l << 8) | *p++;
    }
    if ((size_t)(end - p) < l)
        return -1;
    *v = p;
    *n = l;
    *pp = p + l;
    return 0;
}

static int ber_get(const uint8_t **pp, const uint8_t *end, uint8_t *tag, const uint8_t **v,
                   size_t *n)
{
    return ber_get_d(pp, end, tag, v, n, 0);
}

static uint32_t ber_uint(const uint8_t *v, size_t n)
{
    uint32_t x = 0;
    for (size_t i = 0; i < n && i < 4; i++)
        x = (x << 8) | v[i];
    return x;
}

static int rts_user(const uint8_t *p, const uint8_t *end, struct fg_rts *r)
{
    while (p < end) {
        uint8_t tag;
        const uint8_t *v;
        size_t n;
        if (ber_get(&p, end, &tag, &v, &n) < 0)
            return FG_EPROTO;
        switch (tag) {
        case 0x80:
            r->checkpoint = ber_uint(v, n);
            break;
        case 0x81:
            r->window = ber_uint(v, n);
            break;
        case 0x82:
            r->dialogue = (int)ber_uint(v, n);
            break;
        case 0x84:
            r->app_protocol = (int)ber_uint(v, n);
            break;
        case 0xA2:
        case 0xA3: {
            const uint8_t *q = v, *cv;
            size_t cn;
            uint8_t ct;
            if (ber_get(&q, v + n, &ct, &cv, &cn) < 0)
                return FG_EPROTO;
            if (ct == 0xA0) {
                r->open = cv;
                r->open_len = cn;
            } else {
                r->recover = 1;
            }
            break;
        }
        default:
            break;
        }
    }
    return 0;
}

/* --- 1988 normal mode: presentation (X.226), ACSE (X.227), RTSE (X.228) --- */

/* RTORQ/RTOAC/RTORJ/RTAB inside an EXTERNAL's single-ASN1-type (X.228 §9). */
static int nm_rtse(const uint8_t *p, const uint8_t *end, struct fg_rts *r)
{
    uint8_t tag, t2;
    const uint8_t *v, *v2;
    size_t n, n2;
    if (ber_get(&p, end, &tag, &v, &n) < 0)
        return FG_EPROTO;
    r->rtse_apdu = tag;
    if (tag == 0xB0 || tag == 0xB1) {
        r->normal = 1;
        return rts_user(v, v + n, r);
    }
    if (tag == 0xB2 || tag == 0xB6) /* refuseReason / abortReason [0] */
        for (const uint8_t *q = v; q < v + n;) {
            if (ber_get(&q, v + n, &t2, &v2, &n2) < 0)
                return FG_EPROTO;
            if (t2 == 0x80)
                r->reason = (int)ber_uint(v2, n2);
        }
    return 0;
}

/* An ACSE APDU's contents (AARQ 60, AARE 61, RLRQ 62, RLRE 63, ABRT 64). */
static int nm_acse(const uint8_t *p, const uint8_t *end, struct fg_rts *r)
{
    while (p < end) {
        uint8_t tag, t2;
        const uint8_t *v, *v2, *start;
        size_t n, n2;
        if (ber_get(&p, end, &tag, &v, &n) < 0)
            return FG_EPROTO;
        if (tag == 0xA1 && (r->acse == 0x60 || r->acse == 0x61)) {
            start = v; /* application-context-name: the OID, kept whole */
            const uint8_t *q = v;
            if (ber_get(&q, v + n, &t2, &v2, &n2) == 0 && t2 == 0x06) {
                r->app_ctx = start;
                r->app_ctx_len = (size_t)(q - start);
            }
        } else if (tag == 0xA2 && r->acse == 0x61) {
            const uint8_t *q = v;
            if (ber_get(&q, v + n, &t2, &v2, &n2) == 0 && t2 == 0x02)
                r->acse_result = (int)ber_uint(v2, n2);
        } else if (tag == 0xBE) { /* user-information: EXTERNAL */
            const uint8_t *q = v;
            if (ber_get(&q, v + n, &t2, &v2, &n2) < 0 || t2 != 0x28)
                return FG_EPROTO;
            for (const uint8_t *e = v2; e < v2 + n2;) {
                uint8_t t3;
                const uint8_t *v3;
                size_t n3;
                if (ber_get(&e, v2 + n2, &t3, &v3, &n3) < 0)
                    return FG_EPROTO;
                if (t3 == 0x02)
                    r->rtse_ctx = (int)ber_uint(v3, n3);
                else if (t3 == 0xA0 && nm_rtse(v3, v3 + n3, r) < 0)
                    return FG_EPROTO;
            }
        }
    }
    return 0;
}

/* User-data: fully-encoded-data [APPLICATION 1] SEQUENCE OF PDV-list
 * (X.226 §8.4.2); simply-encoded data is not used by RTSE. */
static int nm_user_data(const uint8_t *p, const uint8_t *end, struct fg_rts *r)
{
    while (p < end) {
        uint8_t tag, t2;
        const uint8_t *v, *v2;
        size_t n, n2;
        int ctx = -1;
        if (ber_get(&p, end, &tag, &v, &n) < 0 || tag != 0x30)
            return FG_EPROTO;
        for (const uint8_t *q = v; q < v + n;) {
            if (ber_get(&q, v + n, &t2, &v2, &n2) < 0)
                return FG_EPROTO;
            if (t2 == 0x02) {
                ctx = (int)ber_uint(v2, n2);
            } else if (t2 == 0xA0) { /* single-ASN1-type */
                uint8_t t3;
                const uint8_t *v3, *e = v2;
                size_t n3;
                if (ber_get(&e, v2 + n2, &t3, &v3, &n3) < 0)
                    return FG_EPROTO;
                r->normal = 1;
                if (t3 >= 0x60 && t3 <= 0x64) {
                    r->acse = t3;
                    r->acse_ctx = ctx;
                    if (nm_acse(v3, v3 + n3, r) < 0)
                        return FG_EPROTO;
                } else if (t3 == 0x04) { /* RTTRapdu: a segment of the APDU */
                    r->data_ctx = ctx;
                    r->rttr = v3;
                    r->rttr_len = n3;
                } else if (t3 == 0x02) { /* RTTPapdu: turn please, priority */
                    r->data_ctx = ctx;
                } else if (t3 >= 0xB0 && t3 <= 0xB6) {
                    r->data_ctx = ctx;
                    if (nm_rtse(v2, v2 + n2, r) < 0)
                        return FG_EPROTO;
                }
            }
        }
    }
    return 0;
}

/* CP-type / CPA-PPDU normal-mode-parameters [2] (X.226 §8.2, §8.3). */
static int nm_params(const uint8_t *p, const uint8_t *end, struct fg_rts *r)
{
    while (p < end) {
        uint8_t tag, t2, t3;
        const uint8_t *v, *v2, *v3;
        size_t n, n2, n3;
        if (ber_get(&p, end, &tag, &v, &n) < 0)
            return FG_EPROTO;
        if (tag == 0xA4) { /* presentation-context-definition-list */
            for (const uint8_t *q = v; q < v + n;) {
                if (ber_get(&q, v + n, &t2, &v2, &n2) < 0 || t2 != 0x30)
                    return FG_EPROTO;
                int id = -1;
                const uint8_t *asn = NULL;
                size_t asn_len = 0;
                for (const uint8_t *e = v2; e < v2 + n2;) {
                    const uint8_t *at = e;
                    if (ber_get(&e, v2 + n2, &t3, &v3, &n3) < 0)
                        return FG_EPROTO;
                    if (t3 == 0x02)
                        id = (int)ber_uint(v3, n3);
                    else if (t3 == 0x06 && !asn) {
                        asn = at;
                        asn_len = (size_t)(e - at);
                    }
                }
                if (r->nctx < FG_RTS_MAX_CTX) {
                    r->ctx_id[r->nctx] = id;
                    r->ctx_asn[r->nctx] = asn;
                    r->ctx_asn_len[r->nctx] = asn_len;
                }
                r->nctx++;
            }
        } else if (tag == 0xA5) { /* presentation-context-definition-result-list */
            for (const uint8_t *q = v; q < v + n;) {
                if (ber_get(&q, v + n, &t2, &v2, &n2) < 0)
                    return FG_EPROTO;
                r->nctx++;
            }
        } else if (tag == 0x61) {
            if (nm_user_data(v, v + n, r) < 0)
                return FG_EPROTO;
        }
    }
    return 0;
}

int fg_x400_rts_decode(enum fg_spdu_type hint, const uint8_t *p, size_t n, struct fg_rts *r)
{
    memset(r, 0, sizeof(*r));
    r->window = 3; /* X.228 §7.1.5.2 defaults */
    r->app_protocol = 1;
    r->reason = -1;
    r->acse_ctx = r->rtse_ctx = r->data_ctx = r->acse_result = -1;
    const uint8_t *end = p + n, *v;
    size_t vn;
    uint8_t tag;
    if (ber_get(&p, end, &tag, &v, &vn) < 0)
        return FG_EPROTO;
    if (tag == 0x61 || tag == 0xA0) {
        /* S-DATA, S-RELEASE user data (fully-encoded-data), or an
         * ARU-PPDU's normal-mode [0] holding it. */
        if (tag == 0xA0) {
            const uint8_t *q = v;
            while (q < v + vn) {
                uint8_t t2;
                const uint8_t *v2;
                size_t n2;
                if (ber_get(&q, v + vn, &t2, &v2, &n2) < 0)
                    return FG_EPROTO;
                if (t2 == 0x61 && nm_user_data(v2, v2 + n2, r) < 0)
                    return FG_EPROTO;
            }
        } else if (nm_user_data(v, v + vn, r) < 0) {
            return FG_EPROTO;
        }
        r->kind = hint == FG_SPDU_AB ? FG_RTS_ABORTINFO : FG_RTS_NONE;
        return r->normal ? 0 : FG_EPROTO;
    }
    if (tag != 0x31)
        return FG_EPROTO;
    const uint8_t *q = v, *qend = v + vn;
    while (q < qend) {
        const uint8_t *ev;
        size_t en;
        if (ber_get(&q, qend, &tag, &ev, &en) < 0)
            return FG_EPROTO;
        if (tag == 0xA0) { /* DataTransferSyntax x409(0), or mode-selector normal-mode(1) */
            const uint8_t *e2 = ev, *iv;
            size_t in;
            uint8_t it;
            if (ber_get(&e2, ev + en, &it, &iv, &in) == 0 && it == 0x80)
                r->x410 = ber_uint(iv, in) == 0;
        } else if (tag == 0xA1) {
            if (rts_user(ev, ev + en, r) < 0)
                return FG_EPROTO;
        } else if (tag == 0xA2 && !r->x410) {
            if (nm_params(ev, ev + en, r) < 0)
                return FG_EPROTO;
        } else if (tag == 0x80) {
            r->reason = (int)ber_uint(ev, en);
        }
    }
    switch (hint) {
    case FG_SPDU_CN:
        r->kind = FG_RTS_PCONNECT;
        break;
    case FG_SPDU_AC:
        r->kind = FG_RTS_PACCEPT;
        break;
    case FG_SPDU_RF:
        r->kind = FG_RTS_PREFUSE;
        break;
    case FG_SPDU_AB:
        r->kind = FG_RTS_ABORTINFO;
        break;
    default:
        r->kind = FG_RTS_NONE;
        break;
    }
    return 0;
}

static void ber_put(struct fg_x400_buf *b, uint8_t tag, const void *v, size_t n)
{
    fg_x400_buf_byte(b, tag);
    if (n < 128) {
        fg_x400_buf_byte(b, (uint8_t)n);
    } else if (n < 256) {
        uint8_t l[2] = {0x81, (uint8_t)n};
        fg_x400_buf_put(b, l, 2);
    } else if (n < 65536) {
        uint8_t l[3] = {0x82, (uint8_t)(n >> 8), (uint8_t)n};
        fg_x400_buf_put(b, l, 3);
    } else {
        uint8_t l[4] = {0x83, (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        fg_x400_buf_put(b, l, 4);
    }
    fg_x400_buf_put(b, v, n);
}

static void ber_put_uint(struct fg_x400_buf *b, uint8_t tag, uint32_t x)
{
    uint8_t v[5];
    size_t n = 0;
    int started = 0;
    for (int sh = 24; sh >= 0; sh -= 8) {
        uint8_t c = (uint8_t)(x >> sh);
        if (!started && c == 0 && sh > 0)
            continue;
        if (!started && (c & 0x80))
            v[n++] = 0; /* keep it positive */
        started = 1;
        v[n++] = c;
    }
    ber_put(b, tag, v, n);
}

static void rts_connect_accept(struct fg_x400_buf *b, int connect, uint32_t ckpt, uint32_t window,
                               int dialogue, int app_protocol, const void *open, size_t open_len)
{
    static const uint8_t null_open[2] = {0x05, 0x00};
    static const uint8_t x409[3] = {0x80, 0x01, 0x00};
    struct fg_x400_buf u = {0}, cd = {0}, open0 = {0}, set = {0};
    ber_put_uint(&u, 0x80, ckpt);
    ber_put_uint(&u, 0x81, window);
    if (connect)
        ber_put_uint(&u, 0x82, (uint32_t)dialogue);
    ber_put(&open0, 0xA0, open ? open : null_open, open ? open_len : sizeof(null_open));
    ber_put(&u, connect ? 0xA3 : 0xA2, open0.p, open0.len);
    if (connect)
        ber_put_uint(&u, 0x84, (uint32_t)app_protocol); /* p1(1), p3(3), ... */
    ber_put(&set, 0xA0, x409, sizeof(x409));
    ber_put(&set, 0xA1, u.p, u.len);
    ber_put(b, 0x31, set.p, set.len);
    fg_x400_buf_free(&u);
    fg_x400_buf_free(&cd);
    fg_x400_buf_free(&open0);
    fg_x400_buf_free(&set);
}

void fg_x400_rts_pconnect(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window, int dialogue,
                          const void *open, size_t open_len)
{
    rts_connect_accept(b, 1, checkpoint, window, dialogue, 1, open, open_len);
}

void fg_x400_rts_pconnect_app(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window,
                              int dialogue, int app_protocol, const void *open, size_t open_len)
{
    rts_connect_accept(b, 1, checkpoint, window, dialogue, app_protocol, open, open_len);
}

void fg_x400_rts_paccept(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window,
                         const void *open, size_t open_len)
{
    rts_connect_accept(b, 0, checkpoint, window, 0, 0, open, open_len);
}

static void rts_reason_set(struct fg_x400_buf *b, int reason)
{
    struct fg_x400_buf s = {0};
    ber_put_uint(&s, 0x80, (uint32_t)reason);
    ber_put(b, 0x31, s.p, s.len);
    fg_x400_buf_free(&s);
}

void fg_x400_rts_prefuse(struct fg_x400_buf *b, int reason)
{
    rts_reason_set(b, reason);
}

void fg_x400_rts_abortinfo(struct fg_x400_buf *b, int reason)
{
    rts_reason_set(b, reason);
}

/* --- 1988 normal mode encoders (x400-wire.md §3.3, §8) ------------------------------ */

static const uint8_t ber_ts[4] = {0x06, 0x02, 0x51, 0x01}; /* transfer syntax BER 2.1.1 */

/* ber_put of a buffer, which is then emptied. */
static void ber_wrap(struct fg_x400_buf *b, uint8_t tag, struct fg_x400_buf *in)
{
    ber_put(b, tag, in->p, in->len);
    fg_x400_buf_free(in);
}

/* EXTERNAL {direct-reference BER, indirect-reference ctx, single-ASN1-type
 * [0] apdu} (X.227 §7.1.1 user-information). */
static void nm_external(struct fg_x400_buf *b, int ctx, struct fg_x400_buf *apdu)
{
    struct fg_x400_buf e = {0}, s1 = {0};
    fg_x400_buf_put(&e, ber_ts, sizeof ber_ts);
    ber_put_uint(&e, 0x02, (uint32_t)ctx);
    ber_wrap(&s1, 0xA0, apdu);
    fg_x400_buf_put(&e, s1.p, s1.len);
    fg_x400_buf_free(&s1);
    ber_wrap(b, 0x28, &e);
}

/* fully-encoded-data with one PDV-list: 61 {30 {02 ctx, a0 {apdu}}}. */
static void nm_pdv(struct fg_x400_buf *b, int ctx, struct fg_x400_buf *apdu)
{
    struct fg_x400_buf l = {0}, s1 = {0}, seq = {0};
    ber_put_uint(&l, 0x02, (uint32_t)ctx);
    ber_wrap(&s1, 0xA0, apdu);
    fg_x400_buf_put(&l, s1.p, s1.len);
    fg_x400_buf_free(&s1);
    ber_wrap(&seq, 0x30, &l);
    ber_wrap(b, 0x61, &seq);
}

static void nm_rtoq(struct fg_x400_buf *b, uint8_t tag, uint32_t ckpt, uint32_t window,
                    int dialogue, const void *open, size_t open_len)
{
    static const uint8_t null_open[2] = {0x05, 0x00};
    struct fg_x400_buf u = {0}, open0 = {0}, cd = {0};
    ber_put_uint(&u, 0x80, ckpt);
    ber_put_uint(&u, 0x81, window);
    if (tag == 0xB0)
        ber_put_uint(&u, 0x82, (uint32_t)dialogue);
    ber_put(&open0, 0xA0, open ? open : null_open, open ? open_len : sizeof(null_open));
    ber_wrap(&cd, tag == 0xB0 ? 0xA3 : 0xA2, &open0);
    fg_x400_buf_put(&u, cd.p, cd.len);
    fg_x400_buf_free(&cd);
    ber_wrap(b, tag, &u);
}

void fg_x400_rts_cp(struct fg_x400_buf *b, const struct fg_x400_nm *nm, uint32_t checkpoint,
                    uint32_t window, int dialogue, const void *open, size_t open_len)
{
    static const uint8_t normal[5] = {0xA0, 0x03, 0x80, 0x01, 0x01};
    struct fg_x400_buf list = {0}, params = {0}, rq = {0}, ext = {0}, aarq = {0}, ud = {0},
                       set = {0};
    for (unsigned i = 0; i < nm->nctx; i++) {
        struct fg_x400_buf d = {0}, ts = {0};
        ber_put_uint(&d, 0x02, (uint32_t)nm->ctx[i].id);
        fg_x400_buf_put(&d, nm->ctx[i].asn, nm->ctx[i].asn_len);
        fg_x400_buf_put(&ts, ber_ts, sizeof ber_ts);
        ber_wrap(&d, 0x30, &ts);
        ber_wrap(&list, 0x30, &d);
    }
    ber_wrap(&params, 0xA4, &list);
    nm_rtoq(&rq, 0xB0, checkpoint, window, dialogue, open, open_len);
    nm_external(&ext, nm->rtse_ctx, &rq);
    struct fg_x400_buf ac = {0};
    fg_x400_buf_put(&ac, nm->app_ctx, nm->app_ctx_len);
    ber_wrap(&aarq, 0xA1, &ac);
    ber_wrap(&aarq, 0xBE, &ext);
    struct fg_x400_buf apdu = {0};
    ber_wrap(&apdu, 0x60, &aarq);
    nm_pdv(&ud, nm->acse_ctx, &apdu);
    fg_x400_buf_put(&params, ud.p, ud.len);
    fg_x400_buf_free(&ud);
    fg_x400_buf_put(&set, normal, sizeof normal);
    ber_wrap(&set, 0xA2, &params);
    ber_wrap(b, 0x31, &set);
}

void fg_x400_rts_cpa(struct fg_x400_buf *b, const struct fg_rts *cp, uint32_t checkpoint,
                     uint32_t window, const void *open, size_t open_len)
{
    static const uint8_t normal[5] = {0xA0, 0x03, 0x80, 0x01, 0x01};
    static const uint8_t accepted[5] = {0xA2, 0x03, 0x02, 0x01, 0x00};
    static const uint8_t user_null[7] = {0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, 0x00};
    static const uint8_t mts_transfer[6] = {0x06, 0x04, 0x56, 0x00, 0x01, 0x06};
    struct fg_x400_buf res = {0}, params = {0}, ac = {0}, ext = {0}, aare = {0}, apdu = {0},
                       ud = {0}, set = {0};
    /* one acceptance, transfer syntax BER, per proposed context, in order */
    for (unsigned i = 0; i < (cp->nctx ? cp->nctx : 1); i++) {
        static const uint8_t one[9] = {0x30, 0x07, 0x80, 0x01, 0x00, 0x81, 0x02, 0x51, 0x01};
        fg_x400_buf_put(&res, one, sizeof one);
    }
    ber_wrap(&params, 0xA5, &res);
    nm_rtoq(&ac, 0xB1, checkpoint, window, 0, open, open_len);
    nm_external(&ext, cp->rtse_ctx >= 0 ? cp->rtse_ctx : 3, &ac);
    struct fg_x400_buf name = {0};
    if (cp->app_ctx)
        fg_x400_buf_put(&name, cp->app_ctx, cp->app_ctx_len);
    else
        fg_x400_buf_put(&name, mts_transfer, sizeof mts_transfer);
    ber_wrap(&aare, 0xA1, &name);
    fg_x400_buf_put(&aare, accepted, sizeof accepted);
    fg_x400_buf_put(&aare, user_null, sizeof user_null);
    ber_wrap(&aare, 0xBE, &ext);
    ber_wrap(&apdu, 0x61, &aare);
    nm_pdv(&ud, cp->acse_ctx >= 0 ? cp->acse_ctx : 1, &apdu);
    fg_x400_buf_put(&params, ud.p, ud.len);
    fg_x400_buf_free(&ud);
    fg_x400_buf_put(&set, normal, sizeof normal);
    ber_wrap(&set, 0xA2, &params);
    ber_wrap(b, 0x31, &set);
}

void fg_x400_rts_pdata(struct fg_x400_buf *b, int ctx, const void *seg, size_t len)
{
    struct fg_x400_buf t = {0};
    ber_put(&t, 0x04, seg, len);
    nm_pdv(b, ctx, &t);
}

void fg_x400_rts_release(struct fg_x400_buf *b, int response, int acse_ctx)
{
    static const uint8_t normal_reason[3] = {0x80, 0x01, 0x00};
    struct fg_x400_buf a = {0}, apdu = {0};
    fg_x400_buf_put(&a, normal_reason, sizeof normal_reason);
    ber_wrap(&apdu, response ? 0x63 : 0x62, &a);
    nm_pdv(b, acse_ctx, &apdu);
}

void fg_x400_ber_put_uint(struct fg_x400_buf *b, uint8_t tag, uint32_t x)
{
    ber_put_uint(b, tag, x);
}

int fg_x400_ber_int(const uint8_t *p, size_t n, uint32_t *v)
{
    uint8_t tag;
    const uint8_t *iv;
    size_t in;
    if (!p || ber_get(&p, p + n, &tag, &iv, &in) < 0 || tag != 0x02 || in == 0 || in > 4)
        return 0;
    *v = ber_uint(iv, in);
    return 1;
}
