//! The reverse-tunnel handshake: parsing the initiator's HTTP/1.1 request and the responder's
//! answers (docs/protocol.md#handshake-request, #handshake-response, #handshake-checks, #handshake-counters).
//!
//! An initiator dials the responder and sends one HTTP/1.1 request head (no body) that names its
//! node id, cluster id and tenant id. The responder answers `200` (or `101` in upgrade mode) and
//! keeps the TCP connection open as an idle tunnel, or answers a rejection and closes.
//!
//! This module is pure: [`evaluate`] looks at the bytes received so far and returns
//! [`Outcome::NeedMore`], [`Outcome::Accept`] or [`Outcome::Reject`]. It never panics and never asks
//! the caller to buffer more than [`HandshakeRules::max_header_bytes`] plus one read.
//!
//! Rejections decided by the caller (connection cap, id formatters, registration, draining) are
//! built with the constructors on [`Rejection`]. Every rejection is sent with
//! [`Rejection::to_wire`] and must be followed by a FlushWrite close of the connection 
//! (docs/protocol.md#handshake-response).

/// Default handshake request path (docs/protocol.md#filter-config, field `request_path`).
pub const DEFAULT_REQUEST_PATH: &str = "/reverse_connections/request";

/// Default handshake request method, upper-case (docs/protocol.md#filter-config, field `request_method`).
pub const DEFAULT_REQUEST_METHOD: &str = "GET";

/// Default limit on the size of the request head, in bytes (docs/protocol.md#handshake-checks: 60 KiB).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// Default limit on the number of request headers (docs/protocol.md#handshake-checks: 100 headers).
pub const MAX_HEADERS: usize = 100;

/// Longest node id, cluster id or tenant id accepted, in bytes. Improvement over the built-in,
/// which has no limit (docs/protocol.md#handshake-response "Odd ids").
pub const MAX_ID_BYTES: usize = 1024;

/// Header carrying the initiator's node id (docs/protocol.md#handshake-request; required).
pub const NODE_ID_HEADER: &str = "x-envoy-reverse-tunnel-node-id";
/// Header carrying the initiator's cluster id (docs/protocol.md#handshake-request; required).
pub const CLUSTER_ID_HEADER: &str = "x-envoy-reverse-tunnel-cluster-id";
/// Header carrying the initiator's tenant id (docs/protocol.md#handshake-request; required, non-empty).
pub const TENANT_ID_HEADER: &str = "x-envoy-reverse-tunnel-tenant-id";
/// Header naming the initiator's remote cluster (docs/protocol.md#handshake-request; checked only when
/// `required_cluster_name` is set).
pub const UPSTREAM_CLUSTER_NAME_HEADER: &str = "x-envoy-reverse-tunnel-upstream-cluster-name";
/// Header carrying the dial episode's epoch milliseconds (docs/protocol.md#handshake-request).
pub const INITIATION_TIME_HEADER: &str = "x-envoy-reverse-tunnel-initiation-time";
/// Header carrying the initiator's worker name, e.g. `worker_0` (docs/protocol.md#handshake-request; optional).
pub const WORKER_ID_HEADER: &str = "x-envoy-reverse-tunnel-worker-id";
/// Header carrying the initiator's decimal Envoy connection id (docs/protocol.md#handshake-request; optional).
pub const CONNECTION_ID_HEADER: &str = "x-envoy-reverse-tunnel-connection-id";
/// Value of the `upgrade` header in upgrade mode, compared case-insensitively (docs/protocol.md#handshake-response).
pub const UPGRADE_PROTOCOL: &str = "reverse-tunnel";

/// Accept response in plain mode: exactly these 38 bytes (docs/protocol.md#handshake-response, observed).
const ACCEPT_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
/// Accept response in upgrade mode: exactly these 82 bytes (docs/protocol.md#handshake-response, observed).
const ACCEPT_101: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n";

/// The responder's handshake rules, normally built from the `ReverseTunnel` filter config
/// (docs/protocol.md#filter-config) and the codec limits (docs/protocol.md#handshake-checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRules {
    /// Exact request path; a query string never matches (docs/protocol.md#filter-config field 3).
    pub request_path: String,
    /// Request method, upper-case; matched case-insensitively (docs/protocol.md#filter-config field 4).
    pub request_method: String,
    /// Expect `upgrade: reverse-tunnel` and answer `101` (docs/protocol.md#filter-config field 7).
    pub use_http_upgrade: bool,
    /// If `Some` and non-empty, the upstream-cluster-name header must equal it (docs/protocol.md#filter-config
    /// field 6). `Some("")` behaves like `None`, as the built-in's empty default does.
    pub required_cluster_name: Option<String>,
    /// Tenant isolation: ids must not contain `:` (docs/protocol.md#keys).
    pub tenant_isolation: bool,
    /// Largest request head accepted, in bytes; larger → 431 (docs/protocol.md#handshake-checks).
    pub max_header_bytes: usize,
    /// Most request headers accepted; more → 431 (docs/protocol.md#handshake-checks).
    pub max_headers: usize,
}

impl Default for HandshakeRules {
    /// The built-in's defaults: `GET /reverse_connections/request`, no upgrade, no required cluster
    /// name, no tenant isolation, 60 KiB and 100 headers (docs/protocol.md#filter-config, #handshake-checks).
    fn default() -> Self {
        HandshakeRules {
            request_path: DEFAULT_REQUEST_PATH.to_string(),
            request_method: DEFAULT_REQUEST_METHOD.to_string(),
            use_http_upgrade: false,
            required_cluster_name: None,
            tenant_isolation: false,
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}

/// An accepted handshake request (docs/protocol.md#handshake-request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Node id: non-empty, at most [`MAX_ID_BYTES`] bytes, no control characters.
    pub node_id: String,
    /// Cluster id: same constraints as `node_id`.
    pub cluster_id: String,
    /// Tenant id: same constraints as `node_id` (the built-in also requires it non-empty).
    pub tenant_id: String,
    /// Value of the upstream-cluster-name header, if present (lossy UTF-8, trimmed).
    pub upstream_cluster_name: Option<String>,
    /// Initiation time in epoch milliseconds; 0 if absent or not an `i64` (docs/protocol.md#handshake-request).
    pub initiation_time_ms: i64,
    /// Initiator worker name, e.g. `worker_0`; `""` if absent (docs/protocol.md#handshake-request).
    pub initiator_worker_id: String,
    /// Initiator connection id (decimal text); `""` if absent (docs/protocol.md#handshake-request).
    pub initiator_connection_id: String,
    /// True when the request was accepted in upgrade mode: answer with `accept_response(true)`.
    pub upgrade: bool,
    /// All headers in arrival order: lower-case name, trimmed value (lossy UTF-8). At most
    /// `max_headers` entries.
    pub headers: Vec<(String, String)>,
    /// Length of the request head in bytes, including the final empty line.
    pub request_len: usize,
}

impl HandshakeRequest {
    /// First value of the header `name` (any case), if present. Names are compared
    /// case-insensitively; the first value wins (docs/protocol.md#handshake-request).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The handshake counters, `reverse_tunnel.handshake.<name>` (docs/protocol.md#handshake-counters). The two JWT
/// counters of the built-in are not produced by this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A tunnel was accepted and registered.
    Accepted,
    /// A malformed handshake (missing/empty/invalid ids, wrong upgrade, missing cluster name).
    ParseError,
    /// Cluster name mismatch or an id formatter rejected the ids.
    ValidationFailed,
    /// Connection cap reached (429), or the responder is draining.
    Rejected,
    /// No complete handshake within `handshake_timeout`.
    Timeout,
    /// The request carried a body.
    BodyRejected,
    /// The tunnel could not be registered (503).
    RegistrationFailed,
}

impl Counter {
    /// Every counter, in declaration order.
    pub const ALL: [Counter; 7] = [
        Counter::Accepted,
        Counter::ParseError,
        Counter::ValidationFailed,
        Counter::Rejected,
        Counter::Timeout,
        Counter::BodyRejected,
        Counter::RegistrationFailed,
    ];

    /// Short name, e.g. `"parse_error"` (docs/protocol.md#handshake-counters).
    pub fn name(&self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::ParseError => "parse_error",
            Counter::ValidationFailed => "validation_failed",
            Counter::Rejected => "rejected",
            Counter::Timeout => "timeout",
            Counter::BodyRejected => "body_rejected",
            Counter::RegistrationFailed => "registration_failed",
        }
    }

    /// Full stat name, e.g. `"reverse_tunnel.handshake.parse_error"` (docs/protocol.md#handshake-counters: no
    /// listener prefix).
    pub fn stat_name(&self) -> &'static str {
        match self {
            Counter::Accepted => "reverse_tunnel.handshake.accepted",
            Counter::ParseError => "reverse_tunnel.handshake.parse_error",
            Counter::ValidationFailed => "reverse_tunnel.handshake.validation_failed",
            Counter::Rejected => "reverse_tunnel.handshake.rejected",
            Counter::Timeout => "reverse_tunnel.handshake.timeout",
            Counter::BodyRejected => "reverse_tunnel.handshake.body_rejected",
            Counter::RegistrationFailed => "reverse_tunnel.handshake.registration_failed",
        }
    }
}

/// A rejection response (docs/protocol.md#handshake-response). After writing [`Rejection::to_wire`] the caller
/// closes the connection with FlushWrite; the response carries no `connection: close` header
/// because the built-in's evidence shows none and Envoy's HTTP/1 codec does not add one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code (100..=599; anything else is written as 500).
    pub status: u16,
    /// The `text/plain` body.
    pub body: String,
    /// Counter to increment, if any (docs/protocol.md#handshake-counters: codec errors and 404 count nothing).
    pub counter: Option<Counter>,
    /// Extra response headers written after `content-type`, lower-case names, e.g.
    /// `("upgrade", "reverse-tunnel")`. CR and LF are dropped when written.
    pub headers: Vec<(String, String)>,
    /// Chunked body framing (the built-in's form, docs/protocol.md#handshake-response); `false` for the codec's
    /// HTTP/1.0 426, whose body is delimited by the close.
    pub chunked: bool,
}

impl Rejection {
    fn new(status: u16, body: &str, counter: Option<Counter>) -> Rejection {
        Rejection {
            status,
            body: body.to_string(),
            counter,
            headers: Vec::new(),
            chunked: true,
        }
    }

    /// 400 `Bad Request`, no counter: the codec's answer to an unparsable request 
    /// (docs/protocol.md#handshake-response row 1, #handshake-checks).
    pub fn bad_request() -> Rejection {
        Rejection::new(400, "Bad Request", None)
    }

    /// 426 `Upgrade Required`, no counter, body not chunked: the codec's answer to an HTTP/1.0
    /// request line (docs/protocol.md#handshake-response row 2).
    pub fn http10_upgrade_required() -> Rejection {
        Rejection {
            chunked: false,
            ..Rejection::new(426, "Upgrade Required", None)
        }
    }

    /// 431 `Request Header Fields Too Large`, no counter: the codec's answer when the head exceeds
    /// `max_header_bytes` or `max_headers` (docs/protocol.md#handshake-checks; codec limits, so no counter).
    pub fn headers_too_large() -> Rejection {
        Rejection::new(431, "Request Header Fields Too Large", None)
    }

    /// 429 `rejected`, counter `rejected`, with a `retry-after: <retry_after_secs>` header: the
    /// per-node connection cap is reached (docs/protocol.md#handshake-response). Improvement: the built-in sends no
    /// `Retry-After`.
    pub fn connection_limit(retry_after_secs: u32) -> Rejection {
        let mut r = Rejection::new(429, "rejected", Some(Counter::Rejected));
        r.headers
            .push(("retry-after".to_string(), retry_after_secs.to_string()));
        r
    }

    /// 403 `validation_failed`, counter `validation_failed`: an id formatter did not match or
    /// rendered empty/`-` (docs/protocol.md#handshake-response, #filter-config `Validation`).
    pub fn validation_failed() -> Rejection {
        Rejection::new(403, "validation_failed", Some(Counter::ValidationFailed))
    }

    /// 503 `Reverse tunnel registration unavailable`, counter `registration_failed`: the tunnel
    /// cannot be registered (docs/protocol.md#handshake-response).
    pub fn registration_unavailable() -> Rejection {
        Rejection::new(
            503,
            "Reverse tunnel registration unavailable",
            Some(Counter::RegistrationFailed),
        )
    }

    /// 503 `Reverse tunnel responder is draining`, counter `rejected`. Not in the built-in: the
    /// module answers this while its listener drains (initiators retry on their next tick).
    pub fn draining() -> Rejection {
        Rejection::new(
            503,
            "Reverse tunnel responder is draining",
            Some(Counter::Rejected),
        )
    }

    /// 400 `Reverse tunnel handshake over TLS is not supported: use TLS inside the tunnel`, no
    /// handshake counter (the caller counts `outer_tls_refused`). Not in the built-in: with TLS
    /// on the handshake listener a 1.40.0 initiator continues in cleartext on the raw socket
    /// after the 200 (docs/protocol.md#tls), which a module that keeps Envoy's TLS cannot follow
    /// (docs/architecture.md#known-limits); refusing beats a tunnel that hangs.
    pub fn outer_tls() -> Rejection {
        Rejection::new(
            400,
            "Reverse tunnel handshake over TLS is not supported: use TLS inside the tunnel",
            None,
        )
    }

    /// The exact response bytes, to be followed by a FlushWrite close.
    ///
    /// Shape (chunked, non-empty body, `content-type: text/plain`; docs/protocol.md#handshake-response):
    /// `HTTP/1.1 <status> <reason>\r\ncontent-type: text/plain\r\n<extra headers>` then
    /// `transfer-encoding: chunked\r\n\r\n<hex len>\r\n<body>\r\n0\r\n\r\n`.
    ///
    /// The evidence does not capture rejection bytes, so the layout follows what Envoy's HTTP/1
    /// codec writes: the status line with Envoy's reason phrase, the headers in insertion order,
    /// then `transfer-encoding: chunked` (added by the codec when there is no content-length),
    /// one lower-case hex chunk and the last chunk. With `chunked == false` the body follows the
    /// head unframed (the codec's HTTP/1.0 form; the close delimits it). An empty body is written
    /// as `content-length: 0`, as the codec does for a header-only response.
    pub fn to_wire(&self) -> Vec<u8> {
        let status = if (100..=599).contains(&self.status) {
            self.status
        } else {
            500
        };
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain\r\n");
        for (name, value) in &self.headers {
            push_no_crlf(&mut out, name.as_bytes());
            out.extend_from_slice(b": ");
            push_no_crlf(&mut out, value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.body.is_empty() {
            out.extend_from_slice(b"content-length: 0\r\n\r\n");
        } else if self.chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            out.extend_from_slice(format!("{:x}\r\n", self.body.len()).as_bytes());
            out.extend_from_slice(self.body.as_bytes());
            out.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Appends `bytes` without CR and LF, so a header name or value can never split the head.
fn push_no_crlf(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes.iter().copied().filter(|b| *b != b'\r' && *b != b'\n'));
}

/// Reason phrase Envoy writes for `status` (Envoy's code-to-string table; `"Unknown"` otherwise).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request head is not complete yet and within limits: read more.
    NeedMore,
    /// A valid handshake: answer with [`accept_response`]`(req.upgrade)` and keep the connection.
    Accept(HandshakeRequest),
    /// Answer with [`Rejection::to_wire`], then close with FlushWrite.
    Reject(Rejection),
}

/// The accept response: exactly `HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n` (38 bytes), or in
/// upgrade mode `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade:
/// reverse-tunnel\r\n\r\n` (82 bytes) (docs/protocol.md#handshake-response, observed). Write it alone: never coalesce
/// tunnel bytes with it (docs/protocol.md#after-the-accept).
pub fn accept_response(upgrade: bool) -> &'static [u8] {
    if upgrade {
        ACCEPT_101
    } else {
        ACCEPT_200
    }
}

/// Body of the 400 for a request that carries a body (docs/protocol.md#handshake-response).
pub const BODY_REJECTED_TEXT: &str = "Reverse tunnel handshake must not carry a body";
/// Body of the 404 for a wrong method or path (docs/protocol.md#handshake-response).
pub const NOT_A_TUNNEL_TEXT: &str = "Not a reverse tunnel request";
/// Body of the 426 for a missing/wrong `upgrade` header in upgrade mode (docs/protocol.md#handshake-response).
pub const UPGRADE_REQUIRED_TEXT: &str = "Upgrade: reverse-tunnel required";
/// Body of the 400 for a missing id header (docs/protocol.md#handshake-response).
pub const MISSING_HEADERS_TEXT: &str = "Missing required reverse tunnel headers";
/// Body of the 400 for an empty tenant id (docs/protocol.md#handshake-response).
pub const EMPTY_TENANT_TEXT: &str = "Empty tenant-id header value";
/// Body of the 400 for a `:` in an id under tenant isolation (docs/protocol.md#handshake-response).
pub const ISOLATION_DELIMITER_TEXT: &str =
    "Reverse tunnel identifiers must not contain ':' when tenant isolation is enabled";
/// Body of the 400 for a missing upstream-cluster-name header (docs/protocol.md#handshake-response).
pub const MISSING_CLUSTER_NAME_TEXT: &str = "Missing upstream cluster name header";
/// Body of the 400 for a different upstream cluster name (docs/protocol.md#handshake-response).
pub const CLUSTER_MISMATCH_TEXT: &str = "Cluster name mismatch";
/// Body of the 400 for an empty node or cluster id (improvement; not in the built-in).
pub const EMPTY_NODE_OR_CLUSTER_TEXT: &str = "Empty node-id or cluster-id header value";
/// Body of the 400 for bytes after the request head (improvement; not in the built-in).
pub const PIPELINED_TEXT: &str = "Unexpected bytes after reverse tunnel handshake";
/// Body of the 400 for an id with control characters, non-UTF-8 bytes or more than
/// [`MAX_ID_BYTES`] bytes (improvement; not in the built-in).
pub const INVALID_ID_TEXT: &str = "Invalid reverse tunnel identifier";

/// Request methods Envoy's HTTP/1 codec accepts (case-sensitive; RFC 9110, RFC 5789 and the
/// WebDAV/other methods an HTTP/1 parser knows). Any other method is a codec-level 400.
pub const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "COPY", "LOCK",
    "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL",
    "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
    "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
];

/// Evaluates the bytes received so far on a handshake connection (`buf` holds everything read
/// since the connection opened).
///
/// Call it after every read. The result is [`Outcome::NeedMore`] only while the head is
/// incomplete, parses so far, has at most `max_headers` headers and `buf` is at most
/// `max_header_bytes` long, so the caller never buffers more than `max_header_bytes` plus one
/// read (no unbounded buffering). Cost: one parse of `buf`; no panics on any input.
///
/// Checks, in this order (docs/protocol.md#handshake-response table, §2.2):
/// 1. Codec: unparsable → 400 `Bad Request`; head or headers over the limits → 431; invalid or
///    duplicate `content-length`, or `content-length` with `transfer-encoding` → 400
///    `Bad Request` (all without counter).
/// 2. HTTP/1.0 → 426 `Upgrade Required`, not chunked, no counter.
/// 3. `content-length` ≠ 0 or any `transfer-encoding` → 400 body, `body_rejected`. (Envoy's codec
///    answers 501 for a transfer coding other than `chunked`; we count it as a body instead.)
/// 4. Method (case-insensitive) or path (exact; any `?` mismatches) → 404, no counter.
/// 5. Upgrade mode and `upgrade` ≠ `reverse-tunnel` (case-insensitive) → 426 with header
///    `upgrade: reverse-tunnel`, `parse_error`.
/// 6. Node, cluster or tenant header missing → 400, `parse_error`.
/// 7. Empty tenant id → 400, `parse_error`.
/// 8. Tenant isolation and `:` in any id → 400, `parse_error`.
/// 9. Required cluster name: header missing → 400 `parse_error`; different (an empty value
///    counts as different) → 400 `validation_failed`.
///
/// Then the improvements, placed last so every request the built-in rejects gets the built-in's
/// answer:
/// - Improvement: an id with control characters (< 0x20 or 0x7f), non-UTF-8 bytes or more than
///   [`MAX_ID_BYTES`] bytes → 400 `Invalid reverse tunnel identifier`, `parse_error`.
/// - Improvement: an empty node id or cluster id → 400 `Empty node-id or cluster-id header
///   value`, `parse_error` (the built-in answers 200, then drops the tunnel).
/// - Improvement: bytes after the request head (pipelining) → 400 `Unexpected bytes after
///   reverse tunnel handshake`, `parse_error` (the built-in silently loses them; a real
///   initiator never sends them).
///
/// Header names are case-insensitive, the first of duplicate headers wins, values are trimmed
/// of surrounding spaces and tabs (docs/protocol.md#handshake-response).
pub fn evaluate(buf: &[u8], rules: &HandshakeRules) -> Outcome {
    // A head of at most `max_header_bytes` bytes has at most one header per 3 bytes ("x:\n"),
    // so more slots than that are never needed; this also bounds the allocation.
    let slots = rules
        .max_headers
        .min(rules.max_header_bytes / 3 + 1)
        .min(MAX_HEADER_SLOTS);
    let mut header_slots = vec![httparse::EMPTY_HEADER; slots];
    let mut req = httparse::Request::new(&mut header_slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > rules.max_header_bytes {
                return Outcome::Reject(Rejection::headers_too_large());
            }
            return Outcome::NeedMore;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Outcome::Reject(Rejection::headers_too_large());
        }
        Err(_) => return Outcome::Reject(Rejection::bad_request()),
    };
    if head_len > rules.max_header_bytes {
        return Outcome::Reject(Rejection::headers_too_large());
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let version = req.version.unwrap_or(1);
    let headers: &[httparse::Header<'_>] = req.headers;

    // 0. Envoy's HTTP/1 codec only knows upper-case standard methods: anything else (`get`,
    //    `Get`, `FOO`) is a codec error, 400 `Bad Request` with no counter (observed against the
    //    built-in by the conformance test).
    if !KNOWN_METHODS.contains(&method) {
        return Outcome::Reject(Rejection::bad_request());
    }

    // 1. Codec-level framing checks (llhttp rejects these while parsing the headers).
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Outcome::Reject(Rejection::bad_request());
            }
            match parse_decimal(trim(h.value)) {
                Some(n) => content_length = Some(n),
                None => return Outcome::Reject(Rejection::bad_request()),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if transfer_encoding && content_length.is_some() {
        return Outcome::Reject(Rejection::bad_request());
    }

    // 2. HTTP/1.0 is disallowed by the codec (docs/protocol.md#handshake-checks).
    if version == 0 {
        return Outcome::Reject(Rejection::http10_upgrade_required());
    }

    // 3. No body.
    if transfer_encoding || content_length.unwrap_or(0) != 0 {
        return Outcome::Reject(Rejection::new(
            400,
            BODY_REJECTED_TEXT,
            Some(Counter::BodyRejected),
        ));
    }

    // 4. Method and path.
    if !method.eq_ignore_ascii_case(&rules.request_method)
        || path.contains('?')
        || path != rules.request_path
    {
        return Outcome::Reject(Rejection::new(404, NOT_A_TUNNEL_TEXT, None));
    }

    // 5. Upgrade.
    if rules.use_http_upgrade {
        let ok = first(headers, "upgrade")
            .map(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes()))
            .unwrap_or(false);
        if !ok {
            let mut r = Rejection::new(426, UPGRADE_REQUIRED_TEXT, Some(Counter::ParseError));
            r.headers
                .push(("upgrade".to_string(), UPGRADE_PROTOCOL.to_string()));
            return Outcome::Reject(r);
        }
    }

    // 6. The three ids are present.
    let (node, cluster, tenant) = match (
        first(headers, NODE_ID_HEADER),
        first(headers, CLUSTER_ID_HEADER),
        first(headers, TENANT_ID_HEADER),
    ) {
        (Some(n), Some(c), Some(t)) => (n, c, t),
        _ => return Outcome::Reject(parse_error(MISSING_HEADERS_TEXT)),
    };

    // 7. Non-empty tenant.
    if tenant.is_empty() {
        return Outcome::Reject(parse_error(EMPTY_TENANT_TEXT));
    }

    // 8. Tenant-isolation delimiter.
    if rules.tenant_isolation && [node, cluster, tenant].iter().any(|id| id.contains(&b':')) {
        return Outcome::Reject(parse_error(ISOLATION_DELIMITER_TEXT));
    }

    // 9. Required cluster name.
    let upstream_cluster_name = first(headers, UPSTREAM_CLUSTER_NAME_HEADER);
    if let Some(required) = rules.required_cluster_name.as_deref() {
        if !required.is_empty() {
            match upstream_cluster_name {
                None => return Outcome::Reject(parse_error(MISSING_CLUSTER_NAME_TEXT)),
                Some(v) if v != required.as_bytes() => {
                    return Outcome::Reject(Rejection::new(
                        400,
                        CLUSTER_MISMATCH_TEXT,
                        Some(Counter::ValidationFailed),
                    ));
                }
                Some(_) => {}
            }
        }
    }

    // Improvements.
    let (node_id, cluster_id, tenant_id) =
        match (valid_id(node), valid_id(cluster), valid_id(tenant)) {
            (Some(n), Some(c), Some(t)) => (n, c, t),
            _ => return Outcome::Reject(parse_error(INVALID_ID_TEXT)),
        };
    if node_id.is_empty() || cluster_id.is_empty() {
        return Outcome::Reject(parse_error(EMPTY_NODE_OR_CLUSTER_TEXT));
    }
    if buf.len() > head_len {
        return Outcome::Reject(parse_error(PIPELINED_TEXT));
    }

    let initiation_time_ms = first(headers, INITIATION_TIME_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    let lossy = |v: Option<&[u8]>| {
        v.map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    Outcome::Accept(HandshakeRequest {
        node_id,
        cluster_id,
        tenant_id,
        upstream_cluster_name: upstream_cluster_name
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        initiation_time_ms,
        initiator_worker_id: lossy(first(headers, WORKER_ID_HEADER)),
        initiator_connection_id: lossy(first(headers, CONNECTION_ID_HEADER)),
        upgrade: rules.use_http_upgrade,
        headers: headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(trim(h.value)).into_owned(),
                )
            })
            .collect(),
        request_len: head_len,
    })
}

/// Hard cap on header slots allocated per parse, whatever the rules say (bounded memory).
const MAX_HEADER_SLOTS: usize = 16 * 1024;

fn parse_error(body: &str) -> Rejection {
    Rejection::new(400, body, Some(Counter::ParseError))
}

/// First value of header `name` (case-insensitive), trimmed.
fn first<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| trim(h.value))
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or(&[])
}

/// A non-empty run of ASCII digits as `u64`; `None` otherwise (including overflow).
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// An id as `String` if it is UTF-8, at most [`MAX_ID_BYTES`] bytes and free of control
/// characters (< 0x20 or 0x7f); `None` otherwise.
fn valid_id(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_ID_BYTES || bytes.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return None;
    }
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact 448-byte request of docs/protocol.md#handshake-request.
    const BASE: &str = "GET /reverse_connections/request HTTP/1.1\r\n\
host: 127.0.0.1:19011\r\n\
x-envoy-reverse-tunnel-node-id: downstream-node\r\n\
x-envoy-reverse-tunnel-cluster-id: downstream-cluster\r\n\
x-envoy-reverse-tunnel-tenant-id: downstream-tenant\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\r\n\
x-envoy-reverse-tunnel-initiation-time: 1795315930843\r\n\
x-envoy-reverse-tunnel-worker-id: worker_0\r\n\
x-envoy-reverse-tunnel-connection-id: 1\r\n\
content-length: 0\r\n\
\r\n";

    /// The exact 520-byte upgrade-mode request of the upgrade-mode capture.
    const UPGRADE: &str = "GET /reverse_connections/request HTTP/1.1\r\n\
host: 127.0.0.1:19032\r\n\
connection: upgrade\r\n\
upgrade: reverse-tunnel\r\n\
x-envoy-reverse-tunnel-node-id: downstream-node\r\n\
x-envoy-reverse-tunnel-cluster-id: downstream-cluster\r\n\
x-envoy-reverse-tunnel-tenant-id: downstream-tenant\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\r\n\
x-envoy-reverse-tunnel-initiation-time: 1795316348778\r\n\
x-envoy-reverse-tunnel-worker-id: worker_0\r\n\
x-envoy-reverse-tunnel-connection-id: 0\r\n\
x-custom-auth: token-123\r\n\
content-length: 0\r\n\
\r\n";

    fn rules() -> HandshakeRules {
        HandshakeRules::default()
    }

    /// BASE with the first occurrence of `from` replaced by `to` (asserting it occurs).
    fn mutate(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} not in BASE");
        BASE.replacen(from, to, 1)
    }

    fn reject(buf: &[u8], rules: &HandshakeRules) -> Rejection {
        match evaluate(buf, rules) {
            Outcome::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn accept(buf: &[u8], rules: &HandshakeRules) -> HandshakeRequest {
        match evaluate(buf, rules) {
            Outcome::Accept(r) => r,
            other => panic!("expected accept, got {other:?}"),
        }
    }

    fn assert_reject(
        buf: &[u8],
        rules: &HandshakeRules,
        status: u16,
        body: &str,
        c: Option<Counter>,
    ) {
        let r = reject(buf, rules);
        assert_eq!(
            r.status,
            status,
            "status for {:?}",
            String::from_utf8_lossy(buf)
        );
        assert_eq!(r.body, body);
        assert_eq!(r.counter, c);
    }

    #[test]
    fn baseline_is_448_bytes_and_accepted_with_all_fields() {
        assert_eq!(BASE.len(), 448);
        let req = accept(BASE.as_bytes(), &rules());
        assert_eq!(req.node_id, "downstream-node");
        assert_eq!(req.cluster_id, "downstream-cluster");
        assert_eq!(req.tenant_id, "downstream-tenant");
        assert_eq!(
            req.upstream_cluster_name.as_deref(),
            Some("upstream-cluster")
        );
        assert_eq!(req.initiation_time_ms, 1_795_315_930_843);
        assert_eq!(req.initiator_worker_id, "worker_0");
        assert_eq!(req.initiator_connection_id, "1");
        assert!(!req.upgrade);
        assert_eq!(req.request_len, 448);
        assert_eq!(req.headers.len(), 9);
        assert_eq!(
            req.headers[0],
            ("host".to_string(), "127.0.0.1:19011".to_string())
        );
        assert_eq!(req.header("Content-Length"), Some("0"));
    }

    #[test]
    fn row_unparsable_is_codec_400() {
        let r = reject(b"HELLO WORLD\r\n\r\n", &rules());
        assert_eq!(
            (r.status, r.body.as_str(), r.counter),
            (400, "Bad Request", None)
        );
        let r = reject(b"\x00\x01\x02garbage", &rules());
        assert_eq!(r.status, 400);
        // An invalid header line in the baseline.
        let bad = mutate("host: 127", "ho st: 127");
        assert_reject(bad.as_bytes(), &rules(), 400, "Bad Request", None);
    }

    #[test]
    fn row_http10_is_426_not_chunked() {
        let m = mutate("HTTP/1.1", "HTTP/1.0");
        let r = reject(m.as_bytes(), &rules());
        assert_eq!(
            (r.status, r.body.as_str(), r.counter),
            (426, "Upgrade Required", None)
        );
        assert!(!r.chunked);
        assert_eq!(
            r.to_wire(),
            b"HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\n\r\nUpgrade Required"
                .to_vec()
        );
    }

    #[test]
    fn row_body_is_rejected() {
        let cl = mutate("content-length: 0", "content-length: 5");
        assert_reject(
            cl.as_bytes(),
            &rules(),
            400,
            BODY_REJECTED_TEXT,
            Some(Counter::BodyRejected),
        );
        let te = mutate("content-length: 0", "transfer-encoding: chunked");
        let te = format!("{te}5\r\nhello\r\n0\r\n\r\n");
        assert_reject(
            te.as_bytes(),
            &rules(),
            400,
            BODY_REJECTED_TEXT,
            Some(Counter::BodyRejected),
        );
        // The body check comes before method/path (order of the table).
        let both = cl.replacen("GET", "POST", 1);
        assert_reject(
            both.as_bytes(),
            &rules(),
            400,
            BODY_REJECTED_TEXT,
            Some(Counter::BodyRejected),
        );
    }

    #[test]
    fn malformed_framing_is_codec_400() {
        for (from, to) in [
            ("content-length: 0", "content-length: abc"),
            (
                "content-length: 0",
                "content-length: 0\r\ncontent-length: 0",
            ),
            (
                "content-length: 0",
                "content-length: 0\r\ntransfer-encoding: chunked",
            ),
        ] {
            assert_reject(
                mutate(from, to).as_bytes(),
                &rules(),
                400,
                "Bad Request",
                None,
            );
        }
    }

    #[test]
    fn row_method_or_path_is_404() {
        for m in [
            mutate("GET", "POST"),
            mutate(
                "/reverse_connections/request",
                "/reverse_connections/request?x=1",
            ),
            mutate(
                "/reverse_connections/request",
                "/reverse_connections/Request",
            ),
            mutate("/reverse_connections/request", "/"),
        ] {
            assert_reject(m.as_bytes(), &rules(), 404, NOT_A_TUNNEL_TEXT, None);
        }
        // Envoy's codec only knows upper-case methods: `get` is a codec-level 400, no counter
        // (observed against the built-in, integration/tests/conformance.rs).
        assert_reject(mutate("GET", "get").as_bytes(), &rules(), 400, "Bad Request", None);
        assert_reject(mutate("GET", "FOO").as_bytes(), &rules(), 400, "Bad Request", None);
        // Configured method and path.
        let custom = HandshakeRules {
            request_method: "POST".into(),
            request_path: "/rt".into(),
            ..rules()
        };
        accept(
            mutate("GET /reverse_connections/request", "POST /rt").as_bytes(),
            &custom,
        );
        assert_reject(BASE.as_bytes(), &custom, 404, NOT_A_TUNNEL_TEXT, None);
    }

    #[test]
    fn row_upgrade_mode() {
        let up = HandshakeRules {
            use_http_upgrade: true,
            ..rules()
        };
        assert_eq!(UPGRADE.len(), 520);
        let req = accept(UPGRADE.as_bytes(), &up);
        assert!(req.upgrade);
        assert_eq!(accept_response(req.upgrade).len(), 82);
        assert_eq!(req.header("x-custom-auth"), Some("token-123"));
        // Case-insensitive value; only `upgrade` is required.
        accept(
            mutate("host:", "upgrade: Reverse-Tunnel\r\nhost:").as_bytes(),
            &up,
        );
        // Missing or wrong upgrade → 426 with `upgrade: reverse-tunnel`.
        for m in [
            BASE.to_string(),
            UPGRADE.replacen("upgrade: reverse-tunnel", "upgrade: websocket", 1),
        ] {
            let r = reject(m.as_bytes(), &up);
            assert_eq!((r.status, r.body.as_str()), (426, UPGRADE_REQUIRED_TEXT));
            assert_eq!(r.counter, Some(Counter::ParseError));
            assert!(r.chunked);
            assert_eq!(
                r.headers,
                vec![("upgrade".to_string(), "reverse-tunnel".to_string())]
            );
            let wire = String::from_utf8(r.to_wire()).unwrap_or_default();
            assert!(wire.starts_with(
                "HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\nupgrade: reverse-tunnel\r\ntransfer-encoding: chunked\r\n\r\n"
            ));
        }
        // Not in upgrade mode, the upgrade request still gets a plain 200.
        assert!(!accept(UPGRADE.as_bytes(), &rules()).upgrade);
    }

    #[test]
    fn row_missing_id_headers() {
        for h in [
            "x-envoy-reverse-tunnel-node-id",
            "x-envoy-reverse-tunnel-cluster-id",
            "x-envoy-reverse-tunnel-tenant-id",
        ] {
            let m = mutate(h, "x-other");
            assert_reject(
                m.as_bytes(),
                &rules(),
                400,
                MISSING_HEADERS_TEXT,
                Some(Counter::ParseError),
            );
        }
    }

    #[test]
    fn row_empty_tenant() {
        let m = mutate("tenant-id: downstream-tenant", "tenant-id:   ");
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            EMPTY_TENANT_TEXT,
            Some(Counter::ParseError),
        );
        // Built-in order: an empty tenant wins over an empty node id.
        let m = m.replacen("node-id: downstream-node", "node-id:", 1);
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            EMPTY_TENANT_TEXT,
            Some(Counter::ParseError),
        );
    }

    #[test]
    fn row_isolation_delimiter() {
        let iso = HandshakeRules {
            tenant_isolation: true,
            ..rules()
        };
        accept(BASE.as_bytes(), &iso);
        for (from, to) in [
            ("node-id: downstream-node", "node-id: a:b"),
            ("cluster-id: downstream-cluster", "cluster-id: a:b"),
            ("tenant-id: downstream-tenant", "tenant-id: a:b"),
        ] {
            let m = mutate(from, to);
            assert_reject(
                m.as_bytes(),
                &iso,
                400,
                ISOLATION_DELIMITER_TEXT,
                Some(Counter::ParseError),
            );
            accept(m.as_bytes(), &rules());
        }
    }

    #[test]
    fn row_required_cluster_name() {
        let req = HandshakeRules {
            required_cluster_name: Some("upstream-cluster".into()),
            ..rules()
        };
        accept(BASE.as_bytes(), &req);
        let missing = mutate("x-envoy-reverse-tunnel-upstream-cluster-name", "x-other");
        assert_reject(
            missing.as_bytes(),
            &req,
            400,
            MISSING_CLUSTER_NAME_TEXT,
            Some(Counter::ParseError),
        );
        accept(missing.as_bytes(), &rules());
        let other = mutate("name: upstream-cluster", "name: other");
        assert_reject(
            other.as_bytes(),
            &req,
            400,
            CLUSTER_MISMATCH_TEXT,
            Some(Counter::ValidationFailed),
        );
        let empty = mutate("name: upstream-cluster", "name:");
        assert_reject(
            empty.as_bytes(),
            &req,
            400,
            CLUSTER_MISMATCH_TEXT,
            Some(Counter::ValidationFailed),
        );
        // An empty required name disables the check.
        let none = HandshakeRules {
            required_cluster_name: Some(String::new()),
            ..rules()
        };
        accept(other.as_bytes(), &none);
    }

    #[test]
    fn caller_rejections() {
        let r = Rejection::connection_limit(7);
        assert_eq!(
            (r.status, r.body.as_str(), r.counter),
            (429, "rejected", Some(Counter::Rejected))
        );
        assert_eq!(
            r.to_wire(),
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nretry-after: 7\r\ntransfer-encoding: chunked\r\n\r\n8\r\nrejected\r\n0\r\n\r\n".to_vec()
        );
        let r = Rejection::validation_failed();
        assert_eq!(
            (r.status, r.body.as_str(), r.counter),
            (403, "validation_failed", Some(Counter::ValidationFailed))
        );
        let r = Rejection::registration_unavailable();
        assert_eq!(
            (r.status, r.counter),
            (503, Some(Counter::RegistrationFailed))
        );
        assert_eq!(r.body, "Reverse tunnel registration unavailable");
        let r = Rejection::draining();
        assert_eq!((r.status, r.counter), (503, Some(Counter::Rejected)));
        assert_eq!(r.body, "Reverse tunnel responder is draining");
        assert!(String::from_utf8_lossy(&r.to_wire())
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[test]
    fn to_wire_chunk_size_is_hex_and_crlf_is_stripped() {
        let r = Rejection::new(400, MISSING_HEADERS_TEXT, Some(Counter::ParseError));
        let expect = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n27\r\n{MISSING_HEADERS_TEXT}\r\n0\r\n\r\n"
        );
        assert_eq!(MISSING_HEADERS_TEXT.len(), 0x27);
        assert_eq!(r.to_wire(), expect.into_bytes());
        let mut evil = Rejection::bad_request();
        evil.headers.push(("x\r\n".into(), "a\r\nb".into()));
        evil.body.clear();
        evil.status = 42;
        assert_eq!(
            evil.to_wire(),
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\nx: ab\r\ncontent-length: 0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn accept_response_exact_bytes() {
        assert_eq!(
            accept_response(false),
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(accept_response(false).len(), 38);
        assert_eq!(
            accept_response(true),
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n"
        );
        assert_eq!(accept_response(true).len(), 82);
    }

    #[test]
    fn split_delivery_one_byte_at_a_time() {
        let bytes = BASE.as_bytes();
        for n in 0..bytes.len() {
            assert_eq!(
                evaluate(&bytes[..n], &rules()),
                Outcome::NeedMore,
                "prefix {n}"
            );
        }
        assert_eq!(accept(bytes, &rules()).request_len, 448);
    }

    #[test]
    fn header_limits_are_431() {
        // Too many headers.
        let many: String = (0..MAX_HEADERS).map(|i| format!("x-h{i}: v\r\n")).collect();
        let m = mutate(
            "content-length: 0\r\n",
            &format!("{many}content-length: 0\r\n"),
        );
        assert_reject(
            m.as_bytes(),
            &rules(),
            431,
            "Request Header Fields Too Large",
            None,
        );
        // Exactly the limit is fine (9 baseline headers + 91).
        let ok: String = (0..MAX_HEADERS - 9)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect();
        accept(
            mutate(
                "content-length: 0\r\n",
                &format!("{ok}content-length: 0\r\n"),
            )
            .as_bytes(),
            &rules(),
        );
        // A head that is too big, complete or not.
        let big = mutate(
            "content-length: 0\r\n",
            &format!(
                "x-big: {}\r\ncontent-length: 0\r\n",
                "a".repeat(MAX_HEADER_BYTES)
            ),
        );
        assert_reject(
            big.as_bytes(),
            &rules(),
            431,
            "Request Header Fields Too Large",
            None,
        );
        let partial = &big.as_bytes()[..MAX_HEADER_BYTES + 1];
        assert_reject(
            partial,
            &rules(),
            431,
            "Request Header Fields Too Large",
            None,
        );
        assert_eq!(
            evaluate(&big.as_bytes()[..MAX_HEADER_BYTES], &rules()),
            Outcome::NeedMore
        );
        // Small configured limits.
        let tiny = HandshakeRules {
            max_header_bytes: 100,
            ..rules()
        };
        assert_reject(
            BASE.as_bytes(),
            &tiny,
            431,
            "Request Header Fields Too Large",
            None,
        );
        let few = HandshakeRules {
            max_headers: 8,
            ..rules()
        };
        assert_reject(
            BASE.as_bytes(),
            &few,
            431,
            "Request Header Fields Too Large",
            None,
        );
        let zero = HandshakeRules {
            max_headers: 0,
            max_header_bytes: 0,
            ..rules()
        };
        assert_eq!(evaluate(b"", &zero), Outcome::NeedMore);
        assert_eq!(reject(BASE.as_bytes(), &zero).status, 431);
    }

    #[test]
    fn improvement_empty_node_or_cluster() {
        for (from, to) in [
            ("node-id: downstream-node", "node-id: "),
            ("cluster-id: downstream-cluster", "cluster-id:\t"),
        ] {
            let m = mutate(from, to);
            assert_reject(
                m.as_bytes(),
                &rules(),
                400,
                EMPTY_NODE_OR_CLUSTER_TEXT,
                Some(Counter::ParseError),
            );
        }
    }

    #[test]
    fn improvement_pipelined_bytes() {
        let m = format!("{BASE}RPING");
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            PIPELINED_TEXT,
            Some(Counter::ParseError),
        );
        let m = format!("{BASE}{BASE}");
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            PIPELINED_TEXT,
            Some(Counter::ParseError),
        );
    }

    #[test]
    fn improvement_invalid_identifiers() {
        let long = "n".repeat(MAX_ID_BYTES + 1);
        let exact = "n".repeat(MAX_ID_BYTES);
        assert_eq!(
            accept(mutate("downstream-node", &exact).as_bytes(), &rules()).node_id,
            exact
        );
        let cases: Vec<Vec<u8>> = vec![
            mutate("downstream-node", &long).into_bytes(),
            mutate("downstream-node", "a\tb").into_bytes(),
            mutate("downstream-tenant", "t\u{00e9}")
                .replace_bytes("t\u{00e9}".as_bytes(), b"t\xff"),
        ];
        for c in cases {
            assert_reject(
                &c,
                &rules(),
                400,
                INVALID_ID_TEXT,
                Some(Counter::ParseError),
            );
        }
        // DEL and other control bytes never reach the id check: the parser (like Envoy's codec)
        // rejects them as a malformed header value.
        let del = mutate("downstream-cluster", "a\x7fb");
        assert_reject(del.as_bytes(), &rules(), 400, "Bad Request", None);
        // The id check itself still refuses them (defence in depth).
        assert_eq!(valid_id(b"a\x7fb"), None);
        assert_eq!(valid_id(b"a\x01b"), None);
        assert_eq!(valid_id(b"a b"), Some("a b".to_string()));
        // Spaces and UTF-8 are accepted, as in the built-in.
        let req = accept(
            mutate("downstream-node", "my n\u{00f6}de").as_bytes(),
            &rules(),
        );
        assert_eq!(req.node_id, "my n\u{00f6}de");
    }

    // Helper for the test above: byte-level replace on a Vec<u8>.
    trait ReplaceBytes {
        fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }
    impl ReplaceBytes for String {
        fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let b = self.into_bytes();
            match b.windows(from.len()).position(|w| w == from) {
                Some(i) => [&b[..i], to, &b[i + from.len()..]].concat(),
                None => panic!("pattern not found"),
            }
        }
    }

    #[test]
    fn duplicates_first_wins_and_names_are_case_insensitive() {
        let dup = mutate(
            "content-length: 0",
            "x-envoy-reverse-tunnel-node-id: second\r\ncontent-length: 0",
        );
        let req = accept(dup.as_bytes(), &rules());
        assert_eq!(req.node_id, "downstream-node");
        let upper = BASE
            .replace(
                "x-envoy-reverse-tunnel-node-id",
                "X-Envoy-Reverse-Tunnel-Node-Id",
            )
            .replace(
                "x-envoy-reverse-tunnel-tenant-id",
                "X-ENVOY-REVERSE-TUNNEL-TENANT-ID",
            )
            .replace("content-length", "Content-Length");
        let req = accept(upper.as_bytes(), &rules());
        assert_eq!(req.node_id, "downstream-node");
        assert_eq!(req.tenant_id, "downstream-tenant");
        assert_eq!(req.headers[1].0, "x-envoy-reverse-tunnel-node-id");
    }

    #[test]
    fn optional_fields_default() {
        let m = mutate(
            "x-envoy-reverse-tunnel-initiation-time: 1795315930843",
            "x-envoy-reverse-tunnel-initiation-time: soon",
        )
        .replacen("x-envoy-reverse-tunnel-connection-id", "x-other", 1)
        .replacen("x-envoy-reverse-tunnel-worker-id", "x-other2", 1)
        .replacen(
            "x-envoy-reverse-tunnel-upstream-cluster-name",
            "x-other3",
            1,
        );
        let req = accept(m.as_bytes(), &rules());
        assert_eq!(req.initiation_time_ms, 0);
        assert_eq!(req.initiator_connection_id, "");
        assert_eq!(req.initiator_worker_id, "");
        assert_eq!(req.upstream_cluster_name, None);
        let neg = mutate("1795315930843", "-5");
        assert_eq!(accept(neg.as_bytes(), &rules()).initiation_time_ms, -5);
    }

    #[test]
    fn counter_names() {
        let names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "accepted",
                "parse_error",
                "validation_failed",
                "rejected",
                "timeout",
                "body_rejected",
                "registration_failed"
            ]
        );
        for c in Counter::ALL {
            assert_eq!(
                c.stat_name(),
                format!("reverse_tunnel.handshake.{}", c.name())
            );
        }
    }

    fn check_outcome(buf: &[u8], rules: &HandshakeRules) -> Result<(), TestCaseError> {
        match evaluate(buf, rules) {
            Outcome::NeedMore => prop_assert!(buf.len() <= rules.max_header_bytes),
            Outcome::Accept(req) => {
                prop_assert_eq!(req.request_len, buf.len());
                prop_assert!(
                    !req.node_id.is_empty()
                        && !req.cluster_id.is_empty()
                        && !req.tenant_id.is_empty()
                );
            }
            Outcome::Reject(r) => {
                let wire = r.to_wire();
                prop_assert!(wire.starts_with(b"HTTP/1.1 "));
                prop_assert!(
                    [400u16, 404, 426, 431].contains(&r.status),
                    "status {}",
                    r.status
                );
                let status = wire.get(9..12).unwrap_or(&[]).to_vec();
                prop_assert_eq!(status, r.status.to_string().into_bytes());
            }
        }
        Ok(())
    }

    fn any_rules() -> impl Strategy<Value = HandshakeRules> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(up, iso, req)| HandshakeRules {
            use_http_upgrade: up,
            tenant_isolation: iso,
            required_cluster_name: req.then(|| "upstream-cluster".to_string()),
            ..HandshakeRules::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::core::fuzz_cases(2000), ..ProptestConfig::default() })]

        #[test]
        fn prop_any_bytes(buf in proptest::collection::vec(any::<u8>(), 0..600), r in any_rules()) {
            check_outcome(&buf, &r)?;
        }

        #[test]
        fn prop_mutated_request(
            upgrade in any::<bool>(),
            cut in 0usize..600,
            edits in proptest::collection::vec((0usize..600, any::<u8>()), 0..4),
            r in any_rules(),
        ) {
            let mut buf = if upgrade { UPGRADE } else { BASE }.as_bytes().to_vec();
            for (pos, byte) in edits {
                if let Some(slot) = buf.get_mut(pos) {
                    *slot = byte;
                }
            }
            buf.truncate(cut);
            check_outcome(&buf, &r)?;
        }
    }
}
