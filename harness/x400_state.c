/* x400_state.c - X.225 session rules for one connection: tokens,
 * activities, minor-sync serial numbers and the RTS window
 * (faultgate/x400_state.h).
 *
 * The validity table is X.225 (1988) Annex A Table A-4 as summarised in
 * x400-wire.md §2.6; the conditions for sending a MIP are X.225 §7.20
 * (x400-wire.md §2.5); basic concatenation is X.225 §6.3.7; the RTS window
 * and checkpoint size are X.228 §7.3 / X.410 §4.2.  KB Q194685: a foreign
 * system aborts the association when these rules are broken.
 */
#include "faultgate/x400_state.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char SRC_A4[] = "X.225 Table A-4";
static const char SRC_MIP[] = "X.225 §7.20";
static const char SRC_CONCAT[] = "X.225 §6.3.7";
static const char SRC_RTS[] = "X.228 §7.3, X.410 §4.2";
static const char SRC_ACT[] = "X.225 §7.25";

void fg_x400_sm_init(struct fg_x400_sm *sm)
{
    memset(sm, 0, sizeof(*sm));
    sm->sur = FG_SUR_DEFAULT;
    sm->window = 3;
    sm->init_tokens = 0xFF;
}

const char *fg_x400_serial_str(const struct fg_spdu *s, char *buf, size_t len)
{
    if (!(s->has & FG_SP_SERIAL)) {
        snprintf(buf, len, "<none>");
        return buf;
    }
    size_t n = s->serial_len < FG_SERIAL_RAW_MAX ? s->serial_len : FG_SERIAL_RAW_MAX;
    int printable = n > 0;
    for (size_t i = 0; i < n; i++)
        if (s->serial_raw[i] < 0x20 || s->serial_raw[i] > 0x7E || s->serial_raw[i] == '"')
            printable = 0;
    if (printable) {
        snprintf(buf, len, "%.*s", (int)n, (const char *)s->serial_raw);
    } else {
        size_t o = 0;
        o += (size_t)snprintf(buf + o, len - o, n ? "0x" : "<empty>");
        for (size_t i = 0; i < n && o + 3 < len; i++)
            o += (size_t)snprintf(buf + o, len - o, "%02x", s->serial_raw[i]);
    }
    return buf;
}

/* Tokens that exist under the functional units (X.225 §7.1.1). */
static uint8_t tokens_available(uint16_t sur)
{
    uint8_t t = 0;
    if (sur & FG_SUR_HALF_DUPLEX)
        t |= FG_TOKEN_DATA;
    if (sur & FG_SUR_MINOR_SYNC)
        t |= FG_TOKEN_MINOR;
    if (sur & (FG_SUR_MAJOR_SYNC | FG_SUR_ACTIVITY))
        t |= FG_TOKEN_MAJOR;
    if (sur & FG_SUR_NEG_RELEASE)
        t |= FG_TOKEN_RELEASE;
    return t;
}

int fg_x400_sm_holds(const struct fg_x400_sm *sm, enum fg_x400_side side, uint8_t mask)
{
    mask &= tokens_available(sm->sur);
    uint8_t held = side == FG_X400_INITIATOR ? sm->init_tokens : (uint8_t)~sm->init_tokens;
    return (held & mask) == mask;
}

/* Token Setting Item (X.225 §8.3.1.20): 2 bits per token, 00 initiator,
 * 01 responder, 10 the called SS-user's choice (resolved by the AC). */
static uint8_t tokens_from_setting(uint8_t ts)
{
    static const uint8_t tok[4] = {FG_TOKEN_DATA, FG_TOKEN_MINOR, FG_TOKEN_MAJOR, FG_TOKEN_RELEASE};
    uint8_t init = 0;
    for (int i = 0; i < 4; i++)
        if (((ts >> (2 * i)) & 3) != 1)
            init |= tok[i];
    return init;
}

static const char *side_name(enum fg_x400_side s)
{
    return s == FG_X400_INITIATOR ? "initiator" : "responder";
}

static int bad(struct fg_x400_violation *v, const char *rule, const char *source, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));
static int bad(struct fg_x400_violation *v, const char *rule, const char *source, const char *fmt,
               ...)
{
    if (v) {
        v->rule = rule;
        v->source = source;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->text, sizeof(v->text), fmt, ap);
        va_end(ap);
    }
    return 1;
}

/* The category-0 SPDU a category-2 SPDU must follow (X.225 §6.3.7). */
static enum fg_spdu_type carrier(enum fg_spdu_type t)
{
    switch (t) {
    case FG_SPDU_DT:
    case FG_SPDU_MIP:
    case FG_SPDU_MAP:
    case FG_SPDU_AE:
    case FG_SPDU_RS:
    case FG_SPDU_AS:
    case FG_SPDU_AR:
    case FG_SPDU_AD:
    case FG_SPDU_AI:
    case FG_SPDU_CD:
        return FG_SPDU_GT;
    default:
        return FG_SPDU_PT;
    }
}

static int check_concat(const struct fg_spdu *s, struct fg_x400_violation *v)
{
    int cat = fg_spdu_category(s->type);
    if (cat == 1 && s->count > 1)
        return bad(v, "concatenation", SRC_CONCAT,
                   "%s concatenated with %u other SPDU(s): a category-1 SPDU stands alone in its "
                   "TSDU",
                   fg_spdu_name(s->type), s->count - 1);
    if (cat == 2 && s->index == 0)
        return bad(v, "concatenation", SRC_CONCAT,
                   "bare %s: a category-2 SPDU must follow a %s in the same TSDU",
                   fg_spdu_name(s->type), fg_spdu_name(carrier(s->type)));
    if (cat == 2 && s->prev != carrier(s->type))
        return bad(v, "concatenation", SRC_CONCAT, "%s after %s: it must follow a %s",
                   fg_spdu_name(s->type), fg_spdu_name(s->prev), fg_spdu_name(carrier(s->type)));
    return 0;
}

static int check_serial(const struct fg_spdu *s, struct fg_x400_violation *v)
{
    char sb[48];
    if (!(s->has & FG_SP_SERIAL))
        return bad(v, "serial-malformed", "X.225 §8.3.12", "%s without a Serial Number (PI 42)",
                   fg_spdu_name(s->type));
    if (!s->serial_ok)
        return bad(v, "serial-malformed", "X.225 §8.3.12",
                   "%s serial \"%s\": a Serial Number is 1 to 6 decimal digits without leading "
                   "zeros",
                   fg_spdu_name(s->type), fg_x400_serial_str(s, sb, sizeof(sb)));
    return 0;
}

static int apply_mip(struct fg_x400_sm *sm, enum fg_x400_side from, const struct fg_spdu *s,
                     struct fg_x400_violation *v)
{
    char sb[48];
    const char *sn = fg_x400_serial_str(s, sb, sizeof(sb));
    int r = 0;
    if (sm->phase != FG_X400_PH_DATA)
        r = bad(v, "not-connected", SRC_A4, "MIP serial %s before the session was accepted", sn);
    else if (!(sm->sur & FG_SUR_MINOR_SYNC))
        r = bad(v, "fu-not-selected", SRC_MIP,
                "MIP serial %s: the minor synchronize functional unit was not granted (SUR %04x)",
                sn, sm->sur);
    else if (check_concat(s, v))
        r = 1;
    else if (!fg_x400_sm_holds(sm, from, FG_TOKEN_MINOR | FG_TOKEN_DATA))
        r = bad(v, "token-not-held", SRC_MIP,
                "MIP serial %s from the %s, which does not hold the minor-sync and data tokens", sn,
                side_name(from));
    else if ((sm->sur & FG_SUR_ACTIVITY) && !sm->activity)
        r = bad(v, "outside-activity", SRC_MIP,
                "MIP serial %s outside an activity (no AS before it)", sn);
    else if (sm->ending)
        r = bad(v, "sync-while-ending", SRC_MIP,
                "MIP serial %s while %s serial %u awaits its answer", sn,
                fg_spdu_name((enum fg_spdu_type)sm->ending), (unsigned)sm->ae_sn);
    else if (check_serial(s, v))
        r = 1;
    else if (s->serial != sm->vm)
        r = bad(v, "serial-not-vm", SRC_A4, "MIP serial %u, expected V(M) = %u (V(A) = %u)%s",
                (unsigned)s->serial, (unsigned)sm->vm, (unsigned)sm->va,
                s->serial + 1 == sm->vm             ? ": the previous sync point's serial again"
                : s->serial == 0                    ? ": the first sync point of an activity is 1"
                : sm->vm == 1 && sm->activities > 1 ? ": numbering not reset at the activity start"
                : s->serial > sm->vm                ? ": serial numbers skipped"
                                                    : "");
    else if ((s->has & FG_SP_SYNC_TYPE) && (s->sync_type & 0x01))
        r = bad(v, "no-confirmation", SRC_RTS,
                "MIP serial %u asks for no explicit confirmation (Sync Type %02x); RTS confirms "
                "every checkpoint",
                (unsigned)s->serial, s->sync_type);
    else if (sm->rts && sm->checkpoint == 0)
        r = bad(v, "checkpointing-not-agreed", SRC_RTS,
                "MIP serial %u although the RTS checkpoint size was negotiated to 0",
                (unsigned)s->serial);
    else if (sm->rts && sm->vm - sm->va >= sm->window)
        r = bad(v, "window-exceeded", SRC_RTS,
                "MIP serial %u with %u sync point(s) unacknowledged (V(A) = %u): more than the "
                "window of %u",
                (unsigned)s->serial, (unsigned)(sm->vm - sm->va + 1), (unsigned)sm->va,
                (unsigned)sm->window);
    /* A lenient receiver's view goes on: the next expected SN follows the
     * one received when it was well formed. */
    if (s->serial_ok && s->serial >= sm->vm)
        sm->vm = s->serial + 1;
    else if (!r)
        sm->vm++;
    sm->since_sync = 0;
    sm->mips++;
    return r;
}

int fg_x400_sm_apply(struct fg_x400_sm *sm, enum fg_x400_side from, const struct fg_spdu *s,
                     struct fg_x400_violation *v)
{
    char sb[48];
    switch (s->type) {
    case FG_SPDU_CN:
        sm->phase = FG_X400_PH_CONNECTING;
        sm->sur = (s->has & FG_SP_SUR) ? s->sur : FG_SUR_DEFAULT;
        sm->token_setting = (s->has & FG_SP_TOKEN_SETTING) ? s->token_setting : 0;
        if (s->has & FG_SP_USER_DATA) {
            struct fg_rts r;
            if (fg_x400_rts_decode(FG_SPDU_CN, s->user_data, s->user_data_len, &r) == 0 &&
                (r.x410 || r.normal)) {
                sm->rts = 1;
                sm->checkpoint = r.checkpoint;
                sm->window = r.window;
            }
        }
        if (s->count > 1)
            return check_concat(s, v);
        return 0;
    case FG_SPDU_AC: {
        int r = 0;
        if (sm->phase != FG_X400_PH_CONNECTING)
            r = bad(v, "unexpected", SRC_A4, "AC without a CN before it");
        if (s->has & FG_SP_SUR)
            sm->sur = s->sur & (sm->sur ? sm->sur : 0xFFFF);
        if (s->has & FG_SP_TOKEN_SETTING)
            sm->token_setting = s->token_setting;
        sm->init_tokens = tokens_from_setting(sm->token_setting);
        if (s->has & FG_SP_USER_DATA) {
            struct fg_rts rt;
            if (fg_x400_rts_decode(FG_SPDU_AC, s->user_data, s->user_data_len, &rt) == 0 &&
                (rt.x410 || rt.normal)) {
                if (sm->rts && rt.checkpoint > sm->checkpoint && !r)
                    r = bad(v, "rts-negotiation", SRC_RTS,
                            "AC grants checkpoint size %u, more than the %u proposed",
                            (unsigned)rt.checkpoint, (unsigned)sm->checkpoint);
                sm->rts = 1;
                sm->checkpoint = rt.checkpoint;
                sm->window = rt.window;
            }
        }
        sm->phase = FG_X400_PH_DATA;
        sm->vm = sm->va = 0; /* no Initial Serial Number with activities */
        return r;
    }
    case FG_SPDU_RF:
    case FG_SPDU_AB:
        sm->phase = FG_X400_PH_ENDED;
        sm->last_abort = s->type;
        sm->activity = 0;
        return 0;
    case FG_SPDU_AA:
    case FG_SPDU_DN:
        sm->phase = FG_X400_PH_ENDED;
        return 0;
    case FG_SPDU_FN:
        if (sm->activity)
            return sm->phase = FG_X400_PH_RELEASING,
                   bad(v, "release-in-activity", SRC_ACT, "FN while an activity is open");
        sm->phase = FG_X400_PH_RELEASING;
        return 0;
    case FG_SPDU_GT:
        if (s->has & FG_SP_TOKEN) {
            uint8_t give = s->token_item & tokens_available(sm->sur);
            int r = 0;
            if (!fg_x400_sm_holds(sm, from, give))
                r = bad(v, "token-not-held", "X.225 §7.14",
                        "GT gives tokens %02x the %s does not hold", give, side_name(from));
            if (from == FG_X400_INITIATOR)
                sm->init_tokens &= (uint8_t)~give;
            else
                sm->init_tokens |= give;
            return r;
        }
        return 0;
    case FG_SPDU_GTC: {
        uint8_t all = tokens_available(sm->sur);
        if (from == FG_X400_INITIATOR)
            sm->init_tokens &= (uint8_t)~all;
        else
            sm->init_tokens |= all;
        return check_concat(s, v);
    }
    case FG_SPDU_PT:
    case FG_SPDU_GTA:
        return check_concat(s, v);
    case FG_SPDU_DT: {
        if (check_concat(s, v))
            return 1;
        if (sm->phase != FG_X400_PH_DATA)
            return bad(v, "not-connected", SRC_A4, "DT outside the data phase");
        if (!fg_x400_sm_holds(sm, from, FG_TOKEN_DATA))
            return bad(v, "token-not-held", "X.225 §7.11",
                       "DT from the %s, which does not hold the data token", side_name(from));
        sm->since_sync += s->user_data_len;
        if (sm->rts && sm->checkpoint > 0 && sm->since_sync > (uint64_t)sm->checkpoint * 1024)
            return bad(v, "checkpoint-size", SRC_RTS,
                       "%llu octets of data since the last sync point, more than the checkpoint "
                       "size of %u x 1024",
                       (unsigned long long)sm->since_sync, (unsigned)sm->checkpoint);
        return 0;
    }
    case FG_SPDU_MIP:
        return apply_mip(sm, from, s, v);
    case FG_SPDU_MIA: {
        if (check_concat(s, v))
            return 1;
        if (check_serial(s, v))
            return 1;
        /* Table A-4: valid iff V(M) > SN >= V(A). */
        if (!(sm->vm > s->serial && s->serial >= sm->va))
            return bad(v, "mia-serial", SRC_A4, "MIA serial %u outside V(A) = %u .. V(M) - 1 = %u",
                       (unsigned)s->serial, (unsigned)sm->va, (unsigned)sm->vm - 1);
        sm->va = s->serial + 1;
        return 0;
    }
    case FG_SPDU_AS: {
        if (check_concat(s, v))
            return 1;
        int r = 0;
        if (!(sm->sur & FG_SUR_ACTIVITY))
            r = bad(v, "fu-not-selected", SRC_ACT, "AS without the activity functional unit");
        else if (sm->activity)
            r = bad(v, "activity-nested", SRC_ACT, "AS while an activity is already open");
        else if (!fg_x400_sm_holds(sm, from, FG_TOKEN_MAJOR))
            r = bad(v, "token-not-held", SRC_ACT,
                    "AS from the %s, which does not hold the major/activity token",
                    side_name(from));
        /* Table A-4: AS sets V(A) = V(M) = V(R) = 1. */
        sm->activity = 1;
        sm->ending = 0;
        sm->vm = sm->va = 1;
        sm->since_sync = 0;
        sm->activities++;
        return r;
    }
    case FG_SPDU_AE:
    case FG_SPDU_MAP: {
        if (check_concat(s, v))
            return 1;
        int r = 0;
        if ((sm->sur & FG_SUR_ACTIVITY) && !sm->activity && s->type == FG_SPDU_AE)
            r = bad(v, "outside-activity", SRC_ACT, "AE serial %s outside an activity",
                    fg_x400_serial_str(s, sb, sizeof(sb)));
        else if (check_serial(s, v))
            r = 1;
        else if (s->serial != sm->vm)
            r = bad(v, "serial-not-vm", SRC_A4, "%s serial %u, expected V(M) = %u",
                    fg_spdu_name(s->type), (unsigned)s->serial, (unsigned)sm->vm);
        sm->ae_sn = s->serial_ok ? s->serial : sm->vm;
        sm->vm = sm->ae_sn + 1;
        sm->ending = s->type;
        return r;
    }
    case FG_SPDU_AEA: {
        if (check_concat(s, v))
            return 1;
        int r = 0;
        if (!sm->ending)
            r = bad(v, "unexpected", SRC_A4, "AEA serial %s with no AE or MAP outstanding",
                    fg_x400_serial_str(s, sb, sizeof(sb)));
        else if (check_serial(s, v))
            r = 1;
        else if (s->serial != sm->ae_sn)
            r = bad(v, "aea-serial", SRC_A4, "AEA serial %u answers AE serial %u",
                    (unsigned)s->serial, (unsigned)sm->ae_sn);
        if (sm->ending == FG_SPDU_AE) {
            sm->activity = 0;
            sm->messages++;
        }
        sm->ending = 0;
        sm->va = sm->vm;
        return r;
    }
    case FG_SPDU_AD:
    case FG_SPDU_AI:
        if (check_concat(s, v))
            return 1;
        sm->ending = s->type;
        return 0;
    case FG_SPDU_ADA:
    case FG_SPDU_AIA:
        if (check_concat(s, v))
            return 1;
        sm->activity = 0;
        sm->ending = 0;
        return 0;
    default:
        return check_concat(s, v);
    }
}
