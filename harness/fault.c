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
                "reply-to end-of-data, greeting or connect)",
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
                    "unknown action '%.*s' (expected stall, close, reset, reply or delay)",
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
        rc = expect_end(aw, e, "the duration");
        break;
    }
    default:
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
    if (f->replace && f->action != FG_ACT_REPLY)
        return fg_errf(err, errlen, FG_ESYNTAX, "'replace' applies only to the reply action");
    if (f->replace && f->trig == FG_TRIG_CONNECT)
        return fg_errf(err, errlen, FG_ESYNTAX,
                       "'replace' needs something to replace: not valid on connect");
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
        return fg_asprintf("%s%s", fg_action_name(f->action), dir_name(f->dir));
    case FG_ACT_RESET:
        return fg_strdup("reset");
    case FG_ACT_DELAY:
        return fg_asprintf("delay %llums", (unsigned long long)f->delay_ms);
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

static int trigger_matches(const struct fg_fault *f, const struct fg_smtp_event *ev)
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
        return ev->type == FG_SMTP_EV_REPLY && ev->answers == FG_ANS_END_OF_DATA;
    case FG_TRIG_GREETING:
        return ev->type == FG_SMTP_EV_REPLY && ev->answers == FG_ANS_GREETING;
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
    default:
        snprintf(buf, len, "end-of-data");
        break;
    }
}

int fg_fault_set_match(struct fg_fault_set *fs, struct fg_fault_conn *c,
                       const struct fg_smtp_event *ev, size_t from)
{
    for (size_t i = from; i < fs->n && i < FG_FAULT_MAX; i++) {
        const struct fg_fault *f = &fs->faults[i];
        uint64_t bit = (uint64_t)1 << i;
        if (!trigger_matches(f, ev) || !selector_matches(f, c->conn))
            continue;
        if (!f->each && (c->fired & bit))
            continue;
        if (f->prob <= 0.0)
            continue;
        if (f->prob < 1.0) {
            if (!c->rng_ready) {
                /* Mix the connection number into the run's seed so that each
                 * connection has its own reproducible stream. */
                struct fg_rng mix;
                fg_rng_seed(&mix, fs->seed ^ ((uint64_t)c->conn * 0xD1B54A32D192ED03ULL));
                fg_rng_seed(&c->rng, fg_rng_next(&mix));
                c->rng_ready = 1;
            }
            if (fg_rng_unit(&c->rng) >= f->prob)
                continue;
        }
        c->fired |= bit;
        struct fg_decision *d = FG_ARRAY_PUSH(fs->log, fs->nlog, fs->caplog);
        d->t_us = fg_wall_us();
        d->conn = c->conn;
        d->fault = (unsigned)i;
        event_text(f, ev, d->trigger, sizeof d->trigger);
        const char *colon = f->spec ? strstr(f->spec, ": ") : NULL;
        if (colon) {
            snprintf(d->action, sizeof d->action, "%s", colon + 2);
        } else {
            char *a = action_text(f);
            snprintf(d->action, sizeof d->action, "%s", a);
            free(a);
        }
        return (int)i;
    }
    return -1;
}
