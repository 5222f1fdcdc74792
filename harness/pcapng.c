/* pcapng.c - a capture copied into pcapng with frame and section comments.
 *
 * libpcap (1.10, Debian 12) reads pcapng but writes only pcap: pcap_dump
 * has no way to attach options to a packet.  So the blocks are written
 * here by hand (draft-ietf-opsawg-pcapng §4.1 SHB, §4.2 IDB, §4.3 EPB),
 * in host byte order with the byte-order magic saying which.  Reading
 * stays libpcap's.
 */
#include "faultgate/pcapng.h"

#include <errno.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/util.h"

enum {
    BT_SHB = 0x0A0D0D0A,
    BT_IDB = 0x00000001,
    BT_EPB = 0x00000006,
    OPT_END = 0,
    OPT_COMMENT = 1,
    SHB_USERAPPL = 4,
    IF_TSRESOL = 9
};

/* One block assembled in memory, then written in one call. */
struct blk {
    uint8_t *p;
    size_t len, cap;
};

static void blk_put(struct blk *b, const void *v, size_t n)
{
    if (b->len + n + 3 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 3)
            nc *= 2;
        b->p = fg_realloc(b->p, nc);
        b->cap = nc;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
    while (b->len % 4)
        b->p[b->len++] = 0; /* every field is padded to 32 bits (§3.5) */
}

static void blk_u32(struct blk *b, uint32_t v)
{
    blk_put(b, &v, 4);
}

static void blk_opt(struct blk *b, uint16_t code, const void *v, size_t n)
{
    if (n > 0xFFFF)
        n = 0xFFFF;
    uint16_t h[2] = {code, (uint16_t)n};
    blk_put(b, h, 4);
    if (n)
        blk_put(b, v, n);
}

static void blk_begin(struct blk *b, uint32_t type)
{
    b->len = 0;
    blk_u32(b, type);
    blk_u32(b, 0); /* total length, set at the end */
}

static int blk_end(struct blk *b, FILE *f)
{
    uint32_t total = (uint32_t)(b->len + 4);
    memcpy(b->p + 4, &total, 4);
    blk_u32(b, total);
    return fwrite(b->p, 1, b->len, f) == b->len ? 0 : -EIO;
}

static int cmp_note(const void *a, const void *b)
{
    const struct fg_pcapng_note *x = a, *y = b;
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

int fg_pcapng_write(const char *in_path, const char *out_path, const char *const *shb, size_t nshb,
                    const char *appl, const struct fg_pcapng_note *notes, size_t nnotes, char *err,
                    size_t errlen)
{
    char perr[PCAP_ERRBUF_SIZE] = "";
    pcap_t *in = pcap_open_offline_with_tstamp_precision(in_path, PCAP_TSTAMP_PRECISION_NANO, perr);
    if (!in)
        return fg_errf(err, errlen, FG_ETRACE, "%s: %s", in_path, perr);
    char *tmp = fg_asprintf("%s.tmp%ld", out_path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = -errno;
        pcap_close(in);
        fg_errf(err, errlen, e, "%s: %s", tmp, strerror(-e));
        free(tmp);
        return e;
    }
    struct fg_pcapng_note *sorted = NULL;
    if (nnotes) {
        sorted = fg_malloc(nnotes * sizeof(*sorted));
        memcpy(sorted, notes, nnotes * sizeof(*sorted));
        qsort(sorted, nnotes, sizeof(*sorted), cmp_note);
    }
    struct blk b = {0};
    int rc = 0;

    blk_begin(&b, BT_SHB);
    blk_u32(&b, 0x1A2B3C4D);
    uint16_t ver[2] = {1, 0};
    blk_put(&b, ver, 4);
    int64_t seclen = -1; /* not given */
    blk_put(&b, &seclen, 8);
    for (size_t i = 0; i < nshb; i++)
        if (shb[i])
            blk_opt(&b, OPT_COMMENT, shb[i], strlen(shb[i]));
    if (appl)
        blk_opt(&b, SHB_USERAPPL, appl, strlen(appl));
    blk_opt(&b, OPT_END, NULL, 0);
    rc = blk_end(&b, f);

    if (rc == 0) {
        blk_begin(&b, BT_IDB);
        uint16_t lt[2] = {(uint16_t)pcap_datalink(in), 0};
        blk_put(&b, lt, 4);
        blk_u32(&b, (uint32_t)pcap_snapshot(in));
        uint8_t res = 9; /* nanoseconds */
        blk_opt(&b, IF_TSRESOL, &res, 1);
        blk_opt(&b, OPT_END, NULL, 0);
        rc = blk_end(&b, f);
    }

    struct pcap_pkthdr *h;
    const u_char *data;
    uint64_t frame = 0;
    size_t ni = 0;
    int r;
    while (rc == 0 && (r = pcap_next_ex(in, &h, &data)) == 1) {
        frame++;
        uint64_t ts = (uint64_t)h->ts.tv_sec * 1000000000u + (uint64_t)h->ts.tv_usec;
        blk_begin(&b, BT_EPB);
        blk_u32(&b, 0);
        blk_u32(&b, (uint32_t)(ts >> 32));
        blk_u32(&b, (uint32_t)ts);
        blk_u32(&b, h->caplen);
        blk_u32(&b, h->len);
        blk_put(&b, data, h->caplen);
        while (ni < nnotes && sorted[ni].frame < frame)
            ni++;
        int any = 0;
        for (; ni < nnotes && sorted[ni].frame == frame; ni++, any = 1)
            blk_opt(&b, OPT_COMMENT, sorted[ni].text, strlen(sorted[ni].text));
        if (any)
            blk_opt(&b, OPT_END, NULL, 0);
        rc = blk_end(&b, f);
    }
    /* A capture cut inside its last record (r == -1) keeps what it held. */
    if (rc < 0)
        fg_errf(err, errlen, rc, "%s: %s", tmp, strerror(EIO));
    if (fclose(f) != 0 && rc == 0)
        rc = fg_errf(err, errlen, -EIO, "%s: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, out_path) != 0)
        rc = fg_errf(err, errlen, -errno, "%s: %s", out_path, strerror(errno));
    if (rc < 0)
        remove(tmp);
    pcap_close(in);
    free(b.p);
    free(sorted);
    free(tmp);
    return rc;
}
