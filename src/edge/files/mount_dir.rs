//! A `[[static]]` folder held open, so that finding a file walks only the
//! part of its path below the mount (an `fstatat` relative to the folder)
//! instead of every directory from `/` on every request: the walk was most
//! of what a static lookup cost the kernel.
//!
//! Why the fd is checked again: a deploy that replaces the folder
//! (`rm -rf static && cp -r build static`, or renames) must be served from
//! the new folder, as nginx (which resolves the path on each request)
//! would. So at most once a second, and at once when a lookup finds
//! nothing, the path is stat()ed and the fd reopened when it names another
//! folder now (or its folder was deleted). In between, a request costs a
//! read lock, a clock read and the lookup itself.
//!
//! Files are opened through the same fd (`open`), so the bytes sent always
//! come from the folder the metadata came from.

use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, stat, FileStat, Mode, SFlag};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long an open folder is used before its path is checked again.
const RECHECK: Duration = Duration::from_secs(1);
/// How often a miss may force a check: a flood of 404s costs at most this
/// many extra stats a second, not one per request.
const RECHECK_ON_MISS: Duration = Duration::from_millis(10);

/// What the static code needs to know of a file, whichever call found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl FileMeta {
    pub fn from_std(m: &std::fs::Metadata) -> Self {
        let t = m.file_type();
        FileMeta {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            kind: if t.is_symlink() {
                Kind::Symlink
            } else if t.is_dir() {
                Kind::Dir
            } else if t.is_file() {
                Kind::File
            } else {
                Kind::Other
            },
        }
    }

    fn from_stat(s: &FileStat) -> Self {
        let kind = match SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        FileMeta {
            dev: s.st_dev,
            ino: s.st_ino,
            len: u64::try_from(s.st_size).unwrap_or(0),
            mtime: (s.st_mtime, s.st_mtime_nsec),
            ctime: (s.st_ctime, s.st_ctime_nsec),
            kind,
        }
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == Kind::Symlink
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Last modification, as `std::fs::Metadata::modified` gives it.
    pub fn modified(&self) -> SystemTime {
        let (secs, nanos) = self.mtime;
        let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
        let whole = Duration::from_secs(secs.unsigned_abs());
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + whole + nanos
        } else {
            SystemTime::UNIX_EPOCH - whole + nanos
        }
    }
}

struct Held {
    fd: Option<Arc<OwnedFd>>,
    /// (dev, ino) of the folder the fd is open on.
    id: (u64, u64),
    checked: Instant,
}

pub struct MountDir {
    path: PathBuf,
    held: RwLock<Held>,
}

impl MountDir {
    /// `path` is the mount's canonical folder. A folder missing now is
    /// looked for again at the next check.
    pub fn new(path: PathBuf) -> Self {
        let (fd, id) = Self::open(&path);
        MountDir {
            path,
            held: RwLock::new(Held {
                fd,
                id,
                checked: Instant::now(),
            }),
        }
    }

    fn open(path: &Path) -> (Option<Arc<OwnedFd>>, (u64, u64)) {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let Ok(fd) = open(path, flags, Mode::empty()) else {
            return (None, (0, 0));
        };
        // The id of what was opened, not of what the path names a moment
        // later: a swap in between must not look like "unchanged" forever.
        match fstat(&fd) {
            Ok(s) => (Some(Arc::new(fd)), (s.st_dev, s.st_ino)),
            Err(_) => (None, (0, 0)),
        }
    }

    /// The open folder, checked against its path at most once a second,
    /// or after a miss (`miss`) at most every 10 ms. Returns it and whether
    /// it was just reopened.
    fn fd(&self, miss: bool) -> (Option<Arc<OwnedFd>>, bool) {
        let due = if miss { RECHECK_ON_MISS } else { RECHECK };
        {
            let held = self.held.read().unwrap_or_else(|p| p.into_inner());
            if held.checked.elapsed() < due {
                return (held.fd.clone(), false);
            }
        }
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        let mut reopened = false;
        if held.checked.elapsed() >= due {
            let now = stat(&self.path).ok().map(|s| (s.st_dev, s.st_ino));
            let deleted = held
                .fd
                .as_ref()
                .is_none_or(|fd| fstat(&**fd).map_or(true, |s| s.st_nlink == 0));
            if deleted || now != Some(held.id) {
                (held.fd, held.id) = Self::open(&self.path);
                reopened = held.fd.is_some();
            }
            held.checked = Instant::now();
        }
        (held.fd.clone(), reopened)
    }

    /// Runs `f` on the open folder; when it finds nothing, checks the
    /// folder at once and, if that reopened it, tries again there.
    fn with_fd<T>(&self, f: impl Fn(&OwnedFd) -> nix::Result<T>) -> std::io::Result<T> {
        let (fd, _) = self.fd(false);
        let first = match &fd {
            Some(fd) => f(fd),
            None => Err(nix::errno::Errno::ENOENT),
        };
        match first {
            Err(nix::errno::Errno::ENOENT) => match self.fd(true) {
                (Some(fd), true) => Ok(f(&fd)?),
                _ => Err(std::io::ErrorKind::NotFound.into()),
            },
            other => Ok(other?),
        }
    }

    /// lstat of `rel` (a relative path) inside the folder: a symlink is
    /// reported as one, not followed.
    pub fn lstat(&self, rel: &Path) -> std::io::Result<FileMeta> {
        let s = self.with_fd(|fd| fstatat(fd, rel, AtFlags::AT_SYMLINK_NOFOLLOW))?;
        Ok(FileMeta::from_stat(&s))
    }

    /// Opens `rel` inside the folder for reading, refusing a symlink as the
    /// last part (the lookup checked the parts before it), with what the
    /// opened file is.
    pub fn open_file(&self, rel: &Path) -> std::io::Result<(std::fs::File, FileMeta)> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = self.with_fd(|fd| openat(fd, rel, flags, Mode::empty()))?;
        let meta = FileMeta::from_stat(&fstat(&file)?);
        Ok((std::fs::File::from(file), meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_relative_and_follow_a_recreated_folder() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("static");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.css"), b"old").unwrap();
        std::os::unix::fs::symlink("a.css", dir.join("link.css")).unwrap();
        let mount = MountDir::new(dir.clone());
        let a = mount.lstat(Path::new("a.css")).unwrap();
        assert!(a.is_file() && a.len() == 3);
        assert_eq!(
            a,
            FileMeta::from_std(&std::fs::symlink_metadata(dir.join("a.css")).unwrap())
        );
        assert_eq!(
            a.modified(),
            std::fs::metadata(dir.join("a.css"))
                .unwrap()
                .modified()
                .unwrap()
        );
        assert!(mount.lstat(Path::new("link.css")).unwrap().is_symlink());
        assert!(
            mount.open_file(Path::new("link.css")).is_err(),
            "a symlink is not opened through"
        );
        let (_, opened) = mount.open_file(Path::new("a.css")).unwrap();
        assert_eq!(opened, a);
        assert!(mount.lstat(Path::new("missing")).is_err());

        // Deleted and made again: found within a second, not served stale.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.css"), b"new!").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(mount.lstat(Path::new("a.css")).unwrap().len(), 4);
        // Swapped by renames (the old folder still exists): a file only the
        // new folder has is found at once, and what is opened is always
        // the version the lookup saw.
        let old = top.path().join("static.old");
        let new = top.path().join("static.new");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("a.css"), b"newest").unwrap();
        std::fs::write(new.join("only-new.css"), b"n").unwrap();
        std::fs::rename(&dir, &old).unwrap();
        std::fs::rename(&new, &dir).unwrap();
        std::thread::sleep(RECHECK_ON_MISS * 2);
        assert!(mount.lstat(Path::new("only-new.css")).is_ok());
        let seen = mount.lstat(Path::new("a.css")).unwrap();
        let (mut file, opened) = mount.open_file(Path::new("a.css")).unwrap();
        assert_eq!(seen, opened);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "newest");
        // Gone altogether: missing, and no panic.
        std::fs::remove_dir_all(&dir).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(mount.lstat(Path::new("a.css")).is_err());
    }
}
