#!/usr/bin/env bash
# ci/bench/run.sh - run the benchmarks, each against its peer in the same
# run, each printing its figures and ratio.  Usage:
#   ci/bench/run.sh [--full] [BUILD_DIR]
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
status=0
bash "$dir/mta_rate.sh" "$@" || status=1
exit $status
