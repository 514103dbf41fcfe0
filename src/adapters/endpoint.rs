//! An [`Endpoint`] is the cross-thread face of one connection we own (a tunnel or an egress
//! connection): a mailbox of [`Msg`]s plus the connection's Envoy scheduler.
//!
//! Any thread may [`Endpoint::post`] a message; the owning worker receives it in its
//! `on_network_filter_scheduled` hook and drains the mailbox with [`Endpoint::take`]. The
//! scheduler is committed and deleted under the endpoint's own lock, so no thread can commit a
//! scheduler that was already deleted (docs/envoy-abi.md#threads); that lock is per connection and is held only
//! for the commit/delete call itself.

use crate::core::h2mux::hpack::HeaderField;
use crate::core::h2mux::LocalFrame;
use crate::ffi::envoy::NetScheduler;
use crate::ffi::envoy_http::HttpScheduler;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Event id used for every mailbox delivery.
pub const EVENT_MAILBOX: u64 = 1;

/// A message for a connection, handled on the connection's own worker.
pub enum Msg {
    /// Bytes to write to this connection (sent to an egress connection by its tunnel).
    Data(Vec<u8>),
    /// The peer closed: close this connection too (after flushing what was written).
    PeerClosed,
    /// The worker's clock tick: run all due deadlines of this worker (docs/architecture.md#threads-and-the-clock).
    Tick,
    /// Sent to a tunnel: the egress connection `peer` claimed it (fresh) or joins its HTTP/2
    /// session (shared), with the first bytes it sent (so that the tunnel decides its mode, raw
    /// relay or HTTP/2 session, in the same step as the claim).
    Attach { peer: Arc<Endpoint>, first: Vec<u8> },
    /// Sent to a tunnel: bytes from egress connection `from` (its connection id).
    EgressData { from: u64, bytes: Vec<u8> },
    /// Sent to a tunnel: egress connection `from` closed.
    EgressClosed { from: u64 },
    /// Sent to a tunnel by the main thread when Envoy starts draining: close it if it is still
    /// idle (close reason `drain`); a claimed tunnel ignores it and keeps serving.
    Drain,
    /// Sent to a tunnel: the HTTP stream `peer` (request path) opens its request on the tunnel's
    /// HTTP/2 session (starting the session on an idle tunnel).
    LocalOpen { peer: Arc<Endpoint>, fields: Vec<HeaderField>, end: bool },
    /// Sent to a tunnel: request body bytes of HTTP stream `from` (within its send window).
    LocalData { from: u64, bytes: Vec<u8>, end: bool, more: bool },
    /// Sent to a tunnel: request trailers of HTTP stream `from`.
    LocalTrailers { from: u64, fields: Vec<HeaderField> },
    /// Sent to a tunnel: HTTP stream `from` consumed `n` response bytes.
    LocalCredit { from: u64, n: u32 },
    /// Sent to a tunnel: HTTP stream `from` went away (its tunnel stream is cancelled).
    LocalCancel { from: u64 },
    /// Sent to an HTTP stream: response pieces from its tunnel stream, and its current request
    /// send window (bytes it may send now).
    LocalFrames { frames: Vec<LocalFrame>, window: usize },
}

/// The scheduler that wakes an endpoint's owner: a network filter's or an HTTP stream's.
#[derive(Clone, Copy, Debug)]
pub enum Sched {
    /// A connection (tunnel or egress connection).
    Net(NetScheduler),
    /// An HTTP stream of the request path.
    Http(HttpScheduler),
    /// A tunnel socket the module owns: its socket loop runs the connection's mail
    /// ([`super::socket_loop`]).
    Loop(super::socket_loop::LoopSched),
}

impl Sched {
    fn commit(self, event: u64) {
        match self {
            Sched::Net(s) => s.commit(event),
            Sched::Http(s) => s.commit(event),
            Sched::Loop(s) => s.commit(),
        }
    }
    fn delete(self) {
        match self {
            Sched::Net(s) => s.delete(),
            Sched::Http(s) => s.delete(),
            Sched::Loop(_) => {}
        }
    }
}

struct Inner {
    sched: Option<Sched>,
    queue: VecDeque<Msg>,
    scheduled: bool,
    /// The owner is handling messages (a taken batch, or one delivered directly): a same-worker
    /// sender must queue behind them instead of overtaking them.
    busy: bool,
}

/// Marks an endpoint's owner busy while it lives (see [`Endpoint::take`] and
/// [`Endpoint::hold`]); dropping it restores the previous mark, so guards nest, and a panic
/// unwinding through a handler restores it too.
pub struct Busy<'a> {
    ep: &'a Endpoint,
    was_busy: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.ep.inner.lock().busy = self.was_busy;
    }
}

/// The mailbox of one connection. `Send + Sync`.
pub struct Endpoint {
    /// Envoy's connection id (unique per process).
    pub conn_id: u64,
    /// Index of the worker that owns the connection.
    pub worker: u32,
    /// Live figures the owning worker publishes for the admin listing (relaxed atomics).
    pub live: LiveStats,
    inner: Mutex<Inner>,
}

/// Per-tunnel figures written by the owning worker and read by the admin listing.
#[derive(Default)]
pub struct LiveStats {
    /// Unix ms of the last RPING (or HTTP/2 PING) answer; 0 if none yet.
    pub last_ack_unix_ms: AtomicU64,
    /// Round-trip time of the last answered RPING, ms.
    pub last_rtt_ms: AtomicU64,
    /// Egress connections using the tunnel (HTTP/2 session: may be several).
    pub egress: AtomicU64,
}

impl Endpoint {
    /// Creates the endpoint of connection `conn_id` on `worker` with a network filter's
    /// scheduler (unit tests; the adapters take the scheduler their handle gives).
    #[cfg(test)]
    pub fn new(conn_id: u64, worker: u32, sched: NetScheduler) -> Arc<Endpoint> {
        Endpoint::with_sched(conn_id, worker, Sched::Net(sched))
    }

    /// Creates the endpoint `id` of something on `worker` woken by `sched`.
    pub fn with_sched(conn_id: u64, worker: u32, sched: Sched) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            conn_id,
            worker,
            live: LiveStats::default(),
            inner: Mutex::new(Inner { sched: Some(sched), queue: VecDeque::new(), scheduled: false, busy: false }),
        })
    }

    /// Queues `msg` and wakes the owning worker (one scheduler commit per batch). Any thread.
    /// Returns false if the connection is gone (the message is dropped).
    pub fn post(&self, msg: Msg) -> bool {
        let mut g = self.inner.lock();
        let Some(sched) = g.sched else { return false };
        g.queue.push_back(msg);
        if !g.scheduled {
            g.scheduled = true;
            sched.commit(EVENT_MAILBOX);
        }
        true
    }

    /// Posts a clock tick. Any thread (the main thread's clock).
    pub fn post_tick(&self) -> bool {
        self.post(Msg::Tick)
    }

    /// Takes every queued message, and marks the owner busy until the returned guard drops (so
    /// that no message sent meanwhile overtakes the taken ones). Owning worker, in the scheduled
    /// hook.
    pub fn take(&self) -> (VecDeque<Msg>, Busy<'_>) {
        let mut g = self.inner.lock();
        g.scheduled = false;
        let was_busy = std::mem::replace(&mut g.busy, true);
        (std::mem::take(&mut g.queue), Busy { ep: self, was_busy })
    }

    /// Marks the owner busy for the length of one of its own Envoy hooks (a read, a deadline, a
    /// request body, ...). A same-worker sender then queues its message instead of running it
    /// nested inside the hook, where it would overtake the actions the hook has computed but not
    /// yet carried out (e.g. response pieces, or frames for the tunnel's wire). Owning worker.
    pub fn hold(&self) -> Busy<'_> {
        let was_busy = std::mem::replace(&mut self.inner.lock().busy, true);
        Busy { ep: self, was_busy }
    }

    /// True if nothing is queued, scheduled or being handled: a same-worker sender may then act
    /// directly without reordering messages.
    pub fn is_quiet(&self) -> bool {
        let g = self.inner.lock();
        g.queue.is_empty() && !g.scheduled && !g.busy
    }

    /// If the endpoint is quiet, marks it busy and returns the guard: the caller (on the owning
    /// worker) handles one message directly; anything sent meanwhile is queued behind it.
    pub fn begin_direct(&self) -> Option<Busy<'_>> {
        let mut g = self.inner.lock();
        if g.queue.is_empty() && !g.scheduled && !g.busy {
            g.busy = true;
            Some(Busy { ep: self, was_busy: false })
        } else {
            None
        }
    }

    /// True until [`Endpoint::shut`] ran.
    pub fn is_open(&self) -> bool {
        self.inner.lock().sched.is_some()
    }

    /// Closes the mailbox for good: deletes the scheduler (under the lock, so no commit can race
    /// it) and returns the messages that were never delivered. Owning worker, once.
    pub fn shut(&self) -> VecDeque<Msg> {
        let mut g = self.inner.lock();
        if let Some(s) = g.sched.take() {
            s.delete();
        }
        std::mem::take(&mut g.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Arc<Endpoint> {
        Endpoint::new(7, 0, NetScheduler(0))
    }

    #[test]
    fn posted_messages_are_taken_in_order_and_the_mailbox_is_quiet_again() {
        let e = ep();
        assert!(e.is_quiet());
        assert!(e.post(Msg::Data(b"a".to_vec())));
        assert!(e.post(Msg::Tick));
        assert!(!e.is_quiet());
        let got: Vec<_> = e.take().0.into_iter().collect();
        assert!(matches!(&got[..], [Msg::Data(d), Msg::Tick] if d == b"a"));
        assert!(e.is_quiet());
    }

    #[test]
    fn a_held_endpoint_is_not_quiet_and_guards_nest() {
        let e = ep();
        {
            let _outer = e.hold();
            assert!(!e.is_quiet());
            assert!(e.begin_direct().is_none(), "a sender must queue behind the running hook");
            {
                let _inner = e.hold();
            }
            assert!(!e.is_quiet(), "the inner guard restores the outer mark");
        }
        assert!(e.is_quiet());
        let d = e.begin_direct();
        assert!(d.is_some());
        drop(d);
        assert!(e.is_quiet());
    }

    #[test]
    fn shut_returns_undelivered_messages_and_refuses_later_posts() {
        let e = ep();
        e.post(Msg::Drain);
        assert!(e.is_open());
        let left = e.shut();
        assert!(matches!(left.front(), Some(Msg::Drain)));
        assert!(!e.is_open());
        assert!(!e.post(Msg::Tick), "a closed mailbox drops messages");
        assert!(e.shut().is_empty(), "idempotent");
    }
}
