//! Test-only introspection: internal sizes and a full consistency check of the tracker's maps.

use super::*;

impl<H: Clone + Send> Tracker<H> {
    /// Number of entries in every internal map (tunnels, nodes, clusters, workers).
    pub(super) fn internal_sizes(&self) -> [usize; 4] {
        let st = self.state.lock();
        [st.tunnels.len(), st.nodes.len(), st.clusters.len(), st.workers.len()]
    }

    /// Recompute every derived structure from the tunnel table and compare.
    pub(super) fn check_consistency(&self) -> Result<(), String> {
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
