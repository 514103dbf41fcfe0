//! One connection owned by one of our network filters: [`Conn`] holds what every connection has
//! (Envoy's side of it as an [`EnvoyNetworkFilter`], its mailbox, the runtime, the closed flag) plus the state of its
//! [`Role`]: a tunnel (handshake filter) or an egress connection (egress filter). Each filter
//! implements [`Role`] for its own state; [`Connection`] is the object-safe face the hook
//! dispatch ([`super::network`]) and the per-worker registry ([`super::worker`]) hold, so neither
//! of them needs to know the filters, and the filters need neither of them to know each other.
//!
//! All of it runs on the connection's worker.

use super::endpoint::{Endpoint, Msg};
use super::envoy_api::EnvoyNetworkFilter;
use crate::core::close::CloseReason;
use crate::ffi::envoy::CloseType;
use crate::runtime::Runtime;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Why we close a connection, as Envoy's termination details (`%CONNECTION_TERMINATION_DETAILS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseDetail {
    /// A handshake was answered with a rejection.
    HandshakeRejected,
    /// No complete handshake within `handshake_timeout`.
    HandshakeTimeout,
    /// The initiator ended the stream in the middle of its handshake.
    HandshakeIncomplete,
    /// An accepted tunnel could not be registered.
    RegistrationFailed,
    /// A spare tunnel's socket moved to a socket loop (Envoy's connection ends, the tunnel not).
    MovedToSocketLoop,
    /// The other end of the relay closed.
    PeerClosed,
    /// Egress: no target in the connection's filter state.
    NoTarget,
    /// Egress: no tunnel for the target.
    NoTunnel,
    /// Egress: the claimed tunnel is gone.
    TunnelGone,
    /// Egress: too many bytes while waiting for a tunnel.
    WaitingOverflow,
    /// Egress: Envoy's HTTP/2 client ended the stream.
    EgressClosed,
    /// A tunnel ended for `CloseReason` (the details are the close reason itself).
    Tunnel(CloseReason),
}

impl CloseDetail {
    /// The termination details text.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseDetail::HandshakeRejected => "reverse_tunnel_handshake_rejected",
            CloseDetail::HandshakeTimeout => "reverse_tunnel_handshake_timeout",
            CloseDetail::HandshakeIncomplete => "reverse_tunnel_handshake_incomplete",
            CloseDetail::RegistrationFailed => "reverse_tunnel_registration_failed",
            CloseDetail::MovedToSocketLoop => "reverse_tunnel_moved_to_socket_loop",
            CloseDetail::PeerClosed => "reverse_tunnel_peer_closed",
            CloseDetail::NoTarget => "reverse_tunnel_no_target",
            CloseDetail::NoTunnel => "reverse_tunnel_no_tunnel",
            CloseDetail::TunnelGone => "reverse_tunnel_tunnel_gone",
            CloseDetail::WaitingOverflow => "reverse_tunnel_waiting_overflow",
            CloseDetail::EgressClosed => "reverse_tunnel_egress_closed",
            CloseDetail::Tunnel(r) => r.as_str(),
        }
    }
}

/// What a connection does in each hook, implemented by the state of each filter. Every method
/// runs on the connection's worker and must not hold a borrow of `conn.state` across an Envoy
/// call (Envoy may re-enter a hook synchronously, e.g. `close` runs `event`).
pub trait Role: Sized + 'static {
    /// True if the connection needs the worker clock from the start (registered in
    /// [`Runtime::clock_register`] by the dispatch and unregistered at teardown).
    const USES_CLOCK: bool;
    /// `on_network_filter_new_connection`, after reads were made sure to be enabled.
    fn on_new_connection(conn: &Conn<Self>);
    /// Bytes read from the connection (already drained from Envoy's buffer).
    fn on_read(conn: &Conn<Self>, data: Vec<u8>, end_stream: bool);
    /// The worker clock reached the connection's deadline.
    fn on_deadline(conn: &Conn<Self>, now_ms: u64);
    /// A mailbox message other than the common ones (`Tick`, `Data`, `PeerClosed`).
    fn on_message(conn: &Conn<Self>, msg: Msg);
    /// The connection closed (event or destroy); must be idempotent.
    fn on_closed(conn: &Conn<Self>, remote: bool);
    /// Request body of same-worker HTTP stream `from`, written to this connection straight from
    /// `payload` (Envoy's buffer of that stream, valid for this call only) instead of being
    /// copied into a message. Returns whether it was taken; a role that relays no HTTP streams,
    /// or a tunnel that cannot send it all at once now, takes nothing.
    fn send_inline(_conn: &Conn<Self>, _from: u64, _payload: &[&[u8]]) -> bool {
        false
    }
}

/// One connection owned by one of our filters, with role state `S`. Lives on its worker; its
/// cross-thread face is [`Conn::ep`].
pub struct Conn<S> {
    /// Envoy's side of the connection; `None` once the filter is destroyed.
    filter: RefCell<Option<Rc<dyn EnvoyNetworkFilter>>>,
    /// The connection's mailbox.
    pub ep: Arc<Endpoint>,
    /// Shared runtime.
    pub runtime: Arc<Runtime>,
    /// Role-specific state. Never borrowed across an Envoy call.
    pub state: RefCell<S>,
    /// Set once the connection is closing or closed.
    pub closed: Cell<bool>,
}

impl<S> Conn<S> {
    /// A connection in role state `state`.
    pub fn new(filter: Rc<dyn EnvoyNetworkFilter>, ep: Arc<Endpoint>, runtime: Arc<Runtime>, state: S) -> Conn<S> {
        Conn { filter: RefCell::new(Some(filter)), ep, runtime, state: RefCell::new(state), closed: Cell::new(false) }
    }

    /// Envoy's side of the connection, `None` once destroyed. The handle is cloned out, so no
    /// borrow is held while the caller calls Envoy (which may re-enter a hook).
    pub fn envoy(&self) -> Option<Rc<dyn EnvoyNetworkFilter>> {
        self.filter.borrow().clone()
    }

    /// Closes the connection (at most once) with `detail` as termination details.
    pub fn close(&self, how: CloseType, detail: CloseDetail) {
        if self.closed.replace(true) {
            return;
        }
        if let Some(f) = self.envoy() {
            f.close(how, detail.as_str());
        }
    }

    /// Writes bytes to this connection (owning worker).
    pub fn write(&self, data: &[u8]) {
        if self.closed.get() {
            return;
        }
        if let Some(f) = self.envoy() {
            f.write(data, false);
        }
    }
}

/// The object-safe face of a [`Conn`], whatever its role: what the hook dispatch and the worker
/// registry call.
pub trait Connection {
    /// The connection's mailbox.
    fn ep(&self) -> &Arc<Endpoint>;
    /// The shared runtime.
    fn runtime(&self) -> &Arc<Runtime>;
    /// See [`Conn::envoy`].
    fn envoy(&self) -> Option<Rc<dyn EnvoyNetworkFilter>>;
    /// Forgets Envoy's filter pointer (destroy).
    fn forget_filter(&self);
    /// Marks the connection closed (Envoy reported the close).
    fn mark_closed(&self);
    /// See [`Conn::close`].
    fn close(&self, how: CloseType, detail: CloseDetail);
    /// See [`Conn::write`].
    fn write(&self, data: &[u8]);
    /// See [`Role::USES_CLOCK`].
    fn uses_clock(&self) -> bool;
    /// See [`Role::on_new_connection`].
    fn on_new_connection(&self);
    /// See [`Role::on_read`].
    fn on_read(&self, data: Vec<u8>, end_stream: bool);
    /// See [`Role::on_deadline`].
    fn on_deadline(&self, now_ms: u64);
    /// See [`Role::on_message`].
    fn on_message(&self, msg: Msg);
    /// See [`Role::on_closed`].
    fn on_closed(&self, remote: bool);
    /// See [`Role::send_inline`].
    fn send_inline(&self, from: u64, payload: &[&[u8]]) -> bool;
}

impl<R: Role> Connection for Conn<R> {
    fn ep(&self) -> &Arc<Endpoint> {
        &self.ep
    }
    fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
    fn envoy(&self) -> Option<Rc<dyn EnvoyNetworkFilter>> {
        Conn::envoy(self)
    }
    fn forget_filter(&self) {
        *self.filter.borrow_mut() = None;
    }
    fn mark_closed(&self) {
        self.closed.set(true);
    }
    fn close(&self, how: CloseType, detail: CloseDetail) {
        Conn::close(self, how, detail)
    }
    fn write(&self, data: &[u8]) {
        Conn::write(self, data)
    }
    fn uses_clock(&self) -> bool {
        R::USES_CLOCK
    }
    fn on_new_connection(&self) {
        R::on_new_connection(self)
    }
    fn on_read(&self, data: Vec<u8>, end_stream: bool) {
        R::on_read(self, data, end_stream)
    }
    fn on_deadline(&self, now_ms: u64) {
        R::on_deadline(self, now_ms)
    }
    fn on_message(&self, msg: Msg) {
        R::on_message(self, msg)
    }
    fn on_closed(&self, remote: bool) {
        R::on_closed(self, remote)
    }
    fn send_inline(&self, from: u64, payload: &[&[u8]]) -> bool {
        R::send_inline(self, from, payload)
    }
}
