/* util.c - allocation, durations, sizes, clocks, ports and the run's
 * seeded generator (faultgate/util.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/util.h"

static void oom(size_t n)
{
    fprintf(stderr, "faultgate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *fg_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *fg_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *fg_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *fg_strdup(const char *s)
{
    return fg_strndup(s, strlen(s));
}

char *fg_strndup(const char *s, size_t n)
{
    char *d = fg_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *fg_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return s;
}

int fg_octets_unescape(const char *text, char **outp, size_t *lenp, char *err, size_t errlen,
                       int *col)
{
    size_t tl = strlen(text);
    char *out = fg_malloc(tl + 1);
    size_t k = 0;
    *col = 0;
    for (size_t i = 0; i < tl; i++) {
        if (text[i] != '\\') {
            out[k++] = text[i];
            continue;
        }
        *col = (int)i + 1;
        char c = text[++i];
        switch (c) {
        case 'r':
            out[k++] = '\r';
            break;
        case 'n':
            out[k++] = '\n';
            break;
        case 't':
            out[k++] = '\t';
            break;
        case '0':
            out[k++] = '\0';
            break;
        case '\\':
            out[k++] = '\\';
            break;
        case 'x': {
            int v = 0;
            for (int d = 0; d < 2; d++) {
                char h = text[i + 1 + (size_t)d];
                int x = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (x < 0) {
                    free(out);
                    return fg_errf(err, errlen, FG_EINPUT, "\\x needs two hex digits");
                }
                v = v * 16 + x;
            }
            i += 2;
            out[k++] = (char)v;
            break;
        }
        default:
            free(out);
            return fg_errf(err, errlen, FG_EINPUT,
                           "unknown escape '\\%c' (\\r \\n \\t \\0 \\xHH \\\\)", c ? c : ' ');
        }
    }
    *col = 0;
    out[k] = '\0';
    *outp = out;
    *lenp = k;
    return 0;
}

void fg_strbuf_printf(struct fg_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    fg_array_reserve((void **)&b->s, &b->cap, b->len + (size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *fg_strbuf_take(struct fg_strbuf *b)
{
    char *s = b->s ? b->s : fg_strdup("");
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

void fg_array_reserve(void **arr, size_t *cap, size_t need, size_t esz)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap * 2 : 8;
    while (c < need)
        c *= 2;
    *arr = fg_realloc(*arr, c * esz);
    memset((char *)*arr + *cap * esz, 0, (c - *cap) * esz);
    *cap = c;
}

/* Number with an optional unit; units maps suffix -> multiplier. */
struct unit {
    const char *suffix;
    double mult;
};

static int parse_scaled(const char *s, const struct unit *units, double bare, uint64_t *out)
{
    if (!s)
        return FG_ESYNTAX;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s) && *s != '.')
        return FG_ESYNTAX;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v))
        return FG_ESYNTAX;
    while (isspace((unsigned char)*end))
        end++;
    size_t ulen = strlen(end);
    while (ulen > 0 && isspace((unsigned char)end[ulen - 1]))
        ulen--;
    double mult = bare;
    if (ulen > 0) {
        const struct unit *u;
        for (u = units; u->suffix; u++)
            if (strlen(u->suffix) == ulen && strncasecmp(end, u->suffix, ulen) == 0)
                break;
        if (!u->suffix)
            return FG_ESYNTAX;
        mult = u->mult;
    }
    double r = v * mult;
    if (r > 1.8e19)
        return FG_ESYNTAX;
    *out = (uint64_t)llround(r);
    return 0;
}

int fg_duration_parse(const char *s, uint64_t *ms)
{
    static const struct unit units[] = {{"ms", 1},      {"s", 1000},    {"sec", 1000}, {"m", 60000},
                                        {"min", 60000}, {"h", 3600000}, {"us", 0.001}, {NULL, 0}};
    return parse_scaled(s, units, 1000, ms);
}

int fg_size_parse(const char *s, uint64_t *bytes)
{
    static const struct unit units[] = {{"b", 1},         {"k", 1024},         {"kb", 1024},
                                        {"kib", 1024},    {"m", 1048576},      {"mb", 1048576},
                                        {"mib", 1048576}, {"g", 1073741824.0}, {NULL, 0}};
    return parse_scaled(s, units, 1, bytes);
}

int fg_uint_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return FG_ESYNTAX;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return FG_ESYNTAX;
    *out = v;
    return 0;
}

uint64_t fg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t fg_wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

int fg_hostport_parse(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return FG_ESYNTAX;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return FG_ESYNTAX;
        hl = (size_t)(colon - s);
    }
    uint64_t p;
    if (hl == 0 || hl >= hostlen || fg_uint_parse(colon + 1, 0, 65535, &p) != 0)
        return FG_ESYNTAX;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

int fg_mkdir_p(const char *dir)
{
    char *p = fg_strdup(dir);
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = -errno;
            free(p);
            return e;
        }
        *q = '/';
    }
    int rc = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = -errno;
    free(p);
    return rc;
}

void fg_rng_seed(struct fg_rng *r, uint64_t seed)
{
    r->state = seed;
}

/* splitmix64 (Steele, Lea, Flood 2014): small, fast and fully determined
 * by the seed, which is all the fault engine needs. */
uint64_t fg_rng_next(struct fg_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double fg_rng_unit(struct fg_rng *r)
{
    return (double)(fg_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static const char *file_kind(mode_t m)
{
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

int fg_file_open(const char *path, uint64_t max_bytes, FILE **out, char *err, size_t errlen)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer, forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        return fg_errf(err, errlen, e, "%s: %s", path, strerror(-e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = -errno;
        close(fd);
        return fg_errf(err, errlen, e, "%s: %s", path, strerror(-e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fg_errf(err, errlen, FG_EINPUT, "%s: %s: only a regular file is read here", path,
                       file_kind(sb.st_mode));
    }
    if (max_bytes && (uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return fg_errf(err, errlen, FG_EINPUT, "%s: %llu bytes, more than the %llu allowed here",
                       path, (unsigned long long)sb.st_size, (unsigned long long)max_bytes);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = -errno;
        close(fd);
        return fg_errf(err, errlen, e, "%s: %s", path, strerror(-e));
    }
    *out = f;
    return 0;
}

int fg_file_read(const char *path, uint64_t max_bytes, char **out, size_t *len, char *err,
                 size_t errlen)
{
    *out = NULL;
    *len = 0;
    FILE *f;
    int rc = fg_file_open(path, max_bytes, &f, err, errlen);
    if (rc < 0)
        return rc;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        fg_array_reserve((void **)&buf, &cap, n + 65536, 1);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        /* The file may grow after the check (a log still written). */
        if (got == 0 || (max_bytes && n > max_bytes))
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || (max_bytes && n > max_bytes)) {
        free(buf);
        return bad ? fg_errf(err, errlen, -EIO, "%s: read error", path)
                   : fg_errf(err, errlen, FG_EINPUT, "%s: more than the %llu bytes allowed here",
                             path, (unsigned long long)max_bytes);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int fg_file_write(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = -errno;
        return fg_errf(err, errlen, e, "%s: %s", path, strerror(-e));
    }
    int rc = 0;
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -ENOSPC;
            break;
        }
        data += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        return fg_errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
    return 0;
}
