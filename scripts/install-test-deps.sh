#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian 12 machine (root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# iptables for the failure-detection tests (controller/tests/e2e_liveness.rs: path drops;
# e2e_dataplane.rs: the router namespace's FORWARD drop)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
# protoc: the etcd-client crate (controller HA, issue 17) compiles etcd's .proto files with it.
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# etcd: the HA tests start their own 3-member cluster on loopback (controller/tests/ha_*.rs).
command -v etcd >/dev/null || need_apt+=(etcd-server)
# etcdctl (Debian package etcd-client, not pulled in by etcd-server): the tests wait for the
# cluster's health and set up etcd users and roles with it (controller/src/demo/etcd.rs).
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
# openssl: certificates for the P4Runtime-over-TLS interop test.
command -v openssl >/dev/null || need_apt+=(openssl)
# Mininet for the topology smoke test (no OVS needed: hosts + the P4 switch class only).
/usr/bin/python3 -c 'import mininet.net' 2>/dev/null || need_apt+=(mininet)
# BGP advertisement (issue 18): GoBGP (the speaker the controller drives over gRPC) and BIRD 2
# (the router in the testbed's router namespace). The packages enable systemd units; the tests
# start their own daemons with temporary configs, so stop any the packages started.
command -v gobgpd >/dev/null || need_apt+=(gobgpd)
command -v bird >/dev/null || need_apt+=(bird2)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now gobgpd bird 2>/dev/null || true
  fi
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
if [ -f requirements-test.txt ]; then
  # A venv left half-made (e.g. an interrupted run) has no pip: make it again.
  if [ ! -x .venv/bin/pip ]; then
    rm -rf .venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
fi
