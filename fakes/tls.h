/* tls.h - TLS for the fakes: a test CA made at run time and TLS sessions
 * over memory BIOs, so that libuv keeps owning the sockets.
 *
 * Used by fakes/ (the fake MTA is the server, the injector the client) and
 * by the proxy's TLS-terminating mode (harness/proxy.c: both ends).
 */
#ifndef FAULTGATE_FAKES_TLS_H
#define FAULTGATE_FAKES_TLS_H

#include <stddef.h>
#include <stdio.h>

struct fg_tls_ctx;
struct fg_tls;

/* fg_tls_server_ctx_new - a fresh CA (EC P-256, self-signed, valid one
 * day) and a server certificate it signs for hostname (subjectAltName DNS
 * and 127.0.0.1).  Nothing touches the disk. */
int fg_tls_server_ctx_new(const char *hostname, struct fg_tls_ctx **out, char *err, size_t errlen);
/* fg_tls_client_ctx_new - a client context; with ca_pem the server must
 * present a chain to that CA, without it nothing is verified (test use). */
int fg_tls_client_ctx_new(const char *ca_pem, struct fg_tls_ctx **out, char *err, size_t errlen);
/* fg_tls_ctx_tls12_only - no version above TLS 1.2 for sessions made
 * from c from now on.  Why: in TLS 1.2 the handshake records (content type
 * 22, RFC 5246 §6.2.1) stay apart from application data (23) on the wire,
 * so that who sent data first after STARTTLS is visible without
 * decryption; TLS 1.3 sends its handshake as application data records
 * (RFC 8446 §5.1). */
void fg_tls_ctx_tls12_only(struct fg_tls_ctx *c);
/* The CA certificate, PEM; NULL for a client context. */
const char *fg_tls_ca_pem(const struct fg_tls_ctx *c);
void fg_tls_ctx_free(struct fg_tls_ctx *c);

struct fg_tls *fg_tls_new(struct fg_tls_ctx *c);
void fg_tls_free(struct fg_tls *t);
/* Ciphertext received from the peer. */
int fg_tls_put(struct fg_tls *t, const char *buf, size_t len);
/* Advance the handshake: 1 done, 0 needs more input, <0 failed (detail in
 * fg_tls_error). */
int fg_tls_handshake(struct fg_tls *t);
/* Plaintext out: >0 bytes, 0 nothing yet, <0 failed or closed. */
int fg_tls_read(struct fg_tls *t, char *buf, size_t cap);
/* Plaintext in: 0 or <0. */
int fg_tls_write(struct fg_tls *t, const char *buf, size_t len);
/* Ciphertext to send: a malloc'd buffer (caller frees) or NULL. */
char *fg_tls_take_output(struct fg_tls *t, size_t *len);
const char *fg_tls_error(const struct fg_tls *t);
/* Negotiated protocol version ("TLSv1.3"), after the handshake. */
const char *fg_tls_version(const struct fg_tls *t);

/* fg_tls_keylog_set - from now on every TLS session of this process (any
 * context, either end) appends its secrets to f in the NSS key log format
 * that Wireshark reads (tls.keylog_file), flushed per line; NULL stops.
 * f stays the caller's. */
void fg_tls_keylog_set(FILE *f);
/* SNI for a client session, before its handshake. */
int fg_tls_set_server_name(struct fg_tls *t, const char *name);
/* Non-zero once the handshake is done. */
int fg_tls_is_up(const struct fg_tls *t);
/* Ciphertext to send, without an allocation: its length, then up to cap
 * octets of it copied into buf (returns how many). */
size_t fg_tls_output_len(const struct fg_tls *t);
size_t fg_tls_output_read(struct fg_tls *t, char *buf, size_t cap);
/* Queue a close_notify alert (then take the output as usual). */
void fg_tls_shutdown(struct fg_tls *t);

#endif
