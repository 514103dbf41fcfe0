//! A recording TCP relay: put between an initiator and the responder's handshake listener, it
//! forwards every byte both ways unchanged and keeps a copy, so a test can check what crossed the
//! network in cleartext (the inner-TLS tests: no request or response byte in the clear).
//!
//! One thread accepts, two threads per connection copy (one per direction). Everything stops on
//! Drop: the listener is woken by a throw-away connection, every socket is shut down and every
//! thread joined.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// Bytes seen on the relay, per direction, over all connections (in arrival order per
/// direction).
#[derive(Default)]
struct Recorded {
    /// Client (the initiator) to target (the responder).
    up: Vec<u8>,
    /// Target to client.
    down: Vec<u8>,
    /// Connections accepted so far.
    connections: u64,
}

type Sockets = Arc<Mutex<Vec<TcpStream>>>;
type Threads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// A relay on a free 127.0.0.1 port forwarding to `127.0.0.1:<target>`, recording both ways.
pub struct CaptureRelay {
    port: u16,
    stopping: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    sockets: Sockets,
    threads: Threads,
    acceptor: Option<JoinHandle<()>>,
}

impl CaptureRelay {
    /// Starts relaying to `127.0.0.1:<target_port>`.
    pub fn start(target_port: u16) -> Result<CaptureRelay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let stopping = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let sockets: Sockets = Arc::new(Mutex::new(Vec::new()));
        let threads: Threads = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stopping, recorded, sockets, threads) =
                (stopping.clone(), recorded.clone(), sockets.clone(), threads.clone());
            std::thread::Builder::new()
                .name("capture-relay".into())
                .spawn(move || accept_loop(listener, target_port, stopping, recorded, sockets, threads))
                .map_err(|e| Error(format!("cannot start the capture relay: {e}")))?
        };
        Ok(CaptureRelay { port, stopping, recorded, sockets, threads, acceptor: Some(acceptor) })
    }

    /// The port to dial instead of the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.lock().connections
    }

    /// Total bytes recorded (both directions).
    pub fn bytes(&self) -> usize {
        let r = self.lock();
        r.up.len() + r.down.len()
    }

    /// True if `needle` occurs in the bytes recorded in either direction.
    pub fn contains(&self, needle: &[u8]) -> bool {
        let r = self.lock();
        find(&r.up, needle) || find(&r.down, needle)
    }

    /// Copies of the bytes recorded so far: (client to target, target to client).
    pub fn snapshot(&self) -> (Vec<u8>, Vec<u8>) {
        let r = self.lock();
        (r.up.clone(), r.down.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops accepting, closes every relayed connection and joins all threads (idempotent).
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        let _ = acceptor.join();
        for s in std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = t.join();
        }
    }
}

impl Drop for CaptureRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if `needle` (non-empty) occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn accept_loop(
    listener: TcpListener,
    target: u16,
    stopping: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    sockets: Sockets,
    threads: Threads,
) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        recorded.lock().unwrap_or_else(|p| p.into_inner()).connections += 1;
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
        {
            let mut socks = sockets.lock().unwrap_or_else(|p| p.into_inner());
            for s in [&client, &server] {
                if let Ok(s) = s.try_clone() {
                    socks.push(s);
                }
            }
        }
        let up = spawn_copy(client, server, recorded.clone(), true);
        let down = spawn_copy(s2, c2, recorded.clone(), false);
        let mut ts = threads.lock().unwrap_or_else(|p| p.into_inner());
        ts.extend(up);
        ts.extend(down);
    }
}

fn spawn_copy(
    mut from: TcpStream,
    mut to: TcpStream,
    recorded: Arc<Mutex<Recorded>>,
    upward: bool,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(if upward { "capture-up".into() } else { "capture-down".into() })
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
                    if upward { &mut r.up } else { &mut r.down }.extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // Pass the half-close on, so each side sees the other's close.
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        })
        .ok()
}
