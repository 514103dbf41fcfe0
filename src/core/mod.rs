//! Pure logic: no Envoy, no `unsafe`. Each file is one state machine with its own unit tests.
pub mod accesslog;
pub mod deadlines;
pub mod handshake;
pub mod idformat;
pub mod keepalive;
pub mod relay;
pub mod tracker;
pub mod h2mux;
