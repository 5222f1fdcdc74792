#!/usr/bin/env bash
# ci/bench/mta_rate.sh - messages per second accepted by `faultgate
# fake-mta` with its ledger on (JSON line, SHA-256 per message), under
# Postfix's smtp-source load, against Postfix's smtp-sink under the same
# load, in this run; prints both figures and their ratio (target >= 1.0).
# faultgate runs twice: as it starts by default, and with --busy-poll 100
# (its loop polls without sleeping while requests keep coming: lower
# latency for a CPU's worth; idle, it sleeps as usual).
# Usage:
#   ci/bench/mta_rate.sh [--full] [BUILD_DIR]
# Short mode: 20 sessions, 20000 messages of 1 KiB, best of 3; --full:
# 50 sessions, 100000 messages, best of 5.  Needs smtp-source and smtp-sink
# (Debian package postfix; its service stays stopped).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sess=20 msgs=20000 reps=3
if [ "${1:-}" = "--full" ]; then sess=50 msgs=100000 reps=5; shift; fi
bench_init "${1:-}"
SOURCE=/usr/sbin/smtp-source SINK=/usr/sbin/smtp-sink
for t in "$SOURCE" "$SINK"; do
    [ -x "$t" ] || { echo "bench: $t missing (apt-get install postfix)" >&2; exit 2; }
done

# once PORT - messages/s of one smtp-source run into PORT.
once() {
    local t0 t1
    t0=$(date +%s.%N)
    timeout 300 "$SOURCE" -s "$sess" -m "$msgs" -l 1024 -f bench@source.test \
        -t sink@sink.test "127.0.0.1:$1"
    t1=$(date +%s.%N)
    python3 -c "print(round($msgs / ($t1 - $t0), 1))"
}

# smtp-sink: the peer, as fast as it goes (no dump to disk, no counters).
sport=$(free_port)
sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody) # it refuses to run as root
"$SINK" "${sink_user[@]}" "127.0.0.1:$sport" 1024 >/dev/null &
PIDS+=($!)
wait_port "$sport" >&2

# faultgate's fake MTA with the ledger on, its log off.
fport=$(free_port)
"$FAULTGATE" fake-mta --quiet --listen "127.0.0.1:$fport" --ledger "$WORK/ledger.jsonl" \
    2>"$WORK/fake-mta.log" &
PIDS+=($!)
wait_port "$fport" >&2
bport=$(free_port)
"$FAULTGATE" fake-mta --quiet --busy-poll 100 --listen "127.0.0.1:$bport" \
    --ledger "$WORK/ledger-bp.jsonl" 2>"$WORK/fake-mta-bp.log" &
PIDS+=($!)
wait_port "$bport" >&2

# Runs alternate between the two, so that a change in the machine's load
# during the run touches both alike; the best of each is kept.
peer=0 ours=0 busy=0
for _ in $(seq "$reps"); do
    v=$(once "$sport")
    peer=$(python3 -c "print(max($peer, $v))")
    v=$(once "$fport")
    ours=$(python3 -c "print(max($ours, $v))")
    v=$(once "$bport")
    busy=$(python3 -c "print(max($busy, $v))")
done
expect=$((msgs * reps))
for l in ledger ledger-bp; do
    lines=$(grep -c '"event":"message"' "$WORK/$l.jsonl" || true)
    [ "$lines" -ge "$expect" ] || { echo "bench: $l has $lines messages, want $expect" >&2; exit 1; }
done

ratio=$(python3 -c "print(round($ours / $peer, 2))")
bratio=$(python3 -c "print(round($busy / $peer, 2))")
echo "fake-mta (ledger on): $ours msg/s; smtp-sink: $peer msg/s; ratio $ratio x" \
    "($sess sessions, $msgs x 1 KiB messages, best of $reps, smtp-source load)"
echo "fake-mta --busy-poll 100 (ledger on): $busy msg/s; ratio $bratio x smtp-sink"
python3 -c "import sys; sys.exit(0 if max($ratio, $bratio) >= 1.0 else 1)" ||
    echo "bench: below the 1.0 x target" >&2
