/* faultgate/smtp.h - the one incremental SMTP parser.
 *
 * One parser watches one TCP connection, both directions.  It is shared by
 * the proxy (live triggers), the fake MTA and the injector (their own
 * protocol state), refgw, and the analyzer (timelines from a trace).  It
 * accepts any split of the byte stream, never allocates after
 * fg_smtp_parser_init, and reports what it recognises as events.
 *
 * Client-to-server bytes are command lines (RFC 5321 §4.1.1), the DATA body
 * after a 354 up to CRLF.CRLF (§4.1.1.4, §4.5.2), or BDAT chunks counted in
 * octets (RFC 3030 §2).  Server-to-client bytes are replies, single or
 * multi-line (§4.2.1).  Replies are matched in order to the commands they
 * answer (pipelining, RFC 2920 §3.1), so each reply knows what it answers:
 * the greeting, a verb, the end of data, or a BDAT chunk.  After a 220
 * reply to STARTTLS both directions are TLS and are no longer parsed.
 */
#ifndef FAULTGATE_SMTP_H
#define FAULTGATE_SMTP_H

#include <stddef.h>
#include <stdint.h>

enum fg_dir {
    FG_C2S = 0, /* client to server */
    FG_S2C = 1  /* server to client */
};

/* Verbs the parser knows by name; anything else is FG_VERB_OTHER with the
 * verb text kept in the event. */
#define FG_SMTP_VERB_MAP(XX)                                                                       \
    XX(OTHER, "")                                                                                  \
    XX(HELO, "HELO")                                                                               \
    XX(EHLO, "EHLO")                                                                               \
    XX(MAIL, "MAIL")                                                                               \
    XX(RCPT, "RCPT")                                                                               \
    XX(DATA, "DATA")                                                                               \
    XX(BDAT, "BDAT")                                                                               \
    XX(RSET, "RSET")                                                                               \
    XX(NOOP, "NOOP")                                                                               \
    XX(QUIT, "QUIT")                                                                               \
    XX(VRFY, "VRFY")                                                                               \
    XX(EXPN, "EXPN")                                                                               \
    XX(HELP, "HELP")                                                                               \
    XX(STARTTLS, "STARTTLS")                                                                       \
    XX(AUTH, "AUTH")

enum fg_smtp_verb {
#define XX(name, text) FG_VERB_##name,
    FG_SMTP_VERB_MAP(XX)
#undef XX
        FG_VERB__COUNT
};

/* fg_smtp_verb_name - "EHLO", ...; "OTHER" for FG_VERB_OTHER.
 * fg_smtp_verb_lookup - case-insensitive; FG_VERB_OTHER if unknown. */
const char *fg_smtp_verb_name(enum fg_smtp_verb v);
enum fg_smtp_verb fg_smtp_verb_lookup(const char *s, size_t len);

/* What a reply answers. */
enum fg_smtp_answers {
    FG_ANS_GREETING,    /* the server's first reply */
    FG_ANS_COMMAND,     /* a command line; see answers_verb */
    FG_ANS_END_OF_DATA, /* the CRLF.CRLF that ended a DATA body */
    FG_ANS_BDAT,        /* a BDAT chunk (LAST or not) */
    FG_ANS_UNSOLICITED  /* a reply with nothing outstanding (e.g. 421 on idle) */
};

/* Event positions (ev->end, ev->stream_off):
 * - COMMAND, REPLY, END_OF_DATA, BDAT_END, TLS_START: just past their last
 *   octet (the LF; the last chunk octet; the 220 reply's LF).
 * - DATA_BEGIN: the first octet of the body, before it (delivered when that
 *   octet arrives; for an empty body it is the terminator's dot).
 * - DATA, BDAT_DATA: just past the last octet reported.
 * - VIOLATION: just past the offending octet; a bare CR is known only at
 *   the next octet, so BARE_CR sits just past the CR.  Violations of a
 *   line come before that line's COMMAND or REPLY event.
 * Events of one position come in this order; the proxy splits there. */
enum fg_smtp_ev_type {
    FG_SMTP_EV_COMMAND,    /* a complete command line (C2S) */
    FG_SMTP_EV_REPLY,      /* a complete reply, all its lines (S2C) */
    FG_SMTP_EV_DATA_BEGIN, /* the body starts (after a 354) (C2S) */
    /* Body octets, still dot-stuffed, up to and including the CRLF before
     * the terminating ".": they point into the caller's buffer, except a
     * "." or ".\r" held back across feeds (it might have begun the
     * terminator), which points to a constant. */
    FG_SMTP_EV_DATA,
    FG_SMTP_EV_END_OF_DATA, /* the CRLF.CRLF that ends the body (C2S) */
    FG_SMTP_EV_BDAT_DATA,   /* BDAT chunk bytes (C2S) */
    FG_SMTP_EV_BDAT_END,    /* the last octet of one BDAT chunk (C2S) */
    FG_SMTP_EV_TLS_START,   /* 220 to STARTTLS seen: the rest is opaque */
    FG_SMTP_EV_VIOLATION    /* a syntax problem; see violation */
};

enum fg_smtp_violation {
    FG_VIOL_NONE = 0,
    /* Bare CR/LF are reported in command lines, reply lines and DATA
     * bodies (not BDAT chunks).  A bare LF ends a command or reply line
     * but never a body line: "\n.\r\n" does not end DATA (§4.1.1.4). */
    FG_VIOL_BARE_LF,       /* LF not preceded by CR (RFC 5321 §2.3.8) */
    FG_VIOL_BARE_CR,       /* CR not followed by LF (RFC 5321 §2.3.8) */
    FG_VIOL_LONG_COMMAND,  /* command line over 512 octets (§4.5.3.1.4) */
    FG_VIOL_LONG_REPLY,    /* reply line over 512 octets (§4.5.3.1.5) */
    FG_VIOL_LONG_TEXT,     /* body line over 1000 octets (§4.5.3.1.6) */
    FG_VIOL_BAD_REPLY,     /* reply line not "ddd" followed by SP, '-' or CRLF */
    FG_VIOL_REPLY_MISMATCH /* continuation line with another code (§4.2.1) */
};

const char *fg_smtp_violation_name(enum fg_smtp_violation v);

/* The longest line the parser keeps whole; longer lines are reported
 * truncated (and flagged as violations).  Replies keep up to
 * FG_SMTP_REPLY_MAX octets of text across all their lines. */
#define FG_SMTP_LINE_MAX 1024
#define FG_SMTP_REPLY_MAX 4096
#define FG_SMTP_PENDING_MAX 256 /* outstanding commands tracked for pipelining */

struct fg_smtp_event {
    enum fg_smtp_ev_type type;
    enum fg_dir dir;
    /* Index into the buffer given to fg_smtp_parser_feed just past the last
     * byte of this event (for DATA/BDAT_DATA, past the last byte reported).
     * The proxy splits forwarding here. */
    size_t end;
    /* Offset of that same point in the direction's whole stream. */
    uint64_t stream_off;

    /* COMMAND: the line without CRLF (may be truncated), verb, argument. */
    const char *line;
    size_t line_len;
    enum fg_smtp_verb verb;
    char verb_text[16]; /* upper-cased verb as sent, for OTHER */
    const char *arg;    /* after the verb and one space; "" if none */
    size_t arg_len;
    unsigned verb_seq; /* 1 for the first RCPT on this connection, ... */
    int pipelined;     /* sent while earlier commands were unanswered */

    /* REPLY: code, number of lines, all lines with their CRLFs. */
    int code;
    unsigned nlines;
    const char *text;
    size_t text_len;
    enum fg_smtp_answers answers;
    /* COMMAND: that command; END_OF_DATA: DATA and the DATA's verb_seq;
     * BDAT: BDAT and the BDAT's verb_seq; otherwise OTHER and 0. */
    enum fg_smtp_verb answers_verb;
    unsigned answers_seq;

    /* DATA / BDAT_DATA: bytes of the body within the current feed buffer. */
    const char *data;
    size_t data_len;
    /* BDAT_END: whether the chunk had LAST; REPLY answering BDAT: whether
     * that chunk had LAST (the reply to the end of data, RFC 3030 §2). */
    int last;

    /* VIOLATION */
    enum fg_smtp_violation violation;
    int truncated; /* COMMAND/REPLY line longer than the parser keeps */
};

/* Return non-zero from the callback to stop the feed right after this event;
 * fg_smtp_parser_feed then returns ev->end and the caller feeds the rest
 * later. */
typedef int (*fg_smtp_event_cb)(void *ud, const struct fg_smtp_event *ev);

/* Several events can end at the same byte (a violation and its command, a
 * reply and TLS_START).  When the callback stops at one of them, the others
 * are held here and delivered first by the next feed of that direction
 * (with end 0); DATA and BDAT_DATA are never held. */
#define FG_SMTP_QUEUE_MAX 8

/* Per-direction state; private to smtp.c. */
struct fg_smtp_dirstate {
    int state;
    char line[FG_SMTP_LINE_MAX];
    size_t line_len;
    size_t line_total; /* octets of the current line, kept or not */
    uint64_t off;      /* stream offset of the next byte fed */
    int prev_cr;
    struct fg_smtp_event queue[FG_SMTP_QUEUE_MAX];
    unsigned queue_len;
};

struct fg_smtp_parser {
    fg_smtp_event_cb cb;
    void *ud;
    struct fg_smtp_dirstate d[2];
    /* reply accumulation */
    char reply[FG_SMTP_REPLY_MAX];
    size_t reply_len;
    unsigned reply_lines;
    int reply_code;
    int reply_truncated;
    /* outstanding commands, oldest first (ring) */
    struct {
        unsigned char answers; /* enum fg_smtp_answers */
        unsigned char verb;    /* enum fg_smtp_verb */
        unsigned seq;
        unsigned char bdat_last;
    } pending[FG_SMTP_PENDING_MAX];
    unsigned pend_head, pend_len;
    int greeted;        /* greeting reply seen */
    int data_pending;   /* DATA sent, 354 expected */
    int in_data;        /* C2S is a DATA body */
    int data_started;   /* DATA_BEGIN emitted for this body */
    int body_state;     /* CRLF.CRLF matcher state */
    uint64_t bdat_left; /* octets left in the current BDAT chunk */
    int bdat_last;
    int tls;              /* STARTTLS done: stop parsing */
    int starttls_pending; /* STARTTLS sent, reply not seen yet */
    unsigned verb_count[FG_VERB__COUNT];
    int data_go;           /* 354 seen: body starts at the next C2S line start */
    size_t body_line;      /* octets in the current body line, stuffing dot excluded */
    int body_long;         /* LONG_TEXT already reported for this body line */
    unsigned data_seq;     /* verb_seq of the DATA whose body is being read */
    unsigned bdat_seq;     /* verb_seq of the BDAT whose chunk is being read */
    uint64_t pend_dropped; /* commands not tracked because the ring was full */
};

void fg_smtp_parser_init(struct fg_smtp_parser *p, fg_smtp_event_cb cb, void *ud);

/* fg_smtp_parser_feed - parse len bytes of direction dir.  Returns the
 * number of bytes consumed: len, or less when the callback asked to stop.
 * A callback may feed the other direction (a server feeding its own reply
 * to a command it is told about): a 354 fed that way turns the rest of the
 * client's buffer into the body. */
size_t fg_smtp_parser_feed(struct fg_smtp_parser *p, enum fg_dir dir, const char *buf, size_t len);

/* fg_smtp_parser_is_tls - non-zero once STARTTLS has taken effect. */
int fg_smtp_parser_is_tls(const struct fg_smtp_parser *p);

/* fg_smtp_parser_queued - events of direction dir held after the callback
 * stopped a feed (see FG_SMTP_QUEUE_MAX).  A feed of that direction delivers
 * them first, even an empty one: fg_smtp_parser_feed(p, dir, NULL, 0). */
unsigned fg_smtp_parser_queued(const struct fg_smtp_parser *p, enum fg_dir dir);

/* fg_smtp_token_find - find the faultgate token header value
 * ("X-Faultgate-Token: <value>", name case-insensitive, at a line start
 * anywhere in the prefix, so also in a bounce that quotes the message) in
 * a body prefix; copies it, trimmed and NUL-terminated, into out (cut to
 * outlen - 1).  Returns its length, or 0 if none.  Only a complete line
 * counts: a value the prefix cuts off is not found yet. */
#define FG_TOKEN_HEADER "X-Faultgate-Token"
#define FG_TOKEN_MAX 64
size_t fg_smtp_token_find(const char *body, size_t len, char *out, size_t outlen);

#endif
