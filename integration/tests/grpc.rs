//! Real gRPC through a reverse tunnel: the `grpcio` client and server of `integration/grpc/`
//! (installed into `.venv` by `scripts/setup.sh`) on both sides of real Envoy 1.40.0 processes:
//!
//! ```text
//! client.py ─h2c─► responder (our module, 2 workers) ═ one tunnel ═► built-in initiator
//!                                                       ─► cluster local-grpc (HTTP/2) ─► server.py
//! ```
//!
//! The responder runs the route filter (`Responder::Direct`) or the cluster path
//! (`Responder::Module`). The initiator keeps ONE tunnel, and the responder's HTTP listener spreads
//! the client's connections over both workers (exact balance, set by the test), so every call of
//! the second worker goes over the tunnel session of the first. Unary calls (payloads up to 1 MiB,
//! checksums, trailing metadata), bidirectional streams echoed in order with a bounded window (a
//! path that held back messages would stall them), server and client streaming, calls for an
//! unknown node (UNAVAILABLE at once), and an initiator without a gRPC server (UNAVAILABLE).
//!
//! Ignored, each failing because of a module bug described at the test: an unknown node on the
//! route filter (its 503 reaches gRPC clients as status OK), and the very first calls arriving on
//! both workers at once (a claim racing the first claim of the only tunnel gets none); the load
//! tests therefore start with one warm-up call.
//!
//! Run (after `cargo build --release -p reverse_tunnel` and `scripts/setup.sh`):
//!
//! ```text
//! cargo test --release -p rt-integration --test grpc -- --test-threads=1 --nocapture
//! ```

use std::time::Duration;

use rt_integration::grpc::{require_grpcio, run_client, ClientRun};
use rt_integration::tmp::insert_sibling_lines;
use rt_integration::{bail, ensure, serial, InitiatorSpec, Responder, Result, Topology};

const NODE: &str = "grpc-node";
const CLUSTER: &str = "grpc-cluster";
/// Deadline for the initiator's tunnel (it dials right at startup).
const TUNNELS_UP: Duration = Duration::from_secs(20);
/// Deadline for one client run (each call also has its own gRPC deadline, `--deadline`).
const CLIENT_RUN: Duration = Duration::from_secs(60);
/// Responder workers: two, sharing the initiator's one tunnel.
const RESPONDER_WORKERS: u32 = 2;

/// Responder with two workers whose HTTP listener balances connections exactly over them (so a
/// client with several channels uses both workers), and one initiator with one tunnel and a gRPC
/// server behind it; waits for the tunnel.
fn start(label: &str, kind: Responder) -> Result<Topology> {
    require_grpcio()?;
    let mut topo = Topology::start_edited(
        label,
        kind,
        RESPONDER_WORKERS,
        &[InitiatorSpec::new(NODE, CLUSTER).concurrency(1).tunnels(1).grpc(true)],
        &[],
        |text| {
            insert_sibling_lines(
                &text,
                "- name: egress_http",
                &["  connection_balance_config: {exact_balance: {}}"],
            )
        },
    )?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    Ok(topo)
}

/// Runs the client against the responder's HTTP listener and prints its result line.
fn client(topo: &Topology, node: &str, args: &[&str]) -> Result<ClientRun> {
    let run = run_client(topo.dir(), topo.egress_port, node, args, CLIENT_RUN)?;
    println!("[grpc {:?}] {}", topo.kind, run.result);
    Ok(run)
}

/// The run succeeded (exit 0): every call answered as expected, `calls` calls, all OK, served
/// by [`NODE`] and seen there with the node header intact.
fn expect_ok(topo: &mut Topology, what: &str, run: &ClientRun, calls: u64) -> Result<()> {
    let ok = run.success
        && run.u64("failed") == 0
        && run.u64("ok") == calls
        && run.result["codes"]["OK"].as_u64() == Some(calls)
        && run.strings("served_by") == [NODE]
        && run.strings("seen_node") == [NODE];
    if !ok {
        let kind = topo.kind;
        bail!(
            "{what} over {kind:?}: expected {calls} OK calls served by {NODE}, got {}\nclient output:\n{}\n{}",
            run.result,
            run.output,
            topo.logs_tail(30)
        );
    }
    Ok(())
}

/// Connections each responder worker accepted on the HTTP listener.
fn egress_connections_per_worker(topo: &mut Topology) -> Result<Vec<u64>> {
    let prefix = format!("listener.127.0.0.1_{}.worker_", topo.egress_port);
    let stats = topo.responder().stats_with_prefix(&prefix)?;
    let mut per_worker = vec![0; RESPONDER_WORKERS as usize];
    for (name, value) in stats {
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        if let Some((worker, "downstream_cx_total")) = rest.split_once('.') {
            let w: usize = worker.parse().map_err(|_| format!("odd stat name {name}"))?;
            if w < per_worker.len() {
                per_worker[w] = value.trim().parse().map_err(|_| format!("{name} = {value}"))?;
            }
        }
    }
    Ok(per_worker)
}

/// After the calls: still exactly one tunnel, and both workers took client connections (so the
/// calls of one of them crossed to the other's tunnel).
fn expect_one_tunnel_both_workers(topo: &mut Topology) -> Result<()> {
    let tunnels = topo.tunnels()?;
    let per_worker = egress_connections_per_worker(topo)?;
    println!("[grpc {:?}] tunnels {tunnels}, client connections per responder worker {per_worker:?}", topo.kind);
    ensure!(tunnels == 1, "expected the one tunnel to stay, the responder has {tunnels}");
    ensure!(
        per_worker.iter().all(|&n| n >= 1),
        "expected client connections on both responder workers, got {per_worker:?}"
    );
    Ok(())
}

/// One call on one connection, so that the tunnel's HTTP/2 session runs before calls arrive on
/// both workers at once (that first moment is checked on its own by
/// `first_calls_on_both_workers_at_once_*`).
fn warm_up(topo: &mut Topology) -> Result<()> {
    let run = client(topo, NODE, &["--mode", "unary", "--count", "1", "--max-size", "100"])?;
    expect_ok(topo, "warm-up call", &run, 1)
}

/// 16 calls at once over 8 connections (4 per worker) right after the tunnel came up, before any
/// session runs: the first call of one worker claims the idle tunnel and the others must share it.
fn first_calls_on_both_workers_at_once(kind: Responder) -> Result<()> {
    let _g = serial();
    let mut topo = start(&format!("grpc-first-calls-{kind:?}"), kind)?;
    let run = client(
        &topo,
        NODE,
        &["--mode", "unary", "--count", "16", "--max-size", "1000", "--concurrency", "16", "--channels", "8"],
    )?;
    expect_ok(&mut topo, "16 first calls on both workers at once", &run, 16)?;
    expect_one_tunnel_both_workers(&mut topo)
}

/// Unary: `count` calls, 8 at a time over 4 connections, payloads from 0 bytes to 1 MiB.
fn unary(topo: &mut Topology, count: u64) -> Result<()> {
    let n = count.to_string();
    let run = client(
        topo,
        NODE,
        &["--mode", "unary", "--count", &n, "--max-size", "1048576", "--concurrency", "8", "--channels", "4"],
    )?;
    expect_ok(topo, "unary", &run, count)?;
    ensure!(
        !run.str("sent_sha256").is_empty() && run.str("sent_sha256") == run.str("received_sha256"),
        "unary checksums differ: {}",
        run.result
    );
    ensure!(run.u64("max_payload") == 1 << 20, "no 1 MiB payload was sent: {}", run.result);
    Ok(())
}

/// Bidi: `streams` streams of `messages` messages of 100 bytes over 4 connections, at most 4
/// unanswered per stream: the server echoes each message as it arrives and the client sends the
/// next only after an echo, so a path that buffered a stream would stall it (deadline).
fn bidi(topo: &mut Topology, streams: u64, messages: u64) -> Result<()> {
    let (s, m) = (streams.to_string(), messages.to_string());
    let run = client(
        topo,
        NODE,
        &["--mode", "bidi", "--streams", &s, "--messages", &m, "--size", "100", "--window", "4", "--channels", "4", "--deadline", "40"],
    )?;
    expect_ok(topo, "bidi", &run, streams)?;
    ensure!(run.u64("messages") == streams * messages, "bidi: {}", run.result);
    Ok(())
}

/// Calls for a node without a tunnel fail with UNAVAILABLE (HTTP 503) at once.
fn unknown_node_unavailable(topo: &mut Topology) -> Result<()> {
    let run = client(
        topo,
        "no-such-node",
        &["--mode", "unary", "--count", "20", "--max-size", "1000", "--concurrency", "4", "--expect-code", "UNAVAILABLE", "--deadline", "10"],
    )?;
    let ok = run.success
        && run.u64("ok") == 20
        && run.result["codes"]["UNAVAILABLE"].as_u64() == Some(20)
        && run.f64("latency_ms_max") < 1000.0;
    if !ok {
        let kind = topo.kind;
        bail!(
            "calls for an unknown node over {kind:?}: expected 20 x UNAVAILABLE, each within 1 s; got {}\n{}",
            run.result,
            topo.logs_tail(20)
        );
    }
    Ok(())
}

#[test]
fn direct_path_carries_grpc_over_one_shared_tunnel() -> Result<()> {
    route_filter_grpc("grpc-direct", Responder::Direct)
}

/// The same calls with owned sockets: the tunnel lives on the module's socket loop, so every
/// message crosses from the request's worker to the loop and back.
#[test]
fn owned_sockets_carry_grpc_over_one_shared_tunnel() -> Result<()> {
    route_filter_grpc("grpc-owned", Responder::Owned)
}

fn route_filter_grpc(label: &str, kind: Responder) -> Result<()> {
    let _g = serial();
    let mut topo = start(label, kind)?;

    warm_up(&mut topo)?;
    unary(&mut topo, 500)?;
    bidi(&mut topo, 10, 1000)?;

    // Server streaming: many small messages, then 1 MiB messages (each more than the 64 KiB
    // stream window the responder gives its clients, and a quarter of the tunnel stream's).
    let run = client(&topo, NODE, &["--mode", "server-stream", "--streams", "4", "--messages", "2000", "--size", "1024", "--channels", "2"])?;
    expect_ok(&mut topo, "server streaming (1 KiB)", &run, 4)?;
    let run = client(&topo, NODE, &["--mode", "server-stream", "--streams", "2", "--messages", "16", "--size", "1048576", "--channels", "2"])?;
    expect_ok(&mut topo, "server streaming (1 MiB)", &run, 2)?;
    // Client streaming: the request body streamed (8 MiB per stream).
    let run = client(&topo, NODE, &["--mode", "client-stream", "--streams", "4", "--messages", "256", "--size", "32768", "--channels", "2"])?;
    expect_ok(&mut topo, "client streaming", &run, 4)?;

    expect_one_tunnel_both_workers(&mut topo)
}

/// A call for a node without a tunnel must fail with UNAVAILABLE at once. Fails with Envoy
/// 1.40.0: the route filter answers with a local reply (`send_response`, 503 "no reverse tunnel
/// for node ..."), which Envoy turns for a gRPC request into a trailers-only response with
/// `grpc-status: 0` (the dynamic-module callback passes gRPC status 0 to `sendLocalReply`), so the
/// client sees a successful call without a message.
#[test]
fn direct_path_unknown_node_is_unavailable() -> Result<()> {
    let _g = serial();
    require_grpcio()?;
    let mut topo = Topology::start("grpc-direct-unknown", Responder::Direct, RESPONDER_WORKERS, &[])?;
    unknown_node_unavailable(&mut topo)
}

#[test]
fn cluster_path_carries_grpc_over_one_shared_tunnel() -> Result<()> {
    let _g = serial();
    let mut topo = start("grpc-cluster", Responder::Module)?;
    warm_up(&mut topo)?;
    unary(&mut topo, 100)?;
    bidi(&mut topo, 4, 250)?;
    unknown_node_unavailable(&mut topo)?;
    expect_one_tunnel_both_workers(&mut topo)
}

/// A node whose initiator has no gRPC server (its local-grpc cluster points at a closed port):
/// the initiator's 503 comes back through the tunnel as UNAVAILABLE.
#[test]
fn direct_path_initiator_without_grpc_server_is_unavailable() -> Result<()> {
    let _g = serial();
    require_grpcio()?;
    let mut topo = Topology::start("grpc-no-server", Responder::Direct, 1, &[InitiatorSpec::new(NODE, CLUSTER)])?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let run = client(
        &topo,
        NODE,
        &["--mode", "unary", "--count", "5", "--max-size", "100", "--concurrency", "1", "--expect-code", "UNAVAILABLE", "--deadline", "10"],
    )?;
    ensure!(
        run.success && run.u64("ok") == 5 && run.result["codes"]["UNAVAILABLE"].as_u64() == Some(5),
        "expected 5 x UNAVAILABLE from the initiator, got {}\n{}",
        run.result,
        topo.logs_tail(20)
    );
    Ok(())
}

/// The route filter marks a node's idle tunnel shareable in the same tracker step that claims it
/// (`Tracker::claim_session`), so a call from the other worker a moment later attaches to the
/// starting session instead of finding nothing (this failed 3 runs in 10 before that).
#[test]
fn first_calls_on_both_workers_at_once_direct() -> Result<()> {
    first_calls_on_both_workers_at_once(Responder::Direct)
}

/// The same on the cluster path: the egress filter claims with the connection's first bytes, and
/// an HTTP/2 client's preface makes that claim mark the tunnel shareable in the same tracker step
/// (the tunnel starts its session when the claim reaches it, first bytes included), so worker B's
/// claim joins the session that worker A's claim is starting. Before that, B's claim found
/// neither an idle tunnel nor a shareable session and every call queued on it ended UNAVAILABLE.
#[test]
fn first_calls_on_both_workers_at_once_cluster() -> Result<()> {
    first_calls_on_both_workers_at_once(Responder::Module)
}
