//! `jwt_validator` on the handshake (docs/protocol.md#jwt-on-the-handshake), with real Envoy
//! 1.40.0 initiators that send `authorization: Bearer <jwt>` through
//! `http_handshake.additional_headers`, our module as responder, and the built-in responder for
//! the answers to compare with.
//!
//! Keys are made at run time (RSA with the `openssl` CLI, HMAC from test bytes); the remote JWKS
//! is served by an in-process HTTP server ([`JwksServer`]).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rt_integration::jwks_server::JwksServer;
use rt_integration::jwt::{claims, jwks, validator_yaml, SigningKey};
use rt_integration::tmp::{insert_sibling_lines, insert_sibling_lines_each};
use rt_integration::topology::READY_TIMEOUT;
use rt_integration::{bail, ensure, serial, wait_for, Check, Envoy, Error, InitiatorSpec, Responder, Result, Topology};

const ISS: &str = "ctl";
const AUD: &str = "rt";
/// HMAC key bytes of these tests (not a secret of any deployment).
const SECRET: &[u8] = b"test-only-hmac-secret-rt-integration";
const OTHER_SECRET: &[u8] = b"another-test-only-secret-not-in-jwks";
/// Binds the node id to the token's `sub` (the default claims namespace).
const BIND_SUB: &str = "validation: {node_id_format: '%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub)%'}";
const WAIT: Duration = Duration::from_secs(30);

/// Starts a responder of `kind` whose handshake filter also has `lines` (YAML, siblings of
/// `ping_interval`), and `extra_cluster` (one YAML line, our templates only).
fn responder(label: &str, kind: Responder, lines: &[String], extra_cluster: Option<String>) -> Result<Topology> {
    let mut overrides = Vec::new();
    if let Some(c) = extra_cluster {
        overrides.push(("EXTRA_CLUSTERS", c));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    Topology::start_edited(label, kind, 1, &[], &overrides, |t| insert_sibling_lines_each(&t, "ping_interval: 2s", &refs))
}

/// The responder's handshake counter `name` (ours under the `rt.` metrics namespace).
fn counter(topo: &mut Topology, name: &str) -> Result<u64> {
    let prefix = if topo.kind == Responder::Builtin { "" } else { "rt." };
    Ok(topo.responder().stat_u64(&format!("{prefix}reverse_tunnel.handshake.{name}"))?.unwrap_or(0))
}

/// Waits until `name` reaches at least `min`; returns its value.
fn wait_counter(topo: &mut Topology, name: &str, min: u64) -> Result<u64> {
    wait_for(&format!("{name} >= {min}"), WAIT, || {
        let v = counter(topo, name)?;
        Ok(if v >= min { Check::Done(v) } else { Check::NotYet(v.to_string()) })
    })
}

/// An initiator whose handshake carries `authorization: Bearer <token>` (none when `None`).
fn initiator(node: &str, token: Option<String>) -> InitiatorSpec {
    let spec = InitiatorSpec::new(node, "dscluster");
    match token {
        Some(t) => spec.handshake_header("authorization", &format!("Bearer {t}")),
        None => spec,
    }
}

/// Waits until initiator `i` counted a failed handshake (its detailed stats are on).
fn wait_initiator_failure(topo: &mut Topology, i: usize) -> Result<u64> {
    wait_for(&format!("initiator {i} handshake failure"), WAIT, || {
        let envoy = topo.initiator(i).envoy().ok_or_else(|| Error::msg("initiator not running"))?;
        let hs = envoy.stats_with_prefix("downstream_rc.handshake.")?;
        let failed: u64 = hs
            .iter()
            .filter(|(k, _)| k.contains(".result.failed"))
            .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
            .sum();
        Ok(if failed >= 1 { Check::Done(failed) } else { Check::NotYet(format!("{hs:?}")) })
    })
}

/// `GET /direct` through node `node`'s tunnel answers the initiator's direct response.
fn wait_direct(topo: &mut Topology, node: &str) -> Result<()> {
    let want = format!("hello from {node} via reverse tunnel\n");
    wait_for(&format!("GET /direct through {node}"), WAIT, || {
        let r = topo.get(node, "/direct")?;
        Ok(if r.status == 200 && r.body == want { Check::Done(()) } else { Check::NotYet(format!("{} {:?}", r.status, r.body)) })
    })
}

/// Node `node` has no tunnel: a request for it is not answered by its initiator.
fn has_no_tunnel(topo: &mut Topology, node: &str) -> Result<bool> {
    let r = topo.get(node, "/direct")?;
    Ok(r.status != 200 && !r.body.contains("hello from"))
}

#[test]
fn enforcing_refuses_bad_tokens_binds_the_node_to_sub_and_accepts_rsa_and_hmac() -> Result<()> {
    enforcing(Responder::Direct)
}

/// The same with owned sockets: the socket loop verifies the tokens.
#[test]
fn owned_sockets_enforce_tokens_too() -> Result<()> {
    enforcing(Responder::Owned)
}

fn enforcing(kind: Responder) -> Result<()> {
    let _serial = serial();
    let hmac = SigningKey::hmac(SECRET, "h1");
    let rsa = SigningKey::rsa("r1")?;
    let forger = SigningKey::hmac(OTHER_SECRET, "h1");
    let lines = vec![validator_yaml(ISS, AUD, &jwks(&[&hmac, &rsa]), ""), BIND_SUB.to_string()];
    let mut topo = responder(&format!("jwt-enforcing-{kind:?}"), kind, &lines, None)?;
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no-token", None),
        ("bad-signature", Some(forger.sign(&claims(ISS, AUD, "bad-signature", 3600))?)),
        ("expired", Some(hmac.sign(&claims(ISS, AUD, "expired", -3600))?)),
        ("wrong-audience", Some(hmac.sign(&claims(ISS, "someone-else", "wrong-audience", 3600))?)),
    ];
    for (node, token) in &bad {
        topo.add_initiator(initiator(node, token.clone()))?;
    }
    let other = topo.add_initiator(initiator("other-sub", Some(hmac.sign(&claims(ISS, AUD, "another-node", 3600))?)))?;
    topo.add_initiator(initiator("hmac-ok", Some(hmac.sign(&claims(ISS, AUD, "hmac-ok", 3600))?)))?;
    topo.add_initiator(initiator("rsa-ok", Some(rsa.sign(&claims(ISS, AUD, "rsa-ok", 3600))?)))?;

    wait_direct(&mut topo, "hmac-ok")?;
    wait_direct(&mut topo, "rsa-ok")?;
    for i in 0..bad.len() {
        wait_initiator_failure(&mut topo, i)?;
    }
    wait_initiator_failure(&mut topo, other)?;
    let denied = wait_counter(&mut topo, "jwt_denied", bad.len() as u64)?;
    let validation_failed = wait_counter(&mut topo, "validation_failed", 1)?;
    for node in ["no-token", "bad-signature", "expired", "wrong-audience", "other-sub"] {
        ensure!(has_no_tunnel(&mut topo, node)?, "{node} got a tunnel");
    }
    let accepted = counter(&mut topo, "accepted")?;
    ensure!(accepted >= 2, "accepted {accepted}");
    ensure!(counter(&mut topo, "jwt_would_deny")? == 0, "audit counter moved while enforcing");
    println!("enforcing: jwt_denied={denied} validation_failed={validation_failed} accepted={accepted}; RS256 and HS256 tunnels serve /direct");
    Ok(())
}

#[test]
fn audit_mode_counts_would_deny_and_lets_initiators_through() -> Result<()> {
    let _serial = serial();
    let hmac = SigningKey::hmac(SECRET, "h1");
    let forger = SigningKey::hmac(OTHER_SECRET, "h1");
    let lines = vec![validator_yaml(ISS, AUD, &jwks(&[&hmac]), ", allow_missing_or_failed: true")];
    let mut topo = responder("jwt-audit", Responder::Direct, &lines, None)?;
    topo.add_initiator(initiator("audit-none", None))?;
    topo.add_initiator(initiator("audit-forged", Some(forger.sign(&claims(ISS, AUD, "audit-forged", 3600))?)))?;
    topo.add_initiator(initiator("audit-ok", Some(hmac.sign(&claims(ISS, AUD, "audit-ok", 3600))?)))?;
    for node in ["audit-none", "audit-forged", "audit-ok"] {
        wait_direct(&mut topo, node)?;
    }
    let would = wait_counter(&mut topo, "jwt_would_deny", 2)?;
    ensure!(counter(&mut topo, "jwt_denied")? == 0, "audit mode denied a handshake");
    println!("audit: jwt_would_deny={would}, jwt_denied=0, all three initiators serve /direct");
    Ok(())
}

#[test]
fn remote_jwks_is_fetched_refreshed_and_kept_through_an_outage() -> Result<()> {
    let _serial = serial();
    let rsa = SigningKey::rsa("r1")?;
    let server = JwksServer::start(&jwks(&[&rsa]))?;
    server.set_down(true);
    let cluster = format!(
        "- {{name: jwks, type: STATIC, connect_timeout: 1s, load_assignment: {{cluster_name: jwks, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}}}",
        server.port()
    );
    let validator = format!(
        "jwt_validator: {{issuer: {ISS}, audiences: [{AUD}], remote_jwks: {{http_uri: {{uri: 'http://127.0.0.1:{}/jwks.json', cluster: jwks, timeout: 1s}}, cache_duration: 1s, async_fetch: {{failed_refetch_duration: 1s}}}}}}",
        server.port()
    );
    let mut topo = responder("jwt-remote", Responder::Direct, &[validator], Some(cluster))?;
    // Server down from the start: no keys yet, so even a valid token is refused.
    topo.add_initiator(initiator("remote-a", Some(rsa.sign(&claims(ISS, AUD, "remote-a", 3600))?)))?;
    wait_for("a refused fetch", WAIT, || Ok(if server.refused() >= 1 { Check::Done(()) } else { Check::NotYet("0".into()) }))?;
    wait_counter(&mut topo, "jwt_denied", 1)?;
    ensure!(has_no_tunnel(&mut topo, "remote-a")?, "a tunnel before any key was fetched");
    // Server up: the keys arrive in the background and the initiator's next try gets through.
    server.set_down(false);
    wait_direct(&mut topo, "remote-a")?;
    // Refreshed every cache_duration (1 s).
    let served = wait_for("a refresh", WAIT, || {
        Ok(if server.served() >= 2 { Check::Done(server.served()) } else { Check::NotYet(server.served().to_string()) })
    })?;
    // Outage: fetches fail, the cached keys stay in use for new handshakes.
    server.set_down(true);
    let refused_before = server.refused();
    wait_for("a failed refresh", WAIT, || {
        Ok(if server.refused() > refused_before { Check::Done(()) } else { Check::NotYet(server.refused().to_string()) })
    })?;
    wait_for("the fetch failure in the log", WAIT, || {
        let log = topo.responder().log_contents();
        Ok(if log.contains("remote_jwks fetch of") && log.contains("keeping 1 cached key(s)") {
            Check::Done(())
        } else {
            Check::NotYet("no log line yet".into())
        })
    })?;
    topo.add_initiator(initiator("remote-b", Some(rsa.sign(&claims(ISS, AUD, "remote-b", 3600))?)))?;
    wait_direct(&mut topo, "remote-b")?;
    println!(
        "remote JWKS: refused while down, fetched ({served} served), refreshed, kept through the outage ({} refused); remote-b admitted during it",
        server.refused()
    );
    Ok(())
}

/// One handshake over a raw connection: (status code, de-chunked body, raw response).
fn raw_handshake(port: u16, node: &str, auth: Option<&str>) -> Result<(u16, String, String)> {
    let mut req = format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: c1\r\nx-envoy-reverse-tunnel-tenant-id: t1\r\ncontent-length: 0\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(req.as_bytes())?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // An accepted tunnel stays open: its 200 head is the whole answer.
                if buf.starts_with(b"HTTP/1.1 200") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| Error(format!("no status in {text:?}")))?;
    let body = match text.split_once("\r\n\r\n") {
        None => String::new(),
        Some((_, rest)) => {
            // Chunked: "<hex>\r\n<data>\r\n0\r\n\r\n".
            let mut out = String::new();
            let mut r = rest;
            while let Some((size, after)) = r.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 || after.len() < n {
                    break;
                }
                out.push_str(&after[..n]);
                r = after[n..].trim_start_matches("\r\n");
            }
            out
        }
    };
    Ok((status, body, text))
}

/// One handshake's outcome: status, body, counter deltas, raw response (empty for a 200).
type Answer = (u16, String, Vec<u64>, String);

/// Sends each case (what, node id, authorization value) as a raw handshake to the built-in and
/// to ours, both with the handshake filter `lines`, and checks they answer byte for byte the same
/// and move the same counters. Returns our answers.
fn compare_with_builtin(label: &str, lines: &[String], cases: &[(&str, &str, Option<String>)]) -> Result<Vec<Answer>> {
    let names = ["jwt_denied", "jwt_would_deny", "validation_failed", "accepted", "parse_error"];
    let mut results: Vec<Vec<Answer>> = Vec::new();
    for kind in [Responder::Builtin, Responder::Direct] {
        let mut topo = responder(&format!("{label}-{kind:?}"), kind, lines, None)?;
        let mut rows = Vec::new();
        for (what, node, auth) in cases {
            let before: Vec<u64> = names.iter().map(|n| counter(&mut topo, n)).collect::<Result<_>>()?;
            let (status, body, raw) = raw_handshake(topo.handshake_port, node, auth.as_deref())?;
            // Counters are flushed to the admin endpoint asynchronously: wait for the expected move.
            let delta = wait_for(&format!("{kind:?} counters after '{what}'"), Duration::from_secs(10), || {
                let now: Vec<u64> = names.iter().map(|n| counter(&mut topo, n)).collect::<Result<_>>()?;
                let d: Vec<u64> = now.iter().zip(&before).map(|(a, b)| a - b).collect();
                Ok(if d.iter().sum::<u64>() >= 1 { Check::Done(d) } else { Check::NotYet(format!("{d:?}")) })
            })?;
            println!("{kind:?} {what}: {status} {body:?} {names:?}+{delta:?}");
            if status == 0 {
                bail!("no answer: {raw}");
            }
            // The whole response, byte for byte (the 200 is checked by the conformance tests).
            rows.push((status, body, delta, if status == 200 { String::new() } else { raw }));
        }
        results.push(rows);
    }
    for (i, (what, _, _)) in cases.iter().enumerate() {
        ensure!(results[0][i] == results[1][i], "{what}: built-in {:?} vs ours {:?}", results[0][i], results[1][i]);
    }
    Ok(results.pop().unwrap_or_default())
}

#[test]
fn answers_and_counters_match_the_builtin() -> Result<()> {
    let _serial = serial();
    let hmac = SigningKey::hmac(SECRET, "h1");
    let forger = SigningKey::hmac(OTHER_SECRET, "h1");
    let lines = vec![validator_yaml(ISS, AUD, &jwks(&[&hmac]), ""), BIND_SUB.to_string()];
    let valid = hmac.sign(&claims(ISS, AUD, "n1", 3600))?;
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("no token", "n1", None),
        ("bad signature", "n1", Some(format!("Bearer {}", forger.sign(&claims(ISS, AUD, "n1", 3600))?))),
        ("expired", "n1", Some(format!("Bearer {}", hmac.sign(&claims(ISS, AUD, "n1", -3600))?))),
        ("wrong audience", "n1", Some(format!("Bearer {}", hmac.sign(&claims(ISS, "x", "n1", 3600))?))),
        ("not a JWT", "n1", Some("Bearer not.a.jwt".to_string())),
        ("sub of another node", "n2", Some(format!("Bearer {valid}"))),
        ("valid", "n1", Some(format!("Bearer {valid}"))),
    ];
    let ours = compare_with_builtin("jwt-vs", &lines, &cases)?;
    ensure!(ours[0].0 == 401 && ours[0].1 == "JWT authentication failed", "unexpected 401 form {:?}", ours[0]);
    Ok(())
}

#[test]
fn audit_mode_answers_and_counters_match_the_builtin() -> Result<()> {
    let _serial = serial();
    let hmac = SigningKey::hmac(SECRET, "h1");
    let forger = SigningKey::hmac(OTHER_SECRET, "h1");
    let valid = hmac.sign(&claims(ISS, AUD, "n1", 3600))?;
    let forged = format!("Bearer {}", forger.sign(&claims(ISS, AUD, "n1", 3600))?);
    // Audit mode alone: every handshake passes, the failing ones count jwt_would_deny.
    let lines = vec![validator_yaml(ISS, AUD, &jwks(&[&hmac]), ", allow_missing_or_failed: true")];
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("no token", "n1", None),
        ("bad signature", "n1", Some(forged.clone())),
        ("valid", "n1", Some(format!("Bearer {valid}"))),
    ];
    let ours = compare_with_builtin("jwt-audit-vs", &lines, &cases)?;
    ensure!(ours.iter().all(|a| a.0 == 200), "audit mode refused a handshake: {ours:?}");
    // Audit mode with the node bound to `sub`: a failing token publishes no claims, so the id
    // check fails closed.
    let lines = vec![validator_yaml(ISS, AUD, &jwks(&[&hmac]), ", allow_missing_or_failed: true"), BIND_SUB.to_string()];
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("no token, bound", "n1", None),
        ("bad signature, bound", "n1", Some(forged)),
        ("valid, bound", "n1", Some(format!("Bearer {valid}"))),
    ];
    let ours = compare_with_builtin("jwt-audit-bound-vs", &lines, &cases)?;
    ensure!(ours[0].0 == 403 && ours[2].0 == 200, "unexpected {ours:?}");
    Ok(())
}

#[test]
fn bad_jwt_validator_configs_are_refused_naming_the_field() -> Result<()> {
    let _serial = serial();
    rt_integration::paths::require_module()?;
    let hmac = SigningKey::hmac(SECRET, "h1");
    let cases: Vec<(String, &str)> = vec![
        (validator_yaml(ISS, AUD, "{\"keys\": []}", ""), "jwt_validator.local_jwks.inline_string:"),
        (validator_yaml(ISS, AUD, "not json", ""), "jwt_validator.local_jwks.inline_string:"),
        (validator_yaml("", AUD, &jwks(&[&hmac]), ""), "jwt_validator.issuer:"),
        ("jwt_validator: {issuer: ctl, local_jwks: {filename: /nonexistent/jwks.json}}".to_string(), "jwt_validator.local_jwks.filename:"),
        (
            "jwt_validator: {issuer: ctl, remote_jwks: {http_uri: {uri: 'http://h/k', cluster: c}}}".to_string(),
            "jwt_validator.remote_jwks.http_uri.timeout:",
        ),
        (validator_yaml(ISS, AUD, &jwks(&[&hmac]), ", token_header: 'bad header'"), "jwt_validator.token_header:"),
    ];
    let dir = rt_integration::TestDir::new("jwt-bad-config")?;
    for (i, (line, field)) in cases.iter().enumerate() {
        let ports = rt_integration::free_ports(3)?;
        let text = rt_integration::tmp::render(
            "upstream-direct.yaml",
            &rt_integration::topology::responder_vars(ports[0], ports[1], ports[2], 3),
        )?;
        let path = dir.file(&format!("bad-{i}.yaml"));
        std::fs::write(&path, insert_sibling_lines(&text, "ping_interval: 2s", &[line.as_str()])?)?;
        let mut envoy = Envoy::start(&path, 1, &[])?;
        let status = envoy.wait_exit(READY_TIMEOUT).ok_or_else(|| Error(format!("case {i}: Envoy did not exit")))?;
        ensure!(!status.success(), "case {i}: Envoy exited successfully");
        let log = envoy.log_contents();
        let found = log.lines().find(|l| l.contains("reverse_tunnel: invalid config:") && l.contains(field));
        ensure!(found.is_some(), "case {i}: no log line names {field}:\n{}", envoy.log_excerpt(20));
        println!("refused: {}", found.unwrap_or_default().trim());
    }
    Ok(())
}
