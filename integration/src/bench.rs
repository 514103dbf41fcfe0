//! Building blocks of the benchmark tool `rt-bench`: our responder vs Envoy's built-in.
//!
//! - [`run_h2load`]: runs `h2load` (Debian `nghttp2-client`) against a responder's HTTP listener and
//!   parses its summary and its per-request log (latency percentiles of the 2xx responses).
//! - [`cpu_ms`], [`cpu_ticks`], [`clk_tck`]: process CPU time from `/proc` (resident memory:
//!   [`crate::process::proc_rss_kib`]).
//! - [`RawTunnels`]: a raw-socket initiator that opens many tunnels with the
//!   exact handshake bytes of docs/protocol.md#handshake-request and echoes `RPING` on them (docs/protocol.md#rping-keepalive).
//! - [`median`], [`percentile`]: small statistics helpers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::load::handshake_request;
use crate::{Error, Result};

/// What one `h2load` run reported.
#[derive(Clone, Debug, Default)]
pub struct H2Result {
    /// Requests h2load was asked to send (`requests: N total`).
    pub total: u64,
    /// Responses with a 2xx status (`status codes: N 2xx`).
    pub ok_2xx: u64,
    /// Wall-clock duration of the run in seconds (`finished in X s`).
    pub seconds: f64,
    /// 2xx responses per second (`ok_2xx / seconds`).
    pub ok_per_s: f64,
    /// Median latency of the 2xx responses, milliseconds (from the `--log-file`); 0 if none.
    pub p50_ms: f64,
    /// 99th percentile latency of the 2xx responses, milliseconds; 0 if none.
    pub p99_ms: f64,
}

/// Parses h2load's summary text: returns `(seconds, total, ok_2xx)`, or `None` if a line is
/// missing. `finished in 1.23s` / `finished in 850.2ms`, `requests: N total, ...`,
/// `status codes: N 2xx, ...` (nghttp2 1.52 output format).
pub fn parse_h2load_summary(text: &str) -> Option<(f64, u64, u64)> {
    let mut seconds = None;
    let mut total = None;
    let mut ok = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("finished in ") {
            let d = rest.split(',').next()?.trim();
            seconds = if let Some(ms) = d.strip_suffix("ms") {
                ms.parse::<f64>().ok().map(|v| v / 1000.0)
            } else if let Some(us) = d.strip_suffix("us") {
                us.parse::<f64>().ok().map(|v| v / 1e6)
            } else {
                d.strip_suffix('s').and_then(|s| s.parse::<f64>().ok())
            };
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            total = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            ok = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    Some((seconds?, total?, ok?))
}

/// Parses h2load's `--log-file` (one line per request, tab-separated: start time µs, status,
/// duration µs) and returns the durations in µs of the 2xx requests, sorted ascending.
/// Malformed lines are skipped.
pub fn parse_h2load_log(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 3 {
                return None;
            }
            let status: i64 = f[1].trim().parse().ok()?;
            if !(200..300).contains(&status) {
                return None;
            }
            f[f.len() - 1].trim().parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// The `q`-quantile (0.0–1.0, nearest rank) of an ascending slice; 0 for an empty slice.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of some values (mean of the two middle ones for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `h2load -n <n> -c <c> -m <m> -H 'x-remote-node-id: <node>' http://127.0.0.1:<port>/direct`
/// (HTTP/2 with prior knowledge), writing its per-request log to `log_path`.
/// Errors if h2load cannot be run or prints no parseable summary.
pub fn run_h2load(port: u16, node: &str, n: u32, c: u32, m: u32, log_path: &Path) -> Result<H2Result> {
    run_h2load_on(port, node, "/direct", n, c, m, log_path)
}

/// [`run_h2load`] on another `path`.
pub fn run_h2load_on(port: u16, node: &str, path: &str, n: u32, c: u32, m: u32, log_path: &Path) -> Result<H2Result> {
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", &c.to_string(), "-m", &m.to_string()])
        .args(["-H", &format!("x-remote-node-id: {node}")])
        .arg(format!("--log-file={}", log_path.display()))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .map_err(|e| Error(format!("cannot run h2load (apt-get install nghttp2-client): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // h2load may exit non-zero when some requests fail; the summary is what counts.
    let (seconds, total, ok_2xx) = parse_h2load_summary(&text).ok_or_else(|| {
        Error(format!(
            "h2load exited {} with no parseable summary:\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    let lat = parse_h2load_log(&std::fs::read_to_string(log_path).unwrap_or_default());
    Ok(H2Result {
        total,
        ok_2xx,
        seconds,
        ok_per_s: if seconds > 0.0 { ok_2xx as f64 / seconds } else { 0.0 },
        p50_ms: percentile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&lat, 0.99) as f64 / 1000.0,
    })
}

/// utime + stime of process `pid` in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields are counted after its closing ')'.
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field k is f[k - 3].
    let parse = |k: usize| -> Result<u64> {
        f.get(k - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error(format!("bad /proc/{pid}/stat: {text:?}")))
    };
    Ok(parse(14)? + parse(15)?)
}

/// CPU time of process `pid` in milliseconds, to the nanosecond: the sum over its threads of the
/// first field of `/proc/<pid>/task/<tid>/schedstat` (time spent on a CPU, ns). Unlike
/// [`cpu_ticks`] (10 ms ticks on most kernels) it resolves the few tens of ms one transfer costs;
/// threads that already exited are not counted, which suits Envoy (its threads live as long as
/// the process).
pub fn cpu_ms(pid: u32) -> Result<f64> {
    let mut ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e6)
}

/// Busy CPU time of the whole machine in clock ticks, summed over its CPUs: user, nice, system,
/// irq and softirq of the `cpu` line of `/proc/stat` (idle, iowait and steal left out). Set
/// against [`cpu_ticks`] of one process over the same window, it gives that process's share of
/// the work the machine did.
pub fn machine_busy_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| Error("no cpu line in /proc/stat".into()))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // Fields: user nice system idle iowait irq softirq steal ...
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Outcome of [`RawTunnels::open`].
#[derive(Clone, Debug, Default)]
pub struct HandshakeRun {
    /// Handshakes answered `200`.
    pub accepted: u64,
    /// Handshakes that failed (connect error, timeout, non-200, close).
    pub failed: u64,
    /// Time from the first connect to the last answer, seconds.
    pub seconds: f64,
}

impl HandshakeRun {
    /// Accepted handshakes per second.
    pub fn per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.accepted as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One open tunnel kept by the echo threads.
struct Conn {
    stream: TcpStream,
    /// Bytes received modulo 5 (a partly received `RPING`).
    partial: usize,
}

/// Number of echo threads (each sweeps its share of the tunnels every [`ECHO_SWEEP`]).
const ECHO_SHARDS: usize = 4;
/// Pause between two sweeps of an echo thread (well below the responder's ping timeout of 1 s).
const ECHO_SWEEP: Duration = Duration::from_millis(100);

/// Many raw tunnels to one responder, opened with real handshake bytes and kept alive by echoing
/// every 5 received bytes with `RPING` (what a 1.40.0 initiator does while idle). All sockets are
/// closed when this is dropped.
pub struct RawTunnels {
    shards: Vec<Arc<Mutex<Vec<Conn>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Tunnels closed by the responder so far.
    closed: Arc<AtomicU64>,
    /// RPING echoes written so far.
    echoes: Arc<AtomicU64>,
    /// When set, received `RPING`s are read but no longer echoed (a dead initiator).
    silent: Arc<AtomicBool>,
    /// When each responder close was seen (resolution: one [`ECHO_SWEEP`]).
    close_times: Arc<Mutex<Vec<Instant>>>,
}

impl RawTunnels {
    /// Starts the echo threads (no tunnel yet).
    pub fn new() -> RawTunnels {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicU64::new(0));
        let echoes = Arc::new(AtomicU64::new(0));
        let silent = Arc::new(AtomicBool::new(false));
        let close_times = Arc::new(Mutex::new(Vec::new()));
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..ECHO_SHARDS {
            let shard: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
            let flags = EchoShared {
                stop: stop.clone(),
                silent: silent.clone(),
                closed: closed.clone(),
                echoes: echoes.clone(),
                close_times: close_times.clone(),
            };
            let s = shard.clone();
            threads.push(std::thread::spawn(move || echo_loop(s, flags)));
            shards.push(shard);
        }
        RawTunnels { shards, stop, threads, closed, echoes, silent, close_times }
    }

    /// Tunnels currently held open.
    pub fn open_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|v| v.len()).unwrap_or(0)).sum()
    }

    /// Tunnels the responder closed so far.
    pub fn closed_count(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// RPING echoes sent so far.
    pub fn echo_count(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    /// Stops echoing from now on (sockets stay open; received bytes are still read) and returns
    /// the instant this took effect.
    pub fn go_silent(&self) -> Instant {
        self.silent.store(true, Ordering::Relaxed);
        Instant::now()
    }

    /// Instants at which the responder's closes were seen so far (one per closed tunnel,
    /// measured to within one echo sweep of 100 ms).
    pub fn close_times(&self) -> Vec<Instant> {
        self.close_times.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Opens `n` tunnels to 127.0.0.1:`port` with `in_flight` handshakes at a time (one thread
    /// each, blocking sockets, 10 s timeouts). Node ids are `<node_prefix>-<i % nodes>` (cluster
    /// `<node_prefix>-cluster`, tenant `bench-tenant`). Accepted tunnels join the echo threads.
    pub fn open(&self, port: u16, n: usize, in_flight: usize, node_prefix: &str, nodes: usize) -> HandshakeRun {
        self.open_with_header(port, n, in_flight, node_prefix, nodes, None)
    }

    /// [`RawTunnels::open`], every handshake also carrying the header line `extra` (e.g.
    /// `authorization: Bearer <jwt>`, without CRLF).
    pub fn open_with_header(
        &self,
        port: u16,
        n: usize,
        in_flight: usize,
        node_prefix: &str,
        nodes: usize,
        extra: Option<&str>,
    ) -> HandshakeRun {
        let extra: Option<Arc<str>> = extra.map(Arc::from);
        let next = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..in_flight.max(1) {
            let (next, accepted, failed) = (next.clone(), accepted.clone(), failed.clone());
            let shards = self.shards.clone();
            let prefix = node_prefix.to_string();
            let nodes = nodes.max(1);
            let extra = extra.clone();
            workers.push(std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let node = format!("{prefix}-{}", i % nodes);
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                let mut req = handshake_request(port, &node, &format!("{prefix}-cluster"), "bench-tenant", "worker_0", i as u64 + 1, now_ms);
                if let Some(h) = &extra {
                    // Before the empty line that ends the head.
                    let at = req.len() - 2;
                    req.splice(at..at, format!("{h}\r\n").into_bytes());
                }
                match handshake(port, &req) {
                    Ok(conn) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut v) = shards[i % shards.len()].lock() {
                            v.push(conn);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.join();
        }
        HandshakeRun {
            accepted: accepted.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            seconds: start.elapsed().as_secs_f64(),
        }
    }
}

impl Default for RawTunnels {
    fn default() -> Self {
        RawTunnels::new()
    }
}

impl Drop for RawTunnels {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One handshake: connect, send `req`, read the response head; `Ok` with a non-blocking socket if
/// the status is 200. Bytes after the head (not expected) count towards the first RPING.
fn handshake(port: u16, req: &[u8]) -> Result<Conn> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    s.write_all(req)?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    let head_end = loop {
        let k = s.read(&mut chunk)?;
        if k == 0 {
            return Err(Error::msg("closed before the handshake response"));
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 4096 {
            return Err(Error::msg("handshake response head too long"));
        }
    };
    let status_ok = buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200");
    if !status_ok {
        return Err(Error(format!("handshake refused: {:?}", String::from_utf8_lossy(&buf[..head_end]))));
    }
    s.set_nonblocking(true)?;
    Ok(Conn { stream: s, partial: buf.len() - head_end })
}

/// State shared by the echo threads of one [`RawTunnels`].
struct EchoShared {
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    closed: Arc<AtomicU64>,
    echoes: Arc<AtomicU64>,
    close_times: Arc<Mutex<Vec<Instant>>>,
}

/// Echo thread: every [`ECHO_SWEEP`], reads what each tunnel received and answers each complete
/// 5 bytes with `RPING` (unless silent); drops tunnels the peer closed and notes when.
fn echo_loop(shard: Arc<Mutex<Vec<Conn>>>, f: EchoShared) {
    let mut buf = [0u8; 512];
    while !f.stop.load(Ordering::Relaxed) {
        let silent = f.silent.load(Ordering::Relaxed);
        let mut closed_now = 0usize;
        if let Ok(mut conns) = shard.lock() {
            conns.retain_mut(|c| {
                let mut alive = true;
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => {
                            alive = false;
                            break;
                        }
                        Ok(k) => c.partial += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                let pings = c.partial / 5;
                c.partial %= 5;
                if !silent {
                    for _ in 0..pings {
                        if c.stream.write(b"RPING").is_ok() {
                            f.echoes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if !alive {
                    f.closed.fetch_add(1, Ordering::Relaxed);
                    closed_now += 1;
                }
                alive
            });
        }
        if closed_now > 0 {
            let now = Instant::now();
            if let Ok(mut t) = f.close_times.lock() {
                t.extend(std::iter::repeat_n(now, closed_now));
            }
        }
        std::thread::sleep(ECHO_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_parses() {
        let t = "finished in 1.50s, 13333.33 req/s, 1.2MB/s\nrequests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 0 errored, 0 timeout\nstatus codes: 19990 2xx, 0 3xx, 0 4xx, 10 5xx\n";
        assert_eq!(parse_h2load_summary(t), Some((1.5, 20000, 19990)));
        let t2 = t.replace("1.50s", "850.00ms");
        assert_eq!(parse_h2load_summary(&t2).map(|x| x.0), Some(0.85));
        assert_eq!(parse_h2load_summary("garbage"), None);
    }

    #[test]
    fn log_and_percentiles() {
        let log = "1\t200\t300\n2\t503\t10\n3\t200\t100\nbad\n4\t200\t200\n";
        let v = parse_h2load_log(log);
        assert_eq!(v, vec![100, 200, 300]);
        assert_eq!(percentile(&v, 0.5), 200);
        assert_eq!(percentile(&v, 0.99), 300);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }

    #[test]
    fn own_process_stats() {
        let pid = std::process::id();
        assert!(crate::process::proc_rss_kib(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_ok());
        assert!(cpu_ms(pid).is_ok_and(|ms| ms > 0.0));
        assert!(clk_tck() > 0);
    }
}
