//! `corral dump` in a worker: on `ipc::dump_signal()` a thread of its own
//! takes the GIL and writes every Python thread's stack (and, in an ASGI
//! worker, each request's task at its await) to the file beside the
//! worker's socket, which the edge then reads.
//!
//! The signal handler only wakes that thread, with one byte down a pipe.
//! Walking other threads' frames from inside a signal handler, as
//! faulthandler does, crashed workers whose threads were running requests.
//! With the GIL the stacks are read between bytecodes, safely (a thread
//! running Python longer than the 5 ms switch interval is caught inside
//! it; short requests may be caught between two of them); a worker
//! whose C code holds the GIL does not answer (the edge says so after a few
//! seconds), and `app.timeout`'s faulthandler dump to the error log still
//! covers a worker stuck that way.

use pyo3::prelude::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// The pipe's write end, for the signal handler.
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// An ASGI worker's addition: `tasks_text(server)` from server.py.
static TASKS: Mutex<Option<(Py<PyAny>, Py<PyAny>)>> = Mutex::new(None);

const STACKS_PY: &str = r#"
import sys, threading, traceback

def stacks():
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        out.append(f"Thread {names.get(ident, hex(ident))} (most recent call last):\n")
        out.extend(traceback.format_stack(frame))
        out.append("\n")
    if not out:
        # Taken at a GIL hand-over between requests: say so, never nothing.
        out.append("(no thread was running Python code at this instant)\n")
    return "".join(out)
"#;

extern "C" fn on_dump(_: libc::c_int) {
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe (a dump
        // already asked for) just drops the byte.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Opens the stacks file, starts the dump thread and takes the signal.
pub fn install(py: Python<'_>, path: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let code = std::ffi::CString::new(STACKS_PY).map_err(|e| e.to_string())?;
    let stacks = PyModule::from_code(py, &code, c"corral/stacks.py", c"corral_stacks")
        .and_then(|m| m.getattr("stacks"))
        .map_err(|e| e.to_string())?
        .unbind();
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| format!("pipe: {e}"))?;
    // The reader blocks; only the writer (the handler's end) stays non-blocking.
    nix::fcntl::fcntl(
        &rx,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| format!("fcntl: {e}"))?;
    WAKE.store(tx.into_raw_fd(), Ordering::Relaxed);
    let rx = File::from(rx);
    std::thread::Builder::new()
        .name("stack-dump".into())
        .spawn(move || serve(rx, file, stacks))
        .map_err(|e| format!("thread: {e}"))?;
    // SAFETY: the handler only writes to a pipe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_dump as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(crate::ipc::dump_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// An ASGI worker adds each request's task: `tasks(server)` is called with
/// the GIL after the threads' stacks.
pub fn add_tasks(tasks: Py<PyAny>, server: Py<PyAny>) {
    *TASKS.lock().unwrap_or_else(|p| p.into_inner()) = Some((tasks, server));
}

fn serve(mut rx: File, mut file: File, stacks: Py<PyAny>) {
    let mut wake = [0u8; 64];
    loop {
        match rx.read(&mut wake) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let text = Python::attach(|py| collect(py, &stacks));
        let _ = file.write_all(text.as_bytes());
    }
}

fn collect(py: Python<'_>, stacks: &Py<PyAny>) -> String {
    let mut text = stacks
        .call0(py)
        .and_then(|s| s.extract::<String>(py))
        .unwrap_or_else(|e| format!("cannot read the stacks: {e}\n"));
    let tasks = TASKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((tasks, server)) = tasks.as_ref() {
        match tasks
            .call1(py, (server,))
            .and_then(|t| t.extract::<String>(py))
        {
            Ok(t) => text.push_str(&t),
            Err(e) => text.push_str(&format!("cannot read the tasks: {e}\n")),
        }
    }
    text
}
