//! The [`Process`] guard: a child process whose output goes to a log file and which is always
//! ended by its PID (graceful first, then SIGKILL after a deadline), also when the guard is dropped
//! during a panic.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{http, Error, Result};

/// How long [`Process::stop`] waits after each graceful step before escalating.
pub const GRACE: Duration = Duration::from_secs(5);

/// A running child process, ended by PID when dropped.
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    admin_port: Option<u16>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout + stderr appended to `log_path`.
    /// `name` is used in messages only.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> Result<Process> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| Error(format!("cannot open log {}: {e}", log_path.display())))?;
        let log2 = log.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .map_err(|e| Error(format!("cannot start {name} ({:?}): {e}", cmd.get_program())))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
            admin_port: None,
            status: None,
        })
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of [`Process::log_contents`] (for error messages).
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.log_contents();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A short excerpt for error messages: the last 10 `[error]`/`[critical]` lines, then the last
    /// `n` lines.
    pub fn log_excerpt(&self, n: usize) -> String {
        let all = self.log_contents();
        let lines: Vec<&str> = all.lines().collect();
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("][error][") || l.contains("][critical]["))
            .collect();
        let mut out = String::new();
        if !errors.is_empty() {
            out.push_str("error lines:\n");
            out.push_str(&errors[errors.len().saturating_sub(10)..].join("\n"));
            out.push_str("\nlast lines:\n");
        }
        out.push_str(&lines[lines.len().saturating_sub(n)..].join("\n"));
        out
    }

    /// Declares the Envoy admin port, so that [`Process::stop`] first asks for
    /// `POST /quitquitquit`.
    pub fn set_admin_port(&mut self, port: u16) {
        self.admin_port = Some(port);
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits (polling) up to `timeout` for the process to exit; returns its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to the PID (through `kill -TERM <pid>`); no wait.
    pub fn terminate(&mut self) -> Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if st.success() || self.try_status().is_some() {
            Ok(())
        } else {
            Err(Error(format!("kill -TERM {} ({}) failed", self.pid(), self.name)))
        }
    }

    /// SIGKILL now and reap the process (used to simulate a crashed initiator).
    pub fn kill_hard(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.try_status() {
            return Ok(s);
        }
        // Child::kill sends SIGKILL to this child's PID.
        if let Err(e) = self.child.kill() {
            if self.try_status().is_none() {
                return Err(Error(format!("SIGKILL {} ({}): {e}", self.pid(), self.name)));
            }
        }
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }

    /// Ends the process gracefully: `POST /quitquitquit` on the admin port if known, else SIGTERM;
    /// waits up to [`GRACE`]; then SIGTERM (if not sent yet) and another [`GRACE`]; then SIGKILL.
    /// Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_status() {
            return Some(s);
        }
        if let Some(port) = self.admin_port {
            let _ = http::http_request_timeout(
                port,
                "POST",
                "/quitquitquit",
                &[],
                b"",
                Duration::from_secs(2),
            );
            if let Some(s) = self.wait_exit(GRACE) {
                return Some(s);
            }
        }
        let _ = self.terminate();
        if let Some(s) = self.wait_exit(GRACE) {
            return Some(s);
        }
        eprintln!(
            "[rt-integration] {} (pid {}) ignored graceful stop; sending SIGKILL",
            self.name,
            self.pid()
        );
        self.kill_hard().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends signal `sig` (a name such as `STOP` or `CONT`) to process `pid` with `kill(1)`.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(Error(format!("kill -{sig} {pid} failed")))
    }
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
pub fn proc_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn proc_rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error(format!("no VmRSS in /proc/{pid}/status")))
}
