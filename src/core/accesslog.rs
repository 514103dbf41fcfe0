//! Formatter of the responder's lifecycle access log (`UpstreamReverseConnectionSocketInterface.
//! access_log`, docs/protocol.md#lifecycle-log): turns one [`LifecycleEvent`] into one log line according to a
//! configured [`LogFormat`].
//!
//! Supported grammar (a subset of Envoy's substitution formatter; `%%` is a literal `%`):
//! - `%START_TIME%`: the event time, UTC, as `2026-11-22T02:52:10.845Z` (Envoy's default
//!   `%Y-%m-%dT%H:%M:%E3SZ`); `%START_TIME(fmt)%` with the strftime subset `%Y %m %d %H %M %S
//!   %z %s %f %1f..%9f %E1S..%E9S %T %F %%` (see [`strftime`]; only millisecond precision is
//!   known, further digits are `0`).
//! - `%DURATION%`: milliseconds (number).
//! - `%ACCESS_LOG_TYPE%`: e.g. `TcpUpstreamConnected`.
//! - `%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle)%`: the whole lifecycle struct (object in
//!   JSON, compact JSON text in text); `%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:key)%`
//!   one key of it. Other namespaces / absent keys render as missing.
//! - `%FILTER_STATE(envoy.reverse_tunnel.<node_id|cluster_id|tenant_id|worker|fd|
//!   initiator_worker_id|initiator_connection_id>[:PLAIN|:TYPED])%`: `PLAIN` is always a string
//!   (`"36"` for `fd`, as the built-in); `TYPED` or no suffix gives `fd` as a number. The
//!   initiator ids are missing when empty (the built-in does not set them then). Other keys render
//!   as missing.
//! - `%DOWNSTREAM_LOCAL_ADDRESS%`, `%DOWNSTREAM_REMOTE_ADDRESS%` (missing when empty),
//!   `%CONNECTION_TERMINATION_DETAILS%`, `%CONNECTION_ID%` (number).
//! - Any operator may end in `:N` (keep the first `N` characters of a string value).
//!
//! A missing value renders `-` in text and `null` in JSON (as Envoy). Any other operator is
//! refused by [`Formatter::new`] with an error naming it.
//!
//! JSON formats: a value that is exactly one operator maps to its typed value (numbers as numbers,
//! the lifecycle struct as an object); a value mixing text and operators is a string in which each
//! operator is rendered as text; nested objects are formatted recursively; non-string constants
//! are copied. Keys keep the order of the configured map (sorted, see [`LogFormat::Json`]).
//!
//! Text formats: the line is the rendered string plus `\n` unless it already ends in one (Envoy
//! adds nothing; a text format without `\n` would run lines together there).
//!
//! Default format (no `log_format`): the built-in uses Envoy's HTTP default line, which for these
//! connection events is almost all `-` (`[ts] "- - -" 0 - 0 0 0 - "-" "-" "-" "-" "-"`). We use
//! [`DEFAULT_FORMAT`] instead, which carries the event.
//!
//! Pure code: no I/O, no clock, no panics on any input.

use crate::core::format_string::{self, FormatError, Piece};
use serde_json::{Map, Value};

/// Line format of an access logger.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    /// No format configured: Envoy's default access log format.
    Default,
    /// A text format string with `%COMMAND%` operators (from `format`, `log_format.text_format` or
    /// `log_format.text_format_source.inline_string`/`inline_bytes`). The string is as configured
    /// (no newline is added).
    Text(String),
    /// A JSON format: keys map to format strings or nested objects (from `json_format`,
    /// `typed_json_format` or `log_format.json_format`). Keys are sorted: a protobuf `Struct` is a
    /// map and does not keep their order.
    Json(serde_json::Map<String, serde_json::Value>),
}

/// The lifecycle metadata namespace (docs/protocol.md#lifecycle-log).
pub const LIFECYCLE_NAMESPACE: &str = "envoy.reverse_tunnel.lifecycle";

/// Prefix of the filter-state keys (docs/protocol.md#lifecycle-log).
pub const FILTER_STATE_PREFIX: &str = "envoy.reverse_tunnel.";

/// Text format used when a logger has no `log_format` (see the module docs).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] %ACCESS_LOG_TYPE% \
%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle)% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_REMOTE_ADDRESS% %DURATION% %CONNECTION_TERMINATION_DETAILS%\n";

/// The lifecycle log's `event` (docs/protocol.md#lifecycle-log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventName {
    #[default]
    TunnelSetup,
    IdlePingSent,
    IdlePingAck,
    IdlePingMiss,
    IdlePingTimeout,
    SocketHandoff,
    Http2KeepaliveTimeout,
    TunnelClosed,
}

impl EventName {
    /// Every event, in the order of the protocol's table.
    pub const ALL: [EventName; 8] = [
        EventName::TunnelSetup,
        EventName::IdlePingSent,
        EventName::IdlePingAck,
        EventName::IdlePingMiss,
        EventName::IdlePingTimeout,
        EventName::SocketHandoff,
        EventName::Http2KeepaliveTimeout,
        EventName::TunnelClosed,
    ];

    /// The `event` text, e.g. `tunnel_setup`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::TunnelSetup => "tunnel_setup",
            EventName::IdlePingSent => "idle_ping_sent",
            EventName::IdlePingAck => "idle_ping_ack",
            EventName::IdlePingMiss => "idle_ping_miss",
            EventName::IdlePingTimeout => "idle_ping_timeout",
            EventName::SocketHandoff => "socket_handoff",
            EventName::Http2KeepaliveTimeout => "http2_keepalive_timeout",
            EventName::TunnelClosed => "tunnel_closed",
        }
    }
}

/// `%ACCESS_LOG_TYPE%` of a lifecycle entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogType {
    #[default]
    TcpUpstreamConnected,
    UpstreamPoolReady,
    TcpConnectionEnd,
    UpstreamEnd,
}

impl LogType {
    /// The text Envoy prints, e.g. `TcpUpstreamConnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::TcpUpstreamConnected => "TcpUpstreamConnected",
            LogType::UpstreamPoolReady => "UpstreamPoolReady",
            LogType::TcpConnectionEnd => "TcpConnectionEnd",
            LogType::UpstreamEnd => "UpstreamEnd",
        }
    }
}

/// The lifecycle log's `socket_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketState {
    /// Not claimed.
    #[default]
    Idle,
    /// On the handoff event itself.
    HandedOff,
    /// Claimed.
    InUse,
}

impl SocketState {
    /// `idle`, `handed_off` or `in_use`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketState::Idle => "idle",
            SocketState::HandedOff => "handed_off",
            SocketState::InUse => "in_use",
        }
    }
}

/// An optional key of the lifecycle struct, present on some events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKey {
    /// `handoff_kind` (on `socket_handoff`).
    HandoffKind,
    /// `close_reason` (on `tunnel_closed` and `http2_keepalive_timeout`).
    CloseReason,
    /// `miss_count` (on `idle_ping_miss` and `idle_ping_timeout`).
    MissCount,
}

impl ExtraKey {
    /// Every optional key.
    pub const ALL: [ExtraKey; 3] = [ExtraKey::HandoffKind, ExtraKey::CloseReason, ExtraKey::MissCount];

    /// The key's name in the struct.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraKey::HandoffKind => "handoff_kind",
            ExtraKey::CloseReason => "close_reason",
            ExtraKey::MissCount => "miss_count",
        }
    }
}

/// One lifecycle event (docs/protocol.md#lifecycle-log table), as handed to every configured logger.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LifecycleEvent {
    /// `event`.
    pub event: EventName,
    /// `%ACCESS_LOG_TYPE%`.
    pub log_type: LogType,
    /// Bare node id.
    pub node_id: String,
    /// Bare cluster id.
    pub cluster_id: String,
    /// Bare tenant id (may be empty).
    pub tenant_id: String,
    /// Worker owning the tunnel, e.g. `worker_0`.
    pub worker: String,
    /// `socket_state`.
    pub socket_state: SocketState,
    /// The built-in's socket fd; we use the Envoy connection id.
    pub fd: u64,
    /// Initiator's worker id header (`""` when not sent).
    pub initiator_worker_id: String,
    /// Initiator's connection id header (`""` when not sent).
    pub initiator_connection_id: String,
    /// Optional keys of the struct, with their values.
    pub extra: Vec<(ExtraKey, String)>,
    /// `%START_TIME%`, Unix epoch milliseconds.
    pub start_time_unix_ms: u64,
    /// `%DURATION%`, milliseconds.
    pub duration_ms: u64,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%` (`ip:port`, empty = missing).
    pub local_address: String,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (`ip:port`, empty = missing).
    pub remote_address: String,
    /// `%CONNECTION_ID%`.
    pub connection_id: u64,
    /// `%CONNECTION_TERMINATION_DETAILS%` (the close reason on close events).
    pub termination_details: Option<String>,
}

impl LifecycleEvent {
    /// The `envoy.reverse_tunnel.lifecycle` struct: the fixed keys plus [`Self::extra`]
    /// (`fd` is a number, everything else a string).
    pub fn metadata(&self) -> Map<String, Value> {
        // Inserted in sorted order so the output is sorted whatever the map's ordering.
        let mut pairs: Vec<(&str, Value)> = vec![
            ("cluster_id", Value::from(self.cluster_id.as_str())),
            ("event", Value::from(self.event.as_str())),
            ("fd", Value::from(self.fd)),
            (
                "initiator_connection_id",
                Value::from(self.initiator_connection_id.as_str()),
            ),
            (
                "initiator_worker_id",
                Value::from(self.initiator_worker_id.as_str()),
            ),
            ("node_id", Value::from(self.node_id.as_str())),
            ("socket_state", Value::from(self.socket_state.as_str())),
            ("tenant_id", Value::from(self.tenant_id.as_str())),
            ("worker", Value::from(self.worker.as_str())),
        ];
        for (k, v) in &self.extra {
            if let Some(slot) = pairs.iter_mut().find(|(pk, _)| *pk == k.as_str()) {
                slot.1 = Value::from(v.as_str());
            } else {
                pairs.push((k.as_str(), Value::from(v.as_str())));
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// One key of the lifecycle struct, if present.
    fn metadata_key(&self, key: &str) -> Option<Value> {
        if let Some((_, v)) = self.extra.iter().find(|(k, _)| k.as_str() == key) {
            return Some(Value::from(v.as_str()));
        }
        Some(match key {
            "cluster_id" => Value::from(self.cluster_id.as_str()),
            "event" => Value::from(self.event.as_str()),
            "fd" => Value::from(self.fd),
            "initiator_connection_id" => Value::from(self.initiator_connection_id.as_str()),
            "initiator_worker_id" => Value::from(self.initiator_worker_id.as_str()),
            "node_id" => Value::from(self.node_id.as_str()),
            "socket_state" => Value::from(self.socket_state.as_str()),
            "tenant_id" => Value::from(self.tenant_id.as_str()),
            "worker" => Value::from(self.worker.as_str()),
            _ => return None,
        })
    }
}

/// A compiled access log format (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Formatter {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text(Template),
    Json(Vec<(String, JsonNode)>),
}

/// A JSON format value.
#[derive(Debug, Clone, PartialEq)]
enum JsonNode {
    /// Exactly one operator: typed value.
    Single(Operator),
    /// Text and operators: a string.
    Mixed(Template),
    /// Nested object.
    Object(Vec<(String, JsonNode)>),
    /// Any other constant (number, bool, null, array), copied.
    Constant(Value),
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Op(Operator),
}

/// One command operator with its optional `:N` truncation.
#[derive(Debug, Clone, PartialEq)]
struct Operator {
    field: Field,
    max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    StartTime(Option<Vec<TimeItem>>),
    Duration,
    AccessLogType,
    /// `None` = whole struct; `Some(key)` = one key; `Unknown` namespace = always missing.
    Metadata(Option<String>),
    MetadataOtherNamespace,
    FilterState {
        key: FsKey,
        plain: bool,
    },
    FilterStateUnknown,
    LocalAddress,
    RemoteAddress,
    TerminationDetails,
    ConnectionId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKey {
    NodeId,
    ClusterId,
    TenantId,
    Worker,
    Fd,
    InitiatorWorkerId,
    InitiatorConnectionId,
}

/// One piece of a `%START_TIME(...)%` format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimeItem {
    Literal(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// `%z`: always `+0000` (UTC).
    Zone,
    /// `%s`: epoch seconds.
    EpochSeconds,
    /// `%Nf`: N fractional digits.
    Fraction(u8),
    /// `%ENS`: seconds, `.`, N fractional digits.
    SecondsWithFraction(u8),
}

impl Formatter {
    /// Compiles `format`. Errors name the offending operator, e.g.
    /// `unsupported command operator '%BYTES_SENT%'`.
    pub fn new(format: &LogFormat) -> Result<Formatter, FormatError> {
        let kind = match format {
            LogFormat::Default => Kind::Text(parse_template(DEFAULT_FORMAT)?),
            LogFormat::Text(s) => Kind::Text(parse_template(s)?),
            LogFormat::Json(map) => Kind::Json(compile_object(map)?),
        };
        Ok(Formatter { kind })
    }

    /// Renders one line for `ev`, always ending in `\n`.
    pub fn format(&self, ev: &LifecycleEvent) -> String {
        match &self.kind {
            Kind::Text(t) => {
                let mut s = render_template(t, ev);
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                s
            }
            Kind::Json(fields) => {
                let v = Value::Object(render_object(fields, ev));
                let mut s = v.to_string();
                s.push('\n');
                s
            }
        }
    }
}

fn compile_object(map: &Map<String, Value>) -> Result<Vec<(String, JsonNode)>, FormatError> {
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let node = match v {
            Value::String(s) => {
                let t = parse_template(s)?;
                match t.parts.as_slice() {
                    [Part::Op(op)] => JsonNode::Single(op.clone()),
                    _ => JsonNode::Mixed(t),
                }
            }
            Value::Object(m) => JsonNode::Object(compile_object(m)?),
            other => JsonNode::Constant(other.clone()),
        };
        out.push((k.clone(), node));
    }
    Ok(out)
}

fn render_object(fields: &[(String, JsonNode)], ev: &LifecycleEvent) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, node) in fields {
        let v = match node {
            JsonNode::Single(op) => typed_value(op, ev).unwrap_or(Value::Null),
            JsonNode::Mixed(t) => Value::String(render_template(t, ev)),
            JsonNode::Object(inner) => Value::Object(render_object(inner, ev)),
            JsonNode::Constant(c) => c.clone(),
        };
        m.insert(k.clone(), v);
    }
    m
}

fn render_template(t: &Template, ev: &LifecycleEvent) -> String {
    let mut s = String::new();
    for p in &t.parts {
        match p {
            Part::Literal(l) => s.push_str(l),
            Part::Op(op) => match typed_value(op, ev) {
                None | Some(Value::Null) => s.push('-'),
                Some(Value::String(v)) => s.push_str(&v),
                Some(other) => s.push_str(&other.to_string()),
            },
        }
    }
    s
}

/// Keeps at most `n` characters of `s`.
fn truncate(mut s: String, n: usize) -> String {
    if let Some((idx, _)) = s.char_indices().nth(n) {
        s.truncate(idx);
    }
    s
}

/// The typed value of an operator for `ev`; `None` = missing.
fn typed_value(op: &Operator, ev: &LifecycleEvent) -> Option<Value> {
    let non_empty = |s: &str| {
        if s.is_empty() {
            None
        } else {
            Some(Value::from(s))
        }
    };
    let v = match &op.field {
        Field::StartTime(None) => Some(Value::String(default_time(ev.start_time_unix_ms))),
        Field::StartTime(Some(items)) => {
            Some(Value::String(render_time(items, ev.start_time_unix_ms)))
        }
        Field::Duration => Some(Value::from(ev.duration_ms)),
        Field::AccessLogType => non_empty(ev.log_type.as_str()),
        Field::Metadata(None) => Some(Value::Object(ev.metadata())),
        Field::Metadata(Some(key)) => ev.metadata_key(key),
        Field::MetadataOtherNamespace | Field::FilterStateUnknown => None,
        Field::FilterState { key, plain } => match key {
            FsKey::NodeId => non_empty(&ev.node_id),
            FsKey::ClusterId => non_empty(&ev.cluster_id),
            FsKey::TenantId => non_empty(&ev.tenant_id),
            FsKey::Worker => non_empty(&ev.worker),
            FsKey::Fd if *plain => Some(Value::String(ev.fd.to_string())),
            FsKey::Fd => Some(Value::from(ev.fd)),
            FsKey::InitiatorWorkerId => non_empty(&ev.initiator_worker_id),
            FsKey::InitiatorConnectionId => non_empty(&ev.initiator_connection_id),
        },
        Field::LocalAddress => non_empty(&ev.local_address),
        Field::RemoteAddress => non_empty(&ev.remote_address),
        Field::TerminationDetails => ev.termination_details.as_deref().and_then(non_empty),
        Field::ConnectionId => Some(Value::from(ev.connection_id)),
    };
    match (v, op.max_len) {
        (Some(Value::String(s)), Some(n)) => Some(Value::String(truncate(s, n))),
        (v, _) => v,
    }
}

/// Parses a format string into literal and operator parts.
fn parse_template(fmt: &str) -> Result<Template, FormatError> {
    let parts = format_string::split(fmt, parse_operator)?
        .into_iter()
        .map(|p| match p {
            Piece::Literal(s) => Part::Literal(s),
            Piece::Op(op) => Part::Op(op),
        })
        .collect();
    Ok(Template { parts })
}

/// Parses `NAME`, `NAME:N`, `NAME(arg)` or `NAME(arg):N` (the text between the two `%`).
fn parse_operator(command: &str) -> Result<Operator, String> {
    let unsupported = || format!("unsupported command operator '%{command}%'");
    let (name, arg, tail) = match command.find('(') {
        Some(open) => {
            let close = command
                .rfind(')')
                .filter(|c| *c > open)
                .ok_or_else(|| format!("invalid command operator '%{command}%': missing ')'"))?;
            (
                &command[..open],
                Some(&command[open + 1..close]),
                &command[close + 1..],
            )
        }
        None => match command.find(':') {
            Some(i) => (&command[..i], None, &command[i..]),
            None => (command, None, ""),
        },
    };
    let max_len = if tail.is_empty() {
        None
    } else {
        let digits = tail.strip_prefix(':').ok_or_else(|| {
            format!("invalid command operator '%{command}%': unexpected '{tail}'")
        })?;
        Some(digits.parse::<usize>().map_err(|_| {
            format!("invalid command operator '%{command}%': bad length '{digits}'")
        })?)
    };
    let field = match (name, arg) {
        ("START_TIME", None) => Field::StartTime(None),
        ("START_TIME", Some(f)) => Field::StartTime(Some(
            strftime(f).map_err(|e| format!("invalid '%{command}%': {e}"))?,
        )),
        ("DURATION", None) => Field::Duration,
        ("ACCESS_LOG_TYPE", None) => Field::AccessLogType,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Field::LocalAddress,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Field::RemoteAddress,
        ("CONNECTION_TERMINATION_DETAILS", None) => Field::TerminationDetails,
        ("CONNECTION_ID", None) => Field::ConnectionId,
        ("DYNAMIC_METADATA", Some(a)) => {
            let (ns, key) = match a.split_once(':') {
                Some((ns, key)) => (ns, Some(key)),
                None => (a, None),
            };
            if ns.is_empty() || key.is_some_and(str::is_empty) {
                return Err(format!(
                    "invalid command operator '%{command}%': empty namespace or key"
                ));
            }
            if ns != LIFECYCLE_NAMESPACE {
                Field::MetadataOtherNamespace
            } else {
                match key {
                    None => Field::Metadata(None),
                    // A nested path (`a:b`) cannot match: the struct is flat.
                    Some(k) if k.contains(':') => Field::MetadataOtherNamespace,
                    Some(k) => Field::Metadata(Some(k.to_string())),
                }
            }
        }
        ("FILTER_STATE", Some(a)) => {
            let (key, mode) = match a.split_once(':') {
                Some((k, m)) => (k, Some(m)),
                None => (a, None),
            };
            let plain = match mode {
                None | Some("TYPED") => false,
                Some("PLAIN") => true,
                Some(m) => {
                    return Err(format!(
                        "invalid command operator '%{command}%': unsupported serialization '{m}' \
                         (PLAIN or TYPED)"
                    ))
                }
            };
            let key = match key.strip_prefix(FILTER_STATE_PREFIX) {
                Some("node_id") => Some(FsKey::NodeId),
                Some("cluster_id") => Some(FsKey::ClusterId),
                Some("tenant_id") => Some(FsKey::TenantId),
                Some("worker") => Some(FsKey::Worker),
                Some("fd") => Some(FsKey::Fd),
                Some("initiator_worker_id") => Some(FsKey::InitiatorWorkerId),
                Some("initiator_connection_id") => Some(FsKey::InitiatorConnectionId),
                _ => None,
            };
            match key {
                Some(key) => Field::FilterState { key, plain },
                None => Field::FilterStateUnknown,
            }
        }
        _ => return Err(unsupported()),
    };
    Ok(Operator { field, max_len })
}

/// Parses a `%START_TIME(...)%` strftime format (the supported subset is listed in the module
/// docs; anything else is an error naming the specifier).
fn strftime(f: &str) -> Result<Vec<TimeItem>, String> {
    let mut items = Vec::new();
    let mut lit = String::new();
    let mut chars = f.chars().peekable();
    let push = |items: &mut Vec<TimeItem>, lit: &mut String, item: TimeItem| {
        if !lit.is_empty() {
            items.push(TimeItem::Literal(std::mem::take(lit)));
        }
        items.push(item);
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err("trailing '%' in time format".to_string());
        };
        match spec {
            '%' => lit.push('%'),
            'Y' => push(&mut items, &mut lit, TimeItem::Year),
            'm' => push(&mut items, &mut lit, TimeItem::Month),
            'd' => push(&mut items, &mut lit, TimeItem::Day),
            'H' => push(&mut items, &mut lit, TimeItem::Hour),
            'M' => push(&mut items, &mut lit, TimeItem::Minute),
            'S' => push(&mut items, &mut lit, TimeItem::Second),
            'z' => push(&mut items, &mut lit, TimeItem::Zone),
            's' => push(&mut items, &mut lit, TimeItem::EpochSeconds),
            'f' => push(&mut items, &mut lit, TimeItem::Fraction(9)),
            'T' => {
                for it in [TimeItem::Hour, TimeItem::Minute, TimeItem::Second] {
                    if it != TimeItem::Hour {
                        lit.push(':');
                    }
                    push(&mut items, &mut lit, it);
                }
            }
            'F' => {
                for it in [TimeItem::Year, TimeItem::Month, TimeItem::Day] {
                    if it != TimeItem::Year {
                        lit.push('-');
                    }
                    push(&mut items, &mut lit, it);
                }
            }
            d @ '1'..='9' if chars.peek() == Some(&'f') => {
                chars.next();
                push(&mut items, &mut lit, TimeItem::Fraction(d as u8 - b'0'));
            }
            'E' => {
                let d = chars.next();
                let s = chars.next();
                match (d, s) {
                    (Some(d @ '1'..='9'), Some('S')) => push(
                        &mut items,
                        &mut lit,
                        TimeItem::SecondsWithFraction(d as u8 - b'0'),
                    ),
                    _ => return Err("unsupported time specifier '%E…' (only %E1S..%E9S)".into()),
                }
            }
            other => return Err(format!("unsupported time specifier '%{other}'")),
        }
    }
    if !lit.is_empty() {
        items.push(TimeItem::Literal(lit));
    }
    Ok(items)
}

/// Civil date (year, month 1..=12, day 1..=31) of a count of days since 1970-01-01
/// (proleptic Gregorian calendar, era-based arithmetic).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// UTC breakdown of epoch milliseconds.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u64,
    epoch_seconds: u64,
}

fn utc(ms: u64) -> Utc {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    // days <= u64::MAX / 86_400_000 fits i64.
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX / 2));
    Utc {
        year,
        month,
        day,
        hour: sod / 3600,
        minute: sod / 60 % 60,
        second: sod % 60,
        millis: ms % 1000,
        epoch_seconds: secs,
    }
}

/// `N` fractional digits from milliseconds (digits beyond 3 are `0`).
fn fraction(millis: u64, n: u8) -> String {
    let mut s = format!("{millis:03}000000");
    s.truncate(usize::from(n));
    s
}

/// `%START_TIME%` without a format: `%Y-%m-%dT%H:%M:%E3SZ`.
fn default_time(ms: u64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

fn render_time(items: &[TimeItem], ms: u64) -> String {
    let t = utc(ms);
    let mut s = String::new();
    for it in items {
        match it {
            TimeItem::Literal(l) => s.push_str(l),
            TimeItem::Year => s.push_str(&format!("{:04}", t.year)),
            TimeItem::Month => s.push_str(&format!("{:02}", t.month)),
            TimeItem::Day => s.push_str(&format!("{:02}", t.day)),
            TimeItem::Hour => s.push_str(&format!("{:02}", t.hour)),
            TimeItem::Minute => s.push_str(&format!("{:02}", t.minute)),
            TimeItem::Second => s.push_str(&format!("{:02}", t.second)),
            TimeItem::Zone => s.push_str("+0000"),
            TimeItem::EpochSeconds => s.push_str(&t.epoch_seconds.to_string()),
            TimeItem::Fraction(n) => s.push_str(&fraction(t.millis, *n)),
            TimeItem::SecondsWithFraction(n) => {
                s.push_str(&format!("{:02}.{}", t.second, fraction(t.millis, *n)))
            }
        }
    }
    s
}

#[cfg(test)]
mod tests;
