/* faultgate/proxy.h - the fault-injecting SMTP proxy (libuv).
 *
 * Per accepted connection a pair of TCP handles: the client leg (the
 * gateway, accepted here) and the upstream leg (connected to the upstream,
 * e.g. the fake MTA).  Bytes are forwarded exactly as received unless a
 * fault acts.  The shared SMTP parser watches both directions and its
 * events are matched against the fault set (see faultgate/fault.h for each
 * action's exact semantics); the connection number is the accept order,
 * 1-based.  Backpressure: when a side's pending writes (plus bytes held
 * by a delay) pass the high-water mark the proxy stops reading from the
 * other side until they drain below half of it, so memory per connection
 * stays near 2 x (high_water + one 256 KiB read).
 *
 * Closing: a FIN from one side is relayed (half-close) once everything
 * before it was forwarded; the pair is closed when both directions are
 * done.  An error or RST on one side resets the other.  While a
 * connection is stalled its client is not read, yet a FIN or RST from it
 * is noticed (TCP_INFO, polled every 50 ms) and both legs are then closed.
 *
 * Capture: each leg is reported to the capture (fg_capture_conn_open with
 * the real addresses), data when it is read from or written to that leg,
 * FIN and RST as they happen.
 *
 * TLS (tls_terminate): at the server's 220 to STARTTLS (RFC 3207 §4) the
 * proxy forwards that 220, then does the TLS handshake itself on both
 * legs: as the server towards the client (a certificate for tls_hostname
 * signed by the proxy's own test CA, fg_proxy_tls_ca_pem) and as a client
 * towards the upstream.  From there on it decrypts, parses and forwards
 * the plaintext, so every trigger and action works after STARTTLS as
 * before it; the legs carry (and the capture records) TLS records.  The
 * parser restarts for the new session (RFC 3207 §4.2: nothing from before
 * is kept) but keeps counting verbs, so "the 2nd RCPT" means on the
 * connection.  Byte offsets (byte triggers, corrupt) count plaintext
 * after STARTTLS.  Bytes either side sent in plaintext past the 220 and
 * not yet forwarded go on raw, unparsed, as a pass-through proxy would
 * have sent them.  Keys: fg_tls_keylog_set (fakes/tls.h).  Without
 * tls_terminate the TLS records pass through opaque.
 *
 * Threads (threads > 1): the caller's loop only accepts; it numbers each
 * connection in accept order, as above, and hands it to worker
 * (number - 1) % threads, which runs its own loop in its own thread.
 * Every decision stays a function of (seed, connection number, events),
 * so it is the same as with one thread; only the order in which
 * concurrent connections' decisions are logged may differ.  A worker's
 * connections share nothing with another's but the fault set's log and
 * the capture, both locked.  The counters below are read across threads;
 * fg_proxy_stalled_open is as of each worker's last 50 ms watch.
 */
#ifndef FAULTGATE_PROXY_H
#define FAULTGATE_PROXY_H

#include <stdio.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/fault.h"

struct fg_proxy;

struct fg_proxy_opts {
    const char *listen_host;   /* "127.0.0.1" (numeric; no DNS) */
    int listen_port;           /* 0: ephemeral */
    const char *upstream_host; /* numeric address */
    int upstream_port;
    struct fg_fault_set *faults; /* not owned; may be NULL; must outlive p */
    struct fg_capture *capture;  /* not owned; may be NULL; must outlive p */
    size_t high_water;           /* bytes; 0: 256 KiB */
    FILE *log;                   /* decisions, one line each ("faultgate: conn #1 t=+0.532s
                                    reply 354 -> stall"); may be NULL */
    int tls_terminate;           /* terminate STARTTLS here (see above) */
    const char *tls_hostname;    /* the name in the proxy's certificate and the SNI it
                                    sends upstream; NULL: mta.faultgate.test */
    const char *tls_upstream_ca; /* PEM the upstream's certificate must chain to; NULL:
                                    not verified (a test peer) */
    unsigned threads;            /* worker threads carrying the connections; 0 or 1:
                                    all on the caller's loop (see below) */
    unsigned busy_poll_us;       /* each loop polls without sleeping while events come less than
                                    this far apart (serve.h, fg_serve_run); 0: never.  With
                                    threads 0 or 1 the caller runs its own loop */
};

/* fg_proxy_new - listen and start accepting.  On error err says why; a
 * handle may still be closing then, so run the loop once (UV_RUN_NOWAIT)
 * before uv_loop_close. */
int fg_proxy_new(uv_loop_t *loop, const struct fg_proxy_opts *o, struct fg_proxy **out, char *err,
                 size_t errlen);
int fg_proxy_port(const struct fg_proxy *p);
/* Connections accepted so far, and those still open. */
unsigned fg_proxy_accepted(const struct fg_proxy *p);
unsigned fg_proxy_open(const struct fg_proxy *p);
/* Connections stalled by a fault whose client side has not closed yet. */
unsigned fg_proxy_stalled_open(const struct fg_proxy *p);
/* The most bytes one connection ever held (read but not yet written to the
 * kernel, in both directions): the backpressure bound made visible. */
size_t fg_proxy_peak_buffered(const struct fg_proxy *p);
/* Bytes forwarded so far, client to server and server to client (injected
 * replies not counted). */
uint64_t fg_proxy_bytes(const struct fg_proxy *p, enum fg_dir dir);

/* The proxy's test CA (PEM) in tls_terminate mode, else NULL: a client
 * that verifies its server must trust it. */
const char *fg_proxy_tls_ca_pem(const struct fg_proxy *p);
/* Connections whose two TLS handshakes completed (tls_terminate). */
unsigned fg_proxy_tls_sessions(const struct fg_proxy *p);

/* fg_proxy_faults_changed - the caller (on p's loop, single-threaded
 * proxy only) added or retired faults in o->faults: connections already
 * open start parsing, so an event trigger matches from their next event,
 * and `after` faults now due fire on them at once.  New faults are
 * appended and removed ones retired (fault.h), never reordered, since open
 * connections hold fault indices. */
void fg_proxy_faults_changed(struct fg_proxy *p);

/* fg_proxy_close - stop listening, close every connection, then call cb;
 * p is freed before cb runs.  cb may be NULL. */
void fg_proxy_close(struct fg_proxy *p, void (*cb)(void *ud), void *ud);

#endif
