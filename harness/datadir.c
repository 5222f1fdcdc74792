/* datadir.c - the data root (bundled suites, profiles and the scripts they
 * run) and bare names resolved against it; the order is in datadir.h and
 * in faultgate(1), FILES. */
#include "faultgate/datadir.h"
#include "faultgate/util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Found once, on first use (the command line, before any thread). */
static char *root;
static int root_known;

/* holds_suites - dir looks like a data root: it has scenarios/gateways/. */
static int holds_suites(const char *dir)
{
    struct stat st;
    char *p = fg_asprintf("%s/scenarios/gateways", dir);
    int ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    free(p);
    return ok;
}

/* canonical - realpath of p, or a copy of p when it cannot be resolved. */
static char *canonical(const char *p)
{
    char *r = realpath(p, NULL);
    return r ? r : fg_strdup(p);
}

static void find_root(void)
{
    const char *env = getenv("FAULTGATE_DATADIR");
    if (env && *env) {
        /* Asked for explicitly: used even if it turns out not to hold the
         * suites, so that a wrong value shows up as a clear open error. */
        root = canonical(env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        char *rel = fg_asprintf("%s/../share/faultgate", exe);
        if (holds_suites(rel)) {
            root = canonical(rel);
            free(rel);
            return;
        }
        free(rel);
    }
#ifdef FG_DATADIR
    if (holds_suites(FG_DATADIR)) {
        root = canonical(FG_DATADIR);
        return;
    }
#endif
#if defined(FG_SOURCE_ROOT) && defined(FG_BUILD_ROOT)
    /* A faultgate in its own build tree reads the suites of its source. */
    size_t bl = strlen(FG_BUILD_ROOT);
    if (n > 0 && strncmp(exe, FG_BUILD_ROOT, bl) == 0 && (exe[bl] == '\0' || exe[bl] == '/') &&
        holds_suites(FG_SOURCE_ROOT)) {
        root = canonical(FG_SOURCE_ROOT);
        return;
    }
#endif
    root = NULL;
}

const char *fg_datadir(void)
{
    if (!root_known) {
        find_root();
        root_known = 1;
    }
    return root;
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

char *fg_datadir_resolve(const char *name, enum fg_datadir_kind kind)
{
    const char *dir = fg_datadir();
    /* An absolute path, or one that exists, means what it says. */
    if (!dir || !*name || name[0] == '/' || exists(name))
        return fg_strdup(name);
    static const char *const suite_fmt[] = {"%s/scenarios/%s", NULL};
    static const char *const profile_fmt[] = {
        "%s/scenarios/gateways/%s", "%s/scenarios/gateways/%s.yaml", "%s/scenarios/%s", NULL};
    const char *const *fmt = kind == FG_DATA_PROFILE ? profile_fmt : suite_fmt;
    for (; *fmt; fmt++) {
        char *p = fg_asprintf(*fmt, dir, name);
        if (exists(p))
            return p;
        free(p);
    }
    return fg_strdup(name);
}

char *fg_datadir_default_profile(void)
{
    const char *dir = fg_datadir();
    if (!dir)
        return fg_strdup("scenarios/gateways/refgw.yaml");
    return fg_asprintf("%s/scenarios/gateways/refgw.yaml", dir);
}
