/* toxic.h - toxiproxy's toxics, translated into faultgate faults (api.c).
 *
 * A toxic has a type, a stream (upstream: client to server, c2s;
 * downstream: server to client, s2c), a toxicity (the probability that it
 * acts on a connection) and attributes, as toxiproxy names them.  Each
 * becomes at most two faults of the proxy's set (fault.h); the ones that
 * act on the bytes use the trigger `after 0ms`, so they apply to a
 * connection as soon as its upstream leg is up, and at once to the
 * connections already open when the toxic is added.
 */
#ifndef FAULTGATE_TOXIC_H
#define FAULTGATE_TOXIC_H

#include <jansson.h>

#include "faultgate/fault.h"

#define FG_TOXIC_FAULTS 2

/* fg_toxic_attrs - the type's attributes with their defaults, overlaid by
 * those in given (may be NULL; an unknown attribute is ignored, as
 * toxiproxy does).  Returns a new object, or NULL with err set (unknown
 * type, or an attribute of the wrong JSON type). */
json_t *fg_toxic_attrs(const char *type, json_t *base, json_t *given, char *err, size_t errlen);

/* fg_toxic_faults - the faults for a toxic (attrs as fg_toxic_attrs made
 * them).  dir is FG_C2S or FG_S2C; toxicity 0..1; key != 0 ties the
 * toxicity draw to the toxic, not to its place among the others.  Fills
 * out[0..*n) (each to be handed to fg_fault_set_add or cleared).  Returns
 * 0, or FG_ESYNTAX with err set. */
int fg_toxic_faults(const char *type, int dir, double toxicity, json_t *attrs, uint64_t key,
                    struct fg_fault out[FG_TOXIC_FAULTS], size_t *n, char *err, size_t errlen);

#endif
