#!/usr/bin/env bash
# ci/bench/proxy_throughput.sh - one long SMTP DATA stream (MiB/s of body),
# sent directly, through faultgate's proxy (SMTP parser on, capture off),
# through `faultgate proxy --api` (a proxy made through the API, no toxic),
# through socat and through haproxy (splicing), all in this run; prints
# each figure and its ratio to direct loopback.  Usage:
#   ci/bench/proxy_throughput.sh [--full] [BUILD_DIR]
# Short mode streams 512 MiB per peer and takes the best of 3; --full
# streams 4 GiB, best of 5.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
mib=512 reps=3
if [ "${1:-}" = "--full" ]; then mib=4096 reps=5; shift; fi
bench_init "${1:-}"

start_sink
sink=$PORT
start_faultgate_proxy "$sink"
fgp=$PORT
start_faultgate_api "$sink"
fap=$PORT
start_socat "$sink"
sop=$PORT
start_haproxy "$sink"
hap=$PORT

# Rounds alternate the peers, so that a burst of load elsewhere on the
# machine hurts all of them alike; each keeps its best round.  A failed
# send (no figure) is tried once more and otherwise counts as 0.
send() {
    local v
    v=$("$FGSTREAM" send "$1" "$mib" 2>>"$WORK/send.log" || true)
    [ -n "$v" ] || v=$("$FGSTREAM" send "$1" "$mib" 2>>"$WORK/send.log" || true)
    [ -n "$v" ] || { echo "send to port $1 failed:" >&2; tail -2 "$WORK/send.log" >&2; }
    echo "${v:-0}"
}
direct=0 fg=0 fa=0 so=0 ha=0
for _ in $(seq "$reps"); do
    direct=$(python3 -c "print(max($direct, $(send "$sink")))")
    fg=$(python3 -c "print(max($fg, $(send "$fgp")))")
    fa=$(python3 -c "print(max($fa, $(send "$fap")))")
    so=$(python3 -c "print(max($so, $(send "$sop")))")
    ha=$(python3 -c "print(max($ha, $(send "$hap")))")
done
report "throughput (MiB/s, $mib MiB SMTP body, best of $reps rounds)" "$direct" \
    faultgate "$fg" fg-api "$fa" socat "$so" haproxy "$ha"
ratio_check "faultgate" "$fg" "haproxy" "$ha"
ratio_check "fg-api" "$fa" "haproxy" "$ha"
