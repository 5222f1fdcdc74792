/* faultgate/judge.h - from a pcap and its metadata to a scenario's verdict. */
#ifndef FAULTGATE_JUDGE_H
#define FAULTGATE_JUDGE_H

#include "faultgate/expect.h"

struct fg_scenario_result {
    char *id, *title, *path;
    /* Copies of the scenario's kb and rfc lists, for the reports (the
     * scenario may be freed before they are written). */
    char **kb;
    size_t nkb;
    char **rfc;
    size_t nrfc;
    enum fg_verdict verdict;
    struct fg_outcome *outcomes;
    size_t noutcomes;
    char *error;            /* why the verdict is `error`, if it is */
    char *pcap;             /* relative to the output directory */
    struct fg_meta *meta;   /* owned */
    struct fg_timeline *tl; /* owned; NULL if the trace could not be read */
    uint64_t duration_ms;
};

/* fg_judge - build the timeline of pcap and evaluate every expectation of
 * sc.  res is overwritten (it need not be cleared before).  Takes ownership
 * of meta (may be NULL: the rules that need it then yield `error`).  A
 * trace that cannot be read makes the verdict `error` with the reason in
 * res->error.  res->pcap is meta->pcap, or pcap_path's file name;
 * res->duration_ms is the run's (meta end - start), or the judging time
 * when the metadata has no times. */
void fg_judge(const struct fg_scenario *sc, struct fg_meta *meta, const char *pcap_path,
              struct fg_scenario_result *res);
/* fg_judge_keys - the same, reading the TLS sessions after STARTTLS with
 * a key log (faultgate/tls_decrypt.h): keylog_path names it; NULL: the
 * meta's `keylog`, beside the trace, when that file exists (without it
 * TLS stays opaque and the rules that need the inside say inconc).  A
 * named key log that cannot be read, or a malformed one, makes the
 * verdict `error` with the file:line:col reason.  fg_judge is
 * fg_judge_keys with NULL: the live run judges with its own key log. */
void fg_judge_keys(const struct fg_scenario *sc, struct fg_meta *meta, const char *pcap_path,
                   const char *keylog_path, struct fg_scenario_result *res);

/* fg_scenario_result_init - fill the identity of sc into res (zeroed
 * first), for results that are not judged (skip) or failed before a trace
 * existed (error: set verdict and error yourself). */
void fg_scenario_result_init(struct fg_scenario_result *res, const struct fg_scenario *sc);

void fg_scenario_result_clear(struct fg_scenario_result *r);

#endif
