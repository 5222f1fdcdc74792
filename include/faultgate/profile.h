/* faultgate/profile.h - gateway profiles (scenarios/gateways/):
 * how to start the gateway under test, when it is ready, how to stop it,
 * and the timeouts it is configured with.
 */
#ifndef FAULTGATE_PROFILE_H
#define FAULTGATE_PROFILE_H

#include <stddef.h>
#include <stdint.h>

struct fg_timeout {
    char *name; /* "greeting", "data_done", ... */
    uint64_t ms;
};

struct fg_profile_file {
    char *tmpl; /* the template's path (placeholders allowed) */
    char *path; /* where the filled copy goes (placeholders allowed) */
};

struct fg_profile {
    char *path;
    char *name;
    char *description;
    char *version_cmd; /* optional: argv string whose output names the version
                        * (the words of version_argv joined by spaces) */
    /* start: argv with placeholders {gateway_port} {upstream} {upstream_host}
     * {upstream_port} {workdir} {x400_upstream} {bindir} */
    char **argv;
    size_t nargv;
    char **env; /* "NAME=value", placeholders allowed */
    size_t nenv;
    /* start.pidfile (placeholders allowed), NULL if absent: the gateway
     * daemonizes, the start command exits 0 and the file names the
     * process that is the gateway from then on. */
    char *pidfile;
    /* start.config: files written from templates before the start, each
     * with its placeholders filled ({gateway_port}, {upstream}, ...). */
    struct fg_profile_file *files;
    size_t nfiles;
    uint64_t ready_timeout_ms; /* ready: {tcp: gateway_port, timeout: 10s} */
    int ready_banner;          /* ready: {banner: gateway_port}: a 220 greeting, not a connect */
    uint64_t stop_grace_ms;    /* SIGTERM, then SIGKILL after this */
    struct fg_timeout *timeouts;
    size_t ntimeouts;
    double retry_backoff; /* retry.backoff: each delay this many times the last (1: fixed) */
    int stop_signal;      /* stop: {signal: TERM}; 0 means SIGTERM */
    /* version: [argv...] (placeholders allowed), NULL if absent */
    char **version_argv;
    size_t nversion;
    /* A client profile has `submit:` instead of `start:` (then argv is
     * empty and ready/stop do not apply): the client's command, run once
     * per message (faultgate/submit.h), with its placeholders {from} {to}
     * {token} {message_file} besides the gateway's. */
    int is_client;
    char **submit_argv;
    size_t nsubmit;
    char **submit_env; /* "NAME=value", placeholders allowed */
    size_t nsubmit_env;
    int submit_stdin;           /* submit.stdin: message (1, default) or none (0) */
    uint64_t submit_timeout_ms; /* submit.timeout, default 30s: then SIGKILL */
    int tls_policy;             /* tls_policy: enum fg_tls_policy (default unknown) */
    unsigned parallel;          /* parallel: N instances at most at once; 0: no limit */
};

/* The outbound TLS policy a profile declares (`tls_policy:`), what the
 * rule tls-policy-honoured judges a stripped, refused or killed STARTTLS
 * against: none (never STARTTLS), opportunistic (TLS when offered, else
 * plaintext: RFC 3207 §4), mandatory (TLS or no delivery: an encrypt
 * setting, MTA-STS enforce (RFC 8461 §5), DANE (RFC 7672 §2.2)). */
enum fg_tls_policy {
    FG_TLS_POLICY_UNKNOWN = 0,
    FG_TLS_POLICY_NONE,
    FG_TLS_POLICY_OPPORTUNISTIC,
    FG_TLS_POLICY_MANDATORY,
};
/* "none", "opportunistic", "mandatory"; NULL for unknown. */
const char *fg_tls_policy_name(int policy);
/* The policy named s, or -1. */
int fg_tls_policy_parse(const char *s);

/* The timeout names a profile may define, NULL-terminated (the rule
 * catalog in scenarios/FORMAT.md). */
extern const char *const fg_timeout_names[];

int fg_profile_load(const char *path, struct fg_profile **out, char *err, size_t errlen);
void fg_profile_free(struct fg_profile *p);

/* fg_profile_timeout - the named timeout in ms, or -1 if the profile has none. */
int64_t fg_profile_timeout(const struct fg_profile *p, const char *name);

/* fg_within_eval - evaluate "timeouts.data_done + 5s", "60s",
 * "2 * timeouts.data_done" against the profile.  Returns 0 and sets *ms,
 * or FG_EINPUT (unknown timeout) / FG_ESYNTAX with a message in err
 * (and the 1-based column of the fault in *col when col is not NULL). */
int fg_within_eval(const char *expr, const struct fg_profile *p, uint64_t *ms, char *err,
                   size_t errlen, int *col);
/* The same against a bare list of timeouts (e.g. a run's metadata).
 * With t == NULL (p == NULL above) only the syntax and the timeout names
 * (against fg_timeout_names) are checked and every timeout counts as 0:
 * what a scenario loader can check before any profile is chosen. */
int fg_within_eval_timeouts(const char *expr, const struct fg_timeout *t, size_t nt, uint64_t *ms,
                            char *err, size_t errlen, int *col);

#endif
