/* cmd_x400_proxy.c - `faultgate proxy` for X.400: the fault-injecting X.400
 * proxy (faultgate/x400_proxy.h) on its own, in front of a real X.400 MTA
 * or OSI stack, with the fault language of a scenario's `x400_faults:`.
 *
 * main.c's `proxy` hands over here when --protocol x400 is given, or when
 * the faults decide it: every --fault is an X.400 fault (and none an SMTP
 * one), or the scenario has `x400_faults:` and no SMTP `faults:`.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/fault.h"
#include "faultgate/scenario.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"

static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                     {"upstream", required_argument, NULL, 'u'},
                                     {"scenario", required_argument, NULL, 's'},
                                     {"fault", required_argument, NULL, 'f'},
                                     {"pcap", required_argument, NULL, 'p'},
                                     {"seed", required_argument, NULL, 'S'},
                                     {"capture", required_argument, NULL, 'C'},
                                     {"protocol", required_argument, NULL, 'P'},
                                     {"tls", required_argument, NULL, 'T'},
                                     {"ca-out", required_argument, NULL, 'A'},
                                     {"keylog", required_argument, NULL, 'K'},
                                     {"threads", required_argument, NULL, 'j'},
                                     {"busy-poll", required_argument, NULL, 'B'},
                                     {"help", no_argument, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};

static int is_x400_fault(const char *spec)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_fault f;
    struct fg_x400_fault xf;
    if (fg_fault_parse(spec, &f, err, sizeof(err), NULL) == 0) {
        fg_fault_clear(&f);
        return 0;
    }
    if (fg_x400_fault_parse(spec, &xf, err, sizeof(err), NULL) < 0)
        return 0;
    fg_x400_fault_clear(&xf);
    return 1;
}

int fg_cmd_proxy_protocol(int argc, char **argv)
{
    int c, x400 = -1, nx = 0, nsmtp = 0;
    const char *scenario = NULL;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+s:h", opts, NULL)) != -1) {
        if (c == 'P')
            x400 = strcmp(optarg, "x400") == 0 ? 1 : strcmp(optarg, "smtp") == 0 ? 0 : 2;
        else if (c == 'f')
            is_x400_fault(optarg) ? nx++ : nsmtp++;
        else if (c == 's')
            scenario = optarg;
    }
    opterr = 1;
    optind = 1;
    if (x400 >= 0)
        return x400;
    if (nx && !nsmtp)
        return 1;
    if (!nx && !nsmtp && scenario) {
        struct fg_scenario *sc = NULL;
        char err[FG_ERRBUF_SIZE];
        int r = 0;
        if (fg_scenario_load(scenario, &sc, err, sizeof(err)) == 0)
            r = sc->nx400_faults > 0 && sc->nfaults == 0;
        fg_scenario_free(sc);
        return r;
    }
    return 0;
}

struct xserve {
    uv_loop_t loop;
    struct fg_serve sig;
    struct fg_x400_proxy *proxy;
};

static void stop(void *ud)
{
    struct xserve *sv = ud;
    if (sv->proxy)
        fg_x400_proxy_close(sv->proxy, NULL, NULL);
    sv->proxy = NULL;
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate proxy: %s%s%s\nTry `faultgate proxy --help`.\n", msg,
            arg ? ": " : "", arg ? arg : "");
    return 2;
}

int fg_cmd_x400_proxy(int argc, char **argv)
{
    const char *listen = NULL, *upstream = NULL, *scenario = NULL, *pcap_path = NULL;
    enum fg_capture_mode mode = FG_CAPTURE_AUTO;
    uint64_t seed = 0, v;
    const char **specs = NULL;
    size_t nspecs = 0, capspecs = 0;
    int c, status = 2;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'u':
            upstream = optarg;
            break;
        case 's':
            scenario = optarg;
            break;
        case 'f':
            *FG_ARRAY_PUSH(specs, nspecs, capspecs) = optarg;
            break;
        case 'p':
            pcap_path = optarg;
            break;
        case 'S':
            if (fg_uint_parse(optarg, 0, UINT64_MAX, &v) < 0) {
                free(specs);
                return bad("--seed takes a whole number", optarg);
            }
            seed = v;
            break;
        case 'C':
            mode = strcmp(optarg, "live") == 0    ? FG_CAPTURE_LIVE
                   : strcmp(optarg, "synth") == 0 ? FG_CAPTURE_SYNTH
                   : strcmp(optarg, "auto") == 0  ? FG_CAPTURE_AUTO
                                                  : (enum fg_capture_mode) - 1;
            if ((int)mode < 0) {
                free(specs);
                return bad("--capture takes auto, live or synth", optarg);
            }
            break;
        case 'P':
            if (strcmp(optarg, "x400") != 0) {
                free(specs);
                return bad("--protocol takes smtp or x400", optarg);
            }
            break;
        case 'T':
        case 'A':
        case 'K':
        case 'j':
        case 'B':
            free(specs);
            return bad("--tls, --ca-out, --keylog, --threads and --busy-poll are SMTP options",
                       NULL);
        case 'h':
            free(specs);
            return -1; /* main.c prints the usage */
        default:
            free(specs);
            return bad("bad option", NULL);
        }
    }
    char lhost[256], uhost[256];
    int lport, uport;
    if (!listen || fg_hostport_parse(listen, lhost, sizeof(lhost), &lport) < 0) {
        free(specs);
        return bad("--listen HOST:PORT is required", listen);
    }
    if (!upstream || fg_hostport_parse(upstream, uhost, sizeof(uhost), &uport) < 0) {
        free(specs);
        return bad("--upstream HOST:PORT is required", upstream);
    }
    char err[FG_ERRBUF_SIZE];
    struct fg_x400_fault_set fs;
    fg_x400_fault_set_init(&fs, seed);
    struct fg_scenario *sc = NULL;
    struct fg_capture *cap = NULL;
    struct xserve sv;
    memset(&sv, 0, sizeof(sv));
    uv_loop_init(&sv.loop);
    if (scenario) {
        if (fg_scenario_load(scenario, &sc, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            goto out;
        }
        for (size_t i = 0; i < sc->nx400_faults; i++)
            fg_x400_fault_set_add(&fs, &sc->x400_faults[i]);
    }
    for (size_t i = 0; i < nspecs; i++) {
        struct fg_x400_fault f;
        int col = 0;
        if (fg_x400_fault_parse(specs[i], &f, err, sizeof(err), &col) < 0) {
            fprintf(stderr, "faultgate: --fault:%zu:%d: %s\n", i + 1, col, err);
            goto out;
        }
        int rc = fg_x400_fault_set_add(&fs, &f);
        fg_x400_fault_clear(&f);
        if (rc < 0) {
            fprintf(stderr, "faultgate: --fault:%zu:1: too many faults\n", i + 1);
            goto out;
        }
    }
    if (pcap_path) {
        int ports[2] = {uport, lport};
        if (fg_capture_open(&sv.loop, mode, pcap_path, ports, lport ? 2 : 1, &cap, err,
                            sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: capture: %s\n", err);
            goto out;
        }
        fprintf(stderr, "faultgate: capturing to %s (%s)\n", pcap_path,
                fg_capture_mode_name(fg_capture_mode(cap)));
    }
    struct fg_x400_proxy_opts po = {.listen_host = lhost,
                                    .listen_port = lport,
                                    .upstream_host = uhost,
                                    .upstream_port = uport,
                                    .faults = &fs,
                                    .capture = cap,
                                    .log = stderr};
    if (fg_x400_proxy_new(&sv.loop, &po, &sv.proxy, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultgate: proxy: %s\n", err);
        sv.proxy = NULL;
        goto out;
    }
    if (cap && lport == 0 && fg_capture_add_port(cap, fg_x400_proxy_port(sv.proxy)) < 0) {
        fprintf(stderr, "faultgate: capture: cannot add port %d to the filter\n",
                fg_x400_proxy_port(sv.proxy));
        goto out;
    }
    fg_serve_signals(&sv.loop, &sv.sig, stop, &sv);
    if (lport == 0)
        fprintf(stderr, "faultgate: listening on %s:%d\n", lhost, fg_x400_proxy_port(sv.proxy));
    fprintf(stderr, "faultgate: X.400 proxy %s:%d -> %s:%d, %zu fault(s) armed\n", lhost,
            fg_x400_proxy_port(sv.proxy), uhost, uport, fs.n);
    fg_serve_run(&sv.loop, 0);
    status = 0;
out:
    if (sv.proxy)
        fg_x400_proxy_close(sv.proxy, NULL, NULL);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    if (cap && fg_capture_close(cap) < 0)
        status = 2;
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    fg_x400_fault_set_free(&fs);
    fg_scenario_free(sc);
    free(specs);
    return status;
}
