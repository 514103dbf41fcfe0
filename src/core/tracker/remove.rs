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
}
