//! HTTP/2 client engines compared on the route filter's workload (`make bench-h2`; not part of
//! `make test`): the module's multiplexer (`src/core/h2mux/`, driven through its local-leg API as
//! the session drives it) against the `h2` crate's client on a current-thread tokio runtime. See
//! `harness.rs` for the workload and the peer (a recorded `h2` server byte script), and
//! `docs/http2-engine.md` for the method and the results.
//!
//! Prints, per case, the client engine's cost per request and the ratio ours / h2:
//! 1. **instructions** (valgrind's callgrind, collecting only inside each engine's measured
//!    function `OursClient::run` / `H2Client::run`; repeatable on a shared machine; glibc told
//!    not to use `rep movsb`, see [`MEMCPY_TUNABLE`]), when `valgrind` is installed
//!    (`scripts/setup.sh` installs it) and `RT_H2_CALLGRIND` is not `0`;
//! 2. **time**: the fastest wall-clock time of that same function over several runs, both engines
//!    alternating (the run least disturbed by other load; includes the cache and memory effects
//!    that instruction counts miss, but varies from one invocation to the next on a busy machine).
//!
//! Usage: `cargo bench --bench h2_engines [-- --one ours|h2 CASE]`; `--one` runs one engine once
//! on one case and prints its tally (what the callgrind children run).

#[allow(dead_code)]
mod harness;

use std::process::Command;
use std::time::Instant;

use harness::{record_script, Case, H2Client, OursClient, Script, Tally, CASES};

/// Timed runs per engine and case.
const TIMED_RUNS: usize = 15;

/// Makes glibc's `memcpy` copy with vector loads and stores at every size. Its default for copies
/// above a few KiB is `rep movsb`, which callgrind counts as one instruction per byte although the
/// CPU moves tens of bytes per cycle: without this, every body copy would weigh ~30 times its
/// real cost in the 64 KiB cases. Only for the callgrind children.
const MEMCPY_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold=1000000000";

/// Runs `engine` once on `script`; returns its tally and the wall-clock time of its `run`, in ns.
fn run_once(engine: &str, script: &Script, case: &Case) -> (Tally, f64) {
    match engine {
        "ours" => {
            let mut c = OursClient::new(script, case);
            let t = Instant::now();
            let tally = c.run(script, case);
            (tally, t.elapsed().as_nanos() as f64)
        }
        "h2" => {
            let mut c = H2Client::new(script);
            let t = Instant::now();
            let tally = c.run(script, case);
            (tally, t.elapsed().as_nanos() as f64)
        }
        other => panic!("unknown engine {other} (ours|h2)"),
    }
}

fn check(engine: &str, tally: &Tally, case: &Case) {
    assert_eq!(tally.completed, case.requests, "{engine} {}: completed requests", case.name);
    assert_eq!(tally.body_bytes, case.requests * case.body, "{engine} {}: body bytes", case.name);
    assert_eq!(tally.header_fields, case.requests * 5, "{engine} {}: response header fields", case.name);
}

fn fastest(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

/// Instructions executed inside `function` while this binary runs `--one engine case` under
/// callgrind.
fn callgrind(engine: &str, case: &Case) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let function = if engine == "ours" { "*OursClient::run*" } else { "*H2Client::run*" };
    let out = Command::new("valgrind")
        .env("GLIBC_TUNABLES", MEMCPY_TUNABLE)
        .args([
            "--tool=callgrind",
            &format!("--toggle-collect={function}"),
            "--callgrind-out-file=/dev/null",
        ])
        .arg(&exe)
        .args(["--one", engine, case.name])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("valgrind {engine} {} failed: {stderr}", case.name));
    }
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("no instruction count for {engine} {}: {stderr}", case.name))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--one") {
        let (engine, name) = (&args[1], &args[2]);
        let case = CASES.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("unknown case {name}"));
        let script = record_script(case);
        let (tally, _) = run_once(engine, &script, case);
        check(engine, &tally, case);
        println!("{engine} {name}: {tally:?}");
        return;
    }

    let use_callgrind = std::env::var("RT_H2_CALLGRIND").map_or(true, |v| v != "0")
        && Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    println!("HTTP/2 client engines, cost per request: ours (src/core/h2mux, local legs) vs the h2 crate");
    println!("(peer: recorded h2 server bytes; reads of at most {} bytes)\n", harness::READ_CHUNK);

    let mut rows = Vec::new();
    for case in &CASES {
        let script = record_script(case);
        let (ours_tally, _) = run_once("ours", &script, case);
        let (h2_tally, _) = run_once("h2", &script, case);
        check("ours", &ours_tally, case);
        check("h2", &h2_tally, case);
        let (mut t_ours, mut t_h2) = (Vec::new(), Vec::new());
        for _ in 0..TIMED_RUNS {
            t_ours.push(run_once("ours", &script, case).1 / case.requests as f64);
            t_h2.push(run_once("h2", &script, case).1 / case.requests as f64);
        }
        let (ns_ours, ns_h2) = (fastest(t_ours), fastest(t_h2));
        let instr = if use_callgrind {
            match (callgrind("ours", case), callgrind("h2", case)) {
                (Ok(a), Ok(b)) => Some((a as f64 / case.requests as f64, b as f64 / case.requests as f64)),
                (a, b) => {
                    eprintln!("callgrind: {:?} {:?}", a.err(), b.err());
                    None
                }
            }
        } else {
            None
        };
        rows.push((case, instr, ns_ours, ns_h2, ours_tally.client_bytes, h2_tally.client_bytes));
    }

    if use_callgrind {
        println!("Instructions per request (callgrind, inside OursClient::run / H2Client::run):");
        println!("{:<10} {:>10} {:>8} {:>12} {:>12} {:>8}", "case", "requests", "streams", "ours", "h2", "ours/h2");
        for (case, instr, ..) in &rows {
            match instr {
                Some((a, b)) => println!(
                    "{:<10} {:>10} {:>8} {:>12.0} {:>12.0} {:>8.2}",
                    case.name, case.requests, case.concurrency, a, b, a / b
                ),
                None => println!("{:<10} (no count)", case.name),
            }
        }
        println!();
    } else {
        println!("(callgrind skipped: valgrind missing or RT_H2_CALLGRIND=0)\n");
    }
    println!("Wall-clock ns per request (fastest of {TIMED_RUNS} runs, engines alternating):");
    println!("{:<10} {:>10} {:>8} {:>12} {:>12} {:>8}", "case", "requests", "streams", "ours", "h2", "ours/h2");
    for (case, _, a, b, ..) in &rows {
        println!(
            "{:<10} {:>10} {:>8} {:>12.0} {:>12.0} {:>8.2}",
            case.name, case.requests, case.concurrency, a, b, a / b
        );
    }
    println!("\nBytes written toward the peer per request (requests, WINDOW_UPDATEs, SETTINGS):");
    for (case, _, _, _, a, b) in &rows {
        println!(
            "{:<10} ours {:>8.1}  h2 {:>8.1}",
            case.name,
            *a as f64 / case.requests as f64,
            *b as f64 / case.requests as f64
        );
    }
}
