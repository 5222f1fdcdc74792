/* faultgate/expect.h - the expectation catalog and verdicts.
 *
 * Each rule reads the timeline (and the run's metadata) and yields a
 * verdict with evidence: connection, frame numbers, times, excerpt.
 * Verdicts follow TTCN-3: the worst wins, error > fail > inconc > pass.
 * Rules are documented, with their sources, in scenarios/FORMAT.md.
 */
#ifndef FAULTGATE_EXPECT_H
#define FAULTGATE_EXPECT_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/meta.h"
#include "faultgate/scenario.h"
#include "faultgate/timeline.h"
#include "faultgate/util.h"

enum fg_verdict { FG_V_PASS, FG_V_INCONC, FG_V_FAIL, FG_V_ERROR, FG_V_SKIP };

const char *fg_verdict_name(enum fg_verdict v);
/* The worse of two verdicts (skip counts below pass). */
enum fg_verdict fg_verdict_worst(enum fg_verdict a, enum fg_verdict b);

#define FG_MAX_FRAMES 16

struct fg_outcome {
    char *rule;
    char *source; /* "RFC 5321 §4.5.3.2.6 (SHOULD)", "KB Q129140" */
    enum fg_verdict verdict;
    char *summary;  /* one line */
    char *evidence; /* lines for a person: connection, frames, times */
    unsigned conn;  /* 0 if none */
    uint64_t frames[FG_MAX_FRAMES];
    size_t nframes;
};

void fg_outcome_clear(struct fg_outcome *o);

struct fg_judge_ctx {
    const struct fg_scenario *sc;
    const struct fg_meta *meta;
    const struct fg_timeline *tl;
    const char *pcap; /* the capture's path (the X.400 rules read its X.400 leg) */
};

/* fg_expect_validate - check at load time that e names a known rule with
 * the parameters it needs; err gets "file:line:col: ..." when not. */
int fg_expect_validate(const struct fg_scenario *sc, const struct fg_expect_spec *e, char *err,
                       size_t errlen);

/* fg_expect_within_ms - the longest time any expectation of sc waits
 * (its `within` against the timeouts), for the run's deadline. */
uint64_t fg_expect_horizon_ms(const struct fg_scenario *sc, const struct fg_meta *meta);

/* fg_expect_eval - evaluate e; fills out (caller clears it). */
void fg_expect_eval(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                    struct fg_outcome *out);

/* fg_expect_param_known - whether rule takes the parameter param ("rule"
 * always): 1 yes, 0 no, -1 unknown rule.  The scenario loader asks this
 * for every key of an `expect:` entry, so an unknown key is a load error. */
int fg_expect_param_known(const char *rule, const char *param);

/* fg_expect_source - the rule's sources ("RFC 5321 §4.5.3.2 (MUST), ...;
 * KB Q129140"), or NULL for an unknown rule. */
const char *fg_expect_source(const char *rule);

/* Names of the rules of every table below, NULL-terminated, for the
 * scenario loader and `faultgate list --rules` (filled before main). */
#define FG_EXPECT_MAX_RULES 128
extern const char *fg_expect_rules[FG_EXPECT_MAX_RULES + 1];

/* --- the dispatch point for rules implemented in other files ------------
 * A rule is a row {name, source, params, required, eval}.  Each file that
 * implements rules defines one table ending with a row whose name is NULL,
 * and registers it with one line in FG_EXPECT_TABLES (e.g. expect_x400.c
 * adds XX(fg_expect_x400_rules)).  eval runs only with the metadata and
 * the timeline present, the rule's required parameters given, and limit_ms
 * the value of `within` (0 if the rule takes none); it fills out->verdict,
 * summary (one line), evidence, conn and frames (out->rule and
 * out->source are set by the caller). */
#define FG_EXPECT_P_WITHIN 1u
#define FG_EXPECT_P_FATE 2u
#define FG_EXPECT_P_AFTER 4u
#define FG_EXPECT_P_STAGE 8u
#define FG_EXPECT_P_MIN 16u
#define FG_EXPECT_P_LEG 32u

typedef void (*fg_expect_eval_fn)(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                                  uint64_t limit_ms, struct fg_outcome *out);

struct fg_expect_rule {
    const char *name;
    const char *source; /* "RFC 5321 §4.5.3.2 (MUST); KB Q129140" */
    unsigned params;    /* FG_EXPECT_P_* it takes */
    unsigned required;  /* and those it needs */
    fg_expect_eval_fn eval;
};

/* clang-format off: one table a line */
#define FG_EXPECT_TABLES(XX)                                                                       \
    XX(fg_expect_core_rules)                                                                       \
    XX(fg_expect_x400_rules)                                                                       \
    XX(fg_expect_client_rules)                                                                     \
    XX(fg_expect_security_rules)                                                                   \
    XX(fg_expect_ext_rules)                                                                        \
    XX(fg_expect_tls_rules)                                                                        \
    XX(fg_expect_tls_inject_rules)
/* clang-format on */

#define FG_EXPECT_XX_DECLARE(t) extern const struct fg_expect_rule t[];
FG_EXPECT_TABLES(FG_EXPECT_XX_DECLARE)
#undef FG_EXPECT_XX_DECLARE

/* fg_expect_rule_find - the row of a rule by name, or NULL. */
const struct fg_expect_rule *fg_expect_rule_find(const char *name);

/* Helpers for rule files: record a frame as evidence (deduplicated, up to
 * FG_MAX_FRAMES) and seconds for people ("9.0", "0.25"). */
void fg_outcome_frame(struct fg_outcome *o, uint64_t frame);
const char *fg_expect_secs(char *buf, size_t len, uint64_t us);

/* Rules that judge each outbound connection on its own (the STARTTLS
 * rules) fold the results the same way: one evidence line per connection
 * concerned; any failing connection fails the rule, else any undecided one
 * leaves it inconclusive. */
enum fg_conn_res { FG_CONN_NA, FG_CONN_OK, FG_CONN_BAD, FG_CONN_UNSURE };
struct fg_conn_tally {
    size_t n[4]; /* connections per enum fg_conn_res */
    struct fg_strbuf ev;
    char first_bad[720], first_unsure[720];
};
/* Count c's result r (why: the reason, for the evidence line); the first
 * failing, else the first undecided, connection becomes o->conn.  A
 * connection not concerned that never started TLS gets no line. */
void fg_conn_tally_add(struct fg_conn_tally *t, const struct fg_tl_conn *c, enum fg_conn_res r,
                       const char *why, struct fg_outcome *o);
/* FAIL or INCONC from the first such connection, and return 1; 0 when
 * every connection was ok or not concerned: the rule decides then. */
int fg_conn_tally_fold(const struct fg_conn_tally *t, struct fg_outcome *o);

#endif
