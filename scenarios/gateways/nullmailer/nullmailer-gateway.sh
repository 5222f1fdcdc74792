#!/bin/sh
# nullmailer-gateway.sh - run a private nullmailer (Debian's nullmailer,
# unpacked by ci/real-mtas.sh, never installed) as the gateway under test:
# nullmailer-smtpd answers each connection to 127.0.0.1:PORT (socat
# accepts them, as inetd would), nullmailer-queue stores the message and
# nullmailer-send relays it to the remotes faultgate made from
# remotes.in (the proxy).  Its directories are found through
# NULLMAILER_TEST_PREFIX (conf, queue, tmp, sbin, the protocol modules),
# all in an instance directory of its own, removed when it stops.  NAME=VALUE
# arguments become control files (pausetime=1 is conf/pausetime).
#
# usage: nullmailer-gateway.sh WORKDIR PORT REMOTES [name=value...]
#        nullmailer-gateway.sh --version
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$("$here/../../../ci/real-mtas.sh" nullmailer | sed -n 's/^nullmailer //p')
[ -x "$dir/usr/sbin/nullmailer-send" ] || { echo "nullmailer-gateway.sh: nullmailer not unpacked in $dir" >&2; exit 2; }
if [ "${1:-}" = --version ]; then
    sed -n 's/^Package: nullmailer Version: [0-9]*:*\([^ ]*\).*/nullmailer \1/p' "$dir/.versions"
    exit 0
fi
[ $# -ge 3 ] || { echo "usage: $0 WORKDIR PORT REMOTES [name=value...]" >&2; exit 2; }
workdir=$1 port=$2 remotes=$3
shift 3
command -v socat >/dev/null 2>&1 || { echo "nullmailer-gateway.sh: no socat" >&2; exit 2; }
case $port in *[!0-9]* | '') echo "nullmailer-gateway.sh: bad port '$port'" >&2; exit 2 ;; esac

# The instance directory: outside the work directory, which may sit below
# a private one.
# Instances whose script is gone (killed before it could clean up) go first.
for old in /var/tmp/faultgate-nullmailer.*; do
    [ -f "$old/.owner" ] && ! kill -0 "$(cat "$old/.owner")" 2>/dev/null && rm -rf "$old"
done
base=$(mktemp -d /var/tmp/faultgate-nullmailer.XXXXXX)
chmod 755 "$base"
echo $$ >"$base/.owner"
# The layout NULLMAILER_TEST_PREFIX expects: conf/ (with ../mailname, the
# Debian way of naming the host), queue/ holding queue/, tmp/, failed/ and
# the trigger FIFO, sbin/ and protocols/ for the programs it starts.
mkdir -p "$base/conf" "$base/queue/queue" "$base/queue/tmp" "$base/queue/failed"
# nullmailer-queue is set-user-ID mail as shipped, and then it ignores
# NULLMAILER_TEST_PREFIX: the instance has a plain copy, run by root like
# the rest of it.
mkdir "$base/sbin"
cp "$dir/usr/sbin/nullmailer-queue" "$base/sbin/nullmailer-queue"
chmod 755 "$base/sbin/nullmailer-queue"
ln -s "$dir/usr/sbin/nullmailer-send" "$base/sbin/nullmailer-send"
ln -s "$dir/usr/bin" "$base/bin"
ln -s "$dir/usr/lib/nullmailer" "$base/protocols"
mkfifo "$base/queue/trigger"
chmod 700 "$base/queue/queue" "$base/queue/tmp" "$base/queue/failed"
chmod 622 "$base/queue/trigger"
cp "$remotes" "$base/conf/remotes"
echo gateway.faultgate.test >"$base/mailname"
echo faultgate.test >"$base/conf/defaultdomain"
for kv in "$@"; do
    name=${kv%%=*}
    case $name in *[!a-z]* | '') echo "nullmailer-gateway.sh: bad control '$kv'" >&2; exit 2 ;; esac
    printf '%s\n' "${kv#*=}" >"$base/conf/$name"
done
ln -sfn "$base" "$workdir/nullmailer"
NULLMAILER_TEST_PREFIX=$base
export NULLMAILER_TEST_PREFIX

# Not exec: the shell stays to stop both and remove the instance.
set +e
"$dir/usr/sbin/nullmailer-send" &
send=$!
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "EXEC:$base/bin/nullmailer-smtpd" &
listen=$!
trap 'kill -TERM $send $listen 2>/dev/null' TERM INT
wait $listen
kill -TERM $send $listen 2>/dev/null
wait $send 2>/dev/null
wait $listen 2>/dev/null
rm -f "$workdir/nullmailer"
# A process of the group that got the stop signal with us may still be
# writing into the instance for a moment: try again until it is gone.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    rm -rf "$base" 2>/dev/null && break
    sleep 0.2
done
