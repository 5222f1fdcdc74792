/* annotate.c - a judged run's capture as annotated pcapng (annotate.h). */
#include "faultgate/annotate.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/meta.h"
#include "faultgate/pcapng.h"
#include "faultgate/util.h"

#ifndef FG_VERSION
#define FG_VERSION "unknown"
#endif

static const struct fg_tl_conn *nth_conn(const struct fg_timeline *tl, int port, unsigned n)
{
    if (!tl || port <= 0 || n == 0)
        return NULL;
    for (size_t i = 0; i < tl->nconn; i++)
        if (tl->conn[i].server_port == port && --n == 0)
            return &tl->conn[i];
    return NULL;
}

uint64_t fg_annotate_decision_frame(const struct fg_timeline *tl, const struct fg_meta *m,
                                    const struct fg_decision *d)
{
    const struct fg_tl_conn *legs[2] = {nth_conn(tl, m->proxy_port, d->conn),
                                        nth_conn(tl, m->mta_port, d->conn)};
    uint64_t best_us = 0, frame = 0, first = 0;
    for (int l = 0; l < 2; l++) {
        const struct fg_tl_conn *c = legs[l];
        for (size_t i = 0; c && i < c->nev; i++) {
            const struct fg_tl_event *e = &c->ev[i];
            if (!first)
                first = e->frame;
            if (e->us <= d->t_us && (e->us > best_us || (e->us == best_us && e->frame > frame))) {
                best_us = e->us;
                frame = e->frame;
            }
        }
    }
    return frame ? frame : first;
}

int fg_annotate_run(const char *pcap_path, const struct fg_scenario_result *res, char *err,
                    size_t errlen)
{
    const struct fg_meta *m = res->meta;
    struct fg_pcapng_note *notes = NULL;
    size_t n = 0, cap = 0;
    char **texts = NULL;
    size_t ntexts = 0;

    for (size_t i = 0; m && res->tl && i < m->ndecisions; i++) {
        const struct fg_decision *d = &m->decisions[i];
        uint64_t f = fg_annotate_decision_frame(res->tl, m, d);
        if (!f)
            continue;
        fg_array_reserve((void **)&notes, &cap, n + 1, sizeof(*notes));
        texts = fg_realloc(texts, (ntexts + 1) * sizeof(*texts));
        texts[ntexts] = fg_asprintf("fault %u: %s after %s, conn #%u", d->fault + 1, d->action,
                                    d->trigger, d->conn);
        notes[n++] = (struct fg_pcapng_note){f, texts[ntexts++]};
    }
    for (size_t i = 0; i < res->noutcomes; i++) {
        const struct fg_outcome *o = &res->outcomes[i];
        char vname[16];
        snprintf(vname, sizeof vname, "%s", fg_verdict_name(o->verdict));
        for (char *p = vname; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        for (size_t k = 0; k < o->nframes; k++) {
            if (!o->frames[k])
                continue;
            fg_array_reserve((void **)&notes, &cap, n + 1, sizeof(*notes));
            texts = fg_realloc(texts, (ntexts + 1) * sizeof(*texts));
            texts[ntexts] = fg_asprintf("%s %s: %s", vname, o->rule ? o->rule : "?",
                                        o->summary ? o->summary : "");
            notes[n++] = (struct fg_pcapng_note){o->frames[k], texts[ntexts++]};
        }
    }

    char *shb[3];
    shb[0] = fg_asprintf("faultgate run: scenario %s, verdict %s", res->id ? res->id : "?",
                         fg_verdict_name(res->verdict));
    shb[1] = fg_asprintf("profile %s (gateway %s), seed %llu, capture %s",
                         m && m->profile_name ? m->profile_name : "?",
                         m && m->gateway_version ? m->gateway_version : "?",
                         (unsigned long long)(m ? m->seed : 0),
                         m && m->capture_mode ? m->capture_mode : "?");
    shb[2] = fg_asprintf("faultgate version %s", FG_VERSION);
    int rc = fg_pcapng_write(pcap_path, pcap_path, (const char *const *)shb, 3,
                             "faultgate " FG_VERSION, notes, n, err, errlen);
    for (size_t i = 0; i < 3; i++)
        free(shb[i]);
    for (size_t i = 0; i < ntexts; i++)
        free(texts[i]);
    free(texts);
    free(notes);
    return rc;
}
