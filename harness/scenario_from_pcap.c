/* scenario_from_pcap.c - `faultgate scenario from-pcap TRACE`: a scenario
 * that makes the lab's next hop do what the capture shows the customer's
 * next hop did, to the gateway under test.
 *
 * From the SMTP timeline (timeline.c) of one connection: the next hop's
 * greeting, its extensions, each refusal (4xx, 5xx) and each slow reply
 * become the fake MTA's script (`mta:`, FORMAT.md "The fake MTA").  From
 * the symptom `diagnose` finds (diagnose.c): silence after a command
 * becomes a stall at that command, a close after EHLO a close, a slow 354
 * a delay, and the scenario gets the expectations that the KB suite
 * (scenarios/kb) attaches to that symptom.  The output is plain YAML with
 * comments, for the engineer to edit.
 */
#include "faultgate/scenario_from_pcap.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/diagnose.h"
#include "faultgate/error.h"
#include "faultgate/timeline.h"
#include "faultgate/util.h"

/* Replies slower than this are replayed with their delay. */
#define SLOW_US 250000

/* The KB suite's expectations per symptom: those of
 * scenarios/kb/kb-q*.yaml, which harness/tests/e2e_from_pcap.py compares. */
static const struct kb_entry {
    const char *kb, *scenario, *title;
    const char *expect[4];
} kb_table[] = {
    {"Q129140",
     "kb-q129140-hang-after-data",
     "the next hop stops answering; the gateway must time out and retry",
     {"{rule: closes-after-stall, within: \"timeouts.data_block + timeouts.data_done + 5s\"}",
      "{rule: message-fate, fate: delivered-once,\n"
      "     within: \"timeouts.data_block + timeouts.data_done + timeouts.give_up + 10s\"}",
      "{rule: gateway-alive}", NULL}},
    {"Q197142",
     "kb-q197142-ehlo-dropped-before-reply",
     "the next hop closes after EHLO before replying; the gateway must stay up and retry",
     {"{rule: gateway-alive}", "{rule: retries-after-drop, within: \"timeouts.give_up + 5s\"}",
      "{rule: message-fate, fate: delivered-once,\n"
      "     within: \"timeouts.ehlo + timeouts.give_up + 10s\"}",
      NULL}},
    {"Q135031",
     "kb-q135031-silent-queue-stall",
     "the next hop refuses the message for good; the gateway must bounce it, never keep it",
     {"{rule: message-fate, fate: bounced, within: \"timeouts.give_up + 15s\"}",
      "{rule: gateway-alive}", NULL}},
    {"Q131150",
     "kb-q131150-inbound-refused-while-busy",
     "an outbound session stalls while mail arrives; the gateway must keep accepting inbound",
     {"{rule: inbound-accepts-while-busy, within: 2s}",
      "{rule: message-fate, fate: delivered-once,\n"
      "     within: \"%DELAY% + timeouts.data_done + timeouts.give_up + 10s\"}",
      "{rule: gateway-alive}", NULL}},
};

static const struct kb_entry *kb_find(const char *kb)
{
    for (size_t i = 0; i < sizeof kb_table / sizeof kb_table[0]; i++)
        if (strcmp(kb_table[i].kb, kb) == 0)
            return &kb_table[i];
    return NULL;
}

/* A YAML double-quoted scalar. */
static void yq(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static const char *stage_of(const struct fg_tl_event *r)
{
    if (r->answers == FG_ANS_GREETING)
        return "greeting";
    if (r->answers == FG_ANS_END_OF_DATA)
        return "end-of-data";
    switch (r->verb) {
    case FG_VERB_EHLO:
        return "ehlo";
    case FG_VERB_HELO:
        return "helo";
    case FG_VERB_MAIL:
        return "mail";
    case FG_VERB_RCPT:
        return "rcpt";
    case FG_VERB_DATA:
        return "data";
    case FG_VERB_BDAT:
        return "bdat";
    case FG_VERB_RSET:
        return "rset";
    case FG_VERB_NOOP:
        return "noop";
    case FG_VERB_QUIT:
        return "quit";
    case FG_VERB_STARTTLS:
        return "starttls";
    default:
        return NULL;
    }
}

/* The reply text as the script writes it: lines joined by "|", codes
 * kept on the first line only (mta_script.c adds them back). */
static char *script_reply(const struct fg_tl_event *r)
{
    struct fg_strbuf b = {0};
    const char *p = r->text ? r->text : "";
    int first = 1;
    while (*p) {
        size_t len = strcspn(p, "\r\n");
        const char *line = p;
        size_t skip = first ? 0 : (len >= 4 ? 4 : len);
        fg_strbuf_printf(&b, "%s%.*s", first ? "" : "|", (int)(len - skip), line + skip);
        first = 0;
        p += len;
        p += strspn(p, "\r\n");
    }
    if (first)
        fg_strbuf_printf(&b, "%d", r->code);
    return fg_strbuf_take(&b);
}

static const char *const known_caps[] = {
    "PIPELINING",          "SIZE",     "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN",
    "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH",     NULL};

/* What the client sent last that the server never answered: "end-of-data",
 * "command VERB" or "reply 354" (a body that stopped); NULL if nothing. */
static const char *silence_after(const struct fg_tl_conn *c, char *buf, size_t len, uint64_t *frame)
{
    const char *what = NULL;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *e = &c->ev[i];
        if (e->kind == FG_TL_REPLY) {
            what = NULL;
        } else if (e->kind == FG_TL_END_OF_DATA) {
            what = "end-of-data";
            *frame = e->frame;
        } else if (e->kind == FG_TL_COMMAND) {
            snprintf(buf, len, "command %s", fg_smtp_verb_name(e->verb));
            what = buf;
            *frame = e->frame;
        } else if (e->kind == FG_TL_DATA) {
            what = "reply 354";
            *frame = e->frame;
        }
    }
    return what;
}

static const struct fg_tl_conn *conn_by_id(const struct fg_timeline *tl, unsigned id)
{
    for (size_t i = 0; i < tl->nconn; i++)
        if (tl->conn[i].id == id)
            return &tl->conn[i];
    return NULL;
}

static int has_reply(const struct fg_tl_conn *c, int cls)
{
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].kind == FG_TL_REPLY && c->ev[i].code / 100 == cls &&
            c->ev[i].answers != FG_ANS_GREETING)
            return 1;
    return 0;
}

int fg_scenario_from_pcap(const char *path, const struct fg_sfp_opts *o, FILE *f, char *err,
                          size_t errlen)
{
    struct fg_diag_report *rep = NULL;
    int rc = fg_diagnose(path, NULL, &rep, err, errlen);
    if (rc < 0)
        return rc;
    struct fg_timeline *tl = NULL;
    rc = fg_timeline_build(path, &tl, err, errlen);
    if (rc < 0) {
        fg_diag_report_free(rep);
        return rc;
    }
    /* The symptom: the first SMTP finding (on --conn N if given). */
    const struct fg_diag_finding *fd = NULL;
    for (size_t i = 0; i < rep->n && !fd; i++)
        if (kb_find(rep->f[i].kb) && (!o->conn || rep->f[i].conn == o->conn))
            fd = &rep->f[i];
    for (size_t i = 0; i < rep->n && !fd; i++)
        if (kb_find(rep->f[i].kb))
            fd = &rep->f[i];
    const struct kb_entry *kb = fd ? kb_find(fd->kb) : NULL;

    /* The next hop's session: --conn N, else the finding's; for Q135031
     * (found on the inbound connection) the first later one with a
     * refusal; else the first SMTP session with a MAIL command. */
    const struct fg_tl_conn *c = o->conn ? conn_by_id(tl, o->conn) : NULL;
    if (o->conn && !c) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: no connection %u in the capture", path, o->conn);
        goto out;
    }
    if (!c && fd && strcmp(fd->kb, "Q135031") != 0)
        c = conn_by_id(tl, fd->conn);
    for (size_t i = 0; !c && fd && i < tl->nconn; i++)
        if (tl->conn[i].id > fd->conn && (has_reply(&tl->conn[i], 5) || has_reply(&tl->conn[i], 4)))
            c = &tl->conn[i];
    for (size_t i = 0; !c && i < tl->nconn; i++)
        if (fg_tl_conn_first(&tl->conn[i], 0, FG_TL_COMMAND, FG_C2S) >= 0)
            c = &tl->conn[i];
    if (!c) {
        rc = fg_errf(err, errlen, FG_EINPUT, "%s: no SMTP session in the capture", path);
        goto out;
    }

    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char id[96];
    size_t k = 0;
    for (const char *p = base; *p && *p != '.' && k + 1 < sizeof id; p++)
        id[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ? *p
                         : (*p >= 'A' && *p <= 'Z')                                        ? *p + 32
                                                                                           : '-');
    id[k] = '\0';

    fprintf(f, "# A reproduction of %s, written by `faultgate scenario from-pcap`.\n", base);
    fprintf(f, "# The next hop's side is connection #%u of the capture (%s -> %s):\n", c->id,
            c->client, c->server);
    fprintf(f, "# the lab's fake MTA replays its greeting, extensions, refusals and slow\n");
    fprintf(f, "# replies (mta:), the proxy what went wrong (faults:).\n");
    if (fd)
        fprintf(f, "# diagnose found KB %s (%s): %s\n", fd->kb, fd->symptom,
                fd->summary ? fd->summary : "");
    else
        fprintf(f, "# diagnose found no KB symptom: the scenario replays the session only.\n");
    fprintf(f, "id: from-pcap-%s\n", id);
    fprintf(f, "title: ");
    char title[256];
    snprintf(title, sizeof title, "%s, as in %s", kb ? kb->title : "the next hop of a capture",
             base);
    yq(f, title, strlen(title));
    fputc('\n', f);
    if (kb)
        fprintf(f, "kb: [%s]\n", kb->kb);
    fprintf(f, "leg: outbound\n");

    uint64_t size = 2048;
    for (size_t i = 0; i < c->nmsg; i++)
        if (c->msg[i].size)
            size = c->msg[i].size;
    for (size_t i = 0; !c->nmsg && i < tl->nconn; i++)
        for (size_t j = 0; j < tl->conn[i].nmsg; j++)
            if (tl->conn[i].msg[j].size)
                size = tl->conn[i].msg[j].size;
    fprintf(f, "# The lab's addresses; the capture's message had %llu octets.\n",
            (unsigned long long)size);
    fprintf(f,
            "messages:\n  - {from: user1@company1.test, to: [user2@company2.test], size: %llu}\n",
            (unsigned long long)size);

    /* The symptom as a fault. */
    char sbuf[64];
    uint64_t sframe = 0;
    const char *silent = silence_after(c, sbuf, sizeof sbuf, &sframe);
    char delay[32] = "";
    int skip_354_delay = 0;
    if (fd && strcmp(fd->kb, "Q131150") == 0) {
        /* The stalled session's slow reply: the delay it showed. */
        uint64_t dus = 0;
        long d = fg_tl_conn_first(c, 0, FG_TL_COMMAND, FG_C2S);
        for (size_t i = d < 0 ? 0 : (size_t)d; i < c->nev; i++)
            if (c->ev[i].kind == FG_TL_COMMAND && c->ev[i].verb == FG_VERB_DATA)
                for (size_t j = i + 1; j < c->nev; j++)
                    if (c->ev[j].kind == FG_TL_REPLY) {
                        dus = c->ev[j].us - c->ev[i].us;
                        i = c->nev;
                        break;
                    }
        if (!dus && fd->nframes >= 2)
            dus = 3000000;
        snprintf(delay, sizeof delay, "%llums", (unsigned long long)((dus + 999) / 1000));
        skip_354_delay = 1;
    }
    fprintf(f, "faults:%s\n",
            fd && kb_find(fd->kb) && (strcmp(fd->kb, "Q129140") != 0 || silent) &&
                    strcmp(fd->kb, "Q135031") != 0
                ? ""
                : " []");
    if (fd && strcmp(fd->kb, "Q197142") == 0) {
        fprintf(f, "  # the next hop closed right after EHLO, before its reply\n");
        fprintf(f, "  - {on: \"command EHLO\", connection: first, action: close}\n");
    } else if (fd && strcmp(fd->kb, "Q131150") == 0) {
        fprintf(f, "  # the next hop answered DATA %s late while mail kept arriving\n", delay);
        fprintf(f, "  - {on: \"reply 354\", connection: first, action: \"delay %s\"}\n", delay);
    } else if (fd && strcmp(fd->kb, "Q129140") == 0 && silent) {
        const char *on = strcmp(silent, "end-of-data") == 0 ? "reply 354" : silent;
        fprintf(f,
                "  # the next hop fell silent after the client's %s (frame %llu): the\n"
                "  # proxy stops reading and forwarding there, so no reply comes\n",
                silent, (unsigned long long)sframe);
        fprintf(f, "  - {on: \"%s\", connection: first, action: stall}\n", on);
    }

    /* The next hop's script. */
    fprintf(f, "mta:\n");
    long g = -1;
    for (size_t i = 0; i < c->nev && g < 0; i++)
        if (c->ev[i].kind == FG_TL_REPLY && c->ev[i].answers == FG_ANS_GREETING)
            g = (long)i;
    if (g >= 0 && c->ev[g].code == 220 && c->ev[g].text && strlen(c->ev[g].text) > 4) {
        fprintf(f, "  # its greeting\n  banner: ");
        const char *t = c->ev[g].text + 4;
        yq(f, t, strcspn(t, "\r\n"));
        fputc('\n', f);
    }
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *e = &c->ev[i];
        if (e->kind != FG_TL_REPLY || e->verb != FG_VERB_EHLO || e->code != 250 || !e->text)
            continue;
        fprintf(f, "  # the extensions it offered\n  capabilities: [");
        int n = 0;
        for (const char *const *kc = known_caps; *kc; kc++) {
            size_t kl = strlen(*kc);
            for (const char *p = e->text; (p = strstr(p, "250")); p += 3) {
                if ((p[3] == '-' || p[3] == ' ') && strncmp(p + 4, *kc, kl) == 0 &&
                    (p[4 + kl] == '\r' || p[4 + kl] == ' ' || p[4 + kl] == '\0' ||
                     p[4 + kl] == '=')) {
                    fprintf(f, "%s%s", n++ ? ", " : "", *kc);
                    break;
                }
            }
        }
        fprintf(f, "]\n");
        break;
    }
    int nst = 0;
    uint64_t cmd_us[FG_VERB__COUNT] = {0}, eod_us = 0;
    uint64_t open_us = c->nev ? c->ev[0].us : 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *e = &c->ev[i];
        if (e->kind == FG_TL_COMMAND && e->verb < FG_VERB__COUNT)
            cmd_us[e->verb] = e->us;
        if (e->kind == FG_TL_END_OF_DATA)
            eod_us = e->us;
        if (e->kind != FG_TL_REPLY)
            continue;
        const char *st = stage_of(e);
        if (!st)
            continue;
        uint64_t from = e->answers == FG_ANS_GREETING      ? open_us
                        : e->answers == FG_ANS_END_OF_DATA ? eod_us
                        : e->verb < FG_VERB__COUNT         ? cmd_us[e->verb]
                                                           : 0;
        uint64_t d = from && e->us > from ? e->us - from : 0;
        int refusal = e->code >= 400;
        int slow = d >= SLOW_US && !(skip_354_delay && e->code == 354);
        if (!refusal && !slow)
            continue;
        if (!nst)
            fprintf(f, "  stages:\n");
        fprintf(f, "    # frame %llu: %d after %.3f s\n", (unsigned long long)e->frame, e->code,
                (double)d / 1e6);
        /* The capture shows one session: later ones (a retry, a bounce to
         * the sender) find the next hop well again. */
        fprintf(f, "    - {stage: %s, connection: first", st);
        if (refusal) {
            char *r = script_reply(e);
            fprintf(f, ", reply: ");
            yq(f, r, strlen(r));
            free(r);
        }
        if (slow)
            fprintf(f, ", delay: %llums", (unsigned long long)(d / 1000));
        fprintf(f, "}\n");
        nst++;
    }
    if (!nst)
        fprintf(f, "  stages: []\n");

    fprintf(f, "expect:\n");
    if (kb) {
        fprintf(f, "  # what the KB suite expects of a gateway for %s (scenarios/kb/%s.yaml)\n",
                kb->kb, kb->scenario);
        for (size_t i = 0; kb->expect[i]; i++) {
            const char *x = kb->expect[i];
            const char *mark = strstr(x, "%DELAY%");
            if (mark)
                fprintf(f, "  - %.*s%s%s\n", (int)(mark - x), x, delay, mark + 7);
            else
                fprintf(f, "  - %s\n", x);
        }
    } else {
        fprintf(f, "  - {rule: message-fate, fate: delivered-once, within: \"timeouts.give_up + "
                   "10s\"}\n  - {rule: gateway-alive}\n");
    }
    rc = 0;
out:
    fg_timeline_free(tl);
    fg_diag_report_free(rep);
    return rc;
}

static const char usage[] =
    "usage: faultgate scenario from-pcap [-o FILE] [--conn N] TRACE\n"
    "\n"
    "Write a scenario (YAML, commented, to edit) that makes the lab's next hop do\n"
    "what TRACE shows the next hop did: its greeting, extensions, refusals and slow\n"
    "replies replayed by the fake MTA's script; silence after a command as a stall,\n"
    "a close after EHLO as a close; and the expectations of the KB symptom that\n"
    "`faultgate diagnose` finds in TRACE.\n"
    "  -o FILE    write there (default: standard output)\n"
    "  --conn N   the next hop's session is connection N of TRACE\n"
    "Exit status 0, or 2 on bad usage or an unreadable capture.\n";

int fg_cmd_scenario(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "from-pcap") != 0) {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            fputs(usage, stdout);
            return 0;
        }
        fputs(usage, stderr);
        return 2;
    }
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"conn", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct fg_sfp_opts o = {0};
    const char *out = NULL;
    int c;
    optind = 1;
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "o:c:h", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'c':
            if (fg_uint_parse(optarg, 1, UINT32_MAX, &v) != 0) {
                fprintf(stderr, "faultgate scenario: --conn takes a connection number: \"%s\"\n",
                        optarg);
                return 2;
            }
            o.conn = (unsigned)v;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        perror(out);
        return 2;
    }
    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_scenario_from_pcap(argv[optind], &o, f, err, sizeof err);
    if (out && fclose(f) != 0 && rc == 0)
        rc = fg_errf(err, sizeof err, FG_EINPUT, "%s: write failed", out);
    if (rc < 0) {
        fprintf(stderr, "faultgate scenario: %s\n", err[0] ? err : fg_strerror(rc));
        if (out)
            remove(out);
        return 2;
    }
    return 0;
}
