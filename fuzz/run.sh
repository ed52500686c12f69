#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: fuzz/run.sh [SECONDS] (default 30).
# Exits non-zero when a target crashes (the input is kept under
# fuzz/artifacts/TARGET/ and shown; turn it into a regression test in the
# owning module) and prints the executions per target.
#
# Targets (fuzz/fuzz_targets/): gitcred_parse (git's credential protocol),
# wire_decode (the daemon's request decoder), relay_head (a client
# connection to the relay: head scan, hyper with the relay's limits, guards,
# upstream request building). Seeds from the golden tests are committed in
# fuzz/seeds/TARGET/; what the fuzzer finds grows fuzz/corpus/TARGET/
# (gitignored, kept between runs).
#
# Toolchain: cargo-fuzz (libFuzzer through libfuzzer-sys) on the one stable
# toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take cargo-fuzz's
# -Zsanitizer=address, whose runtime ships with the x86_64 Linux std.
# The build is --dev with opt-level 1 (fuzz/Cargo.toml): a first build
# takes minutes on two shared cores, later ones are incremental.
#
# tests/run.sh runs a smoke pass of 30 s per target. The longer run, before
# a release or after touching a parser:
#   bash fuzz/run.sh 1800        # 30 min per target
#   FUZZ_JOBS=2 bash fuzz/run.sh 3600   # two libFuzzer workers per target
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
jobs=${FUZZ_JOBS:-1}
parallel=()
if ((jobs > 1)); then
  # Each worker logs to fuzz-N.log here; the summary adds them up.
  parallel=(-jobs="$jobs" -workers="$jobs")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

echo "== building the fuzz targets"
cargo fuzz build --dev

status=0
summary=()
for target in gitcred_parse wire_decode relay_head; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  echo "== $target: ${seconds}s"
  # -timeout: one input taking 10 s is a hang worth reporting.
  if cargo fuzz run --dev "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "${parallel[@]}" >"$log" 2>&1; then
    result=clean
  else
    result=CRASH
    status=1
    grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact_prefix" "$log" | head -20 || true
  fi
  runs=$( { cat "$log"; cat fuzz-*.log 2>/dev/null || true; } | awk '/stat::number_of_executed_units:/ { sum += $2 } END { print sum + 0 }')
  rm -f fuzz-*.log
  summary+=("$target: ${runs:-?} executions, $result")
  rm -f "$log"
done
printf '== fuzz summary\n'
printf '%s\n' "${summary[@]}"
exit $status
