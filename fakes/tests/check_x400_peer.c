/* check_x400_peer.c - the fake X.400 MTA: the initiator transfers a message
 * to the responder (ledger, token, MIA per MIP), and every invalid
 * minor-sync variant makes the strict responder abort the association.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/fake_x400.h"
#include "faultgate/util.h"

struct ctx {
    uv_loop_t loop;
    struct fg_x400_peer *peer;
    uv_timer_t deadline;
    int done, status;
    char detail[512];
    uint32_t carry;
};

static void deadline_cb(uv_timer_t *t)
{
    (void)t;
    ck_abort_msg("deadline passed");
}

static void sent(void *ud, int status, const char *detail)
{
    struct ctx *c = ud;
    c->done = 1;
    c->status = status;
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
    uv_stop(&c->loop);
}

static void setup(struct ctx *c, enum fg_x400_reaction r)
{
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    struct fg_x400_peer_opts o = {.host = "127.0.0.1", .port = 0, .on_invalid = r};
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_x400_peer_new(&c->loop, &o, &c->peer, err, sizeof(err)), 0);
    ck_assert_int_gt(fg_x400_peer_port(c->peer), 0);
    uv_timer_init(&c->loop, &c->deadline);
    uv_timer_start(&c->deadline, deadline_cb, 20000, 0);
    uv_unref((uv_handle_t *)&c->deadline);
}

static void teardown(struct ctx *c)
{
    fg_x400_peer_close(c->peer, NULL, NULL);
    uv_close((uv_handle_t *)&c->deadline, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&c->loop), 0);
}

static const char msg[] =
    "Received: from a\r\nX-Faultgate-Token: tok-42\r\nSubject: x\r\n\r\n"
    "0123456789012345678901234567890123456789012345678901234567890123456789"
    "0123456789012345678901234567890123456789012345678901234567890123456789\r\n";

static void send_one(struct ctx *c, enum fg_x400_sync_bug bug, uint32_t ckpt)
{
    struct fg_x400_send_opts so = {.host = "127.0.0.1",
                                   .port = fg_x400_peer_port(c->peer),
                                   .msg = (const uint8_t *)msg,
                                   .len = sizeof(msg) - 1,
                                   .checkpoint = ckpt,
                                   .window = 3,
                                   .bug = bug,
                                   .serial_carry = &c->carry,
                                   .timeout_ms = 5000};
    c->done = 0;
    ck_assert_int_eq(fg_x400_send(&c->loop, &so, sent, c, NULL), 0);
    while (!c->done)
        uv_run(&c->loop, UV_RUN_ONCE);
}

START_TEST(test_transfer)
{
    struct ctx c;
    setup(&c, FG_X400_REACT_ABORT);
    send_one(&c, FG_X400_SYNC_OK, 1);
    ck_assert_msg(c.status == 0, "status %d: %s", c.status, c.detail);
    /* a second association, numbering reset at its AS */
    send_one(&c, FG_X400_SYNC_OK, 1);
    ck_assert_msg(c.status == 0, "status %d: %s", c.status, c.detail);
    /* no checkpointing: one DT, no MIP */
    send_one(&c, FG_X400_SYNC_OK, 0);
    ck_assert_msg(c.status == 0, "status %d: %s", c.status, c.detail);
    ck_assert_uint_eq(fg_x400_peer_count_token(c.peer, "tok-42"), 3);
    size_t n;
    const struct fg_ledger_entry *e = fg_x400_peer_ledger(c.peer, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(e[0].size, sizeof(msg) - 1);
    ck_assert_uint_eq(strlen(e[0].sha256), 64);
    ck_assert_uint_eq(fg_x400_peer_aborts(c.peer), 0);
    teardown(&c);
}
END_TEST

static void expect_abort(enum fg_x400_sync_bug bug, enum fg_x400_reaction r, const char *needle)
{
    struct ctx c;
    setup(&c, r);
    if (bug == FG_X400_SYNC_NO_RESET) {
        send_one(&c, bug, 1); /* the first activity is numbered right */
        ck_assert_msg(c.status == 0, "status %d: %s", c.status, c.detail);
    }
    send_one(&c, bug, 1);
    ck_assert_msg(c.status < 0, "%s: transfer succeeded", fg_x400_sync_bug_name(bug));
    ck_assert_msg(strstr(c.detail, needle) != NULL, "%s: '%s' not in '%s'",
                  fg_x400_sync_bug_name(bug), needle, c.detail);
    ck_assert_uint_eq(fg_x400_peer_aborts(c.peer), 1);
    ck_assert_uint_eq(fg_x400_peer_count_token(c.peer, "tok-42"), bug == FG_X400_SYNC_NO_RESET);
    teardown(&c);
}

START_TEST(test_bad_minor_sync)
{
    expect_abort(FG_X400_SYNC_FIRST_ZERO, FG_X400_REACT_ABORT, "association aborted (AB");
    expect_abort(FG_X400_SYNC_DUPLICATE, FG_X400_REACT_ABORT, "transport disconnect 05");
    expect_abort(FG_X400_SYNC_SKIPPED, FG_X400_REACT_ABORT, "association aborted");
    expect_abort(FG_X400_SYNC_NO_RESET, FG_X400_REACT_ABORT, "association aborted");
    expect_abort(FG_X400_SYNC_NO_GT, FG_X400_REACT_ABORT, "association aborted");
    expect_abort(FG_X400_SYNC_WINDOW, FG_X400_REACT_ABORT, "association aborted");
    /* configurable reactions */
    expect_abort(FG_X400_SYNC_FIRST_ZERO, FG_X400_REACT_ABORT_USER, "transport disconnect 03");
    expect_abort(FG_X400_SYNC_FIRST_ZERO, FG_X400_REACT_DR, "DR reason 85");
    expect_abort(FG_X400_SYNC_FIRST_ZERO, FG_X400_REACT_ER, "ER cause 02");
    expect_abort(FG_X400_SYNC_FIRST_ZERO, FG_X400_REACT_CLOSE, "tp_receive failed");
}
END_TEST

START_TEST(test_names)
{
    enum fg_x400_sync_bug b;
    enum fg_x400_reaction r;
    ck_assert_int_eq(fg_x400_sync_bug_parse("window-overrun", &b), 0);
    ck_assert_int_eq(b, FG_X400_SYNC_WINDOW);
    ck_assert_int_eq(fg_x400_sync_bug_parse("bogus", &b), FG_EINPUT);
    ck_assert_int_eq(fg_x400_reaction_parse("dr", &r), 0);
    ck_assert_int_eq(r, FG_X400_REACT_DR);
    ck_assert_int_eq(fg_x400_reaction_parse("nope", &r), FG_EINPUT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("x400_peer");
    TCase *tc = tcase_create("peer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_transfer);
    tcase_add_test(tc, test_bad_minor_sync);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
