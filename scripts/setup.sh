#!/usr/bin/env bash
# Installs what dvrmesh's lab and tests need on a fresh Debian machine (root): nftables (and its
# libnftables), iproute2, util-linux (nsenter, setsid, unshare), procps (kill: the lab's chaos
# verbs signal agents), a C++ compiler (g++: the fuzz smoke builds libFuzzer), iperf3 and keepalived
# (the benchmark harness's data plane and failover baseline), busybox (its udhcpc is the lab VMs'
# DHCP client). With --compose,
# also what the compose lab needs: docker (docker.io, with iptables), docker-compose (unless
# `docker compose` works), and mmdebstrap (unless debootstrap is there) to build the lab's base
# image from Debian's packages.
#
# Usage: scripts/setup.sh [--compose]
set -euo pipefail
compose=0
[ "${1:-}" = --compose ] && compose=1
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The benchmark harness (dvrmesh-lab bench): iperf3 for the data plane, keepalived for failover.
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
if [ "$compose" = 1 ]; then
  command -v docker >/dev/null 2>&1 || need+=(docker.io)
  if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    need+=(docker-compose)
  fi
  command -v mmdebstrap >/dev/null 2>&1 || command -v debootstrap >/dev/null 2>&1 || need+=(mmdebstrap)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: ${need[*]} missing; install them (as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed (install a Rust toolchain, 1.88 or newer)" >&2
  exit 1
fi
