/* tls_decrypt.c - TLS 1.2 / 1.3 decryption from a trace and a key log
 * (faultgate/tls_decrypt.h).
 *
 * The cryptography is OpenSSL's EVP: AEAD decryption (EVP_Decrypt*), the
 * HKDF of TLS 1.3 (EVP_KDF "HKDF", expand only) and the PRF of TLS 1.2
 * (EVP_KDF "TLS1-PRF").  What is written here by hand is the glue a
 * passive reader needs and OpenSSL does not offer: record framing (RFC
 * 8446 §5.1, RFC 5246 §6.2), the few handshake fields read (ClientHello
 * random, ServerHello version, random and cipher suite), the HkdfLabel
 * encoding and which secret protects which record (RFC 8446 §7.1, §7.3),
 * the TLS 1.2 key block layout (RFC 5246 §6.3) and the per-record nonces
 * (RFC 8446 §5.3; RFC 5288 §3; RFC 7905 §2).
 *
 * Memory: every buffer is taken in fg_tlsdec_new; a record is gathered in
 * its direction's buffer (one copy per record, none when the record sits
 * whole in the caller's buffer) and decrypted into another.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "faultgate/error.h"
#include "faultgate/tls_decrypt.h"
#include "faultgate/util.h"

/* RFC 5246 §6.2.3: a TLSCiphertext fragment is at most 2^14 + 2048 octets
 * (RFC 8446 §5.2 allows 2^14 + 256). */
#define REC_MAX (16384 + 2048)
/* Handshake message octets kept (a ServerHello with a post-quantum key
 * share is about 1.2 KB); longer messages are counted, not kept. */
#define HS_KEEP 8192
#define SECRET_MAX 48

/* --- the key log ---------------------------------------------------------- */

enum { KL_MASTER, KL_CHTS, KL_SHTS, KL_CATS, KL_SATS, KL_N };

static const char *const kl_labels[KL_N] = {
    "CLIENT_RANDOM",           "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
};

struct kl_entry {
    uint8_t random[32];
    uint8_t secret[KL_N][SECRET_MAX];
    uint8_t len[KL_N]; /* 0: not in the log */
};

struct fg_keylog {
    struct kl_entry *e;
    size_t n, cap;
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Hex digits up to the next blank or the end; returns the octets decoded
 * or -1 with *bad the offset of the first wrong character. */
static long unhex(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
    size_t i = 0;
    while (i < n && s[i] != ' ' && s[i] != '\t')
        i++;
    if (i % 2 || i / 2 > cap) {
        *bad = i % 2 ? i : cap * 2;
        return -1;
    }
    for (size_t k = 0; k < i; k += 2) {
        int h = hexval((unsigned char)s[k]), l = hexval((unsigned char)s[k + 1]);
        if (h < 0 || l < 0) {
            *bad = h < 0 ? k : k + 1;
            return -1;
        }
        out[k / 2] = (uint8_t)(h << 4 | l);
    }
    return (long)(i / 2);
}

static int entry_cmp(const void *a, const void *b)
{
    return memcmp(((const struct kl_entry *)a)->random, ((const struct kl_entry *)b)->random, 32);
}

static struct kl_entry *kl_find(const struct fg_keylog *kl, const uint8_t *random)
{
    struct kl_entry key;
    memcpy(key.random, random, 32);
    return kl && kl->n ? bsearch(&key, kl->e, kl->n, sizeof *kl->e, entry_cmp) : NULL;
}

int fg_keylog_parse(const char *text, size_t len, const char *name, struct fg_keylog **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    struct fg_keylog *kl = fg_calloc(1, sizeof *kl);
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            n--;
        lineno++;
        const char *line = p;
        p = nl ? nl + 1 : end;
        if (n == 0 || line[0] == '#')
            continue;
        size_t ll = 0;
        while (ll < n && line[ll] != ' ')
            ll++;
        int label = -1;
        for (int k = 0; k < KL_N; k++)
            if (strlen(kl_labels[k]) == ll && memcmp(line, kl_labels[k], ll) == 0)
                label = k;
        if (label < 0)
            continue; /* EXPORTER_SECRET, early data, RSA: not needed here */
        uint8_t random[32], secret[SECRET_MAX];
        size_t col = ll + 1, bad = 0;
        long r = col < n ? unhex(line + col, n - col, random, 32, &bad) : -1;
        if (r != 32) {
            fg_keylog_free(kl);
            return fg_errf(err, errlen, FG_EINPUT,
                           "%s:%zu:%zu: %s: the client random must be 64 hex digits", name, lineno,
                           col + (r < 0 ? bad : 0) + 1, kl_labels[label]);
        }
        col += 65;
        long s = col < n ? unhex(line + col, n - col, secret, SECRET_MAX, &bad) : -1;
        /* TLS 1.2 master secret: 48 octets (RFC 5246 §8.1); TLS 1.3 traffic
         * secrets: the suite's hash length, 32 or 48 (RFC 8446 §7.1). */
        int ok = label == KL_MASTER ? s == 48 : (s == 32 || s == 48);
        if (!ok || (col + (size_t)s * 2 < n)) {
            fg_keylog_free(kl);
            return fg_errf(err, errlen, FG_EINPUT, "%s:%zu:%zu: %s: the secret must be %s", name,
                           lineno, col + (s < 0 ? bad : 0) + 1, kl_labels[label],
                           label == KL_MASTER ? "96 hex digits" : "64 or 96 hex digits");
        }
        struct kl_entry *e = NULL;
        for (size_t i = kl->n; i > 0 && !e; i--) /* a session's lines come together */
            if (memcmp(kl->e[i - 1].random, random, 32) == 0)
                e = &kl->e[i - 1];
        if (!e) {
            e = FG_ARRAY_PUSH(kl->e, kl->n, kl->cap);
            memset(e, 0, sizeof *e);
            memcpy(e->random, random, 32);
        }
        memcpy(e->secret[label], secret, (size_t)s);
        e->len[label] = (uint8_t)s;
    }
    /* Sorted, and merged where a random came back later (both ends of a
     * session log the same secrets). */
    if (kl->n > 1)
        qsort(kl->e, kl->n, sizeof *kl->e, entry_cmp);
    size_t w = 0;
    for (size_t i = 0; i < kl->n; i++) {
        if (w && memcmp(kl->e[w - 1].random, kl->e[i].random, 32) == 0) {
            for (int k = 0; k < KL_N; k++)
                if (kl->e[i].len[k]) {
                    memcpy(kl->e[w - 1].secret[k], kl->e[i].secret[k], kl->e[i].len[k]);
                    kl->e[w - 1].len[k] = kl->e[i].len[k];
                }
            continue;
        }
        kl->e[w++] = kl->e[i];
    }
    kl->n = w;
    *out = kl;
    return 0;
}

int fg_keylog_load(const char *path, struct fg_keylog **out, char *err, size_t errlen)
{
    *out = NULL;
    char *buf;
    size_t n;
    char why[FG_ERRBUF_SIZE];
    /* A key log holds a few lines per TLS session. */
    if (fg_file_read(path, (uint64_t)64 << 20, &buf, &n, why, sizeof why) < 0)
        return fg_errf(err, errlen, FG_EINPUT, "the key log %s", why);
    int rc = fg_keylog_parse(buf, n, path, out, err, errlen);
    free(buf);
    return rc;
}

size_t fg_keylog_count(const struct fg_keylog *kl)
{
    return kl ? kl->n : 0;
}

void fg_keylog_free(struct fg_keylog *kl)
{
    if (!kl)
        return;
    free(kl->e);
    free(kl);
}

/* --- suites ------------------------------------------------------------------ */

struct suite {
    unsigned id;
    const char *name;
    int tls13;
    int chacha;    /* ChaCha20-Poly1305: the whole nonce is derived */
    size_t keylen; /* 16 or 32 */
    int sha384;    /* the suite's hash (TLS 1.3) or PRF hash (TLS 1.2) */
};

/* RFC 8446 §B.4; RFC 5288 §3, RFC 5289 §3; RFC 7905 §2. */
static const struct suite suites[] = {
    {0x1301, "TLS_AES_128_GCM_SHA256", 1, 0, 16, 0},
    {0x1302, "TLS_AES_256_GCM_SHA384", 1, 0, 32, 1},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256", 1, 1, 32, 0},
    {0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", 0, 0, 16, 0},
    {0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384", 0, 0, 32, 1},
    {0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0, 0, 16, 0},
    {0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", 0, 0, 32, 1},
    {0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0, 0, 16, 0},
    {0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0, 0, 32, 1},
    {0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0, 0, 16, 0},
    {0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0, 0, 32, 1},
    {0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0, 1, 32, 0},
    {0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0, 1, 32, 0},
    {0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0, 1, 32, 0},
};

static const struct suite *suite_find(unsigned id, int tls13)
{
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
        if (suites[i].id == id && suites[i].tls13 == tls13)
            return &suites[i];
    return NULL;
}

static const EVP_CIPHER *suite_cipher(const struct suite *s)
{
    if (s->chacha)
        return EVP_chacha20_poly1305();
    return s->keylen == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
}

/* --- the decoder ------------------------------------------------------------- */

enum { CT_CCS = 20, CT_ALERT = 21, CT_HANDSHAKE = 22, CT_APPDATA = 23 };
enum { HS_CLIENT_HELLO = 1, HS_SERVER_HELLO = 2, HS_FINISHED = 20, HS_KEY_UPDATE = 24 };
enum { KEYS_NONE, KEYS_HANDSHAKE, KEYS_APP };

struct dirst {
    uint8_t hdr[5];
    size_t hdr_len;
    uint8_t *rec; /* REC_MAX: the record body being gathered */
    size_t rec_len, rec_need;
    int started; /* the first record header was seen */
    int keys;    /* KEYS_*: what protects this direction's records now */
    EVP_CIPHER_CTX *cctx;
    uint8_t iv[12];
    size_t ivlen; /* 12; 4 for TLS 1.2 AES-GCM (the salt) */
    uint64_t seq; /* records under the current key (RFC 8446 §5.3) */
    uint64_t nrec;
    uint8_t secret[SECRET_MAX]; /* TLS 1.3: the current traffic secret */
    /* TLS 1.2: the keys that take effect at ChangeCipherSpec */
    uint8_t pend_key[32], pend_iv[12];
    int pend_ready;
    /* handshake message reassembly (messages may span records) */
    uint8_t hs_hdr[4];
    size_t hs_hdr_len;
    size_t hs_need, hs_total, hs_kept;
    uint8_t *hs; /* HS_KEEP */
};

struct fg_tlsdec {
    const struct fg_keylog *kl;
    fg_tlsdec_cb cb;
    void *ud;
    struct dirst d[2];
    uint8_t *plain; /* REC_MAX */
    uint8_t client_random[32], server_random[32];
    int have_cr, have_sh;
    const struct suite *suite;
    const struct kl_entry *keys;
    enum fg_tlsdec_status status;
    char reason[200];
    struct fg_tlsdec_info info;
};

const char *fg_tlsdec_status_name(enum fg_tlsdec_status s)
{
    switch (s) {
    case FG_TLSDEC_OK:
        return "ok";
    case FG_TLSDEC_NOT_TLS:
        return "not-tls";
    case FG_TLSDEC_VERSION:
        return "version";
    case FG_TLSDEC_SUITE:
        return "suite";
    case FG_TLSDEC_NO_KEY:
        return "no-key";
    case FG_TLSDEC_AUTH:
        return "auth";
    case FG_TLSDEC_MALFORMED:
        return "malformed";
    case FG_TLSDEC_GAP:
        return "gap";
    }
    return "?";
}

static const char *dir_name(int dir)
{
    return dir == FG_C2S ? "client to server" : "server to client";
}

static int fail(struct fg_tlsdec *d, enum fg_tlsdec_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct fg_tlsdec *d, enum fg_tlsdec_status st, const char *fmt, ...)
{
    if (d->status == FG_TLSDEC_OK) {
        d->status = st;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->reason, sizeof d->reason, fmt, ap);
        va_end(ap);
    }
    return FG_EPROTO;
}

struct fg_tlsdec *fg_tlsdec_new(const struct fg_keylog *kl, fg_tlsdec_cb cb, void *ud)
{
    struct fg_tlsdec *d = fg_calloc(1, sizeof *d);
    d->kl = kl;
    d->cb = cb;
    d->ud = ud;
    d->plain = fg_malloc(REC_MAX);
    d->info.suite_name = "";
    for (int i = 0; i < 2; i++) {
        d->d[i].rec = fg_malloc(REC_MAX);
        d->d[i].hs = fg_malloc(HS_KEEP);
        d->d[i].cctx = EVP_CIPHER_CTX_new();
        if (!d->d[i].cctx) {
            fprintf(stderr, "faultgate: out of memory (TLS decryption)\n");
            abort();
        }
    }
    return d;
}

void fg_tlsdec_free(struct fg_tlsdec *d)
{
    if (!d)
        return;
    for (int i = 0; i < 2; i++) {
        free(d->d[i].rec);
        free(d->d[i].hs);
        EVP_CIPHER_CTX_free(d->d[i].cctx);
        OPENSSL_cleanse(d->d[i].secret, sizeof d->d[i].secret);
        OPENSSL_cleanse(d->d[i].pend_key, sizeof d->d[i].pend_key);
    }
    free(d->plain);
    free(d);
}

enum fg_tlsdec_status fg_tlsdec_status(const struct fg_tlsdec *d)
{
    return d->status;
}

const char *fg_tlsdec_reason(const struct fg_tlsdec *d)
{
    return d->reason;
}

int fg_tlsdec_ready(const struct fg_tlsdec *d)
{
    return d->d[0].keys == KEYS_APP && d->d[1].keys == KEYS_APP;
}

const struct fg_tlsdec_info *fg_tlsdec_info(const struct fg_tlsdec *d)
{
    return &d->info;
}

void fg_tlsdec_gap(struct fg_tlsdec *d, enum fg_dir dir)
{
    fail(d, FG_TLSDEC_GAP, "%s: bytes missing from the trace inside TLS", dir_name(dir));
}

/* --- key schedule ------------------------------------------------------------- */

static const char *hash_name(const struct suite *s)
{
    return s->sha384 ? "SHA384" : "SHA256";
}

/* HKDF-Expand-Label(Secret, Label, "", Length), RFC 8446 §7.1: the
 * HkdfLabel structure is built here, the expansion is OpenSSL's HKDF. */
static int expand_label(const struct suite *s, const uint8_t *secret, size_t slen,
                        const char *label, uint8_t *out, size_t olen)
{
    uint8_t info[2 + 1 + 255 + 1];
    size_t ll = strlen(label);
    info[0] = (uint8_t)(olen >> 8);
    info[1] = (uint8_t)olen;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0; /* empty context */
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)hash_name(s), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 10 + ll),
        OSSL_PARAM_construct_end(),
    };
    int ok = kc && EVP_KDF_derive(kc, out, olen, params) > 0;
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    return ok ? 0 : -1;
}

static int set_cipher(struct dirst *s, const struct suite *su, const uint8_t *key)
{
    s->seq = 0;
    return EVP_DecryptInit_ex(s->cctx, suite_cipher(su), NULL, NULL, NULL) == 1 &&
                   EVP_CIPHER_CTX_ctrl(s->cctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
                   EVP_DecryptInit_ex(s->cctx, NULL, NULL, key, NULL) == 1
               ? 0
               : -1;
}

/* TLS 1.3: a direction's key and iv from its traffic secret (§7.3). */
static int install13(struct fg_tlsdec *d, int dir, const uint8_t *secret, int keys)
{
    struct dirst *s = &d->d[dir];
    const struct suite *su = d->suite;
    size_t hl = su->sha384 ? 48 : 32;
    uint8_t key[32];
    memmove(s->secret, secret, hl);
    if (expand_label(su, s->secret, hl, "key", key, su->keylen) < 0 ||
        expand_label(su, s->secret, hl, "iv", s->iv, 12) < 0 || set_cipher(s, su, key) < 0) {
        OPENSSL_cleanse(key, sizeof key);
        return fail(d, FG_TLSDEC_MALFORMED, "key derivation failed (OpenSSL)");
    }
    OPENSSL_cleanse(key, sizeof key);
    s->ivlen = 12;
    s->keys = keys;
    return 0;
}

/* TLS 1.2: the key block, PRF(master, "key expansion", server_random +
 * client_random) (RFC 5246 §6.3), through OpenSSL's TLS1-PRF.  AEAD suites
 * have no MAC keys; the "IV" is the 4-octet salt for AES-GCM (RFC 5288
 * §3) and the 12-octet nonce mask for ChaCha20-Poly1305 (RFC 7905 §2). */
static int keyblock12(struct fg_tlsdec *d)
{
    const struct suite *su = d->suite;
    size_t kl = su->keylen, il = su->chacha ? 12 : 4, n = 2 * kl + 2 * il;
    uint8_t block[2 * 32 + 2 * 12], seed[13 + 64];
    memcpy(seed, "key expansion", 13);
    memcpy(seed + 13, d->server_random, 32);
    memcpy(seed + 45, d->client_random, 32);
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)hash_name(su), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)d->keys->secret[KL_MASTER],
                                          48),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof seed),
        OSSL_PARAM_construct_end(),
    };
    int ok = kc && EVP_KDF_derive(kc, block, n, params) > 0;
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    if (!ok)
        return fail(d, FG_TLSDEC_MALFORMED, "key derivation failed (OpenSSL)");
    /* client_write_key, server_write_key, client_write_IV, server_write_IV */
    for (int dir = 0; dir < 2; dir++) {
        struct dirst *s = &d->d[dir];
        memcpy(s->pend_key, block + (size_t)dir * kl, kl);
        memset(s->pend_iv, 0, sizeof s->pend_iv);
        memcpy(s->pend_iv, block + 2 * kl + (size_t)dir * il, il);
        s->ivlen = il;
        s->pend_ready = 1;
    }
    OPENSSL_cleanse(block, sizeof block);
    return 0;
}

static void hex8(const uint8_t *r, char *out)
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* The ServerHello (RFC 8446 §4.1.3, RFC 5246 §7.4.1.3): version (with the
 * supported_versions extension, §4.2.1), random, cipher suite; then the
 * secrets for this session. */
static int server_hello(struct fg_tlsdec *d, const uint8_t *b, size_t n)
{
    /* RFC 8446 §4.1.3: the random of a HelloRetryRequest. */
    static const uint8_t hrr[32] = {0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11,
                                    0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
                                    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E,
                                    0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C};
    if (n < 2 + 32 + 1)
        return fail(d, FG_TLSDEC_MALFORMED, "short ServerHello");
    unsigned version = (unsigned)b[0] << 8 | b[1];
    size_t sid = b[34];
    size_t off = 35 + sid;
    if (off + 3 > n)
        return fail(d, FG_TLSDEC_MALFORMED, "short ServerHello");
    unsigned suite = (unsigned)b[off] << 8 | b[off + 1];
    off += 3; /* suite, compression method */
    if (off + 2 <= n) {
        size_t elen = (size_t)b[off] << 8 | b[off + 1];
        off += 2;
        size_t eend = off + elen <= n ? off + elen : n;
        while (off + 4 <= eend) {
            unsigned type = (unsigned)b[off] << 8 | b[off + 1];
            size_t len = (size_t)b[off + 2] << 8 | b[off + 3];
            off += 4;
            if (type == 43 && len == 2 && off + 2 <= eend) /* supported_versions */
                version = (unsigned)b[off] << 8 | b[off + 1];
            off += len;
        }
    }
    if (memcmp(b + 2, hrr, 32) == 0) {
        /* The real ServerHello follows the client's second ClientHello. */
        d->info.hello_retry = 1;
        return 0;
    }
    if (d->have_sh)
        return fail(d, FG_TLSDEC_MALFORMED, "a second ServerHello");
    d->have_sh = 1;
    memcpy(d->server_random, b + 2, 32);
    d->info.version = version;
    if (version != 0x0303 && version != 0x0304)
        return fail(d, FG_TLSDEC_VERSION, "protocol version 0x%04x (only TLS 1.2 and 1.3 are read)",
                    version);
    int tls13 = version == 0x0304;
    d->suite = suite_find(suite, tls13);
    d->info.suite = suite;
    if (!d->suite)
        return fail(d, FG_TLSDEC_SUITE,
                    "cipher suite 0x%04x is not read (TLS %s: AES-GCM and ChaCha20-Poly1305 only)",
                    suite, tls13 ? "1.3" : "1.2");
    d->info.suite_name = d->suite->name;
    if (!d->have_cr)
        return fail(d, FG_TLSDEC_MALFORMED, "ServerHello without a ClientHello before it");
    char cr[17];
    hex8(d->client_random, cr);
    d->keys = kl_find(d->kl, d->client_random);
    if (!d->keys)
        return fail(d, FG_TLSDEC_NO_KEY, "no secret in the key log for client random %s...", cr);
    if (!tls13) {
        if (!d->keys->len[KL_MASTER])
            return fail(d, FG_TLSDEC_NO_KEY, "no CLIENT_RANDOM line for client random %s...", cr);
        return keyblock12(d);
    }
    size_t hl = d->suite->sha384 ? 48 : 32;
    for (int k = KL_CHTS; k <= KL_SATS; k++)
        if (d->keys->len[k] != hl)
            return fail(d, FG_TLSDEC_NO_KEY, "no %s of %zu octets for client random %s...",
                        kl_labels[k], hl, cr);
    if (install13(d, FG_C2S, d->keys->secret[KL_CHTS], KEYS_HANDSHAKE) < 0 ||
        install13(d, FG_S2C, d->keys->secret[KL_SHTS], KEYS_HANDSHAKE) < 0)
        return FG_EPROTO;
    return 0;
}

/* One whole handshake message (body: its first `kept` octets of `total`).
 * Called with the record that completed it already decrypted: a key
 * change here applies from the next record (RFC 8446 §5.1: messages that
 * precede a key change end at a record boundary). */
static int hs_message(struct fg_tlsdec *d, int dir, unsigned type, const uint8_t *b, size_t kept,
                      size_t total)
{
    struct dirst *s = &d->d[dir];
    if (type == HS_CLIENT_HELLO && dir == FG_C2S && s->keys == KEYS_NONE) {
        if (kept < 34)
            return fail(d, FG_TLSDEC_MALFORMED, "short ClientHello");
        memcpy(d->client_random, b + 2, 32); /* after legacy_version */
        d->have_cr = 1;
        return 0;
    }
    if (type == HS_SERVER_HELLO && dir == FG_S2C && s->keys == KEYS_NONE) {
        if (kept < total)
            return fail(d, FG_TLSDEC_MALFORMED, "ServerHello longer than %d octets", HS_KEEP);
        return server_hello(d, b, kept);
    }
    if (!d->suite || !d->suite->tls13)
        return 0; /* TLS 1.2: Finished needs nothing; renegotiation is not followed */
    size_t hl = d->suite->sha384 ? 48 : 32;
    if (type == HS_FINISHED && s->keys == KEYS_HANDSHAKE) {
        /* §7.3: after its Finished a side sends under application_traffic_secret_0. */
        return install13(d, dir, d->keys->secret[dir == FG_C2S ? KL_CATS : KL_SATS], KEYS_APP);
    }
    if (type == HS_KEY_UPDATE && s->keys == KEYS_APP) {
        /* §7.2: application_traffic_secret_N+1 =
         * HKDF-Expand-Label(application_traffic_secret_N, "traffic upd", "", Hash.length) */
        uint8_t next[SECRET_MAX];
        if (expand_label(d->suite, s->secret, hl, "traffic upd", next, hl) < 0)
            return fail(d, FG_TLSDEC_MALFORMED, "key derivation failed (OpenSSL)");
        d->info.key_updates++;
        int rc = install13(d, dir, next, KEYS_APP);
        OPENSSL_cleanse(next, sizeof next);
        return rc;
    }
    return 0; /* EncryptedExtensions, Certificate, NewSessionTicket, ...: skipped */
}

/* Handshake octets of one record: messages may span records and records
 * may hold several messages (RFC 8446 §5.1). */
static int hs_bytes(struct fg_tlsdec *d, int dir, const uint8_t *p, size_t n)
{
    struct dirst *s = &d->d[dir];
    while (n) {
        if (s->hs_hdr_len < 4) {
            s->hs_hdr[s->hs_hdr_len++] = *p++;
            n--;
            if (s->hs_hdr_len < 4)
                continue;
            s->hs_total = (size_t)s->hs_hdr[1] << 16 | (size_t)s->hs_hdr[2] << 8 | s->hs_hdr[3];
            s->hs_need = s->hs_total;
            s->hs_kept = 0;
        } else {
            size_t take = n < s->hs_need ? n : s->hs_need;
            size_t keep = HS_KEEP - s->hs_kept;
            if (keep > take)
                keep = take;
            memcpy(s->hs + s->hs_kept, p, keep);
            s->hs_kept += keep;
            s->hs_need -= take;
            p += take;
            n -= take;
        }
        if (s->hs_need == 0) {
            s->hs_hdr_len = 0;
            if (hs_message(d, dir, s->hs_hdr[0], s->hs, s->hs_kept, s->hs_total) < 0)
                return FG_EPROTO;
        }
    }
    return 0;
}

/* The AEAD open of one record body (RFC 8446 §5.2; RFC 5246 §6.2.3.3).
 * Returns the plaintext length in d->plain, or -1. */
static long open_record(struct fg_tlsdec *d, int dir, const uint8_t *hdr, const uint8_t *body,
                        size_t len)
{
    struct dirst *s = &d->d[dir];
    int tls13 = d->suite->tls13;
    uint8_t nonce[12], aad[13];
    size_t aadlen, explicit = 0;
    if (!tls13 && !d->suite->chacha)
        explicit = 8; /* RFC 5288 §3: nonce = salt(4) + explicit(8), sent first */
    if (len < explicit + 16)
        return -2;
    size_t clen = len - explicit - 16;
    if (explicit) {
        memcpy(nonce, s->iv, 4);
        memcpy(nonce + 4, body, 8);
    } else {
        /* RFC 8446 §5.3, RFC 7905 §2: the sequence number, left-padded to
         * 12 octets, XORed into the IV. */
        memcpy(nonce, s->iv, 12);
        for (int i = 0; i < 8; i++)
            nonce[4 + i] ^= (uint8_t)(s->seq >> (56 - 8 * i));
    }
    if (tls13) {
        memcpy(aad, hdr, 5); /* §5.2: additional_data = the record header */
        aadlen = 5;
    } else {
        /* RFC 5246 §6.2.3.3: seq_num + type + version + length (of the plaintext). */
        for (int i = 0; i < 8; i++)
            aad[i] = (uint8_t)(s->seq >> (56 - 8 * i));
        aad[8] = hdr[0];
        aad[9] = hdr[1];
        aad[10] = hdr[2];
        aad[11] = (uint8_t)(clen >> 8);
        aad[12] = (uint8_t)clen;
        aadlen = 13;
    }
    int outl = 0, fin = 0;
    EVP_CIPHER_CTX *c = s->cctx;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aadlen) != 1 ||
        EVP_DecryptUpdate(c, d->plain, &outl, body + explicit, (int)clen) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(body + explicit + clen)) != 1 ||
        EVP_DecryptFinal_ex(c, d->plain + outl, &fin) != 1)
        return -1;
    s->seq++;
    return (long)clen;
}

static void deliver(struct fg_tlsdec *d, int dir, const uint8_t *p, size_t n)
{
    if (!n)
        return;
    d->info.plain[dir] += n;
    if (d->cb)
        d->cb(d->ud, (enum fg_dir)dir, (const char *)p, n);
}

/* One whole record. */
static int record(struct fg_tlsdec *d, int dir, const uint8_t *hdr, const uint8_t *body, size_t len)
{
    struct dirst *s = &d->d[dir];
    unsigned type = hdr[0];
    s->nrec++;
    int tls13 = d->suite && d->suite->tls13;
    if (type == CT_CCS) {
        /* TLS 1.2: from here this direction is encrypted (RFC 5246 §7.1).
         * TLS 1.3: a compatibility record, ignored (RFC 8446 §5, D.4). */
        if (tls13 || !d->have_sh)
            return 0;
        if (!s->pend_ready)
            return fail(d, FG_TLSDEC_MALFORMED, "%s: ChangeCipherSpec before the keys",
                        dir_name(dir));
        if (set_cipher(s, d->suite, s->pend_key) < 0)
            return fail(d, FG_TLSDEC_MALFORMED, "cipher setup failed (OpenSSL)");
        memcpy(s->iv, s->pend_iv, 12);
        s->keys = KEYS_APP;
        return 0;
    }
    int encrypted = tls13 ? type == CT_APPDATA : s->keys != KEYS_NONE;
    if (!encrypted) {
        if (type == CT_HANDSHAKE)
            return hs_bytes(d, dir, body, len);
        if (type == CT_APPDATA)
            return fail(d, FG_TLSDEC_MALFORMED, "%s: application data before the keys",
                        dir_name(dir));
        return 0; /* a plaintext alert */
    }
    if (s->keys == KEYS_NONE)
        return fail(d, FG_TLSDEC_MALFORMED, "%s: encrypted record %llu before the ServerHello",
                    dir_name(dir), (unsigned long long)s->nrec);
    long n = open_record(d, dir, hdr, body, len);
    if (n < 0)
        return fail(d, FG_TLSDEC_AUTH, "%s: record %llu (%zu octets): %s", dir_name(dir),
                    (unsigned long long)s->nrec, len,
                    n == -2 ? "too short for its tag" : "authentication tag mismatch");
    d->info.records[dir]++;
    size_t pl = (size_t)n;
    unsigned inner = type;
    if (tls13) {
        /* §5.2 TLSInnerPlaintext: content, the real type, zero padding. */
        while (pl && d->plain[pl - 1] == 0)
            pl--;
        if (!pl)
            return fail(d, FG_TLSDEC_MALFORMED, "%s: record %llu has no content type",
                        dir_name(dir), (unsigned long long)s->nrec);
        inner = d->plain[--pl];
    }
    switch (inner) {
    case CT_APPDATA:
        if (s->keys != KEYS_APP)
            return fail(d, FG_TLSDEC_MALFORMED, "%s: application data under handshake keys",
                        dir_name(dir));
        deliver(d, dir, d->plain, pl);
        return 0;
    case CT_HANDSHAKE:
        return hs_bytes(d, dir, d->plain, pl);
    default:
        return 0; /* alerts (close_notify, ...) */
    }
}

/* Could hdr[0..n) begin a record?  Before a direction's first record this
 * is how plaintext sent after STARTTLS is told from the handshake: the
 * first record of each side is a handshake record (RFC 8446 §4, RFC 5246
 * §7.4), 0x16 0x03 0x01..0x04. */
static int first_hdr_ok(const uint8_t *h, size_t n)
{
    return (n < 1 || h[0] == CT_HANDSHAKE) && (n < 2 || h[1] == 3) &&
           (n < 3 || (h[2] >= 1 && h[2] <= 4));
}

int fg_tlsdec_feed(struct fg_tlsdec *d, enum fg_dir dir, const void *buf, size_t len)
{
    struct dirst *s = &d->d[dir];
    const uint8_t *p = buf;
    while (len) {
        if (d->status != FG_TLSDEC_OK)
            return FG_EPROTO;
        if (!s->started) {
            /* Plaintext before the first record is counted and skipped. */
            if (s->hdr_len == 0) {
                const uint8_t *h = memchr(p, CT_HANDSHAKE, len);
                size_t skip = h ? (size_t)(h - p) : len;
                d->info.skipped[dir] += skip;
                p += skip;
                len -= skip;
                if (!len)
                    break;
            }
            s->hdr[s->hdr_len++] = *p++;
            len--;
            while (s->hdr_len && !first_hdr_ok(s->hdr, s->hdr_len)) {
                d->info.skipped[dir]++;
                memmove(s->hdr, s->hdr + 1, --s->hdr_len);
            }
            if (s->hdr_len < 5)
                continue;
            s->started = 1;
        } else if (s->hdr_len < 5) {
            size_t take = 5 - s->hdr_len < len ? 5 - s->hdr_len : len;
            memcpy(s->hdr + s->hdr_len, p, take);
            s->hdr_len += take;
            p += take;
            len -= take;
            if (s->hdr_len < 5)
                break;
        }
        if (s->rec_need == 0 && s->rec_len == 0) {
            /* A complete header (RFC 8446 §5.1): type, version, length. */
            size_t rl = (size_t)s->hdr[3] << 8 | s->hdr[4];
            if (s->hdr[0] < CT_CCS || s->hdr[0] > 24 || s->hdr[1] != 3 || rl == 0 || rl > REC_MAX)
                return fail(d, FG_TLSDEC_NOT_TLS,
                            "%s: not a TLS record after record %llu (%02x %02x %02x %02x %02x)",
                            dir_name(dir), (unsigned long long)s->nrec, s->hdr[0], s->hdr[1],
                            s->hdr[2], s->hdr[3], s->hdr[4]);
            s->rec_need = rl;
        }
        if (s->rec_len == 0 && len >= s->rec_need) {
            /* The whole record is in the caller's buffer: no copy. */
            size_t rl = s->rec_need;
            s->rec_need = 0;
            s->hdr_len = 0;
            if (record(d, dir, s->hdr, p, rl) < 0)
                return FG_EPROTO;
            p += rl;
            len -= rl;
            continue;
        }
        size_t take = len < s->rec_need - s->rec_len ? len : s->rec_need - s->rec_len;
        memcpy(s->rec + s->rec_len, p, take);
        s->rec_len += take;
        p += take;
        len -= take;
        if (s->rec_len == s->rec_need) {
            size_t rl = s->rec_len;
            s->rec_len = 0;
            s->rec_need = 0;
            s->hdr_len = 0;
            if (record(d, dir, s->hdr, s->rec, rl) < 0)
                return FG_EPROTO;
        }
    }
    return d->status == FG_TLSDEC_OK ? 0 : FG_EPROTO;
}
