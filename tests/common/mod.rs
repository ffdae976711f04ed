#![allow(dead_code)]
//! Shared harness for corral's integration tests.
//!
//! * [`Site`] builds a temporary site folder (app files + `site.toml`) and
//!   starts `corral serve` on it; [`Running`] is the live server: logs,
//!   child processes, signals, and cleanup on drop (nothing is left behind,
//!   even when a test panics).
//! * A tiny HTTP/1.1 client on `std::net::TcpStream` ([`Conn`],
//!   [`request`], [`get`], [`post`]) that can speak keep-alive, decode
//!   chunked bodies and knows that HEAD/204/304 responses have no body.
//! * Small utilities: a JSON reader, SHA-256, deterministic test data,
//!   multipart bodies, `curl`, and the Flask virtualenv.
//!
//! Everything here is bounded in time: sockets have 30 s timeouts, process
//! waits have deadlines.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The binary under test.
pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Read/write timeout of every test socket: a hang fails instead of blocking.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Site::start` waits for `corral ready` + an open port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for `corral check` / `--version` style invocations.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------

/// `tests/apps` in the source tree.
pub fn apps_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("tests").join("apps")
}

/// Source of one of the bundled test apps (`tests/apps/<name>`).
pub fn app_source(name: &str) -> String {
    let p = apps_dir().join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading test app {}: {e}", p.display()))
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, drop it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:port.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// The last `max` bytes of `s` (on a char boundary), with a note if cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {} bytes cut ...]\n{}", start, &s[start..])
}

/// Lossy text of at most `max` bytes, for failure messages.
pub fn snippet(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!(
            "{}[... {} more bytes]",
            String::from_utf8_lossy(&bytes[..max]),
            bytes.len() - max
        )
    }
}

/// 1-based number of the first line of `text` containing `needle`.
#[track_caller]
pub fn line_of(text: &str, needle: &str) -> usize {
    match text.lines().position(|l| l.contains(needle)) {
        Some(i) => i + 1,
        None => panic!("{needle:?} not found in:\n{text}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), with a '\n' roughly every
/// 64 bytes so that line-oriented reads get exercised too.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = (x >> 24) as u8;
        out.push(if b < 4 { b'\n' } else { b });
    }
    out
}

/// Sum of all bytes mod 2^32 (what flask_app.py's `sum32` computes).
pub fn sum32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |acc, &b| acc.wrapping_add(b as u32))
}

/// Bytes interpreted as latin-1 (what PEP 3333 "native strings" look like).
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

// ---------------------------------------------------------------------------
// running commands with a deadline
// ---------------------------------------------------------------------------

/// Result of a command run with [`run_with_timeout`].
pub struct CmdOutput {
    pub what: String,
    /// `None` if the command was killed because it exceeded its timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(st) => writeln!(
                f,
                "`{}` exited with {} after {:?}",
                self.what, st, self.elapsed
            )?,
            None => writeln!(
                f,
                "`{}` TIMED OUT after {:?} (killed)",
                self.what, self.elapsed
            )?,
        }
        writeln!(f, "---- stdout ----\n{}", tail(&self.stdout, 6000))?;
        write!(f, "---- stderr ----\n{}", tail(&self.stderr, 12000))
    }
}

/// Run `cmd` with stdout/stderr captured (through anonymous temp files, so
/// nothing can dead-lock on a full pipe) and kill it if it runs longer than
/// `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup stdout file")))
        .stderr(Stdio::from(err.try_clone().expect("dup stderr file")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let read_all = |f: &mut File| -> String {
        let mut buf = Vec::new();
        let _ = f.seek(SeekFrom::Start(0));
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    CmdOutput {
        what,
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
        elapsed,
    }
}

/// `corral <args...>` with a deadline.
pub fn corral(args: &[&str], timeout: Duration) -> CmdOutput {
    run_with_timeout(Command::new(CORRAL).args(args), timeout)
}

/// `curl -sS --max-time 30 <args...>` (curl is a real-world client).
pub fn curl(args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"]).args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(40))
}

/// Runs curl with `-o <file> -w %{http_code}` and returns (status, body).
/// `extra` goes before the URL (e.g. `["-X", "POST", "-F", "file=@/x"]`).
pub fn curl_fetch(url: &str, extra: &[&str]) -> (u16, Vec<u8>, CmdOutput) {
    let body_file = tempfile::NamedTempFile::new().expect("temp file for curl body");
    let body_path = body_file
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_string();
    let mut args: Vec<&str> = vec!["-o", &body_path, "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let status = out.stdout.trim().parse::<u16>().unwrap_or(0);
    let body = fs::read(&body_path).unwrap_or_default();
    (status, body, out)
}

// ---------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------

/// (state, ppid, starttime) from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state), fields[1] field 4 (ppid),
    // fields[19] field 22 (starttime).
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// A process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((st, _, _)) if st != 'Z' && st != 'X')
}

/// The same process (pid + start time) still exists and is not a zombie.
fn same_process_alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((st, _, s)) if s == start && st != 'Z' && st != 'X')
}

/// Live (non-zombie) direct children of `ppid`, with their start times.
fn children_with_start(ppid: i32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for entry in rd.flatten() {
            let pid: i32 = match entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                Some(p) => p,
                None => continue,
            };
            if let Some((st, pp, start)) = proc_stat(pid) {
                if pp == ppid && st != 'Z' && st != 'X' {
                    out.push((pid, start));
                }
            }
        }
    }
    out.sort();
    out
}

/// Live (non-zombie) direct children of `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    children_with_start(ppid)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// Send a signal with the `kill` command (`sig` like "TERM", "INT", "KILL").
pub fn send_signal(pid: i32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

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

// ---------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was sent with Transfer-Encoding: chunked.
    pub chunked: bool,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers with this name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn snippet(&self) -> String {
        snippet(&self.body, 2000)
    }

    /// Body parsed as JSON (panics with the response on error).
    #[track_caller]
    pub fn json(&self) -> Json {
        match Json::parse(&self.text()) {
            Ok(j) => j,
            Err(e) => panic!("response body is not JSON ({e}):\n{self}"),
        }
    }

    /// `Connection: close` from the server.
    pub fn closes(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "---- response ----")?;
        writeln!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        writeln!(
            f,
            "[{} body bytes{}]",
            self.body.len(),
            if self.chunked { ", chunked" } else { "" }
        )?;
        write!(f, "{}", self.snippet())
    }
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One line without its CRLF; `None` at a clean EOF.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(eof(&format!(
            "connection closed in the middle of a line: {:?}",
            snippet(&buf, 200)
        )));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The request method of a raw request (its first token).
pub fn method_of(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == b' ').unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Read one response (status line, headers, body) from `r`.  `method` is the
/// request's method: HEAD responses (like 1xx/204/304) have no body.
/// Interim 1xx responses (e.g. 100 Continue) are skipped.
pub fn read_response<R: BufRead>(r: &mut R, method: &str) -> io::Result<Response> {
    loop {
        let status_line =
            read_line(r)?.ok_or_else(|| eof("connection closed before a response status line"))?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/") {
            return Err(bad(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let line = read_line(r)?
                .ok_or_else(|| eof("connection closed inside the response headers"))?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        if (100..200).contains(&status) && status != 101 {
            continue; // interim response, the real one follows
        }
        let no_body =
            method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status == 101;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header_all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.chunked = true;
            resp.body = read_chunked(r)?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {cl:?}")))?;
            let mut body = vec![0u8; n];
            r.read_exact(&mut body).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading {n}-byte body (Content-Length): {e}"),
                )
            })?;
            resp.body = body;
        } else {
            r.read_to_end(&mut resp.body)?;
        }
        return Ok(resp);
    }
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line =
            read_line(r)?.ok_or_else(|| eof("connection closed before the next chunk size"))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // trailers, then the final empty line
            loop {
                let t = read_line(r)?
                    .ok_or_else(|| eof("connection closed inside chunked trailers"))?;
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        match read_line(r)? {
            Some(l) if l.is_empty() => {}
            other => return Err(bad(format!("chunk not followed by CRLF: {other:?}"))),
        }
    }
}

/// `GET path` with `Connection: close`.
pub fn get_req(port: u16, path: &str) -> Vec<u8> {
    simple_req("GET", port, path, true)
}

/// A body-less request; `close` adds `Connection: close`.
pub fn simple_req(method: &str, port: u16, path: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-tests\r\n{conn}\r\n").into_bytes()
}

/// A request with a Content-Length body.
pub fn post_req(port: u16, path: &str, content_type: &str, body: &[u8], close: bool) -> Vec<u8> {
    method_req("POST", port, path, content_type, body, close)
}

pub fn method_req(
    method: &str,
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-tests\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{conn}\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A POST with `Transfer-Encoding: chunked`, one chunk per element.
pub fn chunked_post_req(
    port: u16,
    path: &str,
    content_type: &str,
    chunks: &[&[u8]],
    close: bool,
) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-tests\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{conn}\r\n"
    )
    .into_bytes();
    for c in chunks {
        if c.is_empty() {
            continue; // a zero-size chunk would end the body
        }
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// A multipart/form-data body: returns (content type, body).
/// `files` are (field name, file name, content type, content).
pub fn multipart(
    fields: &[(&str, &str)],
    files: &[(&str, &str, &str, &[u8])],
) -> (String, Vec<u8>) {
    let boundary = "----corral-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (name, filename, ctype, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One client connection (keep-alive capable).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub port: u16,
}

impl Conn {
    /// Connect to 127.0.0.1:port with 30 s read/write timeouts.
    pub fn open(port: u16) -> io::Result<Conn> {
        Conn::open_with_timeout(port, IO_TIMEOUT)
    }

    pub fn open_with_timeout(port: u16, io_timeout: Duration) -> io::Result<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            port,
        })
    }

    /// Like [`Conn::open`] but panics on failure.
    #[track_caller]
    pub fn connect(port: u16) -> Conn {
        match Conn::open(port) {
            Ok(c) => c,
            Err(e) => panic!("connect to 127.0.0.1:{port}: {e}"),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        let _ = self.writer.set_read_timeout(Some(t));
    }

    /// The client-side port of this connection (what REMOTE_PORT should be).
    pub fn local_port(&self) -> u16 {
        self.writer.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.writer.write_all(raw)?;
        self.writer.flush()
    }

    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        read_response(&mut self.reader, method)
    }

    /// Send `raw` and read one response (method taken from `raw`).
    pub fn roundtrip(&mut self, raw: &[u8]) -> io::Result<Response> {
        self.send(raw)?;
        self.read_response(&method_of(raw))
    }

    /// Keep-alive GET.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let raw = simple_req("GET", self.port, path, false);
        self.roundtrip(&raw)
    }

    /// Read the status line and headers only (the body stays in the socket).
    pub fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let line = read_line(&mut self.reader)?
            .ok_or_else(|| eof("connection closed before a status line"))?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let l = read_line(&mut self.reader)?
                .ok_or_else(|| eof("connection closed inside headers"))?;
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok((status, headers))
    }

    /// Read up to `n` raw bytes (fewer at EOF).
    pub fn read_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        (&mut self.reader).take(n as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    /// True if the server closed the connection (EOF) within `wait`.
    pub fn closed_by_peer(&mut self, wait: Duration) -> bool {
        self.set_read_timeout(wait);
        let mut b = [0u8; 1];
        let r = matches!(self.reader.read(&mut b), Ok(0) | Err(_));
        self.set_read_timeout(IO_TIMEOUT);
        r
    }
}

/// Send `raw` on a fresh connection and read one response.
pub fn try_request(port: u16, raw: &[u8]) -> io::Result<Response> {
    let mut c = Conn::open(port)?;
    c.roundtrip(raw)
}

/// Like [`try_request`] with a custom socket timeout.
pub fn try_request_timeout(port: u16, raw: &[u8], io_timeout: Duration) -> io::Result<Response> {
    let mut c = Conn::open_with_timeout(port, io_timeout)?;
    c.roundtrip(raw)
}

#[track_caller]
pub fn request(port: u16, raw: &[u8]) -> Response {
    match try_request(port, raw) {
        Ok(r) => r,
        Err(e) => panic!("request to port {port} failed: {e}\n{}", snippet(raw, 800)),
    }
}

pub fn try_get(port: u16, path: &str) -> io::Result<Response> {
    try_request(port, &get_req(port, path))
}

#[track_caller]
pub fn get(port: u16, path: &str) -> Response {
    request(port, &get_req(port, path))
}

#[track_caller]
pub fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> Response {
    request(port, &post_req(port, path, content_type, body, true))
}

// ---------------------------------------------------------------------------
// JSON (just enough to read the test apps' answers)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static JSON_NULL: Json = Json::Null;

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at offset {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_f64().map(|n| n as i64)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(items) => items.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl std::ops::Index<&str> for Json {
    type Output = Json;
    /// Missing keys (or non-objects) give `Json::Null`.
    fn index(&self, key: &str) -> &Json {
        self.get(key).unwrap_or(&JSON_NULL)
    }
}

impl std::ops::Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        match self {
            Json::Arr(a) => a.get(i).unwrap_or(&JSON_NULL),
            _ => &JSON_NULL,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Result<u8, String> {
        let c = *self
            .s
            .get(self.i)
            .ok_or_else(|| "unexpected end of JSON".to_string())?;
        self.i += 1;
        Ok(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        let got = self.next()?;
        if got != c {
            return Err(format!(
                "expected {:?} at offset {}, got {:?}",
                c as char,
                self.i - 1,
                got as char
            ));
        }
        Ok(())
    }

    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at offset {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i).copied() {
            None => Err("unexpected end of JSON".into()),
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(items));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    let v = self.value()?;
                    items.push((k, v));
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Ok(Json::Obj(items)),
                        c => {
                            return Err(format!(
                                "expected ',' or '}}' at offset {}, got {:?}",
                                self.i - 1,
                                c as char
                            ))
                        }
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Ok(Json::Arr(items)),
                        c => {
                            return Err(format!(
                                "expected ',' or ']' at offset {}, got {:?}",
                                self.i - 1,
                                c as char
                            ))
                        }
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'n') => self.lit("null", Json::Null),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                t.parse::<f64>()
                    .map(Json::Num)
                    .map_err(|_| format!("bad JSON value at offset {start}"))
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| "truncated \\u escape".to_string())?;
        let h = std::str::from_utf8(h).map_err(|_| "bad \\u escape".to_string())?;
        let v = u32::from_str_radix(h, 16).map_err(|_| format!("bad \\u escape {h:?}"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.next()?;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.next()?;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.s.get(self.i) == Some(&b'\\')
                                && self.s.get(self.i + 1) == Some(&b'u')
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                } else {
                                    self.i = save;
                                }
                            }
                            // Lone surrogates (Python's surrogateescape) become U+FFFD.
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => {
                            return Err(format!(
                                "bad escape \\{} at offset {}",
                                other as char,
                                self.i - 1
                            ))
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|e| format!("invalid UTF-8 in JSON string: {e}"))
    }
}

// ---------------------------------------------------------------------------
// SHA-256 (to check multi-MiB bodies without a crypto dependency)
// ---------------------------------------------------------------------------

const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Lower-case hex SHA-256 of `data` (same as Python's hashlib.sha256().hexdigest()).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut tail_block = data[data.len() - data.len() % 64..].to_vec();
    tail_block.push(0x80);
    while tail_block.len() % 64 != 56 {
        tail_block.push(0);
    }
    tail_block.extend_from_slice(&bit_len.to_be_bytes());
    let full = &data[..data.len() - data.len() % 64];
    for block in full.chunks_exact(64).chain(tail_block.chunks_exact(64)) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(SHA256_K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

// ---------------------------------------------------------------------------
// The Flask virtualenv
// ---------------------------------------------------------------------------

/// `$CORRAL_TEST_VENV`, or `<repo>/target/test-venv`.
pub fn venv_path() -> PathBuf {
    match std::env::var_os("CORRAL_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv")),
    }
}

/// A virtualenv with Flask installed, created on first use.  Safe with many
/// test processes at once (nextest): a lock file serialises creation, the
/// venv is built in a temporary folder and renamed into place.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let p = venv_path();
        ensure_venv(&p);
        p
    })
    .clone()
}

fn venv_has_flask(venv: &Path) -> bool {
    let py = venv.join("bin").join("python");
    py.exists()
        && run_with_timeout(
            Command::new(&py).args(["-c", "import flask"]),
            Duration::from_secs(60),
        )
        .success()
}

fn ensure_venv(path: &Path) {
    if venv_has_flask(path) {
        return;
    }
    let parent = path.parent().expect("venv path has a parent").to_path_buf();
    fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let name = path
        .file_name()
        .expect("venv path has a file name")
        .to_string_lossy()
        .into_owned();
    let _lock = LockFile::acquire(
        &parent.join(format!("{name}.lock")),
        Duration::from_secs(900),
    );
    if venv_has_flask(path) {
        return; // another test process made it while we waited
    }
    let pip_install = |py: &Path| {
        let out = run_with_timeout(
            Command::new(py).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "flask",
            ]),
            Duration::from_secs(600),
        );
        assert!(
            out.success(),
            "installing Flask into the test venv failed:\n{out}"
        );
    };
    if path.join("bin").join("python").exists() {
        // A venv without Flask (e.g. made by hand): just add Flask to it.
        pip_install(&path.join("bin").join("python"));
        assert!(
            venv_has_flask(path),
            "Flask still not importable in {}",
            path.display()
        );
        return;
    }
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    // The same interpreter corral embeds (scripts/test.sh exports PYO3_PYTHON).
    let python = std::env::var("PYO3_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string());
    let out = run_with_timeout(
        Command::new(&python).arg("-m").arg("venv").arg(&tmp),
        Duration::from_secs(300),
    );
    assert!(out.success(), "{python} -m venv failed:\n{out}");
    pip_install(&tmp.join("bin").join("python"));
    if path.exists() {
        // Leftover without a python (half-made?): move it out of the way.
        let aside = parent.join(format!("{name}.broken-{}", std::process::id()));
        let _ = fs::rename(path, &aside);
        let _ = fs::remove_dir_all(&aside);
    }
    match fs::rename(&tmp, path) {
        Ok(()) => fix_venv_paths(&tmp, path),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            assert!(
                venv_has_flask(path),
                "renaming the new venv to {} failed ({e}) and there is no usable venv there",
                path.display()
            );
        }
    }
    assert!(
        venv_has_flask(path),
        "Flask not importable in the new venv {}",
        path.display()
    );
}

/// After the rename, scripts in bin/ (pip, flask, activate) still name the
/// temporary folder: point them at the final one.
fn fix_venv_paths(from: &Path, to: &Path) {
    let from_s = from.display().to_string();
    let to_s = to.display().to_string();
    let mut files = vec![to.join("pyvenv.cfg")];
    if let Ok(rd) = fs::read_dir(to.join("bin")) {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    for p in files {
        let is_file = fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false);
        if !is_file {
            continue; // bin/python* are symlinks to the base interpreter
        }
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        if text.contains(&from_s) {
            let _ = fs::write(&p, text.replace(&from_s, &to_s));
        }
    }
}

/// A lock file made with create_new; removed on drop.  Stale locks (holder
/// process gone, or older than 20 minutes) are broken.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path, max_wait: Duration) -> LockFile {
        let deadline = Instant::now() + max_wait;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return LockFile(path.to_path_buf());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        panic!("timed out waiting for lock {}", path.display());
                    }
                    thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("creating lock {}: {e}", path.display()),
            }
        }
    }
}

fn lock_is_stale(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO);
    if age > Duration::from_secs(20 * 60) {
        return true;
    }
    match fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        // Not written yet (the holder is between create and write), unless old.
        None => age > Duration::from_secs(30),
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Worker lifecycle: who is who among the master's children, log counting,
// and a background load generator (reloads, recycling, kills, scaling)
// ---------------------------------------------------------------------------

/// Number of lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The number right after `prefix` in `line` (e.g. `worker ` -> `1234`),
/// and the rest of the line after it.
fn number_after<'a>(line: &'a str, prefix: &str) -> Option<(i64, &'a str)> {
    let at = line.find(prefix)? + prefix.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let n = rest[..end].parse().ok()?;
    Some((n, &rest[end..]))
}

/// Pids logged as `edge <pid> listening on ...`, in log order.
pub fn edge_pids_in(stderr: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter_map(|l| match number_after(l, "edge ") {
            Some((pid, rest)) if rest.starts_with(" listening on") => Some(pid as i32),
            _ => None,
        })
        .collect()
}

/// Pids logged by the master as `worker <pid> ready (id N)`, in log order.
pub fn ready_worker_pids_in(stderr: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter_map(|l| match number_after(l, "worker ") {
            Some((pid, rest)) if rest.starts_with(" ready (id ") => Some(pid as i32),
            _ => None,
        })
        .collect()
}

/// The K of every `worker <pid> asks to be recycled: served K requests` line.
pub fn recycle_served_counts(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("asks to be recycled"))
        .filter_map(|l| number_after(l, "asks to be recycled: served ").map(|(n, _)| n as u64))
        .collect()
}

/// `Rss`, `Pss`, `Shared_Clean`, `Shared_Dirty`, `Private_Clean`,
/// `Private_Dirty` of a process, in KiB, from /proc/<pid>/smaps_rollup.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemRollup {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub shared_clean_kib: u64,
    pub shared_dirty_kib: u64,
    pub private_clean_kib: u64,
    pub private_dirty_kib: u64,
}

impl MemRollup {
    pub fn shared_kib(&self) -> u64 {
        self.shared_clean_kib + self.shared_dirty_kib
    }
    pub fn private_kib(&self) -> u64 {
        self.private_clean_kib + self.private_dirty_kib
    }
}

pub fn mem_rollup(pid: i32) -> Option<MemRollup> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut m = MemRollup::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(val)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "Rss:" => m.rss_kib = v,
            "Pss:" => m.pss_kib = v,
            "Shared_Clean:" => m.shared_clean_kib = v,
            "Shared_Dirty:" => m.shared_dirty_kib = v,
            "Private_Clean:" => m.private_clean_kib = v,
            "Private_Dirty:" => m.private_dirty_kib = v,
            _ => {}
        }
    }
    Some(m)
}

/// A small xorshift generator (tests need "random", not cryptographic).
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock (printed by callers for reproducibility).
    pub fn from_clock() -> XorShift {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        XorShift::new(t)
    }
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Conn {
    /// True if the server has already closed this (idle) connection: a
    /// non-blocking peek sees EOF or an error. Data waiting counts as open.
    pub fn peer_closed_now(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        if self.writer.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let closed = match self.writer.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        let _ = self.writer.set_nonblocking(false);
        closed
    }
}

impl Running {
    /// Live children of the master that were ever logged as an edge.
    pub fn edge_pids(&self) -> Vec<i32> {
        let edges = edge_pids_in(&self.stderr());
        self.children()
            .into_iter()
            .filter(|p| edges.contains(p))
            .collect()
    }

    /// Live children of the master that the master logged as `worker <pid>
    /// ready` (booting workers and edges are not included).
    pub fn worker_pids(&self) -> Vec<i32> {
        let ready = ready_worker_pids_in(&self.stderr());
        self.children()
            .into_iter()
            .filter(|p| ready.contains(p))
            .collect()
    }

    /// Live children of the master that are not a logged edge: ready and
    /// booting workers (and, for a moment during a reload, a new edge that
    /// has not logged `listening` yet).
    pub fn non_edge_children(&self) -> Vec<i32> {
        let edges = edge_pids_in(&self.stderr());
        self.children()
            .into_iter()
            .filter(|p| !edges.contains(p))
            .collect()
    }

    /// Wait until exactly `n` ready workers and exactly `n` non-edge
    /// children exist (nothing booting, nothing draining).
    pub fn wait_worker_count(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.worker_pids().len() == n && self.non_edge_children().len() == n
        })
    }

    /// Wait until `needle` occurs on at least `n` lines of stderr.
    pub fn wait_for_stderr_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || count_lines(&self.stderr(), needle) >= n)
    }

    /// Run `corral <args>` (e.g. `stop --config ...`) while reaping this
    /// master if it exits meanwhile, so a command that waits for the master
    /// to disappear does not wait for a zombie the test process would only
    /// reap later.
    pub fn run_corral_reaping(&mut self, args: &[&str], timeout: Duration) -> CmdOutput {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cmd = thread::spawn(move || {
            let mut c = Command::new(CORRAL);
            c.args(&args);
            run_with_timeout(&mut c, timeout)
        });
        while !cmd.is_finished() {
            let _ = self.try_status();
            thread::sleep(Duration::from_millis(20));
        }
        cmd.join().expect("corral command thread panicked")
    }
}

/// One request made by a [`Load`] client thread.
#[derive(Clone, Debug)]
pub struct LoadOutcome {
    pub thread: usize,
    pub seq: u64,
    pub path: String,
    /// When it was sent, since the load started.
    pub sent: Duration,
    pub took: Duration,
    /// Sent on a kept-alive connection that had already carried a response.
    pub reused: bool,
    pub status: Option<u16>,
    /// The response body (at most 200 bytes, lossy).
    pub body: String,
    pub error: Option<String>,
}

impl LoadOutcome {
    pub fn ok(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }
}

impl fmt::Display for LoadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread {} #{} GET {} sent at {:?}, took {:?}, {} connection: ",
            self.thread,
            self.seq,
            self.path,
            self.sent,
            self.took,
            if self.reused {
                "reused keep-alive"
            } else {
                "new"
            }
        )?;
        match (&self.status, &self.error) {
            (_, Some(e)) => write!(f, "ERROR {e}"),
            (Some(s), None) => write!(f, "status {s} body {:?}", self.body),
            (None, None) => write!(f, "no result"),
        }
    }
}

/// Options for [`Load::start`].
#[derive(Clone, Debug)]
pub struct LoadOpts {
    /// Client threads: even-numbered ones keep connections alive (a new one
    /// after `keep_alive_max` requests, a `Connection: close` or any error),
    /// odd-numbered ones open a new connection per request.
    pub threads: usize,
    /// Pause after each request.
    pub pause: Duration,
    /// Socket read/write timeout.
    pub io_timeout: Duration,
    pub keep_alive_max: u64,
}

impl Default for LoadOpts {
    fn default() -> Self {
        LoadOpts {
            threads: 4,
            pause: Duration::ZERO,
            io_timeout: Duration::from_secs(30),
            keep_alive_max: 50,
        }
    }
}

/// Client threads sending GETs in a loop until [`Load::finish`].
pub struct Load {
    stop: std::sync::Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<Vec<LoadOutcome>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The latest 200 body of each thread.
    latest: std::sync::Arc<Mutex<Vec<Option<String>>>>,
    /// Idle keep-alive connections found closed by the server before reuse.
    stale: std::sync::Arc<std::sync::atomic::AtomicU64>,
    t0: Instant,
}

impl Load {
    /// Start `opts.threads` clients GETting `path(thread, seq)` on 127.0.0.1:port.
    pub fn start<F>(port: u16, opts: LoadOpts, path: F) -> Load
    where
        F: Fn(usize, u64) -> String + Send + Sync + 'static,
    {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let latest = std::sync::Arc::new(Mutex::new(vec![None; opts.threads]));
        let stale = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let path = std::sync::Arc::new(path);
        let t0 = Instant::now();
        let handles = (0..opts.threads)
            .map(|t| {
                let stop = stop.clone();
                let done = done.clone();
                let latest = latest.clone();
                let path = path.clone();
                let opts = opts.clone();
                let stale = stale.clone();
                thread::spawn(move || {
                    let keep_alive = t % 2 == 0;
                    let mut conn: Option<(Conn, u64)> = None;
                    let mut out = Vec::new();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let p = path(t, seq);
                        let sent_at = Instant::now();
                        let mut reused = false;
                        let result: io::Result<Response> = (|| {
                            if !keep_alive {
                                let mut c = Conn::open_with_timeout(port, opts.io_timeout)?;
                                return c.roundtrip(&simple_req("GET", port, &p, true));
                            }
                            if conn.is_none() {
                                conn = Some((Conn::open_with_timeout(port, opts.io_timeout)?, 0));
                            }
                            // Like every pooled HTTP client (urllib3, Go's net/http,
                            // browsers): don't reuse an idle connection the server
                            // has already closed.
                            if conn
                                .as_mut()
                                .is_some_and(|(c, used)| *used > 0 && c.peer_closed_now())
                            {
                                stale.fetch_add(1, Ordering::SeqCst);
                                conn = Some((Conn::open_with_timeout(port, opts.io_timeout)?, 0));
                            }
                            let (c, used) = conn.as_mut().expect("connection just opened");
                            reused = *used > 0;
                            let r = c.roundtrip(&simple_req("GET", port, &p, false))?;
                            *used += 1;
                            Ok(r)
                        })();
                        let took = sent_at.elapsed();
                        let mut o = LoadOutcome {
                            thread: t,
                            seq,
                            path: p,
                            sent: sent_at.duration_since(t0),
                            took,
                            reused,
                            status: None,
                            body: String::new(),
                            error: None,
                        };
                        match result {
                            Ok(r) => {
                                o.status = Some(r.status);
                                o.body = snippet(&r.body, 200);
                                let drop_conn = r.closes()
                                    || conn
                                        .as_ref()
                                        .is_some_and(|(_, u)| *u >= opts.keep_alive_max);
                                if drop_conn {
                                    conn = None;
                                }
                                if r.status == 200 {
                                    if let Ok(mut l) = latest.lock() {
                                        l[t] = Some(o.body.clone());
                                    }
                                }
                            }
                            Err(e) => {
                                o.error = Some(format!("{:?}: {e}", e.kind()));
                                conn = None;
                            }
                        }
                        out.push(o);
                        done.fetch_add(1, Ordering::SeqCst);
                        seq += 1;
                        if !opts.pause.is_zero() {
                            thread::sleep(opts.pause);
                        }
                    }
                    out
                })
            })
            .collect();
        Load {
            stop,
            handles,
            done,
            latest,
            stale,
            t0,
        }
    }

    /// Requests completed so far (all threads, any result).
    pub fn completed(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Wait until `n` more requests than now have completed.
    pub fn wait_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.completed() + n;
        wait_until(timeout, || self.completed() >= target)
    }

    /// The latest 200 body of each client thread (None: no 200 yet).
    pub fn latest_bodies(&self) -> Vec<Option<String>> {
        self.latest.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Stop the clients (each finishes its current request) and collect.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut outcomes = Vec::new();
        for h in self.handles {
            outcomes.extend(h.join().expect("load client thread panicked"));
        }
        outcomes.sort_by_key(|o| o.sent);
        LoadReport {
            outcomes,
            elapsed: self.t0.elapsed(),
            stale_reconnects: self.stale.load(Ordering::SeqCst),
        }
    }
}

/// What a [`Load`] saw.
pub struct LoadReport {
    pub outcomes: Vec<LoadOutcome>,
    pub elapsed: Duration,
    /// Idle keep-alive connections the server had closed, noticed before
    /// reuse (not failures: a new connection was opened instead).
    pub stale_reconnects: u64,
}

impl LoadReport {
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    pub fn ok_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }

    pub fn failures(&self) -> Vec<&LoadOutcome> {
        self.outcomes.iter().filter(|o| !o.ok()).collect()
    }

    /// "200" / "502" / "error" -> count.
    pub fn by_status(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for o in &self.outcomes {
            let k = match (o.error.is_some(), o.status) {
                (true, _) | (false, None) => "error".to_string(),
                (false, Some(s)) => s.to_string(),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }

    /// Counts, slowest request, and up to `max_listed` failures.
    pub fn summary(&self, max_listed: usize) -> String {
        let mut s = format!(
            "{} requests in {:?}: {:?} ({} idle keep-alive connections found closed before reuse)",
            self.total(),
            self.elapsed,
            self.by_status(),
            self.stale_reconnects
        );
        if let Some(slowest) = self.outcomes.iter().max_by_key(|o| o.took) {
            s.push_str(&format!("\nslowest: {slowest}"));
        }
        let failures = self.failures();
        for f in failures.iter().take(max_listed) {
            s.push_str(&format!("\n  FAILED {f}"));
        }
        if failures.len() > max_listed {
            s.push_str(&format!(
                "\n  ... and {} more failures",
                failures.len() - max_listed
            ));
        }
        s
    }
}

// ---------------------------------------------------------------------------
// static files, compression, memory (added for tests/static_files.rs)
// ---------------------------------------------------------------------------

/// A body-less request with a raw request target (sent as-is, like curl's
/// `--path-as-is`: no normalisation, no re-encoding) and extra headers.
/// Always `Connection: close`.
pub fn raw_req(method: &str, port: u16, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    raw_req_keepalive(method, port, target, headers, true)
}

/// Like [`raw_req`]; `close` adds `Connection: close`.
pub fn raw_req_keepalive(
    method: &str,
    port: u16,
    target: &str,
    headers: &[(&str, &str)],
    close: bool,
) -> Vec<u8> {
    let mut s = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-tests\r\n"
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// VmRSS of a process in KiB (from /proc/<pid>/status).
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Set a file's modification time (std's `File::set_modified`).
#[track_caller]
pub fn set_mtime(path: &Path, t: SystemTime) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} to set its mtime: {e}", path.display()));
    f.set_modified(t)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Run `cmd` feeding `input` on stdin; returns (exit status or None if
/// killed after `timeout`, stdout bytes, stderr text).  Binary-safe.
pub fn run_bytes(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> (Option<ExitStatus>, Vec<u8>, String) {
    let what = format!("{cmd:?}");
    let mut inp = tempfile::tempfile().expect("temp file for stdin");
    inp.write_all(input).expect("write stdin temp file");
    inp.seek(SeekFrom::Start(0))
        .expect("rewind stdin temp file");
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    let mut child = cmd
        .stdin(Stdio::from(inp))
        .stdout(Stdio::from(out.try_clone().expect("dup stdout file")))
        .stderr(Stdio::from(err.try_clone().expect("dup stderr file")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut o = Vec::new();
    let _ = out.seek(SeekFrom::Start(0));
    let _ = out.read_to_end(&mut o);
    let mut e = Vec::new();
    let _ = err.seek(SeekFrom::Start(0));
    let _ = err.read_to_end(&mut e);
    (status, o, String::from_utf8_lossy(&e).into_owned())
}

/// Python one-liner filter stdin -> stdout (python3, binary-safe).
#[track_caller]
pub fn python_filter(code: &str, input: &[u8]) -> Vec<u8> {
    let (st, out, err) = run_bytes(
        Command::new("python3").arg("-c").arg(code),
        input,
        Duration::from_secs(30),
    );
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "python3 -c {code:?} failed ({st:?}): {err}"
    );
    out
}

/// gzip-compress with Python's gzip module (a real, independent encoder).
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    python_filter(
        "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), 9))",
        data,
    )
}

/// Decode gzip with Python's gzip module (panics on a corrupt stream).
pub fn gunzip_bytes(data: &[u8]) -> Vec<u8> {
    python_filter(
        "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        data,
    )
}

/// curl with the response headers captured (`-D`): returns (status of the
/// last response, its headers, body, raw output).  `extra` goes before the URL.
pub fn curl_fetch_headers(
    url: &str,
    extra: &[&str],
) -> (u16, Vec<(String, String)>, Vec<u8>, CmdOutput) {
    let hdr_file = tempfile::NamedTempFile::new().expect("temp file for curl headers");
    let hdr_path = hdr_file
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_string();
    let mut args: Vec<&str> = vec!["-D", &hdr_path];
    args.extend_from_slice(extra);
    let (status, body, out) = curl_fetch(url, &args);
    let text = fs::read_to_string(&hdr_path).unwrap_or_default();
    // With redirects/100-continue there are several blocks: keep the last.
    let block = text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers, body, out)
}

/// First header with this name (case-insensitive) in a header list.
pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Running {
    /// Pid of the current edge process, from the last
    /// `edge <pid> listening on` line of stderr.
    pub fn edge_pid(&self) -> Option<i32> {
        self.stderr().lines().rev().find_map(|l| {
            let rest = &l[l.find("edge ")? + 5..];
            let (pid, tail) = rest.split_once(' ')?;
            if tail.starts_with("listening on") {
                pid.parse().ok()
            } else {
                None
            }
        })
    }

    /// GET with extra request headers (`Connection: close`).
    #[track_caller]
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request(&raw_req("GET", self.port, path, headers))
    }

    /// HEAD with extra request headers (`Connection: close`).
    #[track_caller]
    pub fn head_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request(&raw_req("HEAD", self.port, path, headers))
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Conn {
    /// One `read` into `buf` (through the connection's buffer); 0 at EOF.
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

// ---------------------------------------------------------------------------
// raw exchanges and recorded requests (added for tests/hostile.rs)
// ---------------------------------------------------------------------------

/// What came back for raw bytes sent on a fresh connection.
#[derive(Clone, Debug)]
pub struct RawOutcome {
    /// Everything the server sent before EOF or the deadline.
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
    /// The close was a reset (ECONNRESET / EPIPE) rather than a FIN.
    pub reset: bool,
    /// Writing the request failed part-way (the server hung up early).
    pub write_error: Option<String>,
    /// From connect to EOF (or to the deadline).
    pub elapsed: Duration,
}

/// Bytes escaped for failure messages (`\r`, `\n`, `\x00` visible), cut
/// after `max` bytes.
pub fn escaped(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len().min(max);
    let mut s = bytes[..cut].escape_ascii().to_string();
    if bytes.len() > max {
        s.push_str(&format!("[... {} more bytes]", bytes.len() - max));
    }
    s
}

/// Send `raw` in one write on a fresh connection to 127.0.0.1:port (then
/// half-close our side if `half_close`), and read until the server closes
/// or `wait` has passed since the connect.
pub fn raw_exchange(
    port: u16,
    raw: &[u8],
    half_close: bool,
    wait: Duration,
) -> io::Result<RawOutcome> {
    let t0 = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut write_error = None;
    if let Err(e) = s.write_all(raw).and_then(|_| s.flush()) {
        write_error = Some(format!("{:?}: {e}", e.kind()));
    }
    if half_close && write_error.is_none() {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let deadline = t0 + wait;
    let mut bytes = Vec::new();
    let (mut closed, mut reset) = (false, false);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                closed = true;
                reset = true;
                break;
            }
        }
    }
    Ok(RawOutcome {
        bytes,
        closed,
        reset,
        write_error,
        elapsed: t0.elapsed(),
    })
}

/// Every complete response in `bytes`, in order; `methods[i]` is the method
/// of the i-th request (HEAD responses have no body; "GET" past the end).
/// The second value describes bytes that are not a complete response.
pub fn parse_responses(bytes: &[u8], methods: &[&str]) -> (Vec<Response>, Option<String>) {
    let mut cur = io::Cursor::new(bytes);
    let mut out = Vec::new();
    while (cur.position() as usize) < bytes.len() {
        let method = methods.get(out.len()).copied().unwrap_or("GET");
        let at = cur.position() as usize;
        match read_response(&mut cur, method) {
            Ok(r) => out.push(r),
            Err(e) => {
                return (
                    out,
                    Some(format!(
                        "{e} (at byte {at}: {})",
                        escaped(&bytes[at..], 300)
                    )),
                )
            }
        }
    }
    (out, None)
}

/// The JSON objects of a JSON-lines file (missing file: none). Panics on a
/// line that is not JSON.
pub fn read_jsonl(path: &Path) -> Vec<Json> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            Json::parse(l)
                .unwrap_or_else(|e| panic!("{}: line is not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

/// A self-signed ECDSA certificate for localhost and 127.0.0.1, valid for
/// 2 days, as `cert.pem` and `key.pem` in `dir` (openssl command line).
pub fn self_signed_cert(dir: &Path) {
    let out = run_with_timeout(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .current_dir(dir),
        Duration::from_secs(30),
    );
    assert!(out.success(), "openssl in {}: {out}", dir.display());
}
