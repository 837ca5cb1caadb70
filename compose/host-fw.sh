#!/usr/bin/env bash
# Lets routed (off-subnet) traffic cross the lab's own Docker bridges.
#
# Why: for an `internal: true` network Docker adds, in the host's FORWARD path,
#   DOCKER-ISOLATION-STAGE-1 ! -s SUBNET -o BRIDGE -j DROP  and  ! -d SUBNET -i BRIDGE -j DROP
# and Docker itself sets net.bridge.bridge-nf-call-iptables=1 on the host, so even frames that
# are only *bridged* between two containers go through those rules. SNAT'd and FIP traffic on the
# external network (198.51.100.x <-> 203.0.113.10) and the internet network is therefore dropped.
# DOCKER-USER runs before the isolation chain; these rules accept only frames that enter and
# leave the same lab bridge (container to container), so nothing reaches the host's interfaces.
#
# The rules name only the lab's own bridges (fixed names in docker-compose.yml); `del` removes
# exactly them. `dvrmesh-lab compose up` adds them, `dvrmesh-lab compose down` removes them.
#
# Usage: sudo compose/host-fw.sh add|del|status   (BRIDGES default: dvrl-external dvrl-internet)
set -euo pipefail
command -v iptables >/dev/null || { echo "host-fw.sh: iptables not found (it comes with docker.io)" >&2; exit 1; }
bridges=${BRIDGES:-dvrl-external dvrl-internet}
ipt() { iptables -w "$@"; }
case "${1:-status}" in
  add)
    iptables -w -n -L DOCKER-USER >/dev/null 2>&1 ||
      { echo "host-fw.sh: no DOCKER-USER chain (is dockerd running with iptables on?)" >&2; exit 1; }
    for b in $bridges; do
      ipt -C DOCKER-USER -i "$b" -o "$b" -j ACCEPT 2>/dev/null ||
        ipt -I DOCKER-USER -i "$b" -o "$b" -j ACCEPT
    done ;;
  del)
    for b in $bridges; do
      # Also removes copies an interrupted run may have left (bounded).
      for _ in 1 2 3 4 5 6 7 8; do
        ipt -C DOCKER-USER -i "$b" -o "$b" -j ACCEPT 2>/dev/null || break
        ipt -D DOCKER-USER -i "$b" -o "$b" -j ACCEPT
      done
    done
    exit 0 ;;
  status) ;;
  *) echo "usage: $0 add|del|status" >&2; exit 2 ;;
esac
ipt -L DOCKER-USER -v -n
