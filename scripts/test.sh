#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need, then format, lints and the whole test suite.
# Usage: sudo scripts/test.sh   (root: the datapath and lab tests create network namespaces; the
#        compose lab's chaos test runs containers, so docker must answer: started here if it
#        does not, and the test fails, not skips, if it still cannot be used)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "error: scripts/test.sh must run as root: the datapath and lab tests create network" >&2
  echo "       namespaces, veth pairs and nftables tables (run: sudo scripts/test.sh)" >&2
  exit 1
fi

scripts/setup.sh --compose

# The compose chaos test (testbed/tests/compose_chaos.rs) needs the docker daemon.
scripts/docker-ready.sh
# Docker answers: the compose chaos test must run, a docker failure in it is a test failure.
export DVRMESH_COMPOSE_REQUIRED=1

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "==> rustup component add rustfmt clippy"
  if ! rustup component add rustfmt clippy; then
    echo "error: rustfmt and clippy are missing and rustup could not add them" >&2
    exit 1
  fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (the lab's scenario tests run the real binaries)"
cargo build --workspace --bins --quiet
echo "==> cargo test"
cargo test --workspace
