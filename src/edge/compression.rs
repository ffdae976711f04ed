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
