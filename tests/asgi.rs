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

/// An ASGI status that is not final (1xx, or past 599) is the app's error,
/// a 500 at once: a 1xx left the edge waiting for the final status until
/// app.timeout.
#[test]
fn an_asgi_status_that_is_not_final_is_a_500_at_once() {
    let srv = asgi_site(1, "timeout = \"20s\"").start();
    for code in [100, 150, 600] {
        let url = format!("http://127.0.0.1:{}/raw/status?{code}", srv.port);
        let t0 = Instant::now();
        let (status, _, out) = curl_fetch(&url, &["--max-time", "10"]);
        assert_eq!(status, 500, "status {code}: {out}\n{}", srv.stderr_tail());
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "status {code}: {:?}",
            t0.elapsed()
        );
    }
    assert!(
        srv.stderr().contains("a response needs a final status"),
        "{}",
        srv.stderr_tail()
    );
}

/// Apps that answer before reading a large body, or while reading it,
/// with python `requests` (tests/clients/asgi_unread_bodies.py): a 401 that
/// never reads 4 MiB, 5 MB answered before the body is read, a streamed
/// echo. Each used to hang until app.timeout (504), with both sides
/// waiting to write.
#[test]
fn answers_before_the_body_is_read_come_back_at_once() {
    let srv = asgi_site(1, "timeout = \"10s\"").start();
    run_checks(
        &srv,
        "asgi_unread_bodies.py",
        &[format!("http://127.0.0.1:{}", srv.port)],
        Duration::from_secs(120),
    );
}

/// A 15 MiB upload echoed piece by piece, and one answered before it is
/// read (tests/clients/asgi_big_echo.py, python requests): exact answers,
/// and the worker's peak RSS grows by under 8 MiB. The edge used to send
/// the whole body before reading the answer, so the worker took all of it
/// in (up to max_body) to make room for its app's writes.
#[test]
fn an_app_answering_while_it_reads_holds_only_a_window_of_the_body() {
    run_checks_watching_the_worker("asgi_big_echo.py");
}

/// A 2 MiB upload to an app that records it (a database write) and then
/// waits: its worker is killed meanwhile. The client gets a 502 and the
/// app ran once. The edge used to count the broken body write as "not
/// delivered" and ran the POST again on the next worker (a third-party
/// trial: 5 of 10 uploads recorded twice).
#[test]
fn an_upload_whose_app_began_is_not_run_twice_when_its_worker_dies() {
    let srv = asgi_site(1, "timeout = \"20s\"").start();
    let worker = srv.edge_and_worker_pids(1)[0];
    let recorded = srv.path().join("recorded.txt");
    let url = format!("http://127.0.0.1:{}/raw/record-then-read", srv.port);
    let body = srv.path().join("upload.bin");
    std::fs::write(&body, vec![b'u'; 2 << 20]).unwrap();
    let data = format!("@{}", body.display());
    let post = std::thread::spawn(move || {
        curl_fetch(&url, &["-H", "x-req-id: once", "--data-binary", &data])
    });
    let read_recorded = || std::fs::read_to_string(&recorded).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || read_recorded().contains("once")),
        "the app never began: {}",
        srv.stderr_tail()
    );
    let _ = Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status();
    let (status, _, out) = post.join().unwrap();
    assert_eq!(status, 502, "{out}\n{}", srv.stderr_tail());
    // Time for a retry to have run, had there been one.
    assert!(srv.wait_worker_count(1, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_recorded(), "once\n", "{}", srv.stderr_tail());
    assert!(
        srv.wait_for_stderr("the app may have acted on it", Duration::from_secs(2)),
        "{}",
        srv.stderr_tail()
    );
}

/// kill -9 of an ASGI worker running eight GETs and a POST at once (curl):
/// each GET runs once more on the replacement and its client gets a 200
/// from it, never knowing; the POST gets a 502 and is not run again. Every
/// GET was a 502 before.
#[test]
fn gets_in_flight_in_a_killed_worker_run_again_and_a_post_does_not() {
    let srv = asgi_site(1, "timeout = \"20s\"").start();
    let worker = srv.edge_and_worker_pids(1)[0];
    let recorded = srv.path().join("recorded.txt");
    let read_recorded = || std::fs::read_to_string(&recorded).unwrap_or_default();
    let url = format!("http://127.0.0.1:{}/raw/record-then-read", srv.port);
    let clients: Vec<_> = (0..9)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let id = format!("x-req-id: r{i}");
                let method = if i == 8 { "POST" } else { "GET" };
                curl_fetch(&url, &["-X", method, "-H", &id, "--max-time", "30"])
            })
        })
        .collect();
    let all_in = || read_recorded().lines().count() == 9;
    assert!(
        wait_until(Duration::from_secs(10), all_in),
        "the app never had all nine: {:?}\n{}",
        read_recorded(),
        srv.stderr_tail()
    );
    let _ = Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, body, out) = client.join().unwrap();
        let body = String::from_utf8_lossy(&body).to_string();
        if i == 8 {
            assert_eq!(status, 502, "the POST: {out}\n{}", srv.stderr_tail());
            continue;
        }
        assert_eq!(status, 200, "GET r{i}: {out}\n{}", srv.stderr_tail());
        let replacement = format!("recorded by {}", srv.worker_pids()[0]);
        assert_eq!(body, replacement, "GET r{i} (killed worker {worker})");
    }
    let text = read_recorded();
    for i in 0..8 {
        let runs = text.lines().filter(|l| *l == format!("r{i}")).count();
        assert_eq!(runs, 2, "GET r{i} ran {runs} times:\n{text}");
    }
    assert_eq!(text.lines().filter(|l| *l == "r8").count(), 1, "{text}");
    assert!(srv
        .stderr()
        .contains("running it once more on another worker"));
}

/// A hundred 2 MiB uploads at once to an app that reads each only after
/// 1.5 s (tests/clients/asgi_waiting_uploads.py, aiohttp): every one comes
/// back with its own sha256, and the worker holds only a small window of
/// each unread body (64 KiB and a read, as uvicorn): it grows by under
/// 64 MiB. With 1 MiB per request it grew ~110 MiB, toward 1 GiB at the
/// default concurrency of 1000.
#[test]
fn uploads_waiting_for_the_app_do_not_grow_the_worker() {
    run_checks_watching_the_worker("asgi_waiting_uploads.py");
}

/// A client script given the site's URL and its one worker's pid (whose
/// memory it watches), app.timeout 30 s.
fn run_checks_watching_the_worker(script: &str) {
    let srv = asgi_site(1, "timeout = \"30s\"").start();
    let worker = srv.edge_and_worker_pids(1)[0];
    run_checks(
        &srv,
        script,
        &[format!("http://127.0.0.1:{}", srv.port), worker.to_string()],
        Duration::from_secs(120),
    );
}

#[test]
fn check_names_the_interface_and_why() {
    asgi_site(1, "").assert_checks_as_asgi("Routes");
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
    run_checks(
        &srv,
        "asgi_clients.py",
        &[
            "--base".to_string(),
            format!("http://127.0.0.1:{}", srv.port),
        ],
        Duration::from_secs(180),
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

/// Header names are shared bytes objects from one request to the next
/// (an open WebSocket keeps its scope for life), but only a bounded set of
/// short names: a client cannot grow the set with names it makes up.
#[test]
fn header_names_are_shared_but_made_up_long_ones_are_not() {
    let srv = asgi_site(1, "").start();
    let long = format!("x-{}", "n".repeat(60));
    let ask = || {
        let head = format!(
            "GET /names HTTP/1.1\r\nHost: a\r\nX-Custom: v\r\n{long}: v\r\nConnection: close\r\n\r\n"
        );
        let r = srv.request(head.as_bytes());
        srv.assert_status(&r, 200, "GET /names");
        r.json()["shared"].clone()
    };
    ask();
    let shared = ask();
    let names: Vec<&str> = shared
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        names.contains(&"host") && names.contains(&"x-custom"),
        "{shared}"
    );
    assert!(!names.contains(&long.as_str()), "{shared}");
}

/// An app that listened in receive() and gave up (asyncio.wait_for, as
/// Starlette's request.is_disconnected() does) no longer counts as
/// listening: over app.timeout its task is still cancelled. And two tasks
/// waiting in receive() at once both hear http.disconnect. (A given-up
/// wait used to stay registered: the 504 went out but the task ran on, and
/// of two listeners only the last heard.)
#[test]
fn a_receive_given_up_or_shared_still_hears_the_end() {
    use std::io::{Read, Write};
    let srv = asgi_site(1, "timeout = \"1s\"").start();
    let t = Instant::now();
    let r = srv.get("/raw/listen-then-sleep");
    srv.assert_status(&r, 504, "over the timeout after giving up a receive");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Read until the stream starts, then wait out app.timeout, which ends
    // it (the edge closes the worker's side).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.write_all(b"GET /raw/two-listeners HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("started") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(s);
    let state = srv.get("/raw/listening").json();
    assert_eq!(state["cancelled"], true, "the task ran on: {state}");
    assert_eq!(state["finished"], false, "{state}");
    assert_eq!(
        state["heard"], 2,
        "listeners that heard http.disconnect: {state}"
    );
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

/// The scope's headers are the client's: no `content-length: 0` added to
/// a GET that had none (the edge added it; uvicorn passes what came, and
/// an app checking a signature over its headers would differ), while a
/// body's length, and a client's own `Content-Length: 0`, still arrive.
#[test]
fn a_request_without_a_body_gets_no_length_it_did_not_send() {
    let srv = asgi_site(1, "").start();
    let url = format!("http://127.0.0.1:{}/raw/headers", srv.port);
    for (extra, want) in [
        (&[][..], None),
        (&["-X", "POST", "-d", "abc"][..], Some("3")),
        (&["-H", "Content-Length: 0"][..], Some("0")),
    ] {
        let (status, body, out) = curl_fetch(&url, extra);
        assert_eq!(status, 200, "{out}");
        let pairs: Vec<(String, String)> = serde_json::from_slice(&body).expect("the app's JSON");
        let length = pairs
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.as_str());
        assert_eq!(length, want, "{extra:?}: {pairs:?}");
    }
}

/// A client that gives up on a handler before it answers (curl -m, an
/// aborted fetch, over HTTP/1.1 and h2) does not stop the handler halfway:
/// its second step and its background task run, as under uvicorn. The task
/// was cancelled at its next await (found by helper-21).
#[test]
fn a_client_leaving_before_the_answer_does_not_stop_the_handler() {
    let srv = asgi_site(1, "timeout = \"20s\"").start();
    let url = format!("http://127.0.0.1:{}/work", srv.port);
    for (round, proto) in [(1, "--http1.1"), (2, "--http2-prior-knowledge")] {
        let out = run_with_timeout(
            Command::new("curl").args(["-s", proto, "-X", "POST", "--max-time", "0.3", &url]),
            Duration::from_secs(10),
        );
        assert!(!out.success(), "curl should have given up: {out}");
        let want: Vec<&str> = ["step1", "step2", "background"].repeat(round);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = srv.get("/seen").json();
            let work: Vec<&str> = seen["work"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if work == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{proto}: {work:?}, want {want:?}\n{}",
                srv.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A client that leaves a quiet stream (server-sent events that wait for
/// news) is noticed at once, over HTTP/1.1 and h2, even with app.timeout
/// off: the app's task ends (uvicorn and hypercorn notice too), rather than
/// at the next write that may never come.
#[test]
fn a_client_leaving_a_quiet_stream_ends_the_apps_task() {
    let srv = asgi_site(1, "timeout = \"0\"").start();
    let url = format!("http://127.0.0.1:{}/sse", srv.port);
    for (round, proto) in [(1, "--http1.1"), (2, "--http2-prior-knowledge")] {
        // curl gives up after 1.5 s: the event came, then nothing.
        let out = run_with_timeout(
            Command::new("curl").args(["-sN", proto, "--max-time", "1.5", &url]),
            Duration::from_secs(10),
        );
        assert!(out.stdout.contains("data: hello"), "{out}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = srv.get("/seen").json();
            if seen["sse_closed"].as_i64() == Some(round) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{proto}: the app's stream still runs after its client left: {seen:?}\n{}",
                srv.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
    // Said once per boot: Starlette reports the failure, then re-raises it.
    let boots = log
        .matches("the app failed to load (traceback above)")
        .count();
    assert!(boots > 0, "{log}");
    assert_eq!(
        log.matches("Traceback (most recent call last)").count(),
        boots,
        "{log}"
    );
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

#[test]
fn early_hints_reach_the_client_while_the_app_still_works() {
    use std::io::{Read, Write};
    let srv = asgi_site(1, "").start();
    // A raw client times the two heads: the 103 at once, the 200 after
    // the app's half-second.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    s.write_all(b"GET /raw/hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed before any head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let first_at = started.elapsed();
    s.read_to_end(&mut got).expect("read the rest");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{text}");
    assert!(
        first_at < Duration::from_millis(400),
        "the 103 waited for the answer ({first_at:?})"
    );
    let (hints, answer) = text.split_once("\r\n\r\n").expect("two heads");
    assert!(
        hints.contains("\r\nlink: </style.css>; rel=preload; as=style")
            || hints.contains("\r\nLink: </style.css>; rel=preload; as=style"),
        "{hints}"
    );
    assert!(hints
        .to_ascii_lowercase()
        .contains("link: </app.js>; rel=preload; as=script"));
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("the page"), "{answer}");

    // curl shows both heads and the body.
    let out = curl(&["-v", &format!("http://127.0.0.1:{}/raw/hints", srv.port)]);
    assert!(out.success(), "{out}");
    assert!(out.stderr.contains("< HTTP/1.1 103 Early Hints"), "{out}");
    assert_eq!(out.stdout, "the page");

    // HTTP/1.0 gets no 1xx (RFC 9110 §15.2); h2 answers plainly.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.write_all(b"GET /raw/hints HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut old = String::new();
    s.read_to_string(&mut old).expect("read");
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    // h2: an interim HEADERS frame with :status 103 before the answer's
    // (the python h2 package reports it), and curl shows it too.
    let got = h2_get(&srv, "/raw/hints");
    assert_eq!(got["informational"], serde_json::json!(["103"]), "{got}");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body_sha256"], sha256_hex(b"the page"), "{got}");
    let out = curl(&[
        "-v",
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{}/raw/hints", srv.port),
    ]);
    assert_eq!(out.stdout, "the page", "{out}");
    assert!(out.stderr.contains("< HTTP/2 103"), "{out}");
}

#[test]
fn pathsend_files_arrive_exact_on_both_loops() {
    for (loop_name, n) in [("uvloop", 5_000_000u64), ("asyncio", 3_000_001)] {
        let srv = asgi_site(1, &format!("loop = \"{loop_name}\"")).start();
        let pattern: Vec<u8> = (0..251u8).collect();
        let want: Vec<u8> = pattern.iter().cycle().take(n as usize).copied().collect();
        let url = format!("http://127.0.0.1:{}/file/{n}", srv.port);
        for _ in 0..3 {
            let (status, body, out) = curl_fetch(&url, &[]);
            assert_eq!(status, 200, "{out}");
            assert_eq!(sha256_hex(&body), sha256_hex(&want), "{loop_name}");
        }
        let (status, body, out) = curl_fetch(&url, &["-I"]);
        assert_eq!(status, 200, "{out}");
        let head = String::from_utf8_lossy(&body).to_ascii_lowercase();
        assert!(head.contains(&format!("content-length: {n}")), "{head}");
        // Keep-alive after a file: the next request on the connection works.
        let out = curl(&["-o", "/dev/null", "-o", "/dev/null", &url, &url]);
        assert!(out.success(), "{out}");
        let seen = srv.get("/seen").json();
        assert!(
            seen["pathsend"].as_i64().unwrap_or(0) >= 5,
            "{loop_name}: the app never used pathsend: {seen}"
        );
    }
}

#[test]
fn trailers_reach_clients_that_take_them_over_http2_and_http11() {
    let srv = asgi_site(1, "").start();
    let body = b"first piece of the body, second piece";
    let got = h2_get(&srv, "/raw/trailers");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body_sha256"], sha256_hex(body), "{got}");
    assert_eq!(got["trailers"]["x-body-sha256"], sha256_hex(body), "{got}");
    assert_eq!(got["trailers"]["x-status"], "complete", "{got}");
    assert!(
        got["trailers"].get("content-length").is_none(),
        "a framing field passed as a trailer: {got}"
    );
    // HTTP/1.1 without `TE: trailers`: not offered, so the app sends
    // none; the body is whole.
    let url = format!("http://127.0.0.1:{}/raw/trailers", srv.port);
    let (status, got, out) = curl_fetch(&url, &[]);
    assert_eq!((status, got.as_slice()), (200, &body[..]), "{out}");
    assert!(!out.stdout.contains("x-body-sha256"), "{out}");
    // With it: the trailer section ends the chunked body. curl reports
    // trailers with the headers (-D).
    let dump = tempfile::NamedTempFile::new().expect("temp file");
    let dump_path = dump.path().to_str().expect("utf-8 path");
    let (status, got, out) = curl_fetch(&url, &["-H", "TE: trailers", "-D", dump_path]);
    assert_eq!((status, got.as_slice()), (200, &body[..]), "{out}");
    let headers = std::fs::read_to_string(dump.path()).expect("curl's header dump");
    let want = format!("x-body-sha256: {}\r\n", sha256_hex(body));
    assert!(headers.contains(&want), "{headers}");
    assert!(headers.contains("x-status: complete\r\n"), "{headers}");
    // The exact bytes: the last chunk, the two fields, the blank line.
    let req = b"GET /raw/trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n";
    let out = raw_exchange(srv.port, req, false, Duration::from_secs(20)).expect("exchange");
    let raw = String::from_utf8_lossy(&out.bytes).into_owned();
    let tail = format!("\r\n0\r\n{want}x-status: complete\r\n\r\n");
    assert!(raw.ends_with(&tail), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{raw}"
    );
}

/// Browsers send each cookie as a field of its own over HTTP/2 (the python
/// `h2` package here does the same): the app gets them joined with "; "
/// as one `cookie` header (RFC 9113 §8.2.3), where its other headers were.
/// Django joined the separate fields with "," and kept only the first
/// cookie, so sessions and CSRF broke for every browser over HTTPS.
#[test]
fn cookies_sent_as_separate_h2_fields_reach_the_app_as_one_header() {
    let srv = asgi_site(1, "").start();
    let cookies = [
        "--cookie",
        "sessionid=abc",
        "--cookie",
        "csrftoken=xyz",
        "--cookie",
        "theme=dark",
    ];
    let got = h2_get_with(&srv, "/raw/headers", &cookies);
    assert_eq!(got["status"], 200, "{got}");
    let headers: Vec<(String, String)> =
        serde_json::from_str(got["body"].as_str().unwrap_or("")).expect("the app's JSON");
    let cookie: Vec<&(String, String)> = headers.iter().filter(|(k, _)| k == "cookie").collect();
    assert_eq!(
        cookie,
        [&(
            "cookie".to_string(),
            "sessionid=abc; csrftoken=xyz; theme=dark".to_string()
        )],
        "{headers:?}"
    );
}

/// A site with many cookies: Chromium sends each as its own h2 field, and
/// they count as one against `max_headers` (100), as on one HTTP/1.1 line.
/// Chromium got 431 on every request from about 95 cookies; from 244 the
/// worker's head parser refused them, until the edge joined them. Other
/// fields still count one by one.
#[test]
fn hundreds_of_h2_cookie_fields_count_as_one_header_field() {
    let srv = asgi_site(1, "").start();
    let names: Vec<String> = (0..300).map(|i| format!("k{i}=v{i}")).collect();
    let args: Vec<&str> = names.iter().flat_map(|n| ["--cookie", n]).collect();
    let got = h2_get_with(&srv, "/raw/headers", &args);
    assert_eq!(got["status"], 200, "{got}");
    let headers: Vec<(String, String)> =
        serde_json::from_str(got["body"].as_str().unwrap_or("")).expect("the app's JSON");
    let cookie: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookie, [names.join("; ")], "{headers:?}");
    let fields: Vec<String> = (0..101).map(|i| format!("x-f{i}:1")).collect();
    let args: Vec<&str> = fields.iter().flat_map(|f| ["--header", f]).collect();
    let got = h2_get_with(&srv, "/raw/headers", &args);
    assert_eq!(got["status"], 431, "{got}");
}

/// One GET over h2c by the python `h2` package (`common::h2_get`).
fn h2_get(srv: &Running, path: &str) -> serde_json::Value {
    h2_get_with(srv, path, &[])
}

/// The same, with extra arguments for h2_get.py (`--cookie`).
fn h2_get_with(srv: &Running, path: &str, extra: &[&str]) -> serde_json::Value {
    let mut got = common::h2_get(srv.port, path, extra);
    assert_eq!(got.len(), 1, "{got:?}\n{}", srv.stderr_tail());
    got.remove(0)
}

#[test]
fn litestar_http_streaming_and_websocket() {
    let app_extra = "virtualenv = \"{venv}\"";
    let site =
        Site::new()
            .app("litestar_app.py")
            .config(&app_config("litestar_app:app", 1, app_extra));
    site.assert_checks_as_asgi("Litestar");
    let srv = site.start();
    // The lifespan put a greeting into app.state in this worker; the view
    // reads it beside its path and query parameters.
    let r = srv.get("/greet/ada?times=2");
    srv.assert_status(&r, 200, "GET /greet/ada on Litestar");
    let j = r.json();
    let pid = j["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {r}"));
    let greeting = format!("hello from lifespan in {pid}");
    assert_eq!(j["greeting"].as_str(), Some(greeting.as_str()), "{r}");
    assert_eq!(j["name"].as_str(), Some("ada"), "{r}");
    assert_eq!(j["shout"].as_str(), Some("ADA!ADA!"), "{r}");
    let r = srv.get("/greet/ada?times=many");
    srv.assert_status(&r, 400, "a query parameter Litestar cannot parse");
    // A POST is 201 in Litestar; the app hashes the body it read.
    let body = "{\"a\": [1, 2, \"\u{e9}\"], \"b\": null}".as_bytes();
    let r = srv.post("/sha256", "application/json", body);
    srv.assert_status(&r, 201, "POST /sha256");
    let (j, sum) = (r.json(), sha256_hex(body));
    assert_eq!(j["sha256"].as_str(), Some(sum.as_str()), "{r}");
    assert_eq!(j["length"].as_u64(), Some(body.len() as u64), "{r}");
    // A Stream response: five chunks 50 ms apart, chunked and exact.
    let r = srv.get("/stream/5?size=1000");
    srv.assert_status(&r, 200, "GET /stream/5");
    let want: String = (0..5)
        .map(|i| format!("chunk {i}:{}\n", "x".repeat(1000)))
        .collect();
    assert_eq!(r.body.len(), want.len(), "{r}");
    assert_eq!(sha256_hex(&r.body), sha256_hex(want.as_bytes()), "{r}");
    assert!(r.chunked, "a streamed body goes out chunked: {r}");
    // httpx (a big JSON POST, the stream as it arrives, a bad parameter)
    // and python websockets (text, a 100 KiB binary message, 100 in order).
    let out = run_checks(
        &srv,
        "litestar_checks.py",
        &[
            "--base".to_string(),
            format!("http://127.0.0.1:{}", srv.port),
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.stdout
            .contains("ok   websockets: 100 KiB binary echo, exact bytes"),
        "{out}"
    );
}

/// Four WebSocket handshakes (python websockets) whose app waits 2 s before
/// accepting, and both workers kill -9'd meanwhile: each handshake runs
/// again once a replacement is up, and every socket opens and echoes. They
/// got an immediate 503 "no room for another WebSocket" while no worker
/// was up (a third-party drill).
#[test]
fn websocket_handshakes_whose_workers_all_die_open_on_the_replacements() {
    handshakes_outlive_every_worker(|port| {
        let url = format!("ws://127.0.0.1:{port}/ws/slow-accept");
        let mut cmd = Command::new(python());
        cmd.arg(client_script("ws_slow_open.py"))
            .args(["--url", &url, "--count", "4"]);
        (cmd, "\"ok\": true")
    });
}

/// The same over HTTP/2 (RFC 8441, what Chromium uses over TLS), by the
/// python h2 package: each extended CONNECT runs again on a replacement and
/// gets its 200. They got 502: the rerun went by the method, and CONNECT
/// is not idempotent, though a handshake is in the app's hands alone until
/// it is answered (a third-party drill with Chromium: 4 of 4 onerror).
#[test]
fn h2_websocket_handshakes_whose_workers_all_die_open_on_the_replacements() {
    handshakes_outlive_every_worker(|port| {
        let mut cmd = Command::new(python());
        cmd.arg(client_script("h2_ws_open.py")).args([
            "--port",
            &port.to_string(),
            "--path",
            "/ws/slow-accept",
            "--count",
            "4",
        ]);
        (cmd, "\"status\": 200")
    });
}

fn client_script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the client `make` gives for the site's port (four handshakes to
/// /ws/slow-accept), kills both workers 0.8 s in, and needs four lines of
/// its output to say `opened`.
fn handshakes_outlive_every_worker(make: impl FnOnce(u16) -> (Command, &'static str)) {
    let srv = asgi_site(2, "").start();
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    let workers = srv.worker_pids();
    let (mut cmd, opened) = make(srv.port);
    let client = std::thread::spawn(move || run_with_timeout(&mut cmd, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(800));
    // Both at once: killed a `kill` process apart (ms), the edge could rerun
    // a handshake of the first on the second just before it died too, and
    // a request whose two workers died is not run a third time (502).
    for w in &workers {
        // SAFETY: a plain signal to a child of the server under test.
        unsafe { libc::kill(*w, libc::SIGKILL) };
    }
    let out = client.join().unwrap();
    assert!(out.success(), "{out}");
    let open = out.stdout.lines().filter(|l| l.contains(opened)).count();
    assert_eq!(open, 4, "{out}\n{}", srv.stderr_tail());
}

/// Twenty requests that each kill their ASGI worker, ten at a time, while
/// a client asks for a page every 200 ms: no page request fails. An ASGI
/// worker holds many requests, so each death resets the ones that had not
/// reached its app yet, and those were retried on at most 8 workers, which
/// such a storm ran through (a third-party drill: 5 of 267 pages got 502).
#[test]
fn requests_that_kill_asgi_workers_do_not_fail_other_requests() {
    let srv = asgi_site(2, "queue_timeout = \"10s\"").start();
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    let (_, probes) = kill_storm(srv.port, "/raw/die", "/");
    assert!(
        probes.iter().all(|&(s, _)| s == 200),
        "{probes:?}\n{}",
        srv.stderr_tail()
    );
}
