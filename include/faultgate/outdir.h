/* faultgate/outdir.h - a run's output directory, claimed for one run at a
 * time, and the checks that keep runs from spoiling each other. */
#ifndef FAULTGATE_OUTDIR_H
#define FAULTGATE_OUTDIR_H

#include <stddef.h>

struct fg_outdir;
struct fg_scenario;

/* fg_outdir_lock - create dir if needed and lock it for this run (an
 * exclusive flock on dir/.faultgate.lock, held until fg_outdir_unlock).
 * A symlink, a FIFO or any other non-directory named as dir is refused,
 * never replaced; so is a directory another run holds. */
int fg_outdir_lock(const char *dir, struct fg_outdir **out, char *err, size_t errlen);
void fg_outdir_unlock(struct fg_outdir *d);
/* fg_outdir_fresh - make path an empty directory: what an earlier run
 * left there (a gateway's spool, its log) is removed first, so that no
 * state of that run leaks into this one.  Symlinks are removed, never
 * followed. */
int fg_outdir_fresh(const char *path, char *err, size_t errlen);
/* fg_scenario_ids_check - 0, or FG_EINPUT naming both files when two of
 * the n scenarios share an id (they would write the same pcap and meta). */
int fg_scenario_ids_check(struct fg_scenario *const *scs, size_t n, char *err, size_t errlen);

#endif
