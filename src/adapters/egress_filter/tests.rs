//! The egress filter driven through the recording fake: no target, no tunnel, waiting for a
//! tunnel (claimed on a later tick, or given up), held bytes, and claims by cluster key.

use crate::adapters::conn::Connection;
use crate::adapters::fake::{self, Env, FakeNetworkFilter};
use crate::clock::now_ms;
use crate::core::keepalive::RPING;
use crate::ffi::envoy::CloseType;
use std::rc::Rc;

const PREFIX: &str = "reverse_tunnel_acceptor";
const TARGET_KEY: &str = "envoy.network.upstream_server_name";

fn egress(env: &Env, id: u64, target: Option<&str>) -> (Rc<FakeNetworkFilter>, Rc<dyn Connection>) {
    let f = FakeNetworkFilter::new(id);
    if let Some(t) = target {
        f.filter_state.borrow_mut().insert(TARGET_KEY.into(), t.as_bytes().to_vec());
    }
    let c = fake::open(&env.egress, &f);
    (f, c)
}

/// An admitted tunnel of `node` in cluster `c1`.
fn tunnel(env: &Env, id: u64, node: &str) -> (Rc<FakeNetworkFilter>, Rc<dyn Connection>) {
    let f = FakeNetworkFilter::new(id);
    let c = fake::open(&env.handshake, &f);
    let req = format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: h\r\nx-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: c1\r\nx-envoy-reverse-tunnel-tenant-id: t1\r\ncontent-length: 0\r\n\r\n"
    );
    fake::read(&c, &f, req.as_bytes(), false);
    fake::tick(now_ms() + 60);
    fake::read(&c, &f, RPING, false);
    f.clear_writes();
    (f, c)
}

#[test]
fn egress_without_a_target_closes_at_once() {
    let env = Env::new("{}", "{}");
    for target in [None, Some(""), Some("-")] {
        let (f, _c) = egress(&env, 1, target);
        assert_eq!(f.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_no_target".to_string())], "{target:?}");
    }
    assert_eq!(env.sink.get(&format!("{PREFIX}.fallback_no_reverse_socket"), &[]), 3);
}

#[test]
fn egress_without_a_tunnel_gives_up_at_once_by_default() {
    let env = Env::new("{}", "{}");
    let (f, _c) = egress(&env, 2, Some("nobody"));
    assert_eq!(f.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_no_tunnel".to_string())]);
    assert_eq!(env.sink.get(&format!("{PREFIX}.fallback_no_reverse_socket"), &[]), 1);
}

#[test]
fn egress_waits_holds_its_bytes_and_claims_a_tunnel_that_appears() {
    let env = Env::with_egress("{}", "{}", r#"{"claim_timeout": "2s"}"#);
    let (ef, ec) = egress(&env, 3, Some("n1"));
    assert!(ef.closes().is_empty(), "waiting");
    fake::read(&ec, &ef, b"held bytes", false);
    let (tf, _tc) = tunnel(&env, 4, "n1");
    assert!(tf.written().is_empty());
    fake::tick(now_ms() + 100);
    assert_eq!(tf.written(), b"held bytes", "held bytes forwarded once claimed");
    assert!(ef.closes().is_empty());
    assert_eq!(env.rt.tracker.counts().in_use, 1);
}

#[test]
fn egress_waiting_gives_up_after_the_claim_timeout() {
    let env = Env::with_egress("{}", "{}", r#"{"claim_timeout": "0.5s"}"#);
    let (ef, ec) = egress(&env, 5, Some("n1"));
    fake::read(&ec, &ef, b"x", false);
    fake::tick(now_ms() + 200);
    assert!(ef.closes().is_empty());
    fake::tick(now_ms() + 600);
    assert_eq!(ef.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_no_tunnel".to_string())]);
}

#[test]
fn egress_waiting_with_too_many_bytes_is_closed() {
    let env = Env::with_egress("{}", "{}", r#"{"claim_timeout": "2s"}"#);
    let (ef, ec) = egress(&env, 6, Some("n1"));
    fake::read(&ec, &ef, &vec![0u8; 300 * 1024], false);
    assert_eq!(ef.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_waiting_overflow".to_string())]);
}

#[test]
fn egress_by_cluster_key_reaches_a_node_of_that_cluster() {
    let env = Env::new("{}", "{}");
    let (tf, _tc) = tunnel(&env, 7, "n1");
    let (ef, ec) = egress(&env, 8, Some("c1"));
    assert!(ef.closes().is_empty());
    fake::read(&ec, &ef, b"hi", false);
    assert_eq!(tf.written(), b"hi");
}

#[test]
fn egress_end_of_stream_closes_after_forwarding() {
    let env = Env::new("{}", "{}");
    let (tf, _tc) = tunnel(&env, 9, "n1");
    let (ef, ec) = egress(&env, 10, Some("n1"));
    fake::read(&ec, &ef, b"last", true);
    assert_eq!(tf.written(), b"last");
    assert_eq!(ef.closes(), vec![(CloseType::FlushWrite, "reverse_tunnel_egress_closed".to_string())]);
}

#[test]
fn egress_of_one_tenant_never_claims_another_tenants_tunnel() {
    let env = Env::new(r#"{"enable_tenant_isolation": true}"#, "{}");
    let _t = tunnel(&env, 11, "n1");
    let (ef, _ec) = egress(&env, 12, Some("t2:n1"));
    assert_eq!(ef.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_no_tunnel".to_string())]);
    let (ef, ec) = egress(&env, 13, Some("t1:n1"));
    fake::read(&ec, &ef, b"x", false);
    assert!(ef.closes().is_empty(), "own tenant's tunnel");
}

use crate::adapters::tunnel_session::H2_PREFACE;

#[test]
fn http2_is_told_by_the_preface_start() {
    use crate::adapters::egress_filter::starts_http2;
    assert!(starts_http2(H2_PREFACE));
    assert!(starts_http2(b"PRI "), "four bytes suffice");
    assert!(!starts_http2(b"PRI"), "too short to tell from other bytes");
    assert!(!starts_http2(b"POST / HTTP/1.1\r\n"));
    assert!(!starts_http2(b"PUT / HTTP/1.1\r\n"));
    assert!(!starts_http2(&[0x16, 0x03, 0x01, 0x02, 0x00]), "a TLS ClientHello");
    assert!(!starts_http2(b"PRI * HTTP/1.1"));
}

/// Two HTTP/2 clients claiming a node's only tunnel at once (the second before the first's claim
/// reached the tunnel, as when they run on two workers): the second joins the session.
#[test]
fn a_second_http2_client_joins_a_session_that_is_still_starting() {
    let env = Env::new("{}", "{}");
    let (tf, tc) = tunnel(&env, 14, "n1");
    let (af, ac) = egress(&env, 15, Some("n1"));
    let (bf, bc) = egress(&env, 16, Some("n1"));
    {
        // The tunnel is busy (as if on another worker): both claims queue their attach.
        let _busy = tc.ep().hold();
        fake::read(&ac, &af, H2_PREFACE, false);
        fake::read(&bc, &bf, H2_PREFACE, false);
    }
    assert!(bf.closes().is_empty(), "the second client found the session being started: {:?}", bf.closes());
    fake::deliver_mail(&[&tc]);
    assert!(af.closes().is_empty() && bf.closes().is_empty());
    assert!(tf.written().starts_with(H2_PREFACE), "the tunnel runs one HTTP/2 session");
    assert_eq!(env.rt.tracker.counts().in_use, 1);
    assert_eq!(env.rt.tracker.counts().shareable, 1);
}

/// The same with non-HTTP/2 first bytes (inner TLS, HTTP/1.1): a raw relay serves one egress
/// connection only, so the second finds no tunnel.
#[test]
fn a_raw_relay_claim_is_exclusive() {
    let env = Env::new("{}", "{}");
    let (tf, tc) = tunnel(&env, 17, "n1");
    let (af, ac) = egress(&env, 18, Some("n1"));
    let (bf, bc) = egress(&env, 19, Some("n1"));
    {
        let _busy = tc.ep().hold();
        fake::read(&ac, &af, &[0x16, 0x03, 0x01, 0x00, 0x05], false);
        fake::read(&bc, &bf, &[0x16, 0x03, 0x01, 0x00, 0x05], false);
    }
    assert_eq!(bf.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_no_tunnel".to_string())]);
    fake::deliver_mail(&[&tc]);
    assert!(af.closes().is_empty());
    assert_eq!(tf.written(), &[0x16, 0x03, 0x01, 0x00, 0x05], "relayed unchanged");
    assert_eq!(env.rt.tracker.counts().shareable, 0);
}
