#!/usr/bin/env bash
# ci/fuzz.sh - build the libFuzzer targets with clang into build-fuzz and
# run each for a bounded time (default 60 s each; FUZZ_SECONDS overrides)
# from its seed corpus.  New inputs go to a scratch directory, not into
# the repository.  Exit status is non-zero if a target crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=disabled -Db_sanitize=address \
        -Db_lundef=false -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C build-fuzz $(sed -n "s/^ *\['\(fuzz_[a-z0-9_]*\)'.*/fuzz\/\1/p" fuzz/meson.build)
status=0
for t in $(sed -n "s/^ *\['\(fuzz_[a-z0-9_]*\)'.*/\1/p" fuzz/meson.build); do
    name=${t#fuzz_}
    scratch=$(mktemp -d)
    echo "== $t: ${secs}s"
    build-fuzz/fuzz/$t -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="build-fuzz/$t-" "$scratch" "fuzz/corpus/$name" || status=1
    rm -rf "$scratch"
done
exit $status
