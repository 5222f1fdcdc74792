/* check_results.c - results.json and junit.xml: written for a few results
 * (judged from a synthesized trace, an error, a skip), read back with
 * jansson, checked against the required keys of
 * reports/results.schema.json, and, when the tools are installed, validated
 * with python3's jsonschema and xmllint; junit.xml against
 * reports/junit.xsd.  The reports drawn from the results document
 * (report.html, summary.md) and the merge of shards, with its refusals.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/judge.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/util.h"

#define GW_PORT 2525

static char dir[256];

static void deadline_cb(uv_timer_t *t)
{
    ck_abort_msg("deadline passed");
}

/* A trace of one inbound connection whose greeting holds markup, control
 * characters and a byte that is not UTF-8. */
static void write_trace(const char *path, uint64_t *open_us)
{
    uv_loop_t loop;
    uv_timer_t deadline;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &deadline);
    uv_timer_start(&deadline, deadline_cb, 10000, 0);
    struct fg_capture *cap = NULL;
    ck_assert_msg(fg_capture_open(&loop, FG_CAPTURE_SYNTH, path, NULL, 0, &cap, err, sizeof err) ==
                      0,
                  "%s", err);
    struct sockaddr_in cl, sv;
    uv_ip4_addr("127.0.0.1", 40001, &cl);
    uv_ip4_addr("127.0.0.1", GW_PORT, &sv);
    *open_us = fg_wall_us();
    struct fg_synth_conn *sc =
        fg_capture_conn_open(cap, (struct sockaddr *)&cl, (struct sockaddr *)&sv);
    const char *greet = "220 <gw> & \"q\" 'x' \x01\xff ready\r\n";
    fg_capture_conn_data(sc, FG_S2C, greet, strlen(greet));
    fg_capture_conn_data(sc, FG_C2S, "QUIT\r\n", 6);
    fg_capture_conn_data(sc, FG_S2C, "221 bye\r\n", 9);
    fg_capture_conn_fin(sc, FG_C2S);
    fg_capture_conn_fin(sc, FG_S2C);
    fg_capture_conn_free(sc);
    ck_assert_int_eq(fg_capture_close(cap), 0);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}

static char *kb_list[] = {"Q197142"};
static char *rfc_list[] = {"5321 4.5.3.2"};

/* Three results: judged (inconc: no stall fired; alive passes), error, skip. */
static void make_results(struct fg_scenario_result r[3], uint64_t *t_open)
{
    char pcap[300];
    snprintf(pcap, sizeof pcap, "%s/kb-alive.pcap", dir);
    write_trace(pcap, t_open);

    struct fg_expect_spec e[2] = {{0}, {0}};
    e[0].rule = "gateway-alive";
    e[1].rule = "closes-after-stall";
    e[1].within = "5s";
    struct fg_scenario sc = {0};
    sc.path = "scenarios/kb/kb-alive.yaml";
    sc.id = "kb-alive";
    sc.title = "The gateway <still> answers & greets";
    sc.kb = kb_list;
    sc.nkb = 1;
    sc.rfc = rfc_list;
    sc.nrfc = 1;
    sc.expects = e;
    sc.nexpects = 2;

    struct fg_meta *m = fg_calloc(1, sizeof *m);
    m->scenario_id = fg_strdup("kb-alive");
    m->capture_mode = fg_strdup("synth");
    m->pcap = fg_strdup("kb-alive.pcap");
    m->profile_name = fg_strdup("refgw");
    m->gateway_version = fg_strdup("0.1.0");
    m->gateway_port = GW_PORT;
    m->proxy_port = 39001;
    m->mta_port = 39002;
    m->start_us = *t_open - 2000000;
    m->end_us = *t_open + 1000000;
    m->probe_start_us = *t_open - 1;
    m->gateway_running_at_end = 1;
    m->ndecisions = 1;
    m->decisions = fg_calloc(1, sizeof *m->decisions);
    m->decisions[0].t_us = m->start_us + 1500000;
    m->decisions[0].conn = 1;
    snprintf(m->decisions[0].trigger, sizeof m->decisions[0].trigger, "command EHLO");
    snprintf(m->decisions[0].action, sizeof m->decisions[0].action, "delay 1s");
    fg_judge(&sc, m, pcap, &r[0]);
    ck_assert_msg(r[0].tl != NULL, "%s", r[0].error ? r[0].error : "?");

    struct fg_scenario se = {0};
    se.path = "scenarios/kb/kb-broken.yaml";
    se.id = "kb-broken";
    se.title = "broken";
    fg_scenario_result_init(&r[1], &se);
    r[1].verdict = FG_V_ERROR;
    r[1].error = fg_strdup("trace could not be read: <bad> & \"worse\"");
    r[1].duration_ms = 1234;

    struct fg_scenario ss = {0};
    ss.path = "scenarios/rfc5321/r-skip.yaml";
    ss.id = "r-skip";
    ss.title = "not for this profile";
    fg_scenario_result_init(&r[2], &ss);
    r[2].verdict = FG_V_SKIP;
}

static const struct fg_run_info run_info = {
    .run_id = "20240101-000000-abcd",
    .faultgate_version = "0.1.0",
    .profile_path = "scenarios/gateways/refgw.yaml",
    .profile_name = "refgw",
    .seed = 42,
    .start_us = 1700000000000000ull,
    .end_us = 1700000060500000ull,
    .host = "ci-host",
};

/* Every key the schema's object lists as required is present in obj, for
 * the top level, scenarios, expectations, connections and events. */
static void check_required(json_t *schema_obj, json_t *obj, const char *where)
{
    json_t *req = json_object_get(schema_obj, "required");
    size_t i;
    json_t *k;
    ck_assert_msg(json_is_array(req), "schema for %s lists no required keys", where);
    json_array_foreach(req, i, k)
    {
        ck_assert_msg(json_object_get(obj, json_string_value(k)) != NULL, "%s lacks \"%s\"", where,
                      json_string_value(k));
    }
    /* and nothing the schema does not describe */
    json_t *props = json_object_get(schema_obj, "properties");
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        ck_assert_msg(json_object_get(props, key) != NULL, "%s has undocumented key \"%s\"", where,
                      key);
    }
}

static json_t *def(json_t *schema, const char *name)
{
    json_t *d = json_object_get(json_object_get(schema, "$defs"), name);
    ck_assert_msg(d != NULL, "schema has no $defs/%s", name);
    return d;
}

static int have_tool(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

START_TEST(json_written_and_read_back)
{
    struct fg_scenario_result r[3];
    uint64_t t_open;
    make_results(r, &t_open);
    char path[300], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "%s/results.json", dir);
    ck_assert_msg(fg_results_write_json(path, &run_info, r, 3, err, sizeof err) == 0, "%s", err);

    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    ck_assert_msg(o != NULL, "%s:%d: %s", path, je.line, je.text);
    ck_assert_str_eq(json_string_value(json_object_get(o, "schema_version")),
                     FG_RESULTS_SCHEMA_VERSION);
    ck_assert_str_eq(json_string_value(json_object_get(o, "run_id")), run_info.run_id);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "seed")), 42);
    ck_assert_str_eq(json_string_value(json_object_get(o, "start")), "2023-11-14T22:13:20.000000Z");
    ck_assert_str_eq(json_string_value(json_object_get(o, "verdict")), "error");
    json_t *c = json_object_get(o, "counts");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "pass")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "inconc")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "error")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "skip")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "fail")), 0);

    json_t *sa = json_object_get(o, "scenarios");
    ck_assert_uint_eq(json_array_size(sa), 3);
    json_t *s0 = json_array_get(sa, 0);
    ck_assert_str_eq(json_string_value(json_object_get(s0, "id")), "kb-alive");
    ck_assert_str_eq(json_string_value(json_object_get(s0, "verdict")), "inconc");
    ck_assert_str_eq(json_string_value(json_object_get(s0, "group")), "kb");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(s0, "kb"), 0)), "Q197142");
    ck_assert_str_eq(json_string_value(json_object_get(s0, "capture_mode")), "synth");
    ck_assert_str_eq(json_string_value(json_object_get(s0, "pcap")), "kb-alive.pcap");
    ck_assert_int_eq(json_integer_value(json_object_get(s0, "duration_ms")), 3000);
    json_t *gw = json_object_get(s0, "gateway");
    ck_assert_str_eq(json_string_value(json_object_get(gw, "name")), "refgw");
    ck_assert(json_is_true(json_object_get(gw, "running_at_end")));
    json_t *d0 = json_array_get(json_object_get(s0, "decisions"), 0);
    ck_assert_double_eq_tol(json_real_value(json_object_get(d0, "t")), 1.5, 1e-9);
    ck_assert_str_eq(json_string_value(json_object_get(d0, "trigger")), "command EHLO");

    json_t *ex = json_object_get(s0, "expectations");
    ck_assert_uint_eq(json_array_size(ex), 2);
    json_t *e0 = json_array_get(ex, 0), *e1 = json_array_get(ex, 1);
    ck_assert_str_eq(json_string_value(json_object_get(e0, "rule")), "gateway-alive");
    ck_assert_str_eq(json_string_value(json_object_get(e0, "verdict")), "pass");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e0, "source")), "Q197142"));
    ck_assert(json_is_integer(json_object_get(e0, "conn")));
    ck_assert_uint_ge(json_array_size(json_object_get(e0, "frames")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(e1, "verdict")), "inconc");

    json_t *cs = json_object_get(s0, "connections");
    ck_assert_uint_eq(json_array_size(cs), 1);
    json_t *c0 = json_array_get(cs, 0);
    ck_assert_str_eq(json_string_value(json_object_get(c0, "leg")), "inbound");
    ck_assert_str_eq(json_string_value(json_object_get(c0, "client")), "127.0.0.1:40001");
    ck_assert_str_eq(json_string_value(json_object_get(c0, "server")), "127.0.0.1:2525");
    json_t *evs = json_object_get(c0, "events");
    size_t i;
    json_t *ev;
    int saw_greeting = 0, saw_quit = 0;
    json_array_foreach(evs, i, ev)
    {
        const char *kind = json_string_value(json_object_get(ev, "kind"));
        const char *d = json_string_value(json_object_get(ev, "dir"));
        ck_assert(d && (strcmp(d, "c2s") == 0 || strcmp(d, "s2c") == 0));
        ck_assert(json_real_value(json_object_get(ev, "t")) >= 0);
        if (json_integer_value(json_object_get(ev, "code")) == 220) {
            saw_greeting = 1;
            ck_assert_str_eq(d, "s2c");
            /* the non-UTF-8 byte became U+FFFD, the rest is intact */
            ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(ev, "text")),
                                         "<gw> & \"q\" 'x' \x01\xEF\xBF\xBD ready"));
        }
        const char *verb = json_string_value(json_object_get(ev, "verb"));
        if (kind && verb && strcmp(verb, "QUIT") == 0 && strcmp(d, "c2s") == 0)
            saw_quit = 1;
    }
    ck_assert(saw_greeting);
    ck_assert(saw_quit);

    json_t *s1 = json_array_get(sa, 1), *s2 = json_array_get(sa, 2);
    ck_assert_str_eq(json_string_value(json_object_get(s1, "verdict")), "error");
    ck_assert_str_eq(json_string_value(json_object_get(s1, "error")),
                     "trace could not be read: <bad> & \"worse\"");
    ck_assert(json_is_null(json_object_get(json_object_get(s1, "gateway"), "running_at_end")));
    ck_assert_str_eq(json_string_value(json_object_get(s2, "verdict")), "skip");
    ck_assert_str_eq(json_string_value(json_object_get(s2, "group")), "rfc5321");

    /* The schema's required keys, checked here in C. */
    char spath[512];
    const char *root = getenv("FG_SOURCE_ROOT");
    snprintf(spath, sizeof spath, "%s/reports/results.schema.json", root ? root : "..");
    json_t *schema = json_load_file(spath, 0, &je);
    ck_assert_msg(schema != NULL, "%s:%d: %s", spath, je.line, je.text);
    check_required(schema, o, "results");
    check_required(json_object_get(json_object_get(schema, "properties"), "counts"), c, "counts");
    json_array_foreach(sa, i, ev)
    {
        check_required(def(schema, "scenario"), ev, "scenario");
        check_required(def(schema, "gateway"), json_object_get(ev, "gateway"), "gateway");
    }
    check_required(def(schema, "decision"), d0, "decision");
    check_required(def(schema, "expectation"), e0, "expectation");
    check_required(def(schema, "connection"), c0, "connection");
    json_array_foreach(evs, i, ev)
    {
        check_required(def(schema, "event"), ev, "event");
    }
    json_decref(schema);

    /* The full schema, when python3 has jsonschema. */
    if (have_tool("python3 -c 'import jsonschema' >/dev/null 2>&1")) {
        char *cmd =
            fg_asprintf("python3 -c 'import json,sys,jsonschema; s=json.load(open(sys.argv[1])); "
                        "jsonschema.validators.validator_for(s).check_schema(s); "
                        "jsonschema.validate(json.load(open(sys.argv[2])), s)' '%s' '%s'",
                        spath, path);
        ck_assert_msg(have_tool(cmd), "results.json does not validate against the schema");
        free(cmd);
    } else {
        fprintf(stderr, "check_results: python3 jsonschema not available, schema check skipped\n");
    }

    json_decref(o);
    for (size_t k = 0; k < 3; k++)
        fg_scenario_result_clear(&r[k]);
    if (!getenv("FG_TEST_KEEP"))
        unlink(path);
}
END_TEST

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = fg_malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

START_TEST(junit_written)
{
    struct fg_scenario_result r[3];
    uint64_t t_open;
    make_results(r, &t_open);
    char path[300], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "%s/junit.xml", dir);
    ck_assert_msg(fg_results_write_junit(path, &run_info, r, 3, err, sizeof err) == 0, "%s", err);
    char *x = slurp(path);
    ck_assert_ptr_nonnull(strstr(x, "<testsuites name=\"faultgate\" tests=\"3\" failures=\"1\" "
                                    "errors=\"1\" skipped=\"1\""));
    ck_assert_ptr_nonnull(strstr(x, "<testsuite name=\"kb\" tests=\"2\" failures=\"1\" "
                                    "errors=\"1\" skipped=\"0\""));
    ck_assert_ptr_nonnull(strstr(x, "<testsuite name=\"rfc5321\" tests=\"1\""));
    ck_assert_ptr_nonnull(strstr(x, "<property name=\"seed\" value=\"42\"/>"));
    ck_assert_ptr_nonnull(strstr(x, "<property name=\"gateway\" value=\"refgw 0.1.0\"/>"));
    ck_assert_ptr_nonnull(strstr(x, "<property name=\"capture_mode\" value=\"synth\"/>"));
    ck_assert_ptr_nonnull(
        strstr(x, "<testcase classname=\"faultgate.kb\" name=\"kb-alive\" time=\"3.000\""));
    ck_assert_ptr_nonnull(strstr(x, "<failure message=\"no stall fault fired"));
    ck_assert_ptr_nonnull(strstr(x, "type=\"inconc\""));
    ck_assert_ptr_nonnull(strstr(
        x, "<error message=\"trace could not be read: &lt;bad&gt; &amp; &quot;worse&quot;\""));
    ck_assert_ptr_nonnull(strstr(x, "classname=\"faultgate.rfc5321\" name=\"r-skip\""));
    ck_assert_ptr_nonnull(strstr(x, "<skipped/>"));
    /* no raw control character or invalid byte reaches the file */
    for (const unsigned char *p = (const unsigned char *)x; *p; p++)
        ck_assert_msg(*p >= 0x20 || *p == '\n' || *p == '\t', "control byte 0x%02x", *p);
    free(x);
    if (have_tool("command -v xmllint >/dev/null 2>&1")) {
        char *cmd = fg_asprintf("xmllint --noout '%s'", path);
        ck_assert_msg(have_tool(cmd), "xmllint rejects junit.xml");
        free(cmd);
    } else {
        fprintf(stderr, "check_results: xmllint not available, XML check skipped\n");
    }
    for (size_t k = 0; k < 3; k++)
        fg_scenario_result_clear(&r[k]);
    if (!getenv("FG_TEST_KEEP"))
        unlink(path);
}
END_TEST

START_TEST(empty_run_and_bad_path)
{
    char path[300], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "%s/empty.json", dir);
    ck_assert_int_eq(fg_results_write_json(path, &run_info, NULL, 0, err, sizeof err), 0);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(o, "verdict")), "skip");
    ck_assert_uint_eq(json_array_size(json_object_get(o, "scenarios")), 0);
    json_decref(o);
    if (!getenv("FG_TEST_KEEP"))
        unlink(path);
    err[0] = '\0';
    ck_assert_int_ne(
        fg_results_write_junit("/nonexistent/dir/junit.xml", &run_info, NULL, 0, err, sizeof err),
        0);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/dir/junit.xml"));
}
END_TEST

static char *source_file(const char *rel)
{
    const char *root = getenv("FG_SOURCE_ROOT");
    return fg_asprintf("%s/%s", root ? root : "..", rel);
}

static void clear3(struct fg_scenario_result r[3])
{
    for (size_t k = 0; k < 3; k++)
        fg_scenario_result_clear(&r[k]);
}

START_TEST(junit_validates_against_xsd)
{
    ck_assert_msg(have_tool("command -v xmllint >/dev/null 2>&1"),
                  "xmllint is needed (ci/packages.txt: libxml2-utils)");
    struct fg_scenario_result r[3];
    uint64_t t_open;
    make_results(r, &t_open);
    char path[300], err[FG_ERRBUF_SIZE];
    snprintf(path, sizeof path, "%s/junit-xsd.xml", dir);
    ck_assert_msg(fg_results_write_junit(path, &run_info, r, 3, err, sizeof err) == 0, "%s", err);
    char *xsd = source_file("reports/junit.xsd");
    char *cmd = fg_asprintf("xmllint --noout --schema '%s' '%s'", xsd, path);
    ck_assert_msg(have_tool(cmd), "junit.xml does not validate against %s", xsd);
    free(cmd);
    /* and the schema can fail: a testcase without its classname */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/junit-bad.xml", dir);
    FILE *f = fopen(bad, "w");
    ck_assert_ptr_nonnull(f);
    fputs("<testsuites><testsuite name=\"x\" tests=\"1\" failures=\"0\" errors=\"0\">"
          "<testcase name=\"y\" time=\"1.0\"/></testsuite></testsuites>\n",
          f);
    fclose(f);
    cmd = fg_asprintf("xmllint --noout --schema '%s' '%s' 2>/dev/null", xsd, bad);
    ck_assert_msg(!have_tool(cmd), "the XSD accepts a testcase without classname");
    free(cmd);
    free(xsd);
    unlink(bad);
    unlink(path);
    clear3(r);
}
END_TEST

START_TEST(html_and_summary_from_document)
{
    struct fg_scenario_result r[3];
    uint64_t t_open;
    make_results(r, &t_open);
    char err[FG_ERRBUF_SIZE];
    json_t *doc = fg_results_doc(&run_info, r, 3);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "verdict")), "error");
    char *html = fg_asprintf("%s/report.html", dir);
    ck_assert_msg(fg_report_html_write(html, doc, "", err, sizeof err) == 0, "%s", err);
    char *x = slurp(html);
    /* self-contained: no script and nothing fetched */
    ck_assert_ptr_null(strstr(x, "<script"));
    ck_assert_ptr_null(strstr(x, "src=\"http"));
    ck_assert_ptr_null(strstr(x, "<link"));
    ck_assert_ptr_nonnull(strstr(x, "@media print"));
    /* environment */
    ck_assert_ptr_nonnull(strstr(x, "<th>Seed</th><td>42</td>"));
    ck_assert_ptr_nonnull(strstr(x, "refgw (0.1.0)"));
    ck_assert_ptr_nonnull(strstr(x, "<th>Host</th><td>ci-host</td>"));
    ck_assert_ptr_nonnull(strstr(x, "synth"));
    /* the matrix by KB article, RFC area and the group of the rest */
    ck_assert_ptr_nonnull(strstr(x, "<th>KB Q197142</th>"));
    ck_assert_ptr_nonnull(strstr(x, "RFC 5321 \xC2\xA7"
                                    "4.5"));
    ck_assert_ptr_nonnull(strstr(x, "<th>rfc5321</th>"));
    /* the title's markup is text, not markup */
    ck_assert_ptr_nonnull(strstr(x, "The gateway &lt;still&gt; answers &amp; greets"));
    ck_assert_ptr_null(strstr(x, "<still>"));
    ck_assert_ptr_nonnull(strstr(x, "&lt;bad&gt; &amp; &quot;worse&quot;"));
    /* the ladder: lanes, the inbound greeting, and the cited frames linked
     * to their rows */
    ck_assert_ptr_nonnull(strstr(x, "<svg"));
    ck_assert_ptr_nonnull(strstr(x, "Gateway under test"));
    ck_assert_ptr_nonnull(strstr(x, "220 &lt;gw&gt; &amp;"));
    json_t *e0 = json_array_get(
        json_object_get(json_array_get(json_object_get(doc, "scenarios"), 0), "expectations"), 0);
    json_int_t fr = json_integer_value(json_array_get(json_object_get(e0, "frames"), 0));
    ck_assert_int_gt(fr, 0);
    char want[64];
    snprintf(want, sizeof want, "id=\"sc-0-f%" JSON_INTEGER_FORMAT "\"", fr);
    ck_assert_msg(strstr(x, want) != NULL, "no anchor %s", want);
    snprintf(want, sizeof want, "href=\"#sc-0-f%" JSON_INTEGER_FORMAT "\"", fr);
    ck_assert_msg(strstr(x, want) != NULL, "no link %s", want);
    /* the fault decision is placed on the trace's time axis as a marker */
    ck_assert_ptr_nonnull(strstr(x, "class=\"row fault\""));
    ck_assert_ptr_nonnull(strstr(x, "href=\"kb-alive.pcap\""));
    if (have_tool("command -v xmllint >/dev/null 2>&1")) {
        char *cmd = fg_asprintf("xmllint --html --noout '%s' 2>/dev/null", html);
        ck_assert_msg(have_tool(cmd), "xmllint cannot parse report.html");
        free(cmd);
    }
    free(x);

    char *md = fg_asprintf("%s/summary.md", dir);
    ck_assert_msg(fg_report_md_write(md, doc, err, sizeof err) == 0, "%s", err);
    x = slurp(md);
    ck_assert_ptr_nonnull(strstr(x, "faultgate: error against refgw"));
    ck_assert_ptr_nonnull(strstr(x, "| verdict | scenario | title | duration |"));
    ck_assert_ptr_nonnull(strstr(x, "`kb-alive`"));
    ck_assert_ptr_nonnull(strstr(x, "### What did not pass"));
    /* wire text cannot open markup in the table */
    ck_assert_ptr_nonnull(strstr(x, "The gateway \\<still\\> answers"));
    /* the rows of scenarios that did not pass come first */
    ck_assert(strstr(x, "`kb-broken`") && strstr(x, "`r-skip`") &&
              strstr(x, "`kb-broken`") < strstr(x, "`r-skip`"));
    free(x);
    ck_assert_int_eq(fg_report_status(doc), 2);
    unlink(html);
    unlink(md);
    free(html);
    free(md);
    json_decref(doc);
    clear3(r);
}
END_TEST

/* Scenario ids and verdicts of a results file, and its counts, as text. */
static char *digest(const char *path)
{
    json_t *doc = NULL;
    char err[FG_ERRBUF_SIZE];
    ck_assert_msg(fg_results_doc_read(path, &doc, err, sizeof err) == 0, "%s", err);
    char *buf;
    size_t len;
    FILE *f = open_memstream(&buf, &len);
    size_t i;
    json_t *sc;
    json_array_foreach(json_object_get(doc, "scenarios"), i, sc)
    {
        fprintf(f, "%s=%s;", json_string_value(json_object_get(sc, "id")),
                json_string_value(json_object_get(sc, "verdict")));
    }
    char *c = json_dumps(json_object_get(doc, "counts"), JSON_SORT_KEYS | JSON_COMPACT);
    fprintf(f, "%s %s", c, json_string_value(json_object_get(doc, "verdict")));
    free(c);
    fclose(f);
    json_decref(doc);
    return buf;
}

/* The lines of a junit.xml but the suite headers and the run id. */
static char *junit_cases(const char *path)
{
    char *x = slurp(path);
    char *buf;
    size_t len;
    FILE *f = open_memstream(&buf, &len);
    for (char *line = strtok(x, "\n"); line; line = strtok(NULL, "\n"))
        if (!strstr(line, "<testsuite ") && !strstr(line, "run_id"))
            fprintf(f, "%s\n", line);
    fclose(f);
    free(x);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(merge_equals_unsharded)
{
    struct fg_scenario_result r[3];
    uint64_t t_open;
    make_results(r, &t_open);
    char err[FG_ERRBUF_SIZE];
    char *all = fg_asprintf("%s/all", dir), *s1 = fg_asprintf("%s/s1", dir),
         *s2 = fg_asprintf("%s/s2", dir), *out = fg_asprintf("%s/merged", dir);
    ck_assert_int_eq(fg_mkdir_p(all), 0);
    ck_assert_int_eq(fg_mkdir_p(s1), 0);
    ck_assert_int_eq(fg_mkdir_p(s2), 0);
    char *p = fg_asprintf("%s/results.json", all);
    ck_assert_int_eq(fg_results_write_json(p, &run_info, r, 3, err, sizeof err), 0);
    free(p);
    /* shard 1: the skip and the judged one; shard 2: the error.  Out of
     * order on purpose: the merge restores the run's order (by path). */
    struct fg_scenario_result a[2] = {r[2], r[0]};
    struct fg_run_info ri2 = run_info;
    ri2.run_id = "shard-2";
    ri2.host = "other-host";
    p = fg_asprintf("%s/results.json", s1);
    ck_assert_int_eq(fg_results_write_json(p, &run_info, a, 2, err, sizeof err), 0);
    free(p);
    p = fg_asprintf("%s/results.json", s2);
    ck_assert_int_eq(fg_results_write_json(p, &ri2, &r[1], 1, err, sizeof err), 0);
    free(p);
    /* the pcap is carried into the merged directory */
    char *pc = fg_asprintf("%s/kb-alive.pcap", dir), *pc1 = fg_asprintf("%s/kb-alive.pcap", s1);
    ck_assert_int_eq(link(pc, pc1), 0);

    const char *dirs[2] = {s1, s2};
    int status = -1;
    ck_assert_msg(fg_report_merge(dirs, 2, out, &status, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(status, 2);
    char *pa = fg_asprintf("%s/results.json", all), *pm = fg_asprintf("%s/results.json", out);
    char *da = digest(pa), *dm = digest(pm);
    ck_assert_str_eq(dm, da);
    json_t *doc = NULL;
    ck_assert_int_eq(fg_results_doc_read(pm, &doc, err, sizeof err), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(doc, "shards")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "host")), "ci-host, other-host");
    json_decref(doc);
    char *f;
    const char *files[] = {"junit.xml", "report.html", "summary.md", "kb-alive.pcap"};
    for (size_t i = 0; i < 4; i++) {
        f = fg_asprintf("%s/%s", out, files[i]);
        ck_assert_msg(access(f, R_OK) == 0, "%s missing", f);
        free(f);
    }
    /* the merged junit.xml equals the unsharded one but for the run id and
     * the hosts */
    f = fg_asprintf("%s/junit.xml", all);
    ck_assert_int_eq(fg_results_write_junit(f, &run_info, r, 3, err, sizeof err), 0);
    char *ja = junit_cases(f);
    free(f);
    f = fg_asprintf("%s/junit.xml", out);
    char *jm = junit_cases(f);
    free(f);
    ck_assert_str_eq(jm, ja);
    ck_assert_ptr_nonnull(strstr(jm, "<testcase"));
    free(ja);
    free(jm);

    /* the same shard twice: refused, naming both */
    const char *twice[2] = {s1, s1};
    ck_assert_int_eq(fg_report_merge(twice, 2, out, &status, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "kb-alive"));
    ck_assert_ptr_nonnull(strstr(err, "also in"));
    /* another gateway: refused */
    struct fg_run_info ri3 = run_info;
    ri3.profile_name = "postfix";
    for (size_t k = 0; k < 3; k++) {
        if (r[k].meta) {
            free(r[k].meta->profile_name);
            r[k].meta->profile_name = fg_strdup("postfix");
        }
    }
    p = fg_asprintf("%s/results.json", s2);
    ck_assert_int_eq(fg_results_write_json(p, &ri3, &r[1], 1, err, sizeof err), 0);
    ck_assert_int_eq(fg_report_merge(dirs, 2, out, &status, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "postfix"));
    /* a broken file: file:line:col */
    write_file(p, "{\n  \"schema_version\": \"1.1\",\n  oops\n}\n");
    ck_assert_int_eq(fg_report_merge(dirs, 2, out, &status, err, sizeof err), FG_EINPUT);
    char want[400];
    snprintf(want, sizeof want, "%s:3:", p);
    ck_assert_msg(strstr(err, want) != NULL, "%s", err);
    /* a later major version: refused rather than guessed */
    write_file(p, "{\"schema_version\": \"2.0\", \"scenarios\": []}\n");
    ck_assert_int_eq(fg_report_merge(dirs, 2, out, &status, err, sizeof err), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "2.0"));
    free(p);

    free(da);
    free(dm);
    free(pa);
    free(pm);
    free(pc);
    free(pc1);
    char *cmd = fg_asprintf("rm -rf '%s' '%s' '%s' '%s'", all, s1, s2, out);
    ck_assert(have_tool(cmd));
    free(cmd);
    free(all);
    free(s1);
    free(s2);
    free(out);
    clear3(r);
}
END_TEST

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/fg-check-results-%ld", (long)getpid());
    if (fg_mkdir_p(dir) != 0)
        return EXIT_FAILURE;
    Suite *s = suite_create("results");
    TCase *tc = tcase_create("files");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, json_written_and_read_back);
    tcase_add_test(tc, junit_written);
    tcase_add_test(tc, empty_run_and_bad_path);
    tcase_add_test(tc, junit_validates_against_xsd);
    tcase_add_test(tc, html_and_summary_from_document);
    tcase_add_test(tc, merge_equals_unsharded);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    char pcap[300];
    snprintf(pcap, sizeof pcap, "%s/kb-alive.pcap", dir);
    unlink(pcap);
    rmdir(dir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
