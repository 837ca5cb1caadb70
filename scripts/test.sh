#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need, then format, lints and the whole test suite.
# Usage: sudo scripts/test.sh   (root: the datapath and lab tests create network namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (the lab's scenario tests run the real binaries)"
cargo build --workspace --bins --quiet
echo "==> cargo test"
cargo test --workspace
