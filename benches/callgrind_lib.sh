# Shared by benches/callgrind.sh and benches/callgrind_floor.sh (sourced, not run): logging,
# tool lookup, a temporary directory cleaned up on exit, free loopback ports, the nginx backend
# (the app of benches/load.sh) and reading a callgrind dump. The sourcing script sets LOG_TAG
# and TMP_NAME first, and afterwards PIDS+=(...) for every process stop_all should end.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
find_tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

NGINX=$(find_tool nginx)
for t in valgrind callgrind_control callgrind_annotate curl; do
    [ -n "$(find_tool "$t")" ] || die "$t is required"
done
[ -n "$NGINX" ] || die "nginx is required"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/$TMP_NAME.XXXXXX")
PIDS=()
BACKEND_PID=""
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    if [ -n "$BACKEND_PID" ]; then
        kill "$BACKEND_PID" 2>/dev/null || true
        wait "$BACKEND_PID" 2>/dev/null || true
    fi
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

# Starts the app of benches/load.sh on BACKEND_PORT (BACKEND_PID; ended by cleanup).
start_backend() {
    free_port BACKEND_PORT
    mkdir -p "$TMP/backend"
    cat >"$TMP/backend/nginx.conf" <<NGINX_CONF
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
NGINX_CONF
    "$NGINX" -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf" \
        >"$TMP/backend/stdout.log" 2>&1 &
    BACKEND_PID=$!
    wait_port "$BACKEND_PORT" "the nginx backend"
}

# Dumps the counters of pid $1 (its dumps are $TMP/$2.cg.*) and prints its total Ir since
# the last zeroing. Redis' serverCron runs 10 times per (valgrind-slowed) second whatever the
# traffic: it is not part of the requests' cost and is left out.
dump_ir() {
    local before after file total cron _
    before=$(ls "$TMP/$2".cg.* 2>/dev/null | wc -l)
    callgrind_control -d "$1" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        after=$(ls "$TMP/$2".cg.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    sleep 0.3
    # shellcheck disable=SC2012 # newest dump; file names are ours
    file=$(ls -t "$TMP/$2".cg.* | head -1)
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    cron=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null \
        | awk '/:serverCron / {gsub(",", "", $1); print $1; exit}')
    echo $((total - ${cron:-0}))
}

# Ir per request, as "12.3k": total Ir $1 over $2 requests.
per_request() { awk -v a="$1" -v n="$2" 'BEGIN {printf "%.1fk", a / n / 1000}'; }
