/* faultgate/yamldoc.h - a small YAML document tree with source positions.
 *
 * The one module that includes libyaml's header.  Scenario and profile
 * loaders walk this tree and report errors as file:line:col.  Anchors and
 * aliases are refused (scenarios are plain data).
 */
#ifndef FAULTGATE_YAMLDOC_H
#define FAULTGATE_YAMLDOC_H

#include <stddef.h>

enum fg_yaml_type { FG_YAML_SCALAR, FG_YAML_SEQ, FG_YAML_MAP };

struct fg_yaml_node {
    enum fg_yaml_type type;
    int line, col;         /* 1-based, where the node starts */
    int end_line, end_col; /* 1-based, just past its end */
    char *scalar;          /* SCALAR: the value, NUL-terminated */
    int quoted;            /* SCALAR: written in quotes */
    /* SEQ: items; MAP: keys[i] -> items[i] (keys are scalars) */
    struct fg_yaml_node **items;
    struct fg_yaml_node **keys;
    size_t n, cap;
};

struct fg_yaml_doc {
    char *path;
    struct fg_yaml_node *root;
};

/* fg_yaml_load - parse the first document of path.  On error returns
 * FG_ESYNTAX (or a negative errno for I/O) with "path:line:col: message"
 * in err. */
int fg_yaml_load(const char *path, struct fg_yaml_doc **out, char *err, size_t errlen);
/* Same from a string (path used only in messages). */
int fg_yaml_load_string(const char *path, const char *text, size_t len, struct fg_yaml_doc **out,
                        char *err, size_t errlen);
void fg_yaml_free(struct fg_yaml_doc *doc);

/* Map lookup; NULL if absent or m is not a map. */
struct fg_yaml_node *fg_yaml_get(const struct fg_yaml_node *m, const char *key);
/* The key node of key in map m (for positions), NULL if absent. */
struct fg_yaml_node *fg_yaml_key(const struct fg_yaml_node *m, const char *key);

/* Helpers the loaders share.  Each returns 0 or the error (FG_EINPUT
 * unless given) with "path:line:col: message" in err, the position being
 * n's (or, for fg_yaml_check_keys, the offending key's). */
int fg_yaml_errf(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, char *err,
                 size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* n must be of type t; what names it in the message ("'start'"). */
int fg_yaml_expect(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, enum fg_yaml_type t,
                   const char *what, char *err, size_t errlen);
/* Every key of map m must be in allowed (NULL-terminated). */
int fg_yaml_check_keys(const struct fg_yaml_doc *d, const struct fg_yaml_node *m,
                       const char *const *allowed, const char *what, char *err, size_t errlen);
const char *fg_yaml_type_name(enum fg_yaml_type t);

#endif
