//! Unit and property tests of the handshake parser and its answers.

use super::*;
use proptest::prelude::*;

/// The exact 448-byte request of docs/protocol.md#handshake-request.
const BASE: &str = "GET /reverse_connections/request HTTP/1.1\r\n\
host: 127.0.0.1:19011\r\n\
x-envoy-reverse-tunnel-node-id: downstream-node\r\n\
x-envoy-reverse-tunnel-cluster-id: downstream-cluster\r\n\
x-envoy-reverse-tunnel-tenant-id: downstream-tenant\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\r\n\
x-envoy-reverse-tunnel-initiation-time: 1795315930843\r\n\
x-envoy-reverse-tunnel-worker-id: worker_0\r\n\
x-envoy-reverse-tunnel-connection-id: 1\r\n\
content-length: 0\r\n\
\r\n";

/// The exact 520-byte upgrade-mode request of the upgrade-mode capture.
const UPGRADE: &str = "GET /reverse_connections/request HTTP/1.1\r\n\
host: 127.0.0.1:19032\r\n\
connection: upgrade\r\n\
upgrade: reverse-tunnel\r\n\
x-envoy-reverse-tunnel-node-id: downstream-node\r\n\
x-envoy-reverse-tunnel-cluster-id: downstream-cluster\r\n\
x-envoy-reverse-tunnel-tenant-id: downstream-tenant\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\r\n\
x-envoy-reverse-tunnel-initiation-time: 1795316348778\r\n\
x-envoy-reverse-tunnel-worker-id: worker_0\r\n\
x-envoy-reverse-tunnel-connection-id: 0\r\n\
x-custom-auth: token-123\r\n\
content-length: 0\r\n\
\r\n";

fn rules() -> HandshakeRules {
    HandshakeRules::default()
}

/// BASE with the first occurrence of `from` replaced by `to` (asserting it occurs).
fn mutate(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

fn reject(buf: &[u8], rules: &HandshakeRules) -> Rejection {
    match evaluate(buf, rules) {
        Outcome::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn accept(buf: &[u8], rules: &HandshakeRules) -> HandshakeRequest {
    match evaluate(buf, rules) {
        Outcome::Accept(r) => r,
        other => panic!("expected accept, got {other:?}"),
    }
}

fn assert_reject(
    buf: &[u8],
    rules: &HandshakeRules,
    status: u16,
    body: &str,
    c: Option<Counter>,
) {
    let r = reject(buf, rules);
    assert_eq!(
        r.status,
        status,
        "status for {:?}",
        String::from_utf8_lossy(buf)
    );
    assert_eq!(r.body, body);
    assert_eq!(r.counter, c);
}

#[test]
fn baseline_is_448_bytes_and_accepted_with_all_fields() {
    assert_eq!(BASE.len(), 448);
    let req = accept(BASE.as_bytes(), &rules());
    assert_eq!(req.node_id, "downstream-node");
    assert_eq!(req.cluster_id, "downstream-cluster");
    assert_eq!(req.tenant_id, "downstream-tenant");
    assert_eq!(
        req.upstream_cluster_name.as_deref(),
        Some("upstream-cluster")
    );
    assert_eq!(req.initiation_time_ms, 1_795_315_930_843);
    assert_eq!(req.initiator_worker_id, "worker_0");
    assert_eq!(req.initiator_connection_id, "1");
    assert!(!req.upgrade);
    assert_eq!(req.request_len, 448);
    assert_eq!(req.headers.len(), 9);
    assert_eq!(
        req.headers[0],
        ("host".to_string(), "127.0.0.1:19011".to_string())
    );
    assert_eq!(req.header("Content-Length"), Some("0"));
}

#[test]
fn row_unparsable_is_codec_400() {
    let r = reject(b"HELLO WORLD\r\n\r\n", &rules());
    assert_eq!(
        (r.status, r.body.as_str(), r.counter),
        (400, "Bad Request", None)
    );
    let r = reject(b"\x00\x01\x02garbage", &rules());
    assert_eq!(r.status, 400);
    // An invalid header line in the baseline.
    let bad = mutate("host: 127", "ho st: 127");
    assert_reject(bad.as_bytes(), &rules(), 400, "Bad Request", None);
}

#[test]
fn row_http10_is_426_not_chunked() {
    let m = mutate("HTTP/1.1", "HTTP/1.0");
    let r = reject(m.as_bytes(), &rules());
    assert_eq!(
        (r.status, r.body.as_str(), r.counter),
        (426, "Upgrade Required", None)
    );
    assert!(!r.chunked);
    assert_eq!(
        r.to_wire(),
        b"HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\n\r\nUpgrade Required"
            .to_vec()
    );
}

#[test]
fn row_body_is_rejected() {
    let cl = mutate("content-length: 0", "content-length: 5");
    assert_reject(
        cl.as_bytes(),
        &rules(),
        400,
        BODY_REJECTED_TEXT,
        Some(Counter::BodyRejected),
    );
    let te = mutate("content-length: 0", "transfer-encoding: chunked");
    let te = format!("{te}5\r\nhello\r\n0\r\n\r\n");
    assert_reject(
        te.as_bytes(),
        &rules(),
        400,
        BODY_REJECTED_TEXT,
        Some(Counter::BodyRejected),
    );
    // The body check comes before method/path (order of the table).
    let both = cl.replacen("GET", "POST", 1);
    assert_reject(
        both.as_bytes(),
        &rules(),
        400,
        BODY_REJECTED_TEXT,
        Some(Counter::BodyRejected),
    );
}

#[test]
fn malformed_framing_is_codec_400() {
    for (from, to) in [
        ("content-length: 0", "content-length: abc"),
        (
            "content-length: 0",
            "content-length: 0\r\ncontent-length: 0",
        ),
        (
            "content-length: 0",
            "content-length: 0\r\ntransfer-encoding: chunked",
        ),
    ] {
        assert_reject(
            mutate(from, to).as_bytes(),
            &rules(),
            400,
            "Bad Request",
            None,
        );
    }
}

#[test]
fn row_method_or_path_is_404() {
    for m in [
        mutate("GET", "POST"),
        mutate(
            "/reverse_connections/request",
            "/reverse_connections/request?x=1",
        ),
        mutate(
            "/reverse_connections/request",
            "/reverse_connections/Request",
        ),
        mutate("/reverse_connections/request", "/"),
    ] {
        assert_reject(m.as_bytes(), &rules(), 404, NOT_A_TUNNEL_TEXT, None);
    }
    // Envoy's codec only knows upper-case methods: `get` is a codec-level 400, no counter
    // (observed against the built-in, integration/tests/conformance.rs).
    assert_reject(mutate("GET", "get").as_bytes(), &rules(), 400, "Bad Request", None);
    assert_reject(mutate("GET", "FOO").as_bytes(), &rules(), 400, "Bad Request", None);
    // Configured method and path.
    let custom = HandshakeRules {
        request_method: "POST".into(),
        request_path: "/rt".into(),
        ..rules()
    };
    accept(
        mutate("GET /reverse_connections/request", "POST /rt").as_bytes(),
        &custom,
    );
    assert_reject(BASE.as_bytes(), &custom, 404, NOT_A_TUNNEL_TEXT, None);
}

#[test]
fn row_upgrade_mode() {
    let up = HandshakeRules {
        use_http_upgrade: true,
        ..rules()
    };
    assert_eq!(UPGRADE.len(), 520);
    let req = accept(UPGRADE.as_bytes(), &up);
    assert!(req.upgrade);
    assert_eq!(accept_response(req.upgrade).len(), 82);
    assert_eq!(req.header("x-custom-auth"), Some("token-123"));
    // Case-insensitive value; only `upgrade` is required.
    accept(
        mutate("host:", "upgrade: Reverse-Tunnel\r\nhost:").as_bytes(),
        &up,
    );
    // Missing or wrong upgrade → 426 with `upgrade: reverse-tunnel`.
    for m in [
        BASE.to_string(),
        UPGRADE.replacen("upgrade: reverse-tunnel", "upgrade: websocket", 1),
    ] {
        let r = reject(m.as_bytes(), &up);
        assert_eq!((r.status, r.body.as_str()), (426, UPGRADE_REQUIRED_TEXT));
        assert_eq!(r.counter, Some(Counter::ParseError));
        assert!(r.chunked);
        assert_eq!(
            r.headers,
            vec![("upgrade".to_string(), "reverse-tunnel".to_string())]
        );
        let wire = String::from_utf8(r.to_wire()).unwrap_or_default();
        assert!(wire.starts_with(
            "HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\nupgrade: reverse-tunnel\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
    }
    // Not in upgrade mode, the upgrade request still gets a plain 200.
    assert!(!accept(UPGRADE.as_bytes(), &rules()).upgrade);
}

#[test]
fn row_missing_id_headers() {
    for h in [
        "x-envoy-reverse-tunnel-node-id",
        "x-envoy-reverse-tunnel-cluster-id",
        "x-envoy-reverse-tunnel-tenant-id",
    ] {
        let m = mutate(h, "x-other");
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            MISSING_HEADERS_TEXT,
            Some(Counter::ParseError),
        );
    }
}

#[test]
fn row_empty_tenant() {
    let m = mutate("tenant-id: downstream-tenant", "tenant-id:   ");
    assert_reject(
        m.as_bytes(),
        &rules(),
        400,
        EMPTY_TENANT_TEXT,
        Some(Counter::ParseError),
    );
    // Built-in order: an empty tenant wins over an empty node id.
    let m = m.replacen("node-id: downstream-node", "node-id:", 1);
    assert_reject(
        m.as_bytes(),
        &rules(),
        400,
        EMPTY_TENANT_TEXT,
        Some(Counter::ParseError),
    );
}

#[test]
fn row_isolation_delimiter() {
    let iso = HandshakeRules {
        tenant_isolation: true,
        ..rules()
    };
    accept(BASE.as_bytes(), &iso);
    for (from, to) in [
        ("node-id: downstream-node", "node-id: a:b"),
        ("cluster-id: downstream-cluster", "cluster-id: a:b"),
        ("tenant-id: downstream-tenant", "tenant-id: a:b"),
    ] {
        let m = mutate(from, to);
        assert_reject(
            m.as_bytes(),
            &iso,
            400,
            ISOLATION_DELIMITER_TEXT,
            Some(Counter::ParseError),
        );
        accept(m.as_bytes(), &rules());
    }
}

#[test]
fn row_required_cluster_name() {
    let req = HandshakeRules {
        required_cluster_name: Some("upstream-cluster".into()),
        ..rules()
    };
    accept(BASE.as_bytes(), &req);
    let missing = mutate("x-envoy-reverse-tunnel-upstream-cluster-name", "x-other");
    assert_reject(
        missing.as_bytes(),
        &req,
        400,
        MISSING_CLUSTER_NAME_TEXT,
        Some(Counter::ParseError),
    );
    accept(missing.as_bytes(), &rules());
    let other = mutate("name: upstream-cluster", "name: other");
    assert_reject(
        other.as_bytes(),
        &req,
        400,
        CLUSTER_MISMATCH_TEXT,
        Some(Counter::ValidationFailed),
    );
    let empty = mutate("name: upstream-cluster", "name:");
    assert_reject(
        empty.as_bytes(),
        &req,
        400,
        CLUSTER_MISMATCH_TEXT,
        Some(Counter::ValidationFailed),
    );
    // An empty required name disables the check.
    let none = HandshakeRules {
        required_cluster_name: Some(String::new()),
        ..rules()
    };
    accept(other.as_bytes(), &none);
}

#[test]
fn caller_rejections() {
    let r = Rejection::connection_limit(7);
    assert_eq!(
        (r.status, r.body.as_str(), r.counter),
        (429, "rejected", Some(Counter::Rejected))
    );
    assert_eq!(
        r.to_wire(),
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nretry-after: 7\r\ntransfer-encoding: chunked\r\n\r\n8\r\nrejected\r\n0\r\n\r\n".to_vec()
    );
    let r = Rejection::validation_failed();
    assert_eq!(
        (r.status, r.body.as_str(), r.counter),
        (403, "validation_failed", Some(Counter::ValidationFailed))
    );
    let r = Rejection::registration_unavailable();
    assert_eq!(
        (r.status, r.counter),
        (503, Some(Counter::RegistrationFailed))
    );
    assert_eq!(r.body, "Reverse tunnel registration unavailable");
    let r = Rejection::draining();
    assert_eq!((r.status, r.counter), (503, Some(Counter::Rejected)));
    assert_eq!(r.body, "Reverse tunnel responder is draining");
    assert!(String::from_utf8_lossy(&r.to_wire())
        .starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
}

#[test]
fn to_wire_chunk_size_is_hex_and_crlf_is_stripped() {
    let r = Rejection::new(400, MISSING_HEADERS_TEXT, Some(Counter::ParseError));
    let expect = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n27\r\n{MISSING_HEADERS_TEXT}\r\n0\r\n\r\n"
    );
    assert_eq!(MISSING_HEADERS_TEXT.len(), 0x27);
    assert_eq!(r.to_wire(), expect.into_bytes());
    let mut evil = Rejection::bad_request();
    evil.headers.push(("x\r\n".into(), "a\r\nb".into()));
    evil.body.clear();
    evil.status = 42;
    assert_eq!(
        evil.to_wire(),
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\nx: ab\r\ncontent-length: 0\r\n\r\n".to_vec()
    );
}

#[test]
fn accept_response_exact_bytes() {
    assert_eq!(
        accept_response(false),
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(accept_response(false).len(), 38);
    assert_eq!(
        accept_response(true),
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n"
    );
    assert_eq!(accept_response(true).len(), 82);
}

#[test]
fn split_delivery_one_byte_at_a_time() {
    let bytes = BASE.as_bytes();
    for n in 0..bytes.len() {
        assert_eq!(
            evaluate(&bytes[..n], &rules()),
            Outcome::NeedMore,
            "prefix {n}"
        );
    }
    assert_eq!(accept(bytes, &rules()).request_len, 448);
}

#[test]
fn header_limits_are_431() {
    // Too many headers.
    let many: String = (0..MAX_HEADERS).map(|i| format!("x-h{i}: v\r\n")).collect();
    let m = mutate(
        "content-length: 0\r\n",
        &format!("{many}content-length: 0\r\n"),
    );
    assert_reject(
        m.as_bytes(),
        &rules(),
        431,
        "Request Header Fields Too Large",
        None,
    );
    // Exactly the limit is fine (9 baseline headers + 91).
    let ok: String = (0..MAX_HEADERS - 9)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    accept(
        mutate(
            "content-length: 0\r\n",
            &format!("{ok}content-length: 0\r\n"),
        )
        .as_bytes(),
        &rules(),
    );
    // A head that is too big, complete or not.
    let big = mutate(
        "content-length: 0\r\n",
        &format!(
            "x-big: {}\r\ncontent-length: 0\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        ),
    );
    assert_reject(
        big.as_bytes(),
        &rules(),
        431,
        "Request Header Fields Too Large",
        None,
    );
    let partial = &big.as_bytes()[..MAX_HEADER_BYTES + 1];
    assert_reject(
        partial,
        &rules(),
        431,
        "Request Header Fields Too Large",
        None,
    );
    assert_eq!(
        evaluate(&big.as_bytes()[..MAX_HEADER_BYTES], &rules()),
        Outcome::NeedMore
    );
    // Small configured limits.
    let tiny = HandshakeRules {
        max_header_bytes: 100,
        ..rules()
    };
    assert_reject(
        BASE.as_bytes(),
        &tiny,
        431,
        "Request Header Fields Too Large",
        None,
    );
    let few = HandshakeRules {
        max_headers: 8,
        ..rules()
    };
    assert_reject(
        BASE.as_bytes(),
        &few,
        431,
        "Request Header Fields Too Large",
        None,
    );
    let zero = HandshakeRules {
        max_headers: 0,
        max_header_bytes: 0,
        ..rules()
    };
    assert_eq!(evaluate(b"", &zero), Outcome::NeedMore);
    assert_eq!(reject(BASE.as_bytes(), &zero).status, 431);
}

#[test]
fn improvement_empty_node_or_cluster() {
    for (from, to) in [
        ("node-id: downstream-node", "node-id: "),
        ("cluster-id: downstream-cluster", "cluster-id:\t"),
    ] {
        let m = mutate(from, to);
        assert_reject(
            m.as_bytes(),
            &rules(),
            400,
            EMPTY_NODE_OR_CLUSTER_TEXT,
            Some(Counter::ParseError),
        );
    }
}

#[test]
fn improvement_pipelined_bytes() {
    let m = format!("{BASE}RPING");
    assert_reject(
        m.as_bytes(),
        &rules(),
        400,
        PIPELINED_TEXT,
        Some(Counter::ParseError),
    );
    let m = format!("{BASE}{BASE}");
    assert_reject(
        m.as_bytes(),
        &rules(),
        400,
        PIPELINED_TEXT,
        Some(Counter::ParseError),
    );
}

#[test]
fn improvement_invalid_identifiers() {
    let long = "n".repeat(MAX_ID_BYTES + 1);
    let exact = "n".repeat(MAX_ID_BYTES);
    assert_eq!(
        accept(mutate("downstream-node", &exact).as_bytes(), &rules()).node_id,
        exact
    );
    let cases: Vec<Vec<u8>> = vec![
        mutate("downstream-node", &long).into_bytes(),
        mutate("downstream-node", "a\tb").into_bytes(),
        mutate("downstream-tenant", "t\u{00e9}")
            .replace_bytes("t\u{00e9}".as_bytes(), b"t\xff"),
    ];
    for c in cases {
        assert_reject(
            &c,
            &rules(),
            400,
            INVALID_ID_TEXT,
            Some(Counter::ParseError),
        );
    }
    // DEL and other control bytes never reach the id check: the parser (like Envoy's codec)
    // rejects them as a malformed header value.
    let del = mutate("downstream-cluster", "a\x7fb");
    assert_reject(del.as_bytes(), &rules(), 400, "Bad Request", None);
    // The id check itself still refuses them (defence in depth).
    assert_eq!(valid_id(b"a\x7fb"), None);
    assert_eq!(valid_id(b"a\x01b"), None);
    assert_eq!(valid_id(b"a b"), Some("a b".to_string()));
    // Spaces and UTF-8 are accepted, as in the built-in.
    let req = accept(
        mutate("downstream-node", "my n\u{00f6}de").as_bytes(),
        &rules(),
    );
    assert_eq!(req.node_id, "my n\u{00f6}de");
}

// Helper for the test above: byte-level replace on a Vec<u8>.
trait ReplaceBytes {
    fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}
impl ReplaceBytes for String {
    fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let b = self.into_bytes();
        match b.windows(from.len()).position(|w| w == from) {
            Some(i) => [&b[..i], to, &b[i + from.len()..]].concat(),
            None => panic!("pattern not found"),
        }
    }
}

#[test]
fn duplicates_first_wins_and_names_are_case_insensitive() {
    let dup = mutate(
        "content-length: 0",
        "x-envoy-reverse-tunnel-node-id: second\r\ncontent-length: 0",
    );
    let req = accept(dup.as_bytes(), &rules());
    assert_eq!(req.node_id, "downstream-node");
    let upper = BASE
        .replace(
            "x-envoy-reverse-tunnel-node-id",
            "X-Envoy-Reverse-Tunnel-Node-Id",
        )
        .replace(
            "x-envoy-reverse-tunnel-tenant-id",
            "X-ENVOY-REVERSE-TUNNEL-TENANT-ID",
        )
        .replace("content-length", "Content-Length");
    let req = accept(upper.as_bytes(), &rules());
    assert_eq!(req.node_id, "downstream-node");
    assert_eq!(req.tenant_id, "downstream-tenant");
    assert_eq!(req.headers[1].0, "x-envoy-reverse-tunnel-node-id");
}

#[test]
fn optional_fields_default() {
    let m = mutate(
        "x-envoy-reverse-tunnel-initiation-time: 1795315930843",
        "x-envoy-reverse-tunnel-initiation-time: soon",
    )
    .replacen("x-envoy-reverse-tunnel-connection-id", "x-other", 1)
    .replacen("x-envoy-reverse-tunnel-worker-id", "x-other2", 1)
    .replacen(
        "x-envoy-reverse-tunnel-upstream-cluster-name",
        "x-other3",
        1,
    );
    let req = accept(m.as_bytes(), &rules());
    assert_eq!(req.initiation_time_ms, 0);
    assert_eq!(req.initiator_connection_id, "");
    assert_eq!(req.initiator_worker_id, "");
    assert_eq!(req.upstream_cluster_name, None);
    let neg = mutate("1795315930843", "-5");
    assert_eq!(accept(neg.as_bytes(), &rules()).initiation_time_ms, -5);
}

#[test]
fn counter_names() {
    let names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "accepted",
            "parse_error",
            "validation_failed",
            "rejected",
            "timeout",
            "body_rejected",
            "registration_failed",
            "jwt_denied",
            "jwt_would_deny"
        ]
    );
    assert_eq!(Counter::JwtDenied.stat_name(), "reverse_tunnel.handshake.jwt_denied");
    let r = Rejection::jwt_denied();
    assert_eq!((r.status, r.body.as_str(), r.counter), (401, "JWT authentication failed", Some(Counter::JwtDenied)));
    assert!(r.to_wire().starts_with(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n"));
    assert_eq!(Counter::ParseError.stat_name(), "reverse_tunnel.handshake.parse_error");
    assert_eq!(Counter::RegistrationFailed.stat_name(), "reverse_tunnel.handshake.registration_failed");
}

fn check_outcome(buf: &[u8], rules: &HandshakeRules) -> Result<(), TestCaseError> {
    match evaluate(buf, rules) {
        Outcome::NeedMore => prop_assert!(buf.len() <= rules.max_header_bytes),
        Outcome::Accept(req) => {
            prop_assert_eq!(req.request_len, buf.len());
            prop_assert!(
                !req.node_id.is_empty()
                    && !req.cluster_id.is_empty()
                    && !req.tenant_id.is_empty()
            );
        }
        Outcome::Reject(r) => {
            let wire = r.to_wire();
            prop_assert!(wire.starts_with(b"HTTP/1.1 "));
            prop_assert!(
                [400u16, 404, 426, 431].contains(&r.status),
                "status {}",
                r.status
            );
            let status = wire.get(9..12).unwrap_or(&[]).to_vec();
            prop_assert_eq!(status, r.status.to_string().into_bytes());
        }
    }
    Ok(())
}

fn any_rules() -> impl Strategy<Value = HandshakeRules> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(up, iso, req)| HandshakeRules {
        use_http_upgrade: up,
        tenant_isolation: iso,
        required_cluster_name: req.then(|| "upstream-cluster".to_string()),
        ..HandshakeRules::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::core::fuzz_cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn prop_any_bytes(buf in proptest::collection::vec(any::<u8>(), 0..600), r in any_rules()) {
        check_outcome(&buf, &r)?;
    }

    #[test]
    fn prop_mutated_request(
        upgrade in any::<bool>(),
        cut in 0usize..600,
        edits in proptest::collection::vec((0usize..600, any::<u8>()), 0..4),
        r in any_rules(),
    ) {
        let mut buf = if upgrade { UPGRADE } else { BASE }.as_bytes().to_vec();
        for (pos, byte) in edits {
            if let Some(slot) = buf.get_mut(pos) {
                *slot = byte;
            }
        }
        buf.truncate(cut);
        check_outcome(&buf, &r)?;
    }
}
