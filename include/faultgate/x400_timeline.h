/* faultgate/x400_timeline.h - the X.400 (RFC 1006) events of a capture:
 * per connection, the TPDUs, the session SPDUs with their serial numbers,
 * the association, its activities and how it ended, each with the frame
 * and time that completed it, and the rule of X.225 / X.228 an SPDU broke.
 *
 * Built by running the shared codec (faultgate/x400.h) over the streams
 * that the trace reader reassembles (faultgate/trace.h), and judging every
 * SPDU with the shared session rules (faultgate/x400_state.h), the same
 * rules the fake X.400 MTA applies.  The X.400 expectations
 * (faultgate/expect_x400.h) read only this.
 */
#ifndef FAULTGATE_X400_TIMELINE_H
#define FAULTGATE_X400_TIMELINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "faultgate/smtp.h"
#include "faultgate/trace.h"
#include "faultgate/x400.h"

enum fg_x4_kind {
    FG_X4_OPEN,  /* SYN (or first segment) */
    FG_X4_TPDU,  /* a COTP TPDU other than DT (CR, CC, DR, ER, ...) */
    FG_X4_SPDU,  /* a session SPDU of a completed TSDU */
    FG_X4_ERROR, /* a framing or SPDU error; text says which */
    FG_X4_FIN,
    FG_X4_RST,
    FG_X4_GAP /* bytes missing from the trace: decoding of that direction stops */
};

const char *fg_x4_kind_name(enum fg_x4_kind k);

struct fg_x4_event {
    enum fg_x4_kind kind;
    enum fg_dir dir; /* FG_C2S: sent by the TCP client (the initiator) */
    uint64_t frame, us;
    /* TPDU */
    uint8_t tpdu;   /* COTP code (FG_COTP_*) */
    uint8_t reason; /* DR reason, ER reject cause */
    /* SPDU */
    enum fg_spdu_type spdu;
    uint8_t si;
    unsigned index, count; /* place in its TSDU */
    int has_serial;        /* PI 42 present */
    int serial_ok;         /* well formed (then serial is its value) */
    uint32_t serial;
    char serial_text[24]; /* as carried, printable ("1", "01", "<none>") */
    int has_tdisc;
    uint8_t tdisc;    /* AB, FN, RF: Transport Disconnect (PI 17) */
    int rts_reason;   /* AB AbortInformation / RF PRefuse reason; -1 none */
    int has_reason;   /* RF, AD, AI, ED: Reason Code (PI 50) */
    uint8_t reason50; /* its first octet */
    uint32_t vm, va;  /* V(M), V(A) after the SPDU (X.225 Table A-4) */
    /* The rule the SPDU broke (x400_state.h), NULL when valid. */
    const char *rule, *source;
    char *text; /* owned: the violation (SPDU), or the error (ERROR); may be NULL */
};

/* One activity (AS to AE/AEA, AD/ADA, AI/AIA, or the end of the
 * connection).  The message it carried is identified by the faultgate
 * token in its data (fg_smtp_token_find). */
struct fg_x4_activity {
    size_t as_event;          /* index of the AS */
    size_t end_event;         /* AEA (completed), ADA/AIA, or FG_TL_NONE */
    int completed;            /* ended by AE and answered by AEA */
    uint64_t octets;          /* DT user data in the activity */
    unsigned mips;            /* MIPs sent in it */
    char token[FG_TOKEN_MAX]; /* "" if the data carried none */
};

/* How an association ended. */
enum fg_x4_end {
    FG_X4_END_NONE = 0, /* the trace ends with it open */
    FG_X4_END_RELEASED, /* FN answered by DN */
    FG_X4_END_REFUSED,  /* RF */
    FG_X4_END_ABORTED,  /* AB */
    FG_X4_END_DR,       /* COTP DR before the session was released */
    FG_X4_END_ER,       /* COTP ER */
    FG_X4_END_RESET,    /* TCP RST before the session was released */
    FG_X4_END_CLOSED    /* TCP FIN before the session was released */
};

const char *fg_x4_end_name(enum fg_x4_end e);

struct fg_x4_conn {
    unsigned id; /* the trace's connection number */
    char client[64], server[64];
    int client_port, server_port;
    struct fg_x4_event *ev;
    size_t nev, capev;
    struct fg_x4_activity *act;
    size_t nact, capact;
    int accepted;           /* AC seen */
    enum fg_x4_end end;     /* how it ended */
    size_t end_event;       /* the event that ended it; FG_TL_NONE if none */
    enum fg_dir end_dir;    /* who ended it */
    size_t first_violation; /* index of the first invalid SPDU; FG_TL_NONE */
    unsigned violations;
    uint32_t checkpoint, window; /* RTS, as negotiated */
};

#ifndef FG_TL_NONE
#define FG_TL_NONE ((size_t)-1)
#endif

struct fg_x400_timeline {
    struct fg_x4_conn *conn;
    size_t nconn, capconn;
    struct fg_trace_stats stats;
};

/* fg_x400_timeline_build - read the capture at pcap and decode as RFC 1006
 * every connection whose server port is one of ports (nports 0: every
 * connection whose first client octets look like a TPKT).  Returns 0 or
 * FG_ETRACE with the reason in err. */
int fg_x400_timeline_build(const char *pcap, const int *ports, size_t nports,
                           struct fg_x400_timeline **out, char *err, size_t errlen);
void fg_x400_timeline_free(struct fg_x400_timeline *tl);

/* fg_x400_timeline_print - one line per event:
 *   FRAME TIME CONN DIR KIND DETAIL
 * with, for an SPDU, its name, SI, serial and the rule it broke.  t0 is
 * subtracted from the times (0: the trace's first frame). */
void fg_x400_timeline_print(const struct fg_x400_timeline *tl, FILE *f, uint64_t t0);

/* fg_x400_timeline_json - the same as a JSON array of events (one object
 * per event with frame, time_us, conn, dir, kind, spdu, si, serial, rule,
 * source, text), written to f. */
void fg_x400_timeline_json(const struct fg_x400_timeline *tl, FILE *f);

/* fg_x4_event_describe - "GT+MIP serial 0" style name of an SPDU event,
 * or the TPDU / kind name. */
const char *fg_x4_event_describe(const struct fg_x4_conn *c, size_t i, char *buf, size_t len);

/* fg_cmd_x400_timeline - `faultgate x400-timeline [--port N] [--json] PCAP`
 * (harness/x400_timeline.c). */
int fg_cmd_x400_timeline(int argc, char **argv);

#endif
