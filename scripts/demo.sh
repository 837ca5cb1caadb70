#!/usr/bin/env bash
# The main job: builds dvrmesh, brings up a sealed lab in network namespaces (three real agents,
# VMs of two tenants with overlapping CIDRs, an upstream router and an internet host), runs the
# traffic matrix over every DVR path, prints it with the time to full connectivity, and tears
# everything down. Needs root (namespaces); touches nothing outside the namespaces it creates.
#
# Usage: sudo scripts/demo.sh [--keep]     (--keep leaves the lab up: dvrmesh-lab status / down)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the lab creates network namespaces: run as root" >&2
  exit 1
fi
scripts/setup.sh
echo "==> building dvrmesh and dvrmesh-lab"
cargo build --quiet -p dvrmesh-node -p testbed --bins
exec target/debug/dvrmesh-lab demo "$@"
