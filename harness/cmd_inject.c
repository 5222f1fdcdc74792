/* cmd_inject.c - `faultgate inject`: the injector on its own, for load and
 * benchmarks (ci/bench/injector_rate.sh): N messages to HOST:PORT over C
 * parallel connections, with the scenario message options as flags.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/injector.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

static const char usage_inject[] =
    "usage: faultgate inject --to HOST:PORT [-n N] [-c C] [--size S] [--from ADDR]\n"
    "                        [--rcpt ADDR]... [--rcpts N] [--pipelining] [--bdat]\n"
    "                        [--8bit] [--no-dots] [--timeout D] [--busy-poll USEC] [-q]\n"
    "\n"
    "Submit N token-stamped messages to the SMTP server at HOST:PORT over C\n"
    "connections at once (each connection sends messages until none is left),\n"
    "then print how many were accepted and the rate. Exit 0 when all were\n"
    "accepted, 1 otherwise, 2 on bad usage.\n"
    "\n"
    "  -n, --count N      messages (default 1)\n"
    "  -c, --concurrency C  parallel connections (default 1)\n"
    "  --size S           body size, e.g. 1k (default 1k)\n"
    "  --from ADDR        envelope sender (default user1@company1.test)\n"
    "  --rcpt ADDR        a recipient (repeatable; default user2@company2.test)\n"
    "  --rcpts N          recipients per message (more made from the last --rcpt)\n"
    "  --pipelining       MAIL, RCPT..., DATA in one write when PIPELINING is offered\n"
    "  --bdat             BDAT when CHUNKING is offered\n"
    "  --8bit             UTF-8 body with BODY=8BITMIME\n"
    "  --no-dots          no body line starts with '.'\n"
    "  --timeout D        per reply (default 30s)\n"
    "  --busy-poll USEC   poll without sleeping while replies come less than USEC\n"
    "                     microseconds apart (lower latency for one CPU's worth)\n"
    "  -q, --quiet        no summary line\n";

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate inject: %s%s%s\nTry `faultgate inject --help`.\n", msg,
            arg ? ": " : "", arg ? arg : "");
    return 2;
}

static void on_done(struct fg_injector *inj, void *ud)
{
    (void)ud;
    fg_injector_close(inj, NULL, NULL);
}

int fg_cmd_inject(int argc, char **argv)
{
    enum {
        O_SIZE = 256,
        O_FROM,
        O_RCPT,
        O_RCPTS,
        O_PIPE,
        O_BDAT,
        O_8BIT,
        O_NODOTS,
        O_TIMEOUT,
        O_BUSY
    };
    static const struct option lo[] = {{"to", required_argument, NULL, 't'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"concurrency", required_argument, NULL, 'c'},
                                       {"size", required_argument, NULL, O_SIZE},
                                       {"from", required_argument, NULL, O_FROM},
                                       {"rcpt", required_argument, NULL, O_RCPT},
                                       {"rcpts", required_argument, NULL, O_RCPTS},
                                       {"pipelining", no_argument, NULL, O_PIPE},
                                       {"bdat", no_argument, NULL, O_BDAT},
                                       {"8bit", no_argument, NULL, O_8BIT},
                                       {"no-dots", no_argument, NULL, O_NODOTS},
                                       {"timeout", required_argument, NULL, O_TIMEOUT},
                                       {"busy-poll", required_argument, NULL, O_BUSY},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    char host[256] = "";
    int port = 0, quiet = 0, opt;
    uint64_t count = 1, conc = 1, size = 1024, nrcpt = 0, timeout_ms = 0, busy_us = 0;
    unsigned flags = 0;
    const char *from = "user1@company1.test";
    char **to = NULL;
    size_t nto = 0, capto = 0;
    int rc = 2;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+t:n:c:qh", lo, NULL)) != -1) {
        switch (opt) {
        case 't':
            if (fg_hostport_parse(optarg, host, sizeof(host), &port) != 0 || port <= 0) {
                rc = usage_error("bad --to (HOST:PORT)", optarg);
                goto out;
            }
            break;
        case 'n':
            if (fg_uint_parse(optarg, 1, 10000000, &count) != 0) {
                rc = usage_error("bad count", optarg);
                goto out;
            }
            break;
        case 'c':
            if (fg_uint_parse(optarg, 1, FG_INJ_MAX_CONCURRENCY, &conc) != 0) {
                rc = usage_error("bad concurrency", optarg);
                goto out;
            }
            break;
        case O_SIZE:
            if (fg_size_parse(optarg, &size) != 0) {
                rc = usage_error("bad size", optarg);
                goto out;
            }
            break;
        case O_FROM:
            from = optarg;
            break;
        case O_RCPT:
            *FG_ARRAY_PUSH(to, nto, capto) = fg_strdup(optarg);
            break;
        case O_RCPTS:
            if (fg_uint_parse(optarg, 1, FG_INJ_MAX_RCPTS, &nrcpt) != 0) {
                rc = usage_error("bad --rcpts", optarg);
                goto out;
            }
            break;
        case O_PIPE:
            flags |= FG_INJ_PIPELINING;
            break;
        case O_BDAT:
            flags |= FG_INJ_BDAT;
            break;
        case O_8BIT:
            flags |= FG_INJ_8BIT;
            break;
        case O_NODOTS:
            flags |= FG_INJ_NO_DOTS;
            break;
        case O_TIMEOUT:
            if (fg_duration_parse(optarg, &timeout_ms) != 0 || timeout_ms == 0) {
                rc = usage_error("bad --timeout", optarg);
                goto out;
            }
            break;
        case O_BUSY:
            if (fg_uint_parse(optarg, 0, 1000000, &busy_us) < 0) {
                rc = usage_error("--busy-poll wants microseconds, 0 to 1000000", optarg);
                goto out;
            }
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(usage_inject, stdout);
            rc = 0;
            goto out;
        default:
            rc = usage_error("bad option", NULL);
            goto out;
        }
    }
    if (optind != argc) {
        rc = usage_error("unexpected argument", argv[optind]);
        goto out;
    }
    if (!port) {
        rc = usage_error("--to HOST:PORT is required", NULL);
        goto out;
    }
    if (nto == 0)
        *FG_ARRAY_PUSH(to, nto, capto) = fg_strdup("user2@company2.test");
    if (nrcpt && nrcpt < nto) {
        rc = usage_error("--rcpts is fewer than the --rcpt addresses", NULL);
        goto out;
    }
    while (nto < nrcpt) {
        /* local+K@domain from the last address, as a scenario's rcpts does */
        const char *last = to[nto - 1];
        const char *at = strrchr(last, '@');
        int llen = at ? (int)(at - last) : (int)strlen(last);
        size_t k = nto;
        char *a = fg_asprintf("%.*s+%zu%s", llen, last, k, at ? at : "");
        *FG_ARRAY_PUSH(to, nto, capto) = a;
    }

    struct fg_inject_msg *msgs = fg_calloc((size_t)count, sizeof(*msgs));
    unsigned pid = (unsigned)getpid();
    uint64_t t0 = fg_wall_us() / 1000;
    for (uint64_t i = 0; i < count; i++) {
        snprintf(msgs[i].token, sizeof(msgs[i].token), "fgi-%u-%" PRIu64 "-%" PRIu64, pid, t0,
                 i + 1);
        msgs[i].from = from;
        msgs[i].to = (const char *const *)to;
        msgs[i].nto = nto;
        msgs[i].size = size;
        msgs[i].flags = flags;
        msgs[i].concurrency = (unsigned)conc;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fg_injector_opts o = {
        .host = host, .port = port, .msgs = msgs, .nmsgs = (size_t)count, .timeout_ms = timeout_ms};
    struct fg_injector *inj;
    uint64_t start = fg_now_ms();
    int r = fg_injector_start(&loop, &o, on_done, NULL, &inj);
    if (r < 0) {
        fprintf(stderr, "faultgate inject: %s\n", fg_strerror(r));
        rc = 2;
    } else {
        fg_serve_run(&loop, (unsigned)busy_us);
        double secs = (double)(fg_now_ms() - start) / 1000.0;
        size_t ok = 0;
        int first_err = 0, first_code = 0;
        for (uint64_t i = 0; i < count; i++) {
            if (msgs[i].status == 0)
                ok++;
            else if (!first_err) {
                first_err = msgs[i].status;
                first_code = msgs[i].reply_code;
            }
        }
        if (!quiet) {
            printf("%zu of %" PRIu64 " accepted in %.3f s (%.1f messages/s)\n", ok, count, secs,
                   secs > 0 ? (double)ok / secs : 0.0);
            if (first_err)
                printf("first failure: %s (reply %d)\n", fg_strerror(first_err), first_code);
        }
        rc = ok == count ? 0 : 1;
    }
    uv_loop_close(&loop);
    free(msgs);
out:
    for (size_t i = 0; i < nto; i++)
        free(to[i]);
    free(to);
    return rc;
}
