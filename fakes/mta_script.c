/* mta_script.c - the fake MTA's script: which capabilities it shows and
 * how it behaves per stage, read from YAML (an `mta:` section of a
 * scenario, or `faultgate fake-mta --script FILE`).  The format is in
 * scenarios/FORMAT.md, "The fake MTA".
 *
 * Postfix's smtp-sink options map onto it one to one: -q (drop), -Q
 * (shutdown: 421 and close), -r/-f (soft_reject/hard_reject), -b/-B
 * (soft_reply/hard_reply), -w/-W (delay, odds), -H (read_delay), -A
 * (abort_after), -T (window), -e (esmtp: false), -P (banner), -p -8 -a -N
 * -E (hide).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

void fg_mta_script_init(struct fg_mta_script *s)
{
    memset(s, 0, sizeof(*s));
    s->caps = FG_MTA_CAPS_ALL;
    s->caps_tls = FG_MTA_CAPS_ALL;
}

void fg_mta_script_clear(struct fg_mta_script *s)
{
    for (size_t i = 0; i < s->nrules; i++)
        free(s->rules[i].text);
    free(s->rules);
    free(s->banner);
    free(s->hostname);
    free(s->starttls_inject);
    memset(s, 0, sizeof(*s));
}

static int scalar(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                  char *err, size_t errlen)
{
    return fg_yaml_expect(d, n, FG_YAML_SCALAR, what, err, errlen);
}

static int get_bool(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                    int *out, char *err, size_t errlen)
{
    int rc = scalar(d, n, what, err, errlen);
    if (rc < 0)
        return rc;
    if (strcmp(n->scalar, "true") == 0 || strcmp(n->scalar, "yes") == 0)
        *out = 1;
    else if (strcmp(n->scalar, "false") == 0 || strcmp(n->scalar, "no") == 0)
        *out = 0;
    else
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "%s must be true or false", what);
    return 0;
}

static int get_dur(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                   uint64_t *ms, char *err, size_t errlen)
{
    int rc = scalar(d, n, what, err, errlen);
    if (rc < 0)
        return rc;
    if (fg_duration_parse(n->scalar, ms) < 0)
        return fg_yaml_errf(d, n, err, errlen, FG_ESYNTAX,
                            "%s: \"%s\" is not a duration (250ms, 5s, 2m)", what, n->scalar);
    return 0;
}

static int get_uint(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                    uint64_t min, uint64_t max, uint64_t *v, char *err, size_t errlen)
{
    int rc = scalar(d, n, what, err, errlen);
    if (rc < 0)
        return rc;
    if (fg_uint_parse(n->scalar, min, max, v) < 0)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                            "%s must be a whole number from %llu to %llu", what,
                            (unsigned long long)min, (unsigned long long)max);
    return 0;
}

/* A list of names, or one name. */
static int each_name(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                     const struct fg_yaml_node ***items, size_t *count, char *err, size_t errlen)
{
    static const struct fg_yaml_node *one[1];
    if (n->type == FG_YAML_SCALAR) {
        one[0] = n;
        *items = one;
        *count = 1;
        return 0;
    }
    int rc = fg_yaml_expect(d, n, FG_YAML_SEQ, what, err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n->n; i++)
        if ((rc = scalar(d, n->items[i], what, err, errlen)) < 0)
            return rc;
    *items = (const struct fg_yaml_node **)n->items;
    *count = n->n;
    return 0;
}

static int caps_of(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                   unsigned *caps, char *err, size_t errlen)
{
    const struct fg_yaml_node **it;
    size_t cnt;
    int rc = each_name(d, n, what, &it, &cnt, err, errlen);
    if (rc < 0)
        return rc;
    *caps = 0;
    for (size_t i = 0; i < cnt; i++) {
        unsigned b = fg_mta_cap_lookup(it[i]->scalar);
        if (!b)
            return fg_yaml_errf(d, it[i], err, errlen, FG_EINPUT,
                                "unknown capability \"%s\" (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, "
                                "CHUNKING, DSN, ENHANCEDSTATUSCODES, STARTTLS, AUTH)",
                                it[i]->scalar);
        *caps |= b;
    }
    return 0;
}

/* extensions: {chunking: off, pipelining: on}: each named capability
 * pinned on or off, before and after STARTTLS, over what capabilities and
 * hide say (a scenario fixes the path the gateway can take, e.g. DATA or
 * BDAT, RFC 3030). */
static int extensions_of(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                         struct fg_mta_script *s, char *err, size_t errlen)
{
    int rc = fg_yaml_expect(d, n, FG_YAML_MAP, "'extensions'", err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n->n; i++) {
        const struct fg_yaml_node *k = n->keys[i], *v = n->items[i];
        unsigned b = fg_mta_cap_lookup(k->scalar);
        if (!b)
            return fg_yaml_errf(d, k, err, errlen, FG_EINPUT,
                                "unknown extension \"%s\" (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, "
                                "CHUNKING, DSN, ENHANCEDSTATUSCODES, STARTTLS, AUTH)",
                                k->scalar);
        if ((rc = scalar(d, v, "an extension's setting", err, errlen)) < 0)
            return rc;
        const char *x = v->scalar;
        if (strcasecmp(x, "on") == 0 || strcmp(x, "true") == 0 || strcmp(x, "yes") == 0) {
            s->caps |= b;
            s->caps_tls |= b;
        } else if (strcasecmp(x, "off") == 0 || strcmp(x, "false") == 0 || strcmp(x, "no") == 0) {
            s->caps &= ~b;
            s->caps_tls &= ~b;
        } else {
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "extension %s must be on or off, not \"%s\"", k->scalar, x);
        }
    }
    return 0;
}

static struct fg_mta_rule *add_rule(struct fg_mta_script *s, size_t *cap, int stage,
                                    const struct fg_yaml_node *at)
{
    struct fg_mta_rule *r = FG_ARRAY_PUSH(s->rules, s->nrules, *cap);
    memset(r, 0, sizeof(*r));
    r->stage = (enum fg_mta_stage)stage;
    r->p = 1.0;
    r->line = at ? at->line : 0;
    r->col = at ? at->col : 0;
    return r;
}

/* parse_reply - "451 4.3.0 text|second line" or "none". */
static int parse_reply(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                       struct fg_mta_rule *r, char *err, size_t errlen)
{
    int rc = scalar(d, n, "'reply'", err, errlen);
    if (rc < 0)
        return rc;
    const char *s = n->scalar;
    if (strcasecmp(s, "none") == 0) {
        r->code = -1;
        return 0;
    }
    if (strlen(s) < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
        s[2] > '9' || (s[3] && s[3] != ' '))
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                            "reply must be \"CODE text\" with a code from 200 to 599, or none");
    r->code = atoi(s);
    const char *t = s[3] ? s + 4 : "";
    free(r->text);
    r->text = fg_strdup(t);
    for (char *p = r->text; *p; p++) {
        if (*p == '|') /* as in the fault syntax: '|' separates reply lines */
            *p = '\n';
        else if (*p == '\r' || *p == '\n')
            return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                                "reply text must not hold CR or LF (use | between lines)");
    }
    return 0;
}

static int parse_connection(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                            struct fg_mta_rule *r, char *err, size_t errlen)
{
    int rc = scalar(d, n, "'connection'", err, errlen);
    if (rc < 0)
        return rc;
    const char *s = n->scalar;
    uint64_t v;
    if (strcmp(s, "every") == 0)
        return 0;
    if (strcmp(s, "first") == 0) {
        r->conn = 1;
        return 0;
    }
    if (strncmp(s, "nth ", 4) == 0 && fg_uint_parse(s + 4, 1, 1000000, &v) == 0) {
        r->conn = (unsigned)v;
        return 0;
    }
    if (strncmp(s, "from ", 5) == 0 && fg_uint_parse(s + 5, 1, 1000000, &v) == 0) {
        r->from = (unsigned)v;
        return 0;
    }
    if (fg_uint_parse(s, 1, 1000000, &v) == 0) {
        r->conn = (unsigned)v;
        return 0;
    }
    return fg_yaml_errf(d, n, err, errlen, FG_EINPUT,
                        "connection must be every, first, nth N, from N or N");
}

static int parse_rule(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                      struct fg_mta_script *s, size_t *cap, char *err, size_t errlen)
{
    static const char *const keys[] = {"stage",      "nth",         "connection", "p",
                                       "reply",      "action",      "delay",      "odds",
                                       "read_delay", "abort_after", NULL};
    int rc = fg_yaml_expect(d, n, FG_YAML_MAP, "a stage rule", err, errlen);
    if (rc < 0 || (rc = fg_yaml_check_keys(d, n, keys, "a stage rule", err, errlen)) < 0)
        return rc;
    const struct fg_yaml_node *v = fg_yaml_get(n, "stage");
    if (!v)
        return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "a stage rule needs `stage`");
    if ((rc = scalar(d, v, "'stage'", err, errlen)) < 0)
        return rc;
    int st = fg_mta_stage_lookup(v->scalar);
    if (st < 0)
        return fg_yaml_errf(
            d, v, err, errlen, FG_EINPUT,
            "unknown stage \"%s\" (greeting, ehlo, helo, opening, mail, rcpt, data, "
            "end-of-data, bdat, rset, noop, quit, starttls, auth, vrfy)",
            v->scalar);
    struct fg_mta_rule *r = add_rule(s, cap, st, n);
    uint64_t u;
    if ((v = fg_yaml_get(n, "nth"))) {
        if ((rc = get_uint(d, v, "'nth'", 1, 1000000, &u, err, errlen)) < 0)
            return rc;
        r->nth = (unsigned)u;
    }
    if ((v = fg_yaml_get(n, "connection")) && (rc = parse_connection(d, v, r, err, errlen)) < 0)
        return rc;
    if ((v = fg_yaml_get(n, "p"))) {
        char *end;
        if ((rc = scalar(d, v, "'p'", err, errlen)) < 0)
            return rc;
        r->p = strtod(v->scalar, &end);
        if (*end || end == v->scalar || r->p < 0 || r->p > 1)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "p must be a number from 0 to 1");
    }
    if ((v = fg_yaml_get(n, "reply")) && (rc = parse_reply(d, v, r, err, errlen)) < 0)
        return rc;
    if ((v = fg_yaml_get(n, "action"))) {
        if ((rc = scalar(d, v, "'action'", err, errlen)) < 0)
            return rc;
        if (strcmp(v->scalar, "reply") == 0)
            r->end = FG_MTA_END_NONE;
        else if (strcmp(v->scalar, "close") == 0)
            r->end = FG_MTA_END_CLOSE;
        else if (strcmp(v->scalar, "reset") == 0)
            r->end = FG_MTA_END_RESET;
        else if (strcmp(v->scalar, "hang") == 0)
            r->end = FG_MTA_END_HANG;
        else
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                                "action must be reply, close, reset or hang");
        /* close/reset without a reply given: no reply (smtp-sink -q). */
        if ((r->end == FG_MTA_END_CLOSE || r->end == FG_MTA_END_RESET) && !fg_yaml_get(n, "reply"))
            r->code = -1;
    }
    if ((v = fg_yaml_get(n, "delay")) &&
        (rc = get_dur(d, v, "'delay'", &r->delay_ms, err, errlen)) < 0)
        return rc;
    if ((v = fg_yaml_get(n, "odds"))) {
        if ((rc = get_uint(d, v, "'odds'", 0, 99, &u, err, errlen)) < 0)
            return rc;
        if (!r->delay_ms)
            return fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "odds needs a delay");
        r->odds = (unsigned)u;
    }
    int need_data = 0;
    if ((v = fg_yaml_get(n, "read_delay"))) {
        if ((rc = get_dur(d, v, "'read_delay'", &r->read_delay_ms, err, errlen)) < 0)
            return rc;
        need_data = 1;
    }
    if ((v = fg_yaml_get(n, "abort_after"))) {
        if ((rc = get_dur(d, v, "'abort_after'", &r->abort_ms, err, errlen)) < 0)
            return rc;
        need_data = 1;
    }
    if (need_data && st != FG_MTA_ST_DATA)
        return fg_yaml_errf(d, v, err, errlen, FG_EINPUT,
                            "read_delay and abort_after apply to the data stage only");
    return 0;
}

/* The smtp-sink shorthands: a list of stages, each getting one rule. */
static int shorthand(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, const char *what,
                     struct fg_mta_script *s, size_t *cap, int code, const char *text,
                     enum fg_mta_end end, char *err, size_t errlen)
{
    const struct fg_yaml_node **it;
    size_t cnt;
    int rc = each_name(d, n, what, &it, &cnt, err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < cnt; i++) {
        int st = fg_mta_stage_lookup(it[i]->scalar);
        if (st < 0)
            return fg_yaml_errf(d, it[i], err, errlen, FG_EINPUT, "unknown stage \"%s\"",
                                it[i]->scalar);
        struct fg_mta_rule *r = add_rule(s, cap, st, it[i]);
        r->code = code;
        r->text = text ? fg_strdup(text) : NULL;
        r->end = end;
    }
    return 0;
}

/* get_inject - `starttls_inject`: octets with the escapes of the
 * injector's `smuggle` and `starttls_inject` (fg_octets_unescape in faultgate/util.h:
 * \r \n \t \0 \xHH \\), at most 4096.  An octet 0x14 to 0x17 may not
 * appear: the judge finds the first TLS record after the 220 by its
 * content type (RFC 5246 §6.2.1), and plaintext must not look like one. */
static int get_inject(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, char **out,
                      size_t *len, char *err, size_t errlen)
{
    int rc = scalar(d, n, "'starttls_inject'", err, errlen);
    if (rc < 0)
        return rc;
    char msg[FG_ERRBUF_SIZE] = "", *o = NULL;
    size_t k = 0;
    int col = 0;
    const char *why = NULL;
    if (fg_octets_unescape(n->scalar, &o, &k, msg, sizeof msg, &col) < 0)
        why = msg;
    else if (k == 0)
        why = "an empty text (reply lines to inject, e.g. '250-PIPELINING\\r\\n250 OK\\r\\n')";
    else if (k > 4096)
        why = "longer than 4096 octets";
    for (size_t i = 0; !why && i < k; i++)
        if (o[i] >= 0x14 && o[i] <= 0x17)
            why = "the octets 0x14 to 0x17 may not appear (a TLS record's first octet)";
    if (why) {
        /* The column of a bad escape inside a one-line scalar (after its
         * opening quote), else the scalar's own. */
        int base = n->end_line == n->line ? n->col + (n->quoted ? 1 : 0) : 0;
        rc = fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: 'starttls_inject': %s", d->path, n->line,
                     base && col > 0 ? base + col - 1 : n->col, why);
        free(o);
        return rc;
    }
    *out = o;
    *len = k;
    return 0;
}

int fg_mta_script_parse_node(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                             struct fg_mta_script *s, char *err, size_t errlen)
{
    static const char *const keys[] = {
        "hide",
        "hide_after_tls",
        "capabilities",
        "capabilities_after_tls",
        "esmtp",
        "banner",
        "hostname",
        "max_size",
        "max_rcpt",
        "require_tls",
        "require_auth",
        "window",
        "seed",
        "stages",
        "soft_reject",
        "hard_reject",
        "soft_reply",
        "hard_reply",
        "drop",
        "shutdown",
        "starttls_inject",
        "extensions",
        NULL,
    };
    fg_mta_script_init(s);
    int rc = fg_yaml_expect(d, n, FG_YAML_MAP, "the fake MTA script", err, errlen);
    if (rc < 0 || (rc = fg_yaml_check_keys(d, n, keys, "the fake MTA script", err, errlen)) < 0)
        goto fail;
    const struct fg_yaml_node *v;
    unsigned caps;
    size_t cap = 0;
    if ((v = fg_yaml_get(n, "capabilities"))) {
        if ((rc = caps_of(d, v, "'capabilities'", &caps, err, errlen)) < 0)
            goto fail;
        s->caps = s->caps_tls = caps;
    }
    if ((v = fg_yaml_get(n, "hide"))) {
        if ((rc = caps_of(d, v, "'hide'", &caps, err, errlen)) < 0)
            goto fail;
        s->caps &= ~caps;
        s->caps_tls &= ~caps;
    }
    if ((v = fg_yaml_get(n, "capabilities_after_tls"))) {
        if ((rc = caps_of(d, v, "'capabilities_after_tls'", &caps, err, errlen)) < 0)
            goto fail;
        s->caps_tls = caps;
    }
    if ((v = fg_yaml_get(n, "hide_after_tls"))) {
        if ((rc = caps_of(d, v, "'hide_after_tls'", &caps, err, errlen)) < 0)
            goto fail;
        s->caps_tls &= ~caps;
    }
    if ((v = fg_yaml_get(n, "extensions")) && (rc = extensions_of(d, v, s, err, errlen)) < 0)
        goto fail;
    int b;
    if ((v = fg_yaml_get(n, "esmtp"))) {
        if ((rc = get_bool(d, v, "'esmtp'", &b, err, errlen)) < 0)
            goto fail;
        s->no_esmtp = !b;
    }
    if ((v = fg_yaml_get(n, "starttls_inject")) &&
        (rc = get_inject(d, v, &s->starttls_inject, &s->starttls_inject_len, err, errlen)) < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "banner"))) {
        if ((rc = scalar(d, v, "'banner'", err, errlen)) < 0)
            goto fail;
        if (strpbrk(v->scalar, "\r\n")) {
            rc = fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "banner must be one line");
            goto fail;
        }
        s->banner = fg_strdup(v->scalar);
    }
    if ((v = fg_yaml_get(n, "hostname"))) {
        if ((rc = scalar(d, v, "'hostname'", err, errlen)) < 0)
            goto fail;
        if (!*v->scalar || strpbrk(v->scalar, " \r\n")) {
            rc = fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "hostname must be one word");
            goto fail;
        }
        s->hostname = fg_strdup(v->scalar);
    }
    uint64_t u;
    if ((v = fg_yaml_get(n, "max_size"))) {
        if ((rc = scalar(d, v, "'max_size'", err, errlen)) < 0)
            goto fail;
        if (fg_size_parse(v->scalar, &s->max_size) < 0 || s->max_size == 0) {
            rc = fg_yaml_errf(d, v, err, errlen, FG_EINPUT, "max_size: not a size (10M, 4k)");
            goto fail;
        }
    }
    if ((v = fg_yaml_get(n, "max_rcpt"))) {
        if ((rc = get_uint(d, v, "'max_rcpt'", 1, 1000000, &u, err, errlen)) < 0)
            goto fail;
        s->max_rcpt = (unsigned)u;
    }
    if ((v = fg_yaml_get(n, "require_tls")) &&
        (rc = get_bool(d, v, "'require_tls'", &s->require_tls, err, errlen)) < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "require_auth")) &&
        (rc = get_bool(d, v, "'require_auth'", &s->require_auth, err, errlen)) < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "window"))) {
        if ((rc = get_uint(d, v, "'window'", 1, 65535, &u, err, errlen)) < 0)
            goto fail;
        s->window = (int)u;
    }
    if ((v = fg_yaml_get(n, "seed"))) {
        if ((rc = get_uint(d, v, "'seed'", 0, UINT64_MAX, &s->seed, err, errlen)) < 0)
            goto fail;
    }
    /* smtp-sink's default texts for -r and -f, overridable as with -b/-B. */
    const char *soft = "450 4.3.0 Error: command failed", *hard = "500 5.3.0 Error: command failed";
    struct fg_mta_rule tmp = {0};
    int soft_code = 450, hard_code = 500;
    char *soft_text = NULL, *hard_text = NULL;
    if ((v = fg_yaml_get(n, "soft_reply"))) {
        if ((rc = parse_reply(d, v, &tmp, err, errlen)) < 0)
            goto fail;
        soft_code = tmp.code;
        soft_text = tmp.text;
        tmp.text = NULL;
    }
    if ((v = fg_yaml_get(n, "hard_reply"))) {
        if ((rc = parse_reply(d, v, &tmp, err, errlen)) < 0) {
            free(soft_text);
            goto fail;
        }
        hard_code = tmp.code;
        hard_text = tmp.text;
        tmp.text = NULL;
    }
    rc = 0;
    if ((v = fg_yaml_get(n, "soft_reject")))
        rc = shorthand(d, v, "'soft_reject'", s, &cap, soft_code, soft_text ? soft_text : soft + 4,
                       FG_MTA_END_NONE, err, errlen);
    if (rc == 0 && (v = fg_yaml_get(n, "hard_reject")))
        rc = shorthand(d, v, "'hard_reject'", s, &cap, hard_code, hard_text ? hard_text : hard + 4,
                       FG_MTA_END_NONE, err, errlen);
    free(soft_text);
    free(hard_text);
    if (rc < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "drop")) &&
        (rc = shorthand(d, v, "'drop'", s, &cap, -1, NULL, FG_MTA_END_CLOSE, err, errlen)) < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "shutdown")) &&
        (rc = shorthand(d, v, "'shutdown'", s, &cap, 421,
                        "4.3.2 Service shutting down and closing transmission channel",
                        FG_MTA_END_CLOSE, err, errlen)) < 0)
        goto fail;
    if ((v = fg_yaml_get(n, "stages"))) {
        if ((rc = fg_yaml_expect(d, v, FG_YAML_SEQ, "'stages'", err, errlen)) < 0)
            goto fail;
        for (size_t i = 0; i < v->n; i++)
            if ((rc = parse_rule(d, v->items[i], s, &cap, err, errlen)) < 0)
                goto fail;
    }
    return 0;
fail:
    fg_mta_script_clear(s);
    return rc;
}

int fg_mta_script_load(const char *path, struct fg_mta_script *s, char *err, size_t errlen)
{
    struct fg_yaml_doc *d = NULL;
    int rc = fg_yaml_load(path, &d, err, errlen);
    if (rc < 0)
        return rc;
    if (!d->root) {
        fg_yaml_free(d);
        fg_mta_script_init(s);
        return 0;
    }
    /* A file may hold the script itself or a scenario-like `mta:` key. */
    const struct fg_yaml_node *n = d->root;
    if (n->type == FG_YAML_MAP && n->n == 1 && fg_yaml_get(n, "mta"))
        n = fg_yaml_get(n, "mta");
    rc = fg_mta_script_parse_node(d, n, s, err, errlen);
    fg_yaml_free(d);
    return rc;
}
