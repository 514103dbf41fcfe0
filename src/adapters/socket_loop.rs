//! Owned sockets: tunnel sockets the module serves itself, with no Envoy connection behind them
//! (docs/architecture.md#owned-sockets).
//!
//! The listener filter `reverse_tunnel` takes each socket the handshake listener accepts
//! (`ffi::hooks_listener`) and [`adopt`]s it: the socket goes to the *socket loop* of the
//! accepting worker, a thread of the module's own running an epoll loop (`mio`). There the
//! socket gets the same [`Conn`]`<`[`TunnelConn`]`>` a handshake-listener connection gets, over an
//! [`OwnedSocket`] instead of Envoy's network filter: the handshake, the RPING keepalive, the
//! tracker, claims, the HTTP/2 session and the relay are the same code. To that code a socket
//! loop is one more worker (index [`SOCKET_LOOP_BASE`]` + k`): it has its own connection
//! registry and deadline queue (`adapters::worker`, thread-local), runs its clock tick itself
//! every `CLOCK_PERIOD_MS`, and receives mail through a [`LoopSched`] instead of an Envoy
//! scheduler. Requests reach such a tunnel from Envoy's workers as they reach a tunnel of
//! another worker: through its mailbox.
//!
//! What an owned socket does not have: Envoy's connection stats and access log for the tunnel,
//! dynamic metadata (the handshake's identity and JWT claims are not written anywhere), and a
//! transport socket (a TLS listener cannot take sockets). Metric updates made on a socket loop
//! are applied by the main thread's clock (`Stats::flush_deferred`), since Envoy's stats store
//! is only safe from Envoy's own threads.
//!
//! Threads: [`adopt`] runs on the accepting Envoy worker; everything else on the socket loop.

use super::conn::{Conn, Connection};
use super::endpoint::{Endpoint, Sched};
use super::envoy_api::EnvoyNetworkFilter;
use super::error::SetupError;
use super::handshake_filter::{HandshakeSettings, TunnelConn};
use super::network::{self, HANDSHAKE_FILTER_NAME};
use super::worker;
use crate::ffi::envoy::{CloseType, ConnectionEvent};
use crate::runtime::{now_ms, Runtime};
use crate::rt_log;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::core::tracker::SOCKET_LOOP_BASE;

/// Connection ids of owned sockets start here: above Envoy's connection ids, below the HTTP
/// streams' (`http_filter`), so the three never collide.
pub const OWNED_ID_BASE: u64 = 1 << 61;
static NEXT_OWNED_ID: AtomicU64 = AtomicU64::new(OWNED_ID_BASE);

/// The waker's token (connection tokens are connection ids, all below it).
const WAKE: Token = Token(usize::MAX);
/// Bytes read per `read` call into the loop's scratch buffer.
const READ_CHUNK: usize = 256 * 1024;
/// Most bytes read from one socket before the loop turns to the others (and to its mail); the
/// rest is read in the next round.
const READ_BURST: usize = 1024 * 1024;
/// How long a socket closed with `FlushWrite` may take to write what it still holds (Envoy's
/// default `delayed_close_timeout` is 1 s).
const LINGER_MS: u64 = 1000;

/// Listener filter name of the *spares* mode: Envoy keeps every socket, and the handshake filter
/// hands a node's spare tunnels to the socket loops (docs/architecture.md#spare-tunnels).
pub const SPARES_FILTER_NAME: &str = "reverse_tunnel_spares";

/// The listener filter's config, by its `filter_name`.
pub enum ListenerConfig {
    /// `reverse_tunnel`: the module takes every socket the listener accepts.
    TakeAll(OwnedConfig),
    /// `reverse_tunnel_spares`: the filter only notes each accepted socket's descriptor (by its
    /// address pair, on the accepting worker), so that the handshake network filter can move the
    /// socket of a spare tunnel to the socket loop after its handshake arrived.
    Spares,
}

impl ListenerConfig {
    /// Decodes the config of listener filter `name`; errors name the field.
    pub fn new(name: &str, config: &[u8]) -> Result<ListenerConfig, SetupError> {
        if name == SPARES_FILTER_NAME {
            // Nothing to configure: the handshake filter behind it has the tunnel config.
            let text = std::str::from_utf8(config).unwrap_or("?").trim();
            return match text {
                "" | "{}" => Ok(ListenerConfig::Spares),
                _ => Err(SetupError::SparesConfig),
            };
        }
        OwnedConfig::new(name, config).map(ListenerConfig::TakeAll)
    }
}

/// The config of listener filter `reverse_tunnel`: the handshake filter's own (`ReverseTunnel`),
/// decoded once.
pub struct OwnedConfig {
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    /// What every tunnel of the listener needs from the config.
    pub settings: Arc<HandshakeSettings>,
}

impl OwnedConfig {
    /// Decodes the config of listener filter `name` (only `reverse_tunnel`). Errors name the field.
    pub fn new(name: &str, config: &[u8]) -> Result<OwnedConfig, SetupError> {
        let runtime = crate::runtime::current().ok_or_else(|| SetupError::NoBootstrap { filter: name.to_string() })?;
        OwnedConfig::with_runtime(runtime, name, config)
    }

    /// Decodes the config of listener filter `name` over `runtime`.
    pub fn with_runtime(runtime: Arc<Runtime>, name: &str, config: &[u8]) -> Result<OwnedConfig, SetupError> {
        if name != HANDSHAKE_FILTER_NAME {
            return Err(SetupError::UnknownListenerFilter {
                name: name.to_string(),
                expected: [HANDSHAKE_FILTER_NAME, SPARES_FILTER_NAME],
            });
        }
        let settings = Arc::new(HandshakeSettings::new(config, &runtime)?);
        Ok(OwnedConfig { runtime, settings })
    }
}

/// A socket handed to a socket loop: the stream, its tunnel config, and the bytes already read
/// from it (the handshake of a spare tunnel, read by Envoy; empty for a socket taken at accept).
struct Adopted {
    stream: std::net::TcpStream,
    settings: Arc<HandshakeSettings>,
    read: Vec<u8>,
}

/// What a socket loop receives from other threads.
#[derive(Default)]
struct Inbox {
    /// Sockets to take on.
    adopt: Vec<Adopted>,
    /// Connections with mail (one entry per scheduler commit).
    ready: Vec<u64>,
    /// The loop is (about to be) blocked in `poll`: the next push must wake it. While it
    /// runs, pushes need no wake-up: it looks at the inbox before it sleeps again.
    sleeping: bool,
    /// Envoy is shutting down: the loop exits, closing its sockets.
    stop: bool,
}

/// The cross-thread face of one socket loop. Lives for the whole process.
struct Shared {
    /// The loop's worker index (`SOCKET_LOOP_BASE + k`).
    worker: u32,
    inbox: Mutex<Inbox>,
    waker: Waker,
}

impl Shared {
    /// Changes the inbox and wakes the loop if it sleeps. Any thread.
    fn push(&self, f: impl FnOnce(&mut Inbox)) {
        let mut g = self.inbox.lock();
        f(&mut g);
        if std::mem::replace(&mut g.sleeping, false) {
            drop(g);
            if let Err(e) = self.waker.wake() {
                rt_log!(Error, "reverse_tunnel: cannot wake socket loop {}: {}", self.worker, e);
            }
        }
    }
}

/// The "scheduler" of an owned socket's mailbox: committing it queues the connection on its
/// socket loop. `Copy`, and never deleted (the loop lives as long as the process).
#[derive(Clone, Copy)]
pub struct LoopSched {
    shared: &'static Shared,
    conn_id: u64,
}

impl std::fmt::Debug for LoopSched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoopSched(worker {}, conn {})", self.shared.worker, self.conn_id)
    }
}

impl LoopSched {
    /// Queues the connection's mail for delivery on its loop. Any thread.
    pub fn commit(self) {
        let id = self.conn_id;
        self.shared.push(|i| i.ready.push(id));
    }
}

/// The socket loops of one runtime (a field of [`Runtime`]): one per Envoy worker that accepted a
/// socket, started on first use, with its thread (taken by [`SocketLoops::shutdown`]).
#[derive(Default)]
pub struct SocketLoops {
    loops: Mutex<LoopList>,
}

/// A running socket loop and its thread (`None` once joined).
struct LoopEntry {
    shared: &'static Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct LoopList {
    by_worker: Vec<Option<LoopEntry>>,
    /// Set by [`SocketLoops::shutdown`]: no loop starts and no socket is adopted any more.
    stopped: bool,
}

impl SocketLoops {
    /// Stops every socket loop and waits for its thread: each closes its sockets (the initiators
    /// see the close, as when Envoy closes its connections at shutdown) and exits. Main thread,
    /// from the bootstrap extension's `shutdown` hook, so that no module thread outlives Envoy's
    /// teardown.
    pub fn shutdown(&self) {
        let threads: Vec<_> = {
            let mut l = self.loops.lock();
            l.stopped = true;
            l.by_worker
                .iter_mut()
                .flatten()
                .map(|e| {
                    e.shared.push(|i| i.stop = true);
                    e.thread.take()
                })
                .collect()
        };
        for t in threads.into_iter().flatten() {
            if t.join().is_err() {
                rt_log!(Error, "reverse_tunnel: a socket loop ended with a panic");
            }
        }
    }

    /// The socket loop of Envoy worker `k` in `runtime`, started if needed (its thread keeps the
    /// runtime until [`SocketLoops::shutdown`]).
    fn loop_of(runtime: &Arc<Runtime>, k: u32) -> std::io::Result<&'static Shared> {
        let mut l = runtime.socket_loops.loops.lock();
        if l.stopped {
            return Err(std::io::Error::other("Envoy is shutting down"));
        }
        if let Some(Some(e)) = l.by_worker.get(k as usize) {
            return Ok(e.shared);
        }
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let worker = SOCKET_LOOP_BASE + k;
        let shared: &'static Shared = Box::leak(Box::new(Shared { worker, inbox: Mutex::new(Inbox::default()), waker }));
        let thread = std::thread::Builder::new().name(format!("rt-socket-loop-{k}")).spawn({
            let runtime = runtime.clone();
            move || SocketLoop::new(shared, poll, runtime).run()
        })?;
        if l.by_worker.len() <= k as usize {
            l.by_worker.resize_with(k as usize + 1, || None);
        }
        l.by_worker[k as usize] = Some(LoopEntry { shared, thread: Some(thread) });
        Ok(shared)
    }
}

/// Hands a socket the handshake listener accepted on Envoy worker `worker` to that worker's
/// socket loop. On failure (the loop cannot start) the socket is closed and the error logged.
/// Accepting worker.
pub fn adopt(cfg: &OwnedConfig, stream: std::net::TcpStream, worker: u32) {
    adopt_read(&cfg.runtime, cfg.settings.clone(), stream, worker, Vec::new());
}

/// Like [`adopt`], for a socket whose first bytes `read` (a spare tunnel's handshake) Envoy
/// already read: the loop hands them to the new connection before anything it reads itself.
/// Accepting worker.
pub fn adopt_read(runtime: &Arc<Runtime>, settings: Arc<HandshakeSettings>, stream: std::net::TcpStream, worker: u32, read: Vec<u8>) {
    match SocketLoops::loop_of(runtime, worker) {
        Ok(shared) => shared.push(|i| i.adopt.push(Adopted { stream, settings, read })),
        Err(e) => rt_log!(Error, "reverse_tunnel: cannot start a socket loop: {}; socket closed", e),
    }
}

/// What the sockets of one loop tell the loop after a callback: who asked to close, who has
/// bytes to send.
#[derive(Default)]
struct Notes {
    closes: RefCell<Vec<u64>>,
    /// Sockets whose `out` went from empty to not empty: the loop sends it once the callback
    /// is over, so that the frames of one batch of mail leave in one `write`.
    flushes: RefCell<Vec<u64>>,
}

/// A tunnel socket the module owns, as its connection's [`EnvoyNetworkFilter`]. Socket loop only.
pub struct OwnedSocket {
    id: u64,
    worker: u32,
    stream: TcpStream,
    /// Bytes accepted by `write` and not sent yet, as the chunks they came in (small ones
    /// joined): sent by the loop after the callback, or when the socket is writable again. Chunks
    /// never move once queued and are freed as they are sent.
    out: RefCell<OutQueue>,
    /// Close requested (by us) or the socket failed / the peer closed.
    close: Cell<Option<CloseType>>,
    /// The peer closed, or a read or write failed: the close is a remote one.
    remote_closed: Cell<bool>,
    notes: Rc<Notes>,
}

impl OwnedSocket {
    fn new(id: u64, worker: u32, stream: TcpStream, notes: Rc<Notes>) -> OwnedSocket {
        OwnedSocket { id, worker, stream, out: RefCell::new(OutQueue::default()), close: Cell::new(None), remote_closed: Cell::new(false), notes }
    }

    /// Marks the socket failed (or closed by the peer) and queues its close.
    fn fail(&self) {
        self.remote_closed.set(true);
        if self.close.replace(Some(CloseType::NoFlush)).is_none() {
            self.notes.closes.borrow_mut().push(self.id);
        }
    }

    /// Writes as much of `out` as the socket takes. Returns true when nothing is left.
    fn flush(&self) -> bool {
        let mut out = self.out.borrow_mut();
        while !out.is_empty() {
            let result = {
                let slices = out.slices();
                (&self.stream).write_vectored(&slices)
            };
            match result {
                Ok(0) => break,
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    *out = OutQueue::default();
                    drop(out);
                    self.fail();
                    return true;
                }
            }
        }
        out.is_empty()
    }

    /// Reads what the socket has, in `scratch`-sized pieces, up to [`READ_BURST`] bytes.
    /// A read shorter than `scratch` emptied the socket: bytes arriving later raise a new
    /// (edge-triggered) event, so no read is spent on hearing `WouldBlock`. A burst that stopped
    /// at the cap must be continued by the caller (no new event will come for those bytes).
    fn read_burst(&self, scratch: &mut [u8]) -> ReadBurst {
        let mut data = Vec::new();
        loop {
            let (closed, more) = match (&self.stream).read(scratch) {
                Ok(0) => (true, false),
                Ok(n) if n < scratch.len() => {
                    data.extend_from_slice(&scratch[..n]);
                    (false, false)
                }
                Ok(n) => {
                    data.extend_from_slice(&scratch[..n]);
                    if data.len() < READ_BURST {
                        continue;
                    }
                    (false, true)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => (false, false),
                Err(_) => (true, false),
            };
            return ReadBurst { data, closed, more };
        }
    }
}

/// What one [`OwnedSocket::read_burst`] got.
struct ReadBurst {
    data: Vec<u8>,
    /// The peer closed (or the read failed).
    closed: bool,
    /// Stopped at [`READ_BURST`]: the socket may hold more.
    more: bool,
}

/// Chunks written to an owned socket and not sent yet.
#[derive(Default)]
struct OutQueue {
    chunks: std::collections::VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already sent.
    sent: usize,
}

impl OutQueue {
    /// A chunk at most this large is appended to the last queued one (frames of one batch of
    /// mail leave in few slices); a larger one is queued on its own.
    const JOIN_MAX: usize = 16 * 1024;
    /// Most slices handed to one `writev`.
    const MAX_SLICES: usize = 64;

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn push(&mut self, data: &[u8]) {
        if data.len() <= Self::JOIN_MAX {
            if let Some(last) = self.chunks.back_mut() {
                if last.len() + data.len() <= Self::JOIN_MAX {
                    last.extend_from_slice(data);
                    return;
                }
            }
        }
        self.chunks.push_back(data.to_vec());
    }

    fn slices(&self) -> Vec<std::io::IoSlice<'_>> {
        let mut v = Vec::with_capacity(self.chunks.len().min(Self::MAX_SLICES));
        for (i, c) in self.chunks.iter().take(Self::MAX_SLICES).enumerate() {
            v.push(std::io::IoSlice::new(if i == 0 { &c[self.sent..] } else { c }));
        }
        v
    }

    /// Forgets `n` sent bytes.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front() else { return };
            let left = front.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            self.chunks.pop_front();
        }
    }
}

/// `ip:port` like Envoy's address strings ("" if unknown).
fn addr_text(a: std::io::Result<std::net::SocketAddr>) -> String {
    a.map(|a| format!("{}:{}", a.ip(), a.port())).unwrap_or_default()
}

impl EnvoyNetworkFilter for OwnedSocket {
    fn read_into(&self, _out: &mut Vec<u8>) -> usize {
        0 // the loop reads the socket itself and hands the bytes to the connection
    }
    fn drain_read(&self, _len: usize) {}
    fn write(&self, data: &[u8], _end_stream: bool) {
        if self.close.get().is_some() || data.is_empty() {
            return;
        }
        let mut out = self.out.borrow_mut();
        if out.is_empty() {
            self.notes.flushes.borrow_mut().push(self.id);
        }
        // Sent when the loop settles the callback, or when the socket is writable again.
        out.push(data);
    }
    fn close(&self, how: CloseType, _details: &str) {
        if self.close.replace(Some(how)).is_none() {
            self.notes.closes.borrow_mut().push(self.id);
        }
    }
    fn ensure_reading(&self) {}
    fn connection_id(&self) -> u64 {
        self.id
    }
    fn worker_index(&self) -> u32 {
        self.worker
    }
    fn remote_address(&self) -> String {
        addr_text(self.stream.peer_addr())
    }
    fn local_address(&self) -> String {
        addr_text(self.stream.local_addr())
    }
    fn is_ssl(&self) -> bool {
        false
    }
    fn filter_state(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    fn set_metadata(&self, _namespace: &str, _key: &str, _value: &str) {
        // No Envoy connection, so no dynamic metadata to write to.
    }
    fn take_socket(&self) -> Option<std::net::TcpStream> {
        None // already the module's
    }
    fn scheduler_new(&self) -> Sched {
        unreachable!("an owned socket's endpoint is made by its loop")
    }
}

/// The state of one socket loop, on its thread.
struct SocketLoop {
    shared: &'static Shared,
    poll: Poll,
    runtime: Arc<Runtime>,
    sockets: HashMap<u64, Rc<OwnedSocket>>,
    /// Closed sockets still writing what they hold, until their deadline.
    lingering: HashMap<u64, (Rc<OwnedSocket>, u64)>,
    notes: Rc<Notes>,
    scratch: Vec<u8>,
    /// Sockets whose last read stopped at [`READ_BURST`]: read again in the next round.
    unread: Vec<u64>,
}

impl SocketLoop {
    fn new(shared: &'static Shared, poll: Poll, runtime: Arc<Runtime>) -> SocketLoop {
        SocketLoop {
            shared,
            poll,
            runtime,
            sockets: HashMap::new(),
            lingering: HashMap::new(),
            notes: Rc::new(Notes::default()),
            scratch: vec![0; READ_CHUNK],
            unread: Vec::new(),
        }
    }

    fn run(mut self) {
        crate::stats::defer_on_this_thread();
        let period = super::bootstrap::CLOCK_PERIOD_MS;
        let mut events = Events::with_capacity(1024);
        let mut next_tick = now_ms() + period;
        loop {
            let mut timeout = next_tick.saturating_sub(now_ms());
            {
                let mut g = self.shared.inbox.lock();
                if g.stop {
                    break;
                }
                if g.adopt.is_empty() && g.ready.is_empty() && self.unread.is_empty() {
                    g.sleeping = true;
                } else {
                    timeout = 0;
                }
            }
            let polled = self.poll.poll(&mut events, Some(std::time::Duration::from_millis(timeout)));
            self.shared.inbox.lock().sleeping = false;
            if let Err(e) = polled {
                if e.kind() != ErrorKind::Interrupted {
                    rt_log!(Error, "reverse_tunnel: socket loop {} poll failed: {}", self.shared.worker, e);
                }
                continue;
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    continue;
                }
                let id = ev.token().0 as u64;
                if ev.is_writable() {
                    self.on_writable(id);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(id);
                }
                self.settle();
            }
            for id in std::mem::take(&mut self.unread) {
                self.on_readable(id);
                self.settle();
            }
            self.take_inbox();
            if now_ms() >= next_tick {
                next_tick = now_ms() + period;
                self.tick();
            }
        }
        // Shutdown: the sockets close when their connections are dropped with this thread's
        // registry; nothing is sent and no mail is handled any more.
        self.sockets.clear();
        self.lingering.clear();
    }

    /// Takes new sockets and delivers mail.
    fn take_inbox(&mut self) {
        let (adopt, ready) = {
            let mut g = self.shared.inbox.lock();
            (std::mem::take(&mut g.adopt), std::mem::take(&mut g.ready))
        };
        for a in adopt {
            self.adopt(a);
            self.settle();
        }
        for id in ready {
            if let Some(conn) = worker::get(id) {
                self.guarded(id, "socket loop mail", || network::on_scheduled(&conn));
                self.settle();
            }
        }
    }

    /// Registers a new socket and starts its connection (the handshake's deadline, as on a
    /// handshake-listener connection), then hands it the bytes Envoy already read.
    fn adopt(&mut self, Adopted { stream, settings, read }: Adopted) {
        if let Err(e) = stream.set_nonblocking(true) {
            rt_log!(Warn, "reverse_tunnel: owned socket dropped: {}", e);
            return;
        }
        let mut stream = TcpStream::from_std(stream);
        let id = NEXT_OWNED_ID.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.poll.registry().register(&mut stream, Token(id as usize), Interest::READABLE | Interest::WRITABLE) {
            rt_log!(Warn, "reverse_tunnel: owned socket dropped: {}", e);
            return;
        }
        let worker = self.shared.worker;
        let sock = Rc::new(OwnedSocket::new(id, worker, stream, self.notes.clone()));
        let ep = Endpoint::with_sched(id, worker, Sched::Loop(LoopSched { shared: self.shared, conn_id: id }));
        let conn: Rc<dyn Connection> = Rc::new(Conn::new(sock.clone(), ep, self.runtime.clone(), TunnelConn::new(settings, now_ms())));
        self.sockets.insert(id, sock);
        worker::insert(id, conn.clone());
        self.guarded(id, "socket loop new", || network::on_new_connection(&conn));
        if !read.is_empty() {
            self.guarded(id, "socket loop read", || network::deliver_read(&conn, read, false));
        }
    }

    fn on_readable(&mut self, id: u64) {
        let Some(sock) = self.sockets.get(&id).cloned() else { return };
        if sock.close.get().is_some() {
            return;
        }
        let burst = sock.read_burst(&mut self.scratch);
        if burst.more {
            self.unread.push(id);
        }
        if !burst.data.is_empty() {
            if let Some(conn) = worker::get(id) {
                self.guarded(id, "socket loop read", || network::deliver_read(&conn, burst.data, false));
            }
        }
        if burst.closed {
            sock.fail();
        }
    }

    fn on_writable(&mut self, id: u64) {
        if let Some(sock) = self.sockets.get(&id) {
            sock.flush();
        } else if let Some((sock, _)) = self.lingering.get(&id) {
            if sock.flush() {
                self.lingering.remove(&id);
            }
        }
    }

    /// Runs `f` for connection `id`; a panic (caught, logged and counted) closes that
    /// connection only.
    fn guarded(&self, id: u64, what: &str, f: impl FnOnce()) {
        let ok = crate::ffi::guard(what, false, || {
            f();
            true
        });
        if !ok {
            if let Some(sock) = self.sockets.get(&id) {
                sock.close(CloseType::NoFlush, "reverse_tunnel_internal_error");
            }
        }
    }

    /// Carries out what the last callback asked for: sends the bytes it wrote, then the closes:
    /// the connection's close event and destroy, as Envoy would run them, then the socket (kept
    /// a while if it has bytes to flush).
    fn settle(&mut self) {
        loop {
            let flushes = std::mem::take(&mut *self.notes.flushes.borrow_mut());
            for id in flushes {
                if let Some(sock) = self.sockets.get(&id) {
                    sock.flush();
                }
            }
            let ids = std::mem::take(&mut *self.notes.closes.borrow_mut());
            if ids.is_empty() && self.notes.flushes.borrow().is_empty() {
                return;
            }
            for id in ids {
                let Some(sock) = self.sockets.remove(&id) else { continue };
                if let Some(conn) = worker::get(id) {
                    let event = if sock.remote_closed.get() { ConnectionEvent::RemoteClose } else { ConnectionEvent::LocalClose };
                    self.guarded(id, "socket loop close", || {
                        network::on_event(&conn, event);
                        network::on_destroy(conn);
                    });
                }
                if sock.close.get() == Some(CloseType::FlushWrite) && !sock.remote_closed.get() && !sock.flush() {
                    self.lingering.insert(id, (sock, now_ms() + LINGER_MS));
                }
            }
        }
    }

    /// The loop's clock tick: due deadlines of its connections, lingering sockets past theirs.
    fn tick(&mut self) {
        let (rt, worker) = (&self.runtime, self.shared.worker);
        crate::ffi::guard("socket loop tick", (), || worker::run_worker_tick(rt, worker));
        self.settle();
        let now = now_ms();
        self.lingering.retain(|_, (_, deadline)| *deadline > now);
    }
}

#[cfg(test)]
mod tests;
