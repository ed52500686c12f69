#!/usr/bin/env bash
# benches/relay.sh — the relay's throughput and memory benchmark (not a test).
#
# Uploads 100 MiB and 1 GiB chunked to an nginx sink, straight and through
# `tokenward relay serve` (CI mode: the token in TOKENWARD_TOKEN), in the
# same run, alternating, and prints the median throughput of each, their
# ratio (target >= 0.9) and the relay's peak RSS, VmHWM (target <= 32 MiB).
# A fresh relay serves each size, so each VmHWM belongs to that size alone.
#
# The sink is nginx's WebDAV PUT into tmpfs (/dev/shm when present): nginx
# reads each body to its end before answering, as a git server does.
# (A `return 200` sink answers before reading the body, and the upload is
# cut short as soon as that answer reaches the client.)
#
# Usage: benches/relay.sh              (builds target/release/tokenward)
#        TOKENWARD_BIN=path RUNS=5 SIZES="100 1024" benches/relay.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
sizes=${SIZES:-"100 1024"}
bin=${TOKENWARD_BIN:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --bin tokenward)
    bin=$here/target/release/tokenward
fi
for tool in nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "relay.sh: $tool is required" >&2; exit 1; }
done

shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/tokenward-bench.XXXXXX")
nginx_pid=
relay_pid=
cleanup() {
    # Only the processes this script started, by pid.
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "relay.sh: nothing listens on port $1" >&2
    return 1
}

mkdir -p "$work/logs" "$work/tmp" "$work/data"
nginx_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
user root;
pid $work/logs/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/tmp;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$nginx_port;
        location /sink/ {
            root $work/data;
            dav_methods PUT;
            create_full_put_path on;
        }
    }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" &
nginx_pid=$!
wait_port "$nginx_port"

# Prints bytes/s of one chunked upload of $2 MiB to port $1.
upload() {
    local out
    out=$(head -c "$2M" /dev/zero | curl -sS -o /dev/null -w '%{http_code} %{speed_upload}' \
        -T - -H 'Transfer-Encoding: chunked' -H 'Expect:' "http://127.0.0.1:$1/sink/body")
    case "$out" in
        2??\ *) echo "${out#* }" ;;
        *) echo "relay.sh: upload to port $1 failed: $out" >&2; return 1 ;;
    esac
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-8s %14s %14s %7s %12s\n' size "direct MiB/s" "relay MiB/s" ratio "relay VmHWM"
status=0
for size in $sizes; do
    relay_port=$(free_port)
    TOKENWARD_TOKEN=bench-token TOKENWARD_URL="http://127.0.0.1:$nginx_port" TOKENWARD_USERNAME=bench \
        TOKENWARD_LOG=warn \
        "$bin" relay serve "http://127.0.0.1:$nginx_port" --listen "127.0.0.1:$relay_port" 2>"$work/logs/relay.log" &
    relay_pid=$!
    wait_port "$relay_port"
    : > "$work/direct"
    : > "$work/relay"
    for _ in $(seq 1 "$runs"); do
        upload "$nginx_port" "$size" >> "$work/direct"
        upload "$relay_port" "$size" >> "$work/relay"
    done
    hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$relay_pid/status")
    kill "$relay_pid"
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
    direct=$(median < "$work/direct")
    relayed=$(median < "$work/relay")
    python3 - "$size" "$direct" "$relayed" "$hwm_kb" <<'PY' || status=1
import sys
size, direct, relayed, hwm_kb = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ratio = relayed / direct
mib = 1024 * 1024
label = f"{size} MiB" if int(size) < 1024 else f"{int(size) / 1024:g} GiB"
print(f"{label:<8} {direct / mib:14.1f} {relayed / mib:14.1f} {ratio:7.3f} {hwm_kb / 1024:9.1f} MiB")
sys.exit(0 if ratio >= 0.9 and hwm_kb <= 32 * 1024 else 1)
PY
done
[ "$status" = 0 ] && echo "targets met (ratio >= 0.9, VmHWM <= 32 MiB)" || echo "targets NOT met"
exit "$status"
