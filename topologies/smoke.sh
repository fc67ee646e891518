#!/usr/bin/env bash
# Mininet smoke test: the small topology (client, router, two switches, three servers) with the
# embedded switch; one DVIPA -> one server path programmed over P4Runtime (topologies/
# p4rt_program.py, a stand-in for the controller); TCP connections through the DVIPA must work,
# must fail while the switch is killed (the CLI's `switch kill`), and work again after
# `switch restart` + reprogramming. Exits non-zero on any failure.
#
#   topologies/smoke.sh [--no-build] [--target embedded|bmv2]
#
# Needs root, Debian's mininet package (/usr/bin/python3) and the venv .venv (p4runtime bindings;
# scripts/install-test-deps.sh). The topology is always torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=1
TARGET=embedded
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --target) TARGET="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
  echo "=== cargo build -p dvipa-switch -p dvipa-testbed"
  cargo build -q -p dvipa-switch -p dvipa-testbed
fi
for b in dvipa-echo dvipa-conns; do
  [ -x "$ROOT/target/debug/$b" ] || { echo "smoke.sh: target/debug/$b missing" >&2; exit 2; }
done
# P4Runtime/Thrift ports: the topology's (9559/9560, 9090/9091) plus an offset that is free now
OFFSET=""
for try in $(seq 0 40); do
  off=$(( 20000 + (($$ + try * 7) % 400) * 10 ))
  busy=0
  for p in $((9559 + off)) $((9560 + off)) $((9090 + off)) $((9091 + off)); do
    if ss -Htln "sport = :$p" | grep -q .; then busy=1; fi
  done
  if [ "$busy" = 0 ]; then OFFSET=$off; break; fi
done
[ -n "$OFFSET" ] || { echo "smoke.sh: no free port range" >&2; exit 2; }
LOGDIR="$ROOT/target/mininet-smoke"
rm -rf "$LOGDIR"
echo "=== Mininet smoke: topologies/small.json, target $TARGET, port offset $OFFSET, logs $LOGDIR"
set +e
/usr/bin/python3 "$ROOT/topologies/run.py" --topo "$ROOT/topologies/small.json" \
  --target "$TARGET" --port-offset "$OFFSET" --log-dir "$LOGDIR" --smoke
rc=$?
set -e
if [ "$rc" != 0 ]; then
  echo "=== switch logs:"; tail -n 20 "$LOGDIR"/*.log 2>/dev/null || true
  echo "SMOKE FAILED (rc $rc)"
  exit 1
fi
echo "SMOKE PASSED"
