//! `Site` (a temporary site folder and its config) and `Running` (a live
//! `corral serve`: logs, children, signals, cleanup on drop).

use super::*;

// ---------------------------------------------------------------------------
// configs
// ---------------------------------------------------------------------------

/// A typical site.toml: one listener on 127.0.0.1:{port}, `chdir = "."`,
/// access log to stdout.  `app_extra` is appended to the `[app]` table (one
/// `key = value` per line; don't repeat module/chdir/workers/graceful_timeout).
pub fn app_config(module: &str, workers: u32, app_extra: &str) -> String {
    let mut s = String::new();
    s.push_str("[server]\nlisten = [\"127.0.0.1:{port}\"]\n\n[app]\n");
    s.push_str(&format!("module = \"{module}\"\n"));
    s.push_str("chdir = \".\"\n");
    s.push_str(&format!("workers = {workers}\n"));
    s.push_str("graceful_timeout = \"10s\"\n");
    if !app_extra.trim().is_empty() {
        s.push_str(app_extra.trim());
        s.push('\n');
    }
    s.push_str("\n[limits]\nmax_body = \"16MiB\"\n");
    s.push_str("\n[log]\naccess = \"stdout\"\nlevel = \"info\"\n");
    s
}
// ---------------------------------------------------------------------------
// Site / Running
// ---------------------------------------------------------------------------

/// A temporary site folder: app files + site.toml.
pub struct Site {
    dir: tempfile::TempDir,
    port: u16,
    env: Vec<(String, String)>,
    config_text: Option<String>,
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .expect("create temp site dir");
        Site {
            dir,
            port: free_port(),
            env: Vec::new(),
            config_text: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Listen on this port instead of a fresh one (a restarted instance
    /// behind a load balancer). Call before `config`.
    pub fn on_port(mut self, port: u16) -> Site {
        self.port = port;
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("site.toml")
    }

    /// The site.toml as written (after substitution).
    pub fn config_text(&self) -> &str {
        self.config_text
            .as_deref()
            .expect("Site::config() not called yet")
    }

    /// Write a file (relative to the site folder; parent folders are created).
    pub fn file(self, name: &str, content: impl AsRef<[u8]>) -> Site {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&p, content.as_ref()).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        self
    }

    /// Copy `tests/apps/<name>` into the site folder under the same name.
    pub fn app(self, name: &str) -> Site {
        let src = app_source(name);
        self.file(name, src)
    }

    /// Copy `tests/apps/<src>` into the site folder as `dest`.
    pub fn app_as(self, src: &str, dest: &str) -> Site {
        let text = app_source(src);
        self.file(dest, text)
    }

    /// Extra environment variable for the corral process.
    pub fn env(mut self, key: &str, value: &str) -> Site {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Substitute `{port}`, `{dir}` (the site folder) and `{venv}` (the
    /// Flask virtualenv, created on first use).
    pub fn render(&self, template: &str) -> String {
        let mut s = template.replace("{port}", &self.port.to_string());
        s = s.replace("{dir}", &self.dir.path().display().to_string());
        if s.contains("{venv}") {
            s = s.replace("{venv}", &venv().display().to_string());
        }
        s
    }

    /// Write site.toml from `template` (see [`Site::render`]).
    pub fn config(mut self, template: &str) -> Site {
        let text = self.render(template);
        fs::write(self.config_path(), &text).expect("write site.toml");
        self.config_text = Some(text);
        self
    }

    /// `corral check --config <site.toml>`.
    pub fn check(&self) -> CmdOutput {
        let cfg = self.config_path();
        let mut cmd = Command::new(CORRAL);
        cmd.arg("check").arg("--config").arg(&cfg);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, CMD_TIMEOUT)
    }

    /// `corral check` passes and names the app ASGI for the reason given:
    /// `kind` is the class of the object whose `__call__` is async.
    pub fn assert_checks_as_asgi(&self, kind: &str) {
        let out = self.check();
        assert!(out.success(), "{out}");
        let article = if kind.starts_with(['A', 'E', 'I', 'O', 'U']) {
            "an"
        } else {
            "a"
        };
        let why = format!("is ASGI ({article} {kind} object with an async __call__)");
        assert!(out.stdout.contains(&why), "no {why:?} in:\n{out}");
    }

    /// Spawn `corral serve` without waiting for readiness.
    pub fn spawn(self) -> Running {
        let mut cmd = Command::new(CORRAL);
        cmd.arg("serve").arg("--config").arg(self.config_path());
        self.spawn_with(cmd)
    }

    /// Spawn `cmd` (a `corral serve` set up by the caller, e.g. with a
    /// resource limit) with this site's logs and environment.
    pub fn spawn_with(self, mut cmd: Command) -> Running {
        let cfg = self.config_path();
        assert!(
            cfg.exists(),
            "Site::config() must be called before spawn()/start()"
        );
        let stdout_path = self.dir.path().join("corral.stdout");
        let stderr_path = self.dir.path().join("corral.stderr");
        let out = File::create(&stdout_path).expect("create stdout log");
        let err = File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {CORRAL}: {e}"));
        Running {
            child,
            port: self.port,
            dir: self.dir,
            stdout_path,
            stderr_path,
            seen: Mutex::new(Vec::new()),
            exited: None,
            started: Instant::now(),
            logs_shown: AtomicBool::new(false),
        }
    }

    /// Spawn `corral serve` and wait until it logged `corral ready` and the
    /// port accepts connections (panics with the captured stderr after 30 s
    /// or if corral exits).
    #[track_caller]
    pub fn start(self) -> Running {
        let mut r = self.spawn();
        r.wait_ready(READY_TIMEOUT);
        r
    }
}

/// A running `corral serve`.  Dropping it stops the master (SIGINT, then
/// SIGKILL after 2 s) and makes sure every child process it ever had is gone
/// (SIGKILL for any that survive 2 s more).
pub struct Running {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// Every child (pid, start time) ever observed, for cleanup and checks.
    seen: Mutex<Vec<(i32, u64)>>,
    exited: Option<ExitStatus>,
    started: Instant,
    /// A panic message already carried the logs (don't repeat them on drop).
    logs_shown: AtomicBool,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The site folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("site.toml")
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr(), 12000)
    }

    /// Text for failure messages: where we are + the server's stderr.
    pub fn logs(&self) -> String {
        format!(
            "---- corral stderr (pid {}, port {}, up {:?}) ----\n{}\n---- end of corral stderr ----",
            self.pid(),
            self.port,
            self.started.elapsed(),
            self.stderr_tail()
        )
    }

    /// Panic with `msg` and the server's stderr.
    #[track_caller]
    pub fn fail(&self, msg: impl fmt::Display) -> ! {
        self.logs_shown.store(true, Ordering::SeqCst);
        panic!("{msg}\n{}", self.logs())
    }

    /// Live direct children of the master right now (also remembered, so
    /// that Drop and [`Running::recorded_alive`] can check them later).
    pub fn children(&self) -> Vec<i32> {
        if self.exited.is_some() {
            return Vec::new();
        }
        let now = children_with_start(self.pid());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for c in &now {
            if !seen.contains(c) {
                seen.push(*c);
            }
        }
        now.into_iter().map(|(p, _)| p).collect()
    }

    /// Every child pid ever recorded by [`Running::children`].
    pub fn recorded_children(&self) -> Vec<i32> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().map(|(p, _)| *p).collect()
    }

    /// Recorded children that still exist (zombies count as gone).
    pub fn recorded_alive(&self) -> Vec<i32> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(p, s)| same_process_alive(*p, *s))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Wait up to `timeout` for every recorded child to be gone; returns the
    /// survivors (empty = all gone).
    pub fn wait_recorded_gone(&self, timeout: Duration) -> Vec<i32> {
        wait_until(timeout, || self.recorded_alive().is_empty());
        self.recorded_alive()
    }

    /// Send a signal ("TERM", "INT", "QUIT", "KILL", "HUP", ...) to the master.
    #[track_caller]
    pub fn signal(&self, sig: &str) {
        if self.exited.is_some() {
            self.fail(format!("signal({sig}): corral already exited"));
        }
        if !send_signal(self.pid(), sig) {
            self.fail(format!("kill -{sig} {} failed", self.pid()));
        }
    }

    /// Exit status if the master has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Wait up to `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `needle` shows up in stderr.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr().contains(needle))
    }

    /// Wait until `needle` shows up in stdout (the access log).
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stdout().contains(needle))
    }

    /// Wait for `corral ready` on stderr and an open port.
    #[track_caller]
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                self.fail(format!("corral exited with {st} before it became ready"));
            }
            if self.stderr().contains("corral ready") && port_open(self.port) {
                self.children();
                return;
            }
            if Instant::now() >= deadline {
                self.fail(format!(
                    "corral not ready after {timeout:?} (waiting for `corral ready` on stderr and a connectable 127.0.0.1:{})",
                    self.port
                ));
            }
            thread::sleep(POLL);
        }
    }

    // -- HTTP conveniences that fail with the server's stderr attached --

    #[track_caller]
    pub fn request(&self, raw: &[u8]) -> Response {
        match try_request(self.port, raw) {
            Ok(r) => r,
            Err(e) => self.fail(format!(
                "request failed: {e}\n---- request ----\n{}",
                snippet(raw, 800)
            )),
        }
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request(&get_req(self.port, path))
    }

    #[track_caller]
    pub fn head(&self, path: &str) -> Response {
        self.request(&simple_req("HEAD", self.port, path, true))
    }

    #[track_caller]
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.request(&post_req(self.port, path, content_type, body, true))
    }

    /// Open a connection to the server (panics with logs on failure).
    #[track_caller]
    pub fn connect(&self) -> Conn {
        match Conn::open(self.port) {
            Ok(c) => c,
            Err(e) => self.fail(format!("connect to 127.0.0.1:{}: {e}", self.port)),
        }
    }

    /// Panic with the response and the server's stderr unless `resp.status == want`.
    #[track_caller]
    pub fn assert_status(&self, resp: &Response, want: u16, what: &str) {
        if resp.status != want {
            self.fail(format!(
                "{what}: expected status {want}, got {}\n{resp}",
                resp.status
            ));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if thread::panicking() && !self.logs_shown.load(Ordering::SeqCst) {
            eprintln!("{}", self.logs());
        }
        if self.try_status().is_none() {
            // Remember respawned workers etc. before the master goes away.
            let _ = self.children();
            // A fast stop (SIGINT) lets corral remove its runtime folder;
            // if it doesn't exit within 2 s, SIGKILL.
            send_signal(self.pid(), "INT");
            if self.wait_exit(Duration::from_secs(2)).is_none() {
                let _ = self.child.kill(); // SIGKILL
                let _ = self.child.wait();
            }
        }
        // Children have PR_SET_PDEATHSIG: give them 2 s, then SIGKILL the rest.
        let survivors = self.wait_recorded_gone(Duration::from_secs(2));
        for pid in survivors {
            send_signal(pid, "KILL");
        }
    }
}
