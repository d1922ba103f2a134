#!/usr/bin/env bash
# End-to-end load benchmark: what does the sidecar cost compared with a bare nginx proxy hop?
#
#   bash benches/load.sh
#
# On a fresh Debian machine it installs what is missing (wrk, nginx, redis-server, cmake, via
# apt-get), builds the sidecar (`cargo build --release`), then starts on 127.0.0.1, on free
# high ports:
#   - a tiny nginx backend (worker_processes 1) answering "ok",
#   - nginx as a proxy_pass reverse proxy with upstream keepalive (worker_processes 1),
#   - a dedicated redis-server (no persistence; never the default port),
#   - the sidecar (threads: 1, redis store),
# and measures with wrk, interleaved over ROUNDS rounds of DURATION seconds each:
#   1. direct to the backend            4. sidecar, valid session of 5 small fields (a store read)
#   2. nginx proxy_pass                 5. sidecar, every response writes a field (a store write)
#   3. sidecar, anonymous
# It prints a Markdown table (median req/s, p50, p99, ratios to nginx) and writes it to
# benches/results/latest.md. Every process it started is stopped on exit. All traffic goes to
# 127.0.0.1 only, and every load run is bounded in time.
#
# Settings (environment): ROUNDS (3), DURATION seconds (10), WRK_THREADS (2), CONNECTIONS (64),
# WARMUP seconds (2), SIDECAR_BIN (skip the build and use this binary), OUT (the Markdown file),
# SIDECAR_WRAP (a command prefix for the sidecar, for profiling, e.g.
# "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" with SCENARIOS=read),
# SCENARIOS (which to run, default "direct nginx anon read write"), KEEP_TMP=1 (keep logs).
# Before/after in one interleaved run: BASELINE_BIN=/path/to/old/session-sidecar starts that
# binary too, as a second sidecar with the same config, secret and Redis, and adds the
# scenarios base_anon, base_read and base_write, each run right before its new counterpart:
#   BASELINE_BIN=/tmp/old-sidecar SIDECAR_BIN=target/release/session-sidecar bash benches/load.sh
# FLOOR_BIN=/path/to/plain/proxy (e.g. target/release/examples/lean_floor) starts that binary as
# `FLOOR_BIN LISTEN BACKEND 1` for the scenario floor (anonymous GET /), e.g.
#   FLOOR_BIN=target/release/examples/lean_floor SCENARIOS="nginx anon floor" bash benches/load.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
WARMUP=${WARMUP:-2}
if [ -n "${BASELINE_BIN:-}" ]; then
    SCENARIOS=${SCENARIOS:-"direct nginx base_anon anon base_read read base_write write"}
else
    SCENARIOS=${SCENARIOS:-"direct nginx anon read write"}
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/benches/results/latest.md}
COOKIE_NAME=bench_sid

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------------------

find_tool() { # name -> path (also looks in sbin, which a non-root PATH may lack)
    command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true
}

install_missing() {
    local missing=()
    [ -n "$(find_tool wrk)" ] || missing+=(wrk)
    [ -n "$(find_tool nginx)" ] || missing+=(nginx)
    [ -n "$(find_tool redis-server)" ] || missing+=(redis-server)
    [ -n "$(find_tool curl)" ] || missing+=(curl)
    if [ -z "${SIDECAR_BIN:-}" ]; then [ -n "$(find_tool cmake)" ] || missing+=(cmake); fi
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_missing
WRK=$(find_tool wrk)
NGINX=$(find_tool nginx)
REDIS=$(find_tool redis-server)
if [ -z "$WRK" ] || [ -z "$NGINX" ] || [ -z "$REDIS" ]; then die "wrk, nginx and redis-server are required"; fi

if [ -n "${SIDECAR_BIN:-}" ]; then
    BIN=$SIDECAR_BIN
else
    log "building the sidecar (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin session-sidecar) >&2
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/session-sidecar
fi
[ -x "$BIN" ] || die "no sidecar binary at $BIN"

# --- processes --------------------------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sidecar-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN=" "
free_port() { # VAR: sets VAR to a free port in 20000-59999 not handed out before in this run
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        case "$TAKEN" in *" $p "*) continue ;; esac
        if ! port_in_use "$p"; then TAKEN="$TAKEN$p "; printf -v "$1" '%s' "$p"; return 0; fi
    done
    die "no free port found"
}

wait_port() { # port what
    local _
    for _ in $(seq 1 100); do
        port_in_use "$1" && return 0
        sleep 0.1
    done
    die "$2 did not start listening on 127.0.0.1:$1 (logs: $TMP)"
}

free_port BACKEND_PORT
free_port NGINX_PORT
free_port REDIS_PORT
free_port SIDECAR_PORT
free_port ADMIN_PORT
free_port BASE_PORT
free_port FLOOR_PORT

nginx_conf() { # name body -> starts an nginx with this http{} body
    local name=$1 body=$2 dir=$TMP/$1
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$body
}
EOF
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx $name config is invalid"
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
}

# The app: "ok" everywhere; /login5 creates a 5-field session, /write changes one field on
# every response, /echo shows the X-Session it received (for the sanity checks).
nginx_conf backend "
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / { return 200 \"ok\n\"; }
        location = /login5 {
            add_header X-Session-Set '{\"user\":\"alice\",\"uid\":42,\"admin\":false,\"roles\":[\"dev\"],\"theme\":\"dark\"}';
            return 200 \"ok\n\";
        }
        location = /write {
            add_header X-Session-Set '{\"last\":\"\$request_id\"}';
            return 200 \"ok\n\";
        }
        location = /echo { return 200 \"\$http_x_session\n\"; }
    }"
wait_port "$BACKEND_PORT" "the nginx backend"

nginx_conf proxy "
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
wait_port "$NGINX_PORT" "the nginx proxy"

mkdir -p "$TMP/redis"
"$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis" \
    --daemonize no --logfile "$TMP/redis/redis.log" &
PIDS+=($!)
wait_port "$REDIS_PORT" "redis-server"

SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
cat >"$TMP/sidecar.yaml" <<EOF
listen: "127.0.0.1:$SIDECAR_PORT"
upstream: "127.0.0.1:$BACKEND_PORT"
admin_listen: "127.0.0.1:$ADMIN_PORT"
threads: 1
cookie:
  name: "$COOKIE_NAME"
  secure: false
  secrets: ["$SECRET"]
store:
  kind: redis
  url: "redis://127.0.0.1:$REDIS_PORT/0"
log:
  level: warn
EOF
"$BIN" --check --config "$TMP/sidecar.yaml" >/dev/null || die "the sidecar config is invalid"
# shellcheck disable=SC2086 # SIDECAR_WRAP is a command prefix, split on purpose
${SIDECAR_WRAP:-} "$BIN" --config "$TMP/sidecar.yaml" --upgrade-sock "$TMP/upgrade.sock" \
    >"$TMP/sidecar.log" 2>&1 &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
wait_port "$SIDECAR_PORT" "the sidecar"
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || die "no baseline binary at $BASELINE_BIN"
    sed -e "s/^listen: .*/listen: \"127.0.0.1:$BASE_PORT\"/" -e '/^admin_listen:/d' \
        "$TMP/sidecar.yaml" >"$TMP/baseline.yaml"
    "$BASELINE_BIN" --config "$TMP/baseline.yaml" --upgrade-sock "$TMP/upgrade-base.sock" \
        >"$TMP/baseline.log" 2>&1 &
    BASELINE_PID=$!
    PIDS+=("$BASELINE_PID")
    wait_port "$BASE_PORT" "the baseline sidecar"
fi
if [ -n "${FLOOR_BIN:-}" ]; then
    [ -x "$FLOOR_BIN" ] || die "no floor binary at $FLOOR_BIN"
    "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT" 1 >"$TMP/floor.log" 2>&1 &
    PIDS+=($!)
    wait_port "$FLOOR_PORT" "the floor binary"
    [ "$(curl -sf "http://127.0.0.1:$FLOOR_PORT/echo")" = "{}" ] || die "the floor binary does not send X-Session: {}"
fi

# --- sanity checks: each scenario does what its name says ------------------------------------

SIDECAR=http://127.0.0.1:$SIDECAR_PORT
[ "$(curl -sf "http://127.0.0.1:$NGINX_PORT/")" = ok ] || die "nginx proxy does not answer ok"
[ "$(curl -sf "$SIDECAR/echo")" = "{}" ] || die "anonymous requests do not see X-Session: {}"
COOKIE=$(curl -sf -D - -o /dev/null "$SIDECAR/login5" | tr -d '\r' \
    | sed -n "s/^set-cookie: *\($COOKIE_NAME=[^;]*\).*/\1/Ip" | head -1)
[ -n "$COOKIE" ] || die "no session cookie from /login5"
SEEN=$(curl -sf -H "Cookie: $COOKIE" "$SIDECAR/echo")
case "$SEEN" in *'"theme":"dark"'*) ;; *) die "the session is not read back (got: $SEEN)" ;; esac
curl -sf -o /dev/null -H "Cookie: $COOKIE" "$SIDECAR/write"
case "$(curl -sf -H "Cookie: $COOKIE" "$SIDECAR/echo")" in *'"last":'*) ;; *) die "/write did not write" ;; esac
if [ -n "${BASELINE_BIN:-}" ]; then
    case "$(curl -sf -H "Cookie: $COOKIE" "http://127.0.0.1:$BASE_PORT/echo")" in
        *'"theme":"dark"'*) ;;
        *) die "the baseline sidecar does not read the session back" ;;
    esac
fi
log "sanity checks passed; session: $(printf '%s' "$SEEN" | cut -c1-120)"

# --- measuring --------------------------------------------------------------------------------

# scenario -> label, URL, extra wrk header
label() {
    case $1 in
        direct) echo "direct to backend" ;;
        nginx) echo "nginx proxy_pass (keepalive)" ;;
        anon) echo "sidecar, anonymous" ;;
        read) echo "sidecar, session read (5 fields)" ;;
        write) echo "sidecar, session write per response" ;;
        base_*) echo "baseline $(label "${1#base_}")" ;;
        floor) echo "\`$(basename "$FLOOR_BIN")\`, anonymous" ;;
    esac
}
url() {
    case $1 in
        direct) echo "http://127.0.0.1:$BACKEND_PORT/" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
        anon | read) echo "$SIDECAR/" ;;
        write) echo "$SIDECAR/write" ;;
        base_anon | base_read) echo "http://127.0.0.1:$BASE_PORT/" ;;
        base_write) echo "http://127.0.0.1:$BASE_PORT/write" ;;
        floor) echo "http://127.0.0.1:$FLOOR_PORT/" ;;
    esac
}
run_wrk() { # scenario seconds outfile
    local args=(-t"$WRK_THREADS" -c"$CONNECTIONS" -d"${2}s" --timeout 5s --latency)
    case $1 in read | write | base_read | base_write) args+=(-H "Cookie: $COOKIE") ;; esac
    "$WRK" "${args[@]}" "$(url "$1")" >"$3" 2>&1 || die "wrk failed for $1: $(cat "$3")"
}

# wrk latency text (e.g. 812.00us, 1.20ms, 1.01s) -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n = n * 60000; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}
parse_wrk() { # outfile -> "rps p50ms p99ms errors"
    local f=$1 rps p50 p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$f")
    sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$f")
    echo "${rps:-0} $p50 $p99 $(( ${non2xx:-0} + ${sockerr:-0} ))"
}
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# CPU time (ticks) of the whole machine, and of this script's processes (the servers, their
# workers, and wrk/curl through this shell's reaped children): the rest is other work, i.e. noise.
proc_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | sed 's/.*) //' | awk '{s += $12 + $13} END {print s + 0}'; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; } # user, nice, system: what processes are charged
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; } # taken by the hypervisor from this VM
our_ticks() {
    local t p c
    t=$(sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}')
    for p in "${PIDS[@]}"; do
        t=$((t + $(proc_ticks "$p")))
        for c in $(pgrep -P "$p" 2>/dev/null); do t=$((t + $(proc_ticks "$c"))); done
    done
    echo "$t"
}

log "warming up (${WARMUP}s each)"
for s in $SCENARIOS; do run_wrk "$s" "$WARMUP" "$TMP/warmup-$s.txt"; done

BUSY0=$(busy_ticks); OURS0=$(our_ticks); STEAL0=$(steal_ticks); START=$(date +%s.%N)
for round in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        run_wrk "$s" "$DURATION" "$TMP/wrk-$s-$round.txt"
        read -r rps p50 p99 errs <<<"$(parse_wrk "$TMP/wrk-$s-$round.txt")"
        echo "$rps $p50 $p99 $errs" >>"$TMP/results-$s"
        log "round $round/$ROUNDS $(printf '%-38s' "$(label "$s")") $rps req/s  p50 ${p50}ms  p99 ${p99}ms  errors $errs"
    done
done

read -r OTHER_PCT STEAL_PCT <<<"$(awk -v b="$(( $(busy_ticks) - BUSY0 ))" -v o="$(( $(our_ticks) - OURS0 ))" \
    -v st="$(( $(steal_ticks) - STEAL0 ))" -v s="$START" -v e="$(date +%s.%N)" -v n="$(nproc)" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN {
        t = (e - s) * hz * n; p = 100 * (b - o) / t; if (p < 0) p = 0
        printf "%.0f %.0f", p, 100 * st / t }')"
RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SIDECAR_PID/status" 2>/dev/null || echo 0)
BASE_RSS_KB=0
[ -n "${BASELINE_PID:-}" ] && BASE_RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$BASELINE_PID/status" 2>/dev/null || echo 0)
SESSIONS_IN_REDIS=$(redis-cli -p "$REDIS_PORT" dbsize 2>/dev/null || echo "?")

# --- report -----------------------------------------------------------------------------------

col() { awk -v c="$1" '{print $c}' "$TMP/results-$2" | median; }
for s in $SCENARIOS; do
    printf '%s %s %s %s\n' "$s" "$(col 1 "$s")" "$(col 2 "$s")" "$(col 3 "$s")" >>"$TMP/medians"
done
NGINX_RPS=$(awk '$1 == "nginx" {print $2}' "$TMP/medians")
NGINX_P99=$(awk '$1 == "nginx" {print $4}' "$TMP/medians")
target() {
    case $1 in
        anon) echo "≥ 0.85×" ;;
        read) echo "≥ 0.70×, p99 ≤ 1.5×" ;;
        write) echo "≥ 0.50×" ;;
        *) echo "" ;;
    esac
}
met() { # scenario rps_ratio p99_ratio
    [ "$2" = "–" ] && { echo ""; return; }
    case $1 in
        anon) awk -v r="$2" 'BEGIN {print (r >= 0.85) ? "yes" : "no"}' ;;
        read) awk -v r="$2" -v p="$3" 'BEGIN {print (r >= 0.70 && p <= 1.5) ? "yes" : "no"}' ;;
        write) awk -v r="$2" 'BEGIN {print (r >= 0.50) ? "yes" : "no"}' ;;
        *) echo "" ;;
    esac
}

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=""
if (cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | grep -q .); then DIRTY=" (+ uncommitted changes)"; fi
mkdir -p "$(dirname "$OUT")"
{
    echo "# Load benchmark: session-sidecar vs. a bare nginx hop"
    echo
    echo "Command: \`bash benches/load.sh\` — $(date -u +%Y-%m-%d) — commit \`$COMMIT\`$DIRTY"
    echo
    echo "Machine: $(nproc) CPUs ($CPU), $(uname -sr); everything on one machine over 127.0.0.1."
    echo "Load: wrk -t$WRK_THREADS -c$CONNECTIONS, $ROUNDS interleaved rounds × ${DURATION}s per scenario, medians."
    echo "Workers: sidecar \`threads: 1\`, nginx \`worker_processes 1\` (proxy and backend);"
    echo "backend: nginx \`return 200\` (3 bytes); store: dedicated redis-server $("$REDIS" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), no persistence."
    echo "Noise: other processes used $OTHER_PCT % and the hypervisor (steal) $STEAL_PCT % of the CPU time during the measurement (both near 0 on a quiet machine)."
    echo "Tools: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $("$WRK" --version 2>&1 | head -1 | awk '{print "wrk " $2}')."
    echo
    echo "| scenario | req/s | × nginx req/s | p50 ms | p99 ms | × nginx p99 | target | met |"
    echo "|---|---:|---:|---:|---:|---:|---|---|"
    while read -r s rps p50 p99; do
        ratio=$(awk -v a="$rps" -v b="$NGINX_RPS" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "–"}')
        pratio=$(awk -v a="$p99" -v b="$NGINX_P99" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "–"}')
        printf '| %s | %.0f | %s | %.3f | %.3f | %s | %s | %s |\n' "$(label "$s")" "$rps" "$ratio" "$p50" "$p99" \
            "$pratio" "$(target "$s")" "$(met "$s" "$ratio" "$pratio")"
    done <"$TMP/medians"
    echo
    echo "Sidecar peak RSS during the run: $((RSS_KB / 1024)) MiB; keys in Redis afterwards: $SESSIONS_IN_REDIS."
    if [ -n "${BASELINE_BIN:-}" ]; then
        echo "Baseline binary: \`$BASELINE_BIN\` (peak RSS $((BASE_RSS_KB / 1024)) MiB); measured binary: \`$BIN\`."
    fi
    ERRORS=$(cat "$TMP"/results-* | awk '{s += $4} END {print s + 0}')
    if [ "$ERRORS" -gt 0 ]; then
        echo
        echo "**Warning:** $ERRORS non-2xx responses or socket errors during the runs."
    fi
    echo
    echo "<details><summary>Every round (req/s, p50 ms, p99 ms, errors)</summary>"
    echo
    for s in $SCENARIOS; do
        echo "- $(label "$s"): $(awk '{printf "%s%.0f / %s / %s / %s", (NR > 1 ? "; " : ""), $1, $2, $3, $4}' "$TMP/results-$s")"
    done
    echo
    echo "</details>"
} >"$OUT"
echo
cat "$OUT"
