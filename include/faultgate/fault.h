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
 * Triggers: `command VERB [#N]`, `reply CODE` (`250`, `2xx`, `5xx`),
 * `end-of-data`, `reply-to end-of-data`, `greeting`, `connect`.
 * Selectors: `first`, `nth N`, `every` (default `every`), `from N`,
 * `p X` (probability drawn from the run's seed), `once` (default) or
 * `each` (fire on every match).
 * Actions (direction `c2s`, `s2c` or `both` after the action):
 *   stall          stop reading and forwarding (default both): the sender's
 *                  TCP window fills as with a hung peer; nothing is closed.
 *   close          FIN towards the chosen side(s) (default both), after
 *                  what was already forwarded.
 *   reset          RST both sides (uv_tcp_close_reset).
 *   reply CODE TXT inject a reply towards the client, before the event's
 *                  bytes are forwarded; with `replace`, the server's reply
 *                  that triggered it is swallowed and this one sent instead.
 *   delay D        hold the event's bytes for D before forwarding; later
 *                  bytes in that direction queue behind them.
 * The bytes that complete the triggering event are forwarded before the
 * action takes effect, except for `reply ... replace` and `delay`.
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
 * {on: TRIGGER, connection: SELECTOR, action: ACTION}. */
int fg_fault_parse_trigger(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
int fg_fault_parse_selector(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
int fg_fault_parse_action(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);
/* Rebuild f->spec from the parsed fields. */
void fg_fault_canon(struct fg_fault *f);

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
    struct fg_rng rng;
    struct fg_decision *log;
    size_t nlog, caplog;
};

void fg_fault_set_init(struct fg_fault_set *fs, uint64_t seed);
void fg_fault_set_free(struct fg_fault_set *fs);
/* Takes ownership of f's allocations. */
void fg_fault_set_add(struct fg_fault_set *fs, struct fg_fault *f);

/* Per-connection firing state (which faults have fired). */
struct fg_fault_conn {
    unsigned conn; /* 1-based */
    uint64_t fired; /* bit i: fault i fired on this connection */
};

/* fg_fault_set_match - the first fault (index >= from) whose trigger
 * matches ev on connection c and whose selectors and probability say fire
 * (ev NULL: the connection was just accepted, FG_TRIG_CONNECT).  A reply
 * that answers the end of data matches both `reply CODE` and `reply-to
 * end-of-data`.  Records the decision in fs->log and returns the fault
 * index, or -1.  The probability draw happens only for faults whose
 * trigger and selector match, in fault order, so the same seed and the same
 * traffic give the same decisions. */
int fg_fault_set_match(struct fg_fault_set *fs, struct fg_fault_conn *c,
                       const struct fg_smtp_event *ev, size_t from);

#endif
