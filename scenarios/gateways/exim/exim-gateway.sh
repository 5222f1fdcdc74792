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
# The smtp transport runs as Debian-exim and must reach the spool: the work
# directory may sit below a private (0700) directory, so the instance
# lives in a directory of its own, kept at WORKDIR/exim (a link) while
# Exim runs, its logs copied to WORKDIR/exim-log and the rest removed
# when Exim stops.
# Instances whose script is gone (killed before it could clean up) go first.
for old in /var/tmp/faultgate-exim.*; do
    [ -f "$old/.owner" ] && ! kill -0 "$(cat "$old/.owner")" 2>/dev/null && rm -rf "$old"
done
base=$(mktemp -d /var/tmp/faultgate-exim.XXXXXX)
chmod 755 "$base"
echo $$ >"$base/.owner"
mkdir -p "$base/spool/db" "$base/log"
chown Debian-exim "$base/spool/db"
ln -sfn "$base" "$workdir/exim"
# What the template cannot know: where this Exim was unpacked (Exim runs
# itself again for each delivery, from exim_path) and the instance's
# directory, as the macro EXIM_BASE.
printf 'exim_path = %s\nEXIM_BASE = %s\n' "$exim" "$base" >"$base/paths.conf"
# Not exec: the shell stays to remove the instance once Exim is gone.
set +e
"$exim" -C "$conf" -bdf -q1s &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
wait $pid
wait $pid 2>/dev/null
cp -r "$base/log" "$workdir/exim-log" 2>/dev/null
rm -f "$workdir/exim"
# A process of the group that got the stop signal with us may still be
# writing into the instance for a moment: try again until it is gone.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    rm -rf "$base" 2>/dev/null && break
    sleep 0.2
done
