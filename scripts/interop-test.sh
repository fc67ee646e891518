#!/usr/bin/env bash
# P4Runtime interop test of the Rust client (crates/p4rt), in two modes sharing one scenario
# (crates/p4rt/examples/interop_client.rs):
#   python  against a recording P4Runtime server on the official Python bindings (p4runtime +
#           grpcio from the test venv): every request and answer compared field by field;
#   switch  against a real dvipa-switch in a network namespace (root, or unprivileged user
#           namespaces, for that part only): roles and arbitration, pipeline and cookie, writes
#           with per-update errors, reads, counters, a digest from real SYNs and its ack, idle
#           notifications, the frames the switch forwards.
#   tls     the official bindings over TLS and mutual TLS against a real dvipa-switch started
#           with simple_switch_grpc's --grpc-server-ssl options (certificates made with openssl).
# Each mode prints a "N passed, N failed" line; exits non-zero if any mode failed.
#   scripts/interop-test.sh [--python | --switch | --tls]      (default: all three)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=${CARGO_TARGET_DIR:-target}/debug
P4INFO=p4src/p4c-out/bmv2/dvipa.p4info.txtpb
modes=(python switch tls)
case "${1:-}" in
  --python) modes=(python) ;;
  --switch) modes=(switch) ;;
  --tls) modes=(tls) ;;
  "") ;;
  *) echo "usage: $0 [--python | --switch | --tls]" >&2; exit 2 ;;
esac

cargo build -p p4rt --example interop_client --locked || exit 1
if [[ " ${modes[*]} " == *" switch "* || " ${modes[*]} " == *" tls "* ]]; then
  cargo build -p dvipa-switch --bin dvipa-switch --locked || exit 1
fi

status=0
results=()
for m in "${modes[@]}"; do
  printf '\n--- interop mode: %s ---\n' "$m"
  log=$(mktemp)
  if [ "$m" = python ]; then
    "$PY" crates/p4rt/interop/interop.py "$BIN/examples/interop_client" "$P4INFO" 2>&1 | tee "$log"
  elif [ "$m" = tls ]; then
    GRPC_VERBOSITY=NONE timeout 120 "$PY" crates/p4rt/interop/tls_interop.py "$BIN/dvipa-switch" 2>&1 | tee "$log"
  else
    timeout 120 "$PY" crates/p4rt/interop/switch_interop.py "$BIN/dvipa-switch" \
      "$BIN/examples/interop_client" "$P4INFO" 2>&1 | tee "$log"
  fi
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  rm -f "$log"
  results+=("$m: ${line:-no result line} (exit $rc)")
  [ "$rc" -eq 0 ] || status=1
done
printf '\n--- interop summary ---\n'
printf '%s\n' "${results[@]}"
exit "$status"
