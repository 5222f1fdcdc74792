/* faultgate/pcapng.h - copy a capture into pcapng with comments: a frame
 * comment (opt_comment) on chosen frames and comments in the section
 * header, which Wireshark and tshark show (`tshark -Y frame.comment`).
 *
 * The input is read with libpcap's offline reader (pcap or pcapng, one
 * link type); the output is one section, one interface, nanosecond
 * timestamps, one Enhanced Packet Block per frame (pcapng draft,
 * draft-ietf-opsawg-pcapng §4).
 */
#ifndef FAULTGATE_PCAPNG_H
#define FAULTGATE_PCAPNG_H

#include <stddef.h>
#include <stdint.h>

/* A comment on frame `frame` (1-based, as Wireshark numbers them).
 * Several notes may name the same frame: each becomes its own comment. */
struct fg_pcapng_note {
    uint64_t frame;
    const char *text;
};

/* fg_pcapng_write - read in_path, write out_path (through a temporary file
 * renamed into place, so in_path == out_path rewrites the file).  shb:
 * nshb comments for the section header; appl: the shb_userappl option
 * (NULL: none).  Notes naming a frame the capture lacks are dropped.
 * Returns 0 or FG_ETRACE (reading) / FG_EIO (writing) with err set. */
int fg_pcapng_write(const char *in_path, const char *out_path, const char *const *shb, size_t nshb,
                    const char *appl, const struct fg_pcapng_note *notes, size_t nnotes, char *err,
                    size_t errlen);

#endif
