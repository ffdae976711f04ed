//! Dynamic compression of app responses (gzip, brotli, zstd), done by
//! pingora's downstream compression module and gated per response by
//! `[compression]`: only listed content types, only above `min_size`,
//! never for ranges or already-encoded bodies, always with Vary.

use crate::config::schema::Compression;
use pingora_core::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora_core::modules::http::HttpModules;
use pingora_proxy::Session;

pub fn init_modules(modules: &mut HttpModules, cfg: &Compression) {
    if cfg.enabled {
        modules.add_module(ResponseCompressionBuilder::enable(cfg.level));
    }
}

/// Turns compression off for this response.
pub fn disable(session: &mut Session) {
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_level(0);
    }
}

/// Applies `[compression]` rules to an app response before its header is
/// written. `len` is the body length when known.
pub fn decide(
    session: &mut Session,
    cfg: &Compression,
    status: u16,
    headers: &[(String, Vec<u8>)],
    len: Option<u64>,
) {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let content_type = get("content-type").unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let wanted = cfg.enabled
        && status >= 200
        && !matches!(status, 204 | 206 | 304)
        && get("content-encoding").is_none()
        && get("content-range").is_none()
        && len.is_none_or(|n| n >= cfg.min_size.0)
        && cfg.types.iter().any(|t| t.eq_ignore_ascii_case(&essence));
    if !wanted {
        disable(session);
    }
}

/// pingora's compressor takes the first coding a client lists and ignores
/// q-values (even `q=0`, "never send me this"). Before it reads the header,
/// rewrite Accept-Encoding to the codings we can produce, best first, with
/// refused ones removed; the q-values stay so static file selection can
/// still weigh them.
pub fn normalize_accept_encoding(session: &mut Session) {
    let headers = &session.req_header().headers;
    let Some(value) = headers.get(http::header::ACCEPT_ENCODING) else {
        return;
    };
    let Ok(value) = value.to_str() else { return };
    if value == "gzip" {
        return; // the common case, already unambiguous
    }
    let ranked = super::static_files::accepted_encodings_with_q(value);
    let rewritten: Vec<String> = ranked
        .iter()
        .map(|(coding, q)| format!("{coding};q={}", format_q(*q)))
        .collect();
    let req = session.req_header_mut();
    if rewritten.is_empty() {
        req.remove_header(&http::header::ACCEPT_ENCODING);
    } else {
        let _ = req.insert_header(http::header::ACCEPT_ENCODING, rewritten.join(", "));
    }
}

fn format_q(q: f32) -> String {
    // A q the client gave as above 0 stays above 0 (q=0.0001 is still
    // "acceptable", q=0 is "not"): three decimals at most, so 0.001.
    let q = if q > 0.0 { q.clamp(0.001, 1.0) } else { 0.0 };
    let s = format!("{q:.3}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::format_q;

    #[test]
    fn q_values_keep_their_meaning_when_written_back() {
        assert_eq!(format_q(1.0), "1.0");
        assert_eq!(format_q(0.5), "0.5");
        assert_eq!(format_q(0.25), "0.25");
        assert_eq!(format_q(0.0), "0.0");
        // Acceptable, however little: never written as "not acceptable".
        assert_eq!(format_q(0.0001), "0.001");
    }
}
