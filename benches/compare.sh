#!/usr/bin/env bash
# benches/compare.sh — tokenward's speed against git's own credential helpers,
# in one run on one machine (a benchmark, not a test: not in tests/run.sh).
#
# What it measures (targets: ../shared/SPEC.md, "Performance targets"):
#   1. `git-credential-tokenward get` with the daemon warm, against
#      `git credential-cache --socket S get` (git's in-memory daemon, run the
#      way credential.helper=cache runs it: through the `git` wrapper; the
#      wrapper-less `git-credential-cache` is shown as well) and
#      `git-credential-libsecret get` (built from the source Debian's git
#      ships in /usr/share/doc/git/contrib/credential/libsecret, talking to
#      gnome-keyring in a private D-Bus session). RUNS runs each, interleaved
#      A,B,C,D,A,B,C,D… by benches/runner.c, which times fork/exec/wait.
#   2. The first `get` with no daemon running (the helper starts it, the
#      daemon opens the keychain and reads the secret once): COLD_RUNS cold
#      starts per backend, the daemon stopped (untimed) before each. keyutils
#      and secret-service are the keychains the target is about; the file
#      backend is shown apart: its start-up derives the key from
#      TOKENWARD_PASSPHRASE with PBKDF2-HMAC-SHA256, 600,000 iterations, on
#      purpose slow.
#   3. The daemon under load: examples/loadgen.rs, 64 clients sharing
#      LOAD_REQUESTS gets on kept-open connections, as fast as they are
#      answered (saturation: the throughput, and latency that is mostly
#      queueing behind the other clients on 2 cores the clients share with
#      the daemon); the same 64 clients offering 10,000 gets/s on a fixed
#      schedule (the target's rate: its p99); a connection per get, as the
#      helper does; then 1,000 connections held open at once.
#   4. The daemon's idle RSS (VmRSS after start-up and a few gets, settled),
#      with keyutils and with secret-service.
#   5. benches/relay.sh (the relay's throughput and peak RSS), when present.
# Then it prints a Markdown table for the README's "Performance" section.
#
# Everything runs in a throwaway directory with its own TOKENWARD_HOME,
# sockets, HOME, D-Bus session and (via `keyctl session`) session keyring;
# the processes it starts are stopped by pid at exit.
#
# Usage: benches/compare.sh
#        RUNS=300 COLD_RUNS=20 LOAD_REQUESTS=200000 RELAY=0 benches/compare.sh
#        (BUILD=0: use the release binaries already in target/release)
# Needs: cargo, cc, git, make, pkg-config, libsecret-1-dev, libglib2.0-dev,
# dbus-daemon, dbus-send, gnome-keyring-daemon, keyctl (Debian: keyutils).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-300}
cold_runs=${COLD_RUNS:-20}
load_requests=${LOAD_REQUESTS:-200000}
relay=${RELAY:-1}

# A session keyring of our own, so the keyutils backend has one and nothing
# lands in the caller's keyrings.
if [ -z "${TOKENWARD_BENCH_SESSION:-}" ]; then
    command -v keyctl >/dev/null || { echo "compare.sh: keyctl is required (apt-get install keyutils)" >&2; exit 1; }
    export TOKENWARD_BENCH_SESSION=1
    exec keyctl session "tokenward-bench-$$" bash "$0" "$@"
fi

for tool in cargo cc git make pkg-config dbus-daemon dbus-send gnome-keyring-daemon; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is required" >&2; exit 1; }
done
libsecret_src=/usr/share/doc/git/contrib/credential/libsecret
[ -d "$libsecret_src" ] || { echo "compare.sh: $libsecret_src is missing (apt-get install git)" >&2; exit 1; }
pkg-config --exists libsecret-1 glib-2.0 ||
    { echo "compare.sh: apt-get install libsecret-1-dev libglib2.0-dev" >&2; exit 1; }

say() { printf '\n== %s\n' "$*" >&2; }

if [ "${BUILD:-1}" = 1 ]; then
    say "building (release)"
    (cd "$here" && cargo build --release --workspace --quiet && cargo build --release --example loadgen --quiet)
fi
bin=$here/target/release
tokenward=$bin/tokenward
helper=$bin/git-credential-tokenward
loadgen=$bin/examples/loadgen

shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/tokenward-compare.XXXXXX")
pids=()
cleanup() {
    set +e
    for home in "$work"/tw-*; do
        [ -d "$home" ] && TOKENWARD_HOME=$home TOKENWARD_SOCKET=$home/run/daemon.sock \
            "$tokenward" stop >/dev/null 2>&1
    done
    [ -S "$work/cache/sock" ] && git credential-cache --socket "$work/cache/sock" exit >/dev/null 2>&1
    # Only the processes this script started, by pid.
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/home" "$work/tmp" "$work/cache" "$work/libsecret"
chmod 700 "$work/cache"
export TMPDIR=$work/tmp
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_DATA_HOME=$work/home/.local/share
export GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
unset XDG_RUNTIME_DIR TOKENWARD_TOKEN TOKENWARD_NO_AUTOSTART TOKENWARD_PASSPHRASE
export TOKENWARD_LOG=warn

say "building git-credential-libsecret from $libsecret_src"
cp -r "$libsecret_src/." "$work/libsecret/"
[ -f "$work/libsecret/git-credential-libsecret.c" ] ||
    gunzip "$work/libsecret/git-credential-libsecret.c.gz"
make -s -C "$work/libsecret" >/dev/null
libsecret=$work/libsecret/git-credential-libsecret
cc -O2 -Wall -o "$work/runner" "$here/benches/runner.c"
runner=$work/runner

say "starting a private D-Bus session with gnome-keyring"
dbus-daemon --session --nofork --print-address=1 > "$work/bus.address" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/bus.address" ] && break; sleep 0.05; done
DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$work/bus.address")
export DBUS_SESSION_BUS_ADDRESS
printf 'bench keyring password' |
    gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1 &
pids+=($!)
has_secrets() {
    dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'
}
for _ in $(seq 1 200); do has_secrets && break; sleep 0.05; done
has_secrets || { echo "compare.sh: gnome-keyring did not start" >&2; exit 1; }

secret=bench-secret-0123456789abcdef
printf 'protocol=https\nhost=h.example\npath=team/repo.git\n\n' > "$work/get.in"
printf 'protocol=https\nhost=h.example\npath=team/repo.git\nusername=u\npassword=%s\n\n' "$secret" > "$work/store.in"

# Sets up an install for `backend` under $work/tw-$backend (the TOKENWARD_*
# variables are then exported for it).
use_install() {
    export TOKENWARD_HOME=$work/tw-$1 TOKENWARD_SOCKET=$work/tw-$1/run/daemon.sock TOKENWARD_BACKEND=$1
    mkdir -p "$TOKENWARD_HOME/run"
    chmod 700 "$TOKENWARD_HOME/run"
    if [ "$1" = file ]; then export TOKENWARD_PASSPHRASE="bench passphrase"; else unset TOKENWARD_PASSPHRASE; fi
}

wait_socket() {
    for _ in $(seq 1 500); do [ -S "$TOKENWARD_SOCKET" ] && return 0; sleep 0.01; done
    echo "compare.sh: the daemon did not start; see $TOKENWARD_HOME" >&2
    return 1
}

# Starts the daemon in the foreground as our child; sets daemon_pid.
start_daemon() {
    "$tokenward" daemon >/dev/null 2>>"$TOKENWARD_HOME/daemon.stderr" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    wait_socket
}

stop_daemon() {
    "$tokenward" stop >/dev/null 2>&1 || true
    wait "$1" 2>/dev/null || true
}

# Adds the benchmark's token to the running daemon (the secret on stdin).
add_token() {
    printf '%s' "$secret" | "$tokenward" token add https://h.example/team --user u >/dev/null
}

# One field of runner's output line for NAME: field FILE NAME KEY.
field() { awk -v n="$2" -v k="$3" '$1 == n { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1"; }
ms() { awk -v u="$1" 'BEGIN { if (u == "" || u == "nan") print "nan"; else printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "nan") print "n/a"; else if ((op == "<=" && v + 0 <= t + 0) || (op == ">=" && v + 0 >= t + 0)) print "met"; else print "**missed**" }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------- 1. warm get
say "1. warm get: $runs interleaved runs each"
use_install keyutils
start_daemon
daemon=$daemon_pid
add_token
"$helper" get < "$work/get.in" | grep -q "password=$secret" ||
    { echo "compare.sh: git-credential-tokenward gave no password" >&2; exit 1; }

git credential-cache --timeout 86400 --socket "$work/cache/sock" store < "$work/store.in"
git credential-cache --socket "$work/cache/sock" get < "$work/get.in" | grep -q "password=$secret" ||
    { echo "compare.sh: git credential-cache gave no password" >&2; exit 1; }
"$libsecret" store < "$work/store.in" >/dev/null
"$libsecret" get < "$work/get.in" | grep -q "password=$secret" ||
    { echo "compare.sh: git-credential-libsecret gave no password" >&2; exit 1; }

# The request path must not write: the index's mtime is compared after the load.
index_mtime=$(stat -c %y "$TOKENWARD_HOME/data/index.json")
gitbin=$(command -v git)
cache_direct=$(git --exec-path)/git-credential-cache
"$runner" -n "$runs" -w 10 -x "password=$secret" -- \
    tokenward "$work/get.in" "$helper" get ';;' \
    cache "$work/get.in" "$gitbin" credential-cache --socket "$work/cache/sock" get ';;' \
    libsecret "$work/get.in" "$libsecret" get ';;' \
    cache-direct "$work/get.in" "$cache_direct" --socket "$work/cache/sock" get \
    | tee "$work/warm.txt" >&2

# ------------------------------------------------------ 4. idle RSS (keyutils)
# Measured on the daemon that has just served the warm runs: started, a token
# added, a few hundred gets, then left alone.
sleep 2
rss_keyutils=$(rss_kb "$daemon")

# --------------------------------------------------------------- 3. load
say "3. load: 64 clients, $load_requests gets; then 1,000 connections at once"
"$loadgen" get --socket "$TOKENWARD_SOCKET" --clients 64 --requests "$load_requests" | tee "$work/load.txt" >&2
"$loadgen" get --socket "$TOKENWARD_SOCKET" --clients 64 --requests $((load_requests / 2)) --rate 10000 |
    tee "$work/load-rate.txt" >&2
"$loadgen" get --socket "$TOKENWARD_SOCKET" --clients 64 --requests $((load_requests / 4)) --reconnect |
    tee "$work/load-reconnect.txt" >&2
"$loadgen" conns --socket "$TOKENWARD_SOCKET" --count 1000 | tee "$work/conns.txt" >&2
sleep 2
rss_after_load=$(rss_kb "$daemon")
if [ "$(stat -c %y "$TOKENWARD_HOME/data/index.json")" = "$index_mtime" ]; then
    index_note="the index was not rewritten by the $((runs + load_requests * 7 / 4 + 1000))-odd gets"
else
    index_note="**the index was rewritten during the gets**"
fi
stop_daemon "$daemon"

# ---------------------------------------------------------- 2. cold starts
# The untimed step before each cold start: stop the daemon and wait until its
# process is gone, not just its socket, so that the next start never meets
# the old daemon still shutting down (it holds daemon.lock until it exits,
# and a start in that window is refused).
# shellcheck disable=SC2016
stop_and_wait='pid=$("$0" status --json 2>/dev/null | grep -o "\"pid\": *[0-9]*" | grep -o "[0-9]*$")
"$0" stop >/dev/null 2>&1
for _ in $(seq 1 1000); do
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && ! grep -q "^State:.*Z" "/proc/$pid/status" 2>/dev/null || break
    sleep 0.002
done'

cold() {
    use_install "$1"
    start_daemon
    local pid=$daemon_pid
    add_token
    if [ "$1" = secret-service ]; then
        # 4. idle RSS with the desktop keychain: a few gets, then settle.
        for _ in 1 2 3 4 5 6 7 8 9 10; do "$helper" get < "$work/get.in" >/dev/null; done
        sleep 2
        rss_secret_service=$(rss_kb "$pid")
    fi
    stop_daemon "$pid"
    say "2. cold start, $1 backend: $cold_runs runs"
    "$runner" -n "$cold_runs" -w 2 -x "password=$secret" -- \
        -stop /dev/null /bin/bash -c "$stop_and_wait" "$tokenward" ';;' \
        "cold-$1" "$work/get.in" "$helper" get | tee -a "$work/cold.txt" >&2
    "$tokenward" stop >/dev/null 2>&1 || true
}
cold keyutils
cold secret-service
cold file

# ---------------------------------------------------------------- 5. relay
relay_out=
if [ "$relay" = 1 ] && [ -x "$here/benches/relay.sh" ]; then
    say "5. relay: benches/relay.sh"
    relay_out=$(TOKENWARD_BIN=$tokenward "$here/benches/relay.sh" 2>"$work/relay.err") || true
    printf '%s\n' "$relay_out" >&2
fi

# ---------------------------------------------------------------- report
t_med=$(field "$work/warm.txt" tokenward median)
c_med=$(field "$work/warm.txt" cache median)
l_med=$(field "$work/warm.txt" libsecret median)
d_med=$(field "$work/warm.txt" cache-direct median)
r_cache=$(ratio "$t_med" "$c_med")
r_libsecret=$(ratio "$t_med" "$l_med")
r_direct=$(ratio "$t_med" "$d_med")
failed_warm=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^failed=/) { split($i, kv, "="); s += kv[2] } } END { print s + 0 }' "$work/warm.txt")
cold_k=$(ms "$(field "$work/cold.txt" cold-keyutils median)")
cold_s=$(ms "$(field "$work/cold.txt" cold-secret-service median)")
cold_f=$(ms "$(field "$work/cold.txt" cold-file median)")
read_kv() { tr ' ' '\n' < "$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
rps=$(read_kv "$work/load.txt" rps)
p50=$(read_kv "$work/load.txt" p50_ms)
p99=$(read_kv "$work/load.txt" p99_ms)
load_errors=$(read_kv "$work/load.txt" errors)
rate_rps=$(read_kv "$work/load-rate.txt" rps)
rate_p50=$(read_kv "$work/load-rate.txt" p50_ms)
rate_p99=$(read_kv "$work/load-rate.txt" p99_ms)
rate_errors=$(read_kv "$work/load-rate.txt" errors)
rc_rps=$(read_kv "$work/load-reconnect.txt" rps)
rc_p99=$(read_kv "$work/load-reconnect.txt" p99_ms)
rc_errors=$(read_kv "$work/load-reconnect.txt" errors)
conn_errors=$(read_kv "$work/conns.txt" errors)
conn_p99=$(read_kv "$work/conns.txt" p99_ms)
rss_k=$(mib "$rss_keyutils")
rss_s=$(mib "${rss_secret_service:-0}")
rss_l=$(mib "$rss_after_load")
rss_max=$(awk -v a="$rss_k" -v b="$rss_s" 'BEGIN { print (a > b ? a : b) }')
cold_max=$(awk -v a="$cold_k" -v b="$cold_s" 'BEGIN { print (a > b ? a : b) }')
load_ok=$(awk -v r="$rps" -v p="$rate_p99" -v e="$load_errors" -v f="$rate_errors" \
    'BEGIN { print (r >= 10000 && p <= 5 && e == 0 && f == 0) ? "met" : "**missed**" }')
sat_ok=$(verdict "$p99" "<=" 5)

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "### Performance ($(date -u +%Y-%m-%d), $(nproc) cores, ${cpu:-unknown CPU}, Linux $(uname -r), $(git --version))"
echo
echo "Measured by \`benches/compare.sh\`, all in one run; times are medians of wall time."
echo
echo "| what | tokenward | reference | target | |"
echo "|---|---|---|---|---|"
echo "| \`get\`, daemon warm ($runs runs each, interleaved) | $(ms "$t_med") ms | credential-cache $(ms "$c_med") ms ($(ms "$d_med") ms without the \`git\` wrapper); libsecret $(ms "$l_med") ms | ≤ 1.0× cache: **${r_cache}×** ($r_direct× without the wrapper) | $(verdict "$r_cache" "<=" 1.0) |"
echo "| | | | ≤ 0.3× libsecret: **${r_libsecret}×** | $(verdict "$r_libsecret" "<=" 0.3) |"
echo "| first \`get\`, daemon not running (autostart + 1 keychain read), keyutils | $cold_k ms | | ≤ 100 ms | $(verdict "$cold_k" "<=" 100) |"
echo "| same, secret-service (gnome-keyring) | $cold_s ms | | ≤ 100 ms | $(verdict "$cold_s" "<=" 100) |"
echo "| same, encrypted file (PBKDF2, 600k iterations, by design) | $cold_f ms | | — | |"
echo "| daemon, 64 clients, 10,000 gets/s offered | $rate_rps get/s, p50 $rate_p50 ms, p99 $rate_p99 ms, $rate_errors errors | | ≥ 10,000/s, p99 ≤ 5 ms | $load_ok |"
echo "| daemon, 64 clients as fast as answered (saturation), $load_requests gets | $rps get/s, p50 $p50 ms, p99 $p99 ms, $load_errors errors | | (p99 ≤ 5 ms even here) | $sat_ok |"
echo "| daemon, 64 clients, a connection per get (as the helper) | $rc_rps get/s, p99 $rc_p99 ms, $rc_errors errors | | — | |"
echo "| 1,000 connections open at once, one get each | $conn_errors errors (p99 $conn_p99 ms) | | 0 errors | $(verdict "$conn_errors" "<=" 0) |"
echo "| daemon idle RSS | keyutils $rss_k MiB, secret-service $rss_s MiB ($rss_l MiB after the load) | | ≤ 10 MiB | $(verdict "$rss_max" "<=" 10) |"
if [ -n "$relay_out" ]; then
    printf '%s\n' "$relay_out" | awk '
        /MiB\/s/ || /^size/ { next }
        $2 == "MiB" || $2 == "GiB" {
            printf "| relay, chunked push of %s %s | %s MiB/s, peak RSS %s MiB | direct %s MiB/s | ≥ 0.9× direct: **%s×**; RSS ≤ 32 MiB | %s |\n",
                $1, $2, $4, $6, $3, $5, ($5 >= 0.9 && $6 <= 32) ? "met" : "**missed**" }'
fi
echo
[ "$failed_warm" = 0 ] || echo "warning: $failed_warm warm runs failed or gave no password (see above)"
echo "(cold-start maximum over keychains: $cold_max ms; $index_note)"
