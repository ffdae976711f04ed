//! Hello world, keep-alive, HEAD, the CLI basics and the bundled demo config.
mod common;

use common::*;
use std::time::Duration;

fn hello_site() -> Site {
    Site::new()
        .app("hello.py")
        .config(&app_config("hello:application", 1, ""))
}

#[test]
fn hello_world() {
    let srv = hello_site().start();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET /");
    if r.body != b"Hello, World!" {
        srv.fail(format!("unexpected body\n{r}"));
    }
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "Content-Type should be text/plain, got {ct:?}\n{r}"
    );
    assert_eq!(r.version, "HTTP/1.1", "response version\n{r}");
}

#[test]
fn hello_world_with_curl() {
    let srv = hello_site().start();
    let url = format!("http://127.0.0.1:{}/", srv.port);
    let (status, body, out) = curl_fetch(&url, &[]);
    if status != 200 || body != b"Hello, World!" {
        srv.fail(format!(
            "curl got status {status}, body {:?}\n{out}",
            snippet(&body, 500)
        ));
    }
}

#[test]
fn keep_alive_50_requests_on_one_connection() {
    let srv = hello_site().start();
    let mut conn = srv.connect();
    for i in 0..50 {
        let r = conn.get(&format!("/?i={i}")).unwrap_or_else(|e| {
            srv.fail(format!(
                "request #{i} on the keep-alive connection failed: {e}"
            ))
        });
        srv.assert_status(&r, 200, &format!("request #{i}"));
        if r.body != b"Hello, World!" {
            srv.fail(format!("request #{i}: unexpected body\n{r}"));
        }
        if r.closes() {
            srv.fail(format!(
                "request #{i}: server closed a keep-alive connection\n{r}"
            ));
        }
    }
}

#[test]
fn head_has_no_body_but_the_same_headers() {
    let srv = hello_site().start();
    let mut conn = srv.connect();
    let g = conn
        .get("/")
        .unwrap_or_else(|e| srv.fail(format!("GET: {e}")));
    srv.assert_status(&g, 200, "GET /");
    let h = conn
        .roundtrip(&simple_req("HEAD", srv.port, "/", false))
        .unwrap_or_else(|e| srv.fail(format!("HEAD: {e}")));
    srv.assert_status(&h, 200, "HEAD /");
    assert!(h.body.is_empty(), "HEAD response must have no body\n{h}");
    for name in ["content-type", "content-length"] {
        assert_eq!(
            h.header(name),
            g.header(name),
            "header {name} differs between GET and HEAD\nGET:{g}\nHEAD:{h}"
        );
    }
    // If the server had sent a body after the HEAD response, this next
    // response on the same connection would be garbled.
    let g2 = conn
        .get("/")
        .unwrap_or_else(|e| srv.fail(format!("GET after HEAD on the same connection: {e}")));
    srv.assert_status(&g2, 200, "GET after HEAD");
    assert_eq!(g2.body, b"Hello, World!", "GET after HEAD\n{g2}");
}

#[test]
fn factory_module_spec() {
    let srv = Site::new()
        .app("hello.py")
        .config(&app_config("hello:create_app()", 1, ""))
        .start();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET / with module = \"hello:create_app()\"");
    assert_eq!(r.body, b"Hello, World!", "{r}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    // The test process runs with cwd = the crate root, not the site folder.
    let cfg = "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nchdir = \"app\"\nworkers = 1\n";
    let srv = Site::new()
        .app_as("hello.py", "app/hello.py")
        .config(cfg)
        .start();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET / with chdir = \"app\"");
    assert_eq!(r.body, b"Hello, World!", "{r}");
}

#[test]
fn access_log_is_combined_format_on_stdout() {
    let srv = hello_site().start();
    let raw = format!(
        "GET /logged?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: corral-test-agent/1.0\r\nReferer: http://ref.example/page\r\nConnection: close\r\n\r\n",
        srv.port
    );
    let r = srv.request(raw.as_bytes());
    srv.assert_status(&r, 200, "GET /logged");
    // nginx combined: $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
    let want =
        "\"GET /logged?x=1 HTTP/1.1\" 200 13 \"http://ref.example/page\" \"corral-test-agent/1.0\"";
    if !srv.wait_for_stdout(want, Duration::from_secs(10)) {
        srv.fail(format!(
            "access log line with {want} not found on stdout:\n{}",
            tail(&srv.stdout(), 4000)
        ));
    }
    let line = srv
        .stdout()
        .lines()
        .find(|l| l.contains(want))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "access log line should start with `127.0.0.1 - - [`: {line:?}"
    );
}

#[test]
fn version_flag() {
    let out = corral(&["--version"], CMD_TIMEOUT);
    assert!(out.success(), "corral --version failed\n{out}");
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version should print {}\n{out}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn help_flag_lists_subcommands() {
    let out = corral(&["--help"], CMD_TIMEOUT);
    assert!(out.success(), "corral --help failed\n{out}");
    for word in ["serve", "check"] {
        assert!(
            out.stdout.contains(word),
            "--help should mention `{word}`\n{out}"
        );
    }
}

#[test]
fn bundled_demo_config_passes_check() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/site.toml");
    assert!(
        std::path::Path::new(cfg).exists(),
        "the bundled demo config {cfg} is missing"
    );
    let out = corral(&["check", "--config", cfg], CMD_TIMEOUT);
    assert!(
        out.success(),
        "corral check on the bundled demo config failed\n{out}"
    );
    assert!(
        out.stdout.contains("ok") || out.stderr.contains("ok"),
        "corral check should print `ok`\n{out}"
    );
}

#[test]
fn ipv4_and_ipv6_listeners() {
    // Skip where the machine has no IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let cfg = "[server]\nlisten = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = 1\n";
    let srv = Site::new().app("hello.py").config(cfg).start();
    for url in [
        format!("http://127.0.0.1:{}/", srv.port),
        format!("http://[::1]:{}/", srv.port),
    ] {
        let (status, body, out) = curl_fetch(&url, &["-g"]);
        if status != 200 || body != b"Hello, World!" {
            srv.fail(format!(
                "{url}: status {status}, body {:?}\n{out}",
                snippet(&body, 300)
            ));
        }
    }
}

#[test]
fn body_over_max_body_is_rejected_with_413() {
    let cfg = "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = 1\n\n[limits]\nmax_body = \"1KiB\"\n";
    let srv = Site::new().app("hello.py").config(cfg).start();
    let ok = srv.post("/", "text/plain", &[b'a'; 1000]);
    srv.assert_status(&ok, 200, "POST of 1000 bytes with max_body = 1KiB");
    let big = srv.post("/", "text/plain", &[b'a'; 4096]);
    srv.assert_status(&big, 413, "POST of 4096 bytes with max_body = 1KiB");
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET after a 413");
}
