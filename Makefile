# Everything a fresh machine needs is installed by `make setup` (called by the other targets).
#   make demo   - build the module, start a backend, a built-in 1.40.0 initiator and an Envoy with
#                 our module, and send requests through a reverse tunnel
#   make test   - unit tests + integration tests against the real Envoy 1.40.0 binary
#   make soak   - long robustness runs (not part of `make test`): 10,000 half-open connections,
#                 5 minutes of tunnel churn at ~200/s (~7 min in all)
.PHONY: setup build check-symbols unit integration test demo demo-fleet fuzz soak clean

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
	# e2e once more against the recommended request path (the route filter, upstream-direct.yaml).
	RT_E2E_RESPONDER=direct $(CARGO) test --release -p rt-integration --test e2e -- --test-threads=1

# Runs everything and ends with one summary line over all cargo test runs ("N passed, N failed").
test: check-symbols
	@set -o pipefail; { $(MAKE) --no-print-directory unit && $(MAKE) --no-print-directory integration; } 2>&1 | tee target/test-output.log; \
	  rc=$$?; scripts/test-summary.sh target/test-output.log; exit $$rc

# Soak, NOT part of `make test` (its short versions are): the hostile-input test with
# 10,000 half-open connections (needs RLIMIT_NOFILE > ~10,300; the test lowers the count and says
# so otherwise), then the ignored 5-minute churn test (RT_SOAK_SECS to change). Prints figures.
soak: build
	RT_HALF_OPEN=$${RT_HALF_OPEN:-10000} $(CARGO) test --release -p rt-integration --test robustness -- --test-threads=1 --nocapture hostile_handshake_input
	$(CARGO) test --release -p rt-integration --test robustness -- --test-threads=1 --nocapture --ignored soak_churn

demo: build
	$(CARGO) run --release -q -p rt-integration --bin demo

# Two responders behind a front Envoy, two initiators, load through the front and a rolling
# restart of each responder (envoy-config/fleet/); prints the counts (no request may fail).
demo-fleet: build
	$(CARGO) run --release -q -p rt-integration --bin demo-fleet

# Longer fuzzing (no nightly toolchain, so no cargo-fuzz): the property tests of every parser that
# reads peer bytes, with many more random inputs: the handshake parser, the HTTP/2 multiplexer's
# frame reader and HPACK (any byte string: no panic, bounded memory), the relay's RPING echo
# stripper and the keepalive's RPING reader (split-independent, lossless), and the JWT token path
# (hostile token header values: never a panic, never accepted). RT_FUZZ_CASES to tune.
fuzz: setup
	RT_FUZZ_CASES=$${RT_FUZZ_CASES:-100000} $(CARGO) test --release -p reverse_tunnel --lib -- core::handshake core::h2mux core::relay core::keepalive core::jwt adapters::handshake_filter::tests::jwt

clean:
	$(CARGO) clean

# Benchmarks (ours vs Envoy's built-in responder), one run, writes BENCHMARKS.md (~2-4 min).
# Needs h2load (Debian nghttp2-client), installed here if missing; `make test` never needs it.
.PHONY: bench
bench: build
	@command -v h2load >/dev/null || { SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nghttp2-client >/dev/null; }
	$(CARGO) run --release -q -p rt-integration --bin rt-bench -- --out BENCHMARKS.md

# HTTP/2 client engines compared on the route filter's workload (benches/h2_engines/, ~1-2 min;
# not part of `make test`): our multiplexer's local legs vs the `h2` crate's client, same recorded
# peer bytes. Prints instructions per request (callgrind; valgrind from `make setup`) and wall-clock
# time per request, with the ratio ours / h2 per case. Method and results: docs/http2-engine.md.
.PHONY: bench-h2
bench-h2: setup
	$(CARGO) bench -q -p reverse_tunnel --bench h2_engines
