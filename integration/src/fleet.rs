//! A responder fleet on loopback: several responders with our module, a front Envoy spreading
//! requests over them (with the retry policy of `envoy-config/fleet/front.yaml`), built-in
//! initiators whose responder cluster lists every responder, one backend per initiator, and a
//! request load through the front ([`FleetLoad`]) that checks every answer came from the node it
//! named. Used by `integration/tests/fleet.rs` and the `demo-fleet` binary.
//!
//! Configs: `envoy-config/fleet/{front,responder,initiator}.yaml`. Responders run with
//! `--drain-time-s` [`DRAIN_TIME_S`] `--drain-strategy immediate`, so that after
//! `POST /drain_listeners?graceful` their listeners close after that long and the front moves on.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::expected_body;
use crate::envoy::Envoy;
use crate::http::{http_request_timeout, HttpConn};
use crate::paths::{free_port, free_ports, require_module};
use crate::topology::{InitiatorSpec, NODE_HEADER, READY_TIMEOUT};
use crate::{wait_for, Backend, Check, Error, Result, TestDir};

/// `--drain-time-s` of every responder: how long a drained responder keeps its listeners open.
pub const DRAIN_TIME_S: u32 = 2;

/// Response header naming the responder that served a request (`fleet/responder.yaml`).
pub const RESPONDER_HEADER: &str = "x-reverse-tunnel-responder";

/// Responder worker count.
pub const RESPONDER_WORKERS: u32 = 2;

/// One responder of the fleet (its ports stay the same across restarts).
pub struct FleetResponder {
    /// Its name (`responder` in the bootstrap config, the admin listing and [`RESPONDER_HEADER`]).
    pub name: String,
    /// Handshake listener port (initiators dial it).
    pub handshake_port: u16,
    /// Egress HTTP listener port (the front sends to it).
    pub egress_port: u16,
    config: PathBuf,
    envoy: Option<Envoy>,
}

impl FleetResponder {
    /// The running Envoy, if any.
    pub fn envoy(&mut self) -> Option<&mut Envoy> {
        self.envoy.as_mut()
    }
}

/// What a responder's `GET /reverse_tunnels` says about itself.
#[derive(Clone, Debug, Default)]
pub struct ResponderView {
    /// Top-level `responder`.
    pub responder: Option<String>,
    /// Top-level `draining`.
    pub draining: bool,
    /// Idle tunnels.
    pub idle: u64,
    /// Tunnels in use.
    pub in_use: u64,
    /// Tunnels (idle + in use) per node id.
    pub by_node: BTreeMap<String, u64>,
}

/// Front + responders + initiators (+ their backends). Everything is stopped on Drop.
pub struct Fleet {
    /// The front's HTTP listener port (clients send here with `x-remote-node-id`).
    pub front_port: u16,
    front: Option<Envoy>,
    responders: Vec<FleetResponder>,
    initiators: Vec<(InitiatorSpec, Backend, Option<Envoy>)>,
    dir: TestDir,
}

fn endpoints(ports: &[u16]) -> String {
    let eps: Vec<String> = ports
        .iter()
        .map(|p| format!("{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}"))
        .collect();
    format!("[{}]", eps.join(", "))
}

impl Fleet {
    /// Starts `responders` responders (`responder-a`, `responder-b`, …), the front, then one
    /// backend and one initiator per spec (each dialing every responder), waiting for each
    /// Envoy to be ready. Does not wait for tunnels: use [`Fleet::wait_all_tunnels`].
    pub fn start(label: &str, responders: usize, specs: &[InitiatorSpec]) -> Result<Fleet> {
        Fleet::start_edited(label, responders, specs, Ok)
    }

    /// [`Fleet::start`], and `edit_front` rewrites the rendered front config before it starts
    /// (e.g. to take a setting out and see what it prevents).
    pub fn start_edited(
        label: &str,
        responders: usize,
        specs: &[InitiatorSpec],
        edit_front: impl FnOnce(String) -> Result<String>,
    ) -> Result<Fleet> {
        let dir = TestDir::new(label)?;
        require_module()?;
        let mut fleet = Fleet {
            front_port: 0,
            front: None,
            responders: Vec::new(),
            initiators: Vec::new(),
            dir,
        };
        for i in 0..responders {
            let name = format!("responder-{}", (b'a' + i as u8) as char);
            let ports = free_ports(3)?;
            let config = fleet.dir.render(
                "fleet/responder.yaml",
                &format!("{name}.yaml"),
                &[
                    ("ADMIN_PORT", ports[0].to_string()),
                    ("HANDSHAKE_PORT", ports[1].to_string()),
                    ("EGRESS_PORT", ports[2].to_string()),
                    ("RESPONDER_NAME", name.clone()),
                ],
            )?;
            fleet.responders.push(FleetResponder {
                name,
                handshake_port: ports[1],
                egress_port: ports[2],
                config,
                envoy: None,
            });
            fleet.start_responder(i)?;
        }
        let front_ports = free_ports(2)?;
        let egress: Vec<u16> = fleet.responders.iter().map(|r| r.egress_port).collect();
        let config = fleet.dir.render(
            "fleet/front.yaml",
            "front.yaml",
            &[
                ("ADMIN_PORT", front_ports[0].to_string()),
                ("FRONT_PORT", front_ports[1].to_string()),
                ("RESPONDER_ENDPOINTS", endpoints(&egress)),
            ],
        )?;
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(&config, edit_front(text)?)?;
        let mut front = Envoy::start(&config, 1, &[])?;
        front.wait_ready(READY_TIMEOUT)?;
        fleet.front = Some(front);
        fleet.front_port = front_ports[1];
        let handshake: Vec<u16> = fleet.responders.iter().map(|r| r.handshake_port).collect();
        for spec in specs {
            let backend = Backend::start(&spec.node_id)?;
            let config = fleet.dir.render(
                "fleet/initiator.yaml",
                &format!("initiator-{}.yaml", spec.node_id),
                &[
                    ("ADMIN_PORT", free_port()?.to_string()),
                    ("NODE_ID", spec.node_id.clone()),
                    ("CLUSTER_ID", spec.cluster_id.clone()),
                    ("TENANT_ID", spec.tenant_id.clone()),
                    ("TUNNEL_COUNT", spec.tunnel_count.to_string()),
                    ("RESPONDER_ENDPOINTS", endpoints(&handshake)),
                    ("BACKEND_PORT", backend.port().to_string()),
                ],
            )?;
            let mut envoy = Envoy::start(&config, spec.concurrency, &[])?;
            envoy.wait_ready(READY_TIMEOUT)?;
            fleet.initiators.push((spec.clone(), backend, Some(envoy)));
        }
        Ok(fleet)
    }

    /// The test directory (configs and logs).
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// Number of responders.
    pub fn responder_count(&self) -> usize {
        self.responders.len()
    }

    /// Responder `i`.
    pub fn responder(&mut self, i: usize) -> &mut FleetResponder {
        &mut self.responders[i]
    }

    /// The front Envoy.
    pub fn front(&mut self) -> &mut Envoy {
        self.front.as_mut().expect("the front runs")
    }

    /// Node ids of the initiators.
    pub fn nodes(&self) -> Vec<String> {
        self.initiators.iter().map(|(s, _, _)| s.node_id.clone()).collect()
    }

    /// PIDs of the running processes (front, responders, initiators), for printing.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        if let Some(f) = &self.front {
            v.push(("front".to_string(), f.pid()));
        }
        for r in &self.responders {
            if let Some(e) = &r.envoy {
                v.push((r.name.clone(), e.pid()));
            }
        }
        for (s, _, e) in &self.initiators {
            if let Some(e) = e {
                v.push((format!("initiator {}", s.node_id), e.pid()));
            }
        }
        v
    }

    /// Tunnels each responder should hold per node: count × initiator workers.
    pub fn tunnels_per_node(&self, node: &str) -> u64 {
        self.initiators
            .iter()
            .find(|(s, _, _)| s.node_id == node)
            .map(|(s, _, _)| s.expected_tunnels())
            .unwrap_or(0)
    }

    /// Starts responder `i` (its config, same ports) and waits until it is ready.
    pub fn start_responder(&mut self, i: usize) -> Result<()> {
        let r = &mut self.responders[i];
        if r.envoy.is_some() {
            return Err(Error(format!("{} is already running", r.name)));
        }
        let drain = DRAIN_TIME_S.to_string();
        let mut envoy = Envoy::start_with_args(
            &r.config,
            RESPONDER_WORKERS,
            &["--drain-time-s", &drain, "--drain-strategy", "immediate"],
            &[],
        )?;
        envoy.wait_ready(READY_TIMEOUT)?;
        r.envoy = Some(envoy);
        Ok(())
    }

    /// SIGKILLs responder `i` (a crash).
    pub fn kill_responder(&mut self, i: usize) -> Result<()> {
        let mut e = self.responders[i]
            .envoy
            .take()
            .ok_or_else(|| Error::msg("responder not running"))?;
        e.kill_hard()?;
        Ok(())
    }

    /// Stops responder `i` gracefully (`/quitquitquit`, then SIGTERM/SIGKILL after deadlines).
    pub fn stop_responder(&mut self, i: usize) {
        if let Some(mut e) = self.responders[i].envoy.take() {
            e.quit();
        }
    }

    /// Responder `i`'s own view (`GET /reverse_tunnels`).
    pub fn view(&mut self, i: usize) -> Result<ResponderView> {
        let r = &mut self.responders[i];
        let e = r
            .envoy
            .as_mut()
            .ok_or_else(|| Error(format!("{} is not running", r.name)))?;
        let body = e.admin_get("/reverse_tunnels")?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|err| Error(format!("/reverse_tunnels is not JSON ({err}): {body}")))?;
        let mut by_node = BTreeMap::new();
        for n in v["by_node"].as_array().cloned().unwrap_or_default() {
            let count = n["idle"].as_u64().unwrap_or(0) + n["in_use"].as_u64().unwrap_or(0);
            *by_node
                .entry(n["node_id"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += count;
        }
        Ok(ResponderView {
            responder: v["responder"].as_str().map(str::to_string),
            draining: v["draining"].as_bool().unwrap_or(false),
            idle: v["idle"].as_u64().unwrap_or(0),
            in_use: v["in_use"].as_u64().unwrap_or(0),
            by_node,
        })
    }

    /// Waits until responder `i` holds every node's full set of tunnels; returns how long it took.
    pub fn wait_tunnels(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let want: Vec<(String, u64)> = self
            .nodes()
            .into_iter()
            .map(|n| {
                let k = self.tunnels_per_node(&n);
                (n, k)
            })
            .collect();
        let name = self.responders[i].name.clone();
        wait_for(&format!("{name} to hold every node's tunnels"), timeout, || {
            if let Some(e) = self.responders[i].envoy.as_mut() {
                if let Some(s) = e.try_status() {
                    return Err(Error(format!("{name} exited ({s}): {}", e.log_excerpt(15))));
                }
            }
            Ok(match self.view(i) {
                Ok(v) if want.iter().all(|(n, k)| v.by_node.get(n).copied().unwrap_or(0) >= *k) => Check::Done(()),
                Ok(v) => Check::NotYet(format!("{:?}", v.by_node)),
                Err(e) => Check::NotYet(e.0),
            })
        })?;
        Ok(t.elapsed())
    }

    /// Waits until every responder holds every node's tunnels.
    pub fn wait_all_tunnels(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.responders.len() {
            self.wait_tunnels(i, timeout)?;
        }
        Ok(())
    }

    /// The rolling-restart drain of responder `i`: `POST /drain_listeners?graceful`, then waits
    /// until its HTTP listener is closed (after `--drain-time-s`) and it holds no tunnel in use.
    /// Returns how long that took. The responder still runs; stop it with
    /// [`Fleet::stop_responder`].
    pub fn drain_responder(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let (name, port) = (self.responders[i].name.clone(), self.responders[i].egress_port);
        {
            let e = self.responders[i]
                .envoy
                .as_mut()
                .ok_or_else(|| Error(format!("{name} is not running")))?;
            let admin = e.admin_port()?;
            let r = http_request_timeout(
                admin,
                "POST",
                "/drain_listeners?graceful",
                &[],
                b"",
                Duration::from_secs(5),
            )?;
            if r.status != 200 {
                return Err(Error(format!(
                    "{name}: /drain_listeners?graceful answered {}: {}",
                    r.status, r.body
                )));
            }
        }
        wait_for(
            &format!("{name} drained (listener closed, no tunnel in use)"),
            timeout,
            || {
                let closed =
                    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500))
                        .is_err();
                Ok(match self.view(i) {
                    Ok(v) if v.draining && closed && v.in_use == 0 => Check::Done(()),
                    Ok(v) => Check::NotYet(format!(
                        "draining={} listener_closed={closed} in_use={} idle={}",
                        v.draining, v.in_use, v.idle
                    )),
                    Err(e) => Check::NotYet(e.0),
                })
            },
        )?;
        Ok(t.elapsed())
    }

    /// Waits until the front has no responder ejected (gauge
    /// `cluster.responders.outlier_detection.ejections_active` is 0): the step before draining the
    /// next responder. Returns how long it took.
    pub fn wait_front_all_in(&mut self, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        self.front().wait_stat(
            "cluster.responders.outlier_detection.ejections_active",
            |v| v == 0,
            timeout,
        )?;
        Ok(t.elapsed())
    }

    /// What every running responder and the front say about tunnels, closes and ejections (for
    /// failure messages).
    pub fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for i in 0..self.responders.len() {
            let name = self.responders[i].name.clone();
            let view = self.view(i);
            let closed = match self.responders[i].envoy.as_mut() {
                Some(e) => e
                    .stats_with_prefix("rt.upstream_rc.tunnels_closed")
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                None => "not running".into(),
            };
            out.push_str(&format!("{name}: {view:?}; closed {closed}\n"));
        }
        if let Some(f) = self.front.as_mut() {
            let stats = f.stats_with_prefix("cluster.responders.").unwrap_or_default();
            let keep: Vec<_> = stats
                .iter()
                .filter(|(k, v)| {
                    v != "0"
                        && (k.contains("outlier")
                            || k.contains("retry")
                            || k.contains("cx_connect_fail")
                            || k.contains("rq_5xx"))
                })
                .collect();
            out.push_str(&format!("front: {keep:?}\n"));
            if let Ok(c) = f.admin_get("/clusters") {
                for l in c
                    .lines()
                    .filter(|l| l.contains("health_flags") || l.contains("::rq_error"))
                {
                    out.push_str(&format!("front /clusters: {l}\n"));
                }
            }
        }
        out
    }

    /// The last `n` log lines of every running Envoy (for failure messages).
    pub fn logs_tail(&self, n: usize) -> String {
        let mut out = String::new();
        if let Some(f) = &self.front {
            out.push_str(&format!("--- front log ---\n{}\n", f.log_excerpt(n)));
        }
        for r in &self.responders {
            if let Some(e) = &r.envoy {
                out.push_str(&format!("--- {} log ---\n{}\n", r.name, e.log_excerpt(n)));
            }
        }
        for (s, _, e) in &self.initiators {
            if let Some(e) = e {
                out.push_str(&format!("--- initiator {} log ---\n{}\n", s.node_id, e.log_excerpt(n)));
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, _, e) in &mut self.initiators {
            if let Some(mut e) = e.take() {
                e.quit();
            }
        }
        if let Some(mut f) = self.front.take() {
            f.quit();
        }
        for r in &mut self.responders {
            if let Some(mut e) = r.envoy.take() {
                e.quit();
            }
        }
    }
}

/// Counts of a [`FleetLoad`].
#[derive(Clone, Debug, Default)]
pub struct LoadCounts {
    /// Requests sent (answered or not).
    pub sent: u64,
    /// 200 with the body of the node the request named.
    pub ok: u64,
    /// Anything else: another status, another node's body, no answer.
    pub failed: u64,
    /// The first failures, described.
    pub failures: Vec<String>,
    /// Successful answers per responder ([`RESPONDER_HEADER`]).
    pub by_responder: BTreeMap<String, u64>,
    /// Successful answers per node.
    pub by_node: BTreeMap<String, u64>,
}

/// Failures kept in [`LoadCounts::failures`].
const KEPT_FAILURES: usize = 20;

/// Request load through the front: `threads` clients on keep-alive connections, each sending
/// idempotent `GET /fleet/<thread>/<seq>` to the nodes in turn (header `x-remote-node-id`), and
/// checking that the answer is 200 with the body of that node's backend (which names the node
/// and the path). Runs until [`FleetLoad::stop`].
pub struct FleetLoad {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<LoadCounts>>,
    threads: Vec<JoinHandle<()>>,
}

impl FleetLoad {
    /// Starts the clients; each waits `pause` between two requests (keeps a 2-core machine usable).
    pub fn start(front_port: u16, nodes: Vec<String>, threads: usize, pause: Duration) -> FleetLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(LoadCounts::default()));
        let handles = (0..threads)
            .map(|t| {
                let (stop, counts, nodes) = (stop.clone(), counts.clone(), nodes.clone());
                std::thread::spawn(move || client(front_port, t, &nodes, pause, &stop, &counts))
            })
            .collect();
        FleetLoad {
            stop,
            counts,
            threads: handles,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> LoadCounts {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `responder` answered at least `more` further requests (fails early on a
    /// failed request); returns how long it took.
    pub fn wait_served_by(&self, responder: &str, more: u64, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let start = self.counts().by_responder.get(responder).copied().unwrap_or(0);
        wait_for(&format!("{responder} to serve {more} more request(s)"), timeout, || {
            let c = self.counts();
            let now = c.by_responder.get(responder).copied().unwrap_or(0);
            Ok(if now >= start + more {
                Check::Done(())
            } else {
                Check::NotYet(format!("{} more, counts {:?}", now - start, c.by_responder))
            })
        })?;
        Ok(t.elapsed())
    }

    /// Stops the clients (each finishes its request in flight) and returns the final counts.
    pub fn stop(mut self) -> LoadCounts {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.counts()
    }
}

impl Drop for FleetLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn client(port: u16, t: usize, nodes: &[String], pause: Duration, stop: &AtomicBool, counts: &Mutex<LoadCounts>) {
    let started = Instant::now();
    let mut conn: Option<HttpConn> = None;
    let mut seq: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let node = &nodes[(seq as usize + t) % nodes.len().max(1)];
        let path = format!("/fleet/{t}/{seq}");
        seq += 1;
        let outcome = (|| -> Result<(String, Option<String>)> {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                conn = Some(HttpConn::connect(port)?);
            }
            let c = conn.as_mut().ok_or_else(|| Error::msg("no connection"))?;
            let r = c.get(&path, &[(NODE_HEADER, node)])?;
            let want = expected_body(node, &path);
            if r.status != 200 || r.body != want {
                return Err(Error(format!(
                    "status {} body {:?} (want {want:?})",
                    r.status,
                    r.body.trim_end()
                )));
            }
            Ok((node.clone(), r.header(RESPONDER_HEADER).map(str::to_string)))
        })();
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        c.sent += 1;
        match outcome {
            Ok((node, responder)) => {
                c.ok += 1;
                *c.by_node.entry(node).or_insert(0) += 1;
                *c.by_responder
                    .entry(responder.unwrap_or_else(|| "?".into()))
                    .or_insert(0) += 1;
            }
            Err(e) => {
                c.failed += 1;
                if c.failures.len() < KEPT_FAILURES {
                    c.failures.push(format!(
                        "{:.3}s GET {path} for {node}: {e}",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        drop(c);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}
