/* faultgate/injector.h - submits messages into the gateway's SMTP port.
 *
 * Each message carries a unique token in an X-Faultgate-Token header so
 * that its fate can be followed across legs.  The injector is a strict SMTP
 * client on the shared parser: EHLO (HELO if refused), MAIL, RCPT, DATA,
 * dot-stuffed body (or BDAT), QUIT; messages go over up to `concurrency`
 * connections at once, pipelined when asked and offered; every wait has a
 * deadline.  fg_injector_close and the done callback always come from the
 * loop, never from inside fg_injector_start or fg_injector_close.
 */
#ifndef FAULTGATE_INJECTOR_H
#define FAULTGATE_INJECTOR_H

#include <stdint.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/smtp.h"

/* Per-message options (a scenario's message keys, scenarios/FORMAT.md). */
#define FG_INJ_PIPELINING 0x1u /* MAIL, RCPT..., DATA in one write if PIPELINING is offered */
#define FG_INJ_BDAT 0x2u       /* BDAT instead of DATA if CHUNKING is offered (RFC 3030) */
#define FG_INJ_8BIT 0x4u       /* UTF-8 body, BODY=8BITMIME (RFC 6152) */
#define FG_INJ_NO_DOTS 0x8u    /* no body line starts with '.' */
#define FG_INJ_MAX_CONCURRENCY 1000
#define FG_INJ_MAX_RCPTS 10000

struct fg_inject_msg {
    char token[FG_TOKEN_MAX]; /* filled by the caller */
    const char *from;
    const char *const *to;
    size_t nto;
    uint64_t size;
    unsigned flags; /* FG_INJ_* */
    /* Connections open at once while this message is the next to go: the
     * messages are handed out in order, each connection takes the next one
     * when it is done with its own; 0 is 1. */
    unsigned concurrency;
    /* results */
    int status;     /* 0 accepted (2xx to end of data); <0 error:
                     * FG_EPROTO a non-2xx reply (see reply_code),
                     * FG_ETIMEOUT no reply within timeout_ms,
                     * UV_* the connection failed (UV_EOF: peer closed),
                     * FG_EINPUT bad envelope (no from/to, CR or LF),
                     * FG_ENOTAVAIL not attempted (closed early),
                     * UV_ECANCELED fg_injector_close during it;
                     * an 8-bit message to a server without 8BITMIME
                     * is not sent: FG_EPROTO, reply_code 0 */
    int reply_code; /* the refusal's code, or the accepting reply's */
    uint64_t accepted_us;
    unsigned used; /* FG_INJ_* as sent: PIPELINING and BDAT only where offered */
};

struct fg_injector;

struct fg_injector_opts {
    const char *host;
    int port;
    struct fg_inject_msg *msgs; /* not owned; results written into it */
    size_t nmsgs;
    uint64_t timeout_ms;        /* per reply; 0: 30 s */
    struct fg_capture *capture; /* synthesized capture of this leg; may be NULL */
    const char *helo;           /* default "injector.faultgate.test" */
};

/* done_cb once every message was submitted or failed. */
typedef void (*fg_injector_done_cb)(struct fg_injector *inj, void *ud);
int fg_injector_start(uv_loop_t *loop, const struct fg_injector_opts *o, fg_injector_done_cb cb,
                      void *ud, struct fg_injector **out);
/* Liveness probe (nmsgs == 0): 0 when a 2xx greeting came, else negative
 * (UV_ECONNREFUSED, FG_ETIMEOUT, FG_EPROTO for a non-2xx greeting);
 * FG_ENOTAVAIL before the outcome is known. */
int fg_injector_probe_status(const struct fg_injector *inj);
/* Connections opened so far (with concurrency 1: one, plus one per
 * message that failed with its connection). */
unsigned fg_injector_connections(const struct fg_injector *inj);
/* Closes what is still open; cb after every handle is closed, inj freed.
 * May be called from done_cb.  done_cb is not called after this. */
void fg_injector_close(struct fg_injector *inj, void (*cb)(void *ud), void *ud);

/* fg_injector_body - the message text (headers, token, body of about size
 * octets), CRLF line ends, not dot-stuffed; caller frees. */
char *fg_injector_body(const struct fg_inject_msg *m, size_t *len);

/* `faultgate inject` (harness/cmd_inject.c). */
int fg_cmd_inject(int argc, char **argv);

#endif
