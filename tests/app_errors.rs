//! Errors told truly, as an operator reads them:
//!
//! * `Content-Length: abc` from the app is the app's error: a 500 with the
//!   ValueError in the log, and the worker stays in service;
//! * an edge whose temp folder is full answers 507 and says so (a worker's
//!   own temp folder is never used for uploads: the edge passes its file);
//! * an app that exits with code 3 while serving is not "the app failed to
//!   load";
//! * an edge out of file descriptors answers 503 naming the limit, and
//!   blames no worker;
//! * the file descriptor limit is raised to the hard limit at start, and a
//!   limit too low for `max_connections` is a warning.
mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = "\
import os\n\
def application(environ, start_response):\n    \
path = environ['PATH_INFO']\n    \
if path == '/bad-length':\n        \
start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', 'abc')])\n        \
return [b'hello']\n    \
if path == '/short':\n        \
start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '10')])\n        \
return [b'hello']\n    \
if path == '/short-text':\n        \
start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '5000')])\n        \
return [b'0123456789abcdef' * 225]\n    \
if path == '/exit3':\n        \
os._exit(3)\n    \
body = environ['wsgi.input'].read()\n    \
start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
return [b'%d' % len(body)]\n";

fn start(app_extra: &str) -> Running {
    Site::new()
        .file("errapp.py", APP)
        .config(&app_config("errapp:application", 2, app_extra))
        .start()
}

/// The same site, also taking HTTP/2 over plain TCP (h2c).
fn start_h2c() -> Running {
    let config = app_config("errapp:application", 2, "").replace(
        "listen = [\"127.0.0.1:{port}\"]\n",
        "listen = [\"127.0.0.1:{port}\"]\nh2c = true\n",
    );
    Site::new().file("errapp.py", APP).config(&config).start()
}

#[test]
fn a_bad_content_length_from_the_app_is_a_500_not_a_broken_worker() {
    let srv = start("");
    let workers = srv.worker_pids();
    let r = get(srv.port, "/bad-length");
    assert_eq!(r.status, 500, "{}", r.snippet());
    assert!(
        srv.wait_for_stderr("ValueError", Duration::from_secs(3)),
        "{}",
        srv.stderr_tail()
    );
    assert!(
        srv.stderr().contains("invalid Content-Length"),
        "{}",
        srv.stderr_tail()
    );
    assert!(
        !srv.stderr().contains("failed in worker"),
        "{}",
        srv.stderr_tail()
    );
    for _ in 0..4 {
        assert_eq!(get(srv.port, "/").status, 200);
    }
    assert_eq!(srv.worker_pids(), workers, "no worker was replaced");
}

/// An app that sends fewer bytes than its Content-Length: the client gets
/// the head and what the app sent, then the connection closes, as from
/// gunicorn behind nginx (curl: "transfer closed with 5 bytes remaining");
/// never an empty reply, which hides the app's error from whoever reads
/// the client's side. The worker says why in its log.
#[test]
fn a_body_shorter_than_its_content_length_arrives_cut_short() {
    let srv = start("");
    let url = format!("http://127.0.0.1:{}/short", srv.port);
    let out = curl(&["-i", &url]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(18), "{out}");
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.stdout.ends_with("\r\n\r\nhello"), "{out}");
    assert!(
        srv.stderr()
            .contains("app sent 5 bytes fewer than its Content-Length"),
        "{}",
        srv.stderr_tail()
    );
    assert_eq!(get(srv.port, "/").status, 200, "the worker still serves");
}

/// Over HTTP/2 the same: the head and what the app sent, then a reset
/// (RST_STREAM INTERNAL_ERROR) saying the body is incomplete. h2 used to
/// drop the queued HEADERS and DATA when the stream was reset, so about a
/// third of these responses reached the client with no body or no head at
/// all; 30 tries, each on its own connection, with the python `h2` package.
#[test]
fn a_body_cut_short_reaches_an_h2_client_before_the_reset() {
    let srv = start_h2c();
    let got = h2_get(srv.port, "/short", &["--times", "30"]);
    assert_eq!(got.len(), 30, "{}", srv.stderr_tail());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["status"], 200, "try {i}: {r}");
        assert_eq!(r["body"], "hello", "try {i}: {r}");
        assert_eq!(r["end"], "reset INTERNAL_ERROR", "try {i}: {r}");
    }
}

/// A compressed body that breaks off: the client gets all the app sent,
/// decodable, then the cut (a close over HTTP/1.1, a reset over h2). The
/// encoder's buffered output used to be dropped, so only the gzip header
/// (10 bytes) arrived while an identity body arrived whole. Decoded by
/// python's zlib, which takes a stream without its end.
#[test]
fn a_compressed_body_cut_short_arrives_as_far_as_the_app_sent_it() {
    let srv = start_h2c();
    let sent = b"0123456789abcdef".repeat(225);
    let decode = "import sys,zlib; d=zlib.decompressobj(31); \
                  sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read()))";
    let url = format!("http://127.0.0.1:{}/short-text", srv.port);
    let (status, body, out) = curl_fetch(&url, &["--http1.1", "-H", "accept-encoding: gzip"]);
    assert_eq!(status, 200, "{out}");
    assert_eq!(out.status.and_then(|s| s.code()), Some(18), "{out}");
    assert_eq!(python_filter(decode, &body), sent, "HTTP/1.1");
    let saved = tempfile::NamedTempFile::new().unwrap();
    let saved_path = saved.path().to_str().unwrap();
    let h2 = h2_get(
        srv.port,
        "/short-text",
        &["--header", "accept-encoding:gzip", "--body-out", saved_path],
    );
    assert_eq!(h2[0]["end"], "reset INTERNAL_ERROR", "{}", h2[0]);
    let body = std::fs::read(saved_path).unwrap();
    assert_eq!(python_filter(decode, &body), sent, "HTTP/2");
}

/// An HTTP/2 client that resets its stream halfway through an upload is
/// gone: nothing can be answered, and nothing is logged as the server's
/// error. Before, the 400 the edge tried to write failed and the log said
/// "ERROR Fail to filter request: WriteError ... status: 500". (Over
/// HTTP/1.1 the same abort logged nothing.) python h2.
#[test]
fn an_h2_upload_reset_midway_is_no_error_of_ours() {
    let srv = start_h2c();
    let script = format!(
        r#"
import socket, time, h2.config, h2.connection, h2.errors
s = socket.create_connection(("127.0.0.1", {port}))
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
c.send_headers(1, [(":method", "POST"), (":path", "/upload"), (":scheme", "http"),
                   (":authority", "127.0.0.1"), ("content-length", str(10 << 20))])
for _ in range(3):
    c.send_data(1, b"x" * 16384)
s.sendall(c.data_to_send())
time.sleep(0.3)
c.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
s.sendall(c.data_to_send())
time.sleep(0.5)
s.close()
print("RESET")
"#,
        port = srv.port
    );
    let out = run_with_timeout(
        Command::new(venv().join("bin/python")).args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(out.stdout.contains("RESET"), "{out}");
    assert!(
        srv.wait_for_stdout("POST /upload HTTP/2.0", Duration::from_secs(5)),
        "no access line: {}\n{}",
        srv.stdout(),
        srv.stderr_tail()
    );
    assert!(
        !srv.stderr().contains("ERROR"),
        "an error was logged for the client's reset:\n{}",
        srv.stderr_tail()
    );
    assert_eq!(get(srv.port, "/").status, 200);
}

/// A folder on a full filesystem: a 64 KiB tmpfs when this machine lets us
/// mount one (root in CI), else a folder that does not exist (the same
/// failure to spool, by another errno).
struct FullDir {
    path: std::path::PathBuf,
    mounted: bool,
}

impl FullDir {
    fn new(parent: &std::path::Path) -> FullDir {
        let path = parent.join("full-tmp");
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            std::fs::remove_dir(&path).unwrap();
        }
        FullDir { path, mounted }
    }
}

impl Drop for FullDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A worker's own temp folder does not matter for uploads: a body over
/// 1 MiB is spooled by the edge, which hands the worker that file
/// (`edge::app::body_fd`). With the worker's TMPDIR full it was a 507.
#[test]
fn a_worker_whose_temp_folder_is_full_still_takes_uploads() {
    let site = Site::new().file("errapp.py", APP);
    let full = FullDir::new(site.path());
    let config = app_config("errapp:application", 2, "")
        + &format!("\n[app.env]\nTMPDIR = \"{}\"\n", full.path.display());
    let srv = site.config(&config).start();
    let body = vec![b'z'; 3 << 20];
    let r = srv.post("/upload", "application/octet-stream", &body);
    assert_eq!(
        (r.status, r.text()),
        (200, (3 << 20).to_string()),
        "{}",
        r.snippet()
    );
    assert!(
        !srv.stderr().contains("cannot spool"),
        "{}",
        srv.stderr_tail()
    );
    eprintln!("worker temp folder on a full tmpfs: {}", full.mounted);
}

/// A 3 MiB upload (spooled, past 1 MiB in memory) gets a 507 that says why.
fn upload_gets_a_507(srv: &Running) {
    let body = vec![b'z'; 3 << 20];
    let r = srv.post("/upload", "application/octet-stream", &body);
    assert_eq!(r.status, 507, "{}", r.snippet());
    assert!(
        r.text().contains("cannot store the request body"),
        "{}",
        r.snippet()
    );
}

/// The edge spools a body over 1 MiB before a worker is chosen: with its
/// own temp folder full (TMPDIR for the whole server), the client gets the
/// same 507 and reason a worker gives, not a bare 500, and the log names
/// the folder. Smaller bodies, in memory, are still served.
#[test]
fn a_full_spool_disk_in_the_edge_is_a_507_that_says_so_too() {
    let site = Site::new().file("errapp.py", APP);
    let full = FullDir::new(site.path());
    let full_path = full.path.to_str().unwrap().to_string();
    let srv = site
        .env("TMPDIR", &full_path)
        .config(&app_config("errapp:application", 1, ""))
        .start();
    upload_gets_a_507(&srv);
    let logged = format!("cannot spool a request body to a temp file in {full_path}");
    assert!(
        srv.wait_for_stderr(&logged, Duration::from_secs(3)),
        "{}",
        srv.stderr_tail()
    );
    let small = srv.post("/upload", "text/plain", b"small");
    assert_eq!((small.status, small.text()), (200, "5".to_string()));
}

#[test]
fn exit_code_3_while_serving_is_not_a_failed_load() {
    let srv = start("");
    let r = get(srv.port, "/exit3");
    assert_eq!(r.status, 502);
    assert!(
        srv.wait_for_stderr("while serving", Duration::from_secs(5)),
        "{}",
        srv.stderr_tail()
    );
    assert!(
        !srv.stderr().contains("failed to load"),
        "{}",
        srv.stderr_tail()
    );
    assert!(wait_until(Duration::from_secs(5), || get(srv.port, "/")
        .status
        == 200));
}

/// `corral serve` started with RLIMIT_NOFILE soft/hard as given.
fn serve_with_fd_limit(site: Site, soft: u64, hard: u64) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.arg("serve").arg("--config").arg(site.config_path());
    // SAFETY: setrlimit is async-signal-safe; runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    site.spawn_with(cmd)
}

/// The error app on `workers` workers, started under that fd limit.
fn errapp_with_fd_limit(workers: u32, soft: u64, hard: u64) -> Running {
    let site =
        Site::new()
            .file("errapp.py", APP)
            .config(&app_config("errapp:application", workers, ""));
    let mut srv = serve_with_fd_limit(site, soft, hard);
    srv.wait_ready(Duration::from_secs(30));
    srv
}

#[test]
fn the_fd_limit_is_raised_and_a_low_one_is_reported() {
    let srv = errapp_with_fd_limit(1, 256, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    assert!(
        line.split_whitespace().filter(|w| *w == "4096").count() == 2,
        "{line}"
    );
    // max_connections = 10000 by default: 4096 is too low, so the edge
    // takes what fits (2 descriptors each after 32 kept aside), and says so.
    assert!(
        srv.stderr().contains("needs about 20032 file descriptors")
            && srv
                .stderr()
                .contains("the edge holds at most 2032 connections"),
        "{}",
        srv.stderr_tail()
    );
}

/// Under a low descriptor limit, more clients than it allows at once: the
/// edge accepts what it can carry and the rest wait in the backlog, so
/// every one is answered 200 in turn. Before, the edge accepted them all
/// and answered 503 to those it had no descriptor left for (a fault drill
/// with `ulimit -n 256`: 143 of 400).
#[test]
fn more_clients_than_the_fd_limit_carries_wait_their_turn() {
    let srv = errapp_with_fd_limit(2, 256, 256);
    // 300 connections at once, each sending its request only once all are
    // open, so they are held together.
    let mut clients: Vec<Conn> = (0..300).map(|_| Conn::connect(srv.port)).collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients.iter_mut() {
        c.send(&simple_req("GET", srv.port, "/", true)).unwrap();
    }
    for c in clients.iter_mut() {
        c.set_read_timeout(Duration::from_secs(30));
        let status = c.read_response("GET").map_or(0, |r| r.status);
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&300),
        "{statuses:?}\n{}",
        srv.stderr_tail()
    );
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// An edge whose fd table is full can still hold the client's connection
/// but cannot open one to a worker: that is the edge's shortage, told as a
/// 503 with the limit to raise, and no worker is blamed (before, every
/// worker in turn was "not delivered" and suspected).
#[test]
fn an_edge_out_of_fds_answers_503_and_blames_no_worker() {
    let srv = Site::new()
        .file("errapp.py", APP)
        .config(&app_config("errapp:application", 1, ""))
        .start();
    let edge = srv.edge_pid().expect("edge pid in the log");
    // The readiness probe's connection may still be closing in the edge;
    // counting it would leave room for a fourth descriptor.
    let base = settled_fds(edge);
    // Room for exactly three more descriptors: the three idle clients below.
    let limit = format!("--nofile={0}:{0}", base + 3);
    let out = run_with_timeout(
        Command::new("prlimit").args(["--pid", &edge.to_string(), &limit]),
        Duration::from_secs(5),
    );
    assert!(out.success(), "{out}");
    let mut clients: Vec<Conn> = (0..3).map(|_| Conn::connect(srv.port)).collect();
    assert!(
        wait_until(Duration::from_secs(5), || open_fds(edge) == base + 3),
        "the edge holds {} fds, want {}: {:?}",
        open_fds(edge),
        base + 3,
        fd_targets(edge)
    );
    let resp = clients[0]
        .roundtrip(&simple_req("GET", srv.port, "/x", true))
        .expect("an answer, not a dropped connection");
    srv.assert_status(&resp, 503, "edge out of fds");
    assert!(
        srv.wait_for_stderr(
            "the edge cannot open a connection to a worker",
            Duration::from_secs(2)
        ),
        "{}",
        srv.stderr_tail()
    );
    let logs = srv.stderr();
    assert!(
        !logs.contains("not delivered") && !logs.contains("could not reach any worker"),
        "a worker was blamed for the edge's limit:\n{}",
        srv.stderr_tail()
    );
    // With descriptors free again, the same worker serves.
    clients.truncate(1);
    drop(clients);
    assert!(
        wait_until(Duration::from_secs(5), || open_fds(edge) < base + 2),
        "the edge still holds {} fds (base {base}): {:?}",
        open_fds(edge),
        fd_targets(edge)
    );
    let r = srv.post("/count", "text/plain", b"abc");
    srv.assert_status(&r, 200, "after fds were freed");
    assert_eq!(r.text(), "3");
}

/// The process's descriptor count once it has held still for 300 ms.
fn settled_fds(pid: i32) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (mut last, mut still) = (open_fds(pid), 0);
    while still < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_fds(pid);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// What each of a process's descriptors points at (for a failure message).
fn fd_targets(pid: i32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// h2load's time-bound run ends by closing its connections with streams in
/// flight: the edge's answers to those streams fail, which is the clients'
/// leaving, not an error of ours. Each such stream logged "ERROR Fail to
/// filter request: WriteError ... unexpected frame type, status: 500"
/// (66 lines for one 2-second run; a third-party trial saw 100 per run).
#[test]
fn an_http2_load_that_stops_midway_logs_no_errors() {
    let srv = start_h2c();
    let url = format!("http://127.0.0.1:{}/", srv.port);
    let out = run_with_timeout(
        Command::new("h2load").args(["-D", "2", "-c", "8", "-m", "10", &url]),
        Duration::from_secs(30),
    );
    assert!(out.stdout.contains("succeeded"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let errors: Vec<String> = srv
        .stderr()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "{} error lines, e.g. {:?}",
        errors.len(),
        errors.first()
    );
}
