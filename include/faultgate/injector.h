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
/* Pipelining desynchronisation, the gateway as a server (scenarios/FORMAT.md
 * `desync`): EHLO sent before the greeting, or an out-of-sequence RCPT sent
 * with EHLO before its reply. */
#define FG_INJ_EARLY_GREETING 0x10u
#define FG_INJ_EARLY_EHLO 0x20u
/* In `used`: the message went over TLS after STARTTLS (starttls_inject). */
#define FG_INJ_STARTTLS 0x40u
/* After its TLS handshake the injector waits this long before its EHLO, so
 * that anything the server sends unasked (the answer to the injected
 * plaintext) is on the wire, and in the capture, before that EHLO. */
#define FG_INJ_TLS_SETTLE_MS 200u
/* The smuggled message's token: the carrier's token with this suffix. */
#define FG_INJ_SMUGGLED_SUFFIX "-smuggled"
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
    /* SMTP smuggling (scenarios/FORMAT.md `smuggle`): when smuggle_len > 0
     * the body ends with these octets instead of CRLF.CRLF, followed by
     * MAIL FROM:<smuggle_from>, RCPT TO:<to[0]>, DATA, a second message
     * (token + FG_INJ_SMUGGLED_SUFFIX) and CRLF.CRLF, all in one write;
     * after the reply to that end of data the injector sends QUIT and
     * reads every reply until 221, so the capture holds whatever the
     * gateway answered to the smuggled commands.  Not owned. */
    const char *smuggle;
    size_t smuggle_len;
    const char *smuggle_from;
    /* STARTTLS command injection (CVE-2011-0411; scenarios/FORMAT.md
     * `starttls_inject`): when starttls_inject_len > 0 and the EHLO reply
     * offers STARTTLS, the injector sends "STARTTLS\r\n" and these octets
     * in one write (one segment: TCP_NODELAY), then on a 220 does the TLS
     * handshake (TLS 1.2 at most; the server's certificate is not
     * verified: the probe is about what the server runs, not who it is),
     * waits FG_INJ_TLS_SETTLE_MS, sends EHLO over TLS (RFC 3207 §4.2) and
     * goes on with the message there.  On another reply to STARTTLS the
     * message fails with that code and the injector sends QUIT, reading
     * every reply until 221.  Without STARTTLS offered the message goes in
     * plaintext.  Not owned. */
    const char *starttls_inject;
    size_t starttls_inject_len;
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
