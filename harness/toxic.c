/* toxic.c - toxiproxy's toxics as faults; see toxic.h. */
#include "toxic.h"

#include <stdio.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/smtp.h"

struct attr {
    const char *name;
    int is_string; /* else a whole number >= 0 */
};

struct type {
    const char *name;
    struct attr attrs[3];
};

/* toxiproxy's types and attribute names (its README, "Toxics"); `down`
 * and `faultgate` are faultgate's own. */
static const struct type types[] = {
    {"latency", {{"latency", 0}, {"jitter", 0}}},
    {"bandwidth", {{"rate", 0}}},
    {"slow_close", {{"delay", 0}}},
    {"timeout", {{"timeout", 0}}},
    {"reset_peer", {{"timeout", 0}}},
    {"slicer", {{"average_size", 0}, {"size_variation", 0}, {"delay", 0}}},
    {"limit_data", {{"bytes", 0}}},
    {"down", {{NULL, 0}}},
    {"faultgate", {{"spec", 1}}},
};

static const struct type *type_find(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

json_t *fg_toxic_attrs(const char *type, json_t *base, json_t *given, char *err, size_t errlen)
{
    const struct type *t = type_find(type);
    if (!t) {
        snprintf(err, errlen, "invalid toxic type");
        return NULL;
    }
    if (given && !json_is_object(given)) {
        snprintf(err, errlen, "bad request body: attributes must be an object");
        return NULL;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < 3 && t->attrs[i].name; i++) {
        const struct attr *a = &t->attrs[i];
        json_t *v = given ? json_object_get(given, a->name) : NULL;
        if (!v && base)
            v = json_object_get(base, a->name);
        if (v && a->is_string && !json_is_string(v)) {
            snprintf(err, errlen, "bad request body: %s must be a string", a->name);
            json_decref(o);
            return NULL;
        }
        if (v && !a->is_string && (!json_is_integer(v) || json_integer_value(v) < 0)) {
            snprintf(err, errlen, "bad request body: %s must be a whole number >= 0", a->name);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, a->name,
                            v              ? json_incref(v)
                            : a->is_string ? json_string("")
                                           : json_integer(0));
    }
    return o;
}

static long long num(json_t *attrs, const char *name)
{
    return (long long)json_integer_value(json_object_get(attrs, name));
}

int fg_toxic_faults(const char *type, int dir, double toxicity, json_t *attrs, uint64_t key,
                    struct fg_fault out[FG_TOXIC_FAULTS], size_t *n, char *err, size_t errlen)
{
    const char *d = dir == FG_C2S ? "c2s" : "s2c";
    char spec[2][512];
    size_t k = 0;
    *n = 0;
    if (strcmp(type, "latency") == 0) {
        /* jitter: accepted and reported; the delay stays the latency. */
        if (num(attrs, "latency") > 0)
            snprintf(spec[k++], sizeof spec[0], "after 0ms: delay %lldms %s", num(attrs, "latency"),
                     d);
    } else if (strcmp(type, "bandwidth") == 0) {
        long long r = num(attrs, "rate"); /* KB/s */
        if (r == 0)
            snprintf(spec[k++], sizeof spec[0], "after 0ms: stall %s", d);
        else
            snprintf(spec[k++], sizeof spec[0], "after 0ms: throttle %lld %s", r * 1000, d);
    } else if (strcmp(type, "slow_close") == 0) {
        /* accepted and reported; faultgate closes without the delay. */
    } else if (strcmp(type, "timeout") == 0) {
        snprintf(spec[k++], sizeof spec[0], "after 0ms: blackhole %s", d);
        if (num(attrs, "timeout") > 0)
            snprintf(spec[k++], sizeof spec[0], "after %lldms: close", num(attrs, "timeout"));
    } else if (strcmp(type, "reset_peer") == 0) {
        snprintf(spec[k++], sizeof spec[0], "after %lldms: reset", num(attrs, "timeout"));
    } else if (strcmp(type, "slicer") == 0) {
        long long sz = num(attrs, "average_size"), us = num(attrs, "delay");
        if (sz < 1) {
            snprintf(err, errlen, "slicer: average_size must be at least 1");
            return FG_ESYNTAX;
        }
        if (us > 0)
            snprintf(spec[k++], sizeof spec[0], "after 0ms: slice %lld pause %lldms %s", sz,
                     (us + 999) / 1000, d);
        else
            snprintf(spec[k++], sizeof spec[0], "after 0ms: slice %lld %s", sz, d);
    } else if (strcmp(type, "limit_data") == 0) {
        snprintf(spec[k++], sizeof spec[0], "after 0ms: limit %lld %s", num(attrs, "bytes"), d);
    } else if (strcmp(type, "down") == 0) {
        snprintf(spec[k++], sizeof spec[0], "connect: refuse");
    } else if (strcmp(type, "faultgate") == 0) {
        snprintf(spec[k++], sizeof spec[0], "%s",
                 json_string_value(json_object_get(attrs, "spec")));
    } else {
        snprintf(err, errlen, "invalid toxic type");
        return FG_ESYNTAX;
    }
    for (size_t i = 0; i < k; i++) {
        char e[256];
        int col = 0;
        if (fg_fault_parse(spec[i], &out[i], e, sizeof e, &col) < 0) {
            snprintf(err, errlen, "%s: column %d: %s", spec[i], col, e);
            for (size_t j = 0; j < i; j++)
                fg_fault_clear(&out[j]);
            return FG_ESYNTAX;
        }
        /* toxicity: drawn once per connection for this toxic; a faultgate
         * spec's own `p X` is kept when the toxicity is 1. */
        if (toxicity < 1.0 || !out[i].prob_set) {
            out[i].prob = toxicity;
            out[i].prob_set = 1;
        }
        out[i].draw_key = key;
        fg_fault_canon(&out[i]);
    }
    *n = k;
    return 0;
}
