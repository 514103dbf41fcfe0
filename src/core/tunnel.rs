//! The life of one tunnel connection as a pure state machine (docs/architecture.md#the-path-of-a-tunnel):
//!
//! ```text
//!   Handshake ──accept──► Keepalive (unadmitted ─first echo─► idle, registered) ──claim──► Claimed
//!       │                     │                                                          │
//!       └─ reject / timeout ──┴──────────── close (reason) ─────────────────────────────┴──► Done
//! ```
//!
//! It owns the phase, the times that matter (start, registration, claim) and the close reason,
//! and decides what each input means; the handshake adapter carries out the effects (writes,
//! closes, tracker, stats, logs). The claimed phase runs a [`Session`] supplied by the adapter
//! (the HTTP/2 multiplexer or a raw relay), so this file needs neither Envoy nor the relay.
//! No clock and no I/O: times are parameters, results are returned values.

use super::close::CloseReason;
use super::handshake::{self, HandshakeRequest, HandshakeRules, Outcome, Rejection};
use super::keepalive::{Event, Keepalive};
use super::relay::EchoStripper;

/// Bytes of handshake request kept beyond the parser's own head limit (so that the parser, not a
/// silent cut, decides about an oversized head).
const HANDSHAKE_SLACK_BYTES: usize = 4096;

/// Most handshake bytes a connection keeps under `rules` (later ones are dropped).
fn handshake_cap(rules: &HandshakeRules) -> usize {
    rules.max_header_bytes + HANDSHAKE_SLACK_BYTES
}

/// What a claimed tunnel runs, supplied by the adapter.
pub trait Session {
    /// What the session asks the adapter to do.
    type Action;
    /// Bytes from the initiator (owned: a session may keep them without a copy).
    fn tunnel_data(&mut self, data: Vec<u8>) -> Vec<Self::Action>;
    /// The worker clock reached [`Session::next_deadline`].
    fn on_timer(&mut self, now_ms: u64) -> Vec<Self::Action>;
    /// When the session next needs the clock.
    fn next_deadline(&self) -> Option<u64>;
}

/// The session is boxed: most tunnels are idle, and an idle one then carries a pointer instead
/// of the session's state (docs/architecture.md#memory-per-idle-tunnel).
enum Phase<S> {
    Handshake { buf: Vec<u8> },
    Keepalive(Keepalive),
    Claimed(Box<S>),
    Done,
}

/// One tunnel connection's phase and the facts the adapter needs about it.
pub struct Tunnel<S> {
    phase: Phase<S>,
    started_ms: u64,
    handshake_timeout_ms: u64,
    registered_at_ms: Option<u64>,
    claimed_at_ms: Option<u64>,
    close_reason: Option<CloseReason>,
}

/// What bytes read from the connection mean.
#[derive(Debug)]
pub enum Read<A> {
    /// Nothing to do (more handshake bytes needed, or the tunnel is done).
    Nothing,
    /// The stream ended in the middle of the handshake: close without an answer.
    HandshakeIncomplete,
    /// Answer with this rejection, then close (see [`Tunnel::rejected`]).
    Reject(Rejection),
    /// A complete, valid handshake: the adapter runs its remaining checks, then calls
    /// [`Tunnel::accepted`] (or [`Tunnel::rejected`]).
    Accept(HandshakeRequest),
    /// Keepalive events, in order.
    Keepalive(Vec<Event>),
    /// Session actions; with `end_stream` the initiator closed (reason `remote_close`).
    Relay { actions: Vec<A>, end_stream: bool },
}

/// What the worker clock means for the tunnel.
#[derive(Debug)]
pub enum Timer<A> {
    /// Nothing due.
    Nothing,
    /// The handshake did not complete in time: close without an answer (counter `timeout`).
    HandshakeTimeout,
    /// Keepalive events, in order.
    Keepalive(Vec<Event>),
    /// Session actions.
    Session(Vec<A>),
}

/// Outcome of a claim by an egress connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First claim: the keepalive stopped and the session started.
    Started,
    /// Already claimed: the egress connection joins the running session
    /// ([`Tunnel::session_mut`]).
    Join,
    /// Not claimable (handshake, or done): the egress connection must be closed.
    Refused,
}

/// What a drain means for the tunnel.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Idle, not yet admitted: close it.
    Unadmitted,
    /// Idle and registered at this time (ms): take it out of the tracker if still idle, then close.
    Registered(u64),
    /// Claimed, or not a tunnel yet: nothing to do.
    Keep,
}

/// A tunnel that just closed.
pub struct Closed<S> {
    /// Its close reason (the one recorded earlier, else the default for its phase).
    pub reason: CloseReason,
    /// The session, if it was claimed (the adapter closes its egress connections).
    pub session: Option<S>,
    /// When it was registered (ms), if it was.
    pub registered_at_ms: Option<u64>,
    /// When it was claimed (ms), if it was.
    pub claimed_at_ms: Option<u64>,
}

impl<S> Closed<S> {
    /// Lifetime to record: since the claim for a tunnel that was in use, else since registration.
    pub fn lifetime_ms(&self, was_idle: bool, now_ms: u64) -> u64 {
        match (was_idle, self.claimed_at_ms, self.registered_at_ms) {
            (false, Some(c), _) => now_ms.saturating_sub(c),
            (_, _, Some(r)) => now_ms.saturating_sub(r),
            _ => 0,
        }
    }

    /// `in_use` if it had been claimed, else `idle` (the lifecycle log's `socket_state`).
    pub fn was_claimed(&self) -> bool {
        self.claimed_at_ms.is_some()
    }
}

impl<S: Session> Tunnel<S> {
    /// A connection accepted at `now_ms` that must complete its handshake within
    /// `handshake_timeout_ms`.
    pub fn new(now_ms: u64, handshake_timeout_ms: u64) -> Tunnel<S> {
        Tunnel {
            phase: Phase::Handshake { buf: Vec::new() },
            started_ms: now_ms,
            handshake_timeout_ms,
            registered_at_ms: None,
            claimed_at_ms: None,
            close_reason: None,
        }
    }

    /// The handshake deadline (ms).
    pub fn handshake_deadline(&self) -> u64 {
        self.started_ms + self.handshake_timeout_ms
    }

    /// Bytes read from the connection at `now_ms`, parsed with `rules` during the handshake.
    pub fn on_read(&mut self, data: impl Into<Vec<u8>>, end_stream: bool, now_ms: u64, rules: &HandshakeRules) -> Read<S::Action> {
        let data: Vec<u8> = data.into();
        match &mut self.phase {
            Phase::Handshake { buf } => {
                let room = handshake_cap(rules).saturating_sub(buf.len());
                buf.extend_from_slice(&data[..data.len().min(room)]);
                match handshake::evaluate(buf, rules) {
                    Outcome::NeedMore if end_stream => Read::HandshakeIncomplete,
                    Outcome::NeedMore => Read::Nothing,
                    Outcome::Reject(r) => Read::Reject(r),
                    Outcome::Accept(req) => Read::Accept(req),
                }
            }
            Phase::Keepalive(ka) => {
                let mut ev = ka.on_data(&data, now_ms);
                if end_stream {
                    ev.extend(ka.on_peer_closed());
                }
                Read::Keepalive(ev)
            }
            Phase::Claimed(session) => {
                if end_stream {
                    self.close_reason = Some(CloseReason::RemoteClose);
                }
                Read::Relay { actions: session.tunnel_data(data), end_stream }
            }
            Phase::Done => Read::Nothing,
        }
    }

    /// The handshake was answered with a rejection: nothing more happens on this connection.
    pub fn rejected(&mut self) {
        self.phase = Phase::Done;
    }

    /// The connection hands its accepted handshake to another owner (a spare tunnel moving to a
    /// socket loop): returns every byte read so far and ends the phases (the close that follows
    /// is silent). None, changing nothing, outside the handshake phase or if the handshake
    /// buffer reached its cap (bytes may have been dropped).
    pub fn hand_over(&mut self, rules: &HandshakeRules) -> Option<Vec<u8>> {
        match &mut self.phase {
            Phase::Handshake { buf } if buf.len() < handshake_cap(rules) => {
                let bytes = std::mem::take(buf);
                self.phase = Phase::Done;
                Some(bytes)
            }
            _ => None,
        }
    }

    /// The handshake was accepted: the keepalive `ka` starts (its first RPING admits the tunnel).
    pub fn accepted(&mut self, ka: Keepalive) {
        self.phase = Phase::Keepalive(ka);
    }

    /// The first echo arrived and the tunnel was registered at `now_ms`.
    pub fn registered(&mut self, now_ms: u64) {
        self.registered_at_ms = Some(now_ms);
    }

    /// The worker clock at `now_ms`; `jitter(max)` draws the RPING jitter.
    pub fn on_timer(&mut self, now_ms: u64, jitter: &mut dyn FnMut(u64) -> u64) -> Timer<S::Action> {
        match &mut self.phase {
            Phase::Handshake { .. } => {
                self.phase = Phase::Done;
                Timer::HandshakeTimeout
            }
            Phase::Keepalive(ka) => Timer::Keepalive(ka.on_timer(now_ms, jitter)),
            Phase::Claimed(session) => Timer::Session(session.on_timer(now_ms)),
            Phase::Done => Timer::Nothing,
        }
    }

    /// When the tunnel next needs the clock (keepalive or session); None otherwise.
    pub fn next_deadline(&self) -> Option<u64> {
        match &self.phase {
            Phase::Keepalive(ka) => ka.next_deadline(),
            Phase::Claimed(session) => session.next_deadline(),
            _ => None,
        }
    }

    /// An egress connection claims the tunnel at `now_ms`. On the first claim the keepalive
    /// stops and `start(stripper)` builds the session; the stripper removes RPING echoes still in
    /// flight (resuming a half-read one).
    pub fn claim(&mut self, now_ms: u64, start: impl FnOnce(EchoStripper) -> S) -> Claim {
        match &mut self.phase {
            Phase::Keepalive(ka) => {
                let partial = ka.partial_echo_len();
                let in_flight = ka.claim();
                self.phase = Phase::Claimed(Box::new(start(EchoStripper::resume(in_flight, partial))));
                self.claimed_at_ms = Some(now_ms);
                Claim::Started
            }
            Phase::Claimed(_) => Claim::Join,
            _ => Claim::Refused,
        }
    }

    /// The running session, once claimed.
    pub fn session_mut(&mut self) -> Option<&mut S> {
        match &mut self.phase {
            Phase::Claimed(session) => Some(session),
            _ => None,
        }
    }

    /// What a drain means now.
    pub fn drain(&self) -> Drain {
        match (&self.phase, self.registered_at_ms) {
            (Phase::Keepalive(_), None) => Drain::Unadmitted,
            (Phase::Keepalive(_), Some(at)) => Drain::Registered(at),
            _ => Drain::Keep,
        }
    }

    /// Records why the tunnel is being closed (replacing an earlier reason).
    pub fn set_close_reason(&mut self, reason: CloseReason) {
        self.close_reason = Some(reason);
    }

    /// Records why the tunnel is being closed unless a reason is already recorded.
    pub fn note_close_reason(&mut self, reason: CloseReason) {
        self.close_reason.get_or_insert(reason);
    }

    /// When it was claimed (ms), if it was.
    pub fn claimed_at_ms(&self) -> Option<u64> {
        self.claimed_at_ms
    }

    /// The connection closed (`remote`: by the peer). Returns what the adapter must account for,
    /// once; None for a connection that never became a tunnel (or was already closed).
    pub fn closed(&mut self, remote: bool) -> Option<Closed<S>> {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let (default, session) = match phase {
            Phase::Done | Phase::Handshake { .. } => return None,
            Phase::Keepalive(_) => (if remote { CloseReason::IdlePeerClose } else { CloseReason::LocalClose }, None),
            Phase::Claimed(s) => (if remote { CloseReason::RemoteClose } else { CloseReason::LocalClose }, Some(*s)),
        };
        Some(Closed {
            reason: self.close_reason.unwrap_or(default),
            session,
            registered_at_ms: self.registered_at_ms,
            claimed_at_ms: self.claimed_at_ms,
        })
    }
}

#[cfg(test)]
mod tests;
