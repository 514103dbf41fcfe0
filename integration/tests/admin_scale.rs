//! Admin `GET /reverse_tunnels` at scale: a live responder holding 10,000 echoing
//! tunnels from the load tool ([`rt_integration::load`]) plus a real Envoy 1.40.0 initiator's
//! tunnel. Checks the JSON (totals and every field of every tunnel), the `node`, `cluster`,
//! `tenant` filters and `format=text`, that the median response time of the full listing is under
//! 100 ms, and that requests through a tunnel keep working while the admin endpoint is hammered
//! (the listing runs on the main thread and must not stall workers).
//!
//! The responder also runs the reporter (`docs/reporter.md`) with a small queue (`max_queue`
//! 2000, `max_batch` 500): 10,000 tunnels arriving within about a second overflow it, so events are
//! dropped and counted and the reporter falls back to a snapshot; the control plane's view (its
//! payloads applied in order) must still end equal to the tracker, and empty after the close.
//!
//! Env: `RT_SCALE_TUNNELS` (default 10000).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rt_integration::control_plane::{self, ControlPlane};
use rt_integration::load::{Behavior, LoadConfig, LoadGen};
use rt_integration::{env_num, http_get, wait_for, Check, InitiatorSpec, Responder, Result, Topology};

/// Reporter batch and queue bounds in this test.
const MAX_BATCH: usize = 500;
const MAX_QUEUE: usize = 2000;

/// The bound on the listing's response time (median).
const ADMIN_BOUND: Duration = Duration::from_millis(100);
/// Full listings timed for the median.
const SAMPLES: usize = 9;

/// GET an admin path; returns (status, body, elapsed until the whole body was read).
fn timed_admin(port: u16, path: &str) -> Result<(u16, String, Duration)> {
    let t = Instant::now();
    let r = http_get(port, path, &[])?;
    Ok((r.status, r.body, t.elapsed()))
}

fn json(port: u16, path: &str) -> Result<serde_json::Value> {
    let (status, body, _) = timed_admin(port, path)?;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).map_err(|e| format!("{path} is not JSON: {e}").into())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn admin_listing_with_ten_thousand_tunnels() -> Result<()> {
    let n = env_num("RT_SCALE_TUNNELS", 10_000);
    let t0 = Instant::now();
    let cp = ControlPlane::start()?;
    let fields = format!("cluster: control_plane, send_interval: 100ms, max_batch: {MAX_BATCH}, max_queue: {MAX_QUEUE}");
    let mut topo = Topology::start_with("admin-scale", Responder::Module, 2, &[], &control_plane::reporter_overrides(cp.port, &fields))?;
    let admin = topo.admin_port;

    // A real initiator with its own tenant and cluster; one request makes its tunnel in_use.
    let node = "admin-real-node";
    let i = topo.add_initiator(InitiatorSpec::new(node, "admin-real-cluster").tenant("tenant-real"))?;
    let want_body = topo.initiator(i).direct_body();
    topo.wait_tunnels(1, Duration::from_secs(20))?;
    let r = topo.get(node, "/direct")?;
    assert_eq!((r.status, r.body.as_str()), (200, want_body.as_str()));

    let mut gen = LoadGen::start(
        LoadConfig::new(topo.handshake_port, n as usize, Behavior::Echo).ids("load-{i}", "load-c-{i}", "tenant-a"),
    )?;
    gen.wait_up(Duration::from_secs(60))?;
    topo.wait_tunnels(n + 1, Duration::from_secs(30))?;
    let opened = t0.elapsed();

    // --- Full JSON listing: totals and every field.
    let v = json(admin, "/reverse_tunnels")?;
    let tunnels = v["tunnels"].as_array().cloned().unwrap_or_default();
    assert_eq!(tunnels.len() as u64, n + 1, "tunnel count");
    assert_eq!(v["idle"].as_u64().unwrap_or(0) + v["in_use"].as_u64().unwrap_or(0), n + 1, "totals");
    assert_eq!(v["in_use"], 1, "the real tunnel carries an HTTP/2 session");
    assert_eq!((v["nodes"].as_u64(), v["clusters"].as_u64()), (Some(n + 1), Some(n + 1)));
    let mut acked = 0u64;
    for t in &tunnels {
        for k in ["tunnel", "age_ms", "last_ping_rtt_ms", "egress_connections"] {
            assert!(t[k].is_u64(), "{k} in {t}");
        }
        for k in ["worker", "tenant_id", "cluster_id", "node_id", "state", "remote_address", "initiator_worker_id", "initiator_connection_id"] {
            assert!(t[k].is_string(), "{k} in {t}");
        }
        assert!(t["worker"].as_str().is_some_and(|w| w == "worker_0" || w == "worker_1"), "{t}");
        assert!(t["remote_address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{t}");
        assert!(t["since_last_ping_ack_ms"].is_u64() || t["since_last_ping_ack_ms"].is_null(), "{t}");
        if t["since_last_ping_ack_ms"].is_u64() {
            acked += 1;
        }
    }
    // A tunnel joins the pool on its first RPING echo: every load tunnel has answered one.
    assert!(acked >= n, "{acked} of {} tunnels have a ping answer", n + 1);
    let real: Vec<_> = tunnels.iter().filter(|t| t["node_id"] == node).collect();
    assert_eq!(real.len(), 1);
    let real = real[0];
    assert_eq!((real["tenant_id"].as_str(), real["cluster_id"].as_str(), real["state"].as_str()), (Some("tenant-real"), Some("admin-real-cluster"), Some("in_use")), "{real}");
    assert!(real["initiator_worker_id"].as_str().is_some_and(|w| w.starts_with("worker_")), "{real}");
    assert!(real["initiator_connection_id"].as_str().is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())), "{real}");
    let load7: Vec<_> = tunnels.iter().filter(|t| t["node_id"] == "load-7").collect();
    assert_eq!(load7.len(), 1);
    assert_eq!((load7[0]["cluster_id"].as_str(), load7[0]["tenant_id"].as_str(), load7[0]["state"].as_str()), (Some("load-c-7"), Some("tenant-a"), Some("idle")));
    // The load tool sends initiator ids too.
    assert!(load7[0]["initiator_worker_id"].as_str().is_some_and(|w| w.starts_with("worker_")), "{}", load7[0]);

    // Per tenant, cluster and node: `by_node` agrees with the tunnel rows.
    let by_node = v["by_node"].as_array().cloned().unwrap_or_default();
    assert_eq!(by_node.len() as u64, n + 1, "one by_node entry per node");
    let mut rows: std::collections::BTreeMap<(String, String, String), Vec<u64>> = Default::default();
    for t in &tunnels {
        let k = |f: &str| t[f].as_str().unwrap_or_default().to_string();
        rows.entry((k("tenant_id"), k("cluster_id"), k("node_id"))).or_default().push(t["tunnel"].as_u64().unwrap_or(0));
    }
    let mut keys = Vec::new();
    for e in &by_node {
        let k = |f: &str| e[f].as_str().unwrap_or_default().to_string();
        let key = (k("tenant_id"), k("cluster_id"), k("node_id"));
        let mut ids: Vec<u64> = e["tunnels"].as_array().map(|a| a.iter().filter_map(|x| x.as_u64()).collect()).unwrap_or_default();
        ids.sort();
        let mut want = rows.get(&key).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(ids, want, "by_node {e}");
        assert_eq!(e["idle"].as_u64().unwrap_or(0) + e["in_use"].as_u64().unwrap_or(0), ids.len() as u64, "{e}");
        keys.push(key);
    }
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "by_node sorted by tenant, cluster, node");

    // --- Filters.
    let count = |path: &str| -> Result<usize> { Ok(json(admin, path)?["tunnels"].as_array().map_or(0, |a| a.len())) };
    assert_eq!(count("/reverse_tunnels?node=load-7")?, 1);
    assert_eq!(count("/reverse_tunnels?cluster=load-c-7")?, 1);
    assert_eq!(count(&format!("/reverse_tunnels?node={node}&tenant=tenant-real"))?, 1);
    assert_eq!(count("/reverse_tunnels?tenant=tenant-real")?, 1);
    assert_eq!(count("/reverse_tunnels?tenant=tenant-a")?, n as usize);
    assert_eq!(count("/reverse_tunnels?node=load-7&tenant=tenant-real")?, 0);
    assert_eq!(count("/reverse_tunnels?node=nobody")?, 0);
    let (status, body, _) = timed_admin(admin, "/reverse_tunnels?colour=red")?;
    assert_eq!(status, 400, "{body}");

    // --- Text format.
    let (status, text, _) = timed_admin(admin, "/reverse_tunnels?format=text")?;
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("tunnels: {} idle, 1 in use, {} nodes, {} clusters", n, n + 1, n + 1)), "{}", lines[0]);
    assert_eq!(lines.len() as u64, n + 2, "header + one line per tunnel");
    let (_, text, _) = timed_admin(admin, &format!("/reverse_tunnels?format=text&node={node}"))?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for part in [format!("node={node}"), "tenant=tenant-real".into(), "cluster=admin-real-cluster".into(), "state=in_use".into(), "remote=127.0.0.1:".into()] {
        assert!(lines[1].contains(&part), "{part} in {}", lines[1]);
    }

    // --- Response time of the full listing, while requests go through the real tunnel.
    let stop = Arc::new(AtomicBool::new(false));
    let egress = topo.egress_port;
    let traffic = {
        let stop = stop.clone();
        let want = want_body.clone();
        std::thread::spawn(move || -> Result<(u64, Duration)> {
            let (mut n, mut worst) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = http_get(egress, "/direct", &[(rt_integration::topology::NODE_HEADER, node)])?;
                worst = worst.max(t.elapsed());
                if (r.status, r.body.as_str()) != (200, want.as_str()) {
                    return Err(format!("request through the tunnel during admin listings: {} {}", r.status, r.body).into());
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((n, worst))
        })
    };
    let mut full = Vec::new();
    let mut filtered = Vec::new();
    let mut bytes = 0;
    for _ in 0..SAMPLES {
        let (status, body, d) = timed_admin(admin, "/reverse_tunnels")?;
        assert_eq!(status, 200);
        bytes = body.len();
        full.push(d);
        let (status, _, d) = timed_admin(admin, "/reverse_tunnels?node=load-42")?;
        assert_eq!(status, 200);
        filtered.push(d);
    }
    stop.store(true, Ordering::SeqCst);
    let (requests, worst) = traffic.join().map_err(|_| "traffic thread panicked")??;
    let (med_full, med_filtered) = (median(full.clone()), median(filtered));
    println!(
        "admin-scale: {} tunnels up in {opened:?}; GET /reverse_tunnels ({bytes} bytes) median {med_full:?} \
         (all: {full:?}); ?node= median {med_filtered:?}; {requests} requests through the tunnel meanwhile, worst {worst:?}",
        n + 1
    );
    assert!(med_full < ADMIN_BOUND, "median full listing {med_full:?} >= {ADMIN_BOUND:?}");
    assert!(med_filtered < ADMIN_BOUND, "median filtered listing {med_filtered:?}");
    assert!(requests > 0);
    assert!(worst < Duration::from_secs(1), "a request through the tunnel took {worst:?} during admin listings");

    // --- The reporter: the control plane's view equals the tracker, with bounded batches.
    let want: std::collections::BTreeSet<u64> = tunnels.iter().filter_map(|t| t["tunnel"].as_u64()).collect();
    wait_for("the control plane's view to equal the tracker", Duration::from_secs(30), || {
        let view = control_plane::view(&cp.received());
        Ok(if view.keys().copied().eq(want.iter().copied()) { Check::Done(()) } else { Check::NotYet(format!("{} tunnels in view", view.len())) })
    })?;
    let got = cp.received();
    for r in &got {
        let n = r.body["events"].as_array().map_or(0, |a| a.len());
        assert!(n <= MAX_BATCH, "a payload with {n} events > max_batch {MAX_BATCH}");
    }
    let view = control_plane::view(&got);
    let real_row = view.values().find(|t| t["node_id"] == node).cloned().unwrap_or_default();
    assert_eq!((real_row["tenant_id"].as_str(), real_row["cluster_id"].as_str()), (Some("tenant-real"), Some("admin-real-cluster")), "{real_row}");
    let dropped = got.iter().filter_map(|r| r.body["dropped_events_total"].as_u64()).max().unwrap_or(0);
    let snapshots = got.iter().filter(|r| r.body["kind"] == "snapshot").count();
    println!("admin-scale: reporter sent {} payloads ({snapshots} snapshots), {dropped} events dropped (queue bound {MAX_QUEUE})", got.len());

    gen.close_all();
    topo.stop_initiator(i);
    topo.wait_tunnels(0, Duration::from_secs(60))?;
    wait_for("the control plane's view to be empty", Duration::from_secs(30), || {
        let n = control_plane::view(&cp.received()).len();
        Ok(if n == 0 { Check::Done(()) } else { Check::NotYet(format!("{n} tunnels in view")) })
    })?;
    println!("admin-scale: test took {:?}", t0.elapsed());
    Ok(())
}
