/* faultgate/scenario_from_pcap.h - `faultgate scenario from-pcap`: a
 * scenario reproducing a capture's next hop (harness/scenario_from_pcap.c). */
#ifndef FAULTGATE_SCENARIO_FROM_PCAP_H
#define FAULTGATE_SCENARIO_FROM_PCAP_H

#include <stddef.h>
#include <stdio.h>

struct fg_sfp_opts {
    unsigned conn; /* the next hop's session (the trace's number); 0: found */
};

/* fg_scenario_from_pcap - the scenario (YAML text) for the capture at path
 * to f.  Returns 0, or an error with err set. */
int fg_scenario_from_pcap(const char *path, const struct fg_sfp_opts *o, FILE *f, char *err,
                          size_t errlen);

/* fg_cmd_scenario - `faultgate scenario from-pcap [-o FILE] [--conn N] TRACE`. */
int fg_cmd_scenario(int argc, char **argv);

#endif
