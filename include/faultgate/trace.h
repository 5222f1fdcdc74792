/* faultgate/trace.h - read a capture and reassemble its TCP streams.
 *
 * Reads pcap and pcapng (through libpcap's offline reader) with link types
 * Ethernet, Linux cooked (SLL, SLL2), raw IP and BSD loopback; IPv4 and
 * IPv6.  Each TCP connection is numbered in the order its first SYN (or,
 * for a capture that starts mid-stream, its first segment) appears.  Bytes
 * are delivered in order per direction; retransmitted and overlapping
 * bytes are delivered once; a hole that is never filled is reported as a
 * gap.  Memory is bounded by the open connections and their out-of-order
 * segments, not by the trace's size.
 */
#ifndef FAULTGATE_TRACE_H
#define FAULTGATE_TRACE_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "faultgate/smtp.h"

struct fg_trace_conn {
    unsigned id;                            /* 1-based, in order of appearance */
    struct sockaddr_storage client, server; /* client = SYN sender */
    int client_port, server_port;
    char client_str[64], server_str[64]; /* "127.0.0.1:40312" */
    uint64_t open_frame;                 /* frame of the SYN (or first segment) */
    uint64_t open_us;                    /* its timestamp, microseconds since the epoch */
    int saw_syn;                         /* the handshake is in the trace */
    void *user;                          /* for the consumer */
};

struct fg_trace_cbs {
    void (*on_open)(void *ud, struct fg_trace_conn *c);
    /* In-order bytes of direction dir; frame/us of the segment that made
     * them deliverable. */
    void (*on_data)(void *ud, struct fg_trace_conn *c, enum fg_dir dir, const uint8_t *buf,
                    size_t len, uint64_t frame, uint64_t us);
    void (*on_fin)(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us);
    void (*on_rst)(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us);
    /* Bytes missing from the trace before the next delivered byte. */
    void (*on_gap)(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t missing,
                   uint64_t frame, uint64_t us);
    /* Called once per connection when the trace ends or both sides closed;
     * c is freed after it returns. */
    void (*on_close)(void *ud, struct fg_trace_conn *c);
};

/* frames: every record; tcp_frames: those decoded as TCP; bytes: payload
 * octets delivered by on_data; conns: connections opened; retrans: segments
 * that carried bytes already received; gaps: on_gap calls; fragments: IP
 * fragments skipped (not reassembled); skipped: other frames not decoded
 * (other protocols, too short, segments of a connection already closed);
 * truncated: the file ended inside a record (what came before was read). */
struct fg_trace_stats {
    uint64_t frames, tcp_frames, bytes, conns, retrans, gaps;
    uint64_t first_us, last_us;
    uint64_t fragments, skipped;
    int truncated;
};

/* fg_trace_read - read the whole capture at path, calling cbs as streams
 * progress.  Any callback may be NULL; stats may be NULL.  Returns 0, or
 * FG_ETRACE with the reason in err.  A file cut inside its last record
 * (a capture that was killed) still returns 0, with stats->truncated set
 * and the reason in err.
 *
 * Callbacks come in capture order: everything a frame makes deliverable is
 * reported before the next frame is read.  Without a SYN in the trace, the
 * server is the side with the lower port (a port below 1024 wins; on a tie,
 * the first segment's destination), and each direction's stream starts at
 * the first sequence number seen.  A gap is reported when the receiver
 * acknowledged bytes that are missing before bytes the trace holds, when
 * more than 4 MiB wait behind a hole, and at close for a hole never filled.
 * A SYN with a new initial sequence number on a 4-tuple starts a new
 * connection; other segments of a closed connection are ignored. */
int fg_trace_read(const char *path, const struct fg_trace_cbs *cbs, void *ud,
                  struct fg_trace_stats *stats, char *err, size_t errlen);
/* fg_trace_sufficient - 0 when a trace read with stats st can support a
 * verdict, else FG_ETRACE saying why in err: it was cut short (readerr:
 * what fg_trace_read said), holds no frames, or no TCP segment. */
int fg_trace_sufficient(const char *path, const struct fg_trace_stats *st, const char *readerr,
                        char *err, size_t errlen);

#endif
