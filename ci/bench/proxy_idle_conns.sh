#!/usr/bin/env bash
# ci/bench/proxy_idle_conns.sh - resident memory of faultgate's proxy
# (faults armed, so the parser is on) holding N idle connections (default
# 10000; target <= 64 MB), and of the proxy while a client floods a server
# that never reads (target: bounded, near the high-water mark).
# Usage: ci/bench/proxy_idle_conns.sh [--full] [BUILD_DIR]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=10000
if [ "${1:-}" = "--full" ]; then shift; fi
bench_init "${1:-}"
# The proxy needs two descriptors per connection: raise the limit, and
# when the hard limit does not allow 10,000, measure as many as it allows
# and project the figure from the per-connection cost.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
[ $((2 * n + 256)) -gt "$hard" ] && n=$(((hard - 256) / 2))
ulimit -n "$hard"

# A silent upstream: accepts and holds every connection, never reads.
hold_port=$(free_port)
python3 - "$hold_port" "$WORK/held" <<'PY' &
import resource, socket, sys
_, h = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)
    if len(held) % 100 == 0 or len(held) > 9800:
        open(sys.argv[2], "w").write(str(len(held)))
PY
PIDS+=($!)
wait_port "$hold_port"
start_faultgate_proxy "$hold_port"
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status"; }
base=$(rss "$FG_PID")
fifo=$WORK/hold
mkfifo "$fifo"
"$FGSTREAM" idle "$PORT" "$n" <"$fifo" >"$WORK/idle.out" &
PIDS+=($!)
exec 7>"$fifo"
# The holder rewrites the count in place: an empty read counts as 0.
held_now() {
    local v
    v=$(cat "$WORK/held" 2>/dev/null || true)
    echo "${v:-0}"
}
for _ in $(seq 600); do
    [ "$(held_now)" -ge "$n" ] && break
    sleep 0.1
done
held=$(held_now)
idle=$(rss "$FG_PID")
echo "== memory"
echo "  idle: $held connections through the proxy: RSS $idle MB (at start $base MB; target <= 64 MB)"
if [ "$held" -gt 0 ] && [ "$held" -lt 10000 ]; then
    echo "  projected for 10000: $(python3 -c "print(round($base + ($idle - $base) * 10000 / $held, 1))") MB (RLIMIT_NOFILE hard limit $hard)"
fi
exec 7>&-

# Flood: one client writes 1 GiB towards a server that never reads.
python3 - "$PORT" <<'PY' &
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.settimeout(5)
buf = b"x" * 65536
try:
    for _ in range(16384):
        c.sendall(buf)
except OSError:
    pass
PY
flood=$!
PIDS+=($flood)
peak=0
for _ in $(seq 30); do
    r=$(rss "$FG_PID"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.1
done
echo "  flood into a server that does not read: proxy RSS peak $peak MB over 3 s (bounded by backpressure)"
