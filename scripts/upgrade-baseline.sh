#!/usr/bin/env bash
# Builds the agent of the release an upgrade starts from, for the upgrade test
# (testbed/tests/rollout.rs): the commit named in scripts/upgrade-baseline.commit, taken from this
# repository's history with `git archive` and built in its own target directory. Prints the
# binary's path (target/upgrade-baseline/dvrmesh-COMMIT). A second run reuses the binary.
# Usage: scripts/upgrade-baseline.sh [--path]   (--path: only print where the binary goes)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

commit=$(grep -v '^#' scripts/upgrade-baseline.commit | tr -d '[:space:]')
if ! [[ "$commit" =~ ^[0-9a-f]{40}$ ]]; then
  echo "error: scripts/upgrade-baseline.commit must hold one full commit id, found '$commit'" >&2
  exit 1
fi
base="$repo/target/upgrade-baseline"
out="$base/dvrmesh-$commit"
if [ "${1:-}" = "--path" ] || [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "error: commit $commit (the upgrade test's baseline) is not in this clone's history;" >&2
  echo "       a shallow clone lacks it: git fetch --unshallow, or clone without --depth" >&2
  exit 1
fi
src="$base/src-$commit"
if [ ! -f "$src/Cargo.toml" ]; then
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
fi
echo "==> building the agent of ${commit:0:12} (the upgrade test's baseline) in $base/target" >&2
(cd "$src" && CARGO_TARGET_DIR="$base/target" cargo build --quiet --locked -p dvrmesh-node --bin dvrmesh >&2)
cp "$base/target/debug/dvrmesh" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
