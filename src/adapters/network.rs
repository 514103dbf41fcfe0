//! The per-connection object shared by both network filters, and the dispatch of network-filter
//! hooks to the handshake or egress adapter. All functions run on the connection's worker.

use super::egress_filter::{self, EgressConn};
use super::endpoint::{Endpoint, Msg};
use super::handshake_filter::{self, HandshakeSettings, TunnelConn};
use super::worker;
use crate::config::egress::EgressConfig;
use crate::ffi::envoy::{CloseType, NetFilter};
use crate::runtime::Runtime;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Filter names accepted in `DynamicModuleNetworkFilter.filter_name`.
pub const HANDSHAKE_FILTER_NAME: &str = "reverse_tunnel";
/// See [`HANDSHAKE_FILTER_NAME`].
pub const EGRESS_FILTER_NAME: &str = "reverse_tunnel_egress";

/// A network filter config (one per listener filter chain). Created on the main thread.
pub struct NetConfig {
    /// The shared runtime (the bootstrap extension must be configured).
    pub runtime: Arc<Runtime>,
    /// Which of our two filters this is.
    pub kind: NetKind,
}

/// The two network filters of the module.
pub enum NetKind {
    /// `reverse_tunnel`: the handshake listener.
    Handshake(Arc<HandshakeSettings>),
    /// `reverse_tunnel_egress`: the internal listener.
    Egress(Arc<EgressConfig>),
}

impl NetConfig {
    /// Decodes the config of filter `name`. Errors name the field (and are logged by the caller).
    pub fn new(name: &str, config: &[u8]) -> Result<NetConfig, String> {
        let runtime = crate::runtime::current().ok_or_else(|| {
            format!(
                "filter '{name}' needs the bootstrap extension 'upstream_socket_interface' of this module \
                 (envoy.bootstrap.dynamic_modules) to be configured"
            )
        })?;
        let kind = match name {
            HANDSHAKE_FILTER_NAME => NetKind::Handshake(Arc::new(HandshakeSettings::new(config, &runtime)?)),
            EGRESS_FILTER_NAME => NetKind::Egress(Arc::new(
                EgressConfig::decode(config).map_err(|e| format!("reverse_tunnel_egress config: {e}"))?,
            )),
            other => {
                return Err(format!(
                    "filter_name: unknown filter '{other}' (expected '{HANDSHAKE_FILTER_NAME}' or '{EGRESS_FILTER_NAME}')"
                ))
            }
        };
        Ok(NetConfig { runtime, kind })
    }
}

/// What a connection is to us.
pub enum Role {
    /// A handshake-listener connection: handshake, then an idle or claimed tunnel.
    Tunnel(TunnelConn),
    /// An egress connection on the internal listener.
    Egress(EgressConn),
}

/// One connection owned by one of our filters. Lives on its worker (`Rc`); its cross-thread
/// face is [`Conn::ep`].
pub struct Conn {
    /// Envoy's filter pointer; `None` once the filter is destroyed.
    pub filter: Cell<Option<NetFilter>>,
    /// The connection's mailbox.
    pub ep: Arc<Endpoint>,
    /// Shared runtime.
    pub runtime: Arc<Runtime>,
    /// Role-specific state. Never borrowed across an Envoy call.
    pub role: RefCell<Role>,
    /// Set once the connection is closing or closed.
    pub closed: Cell<bool>,
}

impl Conn {
    /// Closes the connection (at most once) with `details` as termination details.
    pub fn close(&self, how: CloseType, details: &str) {
        if self.closed.replace(true) {
            return;
        }
        if let Some(f) = self.filter.get() {
            f.close(how, details);
        }
    }

    /// Writes bytes to this connection (owning worker).
    pub fn write(&self, data: &[u8]) {
        if self.closed.get() {
            return;
        }
        if let Some(f) = self.filter.get() {
            f.write(data, false);
        }
    }
}

/// Sends `msg` to the connection behind `target`. On the same worker, with nothing queued for
/// it, it is handled at once (no reordering); otherwise it goes through the mailbox. Returns
/// false if the target is gone.
pub fn deliver(target: &Arc<Endpoint>, my_worker: u32, msg: Msg) -> bool {
    if target.worker == my_worker && target.is_quiet() {
        if let Some(conn) = worker::get(target.conn_id) {
            if !matches!(msg, Msg::PeerClosed) {
                handle_msg(&conn, msg);
                return true;
            }
        }
    }
    target.post(msg)
}

/// Handles one mailbox message on the owning worker.
fn handle_msg(conn: &Rc<Conn>, msg: Msg) {
    match msg {
        Msg::Tick => run_tick(conn),
        Msg::Data(bytes) => conn.write(&bytes),
        Msg::PeerClosed => conn.close(CloseType::FlushWrite, "reverse_tunnel_peer_closed"),
        Msg::Attach { peer } => handshake_filter::on_attach(conn, peer),
        Msg::EgressData { from, bytes } => handshake_filter::on_egress_data(conn, from, bytes),
        Msg::EgressClosed { from } => handshake_filter::on_egress_closed(conn, from),
        Msg::Drain => handshake_filter::on_drain(conn),
    }
}

/// Runs every due deadline of this worker (the clock tick, docs/architecture.md#threads-and-the-clock).
fn run_tick(conn: &Rc<Conn>) {
    // First, so that a panic in a deadline handler (caught by the hook's guard) cannot leave
    // the worker without ticks.
    conn.runtime.tick_done(conn.ep.worker);
    let now = crate::runtime::now_ms();
    for due in worker::due(now) {
        let is_egress = matches!(*due.role.borrow(), Role::Egress(_));
        if is_egress {
            egress_filter::on_deadline(&due, now);
        } else {
            handshake_filter::on_deadline(&due, now);
        }
    }
}

// ---- hook bodies (called by ffi::hooks_network inside a panic guard) ----------------------------

/// `on_network_filter_new`: creates the connection object.
pub fn on_new(cfg: &NetConfig, filter: NetFilter) -> Rc<Conn> {
    let conn_id = filter.connection_id();
    let worker_idx = filter.worker_index();
    let ep = Endpoint::new(conn_id, worker_idx, filter.scheduler_new());
    let role = match &cfg.kind {
        NetKind::Handshake(s) => Role::Tunnel(TunnelConn::new(s.clone(), crate::runtime::now_ms())),
        NetKind::Egress(c) => Role::Egress(EgressConn::new(c.clone())),
    };
    let conn = Rc::new(Conn {
        filter: Cell::new(Some(filter)),
        ep,
        runtime: cfg.runtime.clone(),
        role: RefCell::new(role),
        closed: Cell::new(false),
    });
    worker::insert(conn_id, conn.clone());
    if matches!(cfg.kind, NetKind::Handshake(_)) {
        cfg.runtime.clock_register(&conn.ep);
    }
    conn
}

/// `on_network_filter_new_connection`: always stops the chain (we are terminal).
pub fn on_new_connection(conn: &Rc<Conn>) {
    let Some(f) = conn.filter.get() else { return };
    f.ensure_reading();
    let is_egress = matches!(*conn.role.borrow(), Role::Egress(_));
    if is_egress {
        egress_filter::on_new_connection(conn, f);
    } else {
        handshake_filter::on_new_connection(conn);
    }
}

/// `on_network_filter_read`: takes all buffered bytes.
pub fn on_read(conn: &Rc<Conn>, end_stream: bool) {
    let Some(f) = conn.filter.get() else { return };
    let mut data = Vec::new();
    let n = f.read_into(&mut data);
    if n > 0 {
        f.drain_read(n);
    }
    let is_egress = matches!(*conn.role.borrow(), Role::Egress(_));
    if is_egress {
        egress_filter::on_read(conn, data, end_stream);
    } else {
        handshake_filter::on_read(conn, data, end_stream);
    }
}

/// `on_network_filter_event`: 0 RemoteClose, 1 LocalClose, 2 Connected, 3 ConnectedZeroRtt.
pub fn on_event(conn: &Rc<Conn>, event: u32) {
    if event == 0 || event == 1 {
        conn.closed.set(true);
        teardown(conn, event == 0);
    }
}

/// `on_network_filter_scheduled`: drains the mailbox.
pub fn on_scheduled(conn: &Rc<Conn>) {
    for msg in conn.ep.take() {
        handle_msg(conn, msg);
    }
}

/// `on_network_filter_destroy`: final cleanup; the filter pointer is dead afterwards.
pub fn on_destroy(conn: Rc<Conn>) {
    teardown(&conn, false);
    conn.filter.set(None);
}

/// Releases everything the connection holds (idempotent): tracker entry, peer, mailbox.
fn teardown(conn: &Rc<Conn>, remote: bool) {
    let is_egress = matches!(*conn.role.borrow(), Role::Egress(_));
    if is_egress {
        egress_filter::on_closed(conn);
    } else {
        handshake_filter::on_closed(conn, remote);
        conn.runtime.clock_unregister(conn.ep.worker, conn.ep.conn_id);
    }
    worker::remove(conn.ep.conn_id);
    // Undelivered messages: an attach that never reached this tunnel must release its egress,
    // and a clock tick posted through this connection must not be lost, or the worker would
    // never get another one (`tick_pending` stays set): the next clock period posts a new one.
    for msg in conn.ep.shut() {
        match msg {
            Msg::Attach { peer } => {
                peer.post(Msg::PeerClosed);
            }
            Msg::Tick => conn.runtime.tick_done(conn.ep.worker),
            _ => {}
        }
    }
}
