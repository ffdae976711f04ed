//! Process titles, as nginx and gunicorn's setproctitle show them in `ps`:
//! `corral: master (site.toml)`, `corral: edge`, `corral: worker 3
//! [myapp:app]`, so an operator signals the process they mean.
//!
//! Linux shows a process's argv memory; the title is written over it. When
//! the title is longer than the original command line, the kernel is asked
//! to show a new buffer instead (PR_SET_MM, which needs CAP_SYS_RESOURCE);
//! without that right the title is cut to the original length.

use std::ffi::CString;

/// Sets this process's title (and its 15-byte `comm` name).
pub fn set(title: &str) {
    let Ok(c) = CString::new(title) else { return };
    set_comm(&c);
    let Some((start, end)) = argv_area() else {
        return;
    };
    let room = end - start;
    if c.as_bytes_with_nul().len() > room && point_argv_at(c.clone()) {
        return;
    }
    // SAFETY: [start, end) is this process's argv area, as the kernel
    // reports it; nothing reads argv after startup (std copied it).
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, room) };
    area.fill(0);
    let n = title.len().min(room.saturating_sub(1));
    area[..n].copy_from_slice(&title.as_bytes()[..n]);
}

fn set_comm(c: &CString) {
    let bytes = c.as_bytes();
    let short = CString::new(&bytes[..bytes.len().min(15)]).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of up to 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, short.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// `arg_start` and `arg_end` from /proc/self/stat (fields 48 and 49).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start > 0 && end > start).then_some((start, end))
}

/// Shows `title` from its own (leaked, process-lifetime) buffer.
fn point_argv_at(title: CString) -> bool {
    let len = title.as_bytes_with_nul().len();
    let start = title.into_raw() as libc::c_ulong;
    let end = start + len as libc::c_ulong;
    // SAFETY: the buffer is leaked, so it stays valid for the process's life.
    let set = |what: libc::c_int, addr: libc::c_ulong| unsafe {
        libc::prctl(libc::PR_SET_MM, what as libc::c_ulong, addr, 0, 0) == 0
    };
    // The kernel wants start <= end at every step: a buffer below the old
    // area moves the start first, one above it the end first.
    if set(libc::PR_SET_MM_ARG_START, start) {
        return set(libc::PR_SET_MM_ARG_END, end);
    }
    set(libc::PR_SET_MM_ARG_END, end) && set(libc::PR_SET_MM_ARG_START, start)
}
