//! Small helpers, commands with a deadline, /proc readers, checksums.

use super::*;

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

/// Raises this test process's open-file limit (soft and hard) to `want`,
/// so the servers and clients it starts inherit it. Raising the hard limit
/// takes root (CAP_SYS_RESOURCE); otherwise it stays where it was. Returns
/// the limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(now.rlim_max),
        };
        if now.rlim_cur < want && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        if now.rlim_cur < now.rlim_max {
            let soft = libc::rlimit {
                rlim_cur: now.rlim_max,
                rlim_max: now.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
    }
    now.rlim_cur
}

/// A port that was free a moment ago and that no other test process will
/// pick while this one runs. Taken from 20000-31999, below the kernel's
/// ephemeral range (32768+): a port the kernel hands out to `:0` is also
/// what the clients of other tests running at once get for their outgoing
/// connections, and one of them may take it before corral binds it
/// (EADDRINUSE). Test processes run in parallel and could pick the same
/// free port before either corral binds it, so a port is also reserved
/// with a lock file this process holds until it exits (`reserve_port`).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = std::process::id().wrapping_mul(7919).wrapping_add(nanos) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if reserve_port(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Take an exclusive, non-blocking flock on `$TMPDIR/corral-test-ports/<port>`
/// and keep it for the life of this process (the kernel lets go of it when
/// the process exits, however it exits). False when another test process
/// holds it. Without the folder (a read-only TMPDIR) every port counts as
/// reserved, as before the locks.
fn reserve_port(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("corral-test-ports");
    if fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = File::create(dir.join(port.to_string())) else {
        return true;
    };
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    if let Ok(mut held) = HELD.lock() {
        held.push(file);
    }
    true
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

/// A helper server the test started (HAProxy, Prometheus): killed and
/// reaped when dropped, whatever the test's outcome.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// GETs over h2c by the python `h2` package (tests/clients/h2_get.py),
/// which reports what higher-level clients hide: informational heads,
/// trailers, and how the stream ended (`end`: "stream ended" or "reset
/// <code>"). One JSON object per request (`--times N` for more).
pub fn h2_get(port: u16, path: &str, extra: &[&str]) -> Vec<Json> {
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/h2_get.py"
            ))
            .args(["--port", &port.to_string(), "--path", path])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(out.success(), "{out}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("h2_get.py prints JSON lines"))
        .collect()
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
pub fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
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
pub fn same_process_alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((st, _, s)) if s == start && st != 'Z' && st != 'X')
}

/// Live (non-zombie) direct children of `ppid`, with their start times.
pub fn children_with_start(ppid: i32) -> Vec<(i32, u64)> {
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

/// Lower-case hex SHA-256 of `data` (same as Python's hashlib.sha256().hexdigest()).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
