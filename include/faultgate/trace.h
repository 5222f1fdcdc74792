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
    unsigned id; /* 1-based, in order of appearance */
    struct sockaddr_storage client, server; /* client = SYN sender */
    int client_port, server_port;
    char client_str[64], server_str[64]; /* "127.0.0.1:40312" */
    uint64_t open_frame; /* frame of the SYN (or first segment) */
    uint64_t open_us;    /* its timestamp, microseconds since the epoch */
    int saw_syn;         /* the handshake is in the trace */
    void *user;          /* for the consumer */
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

struct fg_trace_stats {
    uint64_t frames, tcp_frames, bytes, conns, retrans, gaps;
    uint64_t first_us, last_us;
};

/* fg_trace_read - read the whole capture at path, calling cbs as streams
 * progress.  Returns 0, or FG_ETRACE with the reason in err. */
int fg_trace_read(const char *path, const struct fg_trace_cbs *cbs, void *ud,
                  struct fg_trace_stats *stats, char *err, size_t errlen);

#endif
