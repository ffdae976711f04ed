//! The third-party client matrix: curl (--http1.0/1.1/2, prior knowledge,
//! --compressed, -T), python requests, httpx (h1 and h2), aiohttp and wget
//! against one site with plain, h2c and TLS listeners, each checking exact
//! bytes (sha256, strict decoders for every encoding); and 29 HTTP/2 edge
//! cases scripted with the python `h2` package (tests/clients/h2_edge_cases.py). The Python side lives
//! in tests/clients/; scripts/deps.sh --test installs what it imports.
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The site every client talks to: h2c on the plain port, TLS beside it,
/// a static mount, the clients app.
fn start_site() -> (Running, u16, String) {
    let tls_port = free_port();
    let static_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let static_sha = format!("{:x}", Sha256::digest(&static_bytes));
    let site = Site::new()
        .app("clients_app.py")
        .file("files/file.bin", &static_bytes);
    self_signed_cert(site.path());
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\nh2c = true\n\n\
         [app]\nmodule = \"clients_app:application\"\nchdir = \".\"\nworkers = 2\n\n\
         [limits]\nmax_body = \"64MiB\"\n\n\
         [[static]]\nurl = \"/static/\"\ndir = \"files\"\n\n\
         [tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n[[tls.cert]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
         [log]\naccess = \"off\"\n"
    );
    (site.config(&config).start(), tls_port, static_sha)
}

fn python() -> std::path::PathBuf {
    let venv = std::env::var("CORRAL_TEST_VENV")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv").to_string());
    Path::new(&venv).join("bin/python")
}

fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn third_party_clients_get_exact_bytes() {
    let (srv, tls_port, static_sha) = start_site();
    let ca = srv.path().join("cert.pem");
    let out = run_with_timeout(
        Command::new(python())
            .arg(script("matrix.py"))
            .args(["--http", &format!("http://127.0.0.1:{}", srv.port)])
            .args(["--https", &format!("https://127.0.0.1:{tls_port}")])
            .args(["--cafile", ca.to_str().unwrap(), "--h2c"])
            .args([
                "--static",
                "/static/file.bin",
                "--static-sha256",
                &static_sha,
            ]),
        Duration::from_secs(300),
    );
    eprintln!("{}", out.stdout);
    assert!(
        out.success() && !out.timed_out(),
        "client matrix failed:\n{out}\n{}",
        srv.stderr_tail()
    );
    assert!(out.stdout.contains("0 failures"), "{out}");
}

#[test]
fn http2_edge_cases_scripted_with_h2() {
    let (srv, tls_port, _) = start_site();
    let ca = srv.path().join("cert.pem");
    for target in [
        vec!["--h2c"],
        vec!["--tls", "--cafile", ca.to_str().unwrap()],
    ] {
        let port = if target[0] == "--h2c" {
            srv.port
        } else {
            tls_port
        };
        // --lenient-malformed: an uppercase header name or an unknown
        // pseudo-header ends the whole connection (GOAWAY PROTOCOL_ERROR,
        // from the h2 crate's HPACK decoder) rather than only its stream.
        // RFC 9113 §5.4.1 allows that; a stream error would be kinder.
        let out = run_with_timeout(
            Command::new(python())
                .arg(script("h2_edge_cases.py"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(&target)
                .arg("--lenient-malformed"),
            Duration::from_secs(180),
        );
        eprintln!("{}", out.stdout);
        assert!(
            out.success() && !out.timed_out(),
            "h2 cases {target:?} failed:\n{out}\n{}",
            srv.stderr_tail()
        );
    }
}

/// Bytes this process has written, by any means (`wchar` in /proc/PID/io).
fn written_by(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A 20 MiB upload from python requests (HTTP/1.1) and httpx (h2 over
/// TLS) arrives whole (sha256), and the WSGI workers do not write it again:
/// the edge, which spooled it, hands the worker its file. Before, each
/// worker spooled its own copy (twice the disk, a copy through the socket).
#[test]
fn a_spooled_upload_reaches_the_app_without_a_second_spool() {
    let (srv, tls_port, _) = start_site();
    let ca = srv.path().join("cert.pem");
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    let workers = srv.worker_pids();
    let before: u64 = workers.iter().map(|&p| written_by(p)).sum();
    let data = pattern_bytes(20 << 20, 31);
    let file = srv.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let script = r#"
import hashlib, json, sys, httpx, requests
http, https, ca, path = sys.argv[1:5]
data = open(path, "rb").read()
r = requests.post(http + "/upload", data=data, timeout=60)
print("requests", r.status_code, r.json() == {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
with httpx.Client(http2=True, verify=ca, timeout=60) as c:
    r = c.put(https + "/upload", content=data)
    print("httpx", r.http_version, r.status_code, r.json()["sha256"] == hashlib.sha256(data).hexdigest())
"#;
    let out = run_with_timeout(
        Command::new(python())
            .args(["-c", script])
            .arg(format!("http://127.0.0.1:{}", srv.port))
            .arg(format!("https://127.0.0.1:{tls_port}"))
            .arg(&ca)
            .arg(&file),
        Duration::from_secs(120),
    );
    assert_eq!(
        out.stdout.trim(),
        "requests 200 True\nhttpx HTTP/2 200 True",
        "{out}\n{}",
        srv.stderr_tail()
    );
    let after: u64 = workers.iter().map(|&p| written_by(p)).sum();
    assert!(
        after - before < 4 << 20,
        "the workers wrote {} bytes for two 20 MiB uploads",
        after - before
    );
}
