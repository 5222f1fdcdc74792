/* error.c - faultgate's error codes and their names (faultgate/error.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "faultgate/error.h"

const char *fg_strerror(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                                         \
    case val:                                                                                      \
        return msg;
        FG_ERRNO_MAP(XX)
#undef XX
    default:
        return uv_strerror(err);
    }
}

const char *fg_err_name(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                                         \
    case val:                                                                                      \
        return "FG_" #name;
        FG_ERRNO_MAP(XX)
#undef XX
    default:
        return uv_err_name(err);
    }
}

int fg_errf(char *errbuf, size_t len, int err, const char *fmt, ...)
{
    if (errbuf && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, len, fmt, ap);
        va_end(ap);
    }
    return err;
}
