/* faultgate/expect_x400.h - the X.400 expectations, judged from the X.400
 * timeline of the run's capture (faultgate/x400_timeline.h):
 *
 *   x400-minor-sync-valid       every minor sync point the gateway sent (and
 *                               every MIA, AE, AEA) obeyed X.225 / X.228
 *   x400-association-completed  every association the gateway opened
 *                               transferred its message and was released
 *   x400-recovers-after-abort   after an aborted association the gateway
 *                               re-associates (within `within`, if given)
 *                               and each message is transferred exactly once
 *
 * The rules are registered in expect.h's FG_EXPECT_TABLES as the table
 * fg_expect_x400_rules.  They read the X.400 leg of the capture (the
 * connections to the metadata's x400_port), so the judge context must
 * carry the capture's path.  Evidence names the SPDU, its serial number,
 * the rule it broke with its X.225 / X.228 source, connection, frames and
 * times relative to the trace's first frame.
 */
#ifndef FAULTGATE_EXPECT_X400_H
#define FAULTGATE_EXPECT_X400_H

#include "faultgate/expect.h"

extern const struct fg_expect_rule fg_expect_x400_rules[];

/* Whether name is one of the rules above. */
int fg_expect_x400_known(const char *name);

/* fg_expect_x400_validate - load-time check of an `x400-*` expectation
 * (rule known, no parameter it does not take); err gets file:line:col. */
int fg_expect_x400_validate(const struct fg_scenario *sc, const struct fg_expect_spec *e, char *err,
                            size_t errlen);

/* fg_expect_x400_eval - evaluate an `x400-*` expectation (limit_ms: the
 * value of `within`, 0 if not given).  Fills out's verdict, summary,
 * evidence, conn and frames. */
void fg_expect_x400_eval(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *out);

#endif
