#!/usr/bin/env bash
# Owns the Mercurial 7.x used by the hg end-to-end tests: a Python venv
# under target/hg7-venv with `mercurial>=7,<8` from PyPI. Idempotent: an
# existing venv with a working hg 7 is reused. Prints the hg path on stdout
# (and nothing else there); progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TOKENWARD_HG7_VENV:-${CARGO_TARGET_DIR:-$root/target}/hg7-venv}"
hg="$venv/bin/hg"

is_hg7() {
    local version
    [ -x "$hg" ] && version="$(HGRCPATH= "$hg" --version --quiet 2>/dev/null)" &&
        [[ "$version" == *"(version 7."* ]]
}

mkdir -p "$(dirname "$venv")"
# Tests may call this concurrently: one builds, the others wait.
exec 9>"$venv.lock"
flock 9

if ! is_hg7; then
    python="${PYTHON:-python3}"
    echo "setup-hg7: creating $venv with $python" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet 'mercurial>=7,<8' >&2
    is_hg7 || { echo "setup-hg7: $hg is not Mercurial 7" >&2; exit 1; }
fi
echo "$hg"
