/* main.c - the faultgate command line (DESIGN §4): run, judge, proxy,
 * fake-mta, list; diagnose, x400-peer and report answer "not available
 * yet".  Exit status: 0 passed, 1 failed or inconclusive, 2 faultgate could
 * not do its job (bad input, gateway did not start, capture failed).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/datadir.h"
#include "faultgate/diagnose.h"
#include "faultgate/scenario_from_pcap.h"
#include "faultgate/transcript.h"
#include "faultgate/report.h"
#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/injector.h"
#include "faultgate/fake_x400.h"
#include "faultgate/fault.h"
#include "faultgate/api.h"
#include "faultgate/proxy.h"
#include "faultgate/scenario.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"
#include "faultgate/x400_timeline.h"
#include "run.h"

#include "../fakes/tls.h"

static const char usage_main[] =
    "usage: faultgate COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "SMTP protocol conformance and fault-injection harness.\n"
    "\n"
    "commands:\n"
    "  run       run scenarios against a gateway under test\n"
    "  judge     judge a saved trace against a scenario\n"
    "  proxy     run the fault-injecting proxy on its own\n"
    "  fake-mta  run the fake MTA on its own\n"
    "  list      list scenarios with their sources\n"
    "  diagnose  find the knowledge-base symptoms in any capture\n"
    "  report    merge shards; re-render report.html, summary.md, junit\n"
    "  x400-peer  run the fake X.400 MTA (responder or initiator)\n"
    "  scenario from-pcap  write a scenario reproducing a capture's next hop\n"
    "  transcript  print a capture's SMTP and X.400 connections, faults marked\n"
    "  x400-timeline  print the X.400 sessions of a capture\n"
    "\n"
    "`faultgate COMMAND --help` describes each command.\n";

static const char usage_run[] =
    "usage: faultgate run [-g PROFILE] [-o DIR] [-j N] [--seed N] [--shard K/N]\n"
    "                     [--capture auto|live|synth] [--capture-format pcapng|pcap]\n"
    "                     [-q] [-v] SCENARIO|DIR...\n"
    "       faultgate run --last-failed RUNDIR [options] [SCENARIO|DIR...]\n"
    "\n"
    "Start the gateway described by PROFILE (default: the bundled refgw profile),\n"
    "put the fault-injecting proxy and the fake MTA behind it, run each scenario,\n"
    "capture the wire and judge it. Writes DIR/results.json, DIR/junit.xml and one\n"
    "pcap (+ .meta.json) per scenario; DIR defaults to reports/runs/<run-id>.\n"
    "A SCENARIO or PROFILE that is not a path names a bundled one: `run kb`,\n"
    "`run rfc5321 security`, `-g postfix` (data directory: $FAULTGATE_DATADIR,\n"
    "else the installed share/faultgate; `faultgate list` shows the suites).\n"
    "\n"
    "  -g, --gateway PROFILE   gateway profile (YAML file, or a bundled name)\n"
    "  -o, --out DIR           output directory\n"
    "      --seed N            seed for probabilistic faults (default: the time)\n"
    "      --shard K/N         run only shard K of N (stable by scenario id)\n"
    "      --capture MODE      auto (live if permitted, else synthesized), live, synth\n"
    "      --capture-format F  pcapng (default: fault decisions and verdict evidence\n"
    "                          as frame comments) or pcap (plain, as captured)\n"
    "  -j, --jobs N            run up to N scenarios at once, each with its own gateway\n"
    "                          (default: 2 per CPU, from 2 to 8; a profile's\n"
    "                          `parallel:` caps it); output stays in catalogue order\n"
    "      --last-failed RUNDIR  run again what did not pass in RUNDIR/results.json\n"
    "                          (its profile and seed unless -g/--seed; with SCENARIO|DIR,\n"
    "                          also what that run never reached)\n"
    "  -q, --quiet             print nothing but errors\n"
    "  -v, --verbose           print passing evidence and the proxy's decisions\n"
    "\n"
    "results.json, junit.xml and summary.md are rewritten after every scenario.\n"
    "SIGINT, SIGTERM or SIGHUP stops the running scenarios (their gateways stopped\n"
    "and reaped), records them as errors (\"interrupted\"), writes the reports and\n"
    "exits 2; a second signal skips the gateways' stop grace.\n"
    "\n"
    "exit status: 0 all passed or skipped, 1 a scenario failed or was inconclusive,\n"
    "2 faultgate could not do its job (bad input, gateway did not start, capture)\n"
    "or the run was interrupted.\n";

static const char usage_judge[] =
    "usage: faultgate judge -s SCENARIO [-o DIR] [--meta FILE] [--keylog FILE] TRACE.pcap\n"
    "\n"
    "Judge a saved trace with a scenario's expectations, as the live run did. The\n"
    "run's metadata (ports and roles, the profile's timeouts, fault decisions) is read\n"
    "from TRACE.meta.json beside the trace unless --meta names it. What follows\n"
    "STARTTLS is decrypted with the TLS key log (NSS format) that --keylog names,\n"
    "by default the run's <id>.keys beside the trace. With -o, writes\n"
    "results.json and junit.xml there. Exit status as for `run`.\n";

static const char usage_proxy[] =
    "usage: faultgate proxy --listen HOST:PORT --upstream HOST:PORT [--protocol smtp|x400]\n"
    "                       [-s SCENARIO | --fault SPEC]... [--pcap FILE] [--seed N]\n"
    "                       [--capture auto|live|synth]\n"
    "                       [--tls passthrough|terminate] [--ca-out FILE] [--keylog FILE]\n"
    "                       [--threads N] [--busy-poll USEC]\n"
    "       faultgate proxy --api HOST:PORT [--api-remote] [--seed N] [--pcap FILE]\n"
    "\n"
    "Forward SMTP from HOST:PORT to the upstream, injecting faults. A fault is\n"
    "`TRIGGER [, SELECTOR]... : ACTION [ARGS]`, for example\n"
    "  --fault 'reply 354: stall'   --fault 'command EHLO, first: close'\n"
    "(syntax: scenarios/FORMAT.md). Each decision is logged to stderr. Runs until\n"
    "SIGINT or SIGTERM.\n"
    "\n"
    "--tls terminate (or the scenario's `tls: terminate`) ends STARTTLS at the\n"
    "proxy on both legs so that faults act on the plaintext after it; the client\n"
    "must trust the proxy's test CA, written to --ca-out FILE (PEM). --keylog\n"
    "FILE appends the TLS secrets (NSS key log format) for Wireshark.\n"
    "\n"
    "--threads N spreads the connections over N event loops (0: one per CPU;\n"
    "default 1). Connections are still numbered in accept order and every\n"
    "decision is the same; only concurrent connections' log lines may interleave.\n"
    "--busy-poll USEC keeps each loop polling without sleeping while events come\n"
    "less than USEC microseconds apart: lower latency for a CPU per loop.\n"
    "\n"
    "--protocol x400 forwards RFC 1006 / ISO 8327 session traffic (X.400 P1 over\n"
    "RTS, X.410-1984 or 1988 mode) and takes X.400 faults, the language of a\n"
    "scenario's `x400_faults:`; without --protocol the faults decide (all X.400\n"
    "faults, or a scenario with only `x400_faults:`: X.400). For example\n"
    "  --fault 'spdu MIP: abort'                  S-P-ABORT on the first minor sync\n"
    "  --fault 'spdu MIP c2s #2: abort user rts'  user abort with RTS AbortInformation\n"
    "  --fault 'spdu MIP serial 2: rewrite-serial +5'   an out-of-sequence serial\n"
    "  --fault 'activity-end: dr reason 85'       COTP DR instead of the AE\n"
    "(the TLS, --threads and --busy-poll options are SMTP-only).\n"
    "\n"
    "--api HOST:PORT serves toxiproxy's HTTP API (e.g. 127.0.0.1:8474): proxies and\n"
    "toxics are created at run time by toxiproxy's clients; the toxic type\n"
    "`faultgate` takes a fault spec ({\"spec\": \"command EHLO: close\"}). A HOST off\n"
    "the loopback network needs --api-remote. See faultgate(1).\n";

static const char usage_list[] =
    "usage: faultgate list [SCENARIO|DIR...]\n"
    "\n"
    "List scenarios with their id, leg, sources and title. With no argument, the\n"
    "bundled suites (a bare suite name such as `kb` also names a bundled one).\n";

static int parse_capture(const char *s, enum fg_capture_mode *m)
{
    if (strcmp(s, "auto") == 0)
        *m = FG_CAPTURE_AUTO;
    else if (strcmp(s, "live") == 0)
        *m = FG_CAPTURE_LIVE;
    else if (strcmp(s, "synth") == 0)
        *m = FG_CAPTURE_SYNTH;
    else
        return -1;
    return 0;
}

static int bad_usage(const char *cmd, const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate %s: %s%s%s\n", cmd, msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "Try `faultgate %s --help`.\n", cmd);
    return 2;
}

/* resolve_all - each of n command-line names resolved against the data
 * root (datadir.h); free with free_all. */
static char **resolve_all(char *const *names, size_t n, enum fg_datadir_kind kind)
{
    char **v = fg_calloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = fg_datadir_resolve(names[i], kind);
    return v;
}

static void free_all(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* missing - name (as resolved) is neither a path nor a bundled one: say so
 * once, with where the bundled ones were looked for; 1 if it is missing. */
static int missing(const char *cmd, const char *name, enum fg_datadir_kind kind)
{
    if (access(name, F_OK) == 0)
        return 0;
    const char *root = fg_datadir();
    fprintf(stderr, "faultgate %s: %s: %s, and no bundled %s of that name%s%s%s\n", cmd, name,
            strerror(errno), kind == FG_DATA_PROFILE ? "profile" : "suite",
            root ? " in " : " (no data directory found; set FAULTGATE_DATADIR)", root ? root : "",
            root ? (kind == FG_DATA_PROFILE ? "/scenarios/gateways" : "/scenarios") : "");
    return 1;
}

static int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"gateway", required_argument, NULL, 'g'}, {"out", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 'S'},    {"shard", required_argument, NULL, 'H'},
        {"capture", required_argument, NULL, 'C'}, {"capture-format", required_argument, NULL, 'F'},
        {"jobs", required_argument, NULL, 'j'},    {"last-failed", required_argument, NULL, 'L'},
        {"quiet", no_argument, NULL, 'q'},         {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    char *profile_own = NULL;
    struct fg_run_opts o = {.capture = FG_CAPTURE_AUTO};
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "+g:o:j:qvh", opts, NULL)) != -1) {
        switch (c) {
        case 'g':
            o.profile_path = optarg;
            o.profile_set = 1;
            break;
        case 'o':
            o.out_dir = optarg;
            break;
        case 'j':
            if (fg_uint_parse(optarg, 1, 64, &v) < 0)
                return bad_usage("run", "-j takes a number from 1 to 64", optarg);
            o.jobs = (unsigned)v;
            break;
        case 'L':
            o.last_failed = optarg;
            break;
        case 'S':
            if (fg_uint_parse(optarg, 0, UINT64_MAX, &v) < 0)
                return bad_usage("run", "--seed takes a whole number", optarg);
            o.seed = v;
            o.seed_set = 1;
            break;
        case 'H': {
            unsigned k, n;
            char tail;
            if (sscanf(optarg, "%u/%u%c", &k, &n, &tail) != 2 || n == 0 || k == 0 || k > n)
                return bad_usage("run", "--shard takes K/N with 1 <= K <= N", optarg);
            o.shard_k = k;
            o.shard_n = n;
            break;
        }
        case 'C':
            if (parse_capture(optarg, &o.capture) < 0)
                return bad_usage("run", "--capture takes auto, live or synth", optarg);
            break;
        case 'F':
            if (strcmp(optarg, "pcap") != 0 && strcmp(optarg, "pcapng") != 0)
                return bad_usage("run", "--capture-format takes pcapng or pcap", optarg);
            o.capture_pcap = strcmp(optarg, "pcap") == 0;
            break;
        case 'q':
            o.quiet = 1;
            break;
        case 'v':
            o.verbose = 1;
            break;
        case 'h':
            fputs(usage_run, stdout);
            return 0;
        default:
            return bad_usage("run", "bad option", NULL);
        }
    }
    if (optind >= argc && !o.last_failed)
        return bad_usage("run", "no scenario given", NULL);
    int profile_given = o.profile_path != NULL;
    profile_own = o.profile_path ? fg_datadir_resolve(o.profile_path, FG_DATA_PROFILE)
                                 : fg_datadir_default_profile();
    o.profile_path = profile_own;
    char **paths = resolve_all(&argv[optind], (size_t)(argc - optind), FG_DATA_SUITE);
    o.paths = (const char *const *)paths;
    o.npaths = (size_t)(argc - optind);
    int bad = 0;
    if (!profile_given && access(o.profile_path, F_OK) != 0) {
        const char *env = getenv("FAULTGATE_DATADIR");
        fprintf(stderr, "faultgate run: the default profile %s: %s%s%s%s\n", o.profile_path,
                strerror(errno), env && *env ? " (FAULTGATE_DATADIR=" : "", env && *env ? env : "",
                env && *env ? ")" : "");
        bad = 1;
    } else {
        bad = missing("run", o.profile_path, FG_DATA_PROFILE);
    }
    for (size_t i = 0; i < o.npaths && !bad; i++)
        bad = missing("run", paths[i], FG_DATA_SUITE);
    int rc = bad ? 2 : fg_run_main(&o);
    free_all(paths, o.npaths);
    free(profile_own);
    return rc;
}

static int cmd_judge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, 's'}, {"out", required_argument, NULL, 'o'},
        {"meta", required_argument, NULL, 'm'},     {"keylog", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *sc = NULL, *out = NULL, *meta = NULL, *keylog = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "+s:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sc = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'm':
            meta = optarg;
            break;
        case 'k':
            keylog = optarg;
            break;
        case 'h':
            fputs(usage_judge, stdout);
            return 0;
        default:
            return bad_usage("judge", "bad option", NULL);
        }
    }
    if (!sc)
        return bad_usage("judge", "-s SCENARIO is required", NULL);
    if (optind != argc - 1)
        return bad_usage("judge", "exactly one trace file is needed", NULL);
    char *sc_path = fg_datadir_resolve(sc, FG_DATA_SUITE);
    int rc = fg_judge_main(sc_path, out, argv[optind], meta, keylog);
    free(sc_path);
    return rc;
}

/* --- long-running subcommands ------------------------------------------ */

struct serve {
    uv_loop_t loop;
    struct fg_serve sig;
    struct fg_proxy *proxy;
    struct fg_mta *mta;
    struct fg_capture *cap;
};

static void served_closed(void *ud)
{
    (void)ud;
}

static void stop_serving(void *ud)
{
    struct serve *sv = ud;
    if (sv->proxy)
        fg_proxy_close(sv->proxy, served_closed, NULL);
    if (sv->mta)
        fg_mta_close(sv->mta, served_closed, NULL);
    sv->proxy = NULL;
    sv->mta = NULL;
}

static int cmd_proxy(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"upstream", required_argument, NULL, 'u'},
                                         {"scenario", required_argument, NULL, 's'},
                                         {"fault", required_argument, NULL, 'f'},
                                         {"pcap", required_argument, NULL, 'p'},
                                         {"seed", required_argument, NULL, 'S'},
                                         {"capture", required_argument, NULL, 'C'},
                                         {"tls", required_argument, NULL, 'T'},
                                         {"ca-out", required_argument, NULL, 'A'},
                                         {"keylog", required_argument, NULL, 'K'},
                                         {"threads", required_argument, NULL, 'j'},
                                         {"busy-poll", required_argument, NULL, 'B'},
                                         {"protocol", required_argument, NULL, 'P'},
                                         {"api", required_argument, NULL, 'I'},
                                         {"api-remote", no_argument, NULL, 'R'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *api = NULL;
    int api_remote = 0, threads_set = 0, api_x400 = 0;
    /* X.400: harness/cmd_x400_proxy.c */
    switch (fg_cmd_proxy_protocol(argc, argv)) {
    case 1: {
        int st = fg_cmd_x400_proxy(argc, argv);
        if (st >= 0)
            return st;
        break; /* --help: the usage below */
    }
    case 2:
        return bad_usage("proxy", "--protocol takes smtp or x400", NULL);
    default:
        break;
    }
    const char *listen = NULL, *upstream = NULL, *scenario = NULL, *pcap_path = NULL;
    const char *ca_out = NULL, *keylog_path = NULL;
    int tls = -1; /* -1: as the scenario says */
    FILE *keylog = NULL;
    enum fg_capture_mode mode = FG_CAPTURE_AUTO;
    uint64_t seed = 0;
    unsigned threads = 1, busy_us = 0;
    struct fg_serve_fault {
        const char *spec;
    } *specs = NULL;
    size_t nspecs = 0, capspecs = 0;
    int c, status = 2;
    uint64_t v;
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
            FG_ARRAY_PUSH(specs, nspecs, capspecs)->spec = optarg;
            break;
        case 'p':
            pcap_path = optarg;
            break;
        case 'S':
            if (fg_uint_parse(optarg, 0, UINT64_MAX, &v) < 0) {
                free(specs);
                return bad_usage("proxy", "--seed takes a whole number", optarg);
            }
            seed = v;
            break;
        case 'C':
            if (parse_capture(optarg, &mode) < 0) {
                free(specs);
                return bad_usage("proxy", "--capture takes auto, live or synth", optarg);
            }
            break;
        case 'T':
            if (strcmp(optarg, "terminate") != 0 && strcmp(optarg, "passthrough") != 0) {
                free(specs);
                return bad_usage("proxy", "--tls takes passthrough or terminate", optarg);
            }
            tls = strcmp(optarg, "terminate") == 0;
            break;
        case 'A':
            ca_out = optarg;
            break;
        case 'j':
            if (fg_uint_parse(optarg, 0, 64, &v) < 0) {
                free(specs);
                return bad_usage("proxy", "--threads takes 0 (one per CPU) to 64", optarg);
            }
            threads = v ? (unsigned)v : uv_available_parallelism();
            threads_set = 1;
            break;
        case 'I':
            api = optarg;
            break;
        case 'R':
            api_remote = 1;
            break;
        case 'B':
            if (fg_uint_parse(optarg, 0, 1000000, &v) < 0) {
                free(specs);
                return bad_usage("proxy", "--busy-poll wants microseconds, 0 to 1000000", optarg);
            }
            busy_us = (unsigned)v;
            break;
        case 'K':
            keylog_path = optarg;
            break;
        case 'P':
            api_x400 = strcmp(optarg, "smtp") != 0; /* x400 was handed over above, but not
                                                       past an --api before it */
            break;
        case 'h':
            free(specs);
            fputs(usage_proxy, stdout);
            return 0;
        default:
            free(specs);
            return bad_usage("proxy", "bad option", NULL);
        }
    }
    if (api) {
        /* The API creates the proxies: each one single-threaded, its
         * faults the toxics added through the API. */
        int extra = listen || upstream || scenario || nspecs || tls >= 0 || threads_set || ca_out ||
                    keylog_path || api_x400;
        free(specs);
        if (extra)
            return bad_usage("proxy",
                             "--api takes only --seed, --pcap, --capture and --busy-poll; "
                             "proxies are created through it",
                             NULL);
        return fg_proxy_api_main(api, api_remote, seed, pcap_path, mode, busy_us);
    }
    char lhost[256], uhost[256];
    int lport, uport;
    if (!listen || fg_hostport_parse(listen, lhost, sizeof(lhost), &lport) < 0) {
        free(specs);
        return bad_usage("proxy", "--listen HOST:PORT is required", listen);
    }
    if (!upstream || fg_hostport_parse(upstream, uhost, sizeof(uhost), &uport) < 0) {
        free(specs);
        return bad_usage("proxy", "--upstream HOST:PORT is required", upstream);
    }

    char err[FG_ERRBUF_SIZE];
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, seed);
    struct fg_scenario *sc = NULL;
    struct serve sv;
    memset(&sv, 0, sizeof(sv));
    uv_loop_init(&sv.loop);
    if (scenario) {
        if (fg_scenario_load(scenario, &sc, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            goto out;
        }
        for (size_t i = 0; i < sc->nfaults; i++) {
            struct fg_fault f = sc->faults[i];
            f.spec = f.spec ? fg_strdup(f.spec) : NULL;
            f.reply_text = f.reply_text ? fg_strdup(f.reply_text) : NULL;
            fg_fault_set_add(&fs, &f);
        }
    }
    for (size_t i = 0; i < nspecs; i++) {
        struct fg_fault f;
        int col = 0;
        if (fg_fault_parse(specs[i].spec, &f, err, sizeof(err), &col) < 0) {
            fprintf(stderr, "faultgate: --fault:%zu:%d: %s\n", i + 1, col, err);
            goto out;
        }
        fg_fault_set_add(&fs, &f);
    }
    if (pcap_path) {
        /* --listen HOST:0: the port the kernel picks joins the filter once
         * the proxy is bound, before anyone can have learnt it. */
        int ports[2] = {uport, lport};
        if (fg_capture_open(&sv.loop, mode, pcap_path, ports, lport ? 2 : 1, &sv.cap, err,
                            sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: capture: %s\n", err);
            goto out;
        }
        fprintf(stderr, "faultgate: capturing to %s (%s)\n", pcap_path,
                fg_capture_mode_name(fg_capture_mode(sv.cap)));
    }
    struct fg_proxy_opts po = {.listen_host = lhost,
                               .listen_port = lport,
                               .upstream_host = uhost,
                               .upstream_port = uport,
                               .faults = &fs,
                               .capture = sv.cap,
                               .log = stderr,
                               .tls_terminate = tls >= 0 ? tls : sc && sc->tls_terminate,
                               .tls_hostname = sc && sc->mta ? sc->mta->hostname : NULL,
                               .threads = threads,
                               .busy_poll_us = busy_us};
    if (keylog_path && !(keylog = fopen(keylog_path, "ae"))) {
        fprintf(stderr, "faultgate: %s: %s\n", keylog_path, strerror(errno));
        goto out;
    }
    fg_tls_keylog_set(keylog);
    if (fg_proxy_new(&sv.loop, &po, &sv.proxy, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultgate: proxy: %s\n", err);
        sv.proxy = NULL;
        goto out;
    }
    if (sv.cap && lport == 0 && fg_capture_add_port(sv.cap, fg_proxy_port(sv.proxy)) < 0) {
        fprintf(stderr, "faultgate: capture: cannot add port %d to the filter\n",
                fg_proxy_port(sv.proxy));
        goto out;
    }
    if (ca_out && fg_proxy_tls_ca_pem(sv.proxy)) {
        FILE *f = fopen(ca_out, "w");
        int bad = !f || fputs(fg_proxy_tls_ca_pem(sv.proxy), f) < 0;
        if ((f && fclose(f) != 0) || bad) {
            fprintf(stderr, "faultgate: %s: cannot write the CA\n", ca_out);
            goto out;
        }
    }
    /* Signals first: a caller may stop us as soon as it reads the port. */
    fg_serve_signals(&sv.loop, &sv.sig, stop_serving, &sv);
    if (lport == 0)
        fprintf(stderr, "faultgate: listening on %s:%d\n", lhost, fg_proxy_port(sv.proxy));
    fprintf(stderr, "faultgate: proxy %s:%d -> %s:%d, %zu fault(s) armed\n", lhost,
            fg_proxy_port(sv.proxy), uhost, uport, fs.n);
    /* With workers the caller's loop only owns the listener: it sleeps. */
    fg_serve_run(&sv.loop, threads > 1 ? 0 : busy_us);
    status = 0;
out:
    if (sv.proxy)
        fg_proxy_close(sv.proxy, served_closed, NULL);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    if (sv.cap && fg_capture_close(sv.cap) < 0)
        status = 2;
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    fg_tls_keylog_set(NULL);
    if (keylog)
        fclose(keylog);
    fg_fault_set_free(&fs);
    fg_scenario_free(sc);
    free(specs);
    return status;
}

static void print_list(const char *const *items, size_t n, const char *prefix)
{
    for (size_t i = 0; i < n; i++)
        /* a security advisory (CVE-...) names itself; a KB number does not */
        printf("%s%s%s", i ? ", " : "", strncmp(items[i], "CVE-", 4) ? prefix : "", items[i]);
}

static int cmd_list(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage_list, stdout);
        return 0;
    }
    /* No argument: the bundled suites (every directory under the data
     * root's scenarios/ but the gateway profiles). */
    char *def = fg_datadir() ? fg_asprintf("%s/scenarios", fg_datadir()) : fg_strdup("scenarios");
    size_t npaths = argc > 1 ? (size_t)(argc - 1) : 1;
    char **paths = argc > 1 ? resolve_all(&argv[1], npaths, FG_DATA_SUITE)
                            : resolve_all(&def, 1, FG_DATA_SUITE);
    free(def);
    char err[FG_ERRBUF_SIZE];
    char **files = NULL;
    size_t nfiles = 0;
    int frc =
        fg_scenario_find((const char *const *)paths, npaths, &files, &nfiles, err, sizeof(err));
    free_all(paths, npaths);
    if (frc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        return 2;
    }
    int status = 0;
    for (size_t i = 0; i < nfiles; i++) {
        struct fg_scenario *sc = NULL;
        if (fg_scenario_load(files[i], &sc, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            status = 2;
            continue;
        }
        printf("%-40s %-8s ", sc->id,
               sc->leg == FG_LEG_INBOUND ? "inbound"
               : sc->leg == FG_LEG_X400  ? "x400"
                                         : "outbound");
        print_list((const char *const *)sc->kb, sc->nkb, "KB ");
        if (sc->nkb && sc->nrfc)
            printf("; ");
        print_list((const char *const *)sc->rfc, sc->nrfc, "RFC ");
        printf("\n    %s\n", sc->title ? sc->title : "");
        fg_scenario_free(sc);
    }
    fg_scenario_paths_free(files, nfiles);
    return status;
}

int main(int argc, char **argv)
{
    /* A peer that closes while we write must be an error code, not a
     * signal that kills the harness and loses the trace. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fputs(usage_main, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("faultgate %s\n", FG_VERSION);
        return 0;
    }
    argc--;
    argv++;
    optind = 1;
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc, argv);
    if (strcmp(cmd, "judge") == 0)
        return cmd_judge(argc, argv);
    if (strcmp(cmd, "proxy") == 0)
        return cmd_proxy(argc, argv);
    if (strcmp(cmd, "fake-mta") == 0)
        return fg_cmd_fake_mta(argc, argv); /* harness/cmd_fake_mta.c */
    if (strcmp(cmd, "inject") == 0)
        return fg_cmd_inject(argc, argv); /* harness/cmd_inject.c; for load and benchmarks */
    if (strcmp(cmd, "list") == 0)
        return cmd_list(argc, argv);
    if (strcmp(cmd, "diagnose") == 0)
        return fg_cmd_diagnose(argc, argv);
    if (strcmp(cmd, "report") == 0)
        return fg_cmd_report(argc, argv);
    if (strcmp(cmd, "x400-peer") == 0)
        return fg_cmd_x400_peer(argc, argv); /* harness/cmd_x400.c */
    if (strcmp(cmd, "scenario") == 0)
        return fg_cmd_scenario(argc, argv); /* harness/scenario_from_pcap.c */
    if (strcmp(cmd, "transcript") == 0)
        return fg_cmd_transcript(argc, argv); /* harness/transcript.c */
    if (strcmp(cmd, "x400-timeline") == 0)
        return fg_cmd_x400_timeline(argc, argv); /* harness/cmd_x400_timeline.c */
    fprintf(stderr, "faultgate: unknown command `%s`\n%s", cmd, usage_main);
    return 2;
}
