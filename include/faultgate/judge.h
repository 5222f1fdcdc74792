/* faultgate/judge.h - from a pcap and its metadata to a scenario's verdict. */
#ifndef FAULTGATE_JUDGE_H
#define FAULTGATE_JUDGE_H

#include "faultgate/expect.h"

struct fg_scenario_result {
    char *id, *title, *path;
    enum fg_verdict verdict;
    struct fg_outcome *outcomes;
    size_t noutcomes;
    char *error;          /* why the verdict is `error`, if it is */
    char *pcap;           /* relative to the output directory */
    struct fg_meta *meta; /* owned */
    struct fg_timeline *tl; /* owned; NULL if the trace could not be read */
    uint64_t duration_ms;
};

/* fg_judge - build the timeline of pcap and evaluate every expectation of
 * sc.  A trace that cannot be read makes the verdict `error`. */
void fg_judge(const struct fg_scenario *sc, struct fg_meta *meta, const char *pcap_path,
              struct fg_scenario_result *res);

void fg_scenario_result_clear(struct fg_scenario_result *r);

#endif
