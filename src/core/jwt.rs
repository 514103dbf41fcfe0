//! JWT verification of the handshake token (docs/protocol.md#jwt-on-the-handshake): a key set
//! parsed once from a JWKS document ([`KeySet::parse`]), the token taken from a request header
//! ([`extract_token`]), and the checks of [`Verifier::verify`].
//!
//! Signatures are checked by the `jsonwebtoken` crate (backed by `ring`); this module only picks
//! the key, and checks the claims `iss`, `aud`, `exp` and `nbf` itself so that time is a
//! parameter. Algorithms: RS256/384/512, PS256/384/512, ES256/384, EdDSA (Ed25519),
//! HS256/384/512; `none` and every other `alg` is refused.
//!
//! Pure code: no clock, no I/O, no panic on any input. Any thread.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Header carrying the token when `token_header` is unset (docs/protocol.md#jwt-on-the-handshake).
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";

/// Prefix stripped from the header value when present (compared case-insensitively, RFC 6750
/// section 2.1: the auth scheme is case-insensitive).
pub const BEARER_PREFIX: &str = "Bearer ";

/// Longest token looked at, in bytes; a longer one fails as [`JwtError::Malformed`] before any
/// decoding. The handshake head is at most 60 KiB anyway.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Default `clock_skew_seconds` when the field is 0 (docs/protocol.md#jwt-on-the-handshake: 60 s).
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;

/// Why a token failed. The text (`Display`) goes to debug logs only; every failure gets the same
/// 401 answer (or, in audit mode, the same `jwt_would_deny` count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No token header, or an empty value.
    Missing,
    /// Not three base64url parts, bad JSON, too long, or an unsupported `alg`.
    Malformed(String),
    /// No key of the set fits the token's `kid` and `alg` (or the set is still empty: remote
    /// JWKS before the first successful fetch).
    NoKey,
    /// No fitting key verifies the signature.
    BadSignature,
    /// The token has no numeric `exp` claim (docs/protocol.md#jwt-on-the-handshake: required).
    MissingExp,
    /// `exp` + skew is in the past.
    Expired,
    /// `nbf` - skew is in the future.
    NotYetValid,
    /// `iss` differs from the configured issuer.
    WrongIssuer,
    /// `audiences` is configured and no `aud` value matches one.
    WrongAudience,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Missing => write!(f, "no token"),
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::NoKey => write!(f, "no key fits the token's kid/alg"),
            JwtError::BadSignature => write!(f, "bad signature"),
            JwtError::MissingExp => write!(f, "no exp claim"),
            JwtError::Expired => write!(f, "expired"),
            JwtError::NotYetValid => write!(f, "not yet valid (nbf)"),
            JwtError::WrongIssuer => write!(f, "wrong issuer"),
            JwtError::WrongAudience => write!(f, "wrong audience"),
        }
    }
}

/// One verification key: its `kid` (if any), the algorithms it may verify, the decoded key.
struct Key {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// A parsed JWKS (RFC 7517): keys decoded once, shared read-only by every worker.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (k.kid.as_deref(), &k.algs)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The signing algorithm a JWK `alg` names, if it is one we verify with.
fn signing_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// Parses a JWKS document `{"keys": [...]}`. Keys for encryption (`use: enc`), of curves we
    /// cannot verify (P-521, X25519) or with an encryption `alg` are skipped.
    ///
    /// Errors (the caller prefixes the field): `not JSON: ...`, `no "keys" array`,
    /// `key N: ...` (a key that is not a valid JWK, or whose `alg` does not fit its type), and
    /// `no usable signing key` when nothing is left. Cost: one base64 decode per key.
    pub fn parse(jwks: &str) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_str(jwks).map_err(|e| format!("not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("no \"keys\" array".to_string());
        };
        let mut keys = Vec::new();
        for (i, raw) in list.iter().enumerate() {
            let kty = raw.get("kty").and_then(Value::as_str).unwrap_or("");
            if !matches!(kty, "RSA" | "EC" | "OKP" | "oct") {
                // Unknown key types are skipped, as RFC 7517 section 5 asks.
                continue;
            }
            let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("key {i}: {e}"))?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let family: Vec<Algorithm> = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
                AlgorithmParameters::OctetKey(_) => HMAC_ALGS.to_vec(),
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                    EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                    _ => continue,
                },
            };
            let algs = match jwk.common.key_algorithm {
                None => family,
                Some(a) => match signing_alg(a) {
                    None => continue,
                    Some(alg) if family.contains(&alg) => vec![alg],
                    Some(alg) => return Err(format!("key {i}: alg {alg:?} does not fit kty {kty}")),
                },
            };
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i}: {e}"))?;
            keys.push(Key { kid: jwk.common.key_id.clone(), algs, key });
        }
        if keys.is_empty() {
            return Err("no usable signing key".to_string());
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set has no key (remote JWKS before its first fetch).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The token in `value`, the raw value of the token header: surrounding blanks trimmed and a
/// leading `Bearer ` (any case) stripped. `None` when nothing is left (a bare `Bearer` included).
pub fn extract_token(value: &str) -> Option<&str> {
    let v = value.trim_matches([' ', '\t']);
    if v.eq_ignore_ascii_case(BEARER_PREFIX.trim_end()) {
        return None;
    }
    let v = match v.get(..BEARER_PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(BEARER_PREFIX) => v[BEARER_PREFIX.len()..].trim_start_matches([' ', '\t']),
        _ => v,
    };
    (!v.is_empty()).then_some(v)
}

/// Audience as compared: scheme `http://` / `https://` and one trailing `/` removed (the
/// normalization of Envoy's `jwt_authn`, which `JwtHandshakeValidator.audiences` follows).
fn normalize_audience(a: &str) -> &str {
    let a = a.strip_prefix("https://").or_else(|| a.strip_prefix("http://")).unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// The claim checks of one `jwt_validator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// `iss` must equal this (non-empty).
    pub issuer: String,
    /// When non-empty, one `aud` value must match one of these (normalized).
    pub audiences: Vec<String>,
    /// Leeway for `exp` and `nbf`, in seconds.
    pub clock_skew_secs: u64,
}

/// The verified claims of a token: its JSON payload's top-level members.
pub type Claims = Map<String, Value>;

impl Verifier {
    /// Verifies `token` against `keys` at `now_secs` (Unix seconds): signature with a key whose
    /// `kid` equals the header's (every key when the header has none) and whose algorithms
    /// include the header's `alg`; then `exp` (required), `nbf`, `iss`, `aud`. Returns the claims.
    ///
    /// Cost: one signature check per candidate key (one when tokens carry `kid`); an RS256 check
    /// is tens of microseconds.
    pub fn verify(&self, token: &str, keys: &KeySet, now_secs: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut found_key = false;
        let mut claims = None;
        for k in &keys.keys {
            if !k.algs.contains(&header.alg) {
                continue;
            }
            if let (Some(want), Some(have)) = (&header.kid, &k.kid) {
                if want != have {
                    continue;
                }
            }
            found_key = true;
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature
                    | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                    | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                    | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => {}
                    _ => return Err(JwtError::Malformed(e.to_string())),
                },
            }
        }
        let Some(claims) = claims else {
            return Err(if found_key { JwtError::BadSignature } else { JwtError::NoKey });
        };
        self.check_claims(&claims, now_secs)?;
        Ok(claims)
    }

    /// The claim checks alone (signature already verified).
    fn check_claims(&self, claims: &Claims, now_secs: u64) -> Result<(), JwtError> {
        let skew = self.clock_skew_secs as f64;
        let now = now_secs as f64;
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or(JwtError::MissingExp)?;
        if exp + skew < now {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or_else(|| JwtError::Malformed("nbf is not a number".into()))?;
            if nbf - skew > now {
                return Err(JwtError::NotYetValid);
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        if !self.audiences.is_empty() {
            let token_auds: Vec<&str> = match claims.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let ok = token_auds.iter().any(|t| {
                self.audiences.iter().any(|want| normalize_audience(want) == normalize_audience(t))
            });
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// A claim value as text for metadata and id formats: strings as they are, numbers and booleans
/// in their JSON form (`1796159225`, `true`), arrays and objects as compact JSON, `null` as `-`
/// (Envoy's rendering of a missing value).
pub fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "jwt/testkeys.rs"]
pub(crate) mod testkeys;

#[cfg(test)]
#[path = "jwt/tests.rs"]
mod tests;
