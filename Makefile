# Everything a fresh machine needs is installed by `make setup` (called by the other targets).
#   make demo   - build the module, start a backend, a built-in 1.40.0 initiator and an Envoy with
#                 our module, and send requests through a reverse tunnel
#   make test   - unit tests + integration tests against the real Envoy 1.40.0 binary
.PHONY: setup build check-symbols unit integration test demo clean

SHELL := /bin/bash
CARGO ?= cargo
MODULE := target/release/libreverse_tunnel.so

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release -p reverse_tunnel
	@ls -l $(MODULE)

check-symbols: build
	@scripts/check-symbols.sh $(MODULE)

unit: setup
	$(CARGO) test -p reverse_tunnel -p envoy-abi

# Integration tests start real Envoy processes; run them one at a time on a 2-core machine.
integration: build
	$(CARGO) test --release -p rt-integration -- --test-threads=1

# Runs everything and ends with one summary line over all cargo test runs ("N passed, N failed").
test: check-symbols
	@set -o pipefail; { $(MAKE) --no-print-directory unit && $(MAKE) --no-print-directory integration; } 2>&1 | tee target/test-output.log; \
	  rc=$$?; scripts/test-summary.sh target/test-output.log; exit $$rc

demo: build
	$(CARGO) run --release -q -p rt-integration --bin demo

clean:
	$(CARGO) clean
