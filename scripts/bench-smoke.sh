#!/usr/bin/env bash
# Smoke run of every dvipa benchmark (tiny sizes, well under a minute once built) so the
# benchmark command keeps working. Prints the table and writes target/bench-smoke.json.
# Figures from a smoke run are not meaningful; run `--size default` on a quiet machine for those.
# The forwarding section needs root (network namespaces); without root it is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p dvipa-bench
if [ "$(id -u)" = 0 ]; then
    cargo build --release --locked -p dvipa-switch --example fwd_bench
fi
exec timeout 120 target/release/dvipa-bench all --size smoke --json target/bench-smoke.json "$@"
