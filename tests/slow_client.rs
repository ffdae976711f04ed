//! A slow client (trickling its request body) must not tie up the only
//! worker: the edge buffers the whole body before dispatching.
mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn slow_body_does_not_block_other_clients() {
    let srv = Site::new()
        .app("hello.py")
        .config(&app_config(
            "hello:application",
            1,
            "queue_timeout = \"30s\"",
        ))
        .start();
    let port = srv.port;

    // Warm up: the worker is booted and has answered once.
    let r = srv.get("/");
    srv.assert_status(&r, 200, "warm-up GET");

    let done = Arc::new(AtomicBool::new(false));
    let slow_done = Arc::clone(&done);
    let slow = thread::spawn(move || -> Result<usize, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes())
            .map_err(|e| format!("writing headers: {e}"))?;
        // 1 byte every 200 ms for ~3 s (15 of the promised 100 bytes).
        let mut sent = 0;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) && !slow_done.load(Ordering::SeqCst) {
            if s.write_all(b"x").is_err() {
                break; // the server may hang up on a slow client; that's fine
            }
            sent += 1;
            thread::sleep(Duration::from_millis(200));
        }
        Ok(sent)
    });

    // Let the slow request be accepted and start trickling.
    thread::sleep(Duration::from_millis(300));
    let mut timings = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let r = try_request_timeout(
            port,
            &get_req(port, &format!("/?i={i}")),
            Duration::from_secs(10),
        );
        let took = t.elapsed();
        match r {
            Ok(resp) if resp.status == 200 && resp.body == b"Hello, World!" => timings.push(took),
            Ok(resp) => srv.fail(format!("GET #{i} while a slow client trickles its body: unexpected response after {took:?}\n{resp}")),
            Err(e) => srv.fail(format!("GET #{i} while a slow client trickles its body failed after {took:?}: {e}")),
        }
        if took > Duration::from_secs(1) {
            srv.fail(format!(
                "GET #{i} took {took:?} (limit 1 s) while a slow client was sending its body; the worker seems to be held by the slow client. timings so far: {timings:?}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::SeqCst);
    match slow.join().expect("slow client thread panicked") {
        Ok(sent) => eprintln!("slow client sent {sent} body bytes; GET timings: {timings:?}"),
        Err(e) => srv.fail(format!("slow client: {e}")),
    }

    // After the slow client gave up (incomplete body, connection dropped),
    // everything still works.
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET after the slow client left");
}
