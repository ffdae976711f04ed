//! Big responses to slow or stalled clients: the edge buffers them (memory
//! up to `[limits] response_buffer` each and `buffer_memory` in all, then
//! temp files), so workers are released at once and memory stays bounded.
//!
//! * 100 clients ask for 15 MiB each and never read: the edge's RSS stays
//!   under 300 MiB and the site keeps answering;
//! * 4 slow 200 MiB downloads with 4 workers leave `/ok` fast;
//! * a slowly read big response arrives whole (sha256).
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const APP: &str = "\
def application(environ, start_response):\n    \
path = environ['PATH_INFO']\n    \
if path.startswith('/big/'):\n        \
n = int(path[5:])\n        \
block = bytes(range(256)) * 4096\n        \
body = (block * (n // len(block) + 1))[:n]\n        \
start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(n))])\n        \
return [body]\n    \
start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '2')])\n    \
return [b'ok']\n";

fn site(workers: u32) -> Running {
    Site::new()
        .file("bigapp.py", APP)
        .config(&app_config(
            "bigapp:application",
            workers,
            "timeout = \"60s\"",
        ))
        .start()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Requests `path` and never reads the answer (a tiny receive buffer).
fn stalled_client(port: u16, path: &str) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = socket2_free_recv_buffer(&s);
    let mut s2 = s.try_clone().unwrap();
    s2.write_all(&get_req(port, path)).unwrap();
    s
}

/// Keeps the kernel from soaking up the response for the client.
fn socket2_free_recv_buffer(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on an open socket with a valid int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn time_ok_requests(port: u16, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let r = get(port, "/ok");
        assert_eq!(r.status, 200);
    }
    started.elapsed()
}

#[test]
fn a_hundred_stalled_readers_of_15_mib_keep_the_edge_small() {
    let srv = site(2);
    let edge = srv.edge_pids()[0];
    let clients: Vec<TcpStream> = (0..100)
        .map(|_| stalled_client(srv.port, &format!("/big/{}", 15 << 20)))
        .collect();
    // Every response is read off the workers: /ok is answered meanwhile.
    let took = time_ok_requests(srv.port, 20);
    assert!(
        took < Duration::from_secs(10),
        "/ok x20 took {took:?} with 100 stalled readers"
    );
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        peak = peak.max(rss_kib(edge));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "edge RSS peak with 100 stalled 15 MiB readers: {} MiB",
        peak / 1024
    );
    assert!(peak < 300 * 1024, "edge RSS {} MiB", peak / 1024);
    let took = time_ok_requests(srv.port, 20);
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(clients);
}

#[test]
fn slow_downloads_do_not_hold_the_workers() {
    let srv = site(4);
    let idle = time_ok_requests(srv.port, 50);
    let port = srv.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 4 clients reading 200 MiB at ~1.5 MiB/s each: none is near done
    // when the measurement ends.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(&get_req(port, &format!("/big/{}", 200 << 20)))
                    .unwrap();
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0u64;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(30)
                    && !stop.load(std::sync::atomic::Ordering::SeqCst)
                {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                total
            })
        })
        .collect();
    // The workers are busy while they send 4 x 200 MiB to the edge; once
    // it is buffered they are free, long before the clients have it all.
    let started = Instant::now();
    let mut busy = time_ok_requests(srv.port, 50);
    while busy > idle * 2 + Duration::from_millis(20) && started.elapsed() < Duration::from_secs(25)
    {
        std::thread::sleep(Duration::from_millis(200));
        busy = time_ok_requests(srv.port, 50);
    }
    eprintln!(
        "/ok x50: idle {idle:?}, with 4 slow 200 MiB downloads {busy:?} ({:?} after they started)",
        started.elapsed()
    );
    assert!(
        busy <= idle * 2 + Duration::from_millis(20),
        "idle {idle:?} busy {busy:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in slow {
        let got = t.join().unwrap();
        // Still downloading when /ok was fast again: the workers were not
        // waiting for these clients.
        assert!(
            got > 64 << 10 && got < 200 << 20,
            "slow client got {got} bytes"
        );
    }
}

#[test]
fn a_slowly_read_big_response_arrives_whole() {
    let srv = site(1);
    let n: usize = 40 << 20;
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&simple_req("GET", srv.port, &format!("/big/{n}"), true))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1)); // all of it is buffered by now
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let block: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(4096);
    let want: Vec<u8> = block.iter().cycle().take(n).copied().collect();
    assert_eq!(got.len() - body_at, n);
    assert_eq!(Sha256::digest(&got[body_at..]), Sha256::digest(&want));
}
