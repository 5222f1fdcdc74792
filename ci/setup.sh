#!/usr/bin/env bash
# ci/setup.sh - install what a fresh Debian machine lacks, then build
# faultgate into build/ (and, with --asan, an ASan+UBSan build into
# build-asan/; with --build-only, only what building and running needs, no
# test tools).  Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# --build-only: what building and running faultgate needs (a qualification
# job, a report merge), without the test suites' tools.
build_only=0
if [ "${1:-}" = "--build-only" ]; then
    build_only=1
    shift
fi
# ci/packages.txt: the build part, then "# --- tests ---", then the rest.
if [ $build_only -eq 1 ]; then
    want=$(sed '/^# --- tests ---$/q' ci/packages.txt | grep -v '^#' | xargs)
else
    want=$(grep -v '^#' ci/packages.txt | xargs)
fi
missing=()
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "ci/setup.sh: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    # tshark asks whether non-root users may capture; the default (no) is fine.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Haraka's npm (ci/packages.txt says why it is not listed there).
if [ $build_only -eq 0 ] && ! command -v npm >/dev/null 2>&1; then
    echo "ci/setup.sh: installing nodejs npm"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
# Installed is not enough: what the tests use must work (ci/features.sh).
if [ $build_only -eq 1 ]; then
    bash ci/features.sh --build-only
else
    bash ci/features.sh
fi

build() {
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@"
    else
        meson setup --reconfigure "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir"
}

if [ $build_only -eq 1 ]; then
    build build -Dtests=disabled
    exit 0
fi
build build -Dtests=auto
if [ "${1:-}" = "--asan" ]; then
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false
fi
