//! Spare tunnels on the recommended configuration (`envoy-config/upstream-direct.yaml`): listener
//! filter `reverse_tunnel_spares` notes each accepted socket, and the handshake filter keeps a
//! node's first tunnel on each worker as an Envoy connection (its *keeper*) and moves every
//! further one to that worker's socket loop (docs/architecture.md#spare-tunnels). What this test
//! proves against real Envoy 1.40.0 and a real initiator: which tunnels stay Envoy connections,
//! that requests use the keepers and never a spare while a keeper is there, that a move costs
//! no tunnel (no close, no re-dial), and that keepers are chosen afresh after the initiator
//! comes back.
//!
//! ```text
//! cargo test --release -p rt-integration --test spares -- --test-threads=1
//! ```

use std::time::Duration;

use rt_integration::{ensure, serial, InitiatorSpec, Responder, Result, Topology};

const NODE: &str = "spares-node";

/// Tunnels of the admin listing as (worker, state) pairs.
fn listing(topo: &mut Topology) -> Result<Vec<(String, String)>> {
    let text = topo.responder().admin_get("/reverse_tunnels?format=text")?;
    let field = |l: &str, k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).unwrap_or("").to_string();
    Ok(text.lines().filter(|l| l.contains("node=")).map(|l| (field(l, "worker="), field(l, "state="))).collect())
}

/// Envoy's live connections on the handshake listener.
fn envoy_connections(topo: &mut Topology) -> Result<u64> {
    let stat = format!("listener.127.0.0.1_{}.downstream_cx_active", topo.handshake_port);
    Ok(topo.responder().stat_u64(&stat)?.unwrap_or(0))
}

#[test]
fn a_nodes_first_tunnel_per_worker_stays_in_envoy_and_the_spares_move_to_socket_loops() -> Result<()> {
    let _serial = serial();
    // 2 initiator workers x 4 tunnels = 8 tunnels of one node, spread over 2 responder workers.
    let spec = InitiatorSpec::new(NODE, "spares-cluster").concurrency(2).tunnels(4);
    let mut topo = Topology::start("spares", Responder::Direct, 2, &[spec])?;
    topo.wait_tunnels(8, Duration::from_secs(20))?;

    let tunnels = listing(&mut topo)?;
    let keepers: Vec<_> = tunnels.iter().filter(|(w, _)| w.starts_with("worker_")).collect();
    let spares = tunnels.iter().filter(|(w, _)| w.starts_with("socket_loop_")).count();
    println!("tunnels: {tunnels:?}");
    ensure!(keepers.len() == 2 && spares == 6, "expected 2 keepers and 6 spares: {tunnels:?}");
    ensure!(keepers[0].0 != keepers[1].0, "one keeper per worker: {keepers:?}");
    ensure!(envoy_connections(&mut topo)? == 2, "Envoy holds a connection for the keepers only");

    // Requests from both responder workers: all 2xx, all on the keepers (a spare is only used
    // when its worker has no keeper session for the node).
    let log = topo.dir().file("h2load.log");
    let r = rt_integration::bench::run_h2load_on(topo.egress_port, NODE, "/direct", 4000, 4, 8, &log)?;
    ensure!(r.total == 4000 && r.ok_2xx == 4000, "h2load: {}/{} 2xx", r.ok_2xx, r.total);
    let tunnels = listing(&mut topo)?;
    let used_spares = tunnels.iter().filter(|(w, s)| w.starts_with("socket_loop_") && s == "in_use").count();
    let used_keepers = tunnels.iter().filter(|(w, s)| w.starts_with("worker_") && s == "in_use").count();
    ensure!(used_spares == 0 && used_keepers >= 1, "requests used the keepers only: {tunnels:?}");

    // The moves closed no tunnel: nothing was counted closed and nothing re-dialled.
    let closed: u64 = topo
        .tunnel_stats()?
        .iter()
        .filter(|(k, _)| k.contains("tunnels_closed"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    ensure!(closed == 0, "{closed} tunnel(s) counted closed");
    let moved = topo.responder().stat_u64("rt.upstream_rc.spare_tunnels_moved")?.unwrap_or(0);
    ensure!(moved == 6, "spare_tunnels_moved is {moved}, expected 6");
    ensure!(topo.tunnels()? == 8, "the tunnels stay");

    // The initiator goes away and comes back: its old keepers are gone, so the first new tunnel
    // on each worker is a keeper again.
    topo.kill_initiator(0)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while topo.tunnels()? > 0 {
        ensure!(std::time::Instant::now() < deadline, "tunnels still listed after the initiator died");
        std::thread::sleep(Duration::from_millis(100));
    }
    topo.restart_initiator(0)?;
    topo.wait_tunnels(8, Duration::from_secs(20))?;
    let tunnels = listing(&mut topo)?;
    let keepers = tunnels.iter().filter(|(w, _)| w.starts_with("worker_")).count();
    ensure!(keepers == 2, "new keepers after the initiator came back: {tunnels:?}");
    ensure!(envoy_connections(&mut topo)? == 2, "Envoy holds a connection for the keepers only");
    let r = rt_integration::bench::run_h2load_on(topo.egress_port, NODE, "/direct", 1000, 2, 4, &log)?;
    ensure!(r.ok_2xx == 1000, "h2load after the restart: {}/1000 2xx", r.ok_2xx);
    Ok(())
}
