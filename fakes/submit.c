/* submit.c - a real SMTP client as the system under test: its command run
 * once per message (faultgate/submit.h).
 *
 * The command is spawned detached, so that it calls setsid() and leads a
 * process group of its own: a client that forks (a shell wrapper, a
 * helper) is killed whole.  The message goes to its standard input through
 * a pipe (or /dev/null when the profile says stdin: none) and is always
 * written to {message_file} too; its standard output is appended to the
 * log; its standard error is read through a pipe, appended to the log and
 * its last octets kept for the result.  A deadline timer SIGKILLs the
 * group; the result then says timed_out.  After the leader exits the rest
 * of the group is killed and reaped (the harness is a child subreaper, as
 * for gateways, so the group's orphans are its children), and the stderr
 * pipe is drained for at most DRAIN_MS: a grandchild that escaped the
 * group and holds the pipe open cannot keep the run waiting.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "faultgate/error.h"
#include "faultgate/submit.h"
#include "faultgate/util.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DRAIN_MS 1000
#define REAP_POLL_MS 20

extern char **environ;

struct fg_submit {
    uv_loop_t *loop;
    uv_process_t proc;
    uv_pipe_t in, err;
    uv_timer_t timer; /* the deadline, then the reap / drain polls */
    uv_write_t wreq;
    int nopen;
    int proc_open, in_open, err_open, timer_open;
    int exited, err_eof, finished, closing;
    int pid;
    char *text; /* the message, alive until the write callback */
    size_t len;
    int logfd;
    uint64_t start_ms, drain_until;
    size_t tail_len;
    struct fg_submit_result res;
    fg_submit_done_cb cb;
    void *ud;
    void (*close_cb)(void *ud);
    void *close_ud;
};

/* --- placeholders ------------------------------------------------------- */

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static void sb_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    fg_array_reserve((void **)buf, cap, *len + n + 1, 1);
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int fg_submit_fill(const char *s, const struct fg_submit_msg *m, const char *message_file,
                   const struct fg_gateway_vars *v, char **out, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    sb_add(&buf, &len, &cap, "", 0);
    *out = NULL;
    for (const char *p = s; *p;) {
        const char *e = p + 1;
        if (*p == '{')
            while (is_ident(*e))
                e++;
        if (*p != '{' || *e != '}' || e == p + 1) {
            sb_add(&buf, &len, &cap, p, 1);
            p++;
            continue;
        }
        size_t n = (size_t)(e - p - 1);
        const char *name = p + 1;
#define IS(lit) (n == sizeof(lit) - 1 && strncmp(name, lit, n) == 0)
        if (IS("from")) {
            sb_add(&buf, &len, &cap, m->from ? m->from : "", m->from ? strlen(m->from) : 0);
        } else if (IS("to")) {
            for (size_t i = 0; i < m->nto; i++) {
                if (i)
                    sb_add(&buf, &len, &cap, ",", 1);
                sb_add(&buf, &len, &cap, m->to[i], strlen(m->to[i]));
            }
        } else if (IS("token")) {
            sb_add(&buf, &len, &cap, m->token ? m->token : "", m->token ? strlen(m->token) : 0);
        } else if (IS("message_file")) {
            if (!message_file) {
                free(buf);
                return fg_errf(err, errlen, FG_EINPUT,
                               "placeholder {message_file} in '%s' has no value in this run", s);
            }
            sb_add(&buf, &len, &cap, message_file, strlen(message_file));
        } else {
            /* The gateway placeholders, one at a time, so that a value
             * (an address holding braces) is never read as a placeholder. */
            char *one = fg_strndup(p, n + 2), *val = NULL;
            int rc = fg_placeholder_fill(one, v, &val, err, errlen);
            free(one);
            if (rc < 0) {
                free(buf);
                return rc;
            }
            sb_add(&buf, &len, &cap, val, strlen(val));
            free(val);
        }
#undef IS
        p = e + 1;
    }
    *out = buf;
    return 0;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* --- handles ------------------------------------------------------------ */

static void maybe_free(struct fg_submit *s)
{
    if (!s->closing || s->nopen > 0)
        return;
    void (*cb)(void *) = s->close_cb;
    void *ud = s->close_ud;
    if (s->logfd >= 0)
        close(s->logfd);
    free(s->text);
    free(s);
    if (cb)
        cb(ud);
}

static void on_closed(uv_handle_t *h)
{
    struct fg_submit *s = h->data;
    s->nopen--;
    maybe_free(s);
}

static void close_handle(struct fg_submit *s, uv_handle_t *h, int *open)
{
    if (!*open)
        return;
    *open = 0;
    uv_close(h, on_closed);
}

/* reap_group - kill what is left of the group and reap the members the
 * harness inherited.  1 when nothing of the group is left. */
static int reap_group(struct fg_submit *s)
{
    if (s->pid <= 0)
        return 1;
    kill(-s->pid, SIGKILL);
    while (waitpid(-s->pid, NULL, WNOHANG) > 0)
        ;
    return kill(-s->pid, 0) != 0 && errno == ESRCH;
}

static void close_all(struct fg_submit *s)
{
    if (s->timer_open)
        uv_timer_stop(&s->timer);
    close_handle(s, (uv_handle_t *)&s->timer, &s->timer_open);
    close_handle(s, (uv_handle_t *)&s->in, &s->in_open);
    close_handle(s, (uv_handle_t *)&s->err, &s->err_open);
    close_handle(s, (uv_handle_t *)&s->proc, &s->proc_open);
}

static void finish(struct fg_submit *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    if (s->timer_open)
        uv_timer_stop(&s->timer);
    close_handle(s, (uv_handle_t *)&s->in, &s->in_open);
    close_handle(s, (uv_handle_t *)&s->err, &s->err_open);
    if (s->cb && !s->closing)
        s->cb(s, &s->res, s->ud);
}

static void on_poll(uv_timer_t *t)
{
    struct fg_submit *s = t->data;
    int gone = reap_group(s);
    if ((gone && s->err_eof) || fg_now_ms() >= s->drain_until) {
        uv_timer_stop(&s->timer);
        finish(s);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct fg_submit *s = t->data;
    if (s->exited)
        return;
    s->res.timed_out = 1;
    kill(-s->pid, SIGKILL);
    if (kill(s->pid, 0) == 0)
        kill(s->pid, SIGKILL); /* not a group leader yet */
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct fg_submit *s = p->data;
    s->exited = 1;
    s->res.exit_status = status;
    s->res.term_signal = sig;
    s->res.duration_ms = fg_now_ms() - s->start_ms;
    reap_group(s);
    if (s->closing) {
        close_all(s);
        return;
    }
    /* Drain stderr and reap the group's stragglers, with a bound. */
    s->drain_until = fg_now_ms() + DRAIN_MS;
    uv_timer_stop(&s->timer);
    uv_timer_start(&s->timer, on_poll, 0, REAP_POLL_MS);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char chunk[4096]; /* consumed in on_read before the next read */
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct fg_submit *s = st->data;
    if (n < 0) {
        s->err_eof = 1;
        uv_read_stop(st);
        return;
    }
    if (n == 0)
        return;
    if (s->logfd >= 0 && write(s->logfd, buf->base, (size_t)n) < 0) {
        /* The log is a convenience; the tail below is what the result keeps. */
    }
    /* Keep the last FG_SUBMIT_TAIL - 1 octets. */
    size_t max = FG_SUBMIT_TAIL - 1, add = (size_t)n;
    const char *src = buf->base;
    if (add >= max) {
        src += add - max;
        add = max;
        s->tail_len = 0;
    } else if (s->tail_len + add > max) {
        size_t drop = s->tail_len + add - max;
        memmove(s->res.stderr_tail, s->res.stderr_tail + drop, s->tail_len - drop);
        s->tail_len -= drop;
    }
    memcpy(s->res.stderr_tail + s->tail_len, src, add);
    s->tail_len += add;
    s->res.stderr_tail[s->tail_len] = '\0';
}

static void on_written(uv_write_t *req, int status)
{
    struct fg_submit *s = req->data;
    (void)status; /* EPIPE: the client did not read it all; its exit tells */
    /* Closing the pipe is the end of the message for the client. */
    close_handle(s, (uv_handle_t *)&s->in, &s->in_open);
}

static void on_spawn_failed(uv_timer_t *t)
{
    finish(t->data);
}

/* --- public ------------------------------------------------------------- */

static int write_file(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fg_errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return fg_errf(err, errlen, -e, "%s: %s", path, strerror(e));
        }
        off += (size_t)w;
    }
    close(fd);
    return 0;
}

int fg_submit_start(uv_loop_t *loop, const struct fg_submit_opts *o, const struct fg_submit_msg *m,
                    fg_submit_done_cb cb, void *ud, struct fg_submit **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (!o->nargv)
        return fg_errf(err, errlen, FG_EINPUT, "the client has no command");
    int rc;
    if (o->message_file && (rc = write_file(o->message_file, m->text, m->len, err, errlen)) < 0)
        return rc;

    /* argv: "{to}" alone is one word per recipient. */
    size_t cap = o->nargv + m->nto + 1, na = 0;
    char **argv = fg_calloc(cap, sizeof(char *));
    rc = 0;
    for (size_t i = 0; i < o->nargv && rc == 0; i++) {
        if (strcmp(o->argv[i], "{to}") == 0) {
            for (size_t k = 0; k < m->nto; k++)
                argv[na++] = fg_strdup(m->to[k]);
            continue;
        }
        rc = fg_submit_fill(o->argv[i], m, o->message_file, o->vars, &argv[na++], err, errlen);
    }
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = fg_calloc(nenv + o->nenv + 1, sizeof(char *));
    size_t ne = 0;
    for (size_t i = 0; i < o->nenv && rc == 0; i++)
        rc = fg_submit_fill(o->env[i], m, o->message_file, o->vars, &env[ne++], err, errlen);
    for (size_t i = 0; i < nenv && rc == 0; i++) {
        size_t kl = strcspn(environ[i], "=");
        int overridden = 0;
        for (size_t j = 0; j < o->nenv; j++)
            if (strncmp(o->env[j], environ[i], kl) == 0 && o->env[j][kl] == '=')
                overridden = 1;
        if (!overridden)
            env[ne++] = fg_strdup(environ[i]);
    }
    if (rc < 0) {
        strv_free(argv, na);
        strv_free(env, ne);
        return rc;
    }

    struct fg_submit *s = fg_calloc(1, sizeof(*s));
    s->loop = loop;
    s->cb = cb;
    s->ud = ud;
    s->logfd = -1;
    if (o->log_path)
        s->logfd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int nullin = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int nullout = open("/dev/null", O_WRONLY | O_CLOEXEC);
    snprintf(s->res.token, sizeof(s->res.token), "%s", m->token ? m->token : "");

#ifdef __linux__
    /* The group's orphans come back to the harness, which reaps them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif

    uv_pipe_init(loop, &s->err, 0);
    s->err.data = s;
    s->err_open = 1;
    s->nopen++;
    if (o->stdin_message) {
        uv_pipe_init(loop, &s->in, 0);
        s->in.data = s;
        s->in_open = 1;
        s->nopen++;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->timer_open = 1;
    s->nopen++;

    uv_stdio_container_t stdio[3];
    if (o->stdin_message) {
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&s->in;
    } else {
        stdio[0].flags = UV_INHERIT_FD;
        stdio[0].data.fd = nullin;
    }
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = s->logfd >= 0 ? s->logfd : nullout;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&s->err;
    uv_process_options_t po = {
        .exit_cb = on_exit_cb,
        .file = argv[0],
        .args = argv,
        .env = env,
        .cwd = o->vars ? o->vars->workdir : NULL,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    s->start_ms = fg_now_ms();
    s->res.start_us = fg_wall_us();
    rc = uv_spawn(loop, &s->proc, &po);
    s->proc.data = s;
    /* The process handle is initialized even when the spawn fails. */
    s->proc_open = 1;
    s->nopen++;
    if (nullin >= 0)
        close(nullin);
    if (nullout >= 0)
        close(nullout);
    strv_free(argv, na);
    strv_free(env, ne);
    if (rc != 0) {
        s->res.spawned = 0;
        s->res.spawn_error = rc;
        s->res.exit_status = 127;
        snprintf(s->res.stderr_tail, sizeof(s->res.stderr_tail), "cannot start the client: %s",
                 uv_strerror(rc));
        s->exited = 1;
        s->err_eof = 1;
        /* Reported from the loop, not from inside this call. */
        uv_timer_start(&s->timer, on_spawn_failed, 0, 0);
        *out = s;
        return 0;
    }
    s->res.spawned = 1;
    s->pid = s->proc.pid;
    uv_read_start((uv_stream_t *)&s->err, on_alloc, on_read);
    if (o->stdin_message) {
        s->text = fg_malloc(m->len ? m->len : 1);
        memcpy(s->text, m->text, m->len);
        s->len = m->len;
        uv_buf_t b = uv_buf_init(s->text, (unsigned)s->len);
        s->wreq.data = s;
        if (uv_write(&s->wreq, (uv_stream_t *)&s->in, &b, 1, on_written) != 0)
            close_handle(s, (uv_handle_t *)&s->in, &s->in_open);
    }
    /* The loop's cached clock may be older than start_ms: refresh it so
     * that the deadline is never reached before timeout_ms has passed. */
    uv_update_time(loop);
    uv_timer_start(&s->timer, on_deadline, o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS, 0);
    *out = s;
    return 0;
}

void fg_submit_kill(struct fg_submit *s)
{
    if (s->res.spawned && !s->exited)
        on_deadline(&s->timer);
}

int fg_submit_running(const struct fg_submit *s)
{
    return s && s->res.spawned && !s->exited;
}

void fg_submit_close(struct fg_submit *s, void (*cb)(void *ud), void *ud)
{
    s->closing = 1;
    s->close_cb = cb;
    s->close_ud = ud;
    if (s->res.spawned && !s->exited) {
        /* Still running when the run ends: killed, and closed once libuv
         * has reaped it (on_exit_cb), so no zombie is left. */
        s->res.timed_out = 1;
        if (s->timer_open)
            uv_timer_stop(&s->timer);
        kill(-s->pid, SIGKILL);
        if (kill(s->pid, 0) == 0)
            kill(s->pid, SIGKILL);
        close_handle(s, (uv_handle_t *)&s->in, &s->in_open);
        close_handle(s, (uv_handle_t *)&s->err, &s->err_open);
        return;
    }
    if (s->exited)
        reap_group(s);
    close_all(s);
    maybe_free(s);
}
