//! Validators and preconditions for static files (RFC 9110 §13): strong
//! ETags and Last-Modified, evaluated in the RFC's order.

use std::time::SystemTime;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    NotModified,
    PreconditionFailed,
}

pub struct Request<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub is_get_or_head: bool,
}

/// RFC 9110 §13.2.2: the order of evaluation.
pub fn evaluate(req: &Request, etag: &str, modified: SystemTime) -> Outcome {
    let modified = truncate(modified);
    if let Some(im) = req.if_match {
        if !matches_any(im, etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(ius) = req.if_unmodified_since {
        if let Ok(t) = httpdate::parse_http_date(ius) {
            if modified > t {
                return Outcome::PreconditionFailed;
            }
        }
    }
    if let Some(inm) = req.if_none_match {
        if matches_any(inm, etag, false) {
            return if req.is_get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if let Some(ims) = req.if_modified_since {
        if req.is_get_or_head {
            if let Ok(t) = httpdate::parse_http_date(ims) {
                if modified <= t {
                    return Outcome::NotModified;
                }
            }
        }
    }
    Outcome::Proceed
}

/// `If-Range`: a strong ETag equal to ours, or exactly our Last-Modified.
pub fn if_range_matches(value: &str, etag: &str, modified: SystemTime) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        return value == etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|t| t == truncate(modified))
}

/// Whether a header value (`*` or a list of entity tags) matches `etag`.
/// Strong comparison for If-Match, weak for If-None-Match.
fn matches_any(list: &str, etag: &str, strong: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    list.split(',').map(str::trim).any(|tag| {
        if strong {
            !tag.starts_with("W/") && tag == etag
        } else {
            tag.trim_start_matches("W/") == ours
        }
    })
}

/// HTTP dates have whole seconds.
fn truncate(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req<'a>() -> Request<'a> {
        Request {
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
            is_get_or_head: true,
        }
    }

    #[test]
    fn validators() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(t);
        let tag = "\"abc\"";
        let mut r = req();
        r.if_none_match = Some("\"x\", W/\"abc\"");
        assert_eq!(evaluate(&r, tag, t), Outcome::NotModified);
        r.if_none_match = Some("*");
        assert_eq!(evaluate(&r, tag, t), Outcome::NotModified);
        let mut r = req();
        r.if_modified_since = Some(&date);
        assert_eq!(evaluate(&r, tag, t), Outcome::NotModified);
        assert_eq!(
            evaluate(&r, tag, t + Duration::from_secs(5)),
            Outcome::Proceed
        );
        let mut r = req();
        r.if_match = Some("W/\"abc\"");
        assert_eq!(evaluate(&r, tag, t), Outcome::PreconditionFailed);
        r.if_match = Some("\"abc\"");
        assert_eq!(evaluate(&r, tag, t), Outcome::Proceed);
        let mut r = req();
        r.if_unmodified_since = Some(&date);
        assert_eq!(
            evaluate(&r, tag, t + Duration::from_secs(9)),
            Outcome::PreconditionFailed
        );
        assert!(if_range_matches(tag, tag, t));
        assert!(if_range_matches(&date, tag, t));
        assert!(!if_range_matches("W/\"abc\"", tag, t));
    }
}
