/* faultgate/tls_decrypt.h - TLS decryption from a trace with a key log.
 *
 * After STARTTLS (RFC 3207 §4) a connection's bytes are TLS records.  With
 * the session secrets in the NSS key log format (what fakes/tls.c writes
 * beside the pcap, and what Wireshark reads as tls.keylog_file), a
 * decoder turns each direction's reassembled bytes back into the
 * application data the peers exchanged, so that the SMTP session inside
 * TLS can be parsed like any other.
 *
 * Supported: TLS 1.3 (RFC 8446) with TLS_AES_128_GCM_SHA256,
 * TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256, including
 * HelloRetryRequest and KeyUpdate; TLS 1.2 (RFC 5246) with the AEAD suites
 * (AES-GCM, RFC 5288 / RFC 5289; ChaCha20-Poly1305, RFC 7905).  Anything
 * else (TLS 1.0/1.1, CBC or CCM suites) is reported, never guessed at.
 */
#ifndef FAULTGATE_TLS_DECRYPT_H
#define FAULTGATE_TLS_DECRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/smtp.h" /* enum fg_dir */

/* --- the key log --------------------------------------------------------- */

struct fg_keylog;

/* fg_keylog_load - read an NSS key log file.  Lines it uses:
 * CLIENT_RANDOM (TLS 1.2 master secret), CLIENT_/SERVER_HANDSHAKE_TRAFFIC_
 * SECRET and CLIENT_/SERVER_TRAFFIC_SECRET_0 (TLS 1.3); other labels and
 * '#' comments are skipped.  A line with a known label but a malformed
 * random or secret is an error "path:line:col: ..." (FG_EINPUT); a file
 * that cannot be opened, an error naming it.  The same secret may appear
 * more than once (both ends of a session log it). */
int fg_keylog_load(const char *path, struct fg_keylog **out, char *err, size_t errlen);
/* fg_keylog_parse - the same over a buffer; name is used in errors. */
int fg_keylog_parse(const char *text, size_t len, const char *name, struct fg_keylog **out,
                    char *err, size_t errlen);
/* Sessions (client randoms) the log holds secrets for. */
size_t fg_keylog_count(const struct fg_keylog *kl);
void fg_keylog_free(struct fg_keylog *kl);

/* --- the decoder --------------------------------------------------------- */

enum fg_tlsdec_status {
    FG_TLSDEC_OK = 0,
    FG_TLSDEC_NOT_TLS,   /* bytes that are not a TLS record */
    FG_TLSDEC_VERSION,   /* a protocol version other than TLS 1.2 / 1.3 */
    FG_TLSDEC_SUITE,     /* a cipher suite this decoder does not handle */
    FG_TLSDEC_NO_KEY,    /* the key log has no secret for this session */
    FG_TLSDEC_AUTH,      /* a record failed its AEAD tag check */
    FG_TLSDEC_MALFORMED, /* a record or handshake message out of shape */
    FG_TLSDEC_GAP        /* bytes missing from the trace (fg_tlsdec_gap) */
};

/* "ok", "not-tls", "version", "suite", "no-key", "auth", "malformed", "gap" */
const char *fg_tlsdec_status_name(enum fg_tlsdec_status s);

/* Application data, in order, per direction.  plain points into the
 * decoder's buffer and is valid during the call only. */
typedef void (*fg_tlsdec_cb)(void *ud, enum fg_dir dir, const char *plain, size_t len);

struct fg_tlsdec_info {
    unsigned version;       /* 0x0303 (TLS 1.2), 0x0304 (TLS 1.3); 0 before the ServerHello */
    unsigned suite;         /* the negotiated cipher suite, 0 before */
    const char *suite_name; /* "TLS_AES_128_GCM_SHA256", ...; "" before */
    uint64_t records[2];    /* records decrypted, per direction */
    uint64_t plain[2];      /* application data octets delivered, per direction */
    /* Octets before a direction's first TLS record: plaintext sent after
     * the STARTTLS exchange (RFC 3207 §4, the CVE-2011-0411 class), which
     * is skipped, not read as TLS. */
    uint64_t skipped[2];
    unsigned key_updates; /* TLS 1.3 KeyUpdate messages followed */
    int hello_retry;      /* a HelloRetryRequest was seen */
};

struct fg_tlsdec;

/* fg_tlsdec_new - a decoder for one connection, both directions; kl stays
 * the caller's and must outlive it.  All its memory is taken here: feeding
 * does not allocate. */
struct fg_tlsdec *fg_tlsdec_new(const struct fg_keylog *kl, fg_tlsdec_cb cb, void *ud);
void fg_tlsdec_free(struct fg_tlsdec *d);

/* fg_tlsdec_feed - the next len bytes of direction dir (any split).
 * Returns 0, or FG_EPROTO once the decoder has stopped (see status): after
 * a failure nothing more is decrypted in either direction, so ciphertext
 * is never taken for plaintext. */
int fg_tlsdec_feed(struct fg_tlsdec *d, enum fg_dir dir, const void *buf, size_t len);
/* fg_tlsdec_gap - bytes of direction dir are missing: record framing is
 * lost, the decoder stops with FG_TLSDEC_GAP. */
void fg_tlsdec_gap(struct fg_tlsdec *d, enum fg_dir dir);

enum fg_tlsdec_status fg_tlsdec_status(const struct fg_tlsdec *d);
/* One line on the failure ("no secret in the key log for client random
 * 5f1c...", "record 3 server to client: authentication tag mismatch");
 * "" while the status is OK. */
const char *fg_tlsdec_reason(const struct fg_tlsdec *d);
/* Non-zero once both directions have application traffic keys. */
int fg_tlsdec_ready(const struct fg_tlsdec *d);
const struct fg_tlsdec_info *fg_tlsdec_info(const struct fg_tlsdec *d);

#endif
