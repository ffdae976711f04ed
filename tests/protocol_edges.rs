//! HTTP corners that real clients hit on day one (issue "Real clients, real
//! deploys"), each checked the way the client meets it:
//!
//! * HTTP/1.0 without keep-alive is closed after the response (`ab` hung);
//! * with `h2c = true`, a short HTTP/1.0 request is answered and a silent
//!   connection is closed after `header_timeout` (the h2c preface sniffing
//!   waited for 24 bytes, past every deadline);
//! * `Expect: 100-continue` gets `100 Continue` (curl's uploads waited 1 s),
//!   417 for other expectations, 413 at once when the body is too large;
//! * `OPTIONS *` is answered by the edge with `Allow`, over h1 and h2;
//! * ALPN `http/1.0` alone is negotiated (`curl --http1.0 https://…`);
//! * an upload refused with 413 while the client is still sending reaches
//!   the client as a 413 (lingering close), over plain HTTP and TLS, h1 and
//!   h2 (curl, requests, httpx), and the 413 names the key to raise;
//! * an IP address in SNI is served without a warning per handshake;
//! * `max_request_line` holds over HTTP/2 (414), as over HTTP/1.1.
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Sends `raw` on a fresh connection and reads until the server closes
/// (or `limit` passes). Returns what was read and whether it closed.
fn send_and_read_to_close(port: u16, raw: &[u8], limit: Duration) -> (Vec<u8>, bool, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    s.write_all(raw).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (got, true, started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (got, true, started.elapsed()),
        }
    }
    (got, false, started.elapsed())
}

fn hello_site(extra_server: &str, extra_limits: &str) -> Running {
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n{extra_server}\n\
         [app]\nmodule = \"echo_environ:application\"\nchdir = \".\"\nworkers = 2\n\n\
         [limits]\nmax_body = \"16MiB\"\n{extra_limits}\n\n[log]\naccess = \"stdout\"\n"
    );
    Site::new().app("echo_environ.py").config(&config).start()
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() {
    let site = hello_site("", "");
    let (got, closed, took) = send_and_read_to_close(
        site.port,
        b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "got: {text}");
    assert!(
        closed && took < Duration::from_secs(2),
        "kept open {took:?}"
    );
    assert!(!text.contains("connection: keep-alive"), "got: {text}");
    // Asked for keep-alive: it stays open (and says so).
    let mut conn = Conn::connect(site.port);
    let raw = "GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    let r1 = conn.roundtrip(raw.as_bytes()).expect("first");
    let r2 = conn
        .roundtrip(raw.as_bytes())
        .expect("second on the same connection");
    assert_eq!((r1.status, r2.status), (200, 200));
}

#[test]
fn ab_without_keep_alive_finishes() {
    if Command::new("ab").arg("-V").output().is_err() {
        panic!("ab (apache2-utils) is missing: scripts/deps.sh --test installs it");
    }
    let site = hello_site("", "");
    let url = format!("http://127.0.0.1:{}/ab", site.port);
    for args in [
        vec!["-n", "20", "-c", "1"],
        vec!["-k", "-n", "200", "-c", "4"],
    ] {
        let out = run_with_timeout(
            Command::new("ab").args(&args).arg(&url),
            Duration::from_secs(20),
        );
        assert!(!out.timed_out() && out.success(), "ab {args:?}:\n{out}");
        let want = format!("Complete requests:      {}", args[args.len() - 3]);
        assert!(out.stdout.contains(&want), "ab {args:?}:\n{out}");
        assert!(out.stdout.contains("Failed requests:        0"), "{out}");
        assert!(!out.stdout.contains("Non-2xx"), "{out}");
    }
}

#[test]
fn h2c_sniffing_keeps_the_http1_parser_and_the_header_deadline() {
    let site = hello_site("h2c = true", "header_timeout = \"2s\"\nmax_connections = 5");
    // 18 bytes, fewer than the h2 preface: answered at once.
    let (got, closed, took) = send_and_read_to_close(
        site.port,
        b"GET /x HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed && took < Duration::from_secs(1), "took {took:?}");
    // Five silent connections fill max_connections; header_timeout frees them.
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", site.port)).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut served = false;
    while started.elapsed() < Duration::from_secs(8) {
        let r = curl(&[
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{}/after", site.port),
        ]);
        if r.stdout.trim() == "200" {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "site still locked out {:?} after 5 silent sockets",
        started.elapsed()
    );
    drop(silent);
    // h2c itself still works.
    let r = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &format!("http://127.0.0.1:{}/h2", site.port),
    ]);
    assert_eq!(r.stdout.trim(), "2", "{r}");
}

#[test]
fn expect_100_continue_is_answered() {
    let site = hello_site("", "");
    let body = vec![b'u'; 2 << 20];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut conn = Conn::connect(site.port);
    conn.send(head.as_bytes()).unwrap();
    conn.set_read_timeout(Duration::from_millis(800));
    let (status, _) = conn
        .read_head()
        .expect("a 100 Continue before the body is sent");
    assert_eq!(status, 100);
    conn.set_read_timeout(Duration::from_secs(10));
    conn.send(&body).unwrap();
    let resp = conn.read_response("POST").unwrap();
    assert_eq!(resp.status, 200);
    let environ = resp.json();
    let len = environ
        .get("environ")
        .and_then(|e| e.get("CONTENT_LENGTH"))
        .and_then(|v| v.as_str());
    assert_eq!(len, Some("2097152"));

    // curl waits 1 s for a 100 that never comes; with it the upload is quick.
    let file = site.path().join("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let started = Instant::now();
    let r = curl(&[
        "-T",
        file.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{}/up", site.port),
    ]);
    assert_eq!(r.stdout.trim(), "200", "{r}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "curl -T took {:?}",
        started.elapsed()
    );

    // Any other expectation: 417. Too large: 413 at once, no 100.
    let r = conn_roundtrip_new(
        site.port,
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: magic\r\n\r\n",
    );
    assert_eq!(r.0, 417, "{}", r.1);
    let r = conn_roundtrip_new(
        site.port,
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(r.0, 413, "{}", r.1);
}

/// Sends a head on a new connection, returns the first final status and the text.
fn conn_roundtrip_new(port: u16, head: &str) -> (u16, String) {
    let (got, _, _) = send_and_read_to_close(port, head.as_bytes(), Duration::from_secs(3));
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn options_star_is_answered_by_the_edge() {
    let site = hello_site("h2c = true", "");
    let (status, text) = conn_roundtrip_new(
        site.port,
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("\r\nallow: get, head, post"), "{text}");
    // Not the app: echo_environ would answer with its JSON environ.
    assert!(!text.contains("PATH_INFO"), "{text}");
    let (status, text) = conn_roundtrip_new(
        site.port,
        "GET * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{text}");
    let r = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "OPTIONS",
        "--request-target",
        "*",
        "-i",
        &format!("http://127.0.0.1:{}", site.port),
    ]);
    let out = r.stdout.to_ascii_lowercase();
    assert!(
        out.starts_with("http/2 200") && out.contains("allow: get"),
        "{r}"
    );
}

fn tls_site() -> (Running, u16) {
    let tls_port = free_port();
    let site = Site::new().app("echo_environ.py");
    self_signed_cert(site.path());
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n\n\
         [app]\nmodule = \"echo_environ:application\"\nchdir = \".\"\nworkers = 2\n\n\
         [limits]\nmax_body = \"16MiB\"\n\n[[limits.route]]\npath = \"/small/\"\nmax_body = \"1MiB\"\n\n\
         [tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n[[tls.cert]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
         [log]\naccess = \"stdout\"\nlevel = \"info\"\n"
    );
    (site.config(&config).start(), tls_port)
}

#[test]
fn alpn_http10_alone_is_negotiated() {
    let (site, tls_port) = tls_site();
    let ca = site.path().join("cert.pem");
    let url = format!("https://127.0.0.1:{tls_port}/old");
    let r = curl(&[
        "--http1.0",
        "--cacert",
        ca.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    // (The answer itself says HTTP/1.1, as nginx's does.)
    assert_eq!(r.stdout.trim(), "200", "{r}");
    let r = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &url,
    ]);
    assert_eq!(r.stdout.trim(), "200 2", "{r}");
}

#[test]
fn an_oversized_upload_reads_its_413_over_plain_and_tls() {
    let (site, tls_port) = tls_site();
    let ca = site.path().join("cert.pem");
    let file = site.path().join("big.bin");
    std::fs::write(&file, vec![b'b'; 12 << 20]).unwrap();
    let urls = [
        format!("http://127.0.0.1:{}/small/up", site.port),
        format!("https://127.0.0.1:{tls_port}/small/up"),
    ];
    for url in &urls {
        // `Expect:` off: the body is already on its way when the 413 comes.
        let body = format!("@{}", file.display());
        let (status, text, out) = curl_fetch(
            url,
            &[
                "--http1.1",
                "-H",
                "Expect:",
                "--cacert",
                ca.to_str().unwrap(),
                "--data-binary",
                &body,
            ],
        );
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 413, "{url}: {out}");
        assert!(
            text.contains("1048576")
                && text.contains("[[limits.route]]")
                && text.contains("/small/"),
            "{url}: {text}"
        );
    }
    python_clients_read_the_413(&site, tls_port, &file);
    let (status, text, _) = curl_fetch(
        &format!("http://127.0.0.1:{}/big", site.port),
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            "Expect:",
            "-H",
            "Content-Length: 99999999",
        ],
    );
    let _ = status;
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("[limits] max_body"), "{text}");
    assert!(
        site.wait_for_stderr("Request body too large", Duration::from_secs(2)),
        "the 413 is not in the error log:\n{}",
        site.stderr_tail()
    );
}

/// The clients from the issue: requests over TLS got SSLEOFError (the
/// connection closed under its upload), httpx over h2 hung (it waits for
/// flow-control credit that a reset never gives).
fn python_clients_read_the_413(site: &Running, tls_port: u16, file: &std::path::Path) {
    let script = r#"
import sys, httpx, requests
url, ca, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
r = requests.post(url, data=data, verify=ca, timeout=20)
print("requests", r.status_code, "1048576" in r.text)
with httpx.Client(http2=True, verify=ca, timeout=20) as c:
    r = c.post(url, content=data)
    print("httpx", r.http_version, r.status_code, "1048576" in r.text)
"#;
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .arg(format!("https://127.0.0.1:{tls_port}/small/up"))
            .arg(site.path().join("cert.pem"))
            .arg(file),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.stdout.trim(),
        "requests 413 True\nhttpx HTTP/2 413 True",
        "{out}"
    );
}

#[test]
fn a_websocket_upgrade_to_a_wsgi_app_is_refused_plainly() {
    let site = hello_site("", "");
    let (status, text) = conn_roundtrip_new(
        site.port,
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 501, "{text}");
    assert!(
        text.contains("WSGI") && text.contains("WebSocket"),
        "{text}"
    );
    assert!(
        !text.contains("PATH_INFO"),
        "the app must not see it: {text}"
    );
}

/// corral is not a forward proxy: a plain CONNECT (a tunnel to another
/// host) is refused with 405, and never reaches the app. Only HTTP/2's
/// extended CONNECT for a WebSocket is taken; a plain one over h2 is
/// checked in tests/clients/h2_websocket.py.
#[test]
fn a_plain_connect_is_refused_not_tunnelled() {
    let site = hello_site("h2c = true", "");
    let (status, text) = conn_roundtrip_new(
        site.port,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(status, 405, "{text}");
    assert!(
        !text.contains("PATH_INFO"),
        "the app must not see it: {text}"
    );
    // curl's own tunnel request, through corral as if it were a proxy.
    let r = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_connect}",
        "--proxytunnel",
        "-x",
        &format!("http://127.0.0.1:{}", site.port),
        "http://example.invalid/",
    ]);
    assert_eq!(r.stdout.trim(), "405", "{r}");
}

/// Clients that put an IP address in SNI (openssl s_client, some monitors)
/// are served; rustls' per-handshake warning about it is not an operator's
/// concern and stays out of the error log at `level = "info"`.
#[test]
fn an_ip_address_in_sni_is_served_without_a_warning_per_handshake() {
    let (site, tls_port) = tls_site();
    for version in ["-tls1_3", "-tls1_2"] {
        let out = run_with_timeout(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{tls_port}")])
                .args(["-servername", "127.0.0.1", version])
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(10),
        );
        assert!(out.stdout.contains("Cipher is"), "{version}: {out}");
    }
    let r = site.get("/after");
    site.assert_status(&r, 200, "after the handshakes");
    assert!(
        !site.stderr().contains("SNI"),
        "a warning per handshake:\n{}",
        site.stderr_tail()
    );
}

/// `max_request_line` holds over HTTP/2 too, where there is no request
/// line: a method and :path longer than the limit get 414 from curl's and
/// python h2's requests alike, as over HTTP/1.1 (and as nginx answers on
/// both). HTTP/2 let a 9,000-byte URL through to the app.
#[test]
fn max_request_line_holds_over_http2() {
    let cfg = app_config("echo_environ:application", 1, "")
        .replacen("[server]\n", "[server]\nh2c = true\n", 1)
        .replacen("[limits]\n", "[limits]\nmax_request_line = \"1KiB\"\n", 1);
    let srv = Site::new().app("echo_environ.py").config(&cfg).start();
    let url = |n: usize| format!("http://127.0.0.1:{}/{}", srv.port, "a".repeat(n));
    for (len, want) in [(900, 200), (1100, 414)] {
        let (status, _, out) = curl_fetch(&url(len), &["--http2-prior-knowledge"]);
        assert_eq!(status, want, "curl h2, a path of {len}: {out}");
        let (status, _, out) = curl_fetch(&url(len), &[]);
        assert_eq!(status, want, "curl HTTP/1.1, a path of {len}: {out}");
    }
    let query = format!("/q?{}", "q".repeat(3000));
    let got = h2_get(srv.port, &query, &[]);
    assert_eq!(got[0]["status"], 414, "{got:?}");
}
