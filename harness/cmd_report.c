/* cmd_report.c - `faultgate report`: reports from results files.
 *
 *   faultgate report merge DIR... -o DIR      one run out of shards
 *   faultgate report html RESULTS.json [-o FILE]   re-render report.html
 *   faultgate report md RESULTS.json [-o FILE]     re-render summary.md
 *   faultgate report junit RESULTS.json [-o FILE]  re-render junit.xml
 *
 * Exit status: merge gives the merged run's status as `faultgate run`
 * would (0 passed, 1 failed or inconclusive, 2 an error); the renderers 0
 * when written; 2 for bad input, with the file at fault named.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

static const char usage[] =
    "usage: faultgate report merge DIR... -o OUTDIR\n"
    "       faultgate report html RESULTS.json [-o FILE]\n"
    "       faultgate report md RESULTS.json [-o FILE]\n"
    "       faultgate report junit RESULTS.json [-o FILE]\n"
    "\n"
    "merge  combine the output directories of sharded runs (`faultgate run --shard K/N`)\n"
    "       into OUTDIR: results.json, junit.xml, report.html, summary.md, and each\n"
    "       scenario's pcap and meta file. Exit status as for `faultgate run`.\n"
    "html   write report.html (default: beside RESULTS.json) from a results file\n"
    "md     write summary.md (default: beside RESULTS.json) from a results file\n"
    "junit  write junit.xml (default: beside RESULTS.json) from a results file\n";

static int bad_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "faultgate report: %s%s%s\nTry `faultgate report --help`.\n", msg,
            arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* The directory part of path ("." if none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return fg_strdup(".");
    if (slash == path)
        return fg_strdup("/");
    return fg_strndup(path, (size_t)(slash - path));
}

/* The pcap links of a report written to another directory than its
 * results.json: the results directory relative to the report's (absolute
 * when they share nothing but the root). */
static char *link_prefix(const char *results_dir, const char *report_dir)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(results_dir, a) || !realpath(report_dir, b))
        return fg_asprintf("%s/", results_dir);
    if (strcmp(a, b) == 0)
        return fg_strdup("");
    /* the longest run of whole leading components the two share */
    size_t common = 0;
    for (size_t i = 0; a[i] && a[i] == b[i];) {
        i++;
        if ((a[i] == '/' || a[i] == '\0') && (b[i] == '/' || b[i] == '\0'))
            common = i;
    }
    char *up = fg_strdup("");
    for (const char *p = b + common; *p; p++)
        if (*p == '/') {
            char *n = fg_asprintf("%s../", up);
            free(up);
            up = n;
        }
    const char *down = a + common;
    while (*down == '/')
        down++;
    char *r = fg_asprintf("%s%s%s", up, down, *down ? "/" : "");
    free(up);
    return r;
}

static int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return bad_usage("bad option", NULL);
        }
    }
    if (!out)
        return bad_usage("merge needs -o OUTDIR", NULL);
    if (optind >= argc)
        return bad_usage("merge needs at least one run directory", NULL);
    char err[FG_ERRBUF_SIZE];
    int status;
    if (fg_report_merge((const char *const *)&argv[optind], (size_t)(argc - optind), out, &status,
                        err, sizeof err) < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        return 2;
    }
    char *p = fg_asprintf("%s/results.json", out);
    json_t *doc = NULL;
    if (fg_results_doc_read(p, &doc, err, sizeof err) == 0) {
        const json_t *cn = json_object_get(doc, "counts");
        printf("merged %d run(s): %" JSON_INTEGER_FORMAT " passed, %" JSON_INTEGER_FORMAT
               " failed, %" JSON_INTEGER_FORMAT " inconclusive, %" JSON_INTEGER_FORMAT
               " errors, %" JSON_INTEGER_FORMAT " skipped; results in %s\n",
               argc - optind, json_integer_value(json_object_get(cn, "pass")),
               json_integer_value(json_object_get(cn, "fail")),
               json_integer_value(json_object_get(cn, "inconc")),
               json_integer_value(json_object_get(cn, "error")),
               json_integer_value(json_object_get(cn, "skip")), p);
        json_decref(doc);
    }
    free(p);
    return status;
}

static int cmd_render(const char *what, int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return bad_usage("bad option", NULL);
        }
    }
    if (optind != argc - 1)
        return bad_usage("exactly one results file is needed", NULL);
    const char *in = argv[optind];
    char err[FG_ERRBUF_SIZE];
    json_t *doc = NULL;
    if (fg_results_doc_read(in, &doc, err, sizeof err) < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        return 2;
    }
    char *rdir = dir_of(in);
    const char *name = strcmp(what, "html") == 0 ? "report.html"
                       : strcmp(what, "md") == 0 ? "summary.md"
                                                 : "junit.xml";
    char *path = out ? fg_strdup(out) : fg_asprintf("%s/%s", rdir, name);
    int rc;
    if (strcmp(what, "html") == 0) {
        char *odir = dir_of(path);
        char *prefix = link_prefix(rdir, odir);
        rc = fg_report_html_write(path, doc, prefix, err, sizeof err);
        free(prefix);
        free(odir);
    } else if (strcmp(what, "md") == 0) {
        rc = fg_report_md_write(path, doc, err, sizeof err);
    } else {
        rc = fg_results_junit_write_doc(path, doc, err, sizeof err);
    }
    if (rc < 0)
        fprintf(stderr, "faultgate: %s\n", err);
    else
        printf("%s\n", path);
    free(path);
    free(rdir);
    json_decref(doc);
    return rc < 0 ? 2 : 0;
}

int fg_cmd_report(int argc, char **argv)
{
    /* argv[0] is "report" */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "merge") == 0)
        return cmd_merge(argc - 1, argv + 1);
    if (strcmp(sub, "html") == 0 || strcmp(sub, "md") == 0 || strcmp(sub, "junit") == 0)
        return cmd_render(sub, argc - 1, argv + 1);
    return bad_usage("unknown report command", sub);
}
