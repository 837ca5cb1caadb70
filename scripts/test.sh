#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need, then format, lints, the Debian package's
# install test and the whole test suite.
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

# CI builds once: incremental caches would only cost disk (a CI machine ran out of it).
export CARGO_INCREMENTAL=0
# What is left on the disk after each step, and on failure, so a full disk is seen as one.
disk() {
  echo "==> disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free, target/ $(du -sh target 2>/dev/null | cut -f1 || echo 0)"
}
on_exit() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "==> failed with status $status; the disk then:"
    df -h . /var/lib/docker 2>/dev/null || true
  fi
}
trap on_exit EXIT
disk

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
disk
echo "==> cargo build (the lab's scenario tests run the real binaries)"
cargo build --workspace --bins --quiet
disk
echo "==> Debian package: built from the debug build, installed in a clean base-image container"
deb=$(scripts/package.sh --profile dev --no-build)
scripts/test-package.sh "$deb"
disk
# The upgrade test (testbed/tests/rollout.rs) starts a lab on the previous release's agent and
# upgrades it node by node: that agent is built from this clone's history (about 2 min 20 s cold).
echo "==> the previous release's agent, for the upgrade test (scripts/upgrade-baseline.sh)"
scripts/upgrade-baseline.sh
disk
echo "==> cargo test"
cargo test --workspace
disk
# The benchmark harness at its quick size (every section, a few samples each; about 5 min on 2
# cores), into a temporary report so the committed figures stay those of a full run: it must not
# rot. BENCHMARKS.md says how to run it in full.
echo "==> benchmark harness, quick (dvrmesh-lab bench --quick)"
bench_out=$(mktemp -d)
cargo run --quiet -p testbed --bin dvrmesh-lab -- bench --quick \
  --out "$bench_out/BENCHMARKS.md" --plots "$bench_out/plots"
rm -rf "$bench_out"
disk
# Every decoder of outside input fuzzed for 20 s on its committed corpus (fuzz/README.md): 5 min
# on 2 cores (measured: 2 min 33 s to build the instrumented targets, then 7 x 21 s).
echo "==> fuzz smoke"
scripts/fuzz-smoke.sh 20
