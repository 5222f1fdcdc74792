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

#endif
