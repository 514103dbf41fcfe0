//! Test-only signing keys, generated when the tests run (nothing private is committed): RSA with
//! the `openssl` CLI (installed by scripts/setup.sh), EC and Ed25519 with `ring`, HMAC from fixed
//! test bytes. Each key comes with its public JWK (RFC 7517) and can mint tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::KeyPair;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// A signing key and its public JWK.
pub struct TestKey {
    /// The key that signs.
    pub enc: EncodingKey,
    /// The public JWK (with `kid`).
    pub jwk: Value,
}

impl TestKey {
    /// A token with header `alg`/`kid` and `claims`.
    pub fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &self.enc).expect("sign")
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

/// A fresh RSA 2048 key (once per test process, per `slot`) made by `openssl genrsa`.
pub fn rsa(slot: usize, kid: &str) -> TestKey {
    static KEYS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                let out = std::process::Command::new("openssl")
                    .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
                    .output()
                    .expect("run openssl");
                assert!(out.status.success(), "openssl genpkey failed");
                let pem = out.stdout;
                let mut child = std::process::Command::new("openssl")
                    .args(["rsa", "-noout", "-modulus"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("run openssl");
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(&pem).expect("write pem");
                let m = child.wait_with_output().expect("openssl rsa");
                let text = String::from_utf8_lossy(&m.stdout).trim().to_string();
                let n = hex(text.trim_start_matches("Modulus="));
                (pem, n)
            })
            .collect()
    });
    let (pem, n) = &keys[slot];
    TestKey {
        enc: EncodingKey::from_rsa_pem(pem).expect("rsa pem"),
        jwk: json!({"kty": "RSA", "kid": kid, "n": b64(n), "e": "AQAB"}),
    }
}

/// A fresh EC key on P-256 (`p384 = false`) or P-384.
pub fn ec(p384: bool, kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let (alg, crv, len) = if p384 {
        (&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
    } else {
        (&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
    };
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("ec keygen");
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("ec key");
    let pubkey = pair.public_key().as_ref();
    let (x, y) = (&pubkey[1..1 + len], &pubkey[1 + len..]);
    TestKey {
        enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(x), "y": b64(y)}),
    }
}

/// A fresh Ed25519 key.
pub fn ed25519(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed keygen");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed key");
    TestKey {
        enc: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
    }
}

/// An HMAC key from `secret` (test bytes, not a secret of any deployment).
pub fn hmac(secret: &[u8], kid: &str) -> TestKey {
    TestKey { enc: EncodingKey::from_secret(secret), jwk: json!({"kty": "oct", "kid": kid, "k": b64(secret)}) }
}

/// `{"keys": [...]}` of the given keys' JWKs.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}
