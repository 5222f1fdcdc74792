/* faultgate/meta.h - a run's metadata, written beside its pcap as
 * <scenario>.meta.json: the roles of the ports, the profile's timeouts,
 * the fault decisions, the injected tokens.  With the pcap it is all that
 * `faultgate judge` needs to reach the live run's verdicts.
 */
#ifndef FAULTGATE_META_H
#define FAULTGATE_META_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/fault.h"
#include "faultgate/profile.h"

#define FG_META_VERSION 1

struct fg_meta_token {
    char token[FG_TOKEN_MAX];
    int accepted; /* the gateway answered 2xx to its end of data */
    int reply_code;
    uint64_t accepted_us;
};

/* A client under test (a `submit:` profile): how its command ended for
 * one message (faultgate/submit.h). */
struct fg_meta_client {
    char token[FG_TOKEN_MAX];
    int64_t exit_status;
    int term_signal;
    int timed_out; /* faultgate killed it (its deadline, or the end of the run) */
    int spawned;   /* 0: the command could not be started */
    uint64_t start_us;
    uint64_t duration_ms;
    char *stderr_tail; /* owned; may be NULL */
};

struct fg_meta {
    char *scenario_id;
    uint64_t seed;
    char *capture_mode; /* "live" or "synth" */
    char *pcap;         /* file name, relative to the meta file */
    int gateway_port;   /* inbound leg: injector -> gateway */
    int proxy_port;     /* outbound leg: gateway -> proxy */
    int mta_port;       /* outbound leg: proxy -> fake MTA */
    int x400_port;      /* X.400 leg (RFC 1006): the gateway's peer port; 0 if none */
    int x400_mta_port;  /* with X.400 faults: the X.400 proxy -> fake X.400 MTA leg (the
                           proxy's own port is x400_port); 0 if none */
    char *ledger;       /* the fake MTA's delivery ledger (JSON lines), relative to
                           the meta file; NULL if none */
    char *keylog;       /* TLS secrets of the run's sessions (NSS key log format, for
                           `tshark -o tls.keylog_file:`), relative to the meta file;
                           NULL if no TLS session was made */
    int tls_terminate;  /* the proxy terminated STARTTLS (scenario `tls: terminate`) */
    char *profile_name;
    int tls_policy; /* the profile's enum fg_tls_policy ("tls_policy"; absent: unknown) */
    char *gateway_version;
    struct fg_timeout *timeouts;
    size_t ntimeouts;
    struct fg_decision *decisions;
    size_t ndecisions;
    struct fg_meta_token *tokens;
    size_t ntokens;
    uint64_t start_us, end_us;
    /* The liveness probe: connections to gateway_port opened at or after
     * this time are the harness asking "does the gateway still answer?"
     * at the end of the run (0: no probe). */
    uint64_t probe_start_us;
    int gateway_running_at_end; /* the process was alive when the run ended */
    int64_t gateway_exit_status;
    int gateway_term_signal;
    /* The last line the gateway wrote to its log when it was found dead at
     * the end of the run (why it died, often), else NULL. */
    char *gateway_last_output;
    /* Optional: the client's runs, one per message, in order (written only
     * when nclients > 0). */
    struct fg_meta_client *clients;
    size_t nclients;
};

int fg_meta_write(const char *path, const struct fg_meta *m, char *err, size_t errlen);
int fg_meta_read(const char *path, struct fg_meta **out, char *err, size_t errlen);
void fg_meta_free(struct fg_meta *m);
/* fg_meta_clear - free what m holds (not m itself) and zero it. */
void fg_meta_clear(struct fg_meta *m);
/* Lookup of a timeout in the meta's copy of the profile's timeouts. */
int64_t fg_meta_timeout(const struct fg_meta *m, const char *name);

#endif
