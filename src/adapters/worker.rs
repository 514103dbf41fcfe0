//! Per-worker state: the connections this worker owns and its deadline queue (docs/architecture.md#threads-and-the-clock: one
//! clock per worker, not one timer per tunnel).
//!
//! Lives in a thread-local, so only the owning worker touches it. Rule: never hold a borrow of
//! it across an Envoy call (Envoy may re-enter a hook synchronously, e.g. `close` runs `event`);
//! every function here borrows briefly and returns owned values.

use super::conn::{CloseDetail, Connection};
use super::endpoint::{Endpoint, Msg};
use crate::ffi::envoy::CloseType;
use crate::core::deadlines::DeadlineQueue;
use std::cell::RefCell;
use rustc_hash::FxHashMap as HashMap;
use std::rc::Rc;
use std::sync::Arc;

struct WorkerLocal {
    conns: HashMap<u64, Rc<dyn Connection>>,
    deadlines: DeadlineQueue<u64>,
}

thread_local! {
    static LOCAL: RefCell<WorkerLocal> = RefCell::new(WorkerLocal {
        conns: HashMap::default(),
        deadlines: DeadlineQueue::new(),
    });
}

/// Registers a connection owned by this worker.
pub fn insert(conn_id: u64, conn: Rc<dyn Connection>) {
    LOCAL.with(|l| l.borrow_mut().conns.insert(conn_id, conn));
}

/// Forgets a connection (and its deadline).
pub fn remove(conn_id: u64) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.conns.remove(&conn_id);
        l.deadlines.cancel(conn_id);
    });
}

/// The connection `conn_id` if this worker owns it.
pub fn get(conn_id: u64) -> Option<Rc<dyn Connection>> {
    LOCAL.with(|l| l.borrow().conns.get(&conn_id).cloned())
}

/// Sets (or with `None`, clears) the next deadline of connection `conn_id`, in ms of
/// [`crate::runtime::now_ms`].
pub fn set_deadline(conn_id: u64, at_ms: Option<u64>) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        match at_ms {
            Some(at) => l.deadlines.schedule(conn_id, at),
            None => l.deadlines.cancel(conn_id),
        }
    });
}

/// Removes and returns the connections whose deadline is due at `now_ms`, in deadline order.
pub fn due(now_ms: u64) -> Vec<Rc<dyn Connection>> {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let ids = l.deadlines.pop_due(now_ms);
        ids.into_iter().filter_map(|id| l.conns.get(&id).cloned()).collect()
    })
}

/// Number of connections this worker owns.
pub fn len() -> usize {
    LOCAL.with(|l| l.borrow().conns.len())
}

/// Sends `msg` to the connection behind `target`. On the same worker, with nothing queued for
/// it, it is handled at once (no reordering); otherwise it goes through the mailbox. Returns
/// false if the target is gone.
pub fn deliver(target: &Arc<Endpoint>, my_worker: u32, msg: Msg) -> bool {
    if target.worker == my_worker && super::http_filter::is_stream_id(target.conn_id) {
        return super::http_filter::deliver_local(target, msg);
    }
    if target.worker == my_worker && !matches!(msg, Msg::PeerClosed) {
        if let Some(conn) = get(target.conn_id) {
            if let Some(_busy) = target.begin_direct() {
                dispatch(&conn, msg);
                return true;
            }
        }
    }
    target.post(msg)
}

/// Handles one mailbox message on the owning worker: the common ones here, the rest by the
/// connection's role.
pub fn dispatch(conn: &Rc<dyn Connection>, msg: Msg) {
    match msg {
        Msg::Tick => run_tick(conn),
        Msg::Data(bytes) => conn.write(&bytes),
        Msg::PeerClosed => conn.close(CloseType::FlushWrite, CloseDetail::PeerClosed),
        other => conn.on_message(other),
    }
}

/// Runs every due deadline of this worker (the clock tick, docs/architecture.md#threads-and-the-clock).
fn run_tick(conn: &Rc<dyn Connection>) {
    run_worker_tick(conn.runtime(), conn.ep().worker);
}

/// The worker clock tick, whoever received it (a connection or an HTTP stream of `worker`): due
/// connection deadlines, then the HTTP streams waiting for a tunnel.
pub fn run_worker_tick(runtime: &crate::runtime::Runtime, worker: u32) {
    // First, so that a panic in a deadline handler (caught by the hook's guard) cannot leave
    // the worker without ticks.
    runtime.tick_done(worker);
    let now = crate::runtime::now_ms();
    super::http_filter::retry_waiting(now);
    for due in due(now) {
        let _busy = due.ep().hold();
        due.on_deadline(now);
    }
}

/// Uniform random value in `0..=max` (`fastrand`'s per-thread generator, so per worker); used
/// for RPING jitter, not for anything secret.
pub fn jitter(max: u64) -> u64 {
    fastrand::u64(0..=max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fake::{self, Env, FakeNetworkFilter};

    #[test]
    fn due_returns_connections_in_deadline_order_once() {
        let env = Env::new("{}", "{}");
        let a = FakeNetworkFilter::new(101);
        let b = FakeNetworkFilter::new(102);
        let _ca = fake::open(&env.handshake, &a);
        let _cb = fake::open(&env.handshake, &b);
        set_deadline(101, Some(20));
        set_deadline(102, Some(10));
        assert!(due(5).is_empty());
        let ids: Vec<u64> = due(30).iter().map(|c| c.ep().conn_id).collect();
        assert_eq!(ids, vec![102, 101]);
        assert!(due(30).is_empty(), "popped");
        set_deadline(101, Some(40));
        set_deadline(101, None);
        assert!(due(50).is_empty(), "cancelled");
    }

    #[test]
    fn removed_connections_are_forgotten_with_their_deadline() {
        let env = Env::new("{}", "{}");
        let a = FakeNetworkFilter::new(103);
        let _c = fake::open(&env.handshake, &a);
        assert!(get(103).is_some());
        let before = len();
        remove(103);
        assert!(get(103).is_none());
        assert_eq!(len(), before - 1);
        assert!(due(u64::MAX).is_empty());
    }

    #[test]
    fn deliver_on_the_same_quiet_worker_acts_at_once_else_queues() {
        let env = Env::new("{}", "{}");
        let a = FakeNetworkFilter::new(104);
        let c = fake::open(&env.handshake, &a);
        assert!(deliver(c.ep(), 0, Msg::Data(b"now".to_vec())));
        assert_eq!(a.written(), b"now", "same worker, nothing queued: direct");
        assert!(deliver(c.ep(), 1, Msg::Data(b"later".to_vec())));
        assert_eq!(a.written(), b"now", "other worker: through the mailbox");
        fake::deliver_mail(&[&c]);
        assert_eq!(a.written(), b"nowlater");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        assert_eq!(jitter(0), 0);
        let draws: Vec<u64> = (0..1000).map(|_| jitter(10)).collect();
        assert!(draws.iter().all(|&d| d <= 10));
        assert!(draws.iter().any(|&d| d != draws[0]), "not constant");
    }
}
