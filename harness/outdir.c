/* outdir.c - the run's output directory (faultgate/outdir.h).
 *
 * Two runs writing into one directory would read each other's ledgers and
 * spools and overwrite each other's traces, so a run holds an exclusive
 * flock(2) on DIR/.faultgate.lock for as long as it writes there; the lock
 * goes with the process, however it ends.  Each scenario's work directory
 * starts empty, so that a gateway never finds the queue of an earlier run.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/outdir.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"

#define LOCK_NAME ".faultgate.lock"

struct fg_outdir {
    int fd;
};

static const char *kind_of(mode_t m)
{
    if (S_ISLNK(m))
        return "a symbolic link";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISREG(m))
        return "a regular file";
    if (S_ISSOCK(m))
        return "a socket";
    return "a device";
}

/* path names a directory itself, not a symlink to one or another file. */
static int check_dir(const char *path, int missing_ok, char *err, size_t errlen)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT && missing_ok)
            return 0;
        int e = -errno;
        return fg_errf(err, errlen, e, "%s: %s", path, strerror(-e));
    }
    if (!S_ISDIR(sb.st_mode))
        return fg_errf(err, errlen, FG_EINPUT,
                       "%s is %s, not a directory: refusing to write the run's output there", path,
                       kind_of(sb.st_mode));
    return 0;
}

int fg_outdir_lock(const char *dir, struct fg_outdir **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = check_dir(dir, 1, err, errlen);
    if (rc < 0)
        return rc;
    if ((rc = fg_mkdir_p(dir)) < 0)
        return fg_errf(err, errlen, rc, "cannot create %s: %s", dir, fg_strerror(rc));
    /* Again: a symlink made between the check and mkdir. */
    if ((rc = check_dir(dir, 0, err, errlen)) < 0)
        return rc;
    char *path = fg_asprintf("%s/" LOCK_NAME, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        fg_errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
        free(path);
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? FG_EINPUT : -errno;
        if (rc == FG_EINPUT)
            fg_errf(err, errlen, rc,
                    "%s: another faultgate run is writing there (it holds %s); give each run "
                    "its own -o directory",
                    dir, path);
        else
            fg_errf(err, errlen, rc, "%s: cannot lock: %s", path, strerror(-rc));
        close(fd);
        free(path);
        return rc;
    }
    free(path);
    struct fg_outdir *d = fg_calloc(1, sizeof *d);
    d->fd = fd;
    *out = d;
    return 0;
}

void fg_outdir_unlock(struct fg_outdir *d)
{
    if (!d)
        return;
    close(d->fd); /* releases the flock */
    free(d);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(p) : unlink(p);
    return rc != 0 && errno != ENOENT ? -errno : 0;
}

int fg_outdir_fresh(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        /* FTW_PHYS: a symlink inside is removed, never followed. */
        int rc = S_ISDIR(sb.st_mode) ? nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS)
                                     : (unlink(path) != 0 ? -errno : 0);
        if (rc != 0) {
            rc = rc < 0 ? rc : -EIO;
            return fg_errf(err, errlen, rc, "cannot clear %s (left by an earlier run): %s", path,
                           strerror(-rc));
        }
    }
    int rc = fg_mkdir_p(path);
    if (rc < 0)
        return fg_errf(err, errlen, rc, "cannot create %s: %s", path, fg_strerror(rc));
    return 0;
}

int fg_scenario_ids_check(struct fg_scenario *const *scs, size_t n, char *err, size_t errlen)
{
    /* Few scenarios per run: the quadratic scan is fine. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(scs[i]->id, scs[j]->id) == 0)
                return fg_errf(err, errlen, FG_EINPUT,
                               "%s: scenario id '%s' is also the id of %s: their traces and "
                               "results would overwrite each other",
                               scs[i]->path, scs[i]->id, scs[j]->path);
    return 0;
}
