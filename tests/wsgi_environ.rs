//! The WSGI environ and the request/response plumbing, probed with
//! tests/apps/echo_environ.py.
mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn echo_server(workers: u32) -> Running {
    Site::new()
        .app("echo_environ.py")
        .config(&app_config(
            "echo_environ:application",
            workers,
            "queue_timeout = \"30s\"",
        ))
        .start()
}

/// The JSON answer of the echo endpoint (fails with the server logs if the
/// status is not 200 or the body is not JSON).
fn echo_json(srv: &Running, r: &Response, what: &str) -> Json {
    srv.assert_status(r, 200, what);
    Json::parse(&r.text())
        .unwrap_or_else(|e| srv.fail(format!("{what}: response is not JSON ({e})\n{r}")))
}

fn env_str<'a>(j: &'a Json, key: &str) -> Option<&'a str> {
    j["environ"][key].as_str()
}

fn env_type<'a>(j: &'a Json, key: &str) -> Option<&'a str> {
    j["types"][key].as_str()
}

fn dump_environ(j: &Json) -> String {
    let mut out = String::new();
    for k in j["environ"].keys() {
        out.push_str(&format!(
            "  {k} = {:?} ({})\n",
            env_str(j, k).unwrap_or("?"),
            env_type(j, k).unwrap_or("?")
        ));
    }
    out
}

/// Poll for a marker file written by the app.
fn wait_for_file(path: &Path, timeout: Duration) -> Option<String> {
    if wait_until(timeout, || path.exists()) {
        std::fs::read_to_string(path).ok()
    } else {
        None
    }
}

#[test]
fn required_environ_keys_and_types() {
    let srv = echo_server(2);
    let mut conn = srv.connect();
    let client_port = conn.local_port();
    let target = "/caf%C3%A9?a=1&b=%20x";
    let host = format!("127.0.0.1:{}", srv.port);
    let raw = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Custom-Header: hello\r\nConnection: close\r\n\r\n"
    );
    let r = conn
        .roundtrip(raw.as_bytes())
        .unwrap_or_else(|e| srv.fail(format!("GET {target}: {e}")));
    let j = echo_json(&srv, &r, "GET /caf%C3%A9");

    let port_s = srv.port.to_string();
    let client_port_s = client_port.to_string();
    let expected: Vec<(&str, &str)> = vec![
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        // UTF-8 bytes of "café", percent-decoded and shown as latin-1 chars.
        ("PATH_INFO", "/caf\u{c3}\u{a9}"),
        ("QUERY_STRING", "a=1&b=%20x"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", port_s.as_str()),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", client_port_s.as_str()),
        ("HTTP_HOST", host.as_str()),
        ("HTTP_X_CUSTOM_HEADER", "hello"),
        ("HTTP_X_FORWARDED_FOR", "127.0.0.1"),
        ("HTTP_X_FORWARDED_PROTO", "http"),
        ("REQUEST_URI", target),
        ("RAW_URI", target),
        ("wsgi.url_scheme", "http"),
        ("wsgi.version", "(1, 0)"),
        ("wsgi.run_once", "False"),
    ];
    let mut problems = Vec::new();
    for (key, want) in &expected {
        let got = env_str(&j, key);
        if got != Some(*want) {
            problems.push(format!("{key}: expected {want:?}, got {got:?}"));
        }
    }
    let expected_types = [
        ("wsgi.version", "tuple"),
        ("wsgi.url_scheme", "str"),
        ("wsgi.multithread", "bool"),
        ("wsgi.multiprocess", "bool"),
        ("wsgi.run_once", "bool"),
    ];
    for (key, want) in expected_types {
        let got = env_type(&j, key);
        if got != Some(want) {
            problems.push(format!("type of {key}: expected {want}, got {got:?}"));
        }
    }
    for key in ["wsgi.input", "wsgi.errors", "HTTP_X_FORWARDED_HOST"] {
        if j["environ"].get(key).is_none() {
            problems.push(format!("{key} missing"));
        }
    }
    if let Some(xfh) = env_str(&j, "HTTP_X_FORWARDED_HOST") {
        if !xfh.starts_with("127.0.0.1") {
            problems.push(format!(
                "HTTP_X_FORWARDED_HOST should be the Host (127.0.0.1...), got {xfh:?}"
            ));
        }
    }
    for key in ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        if j["environ"].get(key).is_some() {
            problems.push(format!("{key} must not be in the environ (PEP 3333)"));
        }
    }
    // PEP 3333: every CGI-style key (no dot) holds a native str.
    for key in j["types"].keys() {
        if !key.contains('.') && env_type(&j, key) != Some("str") {
            problems.push(format!(
                "{key} has type {:?}, must be str",
                env_type(&j, key)
            ));
        }
    }
    if !problems.is_empty() {
        srv.fail(format!(
            "environ problems:\n  {}\nfull environ:\n{}",
            problems.join("\n  "),
            dump_environ(&j)
        ));
    }
}

#[test]
fn post_sets_content_type_and_length() {
    let srv = echo_server(1);
    let body = b"x=1&y=caf%C3%A9";
    let r = srv.post("/form?k=v", "application/x-www-form-urlencoded", body);
    let j = echo_json(&srv, &r, "POST /form");
    let len_s = body.len().to_string();
    let checks = [
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/form"),
        ("QUERY_STRING", "k=v"),
        ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("CONTENT_LENGTH", len_s.as_str()),
    ];
    for (key, want) in checks {
        assert_eq!(
            env_str(&j, key),
            Some(want),
            "{key}\nenviron:\n{}",
            dump_environ(&j)
        );
    }
    assert_eq!(
        j["body_text"].as_str(),
        Some("x=1&y=caf%C3%A9"),
        "body seen by the app"
    );
}

/// `TE: trailers` makes the edge tell the worker the client takes
/// trailers (`x-corral-trailers`, as for every HTTP/2 client): that is the
/// edge's word to the worker, not a header of the client's for the app.
#[test]
fn the_edges_own_fields_are_not_client_headers() {
    let config = app_config("echo_environ:application", 1, "")
        .replace("[server]\n", "[server]\nh2c = true\n");
    let srv = Site::new().app("echo_environ.py").config(&config).start();
    let url = format!("http://127.0.0.1:{}/te", srv.port);
    for extra in [
        &["-H", "TE: trailers"][..],
        &["--http2-prior-knowledge"][..],
    ] {
        let (status, body, out) = curl_fetch(&url, extra);
        assert_eq!(status, 200, "{out}");
        let j = Json::parse(&String::from_utf8_lossy(&body)).expect("JSON");
        let ours: Vec<&str> = j["environ"]
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("HTTP_X_CORRAL"))
            .collect();
        assert!(ours.is_empty(), "{extra:?}: {ours:?}\n{}", dump_environ(&j));
    }
}

#[test]
fn duplicate_headers_are_joined_with_comma() {
    let srv = echo_server(1);
    let raw = format!(
        "GET /dup HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Dup: a\r\nX-Dup: b\r\nX-Some-Dashed-Name: z\r\nConnection: close\r\n\r\n",
        srv.port
    );
    let r = srv.request(raw.as_bytes());
    let j = echo_json(&srv, &r, "GET /dup");
    assert_eq!(
        env_str(&j, "HTTP_X_DUP"),
        Some("a, b"),
        "environ:\n{}",
        dump_environ(&j)
    );
    assert_eq!(
        env_str(&j, "HTTP_X_SOME_DASHED_NAME"),
        Some("z"),
        "environ:\n{}",
        dump_environ(&j)
    );
}

#[test]
fn every_wsgi_input_read_style_returns_the_exact_body() {
    let srv = echo_server(1);
    let body = pattern_bytes(3 * 1024 * 1024, 42);
    let want_sha = sha256_hex(&body);
    let styles = [
        "cl",
        "read",
        "readn&n=65536",
        "readn&n=1000",
        "readline",
        "readline_n&n=100",
        "readlines",
        "iter",
    ];
    for style in styles {
        let path = format!("/upload?read={style}");
        let r = srv.post(&path, "application/octet-stream", &body);
        let j = echo_json(&srv, &r, &format!("POST {path}"));
        let got_len = j["body_len"].as_i64();
        let got_sha = j["body_sha256"].as_str().unwrap_or("");
        if got_len != Some(body.len() as i64) || got_sha != want_sha {
            srv.fail(format!(
                "read style {style}: app saw {got_len:?} bytes with sha256 {got_sha}, expected {} bytes with sha256 {want_sha}",
                body.len()
            ));
        }
        assert_eq!(
            env_str(&j, "CONTENT_LENGTH"),
            Some(body.len().to_string().as_str()),
            "CONTENT_LENGTH for style {style}"
        );
    }
}

#[test]
fn chunked_upload_arrives_with_content_length() {
    let srv = echo_server(1);
    let data = pattern_bytes(1 + 10 + 100 + 1000 + 10_000 + 65_536 + 200_000 + 7, 7);
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for n in [1usize, 10, 100, 1000, 10_000, 65_536, 200_000, 7] {
        chunks.push(&data[at..at + n]);
        at += n;
    }
    let raw = chunked_post_req(
        srv.port,
        "/chunked?read=read",
        "application/octet-stream",
        &chunks,
        true,
    );
    let r = srv.request(&raw);
    let j = echo_json(&srv, &r, "chunked POST");
    assert_eq!(
        env_str(&j, "CONTENT_LENGTH"),
        Some(data.len().to_string().as_str()),
        "the edge buffers chunked bodies, so CONTENT_LENGTH should be the decoded size\nenviron:\n{}",
        dump_environ(&j)
    );
    assert_eq!(
        j["body_len"].as_i64(),
        Some(data.len() as i64),
        "body length seen by the app"
    );
    assert_eq!(
        j["body_sha256"].as_str(),
        Some(sha256_hex(&data).as_str()),
        "body sha256 seen by the app"
    );
}

#[test]
fn write_callable() {
    let srv = echo_server(1);
    let r = srv.get("/write");
    srv.assert_status(&r, 200, "GET /write");
    if r.body != b"part1-part2-part3" {
        srv.fail(format!(
            "write() output and the returned iterable must be concatenated in order\n{r}"
        ));
    }
}

#[test]
fn response_iterable_close_is_called() {
    let srv = echo_server(1);
    let mut conn = srv.connect();
    let r = conn
        .get("/gen?n=5&size=16&marker=closed-1")
        .unwrap_or_else(|e| srv.fail(format!("GET /gen: {e}")));
    srv.assert_status(&r, 200, "GET /gen");
    let mut want = Vec::new();
    for i in 0..5 {
        let mut chunk = format!("{i:06}:").into_bytes();
        chunk.resize(16, b'.');
        want.extend_from_slice(&chunk);
    }
    if r.body != want {
        srv.fail(format!(
            "generator body mismatch, expected {:?}\n{r}",
            String::from_utf8_lossy(&want)
        ));
    }
    assert!(
        r.chunked && r.header("content-length").is_none(),
        "a response of unknown length to an HTTP/1.1 keep-alive request should be chunked\n{r}"
    );
    let marker = srv.path().join("closed-1");
    if wait_for_file(&marker, Duration::from_secs(10)).is_none() {
        srv.fail("close() of the response iterable was not called within 10 s");
    }
}

#[test]
fn response_iterable_close_is_called_when_client_disconnects() {
    let srv = echo_server(1);
    // 400 chunks x 16 KiB, 10 ms apart: ~4 s and 6.4 MiB if nobody stops it.
    let mut conn = srv.connect();
    conn.send(&simple_req(
        "GET",
        srv.port,
        "/gen?n=400&size=16384&delay=0.01&marker=closed-2",
        false,
    ))
    .unwrap_or_else(|e| srv.fail(format!("send: {e}")));
    let (status, _) = conn
        .read_head()
        .unwrap_or_else(|e| srv.fail(format!("reading response head: {e}")));
    assert_eq!(status, 200, "GET /gen status");
    let got = conn
        .read_bytes(40_000)
        .unwrap_or_else(|e| srv.fail(format!("reading the first body bytes: {e}")));
    assert!(!got.is_empty(), "no body bytes before disconnecting");
    drop(conn); // hang up mid-stream
    let marker = srv.path().join("closed-2");
    match wait_for_file(&marker, Duration::from_secs(20)) {
        Some(text) => eprintln!("marker after disconnect: {}", text.trim()),
        None => {
            srv.fail("close() was not called within 20 s after the client disconnected mid-stream")
        }
    }
    // The worker must be usable again.
    let r = srv.get("/pid");
    srv.assert_status(&r, 200, "GET /pid after a client disconnect");
}

/// An informational or out-of-range status from start_response is the
/// app's error, answered 500 at once with the reason in the log. A 1xx
/// made the edge wait for a final status until app.timeout (504 after
/// 30 s), then the worker was killed as stuck (found by helper-22).
#[test]
fn a_status_that_is_not_final_is_a_500_at_once() {
    let srv = echo_server(1);
    for code in [100, 103, 199, 600, 99] {
        let url = format!("http://127.0.0.1:{}/status/{code}", srv.port);
        let t0 = std::time::Instant::now();
        let (status, _, out) = curl_fetch(&url, &["--max-time", "10"]);
        assert_eq!(status, 500, "status {code}: {out}\n{}", srv.stderr_tail());
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "status {code} took {:?}",
            t0.elapsed()
        );
    }
    assert!(srv
        .stderr()
        .contains("is informational: a WSGI response needs a final status"));
    let r = srv.get("/pid");
    srv.assert_status(&r, 200, "GET /pid afterwards");
    assert!(
        !srv.stderr().contains("app.timeout"),
        "{}",
        srv.stderr_tail()
    );
}

#[test]
fn status_204_and_304_have_no_body() {
    let srv = echo_server(1);
    let mut conn = srv.connect();
    for code in [204u16, 304] {
        let r = conn
            .get(&format!("/status/{code}"))
            .unwrap_or_else(|e| srv.fail(format!("GET /status/{code}: {e}")));
        srv.assert_status(&r, code, &format!("GET /status/{code}"));
        assert!(
            r.body.is_empty(),
            "{code} response must not have a body\n{r}"
        );
        assert!(
            !r.chunked,
            "{code} response must not have Transfer-Encoding: chunked\n{r}"
        );
    }
    // Framing is intact: the next response on the same connection parses.
    let r = conn.get("/pid").unwrap_or_else(|e| {
        srv.fail(format!(
            "GET /pid after 204/304 on the same connection: {e}"
        ))
    });
    srv.assert_status(&r, 200, "GET /pid after 204/304");
    assert!(
        r.text().trim().parse::<u32>().is_ok(),
        "expected a pid\n{r}"
    );
}

#[test]
fn exception_before_start_response_is_500_with_traceback_in_stderr() {
    let srv = echo_server(1);
    let r = srv.get("/exc");
    srv.assert_status(&r, 500, "GET /exc");
    if !srv.wait_for_stderr("boom from echo_environ /exc", Duration::from_secs(10)) {
        srv.fail("the exception message did not show up in stderr within 10 s");
    }
    let err = srv.stderr();
    for needle in [
        "Traceback (most recent call last)",
        "RuntimeError: boom from echo_environ /exc",
    ] {
        if !err.contains(needle) {
            srv.fail(format!(
                "stderr should contain the app's traceback ({needle:?} missing)"
            ));
        }
    }
    // The worker survived (or was replaced) and serves the next request.
    let r = srv.get("/pid");
    srv.assert_status(&r, 200, "GET /pid after an app exception");
}

#[test]
fn wsgi_errors_goes_to_stderr() {
    let srv = echo_server(1);
    let r = srv.get("/errors");
    srv.assert_status(&r, 200, "GET /errors");
    if !srv.wait_for_stderr(
        "corral-test wsgi.errors marker 7d1f3c",
        Duration::from_secs(10),
    ) {
        srv.fail("text written to wsgi.errors (and flushed) did not reach stderr within 10 s");
    }
}

#[test]
fn file_wrapper_serves_the_file() {
    let srv = echo_server(1);
    let r = srv.get("/filewrapper");
    srv.assert_status(&r, 200, "GET /filewrapper");
    let want: Vec<u8> = (0..1024).flat_map(|_| 0u8..=255).collect();
    if r.body != want {
        srv.fail(format!(
            "file_wrapper body: {} bytes (sha256 {}), expected {} bytes (sha256 {})",
            r.body.len(),
            sha256_hex(&r.body),
            want.len(),
            sha256_hex(&want)
        ));
    }
}

#[test]
fn head_request_gets_headers_but_no_body() {
    let srv = echo_server(1);
    let mut conn = srv.connect();
    let h = conn
        .roundtrip(&simple_req("HEAD", srv.port, "/head", false))
        .unwrap_or_else(|e| srv.fail(format!("HEAD /head: {e}")));
    srv.assert_status(&h, 200, "HEAD /head");
    assert!(h.body.is_empty(), "HEAD must not return a body\n{h}");
    if let Some(cl) = h.header("content-length") {
        assert_eq!(cl, "1234", "HEAD Content-Length should match GET\n{h}");
    }
    let g = conn
        .get("/head")
        .unwrap_or_else(|e| srv.fail(format!("GET /head after HEAD on the same connection: {e}")));
    srv.assert_status(&g, 200, "GET /head");
    assert_eq!(g.body, vec![b'x'; 1234], "GET /head body\n{g}");
}

/// An app may send a few hundred response fields (cookies, CSP, tracing):
/// all reach the client (301 fields were a 502 "malformed response head").
#[test]
fn hundreds_of_response_fields_all_reach_the_client() {
    let srv = echo_server(1);
    let url = format!("http://127.0.0.1:{}/many-headers?n=300", srv.port);
    let out = curl(&["-sS", "-D", "-", &url]);
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    for i in [0, 63, 64, 255, 256, 299] {
        let field = format!("\r\nX-Field-{i}: value {i}\r\n");
        assert!(out.stdout.contains(&field), "no X-Field-{i} in\n{out}");
    }
    let fields = out.stdout.matches("\r\nX-Field-").count();
    assert_eq!(fields, 300, "{out}");
    assert!(out.stdout.ends_with("300 fields"), "{out}");
}
