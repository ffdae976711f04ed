//! Reading the edge's connection without being woken for nothing.
//!
//! A thread blocked in `recv` on a Unix socket sleeps on the socket's one
//! wait queue, and Linux wakes everything on that queue when the *peer*
//! reads what this side wrote (`unix_write_space`, "room to write again").
//! So each time the edge read a response, the worker thread that sent it,
//! by then blocked waiting for the next request, was woken, found nothing
//! and slept again: a context switch per request, and on a VM an
//! inter-processor interrupt. `poll(POLLIN)` sleeps on the same queue but
//! with a filter: only "readable" wakes it.

//!
//! It also keeps the files the edge passes with a request head
//! (SCM_RIGHTS, `edge::app::body_fd`), in the order they came, for the
//! heads that say so (`wire::BODY_FD`).

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

/// The read half of a connection from the edge.
pub struct QuietRead {
    stream: UnixStream,
    /// Whether a read with nothing to read waits (a thread per connection)
    /// or says `WouldBlock` (one thread serving them all in turn, which
    /// waits in `epoll` instead).
    pub wait: bool,
    /// Files passed with the heads read so far, not yet taken.
    files: VecDeque<File>,
    /// Room for the descriptors one read may bring (reused).
    cmsg: Vec<u8>,
}

impl QuietRead {
    pub fn new(stream: UnixStream) -> Self {
        QuietRead {
            stream,
            wait: true,
            files: VecDeque::new(),
            cmsg: nix::cmsg_space!([RawFd; 8]),
        }
    }

    /// The next file the edge passed (a request body, `wire::BODY_FD`).
    pub fn take_file(&mut self) -> Option<File> {
        self.files.pop_front()
    }

    /// One `recvmsg`: a plain `recv` would have the kernel close any
    /// descriptor that came with the bytes.
    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        let mut iov = [IoSliceMut::new(buf)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = recvmsg::<UnixAddr>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            flags,
        )?;
        let n = msg.bytes;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: SCM_RIGHTS gave this process these descriptors,
                // owned by nothing else.
                let owned = fds
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                self.files.extend(owned.map(File::from));
            }
        }
        Ok(n)
    }
}

impl Read for QuietRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Under load the next request is usually there already: one
            // system call, no sleep.
            match self.recv(buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) if !self.wait => return Err(io::ErrorKind::WouldBlock.into()),
                Err(Errno::EAGAIN) => self.wait_readable()?,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl QuietRead {
    fn wait_readable(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_what_arrives_later_and_sees_the_end() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = QuietRead::new(b);
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            a.write_all(b"hello").unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, b"hello");
    }
}
