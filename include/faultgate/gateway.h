/* faultgate/gateway.h - the gateway under test as a process group.
 *
 * faultgate starts the gateway from its profile in a process group of its
 * own (setsid), waits until it accepts TCP connections on its port, and at
 * the end sends SIGTERM to the whole group, then SIGKILL after the grace
 * period, and reaps it: no process of the gateway outlives the run.
 */
#ifndef FAULTGATE_GATEWAY_H
#define FAULTGATE_GATEWAY_H

#include <sys/types.h>
#include <stdint.h>
#include <uv.h>

#include "faultgate/profile.h"

struct fg_gateway;

struct fg_gateway_vars {
    int gateway_port;
    const char *upstream_host;
    int upstream_port;
    const char *x400_upstream; /* "host:port" or NULL */
    const char *workdir;       /* created by the caller */
    const char *bindir;        /* where faultgate's own programs are */
    const char *profile_dir;   /* the profile file's directory (its helper scripts) */
};

/* fg_gateway_start - spawn the profile's argv with placeholders filled;
 * stdout and stderr go to workdir/gateway.log.  ready_cb is called once:
 * status 0 when the port accepts a connection, FG_ENOTREADY when the
 * ready timeout passes first or the process exits before it is ready. */
typedef void (*fg_gateway_ready_cb)(struct fg_gateway *g, int status, void *ud);
int fg_gateway_start(uv_loop_t *loop, const struct fg_profile *p, const struct fg_gateway_vars *v,
                     fg_gateway_ready_cb ready_cb, void *ud, struct fg_gateway **out, char *err,
                     size_t errlen);

/* fg_gateway_stop - SIGTERM the group, SIGKILL after the grace period,
 * then stopped_cb once the leader is reaped and the group is gone. */
typedef void (*fg_gateway_stopped_cb)(struct fg_gateway *g, void *ud);
void fg_gateway_stop(struct fg_gateway *g, fg_gateway_stopped_cb cb, void *ud);

/* Whether the gateway process is still running; its exit status and
 * signal once it is not.  With a pidfile, once the start command exited 0
 * the gateway is the daemon the file names (reaped here when it is the
 * harness's child, hence not const). */
int fg_gateway_running(struct fg_gateway *g);
int64_t fg_gateway_exit_status(struct fg_gateway *g);
int fg_gateway_term_signal(struct fg_gateway *g);
int fg_gateway_pid(const struct fg_gateway *g);
/* fg_placeholder_fill - substitute {name} in s; unknown names are errors. */
int fg_placeholder_fill(const char *s, const struct fg_gateway_vars *v, char **out, char *err,
                        size_t errlen);
/* The same for a configuration template, whose own language may use
 * braces (Exim's ${if ...}{yes}{no}): only the known names are
 * placeholders, any other {name} is text. */
int fg_placeholder_fill_text(const char *s, const struct fg_gateway_vars *v, char **out, char *err,
                             size_t errlen);

/* Frees g; it must have stopped (stopped_cb called) or never started. */
void fg_gateway_free(struct fg_gateway *g);
/* fg_gateway_version - the first line the profile's `version:` argv prints
 * (exec'd directly, never through a shell; killed after 5 s), or NULL. */
char *fg_gateway_version(const struct fg_profile *p, const struct fg_gateway_vars *v);

/* fg_port_alloc - an unused loopback TCP port for the gateway to listen on,
 * picked below the kernel's ephemeral range (so that no bind to port 0 or
 * outgoing connection can take it before the gateway binds it), or the
 * kernel's own choice when that range leaves no room. */
int fg_port_alloc(void);
/* fg_port_range_low - the low end of the kernel's ephemeral port range
 * (net.ipv4.ip_local_port_range; 32768 when it cannot be read). */
int fg_port_range_low(void);

/* fg_proc_ppid_read - the parent of pid, from /proc/PID/stat (Linux): what
 * the subreaper's scans (the gateway's tree, a run's orphans) are built on.
 * 0, or a negative errno / FG_EINPUT when it cannot be read. */
int fg_proc_ppid_read(pid_t pid, pid_t *ppid);

#endif
