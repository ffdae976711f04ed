//! A spooled request body handed to a WSGI worker as the open file it is.
//!
//! The edge reads a body over 1 MiB to a temp file before it picks a
//! worker. Streamed over the socket, the WSGI worker (which runs its app
//! only once it has the whole body) had to spool it again: twice the disk,
//! twice the writes, and a copy through the socket. Instead the head goes
//! with the file's descriptor attached (SCM_RIGHTS) and `wire::BODY_FD`
//! in it; no body bytes follow. The worker reads the file from its start,
//! so a rerun on another worker (`exchange`) sends the same file again.

use crate::edge::app::peer::Stream;
use crate::wire;
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use tokio::io::AsyncWriteExt;

/// What became of the head.
pub enum Sent {
    /// Written whole, with the file attached: the body is delivered.
    WithFile,
    /// Nothing was written: the kernel would not take another descriptor
    /// in flight (ETOOMANYREFS, past RLIMIT_NOFILE). Stream the body instead.
    Refused,
}

/// Writes `head` with `file` attached and the field that says so.
pub async fn send_head(stream: &mut Stream, head: &[u8], file: &std::fs::File) -> io::Result<Sent> {
    let socket = match stream {
        Stream::Unix(link) => link.as_fd().as_raw_fd(),
        Stream::Tcp(_) => return Ok(Sent::Refused),
    };
    // The field goes before the head's closing blank line.
    let (fields, blank) = head.split_at(head.len().saturating_sub(2));
    let marker = format!("{}: 1\r\n", wire::BODY_FD);
    let parts = [fields, marker.as_bytes(), blank];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let sent = loop {
        let iov = parts.map(IoSlice::new);
        let fds = [file.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(socket, &iov, &cmsg, flags, None) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => stream.writable().await?,
            Err(Errno::ETOOMANYREFS) => return Ok(Sent::Refused),
            Err(e) => return Err(e.into()),
        }
    };
    // The descriptor went with the first byte; the rest of a head the
    // socket could not take at once follows as plain bytes.
    if sent < total {
        let rest: Vec<u8> = parts.concat().split_off(sent);
        stream.write_all(&rest).await?;
    }
    Ok(Sent::WithFile)
}
