//! The HTTP reporter (`docs/reporter.md`) against real Envoy 1.40.0 processes: our
//! responder with `reporter_config` POSTs tunnel events to a control plane written here (a tiny
//! HTTP/1.1 server recording every request), through the bootstrap extension's HTTP callout to a
//! STATIC cluster pointing at it. Initiators are real, built-in 1.40.0 initiators.
//!
//! Also: an unknown reporter name, and a bad reporter field, make Envoy refuse to start with a log
//! line naming them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rt_integration::control_plane::{self, ControlPlane, Received, REPORTER};
use rt_integration::paths::{free_ports, require_module};
use rt_integration::topology::responder_vars;
use rt_integration::{wait_for, Check, Envoy, InitiatorSpec, Responder, Result, TestDir, Topology};

/// Backoff settings given to the reporter in this test.
const INITIAL_BACKOFF_MS: u64 = 200;
const MAX_BACKOFF_MS: u64 = 800;
/// Upper bound of the module's clock period (sends happen on its ticks).
const TICK_MS: u64 = 100;

/// The template overrides that turn the reporter on, pointed at `port`.
fn reporter_overrides(port: u16) -> Vec<(&'static str, String)> {
    control_plane::reporter_overrides(
        port,
        &format!(
            "cluster: control_plane, path: /rt/events, host: cp.test, responder: test-responder, send_interval: 100ms, \
             timeout: 2s, initial_backoff: {INITIAL_BACKOFF_MS}ms, max_backoff: {MAX_BACKOFF_MS}ms"
        ),
    )
}

/// The connected/disconnected events received so far: (event, tunnel_id, event object).
fn events(r: &[Received]) -> Vec<(String, u64, serde_json::Value)> {
    r.iter()
        .filter(|x| x.status == 200 && x.body["kind"] == "events")
        .flat_map(|x| x.body["events"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["event"].as_str().unwrap_or("").to_string(), e["tunnel_id"].as_u64().unwrap_or(0), e))
        .collect()
}

type Row = (u64, String, String, String, String);

fn rows_of(list: &serde_json::Value, id_key: &str) -> BTreeSet<Row> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
                    (t[id_key].as_u64().unwrap_or(0), s("tenant_id"), s("cluster_id"), s("node_id"), s("worker"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reporter_sends_snapshot_events_and_resyncs_after_an_outage() -> Result<()> {
    let t0 = Instant::now();
    let cp = ControlPlane::start()?;
    let mut topo = Topology::start_with("reporter", Responder::Module, 2, &[], &reporter_overrides(cp.port))?;

    // 1. A snapshot first (no tunnels yet), POSTed to the configured path and host.
    let i = cp.wait_payload("the first snapshot", 0, Duration::from_secs(10), |r| r.body["kind"] == "snapshot")?;
    let first = cp.received()[i].clone();
    assert_eq!((first.path.as_str(), first.host.as_str()), ("/rt/events", "cp.test"));
    assert_eq!(first.body["responder"], "test-responder");
    assert!(first.body["seq"].as_u64().is_some(), "{}", first.body);
    assert_eq!(first.body["tunnels"], serde_json::json!([]));

    // 2. A real initiator with two tunnels: two connected events with its ids.
    let spec = InitiatorSpec::new("rep-node", "rep-cluster").tenant("rep-tenant").tunnels(2);
    let a = topo.add_initiator(spec)?;
    topo.wait_tunnels(2, Duration::from_secs(20))?;
    let connected: BTreeSet<u64> = wait_for("two connected events", Duration::from_secs(10), || {
        let ev = events(&cp.received());
        let ids: BTreeSet<u64> = ev.iter().filter(|(k, _, _)| k == "connected").map(|(_, id, _)| *id).collect();
        Ok(if ids.len() >= 2 { Check::Done(ids) } else { Check::NotYet(format!("{ev:?}")) })
    })?;
    assert_eq!(connected.len(), 2);
    for (kind, _, e) in events(&cp.received()) {
        assert_eq!(kind, "connected");
        assert_eq!((e["node_id"].as_str(), e["cluster_id"].as_str(), e["tenant_id"].as_str()), (Some("rep-node"), Some("rep-cluster"), Some("rep-tenant")), "{e}");
        assert!(e["worker"].as_str().is_some_and(|w| w.starts_with("worker_")), "{e}");
        assert!(e["initiation_time_ms"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "initiation time from the 1.40.0 initiator: {e}");
        assert!(e["ts_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{e}");
    }
    // The events match the tracker.
    let listing: serde_json::Value = serde_json::from_str(&topo.responder().admin_get("/reverse_tunnels")?).map_err(|e| e.to_string())?;
    let tracked: BTreeSet<u64> = rows_of(&listing["tunnels"], "tunnel").into_iter().map(|r| r.0).collect();
    assert_eq!(tracked, connected);

    // 3. The initiator goes away: two disconnected events for the same tunnels.
    topo.stop_initiator(a);
    topo.wait_tunnels(0, Duration::from_secs(20))?;
    wait_for("two disconnected events", Duration::from_secs(10), || {
        let ev = events(&cp.received());
        let ids: BTreeSet<u64> = ev.iter().filter(|(k, _, _)| k == "disconnected").map(|(_, id, _)| *id).collect();
        Ok(if ids == connected { Check::Done(()) } else { Check::NotYet(format!("disconnected {ids:?}")) })
    })?;
    for (kind, _, e) in events(&cp.received()) {
        if kind == "disconnected" {
            assert_eq!(e["node_id"], "rep-node");
            assert!(e["close_reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
        }
    }

    // 4. Control plane answers 503: the new tunnels' events fail, then snapshots are retried with
    // a doubling backoff (200, 400, 800, 800 ms).
    cp.set_status(503);
    let outage_from = cp.received().len();
    let b = topo.add_initiator(InitiatorSpec::new("rep-node-2", "rep-cluster-2").tenant("rep-tenant").tunnels(1))?;
    topo.wait_tunnels(1, Duration::from_secs(20))?;
    let failed = wait_for("five failed attempts", Duration::from_secs(15), || {
        let r: Vec<Received> = cp.received().into_iter().skip(outage_from).collect();
        Ok(if r.len() >= 5 { Check::Done(r) } else { Check::NotYet(format!("{} attempts", r.len())) })
    })?;
    let gaps: Vec<u64> = failed.windows(2).map(|w| (w[1].at - w[0].at).as_millis() as u64).collect();
    println!("reporter: attempts during the outage {} apart (ms): {gaps:?}", failed.len());
    for (k, gap) in gaps.iter().take(4).enumerate() {
        let want = (INITIAL_BACKOFF_MS << k).min(MAX_BACKOFF_MS);
        // A send happens on the first clock tick (50 ms) after the backoff; allow scheduling slack.
        assert!(*gap + 20 >= want, "attempt gap {k}: {gap} ms < backoff {want} ms ({gaps:?})");
        assert!(*gap <= want + TICK_MS + 1500, "attempt gap {k}: {gap} ms much later than backoff {want} ms ({gaps:?})");
    }
    for r in &failed[1..] {
        assert_eq!(r.body["kind"], "snapshot", "after a failure every attempt is a snapshot: {}", r.body);
    }

    // 5. Control plane back: the next attempt is a full snapshot equal to the tracker.
    cp.set_status(200);
    let back_from = cp.received().len();
    let i = cp.wait_payload("a snapshot accepted after the outage", back_from, Duration::from_secs(10), |r| r.status == 200 && r.body["kind"] == "snapshot")?;
    let snap = cp.received()[i].body.clone();
    let listing: serde_json::Value = serde_json::from_str(&topo.responder().admin_get("/reverse_tunnels")?).map_err(|e| e.to_string())?;
    let want = rows_of(&listing["tunnels"], "tunnel");
    let got = rows_of(&snap["tunnels"], "tunnel_id");
    assert_eq!(got, want, "snapshot {snap} vs tracker {listing}");
    assert_eq!(got.len(), 1);
    assert!(got.iter().all(|r| r.3 == "rep-node-2" && r.2 == "rep-cluster-2" && r.1 == "rep-tenant"));
    assert_eq!(snap["tunnels"][0]["state"], "idle");
    let view: BTreeSet<u64> = control_plane::view(&cp.received()).into_keys().collect();
    assert_eq!(view, got.iter().map(|r| r.0).collect::<BTreeSet<u64>>(), "control plane view after applying every payload");

    // Sequence numbers grow with every attempt (by one for each attempt that reached the control
    // plane, failed ones included).
    let seqs: Vec<u64> = cp.received().iter().filter_map(|r| r.body["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "seq not increasing: {seqs:?}");
    let outage: Vec<u64> = cp.received()[outage_from..].iter().filter_map(|r| r.body["seq"].as_u64()).collect();
    assert!(outage.windows(2).all(|w| w[1] == w[0] + 1), "seq not consecutive during the outage: {outage:?}");
    // The counters saw the outage and the recovery.
    let sent = topo.responder().wait_stat("rt.upstream_rc.reporter.sent", |v| v >= 2, Duration::from_secs(5))?;
    let failed_n = topo.responder().wait_stat("rt.upstream_rc.reporter.failed", |v| v >= 5, Duration::from_secs(5))?;
    let snapshots = topo.responder().wait_stat("rt.upstream_rc.reporter.snapshots", |v| v >= 2, Duration::from_secs(5))?;
    println!("reporter: counters sent {sent}, failed {failed_n}, snapshots {snapshots}");
    topo.stop_initiator(b);
    println!("reporter: {} payloads, test took {:?}", seqs.len(), t0.elapsed());
    Ok(())
}

/// Starts our responder with `reporter_line` as its REPORTER_CONFIG and expects it to exit with a
/// log naming `needle`.
fn refused_naming(label: &str, reporter_line: &str, needle: &str) -> Result<()> {
    require_module()?;
    let dir = TestDir::new(label)?;
    let ports = free_ports(3)?;
    let mut vars = responder_vars(ports[0], ports[1], ports[2], 3);
    vars.retain(|(k, _)| *k != "REPORTER_CONFIG");
    vars.push(("REPORTER_CONFIG", reporter_line.to_string()));
    let config = dir.render(Responder::Module.template(), "responder-bad-reporter.yaml", &vars)?;
    let mut envoy = Envoy::start(&config, 1, &[])?;
    let status = envoy.wait_exit(Duration::from_secs(20));
    let log = envoy.log_contents();
    let status = status.ok_or_else(|| format!("Envoy did not exit with {reporter_line}; log:\n{}", envoy.log_excerpt(20)))?;
    assert!(!status.success(), "Envoy exited successfully ({status}) with {reporter_line}");
    assert!(log.contains(needle), "the log does not name {needle}; log tail:\n{}", envoy.log_excerpt(20));
    Ok(())
}

#[test]
fn unknown_reporter_name_is_refused_naming_it() -> Result<()> {
    refused_naming(
        "reporter-unknown",
        "reporter_config: {name: my.unknown.reporter}",
        "reporter_config: unknown reporter 'my.unknown.reporter'",
    )?;
    refused_naming(
        "reporter-bad-field",
        &format!(
            "reporter_config: {{name: {REPORTER}, typed_config: {{\"@type\": type.googleapis.com/google.protobuf.Struct, \
             value: {{cluster: cp, max_batch: 0}}}}}}"
        ),
        "reporter_config.typed_config.max_batch",
    )
}
