//! Criterion micro-benchmarks of corral's hot paths, from the library the
//! binary is built on: the worker's request parser, the
//! whole WSGI round (environ, app call, response writing) with a real
//! embedded interpreter, worker selection in the edge, counting a request
//! in the metrics, and Range parsing.
//!
//!     cargo bench --bench hot_paths

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use corral::edge::app::pool as dispatch;
use corral::proto::ranges as http_ranges;
use corral::worker::quiet_read::QuietRead;
use corral::worker::{request, wsgi};

const REQUEST: &[u8] = b"GET /articles/2026/11/corral?page=2&sort=new HTTP/1.1\r\n\
host: example.com\r\nuser-agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0\r\n\
accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
accept-language: en-GB,en;q=0.5\r\naccept-encoding: gzip, deflate, br, zstd\r\n\
cookie: sessionid=abc123; csrftoken=def456\r\nx-corral-client: 203.0.113.9:51234\r\n\
x-corral-local: 127.0.0.1:8080\r\nx-corral-scheme: http\r\nx-corral-protocol: HTTP/1.1\r\n\
x-corral-request-id: 00000a0b00000001\r\nx-forwarded-for: 203.0.113.9\r\ncontent-length: 0\r\n\r\n";

fn parse_request(c: &mut Criterion) {
    let (mut tx, rx) = UnixStream::pair().expect("socketpair");
    // The worker's own reader (recvmsg, for files passed with a head).
    let mut reader = BufReader::new(QuietRead::new(rx));
    c.bench_function("worker: read and parse a browser request", |b| {
        b.iter(|| {
            tx.write_all(REQUEST).expect("write");
            black_box(request::read_request(&mut reader).expect("parse"));
        })
    });
}

fn wsgi_round(c: &mut Criterion) {
    use pyo3::prelude::*;
    Python::initialize();
    let (tx, mut rx) = UnixStream::pair().expect("socketpair");
    let tx = std::sync::Arc::new(tx);
    // Drain what the app writes, as the edge would.
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while rx.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    });
    Python::attach(|py| {
        let code = std::ffi::CString::new(
            "def application(environ, start_response):\n    body = b'Hello, World!'\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    return [body]\n",
        )
        .expect("cstring");
        let ns = pyo3::types::PyDict::new(py);
        py.run(&code, Some(&ns), None).expect("app");
        let app = ns
            .get_item("application")
            .expect("lookup")
            .expect("app")
            .unbind();
        let wsgi = wsgi::Wsgi::new(py, app, 1, true, "").expect("wsgi");
        let (mut feed, parse_side) = UnixStream::pair().expect("socketpair");
        let mut reader = BufReader::new(QuietRead::new(parse_side));
        c.bench_function(
            "worker: WSGI round (environ, app, response) for hello",
            |b| {
                b.iter(|| {
                    feed.write_all(REQUEST).expect("write");
                    let req = request::read_request(&mut reader).expect("parse");
                    black_box(wsgi.handle(py, req, tx.clone()));
                })
            },
        );
    });
}

fn dispatch(c: &mut Criterion) {
    use dispatch::Pool;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = Pool::new(1024, std::time::Duration::from_secs(1), Default::default());
    for id in 0..8 {
        let facts = dispatch::Facts {
            pid: id as i32,
            replaced: None,
            interface: corral::ipc::Interface::Wsgi,
            capacity: 1,
            up_at: std::time::Instant::now(),
            stacks: format!("/tmp/w{id}.stacks").into(),
            code: 0,
        };
        let socket = std::path::PathBuf::from(format!("/tmp/w{id}.sock"));
        pool.worker_up(id, socket.into(), facts);
    }
    let job = corral::edge::app::job::Job {
        request: "GET /".into(),
        id: "0123456789abcdef".into(),
        fits_ahead: true,
    };
    c.bench_function("edge: take and give back a worker (8 workers)", |b| {
        b.iter(|| rt.block_on(async { black_box(pool.acquire(&[], &job).await.expect("lease")) }))
    });
}

/// What the metrics add to every app request: its answer counted (label
/// lookup, histogram), its queue wait and its time in the worker.
fn metrics(c: &mut Criterion) {
    use corral::edge::metrics::{Kind, Metrics};
    let m = Metrics::new();
    let took = std::time::Duration::from_micros(350);
    c.bench_function("edge: count one app request in the metrics", |b| {
        b.iter(|| {
            m.answered(black_box(Kind::App), black_box(200), took, 1234);
            m.waited(took);
            m.worked(took, 1);
        })
    });
}

/// What a WSGI worker adds to every request for the access log's costs:
/// the thread's CPU clock and the RSS, read at its start and its end, and
/// the receipt line written.
fn receipt(c: &mut Criterion) {
    let mut out = Vec::with_capacity(64);
    c.bench_function("worker: measure one request and write its receipt", |b| {
        b.iter(|| {
            out.clear();
            let meter = corral::wire::receipt::Meter::start();
            meter.receipt().encode(&mut out);
            black_box(&out);
        })
    });
}

fn ranges(c: &mut Criterion) {
    c.bench_function("edge: parse a Range header", |b| {
        b.iter(|| black_box(http_ranges::parse(black_box("bytes=1000-1999"), 1 << 20)))
    });
}

criterion_group!(
    benches,
    parse_request,
    wsgi_round,
    dispatch,
    metrics,
    receipt,
    ranges
);
criterion_main!(benches);
