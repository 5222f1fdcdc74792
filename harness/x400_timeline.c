/* x400_timeline.c - the X.400 (RFC 1006) timeline of a capture
 * (faultgate/x400_timeline.h).
 *
 * The trace reader hands over each direction's bytes in order; the shared
 * incremental codec (faultgate/x400.h) turns them into TPDUs and SPDUs
 * from inside the feed, so every event carries the frame and time of the
 * segment that completed it (the frame tshark shows the reassembled TPKT
 * in).  Each SPDU goes through the shared X.225 rules
 * (faultgate/x400_state.h) in wire order, as one observer of both sides,
 * so the judge and the fake X.400 MTA agree on what is invalid.
 */
#include "faultgate/x400_timeline.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/x400_state.h"

/* The first octets of an activity kept to find the message's token in:
 * the token is a header, so it sits near the start (fg_smtp_token_find). */
#define ACT_KEEP (64 * 1024)

const char *fg_x4_kind_name(enum fg_x4_kind k)
{
    static const char *const n[] = {"open", "tpdu", "spdu", "error", "fin", "rst", "gap"};
    return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "?";
}

const char *fg_x4_end_name(enum fg_x4_end e)
{
    static const char *const n[] = {"open",       "released", "refused", "aborted",
                                    "disconnect", "error",    "reset",   "closed"};
    return (unsigned)e < sizeof n / sizeof n[0] ? n[e] : "?";
}

/* --- building ------------------------------------------------------------ */

struct build;
struct cstate;

struct dside {
    struct cstate *cs;
    enum fg_dir dir;
    struct fg_x400_dec dec;
    int dead; /* framing lost or a gap: nothing more is decoded */
};

struct cstate {
    struct build *b;
    size_t idx; /* into b->tl->conn (which may move) */
    struct dside side[2];
    struct fg_x400_sm sm;
    uint64_t frame, us;
    int released;  /* DN seen */
    int in_act;    /* an activity is open: act[nact - 1] */
    uint8_t *data; /* its first ACT_KEEP octets */
    size_t data_len;
    int decided; /* nports 0: whether the stream looked like RFC 1006 */
};

struct build {
    struct fg_x400_timeline *tl;
    const int *ports;
    size_t nports;
};

static struct fg_x4_conn *conn_of(struct cstate *cs)
{
    return &cs->b->tl->conn[cs->idx];
}

static struct fg_x4_event *ev_add(struct cstate *cs, enum fg_x4_kind k, enum fg_dir dir)
{
    struct fg_x4_conn *c = conn_of(cs);
    if (c->nev == c->capev) {
        c->capev = c->capev ? 2 * c->capev : 32;
        c->ev = fg_realloc(c->ev, c->capev * sizeof *c->ev);
    }
    struct fg_x4_event *e = &c->ev[c->nev++];
    memset(e, 0, sizeof *e);
    e->kind = k;
    e->dir = dir;
    e->frame = cs->frame;
    e->us = cs->us;
    e->rts_reason = -1;
    return e;
}

static void set_end(struct cstate *cs, enum fg_x4_end end, enum fg_dir dir)
{
    struct fg_x4_conn *c = conn_of(cs);
    if (c->end != FG_X4_END_NONE || cs->released)
        return;
    c->end = end;
    c->end_event = c->nev - 1;
    c->end_dir = dir;
}

static void act_finish(struct cstate *cs)
{
    if (!cs->in_act)
        return;
    struct fg_x4_conn *c = conn_of(cs);
    struct fg_x4_activity *a = &c->act[c->nact - 1];
    fg_smtp_token_find((const char *)cs->data, cs->data_len, a->token, sizeof a->token);
    cs->in_act = 0;
    cs->data_len = 0;
}

static void on_spdu(struct cstate *cs, enum fg_dir dir, const struct fg_spdu *s)
{
    struct fg_x4_conn *c = conn_of(cs);
    int answers_ae = cs->sm.ending == FG_SPDU_AE;
    struct fg_x4_event *e = ev_add(cs, FG_X4_SPDU, dir);
    e->spdu = s->type;
    e->si = s->si;
    e->index = s->index;
    e->count = s->count;
    e->has_serial = (s->has & FG_SP_SERIAL) != 0;
    e->serial_ok = s->serial_ok;
    e->serial = s->serial;
    if (e->has_serial)
        fg_x400_serial_str(s, e->serial_text, sizeof e->serial_text);
    e->has_tdisc = (s->has & FG_SP_TDISC) != 0;
    e->tdisc = s->tdisc;
    e->has_reason = (s->has & FG_SP_REASON) != 0;
    e->reason50 = s->reason;
    struct fg_rts r;
    if (s->type == FG_SPDU_AB && (s->has & FG_SP_USER_DATA) &&
        fg_x400_rts_decode(FG_SPDU_AB, s->user_data, s->user_data_len, &r) == 0)
        e->rts_reason = r.reason;
    if (s->type == FG_SPDU_RF && e->has_reason && s->reason == 2 &&
        fg_x400_rts_decode(FG_SPDU_RF, s->reason_data, s->reason_data_len, &r) == 0)
        e->rts_reason = r.reason;

    /* The initiator is the side that opened the transport connection
     * (RFC 1006 §5: the CR comes from the TCP client). */
    struct fg_x400_violation v;
    memset(&v, 0, sizeof v);
    enum fg_x400_side from = dir == FG_C2S ? FG_X400_INITIATOR : FG_X400_RESPONDER;
    if (fg_x400_sm_apply(&cs->sm, from, s, &v)) {
        e->rule = v.rule;
        e->source = v.source;
        e->text = fg_strdup(v.text);
        c->violations++;
        if (c->first_violation == FG_TL_NONE)
            c->first_violation = c->nev - 1;
    }
    e->vm = cs->sm.vm;
    e->va = cs->sm.va;

    switch (s->type) {
    case FG_SPDU_AC:
        c->accepted = 1;
        c->checkpoint = cs->sm.checkpoint;
        c->window = cs->sm.window;
        break;
    case FG_SPDU_AS: {
        act_finish(cs);
        if (c->nact == c->capact) {
            c->capact = c->capact ? 2 * c->capact : 4;
            c->act = fg_realloc(c->act, c->capact * sizeof *c->act);
        }
        struct fg_x4_activity *a = &c->act[c->nact++];
        memset(a, 0, sizeof *a);
        a->as_event = c->nev - 1;
        a->end_event = FG_TL_NONE;
        cs->in_act = 1;
        break;
    }
    case FG_SPDU_DT:
        if (cs->in_act) {
            c->act[c->nact - 1].octets += s->user_data_len;
            size_t n = s->user_data_len;
            if (n > ACT_KEEP - cs->data_len)
                n = ACT_KEEP - cs->data_len;
            if (n) {
                if (!cs->data)
                    cs->data = fg_malloc(ACT_KEEP);
                memcpy(cs->data + cs->data_len, s->user_data, n);
                cs->data_len += n;
            }
        }
        break;
    case FG_SPDU_MIP:
        if (cs->in_act)
            c->act[c->nact - 1].mips++;
        break;
    case FG_SPDU_AEA:
    case FG_SPDU_ADA:
    case FG_SPDU_AIA:
        if (cs->in_act) {
            struct fg_x4_activity *a = &c->act[c->nact - 1];
            a->end_event = c->nev - 1;
            a->completed = s->type == FG_SPDU_AEA && answers_ae;
            act_finish(cs);
        }
        break;
    case FG_SPDU_AB:
        set_end(cs, FG_X4_END_ABORTED, dir);
        break;
    case FG_SPDU_RF:
        set_end(cs, FG_X4_END_REFUSED, dir);
        break;
    case FG_SPDU_DN:
        set_end(cs, FG_X4_END_RELEASED, dir);
        cs->released = 1;
        break;
    default:
        break;
    }
}

static void dec_cb(void *ud, const struct fg_x400_event *ev)
{
    struct dside *ds = ud;
    struct cstate *cs = ds->cs;
    switch (ev->kind) {
    case FG_X400_EV_TPDU: {
        if (ev->tpdu->code == FG_COTP_DT)
            return; /* its SPDUs are the events */
        struct fg_x4_event *e = ev_add(cs, FG_X4_TPDU, ds->dir);
        e->tpdu = ev->tpdu->code;
        e->reason = ev->tpdu->reason;
        if (ev->tpdu->code == FG_COTP_DR)
            set_end(cs, FG_X4_END_DR, ds->dir);
        else if (ev->tpdu->code == FG_COTP_ER)
            set_end(cs, FG_X4_END_ER, ds->dir);
        break;
    }
    case FG_X400_EV_SPDU:
        on_spdu(cs, ds->dir, ev->spdu);
        break;
    case FG_X400_EV_ERROR: {
        struct fg_x4_event *e = ev_add(cs, FG_X4_ERROR, ds->dir);
        e->text = fg_strdup(ev->text ? ev->text : "decoding error");
        if (ev->fatal)
            ds->dead = 1;
        break;
    }
    }
}

static int port_wanted(const struct build *b, int port)
{
    for (size_t i = 0; i < b->nports; i++)
        if (b->ports[i] == port)
            return 1;
    return 0;
}

static void t_open(void *ud, struct fg_trace_conn *tc)
{
    struct build *b = ud;
    if (b->nports && !port_wanted(b, tc->server_port))
        return;
    struct fg_x400_timeline *tl = b->tl;
    if (tl->nconn == tl->capconn) {
        tl->capconn = tl->capconn ? 2 * tl->capconn : 8;
        tl->conn = fg_realloc(tl->conn, tl->capconn * sizeof *tl->conn);
    }
    struct fg_x4_conn *c = &tl->conn[tl->nconn];
    memset(c, 0, sizeof *c);
    c->id = tc->id;
    snprintf(c->client, sizeof c->client, "%s", tc->client_str);
    snprintf(c->server, sizeof c->server, "%s", tc->server_str);
    c->client_port = tc->client_port;
    c->server_port = tc->server_port;
    c->end_event = FG_TL_NONE;
    c->first_violation = FG_TL_NONE;
    struct cstate *cs = fg_calloc(1, sizeof *cs);
    cs->b = b;
    cs->idx = tl->nconn++;
    cs->decided = b->nports > 0;
    fg_x400_sm_init(&cs->sm);
    for (int d = 0; d < 2; d++) {
        cs->side[d].cs = cs;
        cs->side[d].dir = (enum fg_dir)d;
        fg_x400_dec_init(&cs->side[d].dec, 0, dec_cb, &cs->side[d]);
    }
    cs->frame = tc->open_frame;
    cs->us = tc->open_us;
    ev_add(cs, FG_X4_OPEN, FG_C2S);
    tc->user = cs;
}

static void drop_conn(struct cstate *cs)
{
    /* Not RFC 1006 after all (nports 0): forget it.  It is the last
     * connection whose state is undecided only if it was opened last, so
     * mark it instead and compact at the end. */
    struct fg_x4_conn *c = conn_of(cs);
    for (size_t i = 0; i < c->nev; i++)
        free(c->ev[i].text);
    free(c->ev);
    free(c->act);
    c->ev = NULL;
    c->act = NULL;
    c->nev = c->capev = c->nact = c->capact = 0;
    c->id = 0; /* removed at the end */
    cs->side[0].dead = cs->side[1].dead = 1;
}

static void t_data(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, const uint8_t *buf,
                   size_t len, uint64_t frame, uint64_t us)
{
    (void)ud;
    struct cstate *cs = tc->user;
    if (!cs || cs->side[dir].dead)
        return;
    if (!cs->decided) {
        /* RFC 1006: the client speaks first, with a TPKT (03 00 ...). */
        if (dir != FG_C2S || buf[0] != FG_TPKT_VERSION || (len > 1 && buf[1] != 0)) {
            drop_conn(cs);
            return;
        }
        cs->decided = 1;
    }
    cs->frame = frame;
    cs->us = us;
    fg_x400_dec_feed(&cs->side[dir].dec, buf, len);
}

static void t_fin(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    (void)ud;
    struct cstate *cs = tc->user;
    if (!cs || !conn_of(cs)->id)
        return;
    cs->frame = frame;
    cs->us = us;
    ev_add(cs, FG_X4_FIN, dir);
    set_end(cs, FG_X4_END_CLOSED, dir);
}

static void t_rst(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    (void)ud;
    struct cstate *cs = tc->user;
    if (!cs || !conn_of(cs)->id)
        return;
    cs->frame = frame;
    cs->us = us;
    ev_add(cs, FG_X4_RST, dir);
    set_end(cs, FG_X4_END_RESET, dir);
}

static void t_gap(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t missing,
                  uint64_t frame, uint64_t us)
{
    (void)ud;
    struct cstate *cs = tc->user;
    if (!cs || !conn_of(cs)->id)
        return;
    cs->frame = frame;
    cs->us = us;
    struct fg_x4_event *e = ev_add(cs, FG_X4_GAP, dir);
    e->text = fg_asprintf("%llu octets missing from the trace: the rest of this direction is "
                          "not decoded",
                          (unsigned long long)missing);
    cs->side[dir].dead = 1;
}

static void cstate_free(struct cstate *cs)
{
    for (int d = 0; d < 2; d++)
        fg_x400_dec_free(&cs->side[d].dec);
    free(cs->data);
    free(cs);
}

static void t_close(void *ud, struct fg_trace_conn *tc)
{
    (void)ud;
    struct cstate *cs = tc->user;
    if (!cs)
        return;
    if (conn_of(cs)->id)
        act_finish(cs);
    cstate_free(cs);
    tc->user = NULL;
}

int fg_x400_timeline_build(const char *pcap, const int *ports, size_t nports,
                           struct fg_x400_timeline **out, char *err, size_t errlen)
{
    *out = NULL;
    struct fg_x400_timeline *tl = fg_calloc(1, sizeof *tl);
    struct build b = {tl, ports, nports};
    struct fg_trace_cbs cbs = {.on_open = t_open,
                               .on_data = t_data,
                               .on_fin = t_fin,
                               .on_rst = t_rst,
                               .on_gap = t_gap,
                               .on_close = t_close};
    int rc = fg_trace_read(pcap, &cbs, &b, &tl->stats, err, errlen);
    if (rc != 0) {
        fg_x400_timeline_free(tl);
        return rc;
    }
    /* Compact away the connections that were not RFC 1006 (nports 0). */
    size_t w = 0;
    for (size_t i = 0; i < tl->nconn; i++)
        if (tl->conn[i].id)
            tl->conn[w++] = tl->conn[i];
    tl->nconn = w;
    *out = tl;
    return 0;
}

void fg_x400_timeline_free(struct fg_x400_timeline *tl)
{
    if (!tl)
        return;
    for (size_t i = 0; i < tl->nconn; i++) {
        struct fg_x4_conn *c = &tl->conn[i];
        for (size_t j = 0; j < c->nev; j++)
            free(c->ev[j].text);
        free(c->ev);
        free(c->act);
    }
    free(tl->conn);
    free(tl);
}

/* --- output ----------------------------------------------------------------- */

const char *fg_x4_event_describe(const struct fg_x4_conn *c, size_t i, char *buf, size_t len)
{
    const struct fg_x4_event *e = &c->ev[i];
    switch (e->kind) {
    case FG_X4_SPDU: {
        const char *pre = "";
        /* Name the category-0 carrier the way tshark shows it ("GT+MIP"). */
        if (e->index > 0 && i > 0 && c->ev[i - 1].kind == FG_X4_SPDU &&
            c->ev[i - 1].frame == e->frame &&
            (c->ev[i - 1].spdu == FG_SPDU_GT || c->ev[i - 1].spdu == FG_SPDU_PT))
            pre = c->ev[i - 1].spdu == FG_SPDU_GT ? "GT+" : "PT+";
        if (e->has_serial)
            snprintf(buf, len, "%s%s serial %s", pre, fg_spdu_name(e->spdu), e->serial_text);
        else if (e->spdu == FG_SPDU_AB && e->has_tdisc)
            snprintf(buf, len, "AB (transport disconnect %02x: %s)", e->tdisc,
                     (e->tdisc & FG_TDISC_PROTO_ERROR)  ? "protocol error"
                     : (e->tdisc & FG_TDISC_USER_ABORT) ? "user abort"
                                                        : "no reason");
        else
            snprintf(buf, len, "%s%s", pre, fg_spdu_name(e->spdu));
        break;
    }
    case FG_X4_TPDU:
        if (e->tpdu == FG_COTP_DR)
            snprintf(buf, len, "COTP DR reason %02x", e->reason);
        else if (e->tpdu == FG_COTP_ER)
            snprintf(buf, len, "COTP ER cause %02x", e->reason);
        else
            snprintf(buf, len, "COTP %s", fg_cotp_name(e->tpdu));
        break;
    case FG_X4_FIN:
        snprintf(buf, len, "TCP FIN");
        break;
    case FG_X4_RST:
        snprintf(buf, len, "TCP RST");
        break;
    case FG_X4_OPEN:
        snprintf(buf, len, "TCP open");
        break;
    default:
        snprintf(buf, len, "%s", fg_x4_kind_name(e->kind));
        break;
    }
    return buf;
}

void fg_x400_timeline_print(const struct fg_x400_timeline *tl, FILE *f, uint64_t t0)
{
    if (!t0)
        t0 = tl->stats.first_us;
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_x4_conn *c = &tl->conn[i];
        fprintf(f, "# connection %u %s -> %s: %s, %zu activit%s, %u invalid SPDU(s)\n", c->id,
                c->client, c->server, fg_x4_end_name(c->end), c->nact, c->nact == 1 ? "y" : "ies",
                c->violations);
        for (size_t j = 0; j < c->nev; j++) {
            const struct fg_x4_event *e = &c->ev[j];
            char d[96];
            uint64_t us = e->us >= t0 ? e->us - t0 : 0;
            fprintf(f, "%6llu %4llu.%06llu %u %s %-5s %s", (unsigned long long)e->frame,
                    (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000), c->id,
                    e->dir == FG_C2S ? "c2s" : "s2c", fg_x4_kind_name(e->kind),
                    fg_x4_event_describe(c, j, d, sizeof d));
            if (e->kind == FG_X4_SPDU)
                fprintf(f, " [si %u, V(M) %u, V(A) %u]", e->si, (unsigned)e->vm, (unsigned)e->va);
            if (e->rule)
                fprintf(f, " INVALID %s (%s): %s", e->rule, e->source, e->text ? e->text : "");
            else if (e->text)
                fprintf(f, ": %s", e->text);
            fputc('\n', f);
        }
    }
}

void fg_x400_timeline_json(const struct fg_x400_timeline *tl, FILE *f)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_x4_conn *c = &tl->conn[i];
        for (size_t j = 0; j < c->nev; j++) {
            const struct fg_x4_event *e = &c->ev[j];
            char d[96];
            json_t *o = json_object();
            json_object_set_new(o, "frame", json_integer((json_int_t)e->frame));
            json_object_set_new(o, "time_us", json_integer((json_int_t)e->us));
            json_object_set_new(o, "conn", json_integer(c->id));
            json_object_set_new(o, "dir", json_string(e->dir == FG_C2S ? "c2s" : "s2c"));
            json_object_set_new(o, "kind", json_string(fg_x4_kind_name(e->kind)));
            json_object_set_new(o, "what", json_string(fg_x4_event_describe(c, j, d, sizeof d)));
            if (e->kind == FG_X4_SPDU) {
                json_object_set_new(o, "spdu", json_string(fg_spdu_name(e->spdu)));
                json_object_set_new(o, "si", json_integer(e->si));
                if (e->has_serial)
                    json_object_set_new(o, "serial", json_string(e->serial_text));
            }
            if (e->kind == FG_X4_TPDU)
                json_object_set_new(o, "tpdu", json_string(fg_cotp_name(e->tpdu)));
            if (e->rule) {
                json_object_set_new(o, "rule", json_string(e->rule));
                json_object_set_new(o, "source", json_string(e->source));
            }
            if (e->text)
                json_object_set_new(o, "text", json_string(e->text));
            json_array_append_new(arr, o);
        }
    }
    json_dumpf(arr, f, JSON_INDENT(1));
    fputc('\n', f);
    json_decref(arr);
}
