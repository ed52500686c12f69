#!/usr/bin/env bash
# Sets tokenward up for the current user: builds it, installs `tokenward` and
# `git-credential-tokenward` into ~/.local/bin (or $PREFIX/bin), installs the
# Mercurial extension, starts the daemon and points git at the helper.
# Safe to run again: it rebuilds, replaces the binaries and changes nothing else.
set -euo pipefail
cd "$(dirname "$0")"

prefix="${PREFIX:-$HOME/.local}"
bindir="$prefix/bin"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo is not installed; get Rust from your package manager or rustup, then run ./install.sh again"

say "building (release)"
cargo build --release --locked --workspace --quiet

mkdir -p "$bindir"
for binary in tokenward git-credential-tokenward; do
  install -m 0755 "target/release/$binary" "$bindir/$binary.new"
  mv -f "$bindir/$binary.new" "$bindir/$binary"
done
say "installed tokenward and git-credential-tokenward in $bindir"

tokenward="$bindir/tokenward"
if "$tokenward" status >/dev/null 2>&1; then
  # Replace a running daemon with the new binary.
  "$tokenward" stop >/dev/null
fi
"$tokenward" start
"$tokenward" setup git --global
if command -v hg >/dev/null 2>&1; then
  "$tokenward" setup hg
fi

case ":$PATH:" in
  *":$bindir:"*) ;;
  *) say "add $bindir to your PATH (for example in ~/.profile)" ;;
esac
say "done. Next: tokenward token add https://your.server --user YOU   (the token is prompted for)"
