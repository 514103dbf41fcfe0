//! Demo of the reverse-tunnel responder module (run by `make demo` once the module is built).
//!
//! Starts, on 127.0.0.1 with free ports: a backend, a built-in Envoy 1.40.0 initiator
//! (`--concurrency 2`, one tunnel per worker) and our responder (Envoy + `libreverse_tunnel.so`);
//! waits until the tunnels are up; sends requests through them; prints each response and the
//! responder's tunnel gauges; stops everything it started. Exits non-zero on any failure.
//!
//! Usage: `demo [--builtin]` (`--builtin` runs Envoy's built-in responder instead, for comparison).
//! Env overrides: `ENVOY_BIN`, `RT_MODULE_DIR`, `RT_CONFIG_DIR`, `RT_KEEP_TMP` (keep configs/logs).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rt_integration::topology::NODE_HEADER;
use rt_integration::{envoy_bin, module_path, InitiatorSpec, Responder, Result, Topology};

const NODE: &str = "node-demo";
const CLUSTER: &str = "cluster-demo";
const TENANT: &str = "tenant-demo";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kind = Responder::Direct;
    for a in &args {
        match a.as_str() {
            "--builtin" => kind = Responder::Builtin,
            "--cluster-path" => kind = Responder::Module,
            "--owned" => kind = Responder::Owned,
            "-h" | "--help" => {
                println!(
                    "usage: demo [--owned | --cluster-path | --builtin]\n  (default: our module, recommended request path: the HTTP filter reverse_tunnel_route)\n  --owned         the same with owned sockets (the module's socket loops own the tunnels)\n  --cluster-path  our module with the cluster request path (router, cluster, internal listener)\n  --builtin       Envoy's built-in responder instead of the module"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    match run(kind) {
        Ok(()) => {
            println!("\nDEMO OK: every request went through the reverse tunnel as expected.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One request to send through the responder and what must come back.
struct Probe {
    key: &'static str,
    path: &'static str,
    status: u16,
    body: Option<String>,
    note: &'static str,
}

fn run(kind: Responder) -> Result<()> {
    let started = Instant::now();
    println!("== Reverse tunnel demo (Envoy 1.40.0, loopback only)");
    match kind {
        Responder::Direct => println!(
            "   responder : our dynamic module {} (request path: HTTP filter reverse_tunnel_route)",
            module_path().display()
        ),
        Responder::Module => println!(
            "   responder : our dynamic module {} (request path: router -> cluster -> internal listener)",
            module_path().display()
        ),
        Responder::Owned => println!(
            "   responder : our dynamic module {} (owned sockets; request path: HTTP filter reverse_tunnel_route)",
            module_path().display()
        ),
        Responder::Builtin => println!("   responder : Envoy's BUILT-IN reverse tunnel extensions"),
    }
    println!("   envoy     : {}", envoy_bin().display());

    println!("\n[1/4] Starting the responder, then a built-in initiator ({NODE}, 2 workers) with its backend ...");
    // 2 initiator workers x 2 tunnels: on the recommended configuration each responder worker
    // keeps one of the node's tunnels as an Envoy connection and moves the other to its socket loop.
    let spec = InitiatorSpec::new(NODE, CLUSTER).tenant(TENANT).concurrency(2).tunnels(2);
    let expected = spec.expected_tunnels();
    let mut topo = Topology::start("demo", kind, 2, &[spec])?;
    println!(
        "   work dir  : {} (configs and logs; removed at exit unless RT_KEEP_TMP is set)",
        topo.dir().path().display()
    );
    let responder_pid = topo.responder().pid();
    println!(
        "   responder : handshake 127.0.0.1:{}  HTTP 127.0.0.1:{}  admin 127.0.0.1:{}  (pid {responder_pid})",
        topo.handshake_port, topo.egress_port, topo.admin_port
    );
    let backend_port = topo.initiator(0).backend.port();
    let init_pid = topo.initiator(0).envoy().map(|e| e.pid()).unwrap_or(0);
    println!(
        "   initiator : node {NODE}, cluster {CLUSTER}, tenant {TENANT} (pid {init_pid}), backend 127.0.0.1:{backend_port}"
    );

    println!("\n[2/4] Waiting for {expected} tunnel(s) at the responder ...");
    let t = Instant::now();
    let n = topo.wait_tunnels(expected, Duration::from_secs(30))?;
    println!("   {n} tunnel(s) up after {:.1} s", t.elapsed().as_secs_f64());
    if kind != Responder::Builtin {
        // Where each tunnel lives: worker_<k> is an Envoy connection, socket_loop_<k> the module's.
        let listing = topo.responder().admin_get("/reverse_tunnels?format=text")?;
        for line in listing.lines().filter(|l| l.contains("node=")) {
            let field = |k: &str| line.split(' ').find_map(|f| f.strip_prefix(k)).unwrap_or("?").to_string();
            let place = if field("worker=").starts_with("socket_loop_") { "module's socket loop" } else { "Envoy connection" };
            println!("   tunnel {:>20} on {:<14} ({place})", field("tunnel="), field("worker="));
        }
    }

    println!("\n[3/4] Requests to the responder's HTTP listener (header {NODE_HEADER}):");
    let direct = topo.initiator(0).direct_body();
    let probes = [
        Probe {
            key: NODE,
            path: "/hello",
            status: 200,
            body: Some(topo.initiator(0).backend.expected_body("/hello")),
            note: "backend behind the initiator",
        },
        Probe {
            key: NODE,
            path: "/direct",
            status: 200,
            body: Some(direct.clone()),
            note: "the initiator's direct_response",
        },
        Probe {
            key: CLUSTER,
            path: "/direct",
            status: 200,
            body: Some(direct),
            note: "by CLUSTER id",
        },
        Probe {
            key: "nobody",
            path: "/direct",
            status: 503,
            body: None,
            note: "unknown node: 503 expected",
        },
    ];
    let mut failures = Vec::new();
    for p in &probes {
        let t = Instant::now();
        let res = topo.get(p.key, p.path);
        let ms = t.elapsed().as_millis();
        match res {
            Ok(r) => {
                let body_ok = p.body.as_ref().map(|b| *b == r.body).unwrap_or(true);
                let ok = r.status == p.status && body_ok;
                println!(
                    "   {} GET {:<8} {NODE_HEADER}: {:<13} -> {} {:?}  ({ms} ms; {})",
                    if ok { "ok  " } else { "FAIL" },
                    p.path,
                    p.key,
                    r.status,
                    r.body.trim_end(),
                    p.note
                );
                if !ok {
                    failures.push(format!(
                        "GET {} for {}: got {} {:?}, want {}{}",
                        p.path,
                        p.key,
                        r.status,
                        r.body,
                        p.status,
                        p.body.as_ref().map(|b| format!(" {b:?}")).unwrap_or_default()
                    ));
                }
            }
            Err(e) => {
                println!("   FAIL GET {:<8} {NODE_HEADER}: {:<13} -> error: {e}", p.path, p.key);
                failures.push(format!("GET {} for {}: {e}", p.path, p.key));
            }
        }
    }

    println!("\n[4/4] Responder tunnel stats ({}*):", kind.stats_prefix());
    match topo.tunnel_stats() {
        Ok(stats) if stats.is_empty() => {
            println!("   (none exported)");
            if kind != Responder::Builtin {
                failures.push("the responder exports no rt.upstream_rc.* stats".into());
            }
        }
        Ok(stats) => {
            for (k, v) in stats {
                println!("   {k}: {v}");
            }
        }
        Err(e) => failures.push(format!("reading stats: {e}")),
    }

    if !failures.is_empty() {
        let logs = topo.logs_tail(15);
        return Err(format!("{} check(s) failed:\n  {}\n{logs}", failures.len(), failures.join("\n  ")).into());
    }
    println!("\nStopping the processes started by the demo ...");
    drop(topo);
    println!("   done ({:.1} s in total)", started.elapsed().as_secs_f64());
    Ok(())
}
