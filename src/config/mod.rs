//! Typed configuration of the three extension points, decoded from protobuf bytes (the
//! built-in's own message types, `proto/`) or from JSON (`google.protobuf.Struct`).
//!
//! How the bytes arrive (docs/envoy-abi.md#config-bytes): Envoy hands each extension its `google.protobuf.Any`
//! config as bytes. A typed message (for example
//! `envoy.extensions.bootstrap.reverse_tunnel.upstream_socket_interface.v3.UpstreamReverseConnectionSocketInterface`)
//! arrives as its serialized protobuf; a `google.protobuf.Struct` arrives as JSON text; an unset
//! config arrives as empty bytes. `decode_message` tells them apart (JSON when the first
//! non-whitespace byte is `{`) and applies the proto3 JSON rules of `protobuf-json-mapping` to JSON,
//! with stricter error reporting: every error names the field path.
pub mod bootstrap;
pub mod egress;
pub mod filter;
pub mod jwt;
pub mod reporter;
pub mod route;

use std::fmt;
use std::time::Duration;

use protobuf::reflect::{
    FieldDescriptor, MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType,
};
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::struct_::{value::Kind, Struct, Value};
use protobuf::{MessageDyn, MessageFull};

/// A configuration error. Its [`Display`](fmt::Display) form is `<field path>: <message>`, for
/// example `ping_failure_threshold: must be >= 1, got 0` or
/// `access_log[1].typed_config: unsupported access logger type '...'`, so that Envoy's log of a
/// refused config names the offending field. Paths use the proto field names (snake_case), `.`
/// between nested fields and `[i]` for list elements; `config` stands for the whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    /// Builds an error for the field at `path` (see the type's docs for the path syntax).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The field path, for example `access_log[0].typed_config.path`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The message without the path, for example `must be >= 1, got 0`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Path of a sub-field: `parent.child`, or `child` at the root (`parent` empty).
pub(crate) fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// True when `bytes` look like JSON text: the first non-whitespace byte is `{`.
pub(crate) fn looks_like_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Decodes the config bytes Envoy passes to an extension into the generated message `M`.
///
/// - empty bytes: `M::default()` (no config given);
/// - JSON (first non-whitespace byte `{`): parsed as proto3 JSON (field names in snake_case or
///   lowerCamelCase, durations as `"2s"`, wrappers as bare values). Unknown fields are an error
///   naming them; integral floats such as `3.0` are accepted for integer fields; a nested
///   `google.protobuf.Any` is resolved by its `@type` when the type is declared in `proto/`
///   (unknown types keep only their type URL, with empty `value`).
///   Bytes that look like JSON but are not valid JSON are tried as protobuf before failing (a
///   serialized message can start with `\n{`: field 1, length 123);
/// - anything else: serialized protobuf; unknown fields are ignored.
///
/// Errors: [`ConfigError`] with the field path, or path `config` for undecodable bytes.
pub(crate) fn decode_message<M: MessageFull>(bytes: &[u8]) -> Result<M, ConfigError> {
    if bytes.is_empty() {
        return Ok(M::new());
    }
    if looks_like_json(bytes) {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Object(obj)) => {
                let msg = json_to_message(&M::descriptor(), &obj, "")?;
                return msg.downcast_box::<M>().map(|boxed| *boxed).map_err(|_| {
                    ConfigError::new(
                        "config",
                        format!(
                            "internal error: JSON decoded to a type other than {}",
                            M::NAME
                        ),
                    )
                });
            }
            Ok(_) => return Err(ConfigError::new("config", "expected a JSON object")),
            Err(json_err) => {
                return M::parse_from_bytes(bytes)
                    .map_err(|_| ConfigError::new("config", format!("invalid JSON: {json_err}")));
            }
        }
    }
    M::parse_from_bytes(bytes)
        .map_err(|e| ConfigError::new("config", format!("not a valid serialized {}: {e}", M::NAME)))
}

/// Full names of the well-known types whose JSON form `protobuf-json-mapping` handles itself.
fn is_well_known(md: &MessageDescriptor) -> bool {
    md.full_name().starts_with("google.protobuf.")
}

/// Builds a message of type `desc` from a JSON object, recursing into message fields so that
/// errors carry the full path (`path` is the object's own path, empty at the root).
fn json_to_message(
    desc: &MessageDescriptor,
    obj: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<Box<dyn MessageDyn>, ConfigError> {
    let mut msg = desc.new_instance();
    // A message declared without fields is a presence-only placeholder (for example
    // AccessLogFilter): its content is not ours to check.
    if desc.fields().next().is_none() {
        return Ok(msg);
    }
    let mut seen_fields: Vec<i32> = Vec::new();
    let mut seen_oneofs: Vec<(String, String)> = Vec::new();
    for (key, value) in obj {
        let Some(field) = desc.field_by_name_or_json_name(key) else {
            return Err(ConfigError::new(
                join_path(path, key),
                format!("unknown field '{key}'"),
            ));
        };
        let fpath = join_path(path, field.name());
        if seen_fields.contains(&field.number()) {
            return Err(ConfigError::new(
                fpath,
                "field given twice (snake_case and lowerCamelCase)",
            ));
        }
        seen_fields.push(field.number());
        if value.is_null() {
            // proto3 JSON: null means "default value".
            continue;
        }
        if let Some(oneof) = field.containing_oneof() {
            if let Some((_, other)) = seen_oneofs.iter().find(|(o, _)| o == oneof.name()) {
                return Err(ConfigError::new(
                    fpath,
                    format!(
                        "conflicts with '{other}': only one of oneof '{}' may be set",
                        oneof.name()
                    ),
                ));
            }
            seen_oneofs.push((oneof.name().to_string(), field.name().to_string()));
        }
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(RuntimeType::Message(md))
                if !is_well_known(&md) || is_any(&md) =>
            {
                let sub = json_to_sub_message(&md, value, &fpath)?;
                field.set_singular_field(&mut *msg, ReflectValueBox::Message(sub));
            }
            RuntimeFieldType::Repeated(RuntimeType::Message(md))
                if !is_well_known(&md) || is_any(&md) =>
            {
                let serde_json::Value::Array(items) = value else {
                    return Err(ConfigError::new(fpath, "expected a JSON array"));
                };
                let mut subs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    subs.push(json_to_sub_message(&md, item, &format!("{fpath}[{i}]"))?);
                }
                let mut repeated = field.mut_repeated(&mut *msg);
                for sub in subs {
                    repeated.push(ReflectValueBox::Message(sub));
                }
            }
            _ => merge_leaf_field(&mut *msg, &field, value, &fpath)?,
        }
    }
    Ok(msg)
}

fn is_any(md: &MessageDescriptor) -> bool {
    md.full_name() == "google.protobuf.Any"
}

/// Builds one (non-well-known, or `Any`) message-typed value from JSON.
fn json_to_sub_message(
    md: &MessageDescriptor,
    value: &serde_json::Value,
    path: &str,
) -> Result<Box<dyn MessageDyn>, ConfigError> {
    let serde_json::Value::Object(obj) = value else {
        return Err(ConfigError::new(path, "expected a JSON object"));
    };
    if is_any(md) {
        return Ok(Box::new(json_to_any(obj, path)?));
    }
    json_to_message(md, obj, path)
}

/// Builds a `google.protobuf.Any` from its proto3 JSON form `{"@type": URL, ...fields}`. When the
/// type (the part of the URL after the last `/`) is declared in `proto/`, the fields are decoded
/// into it and serialized into `value`; otherwise `value` stays empty and only the type URL is
/// kept (callers refuse types they do not know).
fn json_to_any(
    obj: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<Any, ConfigError> {
    let type_url = match obj.get("@type") {
        Some(serde_json::Value::String(url)) if !url.is_empty() => url.clone(),
        _ => {
            return Err(ConfigError::new(
                path,
                "a google.protobuf.Any needs a string '@type'",
            ))
        }
    };
    let full_name = type_url.rsplit('/').next().unwrap_or_default();
    let mut any = Any::new();
    any.type_url = type_url.clone();
    if full_name == "google.protobuf.Struct" {
        // proto3 JSON of an Any holding a well-known type: the content is under "value".
        let content = match obj.get("value") {
            None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
            Some(v @ serde_json::Value::Object(_)) => v.clone(),
            Some(_) => return Err(ConfigError::new(join_path(path, "value"), "expected a JSON object")),
        };
        let s: Struct = protobuf_json_mapping::parse_from_str(&content.to_string())
            .map_err(|e| ConfigError::new(join_path(path, "value"), format!("invalid Struct: {e}")))?;
        any.value = protobuf::Message::write_to_bytes(&s)
            .map_err(|e| ConfigError::new(path, format!("cannot serialize Struct: {e}")))?;
    } else if let Some(md) = crate::proto::message_by_full_name(full_name) {
        let mut fields = obj.clone();
        fields.remove("@type");
        let msg = json_to_message(&md, &fields, path)?;
        any.value = msg
            .write_to_bytes_dyn()
            .map_err(|e| ConfigError::new(path, format!("cannot serialize {full_name}: {e}")))?;
    }
    Ok(any)
}

/// Merges one scalar, enum, well-known-type or map field into `msg` with `protobuf-json-mapping`,
/// after normalising integral floats for integer-typed values and range-checking durations.
fn merge_leaf_field(
    msg: &mut dyn MessageDyn,
    field: &FieldDescriptor,
    value: &serde_json::Value,
    path: &str,
) -> Result<(), ConfigError> {
    let value = match field.runtime_field_type() {
        RuntimeFieldType::Singular(rt) => normalize_leaf(&rt, value, path)?,
        RuntimeFieldType::Repeated(rt) => match value {
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| normalize_leaf(&rt, item, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            other => other.clone(),
        },
        RuntimeFieldType::Map(..) => value.clone(),
    };
    let mut wrapper = serde_json::Map::new();
    wrapper.insert(field.name().to_string(), value);
    let text = serde_json::Value::Object(wrapper).to_string();
    let options = protobuf_json_mapping::ParseOptions {
        ignore_unknown_fields: false,
        ..Default::default()
    };
    // Safety net: the mapper must never take Envoy down, whatever the input.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        protobuf_json_mapping::merge_from_str_with_options(msg, &text, &options)
    }));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ConfigError::new(
            path,
            format!("invalid value: {}", strip_location(&e.to_string())),
        )),
        Err(_) => Err(ConfigError::new(path, "invalid value")),
    }
}

/// Removes the ` at LINE:COL` suffix of a `protobuf-json-mapping` error: the location refers to
/// the one-field JSON we built, not to the user's config.
fn strip_location(message: &str) -> String {
    if let Some((head, tail)) = message.rsplit_once(" at ") {
        if tail
            .split(':')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        {
            return head.to_string();
        }
    }
    message.to_string()
}

/// Largest magnitude (2^53) below which every integer is exact in an `f64`.
const MAX_EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;

/// Makes one JSON value acceptable to `protobuf-json-mapping` for runtime type `rt`:
/// an integral float (`3.0`, which is how Envoy renders Struct numbers) becomes an integer for
/// integer, enum and integer-wrapper types; a duration string with an absurd seconds part is
/// refused here (the mapper would overflow on it).
fn normalize_leaf(
    rt: &RuntimeType,
    value: &serde_json::Value,
    path: &str,
) -> Result<serde_json::Value, ConfigError> {
    let integral = match rt {
        RuntimeType::I32
        | RuntimeType::I64
        | RuntimeType::U32
        | RuntimeType::U64
        | RuntimeType::Enum(_) => true,
        RuntimeType::Message(md) => matches!(
            md.full_name(),
            "google.protobuf.Int32Value"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.UInt64Value"
        ),
        _ => false,
    };
    if integral {
        if let serde_json::Value::Number(n) = value {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < MAX_EXACT_F64_INT {
                    // Exact by the bound above.
                    return Ok(serde_json::Value::from(f as i64));
                }
                return Err(ConfigError::new(
                    path,
                    format!("expected an integer, got {n}"),
                ));
            }
        }
    }
    if let (RuntimeType::Message(md), serde_json::Value::String(s)) = (rt, value) {
        if md.full_name() == "google.protobuf.Duration" {
            let digits = s
                .trim_start_matches('-')
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            // 315,576,000,000 s (10,000 years) is the proto range of Duration: 12 digits.
            if digits > 12 {
                return Err(ConfigError::new(
                    path,
                    format!("duration '{s}' is out of range"),
                ));
            }
        }
    }
    Ok(value.clone())
}

/// Converts a `google.protobuf.Duration` (`seconds` + `nanos`) to a [`Duration`].
/// Errors (at `path`): negative values, or `nanos` outside `0..=999_999_999`.
pub(crate) fn duration_from_proto(
    d: &protobuf::well_known_types::duration::Duration,
    path: &str,
) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigError::new(
            path,
            format!("must not be negative, got {}", format_proto_duration(d)),
        ));
    }
    if d.nanos > 999_999_999 {
        return Err(ConfigError::new(
            path,
            format!("invalid duration: nanos {} out of range", d.nanos),
        ));
    }
    Ok(Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    ))
}

/// Renders a proto Duration the way proto3 JSON writes it (`1.500s`), for error messages.
fn format_proto_duration(d: &protobuf::well_known_types::duration::Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let sign = if d.seconds < 0 || d.nanos < 0 {
            "-"
        } else {
            ""
        };
        format!(
            "{sign}{}.{:09}s",
            d.seconds.unsigned_abs(),
            d.nanos.unsigned_abs()
        )
    }
}

/// Converts a `google.protobuf.Struct` to a JSON object. Keys come out sorted (a protobuf
/// `Struct` is a map: its order is not kept on decode). Numbers that are integral and exact in an
/// `f64` become JSON integers (`3`, not `3.0`); non-finite numbers (not representable in JSON)
/// become `null`.
pub(crate) fn struct_to_json(s: &Struct) -> serde_json::Map<String, serde_json::Value> {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    let mut out = serde_json::Map::new();
    for key in keys {
        if let Some(v) = s.fields.get(key) {
            out.insert(key.clone(), value_to_json(v));
        }
    }
    out
}

/// Converts one `google.protobuf.Value` to JSON (see [`struct_to_json`]).
fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < MAX_EXACT_F64_INT {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        // `Kind` is non-exhaustive; nothing else exists in proto3.
        Some(_) => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_display_starts_with_path() {
        let e = ConfigError::new("access_log[1].typed_config", "unsupported");
        assert_eq!(e.to_string(), "access_log[1].typed_config: unsupported");
        assert_eq!(e.path(), "access_log[1].typed_config");
        assert_eq!(e.message(), "unsupported");
    }

    #[test]
    fn config_json_detection() {
        assert!(looks_like_json(b"  \n{\"a\":1}"));
        assert!(!looks_like_json(b""));
        assert!(!looks_like_json(b"\x0a\x03abc"));
        assert!(!looks_like_json(b"  [1]"));
    }

    #[test]
    fn config_strip_location_only_strips_line_col() {
        assert_eq!(
            strip_location("Incorrect duration at 1:17"),
            "Incorrect duration"
        );
        assert_eq!(strip_location("look at this"), "look at this");
    }

    #[test]
    fn config_struct_to_json_sorts_keys_and_integralises_numbers() {
        let s: Struct = {
            let mut m = Struct::new();
            let mut b = Value::new();
            b.kind = Some(Kind::NumberValue(3.0));
            let mut a = Value::new();
            a.kind = Some(Kind::StringValue("%START_TIME%".into()));
            let mut c = Value::new();
            c.kind = Some(Kind::NumberValue(0.5));
            m.fields.insert("b".into(), b);
            m.fields.insert("a".into(), a);
            m.fields.insert("c".into(), c);
            m
        };
        let json = serde_json::Value::Object(struct_to_json(&s));
        assert_eq!(json.to_string(), r#"{"a":"%START_TIME%","b":3,"c":0.5}"#);
    }

    proptest::proptest! {
        /// No input, binary or JSON-looking, may panic any decoder.
        #[test]
        fn config_decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = bootstrap::BootstrapConfig::decode(&bytes);
            let _ = filter::FilterConfig::decode(&bytes);
            let _ = egress::EgressConfig::decode(&bytes);
        }

        /// JSON objects built from field names of the real messages and odd values: errors only.
        #[test]
        fn config_json_decoders_never_panic(
            key in proptest::sample::select(vec![
                "stat_prefix", "ping_failure_threshold", "access_log", "reporter_config",
                "enable_tenant_isolation", "ping_interval", "handshake_timeout", "request_method",
                "validation", "jwt_validator", "claim_timeout", "target_filter_state_key",
            ]),
            value in proptest::sample::select(vec![
                "null", "0", "-1", "1.5", "4294967296", "1e300", "\"\"", "\"-0.5s\"", "\"1s\"",
                "\"99999999999s\"", "[]", "[{}]", "[null]", "{}", "{\"@type\": 1}", "true",
                "[{\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", \"log_format\": {\"json_format\": {\"a\": [1, {\"b\": null}]}}}}]",
            ]),
        ) {
            let json = format!("{{\"{key}\": {value}}}");
            let _ = bootstrap::BootstrapConfig::decode(json.as_bytes());
            let _ = filter::FilterConfig::decode(json.as_bytes());
            let _ = egress::EgressConfig::decode(json.as_bytes());
        }
    }

    #[test]
    fn config_duration_from_proto_rejects_negative_and_bad_nanos() {
        let mut d = protobuf::well_known_types::duration::Duration::new();
        d.seconds = 1;
        d.nanos = 500_000_000;
        assert_eq!(
            duration_from_proto(&d, "x").ok(),
            Some(Duration::from_millis(1500))
        );
        d.seconds = -1;
        let e = duration_from_proto(&d, "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("x: must not be negative"), "{e}");
        d.seconds = 0;
        d.nanos = 1_000_000_000;
        assert!(duration_from_proto(&d, "x").is_err());
    }
}
