#!/usr/bin/env bash
# P4Runtime interop test: the Rust client (crates/p4rt) against a recording P4Runtime server on the
# official Python bindings (p4runtime + grpcio from the test venv). Exits non-zero on any mismatch
# and prints a "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
cargo build -p p4rt --example interop_client --locked
exec "$PY" crates/p4rt/interop/interop.py \
  "${CARGO_TARGET_DIR:-target}/debug/examples/interop_client" \
  p4src/p4c-out/bmv2/dvipa.p4info.txtpb
