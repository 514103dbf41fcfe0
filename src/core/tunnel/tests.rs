//! The tunnel phase machine with a recording session in place of the relay.

use super::*;
use crate::core::keepalive::{KeepaliveSettings, RPING};

/// A session that records what it was given.
#[derive(Default)]
struct Rec {
    data: Vec<u8>,
    timers: Vec<u64>,
}

impl Session for Rec {
    type Action = usize;
    fn tunnel_data(&mut self, data: Vec<u8>) -> Vec<usize> {
        self.data.extend_from_slice(&data);
        vec![data.len()]
    }
    fn on_timer(&mut self, now_ms: u64) -> Vec<usize> {
        self.timers.push(now_ms);
        Vec::new()
    }
    fn next_deadline(&self) -> Option<u64> {
        Some(42)
    }
}

const REQ: &[u8] = b"GET /reverse_connections/request HTTP/1.1\r\nhost: h\r\n\
x-envoy-reverse-tunnel-node-id: n\r\nx-envoy-reverse-tunnel-cluster-id: c\r\n\
x-envoy-reverse-tunnel-tenant-id: t\r\ncontent-length: 0\r\n\r\n";

fn ka(now: u64) -> Keepalive {
    Keepalive::new(KeepaliveSettings { interval_ms: 2_000, failure_threshold: 3, first_ping_delay_ms: 50 }, now)
}

fn no_jitter(_: u64) -> u64 {
    0
}

/// A tunnel past its handshake, in keepalive.
fn accepted() -> Tunnel<Rec> {
    let mut t: Tunnel<Rec> = Tunnel::new(0, 10_000);
    assert!(matches!(t.on_read(REQ, false, 1, &HandshakeRules::default()), Read::Accept(_)));
    t.accepted(ka(1));
    t
}

#[test]
fn handshake_needs_the_whole_request_then_accepts() {
    let rules = HandshakeRules::default();
    let mut t: Tunnel<Rec> = Tunnel::new(100, 10_000);
    assert_eq!(t.handshake_deadline(), 10_100);
    assert!(matches!(t.on_read(&REQ[..30], false, 101, &rules), Read::Nothing));
    match t.on_read(&REQ[30..], false, 102, &rules) {
        Read::Accept(req) => assert_eq!(req.node_id, "n"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn handshake_cut_short_or_invalid() {
    let rules = HandshakeRules::default();
    let mut t: Tunnel<Rec> = Tunnel::new(0, 10_000);
    assert!(matches!(t.on_read(&REQ[..30], true, 1, &rules), Read::HandshakeIncomplete));
    let mut t: Tunnel<Rec> = Tunnel::new(0, 10_000);
    match t.on_read(b"HELLO WORLD\r\n\r\n", false, 1, &rules) {
        Read::Reject(r) => assert_eq!(r.status, 400),
        other => panic!("{other:?}"),
    }
    t.rejected();
    assert!(matches!(t.on_read(REQ, false, 2, &rules), Read::Nothing), "done after a rejection");
    assert!(t.closed(true).is_none(), "never a tunnel: nothing to account for");
}

#[test]
fn handshake_timeout_fires_once_and_is_not_a_tunnel() {
    let mut t: Tunnel<Rec> = Tunnel::new(0, 1_000);
    assert!(matches!(t.on_timer(1_000, &mut no_jitter), Timer::HandshakeTimeout));
    assert!(matches!(t.on_timer(2_000, &mut no_jitter), Timer::Nothing));
    assert!(t.closed(false).is_none());
}

#[test]
fn keepalive_pings_after_the_delay_and_the_echo_admits() {
    let mut t = accepted();
    assert_eq!(t.next_deadline(), Some(51));
    match t.on_timer(51, &mut no_jitter) {
        Timer::Keepalive(ev) => assert_eq!(ev, vec![Event::SendPing]),
        other => panic!("{other:?}"),
    }
    match t.on_read(RPING, false, 60, &HandshakeRules::default()) {
        Read::Keepalive(ev) => assert!(ev.contains(&Event::Admitted), "{ev:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.drain(), Drain::Unadmitted, "registration is the adapter's to report");
    t.registered(60);
    assert_eq!(t.drain(), Drain::Registered(60));
}

#[test]
fn peer_close_while_idle_is_idle_peer_close() {
    let mut t = accepted();
    match t.on_read(b"", true, 5, &HandshakeRules::default()) {
        Read::Keepalive(ev) => assert!(ev.contains(&Event::Dead(CloseReason::IdlePeerClose)), "{ev:?}"),
        other => panic!("{other:?}"),
    }
    let c = t.closed(true).unwrap();
    assert_eq!(c.reason, CloseReason::IdlePeerClose);
    assert!(!c.was_claimed() && c.session.is_none());
    let local = accepted().closed(false).unwrap();
    assert_eq!(local.reason, CloseReason::LocalClose);
}

#[test]
fn claim_starts_the_session_once_then_joins_and_relays() {
    let mut t = accepted();
    t.registered(10);
    assert_eq!(t.claim(100, |_| Rec::default()), Claim::Started);
    assert_eq!(t.claimed_at_ms(), Some(100));
    assert_eq!(t.drain(), Drain::Keep, "a claimed tunnel keeps serving");
    assert_eq!(t.claim(200, |_| panic!("no second session")), Claim::Join);
    assert!(t.session_mut().is_some());
    match t.on_read(b"abc", false, 150, &HandshakeRules::default()) {
        Read::Relay { actions, end_stream } => assert_eq!((actions, end_stream), (vec![3], false)),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.next_deadline(), Some(42));
    assert!(matches!(t.on_timer(300, &mut no_jitter), Timer::Session(_)));
    assert_eq!(t.session_mut().unwrap().timers, vec![300]);
    // The initiator closes: remote_close, lifetime since the claim.
    assert!(matches!(t.on_read(b"", true, 400, &HandshakeRules::default()), Read::Relay { end_stream: true, .. }));
    let c = t.closed(true).unwrap();
    assert_eq!(c.reason, CloseReason::RemoteClose);
    assert!(c.was_claimed());
    assert_eq!(c.session.as_ref().unwrap().data, b"abc");
    assert_eq!(c.lifetime_ms(false, 1_000), 900);
    assert_eq!(c.lifetime_ms(true, 1_000), 990, "a tunnel that was still idle counts from registration");
}

#[test]
fn claim_before_the_handshake_is_refused() {
    let mut t: Tunnel<Rec> = Tunnel::new(0, 1_000);
    assert_eq!(t.claim(1, |_| Rec::default()), Claim::Refused);
    assert!(t.session_mut().is_none());
}

#[test]
fn an_earlier_close_reason_wins_unless_replaced() {
    let mut t = accepted();
    t.claim(5, |_| Rec::default());
    t.note_close_reason(CloseReason::Http2PingTimeout);
    t.note_close_reason(CloseReason::EgressClosed);
    assert_eq!(t.closed(true).unwrap().reason, CloseReason::Http2PingTimeout);
    let mut t = accepted();
    t.note_close_reason(CloseReason::IdlePingTimeout);
    t.set_close_reason(CloseReason::Drain);
    assert_eq!(t.closed(false).unwrap().reason, CloseReason::Drain);
    assert!(t.closed(false).is_none(), "accounted once");
}

#[test]
fn an_accepted_handshake_is_handed_over_with_every_byte_read_and_closes_silently() {
    let rules = HandshakeRules::default();
    let mut t: Tunnel<Rec> = Tunnel::new(0, 10_000);
    assert!(matches!(t.on_read(&REQ[..20], false, 1, &rules), Read::Nothing));
    assert!(matches!(t.on_read(&REQ[20..], false, 2, &rules), Read::Accept(_)));
    assert_eq!(t.hand_over(&rules).as_deref(), Some(REQ), "both reads, in order");
    assert!(t.hand_over(&rules).is_none(), "once");
    assert!(t.closed(false).is_none(), "the close that follows is not a tunnel's");
    // Past the handshake there is nothing to hand over.
    let mut t = accepted();
    assert!(t.hand_over(&rules).is_none());
    assert!(t.closed(false).is_some());
}

#[test]
fn a_handshake_buffer_at_its_cap_is_not_handed_over() {
    let rules = HandshakeRules { max_header_bytes: 16, ..HandshakeRules::default() };
    let mut t: Tunnel<Rec> = Tunnel::new(0, 10_000);
    let mut big = vec![b'x'; 16 + HANDSHAKE_SLACK_BYTES + 1];
    big[..REQ.len()].copy_from_slice(REQ);
    let _ = t.on_read(big, false, 1, &rules); // cut at the cap
    assert!(t.hand_over(&rules).is_none(), "bytes may have been dropped");
}
