/* cmd_x400.c - `faultgate x400-peer`: the fake X.400 MTA on its own, as a
 * strict responder (default) or as an initiator that sends one message
 * (--send), optionally with an invalid minor-sync variant.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/fake_x400.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

static const char usage[] =
    "usage: faultgate x400-peer --listen HOST:PORT [--ledger FILE] [--on-invalid REACTION]\n"
    "                           [--max-checkpoint N] [--idle DUR]\n"
    "       faultgate x400-peer --send HOST:PORT --message FILE [--checkpoint N] [--window N]\n"
    "                           [--mode x410|1988] [--application p1|isode-sink]\n"
    "                           [--bug VARIANT] [--timeout DUR]\n"
    "\n"
    "Responder (--listen): a strict fake X.400 MTA speaking RFC 1006, COTP class 0, the\n"
    "ISO 8327 session layer and RTS in X.410-1984 mode (PConnect in the session\n"
    "connect) or 1988 normal mode (RTSE over ACSE and presentation), as the initiator\n"
    "chose. It answers P1 binds, and the greeting of ISODE's echo and sink test\n"
    "applications (isoc NAME rtsap sink, isoc NAME rtsap \"isode/rtse sink\"). It validates every "
    "minor\n"
    "synchronization point (X.225 Table A-4, the RTS window) and writes a ledger line\n"
    "(JSON) per message received. On an invalid SPDU it reacts with REACTION: abort\n"
    "(AB provider, protocol error; the default), abort-user, dr, er, close, reset or\n"
    "ignore. Runs until SIGINT or SIGTERM.\n"
    "\n"
    "Initiator (--send): transfer FILE in one association (checkpoint size N KiB,\n"
    "default 1; window default 3; at least window + 2 checkpoints), in X.410-1984\n"
    "mode (default) or 1988 normal mode (--mode 1988), as P1 or as a client of\n"
    "ISODE's sink application (--application isode-sink, for ISODE's tsapd).\n"
    "VARIANT produces invalid minor sync points:\n"
    "first-serial-0, duplicate-serial, skipped-serial, no-reset, no-gt, window-overrun.\n"
    "Exit status 0 when the message was transferred, 1 when the association failed,\n"
    "2 on bad usage.\n";

struct srv {
    uv_loop_t loop;
    struct fg_serve sig;
    struct fg_x400_peer *peer;
    int status;
};

static void stop_peer(void *ud)
{
    struct srv *v = ud;
    if (v->peer)
        fg_x400_peer_close(v->peer, NULL, NULL);
    v->peer = NULL;
}

static void sent(void *ud, int status, const char *detail)
{
    struct srv *v = ud;
    fprintf(stderr, "x400-peer: %s\n", detail);
    v->status = status == 0 ? 0 : 1;
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate x400-peer: %s%s%s\nTry `faultgate x400-peer --help`.\n", msg,
            arg ? ": " : "", arg ? arg : "");
    return 2;
}

int fg_cmd_x400_peer(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"ledger", required_argument, NULL, 'L'},
                                         {"on-invalid", required_argument, NULL, 'r'},
                                         {"max-checkpoint", required_argument, NULL, 'M'},
                                         {"idle", required_argument, NULL, 'i'},
                                         {"send", required_argument, NULL, 's'},
                                         {"message", required_argument, NULL, 'm'},
                                         {"checkpoint", required_argument, NULL, 'c'},
                                         {"window", required_argument, NULL, 'w'},
                                         {"bug", required_argument, NULL, 'b'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"mode", required_argument, NULL, 'o'},
                                         {"application", required_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen = NULL, *send = NULL, *ledger = NULL, *msgfile = NULL;
    struct fg_x400_peer_opts po = {0};
    struct fg_x400_send_opts so = {.checkpoint = 1, .window = 3};
    uint64_t v;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'L':
            ledger = optarg;
            break;
        case 'r':
            if (fg_x400_reaction_parse(optarg, &po.on_invalid) < 0)
                return bad("--on-invalid: expected abort, abort-user, dr, er, close, reset or "
                           "ignore",
                           optarg);
            break;
        case 'M':
            if (fg_uint_parse(optarg, 0, 65535, &v) < 0)
                return bad("--max-checkpoint: expected a number", optarg);
            po.max_checkpoint = (uint32_t)v;
            break;
        case 'i':
            if (fg_duration_parse(optarg, &po.idle_ms) < 0)
                return bad("--idle: expected a duration", optarg);
            break;
        case 's':
            send = optarg;
            break;
        case 'm':
            msgfile = optarg;
            break;
        case 'c':
            if (fg_uint_parse(optarg, 0, 65535, &v) < 0)
                return bad("--checkpoint: expected a number", optarg);
            so.checkpoint = (uint32_t)v;
            break;
        case 'w':
            if (fg_uint_parse(optarg, 1, 65535, &v) < 0)
                return bad("--window: expected a number from 1", optarg);
            so.window = (uint32_t)v;
            break;
        case 'b':
            if (fg_x400_sync_bug_parse(optarg, &so.bug) < 0)
                return bad("--bug: unknown variant", optarg);
            break;
        case 't':
            if (fg_duration_parse(optarg, &so.timeout_ms) < 0)
                return bad("--timeout: expected a duration", optarg);
            break;
        case 'o':
            if (strcmp(optarg, "x410") != 0 && strcmp(optarg, "1988") != 0)
                return bad("--mode: expected x410 or 1988", optarg);
            so.normal = strcmp(optarg, "1988") == 0;
            break;
        case 'a':
            if (strcmp(optarg, "p1") != 0 && strcmp(optarg, "isode-sink") != 0)
                return bad("--application: expected p1 or isode-sink", optarg);
            so.isode_sink = strcmp(optarg, "isode-sink") == 0;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return bad("bad option", NULL);
        }
    }
    if (optind < argc)
        return bad("unexpected argument", argv[optind]);
    if (!listen == !send)
        return bad("exactly one of --listen and --send is needed", NULL);
    char host[256];
    int port;
    struct srv sv = {0};
    uv_loop_init(&sv.loop);
    if (listen) {
        if (fg_hostport_parse(listen, host, sizeof(host), &port) < 0)
            return bad("--listen: expected HOST:PORT", listen);
        po.host = host;
        po.port = port;
        po.ledger_path = ledger;
        po.log = stderr;
        char err[FG_ERRBUF_SIZE];
        if (fg_x400_peer_new(&sv.loop, &po, &sv.peer, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate x400-peer: %s\n", err);
            uv_loop_close(&sv.loop);
            return 2;
        }
        fg_serve_signals(&sv.loop, &sv.sig, stop_peer, &sv);
        fprintf(stderr, "x400-peer: listening on %s:%d\n", host, fg_x400_peer_port(sv.peer));
        uv_run(&sv.loop, UV_RUN_DEFAULT);
        uv_loop_close(&sv.loop);
        return 0;
    }
    if (fg_hostport_parse(send, host, sizeof(host), &port) < 0)
        return bad("--send: expected HOST:PORT", send);
    if (!msgfile)
        return bad("--send needs --message FILE", NULL);
    FILE *f = fopen(msgfile, "rb");
    if (!f) {
        fprintf(stderr, "faultgate x400-peer: %s: cannot open\n", msgfile);
        return 2;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        fg_array_reserve((void **)&buf, &cap, len + 65536, 1);
        n = fread(buf + len, 1, 65536, f);
        len += n;
    } while (n > 0);
    fclose(f);
    so.host = host;
    so.port = port;
    so.msg = buf;
    so.len = len;
    so.log = stderr;
    sv.status = 1;
    int rc = fg_x400_send(&sv.loop, &so, sent, &sv, NULL);
    if (rc < 0) {
        fprintf(stderr, "faultgate x400-peer: %s\n", fg_strerror(rc));
        free(buf);
        return 2;
    }
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    free(buf);
    return sv.status;
}
