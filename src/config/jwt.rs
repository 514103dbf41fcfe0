//! `ReverseTunnel.jwt_validator` (message
//! `envoy.extensions.filters.common.jwks.v3.JwtHandshakeValidator`, docs/protocol.md#jwt-on-the-handshake):
//! decoded and validated into a [`JwtConfig`]. A local JWKS is read and parsed here, once, at
//! config load (main thread); a remote JWKS is described by [`RemoteJwksConfig`] and fetched by
//! the bootstrap extension (`adapters::jwks`).
//!
//! Every error names the field, under `jwt_validator.` (for example
//! `jwt_validator.local_jwks: no usable signing key`).

use std::sync::Arc;
use std::time::Duration;

use super::{duration_from_proto, ConfigError};
use crate::core::jwt::{KeySet, Verifier, DEFAULT_CLOCK_SKEW_SECS, DEFAULT_TOKEN_HEADER};
use crate::proto::base::{data_source, DataSource};
use crate::proto::jwks::{jwt_handshake_validator::Jwks_source_specifier, JwtHandshakeValidator, RemoteJwks};

/// Default namespace of the verified claims (docs/protocol.md#jwt-on-the-handshake; observed on
/// the built-in 1.40.0).
pub const DEFAULT_CLAIMS_NAMESPACE: &str = "envoy.filters.network.reverse_tunnel.jwt";
/// Default `remote_jwks.cache_duration` (Envoy's `RemoteJwks` docs: 10 minutes).
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(600);
/// Default `async_fetch.failed_refetch_duration` (Envoy's `JwksAsyncFetch` docs: 1 s).
pub const DEFAULT_FAILED_REFETCH: Duration = Duration::from_secs(1);
/// Floor of `cache_duration` and `failed_refetch_duration`: shorter values are raised to it
/// (`JwtHandshakeValidator` docs: no refetch loop without a pause).
pub const MIN_REFETCH: Duration = Duration::from_secs(1);
/// Longest `issuer` (the proto's `max_len`).
pub const MAX_ISSUER_LEN: usize = 1024;
/// Longest `token_header` and `claims_metadata_namespace` (the proto's `max_len`).
pub const MAX_NAME_LEN: usize = 255;
/// Largest JWKS document accepted, in bytes (local file or remote response).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// `local_jwks`: parsed once at config load.
    Local(Arc<KeySet>),
    /// `remote_jwks`: fetched in the background.
    Remote(RemoteJwksConfig),
}

/// `remote_jwks` (message `RemoteJwks`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwksConfig {
    /// `http_uri.uri` as configured, e.g. `http://jwks.example/keys`.
    pub uri: String,
    /// `host` header of the fetch: the URI's authority.
    pub host: String,
    /// `:path` of the fetch: the URI's path and query (`/` when empty).
    pub path: String,
    /// `http_uri.cluster`: the Envoy cluster the fetch goes through.
    pub cluster: String,
    /// `http_uri.timeout` (required, > 0).
    pub timeout: Duration,
    /// `cache_duration` (default 10 min, at least 1 s): keys are refetched this long after a
    /// successful fetch.
    pub cache_duration: Duration,
    /// `async_fetch.fast_listener`. Kept for completeness: a module cannot hold the listener
    /// back, so the first fetch always runs in the background (docs/protocol.md#jwt-on-the-handshake).
    pub fast_listener: bool,
    /// `async_fetch.failed_refetch_duration` (default 1 s, at least 1 s): wait after a failed
    /// fetch when no retry is left.
    pub failed_refetch: Duration,
    /// `retry_policy.num_retries`: retries of one fetch (0 without a retry policy, 1 with a
    /// policy that leaves it unset, as Envoy's docs say).
    pub num_retries: u32,
    /// `retry_policy.retry_back_off.base_interval` (default 1 s): wait before the first retry,
    /// doubled per retry.
    pub retry_base: Duration,
    /// `retry_policy.retry_back_off.max_interval` (default 10 x base): largest wait between retries.
    pub retry_max: Duration,
}

/// A validated `jwt_validator`.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `issuer`, `audiences`, `clock_skew_seconds` (default 60 s).
    pub verifier: Verifier,
    /// `local_jwks` or `remote_jwks`.
    pub source: JwksSource,
    /// `token_header`, lower-case; default `authorization`.
    pub token_header: String,
    /// `claims_metadata_namespace`; default [`DEFAULT_CLAIMS_NAMESPACE`].
    pub claims_namespace: String,
    /// `allow_missing_or_failed`: audit mode (count `jwt_would_deny`, let the handshake through).
    pub allow_missing_or_failed: bool,
}

impl PartialEq for JwtConfig {
    /// Local key sets compare by identity (they are parsed once per config).
    fn eq(&self, other: &JwtConfig) -> bool {
        let same_source = match (&self.source, &other.source) {
            (JwksSource::Local(a), JwksSource::Local(b)) => Arc::ptr_eq(a, b),
            (JwksSource::Remote(a), JwksSource::Remote(b)) => a == b,
            _ => false,
        };
        same_source
            && self.verifier == other.verifier
            && self.token_header == other.token_header
            && self.claims_namespace == other.claims_namespace
            && self.allow_missing_or_failed == other.allow_missing_or_failed
    }
}
impl Eq for JwtConfig {}

const P: &str = "jwt_validator";

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("{P}.{field}"), message)
}

/// True for an RFC 9110 token (a valid header name).
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl JwtConfig {
    /// Validates `msg`; reads and parses a local JWKS (file or environment variable included).
    ///
    /// Errors: `jwt_validator.issuer: required ...`, `jwt_validator: one of local_jwks or
    /// remote_jwks is required`, `jwt_validator.local_jwks[.filename]: ...` (unreadable, not a
    /// JWKS, no usable key), `jwt_validator.remote_jwks.http_uri.{uri,cluster,timeout}: ...`,
    /// `jwt_validator.token_header: ...`, `jwt_validator.claims_metadata_namespace: ...`.
    pub fn from_proto(msg: &JwtHandshakeValidator) -> Result<JwtConfig, ConfigError> {
        if msg.issuer.is_empty() {
            return Err(err("issuer", "required (a token's iss must equal it)"));
        }
        if msg.issuer.len() > MAX_ISSUER_LEN {
            return Err(err("issuer", format!("longer than {MAX_ISSUER_LEN} bytes")));
        }
        for (i, a) in msg.audiences.iter().enumerate() {
            if a.is_empty() {
                return Err(err(&format!("audiences[{i}]"), "must not be empty"));
            }
        }
        let token_header = if msg.token_header.is_empty() {
            DEFAULT_TOKEN_HEADER.to_string()
        } else if msg.token_header.len() > MAX_NAME_LEN || !is_header_name(&msg.token_header) {
            return Err(err("token_header", format!("not a valid header name: '{}'", msg.token_header)));
        } else {
            msg.token_header.to_ascii_lowercase()
        };
        let claims_namespace = if msg.claims_metadata_namespace.is_empty() {
            DEFAULT_CLAIMS_NAMESPACE.to_string()
        } else if msg.claims_metadata_namespace.len() > MAX_NAME_LEN {
            return Err(err("claims_metadata_namespace", format!("longer than {MAX_NAME_LEN} bytes")));
        } else {
            msg.claims_metadata_namespace.clone()
        };
        let source = match &msg.jwks_source_specifier {
            None => return Err(ConfigError::new(P, "one of local_jwks or remote_jwks is required")),
            Some(Jwks_source_specifier::LocalJwks(ds)) => JwksSource::Local(Arc::new(local_jwks(ds)?)),
            Some(Jwks_source_specifier::RemoteJwks(r)) => JwksSource::Remote(remote_jwks(r)?),
        };
        let clock_skew_secs = match msg.clock_skew_seconds {
            0 => DEFAULT_CLOCK_SKEW_SECS,
            n => u64::from(n),
        };
        Ok(JwtConfig {
            verifier: Verifier { issuer: msg.issuer.clone(), audiences: msg.audiences.clone(), clock_skew_secs },
            source,
            token_header,
            claims_namespace,
            allow_missing_or_failed: msg.allow_missing_or_failed,
        })
    }
}

/// Reads and parses `local_jwks`.
fn local_jwks(ds: &DataSource) -> Result<KeySet, ConfigError> {
    let (field, text) = match &ds.specifier {
        None => return Err(err("local_jwks", "empty data source")),
        Some(data_source::Specifier::InlineString(s)) => ("local_jwks.inline_string", s.clone()),
        Some(data_source::Specifier::InlineBytes(b)) => (
            "local_jwks.inline_bytes",
            String::from_utf8(b.clone()).map_err(|_| err("local_jwks.inline_bytes", "must be valid UTF-8"))?,
        ),
        Some(data_source::Specifier::Filename(f)) => {
            let field = "local_jwks.filename";
            let meta = std::fs::metadata(f).map_err(|e| err(field, format!("cannot read '{f}': {e}")))?;
            if meta.len() > MAX_JWKS_BYTES as u64 {
                return Err(err(field, format!("'{f}' is larger than {MAX_JWKS_BYTES} bytes")));
            }
            let text = std::fs::read_to_string(f).map_err(|e| err(field, format!("cannot read '{f}': {e}")))?;
            (field, text)
        }
        Some(data_source::Specifier::EnvironmentVariable(v)) => (
            "local_jwks.environment_variable",
            std::env::var(v).map_err(|_| err("local_jwks.environment_variable", format!("'{v}' is not set")))?,
        ),
    };
    KeySet::parse(&text).map_err(|e| err(field, e))
}

/// Splits an `http://` / `https://` URI into (authority, path-and-query).
fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let ok = |s: &str| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    (ok(authority) && ok(&path) && !authority.contains('@')).then(|| (authority.to_string(), path))
}

/// Validates `remote_jwks`.
fn remote_jwks(r: &RemoteJwks) -> Result<RemoteJwksConfig, ConfigError> {
    let Some(h) = r.http_uri.as_ref() else {
        return Err(err("remote_jwks.http_uri", "required"));
    };
    let (host, path) = split_uri(&h.uri).ok_or_else(|| {
        err("remote_jwks.http_uri.uri", format!("must be an absolute http:// or https:// URI, got '{}'", h.uri))
    })?;
    if h.cluster.is_empty() {
        return Err(err("remote_jwks.http_uri.cluster", "required (the Envoy cluster that reaches the JWKS server)"));
    }
    let timeout = match h.timeout.as_ref() {
        None => return Err(err("remote_jwks.http_uri.timeout", "required")),
        Some(d) => duration_from_proto(d, &format!("{P}.remote_jwks.http_uri.timeout"))?,
    };
    if timeout.is_zero() {
        return Err(err("remote_jwks.http_uri.timeout", "must be > 0"));
    }
    let cache_duration = match r.cache_duration.as_ref() {
        None => DEFAULT_CACHE_DURATION,
        Some(d) => duration_from_proto(d, &format!("{P}.remote_jwks.cache_duration"))?.max(MIN_REFETCH),
    };
    let (fast_listener, failed_refetch) = match r.async_fetch.as_ref() {
        None => (false, DEFAULT_FAILED_REFETCH),
        Some(a) => (
            a.fast_listener,
            match a.failed_refetch_duration.as_ref() {
                None => DEFAULT_FAILED_REFETCH,
                Some(d) => duration_from_proto(d, &format!("{P}.remote_jwks.async_fetch.failed_refetch_duration"))?
                    .max(MIN_REFETCH),
            },
        ),
    };
    let (num_retries, retry_base, retry_max) = match r.retry_policy.as_ref() {
        None => (0, Duration::from_secs(1), Duration::from_secs(10)),
        Some(p) => {
            let n = p.num_retries.as_ref().map(|v| v.value).unwrap_or(1);
            let b = p.retry_back_off.as_ref();
            let base = match b.and_then(|b| b.base_interval.as_ref()) {
                None => Duration::from_secs(1),
                Some(d) => duration_from_proto(d, &format!("{P}.remote_jwks.retry_policy.retry_back_off.base_interval"))?,
            };
            if base.is_zero() {
                return Err(err("remote_jwks.retry_policy.retry_back_off.base_interval", "must be > 0"));
            }
            let max = match b.and_then(|b| b.max_interval.as_ref()) {
                None => base * 10,
                Some(d) => duration_from_proto(d, &format!("{P}.remote_jwks.retry_policy.retry_back_off.max_interval"))?,
            };
            if max < base {
                return Err(err("remote_jwks.retry_policy.retry_back_off.max_interval", "must be >= base_interval"));
            }
            (n, base, max)
        }
    };
    Ok(RemoteJwksConfig {
        uri: h.uri.clone(),
        host,
        path,
        cluster: h.cluster.clone(),
        timeout,
        cache_duration,
        fast_listener,
        failed_refetch,
        num_retries,
        retry_base,
        retry_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::filter::FilterConfig;

    const JWKS: &str = r#"{"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c3VwZXJzZWNyZXRrZXktc3VwZXJzZWNyZXRrZXktMDEyMzQ1Njc4OQ"}]}"#;

    fn jwt_of(json: &str) -> Result<JwtConfig, String> {
        match FilterConfig::decode(format!(r#"{{"jwt_validator": {json}}}"#).as_bytes()) {
            Ok(c) => Ok(c.jwt_validator.expect("jwt_validator decoded")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn local(extra: &str) -> String {
        format!(r#"{{"issuer": "ctl", "local_jwks": {{"inline_string": {}}}{extra}}}"#, serde_json::json!(JWKS))
    }

    #[test]
    fn defaults_and_every_field() {
        let c = jwt_of(&local("")).expect("ok");
        assert_eq!(c.token_header, "authorization");
        assert_eq!(c.claims_namespace, "envoy.filters.network.reverse_tunnel.jwt");
        assert_eq!(c.verifier.clock_skew_secs, 60);
        assert!(c.verifier.audiences.is_empty());
        assert!(!c.allow_missing_or_failed);
        let c = jwt_of(&local(
            r#", "audiences": ["rt", "b"], "token_header": "X-RT-Token", "claims_metadata_namespace": "my.ns",
                "allow_missing_or_failed": true, "clock_skew_seconds": 5"#,
        ))
        .expect("ok");
        assert_eq!(c.verifier, Verifier { issuer: "ctl".into(), audiences: vec!["rt".into(), "b".into()], clock_skew_secs: 5 });
        assert_eq!(c.token_header, "x-rt-token");
        assert_eq!(c.claims_namespace, "my.ns");
        assert!(c.allow_missing_or_failed);
        assert!(matches!(c.source, JwksSource::Local(ref k) if k.len() == 1));
    }

    #[test]
    fn local_jwks_from_file_bytes_and_env() {
        let dir = std::env::temp_dir().join(format!("rt-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("jwks.json");
        std::fs::write(&f, JWKS).expect("write");
        let c = jwt_of(&format!(r#"{{"issuer": "ctl", "local_jwks": {{"filename": "{}"}}}}"#, f.display())).expect("ok");
        assert!(matches!(c.source, JwksSource::Local(_)));
        let e = jwt_of(r#"{"issuer": "ctl", "local_jwks": {"filename": "/nonexistent/jwks.json"}}"#).unwrap_err();
        assert!(e.starts_with("jwt_validator.local_jwks.filename: cannot read '/nonexistent/jwks.json'"), "{e}");
        std::fs::write(&f, "{\"keys\": 1}").expect("write");
        let e = jwt_of(&format!(r#"{{"issuer": "ctl", "local_jwks": {{"filename": "{}"}}}}"#, f.display())).unwrap_err();
        assert_eq!(e, "jwt_validator.local_jwks.filename: no \"keys\" array");
        let _ = std::fs::remove_dir_all(&dir);
        let e = jwt_of(r#"{"issuer": "ctl", "local_jwks": {"environment_variable": "RT_TEST_UNSET_JWKS_VAR"}}"#).unwrap_err();
        assert_eq!(e, "jwt_validator.local_jwks.environment_variable: 'RT_TEST_UNSET_JWKS_VAR' is not set");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            jwt_of(r#"{"local_jwks": {"inline_string": "{}"}}"#).unwrap_err(),
            "jwt_validator.issuer: required (a token's iss must equal it)"
        );
        assert_eq!(jwt_of(r#"{"issuer": "ctl"}"#).unwrap_err(), "jwt_validator: one of local_jwks or remote_jwks is required");
        assert_eq!(
            jwt_of(r#"{"issuer": "ctl", "local_jwks": {"inline_string": "{\"keys\": []}"}}"#).unwrap_err(),
            "jwt_validator.local_jwks.inline_string: no usable signing key"
        );
        assert!(jwt_of(r#"{"issuer": "ctl", "local_jwks": {"inline_string": "nope"}}"#)
            .unwrap_err()
            .starts_with("jwt_validator.local_jwks.inline_string: not JSON"));
        assert_eq!(
            jwt_of(&local(r#", "token_header": "bad header""#)).unwrap_err(),
            "jwt_validator.token_header: not a valid header name: 'bad header'"
        );
        assert_eq!(jwt_of(&local(r#", "audiences": [""]"#)).unwrap_err(), "jwt_validator.audiences[0]: must not be empty");
        assert!(jwt_of(&local(r#", "claims_metadata_namespace": "x""#)).is_ok());
        let long = "n".repeat(256);
        assert_eq!(
            jwt_of(&local(&format!(r#", "claims_metadata_namespace": "{long}""#))).unwrap_err(),
            "jwt_validator.claims_metadata_namespace: longer than 255 bytes"
        );
        assert!(jwt_of(r#"{"issuer": "ctl", "local_jwk": {}}"#).unwrap_err().starts_with("jwt_validator.local_jwk: unknown field"));
    }

    #[test]
    fn remote_jwks_fields() {
        let c = jwt_of(
            r#"{"issuer": "ctl", "remote_jwks": {"http_uri": {"uri": "http://jwks.local:8080/keys?v=1", "cluster": "jwks", "timeout": "2s"},
                "cache_duration": "0.2s", "async_fetch": {"fast_listener": true, "failed_refetch_duration": "3s"},
                "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}, "num_retries": 3}}}"#,
        )
        .expect("ok");
        let JwksSource::Remote(r) = c.source else { panic!("remote expected") };
        assert_eq!(r.host, "jwks.local:8080");
        assert_eq!(r.path, "/keys?v=1");
        assert_eq!(r.cluster, "jwks");
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(r.cache_duration, Duration::from_secs(1), "raised to 1 s");
        assert!(r.fast_listener);
        assert_eq!(r.failed_refetch, Duration::from_secs(3));
        assert_eq!((r.num_retries, r.retry_base, r.retry_max), (3, Duration::from_millis(100), Duration::from_secs(1)));
        let c = jwt_of(r#"{"issuer": "ctl", "remote_jwks": {"http_uri": {"uri": "https://h", "cluster": "c", "timeout": "1s"}}}"#)
            .expect("ok");
        let JwksSource::Remote(r) = c.source else { panic!("remote expected") };
        assert_eq!((r.host.as_str(), r.path.as_str()), ("h", "/"));
        assert_eq!(r.cache_duration, DEFAULT_CACHE_DURATION);
        assert_eq!(r.num_retries, 0);
        for (json, want) in [
            (r#"{}"#, "jwt_validator.remote_jwks.http_uri: required"),
            (r#"{"http_uri": {"uri": "jwks.local/keys", "cluster": "c", "timeout": "1s"}}"#, "jwt_validator.remote_jwks.http_uri.uri: must be"),
            (r#"{"http_uri": {"uri": "http://h/k", "timeout": "1s"}}"#, "jwt_validator.remote_jwks.http_uri.cluster: required"),
            (r#"{"http_uri": {"uri": "http://h/k", "cluster": "c"}}"#, "jwt_validator.remote_jwks.http_uri.timeout: required"),
            (r#"{"http_uri": {"uri": "http://h/k", "cluster": "c", "timeout": "0s"}}"#, "jwt_validator.remote_jwks.http_uri.timeout: must be > 0"),
        ] {
            let e = jwt_of(&format!(r#"{{"issuer": "ctl", "remote_jwks": {json}}}"#)).unwrap_err();
            assert!(e.starts_with(want), "{e} (want {want})");
        }
    }

    #[test]
    fn split_uri_forms() {
        assert_eq!(split_uri("http://a:1/b/c"), Some(("a:1".into(), "/b/c".into())));
        assert_eq!(split_uri("http://a?x=1"), Some(("a".into(), "/?x=1".into())));
        assert_eq!(split_uri("ftp://a/b"), None);
        assert_eq!(split_uri("http:///b"), None);
        assert_eq!(split_uri("http://u@a/b"), None);
        assert_eq!(split_uri("http://a/b c"), None);
    }
}
