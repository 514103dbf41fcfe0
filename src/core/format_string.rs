//! Envoy substitution format strings, split into literal text and `%COMMAND%` operators; shared
//! by the handshake id formats ([`super::idformat`]) and the lifecycle access log
//! ([`super::accesslog`]), which each parse the operators they support.

/// A format string that cannot be used; the message names the offending operator or byte
/// position (it is meant for a config error log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece<T> {
    /// Literal text, with `%%` already turned into `%`; never empty.
    Literal(String),
    /// A parsed command operator.
    Op(T),
}

/// Splits `fmt` into pieces, parsing each command (the text between its two `%`) with
/// `parse_op`.
///
/// Errors: `unterminated command operator at byte N` when a `%` has no closing `%`, or the
/// error of `parse_op`.
pub fn split<T>(fmt: &str, mut parse_op: impl FnMut(&str) -> Result<T, String>) -> Result<Vec<Piece<T>>, FormatError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = fmt;
    let mut offset = 0usize;
    while let Some(pos) = rest.find('%') {
        literal.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            literal.push('%');
            offset += pos + 2;
            rest = stripped;
            continue;
        }
        let end = command_end(after)
            .ok_or_else(|| FormatError(format!("unterminated command operator at byte {}", offset + pos)))?;
        let op = parse_op(&after[..end]).map_err(FormatError)?;
        if !literal.is_empty() {
            parts.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Piece::Op(op));
        offset += pos + 1 + end + 1;
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Piece::Literal(literal));
    }
    Ok(parts)
}

/// Index of the `%` closing the command that starts at `s[0]`; a `%` inside `(...)` (e.g. a
/// `START_TIME` format) does not close it.
fn command_end(s: &str) -> Option<usize> {
    let mut depth = 0u32;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_escapes_and_operators() {
        let p = split("a%%b%X(1%)%c%Y%", |c| Ok::<_, String>(c.to_string())).unwrap();
        assert_eq!(
            p,
            vec![Piece::Literal("a%b".into()), Piece::Op("X(1%)".into()), Piece::Literal("c".into()), Piece::Op("Y".into())]
        );
        assert_eq!(split("ab%C", |c| Ok::<_, String>(c.to_string())).unwrap_err().0, "unterminated command operator at byte 2");
        assert_eq!(split("%BAD%", |c| Err::<(), _>(format!("no {c}"))).unwrap_err(), FormatError("no BAD".into()));
        assert!(split("", |c| Ok::<_, String>(c.to_string())).unwrap().is_empty());
    }
}
