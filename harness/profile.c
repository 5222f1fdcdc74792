/* profile.c - gateway profiles (scenarios/gateways/, one YAML file each) and the
 * `within` expressions evaluated against their timeouts.
 *
 * A profile says how to start the gateway under test, when it is ready,
 * how to stop it and which timeouts it is configured with.  Every mistake
 * in a profile is reported as file:line:col so that `faultgate run` can
 * exit 2 with a message that points at it.
 */
#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/profile.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

const char *const fg_timeout_names[] = {"greeting",  "ehlo",       "mail",      "rcpt",
                                        "data_init", "data_block", "data_done", "idle",
                                        "retry",     "retry_max",  "give_up",   NULL};

#define DEFAULT_READY_MS 10000
#define DEFAULT_GRACE_MS 3000
#define DEFAULT_SUBMIT_MS 30000

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void fg_profile_free(struct fg_profile *p)
{
    if (!p)
        return;
    free(p->path);
    free(p->name);
    free(p->description);
    free(p->version_cmd);
    strv_free(p->argv, p->nargv);
    strv_free(p->env, p->nenv);
    strv_free(p->version_argv, p->nversion);
    strv_free(p->submit_argv, p->nsubmit);
    strv_free(p->submit_env, p->nsubmit_env);
    for (size_t i = 0; i < p->ntimeouts; i++)
        free(p->timeouts[i].name);
    free(p->timeouts);
    free(p->pidfile);
    for (size_t i = 0; i < p->nfiles; i++) {
        free(p->files[i].tmpl);
        free(p->files[i].path);
    }
    free(p->files);
    free(p);
}

const char *fg_tls_policy_name(int policy)
{
    switch (policy) {
    case FG_TLS_POLICY_NONE:
        return "none";
    case FG_TLS_POLICY_OPPORTUNISTIC:
        return "opportunistic";
    case FG_TLS_POLICY_MANDATORY:
        return "mandatory";
    default:
        return NULL;
    }
}

int fg_tls_policy_parse(const char *s)
{
    for (int i = FG_TLS_POLICY_NONE; i <= FG_TLS_POLICY_MANDATORY; i++)
        if (s && strcmp(s, fg_tls_policy_name(i)) == 0)
            return i;
    return -1;
}

int64_t fg_profile_timeout(const struct fg_profile *p, const char *name)
{
    if (!p)
        return -1;
    for (size_t i = 0; i < p->ntimeouts; i++)
        if (strcmp(p->timeouts[i].name, name) == 0)
            return (int64_t)p->timeouts[i].ms;
    return -1;
}

static int known_timeout(const char *name, size_t len)
{
    for (size_t i = 0; fg_timeout_names[i]; i++)
        if (strlen(fg_timeout_names[i]) == len && strncmp(fg_timeout_names[i], name, len) == 0)
            return 1;
    return 0;
}

static void timeout_list(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; fg_timeout_names[i] && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", fg_timeout_names[i]);
}

/* --- within expressions -------------------------------------------------
 *
 *   expr   := term (("+" | "-") term)*
 *   term   := factor ("*" factor)*       at most one factor is a duration
 *   factor := NUMBER | DURATION | "timeouts." NAME
 *
 * A term that is a bare number is seconds, as in fg_duration_parse.  A
 * small recursive-descent evaluator: no library offers this, and the
 * errors must carry a column. */

struct wctx {
    const char *s;
    size_t pos;
    const struct fg_timeout *t;
    size_t nt;
    int check_only; /* no timeouts to read: names checked, values 0 */
    char *err;
    size_t errlen;
    int *col;
};

static int wfail(struct wctx *w, size_t at, int rc, const char *fmt, const char *arg)
{
    if (w->col)
        *w->col = (int)at + 1;
    char msg[200];
    snprintf(msg, sizeof(msg), fmt, arg);
    return fg_errf(w->err, w->errlen, rc, "%s (column %zu of \"%s\")", msg, at + 1, w->s);
}

static void wskip(struct wctx *w)
{
    while (w->s[w->pos] == ' ' || w->s[w->pos] == '\t')
        w->pos++;
}

/* One factor: *val in ms (duration) or plain (number); *dim 1 for a duration. */
static int wfactor(struct wctx *w, double *val, int *dim)
{
    wskip(w);
    const char *s = w->s;
    size_t start = w->pos;
    if (isdigit((unsigned char)s[start]) || s[start] == '.') {
        size_t e = start;
        while (isdigit((unsigned char)s[e]) || s[e] == '.')
            e++;
        size_t u = e;
        while (isalpha((unsigned char)s[u]))
            u++;
        char tok[64];
        if (u - start >= sizeof(tok))
            return wfail(w, start, FG_ESYNTAX, "number too long", NULL);
        memcpy(tok, s + start, u - start);
        tok[u - start] = '\0';
        if (u > e) {
            uint64_t ms;
            if (fg_duration_parse(tok, &ms) != 0)
                return wfail(w, start, FG_ESYNTAX,
                             "bad duration '%s' (use ms, s, m or h, e.g. 250ms, 5s)", tok);
            *val = (double)ms;
            *dim = 1;
        } else {
            char *end;
            *val = strtod(tok, &end);
            if (*end || !isfinite(*val))
                return wfail(w, start, FG_ESYNTAX, "bad number '%s'", tok);
            *dim = 0;
        }
        w->pos = u;
        return 0;
    }
    if (isalpha((unsigned char)s[start]) || s[start] == '_') {
        size_t e = start;
        while (isalnum((unsigned char)s[e]) || s[e] == '_' || s[e] == '.')
            e++;
        char tok[64];
        size_t n = e - start < sizeof(tok) - 1 ? e - start : sizeof(tok) - 1;
        memcpy(tok, s + start, n);
        tok[n] = '\0';
        if (strncmp(tok, "timeouts.", 9) != 0)
            return wfail(w, start, FG_ESYNTAX,
                         "unexpected '%s' (a term is a duration like 5s or timeouts.NAME)", tok);
        const char *name = tok + 9;
        size_t nlen = strlen(name);
        if (!known_timeout(name, nlen)) {
            char list[200], msg[300];
            timeout_list(list, sizeof(list));
            snprintf(msg, sizeof(msg), "unknown timeout '%%s' (known: %s)", list);
            return wfail(w, start, FG_EINPUT, msg, tok);
        }
        *dim = 1;
        *val = 0;
        if (!w->check_only) {
            size_t i;
            for (i = 0; i < w->nt; i++)
                if (strcmp(w->t[i].name, name) == 0)
                    break;
            if (i == w->nt)
                return wfail(w, start, FG_EINPUT, "the profile does not define '%s'", tok);
            *val = (double)w->t[i].ms;
        }
        w->pos = e;
        return 0;
    }
    if (!s[start])
        return wfail(w, start, FG_ESYNTAX, "expression ends where a duration was expected%s", "");
    char c[2] = {s[start], 0};
    return wfail(w, start, FG_ESYNTAX, "unexpected '%s' where a duration was expected", c);
}

static int wterm(struct wctx *w, double *ms)
{
    size_t start = w->pos;
    wskip(w);
    start = w->pos;
    double prod = 1;
    int ndim = 0;
    int nfac = 0;
    for (;;) {
        double v;
        int dim;
        wskip(w);
        size_t at = w->pos;
        int rc = wfactor(w, &v, &dim);
        if (rc)
            return rc;
        if (dim && ndim)
            return wfail(w, at, FG_ESYNTAX, "cannot multiply two durations%s", "");
        ndim += dim;
        nfac++;
        prod *= v;
        wskip(w);
        if (w->s[w->pos] != '*')
            break;
        w->pos++;
    }
    if (!ndim) {
        if (nfac > 1)
            return wfail(w, start, FG_ESYNTAX, "a product needs a duration (e.g. 2 * 5s)%s", "");
        prod *= 1000; /* a bare number is seconds */
    }
    *ms = prod;
    return 0;
}

static int within_eval(struct wctx *w, uint64_t *out)
{
    double total;
    int rc = wterm(w, &total);
    if (rc)
        return rc;
    for (;;) {
        wskip(w);
        char op = w->s[w->pos];
        if (!op)
            break;
        if (op != '+' && op != '-') {
            char c[2] = {op, 0};
            return wfail(w, w->pos, FG_ESYNTAX, "expected + or - before '%s'", c);
        }
        w->pos++;
        double v;
        if ((rc = wterm(w, &v)))
            return rc;
        total += op == '+' ? v : -v;
    }
    if (total < 0)
        return wfail(w, 0, FG_ESYNTAX, "the expression is negative%s", "");
    if (total > 1e15)
        return wfail(w, 0, FG_ESYNTAX, "the expression is too large%s", "");
    *out = (uint64_t)llround(total);
    return 0;
}

int fg_within_eval_timeouts(const char *expr, const struct fg_timeout *t, size_t nt, uint64_t *ms,
                            char *err, size_t errlen, int *col)
{
    struct wctx w = {
        .s = expr ? expr : "", .t = t, .nt = nt, .err = err, .errlen = errlen, .col = col};
    return within_eval(&w, ms);
}

int fg_within_eval(const char *expr, const struct fg_profile *p, uint64_t *ms, char *err,
                   size_t errlen, int *col)
{
    struct wctx w = {.s = expr ? expr : "", .err = err, .errlen = errlen, .col = col};
    if (p) {
        w.t = p->timeouts;
        w.nt = p->ntimeouts;
    } else {
        w.check_only = 1;
    }
    return within_eval(&w, ms);
}

/* --- loading -------------------------------------------------------------- */

static int get_scalar(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                      char *err, size_t errlen)
{
    return fg_yaml_expect(d, n, FG_YAML_SCALAR, what, err, errlen);
}

static int get_duration(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                        uint64_t *ms, char *err, size_t errlen)
{
    int rc = get_scalar(d, n, what, err, errlen);
    if (rc)
        return rc;
    if (fg_duration_parse(n->scalar, ms) != 0)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                            "%s: bad duration '%s' (use ms, s, m or h, e.g. 250ms, 5s)", what,
                            n->scalar);
    return 0;
}

/* A non-empty list of scalars, copied. */
static int get_strv(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                    char ***out, size_t *nout, char *err, size_t errlen)
{
    int rc = fg_yaml_expect(d, n, FG_YAML_SEQ, what, err, errlen);
    if (rc)
        return rc;
    if (n->n == 0)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "%s must not be empty", what);
    for (size_t i = 0; i < n->n; i++)
        if ((rc = get_scalar(d, n->items[i], what, err, errlen)))
            return rc;
    *out = fg_calloc(n->n + 1, sizeof(char *));
    for (size_t i = 0; i < n->n; i++)
        (*out)[i] = fg_strdup(n->items[i]->scalar);
    *nout = n->n;
    return 0;
}

static const struct {
    const char *name;
    int sig;
} signals[] = {{"TERM", SIGTERM}, {"INT", SIGINT},   {"HUP", SIGHUP},   {"QUIT", SIGQUIT},
               {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {NULL, 0}};

/* load_env - a map of variable names to values, as "NAME=value". */
static int load_env(const struct fg_yaml_doc *d, const struct fg_yaml_node *env, const char *what,
                    char ***out, size_t *nout, char *err, size_t errlen)
{
    int rc;
    if ((rc = fg_yaml_expect(d, env, FG_YAML_MAP, what, err, errlen)))
        return rc;
    *out = fg_calloc(env->n + 1, sizeof(char *));
    for (size_t i = 0; i < env->n; i++) {
        const char *k = env->keys[i]->scalar;
        int ok = *k && (isalpha((unsigned char)*k) || *k == '_');
        for (const char *c = k; ok && *c; c++)
            ok = isalnum((unsigned char)*c) || *c == '_';
        if (!ok)
            return fg_yaml_errf(d, env->keys[i], err, errlen, FG_EINPUT,
                                "bad environment variable name '%s'", k);
        if ((rc = get_scalar(d, env->items[i], "an environment value", err, errlen)))
            return rc;
        (*out)[(*nout)++] = fg_asprintf("%s=%s", k, env->items[i]->scalar);
    }
    return 0;
}

/* load_config - `config: [{template: FILE, path: FILE}, ...]`: files the
 * gateway reads, made from templates with the placeholders filled. */
static int load_config(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                       struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"template", "path", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_SEQ, "'start.config'", err, errlen)))
        return rc;
    p->files = fg_calloc(n->n ? n->n : 1, sizeof(*p->files));
    for (size_t i = 0; i < n->n; i++) {
        const struct fg_yaml_node *f = n->items[i];
        if ((rc = fg_yaml_expect(d, f, FG_YAML_MAP, "a 'start.config' item", err, errlen)) ||
            (rc = fg_yaml_check_keys(d, f, keys, "a 'start.config' item", err, errlen)))
            return rc;
        const struct fg_yaml_node *t = fg_yaml_get(f, "template");
        const struct fg_yaml_node *o = fg_yaml_get(f, "path");
        if (!t || !o)
            return fg_yaml_errf(d, f, err, errlen, FG_EINPUT,
                                "a 'start.config' item needs 'template' and 'path'");
        if ((rc = get_scalar(d, t, "'template'", err, errlen)) ||
            (rc = get_scalar(d, o, "'path'", err, errlen)))
            return rc;
        p->files[p->nfiles].tmpl = fg_strdup(t->scalar);
        p->files[p->nfiles++].path = fg_strdup(o->scalar);
    }
    return 0;
}

static int load_start(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                      struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"argv", "env", "pidfile", "config", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'start'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'start'", err, errlen)))
        return rc;
    const struct fg_yaml_node *argv = fg_yaml_get(n, "argv");
    if (!argv)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "'start' needs 'argv'");
    if ((rc = get_strv(d, argv, "'start.argv'", &p->argv, &p->nargv, err, errlen)))
        return rc;
    const struct fg_yaml_node *pf = fg_yaml_get(n, "pidfile");
    if (pf) {
        if ((rc = get_scalar(d, pf, "'start.pidfile'", err, errlen)))
            return rc;
        if (!*pf->scalar)
            return fg_yaml_errf(d, pf, err, errlen, FG_EINPUT, "'start.pidfile' is empty");
        p->pidfile = fg_strdup(pf->scalar);
    }
    const struct fg_yaml_node *cf = fg_yaml_get(n, "config");
    if (cf && (rc = load_config(d, cf, p, err, errlen)))
        return rc;
    const struct fg_yaml_node *env = fg_yaml_get(n, "env");
    if (!env)
        return 0;
    return load_env(d, env, "'start.env'", &p->env, &p->nenv, err, errlen);
}

/* load_submit - `submit: {command: [...], stdin: message|none, timeout: 30s,
 * env: {...}}`: a client profile (faultgate/submit.h). */
static int load_submit(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                       struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"command", "stdin", "timeout", "env", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'submit'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'submit'", err, errlen)))
        return rc;
    const struct fg_yaml_node *cmd = fg_yaml_get(n, "command");
    if (!cmd)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "'submit' needs 'command'");
    if ((rc = get_strv(d, cmd, "'submit.command'", &p->submit_argv, &p->nsubmit, err, errlen)))
        return rc;
    const struct fg_yaml_node *in = fg_yaml_get(n, "stdin");
    if (in) {
        if ((rc = get_scalar(d, in, "'submit.stdin'", err, errlen)))
            return rc;
        if (strcmp(in->scalar, "message") == 0)
            p->submit_stdin = 1;
        else if (strcmp(in->scalar, "none") == 0)
            p->submit_stdin = 0;
        else
            return fg_yaml_errf(d, in, err, errlen, FG_EINPUT,
                                "'submit.stdin' must be message or none, not '%s'", in->scalar);
    }
    const struct fg_yaml_node *to = fg_yaml_get(n, "timeout");
    if (to) {
        if ((rc = get_duration(d, to, "'submit.timeout'", &p->submit_timeout_ms, err, errlen)))
            return rc;
        if (p->submit_timeout_ms == 0)
            return fg_yaml_errf(d, to, err, errlen, FG_EINPUT, "'submit.timeout' must not be 0");
    }
    const struct fg_yaml_node *env = fg_yaml_get(n, "env");
    if (env)
        return load_env(d, env, "'submit.env'", &p->submit_env, &p->nsubmit_env, err, errlen);
    return 0;
}

static int load_ready(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                      struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"tcp", "banner", "timeout", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'ready'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'ready'", err, errlen)))
        return rc;
    const struct fg_yaml_node *tcp = fg_yaml_get(n, "tcp");
    const struct fg_yaml_node *banner = fg_yaml_get(n, "banner");
    if (tcp && banner)
        return fg_yaml_errf(d, banner, err, errlen, FG_EINPUT,
                            "'ready' has 'tcp' or 'banner', not both");
    if (banner) {
        /* Ready once the port greets with 220 (RFC 5321 §4.3.1): an MTA
         * may accept connections before it can serve them. */
        if ((rc = get_scalar(d, banner, "'ready.banner'", err, errlen)))
            return rc;
        if (strcmp(banner->scalar, "gateway_port") != 0)
            return fg_yaml_errf(d, banner, err, errlen, FG_EINPUT,
                                "'ready.banner' must be gateway_port, not '%s'", banner->scalar);
        p->ready_banner = 1;
    }
    if (tcp) {
        if ((rc = get_scalar(d, tcp, "'ready.tcp'", err, errlen)))
            return rc;
        /* The only readiness check so far: a TCP connect to the gateway's
         * own listening port. */
        if (strcmp(tcp->scalar, "gateway_port") != 0)
            return fg_yaml_errf(d, tcp, err, errlen, FG_EINPUT,
                                "'ready.tcp' must be gateway_port, not '%s'", tcp->scalar);
    }
    const struct fg_yaml_node *to = fg_yaml_get(n, "timeout");
    if (to)
        return get_duration(d, to, "'ready.timeout'", &p->ready_timeout_ms, err, errlen);
    return 0;
}

static int load_stop(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                     struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"signal", "grace", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'stop'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'stop'", err, errlen)))
        return rc;
    const struct fg_yaml_node *sig = fg_yaml_get(n, "signal");
    if (sig) {
        if ((rc = get_scalar(d, sig, "'stop.signal'", err, errlen)))
            return rc;
        const char *name = sig->scalar;
        if (strncasecmp(name, "SIG", 3) == 0)
            name += 3;
        size_t i;
        for (i = 0; signals[i].name; i++)
            if (strcasecmp(signals[i].name, name) == 0)
                break;
        if (!signals[i].name)
            return fg_yaml_errf(d, sig, err, errlen, FG_EINPUT,
                                "unknown signal '%s' (TERM, INT, HUP, QUIT, KILL, USR1, USR2)",
                                sig->scalar);
        p->stop_signal = signals[i].sig;
    }
    const struct fg_yaml_node *g = fg_yaml_get(n, "grace");
    if (g)
        return get_duration(d, g, "'stop.grace'", &p->stop_grace_ms, err, errlen);
    return 0;
}

static int load_timeouts(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                         struct fg_profile *p, char *err, size_t errlen)
{
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'timeouts'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, fg_timeout_names, "'timeouts'", err, errlen)))
        return rc;
    p->timeouts = fg_calloc(n->n ? n->n : 1, sizeof(*p->timeouts));
    for (size_t i = 0; i < n->n; i++) {
        uint64_t ms;
        char what[64];
        snprintf(what, sizeof(what), "'timeouts.%s'", n->keys[i]->scalar);
        if ((rc = get_duration(d, n->items[i], what, &ms, err, errlen)))
            return rc;
        p->timeouts[p->ntimeouts].name = fg_strdup(n->keys[i]->scalar);
        p->timeouts[p->ntimeouts++].ms = ms;
    }
    return 0;
}

static struct fg_timeout *timeout_find(struct fg_profile *p, const char *name)
{
    for (size_t i = 0; i < p->ntimeouts; i++)
        if (strcmp(p->timeouts[i].name, name) == 0)
            return &p->timeouts[i];
    return NULL;
}

static void timeout_set(struct fg_profile *p, const char *name, uint64_t ms)
{
    struct fg_timeout *t = timeout_find(p, name);
    if (!t) {
        p->timeouts = fg_realloc(p->timeouts, (p->ntimeouts + 1) * sizeof(*p->timeouts));
        t = &p->timeouts[p->ntimeouts++];
        t->name = fg_strdup(name);
    }
    t->ms = ms;
}

/* retry: {first: 1s, backoff: 2, max_delay: 4s, give_up: 60s} - the
 * gateway's real retry schedule (RFC 5321 §4.5.4.1).  It becomes the
 * timeouts retry (the first delay), retry_max and give_up that `within`
 * reads; a profile with timeouts.retry alone gets retry_max = retry and
 * give_up = the first three delays of the schedule. */
static int load_retry(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                      struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"first", "backoff", "max_delay", "give_up", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'retry'", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "'retry'", err, errlen)))
        return rc;
    const struct fg_yaml_node *v;
    uint64_t ms;
    if ((v = fg_yaml_get(n, "first"))) {
        if ((rc = get_duration(d, v, "'retry.first'", &ms, err, errlen)))
            return rc;
        if (timeout_find(p, "retry"))
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "'retry.first' and 'timeouts.retry' say the same: give one");
        timeout_set(p, "retry", ms);
    }
    if ((v = fg_yaml_get(n, "backoff"))) {
        if ((rc = get_scalar(d, v, "'retry.backoff'", err, errlen)))
            return rc;
        char *end;
        double b = strtod(v->scalar, &end);
        if (*end || end == v->scalar || !(b >= 1.0 && b <= 100.0))
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "'retry.backoff' is a factor from 1 to 100, not '%s'", v->scalar);
        p->retry_backoff = b;
    }
    if ((v = fg_yaml_get(n, "max_delay"))) {
        if ((rc = get_duration(d, v, "'retry.max_delay'", &ms, err, errlen)))
            return rc;
        timeout_set(p, "retry_max", ms);
    }
    if ((v = fg_yaml_get(n, "give_up"))) {
        if ((rc = get_duration(d, v, "'retry.give_up'", &ms, err, errlen)))
            return rc;
        timeout_set(p, "give_up", ms);
    }
    return 0;
}

/* The schedule's derived limits (see load_retry). */
static void retry_defaults(struct fg_profile *p)
{
    const struct fg_timeout *r = timeout_find(p, "retry");
    if (!r)
        return;
    uint64_t first = r->ms;
    if (p->retry_backoff < 1.0)
        p->retry_backoff = 1.0;
    if (!timeout_find(p, "retry_max"))
        timeout_set(p, "retry_max",
                    p->retry_backoff > 1.0
                        ? (uint64_t)((double)first * p->retry_backoff * p->retry_backoff)
                        : first);
    if (!timeout_find(p, "give_up")) {
        uint64_t cap = timeout_find(p, "retry_max")->ms, sum = 0;
        double delay = (double)first;
        for (int k = 0; k < 3; k++, delay *= p->retry_backoff)
            sum += (uint64_t)delay < cap ? (uint64_t)delay : cap;
        timeout_set(p, "give_up", sum);
    }
}

static int load_profile(const struct fg_yaml_doc *d, struct fg_profile *p, char *err, size_t errlen)
{
    static const char *const keys[] = {"name",       "description", "start",    "submit",
                                       "ready",      "stop",        "timeouts", "version",
                                       "tls_policy", "parallel",    "retry",    NULL};
    const struct fg_yaml_node *root = d->root;
    int rc;
    if (!root)
        return fg_errf(err, errlen, FG_EINPUT, "%s:1:1: the profile is empty", d->path);
    if ((rc = fg_yaml_expect(d, root, FG_YAML_MAP, "a profile", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, root, keys, "a profile", err, errlen)))
        return rc;

    const struct fg_yaml_node *n = fg_yaml_get(root, "name");
    if (!n)
        return fg_yaml_errf(d, root, err, errlen, FG_EINPUT, "the profile needs a 'name'");
    if ((rc = get_scalar(d, n, "'name'", err, errlen)))
        return rc;
    for (const char *c = n->scalar; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-", *c))
            return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                                "'name' may hold only letters, digits, '.', '_' and '-'");
    if (!*n->scalar)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "'name' is empty");
    p->name = fg_strdup(n->scalar);

    if ((n = fg_yaml_get(root, "description"))) {
        if ((rc = get_scalar(d, n, "'description'", err, errlen)))
            return rc;
        p->description = fg_strdup(n->scalar);
    }
    /* A gateway (`start:`) or a client (`submit:`), never both: a client
     * is run once per message and has no port to be ready on or group to
     * stop at the end. */
    const struct fg_yaml_node *sub = fg_yaml_get(root, "submit");
    n = fg_yaml_get(root, "start");
    if (n && sub)
        return fg_yaml_errf(d, sub, err, errlen, FG_EINPUT,
                            "a profile has 'start' (a gateway) or 'submit' (a client), not both");
    if (!n && !sub)
        return fg_yaml_errf(d, root, err, errlen, FG_EINPUT,
                            "the profile needs 'start' (a gateway) or 'submit' (a client)");
    if (sub) {
        p->is_client = 1;
        static const char *const gw_only[] = {"ready", "stop"};
        for (size_t i = 0; i < 2; i++) {
            const struct fg_yaml_node *k = fg_yaml_get(root, gw_only[i]);
            if (k)
                return fg_yaml_errf(d, k, err, errlen, FG_EINPUT,
                                    "'%s' does not apply to a client profile ('submit')",
                                    gw_only[i]);
        }
        if ((rc = load_submit(d, sub, p, err, errlen)))
            return rc;
    } else if ((rc = load_start(d, n, p, err, errlen))) {
        return rc;
    }
    if ((n = fg_yaml_get(root, "ready")) && (rc = load_ready(d, n, p, err, errlen)))
        return rc;
    if ((n = fg_yaml_get(root, "stop")) && (rc = load_stop(d, n, p, err, errlen)))
        return rc;
    if ((n = fg_yaml_get(root, "timeouts")) && (rc = load_timeouts(d, n, p, err, errlen)))
        return rc;
    if ((n = fg_yaml_get(root, "retry")) && (rc = load_retry(d, n, p, err, errlen)))
        return rc;
    retry_defaults(p);
    if ((n = fg_yaml_get(root, "tls_policy"))) {
        if ((rc = get_scalar(d, n, "'tls_policy'", err, errlen)))
            return rc;
        int tp = fg_tls_policy_parse(n->scalar);
        if (tp < 0)
            return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                                "'tls_policy' is none, opportunistic or mandatory, not '%s'",
                                n->scalar);
        p->tls_policy = tp;
    }
    if ((n = fg_yaml_get(root, "parallel"))) {
        /* How many instances of the gateway may run at once (`faultgate
         * run -j`): 1 for a gateway that shares a fixed port, spool or
         * lock between instances. */
        if ((rc = get_scalar(d, n, "'parallel'", err, errlen)))
            return rc;
        uint64_t v;
        if (fg_uint_parse(n->scalar, 1, 1024, &v) < 0)
            return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                                "'parallel' takes a number from 1 to 1024, not '%s'", n->scalar);
        p->parallel = (unsigned)v;
    }
    if ((n = fg_yaml_get(root, "version"))) {
        if ((rc = get_strv(d, n, "'version'", &p->version_argv, &p->nversion, err, errlen)))
            return rc;
        size_t len = 1;
        for (size_t i = 0; i < p->nversion; i++)
            len += strlen(p->version_argv[i]) + 1;
        p->version_cmd = fg_calloc(1, len);
        for (size_t i = 0; i < p->nversion; i++) {
            if (i)
                strcat(p->version_cmd, " ");
            strcat(p->version_cmd, p->version_argv[i]);
        }
    }
    return 0;
}

int fg_profile_load(const char *path, struct fg_profile **out, char *err, size_t errlen)
{
    *out = NULL;
    struct fg_yaml_doc *d;
    int rc = fg_yaml_load(path, &d, err, errlen);
    if (rc)
        return rc;
    struct fg_profile *p = fg_calloc(1, sizeof(*p));
    p->path = fg_strdup(path);
    p->ready_timeout_ms = DEFAULT_READY_MS;
    p->stop_grace_ms = DEFAULT_GRACE_MS;
    p->stop_signal = SIGTERM;
    p->submit_stdin = 1;
    p->submit_timeout_ms = DEFAULT_SUBMIT_MS;
    rc = load_profile(d, p, err, errlen);
    fg_yaml_free(d);
    if (rc) {
        fg_profile_free(p);
        return rc;
    }
    *out = p;
    return 0;
}
