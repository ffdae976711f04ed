//! Many request shapes against tests/apps/validated.py, an app wrapped in
//! wsgiref.validate.validator with warnings turned into errors: any PEP 3333
//! violation by corral makes the request fail or prints a traceback.
mod common;

use common::*;
use std::thread;
use std::time::Duration;

fn validated_server() -> Running {
    Site::new()
        .app("validated.py")
        .config(&app_config(
            "validated:application",
            1,
            "queue_timeout = \"30s\"",
        ))
        .start()
}

/// Fails if the validator complained anywhere in the server's stderr.
fn assert_no_validator_complaints(srv: &Running) {
    // Give late messages (e.g. "Iterator garbage collected without being
    // closed", printed from __del__) a moment to arrive.
    thread::sleep(Duration::from_millis(500));
    let err = srv.stderr();
    for bad in [
        "Traceback",
        "WSGIWarning",
        "AssertionError",
        "garbage collected without being closed",
        "Exception ignored",
    ] {
        if err.contains(bad) {
            srv.fail(format!(
                "stderr contains {bad:?}: the validator found a PEP 3333 violation"
            ));
        }
    }
}

fn expect_ok(srv: &Running, what: &str, raw: &[u8], body_len: Option<usize>) {
    let r = srv.request(raw);
    srv.assert_status(&r, 200, what);
    if method_of(raw) == "HEAD" {
        assert!(r.body.is_empty(), "{what}: HEAD response with a body\n{r}");
        return;
    }
    if let Some(n) = body_len {
        let want = format!("len={n}\n");
        if !r.text().ends_with(&want) {
            srv.fail(format!(
                "{what}: expected the app to see {n} body bytes\n{r}"
            ));
        }
    }
}

#[test]
fn validator_accepts_all_request_shapes() {
    let srv = validated_server();
    let port = srv.port;

    expect_ok(&srv, "GET /", &get_req(port, "/"), Some(0));
    expect_ok(
        &srv,
        "GET with a query",
        &get_req(port, "/search?q=hello%20world&x=1&x=2&empty=&flag"),
        Some(0),
    );
    expect_ok(
        &srv,
        "GET with an encoded path",
        &get_req(port, "/a%20b/c%2Fd/%E2%9C%93"),
        Some(0),
    );
    expect_ok(
        &srv,
        "GET with an empty query",
        &get_req(port, "/q?"),
        Some(0),
    );
    expect_ok(&srv, "HEAD", &simple_req("HEAD", port, "/", true), None);
    expect_ok(
        &srv,
        "OPTIONS",
        &simple_req("OPTIONS", port, "/", true),
        Some(0),
    );
    expect_ok(
        &srv,
        "DELETE",
        &simple_req("DELETE", port, "/thing/1", true),
        Some(0),
    );

    expect_ok(
        &srv,
        "POST with an empty body",
        &post_req(port, "/", "text/plain", b"", true),
        Some(0),
    );
    let small = b"hello=world&x=1";
    expect_ok(
        &srv,
        "POST with a body",
        &post_req(port, "/", "application/x-www-form-urlencoded", small, true),
        Some(small.len()),
    );
    let big = pattern_bytes(1024 * 1024, 3);
    for style in ["read", "readline", "readlines", "iter"] {
        let path = format!("/?read={style}");
        expect_ok(
            &srv,
            &format!("POST 1 MiB, {style}"),
            &post_req(port, &path, "application/octet-stream", &big, true),
            Some(big.len()),
        );
    }
    expect_ok(
        &srv,
        "PUT",
        &method_req(
            "PUT",
            port,
            "/thing/1",
            "application/json",
            b"{\"a\": 1}",
            true,
        ),
        Some(8),
    );
    expect_ok(
        &srv,
        "PATCH",
        &method_req("PATCH", port, "/thing/1", "application/json", b"{}", true),
        Some(2),
    );

    let chunks: [&[u8]; 3] = [b"first chunk\n", &big[..70_000], b"last"];
    let total = chunks.iter().map(|c| c.len()).sum::<usize>();
    expect_ok(
        &srv,
        "chunked upload",
        &chunked_post_req(port, "/up", "application/octet-stream", &chunks, true),
        Some(total),
    );

    let big_header = "a".repeat(6 * 1024);
    let raw = format!("GET /big-header HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {big_header}\r\nConnection: close\r\n\r\n");
    expect_ok(&srv, "6 KB header", raw.as_bytes(), Some(0));

    let mut many = format!("GET /many-headers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for i in 0..50 {
        many.push_str(&format!("X-Header-{i}: value {i}\r\n"));
    }
    many.push_str("Cookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n");
    expect_ok(&srv, "50 headers", many.as_bytes(), Some(0));

    // Keep-alive through the validator.
    let mut conn = srv.connect();
    for i in 0..5 {
        let r = conn
            .get(&format!("/ka/{i}"))
            .unwrap_or_else(|e| srv.fail(format!("keep-alive request {i}: {e}")));
        srv.assert_status(&r, 200, &format!("keep-alive request {i}"));
    }
    drop(conn);

    assert_no_validator_complaints(&srv);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = validated_server();
    // 10 GETs in one write on one connection.
    let mut raw = Vec::new();
    for i in 0..10 {
        raw.extend_from_slice(&simple_req(
            "GET",
            srv.port,
            &format!("/pipe/{i}?i={i}"),
            false,
        ));
    }
    let mut conn = Conn::open_with_timeout(srv.port, Duration::from_secs(15))
        .unwrap_or_else(|e| srv.fail(format!("connect: {e}")));
    conn.send(&raw)
        .unwrap_or_else(|e| srv.fail(format!("sending 10 pipelined requests: {e}")));
    for i in 0..10 {
        let r = conn.read_response("GET").unwrap_or_else(|e| {
            srv.fail(format!(
                "pipelined response #{i} of 10 not received ({e}); the edge must process pipelined requests in order"
            ))
        });
        srv.assert_status(&r, 200, &format!("pipelined request #{i}"));
        let want = format!("path=/pipe/{i} query=i={i} ");
        if !r.text().contains(&want) {
            srv.fail(format!(
                "pipelined response #{i} out of order (expected {want:?})\n{r}"
            ));
        }
    }
    drop(conn);
    assert_no_validator_complaints(&srv);
}
