/* cmd_fake_mta.c - `faultgate fake-mta`: the fake MTA on its own, with a
 * script (scenarios/FORMAT.md, "The fake MTA"), until SIGINT or SIGTERM.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

static const char usage_mta[] =
    "usage: faultgate fake-mta --listen HOST:PORT [--script FILE] [--ledger FILE]\n"
    "                          [--maildir DIR] [--hide CAP]... [--ca-out FILE]\n"
    "                          [--busy-poll USEC] [-q]\n"
    "\n"
    "Run the fake MTA: a strict SMTP server (PIPELINING, SIZE, 8BITMIME, SMTPUTF8,\n"
    "CHUNKING, DSN, ENHANCEDSTATUSCODES, STARTTLS with a test CA made at start,\n"
    "AUTH PLAIN/LOGIN) that keeps each message, writes a ledger line (JSON) per\n"
    "message and per protocol violation, and behaves per stage as the script says\n"
    "(reply, delay, close, reset, hang; smtp-sink's options). Runs until SIGINT or\n"
    "SIGTERM.\n"
    "\n"
    "  --listen HOST:PORT  where to listen (port 0: any free port, printed)\n"
    "  --script FILE       YAML script (scenarios/FORMAT.md, \"The fake MTA\")\n"
    "  --ledger FILE       JSON lines, appended\n"
    "  --maildir DIR       one file per accepted message\n"
    "  --hide CAP          do not advertise CAP (repeatable), e.g. --hide PIPELINING\n"
    "  --ca-out FILE       write the test CA certificate (PEM) for clients to verify\n"
    "  --busy-poll USEC    poll without sleeping while requests come less than USEC\n"
    "                      microseconds apart (lower latency for one CPU's worth)\n"
    "  -q, --quiet         no per-command log on stderr\n";

struct mta_serve {
    uv_loop_t loop;
    struct fg_serve sig;
    struct fg_mta *mta;
};

static void on_closed(void *ud)
{
    (void)ud;
}

static void stop_mta(void *ud)
{
    struct mta_serve *sv = ud;
    if (sv->mta)
        fg_mta_close(sv->mta, on_closed, NULL);
    sv->mta = NULL;
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate fake-mta: %s%s%s\nTry `faultgate fake-mta --help`.\n", msg,
            arg ? ": " : "", arg ? arg : "");
    return 2;
}

int fg_cmd_fake_mta(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"ledger", required_argument, NULL, 'L'},
                                         {"maildir", required_argument, NULL, 'M'},
                                         {"script", required_argument, NULL, 'x'},
                                         {"hide", required_argument, NULL, 'H'},
                                         {"ca-out", required_argument, NULL, 'C'},
                                         {"busy-poll", required_argument, NULL, 'B'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen = NULL, *ledger = NULL, *maildir = NULL, *script = NULL, *ca_out = NULL;
    unsigned hide = 0;
    uint64_t busy_us = 0;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+hq", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'L':
            ledger = optarg;
            break;
        case 'M':
            maildir = optarg;
            break;
        case 'x':
            script = optarg;
            break;
        case 'C':
            ca_out = optarg;
            break;
        case 'H': {
            unsigned b = fg_mta_cap_lookup(optarg);
            if (!b)
                return usage_error("unknown capability", optarg);
            hide |= b;
            break;
        }
        case 'B':
            if (fg_uint_parse(optarg, 0, 1000000, &busy_us) < 0)
                return usage_error("--busy-poll wants microseconds, 0 to 1000000", optarg);
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(usage_mta, stdout);
            return 0;
        default:
            return usage_error("bad option", NULL);
        }
    }
    if (optind != argc)
        return usage_error("unexpected argument", argv[optind]);
    char host[256];
    int port;
    if (!listen || fg_hostport_parse(listen, host, sizeof(host), &port) < 0)
        return usage_error("--listen HOST:PORT is required", listen);
    char err[FG_ERRBUF_SIZE];
    struct fg_mta_script sc;
    if (script) {
        if (fg_mta_script_load(script, &sc, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            return 2;
        }
    } else {
        fg_mta_script_init(&sc);
    }
    sc.caps &= ~hide;
    sc.caps_tls &= ~hide;

    struct mta_serve sv;
    memset(&sv, 0, sizeof(sv));
    uv_loop_init(&sv.loop);
    struct fg_mta_opts mo = {.host = host,
                             .port = port,
                             .ledger_path = ledger,
                             .maildir = maildir,
                             .log = quiet ? NULL : stderr,
                             .script = &sc};
    int status = 0;
    if (fg_mta_new(&sv.loop, &mo, &sv.mta, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultgate: fake MTA: %s\n", err);
        status = 2;
    } else {
        if (ca_out && fg_mta_ca_pem(sv.mta)) {
            FILE *f = fopen(ca_out, "w");
            if (!f || fputs(fg_mta_ca_pem(sv.mta), f) < 0 || fclose(f) != 0) {
                fprintf(stderr, "faultgate: fake MTA: cannot write %s\n", ca_out);
                status = 2;
            }
        }
        /* Signals before the port is printed: a caller may stop us as
         * soon as it reads it. */
        if (status == 0)
            fg_serve_signals(&sv.loop, &sv.sig, stop_mta, &sv);
        /* Printed even with -q: a caller that asked for port 0 needs it. */
        fprintf(stderr, "faultgate: fake MTA listening on %s:%d\n", host, fg_mta_port(sv.mta));
        if (status != 0)
            fg_mta_close(sv.mta, on_closed, NULL);
        fg_serve_run(&sv.loop, (unsigned)busy_us);
    }
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    fg_mta_script_clear(&sc);
    return status;
}
