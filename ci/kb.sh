#!/usr/bin/env bash
# ci/kb.sh - the main job: set up (what building and running needs, not the
# test tools), build, and run the KB suite against the bundled reference
# gateway (refgw, correct mode).  Extra arguments go to
# `faultgate run` (e.g. -g scenarios/gateways/refgw-no-data-timeout.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh --build-only
exec ./build/faultgate run -g scenarios/gateways/refgw.yaml "$@" scenarios/kb
