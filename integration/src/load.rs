//! Load generator: many fake initiator tunnels against a responder's handshake listener.
//!
//! Each tunnel opens a TCP connection to `127.0.0.1:<port>`, sends the exact handshake request of
//! docs/protocol.md#handshake-request (`GET /reverse_connections/request`, header order as captured from a 1.40.0
//! initiator), expects a `200` status line (docs/protocol.md#handshake-response), and then behaves as one
//! [`Behavior`] towards the responder's `RPING` keepalive (docs/protocol.md#summary: 5 raw bytes every
//! `ping_interval` + up to 15% jitter, echoed by the initiator).
//!
//! Implementation: std only. The tunnels are spread round-robin over a few threads; each thread
//! keeps its sockets non-blocking and sweeps them with `read` in a loop (sleeping 1 ms only when a
//! whole sweep found nothing to do), so an `RPING` is answered within one sweep (a few ms for
//! 5,000 sockets per thread), far below the responder's reply deadline of
//! max(interval/2, 500 ms). New tunnels are opened in small batches between sweeps so that early
//! tunnels are echoed while later ones are still being opened.
//!
//! File descriptors: one per tunnel. [`LoadGen::start`] reads the soft `RLIMIT_NOFILE` from
//! `/proc/self/limits` and refuses (with a message naming `ulimit -n`) when the count does not
//! fit; it never changes the limit itself.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{bail, Result};

/// The keepalive probe and its echo (docs/protocol.md#summary).
pub const RPING: &[u8; 5] = b"RPING";

/// What [`Behavior::Garbage`] answers to each `RPING`: 5 bytes that are not `RPING`.
pub const GARBAGE: &[u8; 5] = b"XPONG";

/// How long a tunnel may wait for the handshake response before it counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// File descriptors kept free for everything else in the process (logs, admin clients, ...).
pub const FD_RESERVE: u64 = 128;

/// How one tunnel answers the responder's keepalive after a successful handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Answer each `RPING` with `RPING` (a healthy initiator).
    Echo,
    /// Never answer (reads and counts the pings).
    Silent,
    /// Answer each `RPING` with the 5 bytes [`GARBAGE`].
    Garbage,
    /// `shutdown(Write)` right after the `200`; keep reading until the responder closes.
    HalfClose,
    /// Echo the first N pings, then close the socket.
    Close(u32),
}

impl Behavior {
    /// Parses `echo`, `silent`, `garbage`, `half-close` or `close:N`.
    pub fn parse(s: &str) -> Result<Behavior> {
        Ok(match s {
            "echo" => Behavior::Echo,
            "silent" => Behavior::Silent,
            "garbage" => Behavior::Garbage,
            "half-close" | "halfclose" => Behavior::HalfClose,
            _ => match s.strip_prefix("close:").map(str::parse::<u32>) {
                Some(Ok(n)) => Behavior::Close(n),
                _ => bail!("unknown behavior {s:?} (echo, silent, garbage, half-close, close:N)"),
            },
        })
    }
}

/// What to open and how the tunnels behave.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The responder's handshake port on 127.0.0.1.
    pub port: u16,
    /// Number of tunnels.
    pub count: usize,
    /// Node id pattern; `{i}` is replaced by the tunnel index (0-based).
    pub node_pattern: String,
    /// Cluster id pattern; `{i}` is replaced by the tunnel index.
    pub cluster_pattern: String,
    /// Tenant id pattern (non-empty, docs/protocol.md#handshake-request); `{i}` is replaced by the tunnel index.
    pub tenant_pattern: String,
    /// Keepalive behavior of every tunnel.
    pub behavior: Behavior,
    /// Sweeping threads (≥ 1); tunnel `i` belongs to thread `i % threads`.
    pub threads: usize,
    /// New tunnels each thread opens between two sweeps.
    pub open_batch: usize,
}

impl LoadConfig {
    /// `count` tunnels to `port` with ids `node-{i}` / `cluster-{i}` / `tenant-a`, 2 threads,
    /// batches of 64.
    pub fn new(port: u16, count: usize, behavior: Behavior) -> LoadConfig {
        LoadConfig {
            port,
            count,
            node_pattern: "node-{i}".into(),
            cluster_pattern: "cluster-{i}".into(),
            tenant_pattern: "tenant-a".into(),
            behavior,
            threads: 2,
            open_batch: 64,
        }
    }

    /// Sets the id patterns (`{i}` is the tunnel index).
    pub fn ids(mut self, node: &str, cluster: &str, tenant: &str) -> Self {
        self.node_pattern = node.into();
        self.cluster_pattern = cluster.into();
        self.tenant_pattern = tenant.into();
        self
    }
}

/// Replaces every `{i}` in `pattern` by `i`.
pub fn expand(pattern: &str, i: usize) -> String {
    pattern.replace("{i}", &i.to_string())
}

/// The handshake request bytes of docs/protocol.md#handshake-request (same header order, lower-case names,
/// `content-length: 0`, no body). `initiation_ms` is epoch milliseconds.
pub fn handshake_request(
    port: u16,
    node: &str,
    cluster: &str,
    tenant: &str,
    worker_id: &str,
    connection_id: u64,
    initiation_ms: u64,
) -> Vec<u8> {
    format!(
        "GET /reverse_connections/request HTTP/1.1\r\n\
         host: 127.0.0.1:{port}\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: {cluster}\r\n\
         x-envoy-reverse-tunnel-tenant-id: {tenant}\r\n\
         x-envoy-reverse-tunnel-upstream-cluster-name: rt-load\r\n\
         x-envoy-reverse-tunnel-initiation-time: {initiation_ms}\r\n\
         x-envoy-reverse-tunnel-worker-id: {worker_id}\r\n\
         x-envoy-reverse-tunnel-connection-id: {connection_id}\r\n\
         content-length: 0\r\n\
         \r\n"
    )
    .into_bytes()
}

/// The soft open-files limit (`Max open files` in `/proc/self/limits`); `None` if unreadable or
/// unlimited.
pub fn fd_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Live counters of a [`LoadGen`] (all monotonic except `tunnels_up`).
#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
    tunnels_up: AtomicU64,
    rpings_received: AtomicU64,
    replies_sent: AtomicU64,
    unexpected_bytes: AtomicU64,
    peer_closes: AtomicU64,
    local_closes: AtomicU64,
    write_errors: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tunnels whose connect + handshake was started.
    pub attempts: u64,
    /// Handshakes answered with `200`.
    pub handshakes_ok: u64,
    /// Connect errors, non-200 answers, closes or timeouts before the response.
    pub handshakes_failed: u64,
    /// Tunnels currently open after a `200` (a gauge).
    pub tunnels_up: u64,
    /// Complete `RPING`s received.
    pub rpings_received: u64,
    /// Replies written to `RPING`s (`RPING` echoes, or [`GARBAGE`] for `Garbage`).
    pub replies_sent: u64,
    /// Bytes received after the handshake that were not part of an `RPING`.
    pub unexpected_bytes: u64,
    /// Tunnels closed by the responder (EOF or reset) after a `200`.
    pub peer_closes: u64,
    /// Tunnels closed by this tool (`Close(n)` or [`LoadGen::close_all`]).
    pub local_closes: u64,
    /// Replies that could not be written completely.
    pub write_errors: u64,
}

/// The life of one tunnel that got a `200`, recorded when it ends.
#[derive(Clone, Debug)]
pub struct TunnelRecord {
    /// Tunnel index (the `{i}` of the id patterns).
    pub index: usize,
    /// When the `200` arrived.
    pub up_at: Instant,
    /// When the first `RPING` arrived, if any.
    pub first_ping_at: Option<Instant>,
    /// When the tunnel ended.
    pub closed_at: Instant,
    /// `true` if the responder closed it, `false` if this tool did.
    pub peer_closed: bool,
    /// `RPING`s received.
    pub pings: u64,
}

enum Phase {
    Handshake { sent_at: Instant, buf: Vec<u8> },
    Active,
}

struct Tunnel {
    index: usize,
    stream: TcpStream,
    phase: Phase,
    rbuf: Vec<u8>,
    up_at: Option<Instant>,
    first_ping_at: Option<Instant>,
    pings: u64,
}

/// A running set of tunnels; closes them all when dropped.
pub struct LoadGen {
    counters: Arc<Counters>,
    records: Arc<Mutex<Vec<TunnelRecord>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    count: usize,
}

impl LoadGen {
    /// Starts the threads; tunnels are opened in the background (see [`LoadGen::wait_up`]).
    /// Errors: zero threads, or `count` + [`FD_RESERVE`] above the soft open-files limit.
    pub fn start(cfg: LoadConfig) -> Result<LoadGen> {
        if cfg.threads == 0 || cfg.open_batch == 0 {
            bail!("load: threads and open_batch must be >= 1");
        }
        if let Some(limit) = fd_soft_limit() {
            let need = cfg.count as u64 + FD_RESERVE;
            if need > limit {
                bail!(
                    "load: {} tunnels need about {need} file descriptors but the soft limit \
                     (RLIMIT_NOFILE) is {limit}; raise it first (e.g. `ulimit -n {}`)",
                    cfg.count,
                    need + 1024
                );
            }
        }
        let counters = Arc::new(Counters::default());
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..cfg.threads {
            let (cfg, counters, records, stop) =
                (cfg.clone(), counters.clone(), records.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("rt-load-{t}"))
                .spawn(move || run_thread(t, &cfg, &counters, &records, &stop))?;
            threads.push(h);
        }
        Ok(LoadGen {
            counters,
            records,
            stop,
            threads,
            count: cfg.count,
        })
    }

    /// Current counters.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Snapshot {
            attempts: g(&c.attempts),
            handshakes_ok: g(&c.handshakes_ok),
            handshakes_failed: g(&c.handshakes_failed),
            tunnels_up: g(&c.tunnels_up),
            rpings_received: g(&c.rpings_received),
            replies_sent: g(&c.replies_sent),
            unexpected_bytes: g(&c.unexpected_bytes),
            peer_closes: g(&c.peer_closes),
            local_closes: g(&c.local_closes),
            write_errors: g(&c.write_errors),
        }
    }

    /// Waits until every tunnel was attempted and `handshakes_ok + handshakes_failed` covers them
    /// all; errors if any failed or `timeout` passes. Returns the snapshot.
    pub fn wait_up(&self, timeout: Duration) -> Result<Snapshot> {
        let want = self.count as u64;
        crate::wait_for(&format!("{want} load tunnel handshakes"), timeout, || {
            let s = self.snapshot();
            if s.handshakes_failed > 0 {
                bail!("load: {} handshake(s) failed ({s:?})", s.handshakes_failed);
            }
            Ok(if s.handshakes_ok >= want {
                crate::Check::Done(s)
            } else {
                crate::Check::NotYet(format!("{s:?}"))
            })
        })
    }

    /// Waits until every RPING received up to now has been answered, and returns a snapshot
    /// taken then. A snapshot alone can fall between an RPING counted as received and its reply
    /// counted as sent (the generator threads keep running), so tests compare through this.
    /// Errors if the replies do not catch up within `timeout`.
    pub fn answered(&self, timeout: Duration) -> Result<Snapshot> {
        let received = self.snapshot().rpings_received;
        crate::wait_for(&format!("replies to {received} RPINGs"), timeout, || {
            let s = self.snapshot();
            Ok(if s.replies_sent >= received {
                crate::Check::Done(s)
            } else {
                crate::Check::NotYet(format!("{s:?}"))
            })
        })
    }

    /// Records of the tunnels that ended so far (after a `200`).
    pub fn records(&self) -> Vec<TunnelRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Closes every tunnel (counted as local closes) and stops the threads. Idempotent.
    pub fn close_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.close_all();
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn record(records: &Mutex<Vec<TunnelRecord>>, t: &Tunnel, peer_closed: bool) {
    if let (Some(up_at), Ok(mut r)) = (t.up_at, records.lock()) {
        r.push(TunnelRecord {
            index: t.index,
            up_at,
            first_ping_at: t.first_ping_at,
            closed_at: Instant::now(),
            peer_closed,
            pings: t.pings,
        });
    }
}

/// Opens one tunnel: connect, send the handshake, switch to non-blocking.
fn open(cfg: &LoadConfig, thread: usize, index: usize) -> std::io::Result<Tunnel> {
    let addr = SocketAddr::from(([127, 0, 0, 1], cfg.port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    let req = handshake_request(
        cfg.port,
        &expand(&cfg.node_pattern, index),
        &expand(&cfg.cluster_pattern, index),
        &expand(&cfg.tenant_pattern, index),
        &format!("worker_{thread}"),
        index as u64 + 1,
        epoch_ms(),
    );
    (&stream).write_all(&req)?;
    stream.set_nonblocking(true)?;
    Ok(Tunnel {
        index,
        stream,
        phase: Phase::Handshake {
            sent_at: Instant::now(),
            buf: Vec::new(),
        },
        rbuf: Vec::new(),
        up_at: None,
        first_ping_at: None,
        pings: 0,
    })
}

enum Outcome {
    Keep,
    PeerClosed,
    LocalClose,
    HandshakeFailed,
}

fn run_thread(
    thread: usize,
    cfg: &LoadConfig,
    c: &Counters,
    records: &Mutex<Vec<TunnelRecord>>,
    stop: &AtomicBool,
) {
    let mut next = thread;
    let mut tunnels: Vec<Tunnel> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut busy = false;
        let mut opened = 0;
        while next < cfg.count && opened < cfg.open_batch {
            c.attempts.fetch_add(1, Ordering::SeqCst);
            match open(cfg, thread, next) {
                Ok(t) => tunnels.push(t),
                Err(_) => {
                    c.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                }
            }
            next += cfg.threads;
            opened += 1;
            busy = true;
        }
        let mut i = 0;
        while i < tunnels.len() {
            let (outcome, active) = step(&mut tunnels[i], cfg, c, &mut buf);
            busy |= active;
            match outcome {
                Outcome::Keep => i += 1,
                o => {
                    let t = tunnels.swap_remove(i);
                    match o {
                        Outcome::PeerClosed => {
                            c.peer_closes.fetch_add(1, Ordering::SeqCst);
                            c.tunnels_up.fetch_sub(1, Ordering::SeqCst);
                            record(records, &t, true);
                        }
                        Outcome::LocalClose => {
                            c.local_closes.fetch_add(1, Ordering::SeqCst);
                            c.tunnels_up.fetch_sub(1, Ordering::SeqCst);
                            record(records, &t, false);
                        }
                        _ => {
                            c.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for t in tunnels.drain(..) {
        if t.up_at.is_some() {
            c.local_closes.fetch_add(1, Ordering::SeqCst);
            c.tunnels_up.fetch_sub(1, Ordering::SeqCst);
            record(records, &t, false);
        }
    }
}

/// Reads what is available on one tunnel and reacts; returns the outcome and whether anything
/// happened.
fn step(t: &mut Tunnel, cfg: &LoadConfig, c: &Counters, buf: &mut [u8]) -> (Outcome, bool) {
    let mut active = false;
    loop {
        match (&t.stream).read(buf) {
            Ok(0) => {
                let o = if t.up_at.is_some() {
                    Outcome::PeerClosed
                } else {
                    Outcome::HandshakeFailed
                };
                return (o, true);
            }
            Ok(n) => {
                active = true;
                let data = &buf[..n];
                match &mut t.phase {
                    Phase::Handshake { buf: hb, .. } => {
                        hb.extend_from_slice(data);
                        let Some(end) = hb.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        if !hb.starts_with(b"HTTP/1.1 200 ") {
                            return (Outcome::HandshakeFailed, true);
                        }
                        t.rbuf.extend_from_slice(&hb[end + 4..]);
                        t.phase = Phase::Active;
                        t.up_at = Some(Instant::now());
                        c.handshakes_ok.fetch_add(1, Ordering::SeqCst);
                        c.tunnels_up.fetch_add(1, Ordering::SeqCst);
                        if cfg.behavior == Behavior::HalfClose {
                            let _ = t.stream.shutdown(Shutdown::Write);
                        }
                    }
                    Phase::Active => t.rbuf.extend_from_slice(data),
                }
                if let Some(o) = consume(t, cfg, c) {
                    return (o, true);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                let o = if t.up_at.is_some() {
                    Outcome::PeerClosed
                } else {
                    Outcome::HandshakeFailed
                };
                return (o, true);
            }
        }
    }
    if let Phase::Handshake { sent_at, .. } = t.phase {
        if sent_at.elapsed() > HANDSHAKE_TIMEOUT {
            return (Outcome::HandshakeFailed, true);
        }
    }
    (Outcome::Keep, active)
}

/// Handles complete `RPING`s in the tunnel's buffer; `Some` when the tunnel must end.
fn consume(t: &mut Tunnel, cfg: &LoadConfig, c: &Counters) -> Option<Outcome> {
    if matches!(t.phase, Phase::Handshake { .. }) {
        return None;
    }
    let mut start = 0;
    while t.rbuf.len() - start >= RPING.len() {
        if &t.rbuf[start..start + RPING.len()] != RPING {
            c.unexpected_bytes
                .fetch_add((t.rbuf.len() - start) as u64, Ordering::SeqCst);
            start = t.rbuf.len();
            break;
        }
        start += RPING.len();
        t.pings += 1;
        c.rpings_received.fetch_add(1, Ordering::SeqCst);
        if t.first_ping_at.is_none() {
            t.first_ping_at = Some(Instant::now());
        }
        let reply: Option<&[u8]> = match cfg.behavior {
            Behavior::Echo => Some(RPING),
            Behavior::Close(n) if t.pings <= u64::from(n) => Some(RPING),
            Behavior::Close(_) => None,
            Behavior::Garbage => Some(GARBAGE),
            Behavior::Silent | Behavior::HalfClose => None,
        };
        if let Some(bytes) = reply {
            match (&t.stream).write(bytes) {
                Ok(n) if n == bytes.len() => {
                    c.replies_sent.fetch_add(1, Ordering::SeqCst);
                }
                _ => {
                    c.write_errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if let Behavior::Close(n) = cfg.behavior {
            if t.pings >= u64::from(n) {
                t.rbuf.clear();
                return Some(Outcome::LocalClose);
            }
        }
    }
    t.rbuf.drain(..start);
    // A partial trailing chunk that cannot become RPING is unexpected, too.
    if !t.rbuf.is_empty() && !RPING.starts_with(&t.rbuf) {
        c.unexpected_bytes
            .fetch_add(t.rbuf.len() as u64, Ordering::SeqCst);
        t.rbuf.clear();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_bytes_follow_the_capture() {
        let req = handshake_request(19011, "n", "c", "t", "worker_0", 1, 5);
        let text = String::from_utf8(req).unwrap();
        assert!(text
            .starts_with("GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1:19011\r\n"));
        assert!(
            text.ends_with("x-envoy-reverse-tunnel-connection-id: 1\r\ncontent-length: 0\r\n\r\n")
        );
        assert_eq!(expand("node-{i}", 7), "node-7");
        assert_eq!(Behavior::parse("close:3").unwrap(), Behavior::Close(3));
        assert!(Behavior::parse("nope").is_err());
    }
}
