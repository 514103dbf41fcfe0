//! One thin adapter per extension point, wiring the pure [`crate::core`] to Envoy through
//! [`crate::ffi::envoy`]:
//! - [`bootstrap`]: `extension_name: upstream_socket_interface` (config, stats, clock, admin).
//! - [`handshake_filter`]: network filter `reverse_tunnel` (handshake, keepalive, tunnel side of
//!   the relay).
//! - [`egress_filter`]: network filter `reverse_tunnel_egress` on an internal listener (claims a
//!   tunnel, egress side of the relay).
//!
//! Envoy seam: [`envoy_api`] (a trait per Envoy-side handle the adapters use; recording fakes in
//! `fake` for unit tests).
//!
//! Shared plumbing: [`conn`] (the per-connection object and the [`conn::Role`] each filter
//! implements), [`network`] (filter configs and hook dispatch), [`endpoint`]
//! (cross-worker mailbox), [`worker`] (per-worker connections and deadlines), [`tunnel_session`]
//! (what a claimed tunnel does with bytes: HTTP/2 session shared by egress connections, or raw).

pub mod bootstrap;
pub mod conn;
pub mod egress_filter;
pub mod envoy_api;
pub mod endpoint;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod handshake_filter;
pub mod http_filter;
pub mod jwks;
pub mod lifecycle;
pub mod network;
pub mod reporter;
pub mod runtime;
pub mod socket_loop;
pub mod tunnel_session;
pub mod worker;
