//! Contents of small static files kept in memory, so the hot path of a
//! static request never leaves the async thread.
//!
//! Why: reading a file is the one step of a static request that goes to
//! tokio's blocking pool, and that trip (two thread wake-ups) cost more than
//! everything else the edge does for a 4 KiB file. An entry is used only
//! while the file's fresh metadata (taken on every request, as nginx does
//! its `stat`) still matches what it was read with: same inode, size,
//! modification and change times. So a replaced or edited file is never
//! served stale, not even for a moment.

use bytes::Bytes;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

/// Files up to this size are cached.
pub const MAX_FILE: u64 = 256 * 1024;
/// Total bytes held; past it the cache starts over (cheap, and bounded).
const MAX_TOTAL: usize = 64 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct Cache {
    files: HashMap<PathBuf, (Identity, Bytes)>,
    total: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        files: HashMap::new(),
        total: 0,
    })
});

/// The cached contents of `path`, if they were read from the file `meta`
/// describes.
pub fn get(path: &Path, meta: &std::fs::Metadata) -> Option<Bytes> {
    let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let (id, data) = cache.files.get(path)?;
    (*id == Identity::of(meta)).then(|| data.clone())
}

/// Remembers `data` as the contents of the file `meta` describes.
pub fn put(path: &Path, meta: &std::fs::Metadata, data: Bytes) {
    if data.len() as u64 != meta.len() || meta.len() > MAX_FILE {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.total + data.len() > MAX_TOTAL {
        cache.files.clear();
        cache.total = 0;
    }
    cache.total += data.len();
    if let Some((_, old)) = cache
        .files
        .insert(path.to_path_buf(), (Identity::of(meta), data))
    {
        cache.total -= old.len();
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
        let meta = std::fs::metadata(&path).unwrap();
        assert!(get(&path, &meta).is_none());
        put(&path, &meta, Bytes::from_static(b"body{}"));
        assert_eq!(get(&path, &meta).as_deref(), Some(&b"body{}"[..]));
        // Same size, new contents: the change time moves on.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, b"p{a:b}").unwrap();
        let changed = std::fs::metadata(&path).unwrap();
        assert!(get(&path, &changed).is_none(), "stale contents served");
        // Contents that do not match the metadata are not kept.
        put(&path, &changed, Bytes::from_static(b"short"));
        assert!(get(&path, &changed).is_none());
    }
}
