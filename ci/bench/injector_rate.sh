#!/usr/bin/env bash
# ci/bench/injector_rate.sh - messages per second submitted by faultgate's
# injector (`faultgate inject`) against Postfix's smtp-source, both into
# the same smtp-sink, in this run; prints both figures and their ratio
# (target >= 1.0).
# Like for like: the same number of parallel sessions, each sending its
# messages over one connection (smtp-source -d), one command at a time
# (smtp-source does not pipeline), and messages of the same size in octets
# (smtp-source adds headers to its -l body: measured first through the
# fake MTA's ledger).  The injector with --pipelining is printed as well.
# Usage:
#   ci/bench/injector_rate.sh [--full] [BUILD_DIR]
# Short mode: 20 sessions, 20000 messages of 1 KiB, best of 3; --full: 50
# sessions, 100000 messages, best of 5.  Needs smtp-source and smtp-sink
# (Debian package postfix; its service stays stopped).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sess=20 msgs=20000 reps=3 body=1024
if [ "${1:-}" = "--full" ]; then sess=50 msgs=100000 reps=5; shift; fi
bench_init "${1:-}"
SOURCE=/usr/sbin/smtp-source SINK=/usr/sbin/smtp-sink
for t in "$SOURCE" "$SINK"; do
    [ -x "$t" ] || { echo "bench: $t missing (apt-get install postfix)" >&2; exit 2; }
done

# The octets smtp-source sends for -l $body: one message into the fake MTA.
mport=$(free_port)
"$FAULTGATE" fake-mta --quiet --listen "127.0.0.1:$mport" --ledger "$WORK/size.jsonl" \
    2>"$WORK/fake-mta.log" &
mpid=$!
PIDS+=($mpid)
wait_port "$mport" >&2
timeout 30 "$SOURCE" -m 1 -l "$body" -f bench@source.test -t sink@sink.test "127.0.0.1:$mport"
size=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['size'])" \
    "$WORK/size.jsonl")
kill "$mpid"

# The sink both submit into, as fast as it goes.
sport=$(free_port)
sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody) # it refuses to run as root
"$SINK" "${sink_user[@]}" "127.0.0.1:$sport" 1024 >/dev/null &
PIDS+=($!)
wait_port "$sport" >&2

# rate CMD... - messages/s of one run of CMD (which sends $msgs messages).
rate() {
    local t0 t1
    t0=$(date +%s.%N)
    timeout 300 "$@" >"$WORK/run.out" || { cat "$WORK/run.out" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($msgs / ($t1 - $t0), 1))"
}

# Runs alternate, so that a change in the machine's load touches all alike;
# the best of each is kept.
peer=0 ours=0 piped=0 busy=0
for _ in $(seq "$reps"); do
    v=$(rate "$SOURCE" -d -s "$sess" -m "$msgs" -l "$body" -f bench@source.test \
        -t sink@sink.test "127.0.0.1:$sport")
    peer=$(python3 -c "print(max($peer, $v))")
    v=$(rate "$FAULTGATE" inject -q --to "127.0.0.1:$sport" -n "$msgs" -c "$sess" \
        --size "$size" --from bench@source.test --rcpt sink@sink.test)
    ours=$(python3 -c "print(max($ours, $v))")
    v=$(rate "$FAULTGATE" inject -q --to "127.0.0.1:$sport" -n "$msgs" -c "$sess" \
        --size "$size" --from bench@source.test --rcpt sink@sink.test --pipelining)
    piped=$(python3 -c "print(max($piped, $v))")
    v=$(rate "$FAULTGATE" inject -q --to "127.0.0.1:$sport" -n "$msgs" -c "$sess" \
        --size "$size" --from bench@source.test --rcpt sink@sink.test --busy-poll 100)
    busy=$(python3 -c "print(max($busy, $v))")
done

ratio=$(python3 -c "print(round($ours / $peer, 2))")
echo "injector: $ours msg/s; smtp-source: $peer msg/s; ratio $ratio x" \
    "($sess sessions, $msgs x $size-octet messages, best of $reps, into smtp-sink)"
echo "injector --pipelining: $piped msg/s ($(python3 -c "print(round($piped / $peer, 2))") x smtp-source)"
echo "injector --busy-poll 100: $busy msg/s ($(python3 -c "print(round($busy / $peer, 2))") x smtp-source)"
python3 -c "import sys; sys.exit(0 if $ratio >= 1.0 else 1)" ||
    echo "bench: below the 1.0 x target" >&2
