//! The tenant-aware tracker of tunnels: which idle tunnels and which shareable HTTP/2 sessions
//! exist for which node and cluster, on which worker, and which one a claim gets.
//!
//! # Model (docs/architecture.md#the-tracker; docs/protocol.md#keys, #picking-a-tunnel, #closing-a-tunnel)
//!
//! - A *tunnel* is one accepted initiator connection, identified by its Envoy connection id
//!   ([`TunnelId`]) and owned by the *worker* ([`WorkerId`]) that accepted it.
//! - Keys: the node key is the node id and the cluster key the cluster id; with tenant isolation
//!   they become `tenant:node` and `tenant:cluster` (an empty tenant id gives the bare id). Two
//!   tenants with identical node and cluster ids therefore never share a key.
//! - A node's cluster is fixed by the node's *first* tunnel and stays while the node has any tunnel;
//!   a later tunnel naming another cluster is registered under the existing one and the conflict is
//!   reported in [`Registered::cluster_conflict`].
//! - Per node and per worker there is a FIFO of idle tunnels, ordered by a process-wide
//!   registration sequence number. A *claim* pops the oldest idle tunnel on the claiming worker,
//!   else the globally oldest idle tunnel of the node on any other worker (we relay bytes across
//!   workers, which Envoy 1.40.0 itself cannot: docs/protocol.md#picking-a-tunnel last bullet).
//! - A claimed tunnel is `InUse`: it still counts for its node (`max_connections_per_node`) and in
//!   the gauges, and it never returns to the idle pool (docs/architecture.md#the-tracker). It leaves the tracker only
//!   through [`Tracker::remove`].
//! - *Shareable sessions*: once the HTTP/2 frame multiplexer runs a session on an in-use tunnel,
//!   the caller marks it with [`Tracker::set_shareable`]; further egress connections for that node
//!   then *attach* to the session (a *shared* claim) instead of consuming an idle tunnel. A shared
//!   claim changes nothing in the tracker. `set_shareable(.., false)` (GOAWAY, stream ids
//!   exhausted, closing) stops further shared claims; the tunnel stays `InUse`.
//! - A claim of a node prefers, in this order: (a) the oldest shareable session on the claiming
//!   worker; (b) the oldest idle tunnel on the claiming worker; (c) the oldest (by registration)
//!   shareable session on any other worker; (d) the oldest idle tunnel on any other worker; in
//!   (c) and (d) Envoy's workers before socket loops, which hold a node's spares.
//! - A cluster key resolves to one of its nodes by round-robin over the cluster's nodes that have
//!   an idle tunnel or a shareable session (*ready* nodes), in the order the nodes joined the
//!   cluster. A node without any tunnel leaves its cluster; an empty cluster disappears
//!   (docs/protocol.md#closing-a-tunnel).
//! - Tenant isolation: every key carries the tenant, so neither a fresh nor a shared claim ever
//!   reaches another tenant's tunnel.
//!
//! # Cost and locking
//!
//! One `parking_lot::Mutex` guards the whole state; no lock is held while calling out: there are no
//! callbacks. The tracker keeps every tunnel's handle until [`Tracker::remove`]; a claim hands out
//! a *clone* (`H::clone` runs under the lock, so `H` should be cheap to clone and must not call
//! into the tracker: an `Arc` is the intended shape), and a removed tunnel's handle is dropped
//! after the lock is released. Every operation except [`Tracker::snapshot`] is O(1) hash work plus
//! O(log n) `BTreeMap` work on one node's or one cluster's structures, plus at most O(#workers) for
//! the cross-worker fallbacks of [`Tracker::claim`]; none scans all tunnels, nodes or clusters.
//!
//! How it would shard: the node map and the tunnel index would be split into `S` shards by a hash
//! of the node key (each shard its own mutex, holding the nodes, their idle FIFOs and a tunnel →
//! node index for its tunnels); the cluster directory (cluster key → ready node keys, round-robin
//! cursor) would be a separate `RwLock`ed map, taken only for cluster-key claims and for the rare
//! node joins/leaves and ready/not-ready transitions; per-worker gauges would become atomics.
//! A node-key claim would then take a single shard lock.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::ops::Bound;
use std::sync::Arc;

/// Identifier of one tunnel: the Envoy connection id of the accepted initiator connection,
/// unique per process.
pub type TunnelId = u64;

/// Index of an Envoy worker thread (`worker_0` → 0, …).
pub type WorkerId = u32;

/// A worker's name as Envoy spells it, `worker_<index>`: the `worker` tag of the stats, the
/// lifecycle log's `worker`, the admin listing and the reporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerName(pub WorkerId);

/// Worker ids from here on name the module's socket loops (`SOCKET_LOOP_BASE + k` serves the
/// sockets Envoy worker `k` accepted; docs/architecture.md#owned-sockets), not Envoy's workers.
pub const SOCKET_LOOP_BASE: WorkerId = 1 << 16;

/// `worker_<n>` for Envoy worker n, `socket_loop_<k>` for socket loop k.
impl fmt::Display for WorkerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.checked_sub(SOCKET_LOOP_BASE) {
            Some(k) => write!(f, "socket_loop_{k}"),
            None => write!(f, "worker_{}", self.0),
        }
    }
}

/// Serializes as the string `worker_<n>` without building it first.
impl serde::Serialize for WorkerName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Delimiter between tenant id and node/cluster id in keys under tenant isolation
/// (docs/protocol.md#keys).
pub const KEY_DELIMITER: char = ':';

/// Who a tunnel belongs to, as sent by the initiator in its handshake (bare ids, no tenant prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Node id (handshake header value); mandatory.
    pub node_id: String,
    /// Cluster id (handshake header value); mandatory.
    pub cluster_id: String,
    /// Tenant id (handshake header value); may be empty, then keys use the bare ids.
    pub tenant_id: String,
}

/// Descriptive facts about a tunnel, kept for logs and the admin listing; the tracker never
/// interprets them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelMeta {
    /// Peer address of the initiator connection, as text (e.g. `127.0.0.1:40000`).
    pub remote_address: String,
    /// The initiator's worker name as it reported it in the handshake.
    pub initiator_worker_id: String,
    /// The initiator's connection id as it reported it in the handshake.
    pub initiator_connection_id: String,
    /// When the tunnel was registered, in milliseconds on the caller's clock. The idle time at a
    /// claim (the `cx_upgrade_time` histogram, docs/protocol.md#socket-interface-stats) is `now − registered_at_ms`.
    pub registered_at_ms: u64,
    /// The handshake's `x-envoy-reverse-tunnel-initiation-time` (epoch ms; 0 if absent), for the
    /// reporter (docs/protocol.md#reporter).
    pub initiation_time_ms: i64,
}

/// Whether a tunnel waits in the idle pool or has been claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelState {
    /// In its node's idle FIFO; may be claimed.
    Idle,
    /// Claimed; carries HTTP/2 for the cloud side and never becomes idle again. It may in addition
    /// be marked shareable ([`Tracker::set_shareable`]).
    InUse,
}

impl TunnelState {
    /// `idle` or `in_use`, as the admin listing and the reporter spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Idle => "idle",
            TunnelState::InUse => "in_use",
        }
    }
}

/// Result of a successful [`Tracker::register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The node key the tunnel was registered under (`node` or `tenant:node`).
    pub node_key: String,
    /// The cluster key the tunnel was registered under: the node's existing cluster if the node
    /// already had tunnels, else the one the tunnel asked for.
    pub cluster_key: String,
    /// `Some(asked cluster id, bare)` when the node already belonged to another cluster and the
    /// tunnel was registered under that one instead (docs/protocol.md#keys); the caller counts and
    /// logs it. `None` when no conflict.
    pub cluster_conflict: Option<String>,
    /// First tunnel of this node on this worker (the worker's `total_nodes` gauge goes up).
    pub worker_new_node: bool,
    /// First tunnel of this cluster on this worker (the worker's `total_clusters` gauge goes up).
    pub worker_new_cluster: bool,
    /// First tunnel of this node across all workers.
    pub node_new: bool,
    /// First tunnel of this cluster across all workers.
    pub cluster_new: bool,
    /// The identity the tunnel was stored with: bare ids; `cluster_id` is the node's effective
    /// cluster id (the node's existing one on a conflict).
    pub identity: Identity,
}

/// Why [`Tracker::register`] refused a tunnel. Nothing was changed in the tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The tunnel id is already tracked (idle or in use).
    Duplicate,
    /// The node id or the cluster id is empty; both are mandatory (docs/protocol.md#keys). The
    /// payload names the empty field: `"node_id"` or `"cluster_id"`.
    MissingId(&'static str),
    /// Under tenant isolation an id contains the key delimiter `:`, which would let one tenant's
    /// keys collide with another's (docs/protocol.md#keys: rejected at the handshake). The payload
    /// names the field.
    Delimiter(&'static str),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Duplicate => write!(f, "tunnel id already registered"),
            RegisterError::MissingId(field) => write!(f, "{field} is empty"),
            RegisterError::Delimiter(field) => {
                write!(f, "{field} contains '{KEY_DELIMITER}' under tenant isolation")
            }
        }
    }
}

impl std::error::Error for RegisterError {}

/// A tunnel handed out by [`Tracker::claim`]; it is `InUse` in the tracker, either freshly claimed
/// from the idle pool (`shared == false`) or an already running shareable session
/// (`shared == true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed<H> {
    /// The claimed tunnel.
    pub tunnel: TunnelId,
    /// The worker that owns the tunnel's connection (may differ from the claiming worker).
    pub worker: WorkerId,
    /// A clone of the caller's handle given at registration (the tracker keeps its own copy until
    /// [`Tracker::remove`]).
    pub handle: H,
    /// Node key of the tunnel.
    pub node_key: String,
    /// Cluster key of the tunnel.
    pub cluster_key: String,
    /// Identity with bare ids; `cluster_id` is the node's effective cluster id.
    pub identity: Identity,
    /// Copy of the metadata given at registration; idle time at the claim (the `cx_upgrade_time`
    /// histogram, docs/protocol.md#socket-interface-stats) is claim time − `meta.registered_at_ms` (milliseconds).
    pub meta: TunnelMeta,
    /// `true` when the tunnel is owned by the claiming worker (no cross-worker relay needed).
    pub same_worker: bool,
    /// `true` when the claim attaches to a running shareable session (the tunnel was already
    /// `InUse` and stays so; nothing changed in the tracker); `false` for a fresh claim that took
    /// the tunnel out of the idle pool (`Idle` → `InUse`, not shareable until
    /// [`Tracker::set_shareable`]).
    pub shared: bool,
}

/// What [`Tracker::remove`] took out, with the gauge transitions it caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The worker that owned the tunnel.
    pub worker: WorkerId,
    /// The tunnel was idle (never claimed) when removed.
    pub was_idle: bool,
    /// Node key of the tunnel.
    pub node_key: String,
    /// Cluster key of the tunnel.
    pub cluster_key: String,
    /// Identity with bare ids; `cluster_id` is the node's effective cluster id.
    pub identity: Identity,
    /// The metadata given at registration.
    pub meta: TunnelMeta,
    /// It was the node's last tunnel on that worker (the worker's `total_nodes` gauge goes down).
    pub worker_node_gone: bool,
    /// It was the cluster's last tunnel on that worker (the worker's `total_clusters` gauge goes
    /// down).
    pub worker_cluster_gone: bool,
    /// It was the node's last tunnel on any worker: the node left its cluster.
    pub node_gone: bool,
    /// It was the cluster's last tunnel on any worker: the cluster is gone.
    pub cluster_gone: bool,
}

/// Process-wide totals, see [`Tracker::counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Idle tunnels.
    pub idle: usize,
    /// Claimed tunnels still open.
    pub in_use: usize,
    /// Claimed tunnels currently marked shareable (a subset of `in_use`).
    pub shareable: usize,
    /// Distinct node keys with at least one tunnel.
    pub nodes: usize,
    /// Distinct cluster keys with at least one tunnel.
    pub clusters: usize,
}

/// Tunnels read per hold of the tracker's lock by [`Tracker::walk_batched`] (about 0.1 ms of
/// work each).
pub const WALK_BATCH: usize = 256;

/// Per-worker totals, see [`Tracker::worker_counts`]; `nodes`/`clusters` back the
/// `<worker>.total_nodes` / `<worker>.total_clusters` gauges (docs/protocol.md#socket-interface-stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Distinct node keys with at least one tunnel (idle or in use) owned by the worker.
    pub nodes: usize,
    /// Distinct cluster keys with at least one tunnel (idle or in use) owned by the worker.
    pub clusters: usize,
    /// Idle tunnels owned by the worker.
    pub idle: usize,
    /// Claimed tunnels owned by the worker.
    pub in_use: usize,
    /// Claimed tunnels owned by the worker and currently marked shareable (a subset of `in_use`).
    pub shareable: usize,
}

/// One row of [`Tracker::snapshot`], for an admin listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// Owning worker.
    pub worker: WorkerId,
    /// Identity with bare ids; `cluster_id` is the node's effective cluster id.
    pub identity: Identity,
    /// Node key.
    pub node_key: String,
    /// Cluster key.
    pub cluster_key: String,
    /// Idle or in use.
    pub state: TunnelState,
    /// Metadata given at registration.
    pub meta: TunnelMeta,
}

/// One tracked tunnel.
struct TunnelEntry<H> {
    worker: WorkerId,
    /// Registration sequence number; the key of the tunnel in its idle FIFO.
    seq: u64,
    identity: Identity,
    node_key: Arc<str>,
    cluster_key: Arc<str>,
    meta: TunnelMeta,
    state: TunnelState,
    /// Marked as a running session that accepts more egress connections; only while `InUse`.
    shareable: bool,
    /// The caller's handle, kept until removal; claims hand out clones.
    handle: H,
}

/// A node's tunnels on one worker.
struct WorkerSlot {
    worker: WorkerId,
    /// Tunnels (idle + in use) of the node on this worker.
    total: usize,
    /// Idle FIFO: registration sequence number → tunnel; the first entry is the oldest.
    idle: BTreeMap<u64, TunnelId>,
    /// Shareable sessions: registration sequence number → tunnel; the first entry is the oldest.
    shared: BTreeMap<u64, TunnelId>,
}

/// One node key with at least one tunnel.
struct NodeEntry {
    key: Arc<str>,
    cluster_key: Arc<str>,
    /// Bare id of the effective cluster (the one asked by the node's first tunnel).
    cluster_id: String,
    /// Position of the node in its cluster's join order (round-robin order).
    ordinal: u64,
    /// Tunnels (idle + in use) across workers.
    total: usize,
    /// Idle tunnels across workers.
    idle: usize,
    /// Shareable sessions across workers.
    shareable: usize,
    /// One slot per worker with at least one tunnel of the node (few workers: a vector).
    slots: Vec<WorkerSlot>,
}

/// One cluster key with at least one node.
struct ClusterEntry {
    /// Nodes in the cluster.
    nodes: usize,
    /// Idle tunnels over the cluster's nodes.
    idle: usize,
    /// Shareable sessions over the cluster's nodes.
    shareable: usize,
    /// Next join ordinal to hand out.
    next_ordinal: u64,
    /// Ordinal of the node picked by the last cluster claim.
    cursor: Option<u64>,
    /// Ready nodes (at least one idle tunnel or shareable session), by join ordinal.
    ready: BTreeMap<u64, Arc<str>>,
    /// Tunnels (idle + in use) of the cluster per worker; entries with zero are dropped.
    per_worker: Vec<(WorkerId, usize)>,
}

/// Gauges of one worker; the entry is dropped when all are zero.
#[derive(Default, Clone, Copy)]
struct WorkerStats {
    nodes: usize,
    clusters: usize,
    idle: usize,
    in_use: usize,
    shareable: usize,
}

impl WorkerStats {
    fn is_zero(&self) -> bool {
        self.nodes == 0 && self.clusters == 0 && self.idle == 0 && self.in_use == 0 && self.shareable == 0
    }
}

impl NodeEntry {
    /// Whether a claim can get something from this node (it belongs in its cluster's `ready`).
    fn is_ready(&self) -> bool {
        self.idle > 0 || self.shareable > 0
    }
}

/// What [`Tracker::claim`] picked within a node.
enum Pick {
    /// Attach to this shareable session.
    Shared(TunnelId),
    /// Pop the oldest idle tunnel of the slot at this index.
    Idle(usize),
}

struct State<H> {
    tunnels: HashMap<TunnelId, TunnelEntry<H>>,
    nodes: HashMap<Arc<str>, NodeEntry>,
    clusters: HashMap<Arc<str>, ClusterEntry>,
    workers: HashMap<WorkerId, WorkerStats>,
    next_seq: u64,
    idle: usize,
    in_use: usize,
    shareable: usize,
}

/// Release spare capacity of a map that shrank a lot, so memory returns towards baseline after
/// churn. Amortised O(1): it triggers only when at most a quarter of the capacity is used.
fn relax<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len().saturating_mul(4) < map.capacity() {
        map.shrink_to(map.len().saturating_mul(2));
    }
}

fn compose_key(isolation: bool, tenant: &str, id: &str) -> String {
    if isolation && !tenant.is_empty() {
        let mut key = String::with_capacity(tenant.len() + 1 + id.len());
        key.push_str(tenant);
        key.push(KEY_DELIMITER);
        key.push_str(id);
        key
    } else {
        id.to_string()
    }
}

/// The tracker of tunnels shared by all workers.
///
/// `H` is the caller's handle to a tunnel (for the module: whatever reaches the owning worker's
/// connection, an `Arc`); it is stored from registration until [`remove`](Tracker::remove), and
/// every claim (fresh or shared) hands out a clone made under the lock.
///
/// Thread-safety: `Tracker<H>` is `Send + Sync` when `H: Send`; every method takes `&self` and
/// locks an internal `parking_lot::Mutex` for its duration only. Each method is atomic: a
/// [`claim`](Tracker::claim) racing a [`remove`](Tracker::remove) of the same tunnel sees either
/// the tunnel (and the removal then reports `was_idle == false` if the claim was fresh) or
/// nothing; a claim racing [`set_shareable`](Tracker::set_shareable) sees the flag either before
/// or after the change.
pub struct Tracker<H> {
    isolation: bool,
    state: Mutex<State<H>>,
}

impl<H: Clone + Send> Tracker<H> {
    /// Empty tracker. `tenant_isolation` is the `enable_tenant_isolation` setting: keys then carry
    /// the tenant (docs/protocol.md#keys).
    pub fn new(tenant_isolation: bool) -> Self {
        Tracker {
            isolation: tenant_isolation,
            state: Mutex::new(State {
                tunnels: HashMap::new(),
                nodes: HashMap::new(),
                clusters: HashMap::new(),
                workers: HashMap::new(),
                next_seq: 0,
                idle: 0,
                in_use: 0,
                shareable: 0,
            }),
        }
    }

    /// Whether keys carry the tenant id.
    pub fn tenant_isolation(&self) -> bool {
        self.isolation
    }

    /// Node key of an identity: the node id, or `tenant:node` under tenant isolation with a
    /// non-empty tenant id (docs/protocol.md#keys). Pure; takes no lock.
    pub fn node_key(&self, id: &Identity) -> String {
        compose_key(self.isolation, &id.tenant_id, &id.node_id)
    }

    /// Cluster key of an identity: the cluster id, or `tenant:cluster` under tenant isolation with
    /// a non-empty tenant id (docs/protocol.md#keys). Pure; takes no lock.
    pub fn cluster_key(&self, id: &Identity) -> String {
        compose_key(self.isolation, &id.tenant_id, &id.cluster_id)
    }

    /// Tunnels (idle + in use, all workers) of a node key; 0 for an unknown key. For
    /// `max_connections_per_node` (docs/protocol.md#keys). O(1).
    pub fn connections_for_node(&self, node_key: &str) -> usize {
        self.state.lock().nodes.get(node_key).map_or(0, |n| n.total)
    }

    /// Whether `target` is a known node key or cluster key (any tunnel, idle or in use). O(1).
    pub fn has_node_or_cluster(&self, target: &str) -> bool {
        let st = self.state.lock();
        st.nodes.contains_key(target) || st.clusters.contains_key(target)
    }

    /// Idle tunnels a [`claim`](Tracker::claim) of `target` could reach (all workers), resolving
    /// `target` as `claim` does (a known cluster key first, else a node key). O(1).
    pub fn idle_count_for(&self, target: &str) -> usize {
        let st = self.state.lock();
        match st.clusters.get(target) {
            Some(cluster) => cluster.idle,
            None => st.nodes.get(target).map_or(0, |n| n.idle),
        }
    }

    /// Shareable sessions a [`claim`](Tracker::claim) of `target` could attach to (all workers),
    /// resolving `target` as `claim` does (a known cluster key first, else a node key). O(1).
    pub fn shareable_count_for(&self, target: &str) -> usize {
        let st = self.state.lock();
        match st.clusters.get(target) {
            Some(cluster) => cluster.shareable,
            None => st.nodes.get(target).map_or(0, |n| n.shareable),
        }
    }

    /// Process-wide totals. O(1).
    pub fn counts(&self) -> Counts {
        let st = self.state.lock();
        Counts {
            idle: st.idle,
            in_use: st.in_use,
            shareable: st.shareable,
            nodes: st.nodes.len(),
            clusters: st.clusters.len(),
        }
    }

    /// Totals for tunnels owned by `worker` (all zero for a worker without tunnels). O(1).
    pub fn worker_counts(&self, worker: WorkerId) -> WorkerCounts {
        let st = self.state.lock();
        let s = st.workers.get(&worker).copied().unwrap_or_default();
        WorkerCounts {
            nodes: s.nodes,
            clusters: s.clusters,
            idle: s.idle,
            in_use: s.in_use,
            shareable: s.shareable,
        }
    }

    /// Every tracked tunnel, sorted by tunnel id, for an admin listing. O(n log n) in tunnels;
    /// copies the rows under the lock, so keep it off hot paths.
    pub fn snapshot(&self) -> Vec<TunnelInfo> {
        self.snapshot_with(|_| ()).into_iter().map(|(info, ())| info).collect()
    }

    /// [`Tracker::snapshot`] plus, per tunnel, `probe(handle)` (called under the tracker's lock:
    /// keep it to a few atomic loads) and whether the tunnel is a shareable session. Sorted by
    /// tunnel id. O(n).
    pub fn snapshot_with<R>(&self, probe: impl Fn(&H) -> R) -> Vec<(TunnelInfo, R)> {
        let mut rows: Vec<(TunnelInfo, R)> = {
            let st = self.state.lock();
            st.tunnels
                .iter()
                .map(|(id, e)| {
                    let info = TunnelInfo {
                        tunnel: *id,
                        worker: e.worker,
                        identity: e.identity.clone(),
                        node_key: e.node_key.to_string(),
                        cluster_key: e.cluster_key.to_string(),
                        state: e.state,
                        meta: e.meta.clone(),
                    };
                    (info, probe(&e.handle))
                })
                .collect()
        };
        rows.sort_by_key(|r| r.0.tunnel);
        rows
    }

    /// Ids of every tracked tunnel, sorted. The lock is held only to copy the ids (O(n)); with
    /// [`Tracker::visit`] a listing can then read the rows in small batches, so that workers
    /// never wait long for the lock (admin listing with 10,000 tunnels).
    pub fn tunnel_ids(&self) -> Vec<TunnelId> {
        let mut ids: Vec<TunnelId> = self.state.lock().tunnels.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Calls `f` with a borrowed view of every tunnel, in tunnel id order, taking the lock once
    /// per [`WALK_BATCH`] tunnels (a tunnel closing meanwhile is left out, one registered
    /// meanwhile is not seen), so that no worker waits long for it while a reader on the main
    /// thread walks 10,000 tunnels. `f` must be cheap (no I/O). Any thread.
    pub fn walk_batched(&self, mut f: impl FnMut(TunnelView<'_, H>)) {
        let ids = self.tunnel_ids();
        for batch in ids.chunks(WALK_BATCH) {
            self.visit(batch, &mut f);
        }
    }

    /// Calls `f` with a borrowed view of each tunnel of `ids` that is still tracked, in the order
    /// of `ids`, all under one hold of the tracker's lock: keep `ids` short (a few hundred) and
    /// `f` cheap (no I/O). Any thread.
    pub fn visit(&self, ids: &[TunnelId], mut f: impl FnMut(TunnelView<'_, H>)) {
        let st = self.state.lock();
        for id in ids {
            if let Some(e) = st.tunnels.get(id) {
                f(TunnelView {
                    tunnel: *id,
                    worker: e.worker,
                    identity: &e.identity,
                    state: e.state,
                    meta: &e.meta,
                    handle: &e.handle,
                });
            }
        }
    }
}

/// A borrowed view of one tracked tunnel, valid inside [`Tracker::visit`]'s callback.
pub struct TunnelView<'a, H> {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// Owning worker.
    pub worker: WorkerId,
    /// Identity with bare ids; `cluster_id` is the node's effective cluster id.
    pub identity: &'a Identity,
    /// Idle or in use.
    pub state: TunnelState,
    /// Metadata given at registration.
    pub meta: &'a TunnelMeta,
    /// The caller's handle.
    pub handle: &'a H,
}

impl ClusterEntry {
    fn new() -> Self {
        ClusterEntry {
            nodes: 0,
            idle: 0,
            shareable: 0,
            next_ordinal: 0,
            cursor: None,
            ready: BTreeMap::new(),
            per_worker: Vec::new(),
        }
    }
}


mod claim;
mod register;
mod remove;

#[cfg(test)]
mod check;
#[cfg(test)]
mod tests;
