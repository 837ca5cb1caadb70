#!/usr/bin/env bash
# Builds the Debian package of dvrmesh (the binary, the systemd unit, the example configurations
# as conffiles, the tmpfiles entry; node/Cargo.toml [package.metadata.deb]) with cargo-deb, which
# is installed (`cargo install --locked`) when missing. Prints the .deb's path on stdout, last.
#
# Usage: scripts/package.sh [--profile release|dev] [--no-build]
#   --profile release  (default) the package to ship: builds target/release/dvrmesh first
#   --profile dev      packages target/debug/dvrmesh, stripped (what scripts/test.sh tests: it
#                      reuses the debug build instead of a release build of minutes)
#   --no-build         package the binary already built
# Env: CARGO (default: cargo), e.g. CARGO="flock /tmp/cargo.lock cargo" on a shared machine;
#      CARGO_TARGET_DIR as cargo reads it. The .deb goes to $CARGO_TARGET_DIR/debian/ (or
#      target/debian/).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
read -r -a cargo <<<"${CARGO:-cargo}"

# Pinned: the packaging is tested with this version, and cargo-deb warns that packaging a dev
# build (what the CI test does) may become an error in a later version.
cargo_deb=3.8.0
if [ "$("${cargo[@]}" deb --version 2>/dev/null)" != "cargo-deb $cargo_deb" ]; then
  echo "==> cargo install cargo-deb --locked --version $cargo_deb" >&2
  "${cargo[@]}" install cargo-deb --locked --version "$cargo_deb" >&2
fi

args=(-p dvrmesh-node --locked --profile "$profile")
[ "$build" = 1 ] || args+=(--no-build)
# The debug binary is 200 MB with its debug info: always strip, and no separate debug files.
[ "$profile" = dev ] && args+=(--strip --no-separate-debug-symbols --no-dbgsym)
echo "==> cargo deb ${args[*]}" >&2
start=$(date +%s)
# cargo-deb prints the path of the package it wrote, last.
deb=$("${cargo[@]}" deb "${args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "error: cargo deb did not name a package it wrote (got: $deb)" >&2; exit 1; }
echo "==> $deb ($(du -h "$deb" | cut -f1), $(($(date +%s) - start)) s)" >&2
echo "$deb"
