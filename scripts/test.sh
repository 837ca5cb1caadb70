#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need, then format, lints and the whole test suite.
# Usage: scripts/test.sh            (as root on a fresh machine, or with the tools already present)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: ${need[*]} missing and cannot be installed (need root and apt-get); kernel tests will fail" >&2
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed (install a Rust toolchain, 1.80 or newer)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
