//! Registration: a tunnel admitted by the handshake filter joins its node's idle FIFO.

use super::*;

impl<H: Clone + Send> Tracker<H> {
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
        self.check_identity(id)?;
        let node_key = self.node_key(id);
        let asked_cluster_key = self.cluster_key(id);

        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.tunnels.contains_key(&tunnel) {
            return Err(RegisterError::Duplicate);
        }
        let seq = st.next_seq;
        st.next_seq = st.next_seq.wrapping_add(1);

        let (node_new, cluster_new) = st.ensure_node(&node_key, &asked_cluster_key, &id.cluster_id);
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

    /// Refuses an identity the tracker cannot key (nothing changes): an empty node or cluster
    /// id, or under tenant isolation an id with the key delimiter.
    fn check_identity(&self, id: &Identity) -> Result<(), RegisterError> {
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
        Ok(())
    }
}

impl<H> State<H> {
    /// Makes sure node `node_key` exists; a new node joins cluster `asked_cluster_key` (created
    /// if needed) with bare cluster id `cluster_id`. Returns (node is new, cluster is new).
    fn ensure_node(&mut self, node_key: &str, asked_cluster_key: &str, cluster_id: &str) -> (bool, bool) {
        if self.nodes.contains_key(node_key) {
            return (false, false);
        }
        let cluster_arc: Arc<str> = match self.clusters.get_key_value(asked_cluster_key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(asked_cluster_key),
        };
        let cluster = self.clusters.entry(cluster_arc.clone()).or_insert_with(ClusterEntry::new);
        let cluster_new = cluster.nodes == 0;
        let ordinal = cluster.next_ordinal;
        cluster.next_ordinal = cluster.next_ordinal.wrapping_add(1);
        cluster.nodes += 1;
        let key: Arc<str> = Arc::from(node_key);
        self.nodes.insert(
            key.clone(),
            NodeEntry {
                key,
                cluster_key: cluster_arc,
                cluster_id: cluster_id.to_string(),
                ordinal,
                total: 0,
                idle: 0,
                shareable: 0,
                slots: Vec::new(),
            },
        );
        (true, cluster_new)
    }
}
