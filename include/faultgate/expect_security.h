/* faultgate/expect_security.h - the inbound security cases: the SMTP
 * smuggling end-of-data variants the injector can send, and the rules
 * that judge the gateway as a server receiving hostile input
 * (harness/expect_security.c, registered in expect.h's FG_EXPECT_TABLES).
 */
#ifndef FAULTGATE_EXPECT_SECURITY_H
#define FAULTGATE_EXPECT_SECURITY_H

#include <stddef.h>

#include "faultgate/expect.h"

/* fg_smuggle_parse - a scenario's `smuggle` value: a variant's name
 * ("lflf", ...; fg_smuggle_variants below and scenarios/FORMAT.md) or the octets themselves written
 * with the escapes \r \n \t \0 \xHH \\ (single-quoted in YAML, so that YAML leaves the backslashes
 * alone).  On success *seq (octets, may hold NUL) and *name (the variant's name, or "custom") are
 * allocated; on error err says why and *col is the 1-based column in text (0: the whole value). */
int fg_smuggle_parse(const char *text, char **seq, size_t *len, char **name, char *err,
                     size_t errlen, int *col);

/* fg_starttls_inject_parse - a scenario's `starttls_inject` value: the
 * plaintext sent in the same write as STARTTLS (CVE-2011-0411), with the
 * escapes above; whole command lines (ending with \r\n), at most 4096
 * octets, no line beginning like a TLS record. */
int fg_starttls_inject_parse(const char *text, char **out, size_t *len, char *err, size_t errlen,
                             int *col);

/* fg_smuggle_describe - the octets with the escapes above, for evidence
 * ("\r\n.\x00\r\n"); returns buf. */
const char *fg_smuggle_describe(const char *seq, size_t len, char *buf, size_t buflen);

/* The variants by name, NULL-terminated (names and octets). */
struct fg_smuggle_variant {
    const char *name;
    const char *seq;
    size_t len;
    const char *origin; /* which public probe set lists it */
};
extern const struct fg_smuggle_variant fg_smuggle_variants[];

#endif
