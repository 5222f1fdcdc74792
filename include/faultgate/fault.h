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
 *
 * Keywords are case-insensitive; the first ':' ends the trigger part, so
 * reply text may contain ':' (and ',': only a trailing `, replace` is an
 * option).
 *
 * Triggers: `command VERB [#N]` (the Nth VERB on the connection),
 * `reply CODE` (`250`, or a class `2xx`), `end-of-data` (CRLF.CRLF, or the
 * end of a BDAT LAST chunk), `reply-to end-of-data`, `greeting` (the
 * server's first reply), `connect` (the proxy accepted the connection; the
 * action applies once the upstream leg is up).
 *
 * Selectors (connection numbers are the proxy's accept order, 1-based):
 *   every (default)  every connection
 *   first            connection 1 only (same as `nth 1`)
 *   nth N            connection N only
 *   from N           connections N, N+1, ...
 *   p X              fire with probability X (0..1), drawn from the run's
 *                    seed; see fg_fault_set_match
 *   once (default)   fire at most once per connection.  With first/nth the
 *                    fault applies to a single connection, so it fires at
 *                    most once per run; with every/from at most once on
 *                    each connection.
 *   each             fire on every matching event.
 *
 * Actions (direction `c2s`, `s2c` or `both` after stall and close):
 *   stall          stop reading and forwarding (default both): the sender's
 *                  TCP window fills as with a hung peer; nothing is closed.
 *                  A client that gives up (FIN or RST) is still noticed and
 *                  both legs are then closed.
 *   close          FIN towards the chosen side(s) (default both), after
 *                  what was already forwarded; `c2s` = FIN to the server,
 *                  `s2c` = FIN to the client.
 *   reset          RST both sides (uv_tcp_close_reset), once the bytes
 *                  forwarded before it were handed to the kernel.
 *   reply CODE TXT inject a reply towards the client.  Lines are separated
 *                  by `|` (or the two characters `\n`):
 *                  `reply 451 a|b` sends "451-a\r\n451 b\r\n".  On a reply
 *                  trigger it goes out before the server's reply; with
 *                  `, replace` the server's reply is swallowed instead.  On
 *                  a command or end-of-data trigger it goes out right
 *                  after the server's reply to that command; with
 *                  `, replace` the client's bytes are swallowed and the
 *                  proxy answers in the server's place (after the replies
 *                  to earlier pipelined commands, RFC 2920 §3.1).
 *   delay D        hold the event's bytes for D (`250ms`, `5s`) before
 *                  forwarding; later bytes in that direction queue behind
 *                  them.  On `connect`, both directions are held.
 * The bytes that complete the triggering event are forwarded before the
 * action takes effect, except for `reply` on a reply trigger and `delay`.
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
    FG_TRIG_CONNECT
};

enum fg_conn_sel { FG_SEL_EVERY, FG_SEL_FIRST, FG_SEL_NTH, FG_SEL_FROM };

#define FG_ACTION_MAP(XX)                                                                          \
    XX(STALL, "stall")                                                                             \
    XX(CLOSE, "close")                                                                             \
    XX(RESET, "reset")                                                                             \
    XX(REPLY, "reply")                                                                             \
    XX(DELAY, "delay")

enum fg_action {
#define XX(name, text) FG_ACT_##name,
    FG_ACTION_MAP(XX)
#undef XX
        FG_ACT__COUNT
};

enum fg_fault_dir { FG_FDIR_DEFAULT, FG_FDIR_C2S, FG_FDIR_S2C, FG_FDIR_BOTH };

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
    enum fg_conn_sel sel;
    unsigned conn_n; /* nth / from */
    double prob;     /* 1.0 unless `p X` */
    int prob_set;    /* `p X` given: a zeroed fault built from the parts
                        gets p 1 in fg_fault_canon/fg_fault_set_add otherwise */
    int each;        /* fire on every match, not only once per connection */

    enum fg_action action;
    enum fg_fault_dir dir;
    uint64_t delay_ms;
    int reply_code;
    char *reply_text; /* CRLF-terminated reply lines, ready to send */
    int replace;
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

/* Per-connection firing state.  Zero it, then set conn. */
struct fg_fault_conn {
    unsigned conn;  /* 1-based */
    uint64_t fired; /* bit i: fault i fired on this connection */
    /* The connection's own generator, derived from (seed, conn) at the
     * first draw, so that concurrent connections cannot perturb each
     * other's draws. */
    struct fg_rng rng;
    int rng_ready;
};

/* fg_fault_set_match - the first fault (index >= from) whose trigger
 * matches ev on connection c and whose selectors and probability say fire
 * (ev NULL: the connection was just accepted, FG_TRIG_CONNECT).  A reply
 * that answers the end of data matches both `reply CODE` and `reply-to
 * end-of-data`.  Records the decision in fs->log and returns the fault
 * index, or -1.  A draw from the connection's generator happens only for
 * faults with 0 < p < 1 whose trigger and selector match and that are still
 * armed, in fault order; a draw that misses leaves the fault armed for the
 * next matching event.  So the same seed and the same traffic on a
 * connection give the same decisions, and p 0 or p 1 draw nothing. */
int fg_fault_set_match(struct fg_fault_set *fs, struct fg_fault_conn *c,
                       const struct fg_smtp_event *ev, size_t from);

#endif
