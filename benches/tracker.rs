//! Micro-benchmark of the tunnel tracker (`cargo bench --bench tracker`; not part of `make test`).
//!
//! For pools of 10, 1,000, 10,000 and 100,000 idle tunnels in
//! `reverse_tunnel::core::tracker::Tracker<u64>` (one tunnel per node, nodes spread over 2
//! workers), measures in nanoseconds per operation:
//! - `register`: filling the pool (N registrations);
//! - `claim+release`: claim a random node's tunnel, then remove it (the tunnel's close);
//! - `re-register`: registering a fresh tunnel for that node (keeps the pool at N);
//! - `remove`: removing all N idle tunnels at the end.
//!
//! Self-timed with `std::time::Instant` over batches (no timer call per operation), with
//! `std::hint::black_box` on inputs and results. Pseudo-random node choice by xorshift64 with a
//! fixed seed, so runs are comparable.

use std::hint::black_box;
use std::time::{Duration, Instant};

use reverse_tunnel::core::tracker::{Identity, Tracker, TunnelMeta};

/// Claim+release operations measured per pool size.
const OPS: usize = 200_000;
/// Operations per timed batch.
const BATCH: usize = 1_000;

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn ns_per(d: Duration, ops: usize) -> f64 {
    d.as_nanos() as f64 / ops.max(1) as f64
}

struct Row {
    n: usize,
    register: f64,
    claim_release: f64,
    reregister: f64,
    remove: f64,
}

fn run(n: usize) -> Row {
    let tracker: Tracker<u64> = Tracker::new(false);
    let ids: Vec<Identity> = (0..n)
        .map(|k| Identity {
            node_id: format!("node-{k}"),
            cluster_id: format!("cluster-{}", k % 100),
            tenant_id: "tenant-a".to_string(),
        })
        .collect();
    // Which tunnel id node k currently has.
    let mut current: Vec<u64> = (0..n as u64).collect();
    let mut next_id = n as u64;

    let t = Instant::now();
    for (k, id) in ids.iter().enumerate() {
        let r = tracker.register(
            k as u64,
            (k % 2) as u32,
            black_box(id),
            TunnelMeta::default(),
            k as u64,
        );
        black_box(r.is_ok());
    }
    let register = ns_per(t.elapsed(), n);

    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut picks = vec![0usize; BATCH];
    let (mut t_claim, mut t_reg) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0;
    while done < OPS {
        // Distinct nodes within a batch (each node has one tunnel).
        let batch = BATCH.min(n);
        for p in picks.iter_mut().take(batch) {
            *p = (rng.next() % n as u64) as usize;
        }
        picks[..batch].sort_unstable();
        let mut uniq = picks[..batch].to_vec();
        uniq.dedup();

        let t = Instant::now();
        for &k in &uniq {
            let c = tracker.claim(black_box(&ids[k].node_id), 0);
            if let Some(c) = c {
                black_box(tracker.remove(c.tunnel));
            }
        }
        t_claim += t.elapsed();

        let t = Instant::now();
        for &k in &uniq {
            let r = tracker.register(
                next_id,
                (k % 2) as u32,
                &ids[k],
                TunnelMeta::default(),
                next_id,
            );
            black_box(r.is_ok());
            current[k] = next_id;
            next_id += 1;
        }
        t_reg += t.elapsed();
        done += uniq.len();
    }
    assert_eq!(tracker.counts().idle, n, "the pool must stay at N");

    let t = Instant::now();
    for &id in &current {
        black_box(tracker.remove(black_box(id)));
    }
    let remove = ns_per(t.elapsed(), n);
    assert_eq!(tracker.counts().idle, 0);
    Row {
        n,
        register,
        claim_release: ns_per(t_claim, done),
        reregister: ns_per(t_reg, done),
        remove,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported, every size runs.
    println!("tracker benchmark: ns/op (one tunnel per node, 2 workers, {OPS} claim+release ops per size)");
    println!(
        "{:>10} {:>12} {:>15} {:>13} {:>10}",
        "idle", "register", "claim+release", "re-register", "remove"
    );
    for n in [10, 1_000, 10_000, 100_000] {
        let r = run(n);
        println!(
            "{:>10} {:>12.0} {:>15.0} {:>13.0} {:>10.0}",
            r.n, r.register, r.claim_release, r.reregister, r.remove
        );
    }
}
