//! Inner TLS on the cluster path (`envoy-config/upstream-inner-tls.yaml` with initiators on
//! `envoy-config/downstream-inner-tls.yaml`), against real processes: Envoy 1.40.0 as responder
//! with our module and as built-in initiators, in-process backends, a recording TCP relay between
//! initiator and responder, certificates made at test time by `openssl` (a CA, the responder's
//! client certificate, node certificates), all on 127.0.0.1 with free ports.
//!
//! ```text
//! cargo test --release -p rt-integration --test inner_tls -- --test-threads=1
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rt_integration::capture::{find, CaptureRelay};
use rt_integration::certs::{CertPair, TestCa};
use rt_integration::process::signal;
use rt_integration::topology::{responder_vars, NODE_HEADER};
use rt_integration::{
    envoy_bin, http_request, module_dir, serial, wait_for, Check, Error, InitiatorSpec, Responder, Result,
    TestDir, Topology,
};

const NODE: &str = "tls-node";
const CLUSTER: &str = "tls-cluster";
/// The DNS SAN of the responder's client certificate (initiators require it).
const RESPONDER_SAN: &str = "rt-responder";
const TEMPLATE_UP: &str = "upstream-inner-tls.yaml";
const TEMPLATE_DOWN: &str = "downstream-inner-tls.yaml";
const TUNNELS_UP: Duration = Duration::from_secs(20);
const SSL: &str = "cluster.reverse_connection.ssl.";

/// A test CA, the responder's certificate, and node certificates made on demand (in their own
/// test directory, which must outlive the Envoys using them: create it before the topology).
struct Pki {
    ca: TestCa,
    responder: CertPair,
    _dir: TestDir,
}

impl Pki {
    fn new() -> Result<Pki> {
        let dir = TestDir::new("inner-tls-pki")?;
        let ca = TestCa::create(dir.path(), "rt-test-ca")?;
        let responder = ca.issue("responder", RESPONDER_SAN)?;
        Ok(Pki { ca, responder, _dir: dir })
    }

    /// The responder template's TLS variables, and `claim_timeout`.
    fn responder_vars(&self, claim_timeout: &str) -> Vec<(&'static str, String)> {
        vec![
            ("TLS_CA", path(self.ca.ca_cert())),
            ("TLS_CERT", path(&self.responder.cert)),
            ("TLS_KEY", path(&self.responder.key)),
            ("CLAIM_TIMEOUT", claim_timeout.to_string()),
        ]
    }

    /// An inner-TLS initiator registering as `node_id` with a certificate whose DNS SAN is `san`.
    fn node(&self, node_id: &str, san: &str) -> Result<InitiatorSpec> {
        self.node_sans(node_id, &[san])
    }

    /// [`Pki::node`] with several DNS SANs.
    fn node_sans(&self, node_id: &str, sans: &[&str]) -> Result<InitiatorSpec> {
        let pair = self.ca.issue_sans(&format!("node-{node_id}-as-{}", sans.join("-")), sans)?;
        Ok(InitiatorSpec::new(node_id, CLUSTER).template(
            TEMPLATE_DOWN,
            &[
                ("TLS_CA", path(self.ca.ca_cert())),
                ("TLS_CERT", path(&pair.cert)),
                ("TLS_KEY", path(&pair.key)),
                ("RESPONDER_SAN", RESPONDER_SAN.to_string()),
            ],
        ))
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A responder on the inner-TLS template (`Module`: the cluster path), no initiator yet.
fn inner_tls_responder(
    label: &str,
    pki: &Pki,
    workers: u32,
    claim_timeout: &str,
    edit: impl FnOnce(String) -> Result<String>,
) -> Result<Topology> {
    Topology::start_template(label, Responder::Module, TEMPLATE_UP, workers, &[], &pki.responder_vars(claim_timeout), edit)
}

fn stat(topo: &mut Topology, name: &str) -> Result<u64> {
    Ok(topo.responder().stat_u64(name)?.unwrap_or(0))
}

/// Runs `envoy --mode validate -c <config>` (bounded); returns (success, output).
fn envoy_validate(config: &Path) -> Result<(bool, String)> {
    let mut child = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c"])
        .arg(config)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run {}: {e}", envoy_bin().display())))?;
    let pid = child.id();
    let status = wait_for("envoy --mode validate to exit", Duration::from_secs(60), || {
        Ok(match child.try_wait()? {
            Some(s) => Check::Done(s),
            None => Check::NotYet("running".into()),
        })
    });
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            let _ = child.wait();
            return Err(e);
        }
    };
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((status.success(), text))
}

/// Both inner-TLS templates, rendered with real certificate files, pass `envoy --mode validate`
/// (the responder with our module loaded); with the CA file missing the responder's is refused
/// with a message naming the file.
#[test]
fn inner_tls_configs_pass_envoy_validate() -> Result<()> {
    let _serial = serial();
    rt_integration::paths::require_module()?;
    let pki = Pki::new()?;
    let dir = TestDir::new("inner-tls-validate")?;
    let mut up_vars = responder_vars(1, 2, 3, 3);
    up_vars.extend(pki.responder_vars("2s"));
    up_vars.retain(|(k, _)| *k != "CLAIM_TIMEOUT");
    up_vars.push(("CLAIM_TIMEOUT", "2s".into()));
    let up = dir.render(TEMPLATE_UP, "up.yaml", &up_vars)?;
    let spec = pki.node(NODE, NODE)?;
    let mut down_vars: Vec<(&str, String)> = vec![
        ("ADMIN_PORT", "1".into()),
        ("NODE_ID", NODE.into()),
        ("CLUSTER_ID", CLUSTER.into()),
        ("TENANT_ID", "t".into()),
        ("TUNNEL_COUNT", "2".into()),
        ("RESPONDER_PORT", "2".into()),
        ("BACKEND_PORT", "4".into()),
        ("GRPC_PORT", "5".into()),
    ];
    down_vars.extend(spec.vars.iter().cloned());
    let down = dir.render(TEMPLATE_DOWN, "down.yaml", &down_vars)?;
    for config in [&up, &down] {
        let (ok, out) = envoy_validate(config)?;
        assert!(ok && out.contains("OK"), "{} does not validate:\n{out}", config.display());
    }
    // The check can fail: a missing CA file is refused, naming it.
    let missing = dir.file("no-such-ca.pem");
    let mut bad_vars = up_vars.clone();
    bad_vars.retain(|(k, _)| *k != "TLS_CA");
    bad_vars.push(("TLS_CA", path(&missing)));
    let bad = dir.render(TEMPLATE_UP, "bad.yaml", &bad_vars)?;
    let (ok, out) = envoy_validate(&bad)?;
    assert!(!ok, "a config with a missing CA file validated:\n{out}");
    assert!(out.contains("no-such-ca.pem"), "the error does not name the missing file:\n{out}");
    Ok(())
}

/// Unique markers for one run. The characters are chosen so that HPACK's Huffman code is longer
/// than the text (`~` is 13 bits, a digit 5 or 6): an HTTP/2 encoder sends them as literal bytes,
/// so in a cleartext tunnel they are visible as they are (the control run shows it).
struct Markers {
    path: String,
    header: String,
    body: String,
    /// The start of the backend's response body (`backend <node> path=`).
    response: String,
}

impl Markers {
    fn new() -> Markers {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let digits: String = format!("{}{nanos:09}", std::process::id());
        let tilde = |prefix: &str| -> String {
            let mut s = prefix.to_string();
            for d in digits.chars() {
                s.push_str("~~");
                s.push(d);
            }
            s
        };
        Markers {
            path: tilde("/p"),
            header: tilde("h"),
            body: format!("request-body-{}", tilde("b")),
            response: format!("backend {NODE} path="),
        }
    }

    fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("request path", &self.path),
            ("request header value", &self.header),
            ("request body", &self.body),
            ("response body", &self.response),
        ]
    }
}

/// What the relay recorded in one run: (initiator to responder, responder to initiator).
struct Captured {
    up: Vec<u8>,
    down: Vec<u8>,
    markers: Markers,
}

impl Captured {
    fn has(&self, needle: &str) -> bool {
        find(&self.up, needle.as_bytes()) || find(&self.down, needle.as_bytes())
    }
}

/// One initiator dialing through a recording relay; a GET carrying the path and header markers
/// (answered by the backend with the response marker) and a POST echoing the body marker.
fn capture_run(pki: Option<&Pki>) -> Result<Captured> {
    let mut topo = match pki {
        Some(pki) => inner_tls_responder("inner-tls-capture", pki, 1, "2s", Ok)?,
        None => Topology::start("inner-tls-control", Responder::Module, 1, &[])?,
    };
    let relay = CaptureRelay::start(topo.handshake_port)?;
    let spec = match pki {
        Some(pki) => pki.node(NODE, NODE)?,
        None => InitiatorSpec::new(NODE, CLUSTER),
    };
    topo.add_initiator(spec.via_port(relay.port()))?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let m = Markers::new();
    let r = http_request(topo.egress_port, "GET", &m.path, &[(NODE_HEADER, NODE), ("x-marker", &m.header)], b"")?;
    assert_eq!(r.status, 200, "GET through the tunnel: {}\n{}", r.body, topo.logs_tail(10));
    assert_eq!(r.body, topo.initiator(0).backend.expected_body(&m.path));
    let r = http_request(topo.egress_port, "POST", "/echo", &[(NODE_HEADER, NODE)], m.body.as_bytes())?;
    assert_eq!(r.status, 200, "POST through the tunnel: {}", r.body);
    assert_eq!(r.body, m.body, "echoed body");
    assert_eq!(topo.initiator(0).backend.requests_served(), 2);
    if pki.is_some() {
        assert!(stat(&mut topo, &format!("{SSL}handshake"))? >= 1, "no TLS handshake counted by the cluster");
    }
    assert!(relay.connections() >= 1, "nothing went through the relay");
    let (up, down) = relay.snapshot();
    Ok(Captured { up, down, markers: m })
}

/// With inner TLS no request or response byte crosses the network in cleartext: the path, a
/// header value, the request body and the response body never appear in what the relay between
/// initiator and responder recorded, while the handshake (cleartext by design) and TLS records
/// do. The same run without inner TLS shows every marker, so the check can fail.
#[test]
fn inner_tls_carries_no_cleartext_request_or_response() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    let tls = capture_run(Some(&pki))?;
    assert!(tls.has("/reverse_connections/request"), "the relay did not see the (cleartext) handshake");
    assert!(find(&tls.down, &[0x16, 0x03, 0x01]), "no TLS ClientHello from the responder on the wire");
    assert!(find(&tls.up, &[0x16, 0x03, 0x03]), "no TLS ServerHello from the initiator on the wire");
    for (what, needle) in tls.markers.all() {
        assert!(!tls.has(needle), "inner TLS: the {what} {needle:?} crossed the network in cleartext");
    }
    println!("inner TLS: {} + {} bytes recorded, no marker in them", tls.up.len(), tls.down.len());

    let plain = capture_run(None)?;
    for (what, needle) in plain.markers.all() {
        assert!(plain.has(needle), "control run without TLS: the {what} {needle:?} is not in the capture");
    }
    assert!(!find(&plain.down, &[0x16, 0x03, 0x01]), "control run: a TLS ClientHello on a cleartext tunnel");
    Ok(())
}

/// An initiator that registers as node `tls-node` with a certificate naming another node is
/// refused by the responder's TLS check (`ssl.fail_verify_san`) before any request byte reaches
/// it: its backend and its HTTP listener see nothing. The right certificate then serves.
#[test]
fn impostor_certificate_never_receives_a_request() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    let mut topo = inner_tls_responder("inner-tls-impostor", &pki, 1, "2s", Ok)?;
    // Three tunnels: each request below takes one (a TLS connection pins its tunnel, and a failed
    // handshake closes it), so all three meet the impostor's certificate.
    topo.add_initiator(pki.node(NODE, "another-node")?.tunnels(3))?;
    topo.wait_tunnels(3, TUNNELS_UP)?;
    for i in 0..3 {
        let r = topo.get(NODE, &format!("/for-the-real-node-{i}"))?;
        assert_eq!(r.status, 503, "request {i} to an impostor: {} {}", r.status, r.body);
        assert!(r.body.contains("CERTIFICATE_VERIFY_FAILED"), "request {i}: the 503 does not say why: {}", r.body);
        println!("impostor, request {i}: {} {:?}", r.status, r.body.trim());
    }
    let failed = stat(&mut topo, &format!("{SSL}fail_verify_san"))?;
    assert_eq!(failed, 3, "no SAN verification failure counted: {:?}", topo.responder().stats_with_prefix(SSL)?);
    assert_eq!(topo.initiator(0).backend.requests_served(), 0, "the impostor's backend got a request");
    let seen = topo
        .initiator(0)
        .envoy()
        .ok_or("impostor not running")?
        .stat_u64("http.reverse_conn_listener.downstream_rq_total")?
        .unwrap_or(0);
    assert_eq!(seen, 0, "the impostor's HTTP listener decoded a request");

    topo.stop_initiator(0);
    topo.wait_tunnels(0, TUNNELS_UP)?;
    let good = topo.add_initiator(pki.node(NODE, NODE)?)?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let r = topo.get(NODE, "/for-the-real-node")?;
    assert_eq!(r.status, 200, "the right certificate: {}\n{}", r.body, topo.logs_tail(10));
    assert_eq!(r.body, topo.initiator(good).backend.expected_body("/for-the-real-node"));
    assert_eq!(stat(&mut topo, &format!("{SSL}fail_verify_san"))?, failed, "the right certificate failed verification");
    assert_eq!(topo.initiator(0).backend.requests_served(), 0);
    Ok(())
}

/// A request addressed by cluster id sets SNI to the cluster id, so the node's certificate must
/// name its cluster too: without that SAN the request fails verification, with it the request
/// reaches the node.
#[test]
fn requests_by_cluster_id_need_the_cluster_in_the_certificate() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    for (sans, want) in [(&[NODE][..], 503), (&[NODE, CLUSTER][..], 200)] {
        let mut topo = inner_tls_responder("inner-tls-cluster-id", &pki, 1, "2s", Ok)?;
        topo.add_initiator(pki.node_sans(NODE, sans)?)?;
        topo.wait_tunnels(1, TUNNELS_UP)?;
        let r = topo.get(CLUSTER, "/by-cluster")?;
        assert_eq!(r.status, want, "certificate SANs {sans:?}, request by cluster id: {}", r.body);
        let failed = stat(&mut topo, &format!("{SSL}fail_verify_san"))?;
        if want == 200 {
            assert_eq!(r.body, topo.initiator(0).backend.expected_body("/by-cluster"));
            assert_eq!(failed, 0);
        } else {
            assert_eq!(failed, 1, "{}", r.body);
            assert_eq!(topo.initiator(0).backend.requests_served(), 0);
        }
    }
    Ok(())
}

/// Mutual TLS: an initiator on `downstream-inner-tls.yaml` requires the responder's certificate,
/// so a party that does not hold it (here: the responder with its certificate taken out of the
/// cluster, standing for anyone who took over the cleartext tunnel) cannot send it a request.
#[test]
fn initiator_refuses_a_peer_without_the_responder_certificate() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    let no_client_cert = |text: String| -> Result<String> {
        let mut out = String::new();
        let mut skip = 0;
        for line in text.lines() {
            if line.trim() == "tls_certificates:" {
                skip = 3;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if out.contains("{{") || out.len() == text.len() {
            return Err(Error::msg("template has no tls_certificates block"));
        }
        Ok(out)
    };
    let mut topo = inner_tls_responder("inner-tls-no-client-cert", &pki, 1, "2s", no_client_cert)?;
    topo.add_initiator(pki.node(NODE, NODE)?)?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let r = topo.get(NODE, "/without-responder-cert")?;
    assert_eq!(r.status, 503, "a peer without the responder's certificate: {}", r.body);
    assert!(r.body.contains("HANDSHAKE_FAILURE"), "the initiator did not refuse the TLS handshake: {}", r.body);
    println!("no responder certificate: {} {:?}", r.status, r.body.trim());
    assert_eq!(topo.initiator(0).backend.requests_served(), 0, "the node's backend got a request");
    let seen = topo
        .initiator(0)
        .envoy()
        .ok_or("initiator not running")?
        .stat_u64("http.reverse_conn_listener.downstream_rq_total")?
        .unwrap_or(0);
    assert_eq!(seen, 0, "the node's HTTP listener decoded a request");
    Ok(())
}

/// The egress listener with `exact_balance`, so two open client connections land on the two
/// responder workers (each worker has its own connection pool).
fn balance_egress(text: String) -> Result<String> {
    rt_integration::tmp::insert_sibling_lines(
        &text,
        "- name: egress_http",
        &["  connection_balance_config: {exact_balance: {}}"],
    )
}

/// What inner TLS costs: a TLS connection is relayed raw, so every pooled connection pins one
/// tunnel for its life, and each responder worker has its own pool. Two workers and two tunnels:
/// both tunnels in use, later requests reuse them. Two workers and one tunnel: the second
/// worker's request waits `claim_timeout` and gets 503.
#[test]
fn each_responder_worker_pins_its_own_tunnel() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    {
        let mut topo = inner_tls_responder("inner-tls-pins", &pki, 2, "1s", balance_egress)?;
        topo.add_initiator(pki.node(NODE, NODE)?.tunnels(2))?;
        topo.wait_tunnels(2, TUNNELS_UP)?;
        let mut a = topo.connect()?;
        let mut b = topo.connect()?;
        for round in 0..3 {
            for (name, conn) in [("a", &mut a), ("b", &mut b)] {
                let r = conn.get(&format!("/pin-{name}-{round}"), &[(NODE_HEADER, NODE)])?;
                assert_eq!(r.status, 200, "connection {name}, round {round}: {}", r.body);
            }
            assert_eq!(stat(&mut topo, "rt.upstream_rc.tunnels_in_use")?, 2, "round {round}");
            assert_eq!(stat(&mut topo, "rt.upstream_rc.tunnels_idle")?, 0, "round {round}");
        }
        assert_eq!(topo.initiator(0).backend.requests_served(), 6);
    }
    {
        let mut topo = inner_tls_responder("inner-tls-short", &pki, 2, "1s", balance_egress)?;
        topo.add_initiator(pki.node(NODE, NODE)?.tunnels(1))?;
        topo.wait_tunnels(1, TUNNELS_UP)?;
        let mut a = topo.connect()?;
        let mut b = topo.connect()?;
        let r = a.get("/first-worker", &[(NODE_HEADER, NODE)])?;
        assert_eq!(r.status, 200, "{}", r.body);
        let started = Instant::now();
        let r = b.get("/second-worker", &[(NODE_HEADER, NODE)])?;
        let waited = started.elapsed();
        assert_eq!(r.status, 503, "the second worker found a tunnel although the only one is pinned: {}", r.body);
        assert!(waited >= Duration::from_millis(900), "503 after {waited:?}, before claim_timeout (1 s)");
        println!("one tunnel, two workers: the second worker's request waited {waited:?}, then 503");
        let r = a.get("/first-worker-again", &[(NODE_HEADER, NODE)])?;
        assert_eq!(r.status, 200, "the first worker keeps its tunnel: {}", r.body);
    }
    Ok(())
}

/// A pooled connection closed by the cluster's `idle_timeout` takes its tunnel with it (a used
/// tunnel never returns to the idle pool); the initiator re-dials within its `maintain_interval`
/// (1 s), and the next request, waiting up to `claim_timeout` (2 s), gets the new tunnel.
#[test]
fn idle_pool_connection_releases_its_tunnel_and_the_initiator_replaces_it() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    let short_idle =
        replacing("common_http_protocol_options: {idle_timeout: 60s}", "common_http_protocol_options: {idle_timeout: 1s}");
    let mut topo = inner_tls_responder("inner-tls-idle", &pki, 1, "2s", short_idle)?;
    topo.add_initiator(pki.node(NODE, NODE)?)?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let r = topo.get(NODE, "/first")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let closed = "rt.upstream_rc.tunnels_closed.close_reason.egress_closed";
    topo.responder().wait_stat(closed, |v| v >= 1, Duration::from_secs(5))?;
    let released = Instant::now();
    let r = topo.get(NODE, "/second")?;
    let took = released.elapsed();
    assert_eq!(r.status, 200, "no tunnel {took:?} after the first was released: {}", r.body);
    assert_eq!(stat(&mut topo, closed)?, 1);
    println!("tunnel released by idle_timeout; the next request was answered {took:?} later (re-dialed tunnel)");
    Ok(())
}

/// A template edit for [`inner_tls_responder`]: replaces `from` by `to`, refusing a template
/// that lacks `from` (so a changed template cannot silently skip the edit).
fn replacing(from: &'static str, to: &'static str) -> impl Fn(String) -> Result<String> {
    move |text: String| {
        if !text.contains(from) {
            return Err(Error(format!("template has no `{from}`")));
        }
        Ok(text.replace(from, to))
    }
}

/// A tunnel in use carries TLS the module cannot ping into: the connection pool's own HTTP/2
/// PINGs (`connection_keepalive`, answered by the initiator's HCM) keep it checked. A frozen
/// initiator (SIGSTOP) holding a pinned tunnel: the pool's PING times out, the connection closes
/// and the tunnel with it, within interval + timeout (1 s + 1 s here) plus a tick.
#[test]
fn pinned_tunnel_of_a_frozen_initiator_is_closed_by_the_pool_keepalive() -> Result<()> {
    let _serial = serial();
    let pki = Pki::new()?;
    let fast_keepalive =
        replacing("connection_keepalive: {interval: 10s, timeout: 5s}", "connection_keepalive: {interval: 1s, timeout: 1s}");
    let mut topo = inner_tls_responder("inner-tls-keepalive", &pki, 1, "2s", fast_keepalive)?;
    topo.add_initiator(pki.node(NODE, NODE)?)?;
    topo.wait_tunnels(1, TUNNELS_UP)?;
    let r = topo.get(NODE, "/pin")?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stat(&mut topo, "rt.upstream_rc.tunnels_in_use")?, 1);
    let pid = topo.initiator(0).envoy().map(|e| e.pid()).ok_or("initiator not running")?;
    signal(pid, "STOP")?;
    let frozen = Instant::now();
    let res = topo.responder().wait_stat("rt.upstream_rc.tunnels_in_use", |v| v == 0, Duration::from_secs(8));
    let took = frozen.elapsed();
    signal(pid, "CONT")?;
    res?;
    let timeouts = stat(&mut topo, "cluster.reverse_connection.http2.keepalive_timeout")?;
    assert!(timeouts >= 1, "the pinned tunnel closed, but not by the pool's keepalive ({took:?})");
    assert!(took <= Duration::from_secs(5), "pinned tunnel of a frozen initiator closed after {took:?}");
    println!("pinned tunnel of a frozen initiator closed {took:?} after SIGSTOP (keepalive 1 s + 1 s)");
    Ok(())
}
