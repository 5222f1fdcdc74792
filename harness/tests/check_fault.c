/* check_fault.c - tests of the fault engine: the one-line syntax (valid
 * forms, canonical text, every error with its column), the parts parsers,
 * connection selectors with once/each, and seeded determinism. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fault.h"

static struct fg_fault parse_ok(const char *line)
{
    struct fg_fault f;
    char err[256] = "";
    int col = -1;
    int rc = fg_fault_parse(line, &f, err, sizeof err, &col);
    ck_assert_msg(rc == 0, "'%s' failed: %s (col %d)", line, err, col);
    return f;
}

/* --- valid forms ---------------------------------------------------------- */

START_TEST(parse_stall_on_reply)
{
    struct fg_fault f = parse_ok("reply 354: stall");
    ck_assert_int_eq(f.trig, FG_TRIG_REPLY);
    ck_assert_int_eq(f.code, 354);
    ck_assert_int_eq(f.code_class, 0);
    ck_assert_int_eq(f.sel, FG_SEL_EVERY);
    ck_assert(f.prob == 1.0);
    ck_assert_int_eq(f.each, 0);
    ck_assert_int_eq(f.action, FG_ACT_STALL);
    ck_assert_int_eq(f.dir, FG_FDIR_DEFAULT);
    ck_assert_str_eq(f.spec, "reply 354: stall");
    fg_fault_clear(&f);
}
END_TEST

START_TEST(parse_command_first_close)
{
    struct fg_fault f = parse_ok("  Command  ehlo ,FIRST :  close s2c ");
    ck_assert_int_eq(f.trig, FG_TRIG_COMMAND);
    ck_assert_int_eq(f.verb, FG_VERB_EHLO);
    ck_assert_str_eq(f.verb_text, "EHLO");
    ck_assert_int_eq(f.verb_seq, 0);
    ck_assert_int_eq(f.sel, FG_SEL_FIRST);
    ck_assert_int_eq(f.conn_n, 1);
    ck_assert_int_eq(f.action, FG_ACT_CLOSE);
    ck_assert_int_eq(f.dir, FG_FDIR_S2C);
    ck_assert_str_eq(f.spec, "command EHLO, first: close s2c");
    fg_fault_clear(&f);
}
END_TEST

START_TEST(parse_reply_action_multiline)
{
    struct fg_fault f = parse_ok("end-of-data, nth 2: reply 451 4.3.0 try: again, later|bye");
    ck_assert_int_eq(f.trig, FG_TRIG_END_OF_DATA);
    ck_assert_int_eq(f.sel, FG_SEL_NTH);
    ck_assert_int_eq(f.conn_n, 2);
    ck_assert_int_eq(f.action, FG_ACT_REPLY);
    ck_assert_int_eq(f.reply_code, 451);
    ck_assert_str_eq(f.reply_text, "451-4.3.0 try: again, later\r\n451 bye\r\n");
    ck_assert_int_eq(f.replace, 0);
    ck_assert_str_eq(f.spec, "end-of-data, nth 2: reply 451 4.3.0 try: again, later|bye");
    fg_fault_clear(&f);

    f = parse_ok("reply 250: reply 554 a\\nb\\n c , replace");
    ck_assert_str_eq(f.reply_text, "554-a\r\n554-b\r\n554 c\r\n");
    ck_assert_int_eq(f.replace, 1);
    ck_assert_str_eq(f.spec, "reply 250: reply 554 a|b|c, replace");
    fg_fault_clear(&f);

    f = parse_ok("greeting: reply 421");
    ck_assert_int_eq(f.trig, FG_TRIG_GREETING);
    ck_assert_str_eq(f.reply_text, "421\r\n");
    ck_assert_str_eq(f.spec, "greeting: reply 421");
    fg_fault_clear(&f);
}
END_TEST

START_TEST(parse_other_forms)
{
    struct fg_fault f = parse_ok("reply-to end-of-data, every: delay 5s");
    ck_assert_int_eq(f.trig, FG_TRIG_REPLY_TO_EOD);
    ck_assert_int_eq(f.action, FG_ACT_DELAY);
    ck_assert_uint_eq(f.delay_ms, 5000);
    ck_assert_str_eq(f.spec, "reply-to end-of-data: delay 5000ms");
    fg_fault_clear(&f);

    f = parse_ok("command RCPT #3: reset");
    ck_assert_int_eq(f.verb, FG_VERB_RCPT);
    ck_assert_int_eq(f.verb_seq, 3);
    ck_assert_int_eq(f.action, FG_ACT_RESET);
    ck_assert_str_eq(f.spec, "command RCPT #3: reset");
    fg_fault_clear(&f);

    f = parse_ok("reply 2xx, every, p 0.5, once: close c2s");
    ck_assert_int_eq(f.code, 2);
    ck_assert_int_eq(f.code_class, 1);
    ck_assert(f.prob == 0.5);
    ck_assert_int_eq(f.dir, FG_FDIR_C2S);
    ck_assert_str_eq(f.spec, "reply 2xx, p 0.5: close c2s");
    fg_fault_clear(&f);

    f = parse_ok("command XFOO, from 3, each: stall both");
    ck_assert_int_eq(f.verb, FG_VERB_OTHER);
    ck_assert_str_eq(f.verb_text, "XFOO");
    ck_assert_int_eq(f.sel, FG_SEL_FROM);
    ck_assert_int_eq(f.conn_n, 3);
    ck_assert_int_eq(f.each, 1);
    ck_assert_str_eq(f.spec, "command XFOO, from 3, each: stall both");
    fg_fault_clear(&f);

    f = parse_ok("connect: delay 250ms");
    ck_assert_int_eq(f.trig, FG_TRIG_CONNECT);
    ck_assert_uint_eq(f.delay_ms, 250);
    fg_fault_clear(&f);
}
END_TEST

/* The canonical text parses back to the same canonical text. */
START_TEST(canon_round_trip)
{
    static const char *lines[] = {
        "reply 354: stall",
        "command EHLO, first: close",
        "end-of-data, nth 2: reply 451 4.3.0 try again later",
        "reply-to end-of-data, every: delay 5s",
        "command RCPT #3: reset",
        "reply 2xx, every, p 0.5, once: close c2s",
        "greeting, from 2, each: reply 554 a|b, replace",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        struct fg_fault a = parse_ok(lines[i]);
        struct fg_fault b = parse_ok(a.spec);
        ck_assert_str_eq(a.spec, b.spec);
        fg_fault_clear(&a);
        fg_fault_clear(&b);
    }
}
END_TEST

/* --- errors, each with its column ------------------------------------------ */

struct bad {
    const char *line;
    int col;
    const char *msg; /* a substring of the message */
};

static const struct bad bad_lines[] = {
    {"reply 354 stall", 16, "expected ':'"},
    {": stall", 1, "missing trigger"},
    {"replay 354: stall", 1, "unknown trigger 'replay'"},
    {"reply: stall", 6, "reply needs a code"},
    {"reply 600: stall", 7, "bad reply code '600'"},
    {"reply 3x4: stall", 7, "bad reply code"},
    {"reply 354 now: stall", 11, "unexpected 'now'"},
    {"command: stall", 8, "command needs a verb"},
    {"command E1LO: stall", 10, "bad verb"},
    {"command RCPT 3: stall", 14, "expected '#N'"},
    {"command RCPT #0: stall", 15, "bad command number"},
    {"command RCPT #x: stall", 15, "bad command number"},
    {"reply-to: stall", 9, "reply-to needs"},
    {"reply-to data: stall", 10, "reply-to supports only"},
    {"reply 354, second: stall", 12, "unknown selector 'second'"},
    {"reply 354, nth: stall", 15, "nth needs a connection number"},
    {"reply 354, nth 0: stall", 16, "bad connection number"},
    {"reply 354, from x: stall", 17, "bad connection number"},
    {"reply 354, first, nth 2: stall", 19, "second connection selector"},
    {"reply 354, once, each: stall", 18, "conflicts"},
    {"reply 354, p 1.5: stall", 14, "bad probability"},
    {"reply 354, p: stall", 13, "p needs a probability"},
    {"reply 354, p 0.1, p 0.2: stall", 19, "second probability"},
    {"reply 354, : stall", 12, "empty selector"},
    {"reply 354, first 2: stall", 18, "unexpected '2'"},
    {"reply 354:", 11, "missing action"},
    {"reply 354: hang", 12, "unknown action 'hang'"},
    {"reply 354: stall up", 18, "bad direction 'up'"},
    {"reply 354: close both now", 23, "unexpected 'now'"},
    {"reply 354: reset both", 18, "unexpected 'both'"},
    {"reply 354: delay", 17, "delay needs a duration"},
    {"reply 354: delay soon", 18, "bad duration 'soon'"},
    {"reply 354: delay 0s", 18, "longer than 0"},
    {"reply 354: reply", 17, "reply needs a code"},
    {"reply 354: reply 45 x", 18, "bad reply code '45'"},
    {"reply 354: stall, replace", 19, "applies only to the reply"},
    {"reply 354: stall, loudly", 19, "unknown option 'loudly'"},
    {"reply 354: stall,", 18, "empty option"},
    {"connect: reply 554 no, replace", 24, "not valid on connect"},
};

START_TEST(parse_errors)
{
    const struct bad *b = &bad_lines[_i];
    struct fg_fault f;
    char err[256] = "";
    int col = -1;
    int rc = fg_fault_parse(b->line, &f, err, sizeof err, &col);
    ck_assert_msg(rc == FG_ESYNTAX, "'%s' parsed", b->line);
    ck_assert_msg(strstr(err, b->msg), "'%s': message '%s' lacks '%s'", b->line, err, b->msg);
    ck_assert_msg(col == b->col, "'%s': column %d, expected %d (%s)", b->line, col, b->col, err);
    ck_assert_ptr_null(f.spec);
    ck_assert_ptr_null(f.reply_text);
}
END_TEST

/* --- parts (scenario form) -------------------------------------------------- */

START_TEST(parts_scenario_form)
{
    struct fg_fault f;
    char err[256];
    int col = 0;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(fg_fault_parse_trigger("reply 354", &f, err, sizeof err, &col), 0);
    ck_assert_int_eq(fg_fault_parse_selector("nth 2, each", &f, err, sizeof err, &col), 0);
    ck_assert_int_eq(fg_fault_parse_action("reply 451 busy, replace", &f, err, sizeof err, &col),
                     0);
    ck_assert_int_eq(fg_fault_check(&f, err, sizeof err), 0);
    fg_fault_canon(&f);
    ck_assert_str_eq(f.spec, "reply 354, nth 2, each: reply 451 busy, replace");
    ck_assert(f.prob == 1.0);
    fg_fault_clear(&f);

    /* A part's column is relative to that part. */
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(fg_fault_parse_selector("first, p 2", &f, err, sizeof err, &col), FG_ESYNTAX);
    ck_assert_int_eq(col, 10);
    ck_assert_int_eq(fg_fault_parse_trigger("reply 354 x", &f, err, sizeof err, &col), FG_ESYNTAX);
    ck_assert_int_eq(col, 11);

    /* Without a selector part the defaults hold; p 0 given stays 0. */
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(fg_fault_parse_trigger("greeting", &f, err, sizeof err, NULL), 0);
    ck_assert_int_eq(fg_fault_parse_action("reset", &f, err, sizeof err, NULL), 0);
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 1);
    ck_assert_int_eq(fg_fault_set_add(&fs, &f), 0);
    ck_assert(fs.faults[0].prob == 1.0);
    ck_assert_str_eq(fs.faults[0].spec, "greeting: reset");
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(fg_fault_parse_trigger("greeting", &f, err, sizeof err, NULL), 0);
    ck_assert_int_eq(fg_fault_parse_selector("p 0", &f, err, sizeof err, NULL), 0);
    ck_assert_int_eq(fg_fault_parse_action("reset", &f, err, sizeof err, NULL), 0);
    ck_assert_int_eq(fg_fault_set_add(&fs, &f), 0);
    ck_assert(fs.faults[1].prob == 0.0);

    /* replace on a non-reply action is caught by the check. */
    memset(&f, 0, sizeof f);
    f.action = FG_ACT_STALL;
    f.replace = 1;
    ck_assert_int_eq(fg_fault_check(&f, err, sizeof err), FG_ESYNTAX);
    fg_fault_set_free(&fs);
}
END_TEST

/* --- matching --------------------------------------------------------------- */

static struct fg_smtp_event ev_reply(int code, enum fg_smtp_answers ans)
{
    struct fg_smtp_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = FG_SMTP_EV_REPLY;
    ev.dir = FG_S2C;
    ev.code = code;
    ev.answers = ans;
    return ev;
}

static struct fg_smtp_event ev_cmd(enum fg_smtp_verb v, const char *text, unsigned seq)
{
    struct fg_smtp_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = FG_SMTP_EV_COMMAND;
    ev.dir = FG_C2S;
    ev.verb = v;
    snprintf(ev.verb_text, sizeof ev.verb_text, "%s", text);
    ev.verb_seq = seq;
    return ev;
}

static void add(struct fg_fault_set *fs, const char *line)
{
    struct fg_fault f = parse_ok(line);
    ck_assert_int_eq(fg_fault_set_add(fs, &f), 0);
}

static struct fg_fault_conn conn(unsigned n)
{
    struct fg_fault_conn c;
    memset(&c, 0, sizeof c);
    c.conn = n;
    return c;
}

START_TEST(match_triggers)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 7);
    add(&fs, "connect: stall");                 /* 0 */
    add(&fs, "command RCPT #2: reset");         /* 1 */
    add(&fs, "reply 4xx: close");               /* 2 */
    add(&fs, "reply-to end-of-data: delay 1s"); /* 3 */
    add(&fs, "greeting: reply 421 bye");        /* 4 */
    add(&fs, "end-of-data: stall c2s");         /* 5 */
    add(&fs, "command XCLIENT: close");         /* 6 */
    add(&fs, "reply 250, each: stall");         /* 7 */
    struct fg_fault_conn c = conn(1);

    ck_assert_int_eq(fg_fault_set_match(&fs, &c, NULL, 0), 0);
    struct fg_smtp_event ev = ev_cmd(FG_VERB_RCPT, "RCPT", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);
    ev = ev_cmd(FG_VERB_RCPT, "RCPT", 2);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 1);
    ev = ev_cmd(FG_VERB_OTHER, "XCLIENT", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 6);
    ev = ev_reply(220, FG_ANS_GREETING);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 4);
    ev = ev_reply(250, FG_ANS_END_OF_DATA); /* both reply-to eod and reply 250 */
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 3);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 4), 7);
    ev = ev_reply(451, FG_ANS_COMMAND);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 2);
    memset(&ev, 0, sizeof ev);
    ev.type = FG_SMTP_EV_END_OF_DATA;
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 5);
    ev.type = FG_SMTP_EV_BDAT_END; /* a non-LAST chunk is not the end of data */
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);

    ck_assert_uint_eq(fs.nlog, 8);
    ck_assert_uint_eq(fs.log[1].fault, 1);
    ck_assert_str_eq(fs.log[1].trigger, "command RCPT #2");
    ck_assert_str_eq(fs.log[1].action, "reset");
    ck_assert_str_eq(fs.log[0].trigger, "connect");
    ck_assert_str_eq(fs.log[3].action, "reply 421 bye");
    ck_assert_str_eq(fs.log[3].trigger, "greeting");
    ck_assert_str_eq(fs.log[4].trigger, "reply-to end-of-data");
    ck_assert_str_eq(fs.log[5].trigger, "reply 250");
    /* Decision triggers parse back as triggers (the analyzer relies on it). */
    for (size_t i = 0; i < fs.nlog; i++) {
        struct fg_fault t;
        char err[128];
        memset(&t, 0, sizeof t);
        ck_assert_msg(fg_fault_parse_trigger(fs.log[i].trigger, &t, err, sizeof err, NULL) == 0,
                      "%s: %s", fs.log[i].trigger, err);
    }
    ck_assert_uint_eq(fs.log[0].conn, 1);
    ck_assert(fs.log[0].t_us > 0);
    fg_fault_set_free(&fs);
}
END_TEST

/* The protocol-level triggers hold on every path: the reply to the end of
 * data answers the final dot or the LAST chunk; start-of-data is the 354 to
 * DATA or a transaction's first BDAT; the opening command is EHLO or HELO. */
START_TEST(match_path_triggers)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 7);
    add(&fs, "reply-to end-of-data, each: delay 1s"); /* 0 */
    add(&fs, "start-of-data, each: stall");           /* 1 */
    add(&fs, "opening-command, each: close");         /* 2 */
    add(&fs, "end-of-data, each: stall c2s");         /* 3 */
    struct fg_fault_conn c = conn(1);

    struct fg_smtp_event ev = ev_cmd(FG_VERB_HELO, "HELO", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 2);
    ev = ev_cmd(FG_VERB_EHLO, "EHLO", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 2);
    ev = ev_cmd(FG_VERB_MAIL, "MAIL", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);
    /* BDAT path: the first BDAT starts the data, the second does not */
    ev = ev_cmd(FG_VERB_BDAT, "BDAT", 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 2), -1); /* matched again: same answer */
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 1), 1);
    ev = ev_reply(250, FG_ANS_BDAT); /* a non-LAST chunk's reply */
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);
    ev = ev_cmd(FG_VERB_BDAT, "BDAT", 2);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);
    memset(&ev, 0, sizeof ev);
    ev.type = FG_SMTP_EV_BDAT_END;
    ev.last = 1;
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 3);
    ev = ev_reply(250, FG_ANS_BDAT);
    ev.last = 1; /* BDAT n LAST / BDAT 0 LAST: the reply to the end of data */
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 0);
    /* a new transaction: its first BDAT starts its data again */
    ev = ev_cmd(FG_VERB_MAIL, "MAIL", 2);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);
    ev = ev_cmd(FG_VERB_BDAT, "BDAT", 3);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 1);
    /* DATA path: the 354 to DATA starts the data, not another 354 */
    ev = ev_reply(354, FG_ANS_COMMAND);
    ev.answers_verb = FG_VERB_DATA;
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 1);
    ev.answers_verb = FG_VERB_OTHER;
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), -1);

    const char *want[] = {"command HELO #1", "command EHLO #1", "command BDAT #1",
                          "command BDAT #1", "end-of-data",     "reply-to end-of-data",
                          "command BDAT #3", "reply 354"};
    ck_assert_uint_eq(fs.nlog, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < fs.nlog; i++)
        ck_assert_str_eq(fs.log[i].trigger, want[i]);
    /* canonical text and errors */
    struct fg_fault f = parse_ok("opening-command, first: close");
    ck_assert_str_eq(f.spec, "opening-command, first: close");
    fg_fault_clear(&f);
    f = parse_ok("start-of-data: delay 3s");
    ck_assert_str_eq(f.spec, "start-of-data: delay 3000ms");
    fg_fault_clear(&f);
    fg_fault_set_free(&fs);
}
END_TEST

/* first/nth: one connection, once per run; every/from: once per connection;
 * each: every match. */
START_TEST(match_selectors_once)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 1);
    add(&fs, "reply 354, first: stall");      /* 0 */
    add(&fs, "reply 354, nth 3: close");      /* 1 */
    add(&fs, "reply 354, from 2: reset");     /* 2 */
    add(&fs, "reply 354: delay 1s");          /* 3 */
    add(&fs, "reply 354, each: reply 451 x"); /* 4 */
    struct fg_smtp_event ev = ev_reply(354, FG_ANS_COMMAND);
    int expect[5][4] = {
        /* per connection: the faults that fire on successive 354s */
        {0, 3, 4, 4}, /* conn 1: first, then the every-once, then each */
        {2, 3, 4, 4}, /* conn 2 */
        {1, 2, 3, 4}, /* conn 3 */
        {2, 3, 4, 4}, /* conn 4 */
        {2, 3, 4, 4}, /* conn 5 */
    };
    for (unsigned n = 1; n <= 5; n++) {
        struct fg_fault_conn c = conn(n);
        for (int k = 0; k < 4; k++)
            ck_assert_msg(fg_fault_set_match(&fs, &c, &ev, 0) == expect[n - 1][k],
                          "conn %u event %d", n, k);
    }
    /* A connection selector of connection 1 never fires elsewhere. */
    struct fg_fault_conn c6 = conn(6);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c6, &ev, 0), 2);
    fg_fault_set_free(&fs);
}
END_TEST

/* Runs a fixed traffic pattern and returns the decisions (fault index per
 * event, -1 if none) as a string. */
static void run_pattern(uint64_t seed, char *out, size_t len)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, seed);
    add(&fs, "reply 250, p 0.5, each: stall");
    add(&fs, "command RCPT, p 0.5: reply 451 no");
    add(&fs, "reply 250, p 0.25: close");
    size_t n = 0;
    for (unsigned cn = 1; cn <= 8; cn++) {
        struct fg_fault_conn c = conn(cn);
        for (unsigned k = 1; k <= 6; k++) {
            struct fg_smtp_event ev = ev_reply(250, FG_ANS_COMMAND);
            int a = fg_fault_set_match(&fs, &c, &ev, 0);
            int b = a >= 0 ? fg_fault_set_match(&fs, &c, &ev, (size_t)a + 1) : -2;
            ev = ev_cmd(FG_VERB_RCPT, "RCPT", k);
            int d = fg_fault_set_match(&fs, &c, &ev, 0);
            n += (size_t)snprintf(out + n, len - n, "%d%d%d;", a, b, d);
        }
    }
    /* the log agrees with the returns */
    for (size_t i = 0; i < fs.nlog; i++)
        ck_assert(fs.log[i].conn >= 1 && fs.log[i].conn <= 8);
    fg_fault_set_free(&fs);
}

START_TEST(match_deterministic)
{
    char a[2048], b[2048], c[2048];
    run_pattern(42, a, sizeof a);
    run_pattern(42, b, sizeof b);
    ck_assert_str_eq(a, b);
    /* Some other seed decides differently (p 0.5 over many draws). */
    int differs = 0;
    for (uint64_t s = 1; s < 20 && !differs; s++) {
        run_pattern(s, c, sizeof c);
        differs = strcmp(a, c) != 0;
    }
    ck_assert(differs);
}
END_TEST

/* Per-connection generators: a connection's decisions do not depend on
 * other connections' traffic, and p 0 / p 1 draw nothing. */
START_TEST(match_independent_connections)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 99);
    add(&fs, "reply 250, p 0.5, each: stall");
    add(&fs, "reply 250, p 0, each: reset");
    struct fg_smtp_event ev = ev_reply(250, FG_ANS_COMMAND);
    int alone[32], mixed[32];
    struct fg_fault_conn c2 = conn(2);
    for (int k = 0; k < 32; k++)
        alone[k] = fg_fault_set_match(&fs, &c2, &ev, 0);
    struct fg_fault_conn c1 = conn(1), c2b = conn(2);
    int fired = 0;
    for (int k = 0; k < 32; k++) {
        fg_fault_set_match(&fs, &c1, &ev, 0);
        mixed[k] = fg_fault_set_match(&fs, &c2b, &ev, 0);
        fired += mixed[k] == 0;
        ck_assert_int_ne(mixed[k], 1);
    }
    ck_assert_mem_eq(alone, mixed, sizeof alone);
    ck_assert(fired > 0 && fired < 32);
    fg_fault_set_free(&fs);
}
END_TEST

/* --- the complete action and trigger set ------------------------------------ */

START_TEST(parse_new_actions_triggers)
{
    static const struct {
        const char *line, *canon;
    } ok[] = {
        {"reply 354: blackhole c2s", "reply 354: blackhole c2s"},
        {"command DATA: half-close", "command DATA: half-close"},
        {"command DATA: half-close s2c", "command DATA: half-close s2c"},
        {"greeting: delay 2s s2c", "greeting: delay 2000ms s2c"},
        {"connect: throttle 64kB/s c2s", "connect: throttle 65536 c2s"},
        {"connect: slice 1 pause 10ms", "connect: slice 1 pause 10ms"},
        {"connect: limit 4k both", "connect: limit 4096 both"},
        {"command RCPT #2: drop", "command RCPT #2: drop"},
        {"command MAIL: corrupt at 3 xor 20", "command MAIL: corrupt at 3 xor 0x20"},
        {"command MAIL: corrupt", "command MAIL: corrupt at 0 flip"},
        {"connect, nth 3: refuse", "connect, nth 3: refuse"},
        {"connect: accept-then-close", "connect: accept-then-close"},
        {"connect: banner-delay 5s", "connect: banner-delay 5000ms"},
        {"starttls: reset", "starttls: reset"},
        {"byte c2s 1000: close", "byte c2s 1000: close"},
        {"BYTE S2C 2k: stall", "byte s2c 2048: stall"},
        {"after 2s, p 0.5: blackhole", "after 2000ms, p 0.5: blackhole"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct fg_fault f = parse_ok(ok[i].line);
        ck_assert_str_eq(f.spec, ok[i].canon);
        /* The canonical text parses back to itself. */
        struct fg_fault g = parse_ok(f.spec);
        ck_assert_str_eq(g.spec, f.spec);
        fg_fault_clear(&f);
        fg_fault_clear(&g);
    }
    static const struct {
        const char *line, *msg;
        int col;
    } bad[] = {
        {"command EHLO: refuse", "needs the connect trigger", 15},
        {"reply 250: banner-delay 1s", "needs the connect trigger", 12},
        {"connect: drop", "drop swallows a command or a reply", 10},
        {"byte x2y 10: close", "byte needs a direction", 6},
        {"byte c2s 0: close", "offset of at least 1", 10},
        {"after soon: close", "after needs a duration", 7},
        {"connect: throttle fast", "throttle needs a rate", 19},
        {"connect: slice 0", "needs a number of octets", 16},
        {"connect: slice 4 wait 1s", "unexpected 'wait'", 18},
        {"command MAIL: corrupt set zz", "needs a hex octet", 27},
        {"command DATA: half-close both", "bad direction 'both' for half-close", 26},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fg_fault f;
        char err[256] = "";
        int col = -1;
        ck_assert_msg(fg_fault_parse(bad[i].line, &f, err, sizeof err, &col) == FG_ESYNTAX,
                      "'%s' parsed", bad[i].line);
        ck_assert_msg(strstr(err, bad[i].msg), "'%s': '%s' lacks '%s'", bad[i].line, err,
                      bad[i].msg);
        ck_assert_msg(col == bad[i].col, "'%s': column %d, expected %d", bad[i].line, col,
                      bad[i].col);
    }
}
END_TEST

START_TEST(match_byte_after_starttls)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 7);
    const char *lines[] = {"byte c2s 100: close", "byte c2s 50, nth 2: stall", "after 2s: reset",
                           "starttls: reset"};
    for (size_t i = 0; i < 4; i++) {
        struct fg_fault f = parse_ok(lines[i]);
        ck_assert_int_eq(fg_fault_set_add(&fs, &f), 0);
    }
    struct fg_fault_conn c1 = {.conn = 1}, c2 = {.conn = 2};
    ck_assert_uint_eq(fg_fault_next_byte(&fs, &c1, FG_C2S, 0), 100);
    ck_assert_uint_eq(fg_fault_next_byte(&fs, &c2, FG_C2S, 0), 50);
    ck_assert_uint_eq(fg_fault_next_byte(&fs, &c1, FG_S2C, 0), UINT64_MAX);
    ck_assert_int_eq(fg_fault_match_byte(&fs, &c1, FG_C2S, 99, 0), -1);
    ck_assert_int_eq(fg_fault_match_byte(&fs, &c1, FG_C2S, 100, 0), 0);
    ck_assert_uint_eq(fg_fault_next_byte(&fs, &c1, FG_C2S, 0), UINT64_MAX); /* fired */
    ck_assert_uint_eq(fg_fault_next_after(&fs, &c1, 0), 2000);
    ck_assert_int_eq(fg_fault_match_after(&fs, &c1, 1999, 0), -1);
    ck_assert_int_eq(fg_fault_match_after(&fs, &c1, 2000, 0), 2);
    ck_assert_uint_eq(fg_fault_next_after(&fs, &c1, 0), UINT64_MAX);
    struct fg_smtp_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = FG_SMTP_EV_TLS_START;
    ev.dir = FG_S2C;
    ck_assert_int_eq(fg_fault_set_match(&fs, &c1, &ev, 0), 3);
    ck_assert_uint_eq(fs.nlog, 3);
    ck_assert_str_eq(fs.log[0].trigger, "byte c2s 100");
    ck_assert_str_eq(fs.log[1].trigger, "after 2000ms");
    ck_assert_str_eq(fs.log[2].trigger, "starttls");
    fg_fault_set_free(&fs);
}
END_TEST

START_TEST(set_limit)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 0);
    for (int i = 0; i < FG_FAULT_MAX; i++)
        add(&fs, "reply 250: stall");
    struct fg_fault f = parse_ok("reply 250: stall");
    ck_assert_int_eq(fg_fault_set_add(&fs, &f), FG_ETOOBIG);
    fg_fault_clear(&f);
    fg_fault_set_free(&fs);
}
END_TEST

/* --- run-time changes (the control API) --------------------------------- */

/* A keyed draw depends on (seed, connection, key) alone: faults added
 * before it, or retired, do not move it. */
START_TEST(keyed_draw_stable)
{
    struct fg_fault_set a, b;
    fg_fault_set_init(&a, 5);
    fg_fault_set_init(&b, 5);
    add(&a, "connect, p 0.5: stall");
    a.faults[0].draw_key = 42;
    add(&b, "connect, p 0.5: reset");
    b.faults[0].draw_key = 7;
    add(&b, "connect, p 0.5: stall");
    b.faults[1].draw_key = 42;
    int fired = 0;
    for (unsigned n = 1; n <= 64; n++) {
        struct fg_fault_conn ca = conn(n), cb = conn(n);
        int ia = fg_fault_set_match(&a, &ca, NULL, 0);
        int ib = fg_fault_set_match(&b, &cb, NULL, 0); /* the other one draws first */
        if (ib == 0)
            ib = fg_fault_set_match(&b, &cb, NULL, 1);
        ck_assert_int_eq(ia == 0, ib == 1);
        fired += ia == 0;
    }
    ck_assert(fired > 0 && fired < 64);
    fg_fault_set_free(&a);
    fg_fault_set_free(&b);
}
END_TEST

START_TEST(retire_and_compact)
{
    struct fg_fault_set fs;
    fg_fault_set_init(&fs, 0);
    add(&fs, "command EHLO: close");
    add(&fs, "command MAIL: reset");
    add(&fs, "command RCPT: stall");
    struct fg_smtp_event ev = ev_cmd(FG_VERB_EHLO, "EHLO", 1);
    struct fg_fault_conn c = conn(1);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c, &ev, 0), 0);
    fs.faults[0].retired = 1;
    struct fg_fault_conn c2 = conn(2);
    ck_assert_int_eq(fg_fault_set_match(&fs, &c2, &ev, 0), -1);
    int map[FG_FAULT_MAX];
    fg_fault_set_compact(&fs, map);
    ck_assert_int_eq((int)fs.n, 2);
    ck_assert_int_eq(map[0], -1);
    ck_assert_int_eq(map[1], 0);
    ck_assert_int_eq(map[2], 1);
    ck_assert_str_eq(fs.faults[0].spec, "command MAIL: reset");
    ck_assert_int_eq((int)fs.nlog, 1);
    ck_assert_int_eq((int)fs.log[0].fault, FG_FAULT_MAX); /* its fault is gone */
    fg_fault_set_free(&fs);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("syntax");
    tcase_add_test(tc, parse_stall_on_reply);
    tcase_add_test(tc, parse_command_first_close);
    tcase_add_test(tc, parse_reply_action_multiline);
    tcase_add_test(tc, parse_other_forms);
    tcase_add_test(tc, canon_round_trip);
    tcase_add_loop_test(tc, parse_errors, 0, (int)(sizeof bad_lines / sizeof *bad_lines));
    tcase_add_test(tc, parts_scenario_form);
    suite_add_tcase(s, tc);
    tc = tcase_create("match");
    tcase_add_test(tc, match_triggers);
    tcase_add_test(tc, match_path_triggers);
    tcase_add_test(tc, match_selectors_once);
    tcase_add_test(tc, match_deterministic);
    tcase_add_test(tc, match_independent_connections);
    tcase_add_test(tc, parse_new_actions_triggers);
    tcase_add_test(tc, match_byte_after_starttls);
    tcase_add_test(tc, set_limit);
    tcase_add_test(tc, keyed_draw_stable);
    tcase_add_test(tc, retire_and_compact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fault_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
