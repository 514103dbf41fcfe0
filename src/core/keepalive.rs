//! Per-tunnel RPING keepalive state machine (responder side).
//!
//! While a tunnel is idle the responder writes the 5 raw bytes `RPING` and the initiator echoes
//! exactly `RPING` (docs/protocol.md#rping-keepalive). This module decides *when* to send, how to read the
//! echoes, and when the tunnel is dead. It does no I/O and reads no clock: every call gets
//! `now_ms` (caller's monotonic clock, ms) and randomness comes from a caller-supplied `jitter`
//! closure. The caller acts on the returned [`Event`]s and re-queues the tunnel at
//! [`Keepalive::next_deadline`] in its worker's deadline queue (docs/architecture.md#threads-and-the-clock).
//!
//! # Life cycle ([`Phase`])
//!
//! 1. `AwaitingAdmission` (after [`Keepalive::new`]): the 200/101 handshake response has been
//!    written; the tunnel is not yet claimable. The first RPING is due `first_ping_delay_ms`
//!    later, so it is never coalesced with the response (docs/protocol.md#after-the-accept, #wire-contract item 2,
//!    checklist item 2). Its echo yields `[Ack, Admitted]`; only then may the caller add the
//!    tunnel to the idle pool. Misses before admission count like any miss.
//! 2. `Idle`: RPING / echo cycles.
//! 3. `Claimed` ([`Keepalive::claim`]): the tunnel carries HTTP now; nothing is ever sent again
//!    (docs/protocol.md#wire-contract item 4) and no event is produced.
//! 4. `Dead`: a [`CloseReason`] was reported in [`Event::Dead`]; no further events.
//!
//! # Timing (all ms; `I` = interval, `R` = reply timeout, `J` = jitter)
//!
//! - `R = max(I / 2, 500)`. The built-in truncates `I/2` to whole seconds (1 s → 0 s,
//!   docs/protocol.md#rping-keepalive); we do not.
//! - Only one RPING is in flight at a time.
//! - Each RPING has a *due* time. It is sent by the first [`Keepalive::on_timer`] call at or after
//!   it. Its reply deadline is `due + R`, anchored on the due time rather than the (up to one
//!   tick later) send time, so that tick lateness does not accumulate from one ping to the next.
//!   Exception, for a stalled clock: the deadline is never earlier than `send + R/2`.
//! - When an RPING is sent, the jitter for the *following* gap is drawn: `J = jitter(I*15/100)`
//!   (values above the maximum are clamped; docs/protocol.md#rping-keepalive: jitter only lengthens).
//! - After an echo at time `t`: next RPING due at `t + I + J`.
//! - After a missed reply deadline `d`: next RPING due at `d + I + J` (anchored on `d`, not on
//!   the tick that noticed it).
//! - After a garbage reply at time `t`: next RPING due at `t + I + J`.
//!
//! Detection bound: a silent initiator whose first unanswered RPING was due at `s` is declared
//! dead at the first tick at or after `s + T·R + Σ(I + J_k)` over the `T−1` gaps (`T` =
//! failure threshold). With `R = I/2` for `I >= 1000` this is the issue's
//! `(T−1)·(I+J) + T·I/2` after the first unanswered ping, plus at most one clock tick.
//!
//! # Reading echoes
//!
//! Bytes read from an unclaimed tunnel are consumed entirely by [`Keepalive::on_data`] and split
//! into *units*, independently of how they were split into reads (nothing but a 0..=4 byte
//! match position is kept, so at most 4 bytes are "buffered"):
//!
//! - an *echo*: exactly `RPING` (possibly split across reads: `R`, `PI`, `NG`);
//! - a *garbage unit*: starts at the first byte that breaks the `RPING` pattern and is counted
//!   at once (no waiting for 5 bytes). It then swallows up to 5 bytes in total, but ends before
//!   any `R`, so an echo right after garbage is still recognised. E.g. `HELLO` is one unit,
//!   `RPINX` is one unit, `XRPING` is one garbage unit and one echo, 10 bytes of `x` are 2 units.
//!
//! What a unit does:
//!
//! | unit | RPING in flight | none in flight, an earlier RPING unechoed | nothing unechoed |
//! |---|---|---|---|
//! | echo | `Ack`, misses reset to 0 | late echo: no event, no miss (it was already counted) | unsolicited: no miss, counted in one `Unsolicited` event per read |
//! | garbage | one miss; the RPING counts as answered (the built-in counts it twice, docs/protocol.md#rping-keepalive) | one miss | one miss |
//!
//! An echo processed before `on_timer` has counted the reply deadline is an ack, even if
//! `now_ms` is already past the deadline (the deadline is enforced by `on_timer` only).
//!
//! # Misses
//!
//! Misses below `failure_threshold` produce [`Event::Miss`] (the caller logs `idle_ping_miss`,
//! docs/protocol.md#lifecycle-log). The miss that reaches the threshold produces only
//! `Dead(IdlePingTimeout)`, *not* a `Miss` event (the caller logs `idle_ping_timeout`;
//! [`Keepalive::misses`] then equals the threshold for its `miss_count`).

/// The keepalive payload: 5 ASCII bytes, no framing, in both directions (docs/protocol.md#rping-keepalive).
pub const RPING: &[u8; 5] = b"RPING";

/// Smallest accepted ping interval (ms); smaller values are raised to it (docs/protocol.md#rping-keepalive:
/// below 1 s the built-in breaks).
pub const MIN_INTERVAL_MS: u64 = 1_000;

/// Smallest reply timeout (ms): `R = max(interval / 2, MIN_REPLY_TIMEOUT_MS)`.
pub const MIN_REPLY_TIMEOUT_MS: u64 = 500;

/// Jitter added to each gap between RPINGs: `0..=interval * JITTER_PERCENT / 100` ms
/// (docs/protocol.md#rping-keepalive).
pub const JITTER_PERCENT: u64 = 15;

/// Keepalive configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// Gap between an RPING's answer (or miss) and the next RPING, before jitter (ms).
    /// Must be `>= 1000` ([`MIN_INTERVAL_MS`]); smaller values are raised to 1000.
    pub interval_ms: u64,
    /// Consecutive misses that kill the tunnel (`ping_failure_threshold`, default 3). Must be
    /// `>= 1`; 0 is treated as 1.
    pub failure_threshold: u32,
    /// Delay between writing the 200/101 response and the first RPING (ms), e.g. 50. It must
    /// make the RPING a separate write (docs/protocol.md#after-the-accept); the first RPING goes out at the first
    /// tick at or after it.
    pub first_ping_delay_ms: u64,
}

impl KeepaliveSettings {
    /// The settings actually used: interval raised to [`MIN_INTERVAL_MS`], threshold to 1.
    pub fn normalized(self) -> Self {
        KeepaliveSettings {
            interval_ms: self.interval_ms.max(MIN_INTERVAL_MS),
            failure_threshold: self.failure_threshold.max(1),
            first_ping_delay_ms: self.first_ping_delay_ms,
        }
    }

    /// Reply timeout `R = max(interval / 2, 500)` ms, on the normalized settings.
    pub fn reply_timeout_ms(&self) -> u64 {
        (self.normalized().interval_ms / 2).max(MIN_REPLY_TIMEOUT_MS)
    }

    /// Largest jitter `interval * 15 / 100` ms, on the normalized settings.
    pub fn max_jitter_ms(&self) -> u64 {
        let i = u128::from(self.normalized().interval_ms);
        u64::try_from(i * u128::from(JITTER_PERCENT) / 100).unwrap_or(u64::MAX)
    }

    /// Worst-case time from a silent initiator's first unanswered RPING to its death (ms), not
    /// counting clock-tick lateness: `(T−1)·(I + max_jitter) + T·R` (saturating).
    pub fn worst_case_detection_ms(&self) -> u64 {
        let n = self.normalized();
        let t = u64::from(n.failure_threshold);
        let gap = n.interval_ms.saturating_add(self.max_jitter_ms());
        (t - 1)
            .saturating_mul(gap)
            .saturating_add(t.saturating_mul(self.reply_timeout_ms()))
    }
}

/// Why an unclaimed tunnel died: one of the `Idle*` reasons of the shared vocabulary.
pub use super::close::CloseReason;

/// What the caller must do or log, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Write [`RPING`] to the tunnel now, as its own write (log `idle_ping_sent`).
    SendPing,
    /// The in-flight RPING was echoed; `rtt_ms` = now − send time (log `idle_ping_ack`).
    Ack {
        /// Round-trip time in ms, measured from the `on_timer` call that sent the RPING.
        rtt_ms: u64,
    },
    /// First echo: the tunnel may now join the idle pool (always right after an `Ack`).
    Admitted,
    /// A miss below the threshold; `count` = consecutive misses so far (log `idle_ping_miss`).
    Miss {
        /// Consecutive misses, `1..failure_threshold`.
        count: u32,
    },
    /// The tunnel is dead: close it and log `tunnel_closed` with this reason. Last event ever.
    Dead(CloseReason),
    /// `count` RPINGs arrived with none of ours unechoed (ignored; the caller counts them in
    /// `unsolicited_rping`). At most one per [`Keepalive::on_data`] call, before its other events.
    Unsolicited {
        /// RPINGs in this read that answered nothing.
        count: u64,
    },
}

/// Where a tunnel is in its keepalive life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Handshake answered; waiting for the first echo before joining the idle pool.
    AwaitingAdmission,
    /// In the idle pool, pinged.
    Idle,
    /// Carries HTTP; never pinged again.
    Claimed,
    /// Reported dead.
    Dead,
}

/// An RPING that was sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    sent_at_ms: u64,
    reply_deadline_ms: u64,
}

/// The keepalive state of one tunnel. Cheap to clone; all methods are total (no panics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    settings: KeepaliveSettings,
    phase: Phase,
    admitted: bool,
    /// Due time of the next RPING, meaningful while none is in flight (ms).
    next_send_ms: u64,
    in_flight: Option<InFlight>,
    /// Jitter drawn at the last send, used for the gap after its answer or miss (ms).
    next_jitter_ms: u64,
    misses: u32,
    /// RPINGs sent and not yet echoed (late echoes included); saturating.
    unechoed: u32,
    /// Bytes of `RPING` matched so far (0..=4).
    matched: u8,
    /// Bytes the current garbage unit may still swallow (0..=4).
    garbage_left: u8,
    last_rtt_ms: Option<u64>,
    last_ack_ms: Option<u64>,
}

impl Keepalive {
    /// A tunnel whose handshake response was just written at `now_ms`. Phase
    /// `AwaitingAdmission`; the first RPING is due at `now_ms + first_ping_delay_ms`.
    /// `settings` are [normalized](KeepaliveSettings::normalized).
    pub fn new(settings: KeepaliveSettings, now_ms: u64) -> Self {
        let settings = settings.normalized();
        Keepalive {
            settings,
            phase: Phase::AwaitingAdmission,
            admitted: false,
            next_send_ms: now_ms.saturating_add(settings.first_ping_delay_ms),
            in_flight: None,
            next_jitter_ms: 0,
            misses: 0,
            unechoed: 0,
            matched: 0,
            garbage_left: 0,
            last_rtt_ms: None,
            last_ack_ms: None,
        }
    }

    /// The (normalized) settings in use.
    pub fn settings(&self) -> KeepaliveSettings {
        self.settings
    }

    /// The earliest time (ms) at which [`on_timer`](Self::on_timer) has work: the in-flight
    /// RPING's reply deadline, else the next RPING's due time. `None` once claimed or dead.
    /// `on_timer(now)` returns events exactly when `now >= next_deadline()`.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.is_live() {
            return None;
        }
        Some(match self.in_flight {
            Some(p) => p.reply_deadline_ms,
            None => self.next_send_ms,
        })
    }

    /// Runs every deadline that is due at `now_ms`: a passed reply deadline counts a miss, a
    /// due RPING yields [`Event::SendPing`]. `jitter(max)` must return a value in `0..=max`
    /// (larger values are clamped); it is called once per RPING sent. Returns nothing when
    /// claimed, dead or not due.
    pub fn on_timer(&mut self, now_ms: u64, jitter: &mut dyn FnMut(u64) -> u64) -> Vec<Event> {
        let mut events = Vec::new();
        // At most: miss, send (whose deadline is then in the future). The cap keeps the loop
        // finite whatever happens; leftover work would be picked up by the next tick.
        for _ in 0..4 {
            if !self.is_live() {
                break;
            }
            match self.in_flight {
                Some(p) if now_ms >= p.reply_deadline_ms => {
                    self.in_flight = None;
                    self.next_send_ms = p.reply_deadline_ms.saturating_add(self.gap_ms());
                    self.count_miss(&mut events);
                }
                Some(_) => break,
                None if now_ms >= self.next_send_ms => {
                    let r = self.settings.reply_timeout_ms();
                    let deadline = self
                        .next_send_ms
                        .saturating_add(r)
                        .max(now_ms.saturating_add(r / 2));
                    self.in_flight = Some(InFlight {
                        sent_at_ms: now_ms,
                        reply_deadline_ms: deadline,
                    });
                    self.unechoed = self.unechoed.saturating_add(1);
                    let max = self.settings.max_jitter_ms();
                    self.next_jitter_ms = jitter(max).min(max);
                    events.push(Event::SendPing);
                }
                None => break,
            }
        }
        events
    }

    /// Consumes bytes read from an unclaimed tunnel at `now_ms` (see the module docs for how
    /// echoes and garbage are told apart). All bytes are consumed; at most a 4-byte partial
    /// echo is remembered. Bytes after a `Dead` event, or after a claim, are ignored.
    pub fn on_data(&mut self, data: &[u8], now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut unsolicited = 0u64;
        for &b in data {
            if !self.is_live() {
                break;
            }
            if self.garbage_left > 0 {
                if b != RPING[0] {
                    self.garbage_left -= 1;
                    continue;
                }
                self.garbage_left = 0;
            }
            let m = usize::from(self.matched);
            if RPING.get(m) == Some(&b) {
                self.matched += 1;
                if usize::from(self.matched) == RPING.len() {
                    self.matched = 0;
                    if self.unechoed == 0 {
                        unsolicited += 1;
                    }
                    self.on_echo(now_ms, &mut events);
                }
            } else if b == RPING[0] {
                // `RPING[..m]` (m >= 1) was garbage; this `R` may start an echo.
                self.matched = 1;
                self.on_garbage(now_ms, &mut events);
            } else {
                // `RPING[..m]` plus this byte is garbage; it may swallow up to 5 bytes in all.
                let unit_len = m + 1;
                self.matched = 0;
                self.garbage_left = u8::try_from(RPING.len().saturating_sub(unit_len)).unwrap_or(0);
                self.on_garbage(now_ms, &mut events);
            }
        }
        if unsolicited > 0 {
            // First, so that `Dead` stays the last event.
            events.insert(0, Event::Unsolicited { count: unsolicited });
        }
        events
    }

    /// The initiator closed the connection: `[Dead(IdlePeerClose)]`, or nothing if already
    /// claimed or dead.
    pub fn on_peer_closed(&mut self) -> Vec<Event> {
        self.kill(CloseReason::IdlePeerClose)
    }

    /// Reading the idle tunnel failed: `[Dead(IdleReadError)]`, or nothing if already claimed
    /// or dead.
    pub fn on_read_error(&mut self) -> Vec<Event> {
        self.kill(CloseReason::IdleReadError)
    }

    /// Writing an RPING failed (other than "would block"): `[Dead(IdlePingWriteFailure)]`, or
    /// nothing if already claimed or dead.
    pub fn on_write_failure(&mut self) -> Vec<Event> {
        self.kill(CloseReason::IdlePingWriteFailure)
    }

    /// Stops pinging forever (the tunnel now carries HTTP) and returns the number of RPINGs
    /// sent but not yet echoed. The initiator may still echo them before its HTTP bytes, so the
    /// relay strips that many leading echoes (`relay::EchoStripper::resume(claim(),
    /// partial_echo_len())`). The count may be too high (pings that were never echoed), which
    /// is harmless; it is never too low. A dead tunnel stays `Dead`. Calling it again returns
    /// the same count.
    pub fn claim(&mut self) -> u32 {
        if self.phase != Phase::Dead {
            self.phase = Phase::Claimed;
        }
        self.in_flight = None;
        self.unechoed
    }

    /// Length (0..=4) of the partial echo (`R`, `RP`, ...) consumed by `on_data` and not yet
    /// completed. After a claim, pass it to `relay::EchoStripper::resume` so that the rest of
    /// the echo is stripped, or these bytes forwarded if it was not an echo.
    pub fn partial_echo_len(&self) -> usize {
        usize::from(self.matched)
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True once the first echo arrived (`Admitted` was reported); stays true after a claim.
    pub fn is_admitted(&self) -> bool {
        self.admitted
    }

    /// Consecutive misses (reset to 0 by an echo of the in-flight RPING).
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// Round-trip time of the last acknowledged RPING (ms).
    pub fn last_rtt_ms(&self) -> Option<u64> {
        self.last_rtt_ms
    }

    /// Time of the last acknowledged RPING's echo (ms, caller's clock).
    pub fn last_ack_ms(&self) -> Option<u64> {
        self.last_ack_ms
    }

    /// True while an RPING is waiting for its echo (never more than one).
    pub fn ping_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// RPINGs sent and not yet echoed (what [`claim`](Self::claim) would return).
    pub fn unechoed(&self) -> u32 {
        self.unechoed
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::AwaitingAdmission | Phase::Idle)
    }

    fn gap_ms(&self) -> u64 {
        self.settings
            .interval_ms
            .saturating_add(self.next_jitter_ms)
    }

    fn kill(&mut self, reason: CloseReason) -> Vec<Event> {
        let mut events = Vec::new();
        if self.is_live() {
            self.die(reason, &mut events);
        }
        events
    }

    fn die(&mut self, reason: CloseReason, events: &mut Vec<Event>) {
        self.phase = Phase::Dead;
        self.in_flight = None;
        events.push(Event::Dead(reason));
    }

    fn count_miss(&mut self, events: &mut Vec<Event>) {
        self.misses = self.misses.saturating_add(1);
        if self.misses >= self.settings.failure_threshold {
            self.die(CloseReason::IdlePingTimeout, events);
        } else {
            events.push(Event::Miss { count: self.misses });
        }
    }

    fn on_echo(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        self.unechoed = self.unechoed.saturating_sub(1);
        if let Some(p) = self.in_flight.take() {
            let rtt = now_ms.saturating_sub(p.sent_at_ms);
            self.misses = 0;
            self.last_rtt_ms = Some(rtt);
            self.last_ack_ms = Some(now_ms);
            self.next_send_ms = now_ms.saturating_add(self.gap_ms());
            events.push(Event::Ack { rtt_ms: rtt });
            if !self.admitted {
                self.admitted = true;
                self.phase = Phase::Idle;
                events.push(Event::Admitted);
            }
        }
        // Otherwise: a late echo of an RPING already counted as missed or answered by garbage,
        // or an unsolicited RPING (nothing unechoed). Both are ignored: an RPING is never harmful,
        // so a flood of them must not kill a healthy tunnel (the built-in even takes any RPING
        // as an answer, docs/protocol.md#rping-keepalive), and it cannot keep a dead one alive either (only
        // an echo of an RPING in flight is an `Ack`). Consumed byte by byte: no memory grows.
    }

    fn on_garbage(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        if self.in_flight.take().is_some() {
            // The garbage answers the in-flight RPING: one miss, not two.
            self.next_send_ms = now_ms.saturating_add(self.gap_ms());
        }
        self.count_miss(events);
    }
}

#[cfg(test)]
mod tests;
