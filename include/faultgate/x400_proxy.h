/* faultgate/x400_proxy.h - the fault-injecting X.400 proxy (RFC 1006 +
 * COTP class 0 + ISO 8327 session), its fault syntax and its engine.
 *
 * The proxy sits between the gateway's X.400 side ({x400_upstream}) and the
 * fake X.400 MTA.  Per connection it frames TPKTs in both directions, feeds
 * every TPKT to the shared decoder of faultgate/x400.h (one per direction)
 * and forwards it.  DT TPDUs of a TSDU are held until the DT with EOT
 * arrives, so that each TSDU is forwarded whole: an action can then take a
 * TSDU's place without leaving half of it at the receiver, and
 * rewrite-serial can reassemble, rewrite and re-segment it (x400-wire.md
 * §7.3).  Other TPDUs (CR, CC, DR, ER) pass at once.
 *
 * One-line fault syntax (a scenario's `x400_faults:` list, FORMAT.md):
 *
 *     TRIGGER [, SELECTOR]... : ACTION [ARGS...] [, forward]
 *
 *     spdu AC s2c, first: abort provider
 *     spdu MIP c2s #2, first: abort user rts reason protocol-error
 *     spdu MIP serial 3, first: rewrite-serial +1
 *     activity-end, first: dr reason 85
 *     tpkt c2s 4, nth 2: reset
 *     connect, first: er
 *
 * Triggers (counts are per connection, 1-based; without c2s/s2c both
 * directions count together; c2s is gateway to fake MTA):
 *   tpkt [c2s|s2c] N            the Nth TPKT
 *   spdu TYPE [c2s|s2c] [#N] [serial S]
 *                               the Nth SPDU of TYPE (CN, AC, RF, FN, DN,
 *                               AB, AA, GT, PT, DT, MIP, MIA, AE, AEA, AS,
 *                               AD, ADA, ...; fg_spdu_type_parse names);
 *                               `serial S`: only one whose Serial Number
 *                               (PI 42) is S
 *   activity-start [#N]         the Nth AS (X.225 §7.24)
 *   activity-end [#N]           the Nth AE (X.225 §7.25)
 *   connect                     the proxy accepted the connection and its
 *                               upstream leg is up
 * Selectors as in faultgate/fault.h (parsed by fg_fault_parse_selector):
 * every (default), first, nth N, from N, p X (drawn from the run's seed,
 * per connection), once (default), each.
 *
 * Actions.  By default the triggering TPKT (with the held DTs of its TSDU)
 * is NOT forwarded: the action takes its place, as if the fault struck on
 * its arrival at the proxy.  The option `forward` forwards it first.
 *   abort [user|provider] [reason R] [rts]
 *                   an AB SPDU (X.225 §8.3.9) to both sides, Transport
 *                   Disconnect 03 (released, user abort) or 05 (released,
 *                   protocol error; the default); `rts` adds RTS abort
 *                   information (X.410 AbortInformation, PGI 193) with
 *                   abortReason R (0-7 or its name: local-system-problem,
 *                   invalid-parameter, unrecognized-activity,
 *                   temporary-problem, protocol-error (default),
 *                   permanent-problem, user-error, transfer-completed);
 *                   `reason R` implies `rts`.  Then FIN both ways.
 *   dr [reason R]   a COTP DR (X.224 §13.5) to both sides, reason R a hex
 *                   octet (default 80; 85 protocol error), then FIN.
 *   er [cause C]    a COTP ER (X.224 §13.12) to both sides, reject cause C
 *                   a hex octet (default 02), then FIN.
 *   reset           RST both sides once earlier writes were handed over.
 *   close           FIN both sides.
 *   stall           forward nothing more either way; both sides are still
 *                   read (and discarded) so that the gateway giving up
 *                   (FIN, RST) is noticed, and then both legs are closed.
 *   rewrite-serial N|+K|-K
 *                   (an SPDU trigger on an SPDU that carries a Serial
 *                   Number, or activity-end) set that SPDU's Serial Number
 *                   to N, or add or subtract K (not below 0), rebuild the
 *                   SPDU and its lengths (long form kept or chosen when
 *                   needed), re-segment the TSDU into DTs of the negotiated
 *                   TPDU size and forward it.  The connection goes on.
 *
 * Decisions are logged like fault.c's (struct fg_decision): trigger as the
 * event that fired ("spdu MIP c2s #2 serial 2"), action prefixed "x400 " so
 * that the SMTP rules reading decisions (closes-after-stall, busy) never
 * take them for the SMTP proxy's.  `fault` is the index in x400_faults.
 */
#ifndef FAULTGATE_X400_PROXY_H
#define FAULTGATE_X400_PROXY_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/fault.h"
#include "faultgate/x400.h"

enum fg_x4f_trig { FG_X4F_TPKT, FG_X4F_SPDU, FG_X4F_ACT_START, FG_X4F_ACT_END, FG_X4F_CONNECT };

enum fg_x4f_dir { FG_X4F_ANY = 0, FG_X4F_C2S, FG_X4F_S2C };

enum fg_x4f_action {
    FG_X4F_ABORT,
    FG_X4F_DR,
    FG_X4F_ER,
    FG_X4F_RESET,
    FG_X4F_CLOSE,
    FG_X4F_STALL,
    FG_X4F_REWRITE_SERIAL
};

enum fg_x4f_rw { FG_X4F_RW_SET, FG_X4F_RW_ADD, FG_X4F_RW_SUB };

struct fg_x400_fault {
    char *spec; /* canonical one-line text */
    enum fg_x4f_trig trig;
    enum fg_x4f_dir dir;
    uint64_t tpkt_n;        /* tpkt N */
    enum fg_spdu_type spdu; /* spdu TYPE */
    unsigned seq;           /* #N; 0: any */
    int has_serial;         /* serial S */
    uint32_t serial;
    enum fg_conn_sel sel;
    unsigned conn_n;
    double prob;
    int each;

    enum fg_x4f_action action;
    int user;         /* abort user (else provider) */
    int rts;          /* abort carries AbortInformation */
    int abort_reason; /* AbortReason 0..7 */
    uint8_t octet;    /* dr reason / er cause */
    enum fg_x4f_rw rw;
    uint32_t rw_val;
    int forward;
};

/* fg_x400_fault_parse - one line into f (zeroed first).  On error returns
 * FG_ESYNTAX, a message in err and the 1-based column of the offending word
 * in *col (col may be NULL). */
int fg_x400_fault_parse(const char *line, struct fg_x400_fault *f, char *err, size_t errlen,
                        int *col);
void fg_x400_fault_clear(struct fg_x400_fault *f);
/* Deep copy (spec duplicated). */
void fg_x400_fault_copy(struct fg_x400_fault *dst, const struct fg_x400_fault *src);

struct fg_x400_fault_set {
    struct fg_x400_fault *faults;
    size_t n, cap;
    uint64_t seed;
    struct fg_decision *log;
    size_t nlog, caplog;
};

void fg_x400_fault_set_init(struct fg_x400_fault_set *fs, uint64_t seed);
void fg_x400_fault_set_free(struct fg_x400_fault_set *fs);
/* Takes a deep copy of f.  FG_ETOOBIG beyond FG_FAULT_MAX faults. */
int fg_x400_fault_set_add(struct fg_x400_fault_set *fs, const struct fg_x400_fault *f);

/* Scenario helpers (scenario.c): a YAML `x400_faults:` list (strings, or
 * unquoted `TRIGGER: ACTION` one-key maps), and `x400_peer:` {on_invalid:
 * abort|abort-user|dr|er|close|reset|ignore}.  Errors as file:line:col. */
struct fg_yaml_doc;
struct fg_yaml_node;
int fg_x400_faults_load(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                        struct fg_x400_fault **out, size_t *nout, char *err, size_t errlen);
/* *on_invalid: an enum fg_x400_reaction (faultgate/fake_x400.h). */
int fg_x400_peer_opts_load(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                           int *on_invalid, char *err, size_t errlen);

/* --- the proxy ---------------------------------------------------------------- */

struct fg_x400_proxy_opts {
    const char *listen_host; /* numeric; "127.0.0.1" */
    int listen_port;         /* 0: ephemeral */
    const char *upstream_host;
    int upstream_port;
    struct fg_x400_fault_set *faults; /* not owned; may be NULL */
    struct fg_capture *capture;       /* not owned; may be NULL */
    FILE *log;                        /* decisions, one line each; may be NULL */
};

struct fg_x400_proxy;

int fg_x400_proxy_new(uv_loop_t *loop, const struct fg_x400_proxy_opts *o,
                      struct fg_x400_proxy **out, char *err, size_t errlen);
int fg_x400_proxy_port(const struct fg_x400_proxy *p);
unsigned fg_x400_proxy_accepted(const struct fg_x400_proxy *p);
unsigned fg_x400_proxy_open(const struct fg_x400_proxy *p);
/* Stop listening, close every connection, free p, then call cb (may be
 * NULL). */
void fg_x400_proxy_close(struct fg_x400_proxy *p, void (*cb)(void *ud), void *ud);

/* `faultgate proxy` (harness/cmd_x400_proxy.c).  fg_cmd_proxy_protocol:
 * which proxy argv asks for: 0 SMTP, 1 X.400 (--protocol x400, or faults
 * that are all X.400 faults), 2 a bad --protocol.  fg_cmd_x400_proxy: run
 * the X.400 proxy with argv's options; exit status as for `proxy`, or -1
 * for --help (the caller prints the usage). */
int fg_cmd_proxy_protocol(int argc, char **argv);
int fg_cmd_x400_proxy(int argc, char **argv);

#endif
