#!/usr/bin/env bash
# Tests a built Debian package of dvrmesh in a clean container of the compose lab's base image
# (dvrmesh-base:bookworm, built from Debian's packages by compose/build-base.sh when missing;
# it has nftables and iproute2, the package's dependencies, so dpkg -i needs no network):
# dpkg -i works; `dvrmesh --version` is the package's version; the conffiles, the unit and the
# tmpfiles entry are in place; systemd-tmpfiles makes /var/lib/dvrmesh (0700); the packaged
# binary reads the shipped node.toml (it gets as far as the missing certificate), and runs with
# certificates issued as docs/operations.md says (datapath off, loopback), found by a plain
# `dvrmesh members`; a second dpkg -i keeps an edited node.toml; dpkg -r keeps it, dpkg -P
# removes it (and leaves the TLS files). On the host, the unit passes `systemd-analyze verify`
# when systemd-analyze is there. Then the dependencies: with nftables and iproute2 removed,
# dpkg -i refuses naming both; with them, the binary's libraries resolve and `dvrmesh doctor`
# passes every kernel check (a container with the compose nodes' capabilities, still no network).
# The container runs with --network none and default capabilities: nothing touches the host.
#
# Usage: sudo scripts/test-package.sh PATH.deb
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "${1:?usage: scripts/test-package.sh PATH.deb}")
start=$(date +%s)

compose/build-base.sh >&2
base=dvrmesh-base:bookworm
version=$(dpkg-deb -f "$deb" Version)

work=$(mktemp -d /var/tmp/dvrmesh-pkgtest.XXXXXX)
chmod 0755 "$work"  # apt's _apt user downloads into it
trap 'rm -rf --one-file-system "$work"' EXIT
cp "$deb" "$work/dvrmesh.deb"

# The base image has no systemd. systemd-standalone-tmpfiles (Debian's, fetched on the host:
# the container has no network) gives it systemd-tmpfiles, to apply the package's entry as
# systemd would at boot. Its dependencies (libacl1, libcap2, libselinux1) are in the base.
if ! (cd "$work" && apt-get download -qq systemd-standalone-tmpfiles >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$work" && apt-get download -qq systemd-standalone-tmpfiles)
fi

if command -v systemd-analyze >/dev/null; then
  echo "==> systemd-analyze verify dvrmesh.service" >&2
  dpkg-deb -x "$deb" "$work/root"
  # The unit as packaged, but starting the unpacked binary (this host has no /usr/bin/dvrmesh);
  # verified against this host's units (--root would need a whole systemd tree).
  mkdir "$work/verify"
  sed "s|/usr/bin/dvrmesh|$work/root/usr/bin/dvrmesh|" \
    "$work/root/usr/lib/systemd/system/dvrmesh.service" >"$work/verify/dvrmesh.service"
  out=$(systemd-analyze verify "$work/verify/dvrmesh.service" 2>&1) || {
    echo "$out" >&2
    echo "error: systemd-analyze verify failed" >&2
    exit 1
  }
  [ -z "$out" ] || { echo "$out" >&2; echo "error: systemd-analyze verify warned" >&2; exit 1; }
fi

contents=$(dpkg-deb -c "$deb")  # (not piped into grep -q: pipefail and SIGPIPE)
grep -q ' ./usr/share/doc/dvrmesh/operations.md$' <<<"$contents" ||
  { echo "error: the package lacks /usr/share/doc/dvrmesh/operations.md" >&2; exit 1; }

echo "==> dpkg -i in a clean $base container" >&2
docker run --rm -i --network none -v "$work:/pkg:ro" -e VERSION="$version" "$base" \
  bash -euo pipefail -s <<'IN_CONTAINER'
step() { echo "  - $*" >&2; }
step "dpkg -i"
dpkg -i /pkg/dvrmesh.deb >/dev/null
step "dvrmesh --version"
got=$(dvrmesh --version)
[ "$got" = "dvrmesh ${VERSION%-*}" ] || { echo "dvrmesh --version said '$got', package is $VERSION" >&2; exit 1; }
step "conffiles"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' dvrmesh)
for f in /etc/dvrmesh/node.toml /etc/dvrmesh/network-node.toml.example; do
  [ -f "$f" ] || { echo "$f missing" >&2; exit 1; }
  grep -q " $f " <<<"$conffiles" || { echo "$f is not a conffile: $conffiles" >&2; exit 1; }
done
step "unit, tmpfiles entry, docs"
# (The base image's dpkg excludes /usr/share/doc/* but copyright files: operations.md is checked
# in the package on the host.)
for f in /usr/lib/systemd/system/dvrmesh.service /usr/lib/tmpfiles.d/dvrmesh.conf \
  /usr/share/doc/dvrmesh/copyright; do
  [ -f "$f" ] || { echo "$f missing" >&2; exit 1; }
done
grep -qx 'ExecStart=/usr/bin/dvrmesh --config /etc/dvrmesh/node.toml agent' /usr/lib/systemd/system/dvrmesh.service
step "systemd-tmpfiles --create makes /var/lib/dvrmesh"
dpkg -i /pkg/systemd-standalone-tmpfiles_*.deb >/dev/null
[ ! -e /var/lib/dvrmesh ] || rmdir /var/lib/dvrmesh
systemd-tmpfiles --create dvrmesh.conf
[ "$(stat -c '%a %U' /var/lib/dvrmesh)" = "700 root" ] || { stat /var/lib/dvrmesh >&2; exit 1; }
step "the packaged agent reads the shipped node.toml (and stops at the missing certificate)"
if out=$(dvrmesh --config /etc/dvrmesh/node.toml agent 2>&1); then
  echo "the agent started without a certificate: $out" >&2; exit 1
fi
grep -q 'tls/ca.pem' <<<"$out" || { echo "expected the missing tls/ca.pem, got: $out" >&2; exit 1; }
step "certificates as docs/operations.md has them; the agent runs on them; plain 'dvrmesh members' finds it"
dvrmesh ca init --dir /root/ca >/dev/null
dvrmesh cert issue --ca /root/ca --node compute-1 --out /root/out >/dev/null
install -d -m 0700 /etc/dvrmesh/tls
cp /root/ca/ca.pem /root/ca/crl.pem /root/out/node.pem /root/out/node.key /etc/dvrmesh/tls/
cp /etc/dvrmesh/node.toml /root/node.toml.shipped
# No network here and no kernel to program: loopback addresses, no seeds, datapath off.
sed -i -e 's/192\.0\.2\.11/127.0.0.1/g' -e '/^seeds/d' -e 's/^# datapath = .*/datapath = "off"/' \
  -e '/^\[external\.public\]/,$d' /etc/dvrmesh/node.toml
dvrmesh --config /etc/dvrmesh/node.toml agent >/root/agent.log 2>&1 &
agent=$!
members=
for _ in $(seq 1 50); do
  members=$(dvrmesh members 2>/dev/null) && grep -q '^compute-1 ' <<<"$members" && break
  sleep 0.2
done
grep -q '^compute-1 ' <<<"$members" || { echo "members: $members" >&2; cat /root/agent.log >&2; exit 1; }
kill "$agent"
wait "$agent" || { echo "the agent did not stop cleanly on SIGTERM" >&2; cat /root/agent.log >&2; exit 1; }
cp /root/node.toml.shipped /etc/dvrmesh/node.toml
step "a second dpkg -i keeps an edited node.toml"
sed -i 's/^node_id = .*/node_id = "compute-7"/' /etc/dvrmesh/node.toml
dpkg -i /pkg/dvrmesh.deb >/dev/null </dev/null
grep -qx 'node_id = "compute-7"' /etc/dvrmesh/node.toml || { echo "node.toml was overwritten" >&2; exit 1; }
step "dpkg -r keeps the configuration, dpkg -P removes it but not the TLS files"
dpkg -r dvrmesh >/dev/null
[ ! -e /usr/bin/dvrmesh ] && grep -q compute-7 /etc/dvrmesh/node.toml
dpkg -P dvrmesh >/dev/null 2>&1  # (it says /etc/dvrmesh is not empty: tls/ is ours)
[ ! -e /etc/dvrmesh/node.toml ] && [ -f /etc/dvrmesh/tls/node.key ]
IN_CONTAINER
echo "==> the declared dependencies are enforced and enough: dpkg -i refuses without them; with them, doctor's kernel checks pass" >&2
# Capabilities as the compose lab's nodes get them (privileged fails on some engines); still no
# network. /proc/sys is read-only in a container: remounted as the compose entrypoint does.
docker run --rm -i --network none --cap-add ALL --cap-drop SYS_RESOURCE -v "$work:/pkg:ro" "$base" \
  bash -euo pipefail -s <<'IN_CONTAINER'
step() { echo "  - $*" >&2; }
step "without nftables and iproute2, dpkg -i refuses and names them"
dpkg -r --force-depends nftables iproute2 >/dev/null 2>&1
if out=$(dpkg -i /pkg/dvrmesh.deb 2>&1); then
  echo "dpkg -i installed dvrmesh without nftables and iproute2" >&2; exit 1
fi
for dep in nftables iproute2; do
  grep -q "depends on $dep" <<<"$out" || { echo "dpkg did not name $dep: $out" >&2; exit 1; }
done
IN_CONTAINER
docker run --rm -i --network none --cap-add ALL --cap-drop SYS_RESOURCE -v "$work:/pkg:ro" "$base" \
  bash -euo pipefail -s <<'IN_CONTAINER'
step() { echo "  - $*" >&2; }
step "the binary's libraries resolve"
dpkg -i /pkg/dvrmesh.deb >/dev/null
if ldd /usr/bin/dvrmesh | grep -q 'not found'; then ldd /usr/bin/dvrmesh >&2; exit 1; fi
step "dvrmesh doctor: every kernel feature the datapath uses works (probed in a throwaway namespace)"
mount -o remount,rw /proc/sys
out=$(dvrmesh doctor --json) || { echo "doctor failed: $out" >&2; exit 1; }
# (pretty JSON: each check's "group" line is followed by its "verdict" line)
kernel=$(grep -A1 '"group": "kernel"' <<<"$out" | grep -o '"verdict": "[a-z]*"' || true)
ok=$(grep -c '"ok"' <<<"$kernel" || true)
if grep -qv '"ok"' <<<"$kernel" || [ "$ok" -lt 8 ]; then
  echo "doctor's kernel checks are not all ok ($ok ok):" >&2; echo "$out" >&2; exit 1
fi
step "  $ok kernel checks ok"
IN_CONTAINER
echo "==> package test passed ($(($(date +%s) - start)) s)" >&2
