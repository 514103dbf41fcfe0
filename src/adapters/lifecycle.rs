//! Writer of the responder's lifecycle access log (docs/protocol.md#lifecycle-log): the configured
//! `access_log` loggers of the bootstrap extension, fed with [`LifecycleEvent`]s.
//!
//! - [`LifecycleLog::emit`] never blocks and never does I/O: it moves the event into a bounded
//!   queue ([`QUEUE_CAPACITY`] events) with `try_send`; when the queue is full the event is dropped
//!   and counted ([`LifecycleLog::dropped`]). With no logger configured it returns at once (check
//!   [`LifecycleLog::enabled`] to skip building the event too).
//! - One writer thread, named `rt-access-log`, formats every event with every logger
//!   ([`crate::core::accesslog::Formatter`]) and appends the lines to its sink: a file (opened
//!   with append + create when the log is built; loggers naming the same path share one handle so
//!   lines never interleave), stdout or stderr. Output is buffered (64 KiB per sink) and flushed
//!   at least every [`FLUSH_INTERVAL`] (Envoy's default `file_flush_interval_msec` is 1000 ms) and
//!   on [`LifecycleLog::shutdown`].
//! - [`LifecycleLog::reopen`] makes the writer flush and reopen every file within one flush
//!   interval (for the admin `/reopen_logs`, after an external rotation).

use crate::config::bootstrap::{AccessLogConfig, AccessLogSink};
use crate::core::accesslog::{Formatter, LifecycleEvent};
use crate::core::format_string::FormatError;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound of the event queue between [`LifecycleLog::emit`] and the writer thread.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Longest time a written line stays in the writer's buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Buffer size per sink, bytes.
const SINK_BUFFER: usize = 64 * 1024;

/// Name of the writer thread.
pub const THREAD_NAME: &str = "rt-access-log";

/// The lifecycle access log: a bounded queue and its writer thread (see the module docs).
/// `Send + Sync`: share it (e.g. in an `Arc` or a static) between all workers.
pub struct LifecycleLog {
    inner: Option<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// State shared with the writer thread.
#[derive(Default)]
struct Shared {
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    reopen: AtomicBool,
}

enum Msg {
    Event(Box<LifecycleEvent>),
    /// Look at the flags (reopen) now.
    Wake,
    /// Drain, flush and exit.
    Shutdown,
}

/// One output of the writer thread.
struct Sink {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
}

#[derive(Clone, PartialEq, Eq)]
enum Target {
    File(String),
    Stdout,
    Stderr,
}

impl Target {
    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::File(path) => Box::new(open_append(path)?),
            Target::Stdout => Box::new(std::io::stdout()),
            Target::Stderr => Box::new(std::io::stderr()),
        })
    }
}

fn open_append(path: &str) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Why the lifecycle log cannot start; the text names the `access_log` entry.
#[derive(Debug)]
pub enum AccessLogError {
    /// Entry `index` has a format the formatter does not support.
    Format { index: usize, error: FormatError },
    /// Entry `index`'s output cannot be opened (`path` for a file).
    Open { index: usize, path: Option<String>, error: std::io::Error },
    /// The writer thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for AccessLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogError::Format { index, error } => write!(f, "access_log[{index}]: {error}"),
            AccessLogError::Open { index, path: Some(p), error } => write!(f, "access_log[{index}]: cannot open '{p}': {error}"),
            AccessLogError::Open { index, path: None, error } => write!(f, "access_log[{index}]: {error}"),
            AccessLogError::Thread(e) => write!(f, "cannot start the {THREAD_NAME} thread: {e}"),
        }
    }
}

impl LifecycleLog {
    /// Builds the log for the decoded bootstrap `access_log` list. Compiles every format and opens
    /// every file now. Errors: `access_log[i]: <formatter error>` or
    /// `access_log[i]: cannot open '<path>': <os error>`, or a failure to start the thread.
    /// An empty list gives a disabled log (no thread).
    pub fn new(configs: &[AccessLogConfig]) -> Result<Self, AccessLogError> {
        Self::start(configs, QUEUE_CAPACITY, None)
    }

    /// A log with no logger ([`Self::emit`] is a no-op).
    pub fn disabled() -> Self {
        LifecycleLog { inner: None }
    }

    /// [`Self::new`] with a queue bound; `gate`, when given, holds the writer thread until it
    /// receives a message or is dropped (tests).
    fn start(
        configs: &[AccessLogConfig],
        capacity: usize,
        gate: Option<Receiver<()>>,
    ) -> Result<Self, AccessLogError> {
        if configs.is_empty() {
            return Ok(Self::disabled());
        }
        let mut sinks: Vec<Sink> = Vec::new();
        let mut loggers: Vec<(Formatter, usize)> = Vec::with_capacity(configs.len());
        for (i, cfg) in configs.iter().enumerate() {
            let formatter =
                Formatter::new(&cfg.format).map_err(|error| AccessLogError::Format { index: i, error })?;
            let target = match &cfg.sink {
                AccessLogSink::File { path } => Target::File(path.clone()),
                AccessLogSink::Stdout => Target::Stdout,
                AccessLogSink::Stderr => Target::Stderr,
            };
            let idx = match sinks.iter().position(|s| s.target == target) {
                Some(idx) => idx,
                None => {
                    let out = target.open().map_err(|error| AccessLogError::Open {
                        index: i,
                        path: match &target {
                            Target::File(p) => Some(p.clone()),
                            _ => None,
                        },
                        error,
                    })?;
                    sinks.push(Sink {
                        target,
                        out: BufWriter::with_capacity(SINK_BUFFER, out),
                    });
                    sinks.len() - 1
                }
            };
            loggers.push((formatter, idx));
        }
        let (tx, rx) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                run_writer(rx, loggers, sinks, &thread_shared);
            })
            .map_err(AccessLogError::Thread)?;
        Ok(LifecycleLog {
            inner: Some(Inner {
                tx,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(handle)),
                shared,
            }),
        })
    }

    /// Whether any logger is configured and the log is not shut down.
    pub fn enabled(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| !i.closed.load(Ordering::Relaxed))
    }

    /// Queues `ev` for every logger. Never blocks: a full queue (or a shut-down log) drops the
    /// event and counts it in [`Self::dropped`]. No-op without loggers.
    pub fn emit(&self, ev: LifecycleEvent) {
        let Some(inner) = &self.inner else { return };
        if inner.closed.load(Ordering::Relaxed)
            || inner.tx.try_send(Msg::Event(Box::new(ev))).is_err()
        {
            inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full or the log was shut down.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.shared.dropped.load(Ordering::Relaxed))
    }

    /// Lines handed to the sinks' buffers so far (one per event and logger).
    pub fn written(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.shared.written.load(Ordering::Relaxed))
    }

    /// Failed writes, flushes and reopens so far.
    pub fn write_errors(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.shared.write_errors.load(Ordering::Relaxed))
    }

    /// Asks the writer to flush and reopen every file (append + create); done within
    /// [`FLUSH_INTERVAL`]. A file that cannot be reopened keeps its old handle (counted in
    /// [`Self::write_errors`]). Never blocks.
    pub fn reopen(&self) {
        let Some(inner) = &self.inner else { return };
        inner.shared.reopen.store(true, Ordering::Relaxed);
        let _ = inner.tx.try_send(Msg::Wake);
    }

    /// Stops accepting events, writes what is queued, flushes every sink and joins the writer
    /// thread. Idempotent; also run on drop. May wait for the queue to drain.
    pub fn shutdown(&self) {
        let Some(inner) = &self.inner else { return };
        if !inner.closed.swap(true, Ordering::AcqRel) {
            // Blocking send: the writer keeps draining, so this returns; it fails only if the
            // writer thread is gone.
            let _ = inner.tx.send(Msg::Shutdown);
        }
        let handle = inner.thread.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for LifecycleLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for LifecycleLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleLog")
            .field("enabled", &self.enabled())
            .field("dropped", &self.dropped())
            .field("written", &self.written())
            .finish()
    }
}

/// The writer thread's loop.
fn run_writer(
    rx: Receiver<Msg>,
    loggers: Vec<(Formatter, usize)>,
    mut sinks: Vec<Sink>,
    shared: &Shared,
) {
    let mut next_flush = Instant::now() + FLUSH_INTERVAL;
    let write = |ev: &LifecycleEvent, sinks: &mut Vec<Sink>| {
        for (formatter, idx) in &loggers {
            let line = formatter.format(ev);
            if let Some(sink) = sinks.get_mut(*idx) {
                match sink.out.write_all(line.as_bytes()) {
                    Ok(()) => shared.written.fetch_add(1, Ordering::Relaxed),
                    Err(_) => shared.write_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    };
    loop {
        let timeout = next_flush.saturating_duration_since(Instant::now());
        let stop = match rx.recv_timeout(timeout) {
            Ok(Msg::Event(ev)) => {
                write(&ev, &mut sinks);
                false
            }
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if stop {
            // Events that raced with shutdown.
            loop {
                match rx.try_recv() {
                    Ok(Msg::Event(ev)) => write(&ev, &mut sinks),
                    Ok(_) => {}
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            flush_all(&mut sinks, shared);
            return;
        }
        if shared.reopen.swap(false, Ordering::Relaxed) {
            flush_all(&mut sinks, shared);
            for sink in sinks.iter_mut() {
                if let Target::File(path) = &sink.target {
                    match open_append(path) {
                        Ok(f) => {
                            sink.out = BufWriter::with_capacity(SINK_BUFFER, Box::new(f));
                        }
                        Err(_) => {
                            shared.write_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_flush {
            flush_all(&mut sinks, shared);
            next_flush = now + FLUSH_INTERVAL;
        }
    }
}

fn flush_all(sinks: &mut [Sink], shared: &Shared) {
    for sink in sinks.iter_mut() {
        if sink.out.flush().is_err() {
            shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accesslog::{EventName, LogType, SocketState};
    use crate::config::bootstrap::LogFormat;

    /// A fresh directory under the system temp dir, removed on drop.
    struct Tmp(std::path::PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rt-lifecycle-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Tmp(dir)
        }
        fn file(&self, name: &str) -> String {
            self.0.join(name).to_string_lossy().into_owned()
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file_cfg(path: &str, fmt: &str) -> AccessLogConfig {
        AccessLogConfig {
            name: "envoy.access_loggers.file".into(),
            sink: AccessLogSink::File { path: path.into() },
            format: LogFormat::Text(fmt.into()),
            has_filter: false,
        }
    }

    fn ev(n: u64) -> LifecycleEvent {
        LifecycleEvent {
            event: EventName::IdlePingSent,
            log_type: LogType::TcpUpstreamConnected,
            node_id: "n".into(),
            worker: "worker_0".into(),
            socket_state: SocketState::Idle,
            fd: n,
            connection_id: n,
            ..Default::default()
        }
    }

    fn lines(path: &str) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LifecycleLog>();
    }

    #[test]
    fn events_written_in_order_by_every_logger() {
        let tmp = Tmp::new("order");
        let a = tmp.file("a.log");
        let b = tmp.file("b.log");
        let log = LifecycleLog::new(&[
            file_cfg(&a, "%CONNECTION_ID%"),
            file_cfg(
                &b,
                "%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:event)% %CONNECTION_ID%\n",
            ),
            file_cfg(&a, "second %CONNECTION_ID%"),
        ])
        .unwrap();
        assert!(log.enabled());
        for n in 0..1000 {
            log.emit(ev(n));
        }
        log.shutdown();
        assert!(!log.enabled());
        let got_a = lines(&a);
        let want_a: Vec<String> = (0..1000)
            .flat_map(|n| [n.to_string(), format!("second {n}")])
            .collect();
        assert_eq!(got_a, want_a);
        let want_b: Vec<String> = (0..1000).map(|n| format!("idle_ping_sent {n}")).collect();
        assert_eq!(lines(&b), want_b);
        assert_eq!(log.dropped(), 0);
        assert_eq!(log.written(), 3000);
        assert_eq!(log.write_errors(), 0);
        // Idempotent; emits after shutdown are dropped, not written.
        log.shutdown();
        log.emit(ev(1));
        assert_eq!(log.dropped(), 1);
        assert_eq!(lines(&a).len(), 2000);
    }

    #[test]
    fn appends_to_an_existing_file() {
        let tmp = Tmp::new("append");
        let a = tmp.file("a.log");
        std::fs::write(&a, "old\n").unwrap();
        let log = LifecycleLog::new(&[file_cfg(&a, "%CONNECTION_ID%")]).unwrap();
        log.emit(ev(7));
        drop(log);
        assert_eq!(lines(&a), ["old", "7"]);
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let tmp = Tmp::new("full");
        let a = tmp.file("a.log");
        let (gate_tx, gate_rx) = mpsc::channel();
        let log =
            LifecycleLog::start(&[file_cfg(&a, "%CONNECTION_ID%")], 4, Some(gate_rx)).unwrap();
        let t0 = Instant::now();
        for n in 0..10_000 {
            log.emit(ev(n));
        }
        let spent = t0.elapsed();
        assert!(spent < Duration::from_secs(1), "emit blocked: {spent:?}");
        assert_eq!(log.dropped(), 10_000 - 4);
        gate_tx.send(()).unwrap();
        log.shutdown();
        assert_eq!(lines(&a), ["0", "1", "2", "3"]);
    }

    #[test]
    fn flushes_within_the_interval_without_shutdown() {
        let tmp = Tmp::new("flush");
        let a = tmp.file("a.log");
        let log = LifecycleLog::new(&[file_cfg(&a, "%CONNECTION_ID%")]).unwrap();
        log.emit(ev(1));
        let deadline = Instant::now() + FLUSH_INTERVAL * 3;
        while lines(&a).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(lines(&a), ["1"]);
        log.shutdown();
    }

    #[test]
    fn shutdown_flushes_buffered_lines() {
        let tmp = Tmp::new("shutdown");
        let a = tmp.file("a.log");
        let log = LifecycleLog::new(&[file_cfg(&a, "%CONNECTION_ID%")]).unwrap();
        for n in 0..5 {
            log.emit(ev(n));
        }
        let t0 = Instant::now();
        log.shutdown();
        // Well before the periodic flush: the lines came from shutdown's flush.
        assert!(t0.elapsed() < FLUSH_INTERVAL);
        assert_eq!(lines(&a), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn reopen_follows_a_rotated_file() {
        let tmp = Tmp::new("reopen");
        let a = tmp.file("a.log");
        let rotated = tmp.file("a.log.1");
        let log = LifecycleLog::new(&[file_cfg(&a, "%CONNECTION_ID%")]).unwrap();
        log.emit(ev(1));
        let deadline = Instant::now() + FLUSH_INTERVAL * 3;
        while lines(&a).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::rename(&a, &rotated).unwrap();
        log.reopen();
        let deadline = Instant::now() + FLUSH_INTERVAL * 3;
        while !std::path::Path::new(&a).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        log.emit(ev(2));
        log.shutdown();
        assert_eq!(lines(&rotated), ["1"]);
        assert_eq!(lines(&a), ["2"]);
    }

    #[test]
    fn errors_and_disabled() {
        let tmp = Tmp::new("errors");
        let bad_dir = tmp.file("missing-dir/a.log");
        let e = LifecycleLog::new(&[file_cfg(&bad_dir, "%DURATION%")]).unwrap_err();
        assert!(matches!(e, AccessLogError::Open { index: 0, path: Some(_), .. }));
        assert!(e.to_string().starts_with("access_log[0]: cannot open"), "{e}");
        let e = LifecycleLog::new(&[file_cfg(&tmp.file("x"), "%BYTES_SENT%")]).unwrap_err().to_string();
        assert!(
            e.contains("access_log[0]") && e.contains("%BYTES_SENT%"),
            "{e}"
        );
        let log = LifecycleLog::new(&[]).unwrap();
        assert!(!log.enabled());
        log.emit(ev(1));
        log.reopen();
        log.shutdown();
        assert_eq!(log.dropped(), 0);
    }
}
