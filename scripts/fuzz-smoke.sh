#!/usr/bin/env bash
# Fuzz smoke: builds the cargo-fuzz targets of fuzz/ and runs each for a short while on its
# committed corpus; fails naming the target and the input that crashed it.
# Usage: scripts/fuzz-smoke.sh [SECONDS per target, default 20]
#   FUZZ_TARGET_DIR=DIR  build there instead of fuzz/target
#   CARGO_LOCK=FILE      run every cargo command under `flock FILE` (a shared build machine);
#                        the lock is not held while fuzzing
# Installs cargo-fuzz if missing. Stable rustc only: cargo-fuzz's -Z flags need RUSTC_BOOTSTRAP=1.
# The long runs and their figures: fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
targets=(gossip_frame gossip_linked gossip_value stream_frame election_datagram api_request config_file crl_pem dhcp_frame metadata_path)

cargo_() {
  if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" cargo "$@"; else cargo "$@"; fi
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz --locked"
  cargo_ install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# A development build without a sanitizer: 2.5 min on 2 cores where cargo-fuzz's default
# (optimised, one codegen unit, ASan) took 5 (and 10 with 16 codegen units); it still has debug
# assertions and overflow checks, and slower runs do not matter for a smoke run.
target_dir=$(realpath -m "${FUZZ_TARGET_DIR:-fuzz/target}")
build=(--dev --sanitizer none --target-dir "$target_dir")
# No debug info either: it is most of the link time, and a crash report names the input anyway.
export CARGO_PROFILE_DEV_DEBUG=false
bin=$target_dir/x86_64-unknown-linux-gnu/debug

echo "==> cargo fuzz build (${#targets[@]} targets)"
cargo_ fuzz build "${build[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  max_len=4096
  [ "$t" = gossip_frame ] && max_len=16384
  mkdir -p "$work/$t" "$work/artifacts/$t"
  echo "==> fuzz $t for ${secs}s on fuzz/corpus/$t"
  # New inputs go to a scratch corpus, never into the committed one.
  if ! "$bin/$t" "$work/$t" "fuzz/corpus/$t" -max_total_time="$secs" -max_len="$max_len" \
    -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1; then
    crash=$(ls "$work/artifacts/$t"/* 2>/dev/null | head -n 1 || true)
    echo "error: fuzz target $t failed: $(grep -m 1 -E 'panicked|ERROR: libFuzzer' "$work/$t.log" || echo 'see the log below')" >&2
    tail -n 40 "$work/$t.log" >&2
    if [ -n "$crash" ]; then
      mkdir -p fuzz/artifacts/"$t"
      cp "$crash" fuzz/artifacts/"$t"/
      echo "       input kept: fuzz/artifacts/$t/$(basename "$crash")" >&2
      echo "       reproduce:  RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/$(basename "$crash")" >&2
    fi
    failed+=("$t")
    continue
  fi
  grep -E '^Done [0-9]+ runs' "$work/$t.log" | sed "s/^/    $t: /" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzz smoke failed: ${failed[*]}" >&2
  exit 1
fi
echo "==> fuzz smoke: ${#targets[@]} targets, no crash"
