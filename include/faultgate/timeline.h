/* faultgate/timeline.h - the protocol events of a capture, per connection,
 * with frame numbers and timestamps, built by running the shared SMTP
 * parser (faultgate/smtp.h) over the reassembled streams of trace.h.
 *
 * This is what every verdict is computed from: the live run and
 * `faultgate judge` on the saved pcap build the same timeline.
 */
#ifndef FAULTGATE_TIMELINE_H
#define FAULTGATE_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/smtp.h"
#include "faultgate/trace.h"

enum fg_tl_kind {
    FG_TL_OPEN,    /* SYN (or first segment) */
    FG_TL_COMMAND, /* text: the command line */
    FG_TL_REPLY,   /* code; text: all lines */
    FG_TL_DATA,    /* first body byte after 354; size filled at end of data */
    FG_TL_END_OF_DATA,
    FG_TL_BDAT_END,
    FG_TL_TLS, /* STARTTLS took effect */
    FG_TL_FIN, /* dir: who sent it */
    FG_TL_RST,
    FG_TL_GAP,      /* bytes missing from the trace */
    FG_TL_VIOLATION /* text: violation name */
};

const char *fg_tl_kind_name(enum fg_tl_kind k);

struct fg_tl_event {
    enum fg_tl_kind kind;
    enum fg_dir dir;
    uint64_t frame;
    uint64_t us;                  /* microseconds since the epoch */
    int code;                     /* REPLY */
    enum fg_smtp_verb verb;       /* COMMAND; REPLY: the verb answered */
    enum fg_smtp_answers answers; /* REPLY */
    char *text;                   /* owned; may be NULL.  COMMAND: the line
                                     without CRLF; REPLY: all its lines, CRLF
                                     between them, none at the end;
                                     VIOLATION: its name (bare-lf, ...) */
    uint64_t size;                /* DATA: body octets; BDAT_END: chunk octets;
                                     GAP: missing octets */
    int last;                     /* BDAT_END: the chunk had LAST; REPLY to
                                     BDAT: it answers the LAST chunk */
};

/* An event index that is not there. */
#define FG_TL_NONE ((size_t)-1)

/* One mail transaction's body as seen on a connection.  A message is
 * recorded when its body starts (the first body byte after 354, or the
 * first BDAT command of the transaction), so that a body cut short still
 * shows, with complete 0 and eod_event FG_TL_NONE. */
struct fg_tl_msg {
    char token[FG_TOKEN_MAX]; /* "" if the body carried none */
    char *mail_from;          /* the last MAIL command's argument as sent
                                 ("FROM:<a@b> SIZE=10"), owned; NULL if none */
    size_t eod_event;         /* index of its END_OF_DATA (or BDAT_END LAST)
                                 event; FG_TL_NONE while incomplete */
    int reply_code;           /* reply to the end of data, 0 if none */
    size_t reply_event;       /* index of that reply; FG_TL_NONE if none */
    uint64_t size;            /* body octets as sent (DATA: still dot-stuffed,
                                 up to the CRLF before "."; BDAT: chunk octets) */
    size_t data_event;        /* index of its DATA event (or first BDAT command) */
    int complete;             /* its end of data was seen */
    /* DATA bodies, as sent (RFC 5321 §4.5.2): lines that begin with ".."
     * (a stuffed dot: the content line begins with "."), and lines that
     * begin with a single "." followed by anything else (not stuffed: a
     * receiver drops that dot).  Lines begin after CRLF only, as the
     * parser's terminator does (§4.1.1.4). */
    uint64_t dot_lines;
    uint64_t unstuffed_lines;
    uint64_t unstuffed_frame; /* frame of the first unstuffed line, 0 if none */
    uint64_t last_us;         /* time and frame of the last body octet seen */
    uint64_t last_frame;
    /* Body octets above 0x7F (DATA or BDAT), and the frame of the first:
     * 8-bit text needs 8BITMIME and BODY=8BITMIME (RFC 6152 §3). */
    uint64_t high_octets;
    uint64_t high_frame;
};

struct fg_tl_conn {
    unsigned id;
    char client[64], server[64];
    int client_port, server_port;
    struct fg_tl_event *ev;
    size_t nev, capev;
    struct fg_tl_msg *msg;
    size_t nmsg, capmsg;
    int tls;
    /* After the FG_TL_TLS event (RFC 3207 §4.2): with a key log, the
     * session inside TLS is decrypted (harness/tls_decrypt.c) and parsed
     * as a fresh SMTP session, its events following FG_TL_TLS with the
     * frame of the TLS record that carried them. */
    enum fg_tl_tls_state {
        FG_TL_TLS_NONE,      /* no STARTTLS took effect */
        FG_TL_TLS_OPAQUE,    /* TLS and no key log: nothing after FG_TL_TLS */
        FG_TL_TLS_DECRYPTED, /* everything the trace holds was decrypted */
        FG_TL_TLS_FAILED     /* decryption stopped: the events after FG_TL_TLS
                                end there; tls_note says why */
    } tls_state;
    char *tls_note;          /* owned, one line; NULL if nothing to say */
    unsigned tls_version;    /* 0x0303, 0x0304; 0 if not known */
    uint64_t tls_skipped[2]; /* plaintext octets per direction after the
                                STARTTLS exchange and before TLS (skipped) */
};

struct fg_timeline {
    struct fg_tl_conn *conn;
    size_t nconn, capconn;
    struct fg_trace_stats stats;
};

/* fg_timeline_build - read the capture at path.  Returns 0 or an error
 * (FG_ETRACE) with the reason in err.  Connections are in order of
 * appearance (tl->conn[i].id == i + 1 when every connection is kept); events of a connection are in
 * capture order; each carries the frame and time of the segment that
 * completed it.  The stats are the trace reader's (stats.truncated: the
 * file was cut short, what it held is in the timeline). */
int fg_timeline_build(const char *path, struct fg_timeline **out, char *err, size_t errlen);
/* fg_timeline_build_ports - the same, keeping only the connections whose
 * server port is one of ports (nports 0: all).  Connections keep their
 * number in the whole trace (id), so tl->conn[i].id may exceed i + 1.
 * The judge follows only the run's ports: a run's legs inside a large
 * capture cost memory for those legs alone. */
int fg_timeline_build_ports(const char *path, const int *ports, size_t nports,
                            struct fg_timeline **out, char *err, size_t errlen);
/* fg_timeline_build_keys - the same, decrypting what follows STARTTLS
 * with the key log kl (faultgate/tls_decrypt.h; NULL: TLS stays opaque,
 * as with the two above).  kl stays the caller's. */
struct fg_keylog;
int fg_timeline_build_keys(const char *path, const int *ports, size_t nports,
                           const struct fg_keylog *kl, struct fg_timeline **out, char *err,
                           size_t errlen);
void fg_timeline_free(struct fg_timeline *tl);

/* Connections whose server side has port `port`, in order: stores up to
 * max of them in out and returns how many there are (may exceed max). */
size_t fg_timeline_conns_to(const struct fg_timeline *tl, int port, struct fg_tl_conn **out,
                            size_t max);

/* fg_tl_conn_first - index of the first event of kind k (and direction dir,
 * or -1 for any) at or after index from; -1 if none. */
long fg_tl_conn_first(const struct fg_tl_conn *c, size_t from, enum fg_tl_kind k, int dir);

/* The protocol-level points that hold on every conforming path:
 * - end of message data: the CRLF.CRLF of DATA or the LAST BDAT chunk
 *   (BDAT n LAST or BDAT 0 LAST, RFC 3030 §2);
 * - the reply to the end of data: the reply to either;
 * - the opening command: EHLO or HELO (RFC 5321 §4.1.1.1);
 * - the start of message data: the 354 to DATA, or the first BDAT command
 *   of a transaction (no 354 comes with BDAT, RFC 3030 §2). */
int fg_tl_is_end_of_data(const struct fg_tl_event *e);
int fg_tl_is_eod_reply(const struct fg_tl_event *e);
int fg_tl_is_opening(const struct fg_tl_event *e);
/* i is an event index of c. */
int fg_tl_is_data_start(const struct fg_tl_conn *c, size_t i);

#endif
