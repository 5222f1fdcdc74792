/* api.c - the proxy's control API (faultgate/api.h): libmicrohttpd on its
 * own thread, requests answered on the caller's loop. */
#include "faultgate/api.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/fault.h"
#include "faultgate/proxy.h"
#include "faultgate/util.h"
#include "toxic.h"

#define BODY_MAX (1u << 20)
/* toxiproxy's own handler timeout is 25 s; past it the client gets 503. */
#define ANSWER_NS (25ull * 1000 * 1000 * 1000)

/* --- the hand-over between the HTTP thread and the loop ----------------- */

struct req {
    char method[8];
    char *url;
    char *body;
    size_t len;
    int browser; /* User-Agent: Mozilla/... */
    int too_big;
    /* written by the loop, read by the HTTP thread once done (under mu) */
    unsigned status;
    char *resp;
    int queued, done, abandoned;
    struct req *next;
};

struct toxic {
    char *name, *type;
    int dir; /* FG_C2S upstream, FG_S2C downstream */
    double toxicity;
    json_t *attrs;
    int fault[FG_TOXIC_FAULTS]; /* indices in the set, -1: none */
};

/* The fault set outlives every fg_proxy instance that reads it: one ref
 * for the api_proxy, one per instance until its close callback. */
struct fset {
    struct fg_fault_set fs;
    int refs;
};

struct aproxy {
    struct fg_api *api;
    char *name;
    char lhost[64], uhost[64];
    int lport, uport;
    int enabled;
    struct fg_proxy *p;
    struct fset *fs;
    struct toxic *tox;
    size_t ntox, captox;
    /* The toxic of each fault slot (kept while retired), and of each
     * decision logged so far: slots are renumbered by compaction. */
    char *slot[FG_FAULT_MAX];
    char **logname;
    size_t nnamed;
    struct aproxy *next;
};

struct fg_api {
    uv_loop_t *loop;
    struct fg_api_opts o;
    struct MHD_Daemon *mhd;
    int port;
    uv_async_t wake;
    uv_mutex_t mu;
    uv_cond_t cond;
    struct req *head, *tail;
    int stopping;
    struct aproxy *proxies;
    void (*close_cb)(void *ud);
    void *close_ud;
};

/* --- loop side: proxies ----------------------------------------------- */

static void fset_unref(struct fset *f)
{
    if (--f->refs == 0) {
        fg_fault_set_free(&f->fs);
        free(f);
    }
}

static void instance_closed(void *ud)
{
    fset_unref(ud);
}

static void instance_stop(struct aproxy *ap)
{
    if (!ap->p)
        return;
    fg_proxy_close(ap->p, instance_closed, ap->fs);
    ap->p = NULL;
}

static int instance_start(struct aproxy *ap, char *err, size_t errlen)
{
    struct fg_api *a = ap->api;
    if (a->o.pcap_path && !*a->o.capture) {
        int ports[2] = {ap->uport, ap->lport};
        if (fg_capture_open(a->loop, a->o.capture_mode, a->o.pcap_path, ports, ap->lport ? 2 : 1,
                            a->o.capture, err, errlen) < 0)
            return FG_ECAPTURE;
        if (a->o.log)
            fprintf(a->o.log, "faultgate: capturing to %s (%s)\n", a->o.pcap_path,
                    fg_capture_mode_name(fg_capture_mode(*a->o.capture)));
    }
    struct fg_capture *cap = a->o.capture ? *a->o.capture : NULL;
    struct fg_proxy_opts po = {.listen_host = ap->lhost,
                               .listen_port = ap->lport,
                               .upstream_host = ap->uhost,
                               .upstream_port = ap->uport,
                               .faults = &ap->fs->fs,
                               .capture = cap,
                               .log = ap->api->o.log,
                               .threads = 1};
    struct fg_proxy *p;
    if (fg_proxy_new(ap->api->loop, &po, &p, err, errlen) < 0)
        return FG_ENOTAVAIL;
    ap->p = p;
    ap->fs->refs++;
    ap->lport = fg_proxy_port(p);
    if (cap) {
        fg_capture_add_port(cap, ap->lport);
        fg_capture_add_port(cap, ap->uport);
    }
    return 0;
}

static struct aproxy *proxy_find(struct fg_api *a, const char *name)
{
    for (struct aproxy *ap = a->proxies; ap; ap = ap->next)
        if (strcmp(ap->name, name) == 0)
            return ap;
    return NULL;
}

/* "localhost:N", "[::]:N", ":N" (every address, as toxiproxy reads it)
 * or a numeric HOST:N; upstream names are resolved once, here. */
static int addr_parse(const char *s, int resolve, char *host, size_t hostlen, int *port)
{
    char h[256];
    if (s[0] == ':') {
        uint64_t v;
        if (fg_uint_parse(s + 1, 0, 65535, &v) != 0)
            return FG_ESYNTAX;
        snprintf(host, hostlen, "0.0.0.0");
        *port = (int)v;
        return 0;
    }
    if (fg_hostport_parse(s, h, sizeof h, port) != 0)
        return FG_ESYNTAX;
    if (strcmp(h, "localhost") == 0)
        snprintf(h, sizeof h, "127.0.0.1");
    unsigned char buf[16];
    if (inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1) {
        if (strlen(h) >= hostlen)
            return FG_ESYNTAX;
        memcpy(host, h, strlen(h) + 1);
        return 0;
    }
    if (!resolve)
        return FG_ESYNTAX;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(h, NULL, &hints, &ai) != 0 || !ai)
        return FG_ESYNTAX;
    void *src = ai->ai_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                          : (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    int ok = inet_ntop(ai->ai_family, src, host, (socklen_t)hostlen) != NULL;
    freeaddrinfo(ai);
    return ok ? 0 : FG_ESYNTAX;
}

static char *hostport_text(const char *host, int port)
{
    return strchr(host, ':') ? fg_asprintf("[%s]:%d", host, port)
                             : fg_asprintf("%s:%d", host, port);
}

static void names_catch_up(struct aproxy *ap)
{
    const struct fg_fault_set *fs = &ap->fs->fs;
    if (ap->nnamed == fs->nlog)
        return;
    ap->logname = fg_realloc(ap->logname, fs->nlog * sizeof *ap->logname);
    for (; ap->nnamed < fs->nlog; ap->nnamed++) {
        unsigned f = fs->log[ap->nnamed].fault;
        ap->logname[ap->nnamed] = f < FG_FAULT_MAX && ap->slot[f] ? fg_strdup(ap->slot[f]) : NULL;
    }
}

/* Retired faults leave their slots until no connection can hold their
 * indices: no instance is open nor closing with connections. */
static void maybe_compact(struct aproxy *ap)
{
    if (ap->fs->refs > (ap->p ? 2 : 1) || (ap->p && fg_proxy_open(ap->p) != 0))
        return;
    int map[FG_FAULT_MAX];
    names_catch_up(ap);
    size_t n = ap->fs->fs.n;
    fg_fault_set_compact(&ap->fs->fs, map);
    char *slot[FG_FAULT_MAX] = {0};
    for (size_t i = 0; i < n; i++) {
        if (map[i] >= 0)
            slot[map[i]] = ap->slot[i];
        else
            free(ap->slot[i]);
    }
    memcpy(ap->slot, slot, sizeof slot);
    for (size_t i = 0; i < ap->ntox; i++)
        for (int k = 0; k < FG_TOXIC_FAULTS; k++)
            if (ap->tox[i].fault[k] >= 0)
                ap->tox[i].fault[k] = map[ap->tox[i].fault[k]];
}

static void toxic_retire(struct aproxy *ap, struct toxic *t)
{
    for (int k = 0; k < FG_TOXIC_FAULTS; k++) {
        if (t->fault[k] >= 0)
            ap->fs->fs.faults[t->fault[k]].retired = 1;
        t->fault[k] = -1;
    }
}

static uint64_t toxic_key(const char *name, int dir)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    h = (h ^ (uint64_t)(dir + 1)) * 1099511628211ULL;
    return h ? h : 1;
}

/* Arm t's faults in the set (t->attrs set).  Returns 0, FG_ESYNTAX or
 * FG_ETOOBIG, err saying why. */
static int toxic_arm(struct aproxy *ap, struct toxic *t, char *err, size_t errlen)
{
    struct fg_fault f[FG_TOXIC_FAULTS];
    size_t n;
    int rc = fg_toxic_faults(t->type, t->dir, t->toxicity, t->attrs, toxic_key(t->name, t->dir), f,
                             &n, err, errlen);
    if (rc < 0)
        return rc;
    maybe_compact(ap);
    if (ap->fs->fs.n + n > FG_FAULT_MAX) {
        for (size_t i = 0; i < n; i++)
            fg_fault_clear(&f[i]);
        snprintf(err, errlen, "too many faults on this proxy (%d, with removed ones still in use)",
                 FG_FAULT_MAX);
        return FG_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        t->fault[i] = (int)ap->fs->fs.n;
        free(ap->slot[ap->fs->fs.n]);
        ap->slot[ap->fs->fs.n] = fg_strdup(t->name);
        fg_fault_set_add(&ap->fs->fs, &f[i]);
    }
    if (ap->p)
        fg_proxy_faults_changed(ap->p);
    return 0;
}

static void toxic_free(struct toxic *t)
{
    free(t->name);
    free(t->type);
    json_decref(t->attrs);
}

static void proxy_free(struct aproxy *ap)
{
    instance_stop(ap);
    for (size_t i = 0; i < ap->ntox; i++)
        toxic_free(&ap->tox[i]);
    free(ap->tox);
    free(ap->name);
    for (size_t i = 0; i < FG_FAULT_MAX; i++)
        free(ap->slot[i]);
    for (size_t i = 0; i < ap->nnamed; i++)
        free(ap->logname[i]);
    free(ap->logname);
    fset_unref(ap->fs);
    free(ap);
}

static void proxy_unlink(struct fg_api *a, struct aproxy *ap)
{
    for (struct aproxy **pp = &a->proxies; *pp; pp = &(*pp)->next)
        if (*pp == ap) {
            *pp = ap->next;
            return;
        }
}

static void toxics_reset(struct aproxy *ap)
{
    for (size_t i = 0; i < ap->ntox; i++) {
        toxic_retire(ap, &ap->tox[i]);
        toxic_free(&ap->tox[i]);
    }
    ap->ntox = 0;
    maybe_compact(ap);
}

/* --- loop side: JSON --------------------------------------------------- */

static json_t *toxic_json(const struct toxic *t)
{
    return json_pack("{s:s, s:s, s:s, s:f, s:O}", "name", t->name, "type", t->type, "stream",
                     t->dir == FG_C2S ? "upstream" : "downstream", "toxicity", t->toxicity,
                     "attributes", t->attrs);
}

static json_t *toxics_json(const struct aproxy *ap)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < ap->ntox; i++)
        json_array_append_new(arr, toxic_json(&ap->tox[i]));
    return arr;
}

static json_t *proxy_json(const struct aproxy *ap)
{
    char *l = hostport_text(ap->lhost, ap->lport), *u = hostport_text(ap->uhost, ap->uport);
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:o}", "name", ap->name, "listen", l, "upstream", u,
                          "enabled", ap->enabled, "toxics", toxics_json(ap));
    free(l);
    free(u);
    return o;
}

struct answer {
    unsigned status;
    json_t *body; /* NULL: empty */
};

static struct answer ok(unsigned status, json_t *body)
{
    return (struct answer){status, body};
}

static struct answer fail(unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct answer fail(unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ok(status, json_pack("{s:s, s:i}", "error", msg, "status", (int)status));
}

/* --- loop side: the handlers ------------------------------------------- */

static json_t *body_json(const struct req *r, struct answer *bad)
{
    json_error_t je;
    json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, &je);
    if (!j)
        *bad = fail(400, "bad request body: %s", je.text);
    return j;
}

/* Create one proxy from a toxiproxy proxy object. */
static struct answer proxy_create(struct fg_api *a, json_t *in, struct aproxy **made)
{
    const char *name = json_string_value(json_object_get(in, "name"));
    const char *listen = json_string_value(json_object_get(in, "listen"));
    const char *upstream = json_string_value(json_object_get(in, "upstream"));
    json_t *en = json_object_get(in, "enabled");
    if (!json_is_object(in))
        return fail(400, "bad request body: a proxy is an object");
    if (!name || !*name)
        return fail(400, "missing required field: name");
    if (!upstream || !*upstream)
        return fail(400, "missing required field: upstream");
    if (proxy_find(a, name))
        return fail(409, "proxy already exists");
    struct aproxy *ap = fg_calloc(1, sizeof *ap);
    ap->api = a;
    ap->enabled = en ? json_is_true(en) : 1;
    if (addr_parse(listen && *listen ? listen : "127.0.0.1:0", 0, ap->lhost, sizeof ap->lhost,
                   &ap->lport) != 0) {
        free(ap);
        return fail(400, "bad listen address (numeric HOST:PORT or localhost:PORT): %s", listen);
    }
    if (addr_parse(upstream, 1, ap->uhost, sizeof ap->uhost, &ap->uport) != 0) {
        free(ap);
        return fail(400, "bad upstream address: %s", upstream);
    }
    ap->name = fg_strdup(name);
    ap->fs = fg_calloc(1, sizeof *ap->fs);
    ap->fs->refs = 1;
    fg_fault_set_init(&ap->fs->fs, a->o.seed);
    char err[FG_ERRBUF_SIZE];
    if (ap->enabled && instance_start(ap, err, sizeof err) < 0) {
        proxy_free(ap);
        return fail(500, "%s", err);
    }
    ap->next = a->proxies;
    a->proxies = ap;
    *made = ap;
    return ok(201, proxy_json(ap));
}

static struct answer proxy_update(struct aproxy *ap, json_t *in)
{
    char lhost[64] = "", uhost[64] = "";
    int lport = ap->lport, uport = ap->uport;
    const char *listen = json_string_value(json_object_get(in, "listen"));
    const char *upstream = json_string_value(json_object_get(in, "upstream"));
    json_t *en = json_object_get(in, "enabled");
    snprintf(lhost, sizeof lhost, "%s", ap->lhost);
    snprintf(uhost, sizeof uhost, "%s", ap->uhost);
    if (listen && addr_parse(listen, 0, lhost, sizeof lhost, &lport) != 0)
        return fail(400, "bad listen address: %s", listen);
    if (upstream && addr_parse(upstream, 1, uhost, sizeof uhost, &uport) != 0)
        return fail(400, "bad upstream address: %s", upstream);
    int enabled = en ? json_is_true(en) : ap->enabled;
    int moved = strcmp(lhost, ap->lhost) != 0 || lport != ap->lport ||
                strcmp(uhost, ap->uhost) != 0 || uport != ap->uport;
    if (ap->p && (!enabled || moved))
        instance_stop(ap);
    snprintf(ap->lhost, sizeof ap->lhost, "%s", lhost);
    snprintf(ap->uhost, sizeof ap->uhost, "%s", uhost);
    ap->lport = lport;
    ap->uport = uport;
    ap->enabled = enabled;
    char err[FG_ERRBUF_SIZE];
    if (enabled && !ap->p && instance_start(ap, err, sizeof err) < 0) {
        ap->enabled = 0;
        return fail(500, "%s", err);
    }
    return ok(200, proxy_json(ap));
}

static struct toxic *toxic_find(struct aproxy *ap, const char *name)
{
    for (size_t i = 0; i < ap->ntox; i++)
        if (strcmp(ap->tox[i].name, name) == 0)
            return &ap->tox[i];
    return NULL;
}

static int stream_parse(json_t *v, int *dir)
{
    const char *s = json_string_value(v);
    if (!v || (s && !*s))
        return 0; /* default kept */
    if (s && strcmp(s, "upstream") == 0)
        *dir = FG_C2S;
    else if (s && strcmp(s, "downstream") == 0)
        *dir = FG_S2C;
    else
        return -1;
    return 0;
}

static struct answer toxic_add(struct aproxy *ap, json_t *in)
{
    if (!json_is_object(in))
        return fail(400, "bad request body: a toxic is an object");
    const char *type = json_string_value(json_object_get(in, "type"));
    const char *name = json_string_value(json_object_get(in, "name"));
    json_t *tv = json_object_get(in, "toxicity");
    struct toxic t = {.dir = FG_S2C, .toxicity = 1.0, .fault = {-1, -1}};
    if (!type)
        return fail(400, "invalid toxic type");
    if (stream_parse(json_object_get(in, "stream"), &t.dir) < 0)
        return fail(400, "stream was invalid, can be either upstream or downstream");
    if (tv && !json_is_number(tv))
        return fail(400, "bad request body: toxicity must be a number");
    if (tv)
        t.toxicity = json_number_value(tv);
    if (t.toxicity < 0.0 || t.toxicity > 1.0)
        return fail(400, "bad request body: toxicity must be between 0 and 1");
    char err[FG_ERRBUF_SIZE];
    t.attrs = fg_toxic_attrs(type, NULL, json_object_get(in, "attributes"), err, sizeof err);
    if (!t.attrs)
        return fail(400, "%s", err);
    t.name = name && *name
                 ? fg_strdup(name)
                 : fg_asprintf("%s_%s", type, t.dir == FG_C2S ? "upstream" : "downstream");
    if (toxic_find(ap, t.name)) {
        toxic_free(&t);
        return fail(409, "toxic already exists");
    }
    t.type = fg_strdup(type);
    int rc = toxic_arm(ap, &t, err, sizeof err);
    if (rc < 0) {
        toxic_free(&t);
        return fail(rc == FG_ETOOBIG ? 409 : 400, "%s", err);
    }
    *FG_ARRAY_PUSH(ap->tox, ap->ntox, ap->captox) = t;
    return ok(200, toxic_json(&ap->tox[ap->ntox - 1]));
}

static struct answer toxic_update(struct aproxy *ap, struct toxic *t, json_t *in)
{
    if (!json_is_object(in))
        return fail(400, "bad request body: a toxic is an object");
    json_t *tv = json_object_get(in, "toxicity");
    int dir = t->dir;
    if (stream_parse(json_object_get(in, "stream"), &dir) < 0)
        return fail(400, "stream was invalid, can be either upstream or downstream");
    if (tv && (!json_is_number(tv) || json_number_value(tv) < 0 || json_number_value(tv) > 1))
        return fail(400, "bad request body: toxicity must be between 0 and 1");
    char err[FG_ERRBUF_SIZE];
    json_t *attrs =
        fg_toxic_attrs(t->type, t->attrs, json_object_get(in, "attributes"), err, sizeof err);
    if (!attrs)
        return fail(400, "%s", err);
    struct toxic nt = *t;
    nt.attrs = attrs;
    nt.dir = dir;
    nt.toxicity = tv ? json_number_value(tv) : t->toxicity;
    toxic_retire(ap, t);
    nt.fault[0] = nt.fault[1] = -1;
    int rc = toxic_arm(ap, &nt, err, sizeof err);
    if (rc < 0) {
        json_decref(attrs);
        /* the old one stays as it was */
        toxic_arm(ap, t, err, sizeof err);
        return fail(rc == FG_ETOOBIG ? 409 : 400, "%s", err);
    }
    json_decref(t->attrs);
    *t = nt;
    return ok(200, toxic_json(t));
}

static void toxic_remove(struct aproxy *ap, struct toxic *t)
{
    toxic_retire(ap, t);
    toxic_free(t);
    size_t i = (size_t)(t - ap->tox);
    memmove(t, t + 1, (ap->ntox - i - 1) * sizeof *t);
    ap->ntox--;
    maybe_compact(ap);
}

static json_t *decisions_json(struct aproxy *ap)
{
    json_t *arr = json_array();
    const struct fg_fault_set *fs = &ap->fs->fs;
    names_catch_up(ap);
    for (size_t i = 0; i < fs->nlog; i++) {
        const struct fg_decision *d = &fs->log[i];
        const char *tn = ap->logname[i];
        json_array_append_new(arr, json_pack("{s:I, s:i, s:s?, s:s, s:s}", "t_us",
                                             (json_int_t)d->t_us, "conn", (int)d->conn, "toxic", tn,
                                             "trigger", d->trigger, "action", d->action));
    }
    return arr;
}

static struct answer populate(struct fg_api *a, json_t *in)
{
    json_t *list = json_is_array(in) ? in : json_object_get(in, "proxies");
    if (!json_is_array(list))
        return fail(400, "bad request body: expected a list of proxies");
    json_t *made = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        struct aproxy *old = name ? proxy_find(a, name) : NULL;
        if (old) { /* replaced, as toxiproxy does */
            proxy_unlink(a, old);
            proxy_free(old);
        }
        struct aproxy *ap = NULL;
        struct answer r = proxy_create(a, v, &ap);
        if (r.status != 201) {
            json_object_set_new(r.body, "proxies", made);
            return r;
        }
        json_decref(r.body);
        json_array_append_new(made, proxy_json(ap));
    }
    return ok(201, json_pack("{s:o}", "proxies", made));
}

static struct answer route(struct fg_api *a, const struct req *r)
{
    if (r->browser)
        return fail(403, "User agent not allowed");
    if (r->too_big)
        return fail(413, "request body too large");
    const char *m = r->method;
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0, patch = strcmp(m, "PATCH") == 0,
        del = strcmp(m, "DELETE") == 0;
    char path[512];
    snprintf(path, sizeof path, "%s", r->url);
    size_t pl = strlen(path);
    while (pl > 1 && path[pl - 1] == '/')
        path[--pl] = '\0';
    char *seg[5] = {0};
    int nseg = 0;
    for (char *save = NULL, *s = strtok_r(path, "/", &save); s && nseg < 5;
         s = strtok_r(NULL, "/", &save))
        seg[nseg++] = s;
    struct answer bad = {0};
    json_t *in = NULL;
    if (nseg == 1 && strcmp(seg[0], "version") == 0 && get)
        return ok(200, json_pack("{s:s}", "version", FG_VERSION));
    if (nseg == 1 && strcmp(seg[0], "reset") == 0 && post) {
        for (struct aproxy *ap = a->proxies; ap; ap = ap->next) {
            toxics_reset(ap);
            char err[FG_ERRBUF_SIZE];
            if (!ap->p && instance_start(ap, err, sizeof err) < 0)
                return fail(500, "%s", err);
            ap->enabled = 1;
        }
        return ok(204, NULL);
    }
    if (nseg == 1 && strcmp(seg[0], "populate") == 0 && post) {
        if (!(in = body_json(r, &bad)))
            return bad;
        struct answer res = populate(a, in);
        json_decref(in);
        return res;
    }
    if (nseg < 1 || strcmp(seg[0], "proxies") != 0)
        return fail(404, "404 page not found");
    if (nseg == 1 && get) {
        json_t *o = json_object();
        for (struct aproxy *ap = a->proxies; ap; ap = ap->next)
            json_object_set_new(o, ap->name, proxy_json(ap));
        return ok(200, o);
    }
    if (nseg == 1 && post) {
        if (!(in = body_json(r, &bad)))
            return bad;
        struct aproxy *ap;
        struct answer res = proxy_create(a, in, &ap);
        json_decref(in);
        return res;
    }
    if (nseg == 1)
        return fail(405, "method not allowed");
    struct aproxy *ap = proxy_find(a, seg[1]);
    if (!ap)
        return fail(404, "proxy not found");
    if (nseg == 2) {
        if (get)
            return ok(200, proxy_json(ap));
        if (del) {
            proxy_unlink(a, ap);
            proxy_free(ap);
            return ok(204, NULL);
        }
        if (post || patch) {
            if (!(in = body_json(r, &bad)))
                return bad;
            struct answer res = proxy_update(ap, in);
            json_decref(in);
            return res;
        }
        return fail(405, "method not allowed");
    }
    if (nseg == 3 && strcmp(seg[2], "decisions") == 0 && get)
        return ok(200, decisions_json(ap));
    if (strcmp(seg[2], "toxics") != 0 || nseg > 4)
        return fail(404, "404 page not found");
    if (nseg == 3) {
        if (get)
            return ok(200, toxics_json(ap));
        if (!post)
            return fail(405, "method not allowed");
        if (!(in = body_json(r, &bad)))
            return bad;
        struct answer res = toxic_add(ap, in);
        json_decref(in);
        return res;
    }
    struct toxic *t = toxic_find(ap, seg[3]);
    if (!t)
        return fail(404, "toxic not found");
    if (get)
        return ok(200, toxic_json(t));
    if (del) {
        toxic_remove(ap, t);
        return ok(204, NULL);
    }
    if (!post && !patch)
        return fail(405, "method not allowed");
    if (!(in = body_json(r, &bad)))
        return bad;
    struct answer res = toxic_update(ap, t, in);
    json_decref(in);
    return res;
}

static void req_free(struct req *r)
{
    free(r->url);
    free(r->body);
    free(r->resp);
    free(r);
}

static void on_wake(uv_async_t *h)
{
    struct fg_api *a = h->data;
    for (;;) {
        uv_mutex_lock(&a->mu);
        struct req *r = a->head;
        if (r) {
            a->head = r->next;
            if (!a->head)
                a->tail = NULL;
            r->queued = 0;
        }
        int gone = r && r->abandoned;
        uv_mutex_unlock(&a->mu);
        if (!r)
            return;
        if (gone) {
            req_free(r);
            continue;
        }
        struct answer ans = route(a, r);
        char *text = ans.body ? json_dumps(ans.body, JSON_COMPACT) : NULL;
        json_decref(ans.body);
        if (a->o.log && ans.status >= 400)
            fprintf(a->o.log, "faultgate: api %s %s -> %u %s\n", r->method, r->url, ans.status,
                    text ? text : "");
        uv_mutex_lock(&a->mu);
        r->status = ans.status;
        r->resp = text;
        r->done = 1;
        gone = r->abandoned;
        uv_cond_broadcast(&a->cond);
        uv_mutex_unlock(&a->mu);
        if (gone)
            req_free(r);
    }
}

/* --- HTTP thread ------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *con, unsigned status, const char *text)
{
    size_t n = text ? strlen(text) : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, (void *)(text ? text : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (n)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result rc = MHD_queue_response(con, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct fg_api *a = cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        r = fg_calloc(1, sizeof *r);
        snprintf(r->method, sizeof r->method, "%s", method);
        r->url = fg_strdup(url);
        const char *ua = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "User-Agent");
        r->browser = ua && strncmp(ua, "Mozilla/", 8) == 0;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->len + *upload_size > BODY_MAX) {
            r->too_big = 1;
        } else {
            r->body = fg_realloc(r->body, r->len + *upload_size + 1);
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    uv_mutex_lock(&a->mu);
    if (a->stopping) {
        uv_mutex_unlock(&a->mu);
        return send_text(con, 503, "{\"error\":\"shutting down\",\"status\":503}");
    }
    r->queued = 1;
    if (a->tail)
        a->tail->next = r;
    else
        a->head = r;
    a->tail = r;
    uv_async_send(&a->wake);
    uint64_t start = uv_hrtime();
    while (!r->done && !a->stopping) {
        uint64_t el = uv_hrtime() - start;
        if (el >= ANSWER_NS || uv_cond_timedwait(&a->cond, &a->mu, ANSWER_NS - el) != 0)
            break;
    }
    if (!r->done) {
        /* The loop frees it: from the queue, or once it has answered. */
        r->abandoned = 1;
        *con_cls = NULL;
        uv_mutex_unlock(&a->mu);
        return send_text(con, 503, "{\"error\":\"no answer in time\",\"status\":503}");
    }
    uv_mutex_unlock(&a->mu);
    return send_text(con, r->status, r->resp);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con;
    (void)toe;
    struct req *r = *con_cls;
    if (r)
        req_free(r); /* done, or never queued */
    *con_cls = NULL;
}

/* --- life -------------------------------------------------------------- */

int fg_api_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int fg_api_new(uv_loop_t *loop, const struct fg_api_opts *o, struct fg_api **out, char *err,
               size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* epoll where there is one: the proxy's own connections may push the
     * API's sockets past select's FD_SETSIZE. */
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss) != 0) {
            fg_errf(err, errlen, FG_ESYNTAX, "--api wants a numeric address, not %s", o->host);
            return FG_ESYNTAX;
        }
        flags |= MHD_USE_IPv6;
    }
    struct fg_api *a = fg_calloc(1, sizeof *a);
    a->loop = loop;
    a->o = *o;
    uv_mutex_init(&a->mu);
    uv_cond_init(&a->cond);
    uv_async_init(loop, &a->wake, on_wake);
    a->wake.data = a;
    a->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR, &ss,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                              MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!a->mhd) {
        fg_errf(err, errlen, FG_ENOTAVAIL, "the API cannot listen on %s port %d", o->host, o->port);
        a->stopping = 1;
        fg_api_close(a, NULL, NULL);
        return FG_ENOTAVAIL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage b;
    socklen_t bl = sizeof b;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&b, &bl) == 0)
        a->port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                                : ((struct sockaddr_in *)&b)->sin_port);
    *out = a;
    return 0;
}

int fg_api_port(const struct fg_api *a)
{
    return a->port;
}

static void api_closed(uv_handle_t *h)
{
    struct fg_api *a = h->data;
    void (*cb)(void *) = a->close_cb;
    void *ud = a->close_ud;
    uv_cond_destroy(&a->cond);
    uv_mutex_destroy(&a->mu);
    free(a);
    if (cb)
        cb(ud);
}

void fg_api_close(struct fg_api *a, void (*cb)(void *ud), void *ud)
{
    uv_mutex_lock(&a->mu);
    a->stopping = 1;
    uv_cond_broadcast(&a->cond);
    uv_mutex_unlock(&a->mu);
    /* Joins the HTTP thread: its waiting handlers saw stopping. */
    if (a->mhd)
        MHD_stop_daemon(a->mhd);
    a->mhd = NULL;
    while (a->head) {
        struct req *r = a->head;
        a->head = r->next;
        req_free(r); /* abandoned by now */
    }
    a->tail = NULL;
    while (a->proxies) {
        struct aproxy *ap = a->proxies;
        a->proxies = ap->next;
        proxy_free(ap);
    }
    a->close_cb = cb;
    a->close_ud = ud;
    uv_close((uv_handle_t *)&a->wake, api_closed);
}
