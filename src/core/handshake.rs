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

/// Prefix of every handshake counter's stat name.
pub const COUNTER_PREFIX: &str = "reverse_tunnel.handshake.";

/// The handshake counters, `reverse_tunnel.handshake.<name>` (docs/protocol.md#handshake-counters).
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
    /// `jwt_validator` enforcing: the token is missing or fails (401).
    JwtDenied,
    /// `jwt_validator` in audit mode (`allow_missing_or_failed`): the token would have been
    /// denied; the handshake continues.
    JwtWouldDeny,
}

impl Counter {
    /// Every counter, in declaration order.
    pub const ALL: [Counter; 9] = [
        Counter::Accepted,
        Counter::ParseError,
        Counter::ValidationFailed,
        Counter::Rejected,
        Counter::Timeout,
        Counter::BodyRejected,
        Counter::RegistrationFailed,
        Counter::JwtDenied,
        Counter::JwtWouldDeny,
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
            Counter::JwtDenied => "jwt_denied",
            Counter::JwtWouldDeny => "jwt_would_deny",
        }
    }

    /// Full stat name, e.g. `"reverse_tunnel.handshake.parse_error"` (docs/protocol.md#handshake-counters: no
    /// listener prefix).
    pub fn stat_name(&self) -> String {
        format!("{COUNTER_PREFIX}{}", self.name())
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

    /// 401 `JWT authentication failed`, counter `jwt_denied`: `jwt_validator` is enforcing and
    /// the token is missing or fails verification (docs/protocol.md#handshake-response,
    /// #jwt-on-the-handshake).
    pub fn jwt_denied() -> Rejection {
        Rejection::new(401, "JWT authentication failed", Some(Counter::JwtDenied))
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
/// Checks, in this order (docs/protocol.md#handshake-response table, #handshake-checks):
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
mod tests;
