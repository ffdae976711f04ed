//! The access log: one line per request in nginx's "combined" format (or
//! JSON), written by a dedicated thread so a slow disk or a blocked stdout
//! never stalls the async threads serving requests.

use crate::config::AccessLog;
use crate::edge::app::job::Work;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
    /// Reopen the file by name (logrotate moved it away).
    Reopen,
}

pub struct Entry<'a> {
    pub client: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub duration: Duration,
    pub request_id: &'a str,
    /// The whole response went out. A body cut short (the app died or
    /// overran app.timeout mid-stream, the client left) is logged with the
    /// bytes actually sent and marked.
    pub complete: bool,
    /// An app request's costs; None for everything the edge answered.
    pub work: Option<&'a Work>,
}

/// What the log says of a request, taken from it once: for a line written
/// after the request's session is gone (a WebSocket logs when it closes,
/// as nginx does).
pub struct Request {
    pub client: String,
    pub method: String,
    pub target: String,
    pub protocol: &'static str,
    pub referer: String,
    pub user_agent: String,
    pub request_id: std::sync::Arc<str>,
}

/// How a request ended, for its line.
pub struct Outcome<'a> {
    pub status: u16,
    pub bytes: usize,
    pub duration: Duration,
    pub complete: bool,
    pub work: Option<&'a Work>,
}

impl Request {
    pub fn entry<'a>(&'a self, end: Outcome<'a>) -> Entry<'a> {
        Entry {
            client: &self.client,
            method: &self.method,
            target: &self.target,
            protocol: self.protocol,
            status: end.status,
            bytes: end.bytes,
            referer: &self.referer,
            user_agent: &self.user_agent,
            duration: end.duration,
            request_id: &self.request_id,
            complete: end.complete,
            work: end.work,
        }
    }
}

/// The sending end of the access log; cheap to clone (a channel sender).
/// Made by `start` in `edge::run`; held by the edge state (the request
/// path), the connection guard (refusals) and the control listener
/// (reopen on USR1).
#[derive(Clone)]
pub struct Log {
    tx: Option<Sender<Msg>>,
    json: bool,
}

/// Opens the log and starts its writer thread (nothing with `access = "off"`).
pub fn start(target: &AccessLog, json: bool) -> std::io::Result<Log> {
    let tx = match target {
        AccessLog::Off => None,
        target => {
            let sink = open(target)?;
            let (tx, rx) = mpsc::channel();
            let target = target.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || writer(sink, &target, rx))
                .ok();
            Some(tx)
        }
    };
    Ok(Log { tx, json })
}

fn open(target: &AccessLog) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLog::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        _ => Box::new(std::io::stdout()),
    })
}

fn writer(sink: Box<dyn Write + Send>, target: &AccessLog, rx: Receiver<Msg>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Write everything queued, then flush once.
        while let Some(m) = next {
            match m {
                Msg::Line(l) => {
                    let _ = out.write_all(l.as_bytes());
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
                Msg::Reopen => {
                    let _ = out.flush();
                    match open(target) {
                        Ok(sink) => out = std::io::BufWriter::with_capacity(64 * 1024, sink),
                        Err(e) => tracing::error!("cannot reopen the access log: {e}"),
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

impl Log {
    /// Whether lines are written at all; with `access = "off"` the caller
    /// skips building them.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, e: &Entry) {
        let Some(tx) = &self.tx else { return };
        let line = if self.json {
            json_line(e)
        } else {
            combined_line(e, SystemTime::now())
        };
        let _ = tx.send(Msg::Line(line));
    }

    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// Waits (briefly) until every line logged so far is written.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(2));
            }
        }
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `$remote_addr - - [$time_local] "$request" $status $bytes "$referer" "$ua"`
fn combined_line(e: &Entry, now: SystemTime) -> String {
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"{}{}\n",
        e.client,
        clf_time(now),
        escape(e.method),
        escape(e.target),
        e.protocol,
        e.status,
        e.bytes,
        escape(dash(e.referer)),
        escape(dash(e.user_agent)),
        e.work.map(work_fields).unwrap_or_default(),
        if e.complete { "" } else { " incomplete" },
    )
}

fn json_line(e: &Entry) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    format!(
        "{{\"time\":{secs:.3},\"client\":\"{}\",\"method\":\"{}\",\"target\":\"{}\",\"protocol\":\"{}\",\"status\":{},\"bytes\":{},\"referer\":\"{}\",\"user_agent\":\"{}\",\"duration_ms\":{:.3},\"request_id\":\"{}\",\"complete\":{}{}}}\n",
        escape(e.client),
        escape(e.method),
        escape(e.target),
        e.protocol,
        e.status,
        e.bytes,
        escape(e.referer),
        escape(e.user_agent),
        e.duration.as_secs_f64() * 1000.0,
        e.request_id,
        e.complete,
        e.work.map(work_keys).unwrap_or_default(),
    )
}

/// The costs of an app request as numbers, unknown ones as `None`:
/// queue_ms, app_ms, worker (pid), worker_cpu_ms, rss_delta_kb.
fn costs(w: &Work) -> [(&'static str, Option<String>); 5] {
    let r = w.receipt;
    [
        ("queue_ms", Some(format!("{:.3}", ms(w.queue)))),
        ("app_ms", Some(format!("{:.3}", ms(w.app)))),
        ("worker", Some(w.worker.to_string())),
        (
            "worker_cpu_ms",
            r.and_then(|r| r.cpu_us)
                .map(|c| format!("{:.3}", c as f64 / 1000.0)),
        ),
        (
            "rss_delta_kb",
            r.and_then(|r| r.rss_delta_kb).map(|d| d.to_string()),
        ),
    ]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// ` queue_ms=0.012 app_ms=1.5 worker=4242 worker_cpu_ms=1.1 rss_delta_kb=0`
/// after the combined fields (`-` for what is unknown).
fn work_fields(w: &Work) -> String {
    costs(w)
        .iter()
        .map(|(k, v)| format!(" {k}={}", v.as_deref().unwrap_or("-")))
        .collect()
}

/// `,"queue_ms":0.012,...` (null for what is unknown).
fn work_keys(w: &Work) -> String {
    costs(w)
        .iter()
        .map(|(k, v)| format!(",\"{k}\":{}", v.as_deref().unwrap_or("null")))
        .collect()
}

/// Escapes quotes, backslashes and control bytes, so a client cannot forge
/// log lines (nginx does the same with \xNN).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\x22"),
            '\\' => out.push_str("\\x5C"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// `22/Nov/2026:04:14:50 +0000`: the Common Log Format time, in UTC.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let e = Entry {
            client: "127.0.0.1",
            method: "GET",
            target: "/a?b=\"c\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 13,
            referer: "",
            user_agent: "curl/8",
            duration: Duration::from_millis(1),
            request_id: "x",
            complete: true,
            work: None,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_320_890); // 2026-11-22 04:14:50 UTC
        assert_eq!(
            combined_line(&e, t),
            "127.0.0.1 - - [22/Nov/2026:04:14:50 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 13 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn app_requests_carry_their_costs() {
        let work = Work {
            queue: Duration::from_micros(250),
            app: Duration::from_millis(12),
            worker: 4242,
            receipt: Some(crate::wire::receipt::Receipt {
                cpu_us: Some(9_500),
                rss_kb: Some(40_000),
                rss_delta_kb: Some(-8),
            }),
        };
        assert_eq!(
            work_fields(&work),
            " queue_ms=0.250 app_ms=12.000 worker=4242 worker_cpu_ms=9.500 rss_delta_kb=-8"
        );
        let asgi = Work {
            worker: 7,
            receipt: Some(crate::wire::receipt::Receipt::default()),
            ..work
        };
        let keys = work_keys(&asgi);
        assert_eq!(
            keys,
            ",\"queue_ms\":0.250,\"app_ms\":12.000,\"worker\":7,\"worker_cpu_ms\":null,\"rss_delta_kb\":null"
        );
        let json: serde_json::Value = serde_json::from_str(&format!("{{\"a\":1{keys}}}")).unwrap();
        assert_eq!(json["worker"], 7);
    }
}
