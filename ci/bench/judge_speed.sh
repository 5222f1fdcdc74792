#!/bin/sh
# judge_speed.sh - the analyzer against tshark over the same large capture.
#
# usage: ci/bench/judge_speed.sh [--full|--small] [BUILD_DIR] [SESSIONS] [BODY_OCTETS]
#   default: build, 100000 sessions, 10240-octet bodies (a capture of about
#   1.4 GB, the same as --full, which may come anywhere in the arguments);
#   --small: many small sessions, where the per-frame and per-connection
#   costs show: 20000 sessions of about 2.5 KB (800-octet bodies, about
#   65 MB) plus one KB Q129140 hang, which diagnose must find (and nothing
#   else); `ci/bench/judge_speed.sh build 2000` is the short CI version.
#
# Generates the capture with gen_trace (built by meson), then times, over
# that same file: `faultgate diagnose`, `faultgate judge` (a run embedded
# in the capture, judged among the background traffic) and
# `tshark -r FILE -Y smtp`.  Prints wall time, peak RSS and the ratio of
# tshark's time to each.  Exit status 1 if tshark is missing or a tool
# failed; the ratios are reported, not asserted (the target is >= 50x).
set -eu
# --full (anywhere) is the default size; drop it from the arguments.
n=$#
small=
while [ "$n" -gt 0 ]; do
    a=$1
    shift
    case $a in
    --full) ;;
    --small) small=1 ;;
    *) set -- "$@" "$a" ;;
    esac
    n=$((n - 1))
done
build=${1:-build}
if [ -n "$small" ]; then
    sessions=${2:-20000}
    body=${3:-800}
else
    sessions=${2:-100000}
    body=${3:-10240}
fi
here=$(cd "$(dirname "$0")" && pwd)
fg="$build/faultgate"
gen="$build/gen_trace"
for f in "$fg" "$gen"; do
    [ -x "$f" ] || { echo "judge_speed: $f not built (meson compile -C $build)" >&2; exit 1; }
done
command -v tshark >/dev/null || { echo "judge_speed: tshark not installed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "judge_speed: /usr/bin/time not installed" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/fg-judge-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

"$gen" "$dir/bench.pcap" "$sessions" "$body" ${small:+hang}
size=$(stat -c %s "$dir/bench.pcap")
cat > "$dir/bench.yaml" <<'YAML'
id: bench
title: one message through a run embedded in a large capture
leg: outbound
messages:
  - {size: 10k}
expect:
  - {rule: message-fate, fate: delivered-once, within: 60s}
YAML

# Warm the page cache once so every tool reads from memory alike.
cat "$dir/bench.pcap" > /dev/null

# run NAME CMD...: wall seconds and peak RSS (kB) into $dir/NAME.{s,kb}
run() {
    name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$dir/$name.time" "$@" > "$dir/$name.out" 2> "$dir/$name.err" || {
        st=$?
        # diagnose and judge exit 1 when they find something
        if [ "$name" = tshark ] || [ $st -gt 1 ]; then
            echo "judge_speed: $name failed ($st):" >&2
            cat "$dir/$name.err" >&2
            exit 1
        fi
    }
    tail -n 1 "$dir/$name.time" > "$dir/$name.t"
}
run diagnose "$fg" diagnose "$dir/bench.pcap"
run judge "$fg" judge -s "$dir/bench.yaml" -o "$dir/out" "$dir/bench.pcap"
run tshark tshark -r "$dir/bench.pcap" -Y smtp

if [ -n "$small" ]; then
    { grep -q "^Q129140 " "$dir/diagnose.out" && grep -q "^1 finding" "$dir/diagnose.out"; } ||
        { echo "judge_speed: diagnose did not find the one Q129140 hang alone:" >&2; cat "$dir/diagnose.out" >&2; exit 1; }
else
    grep -q "no knowledge-base symptom found" "$dir/diagnose.out" ||
        { echo "judge_speed: diagnose found symptoms in a healthy capture:" >&2; cat "$dir/diagnose.out" >&2; exit 1; }
fi
grep -qi "pass" "$dir/judge.out" ||
    { echo "judge_speed: judge did not pass the embedded run:" >&2; cat "$dir/judge.out" "$dir/judge.err" >&2; exit 1; }
tlines=$(wc -l < "$dir/tshark.out")
awk -v size="$size" -v sessions="$sessions" -v tl="$tlines" \
    -v d="$(cat "$dir/diagnose.t")" -v j="$(cat "$dir/judge.t")" -v t="$(cat "$dir/tshark.t")" '
BEGIN {
    split(d, D, " "); split(j, J, " "); split(t, T, " ");
    printf "capture: %.2f GB, %d SMTP sessions (tshark -Y smtp: %d packets)\n", size / 1e9, sessions, tl;
    printf "%-22s %9s %12s %8s\n", "tool", "wall s", "peak RSS MB", "ratio";
    printf "%-22s %9.2f %12.1f %8s\n", "tshark -Y smtp", T[1], T[2] / 1024, "1.0x";
    printf "%-22s %9.2f %12.1f %7.1fx\n", "faultgate diagnose", D[1], D[2] / 1024, (D[1] > 0 ? T[1] / D[1] : 0);
    printf "%-22s %9.2f %12.1f %7.1fx\n", "faultgate judge", J[1], J[2] / 1024, (J[1] > 0 ? T[1] / J[1] : 0);
}'
