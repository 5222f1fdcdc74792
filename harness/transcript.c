/* transcript.c - `faultgate transcript TRACE`: every SMTP and X.400
 * connection of a capture as a transcript, in the order of their first
 * frame, with the frame number, time and direction of each command,
 * reply, body and close (swaks' habit: "->" what the client sent, "<-"
 * what the server sent).
 *
 * It prints the timelines the rules read (timeline.c for SMTP,
 * x400_timeline.c for X.400): no parsing of its own.  With the run's
 * <id>.meta.json and results.json beside the capture, the frame of each
 * fault decision and each verdict's evidence frames are marked.
 */
#include "faultgate/transcript.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/annotate.h"
#include "faultgate/error.h"
#include "faultgate/meta.h"
#include "faultgate/timeline.h"
#include "faultgate/tls_decrypt.h"
#include "faultgate/util.h"
#include "faultgate/x400_timeline.h"

static const char usage[] =
    "usage: faultgate transcript [--conn N] [--json] [-v] [--keylog FILE] TRACE\n"
    "\n"
    "Print every SMTP and X.400 connection of TRACE (pcap or pcapng) in order: frame,\n"
    "time since the first frame, direction (-> client to server, <- server to client)\n"
    "and the command, reply, body (size, token), TLS, FIN or RST; X.400 SPDUs with\n"
    "their serial numbers. --keylog reads the sessions inside STARTTLS. With the run's\n"
    "META (TRACE's name with .meta.json) and results.json beside TRACE, fault\n"
    "decisions and the verdicts' evidence frames are marked (**).\n"
    "  --conn N   only connection N (the trace's numbering)\n"
    "  --json     the same as one JSON document\n"
    "  -v         every line of multi-line replies, and the body's sender\n"
    "Exit status 0, or 2 on bad usage or an unreadable capture.\n";

struct mark {
    uint64_t frame;
    char *text;
    int shown;
};

struct marks {
    struct mark *m;
    size_t n, cap;
};

static void mark_add(struct marks *ms, uint64_t frame, char *text)
{
    struct mark *m = FG_ARRAY_PUSH(ms->m, ms->n, ms->cap);
    m->frame = frame;
    m->text = text;
    m->shown = 0;
}

/* <dir>/<id>.meta.json and <dir>/results.json beside the trace. */
static void load_marks(const char *path, const struct fg_timeline *tl, struct marks *ms)
{
    size_t l = strlen(path);
    char *base = NULL;
    if (l > 7 && strcmp(path + l - 7, ".pcapng") == 0)
        base = fg_strndup(path, l - 7);
    else if (l > 5 && strcmp(path + l - 5, ".pcap") == 0)
        base = fg_strndup(path, l - 5);
    else
        return;
    char *mp = fg_asprintf("%s.meta.json", base);
    char err[FG_ERRBUF_SIZE];
    struct fg_meta *m = NULL;
    if (access(mp, R_OK) == 0 && fg_meta_read(mp, &m, err, sizeof err) == 0) {
        for (size_t i = 0; i < m->ndecisions; i++) {
            const struct fg_decision *d = &m->decisions[i];
            uint64_t f = fg_annotate_decision_frame(tl, m, d);
            if (f)
                mark_add(ms, f,
                         fg_asprintf("fault %u: %s after %s, conn #%u", d->fault + 1, d->action,
                                     d->trigger, d->conn));
        }
    }
    const char *slash = strrchr(path, '/');
    char *dir = slash ? fg_strndup(path, (size_t)(slash - path)) : fg_strdup(".");
    char *rp = fg_asprintf("%s/results.json", dir);
    const char *name = slash ? slash + 1 : path;
    json_error_t je;
    json_t *doc = access(rp, R_OK) == 0 ? json_load_file(rp, 0, &je) : NULL;
    size_t i;
    json_t *sc;
    json_array_foreach(json_object_get(doc, "scenarios"), i, sc)
    {
        const char *p = json_string_value(json_object_get(sc, "pcap"));
        if (!p || strcmp(p, name) != 0)
            continue;
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(sc, "expectations"), k, e)
        {
            const char *v = json_string_value(json_object_get(e, "verdict"));
            const char *rule = json_string_value(json_object_get(e, "rule"));
            const char *sum = json_string_value(json_object_get(e, "summary"));
            char vu[16] = "";
            for (size_t c = 0; v && v[c] && c + 1 < sizeof vu; c++)
                vu[c] = (char)(v[c] >= 'a' && v[c] <= 'z' ? v[c] - 32 : v[c]);
            size_t q;
            json_t *fr;
            json_array_foreach(json_object_get(e, "frames"), q, fr)
            {
                if (json_integer_value(fr) > 0)
                    mark_add(ms, (uint64_t)json_integer_value(fr),
                             fg_asprintf("%s %s: %s", vu, rule ? rule : "?", sum ? sum : ""));
            }
        }
    }
    json_decref(doc);
    fg_meta_free(m);
    free(rp);
    free(dir);
    free(mp);
    free(base);
}

/* One printable event of either protocol. */
struct row {
    uint64_t frame, us;
    enum fg_dir dir;
    const char *kind; /* command, reply, body, end-of-data, ... */
    char *text;       /* owned */
};

struct conn_rows {
    unsigned id;
    const char *proto;
    const char *client, *server;
    uint64_t first_frame;
    struct row *r;
    size_t n, cap;
};

static void row_add(struct conn_rows *c, uint64_t frame, uint64_t us, enum fg_dir dir,
                    const char *kind, char *text)
{
    struct row *r = FG_ARRAY_PUSH(c->r, c->n, c->cap);
    *r = (struct row){frame, us, dir, kind, text};
    if (!c->first_frame || frame < c->first_frame)
        c->first_frame = frame;
}

static const struct fg_tl_msg *msg_of(const struct fg_tl_conn *c, size_t ev)
{
    for (size_t i = 0; i < c->nmsg; i++)
        if (c->msg[i].data_event == ev)
            return &c->msg[i];
    return NULL;
}

static void smtp_rows(const struct fg_tl_conn *c, int verbose, struct conn_rows *out)
{
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *e = &c->ev[i];
        char *t = NULL;
        const char *kind = fg_tl_kind_name(e->kind);
        switch (e->kind) {
        case FG_TL_OPEN:
            t = fg_asprintf("SYN %s -> %s", c->client, c->server);
            break;
        case FG_TL_COMMAND:
            t = fg_strdup(e->text ? e->text : "");
            break;
        case FG_TL_REPLY:
            if (!e->text)
                t = fg_asprintf("%d", e->code);
            else if (verbose || !strchr(e->text, '\r'))
                t = fg_strdup(e->text);
            else {
                /* The first line and the count: "250-mx ... (+5 lines)". */
                size_t lines = 1;
                for (const char *p = e->text; (p = strchr(p, '\n')); p++)
                    lines++;
                t = fg_asprintf("%.*s (+%zu lines)", (int)strcspn(e->text, "\r"), e->text,
                                lines - 1);
            }
            break;
        case FG_TL_DATA: {
            const struct fg_tl_msg *m = msg_of(c, i);
            t = fg_asprintf("[body %llu octets%s%s%s%s%s]",
                            (unsigned long long)(m ? m->size : e->size),
                            m && m->token[0] ? ", token " : "", m ? m->token : "",
                            m && !m->complete ? ", cut short" : "",
                            verbose && m && m->mail_from ? ", MAIL " : "",
                            verbose && m && m->mail_from ? m->mail_from : "");
            kind = "body";
            break;
        }
        case FG_TL_END_OF_DATA:
            t = fg_strdup(".");
            break;
        case FG_TL_BDAT_END:
            t = fg_asprintf("[chunk %llu octets%s]", (unsigned long long)e->size,
                            e->last ? ", LAST" : "");
            break;
        case FG_TL_TLS:
            if (c->tls_state == FG_TL_TLS_DECRYPTED)
                t = fg_asprintf("== TLS (STARTTLS took effect; decrypted with the key log%s)",
                                c->tls_version == 0x0304   ? ", TLS 1.3"
                                : c->tls_version == 0x0303 ? ", TLS 1.2"
                                                           : "");
            else if (c->tls_state == FG_TL_TLS_FAILED)
                t = fg_asprintf("== TLS (STARTTLS took effect; not decrypted: %s)",
                                c->tls_note ? c->tls_note : "?");
            else
                t = fg_strdup("== TLS (STARTTLS took effect; encrypted: --keylog reads it)");
            break;
        case FG_TL_FIN:
            t = fg_strdup("FIN");
            break;
        case FG_TL_RST:
            t = fg_strdup("RST");
            break;
        case FG_TL_GAP:
            t = fg_asprintf("!! %llu octets missing from the trace", (unsigned long long)e->size);
            break;
        case FG_TL_VIOLATION:
            t = fg_asprintf("!! %s", e->text ? e->text : "violation");
            break;
        }
        row_add(out, e->frame, e->us, e->dir, kind, t);
    }
}

static void x400_rows(const struct fg_x4_conn *c, struct conn_rows *out)
{
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_x4_event *e = &c->ev[i];
        char d[96];
        fg_x4_event_describe(c, i, d, sizeof d);
        char *t;
        if (e->kind == FG_X4_OPEN)
            t = fg_asprintf("SYN %s -> %s", c->client, c->server);
        else if (e->rule)
            t = fg_asprintf("%s  INVALID %s (%s)%s%s", d, e->rule, e->source, e->text ? ": " : "",
                            e->text ? e->text : "");
        else
            t = fg_asprintf("%s%s%s", d, e->text ? ": " : "", e->text ? e->text : "");
        row_add(out, e->frame, e->us, e->dir, fg_x4_kind_name(e->kind), t);
    }
}

static int cmp_conn(const void *a, const void *b)
{
    const struct conn_rows *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* A connection is shown as SMTP when the timeline found a command or a
 * reply in it; others (refused, or another protocol) as plain TCP. */
static int is_smtp(const struct fg_tl_conn *c)
{
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].kind == FG_TL_COMMAND || c->ev[i].kind == FG_TL_REPLY)
            return 1;
    return 0;
}

/* X.400 when a TPDU was decoded in it (a connection refused at once has
 * none, and shows as plain TCP). */
static int is_x400(const struct fg_x4_conn *c)
{
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].kind == FG_X4_TPDU || c->ev[i].kind == FG_X4_SPDU)
            return 1;
    return 0;
}

static void print_marks(struct marks *ms, uint64_t frame, FILE *f, json_t *arr)
{
    for (size_t i = 0; i < ms->n; i++) {
        if (ms->m[i].frame != frame)
            continue;
        ms->m[i].shown = 1;
        if (arr)
            json_array_append_new(arr, json_string(ms->m[i].text));
        else
            fprintf(f, "%8s %11s  ** %s\n", "", "", ms->m[i].text);
    }
}

int fg_transcript_write(const char *path, const struct fg_transcript_opts *o, FILE *f, char *err,
                        size_t errlen)
{
    struct fg_keylog *kl = NULL;
    int rc;
    if (o->keylog && (rc = fg_keylog_load(o->keylog, &kl, err, errlen)) < 0)
        return rc;
    struct fg_timeline *tl = NULL;
    rc = fg_timeline_build_keys(path, NULL, 0, kl, &tl, err, errlen);
    fg_keylog_free(kl);
    if (rc < 0)
        return rc;
    struct fg_x400_timeline *xt = NULL;
    rc = fg_x400_timeline_build(path, NULL, 0, &xt, err, errlen);
    if (rc < 0) {
        fg_timeline_free(tl);
        return rc;
    }
    struct marks ms = {0};
    load_marks(path, tl, &ms);

    struct conn_rows *cs = NULL;
    size_t nc = 0, capc = 0;
    for (size_t i = 0; i < xt->nconn; i++) {
        if ((o->conn && xt->conn[i].id != o->conn) || !is_x400(&xt->conn[i]))
            continue;
        struct conn_rows *c = FG_ARRAY_PUSH(cs, nc, capc);
        *c = (struct conn_rows){.id = xt->conn[i].id,
                                .proto = "x400",
                                .client = xt->conn[i].client,
                                .server = xt->conn[i].server};
        x400_rows(&xt->conn[i], c);
    }
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_tl_conn *t = &tl->conn[i];
        if (o->conn && t->id != o->conn)
            continue;
        int x4 = 0;
        for (size_t k = 0; k < xt->nconn && !x4; k++)
            x4 = xt->conn[k].id == t->id && is_x400(&xt->conn[k]);
        if (x4)
            continue;
        struct conn_rows *c = FG_ARRAY_PUSH(cs, nc, capc);
        *c = (struct conn_rows){.id = t->id,
                                .proto = is_smtp(t) ? "smtp" : "tcp",
                                .client = t->client,
                                .server = t->server};
        smtp_rows(t, o->verbose, c);
    }
    qsort(cs, nc, sizeof(*cs), cmp_conn);

    uint64_t t0 = tl->stats.first_us;
    json_t *doc = o->json ? json_object() : NULL;
    json_t *jconns = o->json ? json_array() : NULL;
    for (size_t i = 0; i < nc; i++) {
        struct conn_rows *c = &cs[i];
        json_t *jev = NULL;
        if (doc) {
            json_t *jc = json_object();
            json_object_set_new(jc, "conn", json_integer(c->id));
            json_object_set_new(jc, "protocol", json_string(c->proto));
            json_object_set_new(jc, "client", json_string(c->client));
            json_object_set_new(jc, "server", json_string(c->server));
            jev = json_array();
            json_object_set_new(jc, "events", jev);
            json_array_append_new(jconns, jc);
        } else {
            fprintf(f, "%sconnection %u %s -> %s (%s)\n", i ? "\n" : "", c->id, c->client,
                    c->server,
                    !strcmp(c->proto, "smtp")   ? "SMTP"
                    : !strcmp(c->proto, "x400") ? "X.400"
                                                : "TCP, no SMTP or X.400 seen");
        }
        for (size_t k = 0; k < c->n; k++) {
            const struct row *r = &c->r[k];
            uint64_t us = r->us >= t0 ? r->us - t0 : 0;
            const char *arrow = r->dir == FG_C2S ? "->" : "<-";
            if (doc) {
                json_t *je = json_object();
                json_object_set_new(je, "frame", json_integer((json_int_t)r->frame));
                json_object_set_new(je, "time_us", json_integer((json_int_t)r->us));
                json_object_set_new(je, "t", json_real((double)us / 1e6));
                json_object_set_new(je, "dir", json_string(r->dir == FG_C2S ? "c2s" : "s2c"));
                json_object_set_new(je, "kind", json_string(r->kind));
                json_object_set_new(je, "text", json_string(r->text ? r->text : ""));
                json_t *jm = json_array();
                print_marks(&ms, r->frame, f, jm);
                if (json_array_size(jm))
                    json_object_set_new(je, "marks", jm);
                else
                    json_decref(jm);
                json_array_append_new(jev, je);
                continue;
            }
            /* Multi-line text: one arrow per line, as swaks prints replies. */
            const char *p = r->text ? r->text : "";
            int first = 1;
            do {
                size_t len = strcspn(p, "\r\n");
                if (first)
                    fprintf(f, "%8llu %4llu.%06llu  %s %.*s\n", (unsigned long long)r->frame,
                            (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000),
                            arrow, (int)len, p);
                else
                    fprintf(f, "%8s %11s  %s %.*s\n", "", "", arrow, (int)len, p);
                first = 0;
                p += len;
                p += strspn(p, "\r\n");
            } while (*p);
            /* Marks go after the last event of their frame. */
            if (k + 1 == c->n || c->r[k + 1].frame != r->frame)
                print_marks(&ms, r->frame, f, NULL);
        }
    }
    size_t unshown = 0;
    for (size_t i = 0; i < ms.n; i++)
        unshown += !ms.m[i].shown;
    if (doc) {
        json_object_set_new(doc, "trace", json_string(path));
        json_object_set_new(doc, "frames", json_integer((json_int_t)tl->stats.frames));
        json_object_set_new(doc, "first_us", json_integer((json_int_t)t0));
        json_object_set_new(doc, "connections", jconns);
        json_t *rest = json_array();
        for (size_t i = 0; i < ms.n; i++)
            if (!ms.m[i].shown) {
                json_t *m = json_object();
                json_object_set_new(m, "frame", json_integer((json_int_t)ms.m[i].frame));
                json_object_set_new(m, "text", json_string(ms.m[i].text));
                json_array_append_new(rest, m);
            }
        json_object_set_new(doc, "other_marks", rest);
        json_dumpf(doc, f, JSON_INDENT(1));
        fputc('\n', f);
        json_decref(doc);
    } else if (unshown && !o->conn) {
        fprintf(f, "\nmarks on frames without an SMTP or X.400 event:\n");
        for (size_t i = 0; i < ms.n; i++)
            if (!ms.m[i].shown)
                fprintf(f, "%8llu  ** %s\n", (unsigned long long)ms.m[i].frame, ms.m[i].text);
    }
    for (size_t i = 0; i < nc; i++) {
        for (size_t k = 0; k < cs[i].n; k++)
            free(cs[i].r[k].text);
        free(cs[i].r);
    }
    free(cs);
    for (size_t i = 0; i < ms.n; i++)
        free(ms.m[i].text);
    free(ms.m);
    fg_x400_timeline_free(xt);
    fg_timeline_free(tl);
    return 0;
}

int fg_cmd_transcript(int argc, char **argv)
{
    static const struct option opts[] = {
        {"conn", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
        {"keylog", required_argument, NULL, 'k'}, {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    struct fg_transcript_opts o = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:jk:vh", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'c':
            if (fg_uint_parse(optarg, 1, UINT32_MAX, &v) != 0) {
                fprintf(stderr, "faultgate transcript: --conn takes a connection number: \"%s\"\n",
                        optarg);
                return 2;
            }
            o.conn = (unsigned)v;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'k':
            o.keylog = optarg;
            break;
        case 'v':
            o.verbose = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_transcript_write(argv[optind], &o, stdout, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "faultgate transcript: %s\n", err[0] ? err : fg_strerror(rc));
        return 2;
    }
    return 0;
}
