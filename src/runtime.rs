//! Process-wide state shared by the three extension points and all workers.
//!
//! The bootstrap extension creates the [`Runtime`] in `config_new` (main thread) and publishes
//! it in [`RUNTIME`]; network filter configs take an `Arc` of it in their own `config_new`.
//! Everything here is `Sync`: the tracker locks internally, stats are atomic in Envoy, and the
//! per-worker clock registry is a small mutex per worker.

use crate::adapters::endpoint::Endpoint;
use crate::adapters::lifecycle::LifecycleLog;
use crate::config::bootstrap::BootstrapConfig;
use crate::core::tracker::Tracker;
use crate::ffi::envoy::{BootstrapConfigHandle, MetricKind, MetricOp};
use once_cell::sync::Lazy;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The runtime of the loaded bootstrap extension, if any.
pub static RUNTIME: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// Returns the current runtime (None before the bootstrap extension is configured).
pub fn current() -> Option<Arc<Runtime>> {
    RUNTIME.read().clone()
}

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Monotonic milliseconds since the module was first used. Any thread.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Milliseconds since the Unix epoch (for reports and admin output).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shared state of the responder.
pub struct Runtime {
    /// The decoded bootstrap config (`UpstreamReverseConnectionSocketInterface`).
    pub config: BootstrapConfig,
    /// Every registered tunnel, by node, cluster and tenant; the handle is the tunnel's endpoint.
    pub tracker: Tracker<Arc<Endpoint>>,
    /// Metric ids and update helpers.
    pub stats: Stats,
    /// Worker count (`--concurrency`).
    pub concurrency: u32,
    /// Per worker: endpoints of live handshake/tunnel connections, used to post the clock tick
    /// to that worker (design §6).
    pub clocks: Vec<Mutex<WorkerClock>>,
    /// Set when Envoy starts draining or shutting down: new handshakes get 503.
    pub draining: AtomicBool,
    /// The lifecycle access log (bootstrap `access_log`), written off the workers.
    pub lifecycle: LifecycleLog,
    /// Also log `idle_ping_sent` / `idle_ping_ack` (two lines per tunnel per interval): Envoy
    /// runtime key [`PING_EVENTS_RUNTIME_KEY`], read at startup, default false.
    pub log_ping_events: bool,
    /// The HTTP reporter (bootstrap `reporter_config`), if configured: workers push tunnel
    /// events into its bounded queue, the main thread sends them (`adapters::reporter`).
    pub reporter: Option<crate::adapters::reporter::ReporterHandle>,
}

/// Runtime key that turns on the noisy `idle_ping_sent` / `idle_ping_ack` lifecycle events.
pub const PING_EVENTS_RUNTIME_KEY: &str = "reverse_tunnel.lifecycle.ping_events";

/// The connections through which a worker's clock tick can be delivered.
#[derive(Default)]
pub struct WorkerClock {
    /// Live endpoints on this worker, by connection id.
    pub endpoints: HashMap<u64, Arc<Endpoint>>,
    /// True while a tick is posted and not yet run (ticks never pile up).
    pub tick_pending: bool,
}

impl Runtime {
    /// Builds the runtime; defines every metric (only possible during bootstrap `config_new`).
    /// Errors (an access log file that cannot be opened) name the field.
    pub fn new(config: BootstrapConfig, handle: BootstrapConfigHandle, concurrency: u32) -> Result<Runtime, String> {
        let lifecycle = LifecycleLog::new(&config.access_log)?;
        let stats = Stats::define(handle, &config.stat_prefix, concurrency);
        let tracker = Tracker::new(config.enable_tenant_isolation);
        let workers = concurrency.max(1);
        let reporter = config.reporter.clone().map(crate::adapters::reporter::ReporterHandle::new);
        Ok(Runtime {
            config,
            tracker,
            stats,
            concurrency: workers,
            clocks: (0..workers).map(|_| Mutex::new(WorkerClock::default())).collect(),
            draining: AtomicBool::new(false),
            lifecycle,
            log_ping_events: crate::ffi::envoy::runtime_bool(PING_EVENTS_RUNTIME_KEY, false),
            reporter,
        })
    }

    /// True once drain or shutdown started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Adds `ep` to its worker's clock registry.
    pub fn clock_register(&self, ep: &Arc<Endpoint>) {
        if let Some(c) = self.clocks.get(ep.worker as usize) {
            c.lock().endpoints.insert(ep.conn_id, ep.clone());
        }
    }

    /// Removes the endpoint of connection `conn_id` on `worker` from the clock registry.
    pub fn clock_unregister(&self, worker: u32, conn_id: u64) {
        if let Some(c) = self.clocks.get(worker as usize) {
            c.lock().endpoints.remove(&conn_id);
        }
    }

    /// Main thread, every clock period: posts one tick to each worker that has connections and
    /// no tick pending. Cost: O(workers).
    pub fn post_ticks(&self) {
        for clock in &self.clocks {
            let mut c = clock.lock();
            if c.tick_pending {
                continue;
            }
            let mut dead = Vec::new();
            let mut posted = false;
            for (id, ep) in c.endpoints.iter() {
                if ep.post_tick() {
                    posted = true;
                    break;
                }
                dead.push(*id);
            }
            for id in dead {
                c.endpoints.remove(&id);
            }
            c.tick_pending = posted;
        }
    }

    /// Worker thread, when its tick runs: allows the next tick to be posted.
    pub fn tick_done(&self, worker: u32) {
        if let Some(c) = self.clocks.get(worker as usize) {
            c.lock().tick_pending = false;
        }
    }
}

/// Names of the handshake counters, protocol doc §4.2 (`reverse_tunnel.handshake.<name>`).
pub const HANDSHAKE_COUNTERS: [&str; 7] =
    ["accepted", "parse_error", "validation_failed", "rejected", "timeout", "body_rejected", "registration_failed"];

/// Metric ids (defined once in bootstrap `config_new`) and typed update helpers. Every update is
/// a lock-free call into Envoy's atomic stats, from any thread.
///
/// Names (all under `<metrics_namespace>.` of the bootstrap's `dynamic_module_config`):
/// `reverse_tunnel.handshake.*` (protocol doc §4.2) and `<stat_prefix>.*` (protocol doc §4.1).
pub struct Stats {
    handle: BootstrapConfigHandle,
    handshake: [Option<usize>; 7],
    fallback_no_reverse_socket: Option<usize>,
    claims_same_worker: Option<usize>,
    claims_cross_worker: Option<usize>,
    claims_shared: Option<usize>,
    outer_tls_refused: Option<usize>,
    cluster_conflict: Option<usize>,
    tunnels_closed: Option<usize>,
    tunnels_idle: Option<usize>,
    tunnels_in_use: Option<usize>,
    total_nodes: Option<usize>,
    total_clusters: Option<usize>,
    cx_upgrade_time: Option<usize>,
    cx_post_upgrade_lifetime: Option<usize>,
    cx_idle_expire_time: Option<usize>,
    ping_rtt: Option<usize>,
    relay_bytes: Option<usize>,
    access_log_dropped: Option<usize>,
    worker_names: Vec<String>,
}

impl Stats {
    fn define(handle: BootstrapConfigHandle, prefix: &str, concurrency: u32) -> Stats {
        let d = |kind, name: String, labels: &[&str]| match handle.define(kind, &name, labels) {
            Ok(id) => Some(id),
            Err(rc) => {
                crate::rt_log!(Warn, "reverse_tunnel: could not define metric {name} (result {rc})");
                None
            }
        };
        let p = |s: &str| format!("{prefix}.{s}");
        let mut handshake = [None; 7];
        for (i, n) in HANDSHAKE_COUNTERS.iter().enumerate() {
            handshake[i] = d(MetricKind::Counter, format!("reverse_tunnel.handshake.{n}"), &[]);
        }
        Stats {
            handle,
            handshake,
            fallback_no_reverse_socket: d(MetricKind::Counter, p("fallback_no_reverse_socket"), &[]),
            claims_same_worker: d(MetricKind::Counter, p("claims_same_worker"), &[]),
            claims_cross_worker: d(MetricKind::Counter, p("claims_cross_worker"), &[]),
            claims_shared: d(MetricKind::Counter, p("claims_shared"), &[]),
            outer_tls_refused: d(MetricKind::Counter, p("outer_tls_refused"), &[]),
            cluster_conflict: d(MetricKind::Counter, p("cluster_conflict"), &[]),
            tunnels_closed: d(MetricKind::Counter, p("tunnels_closed"), &["close_reason"]),
            tunnels_idle: d(MetricKind::Gauge, p("tunnels_idle"), &[]),
            tunnels_in_use: d(MetricKind::Gauge, p("tunnels_in_use"), &[]),
            total_nodes: d(MetricKind::Gauge, p("total_nodes"), &["worker"]),
            total_clusters: d(MetricKind::Gauge, p("total_clusters"), &["worker"]),
            cx_upgrade_time: d(MetricKind::Histogram, p("cx_upgrade_time"), &[]),
            cx_post_upgrade_lifetime: d(MetricKind::Histogram, p("cx_post_upgrade_lifetime"), &[]),
            cx_idle_expire_time: d(MetricKind::Histogram, p("cx_idle_expire_time"), &[]),
            ping_rtt: d(MetricKind::Histogram, p("ping_rtt"), &[]),
            relay_bytes: d(MetricKind::Counter, p("relay_bytes"), &["direction"]),
            access_log_dropped: d(MetricKind::Gauge, p("access_log_dropped"), &[]),
            worker_names: (0..concurrency.max(1)).map(|w| format!("worker_{w}")).collect(),
        }
    }

    fn up(&self, op: MetricOp, id: Option<usize>, labels: &[&str], v: u64) {
        if let Some(id) = id {
            self.handle.update(op, id, labels, v);
        }
    }

    fn worker(&self, w: u32) -> &str {
        self.worker_names.get(w as usize).map(|s| s.as_str()).unwrap_or("worker_unknown")
    }

    /// Counts a handshake outcome by counter name (one of [`HANDSHAKE_COUNTERS`]).
    pub fn handshake(&self, name: &str) {
        if let Some(i) = HANDSHAKE_COUNTERS.iter().position(|n| *n == name) {
            self.up(MetricOp::IncCounter, self.handshake[i], &[], 1);
        }
    }
    /// A request found no tunnel (built-in `fallback_no_reverse_socket`).
    pub fn no_tunnel(&self) {
        self.up(MetricOp::IncCounter, self.fallback_no_reverse_socket, &[], 1);
    }
    /// A tunnel was claimed, by its own worker or another one.
    pub fn claimed(&self, same_worker: bool, idle_ms: u64) {
        let id = if same_worker { self.claims_same_worker } else { self.claims_cross_worker };
        self.up(MetricOp::IncCounter, id, &[], 1);
        self.up(MetricOp::DecGauge, self.tunnels_idle, &[], 1);
        self.up(MetricOp::IncGauge, self.tunnels_in_use, &[], 1);
        self.up(MetricOp::Record, self.cx_upgrade_time, &[], idle_ms);
    }
    /// An egress connection joined a tunnel's running HTTP/2 session (no gauge changes).
    pub fn shared_claim(&self) {
        self.up(MetricOp::IncCounter, self.claims_shared, &[], 1);
    }
    /// A handshake arrived on a TLS listener and was refused (design §8).
    pub fn outer_tls_refused(&self) {
        self.up(MetricOp::IncCounter, self.outer_tls_refused, &[], 1);
    }
    /// A second cluster was named for a node whose cluster is fixed (protocol doc §2.4.1).
    pub fn cluster_conflict(&self) {
        self.up(MetricOp::IncCounter, self.cluster_conflict, &[], 1);
    }
    /// A tunnel joined the idle pool on `worker`.
    pub fn registered(&self, worker: u32, new_node: bool, new_cluster: bool) {
        self.up(MetricOp::IncGauge, self.tunnels_idle, &[], 1);
        let w = self.worker(worker).to_string();
        if new_node {
            self.up(MetricOp::IncGauge, self.total_nodes, &[&w], 1);
        }
        if new_cluster {
            self.up(MetricOp::IncGauge, self.total_clusters, &[&w], 1);
        }
    }
    /// A registered tunnel closed with `reason` after living `lifetime_ms` (idle) or
    /// `lifetime_ms` since handoff (in use).
    pub fn removed(&self, worker: u32, was_idle: bool, node_gone: bool, cluster_gone: bool, reason: &str, lifetime_ms: u64) {
        if was_idle {
            self.up(MetricOp::DecGauge, self.tunnels_idle, &[], 1);
            self.up(MetricOp::Record, self.cx_idle_expire_time, &[], lifetime_ms);
        } else {
            self.up(MetricOp::DecGauge, self.tunnels_in_use, &[], 1);
            self.up(MetricOp::Record, self.cx_post_upgrade_lifetime, &[], lifetime_ms);
        }
        let w = self.worker(worker).to_string();
        if node_gone {
            self.up(MetricOp::DecGauge, self.total_nodes, &[&w], 1);
        }
        if cluster_gone {
            self.up(MetricOp::DecGauge, self.total_clusters, &[&w], 1);
        }
        self.closed(reason);
    }
    /// Counts a closed tunnel (registered or not) by close reason.
    pub fn closed(&self, reason: &str) {
        self.up(MetricOp::IncCounter, self.tunnels_closed, &[reason], 1);
    }
    /// Records an RPING round trip in ms.
    pub fn ping_rtt(&self, ms: u64) {
        self.up(MetricOp::Record, self.ping_rtt, &[], ms);
    }
    /// Publishes the number of lifecycle log entries dropped so far (queue full).
    pub fn access_log_dropped(&self, total: u64) {
        self.up(MetricOp::SetGauge, self.access_log_dropped, &[], total);
    }
    /// Counts relayed bytes; `direction` is `to_initiator` or `from_initiator`.
    pub fn relayed(&self, direction: &str, n: usize) {
        self.up(MetricOp::IncCounter, self.relay_bytes, &[direction], n as u64);
    }
}
