/* faultgate/x400.h - THE X.400-over-RFC-1006 codec: TPKT (RFC 1006), COTP
 * class 0 (X.224), ISO 8327 / X.225 session SPDUs with PI/PGI parameters,
 * the long length form and basic concatenation, and RTS in X.410-1984 mode
 * (PConnect, PAccept, PRefuse, AbortInformation).
 *
 * One codec shared by the fake X.400 MTA, refgw's X.400 side, the proxy's
 * X.400 triggers and the X.400 timeline.  The decoder is incremental: it
 * accepts any split of the byte stream, and after fg_x400_dec_init it
 * allocates only to grow its TSDU buffer (never per byte).  It emits one
 * event per TPKT, per TPDU, per SPDU of a completed TSDU (at the DT with
 * EOT), and on a framing error.
 *
 * The upper layers are layered so that 1988 normal mode (presentation,
 * ACSE, RTSE) can be added beside the X.410 RTS functions: the session
 * layer hands user data up as opaque octets and fg_x400_rts_decode looks at
 * them.  Byte layouts and code tables: x400-wire.md §1-§3 in the design
 * references; X.224, X.225, X.410-1984.
 */
#ifndef FAULTGATE_X400_H
#define FAULTGATE_X400_H

#include <stddef.h>
#include <stdint.h>

/* --- TPKT and COTP (RFC 1006 §6, X.224 §13) ---------------------------- */

#define FG_TPKT_VERSION 3
#define FG_TPKT_MAX 65535

enum fg_cotp_code {
    FG_COTP_CR = 0xE0,
    FG_COTP_CC = 0xD0,
    FG_COTP_DR = 0x80,
    FG_COTP_DC = 0xC0,
    FG_COTP_DT = 0xF0,
    FG_COTP_ED = 0x10,
    FG_COTP_AK = 0x60,
    FG_COTP_EA = 0x20,
    FG_COTP_RJ = 0x50,
    FG_COTP_ER = 0x70
};

/* "CR", "CC", "DT", ...; "?" for an unknown code. */
const char *fg_cotp_name(uint8_t code);

struct fg_cotp {
    uint8_t code; /* the type: high nibble (CR/CC keep CDT apart) */
    uint8_t li;
    uint16_t dst_ref, src_ref;       /* CR, CC, DR, ER (ER: dst_ref only) */
    uint8_t class_opt;               /* CR, CC */
    int eot;                         /* DT: bit 8 of the third octet */
    uint8_t reason;                  /* DR: reason; ER: reject cause */
    uint8_t tpdu_size;               /* CR/CC C0: log2 of the size; 0 = absent (128) */
    const uint8_t *calling, *called; /* C1 / C2 TSAP-IDs (may be NULL) */
    size_t calling_len, called_len;
    const uint8_t *data; /* DT: user data; CR/CC/DR: after the variable part */
    size_t data_len;
};

/* --- session SPDUs (X.225 §8; x400-wire.md §2.2-§2.3) ------------------ */

/* SPDU types after the decoder resolved the SIs that two SPDUs share
 * (GT/DT 1, AB/AI 25, AA/AIA 26, MAP/AE 41) from their place in the TSDU
 * and their parameters.  SI 42 is reported as AEA (MAA shares it; RTS
 * only ends activities). */
enum fg_spdu_type {
    FG_SPDU_UNKNOWN = 0,
    FG_SPDU_CN,
    FG_SPDU_AC,
    FG_SPDU_RF,
    FG_SPDU_FN,
    FG_SPDU_DN,
    FG_SPDU_NF,
    FG_SPDU_AB,
    FG_SPDU_AA,
    FG_SPDU_GT,
    FG_SPDU_DT,
    FG_SPDU_PT,
    FG_SPDU_EX,
    FG_SPDU_TD,
    FG_SPDU_CD,
    FG_SPDU_CDA,
    FG_SPDU_GTC,
    FG_SPDU_GTA,
    FG_SPDU_MIP,
    FG_SPDU_MIA,
    FG_SPDU_MAP,
    FG_SPDU_AE,
    FG_SPDU_AEA,
    FG_SPDU_RS,
    FG_SPDU_RA,
    FG_SPDU_PR,
    FG_SPDU_ER,
    FG_SPDU_ED,
    FG_SPDU_AS,
    FG_SPDU_AR,
    FG_SPDU_AD,
    FG_SPDU_ADA,
    FG_SPDU_AI,
    FG_SPDU_AIA,
    FG_SPDU_CDO,
    FG_SPDU_OA,
    FG_SPDU_COUNT
};

/* SI codes (X.225 §8.3; ISODE and Wireshark agree on these). */
enum {
    FG_SI_DT = 1,
    FG_SI_GT = 1,
    FG_SI_PT = 2,
    FG_SI_EX = 5,
    FG_SI_PR = 7,
    FG_SI_NF = 8,
    FG_SI_FN = 9,
    FG_SI_DN = 10,
    FG_SI_RF = 12,
    FG_SI_CN = 13,
    FG_SI_AC = 14,
    FG_SI_CDO = 15,
    FG_SI_OA = 16,
    FG_SI_GTC = 21,
    FG_SI_GTA = 22,
    FG_SI_AB = 25,
    FG_SI_AI = 25,
    FG_SI_AA = 26,
    FG_SI_AIA = 26,
    FG_SI_AR = 29,
    FG_SI_TD = 33,
    FG_SI_RA = 34,
    FG_SI_MAP = 41,
    FG_SI_AE = 41,
    FG_SI_MAA = 42,
    FG_SI_AEA = 42,
    FG_SI_AS = 45,
    FG_SI_ED = 48,
    FG_SI_MIP = 49,
    FG_SI_MIA = 50,
    FG_SI_RS = 53,
    FG_SI_AD = 57,
    FG_SI_ADA = 58,
    FG_SI_CD = 61,
    FG_SI_CDA = 62,
    FG_SI_ER = 0
};

/* PI / PGI codes (X.225 §8.3; x400-wire.md §2.3). */
enum {
    FG_PGI_CONN_ID = 1,
    FG_PGI_CONN_ACC = 5,
    FG_PI_CALLED_REF = 9,
    FG_PI_CALLING_REF = 10,
    FG_PI_COMMON_REF = 11,
    FG_PI_ADD_REF = 12,
    FG_PI_SYNC_TYPE = 15,
    FG_PI_TOKEN = 16,
    FG_PI_TDISC = 17,
    FG_PI_PROTO_OPT = 19,
    FG_PI_SUR = 20,
    FG_PI_TSDU_MAX = 21,
    FG_PI_VERSION = 22,
    FG_PI_ISN = 23,
    FG_PI_PREPARE = 24,
    FG_PI_ENCLOSURE = 25,
    FG_PI_TOKEN_SETTING = 26,
    FG_PI_RESYNC_TYPE = 27,
    FG_PGI_LINKING = 33,
    FG_PI_ACT_ID = 41,
    FG_PI_SERIAL = 42,
    FG_PI_REFLECT = 49,
    FG_PI_REASON = 50,
    FG_PI_CALLING_SSEL = 51,
    FG_PI_CALLED_SSEL = 52,
    FG_PGI_USER_DATA = 193,
    FG_PGI_EXT_USER_DATA = 194
};

/* Session User Requirements bits (PI 20). */
enum {
    FG_SUR_HALF_DUPLEX = 0x0001,
    FG_SUR_DUPLEX = 0x0002,
    FG_SUR_EXPEDITED = 0x0004,
    FG_SUR_MINOR_SYNC = 0x0008,
    FG_SUR_MAJOR_SYNC = 0x0010,
    FG_SUR_RESYNC = 0x0020,
    FG_SUR_ACTIVITY = 0x0040,
    FG_SUR_NEG_RELEASE = 0x0080,
    FG_SUR_CAPABILITY = 0x0100,
    FG_SUR_EXCEPTIONS = 0x0200,
    FG_SUR_DEFAULT = 0x0349, /* absent PI 20 (X.225 §8.3.1.16) */
    FG_SUR_RTS = 0x0249      /* what RTS asks for and needs granted */
};

/* Token Item bits (PI 16). */
enum {
    FG_TOKEN_DATA = 0x01,
    FG_TOKEN_MINOR = 0x04,
    FG_TOKEN_MAJOR = 0x10,
    FG_TOKEN_RELEASE = 0x40
};

/* Transport Disconnect bits (PI 17). */
enum {
    FG_TDISC_RELEASED = 0x01,
    FG_TDISC_USER_ABORT = 0x02,
    FG_TDISC_PROTO_ERROR = 0x04,
    FG_TDISC_NO_REASON = 0x08,
    FG_TDISC_IMPL_RESTRICTION = 0x10
};

const char *fg_spdu_name(enum fg_spdu_type t);
/* The type named by s ("MIP", case-insensitive), or FG_SPDU_UNKNOWN. */
enum fg_spdu_type fg_spdu_type_parse(const char *s);
uint8_t fg_spdu_si(enum fg_spdu_type t);
/* X.225 §6.3.7 categories: 0 (GT, PT), 1 (stands alone), 2 (follows a
 * category-0 SPDU in its TSDU). */
int fg_spdu_category(enum fg_spdu_type t);

/* Which parameters an SPDU carried (bits of fg_spdu.has). */
enum {
    FG_SP_SERIAL = 1u << 0,
    FG_SP_SYNC_TYPE = 1u << 1,
    FG_SP_TOKEN = 1u << 2,
    FG_SP_TDISC = 1u << 3,
    FG_SP_REASON = 1u << 4,
    FG_SP_ACT_ID = 1u << 5,
    FG_SP_SUR = 1u << 6,
    FG_SP_VERSION = 1u << 7,
    FG_SP_TOKEN_SETTING = 1u << 8,
    FG_SP_ISN = 1u << 9,
    FG_SP_PROTO_OPT = 1u << 10,
    FG_SP_ENCLOSURE = 1u << 11,
    FG_SP_USER_DATA = 1u << 12, /* PGI 193/194, or a DT/EX/TD User Information field */
    FG_SP_TSDU_MAX = 1u << 13
};

#define FG_SERIAL_RAW_MAX 16

/* One decoded SPDU.  Pointers point into the decoder's TSDU buffer and
 * are valid only during the callback. */
struct fg_spdu {
    enum fg_spdu_type type;
    uint8_t si;
    unsigned index;         /* place in its TSDU, 0-based */
    unsigned count;         /* SPDUs in its TSDU (known once the TSDU is parsed) */
    enum fg_spdu_type prev; /* the SPDU before it in the TSDU; UNKNOWN at 0 */
    uint32_t li;            /* the LI value */
    int long_li;            /* the LI used the 3-octet form (FF hi lo) */
    const uint8_t *raw;     /* SI..end of this SPDU (DT/EX/TD: and the user information) */
    size_t raw_len;
    unsigned has; /* FG_SP_* */
    /* Serial Number (PI 42) as carried: 1-6 IA5 digits when well formed. */
    uint8_t serial_raw[FG_SERIAL_RAW_MAX];
    size_t serial_len; /* octets carried (may exceed FG_SERIAL_RAW_MAX: then cut) */
    int serial_ok;     /* 1-6 digits, no leading zero (X.225 §8.3.12.3) */
    uint32_t serial;   /* its value when serial_ok */
    uint8_t sync_type, token_item, tdisc, version, token_setting, proto_opt, enclosure;
    uint16_t sur;
    uint32_t isn;
    uint8_t reason;             /* first octet of PI 50 */
    const uint8_t *reason_data; /* PI 50 after its first octet (RF 02: user data) */
    size_t reason_data_len;
    const uint8_t *act_id;
    size_t act_id_len;
    const uint8_t *user_data;
    size_t user_data_len;
};

/* Well-formedness of a Serial Number value: 1-6 ASCII digits, no leading
 * zero (except "0" itself).  Returns 1 and sets *v when well formed. */
int fg_x400_serial_parse(const uint8_t *p, size_t n, uint32_t *v);

/* Parse one TSDU (a complete session SPDU sequence) and call cb per SPDU.
 * Returns the number of SPDUs, or FG_EPROTO with a reason in err. */
int fg_x400_tsdu_parse(const uint8_t *tsdu, size_t len,
                       void (*cb)(void *ud, const struct fg_spdu *s), void *ud, char *err,
                       size_t errlen);

/* Parse one TPDU (the octets after the TPKT header). */
int fg_x400_cotp_parse(const uint8_t *p, size_t len, struct fg_cotp *out, char *err, size_t errlen);

/* --- incremental decoder ------------------------------------------------ */

enum fg_x400_ev_kind {
    FG_X400_EV_TPDU, /* a TPKT and its TPDU */
    FG_X400_EV_SPDU, /* an SPDU of a TSDU completed by a DT with EOT */
    FG_X400_EV_ERROR /* framing or protocol error; text says which */
};

struct fg_x400_event {
    enum fg_x400_ev_kind kind;
    uint64_t offset; /* stream offset of the first octet of the TPKT */
    uint64_t end;    /* stream offset just past the TPKT that completed it */
    uint16_t tpkt_len;
    const struct fg_cotp *tpdu; /* TPDU: the TPDU; SPDU: the DT that ended the TSDU */
    const struct fg_spdu *spdu; /* SPDU */
    size_t tsdu_len;            /* SPDU: length of its TSDU */
    const char *text;           /* ERROR */
    int fatal;                  /* ERROR: framing is lost; nothing more is decoded */
};

typedef void (*fg_x400_cb)(void *ud, const struct fg_x400_event *ev);

struct fg_x400_dec {
    fg_x400_cb cb;
    void *ud;
    uint8_t hdr[4];
    size_t hdr_n;
    uint8_t *pkt; /* FG_TPKT_MAX octets, allocated once */
    size_t pkt_need, pkt_have;
    uint8_t *tsdu;
    size_t tsdu_len, tsdu_cap, tsdu_max;
    uint64_t off, pkt_off;
    int dead;
    int tsdu_overflow;
    char err[160];
};

/* tsdu_max: largest TSDU kept for SPDU decoding (0: 1 MiB); longer TSDUs
 * are reported as an ERROR event and skipped. */
void fg_x400_dec_init(struct fg_x400_dec *d, size_t tsdu_max, fg_x400_cb cb, void *ud);
void fg_x400_dec_free(struct fg_x400_dec *d);
/* Feed len octets; events are delivered from inside.  Returns 0, or
 * FG_EPROTO once the TPKT framing is lost (then the rest is ignored). */
int fg_x400_dec_feed(struct fg_x400_dec *d, const uint8_t *buf, size_t len);
/* Whether a stream that starts with these octets looks like RFC 1006
 * (03 00, a length of at least 7). */
int fg_x400_looks_like_tpkt(const uint8_t *p, size_t len);

/* --- encoder --------------------------------------------------------------- */

struct fg_x400_buf {
    uint8_t *p;
    size_t len, cap;
};
void fg_x400_buf_put(struct fg_x400_buf *b, const void *p, size_t n);
void fg_x400_buf_byte(struct fg_x400_buf *b, uint8_t c);
void fg_x400_buf_free(struct fg_x400_buf *b);

/* A session length: one octet below 255, else FF hi lo; force_long uses
 * the 3-octet form for any value (a strict-parser fault, §2.1). */
void fg_x400_put_len(struct fg_x400_buf *b, size_t v, int force_long);
/* A parameter: PI or PGI, its length, its value. */
void fg_x400_put_pi(struct fg_x400_buf *b, uint8_t pi, const void *v, size_t n);
void fg_x400_put_pi_byte(struct fg_x400_buf *b, uint8_t pi, uint8_t v);
void fg_x400_put_pi_u16(struct fg_x400_buf *b, uint8_t pi, uint16_t v);
/* PI 42 with the decimal digits of sn. */
void fg_x400_put_serial(struct fg_x400_buf *b, uint32_t sn);
/* An SPDU: SI, LI over params, the params; then uinfo (DT/EX/TD user
 * information field, outside the LI). */
void fg_x400_put_spdu(struct fg_x400_buf *b, uint8_t si, const void *params, size_t plen,
                      const void *uinfo, size_t ulen, int force_long);

/* TPDUs, each wrapped in its TPKT. */
void fg_x400_put_cr(struct fg_x400_buf *b, uint16_t src_ref, uint8_t tpdu_size, const void *calling,
                    size_t calling_len, const void *called, size_t called_len);
void fg_x400_put_cc(struct fg_x400_buf *b, uint16_t dst_ref, uint16_t src_ref, uint8_t tpdu_size,
                    const void *calling, size_t calling_len, const void *called, size_t called_len);
void fg_x400_put_dr(struct fg_x400_buf *b, uint16_t dst_ref, uint16_t src_ref, uint8_t reason);
void fg_x400_put_er(struct fg_x400_buf *b, uint16_t dst_ref, uint8_t cause);
/* A TSDU as DT TPDUs of at most tpdu_size octets (header included; 0 or
 * less than 8 means 128), EOT on the last. */
void fg_x400_put_dt(struct fg_x400_buf *b, const void *tsdu, size_t len, size_t tpdu_size);

/* --- RTS, X.410-1984 mode (X.410 §4, x400-wire.md §3) ---------------------- */

enum fg_rts_kind {
    FG_RTS_NONE = 0,
    FG_RTS_PCONNECT,
    FG_RTS_PACCEPT,
    FG_RTS_PREFUSE,
    FG_RTS_ABORTINFO
};

struct fg_rts {
    enum fg_rts_kind kind;
    int x410;            /* DataTransferSyntax x409(0) seen */
    uint32_t checkpoint; /* units of 1024 octets; 0 default */
    uint32_t window;     /* default 3 */
    int dialogue;        /* 0 monologue, 1 two-way alternate */
    int app_protocol;    /* PConnect: 1 P1 (default) */
    int recover;         /* ConnectionData is recover [1] */
    int reason;          /* PRefuse refuseReason, AbortInformation abortReason; -1 absent */
    const uint8_t *open; /* ConnectionData open [0] contents */
    size_t open_len;
    /* 1988 normal mode (X.226 CP-type / CPA-PPDU, X.227 ACSE, X.228 RTSE) */
    int normal;             /* an RTORQ/RTOAC or other normal-mode user data was read */
    int acse;               /* the ACSE APDU's tag: 0x60 AARQ .. 0x64 ABRT; 0 none */
    int acse_result;        /* AARE result; -1 absent */
    int acse_ctx;           /* presentation context of the ACSE APDU; -1 */
    int rtse_ctx;           /* the EXTERNAL's indirect-reference (RTSE context); -1 */
    int data_ctx;           /* P-DATA: context of the RTTR/RTTP; -1 */
    int rtse_apdu;          /* 0xB0 RTORQ, 0xB1 RTOAC, 0xB2 RTORJ, 0xB6 RTAB; 0 */
    const uint8_t *app_ctx; /* application-context-name: the OID TLV */
    size_t app_ctx_len;
    const uint8_t *rttr; /* P-DATA: the RTTRapdu's octets (a segment of the APDU) */
    size_t rttr_len;
    unsigned nctx; /* CP: contexts defined; CPA: results */
#define FG_RTS_MAX_CTX 16
    int ctx_id[FG_RTS_MAX_CTX];
    const uint8_t *ctx_asn[FG_RTS_MAX_CTX]; /* abstract syntax OID TLV */
    size_t ctx_asn_len[FG_RTS_MAX_CTX];
};

/* Decode session user data as PConnect/PAccept (hint CN/AC), PRefuse (RF
 * reason 02 data) or AbortInformation (AB) in X.410-1984 mode, or, in 1988
 * normal mode, as CP-type/CPA-PPDU with AARQ/AARE and RTORQ/RTOAC (CN/AC),
 * ARU-PPDU with ABRT/RTAB (AB), RLRQ/RLRE (FN/DN) and P-DATA with an RTTR
 * segment (DT).  Definite and indefinite BER lengths.  Returns 0 or
 * FG_EPROTO. */
int fg_x400_rts_decode(enum fg_spdu_type hint, const uint8_t *p, size_t n, struct fg_rts *out);
/* open: the contents of ConnectionData open [0] (a P1 bind value); NULL
 * writes `a0 02 05 00` (NULL), which Wireshark decodes cleanly. */
void fg_x400_rts_pconnect(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window, int dialogue,
                          const void *open, size_t open_len);
/* The same with another applicationProtocol (ISODE's test applications:
 * 128 echo, 129 sink). */
void fg_x400_rts_pconnect_app(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window,
                              int dialogue, int app_protocol, const void *open, size_t open_len);
void fg_x400_rts_paccept(struct fg_x400_buf *b, uint32_t checkpoint, uint32_t window,
                         const void *open, size_t open_len);
void fg_x400_rts_prefuse(struct fg_x400_buf *b, int reason);

/* --- RTSE, 1988 normal mode (X.226, X.227, X.228; x400-wire.md §3.3) ---- */

/* What an initiator proposes: presentation contexts (abstract syntax OID
 * TLVs, transfer syntax BER), the application context, and which contexts
 * carry ACSE and RTSE. */
struct fg_x400_nm {
    struct {
        int id;
        const uint8_t *asn;
        size_t asn_len;
    } ctx[4];
    unsigned nctx;
    int acse_ctx, rtse_ctx;
    const uint8_t *app_ctx; /* OID TLV */
    size_t app_ctx_len;
};
/* CP-type + AARQ + RTORQ (CN user data). */
void fg_x400_rts_cp(struct fg_x400_buf *b, const struct fg_x400_nm *nm, uint32_t checkpoint,
                    uint32_t window, int dialogue, const void *open, size_t open_len);
/* CPA-PPDU + AARE (accepted) + RTOAC answering cp (AC user data): one
 * acceptance per proposed context, the application context echoed. */
void fg_x400_rts_cpa(struct fg_x400_buf *b, const struct fg_rts *cp, uint32_t checkpoint,
                     uint32_t window, const void *open, size_t open_len);
/* P-DATA user data: an RTTRapdu (one segment of the APDU) in context ctx. */
void fg_x400_rts_pdata(struct fg_x400_buf *b, int ctx, const void *seg, size_t len);
/* A BER INTEGER (or another tag) holding x; and whether p..p+n is a BER
 * INTEGER of at most 4 octets (*v its value): the "greeting" that ISODE's
 * echo and sink applications carry as connection data. */
void fg_x400_ber_put_uint(struct fg_x400_buf *b, uint8_t tag, uint32_t x);
int fg_x400_ber_int(const uint8_t *p, size_t n, uint32_t *v);
/* RLRQ (FN) or, with response, RLRE (DN); reason normal. */
void fg_x400_rts_release(struct fg_x400_buf *b, int response, int acse_ctx);
void fg_x400_rts_abortinfo(struct fg_x400_buf *b, int reason);

#endif
