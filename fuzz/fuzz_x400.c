/* fuzz_x400.c - libFuzzer target for the X.400 codec: the incremental
 * decoder (TPKT, COTP, session SPDUs) fed the input split at a point taken
 * from its first octet, each SPDU run through the X.225 rules, and every
 * user-data field through the X.410 RTS decoder.
 */
#include <stddef.h>
#include <stdint.h>

#include "faultgate/x400.h"
#include "faultgate/x400_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct fg_x400_sm sm;
};

static void cb(void *ud, const struct fg_x400_event *ev)
{
    struct fz *f = ud;
    if (ev->kind != FG_X400_EV_SPDU)
        return;
    const struct fg_spdu *s = ev->spdu;
    struct fg_x400_violation v;
    fg_x400_sm_apply(&f->sm, s->index & 1 ? FG_X400_RESPONDER : FG_X400_INITIATOR, s, &v);
    if (s->has & FG_SP_USER_DATA) {
        struct fg_rts r;
        fg_x400_rts_decode(s->type, s->user_data, s->user_data_len, &r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct fz f;
    fg_x400_sm_init(&f.sm);
    struct fg_x400_dec d;
    fg_x400_dec_init(&d, 1 << 16, cb, &f);
    size_t cut = data[0] % size;
    fg_x400_dec_feed(&d, data + 1, cut > 0 ? cut - 1 : 0);
    if (cut > 0)
        fg_x400_dec_feed(&d, data + cut, size - cut);
    fg_x400_dec_free(&d);
    /* and the TSDU parser on the raw input */
    fg_x400_tsdu_parse(data, size, NULL, NULL, NULL, 0);
    return 0;
}
