#!/usr/bin/env bash
# ci/bench/proxy_throughput.sh - one long SMTP DATA stream (MiB/s of body),
# sent directly, through faultgate's proxy (SMTP parser on, capture off),
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
best() { # best of $reps runs through port $1
    local b=0 v
    for _ in $(seq "$reps"); do
        v=$("$FGSTREAM" send "$1" "$mib")
        b=$(python3 -c "print(max($b, $v))")
    done
    echo "$b"
}
direct=$(best "$sink")
start_faultgate_proxy "$sink"
fg=$(best "$PORT")
start_socat "$sink"
so=$(best "$PORT")
start_haproxy "$sink"
ha=$(best "$PORT")
report "throughput (MiB/s, $mib MiB SMTP body, best of $reps)" "$direct" \
    faultgate "$fg" socat "$so" haproxy "$ha"
ratio_check "faultgate" "$fg" "haproxy" "$ha"
