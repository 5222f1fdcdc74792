/* yamldoc.c - YAML documents as small trees with source positions.
 *
 * libyaml's event API drives a stack of open nodes; each node keeps the
 * 1-based line and column where it starts (libyaml's marks are 0-based) so
 * that the scenario and profile loaders can say file:line:col.  Anchors,
 * aliases and duplicate keys are refused: scenarios are plain data, and a
 * key written twice is almost always a mistake.  This is the only file that
 * includes <yaml.h>.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

static void node_free(struct fg_yaml_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++) {
        node_free(n->items[i]);
        if (n->keys)
            node_free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->scalar);
    free(n);
}

void fg_yaml_free(struct fg_yaml_doc *doc)
{
    if (!doc)
        return;
    node_free(doc->root);
    free(doc->path);
    free(doc);
}

struct fg_yaml_node *fg_yaml_get(const struct fg_yaml_node *m, const char *key)
{
    if (!m || m->type != FG_YAML_MAP)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i]->scalar, key) == 0)
            return m->items[i];
    return NULL;
}

static struct fg_yaml_node *node_new(enum fg_yaml_type t, const yaml_mark_t *start)
{
    struct fg_yaml_node *n = fg_calloc(1, sizeof(*n));
    n->type = t;
    n->line = (int)start->line + 1;
    n->col = (int)start->column + 1;
    n->end_line = n->line;
    n->end_col = n->col;
    return n;
}

static void set_end(struct fg_yaml_node *n, const yaml_mark_t *end)
{
    n->end_line = (int)end->line + 1;
    n->end_col = (int)end->column + 1;
}

/* Parser state: the stack of open collections; for a map, a key waiting
 * for its value. */
struct frame {
    struct fg_yaml_node *node;
    struct fg_yaml_node *pending_key;
};

/* Limits on what a scenario, profile or script file may be: far above any
 * real one, low enough that a hostile file is refused at once. */
#define YAML_MAX_BYTES ((uint64_t)4 << 20)
#define YAML_MAX_DEPTH 64
#define YAML_MAX_KEYS 256     /* per mapping; duplicate keys are looked for in each */
#define YAML_MAX_ITEMS 100000 /* per list */

struct builder {
    const char *path;
    const char *text;
    size_t len;
    char *err;
    size_t errlen;
    struct frame *stack;
    size_t depth, cap;
    struct fg_yaml_node *root;
};

static int bad_at(struct builder *b, const yaml_mark_t *m, const char *msg)
{
    return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%zu:%zu: %s", b->path, m->line + 1,
                   m->column + 1, msg);
}

/* Attach a finished node to its parent (or make it the root). */
static int attach(struct builder *b, struct fg_yaml_node *n, const yaml_mark_t *mark)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    struct fg_yaml_node *p = f->node;
    if (p->type == FG_YAML_SEQ) {
        if (p->n >= YAML_MAX_ITEMS) {
            int rc =
                fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%d:%d: more than %d items in one list",
                        b->path, n->line, n->col, YAML_MAX_ITEMS);
            node_free(n);
            return rc;
        }
        *FG_ARRAY_PUSH(p->items, p->n, p->cap) = n;
        return 0;
    }
    if (!f->pending_key) {
        if (n->type != FG_YAML_SCALAR) {
            node_free(n);
            return bad_at(b, mark, "a mapping key must be a plain scalar");
        }
        if (p->n >= YAML_MAX_KEYS) {
            int rc =
                fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%d:%d: more than %d keys in one mapping",
                        b->path, n->line, n->col, YAML_MAX_KEYS);
            node_free(n);
            return rc;
        }
        if (fg_yaml_get(p, n->scalar)) {
            int rc = fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%d:%d: duplicate key '%s'", b->path,
                             n->line, n->col, n->scalar);
            node_free(n);
            return rc;
        }
        f->pending_key = n;
        return 0;
    }
    /* keys and items grow together (keys[i] -> items[i]), same capacity */
    size_t oldcap = p->cap;
    *FG_ARRAY_PUSH(p->items, p->n, p->cap) = n;
    if (p->cap != oldcap || !p->keys)
        p->keys = fg_realloc(p->keys, p->cap * sizeof(*p->keys));
    p->keys[p->n - 1] = f->pending_key;
    f->pending_key = NULL;
    return 0;
}

static int push(struct builder *b, struct fg_yaml_node *n)
{
    struct frame *f = FG_ARRAY_PUSH(b->stack, b->depth, b->cap);
    f->node = n;
    f->pending_key = NULL;
    return 0;
}

static int handle_event(struct builder *b, yaml_event_t *ev, int *done)
{
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return bad_at(b, &ev->start_mark, "aliases are not supported in scenario files");
    case YAML_SCALAR_EVENT: {
        if (ev->data.scalar.anchor)
            return bad_at(b, &ev->start_mark, "anchors are not supported in scenario files");
        struct fg_yaml_node *n = node_new(FG_YAML_SCALAR, &ev->start_mark);
        set_end(n, &ev->end_mark);
        n->scalar = fg_strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        return attach(b, n, &ev->start_mark);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        const yaml_char_t *anchor = ev->type == YAML_SEQUENCE_START_EVENT
                                        ? ev->data.sequence_start.anchor
                                        : ev->data.mapping_start.anchor;
        if (anchor)
            return bad_at(b, &ev->start_mark, "anchors are not supported in scenario files");
        struct fg_yaml_node *n = node_new(
            ev->type == YAML_SEQUENCE_START_EVENT ? FG_YAML_SEQ : FG_YAML_MAP, &ev->start_mark);
        if (b->depth > 0 && b->stack[b->depth - 1].node->type == FG_YAML_MAP &&
            !b->stack[b->depth - 1].pending_key) {
            node_free(n);
            return bad_at(b, &ev->start_mark, "a mapping key must be a plain scalar");
        }
        if (b->depth >= YAML_MAX_DEPTH) {
            node_free(n);
            return bad_at(b, &ev->start_mark, "nested more than 64 levels deep");
        }
        return push(b, n);
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct fg_yaml_node *n = b->stack[--b->depth].node;
        set_end(n, &ev->end_mark);
        return attach(b, n, &ev->start_mark);
    }
    case YAML_DOCUMENT_END_EVENT:
        /* only the first document counts */
        *done = 1;
        return 0;
    case YAML_STREAM_END_EVENT:
        *done = 1;
        return 0;
    default:
        return 0;
    }
}

static int parse_error(struct builder *b, const yaml_parser_t *p)
{
    const char *what = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s: out of memory parsing YAML", b->path);
    if (p->error == YAML_READER_ERROR) {
        /* A reader error (an octet that is not UTF-8, a NUL) has an
         * offset, not a mark: count lines and UTF-8 characters up to it. */
        size_t line = 1, col = 1, end = p->problem_offset < b->len ? p->problem_offset : b->len;
        for (size_t i = 0; i < end; i++) {
            unsigned char ch = (unsigned char)b->text[i];
            if (ch == '\n') {
                line++;
                col = 1;
            } else if ((ch & 0xc0) != 0x80) {
                col++;
            }
        }
        if (p->problem_value >= 0)
            return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%zu:%zu: %s (octet 0x%02x)", b->path,
                           line, col, what, (unsigned)p->problem_value & 0xff);
        return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%zu:%zu: %s", b->path, line, col, what);
    }
    if (p->context)
        return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%zu:%zu: %s %s (line %zu column %zu)",
                       b->path, p->problem_mark.line + 1, p->problem_mark.column + 1, what,
                       p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    return fg_errf(b->err, b->errlen, FG_ESYNTAX, "%s:%zu:%zu: %s", b->path,
                   p->problem_mark.line + 1, p->problem_mark.column + 1, what);
}

int fg_yaml_load_string(const char *path, const char *text, size_t len, struct fg_yaml_doc **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return fg_errf(err, errlen, FG_ESYNTAX, "%s: cannot initialize the YAML parser", path);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    struct builder b = {.path = path, .text = text, .len = len, .err = err, .errlen = errlen};
    int rc = 0, done = 0;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parse_error(&b, &parser);
            break;
        }
        rc = handle_event(&b, &ev, &done);
        yaml_event_delete(&ev);
        if (rc)
            break;
    }
    yaml_parser_delete(&parser);

    if (rc) {
        /* Open collections are not attached yet: free them bottom up. */
        while (b.depth > 0) {
            struct frame *f = &b.stack[--b.depth];
            node_free(f->pending_key);
            node_free(f->node);
        }
        node_free(b.root);
        free(b.stack);
        return rc;
    }
    free(b.stack);
    struct fg_yaml_doc *doc = fg_calloc(1, sizeof(*doc));
    doc->path = fg_strdup(path);
    doc->root = b.root;
    *out = doc;
    return 0;
}

int fg_yaml_load(const char *path, struct fg_yaml_doc **out, char *err, size_t errlen)
{
    *out = NULL;
    char *buf;
    size_t n;
    int rc = fg_file_read(path, YAML_MAX_BYTES, &buf, &n, err, errlen);
    if (rc < 0)
        return rc;
    rc = fg_yaml_load_string(path, buf, n, out, err, errlen);
    free(buf);
    return rc;
}

struct fg_yaml_node *fg_yaml_key(const struct fg_yaml_node *m, const char *key)
{
    if (!m || m->type != FG_YAML_MAP)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i]->scalar, key) == 0)
            return m->keys[i];
    return NULL;
}

int fg_yaml_errf(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, char *err,
                 size_t errlen, int rc, const char *fmt, ...)
{
    char msg[FG_ERRBUF_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n)
        return fg_errf(err, errlen, rc, "%s:%d:%d: %s", d->path, n->line, n->col, msg);
    return fg_errf(err, errlen, rc, "%s:1:1: %s", d->path, msg);
}

const char *fg_yaml_type_name(enum fg_yaml_type t)
{
    switch (t) {
    case FG_YAML_SCALAR:
        return "a scalar";
    case FG_YAML_SEQ:
        return "a list";
    case FG_YAML_MAP:
        return "a mapping";
    }
    return "?";
}

int fg_yaml_expect(const struct fg_yaml_doc *d, const struct fg_yaml_node *n, enum fg_yaml_type t,
                   const char *what, char *err, size_t errlen)
{
    if (n && n->type == t)
        return 0;
    return fg_yaml_errf(d, n, err, errlen, FG_EINPUT, "%s must be %s, not %s", what,
                        fg_yaml_type_name(t), n ? fg_yaml_type_name(n->type) : "empty");
}

int fg_yaml_check_keys(const struct fg_yaml_doc *d, const struct fg_yaml_node *m,
                       const char *const *allowed, const char *what, char *err, size_t errlen)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->keys[i]->scalar;
        size_t j;
        for (j = 0; allowed[j]; j++)
            if (strcmp(allowed[j], k) == 0)
                break;
        if (allowed[j])
            continue;
        char list[256] = "";
        size_t off = 0;
        for (j = 0; allowed[j] && off < sizeof(list); j++)
            off +=
                (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", j ? ", " : "", allowed[j]);
        return fg_yaml_errf(d, m->keys[i], err, errlen, FG_EINPUT,
                            "unknown key '%s' in %s (known: %s)", k, what, list);
    }
    return 0;
}
