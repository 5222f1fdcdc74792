/* report_html.c - report.html: one self-contained page (inline CSS and SVG,
 * no script, no network) for the engineer reading a run and for the vendor
 * handing a qualification report to a customer; it prints to PDF.
 *
 * Drawn from the results document alone (faultgate/results.h):
 *   - the environment: faultgate version, gateway name and version,
 *     profile, seed, capture mode, host, times, and the shards of a merge;
 *   - a verdict matrix grouped by KB article, RFC area, security and X.400;
 *   - per scenario: the expectations with their sources, evidence and
 *     frame numbers (linked to the ladder), the fault decisions, the link
 *     to the pcap, and a ladder (sequence) diagram in SVG of every
 *     connection in the trace on both legs (injector <-> gateway, gateway
 *     <-> proxy, proxy <-> fake MTA), the faults as markers, and a time
 *     axis on the left.
 *
 * The HTML is written by hand with fprintf: a fixed document whose only
 * variable parts are escaped text, which no templating library would make
 * shorter or safer.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

/* Ladder geometry (SVG user units = CSS px). */
#define AXIS_W 118
#define LANE_GAP 232
#define LANE0 (AXIS_W + 64)
#define NLANES 4
#define ROW_H 17
#define HEAD_H 46
#define BREAK_H 16
#define BREAK_S 0.5 /* a pause longer than this gets a break mark on the axis */
#define LABEL_CHARS 34
/* Rows drawn per scenario: the head and the tail of a longer trace, the
 * middle elided (the pcap has it all). */
#define ROWS_HEAD 450
#define ROWS_TAIL 150

static const char *const lane_names[NLANES] = {"Injector", "Gateway under test", "Proxy (faults)",
                                               "Fake MTA"};

/* --- small helpers ------------------------------------------------------ */

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static const char *sdef(const json_t *o, const char *k, const char *def)
{
    const char *s = sget(o, k);
    return s ? s : def;
}

static double nget(const json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* HTML text and attribute values: the markup characters as entities.  The
 * document is valid UTF-8 (jansson checked it), so nothing else needs
 * care except control characters, shown as U+FFFD. */
static void esc_n(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; s && i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
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
            fputs("&#39;", f);
            break;
        default:
            if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F)
                fputs("\xEF\xBF\xBD", f);
            else
                fputc(c, f);
        }
    }
}

static void esc(FILE *f, const char *s)
{
    esc_n(f, s, s ? strlen(s) : 0);
}

/* The first line of s, cut to at most max characters (UTF-8 aware) with an
 * ellipsis when cut. */
static void esc_short(FILE *f, const char *s, size_t max)
{
    if (!s)
        return;
    size_t line = strcspn(s, "\r\n");
    size_t chars = 0, i = 0;
    while (i < line && chars < max) {
        i++;
        while (i < line && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        chars++;
    }
    esc_n(f, s, i);
    if (i < line || s[line])
        fputs("\xE2\x80\xA6", f);
}

static const char *verdict_str(const json_t *o)
{
    const char *v = sget(o, "verdict");
    return fg_results_verdict_parse(v) >= 0 ? v : "error";
}

static void badge(FILE *f, const char *v)
{
    fprintf(f, "<span class=\"v v-%s\">%s</span>", v, v);
}

static void fmt_secs(char *b, size_t n, double s)
{
    snprintf(b, n, "%.3f s", s);
}

/* A distinct-strings list, in order of first appearance. */
struct strset {
    const char **v;
    size_t n, cap;
};

static void strset_add(struct strset *s, const char *x)
{
    if (!x || !*x)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return;
    *FG_ARRAY_PUSH(s->v, s->n, s->cap) = x;
}

static void strset_print(FILE *f, const struct strset *s, const char *none)
{
    if (!s->n)
        esc(f, none);
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            fputs(", ", f);
        esc(f, s->v[i]);
    }
}

/* --- head ----------------------------------------------------------------- */

static const char css[] =
    ":root{--pass:#1a7f37;--fail:#cf222e;--inconc:#9a6700;--error:#8250df;--skip:#6e7781;"
    "--line:#d0d7de;--muted:#57606a}\n"
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;"
    "margin:0 auto;max-width:1180px;padding:16px 24px}\n"
    "h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;border-bottom:1px solid var(--line);"
    "padding-bottom:4px;margin-top:28px}h3{font-size:16px;margin:18px 0 6px}\n"
    "table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid var(--line);"
    "padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}\n"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
    ".v{display:inline-block;min-width:46px;text-align:center;border-radius:10px;padding:0 8px;"
    "color:#fff;font-weight:600;font-size:12px;text-transform:uppercase}\n"
    ".v-pass{background:var(--pass)}.v-fail{background:var(--fail)}"
    ".v-inconc{background:var(--inconc)}.v-error{background:var(--error)}"
    ".v-skip{background:var(--skip)}\n"
    ".chip{display:inline-block;margin:1px 3px 1px 0;padding:0 6px;border-radius:4px;"
    "font:12px ui-monospace,monospace;border:1px solid var(--line);text-decoration:none;"
    "color:#1f2328}\n"
    ".chip.c-pass{border-color:var(--pass)}.chip.c-fail{background:#ffebe9;"
    "border-color:var(--fail)}.chip.c-inconc{background:#fff8c5;border-color:var(--inconc)}"
    ".chip.c-error{background:#fbefff;border-color:var(--error)}\n"
    ".headline{font-size:16px;margin:6px 0 14px}.muted{color:var(--muted)}\n"
    "pre.ev{white-space:pre-wrap;margin:4px 0;font:12px/1.4 ui-monospace,monospace;"
    "background:#f6f8fa;padding:6px 8px;border-radius:4px}\n"
    ".scenario{border-top:3px solid var(--line);margin-top:26px;padding-top:4px}\n"
    ".scenario.s-fail{border-top-color:var(--fail)}.scenario.s-inconc{border-top-color:"
    "var(--inconc)}.scenario.s-error{border-top-color:var(--error)}\n"
    ".ladder{overflow-x:auto}.ladder svg{max-width:100%;height:auto}\n"
    "code{font:12px ui-monospace,monospace}\n"
    "svg text{font-family:ui-monospace,'DejaVu Sans Mono',monospace}\n"
    "@media print{body{max-width:none;padding:0;font-size:11px}"
    "a{color:inherit;text-decoration:none}.noprint{display:none}"
    ".scenario{break-before:page}table,pre.ev,.ladder{break-inside:avoid}"
    ".ladder{overflow:visible}.v,.chip{-webkit-print-color-adjust:exact;"
    "print-color-adjust:exact}}\n"
    "@page{size:A4;margin:12mm}\n";

/* --- environment ---------------------------------------------------------- */

static void seed_text(const json_t *j, char *b, size_t n)
{
    if (json_is_integer(j))
        snprintf(b, n, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    else if (json_is_string(j))
        snprintf(b, n, "%s", json_string_value(j));
    else
        snprintf(b, n, "unknown");
}

static void counts_text(FILE *f, const json_t *c)
{
    fprintf(f,
            "%" JSON_INTEGER_FORMAT " passed, %" JSON_INTEGER_FORMAT
            " failed, %" JSON_INTEGER_FORMAT " inconclusive, %" JSON_INTEGER_FORMAT
            " errors, %" JSON_INTEGER_FORMAT " skipped",
            json_integer_value(json_object_get(c, "pass")),
            json_integer_value(json_object_get(c, "fail")),
            json_integer_value(json_object_get(c, "inconc")),
            json_integer_value(json_object_get(c, "error")),
            json_integer_value(json_object_get(c, "skip")));
}

static void env_row(FILE *f, const char *k, const char *v)
{
    fprintf(f, "<tr><th>%s</th><td>", k);
    esc(f, v && *v ? v : "unknown");
    fputs("</td></tr>\n", f);
}

static void environment(FILE *f, const json_t *doc)
{
    const json_t *sa = json_object_get(doc, "scenarios");
    struct strset gws = {0}, modes = {0};
    size_t i;
    json_t *sc;
    char **gwtext = fg_calloc(json_array_size(sa) + 1, sizeof *gwtext);
    json_array_foreach(sa, i, sc)
    {
        const json_t *gw = json_object_get(sc, "gateway");
        const char *name = sget(gw, "name"), *ver = sget(gw, "version");
        if (name) {
            gwtext[i] =
                fg_asprintf("%s%s%s%s", name, ver ? " (" : "", ver ? ver : "", ver ? ")" : "");
            strset_add(&gws, gwtext[i]);
        }
        strset_add(&modes, sget(sc, "capture_mode"));
    }
    char seed[32];
    seed_text(json_object_get(doc, "seed"), seed, sizeof seed);
    const json_t *prof = json_object_get(doc, "profile");

    fputs("<h2 id=\"environment\">Environment</h2>\n<table class=\"env\">\n", f);
    env_row(f, "faultgate version", sget(doc, "faultgate_version"));
    fputs("<tr><th>Gateway under test</th><td>", f);
    strset_print(f, &gws, sdef(prof, "name", "unknown"));
    fputs("</td></tr>\n", f);
    fputs("<tr><th>Gateway profile</th><td>", f);
    esc(f, sdef(prof, "name", "unknown"));
    if (sget(prof, "path")) {
        fputs(" <span class=\"muted\">(", f);
        esc(f, sget(prof, "path"));
        fputs(")</span>", f);
    }
    fputs("</td></tr>\n", f);
    env_row(f, "Seed", seed);
    fputs("<tr><th>Capture mode</th><td>", f);
    strset_print(f, &modes, "none (no trace)");
    fputs(" <span class=\"muted\">(live: libpcap on loopback; synth: synthesized by faultgate's "
          "own endpoints)</span></td></tr>\n",
          f);
    env_row(f, "Host", sget(doc, "host"));
    env_row(f, "Run", sget(doc, "run_id"));
    env_row(f, "Started (UTC)", sget(doc, "start"));
    env_row(f, "Ended (UTC)", sget(doc, "end"));
    fputs("</table>\n", f);

    const json_t *shards = json_object_get(doc, "shards");
    if (json_array_size(shards)) {
        fprintf(f,
                "<h3>Merged from %zu shards</h3>\n<table><tr><th>directory</th><th>run</th>"
                "<th>host</th><th>seed</th><th>started</th><th>verdicts</th></tr>\n",
                json_array_size(shards));
        json_t *s;
        json_array_foreach(shards, i, s)
        {
            seed_text(json_object_get(s, "seed"), seed, sizeof seed);
            fputs("<tr><td><code>", f);
            esc(f, sget(s, "dir"));
            fputs("</code></td><td>", f);
            esc(f, sget(s, "run_id"));
            fputs("</td><td>", f);
            esc(f, sget(s, "host"));
            fputs("</td><td>", f);
            esc(f, seed);
            fputs("</td><td>", f);
            esc(f, sget(s, "start"));
            fputs("</td><td>", f);
            counts_text(f, json_object_get(s, "counts"));
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    for (size_t k = 0; k < json_array_size(sa); k++)
        free(gwtext[k]);
    free(gwtext);
    free(gws.v);
    free(modes.v);
}

/* --- verdict matrix ------------------------------------------------------- */

/* A row of the matrix: a category and the scenarios in it. */
struct mrow {
    char *key;   /* sort and identity key */
    char *label; /* shown */
    size_t *sc;  /* scenario indexes */
    size_t n, cap;
};

struct msection {
    struct mrow *rows;
    size_t n, cap;
};

static void msec_add(struct msection *s, const char *key, const char *label, size_t sc)
{
    struct mrow *r = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->rows[i].key, key) == 0)
            r = &s->rows[i];
    if (!r) {
        r = FG_ARRAY_PUSH(s->rows, s->n, s->cap);
        memset(r, 0, sizeof *r);
        r->key = fg_strdup(key);
        r->label = fg_strdup(label);
    }
    for (size_t i = 0; i < r->n; i++)
        if (r->sc[i] == sc)
            return;
    *FG_ARRAY_PUSH(r->sc, r->n, r->cap) = sc;
}

static int mrow_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mrow *)a)->key, ((const struct mrow *)b)->key);
}

static void msec_free(struct msection *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->rows[i].key);
        free(s->rows[i].label);
        free(s->rows[i].sc);
    }
    free(s->rows);
}

/* RFC 5321's sections, by number, for the RFC area rows. */
static const char *rfc5321_area(const char *sec)
{
    static const struct {
        const char *sec, *name;
    } t[] = {{"2", "The SMTP model"},
             {"3", "The SMTP procedures"},
             {"4.1", "SMTP commands"},
             {"4.2", "SMTP replies"},
             {"4.3", "Sequencing of commands and replies"},
             {"4.4", "Trace information"},
             {"4.5", "Implementation issues: limits, timeouts, retry"},
             {"5", "Address resolution and mail handling"},
             {"6", "Problem detection and handling"},
             {"7", "Security considerations"}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(sec, t[i].sec) == 0)
            return t[i].name;
    return NULL;
}

/* "5321 4.5.3.2.6" -> key "rfc 05321 4.5", label "RFC 5321 §4.5 ...": the
 * RFC and the first two levels of its section. */
static void rfc_area(const char *cite, char *key, size_t klen, char *label, size_t llen)
{
    char num[16] = "", sec[64] = "";
    const char *p = cite;
    if (strncasecmp(p, "RFC", 3) == 0)
        p += 3;
    while (*p == ' ')
        p++;
    size_t i = 0;
    while (*p >= '0' && *p <= '9' && i < sizeof num - 1)
        num[i++] = *p++;
    num[i] = '\0';
    while (*p == ' ' || *p == '\xC2' || *p == '\xA7') /* spaces, "§" */
        p++;
    i = 0;
    int dots = 0;
    while (((*p >= '0' && *p <= '9') || *p == '.') && i < sizeof sec - 1) {
        if (*p == '.' && ++dots == 2)
            break;
        sec[i++] = *p++;
    }
    sec[i] = '\0';
    if (i && sec[i - 1] == '.')
        sec[i - 1] = '\0';
    if (!num[0]) {
        snprintf(key, klen, "rfc ~%s", cite);
        snprintf(label, llen, "%s", cite);
        return;
    }
    const char *name = strcmp(num, "5321") == 0 && sec[0] ? rfc5321_area(sec) : NULL;
    if (!name && strcmp(num, "5321") == 0 && strchr(sec, '.')) {
        char top[8];
        snprintf(top, sizeof top, "%.*s", (int)strcspn(sec, "."), sec);
        name = rfc5321_area(top);
    }
    snprintf(key, klen, "rfc %08ld %s", strtol(num, NULL, 10), sec);
    snprintf(label, llen, "RFC %s%s%s%s%s", num, sec[0] ? " \xC2\xA7" : "", sec,
             name ? " \xE2\x80\x94 " : "", name ? name : "");
}

static void matrix_section(FILE *f, const char *title, struct msection *s, const json_t *sa)
{
    if (!s->n)
        return;
    qsort(s->rows, s->n, sizeof *s->rows, mrow_cmp);
    fprintf(f,
            "<h3>%s</h3>\n<table class=\"matrix\"><tr><th></th><th>pass</th><th>fail</th>"
            "<th>inconc</th><th>error</th><th>skip</th><th>scenarios</th></tr>\n",
            title);
    for (size_t i = 0; i < s->n; i++) {
        const struct mrow *r = &s->rows[i];
        unsigned cnt[5] = {0};
        for (size_t k = 0; k < r->n; k++)
            cnt[fg_results_verdict_parse(verdict_str(json_array_get(sa, r->sc[k])))]++;
        fputs("<tr><th>", f);
        esc(f, r->label);
        fprintf(f,
                "</th><td class=\"n\">%u</td><td class=\"n\">%u</td><td class=\"n\">%u</td>"
                "<td class=\"n\">%u</td><td class=\"n\">%u</td><td>",
                cnt[0], cnt[2], cnt[1], cnt[3], cnt[4]);
        for (size_t k = 0; k < r->n; k++) {
            const json_t *sc = json_array_get(sa, r->sc[k]);
            fprintf(f, "<a class=\"chip c-%s\" href=\"#sc-%zu\" title=\"%s\">", verdict_str(sc),
                    r->sc[k], verdict_str(sc));
            esc(f, sget(sc, "id"));
            fputs("</a>", f);
        }
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void matrix(FILE *f, const json_t *doc)
{
    const json_t *sa = json_object_get(doc, "scenarios");
    struct msection kb = {0}, rfc = {0}, sec = {0}, x400 = {0}, other = {0};
    size_t i;
    json_t *sc;
    json_array_foreach(sa, i, sc)
    {
        int placed = 0;
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(sc, "kb"), k, c)
        {
            const char *a = json_string_value(c);
            if (!a)
                continue;
            char label[128];
            snprintf(label, sizeof label, "%s%s", strncmp(a, "CVE-", 4) ? "KB " : "", a);
            msec_add(&kb, a, label, i);
            placed = 1;
        }
        json_array_foreach(json_object_get(sc, "rfc"), k, c)
        {
            const char *a = json_string_value(c);
            if (!a)
                continue;
            char key[128], label[256];
            rfc_area(a, key, sizeof key, label, sizeof label);
            msec_add(&rfc, key, label, i);
            placed = 1;
        }
        const char *g = sdef(sc, "group", "");
        if (strcmp(g, "security") == 0) {
            msec_add(&sec, g, "Security", i);
            placed = 1;
        }
        if (strcmp(g, "x400") == 0 || strcmp(sdef(sc, "leg", ""), "x400") == 0) {
            msec_add(&x400, "x400", "X.400 over RFC 1006", i);
            placed = 1;
        }
        if (!placed)
            msec_add(&other, g[0] ? g : "scenarios", g[0] ? g : "scenarios", i);
    }
    fputs("<h2 id=\"matrix\">Verdict matrix</h2>\n"
          "<p class=\"muted\">A scenario appears under every KB article and RFC area it cites. "
          "Select a scenario for its expectations, evidence and ladder diagram.</p>\n",
          f);
    matrix_section(f, "KB articles and advisories", &kb, sa);
    matrix_section(f, "RFC areas", &rfc, sa);
    matrix_section(f, "Security", &sec, sa);
    matrix_section(f, "X.400", &x400, sa);
    matrix_section(f, "Other scenarios", &other, sa);
    if (!json_array_size(sa))
        fputs("<p>No scenario ran.</p>\n", f);
    msec_free(&kb);
    msec_free(&rfc);
    msec_free(&sec);
    msec_free(&x400);
    msec_free(&other);
}

/* --- ladder --------------------------------------------------------------- */

enum row_kind { ROW_EVENT, ROW_FAULT, ROW_ELIDED };

struct row {
    enum row_kind kind;
    double t;   /* seconds since the trace's first frame */
    size_t seq; /* order of collection, for a stable sort */
    const json_t *ev, *conn, *dec;
    int from, to; /* lanes */
    size_t elided;
};

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void lanes_of(const char *leg, int *client, int *server)
{
    if (leg && strcmp(leg, "gateway-to-proxy") == 0)
        *client = 1, *server = 2;
    else if (leg && strcmp(leg, "proxy-to-mta") == 0)
        *client = 2, *server = 3;
    else
        *client = 0, *server = 1; /* inbound, and others beside it */
}

static int lane_x(int lane)
{
    return LANE0 + lane * LANE_GAP;
}

/* The decision's connection: decisions count connections to the proxy
 * port in accept order, which is the order of the gateway-to-proxy
 * connections in the trace. */
static const json_t *decision_conn(const json_t *conns, json_int_t n)
{
    size_t i;
    json_t *c;
    json_int_t k = 0;
    json_array_foreach(conns, i, c)
    {
        const char *leg = sget(c, "leg");
        if (leg && strcmp(leg, "gateway-to-proxy") == 0 && ++k == n)
            return c;
    }
    return NULL;
}

static double decision_trace_t(const json_t *sc, const json_t *d, int *ok)
{
    json_t *tt = json_object_get(d, "trace_t");
    *ok = 1;
    if (json_is_number(tt))
        return json_number_value(tt);
    json_t *s0 = json_object_get(sc, "start_us"), *t0 = json_object_get(sc, "trace_start_us");
    if (json_is_integer(s0) && json_is_integer(t0))
        return nget(d, "t") + (double)(json_integer_value(s0) - json_integer_value(t0)) / 1e6;
    *ok = 0;
    return 0;
}

/* Every colour event_label can choose. */
static const char *const arrow_colors[] = {"#0969da", "#1a7f37", "#bc4c00",
                                           "#cf222e", "#57606a", "#8250df"};

static const char *reply_color(json_int_t code)
{
    if (code >= 500)
        return "#cf222e";
    if (code >= 400)
        return "#bc4c00";
    return "#1a7f37";
}

static void event_label(FILE *f, const json_t *ev, const char **color, int *dashed)
{
    const char *kind = sdef(ev, "kind", "?");
    const char *text = sget(ev, "text");
    *color = "#0969da";
    *dashed = 0;
    if (strcmp(kind, "reply") == 0) {
        *color = reply_color(json_integer_value(json_object_get(ev, "code")));
        if (text)
            esc_short(f, text, LABEL_CHARS);
        else
            fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(ev, "code")));
    } else if (strcmp(kind, "command") == 0) {
        esc_short(f, text ? text : sget(ev, "verb"), LABEL_CHARS);
    } else if (strcmp(kind, "data") == 0) {
        fprintf(f, "message body, %" JSON_INTEGER_FORMAT " octets",
                json_integer_value(json_object_get(ev, "size")));
        *dashed = 1;
    } else if (strcmp(kind, "end-of-data") == 0) {
        fputs("&lt;CRLF&gt;.&lt;CRLF&gt; (end of data)", f);
    } else if (strcmp(kind, "bdat-end") == 0) {
        fputs("BDAT LAST chunk end", f);
    } else if (strcmp(kind, "open") == 0) {
        fputs("connect (SYN)", f);
        *color = "#57606a";
        *dashed = 1;
    } else if (strcmp(kind, "fin") == 0) {
        fputs("FIN", f);
        *color = "#57606a";
    } else if (strcmp(kind, "rst") == 0) {
        fputs("RST", f);
        *color = "#cf222e";
    } else if (strcmp(kind, "tls") == 0) {
        fputs("TLS", f);
        *color = "#8250df";
    } else if (strcmp(kind, "gap") == 0) {
        fprintf(f, "gap in capture: %" JSON_INTEGER_FORMAT " octets missing",
                json_integer_value(json_object_get(ev, "size")));
        *color = "#cf222e";
        *dashed = 1;
    } else if (strcmp(kind, "violation") == 0) {
        fputs("\xE2\x9A\xA0 ", f);
        esc_short(f, text ? text : "violation", LABEL_CHARS);
        *color = "#cf222e";
    } else {
        esc(f, kind);
        if (text) {
            fputs(": ", f);
            esc_short(f, text, LABEL_CHARS);
        }
    }
}

struct frame_ids {
    json_int_t *v;
    size_t n, cap;
};

/* Whether frame already has an anchor; adds it if not. */
static int frame_seen(struct frame_ids *fi, json_int_t frame)
{
    for (size_t i = 0; i < fi->n; i++)
        if (fi->v[i] == frame)
            return 1;
    *FG_ARRAY_PUSH(fi->v, fi->n, fi->cap) = frame;
    return 0;
}

static void ladder(FILE *f, size_t idx, const json_t *sc, struct frame_ids *anchors)
{
    const json_t *conns = json_object_get(sc, "connections");
    struct row *rows = NULL;
    size_t n = 0, cap = 0, seq = 0;
    size_t i, k;
    json_t *c, *ev;
    json_array_foreach(conns, i, c)
    {
        int cl, sv;
        lanes_of(sget(c, "leg"), &cl, &sv);
        json_array_foreach(json_object_get(c, "events"), k, ev)
        {
            struct row *r = FG_ARRAY_PUSH(rows, n, cap);
            memset(r, 0, sizeof *r);
            r->kind = ROW_EVENT;
            r->t = nget(ev, "t");
            r->seq = seq++;
            r->ev = ev;
            r->conn = c;
            int s2c = strcmp(sdef(ev, "dir", "c2s"), "s2c") == 0;
            r->from = s2c ? sv : cl;
            r->to = s2c ? cl : sv;
        }
    }
    json_t *d;
    json_array_foreach(json_object_get(sc, "decisions"), i, d)
    {
        int ok;
        double t = decision_trace_t(sc, d, &ok);
        if (!ok)
            continue;
        struct row *r = FG_ARRAY_PUSH(rows, n, cap);
        memset(r, 0, sizeof *r);
        r->kind = ROW_FAULT;
        r->t = t;
        r->seq = seq++;
        r->dec = d;
        r->conn = decision_conn(conns, json_integer_value(json_object_get(d, "conn")));
        r->from = 1;
        r->to = 2;
    }
    if (!n) {
        fputs("<p class=\"muted\">No ladder: the trace holds no connection.</p>\n", f);
        free(rows);
        return;
    }
    qsort(rows, n, sizeof *rows, row_cmp);
    /* Elide the middle of a long trace. */
    if (n > ROWS_HEAD + ROWS_TAIL + 1) {
        size_t cut = n - ROWS_HEAD - ROWS_TAIL;
        rows[ROWS_HEAD].kind = ROW_ELIDED;
        rows[ROWS_HEAD].elided = cut;
        memmove(&rows[ROWS_HEAD + 1], &rows[n - ROWS_TAIL], ROWS_TAIL * sizeof *rows);
        n = ROWS_HEAD + 1 + ROWS_TAIL;
    }

    /* Layout: one row per item, plus a break wherever the trace pauses. */
    int *y = fg_calloc(n, sizeof *y);
    int cur = HEAD_H + 10;
    for (i = 0; i < n; i++) {
        if (i && rows[i].t - rows[i - 1].t > BREAK_S && rows[i - 1].kind != ROW_ELIDED)
            cur += BREAK_H;
        y[i] = cur;
        cur += ROW_H;
    }
    int height = cur + 16;
    int width = lane_x(NLANES - 1) + 100;

    fprintf(f,
            "<div class=\"ladder\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"ladder diagram of ",
            width, height, width, height);
    esc(f, sget(sc, "id"));
    fputs("\" class=\"ladder-svg\">\n", f);
    /* One arrowhead per colour: context-stroke is not in every renderer. */
    fputs("<defs>", f);
    for (size_t m = 0; m < sizeof arrow_colors / sizeof *arrow_colors; m++)
        fprintf(f,
                "<marker id=\"ah%zu-%s\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" "
                "markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path "
                "d=\"M0,0L10,5L0,10z\" fill=\"%s\"/></marker>",
                idx, arrow_colors[m] + 1, arrow_colors[m]);
    fputs("</defs>\n", f);
    /* lanes */
    for (int l = 0; l < NLANES; l++) {
        int x = lane_x(l);
        fprintf(f,
                "<rect x=\"%d\" y=\"4\" width=\"176\" height=\"26\" rx=\"4\" fill=\"#f6f8fa\" "
                "stroke=\"#8c959f\"/><text x=\"%d\" y=\"21\" font-size=\"12\" "
                "text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n"
                "<line x1=\"%d\" y1=\"30\" x2=\"%d\" y2=\"%d\" stroke=\"#8c959f\" "
                "stroke-dasharray=\"4 3\"/>\n",
                x - 88, x, lane_names[l], x, x, height - 6);
    }
    /* time axis */
    fprintf(f,
            "<text x=\"4\" y=\"21\" font-size=\"11\" fill=\"#57606a\">t (s) / frame</text>\n"
            "<line x1=\"%d\" y1=\"30\" x2=\"%d\" y2=\"%d\" stroke=\"#57606a\"/>\n",
            AXIS_W - 6, AXIS_W - 6, height - 6);
    for (i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        int yy = y[i];
        if (i && r->t - rows[i - 1].t > BREAK_S && rows[i - 1].kind != ROW_ELIDED) {
            int by = yy - BREAK_H / 2 - 2;
            fprintf(f,
                    "<path d=\"M%d,%dl8,-4l-8,-4\" stroke=\"#57606a\" fill=\"none\"/>"
                    "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#57606a\">"
                    "\xE2\x8B\xAF +%.3f s</text>\n",
                    AXIS_W - 10, by + 4, AXIS_W + 4, by + 3, r->t - rows[i - 1].t);
        }
        if (r->kind == ROW_ELIDED) {
            fprintf(f,
                    "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"#57606a\" "
                    "text-anchor=\"middle\">\xE2\x8B\xAE %zu more events: see the pcap "
                    "\xE2\x8B\xAE</text>\n",
                    lane_x(1) + LANE_GAP / 2, yy + 4, r->elided);
            continue;
        }
        json_int_t frame = r->ev ? json_integer_value(json_object_get(r->ev, "frame")) : 0;
        fprintf(f, "<g class=\"row %s\"", r->kind == ROW_FAULT ? "fault" : "event");
        if (r->kind == ROW_EVENT && frame > 0 && !frame_seen(anchors, frame))
            fprintf(f, " id=\"sc-%zu-f%" JSON_INTEGER_FORMAT "\"", idx, frame);
        fputs(">", f);
        fprintf(f, "<text x=\"4\" y=\"%d\" font-size=\"10\" fill=\"#57606a\">%.3f", yy + 4, r->t);
        if (frame > 0)
            fprintf(f, " #%" JSON_INTEGER_FORMAT, frame);
        fputs("</text>", f);
        if (r->kind == ROW_FAULT) {
            int x1 = lane_x(r->from), x2 = lane_x(r->to), mx = (x1 + x2) / 2;
            fprintf(f,
                    "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#cf222e\" "
                    "stroke-dasharray=\"2 2\"/><path d=\"M%d,%dl7,7l-7,7l-7,-7z\" "
                    "fill=\"#cf222e\"/><text x=\"%d\" y=\"%d\" font-size=\"11\" "
                    "fill=\"#cf222e\" font-weight=\"bold\">\xE2\x9A\xA1 fault %" JSON_INTEGER_FORMAT
                    ": ",
                    AXIS_W, yy, width - 8, yy, mx, yy - 7, mx + 10, yy + 4,
                    json_integer_value(json_object_get(r->dec, "fault")) + 1);
            esc_short(f, sget(r->dec, "action"), 20);
            fputs(" on ", f);
            esc_short(f, sget(r->dec, "trigger"), 24);
            fprintf(f, ", conn #%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(r->dec, "conn")));
            fputs("</text></g>\n", f);
            continue;
        }
        const char *color;
        int dashed;
        char *label;
        size_t llen;
        FILE *lf = open_memstream(&label, &llen);
        event_label(lf, r->ev, &color, &dashed);
        fclose(lf);
        json_int_t cid = json_integer_value(json_object_get(r->conn, "id"));
        const char *kind = sdef(r->ev, "kind", "");
        int x1 = lane_x(r->from), x2 = lane_x(r->to);
        int dir = x2 > x1 ? 1 : -1;
        if (strcmp(kind, "fin") == 0 || strcmp(kind, "rst") == 0 ||
            strcmp(kind, "violation") == 0) {
            /* A stub from the sender: the end of its half, or a flaw. */
            x2 = x1 + dir * 46;
        }
        fprintf(f,
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                "stroke-width=\"1.4\"%s marker-end=\"url(#ah%zu-%s)\"/>",
                x1 + dir * 3, yy, x2 - dir * 3, yy, color,
                dashed ? " stroke-dasharray=\"5 3\"" : "", idx, color + 1);
        if (strcmp(kind, "rst") == 0)
            fprintf(f, "<path d=\"M%d,%dl6,6m0,-6l-6,6\" stroke=\"#cf222e\" stroke-width=\"2\"/>",
                    x2 + dir * 4 - 3, yy - 3);
        int tx =
            (strcmp(kind, "fin") == 0 || strcmp(kind, "rst") == 0 || strcmp(kind, "violation") == 0)
                ? x2 + dir * 8
                : (x1 + x2) / 2;
        const char *anchor = tx == (x1 + x2) / 2 ? "middle" : (dir > 0 ? "start" : "end");
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"%s\" "
                "text-anchor=\"%s\">c%" JSON_INTEGER_FORMAT " %s</text></g>\n",
                tx, yy - 3, color, anchor, cid, label);
        free(label);
    }
    fputs("</svg></div>\n", f);
    free(y);
    free(rows);
}

/* --- scenarios ------------------------------------------------------------ */

static int has_frame(const struct frame_ids *fi, json_int_t frame)
{
    for (size_t i = 0; i < fi->n; i++)
        if (fi->v[i] == frame)
            return 1;
    return 0;
}

static void pcap_link(FILE *f, const char *prefix, const char *pcap)
{
    fputs("<a href=\"", f);
    esc(f, prefix);
    esc(f, pcap);
    fputs("\">", f);
    esc(f, pcap);
    fputs("</a>", f);
}

static void scenario(FILE *f, size_t idx, const json_t *sc, const char *prefix)
{
    const char *v = verdict_str(sc);
    fprintf(f, "<section class=\"scenario s-%s\" id=\"sc-%zu\">\n<h2>", v, idx);
    badge(f, v);
    fputs(" <code>", f);
    esc(f, sget(sc, "id"));
    fputs("</code></h2>\n<p>", f);
    esc(f, sdef(sc, "title", ""));
    fputs("</p>\n<table class=\"facts\">", f);
    size_t i;
    json_t *x;
    fputs("<tr><th>Sources</th><td>", f);
    int any = 0;
    json_array_foreach(json_object_get(sc, "kb"), i, x)
    {
        fputs(any++ ? ", " : "", f);
        const char *a = json_string_value(x);
        if (a && strncmp(a, "CVE-", 4))
            fputs("KB ", f);
        esc(f, a);
    }
    json_array_foreach(json_object_get(sc, "rfc"), i, x)
    {
        fputs(any++ ? ", " : "", f);
        fputs("RFC ", f);
        esc(f, json_string_value(x));
    }
    if (!any)
        fputs("none cited", f);
    fputs("</td></tr>\n<tr><th>Scenario file</th><td><code>", f);
    esc(f, sdef(sc, "path", "unknown"));
    fputs("</code></td></tr>\n<tr><th>Trace</th><td>", f);
    const char *pcap = sget(sc, "pcap");
    if (pcap) {
        pcap_link(f, prefix, pcap);
        size_t pl = strlen(pcap);
        if (pl > 5 && strcmp(pcap + pl - 5, ".pcap") == 0) {
            char *meta = fg_asprintf("%.*s.meta.json", (int)(pl - 5), pcap);
            fputs(" and its metadata ", f);
            pcap_link(f, prefix, meta);
            free(meta);
        }
        fputs(" (", f);
        esc(f, sdef(sc, "capture_mode", "no"));
        fputs(" capture)", f);
    } else {
        fputs("none", f);
    }
    const json_t *gw = json_object_get(sc, "gateway");
    fputs("</td></tr>\n<tr><th>Gateway</th><td>", f);
    esc(f, sdef(gw, "name", "unknown"));
    if (sget(gw, "version")) {
        fputs(" (", f);
        esc(f, sget(gw, "version"));
        fputs(")", f);
    }
    json_t *run = json_object_get(gw, "running_at_end");
    if (json_is_true(run))
        fputs("; running at the end of the scenario", f);
    else if (json_is_false(run))
        fprintf(f,
                "; <strong>not running at the end</strong> (exit status %" JSON_INTEGER_FORMAT
                ", signal %" JSON_INTEGER_FORMAT ")",
                json_integer_value(json_object_get(gw, "exit_status")),
                json_integer_value(json_object_get(gw, "term_signal")));
    fprintf(f, "</td></tr>\n<tr><th>Duration</th><td>%.1f s</td></tr>\n",
            nget(sc, "duration_ms") / 1000.0);
    if (sget(sc, "error")) {
        fputs("<tr><th>Error</th><td>", f);
        esc(f, sget(sc, "error"));
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);

    /* The ladder first (it sets the frame anchors), shown after the
     * expectations: write it to memory. */
    struct frame_ids anchors = {0};
    char *lbuf;
    size_t llen;
    FILE *lf = open_memstream(&lbuf, &llen);
    ladder(lf, idx, sc, &anchors);
    fclose(lf);

    const json_t *ex = json_object_get(sc, "expectations");
    if (json_array_size(ex)) {
        fputs("<h3>Expectations</h3>\n<table class=\"expect\"><tr><th>verdict</th><th>rule</th>"
              "<th>source</th><th>finding and evidence</th><th>frames</th></tr>\n",
              f);
        json_array_foreach(ex, i, x)
        {
            fputs("<tr><td>", f);
            badge(f, verdict_str(x));
            fputs("</td><td><code>", f);
            esc(f, sget(x, "rule"));
            fputs("</code></td><td>", f);
            esc(f, sget(x, "source"));
            fputs("</td><td><strong>", f);
            esc(f, sget(x, "summary"));
            fputs("</strong>", f);
            if (sget(x, "evidence") && *sget(x, "evidence")) {
                fputs("<pre class=\"ev\">", f);
                esc(f, sget(x, "evidence"));
                fputs("</pre>", f);
            }
            fputs("</td><td>", f);
            size_t k;
            json_t *fr;
            json_array_foreach(json_object_get(x, "frames"), k, fr)
            {
                json_int_t n = json_integer_value(fr);
                if (k)
                    fputs(" ", f);
                if (has_frame(&anchors, n))
                    fprintf(f,
                            "<a class=\"frame\" href=\"#sc-%zu-f%" JSON_INTEGER_FORMAT
                            "\">%" JSON_INTEGER_FORMAT "</a>",
                            idx, n, n);
                else
                    fprintf(f, "%" JSON_INTEGER_FORMAT, n);
            }
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    const json_t *decs = json_object_get(sc, "decisions");
    if (json_array_size(decs)) {
        fputs(
            "<h3>Fault decisions</h3>\n<table class=\"decisions\"><tr><th>t (s, run)</th>"
            "<th>fault</th><th>connection at the proxy</th><th>trigger</th><th>action</th></tr>\n",
            f);
        json_array_foreach(decs, i, x)
        {
            fprintf(f,
                    "<tr><td class=\"n\">%.3f</td><td class=\"n\">%" JSON_INTEGER_FORMAT
                    "</td><td class=\"n\">#%" JSON_INTEGER_FORMAT "</td><td>",
                    nget(x, "t"), json_integer_value(json_object_get(x, "fault")) + 1,
                    json_integer_value(json_object_get(x, "conn")));
            esc(f, sget(x, "trigger"));
            fputs("</td><td>", f);
            esc(f, sget(x, "action"));
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    fputs("<h3>Ladder</h3>\n<p class=\"muted\">Every connection in the trace, both legs; "
          "time runs down (left: seconds since the first frame, and the frame number); "
          "<span style=\"color:#cf222e\">\xE2\x9A\xA1 red marks</span> are the faults the proxy "
          "injected; cN is the connection's number in the trace.</p>\n",
          f);
    fwrite(lbuf, 1, llen, f);
    free(lbuf);
    free(anchors.v);
    fputs("</section>\n", f);
}

/* --- the document --------------------------------------------------------- */

int fg_report_html_write(const char *path, const json_t *doc, const char *pcap_prefix, char *err,
                         size_t errlen)
{
    char *tmp;
    FILE *f = fg_results_open(path, &tmp, err, errlen);
    if (!f)
        return FG_EINPUT;
    const char *prefix = pcap_prefix ? pcap_prefix : "";
    const json_t *sa = json_object_get(doc, "scenarios");
    const char *verdict = sdef(doc, "verdict", "skip");
    const char *gwname = sget(json_object_get(doc, "profile"), "name");

    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta name=\"generator\" content=\"faultgate ",
          f);
    esc(f, FG_VERSION);
    fputs("\">\n<title>faultgate report: ", f);
    esc(f, gwname ? gwname : "gateway");
    fprintf(f, " \xE2\x80\x94 %s</title>\n<style>\n%s</style>\n</head>\n<body>\n", verdict, css);
    fputs("<header>\n<h1>faultgate qualification report</h1>\n<p class=\"headline\" "
          "id=\"headline\">",
          f);
    badge(f, verdict);
    fputs(" <strong>", f);
    esc(f, gwname ? gwname : "gateway");
    fputs("</strong>: ", f);
    counts_text(f, json_object_get(doc, "counts"));
    fprintf(f, " of %zu scenario(s).</p>\n", json_array_size(sa));
    fputs("<nav class=\"noprint\"><a href=\"#environment\">Environment</a> \xC2\xB7 "
          "<a href=\"#matrix\">Verdict matrix</a> \xC2\xB7 <a href=\"#scenarios\">Scenarios</a>"
          "</nav>\n</header>\n",
          f);
    environment(f, doc);
    matrix(f, doc);

    fputs("<h2 id=\"scenarios\">Scenarios</h2>\n<table class=\"index\"><tr><th>verdict</th>"
          "<th>scenario</th><th>title</th><th>group</th><th>duration</th><th>trace</th></tr>\n",
          f);
    size_t i;
    json_t *sc;
    json_array_foreach(sa, i, sc)
    {
        fputs("<tr><td>", f);
        badge(f, verdict_str(sc));
        fprintf(f, "</td><td><a href=\"#sc-%zu\"><code>", i);
        esc(f, sget(sc, "id"));
        fputs("</code></a></td><td>", f);
        esc(f, sdef(sc, "title", ""));
        fputs("</td><td>", f);
        esc(f, sdef(sc, "group", ""));
        char b[32];
        fmt_secs(b, sizeof b, nget(sc, "duration_ms") / 1000.0);
        fprintf(f, "</td><td class=\"n\">%s</td><td>", b);
        if (sget(sc, "pcap"))
            pcap_link(f, prefix, sget(sc, "pcap"));
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    json_array_foreach(sa, i, sc)
    {
        scenario(f, i, sc, prefix);
    }
    fputs("<footer class=\"muted\"><p>Written by faultgate ", f);
    esc(f, FG_VERSION);
    fputs(" from results.json (schema ", f);
    esc(f, sdef(doc, "schema_version", "?"));
    fputs("). Verdicts come from the traces alone; each pcap opens in Wireshark, and "
          "<code>faultgate judge</code> on it gives the same verdicts.</p></footer>\n"
          "</body>\n</html>\n",
          f);
    return fg_results_close(f, path, tmp, err, errlen);
}
