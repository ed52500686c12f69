#!/usr/bin/env bash
# Sets tokenward up for the current user, or takes it away again.
#
#   ./install.sh               build (cargo, --locked) and install
#   ./install.sh --uninstall   undo all of it; keeps the tokens
#   ./install.sh --no-service  do not install a systemd/launchd service
#
# Installs `tokenward` and `git-credential-tokenward` into ~/.local/bin (or
# $PREFIX/bin), the man page and bash/zsh/fish completions under
# ~/.local/share (or $PREFIX/share; fish: ~/.config/fish), and the Mercurial
# extension in tokenward's data dir (`tokenward setup hg`, when hg is
# installed). Runs the daemon through a systemd user socket unit when
# systemd runs for this user (launchd on macOS), else with `tokenward start`,
# and points git at the helper (`tokenward setup git --global`).
#
# Safe to run again: files that are already up to date are not touched, the
# daemon is restarted only when its binary changed, and git/hg are set up
# only when they are not already. Nothing it did not create is removed or
# overwritten, except git's credential.helper list (saved by `setup git`,
# restored by `--uninstall`).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

mode=install
service=auto
for arg in "$@"; do
  case $arg in
    --uninstall) mode=uninstall ;;
    --no-service) service=no ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$arg' (see ./install.sh --help)" ;;
  esac
done

[[ -n ${HOME:-} ]] || die "HOME is not set"
os=$(uname -s)
prefix="${PREFIX:-$HOME/.local}"
bindir="$prefix/bin"
config_home="${XDG_CONFIG_HOME:-$HOME/.config}"
if [[ -n ${PREFIX:-} ]]; then
  share="$PREFIX/share"
  fish_completion="$share/fish/vendor_completions.d/tokenward.fish"
else
  share="${XDG_DATA_HOME:-$HOME/.local/share}"
  fish_completion="$config_home/fish/completions/tokenward.fish"
fi
bash_completion="$share/bash-completion/completions/tokenward"
zsh_completion="$share/zsh/site-functions/_tokenward"
# man finds ~/.local/share/man (and $PREFIX/share/man) from PATH's bin dirs.
manpage="$prefix/share/man/man1/tokenward.1"
unit_dir="$config_home/systemd/user"
units=(tokenward.socket tokenward.service)
plist="$HOME/Library/LaunchAgents/com.tokenward.daemon.plist"
plist_label=com.tokenward.daemon
tokenward="$bindir/tokenward"

# tokenward's data dir, as the binary computes it (config::Dirs).
if [[ -n ${TOKENWARD_HOME:-} ]]; then
  data_dir="$TOKENWARD_HOME/data"
elif [[ $os == Darwin ]]; then
  data_dir="$HOME/Library/Application Support/tokenward"
else
  data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/tokenward"
fi

did=()
changed=0
# put SOURCE DEST MODE: installs SOURCE as DEST unless DEST already has the
# same bytes; sets `changed` when it wrote. Replaces by rename, so a running
# binary is never overwritten in place.
put() {
  local src=$1 dest=$2 mode=$3
  changed=0
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.new.$$"
  mv -f "$dest.new.$$" "$dest"
  did+=("installed $dest")
  changed=1
}

# Which service manager runs the daemon: systemd, launchd or none.
service_manager() {
  [[ $service == no ]] && { echo none; return; }
  # A custom home or socket is not what the units name.
  if [[ -n ${TOKENWARD_HOME:-} || -n ${TOKENWARD_SOCKET:-} ]]; then
    echo none
    return
  fi
  if [[ $os == Darwin ]] && command -v launchctl >/dev/null; then
    echo launchd
    return
  fi
  if [[ $os == Linux && -n ${XDG_RUNTIME_DIR:-} && -d $XDG_RUNTIME_DIR/systemd ]] &&
    command -v systemctl >/dev/null; then
    case $(systemctl --user is-system-running 2>/dev/null || true) in
      running | degraded | starting) echo systemd; return ;;
    esac
  fi
  echo none
}

daemon_answers() { [[ -x $tokenward ]] && "$tokenward" status >/dev/null 2>&1; }

# Whether git's global credential.helper list already starts with our helper.
git_is_set_up() {
  local helper="$bindir/git-credential-tokenward" values effective=() value
  values=$(git config --global --get-all credential.helper 2>/dev/null) || return 1
  while IFS= read -r value; do
    if [[ -z $value ]]; then effective=(); else effective+=("$value"); fi
  done <<<"$values"
  [[ ${effective[0]:-} == "$helper" || ${effective[0]:-} == "'$helper'" ]] || return 1
  [[ $(git config --global --get credential.useHttpPath 2>/dev/null || true) == true ]]
}

install_all() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is not installed; get Rust from your package manager or https://rustup.rs, then run ./install.sh again"

  say "building (cargo build --release --locked; the first build takes a few minutes)"
  cargo build --release --locked --workspace --quiet
  local target="${CARGO_TARGET_DIR:-target}/release"

  local binary binaries_changed=0
  for binary in tokenward git-credential-tokenward; do
    put "$target/$binary" "$bindir/$binary" 0755
    ((changed)) && binaries_changed=1
  done

  generated=$(mktemp -d)
  trap 'rm -rf "$generated"' EXIT
  "$tokenward" man >"$generated/tokenward.1"
  put "$generated/tokenward.1" "$manpage" 0644
  local shell dest zsh_changed=0
  for shell in bash zsh fish; do
    case $shell in
      bash) dest=$bash_completion ;;
      zsh) dest=$zsh_completion ;;
      fish) dest=$fish_completion ;;
    esac
    "$tokenward" completions "$shell" >"$generated/$shell"
    put "$generated/$shell" "$dest" 0644
    [[ $shell == zsh ]] && zsh_changed=$changed
  done

  local manager
  manager=$(service_manager)
  case $manager in
    systemd)
      local unit units_changed=0
      sed "s|^ExecStart=%h/.local/bin/tokenward |ExecStart=$bindir/tokenward |" \
        packaging/systemd/tokenward.service >"$generated/tokenward.service"
      cp packaging/systemd/tokenward.socket "$generated/tokenward.socket"
      for unit in "${units[@]}"; do
        put "$generated/$unit" "$unit_dir/$unit" 0644
        ((changed)) && units_changed=1
      done
      ((units_changed)) && systemctl --user daemon-reload
      if ! systemctl --user is-active --quiet tokenward.socket; then
        # A daemon started by hand holds the socket path: hand it over.
        if daemon_answers; then "$tokenward" stop >/dev/null; fi
        systemctl --user enable --now tokenward.socket
        did+=("enabled and started the systemd user socket tokenward.socket (the daemon starts on first use)")
      elif ((binaries_changed || units_changed)); then
        systemctl --user try-restart tokenward.service
        did+=("restarted tokenward.service with the new binary")
      fi
      ;;
    launchd)
      local domain
      domain="gui/$(id -u)"
      sed -e "s|@BINDIR@|$bindir|g" -e "s|@HOME@|$HOME|g" \
        packaging/launchd/com.tokenward.daemon.plist >"$generated/plist"
      put "$generated/plist" "$plist" 0644
      if ((changed || binaries_changed)) || ! launchctl print "$domain/$plist_label" >/dev/null 2>&1; then
        launchctl bootout "$domain/$plist_label" >/dev/null 2>&1 || true
        if daemon_answers; then "$tokenward" stop >/dev/null; fi
        mkdir -p "$HOME/Library/Logs"
        launchctl bootstrap "$domain" "$plist"
        did+=("started the daemon as the launchd agent $plist_label")
      fi
      ;;
    none)
      if daemon_answers; then
        if ((binaries_changed)); then
          "$tokenward" stop >/dev/null
          "$tokenward" start >/dev/null
          did+=("restarted the daemon with the new binary (tokenward start)")
        fi
      else
        "$tokenward" start >/dev/null
        did+=("started the daemon (tokenward start)")
      fi
      ;;
  esac

  if ! command -v git >/dev/null; then
    say "git is not installed: after installing it, run: tokenward setup git --global"
  elif ! git_is_set_up; then
    "$tokenward" setup git --global >/dev/null
    did+=("set up git: credential.helper = $bindir/git-credential-tokenward, credential.useHttpPath = true (tokenward setup git --global)")
  fi

  if ! command -v hg >/dev/null; then
    say "hg is not installed: after installing Mercurial, run: tokenward setup hg"
  else
    local hg_said
    hg_said=$("$tokenward" setup hg)
    [[ $hg_said == *already* ]] || did+=("$hg_said")
  fi

  if ((${#did[@]})); then
    say "done:"
    printf '  - %s\n' "${did[@]}"
  else
    say "everything was already installed and up to date; nothing changed"
  fi
  case ":$PATH:" in
    *":$bindir:"*) ;;
    *) say "add $bindir to your PATH (for example in ~/.profile): export PATH=\"$bindir:\$PATH\"" ;;
  esac
  if ((zsh_changed)) && command -v zsh >/dev/null && [[ -z ${PREFIX:-} ]]; then
    say "zsh: for completions, add  fpath+=(${zsh_completion%/*})  before compinit in ~/.zshrc"
  fi
  say "next: add a token (read from a prompt, never from the command line):"
  say "  tokenward token add https://your.server --user YOU"
  say "then check the setup with: tokenward doctor"
}

uninstall_all() {
  [[ -x $tokenward ]] || tokenward=$(command -v tokenward || true)

  local unit present=()
  for unit in "${units[@]}"; do
    [[ -f $unit_dir/$unit ]] && present+=("$unit")
  done
  if ((${#present[@]})); then
    if command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
      systemctl --user disable --now "${present[@]}" >/dev/null 2>&1 || true
    fi
    for unit in "${present[@]}"; do
      rm -f "$unit_dir/$unit"
      did+=("removed $unit_dir/$unit")
    done
    if command -v systemctl >/dev/null; then systemctl --user daemon-reload >/dev/null 2>&1 || true; fi
  fi
  if [[ -f $plist ]]; then
    launchctl bootout "gui/$(id -u)/$plist_label" >/dev/null 2>&1 || true
    rm -f "$plist"
    did+=("removed the launchd agent $plist")
  fi

  if [[ -n $tokenward ]]; then
    if "$tokenward" status >/dev/null 2>&1; then
      "$tokenward" stop >/dev/null
      did+=("stopped the daemon")
    fi
    if command -v git >/dev/null; then
      local git_said
      git_said=$("$tokenward" unsetup git --global)
      [[ $git_said == *"nothing to do"* ]] || did+=("$git_said")
    fi
    local hg_said
    hg_said=$("$tokenward" unsetup hg)
    [[ $hg_said == *"not enabled"* ]] || did+=("$hg_said")
  else
    say "tokenward is not installed in $bindir or on PATH: git and hg are left as they are"
  fi

  # The extension is ours alone; the rest of the data dir holds the tokens.
  if [[ -d $data_dir/hg ]]; then
    rm -rf -- "${data_dir:?}/hg"
    did+=("removed the hg extension from $data_dir/hg")
  fi
  local file
  for file in "$bindir/tokenward" "$bindir/git-credential-tokenward" "$manpage" \
    "$bash_completion" "$zsh_completion" "$fish_completion"; do
    if [[ -e $file ]]; then
      rm -f -- "$file"
      did+=("removed $file")
    fi
  done

  if ((${#did[@]})); then
    say "uninstalled:"
    printf '  - %s\n' "${did[@]}"
  else
    say "tokenward was not installed; nothing to do"
  fi
  say "kept your tokens: their list in $data_dir and their secrets in the keychain (or the file vault there)."
  say "to delete them too, run 'tokenward token rm ID' for each before uninstalling, or remove $data_dir"
}

# One compound command with the exit inside: bash reads a script as it runs
# it, so a script replaced during the build (git pull) must not be read on.
{
  case $mode in
    install) install_all ;;
    uninstall) uninstall_all ;;
  esac
  exit
}
