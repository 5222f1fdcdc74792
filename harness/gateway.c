/* gateway.c - the gateway under test as a process group.
 *
 * Starts the profile's argv (placeholders filled) detached, so that the
 * child calls setsid() and leads a process group of its own; its stdout
 * and stderr are appended to workdir/gateway.log and stdin is /dev/null.
 * Readiness is a TCP connect to 127.0.0.1:gateway_port every 50 ms until
 * one succeeds, the ready timeout passes, or the process exits.  Stopping
 * signals the whole group, escalates to SIGKILL after the grace period,
 * and reports only once the leader was reaped and no member of the group
 * is left, so that no process of the gateway outlives the run.
 *
 * A profile may ask for more (scenarios/FORMAT.md): readiness by a 220
 * banner rather than a connect; configuration files made from templates
 * before the start; and a pidfile for a gateway that daemonizes: its start
 * command exits 0 and from then on the process the file names is the
 * gateway (alive or not, its exit status, what the stop signal goes to).
 *
 * The harness makes itself a child subreaper (Linux PR_SET_CHILD_SUBREAPER)
 * so that the gateway's orphaned children are reparented to it rather than
 * to PID 1 (which in a container may never reap them), and reaps them
 * itself with waitpid(-pgid): a zombie still counts as a group member.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "faultgate/error.h"
#include "faultgate/gateway.h"
#include "faultgate/util.h"

#define READY_POLL_MS 50
/* Gateway ports are picked at random in [FG_PORT_MIN, ephemeral low). */
#define FG_PORT_MIN 20000
#define STOP_POLL_MS 20

extern char **environ;

enum gw_state { GW_STARTING, GW_READY, GW_STOPPING, GW_STOPPED };

struct fg_gateway {
    uv_loop_t *loop;
    uv_process_t proc;
    uv_timer_t timer; /* readiness polls, then stop polls */
    uv_tcp_t probe;   /* one readiness connect at a time */
    uv_connect_t connect_req;
    int pid;
    enum gw_state state;
    int nopen; /* handles not yet closed */
    /* *_open: initialized and not yet closing.  probe_busy: the probe's
     * memory is in use (open or closing) and must not be re-initialized. */
    int proc_open, timer_open, probe_open, probe_busy;
    int exited;
    int64_t exit_status;
    int term_signal;
    int freeing; /* fg_gateway_free called: free on the last close */

    /* The gateway's stdout and stderr come through a pipe into gateway.log,
     * capped: the first LOG_HEAD octets, then only the last LOG_TAIL are
     * kept (in ring) and written after a line saying how many were left
     * out, so that a gateway writing without end cannot fill the disk. */
    uv_pipe_t out;
    int out_open;
    int logfd;
    uint64_t logged, omitted;
    char *ring;
    size_t ring_start, ring_len;

    int port;
    int banner;     /* ready on a 220 greeting, not on a connect */
    char line[512]; /* the probe's first reply line so far */
    size_t linelen;
    char *pidfile; /* filled path, NULL without one */
    int dpid;      /* the daemon named by the pidfile, 0 until read */
    int dexited;   /* the daemon was seen gone */
    int64_t dstatus;
    int dsignal;
    uint64_t ready_deadline; /* fg_now_ms() */
    fg_gateway_ready_cb ready_cb;
    void *ready_ud;

    int stop_signal;
    uint64_t grace_ms;
    uint64_t kill_at; /* fg_now_ms() when the group gets SIGKILL */
    int killed;
    fg_gateway_stopped_cb stopped_cb;
    void *stopped_ud;
};

/* --- placeholders ----------------------------------------------------------- */

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static int fill(const char *s, const struct fg_gateway_vars *v, int lenient, char **out, char *err,
                size_t errlen)
{
    size_t len = 0, cap = 0;
    char *buf = NULL;
    *out = NULL;
    for (const char *p = s; *p;) {
        const char *val = NULL;
        char num[16];
        size_t skip = 1;
        if (*p == '{') {
            const char *e = p + 1;
            while (is_ident(*e))
                e++;
            /* Only {identifier} is a placeholder; other braces are text. */
            if (*e == '}' && e > p + 1) {
                size_t n = (size_t)(e - p - 1);
                const char *name = p + 1;
                skip = n + 2;
#define IS(lit) (n == sizeof(lit) - 1 && strncmp(name, lit, n) == 0)
                if (IS("gateway_port")) {
                    snprintf(num, sizeof(num), "%d", v->gateway_port);
                    val = v->gateway_port > 0 ? num : NULL;
                } else if (IS("upstream")) {
                    if (v->upstream_host && v->upstream_port > 0) {
                        char *u = fg_asprintf("%s:%d", v->upstream_host, v->upstream_port);
                        size_t ul = strlen(u);
                        fg_array_reserve((void **)&buf, &cap, len + ul + 1, 1);
                        memcpy(buf + len, u, ul);
                        len += ul;
                        free(u);
                        p += skip;
                        continue;
                    }
                } else if (IS("upstream_host")) {
                    val = v->upstream_host;
                } else if (IS("upstream_port")) {
                    snprintf(num, sizeof(num), "%d", v->upstream_port);
                    val = v->upstream_port > 0 ? num : NULL;
                } else if (IS("workdir")) {
                    val = v->workdir;
                } else if (IS("x400_upstream")) {
                    val = v->x400_upstream;
                } else if (IS("bindir")) {
                    val = v->bindir;
                } else if (IS("profile_dir")) {
                    val = v->profile_dir;
                } else if (lenient) {
                    skip = 1; /* another language's braces: text */
                } else {
                    free(buf);
                    return fg_errf(err, errlen, FG_EINPUT,
                                   "unknown placeholder {%.*s} in '%s' (known: {gateway_port} "
                                   "{upstream} {upstream_host} {upstream_port} {workdir} "
                                   "{x400_upstream} {bindir} {profile_dir})",
                                   (int)n, name, s);
                }
#undef IS
                if (!val && skip > 1) {
                    free(buf);
                    return fg_errf(err, errlen, FG_EINPUT,
                                   "placeholder {%.*s} in '%s' has no value in this run", (int)n,
                                   name, s);
                }
            }
        }
        if (val) {
            size_t vl = strlen(val);
            fg_array_reserve((void **)&buf, &cap, len + vl + 1, 1);
            memcpy(buf + len, val, vl);
            len += vl;
        } else {
            fg_array_reserve((void **)&buf, &cap, len + 2, 1);
            buf[len++] = *p;
        }
        p += skip;
    }
    fg_array_reserve((void **)&buf, &cap, len + 1, 1);
    buf[len] = '\0';
    *out = buf;
    return 0;
}

int fg_placeholder_fill(const char *s, const struct fg_gateway_vars *v, char **out, char *err,
                        size_t errlen)
{
    return fill(s, v, 0, out, err, errlen);
}

int fg_placeholder_fill_text(const char *s, const struct fg_gateway_vars *v, char **out, char *err,
                             size_t errlen)
{
    return fill(s, v, 1, out, err, errlen);
}

/* --- the capped log -------------------------------------------------------- */

#define LOG_HEAD ((uint64_t)4 << 20)
#define LOG_TAIL ((size_t)4 << 20)

static void log_write(struct fg_gateway *g, const char *b, size_t n)
{
    while (n > 0 && g->logfd >= 0) {
        ssize_t w = write(g->logfd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a full disk loses log lines, never the run */
        b += w;
        n -= (size_t)w;
    }
}

static void log_take(struct fg_gateway *g, const char *b, size_t n)
{
    if (g->logged < LOG_HEAD) {
        size_t k = LOG_HEAD - g->logged < n ? (size_t)(LOG_HEAD - g->logged) : n;
        log_write(g, b, k);
        g->logged += k;
        b += k;
        n -= k;
    }
    if (!n)
        return;
    if (!g->ring)
        g->ring = fg_malloc(LOG_TAIL);
    if (n >= LOG_TAIL) {
        g->omitted += g->ring_len + (n - LOG_TAIL);
        b += n - LOG_TAIL;
        n = LOG_TAIL;
        g->ring_start = 0;
        g->ring_len = 0;
    }
    size_t over = g->ring_len + n > LOG_TAIL ? g->ring_len + n - LOG_TAIL : 0;
    g->ring_start = (g->ring_start + over) % LOG_TAIL;
    g->ring_len -= over;
    g->omitted += over;
    for (size_t i = 0; i < n; i++)
        g->ring[(g->ring_start + g->ring_len + i) % LOG_TAIL] = b[i];
    g->ring_len += n;
}

/* The kept tail goes to the file (at an exit and at the end). */
static void log_flush(struct fg_gateway *g)
{
    if (g->omitted) {
        char line[160];
        int k = snprintf(line, sizeof line,
                         "\n[faultgate: %llu octets of the gateway's output left out here; the "
                         "first %llu and the last %zu are kept]\n",
                         (unsigned long long)g->omitted, (unsigned long long)LOG_HEAD, LOG_TAIL);
        log_write(g, line, (size_t)k);
        g->omitted = 0;
    }
    size_t first = LOG_TAIL - g->ring_start < g->ring_len ? LOG_TAIL - g->ring_start : g->ring_len;
    if (g->ring_len) {
        log_write(g, g->ring + g->ring_start, first);
        log_write(g, g->ring, g->ring_len - first);
    }
    g->ring_start = g->ring_len = 0;
}

/* What the pipe holds now, without waiting: a process that exited has
 * put all it wrote there. */
static void log_drain(struct fg_gateway *g)
{
    uv_os_fd_t fd;
    if (!g->out_open || uv_fileno((uv_handle_t *)&g->out, &fd) != 0)
        return;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        log_take(g, buf, (size_t)n);
}

static void on_out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    static char space[65536]; /* one loop thread; consumed before the next read */
    (void)h;
    *buf = uv_buf_init(space, sizeof space);
}

static void on_out_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct fg_gateway *g = st->data;
    if (n > 0)
        log_take(g, buf->base, (size_t)n);
    else if (n < 0)
        uv_read_stop(st); /* EOF: every writer is gone */
}

/* --- handles -------------------------------------------------------------- */

static void maybe_free(struct fg_gateway *g)
{
    if (g->freeing && g->nopen == 0) {
        free(g->pidfile);
        log_flush(g);
        if (g->logfd >= 0)
            close(g->logfd);
        free(g->ring);
        free(g);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct fg_gateway *g = h->data;
    g->nopen--;
    if ((uv_handle_t *)&g->probe == h)
        g->probe_busy = 0;
    maybe_free(g);
}

static void close_handle(struct fg_gateway *g, uv_handle_t *h, int *open)
{
    if (!*open)
        return;
    *open = 0;
    uv_close(h, on_handle_closed);
}

/* --- a daemon's pidfile --------------------------------------------------- */

/* Whether the start command itself went away as a daemonizing one does:
 * status 0, no signal, with a pidfile to follow. */
static int daemonized(const struct fg_gateway *g)
{
    return g->pidfile && g->exited && g->exit_status == 0 && g->term_signal == 0;
}

/* follow_daemon - read the pidfile once the start command has exited 0,
 * and see whether the daemon it names is still there.  As a child
 * subreaper the harness inherits the daemon when its parent exits, so its
 * exit status can be had with waitpid; otherwise kill(pid, 0) tells. */
static void follow_daemon(struct fg_gateway *g)
{
    if (!daemonized(g) || g->dexited)
        return;
    if (g->dpid <= 0) {
        FILE *f = fopen(g->pidfile, "r");
        long pid = 0;
        if (f) {
            if (fscanf(f, "%ld", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        if (pid <= 1 || pid == getpid())
            return; /* not written yet */
        g->dpid = (int)pid;
    }
    int st;
    pid_t w = waitpid(g->dpid, &st, WNOHANG);
    if (w == g->dpid) {
        g->dexited = 1;
        g->dstatus = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
        g->dsignal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    } else if (w < 0 && kill(g->dpid, 0) != 0 && errno == ESRCH) {
        g->dexited = 1; /* not our child: its status is not ours to know */
    }
}

/* --- escaped processes ------------------------------------------------------
 * A gateway that daemonizes leaves its process group: Postfix's master,
 * for one, calls setsid().  As a child subreaper the harness inherits every
 * such orphan, so the gateway's processes are the leader, whatever the
 * harness inherited, and all their descendants.  Read from /proc (Linux);
 * elsewhere only the process group is tracked. */

#define MAX_ESCAPED 4096

int fg_proc_ppid_read(pid_t pid, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len <= 0)
        return FG_EINPUT;
    buf[len] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parens. */
    char *rp = strrchr(buf, ')');
    long pp;
    char state;
    if (!rp || sscanf(rp + 1, " %c %ld", &state, &pp) != 2)
        return FG_EINPUT;
    *ppid = (pid_t)pp;
    return 0;
}

static size_t gateway_tree(pid_t leader, pid_t *out, size_t max)
{
    size_t n = 0, cap = 0;
    struct {
        pid_t pid, ppid;
    } *all = NULL;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        pid_t ppid;
        if (fg_proc_ppid_read((pid_t)pid, &ppid) < 0)
            continue;
        fg_array_reserve((void **)&all, &cap, n + 1, sizeof(*all));
        all[n].pid = (pid_t)pid;
        all[n].ppid = (pid_t)ppid;
        n++;
    }
    closedir(d);
    pid_t self = getpid();
    size_t nout = 0;
    if (leader > 0 && nout < max)
        out[nout++] = leader;
    for (size_t i = 0; i < n && nout < max; i++)
        if (all[i].ppid == self && all[i].pid != leader)
            out[nout++] = all[i].pid;
    /* Descendants, to a fixed point (the tree is small). */
    for (int grew = 1; grew;) {
        grew = 0;
        for (size_t i = 0; i < n && nout < max; i++) {
            int parent_in = 0, self_in = 0;
            for (size_t j = 0; j < nout; j++) {
                parent_in |= out[j] == all[i].ppid;
                self_in |= out[j] == all[i].pid;
            }
            if (parent_in && !self_in && all[i].pid != self) {
                out[nout++] = all[i].pid;
                grew = 1;
            }
        }
    }
    free(all);
    return nout;
}

/* signal_tree - sig to the group and to every process of the gateway's
 * tree; reaps the inherited ones that already exited.  Returns how many
 * processes (besides a reaped leader) are still there. */
static size_t signal_tree(struct fg_gateway *g, int sig)
{
    pid_t pids[MAX_ESCAPED];
    size_t n = gateway_tree(g->exited ? 0 : g->pid, pids, MAX_ESCAPED);
    size_t left = 0;
    if (sig)
        kill(-g->pid, sig);
    follow_daemon(g);
    if (sig && g->dpid > 0 && !g->dexited) {
        /* The daemon may have left both the group and the harness's tree
         * (reparented elsewhere when the harness is no subreaper). */
        kill(g->dpid, sig);
        left++;
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] != g->pid && waitpid(pids[i], NULL, WNOHANG) == pids[i])
            continue; /* an inherited zombie, now reaped */
        if (sig)
            kill(pids[i], sig);
        left++;
    }
    return left;
}

static int group_gone(struct fg_gateway *g)
{
    /* Reap what the subreaper inherited from the group; never before the
     * leader itself was reaped by libuv (its exit_cb needs that wait). */
    if (g->exited) {
        while (waitpid(-g->pid, NULL, WNOHANG) > 0)
            ;
    }
    if (!g->exited || (kill(-g->pid, 0) == 0 || errno != ESRCH))
        return 0;
    follow_daemon(g);
    if (g->dpid > 0 && !g->dexited)
        return 0;
    return signal_tree(g, 0) == 0;
}

static void finish_stop(struct fg_gateway *g)
{
    g->state = GW_STOPPED;
    log_drain(g);
    log_flush(g);
    close_handle(g, (uv_handle_t *)&g->out, &g->out_open);
    close_handle(g, (uv_handle_t *)&g->timer, &g->timer_open);
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    close_handle(g, (uv_handle_t *)&g->proc, &g->proc_open);
    fg_gateway_stopped_cb cb = g->stopped_cb;
    g->stopped_cb = NULL;
    if (cb)
        cb(g, g->stopped_ud);
}

static void ready_done(struct fg_gateway *g, int status)
{
    if (g->state != GW_STARTING)
        return;
    g->state = GW_READY;
    uv_timer_stop(&g->timer);
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    fg_gateway_ready_cb cb = g->ready_cb;
    g->ready_cb = NULL;
    if (cb)
        cb(g, status, g->ready_ud);
}

static void on_proc_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct fg_gateway *g = p->data;
    g->exited = 1;
    g->exit_status = exit_status;
    g->term_signal = term_signal;
    /* Its last words are in the log before anyone reads them. */
    log_drain(g);
    log_flush(g);
    /* It died before it listened, unless it daemonized: then the daemon
     * has until the ready timeout. */
    if (g->state == GW_STARTING && !daemonized(g))
        ready_done(g, FG_ENOTREADY);
}

static void on_banner_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fg_gateway *g = h->data;
    (void)hint;
    buf->base = g->line + g->linelen;
    buf->len = sizeof(g->line) - 1 - g->linelen;
}

/* on_banner_read - the first reply line: 220 is ready (RFC 5321 §4.3.1);
 * 421, 554 or a close is not yet, and the next tick tries again. */
static void on_banner_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct fg_gateway *g = st->data;
    (void)buf;
    if (nread > 0)
        g->linelen += (size_t)nread;
    g->line[g->linelen] = '\0';
    int full = memchr(g->line, '\n', g->linelen) != NULL || g->linelen >= sizeof(g->line) - 1;
    if (nread >= 0 && !full)
        return;
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    /* "220 " or "220-": a multiline greeting is ready at its first line. */
    if (full && g->linelen >= 4 && memcmp(g->line, "220", 3) == 0 &&
        (g->line[3] == ' ' || g->line[3] == '-' || g->line[3] == '\r') && g->state == GW_STARTING)
        ready_done(g, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct fg_gateway *g = req->data;
    if (status == 0 && g->banner && g->probe_open && g->state == GW_STARTING) {
        g->linelen = 0;
        if (uv_read_start((uv_stream_t *)&g->probe, on_banner_alloc, on_banner_read) == 0)
            return;
    }
    /* Each attempt uses a fresh handle: close this one either way (unless
     * a stop or free is closing it already: then status is ECANCELED). */
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    if (status == 0 && g->state == GW_STARTING)
        ready_done(g, 0);
}

static void try_connect(struct fg_gateway *g)
{
    if (g->probe_busy)
        return; /* the previous attempt's handle is not closed yet */
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", g->port, &sa);
    if (uv_tcp_init(g->loop, &g->probe) != 0)
        return;
    g->probe.data = g;
    g->probe_open = 1;
    g->probe_busy = 1;
    g->nopen++;
    g->connect_req.data = g;
    if (uv_tcp_connect(&g->connect_req, &g->probe, (const struct sockaddr *)&sa, on_connect) != 0)
        close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
}

static void on_ready_tick(uv_timer_t *t)
{
    struct fg_gateway *g = t->data;
    if (g->state != GW_STARTING)
        return;
    follow_daemon(g);
    if (g->dexited) {
        ready_done(g, FG_ENOTREADY); /* the daemon died before it listened */
        return;
    }
    if (fg_now_ms() >= g->ready_deadline) {
        ready_done(g, FG_ENOTREADY);
        return;
    }
    try_connect(g);
}

static void on_stop_tick(uv_timer_t *t)
{
    struct fg_gateway *g = t->data;
    if (group_gone(g)) {
        uv_timer_stop(&g->timer);
        finish_stop(g);
        return;
    }
    if (fg_now_ms() >= g->kill_at) {
        /* Again on every tick: members forked since the last kill, or a
         * leader that outlived the grace, must not escape. */
        if (kill(-g->pid, SIGKILL) != 0 && errno == ESRCH && !g->exited)
            kill(g->pid, SIGKILL);
        signal_tree(g, SIGKILL);
        g->killed = 1;
    }
}

/* --- public ---------------------------------------------------------------- */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* write_config - the template with its placeholders filled, to the path
 * (both paths may hold placeholders too), its directory made if need be.
 * A leftover file is replaced. */
static int write_config(const struct fg_profile_file *f, const struct fg_gateway_vars *v, char *err,
                        size_t errlen)
{
    char *tmpl = NULL, *path = NULL, *text = NULL, *out = NULL;
    int rc = fg_placeholder_fill(f->tmpl, v, &tmpl, err, errlen);
    if (rc == 0)
        rc = fg_placeholder_fill(f->path, v, &path, err, errlen);
    FILE *in = rc == 0 ? fopen(tmpl, "r") : NULL;
    if (rc == 0 && !in)
        rc = fg_errf(err, errlen, -errno, "%s: %s", tmpl, strerror(errno));
    if (in) {
        struct fg_strbuf b = {0};
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), in)) > 0)
            fg_strbuf_printf(&b, "%.*s", (int)n, chunk);
        fclose(in);
        text = fg_strbuf_take(&b);
        if (!text)
            text = fg_strdup("");
        char perr[256];
        if ((rc = fg_placeholder_fill_text(text, v, &out, perr, sizeof(perr))) != 0)
            fg_errf(err, errlen, rc, "%s: %s", tmpl, perr);
    }
    if (rc == 0) {
        /* Its directory too: a gateway's configuration tree (Haraka's
         * config/) is made from its templates. */
        char *slash = strrchr(path, '/');
        if (slash && slash != path) {
            *slash = '\0';
            int mrc = fg_mkdir_p(path);
            *slash = '/';
            if (mrc < 0)
                rc = fg_errf(err, errlen, mrc, "%s: %s", path, strerror(-mrc));
        }
    }
    if (rc == 0) {
        FILE *o = fopen(path, "w");
        if (!o || fputs(out, o) < 0 || fclose(o) != 0) {
            rc = fg_errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
            if (o)
                fclose(o);
        }
    }
    free(tmpl);
    free(path);
    free(text);
    free(out);
    return rc;
}

int fg_gateway_start(uv_loop_t *loop, const struct fg_profile *p, const struct fg_gateway_vars *v,
                     fg_gateway_ready_cb ready_cb, void *ud, struct fg_gateway **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (!p->nargv)
        return fg_errf(err, errlen, FG_EINPUT, "%s: the profile has no start argv",
                       p->path ? p->path : "profile");
    if (!v->workdir || v->gateway_port <= 0)
        return fg_errf(err, errlen, FG_EINPUT, "the gateway needs a workdir and a port");

    int rc = 0;
    char **argv = fg_calloc(p->nargv + 1, sizeof(char *));
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = fg_calloc(nenv + p->nenv + 1, sizeof(char *));
    size_t ne = 0;
    for (size_t i = 0; i < p->nargv && rc == 0; i++)
        rc = fg_placeholder_fill(p->argv[i], v, &argv[i], err, errlen);
    /* The profile's variables override the harness's own environment. */
    for (size_t i = 0; i < p->nenv && rc == 0; i++)
        rc = fg_placeholder_fill(p->env[i], v, &env[ne++], err, errlen);
    for (size_t i = 0; i < nenv && rc == 0; i++) {
        size_t kl = strcspn(environ[i], "=");
        int overridden = 0;
        for (size_t j = 0; j < p->nenv; j++)
            if (strncmp(p->env[j], environ[i], kl) == 0 && p->env[j][kl] == '=')
                overridden = 1;
        if (!overridden)
            env[ne++] = fg_strdup(environ[i]);
    }
    if (rc) {
        strv_free(argv, p->nargv);
        strv_free(env, ne);
        return rc;
    }

    char *pidfile = NULL;
    if (p->pidfile)
        rc = fg_placeholder_fill(p->pidfile, v, &pidfile, err, errlen);
    for (size_t i = 0; i < p->nfiles && rc == 0; i++)
        rc = write_config(&p->files[i], v, err, errlen);
    if (rc) {
        free(pidfile);
        strv_free(argv, p->nargv);
        strv_free(env, ne);
        return rc;
    }

    char *logpath = fg_asprintf("%s/gateway.log", v->workdir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int pfd[2] = {-1, -1};
    if (logfd < 0 || nullfd < 0 || pipe2(pfd, O_CLOEXEC) != 0) {
        rc = -errno;
        fg_errf(err, errlen, rc, "%s: %s",
                logfd < 0    ? logpath
                : nullfd < 0 ? "/dev/null"
                             : "the gateway's output pipe",
                strerror(-rc));
        if (logfd >= 0)
            close(logfd);
        if (nullfd >= 0)
            close(nullfd);
        free(logpath);
        free(pidfile);
        strv_free(argv, p->nargv);
        strv_free(env, ne);
        return rc;
    }

#ifdef __linux__
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif

    struct fg_gateway *g = fg_calloc(1, sizeof(*g));
    g->loop = loop;
    g->logfd = logfd;
    uv_pipe_init(loop, &g->out, 0);
    g->out.data = g;
    g->out_open = 1;
    g->nopen++;
    g->port = v->gateway_port;
    g->banner = p->ready_banner;
    g->pidfile = pidfile;
    g->ready_cb = ready_cb;
    g->ready_ud = ud;
    g->stop_signal = p->stop_signal ? p->stop_signal : SIGTERM;
    g->grace_ms = p->stop_grace_ms;

    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = nullfd},
        {.flags = UV_INHERIT_FD, .data.fd = pfd[1]},
        {.flags = UV_INHERIT_FD, .data.fd = pfd[1]},
    };
    uv_process_options_t opts = {
        .exit_cb = on_proc_exit,
        .file = argv[0],
        .args = argv,
        .env = env,
        .cwd = v->workdir,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    rc = uv_spawn(loop, &g->proc, &opts);
    g->proc.data = g;
    close(pfd[1]);
    close(nullfd);
    free(logpath);
    if (uv_pipe_open(&g->out, pfd[0]) == 0)
        uv_read_start((uv_stream_t *)&g->out, on_out_alloc, on_out_read);
    else
        close(pfd[0]);
    /* The process handle is initialized even when the spawn fails, so it
     * is closed either way. */
    g->proc_open = 1;
    g->nopen++;
    if (rc) {
        fg_errf(err, errlen, rc, "cannot start %s: %s", argv[0], uv_strerror(rc));
        strv_free(argv, p->nargv);
        strv_free(env, ne);
        g->freeing = 1;
        close_handle(g, (uv_handle_t *)&g->out, &g->out_open);
        close_handle(g, (uv_handle_t *)&g->proc, &g->proc_open);
        return rc;
    }
    strv_free(argv, p->nargv);
    strv_free(env, ne);
    g->pid = g->proc.pid;

    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    g->timer_open = 1;
    g->nopen++;
    g->ready_deadline = fg_now_ms() + p->ready_timeout_ms;
    uv_timer_start(&g->timer, on_ready_tick, 0, READY_POLL_MS);
    *out = g;
    return 0;
}

void fg_gateway_stop(struct fg_gateway *g, fg_gateway_stopped_cb cb, void *ud)
{
    if (g->state == GW_STOPPING || g->state == GW_STOPPED) {
        /* Already on its way: the newest callback wins. */
        g->stopped_cb = cb;
        g->stopped_ud = ud;
        if (g->state == GW_STOPPED && cb) {
            g->stopped_cb = NULL;
            cb(g, ud);
        }
        return;
    }
    /* A pending readiness wait is over: nobody waits for it any more. */
    g->ready_cb = NULL;
    g->state = GW_STOPPING;
    g->stopped_cb = cb;
    g->stopped_ud = ud;
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    if (kill(-g->pid, g->stop_signal) != 0 && errno == ESRCH && !g->exited)
        kill(g->pid, g->stop_signal); /* not a group leader (yet) */
    signal_tree(g, g->stop_signal);
    g->kill_at = fg_now_ms() + g->grace_ms;
    uv_timer_stop(&g->timer);
    uv_timer_start(&g->timer, on_stop_tick, 0, STOP_POLL_MS);
}

int fg_gateway_running(struct fg_gateway *g)
{
    if (!g || g->pid <= 0)
        return 0;
    if (!g->exited)
        return 1;
    follow_daemon(g);
    return daemonized(g) && g->dpid > 0 && !g->dexited;
}

int64_t fg_gateway_exit_status(struct fg_gateway *g)
{
    if (!g)
        return 0;
    follow_daemon(g);
    return g->dexited ? g->dstatus : g->exit_status;
}

int fg_gateway_term_signal(struct fg_gateway *g)
{
    if (!g)
        return 0;
    follow_daemon(g);
    return g->dexited ? g->dsignal : g->term_signal;
}

int fg_gateway_pid(const struct fg_gateway *g)
{
    return g ? g->pid : 0;
}

void fg_gateway_free(struct fg_gateway *g)
{
    if (!g)
        return;
    if (g->state != GW_STOPPED && g->pid > 0) {
        /* Freed without a stop: still make sure nothing survives.  This
         * blocks only for the reap of a SIGKILLed leader. */
        kill(-g->pid, SIGKILL);
        signal_tree(g, SIGKILL);
        if (!g->exited && waitpid(g->pid, NULL, 0) == g->pid)
            g->exited = 1;
        while (waitpid(-g->pid, NULL, WNOHANG) > 0)
            ;
    }
    g->ready_cb = NULL;
    g->stopped_cb = NULL;
    g->freeing = 1;
    if (g->timer_open)
        uv_timer_stop(&g->timer);
    close_handle(g, (uv_handle_t *)&g->timer, &g->timer_open);
    close_handle(g, (uv_handle_t *)&g->probe, &g->probe_open);
    log_drain(g);
    close_handle(g, (uv_handle_t *)&g->out, &g->out_open);
    close_handle(g, (uv_handle_t *)&g->proc, &g->proc_open);
    maybe_free(g);
}

/* --- the version command ------------------------------------------------ */

#define VERSION_TIMEOUT_MS 5000

char *fg_gateway_version(const struct fg_profile *p, const struct fg_gateway_vars *v)
{
    if (!p->nversion)
        return NULL;
    char err[FG_ERRBUF_SIZE];
    char **argv = fg_calloc(p->nversion + 1, sizeof(char *));
    int rc = 0;
    for (size_t i = 0; i < p->nversion && rc == 0; i++)
        rc = fg_placeholder_fill(p->version_argv[i], v, &argv[i], err, sizeof(err));
    int fds[2] = {-1, -1};
    char line[256] = "";
    if (rc == 0 && pipe2(fds, O_CLOEXEC) == 0) {
        /* Its own argv, exec'd as it is: no value of a placeholder ever
         * reaches a shell.  Its own process group, so that a version
         * command that forks is killed whole at the deadline. */
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
        posix_spawnattr_init(&at);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&at, 0);
        pid_t pid;
        int sp = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        close(fds[1]);
        if (sp == 0) {
            size_t len = 0;
            uint64_t deadline = fg_now_ms() + VERSION_TIMEOUT_MS;
            while (len < sizeof(line) - 1 && !memchr(line, '\n', len)) {
                uint64_t now = fg_now_ms();
                struct pollfd pf = {.fd = fds[0], .events = POLLIN};
                if (now >= deadline || poll(&pf, 1, (int)(deadline - now)) <= 0)
                    break;
                ssize_t n = read(fds[0], line + len, sizeof(line) - 1 - len);
                if (n <= 0)
                    break;
                len += (size_t)n;
                line[len] = '\0';
            }
            /* The first line is all it is asked for. */
            kill(-pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        close(fds[0]);
    }
    strv_free(argv, p->nversion);
    line[strcspn(line, "\r\n")] = '\0';
    return line[0] ? fg_strdup(line) : NULL;
}

/* Bind a loopback TCP socket to port (0: the kernel picks) without
 * SO_REUSEADDR, so that a port still in TIME_WAIT counts as taken too, and
 * return the port bound or a negative errno. */
static int port_try(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
        rc = -errno;
    close(fd);
    return rc < 0 ? rc : ntohs(sa.sin_port);
}

int fg_port_range_low(void)
{
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    return lo;
}

int fg_port_alloc(void)
{
    /* The port is free only until it is closed here and the gateway binds
     * it.  A port from the ephemeral range can meanwhile be handed to any
     * socket that binds port 0 (the harness's own fake MTA and proxy among
     * them) or to a connect()'s source port: the gateway then fails to
     * listen and the readiness probe may reach someone else's listener.
     * So pick at random below that range, where the kernel never hands
     * ports out on its own, and fall back to the kernel's choice only when
     * the range leaves no room. */
    int lo = fg_port_range_low();
    if (lo > FG_PORT_MIN + 1024) {
        for (int i = 0; i < 64; i++) {
            uint32_t r;
            if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
                break;
            int port = port_try(FG_PORT_MIN + (int)(r % (uint32_t)(lo - FG_PORT_MIN)));
            if (port > 0)
                return port;
        }
    }
    return port_try(0);
}
