/* faultgate/results.h - results.json (schema: reports/results.schema.json)
 * and junit.xml for a run's scenario results. */
#ifndef FAULTGATE_RESULTS_H
#define FAULTGATE_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/judge.h"

#define FG_RESULTS_SCHEMA_VERSION "1.0"

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

#endif
