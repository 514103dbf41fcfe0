//! Adapter for the HTTP filter `reverse_tunnel_route`: the request path without a router,
//! cluster or internal listener. It is the terminal HTTP filter of an HTTP connection manager
//! and answers each request itself over one of the target node's tunnels:
//!
//! ```text
//!  client ─HCM─► reverse_tunnel_route ── header list / body chunks ──► tunnel's HTTP/2 session
//!         ◄── send_response_headers/data/trailers ◄── LocalFrames ────┘  (src/core/h2mux.rs)
//! ```
//!
//! Per request (one [`HttpStream`], on the worker that runs the stream):
//! 1. request headers: the target (node or cluster id, `target_header`, optionally prefixed by the
//!    tenant) is claimed in the tracker: a running HTTP/2 session of that node (any worker), else
//!    an idle tunnel, which then starts a session that stays for later requests. No tunnel: 503
//!    with a body that says so (`fallback_no_reverse_socket` +1);
//! 2. the request (headers, body within the stream's send window, trailers) goes to the tunnel's
//!    worker as [`Msg`]s; the response comes back as [`LocalFrame`]s and is sent downstream as it
//!    arrives; each body chunk sent is credited back to the tunnel stream unless the downstream is
//!    above its write high watermark (then the credit waits: the initiator's stream window closes,
//!    so a slow client holds at most one window per stream);
//! 3. the client going away cancels the tunnel stream (RST_STREAM CANCEL), the tunnel stays;
//!    the tunnel failing mid-response resets the downstream stream.
//!
//! Threads: every function here runs on the stream's worker. Messages from a tunnel on another
//! worker arrive through the stream's HTTP scheduler ([`on_scheduled`]); from a tunnel on the same
//! worker they are handled at once ([`deliver_local`]).

use super::endpoint::{Endpoint, Msg, Sched};
use super::worker::deliver;
use super::tunnel_session::LOCAL_INITIAL_WINDOW;
use crate::config::route::RouteConfig;
use crate::core::h2mux::frame::error;
use crate::core::h2mux::hpack::HeaderField;
use crate::core::h2mux::LocalFrame;
use super::envoy_api::EnvoyHttpFilter;
use crate::ffi::envoy_http::HttpFilter;
use crate::runtime::Runtime;
use crate::rt_log;
use std::cell::RefCell;
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Filter name accepted in `DynamicModuleFilter.filter_name`.
pub const ROUTE_FILTER_NAME: &str = "reverse_tunnel_route";

/// Ids of HTTP streams start here, above any Envoy connection id, so one id space names both.
const STREAM_ID_BASE: u64 = 1 << 62;
/// Response bytes a stream consumes before it credits its tunnel (bytes). Each credit is a
/// message to the tunnel, which is usually busy with the read that produced the response (so
/// the message costs a scheduler event, one more pass of the worker's event loop) or on a
/// socket loop (a wake-up); the session only sends a WINDOW_UPDATE past half a window anyway.
const CREDIT_BATCH: u64 = 64 * 1024;
// Held credit never stalls a stream: it stays far below the stream's window.
const _: () = assert!(CREDIT_BATCH * 4 <= LOCAL_INITIAL_WINDOW);
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(STREAM_ID_BASE);

/// True if `id` names an HTTP stream (not a connection).
pub fn is_stream_id(id: u64) -> bool {
    id >= STREAM_ID_BASE
}

/// Request headers that do not exist in HTTP/2 (RFC 9113 §8.2.2) and are not forwarded.
const HOP_BY_HOP: [&[u8]; 6] = [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"];

/// The filter config (one per HTTP filter chain entry). Created on the main thread.
pub struct RouteFilterConfig {
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    /// Decoded config.
    pub cfg: RouteConfig,
}

impl RouteFilterConfig {
    /// Decodes the config of filter `name`. Errors name the field.
    pub fn new(name: &str, config: &[u8]) -> Result<RouteFilterConfig, String> {
        if name != ROUTE_FILTER_NAME {
            return Err(format!("filter_name: unknown HTTP filter '{name}' (expected '{ROUTE_FILTER_NAME}')"));
        }
        let runtime = crate::runtime::current().ok_or_else(|| {
            format!("filter '{name}' needs the bootstrap extension 'upstream_socket_interface' of this module to be configured")
        })?;
        let cfg = RouteConfig::decode(config).map_err(|e| format!("{ROUTE_FILTER_NAME} config: {e}"))?;
        Ok(RouteFilterConfig { runtime, cfg })
    }
}

/// Where a request stands.
#[derive(Default)]
struct St {
    /// The tunnel serving the request (after a successful claim).
    tunnel: Option<Arc<Endpoint>>,
    /// Request body bytes sent to the tunnel so far.
    sent: u64,
    /// Absolute request-body offset the tunnel allows (sent + window).
    allowed: u64,
    /// Request body waiting for window, as taken from Envoy.
    pending: BodyQueue,
    /// The downstream request ended (body end or trailers seen).
    req_end: bool,
    /// Request trailers waiting behind `pending`.
    trailers: Option<Vec<HeaderField>>,
    /// END_STREAM (or trailers) went to the tunnel.
    req_done: bool,
    /// Final response headers were sent downstream.
    resp_started: bool,
    /// The response ended (or the stream was reset / answered locally).
    resp_done: bool,
    /// The downstream is above its write high watermark: credits wait.
    above_watermark: bool,
    /// Response bytes sent downstream and not credited yet.
    owed_credit: u64,
    /// Waiting for a tunnel (`claim_timeout`): the tracker key, the deadline (ms of
    /// [`crate::runtime::now_ms`]) and the request header list to open with.
    waiting: Option<(String, u64, Vec<HeaderField>)>,
    /// The request is gRPC (`content-type: application/grpc...`): local replies are gRPC
    /// trailers-only responses.
    grpc: bool,
    /// Envoy holds request body for us (we answered `StopIterationAndWatermark`).
    held_in_envoy: bool,
}

/// Request body chunks in arrival order, each kept as the buffer it was taken from Envoy into, so
/// that passing a chunk on to the tunnel copies nothing (only a chunk split at the window's edge
/// copies its tail).
#[derive(Default)]
struct BodyQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks`.
    len: usize,
}

impl BodyQueue {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, chunk: Vec<u8>) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Removes the first `n` bytes (at most [`BodyQueue::len`]) as whole chunks, the last one
    /// split if it reaches past `n`.
    fn take(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut n = n.min(self.len);
        self.len -= n;
        let mut out = Vec::new();
        while n > 0 {
            let Some(mut front) = self.chunks.pop_front() else { break };
            if front.len() > n {
                let tail = front.split_off(n);
                self.chunks.push_front(tail);
            }
            n -= front.len();
            out.push(front);
        }
        out
    }
}

/// Most request body bytes held while a request waits for a tunnel.
const MAX_WAITING_BYTES: usize = 1 << 20;

/// Request body the filter takes out of Envoy beyond what the tunnel stream's window lets it send
/// now; above it, chunks stay in Envoy's buffer (which then stops reading from the client at its
/// high watermark) until the window opens.
const MAX_PENDING_BYTES: usize = 256 * 1024;

/// What `request_body` did with the chunk (the hook's status follows from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyTaken {
    /// Taken out of Envoy (`StopIterationNoBuffer`).
    Taken,
    /// Left for Envoy to buffer behind what it already holds (`StopIterationAndWatermark`): it is
    /// taken later, as the tunnel stream's window opens.
    LeftInEnvoy,
}

/// One request of the request path. Lives on its worker (`Rc`); its cross-thread face is `ep`.
pub struct HttpStream {
    filter: RefCell<Option<Rc<dyn EnvoyHttpFilter>>>,
    /// The stream's mailbox (id above [`STREAM_ID_BASE`]).
    pub ep: Arc<Endpoint>,
    runtime: Arc<Runtime>,
    st: RefCell<St>,
}

thread_local! {
    /// This worker's live HTTP streams, for same-worker delivery.
    static STREAMS: RefCell<HashMap<u64, Rc<HttpStream>>> = RefCell::new(HashMap::default());
    /// This worker's streams waiting for a tunnel (retried on every clock tick).
    static WAITING: RefCell<Vec<Rc<HttpStream>>> = const { RefCell::new(Vec::new()) };
}

/// `on_http_filter_new`: creates the stream object and its scheduler.
pub fn on_new(_cfg: &RouteFilterConfig, f: HttpFilter, runtime: Arc<Runtime>) -> Rc<HttpStream> {
    new_stream(Rc::new(f), f.worker_index(), Sched::Http(f.scheduler_new()), runtime)
}

/// A stream over any Envoy side (`filter`) on `worker`, woken by `sched`; registered for
/// same-worker delivery.
pub fn new_stream(filter: Rc<dyn EnvoyHttpFilter>, worker: u32, sched: Sched, runtime: Arc<Runtime>) -> Rc<HttpStream> {
    let id = NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed);
    let ep = Endpoint::with_sched(id, worker, sched);
    let s = Rc::new(HttpStream { filter: RefCell::new(Some(filter)), ep, runtime, st: RefCell::new(St::default()) });
    STREAMS.with(|m| m.borrow_mut().insert(id, s.clone()));
    s
}

/// Header lists as Envoy callbacks take them.
fn as_pairs(fields: &[HeaderField]) -> Vec<(&[u8], &[u8])> {
    fields.iter().map(|f| (f.name.as_slice(), f.value.as_slice())).collect()
}

fn header<'a>(headers: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_slice())
}

/// Turns Envoy's request header map into an HTTP/2 header list: pseudo-headers first (adding
/// `:scheme` / `:authority` when an HTTP/1.1 request lacks them), connection-specific headers
/// dropped, `te` kept only as `trailers`.
pub fn to_h2_request(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<HeaderField> {
    let mut pseudo = Vec::with_capacity(4);
    let mut rest = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let name = k.to_ascii_lowercase();
        if name.starts_with(b":") {
            pseudo.push(HeaderField::new(&name, v));
        } else if HOP_BY_HOP.contains(&name.as_slice()) || (name == b"te" && !v.eq_ignore_ascii_case(b"trailers")) {
            continue;
        } else {
            rest.push(HeaderField::new(&name, v));
        }
    }
    if !pseudo.iter().any(|f| f.name == b":scheme") {
        pseudo.push(HeaderField::new(b":scheme", b"http"));
    }
    if !pseudo.iter().any(|f| f.name == b":authority") {
        if let Some(h) = header(headers, "host") {
            pseudo.push(HeaderField::new(b":authority", h));
        }
    }
    pseudo.extend(rest);
    pseudo
}

impl HttpStream {
    fn filter(&self) -> Option<Rc<dyn EnvoyHttpFilter>> {
        self.filter.borrow().clone()
    }

    /// Answers the request itself: `status` with a text `body`, or for a gRPC request a
    /// trailers-only response with `grpc-status` 14 (UNAVAILABLE, what gRPC maps HTTP 502/503 to)
    /// and the body as `grpc-message` (Envoy's own local reply would say `grpc-status: 0`).
    fn local_reply(&self, status: u32, body: &str, details: &str) {
        let grpc = {
            let mut st = self.st.borrow_mut();
            st.resp_done = true;
            st.grpc
        };
        let Some(f) = self.filter() else { return };
        if grpc {
            let message = grpc_message(body.trim_end());
            let headers: [(&[u8], &[u8]); 4] = [
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"14"),
                (b"grpc-message", message.as_bytes()),
            ];
            f.send_response_headers(&headers, true);
        } else {
            f.send_local_reply(status, &[(b"content-type", b"text/plain")], body.as_bytes(), details);
        }
    }

    fn to_tunnel(&self, msg: Msg) {
        let t = self.st.borrow().tunnel.clone();
        if let Some(t) = t {
            if !deliver(&t, self.ep.worker, msg) {
                self.tunnel_failed(error::INTERNAL_ERROR);
            }
        }
    }

    /// Tells the tunnel that `n` response bytes were handed to Envoy (its window update).
    fn credit(&self, n: u64) {
        self.to_tunnel(Msg::LocalCredit { from: self.ep.conn_id, n: n.min(u64::from(u32::MAX)) as u32 });
    }

    /// Sends what the window allows of the pending body, then END_STREAM or trailers.
    fn flush_request(&self) {
        self.refill_from_envoy();
        let msg = {
            let mut st = self.st.borrow_mut();
            if st.tunnel.is_none() || st.req_done {
                return;
            }
            // Body still in Envoy's buffer counts as pending: no END_STREAM before it is sent.
            let held_in_envoy = st.held_in_envoy;
            let room = st.allowed.saturating_sub(st.sent) as usize;
            let n = room.min(st.pending.len());
            let all = n == st.pending.len() && !held_in_envoy;
            let end = st.req_end && all && st.trailers.is_none();
            if n == 0 && !end && !(all && st.req_end) {
                if (!st.pending.is_empty() || held_in_envoy) && room == 0 {
                    // Ask to be told when the window opens.
                    let from = self.ep.conn_id;
                    Some(vec![Msg::LocalData { from, bytes: Vec::new(), end: false, more: true }])
                } else {
                    None
                }
            } else {
                let mut chunks = st.pending.take(n);
                st.sent += n as u64;
                let trailers =
                    if st.req_end && st.pending.is_empty() && !held_in_envoy { st.trailers.take() } else { None };
                if end || trailers.is_some() {
                    st.req_done = true;
                }
                let from = self.ep.conn_id;
                let more = !st.pending.is_empty() || held_in_envoy;
                // One message per chunk (no copy to join them); only the last one may carry
                // END_STREAM or ask for the window.
                let last = chunks.pop().unwrap_or_default();
                let mut msgs: Vec<Msg> =
                    chunks.into_iter().map(|bytes| Msg::LocalData { from, bytes, end: false, more: false }).collect();
                if n > 0 || end {
                    msgs.push(Msg::LocalData { from, bytes: last, end, more });
                }
                msgs.extend(trailers.map(|fields| Msg::LocalTrailers { from, fields }));
                Some(msgs)
            }
        };
        for m in msg.into_iter().flatten() {
            self.to_tunnel(m);
        }
    }

    /// Sends this `request_body` hook's chunk to a tunnel of this worker straight from Envoy's
    /// buffer, without copying it into a message (`Connection::send_inline`). Only
    /// mid-request, with nothing of the request pending or held, the tunnel's mailbox quiet (so
    /// nothing is reordered) and the stream's window taking the whole chunk. Returns whether it
    /// went; if not, nothing changed.
    fn send_inline(&self, f: &Rc<dyn EnvoyHttpFilter>) -> bool {
        let (t, room) = {
            let st = self.st.borrow();
            let quiet = !st.req_done && st.pending.is_empty() && !st.held_in_envoy && st.waiting.is_none();
            match &st.tunnel {
                Some(t) if quiet && t.worker == self.ep.worker => (t.clone(), st.allowed.saturating_sub(st.sent)),
                _ => return false,
            }
        };
        let Some(conn) = super::worker::get(t.conn_id) else { return false };
        let Some(_busy) = t.begin_direct() else { return false };
        let from = self.ep.conn_id;
        let mut sent = 0usize;
        let taken = f.use_received_request_body(&mut |slices| {
            let n: usize = slices.iter().map(|s| s.len()).sum();
            if n as u64 > room || !conn.send_inline(from, slices) {
                return false;
            }
            sent = n;
            true
        });
        if taken {
            self.st.borrow_mut().sent += sent as u64;
        }
        taken
    }

    /// Moves request body that Envoy holds for us into `pending`, as far as the tunnel stream's
    /// window will take it now.
    fn refill_from_envoy(&self) {
        let want = {
            let st = self.st.borrow();
            if !st.held_in_envoy || st.tunnel.is_none() || st.req_done {
                return;
            }
            let room = st.allowed.saturating_sub(st.sent) as usize;
            room.saturating_sub(st.pending.len())
        };
        let Some(f) = self.filter() else { return };
        if want > 0 {
            let mut bytes = Vec::new();
            f.take_buffered_request_body(&mut bytes, want);
            self.st.borrow_mut().pending.push(bytes);
        }
        if f.buffered_request_body_len() == 0 {
            self.st.borrow_mut().held_in_envoy = false;
        }
    }

    /// The tunnel stream failed: a 502/503 if nothing was sent yet, else a downstream reset.
    fn tunnel_failed(&self, code: u32) {
        let (started, done) = {
            let mut st = self.st.borrow_mut();
            let r = (st.resp_started, st.resp_done);
            st.resp_done = true;
            st.req_done = true;
            st.tunnel = None;
            r
        };
        if done {
            return;
        }
        if started {
            if let Some(f) = self.filter() {
                f.reset("reverse_tunnel_stream_reset");
            }
        } else if code == error::REFUSED_STREAM {
            self.st.borrow_mut().resp_done = false;
            self.local_reply(503, "reverse tunnel refused the request (tunnel draining or busy); retry\n", "reverse_tunnel_refused");
        } else {
            self.st.borrow_mut().resp_done = false;
            self.local_reply(502, &format!("reverse tunnel stream failed (HTTP/2 error code {code})\n"), "reverse_tunnel_stream_reset");
        }
    }

    /// Response pieces from the tunnel (see the module docs).
    fn on_frames(&self, frames: Vec<LocalFrame>, allowed: u64) {
        {
            let mut st = self.st.borrow_mut();
            st.allowed = st.allowed.max(allowed);
        }
        let mut credit = 0u64;
        for f in frames {
            if self.st.borrow().resp_done {
                break;
            }
            let Some(filter) = self.filter() else { return };
            match f {
                LocalFrame::Headers { fields, end } => {
                    let started = self.st.borrow().resp_started;
                    if !started {
                        let informational = fields.iter().any(|h| h.name == b":status" && h.value.first() == Some(&b'1'));
                        if informational && !end {
                            continue;
                        }
                        {
                            let mut st = self.st.borrow_mut();
                            st.resp_started = true;
                            st.resp_done = end;
                        }
                        filter.send_response_headers(&as_pairs(&fields), end);
                    } else {
                        self.st.borrow_mut().resp_done = true;
                        filter.send_response_trailers(&as_pairs(&fields));
                    }
                }
                LocalFrame::Data { bytes, end } => {
                    credit += bytes.len() as u64;
                    if end {
                        self.st.borrow_mut().resp_done = true;
                    }
                    filter.send_response_data(&bytes, end);
                }
                LocalFrame::Reset { code } => {
                    let finished = self.st.borrow().resp_done;
                    if !finished {
                        self.tunnel_failed(code);
                    }
                }
            }
        }
        if credit > 0 {
            let send = {
                let mut st = self.st.borrow_mut();
                st.owed_credit += credit;
                // Credit goes in batches, far below the stream window (so data never stalls).
                if st.above_watermark || st.resp_done || st.owed_credit < CREDIT_BATCH {
                    None
                } else {
                    Some(std::mem::take(&mut st.owed_credit))
                }
            };
            if let Some(n) = send {
                self.credit(n);
            }
        }
        self.flush_request();
    }

    fn handle(&self, msg: Msg) {
        match msg {
            Msg::LocalFrames { frames, window } => self.on_frames(frames, window as u64),
            Msg::PeerClosed => self.tunnel_failed(error::INTERNAL_ERROR),
            Msg::Tick => super::worker::run_worker_tick(&self.runtime, self.ep.worker),
            _ => {}
        }
    }
}

/// Percent-encodes a `grpc-message` value (the gRPC HTTP/2 protocol: bytes outside printable
/// ASCII, and `%`, are sent as `%XX`).
pub fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Request headers: claim a tunnel and open the request on it, or answer 503.
pub fn on_request_headers(cfg: &RouteFilterConfig, s: &Rc<HttpStream>, end_of_stream: bool) {
    let _busy = s.ep.hold();
    let Some(f) = s.filter() else { return };
    let headers = f.request_headers();
    s.st.borrow_mut().grpc = header(&headers, "content-type").is_some_and(|v| v.starts_with(b"application/grpc"));
    let target = header(&headers, &cfg.cfg.target_header).map(|v| String::from_utf8_lossy(v).trim().to_string());
    let Some(target) = target.filter(|t| !t.is_empty() && t != "-") else {
        s.runtime.stats.no_tunnel();
        s.local_reply(
            503,
            &format!("no reverse tunnel target: request header '{}' is missing\n", cfg.cfg.target_header),
            "reverse_tunnel_no_target",
        );
        return;
    };
    let key = match &cfg.cfg.tenant_header {
        Some(h) => match header(&headers, h) {
            Some(t) if !t.is_empty() => format!("{}:{}", String::from_utf8_lossy(t).trim(), target),
            _ => target.clone(),
        },
        None => target.clone(),
    };
    let fields = to_h2_request(&headers);
    s.st.borrow_mut().req_end = end_of_stream;
    if try_open(s, &key, fields.clone()) {
        return;
    }
    if cfg.cfg.claim_timeout.is_zero() {
        give_up(s, &key);
        return;
    }
    let until = crate::runtime::now_ms() + cfg.cfg.claim_timeout.as_millis() as u64;
    s.st.borrow_mut().waiting = Some((key, until, fields));
    s.runtime.clock_register(&s.ep);
    WAITING.with(|w| w.borrow_mut().push(s.clone()));
}

/// Claims a tunnel for `key` and opens the request on it (with what the request has so far).
/// False if the node has no tunnel now.
fn try_open(s: &Rc<HttpStream>, key: &str, fields: Vec<HeaderField>) -> bool {
    let rt = &s.runtime;
    let Some(claim) = rt.tracker.claim_session(key, s.ep.worker) else { return false };
    let idle_ms = crate::runtime::unix_ms().saturating_sub(claim.meta.registered_at_ms);
    rt.stats.on_claimed(&claim, idle_ms);
    let end = {
        let mut st = s.st.borrow_mut();
        st.tunnel = Some(claim.handle.clone());
        st.allowed = LOCAL_INITIAL_WINDOW;
        let headers_only = st.req_end && st.pending.is_empty() && st.trailers.is_none();
        st.req_done = headers_only;
        headers_only
    };
    s.to_tunnel(Msg::LocalOpen { peer: s.ep.clone(), fields, end });
    s.flush_request();
    true
}

/// No tunnel (now, or within `claim_timeout`): 503 with a body that names the node.
fn give_up(s: &Rc<HttpStream>, key: &str) {
    s.runtime.stats.no_tunnel();
    rt_log!(Debug, "reverse_tunnel: no tunnel for '{}' (HTTP stream {})", key, s.ep.conn_id);
    s.local_reply(503, &format!("no reverse tunnel for node '{key}'\n"), "reverse_tunnel_no_tunnel");
}

/// Worker clock tick: every waiting stream of this worker retries its claim, or gets its 503 at
/// its deadline.
pub fn retry_waiting(now_ms: u64) {
    let waiting: Vec<Rc<HttpStream>> = WAITING.with(|w| std::mem::take(&mut *w.borrow_mut()));
    let mut still = Vec::new();
    for s in waiting {
        let Some((key, until, fields)) = s.st.borrow_mut().waiting.take() else { continue };
        let ep = s.ep.clone();
        let _busy = ep.hold();
        if try_open(&s, &key, fields.clone()) {
            s.runtime.clock_unregister(s.ep.worker, s.ep.conn_id);
        } else if now_ms >= until {
            s.runtime.clock_unregister(s.ep.worker, s.ep.conn_id);
            give_up(&s, &key);
        } else {
            s.st.borrow_mut().waiting = Some((key, until, fields));
            still.push(s);
        }
    }
    WAITING.with(|w| w.borrow_mut().extend(still));
}

/// A request body chunk: taken from Envoy and sent as the window allows, or, when the filter
/// already holds [`MAX_PENDING_BYTES`] the window cannot take (a slow node) or Envoy still holds
/// earlier body, left in Envoy's buffer: Envoy then stops reading from the client at its high
/// watermark, so a fast uploader to a slow node is held back instead of filling memory.
pub fn on_request_body(s: &Rc<HttpStream>, end_of_stream: bool) -> BodyTaken {
    let _busy = s.ep.hold();
    let Some(f) = s.filter() else { return BodyTaken::Taken };
    if s.st.borrow().held_in_envoy {
        // Earlier chunks wait in Envoy's buffer: send what the window takes of them now, so
        // that this chunk can be taken directly if they all went (it comes after them).
        s.flush_request();
    }
    let leave = {
        let mut st = s.st.borrow_mut();
        let open = st.tunnel.is_some() && !st.req_done;
        if open && (st.held_in_envoy || st.pending.len() >= MAX_PENDING_BYTES) {
            st.held_in_envoy = true;
            st.req_end |= end_of_stream;
            true
        } else {
            false
        }
    };
    if leave {
        // This chunk joins Envoy's buffer after the hook returns, so nothing is taken here (a
        // refill now could see an empty buffer and end the request before this chunk); the
        // window opening (the tunnel was told this stream has more) takes it.
        return BodyTaken::LeftInEnvoy;
    }
    if !end_of_stream && s.send_inline(&f) {
        return BodyTaken::Taken;
    }
    let mut data = Vec::new();
    f.take_received_request_body(&mut data);
    let overflow = {
        let mut st = s.st.borrow_mut();
        if (st.tunnel.is_none() && st.waiting.is_none()) || st.req_done {
            return BodyTaken::Taken;
        }
        st.pending.push(data);
        st.req_end |= end_of_stream;
        st.waiting.is_some() && st.pending.len() > MAX_WAITING_BYTES
    };
    if overflow {
        cancel_wait(s);
        s.local_reply(503, "no reverse tunnel yet, and the request body is too large to hold while waiting\n", "reverse_tunnel_waiting_overflow");
        return BodyTaken::Taken;
    }
    s.flush_request();
    BodyTaken::Taken
}

/// Stops waiting for a tunnel.
fn cancel_wait(s: &Rc<HttpStream>) {
    if s.st.borrow_mut().waiting.take().is_some() {
        s.runtime.clock_unregister(s.ep.worker, s.ep.conn_id);
        WAITING.with(|w| w.borrow_mut().retain(|x| !Rc::ptr_eq(x, s)));
    }
}

/// Request trailers: sent after the pending body; they end the request.
pub fn on_request_trailers(s: &Rc<HttpStream>) {
    let _busy = s.ep.hold();
    let Some(f) = s.filter() else { return };
    let fields: Vec<HeaderField> = f
        .request_trailers()
        .into_iter()
        .map(|(k, v)| HeaderField::new(&k.to_ascii_lowercase(), &v))
        .collect();
    {
        let mut st = s.st.borrow_mut();
        if (st.tunnel.is_none() && st.waiting.is_none()) || st.req_done {
            return;
        }
        st.req_end = true;
        st.trailers = Some(fields);
    }
    s.flush_request();
}

/// The stream's scheduler fired: handle its mailbox.
pub fn on_scheduled(s: &Rc<HttpStream>) {
    let (msgs, _busy) = s.ep.take();
    for msg in msgs {
        s.handle(msg);
    }
}

/// Same-worker delivery from a tunnel: handled at once when nothing is queued (order kept).
pub fn deliver_local(target: &Arc<Endpoint>, msg: Msg) -> bool {
    if let Some(s) = STREAMS.with(|m| m.borrow().get(&target.conn_id).cloned()) {
        if let Some(_busy) = target.begin_direct() {
            s.handle(msg);
            return true;
        }
    }
    target.post(msg)
}

/// Downstream write buffer above its high watermark: hold credits.
pub fn on_above_watermark(s: &Rc<HttpStream>) {
    s.st.borrow_mut().above_watermark = true;
}

/// Downstream write buffer drained: release held credits.
pub fn on_below_watermark(s: &Rc<HttpStream>) {
    let _busy = s.ep.hold();
    let n = {
        let mut st = s.st.borrow_mut();
        st.above_watermark = false;
        if st.resp_done {
            0
        } else {
            std::mem::take(&mut st.owed_credit)
        }
    };
    if n > 0 {
        s.credit(n);
    }
}

/// The stream is complete (response sent, reset or client gone): an unfinished tunnel stream is
/// cancelled; the stream leaves the worker's registry and its mailbox closes. Idempotent.
pub fn on_complete(s: &Rc<HttpStream>) {
    cancel_wait(s);
    let cancel = {
        let mut st = s.st.borrow_mut();
        let unfinished = !(st.resp_done && st.req_done);
        st.resp_done = true;
        st.req_done = true;
        st.tunnel.take().filter(|_| unfinished)
    };
    if let Some(t) = cancel {
        deliver(&t, s.ep.worker, Msg::LocalCancel { from: s.ep.conn_id });
    }
    STREAMS.with(|m| m.borrow_mut().remove(&s.ep.conn_id));
    // A clock tick posted through this stream and never run must not be lost, or the worker
    // would never get another one: the next clock period posts a new one.
    for msg in s.ep.shut() {
        if let Msg::Tick = msg {
            s.runtime.tick_done(s.ep.worker);
        }
    }
}

/// `on_http_filter_destroy`: the Envoy pointer is dead from here on.
pub fn on_destroy(s: Rc<HttpStream>) {
    on_complete(&s);
    s.filter.replace(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::h2mux::Bytes;
    use crate::adapters::fake::{self, FakeHttpFilter, HttpCall};
    use crate::core::tracker::{Identity, TunnelMeta};
    use crate::ffi::envoy::NetScheduler;
    use crate::ffi::envoy_http::HttpScheduler;

    /// A runtime with one idle tunnel of node `n1` (cluster `c1`) on worker 0, whose mailbox the
    /// test reads; a route filter config over it.
    fn world() -> (Arc<Runtime>, Arc<Endpoint>, RouteFilterConfig) {
        let (rt, _sink) = fake::runtime("{}");
        let tunnel = Endpoint::new(7, 0, NetScheduler(0));
        let who = Identity { node_id: "n1".into(), cluster_id: "c1".into(), tenant_id: String::new() };
        let meta = TunnelMeta {
            remote_address: "127.0.0.1:1".into(),
            initiator_worker_id: "worker_0".into(),
            initiator_connection_id: "1".into(),
            registered_at_ms: 0,
            initiation_time_ms: 0,
        };
        rt.tracker.register(7, 0, &who, meta, tunnel.clone()).expect("register");
        let cfg = RouteFilterConfig { runtime: rt.clone(), cfg: RouteConfig::default() };
        (rt, tunnel, cfg)
    }

    fn stream(rt: &Arc<Runtime>, f: &Rc<FakeHttpFilter>) -> Rc<HttpStream> {
        new_stream(f.clone(), 0, Sched::Http(HttpScheduler(0)), rt.clone())
    }

    fn get(node: &str) -> Vec<(&str, &str)> {
        vec![(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/p"), ("x-remote-node-id", node)]
    }

    #[test]
    fn no_target_and_no_tunnel_are_503_with_a_body_that_says_so() {
        let (rt, _t, cfg) = world();
        let f = FakeHttpFilter::with_headers(&[(":method", "GET"), (":path", "/")]);
        on_request_headers(&cfg, &stream(&rt, &f), true);
        assert!(matches!(&f.calls.borrow()[0], HttpCall::LocalReply(503, b) if b.contains("x-remote-node-id")), "{:?}", f.calls.borrow());
        let f = FakeHttpFilter::with_headers(&get("nobody"));
        on_request_headers(&cfg, &stream(&rt, &f), true);
        assert_eq!(f.calls.borrow()[0], HttpCall::LocalReply(503, "no reverse tunnel for node 'nobody'\n".into()));
    }

    #[test]
    fn a_grpc_request_without_a_tunnel_gets_unavailable_trailers_only() {
        let (rt, _t, cfg) = world();
        let mut h = get("nobody");
        h.push(("content-type", "application/grpc"));
        let f = FakeHttpFilter::with_headers(&h);
        on_request_headers(&cfg, &stream(&rt, &f), false);
        let calls = f.calls.borrow();
        let HttpCall::Headers(headers, true) = &calls[0] else { panic!("{calls:?}") };
        assert!(headers.contains(&("grpc-status".into(), "14".into())), "{headers:?}");
        assert!(headers.contains(&(":status".into(), "200".into())));
    }

    #[test]
    fn a_request_opens_on_the_tunnel_and_the_response_streams_back_with_credit() {
        let (rt, tunnel, cfg) = world();
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, false);
        *f.body.borrow_mut() = b"hello".to_vec();
        on_request_body(&s, true);
        let (msgs, _busy) = tunnel.take();
        let msgs: Vec<Msg> = msgs.into_iter().collect();
        let Msg::LocalOpen { fields, end: false, .. } = &msgs[0] else { panic!("LocalOpen first") };
        assert_eq!(fields[0].name, b":method");
        assert!(matches!(&msgs[1], Msg::LocalData { bytes, end: true, .. } if bytes == b"hello"));
        drop(msgs);
        // The response: a 100 Continue (skipped), headers, body, trailers.
        s.handle(Msg::LocalFrames {
            frames: vec![
                LocalFrame::Headers { fields: vec![HeaderField::new(b":status", b"100")], end: false },
                LocalFrame::Headers { fields: vec![HeaderField::new(b":status", b"200")], end: false },
                LocalFrame::Data { bytes: Bytes::from_static(b"abc"), end: false },
                LocalFrame::Headers { fields: vec![HeaderField::new(b"grpc-status", b"0")], end: true },
            ],
            window: LOCAL_INITIAL_WINDOW as usize,
        });
        assert_eq!(
            *f.calls.borrow(),
            vec![
                HttpCall::Headers(vec![(":status".into(), "200".into())], false),
                HttpCall::Data(b"abc".to_vec(), false),
                HttpCall::Trailers(vec![("grpc-status".into(), "0".into())]),
            ]
        );
        // The 3 body bytes were handed on, so they are credited back (the response is complete,
        // so nothing more is owed).
        let (msgs, _busy) = tunnel.take();
        assert!(msgs.iter().all(|m| !matches!(m, Msg::LocalCancel { .. })));
        on_complete(&s);
        let (msgs, _busy) = tunnel.take();
        assert!(msgs.is_empty(), "a finished stream cancels nothing");
    }

    #[test]
    fn a_slow_node_leaves_request_body_in_envoy_and_it_is_sent_in_order_as_the_window_opens() {
        let (rt, tunnel, cfg) = world();
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, false);
        let window = LOCAL_INITIAL_WINDOW as usize;
        let body: Vec<u8> = (0..window + MAX_PENDING_BYTES + 150_000).map(|i| (i % 251) as u8).collect();
        let (a, rest) = body.split_at(window + MAX_PENDING_BYTES);
        let (b, c) = rest.split_at(100_000);
        // More than the window: the window's worth is sent, the rest held in the filter.
        *f.body.borrow_mut() = a.to_vec();
        assert_eq!(on_request_body(&s, false), BodyTaken::Taken);
        // The filter holds MAX_PENDING_BYTES: later chunks stay in Envoy's buffer (Envoy stops
        // reading from the client at its high watermark).
        *f.body.borrow_mut() = b.to_vec();
        assert_eq!(on_request_body(&s, false), BodyTaken::LeftInEnvoy);
        f.leave_in_envoy();
        *f.body.borrow_mut() = c.to_vec();
        assert_eq!(on_request_body(&s, true), BodyTaken::LeftInEnvoy);
        f.leave_in_envoy();
        let sent = |msgs: std::collections::VecDeque<Msg>, got: &mut Vec<u8>| -> bool {
            let mut ended = false;
            for m in msgs {
                if let Msg::LocalData { bytes, end, .. } = m {
                    assert!(!ended, "no DATA after END_STREAM");
                    got.extend_from_slice(&bytes);
                    ended |= end;
                }
            }
            ended
        };
        let mut got = Vec::new();
        assert!(!sent(tunnel.take().0, &mut got), "the request cannot end while body is held");
        assert_eq!(got.len(), window, "exactly the window was sent");
        // The node read it all: the window opens, the held body is taken in order and the request ends.
        s.handle(Msg::LocalFrames { frames: vec![], window: 4 * window });
        assert!(sent(tunnel.take().0, &mut got), "END_STREAM after the last byte");
        assert!(got == body, "the node gets the body in order ({} of {} bytes)", got.len(), body.len());
        assert_eq!(f.buffered.borrow().len(), 0, "Envoy's buffer drained");
    }

    #[test]
    fn a_chunk_arriving_when_the_window_has_room_again_goes_after_the_held_ones() {
        let (rt, tunnel, cfg) = world();
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, false);
        let window = LOCAL_INITIAL_WINDOW as usize;
        let body: Vec<u8> = (0..window + MAX_PENDING_BYTES + 3000).map(|i| (i % 241) as u8).collect();
        let (a, rest) = body.split_at(window + MAX_PENDING_BYTES);
        let (b, c) = rest.split_at(1000);
        *f.body.borrow_mut() = a.to_vec();
        assert_eq!(on_request_body(&s, false), BodyTaken::Taken);
        *f.body.borrow_mut() = b.to_vec();
        assert_eq!(on_request_body(&s, false), BodyTaken::LeftInEnvoy);
        f.leave_in_envoy();
        // The tunnel's window grew (the node read), but no window message reached the stream
        // yet: the next chunk first sends the held ones, then is taken itself, in order.
        s.st.borrow_mut().allowed += 4 * window as u64;
        *f.body.borrow_mut() = c.to_vec();
        assert_eq!(on_request_body(&s, true), BodyTaken::Taken);
        let mut got = Vec::new();
        let mut ended = false;
        for m in tunnel.take().0 {
            if let Msg::LocalData { bytes, end, .. } = m {
                assert!(!ended, "no DATA after END_STREAM");
                got.extend_from_slice(&bytes);
                ended |= end;
            }
        }
        assert!(ended && got == body, "in order and ended ({} of {} bytes)", got.len(), body.len());
    }

    #[test]
    fn credit_waits_while_the_client_is_above_its_high_watermark() {
        let (rt, tunnel, cfg) = world();
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, true);
        drop(tunnel.take());
        on_above_watermark(&s);
        s.handle(Msg::LocalFrames {
            frames: vec![
                LocalFrame::Headers { fields: vec![HeaderField::new(b":status", b"200")], end: false },
                LocalFrame::Data { bytes: Bytes::from(vec![1; 1000]), end: false },
            ],
            window: 0,
        });
        let (msgs, _busy) = tunnel.take();
        assert!(!msgs.iter().any(|m| matches!(m, Msg::LocalCredit { .. })), "no credit above the watermark");
        drop(msgs);
        on_below_watermark(&s);
        let (msgs, _busy) = tunnel.take();
        assert!(msgs.iter().any(|m| matches!(m, Msg::LocalCredit { n: 1000, .. })), "the held credit is sent");
    }

    #[test]
    fn resets_before_and_after_the_response_started_and_client_cancel() {
        let (rt, tunnel, cfg) = world();
        // Before the response: a 502 naming the HTTP/2 error.
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, true);
        s.handle(Msg::LocalFrames { frames: vec![LocalFrame::Reset { code: error::INTERNAL_ERROR }], window: 0 });
        assert!(matches!(&f.calls.borrow()[0], HttpCall::LocalReply(502, _)));
        // After the headers: the client's stream is reset.
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, true);
        s.handle(Msg::LocalFrames {
            frames: vec![LocalFrame::Headers { fields: vec![HeaderField::new(b":status", b"200")], end: false }],
            window: 0,
        });
        s.handle(Msg::PeerClosed);
        assert_eq!(f.calls.borrow().last(), Some(&HttpCall::Reset));
        // The client goes away mid-response: the tunnel stream is cancelled.
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        on_request_headers(&cfg, &s, true);
        drop(tunnel.take());
        on_complete(&s);
        let (msgs, _busy) = tunnel.take();
        assert!(msgs.iter().any(|m| matches!(m, Msg::LocalCancel { from } if *from == s.ep.conn_id)));
    }

    fn h(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn http2_request_list_drops_connection_headers_and_keeps_pseudo_first() {
        let got = to_h2_request(&h(&[
            (":method", "POST"),
            (":path", "/x"),
            ("host", "example"),
            ("Connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("x-remote-node-id", "n1"),
        ]));
        let names: Vec<String> = got.iter().map(|f| String::from_utf8_lossy(&f.name).into_owned()).collect();
        assert_eq!(names, vec![":method", ":path", ":scheme", ":authority", "x-remote-node-id"]);
        assert_eq!(got[3].value, b"example");
        let got = to_h2_request(&h(&[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("te", "trailers")]));
        assert_eq!(got.len(), 5);
        assert_eq!(got[1].value, b"https");
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_message("no reverse tunnel for node 'n1'"), "no reverse tunnel for node 'n1'");
        assert_eq!(grpc_message("100% é\n"), "100%25 %C3%A9%0A");
    }

    #[test]
    fn body_queue_hands_over_whole_chunks_and_splits_only_at_the_edge() {
        let mut q = BodyQueue::default();
        q.push(b"abc".to_vec());
        q.push(Vec::new());
        q.push(b"defgh".to_vec());
        q.push(b"ij".to_vec());
        assert_eq!(q.len(), 10);
        // Whole chunks move as they are (no join); the chunk crossing n is split.
        assert_eq!(q.take(5), vec![b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(q.len(), 5);
        assert_eq!(q.take(0), Vec::<Vec<u8>>::new());
        assert_eq!(q.take(100), vec![b"fgh".to_vec(), b"ij".to_vec()]);
        assert!(q.is_empty());
        assert_eq!(q.take(1), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_window_limited_flush_sends_chunks_in_order_and_ends_on_the_last() {
        let (rt, ep, _cfg) = world();
        let f = FakeHttpFilter::with_headers(&get("n1"));
        let s = stream(&rt, &f);
        let mut st = s.st.borrow_mut();
        st.tunnel = Some(ep.clone());
        st.allowed = 6;
        st.pending.push(b"abcd".to_vec());
        st.pending.push(b"efgh".to_vec());
        st.req_end = true;
        drop(st);
        s.flush_request();
        let sent: Vec<(Vec<u8>, bool, bool)> = ep
            .take()
            .0
            .into_iter()
            .filter_map(|m| if let Msg::LocalData { bytes, end, more, .. } = m { Some((bytes, end, more)) } else { None })
            .collect();
        // The window takes 6 bytes: one whole chunk and the head of the next; more is pending.
        assert_eq!(sent, vec![(b"abcd".to_vec(), false, false), (b"ef".to_vec(), false, true)]);
        s.st.borrow_mut().allowed = 100;
        s.flush_request();
        let sent: Vec<(Vec<u8>, bool)> = ep
            .take()
            .0
            .into_iter()
            .filter_map(|m| if let Msg::LocalData { bytes, end, .. } = m { Some((bytes, end)) } else { None })
            .collect();
        assert_eq!(sent, vec![(b"gh".to_vec(), true)]);
    }

    #[test]
    fn stream_ids_never_collide_with_connection_ids() {
        assert!(is_stream_id(STREAM_ID_BASE));
        assert!(!is_stream_id(123_456));
    }
}
