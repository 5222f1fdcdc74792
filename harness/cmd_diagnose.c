/* cmd_diagnose.c - `faultgate diagnose [--json] [--stall DURATION] TRACE`:
 * the knowledge-base symptoms of any capture (diagnose.h), for a person or
 * as JSON.  Exit status: 0 no symptom found, 1 symptoms found, 2 the
 * capture could not be read or the command line is wrong.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "faultgate/diagnose.h"
#include "faultgate/error.h"
#include "faultgate/util.h"

static const char usage[] =
    "usage: faultgate diagnose [--json] [--stall DURATION] TRACE.pcap\n"
    "\n"
    "Find the knowledge-base symptoms in any capture (pcap or pcapng), with no\n"
    "scenario and no knowledge of roles: end of data never answered (Q129140),\n"
    "closed after EHLO before the reply (Q197142), a message accepted and never\n"
    "relayed nor bounced (Q135031), inbound connections unanswered while a session\n"
    "stalls (Q131150).  Each finding names the connection and its frames.\n"
    "\n"
    "  --json            one JSON object on stdout\n"
    "  --stall DURATION  silence that counts as a stall or no answer (default 5s)\n"
    "\n"
    "Exit status: 0 nothing found, 1 symptoms found, 2 the trace could not be read.\n";

int fg_cmd_diagnose(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"stall", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int json = 0, c;
    struct fg_diag_opts opts = {0};
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 's': {
            uint64_t ms;
            if (fg_duration_parse(optarg, &ms) != 0 || ms == 0) {
                fprintf(stderr, "faultgate diagnose: --stall \"%s\": not a duration (e.g. 5s)\n",
                        optarg);
                return 2;
            }
            opts.stall_us = ms * 1000;
            break;
        }
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "faultgate diagnose: exactly one trace file is needed\n%s", usage);
        return 2;
    }
    const char *path = argv[optind];
    char err[FG_ERRBUF_SIZE] = "";
    struct fg_diag_report *r = NULL;
    if (fg_diagnose(path, &opts, &r, err, sizeof err) < 0) {
        /* libpcap's reasons do not always name the file. */
        if (strncmp(err, path, strlen(path)) == 0)
            fprintf(stderr, "faultgate diagnose: %s\n", err);
        else
            fprintf(stderr, "faultgate diagnose: %s: %s\n", path, err[0] ? err : "cannot read");
        return 2;
    }
    if (json)
        fg_diag_print_json(stdout, path, r);
    else
        fg_diag_print(stdout, path, r);
    int status = r->n ? 1 : 0;
    fg_diag_report_free(r);
    return status;
}
