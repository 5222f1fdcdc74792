/* progress.c - the live status line of `faultgate run` (faultgate/progress.h).
 *
 * The line is "[k/n] scenario-id: stage, 12.3 s", drawn with a carriage
 * return and the ANSI "erase to end of line" (CSI K, ECMA-48 §8.3.41), and
 * cut to the terminal's width so that it never wraps (a wrapped line could
 * not be redrawn in place).  When out is not a terminal nothing is drawn:
 * logs and CI get only the run's line per finished scenario.
 *
 * A parallel run draws "[done/total] 12.3 s, N running: id, id, ..."
 * instead (fg_progress_flight), from its scheduler's own ticks.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "faultgate/progress.h"
#include "faultgate/util.h"

#define REDRAW_MS 250

struct fg_progress {
    uv_timer_t timer;
    FILE *out;
    int live;
    int shown; /* a line is on screen */
    size_t index, total;
    char id[128];
    char stage[64];
    uint64_t t0_ms;
    int has_timer;
};

static void on_tick(uv_timer_t *t)
{
    fg_progress_draw(t->data);
}

struct fg_progress *fg_progress_new(uv_loop_t *loop, FILE *out, enum fg_progress_mode mode)
{
    struct fg_progress *p = fg_calloc(1, sizeof *p);
    p->out = out;
    if (mode == FG_PROGRESS_LIVE) {
        p->live = 1;
    } else if (mode == FG_PROGRESS_AUTO) {
        const char *term = getenv("TERM");
        p->live = out && isatty(fileno(out)) && !(term && strcmp(term, "dumb") == 0);
    }
    if (loop) {
        uv_timer_init(loop, &p->timer);
        p->timer.data = p;
        /* Never the reason the loop keeps running. */
        uv_unref((uv_handle_t *)&p->timer);
        p->has_timer = 1;
    }
    return p;
}

int fg_progress_live(const struct fg_progress *p)
{
    return p && p->live;
}

static int columns(FILE *out)
{
    struct winsize ws;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

void fg_progress_draw(struct fg_progress *p)
{
    if (!p || !p->live || !p->id[0])
        return;
    char line[512];
    double el = (double)(fg_now_ms() - p->t0_ms) / 1000.0;
    int n = snprintf(line, sizeof line, "[%zu/%zu] %s: %s, %.1f s", p->index, p->total, p->id,
                     p->stage[0] ? p->stage : "starting", el);
    int cols = columns(p->out) - 1;
    if (n > cols && cols > 0)
        line[cols] = '\0';
    fprintf(p->out, "\r%s\033[K", line);
    fflush(p->out);
    p->shown = 1;
}

void fg_progress_begin(struct fg_progress *p, size_t index, size_t total, const char *id)
{
    if (!p)
        return;
    p->index = index;
    p->total = total;
    snprintf(p->id, sizeof p->id, "%s", id ? id : "?");
    p->stage[0] = '\0';
    p->t0_ms = fg_now_ms();
    if (!p->live)
        return;
    fg_progress_draw(p);
    if (p->has_timer)
        uv_timer_start(&p->timer, on_tick, REDRAW_MS, REDRAW_MS);
}

void fg_progress_stage(struct fg_progress *p, const char *stage)
{
    if (!p)
        return;
    snprintf(p->stage, sizeof p->stage, "%s", stage ? stage : "");
    fg_progress_draw(p);
}

void fg_progress_end(struct fg_progress *p)
{
    if (!p)
        return;
    if (p->has_timer)
        uv_timer_stop(&p->timer);
    if (p->live && p->shown) {
        fputs("\r\033[K", p->out);
        fflush(p->out);
    }
    p->shown = 0;
    p->id[0] = '\0';
}

static void closed(uv_handle_t *h)
{
    free(h->data);
}

void fg_progress_free(struct fg_progress *p)
{
    if (!p)
        return;
    fg_progress_end(p);
    if (p->has_timer)
        uv_close((uv_handle_t *)&p->timer, closed);
    else
        free(p);
}

void fg_progress_flight(struct fg_progress *p, size_t done, size_t total, const char *const *ids,
                        size_t nids, uint64_t t0_ms)
{
    if (!p || !p->live)
        return;
    char line[1024];
    int cols = columns(p->out) - 1;
    double el = t0_ms ? (double)(fg_now_ms() - t0_ms) / 1000.0 : 0.0;
    /* The time first: the ids are what the terminal's width cuts. */
    int n = snprintf(line, sizeof line, "[%zu/%zu] %.1f s, %zu running", done, total, el, nids);
    for (size_t i = 0; i < nids && n > 0 && (size_t)n < sizeof line; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s%s", i ? ", " : ": ", ids[i]);
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    if (n > cols && cols > 0)
        line[cols] = '\0';
    fprintf(p->out, "\r%s\033[K", line);
    fflush(p->out);
    p->shown = 1;
}
