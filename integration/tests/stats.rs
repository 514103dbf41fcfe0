//! Stats of our responder against its own tracker, on a real Envoy 1.40.0 with a real 1.40.0
//! initiator and tunnels from the load tool ([`rt_integration::load`]).
//!
//! The check: after many connect/close cycles, every gauge read from `/stats/prometheus`
//! equals what the tracker lists in admin `/reverse_tunnels`: `tunnels_idle`, `tunnels_in_use`,
//! per worker `total_nodes` / `total_clusters`, and the detailed labelled `tunnels` family,
//! whose label sets stay within the cap however many distinct nodes came and went.
//!
//! Env: `RT_STATS_CYCLES` (default 1000) connect/close cycles of distinct nodes;
//! `RT_STATS_DISTINCT` (default 10000) distinct nodes seen in all (the rest arrive in a second
//! wave).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rt_integration::load::{Behavior, LoadConfig, LoadGen};
use rt_integration::envoy::allocated_kib;
use rt_integration::{env_num, wait_for, Check, Envoy, Error, InitiatorSpec, Responder, Result, Topology};

/// The cap on detailed label sets the test configures (runtime key
/// `reverse_tunnel.detailed_stats.max_series`).
const MAX_SERIES: usize = 200;
/// Load tunnels that stay up through the test (distinct nodes `keep-{i}`).
const KEEP: usize = 40;
const OVERFLOW: &str = "__overflow__";

/// One Prometheus sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, i64);

/// Parses the `envoy_rt_upstream_rc_*` samples of `/stats/prometheus` (counters and gauges).
fn prometheus(envoy: &mut Envoy) -> Result<Vec<Sample>> {
    let body = envoy.admin_get("/stats/prometheus")?;
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') || !line.starts_with("envoy_rt_upstream_rc_") {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').ok_or_else(|| Error(format!("bad line {line:?}")))?;
        let Ok(value) = value.parse::<i64>() else { continue }; // histogram sums etc.
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((n, rest)) => {
                let mut m = BTreeMap::new();
                for kv in rest.trim_end_matches('}').split("\",").filter(|s| !s.is_empty()) {
                    let (k, v) = kv.split_once("=\"").ok_or_else(|| Error(format!("bad labels in {line:?}")))?;
                    m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), m)
            }
        };
        out.push((name, labels, value));
    }
    Ok(out)
}

fn one(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> i64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.len() == labels.len() && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map_or(0, |(_, _, v)| *v)
}

/// What the tracker holds, from admin `/reverse_tunnels`.
struct Listing {
    idle: i64,
    in_use: i64,
    /// (worker, node) and (worker, cluster) pairs with a tunnel.
    worker_nodes: BTreeSet<(String, String)>,
    worker_clusters: BTreeSet<(String, String)>,
    /// (cluster, node) → tunnels.
    per_node: BTreeMap<(String, String), i64>,
}

fn listing(envoy: &mut Envoy) -> Result<Listing> {
    let v: serde_json::Value = serde_json::from_str(&envoy.admin_get("/reverse_tunnels")?)
        .map_err(|e| Error(format!("/reverse_tunnels is not JSON: {e}")))?;
    let mut l = Listing {
        idle: 0,
        in_use: 0,
        worker_nodes: BTreeSet::new(),
        worker_clusters: BTreeSet::new(),
        per_node: BTreeMap::new(),
    };
    for t in v["tunnels"].as_array().ok_or_else(|| Error::msg("no tunnels array"))? {
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
        match s("state").as_str() {
            "idle" => l.idle += 1,
            _ => l.in_use += 1,
        }
        l.worker_nodes.insert((s("worker"), s("node_id")));
        l.worker_clusters.insert((s("worker"), s("cluster_id")));
        *l.per_node.entry((s("cluster_id"), s("node_id"))).or_default() += 1;
    }
    Ok(l)
}

/// Compares every gauge with the listing; returns a description of the first difference.
fn compare(samples: &[Sample], l: &Listing, workers: u32) -> std::result::Result<(), String> {
    let g = |n: &str| one(samples, &format!("envoy_rt_upstream_rc_{n}"), &[]);
    if (g("tunnels_idle"), g("tunnels_in_use")) != (l.idle, l.in_use) {
        return Err(format!(
            "tunnels_idle/in_use {}/{} but the tracker lists {}/{}",
            g("tunnels_idle"),
            g("tunnels_in_use"),
            l.idle,
            l.in_use
        ));
    }
    for w in 0..workers {
        let name = format!("worker_{w}");
        let nodes = l.worker_nodes.iter().filter(|(x, _)| *x == name).count() as i64;
        let clusters = l.worker_clusters.iter().filter(|(x, _)| *x == name).count() as i64;
        let got_n = one(samples, "envoy_rt_upstream_rc_total_nodes", &[("worker", &name)]);
        let got_c = one(samples, "envoy_rt_upstream_rc_total_clusters", &[("worker", &name)]);
        if (got_n, got_c) != (nodes, clusters) {
            return Err(format!("{name}: total_nodes/clusters {got_n}/{got_c}, tracker {nodes}/{clusters}"));
        }
    }
    // Detailed: own label sets exact; nodes without one are summed in the overflow set.
    let series: BTreeMap<(String, String), i64> = samples
        .iter()
        .filter(|(n, _, _)| n == "envoy_rt_upstream_rc_tunnels")
        .map(|(_, l, v)| ((l["cluster_id"].clone(), l["node_id"].clone()), *v))
        .collect();
    let mut overflow_want = 0;
    for (key, n) in &l.per_node {
        match series.get(key) {
            Some(v) if v == n => {}
            Some(v) => return Err(format!("tunnels{key:?} = {v} but the tracker holds {n}")),
            None => overflow_want += n,
        }
    }
    for (key, v) in &series {
        if key.0 != OVERFLOW && !l.per_node.contains_key(key) && *v != 0 {
            return Err(format!("tunnels{key:?} = {v} for a node the tracker does not hold"));
        }
    }
    let overflow = series.get(&(OVERFLOW.to_string(), OVERFLOW.to_string())).copied().unwrap_or(0);
    if overflow != overflow_want {
        return Err(format!("overflow label set = {overflow}, want {overflow_want}"));
    }
    Ok(())
}

/// Polls until the gauges equal the tracker's listing (they converge once the last close was
/// processed); returns the samples it compared.
fn wait_equal(envoy: &mut Envoy, workers: u32, expect_total: i64) -> Result<Vec<Sample>> {
    wait_for("gauges equal to the tracker", Duration::from_secs(30), || {
        let l = listing(envoy)?;
        if l.idle + l.in_use != expect_total {
            return Ok(Check::NotYet(format!("tracker holds {} tunnels, want {expect_total}", l.idle + l.in_use)));
        }
        let samples = prometheus(envoy)?;
        // The listing and the stats are two reads: confirm the listing did not move in between.
        let l2 = listing(envoy)?;
        if l2.per_node != l.per_node || (l2.idle, l2.in_use) != (l.idle, l.in_use) {
            return Ok(Check::NotYet("the tracker changed between reads".into()));
        }
        Ok(match compare(&samples, &l, workers) {
            Ok(()) => Check::Done(samples),
            Err(e) => Check::NotYet(e),
        })
    })
}

/// Sum of `tunnels_closed{close_reason}` over all reasons.
fn closed_total(envoy: &mut Envoy) -> Result<i64> {
    Ok(prometheus(envoy)?
        .iter()
        .filter(|(n, _, _)| n == "envoy_rt_upstream_rc_tunnels_closed")
        .map(|(_, _, v)| *v)
        .sum())
}

/// Waits until the responder counted at least `n` closed tunnels: the load tool's view that a
/// tunnel ended says nothing about when the responder processed its last bytes and its close.
fn wait_closed(envoy: &mut Envoy, n: i64) -> Result<i64> {
    wait_for(&format!("{n} tunnels counted as closed"), Duration::from_secs(30), || {
        let c = closed_total(envoy)?;
        Ok(if c >= n { Check::Done(c) } else { Check::NotYet(format!("{c} closed")) })
    })
}

/// Runs `count` tunnels that each echo the first RPING (so they are registered) and then close;
/// waits until all have ended. Returns the number that reached the `200`.
fn cycles(port: u16, count: usize, node_pattern: &str, cluster_pattern: &str) -> Result<u64> {
    let mut cfg = LoadConfig::new(port, count, Behavior::Close(1)).ids(node_pattern, cluster_pattern, "tenant-a");
    cfg.open_batch = 16;
    let mut gen = LoadGen::start(cfg)?;
    gen.wait_up(Duration::from_secs(120))?;
    let ended = wait_for(&format!("{count} cycled tunnels ended"), Duration::from_secs(120), || {
        let n = gen.records().len();
        Ok(if n >= count { Check::Done(n) } else { Check::NotYet(format!("{n} ended")) })
    })?;
    let s = gen.snapshot();
    gen.close_all();
    assert_eq!(s.handshakes_failed, 0, "{s:?}");
    Ok(ended as u64)
}

#[test]
fn gauges_equal_the_tracker_after_connect_close_cycles() -> Result<()> {
    let workers = 2;
    let n_cycles = env_num("RT_STATS_CYCLES", 1000) as usize;
    let distinct = env_num("RT_STATS_DISTINCT", 10_000) as usize;
    let mut topo = Topology::start_with(
        "stats-cycles",
        Responder::Module,
        workers,
        &[],
        &[("DETAILED_STATS", "true".into()), ("DETAILED_MAX_SERIES", MAX_SERIES.to_string())],
    )?;
    let alloc0 = allocated_kib(topo.responder());

    // A real initiator (2 tunnels: one gets claimed by a request and goes in use).
    let node = "stats-real-node";
    let i = topo.add_initiator(InitiatorSpec::new(node, "stats-real-cluster").tunnels(2))?;
    let real = topo.initiator(i).spec.expected_tunnels() as i64;
    topo.wait_tunnels(real as u64, Duration::from_secs(20))?;
    let want_body = topo.initiator(i).direct_body();
    let r = topo.get(node, "/direct")?;
    assert_eq!((r.status, r.body.as_str()), (200, want_body.as_str()));

    // Tunnels that stay: KEEP distinct nodes, two clusters.
    let mut keep = LoadGen::start(LoadConfig::new(topo.handshake_port, KEEP, Behavior::Echo).ids(
        "keep-{i}",
        "keep-cluster",
        "tenant-a",
    ))?;
    keep.wait_up(Duration::from_secs(30))?;
    let expect_total = real + KEEP as i64;
    wait_equal(topo.responder(), workers, expect_total)?;

    // Wave 1: connect/close cycles, each a distinct node and cluster.
    let t = Instant::now();
    let closed0 = closed_total(topo.responder())?;
    let ended = cycles(topo.handshake_port, n_cycles, "cyc-{i}", "cyc-c-{i}")?;
    let closed = wait_closed(topo.responder(), closed0 + n_cycles as i64)? - closed0;
    wait_equal(topo.responder(), workers, expect_total)?;
    println!("stats: {ended} connect/close cycles in {:.1}s; gauges equal the tracker", t.elapsed().as_secs_f64());
    let r = topo.get(node, "/direct")?;
    assert_eq!(r.status, 200, "service through the real node after the cycles");
    let g = |s: &[Sample], n: &str| one(s, &format!("envoy_rt_upstream_rc_{n}"), &[]);
    assert_eq!(closed, n_cycles as i64, "tunnels_closed grew by {closed} for {n_cycles} cycles");

    // Wave 2: more distinct nodes until `distinct` were seen in all.
    let seen = KEEP + n_cycles + 1;
    if distinct > seen {
        let t = Instant::now();
        let closed0 = closed_total(topo.responder())?;
        cycles(topo.handshake_port, distinct - seen, "wave2-{i}", "wave2-c-{i}")?;
        wait_closed(topo.responder(), closed0 + (distinct - seen) as i64)?;
        println!("stats: {} more distinct nodes cycled in {:.1}s", distinct - seen, t.elapsed().as_secs_f64());
    }
    let samples = wait_equal(topo.responder(), workers, expect_total)?;
    let series = samples.iter().filter(|(n, _, _)| n == "envoy_rt_upstream_rc_tunnels").count();
    let created = g(&samples, "detailed_stats_series");
    let overflow = g(&samples, "detailed_stats_overflow");
    let alloc1 = allocated_kib(topo.responder());
    println!(
        "stats: {} distinct nodes seen; {series} label sets in /stats/prometheus (cap {MAX_SERIES} + overflow), \
         detailed_stats_series {created}, detailed_stats_overflow {overflow}; heap {alloc0:?} -> {alloc1:?} KiB",
        distinct.max(seen)
    );
    assert_eq!(created, MAX_SERIES as i64, "label sets created");
    assert!(series <= MAX_SERIES + 1, "{series} label sets > cap {MAX_SERIES} + 1 overflow");
    assert!(overflow > 0, "nodes beyond the cap must be counted as overflow");

    keep.close_all();
    topo.stop_initiator(i);
    let samples = wait_equal(topo.responder(), workers, 0)?;
    let left: i64 = samples.iter().filter(|(n, _, _)| n == "envoy_rt_upstream_rc_tunnels").map(|(_, _, v)| *v).sum();
    assert_eq!(left, 0, "every detailed gauge back at 0");
    Ok(())
}
