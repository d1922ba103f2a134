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
LOG_TAG=callgrind-floor
TMP_NAME=floor-callgrind
# shellcheck source=benches/callgrind_lib.sh
. "$ROOT/benches/callgrind_lib.sh"

BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    (cd "$ROOT" && cargo build --release --example lean_floor --example bare_proxy) >&2
    T=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples
    BINS=("$T/lean_floor" "$T/bare_proxy")
fi

start_backend

send() {
    local i
    : >"$TMP/curl.cfg"
    for i in $(seq 1 "$1"); do printf 'url = "http://127.0.0.1:%s/"\noutput = "/dev/null"\n' "$PROXY_PORT" >>"$TMP/curl.cfg"; done
    curl -sf -K "$TMP/curl.cfg" || die "requests failed"
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
    ir=$(per_request "$(dump_ir "$PROXY_PID" proxy)" "$REQUESTS")
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
