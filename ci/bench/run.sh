#!/usr/bin/env bash
# ci/bench/run.sh - run the benchmarks, each against its peer in the same
# run, each printing its figures and ratio.  Usage:
#   ci/bench/run.sh [--full] [BUILD_DIR]
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
status=0
bash "$dir/mta_rate.sh" "$@" || status=1
bash "$dir/injector_rate.sh" "$@" || status=1
bash "$dir/proxy_throughput.sh" "$@" || status=1
bash "$dir/proxy_tps.sh" "$@" || status=1
bash "$dir/proxy_idle_conns.sh" "$@" || status=1
# judge/diagnose vs tshark: 100,000 sessions (about 1.4 GB) with --full, 2,000 otherwise
full=0; build=build
for a in "$@"; do case $a in --full) full=1 ;; *) build=$a ;; esac; done
if [ $full = 1 ]; then bash "$dir/judge_speed.sh" "$build" 100000 || status=1
else bash "$dir/judge_speed.sh" "$build" 2000 || status=1; fi
# faultgate run at -j 1 and -j 8: about 2.5 minutes short, 10 full
if [ $full = 1 ]; then bash "$dir/suite_wall.sh" "$build" || status=1
else bash "$dir/suite_wall.sh" --short "$build" || status=1; fi
exit $status
