/* cmd_proxy_api.c - `faultgate proxy --api HOST:PORT` (faultgate/api.h). */
#include <stdio.h>
#include <string.h>

#include "faultgate/api.h"
#include "faultgate/error.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

struct api_serve {
    uv_loop_t loop;
    struct fg_serve sig;
    struct fg_api *api;
};

static void stop(void *ud)
{
    struct api_serve *sv = ud;
    if (sv->api)
        fg_api_close(sv->api, NULL, NULL);
    sv->api = NULL;
}

int fg_proxy_api_main(const char *api, int allow_remote, uint64_t seed, const char *pcap_path,
                      enum fg_capture_mode mode, unsigned busy_poll_us)
{
    char host[256], err[FG_ERRBUF_SIZE];
    int port;
    if (fg_hostport_parse(api, host, sizeof host, &port) < 0) {
        fprintf(stderr, "faultgate: proxy: --api wants HOST:PORT, not '%s'\n", api);
        return 2;
    }
    /* The API reconfigures the proxies: it answers the machine alone unless
     * asked otherwise (toxiproxy's clients have no authentication). */
    if (!fg_api_is_loopback(host) && !allow_remote) {
        fprintf(stderr,
                "faultgate: proxy: --api %s is not a loopback address; add --api-remote to "
                "serve it there\n",
                host);
        return 2;
    }
    struct api_serve sv;
    memset(&sv, 0, sizeof sv);
    uv_loop_init(&sv.loop);
    struct fg_capture *cap = NULL;
    int status = 2;
    struct fg_api_opts o = {.host = host,
                            .port = port,
                            .seed = seed,
                            .pcap_path = pcap_path,
                            .capture_mode = mode,
                            .capture = &cap,
                            .log = stderr};
    if (fg_api_new(&sv.loop, &o, &sv.api, err, sizeof err) < 0) {
        fprintf(stderr, "faultgate: proxy: %s\n", err);
        sv.api = NULL;
        goto out;
    }
    fg_serve_signals(&sv.loop, &sv.sig, stop, &sv);
    fprintf(stderr, "faultgate: api listening on %s:%d\n", host, fg_api_port(sv.api));
    fg_serve_run(&sv.loop, busy_poll_us);
    status = 0;
out:
    if (sv.api)
        fg_api_close(sv.api, NULL, NULL);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    if (cap && fg_capture_close(cap) < 0)
        status = 2;
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    return status;
}
