//! Adapter of the HTTP reporter (docs/protocol.md#reporter, `docs/reporter.md`): wires the pure
//! [`Reporter`] state machine to the tracker, the workers and Envoy's HTTP callout.
//!
//! Threads:
//! - workers call [`ReporterHandle::connected`] / [`ReporterHandle::disconnected`] from the handshake filter; each only locks the
//!   reporter's mutex for an O(1) push into the bounded queue (never the data path's bytes, never
//!   any I/O);
//! - the main thread calls [`ReporterHandle::tick`] from the bootstrap clock (`adapters::bootstrap::CLOCK_PERIOD_MS`) and
//!   [`ReporterHandle::on_callout_done`] from the `http_callout_done` hook (docs/envoy-abi.md#bootstrap-hooks); all
//!   sending happens there, through `bootstrap_extension_http_callout` (docs/envoy-abi.md#bootstrap-callbacks).
//!
//! Counters: [`ReporterCounters`] (payloads sent, failed, snapshots, dropped events), published
//! every clock period as `<stat_prefix>.reporter.{sent,failed,snapshots,dropped_events}`
//! (`crate::stats`); failures and recoveries are logged.

use crate::config::reporter::HttpReporterConfig;
use crate::core::reporter::{
    events_body, snapshot_body, EventKind, Reporter, ReporterCounters, SendPlan, SnapshotTunnel, TunnelEvent,
};
use crate::clock::unix_ms;
use crate::core::close::CloseReason;
use crate::ffi::envoy::CalloutResult;
use crate::core::tracker::{Identity, Removed, Tracker};
use crate::rt_log;
use parking_lot::Mutex;

/// The reporter of one runtime: its config, state machine and the callout in flight.
pub struct ReporterHandle {
    /// The validated config.
    pub config: HttpReporterConfig,
    state: Mutex<Reporter>,
    /// `(callout id, seq)` of the payload in flight. Main thread only (a mutex for `Sync`).
    callout: Mutex<Option<(u64, u64)>>,
    /// True while the last payload failed (to log failures and recoveries once).
    failing: Mutex<bool>,
    /// Set while a callout is being started: a completion Envoy delivers inside the start call
    /// (before its id is known here) is parked in `early` and applied right after.
    starting: Mutex<bool>,
    /// `(callout id, ok, detail)` of such an early completion.
    early: Mutex<Option<(u64, bool, String)>>,
}

/// Outcome of starting a send, as reported by the `send` closure of [`ReporterHandle::tick`]:
/// the callout id, or a text naming why it could not start.
pub type StartResult = Result<u64, String>;

impl ReporterHandle {
    /// A reporter for `config`; its first payload will be a snapshot.
    pub fn new(config: HttpReporterConfig) -> ReporterHandle {
        let state = Mutex::new(Reporter::new(config.settings));
        ReporterHandle {
            config,
            state,
            callout: Mutex::new(None),
            failing: Mutex::new(false),
            starting: Mutex::new(false),
            early: Mutex::new(None),
        }
    }

    /// Queues an event (any thread, O(1)).
    pub fn push(&self, ev: TunnelEvent) {
        self.state.lock().push(ev);
    }

    /// Totals since start.
    pub fn counters(&self) -> ReporterCounters {
        self.state.lock().counters()
    }

    /// The request headers of a payload (`:method`, `:path`, `host`, content type, extras).
    pub fn headers(&self, body_len: usize) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), self.config.path.clone()),
            ("host".to_string(), self.config.host.clone()),
            ("content-type".to_string(), "application/json".to_string()),
            ("content-length".to_string(), body_len.to_string()),
        ];
        h.extend(self.config.headers.iter().cloned());
        h
    }

    /// Main thread, every clock period, at monotonic `now` ms: if a payload is due, builds its
    /// body (`snapshot` reads the tracker only for a snapshot) and starts it with `send`
    /// (headers, body) → callout id. A send that cannot start counts as a failed payload.
    pub fn tick(
        &self,
        now: u64,
        snapshot: impl FnOnce() -> Vec<SnapshotTunnel>,
        send: impl FnOnce(&[(String, String)], &[u8]) -> StartResult,
    ) {
        // The lock is held only to decide: building the body and sending happen without it, so
        // workers pushing events never wait for a snapshot to be serialized.
        let (plan, dropped) = {
            let mut st = self.state.lock();
            let plan = st.poll(now);
            (plan, st.counters().dropped)
        };
        let Some(plan) = plan else { return };
        let seq = plan.seq();
        let body = match plan {
            SendPlan::Snapshot { seq } => snapshot_body(&self.config.responder, seq, unix_ms(), dropped, &snapshot()),
            SendPlan::Events { seq, events } => events_body(&self.config.responder, seq, unix_ms(), dropped, &events),
        };
        *self.starting.lock() = true;
        let started = send(&self.headers(body.len()), &body);
        *self.starting.lock() = false;
        match started {
            Ok(id) => {
                *self.callout.lock() = Some((id, seq));
                let early = self.early.lock().take();
                if let Some((eid, ok, detail)) = early {
                    self.on_callout_done(eid, ok, &detail, now);
                }
            }
            Err(why) => {
                self.note_failure(&format!("could not start the request: {why}"));
                self.state.lock().on_result(seq, false, now);
            }
        }
    }

    /// Main thread, `http_callout_done` for callout `id` at monotonic `now` ms; `ok` means a
    /// 2xx response (see [`callout_ok`]). Ignores ids that are not ours.
    pub fn on_callout_done(&self, id: u64, ok: bool, detail: &str, now: u64) {
        let seq = {
            let mut c = self.callout.lock();
            match *c {
                Some((cid, seq)) if cid == id => {
                    *c = None;
                    seq
                }
                _ => {
                    if *self.starting.lock() {
                        *self.early.lock() = Some((id, ok, detail.to_string()));
                    }
                    return;
                }
            }
        };
        if ok {
            let mut failing = self.failing.lock();
            if *failing {
                *failing = false;
                rt_log!(Info, "reverse_tunnel: reporter: control plane reachable again (cluster {})", self.config.cluster);
            }
        } else {
            self.note_failure(detail);
        }
        self.state.lock().on_result(seq, ok, now);
    }

    /// Worker thread: a tunnel joined the pool (lifecycle `tunnel_setup`).
    pub fn connected(&self, tunnel: u64, worker: u32, id: &Identity, initiation_time_ms: i64) {
        self.push(TunnelEvent {
            kind: EventKind::Connected,
            tenant_id: id.tenant_id.clone(),
            node_id: id.node_id.clone(),
            cluster_id: id.cluster_id.clone(),
            worker,
            tunnel_id: tunnel,
            initiation_time_ms,
            ts_ms: unix_ms(),
        });
    }

    /// Worker thread: a registered tunnel left the tracker (lifecycle `tunnel_closed`) with
    /// `close_reason`.
    pub fn disconnected(&self, tunnel: u64, rm: &Removed, close_reason: CloseReason) {
        self.push(TunnelEvent {
            kind: EventKind::Disconnected { close_reason: close_reason.to_string() },
            tenant_id: rm.identity.tenant_id.clone(),
            node_id: rm.identity.node_id.clone(),
            cluster_id: rm.identity.cluster_id.clone(),
            worker: rm.worker,
            tunnel_id: tunnel,
            initiation_time_ms: rm.meta.initiation_time_ms,
            ts_ms: unix_ms(),
        });
    }

    fn note_failure(&self, detail: &str) {
        let mut failing = self.failing.lock();
        if !*failing {
            *failing = true;
            rt_log!(
                Warn,
                "reverse_tunnel: reporter: send to cluster {} failed ({detail}); retrying with backoff, then a full snapshot",
                self.config.cluster
            );
        }
    }
}

/// True if a callout result means success: result Success and a `:status` of 2xx.
pub fn callout_ok(result: CalloutResult, status: Option<&str>) -> bool {
    result == CalloutResult::Success && status.and_then(|s| s.trim().parse::<u16>().ok()).is_some_and(|s| (200..300).contains(&s))
}

/// The snapshot rows of the tracker (bare ids, state, connect time), sorted by tunnel id. Main
/// thread; walks the tracker in batches ([`Tracker::walk_batched`]) so that workers never wait
/// long for its lock.
pub fn tracker_snapshot<H: Clone + Send>(tracker: &Tracker<H>) -> Vec<SnapshotTunnel> {
    let mut rows = Vec::new();
    tracker.walk_batched(|v| {
        rows.push(SnapshotTunnel {
            tenant_id: v.identity.tenant_id.clone(),
            node_id: v.identity.node_id.clone(),
            cluster_id: v.identity.cluster_id.clone(),
            worker: v.worker,
            tunnel_id: v.tunnel,
            initiation_time_ms: v.meta.initiation_time_ms,
            connected_at_ms: v.meta.registered_at_ms,
            state: v.state.as_str(),
        })
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reporter::ReporterSettings;

    fn cfg() -> HttpReporterConfig {
        HttpReporterConfig {
            cluster: "cp".into(),
            path: "/ev".into(),
            host: "cp.local".into(),
            responder: "r1".into(),
            headers: vec![("authorization".into(), "x".into())],
            settings: ReporterSettings { send_interval_ms: 0, ..ReporterSettings::default() },
        }
    }

    #[test]
    fn reporter_adapter_snapshot_then_events_then_failure() {
        let h = ReporterHandle::new(cfg());
        let mut sent: Vec<(Vec<(String, String)>, serde_json::Value)> = Vec::new();
        let mut send = |hd: &[(String, String)], b: &[u8]| -> StartResult {
            sent.push((hd.to_vec(), serde_json::from_slice(b).unwrap()));
            Ok(sent.len() as u64)
        };
        h.tick(0, Vec::new, &mut send);
        h.push(TunnelEvent {
            kind: EventKind::Connected,
            tenant_id: "t".into(),
            node_id: "n".into(),
            cluster_id: "c".into(),
            worker: 0,
            tunnel_id: 9,
            initiation_time_ms: 0,
            ts_ms: 1,
        });
        h.tick(100, Vec::new, &mut send); // still in flight
        h.on_callout_done(1, true, "", 100);
        h.on_callout_done(1, true, "", 100); // duplicate: ignored
        h.tick(200, Vec::new, &mut send);
        h.on_callout_done(2, false, "503", 200);
        h.tick(300, Vec::new, &mut send); // backoff 500 ms
        h.tick(700, Vec::new, &mut send);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].1["kind"], "snapshot");
        assert_eq!(sent[1].1["kind"], "events");
        assert_eq!(sent[1].1["events"][0]["node_id"], "n");
        assert_eq!(sent[2].1["kind"], "snapshot");
        assert_eq!(sent[2].1["seq"], 3);
        assert_eq!(sent[0].1["responder"], "r1");
        let hd = &sent[0].0;
        assert!(hd.contains(&(":path".into(), "/ev".into())) && hd.contains(&("host".into(), "cp.local".into())));
        assert!(hd.contains(&("authorization".into(), "x".into())));
        let c = h.counters();
        assert_eq!((c.sent, c.failed, c.snapshots), (1, 1, 2));
    }

    #[test]
    fn reporter_adapter_start_failure_is_a_failed_send() {
        let h = ReporterHandle::new(cfg());
        h.tick(0, Vec::new, |_, _| Err("cluster 'cp' not found".into()));
        assert_eq!(h.counters().failed, 1);
        let mut n = 0;
        h.tick(499, Vec::new, |_, _| {
            n += 1;
            Ok(1)
        });
        assert_eq!(n, 0, "backoff");
    }

    #[test]
    fn reporter_adapter_completion_inside_the_start_call_is_applied() {
        let h = ReporterHandle::new(cfg());
        let h2 = &h;
        h.tick(0, Vec::new, |_, _| {
            // Envoy may answer (e.g. a local 503) before the start call returns the id.
            h2.on_callout_done(7, false, "local 503", 0);
            Ok(7)
        });
        let c = h.counters();
        assert_eq!((c.sent, c.failed), (0, 1));
        let mut n = 0;
        h.tick(600, Vec::new, |_, _| {
            n += 1;
            Ok(8)
        });
        assert_eq!(n, 1, "retried after the backoff, not after the 6 s completion timeout");
    }

    #[test]
    fn reporter_callout_ok_needs_success_and_2xx() {
        assert!(callout_ok(CalloutResult::Success, Some("200")));
        assert!(callout_ok(CalloutResult::Success, Some("204")));
        assert!(!callout_ok(CalloutResult::Success, Some("503")));
        assert!(!callout_ok(CalloutResult::Success, None));
        assert!(!callout_ok(CalloutResult::Reset, Some("200")));
    }
}
