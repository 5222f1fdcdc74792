#!/usr/bin/env bash
# ci/bench/proxy_tps.sh - SMTP transactions per second, Postfix's
# smtp-source into smtp-sink: directly, through faultgate's proxy (parser
# on, capture off), through a proxy made by `faultgate proxy --api` and
# through haproxy, in this run; prints each figure and
# its ratio to direct.  Usage: ci/bench/proxy_tps.sh [--full] [BUILD_DIR]
# Short mode: 20 sessions, 20000 messages of 1 KiB, best of 3; --full:
# 50 sessions, 100000 messages, best of 5.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sess=20 msgs=20000 reps=3
if [ "${1:-}" = "--full" ]; then sess=50 msgs=100000 reps=5; shift; fi
bench_init "${1:-}"
SOURCE=/usr/sbin/smtp-source SINK=/usr/sbin/smtp-sink
for t in "$SOURCE" "$SINK"; do
    [ -x "$t" ] || { echo "bench: $t missing (apt-get install postfix)" >&2; exit 2; }
done
once() {
    local t0 t1
    t0=$(date +%s.%N)
    timeout 300 "$SOURCE" -s "$sess" -m "$msgs" -l 1024 -f bench@source.test \
        -t sink@sink.test "127.0.0.1:$1"
    t1=$(date +%s.%N)
    python3 -c "print(round($msgs / ($t1 - $t0), 1))"
}
best() {
    local b=0 v
    for _ in $(seq "$reps"); do
        v=$(once "$1")
        b=$(python3 -c "print(max($b, $v))")
    done
    echo "$b"
}
sport=$(free_port)
sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody) # smtp-sink refuses to run as root
"$SINK" "${sink_user[@]}" "127.0.0.1:$sport" 1024 >/dev/null &
PIDS+=($!)
wait_port "$sport"
direct=$(best "$sport")
# Both proxies with one thread per CPU (haproxy's default, faultgate's
# --threads 0), then both held to one thread.
start_faultgate_proxy "$sport" --threads 0
fg=$(best "$PORT")
start_haproxy "$sport"
ha=$(best "$PORT")
start_faultgate_proxy "$sport"
fg1=$(best "$PORT")
# One loop that polls without sleeping while transactions keep coming.
start_faultgate_proxy "$sport" --busy-poll 100
fg1b=$(best "$PORT")
start_haproxy "$sport" 1
ha1=$(best "$PORT")
# A proxy made through the control API (one loop, no toxic, the API's
# HTTP thread listening).
start_faultgate_api "$sport"
fga=$(best "$PORT")
report "transactions/s (smtp-source -s $sess -m $msgs -l 1024, best of $reps; $(nproc) CPUs)" \
    "$direct" faultgate "$fg" haproxy "$ha" fg-1t "$fg1" fg-1t-busy-poll "$fg1b" haproxy-1t "$ha1" \
    fg-api-1t "$fga"
ratio_check faultgate "$fg" haproxy "$ha"
ratio_check fg-1t "$fg1" haproxy-1t "$ha1"
ratio_check fg-api-1t "$fga" haproxy-1t "$ha1"
