#!/usr/bin/env bash
# ci/toxiproxy_curl.sh [FAULTGATE] - toxiproxy's documented REST calls
# (curl, as in toxiproxy's README) against `faultgate proxy --api`, in
# front of `faultgate fake-mta`, with Python's smtplib as the client:
#   1. create a proxy; a plain session goes through;
#   2. latency (downstream 400 ms): the greeting arrives no sooner;
#   3. reset_peer: the session ends in ECONNRESET;
#   4. both removed: a message is delivered again;
#   5. the faultgate toxic "command EHLO: close": the peer drops the session
#      right after EHLO, the situation of KB Q197142, and the decision log
#      says so.
# Exit status 0 when every step saw what it should.  Every wait has a
# deadline; both servers are stopped on exit.
set -euo pipefail
FG=${1:-build/faultgate}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for FILE REGEX: the first match's last field (a port), 10 s at most
wait_for() {
    local end=$((SECONDS + 10))
    while ((SECONDS < end)); do
        if grep -qE "$2" "$1" 2>/dev/null; then
            grep -oE "$2" "$1" | head -1 | sed 's/.*://'
            return 0
        fi
        sleep 0.05
    done
    echo "toxiproxy_curl: no '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}

"$FG" fake-mta --listen 127.0.0.1:0 -q 2>"$tmp/mta.err" &
pids+=($!)
"$FG" proxy --api 127.0.0.1:0 --seed 1 2>"$tmp/api.err" &
api_pid=$!
pids+=($api_pid)
mta=$(wait_for "$tmp/mta.err" 'listening on [0-9.]+:[0-9]+')
api=$(wait_for "$tmp/api.err" 'api listening on [0-9.]+:[0-9]+')
A=http://127.0.0.1:$api
J=(-sS --max-time 10 -H 'Content-Type: application/json')

fail() {
    echo "toxiproxy_curl: FAIL: $*" >&2
    cat "$tmp/api.err" >&2
    exit 1
}

# smtplib session: prints "greeting_seconds outcome"
session() {
    python3 - "$1" "$2" <<'EOF'
import smtplib, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
t = time.monotonic()
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    greet = time.monotonic() - t
    s.ehlo("client.test")
    if mode == "mail":
        s.sendmail("a@company1.test", ["b@company2.test"], "Subject: t\r\n\r\nhello\r\n")
    s.quit()
    print("%.3f ok" % greet)
except ConnectionResetError:
    print("%.3f reset" % (time.monotonic() - t))
except smtplib.SMTPServerDisconnected as e:
    # smtplib wraps the socket's error: ECONNRESET is its context
    rst = isinstance(e.__context__, ConnectionResetError)
    print("%.3f %s" % (time.monotonic() - t, "reset" if rst else "disconnected"))
EOF
}

echo "== create a proxy in front of the fake MTA (POST /proxies)"
out=$(curl "${J[@]}" -w ' %{http_code}' -X POST "$A/proxies" \
    -d "{\"name\": \"smtp\", \"listen\": \"127.0.0.1:0\", \"upstream\": \"127.0.0.1:$mta\", \"enabled\": true}")
echo "$out"
[[ $out == *" 201" ]] || fail "create: $out"
port=$(curl "${J[@]}" "$A/proxies/smtp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"].rsplit(":",1)[1])')
read -r t how < <(session "$port" mail)
echo "plain session: greeting after ${t}s, $how"
[[ $how == ok ]] || fail "plain session: $how"

echo "== latency 400 ms downstream (POST /proxies/smtp/toxics)"
curl "${J[@]}" -X POST "$A/proxies/smtp/toxics" \
    -d '{"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0, "attributes": {"latency": 400, "jitter": 0}}'
echo
read -r t how < <(session "$port" ehlo)
echo "with latency: greeting after ${t}s, $how"
[[ $how == ok ]] || fail "latency session: $how"
python3 -c "import sys; sys.exit(0 if 0.39 <= $t < 2.0 else 1)" || fail "greeting after ${t}s, not ~0.4s"

echo "== reset_peer (POST /proxies/smtp/toxics)"
curl "${J[@]}" -X POST "$A/proxies/smtp/toxics" \
    -d '{"name": "reset", "type": "reset_peer", "stream": "downstream", "attributes": {"timeout": 0}}'
echo
read -r t how < <(session "$port" ehlo)
echo "with reset_peer: $how after ${t}s"
[[ $how == reset || $how == disconnected ]] || fail "reset_peer session: $how"
[[ $how == reset ]] || fail "reset_peer: the session ended without ECONNRESET ($how)"

echo "== both removed (DELETE /proxies/smtp/toxics/{toxic})"
for x in latency_downstream reset; do
    code=$(curl "${J[@]}" -o /dev/null -w '%{http_code}' -X DELETE "$A/proxies/smtp/toxics/$x")
    [[ $code == 204 ]] || fail "delete $x: $code"
done
curl "${J[@]}" "$A/proxies/smtp/toxics"
echo
read -r t how < <(session "$port" mail)
echo "after removal: greeting after ${t}s, $how"
[[ $how == ok ]] || fail "session after removal: $how"
python3 -c "import sys; sys.exit(0 if $t < 0.3 else 1)" || fail "latency still there (${t}s)"

echo "== faultgate toxic: \"command EHLO: close\" (KB Q197142: the peer drops after EHLO)"
curl "${J[@]}" -X POST "$A/proxies/smtp/toxics" \
    -d '{"name": "q197142", "type": "faultgate", "attributes": {"spec": "command EHLO: close"}}'
echo
read -r t how < <(session "$port" ehlo)
echo "with the faultgate toxic: $how after ${t}s"
[[ $how == disconnected ]] || fail "EHLO close: $how"
dec=$(curl "${J[@]}" "$A/proxies/smtp/decisions")
echo "decisions: $dec"
python3 - "$dec" <<'EOF' || fail "decision log: $dec"
import json, sys
d = [x for x in json.loads(sys.argv[1]) if x["toxic"] == "q197142"]
assert len(d) == 1 and d[0]["trigger"].startswith("command EHLO") and d[0]["action"] == "close", d
EOF
# A clean exit on SIGTERM (a sanitizer's report would make it non-zero).
kill -TERM "$api_pid"
rc=0
wait "$api_pid" || rc=$?
[[ $rc == 0 ]] || fail "faultgate proxy --api exited $rc"
echo "toxiproxy_curl: ok"
