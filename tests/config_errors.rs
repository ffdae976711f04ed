//! Config problems are reported as `<file>:<line>:<col>: <dotted.key>: ...`
//! by both `corral check` and `corral serve` (exit code != 0), and an app that
//! fails to import makes `serve` give up with the Python traceback.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SERVE_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The config path as it may appear in messages (as given, or canonical).
fn path_spellings(p: &Path) -> Vec<String> {
    let mut v = vec![p.display().to_string()];
    if let Ok(c) = p.canonicalize() {
        let c = c.display().to_string();
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// Some line of `stderr` contains `<config path>:<line>:` and `key`.
fn mentions(stderr: &str, cfg: &Path, line: usize, key: &str) -> bool {
    let prefixes: Vec<String> = path_spellings(cfg)
        .into_iter()
        .map(|p| format!("{p}:{line}:"))
        .collect();
    stderr
        .lines()
        .any(|l| l.contains(key) && prefixes.iter().any(|p| l.contains(p.as_str())))
}

/// Both `check` and `serve` must reject the config, naming file, line and key.
fn assert_rejected(site: Site, key: &str, line_needle: &str) {
    let cfg = site.config_path();
    let line = line_of(site.config_text(), line_needle);
    let expect = format!("{}:{line}:<col>: {key}: ...", cfg.display());

    let out = site.check();
    if out.timed_out() || out.success() {
        panic!(
            "`corral check` should fail for a bad {key}\n{out}\n---- site.toml ----\n{}",
            site.config_text()
        );
    }
    assert!(
        out.code().is_some(),
        "`corral check` killed by a signal?\n{out}"
    );
    if !mentions(&out.stderr, &cfg, line, key) {
        panic!("`corral check` stderr should have a line like `{expect}`\n{out}\n---- site.toml ----\n{}", site.config_text());
    }

    let text = site.config_text().to_string();
    let mut srv = site.spawn();
    let status = match srv.wait_exit(SERVE_EXIT_TIMEOUT) {
        Some(st) => st,
        None => srv.fail(format!(
            "`corral serve` with a bad {key} did not exit within {SERVE_EXIT_TIMEOUT:?}"
        )),
    };
    if status.success() {
        srv.fail(format!(
            "`corral serve` with a bad {key} exited successfully\n---- site.toml ----\n{text}"
        ));
    }
    let err = srv.stderr();
    if !mentions(&err, &cfg, line, key) {
        srv.fail(format!(
            "`corral serve` stderr should have a line like `{expect}`\n---- site.toml ----\n{text}"
        ));
    }
    if err.contains("corral ready") {
        srv.fail("`corral serve` claimed to be ready with a bad config");
    }
}

#[test]
fn unknown_key() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nlisen = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nworkers = 1\n",
    );
    assert_rejected(site, "server.lisen", "lisen =");
}

#[test]
fn wrong_type() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = \"two\"\n",
    );
    assert_rejected(site, "app.workers", "workers = \"two\"");
}

#[test]
fn unknown_cpu_scheduling() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nworkers = 1\ncpu_scheduling = \"fifo\"\n",
    );
    assert_rejected(site, "app.cpu_scheduling", "cpu_scheduling =");
}

#[test]
fn missing_module_file() {
    // No nope.py next to the config (and no such module anywhere).
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"nope:app\"\nchdir = \".\"\nworkers = 1\n",
    );
    assert_rejected(site, "app.module", "module = \"nope:app\"");
}

#[test]
fn listen_port_not_a_number() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:notaport\"]\n\n[app]\nmodule = \"hello:application\"\nworkers = 1\n",
    );
    assert_rejected(site, "server.listen", "notaport");
}

#[test]
fn listen_bad_ip() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"999.1.1.1:80\"]\n\n[app]\nmodule = \"hello:application\"\nworkers = 1\n",
    );
    assert_rejected(site, "server.listen", "999.1.1.1");
}

#[test]
fn check_reports_every_problem() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nlisen = [\"127.0.0.1:{port}\"]\n\n[app]\nmodule = \"hello:application\"\nworkers = \"two\"\n",
    );
    let cfg = site.config_path();
    let l1 = line_of(site.config_text(), "lisen =");
    let l2 = line_of(site.config_text(), "workers = \"two\"");
    let out = site.check();
    assert!(
        !out.timed_out() && !out.success(),
        "`corral check` should fail\n{out}"
    );
    assert!(
        mentions(&out.stderr, &cfg, l1, "server.lisen"),
        "first problem (server.lisen at line {l1}) not reported\n{out}"
    );
    assert!(
        mentions(&out.stderr, &cfg, l2, "app.workers"),
        "second problem (app.workers at line {l2}) not reported\n{out}"
    );
}

#[test]
fn valid_config_passes_check() {
    let site = Site::new().app("hello.py").config(&app_config(
        "hello:application",
        2,
        "queue_size = 10\nqueue_timeout = \"500ms\"\npythonpath = []\nvirtualenv = \"\"",
    ));
    let out = site.check();
    assert!(
        out.success(),
        "`corral check` should accept a valid config\n{out}\n---- site.toml ----\n{}",
        site.config_text()
    );
    assert!(
        out.stdout.contains("ok") || out.stderr.contains("ok"),
        "`corral check` should print `ok`\n{out}"
    );
}

#[test]
fn app_import_error_makes_serve_give_up() {
    let mut srv = Site::new()
        .app("broken.py")
        .config(&app_config("broken:application", 1, ""))
        .spawn();
    let status = match srv.wait_exit(Duration::from_secs(20)) {
        Some(st) => st,
        None => srv
            .fail("`corral serve` with an app that cannot be imported is still running after 20 s"),
    };
    if status.success() {
        srv.fail(format!(
            "`corral serve` exited with {status} although the app cannot be imported"
        ));
    }
    let err = srv.stderr();
    for needle in [
        "Traceback",
        "worker failed to boot:",
        "No module named 'nope'",
    ] {
        if !err.contains(needle) {
            srv.fail(format!("stderr should contain {needle:?}"));
        }
    }
    if !err
        .lines()
        .any(|l| l.contains("worker failed to boot:") && l.contains("No module named 'nope'"))
    {
        srv.fail("the `worker failed to boot:` line should name the exception (ModuleNotFoundError: No module named 'nope')");
    }
    if err.contains("corral ready") {
        srv.fail("`corral serve` claimed to be ready although no worker could boot");
    }
}

/// The hello app with one worker, `server_extra` lines in `[server]` and
/// `tables` after `[app]`.
fn hello_site(server_extra: &str, tables: &str) -> Site {
    Site::new().app("hello.py").config(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n{server_extra}\n\
         [app]\nmodule = \"hello:application\"\nworkers = 1\n\n{tables}"
    ))
}

#[test]
fn route_limit_bad_rate_is_located_in_its_table() {
    let site = hello_site(
        "",
        "[[limits.route]]\npath = \"/a/\"\nrate = \"5r/s\"\n\n\
         [[limits.route]]\npath = \"/b/\"\nrate = \"fast\"\n",
    );
    assert_rejected(site, "limits.route[1].rate", "rate = \"fast\"");
}

#[test]
fn health_path_and_drain_delay_are_checked() {
    let site = hello_site("health_path = \"healthz\"\n", "");
    assert_rejected(site, "server.health_path", "healthz");
    let site = hello_site("health_path = \"/health?full=1\"\n", "");
    assert_rejected(site, "server.health_path", "full=1");
    let site = hello_site("drain_delay = \"2h\"\n", "");
    assert_rejected(site, "server.drain_delay", "2h");
    let site = hello_site("health_path = \"/healthz\"\ndrain_delay = \"5s\"\n", "");
    let out = site.check();
    assert!(out.success(), "{out}");
}

#[test]
fn unknown_user_and_group_are_config_errors() {
    let site = hello_site("user = \"no-such-user-corral\"\n", "");
    assert_rejected(site, "server.user", "no-such-user-corral");
    let site = hello_site("user = \"root\"\ngroup = \"no-such-group-corral\"\n", "");
    assert_rejected(site, "server.group", "no-such-group-corral");
}

/// `check` fails on what `serve` would fail on, naming the key: a wrong
/// attribute, an import that raises, an ASGI app where `app.interface =
/// "wsgi"`, a busy listen address. It says which interface it found.
#[test]
fn check_imports_the_app_and_binds_the_listeners() {
    let wsgi = "interface = \"wsgi\"";
    let cases: [(&str, &str, &str); 4] = [
        ("hello:app", "", "has no attribute `app`"),
        ("boom:application", "", "RuntimeError: settings are wrong"),
        (
            "fast:app",
            wsgi,
            "is an ASGI app (a Starlette object with an async __call__)",
        ),
        (
            "coro:application",
            wsgi,
            "is an ASGI app (an async def function)",
        ),
    ];
    for (module, extra, want) in cases {
        let site = Site::new()
            .app("hello.py")
            .file("boom.py", "raise RuntimeError('settings are wrong')\n")
            .file(
                "fast.py",
                "class Starlette:\n    async def __call__(self, scope, receive, send):\n        pass\napp = Starlette()\n",
            )
            .file("coro.py", "async def application(scope, receive, send):\n    pass\n")
            .config(&app_config(module, 1, extra));
        let out = site.check();
        assert!(!out.success(), "check passed {module}:\n{out}");
        assert!(
            out.stderr.contains(want) && out.stderr.contains("app.module"),
            "{module}:\n{out}"
        );
        // serve says the same, and gives up.
        let mut srv = site.spawn();
        let status = srv.wait_exit(SERVE_EXIT_TIMEOUT);
        assert!(
            status.is_some_and(|s| !s.success()),
            "serve of {module} did not give up"
        );
        assert!(
            srv.stderr().contains(want),
            "serve of {module}:\n{}",
            srv.stderr_tail()
        );
    }
    // With `interface = "auto"` (the default) both are served as ASGI.
    for (module, want) in [
        (
            "fast:app",
            "is ASGI (a Starlette object with an async __call__)",
        ),
        ("coro:application", "is ASGI (an async def function)"),
    ] {
        let out = Site::new()
            .file("fast.py", "class Starlette:\n    async def __call__(self, s, r, w):\n        pass\napp = Starlette()\n")
            .file("coro.py", "async def application(scope, receive, send):\n    pass\n")
            .config(&app_config(module, 1, ""))
            .check();
        assert!(
            out.success() && out.stdout.contains(want),
            "{module}:\n{out}"
        );
    }
    let out = Site::new()
        .app("hello.py")
        .config(&app_config("hello:application", 1, ""))
        .check();
    assert!(
        out.stdout.contains("is WSGI (a callable that is not async"),
        "{out}"
    );
    // A listen address already taken by something else: `check` warns
    // (as `nginx -t` passes beside a running nginx), `serve` fails.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let site = Site::new()
        .app("hello.py")
        .config(&app_config("hello:application", 1, "").replace("{port}", &port.to_string()));
    let out = site.check();
    assert!(out.success() && out.stderr.contains("is in use"), "{out}");
    assert!(out.stderr.contains("server.listen[0]"), "{out}");
    let mut srv = site.spawn();
    assert!(srv
        .wait_exit(SERVE_EXIT_TIMEOUT)
        .is_some_and(|s| !s.success()));
    assert!(
        srv.stderr().contains("cannot listen on"),
        "{}",
        srv.stderr_tail()
    );
    // An address this host does not have is an error for `check` too.
    let out = Site::new()
        .app("hello.py")
        .config(
            &app_config("hello:application", 1, "").replace("127.0.0.1:{port}", "192.0.2.1:8080"),
        )
        .check();
    assert!(
        !out.success() && out.stderr.contains("cannot listen on 192.0.2.1:8080"),
        "{out}"
    );
}

/// `corral check` on the config of a site that is serving, without a pid
/// file (what contrib/corral.service advises), passes: a deploy's `corral
/// check && corral reload` failed every time with EADDRINUSE, and so would
/// `ExecStartPre=corral check` beside systemd's socket (found by helper-22).
#[test]
fn check_passes_beside_the_running_site() {
    let srv = Site::new()
        .app("hello.py")
        .config(&app_config("hello:application", 1, ""))
        .start();
    let out = run_with_timeout(
        Command::new(CORRAL)
            .arg("check")
            .arg("--config")
            .arg(srv.path().join("site.toml")),
        CMD_TIMEOUT,
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("ok:") && out.stderr.contains("is in use"),
        "{out}"
    );
}

#[test]
fn asgi_settings_are_checked_in_the_app_table() {
    let app = |extra: &str| {
        Site::new().app("hello.py").config(&format!(
            "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n\n\
             [app]\nmodule = \"hello:application\"\nworkers = 1\n{extra}\n"
        ))
    };
    assert_rejected(
        app("interface = \"trio\""),
        "app.interface",
        "interface = \"trio\"",
    );
    assert_rejected(app("loop = \"tokio\""), "app.loop", "loop = \"tokio\"");
    assert_rejected(
        app("lifespan = \"maybe\""),
        "app.lifespan",
        "lifespan = \"maybe\"",
    );
    assert_rejected(app("concurrency = 0"), "app.concurrency", "concurrency = 0");
    assert_rejected(
        app("root_path = \"blog/\""),
        "app.root_path",
        "root_path = \"blog/\"",
    );
    assert_rejected(
        app("interface = \"asgi\"\nthreads = 4"),
        "app.threads",
        "threads = 4",
    );
}

#[test]
fn control_socket_in_a_missing_folder() {
    let site = Site::new().app("hello.py").config(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\ncontrol_socket = \"no/such/dir/ctl.sock\"\n\n[app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = 1\n",
    );
    assert_rejected(site, "server.control_socket", "control_socket =");
}

/// An unknown key in an array of tables is named with its place in the
/// array (it was `unknown key fallbak`, with no path), and a misspelt
/// table's keys are not reported a second time against the table above it
/// (`[sever]` gave `sever.listen: unknown key listen, expected one of
/// server, app, ...`).
#[test]
fn unknown_keys_in_arrays_and_misspelt_tables_are_named_once() {
    let site = hello_site(
        "",
        "[[static]]\nurl = \"/s/\"\ndir = \".\"\n\n[[static]]\nurl = \"/t/\"\ndir = \".\"\nfallbak = \"app\"\n",
    );
    assert_rejected(site, "static[1].fallbak", "fallbak =");

    let site = Site::new().app("hello.py").config(
        "[sever]\nlisten = [\"127.0.0.1:{port}\"]\nport = 3\n\n[app]\nmodule = \"hello:application\"\nwokers = 1\n",
    );
    let out = site.check();
    assert!(!out.success(), "{out}");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains(":1:") && lines[0].contains("sever: unknown key `sever`"),
        "{out}"
    );
    assert!(
        lines[1].contains(":7:") && lines[1].contains("app.wokers"),
        "{out}"
    );
}
