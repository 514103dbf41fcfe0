//! Metrics: their names, their ids, and the accounting that turns tracker transitions into
//! counter, gauge and histogram updates.
//!
//! # Names (README "Stats" has the table built-in → ours)
//!
//! Everything sits under `<metrics_namespace>.` of the bootstrap's `dynamic_module_config`
//! (docs/envoy-abi.md#bootstrap-callbacks): `reverse_tunnel.handshake.*` (docs/protocol.md#handshake-counters) and `<stat_prefix>.*`
//! (docs/protocol.md#socket-interface-stats). Labels become Envoy tags: text `/stats` prints
//! `rt.upstream_rc.total_nodes.worker.worker_0: 1`, `/stats/prometheus` prints
//! `envoy_rt_upstream_rc_total_nodes{worker="worker_0"} 1`.
//!
//! # Exactness
//!
//! Gauges only move by ±1 on the transitions the tracker reports ([`Registered`], [`Claimed`],
//! [`Removed`]), and every transition of one tunnel happens on that tunnel's worker, so each
//! decrement follows its own increment. Increments and decrements commute, so after any
//! interleaving of workers every gauge equals what the tracker holds (property test below).
//!
//! # Detailed stats (`enable_detailed_stats`)
//!
//! One labelled gauge family `<stat_prefix>.tunnels` with tags `tenant_id` (only under tenant
//! isolation), `cluster_id`, `node_id`: registered tunnels (idle + in use) per node, the built-in's
//! `<p>.tunnels.<cluster>:<node>` (docs/protocol.md#socket-interface-stats) as labels instead of one metric name per
//! node. Per node and per cluster totals are sums over the labels.
//!
//! Cardinality: Envoy 1.40.0 gives a module no way to delete a metric (the module's stats scope
//! is not evictable), so a label set once created stays in Envoy's store, at 0 after its node
//! left. The bound is ours: at most `max_series` label sets are ever created (Envoy runtime key
//! [`MAX_SERIES_RUNTIME_KEY`], default [`DEFAULT_MAX_SERIES`]). A node that comes back reuses its
//! label set. Tunnels of nodes first seen after the cap go to one overflow label set (every tag
//! value [`OVERFLOW_LABEL`]) and are counted in `<p>.detailed_stats_overflow`; the gauge
//! `<p>.detailed_stats_series` shows how many label sets exist.
//!
//! # Threads and locks
//!
//! Updates are called from workers (and the main thread for the clock-driven ones). Envoy's
//! metrics are atomic; no global lock is taken here. A *labelled* update makes Envoy resolve the
//! tags in its symbol table under a process-wide lock, so nothing labelled is updated per request:
//! relayed bytes are summed in atomics and published by the clock; labelled updates happen only
//! when a tunnel registers or closes. Detailed stats take one of
//! [`DETAILED_SHARDS`] shard locks to look up the label set, on registration and close only.

use crate::core::close::CloseReason;
use crate::core::handshake::Counter;
use crate::core::tracker::{Claimed, Identity, Registered, Removed, WorkerName, SOCKET_LOOP_BASE};
use crate::ffi::envoy::{BootstrapConfigHandle, MetricKind, MetricOp};
use parking_lot::Mutex;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Which way relayed bytes went: the tag of `relay_bytes{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From an egress connection into the tunnel.
    ToInitiator = 0,
    /// From the tunnel to an egress connection.
    FromInitiator = 1,
}

impl Direction {
    /// Both directions, in tag order.
    pub const ALL: [Direction; 2] = [Direction::ToInitiator, Direction::FromInitiator];

    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToInitiator => "to_initiator",
            Direction::FromInitiator => "from_initiator",
        }
    }
}

/// Envoy runtime key: the most label sets the detailed `tunnels` family may ever create.
pub const MAX_SERIES_RUNTIME_KEY: &str = "reverse_tunnel.detailed_stats.max_series";
/// Default of [`MAX_SERIES_RUNTIME_KEY`].
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// Tag value of the overflow label set of the detailed `tunnels` family.
pub const OVERFLOW_LABEL: &str = "__overflow__";
/// Tag value used for an empty tenant id under tenant isolation (an empty tag value would print
/// as an empty name segment in text `/stats`).
pub const EMPTY_TENANT_LABEL: &str = "-";
/// Number of shard locks of the detailed label-set table.
pub const DETAILED_SHARDS: usize = 16;

/// Where metric definitions and updates go: Envoy (a [`BootstrapConfigHandle`]) in production,
/// a recording sink in tests.
pub trait MetricSink: Send + Sync {
    /// Defines `name` with tag names `labels`; returns its id or Envoy's `metrics_result`.
    /// Main thread during bootstrap `config_new` only (docs/envoy-abi.md#bootstrap-callbacks).
    fn define(&self, kind: MetricKind, name: &str, labels: &[&str]) -> Result<usize, u32>;
    /// Applies `op` with `value` to metric `id` with `labels` (as many as defined). Any thread.
    fn update(&self, op: MetricOp, id: usize, labels: &[&str], value: u64);
}

impl MetricSink for BootstrapConfigHandle {
    fn define(&self, kind: MetricKind, name: &str, labels: &[&str]) -> Result<usize, u32> {
        BootstrapConfigHandle::define(*self, kind, name, labels)
    }
    fn update(&self, op: MetricOp, id: usize, labels: &[&str], value: u64) {
        BootstrapConfigHandle::update(*self, op, id, labels, value);
    }
}

thread_local! {
    static DEFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one Envoy does not know (a socket loop): its metric updates are
/// queued and applied by [`Stats::flush_deferred`] on the main thread, since Envoy's stats store
/// may only be used from Envoy's own threads (its thread-local caches).
pub fn defer_on_this_thread() {
    DEFER.with(|d| d.set(true));
}

/// One queued metric update (see [`defer_on_this_thread`]).
struct DeferredUpdate {
    op: MetricOp,
    id: usize,
    labels: Vec<String>,
    value: u64,
}

/// The sink every update goes through: straight to Envoy's on Envoy's threads, queued on the
/// threads marked by [`defer_on_this_thread`].
struct DeferringSink {
    inner: Box<dyn MetricSink>,
    queue: Mutex<Vec<DeferredUpdate>>,
}

impl MetricSink for DeferringSink {
    fn define(&self, kind: MetricKind, name: &str, labels: &[&str]) -> Result<usize, u32> {
        self.inner.define(kind, name, labels)
    }
    fn update(&self, op: MetricOp, id: usize, labels: &[&str], value: u64) {
        if DEFER.with(|d| d.get()) {
            let labels = labels.iter().map(|l| l.to_string()).collect();
            self.queue.lock().push(DeferredUpdate { op, id, labels, value });
        } else {
            self.inner.update(op, id, labels, value);
        }
    }
}

/// Metric ids (defined once in bootstrap `config_new`) and the typed update helpers the adapters
/// call. `None` ids (a definition Envoy refused, logged at definition) make updates no-ops.
pub struct Stats {
    sink: DeferringSink,
    handshake: [Option<usize>; Counter::ALL.len()],
    fallback_no_reverse_socket: Option<usize>,
    claims_same_worker: Option<usize>,
    claims_cross_worker: Option<usize>,
    claims_shared: Option<usize>,
    outer_tls_refused: Option<usize>,
    spare_tunnels_moved: Option<usize>,
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
    /// `relay_bytes{direction}` per [`Direction`], published by the clock.
    relay_bytes: [Published; 2],
    /// Bytes relayed so far per [`Direction`] (see [`Stats::relayed`]).
    relay_totals: [AtomicU64; 2],
    access_log_dropped: Option<usize>,
    draining: Option<usize>,
    unsolicited_rping: Option<usize>,
    panics_caught: Published,
    reporter_sent: Published,
    reporter_failed: Published,
    reporter_snapshots: Published,
    reporter_dropped_events: Published,
    worker_names: Vec<String>,
    /// Names of the socket loops (docs/architecture.md#owned-sockets), one per worker.
    loop_names: Vec<String>,
    detailed: Option<DetailedTunnels>,
}

/// What [`Stats::define`] needs besides the sink.
#[derive(Clone, Debug)]
pub struct StatsOptions {
    /// `stat_prefix` of the bootstrap config (docs/protocol.md#socket-interface-stats).
    pub prefix: String,
    /// Worker count; per-worker gauges are tagged `worker_0` … `worker_{n-1}`.
    pub concurrency: u32,
    /// `enable_detailed_stats`: define the labelled `tunnels` family.
    pub detailed: bool,
    /// Tenant isolation: the detailed family carries a `tenant_id` tag.
    pub tenant_isolation: bool,
    /// Cap on the detailed family's label sets (see the module doc).
    pub max_series: usize,
}

impl Stats {
    /// Defines every metric through `sink`. Main thread during bootstrap `config_new`. A refused
    /// definition is logged and its updates become no-ops (the extension still works).
    pub fn define(sink: Box<dyn MetricSink>, o: &StatsOptions) -> Stats {
        let d = |kind, name: String, labels: &[&str]| match sink.define(kind, &name, labels) {
            Ok(id) => Some(id),
            Err(rc) => {
                crate::rt_log!(Warn, "reverse_tunnel: could not define metric {name} (result {rc})");
                None
            }
        };
        let p = |s: &str| format!("{}.{s}", o.prefix);
        let handshake = Counter::ALL.map(|c| d(MetricKind::Counter, c.stat_name(), &[]));
        let detailed = o.detailed.then(|| {
            let labels: &[&str] =
                if o.tenant_isolation { &["tenant_id", "cluster_id", "node_id"] } else { &["cluster_id", "node_id"] };
            DetailedTunnels {
                id: d(MetricKind::Gauge, p("tunnels"), labels),
                series: d(MetricKind::Gauge, p("detailed_stats_series"), &[]),
                overflow: d(MetricKind::Counter, p("detailed_stats_overflow"), &[]),
                tenant_isolation: o.tenant_isolation,
                max_series: o.max_series,
                created: AtomicUsize::new(0),
                shards: (0..DETAILED_SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            }
        });
        Stats {
            handshake,
            fallback_no_reverse_socket: d(MetricKind::Counter, p("fallback_no_reverse_socket"), &[]),
            claims_same_worker: d(MetricKind::Counter, p("claims_same_worker"), &[]),
            claims_cross_worker: d(MetricKind::Counter, p("claims_cross_worker"), &[]),
            claims_shared: d(MetricKind::Counter, p("claims_shared"), &[]),
            outer_tls_refused: d(MetricKind::Counter, p("outer_tls_refused"), &[]),
            spare_tunnels_moved: d(MetricKind::Counter, p("spare_tunnels_moved"), &[]),
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
            relay_bytes: {
                let id = d(MetricKind::Counter, p("relay_bytes"), &["direction"]);
                Direction::ALL.map(|dir| Published::labelled(id, dir.as_str()))
            },
            relay_totals: [AtomicU64::new(0), AtomicU64::new(0)],
            access_log_dropped: d(MetricKind::Gauge, p("access_log_dropped"), &[]),
            draining: d(MetricKind::Gauge, p("draining"), &[]),
            unsolicited_rping: d(MetricKind::Counter, p("unsolicited_rping"), &[]),
            panics_caught: Published::new(d(MetricKind::Counter, p("panics_caught"), &[])),
            reporter_sent: Published::new(d(MetricKind::Counter, p("reporter.sent"), &[])),
            reporter_failed: Published::new(d(MetricKind::Counter, p("reporter.failed"), &[])),
            reporter_snapshots: Published::new(d(MetricKind::Counter, p("reporter.snapshots"), &[])),
            reporter_dropped_events: Published::new(d(MetricKind::Counter, p("reporter.dropped_events"), &[])),
            worker_names: (0..o.concurrency.max(1)).map(|w| WorkerName(w).to_string()).collect(),
            loop_names: (0..o.concurrency.max(1)).map(|k| WorkerName(SOCKET_LOOP_BASE + k).to_string()).collect(),
            detailed,
            sink: DeferringSink { inner: sink, queue: Mutex::new(Vec::new()) },
        }
    }

    fn up(&self, op: MetricOp, id: Option<usize>, labels: &[&str], v: u64) {
        if let Some(id) = id {
            self.sink.update(op, id, labels, v);
        }
    }

    fn worker(&self, w: u32) -> &str {
        let name = match w.checked_sub(SOCKET_LOOP_BASE) {
            Some(k) => self.loop_names.get(k as usize),
            None => self.worker_names.get(w as usize),
        };
        name.map(|s| s.as_str()).unwrap_or("worker_unknown")
    }

    /// Applies the updates queued by socket loops (see [`defer_on_this_thread`]), in order.
    /// Main thread, every clock period.
    pub fn flush_deferred(&self) {
        let batch = std::mem::take(&mut *self.sink.queue.lock());
        for u in batch {
            let labels: Vec<&str> = u.labels.iter().map(|l| l.as_str()).collect();
            self.sink.inner.update(u.op, u.id, &labels, u.value);
        }
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, c: Counter) {
        let i = Counter::ALL.iter().position(|x| *x == c).unwrap_or(0);
        self.up(MetricOp::IncCounter, self.handshake[i], &[], 1);
    }
    /// A request found no tunnel (built-in `fallback_no_reverse_socket`).
    pub fn no_tunnel(&self) {
        self.up(MetricOp::IncCounter, self.fallback_no_reverse_socket, &[], 1);
    }
    /// A handshake arrived on a TLS listener and was refused (docs/architecture.md#known-limits).
    pub fn outer_tls_refused(&self) {
        self.up(MetricOp::IncCounter, self.outer_tls_refused, &[], 1);
    }
    /// A spare tunnel's socket moved from an Envoy connection to a socket loop after its
    /// handshake (docs/architecture.md#spare-tunnels); Envoy counts that connection as closed
    /// locally on the handshake listener, the module counts no tunnel closed.
    pub fn spare_tunnel_moved(&self) {
        self.up(MetricOp::IncCounter, self.spare_tunnels_moved, &[], 1);
    }

    /// A tunnel joined the idle pool on `worker` (after [`crate::core::tracker::Tracker::register`]):
    /// `tunnels_idle` +1, the worker's `total_nodes` / `total_clusters` +1 for a first tunnel,
    /// `cluster_conflict` +1 on a conflict, and the tunnel's detailed label set +1.
    pub fn on_registered(&self, worker: u32, reg: &Registered) {
        self.up(MetricOp::IncGauge, self.tunnels_idle, &[], 1);
        let w = self.worker(worker);
        if reg.worker_new_node {
            self.up(MetricOp::IncGauge, self.total_nodes, &[w], 1);
        }
        if reg.worker_new_cluster {
            self.up(MetricOp::IncGauge, self.total_clusters, &[w], 1);
        }
        if reg.cluster_conflict.is_some() {
            self.up(MetricOp::IncCounter, self.cluster_conflict, &[], 1);
        }
        if let Some(d) = &self.detailed {
            d.add(&self.sink, &reg.identity, MetricOp::IncGauge);
        }
    }

    /// A claim (after [`crate::core::tracker::Tracker::claim`]). A fresh claim moves one tunnel
    /// from `tunnels_idle` to `tunnels_in_use`, counts same/cross worker and records the idle time
    /// `idle_ms` in `cx_upgrade_time`; a shared claim only counts `claims_shared`.
    pub fn on_claimed<H>(&self, claim: &Claimed<H>, idle_ms: u64) {
        if claim.shared {
            self.up(MetricOp::IncCounter, self.claims_shared, &[], 1);
            return;
        }
        let id = if claim.same_worker { self.claims_same_worker } else { self.claims_cross_worker };
        self.up(MetricOp::IncCounter, id, &[], 1);
        self.up(MetricOp::DecGauge, self.tunnels_idle, &[], 1);
        self.up(MetricOp::IncGauge, self.tunnels_in_use, &[], 1);
        self.up(MetricOp::Record, self.cx_upgrade_time, &[], idle_ms);
    }

    /// A registered tunnel left the tracker (after [`crate::core::tracker::Tracker::remove`])
    /// with close reason `reason`; `lifetime_ms` is its time since registration (idle) or since
    /// handoff (in use), recorded in `cx_idle_expire_time` / `cx_post_upgrade_lifetime`.
    pub fn on_removed(&self, rm: &Removed, reason: CloseReason, lifetime_ms: u64) {
        if rm.was_idle {
            self.up(MetricOp::DecGauge, self.tunnels_idle, &[], 1);
            self.up(MetricOp::Record, self.cx_idle_expire_time, &[], lifetime_ms);
        } else {
            self.up(MetricOp::DecGauge, self.tunnels_in_use, &[], 1);
            self.up(MetricOp::Record, self.cx_post_upgrade_lifetime, &[], lifetime_ms);
        }
        let w = self.worker(rm.worker);
        if rm.worker_node_gone {
            self.up(MetricOp::DecGauge, self.total_nodes, &[w], 1);
        }
        if rm.worker_cluster_gone {
            self.up(MetricOp::DecGauge, self.total_clusters, &[w], 1);
        }
        if let Some(d) = &self.detailed {
            d.add(&self.sink, &rm.identity, MetricOp::DecGauge);
        }
        self.closed(reason);
    }

    /// Counts a closed tunnel (registered or not) by close reason.
    pub fn closed(&self, reason: CloseReason) {
        self.up(MetricOp::IncCounter, self.tunnels_closed, &[reason.as_str()], 1);
    }
    /// Records an RPING round trip in ms.
    pub fn ping_rtt(&self, ms: u64) {
        self.up(MetricOp::Record, self.ping_rtt, &[], ms);
    }
    /// Publishes the number of lifecycle log entries dropped so far (queue full).
    pub fn access_log_dropped(&self, total: u64) {
        self.up(MetricOp::SetGauge, self.access_log_dropped, &[], total);
    }
    /// Gauge `draining`: 1 once Envoy started draining (`drain_started`), new handshakes get 503.
    pub fn draining(&self, on: bool) {
        self.up(MetricOp::SetGauge, self.draining, &[], u64::from(on));
    }
    /// Counts RPINGs from initiators that answered none of ours (ignored, see `core::keepalive`).
    pub fn unsolicited_rping(&self, n: u64) {
        self.up(MetricOp::IncCounter, self.unsolicited_rping, &[], n);
    }
    /// Counts `n` bytes relayed in `direction`.
    ///
    /// This runs for every relayed chunk, so it only adds to an atomic total: a labelled update
    /// makes Envoy resolve the tags in its symbol table, which takes a process-wide lock. The
    /// clock publishes the totals ([`Stats::publish_relayed`]); `/stats` lags by one clock period.
    pub fn relayed(&self, direction: Direction, n: usize) {
        self.relay_totals[direction as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Brings `relay_bytes{direction}` up to the totals counted by [`Stats::relayed`]. Main thread,
    /// from the clock timer.
    pub fn publish_relayed(&self) {
        for (published, total) in self.relay_bytes.iter().zip(&self.relay_totals) {
            published.publish(&self.sink, total.load(Ordering::Relaxed));
        }
    }
    /// Brings `panics_caught` up to `total` (the process-wide count of panics caught at the FFI
    /// boundary). Main thread, from the clock timer: a panic never touches Envoy's stats from
    /// inside the guard.
    pub fn publish_panics(&self, total: u64) {
        self.panics_caught.publish(&self.sink, total);
    }
    /// Brings the reporter counters up to the reporter's totals (`reporter.sent`, `.failed`,
    /// `.snapshots`, `.dropped_events`; see `docs/reporter.md`). Main thread, from the clock timer.
    pub fn publish_reporter(&self, c: &crate::core::reporter::ReporterCounters) {
        self.reporter_sent.publish(&self.sink, c.sent);
        self.reporter_failed.publish(&self.sink, c.failed);
        self.reporter_snapshots.publish(&self.sink, c.snapshots);
        self.reporter_dropped_events.publish(&self.sink, c.dropped);
    }

    /// Detailed label sets created so far (0 without `enable_detailed_stats`).
    pub fn detailed_series(&self) -> usize {
        self.detailed.as_ref().map_or(0, |d| d.created.load(Ordering::Relaxed))
    }
}

/// A counter that mirrors a running total kept elsewhere: [`Published::publish`] adds the growth
/// since the last call.
struct Published {
    id: Option<usize>,
    /// The tag value of a counter defined with one tag (none for an unlabelled counter).
    label: Option<&'static str>,
    last: AtomicU64,
}

impl Published {
    fn new(id: Option<usize>) -> Published {
        Published { id, label: None, last: AtomicU64::new(0) }
    }
    fn labelled(id: Option<usize>, label: &'static str) -> Published {
        Published { id, label: Some(label), last: AtomicU64::new(0) }
    }
    fn publish(&self, sink: &dyn MetricSink, total: u64) {
        let before = self.last.swap(total, Ordering::Relaxed);
        if let (Some(id), true) = (self.id, total > before) {
            let labels: &[&str] = match &self.label {
                Some(l) => std::slice::from_ref(l),
                None => &[],
            };
            sink.update(MetricOp::IncCounter, id, labels, total - before);
        }
    }
}

/// The detailed `tunnels{[tenant_id,] cluster_id, node_id}` gauge family and its bounded table
/// of label sets (see the module doc).
struct DetailedTunnels {
    id: Option<usize>,
    series: Option<usize>,
    overflow: Option<usize>,
    tenant_isolation: bool,
    max_series: usize,
    /// Label sets created so far; never above `max_series`.
    created: AtomicUsize,
    /// Label sets created, as [`DetailedTunnels::key`] strings, sharded by hash.
    shards: Vec<Mutex<HashSet<String>>>,
}

impl DetailedTunnels {
    fn labels<'a>(&self, id: &'a Identity) -> Vec<&'a str> {
        if self.tenant_isolation {
            let tenant = if id.tenant_id.is_empty() { EMPTY_TENANT_LABEL } else { id.tenant_id.as_str() };
            vec![tenant, &id.cluster_id, &id.node_id]
        } else {
            vec![&id.cluster_id, &id.node_id]
        }
    }

    fn key(labels: &[&str]) -> String {
        labels.join("\u{1f}")
    }

    /// True when `labels` has (or now gets) its own label set; false for the overflow set.
    /// `count_overflow` is set for an increment that lands in the overflow set.
    fn admit(&self, sink: &dyn MetricSink, labels: &[&str], increment: bool) -> bool {
        let key = Self::key(labels);
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        let mut set = shard.lock();
        if set.contains(&key) {
            return true;
        }
        if !increment {
            return false;
        }
        let admitted = self
            .created
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < self.max_series).then_some(c + 1))
            .is_ok();
        if admitted {
            set.insert(key);
            drop(set);
            if let Some(id) = self.series {
                sink.update(MetricOp::IncGauge, id, &[], 1);
            }
        }
        admitted
    }

    /// Applies `op` (IncGauge or DecGauge by 1) to the label set of `identity`.
    fn add(&self, sink: &dyn MetricSink, identity: &Identity, op: MetricOp) {
        let Some(id) = self.id else { return };
        let labels = self.labels(identity);
        let increment = op == MetricOp::IncGauge;
        if self.admit(sink, &labels, increment) {
            sink.update(op, id, &labels, 1);
            return;
        }
        if increment {
            if let Some(o) = self.overflow {
                sink.update(MetricOp::IncCounter, o, &[], 1);
            }
        }
        let overflow: Vec<&str> = labels.iter().map(|_| OVERFLOW_LABEL).collect();
        sink.update(op, id, &overflow, 1);
    }
}

/// An in-memory [`MetricSink`] for tests: keeps every counter, gauge (signed, so an underflow
/// shows) and histogram sample count by name and label values.
#[cfg(test)]
pub mod recording {
    use super::*;
    use std::collections::HashMap;

    /// Key of one series: metric name and label values.
    pub type Series = (String, Vec<String>);

    #[derive(Default)]
    struct Inner {
        names: HashMap<(u8, usize), String>,
        next: usize,
        values: HashMap<Series, i64>,
    }

    /// The recording sink; clone the `Arc` to read it after handing a box to [`Stats::define`].
    #[derive(Default, Clone)]
    pub struct RecordingSink(std::sync::Arc<Mutex<Inner>>);

    fn kind_of(op: MetricOp) -> u8 {
        match op {
            MetricOp::IncCounter => 0,
            MetricOp::SetGauge | MetricOp::IncGauge | MetricOp::DecGauge => 1,
            MetricOp::Record => 2,
        }
    }

    impl MetricSink for RecordingSink {
        fn define(&self, kind: MetricKind, name: &str, _labels: &[&str]) -> Result<usize, u32> {
            let mut g = self.0.lock();
            g.next += 1;
            let id = g.next;
            let k = match kind {
                MetricKind::Counter => 0,
                MetricKind::Gauge => 1,
                MetricKind::Histogram => 2,
            };
            g.names.insert((k, id), name.to_string());
            Ok(id)
        }
        fn update(&self, op: MetricOp, id: usize, labels: &[&str], value: u64) {
            let mut g = self.0.lock();
            let name = g.names.get(&(kind_of(op), id)).cloned().expect("update of an undefined metric");
            let v = g.values.entry((name, labels.iter().map(|s| s.to_string()).collect())).or_insert(0);
            match op {
                MetricOp::IncCounter | MetricOp::IncGauge => *v += value as i64,
                MetricOp::DecGauge => *v -= value as i64,
                MetricOp::SetGauge => *v = value as i64,
                MetricOp::Record => *v += 1,
            }
        }
    }

    impl RecordingSink {
        /// Value of `name` with `labels` (0 if never updated).
        pub fn get(&self, name: &str, labels: &[&str]) -> i64 {
            let key = (name.to_string(), labels.iter().map(|s| s.to_string()).collect());
            self.0.lock().values.get(&key).copied().unwrap_or(0)
        }
        /// Every series of `name` with its value.
        pub fn series(&self, name: &str) -> HashMap<Vec<String>, i64> {
            self.0.lock().values.iter().filter(|((n, _), _)| n == name).map(|((_, l), v)| (l.clone(), *v)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recording::RecordingSink;
    use super::*;
    use crate::core::tracker::{TunnelMeta, Tracker};
    use proptest::prelude::*;
    use std::collections::HashMap;

    const WORKERS: u32 = 3;

    fn stats(sink: &RecordingSink, isolation: bool, max_series: usize) -> Stats {
        Stats::define(
            Box::new(sink.clone()),
            &StatsOptions {
                prefix: "up".into(),
                concurrency: WORKERS,
                detailed: true,
                tenant_isolation: isolation,
                max_series,
            },
        )
    }

    /// One step of a random workload; indices are reduced modulo what exists.
    #[derive(Clone, Debug)]
    enum Op {
        Register { node: u8, cluster: u8, tenant: u8, worker: u8 },
        Claim { node: u8, worker: u8 },
        Share { pick: u16 },
        Close { pick: u16 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12, 0u8..3, 0u8..2, 0u8..WORKERS as u8)
                .prop_map(|(node, cluster, tenant, worker)| Op::Register { node, cluster, tenant, worker }),
            2 => (0u8..12, 0u8..WORKERS as u8).prop_map(|(node, worker)| Op::Claim { node, worker }),
            1 => any::<u16>().prop_map(|pick| Op::Share { pick }),
            3 => any::<u16>().prop_map(|pick| Op::Close { pick }),
        ]
    }

    /// The driver the adapters are: tracker call, then the matching `Stats` call.
    struct World {
        tracker: Tracker<u64>,
        stats: Stats,
        sink: RecordingSink,
        next: u64,
        live: Vec<u64>,
    }

    impl World {
        fn new(isolation: bool, max_series: usize) -> World {
            let sink = RecordingSink::default();
            World { tracker: Tracker::new(isolation), stats: stats(&sink, isolation, max_series), sink, next: 1, live: vec![] }
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Register { node, cluster, tenant, worker } => {
                    let id = Identity {
                        node_id: format!("n{node}"),
                        cluster_id: format!("c{cluster}"),
                        tenant_id: if tenant == 0 { String::new() } else { format!("t{tenant}") },
                    };
                    let t = self.next;
                    self.next += 1;
                    let reg = self.tracker.register(t, worker as u32, &id, TunnelMeta::default(), t).unwrap();
                    self.stats.on_registered(worker as u32, &reg);
                    self.live.push(t);
                }
                Op::Claim { node, worker } => {
                    for target in [format!("n{node}"), format!("t1:n{node}")] {
                        if let Some(c) = self.tracker.claim(&target, worker as u32) {
                            self.stats.on_claimed(&c, 5);
                        }
                    }
                }
                Op::Share { pick } => {
                    if !self.live.is_empty() {
                        let t = self.live[pick as usize % self.live.len()];
                        self.tracker.set_shareable(t, true);
                    }
                }
                Op::Close { pick } => {
                    if !self.live.is_empty() {
                        let t = self.live.swap_remove(pick as usize % self.live.len());
                        let rm = self.tracker.remove(t).unwrap();
                        self.stats.on_removed(&rm, CloseReason::RemoteClose, 1);
                    }
                }
            }
        }

        /// Every gauge equals what the tracker holds.
        fn check(&self, max_series: usize) -> Result<(), TestCaseError> {
            let c = self.tracker.counts();
            prop_assert_eq!(self.sink.get("up.tunnels_idle", &[]), c.idle as i64);
            prop_assert_eq!(self.sink.get("up.tunnels_in_use", &[]), c.in_use as i64);
            for w in 0..WORKERS {
                let wc = self.tracker.worker_counts(w);
                let name = format!("worker_{w}");
                prop_assert_eq!(self.sink.get("up.total_nodes", &[&name]), wc.nodes as i64);
                prop_assert_eq!(self.sink.get("up.total_clusters", &[&name]), wc.clusters as i64);
            }
            // Detailed: per label set, the tracker's count; overflow holds the rest.
            let isolation = self.tracker.tenant_isolation();
            let mut want: HashMap<Vec<String>, i64> = HashMap::new();
            for info in self.tracker.snapshot() {
                let i = &info.identity;
                let l = if isolation {
                    let t = if i.tenant_id.is_empty() { EMPTY_TENANT_LABEL.to_string() } else { i.tenant_id.clone() };
                    vec![t, i.cluster_id.clone(), i.node_id.clone()]
                } else {
                    vec![i.cluster_id.clone(), i.node_id.clone()]
                };
                *want.entry(l).or_default() += 1;
            }
            let got = self.sink.series("up.tunnels");
            let overflow = vec![OVERFLOW_LABEL.to_string(); if isolation { 3 } else { 2 }];
            let mut overflow_want = 0;
            for (labels, n) in &want {
                match got.get(labels) {
                    // A node with its own label set is counted there, exactly.
                    Some(v) => prop_assert_eq!(*v, *n, "series {:?}", labels),
                    // A node first seen after the cap is counted in the overflow set.
                    None => overflow_want += n,
                }
            }
            for (labels, v) in &got {
                prop_assert!(*v >= 0, "series {:?} went negative", labels);
                if *labels != overflow && !want.contains_key(labels) {
                    prop_assert_eq!(*v, 0, "series {:?} of a node that left", labels);
                }
            }
            prop_assert_eq!(got.get(&overflow).copied().unwrap_or(0), overflow_want);
            prop_assert!(self.stats.detailed_series() <= max_series);
            prop_assert_eq!(self.sink.get("up.detailed_stats_series", &[]), self.stats.detailed_series() as i64);
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// After every step of any sequence of registrations, claims (fresh and shared), and
        /// closes on any worker, every gauge equals what the tracker holds.
        #[test]
        fn gauges_equal_tracker(ops in proptest::collection::vec(op(), 1..120), isolation: bool, cap in 1usize..40) {
            let mut w = World::new(isolation, cap);
            for o in &ops {
                w.apply(o);
                w.check(cap)?;
            }
        }
    }

    /// Concurrent workers: four threads each run their own register/claim/close mix on shared
    /// nodes; at the end every gauge equals the tracker.
    #[test]
    fn gauges_equal_tracker_under_concurrency() {
        let sink = RecordingSink::default();
        let tracker: Tracker<u64> = Tracker::new(false);
        let st = stats(&sink, false, 8);
        let next = AtomicU64::new(1);
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (tracker, st, next) = (&tracker, &st, &next);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..3000u64 {
                        let node = (i * 7 + w as u64) % 13;
                        match i % 5 {
                            0..=2 => {
                                let t = next.fetch_add(1, Ordering::Relaxed);
                                let id = Identity { node_id: format!("n{node}"), cluster_id: format!("c{}", node % 3), tenant_id: String::new() };
                                let reg = tracker.register(t, w, &id, TunnelMeta::default(), t).unwrap();
                                st.on_registered(w, &reg);
                                mine.push(t);
                            }
                            3 => {
                                if let Some(c) = tracker.claim(&format!("n{node}"), w) {
                                    st.on_claimed(&c, 1);
                                }
                            }
                            _ => {
                                // Close the worker's own tunnels only: every transition of one
                                // tunnel happens on its worker, as in Envoy.
                                if let Some(t) = mine.pop() {
                                    if let Some(rm) = tracker.remove(t) {
                                        st.on_removed(&rm, CloseReason::LocalClose, 1);
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        let c = tracker.counts();
        assert_eq!(sink.get("up.tunnels_idle", &[]), c.idle as i64);
        assert_eq!(sink.get("up.tunnels_in_use", &[]), c.in_use as i64);
        for w in 0..WORKERS {
            let wc = tracker.worker_counts(w);
            assert_eq!(sink.get("up.total_nodes", &[&format!("worker_{w}")]), wc.nodes as i64);
            assert_eq!(sink.get("up.total_clusters", &[&format!("worker_{w}")]), wc.clusters as i64);
        }
        let total: i64 = sink.series("up.tunnels").values().sum();
        assert_eq!(total, (c.idle + c.in_use) as i64);
        assert!(st.detailed_series() <= 8);
        assert!(sink.get("up.detailed_stats_overflow", &[]) > 0, "13 nodes over a cap of 8 must overflow");
    }

    /// 10,000 distinct nodes connect and leave: the label sets stop at the cap, a returning node
    /// reuses its set, and every set ends at zero.
    #[test]
    fn ten_thousand_distinct_nodes_stay_within_the_cap() {
        let sink = RecordingSink::default();
        let tracker: Tracker<u64> = Tracker::new(false);
        let st = stats(&sink, false, 1000);
        for i in 0..10_000u64 {
            let id = Identity { node_id: format!("node-{i}"), cluster_id: "c".into(), tenant_id: String::new() };
            let reg = tracker.register(i, (i % 2) as u32, &id, TunnelMeta::default(), i).unwrap();
            st.on_registered((i % 2) as u32, &reg);
            let rm = tracker.remove(i).unwrap();
            st.on_removed(&rm, CloseReason::RemoteClose, 1);
        }
        // node-0 comes back: it reuses its label set.
        let id = Identity { node_id: "node-0".into(), cluster_id: "c".into(), tenant_id: String::new() };
        let reg = tracker.register(20_000, 0, &id, TunnelMeta::default(), 0).unwrap();
        st.on_registered(0, &reg);
        let series = sink.series("up.tunnels");
        assert_eq!(st.detailed_series(), 1000);
        assert_eq!(series.len(), 1001, "1000 label sets plus the overflow set");
        assert_eq!(sink.get("up.tunnels", &["c", "node-0"]), 1);
        assert_eq!(series.values().sum::<i64>(), 1);
        assert_eq!(sink.get("up.detailed_stats_overflow", &[]), 9000);
    }

    #[test]
    fn relayed_bytes_are_published_by_the_clock() {
        let sink = RecordingSink::default();
        let st = stats(&sink, false, 1);
        st.relayed(Direction::ToInitiator, 100);
        st.relayed(Direction::FromInitiator, 7);
        st.relayed(Direction::ToInitiator, 1);
        assert_eq!(sink.get("up.relay_bytes", &["to_initiator"]), 0, "nothing before the clock");
        st.publish_relayed();
        st.publish_relayed();
        assert_eq!(sink.get("up.relay_bytes", &["to_initiator"]), 101);
        assert_eq!(sink.get("up.relay_bytes", &["from_initiator"]), 7);
    }

    #[test]
    fn panics_are_published_as_deltas() {
        let sink = RecordingSink::default();
        let st = stats(&sink, false, 1);
        st.publish_panics(0);
        st.publish_panics(2);
        st.publish_panics(2);
        st.publish_panics(5);
        assert_eq!(sink.get("up.panics_caught", &[]), 5);
    }
}
