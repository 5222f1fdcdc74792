/* cmd_x400_timeline.c - `faultgate x400-timeline`: print the X.400 timeline
 * of a capture (faultgate/x400_timeline.h), as text or JSON, so that a
 * person or another tool (tshark, for one) can check what the X.400
 * expectations read.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"
#include "faultgate/x400_timeline.h"

static const char usage[] =
    "usage: faultgate x400-timeline [--port N]... [--json] PCAP\n"
    "\n"
    "Decode the RFC 1006 connections of PCAP (those to port N, or every connection\n"
    "that starts with a TPKT) and print one line per TPDU, session SPDU, FIN or RST:\n"
    "frame, time, connection, direction, the SPDU with its serial number, and the\n"
    "X.225 / X.228 rule it broke. --json prints the same as a JSON array.\n"
    "Exit status 0, or 2 on bad usage or an unreadable capture.\n";

#define MAX_PORTS 16

int fg_cmd_x400_timeline(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ports[MAX_PORTS];
    size_t nports = 0;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:jh", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'p':
            if (fg_uint_parse(optarg, 1, 65535, &v) != 0) {
                fprintf(stderr, "faultgate x400-timeline: bad port \"%s\"\n", optarg);
                return 2;
            }
            if (nports == MAX_PORTS) {
                fprintf(stderr, "faultgate x400-timeline: at most %d ports\n", MAX_PORTS);
                return 2;
            }
            ports[nports++] = (int)v;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    const char *pcap = argv[optind];
    struct fg_x400_timeline *tl;
    char err[FG_ERRBUF_SIZE];
    err[0] = '\0';
    int rc = fg_x400_timeline_build(pcap, ports, nports, &tl, err, sizeof err);
    if (rc != 0) {
        if (err[0])
            fprintf(stderr, "faultgate x400-timeline: %s\n", err);
        else
            fprintf(stderr, "faultgate x400-timeline: %s: %s\n", pcap, fg_strerror(rc));
        return 2;
    }
    char why[FG_ERRBUF_SIZE];
    if (fg_trace_sufficient(pcap, &tl->stats, err, why, sizeof why) < 0) {
        fprintf(stderr, "faultgate x400-timeline: %s\n", why);
        fg_x400_timeline_free(tl);
        return 2;
    }
    if (json)
        fg_x400_timeline_json(tl, stdout);
    else
        fg_x400_timeline_print(tl, stdout, 0);
    fg_x400_timeline_free(tl);
    return 0;
}
