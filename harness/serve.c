/* serve - stop a long-running subcommand's server on SIGINT or SIGTERM. */
#include <poll.h>
#include <signal.h>

#include "faultgate/serve.h"

static void on_signal(uv_signal_t *s, int signum)
{
    struct fg_serve *sv = s->data;
    (void)signum;
    uv_close((uv_handle_t *)&sv->sigint, NULL);
    uv_close((uv_handle_t *)&sv->sigterm, NULL);
    sv->stop(sv->ud);
}

void fg_serve_signals(uv_loop_t *loop, struct fg_serve *sv, void (*stop)(void *ud), void *ud)
{
    sv->stop = stop;
    sv->ud = ud;
    uv_signal_init(loop, &sv->sigint);
    uv_signal_init(loop, &sv->sigterm);
    sv->sigint.data = sv->sigterm.data = sv;
    uv_signal_start(&sv->sigint, on_signal, SIGINT);
    uv_signal_start(&sv->sigterm, on_signal, SIGTERM);
}

int fg_serve_run(uv_loop_t *loop, unsigned busy_poll_us)
{
    if (!busy_poll_us)
        return uv_run(loop, UV_RUN_DEFAULT);
    uint64_t window = (uint64_t)busy_poll_us * 1000, last = uv_hrtime();
    for (;;) {
        /* libuv's backend is an epoll fd, readable while any of its
         * descriptors is ready: a cheap look before deciding to sleep. */
        struct pollfd pfd = {.fd = uv_backend_fd(loop), .events = POLLIN};
        uint64_t now = uv_hrtime();
        int spin = poll(&pfd, 1, 0) > 0;
        if (spin)
            last = now;
        else
            spin = now - last < window;
        if (!uv_run(loop, spin ? UV_RUN_NOWAIT : UV_RUN_ONCE))
            return 0;
        if (!spin) /* woken by an event or a timer: quiet starts again */
            last = uv_hrtime();
    }
}
