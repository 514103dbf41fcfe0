//! Handshake conformance: our module against Envoy 1.40.0's built-in responder, byte by byte
//! (docs/protocol.md#handshake-request, #handshake-response, #after-the-accept, #filter-config,
//! #handshake-checks, #handshake-counters).
//!
//! Both responders run side by side (no initiators). Every case is sent as raw bytes on a fresh
//! TCP connection to each handshake port; the answer is read until the close (or, for an accepted
//! handshake, for a short hold while the connection must stay open) and reduced to: status line,
//! header lines (except `date`/`server`), decoded body, framing, whether the connection closed,
//! and which `reverse_tunnel.handshake.*` counters moved (ours are `rt.`-prefixed). The two answers
//! must be equal, except for the documented improvements (README "Where we differ"), which are
//! asserted separately against our expected answer. A table of every case is printed (run with
//! `--nocapture` to see it).
//!
//! Run (after `cargo build --release -p reverse_tunnel`):
//!
//! ```text
//! cargo test --release -p rt-integration --test conformance -- --test-threads=1 --nocapture
//! ```

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rt_integration::tmp::insert_sibling_lines;
use rt_integration::topology::{responder_vars, NODE_HEADER, READY_TIMEOUT};
use rt_integration::{
    serial,
    bail, ensure, free_port, free_ports, http_get, paths::require_module, render, wait_for, Check,
    Envoy, Responder, Result, TestDir,
};

/// How long a rejected connection may take to answer and close.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an accepted connection must stay open after the response (the brief: 200 ms).
const HOLD: Duration = Duration::from_millis(200);
/// How long we wait for a counter to move after a case.
const COUNTER_SETTLE: Duration = Duration::from_millis(600);
/// The exact accept response in plain mode (docs/protocol.md#handshake-response).
const ACCEPT_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Responders

/// Extra config for both responders: lines added next to `ping_interval` in the handshake
/// filter's `ReverseTunnel` message and next to `stat_prefix` in the bootstrap message.
#[derive(Clone, Default)]
struct Extra {
    filter: Vec<&'static str>,
    bootstrap: Vec<&'static str>,
    /// Built-in only: lines next to `host_id_format` in its `reverse_connection` cluster.
    builtin_cluster: Vec<&'static str>,
}

/// One running responder and its handshake port.
struct Side {
    kind: Responder,
    envoy: Envoy,
    /// Envoy's listener access log of the handshake listener: one line per closed connection,
    /// `%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel)%`.
    listener_log: PathBuf,
    handshake_port: u16,
    egress_port: u16,
}

impl Side {
    /// Starts `kind` from its usual template plus `extra`, with one worker, and waits until ready.
    fn start(dir: &TestDir, kind: Responder, extra: &Extra, tag: &str) -> Result<Side> {
        let ports = free_ports(3)?;
        let text = render(
            kind.template(),
            &{
                // Our template has its own `enable_tenant_isolation` line: set it through the
                // variable, not by adding a second key.
                let mut vars = responder_vars(ports[0], ports[1], ports[2], 3);
                if extra.bootstrap.contains(&"enable_tenant_isolation: true") {
                    vars.retain(|(k, _)| *k != "TENANT_ISOLATION");
                    vars.push(("TENANT_ISOLATION", "true".to_string()));
                }
                vars
            },
        )?;
        let text = insert_sibling_lines(&text, "ping_interval: 2s", &extra.filter)?;
        let bootstrap: Vec<&str> = extra
            .bootstrap
            .iter()
            .copied()
            .filter(|l| !(kind == Responder::Module && l.starts_with("enable_tenant_isolation")))
            .collect();
        let text = insert_sibling_lines(&text, "stat_prefix: upstream_rc", &bootstrap)?;
        let text = if kind == Responder::Builtin {
            insert_sibling_lines(
                &text,
                "host_id_format: \"%REQ(x-remote-node-id)%\"",
                &extra.builtin_cluster,
            )?
        } else {
            text
        };
        // Envoy's own listener access log on the handshake listener prints the validation
        // metadata the filter emits (docs/protocol.md#handshake-metadata).
        let listener_log = dir.file(&format!("{tag}-{}-listener.log", side_name(kind)));
        let access_log = format!(
            "  access_log: [{{name: envoy.access_loggers.file, typed_config: {{\"@type\": \
             type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: \"{}\", \
             log_format: {{text_format_source: {{inline_string: \"%DYNAMIC_METADATA({})%\\n\"}}}}}}}}]",
            listener_log.display(),
            METADATA_NAMESPACE
        );
        let text = insert_sibling_lines(&text, "- name: rt_handshake", &[access_log.as_str()])?;
        let name = format!("{tag}-{}.yaml", side_name(kind));
        let path: PathBuf = dir.file(&name);
        std::fs::write(&path, text)?;
        let mut envoy = Envoy::start(&path, 1, &[])?;
        envoy.wait_ready(READY_TIMEOUT)?;
        Ok(Side {
            kind,
            envoy,
            handshake_port: ports[1],
            egress_port: ports[2],
            listener_log,
        })
    }

    /// Prefix of the handshake counters (docs/protocol.md#handshake-counters; ours under namespace `rt`).
    fn counter_prefix(&self) -> &'static str {
        match self.kind {
            Responder::Module | Responder::Direct | Responder::Owned => "rt.reverse_tunnel.handshake.",
            Responder::Builtin => "reverse_tunnel.handshake.",
        }
    }

    /// The handshake counters, short name → value (missing counters are simply absent).
    fn counters(&mut self) -> Result<BTreeMap<String, u64>> {
        let prefix = self.counter_prefix();
        let mut out = BTreeMap::new();
        for (name, value) in self.envoy.stats_with_prefix(prefix)? {
            if let Ok(v) = value.trim().parse::<u64>() {
                out.insert(name[prefix.len()..].to_string(), v);
            }
        }
        Ok(out)
    }
}

fn side_name(kind: Responder) -> &'static str {
    match kind {
        Responder::Module | Responder::Direct | Responder::Owned => "ours",
        Responder::Builtin => "builtin",
    }
}

/// Counters whose value grew between `before` and `after`, as `name+delta`, sorted.
fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or(0);
            (*v > b).then(|| format!("{k}+{}", v - b))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The handshake request of docs/protocol.md#handshake-request as (name, value) headers, `host` adjusted.
fn base_headers(port: u16) -> Vec<(String, String)> {
    [
        ("host", format!("127.0.0.1:{port}")),
        (
            "x-envoy-reverse-tunnel-node-id",
            "downstream-node".to_string(),
        ),
        (
            "x-envoy-reverse-tunnel-cluster-id",
            "downstream-cluster".to_string(),
        ),
        (
            "x-envoy-reverse-tunnel-tenant-id",
            "downstream-tenant".to_string(),
        ),
        (
            "x-envoy-reverse-tunnel-upstream-cluster-name",
            "upstream-cluster".to_string(),
        ),
        (
            "x-envoy-reverse-tunnel-initiation-time",
            "1795315930843".to_string(),
        ),
        ("x-envoy-reverse-tunnel-worker-id", "worker_0".to_string()),
        ("x-envoy-reverse-tunnel-connection-id", "1".to_string()),
        ("content-length", "0".to_string()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

/// Builds a request head from a request line and headers (no body).
fn head(request_line: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut s = format!("{request_line}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

const LINE: &str = "GET /reverse_connections/request HTTP/1.1";

/// Sets header `name` (replacing its value) or appends it.
fn set(h: &mut Vec<(String, String)>, name: &str, value: &str) {
    match h.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = value.to_string(),
        None => h.push((name.to_string(), value.to_string())),
    }
}

/// Removes header `name`.
fn remove(h: &mut Vec<(String, String)>, name: &str) {
    h.retain(|(n, _)| n != name);
}

/// Inserts `(name, value)` right after `host` (where the upgrade headers sit, docs/protocol.md#handshake-request).
fn after_host(h: &mut Vec<(String, String)>, name: &str, value: &str) {
    let at = h
        .iter()
        .position(|(n, _)| n == "host")
        .map(|i| i + 1)
        .unwrap_or(0);
    h.insert(at, (name.to_string(), value.to_string()));
}

/// Valid request with a custom node id (keeps tunnels of different cases apart).
fn with_node(port: u16, node: &str) -> Vec<(String, String)> {
    let mut h = base_headers(port);
    set(&mut h, "x-envoy-reverse-tunnel-node-id", node);
    h
}

/// The upgrade-mode request (docs/protocol.md#handshake-request: `connection`/`upgrade` after `host`).
fn upgrade_headers(port: u16, node: &str) -> Vec<(String, String)> {
    let mut h = with_node(port, node);
    after_host(&mut h, "connection", "upgrade");
    h.insert(2, ("upgrade".to_string(), "reverse-tunnel".to_string()));
    // The strict pair validates the tenant id against this header (`tenant_id_format`).
    let tenant = h
        .iter()
        .find(|(n, _)| n == "x-envoy-reverse-tunnel-tenant-id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    h.push((TENANT_PROOF.to_string(), tenant));
    h
}

/// Header the strict pair's `validation.tenant_id_format` reads (`%REQ(x-tenant-proof)%`).
const TENANT_PROOF: &str = "x-tenant-proof";

// ---------------------------------------------------------------------------------------------
// Answers

/// A responder's answer to one case, reduced to what must match.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    /// Status line, e.g. `HTTP/1.1 400 Bad Request` (empty if nothing came back).
    status_line: String,
    /// Header lines in order, names lower-cased, without `date` and `server`.
    headers: Vec<String>,
    /// `chunked`, `length`, `close` (body delimited by the close) or `-` (no response).
    framing: String,
    /// Decoded body (lossy UTF-8).
    body: String,
    /// The connection was closed by the responder (within the hold / answer window).
    closed: bool,
    /// Counters that moved, `name+delta`.
    counters: Vec<String>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        let p = format!("{name}:");
        self.headers
            .iter()
            .find(|l| l.starts_with(&p))
            .map(|l| l[p.len()..].trim().to_string())
    }

    /// One-line summary for the table.
    fn summary(&self) -> String {
        if self.status_line.is_empty() {
            return format!(
                "(no response) {} [{}]",
                if self.closed { "closed" } else { "open" },
                self.counters.join(",")
            );
        }
        let mut extra = Vec::new();
        for h in ["content-type", "upgrade", "retry-after"] {
            if let Some(v) = self.header(h) {
                extra.push(format!("{h}={v}"));
            }
        }
        format!(
            "{} {:?} {} {} {{{}}} [{}]",
            self.status(),
            self.body,
            self.framing,
            if self.closed { "closed" } else { "open" },
            extra.join(" "),
            self.counters.join(",")
        )
    }
}

/// A parsed HTTP/1.x response and how many bytes it took.
struct Parsed {
    status_line: String,
    headers: Vec<String>,
    framing: String,
    body: String,
    len: usize,
}

/// Parses a complete response from `buf`; `eof` says the peer closed (a body without framing
/// then ends at the close). `None` while incomplete.
fn parse_response(buf: &[u8], eof: bool) -> Option<Parsed> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        let n = n.trim().to_ascii_lowercase();
        let v = v.trim();
        if n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        if n == "content-length" {
            length = v.parse().ok();
        }
        if n != "date" && n != "server" {
            headers.push(format!("{n}: {v}"));
        }
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &buf[end..];
    if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = rest[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_text = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            let data = line_end + 2;
            if rest.len() < data + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[data..data + size]);
            pos = data + size + 2;
            if size == 0 {
                break;
            }
        }
        return Some(Parsed {
            status_line,
            headers,
            framing: "chunked".into(),
            body: String::from_utf8_lossy(&body).into_owned(),
            len: end + pos,
        });
    }
    if let Some(n) = length {
        if rest.len() < n {
            return None;
        }
        return Some(Parsed {
            status_line,
            headers,
            framing: "length".into(),
            body: String::from_utf8_lossy(&rest[..n]).into_owned(),
            len: end + n,
        });
    }
    if status == 101 || status == 204 || status == 304 {
        return Some(Parsed {
            status_line,
            headers,
            framing: "none".into(),
            body: String::new(),
            len: end,
        });
    }
    eof.then(|| Parsed {
        status_line,
        headers,
        framing: "close".into(),
        body: String::from_utf8_lossy(rest).into_owned(),
        len: buf.len(),
    })
}

/// What came back on one connection, before counters are looked at.
struct Exchange {
    answer: Answer,
    /// The raw response bytes (only the response, not what followed it).
    raw: Vec<u8>,
    /// The still-open connection of an accepted handshake (kept by callers that need it).
    stream: Option<TcpStream>,
}

/// Sends `bytes` on a fresh connection to `port` and reads the answer (see the module docs).
/// An accepted connection (200/101) is held for [`HOLD`], echoing any `RPING`, and must not
/// close; otherwise the read waits up to [`ANSWER_TIMEOUT`] for the close.
fn exchange(port: u16, bytes: &[u8], answer_timeout: Duration) -> Result<Exchange> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut eof = false;
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + answer_timeout;
    let mut parsed: Option<Parsed> = None;
    while Instant::now() < deadline && !eof {
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                eof = true
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(p) = parse_response(&buf, eof) {
            parsed = Some(p);
            break;
        }
    }
    if parsed.is_none() && eof {
        parsed = parse_response(&buf, true);
    }
    let Some(p) = parsed else {
        let status_line = if buf.is_empty() {
            String::new()
        } else {
            format!("(unparsable: {:?})", String::from_utf8_lossy(&buf))
        };
        return Ok(Exchange {
            answer: Answer {
                status_line,
                headers: vec![],
                framing: "-".into(),
                body: String::new(),
                closed: eof,
                counters: vec![],
            },
            raw: buf,
            stream: None,
        });
    };
    let raw = buf[..p.len].to_vec();
    let mut after = buf[p.len..].to_vec();
    let status: u16 = p
        .status_line
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let accepted = status == 200 || status == 101;
    // Accepted: hold and watch; rejected: wait for the close.
    let until = Instant::now() + if accepted { HOLD } else { answer_timeout };
    while !eof && Instant::now() < until {
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => {
                after.extend_from_slice(&chunk[..n]);
                while after.starts_with(b"RPING") {
                    let _ = s.write_all(b"RPING");
                    after.drain(..5);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => eof = true,
        }
    }
    Ok(Exchange {
        answer: Answer {
            status_line: p.status_line,
            headers: p.headers,
            framing: p.framing,
            body: p.body,
            closed: eof,
            counters: vec![],
        },
        raw,
        stream: if eof { None } else { Some(s) },
    })
}

// ---------------------------------------------------------------------------------------------
// Cases

/// What the two answers must satisfy.
#[derive(Clone, Copy)]
enum Expect {
    /// Equal answers (status line, headers, body, framing, closed, counters).
    Same,
    /// Documented improvement: ours answers `status` with `body`, closes and counts
    /// `parse_error`; the built-in answers `builtin_status` (checked, to keep the claim honest).
    Ours {
        status: u16,
        body: &'static str,
        builtin_status: u16,
    },
    /// Equal, except that ours adds a `retry-after` header (README: 429 carries `retry-after`).
    SameButRetryAfter,
}

/// One row of the table.
struct Case {
    name: &'static str,
    /// The bytes to send, given the responder's handshake port (for `host`).
    bytes: Box<dyn Fn(u16) -> Vec<u8>>,
    expect: Expect,
    /// For an accepted case: the node id the tunnel must be registered under (first value wins).
    registered_as: Option<&'static str>,
}

fn case(name: &'static str, expect: Expect, bytes: impl Fn(u16) -> Vec<u8> + 'static) -> Case {
    Case {
        name,
        bytes: Box::new(bytes),
        expect,
        registered_as: None,
    }
}

/// Cases with the default `ReverseTunnel` config (docs/protocol.md#handshake-response rows reachable without
/// extra config, plus the parser edge cases of the brief).
fn default_cases() -> Vec<Case> {
    use Expect::*;
    let mut v = vec![
        case("valid request (captured 1.40.0 bytes)", Same, |p| head(LINE, &base_headers(p))),
        case("upper-case header names", Same, |p| {
            let h: Vec<(String, String)> = with_node(p, "upper-node")
                .into_iter()
                .map(|(n, v)| (n.to_ascii_uppercase(), v))
                .collect();
            head(LINE, &h)
        }),
        case(
            "lower-case method 'get'",
            Same,
            |p| head("get /reverse_connections/request HTTP/1.1", &with_node(p, "lower-method")),
        ),
        case(
            "mixed-case method 'Get'",
            Same,
            |p| head("Get /reverse_connections/request HTTP/1.1", &with_node(p, "mixed-method")),
        ),
        case(
            "unknown method FOO",
            Same,
            |p| head("FOO /reverse_connections/request HTTP/1.1", &base_headers(p)),
        ),
        case("id with a space", Same, |p| head(LINE, &with_node(p, "my node"))),
        case("headers over 60 KiB (431)", Same, |p| {
            let mut h = with_node(p, "big-node");
            h.push(("x-big".to_string(), "a".repeat(70 * 1024)));
            head(LINE, &h)
        }),
        case("more than 100 headers (431)", Same, |p| {
            let mut h = with_node(p, "many-node");
            for i in 0..120 {
                h.push((format!("x-h{i}"), "v".to_string()));
            }
            head(LINE, &h)
        }),
        case("query string in the path", Same, |p| {
            head("GET /reverse_connections/request?x=1 HTTP/1.1", &base_headers(p))
        }),
        case("wrong path", Same, |p| head("GET /other HTTP/1.1", &base_headers(p))),
        case("wrong method POST", Same, |p| {
            head("POST /reverse_connections/request HTTP/1.1", &base_headers(p))
        }),
        case("HTTP/1.0 request line", Same, |p| {
            head("GET /reverse_connections/request HTTP/1.0", &base_headers(p))
        }),
        case("content-length 5 + body", Same, |p| {
            let mut h = base_headers(p);
            set(&mut h, "content-length", "5");
            let mut b = head(LINE, &h);
            b.extend_from_slice(b"hello");
            b
        }),
        case("content-length 5, no body sent", Same, |p| {
            let mut h = base_headers(p);
            set(&mut h, "content-length", "5");
            head(LINE, &h)
        }),
        case("chunked body", Same, |p| {
            let mut h = base_headers(p);
            remove(&mut h, "content-length");
            h.push(("transfer-encoding".into(), "chunked".into()));
            let mut b = head(LINE, &h);
            b.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
            b
        }),
        case("missing node-id", Same, |p| {
            let mut h = base_headers(p);
            remove(&mut h, "x-envoy-reverse-tunnel-node-id");
            head(LINE, &h)
        }),
        case("missing cluster-id", Same, |p| {
            let mut h = base_headers(p);
            remove(&mut h, "x-envoy-reverse-tunnel-cluster-id");
            head(LINE, &h)
        }),
        case("missing tenant-id", Same, |p| {
            let mut h = base_headers(p);
            remove(&mut h, "x-envoy-reverse-tunnel-tenant-id");
            head(LINE, &h)
        }),
        case("empty tenant-id", Same, |p| {
            let mut h = base_headers(p);
            set(&mut h, "x-envoy-reverse-tunnel-tenant-id", "");
            head(LINE, &h)
        }),
        case("garbage bytes", Same, |_| b"HELLO WORLD\r\n\r\n".to_vec()),
        case("binary garbage", Same, |_| vec![0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0x00, b'\r', b'\n', b'\r', b'\n']),
        case(
            "empty node-id",
            Ours { status: 400, body: "Empty node-id or cluster-id header value", builtin_status: 200 },
            |p| head(LINE, &with_node(p, "")),
        ),
        case(
            "empty cluster-id",
            Ours { status: 400, body: "Empty node-id or cluster-id header value", builtin_status: 200 },
            |p| {
                let mut h = with_node(p, "empty-cluster-node");
                set(&mut h, "x-envoy-reverse-tunnel-cluster-id", "");
                head(LINE, &h)
            },
        ),
        case(
            "bytes pipelined after the request",
            Ours { status: 400, body: "Unexpected bytes after reverse tunnel handshake", builtin_status: 200 },
            |p| {
                let mut b = head(LINE, &with_node(p, "pipelined-node"));
                b.extend_from_slice(b"RPING");
                b
            },
        ),
    ];
    let mut dup = case("duplicate node-id header (first wins)", Same, |p| {
        let mut h = with_node(p, "dup-first");
        let at = h
            .iter()
            .position(|(n, _)| n == "x-envoy-reverse-tunnel-node-id")
            .unwrap_or(0)
            + 1;
        h.insert(
            at,
            ("x-envoy-reverse-tunnel-node-id".into(), "dup-second".into()),
        );
        head(LINE, &h)
    });
    dup.registered_as = Some("dup-first");
    v.insert(2, dup);
    v
}

/// Config of the "strict" pair: upgrade mode, required cluster name, tenant isolation and a
/// connection cap of 1 per node (docs/protocol.md#handshake-response rows that need config).
fn strict_extra() -> Extra {
    Extra {
        filter: vec![
            "use_http_upgrade: true",
            "required_cluster_name: upstream-cluster",
            "enable_connection_limit: true",
            "validation: {tenant_id_format: \"%REQ(x-tenant-proof)%\", emit_dynamic_metadata: true}",
        ],
        bootstrap: vec![
            "enable_tenant_isolation: true",
            "max_connections_per_node: 1",
        ],
        // The built-in refuses tenant isolation without a tenant_id_format on its cluster.
        builtin_cluster: vec!["tenant_id_format: \"%REQ(x-remote-tenant-id)%\""],
    }
}

fn strict_cases() -> Vec<Case> {
    use Expect::*;
    vec![
        case("upgrade: valid request (101)", Same, |p| {
            head(LINE, &upgrade_headers(p, "cap-node"))
        }),
        case("upgrade: only `upgrade`, no `connection`", Same, |p| {
            let mut h = upgrade_headers(p, "no-connection-node");
            remove(&mut h, "connection");
            head(LINE, &h)
        }),
        case("upgrade: header missing", Same, |p| {
            head(LINE, &with_node(p, "no-upgrade-node"))
        }),
        case("upgrade: wrong protocol", Same, |p| {
            let mut h = upgrade_headers(p, "ws-node");
            set(&mut h, "upgrade", "websocket");
            head(LINE, &h)
        }),
        case("tenant isolation: ':' in node id", Same, |p| {
            head(LINE, &upgrade_headers(p, "a:b"))
        }),
        case("required cluster name: header missing", Same, |p| {
            let mut h = upgrade_headers(p, "no-cluster-name-node");
            remove(&mut h, "x-envoy-reverse-tunnel-upstream-cluster-name");
            head(LINE, &h)
        }),
        case("required cluster name: mismatch", Same, |p| {
            let mut h = upgrade_headers(p, "mismatch-node");
            set(
                &mut h,
                "x-envoy-reverse-tunnel-upstream-cluster-name",
                "other-cluster",
            );
            head(LINE, &h)
        }),
        case("id format: header the format reads is missing (renders `-`, 403)", Same, |p| {
            let mut h = upgrade_headers(p, "no-proof-node");
            remove(&mut h, TENANT_PROOF);
            head(LINE, &h)
        }),
        case("id format: rendered tenant differs from the tenant sent (403)", Same, |p| {
            let mut h = upgrade_headers(p, "bad-proof-node");
            set(&mut h, TENANT_PROOF, "someone-else");
            head(LINE, &h)
        }),
        case("connection limit reached (429)", SameButRetryAfter, |p| {
            head(LINE, &upgrade_headers(p, "cap-node"))
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the table

/// One table row: the case and both answers.
struct Row {
    name: &'static str,
    builtin: Answer,
    ours: Answer,
}

/// Runs `case` against one side: snapshot counters, exchange, wait for counters to move.
/// Returns the answer and the still-open stream of an accepted handshake.
fn run_one(side: &mut Side, case: &Case) -> Result<(Answer, Vec<u8>, Option<TcpStream>)> {
    let before = side.counters()?;
    let ex = exchange(
        side.handshake_port,
        &(case.bytes)(side.handshake_port),
        ANSWER_TIMEOUT,
    )?;
    let mut answer = ex.answer;
    let settle = Instant::now() + COUNTER_SETTLE;
    loop {
        // `timeout` belongs to the table's concurrent handshake_timeout row, not to a case.
        answer.counters = moved(&before, &side.counters()?);
        answer.counters.retain(|c| !c.starts_with("timeout+"));
        if !answer.counters.is_empty() || Instant::now() >= settle {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(node) = case.registered_as {
        ensure!(
            ex.stream.is_some(),
            "{}: {} closed the accepted tunnel",
            case.name,
            side_name(side.kind)
        );
        check_registered(side, node)?;
    }
    Ok((answer, ex.raw, ex.stream))
}

/// Waits until `side` lists a tunnel of node `node` (built-in: hidden gauge
/// `upstream_rc.nodes.<node>`; ours: admin `/reverse_tunnels`).
fn check_registered(side: &mut Side, node: &str) -> Result<()> {
    let kind = side.kind;
    let envoy = &mut side.envoy;
    wait_for(
        &format!("node {node:?} registered at {}", side_name(kind)),
        Duration::from_secs(3),
        || {
            Ok(match kind {
                Responder::Builtin => match envoy.stat_u64(&format!("upstream_rc.nodes.{node}"))? {
                    Some(n) if n >= 1 => Check::Done(()),
                    other => Check::NotYet(format!("gauge {other:?}")),
                },
                Responder::Module | Responder::Direct | Responder::Owned => {
                    let body = envoy.admin_get("/reverse_tunnels")?;
                    if body.contains(&format!("\"{node}\"")) {
                        Check::Done(())
                    } else {
                        Check::NotYet(body.chars().take(300).collect())
                    }
                }
            })
        },
    )
}

/// Runs every case on both sides, prints the table, then checks every row.
fn run_table(title: &str, builtin: &mut Side, ours: &mut Side, cases: &[Case]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut held = Vec::new(); // accepted tunnels stay open until the table is done
    for c in cases {
        let (b, b_raw, b_stream) = run_one(builtin, c)?;
        let (o, o_raw, o_stream) = run_one(ours, c)?;
        for (who, a, raw) in [("built-in", &b, &b_raw), ("ours", &o, &o_raw)] {
            if a.status() == 200 {
                ensure!(
                    raw.as_slice() == ACCEPT_200,
                    "{}: {who} accept bytes differ: {:?}",
                    c.name,
                    String::from_utf8_lossy(raw)
                );
            }
        }
        held.extend(b_stream);
        held.extend(o_stream);
        rows.push(Row {
            name: c.name,
            builtin: b,
            ours: o,
        });
        if c.name.starts_with("upgrade: valid") {
            // The 429 case needs the first tunnel registered on both sides.
            check_registered(builtin, "cap-node")?;
            check_registered(ours, "cap-node")?;
        }
    }
    print_table(title, &rows);
    let mut failures = Vec::new();
    for (c, r) in cases.iter().zip(&rows) {
        if let Err(e) = check_row(c.expect, r) {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    drop(held);
    if !failures.is_empty() {
        bail!("{} row(s) differ:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(rows)
}

fn check_row(expect: Expect, r: &Row) -> Result<()> {
    match expect {
        Expect::Same => {
            ensure!(
                r.builtin == r.ours,
                "\n  built-in: {:?}\n  ours:     {:?}",
                r.builtin,
                r.ours
            );
        }
        Expect::SameButRetryAfter => {
            let mut ours = r.ours.clone();
            let had = ours.headers.iter().any(|h| h.starts_with("retry-after:"));
            ours.headers.retain(|h| !h.starts_with("retry-after:"));
            ensure!(had, "ours has no retry-after: {:?}", r.ours);
            ensure!(
                r.builtin.header("retry-after").is_none(),
                "built-in sent retry-after"
            );
            ensure!(
                r.builtin == ours,
                "\n  built-in: {:?}\n  ours:     {:?}",
                r.builtin,
                r.ours
            );
        }
        Expect::Ours {
            status,
            body,
            builtin_status,
        } => {
            ensure!(
                r.builtin.status() == builtin_status,
                "built-in answered {:?}",
                r.builtin
            );
            ensure!(
                r.ours.status() == status && r.ours.body == body && r.ours.closed,
                "ours answered {:?}",
                r.ours
            );
            ensure!(
                r.ours.header("content-type").as_deref() == Some("text/plain")
                    && r.ours.framing == "chunked"
                    && r.ours.counters == ["parse_error+1"],
                "ours answered {:?}",
                r.ours
            );
        }
    }
    Ok(())
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n=== handshake conformance: {title} ===");
    println!("{:<42} | {:<70} | ours", "case", "built-in");
    for r in rows {
        let same = if r.builtin == r.ours { "=" } else { "≠" };
        println!(
            "{:<42} | {:<70} | {same} {}",
            r.name,
            r.builtin.summary(),
            r.ours.summary()
        );
    }
}

/// Starts both sides with `extra` in one test directory (ours on the cluster-path template).
fn start_pair(label: &str, extra: &Extra) -> Result<(TestDir, Side, Side)> {
    start_pair_with(label, extra, Responder::Module)
}

/// Starts the built-in and `ours` with `extra` in one test directory.
fn start_pair_with(label: &str, extra: &Extra, ours: Responder) -> Result<(TestDir, Side, Side)> {
    require_module()?;
    let dir = TestDir::new(label)?;
    let builtin = Side::start(&dir, Responder::Builtin, extra, label)?;
    let ours = Side::start(&dir, ours, extra, label)?;
    Ok((dir, builtin, ours))
}

/// Opens a connection that sends an incomplete head, for the `handshake_timeout` row.
fn open_partial(port: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /reverse_connections/request HTTP/1.1\r\nhost: x\r\n")?;
    Ok(s)
}

/// Watches `s` on a thread until the peer closes it (or `timeout` passes); the thread returns
/// when the close was seen (`None`: still open at the deadline) and the bytes received before.
fn watch_close(
    mut s: TcpStream,
    timeout: Duration,
) -> std::thread::JoinHandle<(Option<Instant>, Vec<u8>)> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while Instant::now() < deadline {
            if s.set_read_timeout(Some(Duration::from_millis(100)))
                .is_err()
            {
                return (Some(Instant::now()), got);
            }
            match s.read(&mut chunk) {
                Ok(0) => return (Some(Instant::now()), got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (Some(Instant::now()), got),
            }
        }
        (None, got)
    })
}

#[test]
fn conformance_table_default_config() -> Result<()> {
    default_table(Responder::Module, "conformance-default")
}

/// The same table against owned sockets (`envoy-config/upstream-owned.yaml`): the module's socket
/// loop reads the handshake and writes every answer itself, with no Envoy connection.
#[test]
fn conformance_table_owned_sockets() -> Result<()> {
    default_table(Responder::Owned, "conformance-owned")
}

fn default_table(ours_kind: Responder, label: &str) -> Result<()> {
    let _g = serial();
    let (_dir, mut builtin, mut ours) = start_pair_with(label, &Extra::default(), ours_kind)?;
    // Timeout row (default handshake_timeout 10 s): opened first, checked after the table.
    let t_before = (builtin.counters()?, ours.counters()?);
    let started = Instant::now();
    let watch_b = watch_close(
        open_partial(builtin.handshake_port)?,
        Duration::from_secs(25),
    );
    let watch_o = watch_close(open_partial(ours.handshake_port)?, Duration::from_secs(25));
    run_table(
        "default ReverseTunnel config",
        &mut builtin,
        &mut ours,
        &default_cases(),
    )?;

    let (closed_b, got_b) = watch_b.join().map_err(|_| "watcher thread panicked")?;
    let (closed_o, got_o) = watch_o.join().map_err(|_| "watcher thread panicked")?;
    let tb = builtin.envoy.wait_stat(
        "reverse_tunnel.handshake.timeout",
        |v| v >= 1,
        Duration::from_secs(2),
    )?;
    let to = ours.envoy.wait_stat(
        "rt.reverse_tunnel.handshake.timeout",
        |v| v >= 1,
        Duration::from_secs(2),
    )?;
    let at = |c: Option<Instant>| {
        c.map(|t| format!("{:.1?}", t.duration_since(started)))
            .unwrap_or("never".into())
    };
    let (at_b, at_o) = (at(closed_b), at(closed_o));
    let cell_b = format!(
        "no response, closed at {at_b}, [timeout+{}]",
        tb.saturating_sub(t_before.0.get("timeout").copied().unwrap_or(0))
    );
    let cell_o = format!(
        "no response, closed at {at_o}, [timeout+{}]",
        to.saturating_sub(t_before.1.get("timeout").copied().unwrap_or(0))
    );
    println!(
        "{:<42} | {cell_b:<70} | {cell_o}",
        "incomplete head (handshake_timeout 10 s)"
    );
    ensure!(
        got_b.is_empty() && got_o.is_empty(),
        "a timed-out handshake got a response"
    );
    ensure!(
        tb == t_before.0.get("timeout").copied().unwrap_or(0) + 1
            && to == t_before.1.get("timeout").copied().unwrap_or(0) + 1,
        "timeout counters: built-in {tb}, ours {to}"
    );
    for (who, c) in [("built-in", closed_b), ("ours", closed_o)] {
        let Some(t) = c else {
            bail!("{who}: incomplete handshake still open after 25 s")
        };
        let after = t.duration_since(started);
        ensure!(
            after >= Duration::from_millis(9500) && after <= Duration::from_secs(12),
            "{who}: incomplete handshake closed at {after:?}, expected ~10 s"
        );
    }
    Ok(())
}

#[test]
fn conformance_table_upgrade_isolation_cap() -> Result<()> {
    let _g = serial();
    let (_dir, mut builtin, mut ours) = start_pair("conformance-strict", &strict_extra())?;
    run_table(
        "use_http_upgrade, required_cluster_name, tenant isolation, max 1 per node",
        &mut builtin,
        &mut ours,
        &strict_cases(),
    )?;
    // `validation.emit_dynamic_metadata`: Envoy's listener access log shows the same metadata
    // (node/cluster/tenant ids and validation_result) for every refused connection on both sides.
    let want = |side: &Side| -> Result<Vec<String>> {
        wait_for("listener access log lines with validation metadata", Duration::from_secs(10), || {
            let rows = metadata_rows(&side.listener_log);
            Ok(if rows.len() >= 3 { Check::Done(rows) } else { Check::NotYet(format!("{rows:?}")) })
        })
    };
    let (b, o) = (want(&builtin)?, want(&ours)?);
    assert_eq!(o, b, "validation metadata (ours vs built-in)");
    assert!(b.iter().any(|r| r.contains("validation_failed")) && b.iter().any(|r| r.contains("rejected")), "{b:?}");
    Ok(())
}

/// Namespace of the validation metadata (the default of `dynamic_metadata_namespace`).
const METADATA_NAMESPACE: &str = "envoy.filters.network.reverse_tunnel";

/// Sorted `node_id/cluster_id/tenant_id/validation_result` of the listener log's lines that
/// carry metadata of a refused handshake.
fn metadata_rows(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rows: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let result = get("validation_result");
            (result == "validation_failed" || result == "rejected")
                .then(|| format!("{}/{}/{}/{}", get("node_id"), get("cluster_id"), get("tenant_id"), result))
        })
        .collect();
    rows.sort();
    rows
}

/// A raw-socket fake initiator handshakes with OUR responder: the first bytes it reads must be
/// exactly the 38-byte 200 (never coalesced with tunnel bytes, docs/protocol.md#after-the-accept "Coalescing
/// hazard"), and the first `RPING` must come as a separate segment ≥ 20 ms later. After the echo
/// the tunnel joins the pool (`rt.upstream_rc.tunnels_idle` = 1).
#[test]
fn tunnel_bytes_never_coalesced_with_the_200() -> Result<()> {
    let _g = serial();
    require_module()?;
    let dir = TestDir::new("conformance-coalesce")?;
    let mut ours = Side::start(&dir, Responder::Module, &Extra::default(), "coalesce")?;
    let port = ours.handshake_port;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.write_all(&head(LINE, &with_node(port, "coalesce-node")))?;
    let mut chunk = [0u8; 4096];
    let mut first = Vec::new();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    // Accumulate until the 38 bytes are in (loopback delivers them in one read in practice);
    // whatever arrived together with them would show up in `first`.
    while first.len() < ACCEPT_200.len() {
        ensure!(
            Instant::now() < deadline,
            "no complete 200 within {ANSWER_TIMEOUT:?}: {first:?}"
        );
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        match s.read(&mut chunk) {
            Ok(0) => bail!("closed after {:?}", String::from_utf8_lossy(&first)),
            Ok(n) => first.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let t_200 = Instant::now();
    ensure!(
        first == ACCEPT_200,
        "first read is not exactly the 38-byte 200: {:?}",
        String::from_utf8_lossy(&first)
    );
    let mut next = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut t_ping = None;
    while next.len() < 5 {
        ensure!(Instant::now() < deadline, "no RPING within 3 s: {next:?}");
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        match s.read(&mut chunk) {
            Ok(0) => bail!("closed before the first RPING"),
            Ok(n) => {
                t_ping.get_or_insert_with(Instant::now);
                next.extend_from_slice(&chunk[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let gap = t_ping.unwrap_or(t_200).duration_since(t_200);
    println!(
        "first read: {} bytes (the 200); then {:?} after {gap:?}",
        first.len(),
        String::from_utf8_lossy(&next)
    );
    ensure!(
        next == b"RPING",
        "next bytes are not exactly RPING: {:?}",
        String::from_utf8_lossy(&next)
    );
    ensure!(
        gap >= Duration::from_millis(20),
        "RPING came only {gap:?} after the 200"
    );
    s.write_all(b"RPING")?;
    let idle = ours.envoy.wait_stat(
        "rt.upstream_rc.tunnels_idle",
        |v| v == 1,
        Duration::from_secs(3),
    )?;
    println!("after the echo: rt.upstream_rc.tunnels_idle = {idle}");
    Ok(())
}

/// A real built-in 1.40.0 initiator in upgrade mode (`http_handshake.use_http_upgrade: true`,
/// plus `additional_headers`, docs/protocol.md#initiator, as in the reference `upg_ds.yaml`) against our
/// responder with `use_http_upgrade: true`: the tunnel comes up (the initiator requires the 101)
/// and a request through it succeeds. Both configs are derived from the usual templates.
#[test]
fn upgrade_mode_with_additional_headers() -> Result<()> {
    let _g = serial();
    require_module()?;
    let dir = TestDir::new("conformance-upgrade")?;
    let extra = Extra {
        filter: vec!["use_http_upgrade: true"],
        ..Extra::default()
    };
    let mut ours = Side::start(&dir, Responder::Module, &extra, "upgrade")?;
    let node = "upgrade-node";
    let text = render(
        "downstream.yaml",
        &[
            ("ADMIN_PORT", free_port()?.to_string()),
            ("NODE_ID", node.to_string()),
            ("CLUSTER_ID", "upgrade-cluster".to_string()),
            ("TENANT_ID", "tenant-a".to_string()),
            ("TUNNEL_COUNT", "1".to_string()),
            ("RESPONDER_PORT", ours.handshake_port.to_string()),
            // Only /direct is requested (the initiator's direct_response): no backend needed.
            ("BACKEND_PORT", free_port()?.to_string()),
            ("GRPC_PORT", free_port()?.to_string()),
        ],
    )?;
    let text = insert_sibling_lines(
        &text,
        "enable_detailed_stats: true",
        &[
            "http_handshake:",
            "  use_http_upgrade: true",
            "  additional_headers:",
            "  - header: {key: x-custom-auth, value: \"token-123\"}",
            "  - header: {key: x-second-header, value: \"two\"}",
        ],
    )?;
    let path = dir.file("upgrade-initiator.yaml");
    std::fs::write(&path, text)?;
    let mut initiator = Envoy::start(&path, 1, &[])?;
    initiator.wait_ready(READY_TIMEOUT)?;
    let accepted = ours.envoy.wait_stat(
        "rt.reverse_tunnel.handshake.accepted",
        |v| v >= 1,
        Duration::from_secs(20),
    )?;
    let idle = ours.envoy.wait_stat(
        "rt.upstream_rc.tunnels_idle",
        |v| v >= 1,
        Duration::from_secs(10),
    )?;
    let r = http_get(ours.egress_port, "/direct", &[(NODE_HEADER, node)])?;
    println!(
        "upgrade mode: accepted={accepted} idle={idle}; GET /direct -> {} {:?}",
        r.status, r.body
    );
    ensure!(
        r.status == 200 && r.body == format!("hello from {node} via reverse tunnel\n"),
        "request through the upgrade-mode tunnel failed: {} {:?}\n{}",
        r.status,
        r.body,
        ours.envoy.log_excerpt(20)
    );
    // The initiator saw its handshake succeed (it requires the 101) and counted no failure
    // (docs/protocol.md#initiator-stats; its detailed stats are on).
    let hs = initiator.stats_with_prefix("downstream_rc.handshake.")?;
    println!("initiator handshake stats: {hs:?}");
    let count = |pat: &str| -> u64 {
        hs.iter()
            .filter(|(k, _)| k.contains(pat))
            .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
            .sum()
    };
    ensure!(
        count(".result.success") >= 1,
        "no handshake success at the initiator: {hs:?}"
    );
    ensure!(
        count(".result.failed") == 0,
        "initiator handshake failures: {hs:?}"
    );
    initiator.quit();
    Ok(())
}

/// Outer TLS (TLS on the handshake listener, docs/architecture.md#known-limits): a 1.40.0 initiator would continue in
/// cleartext after the TLS-protected 200, which the module cannot follow; the module refuses the
/// handshake at once with a 400 and counts `outer_tls_refused`, instead of a tunnel that hangs.
#[test]
fn outer_tls_handshake_is_refused_clearly() -> Result<()> {
    let _serial = serial();
    rt_integration::paths::require_module()?;
    let dir = TestDir::new("outer-tls")?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("openssl: {e}"))?;
    if !st.success() {
        return Err("openssl could not make a self-signed certificate".into());
    }
    let ports = rt_integration::free_ports(3)?;
    let text = rt_integration::tmp::render("upstream.yaml", &responder_vars(ports[0], ports[1], ports[2], 3))?;
    let tls = format!(
        "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{filename: {}}}\n              private_key: {{filename: {}}}\n      filters:\n",
        cert.display(),
        key.display()
    );
    // The first filter chain of the file is the handshake listener's.
    let text = text.replacen("    filter_chains:\n    - filters:\n", &tls, 1);
    let config = dir.path().join("responder-tls.yaml");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let mut envoy = Envoy::start(&config, 1, &[])?;
    envoy.wait_ready(READY_TIMEOUT)?;

    let request = format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nx-envoy-reverse-tunnel-node-id: tls-node\r\nx-envoy-reverse-tunnel-cluster-id: tls-cluster\r\nx-envoy-reverse-tunnel-tenant-id: tls-tenant\r\ncontent-length: 0\r\n\r\n",
        ports[1]
    );
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", ports[1]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("openssl s_client: {e}"))?;
    client.stdin.as_mut().ok_or("no stdin")?.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    // The responder answers and closes; s_client then exits. Bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = client.kill();
            return Err("the TLS handshake connection was not closed within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    client.stdout.take().ok_or("no stdout")?.read_to_string(&mut out).map_err(|e| e.to_string())?;
    assert!(out.starts_with("HTTP/1.1 400 "), "answer over TLS: {out:?}");
    assert!(out.contains("use TLS inside the tunnel"), "{out:?}");
    envoy.wait_stat("rt.upstream_rc.outer_tls_refused", |v| v == 1, Duration::from_secs(5))?;
    assert_eq!(envoy.stat_u64("rt.upstream_rc.tunnels_idle")?, Some(0));
    assert!(envoy.log_contents().contains("outer TLS cannot carry"), "the refusal is logged");
    Ok(())
}
