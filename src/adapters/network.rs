//! The network filter configs and the dispatch of network-filter hooks to the connection's
//! [`Role`](super::conn::Role) (handshake or egress). The only adapter file that knows both
//! filters: it builds their connections; everything after that goes through
//! [`Connection`]. All hook bodies run on the connection's worker.

use super::conn::{Conn, Connection};
use super::egress_filter::EgressConn;
use super::endpoint::{Endpoint, Msg};
use super::handshake_filter::{HandshakeSettings, TunnelConn};
use super::worker;
use crate::config::egress::EgressConfig;
use super::envoy_api::EnvoyNetworkFilter;
use super::error::SetupError;
use crate::ffi::envoy::ConnectionEvent;
use crate::runtime::Runtime;
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
    pub fn new(name: &str, config: &[u8]) -> Result<NetConfig, SetupError> {
        let runtime = crate::runtime::current().ok_or_else(|| SetupError::NoBootstrap { filter: name.to_string() })?;
        NetConfig::with_runtime(runtime, name, config)
    }

    /// Decodes the config of filter `name` over `runtime`.
    pub fn with_runtime(runtime: Arc<Runtime>, name: &str, config: &[u8]) -> Result<NetConfig, SetupError> {
        let kind = match name {
            HANDSHAKE_FILTER_NAME => NetKind::Handshake(Arc::new(HandshakeSettings::new(config, &runtime)?)),
            EGRESS_FILTER_NAME => {
                NetKind::Egress(Arc::new(EgressConfig::decode(config).map_err(SetupError::EgressFilter)?))
            }
            other => {
                return Err(SetupError::UnknownFilter {
                    name: other.to_string(),
                    expected: [HANDSHAKE_FILTER_NAME, EGRESS_FILTER_NAME],
                })
            }
        };
        Ok(NetConfig { runtime, kind })
    }
}

// ---- hook bodies (called by ffi::hooks_network inside a panic guard) ----------------------------

/// `on_network_filter_new`: creates the connection object.
pub fn on_new(cfg: &NetConfig, filter: Rc<dyn EnvoyNetworkFilter>) -> Rc<dyn Connection> {
    let conn_id = filter.connection_id();
    let worker_idx = filter.worker_index();
    let ep = Endpoint::with_sched(conn_id, worker_idx, filter.scheduler_new());
    let runtime = cfg.runtime.clone();
    let conn: Rc<dyn Connection> = match &cfg.kind {
        NetKind::Handshake(s) => {
            Rc::new(Conn::new(filter, ep, runtime, TunnelConn::new(s.clone(), crate::runtime::now_ms())))
        }
        NetKind::Egress(c) => Rc::new(Conn::new(filter, ep, runtime, EgressConn::new(c.clone()))),
    };
    worker::insert(conn_id, conn.clone());
    if conn.uses_clock() {
        cfg.runtime.clock_register(conn.ep());
    }
    conn
}

/// `on_network_filter_new_connection`: always stops the chain (we are terminal).
pub fn on_new_connection(conn: &Rc<dyn Connection>) {
    let Some(f) = conn.envoy() else { return };
    f.ensure_reading();
    conn.on_new_connection();
}

/// `on_network_filter_read`: takes all buffered bytes.
pub fn on_read(conn: &Rc<dyn Connection>, end_stream: bool) {
    let Some(f) = conn.envoy() else { return };
    let mut data = Vec::new();
    let n = f.read_into(&mut data);
    if n > 0 {
        f.drain_read(n);
    }
    deliver_read(conn, data, end_stream);
}

/// Hands bytes read from the connection to its role (the connection's worker is busy meanwhile,
/// so that mail sent from inside waits behind the read): Envoy's read hook, or a socket loop's
/// read of a socket the module owns.
pub fn deliver_read(conn: &Rc<dyn Connection>, data: Vec<u8>, end_stream: bool) {
    let _busy = conn.ep().hold();
    conn.on_read(data, end_stream);
}

/// `on_network_filter_event`: a close (remote or local) releases the connection; other events
/// change nothing.
pub fn on_event(conn: &Rc<dyn Connection>, event: ConnectionEvent) {
    if matches!(event, ConnectionEvent::RemoteClose | ConnectionEvent::LocalClose) {
        conn.mark_closed();
        teardown(conn, event == ConnectionEvent::RemoteClose);
    }
}

/// `on_network_filter_scheduled`: drains the mailbox.
pub fn on_scheduled(conn: &Rc<dyn Connection>) {
    let (msgs, _busy) = conn.ep().take();
    for msg in msgs {
        worker::dispatch(conn, msg);
    }
}

/// `on_network_filter_destroy`: final cleanup; the filter pointer is dead afterwards.
pub fn on_destroy(conn: Rc<dyn Connection>) {
    teardown(&conn, false);
    conn.forget_filter();
}

/// Releases everything the connection holds (idempotent): tracker entry, peer, mailbox.
fn teardown(conn: &Rc<dyn Connection>, remote: bool) {
    let ep = conn.ep().clone();
    let runtime = conn.runtime().clone();
    conn.on_closed(remote);
    if conn.uses_clock() {
        runtime.clock_unregister(ep.worker, ep.conn_id);
    }
    worker::remove(ep.conn_id);
    // Undelivered messages: an attach that never reached this tunnel must release its egress,
    // and a clock tick posted through this connection must not be lost, or the worker would
    // never get another one (`tick_pending` stays set): the next clock period posts a new one.
    for msg in ep.shut() {
        match msg {
            Msg::Attach { peer, .. } | Msg::LocalOpen { peer, .. } => {
                peer.post(Msg::PeerClosed);
            }
            Msg::Tick => runtime.tick_done(ep.worker),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fake::{self, FakeNetworkFilter};
    use crate::ffi::envoy::CloseType;

    #[test]
    fn unknown_filter_names_and_bad_configs_are_refused_naming_the_field() {
        let (rt, _) = fake::runtime("{}");
        let e = NetConfig::with_runtime(rt.clone(), "other", b"").err().unwrap();
        assert!(matches!(&e, SetupError::UnknownFilter { name, .. } if name == "other"));
        assert!(e.to_string().starts_with("filter_name: unknown filter 'other'"), "{e}");
        let e = NetConfig::with_runtime(rt.clone(), EGRESS_FILTER_NAME, br#"{"claim_timeout": "x"}"#).err().unwrap();
        assert!(matches!(&e, SetupError::EgressFilter(_)));
        assert!(e.to_string().starts_with("reverse_tunnel_egress config: claim_timeout"), "{e}");
        let e = NetConfig::with_runtime(rt.clone(), HANDSHAKE_FILTER_NAME, br#"{"ping_interval": "0.5s"}"#).err().unwrap();
        assert!(e.to_string().starts_with("reverse_tunnel filter config: ping_interval"), "{e}");
        let json = br#"{"validation": {"node_id_format": "%FOO%"}}"#;
        let e = NetConfig::with_runtime(rt, HANDSHAKE_FILTER_NAME, json).err().unwrap();
        assert!(matches!(&e, SetupError::IdFormat { field: "validation.node_id_format", .. }), "{e}");
    }

    #[test]
    fn teardown_releases_an_attach_that_never_arrived() {
        let env = fake::Env::with_egress("{}", "{}", r#"{"claim_timeout": "2s"}"#);
        let tf = FakeNetworkFilter::new(201);
        let tc = fake::open(&env.handshake, &tf);
        let ef = FakeNetworkFilter::new(202);
        ef.filter_state.borrow_mut().insert("envoy.network.upstream_server_name".into(), b"n1".to_vec());
        let ec = fake::open(&env.egress, &ef);
        // An attach queued for the tunnel, which closes before it is delivered.
        tc.ep().post(Msg::Attach { peer: ec.ep().clone(), first: Vec::new() });
        on_event(&tc, ConnectionEvent::RemoteClose);
        fake::deliver_mail(&[&ec]);
        assert_eq!(ef.closes(), vec![(CloseType::FlushWrite, "reverse_tunnel_peer_closed".to_string())]);
    }

    #[test]
    fn teardown_releases_a_pending_clock_tick() {
        let env = fake::Env::new("{}", "{}");
        let tf = FakeNetworkFilter::new(205);
        let tc = fake::open(&env.handshake, &tf);
        env.rt.post_ticks();
        assert!(env.rt.clocks[0].lock().tick_pending);
        assert!(!tc.ep().is_quiet(), "the tick went through the only connection of the worker");
        on_event(&tc, ConnectionEvent::LocalClose);
        assert!(!env.rt.clocks[0].lock().tick_pending, "released: the next period posts a new tick");
    }

    #[test]
    fn connected_events_change_nothing() {
        let env = fake::Env::new("{}", "{}");
        let f = FakeNetworkFilter::new(204);
        let c = fake::open(&env.handshake, &f);
        on_event(&c, ConnectionEvent::Connected);
        on_event(&c, ConnectionEvent::ConnectedZeroRtt);
        assert!(worker::get(204).is_some());
        on_event(&c, ConnectionEvent::RemoteClose);
        assert!(worker::get(204).is_none());
    }
}
