//! Keepalive and scale tests against our responder module, with fake initiator tunnels from the
//! load tool ([`rt_integration::load`]) speaking the real handshake (docs/protocol.md#handshake-request) and RPING
//! keepalive (docs/protocol.md#summary).
//!
//! Env: `RT_SCALE_TUNNELS` (default 10000) and `RT_SCALE_HOLD_SECS` (default 60) size the scale
//! test.

use std::time::{Duration, Instant};

use rt_integration::load::{Behavior, LoadConfig, LoadGen, TunnelRecord};
use rt_integration::envoy::allocated_kib;
use rt_integration::process::{proc_fds, proc_rss_kib};
use rt_integration::{env_num, wait_for, Check, Envoy, InitiatorSpec, Responder, Result, Topology};

/// `ping_interval` in `upstream.yaml` (the config default, docs/protocol.md#summary).
const INTERVAL: Duration = Duration::from_secs(2);
/// `ping_failure_threshold` the harness configures.
const THRESHOLD: u32 = 3;
/// Responder clock tick (deadline queue granularity).
const TICK: Duration = Duration::from_millis(50);
/// Delay of the first RPING after the 200.
const FIRST_PING: Duration = Duration::from_millis(50);

/// The RPING reply deadline: max(interval/2, 500 ms).
fn reply_deadline() -> Duration {
    (INTERVAL / 2).max(Duration::from_millis(500))
}

/// Latest close of a non-answering tunnel after its first unanswered ping:
/// (threshold−1)·(interval + 15% jitter) + threshold·deadline + tick + first-ping delay.
fn close_bound() -> Duration {
    INTERVAL.mul_f64(1.15) * (THRESHOLD - 1) + reply_deadline() * THRESHOLD + TICK + FIRST_PING + SCHEDULING_ALLOWANCE
}

/// Room for a loaded 2-core machine to run the clock tick and deliver the close late (the bound
/// itself is the keepalive's worst case; measured closes stay within it, see the test output).
const SCHEDULING_ALLOWANCE: Duration = Duration::from_millis(400);

fn reason(envoy: &mut Envoy, r: &str) -> Result<u64> {
    Ok(envoy
        .stat_u64(&format!("rt.upstream_rc.tunnels_closed.close_reason.{r}"))?
        .unwrap_or(0))
}

fn gauge(envoy: &mut Envoy, g: &str) -> Result<u64> {
    Ok(envoy.stat_u64(&format!("rt.upstream_rc.{g}"))?.unwrap_or(0))
}

/// Checks every record: closed by the peer, within `bound` after `from(record)`.
fn check_records(
    what: &str,
    recs: &[TunnelRecord],
    n: usize,
    min: Duration,
    bound: Duration,
    from: impl Fn(&TunnelRecord) -> Option<Instant>,
) -> Result<Duration> {
    rt_integration::ensure!(
        recs.len() == n,
        "{what}: {} of {n} tunnels ended",
        recs.len()
    );
    let mut worst = Duration::ZERO;
    for r in recs {
        rt_integration::ensure!(
            r.peer_closed,
            "{what}: tunnel {} was not closed by the responder",
            r.index
        );
        let t0 = from(r).ok_or_else(|| format!("{what}: tunnel {} saw no ping", r.index))?;
        let d = r.closed_at.saturating_duration_since(t0);
        rt_integration::ensure!(
            d >= min && d <= bound,
            "{what}: tunnel {} closed {d:?} after the reference (allowed {min:?}..={bound:?})",
            r.index
        );
        worst = worst.max(d);
    }
    Ok(worst)
}

#[test]
fn misbehaving_tunnels_are_closed_in_time_and_echoing_ones_stay() -> Result<()> {
    misbehaving_tunnels(Responder::Module)
}

/// The same with owned sockets: the socket loop's own clock runs the RPING deadlines.
#[test]
fn owned_sockets_close_misbehaving_tunnels_in_time() -> Result<()> {
    misbehaving_tunnels(Responder::Owned)
}

fn misbehaving_tunnels(kind: Responder) -> Result<()> {
    let mut topo = Topology::start(&format!("keepalive-{kind:?}"), kind, 2, &[])?;
    let port = topo.handshake_port;
    let bound = close_bound();
    let (n_echo, n_silent, n_garbage, n_half) = (20usize, 10usize, 10usize, 10usize);
    let gen = |n, b, tag: &str| {
        LoadGen::start(LoadConfig::new(port, n, b).ids(
            &format!("{tag}-{{i}}"),
            &format!("{tag}-c"),
            "tenant-a",
        ))
    };
    let echo = gen(n_echo, Behavior::Echo, "echo")?;
    echo.wait_up(Duration::from_secs(20))?;
    topo.wait_tunnels(n_echo as u64, Duration::from_secs(10))?;
    let started = Instant::now();
    let silent = gen(n_silent, Behavior::Silent, "silent")?;
    let garbage = gen(n_garbage, Behavior::Garbage, "garbage")?;
    let half = gen(n_half, Behavior::HalfClose, "half")?;
    // Healthy for two pings, then the initiator goes away.
    let n_close = 5usize;
    let closer = gen(n_close, Behavior::Close(2), "closer")?;
    for g in [&silent, &garbage, &half, &closer] {
        g.wait_up(Duration::from_secs(20))?;
    }
    // Wait for every misbehaving tunnel to be closed by the responder.
    wait_for(
        "misbehaving tunnels closed",
        bound + Duration::from_secs(5),
        || {
            let done = [&silent, &garbage, &half, &closer]
                .iter()
                .all(|g| g.snapshot().tunnels_up == 0);
            Ok(if done {
                Check::Done(())
            } else {
                Check::NotYet(format!(
                    "silent {:?} garbage {:?} half {:?}",
                    silent.snapshot(),
                    garbage.snapshot(),
                    half.snapshot()
                ))
            })
        },
    )?;
    // Keep the echoing tunnels for at least the same period.
    while started.elapsed() < bound + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Not earlier than (threshold−1) full intervals after the first unanswered ping.
    let min = INTERVAL * (THRESHOLD - 1) - TICK;
    let w_silent = check_records("silent", &silent.records(), n_silent, min, bound, |r| {
        r.first_ping_at
    })?;
    let w_garbage = check_records("garbage", &garbage.records(), n_garbage, min, bound, |r| {
        r.first_ping_at
    })?;
    let w_half = check_records(
        "half-close",
        &half.records(),
        n_half,
        Duration::ZERO,
        bound,
        |r| Some(r.up_at),
    )?;
    let r = topo.responder();
    let timeouts = reason(r, "idle_ping_timeout")?;
    let peer = reason(r, "idle_peer_close")?;
    assert_eq!(
        timeouts,
        (n_silent + n_garbage) as u64,
        "idle_ping_timeout closes"
    );
    assert_eq!(peer, (n_half + n_close) as u64, "idle_peer_close closes");
    let c = closer.snapshot();
    assert_eq!(
        (c.local_closes, c.peer_closes, c.replies_sent),
        (n_close as u64, 0, 2 * n_close as u64),
        "{c:?}"
    );

    let received = echo.snapshot().rpings_received;
    let s = echo.answered(Duration::from_secs(5))?;
    let elapsed = started.elapsed();
    assert_eq!(
        (s.tunnels_up, s.peer_closes),
        (n_echo as u64, 0),
        "echoing tunnels lost: {s:?}"
    );
    assert!(s.replies_sent >= received, "every RPING answered: {s:?}");
    assert_eq!(s.unexpected_bytes, 0, "{s:?}");
    // At least one ping per (interval + 15%) over the period, per tunnel (minus one for phase).
    let min_pings =
        n_echo as u64 * (elapsed.as_secs_f64() / INTERVAL.as_secs_f64() / 1.15 - 1.0) as u64;
    assert!(
        s.rpings_received >= min_pings,
        "{} RPINGs < {min_pings}",
        s.rpings_received
    );
    assert_eq!(gauge(topo.responder(), "tunnels_idle")?, n_echo as u64);
    println!(
        "keepalive: bound {bound:?}; worst close after first ping: silent {w_silent:?}, garbage \
         {w_garbage:?}; half-close after 200: {w_half:?}; echo: {s:?} over {elapsed:?}"
    );
    Ok(())
}

#[test]
fn scale_ten_thousand_echoing_tunnels() -> Result<()> {
    let n = env_num("RT_SCALE_TUNNELS", 10_000);
    let hold = Duration::from_secs(env_num("RT_SCALE_HOLD_SECS", 60));
    let mut topo = Topology::start("keepalive-scale", Responder::Module, 2, &[])?;
    let pid = topo.responder().pid();
    let (fd0, rss0) = (proc_fds(pid)?, proc_rss_kib(pid)?);
    let alloc0 = allocated_kib(topo.responder());

    // One real initiator gives real HTTP/2 service behind a tunnel.
    let node = "scale-real-node";
    let i = topo.add_initiator(InitiatorSpec::new(node, "scale-real-cluster"))?;
    let want_body = topo.initiator(i).direct_body();
    topo.wait_tunnels(1, Duration::from_secs(20))?;

    let t_open = Instant::now();
    let mut gen = LoadGen::start(
        LoadConfig::new(topo.handshake_port, n as usize, Behavior::Echo).ids(
            "load-{i}",
            "load-c-{i}",
            "tenant-a",
        ),
    )?;
    gen.wait_up(Duration::from_secs(120))?;
    topo.wait_tunnels(n + 1, Duration::from_secs(60))?;
    let open_time = t_open.elapsed();
    let (fd_peak, rss_peak) = (proc_fds(pid)?, proc_rss_kib(pid)?);
    let alloc_peak = allocated_kib(topo.responder());

    let t_hold = Instant::now();
    let (mut requests, mut checks) = (0u64, 0u64);
    while t_hold.elapsed() < hold {
        let r = topo.get(node, "/direct")?;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, want_body.as_str()),
            "request to the real node"
        );
        requests += 1;
        if requests % 10 == 0 {
            let idle = gauge(topo.responder(), "tunnels_idle")?;
            let total = topo.tunnels()?;
            assert!(
                idle >= n && total == n + 1,
                "tunnels lost: idle {idle}, total {total}"
            );
            let s = gen.snapshot();
            assert_eq!(
                (s.tunnels_up, s.peer_closes),
                (n, 0),
                "load tunnels lost: {s:?}"
            );
            checks += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let received = gen.snapshot().rpings_received;
    let s = gen.answered(Duration::from_secs(5))?;
    assert_eq!(
        (s.tunnels_up, s.peer_closes, s.unexpected_bytes),
        (n, 0, 0),
        "{s:?}"
    );
    assert!(s.replies_sent >= received, "every RPING received was answered: {s:?}");
    let min_pings = n * (hold.as_secs_f64() / INTERVAL.as_secs_f64() / 1.15 - 1.0).max(0.0) as u64;
    assert!(
        s.rpings_received >= min_pings,
        "{} RPINGs < {min_pings}",
        s.rpings_received
    );

    gen.close_all();
    topo.stop_initiator(i);
    topo.wait_tunnels(0, Duration::from_secs(60))?;
    for g in ["tunnels_idle", "tunnels_in_use"] {
        assert_eq!(gauge(topo.responder(), g)?, 0, "{g}");
    }
    let listing: serde_json::Value =
        serde_json::from_str(&topo.responder().admin_get("/reverse_tunnels")?)
            .map_err(|e| format!("/reverse_tunnels is not JSON: {e}"))?;
    let left = listing["tunnels"].as_array().map(|a| a.len());
    assert_eq!(left, Some(0), "/reverse_tunnels after close: {listing}");
    let fd_end = wait_for(
        "responder fds back near the start",
        Duration::from_secs(20),
        || {
            let f = proc_fds(pid)?;
            Ok(if f <= fd0 + 16 {
                Check::Done(f)
            } else {
                Check::NotYet(format!("{f} fds (start {fd0})"))
            })
        },
    )?;
    let rss_end = proc_rss_kib(pid)?;
    let alloc_end = allocated_kib(topo.responder());
    let per_tunnel = (rss_peak.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
    println!(
        "scale: {n} tunnels opened in {open_time:?}, held {hold:?}, {requests} requests OK, \
         {checks} gauge checks, {} RPINGs echoed; fds {fd0} -> {fd_peak} -> {fd_end}; \
         RSS KiB {rss0} -> {rss_peak} -> {rss_end}; RSS per idle tunnel {per_tunnel:.0} B; heap allocated KiB (admin /memory) {alloc0:?} -> \
         {alloc_peak:?} -> {alloc_end:?}",
        s.replies_sent
    );
    // The heap must give back what the tunnels held (RSS itself may stay: the allocator keeps
    // freed pages), and memory must not keep growing after the tunnels are gone.
    if let (Some(a0), Some(ap), Some(_)) = (alloc0, alloc_peak, alloc_end) {
        let slack = ((ap.saturating_sub(a0)) / 10).max(2048);
        // Envoy frees some of it lazily (deferred deletes, pools): poll, bounded.
        let ae = wait_for("the heap back near its start", Duration::from_secs(15), || {
            Ok(match allocated_kib(topo.responder()) {
                Some(ae) if ae <= a0 + slack => Check::Done(ae),
                other => Check::NotYet(format!("allocated {a0} -> {ap} -> {other:?} KiB")),
            })
        })
        .map_err(|e| format!("heap not released: {e}"))?;
        println!("scale: heap back to {ae} KiB (start {a0}, slack {slack})");
        println!(
            "scale: heap per idle tunnel {:.0} B",
            (ap.saturating_sub(a0)) as f64 * 1024.0 / n as f64
        );
    }
    assert!(
        rss_end <= rss_peak + 8 * 1024,
        "RSS grew after closing: {rss_peak} -> {rss_end} KiB"
    );
    Ok(())
}
