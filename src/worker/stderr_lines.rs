//! The app's stderr, line by line, with a timestamp and the worker's id:
//! what a `print(..., file=sys.stderr)`, a warning or a C extension writes
//! is otherwise unattributable once several workers share one log.
//!
//! fd 2 becomes a pipe; a thread (never running Python) reads it and writes
//! each line to the original stderr. corral's own log lines already say who
//! wrote them and go straight to the original stderr.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Where corral's own log lines go: fd 2, or the original stderr once the
/// app's fd 2 is a pipe.
static LOG_FD: AtomicI32 = AtomicI32::new(2);
static READER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// The log writer (see `logging::init`).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = unsafe {
            libc::write(
                LOG_FD.load(Ordering::Relaxed),
                buf.as_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Puts the pipe in place for worker `id`. On failure stderr stays as it is.
pub fn install(id: u64) {
    let Ok(original) = nix::unistd::dup(std::io::stderr()) else {
        return;
    };
    let Ok((read_end, write_end)) = nix::unistd::pipe() else {
        return;
    };
    // SAFETY: dup2 onto fd 2, which this process owns.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&write_end), 2) } < 0 {
        return;
    }
    drop(write_end);
    let original_fd: RawFd = std::os::fd::IntoRawFd::into_raw_fd(original);
    LOG_FD.store(original_fd, Ordering::Relaxed);
    let reader = std::thread::Builder::new()
        .name("app-stderr".into())
        .spawn(move || copy_lines(read_end, original_fd, id));
    if let (Ok(handle), Ok(mut slot)) = (reader, READER.lock()) {
        *slot = Some(handle);
    }
}

/// At exit: close the pipe and let the reader write out what is left (a
/// traceback printed just before exiting must not be lost).
pub fn finish() {
    let original = LOG_FD.load(Ordering::Relaxed);
    if original == 2 {
        return;
    }
    // SAFETY: fd 2 goes back to the original stderr, closing the pipe's
    // last write end, so the reader sees EOF.
    unsafe { libc::dup2(original, 2) };
    let handle = READER.lock().ok().and_then(|mut s| s.take());
    if let Some(h) = handle {
        let _ = h.join();
    }
}

fn copy_lines(read_end: OwnedFd, out_fd: RawFd, id: u64) {
    let reader = BufReader::new(std::fs::File::from(read_end));
    // SAFETY: out_fd is the original stderr, owned by this module now.
    let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(out_fd) });
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let stamp = humantime_now();
        let mut buf = format!("{stamp} worker {id} app: ").into_bytes();
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        let _ = out.write_all(&buf);
    }
}

/// The same UTC timestamp form as corral's log lines.
fn humantime_now() -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_default()
}
