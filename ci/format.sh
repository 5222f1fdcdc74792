#!/usr/bin/env bash
# ci/format.sh - run clang-format over the C sources; with --check, only
# report files that differ (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find harness fakes include -name '*.[ch]')
if ! command -v clang-format >/dev/null; then
    echo "ci/format.sh: clang-format not installed; skipped"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    bad=0
    for f in $files; do
        if ! clang-format "$f" | cmp -s - "$f"; then
            echo "not formatted: $f (run ci/format.sh)"
            bad=1
        fi
    done
    exit $bad
fi
clang-format -i $files
