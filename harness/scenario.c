/* scenario.c - scenario files (scenarios/FORMAT.md): load, validate, find.
 *
 * A scenario is checked completely at load time: unknown keys, wrong
 * types, bad sizes and durations, fault specs (through the fault module's
 * parser) and expectations (through the rule catalog, expect.h) are all
 * reported as file:line:col with the column of the offending node, or of
 * the offending word inside a one-line fault or a `within` expression.  A
 * run never starts with a scenario it could not judge.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/expect_security.h"
#include "faultgate/fake_mta.h"
#include "faultgate/fault.h"
#include "faultgate/injector.h"
#include "faultgate/profile.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"
#include "faultgate/yamldoc.h"

#define DEFAULT_FROM "user1@company1.test"
#define DEFAULT_TO "user2@company2.test"
#define DEFAULT_SIZE 1024
#define MAX_SIZE ((uint64_t)1 << 30) /* a message body: 1 GiB */
#define MAX_COUNT 100000

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void fg_scenario_free(struct fg_scenario *s)
{
    if (!s)
        return;
    free(s->path);
    free(s->id);
    free(s->title);
    strv_free(s->kb, s->nkb);
    strv_free(s->rfc, s->nrfc);
    for (size_t i = 0; i < s->nmsgs; i++) {
        free(s->msgs[i].from);
        free(s->msgs[i].smuggle);
        free(s->msgs[i].smuggle_name);
        free(s->msgs[i].smuggle_from);
        free(s->msgs[i].starttls_inject);
        strv_free(s->msgs[i].to, s->msgs[i].nto);
    }
    free(s->msgs);
    for (size_t i = 0; i < s->nfaults; i++)
        fg_fault_clear(&s->faults[i]);
    free(s->faults);
    for (size_t i = 0; i < s->nexpects; i++) {
        free(s->expects[i].rule);
        free(s->expects[i].within);
        free(s->expects[i].fate);
        free(s->expects[i].after);
        free(s->expects[i].stage);
        free(s->expects[i].min);
        free(s->expects[i].leg);
    }
    free(s->expects);
    if (s->mta) {
        fg_mta_script_clear(s->mta);
        free(s->mta);
    }
    for (size_t i = 0; i < s->nx400_faults; i++)
        fg_x400_fault_clear(&s->x400_faults[i]);
    free(s->x400_faults);
    free(s);
}

/* Column where a scalar's text starts, if it is all on one line (so a
 * column inside the text maps onto the file); 0 otherwise. */
static int text_col(const struct fg_yaml_node *n)
{
    if (n->type != FG_YAML_SCALAR || n->end_line != n->line)
        return 0;
    return n->col + (n->quoted ? 1 : 0);
}

/* An error at column c (1-based) inside scalar n's text. */
static int err_in_text(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, int c,
                       const char *what, const char *msg, int rc, char *err, size_t errlen)
{
    int base = text_col(n);
    int col = base && c > 0 ? base + c - 1 : n->col;
    return fg_errf(err, errlen, rc, "%s:%d:%d: %s: %s", d->path, n->line, col, what, msg);
}

static int scalar(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                  char *err, size_t errlen)
{
    return fg_yaml_expect(d, n, FG_YAML_SCALAR, what, err, errlen);
}

/* A list of scalars, or one scalar standing for a list of one. */
static int strv(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                char ***out, size_t *nout, char *err, size_t errlen)
{
    int rc;
    if (n->type == FG_YAML_SCALAR) {
        *out = fg_calloc(2, sizeof(char *));
        (*out)[0] = fg_strdup(n->scalar);
        *nout = 1;
        return 0;
    }
    if ((rc = fg_yaml_expect(d, n, FG_YAML_SEQ, what, err, errlen)))
        return rc;
    for (size_t i = 0; i < n->n; i++)
        if ((rc = scalar(d, n->items[i], what, err, errlen)))
            return rc;
    *out = fg_calloc(n->n + 1, sizeof(char *));
    for (size_t i = 0; i < n->n; i++)
        (*out)[i] = fg_strdup(n->items[i]->scalar);
    *nout = n->n;
    return 0;
}

/* A switch: on/off, true/false or yes/no. */
static int onoff(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                 int *out, char *err, size_t errlen)
{
    int rc;
    if ((rc = scalar(d, n, what, err, errlen)))
        return rc;
    static const char *const yes[] = {"on", "true", "yes", NULL};
    static const char *const no[] = {"off", "false", "no", NULL};
    for (size_t i = 0; yes[i]; i++) {
        if (strcmp(n->scalar, yes[i]) == 0)
            return *out = 1, 0;
        if (strcmp(n->scalar, no[i]) == 0)
            return *out = 0, 0;
    }
    return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                        "%s must be on or off (true or false), not '%s'", what, n->scalar);
}

/* The injector's per-message options (FORMAT.md "Messages"). */
static int load_message_opts(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                             struct fg_msg_spec *m, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        unsigned flag;
        int invert; /* the key turns the flag off */
    } sw[] = {{"pipelining", FG_INJ_PIPELINING, 0},
              {"bdat", FG_INJ_BDAT, 0},
              {"eightbit", FG_INJ_8BIT, 0},
              {"dot_lines", FG_INJ_NO_DOTS, 1}};
    const struct fg_yaml_node *v;
    int rc, on = 0;
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
        if (!(v = fg_yaml_get(n, sw[i].key)))
            continue;
        char what[32];
        snprintf(what, sizeof what, "'%s'", sw[i].key);
        if ((rc = onoff(d, v, what, &on, err, errlen)))
            return rc;
        if (on != sw[i].invert)
            m->flags |= sw[i].flag;
    }
    m->concurrency = 1;
    if ((v = fg_yaml_get(n, "concurrency"))) {
        uint64_t c;
        if ((rc = scalar(d, v, "'concurrency'", err, errlen)))
            return rc;
        if (fg_uint_parse(v->scalar, 1, FG_INJ_MAX_CONCURRENCY, &c) != 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad concurrency '%s' (a whole number from 1 to %d)", v->scalar,
                                FG_INJ_MAX_CONCURRENCY);
        m->concurrency = (unsigned)c;
    }
    if ((v = fg_yaml_get(n, "rcpts"))) {
        /* RFC 5321 §4.5.3.1.8 makes servers take at least 100; more are
         * allowed so that a server's own limit can be reached. */
        uint64_t c;
        if ((rc = scalar(d, v, "'rcpts'", err, errlen)))
            return rc;
        if (fg_uint_parse(v->scalar, 1, FG_INJ_MAX_RCPTS, &c) != 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad rcpts '%s' (a whole number from 1 to %d)", v->scalar,
                                FG_INJ_MAX_RCPTS);
        if (c < m->nto)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "rcpts %s is fewer than the %zu addresses in 'to'", v->scalar,
                                m->nto);
        /* The rest are made from the last address given: local+K@domain
         * (RFC 5233 subaddresses, which a gateway routes like the base). */
        const char *last = m->to[m->nto - 1];
        const char *at = strrchr(last, '@');
        size_t llen = at ? (size_t)(at - last) : strlen(last);
        m->to = fg_realloc(m->to, (c + 1) * sizeof(char *));
        for (size_t k = m->nto; k < c; k++)
            m->to[k] = fg_asprintf("%.*s+%zu%s", (int)llen, last, k - m->nto + 1, at ? at : "");
        m->to[c] = NULL;
        m->nto = c;
    }
    return 0;
}

/* The hostile inbound modes (FORMAT.md "Messages": smuggle, desync). */
static int load_message_hostile(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                                struct fg_msg_spec *m, char *err, size_t errlen)
{
    const struct fg_yaml_node *v;
    int rc;
    if ((v = fg_yaml_get(n, "desync"))) {
        if ((rc = scalar(d, v, "'desync'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "before-greeting") == 0)
            m->flags |= FG_INJ_EARLY_GREETING;
        else if (strcmp(v->scalar, "before-ehlo-reply") == 0)
            m->flags |= FG_INJ_EARLY_EHLO;
        else
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad desync '%s' (before-greeting or before-ehlo-reply)",
                                v->scalar);
    }
    const struct fg_yaml_node *sf = fg_yaml_get(n, "smuggle_from");
    if ((v = fg_yaml_get(n, "smuggle"))) {
        if ((rc = scalar(d, v, "'smuggle'", err, errlen)))
            return rc;
        char msg[FG_ERRBUF_SIZE] = "";
        int col = 0;
        if (fg_smuggle_parse(v->scalar, &m->smuggle, &m->smuggle_len, &m->smuggle_name, msg,
                             sizeof(msg), &col) < 0)
            return err_in_text(d, v, col, "'smuggle'", msg, FG_EINPUT, err, errlen);
        if (m->flags & (FG_INJ_BDAT | FG_INJ_EARLY_GREETING | FG_INJ_EARLY_EHLO))
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "'smuggle' goes with DATA only (not with bdat or desync)");
        if (sf) {
            if ((rc = scalar(d, sf, "'smuggle_from'", err, errlen)))
                return rc;
            if (!*sf->scalar || strpbrk(sf->scalar, "\r\n<> "))
                return fg_yaml_errf(d, sf, err, errlen, FG_EINPUT,
                                    "bad smuggle_from '%s' (an address without <>)", sf->scalar);
            m->smuggle_from = fg_strdup(sf->scalar);
        } else {
            /* A sender of the carrier's own domain: what smuggling forges. */
            const char *at = strrchr(m->from, '@');
            m->smuggle_from = fg_asprintf("smuggled%s", at ? at : "@smuggled.test");
        }
    } else if (sf) {
        return fg_yaml_errf(d, sf, err, errlen, FG_EINPUT, "'smuggle_from' needs 'smuggle'");
    }
    if ((v = fg_yaml_get(n, "starttls_inject"))) {
        /* CVE-2011-0411: plaintext in the same write as STARTTLS. */
        if ((rc = scalar(d, v, "'starttls_inject'", err, errlen)))
            return rc;
        char msg[FG_ERRBUF_SIZE] = "";
        int col = 0;
        if (fg_starttls_inject_parse(v->scalar, &m->starttls_inject, &m->starttls_inject_len, msg,
                                     sizeof(msg), &col) < 0)
            return err_in_text(d, v, col, "'starttls_inject'", msg, FG_EINPUT, err, errlen);
        if (m->flags & (FG_INJ_EARLY_GREETING | FG_INJ_EARLY_EHLO))
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "'starttls_inject' does not go with desync");
    }
    return 0;
}

/* An envelope address goes into MAIL FROM:<...> and RCPT TO:<...> as it is:
 * a CR or LF would end the command and start another (command injection),
 * other control octets and angle brackets would break the path. */
static int address(const struct fg_yaml_doc *d, const struct fg_yaml_node *v, const char *a,
                   const char *what, char *err, size_t errlen)
{
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "%s: an address may not hold %s (octet 0x%02x at offset %zu)", what,
                                *p == '\r'                ? "a CR"
                                : *p == '\n'              ? "an LF"
                                : *p < 0x20 || *p == 0x7f ? "a control octet"
                                                          : "an angle bracket",
                                *p, (size_t)(p - (const unsigned char *)a));
    return 0;
}

static int load_message(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                        struct fg_msg_spec *m, char *err, size_t errlen)
{
    static const char *const keys[] = {
        "from",    "to",           "size",      "count",           "pipelining",
        "bdat",    "eightbit",     "dot_lines", "rcpts",           "concurrency",
        "smuggle", "smuggle_from", "desync",    "starttls_inject", NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "a message", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, n, keys, "a message", err, errlen)))
        return rc;
    const struct fg_yaml_node *v;
    if ((v = fg_yaml_get(n, "from"))) {
        if ((rc = scalar(d, v, "'from'", err, errlen)) ||
            (rc = address(d, v, v->scalar, "'from'", err, errlen)))
            return rc;
        m->from = fg_strdup(v->scalar);
    } else {
        m->from = fg_strdup(DEFAULT_FROM);
    }
    if ((v = fg_yaml_get(n, "to"))) {
        if ((rc = strv(d, v, "'to'", &m->to, &m->nto, err, errlen)))
            return rc;
        if (m->nto == 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "'to' needs a recipient");
        for (size_t i = 0; i < m->nto; i++)
            if (!*m->to[i])
                return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "'to' has an empty recipient");
            else if ((rc = address(d, v->type == FG_YAML_SEQ ? v->items[i] : v, m->to[i], "'to'",
                                   err, errlen)))
                return rc;
    } else {
        m->to = fg_calloc(2, sizeof(char *));
        m->to[0] = fg_strdup(DEFAULT_TO);
        m->nto = 1;
    }
    m->size = DEFAULT_SIZE;
    if ((v = fg_yaml_get(n, "size"))) {
        if ((rc = scalar(d, v, "'size'", err, errlen)))
            return rc;
        if (fg_size_parse(v->scalar, &m->size) != 0 || m->size > MAX_SIZE)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad size '%s' (e.g. 512, 4k, 1M; at most 1g)", v->scalar);
    }
    m->count = 1;
    if ((v = fg_yaml_get(n, "count"))) {
        uint64_t c;
        if ((rc = scalar(d, v, "'count'", err, errlen)))
            return rc;
        if (fg_uint_parse(v->scalar, 1, MAX_COUNT, &c) != 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad count '%s' (a whole number from 1 to %d)", v->scalar,
                                MAX_COUNT);
        m->count = (unsigned)c;
    }
    if ((rc = load_message_opts(d, n, m, err, errlen)))
        return rc;
    return load_message_hostile(d, n, m, err, errlen);
}

/* A fault part ("on", "connection", "action") parsed by the fault module;
 * its error column is mapped into the file. */
typedef int (*part_fn)(const char *s, struct fg_fault *f, char *err, size_t errlen, int *col);

static int fault_part(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *key,
                      part_fn fn, struct fg_fault *f, char *err, size_t errlen)
{
    int rc;
    char what[32];
    snprintf(what, sizeof(what), "'%s'", key);
    if ((rc = scalar(d, n, what, err, errlen)))
        return rc;
    char msg[FG_ERRBUF_SIZE] = "";
    int col = 0;
    rc = fn(n->scalar, f, msg, sizeof(msg), &col);
    if (rc)
        return err_in_text(d, n, col, what, msg, FG_EINPUT, err, errlen);
    return 0;
}

static int load_fault_map(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                          struct fg_fault *f, char *err, size_t errlen)
{
    static const char *const keys[] = {"on", "connection", "action", "dir", "p", "each", NULL};
    int rc;
    /* is_fault_key knows the same list */
    if ((rc = fg_yaml_check_keys(d, n, keys, "a fault", err, errlen)))
        return rc;
    const struct fg_yaml_node *on = fg_yaml_get(n, "on");
    const struct fg_yaml_node *act = fg_yaml_get(n, "action");
    if (!on)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "a fault needs 'on' (its trigger)");
    if (!act)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "a fault needs an 'action'");
    /* The parts fill a zeroed fault (fault.h); defaults come from canon. */
    memset(f, 0, sizeof(*f));
    if ((rc = fault_part(d, on, "on", fg_fault_parse_trigger, f, err, errlen)))
        return rc;
    const struct fg_yaml_node *v;
    if ((v = fg_yaml_get(n, "connection")) &&
        (rc = fault_part(d, v, "connection", fg_fault_parse_selector, f, err, errlen)))
        return rc;
    if ((rc = fault_part(d, act, "action", fg_fault_parse_action, f, err, errlen)))
        return rc;
    if ((v = fg_yaml_get(n, "dir"))) {
        if ((rc = scalar(d, v, "'dir'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "c2s") == 0)
            f->dir = FG_FDIR_C2S;
        else if (strcmp(v->scalar, "s2c") == 0)
            f->dir = FG_FDIR_S2C;
        else if (strcmp(v->scalar, "both") == 0)
            f->dir = FG_FDIR_BOTH;
        else
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad direction '%s' (c2s, s2c or both)", v->scalar);
    }
    if ((v = fg_yaml_get(n, "p"))) {
        if ((rc = scalar(d, v, "'p'", err, errlen)))
            return rc;
        char *end;
        errno = 0;
        double p = strtod(v->scalar, &end);
        if (!*v->scalar || *end || errno || !(p >= 0.0 && p <= 1.0) ||
            (!isdigit((unsigned char)v->scalar[0]) && v->scalar[0] != '.'))
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad probability '%s' (a number from 0 to 1)", v->scalar);
        f->prob = p;
        f->prob_set = 1;
    }
    if ((v = fg_yaml_get(n, "each"))) {
        if ((rc = scalar(d, v, "'each'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "true") == 0)
            f->each = 1;
        else if (strcmp(v->scalar, "false") == 0)
            f->each = 0;
        else
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "'each' must be true or false");
    }
    char msg[FG_ERRBUF_SIZE] = "";
    if ((rc = fg_fault_check(f, msg, sizeof(msg))))
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "%s", msg);
    fg_fault_canon(f);
    return 0;
}

static int is_fault_key(const char *k)
{
    static const char *const keys[] = {"on", "connection", "action", "dir", "p", "each", NULL};
    for (size_t i = 0; keys[i]; i++)
        if (strcmp(keys[i], k) == 0)
            return 1;
    return 0;
}

/* `- reply 354: stall` written without quotes is, to YAML, a mapping of
 * one key to one value; it is read back as the one-line form it was meant
 * to be, with error columns mapped onto the key or the value. */
static int load_fault_unquoted(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                               struct fg_fault *f, char *err, size_t errlen)
{
    const struct fg_yaml_node *k = n->keys[0], *v = n->items[0];
    char *line = fg_asprintf("%s: %s", k->scalar, v->scalar);
    char msg[FG_ERRBUF_SIZE] = "";
    int col = 0;
    int rc = fg_fault_parse(line, f, msg, sizeof(msg), &col);
    free(line);
    if (!rc)
        return 0;
    int klen = (int)strlen(k->scalar);
    if (col > klen + 2)
        return err_in_text(d, v, col - klen - 2, "fault", msg, FG_EINPUT, err, errlen);
    return err_in_text(d, k, col > klen ? klen : col, "fault", msg, FG_EINPUT, err, errlen);
}

static int load_fault(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, struct fg_fault *f,
                      char *err, size_t errlen)
{
    if (n->type == FG_YAML_MAP && n->n == 1 && !is_fault_key(n->keys[0]->scalar) &&
        n->items[0]->type == FG_YAML_SCALAR)
        return load_fault_unquoted(d, n, f, err, errlen);
    if (n->type == FG_YAML_MAP)
        return load_fault_map(d, n, f, err, errlen);
    if (n->type != FG_YAML_SCALAR)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                            "a fault is a one-line string (\"reply 354: stall\") or a mapping "
                            "{on: ..., action: ...}, not a list");
    char msg[FG_ERRBUF_SIZE] = "";
    int col = 0;
    int rc = fg_fault_parse(n->scalar, f, msg, sizeof(msg), &col);
    if (rc)
        return err_in_text(d, n, col, "fault", msg, FG_EINPUT, err, errlen);
    return 0;
}

static int rule_known(const char *name)
{
    for (size_t i = 0; fg_expect_rules[i]; i++)
        if (strcmp(fg_expect_rules[i], name) == 0)
            return 1;
    return 0;
}

static int load_expect(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                       struct fg_scenario *s, struct fg_expect_spec *e, char *err, size_t errlen)
{
    static const char *const keys[] = {"rule",  "within", "fate", "after",
                                       "stage", "min",    "leg",  NULL};
    int rc;
    if ((rc = fg_yaml_expect(d, n, FG_YAML_MAP, "an expectation", err, errlen)))
        return rc;
    e->line = n->line;
    e->col = n->col;
    const struct fg_yaml_node *rule = fg_yaml_get(n, "rule");
    if (!rule)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "an expectation needs a 'rule'");
    if ((rc = scalar(d, rule, "'rule'", err, errlen)))
        return rc;
    if (!rule_known(rule->scalar)) {
        char list[256] = "";
        size_t off = 0;
        for (size_t i = 0; fg_expect_rules[i] && off < sizeof(list); i++)
            off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
                                    fg_expect_rules[i]);
        return fg_yaml_errf(d, rule, err, errlen, FG_EINPUT, "unknown rule '%s' (known: %s)",
                            rule->scalar, list);
    }
    e->rule = fg_strdup(rule->scalar);
    e->rule_line = rule->line;
    e->rule_col = rule->col;
    /* Other keys are the rule's parameters: one it does not know is a load
     * error, reported against the rule's name. */
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->keys[i]->scalar;
        size_t j;
        for (j = 0; keys[j] && strcmp(keys[j], k) != 0; j++)
            ;
        if (!keys[j])
            return fg_yaml_errf(d, n->keys[i], err, errlen, FG_EINPUT,
                                "unknown parameter '%s' for rule %s", k, e->rule);
    }
    const struct fg_yaml_node *v;
    if ((v = fg_yaml_get(n, "within"))) {
        if ((rc = scalar(d, v, "'within'", err, errlen)))
            return rc;
        e->within = fg_strdup(v->scalar);
        e->within_line = v->line;
        e->within_col = v->col;
        e->within_text_col = text_col(v);
        /* Syntax and timeout names now; values once a profile is known. */
        char msg[FG_ERRBUF_SIZE] = "";
        int col = 0;
        uint64_t ms;
        if ((rc = fg_within_eval(e->within, NULL, &ms, msg, sizeof(msg), &col))) {
            /* the position goes in front: drop the evaluator's own */
            char *at = strstr(msg, " (column ");
            if (at && text_col(v))
                *at = '\0';
            return err_in_text(d, v, col, "within", msg, FG_EINPUT, err, errlen);
        }
    }
    if ((v = fg_yaml_get(n, "fate"))) {
        if ((rc = scalar(d, v, "'fate'", err, errlen)))
            return rc;
        e->fate = fg_strdup(v->scalar);
        e->fate_line = v->line;
        e->fate_col = v->col;
    }
    if ((v = fg_yaml_get(n, "after"))) {
        if ((rc = scalar(d, v, "'after'", err, errlen)))
            return rc;
        e->after = fg_strdup(v->scalar);
    }
    /* Plain scalars the catalog checks (expect.c). */
    struct {
        const char *key;
        char **dst;
    } more[] = {{"stage", &e->stage}, {"min", &e->min}, {"leg", &e->leg}};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        if (!(v = fg_yaml_get(n, more[i].key)))
            continue;
        char what[16];
        snprintf(what, sizeof what, "'%s'", more[i].key);
        if ((rc = scalar(d, v, what, err, errlen)))
            return rc;
        *more[i].dst = fg_strdup(v->scalar);
    }
    char msg[FG_ERRBUF_SIZE] = "";
    if ((rc = fg_expect_validate(s, e, msg, sizeof(msg)))) {
        /* The catalog's message names the file and position already. */
        return fg_errf(err, errlen, rc < 0 ? rc : FG_EINPUT, "%s", msg);
    }
    return 0;
}

static int valid_id(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

static int load_scenario(const struct fg_yaml_doc *d, struct fg_scenario *s, char *err,
                         size_t errlen)
{
    static const char *const keys[] = {"id",          "title",     "kb",     "rfc",      "leg",
                                       "messages",    "faults",    "expect", "deadline", "mta",
                                       "x400_faults", "x400_peer", "tls",    "path",     NULL};
    const struct fg_yaml_node *root = d->root, *v;
    int rc;
    if (!root)
        return fg_errf(err, errlen, FG_EINPUT, "%s:1:1: the scenario is empty", d->path);
    if ((rc = fg_yaml_expect(d, root, FG_YAML_MAP, "a scenario", err, errlen)) ||
        (rc = fg_yaml_check_keys(d, root, keys, "a scenario", err, errlen)))
        return rc;

    if (!(v = fg_yaml_get(root, "id")))
        return fg_yaml_errf(d, root, err, errlen, FG_EINPUT, "the scenario needs an 'id'");
    if ((rc = scalar(d, v, "'id'", err, errlen)))
        return rc;
    if (!valid_id(v->scalar))
        return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                            "bad id '%s' (lower-case letters, digits and '-' only)", v->scalar);
    s->id = fg_strdup(v->scalar);

    if ((v = fg_yaml_get(root, "title"))) {
        if ((rc = scalar(d, v, "'title'", err, errlen)))
            return rc;
        s->title = fg_strdup(v->scalar);
    }
    if ((v = fg_yaml_get(root, "kb")) && (rc = strv(d, v, "'kb'", &s->kb, &s->nkb, err, errlen)))
        return rc;
    if ((v = fg_yaml_get(root, "rfc")) &&
        (rc = strv(d, v, "'rfc'", &s->rfc, &s->nrfc, err, errlen)))
        return rc;
    s->leg = FG_LEG_OUTBOUND;
    if ((v = fg_yaml_get(root, "leg"))) {
        if ((rc = scalar(d, v, "'leg'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "outbound") == 0)
            s->leg = FG_LEG_OUTBOUND;
        else if (strcmp(v->scalar, "inbound") == 0)
            s->leg = FG_LEG_INBOUND;
        else if (strcmp(v->scalar, "x400") == 0)
            s->leg = FG_LEG_X400;
        else
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad leg '%s' (outbound, inbound or x400)", v->scalar);
    }
    if ((v = fg_yaml_get(root, "path"))) {
        if ((rc = scalar(d, v, "'path'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "bdat") == 0)
            s->mail_path = FG_PATH_BDAT;
        else if (strcmp(v->scalar, "any") != 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "bad path '%s' (any or bdat)",
                                v->scalar);
    }
    if ((v = fg_yaml_get(root, "tls"))) {
        /* How the proxy treats STARTTLS: pass the TLS records through, or
         * terminate TLS on both legs so that triggers see the plaintext. */
        if ((rc = scalar(d, v, "'tls'", err, errlen)))
            return rc;
        if (strcmp(v->scalar, "terminate") == 0)
            s->tls_terminate = 1;
        else if (strcmp(v->scalar, "passthrough") != 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "bad tls '%s' (passthrough or terminate)", v->scalar);
    }
    if ((v = fg_yaml_get(root, "deadline"))) {
        if ((rc = scalar(d, v, "'deadline'", err, errlen)))
            return rc;
        if (fg_duration_parse(v->scalar, &s->deadline_ms) != 0 || s->deadline_ms == 0)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "'deadline': bad duration '%s' (use ms, s, m or h, e.g. 90s)",
                                v->scalar);
    }
    if ((v = fg_yaml_get(root, "messages"))) {
        if ((rc = fg_yaml_expect(d, v, FG_YAML_SEQ, "'messages'", err, errlen)))
            return rc;
        s->msgs = fg_calloc(v->n ? v->n : 1, sizeof(*s->msgs));
        for (size_t i = 0; i < v->n; i++) {
            rc = load_message(d, v->items[i], &s->msgs[s->nmsgs++], err, errlen);
            if (rc)
                return rc;
        }
    }
    if ((v = fg_yaml_get(root, "faults"))) {
        if ((rc = fg_yaml_expect(d, v, FG_YAML_SEQ, "'faults'", err, errlen)))
            return rc;
        if (v->n > FG_FAULT_MAX)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "more than %d faults", FG_FAULT_MAX);
        s->faults = fg_calloc(v->n ? v->n : 1, sizeof(*s->faults));
        for (size_t i = 0; i < v->n; i++) {
            rc = load_fault(d, v->items[i], &s->faults[i], err, errlen);
            if (rc) {
                fg_fault_clear(&s->faults[i]);
                return rc;
            }
            s->nfaults++;
        }
    }
    if ((v = fg_yaml_get(root, "mta"))) {
        /* The fake MTA's behaviour for this scenario (FORMAT.md "The fake
         * MTA"); checked here so that a bad script stops the load. */
        s->mta = fg_calloc(1, sizeof(*s->mta));
        if ((rc = fg_mta_script_parse_node(d, v, s->mta, err, errlen)))
            return rc < 0 ? rc : FG_EINPUT;
    }
    /* The X.400 proxy's faults and the fake X.400 MTA's reaction
     * (FORMAT.md "X.400 faults"). */
    if ((v = fg_yaml_get(root, "x400_faults")) &&
        (rc = fg_x400_faults_load(d, v, &s->x400_faults, &s->nx400_faults, err, errlen)))
        return rc;
    if ((v = fg_yaml_get(root, "x400_peer")) &&
        (rc = fg_x400_peer_opts_load(d, v, &s->x400_on_invalid, err, errlen)))
        return rc;
    if ((v = fg_yaml_get(root, "expect"))) {
        if ((rc = fg_yaml_expect(d, v, FG_YAML_SEQ, "'expect'", err, errlen)))
            return rc;
        s->expects = fg_calloc(v->n ? v->n : 1, sizeof(*s->expects));
        for (size_t i = 0; i < v->n; i++) {
            /* counted first so that a half-filled spec is freed */
            struct fg_expect_spec *e = &s->expects[s->nexpects++];
            if ((rc = load_expect(d, v->items[i], s, e, err, errlen)))
                return rc;
        }
    }
    return 0;
}

int fg_scenario_load(const char *path, struct fg_scenario **out, char *err, size_t errlen)
{
    *out = NULL;
    struct fg_yaml_doc *d;
    int rc = fg_yaml_load(path, &d, err, errlen);
    if (rc)
        return rc;
    struct fg_scenario *s = fg_calloc(1, sizeof(*s));
    s->path = fg_strdup(path);
    rc = load_scenario(d, s, err, errlen);
    fg_yaml_free(d);
    if (rc) {
        fg_scenario_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* --- finding scenario files ------------------------------------------- */

struct pathlist {
    char **v;
    size_t n, cap;
};

static int has_yaml_ext(const char *name)
{
    size_t l = strlen(name);
    return (l > 5 && strcmp(name + l - 5, ".yaml") == 0) ||
           (l > 4 && strcmp(name + l - 4, ".yml") == 0);
}

static int walk(const char *dir, struct pathlist *pl, char *err, size_t errlen, int depth)
{
    if (depth > 32)
        return fg_errf(err, errlen, FG_EINPUT, "%s: directories nested too deep", dir);
    DIR *dp = opendir(dir);
    if (!dp) {
        int e = -errno;
        return fg_errf(err, errlen, FG_EINPUT, "%s: %s", dir, strerror(-e));
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(dp))) {
        const char *name = de->d_name;
        if (name[0] == '.')
            continue; /* ., .., and hidden files (editor backups) */
        char *full = fg_asprintf("%s/%s", dir, name);
        struct stat st;
        if (stat(full, &st) != 0) {
            free(full); /* a dangling link: nothing to load */
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            /* Gateway profiles live under gateways/: not scenarios. */
            if (strcmp(name, "gateways") != 0)
                rc = walk(full, pl, err, errlen, depth + 1);
            free(full);
        } else if (S_ISREG(st.st_mode) && has_yaml_ext(name)) {
            *FG_ARRAY_PUSH(pl->v, pl->n, pl->cap) = full;
        } else {
            free(full);
        }
    }
    closedir(dp);
    return rc;
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void fg_scenario_paths_free(char **paths, size_t n)
{
    strv_free(paths, n);
}

int fg_scenario_find(const char *const *paths, size_t npaths, char ***out, size_t *nout, char *err,
                     size_t errlen)
{
    struct pathlist pl = {0};
    *out = NULL;
    *nout = 0;
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            int e = errno;
            fg_scenario_paths_free(pl.v, pl.n);
            return fg_errf(err, errlen, FG_EINPUT, "%s: %s", paths[i], strerror(e));
        }
        if (S_ISDIR(st.st_mode)) {
            /* strip trailing slashes so that paths read well */
            size_t l = strlen(paths[i]);
            while (l > 1 && paths[i][l - 1] == '/')
                l--;
            char *dir = fg_strndup(paths[i], l);
            int rc = walk(dir, &pl, err, errlen, 0);
            free(dir);
            if (rc) {
                fg_scenario_paths_free(pl.v, pl.n);
                return rc;
            }
        } else {
            /* A file named explicitly is taken whatever its name. */
            *FG_ARRAY_PUSH(pl.v, pl.n, pl.cap) = fg_strdup(paths[i]);
        }
    }
    if (pl.n)
        qsort(pl.v, pl.n, sizeof(*pl.v), cmp_path);
    /* the same file named twice (a file and its directory) runs once */
    size_t w = 0;
    for (size_t i = 0; i < pl.n; i++) {
        if (w > 0 && strcmp(pl.v[w - 1], pl.v[i]) == 0) {
            free(pl.v[i]);
            continue;
        }
        pl.v[w++] = pl.v[i];
    }
    pl.n = w;
    *out = pl.v;
    *nout = pl.n;
    return 0;
}
