//! The workload of the HTTP/2 engine comparison, shared by the benchmark (`main.rs`) and its
//! correctness test (`tests/h2_engines.rs`).
//!
//! Two HTTP/2 *client* engines do the same work against the same peer:
//! - **ours**: the module's multiplexer (`reverse_tunnel::core::h2mux::Mux`) as the route filter
//!   drives it: one local leg per request (`attach_local` + `local_open` with stream id
//!   `LOCAL_SID`), `on_tunnel_bytes` for what the peer sends, `local_credit` for every body chunk
//!   consumed, `detach` when the stream is closed; settings from the session's `mux_settings()`.
//! - **h2**: the `h2` crate's client (`h2::client`) over an in-memory transport, its connection
//!   task spawned on a current-thread tokio runtime (`LocalSet`), configured with the same windows,
//!   frame size, header table size and header list cap as ours; the body is read with
//!   `RecvStream::data` and credited with `FlowControl::release_capacity`.
//!
//! The peer is a **byte script**: what the `h2` crate's server sent, recorded once per case
//! (untimed) while it served the same requests over a `tokio::io::duplex`. Replaying it costs no
//! HTTP/2 work, so a measurement of a replay is the client engine's cost alone, and both engines
//! read exactly the same bytes (same frames, same HPACK state, same DATA frame sizes: both
//! clients advertise the same SETTINGS). Bytes reach each engine in reads of at most
//! [`READ_CHUNK`] bytes (Envoy's buffer slices are 16 KiB). A script that broke an engine's flow
//! control or stream state would make that engine fail the run: every replay checks every
//! response (status 200, body length) and the count of completed requests.
//!
//! One round = `concurrency` requests opened, then the peer's bytes for them, then every response
//! read to its end. Everything runs on the calling thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use reverse_tunnel::adapters::tunnel_session::{mux_settings, LOCAL_SID};
use reverse_tunnel::core::h2mux::hpack::HeaderField;
use reverse_tunnel::core::h2mux::{LocalFrame, Mux, MuxEvent, MuxSettings, Output};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest piece of peer bytes handed to an engine per read, in bytes.
pub const READ_CHUNK: usize = 16 * 1024;

/// The `:authority` of every request.
pub const AUTHORITY: &str = "node-0001.tunnel:8080";

/// The ordinary request headers (after the four pseudo-headers), as curl or h2load send them with
/// the route filter's target header.
pub const REQUEST_HEADERS: [(&str, &str); 6] = [
    ("user-agent", "h2load nghttp2/1.52.0"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-US,en;q=0.9"),
    ("cache-control", "no-cache"),
    ("x-remote-node-id", "node-0001"),
];

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Short name, e.g. `seq-1k`.
    pub name: &'static str,
    /// Response body size in bytes.
    pub body: usize,
    /// Streams in flight at once (requests per round).
    pub concurrency: usize,
    /// Requests in one run (a multiple of `concurrency`).
    pub requests: usize,
}

/// The cases of `make bench-h2`: one stream at a time and 100 in flight, each with a 0 B, 1 KiB
/// and 64 KiB response body.
pub const CASES: [Case; 6] = [
    Case { name: "seq-0b", body: 0, concurrency: 1, requests: 2000 },
    Case { name: "seq-1k", body: 1024, concurrency: 1, requests: 2000 },
    Case { name: "seq-64k", body: 65536, concurrency: 1, requests: 400 },
    Case { name: "c100-0b", body: 0, concurrency: 100, requests: 2000 },
    Case { name: "c100-1k", body: 1024, concurrency: 100, requests: 2000 },
    Case { name: "c100-64k", body: 65536, concurrency: 100, requests: 400 },
];

/// The peer's bytes for one run of a case.
pub struct Script {
    /// The server's SETTINGS and its ACK of the client's SETTINGS (read before the first round).
    pub preamble: Bytes,
    /// The server's bytes for each round's responses, in round order.
    pub rounds: Vec<Bytes>,
}

/// What a replay saw; equal for both engines when both work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests whose response ended (END_STREAM) with status 200 and the expected body length.
    pub completed: usize,
    /// Response body bytes consumed.
    pub body_bytes: usize,
    /// Response header fields seen (pseudo-headers included), over all responses.
    pub header_fields: usize,
    /// Bytes the client engine wrote toward the peer (requests, SETTINGS, WINDOW_UPDATEs, ...).
    pub client_bytes: usize,
    /// With `keep` set on the client (tests only): every response, by request number, as its
    /// header fields (sorted) and body.
    pub responses: Vec<Option<Kept>>,
}

/// One response as a test compares it: header fields (name, value), sorted; body bytes.
pub type Kept = (Vec<(String, String)>, Vec<u8>);

fn keep_headers(kept: &mut Vec<Option<Kept>>, n: usize, fields: impl Iterator<Item = (String, String)>) {
    if kept.len() <= n {
        kept.resize(n + 1, None);
    }
    let mut f: Vec<(String, String)> = fields.collect();
    f.sort();
    kept[n] = Some((f, Vec::new()));
}

fn keep_body(kept: &mut [Option<Kept>], n: usize, bytes: &[u8]) {
    if let Some(Some((_, b))) = kept.get_mut(n) {
        b.extend_from_slice(bytes);
    }
}

/// The `:path` of request `n`.
pub fn path(n: usize) -> String {
    format!("/x/{n}")
}

/// The response the peer sends for every request (`:status 200` and four headers).
fn response(body: usize) -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header("content-length", body.to_string())
        .header("server", "envoy")
        .header("date", "Wed, 02 Dec 2026 00:00:00 GMT")
        .body(())
        .expect("static response")
}

/// The `h2` client's settings, equal to what [`Mux::new`] advertises with the session's
/// [`mux_settings`]: stream window `min(initial_window, max_buffered_bytes_per_stream)`,
/// connection window `initial_window`, max frame size, HPACK table 4,096, header list cap 65,536,
/// no push.
fn h2_client_builder() -> h2::client::Builder {
    let s: MuxSettings = mux_settings();
    let stream_window = (s.initial_window as usize).min(s.max_buffered_bytes_per_stream) as u32;
    let mut b = h2::client::Builder::new();
    b.initial_window_size(stream_window)
        .initial_connection_window_size(s.initial_window)
        .max_frame_size(s.max_frame_size)
        .header_table_size(4096)
        .max_header_list_size(reverse_tunnel::core::h2mux::MAX_HEADER_LIST_SIZE as u32)
        .enable_push(false);
    b
}

fn h2_request(n: usize) -> http::Request<()> {
    let mut b = http::Request::builder().method("GET").uri(format!("http://{AUTHORITY}{}", path(n)));
    for (k, v) in REQUEST_HEADERS {
        b = b.header(k, v);
    }
    b.body(()).expect("valid request")
}

fn mux_request(n: usize) -> Vec<HeaderField> {
    let p = path(n);
    let mut f = Vec::with_capacity(4 + REQUEST_HEADERS.len());
    f.push(HeaderField::new(b":method", b"GET"));
    f.push(HeaderField::new(b":scheme", b"http"));
    f.push(HeaderField::new(b":authority", AUTHORITY.as_bytes()));
    f.push(HeaderField::new(b":path", p.as_bytes()));
    for (k, v) in REQUEST_HEADERS {
        f.push(HeaderField::new(k.as_bytes(), v.as_bytes()));
    }
    f
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Recording the peer: the h2 server over a duplex, its writes copied to a log.

struct Recorder {
    io: tokio::io::DuplexStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.log.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Records the `h2` server's bytes for `case`: it serves the case's rounds to an `h2` client with
/// our settings, over a `tokio::io::duplex`, answering each request with [`response`] and a body
/// of `case.body` bytes (END_STREAM on the last frame, or on the headers for 0 B).
pub fn record_script(case: &Case) -> Script {
    let rt = current_thread_runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (cio, sio) = tokio::io::duplex(64 << 20);
        let log = Arc::new(Mutex::new(Vec::new()));
        let server_io = Recorder { io: sio, log: log.clone() };
        let body = Bytes::from(vec![b'x'; case.body]);
        tokio::task::spawn_local(async move {
            let mut conn = h2::server::Builder::new().handshake::<_, Bytes>(server_io).await.expect("server handshake");
            while let Some(req) = conn.accept().await {
                let (_req, mut respond) = req.expect("server accept");
                if body.is_empty() {
                    respond.send_response(response(0), true).expect("send response");
                } else {
                    let mut s = respond.send_response(response(body.len()), false).expect("send response");
                    s.send_data(body.clone(), true).expect("send data");
                }
            }
        });
        let (mut send, conn) = h2_client_builder().handshake::<_, Bytes>(cio).await.expect("client handshake");
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        settle().await;
        let preamble = Bytes::from(std::mem::take(&mut *log.lock().unwrap()));
        let mut rounds = Vec::new();
        let mut n = 0;
        for _ in 0..case.requests / case.concurrency {
            let mut pending = Vec::new();
            for _ in 0..case.concurrency {
                send = send.ready().await.expect("ready");
                let (resp, _) = send.send_request(h2_request(n), true).expect("send request");
                pending.push(resp);
                n += 1;
            }
            for resp in pending {
                let mut b = resp.await.expect("response").into_body();
                while let Some(chunk) = b.data().await {
                    let c = chunk.expect("body");
                    b.flow_control().release_capacity(c.len()).expect("credit");
                }
            }
            settle().await;
            rounds.push(Bytes::from(std::mem::take(&mut *log.lock().unwrap())));
        }
        Script { preamble, rounds }
    })
}

// ---------------------------------------------------------------------------------------------
// Our engine.

/// Our multiplexer as the route filter's session drives it, after reading the peer's preamble.
pub struct OursClient {
    mux: Mux,
    next_leg: u64,
    next_req: usize,
    tally: Tally,
    /// First leg id of the current round; leg `round_base + i` is request `i` of the round.
    round_base: u64,
    /// Per request of the current round: body bytes received, END_STREAM seen, closed.
    slots: Vec<(usize, bool, bool)>,
    /// Requests of the current round not yet closed.
    open: usize,
    expect_body: usize,
    /// Keep every response in [`Tally::responses`] (tests).
    pub keep: bool,
}

impl OursClient {
    /// A fresh client that has written its preface and read `script.preamble`.
    pub fn new(script: &Script, case: &Case) -> OursClient {
        let (mux, preface) = Mux::new(mux_settings());
        let mut c = OursClient {
            mux,
            next_leg: 1,
            next_req: 0,
            tally: Tally { client_bytes: preface.len(), ..Tally::default() },
            round_base: 1,
            slots: Vec::new(),
            open: 0,
            expect_body: case.body,
            keep: false,
        };
        c.feed(&script.preamble);
        c
    }

    fn feed(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(READ_CHUNK) {
            let out = self.mux.on_tunnel_bytes(piece);
            self.apply(out);
        }
    }

    /// Handles one output: bytes to the peer are counted (the peer is a script), response pieces
    /// consumed and credited, closed legs detached.
    fn apply(&mut self, out: Output) {
        let mut queue = VecDeque::from([out]);
        while let Some(out) = queue.pop_front() {
            assert!(!out.close_tunnel, "ours closed the tunnel: {:?}", out.events);
            self.tally.client_bytes += out.to_tunnel.len() + out.tunnel_parts.iter().map(|p| p.bytes().len()).sum::<usize>();
            for (leg, _sid, frame) in out.to_local {
                let i = self.slot(leg);
                match frame {
                    LocalFrame::Headers { fields, end } => {
                        assert!(fields[0].name == b":status" && fields[0].value == b"200", "status");
                        self.tally.header_fields += fields.len();
                        if self.keep {
                            let n = (leg - 1) as usize;
                            let f = fields.iter().map(|h| {
                                (String::from_utf8_lossy(&h.name).into_owned(), String::from_utf8_lossy(&h.value).into_owned())
                            });
                            keep_headers(&mut self.tally.responses, n, f);
                        }
                        if end {
                            self.slots[i].1 = true;
                        }
                    }
                    LocalFrame::Data { bytes, end } => {
                        self.slots[i].0 += bytes.len();
                        if self.keep {
                            keep_body(&mut self.tally.responses, (leg - 1) as usize, &bytes);
                        }
                        self.tally.body_bytes += bytes.len();
                        if end {
                            self.slots[i].1 = true;
                        }
                        if !bytes.is_empty() {
                            queue.push_back(self.mux.local_credit(leg, LOCAL_SID, bytes.len() as u32));
                        }
                    }
                    LocalFrame::Reset { code } => panic!("ours: stream reset {code}"),
                }
            }
            for ev in out.events {
                match ev {
                    MuxEvent::StreamClosed { egress, reset, .. } => {
                        assert_eq!(reset, None, "ours: stream closed with a reset");
                        let i = self.slot(egress);
                        let (got, ended, closed) = self.slots[i];
                        assert!(ended && !closed && got == self.expect_body, "ours: incomplete response");
                        self.slots[i].2 = true;
                        self.open -= 1;
                        self.tally.completed += 1;
                        queue.push_back(self.mux.detach(egress));
                    }
                    MuxEvent::ProtocolError { leg, detail } => panic!("ours: protocol error on {leg:?}: {detail}"),
                    _ => {}
                }
            }
        }
    }

    fn slot(&self, leg: u64) -> usize {
        let i = leg.checked_sub(self.round_base).expect("leg of this round") as usize;
        assert!(i < self.slots.len() && !self.slots[i].2, "frame for a leg that is not open");
        i
    }

    /// Runs every round of `script`: opens the round's requests, reads the peer's bytes. The
    /// measured function of the benchmark (never inlined, so callgrind can find it).
    #[inline(never)]
    pub fn run(&mut self, script: &Script, case: &Case) -> Tally {
        for round in &script.rounds {
            self.round_base = self.next_leg;
            self.slots.clear();
            self.slots.resize(case.concurrency, (0, false, false));
            self.open = case.concurrency;
            for _ in 0..case.concurrency {
                let leg = self.next_leg;
                self.next_leg += 1;
                let out = self.mux.attach_local(leg);
                self.apply(out);
                let out = self.mux.local_open(leg, LOCAL_SID, mux_request(self.next_req), true);
                self.next_req += 1;
                self.apply(out);
            }
            self.feed(round);
            assert_eq!(self.open, 0, "ours: responses missing after a round");
        }
        self.tally.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The h2 crate's client.

#[derive(Default)]
struct Pipe {
    rx: VecDeque<Bytes>,
    reader: Option<Waker>,
    written: usize,
}

/// The `h2` client's transport: reads come from the script, writes are counted and dropped.
struct ScriptIo(Rc<RefCell<Pipe>>);

impl AsyncRead for ScriptIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut p = self.0.borrow_mut();
        match p.rx.front_mut() {
            None => {
                p.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(front) => {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                if n == front.len() {
                    p.rx.pop_front();
                } else {
                    bytes::Buf::advance(front, n);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for ScriptIo {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The `h2` crate's client on a current-thread runtime, after reading the peer's preamble.
pub struct H2Client {
    rt: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    send: Option<h2::client::SendRequest<Bytes>>,
    pipe: Rc<RefCell<Pipe>>,
    next_req: usize,
    tally: Tally,
    /// Keep every response in [`Tally::responses`] (tests).
    pub keep: bool,
}

impl H2Client {
    /// A fresh client that has done its handshake and read `script.preamble`.
    pub fn new(script: &Script) -> H2Client {
        let rt = current_thread_runtime();
        let local = tokio::task::LocalSet::new();
        let pipe = Rc::new(RefCell::new(Pipe::default()));
        let io = ScriptIo(pipe.clone());
        let send = local.block_on(&rt, async {
            let (send, conn) = h2_client_builder().handshake::<_, Bytes>(io).await.expect("h2 handshake");
            tokio::task::spawn_local(async move {
                if let Err(e) = conn.await {
                    panic!("h2 connection failed: {e}");
                }
            });
            send
        });
        let mut c = H2Client { rt, local, send: Some(send), pipe, next_req: 0, tally: Tally::default(), keep: false };
        push_pieces(&c.pipe, &script.preamble);
        let mut send = c.send.take();
        c.local.block_on(&c.rt, async {
            settle().await;
            send = Some(send.take().unwrap().ready().await.expect("h2 ready"));
        });
        c.send = send;
        c
    }

    /// Runs every round of `script`: sends the round's requests, hands the peer's bytes to the
    /// transport, reads every response to its end. The measured function of the benchmark (never
    /// inlined, so callgrind can find it).
    #[inline(never)]
    pub fn run(&mut self, script: &Script, case: &Case) -> Tally {
        let expect = case.body;
        for round in &script.rounds {
            let mut send = self.send.take().expect("send handle");
            let mut next = self.next_req;
            let pipe = self.pipe.clone();
            let tally = &mut self.tally;
            let keep = self.keep;
            let first = self.next_req;
            let fut = async {
                let mut pending = Vec::with_capacity(case.concurrency);
                for _ in 0..case.concurrency {
                    send = send.ready().await.expect("h2 ready");
                    let (resp, _) = send.send_request(h2_request(next), true).expect("h2 send_request");
                    next += 1;
                    pending.push(resp);
                }
                // The peer answers what it has received: let the connection task write the
                // requests (h2 opens a stream on the wire only when it writes its HEADERS).
                let before = pipe.borrow().written;
                while pipe.borrow().written == before {
                    tokio::task::yield_now().await;
                }
                push_pieces(&pipe, round);
                for (i, resp) in pending.into_iter().enumerate() {
                    let resp = resp.await.expect("h2 response");
                    assert_eq!(resp.status(), 200, "status");
                    tally.header_fields += 1 + resp.headers().len();
                    if keep {
                        let status = std::iter::once((":status".to_string(), resp.status().as_str().to_string()));
                        let f = resp.headers().iter().map(|(k, v)| {
                            (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                        });
                        keep_headers(&mut tally.responses, first + i, status.chain(f));
                    }
                    let mut body = resp.into_body();
                    let mut got = 0;
                    while let Some(chunk) = body.data().await {
                        let c = chunk.expect("h2 body");
                        got += c.len();
                        if keep {
                            keep_body(&mut tally.responses, first + i, &c);
                        }
                        body.flow_control().release_capacity(c.len()).expect("h2 credit");
                    }
                    assert!(body.is_end_stream() && got == expect, "h2: incomplete response");
                    tally.body_bytes += got;
                    tally.completed += 1;
                }
                send
            };
            let send = self.local.block_on(&self.rt, fut);
            self.send = Some(send);
            self.next_req = next;
        }
        // Let the connection task write what the last credits produced.
        self.local.block_on(&self.rt, settle());
        self.tally.client_bytes = self.pipe.borrow().written;
        self.tally.clone()
    }
}

/// Queues `bytes` for the `h2` client's reads in pieces of at most [`READ_CHUNK`] (shared slices
/// of the script: no copy here; the transport's read copies them into h2's buffer, as a socket
/// read would) and wakes the reader.
fn push_pieces(pipe: &Rc<RefCell<Pipe>>, bytes: &Bytes) {
    let mut p = pipe.borrow_mut();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + READ_CHUNK).min(bytes.len());
        p.rx.push_back(bytes.slice(at..end));
        at = end;
    }
    if let Some(w) = p.reader.take() {
        w.wake();
    }
}
