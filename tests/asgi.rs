//! ASGI apps (tests/apps/asgi_app.py: FastAPI with lifespan, plus raw ASGI
//! endpoints) in the test virtualenv: the interface found by `check`,
//! third-party clients (tests/clients/asgi_clients.py), lifespan startup
//! and shutdown, many requests at once on one worker, app.timeout
//! cancelling one task, a blocked event loop replaced with its stack
//! dumped, disconnects, errors.
mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn asgi_site(workers: u32, extra: &str) -> Site {
    let app_extra = format!("virtualenv = \"{{venv}}\"\n{extra}");
    let config = app_config("asgi_app:application", workers, &app_extra).replace(
        "listen = [\"127.0.0.1:{port}\"]\n",
        "listen = [\"127.0.0.1:{port}\"]\nh2c = true\n",
    );
    Site::new().app("asgi_app.py").config(&config)
}

fn python() -> std::path::PathBuf {
    venv().join("bin/python")
}

#[test]
fn check_names_the_interface_and_why() {
    let site = asgi_site(1, "");
    let out = site.check();
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains("is ASGI (a Routes object with an async __call__)"),
        "{out}"
    );
    let wrong = asgi_site(1, "interface = \"wsgi\"");
    let out = wrong.check();
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("is an ASGI app") && out.stderr.contains("app.interface = \"wsgi\""),
        "{out}"
    );
}

#[test]
fn third_party_clients_on_one_asgi_worker() {
    let srv = asgi_site(1, "").start();
    let out = run_with_timeout(
        Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/asgi_clients.py"
            ))
            .args(["--base", &format!("http://127.0.0.1:{}", srv.port)]),
        Duration::from_secs(180),
    );
    eprintln!("{}", out.stdout);
    assert!(
        out.success() && out.stdout.contains("0 failures"),
        "ASGI client checks failed:\n{out}\n{}",
        srv.stderr_tail()
    );
    assert!(
        srv.stderr().contains("error in app for GET /error"),
        "{}",
        srv.stderr_tail()
    );
    assert!(srv.stderr().contains("ValueError: boom in an async view"));
}

#[test]
fn the_scope_says_what_the_edge_knows() {
    let srv = asgi_site(1, "").start();
    let r = srv.request(
        b"GET /scope?a=1&b=%20 HTTP/1.1\r\nHost: example.test\r\nX-Corral-Client: 6.6.6.6:1\r\n\
          X-Custom: v\r\nConnection: close\r\n\r\n",
    );
    srv.assert_status(&r, 200, "GET /scope");
    let j = r.json();
    assert_eq!(j["type"].as_str(), Some("http"), "{r}");
    assert_eq!(j["asgi"]["version"].as_str(), Some("3.0"), "{r}");
    assert_eq!(j["asgi"]["spec_version"].as_str(), Some("2.4"), "{r}");
    assert_eq!(j["http_version"].as_str(), Some("1.1"), "{r}");
    assert_eq!(j["scheme"].as_str(), Some("http"), "{r}");
    assert_eq!(j["query_string"].as_str(), Some("a=1&b=%20"), "{r}");
    // The real peer, never the client's forged x-corral-client.
    assert_eq!(j["client"][0].as_str(), Some("127.0.0.1"), "{r}");
    assert_eq!(j["server"][1].as_i64(), Some(srv.port as i64), "{r}");
    let headers = j["headers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = headers.iter().filter_map(|h| h[0].as_str()).collect();
    assert!(
        names.contains(&"x-custom") && names.contains(&"host"),
        "{r}"
    );
    assert!(!names.iter().any(|n| n.starts_with("x-corral-")), "{r}");
    assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()), "{r}");
}

#[test]
fn a_request_over_the_timeout_cancels_only_its_task() {
    let srv = asgi_site(1, "timeout = \"1s\"").start();
    let before = srv.get("/").json()["pid"].as_i64();
    // A quick request runs beside the slow one on the same worker.
    let port = srv.port;
    let slow = std::thread::spawn(move || get(port, "/sleep/5"));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let quick = srv.get("/sleep/0.1");
    srv.assert_status(&quick, 200, "a quick request beside a slow one");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let slow = slow.join().expect("slow request thread");
    srv.assert_status(&slow, 504, "the slow request");
    std::thread::sleep(Duration::from_millis(300));
    let seen = srv.get("/seen").json();
    assert_eq!(
        seen["cancelled"].as_i64(),
        Some(1),
        "the task was not cancelled: {seen:?}"
    );
    assert_eq!(
        srv.get("/").json()["pid"].as_i64(),
        before,
        "the worker was replaced"
    );
    assert!(
        srv.stderr().contains("its task is cancelled"),
        "{}",
        srv.stderr_tail()
    );
    assert!(
        !srv.stderr().contains("dumping its Python stacks"),
        "{}",
        srv.stderr_tail()
    );
}

#[test]
fn a_blocked_event_loop_is_dumped_and_replaced() {
    let mut srv = asgi_site(1, "timeout = \"1s\"").start();
    let before = srv.get("/").json()["pid"].as_i64();
    let r = srv.get("/block/4");
    srv.assert_status(&r, 504, "a view that blocks the loop");
    assert!(
        srv.wait_for_stderr("event loop (blocked for", Duration::from_secs(10)),
        "{}",
        srv.stderr_tail()
    );
    // The dump shows the call that blocks.
    assert!(
        srv.wait_for_stderr("in block", Duration::from_secs(10)),
        "no stack dump naming the blocking view:\n{}",
        srv.stderr_tail()
    );
    srv.wait_ready(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let r = srv.get("/");
        if r.status == 200 && r.json()["pid"].as_i64() != before {
            break r.json()["pid"].as_i64();
        }
        assert!(Instant::now() < deadline, "no replacement worker: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(after, before);
}

#[test]
fn a_client_that_goes_away_is_a_disconnect_for_the_app() {
    let srv = asgi_site(1, "").start();
    let mut c = srv.connect();
    c.send(b"GET /raw/wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = srv.get("/seen").json();
        if seen["disconnects"].as_i64() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "app never saw http.disconnect: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn app_mistakes_are_500s_and_logged() {
    let srv = asgi_site(1, "").start();
    let r = srv.get("/raw/no-response");
    srv.assert_status(&r, 500, "an app that returns without answering");
    let r = srv.get("/raw/bad-header");
    srv.assert_status(&r, 500, "a header with CR/LF");
    assert!(r.header("injected").is_none(), "{r}");
    let log = srv.stderr();
    assert!(
        log.contains("returned without completing the response"),
        "{log}"
    );
    assert!(log.contains("invalid header"), "{log}");
    // The worker still serves.
    srv.assert_status(&srv.get("/"), 200, "after the mistakes");
}

#[test]
fn lifespan_startup_failure_is_a_boot_failure_with_the_apps_message() {
    let mut srv = asgi_site(1, "").env("FAIL_STARTUP", "1").spawn();
    let status = srv.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "{}",
        srv.stderr_tail()
    );
    let log = srv.stderr();
    assert!(log.contains("lifespan startup failed"), "{log}");
    assert!(log.contains("database unreachable at startup"), "{log}");
}

/// Stops `srv` with SIGTERM and counts the shutdown marks in `mark`.
fn stop_and_count_marks(mut srv: Running, mark: &std::path::Path) -> usize {
    srv.signal("TERM");
    assert!(
        srv.wait_exit(Duration::from_secs(30)).is_some(),
        "did not stop"
    );
    let text = std::fs::read_to_string(mark).unwrap_or_default();
    count_lines(&text, "shutdown ")
}

#[test]
fn lifespan_shutdown_runs_on_stop_and_lifespan_off_skips_it() {
    let mark_dir = tempfile::tempdir().expect("tempdir");
    let mark = mark_dir.path().join("shutdown.txt");
    let mark_s = mark.to_str().expect("utf-8 path");
    let srv = asgi_site(2, "").env("SHUTDOWN_MARK", mark_s).start();
    srv.assert_status(&srv.get("/"), 200, "GET /");
    assert_eq!(
        stop_and_count_marks(srv, &mark),
        2,
        "one shutdown per worker"
    );

    let off = asgi_site(1, "lifespan = \"off\"")
        .env("SHUTDOWN_MARK", mark_s)
        .start();
    // Without lifespan there is no state: the view fails on request.state.
    off.assert_status(&off.get("/"), 500, "no lifespan, no state");
    assert_eq!(
        stop_and_count_marks(off, &mark),
        2,
        "lifespan ran while off"
    );
}
#[test]
fn the_asyncio_loop_serves_too_and_max_requests_recycles() {
    let mut srv = asgi_site(1, "loop = \"asyncio\"\nmax_requests = 20").start();
    assert!(
        srv.stderr().contains("ASGI on asyncio"),
        "{}",
        srv.stderr_tail()
    );
    let first = srv.get("/").json()["pid"].as_i64();
    for _ in 0..30 {
        srv.assert_status(&srv.get("/sleep/0"), 200, "GET /sleep/0");
    }
    assert!(
        srv.wait_for_stderr("max_requests", Duration::from_secs(10)),
        "{}",
        srv.stderr_tail()
    );
    srv.wait_ready(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.get("/").json()["pid"].as_i64() == first {
        assert!(Instant::now() < deadline, "never recycled");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_quart_app_with_its_startup_hook_json_streams_and_a_websocket() {
    let app_extra = "virtualenv = \"{venv}\"\npreload = true";
    let srv = Site::new()
        .app("quart_app.py")
        .config(&app_config("quart_app:app", 2, app_extra))
        .start();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET / on Quart");
    // before_serving ran: lifespan startup reached the app (preloaded in the
    // master, then forked: each worker runs its own startup).
    assert_eq!(r.json()["started"].as_bool(), Some(true), "{r}");
    let r = srv.post("/echo", "application/json", br#"{"a": [1, 2, "\u00e9"]}"#);
    srv.assert_status(&r, 200, "POST /echo");
    assert_eq!(r.json()["got"]["a"][2].as_str(), Some("\u{e9}"), "{r}");
    let r = srv.get("/stream");
    assert_eq!(r.text(), "part 0\npart 1\npart 2\n", "{r}");
    assert!(r.chunked, "a streamed body goes out chunked: {r}");
    let script = format!(
        "import asyncio, websockets\n\
         async def main():\n\
         \x20   async with websockets.connect('ws://127.0.0.1:{}/ws') as ws:\n\
         \x20       await ws.send('hi')\n\
         \x20       print(await ws.recv())\n\
         asyncio.run(main())\n",
        srv.port
    );
    let out = run_with_timeout(
        Command::new(python()).args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(out.success() && out.stdout.contains("quart: hi"), "{out}");
}
