//! Config of the egress network filter (`reverse_tunnel_egress`, on the internal listener that the
//! `reverse_connection` cluster dials; docs/architecture.md#extension-points). This is the module's own config, not a
//! built-in message: empty bytes (defaults) or a JSON object from a `google.protobuf.Struct`
//! (docs/envoy-abi.md#config-bytes), for example `{"claim_timeout": "0.5s"}`.

use std::time::Duration;

use serde::Deserialize;

use super::{looks_like_json, ConfigError};

/// Default filter state key holding the target node id: set by `set_filter_state` on the HCM and
/// shared with the upstream connection; it also splits the HTTP/2 pool per node (shared
/// reference `egress-filter-state.yaml`).
pub const DEFAULT_TARGET_FILTER_STATE_KEY: &str = "envoy.network.upstream_server_name";

/// Largest accepted `claim_timeout`.
pub const MAX_CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// Validated egress filter config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    /// How long a request may wait for an idle tunnel of its node to appear (0..=60 s); default 0:
    /// fail at once when the node has no idle tunnel.
    pub claim_timeout: Duration,
    /// Filter state key (read as a string) naming the target node; default
    /// `envoy.network.upstream_server_name`; never empty.
    pub target_filter_state_key: String,
}

impl Default for EgressConfig {
    fn default() -> EgressConfig {
        EgressConfig {
            claim_timeout: Duration::ZERO,
            target_filter_state_key: DEFAULT_TARGET_FILTER_STATE_KEY.to_string(),
        }
    }
}

/// The JSON shape, before validation. Keys in snake_case or lowerCamelCase.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgressConfig {
    #[serde(default, alias = "claimTimeout")]
    claim_timeout: Option<serde_json::Value>,
    #[serde(default, alias = "targetFilterStateKey")]
    target_filter_state_key: Option<serde_json::Value>,
}

/// Accepted keys, for the unknown-field check (which names the field, unlike serde's message).
const KNOWN_KEYS: [&str; 4] = [
    "claim_timeout",
    "claimTimeout",
    "target_filter_state_key",
    "targetFilterStateKey",
];

impl EgressConfig {
    /// Decodes and validates the egress filter's config bytes: empty or all-whitespace (defaults),
    /// or a JSON object with the optional keys
    /// - `claim_timeout`: a string `"<number>s"` or `"<number>ms"` (e.g. `"0.5s"`, `"2s"`,
    ///   `"250ms"`), or a JSON number of seconds; 0..=60 s;
    /// - `target_filter_state_key`: a non-empty string.
    ///
    /// Errors, each starting with the field path: `<key>: unknown field '<key>'`,
    /// `claim_timeout: ...` (bad form, negative, > 60 s), `target_filter_state_key: ...`
    /// (not a string, empty), `config: ...` (not a JSON object).
    pub fn decode(bytes: &[u8]) -> Result<EgressConfig, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(EgressConfig::default());
        }
        if !looks_like_json(bytes) {
            return Err(ConfigError::new(
                "config",
                "expected a JSON object (a google.protobuf.Struct filter_config), e.g. {\"claim_timeout\": \"0.5s\"}",
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?;
        let serde_json::Value::Object(obj) = &value else {
            return Err(ConfigError::new("config", "expected a JSON object"));
        };
        if let Some(key) = obj.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::new(
                key.clone(),
                format!("unknown field '{key}'"),
            ));
        }
        let raw = RawEgressConfig::deserialize(&value)
            .map_err(|e| ConfigError::new("config", e.to_string()))?;

        let claim_timeout = match &raw.claim_timeout {
            None | Some(serde_json::Value::Null) => Duration::ZERO,
            Some(v) => parse_claim_timeout(v)?,
        };
        let target_filter_state_key = match &raw.target_filter_state_key {
            None | Some(serde_json::Value::Null) => DEFAULT_TARGET_FILTER_STATE_KEY.to_string(),
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::String(_)) => {
                return Err(ConfigError::new(
                    "target_filter_state_key",
                    "must not be empty",
                ))
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "target_filter_state_key",
                    format!("expected a string, got {other}"),
                ))
            }
        };
        Ok(EgressConfig {
            claim_timeout,
            target_filter_state_key,
        })
    }
}

/// Parses `claim_timeout` (see [`EgressConfig::decode`]) and checks 0..=60 s.
pub(crate) fn parse_claim_timeout(v: &serde_json::Value) -> Result<Duration, ConfigError> {
    const PATH: &str = "claim_timeout";
    let secs: f64 = match v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| ConfigError::new(PATH, format!("invalid number {n}")))?,
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
                (ms, 1e-3)
            } else if let Some(secs) = s.strip_suffix('s') {
                (secs, 1.0)
            } else {
                return Err(ConfigError::new(
                    PATH,
                    format!("expected a duration like \"0.5s\" or \"250ms\", got \"{s}\""),
                ));
            };
            // Plain decimal only: no sign, exponent, "inf" or "nan".
            let plain = !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && number.bytes().filter(|&b| b == b'.').count() <= 1;
            let parsed = if plain {
                number.parse::<f64>().ok()
            } else {
                None
            };
            match parsed {
                Some(x) => x * scale,
                None => {
                    return Err(ConfigError::new(
                        PATH,
                        format!("expected a duration like \"0.5s\" or \"250ms\", got \"{s}\""),
                    ))
                }
            }
        }
        other => {
            return Err(ConfigError::new(
                PATH,
                format!("expected a duration string or a number of seconds, got {other}"),
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(ConfigError::new(
            PATH,
            format!("must not be negative, got {secs}s"),
        ));
    }
    if secs > MAX_CLAIM_TIMEOUT.as_secs_f64() {
        return Err(ConfigError::new(
            PATH,
            format!("must be <= 60s, got {secs}s"),
        ));
    }
    // In range 0..=60 by the checks above, so the conversion cannot fail; round to whole µs.
    let micros = (secs * 1e6).round();
    Ok(Duration::from_micros(micros as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_ok(bytes: &[u8]) -> EgressConfig {
        match EgressConfig::decode(bytes) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn decode_err(bytes: &[u8]) -> String {
        match EgressConfig::decode(bytes) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn config_egress_defaults() {
        for bytes in [&b""[..], b"  \n", b"{}", b" { } "] {
            let c = decode_ok(bytes);
            assert_eq!(c, EgressConfig::default());
            assert_eq!(c.claim_timeout, Duration::ZERO);
            assert_eq!(
                c.target_filter_state_key,
                "envoy.network.upstream_server_name"
            );
        }
    }

    #[test]
    fn config_egress_claim_timeout_forms() {
        for (json, expected_ms) in [
            (r#"{"claim_timeout": "0.5s"}"#, 500),
            (r#"{"claim_timeout": "2s"}"#, 2000),
            (r#"{"claim_timeout": "250ms"}"#, 250),
            (r#"{"claim_timeout": "60s"}"#, 60_000),
            (r#"{"claim_timeout": "0s"}"#, 0),
            (r#"{"claim_timeout": 1.5}"#, 1500),
            (r#"{"claim_timeout": 3}"#, 3000),
            (r#"{"claim_timeout": 3.0}"#, 3000),
            (r#"{"claimTimeout": "1s"}"#, 1000),
            (r#"{"claim_timeout": null}"#, 0),
        ] {
            assert_eq!(
                decode_ok(json.as_bytes()).claim_timeout,
                Duration::from_millis(expected_ms),
                "{json}"
            );
        }
    }

    #[test]
    fn config_egress_target_key() {
        let c = decode_ok(br#"{"target_filter_state_key": "my.node.key", "claim_timeout": "1s"}"#);
        assert_eq!(c.target_filter_state_key, "my.node.key");
        assert_eq!(c.claim_timeout, Duration::from_secs(1));
        assert_eq!(
            decode_err(br#"{"target_filter_state_key": ""}"#),
            "target_filter_state_key: must not be empty"
        );
        assert!(decode_err(br#"{"target_filter_state_key": 5}"#)
            .starts_with("target_filter_state_key: expected a string"));
    }

    #[test]
    fn config_egress_errors_name_the_field() {
        assert_eq!(decode_err(br#"{"foo": 1}"#), "foo: unknown field 'foo'");
        for json in [
            r#"{"claim_timeout": "61s"}"#,
            r#"{"claim_timeout": 61}"#,
            r#"{"claim_timeout": "60001ms"}"#,
        ] {
            assert!(
                decode_err(json.as_bytes()).starts_with("claim_timeout: must be <= 60s"),
                "{json}"
            );
        }
        for json in [r#"{"claim_timeout": -1}"#, r#"{"claim_timeout": -0.5}"#] {
            assert!(
                decode_err(json.as_bytes()).starts_with("claim_timeout: must not be negative"),
                "{json}"
            );
        }
        for json in [
            r#"{"claim_timeout": "2"}"#,
            r#"{"claim_timeout": "-1s"}"#,
            r#"{"claim_timeout": "1e3s"}"#,
            r#"{"claim_timeout": "infs"}"#,
            r#"{"claim_timeout": "s"}"#,
            r#"{"claim_timeout": "1.2.3s"}"#,
            r#"{"claim_timeout": "2m"}"#,
        ] {
            assert!(
                decode_err(json.as_bytes()).starts_with("claim_timeout: expected a duration"),
                "{json}"
            );
        }
        assert!(decode_err(br#"{"claim_timeout": true}"#)
            .starts_with("claim_timeout: expected a duration"));
        assert!(decode_err(b"\x0a\x02ab").starts_with("config: expected a JSON object"));
        assert!(decode_err(b"{oops").starts_with("config: invalid JSON"));
    }
}
