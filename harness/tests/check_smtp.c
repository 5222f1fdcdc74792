/* check_smtp.c - tests for the incremental SMTP parser (harness/smtp.c).
 *
 * Sample dialogues are fed whole, byte by byte, split in two at every point
 * of every segment, split at random (fixed seeds), and stopped from the
 * callback at every event or at random ones; the recorded event lists must
 * be identical.  Each piece is fed from its own heap copy that is freed
 * right after, so AddressSanitizer catches any event pointing into an old
 * buffer.  Further cases check reply matching under pipelining (RFC 2920),
 * BDAT (RFC 3030), STARTTLS (RFC 3207), the violations and token_find.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/smtp.h"
#include "faultgate/util.h"

/* ---- recording ---- */

/* A copy of the fields of one event that the checks look at. */
struct evrec {
    enum fg_smtp_ev_type type;
    enum fg_dir dir;
    uint64_t off;
    enum fg_smtp_verb verb;
    char verb_text[16];
    unsigned verb_seq;
    int pipelined;
    int code;
    unsigned nlines;
    enum fg_smtp_answers answers;
    enum fg_smtp_verb answers_verb;
    unsigned answers_seq;
    int last;
    enum fg_smtp_violation violation;
    int truncated;
    char *str; /* line, reply text or (merged) data */
    size_t str_len;
};

enum stop_mode { STOP_NEVER, STOP_ALWAYS, STOP_RANDOM };

struct rec {
    struct fg_smtp_parser p;
    struct evrec *ev;
    size_t nev, cap;
    /* the buffer being fed, per direction, for pointer checks */
    const char *cur[2];
    size_t cur_len[2];
    uint64_t base[2];
    enum stop_mode stop;
    struct fg_rng rng;
    int stopped;
    size_t stop_end;
};

static char *memdup0(const char *s, size_t n)
{
    char *d = fg_malloc(n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Event types seen since the last reset, for coverage checks. */
static unsigned type_seen[FG_SMTP_EV_VIOLATION + 1];

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct rec *r = ud;
    int d = ev->dir;

    ck_assert_uint_le(ev->type, FG_SMTP_EV_VIOLATION);
    type_seen[ev->type]++;

    ck_assert_int_ge(d, 0);
    ck_assert_int_le(d, 1);
    ck_assert_uint_le(ev->end, r->cur_len[d]);
    ck_assert_uint_eq(ev->stream_off, r->base[d] + ev->end);

    if (ev->type == FG_SMTP_EV_DATA || ev->type == FG_SMTP_EV_BDAT_DATA) {
        const char *b = r->cur[d];
        ck_assert_uint_gt(ev->data_len, 0);
        if (b && ev->data >= b && ev->data < b + r->cur_len[d]) {
            /* In the caller's buffer, ending at end. */
            ck_assert_ptr_eq(ev->data + ev->data_len, b + ev->end);
        } else {
            /* Only the held "." / ".\r" of a DATA body may come from
             * elsewhere. */
            ck_assert_int_eq(ev->type, FG_SMTP_EV_DATA);
            ck_assert(ev->data_len <= 2 && ev->data[0] == '.');
            ck_assert(ev->data_len == 1 || ev->data[1] == '\r');
        }
        struct evrec *prev = r->nev ? &r->ev[r->nev - 1] : NULL;
        if (prev && prev->type == ev->type) {
            /* Consecutive pieces are one run. */
            prev->str = fg_realloc(prev->str, prev->str_len + ev->data_len + 1);
            memcpy(prev->str + prev->str_len, ev->data, ev->data_len);
            prev->str_len += ev->data_len;
            prev->str[prev->str_len] = '\0';
            prev->off = ev->stream_off;
            goto done;
        }
    }

    struct evrec *e = FG_ARRAY_PUSH(r->ev, r->nev, r->cap);
    memset(e, 0, sizeof(*e));
    e->type = ev->type;
    e->dir = ev->dir;
    e->off = ev->stream_off;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
        ck_assert_uint_le(ev->line_len, FG_SMTP_LINE_MAX);
        e->verb = ev->verb;
        memcpy(e->verb_text, ev->verb_text, sizeof(e->verb_text));
        ck_assert_int_eq(e->verb_text[15], '\0');
        e->verb_seq = ev->verb_seq;
        e->pipelined = ev->pipelined;
        e->truncated = ev->truncated;
        /* line = verb [SP arg] */
        ck_assert_ptr_nonnull(ev->arg);
        if (ev->arg_len)
            ck_assert_ptr_eq(ev->arg + ev->arg_len, ev->line + ev->line_len);
        e->str = memdup0(ev->line, ev->line_len);
        e->str_len = ev->line_len;
        break;
    case FG_SMTP_EV_REPLY:
        ck_assert_uint_le(ev->text_len, FG_SMTP_REPLY_MAX);
        e->code = ev->code;
        e->nlines = ev->nlines;
        e->answers = ev->answers;
        e->answers_verb = ev->answers_verb;
        e->answers_seq = ev->answers_seq;
        e->last = ev->last;
        e->truncated = ev->truncated;
        e->str = memdup0(ev->text, ev->text_len);
        e->str_len = ev->text_len;
        break;
    case FG_SMTP_EV_DATA:
    case FG_SMTP_EV_BDAT_DATA:
        e->str = memdup0(ev->data, ev->data_len);
        e->str_len = ev->data_len;
        break;
    case FG_SMTP_EV_BDAT_END:
        e->last = ev->last;
        break;
    case FG_SMTP_EV_VIOLATION:
        ck_assert_int_ne(ev->violation, FG_VIOL_NONE);
        e->violation = ev->violation;
        e->truncated = ev->truncated;
        break;
    default:
        break;
    }
done:
    if (r->stop == STOP_ALWAYS || (r->stop == STOP_RANDOM && fg_rng_next(&r->rng) % 3 == 0)) {
        r->stopped = 1;
        r->stop_end = ev->end;
        return 1;
    }
    return 0;
}

static void rec_init(struct rec *r, enum stop_mode stop, uint64_t seed)
{
    memset(r, 0, sizeof(*r));
    r->stop = stop;
    fg_rng_seed(&r->rng, seed);
    fg_smtp_parser_init(&r->p, on_event, r);
}

static void rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->nev; i++)
        free(r->ev[i].str);
    free(r->ev);
    r->ev = NULL;
    r->nev = r->cap = 0;
}

/* Feed one piece from a private heap copy, resuming after every stop,
 * until it is consumed and nothing is held. */
static void feed_piece(struct rec *r, enum fg_dir dir, const char *s, size_t len)
{
    char *copy = fg_malloc(len ? len : 1);
    size_t off = 0;
    unsigned rounds = 0;

    memcpy(copy, s, len);
    for (;;) {
        size_t n;
        r->cur[dir] = copy + off;
        r->cur_len[dir] = len - off;
        r->stopped = 0;
        n = fg_smtp_parser_feed(&r->p, dir, copy + off, len - off);
        ck_assert_uint_le(n, len - off);
        if (r->stopped)
            ck_assert_uint_eq(n, r->stop_end);
        else
            ck_assert_uint_eq(n, len - off);
        off += n;
        r->base[dir] += n;
        if (off == len && fg_smtp_parser_queued(&r->p, dir) == 0)
            break;
        ck_assert_uint_lt(++rounds, 1000000);
    }
    r->cur[dir] = NULL;
    free(copy);
}

/* ---- dialogues ---- */

struct seg {
    enum fg_dir dir;
    const char *s;
    size_t len; /* 0: strlen */
};

struct dialogue {
    const char *name;
    const struct seg *segs;
};

#define C(str)                                                                                     \
    {                                                                                              \
        FG_C2S, str, sizeof(str) - 1                                                               \
    }
#define S(str)                                                                                     \
    {                                                                                              \
        FG_S2C, str, sizeof(str) - 1                                                               \
    }
#define END                                                                                        \
    {                                                                                              \
        FG_C2S, NULL, 0                                                                            \
    }

static const struct seg session[] = {
    S("220 mx.test ESMTP\r\n"),
    C("EHLO client.test\r\n"),
    S("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
    C("MAIL FROM:<a@x.test>\r\n"),
    S("250 ok\r\n"),
    C("RCPT TO:<b@y.test>\r\n"),
    S("250 ok\r\n"),
    C("RCPT TO:<c@y.test>\r\n"),
    S("250 ok\r\n"),
    C("DATA\r\n"),
    S("354 go ahead\r\n"),
    C("Subject: t\r\nX-Faultgate-Token: tok-1\r\n\r\n...\r\n..foo\r\n.foo\r\n..\r\nend\r\n.\r\n"),
    S("250 queued\r\n"),
    C("QUIT\r\n"),
    S("221 bye\r\n"),
    END,
};

static const struct seg pipelined[] = {
    S("220 mx.test ESMTP\r\n"),
    C("EHLO c.test\r\n"),
    S("250-mx.test\r\n250 PIPELINING\r\n"),
    C("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"),
    S("250 ok\r\n250 ok\r\n550 no such user\r\n354 go\r\n"),
    C("hello\r\n.\r\nMAIL FROM:<d@x.test>\r\nRCPT TO:<e@y.test>\r\nDATA\r\n"),
    S("250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
    C(".\r\n"),
    S("250 empty\r\n"),
    C("QUIT\r\n"),
    S("221 bye\r\n"),
    END,
};

static const struct seg bdat[] = {
    S("220 mx.test ESMTP\r\n"),
    C("EHLO c.test\r\n"),
    S("250-mx.test\r\n250-CHUNKING\r\n250 PIPELINING\r\n"),
    C("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"),
    S("250 ok\r\n250 ok\r\n"),
    C("BDAT 13\r\nab\r\n.\r\nQUIT\r\nBDAT 4 LAST\r\nxyz\nNOOP\r\n"),
    S("250 chunk\r\n250 done\r\n250 noop\r\n"),
    C("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 0 LAST\r\nQUIT\r\n"),
    S("250 ok\r\n250 ok\r\n250 empty\r\n221 bye\r\n"),
    END,
};

static const struct seg starttls[] = {
    S("220 mx.test ESMTP\r\n"),
    C("EHLO c.test\r\n"),
    S("250-mx.test\r\n250 STARTTLS\r\n"),
    C("STARTTLS\r\nRSET\r\n"),
    S("220 go ahead\r\n250-PIPELINING injected\r\n"),
    C("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 MAIL FROM:<x>\r\n"),
    S("\x16\x03\x03\x00\x7a\x02\x00\x00\x76\r\n250 ok\r\n"),
    END,
};

static const struct seg violations[] = {
    S("220 mx.test ESMTP\r\n"),
    C("EHLO c.test\n"),
    S("250-mx.test\r\n251 mixed\r\n"),
    C("NOOP x\ry\r\n"),
    S("hello there\r\n250 ok\r\n"),
    C("MAIL FROM:<a@x.test>\r\r\n"),
    S("250 ok\n"),
    C("RCPT TO:<b@y.test>\r\n"),
    S("250 ok\r"),
    S("\n"),
    C("DATA\r\n"),
    S("354 go\r\n"),
    C("a\n.\r\nb\r.\r\n.\r.\r\n.\n.\r\r\n\r\n.x\r\n.\r.\r\n.\r\n"),
    S("250 ok\r\n"),
    C("QUIT\r\n"),
    S("221 bye\r\n"),
    END,
};

static const struct seg early[] = {
    C("EHLO early.test\r\n"),
    S("220 mx.test ESMTP\r\n250 ok\r\n"),
    C("MAIL FROM:<a@x.test>\r\n"),
    S("250 ok\r\n"),
    C("RCPT TO:<b@y.test>\r\n"),
    S("250 ok\r\n"),
    C("DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n"),
    S("354 go\r\n"),
    C("QUIT\r\n.\r\n"),
    S("250 ok\r\n421 shutting down\r\n"),
    S("221 bye\r\n"),
    END,
};

static const struct seg rejected[] = {
    S("220 mx.test ESMTP\r\n"), C("HELO c.test\r\n"), S("250 mx.test\r\n"),          C("DATA\r\n"),
    S("503 need MAIL\r\n"),     C("line\r\n.\r\n"),   S("500 what\r\n500 what\r\n"), END,
};

/* Long lines are built at run time: see long_segs(). */
static struct seg long_dialogue[8];
static char long_cmd[700], long_reply[1500], long_body[3200];

static void long_segs(void)
{
    size_t n;

    n = (size_t)snprintf(long_cmd, sizeof(long_cmd), "NOOP ");
    memset(long_cmd + n, 'c', 600 - n);
    memcpy(long_cmd + 600, "\r\nRSET\r\n", 9);

    n = (size_t)snprintf(long_reply, sizeof(long_reply), "250-");
    memset(long_reply + n, 'r', 1100 - n);
    memcpy(long_reply + 1100, "\r\n250 fine\r\n250 ok\r\n", 21);

    /* 998 octets + CRLF = 1000 (allowed), then 999 + CRLF (too long), then
     * a dot-stuffed 998 (allowed: the stuffing dot is not counted). */
    n = 0;
    memset(long_body + n, 'a', 998);
    n += 998;
    memcpy(long_body + n, "\r\n", 2);
    n += 2;
    memset(long_body + n, 'b', 999);
    n += 999;
    memcpy(long_body + n, "\r\n..", 4);
    n += 4;
    memset(long_body + n, 'd', 997);
    n += 997;
    memcpy(long_body + n, "\r\n.\r\n", 6);

    struct seg s[] = {
        S("220 mx.test ESMTP\r\n"),
        {FG_C2S, long_cmd, 0},
        {FG_S2C, long_reply, 0},
        C("DATA\r\n"),
        S("354 go\r\n"),
        {FG_C2S, long_body, 0},
        S("250 ok\r\n"),
        END,
    };
    memcpy(long_dialogue, s, sizeof(s));
}

static const struct dialogue dialogues[] = {
    {"session", session},   {"pipelined", pipelined},   {"bdat", bdat},
    {"starttls", starttls}, {"violations", violations}, {"early", early},
    {"rejected", rejected}, {"long", long_dialogue},
};
#define NDIALOGUES (sizeof(dialogues) / sizeof(dialogues[0]))

static size_t seg_len(const struct seg *s)
{
    return s->len ? s->len : strlen(s->s);
}

/* Feed a dialogue; split(k, seg) gives the piece sizes of one segment. */
enum split_kind { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_AT, SPLIT_RANDOM };

static void run_dialogue(struct rec *r, const struct seg *segs, enum split_kind kind, size_t at_seg,
                         size_t at, uint64_t seed)
{
    struct fg_rng rng;
    fg_rng_seed(&rng, seed);
    for (size_t i = 0; segs[i].s; i++) {
        const char *s = segs[i].s;
        size_t len = seg_len(&segs[i]), off = 0;
        while (off < len) {
            size_t n = len - off;
            if (kind == SPLIT_BYTES)
                n = 1;
            else if (kind == SPLIT_AT && i == at_seg && off < at)
                n = at - off;
            else if (kind == SPLIT_RANDOM)
                n = 1 + (size_t)(fg_rng_next(&rng) % (fg_rng_next(&rng) % 4 ? 9 : 200));
            if (n > len - off)
                n = len - off;
            feed_piece(r, segs[i].dir, s + off, n);
            off += n;
        }
    }
}

/* ---- serialization: one line per event (DATA pieces merged) ---- */

static const char *type_name(enum fg_smtp_ev_type t)
{
    static const char *const names[] = {"COMMAND",   "REPLY",    "DATA_BEGIN", "DATA",     "EOD",
                                        "BDAT_DATA", "BDAT_END", "TLS_START",  "VIOLATION"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static const char *answers_name(enum fg_smtp_answers a)
{
    static const char *const names[] = {"greeting", "command", "eod", "bdat", "unsolicited"};
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}

static void sb_add(char **sb, size_t *n, size_t *cap, const char *s, size_t len)
{
    fg_array_reserve((void **)sb, cap, *n + len + 1, 1);
    memcpy(*sb + *n, s, len);
    *n += len;
    (*sb)[*n] = '\0';
}

static void sb_esc(char **sb, size_t *n, size_t *cap, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char t[8];
        if (c == '\r')
            sb_add(sb, n, cap, "\\r", 2);
        else if (c == '\n')
            sb_add(sb, n, cap, "\\n", 2);
        else if (c == '\\')
            sb_add(sb, n, cap, "\\\\", 2);
        else if (c < 0x20 || c >= 0x7f)
            sb_add(sb, n, cap, t, (size_t)snprintf(t, sizeof(t), "\\x%02x", c));
        else
            sb_add(sb, n, cap, (const char *)&s[i], 1);
    }
}

/* with_off: include stream offsets (for comparing runs of one dialogue). */
static char *serialize(const struct rec *r, int with_off)
{
    char *sb = NULL, t[256];
    size_t n = 0, cap = 0;

    sb_add(&sb, &n, &cap, "", 0);
    for (size_t i = 0; i < r->nev; i++) {
        const struct evrec *e = &r->ev[i];
        int k = snprintf(t, sizeof(t), "%s %s", e->dir == FG_C2S ? "C" : "S", type_name(e->type));
        sb_add(&sb, &n, &cap, t, (size_t)k);
        if (with_off) {
            k = snprintf(t, sizeof(t), "@%" PRIu64, e->off);
            sb_add(&sb, &n, &cap, t, (size_t)k);
        }
        switch (e->type) {
        case FG_SMTP_EV_COMMAND:
            k = snprintf(t, sizeof(t), " %s/%s #%u%s%s ", fg_smtp_verb_name(e->verb), e->verb_text,
                         e->verb_seq, e->pipelined ? " pipe" : "", e->truncated ? " trunc" : "");
            break;
        case FG_SMTP_EV_REPLY:
            k = snprintf(t, sizeof(t), " %d/%u %s %s#%u%s%s ", e->code, e->nlines,
                         answers_name(e->answers), fg_smtp_verb_name(e->answers_verb),
                         e->answers_seq, e->last ? " last" : "", e->truncated ? " trunc" : "");
            break;
        case FG_SMTP_EV_BDAT_END:
            k = snprintf(t, sizeof(t), "%s", e->last ? " last" : " ");
            break;
        case FG_SMTP_EV_VIOLATION:
            k = snprintf(t, sizeof(t), " %s%s", fg_smtp_violation_name(e->violation),
                         e->truncated ? " trunc" : "");
            break;
        default:
            k = snprintf(t, sizeof(t), " ");
            break;
        }
        sb_add(&sb, &n, &cap, t, (size_t)k);
        if (e->str)
            sb_esc(&sb, &n, &cap, e->str, e->str_len);
        sb_add(&sb, &n, &cap, "\n", 1);
    }
    return sb;
}

static char *record(const struct seg *segs, enum split_kind kind, size_t at_seg, size_t at,
                    uint64_t seed, enum stop_mode stop, int with_off)
{
    struct rec r;
    char *s;
    rec_init(&r, stop, seed * 7 + 1);
    run_dialogue(&r, segs, kind, at_seg, at, seed);
    s = serialize(&r, with_off);
    rec_free(&r);
    return s;
}

/* ---- split invariance ---- */

START_TEST(test_split_invariance)
{
    const struct dialogue *dl = &dialogues[_i];
    char *ref = record(dl->segs, SPLIT_WHOLE, 0, 0, 1, STOP_NEVER, 1);
    char *s;

    ck_assert_msg(strchr(ref, '\n') != NULL, "%s: no events", dl->name);

    s = record(dl->segs, SPLIT_BYTES, 0, 0, 1, STOP_NEVER, 1);
    ck_assert_msg(strcmp(ref, s) == 0, "%s bytewise:\n%s\nwhole:\n%s", dl->name, s, ref);
    free(s);

    for (size_t i = 0; dl->segs[i].s; i++) {
        const char *sg = dl->segs[i].s;
        size_t sl = seg_len(&dl->segs[i]);
        for (size_t k = 1; k < sl; k++) {
            /* In long runs of one octet, every 13th point will do. */
            if (sl > 256 && k > 64 && k < sl - 64 && k % 13 && sg[k] == sg[k - 1] &&
                sg[k] == sg[k + 1])
                continue;
            s = record(dl->segs, SPLIT_AT, i, k, 1, STOP_NEVER, 1);
            ck_assert_msg(strcmp(ref, s) == 0, "%s split seg %zu at %zu:\n%s\nwhole:\n%s", dl->name,
                          i, k, s, ref);
            free(s);
        }
    }
    for (uint64_t seed = 1; seed <= 40; seed++) {
        s = record(dl->segs, SPLIT_RANDOM, 0, 0, seed, STOP_NEVER, 1);
        ck_assert_msg(strcmp(ref, s) == 0, "%s random seed %" PRIu64 ":\n%s\nwhole:\n%s", dl->name,
                      seed, s, ref);
        free(s);
    }
    free(ref);
}
END_TEST

START_TEST(test_stop_resume)
{
    const struct dialogue *dl = &dialogues[_i];
    char *ref = record(dl->segs, SPLIT_WHOLE, 0, 0, 1, STOP_NEVER, 1);
    char *s;

    s = record(dl->segs, SPLIT_WHOLE, 0, 0, 1, STOP_ALWAYS, 1);
    ck_assert_msg(strcmp(ref, s) == 0, "%s stop always:\n%s\nwhole:\n%s", dl->name, s, ref);
    free(s);
    s = record(dl->segs, SPLIT_BYTES, 0, 0, 1, STOP_ALWAYS, 1);
    ck_assert_msg(strcmp(ref, s) == 0, "%s stop always bytewise:\n%s", dl->name, s);
    free(s);
    for (uint64_t seed = 1; seed <= 40; seed++) {
        s = record(dl->segs, SPLIT_RANDOM, 0, 0, seed, STOP_RANDOM, 1);
        ck_assert_msg(strcmp(ref, s) == 0, "%s stop random seed %" PRIu64 ":\n%s\nwhole:\n%s",
                      dl->name, seed, s, ref);
        free(s);
    }
    free(ref);
}
END_TEST

/* ---- expected event lists ---- */

static void expect_events(const struct seg *segs, const char *expected)
{
    char *s = record(segs, SPLIT_WHOLE, 0, 0, 1, STOP_NEVER, 0);
    ck_assert_msg(strcmp(s, expected) == 0, "got:\n%s\nexpected:\n%s", s, expected);
    free(s);
}

START_TEST(test_session)
{
    expect_events(
        session,
        "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
        "C COMMAND EHLO/EHLO #1 EHLO client.test\n"
        "S REPLY 250/3 command EHLO#1 250-mx.test\\r\\n250-PIPELINING\\r\\n250 8BITMIME\\r\\n\n"
        "C COMMAND MAIL/MAIL #1 MAIL FROM:<a@x.test>\n"
        "S REPLY 250/1 command MAIL#1 250 ok\\r\\n\n"
        "C COMMAND RCPT/RCPT #1 RCPT TO:<b@y.test>\n"
        "S REPLY 250/1 command RCPT#1 250 ok\\r\\n\n"
        "C COMMAND RCPT/RCPT #2 RCPT TO:<c@y.test>\n"
        "S REPLY 250/1 command RCPT#2 250 ok\\r\\n\n"
        "C COMMAND DATA/DATA #1 DATA\n"
        "S REPLY 354/1 command DATA#1 354 go ahead\\r\\n\n"
        "C DATA_BEGIN \n"
        "C DATA Subject: t\\r\\nX-Faultgate-Token: tok-1\\r\\n\\r\\n...\\r\\n..foo\\r\\n"
        ".foo\\r\\n..\\r\\nend\\r\\n\n"
        "C EOD \n"
        "S REPLY 250/1 eod DATA#1 250 queued\\r\\n\n"
        "C COMMAND QUIT/QUIT #1 QUIT\n"
        "S REPLY 221/1 command QUIT#1 221 bye\\r\\n\n");
}
END_TEST

/* Offsets: END_OF_DATA is just past the terminator in the C2S stream,
 * DATA_BEGIN at the first body octet. */
START_TEST(test_session_offsets)
{
    struct rec r;
    uint64_t c2s = 0, body_start = 0, eod = 0;
    char tok[FG_TOKEN_MAX];

    for (size_t i = 0; session[i].s; i++) {
        if (session[i].dir != FG_C2S)
            continue;
        if (strncmp(session[i].s, "Subject", 7) == 0) {
            body_start = c2s;
            eod = c2s + seg_len(&session[i]);
        }
        c2s += seg_len(&session[i]);
    }
    rec_init(&r, STOP_NEVER, 1);
    run_dialogue(&r, session, SPLIT_RANDOM, 0, 0, 99);
    int seen = 0;
    for (size_t i = 0; i < r.nev; i++) {
        if (r.ev[i].type == FG_SMTP_EV_DATA_BEGIN) {
            ck_assert_uint_eq(r.ev[i].off, body_start);
            seen |= 1;
        }
        if (r.ev[i].type == FG_SMTP_EV_END_OF_DATA) {
            ck_assert_uint_eq(r.ev[i].off, eod);
            seen |= 2;
        }
        if (r.ev[i].type == FG_SMTP_EV_DATA) {
            ck_assert_uint_eq(r.ev[i].off, eod - 3); /* the dot line is not data */
            ck_assert_uint_eq(fg_smtp_token_find(r.ev[i].str, r.ev[i].str_len, tok, sizeof(tok)),
                              5);
            ck_assert_str_eq(tok, "tok-1");
            seen |= 4;
        }
    }
    ck_assert_int_eq(seen, 7);
    ck_assert_uint_eq(r.base[FG_C2S], c2s);
    ck_assert(!fg_smtp_parser_is_tls(&r.p));
    rec_free(&r);
}
END_TEST

START_TEST(test_pipelined)
{
    expect_events(pipelined, "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                             "C COMMAND EHLO/EHLO #1 EHLO c.test\n"
                             "S REPLY 250/2 command EHLO#1 250-mx.test\\r\\n250 PIPELINING\\r\\n\n"
                             "C COMMAND MAIL/MAIL #1 MAIL FROM:<a@x.test>\n"
                             "C COMMAND RCPT/RCPT #1 pipe RCPT TO:<b@y.test>\n"
                             "C COMMAND RCPT/RCPT #2 pipe RCPT TO:<c@y.test>\n"
                             "C COMMAND DATA/DATA #1 pipe DATA\n"
                             "S REPLY 250/1 command MAIL#1 250 ok\\r\\n\n"
                             "S REPLY 250/1 command RCPT#1 250 ok\\r\\n\n"
                             "S REPLY 550/1 command RCPT#2 550 no such user\\r\\n\n"
                             "S REPLY 354/1 command DATA#1 354 go\\r\\n\n"
                             "C DATA_BEGIN \n"
                             "C DATA hello\\r\\n\n"
                             "C EOD \n"
                             "C COMMAND MAIL/MAIL #2 pipe MAIL FROM:<d@x.test>\n"
                             "C COMMAND RCPT/RCPT #3 pipe RCPT TO:<e@y.test>\n"
                             "C COMMAND DATA/DATA #2 pipe DATA\n"
                             "S REPLY 250/1 eod DATA#1 250 queued\\r\\n\n"
                             "S REPLY 250/1 command MAIL#2 250 ok\\r\\n\n"
                             "S REPLY 250/1 command RCPT#3 250 ok\\r\\n\n"
                             "S REPLY 354/1 command DATA#2 354 go\\r\\n\n"
                             "C DATA_BEGIN \n"
                             "C EOD \n"
                             "S REPLY 250/1 eod DATA#2 250 empty\\r\\n\n"
                             "C COMMAND QUIT/QUIT #1 QUIT\n"
                             "S REPLY 221/1 command QUIT#1 221 bye\\r\\n\n");
}
END_TEST

START_TEST(test_bdat)
{
    expect_events(bdat, "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                        "C COMMAND EHLO/EHLO #1 EHLO c.test\n"
                        "S REPLY 250/3 command EHLO#1 250-mx.test\\r\\n250-CHUNKING\\r\\n"
                        "250 PIPELINING\\r\\n\n"
                        "C COMMAND MAIL/MAIL #1 MAIL FROM:<a@x.test>\n"
                        "C COMMAND RCPT/RCPT #1 pipe RCPT TO:<b@y.test>\n"
                        "S REPLY 250/1 command MAIL#1 250 ok\\r\\n\n"
                        "S REPLY 250/1 command RCPT#1 250 ok\\r\\n\n"
                        "C COMMAND BDAT/BDAT #1 BDAT 13\n"
                        "C BDAT_DATA ab\\r\\n.\\r\\nQUIT\\r\\n\n"
                        "C BDAT_END \n"
                        "C COMMAND BDAT/BDAT #2 pipe BDAT 4 LAST\n"
                        "C BDAT_DATA xyz\\n\n"
                        "C BDAT_END last\n"
                        "C COMMAND NOOP/NOOP #1 pipe NOOP\n"
                        "S REPLY 250/1 bdat BDAT#1 250 chunk\\r\\n\n"
                        "S REPLY 250/1 bdat BDAT#2 last 250 done\\r\\n\n"
                        "S REPLY 250/1 command NOOP#1 250 noop\\r\\n\n"
                        "C COMMAND MAIL/MAIL #2 MAIL FROM:<a@x.test>\n"
                        "C COMMAND RCPT/RCPT #2 pipe RCPT TO:<b@y.test>\n"
                        "C COMMAND BDAT/BDAT #3 pipe BDAT 0 LAST\n"
                        "C BDAT_END last\n"
                        "C COMMAND QUIT/QUIT #1 pipe QUIT\n"
                        "S REPLY 250/1 command MAIL#2 250 ok\\r\\n\n"
                        "S REPLY 250/1 command RCPT#2 250 ok\\r\\n\n"
                        "S REPLY 250/1 bdat BDAT#3 last 250 empty\\r\\n\n"
                        "S REPLY 221/1 command QUIT#1 221 bye\\r\\n\n");
}
END_TEST

START_TEST(test_starttls)
{
    struct rec r;
    size_t tls_i = 0, reply_i = 0;

    expect_events(starttls, "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                            "C COMMAND EHLO/EHLO #1 EHLO c.test\n"
                            "S REPLY 250/2 command EHLO#1 250-mx.test\\r\\n250 STARTTLS\\r\\n\n"
                            "C COMMAND STARTTLS/STARTTLS #1 STARTTLS\n"
                            "C COMMAND RSET/RSET #1 pipe RSET\n"
                            "S REPLY 220/1 command STARTTLS#1 220 go ahead\\r\\n\n"
                            "S TLS_START \n");
    /* TLS_START sits just past the 220, before the injected line. */
    rec_init(&r, STOP_NEVER, 1);
    run_dialogue(&r, starttls, SPLIT_WHOLE, 0, 0, 1);
    for (size_t i = 0; i < r.nev; i++) {
        if (r.ev[i].type == FG_SMTP_EV_TLS_START)
            tls_i = i;
        if (r.ev[i].type == FG_SMTP_EV_REPLY && r.ev[i].code == 220)
            reply_i = i;
    }
    ck_assert_uint_gt(tls_i, 0);
    ck_assert_uint_eq(r.ev[tls_i].off, r.ev[reply_i].off);
    ck_assert_uint_eq(r.ev[tls_i].off, strlen("220 mx.test ESMTP\r\n250-mx.test\r\n"
                                              "250 STARTTLS\r\n220 go ahead\r\n"));
    ck_assert(fg_smtp_parser_is_tls(&r.p));
    /* Everything after is consumed and ignored. */
    size_t n = r.nev;
    feed_piece(&r, FG_S2C, "250 more\r\n", 10);
    feed_piece(&r, FG_C2S, "QUIT\r\n", 6);
    ck_assert_uint_eq(r.nev, n);
    rec_free(&r);
}
END_TEST

/* A STARTTLS refused with 454 leaves the session in plain text. */
START_TEST(test_starttls_refused)
{
    static const struct seg segs[] = {
        S("220 mx\r\n"), C("STARTTLS\r\n"), S("454 not now\r\n"),
        C("QUIT\r\n"),   S("221 bye\r\n"),  END,
    };
    expect_events(segs, "S REPLY 220/1 greeting OTHER#0 220 mx\\r\\n\n"
                        "C COMMAND STARTTLS/STARTTLS #1 STARTTLS\n"
                        "S REPLY 454/1 command STARTTLS#1 454 not now\\r\\n\n"
                        "C COMMAND QUIT/QUIT #1 QUIT\n"
                        "S REPLY 221/1 command QUIT#1 221 bye\\r\\n\n");
}
END_TEST

START_TEST(test_violations)
{
    expect_events(violations, "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                              "C VIOLATION bare-lf\n"
                              "C COMMAND EHLO/EHLO #1 EHLO c.test\n"
                              "S VIOLATION reply-mismatch\n"
                              "S REPLY 250/2 command EHLO#1 250-mx.test\\r\\n251 mixed\\r\\n\n"
                              "C VIOLATION bare-cr\n"
                              "C COMMAND NOOP/NOOP #1 NOOP x\\ry\n"
                              "S VIOLATION bad-reply\n"
                              "S REPLY 250/1 command NOOP#1 250 ok\\r\\n\n"
                              "C VIOLATION bare-cr\n"
                              "C COMMAND MAIL/MAIL #1 MAIL FROM:<a@x.test>\\r\n"
                              "S VIOLATION bare-lf\n"
                              "S REPLY 250/1 command MAIL#1 250 ok\\r\\n\n"
                              "C COMMAND RCPT/RCPT #1 RCPT TO:<b@y.test>\n"
                              "S REPLY 250/1 command RCPT#1 250 ok\\r\\n\n"
                              "C COMMAND DATA/DATA #1 DATA\n"
                              "S REPLY 354/1 command DATA#1 354 go\\r\\n\n"
                              "C DATA_BEGIN \n"
                              /* "a\n" bare LF; ".\r\n" after a bare LF is not the end */
                              "C DATA a\\n\n"
                              "C VIOLATION bare-lf\n"
                              "C DATA .\\r\\nb\\r\n"
                              "C VIOLATION bare-cr\n"
                              /* ".\r\n" after a bare CR is not the end either */
                              "C DATA .\\r\\n.\\r\n"
                              "C VIOLATION bare-cr\n"
                              "C DATA .\\r\\n.\\n\n"
                              "C VIOLATION bare-lf\n"
                              "C DATA .\\r\n"
                              "C VIOLATION bare-cr\n"
                              "C DATA \\r\\n\\r\\n.x\\r\\n.\\r\n"
                              "C VIOLATION bare-cr\n"
                              "C DATA .\\r\\n\n"
                              "C EOD \n"
                              "S REPLY 250/1 eod DATA#1 250 ok\\r\\n\n"
                              "C COMMAND QUIT/QUIT #1 QUIT\n"
                              "S REPLY 221/1 command QUIT#1 221 bye\\r\\n\n");
}
END_TEST

START_TEST(test_long_lines)
{
    struct rec r;
    int long_cmd_seen = 0, long_reply_seen = 0, long_text = 0;

    rec_init(&r, STOP_NEVER, 1);
    run_dialogue(&r, long_dialogue, SPLIT_RANDOM, 0, 0, 5);
    for (size_t i = 0; i < r.nev; i++) {
        const struct evrec *e = &r.ev[i];
        if (e->type == FG_SMTP_EV_VIOLATION && e->violation == FG_VIOL_LONG_COMMAND) {
            long_cmd_seen++;
            ck_assert_int_eq(e->truncated, 0); /* 600 fit in the line buffer */
            ck_assert_int_eq(r.ev[i + 1].type, FG_SMTP_EV_COMMAND);
            ck_assert_int_eq(r.ev[i + 1].verb, FG_VERB_NOOP);
            ck_assert_uint_eq(r.ev[i + 1].str_len, 600);
        }
        if (e->type == FG_SMTP_EV_VIOLATION && e->violation == FG_VIOL_LONG_REPLY) {
            long_reply_seen++;
            ck_assert_int_eq(e->truncated, 1); /* 1100 > FG_SMTP_LINE_MAX */
        }
        if (e->type == FG_SMTP_EV_REPLY && e->code == 250 && e->nlines == 2) {
            ck_assert_int_eq(e->truncated, 1);
            ck_assert_uint_eq(e->str_len, FG_SMTP_LINE_MAX + 2 + strlen("250 fine\r\n"));
            ck_assert_int_eq(e->answers, FG_ANS_COMMAND);
            ck_assert_int_eq(e->answers_verb, FG_VERB_NOOP);
        }
        if (e->type == FG_SMTP_EV_REPLY && e->code == 250 && e->nlines == 1 &&
            e->answers == FG_ANS_COMMAND)
            ck_assert_int_eq(e->answers_verb, FG_VERB_RSET);
        if (e->type == FG_SMTP_EV_VIOLATION && e->violation == FG_VIOL_LONG_TEXT) {
            long_text++;
            /* Reported at the 999th octet of the "b" line. */
            ck_assert_uint_eq(e->off, r.base[FG_C2S] - strlen(long_body) + 1000 + 999);
        }
    }
    ck_assert_int_eq(long_cmd_seen, 1);
    ck_assert_int_eq(long_reply_seen, 1);
    ck_assert_int_eq(long_text, 1);
    rec_free(&r);
}
END_TEST

/* A command line longer than the parser keeps: kept part, truncated. */
START_TEST(test_truncated_command)
{
    static char line[5000];
    struct rec r;

    memcpy(line, "MAIL FROM:<", 11);
    memset(line + 11, 'x', 4000);
    memcpy(line + 4011, ">\r\n", 4);
    rec_init(&r, STOP_NEVER, 1);
    feed_piece(&r, FG_S2C, "220 hi\r\n", 8);
    feed_piece(&r, FG_C2S, line, strlen(line));
    ck_assert_uint_eq(r.nev, 3);
    ck_assert_int_eq(r.ev[1].type, FG_SMTP_EV_VIOLATION);
    ck_assert_int_eq(r.ev[1].violation, FG_VIOL_LONG_COMMAND);
    ck_assert_int_eq(r.ev[1].truncated, 1);
    ck_assert_int_eq(r.ev[2].type, FG_SMTP_EV_COMMAND);
    ck_assert_int_eq(r.ev[2].verb, FG_VERB_MAIL);
    ck_assert_int_eq(r.ev[2].truncated, 1);
    ck_assert_uint_eq(r.ev[2].str_len, FG_SMTP_LINE_MAX);
    ck_assert_int_eq(memcmp(r.ev[2].str, line, FG_SMTP_LINE_MAX), 0);
    ck_assert_uint_eq(r.ev[2].off, strlen(line));
    rec_free(&r);
}
END_TEST

/* 510 octets + CRLF = 512 is allowed; 511 + CRLF is not (§4.5.3.1.4). */
START_TEST(test_command_limit)
{
    static char line[600];
    for (size_t len = 509; len <= 512; len++) {
        struct rec r;
        int viol = 0;
        memcpy(line, "NOOP ", 5);
        memset(line + 5, 'n', len - 5);
        memcpy(line + len, "\r\n", 2);
        rec_init(&r, STOP_NEVER, 1);
        feed_piece(&r, FG_C2S, line, len + 2);
        for (size_t i = 0; i < r.nev; i++)
            viol += r.ev[i].type == FG_SMTP_EV_VIOLATION;
        ck_assert_int_eq(viol, len + 2 > 512);
        ck_assert_int_eq(r.ev[r.nev - 1].type, FG_SMTP_EV_COMMAND);
        ck_assert_uint_eq(r.ev[r.nev - 1].str_len, len);
        rec_free(&r);
    }
}
END_TEST

START_TEST(test_early_and_unsolicited)
{
    expect_events(early, "C COMMAND EHLO/EHLO #1 EHLO early.test\n"
                         "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                         "S REPLY 250/1 command EHLO#1 250 ok\\r\\n\n"
                         "C COMMAND MAIL/MAIL #1 MAIL FROM:<a@x.test>\n"
                         "S REPLY 250/1 command MAIL#1 250 ok\\r\\n\n"
                         "C COMMAND RCPT/RCPT #1 RCPT TO:<b@y.test>\n"
                         "S REPLY 250/1 command RCPT#1 250 ok\\r\\n\n"
                         /* body sent before the 354: parsed as commands */
                         "C COMMAND DATA/DATA #1 DATA\n"
                         "C COMMAND OTHER/SUBJECT: #1 pipe Subject: early\n"
                         "C COMMAND OTHER/ #2 pipe \n"
                         "C COMMAND OTHER/BODY #3 pipe body\n"
                         "C COMMAND OTHER/. #4 pipe .\n"
                         "S REPLY 354/1 command DATA#1 354 go\\r\\n\n"
                         /* the 354 makes the next line the body */
                         "C DATA_BEGIN \n"
                         "C DATA QUIT\\r\\n\n"
                         "C EOD \n"
                         "S REPLY 250/1 command OTHER#1 250 ok\\r\\n\n"
                         "S REPLY 421/1 command OTHER#2 421 shutting down\\r\\n\n"
                         "S REPLY 221/1 command OTHER#3 221 bye\\r\\n\n");
}
END_TEST

START_TEST(test_rejected_data)
{
    expect_events(rejected, "S REPLY 220/1 greeting OTHER#0 220 mx.test ESMTP\\r\\n\n"
                            "C COMMAND HELO/HELO #1 HELO c.test\n"
                            "S REPLY 250/1 command HELO#1 250 mx.test\\r\\n\n"
                            "C COMMAND DATA/DATA #1 DATA\n"
                            "S REPLY 503/1 command DATA#1 503 need MAIL\\r\\n\n"
                            "C COMMAND OTHER/LINE #1 line\n"
                            "C COMMAND OTHER/. #2 pipe .\n"
                            "S REPLY 500/1 command OTHER#1 500 what\\r\\n\n"
                            "S REPLY 500/1 command OTHER#2 500 what\\r\\n\n");
}
END_TEST

START_TEST(test_unsolicited)
{
    static const struct seg segs[] = {
        S("220 mx\r\n"), S("421 idle\r\n"), C("NOOP\r\n"), S("250 ok\r\n250 extra\r\n"), END,
    };
    expect_events(segs, "S REPLY 220/1 greeting OTHER#0 220 mx\\r\\n\n"
                        "S REPLY 421/1 unsolicited OTHER#0 421 idle\\r\\n\n"
                        "C COMMAND NOOP/NOOP #1 NOOP\n"
                        "S REPLY 250/1 command NOOP#1 250 ok\\r\\n\n"
                        "S REPLY 250/1 unsolicited OTHER#0 250 extra\\r\\n\n");
}
END_TEST

/* Verb parsing: case, arguments, unknown verbs, a bare code reply. */
START_TEST(test_verbs)
{
    static const struct seg segs[] = {
        S("220\r\n"),
        C("ehlo x\r\nMail From:<a>\r\nXCLIENT ADDR=1.2.3.4\r\nAVERYLONGVERBNAMEHERE x\r\n"),
        S("250 a\r\n250 b\r\n250 c\r\n250 d\r\n"),
        END,
    };
    expect_events(segs, "S REPLY 220/1 greeting OTHER#0 220\\r\\n\n"
                        "C COMMAND EHLO/EHLO #1 ehlo x\n"
                        "C COMMAND MAIL/MAIL #1 pipe Mail From:<a>\n"
                        "C COMMAND OTHER/XCLIENT #1 pipe XCLIENT ADDR=1.2.3.4\n"
                        "C COMMAND OTHER/AVERYLONGVERBNA #2 pipe AVERYLONGVERBNAMEHERE x\n"
                        "S REPLY 250/1 command EHLO#1 250 a\\r\\n\n"
                        "S REPLY 250/1 command MAIL#1 250 b\\r\\n\n"
                        "S REPLY 250/1 command OTHER#1 250 c\\r\\n\n"
                        "S REPLY 250/1 command OTHER#2 250 d\\r\\n\n");
}
END_TEST

/* The argument is everything after the verb and one space. */
START_TEST(test_command_fields)
{
    struct rec r;
    rec_init(&r, STOP_NEVER, 1);
    feed_piece(&r, FG_C2S, "RCPT TO:<a@b> NOTIFY=NEVER\r\n", 28);
    ck_assert_uint_eq(r.nev, 1);
    ck_assert_str_eq(r.ev[0].str, "RCPT TO:<a@b> NOTIFY=NEVER");
    ck_assert_str_eq(r.ev[0].verb_text, "RCPT");
    ck_assert_uint_eq(r.ev[0].off, 28);
    rec_free(&r);
}
END_TEST

/* A stop at each event returns its end; feeding the rest later resumes. */
struct stopper {
    struct fg_smtp_parser p;
    int stop_on;
    size_t last_end;
    int ntypes[16];
};

static int stop_cb(void *ud, const struct fg_smtp_event *ev)
{
    struct stopper *s = ud;
    s->ntypes[ev->type]++;
    s->last_end = ev->end;
    return (int)ev->type == s->stop_on;
}

START_TEST(test_stop_points)
{
    const char *c2s = "DATA\r\nbody line\r\n.\r\nQUIT\r\n";
    struct stopper s;
    size_t n;

    memset(&s, 0, sizeof(s));
    fg_smtp_parser_init(&s.p, stop_cb, &s);
    s.stop_on = FG_SMTP_EV_DATA_BEGIN;
    fg_smtp_parser_feed(&s.p, FG_S2C, "220 x\r\n", 7);
    n = fg_smtp_parser_feed(&s.p, FG_C2S, c2s, 6);
    ck_assert_uint_eq(n, 6);
    fg_smtp_parser_feed(&s.p, FG_S2C, "354 go\r\n", 8);
    /* Stops before the first body octet. */
    n = fg_smtp_parser_feed(&s.p, FG_C2S, c2s + 6, strlen(c2s) - 6);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_DATA_BEGIN], 1);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_DATA], 0);
    s.stop_on = FG_SMTP_EV_END_OF_DATA;
    n = fg_smtp_parser_feed(&s.p, FG_C2S, c2s + 6, strlen(c2s) - 6);
    ck_assert_uint_eq(n, strlen("body line\r\n.\r\n"));
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_DATA_BEGIN], 1);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_DATA], 1);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_COMMAND], 1);
    n = fg_smtp_parser_feed(&s.p, FG_C2S, c2s + 6 + n, strlen(c2s) - 6 - n);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_COMMAND], 2);
    ck_assert_uint_eq(fg_smtp_parser_queued(&s.p, FG_C2S), 0);
}
END_TEST

/* A stop at the first of two events at one byte holds the second until the
 * next feed, even an empty one. */
START_TEST(test_queued_events)
{
    struct stopper s;
    size_t n;

    memset(&s, 0, sizeof(s));
    fg_smtp_parser_init(&s.p, stop_cb, &s);
    s.stop_on = FG_SMTP_EV_VIOLATION;
    n = fg_smtp_parser_feed(&s.p, FG_C2S, "NOOP\nRSET\r\n", 11);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_COMMAND], 0);
    ck_assert_uint_eq(fg_smtp_parser_queued(&s.p, FG_C2S), 1);
    ck_assert_uint_eq(fg_smtp_parser_queued(&s.p, FG_S2C), 0);
    n = fg_smtp_parser_feed(&s.p, FG_C2S, NULL, 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_COMMAND], 1);
    ck_assert_uint_eq(s.last_end, 0);
    ck_assert_uint_eq(fg_smtp_parser_queued(&s.p, FG_C2S), 0);
    n = fg_smtp_parser_feed(&s.p, FG_C2S, "RSET\r\n", 6);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(s.ntypes[FG_SMTP_EV_COMMAND], 2);
}
END_TEST

/* More outstanding commands than the ring holds: the oldest still match. */
START_TEST(test_pending_overflow)
{
    struct rec r;
    unsigned replies = 0, unsolicited = 0;

    rec_init(&r, STOP_NEVER, 1);
    feed_piece(&r, FG_S2C, "220 x\r\n", 7);
    for (int i = 0; i < FG_SMTP_PENDING_MAX + 10; i++)
        feed_piece(&r, FG_C2S, "NOOP\r\n", 6);
    for (int i = 0; i < FG_SMTP_PENDING_MAX + 10; i++)
        feed_piece(&r, FG_S2C, "250 ok\r\n", 8);
    for (size_t i = 0; i < r.nev; i++) {
        if (r.ev[i].type != FG_SMTP_EV_REPLY || r.ev[i].answers == FG_ANS_GREETING)
            continue;
        if (r.ev[i].answers == FG_ANS_UNSOLICITED) {
            unsolicited++;
            continue;
        }
        replies++;
        ck_assert_uint_eq(r.ev[i].answers_seq, replies);
    }
    ck_assert_uint_eq(replies, FG_SMTP_PENDING_MAX);
    ck_assert_uint_eq(unsolicited, 10);
    rec_free(&r);
}
END_TEST

START_TEST(test_token_find)
{
    char out[FG_TOKEN_MAX];
    const char *b1 = "From: a\r\nX-Faultgate-Token:  abc-123 \r\nSubject: x\r\n\r\n";
    const char *b2 = "Subject: x\r\nx-faultgate-token:tok\n\r\nbody";
    const char *b3 = "Subject: X-Faultgate-Token: no\r\n\r\nbody\r\n";
    const char *b4 = "Subject: x\r\nX-Faultgate-Token: partial";
    const char *b5 = "X-Faultgate-Token:\r\nX-Faultgate-Tokens: no\r\n";
    const char *b6 = "X-Faultgate-Token : spaced\r\n";

    ck_assert_uint_eq(fg_smtp_token_find(b1, strlen(b1), out, sizeof(out)), 7);
    ck_assert_str_eq(out, "abc-123");
    ck_assert_uint_eq(fg_smtp_token_find(b2, strlen(b2), out, sizeof(out)), 3);
    ck_assert_str_eq(out, "tok");
    ck_assert_uint_eq(fg_smtp_token_find(b3, strlen(b3), out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
    /* The prefix may end inside the value: not found yet. */
    ck_assert_uint_eq(fg_smtp_token_find(b4, strlen(b4), out, sizeof(out)), 0);
    ck_assert_uint_eq(fg_smtp_token_find(b5, strlen(b5), out, sizeof(out)), 0);
    ck_assert_uint_eq(fg_smtp_token_find(b6, strlen(b6), out, sizeof(out)), 6);
    ck_assert_str_eq(out, "spaced");
    /* Too small an output buffer truncates and terminates. */
    ck_assert_uint_eq(fg_smtp_token_find(b1, strlen(b1), out, 4), 3);
    ck_assert_str_eq(out, "abc");
    ck_assert_uint_eq(fg_smtp_token_find(b1, strlen(b1), out, 0), 0);
    ck_assert_uint_eq(fg_smtp_token_find(b1, 0, out, sizeof(out)), 0);
}
END_TEST

START_TEST(test_names)
{
    ck_assert_int_eq(fg_smtp_verb_lookup("rcpt", 4), FG_VERB_RCPT);
    ck_assert_int_eq(fg_smtp_verb_lookup("STARTTLS", 8), FG_VERB_STARTTLS);
    ck_assert_int_eq(fg_smtp_verb_lookup("STARTTL", 7), FG_VERB_OTHER);
    ck_assert_int_eq(fg_smtp_verb_lookup("", 0), FG_VERB_OTHER);
    ck_assert_int_eq(fg_smtp_verb_lookup("DATAX", 4), FG_VERB_DATA);
    for (int v = 1; v < FG_VERB__COUNT; v++) {
        const char *n = fg_smtp_verb_name((enum fg_smtp_verb)v);
        ck_assert_int_eq(fg_smtp_verb_lookup(n, strlen(n)), v);
    }
    ck_assert_str_eq(fg_smtp_verb_name(FG_VERB_OTHER), "OTHER");
    ck_assert_str_eq(fg_smtp_violation_name(FG_VIOL_BARE_LF), "bare-lf");
    ck_assert_str_eq(fg_smtp_violation_name(FG_VIOL_REPLY_MISMATCH), "reply-mismatch");
    ck_assert_str_eq(fg_smtp_violation_name((enum fg_smtp_violation)99), "?");
}
END_TEST

/* A reply longer than FG_SMTP_REPLY_MAX keeps its first octets. */
START_TEST(test_reply_overflow)
{
    struct rec r;
    char line[64];

    rec_init(&r, STOP_NEVER, 1);
    feed_piece(&r, FG_S2C, "220 x\r\n", 7);
    feed_piece(&r, FG_C2S, "EHLO x\r\n", 8);
    for (int i = 0; i < 300; i++) {
        int n = snprintf(line, sizeof(line), "250-extension-number-%03d\r\n", i);
        feed_piece(&r, FG_S2C, line, (size_t)n);
    }
    feed_piece(&r, FG_S2C, "250 last\r\n", 10);
    ck_assert_uint_eq(r.nev, 3);
    ck_assert_int_eq(r.ev[2].type, FG_SMTP_EV_REPLY);
    ck_assert_uint_eq(r.ev[2].nlines, 301);
    ck_assert_int_eq(r.ev[2].truncated, 1);
    ck_assert_uint_eq(r.ev[2].str_len, FG_SMTP_REPLY_MAX);
    ck_assert_int_eq(memcmp(r.ev[2].str, "250-extension-number-000\r\n", 26), 0);
    ck_assert_int_eq(r.ev[2].answers_verb, FG_VERB_EHLO);
    /* The next reply starts clean. */
    feed_piece(&r, FG_C2S, "NOOP\r\n", 6);
    feed_piece(&r, FG_S2C, "250 ok\r\n", 8);
    ck_assert_int_eq(r.ev[r.nev - 1].truncated, 0);
    ck_assert_str_eq(r.ev[r.nev - 1].str, "250 ok\r\n");
    rec_free(&r);
}
END_TEST

/* BDAT arguments that are not "n [LAST]" start no chunk. */
START_TEST(test_bdat_invalid)
{
    static const struct seg segs[] = {
        S("220 x\r\n"),
        C("BDAT\r\nBDAT x\r\nBDAT 5 NOTLAST\r\nBDAT 99999999999999999999999\r\nBDAT 2 last\r\nab"
          "NOOP\r\n"),
        S("501 a\r\n501 b\r\n501 c\r\n501 d\r\n250 e\r\n250 f\r\n"),
        END,
    };
    expect_events(segs, "S REPLY 220/1 greeting OTHER#0 220 x\\r\\n\n"
                        "C COMMAND BDAT/BDAT #1 BDAT\n"
                        "C COMMAND BDAT/BDAT #2 pipe BDAT x\n"
                        "C COMMAND BDAT/BDAT #3 pipe BDAT 5 NOTLAST\n"
                        "C COMMAND BDAT/BDAT #4 pipe BDAT 99999999999999999999999\n"
                        "C COMMAND BDAT/BDAT #5 pipe BDAT 2 last\n"
                        "C BDAT_DATA ab\n"
                        "C BDAT_END last\n"
                        "C COMMAND NOOP/NOOP #1 pipe NOOP\n"
                        "S REPLY 501/1 command BDAT#1 501 a\\r\\n\n"
                        "S REPLY 501/1 command BDAT#2 501 b\\r\\n\n"
                        "S REPLY 501/1 command BDAT#3 501 c\\r\\n\n"
                        "S REPLY 501/1 command BDAT#4 501 d\\r\\n\n"
                        "S REPLY 250/1 bdat BDAT#5 last 250 e\\r\\n\n"
                        "S REPLY 250/1 command NOOP#1 250 f\\r\\n\n");
}
END_TEST

/* Random dialogues built from protocol fragments and stray octets: every
 * split and every stop pattern gives the events of the whole feed. */
static const char *const c2s_frags[] = {
    "MAIL FROM:<a@x>\r\n",
    "RCPT TO:<b@y>\r\n",
    "DATA\r\n",
    "BDAT 5\r\n",
    "BDAT 3 LAST\r\n",
    "BDAT 0 LAST\r\n",
    "NOOP\r\n",
    ".",
    "..",
    "\r",
    "\n",
    "\r\n",
    "\r\n.\r\n",
    "x",
    "hello",
    "\0",
    "\n.\r\n",
    ".\r",
    "STARTTLS\r\n",
};
static const char *const s2c_frags[] = {
    "220 ok\r\n", "354 go\r\n", "354 go\r\n", "250-a\r\n", "250 b\r\n", "251 c\r\n",
    "\r",         "\n",         "x",          "5",         "354",       " ",
    "-",          "250 ok\r\n", "550 no\r\n", "\r\n",
};

static size_t frag_len(const char *f)
{
    return f[0] ? strlen(f) : 1; /* "\0" is one NUL octet */
}

static struct seg *random_dialogue(uint64_t seed, char **store)
{
    struct fg_rng rng;
    size_t nseg, total = 0;
    struct seg *segs;
    char *buf;

    fg_rng_seed(&rng, seed);
    nseg = 2 + (size_t)(fg_rng_next(&rng) % 20);
    segs = fg_calloc(nseg + 1, sizeof(*segs));
    buf = fg_malloc(nseg * 40 * 1300);
    *store = buf;
    for (size_t i = 0; i < nseg; i++) {
        enum fg_dir dir = fg_rng_next(&rng) % 2 ? FG_S2C : FG_C2S;
        size_t nfrag = 1 + (size_t)(fg_rng_next(&rng) % 40), len = 0;
        char *start = buf + total;
        for (size_t k = 0; k < nfrag; k++) {
            const char *fr;
            size_t fl;
            if (fg_rng_next(&rng) % 50 == 0) {
                /* an over-long line */
                fl = 500 + (size_t)(fg_rng_next(&rng) % 700);
                memset(start + len, 'L', fl);
                len += fl;
                continue;
            }
            if (dir == FG_C2S) {
                fr = c2s_frags[fg_rng_next(&rng) % (sizeof(c2s_frags) / sizeof(c2s_frags[0]))];
                /* keep STARTTLS rare so most runs go on in plain text */
                if (strcmp(fr, "STARTTLS\r\n") == 0 && fg_rng_next(&rng) % 4)
                    fr = "RSET\r\n";
            } else {
                fr = s2c_frags[fg_rng_next(&rng) % (sizeof(s2c_frags) / sizeof(s2c_frags[0]))];
            }
            fl = frag_len(fr);
            memcpy(start + len, fr, fl);
            len += fl;
        }
        segs[i].dir = dir;
        segs[i].s = start;
        segs[i].len = len;
        total += len;
    }
    return segs;
}

START_TEST(test_random_dialogues)
{
    memset(type_seen, 0, sizeof(type_seen));
    for (uint64_t seed = 1; seed <= 150; seed++) {
        char *store;
        struct seg *segs = random_dialogue(seed * 1000003 + (uint64_t)_i, &store);
        char *ref = record(segs, SPLIT_WHOLE, 0, 0, 1, STOP_NEVER, 1);
        char *s;
        for (uint64_t k = 1; k <= 4; k++) {
            s = record(segs, SPLIT_RANDOM, 0, 0, seed * 31 + k, k % 2 ? STOP_RANDOM : STOP_NEVER,
                       1);
            ck_assert_msg(strcmp(ref, s) == 0, "seed %" PRIu64 "/%" PRIu64 ":\n%s\nwhole:\n%s",
                          seed, k, s, ref);
            free(s);
        }
        if (seed % 10 == 0) { /* the slowest: a feed per octet */
            s = record(segs, SPLIT_BYTES, 0, 0, 1, STOP_ALWAYS, 1);
            ck_assert_msg(strcmp(ref, s) == 0, "seed %" PRIu64 " stop always:\n%s", seed, s);
            free(s);
        }
        free(ref);
        free(store);
        free(segs);
    }
    for (int t = 0; t <= FG_SMTP_EV_VIOLATION; t++)
        ck_assert_msg(type_seen[t] > 0, "event type %s never produced", type_name(t));
}
END_TEST

/* A server-side user feeds its own replies from the callback. */
struct server {
    struct fg_smtp_parser p;
    char log[1024];
    size_t n;
};

static int server_cb(void *ud, const struct fg_smtp_event *ev)
{
    struct server *sv = ud;
    const char *reply = NULL;

    if (ev->type == FG_SMTP_EV_COMMAND) {
        sv->n +=
            (size_t)snprintf(sv->log + sv->n, sizeof(sv->log) - sv->n, "cmd %s;", ev->verb_text);
        if (ev->verb == FG_VERB_DATA)
            reply = "354 go\r\n";
        else if (ev->verb == FG_VERB_STARTTLS)
            reply = "220 tls\r\n";
        else
            reply = "250 ok\r\n";
    } else if (ev->type == FG_SMTP_EV_END_OF_DATA) {
        sv->n += (size_t)snprintf(sv->log + sv->n, sizeof(sv->log) - sv->n, "eod;");
        reply = "250 queued\r\n";
    } else if (ev->type == FG_SMTP_EV_DATA) {
        sv->n +=
            (size_t)snprintf(sv->log + sv->n, sizeof(sv->log) - sv->n, "data %zu;", ev->data_len);
    } else if (ev->type == FG_SMTP_EV_REPLY) {
        sv->n += (size_t)snprintf(sv->log + sv->n, sizeof(sv->log) - sv->n, "reply %d %s;",
                                  ev->code, fg_smtp_verb_name(ev->answers_verb));
    } else if (ev->type == FG_SMTP_EV_TLS_START) {
        sv->n += (size_t)snprintf(sv->log + sv->n, sizeof(sv->log) - sv->n, "tls;");
    }
    if (reply)
        ck_assert_uint_eq(fg_smtp_parser_feed(&sv->p, FG_S2C, reply, strlen(reply)), strlen(reply));
    return 0;
}

START_TEST(test_reentrant_server)
{
    const char *in = "MAIL FROM:<a>\r\nDATA\r\nbody\r\n.\r\nSTARTTLS\r\n\x16\x03garbage\r\n";
    struct server sv;

    memset(&sv, 0, sizeof(sv));
    fg_smtp_parser_init(&sv.p, server_cb, &sv);
    fg_smtp_parser_feed(&sv.p, FG_S2C, "220 hi\r\n", 8);
    ck_assert_uint_eq(fg_smtp_parser_feed(&sv.p, FG_C2S, in, strlen(in)), strlen(in));
    ck_assert_str_eq(sv.log, "reply 220 OTHER;cmd MAIL;reply 250 MAIL;cmd DATA;reply 354 DATA;"
                             "data 6;eod;reply 250 DATA;cmd STARTTLS;reply 220 STARTTLS;tls;");
    ck_assert(fg_smtp_parser_is_tls(&sv.p));
}
END_TEST

static Suite *smtp_suite(void)
{
    Suite *s = suite_create("smtp");
    TCase *tc = tcase_create("dialogues");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_session);
    tcase_add_test(tc, test_session_offsets);
    tcase_add_test(tc, test_pipelined);
    tcase_add_test(tc, test_bdat);
    tcase_add_test(tc, test_starttls);
    tcase_add_test(tc, test_starttls_refused);
    tcase_add_test(tc, test_violations);
    tcase_add_test(tc, test_long_lines);
    tcase_add_test(tc, test_truncated_command);
    tcase_add_test(tc, test_command_limit);
    tcase_add_test(tc, test_early_and_unsolicited);
    tcase_add_test(tc, test_rejected_data);
    tcase_add_test(tc, test_unsolicited);
    tcase_add_test(tc, test_verbs);
    tcase_add_test(tc, test_command_fields);
    tcase_add_test(tc, test_stop_points);
    tcase_add_test(tc, test_queued_events);
    tcase_add_test(tc, test_pending_overflow);
    tcase_add_test(tc, test_token_find);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_reply_overflow);
    tcase_add_test(tc, test_bdat_invalid);
    tcase_add_test(tc, test_reentrant_server);
    suite_add_tcase(s, tc);

    tc = tcase_create("splits");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_split_invariance, 0, NDIALOGUES);
    tcase_add_loop_test(tc, test_stop_resume, 0, NDIALOGUES);
    tcase_add_loop_test(tc, test_random_dialogues, 0, 4);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    long_segs();
    SRunner *sr = srunner_create(smtp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
