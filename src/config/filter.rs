//! Config of the handshake network filter: the built-in's message
//! `envoy.extensions.filters.network.reverse_tunnel.v3.ReverseTunnel` (docs/protocol.md#filter-config), given
//! as serialized protobuf or as JSON from a `google.protobuf.Struct` (see [`crate::config`]).

use std::time::Duration;

use protobuf::EnumFull;

use super::jwt::JwtConfig;
use super::{decode_message, duration_from_proto, ConfigError};
use crate::proto::base::RequestMethod;
use crate::proto::reverse_tunnel::ReverseTunnel;

/// Default RPING period for idle tunnels (docs/protocol.md#filter-config: 2 s).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);
/// Smallest accepted `ping_interval`. The built-in truncates to whole seconds, and < 1 s (0 s)
/// kills every tunnel at once (docs/protocol.md#rping-keepalive), so shorter values are refused.
pub const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);
/// Largest accepted `ping_interval` (the proto's range is 1 ms–300 s, docs/protocol.md#filter-config).
pub const MAX_PING_INTERVAL: Duration = Duration::from_secs(300);
/// Default handshake request path (docs/protocol.md#filter-config).
pub const DEFAULT_REQUEST_PATH: &str = "/reverse_connections/request";
/// Default handshake timeout (docs/protocol.md#filter-config: 10 s observed).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default dynamic metadata namespace of the validation result (docs/protocol.md#filter-config).
pub const DEFAULT_DYNAMIC_METADATA_NAMESPACE: &str = "envoy.filters.network.reverse_tunnel";

/// Validated handshake filter config (message `ReverseTunnel`, docs/protocol.md#filter-config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Field 1. RPING period for idle tunnels; default 2 s, accepted range 1 s..=300 s. Kept as
    /// configured (the built-in truncates to whole seconds; this module does not).
    pub ping_interval: Duration,
    /// Field 3. Exact handshake path; default `/reverse_connections/request`; starts with `/`.
    pub request_path: String,
    /// Field 4. Upper-case method name (`GET`, `POST`, ...); `METHOD_UNSPECIFIED` gives `GET`.
    /// Matched case-insensitively (docs/protocol.md#filter-config).
    pub request_method: String,
    /// Field 5. Id validation / dynamic metadata; `None` when unset.
    pub validation: Option<ValidationConfig>,
    /// Field 6. When set, the handshake's `x-envoy-reverse-tunnel-upstream-cluster-name` must
    /// equal it; `None` when empty.
    pub required_cluster_name: Option<String>,
    /// Field 7. Expect `upgrade: reverse-tunnel` and answer `101` instead of `200`.
    pub use_http_upgrade: bool,
    /// Field 8. Keep the tunnel on the accepting worker (no rebalancing, docs/protocol.md#workers-and-rebalancing).
    pub skip_rebalancing: bool,
    /// Field 9. Enforce the bootstrap's `max_connections_per_node` at handshake (429).
    pub enable_connection_limit: bool,
    /// Field 11. Time from connection start to registration; default 10 s, always > 0.
    pub handshake_timeout: Duration,
    /// Field 10. Bearer JWT required on the handshake (docs/protocol.md#jwt-on-the-handshake);
    /// `None` when unset.
    pub jwt_validator: Option<JwtConfig>,
}

impl Default for FilterConfig {
    fn default() -> FilterConfig {
        FilterConfig {
            ping_interval: DEFAULT_PING_INTERVAL,
            request_path: DEFAULT_REQUEST_PATH.to_string(),
            request_method: "GET".to_string(),
            validation: None,
            required_cluster_name: None,
            use_http_upgrade: false,
            skip_rebalancing: false,
            enable_connection_limit: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            jwt_validator: None,
        }
    }
}

/// Validated `Validation` message (docs/protocol.md#filter-config): substitution format strings that compute
/// the node, cluster and tenant ids to check, and the dynamic metadata switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    /// Field 1. Format whose result must equal the node id; `None` when empty.
    pub node_id_format: Option<String>,
    /// Field 2. Format whose result must equal the cluster id; `None` when empty.
    pub cluster_id_format: Option<String>,
    /// Field 5. Format whose result must equal the tenant id; `None` when empty.
    pub tenant_id_format: Option<String>,
    /// Field 3. Write `{node_id, cluster_id, tenant_id, validation_result}` into the connection's
    /// dynamic metadata.
    pub emit_dynamic_metadata: bool,
    /// Field 4. Namespace of that metadata; default `envoy.filters.network.reverse_tunnel`.
    pub dynamic_metadata_namespace: String,
}

impl FilterConfig {
    /// Decodes and validates the handshake filter's config bytes: serialized `ReverseTunnel`,
    /// JSON text (from a `google.protobuf.Struct`), or empty (all defaults).
    ///
    /// Errors, each starting with the field path:
    /// - `ping_interval: must be >= 1s ...` / `must be <= 300s ...` / `must not be negative ...`;
    /// - `request_path: must start with '/' ...`;
    /// - `request_method: unknown value N`;
    /// - `handshake_timeout: must be > 0` (or negative);
    /// - `auto_close_connections: deprecated and not supported ...`;
    /// - `jwt_validator...`: see [`JwtConfig::from_proto`];
    /// - JSON: `<path>: unknown field '<name>'`, `<path>: invalid value: ...`.
    pub fn decode(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let msg: ReverseTunnel = decode_message(bytes)?;
        FilterConfig::from_proto(&msg)
    }

    /// Validates an already decoded message (see [`FilterConfig::decode`] for the errors).
    pub fn from_proto(msg: &ReverseTunnel) -> Result<FilterConfig, ConfigError> {
        let ping_interval = match msg.ping_interval.as_ref() {
            None => DEFAULT_PING_INTERVAL,
            Some(d) => duration_from_proto(d, "ping_interval")?,
        };
        if ping_interval < MIN_PING_INTERVAL {
            return Err(ConfigError::new(
                "ping_interval",
                format!(
                    "must be >= 1s, got {ping_interval:?} (Envoy truncates it to whole seconds, and 0s \
                     closes every tunnel at once)"
                ),
            ));
        }
        if ping_interval > MAX_PING_INTERVAL {
            return Err(ConfigError::new(
                "ping_interval",
                format!("must be <= 300s, got {ping_interval:?}"),
            ));
        }
        if msg.auto_close_connections {
            return Err(ConfigError::new(
                "auto_close_connections",
                "deprecated and not supported: it closes tunnels after the handshake; remove it",
            ));
        }
        let request_path = if msg.request_path.is_empty() {
            DEFAULT_REQUEST_PATH.to_string()
        } else {
            msg.request_path.clone()
        };
        if !request_path.starts_with('/') {
            return Err(ConfigError::new(
                "request_path",
                format!("must start with '/', got '{request_path}'"),
            ));
        }
        let request_method = match msg.request_method.enum_value() {
            Ok(RequestMethod::METHOD_UNSPECIFIED) => "GET".to_string(),
            // The proto enum value name (`POST`, ...), which is the HTTP method name.
            Ok(method) => method.descriptor().name().to_string(),
            Err(n) => {
                return Err(ConfigError::new(
                    "request_method",
                    format!("unknown value {n}"),
                ))
            }
        };
        let jwt_validator = match msg.jwt_validator.as_ref() {
            None => None,
            Some(j) => Some(JwtConfig::from_proto(j)?),
        };
        let handshake_timeout = match msg.handshake_timeout.as_ref() {
            None => DEFAULT_HANDSHAKE_TIMEOUT,
            Some(d) => duration_from_proto(d, "handshake_timeout")?,
        };
        if handshake_timeout.is_zero() {
            return Err(ConfigError::new("handshake_timeout", "must be > 0"));
        }
        let non_empty = |s: &str| {
            if s.is_empty() {
                None
            } else {
                Some(s.to_string())
            }
        };
        let validation = msg.validation.as_ref().map(|v| ValidationConfig {
            node_id_format: non_empty(&v.node_id_format),
            cluster_id_format: non_empty(&v.cluster_id_format),
            tenant_id_format: non_empty(&v.tenant_id_format),
            emit_dynamic_metadata: v.emit_dynamic_metadata,
            dynamic_metadata_namespace: non_empty(&v.dynamic_metadata_namespace)
                .unwrap_or_else(|| DEFAULT_DYNAMIC_METADATA_NAMESPACE.to_string()),
        });
        Ok(FilterConfig {
            ping_interval,
            request_path,
            request_method,
            validation,
            required_cluster_name: non_empty(&msg.required_cluster_name),
            use_http_upgrade: msg.use_http_upgrade,
            skip_rebalancing: msg.skip_rebalancing,
            enable_connection_limit: msg.enable_connection_limit,
            handshake_timeout,
            jwt_validator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::jwks::JwtHandshakeValidator;
    use crate::proto::reverse_tunnel::Validation;
    use protobuf::well_known_types::duration::Duration as ProtoDuration;
    use protobuf::{EnumOrUnknown, Message, MessageField};

    fn decode_ok(bytes: &[u8]) -> FilterConfig {
        match FilterConfig::decode(bytes) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn decode_err(bytes: &[u8]) -> String {
        match FilterConfig::decode(bytes) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn proto_duration(seconds: i64, nanos: i32) -> MessageField<ProtoDuration> {
        MessageField::some(ProtoDuration {
            seconds,
            nanos,
            ..Default::default()
        })
    }

    fn bytes_of(msg: &ReverseTunnel) -> Vec<u8> {
        msg.write_to_bytes().unwrap_or_default()
    }

    #[test]
    fn config_filter_empty_bytes_give_defaults() {
        let c = decode_ok(b"");
        assert_eq!(c, FilterConfig::default());
        assert_eq!(c.ping_interval, Duration::from_secs(2));
        assert_eq!(c.request_path, "/reverse_connections/request");
        assert_eq!(c.request_method, "GET");
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert!(c.validation.is_none());
        assert!(c.required_cluster_name.is_none());
        assert_eq!(decode_ok(b"{}"), FilterConfig::default());
    }

    #[test]
    fn config_filter_protobuf_round_trip() {
        let mut msg = ReverseTunnel::new();
        msg.ping_interval = proto_duration(5, 0);
        msg.request_path = "/rt".into();
        msg.request_method = EnumOrUnknown::new(RequestMethod::POST);
        let mut v = Validation::new();
        v.node_id_format = "%REQ(x-node)%".into();
        v.tenant_id_format = "%REQ(x-tenant)%".into();
        v.emit_dynamic_metadata = true;
        msg.validation = MessageField::some(v);
        msg.required_cluster_name = "edge".into();
        msg.use_http_upgrade = true;
        msg.skip_rebalancing = true;
        msg.enable_connection_limit = true;
        msg.handshake_timeout = proto_duration(0, 250_000_000);
        let c = decode_ok(&bytes_of(&msg));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.request_path, "/rt");
        assert_eq!(c.request_method, "POST");
        assert_eq!(
            c.validation,
            Some(ValidationConfig {
                node_id_format: Some("%REQ(x-node)%".into()),
                cluster_id_format: None,
                tenant_id_format: Some("%REQ(x-tenant)%".into()),
                emit_dynamic_metadata: true,
                dynamic_metadata_namespace: "envoy.filters.network.reverse_tunnel".into(),
            })
        );
        assert_eq!(c.required_cluster_name.as_deref(), Some("edge"));
        assert!(c.use_http_upgrade && c.skip_rebalancing && c.enable_connection_limit);
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
    }

    #[test]
    fn config_filter_every_method_name() {
        for (method, name) in [
            (RequestMethod::METHOD_UNSPECIFIED, "GET"),
            (RequestMethod::GET, "GET"),
            (RequestMethod::HEAD, "HEAD"),
            (RequestMethod::POST, "POST"),
            (RequestMethod::PUT, "PUT"),
            (RequestMethod::DELETE, "DELETE"),
            (RequestMethod::CONNECT, "CONNECT"),
            (RequestMethod::OPTIONS, "OPTIONS"),
            (RequestMethod::TRACE, "TRACE"),
            (RequestMethod::PATCH, "PATCH"),
        ] {
            let mut msg = ReverseTunnel::new();
            msg.request_method = EnumOrUnknown::new(method);
            assert_eq!(decode_ok(&bytes_of(&msg)).request_method, name);
        }
        let mut msg = ReverseTunnel::new();
        msg.request_method = EnumOrUnknown::from_i32(42);
        assert_eq!(
            decode_err(&bytes_of(&msg)),
            "request_method: unknown value 42"
        );
    }

    #[test]
    fn config_filter_json_forms() {
        let c = decode_ok(
            br#"{"ping_interval": "3s", "requestPath": "/x", "request_method": "PUT",
                 "validation": {"nodeIdFormat": "%REQ(n)%", "cluster_id_format": "", "dynamic_metadata_namespace": "my.rt.ns"},
                 "required_cluster_name": "", "use_http_upgrade": true, "handshake_timeout": "0.5s"}"#,
        );
        assert_eq!(c.ping_interval, Duration::from_secs(3));
        assert_eq!(c.request_path, "/x");
        assert_eq!(c.request_method, "PUT");
        let v = c.validation.unwrap_or_else(|| panic!("validation missing"));
        assert_eq!(v.node_id_format.as_deref(), Some("%REQ(n)%"));
        assert_eq!(v.cluster_id_format, None);
        assert_eq!(v.dynamic_metadata_namespace, "my.rt.ns");
        assert!(!v.emit_dynamic_metadata);
        assert_eq!(c.required_cluster_name, None);
        assert!(c.use_http_upgrade);
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        // Enum by number, also as an integral float (Envoy renders Struct numbers as doubles).
        assert_eq!(
            decode_ok(br#"{"request_method": 3.0}"#).request_method,
            "POST"
        );
        assert_eq!(
            decode_ok(br#"{"ping_interval": "1.5s"}"#).ping_interval,
            Duration::from_millis(1500)
        );
        // An empty validation object is present.
        assert!(decode_ok(br#"{"validation": {}}"#).validation.is_some());
    }

    #[test]
    fn config_filter_json_errors_name_the_field() {
        assert_eq!(
            decode_err(br#"{"ping_intervall": "2s"}"#),
            "ping_intervall: unknown field 'ping_intervall'"
        );
        assert_eq!(
            decode_err(br#"{"validation": {"node_format": "x"}}"#),
            "validation.node_format: unknown field 'node_format'"
        );
        let e = decode_err(br#"{"ping_interval": "2"}"#);
        assert!(e.starts_with("ping_interval: invalid value"), "{e}");
        let e = decode_err(br#"{"ping_interval": 2}"#);
        assert!(e.starts_with("ping_interval: invalid value"), "{e}");
        let e = decode_err(br#"{"ping_interval": "99999999999999999999s"}"#);
        assert!(e.starts_with("ping_interval: duration"), "{e}");
        let e = decode_err(br#"{"ping_interval": "-9223372036854775808s"}"#);
        assert!(e.starts_with("ping_interval: "), "{e}");
        let e = decode_err(br#"{"request_method": "FETCH"}"#);
        assert!(e.starts_with("request_method: invalid value"), "{e}");
        let e = decode_err(br#"{"validation": "x"}"#);
        assert!(e.starts_with("validation: expected a JSON object"), "{e}");
    }

    #[test]
    fn config_filter_ping_interval_bounds() {
        let mut msg = ReverseTunnel::new();
        msg.ping_interval = proto_duration(0, 500_000_000);
        let e = decode_err(&bytes_of(&msg));
        assert!(
            e.starts_with("ping_interval: must be >= 1s, got 500ms"),
            "{e}"
        );
        msg.ping_interval = proto_duration(0, 0);
        assert!(decode_err(&bytes_of(&msg)).starts_with("ping_interval: must be >= 1s"));
        msg.ping_interval = proto_duration(1, 0);
        assert_eq!(
            decode_ok(&bytes_of(&msg)).ping_interval,
            Duration::from_secs(1)
        );
        msg.ping_interval = proto_duration(300, 0);
        assert_eq!(
            decode_ok(&bytes_of(&msg)).ping_interval,
            Duration::from_secs(300)
        );
        msg.ping_interval = proto_duration(300, 1);
        assert!(decode_err(&bytes_of(&msg)).starts_with("ping_interval: must be <= 300s"));
        msg.ping_interval = proto_duration(-2, 0);
        assert!(decode_err(&bytes_of(&msg)).starts_with("ping_interval: must not be negative"));
        assert!(
            decode_err(br#"{"ping_interval": "0.5s"}"#).starts_with("ping_interval: must be >= 1s")
        );
    }

    #[test]
    fn config_filter_validation_errors() {
        let mut msg = ReverseTunnel::new();
        msg.request_path = "reverse".into();
        assert_eq!(
            decode_err(&bytes_of(&msg)),
            "request_path: must start with '/', got 'reverse'"
        );

        let mut msg = ReverseTunnel::new();
        msg.auto_close_connections = true;
        assert!(decode_err(&bytes_of(&msg))
            .starts_with("auto_close_connections: deprecated and not supported"));

        let mut msg = ReverseTunnel::new();
        msg.jwt_validator = MessageField::some(JwtHandshakeValidator::new());
        assert_eq!(
            decode_err(&bytes_of(&msg)),
            "jwt_validator.issuer: required (a token's iss must equal it)"
        );
        assert_eq!(
            decode_err(br#"{"jwt_validator": {"issuer": "me", "audiences": ["a"]}}"#),
            "jwt_validator: one of local_jwks or remote_jwks is required"
        );

        let mut msg = ReverseTunnel::new();
        msg.handshake_timeout = proto_duration(0, 0);
        assert_eq!(
            decode_err(&bytes_of(&msg)),
            "handshake_timeout: must be > 0"
        );
        msg.handshake_timeout = proto_duration(0, -5);
        assert!(decode_err(&bytes_of(&msg)).starts_with("handshake_timeout: must not be negative"));
        assert_eq!(
            decode_err(br#"{"handshake_timeout": "0s"}"#),
            "handshake_timeout: must be > 0"
        );
    }

    #[test]
    fn config_filter_wire_numbers_of_jwt_and_timeout() {
        // Hand-assembled: field 10 (jwt_validator) tag 0x52, LEN 5: { field 1 (issuer) tag 0x0a,
        // LEN 3, "ctl" }; field 11 (handshake_timeout) tag 0x5a, LEN 2: { 0x08 = seconds, 3 }.
        let e = decode_err(&[0x52, 0x05, 0x0a, 0x03, b'c', b't', b'l']);
        assert_eq!(e, "jwt_validator: one of local_jwks or remote_jwks is required");
        assert_eq!(
            decode_ok(&[0x5a, 0x02, 0x08, 0x03]).handshake_timeout,
            Duration::from_secs(3)
        );
    }
}
