/* faultgate/annotate.h - a run's capture rewritten as pcapng that tells
 * its own story: the run's metadata in the section header, a comment on
 * the frame at each fault decision and on each verdict's evidence frames
 * (`tshark -Y frame.comment`).  Judged again, it gives the same verdicts:
 * the packets are the same, only comments are added. */
#ifndef FAULTGATE_ANNOTATE_H
#define FAULTGATE_ANNOTATE_H

#include <stddef.h>

#include "faultgate/judge.h"

/* fg_annotate_run - rewrite pcap_path (res's capture, judged: res->tl and
 * res->meta as fg_judge left them) in place as annotated pcapng.  Returns
 * 0 or an error with err set; on error the file is left as it was. */
int fg_annotate_run(const char *pcap_path, const struct fg_scenario_result *res, char *err,
                    size_t errlen);

/* fg_annotate_decision_frame - the frame of tl at which decision d was
 * taken: the last protocol event at or before its time on connection
 * d->conn of the proxy's leg (proxy_port) or of its leg to the fake MTA
 * (mta_port); 0 if the timeline has neither connection. */
struct fg_meta;
struct fg_decision;
uint64_t fg_annotate_decision_frame(const struct fg_timeline *tl, const struct fg_meta *m,
                                    const struct fg_decision *d);

#endif
