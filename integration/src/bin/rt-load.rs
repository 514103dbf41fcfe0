//! `rt-load`: opens many fake initiator tunnels against a responder's handshake port (loopback)
//! and keeps them with a chosen keepalive behavior, printing counters every few seconds.
//!
//! Usage:
//! `rt-load --port P [--count N] [--behavior echo|silent|garbage|half-close|close:N]
//!          [--node PATTERN] [--cluster PATTERN] [--tenant PATTERN] [--threads T]
//!          [--duration SECS] [--report SECS]`
//!
//! Patterns replace `{i}` by the tunnel index (defaults `node-{i}`, `cluster-{i}`, `tenant-a`).
//! `--duration 0` (the default) runs until the process is killed; otherwise all tunnels are
//! closed after SECS seconds and a final line is printed. Needs `count + 128` file descriptors
//! (soft `ulimit -n`); it refuses to start otherwise. Exits non-zero on a bad argument.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rt_integration::load::{Behavior, LoadConfig, LoadGen};
use rt_integration::{Error, Result};

const USAGE: &str = "usage: rt-load --port P [--count N] [--behavior echo|silent|garbage|half-close|close:N] \
[--node PATTERN] [--cluster PATTERN] [--tenant PATTERN] [--threads T] [--duration SECS] [--report SECS]";

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| Error(format!("{flag}: not a number: {v:?}")))
}

fn run(args: &[String]) -> Result<()> {
    let mut cfg = LoadConfig::new(0, 100, Behavior::Echo);
    let mut duration = 0u64;
    let mut report = 5u64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let v = it
            .next()
            .ok_or_else(|| Error(format!("{flag} needs a value\n{USAGE}")))?;
        match flag.as_str() {
            "--port" => cfg.port = parse_num(flag, v)?,
            "--count" => cfg.count = parse_num(flag, v)?,
            "--behavior" => cfg.behavior = Behavior::parse(v)?,
            "--node" => cfg.node_pattern = v.clone(),
            "--cluster" => cfg.cluster_pattern = v.clone(),
            "--tenant" => cfg.tenant_pattern = v.clone(),
            "--threads" => cfg.threads = parse_num(flag, v)?,
            "--duration" => duration = parse_num(flag, v)?,
            "--report" => report = parse_num::<u64>(flag, v)?.max(1),
            _ => return Err(Error(format!("unknown argument {flag}\n{USAGE}"))),
        }
    }
    if cfg.port == 0 {
        return Err(Error(format!("--port is required\n{USAGE}")));
    }
    let started = Instant::now();
    let mut gen = LoadGen::start(cfg.clone())?;
    println!(
        "rt-load: {} {:?} tunnel(s) to 127.0.0.1:{}",
        cfg.count, cfg.behavior, cfg.port
    );
    loop {
        std::thread::sleep(Duration::from_secs(report));
        let s = gen.snapshot();
        println!("{:>6.1}s {s:?}", started.elapsed().as_secs_f64());
        if duration > 0 && started.elapsed() >= Duration::from_secs(duration) {
            break;
        }
    }
    gen.close_all();
    println!("rt-load: closed all; final {:?}", gen.snapshot());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rt-load: {e}");
            ExitCode::FAILURE
        }
    }
}
