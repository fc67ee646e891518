#!/usr/bin/env bash
# The README's demo command: `dvipa demo` (the namespace cluster on the embedded switch),
# release build. Arguments go to `dvipa demo` (`scripts/demo.sh --help`).
# On a fresh Debian 12 machine the build needs protoc (the etcd-client crate of controller HA
# compiles etcd's .proto files with it): installed here when it is missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  echo "demo: installing protobuf-compiler (protoc), which the build needs" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q protobuf-compiler >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q protobuf-compiler >/dev/null; }
fi
exec cargo run --release -p dvipa -- demo "$@"
