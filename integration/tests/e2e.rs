//! End-to-end tests with real processes: the real Envoy 1.40.0 binary as responder (our module,
//! `envoy-config/upstream.yaml`) and as built-in initiators (`envoy-config/downstream.yaml`), and
//! in-process HTTP/1.1 backends, all on 127.0.0.1 with free ports.
//!
//! Run (after `cargo build --release -p reverse_tunnel`):
//!
//! ```text
//! cargo test -p rt-integration --test e2e -- --test-threads=1
//! ```
//!
//! The tests serialize themselves through a lock (several Envoys plus 40 client threads per test
//! would overload a 2-core machine), so `--test-threads=1` is recommended but not required.
//!
//! Env `RT_E2E_RESPONDER=builtin` points the module tests at Envoy's built-in responder instead
//! (harness check; the built-in is expected to fail `one_tunnel_four_workers_every_request_succeeds`
//! because of its per-worker tunnel pools, envoyproxy/envoy#41536). `builtin_reference_smoke` always runs against
//! the built-in. Other env overrides: see the `rt_integration` crate docs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rt_integration::process::signal;
use rt_integration::topology::{responder_vars, NODE_HEADER};
use rt_integration::{
    serial,
    free_ports, paths::require_module, wait_for, Check, Envoy, InitiatorSpec, Responder, Result,
    TestDir, Topology,
};


/// The responder under test: our module unless `RT_E2E_RESPONDER=builtin`.
fn responder_under_test() -> Responder {
    match std::env::var("RT_E2E_RESPONDER").as_deref() {
        Ok("builtin") => Responder::Builtin,
        Ok("direct") => Responder::Direct,
        Ok("owned") => Responder::Owned,
        _ => Responder::Module,
    }
}

/// Deadline for the first tunnels of freshly started initiators (they dial right at startup).
const TUNNELS_UP: Duration = Duration::from_secs(20);

#[test]
fn two_worker_initiator_sequential_and_concurrent() -> Result<()> {
    let _serial = serial();
    let node = "node-a";
    let cluster = "cluster-a";
    let mut topo = Topology::start(
        "two-worker",
        responder_under_test(),
        2,
        &[InitiatorSpec::new(node, cluster).concurrency(2).tunnels(1)],
    )?;
    topo.wait_tunnels(2, TUNNELS_UP)?;

    // 200 sequential requests on one keep-alive connection.
    let mut conn = topo.connect()?;
    for i in 0..200 {
        let path = format!("/seq/{i}");
        conn.ensure_open()?;
        let r = conn.get(&path, &[(NODE_HEADER, node)])?;
        let want = topo.initiator(0).backend.expected_body(&path);
        if r.status != 200 || r.body != want {
            return Err(format!(
                "sequential request {i}: got {} {:?}, want 200 {want:?}\n{}",
                r.status,
                r.body,
                topo.logs_tail(20)
            )
            .into());
        }
    }

    // 2,000 requests from 40 client threads, each on its own keep-alive connection.
    let threads = 40;
    let per_thread = 50;
    let port = topo.egress_port;
    let backend_name = topo.initiator(0).backend.name().to_string();
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ok, failures, backend_name) = (ok.clone(), failures.clone(), backend_name.clone());
            std::thread::spawn(move || {
                let record = |msg: String| failures.lock().unwrap().push(msg);
                let mut conn = match rt_integration::HttpConn::connect(port) {
                    Ok(c) => c,
                    Err(e) => return record(format!("thread {t}: {e}")),
                };
                for i in 0..per_thread {
                    let path = format!("/conc/{t}/{i}");
                    let want = rt_integration::backend::expected_body(&backend_name, &path);
                    let res = conn.ensure_open().and_then(|_| conn.get(&path, &[(NODE_HEADER, node)]));
                    match res {
                        Ok(r) if r.status == 200 && r.body == want => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => record(format!("{path}: got {} {:?}", r.status, r.body)),
                        Err(e) => record(format!("{path}: {e}")),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread panicked");
    }
    let failures = failures.lock().unwrap().clone();
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} concurrent requests failed; first: {:?}\n{}",
            failures.len(),
            threads * per_thread,
            &failures[..failures.len().min(5)],
            topo.logs_tail(20)
        )
        .into());
    }
    assert_eq!(ok.load(Ordering::SeqCst), (threads * per_thread) as u64);

    // direct_response of the initiator, by node id and by cluster id.
    let want_direct = topo.initiator(0).direct_body();
    let r = topo.get(node, "/direct")?;
    assert_eq!((r.status, r.body.as_str()), (200, want_direct.as_str()), "/direct by node id");
    let r = topo.get(cluster, "/direct")?;
    assert_eq!((r.status, r.body.as_str()), (200, want_direct.as_str()), "/direct by cluster id");
    let r = topo.get(cluster, "/by-cluster")?;
    assert_eq!(r.status, 200, "/by-cluster by cluster id: {}", r.body);
    assert_eq!(r.body, topo.initiator(0).backend.expected_body("/by-cluster"));

    // Every `/` request really reached the backend behind the initiator.
    assert_eq!(topo.initiator(0).backend.requests_served(), 200 + 2000 + 1);
    Ok(())
}

#[test]
fn one_tunnel_four_workers_every_request_succeeds() -> Result<()> {
    let _serial = serial();
    let node = "node-solo";
    let mut topo = Topology::start(
        "one-tunnel-four-workers",
        responder_under_test(),
        4,
        &[InitiatorSpec::new(node, "cluster-solo").concurrency(1).tunnels(1)],
    )?;
    topo.wait_tunnels(1, TUNNELS_UP)?;

    // Fresh connections, so that requests land on different responder workers.
    let total = 200;
    let mut failures = Vec::new();
    for i in 0..total {
        let path = format!("/fresh/{i}");
        let want = topo.initiator(0).backend.expected_body(&path);
        match topo.get(node, &path) {
            Ok(r) if r.status == 200 && r.body == want => {}
            Ok(r) => failures.push(format!("{path}: {} {:?}", r.status, r.body.trim())),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {total} requests failed; first: {:?}\n{}",
            failures.len(),
            &failures[..failures.len().min(5)],
            topo.logs_tail(20)
        )
        .into());
    }
    assert_eq!(topo.initiator(0).backend.requests_served(), total);
    Ok(())
}

#[test]
fn unknown_node_gets_503_fast() -> Result<()> {
    let _serial = serial();
    let mut topo = Topology::start(
        "unknown-node",
        responder_under_test(),
        2,
        &[InitiatorSpec::new("node-known", "cluster-known").concurrency(2)],
    )?;
    topo.wait_tunnels(2, TUNNELS_UP)?;
    for attempt in 0..3 {
        let started = Instant::now();
        let r = topo.get("nobody", "/direct")?;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "attempt {attempt}: body {:?}", r.body);
        assert!(took < Duration::from_secs(1), "attempt {attempt}: 503 took {took:?}");
    }
    // The known node still works, and its backend saw nothing of the failed requests.
    let r = topo.get("node-known", "/direct")?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(topo.initiator(0).backend.requests_served(), 0);
    Ok(())
}

#[test]
fn initiator_killed_then_restarted() -> Result<()> {
    let _serial = serial();
    let node = "node-phoenix";
    let mut topo = Topology::start(
        "initiator-killed",
        responder_under_test(),
        2,
        &[InitiatorSpec::new(node, "cluster-phoenix").concurrency(2).tunnels(1)],
    )?;
    topo.wait_tunnels(2, TUNNELS_UP)?;
    for i in 0..5 {
        let path = format!("/before/{i}");
        let r = topo.get(node, &path)?;
        assert_eq!(r.status, 200, "before the kill, {path}: {}", r.body);
        assert_eq!(r.body, topo.initiator(0).backend.expected_body(&path));
    }

    topo.kill_initiator(0)?;
    topo.wait_tunnels(0, Duration::from_secs(15))?;
    for i in 0..3 {
        let r = topo.get(node, &format!("/dead/{i}"))?;
        assert_eq!(r.status, 503, "with the initiator dead: {}", r.body);
    }

    topo.restart_initiator(0)?;
    // The initiator dials at startup (and then on its ~10 s tick); requests must work again.
    let served_before = topo.initiator(0).backend.requests_served();
    let r = wait_for("requests to succeed after the restart", Duration::from_secs(30), || {
        Ok(match topo.get(node, "/after") {
            Ok(r) if r.status == 200 => Check::Done(r),
            Ok(r) => Check::NotYet(format!("{} {:?}", r.status, r.body.trim())),
            Err(e) => Check::NotYet(e.0),
        })
    })?;
    assert_eq!(r.body, topo.initiator(0).backend.expected_body("/after"));
    assert_eq!(topo.initiator(0).backend.requests_served(), served_before + 1);
    topo.wait_tunnels(2, Duration::from_secs(30))?;
    Ok(())
}

#[test]
fn malformed_config_is_refused_naming_the_field() -> Result<()> {
    let _serial = serial();
    let kind = responder_under_test();
    // The built-in refuses through proto validation, which names the field in CamelCase.
    let field = match kind {
        Responder::Module | Responder::Direct | Responder::Owned => {
            require_module()?;
            "ping_failure_threshold"
        }
        Responder::Builtin => "PingFailureThreshold",
    };
    let dir = TestDir::new("malformed-config")?;
    let ports = free_ports(3)?;
    let config = dir.render(
        kind.template(),
        "responder-bad.yaml",
        &responder_vars(ports[0], ports[1], ports[2], 0),
    )?;
    let mut envoy = Envoy::start(&config, 1, &[])?;
    let status = envoy.wait_exit(Duration::from_secs(20));
    let log = envoy.log_contents();
    let status = status.ok_or_else(|| {
        format!("Envoy did not exit with ping_failure_threshold: 0; log:\n{}", envoy.log_excerpt(20))
    })?;
    assert!(!status.success(), "Envoy exited successfully ({status}) with a malformed config");
    assert!(
        log.contains(field),
        "the log does not name the field {field}; log tail:\n{}",
        envoy.log_excerpt(20)
    );
    Ok(())
}

#[test]
fn builtin_reference_smoke() -> Result<()> {
    let _serial = serial();
    let node = "node-ref";
    let cluster = "cluster-ref";
    let mut topo = Topology::start(
        "builtin-smoke",
        Responder::Builtin,
        2,
        &[InitiatorSpec::new(node, cluster).concurrency(2).tunnels(1)],
    )?;
    topo.wait_tunnels(2, TUNNELS_UP)?;
    assert_eq!(topo.node_tunnels(node)?, 2);

    let want_direct = topo.initiator(0).direct_body();
    let r = topo.get(node, "/direct")?;
    assert_eq!((r.status, r.body.as_str()), (200, want_direct.as_str()));
    let r = topo.get(node, "/smoke")?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, topo.initiator(0).backend.expected_body("/smoke"));
    let r = topo.get("nobody", "/direct")?;
    assert_eq!(r.status, 503, "{}", r.body);
    Ok(())
}

/// Egress `claim_timeout`: a request for a node with no tunnel yet waits (bounded) and succeeds
/// once the initiator dials in; a request for a node that never comes still gets 503 after the
/// timeout, not before.
#[test]
fn claim_timeout_waits_for_a_tunnel() -> Result<()> {
    let _serial = serial();
    let kind = responder_under_test();
    if kind == Responder::Builtin {
        return Ok(()); // the built-in has no such option
    }
    let mut topo = Topology::start_with("claim-timeout", kind, 2, &[], &[("CLAIM_TIMEOUT", "4s".into())])?;
    let port = topo.egress_port;
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let r = rt_integration::http::http_get(port, "/direct", &[(NODE_HEADER, "node-late")]);
        (r, started.elapsed())
    });
    // Wait (bounded) until the request is in flight at the responder, then start the node.
    topo.responder().wait_stat("http.egress_http.downstream_rq_active", |v| v >= 1, Duration::from_secs(5))?;
    topo.add_initiator(InitiatorSpec::new("node-late", "cluster-late"))?;
    let (r, took) = waiter.join().map_err(|_| "waiter panicked".to_string())?;
    let r = r?;
    assert_eq!(r.status, 200, "the waiting request must be served once the tunnel is up: {}", r.body);
    // The request was in flight before the node existed: a 200 means it waited for the tunnel.
    assert!(took < Duration::from_secs(4), "took {took:?}");

    let started = Instant::now();
    let r = topo.get("node-never", "/direct")?;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(took >= Duration::from_millis(3900) && took < Duration::from_secs(6), "503 after {took:?}");
    Ok(())
}

/// A frozen initiator (SIGSTOP): its idle tunnel is closed by RPING keepalive
/// (`idle_ping_timeout`) and its in-use tunnel by the module's HTTP/2 PING keepalive
/// (`http2_ping_timeout`), both within the keepalive bound; after SIGCONT it re-dials and
/// requests succeed again.
#[test]
fn frozen_initiator_is_detected_idle_and_in_use() -> Result<()> {
    let _serial = serial();
    if responder_under_test() != Responder::Module {
        return Ok(());
    }
    let mut topo = Topology::start("frozen", Responder::Module, 2, &[InitiatorSpec::new("node-f", "cluster-f").concurrency(2)])?;
    topo.wait_tunnels(2, TUNNELS_UP)?;
    let r = topo.get("node-f", "/direct")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let pid = topo.initiator(0).envoy().map(|e| e.pid()).ok_or("initiator not running")?;
    signal(pid, "STOP")?;
    let frozen_at = Instant::now();
    // Bound (ping_interval 2 s, threshold 3): (3-1)*(2+0.3) + 3*1 s + ticks ~= 8 s after the first
    // unanswered ping, which itself is at most one interval (+jitter) away.
    let bound = Duration::from_secs(12);
    let res = topo.wait_tunnels(0, bound + Duration::from_secs(2));
    let took = frozen_at.elapsed();
    signal(pid, "CONT")?;
    res?;
    assert!(took <= bound, "tunnels of a frozen initiator closed after {took:?}");
    let stats = topo.responder().stats()?;
    let closed = |reason: &str| {
        stats.get(&format!("rt.upstream_rc.tunnels_closed.close_reason.{reason}")).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(closed("idle_ping_timeout") >= 1, "idle tunnel not closed by RPING keepalive: {stats:?}");
    assert!(closed("http2_ping_timeout") >= 1, "in-use tunnel not closed by HTTP/2 PING keepalive");
    // ... and the lifecycle log says so (docs/protocol.md#lifecycle-log: http2_keepalive_timeout, UpstreamEnd).
    let path = topo.lifecycle_log();
    wait_for("lifecycle log has http2_keepalive_timeout", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let hit = text.lines().any(|l| l.contains("\"event\":\"http2_keepalive_timeout\"") && l.contains("UpstreamEnd") && l.contains("http2_ping_timeout"));
        Ok(if hit { Check::Done(()) } else { Check::NotYet(format!("{} lines", text.lines().count())) })
    })?;
    // Thawed, the initiator notices the closes and re-dials on its maintenance tick (~10 s).
    topo.wait_tunnels(2, Duration::from_secs(30))?;
    let r = topo.get("node-f", "/direct")?;
    assert_eq!(r.status, 200, "after SIGCONT: {}", r.body);
    Ok(())
}

/// Reads a JSON-lines lifecycle log: per event name, the set of keys of its `lifecycle` struct
/// and its `log_type`.
fn lifecycle_shape(path: &std::path::Path) -> Result<std::collections::BTreeMap<String, (Vec<String>, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let lc = v.get("lifecycle").and_then(|l| l.as_object()).ok_or(format!("no lifecycle struct: {line}"))?;
        let event = lc.get("event").and_then(|e| e.as_str()).unwrap_or("?").to_string();
        let mut keys: Vec<String> = lc.keys().cloned().collect();
        keys.sort();
        let log_type = v.get("log_type").and_then(|t| t.as_str()).unwrap_or("?").to_string();
        // One entry per (event, access-log type): a tunnel_closed of an idle tunnel and of a used
        // one differ in type (TcpConnectionEnd / UpstreamEnd), and either may come first.
        out.entry(event.clone()).or_insert((keys.clone(), log_type.clone()));
        out.entry(format!("{event}@{log_type}")).or_insert((keys, log_type));
    }
    Ok(out)
}

/// The same `access_log` block on the built-in responder and ours, the same scripted life:
/// a real initiator connects, is pinged, carries a request (handoff) and is killed; a raw
/// initiator connects and stops answering RPING (misses, timeout). The events both emit carry the
/// same lifecycle keys and access-log types. Ours logs `idle_ping_sent` / `idle_ping_ack` only
/// with the runtime key `reverse_tunnel.lifecycle.ping_events` (set here; the built-in always does).
#[test]
fn lifecycle_access_log_matches_the_builtin() -> Result<()> {
    use rt_integration::load::{Behavior, LoadConfig, LoadGen};
    let _serial = serial();
    let mut shapes = Vec::new();
    for kind in [Responder::Builtin, Responder::Module] {
        let mut topo = Topology::start_with(
            "lifecycle",
            kind,
            1,
            &[InitiatorSpec::new("node-l", "cluster-l")],
            &[("PING_EVENTS", "true".to_string())],
        )?;
        topo.wait_tunnels(1, TUNNELS_UP)?;
        let mut silent = LoadGen::start(LoadConfig::new(topo.handshake_port, 1, Behavior::Silent).ids("node-s", "cluster-s", "tenant-s"))?;
        silent.wait_up(Duration::from_secs(5))?;
        let path = topo.lifecycle_log();
        // The real initiator answers a ping before it carries the request.
        wait_for(&format!("{kind:?} lifecycle log has idle_ping_ack"), Duration::from_secs(10), || {
            let s = lifecycle_shape(&path).unwrap_or_default();
            Ok(if s.contains_key("idle_ping_ack") { Check::Done(()) } else { Check::NotYet(format!("{:?}", s.keys())) })
        })?;
        let r = topo.get("node-l", "/direct")?;
        assert_eq!(r.status, 200, "{kind:?}: {}", r.body);
        let want = ["tunnel_setup", "idle_ping_sent", "idle_ping_ack", "idle_ping_miss", "idle_ping_timeout", "socket_handoff"];
        wait_for(&format!("{kind:?} lifecycle log has the ping and timeout events"), Duration::from_secs(25), || {
            let s = lifecycle_shape(&path).unwrap_or_default();
            Ok(if want.iter().all(|e| s.contains_key(*e)) { Check::Done(()) } else { Check::NotYet(format!("{:?}", s.keys())) })
        })?;
        topo.kill_initiator(0)?;
        silent.close_all();
        let shape = wait_for(&format!("{kind:?} lifecycle log has both tunnel_closed kinds"), Duration::from_secs(20), || {
            let s = lifecycle_shape(&path).unwrap_or_default();
            let done = s.contains_key("tunnel_closed@TcpConnectionEnd") && s.contains_key("tunnel_closed@UpstreamEnd");
            Ok(if done { Check::Done(s) } else { Check::NotYet(format!("{:?}", s.keys())) })
        })?;
        shapes.push((kind, shape));
    }
    let (builtin, ours) = (&shapes[0].1, &shapes[1].1);
    for event in [
        "tunnel_setup@TcpUpstreamConnected",
        "idle_ping_sent@TcpUpstreamConnected",
        "idle_ping_ack@TcpUpstreamConnected",
        "idle_ping_miss@TcpUpstreamConnected",
        "idle_ping_timeout@TcpUpstreamConnected",
        "socket_handoff@UpstreamPoolReady",
        "tunnel_closed@TcpConnectionEnd",
        "tunnel_closed@UpstreamEnd",
    ] {
        let b = builtin.get(event).ok_or(format!("built-in did not log {event}: {builtin:?}"))?;
        let o = ours.get(event).ok_or(format!("module did not log {event}: {ours:?}"))?;
        assert_eq!(o, b, "{event}: keys and log type (ours vs built-in)");
    }
    for event in ours.keys() {
        assert!(builtin.contains_key(event), "module logged an event the built-in did not: {event}");
    }
    Ok(())
}

/// Tenant isolation (docs/protocol.md#keys): two initiators with the SAME node and cluster ids but
/// different tenants. A request keyed `tenant:node` (or `tenant:cluster`) only ever reaches its
/// own tenant's initiator, under concurrent requests; an unknown tenant gets 503.
#[test]
fn tenant_isolation_never_crosses_tenants() -> Result<()> {
    let _serial = serial();
    let kind = responder_under_test();
    if kind == Responder::Builtin {
        return Ok(());
    }
    let overrides = [
        ("TENANT_ISOLATION", "true".to_string()),
        ("TARGET_FORMAT", "%REQ(x-remote-tenant-id)%:%REQ(x-remote-node-id)%".to_string()),
        ("ROUTE_TENANT", "tenant_header: x-remote-tenant-id,".to_string()),
    ];
    let specs = [
        InitiatorSpec::new("node-same", "cluster-same").tenant("tenant-a").concurrency(2),
        InitiatorSpec::new("node-same", "cluster-same").tenant("tenant-b").concurrency(2),
    ];
    let mut topo = Topology::start_with("isolation", kind, 2, &specs, &overrides)?;
    topo.wait_tunnels(4, TUNNELS_UP)?;
    let port = topo.egress_port;
    let per_tenant = 100u64;
    let mut workers = Vec::new();
    for (tenant, target) in [("tenant-a", "node-same"), ("tenant-b", "node-same"), ("tenant-a", "cluster-same"), ("tenant-b", "cluster-same")] {
        workers.push(std::thread::spawn(move || -> Result<u64> {
            let mut ok = 0;
            for i in 0..per_tenant / 2 {
                let r = rt_integration::http::http_get(port, &format!("/{tenant}/{i}"), &[(NODE_HEADER, target), ("x-remote-tenant-id", tenant)])?;
                if r.status == 200 {
                    ok += 1;
                }
            }
            Ok(ok)
        }));
    }
    let mut total_ok = 0;
    for w in workers {
        total_ok += w.join().map_err(|_| "request thread panicked".to_string())??;
    }
    assert_eq!(total_ok, 2 * per_tenant, "every request is served");
    // Each initiator's backend saw exactly its own tenant's requests.
    assert_eq!(topo.initiator(0).backend.requests_served(), per_tenant, "tenant-a's backend");
    assert_eq!(topo.initiator(1).backend.requests_served(), per_tenant, "tenant-b's backend");
    let r = rt_integration::http::http_get(port, "/x", &[(NODE_HEADER, "node-same"), ("x-remote-tenant-id", "tenant-c")])?;
    assert_eq!(r.status, 503, "unknown tenant: {}", r.body);
    let r = rt_integration::http::http_get(port, "/x", &[(NODE_HEADER, "node-same")])?;
    assert_eq!(r.status, 503, "no tenant header: {}", r.body);
    Ok(())
}
