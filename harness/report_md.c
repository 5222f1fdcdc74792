/* report_md.c - summary.md: the run in a few lines of Markdown for a CI job
 * summary ($GITHUB_STEP_SUMMARY) or a pull-request comment: the verdict and
 * counts, the gateway and seed, a table of scenarios, and for each one that
 * did not pass the failing expectations with their first evidence lines and
 * frames.  Drawn from the results document alone, like report.html.
 *
 * Bounded: CI systems cap a summary's size (GitHub: 1 MiB), so details are
 * given for the first MAX_DETAILS scenarios that did not pass and the
 * table lists at most MAX_ROWS scenarios, the ones that did not pass first.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

#define MAX_ROWS 200
#define MAX_DETAILS 30
#define EVIDENCE_LINES 6

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Markdown table cell / inline text: no line breaks, pipes and markup
 * characters escaped so that wire text cannot break the table. */
static void md(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\r' || c == '\n' || c == '\t')
            fputc(' ', f);
        else if (strchr("|\\`*_[]<>#", c))
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            fputs("\xEF\xBF\xBD", f);
        else
            fputc(c, f);
    }
}

static const char *icon(const char *v)
{
    if (!v)
        return "";
    if (strcmp(v, "pass") == 0)
        return "\xE2\x9C\x85"; /* check mark */
    if (strcmp(v, "fail") == 0)
        return "\xE2\x9D\x8C"; /* cross */
    if (strcmp(v, "inconc") == 0)
        return "\xE2\x9A\xA0\xEF\xB8\x8F"; /* warning */
    if (strcmp(v, "error") == 0)
        return "\xF0\x9F\x92\xA5";     /* collision */
    return "\xE2\x8F\xAD\xEF\xB8\x8F"; /* skip */
}

static int bad(const char *v)
{
    return v && strcmp(v, "pass") != 0 && strcmp(v, "skip") != 0;
}

static json_int_t cnt(const json_t *doc, const char *k)
{
    return json_integer_value(json_object_get(json_object_get(doc, "counts"), k));
}

static void row(FILE *f, const json_t *sc)
{
    const char *v = sget(sc, "verdict");
    fprintf(f, "| %s %s | `", icon(v), v ? v : "?");
    md(f, sget(sc, "id"));
    fputs("` | ", f);
    md(f, sget(sc, "title"));
    fprintf(f, " | %.1f s |\n",
            (double)json_integer_value(json_object_get(sc, "duration_ms")) / 1000.0);
}

/* Evidence in a fenced block: a fence longer than any backtick run in it. */
static void evidence(FILE *f, const char *ev)
{
    size_t run = 0, longest = 0;
    for (const char *p = ev; *p; p++) {
        run = *p == '`' ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    size_t fence = longest < 3 ? 3 : longest + 1;
    fputs("\n", f);
    for (size_t i = 0; i < fence; i++)
        fputc('`', f);
    fputc('\n', f);
    int lines = 0;
    const char *p = ev;
    while (*p && lines < EVIDENCE_LINES) {
        size_t l = strcspn(p, "\n");
        fwrite(p, 1, l, f);
        fputc('\n', f);
        lines++;
        p += l;
        if (*p == '\n')
            p++;
    }
    if (*p)
        fputs("...\n", f);
    for (size_t i = 0; i < fence; i++)
        fputc('`', f);
    fputs("\n", f);
}

static void details(FILE *f, const json_t *sc)
{
    const char *v = sget(sc, "verdict");
    fprintf(f, "\n#### %s `", icon(v));
    md(f, sget(sc, "id"));
    fprintf(f, "` \xE2\x80\x94 %s\n\n", v ? v : "?");
    if (sget(sc, "error")) {
        fputs("- **error**: ", f);
        md(f, sget(sc, "error"));
        fputs("\n", f);
    }
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(sc, "expectations"), i, o)
    {
        const char *ov = sget(o, "verdict");
        if (!bad(ov))
            continue;
        fprintf(f, "- **%s** `", ov);
        md(f, sget(o, "rule"));
        fputs("` (", f);
        md(f, sget(o, "source"));
        fputs("): ", f);
        md(f, sget(o, "summary"));
        json_t *fr = json_object_get(o, "frames");
        if (json_array_size(fr)) {
            fputs(" \xE2\x80\x94 frames", f);
            size_t k;
            json_t *x;
            json_array_foreach(fr, k, x)
            {
                fprintf(f, " %" JSON_INTEGER_FORMAT, json_integer_value(x));
            }
            if (sget(sc, "pcap")) {
                fputs(" of `", f);
                md(f, sget(sc, "pcap"));
                fputs("`", f);
            }
        }
        fputs("\n", f);
        if (sget(o, "evidence") && *sget(o, "evidence"))
            evidence(f, sget(o, "evidence"));
    }
}

int fg_report_md_write(const char *path, const json_t *doc, char *err, size_t errlen)
{
    char *tmp;
    FILE *f = fg_results_open(path, &tmp, err, errlen);
    if (!f)
        return FG_EINPUT;
    const json_t *sa = json_object_get(doc, "scenarios");
    const char *verdict = sget(doc, "verdict");
    const json_t *prof = json_object_get(doc, "profile");
    const char *gw = sget(prof, "name");
    const char *ver = NULL;
    size_t i;
    json_t *sc;
    json_array_foreach(sa, i, sc)
    {
        if (!ver)
            ver = sget(json_object_get(sc, "gateway"), "version");
    }
    fprintf(f, "## %s faultgate: %s against ", icon(verdict), verdict ? verdict : "?");
    md(f, gw ? gw : "the gateway");
    fprintf(f,
            "\n\n**%" JSON_INTEGER_FORMAT " passed**, %" JSON_INTEGER_FORMAT
            " failed, %" JSON_INTEGER_FORMAT " inconclusive, %" JSON_INTEGER_FORMAT
            " errors, %" JSON_INTEGER_FORMAT " skipped (%zu scenarios).\n\n",
            cnt(doc, "pass"), cnt(doc, "fail"), cnt(doc, "inconc"), cnt(doc, "error"),
            cnt(doc, "skip"), json_array_size(sa));
    fputs("Gateway: ", f);
    md(f, gw ? gw : "unknown");
    if (ver) {
        fputs(" (", f);
        md(f, ver);
        fputs(")", f);
    }
    json_t *seed = json_object_get(doc, "seed");
    if (json_is_integer(seed))
        fprintf(f, " \xC2\xB7 seed %" JSON_INTEGER_FORMAT, json_integer_value(seed));
    else if (json_is_string(seed))
        fprintf(f, " \xC2\xB7 seed %s", json_string_value(seed));
    fputs(" \xC2\xB7 faultgate ", f);
    md(f, sget(doc, "faultgate_version"));
    size_t nshards = json_array_size(json_object_get(doc, "shards"));
    if (nshards)
        fprintf(f, " \xC2\xB7 merged from %zu shards", nshards);
    fputs(" \xC2\xB7 run ", f);
    md(f, sget(doc, "run_id"));
    fputs("\n\n| verdict | scenario | title | duration |\n| --- | --- | --- | --- |\n", f);
    /* Those that did not pass first, then the rest, in run order. */
    size_t shown = 0;
    for (int pass = 0; pass < 2; pass++)
        json_array_foreach(sa, i, sc)
        {
            if (bad(sget(sc, "verdict")) == (pass == 0) && shown < MAX_ROWS) {
                row(f, sc);
                shown++;
            }
        }
    if (shown < json_array_size(sa))
        fprintf(f, "\n%zu more scenarios: see report.html.\n", json_array_size(sa) - shown);

    size_t nd = 0;
    json_array_foreach(sa, i, sc)
    {
        if (!bad(sget(sc, "verdict")))
            continue;
        if (nd == 0)
            fputs("\n### What did not pass\n", f);
        if (nd++ == MAX_DETAILS) {
            fputs("\nMore in report.html and junit.xml.\n", f);
            break;
        }
        details(f, sc);
    }
    fputs("\nFull report: `report.html` (ladder diagrams, evidence, pcaps); JUnit: "
          "`junit.xml`.\n",
          f);
    return fg_results_close(f, path, tmp, err, errlen);
}

int fg_report_status(const json_t *doc)
{
    int status = 0;
    size_t i;
    json_t *sc;
    json_array_foreach(json_object_get(doc, "scenarios"), i, sc)
    {
        const char *v = sget(sc, "verdict");
        if (!v || strcmp(v, "error") == 0)
            return 2;
        if (strcmp(v, "fail") == 0 || strcmp(v, "inconc") == 0)
            status = 1;
    }
    return status;
}

int fg_report_write_all(const char *dir, const json_t *doc, char *err, size_t errlen)
{
    char *html = fg_asprintf("%s/report.html", dir);
    char *mdp = fg_asprintf("%s/summary.md", dir);
    int rc = fg_report_html_write(html, doc, "", err, errlen);
    if (rc >= 0)
        rc = fg_report_md_write(mdp, doc, err, errlen);
    free(html);
    free(mdp);
    return rc;
}

int fg_report_write_dir(const char *dir, char *err, size_t errlen)
{
    char *p = fg_asprintf("%s/results.json", dir);
    json_t *doc = NULL;
    int rc = fg_results_doc_read(p, &doc, err, errlen);
    free(p);
    if (rc == 0)
        rc = fg_report_write_all(dir, doc, err, errlen);
    json_decref(doc);
    return rc;
}
