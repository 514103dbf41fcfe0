//! A real gRPC server and client (Python `grpcio`, `integration/grpc/`) as child processes.
//!
//! [`GrpcServer`] runs `integration/grpc/server.py` on a free loopback port (behind an initiator:
//! its `local-grpc` cluster) and is ended by PID on Drop; [`run_client`] runs
//! `integration/grpc/client.py` against a responder's HTTP port with a deadline and returns its
//! JSON result line. Both use the project venv's Python (`.venv/bin/python`, where
//! `scripts/setup.sh` installs `grpcio`), or env `RT_PYTHON`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::paths::{free_port, repo_root};
use crate::{wait_for, Check, Error, Process, Result, TestDir};

/// How long the server may take to print `READY` (imports grpcio, binds, starts).
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The Python that has `grpcio`: env `RT_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn python_bin() -> PathBuf {
    match std::env::var_os("RT_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv").join("bin").join("python"),
    }
}

/// Directory of `server.py` and `client.py`.
pub fn grpc_dir() -> PathBuf {
    repo_root().join("integration").join("grpc")
}

/// Fails with a clear message unless [`python_bin`] can `import grpc`.
pub fn require_grpcio() -> Result<()> {
    let py = python_bin();
    let out = Command::new(&py)
        .args(["-c", "import grpc; print(grpc.__version__)"])
        .output()
        .map_err(|e| Error(format!("cannot run {}: {e} (run scripts/setup.sh)", py.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error(format!(
            "{} cannot import grpc (run scripts/setup.sh): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `integration/grpc/server.py` serving service `rt.test.Echo` on 127.0.0.1:[`GrpcServer::port`].
/// SIGTERM, then SIGKILL, by PID on Drop.
pub struct GrpcServer {
    port: u16,
    process: Process,
}

impl GrpcServer {
    /// Starts the server on a free port, answering as `node_id` (trailing metadata
    /// `x-served-by`), with its log in `dir`, and waits until it prints `READY`.
    pub fn start(dir: &TestDir, node_id: &str) -> Result<GrpcServer> {
        let port = free_port()?;
        let mut cmd = Command::new(python_bin());
        cmd.arg("-u").arg(grpc_dir().join("server.py")).arg(port.to_string()).arg(node_id);
        let safe: String = node_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let log = dir.unique_file(&format!("grpc-server-{safe}"), "log");
        let mut process = Process::spawn(&format!("grpc server {node_id}"), cmd, &log)?;
        let ready = format!("READY {port}");
        wait_for(&format!("gRPC server {node_id} to print READY"), SERVER_READY_TIMEOUT, || {
            if let Some(s) = process.try_status() {
                return Err(Error(format!(
                    "gRPC server {node_id} exited ({s}); log:\n{}",
                    process.log_tail(20)
                )));
            }
            if process.log_contents().lines().any(|l| l.trim() == ready) {
                Ok(Check::Done(()))
            } else {
                Ok(Check::NotYet(process.log_tail(3)))
            }
        })?;
        Ok(GrpcServer { port, process })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }
}

/// What one run of `client.py` printed and how it ended.
#[derive(Debug)]
pub struct ClientRun {
    /// True if the client exited with status 0 (every call did what was expected).
    pub success: bool,
    /// Its JSON result line (`Value::Null` if it printed none).
    pub result: Value,
    /// Everything it wrote (stdout and stderr), for messages.
    pub output: String,
}

impl ClientRun {
    /// Field `key` of the result as u64 (0 if absent).
    pub fn u64(&self, key: &str) -> u64 {
        self.result.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    /// Field `key` of the result as f64 (0.0 if absent).
    pub fn f64(&self, key: &str) -> f64 {
        self.result.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// Field `key` of the result as a string ("" if absent or not a string).
    pub fn str(&self, key: &str) -> &str {
        self.result.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// Field `key` of the result as a list of strings (empty if absent).
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.result
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

/// Runs `client.py --port <port> --node <node> <args…>` (log in `dir`), ended by PID after
/// `timeout`. Returns its result whether or not it succeeded; errors only if it could not run,
/// timed out or printed no JSON line.
pub fn run_client(
    dir: &TestDir,
    port: u16,
    node: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<ClientRun> {
    let mut cmd = Command::new(python_bin());
    cmd.arg("-u")
        .arg(grpc_dir().join("client.py"))
        .args(["--port", &port.to_string(), "--node", node])
        .args(args);
    let log = dir.unique_file("grpc-client", "log");
    let mut process = Process::spawn("grpc client", cmd, &log)?;
    let status = match process.wait_exit(timeout) {
        Some(s) => s,
        None => {
            process.kill_hard()?;
            return Err(Error(format!(
                "gRPC client {args:?} did not finish within {timeout:?}; output:\n{}",
                process.log_tail(20)
            )));
        }
    };
    let output = process.log_contents();
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{') && l.contains("\"mode\""))
        .ok_or_else(|| Error(format!("gRPC client {args:?} ({status}) printed no result; output:\n{output}")))?;
    let result: Value = serde_json::from_str(line)
        .map_err(|e| Error(format!("gRPC client result is no JSON ({e}): {line}")))?;
    Ok(ClientRun {
        success: status.success(),
        result,
        output,
    })
}
