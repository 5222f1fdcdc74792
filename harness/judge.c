/* judge.c - a scenario's verdict from its pcap and metadata
 * (faultgate/judge.h).
 *
 * Builds the timeline of the capture, evaluates every expectation of the
 * scenario over it, and keeps the worst verdict (expect.h's order).  The
 * live run and `faultgate judge` on a saved trace both come through here,
 * which is what makes their verdicts the same.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/judge.h"
#include "faultgate/tls_decrypt.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"

static char **strv_dup(char *const *v, size_t n)
{
    if (n == 0)
        return NULL;
    char **d = fg_calloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = fg_strdup(v[i] ? v[i] : "");
    return d;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void fg_scenario_result_init(struct fg_scenario_result *res, const struct fg_scenario *sc)
{
    memset(res, 0, sizeof *res);
    res->verdict = FG_V_PASS;
    if (!sc)
        return;
    res->id = sc->id ? fg_strdup(sc->id) : NULL;
    res->title = sc->title ? fg_strdup(sc->title) : NULL;
    res->path = sc->path ? fg_strdup(sc->path) : NULL;
    res->kb = strv_dup(sc->kb, sc->nkb);
    res->nkb = sc->nkb;
    res->rfc = strv_dup(sc->rfc, sc->nrfc);
    res->nrfc = sc->nrfc;
}

void fg_judge(const struct fg_scenario *sc, struct fg_meta *meta, const char *pcap_path,
              struct fg_scenario_result *res)
{
    fg_judge_keys(sc, meta, pcap_path, NULL, res);
}

/* The key log for a trace: the one named, else the meta's, which is
 * relative to the meta file, written beside the trace. */
static int load_keylog(const struct fg_meta *meta, const char *pcap_path, const char *keylog_path,
                       struct fg_keylog **kl, char *err, size_t errlen)
{
    *kl = NULL;
    if (keylog_path)
        return fg_keylog_load(keylog_path, kl, err, errlen);
    if (!meta || !meta->keylog || !meta->keylog[0] || !pcap_path)
        return 0;
    const char *slash = strrchr(pcap_path, '/');
    char *path = meta->keylog[0] == '/' || !slash
                     ? fg_strdup(meta->keylog)
                     : fg_asprintf("%.*s/%s", (int)(slash - pcap_path), pcap_path, meta->keylog);
    int rc = access(path, R_OK) == 0 ? fg_keylog_load(path, kl, err, errlen) : 0;
    free(path);
    return rc;
}

/* A scenario of the BDAT path (`path: bdat`) does not apply to a gateway
 * that sent no BDAT on the outbound leg: CHUNKING is optional (RFC 3030
 * §1), so that is skip, with why, never inconc.  NULL when it applies. */
static char *bdat_not_used(const struct fg_scenario *sc, const struct fg_meta *meta,
                           const struct fg_timeline *tl)
{
    if (!sc || sc->mail_path != FG_PATH_BDAT || !meta)
        return NULL;
    int offered = 0, opened = 0, data = 0;
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_tl_conn *c = &tl->conn[i];
        if (c->server_port != meta->proxy_port)
            continue;
        for (size_t k = 0; k < c->nev; k++) {
            const struct fg_tl_event *e = &c->ev[k];
            if (e->kind == FG_TL_COMMAND && e->verb == FG_VERB_BDAT)
                return NULL;
            if (e->kind == FG_TL_COMMAND && e->verb == FG_VERB_DATA)
                data = 1;
            if (fg_tl_is_opening(e))
                opened = 1;
            if (e->kind == FG_TL_REPLY && e->verb == FG_VERB_EHLO && e->code == 250 && e->text &&
                strcasestr(e->text, "CHUNKING"))
                offered = 1;
        }
    }
    if (offered && data)
        return fg_strdup("the gateway sent its mail with DATA although CHUNKING was offered: it "
                         "does not use BDAT (RFC 3030 is optional)");
    if (opened && !offered)
        return fg_strdup("CHUNKING was never offered to the gateway (no EHLO reply listed it), "
                         "so the BDAT path does not apply");
    return NULL; /* nothing was sent at all: the rules say why */
}

void fg_judge_keys(const struct fg_scenario *sc, struct fg_meta *meta, const char *pcap_path,
                   const char *keylog_path, struct fg_scenario_result *res)
{
    uint64_t t_start = fg_now_ms();
    fg_scenario_result_init(res, sc);
    res->meta = meta;
    if (meta && meta->pcap) {
        res->pcap = fg_strdup(meta->pcap);
    } else if (pcap_path) {
        const char *slash = strrchr(pcap_path, '/');
        res->pcap = fg_strdup(slash ? slash + 1 : pcap_path);
    }

    char err[FG_ERRBUF_SIZE];
    err[0] = '\0';
    /* Only the run's ports matter to the rules: following them alone
     * keeps memory to the run's connections in a capture of any size. */
    int ports[4];
    size_t np = 0;
    if (meta) {
        const int cand[] = {meta->gateway_port, meta->proxy_port, meta->mta_port, meta->x400_port};
        for (size_t i = 0; i < 4; i++)
            if (cand[i] > 0)
                ports[np++] = cand[i];
    }
    struct fg_keylog *kl = NULL;
    int rc = load_keylog(meta, pcap_path, keylog_path, &kl, err, sizeof err);
    if (rc < 0) {
        res->tl = NULL;
        res->verdict = FG_V_ERROR;
        res->error = fg_strdup(err);
        goto done;
    }
    rc = pcap_path ? fg_timeline_build_keys(pcap_path, ports, np, kl, &res->tl, err, sizeof err)
                   : FG_EINPUT;
    fg_keylog_free(kl);
    if (rc == 0) {
        char why[FG_ERRBUF_SIZE];
        rc = fg_trace_sufficient(pcap_path, &res->tl->stats, err, why, sizeof why);
        if (rc) {
            fg_timeline_free(res->tl);
            res->tl = NULL;
            res->verdict = FG_V_ERROR;
            res->error = fg_strdup(why);
            goto done;
        }
    }
    if (rc != 0) {
        res->tl = NULL;
        res->verdict = FG_V_ERROR;
        /* The trace reader's messages name the file already. */
        if (pcap_path && err[0] && strncmp(err, pcap_path, strlen(pcap_path)) == 0)
            res->error = fg_strdup(err);
        else
            res->error = fg_asprintf("%s: %s", pcap_path ? pcap_path : "(no trace)",
                                     err[0] ? err : fg_strerror(rc));
    } else {
        struct fg_judge_ctx ctx = {sc, meta, res->tl, pcap_path};
        size_t n = sc ? sc->nexpects : 0;
        res->outcomes = n ? fg_calloc(n, sizeof *res->outcomes) : NULL;
        /* A rule that does not apply to the path the gateway took is skip:
         * the scenario is skip when none of its rules applied, else the
         * worst of those that did. */
        if (n)
            res->verdict = FG_V_SKIP;
        for (size_t i = 0; i < n; i++) {
            fg_expect_eval(&sc->expects[i], &ctx, &res->outcomes[i]);
            res->noutcomes++;
            res->verdict = fg_verdict_worst(res->verdict, res->outcomes[i].verdict);
        }
        if (res->verdict == FG_V_SKIP && n && !res->error)
            res->error =
                fg_strdup(res->outcomes[0].summary ? res->outcomes[0].summary : "no rule applies");
        /* Whatever its other rules say: the DATA path has a scenario of
         * its own (kb-q129140-hang-after-data beside -bdat). */
        char *why = bdat_not_used(sc, meta, res->tl);
        if (why) {
            res->verdict = FG_V_SKIP;
            free(res->error);
            res->error = why;
        }
        /* An expectation that could not be evaluated explains the error. */
        for (size_t i = 0; i < res->noutcomes && !res->error; i++)
            if (res->outcomes[i].verdict == FG_V_ERROR)
                res->error =
                    fg_asprintf("%s: %s", res->outcomes[i].rule,
                                res->outcomes[i].summary ? res->outcomes[i].summary : "error");
    }
done:
    if (meta && meta->end_us > meta->start_us && meta->start_us)
        res->duration_ms = (meta->end_us - meta->start_us) / 1000;
    else
        res->duration_ms = fg_now_ms() - t_start;
}

void fg_scenario_result_clear(struct fg_scenario_result *r)
{
    if (!r)
        return;
    free(r->id);
    free(r->title);
    free(r->path);
    strv_free(r->kb, r->nkb);
    strv_free(r->rfc, r->nrfc);
    for (size_t i = 0; i < r->noutcomes; i++)
        fg_outcome_clear(&r->outcomes[i]);
    free(r->outcomes);
    free(r->error);
    free(r->pcap);
    fg_meta_free(r->meta);
    fg_timeline_free(r->tl);
    memset(r, 0, sizeof *r);
}
