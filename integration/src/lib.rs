//! Real-process test harness for the reverse-tunnel responder.
//!
//! Everything here runs real programs on loopback (127.0.0.1): the real Envoy 1.40.0 binary as
//! responder (our dynamic module, or Envoy's built-in responder for comparison) and as initiators
//! (the built-in `envoy.bootstrap.reverse_tunnel.downstream_socket_interface`), plus in-process
//! HTTP/1.1 backends. Ports are picked free at run time, every wait is bounded by a deadline, and
//! every process is ended by PID when its guard is dropped (also when a test panics).
//!
//! Layout:
//! - [`paths`]: where the repository, the Envoy binary, the module and the config templates are.
//! - [`tmp`]: per-test temporary directories and template rendering.
//! - [`process`]: the [`Process`] guard (spawn, SIGTERM/SIGKILL by PID, logs).
//! - [`envoy`]: the [`Envoy`] guard (start, readiness, admin stats, quit).
//! - [`http`]: a minimal HTTP/1.1 client ([`http_get`], [`HttpConn`]).
//! - [`backend`]: an in-process HTTP/1.1 [`Backend`].
//! - [`topology`]: backend + responder + initiators in one call ([`Topology`]).
//! - [`control_plane`]: a recording HTTP server for the reporter tests.
//! - [`fleet`]: several responders behind a front Envoy, with a checking request load.
//! - [`grpc`]: a real gRPC server and client (Python `grpcio`, `integration/grpc/`).
//! - [`certs`]: a test CA and certificates made with `openssl` at test time (inner TLS).
//! - [`capture`]: a TCP relay recording every byte between an initiator and the responder.
//!
//! Environment overrides: `ENVOY_BIN`, `RT_MODULE_DIR`, `RT_CONFIG_DIR`, `RT_KEEP_TMP`,
//! `RT_ENVOY_LOG_LEVEL`.

pub mod backend;
pub mod bench;
pub mod capture;
pub mod certs;
pub mod control_plane;
pub mod envoy;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod jwks_server;
pub mod jwt;
pub mod load;
pub mod paths;
pub mod process;
pub mod tmp;
pub mod topology;

use std::fmt;
use std::time::{Duration, Instant};

pub use backend::Backend;
pub use envoy::Envoy;
pub use http::{http_get, http_request, HttpConn, Response};
pub use paths::{config_dir, envoy_bin, free_port, free_ports, module_dir, module_path, repo_root};
pub use process::Process;
pub use tmp::{render, TestDir};
pub use topology::{InitiatorSpec, Responder, Topology};

/// The harness error: a human-readable message (Debug prints the message as is, so a failing
/// `unwrap()` or a test returning `Err` shows it readably).
pub struct Error(pub String);

impl Error {
    /// Builds an error from anything printable.
    pub fn msg(m: impl fmt::Display) -> Error {
        Error(m.to_string())
    }

    /// Prefixes the message with some context.
    pub fn context(self, ctx: impl fmt::Display) -> Error {
        Error(format!("{ctx}: {}", self.0))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(format!("I/O error: {e}"))
    }
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error(s.to_string())
    }
}

/// Result type of the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// Returns early with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error(format!($($arg)*)))
    };
}

/// Returns an error (with the formatted message) unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::Error(format!($($arg)*)));
        }
    };
}

/// Interval between two polls in [`wait_for`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One observation made by a [`wait_for`] probe.
pub enum Check<T> {
    /// The condition holds; stop polling and return this value.
    Done(T),
    /// Not yet; the text describes what was seen (used in the timeout message).
    NotYet(String),
}


/// The number in environment variable `name`, or `default` when unset or not a number (sizes of
/// the long tests, e.g. `RT_SCALE_TUNNELS`).
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one test at a time within a test binary even when the harness runs tests in parallel
/// (each starts Envoys and wants the two cores): hold the guard for the whole test. A test that
/// panicked while holding it does not block the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Ok(Check::Done(v))` (then returns `v`)
/// or `timeout` has passed (then returns an error naming `what` and the last observation).
/// A probe returning `Err` stops the wait at once with that error (a fatal condition, e.g. the
/// process being waited on has exited).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Check<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe()? {
            Check::Done(v) => return Ok(v),
            Check::NotYet(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last seen: {last})");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
