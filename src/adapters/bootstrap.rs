//! Adapter for the bootstrap extension `upstream_socket_interface` (config: the built-in's
//! `UpstreamReverseConnectionSocketInterface`). All functions run on the main thread.
//!
//! It owns the [`Runtime`] (tracker, stats), signals init complete, runs the worker clock (one
//! main-thread timer that posts a tick to each worker, docs/architecture.md#threads-and-the-clock), serves the admin endpoint
//! `/reverse_tunnels`, and on drain/shutdown refuses new handshakes.

use super::endpoint::Msg;
use super::error::SetupError;
use super::reporter::{callout_ok, tracker_snapshot};
use crate::config::bootstrap::BootstrapConfig;
use crate::core::tracker::{TunnelState, WorkerName};
use super::envoy_api::{EnvoyBootstrap, EnvoyTimer};
use crate::ffi::envoy::{self, BootstrapConfigHandle, CalloutInitError, CalloutResult};
use crate::runtime::{Runtime, RUNTIME};
use crate::rt_log;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Period of the worker clock (ms): deadlines are met within this much. 50 ms keeps dead-tunnel
/// detection within one scheduling step of the built-in's per-tunnel timers (benchmark W5) at a
/// cost of one scheduler post per worker per period (keepalive CPU, W4, stays below the built-in's).
pub const CLOCK_PERIOD_MS: u64 = 50;

/// Admin path of the tunnel listing.
pub const ADMIN_PATH: &str = "/reverse_tunnels";

/// Admin path that reopens the lifecycle access log files (after rotation).
pub const REOPEN_PATH: &str = "/reverse_tunnels/reopen_logs";

/// The module-side object of the bootstrap extension config.
pub struct BootstrapExtension {
    /// Envoy's side of the extension config.
    envoy: Box<dyn EnvoyBootstrap>,
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    timer: Mutex<Option<Box<dyn EnvoyTimer>>>,
}

/// `config_new`: decodes the config, defines metrics, publishes the runtime and signals init
/// complete. Errors name the field; the caller logs them and Envoy refuses to start.
pub fn config_new(handle: BootstrapConfigHandle, name: &str, config: &[u8]) -> Result<BootstrapExtension, SetupError> {
    if name != "upstream_socket_interface" {
        return Err(SetupError::UnknownExtension(name.to_string()));
    }
    let cfg = BootstrapConfig::decode(config).map_err(SetupError::Bootstrap)?;
    let concurrency = envoy::concurrency();
    rt_log!(
        Info,
        "reverse_tunnel: upstream_socket_interface stat_prefix={} ping_failure_threshold={} tenant_isolation={} workers={}",
        cfg.stat_prefix,
        cfg.ping_failure_threshold,
        cfg.enable_tenant_isolation,
        concurrency
    );
    let runtime = Arc::new(Runtime::new(cfg, handle, concurrency)?);
    *RUNTIME.write() = Some(runtime.clone());
    handle.signal_init_complete();
    Ok(BootstrapExtension::new(Box::new(handle), runtime))
}

impl BootstrapExtension {
    /// The extension over `envoy` and `runtime` (already published and initialized).
    pub fn new(envoy: Box<dyn EnvoyBootstrap>, runtime: Arc<Runtime>) -> BootstrapExtension {
        BootstrapExtension { envoy, runtime, timer: Mutex::new(None) }
    }

    /// `server_initialized`: starts the worker clock and registers the admin endpoint.
    pub fn server_initialized(&self) {
        let t = self.envoy.timer_new();
        t.enable(CLOCK_PERIOD_MS);
        *self.timer.lock() = Some(t);
        if !self.envoy.register_admin_handler(ADMIN_PATH, "reverse_tunnel: list tunnels by tenant, cluster and node (JSON)") {
            rt_log!(Warn, "reverse_tunnel: could not register admin handler {ADMIN_PATH}");
        }
        if !self.envoy.register_admin_handler(REOPEN_PATH, "reverse_tunnel: reopen the lifecycle access log files") {
            rt_log!(Warn, "reverse_tunnel: could not register admin handler {REOPEN_PATH}");
        }
    }

    /// `timer_fired`: one clock period elapsed: posts the worker ticks and lets the reporter
    /// send what is due (main thread).
    pub fn timer_fired(&self) {
        self.runtime.post_ticks();
        self.runtime.stats.access_log_dropped(self.runtime.lifecycle.dropped());
        self.runtime.stats.publish_panics(crate::ffi::PANICS_CAUGHT.load(Ordering::Relaxed));
        self.runtime.stats.publish_relayed();
        self.runtime.stats.flush_deferred();
        if let Some(t) = &*self.timer.lock() {
            t.enable(CLOCK_PERIOD_MS);
        }
        // After re-arming, so that nothing in the reporter can stop the clock. It keeps
        // reporting while draining (tunnels closing are news too).
        reporter_tick(&self.runtime, &*self.envoy);
        jwks_tick(&self.runtime, &*self.envoy);
        if let Some(r) = &self.runtime.reporter {
            self.runtime.stats.publish_reporter(&r.counters());
        }
    }

    /// `http_callout_done` (docs/envoy-abi.md#bootstrap-hooks): the result of callout `id` (a
    /// remote JWKS fetch or the reporter's), `status` the response's `:status` header if any,
    /// `body` the response body (empty on failure).
    pub fn http_callout_done(&self, id: u64, result: CalloutResult, status: Option<&str>, body: &[u8]) {
        let fetch = match (result, status) {
            (CalloutResult::Success, Some("200")) => Ok(body),
            (CalloutResult::Success, s) => Err(format!("HTTP status {}", s.unwrap_or("none"))),
            (CalloutResult::Reset, _) => Err("reset (connection failure or timeout)".to_string()),
            (CalloutResult::ExceedResponseBufferLimit, _) => Err("response too large".to_string()),
            (CalloutResult::Other(rc), _) => Err(format!("callout result {rc}")),
        };
        if self.runtime.jwks.callout_done(id, fetch, crate::runtime::now_ms()) {
            return;
        }
        if let Some(r) = &self.runtime.reporter {
            let ok = callout_ok(result, status);
            let detail = match (result, status) {
                (CalloutResult::Success, Some(s)) => format!("HTTP status {s}"),
                (CalloutResult::Success, None) => "no :status".to_string(),
                (CalloutResult::Reset, _) => "reset (connection failure or timeout)".to_string(),
                (CalloutResult::ExceedResponseBufferLimit, _) => "response too large".to_string(),
                (CalloutResult::Other(rc), _) => format!("callout result {rc}"),
            };
            r.on_callout_done(id, ok, &detail, crate::runtime::now_ms());
        }
    }

    /// `drain_started` (`POST /drain_listeners?graceful`; not called on `/quitquitquit`, docs/envoy-abi.md#drain-and-shutdown):
    /// new handshakes get 503 from now on, and every idle tunnel is closed on its own worker
    /// (`Msg::Drain`, close reason `drain`) so that initiators dial another responder. Claimed
    /// tunnels keep serving. Idempotent. Cost: one tracker snapshot, O(tunnels), main thread.
    pub fn drain_started(&self) {
        let n = drain_idle_tunnels(&self.runtime);
        rt_log!(Info, "reverse_tunnel: drain started, refusing new handshakes, closing {n} idle tunnel(s)");
    }

    /// `shutdown`: stop the clock; the caller then calls the completion callback.
    pub fn shutdown(&self) {
        self.runtime.draining.store(true, Ordering::SeqCst);
        if let Some(t) = self.timer.lock().take() {
            t.delete();
        }
        self.runtime.lifecycle.shutdown();
        self.runtime.socket_loops.shutdown();
    }

    /// `admin_request` for [`ADMIN_PATH`]: returns (status, body).
    pub fn admin_request(&self, _method: &str, path: &str) -> (u32, Vec<u8>) {
        let (p, query) = path.split_once('?').unwrap_or((path, ""));
        if p == REOPEN_PATH {
            // Envoy's own /reopen_logs does not reach modules (no hook in the ABI): log rotation
            // calls this one as well.
            self.runtime.lifecycle.reopen();
            return (200, b"lifecycle access log files reopened\n".to_vec());
        }
        if p != ADMIN_PATH {
            return (404, b"not found\n".to_vec());
        }
        match AdminQuery::parse(query) {
            Ok(q) => (200, admin_listing(&self.runtime, &q).into_bytes()),
            Err(e) => (400, format!("{e}\n").into_bytes()),
        }
    }

    /// `config_destroy`: unpublishes the runtime.
    pub fn destroy(&self) {
        let mut g = RUNTIME.write();
        if g.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.runtime)) {
            *g = None;
        }
    }
}

/// Main thread: the clock tick of the runtime's reporter (if any), sending through `envoy`.
fn reporter_tick(rt: &Runtime, envoy: &dyn EnvoyBootstrap) {
    let Some(r) = &rt.reporter else { return };
    r.tick(crate::clock::now_ms(), || tracker_snapshot(&rt.tracker), |headers, body| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        envoy.http_callout(&r.config.cluster, &h, body, r.config.settings.timeout_ms).map_err(|e| match e {
            CalloutInitError::MissingRequiredHeaders => "missing required headers".to_string(),
            CalloutInitError::ClusterNotFound => format!("cluster '{}' not found", r.config.cluster),
            CalloutInitError::DuplicateCalloutId => "duplicate callout id".to_string(),
            CalloutInitError::CannotCreateRequest => "cannot create the request".to_string(),
            CalloutInitError::Other(rc) => format!("init result {rc}"),
        })
    });
}

/// Main thread: starts the remote JWKS fetches that are due (`adapters::jwks`), `GET` through
/// the bootstrap HTTP callout.
fn jwks_tick(rt: &Runtime, envoy: &dyn EnvoyBootstrap) {
    rt.jwks.tick(crate::runtime::now_ms(), |c| {
        let headers = [(":method", "GET"), (":path", c.path.as_str()), ("host", c.host.as_str()), ("accept", "application/json")];
        envoy.http_callout(&c.cluster, &headers, b"", c.timeout.as_millis() as u64).map_err(|e| match e {
            CalloutInitError::ClusterNotFound => format!("cluster '{}' not found", c.cluster),
            other => format!("callout not started: {other:?}"),
        })
    });
}

/// Sets the draining flag, then posts [`Msg::Drain`] to every tunnel the tracker lists as idle;
/// returns how many were posted. The flag is stored (SeqCst) before the snapshot, so a tunnel
/// registered after the snapshot sees it and closes itself (handshake adapter `admit`).
pub fn drain_idle_tunnels(rt: &Runtime) -> usize {
    rt.draining.store(true, Ordering::SeqCst);
    rt.stats.draining(true);
    rt.tracker
        .snapshot_with(|ep| ep.clone())
        .into_iter()
        .filter(|(info, _)| info.state == TunnelState::Idle)
        .filter(|(_, ep)| ep.post(Msg::Drain))
        .count()
}

/// Filters and format of `GET /reverse_tunnels?node=&cluster=&tenant=&format=json|text`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AdminQuery {
    /// Only tunnels of this node id (bare id).
    pub node: Option<String>,
    /// Only tunnels of this cluster id.
    pub cluster: Option<String>,
    /// Only tunnels of this tenant id.
    pub tenant: Option<String>,
    /// `text` for humans; JSON otherwise.
    pub text: bool,
}

/// A query of the tunnel listing that cannot be answered (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminQueryError {
    /// A parameter other than `node`, `cluster`, `tenant` and `format`.
    UnknownParameter(String),
    /// `format` other than `json` or `text`.
    Format(String),
}

impl std::fmt::Display for AdminQueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminQueryError::UnknownParameter(p) => {
                write!(f, "unknown query parameter '{p}' (node, cluster, tenant, format)")
            }
            AdminQueryError::Format(v) => write!(f, "format: expected json or text, got '{v}'"),
        }
    }
}

impl AdminQuery {
    /// Parses a query string; unknown parameters are an error naming them.
    pub fn parse(query: &str) -> Result<AdminQuery, AdminQueryError> {
        let mut q = AdminQuery::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "node" => q.node = Some(v),
                "cluster" => q.cluster = Some(v),
                "tenant" => q.tenant = Some(v),
                "format" => match v.as_str() {
                    "text" => q.text = true,
                    "json" => q.text = false,
                    other => return Err(AdminQueryError::Format(other.to_string())),
                },
                other => return Err(AdminQueryError::UnknownParameter(other.to_string())),
            }
        }
        Ok(q)
    }
}

/// The tunnel listing: totals, one entry per tunnel, and (JSON only) `by_node`: per tenant,
/// cluster and node, its idle and in-use counts and tunnel ids (JSON, or one line per tunnel with
/// `format=text`). Main thread. The tracker is read with [`Tracker::walk_batched`](crate::core::tracker::Tracker::walk_batched), each batch
/// under one short hold of its lock, and rows are written straight from borrowed fields (no copy
/// of the table): with 10,000 tunnels this stays well within the 100 ms the issue allows and no
/// worker waits on the lock for more than one batch (integration test `admin_scale`). A tunnel
/// closing meanwhile is simply left out.
pub fn admin_listing(rt: &Runtime, q: &AdminQuery) -> String {
    let now = crate::runtime::unix_ms();
    let keep = |i: &crate::core::tracker::Identity| {
        q.node.as_ref().is_none_or(|n| *n == i.node_id)
            && q.cluster.as_ref().is_none_or(|c| *c == i.cluster_id)
            && q.tenant.as_ref().is_none_or(|t| *t == i.tenant_id)
    };
    let counts = rt.tracker.counts();
    let total = counts.idle + counts.in_use;
    let mut out: Vec<u8> = Vec::with_capacity(128 + if q.text { total * 200 } else { total * 320 });
    let mut first = true;
    // Per tenant, cluster and node (JSON `by_node`): tunnel counts and ids, sorted by the three ids.
    // Keyed by `tenant \0 cluster \0 node` (one allocation per node; `\0` sorts before any id byte).
    let mut by_node: std::collections::BTreeMap<String, NodeRow> = Default::default();
    // Which responder this is (a fleet runs several) and whether it is draining.
    let responder = rt.config.responder_name();
    let draining = rt.is_draining();
    if q.text {
        out.extend_from_slice(
            format!(
                "tunnels: {} idle, {} in use, {} nodes, {} clusters; responder {}{}\n",
                counts.idle,
                counts.in_use,
                counts.nodes,
                counts.clusters,
                responder.unwrap_or("-"),
                if draining { "; draining" } else { "" }
            )
            .as_bytes(),
        );
    } else {
        // JSON: the totals (which responder, draining, counts), then one compact object per tunnel
        // and line. The totals are written by serde like every row; the object is left open for
        // the `tunnels` array.
        let totals = AdminTotals {
            responder,
            draining,
            idle: counts.idle,
            in_use: counts.in_use,
            nodes: counts.nodes,
            clusters: counts.clusters,
        };
        let _ = serde_json::to_writer(&mut out, &totals);
        out.pop(); // the closing `}`
        out.extend_from_slice(b",\"tunnels\":[");
    }
    rt.tracker.walk_batched(|v| {
        let id = v.identity;
        if !keep(id) {
            return;
        }
        let ack = v.handle.live.last_ack_unix_ms.load(Ordering::Relaxed);
        let rtt = v.handle.live.last_rtt_ms.load(Ordering::Relaxed);
        let egress = v.handle.live.egress.load(Ordering::Relaxed);
        let state = v.state.as_str();
        if q.text {
            use std::io::Write;
            let since_ack = if ack == 0 { "-".to_string() } else { format!("{}ms", now.saturating_sub(ack)) };
            let _ = writeln!(
                out,
                "tenant={} cluster={} node={} tunnel={} worker={} state={} age={}ms last_ack={} rtt={}ms egress={} remote={} initiator={}/{}",
                id.tenant_id, id.cluster_id, id.node_id, v.tunnel, WorkerName(v.worker), state,
                now.saturating_sub(v.meta.registered_at_ms), since_ack, rtt, egress, v.meta.remote_address,
                v.meta.initiator_worker_id, v.meta.initiator_connection_id
            );
            return;
        }
        let mut key = String::with_capacity(id.tenant_id.len() + id.cluster_id.len() + id.node_id.len() + 2);
        for (i, part) in [&id.tenant_id, &id.cluster_id, &id.node_id].into_iter().enumerate() {
            if i > 0 {
                key.push('\0');
            }
            key.push_str(part);
        }
        let entry = by_node.entry(key).or_default();
        match v.state {
            TunnelState::Idle => entry.idle += 1,
            TunnelState::InUse => entry.in_use += 1,
        }
        entry.tunnels.push(v.tunnel);
        out.extend_from_slice(if first { b"\n" } else { b",\n" });
        first = false;
        let row = AdminRow {
            tunnel: v.tunnel,
            worker: WorkerName(v.worker),
            tenant_id: &id.tenant_id,
            cluster_id: &id.cluster_id,
            node_id: &id.node_id,
            state,
            age_ms: now.saturating_sub(v.meta.registered_at_ms),
            since_last_ping_ack_ms: (ack != 0).then(|| now.saturating_sub(ack)),
            last_ping_rtt_ms: rtt,
            egress_connections: egress,
            remote_address: &v.meta.remote_address,
            initiator_worker_id: &v.meta.initiator_worker_id,
            initiator_connection_id: &v.meta.initiator_connection_id,
        };
        // Writing into a Vec cannot fail; a row that could not be serialized is left out.
        let _ = serde_json::to_writer(&mut out, &row);
    });
    if !q.text {
        out.extend_from_slice(b"\n],\"by_node\":[");
        for (i, (key, n)) in by_node.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            let mut parts = key.splitn(3, '\0');
            let row = NodeJson {
                tenant_id: parts.next().unwrap_or_default(),
                cluster_id: parts.next().unwrap_or_default(),
                node_id: parts.next().unwrap_or_default(),
                idle: n.idle,
                in_use: n.in_use,
                tunnels: &n.tunnels,
            };
            let _ = serde_json::to_writer(&mut out, &row);
        }
        out.extend_from_slice(b"\n]}\n");
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One node of the JSON listing's `by_node` summary.
#[derive(Default)]
struct NodeRow {
    idle: u64,
    in_use: u64,
    tunnels: Vec<u64>,
}

/// The totals opening the JSON listing (field order = output order).
#[derive(serde::Serialize)]
struct AdminTotals<'a> {
    /// The responder's name (bootstrap `responder`, else the reporter's), null if none.
    responder: Option<&'a str>,
    /// True once Envoy started draining.
    draining: bool,
    idle: usize,
    in_use: usize,
    nodes: usize,
    clusters: usize,
}

/// One entry of `by_node` (field order = output order).
#[derive(serde::Serialize)]
struct NodeJson<'a> {
    tenant_id: &'a str,
    cluster_id: &'a str,
    node_id: &'a str,
    idle: u64,
    in_use: u64,
    tunnels: &'a [u64],
}

/// One tunnel of the JSON listing (field order = output order).
#[derive(serde::Serialize)]
struct AdminRow<'a> {
    tunnel: u64,
    worker: WorkerName,
    tenant_id: &'a str,
    cluster_id: &'a str,
    node_id: &'a str,
    state: &'static str,
    age_ms: u64,
    since_last_ping_ack_ms: Option<u64>,
    last_ping_rtt_ms: u64,
    egress_connections: u64,
    remote_address: &'a str,
    initiator_worker_id: &'a str,
    initiator_connection_id: &'a str,
}

#[cfg(test)]
mod tests;
