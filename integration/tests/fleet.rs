//! A responder fleet: two responders with our module behind a front Envoy
//! (`envoy-config/fleet/`), two built-in initiators (distinct nodes) each keeping tunnels to both
//! responders, and request load through the front for the whole test. A responder SIGKILLed,
//! restarted, and a rolling drain-and-restart of both responders in turn: no request fails and
//! every request is answered by the node it names.

use std::time::{Duration, Instant};

use rt_integration::fleet::{Fleet, FleetLoad, LoadCounts, DRAIN_TIME_S};
use rt_integration::http::http_get;
use rt_integration::topology::NODE_HEADER;
use rt_integration::{bail, ensure, InitiatorSpec, Result};

/// Client threads of the load, and their pause between two requests.
const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(2);

/// Longest any responder may take to get all its tunnels back.
const TUNNELS_BACK: Duration = Duration::from_secs(30);

fn no_failures(phase: &str, c: &LoadCounts, fleet: &mut Fleet) -> Result<()> {
    ensure!(
        c.failed == 0,
        "{phase}: {} of {} requests failed; first (time since the load started): {:#?}\n{}\n{}",
        c.failed,
        c.sent,
        c.failures,
        fleet.diagnostics(),
        fleet.logs_tail(20)
    );
    Ok(())
}

#[test]
fn fleet_survives_a_killed_responder_and_a_rolling_restart() -> Result<()> {
    let _serial = rt_integration::serial();
    let specs = [
        InitiatorSpec::new("fleet-node-1", "fleet-c1").tunnels(2),
        InitiatorSpec::new("fleet-node-2", "fleet-c2").tunnels(2),
    ];
    let mut fleet = Fleet::start("fleet", 2, &specs)?;
    fleet.wait_all_tunnels(TUNNELS_BACK)?;
    let names: Vec<String> = (0..2).map(|i| fleet.responder(i).name.clone()).collect();

    // Every responder holds count x workers tunnels of every node and names itself.
    for (i, name) in names.iter().enumerate() {
        let v = fleet.view(i)?;
        assert_eq!(v.responder.as_deref(), Some(name.as_str()), "admin listing of {name}");
        assert!(!v.draining);
        for node in fleet.nodes() {
            assert_eq!(
                v.by_node.get(&node).copied(),
                Some(fleet.tunnels_per_node(&node)),
                "{name}: tunnels of {node}: {v:?}"
            );
        }
    }

    // A node a responder has no tunnel of: a 503 that says so (and that the front retries).
    let port = fleet.responder(0).egress_port;
    let r = http_get(port, "/x", &[(NODE_HEADER, "no-such-node")])?;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body,
        format!("no reverse tunnel for node no-such-node at responder {}\n", names[0])
    );
    assert_eq!(r.header("x-reverse-tunnel-no-tunnel"), Some("no-such-node"));
    let retries_before = fleet
        .front()
        .stat_u64("cluster.responders.upstream_rq_retry")?
        .unwrap_or(0);
    let r = http_get(fleet.front_port, "/x", &[(NODE_HEADER, "no-such-node")])?;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body
            .starts_with("no reverse tunnel for node no-such-node at responder "),
        "{r:?}"
    );
    let retries = fleet
        .front()
        .stat_u64("cluster.responders.upstream_rq_retry")?
        .unwrap_or(0)
        - retries_before;
    assert!(retries >= 1, "the front retried the 503 ({retries} retries)");
    println!(
        "fleet: unknown node -> 503 {:?} after {retries} retries at the front",
        r.body.trim_end()
    );

    let load = FleetLoad::start(fleet.front_port, fleet.nodes(), CLIENTS, PAUSE);
    let t0 = Instant::now();
    let at = || format!("{:.1}s", t0.elapsed().as_secs_f64());
    for name in &names {
        load.wait_served_by(name, 50, Duration::from_secs(20))?;
    }
    no_failures("steady load", &load.counts(), &mut fleet)?;

    // 1. SIGKILL responder A under load: the front retries its requests on B.
    let before = load.counts();
    println!("fleet: {} SIGKILL {}", at(), names[0]);
    fleet.kill_responder(0)?;
    load.wait_served_by(&names[1], 500, Duration::from_secs(30))?;
    let after_kill = load.counts();
    no_failures("after SIGKILL of responder-a", &after_kill, &mut fleet)?;
    println!(
        "fleet: SIGKILL {}: {} requests while it was down, 0 failed",
        names[0],
        after_kill.sent - before.sent
    );

    // 2. Start A again: the initiators come back to it and the front sends to it again.
    println!("fleet: {} starting {} again", at(), names[0]);
    fleet.start_responder(0)?;
    let back = fleet.wait_tunnels(0, TUNNELS_BACK)?;
    let serving = load.wait_served_by(&names[0], 50, Duration::from_secs(30))?;
    no_failures("after restarting responder-a", &load.counts(), &mut fleet)?;
    println!(
        "fleet: {} restarted: every node's tunnels back after {:.1}s, serving again {:.1}s later",
        names[0],
        back.as_secs_f64(),
        serving.as_secs_f64()
    );
    ensure!(
        back < Duration::from_secs(7),
        "tunnels took {back:?} to come back (maintain_interval 1s, max_reconnect_backoff 2s: at most ~3.5 s expected)"
    );

    // 3. Rolling restart, one responder at a time: drain, wait until no tunnel is in use, stop,
    // start, wait for the tunnels.
    for i in 0..2 {
        let name = names[i].clone();
        let other = names[1 - i].clone();
        let sent_before = load.counts().sent;
        // Before a responder goes away, the others must be in the front's rotation (an ejected
        // one could not take over).
        let ejected_for = fleet.wait_front_all_in(Duration::from_secs(20))?;
        println!(
            "fleet: {} draining {name} (no responder ejected at the front; waited {:.1}s for that)",
            at(),
            ejected_for.as_secs_f64()
        );
        let drained = fleet.drain_responder(i, Duration::from_secs(30))?;
        println!("fleet: {} {name} drained, stopping and starting it", at());
        // While it drains the other one serves.
        load.wait_served_by(&other, 50, Duration::from_secs(20))?;
        fleet.stop_responder(i);
        fleet.start_responder(i)?;
        let back = fleet.wait_tunnels(i, TUNNELS_BACK)?;
        let serving = load.wait_served_by(&name, 50, Duration::from_secs(30))?;
        let c = load.counts();
        no_failures(&format!("rolling restart of {name}"), &c, &mut fleet)?;
        println!(
            "fleet: rolling restart of {name}: drained (listener closed after --drain-time-s {DRAIN_TIME_S}, no tunnel in use) in {:.1}s, \
             tunnels back {:.1}s after the start, serving {:.1}s later; {} requests meanwhile, 0 failed",
            drained.as_secs_f64(),
            back.as_secs_f64(),
            serving.as_secs_f64(),
            c.sent - sent_before
        );
    }

    let c = load.stop();
    no_failures("whole test", &c, &mut fleet)?;
    println!(
        "fleet: {} requests, {} ok, {} failed; by responder {:?}; by node {:?}",
        c.sent, c.ok, c.failed, c.by_responder, c.by_node
    );
    ensure!(c.ok == c.sent, "every request answered by its node");
    for node in fleet.nodes() {
        ensure!(
            c.by_node.get(&node).copied().unwrap_or(0) > 100,
            "{node} got few requests: {:?}",
            c.by_node
        );
    }
    // The front did retry (the kill and the restarts were not free), and counted no failure.
    let front_retries = fleet
        .front()
        .stat_u64("cluster.responders.upstream_rq_retry")?
        .unwrap_or(0);
    println!("fleet: the front retried {front_retries} request attempts in all");
    // Each responder, after its restart, again names itself and holds all tunnels.
    for (i, name) in names.iter().enumerate() {
        let v = fleet.view(i)?;
        assert_eq!(
            (v.responder.as_deref(), v.draining),
            (Some(name.as_str()), false),
            "{name}"
        );
    }
    Ok(())
}

/// The check of the check: the same fleet with the front's `retry_policy` taken out loses
/// requests when a responder is SIGKILLed under load (so the test above can fail).
#[test]
fn without_the_retry_policy_a_killed_responder_fails_requests() -> Result<()> {
    let _serial = rt_integration::serial();
    let specs = [
        InitiatorSpec::new("noretry-1", "noretry-c1"),
        InitiatorSpec::new("noretry-2", "noretry-c2"),
    ];
    let mut fleet = Fleet::start_edited("fleet-noretry", 2, &specs, |text| {
        let (Some(a), Some(b)) = (
            text.find("                  retry_policy:"),
            text.find("          http_filters:"),
        ) else {
            bail!("front.yaml has no retry_policy before http_filters");
        };
        Ok(format!("{}{}", &text[..a], &text[b..]))
    })?;
    fleet.wait_all_tunnels(TUNNELS_BACK)?;
    let names: Vec<String> = (0..2).map(|i| fleet.responder(i).name.clone()).collect();
    let load = FleetLoad::start(fleet.front_port, fleet.nodes(), CLIENTS, PAUSE);
    for name in &names {
        load.wait_served_by(name, 50, Duration::from_secs(20))?;
    }
    let before = load.counts();
    fleet.kill_responder(0)?;
    load.wait_served_by(&names[1], 500, Duration::from_secs(30))?;
    let c = load.stop();
    println!(
        "fleet without retries: SIGKILL {}: {} of {} requests failed (first: {:?})",
        names[0],
        c.failed - before.failed,
        c.sent - before.sent,
        c.failures.first()
    );
    ensure!(
        c.failed > before.failed,
        "no request failed without the retry policy: {c:?}"
    );
    Ok(())
}
