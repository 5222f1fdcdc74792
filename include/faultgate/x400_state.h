/* faultgate/x400_state.h - the X.225 rules for one session connection:
 * phase, functional units, tokens, activities, serial numbers V(M) and
 * V(A), and the RTS checkpoint size and window.
 *
 * One observer of both directions: it is fed every SPDU in wire order with
 * the side that sent it, and says whether the SPDU was valid for its
 * receiver (x400-wire.md §2.4-§2.7; X.225 Annex A Table A-4; X.228 §7.3).
 * The fake X.400 MTA feeds what it receives and what it sends; the judge
 * feeds the timeline.  So both apply exactly the same rules.
 */
#ifndef FAULTGATE_X400_STATE_H
#define FAULTGATE_X400_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/x400.h"

enum fg_x400_side { FG_X400_INITIATOR = 0, FG_X400_RESPONDER = 1 };

enum fg_x400_phase {
    FG_X400_PH_IDLE = 0,   /* before CN */
    FG_X400_PH_CONNECTING, /* CN sent, no AC yet */
    FG_X400_PH_DATA,       /* after AC */
    FG_X400_PH_RELEASING,  /* FN sent */
    FG_X400_PH_ENDED       /* DN, RF, AB or AA */
};

struct fg_x400_sm {
    enum fg_x400_phase phase;
    uint16_t sur;          /* CN: proposed; after AC: granted */
    uint8_t token_setting; /* CN's, resolved by AC */
    uint8_t init_tokens;   /* FG_TOKEN_* bits held by the initiator */
    int activity;          /* between AS and its end */
    int ending;            /* AE/AD/AI sent, answer pending: FG_SPDU_AE, ... or 0 */
    uint32_t vm, va;       /* X.225 Table A-4 V(M), V(A) */
    uint32_t ae_sn;
    int rts;                     /* a PConnect/PAccept was seen */
    uint32_t checkpoint, window; /* negotiated (AC) */
    uint64_t since_sync;         /* data octets since the last sync point */
    unsigned activities, mips, messages;
    enum fg_spdu_type last_abort; /* AB/RF when the session ended that way */
};

/* A rule an SPDU broke. */
struct fg_x400_violation {
    const char *rule;   /* short name: "serial-not-vm", "window-exceeded", ... */
    const char *source; /* "X.225 Table A-4", "X.225 §6.3.7", "X.228 §7.3" */
    char text[320];     /* one line: the SPDU, its serial, V(M)/V(A), why */
};

void fg_x400_sm_init(struct fg_x400_sm *sm);

/* fg_x400_sm_apply - s was sent by side from.  Returns 0 when valid (the
 * state moves on), 1 when invalid (v says why; the state moves on as a
 * lenient receiver would, so one bad SPDU does not flag every later one).
 * v may be NULL. */
int fg_x400_sm_apply(struct fg_x400_sm *sm, enum fg_x400_side from, const struct fg_spdu *s,
                     struct fg_x400_violation *v);

/* Whether side holds every token in mask (tokens that do not exist under
 * the granted functional units count as held). */
int fg_x400_sm_holds(const struct fg_x400_sm *sm, enum fg_x400_side side, uint8_t mask);

/* The SN as carried, printable ("1", "01", "<none>", "0x07 binary"). */
const char *fg_x400_serial_str(const struct fg_spdu *s, char *buf, size_t len);

#endif
