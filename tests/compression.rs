//! Compressed app responses decode to exactly the identity body, checked
//! with strict decoders (brotli must reach its end-of-stream marker, zstd
//! its frame end, gzip its trailer) for sizes 0 B to 10 MiB, whole and
//! streamed; streamed responses arrive piece by piece even when
//! compressed; `Cache-Control: no-transform` and `X-Accel-Buffering: no`
//! are honoured; one merged Vary; HEAD gets GET's headers; `min_size`.
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const APP: &str = r#"
import time

def body(n):
    line = b"corral compression test line, fairly compressible\n"
    return (line * (n // len(line) + 1))[:n]

def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ.get("QUERY_STRING", "")
    parts = path.strip("/").split("/")
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if "notransform" in q:
        headers.append(("Cache-Control", "no-transform"))
    if "xab" in q:
        headers.append(("X-Accel-Buffering", "no"))
    if parts[0] == "bytes":
        data = body(int(parts[1]))
        start_response("200 OK", headers + [("Content-Length", str(len(data))), ("Vary", "Cookie")])
        return [data]
    if parts[0] == "stream":
        data = body(int(parts[1]))
        step = max(1, len(data) // 7)
        start_response("200 OK", headers)
        return (data[i:i + step] for i in range(0, len(data), step))
    if parts[0] == "slow":
        def gen():
            for i in range(4):
                yield b"piece %d " % i * 20
                time.sleep(0.4)
        start_response("200 OK", headers)
        return gen()
    start_response("404 Not Found", headers)
    return [b"no"]
"#;

fn site() -> Running {
    Site::new()
        .file("compapp.py", APP)
        .config(&app_config("compapp:application", 2, ""))
        .start()
}

fn expected(n: usize) -> Vec<u8> {
    let line = b"corral compression test line, fairly compressible\n";
    line.iter().cycle().take(n).copied().collect()
}

/// Decodes strictly: a truncated stream is an error, not a short body.
fn decode(coding: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?,
        // A stream cut before its last meta-block is an error here
        // ("Invalid Data"), not a short body.
        "br" => brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?,
        "zstd" => zstd::stream::read::Decoder::new(data)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(|e| e.to_string())?,
        other => return Err(format!("unexpected coding {other}")),
    };
    Ok(out)
}

/// (status, headers lower-cased, raw body) of a GET with these headers.
fn fetch(
    port: u16,
    path: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    let mut conn = Conn::connect(port);
    let r = conn.roundtrip(raw.as_bytes()).expect("response");
    let hs = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    (r.status, hs, r.body.clone())
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn every_coding_decodes_to_the_identity_body_whole_and_streamed() {
    let srv = site();
    let sizes = [0usize, 23, 1000, 1024, 16384, 50_000, 1 << 20, 10 << 20];
    for coding in ["br", "gzip", "zstd"] {
        for kind in ["bytes", "stream"] {
            for n in sizes {
                let path = format!("/{kind}/{n}");
                let (status, hs, raw) =
                    fetch(srv.port, &path, "GET", &[("Accept-Encoding", coding)]);
                assert_eq!(status, 200);
                let what = format!("{coding} {path}");
                let got = match header(&hs, "content-encoding") {
                    Some(c) => {
                        assert_eq!(c, coding, "{what}");
                        decode(c, &raw).unwrap_or_else(|e| panic!("{what}: {e}"))
                    }
                    None => raw,
                };
                assert_eq!(
                    Sha256::digest(&got),
                    Sha256::digest(expected(n)),
                    "{what}: {} bytes",
                    got.len()
                );
                // min_size (1 KiB): a known small length is never compressed.
                if kind == "bytes" && n < 1024 {
                    assert_eq!(header(&hs, "content-encoding"), None, "{what}");
                }
                if kind == "bytes" && n >= 1024 {
                    assert_eq!(header(&hs, "content-encoding"), Some(coding), "{what}");
                }
            }
        }
    }
    // A browser's header gets brotli, and curl --compressed gets it whole.
    let url = format!("http://127.0.0.1:{}/bytes/50000", srv.port);
    let (status, body, out) = curl_fetch(&url, &["--compressed"]);
    assert_eq!((status, body.len()), (200, 50_000), "{out}");
    let (_, hs, _) = fetch(
        srv.port,
        "/bytes/50000",
        "GET",
        &[("Accept-Encoding", "gzip, deflate, br, zstd")],
    );
    assert_eq!(header(&hs, "content-encoding"), Some("br"));
}

#[test]
fn vary_is_one_header_and_head_matches_get() {
    let srv = site();
    let ae = [("Accept-Encoding", "gzip")];
    let (_, get_hs, _) = fetch(srv.port, "/bytes/5000", "GET", &ae);
    let varies: Vec<&str> = get_hs
        .iter()
        .filter(|(k, _)| k == "vary")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(varies, vec!["Cookie, Accept-Encoding"], "{get_hs:?}");
    let (_, head_hs, body) = fetch(srv.port, "/bytes/5000", "HEAD", &ae);
    assert!(body.is_empty());
    for name in [
        "content-encoding",
        "vary",
        "content-type",
        "content-length",
        "transfer-encoding",
    ] {
        assert_eq!(
            header(&head_hs, name),
            header(&get_hs, name),
            "{name}: GET {get_hs:?} HEAD {head_hs:?}"
        );
    }
    // Not compressible for this client, still Vary for caches.
    let (_, hs, _) = fetch(srv.port, "/bytes/5000", "GET", &[]);
    assert_eq!(header(&hs, "vary"), Some("Cookie, Accept-Encoding"));
    // no-transform: never compressed.
    let (_, hs, _) = fetch(srv.port, "/bytes/5000?notransform", "GET", &ae);
    assert_eq!(header(&hs, "content-encoding"), None, "{hs:?}");
}

/// Time from the request until the first decoded byte, and in all, read
/// through `curl -N` (no buffering; the body as sent, de-chunked).
fn first_piece_after(port: u16, path: &str, accept: &str) -> (Duration, Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let head_file = dir.path().join("head");
    let started = Instant::now();
    let mut child = std::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "10", "-D"])
        .arg(&head_file)
        .args(["-H", &format!("Accept-Encoding: {accept}")])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = child.stdout.take().unwrap();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let (mut first, mut plain) = (None, false);
    let mut buf = [0u8; 4096];
    loop {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        // The head is written before the body: gzip or not is known now.
        let head = std::fs::read_to_string(&head_file)
            .unwrap_or_default()
            .to_ascii_lowercase();
        plain |= !head.contains("content-encoding: gzip");
        let decoded = if plain {
            true
        } else {
            decoder.write_all(&buf[..n]).unwrap();
            decoder.flush().unwrap();
            !decoder.get_ref().is_empty()
        };
        if decoded && first.is_none() {
            first = Some(started.elapsed());
        }
    }
    let _ = child.wait();
    let head = std::fs::read_to_string(&head_file)
        .unwrap_or_default()
        .to_ascii_lowercase();
    (first.unwrap_or_default(), started.elapsed(), head)
}

#[test]
fn streamed_responses_arrive_piece_by_piece_even_compressed() {
    let srv = site();
    for (path, want_coding) in [
        ("/slow", Some("gzip")),
        ("/slow?xab", Some("gzip")),
        ("/slow?notransform", None),
    ] {
        let (first, total, head) = first_piece_after(srv.port, path, "gzip");
        let coding = head.contains("content-encoding: gzip").then_some("gzip");
        assert_eq!(coding, want_coding, "{path}: {head}");
        assert!(
            !head.contains("x-accel-buffering"),
            "{path}: passed on: {head}"
        );
        assert!(total > Duration::from_millis(1200), "{path}: {total:?}");
        assert!(
            first < Duration::from_millis(600),
            "{path}: first piece after {first:?} (of {total:?})"
        );
    }
}

/// Static files of the listed types go compressed to clients that take it,
/// as nginx's `gzip on` does (they went plain unless a `.br`/`.gz` sibling
/// was shipped, and Django's collectstatic makes none): each coding decodes
/// strictly to the file, as does curl's `--compressed`; HEAD matches GET;
/// the compressed ETag gets its 304; a Range gets the plain bytes; a small
/// file goes plain; a precompressed sibling still wins; an edited file is
/// compressed again.
#[test]
fn static_files_are_compressed_for_clients_that_take_it() {
    let js: String = (0..6000)
        .map(|i| format!("function f{i}(a) {{ return a + {}; }}\n", i % 7))
        .collect();
    let site = Site::new()
        .file("compapp.py", APP)
        .file("files/app.js", &js)
        .file("files/tiny.css", "body{}")
        .file("files/pre.css", "p{}".repeat(600))
        .file("files/pre.css.br", "the sibling")
        .config(
            &(app_config("compapp:application", 1, "")
                + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n"),
        );
    let srv = site.start();
    let port = srv.port;
    for coding in ["br", "gzip", "zstd"] {
        let (status, hs, body) = fetch(
            port,
            "/static/app.js",
            "GET",
            &[("Accept-Encoding", coding)],
        );
        assert_eq!(
            (status, header(&hs, "content-encoding")),
            (200, Some(coding)),
            "{hs:?}"
        );
        assert_eq!(header(&hs, "vary"), Some("Accept-Encoding"));
        assert_eq!(
            header(&hs, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(body.len() < js.len() / 3, "{coding}: {} bytes", body.len());
        assert_eq!(
            decode(coding, &body).as_deref(),
            Ok(js.as_bytes()),
            "{coding}"
        );
        let (_, head, none) = fetch(
            port,
            "/static/app.js",
            "HEAD",
            &[("Accept-Encoding", coding)],
        );
        assert_eq!(
            header(&head, "content-length"),
            header(&hs, "content-length")
        );
        assert!(none.is_empty());
        let etag = header(&hs, "etag").unwrap_or_default().to_string();
        let again = [
            ("Accept-Encoding", coding),
            ("If-None-Match", etag.as_str()),
        ];
        assert_eq!(
            fetch(port, "/static/app.js", "GET", &again).0,
            304,
            "{coding}"
        );
    }
    let url = format!("http://127.0.0.1:{port}/static/app.js");
    let (status, body, out) = curl_fetch(&url, &["--compressed"]);
    assert_eq!(
        (status, sha256_hex(&body)),
        (200, sha256_hex(js.as_bytes())),
        "{out}"
    );

    let range = [("Accept-Encoding", "br"), ("Range", "bytes=0-9")];
    let (status, hs, body) = fetch(port, "/static/app.js", "GET", &range);
    assert_eq!((status, header(&hs, "content-encoding")), (206, None));
    assert_eq!(body, &js.as_bytes()[..10]);
    let (_, hs, body) = fetch(port, "/static/app.js", "GET", &[]);
    assert_eq!(
        (header(&hs, "content-encoding"), body.len()),
        (None, js.len())
    );
    let (_, hs, _) = fetch(
        port,
        "/static/tiny.css",
        "GET",
        &[("Accept-Encoding", "br")],
    );
    assert_eq!(header(&hs, "content-encoding"), None, "under min_size");
    let (_, hs, body) = fetch(port, "/static/pre.css", "GET", &[("Accept-Encoding", "br")]);
    assert_eq!(
        (header(&hs, "content-encoding"), body),
        (Some("br"), b"the sibling".to_vec())
    );

    let edited = js.replace("return", "yield");
    std::fs::write(srv.path().join("files/app.js"), &edited).unwrap();
    let (_, _, body) = fetch(port, "/static/app.js", "GET", &[("Accept-Encoding", "br")]);
    assert_eq!(decode("br", &body).as_deref(), Ok(edited.as_bytes()));
}
