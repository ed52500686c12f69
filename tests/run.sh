#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the suite needs when
# it is missing, then checks formatting and lints, builds every binary and
# runs the whole test suite. Nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Debian packages, by a file each one provides.
declare -A packages=(
  [/usr/sbin/nginx]=nginx-light
  [/usr/sbin/fcgiwrap]=fcgiwrap
  [/usr/bin/gnome-keyring-daemon]=gnome-keyring
  [/usr/bin/dbus-daemon]=dbus
  [/usr/bin/dbus-send]=dbus-bin
  [/usr/bin/keyctl]=keyutils
  [/usr/bin/hg]=mercurial
  [/usr/bin/python3]=python3
  [/usr/bin/openssl]=openssl
  [/usr/bin/curl]=curl
  [/usr/bin/setpriv]=util-linux
  [/usr/bin/git]=git
  [/usr/bin/systemd-socket-activate]=systemd
  [/usr/bin/systemd-analyze]=systemd
)
missing=()
for file in "${!packages[@]}"; do
  [[ -e $file ]] || missing+=("${packages[$file]}")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: missing packages ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx and fcgiwrap run only under the tests' own control.
for service in nginx fcgiwrap; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done

log "hg 7 in a venv"
bash tests/setup-hg7.sh >/dev/null

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo deny (licences, bans, sources; advisories need the network: see deny.toml)"
command -v cargo-deny >/dev/null 2>&1 || cargo install cargo-deny --locked
cargo deny --log-level error check licenses bans sources

log "build"
cargo build --workspace --locked

log "python unit tests (hg extension)"
python3 -m unittest discover -s helper/hg -p 'test_*.py'

log "cargo test"
cargo test --workspace --locked

log "fuzz smoke pass (30 s per target; longer runs: fuzz/run.sh header)"
bash fuzz/run.sh 30
