#!/usr/bin/env bash
# Checks the packaging files and builds the .deb:
#   - the systemd user units pass `systemd-analyze --user verify` (both as
#     install.sh installs them and as the .deb ships them);
#   - the launchd plist is a valid property list with the expected keys;
#   - the Homebrew formula parses (`ruby -c`, when ruby is installed);
#   - `cargo deb` builds a package holding both binaries, the hg extension,
#     the units, the man page and the completions.
# Usage: packaging/check.sh [--no-deb]
#   --no-deb: skip the release build and the .deb (quick; tests/packaging.rs
#   runs it with TOKENWARD_BIN naming the tokenward binary under test).
# The full run is not part of tests/run.sh: the release build takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

build_deb=1
[[ ${1:-} == --no-deb ]] && build_deb=0

say() { printf 'packaging/check.sh: %s\n' "$*"; }
die() { printf 'packaging/check.sh: FAIL: %s\n' "$*" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
target="${CARGO_TARGET_DIR:-$PWD/target}"
if ((build_deb)); then
  say "building the release binaries"
  cargo build --release --locked --workspace --quiet
  bin="$target/release"
  # Where [package.metadata.deb] in Cargo.toml expects the generated assets.
  assets="$target/release/packaging"
else
  if [[ -n ${TOKENWARD_BIN:-} ]]; then
    bin=$(dirname "$TOKENWARD_BIN")
  else
    cargo build --locked --workspace --quiet
    bin="$target/debug"
  fi
  assets="$scratch/assets"
fi
mkdir -p "$assets"
"$bin/tokenward" man > "$assets/tokenward.1"
gzip -9nf "$assets/tokenward.1"
"$bin/tokenward" completions bash > "$assets/tokenward.bash"
"$bin/tokenward" completions zsh > "$assets/_tokenward"
"$bin/tokenward" completions fish > "$assets/tokenward.fish"
sed 's|^ExecStart=%h/.local/bin/tokenward |ExecStart=/usr/bin/tokenward |' \
  packaging/systemd/tokenward.service > "$assets/tokenward.service"
grep -q '^ExecStart=/usr/bin/tokenward daemon$' "$assets/tokenward.service" ||
  die "the ExecStart line of tokenward.service changed; update the sed above"

say "systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null; then
  die "systemd-analyze is missing (apt-get install systemd)"
fi
mkdir -p "$scratch/run" "$scratch/man/man1" "$scratch/user" "$scratch/deb"
chmod 700 "$scratch/run"
"$bin/tokenward" man > "$scratch/man/man1/tokenward.1"
# As install.sh installs them: ExecStart is the installed binary.
sed "s|^ExecStart=%h/.local/bin/tokenward |ExecStart=$bin/tokenward |" \
  packaging/systemd/tokenward.service > "$scratch/user/tokenward.service"
cp packaging/systemd/tokenward.socket "$scratch/user/"
# As the .deb ships them, but with the binary that exists here (the
# /usr/bin path itself is checked above and in the package below).
sed "s|^ExecStart=/usr/bin/tokenward |ExecStart=$bin/tokenward |" \
  "$assets/tokenward.service" > "$scratch/deb/tokenward.service"
cp packaging/systemd/tokenward.socket "$scratch/deb/"
verify() {
  # The user manager needs a runtime dir; MANPATH lets it check
  # Documentation=man:tokenward(1). Any output is a finding.
  local out
  out=$(XDG_RUNTIME_DIR="$scratch/run" MANPATH="$scratch/man" \
    systemd-analyze --user verify "$@" 2>&1) || die "systemd-analyze verify $*: $out"
  [[ -z $out ]] || die "systemd-analyze verify $*: $out"
}
verify "$scratch/user/tokenward.socket" "$scratch/user/tokenward.service"
verify "$scratch/deb/tokenward.socket" "$scratch/deb/tokenward.service"

say "launchd plist"
python3 - packaging/launchd/com.tokenward.daemon.plist <<'EOF'
import plistlib, sys
with open(sys.argv[1], "rb") as f:
    plist = plistlib.load(f)
assert plist["Label"] == "com.tokenward.daemon", plist
assert plist["ProgramArguments"] == ["@BINDIR@/tokenward", "daemon"], plist
assert plist["KeepAlive"] == {"SuccessfulExit": False}, plist
assert plist["Umask"] == 0o077, plist
EOF

if command -v ruby >/dev/null; then
  say "homebrew formula"
  ruby -c packaging/homebrew/tokenward.rb >/dev/null
else
  say "ruby is not installed: the Homebrew formula's syntax is not checked"
fi

((build_deb)) || { say "ok (no .deb built: --no-deb)"; exit 0; }

say "cargo deb"
command -v cargo-deb >/dev/null || die "cargo-deb is missing (cargo install cargo-deb --locked)"
# cargo deb prints the path of the package it wrote.
deb=$(cargo deb --no-build --locked | tail -n1)
[[ -f $deb ]] || die "cargo deb wrote no package (it said: $deb)"
say "built $deb"
contents=$(dpkg-deb -c "$deb" | awk '{print $1, $NF}')
for expected in \
  "-rwxr-xr-x ./usr/bin/tokenward" \
  "-rwxr-xr-x ./usr/bin/git-credential-tokenward" \
  "-rw-r--r-- ./usr/share/tokenward/hg/tokenward.py" \
  "-rw-r--r-- ./usr/lib/systemd/user/tokenward.service" \
  "-rw-r--r-- ./usr/lib/systemd/user/tokenward.socket" \
  "-rw-r--r-- ./usr/share/man/man1/tokenward.1.gz" \
  "-rw-r--r-- ./usr/share/bash-completion/completions/tokenward" \
  "-rw-r--r-- ./usr/share/zsh/vendor-completions/_tokenward" \
  "-rw-r--r-- ./usr/share/fish/vendor_completions.d/tokenward.fish"; do
  grep -qxF -- "$expected" <<<"$contents" || die "$deb lacks $expected"
done
dpkg-deb -x "$deb" "$scratch/root"
grep -q '^ExecStart=/usr/bin/tokenward daemon$' "$scratch/root/usr/lib/systemd/user/tokenward.service" ||
  die "the packaged unit does not start /usr/bin/tokenward"
"$scratch/root/usr/bin/tokenward" --version >/dev/null || die "the packaged tokenward does not run"
zcat "$scratch/root/usr/share/man/man1/tokenward.1.gz" | grep -q '^\.TH tokenward 1' ||
  die "the packaged man page is not tokenward(1)"
dpkg-deb -f "$deb" Package Version Architecture Depends
say "ok: $deb"
