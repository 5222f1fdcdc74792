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

static enum fg_verdict run_verdict(const struct fg_scenario_result *r, size_t n, unsigned cnt[5])
{
    enum fg_verdict v = FG_V_SKIP;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)r[i].verdict < 5)
            cnt[r[i].verdict]++;
        v = fg_verdict_worst(v, r[i].verdict);
    }
    return v;
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

int fg_results_write_json(const char *path, const struct fg_run_info *ri,
                          const struct fg_scenario_result *r, size_t n, char *err, size_t errlen)
{
    unsigned cnt[5] = {0};
    enum fg_verdict v = run_verdict(r, n, cnt);
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
    json_t *c = json_object();
    json_object_set_new(c, "pass", json_integer(cnt[FG_V_PASS]));
    json_object_set_new(c, "fail", json_integer(cnt[FG_V_FAIL]));
    json_object_set_new(c, "inconc", json_integer(cnt[FG_V_INCONC]));
    json_object_set_new(c, "error", json_integer(cnt[FG_V_ERROR]));
    json_object_set_new(c, "skip", json_integer(cnt[FG_V_SKIP]));
    json_object_set_new(o, "counts", c);
    json_object_set_new(o, "verdict", json_string(fg_verdict_name(v)));
    json_t *sa = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(sa, scenario_json(ri, &r[i]));
    json_object_set_new(o, "scenarios", sa);

    char *tmp;
    FILE *f = open_tmp(path, &tmp, err, errlen);
    if (!f) {
        json_decref(o);
        return FG_EINPUT;
    }
    int rc = json_dumpf(o, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    if (rc == 0)
        fputc('\n', f);
    else
        fg_errf(err, errlen, FG_EINPUT, "%s: cannot encode results", path);
    int rc2 = close_tmp(f, path, tmp, err, errlen);
    return rc != 0 ? FG_EINPUT : rc2;
}

/* --- junit.xml -------------------------------------------------------- */

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

static int is_bad(enum fg_verdict v)
{
    return v == FG_V_FAIL || v == FG_V_INCONC;
}

static void testcase(FILE *f, const char *group, const struct fg_scenario_result *r)
{
    fputs("    <testcase", f);
    char *cls = fg_asprintf("faultgate.%s", group);
    attr(f, "classname", cls);
    free(cls);
    attr(f, "name", r->id ? r->id : "");
    attr_time(f, r->duration_ms);
    if (r->path)
        attr(f, "file", r->path);
    fputs(">\n", f);

    if (r->verdict == FG_V_SKIP) {
        fputs("      <skipped/>\n", f);
    } else if (r->verdict == FG_V_ERROR) {
        fputs("      <error", f);
        attr(f, "message", r->error ? r->error : "error");
        attr(f, "type", "error");
        fputs(">", f);
        xml_text(f, r->error ? r->error : "error");
        for (size_t i = 0; i < r->noutcomes; i++)
            if (r->outcomes[i].verdict == FG_V_ERROR) {
                fputs("\n", f);
                xml_text(f, r->outcomes[i].rule);
                fputs(": ", f);
                xml_text(f, r->outcomes[i].evidence);
            }
        fputs("</error>\n", f);
    } else if (is_bad(r->verdict)) {
        const char *first = NULL;
        for (size_t i = 0; i < r->noutcomes && !first; i++)
            if (is_bad(r->outcomes[i].verdict))
                first = r->outcomes[i].summary;
        fputs("      <failure", f);
        attr(f, "message", first ? first : fg_verdict_name(r->verdict));
        attr(f, "type", fg_verdict_name(r->verdict));
        fputs(">", f);
        int any = 0;
        for (size_t i = 0; i < r->noutcomes; i++) {
            const struct fg_outcome *o = &r->outcomes[i];
            if (!is_bad(o->verdict))
                continue;
            if (any++)
                fputs("\n\n", f);
            fprintf(f, "%s: ", fg_verdict_name(o->verdict));
            xml_text(f, o->rule);
            fputs(" (", f);
            xml_text(f, o->source);
            fputs(")\n", f);
            xml_text(f, o->summary);
            fputs("\n", f);
            xml_text(f, o->evidence);
        }
        fputs("</failure>\n", f);
    }
    /* Every expectation's verdict, for the passing ones too. */
    if (r->noutcomes) {
        fputs("      <system-out>", f);
        for (size_t i = 0; i < r->noutcomes; i++) {
            const struct fg_outcome *o = &r->outcomes[i];
            fprintf(f, "%s%s: ", i ? "\n" : "", fg_verdict_name(o->verdict));
            xml_text(f, o->rule);
            fputs(": ", f);
            xml_text(f, o->summary);
        }
        fputs("</system-out>\n", f);
    }
    fputs("    </testcase>\n", f);
}

int fg_results_write_junit(const char *path, const struct fg_run_info *ri,
                           const struct fg_scenario_result *r, size_t n, char *err, size_t errlen)
{
    /* Groups in order of first appearance. */
    char **groups = n ? fg_calloc(n, sizeof *groups) : NULL;
    size_t ng = 0;
    size_t *gi = n ? fg_calloc(n, sizeof *gi) : NULL;
    for (size_t i = 0; i < n; i++) {
        char gb[256];
        const char *g = group_of(r[i].path, gb, sizeof gb);
        size_t k;
        for (k = 0; k < ng; k++)
            if (strcmp(groups[k], g) == 0)
                break;
        if (k == ng)
            groups[ng++] = fg_strdup(g);
        gi[i] = k;
    }

    unsigned tot[5] = {0};
    uint64_t tot_ms = 0;
    run_verdict(r, n, tot);
    for (size_t i = 0; i < n; i++)
        tot_ms += r[i].duration_ms;

    char *tmp;
    FILE *f = open_tmp(path, &tmp, err, errlen);
    if (!f) {
        for (size_t k = 0; k < ng; k++)
            free(groups[k]);
        free(groups);
        free(gi);
        return FG_EINPUT;
    }
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
    fputs("<testsuites", f);
    attr(f, "name", "faultgate");
    fprintf(f, " tests=\"%zu\" failures=\"%u\" errors=\"%u\" skipped=\"%u\"", n,
            tot[FG_V_FAIL] + tot[FG_V_INCONC], tot[FG_V_ERROR], tot[FG_V_SKIP]);
    attr_time(f, tot_ms);
    fputs(">\n", f);

    char seed[32], ts[48] = "";
    snprintf(seed, sizeof seed, "%" PRIu64, ri->seed);
    if (ri->start_us) {
        iso8601(ts, sizeof ts, ri->start_us);
        ts[19] = '\0'; /* JUnit's timestamp has no fraction or zone */
    }
    for (size_t k = 0; k < ng; k++) {
        unsigned cnt[5] = {0};
        size_t tests = 0;
        uint64_t ms = 0;
        const struct fg_meta *m0 = NULL;
        for (size_t i = 0; i < n; i++) {
            if (gi[i] != k)
                continue;
            tests++;
            cnt[r[i].verdict < 5 ? r[i].verdict : FG_V_ERROR]++;
            ms += r[i].duration_ms;
            if (!m0 && r[i].meta)
                m0 = r[i].meta;
        }
        fputs("  <testsuite", f);
        attr(f, "name", groups[k]);
        fprintf(f, " tests=\"%zu\" failures=\"%u\" errors=\"%u\" skipped=\"%u\"", tests,
                cnt[FG_V_FAIL] + cnt[FG_V_INCONC], cnt[FG_V_ERROR], cnt[FG_V_SKIP]);
        attr_time(f, ms);
        if (ts[0])
            attr(f, "timestamp", ts);
        if (ri->host)
            attr(f, "hostname", ri->host);
        fputs(">\n    <properties>\n", f);
        property(f, "seed", seed);
        char *gw = fg_asprintf("%s%s%s",
                               m0 && m0->profile_name ? m0->profile_name
                               : ri->profile_name     ? ri->profile_name
                                                      : "",
                               m0 && m0->gateway_version ? " " : "",
                               m0 && m0->gateway_version ? m0->gateway_version : "");
        property(f, "gateway", gw);
        free(gw);
        property(f, "capture_mode", m0 && m0->capture_mode ? m0->capture_mode : "");
        if (ri->run_id)
            property(f, "run_id", ri->run_id);
        fputs("    </properties>\n", f);
        for (size_t i = 0; i < n; i++)
            if (gi[i] == k)
                testcase(f, groups[k], &r[i]);
        fputs("  </testsuite>\n", f);
    }
    fputs("</testsuites>\n", f);

    for (size_t k = 0; k < ng; k++)
        free(groups[k]);
    free(groups);
    free(gi);
    return close_tmp(f, path, tmp, err, errlen);
}
