//! Id format strings of the handshake filter's `validation` block: `node_id_format`,
//! `cluster_id_format` and `tenant_id_format` (docs/protocol.md#filter-config, "`Validation`").
//!
//! Each is an Envoy substitution format string evaluated against the handshake request and the
//! connection. The handshake passes a check only when the rendered value equals the id the
//! initiator sent; **a result that is empty or `-` fails closed** (403 `validation_failed`,
//! docs/protocol.md#handshake-response), see [`check`].
//!
//! Supported grammar (a subset of Envoy's substitution formatter):
//! - literal text; `%%` is a literal `%`;
//! - `%REQ(name)%`: first value of request header `name` (case-insensitive), `-` when absent
//!   (Envoy's rendering of a missing value); `%REQ(name?alt)%` falls back to header `alt`;
//!   `%REQ(name):N%` keeps at most the first `N` characters;
//! - `%DOWNSTREAM_PEER_URI_SAN%` / `%DOWNSTREAM_PEER_DNS_SAN%`: the peer certificate's URI / DNS
//!   SANs joined with `,`, `-` when there are none;
//! - `%DYNAMIC_METADATA(namespace:key[:key...])%` with an optional `:N` length: a value of the
//!   connection's dynamic metadata known at check time, that is the verified JWT claims under
//!   their namespace (docs/protocol.md#jwt-on-the-handshake); nested keys walk into JSON objects;
//!   `-` when absent. Values render as [`crate::core::jwt::claim_text`] does.
//!
//! Anything else is refused by [`parse`] with an error naming the operator, e.g.
//! `unsupported command operator '%FOO%'`. Pure code: no panics on any input.

use crate::core::format_string::{self, FormatError, Piece};

/// A parsed id format string (see the module docs for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdFormat {
    parts: Vec<Part>,
}

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text (with `%%` already turned into `%`).
    Literal(String),
    /// `%REQ(main?alt):max%`; names stored lower-case.
    Req {
        main: String,
        alt: Option<String>,
        max_len: Option<usize>,
    },
    /// `%DOWNSTREAM_PEER_URI_SAN%`.
    PeerUriSan,
    /// `%DOWNSTREAM_PEER_DNS_SAN%`.
    PeerDnsSan,
    /// `%DYNAMIC_METADATA(ns:key:...)%` with an optional `:N` length.
    DynamicMetadata {
        namespace: String,
        path: Vec<String>,
        max_len: Option<usize>,
    },
}

/// What a format string is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct FormatContext<'a> {
    /// Request headers in arrival order: lower-case name, value (as in
    /// `HandshakeRequest::headers`). The first value of a name wins.
    pub headers: &'a [(String, String)],
    /// URI SANs of the peer certificate (empty without TLS or certificate).
    pub peer_uri_sans: &'a [String],
    /// DNS SANs of the peer certificate (empty without TLS or certificate).
    pub peer_dns_sans: &'a [String],
    /// Dynamic metadata known at check time: (namespace, its fields), e.g. the verified JWT
    /// claims under their namespace. Empty without JWT.
    pub dynamic_metadata: &'a [(&'a str, &'a serde_json::Map<String, serde_json::Value>)],
}

/// The value Envoy renders for a missing field.
const MISSING: &str = "-";

/// Parses a format string.
///
/// Errors (the message is meant for a config error log line):
/// - `unsupported command operator '%FOO%'` for any operator other than the supported ones;
/// - `unterminated command operator at byte N` when a `%` has no closing `%`;
/// - `invalid REQ(...) ...` for an empty header name, a missing `)` or a bad `:N` length.
pub fn parse(fmt: &str) -> Result<IdFormat, FormatError> {
    let parts = format_string::split(fmt, parse_command)?
        .into_iter()
        .map(|p| match p {
            Piece::Literal(s) => Part::Literal(s),
            Piece::Op(part) => part,
        })
        .collect();
    Ok(IdFormat { parts })
}

/// Parses the text between two `%` (the command operator without its delimiters).
fn parse_command(command: &str) -> Result<Part, String> {
    match command {
        "DOWNSTREAM_PEER_URI_SAN" => return Ok(Part::PeerUriSan),
        "DOWNSTREAM_PEER_DNS_SAN" => return Ok(Part::PeerDnsSan),
        _ => {}
    }
    if let Some(rest) = command.strip_prefix("DYNAMIC_METADATA(") {
        return parse_dynamic_metadata(command, rest);
    }
    let Some(arg_and_len) = command.strip_prefix("REQ(") else {
        return Err(format!("unsupported command operator '%{command}%'"));
    };
    let close = arg_and_len
        .find(')')
        .ok_or_else(|| format!("invalid REQ(...) in '%{command}%': missing ')'"))?;
    let arg = &arg_and_len[..close];
    let max_len = parse_max_len("REQ", command, &arg_and_len[close + 1..])?;
    let (main, alt) = match arg.split_once('?') {
        Some((m, a)) => (m, Some(a)),
        None => (arg, None),
    };
    let valid = |n: &str| !n.is_empty() && !n.contains(char::is_whitespace) && !n.contains('?');
    if !valid(main) || !alt.map(valid).unwrap_or(true) {
        return Err(format!(
            "invalid REQ(...) in '%{command}%': bad header name"
        ));
    }
    Ok(Part::Req {
        main: main.to_ascii_lowercase(),
        alt: alt.map(|a| a.to_ascii_lowercase()),
        max_len,
    })
}

/// The optional `:N` (maximum length) after operator `op`'s closing parenthesis: `tail` is what
/// follows it in `command`.
fn parse_max_len(op: &str, command: &str, tail: &str) -> Result<Option<usize>, String> {
    if tail.is_empty() {
        return Ok(None);
    }
    let digits = tail
        .strip_prefix(':')
        .ok_or_else(|| format!("invalid {op}(...) in '%{command}%': unexpected '{tail}'"))?;
    let n = digits.parse::<usize>().map_err(|_| format!("invalid {op}(...) in '%{command}%': bad length '{digits}'"))?;
    Ok(Some(n))
}

/// Parses the part of `%DYNAMIC_METADATA(ns:key[:key...])[:N]%` after `DYNAMIC_METADATA(`.
fn parse_dynamic_metadata(command: &str, rest: &str) -> Result<Part, String> {
    let close = rest
        .find(')')
        .ok_or_else(|| format!("invalid DYNAMIC_METADATA(...) in '%{command}%': missing ')'"))?;
    let max_len = parse_max_len("DYNAMIC_METADATA", command, &rest[close + 1..])?;
    let mut pieces = rest[..close].split(':');
    let namespace = pieces.next().unwrap_or("").to_string();
    let path: Vec<String> = pieces.map(str::to_string).collect();
    if namespace.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
        return Err(format!(
            "invalid DYNAMIC_METADATA(...) in '%{command}%': expected namespace:key"
        ));
    }
    Ok(Part::DynamicMetadata { namespace, path, max_len })
}

/// First value of header `name` (case-insensitive), if present.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// SANs joined with `,`, or `-` when there are none.
fn join_sans(sans: &[String]) -> String {
    if sans.is_empty() {
        MISSING.to_string()
    } else {
        sans.join(",")
    }
}

impl IdFormat {
    /// Renders the format against `ctx`. Never fails: missing values render as `-`.
    pub fn render(&self, ctx: &FormatContext) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::PeerUriSan => out.push_str(&join_sans(ctx.peer_uri_sans)),
                Part::PeerDnsSan => out.push_str(&join_sans(ctx.peer_dns_sans)),
                Part::DynamicMetadata { namespace, path, max_len } => {
                    let value = ctx
                        .dynamic_metadata
                        .iter()
                        .find(|(ns, _)| *ns == namespace.as_str())
                        .and_then(|(_, fields)| {
                            let mut v = fields.get(&path[0])?;
                            for key in &path[1..] {
                                v = v.get(key)?;
                            }
                            Some(crate::core::jwt::claim_text(v))
                        });
                    match (value, max_len) {
                        (None, _) => out.push_str(MISSING),
                        (Some(v), Some(n)) => out.extend(v.chars().take(*n)),
                        (Some(v), None) => out.push_str(&v),
                    }
                }
                Part::Req { main, alt, max_len } => {
                    let value = header(ctx.headers, main)
                        .or_else(|| alt.as_deref().and_then(|a| header(ctx.headers, a)));
                    match value {
                        None => out.push_str(MISSING),
                        Some(v) => match max_len {
                            Some(n) => out.extend(v.chars().take(*n)),
                            None => out.push_str(v),
                        },
                    }
                }
            }
        }
        out
    }
}

/// True when the id check passes: `rendered` is non-empty, not `-`, and equal (byte for byte,
/// case-sensitive) to `actual_id`, the id the initiator sent. A result that is empty or `-`
/// fails closed even if the initiator's id is itself empty or `-` (docs/protocol.md#filter-config).
pub fn check(rendered: &str, actual_id: &str) -> bool {
    !rendered.is_empty() && rendered != MISSING && rendered == actual_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn render_with(fmt: &str, headers: &[(String, String)], uri: &[&str], dns: &[&str]) -> String {
        let uri: Vec<String> = uri.iter().map(|s| s.to_string()).collect();
        let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let ctx = FormatContext {
            headers,
            peer_uri_sans: &uri,
            peer_dns_sans: &dns,
            dynamic_metadata: &[],
        };
        parse(fmt).expect("valid format").render(&ctx)
    }

    #[test]
    fn literal_and_percent_escape() {
        assert_eq!(render_with("node-1", &[], &[], &[]), "node-1");
        assert_eq!(render_with("100%%", &[], &[], &[]), "100%");
        assert_eq!(render_with("", &[], &[], &[]), "");
    }

    #[test]
    fn req_first_value_case_insensitive() {
        let h = hdrs(&[("x-node", "a"), ("x-node", "b")]);
        assert_eq!(render_with("%REQ(X-Node)%", &h, &[], &[]), "a");
        assert_eq!(
            render_with("pre-%REQ(x-node)%-post", &h, &[], &[]),
            "pre-a-post"
        );
    }

    #[test]
    fn req_missing_is_dash_and_alt_fallback() {
        let h = hdrs(&[("x-b", "bee")]);
        assert_eq!(render_with("%REQ(x-a)%", &h, &[], &[]), "-");
        assert_eq!(render_with("%REQ(x-a?x-b)%", &h, &[], &[]), "bee");
    }

    #[test]
    fn req_truncation() {
        let h = hdrs(&[("x-a", "abcdef")]);
        assert_eq!(render_with("%REQ(x-a):3%", &h, &[], &[]), "abc");
        assert_eq!(render_with("%REQ(x-a):30%", &h, &[], &[]), "abcdef");
        assert_eq!(render_with("%REQ(x-a):0%", &h, &[], &[]), "");
    }

    #[test]
    fn peer_sans() {
        assert_eq!(render_with("%DOWNSTREAM_PEER_URI_SAN%", &[], &[], &[]), "-");
        assert_eq!(
            render_with(
                "%DOWNSTREAM_PEER_URI_SAN%",
                &[],
                &["spiffe://a", "spiffe://b"],
                &[]
            ),
            "spiffe://a,spiffe://b"
        );
        assert_eq!(
            render_with("%DOWNSTREAM_PEER_DNS_SAN%", &[], &[], &["n1.example"]),
            "n1.example"
        );
    }

    #[test]
    fn errors_name_the_operator() {
        assert_eq!(
            parse("%FOO%").unwrap_err().0,
            "unsupported command operator '%FOO%'"
        );
        assert!(parse("%DYNAMIC_METADATA(a)%").unwrap_err().0.contains("expected namespace:key"));
        assert!(parse("%DYNAMIC_METADATA(a:)%").is_err());
        assert!(parse("%DYNAMIC_METADATA(a:b%").is_err());
        assert!(parse("%DYNAMIC_METADATA(a:b):x%").is_err());
        assert!(parse("abc%REQ(x").unwrap_err().0.contains("unterminated"));
        assert!(parse("%REQ()%").is_err());
        assert!(parse("%REQ(x):y%").is_err());
        assert!(parse("%REQ(x)y%").is_err());
    }

    #[test]
    fn dynamic_metadata_from_claims() {
        let claims = serde_json::json!({"sub": "node-1", "exp": 17, "org": {"site": "lyon"}, "n": null});
        let claims = claims.as_object().cloned().unwrap_or_default();
        let md = [("envoy.filters.network.reverse_tunnel.jwt", &claims)];
        let render = |fmt: &str| {
            let ctx = FormatContext { headers: &[], peer_uri_sans: &[], peer_dns_sans: &[], dynamic_metadata: &md };
            parse(fmt).expect("valid format").render(&ctx)
        };
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub)%"), "node-1");
        assert_eq!(render("n-%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:exp)%"), "n-17");
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:org:site)%"), "lyon");
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub):4%"), "node");
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:nope)%"), "-");
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:n)%"), "-");
        assert_eq!(render("%DYNAMIC_METADATA(other.ns:sub)%"), "-");
        assert_eq!(render("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub:x)%"), "-");
        // Without claims (no JWT, or a failed token in audit mode) the check fails closed.
        let empty = FormatContext { headers: &[], peer_uri_sans: &[], peer_dns_sans: &[], dynamic_metadata: &[] };
        let f = parse("%DYNAMIC_METADATA(envoy.filters.network.reverse_tunnel.jwt:sub)%").expect("valid");
        assert!(!check(&f.render(&empty), "-"));
    }

    #[test]
    fn check_fails_closed() {
        assert!(check("node-1", "node-1"));
        assert!(!check("node-1", "node-2"));
        assert!(!check("Node-1", "node-1"));
        assert!(!check("-", "-"));
        assert!(!check("", ""));
    }

    proptest! {
        #[test]
        fn parse_and_render_never_panic(fmt in ".{0,64}", v in ".{0,16}") {
            let h = vec![("x-a".to_string(), v.clone())];
            if let Ok(f) = parse(&fmt) {
                let claims = serde_json::json!({"sub": v.clone(), "o": {"k": 1}});
                let claims = claims.as_object().cloned().unwrap_or_default();
                let md = [("ns", &claims)];
                let ctx = FormatContext { headers: &h, peer_uri_sans: &[], peer_dns_sans: &[], dynamic_metadata: &md };
                let _ = f.render(&ctx);
            }
        }

        #[test]
        fn percent_heavy_inputs_never_panic(fmt in "[%()?:A-Z0-9a-z_-]{0,40}") {
            let _ = parse(&fmt);
        }
    }
}
