/* refgw.h - internals shared by the reference gateway's files.
 *
 * refgw is a small store-and-forward SMTP relay: refgw.c holds the command
 * line, logging and the inbound SMTP server; refgw_queue.c the spool and the
 * message queue (retry schedule, bounces); refgw_out.c the outbound SMTP
 * client that delivers queued messages to the upstream.
 */
#ifndef REFGW_H
#define REFGW_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum refgw_bug {
    REFGW_BUG_NONE = 0,
    REFGW_BUG_NO_DATA_TIMEOUT,    /* Q129140: waits forever after the final dot */
    REFGW_BUG_CRASH_ON_EHLO_DROP, /* Q197142: abort() when the peer drops after EHLO */
    REFGW_BUG_SERIAL_INBOUND,     /* Q131150: one inbound at a time, none while relaying */
    REFGW_BUG_SILENT_DROP,        /* Q135031: unroutable mail stays in the queue silently */
    REFGW_BUG_BAD_MINOR_SYNC,     /* Q194685: invalid minor sync points on the X.400 side */
    REFGW_BUG_SMUGGLING,          /* CVE-2023-51764 class: lenient end of data */
    REFGW_BUG_EARLY_COMMANDS,     /* answers out of step: before its greeting, before EHLO's */
    REFGW_BUG_STARTTLS_INJECTION  /* CVE-2011-0411: runs plaintext read with STARTTLS after TLS */
};

/* Timeouts in milliseconds (RFC 5321 §4.5.3.2). */
struct refgw_timeouts {
    uint64_t greeting, ehlo, mail, rcpt, data_init, data_block, data_done, idle;
};

struct refgw_config {
    char listen_host[256];
    int listen_port;
    char up_host[256];
    int up_port;
    char *spool;
    struct refgw_timeouts to;
    uint64_t retry_ms, max_retry_ms, give_up_ms;
    uint64_t max_size;
    enum refgw_bug bug;
    char hostname[256];
    char *ready_file;
    char x400_host[256];   /* --x400-upstream: relay to X.400 instead of SMTP */
    char x400_domain[256]; /* --x400-domain: only mail for this domain goes via X.400 */
    int x400_port;         /* 0: no X.400 side */
    int x400_bug;          /* enum fg_x400_sync_bug, with REFGW_BUG_BAD_MINOR_SYNC */
    int x400_normal;       /* --x400-mode 1988: RTSE over ACSE and presentation */
    int x400_isode_sink;   /* --x400-application isode-sink: ISODE's tsapd as the peer */
    int starttls;          /* --starttls: offer STARTTLS inbound (RFC 3207) */
};

extern struct refgw_config refgw_cfg;
extern uv_loop_t *refgw_loop;

void refgw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Recipient states across delivery attempts. */
enum refgw_rcpt_state {
    RCPT_PENDING = 0, /* still to be delivered */
    RCPT_ACCEPTED,    /* 250 to RCPT in the current attempt */
    RCPT_DONE,        /* 250 after the final dot */
    RCPT_FAILED,      /* permanent failure, bounce not yet generated */
    RCPT_BOUNCED      /* permanent failure, bounce queued */
};

struct refgw_rcpt {
    char *addr;
    enum refgw_rcpt_state state;
    char *reply; /* the reply that failed it, for the bounce */
};

struct refgw_msg {
    struct refgw_msg *next;
    char id[40];
    char *sender; /* "" is the null reverse-path */
    struct refgw_rcpt *rcpts;
    size_t nrcpts, rcap;
    char *body; /* un-stuffed, CRLF lines, Received: already prepended */
    size_t body_len;
    uint64_t arrival_s; /* wall clock, seconds */
    uint64_t next_ms;   /* monotonic time of the next attempt */
    uint64_t delay_ms;  /* current backoff */
    unsigned attempts;
    char *last_error;
};

/* refgw_queue.c */
struct refgw_msg *refgw_msg_new(void);
void refgw_msg_free(struct refgw_msg *m);
void refgw_msg_add_rcpt(struct refgw_msg *m, const char *addr, size_t len);
int refgw_spool_write(struct refgw_msg *m);
void refgw_spool_remove(const struct refgw_msg *m);
int refgw_spool_load(void);
void refgw_queue_add(struct refgw_msg *m);
/* route: REFGW_ROUTE_SMTP or REFGW_ROUTE_X400 - only messages for that side. */
enum { REFGW_ROUTE_SMTP, REFGW_ROUTE_X400 };
int refgw_msg_route(const struct refgw_msg *m);
struct refgw_msg *refgw_queue_next_due(uint64_t now, uint64_t *wait_ms, int route);
/* The attempt on m ended; reason describes the last transient failure (or
 * NULL).  Bounces failed recipients, reschedules pending ones, removes the
 * message once nothing is left. */
void refgw_msg_attempt_done(struct refgw_msg *m, const char *reason);
/* Fail every recipient not yet done (permanent) with reply. */
void refgw_msg_fail_all(struct refgw_msg *m, const char *reply);
void refgw_queue_free_all(void);
void refgw_msg_make_id(char *out, size_t len);

/* refgw_out.c */
void refgw_out_init(void);
void refgw_out_kick(void);
int refgw_out_busy(void);
void refgw_out_shutdown(void);

/* refgw_x400.c: the X.400 side (used instead of refgw_out.c's SMTP
 * client when --x400-upstream is given) */
void refgw_x400_init(void);
void refgw_x400_kick(void);
int refgw_x400_busy(void);
void refgw_x400_shutdown(void);

/* refgw.c */
void refgw_in_outbound_idle(void);

#endif
