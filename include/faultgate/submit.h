/* faultgate/submit.h - a real SMTP client as the system under test: its
 * command run once per message, pointed at the proxy.
 *
 * A client (msmtp, swaks, smtplib, smtp-source) has no inbound side, so
 * instead of injecting mail into a gateway faultgate runs the client's
 * command for each message, in a process group of its own, with the
 * message on its standard input or in a file, and records how the client
 * ended: exit status, signal, duration, the tail of its standard error,
 * and whether faultgate had to kill it at its deadline.
 *
 * Placeholders in the command and its environment values: {from}, {to}
 * (an argv element that is exactly "{to}" becomes one word per recipient;
 * inside a longer word the recipients are joined by commas), {token},
 * {message_file}, and the gateway placeholders of gateway.h ({upstream},
 * {upstream_host}, {upstream_port}, {workdir}, {bindir}, {profile_dir}).
 */
#ifndef FAULTGATE_SUBMIT_H
#define FAULTGATE_SUBMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "faultgate/gateway.h"
#include "faultgate/smtp.h"

#define FG_SUBMIT_TAIL 512

/* One message for the client.  Strings are copied by fg_submit_start. */
struct fg_submit_msg {
    const char *token;
    const char *from;
    const char *const *to;
    size_t nto;
    const char *text; /* the message (headers and body, CRLF) */
    size_t len;
};

struct fg_submit_result {
    char token[FG_TOKEN_MAX];
    int spawned;         /* 0: the command could not be started (spawn_error) */
    int spawn_error;     /* UV_* when not spawned */
    int64_t exit_status; /* when it exited */
    int term_signal;     /* when a signal ended it (SIGKILL after a timeout) */
    int timed_out;       /* faultgate killed it: its deadline passed, or the
                            run ended (fg_submit_close) before it did */
    uint64_t start_us;   /* wall clock at the spawn */
    uint64_t duration_ms;
    char stderr_tail[FG_SUBMIT_TAIL]; /* the last octets of its stderr */
};

struct fg_submit_opts {
    char *const *argv; /* the profile's submit.command, placeholders unfilled */
    size_t nargv;
    char *const *env; /* "NAME=value", placeholders allowed; added to ours */
    size_t nenv;
    int stdin_message;   /* 1: the message on stdin; 0: /dev/null */
    uint64_t timeout_ms; /* then SIGKILL to the group; 0: 30 s */
    const struct fg_gateway_vars *vars;
    const char *message_file; /* where the message is written ({message_file}) */
    const char *log_path;     /* stdout and stderr appended here; NULL: none */
};

struct fg_submit;

/* done_cb once the process was reaped, its group killed and its stderr
 * drained (at most 1 s after the exit).  The result stays valid until
 * fg_submit_close. */
typedef void (*fg_submit_done_cb)(struct fg_submit *s, const struct fg_submit_result *res,
                                  void *ud);

/* fg_submit_start - write the message file, fill the placeholders and
 * spawn.  0 and *out, or a negative error with err (FG_EINPUT: a bad
 * placeholder; UV_*: the message file).  A command that cannot be spawned
 * (not found) is not an error here: done_cb reports it with spawned 0. */
int fg_submit_start(uv_loop_t *loop, const struct fg_submit_opts *o, const struct fg_submit_msg *m,
                    fg_submit_done_cb cb, void *ud, struct fg_submit **out, char *err,
                    size_t errlen);

/* Whether the command is still running. */
int fg_submit_running(const struct fg_submit *s);

/* fg_submit_kill - SIGKILL the group if the command still runs (the
 * result then says timed_out); done_cb follows as for any end. */
void fg_submit_kill(struct fg_submit *s);

/* fg_submit_close - kill the group if it still runs (the result then says
 * timed_out), reap it, close every handle, free s and call cb.  done_cb
 * is not called after this. */
void fg_submit_close(struct fg_submit *s, void (*cb)(void *ud), void *ud);

/* fg_submit_fill - one argv element or env value with the placeholders
 * filled; "{to}" alone is not handled here (see above).  Caller frees. */
int fg_submit_fill(const char *s, const struct fg_submit_msg *m, const char *message_file,
                   const struct fg_gateway_vars *v, char **out, char *err, size_t errlen);

#endif
