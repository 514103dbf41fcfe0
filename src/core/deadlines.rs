//! Per-worker deadline queue: "one clock, not one timer per tunnel" (docs/architecture.md#threads-and-the-clock).
//!
//! Network filters have no timer API, so each worker keeps one [`DeadlineQueue`] of the
//! deadlines of all its tunnels (next RPING, RPING reply deadline, handshake deadline, ...).
//! One clock tick (about every 50 ms, `adapters::bootstrap::CLOCK_PERIOD_MS`) calls [`DeadlineQueue::pop_due`] and runs the work of the
//! returned keys. Each key has at most one deadline; scheduling a key again replaces its deadline.
//!
//! Cost: `schedule`, `cancel` are O(log n); `pop_due` is O(k log n) for k due keys, so a tick
//! costs nothing per idle tunnel whose deadline is still in the future.
//!
//! All times are milliseconds on the caller's monotonic clock (`u64`); the queue never reads a
//! clock itself.

use std::collections::{BTreeMap, BTreeSet};

/// A set of `(deadline_ms, key)` entries with at most one entry per key.
///
/// `K` is any small copyable ordered id (e.g. a tunnel id). Keys with equal deadlines are
/// returned in ascending key order, so the order of [`pop_due`](Self::pop_due) is deterministic.
#[derive(Debug, Clone)]
pub struct DeadlineQueue<K: Ord + Copy> {
    /// Ordered by deadline first, then key.
    by_time: BTreeSet<(u64, K)>,
    /// The current deadline of each key (ms); always mirrors `by_time`.
    by_key: BTreeMap<K, u64>,
}

impl<K: Ord + Copy> Default for DeadlineQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> DeadlineQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        DeadlineQueue {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// Sets the deadline of `key` to `at_ms` (ms), replacing any earlier deadline of `key`
    /// (earlier or later than `at_ms`). A deadline already in the past is due at the next
    /// [`pop_due`](Self::pop_due).
    pub fn schedule(&mut self, key: K, at_ms: u64) {
        if let Some(old) = self.by_key.insert(key, at_ms) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at_ms, key));
    }

    /// Removes the deadline of `key`, if any. Unknown keys are ignored.
    pub fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
    }

    /// Removes and returns every key whose deadline is `<= now_ms`, earliest deadline first
    /// (ties in ascending key order). Keys with a later deadline stay queued.
    pub fn pop_due(&mut self, now_ms: u64) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.by_time.first() {
            if at > now_ms {
                break;
            }
            self.by_time.pop_first();
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// The earliest deadline in the queue (ms), or `None` when the queue is empty.
    pub fn next_at(&self) -> Option<u64> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// The current deadline of `key` (ms), if it has one.
    pub fn deadline_of(&self, key: K) -> Option<u64> {
        self.by_key.get(&key).copied()
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pops_in_deadline_order_and_keeps_future_ones() {
        let mut q = DeadlineQueue::new();
        q.schedule(7u32, 300);
        q.schedule(1, 100);
        q.schedule(5, 200);
        q.schedule(9, 1_000);
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_at(), Some(100));
        assert_eq!(q.pop_due(99), Vec::<u32>::new());
        assert_eq!(q.pop_due(300), vec![1, 5, 7]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_at(), Some(1_000));
        assert_eq!(q.pop_due(300), Vec::<u32>::new());
    }

    #[test]
    fn deadline_equal_to_now_is_due() {
        let mut q = DeadlineQueue::new();
        q.schedule(1u8, 500);
        assert!(q.pop_due(499).is_empty());
        assert_eq!(q.pop_due(500), vec![1]);
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
    }

    #[test]
    fn ties_come_out_in_key_order() {
        let mut q = DeadlineQueue::new();
        for k in [4u16, 2, 9, 1] {
            q.schedule(k, 50);
        }
        assert_eq!(q.pop_due(50), vec![1, 2, 4, 9]);
    }

    #[test]
    fn schedule_replaces_earlier_or_later_deadline() {
        let mut q = DeadlineQueue::new();
        q.schedule(1u32, 100);
        q.schedule(1, 900);
        assert_eq!(q.len(), 1);
        assert!(q.pop_due(500).is_empty(), "old deadline 100 must be gone");
        assert_eq!(q.deadline_of(1), Some(900));
        q.schedule(1, 10);
        assert_eq!(q.next_at(), Some(10));
        assert_eq!(q.pop_due(10), vec![1]);
        assert!(q.pop_due(u64::MAX).is_empty(), "no stale copy left behind");
    }

    #[test]
    fn cancel_removes_and_ignores_unknown() {
        let mut q = DeadlineQueue::new();
        q.schedule(1u32, 100);
        q.schedule(2, 200);
        q.cancel(1);
        q.cancel(42);
        assert_eq!(q.len(), 1);
        assert_eq!(q.deadline_of(1), None);
        assert_eq!(q.pop_due(u64::MAX), vec![2]);
        assert!(q.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u8, u64),
        Cancel(u8),
        Pop(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, 0u64..1_000).prop_map(|(k, t)| Op::Schedule(k, t)),
            (0u8..16).prop_map(Op::Cancel),
            (0u64..1_000).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// The queue behaves like a naive map scanned in full on every pop.
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut q = DeadlineQueue::new();
            let mut model: Vec<(u8, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Schedule(k, t) => {
                        q.schedule(k, t);
                        model.retain(|&(mk, _)| mk != k);
                        model.push((k, t));
                    }
                    Op::Cancel(k) => {
                        q.cancel(k);
                        model.retain(|&(mk, _)| mk != k);
                    }
                    Op::Pop(now) => {
                        let mut due: Vec<(u64, u8)> = model
                            .iter()
                            .filter(|&&(_, t)| t <= now)
                            .map(|&(k, t)| (t, k))
                            .collect();
                        due.sort();
                        model.retain(|&(_, t)| t > now);
                        let want: Vec<u8> = due.into_iter().map(|(_, k)| k).collect();
                        prop_assert_eq!(q.pop_due(now), want);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.is_empty(), model.is_empty());
                prop_assert_eq!(q.next_at(), model.iter().map(|&(_, t)| t).min());
                for k in 0u8..16 {
                    let want = model.iter().find(|&&(mk, _)| mk == k).map(|&(_, t)| t);
                    prop_assert_eq!(q.deadline_of(k), want);
                }
            }
        }
    }
}
