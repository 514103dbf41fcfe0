//! Adapter for the egress network filter `reverse_tunnel_egress`, used on an internal listener
//! behind an HTTP/2 cluster (docs/architecture.md#extension-points, `envoy-config/upstream.yaml`).
//!
//! On a new connection it reads the target (a node key, or a cluster key that resolves
//! round-robin to a node; under tenant isolation `tenant:node` / `tenant:cluster`) from the
//! connection's filter state (`envoy.network.upstream_server_name` by default). With the
//! connection's first bytes it claims a tunnel through the tracker: a running HTTP/2 session of
//! that node if one can take it, else the oldest idle tunnel — preferring the egress connection's
//! own worker. It then relays bytes with the tunnel until either side closes.
//!
//! Why the first bytes: an HTTP/2 client (they start with the client preface) claims in the
//! tracker's session mode, which marks a fresh tunnel shareable in the same step, and the tunnel
//! starts its HTTP/2 session when the claim reaches it; so a second worker's first request for
//! the same node joins that session instead of finding no tunnel while it starts. Other bytes
//! (inner TLS, HTTP/1.1) claim a tunnel for this connection alone.
//!
//! No tunnel: with `claim_timeout` 0 (default) the connection is closed at once and Envoy's
//! router answers 503. With `claim_timeout` > 0 the connection waits (its bytes held, bounded)
//! and retries on every worker clock tick until a tunnel appears or the timeout passes — this
//! covers an initiator's reconnect window and a tunnel still being admitted.

use super::endpoint::{Endpoint, Msg};
use super::conn::{CloseDetail, Conn, Role};
use super::worker::{self, deliver};
use crate::config::egress::EgressConfig;
use super::envoy_api::EnvoyNetworkFilter;
use super::tunnel_session::H2_PREFACE;
use crate::ffi::envoy::CloseType;
use crate::runtime::now_ms;
use crate::rt_log;
use std::sync::Arc;

/// Most bytes an egress connection may send while it waits for a tunnel.
const MAX_WAITING_BYTES: usize = 256 * 1024;

/// True if `first` (an egress connection's first bytes) begins the HTTP/2 client connection
/// preface (RFC 9113 §3.4); at least `PRI ` must be there, which tells it from a TLS ClientHello
/// or an HTTP/1.1 request line.
pub fn starts_http2(first: &[u8]) -> bool {
    let n = first.len().min(H2_PREFACE.len());
    n >= 4 && first[..n] == H2_PREFACE[..n]
}

/// State of one egress connection.
pub struct EgressConn {
    cfg: Arc<EgressConfig>,
    /// The target read at connection time; the claim waits for the first bytes.
    target: Option<String>,
    peer: Option<Arc<Endpoint>>,
    waiting: Option<Waiting>,
}

struct Waiting {
    target: String,
    until_ms: u64,
    held: Vec<u8>,
    end_stream: bool,
}

impl EgressConn {
    /// A new egress connection with filter config `cfg`.
    pub fn new(cfg: Arc<EgressConfig>) -> EgressConn {
        EgressConn { cfg, target: None, peer: None, waiting: None }
    }
}

/// An egress connection.
pub type Egress = Conn<EgressConn>;

/// Runs `f` on the egress state. The borrow ends with `f`: never call Envoy inside it.
fn with_egress<R>(conn: &Egress, f: impl FnOnce(&mut EgressConn) -> R) -> R {
    f(&mut conn.state.borrow_mut())
}

impl Role for EgressConn {
    /// Only a waiting connection needs the clock; it registers itself.
    const USES_CLOCK: bool = false;
    fn on_new_connection(conn: &Egress) {
        if let Some(f) = conn.envoy() {
            on_new_connection(conn, &*f)
        }
    }
    fn on_read(conn: &Egress, data: Vec<u8>, end_stream: bool) {
        on_read(conn, data, end_stream)
    }
    fn on_deadline(conn: &Egress, now_ms: u64) {
        on_deadline(conn, now_ms)
    }
    fn on_message(_conn: &Egress, _msg: Msg) {}
    fn on_closed(conn: &Egress, _remote: bool) {
        on_closed(conn)
    }
}

/// Reads the target (the claim follows with the first bytes), or closes the connection.
pub fn on_new_connection(conn: &Egress, f: &dyn EnvoyNetworkFilter) {
    let rt = &conn.runtime;
    let key = with_egress(conn, |e| e.cfg.target_filter_state_key.clone());
    let target = f.filter_state(&key).map(|v| String::from_utf8_lossy(&v).trim().to_string()).unwrap_or_default();
    if target.is_empty() || target == "-" {
        rt.stats.no_tunnel();
        rt_log!(Debug, "reverse_tunnel: egress conn={} has no target in filter state '{}'", conn.ep.conn_id, key);
        conn.close(CloseType::NoFlush, CloseDetail::NoTarget);
        return;
    }
    // Nothing to claim and no waiting: close now, before any byte (the router then fails the
    // request as a connect failure, response flag `UF`, which local_reply_config maps to the 503
    // that names the node).
    if !rt.tracker.can_claim(&target) && with_egress(conn, |e| e.cfg.claim_timeout.is_zero()) {
        give_up(conn, &target);
        return;
    }
    with_egress(conn, |e| e.target = Some(target));
}

/// The first bytes: claims a tunnel, waits for one (holding them), or closes the connection.
fn claim_first(conn: &Egress, target: String, mut first: Vec<u8>, end_stream: bool) {
    let rt = &conn.runtime;
    if try_claim(conn, &target, &mut first) {
        if end_stream {
            conn.close(CloseType::FlushWrite, CloseDetail::EgressClosed);
        }
        return;
    }
    let timeout = with_egress(conn, |e| e.cfg.claim_timeout);
    if timeout.is_zero() {
        give_up(conn, &target);
        return;
    }
    if first.len() > MAX_WAITING_BYTES {
        conn.close(CloseType::NoFlush, CloseDetail::WaitingOverflow);
        return;
    }
    let until = now_ms() + timeout.as_millis() as u64;
    with_egress(conn, |e| e.waiting = Some(Waiting { target, until_ms: until, held: first, end_stream }));
    // Waiting connections need the worker clock, and retry on each tick.
    rt.clock_register(&conn.ep);
    worker::set_deadline(conn.ep.conn_id, Some(now_ms() + 1));
}

/// Claims a tunnel for `target` and attaches to it, handing it `first` (taken on success). False
/// if none is available.
fn try_claim(conn: &Egress, target: &str, first: &mut Vec<u8>) -> bool {
    let rt = &conn.runtime;
    let claim = if starts_http2(first) {
        rt.tracker.claim_session(target, conn.ep.worker)
    } else {
        rt.tracker.claim(target, conn.ep.worker)
    };
    let Some(claim) = claim else { return false };
    let idle_ms = crate::runtime::unix_ms().saturating_sub(claim.meta.registered_at_ms);
    rt.stats.on_claimed(&claim, idle_ms);
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
    if !deliver(&peer, conn.ep.worker, Msg::Attach { peer: conn.ep.clone(), first: std::mem::take(first) }) {
        conn.close(CloseType::NoFlush, CloseDetail::TunnelGone);
    }
    true
}

fn give_up(conn: &Egress, target: &str) {
    conn.runtime.stats.no_tunnel();
    rt_log!(Debug, "reverse_tunnel: no tunnel for '{}' (egress conn={})", target, conn.ep.conn_id);
    conn.close(CloseType::NoFlush, CloseDetail::NoTunnel);
}

/// Worker clock: a waiting connection retries its claim, or gives up at its deadline.
pub fn on_deadline(conn: &Egress, now: u64) {
    let Some(mut w) = with_egress(conn, |e| e.waiting.take()) else {
        return;
    };
    if try_claim(conn, &w.target, &mut w.held) {
        conn.runtime.clock_unregister(conn.ep.worker, conn.ep.conn_id);
        if w.end_stream {
            conn.close(CloseType::FlushWrite, CloseDetail::EgressClosed);
        }
    } else if now >= w.until_ms {
        conn.runtime.clock_unregister(conn.ep.worker, conn.ep.conn_id);
        give_up(conn, &w.target);
    } else {
        with_egress(conn, |e| e.waiting = Some(w));
        worker::set_deadline(conn.ep.conn_id, Some(now + 1));
    }
}

/// Bytes from Envoy's HTTP/2 client: relay them to the tunnel (or hold them while waiting).
pub fn on_read(conn: &Egress, data: Vec<u8>, end_stream: bool) {
    let unclaimed = with_egress(conn, |e| if e.peer.is_none() && e.waiting.is_none() { e.target.take() } else { None });
    if let Some(target) = unclaimed {
        if data.is_empty() {
            if end_stream {
                conn.close(CloseType::FlushWrite, CloseDetail::EgressClosed);
            } else {
                with_egress(conn, |e| e.target = Some(target));
            }
            return;
        }
        claim_first(conn, target, data, end_stream);
        return;
    }
    let held = with_egress(conn, |e| match &mut e.waiting {
        Some(w) => {
            w.held.extend_from_slice(&data);
            w.end_stream |= end_stream;
            Some(w.held.len() > MAX_WAITING_BYTES)
        }
        None => None,
    });
    match held {
        Some(true) => conn.close(CloseType::NoFlush, CloseDetail::WaitingOverflow),
        Some(false) => {}
        None => forward(conn, data, end_stream),
    }
}

fn forward(conn: &Egress, data: Vec<u8>, end_stream: bool) {
    let peer = with_egress(conn, |e| e.peer.clone());
    let Some(peer) = peer else {
        conn.close(CloseType::NoFlush, CloseDetail::NoTunnel);
        return;
    };
    if !data.is_empty() && !deliver(&peer, conn.ep.worker, Msg::EgressData { from: conn.ep.conn_id, bytes: data }) {
        conn.close(CloseType::NoFlush, CloseDetail::TunnelGone);
        return;
    }
    if end_stream {
        conn.close(CloseType::FlushWrite, CloseDetail::EgressClosed);
    }
}

/// The egress connection closed: detach from its tunnel.
pub fn on_closed(conn: &Egress) {
    let (peer, was_waiting) = with_egress(conn, |e| (e.peer.take(), e.waiting.take().is_some()));
    if was_waiting {
        conn.runtime.clock_unregister(conn.ep.worker, conn.ep.conn_id);
    }
    if let Some(peer) = peer {
        peer.post(Msg::EgressClosed { from: conn.ep.conn_id });
    }
}

#[cfg(test)]
mod tests;
