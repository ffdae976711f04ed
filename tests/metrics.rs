//! `[metrics] listen`: the Prometheus endpoint as monitoring meets it. A
//! known mix of requests (app, static, refused, timed out) is sent, then
//! the endpoint is scraped and parsed by the official python client's
//! parser and the counts checked exactly; and a real Prometheus server
//! (Debian's package) scrapes corral and answers a PromQL query.
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn metrics_site(metrics_port: u16) -> Site {
    let config = app_config("lifecycle_app:application", 1, "timeout = \"1s\"")
        + &format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
             [[static]]\nurl = \"/static/\"\ndir = \"static\"\n"
        );
    Site::new()
        .app("lifecycle_app.py")
        .file("static/a.txt", "static file\n")
        .config(&config)
}

/// Every sample, as `name{label=value,...}` → value.
fn scrape(port: u16) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(format!("{MANIFEST_DIR}/tests/clients/metrics_scrape.py"))
            .arg(format!("http://127.0.0.1:{port}/metrics")),
        Duration::from_secs(30),
    );
    assert!(out.success(), "{out}");
    serde_json::from_str(out.stdout.trim()).expect("JSON")
}

/// Repeats of a static request on one keep-alive connection (answered by
/// the edge's shortcut from the second on) are counted as static answers,
/// their bytes and cache hits, as answers of the full path are.
#[test]
fn repeated_static_answers_are_counted_like_any_other() {
    let metrics_port = free_port();
    let srv = metrics_site(metrics_port).start();
    let mut conn = srv.connect();
    for _ in 0..6 {
        let r = conn.get("/static/a.txt").expect("answer");
        assert_eq!(r.text(), "static file\n");
    }
    // Counted as each answer's log line is written, after it went out.
    let line = "\"GET /static/a.txt HTTP/1.1\" 200";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while srv.stdout().matches(line).count() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = scrape(metrics_port);
    let n = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m:#}"));
    assert_eq!(
        n("corral_requests_total{code=200,kind=static}"),
        6.0,
        "{m:#}"
    );
    assert_eq!(
        n("corral_bytes_sent_total{kind=static}"),
        6.0 * 12.0,
        "{m:#}"
    );
    assert_eq!(n("corral_request_duration_seconds_count{kind=static}"), 6.0);
    // The first answer read the file; every later one came from memory.
    assert_eq!(n("corral_static_cache_hits_total{}"), 5.0, "{m:#}");
}

#[test]
fn a_known_mix_of_requests_is_counted_exactly() {
    let metrics_port = free_port();
    let srv = metrics_site(metrics_port).start();
    for _ in 0..5 {
        assert_eq!(srv.get("/pid").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(srv.get("/static/a.txt").text(), "static file\n");
    }
    for _ in 0..2 {
        let r = srv.request(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 400, "no Host");
    }
    assert_eq!(srv.get("/sleep?s=3").status, 504);
    // The access log line is written as the request ends; so is the count.
    std::thread::sleep(Duration::from_millis(300));
    let m = scrape(metrics_port);
    let n = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m:#}"));
    assert_eq!(n("corral_requests_total{code=200,kind=app}"), 5.0);
    assert_eq!(n("corral_requests_total{code=200,kind=static}"), 3.0);
    assert_eq!(n("corral_requests_total{code=400,kind=refused}"), 2.0);
    assert_eq!(n("corral_requests_total{code=504,kind=app}"), 1.0);
    assert_eq!(n("corral_request_duration_seconds_count{kind=app}"), 6.0);
    assert_eq!(n("corral_request_duration_seconds_count{kind=static}"), 3.0);
    // Six requests reached a worker: each waited and each was worked on.
    assert_eq!(n("corral_queue_wait_seconds_count{}"), 6.0);
    assert_eq!(n("corral_app_duration_seconds_count{}"), 6.0);
    // The timed-out one spent a second in the worker.
    assert!(n("corral_app_duration_seconds_sum{}") >= 1.0, "{m:#}");
    assert_eq!(n("corral_bytes_sent_total{kind=static}"), 36.0);
    assert_eq!(n("corral_queue_depth{}"), 0.0);
    // Anything but /metrics, the status page and its JSON is not found
    // there, and nothing there is counted.
    let other = try_get(metrics_port, "/nope").expect("metrics listener");
    assert_eq!(other.status, 404);
    let page = try_get(metrics_port, "/").expect("status page");
    assert_eq!(page.status, 200);
    assert_eq!(
        scrape(metrics_port)["corral_requests_total{code=200,kind=app}"],
        5.0
    );
}

/// Waits up to 15 s for the sample `key` to satisfy `ok`.
fn wait_sample(port: u16, key: &str, ok: impl Fn(f64) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(15), || {
        last = scrape(port);
        last[key].as_f64().is_some_and(&ok)
    });
    assert!(seen, "{key} never as expected: {last:#}");
    last
}

/// What only the master knows reaches the edge's metrics: why workers were
/// replaced, each worker's requests and memory, booting and draining.
#[test]
fn worker_restarts_memory_and_states_are_reported() {
    let metrics_port = free_port();
    let srv = metrics_site(metrics_port).start();
    // A timeout replaces worker 1 (its series go with it).
    assert_eq!(srv.get("/sleep?s=3").status, 504);
    wait_sample(
        metrics_port,
        "corral_worker_restarts_total{reason=timeout}",
        |n| n == 1.0,
    );
    assert!(srv.wait_worker_count(1, Duration::from_secs(10)));
    for _ in 0..2 {
        assert_eq!(srv.get("/pid").status, 200);
    }
    let m = wait_sample(metrics_port, "corral_worker_rss_bytes{worker=2}", |b| {
        b > 1_000_000.0
    });
    assert_eq!(m["corral_worker_requests_total{worker=2}"], 2.0, "{m:#}");
    assert!(
        m.get("corral_worker_requests_total{worker=1}").is_none(),
        "{m:#}"
    );
    assert_eq!(m["corral_workers{state=booting}"], 0.0, "{m:#}");
    assert_eq!(m["corral_workers{state=draining}"], 0.0, "{m:#}");
    assert_eq!(m["corral_workers{state=idle}"], 1.0, "{m:#}");
    // One more worker, then one fewer: a scale-down.
    srv.signal("TTIN");
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    srv.signal("TTOU");
    wait_sample(
        metrics_port,
        "corral_worker_restarts_total{reason=scale}",
        |n| n == 1.0,
    );
}

#[test]
fn a_real_prometheus_scrapes_corral_and_answers_promql() {
    let metrics_port = free_port();
    let srv = metrics_site(metrics_port).start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: corral\n    \
             static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n"
        ),
    )
    .expect("prometheus.yml");
    let web = free_port();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/deps.sh --test installs it)"),
    );
    for _ in 0..7 {
        assert_eq!(srv.get("/pid").status, 200);
    }
    let query = "sum(corral_requests_total{kind=\"app\",code=\"200\"})";
    let mut last = String::new();
    let answered = wait_until(Duration::from_secs(60), || {
        let out = curl(&[
            "-s",
            "--get",
            "--data-urlencode",
            &format!("query={query}"),
            &format!("http://127.0.0.1:{web}/api/v1/query"),
        ]);
        last = out.stdout.clone();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        v["data"]["result"][0]["value"][1] == "7"
    });
    assert!(answered, "PromQL `{query}` never gave 7: {last}");
}

/// Connections open now, TLS handshakes by version, static cache hits.
#[test]
fn connections_handshakes_and_cache_hits_are_counted() {
    let metrics_port = free_port();
    let tls_port = free_port();
    let site = metrics_site(metrics_port);
    self_signed_cert(site.path());
    let config = site.config_text().to_string()
        + &format!(
            "\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n[[tls.cert]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
        );
    let srv = site.config(&config).start();
    let url = format!("https://127.0.0.1:{tls_port}/static/a.txt");
    for _ in 0..3 {
        let out = curl(&["-s", "-k", &url]);
        assert_eq!(out.stdout, "static file\n", "{out}");
    }
    let m = scrape(metrics_port);
    let handshakes: f64 = m
        .as_object()
        .expect("samples")
        .iter()
        .filter(|(k, _)| k.starts_with("corral_tls_handshakes_total{version="))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    assert_eq!(handshakes, 3.0, "{m:#}");
    // The first request filled the cache; the next two were served from it.
    assert_eq!(m["corral_static_cache_hits_total{}"], 2.0, "{m:#}");
    wait_sample(metrics_port, "corral_connections{proto=tls}", |n| n == 0.0);
    // A kept-alive connection counts while it is open.
    let mut conn = Conn::connect(srv.port);
    assert_eq!(conn.get("/pid").expect("answer").status, 200);
    wait_sample(metrics_port, "corral_connections{proto=http1}", |n| {
        n == 1.0
    });
    drop(conn);
    wait_sample(metrics_port, "corral_connections{proto=http1}", |n| {
        n == 0.0
    });
    // By now every family has samples (RSS once the master sampled it).
    wait_sample(metrics_port, "corral_worker_rss_bytes{worker=1}", |n| {
        n > 0.0
    });
    assert_dashboard_fits(&get(metrics_port, "/metrics").text());
}

/// contrib/grafana/corral.json imports cleanly and asks only for series
/// corral really exposes: the `# TYPE` lines of a live scrape after app,
/// static and TLS traffic.
fn assert_dashboard_fits(scraped: &str) {
    let families: Vec<&str> = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let path = format!("{MANIFEST_DIR}/contrib/grafana/corral.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 12, "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        for (i, _) in e.match_indices("corral_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    for name in &used {
        let known = families.iter().any(|f| {
            ["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| *name == format!("{f}{suffix}"))
        });
        assert!(
            known,
            "the dashboard asks for {name}, which corral does not expose"
        );
    }
    assert!(used.len() >= 12, "{used:?}");
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("expr" | "query", Some(e)) => out.push(e.to_string()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// A reload starts a new edge, and its metrics began from nothing: the
/// restarts before it vanished (a crash counted 1, then 0 after the
/// reload; a third-party trial). The master now tells a new edge every
/// total so far.
#[test]
fn worker_restarts_are_still_counted_after_a_reload() {
    let metrics_port = free_port();
    let srv = metrics_site(metrics_port).start();
    let worker = srv.worker_pids()[0];
    assert!(send_signal(worker, "KILL"));
    wait_sample(
        metrics_port,
        "corral_worker_restarts_total{reason=crash}",
        |n| n == 1.0,
    );
    let edges = srv.edge_pids();
    srv.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || srv.edge_pids() != edges),
        "no new edge after the reload: {}",
        srv.stderr_tail()
    );
    let m = wait_sample(
        metrics_port,
        "corral_worker_restarts_total{reason=reload}",
        |n| n >= 1.0,
    );
    assert_eq!(
        m["corral_worker_restarts_total{reason=crash}"], 1.0,
        "{m:#}"
    );
}
