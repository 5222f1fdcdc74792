/* faultgate/progress.h - the live status line of `faultgate run` on a
 * terminal: which scenario runs (k of n), its stage, and the time it has
 * taken, redrawn in place while the scenario runs and wiped before the
 * run prints the scenario's result line.
 *
 * The run loop calls fg_progress_begin when a scenario starts,
 * fg_progress_stage at each stage (gateway starting, injecting, watching,
 * probing, stopping, judging) and fg_progress_end before printing the
 * result.  The redraw timer is unreferenced, so it never keeps the loop
 * running, and it only runs while the loop does.
 */
#ifndef FAULTGATE_PROGRESS_H
#define FAULTGATE_PROGRESS_H

#include <stddef.h>
#include <stdio.h>
#include <uv.h>

enum fg_progress_mode {
    FG_PROGRESS_AUTO, /* live when out is a terminal and TERM is not "dumb" */
    FG_PROGRESS_LIVE, /* always (tests, or a terminal the check cannot see) */
    FG_PROGRESS_OFF   /* never: --quiet, --verbose (its log lines), not a terminal */
};

struct fg_progress;

/* fg_progress_new - a status line written to out (not owned), redrawn
 * every 250 ms by a timer on loop; loop NULL: no timer, the caller redraws
 * (fg_progress_flight). */
struct fg_progress *fg_progress_new(uv_loop_t *loop, FILE *out, enum fg_progress_mode mode);

/* fg_progress_live - whether the line is drawn at all. */
int fg_progress_live(const struct fg_progress *p);

void fg_progress_begin(struct fg_progress *p, size_t index, size_t total, const char *id);
void fg_progress_stage(struct fg_progress *p, const char *stage);
/* fg_progress_end - wipe the line: the caller prints the result next. */
void fg_progress_end(struct fg_progress *p);

/* fg_progress_draw - draw the line now (the timer calls this). */
void fg_progress_draw(struct fg_progress *p);

/* fg_progress_flight - a parallel run's line: done of total finished, the
 * time since t0_ms (the run's start), the ids in flight; wiped by
 * fg_progress_end. */
void fg_progress_flight(struct fg_progress *p, size_t done, size_t total, const char *const *ids,
                        size_t nids, uint64_t t0_ms);

/* fg_progress_free - close the timer; p is freed in its close callback, so
 * run the loop once more before closing it.  NULL is fine. */
void fg_progress_free(struct fg_progress *p);

#endif
