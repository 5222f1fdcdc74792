# ci/bench/lib.sh - shared helpers for the benchmarks: build the endpoint
# tool, start peers on ephemeral loopback ports, clean every child up on
# exit, print figures with their ratio to direct loopback.
# shellcheck shell=bash
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

bench_init() {
    local build=${1:-$ROOT/build}
    FAULTGATE=$build/faultgate
    [ -x "$FAULTGATE" ] || { echo "bench: $FAULTGATE not built" >&2; exit 2; }
    WORK=$(mktemp -d)
    FGSTREAM=$WORK/fgstream
    cc -O2 -o "$FGSTREAM" "$BENCH_DIR/fgstream.c" -lpthread
}

# A free loopback port (bound and released; the peer binds it next).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait (deadline 10 s) until something accepts on port $1.
wait_port() {
    python3 - "$1" <<'PY'
import socket, sys, time
end = time.monotonic() + 10
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.02)
sys.exit("bench: nothing listens on port " + sys.argv[1])
PY
}

# The start_* functions run in the calling shell (not in $(...), so that
# their children are in PIDS) and leave the port they listen on in PORT.
start_sink() {
    local out=$WORK/sink.port
    "$FGSTREAM" sink >"$out" &
    PIDS+=($!)
    for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
    PORT=$(cat "$out")
}

# faultgate's proxy with the parser on: a fault that never fires keeps
# the SMTP parser watching both directions.
start_faultgate_proxy() {
    local port
    port=$(free_port)
    "$FAULTGATE" proxy --listen "127.0.0.1:$port" --upstream "127.0.0.1:$1" \
        --fault 'command XBENCH: close' "${@:2}" >/dev/null 2>"$WORK/faultgate.log" &
    PIDS+=($!)
    FG_PID=$!
    wait_port "$port" || { cat "$WORK"/*.log >&2; exit 2; }
    PORT=$port
}

# start_faultgate_api UPSTREAM_PORT: `faultgate proxy --api` with one proxy
# created through toxiproxy's REST call (POST /proxies) and no toxic; the
# API's HTTP thread stays listening throughout.
start_faultgate_api() {
    local port api
    port=$(free_port)
    api=$(free_port)
    "$FAULTGATE" proxy --api "127.0.0.1:$api" >/dev/null 2>"$WORK/faultgate-api.log" &
    PIDS+=($!)
    FG_PID=$!
    wait_port "$api" || { cat "$WORK"/*.log >&2; exit 2; }
    curl -sS --max-time 10 -o /dev/null -X POST "http://127.0.0.1:$api/proxies" \
        -d "{\"name\": \"bench\", \"listen\": \"127.0.0.1:$port\", \"upstream\": \"127.0.0.1:$1\"}" ||
        { cat "$WORK"/*.log >&2; exit 2; }
    wait_port "$port" || { cat "$WORK"/*.log >&2; exit 2; }
    PORT=$port
}

start_socat() {
    local port
    port=$(free_port)
    socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$1" \
        >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$port" || { cat "$WORK"/*.log >&2; exit 2; }
    PORT=$port
}

# haproxy in TCP mode, splicing both ways (its fastest relay on Linux).
# start_haproxy UPSTREAM_PORT [THREADS]: haproxy as a TCP relay; by default
# it runs one thread per CPU, THREADS caps that (faultgate's proxy is one
# event loop, one thread).
start_haproxy() {
    local port cfg=$WORK/haproxy.cfg threads=
    port=$(free_port)
    [ -n "${2:-}" ] && threads="nbthread $2"
    cat >"$cfg" <<CFG
global
    maxconn 4000
    $threads
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
listen bench
    bind 127.0.0.1:$port
    server sink 127.0.0.1:$1
CFG
    haproxy -f "$cfg" -db >"$WORK/haproxy.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" || { cat "$WORK"/*.log >&2; exit 2; }
    PORT=$port
}

# report TITLE DIRECT NAME VALUE...: each figure and its ratio to direct.
report() {
    local title=$1 direct=$2
    shift 2
    echo "== $title"
    printf '  %-10s %10s  1.00 x direct\n' direct "$direct"
    while [ $# -gt 0 ]; do
        printf '  %-10s %10s  %s x direct\n' "$1" "$2" "$(python3 -c "print('%.2f' % ($2 / $direct) if $direct else 'n/a')")"
        shift 2
    done
}

# ratio_check A VA B VB: print A/B; never fails the run (speed is reported,
# not asserted).
ratio_check() {
    echo "  $1 / $3 = $(python3 -c "print('%.2f' % ($2 / $4) if $4 else 'n/a')")"
}
