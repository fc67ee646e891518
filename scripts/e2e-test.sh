#!/usr/bin/env bash
# End-to-end failover scenario of issue 8 in network namespaces (docs/failover.md):
# client, router, two embedded switches (sw1 primary, sw2 ranked backup), three servers with
# dvipa-agent and dvipa-echo on the DVIPA (L2 direct server return), the real `dvipa controller`
# process, N long-lived streaming connections. Steps: kill the primary (takeover), restart it
# (takeback), move the DVIPA by command, restart the controller, stop the application on one
# server; the cold-backup run adds step 6, a SYN flood from spoofed sources (5,000 SYN/s for 5 s;
# the full 100k SYN/s for 10 s by hand: docs/security.md). Run once with a cold backup and once
# with hot standby. Exits non-zero on a failed step,
# and when the restarted controller moved the advertisement (the demo's step-4 NOTE): the
# persisted owner (state_dir) must keep the admin move of step 3 across the restart.
#
#   scripts/e2e-test.sh                          200 connections, debug build (CI)
#   scripts/e2e-test.sh --release --conns 10000 --interval-ms 1000
#   scripts/e2e-test.sh --only cold|hot|ha       one mode only
# The third mode (ha) is controller high availability (docs/ha.md): `dvipa demo --ha` with three
# controller replicas on a 3-member etcd (leader killed, etcd stopped, leader partitioned from
# etcd, leader and primary switch killed together).
# Every other option goes to `dvipa demo --full` (see `dvipa demo --help`).
# R learns the DVIPA over BGP (gobgpd driven by the controller, BIRD 2 in R; docs/bgp.md) when
# gobgpd and bird are installed (scripts/install-test-deps.sh), from `ip route` hooks otherwise;
# `--advertise hooks|bgp` forces one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: the end-to-end scenario needs root (network namespaces, veth, bridge)"
  exit 0
fi

profile=debug
build=(--locked)
only=both
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; build+=(--release) ;;
    --only) only=$2; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done

echo "=== building dvipa, dvipa-switch, dvipa-agent, dvipa-testbed ($profile) ==="
cargo build "${build[@]}" -p dvipa -p dvipa-switch -p dvipa-agent -p dvipa-testbed
bin="${CARGO_TARGET_DIR:-target}/$profile"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# One scenario; fails on a failed step and on the step-4 NOTE (advertisement moved across the
# controller restart).
scenario() {
  local rc=0
  "$bin/dvipa" demo --full --no-build --bin-dir "$bin" "$@" 2>&1 | tee "$out" || rc=1
  if grep -q "NOTE: the advertisement moved across the restart" "$out"; then
    echo "FAILED: step 4: the restarted controller did not keep the admin move (NOTE above)"
    rc=1
  fi
  return $rc
}

status=0
if [ "$only" = both ] || [ "$only" = cold ]; then
  echo
  echo "=== scenario 1/3: cold backup (the backup is programmed at takeover), then a SYN flood ==="
  scenario --flood-rate 5000 --flood-secs 5 "${args[@]}" || status=1
fi
if [ "$only" = both ] || [ "$only" = hot ]; then
  echo
  echo "=== scenario 2/3: hot standby (the backup is kept programmed) ==="
  scenario --hot-standby "${args[@]}" || status=1
fi
if [ "$only" = both ] || [ "$only" = ha ]; then
  echo
  echo "=== scenario 3/3: controller HA, three replicas on etcd (docs/ha.md) ==="
  if command -v etcd >/dev/null; then
    "$bin/dvipa" demo --ha --hot-standby --no-build --bin-dir "$bin" "${args[@]}" || status=1
  else
    echo "SKIPPED: no etcd (scripts/install-test-deps.sh installs etcd-server)"
  fi
fi
exit $status
