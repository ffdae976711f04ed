//! Connection-level protection at the edge, against the real binary:
//! `header_timeout` (408 for a slow head, silence for a silent
//! connection, keep-alive idleness not counted), `max_connections` (extra
//! connections wait), `max_connections_per_ip` (503), and the PROXY
//! protocol (v1 and v2 name the client; a connection without the header is
//! closed; `check` names a bad key).

mod common;

use common::*;
use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

fn site(limits: &str, server_extra: &str) -> Running {
    let config = app_config("echo_environ:application", 2, "")
        .replace(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n",
            &format!("[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n{server_extra}\n"),
        )
        .replace("[limits]\n", &format!("[limits]\n{limits}\n"));
    Site::new().app("echo_environ.py").config(&config).start()
}

fn remote_addr(r: &Response) -> String {
    r.json()["environ"]["REMOTE_ADDR"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

/// A connection that has made one request and is now idle (keep-alive).
fn held(srv: &Running) -> Conn {
    let mut c = Conn::connect(srv.port);
    let r = c
        .get("/held")
        .unwrap_or_else(|e| srv.fail(format!("held GET: {e}")));
    srv.assert_status(&r, 200, "GET on a held connection");
    c
}

#[test]
fn header_timeout_answers_a_slow_head_with_408_and_closes() {
    let srv = site("header_timeout = \"1s\"\nkeepalive_timeout = \"30s\"", "");

    // Half a head, then nothing: 408 once the second is up, then closed.
    let mut slow = Conn::connect(srv.port);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t0 = Instant::now();
    let r = slow
        .read_response("GET")
        .unwrap_or_else(|e| srv.fail(format!("no answer to a head left unfinished: {e}")));
    let waited = t0.elapsed();
    srv.assert_status(&r, 408, "an unfinished head after header_timeout");
    if !(Duration::from_millis(700)..Duration::from_secs(4)).contains(&waited) {
        srv.fail(format!("408 came after {waited:?}, header_timeout is 1 s"));
    }
    if !slow.closed_by_peer(Duration::from_secs(3)) {
        srv.fail("the connection stayed open after the 408");
    }

    // A connection that never sends a byte is closed without an answer.
    let mut silent = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let t0 = Instant::now();
    let n = silent.read_to_end(&mut buf).unwrap_or(0);
    if n != 0 || t0.elapsed() > Duration::from_secs(4) {
        srv.fail(format!(
            "a silent connection: got {:?} after {:?} (want a close with no bytes after ~1 s)",
            String::from_utf8_lossy(&buf),
            t0.elapsed()
        ));
    }

    // Keep-alive idleness is not head time: idle 1.5 s, then a request.
    let mut idle = held(&srv);
    thread::sleep(Duration::from_millis(1500));
    let r = idle
        .get("/after-idle")
        .unwrap_or_else(|e| srv.fail(format!("request after an idle keep-alive pause: {e}")));
    srv.assert_status(&r, 200, "a request after 1.5 s of keep-alive idleness");

    // A head that trickles in within the limit is served.
    let mut trickle = Conn::connect(srv.port);
    for part in [&b"GET /trickle HTTP/1.1\r\n"[..], b"Host: x\r\n", b"\r\n"] {
        trickle.send(part).unwrap();
        thread::sleep(Duration::from_millis(200));
    }
    let r = trickle.read_response("GET").unwrap();
    srv.assert_status(&r, 200, "a head sent in three pieces within header_timeout");

    let log = srv.stdout();
    if !log.contains("\"GET /slow HTTP/1.1\" 408") && !log.contains(" 408 ") {
        srv.fail(format!(
            "the 408 is not in the access log:\n{}",
            tail(&log, 2000)
        ));
    }
}

#[test]
fn max_connections_makes_extra_connections_wait_their_turn() {
    let srv = site("max_connections = 2", "");
    let a = held(&srv);
    let _b = held(&srv);
    // The third connection is in the kernel's backlog: no answer yet.
    let mut c = Conn::open_with_timeout(srv.port, Duration::from_millis(800)).unwrap();
    c.send(&raw_req("GET", srv.port, "/third", &[])).unwrap();
    if let Ok(r) = c.read_response("GET") {
        srv.fail(format!(
            "a third connection was served while max_connections = 2 were open: {r}"
        ));
    }
    // One closes: the waiting connection is taken and answered.
    drop(a);
    c.set_read_timeout(Duration::from_secs(10));
    let r = c
        .read_response("GET")
        .unwrap_or_else(|e| srv.fail(format!("the waiting connection was not served: {e}")));
    srv.assert_status(&r, 200, "the third connection once a place was free");
}

fn proxy_v1(src: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 40000 {port}\r\n").into_bytes()
}

/// A v2 header for TCP over IPv4 (HAProxy's spec, section 2.2).
fn proxy_v2(src: [u8; 4], src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h
}

fn via_proxy(srv: &Running, header: &[u8], path: &str) -> std::io::Result<Response> {
    let mut c = Conn::open_with_timeout(srv.port, Duration::from_secs(5))?;
    let mut raw = header.to_vec();
    raw.extend_from_slice(&raw_req("GET", srv.port, path, &[]));
    c.roundtrip(&raw)
}

#[test]
fn proxy_protocol_names_the_client_and_is_required() {
    let srv = site(
        "max_connections_per_ip = 1",
        "proxy_protocol = [\"127.0.0.1:{port}\"]",
    );
    let port = srv.port;

    let r = via_proxy(&srv, &proxy_v1("203.0.113.7", port), "/v1").unwrap();
    srv.assert_status(&r, 200, "a request after a PROXY v1 header");
    assert_eq!(remote_addr(&r), "203.0.113.7", "REMOTE_ADDR from PROXY v1");

    let r = via_proxy(&srv, &proxy_v2([198, 51, 100, 9], 4000, port), "/v2").unwrap();
    srv.assert_status(&r, 200, "a request after a PROXY v2 header");
    assert_eq!(remote_addr(&r), "198.51.100.9", "REMOTE_ADDR from PROXY v2");

    let r = via_proxy(&srv, b"PROXY UNKNOWN\r\n", "/unknown").unwrap();
    srv.assert_status(&r, 200, "a request after PROXY UNKNOWN");
    assert_eq!(remote_addr(&r), "127.0.0.1", "PROXY UNKNOWN keeps the peer");

    // Without the header (or with a broken one) nothing is served.
    for (what, header) in [
        ("no PROXY header", &b""[..]),
        (
            "a malformed PROXY header",
            b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n",
        ),
    ] {
        if let Ok(r) = via_proxy(&srv, header, "/bare") {
            srv.fail(format!("{what}: the request was answered: {r}"));
        }
    }

    // max_connections_per_ip counts the client the header names.
    let mut first = Conn::connect(port);
    let mut raw = proxy_v1("203.0.113.1", port);
    raw.extend_from_slice(&raw_req_keepalive("GET", port, "/first", &[], false));
    let r = first.roundtrip(&raw).unwrap();
    srv.assert_status(&r, 200, "first connection from 203.0.113.1");
    let r = via_proxy(&srv, &proxy_v1("203.0.113.2", port), "/other").unwrap();
    srv.assert_status(&r, 200, "a connection from another client");
    let r = via_proxy(&srv, &proxy_v1("203.0.113.1", port), "/second").unwrap();
    srv.assert_status(&r, 503, "a second connection from 203.0.113.1 (limit 1)");
    drop(first);
    let ok = wait_until(Duration::from_secs(5), || {
        via_proxy(&srv, &proxy_v1("203.0.113.1", port), "/again")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    if !ok {
        srv.fail("203.0.113.1 still refused after its first connection closed");
    }
}

#[test]
fn proxy_protocol_on_an_unknown_listener_is_a_config_error() {
    let config = app_config("echo_environ:application", 1, "").replace(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n",
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nproxy_protocol = [\"127.0.0.1:1\"]\n",
    );
    let site = Site::new().app("echo_environ.py").config(&config);
    let out = site.check();
    if out.success() || !out.stderr.contains("server.proxy_protocol[0]") {
        panic!("check should name server.proxy_protocol[0]:\n{out}");
    }
}

/// Thousands of idle keep-alive clients cost the edge little: each waits
/// for its next request outside pingora's request future, with no buffer
/// held (~3.7 KiB each measured, ~50 before; RESULTS.md), and every one of
/// them still serves its next request.
#[test]
fn idle_keep_alive_connections_cost_the_edge_little() {
    const N: u64 = 3000;
    let srv = site("max_connections = 9000\nmax_connections_per_ip = 9000", "");
    let edge_rss =
        |srv: &Running| -> u64 { srv.edge_pids().iter().filter_map(|p| vm_rss_kib(*p)).sum() };
    let before = edge_rss(&srv);
    let (mut client, open) = IdleClient::open("http_idle.py", N as usize, srv.port);
    assert!(
        open.starts_with(&format!("OPEN {N} of {N}; errors: []")),
        "{open}\n{}",
        srv.stderr_tail()
    );
    thread::sleep(Duration::from_millis(500));
    let per_conn = edge_rss(&srv).saturating_sub(before) * 1024 / N;
    eprintln!("{N} idle keep-alive connections: edge {per_conn} B each");
    assert_eq!(client.go_on(""), "REUSED ok");
    assert!(
        // 7.6 KiB while pingora's h2 future sized every connection's task.
        per_conn < 6 * 1024,
        "edge: {per_conn} B per idle connection"
    );
}
