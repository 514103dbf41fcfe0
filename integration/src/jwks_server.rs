//! A tiny in-process HTTP/1.1 server publishing a JWKS, for the remote-JWKS tests of
//! `jwt_validator`: `GET` on any path answers `200` with the current document, and it can be
//! switched to an outage (every connection closed without an answer, which Envoy's HTTP callout
//! reports as a reset) and back. One thread; one request per connection (`connection: close`).

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::read_head;
use crate::{Error, Result};

/// Shared state of the server thread.
#[derive(Default)]
struct State {
    body: Mutex<String>,
    down: AtomicBool,
    served: AtomicU64,
    refused: AtomicU64,
    stopping: AtomicBool,
}

/// The server (stops and joins its thread on Drop).
pub struct JwksServer {
    port: u16,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Starts on a free 127.0.0.1 port, serving `jwks`.
    pub fn start(jwks: &str) -> Result<JwksServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State { body: Mutex::new(jwks.to_string()), ..State::default() });
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("jwks-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        serve(&s, c);
                    }
                }
            })
            .map_err(|e| Error(format!("cannot start the JWKS server thread: {e}")))?;
        Ok(JwksServer { port, state, thread: Some(thread) })
    }

    /// The listening port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Outage on (`true`: connections are closed unanswered) or off.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Replaces the published document.
    pub fn set_jwks(&self, jwks: &str) {
        *self.state.body.lock().unwrap_or_else(|p| p.into_inner()) = jwks.to_string();
    }

    /// Requests answered with the JWKS so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Connections closed unanswered (outage) so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// Answers one connection.
fn serve(s: &State, mut c: TcpStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let head = match c.try_clone() {
        Ok(r) => read_head(&mut BufReader::new(r)),
        Err(_) => return,
    };
    if !matches!(head, Ok(Some(_))) {
        return;
    }
    if s.down.load(Ordering::SeqCst) {
        s.refused.fetch_add(1, Ordering::SeqCst);
        let _ = c.shutdown(Shutdown::Both);
        return;
    }
    let body = s.body.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if c.write_all(resp.as_bytes()).is_ok() {
        s.served.fetch_add(1, Ordering::SeqCst);
    }
    let _ = c.shutdown(Shutdown::Write);
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throw-away connection.
        let _ = TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
