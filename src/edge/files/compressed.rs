//! Static files compressed by the edge, as nginx's `gzip on` does for the
//! listed types: a file without a precompressed sibling, of a type in
//! `[compression] types` and between `min_size` and 4 MiB, goes compressed
//! (br, zstd or gzip, as the client prefers) to a client that takes it.
//! Each version of a file is compressed once, off the async threads, and
//! kept in the files cache beside the plain bytes; a changed file is
//! compressed again. Range requests get the plain file (as from nginx).
//!
//! Why: most sites ship CSS and JavaScript without `.br`/`.gz` siblings
//! (Django's collectstatic makes none), and an nginx user's `gzip on`
//! compressed them; served plain they cost browsers several times the bytes.

use super::cache::{self, Entry};
use super::mount_dir::FileMeta;
use super::StaticMount;
use crate::config::schema::Compression;
use crate::edge::compression::{self, Coding, Encoder};
use crate::edge::state::EdgeState;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;
use std::path::Path;
use std::sync::Arc;

/// Larger files go out plain: compressing one would hold a blocking thread
/// for long, and its result would crowd the cache.
const MAX_ORIGINAL: u64 = 4 << 20;

/// Whether this file may go compressed to some client: then every answer
/// for it varies by Accept-Encoding.
pub fn eligible(cfg: &Compression, original: &Path, meta: &FileMeta) -> bool {
    cfg.enabled
        && (cfg.min_size.0..=MAX_ORIGINAL).contains(&meta.len())
        && compression::listed_type(cfg, super::type_named(original).as_bytes())
}

/// The compressed version for this request, if its client takes one: from
/// the cache, else made now. `path` is `original` under the mount's folder
/// (the cache's key). None also when the file changed under us or compressing does not
/// make it smaller (it goes out plain then).
pub async fn entry(
    st: &EdgeState,
    session: &Session,
    sm: &StaticMount,
    cfg: &Compression,
    original: &Path,
    path: &Path,
    meta: &FileMeta,
) -> Option<(&'static str, Arc<Entry>)> {
    if session
        .req_header()
        .headers
        .contains_key(http::header::RANGE)
    {
        return None;
    }
    let coding = compression::choose(session.req_header())?;
    let token = coding.token();
    if let Some(hit) = st.files_cache.get(path, Some(token), meta) {
        return Some((token, hit));
    }
    let file = super::open_found(sm, original, meta).ok()?;
    let level = cfg.level;
    let made = tokio::task::spawn_blocking(move || compress(&file, coding, level));
    let body = made.await.ok()?.ok()?;
    if body.len() as u64 >= meta.len() {
        return None;
    }
    let mut facts = super::facts_of(original, meta, Some(token)).ok()?;
    facts.content_length = body.len().into();
    let entry = Arc::new(Entry::new(facts, body));
    st.files_cache
        .put_compressed(path, token, meta, entry.clone());
    Some((token, entry))
}

/// The whole file, read and compressed in one go.
fn compress(mut file: &std::fs::File, coding: Coding, level: u32) -> std::io::Result<Bytes> {
    use std::io::Read;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let mut encoder = Encoder::new(coding, level)?;
    let mut out = BytesMut::from(&encoder.push(&data, false)?[..]);
    out.extend_from_slice(&encoder.finish()?);
    Ok(out.freeze())
}

/// The cache keeps compressed versions no larger than the files it keeps.
const _: () = assert!(MAX_ORIGINAL >= cache::MAX_FILE);
