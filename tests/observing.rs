//! Seeing inside a running site as an operator does: `corral status`
//! (table and JSON) and `corral dump` over the control socket, against a
//! worker known to be sleeping in a known function; the access log's
//! per-request costs (queue, app, worker pid, CPU, memory); the status
//! page on the metrics listener in headless Chromium (charts move, a
//! screenshot is taken).
mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn observed_site(workers: u32, extra: &str, metrics_port: Option<u16>) -> Site {
    let mut config = app_config("lifecycle_app:application", workers, extra)
        .replace("[server]\n", "[server]\npid_file = \"{dir}/corral.pid\"\n");
    if let Some(port) = metrics_port {
        config += &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    }
    Site::new().app("lifecycle_app.py").config(&config)
}

fn status_json(srv: &Running) -> Value {
    let cfg = srv.config_path();
    let out = corral(
        &["status", "--config", cfg.to_str().unwrap(), "--json"],
        Duration::from_secs(20),
    );
    assert!(out.success(), "corral status --json: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The worker running `request`, once status shows it.
fn wait_running(srv: &Running, request: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_json(srv);
        let busy = status["workers"].as_array().and_then(|ws| {
            ws.iter()
                .find(|w| w["running"][0]["request"].as_str() == Some(request))
                .cloned()
        });
        if let Some(w) = busy {
            return w;
        }
        if Instant::now() > deadline {
            srv.fail(format!("status never showed {request}: {status:#}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_and_dump_show_a_worker_sleeping_in_a_known_function() {
    let srv = observed_site(2, "", None).start();
    let port = srv.port;
    let sleeper = std::thread::spawn(move || get(port, "/sleep?s=4"));
    let busy = wait_running(&srv, "GET /sleep?s=4");
    let pid = busy["pid"].as_i64().expect("pid");
    assert_eq!(busy["state"], "busy", "{busy:#}");
    assert_eq!(busy["interface"], "wsgi");
    assert!(busy["running"][0]["seconds"].as_f64().unwrap() < 4.0);
    let request_id = busy["running"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let status = status_json(&srv);
    assert_eq!(status["workers_wanted"], 2, "{status:#}");
    assert_eq!(status["queue"]["depth"], 0);
    let idle: Vec<&Value> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "idle")
        .collect();
    assert_eq!(idle.len(), 1, "{status:#}");
    assert_ne!(idle[0]["pid"].as_i64(), Some(pid));

    // The table for people names the same worker and request.
    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();
    let table = corral(&["status", "--config", cfg], Duration::from_secs(20));
    assert!(table.success(), "{table}");
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains(&pid.to_string()))
        .unwrap_or_else(|| panic!("no row for {pid}: {table}"));
    assert!(
        row.contains("busy") && row.contains("GET /sleep?s=4"),
        "{table}"
    );

    // The dump: the sleeping worker's Python stack, with its request; the
    // idle worker is left alone.
    let dump = corral(&["dump", "--config", cfg], Duration::from_secs(20));
    assert!(dump.success(), "{dump}");
    let text = &dump.stdout;
    assert!(text.contains(&format!("pid {pid}")), "{text}");
    assert!(
        text.contains(&format!("GET /sleep?s=4 (request {request_id})")),
        "{text}"
    );
    assert!(text.contains("in lifecycle_sleeper"), "{text}");
    assert!(text.contains("lifecycle_app.py"), "{text}");
    let other = idle[0]["pid"].as_i64().unwrap();
    assert!(!text.contains(&format!("pid {other}")), "{text}");
    let json = corral(
        &["dump", "--config", cfg, "--json"],
        Duration::from_secs(20),
    );
    let dumped: Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(dumped.as_array().map(Vec::len), Some(1), "{dumped:#}");
    assert!(dumped[0]["stacks"]
        .as_str()
        .unwrap()
        .contains("lifecycle_sleeper"));
    assert_eq!(dumped[0]["error"], Value::Null);

    // Nothing was killed: the request finishes on the same worker.
    let r = sleeper.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), pid.to_string());
    assert_eq!(r.header("x-request-id"), Some(request_id.as_str()));
    assert!(!srv.stderr().contains(&format!("worker {pid} died")));
    let after = status_json(&srv);
    let same = &after["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == pid)
        .cloned();
    assert!(same.is_some(), "{after:#}");
    assert_eq!(same.as_ref().unwrap()["requests"], 1, "{after:#}");
    let dump = corral(&["dump", "--config", cfg], Duration::from_secs(20));
    assert_eq!(dump.stdout, "no worker is running a request\n", "{dump}");
}

#[test]
fn a_configured_control_socket_is_private_and_says_why_workers_were_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let extra = "max_requests = 3";
    let site = observed_site(1, extra, None);
    let config = site.config_text().replace(
        "[server]\n",
        &format!("[server]\ncontrol_socket = \"{}\"\n", socket.display()),
    );
    let srv = site.config(&config).start();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let sock = socket.to_str().unwrap();
    // Three requests recycle the worker; its successor says why it exists.
    for _ in 0..3 {
        assert_eq!(srv.get("/pid").status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let replaced = loop {
        let out = corral(
            &["status", "--socket", sock, "--json"],
            Duration::from_secs(20),
        );
        assert!(out.success(), "{out}");
        let status: Value = serde_json::from_str(&out.stdout).unwrap();
        let w = &status["workers"][0];
        if w["last_restart"] == "max_requests" && w["state"] == "idle" {
            break w.clone();
        }
        if Instant::now() > deadline {
            srv.fail(format!("no replacement for max_requests: {status:#}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(replaced["requests"], 0, "{replaced:#}");
    // Its memory is sampled within a few seconds.
    assert!(wait_until(Duration::from_secs(15), || {
        let out = corral(
            &["status", "--socket", sock, "--json"],
            Duration::from_secs(20),
        );
        let status: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        status["workers"][0]["rss_bytes"]
            .as_u64()
            .is_some_and(|b| b > 1 << 20)
    }));
    // A client speaking nonsense gets a clear error, and so does a wrong path.
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"reload\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "error: unknown command `reload` (status, dump)\n");
    let missing = dir.path().join("nope.sock");
    let out = corral(
        &["status", "--socket", missing.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(!out.success());
    assert!(
        out.stderr.contains("nope.sock") && out.stderr.contains("No such file"),
        "{out}"
    );
    drop(srv);
    assert!(!socket.exists(), "the socket outlived corral");
}

#[test]
fn status_without_a_way_to_find_the_socket_says_what_to_set() {
    let site =
        Site::new()
            .app("lifecycle_app.py")
            .config(&app_config("lifecycle_app:application", 1, ""));
    let cfg = site.config_path();
    let out = corral(
        &["status", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("set [server] control_socket (or [server] pid_file), or pass --socket"),
        "{out}"
    );
}

/// The combined access log's line for `target`, once it is written.
#[track_caller]
fn combined_line(srv: &Running, target: &str) -> String {
    assert!(
        srv.wait_for_stdout(target, Duration::from_secs(5)),
        "no access line for {target}"
    );
    let log = srv.stdout();
    log.lines()
        .find(|l| l.contains(target))
        .map(String::from)
        .unwrap_or_default()
}

/// The JSON access log's lines for `target`.
fn log_lines(srv: &Running, target: &str) -> Vec<Value> {
    srv.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["target"] == target)
        .collect()
}

#[test]
fn the_access_log_carries_each_requests_costs() {
    let site = observed_site(1, "", None).file("static/a.txt", "static\n");
    let config =
        site.config_text().to_string() + "\n[[static]]\nurl = \"/static/\"\ndir = \"static\"\n";
    let config = config.replace(
        "level = \"info\"\n",
        "level = \"info\"\naccess_format = \"json\"\n",
    );
    let srv = site.config(&config).start();
    let pid: i64 = srv.get("/pid").text().parse().unwrap();
    assert_eq!(srv.get("/burn?ms=300").status, 200);
    assert_eq!(srv.get("/leak?mb=40").status, 200);
    assert_eq!(srv.get("/sleep?s=0.3").status, 200);
    assert_eq!(srv.head("/sleep?s=0.01").status, 200);
    assert_eq!(srv.get("/static/a.txt").status, 200);
    // A request that waits in the queue behind a sleeping one.
    let port = srv.port;
    let first = std::thread::spawn(move || get(port, "/sleep?s=1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.get("/fast").status, 200);
    first.join().unwrap();
    assert!(wait_until(Duration::from_secs(5), || log_lines(
        &srv, "/fast"
    )
    .len()
        == 1));

    let one = |t: &str| -> Value {
        let lines = log_lines(&srv, t);
        assert_eq!(lines.len(), 1, "{t}: {}", srv.stdout());
        lines[0].clone()
    };
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k}: {v}"));
    for t in [
        "/pid",
        "/burn?ms=300",
        "/leak?mb=40",
        "/sleep?s=0.3",
        "/fast",
    ] {
        assert_eq!(one(t)["worker"], pid, "{}", one(t));
    }
    let burn = one("/burn?ms=300");
    assert!(num(&burn, "worker_cpu_ms") >= 290.0, "{burn}");
    assert!(
        num(&burn, "app_ms") >= num(&burn, "worker_cpu_ms") - 5.0,
        "{burn}"
    );
    let leak = one("/leak?mb=40");
    assert!(num(&leak, "rss_delta_kb") >= 39_000.0, "{leak}");
    let sleep = one("/sleep?s=0.3");
    assert!(num(&sleep, "app_ms") >= 300.0, "{sleep}");
    assert!(
        num(&sleep, "worker_cpu_ms") < 100.0,
        "sleeping is not CPU: {sleep}"
    );
    assert!(num(&sleep, "rss_delta_kb").abs() < 5_000.0, "{sleep}");
    assert!(num(&sleep, "queue_ms") < 50.0, "{sleep}");
    let queued = one("/fast");
    assert!(
        num(&queued, "queue_ms") >= 500.0,
        "waited for the sleeper: {queued}"
    );
    let head = one("/sleep?s=0.01");
    assert_eq!(head["method"], "HEAD");
    assert_eq!(head["worker"], pid);
    // What the edge answers alone has no worker costs.
    let file = one("/static/a.txt");
    assert_eq!(file.get("worker"), None, "{file}");
    assert_eq!(file.get("queue_ms"), None, "{file}");
    // The worker connection stays reused across receipts: one connection
    // per worker capacity, not one per request.
    assert!(!srv.stderr().contains("receipt"), "{}", srv.stderr());
}

#[test]
fn combined_log_lines_end_with_the_costs() {
    let srv = observed_site(1, "", None).start();
    let pid = srv.get("/burn?ms=50").text();
    let line = combined_line(&srv, "/burn?ms=50");
    let fields: Vec<&str> = line.split(' ').collect();
    let tail = &fields[fields.len() - 5..];
    assert!(tail[0].starts_with("queue_ms="), "{line}");
    assert!(tail[1].starts_with("app_ms="), "{line}");
    assert_eq!(tail[2], format!("worker={pid}"), "{line}");
    let cpu: f64 = tail[3]
        .strip_prefix("worker_cpu_ms=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cpu >= 45.0, "{line}");
    assert!(tail[4].starts_with("rss_delta_kb="), "{line}");
    // The combined part before them is untouched (what log parsers read).
    assert!(line.contains("\"GET /burn?ms=50 HTTP/1.1\" 200 "), "{line}");
}

#[test]
fn the_status_page_renders_and_its_charts_move_in_chromium() {
    let metrics_port = free_port();
    let srv = observed_site(2, "", Some(metrics_port)).start();
    let port = srv.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 2000 {
                let path = if sent.is_multiple_of(10) {
                    "/sleep?s=0.2"
                } else {
                    "/fast"
                };
                assert_eq!(get(port, path).status, 200);
                sent += 1;
            }
            sent
        })
    };
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(format!("{MANIFEST_DIR}/tests/clients/status_page.py"))
            .args(["--url", &format!("http://127.0.0.1:{metrics_port}/")])
            .arg("--screenshot")
            .arg(&shots)
            .args(["--seconds", "6"]),
        Duration::from_secs(120),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().unwrap();
    eprintln!("{}\nscreenshot: {}", out.stdout, shots.display());
    assert!(
        out.success() && out.stdout.contains(", 0 failures"),
        "{out}"
    );
    assert!(sent > 20, "only {sent} requests under the page");
    let png = std::fs::read(&shots).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[test]
fn without_request_costs_the_worker_is_still_named() {
    let site = observed_site(1, "", None);
    let config = site.config_text().replace(
        "level = \"info\"\n",
        "level = \"info\"\nrequest_costs = false\n",
    );
    let srv = site.config(&config).start();
    let pid = srv.get("/burn?ms=20").text();
    let line = combined_line(&srv, "/burn?ms=20");
    assert!(
        line.ends_with(&format!(" worker={pid} worker_cpu_ms=- rss_delta_kb=-")),
        "{line}"
    );
}

/// An ASGI worker runs many requests on one thread: its lines name the
/// worker (the same pid `corral status` shows) but claim no CPU or memory.
#[test]
fn asgi_requests_name_their_worker_only() {
    let config = app_config("asgi_app:application", 1, "virtualenv = \"{venv}\"")
        .replace("[server]\n", "[server]\npid_file = \"{dir}/corral.pid\"\n")
        .replace(
            "level = \"info\"\n",
            "level = \"info\"\naccess_format = \"json\"\n",
        );
    let srv = Site::new().app("asgi_app.py").config(&config).start();
    assert_eq!(srv.get("/").status, 200);
    assert_eq!(srv.get("/sleep/0.2").status, 200);
    let status = status_json(&srv);
    let pid = &status["workers"][0]["pid"];
    assert!(wait_until(Duration::from_secs(5), || log_lines(
        &srv,
        "/sleep/0.2"
    )
    .len()
        == 1));
    for target in ["/", "/sleep/0.2"] {
        let line = &log_lines(&srv, target)[0];
        assert_eq!(&line["worker"], pid, "{line}");
        assert_eq!(line["worker_cpu_ms"], Value::Null, "{line}");
        assert_eq!(line["rss_delta_kb"], Value::Null, "{line}");
    }
    let slept = &log_lines(&srv, "/sleep/0.2")[0];
    assert!(slept["app_ms"].as_f64().unwrap() >= 200.0, "{slept}");
}

/// An ASGI worker's dump adds, under its threads' stacks, where each
/// request's task is awaiting, named by its request.
#[test]
fn an_asgi_dump_shows_each_requests_await_point() {
    let config = app_config("asgi_app:application", 1, "virtualenv = \"{venv}\"")
        .replace("[server]\n", "[server]\npid_file = \"{dir}/corral.pid\"\n");
    let srv = Site::new().app("asgi_app.py").config(&config).start();
    let port = srv.port;
    let sleepers: Vec<_> = ["/sleep/3", "/sleep/3.5"]
        .into_iter()
        .map(|p| std::thread::spawn(move || get(port, p)))
        .collect();
    wait_worker(&srv, "two sleeping requests", |w| {
        w["running"].as_array().map_or(0, Vec::len) == 2
    });
    let cfg = srv.config_path();
    let dump = corral(
        &["dump", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(dump.success(), "{dump}");
    let text = &dump.stdout;
    for target in ["/sleep/3", "/sleep/3.5"] {
        let task = text
            .split("Task for ")
            .find(|t| t.starts_with(&format!("GET {target} (request ")))
            .unwrap_or_else(|| panic!("no task for {target}: {text}"));
        assert!(
            task.contains("asgi_app.py") && task.contains(" in sleep\n"),
            "{task}"
        );
    }
    for s in sleepers {
        assert_eq!(s.join().unwrap().status, 200);
    }
}

/// The worker a status row names, once it is `state` with `reason`.
fn wait_worker(srv: &Running, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_json(srv);
        if let Some(w) = status["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| ok(w)))
        {
            return w.clone();
        }
        if Instant::now() > deadline {
            srv.fail(format!("never saw {what}: {status:#}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_worker_says_why_it_replaced_another() {
    let site = observed_site(1, "timeout = \"1s\"", None);
    let config = site
        .config_text()
        .replace("[server]\n", "[server]\nruntime_dir = \"{dir}/run\"\n");
    let srv = site.config(&config).start();
    let first = wait_worker(&srv, "the first worker", |w| w["state"] == "idle");
    assert_eq!(first["last_restart"], Value::Null, "{first:#}");
    // A request past app.timeout: its worker is replaced, and the 504's log
    // line still names the worker and its time.
    assert_eq!(srv.get("/sleep?s=5").status, 504);
    let after_timeout = wait_worker(&srv, "a replacement for the timeout", |w| {
        w["last_restart"] == "timeout" && w["state"] == "idle"
    });
    let line = srv
        .stdout()
        .lines()
        .find(|l| l.contains("/sleep?s=5"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains(&format!(" worker={} ", first["pid"])),
        "{line}"
    );
    assert!(line.contains(" worker_cpu_ms=- rss_delta_kb=-"), "{line}");
    // A crash.
    let pid = after_timeout["pid"].as_i64().unwrap() as i32;
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let after_crash = wait_worker(&srv, "a replacement for the crash", |w| {
        w["last_restart"] == "crash" && w["state"] == "idle"
    });
    // Its predecessors' files are gone from the runtime dir.
    let run = std::fs::read_dir(srv.path().join("run"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let stacks_files = || {
        std::fs::read_dir(srv.path().join("run"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".stacks"))
            .count()
    };
    // The timed-out worker is killed a little after its stacks are dumped.
    assert!(
        wait_until(Duration::from_secs(10), || stacks_files() == 1),
        "{run:?}"
    );
    // One more worker (TTIN) replaces nothing.
    srv.signal("TTIN");
    let added = wait_worker(&srv, "the added worker", |w| w["pid"] != after_crash["pid"]);
    assert_eq!(added["last_restart"], Value::Null, "{added:#}");
    assert_eq!(
        status_json(&srv)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["pid"] == after_crash["pid"])
            .map(|w| w["last_restart"].clone()),
        Some(Value::from("crash"))
    );
}

/// A client that leaves before the answer is a 499 in the access log and
/// the metrics (as nginx logs it), with the worker's time, and no error.
#[test]
fn a_client_that_leaves_early_is_a_499_not_an_error() {
    let srv = observed_site(1, "", None).start();
    let mut conn = srv.connect();
    conn.send(
        format!(
            "GET /sleep?s=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            srv.port
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    let line = combined_line(&srv, "/sleep?s=1");
    assert!(
        line.contains("\"GET /sleep?s=1 HTTP/1.1\" 499 0 "),
        "{line}"
    );
    assert!(line.contains(" worker="), "{line}");
    let stderr = srv.stderr();
    assert!(!stderr.contains("ERROR"), "{stderr}");
    // The worker finished its sleep and serves on.
    assert_eq!(srv.get("/pid").status, 200);
}

/// `corral dump` over and over while a threaded WSGI site is under load:
/// every request is answered and no worker dies (walking running threads'
/// frames from a signal handler, as faulthandler does, crashed them).
#[test]
fn dumps_under_load_disturb_nothing() {
    let srv = observed_site(2, "threads = 4", None).start();
    let port = srv.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..6)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failed < 3000 {
                    let path = if i % 2 == 0 {
                        "/burn?ms=2"
                    } else {
                        "/sleep?s=0.01"
                    };
                    match try_get(port, path) {
                        Ok(r) if r.status == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let cfg = srv.config_path();
    let mut dumps = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let out = corral(
            &["dump", "--config", cfg.to_str().unwrap()],
            Duration::from_secs(20),
        );
        assert!(out.success(), "{out}");
        dumps += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("{dumps} dumps, {ok} requests answered, {failed} failed");
    assert!(dumps >= 10, "{dumps}");
    assert!(ok > 200, "{ok}");
    assert_eq!(failed, 0);
    let stderr = srv.stderr();
    assert!(
        !stderr.contains("died") && !stderr.contains("segmentation"),
        "{stderr}"
    );
}
