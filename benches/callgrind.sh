#!/usr/bin/env bash
# Instructions per request (callgrind), the load-independent view of the request path:
#
#   bash benches/callgrind.sh                       # the release binary of this tree
#   bash benches/callgrind.sh OLD_BIN NEW_BIN ...   # several binaries, one after the other
#
# For each binary it starts on free 127.0.0.1 ports an nginx backend answering "ok" (the app
# of benches/load.sh), a dedicated redis-server and the sidecar (threads: 1, redis store), the
# sidecar and redis-server both under `valgrind --tool=callgrind`. Per scenario (anonymous,
# session read of 5 fields, session write of one field per response) it sends WARMUP requests,
# zeroes both processes' counters, sends exactly REQUESTS requests over one kept-alive
# connection (curl), dumps the counters and prints the instructions (Ir, user space only)
# per request of the sidecar and of redis-server. Counts do not depend on what else runs on
# the machine; repeated runs agree within ≈ 1 %.
#
# Settings (environment): REQUESTS (2000), WARMUP (200), KEEP_TMP=1 (keep the callgrind dumps
# for callgrind_annotate), OUT (append the Markdown table to this file).
# Note: valgrind hides SHA-NI from the program, so SHA-256 runs its software path here
# (≈ 5k Ir per use); natively it is ≈ 20 times cheaper.
set -euo pipefail

REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COOKIE_NAME=bench_sid
LOG_TAG=callgrind
TMP_NAME=sidecar-callgrind
# shellcheck source=benches/callgrind_lib.sh
. "$ROOT/benches/callgrind_lib.sh"
REDIS=$(find_tool redis-server)
[ -n "$REDIS" ] || die "redis-server is required"

BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    (cd "$ROOT" && cargo build --release --bin session-sidecar) >&2
    BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/session-sidecar")
fi

start_backend

# REQUESTS (or WARMUP) requests over one connection: scenario count
send() {
    local url cookie=() i
    case $1 in
        anon | read) url="http://127.0.0.1:$SIDECAR_PORT/" ;;
        write) url="http://127.0.0.1:$SIDECAR_PORT/write" ;;
    esac
    case $1 in read | write) cookie=(-H "Cookie: $COOKIE") ;; esac
    : >"$TMP/curl.cfg"
    for i in $(seq 1 "$2"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$TMP/curl.cfg"; done
    curl -sf "${cookie[@]}" -K "$TMP/curl.cfg" || die "requests for $1 failed"
}

RESULTS=()
for n in "${!BINS[@]}"; do
    BIN=${BINS[$n]}
    [ -x "$BIN" ] || die "no sidecar binary at $BIN"
    rm -f "$TMP"/*.cg.*
    free_port REDIS_PORT
    free_port SIDECAR_PORT
    mkdir -p "$TMP/redis"
    valgrind --tool=callgrind --callgrind-out-file="$TMP/redis.cg.%p" \
        "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis" \
        --daemonize no --logfile "$TMP/redis/redis.log" >"$TMP/redis-valgrind.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" "redis-server"
    cat >"$TMP/sidecar.yaml" <<EOF
listen: "127.0.0.1:$SIDECAR_PORT"
upstream: "127.0.0.1:$BACKEND_PORT"
threads: 1
cookie:
  name: "$COOKIE_NAME"
  secure: false
  secrets: ["callgrind-bench-secret-0123456789abcdef"]
store:
  kind: redis
  url: "redis://127.0.0.1:$REDIS_PORT/0"
log:
  level: warn
EOF
    valgrind --tool=callgrind --callgrind-out-file="$TMP/sidecar.cg.%p" \
        "$BIN" --config "$TMP/sidecar.yaml" --upgrade-sock "$TMP/upgrade.sock" >"$TMP/sidecar.log" 2>&1 &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    wait_port "$SIDECAR_PORT" "the sidecar"
    COOKIE=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$SIDECAR_PORT/login5" | tr -d '\r' \
        | sed -n "s/^set-cookie: *\($COOKIE_NAME=[^;]*\).*/\1/Ip" | head -1)
    [ -n "$COOKIE" ] || die "no session cookie from /login5"
    case "$(curl -sf -H "Cookie: $COOKIE" "http://127.0.0.1:$SIDECAR_PORT/echo")" in
        *'"theme":"dark"'*) ;;
        *) die "the session is not read back" ;;
    esac
    row="| \`$BIN\` |"
    for s in anon read write; do
        send "$s" "$WARMUP"
        callgrind_control -z "$SIDECAR_PID" >/dev/null 2>&1
        callgrind_control -z "$REDIS_PID" >/dev/null 2>&1
        send "$s" "$REQUESTS"
        side=$(dump_ir "$SIDECAR_PID" sidecar)
        red=$(dump_ir "$REDIS_PID" redis)
        side=$(per_request "$side" "$REQUESTS")
        red=$(per_request "$red" "$REQUESTS")
        log "$(basename "$BIN") $s: sidecar $side Ir/request, redis-server $red Ir/request"
        row="$row $side | $red |"
    done
    RESULTS+=("$row")
    [ "${KEEP_TMP:-0}" = 1 ] && mkdir -p "$TMP/bin$n" && cp "$TMP"/*.cg.* "$TMP/bin$n/"
    stop_all
done

{
    echo
    echo "Instructions per request (callgrind, $REQUESTS requests per scenario over one connection, after $WARMUP warm-up requests):"
    echo
    echo "| binary | anonymous: sidecar | redis | read: sidecar | redis | write: sidecar | redis |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${RESULTS[@]}"
} | tee -a "${OUT:-/dev/null}"
