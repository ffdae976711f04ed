//! Static files, compression and memory helpers.

use super::*;

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
    (status, last_header_block(&text), body, out)
}

/// The header fields of the last response in a `curl -D` dump (with
/// redirects or 100-continue there are several).
pub fn last_header_block(text: &str) -> Vec<(String, String)> {
    let block = text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
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
