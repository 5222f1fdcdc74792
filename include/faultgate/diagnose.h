/* faultgate/diagnose.h - find the knowledge-base symptoms in any capture,
 * with no scenario and no knowledge of roles.
 *
 * The capture is read once, streaming (trace.h), with one shared SMTP
 * parser per connection (smtp.h).  What a detector keeps across
 * connections is what it may still report (a message not yet relayed, a
 * drop whose aftermath is not yet known, a stall, an unanswered
 * connection): memory grows with the open connections and the findings,
 * not with the size of the trace.
 *
 * Symptoms (KB articles in the project's knowledge base):
 *   Q129140  the end of data is never answered (or the body stops
 *            half-way), and the client waits or gives up;
 *   Q197142  the server closes right after EHLO/HELO, before its reply;
 *            what the client did next (reconnected? with HELO?);
 *   Q135031  a message accepted on one connection is never seen again
 *            (neither relayed nor bounced) although the capture shows
 *            relaying;
 *   Q131150  while one session stalls, connections to the stalled
 *            client's host are refused or never greeted;
 *   Q194685  an invalid minor synchronization point followed by an abort
 *            (X.400 over RFC 1006, on any port: a connection is taken for
 *            RFC 1006 by its first client octets): the SPDU that broke
 *            an X.225 rule (x400_state.h), the rule and its source, and
 *            the AB, COTP DR or TCP RST that followed.  A protocol
 *            detector registered in fg_diag_detectors (see below).
 */
#ifndef FAULTGATE_DIAGNOSE_H
#define FAULTGATE_DIAGNOSE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "faultgate/trace.h"

#define FG_DIAG_FRAMES 16

struct fg_diag_finding {
    char kb[16];   /* "Q129140" */
    char *symptom; /* short name: "end of data never answered" */
    char *summary; /* one line, with frames and times */
    char *detail;  /* lines for a person; may be NULL */
    int certain;   /* 0: a gap in the trace or its end leaves it open */
    unsigned conn; /* connection number (order of appearance), 0 if none */
    char client[64], server[64];
    uint64_t frames[FG_DIAG_FRAMES]; /* the frames that show it, ascending */
    size_t nframes;
    uint64_t us; /* time of its first frame */
    /* The protocol rule broken, when the symptom is one ("serial-not-vm",
     * "X.225 Table A-4"); "" otherwise. */
    char rule[40], source[48];
};

struct fg_diag_report {
    struct fg_diag_finding *f;
    size_t n, cap;
    struct fg_trace_stats stats;
    uint64_t smtp_conns; /* connections that spoke SMTP */
    uint64_t x400_conns; /* connections that spoke RFC 1006 from their start */
    uint64_t messages;   /* bodies whose end of data was seen */
    uint64_t relayed;    /* messages seen again on a later connection */
    uint64_t dropped;    /* findings not kept (over FG_DIAG_MAX_FINDINGS) */
    char *notes;         /* what the capture cannot say ("one leg only"), or NULL */
};

#define FG_DIAG_MAX_FINDINGS 10000

struct fg_diag_opts {
    /* Silence that counts as "not answered" / "stalled"; 0: 5 s. */
    uint64_t stall_us;
};

/* fg_diagnose - read the capture at path and collect the findings, in
 * order of their first frame.  Returns 0 (*out set, maybe with no
 * finding) or FG_ETRACE with the reason in err (the file is not a
 * capture, or its link type is not supported).  A capture cut short is
 * diagnosed up to the cut and says so in notes. */
int fg_diagnose(const char *path, const struct fg_diag_opts *opts, struct fg_diag_report **out,
                char *err, size_t errlen);
void fg_diag_report_free(struct fg_diag_report *r);

/* Output for a person, and JSON (an object: trace statistics, findings). */
void fg_diag_print(FILE *f, const char *path, const struct fg_diag_report *r);
int fg_diag_print_json(FILE *f, const char *path, const struct fg_diag_report *r);

/* fg_diag_add - add a finding (copied; frames sorted and deduplicated). */
void fg_diag_add(struct fg_diag_report *r, const struct fg_diag_finding *f);

/* Detectors for protocols other than SMTP (X.400 over RFC 1006) plug in
 * here: each connection is offered to every detector's open(); one that
 * returns non-NULL state gets the connection's bytes, its TCP events and
 * its close, and adds what it finds with fg_diag_add.  data() returns
 * FG_DIAG_MINE once the connection is its protocol (the SMTP detectors
 * then stop reading it), FG_DIAG_NOT_MINE when it is not (no more calls
 * but close), FG_DIAG_UNSURE otherwise.  fg_diag_detectors is
 * NULL-terminated; diagnose.c holds the table. */
enum { FG_DIAG_UNSURE = 0, FG_DIAG_MINE = 1, FG_DIAG_NOT_MINE = -1 };
enum fg_diag_tcp { FG_DIAG_FIN, FG_DIAG_RST, FG_DIAG_GAP };
struct fg_diag_detector {
    const char *name;
    void *(*open)(const struct fg_trace_conn *c);
    int (*data)(void *st, const struct fg_trace_conn *c, int dir, const uint8_t *buf, size_t len,
                uint64_t frame, uint64_t us);
    void (*tcp)(void *st, const struct fg_trace_conn *c, int dir, enum fg_diag_tcp what,
                uint64_t frame, uint64_t us);
    /* Called once; frees st. */
    void (*close)(void *st, const struct fg_trace_conn *c, struct fg_diag_report *r);
};
extern const struct fg_diag_detector *const fg_diag_detectors[];

/* The `faultgate diagnose` command (cmd_diagnose.c). */
int fg_cmd_diagnose(int argc, char **argv);

#endif
