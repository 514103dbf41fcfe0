//! An in-process HTTP/1.1 backend: the "local service" behind an initiator.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{body_kind, connection_has, read_body, read_head};
use crate::{Error, Result};

/// Open connections of a backend: a handle to each socket (to shut it down) and its thread.
type ConnList = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// Longest delay a `delay_ms=` query can ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The `delay_ms=<n>` of a request target's query string (capped at [`MAX_DELAY`]), if any.
pub fn requested_delay(target: &str) -> Option<Duration> {
    let (_, query) = target.split_once('?')?;
    let ms = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_millis(ms).min(MAX_DELAY))
}

/// The `bytes=<n>` of a request target's query string, if any: the backend then answers with
/// [`pattern_bytes`]`(n)` instead of its name line (large, checkable response bodies).
pub fn requested_bytes(target: &str) -> Option<usize> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("bytes="))?.parse::<usize>().ok()
}

/// `n` bytes of a fixed pattern (byte `i` is `(i * 31 + i / 65_521) % 251`): a response body
/// whose every byte a client can check, with no period a shifted or repeated chunk could match.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i.wrapping_mul(31) + i / 65_521) % 251) as u8).collect()
}

/// The `slow_read_ms=<n>` of a request target's query string, if any: the backend then reads a
/// request body 64 KiB at a time with `n` ms between reads (a slow node, for back-pressure tests).
pub fn requested_slow_read(target: &str) -> Option<Duration> {
    let (_, query) = target.split_once('?')?;
    let ms = query.split('&').find_map(|kv| kv.strip_prefix("slow_read_ms="))?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms.min(1000)))
}

fn read_slowly(r: &mut impl std::io::Read, n: usize, pause: Duration) -> Result<Vec<u8>> {
    let mut body = vec![0u8; n];
    let mut at = 0;
    while at < n {
        let end = (at + 64 * 1024).min(n);
        r.read_exact(&mut body[at..end])?;
        at = end;
        std::thread::sleep(pause);
    }
    Ok(body)
}

/// What the backend answers to `POST /digest...`: the request body's length and FNV-1a 64 hash
/// (a fingerprint for tests that upload much and want a small answer; not cryptographic).
pub fn body_digest(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("len={} fnv1a64={h:016x}\n", body.len())
}

/// Idle keep-alive connections are closed by the backend after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A multi-threaded HTTP/1.1 server on a free 127.0.0.1 port (one thread per connection,
/// keep-alive supported). Every request gets `200` with body `backend <name> path=<path>\n`.
/// A request whose query string has `delay_ms=<n>` is answered after sleeping `n` ms (at most
/// [`MAX_DELAY`]): a slow backend, to keep a request in flight. `POST /echo...` answers with the
/// request body; `?bytes=<n>` answers with [`pattern_bytes`]`(n)` (written in 64 KiB pieces).
/// Stops (closing all connections and joining its threads) on Drop.
pub struct Backend {
    name: String,
    port: u16,
    served: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    conns: ConnList,
    acceptor: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend named `name` on a free port.
    pub fn start(name: &str) -> Result<Backend> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: ConnList = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (name, served, stopping, conns) =
                (name.to_string(), served.clone(), stopping.clone(), conns.clone());
            std::thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || accept_loop(listener, name, served, stopping, conns))
                .map_err(|e| Error(format!("cannot start backend thread: {e}")))?
        };
        Ok(Backend {
            name: name.to_string(),
            port,
            served,
            stopping,
            conns,
            acceptor: Some(acceptor),
        })
    }

    /// The backend's name (appears in every response body).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The listening port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of requests answered so far.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// The body this backend returns for `path`.
    pub fn expected_body(&self, path: &str) -> String {
        expected_body(&self.name, path)
    }

    /// Stops accepting, closes every connection and joins all threads (idempotent).
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throw-away connection.
        let _ = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        let _ = acceptor.join();
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body a backend named `name` returns for `path`: `backend <name> path=<path>\n`.
pub fn expected_body(name: &str, path: &str) -> String {
    format!("backend {name} path={path}\n")
}

fn accept_loop(
    listener: TcpListener,
    name: String,
    served: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    conns: ConnList,
) {
    for incoming in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = incoming else { continue };
        let Ok(keep) = stream.try_clone() else { continue };
        let (name, served) = (name.clone(), served.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("backend-{name}-conn"))
            .spawn(move || {
                let _ = serve_connection(stream, &name, &served);
            });
        if let Ok(handle) = spawned {
            let mut list = conns.lock().unwrap_or_else(|p| p.into_inner());
            // Forget connections that are already finished.
            let (done, live): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *list).into_iter().partition(|(_, h)| h.is_finished());
            *list = live;
            list.push((keep, handle));
            drop(list);
            for (_, h) in done {
                let _ = h.join();
            }
        }
    }
}

fn serve_connection(stream: TcpStream, name: &str, served: &AtomicU64) -> Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some((start, headers)) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = start.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or(""),
        );
        if !version.starts_with("HTTP/1.") {
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            return Ok(());
        }
        let kind = body_kind(&headers, true)?;
        let request_body = match (requested_slow_read(&target), &kind) {
            (Some(pause), crate::http::BodyKind::Length(n)) => read_slowly(&mut reader, *n, pause)?,
            _ => read_body(&mut reader, kind)?,
        };
        if let Some(d) = requested_delay(&target) {
            std::thread::sleep(d);
        }
        let close = connection_has(&headers, "close")
            || (version == "HTTP/1.0" && !connection_has(&headers, "keep-alive"));
        let body: Vec<u8> = if method == "POST" && target.starts_with("/echo") {
            request_body
        } else if method == "POST" && target.starts_with("/digest") {
            body_digest(&request_body).into_bytes()
        } else if let Some(n) = requested_bytes(&target) {
            pattern_bytes(n)
        } else {
            expected_body(name, &target).into_bytes()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        // Counted before the answer leaves, so a client that has its response always sees it
        // counted (tests compare the count right after a response).
        served.fetch_add(1, Ordering::SeqCst);
        reader.get_mut().write_all(head.as_bytes())?;
        for piece in body.chunks(64 * 1024) {
            reader.get_mut().write_all(piece)?;
        }
        if close {
            let _ = reader.get_ref().shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{http_get, HttpConn};

    #[test]
    fn answers_keep_alive_and_fresh_requests() {
        let b = Backend::start("unit").unwrap();
        let mut c = HttpConn::connect(b.port()).unwrap();
        for i in 0..5 {
            let r = c.get(&format!("/k{i}"), &[]).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, format!("backend unit path=/k{i}\n"));
        }
        let r = http_get(b.port(), "/fresh?q=1", &[]).unwrap();
        assert_eq!(r.body, b.expected_body("/fresh?q=1"));
        assert_eq!(b.requests_served(), 6);
    }

    #[test]
    fn delay_ms_slows_the_answer() {
        assert_eq!(requested_delay("/a?x=1&delay_ms=250"), Some(Duration::from_millis(250)));
        assert_eq!(requested_delay("/a?delay_ms=99999999"), Some(MAX_DELAY));
        assert_eq!(requested_delay("/a?delay_ms=x"), None);
        assert_eq!(requested_delay("/a/delay_ms=5"), None);
        let b = Backend::start("slow").unwrap();
        let t = std::time::Instant::now();
        let r = http_get(b.port(), "/s?delay_ms=300", &[]).unwrap();
        assert_eq!(r.body, b.expected_body("/s?delay_ms=300"));
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    }
}
