//! A real Flask app (tests/apps/flask_app.py) in the test virtualenv
//! (`$CORRAL_TEST_VENV`, default target/test-venv, created on first use).
mod common;

use common::*;

fn flask_server() -> Running {
    Site::new()
        .app("flask_app.py")
        .config(&app_config(
            "flask_app:app",
            1,
            "virtualenv = \"{venv}\"\nqueue_timeout = \"30s\"",
        ))
        .start()
}

fn json_of(srv: &Running, r: &Response, what: &str) -> Json {
    srv.assert_status(r, 200, what);
    Json::parse(&r.text())
        .unwrap_or_else(|e| srv.fail(format!("{what}: body is not JSON ({e})\n{r}")))
}

#[test]
fn flask_index() {
    let srv = flask_server();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET /");
    assert_eq!(r.text(), "flask ok", "{r}");
}

#[test]
fn flask_query_args() {
    let srv = flask_server();
    let r = srv.get("/query?name=corral%20test&n=3&tag=a&tag=b");
    let j = json_of(&srv, &r, "GET /query");
    assert_eq!(j["name"].as_str(), Some("corral test"), "{r}");
    assert_eq!(j["n"].as_i64(), Some(3), "{r}");
    assert_eq!(j["args"]["tag"][0].as_str(), Some("a"), "{r}");
    assert_eq!(j["args"]["tag"][1].as_str(), Some("b"), "{r}");
}

/// curl sends `é` in a URL as raw UTF-8 bytes: Flask decodes the
/// environ's latin-1 query back to "café". The query was handed over
/// already decoded, and Flask answered 500 (UnicodeDecodeError).
#[test]
fn flask_query_with_raw_utf8_from_curl() {
    let srv = flask_server();
    let url = format!("http://127.0.0.1:{}/query?name=caf\u{e9}&n=1", srv.port);
    let (status, body, out) = curl_fetch(&url, &[]);
    assert_eq!(status, 200, "{out}\n{}", srv.stderr_tail());
    let j = Json::parse(&String::from_utf8_lossy(&body)).expect("JSON");
    assert_eq!(j["name"].as_str(), Some("caf\u{e9}"), "{out}");
}

#[test]
fn flask_post_form() {
    let srv = flask_server();
    let body = b"name=corral+test&city=Z%C3%BCrich&multi=1&multi=2";
    let r = srv.post("/form", "application/x-www-form-urlencoded", body);
    let j = json_of(&srv, &r, "POST /form");
    assert_eq!(j["form"]["name"][0].as_str(), Some("corral test"), "{r}");
    assert_eq!(j["form"]["city"][0].as_str(), Some("Z\u{fc}rich"), "{r}");
    assert_eq!(j["form"]["multi"][1].as_str(), Some("2"), "{r}");
    assert_eq!(
        j["content_type"].as_str(),
        Some("application/x-www-form-urlencoded"),
        "{r}"
    );
}

#[test]
fn flask_json_in_and_out() {
    let srv = flask_server();
    let body = br#"{"name": "caf\u00e9", "nums": [1, 2, 3, 4.5], "nested": {"ok": true}}"#;
    let r = srv.post("/json", "application/json", body);
    let j = json_of(&srv, &r, "POST /json");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "Content-Type {ct:?}\n{r}"
    );
    assert_eq!(j["total"].as_f64(), Some(10.5), "{r}");
    assert_eq!(j["count"].as_i64(), Some(4), "{r}");
    assert_eq!(j["received"]["name"].as_str(), Some("caf\u{e9}"), "{r}");
    assert_eq!(j["received"]["nested"]["ok"].as_bool(), Some(true), "{r}");
}

#[test]
fn flask_multipart_upload() {
    let srv = flask_server();
    let data = pattern_bytes(3 * 1024 * 1024 + 123, 99);
    let (ctype, body) = multipart(
        &[("note", "hello upload")],
        &[("file", "data.bin", "application/octet-stream", &data[..])],
    );
    let r = srv.post("/upload", &ctype, &body);
    let j = json_of(&srv, &r, "POST /upload (multipart)");
    let mut problems = Vec::new();
    if j["size"].as_i64() != Some(data.len() as i64) {
        problems.push(format!(
            "size {:?}, expected {}",
            j["size"].as_i64(),
            data.len()
        ));
    }
    if j["sum32"].as_i64() != Some(sum32(&data) as i64) {
        problems.push(format!(
            "sum32 {:?}, expected {}",
            j["sum32"].as_i64(),
            sum32(&data)
        ));
    }
    let sha = sha256_hex(&data);
    if j["sha256"].as_str() != Some(sha.as_str()) {
        problems.push(format!("sha256 {:?}, expected {sha}", j["sha256"].as_str()));
    }
    if j["filename"].as_str() != Some("data.bin") {
        problems.push(format!("filename {:?}", j["filename"].as_str()));
    }
    if j["fields"]["note"].as_str() != Some("hello upload") {
        problems.push(format!("field note {:?}", j["fields"]["note"].as_str()));
    }
    if !problems.is_empty() {
        srv.fail(format!("upload mismatch: {}\n{r}", problems.join("; ")));
    }
}

#[test]
fn flask_multipart_upload_with_curl() {
    let srv = flask_server();
    let data = pattern_bytes(1024 * 1024 + 7, 5);
    let file = srv.path().join("curl-upload.bin");
    std::fs::write(&file, &data).expect("write upload file");
    let form = format!("file=@{}", file.display());
    let url = format!("http://127.0.0.1:{}/upload", srv.port);
    let (status, body, out) = curl_fetch(&url, &["-F", form.as_str(), "-F", "note=from curl"]);
    if status != 200 {
        srv.fail(format!(
            "curl upload got status {status}: {}\n{out}",
            snippet(&body, 1000)
        ));
    }
    let j = Json::parse(&String::from_utf8_lossy(&body)).unwrap_or_else(|e| {
        srv.fail(format!(
            "curl upload: body is not JSON ({e}): {}",
            snippet(&body, 1000)
        ))
    });
    assert_eq!(
        j["size"].as_i64(),
        Some(data.len() as i64),
        "{}",
        snippet(&body, 1000)
    );
    assert_eq!(
        j["sha256"].as_str(),
        Some(sha256_hex(&data).as_str()),
        "{}",
        snippet(&body, 1000)
    );
    assert_eq!(
        j["fields"]["note"].as_str(),
        Some("from curl"),
        "{}",
        snippet(&body, 1000)
    );
}

#[test]
fn flask_streaming_response() {
    let srv = flask_server();
    let mut conn = srv.connect();
    let r = conn
        .get("/stream?n=50")
        .unwrap_or_else(|e| srv.fail(format!("GET /stream: {e}")));
    srv.assert_status(&r, 200, "GET /stream");
    let want: String = (0..50).map(|i| format!("line {i}\n")).collect();
    assert_eq!(r.text(), want, "streamed body\n{r}");
    assert!(
        r.chunked,
        "a generator response on a keep-alive connection should be chunked\n{r}"
    );
    // The connection is still usable afterwards.
    let r2 = conn
        .get("/")
        .unwrap_or_else(|e| srv.fail(format!("GET / after a stream: {e}")));
    srv.assert_status(&r2, 200, "GET / after a stream");
}

#[test]
fn flask_redirect() {
    let srv = flask_server();
    let r = srv.get("/redirect");
    srv.assert_status(&r, 302, "GET /redirect");
    let loc = r.header("location").unwrap_or("");
    assert!(
        loc.ends_with("/target"),
        "Location should point to /target, got {loc:?}\n{r}"
    );
    let r2 = srv.get("/target");
    srv.assert_status(&r2, 200, "GET /target");
    assert_eq!(r2.text(), "you made it", "{r2}");
}

#[test]
fn flask_not_found() {
    let srv = flask_server();
    let r = srv.get("/missing");
    srv.assert_status(&r, 404, "GET /missing (abort(404))");
    let r = srv.get("/no/such/route");
    srv.assert_status(&r, 404, "GET /no/such/route");
    assert!(
        r.text().contains("Not Found"),
        "Flask's 404 page expected\n{r}"
    );
}
