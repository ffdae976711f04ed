//! A stand-in for systemd's NOTIFY_SOCKET: a datagram socket read all the
//! time, as systemd reads it (an unread one fills after a few messages and
//! blocks the sender).

use super::*;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

/// Every datagram received, with when it came.
#[derive(Clone)]
pub struct Notes(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notes {
    /// Binds `dir/notify.sock`; returns its path (for NOTIFY_SOCKET).
    pub fn listen(dir: &Path) -> (String, Notes) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let notes = Notes(Arc::new(Mutex::new(Vec::new())));
        let into = notes.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                into.0.lock().expect("notes").push((Instant::now(), msg));
            }
        });
        (path.display().to_string(), notes)
    }

    pub fn all(&self) -> Vec<String> {
        let notes = self.0.lock().expect("notes");
        notes.iter().map(|(_, m)| m.clone()).collect()
    }

    /// The first message from index `after` on with a line equal to
    /// `needle`, waiting up to 20 s: its index and text.
    pub fn wait_for(&self, after: usize, needle: &str) -> Option<(usize, String)> {
        let mut found = None;
        wait_until(Duration::from_secs(20), || {
            let notes = self.0.lock().expect("notes");
            found = notes
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, (_, m))| m.lines().any(|l| l == needle))
                .map(|(i, (_, m))| (i, m.clone()));
            found.is_some()
        });
        found
    }
}
