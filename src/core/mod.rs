//! Pure logic: no Envoy, no `unsafe`. Each file is one state machine with its own unit tests.
pub mod accesslog;
pub mod close;
pub mod deadlines;
pub mod format_string;
pub mod handshake;
pub mod idformat;
pub mod jwt;
pub mod keepalive;
pub mod relay;
pub mod reporter;
pub mod spares;
pub mod tracker;
pub mod tunnel;
pub mod h2mux;

/// Number of cases for the property tests that act as fuzzers (handshake parser, HTTP/2
/// multiplexer and HPACK, relay echo stripper, RPING keepalive reader): `default` in `make test`,
/// or `RT_FUZZ_CASES` when set (`make fuzz`).
#[cfg(test)]
pub(crate) fn fuzz_cases(default: u32) -> u32 {
    std::env::var("RT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
