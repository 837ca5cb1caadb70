#!/usr/bin/env bash
# Makes sure the docker daemon answers (the compose lab's chaos test needs it): if `docker info`
# fails, tries `service docker start`, then dockerd in the background (log:
# /var/log/dvrmesh-dockerd.log), waiting at most 20 + 30 s; fails with docker's reason if it
# still does not answer. Root.
set -euo pipefail
ready() { docker info >/dev/null 2>&1; }
wait_ready() {  # wait_ready SECONDS
  local _
  for _ in $(seq 1 "$1"); do ready && return 0; sleep 1; done
  return 1
}
ready && exit 0
command -v docker >/dev/null 2>&1 || { echo "error: docker is not installed (scripts/setup.sh --compose)" >&2; exit 1; }
echo "==> the docker daemon does not answer: service docker start"
service docker start >/dev/null 2>&1 || true
if ! wait_ready 20 && command -v dockerd >/dev/null 2>&1; then
  echo "==> still no docker: starting dockerd in the background (log: /var/log/dvrmesh-dockerd.log)"
  nohup dockerd >/var/log/dvrmesh-dockerd.log 2>&1 &
  wait_ready 30 || true
fi
if ! ready; then
  echo "error: docker is not usable, and the compose lab's chaos test needs it:" >&2
  docker info 2>&1 | tail -3 >&2
  exit 1
fi
echo "==> docker answers"
