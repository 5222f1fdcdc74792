/* faultgate/api.h - the proxy's control API: toxiproxy's HTTP/JSON API
 * (its README, "HTTP API"), so that toxiproxy's clients drive faultgate
 * unchanged, plus faultgate's own protocol-aware faults.
 *
 *   GET    /proxies                      every proxy, by name
 *   POST   /proxies                      create (201; 409 if it exists)
 *   GET    /proxies/{name}               inspect (404 if unknown)
 *   POST|PATCH /proxies/{name}           listen, upstream, enabled
 *   DELETE /proxies/{name}               204
 *   GET    /proxies/{name}/toxics        the toxics, in the order added
 *   POST   /proxies/{name}/toxics        add (200; 409 if the name exists)
 *   GET|POST|PATCH|DELETE /proxies/{name}/toxics/{toxic}
 *   POST   /reset                        enable all, remove every toxic (204)
 *   POST   /populate                     create or replace a list (201)
 *   GET    /version
 *   GET    /proxies/{name}/decisions     faultgate: the fault decisions
 *
 * Errors are {"error": TEXT, "status": CODE} with toxiproxy's texts.  A
 * request whose User-Agent starts with "Mozilla/" is refused (403), as
 * toxiproxy does, so that a web page cannot drive the proxy.
 *
 * Threads: libmicrohttpd runs the HTTP side in its own thread; every
 * request is handed to the caller's loop (a locked queue and a uv_async
 * wake-up) and answered from there, so the proxies, their fault sets and
 * the decision logs are only ever touched on the loop, between the
 * forwarding callbacks.  Each proxy is a single-threaded fg_proxy.
 */
#ifndef FAULTGATE_API_H
#define FAULTGATE_API_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "faultgate/capture.h"

struct fg_api;

struct fg_api_opts {
    const char *host; /* numeric address to bind */
    int port;         /* 0: ephemeral */
    uint64_t seed;    /* every proxy's fault set */
    /* With pcap_path, the capture opens when the first proxy starts (so
     * that its filter never needs to be "every port") into *capture, which
     * the caller closes once the loop has run the proxies' closing. */
    const char *pcap_path;
    enum fg_capture_mode capture_mode;
    struct fg_capture **capture;
    FILE *log; /* decisions and API errors; may be NULL */
};

int fg_api_new(uv_loop_t *loop, const struct fg_api_opts *o, struct fg_api **out, char *err,
               size_t errlen);
int fg_api_port(const struct fg_api *a);
/* fg_api_close - stop the HTTP thread, close every proxy, then cb; a is
 * freed before cb runs. */
void fg_api_close(struct fg_api *a, void (*cb)(void *ud), void *ud);

/* fg_proxy_api_main - `faultgate proxy --api HOST:PORT`: serve the API
 * (and the proxies it creates) until SIGINT or SIGTERM.  A non-loopback
 * HOST only with allow_remote.  pcap_path may be NULL.  Exit status. */
int fg_proxy_api_main(const char *api, int allow_remote, uint64_t seed, const char *pcap_path,
                      enum fg_capture_mode mode, unsigned busy_poll_us);

/* fg_api_is_loopback - a numeric address on the loopback network. */
int fg_api_is_loopback(const char *host);

#endif
