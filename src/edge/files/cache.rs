//! Contents of small static files kept in memory, so the hot path of a
//! static request never leaves the async thread, together with the header
//! values derived from the file (ETag, Last-Modified, Content-Type), so they
//! are not formatted again for every request.
//!
//! Why: reading a file is the one step of a static request that goes to
//! tokio's blocking pool, and that trip (two thread wake-ups) cost more than
//! everything else the edge does for a 4 KiB file. An entry is used only
//! while the file's fresh metadata (looked at for each burst of requests,
//! `burst.rs`, where nginx does a `stat` per request) still matches what it
//! was read with: same inode, size, modification and change times. So a
//! replaced or edited file is served as soon as a request comes after the
//! change.

use crate::edge::files::mount_dir::FileMeta;
use bytes::Bytes;
use http::HeaderValue;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Files up to this size are cached.
pub const MAX_FILE: u64 = 256 * 1024;
/// Total bytes held; past it the cache starts over (cheap, and bounded).
const MAX_TOTAL: usize = 64 << 20;

/// What a response for one version of a file needs besides its bytes.
/// Cloning the values is a reference count, not a copy.
#[derive(Clone)]
pub struct Facts {
    pub modified: SystemTime,
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    pub content_type: HeaderValue,
    /// The whole file's length (ranges set their own).
    pub content_length: HeaderValue,
}

/// A small file, ready to send.
pub struct Entry {
    pub facts: Facts,
    pub body: Bytes,
    /// The head of a whole-file 200, built on first use for the mount
    /// (by its id) that first served it.
    pub head: std::sync::OnceLock<(u64, Head)>,
}

/// A whole-file 200's head, made once: the usual answer then costs no
/// header insertions, and over HTTP/1 not even a header map.
#[derive(Clone)]
pub struct Head {
    /// Its fields as HTTP/1 lines, written as they are
    /// (`reply::prepared`).
    pub wire: Bytes,
    /// As a header (HTTP/2), cloned for each answer.
    pub header: pingora_http::ResponseHeader,
}

impl Entry {
    pub fn new(facts: Facts, body: Bytes) -> Self {
        Entry {
            facts,
            body,
            head: std::sync::OnceLock::new(),
        }
    }
}

/// Per file, an entry per Content-Encoding it is sent with: `a.css.gz`
/// sent as the gzip of `a.css` has another type and ETag than `a.css.gz`
/// asked for by name.
/// A version is a `FileMeta`: same inode, size, modification and change
/// times, the same file.
type Variants = Vec<(Option<&'static str>, FileMeta, Arc<Entry>)>;

/// Small static files by path, up to `MAX_TOTAL` bytes in all. Owned by
/// the edge state; read and filled by `files` only.
#[derive(Default)]
pub struct Cache(Mutex<Files>, std::sync::atomic::AtomicU64);

/// Keyed by the path's bytes: `Path` hashes component by component, which
/// cost more than the rest of a lookup.
#[derive(Default)]
struct Files {
    files: HashMap<OsString, Variants>,
    total: usize,
}

impl Cache {
    /// The cached entry for `path` sent with `encoding`, if it was made from
    /// the file `meta` describes.
    pub fn get(
        &self,
        path: &Path,
        encoding: Option<&'static str>,
        meta: &FileMeta,
    ) -> Option<Arc<Entry>> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache
            .files
            .get(path.as_os_str())?
            .iter()
            .find(|(enc, of, _)| *enc == encoding && of == meta)
            .map(|(_, _, entry)| entry.clone());
        if hit.is_some() {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        hit
    }

    /// An entry served again without a lookup (`files::replay`).
    pub fn count_hit(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Responses served from the cache so far (for the metrics).
    pub fn hits(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers `entry` as made from the file `meta` describes.
    pub fn put(
        &self,
        path: &Path,
        encoding: Option<&'static str>,
        meta: &FileMeta,
        entry: Arc<Entry>,
    ) {
        if entry.body.len() as u64 != meta.len() || meta.len() > MAX_FILE {
            return;
        }
        self.insert(path, encoding, meta, entry);
    }

    /// Remembers `entry`, the file `meta` describes compressed by the edge
    /// (`files::compressed`): its bytes are fewer than the file's.
    pub fn put_compressed(
        &self,
        path: &Path,
        encoding: &'static str,
        meta: &FileMeta,
        entry: Arc<Entry>,
    ) {
        self.insert(path, Some(encoding), meta, entry);
    }

    fn insert(
        &self,
        path: &Path,
        encoding: Option<&'static str>,
        meta: &FileMeta,
        entry: Arc<Entry>,
    ) {
        let size = entry.body.len();
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.total + size > MAX_TOTAL {
            cache.files.clear();
            cache.total = 0;
        }
        cache.total += size;
        let variants = cache.files.entry(path.as_os_str().to_owned()).or_default();
        // A new version of the file replaces the old, whatever its encoding.
        let mut freed = 0;
        variants.retain(|(enc, of, old)| {
            let keep = *enc != encoding && of == meta;
            if !keep {
                freed += old.body.len();
            }
            keep
        });
        variants.push((encoding, *meta, entry));
        cache.total -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_used_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.css");
        std::fs::write(&path, b"body{}").unwrap();
        let meta = FileMeta::from_std(&std::fs::metadata(&path).unwrap());
        let entry = |body: &'static [u8]| {
            let v = HeaderValue::from_static("x");
            Arc::new(Entry::new(
                Facts {
                    modified: SystemTime::UNIX_EPOCH,
                    etag: v.clone(),
                    last_modified: v.clone(),
                    content_type: v.clone(),
                    content_length: v,
                },
                Bytes::from_static(body),
            ))
        };
        let cache = Cache::default();
        assert!(cache.get(&path, None, &meta).is_none());
        cache.put(&path, None, &meta, entry(b"body{}"));
        let got = cache.get(&path, None, &meta).map(|e| e.body.clone());
        assert_eq!(got.as_deref(), Some(&b"body{}"[..]));
        // The same file sent with a Content-Encoding is another entry.
        assert!(cache.get(&path, Some("gzip"), &meta).is_none());
        // Same size, new contents: the change time moves on.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, b"p{a:b}").unwrap();
        let changed = FileMeta::from_std(&std::fs::metadata(&path).unwrap());
        assert!(
            cache.get(&path, None, &changed).is_none(),
            "stale contents served"
        );
        // Contents that do not match the metadata are not kept.
        cache.put(&path, None, &changed, entry(b"short"));
        assert!(cache.get(&path, None, &changed).is_none());
    }
}
