#!/usr/bin/env bash
# ci/bench/suite_wall.sh - wall time of qualification runs at -j 1 and -j 8
# in the same run, with the same seed: scenarios/rfc5321 and the whole
# bundled catalogue against refgw, and Postfix (when installed) against
# scenarios/kb.  Prints each pair's wall times and ratio, and checks that
# the two runs of a pair gave every scenario the same verdict and the same
# fault decisions (exit 1 if not).  Usage:
#   ci/bench/suite_wall.sh [--short] [BUILD_DIR]
# --short (what ci/bench/run.sh runs without --full): scenarios/kb and
# scenarios/rfc5321 against refgw only.
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$dir/lib.sh"
short=0; build=$ROOT/build
for a in "$@"; do case $a in --short) short=1 ;; --full) ;; *) build=$a ;; esac; done
bench_init "$build"
cd "$ROOT" || exit 2
SEED=20260
HI=8
status=0

# wall PROFILE J OUT SCENARIOS... - one run; prints its wall time in seconds
wall() {
    local prof=$1 j=$2 out=$3
    shift 3
    local t0 t1
    t0=$(date +%s.%N)
    "$FAULTGATE" run -q -j "$j" --seed $SEED -g "$prof" -o "$out" "$@" >"$out.log" 2>&1
    t1=$(date +%s.%N)
    python3 -c "print('%.1f' % ($t1 - $t0))"
}

# same A B - the two runs' verdicts and fault decisions, scenario by scenario
same() {
    python3 - "$1/results.json" "$2/results.json" <<'PY'
import json, sys
def load(p):
    with open(p) as f:
        d = json.load(f)
    return {s["id"]: (s["verdict"], [(x["conn"], x["fault"], x["trigger"], x["action"])
                                     for x in s["decisions"]]) for s in d["scenarios"]}
a, b = load(sys.argv[1]), load(sys.argv[2])
bad = [i for i in sorted(set(a) | set(b)) if a.get(i) != b.get(i)]
for i in bad:
    print("  differs: %s: %s vs %s" % (i, a.get(i, ("missing",))[0], b.get(i, ("missing",))[0]))
counts = {}
for v, _ in a.values():
    counts[v] = counts.get(v, 0) + 1
print("  %d scenarios, verdicts %s, %s" % (len(a), " ".join("%s=%d" % kv for kv in sorted(counts.items())),
      "identical at both -j" if not bad else "%d DIFFER" % len(bad)))
sys.exit(1 if bad else 0)
PY
}

# pair NAME PROFILE SCENARIOS... - the same run at -j 1 and at -j $HI
pair() {
    local name=$1 prof=$2
    shift 2
    local t1 th
    t1=$(wall "$prof" 1 "$WORK/$name-j1" "$@")
    th=$(wall "$prof" $HI "$WORK/$name-j$HI" "$@")
    python3 -c "print('%-28s -j 1: %7.1f s   -j $HI: %6.1f s   ratio %.1fx' % ('$name', $t1, $th, $t1 / max($th, 0.01)))"
    same "$WORK/$name-j1" "$WORK/$name-j$HI" || status=1
}

echo "== suite wall time: -j 1 vs -j $HI, seed $SEED ($(nproc) CPUs) =="
REFGW=scenarios/gateways/refgw.yaml
if [ $short = 1 ]; then
    pair "refgw kb" $REFGW scenarios/kb
    pair "refgw rfc5321" $REFGW scenarios/rfc5321
else
    pair "refgw rfc5321" $REFGW scenarios/rfc5321
    pair "refgw catalogue" $REFGW scenarios/kb scenarios/rfc5321 scenarios/security \
        scenarios/tls scenarios/x400 scenarios/fate scenarios/mta scenarios/clients
    if command -v postconf >/dev/null && [ -x /usr/sbin/postfix ]; then
        pair "postfix kb" scenarios/gateways/postfix.yaml scenarios/kb
    else
        echo "postfix kb: skipped (Postfix is not installed)"
    fi
fi
exit $status
