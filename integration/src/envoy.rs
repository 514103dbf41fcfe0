//! The [`Envoy`] guard: one real Envoy process, its admin interface and its stats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::http::{http_get, http_request_timeout};
use crate::{envoy_bin, module_dir, wait_for, Check, Error, Process, Result};

static ENVOY_SEQ: AtomicU64 = AtomicU64::new(0);

/// Timeout of one admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Envoy.
///
/// Started with `--disable-hot-restart` (no shared memory, so any number of Envoys can run at
/// once without `--base-id`), `--concurrency N`, `-l info` (env `RT_ENVOY_LOG_LEVEL` overrides),
/// `--admin-address-path` (how the harness learns the admin port) and
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` = [`module_dir`]. Its log (stdout + stderr) and admin
/// address file are written next to the config file. Stopped on Drop (`/quitquitquit`, then
/// SIGTERM, then SIGKILL).
pub struct Envoy {
    process: Process,
    config: PathBuf,
    admin_address_file: PathBuf,
    admin_port: Option<u16>,
}

impl Envoy {
    /// Starts Envoy on `config_path` with `concurrency` workers and extra environment variables.
    /// Returns at once; use [`Envoy::wait_ready`] to wait until it serves.
    pub fn start(config_path: &Path, concurrency: u32, extra_env: &[(&str, &str)]) -> Result<Envoy> {
        Envoy::start_with_args(config_path, concurrency, &[], extra_env)
    }

    /// [`Envoy::start`] with extra command-line arguments (e.g. `--drain-time-s 2`).
    pub fn start_with_args(
        config_path: &Path,
        concurrency: u32,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<Envoy> {
        let dir = config_path
            .parent()
            .ok_or_else(|| Error(format!("config {} has no parent", config_path.display())))?;
        let stem = config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "envoy".into());
        let seq = ENVOY_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut run = 1;
        let (log_path, admin_address_file) = loop {
            let suffix = if run == 1 { String::new() } else { format!("-run{run}") };
            let log = dir.join(format!("{stem}{suffix}.log"));
            if !log.exists() {
                break (log, dir.join(format!("{stem}{suffix}-{seq}.admin")));
            }
            run += 1;
        };
        let level = std::env::var("RT_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(config_path)
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("-l")
            .arg(level)
            .arg("--admin-address-path")
            .arg(&admin_address_file)
            .args(extra_args)
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
            .current_dir(dir);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let name = format!("envoy {stem}");
        let process = Process::spawn(&name, cmd, &log_path)?;
        Ok(Envoy {
            process,
            config: config_path.to_path_buf(),
            admin_address_file,
            admin_port: None,
        })
    }

    /// The underlying process guard.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The config file this Envoy runs.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything Envoy logged so far.
    pub fn log_contents(&self) -> String {
        self.process.log_contents()
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// Error lines plus the last `n` log lines (see [`Process::log_excerpt`]).
    pub fn log_excerpt(&self, n: usize) -> String {
        self.process.log_excerpt(n)
    }

    /// The exit status if Envoy has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.process.try_status()
    }

    /// Waits up to `timeout` for Envoy to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    fn exited_error(&mut self) -> Option<Error> {
        self.process.try_status().map(|s| {
            Error(format!(
                "{} exited ({s}); log:\n{}",
                self.process.name(),
                self.process.log_excerpt(15)
            ))
        })
    }

    /// The admin port once Envoy has written its admin address file (non-blocking).
    fn poll_admin_port(&mut self) -> Option<u16> {
        if self.admin_port.is_none() {
            let text = std::fs::read_to_string(&self.admin_address_file).ok()?;
            let port = text.trim().rsplit(':').next()?.parse().ok()?;
            self.admin_port = Some(port);
            self.process.set_admin_port(port);
        }
        self.admin_port
    }

    /// The admin port, waiting up to 10 s for Envoy to publish it.
    pub fn admin_port(&mut self) -> Result<u16> {
        if let Some(p) = self.poll_admin_port() {
            return Ok(p);
        }
        wait_for("the Envoy admin address", Duration::from_secs(10), || {
            if let Some(e) = self.exited_error() {
                return Err(e);
            }
            Ok(match self.poll_admin_port() {
                Some(p) => Check::Done(p),
                None => Check::NotYet("no admin address file yet".into()),
            })
        })
        .map_err(|e| e.context(self.process.name().to_string()))
    }

    /// Polls admin `/ready` until it answers 200 (`LIVE`), failing early if Envoy exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let name = self.process.name().to_string();
        let res = wait_for(&format!("{name} to be ready"), timeout, || {
            if let Some(e) = self.exited_error() {
                return Err(e);
            }
            let Some(port) = self.poll_admin_port() else {
                return Ok(Check::NotYet("no admin address file yet".into()));
            };
            Ok(match http_request_timeout(port, "GET", "/ready", &[], b"", ADMIN_TIMEOUT) {
                Ok(r) if r.status == 200 => Check::Done(()),
                Ok(r) => Check::NotYet(format!("/ready answered {} {:?}", r.status, r.body.trim())),
                Err(e) => Check::NotYet(e.0),
            })
        });
        res.map_err(|e| {
            if e.0.contains("exited (") {
                e
            } else {
                Error(format!("{e}; log:\n{}", self.process.log_excerpt(15)))
            }
        })
    }

    /// GET an admin path (e.g. `/clusters`) and return the body; non-200 is an error.
    pub fn admin_get(&mut self, path: &str) -> Result<String> {
        let port = self.admin_port()?;
        let r = http_get(port, path, &[]).map_err(|e| e.context("admin"))?;
        if r.status != 200 {
            return Err(Error(format!("admin {path} answered {}: {}", r.status, r.body.trim())));
        }
        Ok(r.body)
    }

    /// All stats from admin `/stats` (text format) as name → value text.
    pub fn stats(&mut self) -> Result<HashMap<String, String>> {
        Ok(parse_stats(&self.admin_get("/stats")?))
    }

    /// Like [`Envoy::stats`] but including hidden stats (`/stats?hidden=include`).
    pub fn stats_hidden(&mut self) -> Result<HashMap<String, String>> {
        Ok(parse_stats(&self.admin_get("/stats?hidden=include")?))
    }

    /// The stats (hidden included) whose names start with `prefix`, sorted by name.
    pub fn stats_with_prefix(&mut self, prefix: &str) -> Result<Vec<(String, String)>> {
        let filter = format!("^{}", regex_escape(prefix));
        let body = self.admin_get(&format!("/stats?hidden=include&filter={}", percent_encode(&filter)))?;
        let mut v: Vec<(String, String)> = parse_stats(&body)
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        v.sort();
        Ok(v)
    }

    /// One counter or gauge (hidden included) as a number; `Ok(None)` if there is no such stat.
    pub fn stat_u64(&mut self, name: &str) -> Result<Option<u64>> {
        let filter = format!("^{}$", regex_escape(name));
        let body = self.admin_get(&format!("/stats?hidden=include&filter={}", percent_encode(&filter)))?;
        match parse_stats(&body).get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error(format!("stat {name} is not an integer: {v:?}"))),
        }
    }

    /// Polls [`Envoy::stat_u64`] until `pred(value)` holds (a missing stat counts as 0), and
    /// returns the value.
    pub fn wait_stat(
        &mut self,
        name: &str,
        pred: impl Fn(u64) -> bool,
        timeout: Duration,
    ) -> Result<u64> {
        wait_for(&format!("stat {name}"), timeout, || {
            if let Some(e) = self.exited_error() {
                return Err(e);
            }
            Ok(match self.stat_u64(name) {
                Ok(v) if pred(v.unwrap_or(0)) => Check::Done(v.unwrap_or(0)),
                Ok(v) => Check::NotYet(format!("{name} = {v:?}")),
                Err(e) => Check::NotYet(e.0),
            })
        })
    }

    /// Graceful stop: `POST /quitquitquit`, then SIGTERM, then SIGKILL (each after a deadline).
    pub fn quit(&mut self) -> Option<ExitStatus> {
        self.poll_admin_port();
        self.process.stop()
    }

    /// SIGKILL now (simulates a crash).
    pub fn kill_hard(&mut self) -> Result<ExitStatus> {
        self.process.kill_hard()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.quit();
    }
}

/// `allocated` of admin `/memory` (bytes held by the heap allocator) in KiB, if reported.
pub fn allocated_kib(envoy: &mut Envoy) -> Option<u64> {
    let body = envoy.admin_get("/memory").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let a = &v["allocated"];
    a.as_str().and_then(|s| s.parse::<u64>().ok()).or_else(|| a.as_u64()).map(|b| b / 1024)
}

/// Parses admin `/stats` text output (`name: value` per line).
pub fn parse_stats(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Escapes RE2 metacharacters so that `s` matches literally.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything except unreserved URI characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
