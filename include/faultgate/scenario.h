/* faultgate/scenario.h - scenario files (scenarios/FORMAT.md).
 *
 * A scenario says which leg it drives, which messages the injector submits,
 * which faults the proxy arms, and which expectations judge the trace.
 */
#ifndef FAULTGATE_SCENARIO_H
#define FAULTGATE_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

#include "faultgate/fault.h"

/* FG_LEG_X400: the gateway takes SMTP in and relays it over X.400
 * (RFC 1006) to the run's fake X.400 MTA ({x400_upstream}). */
struct fg_mta_script; /* faultgate/fake_mta.h */
struct fg_x400_fault; /* faultgate/x400_proxy.h */

enum fg_leg { FG_LEG_OUTBOUND, FG_LEG_INBOUND, FG_LEG_X400 };

/* The mail path a scenario exercises on the outbound leg (`path:`): any,
 * or BDAT (RFC 3030): a gateway that never sends BDAT there is skipped. */
enum fg_mail_path { FG_PATH_ANY, FG_PATH_BDAT };

struct fg_msg_spec {
    char *from;
    char **to;
    size_t nto;
    uint64_t size;        /* approximate body size in octets */
    unsigned count;       /* how many such messages */
    unsigned concurrency; /* parallel connections while these are submitted; 0: 1 */
    unsigned flags;       /* FG_INJ_* (faultgate/injector.h): pipelining, bdat, ... */
    /* `smuggle`: the end-of-data sequence (octets, may hold NUL), its name
     * ("lflf", or "custom"), and `smuggle_from`; smuggle NULL if none. */
    char *smuggle;
    size_t smuggle_len;
    char *smuggle_name;
    char *smuggle_from;
    /* `starttls_inject`: plaintext sent with STARTTLS (octets); NULL if none */
    char *starttls_inject;
    size_t starttls_inject_len;
};

/* An expectation as written; its parameters are checked at load time by
 * the rule catalog (expect.h), so an unknown rule is a load error. */
struct fg_expect_spec {
    char *rule;
    char *within;  /* expression, e.g. "timeouts.data_done + 5s"; may be NULL */
    char *fate;    /* message-fate */
    char *after;   /* closes-after-stall: which fault (index as text); may be NULL */
    char *stage;   /* timeout-at-least: greeting, ehlo, mail, ...; may be NULL */
    char *min;     /* timeout-at-least: expression like `within`; may be NULL */
    char *leg;     /* rules judging either leg: "outbound" or "inbound"; may be NULL */
    int line, col; /* where it was written */
    int within_line, within_col;
    /* Positions of the rule's and fate's values (0 when absent), and the
     * column offset to add to a column within `within` (the position of
     * its first character; 0 when the value spans lines). */
    int rule_line, rule_col;
    int fate_line, fate_col;
    int within_text_col;
};

struct fg_scenario {
    char *path;
    char *id;
    char *title;
    char **kb;
    size_t nkb;
    char **rfc;
    size_t nrfc;
    enum fg_leg leg;
    enum fg_mail_path mail_path;
    struct fg_msg_spec *msgs;
    size_t nmsgs;
    struct fg_fault *faults;
    size_t nfaults;
    struct fg_expect_spec *expects;
    size_t nexpects;
    uint64_t deadline_ms;      /* hard end of the run; 0 = from expectations */
    struct fg_mta_script *mta; /* the fake MTA's script (`mta:`); NULL: its defaults */
    /* The X.400 proxy's faults (`x400_faults:`, faultgate/x400_proxy.h): when
     * there are any, the gateway's {x400_upstream} is the X.400 proxy. */
    struct fg_x400_fault *x400_faults;
    size_t nx400_faults;
    int x400_on_invalid; /* `x400_peer: {on_invalid}`: enum fg_x400_reaction (0: abort) */
    int tls_terminate;   /* `tls: terminate`: the proxy terminates STARTTLS (proxy.h) */
};

/* fg_scenario_load - load and validate path.  Bad input: FG_ESYNTAX or
 * FG_EINPUT with "file:line:col: message" in err. */
int fg_scenario_load(const char *path, struct fg_scenario **out, char *err, size_t errlen);
void fg_scenario_free(struct fg_scenario *s);

/* fg_scenario_find - the scenario files named by paths (files, or
 * directories searched recursively for *.yaml), sorted by path.  Gateway
 * profiles under a `gateways` directory are skipped. */
int fg_scenario_find(const char *const *paths, size_t npaths, char ***out, size_t *nout, char *err,
                     size_t errlen);
void fg_scenario_paths_free(char **paths, size_t n);

#endif
