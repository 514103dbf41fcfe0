//! Unit, concurrency and model-based property tests of the tracker.

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
fn claim_session_makes_the_idle_tunnel_shareable_in_the_same_step() {
    let t = Tracker::new(false);
    let who = ident("", "n", "c");
    reg(&t, 1, 0, &who);
    let first = t.claim_session("n", 1).expect("idle tunnel");
    assert!(!first.shared);
    // Another worker, right after: it attaches to the same tunnel (no idle one is left).
    let second = t.claim_session("n", 0).expect("shared session");
    assert!(second.shared);
    assert_eq!(second.tunnel, 1);
    // By cluster id too.
    assert_eq!(t.claim("c", 1).map(|c| (c.tunnel, c.shared)), Some((1, true)));
    // A plain claim of an idle tunnel leaves it unshareable until set_shareable.
    reg(&t, 2, 0, &ident("", "m", "d"));
    assert!(!t.claim("m", 0).expect("idle").shared);
    assert!(t.claim("m", 1).is_none());
}

#[test]
fn can_claim_tells_whether_a_claim_would_succeed_without_changing_anything() {
    let t = Tracker::new(false);
    assert!(!t.can_claim("n") && !t.can_claim("c"), "unknown keys");
    reg(&t, 1, 0, &ident("", "n", "c"));
    reg(&t, 2, 0, &ident("", "o", "c"));
    assert!(t.can_claim("n") && t.can_claim("c"));
    // Asking does not step the cluster's round-robin.
    assert!(t.can_claim("c"));
    assert_eq!(claim_id(&t, "c", 0), Some(1));
    assert!(!t.can_claim("n"), "its only tunnel is in use and not shareable");
    assert!(t.can_claim("c"), "the cluster still has node o");
    t.set_shareable(1, true);
    assert!(t.can_claim("n"), "a shareable session can be joined");
    assert_eq!(claim_id(&t, "o", 0), Some(2));
    t.set_shareable(1, false);
    assert!(!t.can_claim("n") && !t.can_claim("c"));
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
fn other_envoy_workers_come_before_socket_loops() {
    let t = Tracker::new(false);
    let who = ident("", "n", "c");
    let lp = SOCKET_LOOP_BASE;
    reg(&t, 1, lp, &who); // a spare, older than everything else
    reg(&t, 2, 1, &who);
    reg(&t, 3, lp + 1, &who);
    // (d): worker 1's idle tunnel before the older one on a socket loop.
    assert_eq!(claim3(&t, "n", 0), Some((2, false, false)));
    // (c): worker 1's session before the loop's.
    assert!(t.set_shareable(2, true));
    assert_eq!(claim3(&t, "n", lp), Some((1, false, true)), "a loop's own tunnel is its (b)");
    assert!(t.set_shareable(1, true));
    assert_eq!(claim3(&t, "n", 0), Some((2, true, false)));
    // Only loops are left: the oldest of them.
    assert!(t.set_shareable(2, false));
    assert_eq!(claim3(&t, "n", 0), Some((1, true, false)));
    assert!(t.set_shareable(1, false));
    assert_eq!(claim3(&t, "n", 0), Some((3, false, false)));
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

mod model;
