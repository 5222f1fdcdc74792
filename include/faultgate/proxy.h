/* faultgate/proxy.h - the fault-injecting SMTP proxy (libuv).
 *
 * Per accepted connection a pair of TCP handles.  Bytes are forwarded
 * exactly as received unless a fault acts.  The shared SMTP parser watches
 * both directions and its events are matched against the fault set.
 * Backpressure: when a side's pending writes pass the high-water mark the
 * proxy stops reading from the other side until they drain below the low
 * mark, so memory per connection is bounded.
 */
#ifndef FAULTGATE_PROXY_H
#define FAULTGATE_PROXY_H

#include <stdio.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/fault.h"

struct fg_proxy;

struct fg_proxy_opts {
    const char *listen_host; /* "127.0.0.1" */
    int listen_port;         /* 0: ephemeral */
    const char *upstream_host;
    int upstream_port;
    struct fg_fault_set *faults;  /* not owned; may be NULL */
    struct fg_capture *capture;   /* not owned; may be NULL */
    size_t high_water;            /* bytes; 0: 256 KiB */
    FILE *log;                    /* decisions, one line each; may be NULL */
};

int fg_proxy_new(uv_loop_t *loop, const struct fg_proxy_opts *o, struct fg_proxy **out,
                 char *err, size_t errlen);
int fg_proxy_port(const struct fg_proxy *p);
/* Connections accepted so far, and those still open. */
unsigned fg_proxy_accepted(const struct fg_proxy *p);
unsigned fg_proxy_open(const struct fg_proxy *p);
/* Connections stalled by a fault whose client side has not closed yet. */
unsigned fg_proxy_stalled_open(const struct fg_proxy *p);

/* fg_proxy_close - stop listening, close every connection, then call cb;
 * p is freed before cb runs. */
void fg_proxy_close(struct fg_proxy *p, void (*cb)(void *ud), void *ud);

#endif
