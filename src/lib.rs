//! `reverse_tunnel`: Envoy 1.40.0's reverse-tunnel responder ("upstream" side) as one dynamic
//! module.
//!
//! Layout (one concern per file):
//! - [`ffi`]: the only place with `unsafe` and `extern "C"`: the hooks Envoy calls, and thin safe
//!   wrappers over the callbacks we call (declared in the `envoy-abi` crate, `abi/abi.h`).
//! - [`core`]: pure state machines, testable without Envoy: the handshake parser, the tracker of
//!   tunnels, the RPING keepalive, the deadline queue and the relay.
//! - [`config`]: decoding and validation of the typed configs (protobuf from `proto/`, or JSON).
//! - [`adapters`]: one thin adapter per extension point (bootstrap extension, handshake network
//!   filter, egress network filter) that wires the core to Envoy through `ffi`.
//! - [`clock`]: monotonic and Unix milliseconds.
//! - [`runtime`]: process-wide state shared by all extension points and workers.
//! - [`stats`]: metric names and ids, and the accounting from tracker transitions to gauges.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod adapters;
pub mod clock;
pub mod config;
pub mod core;
pub mod ffi;
pub mod proto;
/// The process-wide runtime lives with the adapters (it holds their cross-thread parts); re-exported
/// here for short paths.
pub use adapters::runtime;
pub mod stats;
