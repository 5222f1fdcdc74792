/* faultgate/util.h - small shared helpers: allocation that never returns
 * NULL, durations, monotonic and wall time, growable arrays. */
#ifndef FAULTGATE_UTIL_H
#define FAULTGATE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Allocation failure is fatal: a harness that runs out of memory cannot
 * produce a trustworthy verdict, so it aborts with a message. */
void *fg_malloc(size_t n);
void *fg_calloc(size_t n, size_t size);
void *fg_realloc(void *p, size_t n);
char *fg_strdup(const char *s);
char *fg_strndup(const char *s, size_t n);
char *fg_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* fg_octets_unescape - text with the escapes \r \n \t \0 \xHH \\ turned
 * into octets (may hold NUL; *out allocated, NUL-terminated); on error err
 * says why and *col is the 1-based column of the bad escape in text. */
int fg_octets_unescape(const char *text, char **out, size_t *len, char *err, size_t errlen,
                       int *col);

/* A growing string (evidence text and the like); zero it to start.
 * fg_strbuf_take hands over the text ("" if none was added; caller frees)
 * and leaves b empty. */
struct fg_strbuf {
    char *s;
    size_t len, cap;
};
void fg_strbuf_printf(struct fg_strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *fg_strbuf_take(struct fg_strbuf *b);
#define FG_FREE(p)                                                                                 \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

/* Grow *arr (element size esz) so that it holds at least need elements. */
void fg_array_reserve(void **arr, size_t *cap, size_t need, size_t esz);
#define FG_ARRAY_PUSH(arr, n, cap)                                                                 \
    (fg_array_reserve((void **)&(arr), &(cap), (n) + 1, sizeof(*(arr))), &(arr)[(n)++])

/* fg_duration_parse - "250ms", "5s", "2m", "1h", "1.5s", bare number =
 * seconds.  Returns 0 and sets *ms, or FG_ESYNTAX. */
int fg_duration_parse(const char *s, uint64_t *ms);

/* fg_size_parse - "4k", "1M", "512" bytes (k = 1024). */
int fg_size_parse(const char *s, uint64_t *bytes);

/* fg_uint_parse - whole number in [min, max], no trailing garbage. */
int fg_uint_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* fg_now_ms - monotonic milliseconds; fg_wall_us - wall-clock microseconds
 * since the epoch (what pcap timestamps use). */
uint64_t fg_now_ms(void);
uint64_t fg_wall_us(void);

/* fg_hostport_parse - "127.0.0.1:2525" or "[::1]:25"; host copied into
 * host (size hostlen).  Returns 0 or FG_ESYNTAX. */
int fg_hostport_parse(const char *s, char *host, size_t hostlen, int *port);

/* fg_mkdir_p - create dir and its parents (mode 0755). */
int fg_mkdir_p(const char *dir);
/* fg_file_open - open path for reading only if it is a regular file of at
 * most max_bytes (0: any size); a FIFO, a device or a directory is an
 * error at once, never a wait or an endless read.  fg_file_read: its whole
 * content, NUL-terminated (*len without the NUL). */
int fg_file_open(const char *path, uint64_t max_bytes, FILE **out, char *err, size_t errlen);
int fg_file_read(const char *path, uint64_t max_bytes, char **out, size_t *len, char *err,
                 size_t errlen);
/* fg_file_write - path replaced by len octets of data; the error names the
 * path and the real cause (a full disk says so). */
int fg_file_write(const char *path, const char *data, size_t len, char *err, size_t errlen);

/* fg_rng - splitmix64: one seeded generator per run, so that the same seed
 * gives the same decisions. */
struct fg_rng {
    uint64_t state;
};
void fg_rng_seed(struct fg_rng *r, uint64_t seed);
uint64_t fg_rng_next(struct fg_rng *r);
double fg_rng_unit(struct fg_rng *r); /* [0, 1) */

#endif
