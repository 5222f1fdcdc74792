/* faultgate/error.h - error codes shared by every module.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * code on failure.  libuv's UV_E* codes pass through unchanged; faultgate's
 * own codes live in a reserved range below -4000 so they never collide.
 * The caller that can explain an error prints it, usually with the detail
 * a callee left in an errbuf of FG_ERRBUF_SIZE bytes.
 */
#ifndef FAULTGATE_ERROR_H
#define FAULTGATE_ERROR_H

#include <stddef.h>

#define FG_ERRBUF_SIZE 512

#define FG_ERRNO_MAP(XX)                                                                           \
    XX(EINPUT, -4001, "bad input")                                                                 \
    XX(ESYNTAX, -4002, "syntax error")                                                             \
    XX(ENOTREADY, -4003, "gateway did not become ready")                                           \
    XX(ECAPTURE, -4004, "capture failed")                                                          \
    XX(ETRACE, -4005, "trace could not be read")                                                   \
    XX(ENOTAVAIL, -4006, "not available yet")                                                      \
    XX(ETIMEOUT, -4007, "deadline passed")                                                         \
    XX(EPROTO, -4008, "protocol violation")                                                        \
    XX(ETOOBIG, -4009, "limit exceeded")

enum fg_errno {
#define XX(name, val, msg) FG_##name = val,
    FG_ERRNO_MAP(XX)
#undef XX
};

/* fg_strerror - text for a faultgate code, a libuv code or a negative errno. */
const char *fg_strerror(int err);

/* fg_err_name - "FG_EINPUT", "ECONNRESET", ... */
const char *fg_err_name(int err);

/* fg_errf - format into errbuf (may be NULL); returns err for tail calls. */
int fg_errf(char *errbuf, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
