/* fuzz_trace.c - libFuzzer target for the trace reader and what reads its
 * streams: any byte string is written to an in-memory file and read as a
 * capture by fg_trace_read (through the SMTP timeline) and by
 * fg_diagnose.  Neither may crash, leak or hang; bad input must come back
 * as FG_ETRACE or a truncated-capture note.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultgate/diagnose.h"
#include "faultgate/error.h"
#include "faultgate/timeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-trace", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char err[FG_ERRBUF_SIZE];
    struct fg_timeline *tl = NULL;
    if (fg_timeline_build(path, &tl, err, sizeof err) == 0)
        fg_timeline_free(tl);
    struct fg_diag_report *r = NULL;
    if (fg_diagnose(path, NULL, &r, err, sizeof err) == 0)
        fg_diag_report_free(r);
    close(fd);
    return 0;
}
