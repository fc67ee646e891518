#!/usr/bin/env bash
# Runs every dvipa test suite. This is the README's test command and what CI (.ci/run) calls.
# On a fresh Debian 12 machine (root) it installs what the suites need first.
#   scripts/test-all.sh            everything
#   SKIP_INSTALL=1 scripts/...     do not touch apt/pip (already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n=== %s ===\n' "$*"; }
summary=()
record() { summary+=("$1: $2"); }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step "install test dependencies"
  scripts/install-test-deps.sh
fi

# Every prerequisite is installed now: a test that would skip for lack of one fails instead
# (crates/dvipa-testbed/src/skip.rs). DVIPA_TESTS_NO_SKIP=0 lets skips pass on a partial machine.
export DVIPA_TESTS_NO_SKIP=${DVIPA_TESTS_NO_SKIP:-1}

step "compiled P4 program (p4src/p4c-out/bmv2) against p4src/dvipa.p4"
scripts/p4-stamp.sh
if grep -q "$(sha256sum p4src/dvipa.p4 | cut -d' ' -f1)" p4src/p4c-out/bmv2/dvipa.p4.sha256 2>/dev/null; then
  record "p4c output" "matches dvipa.p4"
else
  record "p4c output" "STALE (warning): dvipa.p4 changed since p4src/p4c-out/bmv2 was compiled"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
record fmt ok

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
record clippy ok

step "cargo doc -D warnings (the crate docs that explain the layout build without broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
record "cargo doc" ok

step "import cycles between the controller shell's modules (scripts/module-cycles.sh)"
scripts/module-cycles.sh
record "module cycles" "none in controller/src"

step "cargo test --workspace"
mkdir -p target
cargo test --workspace --locked 2>&1 | tee target/cargo-test.log
passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' target/cargo-test.log | awk '{s+=$4} END {print s+0}')
record "cargo test" "$passed passed"

# Python suites (PTF packet tests, P4Runtime interop) run from the venv the installer made.
if [ -d bmv2-tests ] && [ -x bmv2-tests/run.sh ]; then
  step "packet tests (PTF) on the embedded switch"
  bmv2-tests/run.sh --target embedded
  record "ptf embedded" ok
  step "packet test TableFull on the embedded switch answering like bmv2 (--flavor bmv2)"
  bmv2-tests/run.sh --target embedded --flavor bmv2 --no-build dvipa_tests.TableFull
  record "ptf embedded --flavor bmv2 (TableFull)" ok
  step "packet tests on the embedded switch as Stratum on a Tofino (--flavor stratum-bfrt)"
  bmv2-tests/run.sh --target embedded --flavor stratum-bfrt --no-build
  record "ptf embedded --flavor stratum-bfrt" ok
fi
if [ -x scripts/interop-test.sh ]; then
  step "P4Runtime interop test against the official Python bindings"
  scripts/interop-test.sh
  record interop ok
fi
if [ -x topologies/smoke.sh ]; then
  step "Mininet smoke test (small topology, embedded switch)"
  # Two passes, about 25 s together: direct (TCP through the DVIPA, switch kill/restart) and
  # with the real controller and agents (30 streams through takeover and takeback, started
  # once every server is a ready target; topologies/README.md).
  topologies/smoke.sh
  record "mininet smoke" ok
fi
if [ -x scripts/e2e-test.sh ]; then
  step "end-to-end scenario tests in network namespaces"
  scripts/e2e-test.sh
  record e2e ok
  step "end-to-end scenario against the Stratum-bfrt flavour (target = tofino, cold backup, ~30 s)"
  timeout 300 scripts/e2e-test.sh --only cold --switch-flavor stratum-bfrt
  record "e2e stratum-bfrt" ok
fi

step "summary"
printf '%s\n' "${summary[@]}"
