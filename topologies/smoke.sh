#!/usr/bin/env bash
# Mininet smoke test on the small topology (client, router, two switches, three servers) with
# the embedded switch, in two runs:
#  1. direct: one DVIPA -> one server path programmed over P4Runtime (topologies/p4rt_program.py);
#     TCP connections through the DVIPA must work, must fail while the switch is killed (the
#     CLI's `switch kill`), and work again after `switch restart` + reprogramming;
#  2. controller: the real `dvipa controller` and an agent per server; once every server is a
#     ready target (netstat vdpt) and the primary holds the controller's entries (dvipa diff),
#     30 streams start and must survive killing the primary switch (takeover to sw2) and
#     restarting it (takeback), with streams on every server.
# Exits non-zero on any failure. In the controller run the router learns the DVIPA over BGP (BIRD 2
# in the router host, a gobgpd the controller drives; docs/bgp.md) when gobgpd and bird are
# installed, from the `ip route` hooks otherwise; DVIPA_ADVERTISE=bgp|hooks forces one.
#
#   topologies/smoke.sh [--no-build] [--target embedded|bmv2] [--no-controller]
#
# Needs root, Debian's mininet package (/usr/bin/python3) and the venv .venv (p4runtime bindings;
# scripts/install-test-deps.sh). The topology is always torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=1
TARGET=embedded
CONTROLLER=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --target) TARGET="$2"; shift 2 ;;
    --no-controller) CONTROLLER=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "smoke.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "smoke.sh: must run as root" >&2; exit 2
fi
if ! /usr/bin/python3 -c 'import mininet.net' 2>/dev/null; then
  echo "smoke.sh: Mininet is missing: apt-get install -y mininet" >&2; exit 2
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "smoke.sh: $ROOT/.venv is missing (p4runtime bindings): scripts/install-test-deps.sh" >&2
  exit 2
fi
if [ "$TARGET" = bmv2 ] && ! command -v simple_switch_grpc >/dev/null; then
  echo "SKIPPED: smoke.sh --target bmv2: simple_switch_grpc is not on PATH"; exit 0
fi
if [ "$BUILD" = 1 ]; then
  echo "=== cargo build -p dvipa-switch -p dvipa-testbed -p dvipa -p dvipa-agent"
  cargo build -q -p dvipa-switch -p dvipa-testbed -p dvipa -p dvipa-agent
fi
BINS=(dvipa-echo dvipa-conns)
[ "$CONTROLLER" = 1 ] && BINS+=(dvipa dvipa-agent)
for b in "${BINS[@]}"; do
  [ -x "$ROOT/target/debug/$b" ] || { echo "smoke.sh: target/debug/$b missing" >&2; exit 2; }
done
# P4Runtime/Thrift/admin ports: the topology's (9559/9560, 9090/9091, 7071) plus a free offset
OFFSET=""
for try in $(seq 0 40); do
  off=$(( 20000 + (($$ + try * 7) % 400) * 10 ))
  busy=0
  for p in $((9559 + off)) $((9560 + off)) $((9090 + off)) $((9091 + off)) $((7071 + off)); do
    if ss -Htln "sport = :$p" | grep -q .; then busy=1; fi
  done
  if [ "$busy" = 0 ]; then OFFSET=$off; break; fi
done
[ -n "$OFFSET" ] || { echo "smoke.sh: no free port range" >&2; exit 2; }
LOGDIR="$ROOT/target/mininet-smoke"
rm -rf "$LOGDIR"
run() {
  local name=$1; shift
  echo "=== Mininet smoke ($name): topologies/small.json, target $TARGET, port offset $OFFSET," \
       "logs $LOGDIR/$name"
  set +e
  /usr/bin/python3 "$ROOT/topologies/run.py" --topo "$ROOT/topologies/small.json" \
    --target "$TARGET" --port-offset "$OFFSET" --log-dir "$LOGDIR/$name" --smoke "$@"
  local rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    echo "=== logs ($name):"; tail -n 20 "$LOGDIR/$name"/*.log 2>/dev/null || true
    echo "SMOKE FAILED ($name, rc $rc)"
    exit 1
  fi
}
run direct
if [ "$CONTROLLER" = 1 ]; then
  run controller --controller
fi
echo "SMOKE PASSED"
