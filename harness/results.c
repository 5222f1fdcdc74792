/* results.c - results.json and junit.xml for a run (faultgate/results.h).
 *
 * results.json follows reports/results.schema.json (its version is
 * FG_RESULTS_SCHEMA_VERSION): the run, each scenario's verdict, the fault
 * decisions, every expectation with its source and evidence, and the
 * transcript of every connection in the trace.  It is built with jansson
 * and written with a fixed key order, so two runs diff cleanly.
 *
 * junit.xml is for CI dashboards: one <testsuite> per scenario group (the
 * scenario file's directory), one <testcase> per scenario; fail and inconc
 * are <failure>, error is <error>, skip is <skipped/>.  It is written by
 * hand: no XML library is used because the output is a fixed, flat shape
 * and only needs character escaping.
 *
 * Both files are written to a temporary name and renamed into place, so a
 * reader never sees half a file.  Text that comes from the wire may hold
 * anything: invalid UTF-8 becomes U+FFFD, and in XML the control
 * characters XML 1.0 cannot carry are written as \xNN.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

/* --- text ------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid
 * (overlong forms, surrogates and values past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* A copy of s that jansson accepts: invalid bytes become U+FFFD. */
static char *utf8_clean(const char *s)
{
    size_t n = strlen(s);
    char *d = fg_malloc(n * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_len((const unsigned char *)s + i, n - i, &cp);
        if (l == 0) {
            memcpy(d + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(d + o, s + i, l);
            o += l;
            i += l;
        }
    }
    d[o] = '\0';
    return d;
}

static json_t *jstr(const char *s)
{
    if (!s)
        return json_null();
    char *c = utf8_clean(s);
    json_t *j = json_string(c);
    free(c);
    return j ? j : json_null();
}

/* XML character data / attribute value: the five markup characters as
 * entities, control characters XML 1.0 forbids as visible \xNN. */
static void xml_text(FILE *f, const char *s)
{
    if (!s)
        return;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        uint32_t cp;
        size_t l = utf8_len((const unsigned char *)s + i, n - i, &cp);
        if (l == 0) {
            fputs("\xEF\xBF\xBD", f);
            i++;
            continue;
        }
        if (l == 1) {
            switch (ch) {
            case '&':
                fputs("&amp;", f);
                break;
            case '<':
                fputs("&lt;", f);
                break;
            case '>':
                fputs("&gt;", f);
                break;
            case '"':
                fputs("&quot;", f);
                break;
            case '\'':
                fputs("&apos;", f);
                break;
            case '\t':
            case '\n':
                fputc(ch, f);
                break;
            case '\r':
                /* Keep CR through attribute normalisation and parsers. */
                fputs("&#13;", f);
                break;
            default:
                if (ch < 0x20 || ch == 0x7F)
                    fprintf(f, "\\x%02X", ch);
                else
                    fputc(ch, f);
            }
        } else if (cp == 0xFFFE || cp == 0xFFFF) {
            fputs("\xEF\xBF\xBD", f); /* not XML characters */
        } else {
            fwrite(s + i, 1, l, f);
        }
        i += l;
    }
}

static void iso8601(char *buf, size_t len, uint64_t us)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char d[32];
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%06uZ", d, (unsigned)(us % 1000000));
}

static json_t *jtime(uint64_t us)
{
    if (!us)
        return json_null();
    char b[48];
    iso8601(b, sizeof b, us);
    return json_string(b);
}

/* Seconds from a reference, rounded to the microsecond. */
static json_t *jsecs(uint64_t us, uint64_t ref)
{
    double d = ((double)(int64_t)(us - ref)) / 1e6;
    return json_real(round(d * 1e6) / 1e6);
}

static json_t *jseed(uint64_t seed)
{
    if (seed > (uint64_t)INT64_MAX) {
        char b[32];
        snprintf(b, sizeof b, "%" PRIu64, seed);
        return json_string(b);
    }
    return json_integer((json_int_t)seed);
}

static const char *group_of(const char *path, char *buf, size_t len)
{
    const char *def = "scenarios";
    if (!path)
        return def;
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return def;
    const char *p = slash;
    while (p > path && p[-1] != '/')
        p--;
    size_t n = (size_t)(slash - p);
    if (n == 0 || n >= len || (n == 1 && *p == '.'))
        return def;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

/* --- results.json ----------------------------------------------------- */

static const char *leg_of(const struct fg_meta *m, int port)
{
    if (m && port > 0) {
        if (port == m->gateway_port)
            return "inbound";
        if (port == m->proxy_port)
            return "gateway-to-proxy";
        if (port == m->mta_port)
            return "proxy-to-mta";
    }
    return "other";
}

static const char *answers_name(enum fg_smtp_answers a)
{
    switch (a) {
    case FG_ANS_GREETING:
        return "greeting";
    case FG_ANS_COMMAND:
        return "command";
    case FG_ANS_END_OF_DATA:
        return "end-of-data";
    case FG_ANS_BDAT:
        return "bdat";
    case FG_ANS_UNSOLICITED:
        return "unsolicited";
    }
    return "unsolicited";
}

static json_t *event_json(const struct fg_tl_event *e, uint64_t t0)
{
    json_t *j = json_object();
    json_object_set_new(j, "frame", json_integer((json_int_t)e->frame));
    json_object_set_new(j, "t", jsecs(e->us, t0));
    json_object_set_new(j, "dir", json_string(e->dir == FG_C2S ? "c2s" : "s2c"));
    json_object_set_new(j, "kind", jstr(fg_tl_kind_name(e->kind)));
    if (e->kind == FG_TL_REPLY) {
        json_object_set_new(j, "code", json_integer(e->code));
        json_object_set_new(j, "answers", json_string(answers_name(e->answers)));
        if (e->answers == FG_ANS_COMMAND && e->verb != FG_VERB_OTHER)
            json_object_set_new(j, "verb", jstr(fg_smtp_verb_name(e->verb)));
    }
    if (e->kind == FG_TL_COMMAND) {
        if (e->verb != FG_VERB_OTHER) {
            json_object_set_new(j, "verb", jstr(fg_smtp_verb_name(e->verb)));
        } else if (e->text) {
            size_t n = strcspn(e->text, " \r\n");
            char *v = fg_strndup(e->text, n < 16 ? n : 16);
            json_object_set_new(j, "verb", jstr(v));
            free(v);
        }
    }
    if (e->text)
        json_object_set_new(j, "text", jstr(e->text));
    if (e->kind == FG_TL_DATA || e->kind == FG_TL_GAP)
        json_object_set_new(j, "size", json_integer((json_int_t)e->size));
    return j;
}

static json_t *connections_json(const struct fg_scenario_result *r)
{
    json_t *a = json_array();
    if (!r->tl)
        return a;
    uint64_t t0 = r->tl->stats.first_us;
    for (size_t i = 0; i < r->tl->nconn; i++) {
        const struct fg_tl_conn *c = &r->tl->conn[i];
        json_t *j = json_object();
        json_object_set_new(j, "id", json_integer(c->id));
        json_object_set_new(j, "leg", json_string(leg_of(r->meta, c->server_port)));
        json_object_set_new(j, "client", jstr(c->client));
        json_object_set_new(j, "server", jstr(c->server));
        json_t *ev = json_array();
        for (size_t k = 0; k < c->nev; k++)
            json_array_append_new(ev, event_json(&c->ev[k], t0));
        json_object_set_new(j, "events", ev);
        json_array_append_new(a, j);
    }
    return a;
}

static json_t *scenario_json(const struct fg_run_info *ri, const struct fg_scenario_result *r)
{
    const struct fg_meta *m = r->meta;
    json_t *j = json_object();
    char gb[256];
    json_object_set_new(j, "id", jstr(r->id ? r->id : ""));
    json_object_set_new(j, "title", jstr(r->title));
    json_object_set_new(j, "path", jstr(r->path));
    json_object_set_new(j, "group", jstr(group_of(r->path, gb, sizeof gb)));
    json_t *kb = json_array(), *rfc = json_array();
    for (size_t i = 0; i < r->nkb; i++)
        json_array_append_new(kb, jstr(r->kb[i]));
    for (size_t i = 0; i < r->nrfc; i++)
        json_array_append_new(rfc, jstr(r->rfc[i]));
    json_object_set_new(j, "kb", kb);
    json_object_set_new(j, "rfc", rfc);
    json_object_set_new(j, "verdict", json_string(fg_verdict_name(r->verdict)));
    json_object_set_new(j, "error", jstr(r->error));
    json_object_set_new(j, "duration_ms", json_integer((json_int_t)r->duration_ms));
    json_object_set_new(j, "pcap", jstr(r->pcap));
    json_object_set_new(j, "capture_mode", jstr(m ? m->capture_mode : NULL));
    /* TLS keys of the run's sessions (NSS key log), beside the pcap */
    json_object_set_new(j, "keylog", jstr(m ? m->keylog : NULL));
    /* The two clocks' origins, so that a report drawn from this file alone
     * can put the fault decisions (run time) on the trace's time axis. */
    json_object_set_new(j, "start_us",
                        m && m->start_us ? json_integer((json_int_t)m->start_us) : json_null());
    uint64_t trace0 = r->tl ? r->tl->stats.first_us : 0;
    json_object_set_new(j, "trace_start_us",
                        trace0 ? json_integer((json_int_t)trace0) : json_null());

    json_t *gw = json_object();
    json_object_set_new(gw, "name",
                        jstr(m && m->profile_name ? m->profile_name : ri->profile_name));
    json_object_set_new(gw, "version", jstr(m ? m->gateway_version : NULL));
    json_object_set_new(gw, "running_at_end",
                        m ? json_boolean(m->gateway_running_at_end) : json_null());
    int dead = m && !m->gateway_running_at_end;
    json_object_set_new(gw, "exit_status",
                        dead ? json_integer((json_int_t)m->gateway_exit_status) : json_null());
    json_object_set_new(gw, "term_signal",
                        dead ? json_integer(m->gateway_term_signal) : json_null());
    json_object_set_new(j, "gateway", gw);

    json_t *da = json_array();
    uint64_t run0 = m && m->start_us ? m->start_us : ri->start_us;
    for (size_t i = 0; m && i < m->ndecisions; i++) {
        const struct fg_decision *d = &m->decisions[i];
        json_t *o = json_object();
        json_object_set_new(o, "t", jsecs(d->t_us, run0));
        json_object_set_new(o, "trace_t", trace0 ? jsecs(d->t_us, trace0) : json_null());
        json_object_set_new(o, "conn", json_integer(d->conn));
        json_object_set_new(o, "fault", json_integer(d->fault));
        json_object_set_new(o, "trigger", jstr(d->trigger));
        json_object_set_new(o, "action", jstr(d->action));
        json_array_append_new(da, o);
    }
    json_object_set_new(j, "decisions", da);

    json_t *ea = json_array();
    for (size_t i = 0; i < r->noutcomes; i++) {
        const struct fg_outcome *o = &r->outcomes[i];
        json_t *x = json_object();
        json_object_set_new(x, "rule", jstr(o->rule ? o->rule : ""));
        json_object_set_new(x, "source", jstr(o->source ? o->source : ""));
        json_object_set_new(x, "verdict", json_string(fg_verdict_name(o->verdict)));
        json_object_set_new(x, "summary", jstr(o->summary ? o->summary : ""));
        json_object_set_new(x, "evidence", jstr(o->evidence ? o->evidence : ""));
        json_object_set_new(x, "conn", o->conn ? json_integer(o->conn) : json_null());
        json_t *fr = json_array();
        for (size_t k = 0; k < o->nframes && k < FG_MAX_FRAMES; k++)
            json_array_append_new(fr, json_integer((json_int_t)o->frames[k]));
        json_object_set_new(x, "frames", fr);
        json_array_append_new(ea, x);
    }
    json_object_set_new(j, "expectations", ea);
    json_object_set_new(j, "connections", connections_json(r));
    return j;
}

/* Write through a temporary file and rename, so that readers never see a
 * partial file. */
static FILE *open_tmp(const char *path, char **tmp, char *err, size_t errlen)
{
    *tmp = fg_asprintf("%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(*tmp, "w");
    if (!f) {
        fg_errf(err, errlen, FG_EINPUT, "%s: cannot write: %s", path, strerror(errno));
        FG_FREE(*tmp);
    }
    return f;
}

static int close_tmp(FILE *f, const char *path, char *tmp, char *err, size_t errlen)
{
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    int rc = 0;
    if (bad || rename(tmp, path) != 0) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

FILE *fg_results_open(const char *path, char **tmp, char *err, size_t errlen)
{
    return open_tmp(path, tmp, err, errlen);
}

int fg_results_close(FILE *f, const char *path, char *tmp, char *err, size_t errlen)
{
    return close_tmp(f, path, tmp, err, errlen);
}

static const char *const verdict_names[] = {"pass", "inconc", "fail", "error", "skip"};

int fg_results_verdict_parse(const char *s)
{
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, verdict_names[i]) == 0)
            return i;
    return -1;
}

void fg_results_recount(json_t *doc)
{
    unsigned cnt[5] = {0};
    enum fg_verdict v = FG_V_SKIP;
    size_t i;
    json_t *sc;
    json_array_foreach(json_object_get(doc, "scenarios"), i, sc)
    {
        int k = fg_results_verdict_parse(json_string_value(json_object_get(sc, "verdict")));
        if (k < 0)
            k = FG_V_ERROR;
        cnt[k]++;
        v = fg_verdict_worst(v, (enum fg_verdict)k);
    }
    json_t *c = json_object();
    json_object_set_new(c, "pass", json_integer(cnt[FG_V_PASS]));
    json_object_set_new(c, "fail", json_integer(cnt[FG_V_FAIL]));
    json_object_set_new(c, "inconc", json_integer(cnt[FG_V_INCONC]));
    json_object_set_new(c, "error", json_integer(cnt[FG_V_ERROR]));
    json_object_set_new(c, "skip", json_integer(cnt[FG_V_SKIP]));
    json_object_set_new(doc, "counts", c);
    json_object_set_new(doc, "verdict", json_string(fg_verdict_name(v)));
}

json_t *fg_results_doc(const struct fg_run_info *ri, const struct fg_scenario_result *r, size_t n)
{
    char host[256] = "";
    if (!ri->host && gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';

    json_t *o = json_object();
    json_object_set_new(o, "schema_version", json_string(FG_RESULTS_SCHEMA_VERSION));
    json_object_set_new(o, "faultgate_version",
                        jstr(ri->faultgate_version ? ri->faultgate_version : FG_VERSION));
    json_object_set_new(o, "run_id", jstr(ri->run_id ? ri->run_id : ""));
    json_t *pr = json_object();
    json_object_set_new(pr, "path", jstr(ri->profile_path));
    json_object_set_new(pr, "name", jstr(ri->profile_name));
    json_object_set_new(o, "profile", pr);
    json_object_set_new(o, "seed", jseed(ri->seed));
    json_object_set_new(o, "start", jtime(ri->start_us));
    json_object_set_new(o, "start_us", json_integer((json_int_t)ri->start_us));
    json_object_set_new(o, "end", jtime(ri->end_us));
    json_object_set_new(o, "end_us", json_integer((json_int_t)ri->end_us));
    json_object_set_new(o, "host", jstr(ri->host ? ri->host : host));
    json_t *sa = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(sa, scenario_json(ri, &r[i]));
    /* counts and verdict before scenarios, in the fixed key order */
    json_object_set_new(o, "counts", json_null());
    json_object_set_new(o, "verdict", json_null());
    json_object_set_new(o, "scenarios", sa);
    fg_results_recount(o);
    return o;
}

int fg_results_doc_write(const char *path, const json_t *doc, char *err, size_t errlen)
{
    char *tmp;
    FILE *f = open_tmp(path, &tmp, err, errlen);
    if (!f)
        return FG_EINPUT;
    int rc = json_dumpf(doc, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (rc == 0)
        fputc('\n', f);
    else
        fg_errf(err, errlen, FG_EINPUT, "%s: cannot encode results", path);
    int rc2 = close_tmp(f, path, tmp, err, errlen);
    return rc != 0 ? FG_EINPUT : rc2;
}

int fg_results_write_json(const char *path, const struct fg_run_info *ri,
                          const struct fg_scenario_result *r, size_t n, char *err, size_t errlen)
{
    json_t *o = fg_results_doc(ri, r, n);
    int rc = fg_results_doc_write(path, o, err, errlen);
    json_decref(o);
    return rc;
}

/* --- reading results.json back ----------------------------------------- */

/* The shape the reports rely on; anything else is rendered when present.
 * jansson keeps no positions after parsing, so a shape error names the
 * JSON path instead of a line and column. */
static int check_scenario(const char *path, size_t i, json_t *sc, char *err, size_t errlen)
{
    if (!json_is_object(sc))
        return fg_errf(err, errlen, FG_EINPUT, "%s: scenarios[%zu]: not an object", path, i);
    if (!json_is_string(json_object_get(sc, "id")))
        return fg_errf(err, errlen, FG_EINPUT, "%s: scenarios[%zu].id: missing or not a string",
                       path, i);
    if (fg_results_verdict_parse(json_string_value(json_object_get(sc, "verdict"))) < 0)
        return fg_errf(err, errlen, FG_EINPUT,
                       "%s: scenarios[%zu].verdict: not one of pass, fail, inconc, error, skip",
                       path, i);
    static const char *const arrays[] = {"kb", "rfc", "decisions", "expectations", "connections"};
    for (size_t k = 0; k < sizeof arrays / sizeof *arrays; k++) {
        json_t *a = json_object_get(sc, arrays[k]);
        if (a && !json_is_array(a))
            return fg_errf(err, errlen, FG_EINPUT, "%s: scenarios[%zu].%s: not an array", path, i,
                           arrays[k]);
    }
    return 0;
}

int fg_results_doc_read(const char *path, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        if (je.line < 0)
            return fg_errf(err, errlen, FG_EINPUT, "%s: %s", path, je.text);
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
    int rc = 0;
    const char *ver = json_string_value(json_object_get(doc, "schema_version"));
    if (!json_is_object(doc)) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s:1:1: not a faultgate results file", path);
    } else if (!ver) {
        rc = fg_errf(err, errlen, FG_EINPUT,
                     "%s: schema_version: missing (not a faultgate results file?)", path);
    } else if (strncmp(ver, "1.", 2) != 0) {
        /* A later major version may mean anything: refuse rather than guess. */
        rc = fg_errf(err, errlen, FG_EINPUT,
                     "%s: schema_version \"%s\" is not one this faultgate reads (1.x)", path, ver);
    } else if (!json_is_array(json_object_get(doc, "scenarios"))) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: scenarios: missing or not an array", path);
    } else {
        size_t i;
        json_t *sc;
        json_array_foreach(json_object_get(doc, "scenarios"), i, sc)
        {
            if ((rc = check_scenario(path, i, sc, err, errlen)) < 0)
                break;
        }
    }
    if (rc < 0) {
        json_decref(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

/* --- junit.xml -------------------------------------------------------- */

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static uint64_t ms_of(const json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v > 0 ? (uint64_t)v : 0;
}

static void attr(FILE *f, const char *name, const char *value)
{
    fprintf(f, " %s=\"", name);
    xml_text(f, value ? value : "");
    fputc('"', f);
}

static void attr_time(FILE *f, uint64_t ms)
{
    fprintf(f, " time=\"%" PRIu64 ".%03u\"", ms / 1000, (unsigned)(ms % 1000));
}

static void property(FILE *f, const char *name, const char *value)
{
    fputs("      <property", f);
    attr(f, "name", name);
    attr(f, "value", value);
    fputs("/>\n", f);
}

static int verdict_of(const json_t *o)
{
    int v = fg_results_verdict_parse(sget(o, "verdict"));
    return v < 0 ? FG_V_ERROR : v;
}

static int is_bad(int v)
{
    return v == FG_V_FAIL || v == FG_V_INCONC;
}

static void testcase(FILE *f, const char *group, const json_t *sc)
{
    fputs("    <testcase", f);
    char *cls = fg_asprintf("faultgate.%s", group);
    attr(f, "classname", cls);
    free(cls);
    attr(f, "name", sget(sc, "id"));
    attr_time(f, ms_of(sc, "duration_ms"));
    if (sget(sc, "path"))
        attr(f, "file", sget(sc, "path"));
    fputs(">\n", f);

    int verdict = verdict_of(sc);
    const json_t *ex = json_object_get(sc, "expectations");
    size_t i;
    json_t *o;
    if (verdict == FG_V_SKIP) {
        fputs("      <skipped/>\n", f);
    } else if (verdict == FG_V_ERROR) {
        const char *why = sget(sc, "error") ? sget(sc, "error") : "error";
        fputs("      <error", f);
        attr(f, "message", why);
        attr(f, "type", "error");
        fputs(">", f);
        xml_text(f, why);
        json_array_foreach(ex, i, o)
        {
            if (verdict_of(o) != FG_V_ERROR)
                continue;
            fputs("\n", f);
            xml_text(f, sget(o, "rule"));
            fputs(": ", f);
            xml_text(f, sget(o, "evidence"));
        }
        fputs("</error>\n", f);
    } else if (is_bad(verdict)) {
        const char *first = NULL;
        json_array_foreach(ex, i, o)
        {
            if (!first && is_bad(verdict_of(o)))
                first = sget(o, "summary");
        }
        fputs("      <failure", f);
        attr(f, "message", first ? first : fg_verdict_name((enum fg_verdict)verdict));
        attr(f, "type", fg_verdict_name((enum fg_verdict)verdict));
        fputs(">", f);
        int any = 0;
        json_array_foreach(ex, i, o)
        {
            if (!is_bad(verdict_of(o)))
                continue;
            if (any++)
                fputs("\n\n", f);
            fprintf(f, "%s: ", fg_verdict_name((enum fg_verdict)verdict_of(o)));
            xml_text(f, sget(o, "rule"));
            fputs(" (", f);
            xml_text(f, sget(o, "source"));
            fputs(")\n", f);
            xml_text(f, sget(o, "summary"));
            fputs("\n", f);
            xml_text(f, sget(o, "evidence"));
            json_t *fr = json_object_get(o, "frames");
            if (json_array_size(fr)) {
                fputs("\nframes:", f);
                size_t k;
                json_t *x;
                json_array_foreach(fr, k, x)
                {
                    fprintf(f, " %" JSON_INTEGER_FORMAT, json_integer_value(x));
                }
            }
        }
        fputs("</failure>\n", f);
    }
    /* Every expectation's verdict, for the passing ones too. */
    if (json_array_size(ex)) {
        fputs("      <system-out>", f);
        json_array_foreach(ex, i, o)
        {
            fprintf(f, "%s%s: ", i ? "\n" : "", fg_verdict_name((enum fg_verdict)verdict_of(o)));
            xml_text(f, sget(o, "rule"));
            fputs(": ", f);
            xml_text(f, sget(o, "summary"));
        }
        fputs("</system-out>\n", f);
    }
    fputs("    </testcase>\n", f);
}

static const char *group_name(const json_t *sc)
{
    const char *g = sget(sc, "group");
    return g && *g ? g : "scenarios";
}

int fg_results_junit_write_doc(const char *path, const json_t *doc, char *err, size_t errlen)
{
    const json_t *sa = json_object_get(doc, "scenarios");
    size_t n = json_array_size(sa);
    /* Groups in order of first appearance. */
    const char **groups = fg_calloc(n ? n : 1, sizeof *groups);
    size_t ng = 0;
    size_t i;
    json_t *sc;
    unsigned tot[5] = {0};
    uint64_t tot_ms = 0;
    json_array_foreach(sa, i, sc)
    {
        const char *g = group_name(sc);
        size_t k;
        for (k = 0; k < ng; k++)
            if (strcmp(groups[k], g) == 0)
                break;
        if (k == ng)
            groups[ng++] = g;
        tot[verdict_of(sc)]++;
        tot_ms += ms_of(sc, "duration_ms");
    }

    char *tmp;
    FILE *f = open_tmp(path, &tmp, err, errlen);
    if (!f) {
        free(groups);
        return FG_EINPUT;
    }
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
    fputs("<testsuites", f);
    attr(f, "name", "faultgate");
    fprintf(f, " tests=\"%zu\" failures=\"%u\" errors=\"%u\" skipped=\"%u\"", n,
            tot[FG_V_FAIL] + tot[FG_V_INCONC], tot[FG_V_ERROR], tot[FG_V_SKIP]);
    attr_time(f, tot_ms);
    fputs(">\n", f);

    char seed[32] = "", ts[48] = "";
    json_t *js = json_object_get(doc, "seed");
    if (json_is_integer(js))
        snprintf(seed, sizeof seed, "%" JSON_INTEGER_FORMAT, json_integer_value(js));
    else if (json_is_string(js))
        snprintf(seed, sizeof seed, "%s", json_string_value(js));
    uint64_t start_us = ms_of(doc, "start_us");
    if (start_us) {
        iso8601(ts, sizeof ts, start_us);
        ts[19] = '\0'; /* JUnit's timestamp has no fraction or zone */
    }
    const char *prof_name = sget(json_object_get(doc, "profile"), "name");
    for (size_t k = 0; k < ng; k++) {
        unsigned cnt[5] = {0};
        size_t tests = 0;
        uint64_t ms = 0;
        const json_t *first = NULL;
        json_array_foreach(sa, i, sc)
        {
            if (strcmp(group_name(sc), groups[k]) != 0)
                continue;
            tests++;
            cnt[verdict_of(sc)]++;
            ms += ms_of(sc, "duration_ms");
            if (!first && sget(sc, "capture_mode"))
                first = sc;
        }
        fputs("  <testsuite", f);
        attr(f, "name", groups[k]);
        fprintf(f, " tests=\"%zu\" failures=\"%u\" errors=\"%u\" skipped=\"%u\"", tests,
                cnt[FG_V_FAIL] + cnt[FG_V_INCONC], cnt[FG_V_ERROR], cnt[FG_V_SKIP]);
        attr_time(f, ms);
        if (ts[0])
            attr(f, "timestamp", ts);
        if (sget(doc, "host"))
            attr(f, "hostname", sget(doc, "host"));
        fputs(">\n    <properties>\n", f);
        property(f, "seed", seed);
        const json_t *gw = first ? json_object_get(first, "gateway") : NULL;
        const char *gname = sget(gw, "name") ? sget(gw, "name") : prof_name;
        const char *gver = sget(gw, "version");
        char *gwtext = fg_asprintf("%s%s%s", gname ? gname : "", gver ? " " : "", gver ? gver : "");
        property(f, "gateway", gwtext);
        free(gwtext);
        property(f, "capture_mode", first ? sget(first, "capture_mode") : "");
        if (sget(doc, "run_id"))
            property(f, "run_id", sget(doc, "run_id"));
        fputs("    </properties>\n", f);
        json_array_foreach(sa, i, sc)
        {
            if (strcmp(group_name(sc), groups[k]) == 0)
                testcase(f, groups[k], sc);
        }
        fputs("  </testsuite>\n", f);
    }
    fputs("</testsuites>\n", f);
    free(groups);
    return close_tmp(f, path, tmp, err, errlen);
}

int fg_results_write_junit(const char *path, const struct fg_run_info *ri,
                           const struct fg_scenario_result *r, size_t n, char *err, size_t errlen)
{
    json_t *doc = fg_results_doc(ri, r, n);
    int rc = fg_results_junit_write_doc(path, doc, err, errlen);
    json_decref(doc);
    return rc;
}
