//! Content-Length, the one parser for it (RFC 9110 §8.6). Every place that
//! reads a length — the guard's HTTP/1 framer, the head check for h2, the
//! edge reading a worker's response, the worker reading the edge's request,
//! and `start_response` checking the app's header — uses these two
//! functions, so they cannot drift apart (three of six once accepted `+5`).

/// One decimal length: digits only (no sign, no spaces), at most 19 of
/// them so it always fits a u64.
pub fn parse_one(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Why a Content-Length field is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLength {
    Invalid,
    Conflicting,
}

impl BadLength {
    /// The 400's reason, for the client and the log.
    pub fn reason(self) -> &'static str {
        match self {
            BadLength::Invalid => "invalid Content-Length",
            BadLength::Conflicting => "conflicting Content-Length values",
        }
    }
}

/// The length a request declares across all its Content-Length field
/// values (None: no such field). A list of equal values (`3, 3`, or the
/// field repeated) is that value, as RFC 9110 §8.6 allows a recipient to
/// accept; anything else is refused.
pub fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, BadLength> {
    let mut seen = None;
    for value in values {
        seen = Some(add_field(seen, value)?);
    }
    Ok(seen)
}

/// One more Content-Length field value, given the length the earlier ones
/// declared (for parsers that meet fields one at a time).
pub fn add_field(seen: Option<u64>, value: &[u8]) -> Result<u64, BadLength> {
    let mut seen = seen;
    for part in value.split(|&b| b == b',') {
        let n = parse_one(trim_ows(part)).ok_or(BadLength::Invalid)?;
        if seen.is_some_and(|m| m != n) {
            return Err(BadLength::Conflicting);
        }
        seen = Some(n);
    }
    seen.ok_or(BadLength::Invalid)
}

/// Optional whitespace (space, tab) off both ends.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_length_is_digits_only() {
        assert_eq!(parse_one(b"0"), Some(0));
        assert_eq!(parse_one(b"18446744073709551615"), None); // 20 digits
        assert_eq!(
            parse_one(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b" 5",
            b"5 ",
            b"0x10",
            b"1e3",
            b"\xff",
        ] {
            assert_eq!(parse_one(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lists_and_repeats_must_agree() {
        let cl = |vs: &[&[u8]]| content_length(vs.iter().copied());
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&[b" 3 "]), Ok(Some(3)));
        assert_eq!(cl(&[b"3, 3", b"3"]), Ok(Some(3)));
        assert_eq!(cl(&[b"3, 4"]), Err(BadLength::Conflicting));
        assert_eq!(cl(&[b"3", b"4"]), Err(BadLength::Conflicting));
        assert_eq!(cl(&[b"3,"]), Err(BadLength::Invalid));
        assert_eq!(cl(&[b"+3"]), Err(BadLength::Invalid));
    }
}
