//! Common setups: one responder (ours or the built-in), N built-in initiators, one backend per
//! initiator, all on loopback with free ports, in one [`TestDir`].

use std::path::PathBuf;
use std::time::Duration;

use crate::envoy::Envoy;
use crate::grpc::GrpcServer;
use crate::http::{http_get, HttpConn, Response};
use crate::paths::{free_port, free_ports, require_module};
use crate::{wait_for, Backend, Check, Error, Result, TestDir};

/// How long an Envoy may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Request header naming the target node id (or cluster id) on the responder's HTTP listener.
pub const NODE_HEADER: &str = "x-remote-node-id";

/// Which responder a [`Topology`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder {
    /// Our dynamic module with the cluster request path (`envoy-config/upstream.yaml`, needs
    /// `libreverse_tunnel.so`).
    Module,
    /// Our dynamic module with the recommended request path, the HTTP filter
    /// `reverse_tunnel_route` (`envoy-config/upstream-direct.yaml`; a node's spare tunnels on the
    /// module's socket loops).
    Direct,
    /// [`Responder::Direct`] with owned sockets: the listener filter `reverse_tunnel` takes each
    /// tunnel socket from Envoy (`envoy-config/upstream-owned.yaml`).
    Owned,
    /// Envoy's built-in responder (`envoy-config/builtin-upstream.yaml`), for comparison.
    Builtin,
}

impl Responder {
    /// The config template of this responder.
    pub fn template(self) -> &'static str {
        match self {
            Responder::Module => "upstream.yaml",
            Responder::Direct => "upstream-direct.yaml",
            Responder::Owned => "upstream-owned.yaml",
            Responder::Builtin => "builtin-upstream.yaml",
        }
    }

    /// Prefix of the responder's tunnel stats (`rt.upstream_rc.` or `upstream_rc.`).
    pub fn stats_prefix(self) -> &'static str {
        match self {
            Responder::Module | Responder::Direct | Responder::Owned => "rt.upstream_rc.",
            Responder::Builtin => "upstream_rc.",
        }
    }
}

/// The substitutions for `upstream.yaml` / `builtin-upstream.yaml`.
pub fn responder_vars(
    admin_port: u16,
    handshake_port: u16,
    egress_port: u16,
    ping_failure_threshold: u32,
) -> Vec<(&'static str, String)> {
    vec![
        ("ADMIN_PORT", admin_port.to_string()),
        ("HANDSHAKE_PORT", handshake_port.to_string()),
        ("EGRESS_PORT", egress_port.to_string()),
        ("PING_FAILURE_THRESHOLD", ping_failure_threshold.to_string()),
        // Egress filter `claim_timeout` of our module (0s: no tunnel -> 503 at once).
        ("CLAIM_TIMEOUT", "0s".to_string()),
        // Lifecycle access log file (a Topology points it into its test directory).
        ("LIFECYCLE_LOG", "/dev/null".to_string()),
        // Tenant isolation off; the egress target is the node (or cluster) id header.
        ("TENANT_ISOLATION", "false".to_string()),
        ("TARGET_FORMAT", "%REQ(x-remote-node-id)%".to_string()),
        // The same for the route filter of upstream-direct.yaml: "" (the node header alone) or
        // `tenant_header: x-remote-tenant-id,`.
        ("ROUTE_TENANT", String::new()),
        // Runtime key reverse_tunnel.lifecycle.ping_events (noisy idle_ping_sent / ack events).
        ("PING_EVENTS", "false".to_string()),
        // No reporter and no extra cluster (upstream.yaml only; each is one YAML line).
        ("REPORTER_CONFIG", "# no reporter_config".to_string()),
        ("EXTRA_CLUSTERS", "# no extra clusters".to_string()),
        // Bootstrap enable_detailed_stats, and the cap on its label sets (runtime key
        // reverse_tunnel.detailed_stats.max_series).
        ("DETAILED_STATS", "false".to_string()),
        ("DETAILED_MAX_SERIES", "10000".to_string()),
    ]
}

/// One initiator to start: its identity and how many tunnels it keeps.
#[derive(Clone, Debug)]
pub struct InitiatorSpec {
    /// Node id sent in the handshake.
    pub node_id: String,
    /// Cluster id sent in the handshake.
    pub cluster_id: String,
    /// Tenant id sent in the handshake (non-empty).
    pub tenant_id: String,
    /// Initiator worker count (`--concurrency`); each worker keeps its own tunnels.
    pub concurrency: u32,
    /// Tunnels per initiator worker (the `:<count>` of the `rc://` address).
    pub tunnel_count: u32,
    /// Start a gRPC server (`integration/grpc/server.py`) behind this initiator, as its
    /// `local-grpc` cluster (else that cluster points at a free port with nothing listening).
    pub grpc: bool,
    /// Config template of the initiator (`downstream.yaml`; `downstream-inner-tls.yaml` for inner TLS).
    pub template: String,
    /// More template variables (e.g. the certificate paths of `downstream-inner-tls.yaml`).
    pub vars: Vec<(&'static str, String)>,
    /// Dial this port instead of the responder's handshake port (e.g. a capture relay in front of it).
    pub responder_port: Option<u16>,
    /// Extra handshake request headers (`http_handshake.additional_headers` of the initiator's
    /// bootstrap), e.g. `("authorization", "Bearer <jwt>")`; none by default.
    pub handshake_headers: Vec<(String, String)>,
}

impl InitiatorSpec {
    /// A spec with tenant `tenant-a`, one worker and one tunnel.
    pub fn new(node_id: &str, cluster_id: &str) -> InitiatorSpec {
        InitiatorSpec {
            node_id: node_id.to_string(),
            cluster_id: cluster_id.to_string(),
            tenant_id: "tenant-a".to_string(),
            concurrency: 1,
            tunnel_count: 1,
            grpc: false,
            template: "downstream.yaml".to_string(),
            vars: Vec::new(),
            responder_port: None,
            handshake_headers: Vec::new(),
        }
    }

    /// Adds a handshake request header (`http_handshake.additional_headers`).
    pub fn handshake_header(mut self, name: &str, value: &str) -> Self {
        self.handshake_headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Uses config template `template` with the extra variables `vars`.
    pub fn template(mut self, template: &str, vars: &[(&'static str, String)]) -> Self {
        self.template = template.to_string();
        self.vars = vars.to_vec();
        self
    }

    /// Dials `port` instead of the responder's handshake port.
    pub fn via_port(mut self, port: u16) -> Self {
        self.responder_port = Some(port);
        self
    }

    /// Starts a gRPC server behind this initiator (or not): sets field `grpc`.
    pub fn grpc(mut self, on: bool) -> Self {
        self.grpc = on;
        self
    }

    /// Sets the tenant id.
    pub fn tenant(mut self, tenant_id: &str) -> Self {
        self.tenant_id = tenant_id.to_string();
        self
    }

    /// Sets the initiator's worker count.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the tunnel count per worker.
    pub fn tunnels(mut self, n: u32) -> Self {
        self.tunnel_count = n;
        self
    }

    /// Tunnels this initiator keeps in total (count × concurrency; one responder host).
    pub fn expected_tunnels(&self) -> u64 {
        u64::from(self.concurrency) * u64::from(self.tunnel_count)
    }
}

/// A started initiator: its spec, its own backend and (while running) its Envoy.
pub struct Initiator {
    /// What it was started with.
    pub spec: InitiatorSpec,
    /// The backend behind it (named after the node id).
    pub backend: Backend,
    /// Its gRPC server (cluster `local-grpc`), if the spec asked for one.
    pub grpc: Option<GrpcServer>,
    config: PathBuf,
    envoy: Option<Envoy>,
}

impl Initiator {
    /// The running Envoy, if any.
    pub fn envoy(&mut self) -> Option<&mut Envoy> {
        self.envoy.as_mut()
    }

    /// True while its Envoy runs.
    pub fn is_running(&mut self) -> bool {
        self.envoy.as_mut().map(|e| e.try_status().is_none()).unwrap_or(false)
    }

    /// The body `/direct` returns through the tunnel (the initiator's direct_response).
    pub fn direct_body(&self) -> String {
        format!("hello from {} via reverse tunnel\n", self.spec.node_id)
    }
}

/// Backend(s) + one responder + N initiators. Everything is stopped on Drop (initiators first).
pub struct Topology {
    /// Which responder runs.
    pub kind: Responder,
    /// Responder handshake listener port.
    pub handshake_port: u16,
    /// Responder HTTP (egress) listener port.
    pub egress_port: u16,
    /// Responder admin port.
    pub admin_port: u16,
    initiators: Vec<Initiator>,
    responder: Option<Envoy>,
    dir: TestDir,
}

impl Topology {
    /// Starts the responder (`responder_concurrency` workers, ping_failure_threshold 3) and waits
    /// until it is ready, then one backend and one initiator per spec, waiting for each to be
    /// ready. Does NOT wait for tunnels: use [`Topology::wait_tunnels`].
    pub fn start(
        label: &str,
        kind: Responder,
        responder_concurrency: u32,
        specs: &[InitiatorSpec],
    ) -> Result<Topology> {
        Topology::start_with(label, kind, responder_concurrency, specs, &[])
    }

    /// [`Topology::start`] with some responder template variables overridden (e.g.
    /// `("CLAIM_TIMEOUT", "5s")`).
    pub fn start_with(
        label: &str,
        kind: Responder,
        responder_concurrency: u32,
        specs: &[InitiatorSpec],
        overrides: &[(&'static str, String)],
    ) -> Result<Topology> {
        Topology::start_edited(label, kind, responder_concurrency, specs, overrides, Ok)
    }

    /// [`Topology::start_with`], and `edit` rewrites the rendered responder config text before
    /// Envoy starts (e.g. to add a filter field the template has no variable for).
    pub fn start_edited(
        label: &str,
        kind: Responder,
        responder_concurrency: u32,
        specs: &[InitiatorSpec],
        overrides: &[(&'static str, String)],
        edit: impl FnOnce(String) -> Result<String>,
    ) -> Result<Topology> {
        Topology::start_template(label, kind, kind.template(), responder_concurrency, specs, overrides, edit)
    }

    /// [`Topology::start_edited`] with the responder config rendered from `template` instead of
    /// `kind`'s (e.g. `upstream-inner-tls.yaml`, a cluster-path responder: `kind` `Module`).
    pub fn start_template(
        label: &str,
        kind: Responder,
        template: &str,
        responder_concurrency: u32,
        specs: &[InitiatorSpec],
        overrides: &[(&'static str, String)],
        edit: impl FnOnce(String) -> Result<String>,
    ) -> Result<Topology> {
        let dir = TestDir::new(label)?;
        if kind != Responder::Builtin {
            require_module()?;
        }
        let ports = free_ports(3)?;
        let (admin_port, handshake_port, egress_port) = (ports[0], ports[1], ports[2]);
        let config = dir.render(
            template,
            "responder.yaml",
            &{
                let mut vars = responder_vars(admin_port, handshake_port, egress_port, 3);
                vars.retain(|(name, _)| *name != "LIFECYCLE_LOG");
                vars.push(("LIFECYCLE_LOG", dir.path().join("lifecycle.log").display().to_string()));
                for (k, v) in overrides {
                    vars.retain(|(name, _)| name != k);
                    vars.push((k, v.clone()));
                }
                vars
            },
        )?;
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(&config, edit(text)?)?;
        let mut responder = Envoy::start(&config, responder_concurrency, &[])?;
        responder.wait_ready(READY_TIMEOUT)?;
        let mut topo = Topology {
            kind,
            handshake_port,
            egress_port,
            admin_port,
            initiators: Vec::new(),
            responder: Some(responder),
            dir,
        };
        for spec in specs {
            topo.add_initiator(spec.clone())?;
        }
        Ok(topo)
    }

    /// Path of the responder's lifecycle access log (bootstrap `access_log`, JSON lines).
    pub fn lifecycle_log(&self) -> std::path::PathBuf {
        self.dir.path().join("lifecycle.log")
    }

    /// Starts one more initiator (with its own backend) and waits until it is ready.
    /// Returns its index.
    pub fn add_initiator(&mut self, spec: InitiatorSpec) -> Result<usize> {
        let backend = Backend::start(&spec.node_id)?;
        let grpc = if spec.grpc { Some(GrpcServer::start(&self.dir, &spec.node_id)?) } else { None };
        let grpc_port = match &grpc {
            Some(g) => g.port(),
            None => free_port()?,
        };
        let admin = free_port()?;
        let safe: String = spec
            .node_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let mut vars = vec![
                ("ADMIN_PORT", admin.to_string()),
                ("NODE_ID", spec.node_id.clone()),
                ("CLUSTER_ID", spec.cluster_id.clone()),
                ("TENANT_ID", spec.tenant_id.clone()),
                ("TUNNEL_COUNT", spec.tunnel_count.to_string()),
                ("RESPONDER_PORT", spec.responder_port.unwrap_or(self.handshake_port).to_string()),
                ("BACKEND_PORT", backend.port().to_string()),
                ("GRPC_PORT", grpc_port.to_string()),
        ];
        vars.extend(spec.vars.iter().cloned());
        let config = self.dir.render(
            &spec.template,
            &format!("initiator-{safe}-{}.yaml", self.initiators.len()),
            &vars,
        )?;
        if !spec.handshake_headers.is_empty() {
            let text = std::fs::read_to_string(&config)?;
            let mut lines = vec!["http_handshake:".to_string(), "  additional_headers:".to_string()];
            for (k, v) in &spec.handshake_headers {
                // JSON strings are valid YAML flow scalars.
                lines.push(format!("  - header: {{key: {}, value: {}}}", serde_json::json!(k), serde_json::json!(v)));
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            std::fs::write(&config, crate::tmp::insert_sibling_lines(&text, "enable_detailed_stats: true", &refs)?)?;
        }
        let mut envoy = Envoy::start(&config, spec.concurrency, &[])?;
        envoy.wait_ready(READY_TIMEOUT)?;
        self.initiators.push(Initiator {
            spec,
            backend,
            grpc,
            config,
            envoy: Some(envoy),
        });
        Ok(self.initiators.len() - 1)
    }

    /// The test directory (configs and logs).
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// The responder's Envoy.
    pub fn responder(&mut self) -> &mut Envoy {
        self.responder.as_mut().expect("responder is running")
    }

    /// Initiator number `i` (in start order).
    pub fn initiator(&mut self, i: usize) -> &mut Initiator {
        &mut self.initiators[i]
    }

    /// Number of initiators (running or not).
    pub fn initiator_count(&self) -> usize {
        self.initiators.len()
    }

    /// Tunnels the running initiators should keep in total.
    pub fn expected_tunnels(&mut self) -> u64 {
        self.initiators
            .iter_mut()
            .filter_map(|i| if i.is_running() { Some(i.spec.expected_tunnels()) } else { None })
            .sum()
    }

    /// `GET path` on the responder's HTTP listener over a fresh connection, with
    /// `x-remote-node-id: <node_key>` (a node id or a cluster id).
    pub fn get(&self, node_key: &str, path: &str) -> Result<Response> {
        http_get(self.egress_port, path, &[(NODE_HEADER, node_key)])
    }

    /// A keep-alive connection to the responder's HTTP listener.
    pub fn connect(&self) -> Result<HttpConn> {
        HttpConn::connect(self.egress_port)
    }

    /// Tunnels currently registered at the responder (idle + in use).
    ///
    /// - `Module`: `rt.upstream_rc.tunnels_idle + rt.upstream_rc.tunnels_in_use` (an error if the
    ///   module does not export them).
    /// - `Builtin`: the sum of `upstream_rc.nodes.<node id>` over the initiators' node ids
    ///   (hidden gauges; a missing gauge counts as 0).
    pub fn tunnels(&mut self) -> Result<u64> {
        match self.kind {
            Responder::Module | Responder::Direct | Responder::Owned => {
                let mut total = 0;
                for g in ["rt.upstream_rc.tunnels_idle", "rt.upstream_rc.tunnels_in_use"] {
                    total += self
                        .responder()
                        .stat_u64(g)?
                        .ok_or_else(|| Error(format!("the responder exports no stat {g}")))?;
                }
                Ok(total)
            }
            Responder::Builtin => {
                let mut nodes: Vec<String> =
                    self.initiators.iter().map(|i| i.spec.node_id.clone()).collect();
                nodes.sort();
                nodes.dedup();
                let mut total = 0;
                for n in nodes {
                    total += self.node_tunnels(&n)?;
                }
                Ok(total)
            }
        }
    }

    /// Built-in responder only: `upstream_rc.nodes.<node_id>` (0 if absent).
    pub fn node_tunnels(&mut self, node_id: &str) -> Result<u64> {
        if self.kind != Responder::Builtin {
            return Err(Error::msg("per-node tunnel gauges are only known for the built-in responder"));
        }
        Ok(self.responder().stat_u64(&format!("upstream_rc.nodes.{node_id}"))?.unwrap_or(0))
    }

    /// Polls [`Topology::tunnels`] until it equals `expected` (fails early if the responder exits).
    pub fn wait_tunnels(&mut self, expected: u64, timeout: Duration) -> Result<u64> {
        wait_for(&format!("{expected} tunnel(s) at the responder"), timeout, || {
            if let Some(s) = self.responder().try_status() {
                return Err(Error(format!(
                    "the responder exited ({s}); log:\n{}",
                    self.responder().log_excerpt(15)
                )));
            }
            Ok(match self.tunnels() {
                Ok(n) if n == expected => Check::Done(n),
                Ok(n) => Check::NotYet(format!("{n} tunnel(s)")),
                Err(e) => Check::NotYet(e.0),
            })
        })
        .map_err(|e| Error(format!("{e}\n{}", self.logs_tail(15))))
    }

    /// The responder's tunnel stats (names starting with [`Responder::stats_prefix`]).
    pub fn tunnel_stats(&mut self) -> Result<Vec<(String, String)>> {
        let prefix = self.kind.stats_prefix();
        self.responder().stats_with_prefix(prefix)
    }

    /// SIGKILLs initiator `i` (a crash: its tunnels are closed by the kernel).
    pub fn kill_initiator(&mut self, i: usize) -> Result<()> {
        let mut envoy = self.initiators[i]
            .envoy
            .take()
            .ok_or_else(|| Error(format!("initiator {i} is not running")))?;
        envoy.kill_hard()?;
        Ok(())
    }

    /// Gracefully stops initiator `i`.
    pub fn stop_initiator(&mut self, i: usize) {
        if let Some(mut e) = self.initiators[i].envoy.take() {
            e.quit();
        }
    }

    /// Starts initiator `i` again with its original config and waits until it is ready.
    pub fn restart_initiator(&mut self, i: usize) -> Result<()> {
        self.stop_initiator(i);
        let init = &mut self.initiators[i];
        let mut envoy = Envoy::start(&init.config, init.spec.concurrency, &[])?;
        envoy.wait_ready(READY_TIMEOUT)?;
        init.envoy = Some(envoy);
        Ok(())
    }

    /// Stops the responder (SIGKILL when `crash`, else a graceful `/quitquitquit`) and starts it
    /// again with the same config file (same ports) and `concurrency`, waiting until it is ready.
    /// Tunnels are not waited for: the initiators re-dial on their own.
    pub fn restart_responder(&mut self, crash: bool, concurrency: u32) -> Result<()> {
        let mut old = self.responder.take().ok_or_else(|| Error::msg("the responder is not running"))?;
        let config = old.config_path().to_path_buf();
        if crash {
            old.kill_hard()?;
        } else {
            old.quit();
        }
        drop(old);
        let mut envoy = Envoy::start(&config, concurrency, &[])?;
        envoy.wait_ready(READY_TIMEOUT)?;
        self.responder = Some(envoy);
        Ok(())
    }

    /// The last `n` log lines of the responder and of every running initiator (for failure
    /// messages).
    pub fn logs_tail(&mut self, n: usize) -> String {
        let mut out = String::new();
        if let Some(r) = self.responder.as_ref() {
            out.push_str(&format!("--- responder log ---\n{}\n", r.log_excerpt(n)));
        }
        for (i, init) in self.initiators.iter().enumerate() {
            if let Some(e) = init.envoy.as_ref() {
                out.push_str(&format!(
                    "--- initiator {i} ({}) log ---\n{}\n",
                    init.spec.node_id,
                    e.log_excerpt(n)
                ));
            }
        }
        out
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for init in &mut self.initiators {
            if let Some(mut e) = init.envoy.take() {
                e.quit();
            }
        }
        if let Some(mut r) = self.responder.take() {
            r.quit();
        }
    }
}
