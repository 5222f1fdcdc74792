#!/usr/bin/env bash
# ci/setup.sh - install what a fresh Debian machine lacks, then build
# faultgate into build/ (and, with --asan, an ASan+UBSan build into
# build-asan/).  Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(grep -v '^#' ci/packages.txt | xargs)
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
# Installed is not enough: what the tests use must work (ci/features.sh).
bash ci/features.sh

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

build build
if [ "${1:-}" = "--asan" ]; then
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false
fi
