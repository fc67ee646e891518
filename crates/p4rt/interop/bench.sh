#!/usr/bin/env bash
# Write-throughput benchmark of the p4rt client (a benchmark, not a test): entries/s for batch
# sizes 1, 100 and 1000 against the Python recording server (official bindings) and against the
# embedded switch (dvipa-switch). Release build.
#   crates/p4rt/interop/bench.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ENTRIES=${1:-10000}
PY=${PYTHON:-.venv/bin/python}
P4INFO=p4src/p4c-out/bmv2/dvipa.p4info.txtpb
TARGET=${CARGO_TARGET_DIR:-target}/release
cargo build --release -p p4rt --example bench_write
cargo build --release -p dvipa-switch --bin dvipa-switch
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

echo "== Python recording server (official p4runtime bindings, grpcio) =="
port=$(free_port)
"$PY" crates/p4rt/interop/interop.py --serve "$port" "$P4INFO" >/dev/null &
pids+=($!)
wait_port "$port"
"$TARGET/examples/bench_write" "127.0.0.1:$port" "$P4INFO" "$ENTRIES"

echo "== embedded switch (dvipa-switch, no ports) =="
port=$(free_port)
"$TARGET/dvipa-switch" --no-p4 --log-level warn --grpc-server-addr "127.0.0.1:$port" &
pids+=($!)
wait_port "$port"
"$TARGET/examples/bench_write" "127.0.0.1:$port" "$P4INFO" "$ENTRIES"
