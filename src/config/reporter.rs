//! Config of our HTTP reporter: the bootstrap field `reporter_config` (4, a
//! `TypedExtensionConfig`, docs/protocol.md#reporter) with name [`HTTP_REPORTER_NAME`] and a
//! `google.protobuf.Struct` `typed_config`. Schema and defaults: `docs/reporter.md`.
//!
//! Stock Envoy 1.40.0 has no reporter factory (docs/protocol.md#reporter), so the name is
//! ours; Envoy itself only parses the message and hands it to the module.

use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::struct_::Struct;
use protobuf::Message;

use super::{struct_to_json, ConfigError};
use crate::core::reporter::ReporterSettings;
use crate::proto::extension::TypedExtensionConfig;

/// Extension name of our reporter (the built-in's factory category
/// `envoy.extensions.reverse_tunnel.reporting_service`, docs/protocol.md#reporter, plus `.http`).
pub const HTTP_REPORTER_NAME: &str = "envoy.extensions.reverse_tunnel.reporting_service.http";

/// Type URL of the only accepted `typed_config`.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// Default `path` of the POST requests.
pub const DEFAULT_PATH: &str = "/reverse_tunnels/events";

/// Default `responder` name put in every payload.
pub const DEFAULT_RESPONDER: &str = "reverse_tunnel";

/// The fields a `typed_config` may have.
const FIELDS: [&str; 11] = [
    "cluster",
    "path",
    "host",
    "responder",
    "send_interval",
    "max_batch",
    "max_queue",
    "timeout",
    "initial_backoff",
    "max_backoff",
    "headers",
];

/// Validated config of the HTTP reporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReporterConfig {
    /// Envoy cluster the payloads are POSTed to (required; must exist in Envoy's config, else
    /// every send fails with ClusterNotFound and is retried).
    pub cluster: String,
    /// Request path (default [`DEFAULT_PATH`]); starts with `/`.
    pub path: String,
    /// `host` header (default: the cluster name).
    pub host: String,
    /// Name of this responder in every payload (default [`DEFAULT_RESPONDER`]).
    pub responder: String,
    /// Extra request headers (e.g. authorization), lower-case names.
    pub headers: Vec<(String, String)>,
    /// Timing, batching and memory bounds.
    pub settings: ReporterSettings,
}

impl HttpReporterConfig {
    /// Validates a `reporter_config`. Errors (paths under `reporter_config`):
    /// - `reporter_config: unknown reporter '<name>' (known: envoy.extensions.reverse_tunnel.reporting_service.http)`;
    /// - `reporter_config.typed_config: ...` when missing or not a `google.protobuf.Struct`;
    /// - `reporter_config.typed_config.<field>: ...` for a bad or unknown field.
    pub fn from_proto(r: &TypedExtensionConfig) -> Result<HttpReporterConfig, ConfigError> {
        let name = if r.name.is_empty() { r.typed_config.as_ref().map_or("", |a| a.type_url.as_str()) } else { r.name.as_str() };
        if name != HTTP_REPORTER_NAME {
            return Err(ConfigError::new(
                "reporter_config",
                format!("unknown reporter '{name}' (known: {HTTP_REPORTER_NAME})"),
            ));
        }
        let Some(any) = r.typed_config.as_ref() else {
            return Err(ConfigError::new(
                "reporter_config.typed_config",
                format!("missing: {HTTP_REPORTER_NAME} needs a google.protobuf.Struct with at least 'cluster'"),
            ));
        };
        HttpReporterConfig::from_any(any)
    }

    fn from_any(any: &Any) -> Result<HttpReporterConfig, ConfigError> {
        const TC: &str = "reporter_config.typed_config";
        if any.type_url != STRUCT_TYPE_URL {
            return Err(ConfigError::new(TC, format!("unsupported type '{}' (expected {STRUCT_TYPE_URL})", any.type_url)));
        }
        let s = Struct::parse_from_bytes(&any.value).map_err(|e| ConfigError::new(TC, format!("cannot decode Struct: {e}")))?;
        HttpReporterConfig::from_json(&struct_to_json(&s))
    }

    /// Validates the fields given as a JSON object (the Struct's content).
    pub fn from_json(obj: &serde_json::Map<String, serde_json::Value>) -> Result<HttpReporterConfig, ConfigError> {
        let p = |f: &str| format!("reporter_config.typed_config.{f}");
        for k in obj.keys() {
            if !FIELDS.contains(&k.as_str()) {
                return Err(ConfigError::new(p(k), format!("unknown field '{k}' (known: {})", FIELDS.join(", "))));
            }
        }
        let string = |f: &str| -> Result<Option<String>, ConfigError> {
            match obj.get(f) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ConfigError::new(p(f), format!("expected a string, got {other}"))),
            }
        };
        let cluster = string("cluster")?.unwrap_or_default();
        if cluster.is_empty() {
            return Err(ConfigError::new(p("cluster"), "required: the Envoy cluster of the control plane"));
        }
        let path = string("path")?.unwrap_or_else(|| DEFAULT_PATH.to_string());
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new(p("path"), format!("must start with '/' and have no spaces or control characters, got '{path}'")));
        }
        let host = string("host")?.unwrap_or_else(|| cluster.clone());
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new(p("host"), format!("must be non-empty without spaces or control characters, got '{host}'")));
        }
        let responder = string("responder")?.unwrap_or_else(|| DEFAULT_RESPONDER.to_string());
        let mut headers = Vec::new();
        match obj.get("headers") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(h)) => {
                for (k, v) in h {
                    let hp = format!("{}.{k}", p("headers"));
                    let serde_json::Value::String(v) = v else {
                        return Err(ConfigError::new(hp, "expected a string value"));
                    };
                    let lower = k.to_ascii_lowercase();
                    let token = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !token || ["host", "content-type", "content-length"].contains(&lower.as_str()) {
                        return Err(ConfigError::new(hp, "not an allowed header name (token characters; not host, content-type, content-length)"));
                    }
                    if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(ConfigError::new(hp, "value must not contain CR, LF or NUL"));
                    }
                    headers.push((lower, v.clone()));
                }
            }
            Some(other) => return Err(ConfigError::new(p("headers"), format!("expected an object of strings, got {other}"))),
        }
        let d = ReporterSettings::default();
        let dur = |f: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match obj.get(f) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => {
                    let ms = parse_duration_ms(v).map_err(|e| ConfigError::new(p(f), e))?;
                    if ms < min || ms > max {
                        return Err(ConfigError::new(p(f), format!("must be between {min}ms and {max}ms, got {ms}ms")));
                    }
                    Ok(ms)
                }
            }
        };
        let count = |f: &str, default: usize, max: usize| -> Result<usize, ConfigError> {
            match obj.get(f) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => {
                    // Integral floats (`10.0`) are accepted: that is how a Struct carries numbers.
                    let n = v
                        .as_u64()
                        .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 1e15).map(|x| x as u64))
                        .ok_or_else(|| ConfigError::new(p(f), format!("expected a positive integer, got {v}")))?;
                    if n == 0 || n > max as u64 {
                        return Err(ConfigError::new(p(f), format!("must be between 1 and {max}, got {n}")));
                    }
                    Ok(n as usize)
                }
            }
        };
        let settings = ReporterSettings {
            send_interval_ms: dur("send_interval", d.send_interval_ms, 0, 3_600_000)?,
            max_batch: count("max_batch", d.max_batch, 1_000_000)?,
            max_queue: count("max_queue", d.max_queue, 10_000_000)?,
            timeout_ms: dur("timeout", d.timeout_ms, 1, 300_000)?,
            initial_backoff_ms: dur("initial_backoff", d.initial_backoff_ms, 1, 3_600_000)?,
            max_backoff_ms: dur("max_backoff", d.max_backoff_ms, 1, 3_600_000)?,
        };
        if settings.max_backoff_ms < settings.initial_backoff_ms {
            return Err(ConfigError::new(
                p("max_backoff"),
                format!("must be >= initial_backoff ({}ms), got {}ms", settings.initial_backoff_ms, settings.max_backoff_ms),
            ));
        }
        Ok(HttpReporterConfig { cluster, path, host, responder, headers, settings })
    }
}

/// Parses a duration: a string `"<decimal>s"` or `"<decimal>ms"` (e.g. `"1s"`, `"0.5s"`,
/// `"250ms"`), or a number of seconds. Returns whole milliseconds (rounded).
pub fn parse_duration_ms(v: &serde_json::Value) -> Result<u64, String> {
    let bad = |s: &str| format!("expected a duration like \"1s\" or \"500ms\", got \"{s}\"");
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| format!("invalid number {n}"))?,
        serde_json::Value::String(s) => {
            let t = s.trim();
            let (num, scale) = if let Some(ms) = t.strip_suffix("ms") {
                (ms, 1e-3)
            } else if let Some(sec) = t.strip_suffix('s') {
                (sec, 1.0)
            } else {
                return Err(bad(t));
            };
            let plain = !num.is_empty()
                && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && num.bytes().filter(|&b| b == b'.').count() <= 1
                && num != ".";
            if !plain {
                return Err(bad(t));
            }
            num.parse::<f64>().map_err(|_| bad(t))? * scale
        }
        other => return Err(format!("expected a duration string or a number of seconds, got {other}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("must not be negative, got {secs}s"));
    }
    if secs > 1e9 {
        return Err(format!("too large: {secs}s"));
    }
    Ok((secs * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::MessageField;

    fn cfg(json: &str) -> Result<HttpReporterConfig, String> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        HttpReporterConfig::from_json(v.as_object().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn reporter_config_defaults_and_fields() {
        let c = cfg(r#"{"cluster": "cp"}"#).unwrap();
        assert_eq!((c.path.as_str(), c.host.as_str(), c.responder.as_str()), (DEFAULT_PATH, "cp", DEFAULT_RESPONDER));
        assert_eq!(c.settings, ReporterSettings::default());
        let c = cfg(r#"{"cluster": "cp", "path": "/x", "host": "h", "send_interval": "200ms", "max_batch": 10.0,
                      "max_queue": 20, "timeout": "2s", "initial_backoff": "0.1s", "max_backoff": 3,
                      "headers": {"Authorization": "Bearer x"}}"#)
        .unwrap();
        assert_eq!(c.settings.send_interval_ms, 200);
        assert_eq!((c.settings.max_batch, c.settings.max_queue), (10, 20));
        assert_eq!((c.settings.timeout_ms, c.settings.initial_backoff_ms, c.settings.max_backoff_ms), (2000, 100, 3000));
        assert_eq!(c.headers, vec![("authorization".to_string(), "Bearer x".to_string())]);
    }

    #[test]
    fn reporter_config_errors_name_the_field() {
        for (json, field) in [
            (r#"{}"#, "cluster"),
            (r#"{"cluster": 3}"#, "cluster"),
            (r#"{"cluster": "c", "path": "x"}"#, "path"),
            (r#"{"cluster": "c", "send_interval": "soon"}"#, "send_interval"),
            (r#"{"cluster": "c", "max_batch": 0}"#, "max_batch"),
            (r#"{"cluster": "c", "max_queue": -1}"#, "max_queue"),
            (r#"{"cluster": "c", "timeout": "0s"}"#, "timeout"),
            (r#"{"cluster": "c", "initial_backoff": "2s", "max_backoff": "1s"}"#, "max_backoff"),
            (r#"{"cluster": "c", "headers": {"host": "x"}}"#, "headers.host"),
            (r#"{"cluster": "c", "colour": "red"}"#, "colour"),
        ] {
            let e = cfg(json).unwrap_err();
            assert!(e.starts_with(&format!("reporter_config.typed_config.{field}: ")), "{json}: {e}");
        }
    }

    #[test]
    fn reporter_config_unknown_name_and_wrong_type() {
        let mut r = TypedExtensionConfig::new();
        r.name = "my.reporter".into();
        let e = HttpReporterConfig::from_proto(&r).unwrap_err().to_string();
        assert!(e.starts_with("reporter_config: unknown reporter 'my.reporter'"), "{e}");
        r.name = HTTP_REPORTER_NAME.into();
        assert!(HttpReporterConfig::from_proto(&r).unwrap_err().to_string().starts_with("reporter_config.typed_config: missing"));
        let mut any = Any::new();
        any.type_url = "type.googleapis.com/x.Y".into();
        r.typed_config = MessageField::some(any);
        assert!(HttpReporterConfig::from_proto(&r).unwrap_err().to_string().contains("unsupported type 'type.googleapis.com/x.Y'"));
    }

    #[test]
    fn reporter_config_durations() {
        let j = |s: &str| serde_json::Value::String(s.into());
        assert_eq!(parse_duration_ms(&j("1s")), Ok(1000));
        assert_eq!(parse_duration_ms(&j("250ms")), Ok(250));
        assert_eq!(parse_duration_ms(&j("0.5s")), Ok(500));
        assert_eq!(parse_duration_ms(&serde_json::json!(2)), Ok(2000));
        for bad in ["", "s", ".s", "1", "-1s", "1e3s", "infs", "1m"] {
            assert!(parse_duration_ms(&j(bad)).is_err(), "{bad}");
        }
    }
}
