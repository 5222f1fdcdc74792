/* fuzz_smtp.c - libFuzzer target for the shared SMTP parser (faultgate/smtp.h).
 *
 * The input is a session: each segment is one header octet (bit 7: the
 * direction, bits 0-6: the length) followed by that many octets, fed as
 * one call.  So the fuzzer explores both directions, pipelining, DATA and
 * BDAT bodies and every split of the stream.  The callback sometimes asks
 * the parser to stop and then re-feeds the rest, as the proxy does; it
 * checks the invariants the proxy relies on (event ends within the fed
 * buffer, consumed counts never exceed what was fed).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "faultgate/smtp.h"

struct ctx {
    size_t len; /* bytes of the current feed */
    unsigned n;
};

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct ctx *c = ud;
    if (ev->end > c->len)
        abort();
    if (ev->type == FG_SMTP_EV_DATA && ev->data_len && !ev->data)
        abort();
    /* Stop now and then, as the proxy does on a fault. */
    return (++c->n % 3) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fg_smtp_parser p;
    struct ctx c = {0, 0};
    fg_smtp_parser_init(&p, on_event, &c);
    size_t i = 0;
    while (i < size) {
        enum fg_dir dir = (data[i] & 0x80) ? FG_S2C : FG_C2S;
        size_t n = data[i] & 0x7f;
        i++;
        if (n > size - i)
            n = size - i;
        const char *buf = (const char *)data + i;
        size_t left = n;
        unsigned guard = 0;
        /* Feed until consumed; an empty feed delivers held events. */
        do {
            c.len = left;
            size_t used = fg_smtp_parser_feed(&p, dir, buf, left);
            if (used > left)
                abort();
            buf += used;
            left -= used;
            if (++guard > 100000)
                abort(); /* no progress: the parser would hang the proxy */
        } while (left || fg_smtp_parser_queued(&p, dir));
        i += n;
    }
    return 0;
}
