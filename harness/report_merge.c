/* report_merge.c - `faultgate report merge DIR... -o DIR`: one run out of the
 * shards a CI matrix ran (`faultgate run --shard K/N` on each runner).
 *
 * Each DIR/results.json is read back; the scenarios of all of them are put
 * in the order an unsharded run has them (the run sorts scenario files by
 * path, so the merge sorts by path, then id), the counts and the verdict
 * are recomputed, and results.json, junit.xml, report.html and summary.md
 * are written by the same code the run uses, so the merged files equal
 * those of an unsharded run up to times, hosts and run ids.  Each
 * scenario's pcap and meta file are linked (or copied) into the output
 * directory so that the report's links and `faultgate judge` work there.
 * The shards' own run ids, hosts, seeds and times are kept in shards[].
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

struct item {
    json_t *sc;   /* borrowed from its document */
    size_t input; /* index into dirs */
    size_t pos;   /* position in its input, for a stable order */
};

static int item_cmp(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    const char *px = sget(x->sc, "path"), *py = sget(y->sc, "path");
    int c;
    if (px && py && (c = strcmp(px, py)) != 0)
        return c;
    if (!px != !py)
        return px ? -1 : 1;
    if ((c = strcmp(sget(x->sc, "id"), sget(y->sc, "id"))) != 0)
        return c;
    if (x->input != y->input)
        return x->input < y->input ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Put src at dst: a hard link when both are on one file system, else a
 * copy (read/write: the files are a few megabytes at most). */
static int place_file(const char *src, const char *dst, char *err, size_t errlen)
{
    struct stat ss, ds;
    if (stat(src, &ss) != 0)
        return -errno;
    if (stat(dst, &ds) == 0) {
        if (ss.st_dev == ds.st_dev && ss.st_ino == ds.st_ino)
            return 0; /* merging into one of the inputs */
        unlink(dst);
    }
    if (link(src, dst) == 0)
        return 0;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return fg_errf(err, errlen, FG_EINPUT, "%s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return fg_errf(err, errlen, FG_EINPUT, "%s: cannot write: %s", dst, strerror(e));
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                rc = fg_errf(err, errlen, FG_EINPUT, "%s: cannot write: %s", dst, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc < 0)
            break;
    }
    if (n < 0 && rc == 0)
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: %s", src, strerror(errno));
    close(in);
    if (close(out) != 0 && rc == 0)
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: cannot write: %s", dst, strerror(errno));
    return rc;
}

/* The scenario's pcap and its meta file, from the shard's directory into
 * out.  A missing file is a warning: CI artifacts may leave pcaps out. */
static int place_trace(const char *dir, const json_t *sc, const char *out, char *err, size_t errlen)
{
    const char *pcap = sget(sc, "pcap");
    if (!pcap || !*pcap || strstr(pcap, "..") || pcap[0] == '/')
        return 0;
    size_t pl = strlen(pcap);
    char *files[2] = {fg_strdup(pcap), NULL};
    if (pl > 5 && strcmp(pcap + pl - 5, ".pcap") == 0)
        files[1] = fg_asprintf("%.*s.meta.json", (int)(pl - 5), pcap);
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0 && files[i]; i++) {
        char *src = fg_asprintf("%s/%s", dir, files[i]);
        char *dst = fg_asprintf("%s/%s", out, files[i]);
        rc = place_file(src, dst, err, errlen);
        if (rc == -ENOENT) {
            fprintf(stderr, "faultgate: warning: %s: not found; the merged report links to it\n",
                    src);
            rc = 0;
        }
        free(src);
        free(dst);
    }
    free(files[0]);
    free(files[1]);
    return rc;
}

static json_t *shard_entry(const char *dir, const json_t *doc)
{
    json_t *s = json_object();
    json_object_set_new(s, "dir", json_string(dir));
    json_object_set_new(s, "run_id", json_string(sget(doc, "run_id") ? sget(doc, "run_id") : ""));
    json_object_set(s, "host",
                    json_object_get(doc, "host") ? json_object_get(doc, "host") : json_null());
    json_t *seed = json_object_get(doc, "seed");
    json_object_set_new(s, "seed", seed ? json_incref(seed) : json_integer(0));
    json_object_set(s, "start",
                    json_object_get(doc, "start") ? json_object_get(doc, "start") : json_null());
    json_object_set(s, "end",
                    json_object_get(doc, "end") ? json_object_get(doc, "end") : json_null());
    json_t *c = json_object_get(doc, "counts");
    json_object_set_new(s, "counts", c ? json_deep_copy(c) : json_object());
    return s;
}

int fg_report_merge(const char *const *dirs, size_t ndirs, const char *out_dir, int *status,
                    char *err, size_t errlen)
{
    *status = 2;
    json_t **docs = fg_calloc(ndirs ? ndirs : 1, sizeof *docs);
    struct item *items = NULL;
    size_t nitems = 0, cap = 0;
    json_t *merged = NULL;
    int rc = 0;
    for (size_t d = 0; d < ndirs && rc == 0; d++) {
        char *path = fg_asprintf("%s/results.json", dirs[d]);
        rc = fg_results_doc_read(path, &docs[d], err, errlen);
        if (rc == 0 && d > 0) {
            const char *p0 = sget(json_object_get(docs[0], "profile"), "name");
            const char *pd = sget(json_object_get(docs[d], "profile"), "name");
            /* One report speaks of one gateway. */
            if (!str_eq(p0, pd))
                rc = fg_errf(err, errlen, FG_EINPUT,
                             "%s: gateway profile \"%s\" differs from \"%s\" in %s/results.json",
                             path, pd ? pd : "(none)", p0 ? p0 : "(none)", dirs[0]);
            else if (!str_eq(sget(docs[0], "faultgate_version"),
                             sget(docs[d], "faultgate_version")))
                fprintf(stderr,
                        "faultgate: warning: %s: written by faultgate %s, %s/results.json "
                        "by %s\n",
                        path, sget(docs[d], "faultgate_version"), dirs[0],
                        sget(docs[0], "faultgate_version"));
        }
        free(path);
        if (rc < 0)
            break;
        size_t i;
        json_t *sc;
        json_array_foreach(json_object_get(docs[d], "scenarios"), i, sc)
        {
            struct item *it = FG_ARRAY_PUSH(items, nitems, cap);
            it->sc = sc;
            it->input = d;
            it->pos = i;
        }
    }
    if (rc < 0)
        goto out;
    if (nitems)
        qsort(items, nitems, sizeof *items, item_cmp);
    /* A scenario id in two inputs: the same shard merged twice, or shards
     * of different partitions. */
    for (size_t i = 0; i < nitems; i++)
        for (size_t k = i + 1; k < nitems; k++)
            if (strcmp(sget(items[i].sc, "id"), sget(items[k].sc, "id")) == 0) {
                rc = fg_errf(err, errlen, FG_EINPUT,
                             "%s/results.json: scenario \"%s\" is also in %s/results.json",
                             dirs[items[k].input], sget(items[k].sc, "id"), dirs[items[i].input]);
                goto out;
            }

    if ((rc = fg_mkdir_p(out_dir)) < 0) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: cannot create: %s", out_dir, fg_strerror(rc));
        goto out;
    }

    /* The run: the first input's identity, the span of all of them. */
    merged = json_object();
    json_object_set_new(merged, "schema_version", json_string(FG_RESULTS_SCHEMA_VERSION));
    json_object_set(merged, "faultgate_version",
                    ndirs ? json_object_get(docs[0], "faultgate_version") : json_null());
    char *run_id = NULL;
    for (size_t d = 0; d < ndirs; d++) {
        const char *r = sget(docs[d], "run_id") ? sget(docs[d], "run_id") : "";
        char *n = run_id ? fg_asprintf("%s+%s", run_id, r) : fg_strdup(r);
        free(run_id);
        run_id = n;
    }
    if (run_id && strlen(run_id) > 200) {
        char *n = fg_asprintf("%s+%zu-shards", sget(docs[0], "run_id"), ndirs);
        free(run_id);
        run_id = n;
    }
    json_object_set_new(merged, "run_id", json_string(run_id ? run_id : ""));
    free(run_id);
    json_object_set_new(merged, "profile",
                        ndirs ? json_deep_copy(json_object_get(docs[0], "profile"))
                              : json_pack("{s:n,s:n}", "path", "name"));
    json_object_set(merged, "seed", ndirs ? json_object_get(docs[0], "seed") : json_integer(0));
    json_int_t start = 0, end = 0;
    size_t first = 0, last = 0;
    char *hosts = NULL;
    for (size_t d = 0; d < ndirs; d++) {
        json_int_t s = json_integer_value(json_object_get(docs[d], "start_us"));
        json_int_t e = json_integer_value(json_object_get(docs[d], "end_us"));
        if (s > 0 && (start == 0 || s < start))
            start = s, first = d;
        if (e > end)
            end = e, last = d;
        const char *h = sget(docs[d], "host");
        if (h && (!hosts || !strstr(hosts, h))) {
            char *n = hosts ? fg_asprintf("%s, %s", hosts, h) : fg_strdup(h);
            free(hosts);
            hosts = n;
        }
    }
    json_object_set(merged, "start", start ? json_object_get(docs[first], "start") : json_null());
    json_object_set_new(merged, "start_us", json_integer(start));
    json_object_set(merged, "end", end ? json_object_get(docs[last], "end") : json_null());
    json_object_set_new(merged, "end_us", json_integer(end));
    json_object_set_new(merged, "host", hosts ? json_string(hosts) : json_null());
    free(hosts);
    json_object_set_new(merged, "counts", json_null());
    json_object_set_new(merged, "verdict", json_null());
    json_t *sa = json_array();
    for (size_t i = 0; i < nitems; i++)
        json_array_append(sa, items[i].sc);
    json_object_set_new(merged, "scenarios", sa);
    json_t *shards = json_array();
    for (size_t d = 0; d < ndirs; d++) {
        /* A merge of merges keeps the original shards. */
        json_t *inner = json_object_get(docs[d], "shards");
        if (json_array_size(inner)) {
            size_t k;
            json_t *s;
            json_array_foreach(inner, k, s)
            {
                json_t *c = json_deep_copy(s);
                char *p = fg_asprintf("%s/%s", dirs[d], sget(s, "dir") ? sget(s, "dir") : "");
                json_object_set_new(c, "dir", json_string(p));
                free(p);
                json_array_append_new(shards, c);
            }
        } else {
            json_array_append_new(shards, shard_entry(dirs[d], docs[d]));
        }
    }
    json_object_set_new(merged, "shards", shards);
    fg_results_recount(merged);

    for (size_t i = 0; i < nitems && rc == 0; i++)
        rc = place_trace(dirs[items[i].input], items[i].sc, out_dir, err, errlen);
    if (rc < 0)
        goto out;

    char *p = fg_asprintf("%s/results.json", out_dir);
    rc = fg_results_doc_write(p, merged, err, errlen);
    free(p);
    if (rc == 0) {
        p = fg_asprintf("%s/junit.xml", out_dir);
        rc = fg_results_junit_write_doc(p, merged, err, errlen);
        free(p);
    }
    if (rc == 0)
        rc = fg_report_write_all(out_dir, merged, err, errlen);
    if (rc == 0)
        *status = fg_report_status(merged);

out:
    json_decref(merged);
    for (size_t d = 0; d < ndirs; d++)
        json_decref(docs[d]);
    free(docs);
    free(items);
    return rc;
}
