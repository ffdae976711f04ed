//! `Range: bytes=…` for static files (RFC 9110 §14). A single range is
//! served as 206; several ranges are answered with the whole file (200),
//! which RFC 9110 allows and which avoids multipart/byteranges' cost and
//! its history of abuse (overlapping-range amplification).

#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range header: send the whole representation.
    Whole,
    /// Inclusive byte positions.
    Single(u64, u64),
    /// Syntactically valid but outside the file: 416.
    Unsatisfiable,
}

pub fn parse(header: &str, size: u64) -> Ranges {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ranges::Whole; // other units are ignored (RFC 9110 §14.2)
    };
    let parts: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 1 {
        return Ranges::Whole;
    }
    let Some((first, last)) = parts[0].split_once('-') else {
        return Ranges::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(n) if n > 0 && size > 0 => Ranges::Single(size.saturating_sub(n), size - 1),
            Some(_) => Ranges::Unsatisfiable,
            None => Ranges::Whole,
        },
        (start, "") => match num(start) {
            Some(s) if s < size => Ranges::Single(s, size - 1),
            Some(_) => Ranges::Unsatisfiable,
            None => Ranges::Whole,
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s <= e && s < size => Ranges::Single(s, e.min(size - 1)),
            (Some(s), Some(e)) if s <= e => Ranges::Unsatisfiable,
            _ => Ranges::Whole, // last < first: invalid, ignore the header
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-99", 1000), Ranges::Single(0, 99));
        assert_eq!(parse("bytes=900-", 1000), Ranges::Single(900, 999));
        assert_eq!(parse("bytes=-100", 1000), Ranges::Single(900, 999));
        assert_eq!(parse("bytes=-5000", 1000), Ranges::Single(0, 999));
        assert_eq!(parse("bytes=990-2000", 1000), Ranges::Single(990, 999));
        assert_eq!(parse("bytes=1000-", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=2000-3000", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,5-6", 1000), Ranges::Whole);
        assert_eq!(parse("bytes=5-1", 1000), Ranges::Whole);
        assert_eq!(parse("items=0-1", 1000), Ranges::Whole);
        assert_eq!(parse("bytes=a-b", 1000), Ranges::Whole);
        assert_eq!(parse("bytes=+1-2", 1000), Ranges::Whole);
    }
}
