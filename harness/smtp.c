/* smtp.c - the incremental SMTP parser (faultgate/smtp.h).
 *
 * Watches both directions of one connection and reports commands, replies,
 * DATA bodies, BDAT chunks, the STARTTLS boundary and syntax violations.
 * All state lives in struct fg_smtp_parser, so any split of the byte
 * stream gives the same events, and a feed stopped by the callback resumes
 * exactly where it stopped.  The rule that makes this work: every event is
 * tied to one byte position, and the parser's state is brought up to that
 * position before the event is delivered.
 */
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <ctype.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "faultgate/smtp.h"

/* Limits from RFC 5321 §4.5.3.1.4-6, CRLF included. */
#define CMD_LINE_LIMIT 512
#define REPLY_LINE_LIMIT 512
#define TEXT_LINE_LIMIT 1000

/* CRLF.CRLF matcher states for a DATA body (RFC 5321 §4.1.1.4). */
enum body_state {
    BS_SOL = 0, /* start of a line: body start or just after CRLF */
    BS_DOT,     /* "." at line start, held: maybe the terminator */
    BS_DOTCR,   /* ".\r" at line start, held */
    BS_MID,     /* inside a line */
    BS_CR       /* CR inside a line, LF expected */
};

/* One feed call: the buffer and where its byte 0 sits in the stream. */
struct feed {
    struct fg_smtp_parser *p;
    enum fg_dir dir;
    const char *buf;
    size_t len;
    uint64_t base;
    int stop; /* the callback asked to stop; later events are queued */
};

static const char *const verb_names[FG_VERB__COUNT] = {
#define XX(name, text) text,
    FG_SMTP_VERB_MAP(XX)
#undef XX
};

const char *fg_smtp_verb_name(enum fg_smtp_verb v)
{
    if (v == FG_VERB_OTHER)
        return "OTHER";
    if ((unsigned)v >= FG_VERB__COUNT)
        return "?";
    return verb_names[v];
}

enum fg_smtp_verb fg_smtp_verb_lookup(const char *s, size_t len)
{
    for (int v = 1; v < FG_VERB__COUNT; v++) {
        if (strlen(verb_names[v]) == len && strncasecmp(verb_names[v], s, len) == 0)
            return (enum fg_smtp_verb)v;
    }
    return FG_VERB_OTHER;
}

const char *fg_smtp_violation_name(enum fg_smtp_violation v)
{
    switch (v) {
    case FG_VIOL_NONE:
        return "none";
    case FG_VIOL_BARE_LF:
        return "bare-lf";
    case FG_VIOL_BARE_CR:
        return "bare-cr";
    case FG_VIOL_LONG_COMMAND:
        return "long-command";
    case FG_VIOL_LONG_REPLY:
        return "long-reply";
    case FG_VIOL_LONG_TEXT:
        return "long-text";
    case FG_VIOL_BAD_REPLY:
        return "bad-reply";
    case FG_VIOL_REPLY_MISMATCH:
        return "reply-mismatch";
    }
    return "?";
}

/* Everything is zeroed but the line, queue, reply and pending buffers:
 * their lengths say what they hold, and they are 11 of the parser's 12 KB,
 * whose zeroing was the largest per-connection cost of reading a capture
 * of many small sessions.  Any other field, present or added, is zeroed. */
void fg_smtp_parser_init(struct fg_smtp_parser *p, fg_smtp_event_cb cb, void *ud)
{
    typedef struct fg_smtp_parser ps;
    /* The buffers left as they are, in the order of their offsets. */
    static const size_t keep[][2] = {
        {offsetof(ps, d[0].line), sizeof p->d[0].line},
        {offsetof(ps, d[0].queue), sizeof p->d[0].queue},
        {offsetof(ps, d[1].line), sizeof p->d[1].line},
        {offsetof(ps, d[1].queue), sizeof p->d[1].queue},
        {offsetof(ps, reply), sizeof p->reply},
        {offsetof(ps, pending), sizeof p->pending},
    };
    unsigned char *b = (unsigned char *)p;
    size_t at = 0;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        memset(b + at, 0, keep[i][0] - at);
        at = keep[i][0] + keep[i][1];
    }
    memset(b + at, 0, sizeof *p - at);
    p->cb = cb;
    p->ud = ud;
}

int fg_smtp_parser_is_tls(const struct fg_smtp_parser *p)
{
    return p->tls;
}

unsigned fg_smtp_parser_queued(const struct fg_smtp_parser *p, enum fg_dir dir)
{
    return p->d[dir].queue_len;
}

/* ---- event delivery ---- */

static void ev_init(struct fg_smtp_event *ev, const struct feed *f, enum fg_smtp_ev_type type,
                    size_t end)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->dir = f->dir;
    ev->end = end;
    ev->stream_off = f->base + end;
}

/* Deliver ev, or hold it when the callback already stopped this feed: the
 * state is already past ev's position, so it must not be lost. */
static void emit(struct feed *f, struct fg_smtp_event *ev)
{
    struct fg_smtp_dirstate *d = &f->p->d[f->dir];

    if (f->stop) {
        /* DATA pieces point into the caller's buffer and are always the
         * first event at their position, so they are never held. */
        if (d->queue_len < FG_SMTP_QUEUE_MAX)
            d->queue[d->queue_len++] = *ev;
        return;
    }
    if (f->p->cb && f->p->cb(f->p->ud, ev))
        f->stop = 1;
}

static void emit_simple(struct feed *f, enum fg_smtp_ev_type type, size_t end)
{
    struct fg_smtp_event ev;
    ev_init(&ev, f, type, end);
    emit(f, &ev);
}

static void emit_viol(struct feed *f, size_t end, enum fg_smtp_violation v, int truncated)
{
    struct fg_smtp_event ev;
    ev_init(&ev, f, FG_SMTP_EV_VIOLATION, end);
    ev.violation = v;
    ev.truncated = truncated;
    emit(f, &ev);
}

static void emit_data(struct feed *f, enum fg_smtp_ev_type type, const char *data, size_t n,
                      size_t end)
{
    struct fg_smtp_event ev;
    ev_init(&ev, f, type, end);
    ev.data = data;
    ev.data_len = n;
    emit(f, &ev);
}

/* Deliver events held from a stopped feed.  Returns non-zero if the
 * callback stopped again. */
static int flush_queue(struct feed *f)
{
    struct fg_smtp_dirstate *d = &f->p->d[f->dir];
    unsigned i = 0;
    int stopped = 0;

    while (i < d->queue_len && !stopped) {
        struct fg_smtp_event *ev = &d->queue[i++];
        ev->end = 0; /* the held position is the start of this buffer */
        if (f->p->cb && f->p->cb(f->p->ud, ev))
            stopped = 1;
    }
    memmove(d->queue, d->queue + i, (d->queue_len - i) * sizeof(d->queue[0]));
    d->queue_len -= i;
    return stopped;
}

/* ---- outstanding commands (RFC 2920 §3.1: replies come in order) ---- */

static void pend_push(struct fg_smtp_parser *p, enum fg_smtp_answers a, enum fg_smtp_verb verb,
                      unsigned seq, int last)
{
    if (p->pend_len == FG_SMTP_PENDING_MAX) {
        /* Keep the oldest: their replies come first. */
        p->pend_dropped++;
        return;
    }
    unsigned i = (p->pend_head + p->pend_len) % FG_SMTP_PENDING_MAX;
    p->pending[i].answers = (unsigned char)a;
    p->pending[i].verb = (unsigned char)verb;
    p->pending[i].seq = seq;
    p->pending[i].bdat_last = (unsigned char)(last != 0);
    p->pend_len++;
}

/* ---- line accumulation, shared by commands and replies ---- */

static void line_append(struct fg_smtp_dirstate *d, char c)
{
    if (d->line_len < FG_SMTP_LINE_MAX)
        d->line[d->line_len++] = c;
    d->line_total++;
}

static int line_at_start(const struct fg_smtp_dirstate *d)
{
    return d->line_total == 0 && !d->prev_cr;
}

typedef void (*line_fn)(struct feed *f, size_t end, int bare_lf);

/* One step on a CRLF-terminated line (RFC 5321 §2.3.8).  A CR followed by
 * anything but LF is content and reported before that next byte is taken;
 * a bare LF still ends the line (so the parser stays in step with lenient
 * peers) but is reported. */
static size_t line_step(struct feed *f, size_t i, line_fn done)
{
    struct fg_smtp_dirstate *d = &f->p->d[f->dir];
    char c = f->buf[i];

    if (d->prev_cr && c != '\n') {
        d->prev_cr = 0;
        line_append(d, '\r');
        emit_viol(f, i, FG_VIOL_BARE_CR, 0);
        return i; /* byte i is taken by the next step */
    }
    if (c == '\r') {
        d->prev_cr = 1;
        return i + 1;
    }
    if (c == '\n') {
        int bare = !d->prev_cr;
        d->prev_cr = 0;
        done(f, i + 1, bare);
        d->line_len = 0;
        d->line_total = 0;
        return i + 1;
    }
    line_append(d, c);
    return i + 1;
}

/* ---- client to server ---- */

/* "BDAT" SP chunk-size [SP "LAST"] (RFC 3030 §2). */
static int bdat_parse(const char *a, size_t n, uint64_t *size, int *last)
{
    size_t i = 0;
    uint64_t v = 0;

    if (n == 0 || !isdigit((unsigned char)a[0]))
        return -1;
    while (i < n && isdigit((unsigned char)a[i])) {
        unsigned dgt = (unsigned)(a[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return -1;
        v = v * 10 + dgt;
        i++;
    }
    *last = 0;
    if (i < n) {
        if (a[i] != ' ')
            return -1;
        while (i < n && a[i] == ' ')
            i++;
        if (n - i != 4 || strncasecmp(a + i, "LAST", 4) != 0)
            return -1;
        *last = 1;
    }
    *size = v;
    return 0;
}

static void command_done(struct feed *f, size_t end, int bare_lf)
{
    struct fg_smtp_parser *p = f->p;
    struct fg_smtp_dirstate *d = &p->d[FG_C2S];
    struct fg_smtp_event ev;
    size_t n = d->line_len, vl = 0;
    int truncated = d->line_total > d->line_len;
    int long_line = d->line_total + 2 > CMD_LINE_LIMIT;
    int bdat_chunk = 0, bdat_end_now = 0;

    ev_init(&ev, f, FG_SMTP_EV_COMMAND, end);
    ev.line = d->line;
    ev.line_len = n;
    while (vl < n && d->line[vl] != ' ')
        vl++;
    for (size_t k = 0; k < vl && k < sizeof(ev.verb_text) - 1; k++)
        ev.verb_text[k] = (char)toupper((unsigned char)d->line[k]);
    ev.verb = fg_smtp_verb_lookup(d->line, vl);
    ev.arg = vl < n ? d->line + vl + 1 : "";
    ev.arg_len = vl < n ? n - vl - 1 : 0;
    ev.verb_seq = ++p->verb_count[ev.verb];
    ev.pipelined = p->pend_len > 0;
    ev.truncated = truncated;

    /* Bring the state past this line before anything is delivered. */
    if (ev.verb == FG_VERB_BDAT && !truncated) {
        uint64_t size;
        int last;
        if (bdat_parse(ev.arg, ev.arg_len, &size, &last) == 0) {
            bdat_chunk = 1;
            p->bdat_left = size;
            p->bdat_last = last;
            p->bdat_seq = ev.verb_seq;
            bdat_end_now = size == 0;
            pend_push(p, FG_ANS_BDAT, FG_VERB_BDAT, ev.verb_seq, last);
        }
    }
    if (!bdat_chunk)
        pend_push(p, FG_ANS_COMMAND, ev.verb, ev.verb_seq, 0);
    if (ev.verb == FG_VERB_DATA) {
        p->data_seq = ev.verb_seq;
        p->data_pending = 1;
    }
    if (ev.verb == FG_VERB_STARTTLS)
        p->starttls_pending = 1;

    if (bare_lf)
        emit_viol(f, end, FG_VIOL_BARE_LF, 0);
    if (long_line)
        emit_viol(f, end, FG_VIOL_LONG_COMMAND, truncated);
    emit(f, &ev);
    if (bdat_end_now) {
        struct fg_smtp_event be;
        ev_init(&be, f, FG_SMTP_EV_BDAT_END, end);
        be.last = p->bdat_last;
        emit(f, &be);
    }
}

/* BDAT chunk octets are counted, never interpreted (RFC 3030 §2). */
static size_t bdat_run(struct feed *f, size_t i)
{
    struct fg_smtp_parser *p = f->p;
    uint64_t room = f->len - i;
    size_t n = (size_t)(p->bdat_left < room ? p->bdat_left : room);
    int done;

    p->bdat_left -= n;
    done = p->bdat_left == 0;
    emit_data(f, FG_SMTP_EV_BDAT_DATA, f->buf + i, n, i + n);
    if (done) {
        struct fg_smtp_event ev;
        ev_init(&ev, f, FG_SMTP_EV_BDAT_END, i + n);
        ev.last = p->bdat_last;
        emit(f, &ev);
    }
    return i + n;
}

/* Report body bytes [*run, to) of this buffer as one DATA piece. */
static void body_flush(struct feed *f, size_t *run, size_t to)
{
    if (to > *run)
        emit_data(f, FG_SMTP_EV_DATA, f->buf + *run, to - *run, to);
    *run = to;
}

/* A body byte that is neither CR nor LF counts toward the line length
 * (RFC 5321 §4.5.3.1.6); report the first octet past the limit. */
static int body_count(struct fg_smtp_parser *p)
{
    if (++p->body_line + 2 > TEXT_LINE_LIMIT && !p->body_long) {
        p->body_long = 1;
        return 1;
    }
    return 0;
}

/* The first CR or LF in b[i, lim), or lim.  This is the parser's hot loop
 * (the proxy scans every body octet), so it compares sixteen octets at a
 * time with SSE2 where the compiler has it, and otherwise eight at a time:
 * a word has a zero byte iff (w - 0x01..) & ~w & 0x80.. is non-zero, and a
 * byte equals c iff it is zero in w ^ (c repeated) -- the classic
 * word-at-a-time search (as memchr does, for two bytes at once). */
static size_t scan_eol(const char *b, size_t i, size_t lim)
{
#ifdef __SSE2__
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    while (lim - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        unsigned m =
            (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
        if (m)
            return i + (size_t)__builtin_ctz(m);
        i += 16;
    }
#else
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const uint64_t crs = ones * '\r', lfs = ones * '\n';

    while (lim - i >= 8) {
        uint64_t w, a, c;
        memcpy(&w, b + i, 8);
        a = w ^ crs;
        c = w ^ lfs;
        if ((((a - ones) & ~a) | ((c - ones) & ~c)) & highs)
            break;
        i += 8;
    }
#endif
    while (i < lim && b[i] != '\r' && b[i] != '\n')
        i++;
    return i;
}

/* An octet at a body line start that needs the byte-wise path: a dot
 * (stuffing or the terminator) or a CR/LF (an empty line, a bare LF). */
static int body_special(char c)
{
    return c == '.' || c == '\r' || c == '\n';
}

/* The DATA body, still dot-stuffed, up to CRLF.CRLF (RFC 5321 §4.1.1.4,
 * §4.5.2).  Only the "." or ".\r" that may start the terminator is held
 * back; if it turns out to be content and came in an earlier feed, it is
 * reported from a constant, since the caller's old buffer is gone. */
static size_t body_run(struct feed *f, size_t i)
{
    struct fg_smtp_parser *p = f->p;
    size_t run, len = f->len;
    int held_here = 0; /* the held bytes are in this buffer, at run */

    if (!p->data_started) {
        p->data_started = 1;
        emit_simple(f, FG_SMTP_EV_DATA_BEGIN, i);
        if (f->stop)
            return i;
    }
    run = i;
    while (i < len) {
        char c;
        int is_long;

        if (p->body_state == BS_MID) {
            /* Fast path: ordinary octets up to the next CR or LF, or up to
             * the octet that makes the line too long; then, while a CRLF
             * is followed by an octet that can neither start the
             * terminator nor be a bare CR/LF, the next line in one go.
             * The state after such a step (BS_MID, one octet counted, no
             * LONG_TEXT yet) is exactly what the byte-wise path below
             * reaches, and none of those octets makes an event, so the
             * events are the same for every split. */
            for (;;) {
                size_t lim = len;
                if (!p->body_long && lim - i > TEXT_LINE_LIMIT - 2 - p->body_line)
                    lim = i + (TEXT_LINE_LIMIT - 2 - p->body_line);
                size_t j = scan_eol(f->buf, i, lim);
                p->body_line += j - i;
                i = j;
                if (len - i > 2 && f->buf[i] == '\r' && f->buf[i + 1] == '\n' &&
                    !body_special(f->buf[i + 2])) {
                    p->body_line = 1;
                    p->body_long = 0;
                    i += 3;
                    continue;
                }
                break;
            }
            if (i == len)
                break;
        }
        c = f->buf[i];

        switch (p->body_state) {
        case BS_SOL:
            if (c == '.') {
                body_flush(f, &run, i);
                if (f->stop)
                    return i;
                held_here = 1;
                p->body_state = BS_DOT;
                i++;
                continue;
            }
            break;
        case BS_DOT:
            if (c == '\r') {
                p->body_state = BS_DOTCR;
                i++;
                continue;
            }
            /* A stuffed or stray dot: content, not counted in the line
             * length (§4.5.3.1.6). */
            p->body_state = BS_MID;
            if (!held_here) {
                emit_data(f, FG_SMTP_EV_DATA, ".", 1, i);
                if (f->stop)
                    return i;
            }
            held_here = 0;
            break;
        case BS_DOTCR:
            if (c == '\n') {
                /* [run, i] is the terminator (or its tail): not body. */
                p->in_data = 0;
                p->data_started = 0;
                p->body_state = BS_SOL;
                p->body_line = 0;
                p->body_long = 0;
                pend_push(p, FG_ANS_END_OF_DATA, FG_VERB_DATA, p->data_seq, 0);
                emit_simple(f, FG_SMTP_EV_END_OF_DATA, i + 1);
                return i + 1;
            }
            /* ".\r" then no LF: content with a bare CR. */
            p->body_state = BS_MID;
            is_long = body_count(p);
            if (!held_here) {
                /* Held since an earlier feed; its CR may be in this one. */
                emit_data(f, FG_SMTP_EV_DATA, ".\r", 2, i);
                run = i;
            }
            held_here = 0;
            body_flush(f, &run, i);
            emit_viol(f, i, FG_VIOL_BARE_CR, 0);
            if (is_long)
                emit_viol(f, i, FG_VIOL_LONG_TEXT, 0);
            if (f->stop)
                return i;
            continue;
        case BS_CR:
            if (c == '\n') {
                p->body_state = BS_SOL;
                p->body_line = 0;
                p->body_long = 0;
                i++;
                continue;
            }
            p->body_state = BS_MID;
            is_long = body_count(p);
            body_flush(f, &run, i);
            emit_viol(f, i, FG_VIOL_BARE_CR, 0);
            if (is_long)
                emit_viol(f, i, FG_VIOL_LONG_TEXT, 0);
            if (f->stop)
                return i;
            continue;
        case BS_MID:
            break;
        }
        /* Inside a line. */
        if (c == '\r') {
            p->body_state = BS_CR;
            i++;
            continue;
        }
        i++;
        p->body_state = BS_MID;
        if (c == '\n') {
            /* A bare LF ends nothing: "\n.\r\n" is not end of data
             * (§4.1.1.4; SMTP smuggling). */
            body_flush(f, &run, i);
            emit_viol(f, i, FG_VIOL_BARE_LF, 0);
            if (f->stop)
                return i;
            continue;
        }
        if (body_count(p)) {
            body_flush(f, &run, i);
            emit_viol(f, i, FG_VIOL_LONG_TEXT, 0);
            if (f->stop)
                return i;
        }
    }
    /* Whatever is held stays unreported until the next byte decides. */
    if (p->body_state != BS_DOT && p->body_state != BS_DOTCR)
        body_flush(f, &run, len);
    return len;
}

static size_t c2s_step(struct feed *f, size_t i)
{
    struct fg_smtp_parser *p = f->p;
    struct fg_smtp_dirstate *d = &p->d[FG_C2S];

    if (p->bdat_left > 0)
        return bdat_run(f, i);
    if (p->in_data)
        return body_run(f, i);
    if (p->data_go && line_at_start(d)) {
        /* The 354 switches the client's next line to the body (§3.3). */
        p->data_go = 0;
        p->in_data = 1;
        p->data_started = 0;
        p->body_state = BS_SOL;
        p->body_line = 0;
        p->body_long = 0;
        return body_run(f, i);
    }
    return line_step(f, i, command_done);
}

/* ---- server to client ---- */

static void reply_append(struct fg_smtp_parser *p, const char *s, size_t n)
{
    size_t room = FG_SMTP_REPLY_MAX - p->reply_len;
    if (n > room) {
        n = room;
        p->reply_truncated = 1;
    }
    memcpy(p->reply + p->reply_len, s, n);
    p->reply_len += n;
}

/* Reply lines: "ddd" then SP, "-" or the line end (RFC 5321 §4.2.1). */
static void reply_line_done(struct feed *f, size_t end, int bare_lf)
{
    struct fg_smtp_parser *p = f->p;
    struct fg_smtp_dirstate *d = &p->d[FG_S2C];
    const char *l = d->line;
    size_t n = d->line_len;
    int truncated = d->line_total > d->line_len;
    int long_line = d->line_total + 2 > REPLY_LINE_LIMIT;
    int valid = n >= 3 && isdigit((unsigned char)l[0]) && isdigit((unsigned char)l[1]) &&
                isdigit((unsigned char)l[2]) && (n == 3 || l[3] == ' ' || l[3] == '-');
    int mismatch = 0, final = 0, tls_now = 0;
    struct fg_smtp_event ev;

    if (valid) {
        int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        final = n == 3 || l[3] == ' ';
        if (p->reply_lines == 0)
            p->reply_code = code;
        else if (code != p->reply_code)
            mismatch = 1;
    }
    /* A bad line inside a multi-line reply stays part of it; outside one it
     * answers nothing and is only reported. */
    if (valid || p->reply_lines > 0) {
        reply_append(p, l, n);
        reply_append(p, "\r\n", 2);
        p->reply_lines++;
        if (truncated)
            p->reply_truncated = 1;
    }

    if (final) {
        ev_init(&ev, f, FG_SMTP_EV_REPLY, end);
        ev.code = p->reply_code;
        ev.nlines = p->reply_lines;
        ev.text = p->reply;
        ev.text_len = p->reply_len;
        ev.truncated = p->reply_truncated;
        if (!p->greeted) {
            p->greeted = 1;
            ev.answers = FG_ANS_GREETING;
        } else if (p->pend_len > 0) {
            unsigned h = p->pend_head;
            ev.answers = (enum fg_smtp_answers)p->pending[h].answers;
            ev.answers_verb = (enum fg_smtp_verb)p->pending[h].verb;
            ev.answers_seq = p->pending[h].seq;
            ev.last = p->pending[h].bdat_last;
            p->pend_head = (h + 1) % FG_SMTP_PENDING_MAX;
            p->pend_len--;
        } else {
            ev.answers = FG_ANS_UNSOLICITED;
        }
        if (ev.answers == FG_ANS_COMMAND && ev.answers_verb == FG_VERB_DATA) {
            p->data_pending = 0;
            if (ev.code == 354)
                p->data_go = 1;
        }
        if (ev.answers == FG_ANS_COMMAND && ev.answers_verb == FG_VERB_STARTTLS) {
            p->starttls_pending = 0;
            /* RFC 3207 §4: after 220 both sides speak TLS. */
            if (ev.code == 220) {
                p->tls = 1;
                tls_now = 1;
            }
        }
        p->reply_len = 0;
        p->reply_lines = 0;
        p->reply_code = 0;
        p->reply_truncated = 0;
    }

    if (bare_lf)
        emit_viol(f, end, FG_VIOL_BARE_LF, 0);
    if (long_line)
        emit_viol(f, end, FG_VIOL_LONG_REPLY, truncated);
    if (!valid)
        emit_viol(f, end, FG_VIOL_BAD_REPLY, truncated);
    if (mismatch)
        emit_viol(f, end, FG_VIOL_REPLY_MISMATCH, 0);
    if (final)
        emit(f, &ev);
    if (tls_now)
        emit_simple(f, FG_SMTP_EV_TLS_START, end);
}

size_t fg_smtp_parser_feed(struct fg_smtp_parser *p, enum fg_dir dir, const char *buf, size_t len)
{
    struct fg_smtp_dirstate *d = &p->d[dir];
    struct feed f = {.p = p, .dir = dir, .buf = buf, .len = len, .base = d->off, .stop = 0};
    size_t i = 0;

    if (d->queue_len > 0 && flush_queue(&f))
        return 0;
    while (i < len && !f.stop && !p->tls)
        i = dir == FG_C2S ? c2s_step(&f, i) : line_step(&f, i, reply_line_done);
    /* After STARTTLS the rest is opaque (RFC 3207 §4); a stop at TLS_START
     * still returns its end, so the caller can split the buffer there. */
    if (p->tls && !f.stop)
        i = len;
    d->off = f.base + i;
    return i;
}

/* ---- the faultgate token header ---- */

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

size_t fg_smtp_token_find(const char *body, size_t len, char *out, size_t outlen)
{
    static const char name[] = FG_TOKEN_HEADER;
    const size_t nl = sizeof(name) - 1;
    size_t i = 0;

    if (outlen == 0)
        return 0;
    out[0] = '\0';
    while (i < len) {
        /* i is at a line start (RFC 5322 §2.2: "name:" opens a field). */
        if (len - i > nl && strncasecmp(body + i, name, nl) == 0) {
            size_t j = i + nl;
            while (j < len && is_wsp(body[j]))
                j++;
            if (j < len && body[j] == ':') {
                size_t s = j + 1, e;
                while (s < len && is_wsp(body[s]))
                    s++;
                e = s;
                while (e < len && body[e] != '\r' && body[e] != '\n')
                    e++;
                /* Only a complete line: the prefix may end mid-value. */
                if (e == len)
                    return 0;
                while (e > s && is_wsp(body[e - 1]))
                    e--;
                if (e > s) {
                    size_t n = e - s < outlen - 1 ? e - s : outlen - 1;
                    memcpy(out, body + s, n);
                    out[n] = '\0';
                    return n;
                }
            }
        }
        const char *lf = memchr(body + i, '\n', len - i);
        if (!lf)
            break;
        i = (size_t)(lf - body) + 1;
    }
    return 0;
}
