//! The handshake filter driven hook by hook through the recording fake: handshake answers,
//! admission by the first echo, keepalive misses, claim by an egress connection, drain and the
//! close paths.

use crate::adapters::conn::Connection;
use crate::adapters::fake::{self, Call, FakeNetworkFilter};
use crate::clock::now_ms;
use crate::core::keepalive::RPING;
use crate::ffi::envoy::{CloseType, ConnectionEvent};
use std::rc::Rc;
use std::sync::atomic::Ordering;

const PREFIX: &str = "reverse_tunnel_acceptor";

fn request(node: &str) -> Vec<u8> {
    format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\nx-envoy-reverse-tunnel-cluster-id: c1\r\n\
         x-envoy-reverse-tunnel-tenant-id: t1\r\nx-envoy-reverse-tunnel-worker-id: worker_3\r\n\
         x-envoy-reverse-tunnel-connection-id: 17\r\ncontent-length: 0\r\n\r\n"
    )
    .into_bytes()
}

const OK_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

/// A handshake connection that got its 200 and, after the first-ping delay, its first RPING.
fn accepted(rt_json: &str, filter_json: &str, id: u64, node: &str) -> (Rc<FakeNetworkFilter>, Rc<dyn Connection>, fake::Env) {
    let env = fake::Env::new(rt_json, filter_json);
    let (f, c) = env.tunnel(id, node);
    (f, c, env)
}

impl fake::Env {
    /// Opens handshake connection `id`, sends the handshake of `node`, checks the 200 and runs
    /// the clock past the first-ping delay.
    fn tunnel(&self, id: u64, node: &str) -> (Rc<FakeNetworkFilter>, Rc<dyn Connection>) {
        let f = FakeNetworkFilter::new(id);
        let c = fake::open(&self.handshake, &f);
        fake::read(&c, &f, &request(node), false);
        assert_eq!(f.written(), OK_200, "exactly the 200, nothing coalesced with it");
        f.clear_writes();
        fake::tick(now_ms() + 60);
        assert_eq!(f.written(), RPING, "first RPING after the delay, as a write of its own");
        f.clear_writes();
        (f, c)
    }

    /// Same, and the echo admitted the tunnel.
    fn admitted(&self, id: u64, node: &str) -> (Rc<FakeNetworkFilter>, Rc<dyn Connection>) {
        let (f, c) = self.tunnel(id, node);
        fake::read(&c, &f, RPING, false);
        (f, c)
    }
}

#[test]
fn handshake_accept_writes_the_200_alone_and_the_echo_admits() {
    let (f, c, env) = accepted("{}", "{}", 1, "n1");
    assert_eq!(env.rt.tracker.counts().idle, 0, "not in the pool before the first echo");
    assert_eq!(env.sink.get("reverse_tunnel.handshake.accepted", &[]), 1);
    fake::read(&c, &f, RPING, false);
    let counts = env.rt.tracker.counts();
    assert_eq!((counts.idle, counts.in_use, counts.nodes), (1, 0, 1));
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_idle"), &[]), 1);
    let info = env.rt.tracker.snapshot();
    assert_eq!(info[0].identity.node_id, "n1");
    assert!(f.closes().is_empty());
    assert!(c.ep().live.last_ack_unix_ms.load(Ordering::Relaxed) > 0, "the echo is published for the admin listing");
}

#[test]
fn handshake_rejections_are_written_then_flushed_closed_and_counted() {
    let env = fake::Env::new("{}", "{}");
    let f = FakeNetworkFilter::new(2);
    let c = fake::open(&env.handshake, &f);
    fake::read(&c, &f, b"GET /reverse_connections/request HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n", false);
    let out = String::from_utf8(f.written()).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("Missing required reverse tunnel headers"));
    assert_eq!(f.closes(), vec![(CloseType::FlushWrite, "reverse_tunnel_handshake_rejected".to_string())]);
    assert_eq!(env.sink.get("reverse_tunnel.handshake.parse_error", &[]), 1);
    assert_eq!(env.rt.tracker.counts().idle, 0);
}

#[test]
fn handshake_in_pieces_waits_then_accepts() {
    let env = fake::Env::new("{}", "{}");
    let f = FakeNetworkFilter::new(3);
    let c = fake::open(&env.handshake, &f);
    let req = request("n1");
    fake::read(&c, &f, &req[..40], false);
    assert!(f.written().is_empty() && f.closes().is_empty());
    fake::read(&c, &f, &req[40..], false);
    assert_eq!(f.written(), OK_200);
}

#[test]
fn handshake_timeout_closes_without_an_answer() {
    let env = fake::Env::new("{}", r#"{"handshake_timeout": "1s"}"#);
    let f = FakeNetworkFilter::new(4);
    let _c = fake::open(&env.handshake, &f);
    fake::tick(now_ms() + 500);
    assert!(f.closes().is_empty(), "not yet");
    fake::tick(now_ms() + 1_100);
    assert!(f.written().is_empty());
    assert_eq!(f.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_handshake_timeout".to_string())]);
    assert_eq!(env.sink.get("reverse_tunnel.handshake.timeout", &[]), 1);
}

#[test]
fn handshake_on_a_tls_listener_is_refused() {
    let env = fake::Env::new("{}", "{}");
    let f = FakeNetworkFilter::new(5);
    f.ssl.set(true);
    let c = fake::open(&env.handshake, &f);
    fake::read(&c, &f, &request("n1"), false);
    assert!(String::from_utf8(f.written()).unwrap().starts_with("HTTP/1.1 400 "));
    assert_eq!(f.closes()[0].0, CloseType::FlushWrite);
    assert_eq!(env.sink.get(&format!("{PREFIX}.outer_tls_refused"), &[]), 1);
}

#[test]
fn handshake_while_draining_gets_503() {
    let env = fake::Env::new("{}", "{}");
    env.rt.draining.store(true, Ordering::SeqCst);
    let f = FakeNetworkFilter::new(6);
    let c = fake::open(&env.handshake, &f);
    fake::read(&c, &f, &request("n1"), false);
    assert!(String::from_utf8(f.written()).unwrap().starts_with("HTTP/1.1 503 "));
    assert_eq!(env.sink.get("reverse_tunnel.handshake.rejected", &[]), 1);
}

#[test]
fn handshake_validation_metadata_is_emitted() {
    let env = fake::Env::new(
        "{}",
        r#"{"validation": {"node_id_format": "%REQ(x-envoy-reverse-tunnel-node-id)%", "emit_dynamic_metadata": true}}"#,
    );
    let f = FakeNetworkFilter::new(7);
    let c = fake::open(&env.handshake, &f);
    fake::read(&c, &f, &request("n1"), false);
    assert_eq!(f.written(), OK_200);
    let md = f.metadata("envoy.filters.network.reverse_tunnel");
    assert!(md.contains(&("validation_result".to_string(), "validation_passed".to_string())), "{md:?}");
    assert!(md.contains(&("node_id".to_string(), "n1".to_string())));
}

#[test]
fn connection_limit_answers_429() {
    let env = fake::Env::new(r#"{"max_connections_per_node": 1}"#, r#"{"enable_connection_limit": true}"#);
    env.admitted(10, "n1");
    let f = FakeNetworkFilter::new(11);
    let c = fake::open(&env.handshake, &f);
    fake::read(&c, &f, &request("n1"), false);
    let out = String::from_utf8(f.written()).unwrap();
    assert!(out.starts_with("HTTP/1.1 429 ") && out.contains("retry-after"), "{out}");
}

#[test]
fn keepalive_misses_close_the_idle_tunnel_and_it_leaves_the_tracker() {
    let env = fake::Env::new(r#"{"ping_failure_threshold": 1}"#, "{}");
    let (f, c) = env.admitted(20, "n1");
    assert_eq!(env.rt.tracker.counts().idle, 1);
    // Next RPING within interval + 15 % jitter, then no echo within the reply timeout.
    fake::tick(now_ms() + 2_400);
    assert_eq!(f.written(), RPING);
    fake::tick(now_ms() + 2_400 + 1_100);
    assert_eq!(f.closes(), vec![(CloseType::NoFlush, "idle_ping_timeout".to_string())]);
    // Envoy reports the local close.
    crate::adapters::network::on_event(&c, ConnectionEvent::LocalClose);
    assert_eq!(env.rt.tracker.counts().idle, 0);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["idle_ping_timeout"]), 1);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_idle"), &[]), 0);
}

#[test]
fn peer_close_of_an_idle_tunnel_counts_idle_peer_close() {
    let env = fake::Env::new("{}", "{}");
    let (_f, c) = env.admitted(21, "n1");
    crate::adapters::network::on_event(&c, ConnectionEvent::RemoteClose);
    assert_eq!(env.rt.tracker.counts().idle, 0);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["idle_peer_close"]), 1);
    // destroy after the event changes nothing
    crate::adapters::network::on_destroy(c);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["idle_peer_close"]), 1);
}

#[test]
fn drain_closes_idle_tunnels_with_reason_drain() {
    let env = fake::Env::new("{}", "{}");
    let (f, c) = env.admitted(22, "n1");
    let posted = crate::adapters::bootstrap::drain_idle_tunnels(&env.rt);
    assert_eq!(posted, 1);
    fake::deliver_mail(&[&c]);
    assert_eq!(f.closes(), vec![(CloseType::NoFlush, "drain".to_string())]);
    assert_eq!(env.rt.tracker.counts().idle, 0, "removed from the tracker at once");
    crate::adapters::network::on_event(&c, ConnectionEvent::LocalClose);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["drain"]), 1, "counted once");
}

#[test]
fn claim_relays_both_ways_and_strips_the_echo_in_flight() {
    let env = fake::Env::new("{}", "{}");
    let (tf, tc) = env.admitted(30, "n1");
    // A ping is in flight when the claim arrives: its echo must not reach the egress side.
    fake::tick(now_ms() + 2_400);
    assert_eq!(tf.written(), RPING);
    tf.clear_writes();
    let ef = FakeNetworkFilter::new(31);
    ef.filter_state.borrow_mut().insert("envoy.network.upstream_server_name".into(), b"n1".to_vec());
    let ec = fake::open(&env.egress, &ef);
    assert_eq!(env.rt.tracker.counts().in_use, 0, "the claim comes with the first bytes");
    fake::read(&ec, &ef, b"GET / HTTP/1.1\r\n\r\n", false);
    assert!(ef.closes().is_empty(), "claimed");
    assert_eq!(env.rt.tracker.counts().in_use, 1);
    assert_eq!(tf.written(), b"GET / HTTP/1.1\r\n\r\n", "egress bytes reach the tunnel");
    fake::read(&tc, &tf, b"RPINGHTTP/1.1 200 OK\r\n\r\n", false);
    fake::deliver_mail(&[&tc, &ec]);
    assert_eq!(ef.written(), b"HTTP/1.1 200 OK\r\n\r\n", "the echo in flight is stripped");
    // No RPING after HTTP started.
    tf.clear_writes();
    fake::tick(now_ms() + 10_000);
    assert!(!tf.written().windows(5).any(|w| w == RPING));
    // The egress side closes: the raw relay closes the tunnel, which leaves the tracker.
    crate::adapters::network::on_event(&ec, ConnectionEvent::RemoteClose);
    fake::deliver_mail(&[&tc, &ec]);
    assert_eq!(tf.closes().len(), 1, "{:?}", tf.closes());
    crate::adapters::network::on_event(&tc, ConnectionEvent::LocalClose);
    assert_eq!(env.rt.tracker.counts().in_use, 0);
    assert_eq!(env.sink.get(&format!("{PREFIX}.claims_same_worker"), &[]), 1);
}

#[test]
fn tunnel_close_closes_its_egress_connection() {
    let env = fake::Env::new("{}", "{}");
    let (_tf, tc) = env.admitted(40, "n1");
    let ef = FakeNetworkFilter::new(41);
    ef.filter_state.borrow_mut().insert("envoy.network.upstream_server_name".into(), b"n1".to_vec());
    let ec = fake::open(&env.egress, &ef);
    fake::read(&ec, &ef, b"x", false);
    crate::adapters::network::on_event(&tc, ConnectionEvent::RemoteClose);
    fake::deliver_mail(&[&tc, &ec]);
    assert_eq!(ef.closes(), vec![(CloseType::FlushWrite, "reverse_tunnel_peer_closed".to_string())]);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["remote_close"]), 1);
    assert!(tc.ep().live.egress.load(Ordering::Relaxed) <= 1);
}

#[test]
fn a_claimed_tunnel_ignores_drain() {
    let env = fake::Env::new("{}", "{}");
    let (tf, tc) = env.admitted(50, "n1");
    let ef = FakeNetworkFilter::new(51);
    ef.filter_state.borrow_mut().insert("envoy.network.upstream_server_name".into(), b"n1".to_vec());
    let ec = fake::open(&env.egress, &ef);
    fake::read(&ec, &ef, b"x", false);
    assert_eq!(crate::adapters::bootstrap::drain_idle_tunnels(&env.rt), 0);
    fake::deliver_mail(&[&tc, &ec]);
    assert!(tf.closes().is_empty());
    assert!(!tf.calls.borrow().iter().any(|c| matches!(c, Call::Close(..))));
}

#[test]
fn http2_session_is_shared_then_closed_by_unanswered_pings() {
    let env = fake::Env::new(r#"{"ping_failure_threshold": 1}"#, "{}");
    let (tf, tc) = env.admitted(60, "n1");
    let egress = |id: u64| {
        let ef = FakeNetworkFilter::new(id);
        ef.filter_state.borrow_mut().insert("envoy.network.upstream_server_name".into(), b"n1".to_vec());
        let ec = fake::open(&env.egress, &ef);
        (ef, ec)
    };
    let (ef1, ec1) = egress(61);
    // Envoy's HTTP/2 client preface and SETTINGS: the tunnel becomes a shareable HTTP/2 session.
    let mut first = crate::core::h2mux::frame::PREFACE.to_vec();
    first.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    fake::read(&ec1, &ef1, &first, false);
    assert!(tf.written().starts_with(crate::core::h2mux::frame::PREFACE), "the session speaks HTTP/2 to the initiator");
    let (ef2, ec2) = egress(62);
    fake::read(&ec2, &ef2, &first, false);
    assert!(ef2.closes().is_empty());
    assert_eq!(env.sink.get(&format!("{PREFIX}.claims_shared"), &[]), 1, "the second egress joined the session");
    assert_eq!(env.rt.tracker.counts().in_use, 1, "one tunnel serves both");
    // The initiator never answers the session's PING: closed with http2_ping_timeout.
    tf.clear_writes();
    fake::tick(now_ms() + 2_100);
    assert!(tf.written().get(3) == Some(&6), "a PING frame went out");
    fake::tick(now_ms() + 3_300);
    assert_eq!(tf.closes(), vec![(CloseType::FlushWrite, "http2_ping_timeout".to_string())]);
    crate::adapters::network::on_event(&tc, ConnectionEvent::LocalClose);
    fake::deliver_mail(&[&tc, &ec1, &ec2]);
    assert_eq!(env.sink.get(&format!("{PREFIX}.tunnels_closed"), &["http2_ping_timeout"]), 1);
    assert_eq!(ef1.closes().len(), 1, "every egress connection of the session is closed");
    assert_eq!(ef2.closes().len(), 1);
    assert_eq!(env.rt.tracker.counts().in_use, 0);
}

/// `jwt_validator` on the handshake (docs/protocol.md#jwt-on-the-handshake).
mod jwt {
    use super::*;
    use crate::core::jwt::testkeys;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    const NS: &str = "envoy.filters.network.reverse_tunnel.jwt";

    fn key() -> testkeys::TestKey {
        testkeys::hmac(b"test-only-handshake-secret-012345", "k1")
    }

    fn filter_json(extra_validator: &str, validation: &str) -> String {
        let jwks = testkeys::jwks(&[&key()]);
        format!(
            r#"{{"jwt_validator": {{"issuer": "ctl", "audiences": ["rt"], "local_jwks": {{"inline_string": {}}}{extra_validator}}}{validation}}}"#,
            json!(jwks)
        )
    }

    fn token(sub: &str, exp_offset: i64) -> String {
        let exp = (crate::clock::unix_ms() / 1000) as i64 + exp_offset;
        key().sign(Algorithm::HS256, Some("k1"), &json!({"iss": "ctl", "aud": "rt", "sub": sub, "exp": exp, "site": 7}))
    }

    fn request_with(node: &str, auth: Option<&str>) -> Vec<u8> {
        let mut r = String::from_utf8(request(node)).unwrap();
        if let Some(a) = auth {
            r = r.replacen("host: ", &format!("authorization: {a}\r\nhost: "), 1);
        }
        r.into_bytes()
    }

    /// Sends one handshake on a new connection; returns (fake, response text).
    fn handshake(env: &fake::Env, id: u64, node: &str, auth: Option<&str>) -> (Rc<FakeNetworkFilter>, String) {
        let f = FakeNetworkFilter::new(id);
        let c = fake::open(&env.handshake, &f);
        fake::read(&c, &f, &request_with(node, auth), false);
        let out = String::from_utf8_lossy(&f.written()).into_owned();
        (f, out)
    }

    #[test]
    fn enforcing_denies_missing_bad_expired_and_wrong_audience() {
        let env = fake::Env::new("{}", &filter_json("", ""));
        let other = testkeys::hmac(b"another-test-only-secret-9876543", "k1");
        let forged = other.sign(Algorithm::HS256, Some("k1"), &json!({"iss": "ctl", "aud": "rt", "sub": "n1", "exp": 4_000_000_000u64}));
        let wrong_aud = key().sign(Algorithm::HS256, None, &json!({"iss": "ctl", "aud": "x", "sub": "n1", "exp": 4_000_000_000u64}));
        let cases = [
            None,
            Some("Bearer".to_string()),
            Some(format!("Bearer {forged}")),
            Some(format!("Bearer {}", token("n1", -3600))),
            Some(format!("Bearer {wrong_aud}")),
            Some("Bearer a.b.c".to_string()),
        ];
        for (i, auth) in cases.iter().enumerate() {
            let (f, out) = handshake(&env, 10 + i as u64, "n1", auth.as_deref());
            assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "case {i}: {out}");
            assert!(out.contains("\r\nJWT authentication failed\r\n"), "case {i}: {out}");
            assert_eq!(f.closes().len(), 1, "case {i}");
            assert!(f.metadata(NS).is_empty(), "case {i}: no claims published");
        }
        assert_eq!(env.sink.get("reverse_tunnel.handshake.jwt_denied", &[]), cases.len() as i64);
        assert_eq!(env.sink.get("reverse_tunnel.handshake.accepted", &[]), 0);
    }

    #[test]
    fn valid_token_is_accepted_and_claims_are_published() {
        let env = fake::Env::new("{}", &filter_json("", ""));
        let (f, out) = handshake(&env, 1, "n1", Some(&format!("Bearer {}", token("n1", 600))));
        assert_eq!(out.as_bytes(), OK_200);
        let md = f.metadata(NS);
        assert!(md.contains(&("sub".to_string(), "n1".to_string())), "{md:?}");
        assert!(md.contains(&("site".to_string(), "7".to_string())), "{md:?}");
        assert_eq!(env.sink.get("reverse_tunnel.handshake.accepted", &[]), 1);
        assert_eq!(env.sink.get("reverse_tunnel.handshake.jwt_denied", &[]), 0);
    }

    #[test]
    fn node_id_bound_to_sub() {
        let v = r#", "validation": {"node_id_format": "%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub)%"}"#;
        let env = fake::Env::new("{}", &filter_json("", v));
        let (_, out) = handshake(&env, 1, "n1", Some(&format!("Bearer {}", token("othernode", 600))));
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
        assert!(out.contains("validation_failed"));
        assert_eq!(env.sink.get("reverse_tunnel.handshake.validation_failed", &[]), 1);
        let (_, out) = handshake(&env, 2, "n1", Some(&format!("Bearer {}", token("n1", 600))));
        assert_eq!(out.as_bytes(), OK_200);
    }

    #[test]
    fn audit_mode_counts_and_lets_through_and_a_custom_header_and_namespace() {
        let env = fake::Env::new(
            "{}",
            &filter_json(r#", "allow_missing_or_failed": true, "token_header": "x-rt-token", "claims_metadata_namespace": "my.ns""#, ""),
        );
        let (_, out) = handshake(&env, 1, "n1", None);
        assert_eq!(out.as_bytes(), OK_200);
        assert_eq!(env.sink.get("reverse_tunnel.handshake.jwt_would_deny", &[]), 1);
        assert_eq!(env.sink.get("reverse_tunnel.handshake.jwt_denied", &[]), 0);
        // The token in `authorization` is not looked at; in x-rt-token (no Bearer) it is.
        let f = FakeNetworkFilter::new(2);
        let c = fake::open(&env.handshake, &f);
        let req = String::from_utf8(request("n2")).unwrap().replacen("host: ", &format!("x-rt-token: {}\r\nhost: ", token("n2", 600)), 1);
        fake::read(&c, &f, req.as_bytes(), false);
        assert_eq!(f.written(), OK_200);
        assert!(f.metadata("my.ns").contains(&("sub".to_string(), "n2".to_string())));
        assert_eq!(env.sink.get("reverse_tunnel.handshake.jwt_would_deny", &[]), 1);
    }

    #[test]
    fn remote_jwks_denies_until_fetched_then_keeps_keys_through_an_outage() {
        let filter = r#"{"jwt_validator": {"issuer": "ctl", "remote_jwks": {"http_uri": {"uri": "http://jwks/keys", "cluster": "jwks", "timeout": "1s"}, "cache_duration": "1s"}}}"#;
        let env = fake::Env::new("{}", filter);
        let auth = format!("Bearer {}", token("n1", 600));
        let (_, out) = handshake(&env, 1, "n1", Some(&auth));
        assert!(out.starts_with("HTTP/1.1 401 "), "no keys before the first fetch: {out}");
        let mut started = Vec::new();
        env.rt.jwks.tick(0, |c| {
            started.push((c.cluster.clone(), c.host.clone(), c.path.clone()));
            Ok(41)
        });
        assert_eq!(started, vec![("jwks".to_string(), "jwks".to_string(), "/keys".to_string())]);
        assert!(env.rt.jwks.callout_done(41, Ok(testkeys::jwks(&[&key()]).as_bytes()), 0));
        let (_, out) = handshake(&env, 2, "n1", Some(&auth));
        assert_eq!(out.as_bytes(), OK_200);
        env.rt.jwks.tick(1000, |_| Ok(42));
        assert!(env.rt.jwks.callout_done(42, Err("reset (connection failure or timeout)".into()), 1000));
        let (_, out) = handshake(&env, 3, "n1", Some(&auth));
        assert_eq!(out.as_bytes(), OK_200, "last good keys kept");
    }
}

/// Hostile `authorization` values through the whole handshake path (parser, token extraction,
/// verification): never a panic, never a tunnel, always the 401 (or the parser's own 400).
mod jwt_fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::core::fuzz_cases(64)))]
        #[test]
        fn hostile_token_headers_never_open_a_tunnel(
            value in "[ -~]{0,200}",
            parts in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,40}", 0..5),
        ) {
            let jwks = r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "dGVzdC1vbmx5LWZ1enotc2VjcmV0LTAxMjM0NTY3"}]}"#;
            let filter = format!(r#"{{"jwt_validator": {{"issuer": "ctl", "local_jwks": {{"inline_string": {}}}}}}}"#, serde_json::json!(jwks));
            let env = fake::Env::new("{}", &filter);
            for (i, v) in [value.clone(), format!("Bearer {}", parts.join("."))].iter().enumerate() {
                let f = FakeNetworkFilter::new(1 + i as u64);
                let c = fake::open(&env.handshake, &f);
                let req = String::from_utf8(request("n1")).unwrap().replacen("host: ", &format!("authorization: {v}\r\nhost: "), 1);
                fake::read(&c, &f, req.as_bytes(), false);
                let out = String::from_utf8_lossy(&f.written()).into_owned();
                prop_assert!(out.starts_with("HTTP/1.1 401 ") || out.starts_with("HTTP/1.1 400 "), "{v:?} -> {out}");
            }
            prop_assert_eq!(env.sink.get("reverse_tunnel.handshake.accepted", &[]), 0);
        }
    }
}

#[test]
fn a_same_worker_request_body_is_written_to_the_tunnel_from_envoys_buffer() {
    use crate::adapters::endpoint::Sched;
    use crate::adapters::fake::FakeHttpFilter;
    use crate::adapters::http_filter::{self, BodyTaken, RouteFilterConfig};
    use crate::ffi::envoy_http::HttpScheduler;
    let env = fake::Env::new("{}", "{}");
    let (f, c) = env.admitted(31, "n1");
    let cfg = RouteFilterConfig { runtime: env.rt.clone(), cfg: Default::default() };
    let hf = FakeHttpFilter::with_headers(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "x"),
        (":path", "/up"),
        ("x-remote-node-id", "n1"),
    ]);
    let s = http_filter::new_stream(hf.clone(), c.ep().worker, Sched::Http(HttpScheduler(0)), env.rt.clone());
    http_filter::on_request_headers(&cfg, &s, false);
    // The tunnel's answer to the open (the stream's window) waits in the stream's mailbox.
    http_filter::on_scheduled(&s);
    let writes_now = |f: &FakeNetworkFilter| -> Vec<Vec<u8>> {
        f.calls.borrow().iter().filter_map(|call| if let Call::Write(d, _) = call { Some(d.clone()) } else { None }).collect()
    };
    f.clear_writes();
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    *hf.body.borrow_mut() = big.clone();
    assert!(matches!(http_filter::on_request_body(&s, false), BodyTaken::Taken));
    let writes = writes_now(&f);
    // A DATA frame of 5,000 bytes on tunnel stream 1, its payload written from Envoy's two
    // slices as they are (no copy joined them).
    let n = writes.len();
    assert!(n >= 3, "{writes:?}");
    let header = &writes[n - 3];
    assert_eq!(header[header.len() - 9..], [0, 0x13, 0x88, 0, 0, 0, 0, 0, 1]);
    assert_eq!((writes[n - 2].as_slice(), writes[n - 1].as_slice()), (&big[..2500], &big[2500..]));
    assert!(hf.body.borrow().is_empty(), "taken out of Envoy");
    // A small chunk is cheaper copied behind its header: one write.
    f.clear_writes();
    *hf.body.borrow_mut() = b"0123456789".to_vec();
    assert!(matches!(http_filter::on_request_body(&s, false), BodyTaken::Taken));
    let writes = writes_now(&f);
    let last = writes.last().expect("a write");
    assert_eq!(last[last.len() - 19..], *b"\0\0\x0a\0\0\0\0\0\x010123456789", "{writes:?}");
    assert!(hf.body.borrow().is_empty());
    // The last chunk ends the request: it goes the usual way, after the inline one.
    f.clear_writes();
    *hf.body.borrow_mut() = b"end".to_vec();
    http_filter::on_request_body(&s, true);
    fake::deliver_mail(&[&c]);
    let w = f.written();
    assert_eq!(w[w.len() - 12..], [0, 0, 3, 0, 1, 0, 0, 0, 1, b'e', b'n', b'd'], "DATA with END_STREAM: {w:?}");
}
