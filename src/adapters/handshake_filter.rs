//! Adapter for the handshake network filter `reverse_tunnel` (config: the built-in's
//! `envoy.extensions.filters.network.reverse_tunnel.v3.ReverseTunnel`).
//!
//! Life of a handshake-listener connection, all on its worker:
//! 1. Handshake: bytes accumulate (bounded) until [`handshake::evaluate`] decides; a rejection is
//!    written and the connection closed (FlushWrite); a success writes exactly the 200/101
//!    (docs/protocol.md#handshake-response).
//!    A spare tunnel (a node's further tunnel on this worker, when listener filter
//!    `reverse_tunnel_spares` is configured) moves to the worker's socket loop here instead,
//!    handshake bytes and all ([`move_spare`], docs/architecture.md#spare-tunnels).
//! 2. Admission: the first RPING goes out ~50 ms later, never in the same write as the 200
//!    (docs/protocol.md#after-the-accept); its echo admits the tunnel to the tracker's idle pool.
//! 3. Idle: RPING keepalive driven by the worker clock ([`Keepalive`]).
//! 4. Claimed: an egress connection took the tunnel; RPING echoes still in flight are stripped,
//!    everything else is relayed to the egress connection. A used tunnel never returns to the pool.

use crate::core::h2mux::hpack::HeaderField;
use super::endpoint::{Endpoint, Msg};
use super::conn::{CloseDetail, Conn, Role};
use super::error::SetupError;
use crate::core::close::CloseReason;
use super::tunnel_session::{Action, TunnelSession};
use crate::core::h2mux::{Part, OWN_PART_MIN};
use super::worker::{self, deliver};
use crate::config::filter::FilterConfig;
use crate::config::jwt::JwksSource;
use super::jwks::JwtKeys;
use crate::core::jwt::{self, Claims, JwtError};
use crate::core::accesslog::{EventName, ExtraKey, LifecycleEvent, LogType, SocketState};
use crate::core::handshake::{self, Counter, HandshakeRequest, HandshakeRules, Rejection};
use crate::core::idformat::{self, FormatContext, IdFormat};
use crate::core::keepalive::{Event, Keepalive, KeepaliveSettings, RPING};
use crate::core::tunnel::{Claim, Drain, Read, Session, Timer, Tunnel as Phases};
use crate::core::spares::Keepers;
use crate::core::tracker::{Identity, TunnelMeta, WorkerName, SOCKET_LOOP_BASE};
use super::socket_loop;
use crate::ffi::envoy::CloseType;
use crate::runtime::{now_ms, Runtime};
use crate::rt_log;
use crate::stats::Direction;
use std::sync::Arc;

/// Delay between the 200/101 and the first RPING (ms). Large enough that the two can never
/// share a TCP segment (docs/protocol.md#after-the-accept), small enough that a new tunnel is usable quickly.
pub const FIRST_PING_DELAY_MS: u64 = 50;

/// Everything a handshake connection needs from its filter config.
pub struct HandshakeSettings {
    /// The decoded filter config.
    pub filter: FilterConfig,
    /// Parser rules derived from it.
    pub rules: HandshakeRules,
    /// Keepalive settings: `ping_interval` from the filter, `ping_failure_threshold` from the
    /// bootstrap extension.
    pub keepalive: KeepaliveSettings,
    /// `validation.{node,cluster,tenant}_id_format`, parsed (docs/protocol.md#filter-config).
    pub id_formats: [Option<IdFormat>; 3],
    /// `jwt_validator`'s keys (docs/protocol.md#jwt-on-the-handshake); its other fields are in
    /// `filter.jwt_validator`. `None` without a validator.
    pub jwt_keys: Option<JwtKeys>,
}

impl HandshakeSettings {
    /// Decodes the filter config and derives rules; errors name the field.
    pub fn new(config: &[u8], runtime: &Runtime) -> Result<HandshakeSettings, SetupError> {
        let filter = FilterConfig::decode(config).map_err(SetupError::HandshakeFilter)?;
        let mut formats: [Option<IdFormat>; 3] = [None, None, None];
        if let Some(v) = &filter.validation {
            for (i, (field, value)) in [
                ("validation.node_id_format", &v.node_id_format),
                ("validation.cluster_id_format", &v.cluster_id_format),
                ("validation.tenant_id_format", &v.tenant_id_format),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(fmt) = value {
                    let parsed = idformat::parse(fmt).map_err(|error| SetupError::IdFormat { field, error })?;
                    formats[i] = Some(parsed);
                }
            }
        }
        if filter.enable_connection_limit && runtime.config.max_connections_per_node == 0 {
            rt_log!(
                Warn,
                "reverse_tunnel: enable_connection_limit is set but the bootstrap max_connections_per_node is 0 (unlimited)"
            );
        }
        let rules = HandshakeRules {
            request_path: filter.request_path.clone(),
            request_method: filter.request_method.clone(),
            use_http_upgrade: filter.use_http_upgrade,
            required_cluster_name: filter.required_cluster_name.clone(),
            tenant_isolation: runtime.config.enable_tenant_isolation,
            ..HandshakeRules::default()
        };
        let keepalive = KeepaliveSettings {
            interval_ms: filter.ping_interval.as_millis() as u64,
            failure_threshold: runtime.config.ping_failure_threshold,
            first_ping_delay_ms: FIRST_PING_DELAY_MS,
        };
        let jwt_keys = filter.jwt_validator.as_ref().map(|j| match &j.source {
            JwksSource::Local(keys) => JwtKeys::Local(keys.clone()),
            JwksSource::Remote(remote) => JwtKeys::Remote(runtime.jwks.register(remote.clone())),
        });
        Ok(HandshakeSettings { filter, rules, keepalive, id_formats: formats, jwt_keys })
    }
}

/// The claimed phase of [`core::tunnel::Tunnel`](crate::core::tunnel::Tunnel) runs a
/// [`TunnelSession`].
impl Session for TunnelSession {
    type Action = Action;
    fn tunnel_data(&mut self, data: Vec<u8>) -> Vec<Action> {
        TunnelSession::tunnel_data(self, data)
    }
    fn on_timer(&mut self, now_ms: u64) -> Vec<Action> {
        TunnelSession::on_timer(self, now_ms)
    }
    fn next_deadline(&self) -> Option<u64> {
        TunnelSession::next_deadline(self)
    }
}

/// State of one handshake-listener connection: its phase machine plus what the adapter learned
/// from the handshake.
pub struct TunnelConn {
    settings: Arc<HandshakeSettings>,
    phases: Phases<TunnelSession>,
    identity: Option<Identity>,
    remote: String,
    local: String,
    /// The initiator's `x-envoy-reverse-tunnel-worker-id` and `-connection-id` ("" if absent).
    initiator: (String, String),
    /// The handshake's initiation time (epoch ms, 0 if absent), for the reporter.
    initiation_time_ms: i64,
    /// The node key, while this connection is its node's keeper on this worker ([`KEEPERS`]).
    keeper_of: Option<String>,
}

thread_local! {
    /// The keepers of this worker's nodes (docs/architecture.md#spare-tunnels).
    static KEEPERS: std::cell::RefCell<Keepers> = std::cell::RefCell::new(Keepers::default());
}

impl TunnelConn {
    /// A new connection accepted at `now_ms`.
    pub fn new(settings: Arc<HandshakeSettings>, now_ms: u64) -> TunnelConn {
        let timeout_ms = settings.filter.handshake_timeout.as_millis() as u64;
        TunnelConn {
            settings,
            phases: Phases::new(now_ms, timeout_ms),
            identity: None,
            remote: String::new(),
            local: String::new(),
            initiator: (String::new(), String::new()),
            initiation_time_ms: 0,
            keeper_of: None,
        }
    }
}

/// A handshake-listener connection.
pub type Tunnel = Conn<TunnelConn>;

/// Runs `f` on the tunnel state. The borrow ends with `f`: never call Envoy inside it.
fn with_tunnel<R>(conn: &Tunnel, f: impl FnOnce(&mut TunnelConn) -> R) -> R {
    f(&mut conn.state.borrow_mut())
}

impl Role for TunnelConn {
    const USES_CLOCK: bool = true;
    fn on_new_connection(conn: &Tunnel) {
        on_new_connection(conn)
    }
    fn on_read(conn: &Tunnel, data: Vec<u8>, end_stream: bool) {
        on_read(conn, data, end_stream)
    }
    fn on_deadline(conn: &Tunnel, now_ms: u64) {
        on_deadline(conn, now_ms)
    }
    fn on_message(conn: &Tunnel, msg: Msg) {
        match msg {
            Msg::Attach { peer, first } => on_attach(conn, peer, first),
            Msg::EgressData { from, bytes } => on_egress_data(conn, from, bytes),
            Msg::EgressClosed { from } => on_egress_closed(conn, from),
            Msg::Drain => on_drain(conn),
            Msg::LocalOpen { peer, fields, end } => on_local_open(conn, peer, fields, end),
            m @ (Msg::LocalData { .. } | Msg::LocalTrailers { .. } | Msg::LocalCredit { .. } | Msg::LocalCancel { .. }) => {
                on_local_msg(conn, m)
            }
            Msg::Tick | Msg::Data(_) | Msg::PeerClosed | Msg::LocalFrames { .. } => {}
        }
    }
    fn on_closed(conn: &Tunnel, remote: bool) {
        on_closed(conn, remote)
    }
    fn send_inline(conn: &Tunnel, from: u64, payload: &[&[u8]]) -> bool {
        send_inline(conn, from, payload)
    }
}

/// Arms the handshake deadline.
pub fn on_new_connection(conn: &Tunnel) {
    let deadline = with_tunnel(conn, |t| t.phases.handshake_deadline());
    worker::set_deadline(conn.ep.conn_id, Some(deadline));
}

/// Bytes from the initiator.
pub fn on_read(conn: &Tunnel, data: Vec<u8>, end_stream: bool) {
    let now = now_ms();
    let read = with_tunnel(conn, |t| t.phases.on_read(data, end_stream, now, &t.settings.rules));
    match read {
        Read::Nothing => {}
        Read::HandshakeIncomplete => conn.close(CloseType::NoFlush, CloseDetail::HandshakeIncomplete),
        Read::Reject(r) => reject(conn, &r),
        Read::Accept(req) => {
            if !move_spare(conn, &req) {
                accept(conn, req, now)
            }
        }
        Read::Keepalive(events) => handle_keepalive_events(conn, events, now),
        Read::Relay { actions, end_stream } => {
            run_actions(conn, actions);
            if end_stream {
                conn.close(CloseType::FlushWrite, CloseDetail::Tunnel(CloseReason::RemoteClose));
            }
        }
    }
}

/// Spare tunnels (docs/architecture.md#spare-tunnels): when listener filter
/// `reverse_tunnel_spares` noted this connection's socket, the node's first tunnel on this worker
/// stays here as its keeper, and a further one moves to the worker's socket loop with the bytes
/// of its handshake, which the loop answers as if it had read them itself. This connection then
/// closes without a tunnel close (no `tunnels_closed`, no lifecycle entry: the tunnel lives on;
/// `spare_tunnels_moved` counts it). Returns true if the tunnel moved.
fn move_spare(conn: &Tunnel, req: &HandshakeRequest) -> bool {
    if conn.ep.worker >= SOCKET_LOOP_BASE {
        return false;
    }
    let Some(f) = conn.envoy() else { return false };
    if f.is_ssl() {
        return false; // the socket carries Envoy's TLS; `accept` refuses such a handshake
    }
    let Some(stream) = f.take_socket() else { return false };
    let key = conn.runtime.tracker.node_key(&identity_of(req));
    if KEEPERS.with(|k| k.borrow_mut().admit(&key)) {
        with_tunnel(conn, |t| t.keeper_of = Some(key));
        return false; // `stream` (our duplicate) closes; Envoy's connection keeps the socket
    }
    let Some((read, settings)) = with_tunnel(conn, |t| t.phases.hand_over(&t.settings.rules).map(|b| (b, t.settings.clone()))) else {
        return false;
    };
    worker::set_deadline(conn.ep.conn_id, None);
    rt_log!(Debug, "reverse_tunnel: spare tunnel of node '{}' moves to socket loop {} (conn={})", req.node_id, conn.ep.worker, conn.ep.conn_id);
    socket_loop::adopt_read(&conn.runtime, settings, stream, conn.ep.worker, read);
    conn.runtime.stats.spare_tunnel_moved();
    conn.close(CloseType::NoFlush, CloseDetail::MovedToSocketLoop);
    true
}

/// The tracker identity an accepted handshake names.
fn identity_of(req: &HandshakeRequest) -> Identity {
    Identity { node_id: req.node_id.clone(), cluster_id: req.cluster_id.clone(), tenant_id: req.tenant_id.clone() }
}

fn reject(conn: &Tunnel, r: &Rejection) {
    if let Some(c) = r.counter {
        conn.runtime.stats.handshake(c);
    }
    rt_log!(Debug, "reverse_tunnel: handshake rejected with {} ({})", r.status, r.body);
    with_tunnel(conn, |t| t.phases.rejected());
    worker::set_deadline(conn.ep.conn_id, None);
    conn.write(&r.to_wire());
    conn.close(CloseType::FlushWrite, CloseDetail::HandshakeRejected);
}

fn accept(conn: &Tunnel, req: HandshakeRequest, now: u64) {
    let rt = &conn.runtime;
    if draining(rt) {
        return reject(conn, &Rejection::draining());
    }
    let identity = identity_of(&req);
    let settings = with_tunnel(conn, |t| t.settings.clone());
    let Some(f) = conn.envoy() else { return };
    if f.is_ssl() {
        // docs/architecture.md#known-limits: after a TLS-protected handshake a 1.40.0 initiator speaks cleartext on the
        // raw socket while Envoy keeps TLS on this connection; the tunnel could never work.
        rt.stats.outer_tls_refused();
        rt_log!(
            Warn,
            "reverse_tunnel: refusing handshake from node '{}' on a TLS listener: outer TLS cannot carry a 1.40.0 \
             initiator's tunnel; put TLS inside the tunnel (UpstreamTlsContext on the cluster, DownstreamTlsContext \
             on the initiator's rc:// listener)",
            req.node_id
        );
        return reject(conn, &Rejection::outer_tls());
    }
    // JWT (docs/protocol.md#jwt-on-the-handshake): after the request checks, before the connection
    // limit and the id formats, which may bind an id to a claim.
    let mut claims: Option<Claims> = None;
    if let (Some(j), Some(keys)) = (&settings.filter.jwt_validator, &settings.jwt_keys) {
        let result = match req.header(&j.token_header).and_then(jwt::extract_token) {
            None => Err(JwtError::Missing),
            Some(token) => j.verifier.verify(token, &keys.get(), crate::runtime::unix_ms() / 1000),
        };
        match result {
            Ok(c) => {
                for (k, v) in &c {
                    f.set_metadata(&j.claims_namespace, k, &jwt::claim_text(v));
                }
                claims = Some(c);
            }
            Err(e) if j.allow_missing_or_failed => {
                rt.stats.handshake(Counter::JwtWouldDeny);
                rt_log!(Debug, "reverse_tunnel: handshake of node '{}' would be denied by jwt_validator ({e}); audit mode lets it through", req.node_id);
            }
            Err(e) => {
                rt_log!(Debug, "reverse_tunnel: handshake of node '{}' denied by jwt_validator ({e})", req.node_id);
                return reject(conn, &Rejection::jwt_denied());
            }
        }
    }
    // Validation metadata is written once the request reaches these checks (docs/protocol.md#filter-config).
    let emit = settings.filter.validation.as_ref().filter(|v| v.emit_dynamic_metadata).map(|v| v.dynamic_metadata_namespace.clone());
    let set_result = |result: &str| {
        if let Some(ns) = &emit {
            f.set_metadata(ns, "node_id", &req.node_id);
            f.set_metadata(ns, "cluster_id", &req.cluster_id);
            f.set_metadata(ns, "tenant_id", &req.tenant_id);
            f.set_metadata(ns, "validation_result", result);
        }
    };
    let max = rt.config.max_connections_per_node;
    if settings.filter.enable_connection_limit && max > 0 {
        let key = rt.tracker.node_key(&identity);
        if rt.tracker.connections_for_node(&key) >= max as usize {
            set_result("rejected");
            return reject(conn, &Rejection::connection_limit(settings.keepalive.interval_ms.div_ceil(1000) as u32));
        }
    }
    // Id formats: each must render exactly the id the initiator sent; empty or `-` fails closed.
    // SAN operators render `-` here: TLS on the handshake listener is refused (docs/architecture.md#known-limits).
    let claims_md;
    let dynamic_metadata: &[(&str, &Claims)] = match (&claims, &settings.filter.jwt_validator) {
        (Some(c), Some(j)) => {
            claims_md = [(j.claims_namespace.as_str(), c)];
            &claims_md
        }
        _ => &[],
    };
    let ctx = FormatContext { headers: &req.headers, peer_uri_sans: &[], peer_dns_sans: &[], dynamic_metadata };
    let ids = [&req.node_id, &req.cluster_id, &req.tenant_id];
    for (fmt, id) in settings.id_formats.iter().zip(ids) {
        if let Some(fmt) = fmt {
            if !idformat::check(&fmt.render(&ctx), id) {
                set_result("validation_failed");
                return reject(conn, &Rejection::validation_failed());
            }
        }
    }
    set_result("validation_passed");
    let remote = f.remote_address();
    let local = f.local_address();
    let ka = Keepalive::new(settings.keepalive, now);
    let deadline = ka.next_deadline();
    with_tunnel(conn, |t| {
        t.identity = Some(identity);
        t.remote = remote;
        t.local = local;
        t.initiator = (req.initiator_worker_id.clone(), req.initiator_connection_id.clone());
        t.initiation_time_ms = req.initiation_time_ms;
        t.phases.accepted(ka);
    });
    worker::set_deadline(conn.ep.conn_id, deadline);
    rt.stats.handshake(Counter::Accepted);
    rt_log!(
        Debug,
        "reverse_tunnel: handshake accepted node={} cluster={} tenant={} conn={} worker={}",
        req.node_id,
        req.cluster_id,
        req.tenant_id,
        conn.ep.conn_id,
        conn.ep.worker
    );
    conn.write(handshake::accept_response(req.upgrade));
}

/// Emits a lifecycle access-log entry for this tunnel (docs/protocol.md#lifecycle-log); no-op without
/// configured loggers. `extra` holds `miss_count`, `handoff_kind` or `close_reason`.
fn lifecycle(conn: &Tunnel, event: EventName, log_type: LogType, socket_state: SocketState, extra: Vec<(ExtraKey, String)>) {
    if conn.runtime.lifecycle.enabled() {
        conn.runtime.lifecycle.emit(lifecycle_event(conn, event, log_type, socket_state, extra));
    }
}

/// The lifecycle entry for this tunnel now: its ids, addresses and initiator ids; a
/// `close_reason` in `extra` is also the termination details.
fn lifecycle_event(
    conn: &Tunnel,
    event: EventName,
    log_type: LogType,
    socket_state: SocketState,
    extra: Vec<(ExtraKey, String)>,
) -> LifecycleEvent {
    let termination_details = extra.iter().find(|(k, _)| *k == ExtraKey::CloseReason).map(|(_, r)| r.clone());
    with_tunnel(conn, |t| {
        let id = t.identity.clone().unwrap_or_default();
        LifecycleEvent {
            event,
            log_type,
            node_id: id.node_id,
            cluster_id: id.cluster_id,
            tenant_id: id.tenant_id,
            worker: WorkerName(conn.ep.worker).to_string(),
            socket_state,
            fd: conn.ep.conn_id,
            initiator_worker_id: t.initiator.0.clone(),
            initiator_connection_id: t.initiator.1.clone(),
            extra,
            start_time_unix_ms: crate::runtime::unix_ms(),
            duration_ms: 0,
            local_address: t.local.clone(),
            remote_address: t.remote.clone(),
            connection_id: conn.ep.conn_id,
            termination_details,
        }
    })
}

/// `http2_keepalive_timeout` (docs/protocol.md#http2-keepalive-after-handoff, #lifecycle-log): start time is the handoff, duration its
/// age, remote the built-in's synthetic `127.0.0.1:0`.
fn lifecycle_keepalive_timeout(conn: &Tunnel, age_ms: u64) {
    let log = &conn.runtime.lifecycle;
    if !log.enabled() {
        return;
    }
    let extra = vec![(ExtraKey::CloseReason, CloseReason::Http2PingTimeout.to_string())];
    let mut ev = lifecycle_event(conn, EventName::Http2KeepaliveTimeout, LogType::UpstreamEnd, SocketState::InUse, extra);
    ev.start_time_unix_ms = ev.start_time_unix_ms.saturating_sub(age_ms);
    ev.duration_ms = age_ms;
    ev.remote_address = "127.0.0.1:0".into();
    log.emit(ev);
}

/// Acts on keepalive events (never holding a state borrow across an Envoy call).
fn handle_keepalive_events(conn: &Tunnel, events: Vec<Event>, now: u64) {
    for ev in events {
        match ev {
            Event::SendPing => {
                conn.write(RPING);
                if conn.runtime.log_ping_events {
                    lifecycle(conn, EventName::IdlePingSent, LogType::TcpUpstreamConnected, SocketState::Idle, Vec::new());
                }
            }
            Event::Ack { rtt_ms } => {
                if conn.runtime.log_ping_events {
                    lifecycle(conn, EventName::IdlePingAck, LogType::TcpUpstreamConnected, SocketState::Idle, Vec::new());
                }
                conn.runtime.stats.ping_rtt(rtt_ms);
                conn.ep.live.last_rtt_ms.store(rtt_ms, std::sync::atomic::Ordering::Relaxed);
                conn.ep.live.last_ack_unix_ms.store(crate::runtime::unix_ms(), std::sync::atomic::Ordering::Relaxed);
            }
            Event::Admitted => admit(conn, now),
            Event::Unsolicited { count } => conn.runtime.stats.unsolicited_rping(count),
            Event::Miss { count } => {
                rt_log!(Debug, "reverse_tunnel: idle_ping_miss conn={} miss_count={}", conn.ep.conn_id, count);
                lifecycle(conn, EventName::IdlePingMiss, LogType::TcpUpstreamConnected, SocketState::Idle, vec![(ExtraKey::MissCount, count.to_string())]);
            }
            Event::Dead(reason) => {
                if reason == CloseReason::IdlePingTimeout {
                    let n = conn.runtime.config.ping_failure_threshold.to_string();
                    lifecycle(conn, EventName::IdlePingTimeout, LogType::TcpUpstreamConnected, SocketState::Idle, vec![(ExtraKey::MissCount, n)]);
                }
                with_tunnel(conn, |t| t.phases.set_close_reason(reason));
                conn.close(CloseType::NoFlush, CloseDetail::Tunnel(reason));
                return;
            }
        }
    }
    let next = with_tunnel(conn, |t| t.phases.next_deadline());
    if !conn.closed.get() {
        worker::set_deadline(conn.ep.conn_id, next);
    }
}

/// True once drain (or shutdown) started. SeqCst, paired with the store in
/// [`crate::adapters::bootstrap`]: a tunnel registered after the drain's snapshot of idle tunnels
/// sees the flag (see [`admit`]).
fn draining(rt: &Runtime) -> bool {
    rt.draining.load(std::sync::atomic::Ordering::SeqCst)
}

/// Envoy started draining (`Msg::Drain`, from the main thread): an idle tunnel (admitted or still
/// waiting for its first echo) is closed with reason [`CloseReason::Drain`] so that its initiator
/// dials elsewhere; a claimed tunnel keeps serving its requests. Owning worker.
pub fn on_drain(conn: &Tunnel) {
    if conn.closed.get() {
        return;
    }
    let drain = with_tunnel(conn, |t| t.phases.drain());
    let rt = &conn.runtime;
    match drain {
        Drain::Keep => return,
        Drain::Unadmitted => {}
        Drain::Registered(at) => {
            // Atomic against a claim from another worker: if a claim won, its Attach is on its
            // way and the tunnel serves it.
            let Some(rm) = rt.tracker.remove_if_idle(conn.ep.conn_id) else { return };
            left_tracker(conn, &rm, CloseReason::Drain, now_ms().saturating_sub(at));
        }
    }
    with_tunnel(conn, |t| t.phases.set_close_reason(CloseReason::Drain));
    rt_log!(Debug, "reverse_tunnel: closing idle tunnel conn={} (drain)", conn.ep.conn_id);
    // on_closed logs tunnel_closed; for a registered tunnel the tracker entry is already gone, so
    // it counts nothing twice; an unadmitted one is counted there.
    conn.close(CloseType::NoFlush, CloseDetail::Tunnel(CloseReason::Drain));
}

/// A registered tunnel was taken out of the tracker (closed, or drained): tells the reporter and
/// the stats, with its close `reason` and `lifetime_ms` (since registration when idle, since
/// handoff when in use).
fn left_tracker(conn: &Tunnel, rm: &crate::core::tracker::Removed, reason: CloseReason, lifetime_ms: u64) {
    if let Some(r) = &conn.runtime.reporter {
        r.disconnected(conn.ep.conn_id, rm, reason);
    }
    conn.runtime.stats.on_removed(rm, reason, lifetime_ms);
}

/// The first RPING echo arrived: the tunnel joins the idle pool (or, while draining, is closed).
fn admit(conn: &Tunnel, now: u64) {
    let rt = &conn.runtime;
    if draining(rt) {
        return on_drain(conn);
    }
    let (identity, remote, (iw, ic), initiation_time_ms) =
        with_tunnel(conn, |t| (t.identity.clone(), t.remote.clone(), t.initiator.clone(), t.initiation_time_ms));
    let Some(identity) = identity else { return };
    let meta = TunnelMeta {
        remote_address: remote,
        initiator_worker_id: iw,
        initiator_connection_id: ic,
        registered_at_ms: crate::runtime::unix_ms(),
        initiation_time_ms,
    };
    match rt.tracker.register(conn.ep.conn_id, conn.ep.worker, &identity, meta, conn.ep.clone()) {
        Ok(reg) => {
            rt.stats.on_registered(conn.ep.worker, &reg);
            if let Some(asked) = &reg.cluster_conflict {
                rt_log!(
                    Warn,
                    "reverse_tunnel: node '{}' asked for cluster '{}' but is fixed to '{}' by its first tunnel",
                    identity.node_id,
                    asked,
                    reg.cluster_key
                );
            }
            with_tunnel(conn, |t| t.phases.registered(now));
            lifecycle(conn, EventName::TunnelSetup, LogType::TcpUpstreamConnected, SocketState::Idle, Vec::new());
            if let Some(r) = &rt.reporter {
                r.connected(conn.ep.conn_id, conn.ep.worker, &identity, initiation_time_ms);
            }
            rt_log!(Debug, "reverse_tunnel: tunnel_setup node={} conn={}", identity.node_id, conn.ep.conn_id);
            // Drain may have started between the check above and the registration, after the
            // main thread took its snapshot of idle tunnels: then this tunnel closes itself.
            if draining(rt) {
                on_drain(conn);
            }
        }
        Err(e) => {
            rt.stats.handshake(Counter::RegistrationFailed);
            rt_log!(Error, "reverse_tunnel: could not register tunnel {}: {:?}", conn.ep.conn_id, e);
            conn.close(CloseType::NoFlush, CloseDetail::RegistrationFailed);
        }
    }
}

/// The worker clock reached this connection's deadline.
pub fn on_deadline(conn: &Tunnel, now: u64) {
    let timer = with_tunnel(conn, |t| t.phases.on_timer(now, &mut worker::jitter));
    match timer {
        Timer::HandshakeTimeout => {
            conn.runtime.stats.handshake(Counter::Timeout);
            conn.close(CloseType::NoFlush, CloseDetail::HandshakeTimeout);
        }
        Timer::Keepalive(ev) => handle_keepalive_events(conn, ev, now),
        Timer::Session(acts) => {
            run_actions(conn, acts);
            reschedule(conn);
        }
        Timer::Nothing => {}
    }
}

/// Egress connection `peer` claimed this tunnel (first claim: the keepalive stops and the relay
/// starts) or joins its HTTP/2 session (shared claim), with its `first` bytes, which are handled
/// at once: an HTTP/2 client's preface starts the session in this same step, so a claim that
/// joins it from another worker a moment later finds it running. Runs on the tunnel's worker.
pub fn on_attach(conn: &Tunnel, peer: Arc<Endpoint>, first: Vec<u8>) {
    let from = peer.conn_id;
    let now = now_ms();
    let claim = with_tunnel(conn, |t| {
        let ka = t.settings.keepalive;
        // An echo may be half read (`RP` seen): the stripper resumes from there.
        let claim = t.phases.claim(now, |strip| {
            TunnelSession::new(peer.clone(), strip, ka.interval_ms, ka.failure_threshold)
        });
        match claim {
            Claim::Join => (claim, t.phases.session_mut().map(|s| s.attach(peer.clone())).unwrap_or_default()),
            other => (other, Vec::new()),
        }
    });
    match claim {
        (Claim::Started, _) if !conn.closed.get() => {
            worker::set_deadline(conn.ep.conn_id, None);
            lifecycle(conn, EventName::SocketHandoff, LogType::UpstreamPoolReady, SocketState::HandedOff, vec![(ExtraKey::HandoffKind, "pool_to_upstream".into())]);
        }
        (Claim::Started, _) | (Claim::Refused, _) => {
            peer.post(Msg::PeerClosed);
            return;
        }
        (Claim::Join, actions) => run_actions(conn, actions),
    }
    if !first.is_empty() && !conn.closed.get() {
        on_egress_data(conn, from, first);
    }
}

/// HTTP stream `peer` (request path) opens a request on this tunnel: an idle tunnel starts its
/// HTTP/2 session for it (the keepalive stops, `socket_handoff` is logged with `handoff_kind`
/// `http_filter`); a running session takes it as one more stream. Runs on the tunnel's worker.
pub fn on_local_open(conn: &Tunnel, peer: Arc<Endpoint>, fields: Vec<HeaderField>, end: bool) {
    let now = now_ms();
    let (claim, actions) = with_tunnel(conn, |t| {
        let ka = t.settings.keepalive;
        let mut first = Vec::new();
        let claim = t.phases.claim(now, |strip| {
            let (session, acts) = TunnelSession::new_local(strip, ka.interval_ms, ka.failure_threshold);
            first = acts;
            session
        });
        match claim {
            Claim::Started | Claim::Join => {
                let mut acts = first;
                if let Some(session) = t.phases.session_mut() {
                    acts.extend(session.local_open(peer.clone(), fields, end));
                    session.start_keepalive(now);
                }
                (claim, acts)
            }
            Claim::Refused => (claim, Vec::new()),
        }
    });
    match claim {
        Claim::Started if !conn.closed.get() => {
            lifecycle(conn, EventName::SocketHandoff, LogType::UpstreamPoolReady, SocketState::HandedOff, vec![(ExtraKey::HandoffKind, "http_filter".into())]);
            run_actions(conn, actions);
            reschedule(conn);
        }
        Claim::Started | Claim::Refused => {
            peer.post(Msg::PeerClosed);
        }
        Claim::Join => run_actions(conn, actions),
    }
}

/// A request-path message for this tunnel's session from an HTTP stream (body, trailers, credit
/// or cancel). Runs on the tunnel's worker.
pub fn on_local_msg(conn: &Tunnel, msg: Msg) {
    let acts = with_tunnel(conn, |t| match t.phases.session_mut() {
        Some(session) => match msg {
            Msg::LocalData { from, bytes, end, more } => session.local_data(from, bytes, end, more),
            Msg::LocalTrailers { from, fields } => session.local_trailers(from, fields),
            Msg::LocalCredit { from, n } => session.local_credit(from, n),
            Msg::LocalCancel { from } => session.local_cancel(from),
            _ => Vec::new(),
        },
        None => Vec::new(),
    });
    run_actions(conn, acts);
}

/// Request body of same-worker HTTP stream `from`, written from Envoy's buffer (`payload`) right
/// after its DATA frame header ([`TunnelSession::local_data_inline`]); false when not taken.
pub fn send_inline(conn: &Tunnel, from: u64, payload: &[&[u8]]) -> bool {
    let n = payload.iter().map(|p| p.len()).sum();
    let acts = with_tunnel(conn, |t| t.phases.session_mut().and_then(|s| s.local_data_inline(from, n)));
    let Some(mut acts) = acts else { return false };
    // The frame header ends the last tunnel write; the payload follows it at once.
    let split = acts
        .iter()
        .rposition(|a| matches!(a, Action::WriteTunnel(_) | Action::WriteTunnelParts(_)))
        .map_or(0, |i| i + 1);
    let rest = acts.split_off(split);
    // A small payload costs less copied behind its header than as writes of its own (each write
    // runs Envoy's write path); the same rule as the multiplexer's parts.
    let behind_header = match acts.last_mut() {
        _ if n >= OWN_PART_MIN => None,
        Some(Action::WriteTunnel(b)) => Some(b),
        Some(Action::WriteTunnelParts(parts)) => match parts.last_mut() {
            Some(Part::Frames(b)) => Some(b),
            _ => None,
        },
        _ => None,
    };
    let copied = match behind_header {
        Some(b) => {
            payload.iter().for_each(|p| b.extend_from_slice(p));
            true
        }
        None => false,
    };
    run_actions(conn, acts);
    if !copied {
        for p in payload {
            conn.runtime.stats.relayed(Direction::ToInitiator, p.len());
            conn.write(p);
        }
    }
    run_actions(conn, rest);
    true
}

/// Bytes from egress connection `from` for this (claimed) tunnel.
pub fn on_egress_data(conn: &Tunnel, from: u64, bytes: Vec<u8>) {
    let now = now_ms();
    let acts = with_tunnel(conn, |t| match t.phases.session_mut() {
        Some(session) => {
            let acts = session.egress_data(from, bytes);
            session.start_keepalive(now);
            acts
        }
        None => Vec::new(),
    });
    run_actions(conn, acts);
    reschedule(conn);
}

/// Re-arms this connection's deadline from its current state.
fn reschedule(conn: &Tunnel) {
    if conn.closed.get() {
        return;
    }
    let next = with_tunnel(conn, |t| t.phases.next_deadline());
    worker::set_deadline(conn.ep.conn_id, next);
}

/// Egress connection `from` closed.
pub fn on_egress_closed(conn: &Tunnel, from: u64) {
    let acts = with_tunnel(conn, |t| t.phases.session_mut().map(|s| s.egress_closed(from)).unwrap_or_default());
    run_actions(conn, acts);
}

/// Carries out relay actions, in order, with no state borrowed.
fn run_actions(conn: &Tunnel, actions: Vec<Action>) {
    let rt = &conn.runtime;
    for a in actions {
        match a {
            Action::WriteTunnel(b) => {
                rt.stats.relayed(Direction::ToInitiator, b.len());
                conn.write(&b);
            }
            Action::WriteTunnelParts(parts) => {
                for p in parts {
                    let b = p.bytes();
                    rt.stats.relayed(Direction::ToInitiator, b.len());
                    conn.write(b);
                }
            }
            Action::ToEgress(ep, b) => {
                rt.stats.relayed(Direction::FromInitiator, b.len());
                deliver(&ep, conn.ep.worker, Msg::Data(b));
            }
            Action::CloseEgress(ep) => {
                ep.post(Msg::PeerClosed);
            }
            Action::CloseTunnel(reason) => {
                if reason == CloseReason::Http2PingTimeout {
                    let claimed = with_tunnel(conn, |t| t.phases.claimed_at_ms()).unwrap_or(0);
                    let age = now_ms().saturating_sub(claimed);
                    lifecycle_keepalive_timeout(conn, age);
                }
                with_tunnel(conn, |t| t.phases.note_close_reason(reason));
                conn.close(CloseType::FlushWrite, CloseDetail::Tunnel(reason));
            }
            Action::Shareable(yes) => {
                rt.tracker.set_shareable(conn.ep.conn_id, yes);
            }
            Action::Egress(n) => {
                conn.ep.live.egress.store(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Action::ToLocal(ep, frames, offset) => {
                let n: usize = frames
                    .iter()
                    .map(|f| match f {
                        crate::core::h2mux::LocalFrame::Data { bytes, .. } => bytes.len(),
                        _ => 0,
                    })
                    .sum();
                if n > 0 {
                    rt.stats.relayed(Direction::FromInitiator, n);
                }
                deliver(&ep, conn.ep.worker, Msg::LocalFrames { frames, window: offset as usize });
            }
            Action::PingAck => {
                conn.ep.live.last_ack_unix_ms.store(crate::runtime::unix_ms(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The connection closed (event or destroy); idempotent.
pub fn on_closed(conn: &Tunnel, remote: bool) {
    if let Some(key) = with_tunnel(conn, |t| t.keeper_of.take()) {
        KEEPERS.with(|k| k.borrow_mut().closed(&key));
    }
    let Some(mut closed) = with_tunnel(conn, |t| t.phases.closed(remote)) else { return };
    let now = now_ms();
    if let Some(mut session) = closed.session.take() {
        for a in session.tunnel_closed() {
            if let Action::CloseEgress(ep) = a {
                ep.post(Msg::PeerClosed);
            }
        }
    }
    let reason = closed.reason;
    let rt = &conn.runtime;
    // Every accepted tunnel gets its tunnel_closed, admitted to the pool or not (its ping events
    // were logged too).
    let (log_type, state) =
        if closed.was_claimed() { (LogType::UpstreamEnd, SocketState::InUse) } else { (LogType::TcpConnectionEnd, SocketState::Idle) };
    lifecycle(conn, EventName::TunnelClosed, log_type, state, vec![(ExtraKey::CloseReason, reason.to_string())]);
    if closed.registered_at_ms.is_some() {
        if let Some(rm) = rt.tracker.remove(conn.ep.conn_id) {
            left_tracker(conn, &rm, reason, closed.lifetime_ms(rm.was_idle, now));
        }
    } else {
        rt.stats.closed(reason);
    }
    rt_log!(Debug, "reverse_tunnel: tunnel_closed conn={} close_reason={}", conn.ep.conn_id, reason);
}

#[cfg(test)]
mod tests;
