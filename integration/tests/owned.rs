//! Owned sockets (`envoy-config/upstream-owned.yaml`): the listener filter `reverse_tunnel` takes
//! every socket of the handshake listener from Envoy and the module serves it on its own socket
//! loop. What only this configuration has: Envoy keeps no connection per tunnel, and the
//! tunnels are listed on the loops. The shared behaviour (handshake answers, keepalive, drain,
//! bodies, gRPC, cancellation) runs in the `conformance`, `keepalive`, `robustness`, `route` and
//! `grpc` suites on both configurations.
//!
//! ```text
//! cargo test --release -p rt-integration --test owned -- --test-threads=1
//! ```

use std::time::Duration;

use rt_integration::{ensure, serial, InitiatorSpec, Responder, Result, Topology};

const NODE: &str = "owned-node";

#[test]
fn envoy_keeps_no_connection_for_owned_tunnels_and_both_workers_use_them() -> Result<()> {
    let _serial = serial();
    let spec = InitiatorSpec::new(NODE, "owned-cluster").concurrency(2).tunnels(2);
    let mut topo = Topology::start("owned-listing", Responder::Owned, 2, &[spec])?;
    topo.wait_tunnels(4, Duration::from_secs(20))?;

    // Envoy accepted the four sockets and made no connection of any of them.
    let listener = format!("listener.127.0.0.1_{}", topo.handshake_port);
    let accepted = topo.responder().stat_u64(&format!("{listener}.downstream_cx_total"))?.unwrap_or(0);
    let active = topo.responder().stat_u64(&format!("{listener}.downstream_cx_active"))?.unwrap_or(0);
    println!("handshake listener: downstream_cx_total {accepted}, downstream_cx_active {active}");
    ensure!(active == 0, "Envoy holds {active} connection(s) on the handshake listener");

    // The admin listing shows each tunnel on the socket loop of the worker that accepted it.
    let listing = topo.responder().admin_get("/reverse_tunnels?format=text")?;
    let on_loops = listing.lines().filter(|l| l.contains("worker=socket_loop_")).count();
    ensure!(on_loops == 4, "expected 4 tunnels on socket loops:\n{listing}");

    // Requests of both responder workers share them: h2load over 4 connections, all 2xx.
    let log = topo.dir().file("h2load.log");
    let r = rt_integration::bench::run_h2load_on(topo.egress_port, NODE, "/direct", 4000, 4, 8, &log)?;
    ensure!(r.total == 4000 && r.ok_2xx == 4000, "h2load: {}/{} 2xx", r.ok_2xx, r.total);
    ensure!(topo.tunnels()? == 4, "the tunnels stay");
    Ok(())
}
