/* run.h - `faultgate run`: scenarios against a gateway, up to -j at once. */
#ifndef FAULTGATE_RUN_H
#define FAULTGATE_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/capture.h"

struct fg_run_opts {
    const char *profile_path; /* gateway profile; required */
    int profile_set;          /* named by -g (else --last-failed's run's profile) */
    const char *out_dir;      /* NULL: reports/runs/<run-id> */
    uint64_t seed;
    int seed_set;
    enum fg_capture_mode capture;
    int capture_pcap;         /* --capture-format pcap: leave the capture plain pcap, unannotated */
    const char *const *paths; /* scenario files or directories */
    size_t npaths;
    unsigned shard_k, shard_n; /* 1-based shard; n == 0: no sharding */
    int quiet, verbose;
    unsigned jobs;           /* -j: scenarios at once; 0: the default (2 per CPU, 2..8) */
    const char *last_failed; /* --last-failed DIR: only what did not pass in DIR */
    const char *bindir;      /* where refgw and the other helper programs are */
};

/* fg_run_main - run every scenario; returns the exit status: 0 all passed
 * or were skipped, 1 a scenario failed or was inconclusive, 2 faultgate
 * could not do its job (the reason is printed) or the run was interrupted
 * (SIGINT, SIGTERM, SIGHUP: the running scenarios are stopped and recorded
 * as errors, "interrupted"). */
int fg_run_main(const struct fg_run_opts *o);

/* fg_judge_main - `faultgate judge`: verdicts of a saved trace; the same
 * exit status convention.  keylog_path: the TLS key log (NULL: the one the
 * metadata names, beside the trace, if it is there). */
int fg_judge_main(const char *scenario_path, const char *out_dir, const char *pcap_path,
                  const char *meta_path, const char *keylog_path);

#endif
