#!/bin/sh
# opensmtpd-gateway.sh - run a private OpenSMTPD (Debian's opensmtpd,
# unpacked by ci/real-mtas.sh, never installed) as the gateway under test,
# with the configuration faultgate made from smtpd.conf.in.  OpenSMTPD's
# queue (/var/spool/smtpd) and control socket (/var/run/smtpd.sock) are
# fixed at build time, so the instance runs in a mount namespace of its
# own (unshare -m) with a fresh tmpfs on each: its queue is private and
# goes away with it.  smtpd runs in the foreground (-d), logging to
# stderr, so that faultgate owns its process group.
#
# OpenSMTPD's retry schedule is built in (a deferred message is tried again
# 400 s after it arrived, then 1600 s, ...: scheduler backoff base 400 s),
# so, as Exim's -q1s and Postfix's queue_run_delay do, a queue run is
# asked for every second (`smtpctl schedule all`).  What stays is its
# route penalty: after a failed connection the next hop is not tried for
# 15 s (mta.c, DELAY_ROUTE_BASE).
#
# usage: opensmtpd-gateway.sh CONFIG
#        opensmtpd-gateway.sh --version
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$("$here/../../../ci/real-mtas.sh" opensmtpd | sed -n 's/^opensmtpd //p')
smtpd=$dir/usr/sbin/smtpd
[ -x "$smtpd" ] || { echo "opensmtpd-gateway.sh: $smtpd not found" >&2; exit 2; }
case ${1:-} in
--version)
    "$smtpd" -h 2>&1 | sed -n 's/^version: //p'
    exit 0
    ;;
--inside)
    # In the new mount namespace: private queue and run directories.
    conf=$2
    mount --make-rprivate / 2>/dev/null || true
    mount -t tmpfs -o mode=0755 faultgate-spool /var/spool
    mkdir -m 0711 /var/spool/smtpd
    mount -t tmpfs -o mode=0755 faultgate-run /run
    set +e
    "$smtpd" -d -f "$conf" &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; exit 0' TERM INT
    # The queue run every second, for as long as smtpd runs.
    while kill -0 $pid 2>/dev/null; do
        sleep 1
        "$dir/usr/sbin/smtpctl" schedule all >/dev/null 2>&1
    done
    wait $pid
    ;;
esac
[ $# -eq 1 ] || { echo "usage: $0 CONFIG" >&2; exit 2; }
command -v unshare >/dev/null 2>&1 || { echo "opensmtpd-gateway.sh: no unshare (util-linux)" >&2; exit 2; }
"$smtpd" -n -f "$1" >&2
exec unshare -m "$0" --inside "$1"
