//! Randomised robustness tests ("fuzzing" on stable Rust): each target gets
//! mutated inputs for a set time and must never panic or hang. They are
//! `#[ignore]`d so the normal suite stays fast; `scripts/fuzz.sh [seconds]`
//! runs them. Inputs that once broke something are kept in `SEEDS` below
//! and replayed by the normal (non-ignored) test every run.

use std::time::{Duration, Instant};

/// xorshift64*: tiny, deterministic for a given seed, good enough to mutate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"%",
    b"%2e",
    b"%2f",
    b"%00",
    b"%c0%ae",
    b"..",
    b"/",
    b"\\",
    b":",
    b" ",
    b"\t",
    b"chunked",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"-",
    b"=",
    b",",
    b"bytes=",
    b"99999999999999999999",
    b"\xff",
    b"\xc3\xa9",
    b"[",
    b"]",
    b"\"",
    b"*",
    b"0",
    b"-1",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let pos = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                v[p] = rng.next() as u8;
            }
            1 => {
                let tok = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(pos..pos, tok.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (pos + rng.below(8)).min(v.len());
                v.drain(pos.min(end)..end);
            }
            3 if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = (a + rng.below(16)).min(v.len());
                let chunk: Vec<u8> = v[a..b].to_vec();
                v.splice(pos..pos, chunk);
            }
            _ => v.insert(pos.min(v.len()), rng.next() as u8),
        }
    }
    v.truncate(1 << 16);
    v
}

fn run_for(secs: u64, seeds: &[&[u8]], mut target: impl FnMut(&[u8])) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ secs);
    let mut n = 0;
    for s in seeds {
        target(s);
    }
    while Instant::now() < deadline {
        let seed = seeds[rng.below(seeds.len())];
        target(&mutate(&mut rng, seed));
        n += 1;
    }
    n
}

fn seconds() -> u64 {
    std::env::var("CORRAL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

// ---- targets ----------------------------------------------------------------

fn request_parser(input: &[u8]) {
    use std::io::Write;
    let (mut a, b) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = b.set_read_timeout(Some(Duration::from_secs(2)));
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = a.write_all(&data);
    });
    let mut reader = std::io::BufReader::new(b);
    for _ in 0..4 {
        if crate::worker::request::read_request(&mut reader).is_err() {
            break;
        }
    }
    drop(reader);
    let _ = writer.join();
}

fn config_loader(input: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("site.toml");
    if std::fs::write(&path, input).is_ok() {
        let _ = crate::config::load(&path);
    }
}

fn static_path(input: &[u8]) {
    let decoded = crate::proto::target::decode(input);
    if let Ok((p, _)) = crate::proto::target::resolve(&decoded, false) {
        assert!(!p.components().any(|c| matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::RootDir
        )));
    }
}

fn range_header(input: &[u8]) {
    let s = String::from_utf8_lossy(input);
    for size in [0u64, 1, 100, u64::MAX] {
        if let crate::proto::ranges::Ranges::Single(a, b) = crate::proto::ranges::parse(&s, size) {
            assert!(a <= b && b < size, "{s:?} {size} -> {a}-{b}");
        }
    }
}

fn strict_head(input: &[u8]) {
    let _ = crate::proto::framing::transfer_coding(input.split(|&b| b == b'\n'));
}

/// The edge's framing check must decide the same whatever way the bytes
/// are split into reads (a client controls the splits).
fn edge_framing(input: &[u8]) {
    use crate::proto::framing::{Framer, HeadLimits, Step};
    fn frame(input: &[u8], piece: usize) -> (usize, u8) {
        let mut f = Framer::new(
            HeadLimits {
                max_request_line: 64,
                max_head: 256,
                max_headers: 8,
            },
            true,
        );
        let (mut held, mut passed, mut fed) = (Vec::new(), 0, 0);
        loop {
            match f.step(&held) {
                Step::Pass(n) => {
                    assert!(n > 0 && n <= held.len(), "pass {n} of {}", held.len());
                    passed += n;
                    held.drain(..n);
                }
                Step::NeedMore if fed < input.len() => {
                    let end = (fed + piece).min(input.len());
                    held.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Step::NeedMore => return (passed, 0),
                Step::StopAfter(n) => return (passed + n, 1),
                Step::Refuse(status, _) => {
                    assert!([400, 414, 431, 505].contains(&status));
                    return (passed, 2);
                }
                Step::BadBody(_) => return (passed, 3),
            }
        }
    }
    let whole = frame(input, input.len().max(1));
    for piece in [1, 2, 7] {
        assert_eq!(frame(input, piece), whole, "pieces of {piece}: {input:?}");
    }
}

const REQUEST_SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /a?b=c HTTP/1.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];
const CONFIG_SEEDS: &[&[u8]] = &[
    b"[server]\nlisten = [\"127.0.0.1:8080\"]\n[app]\nmodule = \"app:application\"\nworkers = 2\n",
    b"[limits]\nmax_body = \"10MiB\"\nrate = \"20r/s\"\n[[static]]\nurl = \"/s/\"\ndir = \".\"\n",
    b"[tls]\nlisten = [\"[::1]:443\"]\n[[tls.cert]]\ncert = \"a\"\nkey = \"b\"\n",
];
const PATH_SEEDS: &[&[u8]] = &[
    b"css/site.css",
    b"a/b/../c",
    b"%2e%2e/x",
    b"docs/",
    b".env",
    b"a%20b",
];
const RANGE_SEEDS: &[&[u8]] = &[b"bytes=0-99", b"bytes=-5", b"bytes=10-", b"bytes=0-1,5-6"];

/// Inputs that found bugs once; replayed by every normal test run.
const SEEDS: &[(&str, &[u8])] = &[
    ("range", b"bytes=-18446744073709551615"),
    ("range", b"bytes=18446744073709551615-"),
    ("path", b"%c0%ae%c0%ae/"),
    (
        "request",
        b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
    ),
    // A request line exactly at the limit, its CR read before its LF.
    (
        "framing",
        b"GET999999%2f9 / HTTP/1Host:9\x8c999999HTTP/1Host:9999999%2f999999 a\x0d\x0a\x0d",
    ),
    // Bytes before a malformed chunk byte are handed on whatever the split.
    (
        "framing",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n",
    ),
];

#[test]
fn regression_seeds() {
    for (target, input) in SEEDS {
        match *target {
            "range" => range_header(input),
            "path" => static_path(input),
            "request" => request_parser(input),
            "framing" => edge_framing(input),
            _ => unreachable!(),
        }
    }
}

#[test]
#[ignore]
fn fuzz_request_parser() {
    let n = run_for(seconds(), REQUEST_SEEDS, request_parser);
    eprintln!("request parser: {n} inputs");
}

#[test]
#[ignore]
fn fuzz_config_loader() {
    let n = run_for(seconds(), CONFIG_SEEDS, config_loader);
    eprintln!("config loader: {n} inputs");
}

#[test]
#[ignore]
fn fuzz_static_path() {
    let n = run_for(seconds(), PATH_SEEDS, static_path);
    eprintln!("static path: {n} inputs");
}

#[test]
#[ignore]
fn fuzz_range_header() {
    let n = run_for(seconds(), RANGE_SEEDS, range_header);
    eprintln!("range header: {n} inputs");
}

#[test]
#[ignore]
fn fuzz_edge_framing() {
    let n = run_for(seconds(), REQUEST_SEEDS, edge_framing);
    eprintln!("edge framing: {n} inputs");
}

#[test]
#[ignore]
fn fuzz_strict_head() {
    let n = run_for(seconds(), REQUEST_SEEDS, strict_head);
    eprintln!("strict head: {n} inputs");
}
