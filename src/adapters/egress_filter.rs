//! Adapter for the egress network filter `reverse_tunnel_egress`, used on an internal listener
//! behind an HTTP/2 cluster (design §3, `envoy-config/upstream.yaml`).
//!
//! On a new connection it reads the target (a node key, or a cluster key that resolves
//! round-robin to a node; under tenant isolation `tenant:node` / `tenant:cluster`) from the
//! connection's filter state (`envoy.network.upstream_server_name` by default), claims the oldest
//! idle tunnel of that node — preferring one on this worker — and relays bytes both ways until
//! either side closes; then it closes the other side. No idle tunnel: the connection is closed at
//! once and Envoy's router answers 503.

use super::endpoint::{Endpoint, Msg};
use super::network::{deliver, Conn, Role};
use crate::config::egress::EgressConfig;
use crate::ffi::envoy::{CloseType, NetFilter};
use crate::rt_log;
use std::rc::Rc;
use std::sync::Arc;

/// State of one egress connection.
pub struct EgressConn {
    cfg: Arc<EgressConfig>,
    peer: Option<Arc<Endpoint>>,
}

impl EgressConn {
    /// A new egress connection with filter config `cfg`.
    pub fn new(cfg: Arc<EgressConfig>) -> EgressConn {
        EgressConn { cfg, peer: None }
    }
}

fn with_egress<R>(conn: &Conn, f: impl FnOnce(&mut EgressConn) -> R) -> Option<R> {
    match &mut *conn.role.borrow_mut() {
        Role::Egress(e) => Some(f(e)),
        Role::Tunnel(_) => None,
    }
}

/// Reads the target and claims a tunnel, or closes the connection.
pub fn on_new_connection(conn: &Rc<Conn>, f: NetFilter) {
    let rt = &conn.runtime;
    let Some(key) = with_egress(conn, |e| e.cfg.target_filter_state_key.clone()) else { return };
    let target = f.filter_state(&key).map(|v| String::from_utf8_lossy(&v).trim().to_string()).unwrap_or_default();
    if target.is_empty() || target == "-" {
        rt.stats.no_tunnel();
        rt_log!(Debug, "reverse_tunnel: egress conn={} has no target in filter state '{}'", conn.ep.conn_id, key);
        conn.close(CloseType::NoFlush, "reverse_tunnel_no_target");
        return;
    }
    let Some(claim) = rt.tracker.claim(&target, conn.ep.worker) else {
        rt.stats.no_tunnel();
        rt_log!(Debug, "reverse_tunnel: no idle tunnel for '{}' (egress conn={})", target, conn.ep.conn_id);
        conn.close(CloseType::NoFlush, "reverse_tunnel_no_tunnel");
        return;
    };
    if claim.shared {
        rt.stats.shared_claim();
    } else {
        let idle_ms = crate::runtime::unix_ms().saturating_sub(claim.meta.registered_at_ms);
        rt.stats.claimed(claim.same_worker, idle_ms);
    }
    rt_log!(
        Debug,
        "reverse_tunnel: socket_handoff target={} node={} tunnel={} tunnel_worker={} egress_worker={} shared={}",
        target,
        claim.identity.node_id,
        claim.tunnel,
        claim.worker,
        conn.ep.worker,
        claim.shared
    );
    let peer = claim.handle;
    with_egress(conn, |e| e.peer = Some(peer.clone()));
    if !deliver(&peer, conn.ep.worker, Msg::Attach { peer: conn.ep.clone() }) {
        conn.close(CloseType::NoFlush, "reverse_tunnel_tunnel_gone");
    }
}

/// Bytes from Envoy's HTTP/2 client: relay them to the tunnel.
pub fn on_read(conn: &Rc<Conn>, data: Vec<u8>, end_stream: bool) {
    let peer = with_egress(conn, |e| e.peer.clone()).flatten();
    let Some(peer) = peer else {
        conn.close(CloseType::NoFlush, "reverse_tunnel_no_tunnel");
        return;
    };
    if !data.is_empty() {
        if !deliver(&peer, conn.ep.worker, Msg::EgressData { from: conn.ep.conn_id, bytes: data }) {
            conn.close(CloseType::NoFlush, "reverse_tunnel_tunnel_gone");
            return;
        }
    }
    if end_stream {
        conn.close(CloseType::FlushWrite, "reverse_tunnel_egress_closed");
    }
}

/// The egress connection closed: close the tunnel it used (used tunnels never return to the pool).
pub fn on_closed(conn: &Rc<Conn>) {
    if let Some(peer) = with_egress(conn, |e| e.peer.take()).flatten() {
        peer.post(Msg::EgressClosed { from: conn.ep.conn_id });
    }
}
