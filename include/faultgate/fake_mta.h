/* faultgate/fake_mta.h - the fake MTA: the far end of the outbound leg.
 *
 * An SMTP server on loopback (EHLO advertising PIPELINING, SIZE, 8BITMIME;
 * HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) built on the shared SMTP
 * parser.  It keeps every message it accepts and writes a ledger line per
 * message (JSON lines: token, envelope, size, SHA-256, time, connection).
 */
#ifndef FAULTGATE_FAKE_MTA_H
#define FAULTGATE_FAKE_MTA_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "faultgate/smtp.h"

struct fg_mta;

struct fg_ledger_entry {
    char token[FG_TOKEN_MAX];
    char *mail_from;
    char **rcpt;
    size_t nrcpt;
    uint64_t size;   /* body octets after un-stuffing */
    char sha256[65]; /* hex */
    uint64_t t_us;   /* wall clock when the end of data was accepted */
    unsigned conn;   /* 1-based connection number */
};

struct fg_mta_opts {
    const char *host;        /* "127.0.0.1" */
    int port;                /* 0: ephemeral */
    const char *ledger_path; /* JSON lines, appended; may be NULL */
    const char *maildir;     /* one file per message; may be NULL */
    uint64_t max_size;       /* advertised SIZE; 0: 10 MiB */
    FILE *log;               /* may be NULL */
};

int fg_mta_new(uv_loop_t *loop, const struct fg_mta_opts *o, struct fg_mta **out, char *err,
               size_t errlen);
int fg_mta_port(const struct fg_mta *m);
const struct fg_ledger_entry *fg_mta_ledger(const struct fg_mta *m, size_t *n);
/* How many messages carrying token were accepted. */
unsigned fg_mta_count_token(const struct fg_mta *m, const char *token);
void fg_mta_close(struct fg_mta *m, void (*cb)(void *ud), void *ud);

#endif
