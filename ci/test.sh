#!/usr/bin/env bash
# ci/test.sh - the test command: builds (via ci/setup.sh) and runs every
# suite in the normal build, then again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then each libFuzzer target for a bounded
# time.  Exit status is non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh --asan
bash ci/format.sh --check

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests (normal build) =="
meson test -C build --print-errorlogs --num-processes 2 || status=1
echo "== tests (ASan + UBSan build) =="
meson test -C build-asan --print-errorlogs --num-processes 2 --timeout-multiplier 3 || status=1
echo "== fuzzing (SMTP parser, X.400 codec, trace reader), bounded =="
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash ci/fuzz.sh || status=1
# Benchmarks print faultgate's figures beside their peers' from the same
# run; speed is reported, never asserted, so a missed target does not fail.
echo "== benchmarks (short) =="
bash ci/bench/run.sh build || echo "ci/test.sh: a benchmark missed its target (figures above)"
exit $status
