//! The reporter's pure state machine (docs/protocol.md#reporter): decides **what** to send to the
//! control plane and **when**; the adapter (`adapters::reporter`) does the sending through the
//! bootstrap extension's HTTP callout (docs/envoy-abi.md#bootstrap-callbacks) and feeds the results back.
//!
//! Inputs: tunnel events ([`Reporter::push`], from any thread through the adapter's lock), clock
//! ticks ([`Reporter::poll`], main thread, every clock period), send results ([`Reporter::on_result`],
//! main thread). Output: a [`SendPlan`] ("send a snapshot now" or "send these events now").
//!
//! Rules:
//! - At most one payload is in flight.
//! - The first payload, and the first one after any failed send or after events were dropped, is
//!   a full **snapshot** of the tracker (the adapter builds it when told to); queued events are
//!   discarded then: the snapshot supersedes them.
//! - Otherwise queued events are sent in **batches** of at most `max_batch`, when `send_interval`
//!   has passed since the last send or a full batch is waiting.
//! - After a failure the next attempt waits a **backoff**: `initial_backoff`, doubled after each
//!   further consecutive failure, capped at `max_backoff`; reset by a success.
//! - The queue never holds more than `max_queue` events (memory bound); an event pushed into a
//!   full queue is dropped and counted, and the next payload becomes a snapshot.
//! - A payload whose result has not arrived within `timeout + 1 s` counts as failed (a lost
//!   completion must not stop reporting).
//! - Sequence numbers (`seq`) start at 1 and grow by one per payload attempt.
//!
//! All times are milliseconds on one caller-chosen monotonic clock, except the `ts_ms` /
//! `connected_at_ms` / `sent_at_ms` fields, which are Unix epoch milliseconds (see
//! `docs/reporter.md` for the JSON schema).

use crate::core::tracker::WorkerName;
use std::collections::VecDeque;

/// Tuning of the reporter (validated config, see `config::reporter`). All durations in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReporterSettings {
    /// Longest time queued events wait before a batch is sent (default 1000).
    pub send_interval_ms: u64,
    /// Most events in one payload (default 1000, >= 1).
    pub max_batch: usize,
    /// Most events held in the queue (default 100 000, >= 1).
    pub max_queue: usize,
    /// Timeout of one HTTP callout (default 5000).
    pub timeout_ms: u64,
    /// First retry delay after a failure (default 500).
    pub initial_backoff_ms: u64,
    /// Largest retry delay (default 30 000, >= `initial_backoff_ms`).
    pub max_backoff_ms: u64,
}

impl Default for ReporterSettings {
    fn default() -> ReporterSettings {
        ReporterSettings {
            send_interval_ms: 1000,
            max_batch: 1000,
            max_queue: 100_000,
            timeout_ms: 5000,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        }
    }
}

/// What happened to a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The tunnel joined the pool (after its first RPING echo; lifecycle `tunnel_setup`).
    Connected,
    /// A registered tunnel closed (lifecycle `tunnel_closed`) for this reason (e.g.
    /// `idle_peer_close`, `ping_timeout`).
    Disconnected {
        /// The close reason, as in the `tunnels_closed` counter's tag.
        close_reason: String,
    },
}

/// One tunnel lifecycle event, as pushed by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelEvent {
    /// Connected or disconnected.
    pub kind: EventKind,
    /// Tenant id sent by the initiator.
    pub tenant_id: String,
    /// Node id (bare, not tenant-scoped).
    pub node_id: String,
    /// Cluster id (bare).
    pub cluster_id: String,
    /// Responder worker owning the tunnel (0-based).
    pub worker: u32,
    /// Tunnel id (the Envoy connection id of the tunnel, unique per process).
    pub tunnel_id: u64,
    /// `x-envoy-reverse-tunnel-initiation-time` of the handshake, epoch ms (0 if absent).
    pub initiation_time_ms: i64,
    /// When the event happened, epoch ms.
    pub ts_ms: u64,
}

/// One tunnel of a snapshot (built by the adapter from the tracker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTunnel {
    /// Tenant id.
    pub tenant_id: String,
    /// Node id (bare).
    pub node_id: String,
    /// Cluster id (bare; the node's effective cluster).
    pub cluster_id: String,
    /// Owning worker (0-based).
    pub worker: u32,
    /// Tunnel id (Envoy connection id).
    pub tunnel_id: u64,
    /// Handshake initiation time, epoch ms (0 if absent).
    pub initiation_time_ms: i64,
    /// When the tunnel joined the pool, epoch ms.
    pub connected_at_ms: u64,
    /// `idle` or `in_use`.
    pub state: &'static str,
}

/// A decision of [`Reporter::poll`]: send this payload now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendPlan {
    /// Send a full snapshot of the tracker with sequence number `seq`.
    Snapshot {
        /// Sequence number of this payload.
        seq: u64,
    },
    /// Send these events (oldest first) with sequence number `seq`.
    Events {
        /// Sequence number of this payload.
        seq: u64,
        /// At most `max_batch` events.
        events: Vec<TunnelEvent>,
    },
}

impl SendPlan {
    /// The payload's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            SendPlan::Snapshot { seq } | SendPlan::Events { seq, .. } => *seq,
        }
    }
}

/// Counters of the reporter (for logs and, later, stats). Totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReporterCounters {
    /// Payloads answered with success.
    pub sent: u64,
    /// Payloads that failed (refused, non-2xx, reset, timed out).
    pub failed: u64,
    /// Snapshots planned.
    pub snapshots: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

/// The reporter state machine (see the module docs for the rules). Not thread-safe by itself:
/// the adapter keeps it under a mutex.
#[derive(Debug)]
pub struct Reporter {
    settings: ReporterSettings,
    queue: VecDeque<TunnelEvent>,
    need_snapshot: bool,
    /// `(seq, deadline)` of the payload in flight.
    in_flight: Option<(u64, u64)>,
    next_seq: u64,
    /// Earliest time of the next attempt (backoff after a failure).
    not_before_ms: u64,
    /// Time of the last send attempt (for `send_interval`); None before the first.
    last_send_ms: Option<u64>,
    consecutive_failures: u32,
    counters: ReporterCounters,
}

/// Extra wait after the callout timeout before a missing completion counts as a failure.
pub const COMPLETION_GRACE_MS: u64 = 1000;

impl Reporter {
    /// A reporter that will send a snapshot first.
    pub fn new(settings: ReporterSettings) -> Reporter {
        Reporter {
            settings,
            queue: VecDeque::new(),
            need_snapshot: true,
            in_flight: None,
            next_seq: 1,
            not_before_ms: 0,
            last_send_ms: None,
            consecutive_failures: 0,
            counters: ReporterCounters::default(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &ReporterSettings {
        &self.settings
    }

    /// Queues one event; O(1). If the queue holds `max_queue` events the event is dropped,
    /// counted, and the next payload will be a snapshot. Returns false when dropped.
    pub fn push(&mut self, ev: TunnelEvent) -> bool {
        if self.need_snapshot {
            // A snapshot is due anyway: it will read the tracker, which already has this
            // tunnel's state. Queued events would be discarded then, so keep none.
            return true;
        }
        if self.queue.len() >= self.settings.max_queue {
            self.counters.dropped += 1;
            self.need_snapshot = true;
            self.queue.clear();
            return false;
        }
        self.queue.push_back(ev);
        true
    }

    /// Events waiting (never more than `max_queue`).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True while a payload is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// True if the next payload will be a snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.need_snapshot
    }

    /// Totals since start.
    pub fn counters(&self) -> ReporterCounters {
        self.counters
    }

    /// The delay the next failure would impose: `initial_backoff · 2^(failures)`, capped.
    pub fn backoff_ms(failures: u32, s: &ReporterSettings) -> u64 {
        let shift = failures.saturating_sub(1).min(40);
        s.initial_backoff_ms.saturating_mul(1u64 << shift).min(s.max_backoff_ms)
    }

    /// Clock tick at `now_ms`: returns a payload to send now, if one is due. The caller must
    /// report its outcome with [`Reporter::on_result`] (or [`Reporter::on_result`] with
    /// `ok = false` if it could not even start the send).
    pub fn poll(&mut self, now_ms: u64) -> Option<SendPlan> {
        if let Some((seq, deadline)) = self.in_flight {
            if now_ms < deadline {
                return None;
            }
            // The completion never came: count it as failed.
            self.on_result(seq, false, now_ms);
        }
        if now_ms < self.not_before_ms {
            return None;
        }
        let seq = self.next_seq;
        let plan = if self.need_snapshot {
            self.need_snapshot = false;
            self.queue.clear();
            self.counters.snapshots += 1;
            SendPlan::Snapshot { seq }
        } else {
            if self.queue.is_empty() {
                return None;
            }
            let interval_due = self.last_send_ms.is_none_or(|t| now_ms >= t + self.settings.send_interval_ms);
            if !interval_due && self.queue.len() < self.settings.max_batch {
                return None;
            }
            let n = self.queue.len().min(self.settings.max_batch);
            SendPlan::Events { seq, events: self.queue.drain(..n).collect() }
        };
        self.next_seq += 1;
        self.last_send_ms = Some(now_ms);
        self.in_flight = Some((seq, now_ms + self.settings.timeout_ms + COMPLETION_GRACE_MS));
        Some(plan)
    }

    /// Outcome of payload `seq` at `now_ms`: `ok` means a 2xx answer. A failure schedules a
    /// snapshot after the backoff. Results for a payload that is not in flight are ignored
    /// (returns false).
    pub fn on_result(&mut self, seq: u64, ok: bool, now_ms: u64) -> bool {
        match self.in_flight {
            Some((s, _)) if s == seq => {}
            _ => return false,
        }
        self.in_flight = None;
        if ok {
            self.counters.sent += 1;
            self.consecutive_failures = 0;
            self.not_before_ms = 0;
        } else {
            self.counters.failed += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.not_before_ms = now_ms + Reporter::backoff_ms(self.consecutive_failures, &self.settings);
            // The payload is lost; the control plane's view may miss it: start over.
            self.need_snapshot = true;
            self.queue.clear();
        }
        true
    }

    /// Consecutive failures so far (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// The JSON body of a snapshot payload (schema: `docs/reporter.md`). `responder` names this
/// Envoy, `sent_at_ms` is epoch ms, `dropped_total` the events dropped since start.
pub fn snapshot_body(responder: &str, seq: u64, sent_at_ms: u64, dropped_total: u64, tunnels: &[SnapshotTunnel]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = tunnels
        .iter()
        .map(|t| {
            serde_json::json!({
                "tunnel_id": t.tunnel_id,
                "tenant_id": t.tenant_id,
                "node_id": t.node_id,
                "cluster_id": t.cluster_id,
                "worker": WorkerName(t.worker).to_string(),
                "initiation_time_ms": t.initiation_time_ms,
                "connected_at_ms": t.connected_at_ms,
                "state": t.state,
            })
        })
        .collect();
    let v = serde_json::json!({
        "kind": "snapshot",
        "responder": responder,
        "seq": seq,
        "sent_at_ms": sent_at_ms,
        "dropped_events_total": dropped_total,
        "tunnels": list,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The JSON body of an events payload (schema: `docs/reporter.md`).
pub fn events_body(responder: &str, seq: u64, sent_at_ms: u64, dropped_total: u64, events: &[TunnelEvent]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "event": match e.kind { EventKind::Connected => "connected", EventKind::Disconnected { .. } => "disconnected" },
                "tunnel_id": e.tunnel_id,
                "tenant_id": e.tenant_id,
                "node_id": e.node_id,
                "cluster_id": e.cluster_id,
                "worker": WorkerName(e.worker).to_string(),
                "initiation_time_ms": e.initiation_time_ms,
                "ts_ms": e.ts_ms,
            });
            if let (EventKind::Disconnected { close_reason }, Some(obj)) = (&e.kind, v.as_object_mut()) {
                obj.insert("close_reason".into(), close_reason.clone().into());
            }
            v
        })
        .collect();
    let v = serde_json::json!({
        "kind": "events",
        "responder": responder,
        "seq": seq,
        "sent_at_ms": sent_at_ms,
        "dropped_events_total": dropped_total,
        "events": list,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(id: u64, connected: bool) -> TunnelEvent {
        TunnelEvent {
            kind: if connected { EventKind::Connected } else { EventKind::Disconnected { close_reason: "idle_peer_close".into() } },
            tenant_id: "t".into(),
            node_id: format!("n{id}"),
            cluster_id: "c".into(),
            worker: (id % 2) as u32,
            tunnel_id: id,
            initiation_time_ms: 7,
            ts_ms: 1000 + id,
        }
    }

    fn settings() -> ReporterSettings {
        ReporterSettings { send_interval_ms: 1000, max_batch: 3, max_queue: 5, timeout_ms: 5000, initial_backoff_ms: 500, max_backoff_ms: 4000 }
    }

    #[test]
    fn reporter_starts_with_a_snapshot_then_batches_events() {
        let mut r = Reporter::new(settings());
        r.push(ev(1, true)); // swallowed: the snapshot covers it
        assert_eq!(r.queued(), 0);
        assert_eq!(r.poll(0), Some(SendPlan::Snapshot { seq: 1 }));
        assert_eq!(r.poll(100), None, "one payload in flight");
        assert!(r.on_result(1, true, 100));
        r.push(ev(2, true));
        assert_eq!(r.poll(200), None, "interval not elapsed, batch not full");
        assert_eq!(r.poll(1000), Some(SendPlan::Events { seq: 2, events: vec![ev(2, true)] }));
        r.on_result(2, true, 1010);
        for i in 3..8 {
            r.push(ev(i, i % 2 == 0));
        }
        // A full batch goes at once, the rest after the interval.
        let Some(SendPlan::Events { seq: 3, events }) = r.poll(1100) else { panic!() };
        assert_eq!(events.iter().map(|e| e.tunnel_id).collect::<Vec<_>>(), vec![3, 4, 5]);
        r.on_result(3, true, 1100);
        assert_eq!(r.poll(1200), None);
        let Some(SendPlan::Events { seq: 4, events }) = r.poll(2100) else { panic!() };
        assert_eq!(events.len(), 2);
        assert_eq!(r.counters().sent, 3);
    }

    #[test]
    fn reporter_failure_means_backoff_then_snapshot() {
        let mut r = Reporter::new(settings());
        assert_eq!(r.poll(0), Some(SendPlan::Snapshot { seq: 1 }));
        r.on_result(1, true, 0);
        r.push(ev(1, true));
        let Some(SendPlan::Events { seq: 2, .. }) = r.poll(5000) else { panic!() };
        r.on_result(2, false, 5000);
        r.push(ev(2, true));
        assert_eq!(r.queued(), 0, "snapshot due: nothing queued");
        assert_eq!(r.poll(5499), None, "backoff 500 ms");
        assert_eq!(r.poll(5500), Some(SendPlan::Snapshot { seq: 3 }));
        r.on_result(3, false, 5500);
        assert_eq!(r.poll(6499), None, "backoff doubled to 1000 ms");
        assert_eq!(r.poll(6500), Some(SendPlan::Snapshot { seq: 4 }));
        assert_eq!(r.consecutive_failures(), 2);
        r.on_result(4, true, 6500);
        assert_eq!(r.consecutive_failures(), 0);
        assert!(!r.on_result(4, true, 6500), "a second result for the same payload is ignored");
    }

    #[test]
    fn reporter_lost_completion_counts_as_failure() {
        let mut r = Reporter::new(settings());
        assert_eq!(r.poll(0), Some(SendPlan::Snapshot { seq: 1 }));
        assert_eq!(r.poll(5999), None);
        assert_eq!(r.poll(6000), None, "timed out now; backoff starts");
        assert_eq!(r.counters().failed, 1);
        assert_eq!(r.poll(6500), Some(SendPlan::Snapshot { seq: 2 }));
        assert!(!r.on_result(1, true, 6600), "late result of the timed-out payload");
    }

    #[test]
    fn reporter_overflow_drops_and_falls_back_to_a_snapshot() {
        let mut r = Reporter::new(settings());
        r.poll(0);
        r.on_result(1, true, 0);
        for i in 0..5 {
            assert!(r.push(ev(i, true)));
        }
        assert!(!r.push(ev(9, true)));
        assert_eq!(r.counters().dropped, 1);
        assert!(r.snapshot_due());
        assert_eq!(r.poll(10), Some(SendPlan::Snapshot { seq: 2 }));
    }

    #[test]
    fn reporter_backoff_doubles_and_caps() {
        let s = settings();
        let got: Vec<u64> = (1..8).map(|f| Reporter::backoff_ms(f, &s)).collect();
        assert_eq!(got, vec![500, 1000, 2000, 4000, 4000, 4000, 4000]);
        assert_eq!(Reporter::backoff_ms(u32::MAX, &s), 4000);
    }

    #[test]
    fn reporter_bodies_follow_the_schema() {
        let b = events_body("r", 5, 99, 2, &[ev(1, true), ev(2, false)]);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["kind"], "events");
        assert_eq!(v["seq"], 5);
        assert_eq!(v["dropped_events_total"], 2);
        assert_eq!(v["events"][0]["event"], "connected");
        assert!(v["events"][0].get("close_reason").is_none());
        assert_eq!(v["events"][1]["close_reason"], "idle_peer_close");
        assert_eq!(v["events"][1]["worker"], "worker_0");
        let t = SnapshotTunnel {
            tenant_id: "t".into(),
            node_id: "n".into(),
            cluster_id: "c".into(),
            worker: 1,
            tunnel_id: 4,
            initiation_time_ms: 0,
            connected_at_ms: 3,
            state: "idle",
        };
        let v: serde_json::Value = serde_json::from_slice(&snapshot_body("r", 1, 2, 0, &[t])).unwrap();
        assert_eq!(v["kind"], "snapshot");
        assert_eq!(v["tunnels"][0]["node_id"], "n");
        assert_eq!(v["tunnels"][0]["worker"], "worker_1");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(bool),
        Tick(u64),
        Result(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(Op::Push),
            3 => (0u64..3000).prop_map(Op::Tick),
            2 => any::<bool>().prop_map(Op::Result),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::core::fuzz_cases(256)))]

        /// Any sequence of pushes, ticks and results: seq strictly grows, the queue never
        /// exceeds max_queue, batches never exceed max_batch, the payload after a failure is a
        /// snapshot, and no attempt comes before its backoff.
        #[test]
        fn reporter_invariants(ops in proptest::collection::vec(op(), 0..300)) {
            let s = settings();
            let mut r = Reporter::new(s);
            let mut now = 0u64;
            let mut last_seq = 0u64;
            let mut id = 0u64;
            let mut in_flight: Option<u64> = None;
            let mut failed_at: Option<(u64, u64)> = None; // (time, backoff)
            for o in ops {
                match o {
                    Op::Push(c) => { id += 1; r.push(ev(id, c)); }
                    Op::Tick(dt) => {
                        now += dt;
                        let before_failed = r.counters().failed;
                        if let Some(p) = r.poll(now) {
                            prop_assert!(p.seq() > last_seq);
                            last_seq = p.seq();
                            if let Some((t, b)) = failed_at.take() {
                                prop_assert!(matches!(p, SendPlan::Snapshot { .. }), "after a failure: snapshot");
                                prop_assert!(now >= t + b, "attempt at {now} before backoff end {}", t + b);
                            }
                            if let SendPlan::Events { events, .. } = &p {
                                prop_assert!(!events.is_empty() && events.len() <= s.max_batch);
                            }
                            in_flight = Some(p.seq());
                        } else if r.counters().failed > before_failed {
                            // A lost completion failed inside poll.
                            failed_at = Some((now, Reporter::backoff_ms(r.consecutive_failures(), &s)));
                            in_flight = None;
                        }
                    }
                    Op::Result(ok) => {
                        if let Some(seq) = in_flight.take() {
                            prop_assert!(r.on_result(seq, ok, now));
                            if !ok {
                                let b = Reporter::backoff_ms(r.consecutive_failures(), &s);
                                prop_assert!(b >= s.initial_backoff_ms && b <= s.max_backoff_ms);
                                failed_at = Some((now, b));
                            }
                        }
                    }
                }
                prop_assert!(r.queued() <= s.max_queue);
            }
        }
    }
}
