#!/usr/bin/env bash
# ci/test.sh - the test command: builds (via ci/setup.sh) and runs every
# suite in the normal build, then again under AddressSanitizer and
# UndefinedBehaviorSanitizer, the threaded proxy's tests under
# ThreadSanitizer, then each libFuzzer target for a bounded time.  Exit status is non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh --asan
bash ci/format.sh --check
# ISODE, the real OSI stack of e2e-isode: built once (about a minute) into a
# cache outside the checkout; 77 means its source is not there (skipped).
rc=0
bash ci/isode.sh >/dev/null || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests (normal build) =="
meson test -C build --print-errorlogs --num-processes 2 || status=1
echo "== tests (ASan + UBSan build) =="
meson test -C build-asan --print-errorlogs --num-processes 2 --timeout-multiplier 3 || status=1
# The proxy's worker threads share a numbering lock, a fault log and a
# capture, and the control API's HTTP thread hands requests to the loop:
# their tests again under ThreadSanitizer (clang).
echo "== tests (ThreadSanitizer build: the proxy's threads) =="
if [ ! -f build-tsan/build.ninja ]; then
    CC=clang meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
fi
TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan --print-errorlogs --num-processes 2 \
    --timeout-multiplier 3 check_proxy check_tls_proxy e2e-fate e2e-api api-curl || status=1
# The Debian package, built from the committed tree, lint-free, and the KB
# suite run from it in a minimal Debian that has only its dependencies.
echo "== Debian package: build, lintian, install into a scratch root, KB suite =="
bash ci/deb.sh --scratch || status=1
echo "== fuzzing (SMTP parser, X.400 codec, trace reader), bounded =="
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash ci/fuzz.sh || status=1
# Benchmarks print faultgate's figures beside their peers' from the same
# run; speed is reported, never asserted, so a missed target does not fail.
echo "== benchmarks (short) =="
bash ci/bench/run.sh build || echo "ci/test.sh: a benchmark missed its target (figures above)"
exit $status
