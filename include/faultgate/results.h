/* faultgate/results.h - results.json (schema: reports/results.schema.json)
 * and junit.xml for a run's scenario results.
 *
 * The results document (a jansson object, the content of results.json) is
 * the one input of every report: junit.xml, report.html and summary.md are
 * all drawn from it, whether it was just built from a run's results or read
 * back from a file (`faultgate report html`, `faultgate report merge`), so a
 * report re-rendered or merged from files equals the live run's. */
#ifndef FAULTGATE_RESULTS_H
#define FAULTGATE_RESULTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "faultgate/judge.h"

/* 1.1 adds the optional scenario keys start_us and trace_start_us, the
 * decisions' trace_t and the top-level shards[] of a merged run; a 1.0
 * file is still read. */
#define FG_RESULTS_SCHEMA_VERSION "1.1"

struct fg_run_info {
    const char *run_id;
    const char *faultgate_version;
    const char *profile_path;
    const char *profile_name;
    uint64_t seed;
    uint64_t start_us, end_us;
    const char *host;
};

int fg_results_write_json(const char *path, const struct fg_run_info *ri,
                          const struct fg_scenario_result *r, size_t n, char *err, size_t errlen);
int fg_results_write_junit(const char *path, const struct fg_run_info *ri,
                           const struct fg_scenario_result *r, size_t n, char *err, size_t errlen);

/* fg_results_doc - the results document of a run (a new reference; the
 * counts and the verdict computed from r). */
json_t *fg_results_doc(const struct fg_run_info *ri, const struct fg_scenario_result *r, size_t n);

/* fg_results_doc_write - write doc as results.json: fixed key order,
 * through a temporary file renamed into place. */
int fg_results_doc_write(const char *path, const json_t *doc, char *err, size_t errlen);

/* fg_results_doc_read - read a results.json; refuses a schema_version
 * other than 1.x and a file without the shape the reports need (err names
 * the file and the line:col of a syntax error, or the JSON path). */
int fg_results_doc_read(const char *path, json_t **doc, char *err, size_t errlen);

/* fg_results_recount - set doc's counts and verdict from its scenarios. */
void fg_results_recount(json_t *doc);

/* fg_results_junit_write_doc - junit.xml from a results document. */
int fg_results_junit_write_doc(const char *path, const json_t *doc, char *err, size_t errlen);

/* fg_results_verdict_parse - "pass" .. "skip" to enum fg_verdict, -1 if
 * none. */
int fg_results_verdict_parse(const char *s);

/* fg_results_open / fg_results_close - write a report file through a
 * temporary name renamed into place on close (err names path). */
FILE *fg_results_open(const char *path, char **tmp, char *err, size_t errlen);
int fg_results_close(FILE *f, const char *path, char *tmp, char *err, size_t errlen);

#endif
