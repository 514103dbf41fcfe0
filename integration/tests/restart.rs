//! Faults: an initiator killed with requests in flight, and responder restarts.
//!
//! Responder restarts: after a crash (SIGKILL) or a graceful stop of our
//! responder, real Envoy 1.40.0 initiators re-dial by themselves, requests succeed again, and no
//! request is ever answered by the wrong node.
//!
//! Hot restart (`--restart-epoch`) is not covered: Envoy passes listening sockets to the new epoch
//! but not established connections, so every tunnel stays with the old epoch until it drains and
//! the initiators re-dial the new one, which is the graceful case tested here.

use std::time::{Duration, Instant};

use rt_integration::http::http_request_timeout;
use rt_integration::topology::NODE_HEADER;
use rt_integration::{wait_for, Check, Error, InitiatorSpec, Responder, Result, Topology};

const WORKERS: u32 = 2;

/// Polls every node until each answers 200 with its own body; fails at once on a 200 with
/// another node's body. Returns how long it took.
fn until_all_served(topo: &mut Topology, nodes: &[(String, String)], timeout: Duration) -> Result<Duration> {
    let t = Instant::now();
    wait_for("every node served through a tunnel again", timeout, || {
        let mut waiting = Vec::new();
        for (node, body) in nodes {
            match topo.get(node, "/direct") {
                Ok(r) if r.status == 200 && r.body == *body => {}
                Ok(r) if r.status == 200 => {
                    return Err(Error(format!("request for {node} answered by another node: {:?}", r.body)));
                }
                Ok(r) => waiting.push(format!("{node}: {}", r.status)),
                Err(e) => waiting.push(format!("{node}: {}", e.0)),
            }
        }
        Ok(if waiting.is_empty() { Check::Done(()) } else { Check::NotYet(waiting.join(", ")) })
    })?;
    Ok(t.elapsed())
}

#[test]
fn responder_restart_initiators_reconnect_and_nodes_stay_apart() -> Result<()> {
    let specs = [InitiatorSpec::new("restart-a", "restart-c1"), InitiatorSpec::new("restart-b", "restart-c2")];
    let mut topo = Topology::start("restart", Responder::Module, WORKERS, &specs)?;
    let expected = topo.expected_tunnels();
    topo.wait_tunnels(expected, Duration::from_secs(30))?;
    let nodes: Vec<(String, String)> = (0..topo.initiator_count())
        .map(|i| (topo.initiator(i).spec.node_id.clone(), topo.initiator(i).direct_body()))
        .collect();
    until_all_served(&mut topo, &nodes, Duration::from_secs(10))?;

    for (crash, what) in [(true, "SIGKILL"), (false, "graceful stop")] {
        topo.restart_responder(crash, WORKERS)?;
        // A fresh process: nothing is registered until the initiators re-dial.
        let took = until_all_served(&mut topo, &nodes, Duration::from_secs(60))
            .map_err(|e| Error(format!("after {what}: {e}\n{}", topo.logs_tail(20))))?;
        topo.wait_tunnels(expected, Duration::from_secs(30))?;
        println!("restart: after {what}, both nodes served again in {:.1}s, {expected} tunnels back", took.as_secs_f64());
        // Requests keep going to the right node afterwards.
        for _ in 0..20 {
            for (node, body) in &nodes {
                let r = topo.get(node, "/direct")?;
                assert_eq!((r.status, r.body.as_str()), (200, body.as_str()), "{node} after {what}");
            }
        }
    }
    Ok(())
}

/// Initiator A is SIGKILLed while six slow requests to it are in flight: each of them ends
/// with a 5xx or a reset within a bound, never a 200; node B keeps serving throughout; A's
/// tunnels leave the tracker and are counted as closed.
#[test]
fn initiator_killed_with_requests_in_flight() -> Result<()> {
    let specs = [
        InitiatorSpec::new("inflight-a", "inflight-c1").concurrency(2).tunnels(1),
        InitiatorSpec::new("inflight-b", "inflight-c2"),
    ];
    let mut topo = Topology::start("inflight", Responder::Module, WORKERS, &specs)?;
    let expected = topo.expected_tunnels();
    let a_tunnels = topo.initiator(0).spec.expected_tunnels();
    topo.wait_tunnels(expected, Duration::from_secs(30))?;
    let b_body = topo.initiator(1).direct_body();
    let closed_before = closed_total(topo.responder())?;

    const SLOW: usize = 6;
    let port = topo.egress_port;
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = http_request_timeout(
                    port,
                    "GET",
                    &format!("/slow/{i}?delay_ms=20000"),
                    &[(NODE_HEADER, "inflight-a")],
                    b"",
                    Duration::from_secs(30),
                );
                (r, t.elapsed())
            })
        })
        .collect();
    // In flight: the egress listener holds all of them.
    topo.responder().wait_stat("http.egress_http.downstream_rq_active", |v| v >= SLOW as u64, Duration::from_secs(10))?;
    let killed_at = Instant::now();
    topo.kill_initiator(0)?;

    // B keeps serving while A's requests fail.
    for _ in 0..20 {
        let r = topo.get("inflight-b", "/direct")?;
        assert_eq!((r.status, r.body.as_str()), (200, b_body.as_str()), "node B while A dies");
    }
    let mut outcomes = Vec::new();
    for h in slow {
        let (r, took) = h.join().map_err(|_| Error::msg("request thread panicked"))?;
        match r {
            Ok(resp) => {
                assert!(resp.status >= 500, "an in-flight request to the killed node got {}: {:?}", resp.status, resp.body);
                outcomes.push(resp.status.to_string());
            }
            Err(e) => outcomes.push(format!("reset ({})", e.0)),
        }
        assert!(took < Duration::from_secs(15), "an in-flight request took {took:?} to fail");
    }
    println!(
        "inflight: {SLOW} requests in flight to the killed node ended as {outcomes:?}, {:.1}s after the kill at most",
        killed_at.elapsed().as_secs_f64()
    );
    topo.wait_tunnels(expected - a_tunnels, Duration::from_secs(15))?;
    let closed = closed_total(topo.responder())? - closed_before;
    assert!(closed >= a_tunnels, "tunnels_closed grew by {closed}, want >= {a_tunnels}");
    let r = topo.get("inflight-a", "/direct")?;
    assert_eq!(r.status, 503, "the killed node has no tunnel: {}", r.body);
    // The egress HCM's local_reply_config says why (envoy-config/upstream.yaml).
    assert_eq!(r.body, "no reverse tunnel for node inflight-a\n");
    assert_eq!(r.header("x-reverse-tunnel-no-tunnel"), Some("inflight-a"));
    Ok(())
}

fn closed_total(envoy: &mut rt_integration::Envoy) -> Result<u64> {
    Ok(envoy
        .stats_with_prefix("rt.upstream_rc.tunnels_closed.")?
        .iter()
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}
