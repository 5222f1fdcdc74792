/* check_progress.c - the live status line: drawn with the scenario, its
 * stage and the elapsed time, redrawn by its timer while the loop runs,
 * wiped at the end; nothing at all when off; the timer never keeps the
 * loop alive.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "faultgate/progress.h"
#include "faultgate/util.h"

static char *contents(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = fg_calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fseek(f, n, SEEK_SET);
    return s;
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

struct ctx {
    struct fg_progress *p;
    uv_timer_t stop;
};

static void on_stop(uv_timer_t *t)
{
    /* the end of the "scenario": the progress timer has had 700 ms */
    uv_close((uv_handle_t *)t, NULL);
}

START_TEST(live_line_is_drawn_redrawn_and_wiped)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    struct fg_progress *p = fg_progress_new(&loop, f, FG_PROGRESS_LIVE);
    ck_assert(fg_progress_live(p));
    fg_progress_begin(p, 2, 5, "kb-q129140-hang-after-data");
    fg_progress_stage(p, "watching");
    /* run the loop for a while: a referenced one-shot timer is what keeps
     * it running; the progress timer redraws meanwhile */
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, 700, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    char *s = contents(f);
    ck_assert_ptr_nonnull(strstr(s, "[2/5] kb-q129140-hang-after-data: watching, "));
    ck_assert_ptr_nonnull(strstr(s, " s\033[K"));
    /* begin + stage + at least one timer redraw */
    ck_assert_uint_ge(count(s, "\r[2/5]"), 3);
    free(s);
    long before = ftell(f);
    fg_progress_end(p);
    s = contents(f);
    ck_assert_str_eq(s + before, "\r\033[K");
    free(s);
    /* nothing more once ended, even if asked */
    before = ftell(f);
    fg_progress_draw(p);
    ck_assert_int_eq(ftell(f), before);
    fg_progress_free(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    fclose(f);
}
END_TEST

START_TEST(off_draws_nothing_and_auto_is_off_for_a_file)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    FILE *f = tmpfile();
    for (int mode = 0; mode < 2; mode++) {
        struct fg_progress *p =
            fg_progress_new(&loop, f, mode ? FG_PROGRESS_OFF : FG_PROGRESS_AUTO);
        ck_assert(!fg_progress_live(p));
        fg_progress_begin(p, 1, 1, "x");
        fg_progress_stage(p, "injecting");
        fg_progress_end(p);
        fg_progress_free(p);
    }
    /* an unreferenced timer does not keep the loop running */
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(ftell(f), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    fclose(f);
    fg_progress_free(NULL);
}
END_TEST

START_TEST(flight_line_names_the_scenarios_in_flight)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    /* no loop: the parallel run's scheduler redraws on its own ticks */
    struct fg_progress *p = fg_progress_new(NULL, f, FG_PROGRESS_LIVE);
    const char *ids[] = {"r-a", "r-b", "r-c"};
    fg_progress_flight(p, 4, 52, ids, 3, fg_now_ms());
    char *s = contents(f);
    ck_assert_ptr_nonnull(strstr(s, "\r[4/52] 0."));
    ck_assert_ptr_nonnull(strstr(s, " s, 3 running: r-a, r-b, r-c\033[K"));
    free(s);
    long before = ftell(f);
    fg_progress_end(p);
    s = contents(f);
    ck_assert_str_eq(s + before, "\r\033[K");
    free(s);
    fg_progress_free(p);
    fclose(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("line");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, live_line_is_drawn_redrawn_and_wiped);
    tcase_add_test(tc, off_draws_nothing_and_auto_is_off_for_a_file);
    tcase_add_test(tc, flight_line_names_the_scenarios_in_flight);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
