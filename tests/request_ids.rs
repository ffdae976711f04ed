//! `X-Request-ID` and `X-Request-Start`, as APM agents and a proxy in front
//! use them: the app gets the request's id and when the edge received it;
//! every response echoes the id; the access log has it. A trusted proxy's
//! id is kept; anyone else's is replaced (a client cannot choose the id
//! the logs will show).
mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn id_site(server_extra: &str) -> Running {
    let config = app_config("echo_environ:application", 1, "")
        .replacen("[server]\n", &format!("[server]\n{server_extra}\n"), 1)
        .replace("[log]\n", "[log]\naccess_format = \"json\"\n")
        + "\n[[static]]\nurl = \"/static/\"\ndir = \"static\"\n";
    Site::new()
        .app("echo_environ.py")
        .file("static/a.txt", "a\n")
        .config(&config)
        .start()
}

fn get_with(srv: &Running, path: &str, id: &str) -> Response {
    srv.request(
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nX-Request-ID: {id}\r\n\
             X-Request-Start: t=1\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// The access log's JSON line for the request with this id.
fn logged(srv: &Running, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = srv
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == id);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no access line with request_id {id}:\n{}", srv.stdout()))
}

#[test]
fn an_untrusted_clients_id_is_replaced_and_ours_reaches_app_client_and_log() {
    let srv = id_site("");
    let r = get_with(&srv, "/env", "chosen-by-the-client");
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("echoed").to_string();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(id.len(), 16, "{id}");
    let env = r.json();
    assert_eq!(env["environ"]["HTTP_X_REQUEST_ID"], id.as_str());
    // The edge's own receive time, in microseconds, not the client's t=1.
    let start = env["environ"]["HTTP_X_REQUEST_START"]
        .as_str()
        .and_then(|s| s.strip_prefix("t="))
        .and_then(|t| t.parse::<u128>().ok())
        .expect("t=<micros>");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    assert!(now.abs_diff(start) < 10_000_000, "{start} vs {now}");
    assert_eq!(logged(&srv, &id)["status"], 200);
    // Static files and the edge's own refusals echo their id too.
    let r = get_with(&srv, "/static/a.txt", "x");
    assert_eq!(r.status, 200);
    let static_id = r.header("x-request-id").expect("echoed on a static file");
    assert_ne!(static_id, id);
    let r = srv.request(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(
        r.header("x-request-id").is_some(),
        "a refusal echoes its id"
    );
    // curl sees it as any client does.
    let out = curl(&[
        "-s",
        "-i",
        &format!("http://127.0.0.1:{}/static/a.txt", srv.port),
    ]);
    assert!(
        out.stdout
            .to_ascii_lowercase()
            .contains("\r\nx-request-id: "),
        "{out}"
    );
}

#[test]
fn a_trusted_proxys_id_is_kept_end_to_end() {
    let srv = id_site("trusted_proxies = [\"127.0.0.1\"]");
    let r = get_with(&srv, "/env", "lb-7f3a-0001");
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a-0001"));
    assert_eq!(r.json()["environ"]["HTTP_X_REQUEST_ID"], "lb-7f3a-0001");
    assert_eq!(logged(&srv, "lb-7f3a-0001")["target"], "/env");
    // Not an id: spaces, or longer than 200 characters.
    for bad in ["has a space".to_string(), "x".repeat(201)] {
        let r = get_with(&srv, "/env", &bad);
        let id = r.header("x-request-id").expect("echoed");
        assert_eq!(id.len(), 16, "{bad:?} was kept");
    }
}
