//! Config of the HTTP filter `reverse_tunnel_route`: the request path that answers a request
//! itself over a tunnel's HTTP/2 session (no router, cluster or internal listener; see
//! docs/architecture.md). The module's own config: empty bytes (defaults) or a JSON object from a
//! `google.protobuf.Struct`, e.g. `{"target_header": "x-remote-node-id"}`.

use std::time::Duration;

use super::egress::parse_claim_timeout;
use super::{looks_like_json, ConfigError};

/// Default request header naming the target: a node id, or a cluster id resolved to a node.
pub const DEFAULT_TARGET_HEADER: &str = "x-remote-node-id";

/// Validated `reverse_tunnel_route` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Request header (lower case) holding the node id or cluster id to reach.
    pub target_header: String,
    /// Request header (lower case) holding the tenant id; when set, the tracker key is
    /// `<tenant>:<target>` (for `enable_tenant_isolation`). None: the target alone.
    pub tenant_header: Option<String>,
    /// How long a request may wait for a tunnel of its node (0..=60 s); 0: 503 at once.
    pub claim_timeout: Duration,
}

impl Default for RouteConfig {
    fn default() -> RouteConfig {
        RouteConfig { target_header: DEFAULT_TARGET_HEADER.into(), tenant_header: None, claim_timeout: Duration::ZERO }
    }
}

const KNOWN_KEYS: [&str; 3] = ["target_header", "tenant_header", "claim_timeout"];

impl RouteConfig {
    /// Decodes the filter config: empty (defaults) or a JSON object with the optional keys
    /// `target_header` and `tenant_header` (non-empty header names, folded to lower case) and
    /// `claim_timeout` (as for the egress filter: `"2s"`, `"250ms"`, 0..=60 s). Errors name the
    /// field: `target_header: must not be empty`, `<key>: unknown field '<key>'`.
    pub fn decode(bytes: &[u8]) -> Result<RouteConfig, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(RouteConfig::default());
        }
        if !looks_like_json(bytes) {
            return Err(ConfigError::new("config", "expected a JSON object (a google.protobuf.Struct filter_config)"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?;
        let serde_json::Value::Object(obj) = &value else {
            return Err(ConfigError::new("config", "expected a JSON object"));
        };
        if let Some(key) = obj.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::new(key.clone(), format!("unknown field '{key}'")));
        }
        let header = |key: &str| -> Result<Option<String>, ConfigError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Err(ConfigError::new(key, "must not be empty")),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_ascii_lowercase())),
                Some(other) => Err(ConfigError::new(key, format!("expected a string, got {other}"))),
            }
        };
        let claim_timeout = match obj.get("claim_timeout") {
            None | Some(serde_json::Value::Null) => Duration::ZERO,
            Some(v) => parse_claim_timeout(v)?,
        };
        Ok(RouteConfig {
            target_header: header("target_header")?.unwrap_or_else(|| DEFAULT_TARGET_HEADER.into()),
            tenant_header: header("tenant_header")?,
            claim_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_fields() {
        assert_eq!(RouteConfig::decode(b"").unwrap(), RouteConfig::default());
        let c = RouteConfig::decode(br#"{"target_header": "X-Node", "tenant_header": "x-tenant", "claim_timeout": "2s"}"#).unwrap();
        assert_eq!(c.target_header, "x-node");
        assert_eq!(c.tenant_header.as_deref(), Some("x-tenant"));
        assert_eq!(c.claim_timeout, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_field() {
        let e = RouteConfig::decode(br#"{"target_header": " "}"#).unwrap_err().to_string();
        assert!(e.starts_with("target_header"), "{e}");
        let e = RouteConfig::decode(br#"{"targte_header": "x"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field 'targte_header'"), "{e}");
        let e = RouteConfig::decode(br#"{"claim_timeout": "90s"}"#).unwrap_err().to_string();
        assert!(e.starts_with("claim_timeout"), "{e}");
        assert!(RouteConfig::decode(b"[1]").is_err());
    }
}
