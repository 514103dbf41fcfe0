//! Unit and property tests of the RPING keepalive.

use super::*;
use proptest::prelude::*;

const TICK: u64 = 100;

fn settings(interval_ms: u64, failure_threshold: u32) -> KeepaliveSettings {
    KeepaliveSettings {
        interval_ms,
        failure_threshold,
        first_ping_delay_ms: 50,
    }
}

fn no_jitter(_: u64) -> u64 {
    0
}

fn max_jitter(max: u64) -> u64 {
    max
}

/// A tunnel created at 0 with interval 2 s and threshold 3, admitted at 130 (ping at 100).
fn admitted() -> Keepalive {
    let mut k = Keepalive::new(settings(2_000, 3), 0);
    assert_eq!(k.on_timer(100, &mut no_jitter), vec![Event::SendPing]);
    assert_eq!(
        k.on_data(b"RPING", 130),
        vec![Event::Ack { rtt_ms: 30 }, Event::Admitted]
    );
    k
}

#[test]
fn close_reason_strings() {
    assert_eq!(CloseReason::IdlePingTimeout.as_str(), "idle_ping_timeout");
    assert_eq!(CloseReason::IdlePeerClose.as_str(), "idle_peer_close");
    assert_eq!(CloseReason::IdleReadError.as_str(), "idle_read_error");
    assert_eq!(
        CloseReason::IdlePingWriteFailure.as_str(),
        "idle_ping_write_failure"
    );
}

#[test]
fn settings_are_normalized() {
    let s = KeepaliveSettings {
        interval_ms: 10,
        failure_threshold: 0,
        first_ping_delay_ms: 0,
    };
    let k = Keepalive::new(s, 0);
    assert_eq!(k.settings().interval_ms, 1_000);
    assert_eq!(k.settings().failure_threshold, 1);
    assert_eq!(s.reply_timeout_ms(), 500);
    assert_eq!(settings(3_000, 3).reply_timeout_ms(), 1_500);
    assert_eq!(settings(2_000, 3).max_jitter_ms(), 300);
    assert_eq!(
        settings(u64::MAX, 3).max_jitter_ms(),
        u64::MAX / 100 * 15 + 2
    );
    // Issue example: (3-1)*(2000+300) + 3*1000.
    assert_eq!(settings(2_000, 3).worst_case_detection_ms(), 7_600);
}

#[test]
fn first_ping_after_delay_then_admission() {
    let mut k = Keepalive::new(settings(2_000, 3), 1_000);
    assert_eq!(k.phase(), Phase::AwaitingAdmission);
    assert!(!k.is_admitted());
    assert_eq!(k.next_deadline(), Some(1_050));
    assert!(k.on_timer(1_049, &mut no_jitter).is_empty());
    assert_eq!(k.on_timer(1_050, &mut no_jitter), vec![Event::SendPing]);
    assert!(k.ping_in_flight());
    assert_eq!(k.next_deadline(), Some(1_050 + 1_000));
    assert_eq!(
        k.on_data(b"RPING", 1_062),
        vec![Event::Ack { rtt_ms: 12 }, Event::Admitted]
    );
    assert_eq!(k.phase(), Phase::Idle);
    assert!(k.is_admitted());
    assert_eq!(k.last_rtt_ms(), Some(12));
    assert_eq!(k.last_ack_ms(), Some(1_062));
    assert_eq!(k.next_deadline(), Some(1_062 + 2_000));
    // Later acks do not re-admit.
    assert_eq!(k.on_timer(3_062, &mut no_jitter), vec![Event::SendPing]);
    assert_eq!(k.on_data(b"RPING", 3_070), vec![Event::Ack { rtt_ms: 8 }]);
}

#[test]
fn echo_split_across_reads() {
    let mut k = admitted();
    assert_eq!(k.on_timer(2_130, &mut no_jitter), vec![Event::SendPing]);
    assert!(k.on_data(b"R", 2_131).is_empty());
    assert_eq!(k.partial_echo_len(), 1);
    assert!(k.on_data(b"PI", 2_132).is_empty());
    assert!(k.on_data(b"", 2_133).is_empty());
    assert_eq!(k.on_data(b"NG", 2_134), vec![Event::Ack { rtt_ms: 4 }]);
    assert_eq!(k.partial_echo_len(), 0);
}

#[test]
fn jitter_is_drawn_at_send_and_used_for_the_next_gap() {
    let mut k = Keepalive::new(settings(2_000, 3), 0);
    let mut asked = Vec::new();
    let mut j = |max: u64| {
        asked.push(max);
        123
    };
    assert_eq!(k.on_timer(50, &mut j), vec![Event::SendPing]);
    assert_eq!(asked, vec![300]);
    k.on_data(b"RPING", 60);
    assert_eq!(k.next_deadline(), Some(60 + 2_000 + 123));
    // An out-of-range jitter is clamped to 15 %.
    let mut k = Keepalive::new(settings(2_000, 3), 0);
    k.on_timer(50, &mut |_| 9_999);
    k.on_data(b"RPING", 60);
    assert_eq!(k.next_deadline(), Some(60 + 2_000 + 300));
}

#[test]
fn reply_deadline_is_anchored_on_due_time() {
    let mut k = Keepalive::new(settings(2_000, 3), 0);
    // Due at 50, sent by the tick at 100: deadline 50 + 1000, not 100 + 1000.
    k.on_timer(100, &mut max_jitter);
    assert_eq!(k.next_deadline(), Some(1_050));
    assert!(k.on_timer(1_049, &mut max_jitter).is_empty());
    assert_eq!(
        k.on_timer(1_100, &mut max_jitter),
        vec![Event::Miss { count: 1 }]
    );
    // The next ping is due at deadline + interval + jitter, not at the tick.
    assert_eq!(k.next_deadline(), Some(1_050 + 2_000 + 300));
}

#[test]
fn stalled_clock_sends_one_ping_with_a_fair_deadline() {
    let mut k = admitted();
    // Worker stalled for a long time: the ping is long overdue.
    assert_eq!(k.on_timer(100_000, &mut no_jitter), vec![Event::SendPing]);
    assert_eq!(k.next_deadline(), Some(100_000 + 500));
    // In-flight ping overdue and the next send overdue too: one miss, then one ping.
    assert_eq!(
        k.on_timer(200_000, &mut no_jitter),
        vec![Event::Miss { count: 1 }, Event::SendPing]
    );
    assert!(k.ping_in_flight());
    assert_eq!(k.unechoed(), 2);
}

#[test]
fn garbage_reply_is_one_miss_not_two() {
    let mut k = admitted();
    assert_eq!(k.on_timer(2_130, &mut no_jitter), vec![Event::SendPing]);
    assert_eq!(k.on_data(b"HELLO", 2_200), vec![Event::Miss { count: 1 }]);
    assert!(!k.ping_in_flight());
    // The old reply deadline (3130) no longer counts; the next ping is due at 2200 + 2000.
    assert_eq!(k.next_deadline(), Some(4_200));
    assert!(k.on_timer(3_200, &mut no_jitter).is_empty());
    assert_eq!(k.misses(), 1);
}

#[test]
fn partial_garbage_is_counted_at_once_and_resyncs_on_r() {
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    // "RPX": known garbage at X; counted now, no waiting for 5 bytes.
    assert_eq!(k.on_data(b"RPX", 2_200), vec![Event::Miss { count: 1 }]);
    // The next ping's echo is recognised although it does not start on a 5-byte boundary.
    k.on_timer(4_200, &mut no_jitter);
    assert_eq!(k.on_data(b"RPING", 4_210), vec![Event::Ack { rtt_ms: 10 }]);
    assert_eq!(k.misses(), 0);
}

#[test]
fn garbage_then_echo_in_one_read() {
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    // The X answers the ping (miss); the RPING is then a late echo of it: no second miss.
    assert_eq!(k.on_data(b"XRPING", 2_200), vec![Event::Miss { count: 1 }]);
    assert_eq!(k.unechoed(), 0);
}

#[test]
fn unsolicited_bytes_count_one_miss_per_unit() {
    let mut k = Keepalive::new(settings(2_000, 5), 0);
    // Nothing was ever sent: unsolicited RPINGs (a flood of them) are ignored, only counted.
    assert_eq!(k.on_data(&RPING.repeat(1_000), 10), vec![Event::Unsolicited { count: 1_000 }]);
    assert_eq!((k.misses(), k.is_admitted(), k.unechoed()), (0, false, 0));
    // 10 bytes of garbage: two 5-byte units.
    assert_eq!(
        k.on_data(b"xxxxxxxxxx", 20),
        vec![Event::Miss { count: 1 }, Event::Miss { count: 2 }]
    );
    // Unsolicited bytes do not move the next ping.
    assert_eq!(k.next_deadline(), Some(50));
}

#[test]
fn late_echo_after_a_miss_is_not_a_second_miss() {
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    assert_eq!(
        k.on_timer(3_200, &mut no_jitter),
        vec![Event::Miss { count: 1 }]
    );
    assert_eq!(k.unechoed(), 1);
    assert!(k.on_data(b"RPING", 3_300).is_empty());
    assert_eq!(k.unechoed(), 0);
    assert_eq!(k.misses(), 1, "a late echo does not reset the misses");
    // A further RPING with nothing unechoed is ignored (neither an answer nor a miss), only
    // counted as unsolicited.
    assert_eq!(k.on_data(b"RPING", 3_400), vec![Event::Unsolicited { count: 1 }]);
    assert_eq!(k.misses(), 1);
}

#[test]
fn threshold_kills_without_a_miss_event() {
    let mut k = Keepalive::new(settings(1_000, 3), 0);
    let mut all = Vec::new();
    let mut now = 0;
    while k.next_deadline().is_some() {
        now += TICK;
        all.extend(k.on_timer(now, &mut no_jitter));
    }
    assert_eq!(
        all,
        vec![
            Event::SendPing,
            Event::Miss { count: 1 },
            Event::SendPing,
            Event::Miss { count: 2 },
            Event::SendPing,
            Event::Dead(CloseReason::IdlePingTimeout),
        ]
    );
    assert_eq!(k.misses(), 3);
    assert_eq!(k.phase(), Phase::Dead);
    assert!(
        !k.is_admitted(),
        "misses before admission count like any miss"
    );
    assert!(k.on_timer(u64::MAX, &mut no_jitter).is_empty());
    assert!(k.on_data(b"RPING", now).is_empty());
    assert!(k.on_peer_closed().is_empty());
}

#[test]
fn threshold_one_dies_on_first_miss() {
    let mut k = Keepalive::new(settings(1_000, 1), 0);
    k.on_timer(50, &mut no_jitter);
    assert_eq!(
        k.on_data(b"NOPE!", 60),
        vec![Event::Dead(CloseReason::IdlePingTimeout)]
    );
    assert_eq!(k.next_deadline(), None);
}

#[test]
fn echo_resets_misses() {
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    assert_eq!(
        k.on_timer(3_130, &mut no_jitter),
        vec![Event::Miss { count: 1 }]
    );
    assert_eq!(k.next_deadline(), Some(5_130));
    k.on_timer(5_130, &mut no_jitter);
    assert_eq!(k.on_data(b"RPING", 5_140), vec![Event::Ack { rtt_ms: 10 }]);
    assert_eq!(k.misses(), 0);
}

#[test]
fn claim_stops_everything_and_reports_unechoed() {
    let mut k = admitted();
    assert_eq!(k.claim(), 0);
    assert_eq!(k.phase(), Phase::Claimed);
    assert_eq!(k.next_deadline(), None);
    assert!(k.on_timer(u64::MAX, &mut no_jitter).is_empty());
    assert!(k.on_data(b"garbage", 5_000).is_empty());
    assert!(k.on_peer_closed().is_empty());
    assert!(k.is_admitted());

    // Claimed with a ping in flight and its echo half-read.
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    k.on_data(b"RP", 2_140);
    assert_eq!(k.claim(), 1);
    assert_eq!(k.partial_echo_len(), 2);
    assert_eq!(k.claim(), 1, "idempotent");
    assert!(k.on_timer(10_000, &mut no_jitter).is_empty());
}

#[test]
fn close_paths() {
    let mut k = admitted();
    assert_eq!(
        k.on_peer_closed(),
        vec![Event::Dead(CloseReason::IdlePeerClose)]
    );
    assert!(k.on_read_error().is_empty());
    let mut k = admitted();
    assert_eq!(
        k.on_read_error(),
        vec![Event::Dead(CloseReason::IdleReadError)]
    );
    let mut k = admitted();
    k.on_timer(2_130, &mut no_jitter);
    assert_eq!(
        k.on_write_failure(),
        vec![Event::Dead(CloseReason::IdlePingWriteFailure)]
    );
    assert_eq!(k.claim(), 1);
    assert_eq!(
        k.phase(),
        Phase::Dead,
        "claim does not revive a dead tunnel"
    );
}

/// Drives `k` with ticks at `first_tick + n*TICK`, echoing every ping while `answer(now)`.
/// Returns (time of the first unanswered SendPing, time of Dead).
fn run_silent_after(
    k: &mut Keepalive,
    first_tick: u64,
    answered: usize,
    jitter: &mut dyn FnMut(u64) -> u64,
) -> (u64, u64) {
    let mut sent = 0usize;
    let mut first_unanswered = None;
    let mut now = first_tick;
    for _ in 0..1_000_000 {
        for e in k.on_timer(now, jitter) {
            match e {
                Event::SendPing => {
                    sent += 1;
                    if sent <= answered {
                        let ev = k.on_data(RPING, now + 7);
                        assert_eq!(ev.first(), Some(&Event::Ack { rtt_ms: 7 }));
                    } else if first_unanswered.is_none() {
                        first_unanswered = Some(now);
                    }
                }
                Event::Dead(r) => {
                    assert_eq!(r, CloseReason::IdlePingTimeout);
                    return (first_unanswered.unwrap_or(0), now);
                }
                Event::Miss { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        now += TICK;
    }
    panic!("never died");
}

#[test]
fn detection_bound_holds_with_max_jitter() {
    let pairs = [
        (1_000, 1),
        (1_000, 3),
        (1_500, 2),
        (2_000, 3),
        (3_000, 5),
        (2_333, 4),
        (10_000, 3),
        (60_000, 10),
    ];
    for (interval, threshold) in pairs {
        for phase in [0, 1, 37, 50, 99] {
            for answered in [0, 1, 3] {
                let s = settings(interval, threshold);
                let mut k = Keepalive::new(s, 0);
                let (first, dead) = run_silent_after(&mut k, phase, answered, &mut max_jitter);
                let j = s.max_jitter_ms();
                let t = u64::from(threshold);
                let bound = (t - 1) * (interval + j) + t * (interval / 2);
                let took = dead - first;
                assert!(
                    took <= bound + TICK,
                    "I={interval} T={threshold} phase={phase}: {took} > {bound} + tick"
                );
                // Not premature either: the whole bound (minus the send's tick lateness).
                assert!(
                    took + TICK >= bound,
                    "I={interval} T={threshold} phase={phase}: {took} too early for {bound}"
                );
                assert_eq!(bound, s.worst_case_detection_ms());
            }
        }
    }
}

#[test]
fn observed_builtin_timeline_is_not_exceeded() {
    // docs/protocol.md#rping-keepalive: interval 2 s, threshold 3, FIN 7.3 s after the first unanswered
    // ping with the built-in. Our bound with max jitter is 7.6 s (+ one tick).
    let s = settings(2_000, 3);
    let mut k = Keepalive::new(s, 0);
    let mut rng = fastrand::Rng::with_seed(7);
    let (first, dead) = run_silent_after(&mut k, 0, 2, &mut |m| rng.u64(0..=m));
    assert!(dead - first <= 7_600 + TICK);
    assert!(dead - first >= 5_000);
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Data(Vec<u8>),
    Echo,
    PeerClose,
    Claim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..3_000).prop_map(Op::Advance),
        2 => proptest::collection::vec(
            prop_oneof![Just(b'R'), Just(b'P'), Just(b'I'), Just(b'N'), Just(b'G'), any::<u8>()],
            0..12,
        )
        .prop_map(Op::Data),
        4 => Just(Op::Echo),
        1 => Just(Op::PeerClose),
        1 => Just(Op::Claim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::core::fuzz_cases(256), ..ProptestConfig::default() })]
    /// Invariants under arbitrary timer/data/close/claim sequences:
    /// on_timer has work exactly when now >= next_deadline; at most one SendPing per call
    /// and never while an RPING is in flight; Miss counts stay below the threshold and match
    /// misses(); nothing after Dead or claim; Ack/Admitted ordering.
    #[test]
    fn invariants(
        interval in 1_000u64..5_000,
        threshold in 1u32..5,
        delay in 0u64..200,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let s = KeepaliveSettings { interval_ms: interval, failure_threshold: threshold, first_ping_delay_ms: delay };
        let mut k = Keepalive::new(s, 1_000);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = 1_000u64;
        let mut finished = false;
        let mut admitted_seen = false;
        for op in ops {
            let was_in_flight = k.ping_in_flight();
            let before = k.next_deadline();
            let events = match op {
                Op::Advance(d) => {
                    now += d;
                    let ev = k.on_timer(now, &mut |m| rng.u64(0..=m));
                    prop_assert_eq!(!ev.is_empty(), before.is_some_and(|d| now >= d));
                    prop_assert!(ev.iter().filter(|e| **e == Event::SendPing).count() <= 1);
                    if was_in_flight && ev.contains(&Event::SendPing) {
                        // Only after the in-flight ping was resolved as a miss.
                        prop_assert!(matches!(ev.first(), Some(Event::Miss { .. })), "send while in flight: {:?}", ev);
                    }
                    if ev.contains(&Event::SendPing) {
                        prop_assert!(k.ping_in_flight());
                        prop_assert!(k.next_deadline().is_some_and(|d| d > now));
                    }
                    ev
                }
                Op::Data(bytes) => k.on_data(&bytes, now),
                Op::Echo => k.on_data(RPING, now),
                Op::PeerClose => k.on_peer_closed(),
                Op::Claim => { k.claim(); finished = true; Vec::new() }
            };
            if finished {
                prop_assert!(events.is_empty());
                prop_assert_eq!(k.next_deadline(), None);
            }
            for (i, e) in events.iter().enumerate() {
                match *e {
                    Event::Miss { count } => {
                        prop_assert!(count >= 1 && count < k.settings().failure_threshold);
                    }
                    Event::Dead(_) => {
                        prop_assert_eq!(i, events.len() - 1);
                        finished = true;
                    }
                    Event::Admitted => {
                        prop_assert!(!admitted_seen);
                        prop_assert!(i >= 1 && matches!(events[i - 1], Event::Ack { .. }), "Admitted not after Ack: {:?}", events);
                        admitted_seen = true;
                    }
                    Event::Ack { .. } => prop_assert!(was_in_flight),
                    Event::SendPing => {}
                    Event::Unsolicited { count } => prop_assert!(count >= 1 && i == 0),
                }
            }
            if let Some(Event::Miss { count }) = events.iter().rev().find(|e| matches!(e, Event::Miss { .. })) {
                if !finished {
                    prop_assert_eq!(*count, k.misses());
                }
            }
            prop_assert!(k.partial_echo_len() <= 4);
            prop_assert_eq!(k.is_admitted(), admitted_seen);
        }
    }

    /// Echo parsing does not depend on read boundaries: the same bytes at the same time give
    /// the same events and the same state, whatever the split.
    #[test]
    fn split_independent(
        answered_first in any::<bool>(),
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'R'), Just(b'P'), Just(b'I'), Just(b'N'), Just(b'G'), any::<u8>()],
            0..40,
        ),
        cuts in proptest::collection::vec(0usize..41, 0..8),
    ) {
        let mut k = Keepalive::new(settings(2_000, 4), 0);
        k.on_timer(50, &mut no_jitter);
        if answered_first {
            k.on_data(RPING, 60);
            k.on_timer(2_060, &mut no_jitter);
        }
        let mut whole = k.clone();
        let want = whole.on_data(&bytes, 2_100);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut got = Vec::new();
        for w in points.windows(2) {
            got.extend(k.on_data(&bytes[w[0]..w[1]], 2_100));
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(k, whole);
    }
}
