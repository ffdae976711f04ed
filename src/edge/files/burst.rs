//! One look at a path per burst of requests.
//!
//! Why: every static request looked its path up (an `fstatat` per part of
//! it, and one per precompressed sibling tried), and on a VM a stat costs
//! ~1.4 µs: as much as everything else the edge does to send a small cached
//! file. nginx pays it too (open, fstat and close per request) unless told
//! to keep an `open_file_cache`, which it then trusts for 60 s.
//!
//! Here a look is shared only by the requests one edge thread handles in a
//! single burst: without waiting for events in between, and at most
//! [`AT_MOST`] apart. A thread that was idle looks again, so a client that
//! changes a file and then asks for it always sees the change. Under load
//! a request may be answered from a look taken up to 1 ms before it came,
//! which is no different from it having come that much earlier.

use crate::edge::files::mount_dir::FileMeta;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};

/// How long one look may serve a thread that never waits.
pub const AT_MOST: Duration = Duration::from_millis(1);
/// Paths remembered per burst; past it, lookups are not remembered.
const MAX_PATHS: usize = 256;
/// Mounts' tables kept from burst to burst (their allocations reused).
const MAX_OWNERS: usize = 16;

/// What a look found: metadata, or nothing at that path (`None`).
type Seen = Option<FileMeta>;
/// One owner's looks, by the path's bytes.
type Looks = HashMap<Box<[u8]>, Seen>;

#[derive(Default)]
struct Memo {
    /// The thread's park count and when the burst began.
    burst: Option<(u64, Instant)>,
    /// Per owner (a static mount, by id), its paths' looks.
    owners: Vec<(u64, Looks)>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::default();
}

/// Which burst the calling thread is in: how many times its runtime has
/// waited for events. None off an edge thread (a runtime of several
/// threads shares one count, and outside one nothing counts waits).
fn burst_now() -> Option<u64> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    Some(handle.metrics().worker_park_count(0))
}

impl Memo {
    /// Forgets the looks of an earlier burst.
    fn enter(&mut self, parks: u64, now: Instant) {
        let same = self
            .burst
            .is_some_and(|(p, began)| p == parks && now.duration_since(began) < AT_MOST);
        if !same {
            // Reloads make new mounts; the old ones' tables go now and then.
            if self.owners.len() > MAX_OWNERS {
                self.owners.clear();
            }
            self.owners.iter_mut().for_each(|(_, m)| m.clear());
            self.burst = Some((parks, now));
        }
    }

    fn recall(&self, owner: u64, rel: &[u8]) -> Option<Seen> {
        let (_, looks) = self.owners.iter().find(|(o, _)| *o == owner)?;
        looks.get(rel).copied()
    }

    fn remember(&mut self, owner: u64, rel: &[u8], seen: Seen) {
        if self.owners.iter().map(|(_, m)| m.len()).sum::<usize>() >= MAX_PATHS {
            return;
        }
        let at = match self.owners.iter().position(|(o, _)| *o == owner) {
            Some(at) => at,
            None => {
                self.owners.push((owner, HashMap::new()));
                self.owners.len() - 1
            }
        };
        self.owners[at].1.insert(rel.into(), seen);
    }
}

/// `rel`'s metadata under `owner`, from this burst's look if there was one,
/// else from `fresh` (remembered when it found the file or found nothing;
/// other errors are not).
pub fn look(
    owner: u64,
    rel: &Path,
    fresh: impl FnOnce() -> io::Result<FileMeta>,
) -> io::Result<FileMeta> {
    let Some(parks) = burst_now() else {
        return fresh();
    };
    let rel = rel.as_os_str().as_bytes();
    MEMO.with_borrow_mut(|memo| {
        memo.enter(parks, Instant::now());
        if let Some(seen) = memo.recall(owner, rel) {
            return seen.ok_or_else(|| io::ErrorKind::NotFound.into());
        }
        let found = fresh();
        match &found {
            Ok(meta) => memo.remember(owner, rel, Some(*meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => memo.remember(owner, rel, None),
            Err(_) => {}
        }
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn meta_of(path: &Path) -> io::Result<FileMeta> {
        std::fs::symlink_metadata(path).map(|m| FileMeta::from_std(&m))
    }

    #[test]
    fn a_look_serves_one_burst_and_a_wait_or_a_millisecond_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.css");
        std::fs::write(&file, b"old").unwrap();
        let looked = Cell::new(0);
        let fresh = || {
            looked.set(looked.get() + 1);
            meta_of(&file)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // One burst: the second ask is answered without a stat, and a
            // path that is not there is remembered as such.
            assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 3);
            assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 3);
            assert_eq!(looked.get(), 1);
            let missing = || {
                looked.set(looked.get() + 1);
                meta_of(&dir.path().join("gone.css"))
            };
            assert!(look(1, Path::new("gone.css"), missing).is_err());
            assert!(look(1, Path::new("gone.css"), missing).is_err());
            assert_eq!(looked.get(), 2);
            // Another owner's path of the same name is its own.
            assert_eq!(look(2, Path::new("a.css"), fresh).unwrap().len(), 3);
            assert_eq!(looked.get(), 3);

            // The thread waits (a timer parks it): the change is seen.
            std::fs::write(&file, b"newer").unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 5);
            assert_eq!(looked.get(), 4);

            // Busy, never waiting, for longer than AT_MOST: seen too.
            std::fs::write(&file, b"newest!").unwrap();
            let until = Instant::now() + AT_MOST * 2;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 7);
            assert_eq!(looked.get(), 5);
        });
        // Off an edge thread nothing is remembered.
        assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 7);
        assert_eq!(look(1, Path::new("a.css"), fresh).unwrap().len(), 7);
        assert_eq!(looked.get(), 7);
    }
}
