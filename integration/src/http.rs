//! A minimal HTTP/1.1 client on `std::net::TcpStream` (no external crate), plus the message
//! parsing shared with the in-process [`crate::Backend`].
//!
//! Supports `content-length`, `transfer-encoding: chunked` and close-delimited bodies, read/write
//! timeouts, and keep-alive connections ([`HttpConn`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// Default read/write timeout of client requests (longer than the responder's 10 s route timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest accepted header block or body (guards against runaway reads).
const MAX_SIZE: usize = 64 * 1024 * 1024;

/// One HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header fields in arrival order; names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body, decoded as UTF-8 (lossy).
    pub body: String,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// First value of header `name` (case-insensitive) in `headers`.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// True if a `connection` header lists `token` (case-insensitive).
pub fn connection_has(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Reads one CRLF (or LF) terminated line without the terminator. `Ok(None)` on EOF before any byte.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(*budget as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(Error::msg("HTTP header block too large"));
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(Error::msg("connection closed in the middle of a line"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// A start line and its header fields (names lower-cased).
pub type Head = (String, Vec<(String, String)>);

/// Reads a start line and header fields up to the empty line.
/// Returns `Ok(None)` if the peer closed the connection cleanly before sending anything.
pub fn read_head(r: &mut impl BufRead) -> Result<Option<Head>> {
    let mut budget = 64 * 1024;
    let start = match read_line(r, &mut budget)? {
        None => return Ok(None),
        Some(l) => l,
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut budget)?
            .ok_or_else(|| Error::msg("connection closed inside the header block"))?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| Error(format!("malformed header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some((start, headers)))
}

/// How the body of a message is delimited.
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(usize),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

/// The body framing announced by `headers` (`request` selects the request rules: no
/// close-delimited bodies).
pub fn body_kind(headers: &[(String, String)], request: bool) -> Result<BodyKind> {
    if let Some(te) = find_header(headers, "transfer-encoding") {
        if te.to_ascii_lowercase().contains("chunked") {
            return Ok(BodyKind::Chunked);
        }
    }
    if let Some(cl) = find_header(headers, "content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| Error(format!("bad content-length {cl:?}")))?;
        if n > MAX_SIZE {
            return Err(Error(format!("content-length {n} too large")));
        }
        return Ok(BodyKind::Length(n));
    }
    Ok(if request { BodyKind::None } else { BodyKind::UntilClose })
}

/// Reads a body framed as `kind`.
pub fn read_body(r: &mut impl BufRead, kind: BodyKind) -> Result<Vec<u8>> {
    match kind {
        BodyKind::None => Ok(Vec::new()),
        BodyKind::Length(n) => {
            let mut body = vec![0u8; n];
            r.read_exact(&mut body)
                .map_err(|e| Error(format!("reading a {n}-byte body: {e}")))?;
            Ok(body)
        }
        BodyKind::UntilClose => {
            let mut body = Vec::new();
            r.take(MAX_SIZE as u64).read_to_end(&mut body)?;
            Ok(body)
        }
        BodyKind::Chunked => {
            let mut body = Vec::new();
            let mut budget = 64 * 1024;
            loop {
                let line = read_line(r, &mut budget)?
                    .ok_or_else(|| Error::msg("connection closed before a chunk size"))?;
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| Error(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    loop {
                        let t = read_line(r, &mut budget)?
                            .ok_or_else(|| Error::msg("connection closed inside the trailer"))?;
                        if t.is_empty() {
                            return Ok(body);
                        }
                    }
                }
                if body.len() + size > MAX_SIZE {
                    return Err(Error::msg("chunked body too large"));
                }
                let at = body.len();
                body.resize(at + size, 0);
                r.read_exact(&mut body[at..])?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
                if &crlf != b"\r\n" {
                    return Err(Error::msg("chunk not followed by CRLF"));
                }
                budget = 64 * 1024;
            }
        }
    }
}

/// A keep-alive HTTP/1.1 client connection to `127.0.0.1:<port>`.
///
/// Requests are sent one at a time. If the server answers with `connection: close` (or closes),
/// the connection is marked closed and the next request fails; use [`HttpConn::ensure_open`] to
/// reconnect explicitly.
pub struct HttpConn {
    port: u16,
    timeout: Duration,
    reader: BufReader<TcpStream>,
    closed: bool,
}

impl HttpConn {
    /// Connects with [`DEFAULT_TIMEOUT`].
    pub fn connect(port: u16) -> Result<HttpConn> {
        HttpConn::connect_timeout(port, DEFAULT_TIMEOUT)
    }

    /// Connects; `timeout` bounds the connect and every later read and write.
    pub fn connect_timeout(port: u16, timeout: Duration) -> Result<HttpConn> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error(format!("connect to 127.0.0.1:{port}: {e}")))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            port,
            timeout,
            reader: BufReader::new(stream),
            closed: false,
        })
    }

    /// The server port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True once the server signalled or performed a close.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reconnects if the connection is closed.
    pub fn ensure_open(&mut self) -> Result<()> {
        if self.closed {
            *self = HttpConn::connect_timeout(self.port, self.timeout)?;
        }
        Ok(())
    }

    /// Sends `GET path` with extra `headers` and reads the response.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.request("GET", path, headers, b"")
    }

    /// Sends one request (a non-empty `body` gets a `content-length`) and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        if self.closed {
            return Err(Error::msg("connection already closed by the server"));
        }
        let result = self.exchange(method, path, headers, body);
        if result.is_err() {
            self.closed = true;
        }
        result.map_err(|e| e.context(format!("{method} 127.0.0.1:{}{path}", self.port)))
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", self.port);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut wire = req.into_bytes();
        wire.extend_from_slice(body);
        self.reader.get_mut().write_all(&wire)?;

        let (start, resp_headers) = loop {
            let (start, hs) = read_head(&mut self.reader)?
                .ok_or_else(|| Error::msg("server closed the connection without a response"))?;
            let status = parse_status(&start)?;
            // Skip interim 1xx responses (except 101, which we never ask for).
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            break (start, hs);
        };
        let status = parse_status(&start)?;
        let kind = if method == "HEAD" || status == 204 || status == 304 {
            BodyKind::None
        } else {
            body_kind(&resp_headers, false)?
        };
        let until_close = matches!(kind, BodyKind::UntilClose);
        let body = read_body(&mut self.reader, kind)?;
        let http10 = start.starts_with("HTTP/1.0") && !connection_has(&resp_headers, "keep-alive");
        if until_close || http10 || connection_has(&resp_headers, "close") {
            self.closed = true;
            let _ = self.reader.get_ref().shutdown(Shutdown::Both);
        }
        Ok(Response {
            status,
            headers: resp_headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

fn parse_status(start: &str) -> Result<u16> {
    let mut parts = start.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(Error(format!("not an HTTP/1.x status line: {start:?}")));
    }
    parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error(format!("bad status line {start:?}")))
}

/// `GET path` on a fresh connection to `127.0.0.1:<port>` (sent with `connection: close`),
/// with [`DEFAULT_TIMEOUT`].
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    http_request(port, "GET", path, headers, b"")
}

/// Any method on a fresh connection (sent with `connection: close`), with [`DEFAULT_TIMEOUT`].
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    http_request_timeout(port, method, path, headers, body, DEFAULT_TIMEOUT)
}

/// Like [`http_request`] with an explicit timeout for connect, each read and each write.
pub fn http_request_timeout(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    let mut conn = HttpConn::connect_timeout(port, timeout)?;
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("connection", "close"));
    conn.request(method, path, &all, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn parses_chunked_and_length_bodies() {
        let mut r = Cursor::new(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nt: 1\r\n\r\n"[..]);
        let (start, hs) = read_head(&mut r).unwrap().unwrap();
        assert_eq!(parse_status(&start).unwrap(), 200);
        let b = read_body(&mut r, body_kind(&hs, false).unwrap()).unwrap();
        assert_eq!(b, b"abcdefg");

        let mut r = Cursor::new(&b"HTTP/1.1 503 x\r\ncontent-length: 3\r\n\r\nabcXYZ"[..]);
        let (_, hs) = read_head(&mut r).unwrap().unwrap();
        assert_eq!(read_body(&mut r, body_kind(&hs, false).unwrap()).unwrap(), b"abc");

        let mut r = Cursor::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc"[..]);
        let (_, hs) = read_head(&mut r).unwrap().unwrap();
        assert!(read_body(&mut r, body_kind(&hs, false).unwrap()).is_err());
    }
}
