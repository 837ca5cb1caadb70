#!/usr/bin/env bash
# Starts a local 3-agent dvrmesh cluster on 127.0.0.1 (QUIC gossip with mutual TLS), shows what
# each agent sees, then keeps it running until Ctrl-C. Everything lives in a temporary directory
# that is removed on exit.
#
# Usage: scripts/local-cluster.sh [--for SECONDS]   (no root needed; datapath off)
set -euo pipefail
cd "$(dirname "$0")/.."
run_for=""
while [ $# -gt 0 ]; do
  case "$1" in
    --for) run_for="${2:?--for needs a number of seconds}"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

echo "==> building dvrmesh"
cargo build --quiet -p dvrmesh-node
bin="$PWD/target/debug/dvrmesh"
work=$(mktemp -d /tmp/dvrmesh-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> cluster CA and node certificates in $work"
"$bin" ca init --dir "$work/ca" >/dev/null
base=$((17000 + RANDOM % 2000))
names=(compute-1 compute-2 network-1)
modes=(dvr dvr dvr_snat)
for i in 0 1 2; do
  n=${names[$i]}
  "$bin" cert issue --ca "$work/ca" --node "$n" --out "$work/$n" >/dev/null
  cat > "$work/$n.toml" <<TOML
node_id = "$n"
mode = "${modes[$i]}"
listen = "127.0.0.1:$((base + i))"
seeds = ["127.0.0.1:$base"]
tunnel_ip = "127.0.0.$((i + 1))"
snat_priority = $((100 + i * 50))
api_socket = "$n.sock"
data_dir = "data-$n"
gossip_interval_ms = 100
datapath = "off"

[tls]
ca = "ca/ca.pem"
cert = "$n/node.pem"
key = "$n/node.key"
TOML
  if [ "${modes[$i]}" != dvr_no_external ]; then
    printf '\n[external.public]\ninterface = "eth1"\n' >> "$work/$n.toml"
  fi
done

echo "==> starting 3 agents (logs in $work/*.log)"
start=$(date +%s%N)
for n in "${names[@]}"; do
  "$bin" agent --config "$work/$n.toml" 2> "$work/$n.log" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  ready=0
  for n in "${names[@]}"; do
    alive=$("$bin" members --json --api "$work/$n.sock" 2>/dev/null | grep -c '"alive"' || true)
    [ "$alive" = 3 ] && ready=$((ready + 1))
  done
  [ "$ready" = 3 ] && break
  sleep 0.1
done
echo "==> converged in $(( ($(date +%s%N) - start) / 1000000 )) ms (3 processes, QUIC + mutual TLS)"
for n in "${names[@]}"; do
  echo "--- dvrmesh members, as seen by $n"
  "$bin" members --api "$work/$n.sock"
done

echo "==> tenant configuration through compute-1, ports on each compute node (addresses claimed, no allocator)"
c1=(--api "$work/compute-1.sock")
"$bin" network create net-a --vni 100 "${c1[@]}" >/dev/null
"$bin" subnet create sub-a --network net-a --cidr 10.1.0.0/24 "${c1[@]}" >/dev/null
"$bin" external-network create public --cidr 203.0.113.0/24 --gateway 203.0.113.1 "${c1[@]}" >/dev/null
"$bin" router create r1 "${c1[@]}" >/dev/null
"$bin" router add-interface r1 --subnet sub-a "${c1[@]}" >/dev/null
"$bin" router set-gateway r1 --external-network public "${c1[@]}" >/dev/null
"$bin" port create vm-1 --network net-a --api "$work/compute-1.sock" >/dev/null & p1=$!
"$bin" port create vm-2 --network net-a --api "$work/compute-2.sock" >/dev/null & p2=$!
wait "$p1" "$p2"
sleep 0.5
echo "--- dvrmesh port list, as seen by network-1"
"$bin" port list --api "$work/network-1.sock"
echo "--- dvrmesh router list, as seen by network-1"
"$bin" router list --api "$work/network-1.sock"
echo
echo "Try: $bin members --api $work/compute-2.sock --json"
if [ -n "$run_for" ]; then
  sleep "$run_for"
else
  echo "Running; press Ctrl-C to stop and clean up."
  wait
fi
