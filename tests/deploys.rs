//! Deploys and stops as an operator does them, under load, counting every
//! request:
//!
//! * a reload whose new code does not import keeps the old workers and the
//!   old config serving, `corral reload` says why and exits non-zero, a
//!   worker that dies meanwhile (its replacement cannot boot) leaves the
//!   others serving (and with every worker gone, the edge stays up: static
//!   files, 503 for the app), and the next reload with fixed code goes through; a config that parses but
//!   fails its checks is refused the same way;
//! * SIGTERM: new connections are refused at once (or served), never left
//!   hanging in a backlog nobody accepts from.
mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn version_site() -> Running {
    let cfg = app_config(
        "lifecycle_version:application",
        2,
        "queue_timeout = \"30s\"",
    )
    .replacen("[server]\n", "[server]\npid_file = \"corral.pid\"\n", 1);
    Site::new()
        .app("lifecycle_version.py")
        .file("version.txt", "v1\n")
        .config(&cfg)
        .start()
}

fn versions_seen(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(
            |_| match try_request_timeout(port, &get_req(port, "/"), Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => {
                    r.text().split_whitespace().next().unwrap_or("").to_string()
                }
                Ok(r) => format!("status {}", r.status),
                Err(e) => format!("error {e}"),
            },
        )
        .collect()
}

/// The master is still there, the load goes on, and v1 answers.
fn still_serving_v1(srv: &mut Running, load: &Load, when: &str) {
    assert!(
        srv.try_status().is_none(),
        "the master exited {when}:\n{}",
        srv.logs()
    );
    assert!(
        load.wait_more(50, Duration::from_secs(10)),
        "load stalled {when}"
    );
    assert!(
        versions_seen(srv.port, 6).iter().all(|v| v == "v1"),
        "{when}"
    );
}

#[test]
fn a_broken_deploy_never_takes_the_site_down() {
    let mut srv = version_site();
    let port = srv.port;
    let pid_file = srv.path().join("corral.pid");
    let pid_arg = pid_file.to_str().unwrap().to_string();
    let load = Load::start(
        port,
        LoadOpts {
            pause: Duration::from_millis(5),
            ..LoadOpts::default()
        },
        |_, _| "/".into(),
    );
    assert!(
        load.wait_more(20, Duration::from_secs(10)),
        "no progress before the reload"
    );
    let old_workers = srv.worker_pids();

    // 1. The new code does not import (version.txt is read at import).
    fs::remove_file(srv.path().join("version.txt")).unwrap();
    let out = srv.run_corral_reaping(&["reload", "--pid-file", &pid_arg], Duration::from_secs(60));
    assert!(
        !out.success(),
        "corral reload must fail on a broken deploy:\n{out}"
    );
    assert!(
        out.stderr.contains("reload failed") && out.stderr.contains("FileNotFoundError"),
        "corral reload should say why:\n{out}"
    );
    assert!(
        srv.wait_for_stderr(
            "keeping 2 workers of the previous generation",
            Duration::from_secs(5)
        ),
        "no 'reload failed' line in the log:\n{}",
        srv.stderr_tail()
    );
    still_serving_v1(&mut srv, &load, "after the failed reload");
    assert_eq!(
        srv.worker_pids(),
        old_workers,
        "the old workers must keep serving"
    );
    assert!(versions_seen(port, 6).iter().all(|v| v == "v1"));

    // 1b. A worker dies while the broken code is still on disk: its
    // replacement cannot boot, yet the site goes on with the other.
    let killed = old_workers[0];
    let _ = std::process::Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status();
    // Seven failures in a row: the next try is 6.4 s away (backoff).
    assert!(
        srv.wait_for_stderr("keep failing to boot (7 times)", Duration::from_secs(30)),
        "no retry line after the replacements failed:\n{}",
        srv.stderr_tail()
    );
    still_serving_v1(&mut srv, &load, "while the replacement cannot boot");

    // 2. A config that parses but fails its checks: refused, old one kept.
    let good_config = fs::read_to_string(srv.config_path()).unwrap();
    fs::write(
        srv.config_path(),
        good_config.replace("chdir = \".\"", "chdir = \"./no-such-dir\""),
    )
    .unwrap();
    let out = srv.run_corral_reaping(&["reload", "--pid-file", &pid_arg], Duration::from_secs(60));
    assert!(
        !out.success() && out.stderr.contains("no-such-dir"),
        "{out}"
    );
    assert!(versions_seen(port, 4).iter().all(|v| v == "v1"));

    // 3. The fixed deploy goes through, at once: the backoff left from
    // the broken code held the old worker for up to a minute (26 s seen).
    fs::write(srv.config_path(), good_config).unwrap();
    fs::write(srv.path().join("version.txt"), "v2\n").unwrap();
    let out = srv.run_corral_reaping(&["reload", "--pid-file", &pid_arg], Duration::from_secs(60));
    assert!(out.success() && out.stdout.contains("reload done"), "{out}");
    let converged = wait_until(Duration::from_secs(3), || {
        versions_seen(port, 4).iter().all(|v| v == "v2")
    });
    assert!(converged, "v2 never served:\n{}", srv.stderr_tail());
    assert!(load.wait_more(50, Duration::from_secs(10)));
    let report = load.finish();
    assert!(
        report.failures().is_empty(),
        "requests failed across the deploys: {}",
        report.summary(10)
    );
    eprintln!("{}", report.summary(0));
}

/// Broken code on disk and then every worker gone at once (an OOM kill of
/// them all): the site stays up. Static files are served, the app answers
/// 503 and health says no workers, while boots are retried; a reload with
/// fixed code brings the app back. The master did a fast stop and closed
/// the ports (found by helper-22).
#[test]
fn every_worker_dying_with_broken_code_on_disk_leaves_the_edge_up() {
    let cfg = app_config("lifecycle_version:application", 2, "queue_timeout = \"1s\"").replacen(
        "[server]\n",
        "[server]\nhealth_path = \"/healthz\"\n",
        1,
    ) + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let mut srv = Site::new()
        .app("lifecycle_version.py")
        .file("version.txt", "v1\n")
        .file("files/a.txt", "static bytes\n")
        .config(&cfg)
        .start();
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    fs::remove_file(srv.path().join("version.txt")).unwrap();
    for pid in srv.worker_pids() {
        assert!(send_signal(pid, "KILL"));
    }
    assert!(
        srv.wait_for_stderr("no worker can boot", Duration::from_secs(20)),
        "{}",
        srv.stderr_tail()
    );
    assert!(
        srv.try_status().is_none(),
        "the master exited:\n{}",
        srv.logs()
    );
    let file = srv.get("/static/a.txt");
    assert_eq!(
        (file.status, file.text()),
        (200, "static bytes\n".to_string()),
        "{file}"
    );
    srv.assert_status(&srv.get("/"), 503, "the app with no worker up");
    srv.assert_status(&srv.get("/healthz"), 503, "health with no worker up");
    fs::write(srv.path().join("version.txt"), "v2\n").unwrap();
    assert!(send_signal(srv.pid(), "HUP"));
    let back = wait_until(Duration::from_secs(20), || {
        versions_seen(srv.port, 2).iter().all(|v| v == "v2")
    });
    assert!(back, "the fixed code never served:\n{}", srv.stderr_tail());
}

#[test]
fn sigterm_refuses_new_connections_instead_of_leaving_them_hanging() {
    let site =
        Site::new()
            .app("echo_environ.py")
            .config(&app_config("echo_environ:application", 2, ""));
    let srv = site.start();
    let port = srv.port;
    // A request in flight keeps the edge draining for ~2 s.
    let inflight = std::thread::spawn(move || {
        try_request_timeout(port, &get_req(port, "/sleep?s=2"), Duration::from_secs(10))
    });
    std::thread::sleep(Duration::from_millis(300));
    srv.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    // Every new connection: refused or served, within a second.
    for i in 0..10 {
        let started = Instant::now();
        let outcome = match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) => format!("refused ({e})"),
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let _ = s.write_all(&get_req(port, "/"));
                let mut buf = [0u8; 64];
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => format!("served: {:?}", String::from_utf8_lossy(&buf[..n])),
                    Ok(_) => "closed".to_string(),
                    Err(e) => format!("error {e}"),
                }
            }
        };
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "connection {i} hung {took:?}: {outcome}"
        );
        assert!(
            !outcome.starts_with("error Resource temporarily") && !outcome.contains("timed out"),
            "connection {i}: {outcome}"
        );
    }
    let r = inflight
        .join()
        .unwrap()
        .expect("the in-flight request finishes");
    assert_eq!(r.status, 200, "in-flight request: {}", r.snippet());
}

#[test]
fn processes_are_named_and_app_stderr_lines_say_which_worker() {
    let app = "import sys\n\
def application(environ, start_response):\n    \
print('app says hi', file=sys.stderr)\n    \
start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
return [b'ok']\n";
    let srv = Site::new()
        .file("talker.py", app)
        .config(&app_config("talker:application", 2, ""))
        .start();
    let title = |pid: i32| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default()
    };
    let master = title(srv.pid());
    assert!(
        master.starts_with("corral: master (") && master.contains("site.toml"),
        "{master:?}"
    );
    let workers: Vec<String> = srv.worker_pids().into_iter().map(title).collect();
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert!(
            w.starts_with("corral: worker ") && w.ends_with(" [talker:application]"),
            "{w:?}"
        );
    }
    let edges: Vec<String> = srv.edge_pids().into_iter().map(title).collect();
    assert_eq!(edges, vec!["corral: edge".to_string()]);

    let r = get(srv.port, "/");
    assert_eq!(r.status, 200);
    assert!(srv.wait_for_stderr("app says hi", Duration::from_secs(5)));
    let line = srv
        .stderr()
        .lines()
        .find(|l| l.contains("app says hi"))
        .unwrap_or_default()
        .to_string();
    // "2026-12-03T09:28:57.553888Z worker 2 app: app says hi"
    let (stamp, rest) = line.split_once(' ').unwrap_or_default();
    assert!(
        stamp.len() == 27 && stamp.ends_with('Z') && stamp.contains('T'),
        "{line:?}"
    );
    assert!(
        rest.starts_with("worker ") && rest.ends_with(" app: app says hi"),
        "{line:?}"
    );
}

/// A reload binds listeners the config adds (plain or TLS), releases the
/// ones it drops, and logs them all.
#[test]
fn a_reload_adds_and_removes_listeners() {
    let site = Site::new().app("hello.py");
    self_signed_cert(site.path());
    let base = app_config("hello:application", 1, "").replacen(
        "[server]\n",
        "[server]\npid_file = \"corral.pid\"\n",
        1,
    );
    let mut srv = site.config(&base).start();
    let base = fs::read_to_string(srv.config_path()).unwrap();
    let (p1, p2, p3) = (srv.port, free_port(), free_port());
    let pid_file = srv.path().join("corral.pid").display().to_string();
    let wider = base.replace(
        &format!("listen = [\"127.0.0.1:{p1}\"]"),
        &format!("listen = [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]"),
    ) + &format!(
        "\n[tls]\nlisten = [\"127.0.0.1:{p3}\"]\n[[tls.cert]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
    );
    fs::write(srv.config_path(), &wider).unwrap();
    let out = srv.run_corral_reaping(
        &["reload", "--pid-file", &pid_file],
        Duration::from_secs(60),
    );
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    let want = format!(
        "listening on http://127.0.0.1:{p1}, http://127.0.0.1:{p2}, https://127.0.0.1:{p3}"
    );
    assert!(
        srv.wait_for_stderr(&want, Duration::from_secs(5)),
        "{}",
        srv.stderr_tail()
    );
    let served = |url: &str| {
        wait_until(Duration::from_secs(10), || {
            curl(&[
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                url,
            ])
            .stdout
            .trim()
                == "200"
        })
    };
    assert!(
        served(&format!("http://127.0.0.1:{p2}/")),
        "new plain listener"
    );
    assert!(
        served(&format!("https://127.0.0.1:{p3}/")),
        "new TLS listener"
    );

    fs::write(srv.config_path(), &base).unwrap();
    let out = srv.run_corral_reaping(
        &["reload", "--pid-file", &pid_file],
        Duration::from_secs(60),
    );
    assert!(out.success(), "{out}");
    let gone = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", p2)).is_err()
            && std::net::TcpStream::connect(("127.0.0.1", p3)).is_err()
    });
    assert!(
        gone,
        "dropped listeners still accept:\n{}",
        srv.stderr_tail()
    );
    assert!(served(&format!("http://127.0.0.1:{p1}/")));
}

/// A Django deploy whose views.py does not import. Django imports its
/// URLconf (and the views) only on the first request, so the new workers
/// booted, the reload said "done" and every request got 500 (gunicorn's
/// HUP does the same; a third-party trial found it). corral now imports
/// the URLconf at boot: the reload fails and says why, the site keeps
/// serving the old views, and the fixed deploy then goes live.
#[test]
fn a_django_deploy_with_broken_views_is_refused_by_reload() {
    let views = |body: &str| format!("from django.http import HttpResponse\n\n\n{body}\n");
    let v1 = views("def index(request):\n    return HttpResponse(\"v1\")");
    let cfg = app_config("mysite.wsgi:application", 2, "virtualenv = \"{venv}\"").replacen(
        "[server]\n",
        "[server]\npid_file = \"corral.pid\"\n",
        1,
    );
    let mut srv = Site::new()
        .file("mysite/__init__.py", "")
        .file(
            "mysite/settings.py",
            "SECRET_KEY = \"test\"\nDEBUG = False\nALLOWED_HOSTS = [\"*\"]\n\
             ROOT_URLCONF = \"mysite.urls\"\nINSTALLED_APPS = []\nMIDDLEWARE = []\n",
        )
        .file(
            "mysite/urls.py",
            "from django.urls import path\n\nfrom . import views\n\n\
             urlpatterns = [path(\"\", views.index)]\n",
        )
        .file("mysite/views.py", &v1)
        .file(
            "mysite/wsgi.py",
            "import os\n\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n\
             from django.core.wsgi import get_wsgi_application\n\n\
             application = get_wsgi_application()\n",
        )
        .config(&cfg)
        .start();
    assert_eq!(srv.get("/").text(), "v1");
    let pid_file = srv.path().join("corral.pid").display().to_string();
    let reload = ["reload", "--pid-file", pid_file.as_str()];

    fs::write(
        srv.path().join("mysite/views.py"),
        views("def index(request:"),
    )
    .unwrap();
    let out = srv.run_corral_reaping(&reload, Duration::from_secs(60));
    assert!(!out.success(), "the reload went through:\n{out}");
    // With the file and line, not only the error's last line.
    assert!(out.stderr.contains("SyntaxError"), "{out}");
    assert!(out.stderr.contains("mysite/views.py, line 4)"), "{out}");
    for _ in 0..6 {
        let r = srv.get("/");
        assert_eq!(
            (r.status, r.text()),
            (200, "v1".to_string()),
            "{}",
            srv.stderr_tail()
        );
    }

    let v2 = views("def index(request):\n    return HttpResponse(\"v2\")");
    fs::write(srv.path().join("mysite/views.py"), v2).unwrap();
    let out = srv.run_corral_reaping(&reload, Duration::from_secs(60));
    assert!(out.success(), "{out}");
    let all_v2 = || (0..6).all(|_| srv.get("/").text() == "v2");
    assert!(
        wait_until(Duration::from_secs(10), all_v2),
        "{}",
        srv.stderr_tail()
    );
}
