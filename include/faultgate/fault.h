/* faultgate/fault.h - faults: what triggers them, what they do, and the
 * engine that decides, deterministically, when each one fires.
 *
 * One-line syntax (the same text is valid in a scenario's `faults:` list as
 * a plain string, and in `faultgate proxy --fault`):
 *
 *     TRIGGER [, SELECTOR]... : ACTION [ARGS...] [, OPTION]...
 *
 *     reply 354: stall
 *     command EHLO, first: close
 *     end-of-data, nth 2: reply 451 4.3.0 try again later
 *     reply-to end-of-data, every: delay 5s
 *     command RCPT #3: reset
 *     reply 2xx, every, p 0.5, once: close c2s
 *     byte c2s 1000: slice 1 pause 10ms
 *     after 2s: blackhole
 *
 * Keywords are case-insensitive; the first ':' ends the trigger part, so
 * reply text may contain ':' (and ',': only a trailing `, replace` is an
 * option).  scenarios/FORMAT.md documents every trigger, selector and
 * action for users; this comment is the contract for the proxy.
 *
 * Triggers: `command VERB [#N]` (the Nth VERB on the connection),
 * `reply CODE` (`250`, or a class `2xx`), `end-of-data` (CRLF.CRLF, or the
 * end of a BDAT LAST chunk), `reply-to end-of-data`, `greeting` (the
 * server's first reply), `starttls` (the server's 220 to STARTTLS: the
 * point where TLS begins, RFC 3207 §4), `connect` (the proxy accepted the
 * connection), `byte c2s|s2c N` (N octets of that direction have been
 * read: the action takes effect between octet N and N+1), `after D` (D
 * after the proxy accepted the connection).  Actions on connect and after
 * apply once the upstream leg is up.
 *
 * Selectors (connection numbers are the proxy's accept order, 1-based):
 *   every (default)  every connection
 *   first            connection 1 only (same as `nth 1`)
 *   nth N            connection N only
 *   from N           connections N, N+1, ...
 *   p X              fire with probability X (0..1), drawn from the run's
 *                    seed; see fg_fault_set_match
 *   once (default)   fire at most once per connection.
 *   each             fire on every matching event.
 *
 * Actions.  The "trigger's direction" is that of the triggering event's
 * bytes (a command or end-of-data: c2s; a reply: s2c; `byte DIR N`: DIR);
 * connect and after have none, and an action that needs one then uses
 * both (corrupt: c2s).  DIR below is c2s, s2c or both.
 *   stall [DIR]       stop reading and forwarding (default both): the
 *                     sender's TCP window fills as with a hung peer; its
 *                     non-blocking writes end in EAGAIN.  A client that
 *                     gives up (FIN or RST) is still noticed and both legs
 *                     are then closed.
 *   blackhole [DIR]   keep reading and discard (default both): the sender's
 *                     writes keep succeeding, nothing arrives, nothing is
 *                     closed.
 *   close [DIR]       FIN towards the chosen side(s) (default both): `c2s` =
 *                     FIN to the server, `s2c` = FIN to the client; nothing
 *                     more is read from that direction's sender (what it
 *                     sends stays unread, so the final close is an RST if
 *                     it sent any, RFC 1122 §4.2.2.13).
 *   half-close [c2s|s2c]  FIN towards one side (default c2s: the server),
 *                     as if that direction's sender had called
 *                     shutdown(SHUT_WR); the sender's later bytes in that
 *                     direction are read and discarded, and the other
 *                     direction flows on until it ends.
 *   reset             RST both sides (uv_tcp_close_reset), once the bytes
 *                     forwarded before it were handed to the kernel.
 *   delay D [DIR]     from the trigger on, every octet of the direction
 *                     (default the trigger's) is forwarded D after it was
 *                     read: a one-way latency per read chunk, order kept;
 *                     the triggering event's own bytes are the first held.
 *   throttle R [DIR]  from the trigger on, forward at most R octets per
 *                     second (`1000`, `64k`, `1MB/s`; k = 1024), token
 *                     bucket with a burst of R/10 (at least 1), starting
 *                     empty.  Default direction: the trigger's.
 *   slice N [pause D] [DIR]  from the trigger on, forward in writes of at
 *                     most N octets (TCP_NODELAY is set, so each is its own
 *                     segment), waiting D between them.  Default direction:
 *                     the trigger's.
 *   limit N [DIR]     from the trigger on, forward N more octets of the
 *                     direction (default both, each counted on its own),
 *                     then close both ways as `close` does.
 *   reply CODE TXT    inject a reply towards the client.  Lines are separated
 *                     by `|` (or the two characters `\n`):
 *                     `reply 451 a|b` sends "451-a\r\n451 b\r\n".  On a reply
 *                     trigger it goes out before the server's reply; with
 *                     `, replace` the server's reply is swallowed instead.  On
 *                     a command or end-of-data trigger it goes out right
 *                     after the server's reply to that command; with
 *                     `, replace` the client's bytes are swallowed and the
 *                     proxy answers in the server's place (after the replies
 *                     to earlier pipelined commands, RFC 2920 §3.1).  On
 *                     other triggers it is sent at once.
 *   drop              swallow the triggering command or reply (command,
 *                     reply, greeting and reply-to end-of-data triggers
 *                     only).  The parser is kept in step: a dropped command
 *                     no longer waits for a reply, so later replies still
 *                     match their commands.
 *   corrupt [at N] [flip|xor HH|set HH] [c2s|s2c]  change one octet: the
 *                     Nth (0-based, default 0) counted from the first octet
 *                     of the triggering event (or from the trigger point for
 *                     connect, after and byte), in the trigger's direction
 *                     (connect/after: c2s).  flip (default) XORs it with
 *                     0xff, xor HH with the hex value HH, set HH replaces it.
 *                     The proxy's parser has seen the original octet.
 *   refuse            (connect only) reset the accepted connection at once:
 *                     RST before any byte, and no upstream connection.
 *   accept-then-close (connect only) FIN at once: the client reads EOF
 *                     before any byte; no upstream connection.
 *   banner-delay D    (connect only) the server's bytes (its greeting
 *                     first) reach the client no earlier than D after the
 *                     client connected; the client's bytes go on.
 * The bytes that complete the triggering event are forwarded before the
 * action takes effect, except for `reply` on a reply trigger, `drop`,
 * `delay`, `throttle`, `slice` and `corrupt`, which act on them.
 * drop, corrupt and reply `, replace` act on the event's bytes still held
 * by the proxy: when the sender wrote a line in pieces, a piece that
 * arrived in an earlier read has already been forwarded.
 */
#ifndef FAULTGATE_FAULT_H
#define FAULTGATE_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/smtp.h"
#include "faultgate/util.h"

enum fg_trig_kind {
    FG_TRIG_COMMAND,
    FG_TRIG_REPLY,
    FG_TRIG_END_OF_DATA,
    FG_TRIG_REPLY_TO_EOD,
    FG_TRIG_GREETING,
    FG_TRIG_CONNECT,
    FG_TRIG_STARTTLS,
    FG_TRIG_OPENING,    /* "opening-command": EHLO or HELO (RFC 5321 §4.1.1.1) */
    FG_TRIG_DATA_START, /* "start-of-data": the 354 to DATA, or the first BDAT
                           command of a transaction (RFC 3030 §2: no 354) */
    FG_TRIG_BYTE,       /* byte_dir, byte_off */
    FG_TRIG_AFTER       /* after_ms */
};

enum fg_conn_sel { FG_SEL_EVERY, FG_SEL_FIRST, FG_SEL_NTH, FG_SEL_FROM };

#define FG_ACTION_MAP(XX)                                                                          \
    XX(STALL, "stall")                                                                             \
    XX(CLOSE, "close")                                                                             \
    XX(RESET, "reset")                                                                             \
    XX(REPLY, "reply")                                                                             \
    XX(DELAY, "delay")                                                                             \
    XX(BLACKHOLE, "blackhole")                                                                     \
    XX(HALF_CLOSE, "half-close")                                                                   \
    XX(THROTTLE, "throttle")                                                                       \
    XX(SLICE, "slice")                                                                             \
    XX(LIMIT, "limit")                                                                             \
    XX(DROP, "drop")                                                                               \
    XX(CORRUPT, "corrupt")                                                                         \
    XX(REFUSE, "refuse")                                                                           \
    XX(ACCEPT_THEN_CLOSE, "accept-then-close")                                                     \
    XX(BANNER_DELAY, "banner-delay")

enum fg_action {
#define XX(name, text) FG_ACT_##name,
    FG_ACTION_MAP(XX)
#undef XX
        FG_ACT__COUNT
};

enum fg_fault_dir { FG_FDIR_DEFAULT, FG_FDIR_C2S, FG_FDIR_S2C, FG_FDIR_BOTH };

enum fg_corrupt_op { FG_CORRUPT_FLIP, FG_CORRUPT_XOR, FG_CORRUPT_SET };

/* A fault set holds at most this many faults (one bit each in
 * fg_fault_conn.fired). */
#define FG_FAULT_MAX 64

struct fg_fault {
    char *spec; /* canonical one-line text, for logs and results */
    enum fg_trig_kind trig;
    enum fg_smtp_verb verb; /* FG_TRIG_COMMAND */
    char verb_text[16];     /* FG_TRIG_COMMAND with an unknown verb */
    unsigned verb_seq;      /* `#N`, 0 = any */
    int code;               /* FG_TRIG_REPLY: 354, or 2 for 2xx (code_class) */
    int code_class;         /* non-zero when `code` is a class digit */
    enum fg_dir byte_dir;   /* FG_TRIG_BYTE */
    uint64_t byte_off;      /* FG_TRIG_BYTE: octets read in byte_dir, >= 1 */
    uint64_t after_ms;      /* FG_TRIG_AFTER */
    enum fg_conn_sel sel;
    unsigned conn_n; /* nth / from */
    double prob;     /* 1.0 unless `p X` */
    int prob_set;    /* `p X` given: a zeroed fault built from the parts
                        gets p 1 in fg_fault_canon/fg_fault_set_add otherwise */
    int each;        /* fire on every match, not only once per connection */

    enum fg_action action;
    enum fg_fault_dir dir;
    uint64_t delay_ms; /* delay, banner-delay */
    uint64_t rate;     /* throttle: octets per second */
    uint64_t slice;    /* slice: octets per write */
    uint64_t pause_ms; /* slice: wait between writes */
    uint64_t limit;    /* limit: octets */
    uint64_t at;       /* corrupt: octet position */
    enum fg_corrupt_op op;
    unsigned char value; /* corrupt xor/set */
    int reply_code;
    char *reply_text; /* CRLF-terminated reply lines, ready to send */
    int replace;

    /* Run-time changes (the control API, faultgate/api.h). */
    int retired;       /* removed: never fires again; its index stays until
                          fg_fault_set_compact, since connections hold indices */
    uint64_t draw_key; /* non-zero: the `p X` draw is a function of (seed,
                          connection, draw_key) alone, so it is the same on a
                          connection however many other faults come and go */
};

/* fg_fault_parse - one-line syntax into f (zeroed first).  On error returns
 * FG_ESYNTAX, writes a message into err and sets *col to the 1-based
 * column of the offending word (col may be NULL). */
int fg_fault_parse(const char *line, struct fg_fault *f, char *err, size_t errlen, int *col);

/* The parts on their own, for the scenario form
 * {on: TRIGGER, connection: SELECTOR, action: ACTION}: zero f, parse the
 * parts present (SELECTOR is a comma-separated list, e.g. "nth 2, each"),
 * then fg_fault_check and fg_fault_canon.  Columns are 1-based within s. */
int fg_fault_parse_trigger(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
int fg_fault_parse_selector(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
int fg_fault_parse_action(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
/* fg_fault_check - cross-field checks once all parts are parsed (e.g.
 * `replace` needs a reply action and a trigger other than connect). */
int fg_fault_check(const struct fg_fault *f, char *err, size_t errlen);
/* Rebuild f->spec from the parsed fields. */
void fg_fault_canon(struct fg_fault *f);
/* The trigger part alone ("command RCPT #3"), into buf. */
void fg_fault_trigger_text(const struct fg_fault *f, char *buf, size_t len);

void fg_fault_clear(struct fg_fault *f); /* frees what f owns */
const char *fg_action_name(enum fg_action a);

/* A decision the engine made: logged to stderr/results with time,
 * connection and trigger. */
struct fg_decision {
    uint64_t t_us;  /* wall clock, microseconds since the epoch */
    unsigned conn;  /* 1-based connection number at the proxy */
    unsigned fault; /* index into the fault set */
    char trigger[96];
    char action[160];
};

struct fg_fault_set {
    struct fg_fault *faults;
    size_t n, cap;
    uint64_t seed;
    struct fg_rng rng; /* seeded with seed; per-connection draws use fg_fault_conn.rng */
    struct fg_decision *log;
    size_t nlog, caplog;
};

void fg_fault_set_init(struct fg_fault_set *fs, uint64_t seed);
void fg_fault_set_free(struct fg_fault_set *fs);
/* Takes ownership of f's allocations (f is zeroed).  Returns 0, or
 * FG_ETOOBIG beyond FG_FAULT_MAX faults (f is then left to the caller). */
int fg_fault_set_add(struct fg_fault_set *fs, struct fg_fault *f);

/* fg_fault_set_compact - drop the retired faults; map[i] (FG_FAULT_MAX
 * entries, may be NULL) becomes fault i's new index or -1, and the log's
 * indices follow (a retired fault's decisions keep FG_FAULT_MAX).  Only
 * while no connection holds firing state on fs. */
void fg_fault_set_compact(struct fg_fault_set *fs, int *map);

/* Per-connection firing state.  Zero it, then set conn. */
struct fg_fault_conn {
    unsigned conn;  /* 1-based */
    uint64_t fired; /* bit i: fault i fired on this connection */
    /* The connection's own generator, derived from (seed, conn) at the
     * first draw, so that concurrent connections cannot perturb each
     * other's draws. */
    struct fg_rng rng;
    int rng_ready;
    /* start-of-data on the BDAT path: the verb_seq of the transaction's
     * first BDAT, 0 while no BDAT since the last MAIL. */
    unsigned bdat_first;
};

/* Byte and time triggers are not parser events: the proxy asks for the
 * next point to stop at and then matches there.
 * fg_fault_next_byte - the smallest byte_off > off of a byte trigger on
 * direction dir that may still fire on connection c (UINT64_MAX if none).
 * fg_fault_next_after - the smallest after_ms > elapsed_ms of an after
 * trigger that may still fire on c (UINT64_MAX if none).
 * fg_fault_match_byte / fg_fault_match_after - as fg_fault_set_match, for
 * the byte trigger at exactly off octets of dir, or for after triggers
 * with after_ms <= elapsed_ms. */
uint64_t fg_fault_next_byte(const struct fg_fault_set *fs, const struct fg_fault_conn *c,
                            enum fg_dir dir, uint64_t off);
uint64_t fg_fault_next_after(const struct fg_fault_set *fs, const struct fg_fault_conn *c,
                             uint64_t elapsed_ms);
int fg_fault_match_byte(struct fg_fault_set *fs, struct fg_fault_conn *c, enum fg_dir dir,
                        uint64_t off, size_t from);
int fg_fault_match_after(struct fg_fault_set *fs, struct fg_fault_conn *c, uint64_t elapsed_ms,
                         size_t from);

/* fg_fault_set_match - the first fault (index >= from) whose trigger
 * matches ev on connection c and whose selectors and probability say fire
 * (ev NULL: the connection was just accepted, FG_TRIG_CONNECT).  A reply
 * that answers the end of data (the CRLF.CRLF of DATA, or the LAST BDAT
 * chunk) matches both `reply CODE` and `reply-to end-of-data`.  Records the decision in fs->log and
 * returns the fault index, or -1.  A draw from the connection's generator happens only for faults
 * with 0 < p < 1 whose trigger and selector match and that are still armed, in fault order; a draw
 * that misses leaves the fault armed for the next matching event.  So the same seed and the same
 * traffic on a connection give the same decisions, and p 0 or p 1 draw nothing. */
int fg_fault_set_match(struct fg_fault_set *fs, struct fg_fault_conn *c,
                       const struct fg_smtp_event *ev, size_t from);

#endif
