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
log() { printf '[callgrind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
find_tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

NGINX=$(find_tool nginx)
REDIS=$(find_tool redis-server)
for t in valgrind callgrind_control curl; do [ -n "$(find_tool "$t")" ] || die "$t is required"; done
[ -n "$NGINX" ] && [ -n "$REDIS" ] || die "nginx and redis-server are required"

BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    (cd "$ROOT" && cargo build --release --bin session-sidecar) >&2
    BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/session-sidecar")
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sidecar-callgrind.XXXXXX")
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

# The app of benches/load.sh.
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
        location = /login5 {
            add_header X-Session-Set '{"user":"alice","uid":42,"admin":false,"roles":["dev"],"theme":"dark"}';
            return 200 "ok\n";
        }
        location = /write {
            add_header X-Session-Set '{"last":"\$request_id"}';
            return 200 "ok\n";
        }
        location = /echo { return 200 "\$http_x_session\n"; }
    }
}
EOF
"$NGINX" -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf" >"$TMP/backend/stdout.log" 2>&1 &
BACKEND_PID=$!
wait_port "$BACKEND_PORT" "the nginx backend"

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

# dump the counters of pid (named name) and print its total Ir since the last zeroing
dump_ir() {
    local before after
    before=$(ls "$TMP/$2".cg.* 2>/dev/null | wc -l)
    callgrind_control -d "$1" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        after=$(ls "$TMP/$2".cg.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    sleep 0.3
    local file total cron
    # shellcheck disable=SC2012 # newest dump; file names are ours
    file=$(ls -t "$TMP/$2".cg.* | head -1)
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    # Redis' serverCron runs 10 times per (valgrind-slowed) second whatever the traffic:
    # not part of the requests' cost.
    cron=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null \
        | awk '/:serverCron / {gsub(",", "", $1); print $1; exit}')
    echo $((total - ${cron:-0}))
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
        side=$(awk -v a="$side" -v n="$REQUESTS" 'BEGIN {printf "%.1fk", a / n / 1000}')
        red=$(awk -v a="$red" -v n="$REQUESTS" 'BEGIN {printf "%.1fk", a / n / 1000}')
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
kill "$BACKEND_PID" 2>/dev/null || true
wait "$BACKEND_PID" 2>/dev/null || true
