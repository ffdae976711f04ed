//! Worker lifecycle: who is who among the master's children, log counting,
//! the load generator.

use super::*;

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
pub fn number_after<'a>(line: &'a str, prefix: &str) -> Option<(i64, &'a str)> {
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

impl Running {
    /// The master's pid as `[server] pid_file = "corral.pid"` names it (after
    /// an upgrade, the new master's).
    pub fn pid_in_file(&self) -> i32 {
        let text = fs::read_to_string(self.path().join("corral.pid")).expect("pid file");
        text.trim().parse().expect("a pid")
    }

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

    /// The edge and the ready workers; fails the test unless there are an
    /// edge and at least `workers` workers.
    pub fn edge_and_worker_pids(&self, workers: usize) -> Vec<i32> {
        let pids: Vec<i32> = self
            .worker_pids()
            .into_iter()
            .chain(self.edge_pids())
            .collect();
        if pids.len() < workers + 1 {
            self.fail(format!(
                "expected an edge and {workers} workers, found {pids:?}"
            ));
        }
        pids
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

/// A storm of requests that kill their workers: twenty GETs of `killer`,
/// ten at a time, while another client GETs `page` every 200 ms (and ten
/// times more after the storm). Returns the killers' statuses and each
/// page's (status, time taken); 0 for no answer.
pub fn kill_storm(port: u16, killer: &str, page: &str) -> (Vec<u16>, Vec<(u16, Duration)>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let get = move |path: &str| {
        let t0 = Instant::now();
        let r = try_request_timeout(port, &get_req(port, path), Duration::from_secs(30));
        (r.map(|r| r.status).unwrap_or(0), t0.elapsed())
    };
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, page) = (done.clone(), page.to_string());
        thread::spawn(move || {
            let mut seen = Vec::new();
            let mut after = 0;
            while after < 10 {
                after += usize::from(done.load(Ordering::Relaxed));
                seen.push(get(&page));
                thread::sleep(Duration::from_millis(200));
            }
            seen
        })
    };
    let killers: Vec<_> = (0..10)
        .map(|_| {
            let killer = killer.to_string();
            thread::spawn(move || [get(&killer).0, get(&killer).0])
        })
        .collect();
    let killed = killers
        .into_iter()
        .flat_map(|k| k.join().expect("killer thread"))
        .collect();
    done.store(true, Ordering::Relaxed);
    (killed, prober.join().expect("probe thread"))
}
