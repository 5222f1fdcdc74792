/* faultgate/fake_x400.h - the fake X.400 MTA (RFC 1006 + COTP class 0 +
 * ISO 8327 session + RTS in X.410-1984 mode), responder and initiator.
 *
 * Responder: accepts CR/CN, answers CC/AC (PAccept), tracks tokens,
 * activities, V(M), V(A) and the RTS window with the shared rules of
 * faultgate/x400_state.h, answers every MIP with MIA and every AE with AEA,
 * keeps each message (the octets of the activity's DTs) in its ledger, and
 * on an invalid SPDU reacts as a strict foreign system does (KB Q194685:
 * S-P-ABORT, i.e. AB with "protocol error", then close) or as configured.
 *
 * Initiator: one association per message: CR, CN (PConnect), GT AS, GT DT
 * segments each followed by GT MIP (waiting for PT MIA as the window
 * requires), GT AE, PT AEA awaited, FN, DN.  A sync bug can be chosen to
 * produce the invalid minor synchronisation points of x400-wire.md §7.2.
 */
#ifndef FAULTGATE_FAKE_X400_H
#define FAULTGATE_FAKE_X400_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "faultgate/fake_mta.h"

struct fg_capture;

/* What the responder does on an invalid SPDU. */
enum fg_x400_reaction {
    FG_X400_REACT_ABORT = 0,  /* AB, transport released + protocol error (11 01 05), close */
    FG_X400_REACT_ABORT_USER, /* AB user (11 01 03) + AbortInformation protocolError */
    FG_X400_REACT_DR,         /* COTP DR reason 85 (protocol error), close */
    FG_X400_REACT_ER,         /* COTP ER cause 02, close */
    FG_X400_REACT_CLOSE,      /* TCP FIN */
    FG_X400_REACT_RESET,      /* TCP RST */
    FG_X400_REACT_IGNORE      /* log it and go on */
};

/* "abort", "abort-user", "dr", "er", "close", "reset", "ignore". */
int fg_x400_reaction_parse(const char *s, enum fg_x400_reaction *out);

struct fg_x400_peer_opts {
    const char *host;        /* "127.0.0.1" */
    int port;                /* 0: ephemeral */
    const char *ledger_path; /* JSON lines, appended; may be NULL */
    enum fg_x400_reaction on_invalid;
    uint32_t max_checkpoint;    /* largest checkpoint size granted (KiB); 0: 64 */
    uint64_t idle_ms;           /* close a silent connection after this; 0: 60 s */
    struct fg_capture *capture; /* synthesize this leg into a capture; may be NULL */
    FILE *log;                  /* may be NULL */
};

struct fg_x400_peer;

int fg_x400_peer_new(uv_loop_t *loop, const struct fg_x400_peer_opts *o, struct fg_x400_peer **out,
                     char *err, size_t errlen);
int fg_x400_peer_port(const struct fg_x400_peer *p);
/* Messages received (an activity ended by AE and answered with AEA). */
const struct fg_ledger_entry *fg_x400_peer_ledger(const struct fg_x400_peer *p, size_t *n);
unsigned fg_x400_peer_count_token(const struct fg_x400_peer *p, const char *token);
/* Associations the responder aborted for an invalid SPDU. */
unsigned fg_x400_peer_aborts(const struct fg_x400_peer *p);
void fg_x400_peer_close(struct fg_x400_peer *p, void (*cb)(void *ud), void *ud);

/* Invalid minor-sync variants the initiator can produce (x400-wire.md
 * §7.2; refgw --bug bad-minor-sync=VARIANT). */
enum fg_x400_sync_bug {
    FG_X400_SYNC_OK = 0,
    FG_X400_SYNC_FIRST_ZERO, /* "first-serial-0": numbering starts at 0 */
    FG_X400_SYNC_DUPLICATE,  /* "duplicate-serial": the second MIP repeats the first SN */
    FG_X400_SYNC_SKIPPED,    /* "skipped-serial": 1, 3, 4, ... */
    FG_X400_SYNC_NO_RESET,   /* "no-reset": numbering carries on from the previous activity */
    FG_X400_SYNC_NO_GT,      /* "no-gt": MIP not concatenated after a GT */
    FG_X400_SYNC_WINDOW      /* "window-overrun": window + 1 MIPs sent without waiting */
};

int fg_x400_sync_bug_parse(const char *s, enum fg_x400_sync_bug *out);
const char *fg_x400_sync_bug_name(enum fg_x400_sync_bug b);

struct fg_x400_send_opts {
    const char *host;
    int port;
    const uint8_t *msg; /* the content sent in the activity's DTs; not owned */
    size_t len;
    uint32_t checkpoint; /* proposed checkpoint size (KiB); 0 = no MIPs */
    uint32_t window;     /* proposed window; 0: 3 */
    enum fg_x400_sync_bug bug;
    uint32_t *serial_carry; /* NO_RESET: the SN counter kept across activities */
    uint64_t timeout_ms;    /* per answer; 0: 30 s */
    struct fg_capture *capture;
    FILE *log;
    int normal; /* 1988 normal mode (RTSE over ACSE and presentation); else X.410-1984 */
    /* The application: P1 (0), or ISODE's sink test application (1) as
     * ISODE's tsapd serves it: transport/session selectors, application
     * protocol 129 or context 1.17.0.2.1, an INTEGER greeting, the message
     * sent as one OCTET STRING APDU. */
    int isode_sink;
};

struct fg_x400_sender;

/* fg_x400_send - transfer one message in one association.  done is called
 * once with 0 (AEA received and the association released) or a negative
 * error and a one-line reason ("association aborted: AB ...",
 * "tp_receive failed: ..."); the sender frees itself after done returns. */
int fg_x400_send(uv_loop_t *loop, const struct fg_x400_send_opts *o,
                 void (*done)(void *ud, int status, const char *detail), void *ud,
                 struct fg_x400_sender **out);
/* Stop now (done is called with UV_ECANCELED). */
void fg_x400_sender_cancel(struct fg_x400_sender *s);

/* fg_cmd_x400_peer - the `faultgate x400-peer` subcommand (harness/cmd_x400.c). */
int fg_cmd_x400_peer(int argc, char **argv);

#endif
