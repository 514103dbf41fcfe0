//! Property test: random sequences of registrations, claims, shared claims and removals over
//! several workers and tenants, checked against a naive model after every step.

use super::*;

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
