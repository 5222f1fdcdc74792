/* faultgate/fake_mta.h - the fake MTA: the far end of the outbound leg.
 *
 * A strict SMTP server on loopback built on the shared SMTP parser.  EHLO
 * offers PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING (BDAT), DSN,
 * ENHANCEDSTATUSCODES, STARTTLS (a test CA made at run time) and AUTH
 * PLAIN/LOGIN, each of which a script can hide, before and after TLS
 * separately.  A script (struct fg_mta_script, YAML in scenarios/FORMAT.md
 * "The fake MTA") sets the reply, delay, close, reset or hang per stage,
 * covering what Postfix's smtp-sink options do.  Every protocol violation
 * the client commits is recorded as an event (log and ledger), and every
 * accepted message as a ledger entry (JSON lines).
 */
#ifndef FAULTGATE_FAKE_MTA_H
#define FAULTGATE_FAKE_MTA_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "faultgate/smtp.h"

struct fg_mta;

/* --- capabilities -------------------------------------------------------- */

#define FG_MTA_CAP_MAP(XX)                                                                         \
    XX(PIPELINING, "PIPELINING")                                                                   \
    XX(SIZE, "SIZE")                                                                               \
    XX(8BITMIME, "8BITMIME")                                                                       \
    XX(SMTPUTF8, "SMTPUTF8")                                                                       \
    XX(CHUNKING, "CHUNKING")                                                                       \
    XX(DSN, "DSN")                                                                                 \
    XX(ENHANCEDSTATUSCODES, "ENHANCEDSTATUSCODES")                                                 \
    XX(STARTTLS, "STARTTLS")                                                                       \
    XX(AUTH, "AUTH")

enum fg_mta_cap_bit {
#define XX(name, text) FG_MTA_CAPBIT_##name,
    FG_MTA_CAP_MAP(XX)
#undef XX
        FG_MTA_CAPBIT__COUNT
};
#define FG_MTA_CAP(name) (1u << FG_MTA_CAPBIT_##name)
#define FG_MTA_CAPS_ALL ((1u << FG_MTA_CAPBIT__COUNT) - 1)
/* fg_mta_cap_lookup - bit for "PIPELINING", "8bitmime" ... or 0. */
unsigned fg_mta_cap_lookup(const char *name);
const char *fg_mta_cap_name(unsigned bit_index);

/* --- scripted behaviour -------------------------------------------------- */

#define FG_MTA_STAGE_MAP(XX)                                                                       \
    XX(GREETING, "greeting")                                                                       \
    XX(EHLO, "ehlo")                                                                               \
    XX(HELO, "helo")                                                                               \
    XX(MAIL, "mail")                                                                               \
    XX(RCPT, "rcpt")                                                                               \
    XX(DATA, "data")                                                                               \
    XX(EOD, "end-of-data")                                                                         \
    XX(BDAT, "bdat")                                                                               \
    XX(RSET, "rset")                                                                               \
    XX(NOOP, "noop")                                                                               \
    XX(QUIT, "quit")                                                                               \
    XX(STARTTLS, "starttls")                                                                       \
    XX(AUTH, "auth")                                                                               \
    XX(VRFY, "vrfy")                                                                               \
    XX(OPENING, "opening") /* EHLO or HELO */

enum fg_mta_stage {
#define XX(name, text) FG_MTA_ST_##name,
    FG_MTA_STAGE_MAP(XX)
#undef XX
        FG_MTA_ST__COUNT
};
/* fg_mta_stage_lookup - "mail", "end-of-data" (also "." and "dot"), ...;
 * -1 if unknown. */
int fg_mta_stage_lookup(const char *name);
const char *fg_mta_stage_name(enum fg_mta_stage s);

/* What happens after the (optional) reply. */
enum fg_mta_end {
    FG_MTA_END_NONE,  /* carry on */
    FG_MTA_END_CLOSE, /* FIN (smtp-sink -q without a reply, -Q after a 421) */
    FG_MTA_END_RESET, /* RST */
    FG_MTA_END_HANG   /* never answer, stop reading, keep the connection */
};

/* One rule: at a stage (on chosen connections / occurrences, with a
 * probability drawn from the script's seed), wait, then answer with the
 * given reply instead of the normal one (or with none), then end as told. */
struct fg_mta_rule {
    enum fg_mta_stage stage;
    unsigned nth;           /* 0: every occurrence; N: the Nth on the connection (RCPT #3) */
    unsigned conn;          /* 0: every connection; N: connection N only */
    unsigned from;          /* 0: -; N: connections N, N+1, ... */
    double p;               /* probability in [0,1]; 1 when not given */
    int code;               /* 0: the normal reply; -1: no reply at all */
    char *text;             /* reply text, lines separated by '\n' (multi-line reply) */
    uint64_t delay_ms;      /* wait before replying */
    unsigned odds;          /* smtp-sink -W odds: the delay is multiplied by the
                             * number of dice rolls (0..99) below odds, +1 */
    uint64_t read_delay_ms; /* data: stop reading the body for this long (-H) */
    uint64_t abort_ms;      /* data: after 354, this long, then 550 and close (-A) */
    enum fg_mta_end end;
    int line, col; /* where it was written (0 when built in code) */
};

struct fg_mta_script {
    unsigned caps;     /* advertised before STARTTLS; FG_MTA_CAPS_ALL by default */
    unsigned caps_tls; /* after STARTTLS (RFC 3207 §4.2: may differ) */
    int no_esmtp;      /* EHLO answered 500, greeting without ESMTP (-e) */
    char *banner;      /* greeting text after "220 " ("********" for -P) */
    char *hostname;    /* default mta.faultgate.test */
    uint64_t max_size; /* advertised SIZE; 0: 10 MiB */
    unsigned max_rcpt; /* 0: 1000 (RFC 5321 §4.5.3.1.8: at least 100) */
    int require_tls;   /* 530 to MAIL before STARTTLS */
    int require_auth;  /* 530 to MAIL before AUTH */
    int window;        /* receive buffer in octets (smtp-sink -T); 0: default */
    uint64_t seed;     /* for p and odds */
    /* Octets written right after the 220 to STARTTLS, in the same write
     * (one segment), before the handshake: the server side of STARTTLS
     * response injection (RFC 3207 §4.2; CVE-2011-0411 class).  NULL: none. */
    char *starttls_inject;
    size_t starttls_inject_len;
    struct fg_mta_rule *rules;
    size_t nrules;
};

void fg_mta_script_init(struct fg_mta_script *s);
void fg_mta_script_clear(struct fg_mta_script *s);
/* fg_mta_script_parse_node - read a script from a YAML mapping (an `mta:`
 * section, or a --script file's root; struct fg_yaml_doc/fg_yaml_node from
 * faultgate/yamldoc.h).  Errors: "file:line:col: message". */
struct fg_yaml_doc;
struct fg_yaml_node;
int fg_mta_script_parse_node(const struct fg_yaml_doc *d, const struct fg_yaml_node *n,
                             struct fg_mta_script *s, char *err, size_t errlen);
int fg_mta_script_load(const char *path, struct fg_mta_script *s, char *err, size_t errlen);

/* --- strictness ---------------------------------------------------------- */

#define FG_MTA_VIOL_MAP(XX)                                                                        \
    XX(BARE_CR, "bare-cr", "RFC 5321 §2.3.8")                                                      \
    XX(BARE_LF, "bare-lf", "RFC 5321 §2.3.8, §4.1.1.4")                                            \
    XX(LONG_LINE, "long-line", "RFC 5321 §4.5.3.1.6")                                              \
    XX(LONG_COMMAND, "long-command", "RFC 5321 §4.5.3.1.4")                                        \
    XX(OUT_OF_SEQUENCE, "out-of-sequence", "RFC 5321 §4.1.4")                                      \
    XX(NESTED_MAIL, "nested-mail", "RFC 5321 §4.1.4")                                              \
    XX(DATA_WITHOUT_354, "data-without-354", "RFC 5321 §3.3; RFC 2920 §3.1")                       \
    XX(PIPELINING, "pipelining", "RFC 2920 §3.1")                                                  \
    XX(BDAT_MIXED, "bdat-mixed-with-data", "RFC 3030 §3")                                          \
    XX(EIGHTBIT, "8bit-without-8bitmime", "RFC 6152 §3")                                           \
    XX(UTF8, "utf8-without-smtputf8", "RFC 6531 §3.4")                                             \
    XX(SIZE, "size-exceeded", "RFC 1870 §6")                                                       \
    XX(UNADVERTISED, "unadvertised-extension", "RFC 5321 §4.1.1.11")                               \
    XX(STARTTLS_INJECTION, "starttls-plaintext-after", "RFC 3207 §4.2")

enum fg_mta_viol {
#define XX(name, text, src) FG_MTA_V_##name,
    FG_MTA_VIOL_MAP(XX)
#undef XX
        FG_MTA_V__COUNT
};
const char *fg_mta_viol_name(enum fg_mta_viol v);
const char *fg_mta_viol_source(enum fg_mta_viol v);

struct fg_mta_violation {
    enum fg_mta_viol kind;
    unsigned conn;
    uint64_t t_us;
    uint64_t offset; /* client stream offset near the violation */
    char detail[160];
};

/* --- the ledger ---------------------------------------------------------- */

struct fg_ledger_entry {
    char token[FG_TOKEN_MAX];
    char *mail_from;
    char **rcpt;
    size_t nrcpt;
    uint64_t size;      /* body octets after un-stuffing */
    char sha256[65];    /* hex */
    uint64_t t_us;      /* wall clock when the end of data was accepted */
    uint64_t start_us;  /* wall clock of the MAIL command */
    unsigned conn;      /* 1-based connection number */
    int tls;            /* received under STARTTLS */
    int bdat;           /* sent with BDAT */
    unsigned nviol;     /* violations on the connection during this transaction */
    unsigned viol_mask; /* 1 << enum fg_mta_viol of each */
};

struct fg_mta_opts {
    const char *host;                   /* "127.0.0.1" */
    int port;                           /* 0: ephemeral */
    const char *ledger_path;            /* JSON lines, appended; may be NULL */
    const char *maildir;                /* one file per message; may be NULL */
    uint64_t max_size;                  /* advertised SIZE; 0: 10 MiB (the script's wins) */
    FILE *log;                          /* may be NULL */
    const struct fg_mta_script *script; /* copied; NULL: the defaults */
};

int fg_mta_new(uv_loop_t *loop, const struct fg_mta_opts *o, struct fg_mta **out, char *err,
               size_t errlen);
int fg_mta_port(const struct fg_mta *m);
const struct fg_ledger_entry *fg_mta_ledger(const struct fg_mta *m, size_t *n);
/* How many messages carrying token were accepted. */
unsigned fg_mta_count_token(const struct fg_mta *m, const char *token);
const struct fg_mta_violation *fg_mta_violations(const struct fg_mta *m, size_t *n);
/* The test CA's certificate (PEM) once STARTTLS is offered, else NULL. */
const char *fg_mta_ca_pem(const struct fg_mta *m);
void fg_mta_close(struct fg_mta *m, void (*cb)(void *ud), void *ud);

/* `faultgate fake-mta` (harness/cmd_fake_mta.c). */
int fg_cmd_fake_mta(int argc, char **argv);

#endif
