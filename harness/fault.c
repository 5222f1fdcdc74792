/* fault.c - the fault engine (faultgate/fault.h).
 *
 * Parses faults from the one-line syntax or from the parts of a scenario's
 * {on:, connection:, action:} form, rebuilds their canonical text, and
 * decides for each protocol event the proxy reports whether a fault fires:
 * trigger, connection selector, once/each, then the seeded probability
 * draw.  Every decision is appended to the set's log.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fault.h"

/* A slice of the text being parsed; base is the offset of s[0] in the
 * string the caller gave, so that columns point into that string. */
struct span {
    const char *s;
    size_t len;
    size_t base;
};

struct perr {
    char *buf;
    size_t len;
    int *col;
};

static int fail(const struct perr *e, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(const struct perr *e, size_t at, const char *fmt, ...)
{
    if (e->buf && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
    }
    if (e->col)
        *e->col = (int)at + 1;
    return FG_ESYNTAX;
}

static struct span trim(struct span sp)
{
    while (sp.len && isspace((unsigned char)sp.s[0])) {
        sp.s++;
        sp.len--;
        sp.base++;
    }
    while (sp.len && isspace((unsigned char)sp.s[sp.len - 1]))
        sp.len--;
    return sp;
}

/* Next whitespace-separated word of *sp (advanced past it); len 0 at end. */
static struct span next_word(struct span *sp)
{
    *sp = trim(*sp);
    struct span w = {sp->s, 0, sp->base};
    while (w.len < sp->len && !isspace((unsigned char)sp->s[w.len]))
        w.len++;
    sp->s += w.len;
    sp->len -= w.len;
    sp->base += w.len;
    return w;
}

static int word_is(struct span w, const char *kw)
{
    return strlen(kw) == w.len && strncasecmp(w.s, kw, w.len) == 0;
}

/* Copy a word into a NUL-terminated buffer for the number parsers. */
static void word_copy(struct span w, char *buf, size_t len)
{
    size_t n = w.len < len - 1 ? w.len : len - 1;
    memcpy(buf, w.s, n);
    buf[n] = '\0';
}

/* Split at the first comma: *sp becomes the rest after it (or len 0 with
 * *more = 0). */
static struct span next_item(struct span *sp, int *more)
{
    struct span it = {sp->s, 0, sp->base};
    while (it.len < sp->len && sp->s[it.len] != ',')
        it.len++;
    *more = it.len < sp->len;
    size_t skip = it.len + (*more ? 1 : 0);
    sp->s += skip;
    sp->len -= skip;
    sp->base += skip;
    return trim(it);
}

static int expect_end(struct span rest, const struct perr *e, const char *after)
{
    struct span w = next_word(&rest);
    if (w.len)
        return fail(e, w.base, "unexpected '%.*s' after %s", (int)w.len, w.s, after);
    return 0;
}

/* --- trigger ------------------------------------------------------------ */

/* A reply code as RFC 5321 §4.2 allows it: first digit 2-5, second 0-5. */
static int parse_code(struct span w, int allow_class, int *code, int *is_class)
{
    if (w.len != 3 || w.s[0] < '2' || w.s[0] > '5')
        return -1;
    if (allow_class && (w.s[1] == 'x' || w.s[1] == 'X') && (w.s[2] == 'x' || w.s[2] == 'X')) {
        *code = w.s[0] - '0';
        *is_class = 1;
        return 0;
    }
    if (w.s[1] < '0' || w.s[1] > '5' || !isdigit((unsigned char)w.s[2]))
        return -1;
    *code = (w.s[0] - '0') * 100 + (w.s[1] - '0') * 10 + (w.s[2] - '0');
    *is_class = 0;
    return 0;
}

static int trigger_span(struct span sp, struct fg_fault *f, const struct perr *e)
{
    sp = trim(sp);
    struct span w = next_word(&sp);
    if (!w.len)
        return fail(e, w.base, "missing trigger");
    if (word_is(w, "connect")) {
        f->trig = FG_TRIG_CONNECT;
        return expect_end(sp, e, "connect");
    }
    if (word_is(w, "greeting")) {
        f->trig = FG_TRIG_GREETING;
        return expect_end(sp, e, "greeting");
    }
    if (word_is(w, "end-of-data")) {
        f->trig = FG_TRIG_END_OF_DATA;
        return expect_end(sp, e, "end-of-data");
    }
    if (word_is(w, "starttls")) {
        f->trig = FG_TRIG_STARTTLS;
        return expect_end(sp, e, "starttls");
    }
    if (word_is(w, "opening-command")) {
        f->trig = FG_TRIG_OPENING;
        return expect_end(sp, e, "opening-command");
    }
    if (word_is(w, "start-of-data")) {
        f->trig = FG_TRIG_DATA_START;
        return expect_end(sp, e, "start-of-data");
    }
    if (word_is(w, "byte")) {
        struct span d = next_word(&sp);
        if (word_is(d, "c2s"))
            f->byte_dir = FG_C2S;
        else if (word_is(d, "s2c"))
            f->byte_dir = FG_S2C;
        else
            return fail(e, d.base, "byte needs a direction, c2s or s2c (byte c2s 1000)");
        struct span n = next_word(&sp);
        char num[32];
        word_copy(n, num, sizeof num);
        if (!n.len || n.len >= sizeof num || fg_size_parse(num, &f->byte_off) != 0 ||
            f->byte_off == 0)
            return fail(e, n.base, "byte needs an offset of at least 1 (byte c2s 1000, 64k)");
        f->trig = FG_TRIG_BYTE;
        return expect_end(sp, e, "the byte offset");
    }
    if (word_is(w, "after")) {
        struct span d = next_word(&sp);
        char buf[32];
        word_copy(d, buf, sizeof buf);
        if (!d.len || d.len >= sizeof buf || fg_duration_parse(buf, &f->after_ms) != 0)
            return fail(e, d.base, "after needs a duration (after 2s, after 250ms)");
        f->trig = FG_TRIG_AFTER;
        return expect_end(sp, e, "the duration");
    }
    if (word_is(w, "reply-to")) {
        struct span a = next_word(&sp);
        if (!a.len)
            return fail(e, a.base, "reply-to needs 'end-of-data'");
        if (!word_is(a, "end-of-data"))
            return fail(e, a.base, "reply-to supports only 'end-of-data', not '%.*s'", (int)a.len,
                        a.s);
        f->trig = FG_TRIG_REPLY_TO_EOD;
        return expect_end(sp, e, "reply-to end-of-data");
    }
    if (word_is(w, "reply")) {
        struct span a = next_word(&sp);
        if (!a.len)
            return fail(e, a.base, "reply needs a code (250, 2xx)");
        if (parse_code(a, 1, &f->code, &f->code_class) != 0)
            return fail(e, a.base, "bad reply code '%.*s' (expected 200-559 or 2xx-5xx)",
                        (int)a.len, a.s);
        f->trig = FG_TRIG_REPLY;
        return expect_end(sp, e, "the reply code");
    }
    if (word_is(w, "command")) {
        struct span v = next_word(&sp);
        if (!v.len)
            return fail(e, v.base, "command needs a verb (EHLO, RCPT, ...)");
        if (v.len >= sizeof(f->verb_text))
            return fail(e, v.base, "verb '%.*s' is too long", (int)v.len, v.s);
        for (size_t i = 0; i < v.len; i++)
            if (!isalpha((unsigned char)v.s[i]))
                return fail(e, v.base + i, "bad verb '%.*s' (letters only)", (int)v.len, v.s);
        f->trig = FG_TRIG_COMMAND;
        for (size_t i = 0; i < v.len; i++)
            f->verb_text[i] = (char)toupper((unsigned char)v.s[i]);
        f->verb_text[v.len] = '\0';
        f->verb = fg_smtp_verb_lookup(f->verb_text, v.len);
        struct span n = next_word(&sp);
        if (n.len) {
            uint64_t seq;
            char num[24];
            if (n.s[0] != '#')
                return fail(e, n.base, "expected '#N' after the verb, not '%.*s'", (int)n.len, n.s);
            n.s++;
            n.len--;
            n.base++;
            word_copy(n, num, sizeof num);
            if (!n.len || n.len >= sizeof num || fg_uint_parse(num, 1, 1000000, &seq) != 0)
                return fail(e, n.base, "bad command number '%.*s' (expected #1, #2, ...)",
                            (int)n.len, n.s);
            f->verb_seq = (unsigned)seq;
        }
        return expect_end(sp, e, "the command");
    }
    return fail(e, w.base,
                "unknown trigger '%.*s' (expected command, reply, end-of-data, "
                "reply-to end-of-data, start-of-data, opening-command, greeting, "
                "starttls, connect, byte or after)",
                (int)w.len, w.s);
}

/* --- selectors ---------------------------------------------------------- */

struct selstate {
    int have_conn, have_once, have_p;
};

static int selector_word(struct span it, struct fg_fault *f, struct selstate *st,
                         const struct perr *e)
{
    struct span w = next_word(&it);
    if (!w.len)
        return fail(e, w.base, "empty selector");
    if (word_is(w, "first") || word_is(w, "every") || word_is(w, "nth") || word_is(w, "from")) {
        if (st->have_conn)
            return fail(e, w.base, "second connection selector '%.*s'", (int)w.len, w.s);
        st->have_conn = 1;
        if (word_is(w, "first")) {
            f->sel = FG_SEL_FIRST;
            f->conn_n = 1;
        } else if (word_is(w, "every")) {
            f->sel = FG_SEL_EVERY;
        } else {
            f->sel = word_is(w, "nth") ? FG_SEL_NTH : FG_SEL_FROM;
            struct span n = next_word(&it);
            char num[24];
            uint64_t v;
            if (!n.len)
                return fail(e, n.base, "%.*s needs a connection number", (int)w.len, w.s);
            word_copy(n, num, sizeof num);
            if (n.len >= sizeof num || fg_uint_parse(num, 1, 1000000000, &v) != 0)
                return fail(e, n.base, "bad connection number '%.*s' (expected 1, 2, ...)",
                            (int)n.len, n.s);
            f->conn_n = (unsigned)v;
        }
        return expect_end(it, e, "the connection selector");
    }
    if (word_is(w, "once") || word_is(w, "each")) {
        if (st->have_once)
            return fail(e, w.base, "'%.*s' conflicts with an earlier once/each", (int)w.len, w.s);
        st->have_once = 1;
        f->each = word_is(w, "each");
        return expect_end(it, e, "once/each");
    }
    if (word_is(w, "p")) {
        if (st->have_p)
            return fail(e, w.base, "second probability");
        st->have_p = 1;
        struct span n = next_word(&it);
        char num[32];
        if (!n.len)
            return fail(e, n.base, "p needs a probability between 0 and 1");
        word_copy(n, num, sizeof num);
        errno = 0;
        char *end;
        double v = strtod(num, &end);
        if (n.len >= sizeof num || end == num || *end || errno || !(v >= 0.0 && v <= 1.0) ||
            (!isdigit((unsigned char)num[0]) && num[0] != '.'))
            return fail(e, n.base, "bad probability '%.*s' (expected 0..1)", (int)n.len, n.s);
        f->prob = v;
        f->prob_set = 1;
        return expect_end(it, e, "the probability");
    }
    return fail(e, w.base,
                "unknown selector '%.*s' (expected first, nth N, every, from N, p X, once "
                "or each)",
                (int)w.len, w.s);
}

static int selectors_span(struct span sp, struct fg_fault *f, struct selstate *st,
                          const struct perr *e)
{
    int more = 1;
    while (more) {
        struct span it = next_item(&sp, &more);
        int rc = selector_word(it, f, st, e);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- action ------------------------------------------------------------- */

static int parse_dir(struct span *sp, struct fg_fault *f, const struct perr *e, const char *act)
{
    struct span d = next_word(sp);
    if (!d.len)
        return 0;
    if (word_is(d, "c2s"))
        f->dir = FG_FDIR_C2S;
    else if (word_is(d, "s2c"))
        f->dir = FG_FDIR_S2C;
    else if (word_is(d, "both"))
        f->dir = FG_FDIR_BOTH;
    else
        return fail(e, d.base, "bad direction '%.*s' for %s (expected c2s, s2c or both)",
                    (int)d.len, d.s, act);
    return expect_end(*sp, e, "the direction");
}

/* Builds the reply lines: text pieces separated by '|', the two characters
 * "\n" or a real newline become lines "CODE-piece" ... "CODE piece"
 * (RFC 5321 §4.2.1: every line but the last has '-' after the code). */
static int build_reply(struct span text, int code, char **out, const struct perr *e)
{
    size_t cap = text.len * 2 + 64, n = 0;
    char *buf = fg_malloc(cap);
    size_t i = 0;
    for (;;) {
        size_t start = i, seplen = 0;
        while (i < text.len) {
            if (text.s[i] == '|' || text.s[i] == '\n') {
                seplen = 1;
                break;
            }
            if (text.s[i] == '\\' && i + 1 < text.len && text.s[i + 1] == 'n') {
                seplen = 2;
                break;
            }
            if (text.s[i] == '\r' || text.s[i] == '\0') {
                free(buf);
                return fail(e, text.base + i, "control character in reply text");
            }
            i++;
        }
        struct span piece = trim((struct span){text.s + start, i - start, text.base + start});
        int last = i >= text.len;
        if (cap - n < piece.len + 16) {
            cap = cap * 2 + piece.len + 16;
            buf = fg_realloc(buf, cap);
        }
        n +=
            (size_t)snprintf(buf + n, cap - n, "%03d%s", code, last ? (piece.len ? " " : "") : "-");
        memcpy(buf + n, piece.s, piece.len);
        n += piece.len;
        buf[n++] = '\r';
        buf[n++] = '\n';
        if (last)
            break;
        i += seplen;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int option_word(struct span it, struct fg_fault *f, const struct perr *e)
{
    struct span w = next_word(&it);
    if (!w.len)
        return fail(e, w.base, "empty option after ','");
    if (word_is(w, "replace")) {
        if (f->action != FG_ACT_REPLY)
            return fail(e, w.base, "'replace' applies only to the reply action");
        f->replace = 1;
        return expect_end(it, e, "replace");
    }
    return fail(e, w.base, "unknown option '%.*s' (expected replace)", (int)w.len, w.s);
}

static int dir_word(struct span d, struct fg_fault *f, int allow_both)
{
    if (word_is(d, "c2s"))
        f->dir = FG_FDIR_C2S;
    else if (word_is(d, "s2c"))
        f->dir = FG_FDIR_S2C;
    else if (allow_both && word_is(d, "both"))
        f->dir = FG_FDIR_BOTH;
    else
        return -1;
    return 0;
}

static int size_word(struct span n, uint64_t *v, int rate)
{
    char num[32];
    if (!n.len || n.len >= sizeof num)
        return -1;
    word_copy(n, num, sizeof num);
    size_t l = strlen(num);
    /* A rate may be written 64k, 64kB/s or 64k/s. */
    if (rate && l > 2 && strcasecmp(num + l - 2, "/s") == 0)
        num[l - 2] = '\0';
    return fg_size_parse(num, v) == 0 && *v > 0 ? 0 : -1;
}

static int duration_word(struct span d, uint64_t *ms)
{
    char buf[32];
    if (!d.len || d.len >= sizeof buf)
        return -1;
    word_copy(d, buf, sizeof buf);
    return fg_duration_parse(buf, ms);
}

static int hex_byte(struct span w, unsigned char *v)
{
    char buf[8];
    if (!w.len || w.len >= sizeof buf)
        return -1;
    word_copy(w, buf, sizeof buf);
    const char *s = buf;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    char *end;
    if (!isxdigit((unsigned char)*s))
        return -1;
    unsigned long x = strtoul(s, &end, 16);
    if (*end || x > 0xff)
        return -1;
    *v = (unsigned char)x;
    return 0;
}

/* The arguments of the actions added with the complete engine, up to the
 * first comma (aw). */
static int action_args(struct span aw, struct fg_fault *f, const struct perr *e)
{
    const char *name = fg_action_name(f->action);
    struct span w;
    switch (f->action) {
    case FG_ACT_BLACKHOLE:
        return parse_dir(&aw, f, e, name);
    case FG_ACT_HALF_CLOSE:
        w = next_word(&aw);
        if (w.len && dir_word(w, f, 0) != 0)
            return fail(e, w.base, "bad direction '%.*s' for half-close (expected c2s or s2c)",
                        (int)w.len, w.s);
        return expect_end(aw, e, "the direction");
    case FG_ACT_DROP:
    case FG_ACT_REFUSE:
    case FG_ACT_ACCEPT_THEN_CLOSE:
        return expect_end(aw, e, name);
    case FG_ACT_BANNER_DELAY:
        w = next_word(&aw);
        if (duration_word(w, &f->delay_ms) != 0 || f->delay_ms == 0)
            return fail(e, w.base, "banner-delay needs a duration longer than 0 (5s, 250ms)");
        return expect_end(aw, e, "the duration");
    case FG_ACT_THROTTLE:
    case FG_ACT_SLICE:
    case FG_ACT_LIMIT: {
        w = next_word(&aw);
        uint64_t *v = f->action == FG_ACT_THROTTLE ? &f->rate
                      : f->action == FG_ACT_SLICE  ? &f->slice
                                                   : &f->limit;
        if (size_word(w, v, f->action == FG_ACT_THROTTLE) != 0)
            return fail(e, w.base,
                        f->action == FG_ACT_THROTTLE
                            ? "throttle needs a rate in octets per second (1000, 64k, 1MB/s)"
                            : "%s needs a number of octets of at least 1 (100, 4k)",
                        name);
        for (;;) {
            w = next_word(&aw);
            if (!w.len)
                return 0;
            if (f->action == FG_ACT_SLICE && word_is(w, "pause")) {
                struct span d = next_word(&aw);
                if (duration_word(d, &f->pause_ms) != 0)
                    return fail(e, d.base, "pause needs a duration (10ms, 1s)");
                continue;
            }
            if (f->dir == FG_FDIR_DEFAULT && dir_word(w, f, 1) == 0)
                continue;
            return fail(e, w.base, "unexpected '%.*s' after %s (expected %sc2s, s2c or both)",
                        (int)w.len, w.s, name, f->action == FG_ACT_SLICE ? "pause D, " : "");
        }
    }
    case FG_ACT_CORRUPT:
        f->op = FG_CORRUPT_FLIP;
        for (;;) {
            w = next_word(&aw);
            if (!w.len)
                return 0;
            if (word_is(w, "at")) {
                struct span n = next_word(&aw);
                char num[24];
                word_copy(n, num, sizeof num);
                if (!n.len || n.len >= sizeof num || fg_uint_parse(num, 0, UINT32_MAX, &f->at) != 0)
                    return fail(e, n.base, "at needs an octet position (0, 1, ...)");
            } else if (word_is(w, "flip")) {
                f->op = FG_CORRUPT_FLIP;
            } else if (word_is(w, "xor") || word_is(w, "set")) {
                f->op = word_is(w, "xor") ? FG_CORRUPT_XOR : FG_CORRUPT_SET;
                struct span h = next_word(&aw);
                if (hex_byte(h, &f->value) != 0)
                    return fail(e, h.base, "%.*s needs a hex octet (0x20, ff)", (int)w.len, w.s);
            } else if (f->dir == FG_FDIR_DEFAULT && dir_word(w, f, 0) == 0) {
                continue;
            } else {
                return fail(e, w.base,
                            "unexpected '%.*s' after corrupt (expected at N, flip, xor HH, set HH, "
                            "c2s or s2c)",
                            (int)w.len, w.s);
            }
        }
    default:
        return 0;
    }
}

static int action_span(struct span sp, struct fg_fault *f, const struct perr *e)
{
    sp = trim(sp);
    struct span rest = sp;
    /* The action word ends at a space or a comma. */
    struct span w = {rest.s, 0, rest.base};
    while (w.len < rest.len && !isspace((unsigned char)rest.s[w.len]) && rest.s[w.len] != ',')
        w.len++;
    rest.s += w.len;
    rest.len -= w.len;
    rest.base += w.len;
    if (!w.len)
        return fail(e, w.base, "missing action");
    int found = 0;
#define XX(name, text)                                                                             \
    if (word_is(w, text)) {                                                                        \
        f->action = FG_ACT_##name;                                                                 \
        found = 1;                                                                                 \
    }
    FG_ACTION_MAP(XX)
#undef XX
    if (!found)
        return fail(e, w.base,
                    "unknown action '%.*s' (expected stall, blackhole, close, half-close, reset, "
                    "delay, throttle, slice, limit, reply, drop, corrupt, refuse, "
                    "accept-then-close or banner-delay)",
                    (int)w.len, w.s);

    if (f->action == FG_ACT_REPLY) {
        /* Reply text may hold commas: only trailing items that are option
         * words are options. */
        for (;;) {
            size_t k = rest.len;
            while (k > 0 && rest.s[k - 1] != ',')
                k--;
            if (k == 0)
                break;
            struct span it = trim((struct span){rest.s + k, rest.len - k, rest.base + k});
            struct span tmp = it;
            struct span ow = next_word(&tmp);
            if (!word_is(ow, "replace"))
                break;
            int rc = option_word(it, f, e);
            if (rc)
                return rc;
            rest.len = k - 1;
        }
        struct span c = next_word(&rest);
        int is_class;
        if (!c.len)
            return fail(e, c.base, "reply needs a code and text (reply 451 4.3.0 later)");
        if (parse_code(c, 0, &f->reply_code, &is_class) != 0)
            return fail(e, c.base, "bad reply code '%.*s' (expected 200-559)", (int)c.len, c.s);
        free(f->reply_text);
        f->reply_text = NULL;
        return build_reply(trim(rest), f->reply_code, &f->reply_text, e);
    }

    /* Other actions: arguments up to the first comma, then options. */
    int more;
    struct span aw = next_item(&rest, &more);
    int rc = 0;
    switch (f->action) {
    case FG_ACT_STALL:
    case FG_ACT_CLOSE:
        rc = parse_dir(&aw, f, e, fg_action_name(f->action));
        break;
    case FG_ACT_RESET:
        rc = expect_end(aw, e, "reset");
        break;
    case FG_ACT_DELAY: {
        struct span d = next_word(&aw);
        char buf[32];
        if (!d.len)
            return fail(e, d.base, "delay needs a duration (250ms, 5s)");
        word_copy(d, buf, sizeof buf);
        if (d.len >= sizeof buf || fg_duration_parse(buf, &f->delay_ms) != 0)
            return fail(e, d.base, "bad duration '%.*s' (expected 250ms, 5s, 2m)", (int)d.len, d.s);
        if (f->delay_ms == 0)
            return fail(e, d.base, "delay must be longer than 0");
        rc = parse_dir(&aw, f, e, "delay");
        break;
    }
    default:
        rc = action_args(aw, f, e);
        break;
    }
    while (rc == 0 && more) {
        struct span it = next_item(&rest, &more);
        rc = option_word(it, f, e);
    }
    return rc;
}

/* --- public parsing ----------------------------------------------------- */

static void fault_defaults(struct fg_fault *f)
{
    memset(f, 0, sizeof *f);
    f->sel = FG_SEL_EVERY;
    f->prob = 1.0;
}

int fg_fault_check(const struct fg_fault *f, char *err, size_t errlen)
{
    int eventless = f->trig == FG_TRIG_CONNECT || f->trig == FG_TRIG_AFTER ||
                    f->trig == FG_TRIG_BYTE || f->trig == FG_TRIG_STARTTLS;
    if (f->replace && f->action != FG_ACT_REPLY)
        return fg_errf(err, errlen, FG_ESYNTAX, "'replace' applies only to the reply action");
    if (f->replace && eventless)
        return fg_errf(err, errlen, FG_ESYNTAX,
                       "'replace' needs a command or reply to replace: not valid on %s",
                       f->trig == FG_TRIG_CONNECT    ? "connect"
                       : f->trig == FG_TRIG_AFTER    ? "after"
                       : f->trig == FG_TRIG_STARTTLS ? "starttls"
                                                     : "byte");
    if ((f->action == FG_ACT_REFUSE || f->action == FG_ACT_ACCEPT_THEN_CLOSE ||
         f->action == FG_ACT_BANNER_DELAY) &&
        f->trig != FG_TRIG_CONNECT)
        return fg_errf(err, errlen, FG_ESYNTAX, "%s needs the connect trigger",
                       fg_action_name(f->action));
    if (f->action == FG_ACT_DROP && f->trig != FG_TRIG_COMMAND && f->trig != FG_TRIG_REPLY &&
        f->trig != FG_TRIG_GREETING && f->trig != FG_TRIG_REPLY_TO_EOD)
        return fg_errf(err, errlen, FG_ESYNTAX,
                       "drop swallows a command or a reply: use it with command, reply, "
                       "greeting or reply-to end-of-data");
    if (f->action == FG_ACT_HALF_CLOSE && f->dir == FG_FDIR_BOTH)
        return fg_errf(err, errlen, FG_ESYNTAX, "half-close takes c2s or s2c, not both");
    if (f->action == FG_ACT_CORRUPT && f->dir == FG_FDIR_BOTH)
        return fg_errf(err, errlen, FG_ESYNTAX, "corrupt takes c2s or s2c, not both");
    return 0;
}

int fg_fault_parse(const char *line, struct fg_fault *f, char *err, size_t errlen, int *col)
{
    struct perr e = {err, errlen, col};
    fault_defaults(f);
    const char *colon = strchr(line, ':');
    if (!colon)
        return fail(&e, strlen(line), "expected ':' between the trigger and the action");
    struct span trig = {line, (size_t)(colon - line), 0};
    int more;
    struct span first = next_item(&trig, &more);
    int rc = trigger_span(first, f, &e);
    struct selstate st = {0, 0, 0};
    if (rc == 0 && more)
        rc = selectors_span(trig, f, &st, &e);
    size_t abase = (size_t)(colon - line) + 1;
    if (rc == 0)
        rc = action_span((struct span){colon + 1, strlen(colon + 1), abase}, f, &e);
    if (rc == 0 && f->replace && f->trig == FG_TRIG_CONNECT)
        rc = fail(&e, (size_t)(strstr(line + abase, "replace") - line),
                  "'replace' needs something to replace: not valid on connect");
    if (rc == 0 && fg_fault_check(f, err, errlen) != 0) {
        struct span a = trim((struct span){colon + 1, strlen(colon + 1), abase});
        if (col)
            *col = (int)a.base + 1;
        rc = FG_ESYNTAX;
    }
    if (rc) {
        fg_fault_clear(f);
        return rc;
    }
    fg_fault_canon(f);
    return 0;
}

int fg_fault_parse_trigger(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col)
{
    struct perr e = {err, errlen, col};
    return trigger_span((struct span){s, strlen(s), 0}, f, &e);
}

int fg_fault_parse_selector(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col)
{
    struct perr e = {err, errlen, col};
    struct selstate st = {0, 0, 0};
    return selectors_span((struct span){s, strlen(s), 0}, f, &st, &e);
}

int fg_fault_parse_action(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col)
{
    struct perr e = {err, errlen, col};
    return action_span((struct span){s, strlen(s), 0}, f, &e);
}

/* --- canonical text ----------------------------------------------------- */

void fg_fault_trigger_text(const struct fg_fault *f, char *buf, size_t len)
{
    switch (f->trig) {
    case FG_TRIG_COMMAND:
        if (f->verb_seq)
            snprintf(buf, len, "command %s #%u", f->verb_text, f->verb_seq);
        else
            snprintf(buf, len, "command %s", f->verb_text);
        break;
    case FG_TRIG_REPLY:
        if (f->code_class)
            snprintf(buf, len, "reply %dxx", f->code);
        else
            snprintf(buf, len, "reply %03d", f->code);
        break;
    case FG_TRIG_END_OF_DATA:
        snprintf(buf, len, "end-of-data");
        break;
    case FG_TRIG_REPLY_TO_EOD:
        snprintf(buf, len, "reply-to end-of-data");
        break;
    case FG_TRIG_GREETING:
        snprintf(buf, len, "greeting");
        break;
    case FG_TRIG_CONNECT:
        snprintf(buf, len, "connect");
        break;
    case FG_TRIG_STARTTLS:
        snprintf(buf, len, "starttls");
        break;
    case FG_TRIG_OPENING:
        snprintf(buf, len, "opening-command");
        break;
    case FG_TRIG_DATA_START:
        snprintf(buf, len, "start-of-data");
        break;
    case FG_TRIG_BYTE:
        snprintf(buf, len, "byte %s %llu", f->byte_dir == FG_C2S ? "c2s" : "s2c",
                 (unsigned long long)f->byte_off);
        break;
    case FG_TRIG_AFTER:
        snprintf(buf, len, "after %llums", (unsigned long long)f->after_ms);
        break;
    }
}

static const char *dir_name(enum fg_fault_dir d)
{
    switch (d) {
    case FG_FDIR_C2S:
        return " c2s";
    case FG_FDIR_S2C:
        return " s2c";
    case FG_FDIR_BOTH:
        return " both";
    default:
        return "";
    }
}

/* The action part in canonical form; reply lines go back to '|' form. */
static char *action_text(const struct fg_fault *f)
{
    switch (f->action) {
    case FG_ACT_STALL:
    case FG_ACT_CLOSE:
    case FG_ACT_BLACKHOLE:
    case FG_ACT_HALF_CLOSE:
        return fg_asprintf("%s%s", fg_action_name(f->action), dir_name(f->dir));
    case FG_ACT_RESET:
    case FG_ACT_DROP:
    case FG_ACT_REFUSE:
    case FG_ACT_ACCEPT_THEN_CLOSE:
        return fg_strdup(fg_action_name(f->action));
    case FG_ACT_DELAY:
        return fg_asprintf("delay %llums%s", (unsigned long long)f->delay_ms, dir_name(f->dir));
    case FG_ACT_BANNER_DELAY:
        return fg_asprintf("banner-delay %llums", (unsigned long long)f->delay_ms);
    case FG_ACT_THROTTLE:
        return fg_asprintf("throttle %llu%s", (unsigned long long)f->rate, dir_name(f->dir));
    case FG_ACT_LIMIT:
        return fg_asprintf("limit %llu%s", (unsigned long long)f->limit, dir_name(f->dir));
    case FG_ACT_SLICE:
        if (f->pause_ms)
            return fg_asprintf("slice %llu pause %llums%s", (unsigned long long)f->slice,
                               (unsigned long long)f->pause_ms, dir_name(f->dir));
        return fg_asprintf("slice %llu%s", (unsigned long long)f->slice, dir_name(f->dir));
    case FG_ACT_CORRUPT: {
        char op[16];
        if (f->op == FG_CORRUPT_FLIP)
            snprintf(op, sizeof op, "flip");
        else
            snprintf(op, sizeof op, "%s 0x%02x", f->op == FG_CORRUPT_XOR ? "xor" : "set", f->value);
        return fg_asprintf("corrupt at %llu %s%s", (unsigned long long)f->at, op, dir_name(f->dir));
    }
    case FG_ACT_REPLY: {
        const char *t = f->reply_text ? f->reply_text : "";
        size_t tl = strlen(t);
        char *out = fg_malloc(tl + 32);
        size_t n = (size_t)snprintf(out, tl + 32, "reply %03d", f->reply_code);
        int firstline = 1;
        while (*t) {
            const char *eol = strstr(t, "\r\n");
            size_t ll = eol ? (size_t)(eol - t) : strlen(t);
            const char *body = ll > 4 ? t + 4 : t + ll;
            size_t bl = ll > 4 ? ll - 4 : 0;
            out[n++] = firstline ? ' ' : '|';
            memcpy(out + n, body, bl);
            n += bl;
            firstline = 0;
            t += ll + (eol ? 2 : 0);
        }
        /* A bare "451\r\n" reply has no text: drop the lone space. */
        while (n > 0 && out[n - 1] == ' ')
            n--;
        out[n] = '\0';
        if (f->replace) {
            char *r = fg_asprintf("%s, replace", out);
            free(out);
            return r;
        }
        return out;
    }
    default:
        return fg_strdup("?");
    }
}

void fg_fault_canon(struct fg_fault *f)
{
    if (!f->prob_set && f->prob == 0.0)
        f->prob = 1.0;
    char trig[64], sel[96] = "";
    fg_fault_trigger_text(f, trig, sizeof trig);
    size_t n = 0;
    if (f->sel == FG_SEL_FIRST)
        n += (size_t)snprintf(sel + n, sizeof sel - n, ", first");
    else if (f->sel == FG_SEL_NTH)
        n += (size_t)snprintf(sel + n, sizeof sel - n, ", nth %u", f->conn_n);
    else if (f->sel == FG_SEL_FROM)
        n += (size_t)snprintf(sel + n, sizeof sel - n, ", from %u", f->conn_n);
    if (f->prob < 1.0)
        n += (size_t)snprintf(sel + n, sizeof sel - n, ", p %g", f->prob);
    if (f->each)
        snprintf(sel + n, sizeof sel - n, ", each");
    char *act = action_text(f);
    free(f->spec);
    f->spec = fg_asprintf("%s%s: %s", trig, sel, act);
    free(act);
}

void fg_fault_clear(struct fg_fault *f)
{
    FG_FREE(f->spec);
    FG_FREE(f->reply_text);
}

const char *fg_action_name(enum fg_action a)
{
    switch (a) {
#define XX(name, text)                                                                             \
    case FG_ACT_##name:                                                                            \
        return text;
        FG_ACTION_MAP(XX)
#undef XX
    default:
        return "?";
    }
}

/* --- the set and the decisions ------------------------------------------ */

void fg_fault_set_init(struct fg_fault_set *fs, uint64_t seed)
{
    memset(fs, 0, sizeof *fs);
    fs->seed = seed;
    fg_rng_seed(&fs->rng, seed);
}

void fg_fault_set_free(struct fg_fault_set *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        fg_fault_clear(&fs->faults[i]);
    FG_FREE(fs->faults);
    FG_FREE(fs->log);
    fs->n = fs->cap = fs->nlog = fs->caplog = 0;
}

int fg_fault_set_add(struct fg_fault_set *fs, struct fg_fault *f)
{
    if (fs->n >= FG_FAULT_MAX)
        return FG_ETOOBIG;
    if (!f->spec || (!f->prob_set && f->prob == 0.0))
        fg_fault_canon(f);
    *FG_ARRAY_PUSH(fs->faults, fs->n, fs->cap) = *f;
    memset(f, 0, sizeof *f);
    return 0;
}

void fg_fault_set_compact(struct fg_fault_set *fs, int *map)
{
    int local[FG_FAULT_MAX];
    if (!map)
        map = local;
    size_t k = 0;
    for (size_t i = 0; i < fs->n; i++) {
        if (fs->faults[i].retired) {
            fg_fault_clear(&fs->faults[i]);
            map[i] = -1;
            continue;
        }
        map[i] = (int)k;
        fs->faults[k++] = fs->faults[i];
    }
    for (size_t j = 0; j < fs->nlog; j++) {
        unsigned f = fs->log[j].fault;
        fs->log[j].fault = f < fs->n && map[f] >= 0 ? (unsigned)map[f] : FG_FAULT_MAX;
    }
    fs->n = k;
}

static int trigger_matches(const struct fg_fault *f, const struct fg_fault_conn *c,
                           const struct fg_smtp_event *ev)
{
    if (!ev)
        return f->trig == FG_TRIG_CONNECT;
    switch (f->trig) {
    case FG_TRIG_CONNECT:
        return 0;
    case FG_TRIG_COMMAND:
        if (ev->type != FG_SMTP_EV_COMMAND)
            return 0;
        if (f->verb != FG_VERB_OTHER) {
            if (ev->verb != f->verb)
                return 0;
        } else if (ev->verb != FG_VERB_OTHER || strcasecmp(ev->verb_text, f->verb_text) != 0) {
            return 0;
        }
        return f->verb_seq == 0 || f->verb_seq == ev->verb_seq;
    case FG_TRIG_REPLY:
        if (ev->type != FG_SMTP_EV_REPLY)
            return 0;
        return f->code_class ? ev->code / 100 == f->code : ev->code == f->code;
    case FG_TRIG_END_OF_DATA:
        return ev->type == FG_SMTP_EV_END_OF_DATA || (ev->type == FG_SMTP_EV_BDAT_END && ev->last);
    case FG_TRIG_REPLY_TO_EOD:
        return ev->type == FG_SMTP_EV_REPLY &&
               (ev->answers == FG_ANS_END_OF_DATA || (ev->answers == FG_ANS_BDAT && ev->last));
    case FG_TRIG_OPENING:
        return ev->type == FG_SMTP_EV_COMMAND &&
               (ev->verb == FG_VERB_EHLO || ev->verb == FG_VERB_HELO);
    case FG_TRIG_DATA_START:
        if (ev->type == FG_SMTP_EV_REPLY)
            return ev->code == 354 && ev->answers == FG_ANS_COMMAND &&
                   ev->answers_verb == FG_VERB_DATA;
        return ev->type == FG_SMTP_EV_COMMAND && ev->verb == FG_VERB_BDAT &&
               ev->verb_seq == c->bdat_first;
    case FG_TRIG_GREETING:
        return ev->type == FG_SMTP_EV_REPLY && ev->answers == FG_ANS_GREETING;
    case FG_TRIG_STARTTLS:
        return ev->type == FG_SMTP_EV_TLS_START;
    case FG_TRIG_BYTE:
    case FG_TRIG_AFTER:
        return 0; /* fg_fault_match_byte, fg_fault_match_after */
    }
    return 0;
}

static int selector_matches(const struct fg_fault *f, unsigned conn)
{
    switch (f->sel) {
    case FG_SEL_EVERY:
        return 1;
    case FG_SEL_FIRST:
        return conn == 1;
    case FG_SEL_NTH:
        return conn == f->conn_n;
    case FG_SEL_FROM:
        return conn >= f->conn_n;
    }
    return 0;
}

/* What happened, in the trigger syntax (so that the analyzer can parse it
 * back with fg_fault_parse_trigger and find the event in the timeline):
 * as precise as the event allows, e.g. "command RCPT #3", "reply 354". */
static void event_text(const struct fg_fault *f, const struct fg_smtp_event *ev, char *buf,
                       size_t len)
{
    if (!ev) {
        snprintf(buf, len, "connect");
        return;
    }
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND: {
        const char *v = ev->verb == FG_VERB_OTHER ? ev->verb_text : fg_smtp_verb_name(ev->verb);
        snprintf(buf, len, "command %s #%u", v, ev->verb_seq);
        break;
    }
    case FG_SMTP_EV_REPLY:
        if (f->trig == FG_TRIG_GREETING)
            snprintf(buf, len, "greeting");
        else if (f->trig == FG_TRIG_REPLY_TO_EOD)
            snprintf(buf, len, "reply-to end-of-data");
        else
            snprintf(buf, len, "reply %03d", ev->code);
        break;
    case FG_SMTP_EV_TLS_START:
        snprintf(buf, len, "starttls");
        break;
    default:
        snprintf(buf, len, "end-of-data");
        break;
    }
}

/* Selector, once/each and the probability draw for fault i whose trigger
 * matched; on a hit, the decision is logged with trigger text trig (or
 * the event's text). */
static int decide(struct fg_fault_set *fs, struct fg_fault_conn *c, size_t i,
                  const struct fg_smtp_event *ev, const char *trig)
{
    const struct fg_fault *f = &fs->faults[i];
    uint64_t bit = (uint64_t)1 << i;
    if (!selector_matches(f, c->conn))
        return 0;
    if (!f->each && (c->fired & bit))
        return 0;
    if (f->prob <= 0.0 || f->retired)
        return 0;
    if (f->prob < 1.0 && f->draw_key) {
        struct fg_rng once;
        fg_rng_seed(&once, fs->seed ^ ((uint64_t)c->conn * 0xD1B54A32D192ED03ULL) ^
                               (f->draw_key * 0x9E3779B97F4A7C15ULL));
        fg_rng_next(&once);
        if (fg_rng_unit(&once) >= f->prob)
            return 0;
    } else if (f->prob < 1.0) {
        if (!c->rng_ready) {
            /* Mix the connection number into the run's seed so that each
             * connection has its own reproducible stream. */
            struct fg_rng mix;
            fg_rng_seed(&mix, fs->seed ^ ((uint64_t)c->conn * 0xD1B54A32D192ED03ULL));
            fg_rng_seed(&c->rng, fg_rng_next(&mix));
            c->rng_ready = 1;
        }
        if (fg_rng_unit(&c->rng) >= f->prob)
            return 0;
    }
    c->fired |= bit;
    struct fg_decision *d = FG_ARRAY_PUSH(fs->log, fs->nlog, fs->caplog);
    d->t_us = fg_wall_us();
    d->conn = c->conn;
    d->fault = (unsigned)i;
    if (trig)
        snprintf(d->trigger, sizeof d->trigger, "%s", trig);
    else
        event_text(f, ev, d->trigger, sizeof d->trigger);
    const char *colon = f->spec ? strstr(f->spec, ": ") : NULL;
    if (colon) {
        snprintf(d->action, sizeof d->action, "%s", colon + 2);
    } else {
        char *a = action_text(f);
        snprintf(d->action, sizeof d->action, "%s", a);
        free(a);
    }
    return 1;
}

int fg_fault_set_match(struct fg_fault_set *fs, struct fg_fault_conn *c,
                       const struct fg_smtp_event *ev, size_t from)
{
    /* The transaction's first BDAT starts its data; MAIL begins a new one.
     * Idempotent for the same event, which may be matched again from a
     * later fault. */
    if (ev && ev->type == FG_SMTP_EV_COMMAND) {
        if (ev->verb == FG_VERB_MAIL)
            c->bdat_first = 0;
        else if (ev->verb == FG_VERB_BDAT && c->bdat_first == 0)
            c->bdat_first = ev->verb_seq;
    }
    for (size_t i = from; i < fs->n && i < FG_FAULT_MAX; i++)
        if (trigger_matches(&fs->faults[i], c, ev) && decide(fs, c, i, ev, NULL))
            return (int)i;
    return -1;
}

/* A byte or after fault that can still fire on c: its selector holds and
 * it has not fired (these triggers pass once per connection). */
static int still_armed(const struct fg_fault_set *fs, const struct fg_fault_conn *c, size_t i)
{
    return selector_matches(&fs->faults[i], c->conn) && !(c->fired & ((uint64_t)1 << i)) &&
           fs->faults[i].prob > 0.0 && !fs->faults[i].retired;
}

uint64_t fg_fault_next_byte(const struct fg_fault_set *fs, const struct fg_fault_conn *c,
                            enum fg_dir dir, uint64_t off)
{
    uint64_t best = UINT64_MAX;
    for (size_t i = 0; i < fs->n && i < FG_FAULT_MAX; i++) {
        const struct fg_fault *f = &fs->faults[i];
        if (f->trig == FG_TRIG_BYTE && f->byte_dir == dir && f->byte_off > off &&
            f->byte_off < best && still_armed(fs, c, i))
            best = f->byte_off;
    }
    return best;
}

uint64_t fg_fault_next_after(const struct fg_fault_set *fs, const struct fg_fault_conn *c,
                             uint64_t elapsed_ms)
{
    uint64_t best = UINT64_MAX;
    for (size_t i = 0; i < fs->n && i < FG_FAULT_MAX; i++) {
        const struct fg_fault *f = &fs->faults[i];
        if (f->trig == FG_TRIG_AFTER && f->after_ms > elapsed_ms && f->after_ms < best &&
            still_armed(fs, c, i))
            best = f->after_ms;
    }
    return best;
}

int fg_fault_match_byte(struct fg_fault_set *fs, struct fg_fault_conn *c, enum fg_dir dir,
                        uint64_t off, size_t from)
{
    for (size_t i = from; i < fs->n && i < FG_FAULT_MAX; i++) {
        const struct fg_fault *f = &fs->faults[i];
        if (f->trig != FG_TRIG_BYTE || f->byte_dir != dir || f->byte_off != off)
            continue;
        char t[64];
        fg_fault_trigger_text(f, t, sizeof t);
        if (decide(fs, c, i, NULL, t))
            return (int)i;
        /* The point passes once per connection: a draw that missed, or a
         * selector that does not hold, disarms the fault here. */
        c->fired |= (uint64_t)1 << i;
    }
    return -1;
}

int fg_fault_match_after(struct fg_fault_set *fs, struct fg_fault_conn *c, uint64_t elapsed_ms,
                         size_t from)
{
    for (size_t i = from; i < fs->n && i < FG_FAULT_MAX; i++) {
        const struct fg_fault *f = &fs->faults[i];
        if (f->trig != FG_TRIG_AFTER || f->after_ms > elapsed_ms)
            continue;
        char t[64];
        fg_fault_trigger_text(f, t, sizeof t);
        if (decide(fs, c, i, NULL, t))
            return (int)i;
        /* The point passes once per connection: a draw that missed, or a
         * selector that does not hold, disarms the fault here. */
        c->fired |= (uint64_t)1 << i;
    }
    return -1;
}
