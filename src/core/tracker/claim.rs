//! Claims: which idle tunnel or shareable session an egress connection gets, and marking
//! sessions shareable.

use super::*;

impl<H: Clone + Send> Tracker<H> {
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
    /// (d) the oldest idle tunnel on any other worker. In (c) and (d), Envoy's workers come
    /// before socket loops.
    ///
    /// `None` when nothing is reachable. O(log n) + O(#workers holding the node).
    pub fn claim(&self, target: &str, worker: WorkerId) -> Option<Claimed<H>> {
        let mut guard = self.state.lock();
        Self::claim_locked(&mut guard, target, worker)
    }

    /// [`claim`](Tracker::claim) for a caller that turns an idle tunnel into a shareable HTTP/2
    /// session at once (the HTTP request path): an idle tunnel it takes is marked shareable in
    /// the same step, so a claim of the same node from another worker a moment later attaches to
    /// it instead of finding nothing while the session starts.
    pub fn claim_session(&self, target: &str, worker: WorkerId) -> Option<Claimed<H>> {
        let mut guard = self.state.lock();
        let claimed = Self::claim_locked(&mut guard, target, worker)?;
        if !claimed.shared {
            Self::set_shareable_locked(&mut guard, claimed.tunnel, true);
        }
        Some(claimed)
    }

    /// Whether a [`claim`](Tracker::claim) of `target` (a node or cluster key) would get a tunnel
    /// now: an idle tunnel or a shareable session exists. Changes nothing (no round-robin step).
    /// O(1).
    pub fn can_claim(&self, target: &str) -> bool {
        let st = self.state.lock();
        match st.clusters.get(target) {
            Some(cluster) => !cluster.ready.is_empty(),
            None => st.nodes.get(target).is_some_and(|n| n.is_ready()),
        }
    }

    fn claim_locked(st: &mut State<H>, target: &str, worker: WorkerId) -> Option<Claimed<H>> {

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
        // The own slot (if any) has neither, so the minimum over all slots is over the others:
        // Envoy's workers before socket loops (a loop's tunnels are a node's spares,
        // docs/architecture.md#spare-tunnels), then the oldest.
        let on_loop = |s: &WorkerSlot| s.worker >= SOCKET_LOOP_BASE;
        if node.shareable > 0 {
            let oldest = node.slots.iter().filter_map(|s| s.shared.first_key_value().map(|(seq, t)| ((on_loop(s), *seq), *t))).min();
            if let Some((_, tunnel)) = oldest {
                return Some(Pick::Shared(tunnel));
            }
        }
        node.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.idle.keys().next().map(|seq| ((on_loop(s), *seq), i)))
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
        Self::set_shareable_locked(&mut guard, tunnel, shareable)
    }

    fn set_shareable_locked(st: &mut State<H>, tunnel: TunnelId, shareable: bool) -> bool {
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
}
