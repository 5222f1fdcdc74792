/* check_pcapng.c - the pcapng copy with comments (pcapng.c): the packets
 * and their times come back unchanged through libpcap, each note sits on
 * its frame, the section header carries its comments. */
#include <check.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/pcapng.h"

static char in_path[128], out_path[128];

static void write_input(int n)
{
    snprintf(in_path, sizeof in_path, "/tmp/fg-check-pcapng-%ld.pcap", (long)getpid());
    snprintf(out_path, sizeof out_path, "/tmp/fg-check-pcapng-%ld.pcapng", (long)getpid());
    pcap_t *dead = pcap_open_dead(DLT_EN10MB, 65535);
    pcap_dumper_t *d = pcap_dump_open(dead, in_path);
    ck_assert_ptr_nonnull(d);
    for (int i = 0; i < n; i++) {
        u_char buf[64 + 8];
        size_t len = 60 + (size_t)(i % 5); /* lengths that need padding */
        memset(buf, 'a' + i, len);
        struct pcap_pkthdr h = {.caplen = (bpf_u_int32)len, .len = (bpf_u_int32)len + 10};
        h.ts.tv_sec = 1700000000 + i;
        h.ts.tv_usec = 123456 + i;
        pcap_dump((u_char *)d, &h, buf);
    }
    pcap_dump_close(d);
    pcap_close(dead);
}

/* The comments (option 1) of EPB number `frame` (1-based), joined by '|'. */
static void epb_comments(const uint8_t *p, size_t n, unsigned frame, char *out, size_t outlen)
{
    out[0] = '\0';
    unsigned k = 0;
    for (size_t off = 0; off + 12 <= n;) {
        uint32_t type, total;
        memcpy(&type, p + off, 4);
        memcpy(&total, p + off + 4, 4);
        ck_assert_uint_ge(total, 12);
        if (type == 6 && ++k == frame) {
            uint32_t caplen;
            memcpy(&caplen, p + off + 20, 4);
            size_t o = off + 28 + ((caplen + 3) & ~3u);
            while (o + 4 <= off + total - 4) {
                uint16_t code, len;
                memcpy(&code, p + o, 2);
                memcpy(&len, p + o + 2, 2);
                if (code == 0)
                    break;
                if (code == 1) {
                    size_t l = strlen(out);
                    snprintf(out + l, outlen - l, "%s%.*s", l ? "|" : "", (int)len,
                             (const char *)p + o + 4);
                }
                o += 4 + ((len + 3u) & ~3u);
            }
            return;
        }
        off += total;
    }
}

START_TEST(copy_with_comments)
{
    write_input(6);
    const char *shb[] = {"faultgate run: scenario x, verdict fail", "seed 7"};
    struct fg_pcapng_note notes[] = {
        {3, "FAIL closes-after-stall: never closed"},
        {2, "fault 1: stall after reply 354, conn #1"},
        {3, "PASS gateway-alive: ok"},
        {99, "a frame the capture lacks"},
    };
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_int_eq(
        fg_pcapng_write(in_path, out_path, shb, 2, "faultgate test", notes, 4, err, sizeof err), 0);

    FILE *f = fopen(out_path, "rb");
    ck_assert_ptr_nonnull(f);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint32_t magic;
    memcpy(&magic, buf, 4);
    ck_assert_uint_eq(magic, 0x0A0D0D0A);
    ck_assert_ptr_nonnull(memmem(buf, n, "seed 7", 6));
    ck_assert_ptr_nonnull(memmem(buf, n, "faultgate test", 14));
    char c[512];
    epb_comments(buf, n, 1, c, sizeof c);
    ck_assert_str_eq(c, "");
    epb_comments(buf, n, 2, c, sizeof c);
    ck_assert_str_eq(c, "fault 1: stall after reply 354, conn #1");
    epb_comments(buf, n, 3, c, sizeof c);
    ck_assert_str_eq(c, "FAIL closes-after-stall: never closed|PASS gateway-alive: ok");
    ck_assert_ptr_null(memmem(buf, n, "lacks", 5));

    /* libpcap reads the packets back as they were. */
    char perr[PCAP_ERRBUF_SIZE];
    pcap_t *a = pcap_open_offline(in_path, perr), *b = pcap_open_offline(out_path, perr);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(pcap_datalink(b), DLT_EN10MB);
    struct pcap_pkthdr *ha, *hb;
    const u_char *da, *db;
    int frames = 0;
    while (pcap_next_ex(a, &ha, &da) == 1) {
        ck_assert_int_eq(pcap_next_ex(b, &hb, &db), 1);
        ck_assert_uint_eq(ha->caplen, hb->caplen);
        ck_assert_uint_eq(ha->len, hb->len);
        ck_assert_int_eq(ha->ts.tv_sec, hb->ts.tv_sec);
        ck_assert_int_eq(ha->ts.tv_usec, hb->ts.tv_usec);
        ck_assert_int_eq(memcmp(da, db, ha->caplen), 0);
        frames++;
    }
    ck_assert_int_eq(frames, 6);
    ck_assert_int_ne(pcap_next_ex(b, &hb, &db), 1);
    pcap_close(a);
    pcap_close(b);

    /* In place: the same file rewritten (the run's case). */
    ck_assert_int_eq(fg_pcapng_write(in_path, in_path, shb, 1, NULL, notes, 1, err, sizeof err), 0);
    a = pcap_open_offline(in_path, perr);
    ck_assert_ptr_nonnull(a);
    pcap_close(a);
    unlink(in_path);
    unlink(out_path);
}
END_TEST

START_TEST(unreadable_input)
{
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_int_eq(fg_pcapng_write("/nonexistent/x.pcap", "/tmp/fg-check-pcapng-none.pcapng",
                                     NULL, 0, NULL, NULL, 0, err, sizeof err),
                     FG_ETRACE);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.pcap"));
    ck_assert_int_ne(access("/tmp/fg-check-pcapng-none.pcapng", F_OK), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pcapng");
    TCase *tc = tcase_create("write");
    tcase_add_test(tc, copy_with_comments);
    tcase_add_test(tc, unreadable_input);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
