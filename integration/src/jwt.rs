//! Signing keys and tokens for the `jwt_validator` tests and the JWT bench workload: an RSA key
//! made at run time with the `openssl` CLI (installed by scripts/setup.sh), HMAC keys from test
//! bytes, their public JWKS, and tokens minted with the `jsonwebtoken` crate. Nothing private is
//! committed.

use std::io::Write;
use std::process::{Command, Stdio};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::{Error, Result};

/// A signing key and its public JWK.
pub struct SigningKey {
    enc: EncodingKey,
    /// The algorithm it signs with (RS256 or HS256 here).
    pub alg: Algorithm,
    /// The public JWK, with `kid`.
    pub jwk: Value,
}

/// base64url without padding (RFC 7515 section 2).
fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn run_openssl(args: &[&str], stdin: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("openssl: {e} (scripts/setup.sh installs it)")))?;
    child.stdin.take().ok_or_else(|| Error::msg("openssl stdin"))?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Error(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(out.stdout)
}

impl SigningKey {
    /// A fresh RSA 2048 key (`openssl genpkey`), RS256, with `kid`.
    pub fn rsa(kid: &str) -> Result<SigningKey> {
        let pem = run_openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], b"")?;
        let modulus = String::from_utf8_lossy(&run_openssl(&["rsa", "-noout", "-modulus"], &pem)?).trim().to_string();
        let hex = modulus.trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error(format!("openssl modulus: {e}")))?;
        Ok(SigningKey {
            enc: EncodingKey::from_rsa_pem(&pem).map_err(|e| Error(format!("rsa pem: {e}")))?,
            alg: Algorithm::RS256,
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64url(&n), "e": "AQAB"}),
        })
    }

    /// An HS256 key from `secret` (test bytes), with `kid`.
    pub fn hmac(secret: &[u8], kid: &str) -> SigningKey {
        SigningKey {
            enc: EncodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            jwk: json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64url(secret)}),
        }
    }

    /// A token with this key's `alg` and `kid` over `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let mut h = Header::new(self.alg);
        h.kid = self.jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&h, claims, &self.enc).map_err(|e| Error(format!("sign: {e}")))
    }
}

/// `{"keys": [...]}` of the keys' public JWKs.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the Unix epoch, offset by `delta` (for `exp`).
pub fn unix_secs(delta: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    now as i64 + delta
}

/// Claims `{iss, aud, sub, exp}` with `exp` `ttl_secs` from now (negative: already expired).
pub fn claims(iss: &str, aud: &str, sub: &str, ttl_secs: i64) -> Value {
    json!({"iss": iss, "aud": aud, "sub": sub, "exp": unix_secs(ttl_secs)})
}

/// The `jwt_validator` of a `ReverseTunnel` filter config as one YAML flow line: issuer,
/// audiences and an inline JWKS, plus `extra` fields (e.g. `, allow_missing_or_failed: true`).
pub fn validator_yaml(issuer: &str, audience: &str, jwks: &str, extra: &str) -> String {
    format!(
        "jwt_validator: {{issuer: {}, audiences: [{}], local_jwks: {{inline_string: {}}}{extra}}}",
        json!(issuer),
        json!(audience),
        json!(jwks)
    )
}
