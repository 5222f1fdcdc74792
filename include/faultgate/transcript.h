/* faultgate/transcript.h - `faultgate transcript`: a capture's SMTP and
 * X.400 connections printed from the timelines the rules read
 * (harness/transcript.c). */
#ifndef FAULTGATE_TRANSCRIPT_H
#define FAULTGATE_TRANSCRIPT_H

#include <stddef.h>
#include <stdio.h>

struct fg_transcript_opts {
    unsigned conn;      /* only this connection (the trace's number); 0: all */
    int json, verbose;  /* one JSON document; every reply line, the sender */
    const char *keylog; /* NSS key log for the sessions after STARTTLS; NULL: none */
};

/* fg_transcript_write - the transcript of the capture at path to f.
 * Returns 0, or an error with err set (unreadable trace or key log). */
int fg_transcript_write(const char *path, const struct fg_transcript_opts *o, FILE *f, char *err,
                        size_t errlen);

/* fg_cmd_transcript - `faultgate transcript [--conn N] [--json] [-v]
 * [--keylog FILE] TRACE`. */
int fg_cmd_transcript(int argc, char **argv);

#endif
