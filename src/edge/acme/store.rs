//! `[tls.acme] state_dir`: what must survive a restart, and what several
//! instances sharing the folder (a shared volume) coordinate through.
//!
//! ```text
//! state_dir/                 0700
//!   account-<CA>.json        the ACME account's key and URL, one per CA
//!   <first host>.pem         certificate chain, then its key (0600):
//!                            one file, so a reader never pairs a new
//!                            certificate with an old key
//!   <first host>.lock        held (flock) by the one instance ordering
//!   <first host>.retry       failures in a row and the next attempt: the
//!                            backoff every instance and restart obeys
//!   challenges/              answers in flight, so an instance that did
//!                            not order can still answer the CA's check
//! ```
//! Every write goes to a temporary file renamed into place.

use instant_acme::AccountCredentials;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Store {
    dir: PathBuf,
    /// The first configured host names the certificate and its lock.
    name: String,
}

/// Identifies one version of the certificate file, to notice a new one
/// written by another instance (or another edge of this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    mtime_ns: i128,
    len: u64,
    inode: u64,
}

impl Store {
    /// Creates the folder (0700) if it is missing.
    pub fn open(dir: &Path, first_host: &str) -> Result<Store, String> {
        let store = Store {
            dir: dir.to_path_buf(),
            name: first_host.to_string(),
        };
        for d in [dir.to_path_buf(), store.challenges()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        // A folder made by hand may be wider; it is not ours to change
        // (the keys inside are 0600 anyway).
        let mode = fs::metadata(dir).map_or(0, |m| m.permissions().mode() & 0o777);
        if mode & 0o077 != 0 {
            tracing::warn!(
                "acme: {} is mode {mode:o}; 0700 would keep its listing private",
                dir.display()
            );
        }
        Ok(store)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    fn challenges(&self) -> PathBuf {
        self.dir.join("challenges")
    }

    /// The certificate file's current version, if there is one.
    pub fn cert_stamp(&self) -> Option<Stamp> {
        let m = fs::metadata(self.cert_path()).ok()?;
        Some(Stamp {
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            len: m.len(),
            inode: m.ino(),
        })
    }

    pub fn read_cert(&self) -> Result<Vec<u8>, String> {
        let path = self.cert_path();
        fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    pub fn save_cert(&self, chain_pem: &str, key_pem: &str) -> Result<(), String> {
        write_private(&self.cert_path(), combine(chain_pem, key_pem).as_bytes())
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        let slug: String = directory
            .trim_start_matches("https://")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join(format!("account-{slug}.json"))
    }

    pub fn load_account(&self, directory: &str) -> Result<Option<AccountCredentials>, String> {
        let path = self.account_path(directory);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| format!("{} is not an ACME account: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save_account(&self, directory: &str, creds: &AccountCredentials) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(creds).map_err(|e| e.to_string())?;
        write_private(&self.account_path(directory), &json)
    }

    /// The ordering lock, if no other process holds it. Released when the
    /// returned file is dropped (or the process dies).
    pub fn try_lock(&self) -> Result<Option<File>, String> {
        let path = self.dir.join(format!("{}.lock", self.name));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    /// The shared backoff after failed orders: (failures in a row, next
    /// attempt), so neither another instance nor a restart orders again
    /// before it is time.
    pub fn read_retry(&self) -> (u32, SystemTime) {
        let text = fs::read_to_string(self.retry_path()).unwrap_or_default();
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(failures)), Some(Ok(at))) => (
                failures.min(u32::MAX as u64) as u32,
                UNIX_EPOCH + Duration::from_secs(at),
            ),
            _ => (0, UNIX_EPOCH),
        }
    }

    pub fn write_retry(&self, failures: u32, at: SystemTime) -> Result<(), String> {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        write_private(
            &self.retry_path(),
            format!("{failures} {secs}\n").as_bytes(),
        )
    }

    pub fn clear_retry(&self) {
        let _ = fs::remove_file(self.retry_path());
    }

    fn retry_path(&self) -> PathBuf {
        self.dir.join(format!("{}.retry", self.name))
    }

    pub fn write_challenge(&self, name: &str, value: &[u8]) -> Result<(), String> {
        write_private(&self.challenges().join(name), value)
    }

    pub fn read_challenge(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.challenges().join(name)).ok()
    }

    pub fn remove_challenge(&self, name: &str) {
        let _ = fs::remove_file(self.challenges().join(name));
    }
}

/// The certificate file's content: the chain, then its key.
pub fn combine(chain_pem: &str, key_pem: &str) -> String {
    format!("{}\n{key_pem}", chain_pem.trim_end())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    // The whole name, the pid and a counter: `alpn-a.com` and `alpn-a.org`
    // must not share a temporary file, nor two threads of one process.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_holder_at_a_time_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("acme");
        let a = Store::open(&state, "a.test").unwrap();
        let b = Store::open(&state, "a.test").unwrap();
        let held = a.try_lock().unwrap().expect("the first asks first");
        assert!(b.try_lock().unwrap().is_none(), "a second holder");
        drop(held);
        assert!(b.try_lock().unwrap().is_some(), "released on drop");
        a.save_cert("CHAIN\n", "KEY\n").unwrap();
        let mode = fs::metadata(a.cert_path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        assert_eq!(b.read_cert().unwrap(), b"CHAIN\nKEY\n");
        let at = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        a.write_retry(3, at).unwrap();
        assert_eq!(b.read_retry(), (3, at));
        b.clear_retry();
        assert_eq!(a.read_retry(), (0, UNIX_EPOCH));
    }
}
