#!/usr/bin/env bash
# Builds the compose lab's base image without a registry: a Debian bookworm minbase root made by
# mmdebstrap (falls back to debootstrap) from Debian's mirror, then `docker import`.
# Cached: if the image already exists with the same package list nothing is done (--force
# rebuilds; an image made from another list is rebuilt).
# `dvrmesh-lab compose image` runs this; running it by hand is the same.
#
# Usage: sudo compose/build-base.sh [--force] [--tag TAG] [--mirror URL]
# Env:   BASE_TAG (default dvrmesh-base:bookworm), MIRROR (default http://deb.debian.org/debian)
set -euo pipefail

tag=${BASE_TAG:-dvrmesh-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --tag) tag=${2:?}; shift 2 ;;
    --mirror) mirror=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB (%d bytes)", $1/1e6, $1}'; }

# What the lab needs at run time: ip/bridge (iproute2), nft + libnftables.so.1 (nftables; the
# agent dlopens the library), iperf3, ps/sysctl (procps), nsenter/mount (util-linux, Essential),
# a probe tool (netcat-openbsd), ping (iputils-ping), and busybox (the VMs' DHCP client udhcpc
# and wget, which reads the metadata service).
pkgs=iproute2,nftables,iperf3,procps,util-linux,netcat-openbsd,iputils-ping,busybox

start=$(date +%s.%N)
if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  have=$(docker image inspect -f '{{index .Config.Labels "org.dvrmesh.base-packages"}}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$pkgs" ]; then
    echo "==> $tag exists, nothing to do (size $(size_of "$tag"); --force rebuilds)"
    exit 0
  fi
  echo "==> $tag was built from other packages (${have:-unlabelled}); rebuilding with $pkgs"
fi
[ "$(id -u)" = 0 ] || { echo "run as root (mmdebstrap/debootstrap need it)" >&2; exit 1; }

root=$(mktemp -d /var/tmp/dvrmesh-base.XXXXXX)
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT

# Keep the image small: no docs (but keep copyright files), man pages, info, locales.
excludes=(
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
)

echo "==> building $tag root in $root"
if command -v mmdebstrap >/dev/null; then
  # merged-usr hook: debootstrap-style /usr merge; without it mmdebstrap installs usrmerge,
  # which drags in perl (~50 MB).
  hooks=()
  [ -d /usr/share/mmdebstrap/hooks/merged-usr ] && hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
  mmdebstrap --variant=minbase --mode=root --include="$pkgs" "${excludes[@]}" "${hooks[@]}" \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/tmp/*' \
    bookworm "$root" "$mirror"
elif command -v debootstrap >/dev/null; then
  debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror"
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
    "$root"/var/log/*.log "$root"/var/log/apt/*
else
  echo "need mmdebstrap or debootstrap: apt-get update && apt-get install -y mmdebstrap" >&2
  exit 1
fi
# Docker manages these in every container.
: > "$root/etc/hostname"
: > "$root/etc/resolv.conf"

echo "==> docker import"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.dvrmesh.base-packages=$pkgs" \
  --message "dvrmesh lab base: debian bookworm minbase + $pkgs" \
  - "$tag" >/dev/null

end=$(date +%s.%N)
printf '==> built %s in %s s, size %s\n' "$tag" "$(awk "BEGIN{printf \"%.1f\", $end-$start}")" "$(size_of "$tag")"
