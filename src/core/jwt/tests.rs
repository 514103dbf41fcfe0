use super::testkeys::{self, TestKey};
use super::*;
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn verifier() -> Verifier {
    Verifier { issuer: "ctl".into(), audiences: vec!["rt".into()], clock_skew_secs: 60 }
}

fn claims(sub: &str) -> Value {
    json!({"iss": "ctl", "aud": "rt", "sub": sub, "exp": NOW + 3600})
}

fn set(keys: &[&TestKey]) -> KeySet {
    KeySet::parse(&testkeys::jwks(keys)).expect("jwks")
}

#[test]
fn every_algorithm_verifies_and_a_foreign_key_fails() {
    let rsa = testkeys::rsa(0, "r");
    let rsa2 = testkeys::rsa(1, "r");
    let p256 = testkeys::ec(false, "e");
    let p384 = testkeys::ec(true, "e");
    let ed = testkeys::ed25519("d");
    let hs = testkeys::hmac(b"test-only-hmac-secret-0123456789", "h");
    let hs_other = testkeys::hmac(b"another-test-only-secret-9876543", "h");
    let (p256b, p384b, edb) = (testkeys::ec(false, "e"), testkeys::ec(true, "e"), testkeys::ed25519("d"));
    let cases: Vec<(&TestKey, &TestKey, Algorithm)> = vec![
        (&rsa, &rsa2, Algorithm::RS256),
        (&rsa, &rsa2, Algorithm::RS384),
        (&rsa, &rsa2, Algorithm::RS512),
        (&rsa, &rsa2, Algorithm::PS256),
        (&rsa, &rsa2, Algorithm::PS384),
        (&rsa, &rsa2, Algorithm::PS512),
        (&p256, &p256b, Algorithm::ES256),
        (&p384, &p384b, Algorithm::ES384),
        (&ed, &edb, Algorithm::EdDSA),
        (&hs, &hs_other, Algorithm::HS256),
        (&hs, &hs_other, Algorithm::HS384),
        (&hs, &hs_other, Algorithm::HS512),
    ];
    for (key, other, alg) in cases {
        let kid = key.jwk["kid"].as_str();
        let token = key.sign(alg, kid, &claims("n1"));
        let got = verifier().verify(&token, &set(&[key]), NOW).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got["sub"], "n1", "{alg:?}");
        // Same kid, other key material: the signature fails.
        assert_eq!(verifier().verify(&token, &set(&[other]), NOW), Err(JwtError::BadSignature), "{alg:?}");
    }
}

#[test]
fn kid_selects_the_key_and_no_kid_tries_every_fitting_key() {
    let a = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
    let b = testkeys::hmac(b"test-only-secret-b-0123456789abcd", "b");
    let ks = set(&[&a, &b]);
    let t = b.sign(Algorithm::HS256, Some("b"), &claims("n"));
    assert!(verifier().verify(&t, &ks, NOW).is_ok());
    let t = b.sign(Algorithm::HS256, None, &claims("n"));
    assert!(verifier().verify(&t, &ks, NOW).is_ok());
    let t = b.sign(Algorithm::HS256, Some("zzz"), &claims("n"));
    assert_eq!(verifier().verify(&t, &ks, NOW), Err(JwtError::NoKey));
    // An HMAC token against an RSA-only set: no key fits (no algorithm confusion).
    let rsa = testkeys::rsa(0, "b");
    assert_eq!(verifier().verify(&t, &set(&[&rsa]), NOW), Err(JwtError::NoKey));
    assert_eq!(verifier().verify(&t, &KeySet::default(), NOW), Err(JwtError::NoKey));
}

#[test]
fn jwk_alg_restricts_the_key() {
    let hs = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
    let mut jwk = hs.jwk.clone();
    jwk["alg"] = json!("HS512");
    let ks = KeySet::parse(&json!({"keys": [jwk]}).to_string()).expect("jwks");
    assert_eq!(verifier().verify(&hs.sign(Algorithm::HS256, None, &claims("n")), &ks, NOW), Err(JwtError::NoKey));
    assert!(verifier().verify(&hs.sign(Algorithm::HS512, None, &claims("n")), &ks, NOW).is_ok());
}

#[test]
fn time_issuer_and_audience_checks() {
    let k = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
    let ks = set(&[&k]);
    let v = verifier();
    let tok = |c: Value| k.sign(Algorithm::HS256, None, &c);
    // exp: required; 60 s of skew by default.
    assert_eq!(v.verify(&tok(json!({"iss": "ctl", "aud": "rt"})), &ks, NOW), Err(JwtError::MissingExp));
    assert_eq!(v.verify(&tok(json!({"iss": "ctl", "aud": "rt", "exp": NOW - 61})), &ks, NOW), Err(JwtError::Expired));
    assert!(v.verify(&tok(json!({"iss": "ctl", "aud": "rt", "exp": NOW - 59})), &ks, NOW).is_ok());
    let strict = Verifier { clock_skew_secs: 0, ..verifier() };
    assert_eq!(strict.verify(&tok(json!({"iss": "ctl", "aud": "rt", "exp": NOW - 1})), &ks, NOW), Err(JwtError::Expired));
    // nbf.
    let c = json!({"iss": "ctl", "aud": "rt", "exp": NOW + 600, "nbf": NOW + 120});
    assert_eq!(v.verify(&tok(c), &ks, NOW), Err(JwtError::NotYetValid));
    let c = json!({"iss": "ctl", "aud": "rt", "exp": NOW + 600, "nbf": NOW + 30});
    assert!(v.verify(&tok(c), &ks, NOW).is_ok());
    // iss.
    assert_eq!(v.verify(&tok(json!({"iss": "other", "aud": "rt", "exp": NOW + 9})), &ks, NOW), Err(JwtError::WrongIssuer));
    assert_eq!(v.verify(&tok(json!({"aud": "rt", "exp": NOW + 9})), &ks, NOW), Err(JwtError::WrongIssuer));
    // aud: string or list; scheme and trailing slash normalized; unchecked when none configured.
    assert_eq!(v.verify(&tok(json!({"iss": "ctl", "aud": "nope", "exp": NOW + 9})), &ks, NOW), Err(JwtError::WrongAudience));
    assert_eq!(v.verify(&tok(json!({"iss": "ctl", "exp": NOW + 9})), &ks, NOW), Err(JwtError::WrongAudience));
    assert!(v.verify(&tok(json!({"iss": "ctl", "aud": ["x", "rt"], "exp": NOW + 9})), &ks, NOW).is_ok());
    let web = Verifier { audiences: vec!["https://api.example.com/".into()], ..verifier() };
    assert!(web.verify(&tok(json!({"iss": "ctl", "aud": "http://api.example.com", "exp": NOW + 9})), &ks, NOW).is_ok());
    let any = Verifier { audiences: vec![], ..verifier() };
    assert!(any.verify(&tok(json!({"iss": "ctl", "exp": NOW + 9})), &ks, NOW).is_ok());
}

#[test]
fn alg_none_and_garbage_are_malformed() {
    let k = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
    let ks = set(&[&k]);
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("n").to_string())
    );
    use base64::Engine;
    assert!(matches!(verifier().verify(&none, &ks, NOW), Err(JwtError::Malformed(_))));
    for bad in ["", "a", "a.b", "a.b.c", "...", "e30.e30.", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
        assert!(matches!(verifier().verify(bad, &ks, NOW), Err(JwtError::Malformed(_))), "{bad:.20}");
    }
}

#[test]
fn token_extraction() {
    assert_eq!(extract_token("Bearer abc"), Some("abc"));
    assert_eq!(extract_token("bearer  abc "), Some("abc"));
    assert_eq!(extract_token("abc"), Some("abc"));
    assert_eq!(extract_token("Bearer "), None);
    assert_eq!(extract_token("  "), None);
    assert_eq!(extract_token("Bearé"), Some("Bearé"));
}

#[test]
fn jwks_parse_errors_and_skips() {
    assert!(KeySet::parse("nope").unwrap_err().starts_with("not JSON"));
    assert_eq!(KeySet::parse("{}").unwrap_err(), "no \"keys\" array");
    assert_eq!(KeySet::parse(r#"{"keys": []}"#).unwrap_err(), "no usable signing key");
    // Unknown kty, encryption keys and P-521 are skipped.
    let skipped = r#"{"keys": [{"kty": "XYZ"}, {"kty": "oct", "use": "enc", "k": "AAAA"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}"#;
    assert_eq!(KeySet::parse(skipped).unwrap_err(), "no usable signing key");
    assert!(KeySet::parse(r#"{"keys": [{"kty": "RSA"}]}"#).unwrap_err().starts_with("key 0:"));
    assert!(KeySet::parse(r#"{"keys": [{"kty": "oct", "k": "AAAA", "alg": "RS256"}]}"#)
        .unwrap_err()
        .contains("does not fit"));
    // The built-in's evidence key set.
    let ks = KeySet::parse(r#"{"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c3VwZXJzZWNyZXRrZXktc3VwZXJzZWNyZXRrZXktMDEyMzQ1Njc4OQ"}]}"#)
        .expect("evidence jwks");
    assert_eq!(ks.len(), 1);
}

#[test]
fn claim_text_forms() {
    assert_eq!(claim_text(&json!("n1")), "n1");
    assert_eq!(claim_text(&json!(17)), "17");
    assert_eq!(claim_text(&json!(true)), "true");
    assert_eq!(claim_text(&json!(null)), "-");
    assert_eq!(claim_text(&json!(["a", 1])), r#"["a",1]"#);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::core::fuzz_cases(512)))]
    /// Hostile header values: whatever the bytes, extraction and verification return, never
    /// panic, and never accept.
    #[test]
    fn hostile_tokens_never_verify(value in "\\PC{0,300}", dots in "[A-Za-z0-9_=.-]{0,200}") {
        let k = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
        let ks = KeySet::parse(&testkeys::jwks(&[&k])).expect("jwks");
        for v in [value.as_str(), dots.as_str()] {
            if let Some(t) = extract_token(v) {
                prop_assert!(verifier().verify(t, &ks, NOW).is_err());
            }
        }
    }

    /// A valid token with one byte changed anywhere never verifies.
    #[test]
    fn tampered_tokens_never_verify(pos in 0usize..400, byte in 0u8..128) {
        let k = testkeys::hmac(b"test-only-secret-a-0123456789abcd", "a");
        let ks = KeySet::parse(&testkeys::jwks(&[&k])).expect("jwks");
        let t = k.sign(Algorithm::HS256, Some("a"), &claims("n1"));
        let mut b = t.clone().into_bytes();
        let i = pos % b.len();
        prop_assume!(b[i] != byte);
        b[i] = byte;
        let s = String::from_utf8_lossy(&b).into_owned();
        // A change in the signature's last base64 character may only flip padding bits.
        let sig_tail = i == b.len() - 1;
        if !sig_tail {
            prop_assert!(verifier().verify(&s, &ks, NOW).is_err());
        }
    }
}
