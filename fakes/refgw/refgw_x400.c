/* refgw_x400.c - refgw's X.400 side: with --x400-upstream, queued messages
 * leave as X.400 (RFC 1006 + ISO 8327 session + RTS in X.410-1984 mode, or
 * 1988 normal mode with --x400-mode 1988) instead of SMTP, one association
 * per message, through the fake X.400 MTA's initiator
 * (faultgate/fake_x400.h).  --x400-application isode-sink makes ISODE's
 * tsapd the foreign system (its sink application takes the messages).
 *
 * --bug bad-minor-sync=VARIANT makes the minor synchronization points
 * invalid the way KB Q194685's gateway did (x400-wire.md §7.2); the strict
 * foreign system then aborts the association and the message stays queued
 * and is retried, as the KB's log shows ("Association aborted").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fake_x400.h"
#include "faultgate/util.h"
#include "refgw.h"

static struct {
    uv_timer_t qtimer;
    struct fg_x400_sender *snd;
    struct refgw_msg *msg;
    int shutting_down;
    /* no-reset: the buggy counter lives as long as the process */
    uint32_t carry;
} xo;

static void qtimer_cb(uv_timer_t *t)
{
    (void)t;
    refgw_x400_kick();
}

void refgw_x400_init(void)
{
    uv_timer_init(refgw_loop, &xo.qtimer);
}

int refgw_x400_busy(void)
{
    return xo.snd != NULL;
}

static void sent(void *ud, int status, const char *detail)
{
    struct refgw_msg *m = ud;
    xo.snd = NULL;
    xo.msg = NULL;
    if (status == UV_ECANCELED)
        return; /* shutting down: the message stays in the spool */
    if (status == 0) {
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].state == RCPT_PENDING || m->rcpts[i].state == RCPT_ACCEPTED)
                m->rcpts[i].state = RCPT_DONE;
        refgw_log("delivered id=%s via x400 %s:%d", m->id, refgw_cfg.x400_host,
                  refgw_cfg.x400_port);
        refgw_msg_attempt_done(m, NULL);
    } else {
        refgw_log("x400 transfer failed id=%s: %s", m->id, detail);
        refgw_msg_attempt_done(m, detail);
    }
    refgw_x400_kick();
}

void refgw_x400_kick(void)
{
    if (xo.snd || xo.shutting_down)
        return;
    uint64_t wait = UINT64_MAX;
    struct refgw_msg *m = refgw_queue_next_due(fg_now_ms(), &wait, REFGW_ROUTE_X400);
    uv_timer_stop(&xo.qtimer);
    if (!m) {
        if (wait != UINT64_MAX)
            uv_timer_start(&xo.qtimer, qtimer_cb, wait, 0);
        return;
    }
    m->attempts++;
    refgw_log("delivery attempt id=%s attempt=%u via x400 %s:%d%s%s", m->id, m->attempts,
              refgw_cfg.x400_host, refgw_cfg.x400_port,
              refgw_cfg.x400_bug ? " bad-minor-sync=" : "",
              refgw_cfg.x400_bug ? fg_x400_sync_bug_name(refgw_cfg.x400_bug) : "");
    /* RTS deadline per answer: the SMTP data timeouts are the closest
     * configured waits. */
    struct fg_x400_send_opts o = {.host = refgw_cfg.x400_host,
                                  .port = refgw_cfg.x400_port,
                                  .msg = (const uint8_t *)m->body,
                                  .len = m->body_len,
                                  .checkpoint = 1,
                                  .window = 3,
                                  .bug = refgw_cfg.x400_bug,
                                  .serial_carry = &xo.carry,
                                  .timeout_ms = refgw_cfg.to.data_done,
                                  .normal = refgw_cfg.x400_normal,
                                  .isode_sink = refgw_cfg.x400_isode_sink};
    xo.msg = m;
    int rc = fg_x400_send(refgw_loop, &o, sent, m, &xo.snd);
    if (rc < 0) {
        xo.snd = NULL;
        xo.msg = NULL;
        refgw_msg_attempt_done(m, fg_strerror(rc));
    }
}

void refgw_x400_shutdown(void)
{
    xo.shutting_down = 1;
    uv_timer_stop(&xo.qtimer);
    if (xo.snd)
        fg_x400_sender_cancel(xo.snd);
    uv_close((uv_handle_t *)&xo.qtimer, NULL);
}
