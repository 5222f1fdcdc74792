#!/bin/sh
# exim-gateway.sh - run a private Exim (Debian's exim4-daemon-light,
# unpacked by ci/real-mtas.sh, never installed) as the gateway under test:
# the configuration faultgate made from exim.conf.in, its own spool and logs
# under WORKDIR/exim, the daemon in the foreground (-bdf) with a queue
# runner every second (-q1s), so that faultgate owns its process group.
#
# usage: exim-gateway.sh WORKDIR CONFIG
#        exim-gateway.sh --version
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$("$here/../../../ci/real-mtas.sh" exim | sed -n 's/^exim //p')
exim=$dir/usr/sbin/exim4
[ -x "$exim" ] || { echo "exim-gateway.sh: $exim not found" >&2; exit 2; }
if [ "${1:-}" = --version ]; then
    "$exim" -C /dev/null -bV 2>/dev/null | sed -n 's/^\(Exim version [^ ]*\).*/\1/p'
    exit 0
fi
[ $# -eq 2 ] || { echo "usage: $0 WORKDIR CONFIG" >&2; exit 2; }
workdir=$1 conf=$2
mkdir -p "$workdir/exim/spool" "$workdir/exim/log"
# What the template cannot know: where this Exim was unpacked.  Exim runs
# itself again for each delivery, from exim_path.
printf 'exim_path = %s\n' "$exim" >"$workdir/exim/paths.conf"
exec "$exim" -C "$conf" -bdf -q1s
