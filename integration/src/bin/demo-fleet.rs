//! Demo of a responder fleet (run by `make demo-fleet` once the module is built).
//!
//! Starts, on 127.0.0.1 with free ports (configs `envoy-config/fleet/`): two responders with our
//! module, a front Envoy with the fleet's retry policy, two built-in initiators (distinct nodes,
//! each keeping tunnels to both responders) with their backends. Sends requests through the front
//! for the whole run, does a rolling restart (drain, wait until no tunnel is in use, stop, start,
//! wait for the tunnels) of each responder in turn, and prints the counts: every request must be
//! answered by the node it names, none may fail. Stops everything it started; exits non-zero on
//! any failure.
//!
//! Usage: `demo-fleet [--kill]` (`--kill` also SIGKILLs and restarts a responder first).
//! Env overrides: `ENVOY_BIN`, `RT_MODULE_DIR`, `RT_CONFIG_DIR`, `RT_KEEP_TMP` (keep configs/logs).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rt_integration::fleet::{Fleet, FleetLoad, LoadCounts, DRAIN_TIME_S};
use rt_integration::{bail, envoy_bin, module_path, InitiatorSpec, Result};

fn main() -> ExitCode {
    let mut kill = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--kill" => kill = true,
            "-h" | "--help" => {
                println!("usage: demo-fleet [--kill]\n  --kill  also SIGKILL and restart a responder before the rolling restart");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    match run(kill) {
        Ok(()) => {
            println!("\nDEMO-FLEET OK: no request failed, every one answered by the node it named.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO-FLEET FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(phase: &str, c: &LoadCounts, fleet: &Fleet) -> Result<()> {
    if c.failed > 0 {
        bail!(
            "{phase}: {} of {} requests failed; first: {:#?}\n{}",
            c.failed,
            c.sent,
            c.failures,
            fleet.logs_tail(15)
        );
    }
    Ok(())
}

fn print_counts(label: &str, c: &LoadCounts) {
    println!(
        "   {label}: {} sent, {} ok, {} failed; by responder {:?}; by node {:?}",
        c.sent, c.ok, c.failed, c.by_responder, c.by_node
    );
}

fn run(kill: bool) -> Result<()> {
    let started = Instant::now();
    println!("== Responder fleet demo (Envoy 1.40.0, loopback only)");
    println!("   module : {}", module_path().display());
    println!("   envoy  : {}", envoy_bin().display());

    println!(
        "\n[1/4] Starting 2 responders, the front, 2 initiators (2 tunnels per responder each) and their backends ..."
    );
    let specs = [
        InitiatorSpec::new("node-east", "cluster-east").tunnels(2),
        InitiatorSpec::new("node-west", "cluster-west").tunnels(2),
    ];
    let mut fleet = Fleet::start("demo-fleet", 2, &specs)?;
    println!(
        "   work dir : {} (removed at exit unless RT_KEEP_TMP is set)",
        fleet.dir().path().display()
    );
    println!("   front    : HTTP 127.0.0.1:{}", fleet.front_port);
    for i in 0..fleet.responder_count() {
        let r = fleet.responder(i);
        println!(
            "   {}: handshake 127.0.0.1:{}  HTTP 127.0.0.1:{}",
            r.name, r.handshake_port, r.egress_port
        );
    }
    for (name, pid) in fleet.pids() {
        println!("   pid {pid:>7}  {name}");
    }
    let t = Instant::now();
    fleet.wait_all_tunnels(Duration::from_secs(30))?;
    println!(
        "   every responder holds every node's tunnels after {:.1}s:",
        t.elapsed().as_secs_f64()
    );
    let names: Vec<String> = (0..fleet.responder_count())
        .map(|i| fleet.responder(i).name.clone())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let v = fleet.view(i)?;
        println!(
            "   GET /reverse_tunnels on {}: responder={:?} draining={} idle={} in_use={} by node {:?}",
            name, v.responder, v.draining, v.idle, v.in_use, v.by_node
        );
    }

    println!("\n[2/4] Load through the front (4 clients, GET /fleet/<client>/<seq>, both nodes in turn) ...");
    let load = FleetLoad::start(fleet.front_port, fleet.nodes(), 4, Duration::from_millis(2));
    for n in &names {
        load.wait_served_by(n, 50, Duration::from_secs(20))?;
    }
    print_counts("so far", &load.counts());
    check("steady load", &load.counts(), &fleet)?;

    if kill {
        println!("\n[+] SIGKILL {} under load, then start it again ...", names[0]);
        fleet.kill_responder(0)?;
        load.wait_served_by(&names[1], 500, Duration::from_secs(30))?;
        fleet.start_responder(0)?;
        let back = fleet.wait_tunnels(0, Duration::from_secs(30))?;
        let serving = load.wait_served_by(&names[0], 50, Duration::from_secs(30))?;
        println!(
            "   tunnels back after {:.1}s, serving again {:.1}s later",
            back.as_secs_f64(),
            serving.as_secs_f64()
        );
        print_counts("so far", &load.counts());
        check("kill", &load.counts(), &fleet)?;
    }

    println!("\n[3/4] Rolling restart, one responder at a time ...");
    for (i, name) in names.iter().enumerate() {
        let t = Instant::now();
        fleet.wait_front_all_in(Duration::from_secs(20))?;
        println!("   {name}: POST /drain_listeners?graceful (responders run with --drain-time-s {DRAIN_TIME_S} --drain-strategy immediate)");
        let drained = fleet.drain_responder(i, Duration::from_secs(30))?;
        println!(
            "   {name}: listener closed and no tunnel in use after {:.1}s; stopping it",
            drained.as_secs_f64()
        );
        fleet.stop_responder(i);
        fleet.start_responder(i)?;
        println!("   {name}: started again; waiting for the initiators' tunnels");
        let back = fleet.wait_tunnels(i, Duration::from_secs(30))?;
        let serving = load.wait_served_by(name, 50, Duration::from_secs(30))?;
        println!(
            "   {name}: tunnels back {:.1}s after the start, serving again {:.1}s later ({:.1}s for the whole step)",
            back.as_secs_f64(),
            serving.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        check(&format!("rolling restart of {name}"), &load.counts(), &fleet)?;
    }

    println!("\n[4/4] Final counts:");
    let c = load.stop();
    print_counts("total", &c);
    check("whole run", &c, &fleet)?;
    let retries = fleet
        .front()
        .stat_u64("cluster.responders.upstream_rq_retry")?
        .unwrap_or(0);
    println!("   the front retried {retries} request attempt(s) on another responder");

    println!("\nStopping the processes started by the demo ...");
    drop(fleet);
    println!("   done ({:.1} s in total)", started.elapsed().as_secs_f64());
    Ok(())
}
