/* x400_fault.c - the X.400 proxy's fault syntax (faultgate/x400_proxy.h):
 * one line per fault, "TRIGGER [, SELECTOR]... : ACTION [, forward]", in
 * the spirit of fault.h, whose selector parser is reused as is; the fault
 * set; and the scenario keys `x400_faults:` and `x400_peer:`.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fake_x400.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"
#include "faultgate/yamldoc.h"

/* --- words ---------------------------------------------------------------- */

struct span {
    const char *s;
    size_t len;
    size_t base; /* offset of s in the whole line */
};

struct perr {
    char *err;
    size_t errlen;
    int *col;
};

static int fail(const struct perr *e, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const struct perr *e, size_t at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (e->err && e->errlen)
        vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    if (e->col)
        *e->col = (int)at + 1;
    return FG_ESYNTAX;
}

static struct span next_word(struct span *sp)
{
    size_t i = 0;
    while (i < sp->len && isspace((unsigned char)sp->s[i]))
        i++;
    size_t j = i;
    while (j < sp->len && !isspace((unsigned char)sp->s[j]))
        j++;
    struct span w = {sp->s + i, j - i, sp->base + i};
    sp->s += j;
    sp->len -= j;
    sp->base += j;
    return w;
}

static int word_is(struct span w, const char *kw)
{
    return w.len == strlen(kw) && strncasecmp(w.s, kw, w.len) == 0;
}

static void word_copy(struct span w, char *buf, size_t len)
{
    size_t n = w.len < len - 1 ? w.len : len - 1;
    memcpy(buf, w.s, n);
    buf[n] = '\0';
}

static int word_uint(struct span w, uint64_t min, uint64_t max, uint64_t *v)
{
    char num[24];
    if (!w.len || w.len >= sizeof num)
        return -1;
    word_copy(w, num, sizeof num);
    return fg_uint_parse(num, min, max, v);
}

/* A hex octet as the X.224 tables write them ("80", "85", "0x02"). */
static int word_hex(struct span w, uint8_t *v)
{
    char num[8];
    if (!w.len || w.len >= sizeof num)
        return -1;
    word_copy(w, num, sizeof num);
    const char *p = num;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2;
    if (!*p || strlen(p) > 2)
        return -1;
    unsigned x = 0;
    for (; *p; p++) {
        if (!isxdigit((unsigned char)*p))
            return -1;
        x = x * 16 + (unsigned)(isdigit((unsigned char)*p) ? *p - '0' : tolower(*p) - 'a' + 10);
    }
    *v = (uint8_t)x;
    return 0;
}

static int dir_word(struct span w, enum fg_x4f_dir *d)
{
    if (word_is(w, "c2s"))
        *d = FG_X4F_C2S;
    else if (word_is(w, "s2c"))
        *d = FG_X4F_S2C;
    else
        return 0;
    return 1;
}

/* "#N" */
static int seq_word(struct span w, unsigned *seq, const struct perr *e)
{
    uint64_t v;
    if (w.len < 2 || w.s[0] != '#' ||
        word_uint((struct span){w.s + 1, w.len - 1, w.base + 1}, 1, 1000000000, &v) != 0)
        return fail(e, w.base, "bad count '%.*s' (expected #1, #2, ...)", (int)w.len, w.s);
    *seq = (unsigned)v;
    return 0;
}

/* SPDUs that carry a Serial Number (PI 42; X.225 §8.3). */
static int carries_serial(enum fg_spdu_type t)
{
    switch (t) {
    case FG_SPDU_MIP:
    case FG_SPDU_MIA:
    case FG_SPDU_MAP:
    case FG_SPDU_AE:
    case FG_SPDU_AEA:
    case FG_SPDU_RS:
    case FG_SPDU_RA:
    case FG_SPDU_AR:
        return 1;
    default:
        return 0;
    }
}

/* --- trigger ---------------------------------------------------------------- */

static int trigger_span(struct span sp, struct fg_x400_fault *f, const struct perr *e)
{
    struct span w = next_word(&sp);
    if (!w.len)
        return fail(e, w.base,
                    "expected a trigger (tpkt, spdu, activity-start, activity-end "
                    "or connect)");
    struct span a;
    if (word_is(w, "connect")) {
        f->trig = FG_X4F_CONNECT;
    } else if (word_is(w, "tpkt")) {
        f->trig = FG_X4F_TPKT;
        a = next_word(&sp);
        if (dir_word(a, &f->dir))
            a = next_word(&sp);
        if (!a.len)
            return fail(e, a.base, "tpkt needs a count N (the Nth TPKT)");
        if (word_uint(a, 1, UINT64_MAX / 2, &f->tpkt_n) != 0)
            return fail(e, a.base, "bad TPKT count '%.*s' (expected 1, 2, ...)", (int)a.len, a.s);
    } else if (word_is(w, "spdu")) {
        f->trig = FG_X4F_SPDU;
        a = next_word(&sp);
        if (!a.len)
            return fail(e, a.base, "spdu needs a type (CN, AC, MIP, MIA, AE, AEA, ...)");
        char name[16];
        word_copy(a, name, sizeof name);
        f->spdu = a.len < sizeof name ? fg_spdu_type_parse(name) : FG_SPDU_UNKNOWN;
        if (f->spdu == FG_SPDU_UNKNOWN)
            return fail(e, a.base,
                        "unknown SPDU type '%.*s' (CN, AC, RF, FN, DN, AB, AA, GT, PT, "
                        "DT, MIP, MIA, AE, AEA, AS, AD, ADA, ...)",
                        (int)a.len, a.s);
        for (a = next_word(&sp); a.len; a = next_word(&sp)) {
            if (dir_word(a, &f->dir))
                continue;
            if (a.s[0] == '#') {
                int rc = seq_word(a, &f->seq, e);
                if (rc)
                    return rc;
                continue;
            }
            if (word_is(a, "serial")) {
                struct span n = next_word(&sp);
                uint64_t v;
                if (!carries_serial(f->spdu))
                    return fail(e, a.base, "%s carries no serial number", fg_spdu_name(f->spdu));
                if (word_uint(n, 0, 999999, &v) != 0)
                    return fail(e, n.base, "bad serial number '%.*s' (expected 0..999999)",
                                (int)n.len, n.s);
                f->has_serial = 1;
                f->serial = (uint32_t)v;
                continue;
            }
            return fail(e, a.base, "unexpected '%.*s' (expected c2s, s2c, #N or serial N)",
                        (int)a.len, a.s);
        }
        return 0;
    } else if (word_is(w, "activity-start") || word_is(w, "activity-end")) {
        f->trig = word_is(w, "activity-start") ? FG_X4F_ACT_START : FG_X4F_ACT_END;
        a = next_word(&sp);
        if (a.len) {
            int rc = seq_word(a, &f->seq, e);
            if (rc)
                return rc;
        }
    } else {
        return fail(e, w.base,
                    "unknown trigger '%.*s' (tpkt, spdu, activity-start, activity-end or connect)",
                    (int)w.len, w.s);
    }
    a = next_word(&sp);
    if (a.len)
        return fail(e, a.base, "unexpected '%.*s' after the trigger", (int)a.len, a.s);
    return 0;
}

/* --- action ----------------------------------------------------------------- */

static const char *const abort_reasons[] = {
    "local-system-problem", "invalid-parameter", "unrecognized-activity",
    "temporary-problem",    "protocol-error",    "permanent-problem",
    "user-error",           "transfer-completed"};

static int action_span(struct span sp, struct fg_x400_fault *f, const struct perr *e)
{
    struct span w = next_word(&sp);
    struct span a;
    if (!w.len)
        return fail(e, w.base,
                    "expected an action (abort, dr, er, reset, close, stall, rewrite-serial)");
    if (word_is(w, "abort")) {
        f->action = FG_X4F_ABORT;
        f->abort_reason = 4; /* protocolError (X.410 AbortReason) */
        int have_kind = 0, have_reason = 0, have_rts = 0;
        for (a = next_word(&sp); a.len; a = next_word(&sp)) {
            if (!have_kind && (word_is(a, "user") || word_is(a, "provider"))) {
                have_kind = 1;
                f->user = word_is(a, "user");
            } else if (word_is(a, "rts") && !have_rts) {
                f->rts = have_rts = 1;
            } else if (word_is(a, "reason") && !have_reason) {
                struct span r = next_word(&sp);
                uint64_t v;
                int k = -1;
                for (size_t i = 0; i < sizeof abort_reasons / sizeof abort_reasons[0]; i++)
                    if (word_is(r, abort_reasons[i]))
                        k = (int)i;
                if (k < 0 && word_uint(r, 0, 7, &v) == 0)
                    k = (int)v;
                if (k < 0)
                    return fail(e, r.base,
                                "bad abort reason '%.*s' (0-7 or local-system-problem, "
                                "invalid-parameter, unrecognized-activity, temporary-problem, "
                                "protocol-error, permanent-problem, user-error, "
                                "transfer-completed)",
                                (int)r.len, r.s);
                f->abort_reason = k;
                f->rts = 1;
                have_reason = 1;
            } else {
                return fail(e, a.base, "unexpected '%.*s' (abort [user|provider] [reason R] [rts])",
                            (int)a.len, a.s);
            }
        }
        return 0;
    }
    if (word_is(w, "dr") || word_is(w, "er")) {
        int dr = word_is(w, "dr");
        f->action = dr ? FG_X4F_DR : FG_X4F_ER;
        f->octet = dr ? 0x80 : 0x02;
        a = next_word(&sp);
        if (a.len) {
            if (!word_is(a, dr ? "reason" : "cause"))
                return fail(e, a.base, "unexpected '%.*s' (%s)", (int)a.len, a.s,
                            dr ? "dr [reason HH]" : "er [cause HH]");
            struct span r = next_word(&sp);
            if (word_hex(r, &f->octet) != 0)
                return fail(e, r.base, "bad %s '%.*s' (a hex octet such as %s)",
                            dr ? "reason" : "cause", (int)r.len, r.s, dr ? "80 or 85" : "02");
        }
    } else if (word_is(w, "reset")) {
        f->action = FG_X4F_RESET;
    } else if (word_is(w, "close")) {
        f->action = FG_X4F_CLOSE;
    } else if (word_is(w, "stall")) {
        f->action = FG_X4F_STALL;
    } else if (word_is(w, "rewrite-serial")) {
        f->action = FG_X4F_REWRITE_SERIAL;
        a = next_word(&sp);
        uint64_t v;
        struct span n = a;
        f->rw = FG_X4F_RW_SET;
        if (a.len && (a.s[0] == '+' || a.s[0] == '-')) {
            f->rw = a.s[0] == '+' ? FG_X4F_RW_ADD : FG_X4F_RW_SUB;
            n = (struct span){a.s + 1, a.len - 1, a.base + 1};
        }
        if (!a.len)
            return fail(e, a.base, "rewrite-serial needs N, +K or -K");
        if (word_uint(n, 0, 9999999, &v) != 0)
            return fail(e, a.base, "bad serial '%.*s' (N, +K or -K, at most 7 digits)", (int)a.len,
                        a.s);
        f->rw_val = (uint32_t)v;
    } else {
        return fail(e, w.base,
                    "unknown action '%.*s' (abort, dr, er, reset, close, stall, rewrite-serial)",
                    (int)w.len, w.s);
    }
    a = next_word(&sp);
    if (a.len)
        return fail(e, a.base, "unexpected '%.*s' after the action", (int)a.len, a.s);
    return 0;
}

/* --- canonical text ------------------------------------------------------------ */

static const char *dir_text(enum fg_x4f_dir d)
{
    return d == FG_X4F_C2S ? " c2s" : d == FG_X4F_S2C ? " s2c" : "";
}

static void canon(struct fg_x400_fault *f)
{
    char t[96], s[64] = "", a[96];
    switch (f->trig) {
    case FG_X4F_TPKT:
        snprintf(t, sizeof t, "tpkt%s %llu", dir_text(f->dir), (unsigned long long)f->tpkt_n);
        break;
    case FG_X4F_SPDU: {
        int n = snprintf(t, sizeof t, "spdu %s%s", fg_spdu_name(f->spdu), dir_text(f->dir));
        if (f->seq)
            n += snprintf(t + n, sizeof t - (size_t)n, " #%u", f->seq);
        if (f->has_serial)
            snprintf(t + n, sizeof t - (size_t)n, " serial %u", (unsigned)f->serial);
        break;
    }
    case FG_X4F_ACT_START:
    case FG_X4F_ACT_END: {
        const char *w = f->trig == FG_X4F_ACT_START ? "activity-start" : "activity-end";
        if (f->seq)
            snprintf(t, sizeof t, "%s #%u", w, f->seq);
        else
            snprintf(t, sizeof t, "%s", w);
        break;
    }
    default:
        snprintf(t, sizeof t, "connect");
        break;
    }
    int n = 0;
    if (f->sel == FG_SEL_FIRST)
        n += snprintf(s + n, sizeof s - (size_t)n, ", first");
    else if (f->sel == FG_SEL_NTH)
        n += snprintf(s + n, sizeof s - (size_t)n, ", nth %u", f->conn_n);
    else if (f->sel == FG_SEL_FROM)
        n += snprintf(s + n, sizeof s - (size_t)n, ", from %u", f->conn_n);
    if (f->prob < 1.0)
        n += snprintf(s + n, sizeof s - (size_t)n, ", p %g", f->prob);
    if (f->each)
        snprintf(s + n, sizeof s - (size_t)n, ", each");
    switch (f->action) {
    case FG_X4F_ABORT:
        if (f->rts)
            snprintf(a, sizeof a, "abort %s reason %s rts", f->user ? "user" : "provider",
                     abort_reasons[f->abort_reason]);
        else
            snprintf(a, sizeof a, "abort %s", f->user ? "user" : "provider");
        break;
    case FG_X4F_DR:
        snprintf(a, sizeof a, "dr reason %02x", f->octet);
        break;
    case FG_X4F_ER:
        snprintf(a, sizeof a, "er cause %02x", f->octet);
        break;
    case FG_X4F_RESET:
        snprintf(a, sizeof a, "reset");
        break;
    case FG_X4F_CLOSE:
        snprintf(a, sizeof a, "close");
        break;
    case FG_X4F_STALL:
        snprintf(a, sizeof a, "stall");
        break;
    case FG_X4F_REWRITE_SERIAL:
        snprintf(a, sizeof a, "rewrite-serial %s%u",
                 f->rw == FG_X4F_RW_ADD   ? "+"
                 : f->rw == FG_X4F_RW_SUB ? "-"
                                          : "",
                 (unsigned)f->rw_val);
        break;
    }
    free(f->spec);
    f->spec = fg_asprintf("%s%s: %s%s", t, s, a, f->forward ? ", forward" : "");
}

/* --- the line ------------------------------------------------------------------ */

int fg_x400_fault_parse(const char *line, struct fg_x400_fault *f, char *err, size_t errlen,
                        int *col)
{
    struct perr e = {err, errlen, col};
    memset(f, 0, sizeof *f);
    f->sel = FG_SEL_EVERY;
    f->prob = 1.0;
    const char *colon = strchr(line, ':');
    if (!colon)
        return fail(&e, strlen(line), "expected ':' between the trigger and the action");
    size_t tlen = (size_t)(colon - line);
    const char *comma = memchr(line, ',', tlen);
    size_t trig_end = comma ? (size_t)(comma - line) : tlen;
    int rc = trigger_span((struct span){line, trig_end, 0}, f, &e);
    if (rc == 0 && comma) {
        /* Selectors: fault.h's own parser, columns shifted onto the line. */
        struct fg_fault sf;
        memset(&sf, 0, sizeof sf);
        sf.sel = FG_SEL_EVERY;
        sf.prob = 1.0;
        char *sel = fg_strndup(comma + 1, tlen - trig_end - 1);
        int scol = 0;
        rc = fg_fault_parse_selector(sel, &sf, err, errlen, &scol);
        free(sel);
        if (rc) {
            if (col)
                *col = (int)trig_end + 1 + scol;
            rc = FG_ESYNTAX;
        } else {
            f->sel = sf.sel;
            f->conn_n = sf.conn_n;
            f->prob = sf.prob;
            f->each = sf.each;
        }
        fg_fault_clear(&sf);
    }
    if (rc == 0) {
        /* Options after the action: `, forward`. */
        const char *act = colon + 1;
        size_t alen = strlen(act), abase = tlen + 1;
        const char *opt = strchr(act, ',');
        size_t aend = opt ? (size_t)(opt - act) : alen;
        rc = action_span((struct span){act, aend, abase}, f, &e);
        while (rc == 0 && opt) {
            const char *next = strchr(opt + 1, ',');
            size_t olen = next ? (size_t)(next - opt - 1) : strlen(opt + 1);
            struct span os = {opt + 1, olen, abase + (size_t)(opt + 1 - act)};
            struct span w = next_word(&os);
            if (word_is(w, "forward") && !f->forward)
                f->forward = 1;
            else
                rc = fail(&e, w.base, "unknown option '%.*s' (forward)", (int)w.len, w.s);
            if (rc == 0) {
                struct span x = next_word(&os);
                if (x.len)
                    rc = fail(&e, x.base, "unexpected '%.*s' after the option", (int)x.len, x.s);
            }
            opt = next;
        }
        if (rc == 0) {
            size_t at = abase;
            while (at < strlen(line) && isspace((unsigned char)line[at]))
                at++;
            if (f->action == FG_X4F_REWRITE_SERIAL && f->trig != FG_X4F_ACT_END &&
                !(f->trig == FG_X4F_SPDU && carries_serial(f->spdu)))
                rc = fail(&e, at,
                          "rewrite-serial needs an SPDU that carries a serial number (spdu "
                          "MIP, MIA, MAP, AE, AEA, RS, RA or AR, or activity-end)");
            else if (f->action == FG_X4F_REWRITE_SERIAL && f->forward)
                rc = fail(&e, at, "rewrite-serial always forwards: 'forward' does not apply");
            else if (f->trig == FG_X4F_CONNECT && f->forward)
                rc = fail(&e, at, "'forward' needs a triggering TPDU: not valid on connect");
            else if (f->trig == FG_X4F_CONNECT && f->action == FG_X4F_REWRITE_SERIAL)
                rc = fail(&e, at, "rewrite-serial is not valid on connect");
        }
    }
    if (rc) {
        fg_x400_fault_clear(f);
        return rc;
    }
    canon(f);
    return 0;
}

void fg_x400_fault_clear(struct fg_x400_fault *f)
{
    free(f->spec);
    memset(f, 0, sizeof *f);
}

void fg_x400_fault_copy(struct fg_x400_fault *dst, const struct fg_x400_fault *src)
{
    *dst = *src;
    dst->spec = src->spec ? fg_strdup(src->spec) : NULL;
}

/* --- the set ------------------------------------------------------------------- */

void fg_x400_fault_set_init(struct fg_x400_fault_set *fs, uint64_t seed)
{
    memset(fs, 0, sizeof *fs);
    fs->seed = seed;
}

void fg_x400_fault_set_free(struct fg_x400_fault_set *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        fg_x400_fault_clear(&fs->faults[i]);
    free(fs->faults);
    free(fs->log);
    memset(fs, 0, sizeof *fs);
}

int fg_x400_fault_set_add(struct fg_x400_fault_set *fs, const struct fg_x400_fault *f)
{
    if (fs->n >= FG_FAULT_MAX)
        return FG_ETOOBIG;
    struct fg_x400_fault *d = FG_ARRAY_PUSH(fs->faults, fs->n, fs->cap);
    fg_x400_fault_copy(d, f);
    return 0;
}

/* --- scenario keys ---------------------------------------------------------------- */

/* Column of a scalar's text on its line (0 when it spans lines). */
static int text_col(const struct fg_yaml_node *n)
{
    if (n->type != FG_YAML_SCALAR || n->end_line != n->line)
        return 0;
    return n->col + (n->quoted ? 1 : 0);
}

static int err_at(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, int c, const char *msg,
                  char *err, size_t errlen)
{
    int base = text_col(n);
    int col = base && c > 0 ? base + c - 1 : n->col;
    return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: x400 fault: %s", d->path, n->line, col, msg);
}

static int load_one(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                    struct fg_x400_fault *f, char *err, size_t errlen)
{
    char msg[FG_ERRBUF_SIZE] = "";
    int col = 0;
    if (n->type == FG_YAML_SCALAR) {
        if (fg_x400_fault_parse(n->scalar, f, msg, sizeof msg, &col) != 0)
            return err_at(d, n, col, msg, err, errlen);
        return 0;
    }
    if (n->type == FG_YAML_MAP && n->n == 1 && n->items[0]->type == FG_YAML_SCALAR) {
        /* Unquoted `spdu AC s2c: abort` reads as a one-key map. */
        const struct fg_yaml_node *k = n->keys[0], *v = n->items[0];
        char *line = fg_asprintf("%s: %s", k->scalar, v->scalar);
        int rc = fg_x400_fault_parse(line, f, msg, sizeof msg, &col);
        free(line);
        if (!rc)
            return 0;
        int klen = (int)strlen(k->scalar);
        if (col > klen + 2)
            return err_at(d, v, col - klen - 2, msg, err, errlen);
        return err_at(d, k, col > klen ? klen : col, msg, err, errlen);
    }
    return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                        "an X.400 fault is a one-line string (\"spdu AC s2c, first: abort\")");
}

int fg_x400_faults_load(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                        struct fg_x400_fault **out, size_t *nout, char *err, size_t errlen)
{
    int rc = fg_yaml_expect(d, n, FG_YAML_SEQ, "'x400_faults'", err, errlen);
    if (rc)
        return rc;
    if (n->n > FG_FAULT_MAX)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "more than %d X.400 faults",
                            FG_FAULT_MAX);
    *out = fg_calloc(n->n ? n->n : 1, sizeof **out);
    *nout = 0;
    for (size_t i = 0; i < n->n; i++) {
        rc = load_one(d, n->items[i], &(*out)[i], err, errlen);
        if (rc)
            return rc;
        (*nout)++;
    }
    return 0;
}

int fg_x400_peer_opts_load(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                           int *on_invalid, char *err, size_t errlen)
{
    static const char *const keys[] = {"on_invalid", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'x400_peer'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'x400_peer'", err, errlen)))
        return rc;
    const struct fg_yaml_node *v = fg_yaml_get(n, "on_invalid");
    if (!v)
        return 0;
    if ((rc = fg_yaml_expect(d, v, FG_YAML_SCALAR, "'on_invalid'", err, errlen)))
        return rc;
    enum fg_x400_reaction r;
    if (fg_x400_reaction_parse(v->scalar, &r) != 0)
        return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                            "'on_invalid': unknown reaction '%s' (abort, abort-user, dr, er, "
                            "close, reset or ignore)",
                            v->scalar);
    *on_invalid = (int)r;
    return 0;
}
