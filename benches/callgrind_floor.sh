#!/usr/bin/env bash
# Instructions per anonymous request (callgrind) of a plain proxy binary, measured exactly as
# benches/callgrind.sh measures the sidecar's anonymous scenario (same nginx backend, same GET /,
# same WARMUP + REQUESTS over one kept-alive curl connection, user-space Ir after zeroing):
#
#   bash benches/callgrind_floor.sh                  # examples lean_floor and bare_proxy
#   bash benches/callgrind_floor.sh BIN ...          # each run as `BIN LISTEN UPSTREAM 1`
#
# For the sidecar's own count run benches/callgrind.sh (its "anonymous" column).
# Settings (environment): REQUESTS (2000), WARMUP (200), OUT (append the Markdown table),
# KEEP_TMP=1 (keep the callgrind dumps for callgrind_annotate).
set -euo pipefail

REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[callgrind-floor] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
find_tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

NGINX=$(find_tool nginx)
for t in valgrind callgrind_control curl; do [ -n "$(find_tool "$t")" ] || die "$t is required"; done
[ -n "$NGINX" ] || die "nginx is required"

BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    (cd "$ROOT" && cargo build --release --example lean_floor --example bare_proxy) >&2
    T=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples
    BINS=("$T/lean_floor" "$T/bare_proxy")
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/floor-callgrind.XXXXXX")
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "dumps kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! port_in_use "$p"; then printf -v "$1" '%s' "$p"; return 0; fi
    done
    die "no free port found"
}
wait_port() {
    local _
    for _ in $(seq 1 600); do port_in_use "$1" && return 0; sleep 0.1; done
    die "$2 did not start listening on 127.0.0.1:$1 (logs: $TMP)"
}

# The backend of benches/callgrind.sh (only the location the anonymous scenario uses).
free_port BACKEND_PORT
mkdir -p "$TMP/backend"
cat >"$TMP/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/backend/body;
    proxy_temp_path $TMP/backend/proxy;
    fastcgi_temp_path $TMP/backend/fastcgi;
    uwsgi_temp_path $TMP/backend/uwsgi;
    scgi_temp_path $TMP/backend/scgi;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / { return 200 "ok\n"; }
        location = /echo { return 200 "\$http_x_session\n"; }
    }
}
EOF
"$NGINX" -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf" >"$TMP/backend/stdout.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" "the nginx backend"

send() {
    local i
    : >"$TMP/curl.cfg"
    for i in $(seq 1 "$1"); do printf 'url = "http://127.0.0.1:%s/"\noutput = "/dev/null"\n' "$PROXY_PORT" >>"$TMP/curl.cfg"; done
    curl -sf -K "$TMP/curl.cfg" || die "requests failed"
}

dump_ir() {
    local before after file
    before=$(ls "$TMP"/proxy.cg.* 2>/dev/null | wc -l)
    callgrind_control -d "$1" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        after=$(ls "$TMP"/proxy.cg.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    sleep 0.3
    # shellcheck disable=SC2012 # newest dump; file names are ours
    file=$(ls -t "$TMP"/proxy.cg.* | head -1)
    awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

RESULTS=()
for BIN in "${BINS[@]}"; do
    [ -x "$BIN" ] || die "no binary at $BIN"
    [ "${KEEP_TMP:-0}" = 1 ] || rm -f "$TMP"/proxy.cg.*
    free_port PROXY_PORT
    valgrind --tool=callgrind --callgrind-out-file="$TMP/proxy.cg.%p" \
        "$BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$BACKEND_PORT" 1 >"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$PROXY_PORT" "$BIN"
    [ "$(curl -sf "http://127.0.0.1:$PROXY_PORT/echo")" = "{}" ] || die "$BIN does not send X-Session: {}"
    send "$WARMUP"
    callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
    send "$REQUESTS"
    ir=$(awk -v a="$(dump_ir "$PROXY_PID")" -v n="$REQUESTS" 'BEGIN {printf "%.1fk", a / n / 1000}')
    log "$(basename "$BIN") anonymous: $ir Ir/request"
    RESULTS+=("| \`$BIN\` | $ir |")
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
done

{
    echo
    echo "Instructions per anonymous request (callgrind, $REQUESTS requests over one connection, after $WARMUP warm-up requests):"
    echo
    echo "| binary | anonymous |"
    echo "|---|---:|"
    printf '%s\n' "${RESULTS[@]}"
} | tee -a "${OUT:-/dev/null}"
