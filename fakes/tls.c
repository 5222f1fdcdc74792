/* tls.c - the fakes' TLS: a test CA made at run time with the OpenSSL API
 * (no files, no openssl command) and TLS sessions over memory BIOs.
 *
 * Why memory BIOs: the fake MTA and the injector are libuv programs; the
 * socket stays a uv_tcp_t, ciphertext read from it is put into the read
 * BIO, and what OpenSSL writes into the write BIO is handed to uv_write.
 * STARTTLS (RFC 3207) upgrades a connection that is already running, which
 * this keeps simple.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "tls.h"

struct fg_tls_ctx {
    SSL_CTX *ctx;
    char *ca_pem;
    int server;
};

/* The process's key log (fg_tls_keylog_set); NULL: none. */
static FILE *keylog_file;

/* OpenSSL hands over one line per secret, already in the NSS key log
 * format (CLIENT_RANDOM, CLIENT_HANDSHAKE_TRAFFIC_SECRET, ...); flushed at
 * once so that a killed run loses nothing. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    (void)ssl;
    if (keylog_file) {
        fprintf(keylog_file, "%s\n", line);
        fflush(keylog_file);
    }
}

struct fg_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    char err[160];
};

static int ssl_errf(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[120];
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return fg_errf(err, errlen, FG_EPROTO, "TLS: %s: %s", what, e ? buf : "failed");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* make_cert - a certificate for key, named cn, signed by (issuer,
 * issuer_key) or by itself when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long serial, X509 *issuer,
                       EVP_PKEY *issuer_key, const char *san)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    /* Valid from a minute ago (clock skew between processes) for a day. */
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"faultgate test", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    int bad = 0;
    if (!issuer) {
        bad |= add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        bad |= add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
        bad |= add_ext(x, x, NID_subject_key_identifier, "hash");
    } else {
        bad |= add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        bad |= add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
        bad |= add_ext(x, issuer, NID_authority_key_identifier, "keyid");
        if (san)
            bad |= add_ext(x, issuer, NID_subject_alt_name, san);
    }
    if (bad || !X509_sign(x, issuer ? issuer_key : key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b && PEM_write_bio_X509(b, x)) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        out = fg_strndup(p, (size_t)n);
    }
    BIO_free(b);
    return out;
}

int fg_tls_server_ctx_new(const char *hostname, struct fg_tls_ctx **out, char *err, size_t errlen)
{
    EVP_PKEY *cakey = EVP_EC_gen("P-256");
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *ca = NULL, *crt = NULL;
    SSL_CTX *ctx = NULL;
    int rc = 0;
    if (!cakey || !key) {
        rc = ssl_errf(err, errlen, "key generation");
        goto done;
    }
    ca = make_cert(cakey, "faultgate test CA", 1, NULL, NULL, NULL);
    char *san = fg_asprintf("DNS:%s,IP:127.0.0.1,IP:::1", hostname);
    crt = ca ? make_cert(key, hostname, 2, ca, cakey, san) : NULL;
    free(san);
    if (!ca || !crt) {
        rc = ssl_errf(err, errlen, "certificate");
        goto done;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_use_certificate(ctx, crt) || !SSL_CTX_use_PrivateKey(ctx, key) ||
        !SSL_CTX_add1_chain_cert(ctx, ca)) {
        rc = ssl_errf(err, errlen, "server context");
        SSL_CTX_free(ctx);
        goto done;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    struct fg_tls_ctx *c = fg_calloc(1, sizeof(*c));
    c->ctx = ctx;
    c->server = 1;
    c->ca_pem = cert_pem(ca);
    *out = c;
done:
    X509_free(ca);
    X509_free(crt);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(key);
    return rc;
}

int fg_tls_client_ctx_new(const char *ca_pem, struct fg_tls_ctx **out, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return ssl_errf(err, errlen, "client context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    if (ca_pem) {
        BIO *b = BIO_new_mem_buf(ca_pem, -1);
        X509 *ca = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!ca || !X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca)) {
            X509_free(ca);
            SSL_CTX_free(ctx);
            return ssl_errf(err, errlen, "CA certificate");
        }
        X509_free(ca);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    struct fg_tls_ctx *c = fg_calloc(1, sizeof(*c));
    c->ctx = ctx;
    *out = c;
    return 0;
}

void fg_tls_ctx_tls12_only(struct fg_tls_ctx *c)
{
    SSL_CTX_set_max_proto_version(c->ctx, TLS1_2_VERSION);
}

const char *fg_tls_ca_pem(const struct fg_tls_ctx *c)
{
    return c->ca_pem;
}

void fg_tls_ctx_free(struct fg_tls_ctx *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c->ca_pem);
    free(c);
}

struct fg_tls *fg_tls_new(struct fg_tls_ctx *c)
{
    struct fg_tls *t = fg_calloc(1, sizeof(*t));
    t->ssl = SSL_new(c->ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        fprintf(stderr, "faultgate: out of memory (TLS)\n");
        abort();
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (c->server)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    return t;
}

void fg_tls_free(struct fg_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

int fg_tls_put(struct fg_tls *t, const char *buf, size_t len)
{
    return len == 0 || BIO_write(t->rbio, buf, (int)len) == (int)len ? 0 : FG_EPROTO;
}

static int ssl_result(struct fg_tls *t, int r)
{
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    unsigned long code = ERR_get_error();
    if (code)
        ERR_error_string_n(code, t->err, sizeof(t->err));
    else
        snprintf(t->err, sizeof(t->err), "%s",
                 e == SSL_ERROR_ZERO_RETURN ? "closed by the peer" : "TLS error");
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? UV_EOF : FG_EPROTO;
}

int fg_tls_handshake(struct fg_tls *t)
{
    if (SSL_is_init_finished(t->ssl))
        return 1;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return 1;
    return ssl_result(t, r);
}

int fg_tls_read(struct fg_tls *t, char *buf, size_t cap)
{
    int r = SSL_read(t->ssl, buf, (int)cap);
    return r > 0 ? r : ssl_result(t, r);
}

int fg_tls_write(struct fg_tls *t, const char *buf, size_t len)
{
    if (len == 0)
        return 0;
    int r = SSL_write(t->ssl, buf, (int)len);
    return r > 0 ? 0 : (ssl_result(t, r), FG_EPROTO);
}

char *fg_tls_take_output(struct fg_tls *t, size_t *len)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0) {
        *len = 0;
        return NULL;
    }
    char *b = fg_malloc(n);
    int r = BIO_read(t->wbio, b, (int)n);
    *len = r > 0 ? (size_t)r : 0;
    return b;
}

const char *fg_tls_error(const struct fg_tls *t)
{
    return t->err[0] ? t->err : "TLS error";
}

const char *fg_tls_version(const struct fg_tls *t)
{
    return SSL_get_version(t->ssl);
}

void fg_tls_keylog_set(FILE *f)
{
    keylog_file = f;
}

int fg_tls_set_server_name(struct fg_tls *t, const char *name)
{
    /* SNI (RFC 6066 §3): the name the proxy's upstream leg asks for. */
    return SSL_set_tlsext_host_name(t->ssl, name) == 1 ? 0 : FG_EPROTO;
}

int fg_tls_is_up(const struct fg_tls *t)
{
    return SSL_is_init_finished(t->ssl);
}

size_t fg_tls_output_len(const struct fg_tls *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t fg_tls_output_read(struct fg_tls *t, char *buf, size_t cap)
{
    int r = cap ? BIO_read(t->wbio, buf, cap > INT_MAX ? INT_MAX : (int)cap) : 0;
    return r > 0 ? (size_t)r : 0;
}

void fg_tls_shutdown(struct fg_tls *t)
{
    /* close_notify (RFC 8446 §6.1) before the TCP FIN; the peer's own is
     * not waited for. */
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}
