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
//!   shareable session on any other worker; (d) the oldest idle tunnel on any other worker.
//! - A cluster key resolves to one of its nodes by round-robin over the cluster's nodes that have
//!   an idle tunnel or a shareable session (*ready* nodes), in the order the nodes joined the
//!   cluster. A node without any tunnel leaves its cluster; an empty cluster disappears (protocol
//!   doc §2.4.5).
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

    /// Track a new idle tunnel: it goes to the back of its node's idle FIFO for `worker`.
    ///
    /// If the node already has tunnels, the tunnel joins the node's existing cluster and
    /// [`Registered::cluster_conflict`] reports the cluster id it asked for when that differs.
    /// The stored identity then carries the effective cluster id.
    ///
    /// Errors (nothing changes): [`RegisterError::Duplicate`] if `tunnel` is already tracked;
    /// [`RegisterError::MissingId`] for an empty node or cluster id; [`RegisterError::Delimiter`]
    /// under tenant isolation when an id contains `:`. O(1) + O(log n) in the node's idle tunnels.
    pub fn register(
        &self,
        tunnel: TunnelId,
        worker: WorkerId,
        id: &Identity,
        meta: TunnelMeta,
        handle: H,
    ) -> Result<Registered, RegisterError> {
        if id.node_id.is_empty() {
            return Err(RegisterError::MissingId("node_id"));
        }
        if id.cluster_id.is_empty() {
            return Err(RegisterError::MissingId("cluster_id"));
        }
        if self.isolation {
            for (field, value) in [
                ("tenant_id", &id.tenant_id),
                ("node_id", &id.node_id),
                ("cluster_id", &id.cluster_id),
            ] {
                if value.contains(KEY_DELIMITER) {
                    return Err(RegisterError::Delimiter(field));
                }
            }
        }
        let node_key = self.node_key(id);
        let asked_cluster_key = self.cluster_key(id);

        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.tunnels.contains_key(&tunnel) {
            return Err(RegisterError::Duplicate);
        }
        let seq = st.next_seq;
        st.next_seq = st.next_seq.wrapping_add(1);

        // Node (and, for a new node, its cluster membership).
        let mut node_new = false;
        let mut cluster_new = false;
        if !st.nodes.contains_key(node_key.as_str()) {
            node_new = true;
            let cluster_arc: Arc<str> = match st.clusters.get_key_value(asked_cluster_key.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(asked_cluster_key.as_str()),
            };
            let cluster = st
                .clusters
                .entry(cluster_arc.clone())
                .or_insert_with(ClusterEntry::new);
            cluster_new = cluster.nodes == 0;
            let ordinal = cluster.next_ordinal;
            cluster.next_ordinal = cluster.next_ordinal.wrapping_add(1);
            cluster.nodes += 1;
            let key: Arc<str> = Arc::from(node_key.as_str());
            st.nodes.insert(
                key.clone(),
                NodeEntry {
                    key,
                    cluster_key: cluster_arc,
                    cluster_id: id.cluster_id.clone(),
                    ordinal,
                    total: 0,
                    idle: 0,
                    shareable: 0,
                    slots: Vec::new(),
                },
            );
        }
        let nodes = &mut st.nodes;
        let clusters = &mut st.clusters;
        let Some(node) = nodes.get_mut(node_key.as_str()) else {
            // Unreachable: inserted above if missing.
            return Err(RegisterError::Duplicate);
        };
        let cluster_conflict = if *node.cluster_key != *asked_cluster_key {
            Some(id.cluster_id.clone())
        } else {
            None
        };

        let slot_index = match node.slots.iter().position(|s| s.worker == worker) {
            Some(i) => i,
            None => {
                node.slots.push(WorkerSlot {
                    worker,
                    total: 0,
                    idle: BTreeMap::new(),
                    shared: BTreeMap::new(),
                });
                node.slots.len() - 1
            }
        };
        let mut worker_new_node = false;
        if let Some(slot) = node.slots.get_mut(slot_index) {
            worker_new_node = slot.total == 0;
            slot.total += 1;
            slot.idle.insert(seq, tunnel);
        }
        node.total += 1;
        node.idle += 1;

        let cluster = clusters
            .entry(node.cluster_key.clone())
            .or_insert_with(|| ClusterEntry {
                nodes: 1,
                ..ClusterEntry::new()
            });
        if node.idle == 1 {
            cluster.ready.insert(node.ordinal, node.key.clone());
        }
        cluster.idle += 1;
        let worker_new_cluster = match cluster.per_worker.iter_mut().find(|(w, _)| *w == worker) {
            Some((_, n)) => {
                *n += 1;
                *n == 1
            }
            None => {
                cluster.per_worker.push((worker, 1));
                true
            }
        };

        let stats = st.workers.entry(worker).or_default();
        stats.idle += 1;
        stats.nodes += usize::from(worker_new_node);
        stats.clusters += usize::from(worker_new_cluster);
        st.idle += 1;

        let identity = Identity {
            node_id: id.node_id.clone(),
            cluster_id: node.cluster_id.clone(),
            tenant_id: id.tenant_id.clone(),
        };
        let registered = Registered {
            node_key,
            cluster_key: node.cluster_key.to_string(),
            cluster_conflict,
            worker_new_node,
            worker_new_cluster,
            node_new,
            cluster_new,
            identity: identity.clone(),
        };
        st.tunnels.insert(
            tunnel,
            TunnelEntry {
                worker,
                seq,
                identity,
                node_key: node.key.clone(),
                cluster_key: node.cluster_key.clone(),
                meta,
                state: TunnelState::Idle,
                shareable: false,
                handle,
            },
        );
        Ok(registered)
    }

    /// Claim a tunnel for `target`, on behalf of `worker`: attach to a running shareable session
    /// (`shared == true`, nothing changes in the tracker) or take an idle tunnel, which becomes
    /// `InUse` and not shareable (`shared == false`, counts move from idle to in use).
    ///
    /// `target` is a cluster key or a node key (the caller composes `tenant:id` under isolation).
    /// A known cluster key wins over a node key of the same spelling (docs/protocol.md#picking-a-tunnel): the
    /// node is picked round-robin over the cluster's *ready* nodes (an idle tunnel or a shareable
    /// session), in join order, the cursor advancing per successful claim; a known cluster with no
    /// ready node gives `None`. Otherwise `target` is a node key. Within the node, in order:
    /// (a) the oldest shareable session on `worker`; (b) the oldest idle tunnel on `worker`;
    /// (c) the oldest (lowest registration sequence) shareable session on any other worker;
    /// (d) the oldest idle tunnel on any other worker.
    ///
    /// `None` when nothing is reachable. O(log n) + O(#workers holding the node).
    pub fn claim(&self, target: &str, worker: WorkerId) -> Option<Claimed<H>> {
        let mut guard = self.state.lock();
        let st = &mut *guard;

        let node_key: Arc<str> = match st.clusters.get_mut(target) {
            Some(cluster) => {
                let after = cluster
                    .cursor
                    .and_then(|c| cluster.ready.range((Bound::Excluded(c), Bound::Unbounded)).next());
                let (ordinal, key) = after.or_else(|| cluster.ready.iter().next())?;
                let (ordinal, key) = (*ordinal, key.clone());
                cluster.cursor = Some(ordinal);
                key
            }
            None => st.nodes.get(target)?.key.clone(),
        };

        let node = st.nodes.get_mut(&*node_key)?;
        let index = match Self::pick(node, worker)? {
            Pick::Shared(tunnel) => {
                let entry = st.tunnels.get(&tunnel)?;
                return Some(Self::claimed(tunnel, entry, worker, true));
            }
            Pick::Idle(index) => index,
        };
        let (_, tunnel) = node.slots.get_mut(index)?.idle.pop_first()?;
        node.idle = node.idle.saturating_sub(1);
        if let Some(cluster) = st.clusters.get_mut(&*node.cluster_key) {
            cluster.idle = cluster.idle.saturating_sub(1);
            if !node.is_ready() {
                cluster.ready.remove(&node.ordinal);
            }
        }

        let entry = st.tunnels.get_mut(&tunnel)?;
        entry.state = TunnelState::InUse; // not shareable: only in-use tunnels are ever marked
        if let Some(stats) = st.workers.get_mut(&entry.worker) {
            stats.idle = stats.idle.saturating_sub(1);
            stats.in_use += 1;
        }
        st.idle = st.idle.saturating_sub(1);
        st.in_use += 1;
        Some(Self::claimed(tunnel, entry, worker, false))
    }

    /// The preference order of [`claim`](Tracker::claim) within one node. O(log n + #slots).
    fn pick(node: &NodeEntry, worker: WorkerId) -> Option<Pick> {
        let own = node.slots.iter().position(|s| s.worker == worker);
        if let Some((i, slot)) = own.and_then(|i| node.slots.get(i).map(|s| (i, s))) {
            if let Some((_, tunnel)) = slot.shared.first_key_value() {
                return Some(Pick::Shared(*tunnel));
            }
            if !slot.idle.is_empty() {
                return Some(Pick::Idle(i));
            }
        }
        // The own slot (if any) has neither, so the minimum over all slots is over the others.
        if node.shareable > 0 {
            let oldest = node.slots.iter().filter_map(|s| s.shared.first_key_value()).min();
            if let Some((_, tunnel)) = oldest {
                return Some(Pick::Shared(*tunnel));
            }
        }
        node.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.idle.keys().next().map(|seq| (*seq, i)))
            .min()
            .map(|(_, i)| Pick::Idle(i))
    }

    /// Build the claim result; clones the handle and the descriptive fields.
    fn claimed(tunnel: TunnelId, entry: &TunnelEntry<H>, worker: WorkerId, shared: bool) -> Claimed<H> {
        Claimed {
            tunnel,
            worker: entry.worker,
            handle: entry.handle.clone(),
            node_key: entry.node_key.to_string(),
            cluster_key: entry.cluster_key.to_string(),
            identity: entry.identity.clone(),
            meta: entry.meta.clone(),
            same_worker: entry.worker == worker,
            shared,
        }
    }

    /// Mark an `InUse` tunnel as a running HTTP/2 session that accepts more egress connections
    /// (`true`: later claims of its node may attach to it), or no longer (`false`: GOAWAY, stream
    /// ids exhausted, closing). Idempotent.
    ///
    /// Returns `true` when the tunnel is tracked and in use (whether or not the flag changed);
    /// `false`, changing nothing, when it is unknown or still idle. Marking or unmarking may make
    /// the node enter or leave its cluster's round-robin. O(1) + O(log n) + O(#workers holding the
    /// node).
    pub fn set_shareable(&self, tunnel: TunnelId, shareable: bool) -> bool {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let Some(entry) = st.tunnels.get_mut(&tunnel) else {
            return false;
        };
        if entry.state != TunnelState::InUse {
            return false;
        }
        if entry.shareable == shareable {
            return true;
        }
        entry.shareable = shareable;
        let step = |n: &mut usize| {
            *n = if shareable { n.saturating_add(1) } else { n.saturating_sub(1) };
        };
        if let Some(node) = st.nodes.get_mut(&*entry.node_key) {
            if let Some(slot) = node.slots.iter_mut().find(|s| s.worker == entry.worker) {
                if shareable {
                    slot.shared.insert(entry.seq, tunnel);
                } else {
                    slot.shared.remove(&entry.seq);
                }
            }
            step(&mut node.shareable);
            if let Some(cluster) = st.clusters.get_mut(&*node.cluster_key) {
                step(&mut cluster.shareable);
                if node.is_ready() {
                    cluster.ready.insert(node.ordinal, node.key.clone());
                } else {
                    cluster.ready.remove(&node.ordinal);
                }
            }
        }
        if let Some(stats) = st.workers.get_mut(&entry.worker) {
            step(&mut stats.shareable);
        }
        step(&mut st.shareable);
        true
    }

    /// Forget a tunnel, idle or in use, shareable or not (any kind of close), everywhere: a
    /// shareable session stops being offered at once. A node with no tunnel left leaves its
    /// cluster; an empty cluster disappears (docs/protocol.md#closing-a-tunnel). `None` for an unknown id. The
    /// tracker's copy of the handle is dropped after the lock is released.
    /// O(1) + O(log n) + O(#workers holding the node).
    pub fn remove(&self, tunnel: TunnelId) -> Option<Removed> {
        self.remove_where(tunnel, false)
    }

    /// [`remove`](Tracker::remove), but only while the tunnel is still idle: `None` (nothing
    /// changes) for an unknown tunnel or one a [`claim`](Tracker::claim) already took. The check
    /// and the removal are one atomic step, so a tunnel is either claimed or removed, never both
    /// (used by drain: idle tunnels are closed, claimed ones keep serving).
    pub fn remove_if_idle(&self, tunnel: TunnelId) -> Option<Removed> {
        self.remove_where(tunnel, true)
    }

    fn remove_where(&self, tunnel: TunnelId, idle_only: bool) -> Option<Removed> {
        let (removed, entry) = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            if idle_only && st.tunnels.get(&tunnel)?.state != TunnelState::Idle {
                return None;
            }
            let entry = st.tunnels.remove(&tunnel)?;
            relax(&mut st.tunnels);
            let was_idle = entry.state == TunnelState::Idle;
            let was_shareable = entry.shareable;
            let worker = entry.worker;

            let mut worker_node_gone = false;
            let mut node_gone = false;
            let mut left_ready = false;
            let mut ordinal = None;
            if let Some(node) = st.nodes.get_mut(&*entry.node_key) {
                ordinal = Some(node.ordinal);
                if let Some(i) = node.slots.iter().position(|s| s.worker == worker) {
                    let mut empty = false;
                    if let Some(slot) = node.slots.get_mut(i) {
                        if was_idle {
                            slot.idle.remove(&entry.seq);
                        }
                        if was_shareable {
                            slot.shared.remove(&entry.seq);
                        }
                        slot.total = slot.total.saturating_sub(1);
                        empty = slot.total == 0;
                    }
                    if empty {
                        node.slots.swap_remove(i);
                        worker_node_gone = true;
                    }
                }
                node.total = node.total.saturating_sub(1);
                if was_idle {
                    node.idle = node.idle.saturating_sub(1);
                }
                if was_shareable {
                    node.shareable = node.shareable.saturating_sub(1);
                }
                left_ready = (was_idle || was_shareable) && !node.is_ready();
                node_gone = node.total == 0;
            }
            if node_gone {
                st.nodes.remove(&*entry.node_key);
                relax(&mut st.nodes);
            }

            let mut worker_cluster_gone = false;
            let mut cluster_gone = false;
            if let Some(cluster) = st.clusters.get_mut(&*entry.cluster_key) {
                if was_idle {
                    cluster.idle = cluster.idle.saturating_sub(1);
                }
                if was_shareable {
                    cluster.shareable = cluster.shareable.saturating_sub(1);
                }
                if left_ready || node_gone {
                    if let Some(o) = ordinal {
                        cluster.ready.remove(&o);
                    }
                }
                if node_gone {
                    cluster.nodes = cluster.nodes.saturating_sub(1);
                }
                if let Some(i) = cluster.per_worker.iter().position(|(w, _)| *w == worker) {
                    let mut empty = false;
                    if let Some((_, n)) = cluster.per_worker.get_mut(i) {
                        *n = n.saturating_sub(1);
                        empty = *n == 0;
                    }
                    if empty {
                        cluster.per_worker.swap_remove(i);
                        worker_cluster_gone = true;
                    }
                }
                cluster_gone = cluster.nodes == 0;
            }
            if cluster_gone {
                st.clusters.remove(&*entry.cluster_key);
                relax(&mut st.clusters);
            }

            let mut drop_worker = false;
            if let Some(stats) = st.workers.get_mut(&worker) {
                if was_idle {
                    stats.idle = stats.idle.saturating_sub(1);
                } else {
                    stats.in_use = stats.in_use.saturating_sub(1);
                }
                if was_shareable {
                    stats.shareable = stats.shareable.saturating_sub(1);
                }
                if worker_node_gone {
                    stats.nodes = stats.nodes.saturating_sub(1);
                }
                if worker_cluster_gone {
                    stats.clusters = stats.clusters.saturating_sub(1);
                }
                drop_worker = stats.is_zero();
            }
            if drop_worker {
                st.workers.remove(&worker);
            }
            if was_idle {
                st.idle = st.idle.saturating_sub(1);
            } else {
                st.in_use = st.in_use.saturating_sub(1);
            }
            if was_shareable {
                st.shareable = st.shareable.saturating_sub(1);
            }

            let removed = Removed {
                worker,
                was_idle,
                node_key: entry.node_key.to_string(),
                cluster_key: entry.cluster_key.to_string(),
                identity: entry.identity.clone(),
                meta: entry.meta.clone(),
                worker_node_gone,
                worker_cluster_gone,
                node_gone,
                cluster_gone,
            };
            (removed, entry)
        };
        drop(entry);
        Some(removed)
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

#[cfg(test)]
impl<H: Clone + Send> Tracker<H> {
    /// Number of entries in every internal map (tunnels, nodes, clusters, workers).
    fn internal_sizes(&self) -> [usize; 4] {
        let st = self.state.lock();
        [st.tunnels.len(), st.nodes.len(), st.clusters.len(), st.workers.len()]
    }

    /// Recompute every derived structure from the tunnel table and compare.
    fn check_consistency(&self) -> Result<(), String> {
        use std::collections::{BTreeSet, HashSet};
        let st = self.state.lock();
        let mut node_total: HashMap<&str, usize> = HashMap::new();
        let mut node_idle: HashMap<&str, BTreeSet<(WorkerId, u64, TunnelId)>> = HashMap::new();
        let mut node_shared: HashMap<&str, BTreeSet<(WorkerId, u64, TunnelId)>> = HashMap::new();
        let mut cluster_shared: HashMap<&str, usize> = HashMap::new();
        let mut node_slot_total: HashMap<(&str, WorkerId), usize> = HashMap::new();
        let mut cluster_worker: HashMap<(&str, WorkerId), usize> = HashMap::new();
        let mut cluster_nodes: HashMap<&str, HashSet<&str>> = HashMap::new();
        let mut cluster_idle: HashMap<&str, usize> = HashMap::new();
        type Seen<'a> = (HashSet<&'a str>, HashSet<&'a str>, usize, usize, usize);
        let mut worker_stats: HashMap<WorkerId, Seen<'_>> = HashMap::new();
        let (mut idle, mut in_use, mut shareable) = (0, 0, 0);
        for (id, e) in &st.tunnels {
            let nk: &str = &e.node_key;
            let ck: &str = &e.cluster_key;
            *node_total.entry(nk).or_default() += 1;
            *node_slot_total.entry((nk, e.worker)).or_default() += 1;
            *cluster_worker.entry((ck, e.worker)).or_default() += 1;
            cluster_nodes.entry(ck).or_default().insert(nk);
            let ws = worker_stats.entry(e.worker).or_default();
            ws.0.insert(nk);
            ws.1.insert(ck);
            match e.state {
                TunnelState::Idle => {
                    if e.shareable {
                        return Err(format!("idle tunnel {id} marked shareable"));
                    }
                    node_idle.entry(nk).or_default().insert((e.worker, e.seq, *id));
                    *cluster_idle.entry(ck).or_default() += 1;
                    ws.2 += 1;
                    idle += 1;
                }
                TunnelState::InUse => {
                    ws.3 += 1;
                    in_use += 1;
                    if e.shareable {
                        node_shared.entry(nk).or_default().insert((e.worker, e.seq, *id));
                        *cluster_shared.entry(ck).or_default() += 1;
                        ws.4 += 1;
                        shareable += 1;
                    }
                }
            }
        }
        if (idle, in_use, shareable) != (st.idle, st.in_use, st.shareable) {
            return Err(format!(
                "global counts {:?} vs {:?}",
                (st.idle, st.in_use, st.shareable),
                (idle, in_use, shareable)
            ));
        }
        if st.nodes.len() != node_total.len() {
            return Err("node count".into());
        }
        for (key, node) in &st.nodes {
            if *node.key != **key {
                return Err("node key mismatch".into());
            }
            let total = node_total.get(&**key).copied().unwrap_or(0);
            if node.total != total || total == 0 {
                return Err(format!("node {key} total {} vs {total}", node.total));
            }
            let want_idle = node_idle.get(&**key).cloned().unwrap_or_default();
            let want_shared = node_shared.get(&**key).cloned().unwrap_or_default();
            let mut got_idle = BTreeSet::new();
            let mut got_shared = BTreeSet::new();
            for slot in &node.slots {
                if slot.total == 0 || node_slot_total.get(&(&**key, slot.worker)) != Some(&slot.total) {
                    return Err(format!("node {key} slot {} total", slot.worker));
                }
                for (seq, id) in &slot.idle {
                    got_idle.insert((slot.worker, *seq, *id));
                }
                for (seq, id) in &slot.shared {
                    got_shared.insert((slot.worker, *seq, *id));
                }
            }
            let slots_expected = node_slot_total.keys().filter(|(k, _)| *k == &**key).count();
            if slots_expected != node.slots.len() {
                return Err(format!("node {key} slot count"));
            }
            if got_idle != want_idle || node.idle != want_idle.len() {
                return Err(format!("node {key} idle set"));
            }
            if got_shared != want_shared || node.shareable != want_shared.len() {
                return Err(format!("node {key} shared set"));
            }
            let Some(cluster) = st.clusters.get(&*node.cluster_key) else {
                return Err(format!("node {key} cluster missing"));
            };
            if (cluster.ready.get(&node.ordinal) == Some(&node.key)) != (node.idle > 0 || node.shareable > 0) {
                return Err(format!("node {key} ready flag"));
            }
        }
        if st.clusters.len() != cluster_nodes.len() {
            return Err("cluster count".into());
        }
        for (key, cluster) in &st.clusters {
            let nodes = cluster_nodes.get(&**key).map_or(0, |s| s.len());
            if cluster.nodes != nodes || nodes == 0 {
                return Err(format!("cluster {key} nodes {} vs {nodes}", cluster.nodes));
            }
            if cluster.idle != cluster_idle.get(&**key).copied().unwrap_or(0) {
                return Err(format!("cluster {key} idle"));
            }
            if cluster.shareable != cluster_shared.get(&**key).copied().unwrap_or(0) {
                return Err(format!("cluster {key} shareable"));
            }
            for (ordinal, n) in &cluster.ready {
                match st.nodes.get(&**n) {
                    Some(node)
                        if node.is_ready() && *node.cluster_key == **key && node.ordinal == *ordinal => {}
                    _ => return Err(format!("cluster {key} ready has stale {n}")),
                }
            }
            let expected = cluster_worker.keys().filter(|(k, _)| *k == &**key).count();
            if expected != cluster.per_worker.len() {
                return Err(format!("cluster {key} per-worker count"));
            }
            for (w, n) in &cluster.per_worker {
                if cluster_worker.get(&(&**key, *w)) != Some(n) {
                    return Err(format!("cluster {key} worker {w}"));
                }
            }
        }
        if st.workers.len() != worker_stats.len() {
            return Err("worker entries".into());
        }
        for (w, s) in &st.workers {
            let Some(m) = worker_stats.get(w) else {
                return Err(format!("worker {w} stale"));
            };
            if (s.nodes, s.clusters, s.idle, s.in_use, s.shareable) != (m.0.len(), m.1.len(), m.2, m.3, m.4) {
                return Err(format!("worker {w} stats"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ident(tenant: &str, node: &str, cluster: &str) -> Identity {
        Identity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: tenant.into(),
        }
    }

    fn meta(at: u64) -> TunnelMeta {
        TunnelMeta {
            remote_address: format!("127.0.0.1:{}", 40000 + at),
            initiator_worker_id: "worker_0".into(),
            initiator_connection_id: at.to_string(),
            registered_at_ms: at,
            initiation_time_ms: 0,
        }
    }

    fn reg(t: &Tracker<u64>, id: TunnelId, worker: WorkerId, who: &Identity) -> Registered {
        t.register(id, worker, who, meta(id), id * 10).expect("register")
    }

    #[test]
    fn tunnel_ids_and_visit_match_the_snapshot() {
        let t: Tracker<u64> = Tracker::new(false);
        for id in [5, 2, 9] {
            reg(&t, id, (id % 2) as WorkerId, &ident("t", &format!("n{id}"), "c"));
        }
        assert_eq!(t.tunnel_ids(), vec![2, 5, 9]);
        let mut seen = Vec::new();
        // Unknown ids (a tunnel closed since) are skipped; order follows `ids`.
        t.visit(&[9, 7, 2], |v| seen.push((v.tunnel, v.identity.node_id.clone(), *v.handle, v.meta.registered_at_ms)));
        assert_eq!(seen, vec![(9, "n9".to_string(), 90, 9), (2, "n2".to_string(), 20, 2)]);
        let snap: Vec<_> = t.snapshot().into_iter().map(|i| (i.tunnel, i.worker, i.identity)).collect();
        let mut via_visit = Vec::new();
        t.visit(&t.tunnel_ids(), |v| via_visit.push((v.tunnel, v.worker, v.identity.clone())));
        assert_eq!(snap, via_visit);
    }

    fn claim_id(t: &Tracker<u64>, target: &str, worker: WorkerId) -> Option<TunnelId> {
        let c = t.claim(target, worker)?;
        assert_eq!(c.handle, c.tunnel * 10, "handle travels with its tunnel");
        Some(c.tunnel)
    }

    #[test]
    fn tracker_is_send_and_sync() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Tracker<u64>>();
        assert_sync::<Tracker<std::sync::Arc<String>>>();
    }

    #[test]
    fn remove_if_idle_takes_idle_tunnels_and_leaves_claimed_ones() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        reg(&t, 1, 0, &who);
        reg(&t, 2, 1, &who);
        assert_eq!(claim_id(&t, "n", 0), Some(1));
        assert!(t.remove_if_idle(1).is_none(), "a claimed tunnel is not drained");
        assert!(t.remove_if_idle(99).is_none(), "unknown tunnel");
        let rm = t.remove_if_idle(2).expect("idle tunnel removed");
        assert!(rm.was_idle && rm.worker_node_gone && !rm.node_gone, "{rm:?}");
        assert!(t.remove_if_idle(2).is_none(), "removed once");
        assert!(t.claim("n", 1).is_none(), "a drained tunnel cannot be claimed");
        assert_eq!(t.counts(), Counts { idle: 0, in_use: 1, shareable: 0, nodes: 1, clusters: 1 });
        t.check_consistency().unwrap();
        let rm = t.remove(1).expect("the claimed tunnel is still removable");
        assert!(!rm.was_idle && rm.node_gone && rm.cluster_gone);
        t.check_consistency().unwrap();
    }

    #[test]
    fn fifo_order_on_one_worker() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        for id in [5, 3, 9, 1] {
            reg(&t, id, 0, &who);
        }
        let got: Vec<_> = std::iter::from_fn(|| claim_id(&t, "n", 0)).collect();
        assert_eq!(got, vec![5, 3, 9, 1], "oldest idle first, not by id");
        assert_eq!(t.counts(), Counts { idle: 0, in_use: 4, shareable: 0, nodes: 1, clusters: 1 });
        t.check_consistency().unwrap();
    }

    #[test]
    fn prefers_the_claiming_worker() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        reg(&t, 1, 0, &who); // older, worker 0
        reg(&t, 2, 1, &who); // newer, worker 1
        let c = t.claim("n", 1).unwrap();
        assert_eq!((c.tunnel, c.worker, c.same_worker), (2, 1, true));
        let c = t.claim("n", 1).unwrap();
        assert_eq!((c.tunnel, c.worker, c.same_worker), (1, 0, false));
        assert!(t.claim("n", 1).is_none());
        t.check_consistency().unwrap();
    }

    #[test]
    fn cross_worker_fallback_takes_the_globally_oldest() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        reg(&t, 10, 1, &who);
        reg(&t, 20, 2, &who);
        reg(&t, 11, 1, &who);
        reg(&t, 21, 2, &who);
        reg(&t, 30, 3, &who);
        let got: Vec<_> = std::iter::from_fn(|| claim_id(&t, "n", 0)).collect();
        assert_eq!(got, vec![10, 20, 11, 21, 30]);
    }

    #[test]
    fn claimed_carries_identity_keys_and_registration_time() {
        let t = Tracker::new(true);
        t.register(7, 2, &ident("t", "n", "c"), meta(1234), 70).unwrap();
        let c = t.claim("t:n", 2).unwrap();
        assert_eq!(c.node_key, "t:n");
        assert_eq!(c.cluster_key, "t:c");
        assert_eq!(c.identity, ident("t", "n", "c"));
        assert_eq!(c.meta, meta(1234));
        assert_eq!(c.handle, 70);
    }

    #[test]
    fn cluster_round_robin_across_nodes() {
        let t = Tracker::new(false);
        let mut id = 0;
        for _ in 0..2 {
            for node in ["a", "b", "c"] {
                id += 1;
                reg(&t, id, 0, &ident("", node, "C"));
            }
        }
        let nodes: Vec<_> = std::iter::from_fn(|| t.claim("C", 0).map(|c| c.node_key)).collect();
        assert_eq!(nodes, vec!["a", "b", "c", "a", "b", "c"]);
        assert!(t.claim("C", 0).is_none(), "known cluster, nothing idle");
        assert!(t.has_node_or_cluster("C"));
    }

    #[test]
    fn cluster_round_robin_skips_nodes_without_idle_tunnels() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "a", "C"));
        reg(&t, 2, 0, &ident("", "b", "C"));
        reg(&t, 3, 0, &ident("", "b", "C"));
        reg(&t, 4, 0, &ident("", "b", "C"));
        reg(&t, 5, 0, &ident("", "c", "C"));
        assert_eq!(t.idle_count_for("C"), 5);
        let nodes: Vec<_> = std::iter::from_fn(|| t.claim("C", 0).map(|c| c.node_key)).collect();
        assert_eq!(nodes, vec!["a", "b", "c", "b", "b"]);
        // "c" and "a" regain idle tunnels; "a" rejoins at its join position, so after the cursor
        // (last pick "b") comes "c", then the cursor wraps around to "a".
        reg(&t, 6, 0, &ident("", "c", "C"));
        reg(&t, 7, 0, &ident("", "a", "C"));
        let nodes: Vec<_> = std::iter::from_fn(|| t.claim("C", 0).map(|c| c.node_key)).collect();
        assert_eq!(nodes, vec!["c", "a"]);
        t.check_consistency().unwrap();
    }

    #[test]
    fn round_robin_does_not_starve_a_node_behind_an_empty_one() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "a", "C"));
        reg(&t, 2, 0, &ident("", "b", "C"));
        t.claim("a", 0).unwrap(); // "a" has no idle tunnel left but stays in the cluster
        reg(&t, 3, 0, &ident("", "b", "C"));
        reg(&t, 4, 0, &ident("", "c", "C"));
        let nodes: Vec<_> = std::iter::from_fn(|| t.claim("C", 0).map(|c| c.node_key)).collect();
        assert_eq!(nodes, vec!["b", "c", "b"]);
    }

    #[test]
    fn known_cluster_key_wins_over_a_node_key_of_the_same_name() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "x", "other")); // node named "x"
        reg(&t, 2, 0, &ident("", "n", "x")); // cluster named "x"
        assert_eq!(t.idle_count_for("x"), 1);
        assert_eq!(claim_id(&t, "x", 0), Some(2));
        assert_eq!(claim_id(&t, "x", 0), None, "cluster x is known, nothing idle in it");
        t.remove(2).unwrap();
        assert_eq!(claim_id(&t, "x", 0), Some(1), "cluster gone: node key again");
    }

    #[test]
    fn cluster_is_fixed_by_the_first_tunnel_and_conflicts_are_reported() {
        let t = Tracker::new(false);
        let r = reg(&t, 1, 0, &ident("", "n", "c1"));
        assert_eq!(r.cluster_conflict, None);
        assert!(r.node_new && r.cluster_new);
        let r = reg(&t, 2, 1, &ident("", "n", "c2"));
        assert_eq!(r.cluster_conflict.as_deref(), Some("c2"));
        assert_eq!(r.cluster_key, "c1");
        assert!(!r.node_new && !r.cluster_new);
        assert!(r.worker_new_node && r.worker_new_cluster);
        assert!(!t.has_node_or_cluster("c2"));
        assert_eq!(t.counts().clusters, 1);
        assert_eq!(t.idle_count_for("c1"), 2);
        let c = t.claim("c1", 1).unwrap();
        assert_eq!(c.tunnel, 2);
        assert_eq!(c.identity.cluster_id, "c1", "effective cluster in the stored identity");
        // Once the node has no tunnel left, the next first tunnel decides again.
        t.remove(1).unwrap();
        let gone = t.remove(2).unwrap();
        assert!(gone.node_gone && gone.cluster_gone);
        let r = reg(&t, 3, 0, &ident("", "n", "c2"));
        assert_eq!((r.cluster_conflict, r.cluster_key.as_str()), (None, "c2"));
    }

    #[test]
    fn keys_with_and_without_isolation() {
        let iso: Tracker<u64> = Tracker::new(true);
        let flat: Tracker<u64> = Tracker::new(false);
        let who = ident("t1", "n", "c");
        assert_eq!(iso.node_key(&who), "t1:n");
        assert_eq!(iso.cluster_key(&who), "t1:c");
        assert_eq!(flat.node_key(&who), "n");
        assert_eq!(flat.cluster_key(&who), "c");
        let no_tenant = ident("", "n", "c");
        assert_eq!(iso.node_key(&no_tenant), "n");
        assert_eq!(iso.cluster_key(&no_tenant), "c");
        let r = iso.register(1, 0, &who, meta(1), 1).unwrap();
        assert_eq!((r.node_key.as_str(), r.cluster_key.as_str()), ("t1:n", "t1:c"));
        assert!(!iso.has_node_or_cluster("n"));
        assert!(iso.has_node_or_cluster("t1:n") && iso.has_node_or_cluster("t1:c"));
    }

    #[test]
    fn tenants_with_identical_ids_never_cross() {
        let t = Tracker::new(true);
        reg(&t, 1, 0, &ident("A", "n", "c"));
        reg(&t, 2, 0, &ident("B", "n", "c"));
        reg(&t, 3, 0, &ident("B", "n", "c"));
        assert_eq!(t.counts(), Counts { idle: 3, in_use: 0, shareable: 0, nodes: 2, clusters: 2 });
        assert_eq!(t.connections_for_node("A:n"), 1);
        assert_eq!(t.connections_for_node("B:n"), 2);
        assert_eq!(claim_id(&t, "A:c", 0), Some(1));
        assert_eq!(claim_id(&t, "A:c", 0), None);
        assert_eq!(claim_id(&t, "A:n", 0), None);
        assert_eq!(claim_id(&t, "n", 0), None, "bare ids are not keys under isolation");
        assert_eq!(claim_id(&t, "c", 0), None);
        let c = t.claim("B:n", 0).unwrap();
        assert_eq!((c.tunnel, c.identity.tenant_id.as_str()), (2, "B"));
        // Without isolation the same identities share one node.
        let flat = Tracker::new(false);
        reg(&flat, 1, 0, &ident("A", "n", "c"));
        reg(&flat, 2, 0, &ident("B", "n", "c"));
        assert_eq!(flat.connections_for_node("n"), 2);
    }

    #[test]
    fn invalid_identities_are_refused_without_side_effects() {
        let t = Tracker::new(true);
        let e = t.register(1, 0, &ident("t", "", "c"), meta(1), 1);
        assert_eq!(e, Err(RegisterError::MissingId("node_id")));
        let e = t.register(1, 0, &ident("t", "n", ""), meta(1), 1);
        assert_eq!(e, Err(RegisterError::MissingId("cluster_id")));
        let e = t.register(1, 0, &ident("t:x", "n", "c"), meta(1), 1);
        assert_eq!(e, Err(RegisterError::Delimiter("tenant_id")));
        let e = t.register(1, 0, &ident("t", "a:n", "c"), meta(1), 1);
        assert_eq!(e, Err(RegisterError::Delimiter("node_id")));
        let e = t.register(1, 0, &ident("t", "n", "a:c"), meta(1), 1);
        assert_eq!(e, Err(RegisterError::Delimiter("cluster_id")));
        assert_eq!(t.internal_sizes(), [0; 4]);
        // Without isolation ':' is just a character.
        let flat = Tracker::new(false);
        assert!(flat.register(1, 0, &ident("t", "a:n", "c"), meta(1), 1).is_ok());
    }

    #[test]
    fn duplicate_register_is_refused_and_changes_nothing() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "n", "c"));
        let before = t.snapshot();
        let e = t.register(1, 1, &ident("", "m", "d"), meta(9), 99);
        assert_eq!(e, Err(RegisterError::Duplicate));
        assert_eq!(t.snapshot(), before);
        assert_eq!(t.counts(), Counts { idle: 1, in_use: 0, shareable: 0, nodes: 1, clusters: 1 });
        // Still a duplicate once in use.
        t.claim("n", 0).unwrap();
        assert_eq!(t.register(1, 0, &ident("", "n", "c"), meta(1), 1), Err(RegisterError::Duplicate));
        t.check_consistency().unwrap();
    }

    #[test]
    fn in_use_tunnels_count_for_the_node_but_are_never_claimed_again() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "n", "c"));
        assert_eq!(claim_id(&t, "n", 0), Some(1));
        assert_eq!(claim_id(&t, "n", 0), None);
        assert_eq!(claim_id(&t, "c", 0), None);
        assert_eq!(t.connections_for_node("n"), 1);
        assert!(t.has_node_or_cluster("n") && t.has_node_or_cluster("c"));
        assert_eq!(t.idle_count_for("n"), 0);
        assert_eq!(t.worker_counts(0), WorkerCounts { nodes: 1, clusters: 1, idle: 0, in_use: 1, shareable: 0 });
        let r = t.remove(1).unwrap();
        assert!(!r.was_idle && r.node_gone && r.cluster_gone);
        assert_eq!(t.connections_for_node("n"), 0);
        assert!(!t.has_node_or_cluster("n"));
    }

    #[test]
    fn removal_bookkeeping_and_gone_flags() {
        let t = Tracker::new(false);
        let r = reg(&t, 1, 0, &ident("", "a", "C"));
        assert!(r.worker_new_node && r.worker_new_cluster && r.node_new && r.cluster_new);
        let r = reg(&t, 2, 0, &ident("", "a", "C"));
        assert!(!r.worker_new_node && !r.worker_new_cluster && !r.node_new && !r.cluster_new);
        let r = reg(&t, 3, 1, &ident("", "a", "C"));
        assert!(r.worker_new_node && r.worker_new_cluster && !r.node_new);
        let r = reg(&t, 4, 0, &ident("", "b", "C"));
        assert!(r.worker_new_node && !r.worker_new_cluster && r.node_new && !r.cluster_new);
        assert_eq!(t.worker_counts(0), WorkerCounts { nodes: 2, clusters: 1, idle: 3, in_use: 0, shareable: 0 });
        assert_eq!(t.worker_counts(1), WorkerCounts { nodes: 1, clusters: 1, idle: 1, in_use: 0, shareable: 0 });
        assert_eq!(t.worker_counts(7), WorkerCounts::default());

        let r = t.remove(2).unwrap();
        assert_eq!((r.worker, r.was_idle), (0, true));
        assert_eq!((r.node_key.as_str(), r.cluster_key.as_str()), ("a", "C"));
        assert_eq!(r.meta, meta(2));
        assert!(!r.worker_node_gone && !r.worker_cluster_gone && !r.node_gone && !r.cluster_gone);

        let r = t.remove(3).unwrap();
        assert!(r.worker_node_gone && r.worker_cluster_gone && !r.node_gone && !r.cluster_gone);
        assert_eq!(t.worker_counts(1), WorkerCounts::default());

        let r = t.remove(1).unwrap();
        assert!(r.worker_node_gone && !r.worker_cluster_gone && r.node_gone && !r.cluster_gone);
        assert!(!t.has_node_or_cluster("a"));
        assert_eq!(t.idle_count_for("C"), 1);

        let claimed = t.claim("C", 0).unwrap();
        assert_eq!(claimed.tunnel, 4);
        let r = t.remove(4).unwrap();
        assert!(!r.was_idle);
        assert!(r.worker_node_gone && r.worker_cluster_gone && r.node_gone && r.cluster_gone);
        assert!(t.remove(4).is_none(), "second removal of the same id");
        assert!(t.remove(12345).is_none(), "unknown id");
        assert_eq!(t.counts(), Counts::default());
        assert_eq!(t.internal_sizes(), [0; 4]);
    }

    #[test]
    fn removing_an_idle_tunnel_takes_it_out_of_the_fifo() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        for id in 1..=4 {
            reg(&t, id, 0, &who);
        }
        t.remove(2).unwrap();
        t.remove(1).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| claim_id(&t, "n", 0)).collect();
        assert_eq!(got, vec![3, 4]);
    }

    #[test]
    fn unknown_targets() {
        let t: Tracker<u64> = Tracker::new(false);
        assert!(t.claim("nobody", 0).is_none());
        assert!(t.claim("", 0).is_none());
        assert_eq!(t.idle_count_for("nobody"), 0);
        assert_eq!(t.connections_for_node("nobody"), 0);
        assert!(!t.has_node_or_cluster(""));
    }

    #[test]
    fn snapshot_lists_every_tunnel_with_state() {
        let t = Tracker::new(true);
        reg(&t, 2, 1, &ident("t", "n", "c"));
        reg(&t, 1, 0, &ident("t", "n", "d")); // conflict: stays in cluster c
        t.claim("t:n", 1).unwrap();
        let rows = t.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tunnel, 1);
        assert_eq!(rows[0].state, TunnelState::Idle);
        assert_eq!(rows[0].identity, ident("t", "n", "c"));
        assert_eq!((rows[0].node_key.as_str(), rows[0].cluster_key.as_str()), ("t:n", "t:c"));
        assert_eq!(rows[0].meta, meta(1));
        assert_eq!((rows[1].tunnel, rows[1].worker, rows[1].state), (2, 1, TunnelState::InUse));
    }

    #[test]
    fn memory_returns_to_baseline_after_churn() {
        let t = Tracker::new(true);
        for id in 0..5_000u64 {
            let who = ident(&format!("t{}", id % 3), &format!("n{}", id % 700), &format!("c{}", id % 40));
            t.register(id, (id % 4) as u32, &who, meta(id), id).unwrap();
        }
        for id in (0..5_000u64).step_by(3) {
            t.claim(&format!("t{}:c{}", id % 3, id % 40), (id % 4) as u32);
        }
        t.check_consistency().unwrap();
        for id in 0..5_000u64 {
            assert!(t.remove(id).is_some());
        }
        assert_eq!(t.internal_sizes(), [0; 4]);
        assert_eq!(t.counts(), Counts::default());
        let st = t.state.lock();
        assert!(st.tunnels.capacity() <= 64 && st.nodes.capacity() <= 64 && st.clusters.capacity() <= 64);
    }

    #[test]
    fn concurrent_claims_never_hand_out_a_tunnel_twice() {
        let t = std::sync::Arc::new(Tracker::new(false));
        for id in 0..2_000u64 {
            t.register(id, (id % 4) as u32, &ident("", &format!("n{}", id % 5), "c"), meta(id), id)
                .unwrap();
        }
        let threads: Vec<_> = (0..4u32)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(c) = t.claim(if w % 2 == 0 { "c" } else { "n1" }, w) {
                        got.push(c.tunnel);
                        if got.len() % 7 == 0 {
                            t.remove(c.tunnel);
                        }
                    }
                    while let Some(c) = t.claim("c", w) {
                        got.push(c.tunnel);
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "a tunnel was claimed twice");
        assert_eq!(n, 2_000);
        t.check_consistency().unwrap();
    }

    // ---- shareable sessions ------------------------------------------------------------------

    /// Claim and return `(tunnel, shared, same_worker)`, checking the handle.
    fn claim3(t: &Tracker<u64>, target: &str, worker: WorkerId) -> Option<(TunnelId, bool, bool)> {
        let c = t.claim(target, worker)?;
        assert_eq!(c.handle, c.tunnel * 10, "handle travels with its tunnel");
        Some((c.tunnel, c.shared, c.same_worker))
    }

    #[test]
    fn claim_preference_order_with_two_workers() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        reg(&t, 1, 0, &who);
        reg(&t, 2, 1, &who);
        reg(&t, 3, 0, &who);
        reg(&t, 4, 1, &who);
        reg(&t, 5, 1, &who);
        // No session yet: (b) the own worker's oldest idle tunnel.
        assert_eq!(claim3(&t, "n", 1), Some((2, false, true)));
        assert!(t.set_shareable(2, true));
        // (a) own session beats own idle tunnels 4 and 5.
        assert_eq!(claim3(&t, "n", 1), Some((2, true, true)));
        // (b) own idle beats another worker's session.
        assert_eq!(claim3(&t, "n", 0), Some((1, false, true)));
        assert_eq!(claim3(&t, "n", 0), Some((3, false, true)));
        // (c) another worker's session beats another worker's idle tunnels 4 and 5.
        assert_eq!(claim3(&t, "n", 0), Some((2, true, false)));
        assert_eq!(claim3(&t, "n", 0), Some((2, true, false)));
        // (d) once the session stops sharing: another worker's oldest idle tunnel.
        assert!(t.set_shareable(2, false));
        assert_eq!(claim3(&t, "n", 0), Some((4, false, false)));
        // Two sessions on worker 0: (a) takes the oldest.
        assert!(t.set_shareable(3, true));
        assert!(t.set_shareable(1, true));
        assert_eq!(claim3(&t, "n", 0), Some((1, true, true)));
        // Worker 1 still has idle 5 (b), then falls to worker 0's oldest session (c).
        assert_eq!(claim3(&t, "n", 1), Some((5, false, true)));
        assert_eq!(claim3(&t, "n", 1), Some((1, true, false)));
        assert!(t.set_shareable(1, false));
        assert_eq!(claim3(&t, "n", 1), Some((3, true, false)));
        assert_eq!(t.counts(), Counts { idle: 0, in_use: 5, shareable: 1, nodes: 1, clusters: 1 });
        assert_eq!(t.worker_counts(0), WorkerCounts { nodes: 1, clusters: 1, idle: 0, in_use: 2, shareable: 1 });
        assert_eq!(t.worker_counts(1), WorkerCounts { nodes: 1, clusters: 1, idle: 0, in_use: 3, shareable: 0 });
        t.check_consistency().unwrap();
    }

    #[test]
    fn cross_worker_sessions_take_the_oldest() {
        let t = Tracker::new(false);
        let who = ident("", "n", "c");
        reg(&t, 7, 2, &who); // oldest, on worker 2
        reg(&t, 8, 1, &who);
        reg(&t, 9, 3, &who);
        for (id, w) in [(9, 3), (8, 1), (7, 2)] {
            assert_eq!(claim3(&t, "n", w), Some((id, false, true)));
            assert!(t.set_shareable(id, true));
        }
        assert_eq!(claim3(&t, "n", 0), Some((7, true, false)), "oldest registration, not lowest worker");
        assert!(t.set_shareable(7, false));
        assert_eq!(claim3(&t, "n", 0), Some((8, true, false)));
        assert!(t.set_shareable(8, false));
        assert_eq!(claim3(&t, "n", 0), Some((9, true, false)));
        assert!(t.set_shareable(9, false));
        assert_eq!(claim3(&t, "n", 0), None);
    }

    #[test]
    fn shared_claims_repeat_until_the_session_stops_sharing() {
        let t = Tracker::new(true);
        reg(&t, 1, 0, &ident("t", "n", "c"));
        assert!(!t.set_shareable(1, true), "an idle tunnel cannot be a session");
        assert!(!t.set_shareable(99, true), "unknown tunnel");
        assert_eq!(t.shareable_count_for("t:n"), 0);
        let first = t.claim("t:n", 0).unwrap();
        assert!(!first.shared);
        assert_eq!(claim_id(&t, "t:n", 0), None, "in use, not shareable yet");
        assert!(t.set_shareable(1, true));
        assert!(t.set_shareable(1, true), "idempotent");
        let counts = t.counts();
        assert_eq!(counts, Counts { idle: 0, in_use: 1, shareable: 1, nodes: 1, clusters: 1 });
        let rows = t.snapshot();
        for worker in [0, 1, 0, 2] {
            let c = t.claim("t:n", worker).unwrap();
            assert!(c.shared);
            assert_eq!((c.tunnel, c.handle, c.worker), (1, 10, 0));
            assert_eq!(c.same_worker, worker == 0);
            assert_eq!((c.node_key.as_str(), c.cluster_key.as_str()), ("t:n", "t:c"));
            assert_eq!((&c.identity, &c.meta), (&first.identity, &first.meta));
            let via_cluster = t.claim("t:c", worker).unwrap();
            assert_eq!((via_cluster.tunnel, via_cluster.shared), (1, true));
        }
        assert_eq!(t.counts(), counts, "shared claims change no count");
        assert_eq!(t.snapshot(), rows, "shared claims change no state");
        assert_eq!((t.idle_count_for("t:n"), t.shareable_count_for("t:n")), (0, 1));
        assert_eq!((t.idle_count_for("t:c"), t.shareable_count_for("t:c")), (0, 1));
        assert!(t.set_shareable(1, false));
        assert!(t.set_shareable(1, false), "idempotent");
        assert!(t.claim("t:n", 0).is_none());
        assert!(t.claim("t:c", 0).is_none());
        assert_eq!(t.shareable_count_for("t:c"), 0);
        assert_eq!(t.counts(), Counts { idle: 0, in_use: 1, shareable: 0, nodes: 1, clusters: 1 });
        // A new idle tunnel is claimed fresh and is not shareable until marked.
        reg(&t, 2, 0, &ident("t", "n", "c"));
        assert_eq!(claim3(&t, "t:n", 0), Some((2, false, true)));
        assert_eq!(claim3(&t, "t:n", 0), None);
        t.check_consistency().unwrap();
    }

    #[test]
    fn cluster_round_robin_includes_nodes_with_only_sessions() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "a", "C"));
        reg(&t, 2, 0, &ident("", "b", "C"));
        reg(&t, 3, 0, &ident("", "b", "C"));
        reg(&t, 4, 0, &ident("", "c", "C"));
        assert_eq!(claim_id(&t, "a", 0), Some(1));
        assert_eq!(claim_id(&t, "c", 0), Some(4));
        assert!(t.set_shareable(1, true)); // "a": a session only; "c": in use, not shareable
        assert_eq!((t.idle_count_for("C"), t.shareable_count_for("C")), (2, 1));
        let got: Vec<_> = (0..6).map(|_| claim3(&t, "C", 0)).collect();
        let want = [(1, true), (2, false), (1, true), (3, false), (1, true), (1, true)];
        assert_eq!(got, want.iter().map(|&(id, s)| Some((id, s, true))).collect::<Vec<_>>());
        // "c" becomes a session: it joins the rotation at its join position (after "a").
        assert!(t.set_shareable(4, true));
        let nodes: Vec<_> = (0..4).map(|_| t.claim("C", 0).map(|c| c.node_key)).collect();
        let want = ["c", "a", "c", "a"].map(|n| Some(n.to_string()));
        assert_eq!(nodes, want);
        // Neither node shares any more: a known cluster with nothing to offer.
        assert!(t.set_shareable(1, false) && t.set_shareable(4, false));
        assert!(t.claim("C", 0).is_none());
        assert!(t.has_node_or_cluster("C"));
        t.check_consistency().unwrap();
    }

    #[test]
    fn remove_clears_sharing() {
        let t = Tracker::new(false);
        reg(&t, 1, 0, &ident("", "a", "C"));
        reg(&t, 2, 1, &ident("", "a", "C"));
        reg(&t, 3, 0, &ident("", "b", "C"));
        assert_eq!(claim_id(&t, "a", 0), Some(1));
        assert_eq!(claim_id(&t, "a", 0), Some(2));
        assert_eq!(claim_id(&t, "b", 0), Some(3));
        assert!(t.set_shareable(1, true) && t.set_shareable(3, true));
        assert_eq!(t.shareable_count_for("C"), 2);
        let r = t.remove(1).unwrap();
        assert!(!r.was_idle && !r.node_gone && r.worker_node_gone, "a's only tunnel on worker 0");
        assert!(!t.set_shareable(1, true), "removed");
        assert_eq!(t.shareable_count_for("a"), 0);
        assert_eq!(t.shareable_count_for("C"), 1);
        assert_eq!(claim_id(&t, "a", 1), None, "node a left the rotation: tunnel 2 is not shareable");
        for _ in 0..3 {
            assert_eq!(claim3(&t, "C", 0), Some((3, true, true)));
        }
        assert_eq!(t.counts(), Counts { idle: 0, in_use: 2, shareable: 1, nodes: 2, clusters: 1 });
        let r = t.remove(3).unwrap();
        assert!(!r.was_idle && r.node_gone && !r.cluster_gone);
        assert!(t.claim("C", 0).is_none());
        assert_eq!(t.worker_counts(0), WorkerCounts::default());
        t.check_consistency().unwrap();
        let r = t.remove(2).unwrap();
        assert!(r.node_gone && r.cluster_gone);
        assert_eq!(t.counts(), Counts::default());
        assert_eq!(t.internal_sizes(), [0; 4]);
    }

    #[test]
    fn shared_claims_never_cross_tenants() {
        let t = Tracker::new(true);
        reg(&t, 1, 0, &ident("A", "n", "c"));
        reg(&t, 2, 0, &ident("B", "n", "c"));
        assert_eq!(claim_id(&t, "A:n", 0), Some(1));
        assert_eq!(claim_id(&t, "B:n", 0), Some(2));
        assert!(t.set_shareable(1, true));
        assert_eq!(t.shareable_count_for("B:n") + t.shareable_count_for("B:c"), 0);
        assert_eq!(claim_id(&t, "B:n", 0), None);
        assert_eq!(claim_id(&t, "B:c", 1), None);
        assert_eq!(claim_id(&t, "n", 0), None, "bare ids are not keys under isolation");
        let c = t.claim("A:c", 1).unwrap();
        assert_eq!((c.tunnel, c.shared, c.identity.tenant_id.as_str()), (1, true, "A"));
    }

    #[test]
    fn concurrent_claims_with_sessions_never_hand_out_an_idle_tunnel_twice() {
        let t = std::sync::Arc::new(Tracker::new(false));
        for id in 0..1_000u64 {
            t.register(id, (id % 4) as u32, &ident("", &format!("n{}", id % 3), "c"), meta(id), id)
                .unwrap();
        }
        let threads: Vec<_> = (0..4u32)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let (mut fresh, mut shared) = (Vec::new(), 0usize);
                    for round in 0..600u32 {
                        let Some(c) = t.claim(if round % 2 == 0 { "c" } else { "n1" }, w) else {
                            continue;
                        };
                        if c.shared {
                            shared += 1;
                            if round % 5 == 0 {
                                t.set_shareable(c.tunnel, false);
                            }
                        } else {
                            fresh.push(c.tunnel);
                            if round % 3 == 0 {
                                assert!(t.set_shareable(c.tunnel, true));
                            }
                        }
                    }
                    (fresh, shared)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut shared = 0;
        for h in threads {
            let (f, s) = h.join().unwrap();
            all.extend(f);
            shared += s;
        }
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "an idle tunnel was claimed twice");
        assert!(shared > 0, "sessions were shared");
        assert_eq!(t.counts().in_use, n);
        t.check_consistency().unwrap();
    }

    // ---- property test against a naive model -------------------------------------------------

    const TENANTS: [&str; 2] = ["ta", "tb"];
    const NODES: [&str; 3] = ["n0", "n1", "c0"]; // "c0" also names a cluster
    const CLUSTERS: [&str; 2] = ["c0", "c1"];

    #[derive(Clone, Debug)]
    enum Op {
        Register { worker: u32, tenant: usize, node: usize, cluster: usize },
        Duplicate { pick: usize },
        Claim { worker: u32, tenant: usize, cluster_target: bool, idx: usize },
        SetShareable { pick: usize, on: bool },
        Remove { pick: usize },
        RemoveUnknown,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u32, 0..2usize, 0..3usize, 0..2usize)
                .prop_map(|(worker, tenant, node, cluster)| Op::Register { worker, tenant, node, cluster }),
            1 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
            4 => (0..3u32, 0..2usize, any::<bool>(), 0..3usize)
                .prop_map(|(worker, tenant, cluster_target, idx)| Op::Claim { worker, tenant, cluster_target, idx }),
            2 => (any::<usize>(), prop_oneof![3 => Just(true), 1 => Just(false)])
                .prop_map(|(pick, on)| Op::SetShareable { pick, on }),
            2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            1 => Just(Op::RemoveUnknown),
        ]
    }

    #[derive(Clone, Debug)]
    struct MTunnel {
        id: TunnelId,
        worker: WorkerId,
        tenant: String,
        node_key: String,
        cluster_key: String,
        idle: bool,
        shareable: bool,
        seq: u64,
    }

    /// Model of a cluster's round-robin: members `(join ordinal, node key)` in join order, the next
    /// ordinal and the ordinal of the last pick.
    #[derive(Default, Debug)]
    struct MCluster {
        members: Vec<(u64, String)>,
        next: u64,
        cursor: Option<u64>,
    }

    fn model_counts(m: &[MTunnel]) -> Counts {
        use std::collections::HashSet;
        Counts {
            idle: m.iter().filter(|t| t.idle).count(),
            in_use: m.iter().filter(|t| !t.idle).count(),
            shareable: m.iter().filter(|t| t.shareable).count(),
            nodes: m.iter().map(|t| &t.node_key).collect::<HashSet<_>>().len(),
            clusters: m.iter().map(|t| &t.cluster_key).collect::<HashSet<_>>().len(),
        }
    }

    fn model_worker(m: &[MTunnel], w: WorkerId) -> WorkerCounts {
        let mine: Vec<_> = m.iter().filter(|t| t.worker == w).cloned().collect();
        let c = model_counts(&mine);
        WorkerCounts { nodes: c.nodes, clusters: c.clusters, idle: c.idle, in_use: c.in_use, shareable: c.shareable }
    }

    /// Tunnels a claim of `target` reaches (idle or shareable), resolving a cluster key first.
    fn model_reach<'a>(m: &'a [MTunnel], target: &str) -> Vec<&'a MTunnel> {
        let is_cluster = m.iter().any(|x| x.cluster_key == target);
        m.iter()
            .filter(|x| if is_cluster { x.cluster_key == target } else { x.node_key == target })
            .filter(|x| x.idle || x.shareable)
            .collect()
    }

    fn run_model(isolation: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let t: Tracker<u64> = Tracker::new(isolation);
        let mut model: Vec<MTunnel> = Vec::new();
        let mut clusters: HashMap<String, MCluster> = HashMap::new();
        let mut claimed_ever = std::collections::HashSet::new();
        let mut next_id: TunnelId = 100;
        let mut seq = 0u64;
        let key = |tenant: &str, id: &str| compose_key(isolation, tenant, id);

        for op in ops {
            match op {
                Op::Register { worker, tenant, node, cluster } => {
                    let who = ident(TENANTS[tenant], NODES[node], CLUSTERS[cluster]);
                    let nk = key(&who.tenant_id, &who.node_id);
                    let asked = key(&who.tenant_id, &who.cluster_id);
                    let existing = model.iter().find(|m| m.node_key == nk).map(|m| m.cluster_key.clone());
                    let effective = existing.clone().unwrap_or(asked.clone());
                    let id = next_id;
                    next_id += 1;
                    let r = t.register(id, worker, &who, meta(id), id * 10).map_err(|e| {
                        TestCaseError::fail(format!("register failed: {e}"))
                    })?;
                    prop_assert_eq!(&r.node_key, &nk);
                    prop_assert_eq!(&r.cluster_key, &effective);
                    let conflict = existing.is_some_and(|c| c != asked);
                    prop_assert_eq!(r.cluster_conflict.is_some(), conflict);
                    prop_assert_eq!(r.node_new, !model.iter().any(|m| m.node_key == nk));
                    prop_assert_eq!(r.cluster_new, !model.iter().any(|m| m.cluster_key == effective));
                    prop_assert_eq!(
                        r.worker_new_node,
                        !model.iter().any(|m| m.node_key == nk && m.worker == worker)
                    );
                    prop_assert_eq!(
                        r.worker_new_cluster,
                        !model.iter().any(|m| m.cluster_key == effective && m.worker == worker)
                    );
                    if r.node_new {
                        let mc = clusters.entry(effective.clone()).or_default();
                        mc.members.push((mc.next, nk.clone()));
                        mc.next += 1;
                    }
                    model.push(MTunnel {
                        id,
                        worker,
                        tenant: who.tenant_id.clone(),
                        node_key: nk,
                        cluster_key: effective,
                        idle: true,
                        shareable: false,
                        seq,
                    });
                    seq += 1;
                }
                Op::Duplicate { pick } => {
                    if !model.is_empty() {
                        let id = model[pick % model.len()].id;
                        let e = t.register(id, 0, &ident("ta", "n0", "c0"), meta(id), 0);
                        prop_assert_eq!(e, Err(RegisterError::Duplicate));
                    }
                }
                Op::Claim { worker, tenant, cluster_target, idx } => {
                    let bare = if cluster_target { CLUSTERS[idx % 2] } else { NODES[idx] };
                    let target = key(TENANTS[tenant], bare);
                    let reachable = model_reach(&model, &target);
                    // The node the claim must resolve to.
                    let node: Option<String> = match clusters.get_mut(&target) {
                        Some(mc) => {
                            let ready: Vec<&(u64, String)> = mc
                                .members
                                .iter()
                                .filter(|(_, nk)| reachable.iter().any(|r| &r.node_key == nk))
                                .collect();
                            let after = mc.cursor.and_then(|c| ready.iter().find(|(o, _)| *o > c));
                            let picked = after.or(ready.first()).map(|(o, nk)| (*o, nk.clone()));
                            if let Some((o, _)) = picked {
                                mc.cursor = Some(o);
                            }
                            picked.map(|(_, nk)| nk)
                        }
                        None => Some(target.clone()),
                    };
                    // Within the node: (a) own session, (b) own idle, (c) any session, (d) any idle;
                    // each time the oldest by registration.
                    let expect = node.and_then(|nk| {
                        let of_node: Vec<&MTunnel> = reachable.iter().copied().filter(|x| x.node_key == nk).collect();
                        let oldest = |f: &dyn Fn(&MTunnel) -> bool| {
                            of_node.iter().filter(|x| f(x)).min_by_key(|x| x.seq).map(|x| x.id)
                        };
                        oldest(&|x| x.worker == worker && x.shareable)
                            .or_else(|| oldest(&|x| x.worker == worker && x.idle))
                            .or_else(|| oldest(&|x| x.shareable))
                            .or_else(|| oldest(&|x| x.idle))
                    });
                    let got = t.claim(&target, worker);
                    prop_assert_eq!(got.as_ref().map(|c| c.tunnel), expect, "claim of {}", &target);
                    if let Some(c) = got {
                        prop_assert_eq!(c.handle, c.tunnel * 10);
                        let Some(pos) = model.iter().position(|m| m.id == c.tunnel) else {
                            return Err(TestCaseError::fail("claimed an unknown tunnel"));
                        };
                        let m = model[pos].clone();
                        if isolation {
                            prop_assert_eq!(&m.tenant, TENANTS[tenant]);
                            prop_assert_eq!(&c.identity.tenant_id, TENANTS[tenant]);
                        }
                        prop_assert_eq!(&c.node_key, &m.node_key);
                        prop_assert_eq!(&c.cluster_key, &m.cluster_key);
                        prop_assert_eq!(c.worker, m.worker);
                        prop_assert_eq!(c.same_worker, m.worker == worker);
                        prop_assert_eq!(c.shared, m.shareable);
                        if c.shared {
                            prop_assert!(!m.idle, "a shared claim returned an idle tunnel");
                        } else {
                            prop_assert!(m.idle, "a fresh claim returned a tunnel in use");
                            prop_assert!(claimed_ever.insert(c.tunnel), "tunnel {} claimed twice", c.tunnel);
                            model[pos].idle = false;
                        }
                    }
                }
                Op::SetShareable { pick, on } => {
                    if model.is_empty() {
                        prop_assert!(!t.set_shareable(1, on));
                    } else {
                        let i = pick % model.len();
                        let m = &mut model[i];
                        prop_assert_eq!(t.set_shareable(m.id, on), !m.idle);
                        if !m.idle {
                            m.shareable = on;
                        }
                    }
                }
                Op::Remove { pick } => {
                    if !model.is_empty() {
                        let m = model.remove(pick % model.len());
                        let r = t.remove(m.id);
                        let Some(r) = r else {
                            return Err(TestCaseError::fail("remove of a live tunnel failed"));
                        };
                        prop_assert_eq!(r.was_idle, m.idle);
                        prop_assert_eq!(r.worker, m.worker);
                        prop_assert_eq!(&r.node_key, &m.node_key);
                        prop_assert_eq!(&r.cluster_key, &m.cluster_key);
                        prop_assert_eq!(r.node_gone, !model.iter().any(|x| x.node_key == m.node_key));
                        prop_assert_eq!(r.cluster_gone, !model.iter().any(|x| x.cluster_key == m.cluster_key));
                        prop_assert_eq!(
                            r.worker_node_gone,
                            !model.iter().any(|x| x.node_key == m.node_key && x.worker == m.worker)
                        );
                        prop_assert_eq!(
                            r.worker_cluster_gone,
                            !model.iter().any(|x| x.cluster_key == m.cluster_key && x.worker == m.worker)
                        );
                        prop_assert!(!t.set_shareable(m.id, true), "removed tunnel still known");
                        if r.node_gone {
                            if let Some(mc) = clusters.get_mut(&m.cluster_key) {
                                mc.members.retain(|(_, nk)| *nk != m.node_key);
                            }
                        }
                        if r.cluster_gone {
                            clusters.remove(&m.cluster_key);
                        }
                    }
                }
                Op::RemoveUnknown => prop_assert!(t.remove(1).is_none()),
            }

            // Invariants after every step.
            prop_assert_eq!(t.counts(), model_counts(&model));
            for w in 0..3 {
                prop_assert_eq!(t.worker_counts(w), model_worker(&model, w));
            }
            for tenant in TENANTS {
                for node in NODES {
                    let nk = key(tenant, node);
                    let n = model.iter().filter(|m| m.node_key == nk).count();
                    prop_assert_eq!(t.connections_for_node(&nk), n);
                }
                for id in NODES.iter().chain(CLUSTERS.iter()) {
                    let k = key(tenant, id);
                    let known = model.iter().any(|m| m.node_key == k || m.cluster_key == k);
                    prop_assert_eq!(t.has_node_or_cluster(&k), known);
                    let reach = model_reach(&model, &k);
                    prop_assert_eq!(t.idle_count_for(&k), reach.iter().filter(|m| m.idle).count());
                    prop_assert_eq!(t.shareable_count_for(&k), reach.iter().filter(|m| m.shareable).count());
                }
            }
            if let Err(e) = t.check_consistency() {
                return Err(TestCaseError::fail(e));
            }
        }

        for m in model.drain(..) {
            prop_assert!(t.remove(m.id).is_some());
        }
        prop_assert_eq!(t.counts(), Counts::default());
        prop_assert_eq!(t.internal_sizes(), [0; 4]);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn random_sequences_match_the_model(
            isolation in prop_oneof![3 => Just(true), 1 => Just(false)],
            ops in prop::collection::vec(op_strategy(), 0..60),
        ) {
            run_model(isolation, ops)?;
        }
    }
}
