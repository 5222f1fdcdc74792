/* meta.c - a run's metadata file, <scenario>.meta.json (faultgate/meta.h).
 *
 * Writes and reads, with jansson, everything a verdict needs besides the
 * pcap: the roles of the ports, the profile's timeouts, the fault decisions,
 * the injected tokens, the liveness probe and the gateway's fate.  The file
 * carries "version": FG_META_VERSION; a reader meeting another version
 * refuses it rather than guess what its fields mean.  Times are integer
 * microseconds since the epoch; the seed, a full 64-bit value, is written
 * as a decimal string when it does not fit a JSON integer.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/meta.h"
#include "faultgate/util.h"

static json_t *jstr_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *jus(uint64_t v)
{
    return json_integer((json_int_t)v);
}

int fg_meta_write(const char *path, const struct fg_meta *m, char *err, size_t errlen)
{
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer(FG_META_VERSION));
    json_object_set_new(o, "scenario_id", jstr_or_null(m->scenario_id));
    if (m->seed > (uint64_t)INT64_MAX) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRIu64, m->seed);
        json_object_set_new(o, "seed", json_string(buf));
    } else {
        json_object_set_new(o, "seed", jus(m->seed));
    }
    json_object_set_new(o, "capture_mode", jstr_or_null(m->capture_mode));
    json_object_set_new(o, "pcap", jstr_or_null(m->pcap));
    json_object_set_new(o, "gateway_port", json_integer(m->gateway_port));
    json_object_set_new(o, "proxy_port", json_integer(m->proxy_port));
    json_object_set_new(o, "mta_port", json_integer(m->mta_port));
    if (m->x400_port)
        json_object_set_new(o, "x400_port", json_integer(m->x400_port));
    if (m->x400_mta_port)
        json_object_set_new(o, "x400_mta_port", json_integer(m->x400_mta_port));
    if (m->ledger)
        json_object_set_new(o, "ledger", json_string(m->ledger));
    if (m->keylog)
        json_object_set_new(o, "keylog", json_string(m->keylog));
    if (m->tls_terminate)
        json_object_set_new(o, "tls", json_string("terminate"));
    json_object_set_new(o, "profile_name", jstr_or_null(m->profile_name));
    if (fg_tls_policy_name(m->tls_policy))
        json_object_set_new(o, "tls_policy", json_string(fg_tls_policy_name(m->tls_policy)));
    json_object_set_new(o, "gateway_version", jstr_or_null(m->gateway_version));

    json_t *to = json_object();
    for (size_t i = 0; i < m->ntimeouts; i++)
        if (m->timeouts[i].name)
            json_object_set_new(to, m->timeouts[i].name, jus(m->timeouts[i].ms));
    json_object_set_new(o, "timeouts", to);

    json_t *da = json_array();
    for (size_t i = 0; i < m->ndecisions; i++) {
        const struct fg_decision *d = &m->decisions[i];
        json_t *j = json_object();
        json_object_set_new(j, "t_us", jus(d->t_us));
        json_object_set_new(j, "conn", json_integer(d->conn));
        json_object_set_new(j, "fault", json_integer(d->fault));
        json_object_set_new(j, "trigger", json_string(d->trigger));
        json_object_set_new(j, "action", json_string(d->action));
        json_array_append_new(da, j);
    }
    json_object_set_new(o, "decisions", da);

    json_t *ta = json_array();
    for (size_t i = 0; i < m->ntokens; i++) {
        const struct fg_meta_token *t = &m->tokens[i];
        json_t *j = json_object();
        json_object_set_new(j, "token", json_string(t->token));
        json_object_set_new(j, "accepted", json_boolean(t->accepted));
        json_object_set_new(j, "reply_code", json_integer(t->reply_code));
        json_object_set_new(j, "accepted_us", jus(t->accepted_us));
        json_array_append_new(ta, j);
    }
    json_object_set_new(o, "tokens", ta);

    json_object_set_new(o, "start_us", jus(m->start_us));
    json_object_set_new(o, "end_us", jus(m->end_us));
    json_object_set_new(o, "probe_start_us", jus(m->probe_start_us));
    json_object_set_new(o, "gateway_running_at_end", json_boolean(m->gateway_running_at_end));
    json_object_set_new(o, "gateway_exit_status", json_integer(m->gateway_exit_status));
    if (m->gateway_last_output)
        json_object_set_new(o, "gateway_last_output", json_string(m->gateway_last_output));
    json_object_set_new(o, "gateway_term_signal", json_integer(m->gateway_term_signal));
    if (m->nclients) {
        json_t *ca = json_array();
        for (size_t i = 0; i < m->nclients; i++) {
            const struct fg_meta_client *c = &m->clients[i];
            json_t *j = json_object();
            json_object_set_new(j, "token", json_string(c->token));
            json_object_set_new(j, "exit_status", json_integer(c->exit_status));
            json_object_set_new(j, "term_signal", json_integer(c->term_signal));
            json_object_set_new(j, "timed_out", json_boolean(c->timed_out));
            json_object_set_new(j, "spawned", json_boolean(c->spawned));
            json_object_set_new(j, "start_us", jus(c->start_us));
            json_object_set_new(j, "duration_ms", jus(c->duration_ms));
            json_object_set_new(j, "stderr_tail", jstr_or_null(c->stderr_tail));
            json_array_append_new(ca, j);
        }
        json_object_set_new(o, "clients", ca);
    }

    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        return fg_errf(err, errlen, FG_EINPUT, "%s: cannot encode the run metadata", path);
    char why[FG_ERRBUF_SIZE];
    int rc = fg_file_write(path, text, strlen(text), why, sizeof why);
    free(text);
    if (rc < 0)
        return fg_errf(err, errlen, rc, "cannot write the run metadata: %s", why);
    return 0;
}

/* Field readers: each returns 0, or FG_EINPUT naming the field.  Missing
 * optional fields keep their zero value. */
struct rd {
    const char *path;
    char *err;
    size_t errlen;
};

static int bad(struct rd *r, const char *field, const char *want)
{
    return fg_errf(r->err, r->errlen, FG_EINPUT, "%s: field \"%s\" must be %s", r->path, field,
                   want);
}

static int get_str(struct rd *r, json_t *o, const char *k, char **out)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return bad(r, k, "a string");
    *out = fg_strdup(json_string_value(v));
    return 0;
}

static int get_int(struct rd *r, json_t *o, const char *k, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return bad(r, k, "an integer in range");
    *out = json_integer_value(v);
    return 0;
}

static int get_u64(struct rd *r, json_t *o, const char *k, uint64_t *out)
{
    int64_t v = 0;
    int rc = get_int(r, o, k, 0, INT64_MAX, &v);
    if (rc == 0)
        *out = (uint64_t)v;
    return rc;
}

static int get_intv(struct rd *r, json_t *o, const char *k, int64_t min, int64_t max, int *out)
{
    int64_t v = 0;
    int rc = get_int(r, o, k, min, max, &v);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int read_body(struct rd *r, json_t *o, struct fg_meta *m)
{
    int rc = 0;
    json_t *seed = json_object_get(o, "seed");
    if (seed && json_is_string(seed)) {
        if (fg_uint_parse(json_string_value(seed), 0, UINT64_MAX, &m->seed) != 0)
            return bad(r, "seed", "a whole number");
    } else if ((rc = get_u64(r, o, "seed", &m->seed)) != 0) {
        return rc;
    }
    if ((rc = get_str(r, o, "scenario_id", &m->scenario_id)) ||
        (rc = get_str(r, o, "capture_mode", &m->capture_mode)) ||
        (rc = get_str(r, o, "pcap", &m->pcap)) ||
        (rc = get_intv(r, o, "gateway_port", 0, 65535, &m->gateway_port)) ||
        (rc = get_intv(r, o, "proxy_port", 0, 65535, &m->proxy_port)) ||
        (rc = get_intv(r, o, "mta_port", 0, 65535, &m->mta_port)) ||
        (rc = get_intv(r, o, "x400_port", 0, 65535, &m->x400_port)) ||
        (rc = get_intv(r, o, "x400_mta_port", 0, 65535, &m->x400_mta_port)) ||
        (rc = get_str(r, o, "ledger", &m->ledger)) || (rc = get_str(r, o, "keylog", &m->keylog)) ||
        (rc = get_str(r, o, "profile_name", &m->profile_name)) ||
        (rc = get_str(r, o, "gateway_version", &m->gateway_version)) ||
        (rc = get_u64(r, o, "start_us", &m->start_us)) ||
        (rc = get_u64(r, o, "end_us", &m->end_us)) ||
        (rc = get_u64(r, o, "probe_start_us", &m->probe_start_us)) ||
        (rc = get_intv(r, o, "gateway_running_at_end", 0, 1, &m->gateway_running_at_end)) ||
        (rc =
             get_int(r, o, "gateway_exit_status", INT64_MIN, INT64_MAX, &m->gateway_exit_status)) ||
        (rc = get_intv(r, o, "gateway_term_signal", 0, 1024, &m->gateway_term_signal)) ||
        (rc = get_str(r, o, "gateway_last_output", &m->gateway_last_output)))
        return rc;
    json_t *tls = json_object_get(o, "tls");
    if (tls && !json_is_null(tls)) {
        if (!json_is_string(tls) || strcmp(json_string_value(tls), "terminate") != 0)
            return bad(r, "tls", "\"terminate\"");
        m->tls_terminate = 1;
    }
    json_t *tp = json_object_get(o, "tls_policy");
    if (tp && !json_is_null(tp)) {
        int v = json_is_string(tp) ? fg_tls_policy_parse(json_string_value(tp)) : -1;
        if (v < 0)
            return bad(r, "tls_policy", "\"none\", \"opportunistic\" or \"mandatory\"");
        m->tls_policy = v;
    }

    json_t *to = json_object_get(o, "timeouts");
    if (to && !json_is_null(to)) {
        if (!json_is_object(to))
            return bad(r, "timeouts", "an object of name: milliseconds");
        size_t cap = 0;
        const char *k;
        json_t *v;
        json_object_foreach(to, k, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return bad(r, "timeouts", "an object of name: milliseconds");
            struct fg_timeout *t = FG_ARRAY_PUSH(m->timeouts, m->ntimeouts, cap);
            t->name = fg_strdup(k);
            t->ms = (uint64_t)json_integer_value(v);
        }
    }

    json_t *da = json_object_get(o, "decisions");
    if (da && !json_is_null(da)) {
        if (!json_is_array(da))
            return bad(r, "decisions", "an array");
        size_t cap = 0, i;
        json_t *j;
        json_array_foreach(da, i, j)
        {
            if (!json_is_object(j))
                return bad(r, "decisions", "an array of objects");
            struct fg_decision *d = FG_ARRAY_PUSH(m->decisions, m->ndecisions, cap);
            int conn = 0, fault = 0;
            char *trig = NULL, *act = NULL;
            if ((rc = get_u64(r, j, "t_us", &d->t_us)) ||
                (rc = get_intv(r, j, "conn", 0, INT32_MAX, &conn)) ||
                (rc = get_intv(r, j, "fault", 0, INT32_MAX, &fault)) ||
                (rc = get_str(r, j, "trigger", &trig)) || (rc = get_str(r, j, "action", &act))) {
                free(trig);
                free(act);
                return rc;
            }
            d->conn = (unsigned)conn;
            d->fault = (unsigned)fault;
            snprintf(d->trigger, sizeof d->trigger, "%s", trig ? trig : "");
            snprintf(d->action, sizeof d->action, "%s", act ? act : "");
            free(trig);
            free(act);
        }
    }

    json_t *ta = json_object_get(o, "tokens");
    if (ta && !json_is_null(ta)) {
        if (!json_is_array(ta))
            return bad(r, "tokens", "an array");
        size_t cap = 0, i;
        json_t *j;
        json_array_foreach(ta, i, j)
        {
            json_t *tok = json_is_object(j) ? json_object_get(j, "token") : NULL;
            if (!tok || !json_is_string(tok) || strlen(json_string_value(tok)) >= FG_TOKEN_MAX)
                return bad(r, "tokens", "an array of {token: string, ...}");
            struct fg_meta_token *t = FG_ARRAY_PUSH(m->tokens, m->ntokens, cap);
            snprintf(t->token, sizeof t->token, "%s", json_string_value(tok));
            if ((rc = get_intv(r, j, "accepted", 0, 1, &t->accepted)) ||
                (rc = get_intv(r, j, "reply_code", 0, 999, &t->reply_code)) ||
                (rc = get_u64(r, j, "accepted_us", &t->accepted_us)))
                return rc;
        }
    }

    json_t *ca = json_object_get(o, "clients");
    if (ca && !json_is_null(ca)) {
        if (!json_is_array(ca))
            return bad(r, "clients", "an array");
        size_t cap = 0, i;
        json_t *j;
        json_array_foreach(ca, i, j)
        {
            json_t *tok = json_is_object(j) ? json_object_get(j, "token") : NULL;
            if (!tok || !json_is_string(tok) || strlen(json_string_value(tok)) >= FG_TOKEN_MAX)
                return bad(r, "clients", "an array of {token: string, ...}");
            struct fg_meta_client *c = FG_ARRAY_PUSH(m->clients, m->nclients, cap);
            memset(c, 0, sizeof(*c));
            c->spawned = 1;
            snprintf(c->token, sizeof c->token, "%s", json_string_value(tok));
            if ((rc = get_int(r, j, "exit_status", INT64_MIN, INT64_MAX, &c->exit_status)) ||
                (rc = get_intv(r, j, "term_signal", 0, 1024, &c->term_signal)) ||
                (rc = get_intv(r, j, "timed_out", 0, 1, &c->timed_out)) ||
                (rc = get_intv(r, j, "spawned", 0, 1, &c->spawned)) ||
                (rc = get_u64(r, j, "start_us", &c->start_us)) ||
                (rc = get_u64(r, j, "duration_ms", &c->duration_ms)) ||
                (rc = get_str(r, j, "stderr_tail", &c->stderr_tail)))
                return rc;
        }
    }
    return 0;
}

int fg_meta_read(const char *path, struct fg_meta **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    char *text;
    size_t len;
    int frc = fg_file_read(path, (uint64_t)64 << 20, &text, &len, err, errlen);
    if (frc < 0)
        return frc;
    json_t *o = json_loadb(text, len, 0, &je);
    free(text);
    if (!o)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    struct rd r = {path, err, errlen};
    int rc;
    json_t *ver = json_is_object(o) ? json_object_get(o, "version") : NULL;
    if (!json_is_object(o)) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: not a faultgate run metadata object", path);
    } else if (!ver || !json_is_integer(ver)) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: no \"version\": not a faultgate metadata file",
                     path);
    } else if (json_integer_value(ver) != FG_META_VERSION) {
        rc = fg_errf(err, errlen, FG_EINPUT,
                     "%s: metadata version %" JSON_INTEGER_FORMAT
                     " is not supported (this faultgate reads version %d)",
                     path, json_integer_value(ver), FG_META_VERSION);
    } else {
        struct fg_meta *m = fg_calloc(1, sizeof *m);
        rc = read_body(&r, o, m);
        if (rc == 0)
            *out = m;
        else
            fg_meta_free(m);
    }
    json_decref(o);
    return rc;
}

void fg_meta_clear(struct fg_meta *m)
{
    if (!m)
        return;
    free(m->scenario_id);
    free(m->capture_mode);
    free(m->pcap);
    free(m->profile_name);
    free(m->gateway_version);
    free(m->gateway_last_output);
    free(m->ledger);
    free(m->keylog);
    for (size_t i = 0; i < m->ntimeouts; i++)
        free(m->timeouts[i].name);
    free(m->timeouts);
    free(m->decisions);
    free(m->tokens);
    for (size_t i = 0; i < m->nclients; i++)
        free(m->clients[i].stderr_tail);
    free(m->clients);
    memset(m, 0, sizeof *m);
}

void fg_meta_free(struct fg_meta *m)
{
    fg_meta_clear(m);
    free(m);
}

int64_t fg_meta_timeout(const struct fg_meta *m, const char *name)
{
    if (!m || !name)
        return -1;
    for (size_t i = 0; i < m->ntimeouts; i++)
        if (m->timeouts[i].name && strcmp(m->timeouts[i].name, name) == 0)
            return (int64_t)m->timeouts[i].ms;
    return -1;
}
