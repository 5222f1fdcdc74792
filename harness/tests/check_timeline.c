/* check_timeline.c - timelines built from synthesized SMTP captures.
 *
 * A session with pipelining, a multi-line EHLO reply and a dot-stuffed
 * body carrying a token header; a BDAT session; a body cut short by a
 * reset.  Each is written with the synth capture, read back with
 * fg_timeline_build, and its events, frames and messages are checked.
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/timeline.h"
#include "faultgate/util.h"

static char tmpdir[64];
static char path[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fgtimeline-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(path, sizeof(path), "%s/t.pcap", tmpdir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(tmpdir);
}

struct sess {
    struct fg_capture *cap;
    struct fg_synth_conn *sc;
};

/* Writes s in direction dir; returns the frame number of its first data
 * segment. */
static uint64_t say(struct sess *x, enum fg_dir dir, const char *s)
{
    uint64_t frame = fg_capture_frames(x->cap) + 1;
    fg_capture_conn_data(x->sc, dir, s, strlen(s));
    return frame;
}

static void conn_open(struct sess *x, int cport)
{
    struct sockaddr_in c, s;
    ck_assert_int_eq(uv_ip4_addr("127.0.0.1", cport, &c), 0);
    ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 2525, &s), 0);
    x->sc = fg_capture_conn_open(x->cap, (struct sockaddr *)&c, (struct sockaddr *)&s);
    ck_assert_ptr_nonnull(x->sc);
}

static const char body1[] = "X-Faultgate-Token: tok-123\r\n"
                            "Subject: test\r\n"
                            "\r\n"
                            "..a line that starts with a dot\r\n"
                            "last line\r\n";

static const char bdat_part1[] = "X-Faultgate-Token: bd-9\r\nSubject: chunked\r\n";
static const char bdat_part2[] = "\r\nbody\r\n";

struct frames {
    uint64_t ehlo_reply, pipelined, body_end, eod_reply, quit;
    uint64_t bdat_last, bdat_last_reply, cut_rst;
};

static void write_sessions(struct frames *fr)
{
    char err[FG_ERRBUF_SIZE];
    struct sess x;
    int rc = fg_capture_open(NULL, FG_CAPTURE_SYNTH, path, NULL, 0, &x.cap, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);

    /* 1: pipelining, multi-line EHLO, dot-stuffed body with a token. */
    conn_open(&x, 40100);
    say(&x, FG_S2C, "220 mx.test ESMTP\r\n");
    say(&x, FG_C2S, "EHLO client.test\r\n");
    fr->ehlo_reply = say(&x, FG_S2C, "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n");
    fr->pipelined = say(&x, FG_C2S, "MAIL FROM:<a@one.test>\r\nRCPT TO:<b@two.test>\r\nDATA\r\n");
    say(&x, FG_S2C, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n");
    say(&x, FG_S2C, "354 go ahead\r\n");
    say(&x, FG_C2S, body1);
    say(&x, FG_C2S, "."); /* not yet the end: ".\r\n" split across writes */
    fr->body_end = fg_capture_frames(x.cap) + 1;
    say(&x, FG_C2S, "\r\n");
    fr->eod_reply = say(&x, FG_S2C, "250 2.0.0 queued as X1\r\n");
    fr->quit = say(&x, FG_C2S, "QUIT\r\n");
    say(&x, FG_S2C, "221 bye\r\n");
    fg_capture_conn_fin(x.sc, FG_S2C);
    fg_capture_conn_fin(x.sc, FG_C2S);
    fg_capture_conn_free(x.sc);

    /* 2: CHUNKING (RFC 3030). */
    char buf[128];
    conn_open(&x, 40101);
    say(&x, FG_S2C, "220 mx.test\r\n");
    say(&x, FG_C2S, "EHLO client.test\r\n");
    say(&x, FG_S2C, "250-mx.test\r\n250 CHUNKING\r\n");
    say(&x, FG_C2S, "MAIL FROM:<>\r\n");
    say(&x, FG_S2C, "250 ok\r\n");
    say(&x, FG_C2S, "RCPT TO:<b@two.test>\r\n");
    say(&x, FG_S2C, "250 ok\r\n");
    snprintf(buf, sizeof(buf), "BDAT %zu\r\n%s", strlen(bdat_part1), bdat_part1);
    say(&x, FG_C2S, buf);
    say(&x, FG_S2C, "250 chunk ok\r\n");
    snprintf(buf, sizeof(buf), "BDAT %zu LAST\r\n%s", strlen(bdat_part2), bdat_part2);
    fr->bdat_last = say(&x, FG_C2S, buf);
    fr->bdat_last_reply = say(&x, FG_S2C, "251 message ok\r\n");
    fg_capture_conn_rst(x.sc, FG_C2S);
    fg_capture_conn_free(x.sc);

    /* 3: a body cut short by a reset. */
    conn_open(&x, 40102);
    say(&x, FG_S2C, "220 mx.test\r\n");
    say(&x, FG_C2S, "HELO client.test\r\n");
    say(&x, FG_S2C, "250 mx.test\r\n");
    say(&x, FG_C2S, "MAIL FROM:<c@one.test> SIZE=99\r\n");
    say(&x, FG_S2C, "250 ok\r\n");
    say(&x, FG_C2S, "RCPT TO:<b@two.test>\r\n");
    say(&x, FG_S2C, "250 ok\r\n");
    say(&x, FG_C2S, "DATA\r\n");
    say(&x, FG_S2C, "354 go\r\n");
    say(&x, FG_C2S, "X-Faultgate-Token: cut-1\r\nSubject: never ends\r\n");
    fr->cut_rst = fg_capture_frames(x.cap) + 1;
    fg_capture_conn_rst(x.sc, FG_S2C);
    fg_capture_conn_free(x.sc);

    ck_assert_int_eq(fg_capture_close(x.cap), 0);
}

static void expect_kinds(const struct fg_tl_conn *c, const enum fg_tl_kind *k, size_t n)
{
    for (size_t i = 0; i < c->nev && i < n; i++)
        ck_assert_msg(c->ev[i].kind == k[i], "conn %u event %zu: %s, expected %s", c->id, i,
                      fg_tl_kind_name(c->ev[i].kind), fg_tl_kind_name(k[i]));
    ck_assert_uint_eq(c->nev, n);
}

START_TEST(smtp_session)
{
    struct frames fr;
    write_sessions(&fr);
    struct fg_timeline *tl = NULL;
    char err[FG_ERRBUF_SIZE];
    int rc = fg_timeline_build(path, &tl, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(tl->nconn, 3);
    ck_assert_uint_eq(tl->stats.conns, 3);
    ck_assert_uint_eq(tl->stats.gaps, 0);

    const struct fg_tl_conn *c = &tl->conn[0];
    ck_assert_uint_eq(c->id, 1);
    ck_assert_str_eq(c->client, "127.0.0.1:40100");
    ck_assert_str_eq(c->server, "127.0.0.1:2525");
    ck_assert_int_eq(c->server_port, 2525);
    const enum fg_tl_kind k1[] = {
        FG_TL_OPEN,    FG_TL_REPLY,   FG_TL_COMMAND, FG_TL_REPLY, FG_TL_COMMAND, FG_TL_COMMAND,
        FG_TL_COMMAND, FG_TL_REPLY,   FG_TL_REPLY,   FG_TL_REPLY, FG_TL_DATA,    FG_TL_END_OF_DATA,
        FG_TL_REPLY,   FG_TL_COMMAND, FG_TL_REPLY,   FG_TL_FIN,   FG_TL_FIN};
    expect_kinds(c, k1, sizeof(k1) / sizeof(k1[0]));
    for (size_t i = 1; i < c->nev; i++)
        ck_assert_uint_ge(c->ev[i].frame, c->ev[i - 1].frame);
    ck_assert_uint_eq(c->ev[0].frame, 1);

    ck_assert_int_eq(c->ev[1].code, 220);
    ck_assert_int_eq(c->ev[1].answers, FG_ANS_GREETING);
    ck_assert_str_eq(c->ev[1].text, "220 mx.test ESMTP");
    ck_assert_int_eq(c->ev[2].verb, FG_VERB_EHLO);
    ck_assert_str_eq(c->ev[2].text, "EHLO client.test");
    ck_assert_int_eq(c->ev[3].code, 250);
    ck_assert_int_eq(c->ev[3].verb, FG_VERB_EHLO);
    ck_assert_str_eq(c->ev[3].text, "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100000");
    ck_assert_uint_eq(c->ev[3].frame, fr.ehlo_reply);
    /* Three pipelined commands in one segment, answered in order. */
    ck_assert_uint_eq(c->ev[4].frame, fr.pipelined);
    ck_assert_uint_eq(c->ev[6].frame, fr.pipelined);
    ck_assert_int_eq(c->ev[4].verb, FG_VERB_MAIL);
    ck_assert_int_eq(c->ev[5].verb, FG_VERB_RCPT);
    ck_assert_int_eq(c->ev[6].verb, FG_VERB_DATA);
    ck_assert_int_eq(c->ev[7].verb, FG_VERB_MAIL);
    ck_assert_int_eq(c->ev[8].verb, FG_VERB_RCPT);
    ck_assert_int_eq(c->ev[9].code, 354);
    ck_assert_int_eq(c->ev[9].verb, FG_VERB_DATA);
    /* The end of data is completed by the segment holding its last LF. */
    ck_assert_uint_eq(c->ev[11].frame, fr.body_end);
    ck_assert_uint_gt(c->ev[11].frame, c->ev[10].frame);
    ck_assert_int_eq(c->ev[12].code, 250);
    ck_assert_int_eq(c->ev[12].answers, FG_ANS_END_OF_DATA);
    ck_assert_uint_eq(c->ev[12].frame, fr.eod_reply);
    ck_assert_uint_eq(c->ev[13].frame, fr.quit);
    ck_assert_int_eq(c->ev[13].verb, FG_VERB_QUIT);
    ck_assert_int_eq(c->ev[14].code, 221);
    ck_assert_int_eq(c->ev[15].dir, FG_S2C);
    ck_assert_int_eq(c->ev[16].dir, FG_C2S);
    ck_assert_uint_ge(c->ev[16].us, c->ev[0].us);

    ck_assert_uint_eq(c->nmsg, 1);
    const struct fg_tl_msg *m = &c->msg[0];
    ck_assert_str_eq(m->token, "tok-123");
    ck_assert_str_eq(m->mail_from, "FROM:<a@one.test>");
    ck_assert(m->complete);
    ck_assert_uint_eq(m->data_event, 10);
    ck_assert_uint_eq(m->eod_event, 11);
    ck_assert_int_eq(m->reply_code, 250);
    ck_assert_uint_eq(m->reply_event, 12);
    ck_assert_uint_eq(m->size, strlen(body1));
    ck_assert_uint_eq(c->ev[10].size, strlen(body1));

    ck_assert_int_eq(fg_tl_conn_first(c, 0, FG_TL_FIN, FG_C2S), 16);
    ck_assert_int_eq(fg_tl_conn_first(c, 0, FG_TL_FIN, -1), 15);
    ck_assert_int_eq(fg_tl_conn_first(c, 13, FG_TL_REPLY, FG_S2C), 14);
    ck_assert_int_eq(fg_tl_conn_first(c, 0, FG_TL_RST, -1), -1);
    ck_assert_int_eq(fg_tl_conn_first(c, 100, FG_TL_OPEN, -1), -1);

    /* 2: BDAT; the reply to the LAST chunk answers the message. */
    c = &tl->conn[1];
    ck_assert_uint_eq(c->nmsg, 1);
    m = &c->msg[0];
    ck_assert_str_eq(m->token, "bd-9");
    ck_assert_str_eq(m->mail_from, "FROM:<>");
    ck_assert(m->complete);
    ck_assert_int_eq(m->reply_code, 251);
    ck_assert_uint_eq(c->ev[m->reply_event].frame, fr.bdat_last_reply);
    ck_assert_int_eq(c->ev[m->eod_event].kind, FG_TL_BDAT_END);
    ck_assert(c->ev[m->eod_event].last);
    ck_assert_uint_eq(c->ev[m->eod_event].size, strlen(bdat_part2));
    ck_assert_uint_eq(c->ev[m->eod_event].frame, fr.bdat_last);
    ck_assert_uint_eq(m->size, strlen(bdat_part1) + strlen(bdat_part2));
    ck_assert_int_eq(c->ev[m->data_event].kind, FG_TL_COMMAND);
    ck_assert_int_eq(c->ev[m->data_event].verb, FG_VERB_BDAT);
    long b1 = fg_tl_conn_first(c, 0, FG_TL_BDAT_END, -1);
    ck_assert_int_ge(b1, 0);
    ck_assert(!c->ev[b1].last);
    ck_assert_uint_eq(c->ev[b1].size, strlen(bdat_part1));
    /* The protocol-level points hold on the BDAT path: the LAST chunk is
     * the end of data and its reply the reply to it; the first BDAT of the
     * transaction starts the data (there is no 354). */
    ck_assert(fg_tl_is_end_of_data(&c->ev[m->eod_event]));
    ck_assert(!fg_tl_is_end_of_data(&c->ev[b1]));
    ck_assert(fg_tl_is_eod_reply(&c->ev[m->reply_event]));
    ck_assert(c->ev[m->reply_event].last);
    ck_assert(fg_tl_is_data_start(c, m->data_event));
    size_t nstart = 0, nopen = 0, neodr = 0;
    for (size_t i = 0; i < c->nev; i++) {
        nstart += (size_t)fg_tl_is_data_start(c, i);
        nopen += (size_t)fg_tl_is_opening(&c->ev[i]);
        neodr += (size_t)fg_tl_is_eod_reply(&c->ev[i]);
    }
    ck_assert_uint_eq(nstart, 1); /* the second BDAT does not start it again */
    ck_assert_uint_eq(nopen, 1);
    ck_assert_uint_eq(neodr, 1); /* the first chunk's reply is not the end of data's */
    long r = fg_tl_conn_first(c, 0, FG_TL_RST, -1);
    ck_assert_int_eq(r, (long)c->nev - 1);
    ck_assert_int_eq(c->ev[r].dir, FG_C2S);

    /* 3: the body never ended. */
    c = &tl->conn[2];
    ck_assert_uint_eq(c->nmsg, 1);
    m = &c->msg[0];
    ck_assert(!m->complete);
    ck_assert_uint_eq(m->eod_event, FG_TL_NONE);
    ck_assert_uint_eq(m->reply_event, FG_TL_NONE);
    ck_assert_int_eq(m->reply_code, 0);
    ck_assert_str_eq(m->token, "cut-1");
    ck_assert_str_eq(m->mail_from, "FROM:<c@one.test> SIZE=99");
    r = fg_tl_conn_first(c, 0, FG_TL_RST, FG_S2C);
    ck_assert_int_ge(r, 0);
    ck_assert_uint_eq(c->ev[r].frame, fr.cut_rst);
    /* HELO is the opening command there, and the 354 starts the data. */
    long h = fg_tl_conn_first(c, 0, FG_TL_COMMAND, FG_C2S);
    ck_assert_int_eq(c->ev[h].verb, FG_VERB_HELO);
    ck_assert(fg_tl_is_opening(&c->ev[h]));
    size_t n354 = 0;
    for (size_t i = 0; i < c->nev; i++)
        if (fg_tl_is_data_start(c, i)) {
            ck_assert_int_eq(c->ev[i].code, 354);
            n354++;
        }
    ck_assert_uint_eq(n354, 1);

    struct fg_tl_conn *out[2];
    ck_assert_uint_eq(fg_timeline_conns_to(tl, 2525, out, 2), 3);
    ck_assert_ptr_eq(out[0], &tl->conn[0]);
    ck_assert_ptr_eq(out[1], &tl->conn[1]);
    ck_assert_uint_eq(fg_timeline_conns_to(tl, 25, out, 2), 0);
    fg_timeline_free(tl);
}
END_TEST

START_TEST(names_and_errors)
{
    for (int k = FG_TL_OPEN; k <= FG_TL_VIOLATION; k++)
        ck_assert_str_ne(fg_tl_kind_name((enum fg_tl_kind)k), "?");
    ck_assert_str_eq(fg_tl_kind_name(FG_TL_END_OF_DATA), "end-of-data");
    struct fg_timeline *tl = (struct fg_timeline *)1;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_timeline_build("/nonexistent/x.pcap", &tl, err, sizeof(err)), FG_ETRACE);
    ck_assert_ptr_null(tl);
    fg_timeline_free(NULL);
}
END_TEST

START_TEST(violation_and_gapless_order)
{
    /* A bare LF in a command is reported as a violation event. */
    char err[FG_ERRBUF_SIZE];
    struct sess x;
    ck_assert_int_eq(
        fg_capture_open(NULL, FG_CAPTURE_SYNTH, path, NULL, 0, &x.cap, err, sizeof(err)), 0);
    conn_open(&x, 40200);
    say(&x, FG_S2C, "220 hi\r\n");
    say(&x, FG_C2S, "EHLO bare\n");
    say(&x, FG_S2C, "250 ok\r\n");
    fg_capture_conn_fin(x.sc, FG_C2S);
    fg_capture_conn_free(x.sc);
    ck_assert_int_eq(fg_capture_close(x.cap), 0);

    struct fg_timeline *tl;
    ck_assert_int_eq(fg_timeline_build(path, &tl, err, sizeof(err)), 0);
    ck_assert_uint_eq(tl->nconn, 1);
    const struct fg_tl_conn *c = &tl->conn[0];
    long v = fg_tl_conn_first(c, 0, FG_TL_VIOLATION, FG_C2S);
    ck_assert_int_ge(v, 0);
    ck_assert_str_eq(c->ev[v].text, "bare-lf");
    ck_assert_int_ge(fg_tl_conn_first(c, 0, FG_TL_FIN, FG_C2S), 0);
    fg_timeline_free(tl);
}
END_TEST

static Suite *timeline_suite(void)
{
    Suite *s = suite_create("timeline");
    TCase *tc = tcase_create("timeline");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, smtp_session);
    tcase_add_test(tc, names_and_errors);
    tcase_add_test(tc, violation_and_gapless_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(timeline_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
