#!/usr/bin/env bash
# The dvipa packet-test suite (PTF) against one target:
#
#   bmv2-tests/run.sh --target embedded      # the project's switch (crates/dvipa-switch), always runs
#   bmv2-tests/run.sh --target bmv2          # simple_switch_grpc from PATH; skipped if not installed
#
# Options:
#   --switch PATH     switch binary to run (default: embedded = cargo-built target/debug/dvipa-switch,
#                     or $DVIPA_SWITCH; bmv2 = simple_switch_grpc on PATH)
#   --p4info PATH     P4Info to push (default p4src/p4c-out/bmv2/dvipa.p4info.txtpb, or $DVIPA_P4INFO)
#   --json PATH       bmv2 JSON to push (default p4src/p4c-out/bmv2/dvipa.json when it exists)
#   --flavor NAME     embedded switch only: whose answers it gives where P4Runtime servers differ,
#                     "standard" (default: a full table is RESOURCE_EXHAUSTED) or "bmv2" (a full
#                     table is UNKNOWN, "Error when adding match entry to target", as on
#                     simple_switch_grpc); TableFull then expects that answer; or
#                     "stratum-bfrt" (Stratum on a Tofino: the TNA P4Info p4src/tna/, a packed
#                     BfPipelineConfig of a stand-in compiler output, digests acked by the server,
#                     no idle notifications: CrtIdleTimeout is skipped)
#   --no-build        do not run cargo build for the embedded switch
#   NAME...           PTF test names to run (default: all), e.g. dvipa_tests.RoutingAndTtl
#
# What it does: a private network namespace (the switch's Thrift/gRPC ports cannot collide with
# anything), four veth pairs (switch port N = veth(2N-1), PTF port N = veth(2N-2)), the switch
# started with the simple_switch_grpc argument shape, then PTF inside the namespace. The namespace
# and the switch are removed on exit, also on failure or Ctrl-C. Exit status is non-zero when a
# test fails, the switch dies, or nothing could be run; 0 with a SKIPPED line when bmv2 is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TARGET=""
SWITCH="${DVIPA_SWITCH:-}"
P4INFO="${DVIPA_P4INFO:-$ROOT/p4src/p4c-out/bmv2/dvipa.p4info.txtpb}"
JSON=""
FLAVOR=""
BUILD=1
TESTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET="$2"; shift 2 ;;
    --target=*) TARGET="${1#*=}"; shift ;;
    --switch) SWITCH="$2"; shift 2 ;;
    --p4info) P4INFO="$2"; shift 2 ;;
    --json) JSON="$2"; shift 2 ;;
    --flavor) FLAVOR="$2"; shift 2 ;;
    --flavor=*) FLAVOR="${1#*=}"; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) TESTS+=("$1"); shift ;;
  esac
done
case "$TARGET" in
  embedded|bmv2) ;;
  *) echo "run.sh: --target embedded|bmv2 is required" >&2; exit 2 ;;
esac
# How TableFull expects a full table to be answered on this target.
case "$TARGET:${FLAVOR:-standard}" in
  bmv2:standard) FULL_ANSWER=bmv2 ;;  # simple_switch_grpc, as observed (bmv2 1.15, PI f96af95)
  bmv2:*) echo "run.sh: --flavor is for the embedded switch only" >&2; exit 2 ;;
  embedded:standard) FULL_ANSWER=resource_exhausted ;;
  embedded:bmv2) FULL_ANSWER=bmv2 ;;
  embedded:stratum-bfrt) FULL_ANSWER=resource_exhausted ;;
  *) echo "run.sh: --flavor standard|bmv2|stratum-bfrt, not $FLAVOR" >&2; exit 2 ;;
esac
IDLE_NOTIFICATIONS=1
[ "$FLAVOR" = stratum-bfrt ] && IDLE_NOTIFICATIONS=0
SWITCH_OPTS=()
[ -n "$FLAVOR" ] && SWITCH_OPTS=(--flavor "$FLAVOR")

PY="$ROOT/.venv/bin/python"
PTF="$ROOT/.venv/bin/ptf"
if [ ! -x "$PY" ] || [ ! -x "$PTF" ]; then
  echo "run.sh: $ROOT/.venv is missing; run scripts/install-test-deps.sh first" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "run.sh: must run as root (network namespaces, raw sockets)" >&2
  exit 2
fi

if [ -z "$JSON" ] && [ -f "$ROOT/p4src/p4c-out/bmv2/dvipa.json" ]; then
  JSON="$ROOT/p4src/p4c-out/bmv2/dvipa.json"
fi

if [ "$TARGET" = bmv2 ]; then
  if [ -z "$SWITCH" ]; then
    if ! SWITCH=$(command -v simple_switch_grpc); then
      echo "SKIPPED: bmv2 target: simple_switch_grpc is not on PATH (install behavioral-model with" \
           "its gRPC server, see bmv2-tests/README.md)"
      exit 0
    fi
  fi
  if [ -z "$JSON" ]; then
    echo "run.sh: bmv2 needs the compiled program: p4src/p4c-out/bmv2/dvipa.json is missing;" \
         "run 'make -C p4src' (needs p4c) or pass --json" >&2
    exit 2
  fi
else
  if [ -z "$SWITCH" ]; then
    if [ "$BUILD" = 1 ]; then
      echo "=== cargo build -p dvipa-switch"
      cargo build -q -p dvipa-switch
    fi
    SWITCH="$ROOT/target/debug/dvipa-switch"
  fi
fi
if [ ! -x "$SWITCH" ]; then
  echo "run.sh: switch binary $SWITCH not found or not executable" >&2
  exit 2
fi

LOGDIR="$ROOT/target/bmv2-tests/$TARGET${FLAVOR:+-$FLAVOR}"
mkdir -p "$LOGDIR"
if [ "$FLAVOR" = stratum-bfrt ]; then
  # The TNA P4Info and a BfPipelineConfig packed (by the controller's own command) from a
  # stand-in compiler output; the P4Info checks below are v1model's (p4c's bmv2 ids).
  [ "$P4INFO" = "$ROOT/p4src/p4c-out/bmv2/dvipa.p4info.txtpb" ] && P4INFO="$ROOT/p4src/tna/dvipa.p4info.txtpb"
  [ "$BUILD" = 1 ] && cargo build -q -p dvipa --bin dvipa
  rm -rf "$LOGDIR/tofino-out"
  "$ROOT/target/debug/dvipa" pipeline stand-in --p4info "$P4INFO" -o "$LOGDIR/tofino-out" >/dev/null
  "$ROOT/target/debug/dvipa" pipeline pack --target tofino "$LOGDIR/tofino-out" \
    -o "$LOGDIR/device_config.bin"
  JSON="$LOGDIR/device_config.bin"
else
  echo "=== P4Info checks (official bindings vs docs/pipeline-contract.md)"
  DVIPA_P4INFO="$P4INFO" "$PY" -m unittest bmv2-tests/test_p4info.py 2>&1 | tail -n 3
fi
NS="dvipa-ptf-$$"
SWITCH_PID=""
PTF_PID=""
GRPC_ADDR="127.0.0.1:9559"

cleanup() {
  local rc=$?
  if [ -n "$PTF_PID" ]; then
    kill "$PTF_PID" 2>/dev/null || true
    wait "$PTF_PID" 2>/dev/null || true
  fi
  if [ -n "$SWITCH_PID" ] && kill -0 "$SWITCH_PID" 2>/dev/null; then
    kill "$SWITCH_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$SWITCH_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SWITCH_PID" 2>/dev/null || true
  fi
  ip netns del "$NS" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
# No IPv6 on the test links (no router solicitations or ND in the captures). /proc/sys/net is per
# namespace; no sysctl binary needed; a kernel without IPv6 has nothing to disable.
ip netns exec "$NS" sh -c 'for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 \
  /proc/sys/net/ipv6/conf/default/disable_ipv6; do [ -w "$f" ] && echo 1 > "$f"; done; true'
ip -n "$NS" link set lo up
SWITCH_IFS=()
PTF_IFS=()
for port in 1 2 3 4; do
  ptf_if="veth$((2 * port - 2))"
  sw_if="veth$((2 * port - 1))"
  ip -n "$NS" link add "$ptf_if" type veth peer name "$sw_if"
  ip -n "$NS" link set "$ptf_if" up
  ip -n "$NS" link set "$sw_if" up
  SWITCH_IFS+=(-i "$port@$sw_if")
  PTF_IFS+=(--interface "$port@$ptf_if")
done

echo "=== starting $TARGET switch: $SWITCH (log $LOGDIR/switch.log)"
ip netns exec "$NS" "$SWITCH" --no-p4 --device-id 0 "${SWITCH_OPTS[@]}" "${SWITCH_IFS[@]}" \
  -- --grpc-server-addr "$GRPC_ADDR" >"$LOGDIR/switch.log" 2>&1 &
SWITCH_PID=$!
sleep 0.5
if ! kill -0 "$SWITCH_PID" 2>/dev/null; then
  echo "run.sh: the switch exited at start-up:" >&2
  tail -n 20 "$LOGDIR/switch.log" >&2
  exit 1
fi

echo "=== PTF ($TARGET)"
PARAMS="grpc_addr='$GRPC_ADDR';p4info='$P4INFO';device_config='$JSON';target='$TARGET';full_answer='$FULL_ANSWER';idle_notifications='$IDLE_NOTIFICATIONS'"
# In the background and waited for, so that a TERM/INT to this script ends PTF at once too.
ip netns exec "$NS" "$PTF" --test-dir "$ROOT/bmv2-tests/ptf" --pypath "$ROOT/bmv2-tests/lib" \
  "${PTF_IFS[@]}" --test-params "$PARAMS" \
  --default-timeout 3 --default-negative-timeout 0.3 --test-case-timeout 60 \
  --log-file "$LOGDIR/ptf.log" "${TESTS[@]}" &
PTF_PID=$!
set +e
wait "$PTF_PID"
PTF_RC=$?
set -e
PTF_PID=""

if ! kill -0 "$SWITCH_PID" 2>/dev/null; then
  echo "run.sh: FAIL: the switch died during the tests; last lines of $LOGDIR/switch.log:" >&2
  tail -n 20 "$LOGDIR/switch.log" >&2
  exit 1
fi
if [ "$PTF_RC" != 0 ]; then
  echo "run.sh: FAIL: PTF exit status $PTF_RC (details in $LOGDIR/ptf.log)" >&2
  exit "$PTF_RC"
fi
echo "run.sh: $TARGET: all packet tests passed"
