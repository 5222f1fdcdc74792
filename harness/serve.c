/* serve - stop a long-running subcommand's server on SIGINT or SIGTERM. */
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
