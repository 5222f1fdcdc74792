/* faultgate/serve.h - the long-running subcommands (`proxy`, `fake-mta`,
 * `x400-peer --listen`) run their loop until SIGINT or SIGTERM. */
#ifndef FAULTGATE_SERVE_H
#define FAULTGATE_SERVE_H

#include <uv.h>

struct fg_serve {
    uv_signal_t sigint, sigterm;
    void (*stop)(void *ud);
    void *ud;
};

/* fg_serve_signals - watch SIGINT and SIGTERM on loop.  At the first of
 * them both watchers are closed and stop(ud) is called; stop closes the
 * server's handles, so that uv_run then returns.  sv must stay valid
 * until the loop is closed. */
void fg_serve_signals(uv_loop_t *loop, struct fg_serve *sv, void (*stop)(void *ud), void *ud);

/* fg_serve_run - uv_run(loop, UV_RUN_DEFAULT), but with busy_poll_us > 0
 * the loop polls without sleeping for as long as events keep coming no
 * more than busy_poll_us apart, and sleeps only after that much quiet.
 * A sleeping process pays the scheduler's wake-up on every request; a
 * request-reply protocol on loopback waits on that latency more than on
 * any work (the latency haproxy's busy-polling and Linux's SO_BUSY_POLL
 * trade CPU for).  Idle, it costs nothing: the loop sleeps as usual. */
int fg_serve_run(uv_loop_t *loop, unsigned busy_poll_us);

#endif
