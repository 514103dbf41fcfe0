# Everything a fresh machine needs is installed by `make setup` (called by the other targets).
#   make demo   - build the module, start a backend, a built-in 1.40.0 initiator and an Envoy with
#                 our module, and send requests through a reverse tunnel
#   make test   - unit tests + integration tests against the real Envoy 1.40.0 binary
.PHONY: setup build check-symbols unit integration test demo clean

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

test: check-symbols unit integration

demo: build
	$(CARGO) run --release -q -p rt-integration --bin demo

clean:
	$(CARGO) clean
