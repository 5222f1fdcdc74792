/* faultgate/report.h - the human reports drawn from a results document
 * (faultgate/results.h): report.html for engineers and qualification,
 * summary.md for CI job summaries, and the merge of sharded runs.
 *
 * Every report reads only the results document, so `faultgate report html
 * results.json` and `faultgate report merge` give what the live run gave.
 */
#ifndef FAULTGATE_REPORT_H
#define FAULTGATE_REPORT_H

#include <jansson.h>
#include <stddef.h>

/* fg_report_html_write - write report.html for doc to path.  pcap_prefix
 * is prepended to each scenario's pcap (relative to the results file) to
 * make the links, "" when the report sits beside results.json. */
int fg_report_html_write(const char *path, const json_t *doc, const char *pcap_prefix, char *err,
                         size_t errlen);

/* fg_report_md_write - write summary.md (GitHub/GitLab flavoured Markdown)
 * for doc to path. */
int fg_report_md_write(const char *path, const json_t *doc, char *err, size_t errlen);

/* fg_report_write_all - report.html and summary.md for doc, in dir. */
int fg_report_write_all(const char *dir, const json_t *doc, char *err, size_t errlen);

/* fg_report_write_dir - read dir/results.json and write report.html and
 * summary.md beside it: what `faultgate run` does after writing
 * results.json, so the run's report is exactly the one `faultgate report
 * html` renders from the file. */
int fg_report_write_dir(const char *dir, char *err, size_t errlen);

/* fg_report_merge - read DIR/results.json of each of dirs, and write one
 * results.json, junit.xml, report.html and summary.md into out_dir, with
 * the scenarios in the order an unsharded run has them (by path) and each
 * scenario's pcap and meta file copied beside them.  A scenario present
 * in two inputs, or inputs from different gateway profiles, is an error.
 * *status gets the merged run's exit status (0, 1 or 2 as for `run`). */
int fg_report_merge(const char *const *dirs, size_t ndirs, const char *out_dir, int *status,
                    char *err, size_t errlen);

/* fg_report_status - the exit status `faultgate run` gives for doc: 2 an
 * error, 1 a failure or inconclusive, else 0. */
int fg_report_status(const json_t *doc);

/* fg_cmd_report - the `faultgate report` subcommand (argv[0] "report"). */
int fg_cmd_report(int argc, char **argv);

#endif
