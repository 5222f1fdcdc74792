/* faultgate/capture.h - the run's pcap: live libpcap capture on loopback,
 * or a trace synthesized from what faultgate's own endpoints saw.
 *
 * Live mode opens the loopback device with a BPF filter on the run's ports
 * and writes every packet to the file as it arrives (driven by the libuv
 * loop through pcap's selectable fd).  Synth mode writes Ethernet/IPv4/TCP
 * frames with a proper handshake, sequence and acknowledgment numbers,
 * checksums, FIN and RST, so that Wireshark, tshark and faultgate's own
 * trace reader read both kinds the same way.  Only this module includes
 * pcap.h for writing or capturing.
 */
#ifndef FAULTGATE_CAPTURE_H
#define FAULTGATE_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "faultgate/smtp.h"

enum fg_capture_mode { FG_CAPTURE_AUTO, FG_CAPTURE_LIVE, FG_CAPTURE_SYNTH };

struct fg_capture;

/* fg_capture_open - start a capture writing to path.
 * mode AUTO tries live capture and falls back to synth when the process may
 * not capture (no CAP_NET_RAW, or any other failure to start); LIVE fails
 * with FG_ECAPTURE instead.  When AUTO falls back, it returns 0 and leaves
 * in err why live capture was not used (err is "" otherwise).
 * loop may be NULL for SYNTH (and AUTO then goes straight to synth).
 * ports: the TCP ports to keep (the BPF filter "tcp and (port A or ...)");
 * nports may be 0 (then every TCP packet on loopback is kept).  On error,
 * err says why.
 *
 * A live capture watches pcap's selectable fd with a uv_poll_t on loop, so
 * packets reach the file as the loop runs (and at fg_capture_flush and
 * fg_capture_close).  The handle is unreferenced: it does not keep uv_run
 * from returning. */
int fg_capture_open(uv_loop_t *loop, enum fg_capture_mode mode, const char *path, const int *ports,
                    size_t nports, struct fg_capture **out, char *err, size_t errlen);

/* The mode actually in use (LIVE or SYNTH). */
enum fg_capture_mode fg_capture_mode(const struct fg_capture *c);
const char *fg_capture_mode_name(enum fg_capture_mode m);

/* Add a port to a live capture's filter (used when a port is known only
 * after the capture started). */
int fg_capture_add_port(struct fg_capture *c, int port);

/* fg_capture_close - drain what the kernel still holds (live), flush and
 * close the file, free c.  Safe with c NULL. Returns 0 or an error.
 * Live mode: the poll handle is closed here with uv_close, and its memory is
 * freed by its close callback, so the loop must run once more (any
 * uv_run(loop, UV_RUN_DEFAULT/NOWAIT) after this call) before
 * uv_loop_close(loop) can succeed.  Synth connections still open are
 * detached: later conn_* calls on them do nothing, fg_capture_conn_free
 * still frees them. */
int fg_capture_close(struct fg_capture *c);

/* fg_capture_flush - write what is buffered to the file now (live: first
 * take the packets the kernel holds), so that the file can be read while
 * the capture goes on.  Files are also flushed about every 250 ms. */
int fg_capture_flush(struct fg_capture *c);

/* Number of frames written so far. */
uint64_t fg_capture_frames(const struct fg_capture *c);

/* --- synthesized connections -----------------------------------------
 * An endpoint that owns one side of a TCP connection (the proxy, the
 * injector) reports what it saw; in LIVE mode these calls do nothing, so
 * callers need not care which mode is in use.  client/server are the real
 * addresses of the connection. */
struct fg_synth_conn;

/* Writes the three-way handshake.  client and server are both IPv4 or both
 * IPv6.  Returns NULL in LIVE mode, with c NULL, or for other families.
 * Every conn_* call accepts NULL and then does nothing.  Data segments
 * carry PSH|ACK; after each fg_capture_conn_data call (and every 32 KiB)
 * the receiver sends a pure ACK, and a FIN is acknowledged, as a real
 * stack would; so the file decodes cleanly in Wireshark. */
struct fg_synth_conn *fg_capture_conn_open(struct fg_capture *c, const struct sockaddr *client,
                                           const struct sockaddr *server);
/* Bytes sent in direction dir, written as segments of at most 1448 octets. */
void fg_capture_conn_data(struct fg_synth_conn *sc, enum fg_dir dir, const void *buf, size_t len);
void fg_capture_conn_fin(struct fg_synth_conn *sc, enum fg_dir dir);
void fg_capture_conn_rst(struct fg_synth_conn *sc, enum fg_dir dir);
/* Frees sc (after a FIN both ways or an RST, or at the end of the run). */
void fg_capture_conn_free(struct fg_synth_conn *sc);

/* fg_capture_can_live - whether this process may capture on loopback
 * (opens and activates "lo" once, then closes it). */
int fg_capture_can_live(void);

#endif
