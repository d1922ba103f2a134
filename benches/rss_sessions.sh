#!/usr/bin/env bash
# Question: does the sidecar's memory stay small while it serves many distinct Redis sessions?
# Target: RSS under 64 MiB while serving 10 000 distinct sessions under load.
#
#   bash benches/rss_sessions.sh            # SESSIONS=10000 DURATION=10
#
# Starts on free loopback ports a dedicated redis-server, a tiny Python backend that sets 5
# fields on a new session, and the release sidecar (threads: 1); creates SESSIONS sessions,
# then replays their cookies round-robin with wrk and prints the sidecar's peak RSS (VmHWM).
# Everything it started is stopped on exit; traffic goes to 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SESSIONS=${SESSIONS:-10000}
DURATION=${DURATION:-10}
for tool in wrk redis-server python3; do
  command -v "$tool" >/dev/null || { apt-get install -y -qq wrk redis-server python3 >/dev/null; break; }
done
BIN=${SIDECAR_BIN:-$ROOT/target/release/session-sidecar}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_SIDECAR=$(port); P_APP=$(port); P_REDIS=$(port)

redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --logfile "$TMP/redis.log" &
pids+=($!)
cat > "$TMP/app.py" <<PY
import http.server, json, random
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        if json.loads(self.headers.get("X-Session", "{}")) == {}:
            self.send_header("X-Session-Set", json.dumps({"user_id": random.randint(1, 10**9),
                "name": "Alice Example", "role": "member", "cart": [3, 7, 11], "csrf": "q8Zr2mB1xT0aL5kN"}))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", $P_APP), H).serve_forever()
PY
python3 "$TMP/app.py" &
pids+=($!)
cat > "$TMP/proxy.yaml" <<YAML
listen: "127.0.0.1:$P_SIDECAR"
upstream: "127.0.0.1:$P_APP"
threads: 1
cookie: { name: bench_sid, secure: false, secrets: ["rss-bench-secret-0123456789abcdef0123"] }
store: { kind: redis, url: "redis://127.0.0.1:$P_REDIS/0" }
log: { level: warn }
YAML
"$BIN" --config "$TMP/proxy.yaml" --upgrade-sock "$TMP/upgrade.sock" &
SIDECAR=$!
pids+=($SIDECAR)
sleep 1
python3 - "$P_SIDECAR" "$SESSIONS" "$TMP/cookies.txt" <<'PY'
import http.client, concurrent.futures, sys
port, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def make(_):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    r = c.getresponse(); r.read()
    return r.getheader("Set-Cookie").split(";")[0]
with concurrent.futures.ThreadPoolExecutor(32) as ex:
    cookies = list(ex.map(make, range(n)))
open(out, "w").write("\n".join(cookies))
print(f"created {len(set(cookies))} distinct sessions")
PY
cat > "$TMP/replay.lua" <<LUA
local cookies = {}
for line in io.lines("$TMP/cookies.txt") do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", { ["Cookie"] = cookies[(i % #cookies) + 1] })
end
LUA
wrk -t2 -c64 -d"${DURATION}s" -s "$TMP/replay.lua" "http://127.0.0.1:$P_SIDECAR/" | grep -E "Requests/sec|Non-2xx|errors" || true
echo "sidecar peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$SIDECAR/status) (target < 64 MiB)"
