//! Removal: a tunnel leaves the tracker (closed, or drained while idle).

use super::*;

impl<H: Clone + Send> Tracker<H> {
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
            let gone = Leaving::of(&entry);
            let node = st.leave_node(&entry.node_key, &gone);
            let (worker_cluster_gone, cluster_gone) = st.leave_cluster(&entry.cluster_key, &gone, &node);
            st.leave_counts(&gone, node.worker_node_gone, worker_cluster_gone);
            let removed = Removed {
                worker: gone.worker,
                was_idle: gone.was_idle,
                node_key: entry.node_key.to_string(),
                cluster_key: entry.cluster_key.to_string(),
                identity: entry.identity.clone(),
                meta: entry.meta.clone(),
                worker_node_gone: node.worker_node_gone,
                worker_cluster_gone,
                node_gone: node.node_gone,
                cluster_gone,
            };
            (removed, entry)
        };
        // The handle is dropped after the lock is released.
        drop(entry);
        Some(removed)
    }
}

/// What a leaving tunnel was, for the bookkeeping of the maps it leaves.
struct Leaving {
    worker: WorkerId,
    seq: u64,
    was_idle: bool,
    was_shareable: bool,
}

impl Leaving {
    fn of<H>(entry: &TunnelEntry<H>) -> Leaving {
        Leaving {
            worker: entry.worker,
            seq: entry.seq,
            was_idle: entry.state == TunnelState::Idle,
            was_shareable: entry.shareable,
        }
    }
}

/// What leaving its node did.
#[derive(Default)]
struct NodeLeft {
    /// The node's join ordinal in its cluster (None if the node was unknown).
    ordinal: Option<u64>,
    /// The node has no tunnel left on the tunnel's worker.
    worker_node_gone: bool,
    /// The node has no tunnel left at all (it was removed).
    node_gone: bool,
    /// The node was ready (idle tunnel or shareable session) and no longer is.
    left_ready: bool,
}

impl<H> State<H> {
    /// Takes the tunnel out of its node (per-worker slot, counts); removes an empty node.
    fn leave_node(&mut self, node_key: &str, t: &Leaving) -> NodeLeft {
        let mut left = NodeLeft::default();
        if let Some(node) = self.nodes.get_mut(node_key) {
            left.ordinal = Some(node.ordinal);
            if let Some(i) = node.slots.iter().position(|s| s.worker == t.worker) {
                let mut empty = false;
                if let Some(slot) = node.slots.get_mut(i) {
                    if t.was_idle {
                        slot.idle.remove(&t.seq);
                    }
                    if t.was_shareable {
                        slot.shared.remove(&t.seq);
                    }
                    slot.total = slot.total.saturating_sub(1);
                    empty = slot.total == 0;
                }
                if empty {
                    node.slots.swap_remove(i);
                    left.worker_node_gone = true;
                }
            }
            node.total = node.total.saturating_sub(1);
            if t.was_idle {
                node.idle = node.idle.saturating_sub(1);
            }
            if t.was_shareable {
                node.shareable = node.shareable.saturating_sub(1);
            }
            left.left_ready = (t.was_idle || t.was_shareable) && !node.is_ready();
            left.node_gone = node.total == 0;
        }
        if left.node_gone {
            self.nodes.remove(node_key);
            relax(&mut self.nodes);
        }
        left
    }

    /// Takes the tunnel (and its node, if it left) out of its cluster; removes an empty cluster.
    /// Returns (the cluster has no tunnel left on the worker, the cluster is gone).
    fn leave_cluster(&mut self, cluster_key: &str, t: &Leaving, node: &NodeLeft) -> (bool, bool) {
        let mut worker_cluster_gone = false;
        let mut cluster_gone = false;
        if let Some(cluster) = self.clusters.get_mut(cluster_key) {
            if t.was_idle {
                cluster.idle = cluster.idle.saturating_sub(1);
            }
            if t.was_shareable {
                cluster.shareable = cluster.shareable.saturating_sub(1);
            }
            if node.left_ready || node.node_gone {
                if let Some(o) = node.ordinal {
                    cluster.ready.remove(&o);
                }
            }
            if node.node_gone {
                cluster.nodes = cluster.nodes.saturating_sub(1);
            }
            if let Some(i) = cluster.per_worker.iter().position(|(w, _)| *w == t.worker) {
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
            self.clusters.remove(cluster_key);
            relax(&mut self.clusters);
        }
        (worker_cluster_gone, cluster_gone)
    }

    /// Updates the per-worker and global counts; drops a worker with nothing left.
    fn leave_counts(&mut self, t: &Leaving, worker_node_gone: bool, worker_cluster_gone: bool) {
        let mut drop_worker = false;
        if let Some(stats) = self.workers.get_mut(&t.worker) {
            if t.was_idle {
                stats.idle = stats.idle.saturating_sub(1);
            } else {
                stats.in_use = stats.in_use.saturating_sub(1);
            }
            if t.was_shareable {
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
            self.workers.remove(&t.worker);
        }
        if t.was_idle {
            self.idle = self.idle.saturating_sub(1);
        } else {
            self.in_use = self.in_use.saturating_sub(1);
        }
        if t.was_shareable {
            self.shareable = self.shareable.saturating_sub(1);
        }
    }
}
