//! Hostile and odd input at the edge: malformed and ambiguous requests
//! (RFC 9110/9112), request smuggling, slow clients, and the `[limits]` /
//! `[server] trusted_proxies` settings.
//!
//! Most tests run tests/apps/recorder.py, which appends one JSON line per
//! request it sees to `recorded.jsonl` in the site folder: a request the
//! edge refused must never show up there.
//!
//! The tests take a process-wide lock and run one at a time: the slow-client
//! test measures latencies, and the machine may have only two cores.
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// site.toml for recorder.py: `server_extra` goes into `[server]`,
/// `limits` into `[limits]`.
fn recorder_config(workers: u32, server_extra: &str, limits: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\n{server_extra}\n\n\
         [app]\nmodule = \"recorder:application\"\nchdir = \".\"\nworkers = {workers}\n\
         graceful_timeout = \"5s\"\n\n\
         [app.env]\nRECORDER_FILE = \"{{dir}}/recorded.jsonl\"\n\n\
         [limits]\n{limits}\n\n\
         [log]\naccess = \"stdout\"\nlevel = \"info\"\n"
    )
}

fn recorder_server(workers: u32, server_extra: &str, limits: &str) -> Running {
    Site::new()
        .app("recorder.py")
        .config(&recorder_config(workers, server_extra, limits))
        .start()
}

fn recorded_path(srv: &Running) -> PathBuf {
    srv.path().join("recorded.jsonl")
}

/// Every request recorder.py has seen so far.
fn recorded(srv: &Running) -> Vec<Json> {
    read_jsonl(&recorded_path(srv))
}

fn jstr<'a>(j: &'a Json, key: &str) -> &'a str {
    j[key].as_str().unwrap_or("")
}

/// Replace every `@P` in a request template with `path`.
fn subst(tpl: &[u8], path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(tpl.len() + path.len());
    let mut i = 0;
    while i < tpl.len() {
        if tpl[i..].starts_with(b"@P") {
            out.extend_from_slice(path.as_bytes());
            i += 2;
        } else {
            out.push(tpl[i]);
            i += 1;
        }
    }
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------
// 1. malformed and ambiguous requests
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly this status, then the connection closes.
    Status(u16),
    /// One of these statuses, then the connection closes.
    OneOf(&'static [u16]),
    /// Any 4xx/5xx, or a close without any response.
    Refused,
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Status(s) => write!(f, "{s} then close"),
            Want::OneOf(l) => write!(f, "one of {l:?} then close"),
            Want::Refused => write!(f, "a 4xx/5xx or a plain close"),
        }
    }
}

struct Case {
    n: usize,
    label: String,
    raw: Vec<u8>,
    want: Want,
    half_close: bool,
}

#[derive(Default)]
struct Table {
    cases: Vec<Case>,
}

impl Table {
    /// A case built from a template where `@P` stands for `/bad/<n>`.
    fn push(&mut self, label: &str, want: Want, half_close: bool, tpl: &[u8]) {
        let n = self.cases.len() + 1;
        let raw = subst(tpl, &format!("/bad/{n}"));
        self.cases.push(Case {
            n,
            label: label.to_string(),
            raw,
            want,
            half_close,
        });
    }

    fn add(&mut self, label: &str, want: Want, tpl: &[u8]) {
        self.push(label, want, false, tpl);
    }
}

const S400: Want = Want::Status(400);
/// Well-formed but unsupported HTTP versions (RFC 9110 §15.6.6).
const S505: Want = Want::Status(505);

// One case per line reads best as a table.
#[rustfmt::skip]
fn malformed_table() -> Table {
    let mut t = Table::default();

    // -- Content-Length / Transfer-Encoding framing (RFC 9112 §6) --
    t.add("CL and TE", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    t.add("TE then CL", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n");
    t.add("CL and TE, odd-case names", S400, b"POST @P HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n");
    t.add("CL and TE: identity", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n\r\nhello");
    t.add("two different Content-Lengths", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    t.add("Content-Length list of different values", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!");
    t.add("CL list of equal values, then a different CL", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 6\r\n\r\nhello!");
    t.add("Content-Length: -1", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\nhello");
    t.add("Content-Length: +5", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello");
    t.add("Content-Length: 1_0", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n0123456789");
    t.add("Content-Length: (empty)", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\nhello");
    t.add("Content-Length: 0x5", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello");
    t.add("Content-Length: 5 5", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\nhello");
    t.add("Content-Length: 5.0", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5.0\r\n\r\nhello");
    t.add("Content-Length overflowing u64", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\nhello");
    t.add("Content-Length: VT 5", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: \x0b5\r\n\r\nhello");
    t.add("Content-Length: 5 NUL", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5\x00\r\n\r\nhello");
    t.add("Content-Length: 5, (trailing comma)", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\nhello");
    t.add("Content-Length: five", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: five\r\n\r\nhello");
    t.add("Content-Length with space before colon", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello");
    t.add("TE: gzip (chunked not final)", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nhello");
    t.add("TE: chunked, gzip", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: identity", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\nhello");
    t.add("TE: VT chunked", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: xchunked", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    // RFC 9112 §6.1: chunked must not be applied more than once.
    t.add("TE: chunked, chunked", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: chunked on two lines", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    // RFC 9112 §6.1: an unknown transfer coding gets 501 (or a 400).
    t.add("TE: gzip, chunked (coding not implemented)", Want::OneOf(&[400, 501]), b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: \"chunked\" (quoted)", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE on HTTP/1.0", S400, b"POST @P HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: chunked NUL", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x00\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE value on an obs-fold line", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE with space before colon", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    t.add("TE: (empty)", S400, b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n");

    // -- chunked bodies (RFC 9112 §7.1) --
    let chunked = |body: &[u8]| -> Vec<u8> {
        cat(&[b"POST @P HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", body])
    };
    t.add("chunk size 0x5", S400, &chunked(b"0x5\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size '5 ' (trailing space)", S400, &chunked(b"5 \r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size -1", S400, &chunked(b"-1\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size +5", S400, &chunked(b"+5\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size ffffffffffffffffff", S400, &chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size overflowing u64 to 5", S400, &chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size ' 5' (leading space)", S400, &chunked(b" 5\r\nhello\r\n0\r\n\r\n"));
    t.add("empty chunk-size line", S400, &chunked(b"\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk size g (not hex)", S400, &chunked(b"g\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk extension with a control char", S400, &chunked(b"5;a\x01b\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk extension with NUL", S400, &chunked(b"5;a\x00\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk extension without a name ('5;')", S400, &chunked(b"5;\r\nhello\r\n0\r\n\r\n"));
    t.add("chunk extension ended by a bare LF", S400, &chunked(b"2;\nxx\r\n0\r\n\r\n"));
    t.add("chunk data longer than its size", S400, &chunked(b"3\r\nhello\r\n0\r\n\r\n"));
    t.add("no CRLF after chunk data", S400, &chunked(b"5\r\nhello0\r\n\r\n"));
    t.add("bare LF after chunk size", S400, &chunked(b"5\nhello\r\n0\r\n\r\n"));
    t.add("bare LF after chunk data", S400, &chunked(b"5\r\nhello\n0\r\n\r\n"));
    t.add("bare LF after the last chunk", S400, &chunked(b"5\r\nhello\r\n0\n\r\n"));
    t.add("bare LF as the final line", S400, &chunked(b"5\r\nhello\r\n0\r\n\n"));
    t.add("bare LFs throughout the body", S400, &chunked(b"5\nhello\n0\n\n"));
    t.add("trailer line without a colon", S400, &chunked(b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"));
    t.add("missing final CRLF (stalls)", Want::OneOf(&[400, 408]), &chunked(b"5\r\nhello\r\n0\r\n"));
    t.push("chunked body cut short, client half-closes", Want::Refused, true, &chunked(b"5\r\nhel"));

    // -- line endings (RFC 9112 §2.2) --
    t.add("bare LF line endings throughout", S400, b"GET @P HTTP/1.1\nHost: h\n\n");
    t.add("bare LF after the request line", S400, b"GET @P HTTP/1.1\nHost: h\r\n\r\n");
    t.add("bare LF after a header", S400, b"GET @P HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n");
    t.add("bare LF ending the head", S400, b"GET @P HTTP/1.1\r\nHost: h\r\n\n");
    t.add("bare CR inside a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n");
    t.add("bare CR ending a header", S400, b"GET @P HTTP/1.1\r\nHost: h\r\r\n\r\n");
    t.add("CR CR LF ending the head", S400, b"GET @P HTTP/1.1\r\nHost: h\r\n\r\r\n");
    t.add("bare CR in the request target", S400, b"GET @P\r HTTP/1.1\r\nHost: h\r\n\r\n");

    // -- header fields (RFC 9110 §5, RFC 9112 §5) --
    t.add("obs-fold (space)", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n");
    t.add("obs-fold (tab)", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n");
    t.add("whitespace before the first header", S400, b"GET @P HTTP/1.1\r\n Host: h\r\n\r\n");
    t.add("space before colon", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n");
    t.add("tab before colon", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A\t: 1\r\n\r\n");
    t.add("NUL in a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n");
    t.add("NUL in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX\x00A: 1\r\n\r\n");
    t.add("NUL in the Host value", S400, b"GET @P HTTP/1.1\r\nHost: h\x00\r\n\r\n");
    t.add("SOH in a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n");
    t.add("ESC in a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\x1bb\r\n\r\n");
    t.add("VT in a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\x0bb\r\n\r\n");
    t.add("DEL in a value", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n");
    t.add("header line without a colon", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A\r\n\r\n");
    t.add("empty header name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n");
    t.add("'(' in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n");
    t.add("space inside a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX A: 1\r\n\r\n");
    t.add("'/' in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX/A: 1\r\n\r\n");
    t.add("'{}' in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX{A}: 1\r\n\r\n");
    t.add("'\"' in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX\"A: 1\r\n\r\n");
    t.add("'@' in a name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX@A: 1\r\n\r\n");
    t.add("non-ASCII name", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: 1\r\n\r\n");

    // -- request line (RFC 9112 §3) --
    t.add("'@' in the method", S400, b"G@T @P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("'(' in the method", S400, b"GET( @P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("NUL in the method", S400, b"G\x00T @P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("empty method", S400, b" @P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("space inside the method", S400, b"GE T @P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("space in the request target", S400, b"GET @P/a b HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("SOH in the request target", S400, b"GET @P/\x01 HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("NUL in the request target", S400, b"GET @P/\x00x HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("DEL in the request target", S400, b"GET @P/\x7f HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("tab in the request target", S400, b"GET @P/a\tb HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("tab between method and target", S400, b"GET\t@P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("space after the version", S400, b"GET @P HTTP/1.1 \r\nHost: h\r\n\r\n");
    t.add("extra word after the version", S400, b"GET @P HTTP/1.1 extra\r\nHost: h\r\n\r\n");
    t.add("HTTP/2.0 in an HTTP/1 request line", S505, b"GET @P HTTP/2.0\r\nHost: h\r\n\r\n");
    t.add("HTTP/3.0", S505, b"GET @P HTTP/3.0\r\nHost: h\r\n\r\n");
    t.add("HTTP/0.9 (explicit)", S505, b"GET @P HTTP/0.9\r\nHost: h\r\n\r\n");
    t.add("HTTP/1.10", S400, b"GET @P HTTP/1.10\r\nHost: h\r\n\r\n");
    t.add("HTTP/11", S400, b"GET @P HTTP/11\r\nHost: h\r\n\r\n");
    t.add("http/1.1 (lowercase)", S400, b"GET @P http/1.1\r\nHost: h\r\n\r\n");
    t.add("HTTP/1.1x", S400, b"GET @P HTTP/1.1x\r\nHost: h\r\n\r\n");
    t.add("HTTP/ 1.1", S400, b"GET @P HTTP/ 1.1\r\nHost: h\r\n\r\n");
    t.add("no version (HTTP/0.9 simple request)", Want::Refused, b"GET @P\r\nHost: h\r\n\r\n");
    t.add("TLS ClientHello on the plain port", Want::Refused, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03@P\x00\x00\x00\x00\x00\x00\x00\x00\r\n\r\n");
    t.add("binary garbage", Want::Refused, b"\xff\xfe\x00\x01@P\r\n\r\n");

    // -- Host and the request target (RFC 9112 §3.2) --
    t.add("HTTP/1.1 without Host", S400, b"GET @P HTTP/1.1\r\nX-A: 1\r\n\r\n");
    t.add("two identical Hosts", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n");
    t.add("two different Hosts", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n");
    t.add("HTTP/1.0 with two Hosts", S400, b"GET @P HTTP/1.0\r\nHost: h\r\nHost: evil\r\n\r\n");
    t.add("absolute-form host differs from Host", S400, b"GET http://evil@P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("absolute-form with userinfo", S400, b"GET http://u:p@h@P HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("Host with userinfo", S400, b"GET @P HTTP/1.1\r\nHost: u@h\r\n\r\n");
    t.add("Host with a space", S400, b"GET @P HTTP/1.1\r\nHost: h h\r\n\r\n");
    t.add("Host with a non-numeric port", S400, b"GET @P HTTP/1.1\r\nHost: h:port\r\n\r\n");
    t.add("Host with a '/'", S400, b"GET @P HTTP/1.1\r\nHost: h/x\r\n\r\n");
    t.add("HTTP/1.1 absolute-form without Host", S400, b"GET http://h@P HTTP/1.1\r\n\r\n");

    // -- what follows a refused request is not a request --
    t.add("valid request pipelined after a bad one", S400, b"GET @P HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\nGET @P/second HTTP/1.1\r\nHost: h\r\n\r\n");
    t.add("valid request pipelined after a bad body", S400, &chunked(b"5\r\nhello0\r\n\r\nGET @P/second HTTP/1.1\r\nHost: h\r\n\r\n"));

    // -- truncated requests --
    t.push("truncated head, client half-closes", Want::Refused, true, b"GET @P HTTP/1.1\r\nHost: h\r\nX-A: 1");
    t.push("Content-Length body cut short, client half-closes", Want::Refused, true, b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
    t.add("Content-Length body cut short (stalls)", Want::Status(408), b"POST @P HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
    t
}

/// Why `out` does not match `case.want` (None: it does).
fn judge(case: &Case, out: &RawOutcome, wait: Duration) -> Option<String> {
    let method = String::from_utf8_lossy(case.raw.split(|&b| b == b' ').next().unwrap_or(b"GET"))
        .into_owned();
    let (resps, garbage) = parse_responses(&out.bytes, &[&method]);
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    let mut why = Vec::new();
    if let Some(g) = garbage {
        why.push(format!(
            "unparseable bytes after {} response(s): {g}",
            resps.len()
        ));
    }
    if resps.len() > 1 {
        why.push(format!(
            "{} responses {statuses:?} (a second request was read)",
            resps.len()
        ));
    }
    let ok = match (case.want, resps.first()) {
        (Want::Status(s), Some(r)) => r.status == s,
        (Want::OneOf(l), Some(r)) => l.contains(&r.status),
        (Want::Refused, Some(r)) => r.status >= 400,
        (Want::Refused, None) => true,
        (_, None) => false,
    };
    if !ok {
        match resps.first() {
            Some(r) => why.push(format!(
                "got {} {} (body {:?})",
                r.status,
                r.reason,
                snippet(&r.body, 120)
            )),
            None => why.push("got no response".into()),
        }
    }
    if !out.closed {
        why.push(format!("connection still open {wait:?} after sending"));
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

/// Send each case on its own connection, `threads` at a time.
fn run_cases(
    port: u16,
    cases: &[Case],
    wait: Duration,
    threads: usize,
) -> Vec<(usize, Result<RawOutcome, String>)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let r =
                    raw_exchange(port, &case.raw, case.half_close, wait).map_err(|e| e.to_string());
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort_by_key(|(i, _)| *i);
    r
}

#[test]
fn malformed_requests_are_refused_and_never_reach_the_app() {
    let _g = serial();
    let srv = recorder_server(2, "", "body_timeout = \"2s\"\nkeepalive_timeout = \"2s\"");
    let port = srv.port;

    // The recorder works: a good request is answered and recorded.
    let r = srv.get("/good/1");
    srv.assert_status(&r, 200, "GET /good/1");
    if !recorded(&srv).iter().any(|j| jstr(j, "path") == "/good/1") {
        srv.fail(
            "recorder.py did not record GET /good/1; the leak check below would prove nothing",
        );
    }

    let table = malformed_table();
    assert!(table.cases.len() >= 80, "only {} cases", table.cases.len());
    let wait = Duration::from_secs(6);
    let t0 = Instant::now();
    let results = run_cases(port, &table.cases, wait, 6);
    eprintln!(
        "{} malformed requests sent in {:?}",
        table.cases.len(),
        t0.elapsed()
    );

    let mut failures = Vec::new();
    for (i, res) in results {
        let case = &table.cases[i];
        let problem = match res {
            Err(e) => Some(format!("could not send: {e}")),
            Ok(out) => judge(case, &out, wait),
        };
        if let Some(p) = problem {
            failures.push(format!(
                "  #{} {}: expected {}; {p}\n      sent: {}",
                case.n,
                case.label,
                case.want,
                escaped(&case.raw, 300)
            ));
        }
    }
    // Give the workers a moment in case something is still being handled.
    thread::sleep(Duration::from_millis(300));
    let mut leaks = Vec::new();
    for j in recorded(&srv) {
        let uri = jstr(&j, "uri");
        let Some(at) = uri.find("/bad/") else {
            continue;
        };
        let n: usize = uri[at + 5..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        let label = table
            .cases
            .iter()
            .find(|c| c.n == n)
            .map(|c| c.label.as_str())
            .unwrap_or("?");
        leaks.push((n, format!(
            "  #{n} {label}: the app saw method {:?} PATH_INFO {:?} REQUEST_URI {:?} CONTENT_LENGTH {:?} body {:?} Host {:?}",
            jstr(&j, "method"),
            jstr(&j, "path"),
            uri,
            j["content_length"].as_str(),
            jstr(&j, "body_head"),
            j["host"].as_str()
        )));
    }
    leaks.sort();
    let leaks: Vec<String> = leaks.into_iter().map(|(_, l)| l).collect();
    if !failures.is_empty() || !leaks.is_empty() {
        srv.fail(format!(
            "{} of {} malformed requests were not refused as expected:\n{}\n\n{} of them reached the app:\n{}",
            failures.len(),
            table.cases.len(),
            failures.join("\n"),
            leaks.len(),
            leaks.join("\n")
        ));
    }
}

// ---------------------------------------------------------------------------
// 2. valid but unusual requests
// ---------------------------------------------------------------------------

/// What one response of a valid case must show.
struct Exp {
    method: &'static str,
    env: Vec<(&'static str, Option<String>)>,
    body: Option<Vec<u8>>,
}

fn exp(method: &'static str) -> Exp {
    Exp {
        method,
        env: Vec::new(),
        body: None,
    }
}

impl Exp {
    fn env(mut self, key: &'static str, value: impl Into<String>) -> Exp {
        self.env.push((key, Some(value.into())));
        self
    }
    fn absent(mut self, key: &'static str) -> Exp {
        self.env.push((key, None));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Exp {
        self.body = Some(body.into());
        self
    }
}

struct VCase {
    label: &'static str,
    raw: Vec<u8>,
    exps: Vec<Exp>,
    /// The server must close the connection after the last response.
    closes: bool,
}

fn vcase(label: &'static str, raw: impl Into<Vec<u8>>, exps: Vec<Exp>) -> VCase {
    VCase {
        label,
        raw: raw.into(),
        exps,
        closes: false,
    }
}

fn chunk_encode(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn valid_cases(port: u16) -> Vec<VCase> {
    let host = format!("127.0.0.1:{port}");
    let h = |s: &str| s.replace("{H}", &host).into_bytes();
    let mut v = Vec::new();

    // Pipelining: five requests in one write, answered in order.
    let mut raw = Vec::new();
    let mut exps = Vec::new();
    for i in 1..=5 {
        let close = if i == 5 { "Connection: close\r\n" } else { "" };
        raw.extend(h(&format!(
            "GET /v/pipe/{i}?i={i} HTTP/1.1\r\nHost: {{H}}\r\n{close}\r\n"
        )));
        exps.push(
            exp("GET")
                .env("PATH_INFO", format!("/v/pipe/{i}"))
                .env("QUERY_STRING", format!("i={i}")),
        );
    }
    v.push(VCase {
        closes: true,
        ..vcase("5 GETs pipelined in one write", raw, exps)
    });

    // Pipelining with bodies of both framings and a HEAD in the middle.
    let mut raw = h("GET /v/mix/1 HTTP/1.1\r\nHost: {H}\r\n\r\n");
    raw.extend(h(
        "POST /v/mix/2 HTTP/1.1\r\nHost: {H}\r\nContent-Length: 3\r\n\r\nabc",
    ));
    raw.extend(h("POST /v/mix/3 HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
    raw.extend(h("HEAD /v/mix/4 HTTP/1.1\r\nHost: {H}\r\n\r\n"));
    raw.extend(h(
        "GET /v/mix/5 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
    ));
    v.push(VCase {
        closes: true,
        ..vcase(
            "GET, POST (CL), POST (chunked), HEAD, GET pipelined",
            raw,
            vec![
                exp("GET").env("PATH_INFO", "/v/mix/1").body(""),
                exp("POST")
                    .env("PATH_INFO", "/v/mix/2")
                    .env("CONTENT_LENGTH", "3")
                    .body("abc"),
                exp("POST")
                    .env("PATH_INFO", "/v/mix/3")
                    .env("CONTENT_LENGTH", "5")
                    .body("hello"),
                exp("HEAD"),
                exp("GET").env("PATH_INFO", "/v/mix/5"),
            ],
        )
    });

    // A body that looks like a request, then a real pipelined request.
    let inner = "GET /v/inner HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut raw = h(&format!(
        "POST /v/outer HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    ));
    raw.extend(h(
        "GET /v/after HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
    ));
    v.push(vcase(
        "CL body that looks like a request, then a pipelined GET",
        raw,
        vec![
            exp("POST").env("PATH_INFO", "/v/outer").body(inner),
            exp("GET").env("PATH_INFO", "/v/after"),
        ],
    ));

    v.push(vcase(
        "chunked with trailers",
        h("POST /v/trailers HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"),
        vec![exp("POST").env("CONTENT_LENGTH", "11").absent("HTTP_TRANSFER_ENCODING").body("hello world")],
    ));
    v.push(vcase(
        "chunked with chunk extensions",
        h("POST /v/ext HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;name=value\r\nhello\r\n3;q=\"a b\";flag\r\nabc\r\n0;end=1\r\n\r\n"),
        vec![exp("POST").env("CONTENT_LENGTH", "8").body("helloabc")],
    ));
    v.push(vcase(
        "chunk sizes in uppercase hex with leading zeros",
        h("POST /v/hex HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nA\r\n0123456789\r\n000B\r\nabcdefghijk\r\n0000\r\n\r\n"),
        vec![exp("POST").body("0123456789abcdefghijk")],
    ));
    let ones: Vec<u8> = (0..200u32).map(|i| b'a' + (i % 26) as u8).collect();
    v.push(vcase(
        "200 one-byte chunks",
        cat(&[&h("POST /v/ones HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"), &chunk_encode(&ones, 1)]),
        vec![exp("POST").env("CONTENT_LENGTH", "200").body(ones.clone())],
    ));
    v.push(vcase(
        "Transfer-Encoding: Chunked (case-insensitive coding)",
        h("POST /v/te-case HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        vec![exp("POST").body("hello")],
    ));
    v.push(vcase(
        "Transfer-Encoding with surrounding whitespace",
        h("POST /v/te-ows HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \t chunked \t\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        vec![exp("POST").body("hello")],
    ));
    v.push(vcase(
        "chunked body of a single 0 chunk",
        h("POST /v/empty-chunked HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
        vec![exp("POST").env("CONTENT_LENGTH", "0").body("")],
    ));
    v.push(vcase(
        "POST with Content-Length: 0",
        h("POST /v/cl0 HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        vec![exp("POST").env("CONTENT_LENGTH", "0").body("")],
    ));
    v.push(vcase(
        "identical repeated Content-Length",
        h("POST /v/cl-twice HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        vec![exp("POST").env("CONTENT_LENGTH", "5").body("hello")],
    ));
    v.push(vcase(
        "Content-Length: 5, 5",
        h("POST /v/cl-list HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello"),
        vec![exp("POST").env("CONTENT_LENGTH", "5").body("hello")],
    ));
    v.push(vcase(
        "Content-Length with leading zeros and whitespace",
        h("POST /v/cl-zeros HTTP/1.1\r\nHost: {H}\r\nContent-Length: \t005 \r\nConnection: close\r\n\r\nhello"),
        vec![exp("POST").env("CONTENT_LENGTH", "5").body("hello")],
    ));
    v.push(vcase(
        "Expect: 100-continue with the body sent at once",
        h("PUT /v/expect HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        vec![exp("PUT").env("REQUEST_METHOD", "PUT").body("hello")],
    ));
    v.push(vcase(
        "percent-encoded path",
        h("GET /v/a%20b/%E2%82%AC/%25/%41 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("PATH_INFO", latin1(b"/v/a b/\xe2\x82\xac/%/A"))
            .env("REQUEST_URI", "/v/a%20b/%E2%82%AC/%25/%41")],
    ));
    v.push(vcase(
        "%2F in the path",
        h("GET /v/a%2Fb HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("PATH_INFO", "/v/a/b")
            .env("RAW_URI", "/v/a%2Fb")],
    ));
    v.push(vcase(
        "sub-delims and ':' '@' in the path",
        h("GET /v/semi;a=b,c!$&'()*+=:@x HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("PATH_INFO", "/v/semi;a=b,c!$&'()*+=:@x")],
    ));
    v.push(vcase(
        "'://' inside an origin-form path",
        h("GET /v/x://y/z HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("PATH_INFO", "/v/x://y/z")],
    ));
    v.push(vcase(
        "raw UTF-8 in the path and query: latin-1 of the bytes (PEP 3333)",
        h("GET /v/caf\u{e9}?q=caf\u{e9} HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("PATH_INFO", latin1("/v/caf\u{e9}".as_bytes()))
            .env("QUERY_STRING", latin1("q=caf\u{e9}".as_bytes()))
            .env("REQUEST_URI", latin1("/v/caf\u{e9}?q=caf\u{e9}".as_bytes()))],
    ));
    v.push(vcase(
        "odd query string kept raw",
        h("GET /v/q?a=%00&b=%zz&c&d==&e=?/&f=%2B+ HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("QUERY_STRING", "a=%00&b=%zz&c&d==&e=?/&f=%2B+")],
    ));
    let long_q: String = (0..800)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    assert!(long_q.len() > 5000 && long_q.len() < 7500);
    v.push(vcase(
        "very long query (within max_request_line)",
        h(&format!(
            "GET /v/longq?{long_q} HTTP/1.1\r\nHost: {{H}}\r\nConnection: close\r\n\r\n"
        )),
        vec![exp("GET").env("QUERY_STRING", long_q.clone())],
    ));
    let long_v = "v".repeat(16 * 1024);
    v.push(vcase(
        "16 KiB header value (within max_header_size)",
        h(&format!(
            "GET /v/longh HTTP/1.1\r\nHost: {{H}}\r\nX-Long: {long_v}\r\nConnection: close\r\n\r\n"
        )),
        vec![exp("GET").env("HTTP_X_LONG", long_v.clone())],
    ));
    let many: String = (0..90)
        .map(|i| format!("X-Many-{i}: value-{i}\r\n"))
        .collect();
    v.push(vcase(
        "90 header fields (within max_headers)",
        h(&format!(
            "GET /v/many HTTP/1.1\r\nHost: {{H}}\r\n{many}Connection: close\r\n\r\n"
        )),
        vec![exp("GET")
            .env("HTTP_X_MANY_0", "value-0")
            .env("HTTP_X_MANY_89", "value-89")],
    ));
    v.push(VCase {
        closes: true,
        ..vcase(
            "HTTP/1.0 without Host",
            b"GET /v/http10 HTTP/1.0\r\nUser-Agent: old\r\n\r\n".to_vec(),
            vec![exp("GET")
                .env("SERVER_PROTOCOL", "HTTP/1.0")
                .env("PATH_INFO", "/v/http10")],
        )
    });
    v.push(vcase(
        "HTTP/1.0 absolute-form without Host",
        h("GET http://{H}/v/abs10?x=1 HTTP/1.0\r\n\r\n"),
        vec![exp("GET")
            .env("PATH_INFO", "/v/abs10")
            .env("QUERY_STRING", "x=1")],
    ));
    v.push(vcase(
        "empty Host in HTTP/1.1 (allowed by RFC 9112 §3.2)",
        b"GET /v/emptyhost HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n".to_vec(),
        vec![exp("GET").env("HTTP_HOST", "")],
    ));
    v.push(vcase(
        "IPv6 literal Host",
        b"GET /v/v6 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n".to_vec(),
        vec![exp("GET").env("HTTP_HOST", "[::1]:8080")],
    ));
    v.push(vcase(
        "empty header values",
        h("GET /v/empty HTTP/1.1\r\nHost: {H}\r\nX-Empty:\r\nX-Empty-Sp: \r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_X_EMPTY", "").env("HTTP_X_EMPTY_SP", "")],
    ));
    v.push(vcase(
        "tab inside a value, OWS around it trimmed",
        h("GET /v/tab HTTP/1.1\r\nHost: {H}\r\nX-Tab: a\tb\r\nX-Ows: \t v  w \t\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_X_TAB", "a\tb").env("HTTP_X_OWS", "v  w")],
    ));
    v.push(vcase(
        "no space after the colon",
        h("GET /v/nospace HTTP/1.1\r\nHost:{H}\r\nX-Nospace:v\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("HTTP_X_NOSPACE", "v")
            .env("HTTP_HOST", host.clone())],
    ));
    v.push(vcase(
        "obs-text (latin-1) in a value",
        cat(&[
            &h("GET /v/latin HTTP/1.1\r\nHost: {H}\r\nX-Latin: caf"),
            b"\xe9\r\nConnection: close\r\n\r\n",
        ]),
        vec![exp("GET").env("HTTP_X_LATIN", "caf\u{e9}")],
    ));
    v.push(vcase(
        "quotes, commas and colons in a value",
        h("GET /v/quotes HTTP/1.1\r\nHost: {H}\r\nX-Q: \"a:b\", c=d; e\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_X_Q", "\"a:b\", c=d; e")],
    ));
    v.push(vcase(
        "lowercase header names",
        h("POST /v/lower HTTP/1.1\r\nhost: {H}\r\nx-lower: v\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"),
        vec![exp("POST").env("HTTP_X_LOWER", "v").env("CONTENT_TYPE", "text/plain").body("abc")],
    ));
    v.push(vcase(
        "uppercase header names",
        h("GET /v/upper HTTP/1.1\r\nHOST: {H}\r\nX-UPPER: v\r\nCONNECTION: close\r\n\r\n"),
        vec![exp("GET")
            .env("HTTP_X_UPPER", "v")
            .env("HTTP_HOST", host.clone())],
    ));
    v.push(vcase(
        "two Cookie headers",
        h("GET /v/cookies HTTP/1.1\r\nHost: {H}\r\nCookie: a=1\r\nCookie: b=2; c=3\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_COOKIE", "a=1; b=2; c=3")],
    ));
    v.push(vcase(
        "duplicate header fields joined",
        h("GET /v/dup HTTP/1.1\r\nHost: {H}\r\nX-Dup: a\r\nAccept: text/html\r\nx-dup: b\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_X_DUP", "a, b")],
    ));
    // `OPTIONS *` is answered by the edge (tests/protocol_edges.rs).
    v.push(vcase(
        "HTTP/1.2 is served as HTTP/1.1 (RFC 9110 §2.5)",
        h("GET /v/twelve HTTP/1.2\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("SERVER_PROTOCOL", "HTTP/1.1")],
    ));
    v.push(vcase(
        "absolute-form with the matching Host",
        h("GET http://{H}/v/abs/x?q=1 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("PATH_INFO", "/v/abs/x")
            .env("QUERY_STRING", "q=1")
            .env("HTTP_HOST", host.clone())],
    ));
    v.push(vcase(
        "absolute-form without a path",
        h("GET http://{H} HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("PATH_INFO", "/")],
    ));
    v.push(vcase(
        "extension method made of tchars",
        h("M-SEARCH.x_y~1 /v/method HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("M-SEARCH.x_y~1").env("REQUEST_METHOD", "M-SEARCH.x_y~1")],
    ));
    v.push(vcase(
        "empty line before the request line",
        h("\r\nGET /v/leading-crlf HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("PATH_INFO", "/v/leading-crlf")],
    ));
    v.push(vcase(
        "HEAD",
        h("HEAD /v/head HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        vec![exp("HEAD")],
    ));
    v.push(vcase(
        "client-sent X-Corral-* / X-Forwarded-* are not believed",
        h("GET /v/spoof HTTP/1.1\r\nHost: {H}\r\nX-Corral-Client: 6.6.6.6:1\r\nX-Corral-Scheme: https\r\nX-Corral-Protocol: HTTP/9\r\nX-Corral-Client-Verify: SUCCESS\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n"),
        vec![exp("GET")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("wsgi.url_scheme", "http")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("HTTP_X_FORWARDED_FOR", "127.0.0.1")
            .env("HTTP_X_FORWARDED_PROTO", "http")
            .env("HTTP_X_FORWARDED_HOST", host.clone())
            .absent("HTTPS")
            .absent("SSL_CLIENT_VERIFY")],
    ));
    v.push(vcase(
        "underscored header names are dropped (X_Forwarded_For)",
        h("GET /v/underscore HTTP/1.1\r\nHost: {H}\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom: 1\r\nConnection: close\r\n\r\n"),
        vec![exp("GET").env("HTTP_X_FORWARDED_FOR", "127.0.0.1").absent("HTTP_X_CUSTOM")],
    ));
    let big = pattern_bytes(2 * 1024 * 1024 + 7, 11);
    v.push(vcase(
        "2 MiB body with Content-Length (spooled to disk)",
        cat(&[&h(&format!("POST /v/big-cl HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", big.len())), &big]),
        vec![exp("POST").body(big.clone())],
    ));
    v.push(vcase(
        "2 MiB chunked body in 64 KiB chunks",
        cat(&[&h("POST /v/big-chunked HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"), &chunk_encode(&big, 64 * 1024)]),
        vec![exp("POST").env("CONTENT_LENGTH", big.len().to_string()).body(big.clone())],
    ));
    let line_path = format!("/v/longline/{}", "p".repeat(7900));
    v.push(vcase(
        "request line just under 8 KiB",
        h(&format!(
            "GET {line_path} HTTP/1.1\r\nHost: {{H}}\r\nConnection: close\r\n\r\n"
        )),
        vec![exp("GET").env("PATH_INFO", line_path.clone())],
    ));
    v
}

/// Check one response of a valid case against its expectation.
fn check_exp(r: &Response, e: &Exp) -> Result<(), String> {
    if r.status != 200 {
        return Err(format!(
            "status {} (body {:?})",
            r.status,
            snippet(&r.body, 300)
        ));
    }
    if e.method == "HEAD" {
        return if r.body.is_empty() {
            Ok(())
        } else {
            Err("HEAD response with a body".into())
        };
    }
    let j = Json::parse(&r.text())
        .map_err(|err| format!("body is not JSON ({err}): {}", snippet(&r.body, 300)))?;
    let env = &j["environ"];
    let mut why = Vec::new();
    if env["REQUEST_METHOD"].as_str() != Some(e.method) {
        why.push(format!(
            "REQUEST_METHOD {:?}, expected {:?}",
            env["REQUEST_METHOD"].as_str(),
            e.method
        ));
    }
    for (k, want) in &e.env {
        let got = env[*k].as_str();
        if got != want.as_deref() {
            let show = |s: Option<&str>| {
                s.map(|s| format!("{:?}", snippet(s.as_bytes(), 200)))
                    .unwrap_or("(absent)".into())
            };
            why.push(format!(
                "{k} = {}, expected {}",
                show(got),
                show(want.as_deref())
            ));
        }
    }
    if let Some(b) = &e.body {
        let len = j["body_len"].as_i64().unwrap_or(-1);
        if len != b.len() as i64 || j["body_sha256"].as_str() != Some(sha256_hex(b).as_str()) {
            why.push(format!(
                "app read a {len}-byte body, expected {} bytes {:?}",
                b.len(),
                snippet(b, 80)
            ));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

#[test]
fn valid_but_unusual_requests_reach_the_app_intact() {
    let _g = serial();
    let srv = Site::new()
        .app("echo_environ.py")
        .config(&app_config("echo_environ:application", 2, ""))
        .start();
    let port = srv.port;
    let cases: Vec<VCase> = valid_cases(port);
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let mut conn = match Conn::open_with_timeout(port, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => srv.fail(format!("connect: {e}")),
        };
        if let Err(e) = conn.send(&c.raw) {
            failures.push(format!("  {}: sending failed: {e}", c.label));
            continue;
        }
        let mut problems = Vec::new();
        for (i, e) in c.exps.iter().enumerate() {
            match conn.read_response(e.method) {
                Ok(r) => {
                    if let Err(why) = check_exp(&r, e) {
                        problems.push(format!("response {}: {why}", i + 1));
                    }
                }
                Err(err) => {
                    problems.push(format!("response {}: {err}", i + 1));
                    break;
                }
            }
        }
        if problems.is_empty() && c.closes && !conn.closed_by_peer(Duration::from_secs(3)) {
            problems.push("connection not closed after the last response".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "  {}: {}\n      sent: {}",
                c.label,
                problems.join("; "),
                escaped(&c.raw, 300)
            ));
        }
    }

    // Extra spaces in the request line (RFC 9112 §3: a recipient MAY split
    // on whitespace): either refused, or the path is the path.
    match raw_exchange(
        port,
        format!("GET  /v/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        false,
        Duration::from_secs(5),
    ) {
        Ok(out) => {
            let (resps, _) = parse_responses(&out.bytes, &["GET"]);
            match resps.first() {
                Some(r) if r.status == 400 => {}
                Some(r) if r.status == 200 => {
                    let path = Json::parse(&r.text())
                        .ok()
                        .and_then(|j| j["environ"]["PATH_INFO"].as_str().map(String::from));
                    if path.as_deref() != Some("/v/ws") {
                        failures.push(format!("  two spaces after the method: accepted with PATH_INFO {path:?} (expected 400, or PATH_INFO \"/v/ws\")"));
                    }
                }
                other => failures.push(format!(
                    "  two spaces after the method: {:?}",
                    other.map(|r| r.status)
                )),
            }
        }
        Err(e) => failures.push(format!("  two spaces after the method: {e}")),
    }

    if !failures.is_empty() {
        srv.fail(format!(
            "{} of {} valid requests were mishandled:\n{}",
            failures.len(),
            cases.len() + 1,
            failures.join("\n")
        ));
    }
}

// ---------------------------------------------------------------------------
// 3. request smuggling
// ---------------------------------------------------------------------------

struct Smuggle {
    label: String,
    raw: Vec<u8>,
    /// Acceptable status sequences on the connection (it must then close).
    want: Vec<Vec<u16>>,
    /// When the statuses include a 200: the (REQUEST_URI, body) the app
    /// must have seen, once each (and nothing else).
    seen: Vec<(String, Vec<u8>)>,
}

fn smuggle_cases() -> Vec<Smuggle> {
    let smuggled = |n: usize| format!("GET /smuggled/{n} HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut v: Vec<Smuggle> = Vec::new();
    let mut add = |label: &str, raw: Vec<u8>, want: Vec<Vec<u16>>, seen: Vec<(String, Vec<u8>)>| {
        v.push(Smuggle {
            label: label.into(),
            raw,
            want,
            seen,
        });
    };
    let rej = || vec![vec![400u16]];

    // CL.TE: a front end using Content-Length forwards it all; a back end
    // using chunked stops at 0 and reads GET /smuggled as the next request.
    let tail = format!("0\r\n\r\n{}", smuggled(1));
    add("CL.TE classic", format!("POST /smug/1 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{tail}", tail.len()).into_bytes(), rej(), vec![]);
    add("CL.TE with Content-Length: 6", format!("POST /smug/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}", smuggled(2)).into_bytes(), rej(), vec![]);
    // TE.CL: a back end using Content-Length: 4 reads "5c\r\n" and then the
    // smuggled request.
    let inner = "GPOST /smuggled/3 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 15\r\n\r\nx=1".to_string();
    add("TE.CL classic", format!("POST /smug/3 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len()).into_bytes(), rej(), vec![]);
    add("TE.CL, TE first", format!("POST /smug/4 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n", smuggled(4).len(), smuggled(4)).into_bytes(), rej(), vec![]);

    // TE.TE: one side fails to recognise an obfuscated Transfer-Encoding and
    // falls back to Content-Length.
    let te_te: &[(&str, &str)] = &[
        ("TE: xchunked", "Transfer-Encoding: xchunked\r\n"),
        (
            "TE with space before colon",
            "Transfer-Encoding : chunked\r\n",
        ),
        (
            "TE: chunked + TE: x",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
        ),
        (
            "TE: x + TE: chunked",
            "Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("TE with tab OWS", "Transfer-Encoding:\tchunked\r\n"),
        (
            "TE on an obs-fold line",
            "X-A: 1\r\n Transfer-Encoding: chunked\r\n",
        ),
        (
            "TE after a bare LF",
            "X-A: 1\nTransfer-Encoding: chunked\r\n",
        ),
        ("TE name then bare LF", "Transfer-Encoding\n: chunked\r\n"),
        (
            "TE: chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "TE: identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        ("TE: VT chunked", "Transfer-Encoding: \x0bchunked\r\n"),
        ("TE: chunked NUL", "Transfer-Encoding: chunked\x00\r\n"),
        ("TE: \"chunked\"", "Transfer-Encoding: \"chunked\"\r\n"),
        ("Transfer-encoding: cow", "Transfer-encoding: cow\r\n"),
        (
            "TRANSFER-ENCODING: CHUNKED",
            "TRANSFER-ENCODING: CHUNKED\r\n",
        ),
        (
            "TE value folded",
            "Transfer-Encoding: identity\r\n chunked\r\n",
        ),
        ("TE: chunked;q=1", "Transfer-Encoding: chunked;q=1\r\n"),
    ];
    for (i, (label, te)) in te_te.iter().enumerate() {
        let n = 10 + i;
        let body = format!("0\r\n\r\n{}", smuggled(n));
        add(
            &format!("TE.TE + CL: {label}"),
            format!(
                "POST /smug/{n} HTTP/1.1\r\nHost: h\r\n{te}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            rej(),
            vec![],
        );
    }
    // The same obfuscations without Content-Length: a request whose framing
    // cannot be determined must be refused, not read as body-less.
    for (i, (label, te)) in te_te.iter().enumerate() {
        if label.contains("tab OWS") || label.contains("CHUNKED") {
            continue; // these are plain chunked once parsed
        }
        let n = 40 + i;
        // An unknown coding before chunked: RFC 9112 §6.1 says 501.
        let unknown_first =
            label.contains("x + TE: chunked") || label.contains("identity, chunked");
        add(
            &format!("TE.TE alone: {label}"),
            format!(
                "POST /smug/{n} HTTP/1.1\r\nHost: h\r\n{te}\r\n0\r\n\r\n{}",
                smuggled(n)
            )
            .into_bytes(),
            if unknown_first {
                vec![vec![400], vec![501]]
            } else {
                rej()
            },
            vec![],
        );
    }

    // CL.CL
    add("CL: 0 then CL: N", format!("POST /smug/60 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{}", smuggled(60).len(), smuggled(60)).into_bytes(), rej(), vec![]);
    add("CL: N then CL: 0", format!("POST /smug/61 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nContent-Length: 0\r\n\r\n{}", smuggled(61).len(), smuggled(61)).into_bytes(), rej(), vec![]);
    add(
        "CL: 0, N",
        format!(
            "POST /smug/62 HTTP/1.1\r\nHost: h\r\nContent-Length: 0, {}\r\n\r\n{}",
            smuggled(62).len(),
            smuggled(62)
        )
        .into_bytes(),
        rej(),
        vec![],
    );
    add(
        "CL: -1",
        format!(
            "POST /smug/63 HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{}",
            smuggled(63)
        )
        .into_bytes(),
        rej(),
        vec![],
    );
    add(
        "CL: +N",
        format!(
            "POST /smug/64 HTTP/1.1\r\nHost: h\r\nContent-Length: +{}\r\n\r\n{}",
            smuggled(64).len(),
            smuggled(64)
        )
        .into_bytes(),
        rej(),
        vec![],
    );
    add(
        "CL value folded",
        format!(
            "POST /smug/65 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n {}\r\n\r\n{}",
            smuggled(65).len(),
            smuggled(65)
        )
        .into_bytes(),
        rej(),
        vec![],
    );

    // Chunked-body parsing discrepancies.
    add("chunk size overflowing u64 to 5", format!("POST /smug/70 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{}", smuggled(70)).into_bytes(), rej(), vec![]);
    add("chunk extension ended by a bare LF", format!("POST /smug/71 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n45\r\n0\r\n\r\n{}", smuggled(71)).into_bytes(), rej(), vec![]);
    add("bare LF chunk framing", format!("POST /smug/72 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{}", smuggled(72)).into_bytes(), rej(), vec![]);
    add("chunk data without CRLF", format!("POST /smug/73 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n{}", smuggled(73)).into_bytes(), rej(), vec![]);
    add("chunk size '0x5'", format!("POST /smug/74 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{}", smuggled(74)).into_bytes(), rej(), vec![]);
    add("empty chunk-size line", format!("POST /smug/75 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\n{}\r\n0\r\n\r\n", smuggled(75)).into_bytes(), rej(), vec![]);
    // "0\r\n" without the final CRLF, then a request: strict servers refuse,
    // lenient ones may swallow it as trailer lines; never run it.
    add(
        "last chunk without final CRLF, request as trailers",
        format!("POST /smug/76 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{}", smuggled(76)).into_bytes(),
        vec![vec![400], vec![200]],
        vec![("/smug/76".into(), b"hello".to_vec())],
    );
    add("TE + CL on HTTP/1.0", format!("POST /smug/77 HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{}", smuggled(77)).into_bytes(), rej(), vec![]);

    // A valid request followed by a smuggling attempt on the same connection.
    let tail = format!("0\r\n\r\n{}", smuggled(80));
    add(
        "valid GET, then CL.TE on the same connection",
        format!("GET /smug/80a HTTP/1.1\r\nHost: h\r\n\r\nPOST /smug/80b HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{tail}", tail.len()).into_bytes(),
        vec![vec![200, 400]],
        vec![("/smug/80a".into(), Vec::new())],
    );
    add(
        "bad request, then a valid one in the same write",
        format!(
            "GET /smug/81 HTTP/1.1\r\nHost: h\r\nHost: h2\r\n\r\n{}",
            smuggled(81)
        )
        .into_bytes(),
        rej(),
        vec![],
    );

    // Bodies that contain requests: handled as exactly what was sent.
    let body = smuggled(90);
    add(
        "POST whose CL body is a request",
        format!("POST /smug/90 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes(),
        vec![vec![200]],
        vec![("/smug/90".into(), body.into_bytes())],
    );
    let body = smuggled(91);
    add(
        "GET with a CL body that is a request",
        format!("GET /smug/91 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes(),
        vec![vec![200]],
        vec![("/smug/91".into(), body.into_bytes())],
    );
    let body = smuggled(92);
    add(
        "chunked body that is a request",
        format!("POST /smug/92 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).into_bytes(),
        vec![vec![200]],
        vec![("/smug/92".into(), body.into_bytes())],
    );
    add(
        "h2c upgrade is not honoured",
        b"GET /smug/93 HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\r\n".to_vec(),
        vec![vec![200]],
        vec![("/smug/93".into(), Vec::new())],
    );
    add(
        "websocket upgrade to a plain WSGI app is refused (501), never tunnelled",
        b"GET /smug/94 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
        vec![vec![501]],
        Vec::new(),
    );
    v
}

#[test]
fn smuggling_attempts_never_reach_the_app_as_requests() {
    let _g = serial();
    let srv = recorder_server(2, "", "body_timeout = \"2s\"\nkeepalive_timeout = \"2s\"");
    let port = srv.port;
    let cases: Vec<Smuggle> = smuggle_cases();
    let wait = Duration::from_secs(6);
    let mut failures = Vec::new();
    // Per case: whether it was answered with a 200 (its `seen` then applies).
    let mut accepted = vec![false; cases.len()];
    let as_cases: Vec<Case> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| Case {
            n: i,
            label: c.label.clone(),
            raw: c.raw.clone(),
            want: Want::Refused,
            half_close: false,
        })
        .collect();
    for (i, res) in run_cases(port, &as_cases, wait, 6) {
        let c = &cases[i];
        let out = match res {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("  {}: could not send: {e}", c.label));
                continue;
            }
        };
        let method = String::from_utf8_lossy(c.raw.split(|&b| b == b' ').next().unwrap_or(b"GET"))
            .into_owned();
        let (resps, garbage) = parse_responses(&out.bytes, &[&method, "POST"]);
        let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
        let mut why = Vec::new();
        if !c.want.contains(&statuses) {
            why.push(format!("statuses {statuses:?}, expected {:?}", c.want));
        }
        accepted[i] = statuses.contains(&200);
        if let Some(g) = garbage {
            why.push(g);
        }
        if !out.closed {
            why.push(format!("connection still open after {wait:?}"));
        }
        if !why.is_empty() {
            failures.push(format!(
                "  {}: {}\n      sent: {}",
                c.label,
                why.join("; "),
                escaped(&c.raw, 400)
            ));
        }
    }
    thread::sleep(Duration::from_millis(300));
    let rec = recorded(&srv);
    for j in &rec {
        let uri = jstr(j, "uri");
        let allowed = cases
            .iter()
            .zip(&accepted)
            .filter(|(_, &a)| a)
            .flat_map(|(c, _)| c.seen.iter())
            .any(|(u, _)| u == uri);
        if uri.contains("smuggled") || jstr(j, "path").contains("smuggled") || !allowed {
            failures.push(format!(
                "  the app saw {} {uri:?} (PATH_INFO {:?}, {}-byte body {:?})",
                jstr(j, "method"),
                jstr(j, "path"),
                j["body_len"].as_i64().unwrap_or(-1),
                jstr(j, "body_head")
            ));
        }
    }
    for (c, _) in cases.iter().zip(&accepted).filter(|(_, &a)| a) {
        for (uri, body) in &c.seen {
            let hits: Vec<&Json> = rec.iter().filter(|j| jstr(j, "uri") == uri).collect();
            let ok = hits.len() == 1
                && hits[0]["body_len"].as_i64() == Some(body.len() as i64)
                && jstr(hits[0], "body_sha256") == sha256_hex(body);
            if !ok {
                failures.push(format!(
                    "  {}: the app should have seen {uri} once with a {}-byte body, saw {} time(s): {:?}",
                    c.label,
                    body.len(),
                    hits.len(),
                    hits.iter().map(|j| (j["body_len"].as_i64(), jstr(j, "body_head").to_string())).collect::<Vec<_>>()
                ));
            }
        }
    }
    if !failures.is_empty() {
        srv.fail(format!(
            "{} smuggling problems ({} attempts):\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        ));
    }
}

// ---------------------------------------------------------------------------
// 4. slow clients
// ---------------------------------------------------------------------------

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_millis(500)))?;
    Ok(s)
}

/// One normal request on a fresh connection: its latency, or why it failed.
fn timed_get(port: u16, path: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let r = try_request_timeout(port, &get_req(port, path), Duration::from_secs(10))
        .map_err(|e| format!("{e} after {:?}", t.elapsed()))?;
    let took = t.elapsed();
    let want = format!("recorded GET {path}\n");
    if r.status != 200 || r.body != want.as_bytes() {
        return Err(format!("unexpected response after {took:?}: {r}"));
    }
    Ok(took)
}

#[derive(Default, Debug)]
struct AttackStats {
    ticks: u64,
    slowloris_open: usize,
    slowloris_dropped: usize,
    upload_bytes: u64,
    uploads_dropped: usize,
    reader_bytes: Vec<u64>,
    reader_errors: usize,
}

#[test]
fn slow_clients_do_not_starve_normal_clients() {
    let _g = serial();
    let srv = recorder_server(2, "", "max_body = \"1MiB\"\nbody_timeout = \"60s\"");
    let port = srv.port;
    let edge = srv
        .edge_pid()
        .unwrap_or_else(|| srv.fail("no edge pid in the log"));

    for i in 0..10 {
        if let Err(e) = timed_get(port, &format!("/warm/{i}")) {
            srv.fail(format!("warm-up GET: {e}"));
        }
    }
    let mut base: Vec<Duration> = (0..30)
        .map(|i| {
            timed_get(port, &format!("/normal/base/{i}"))
                .unwrap_or_else(|e| srv.fail(format!("baseline GET {i}: {e}")))
        })
        .collect();
    base.sort();
    let p90 = base[base.len() * 9 / 10];
    let limit = p90 * 2 + Duration::from_millis(50);
    let rss0 = vm_rss_kib(edge).unwrap_or_else(|| srv.fail("cannot read the edge's VmRSS"));
    eprintln!(
        "baseline: median {:?}, p90 {:?}, max {:?} -> limit {limit:?}; edge VmRSS {rss0} KiB",
        base[15], p90, base[29]
    );

    // The attackers: all sockets driven by one thread, one tick a second.
    let stop = Arc::new(AtomicBool::new(false));
    let mut slowloris = Vec::new();
    for i in 0..300 {
        let mut s =
            connect(port).unwrap_or_else(|e| srv.fail(format!("slowloris connect {i}: {e}")));
        s.write_all(
            format!("GET /slowloris/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n")
                .as_bytes(),
        )
        .unwrap_or_else(|e| srv.fail(format!("slowloris {i}: {e}")));
        slowloris.push(Some(s));
    }
    let mut uploads = Vec::new();
    for i in 0..10 {
        let mut s = connect(port).unwrap_or_else(|e| srv.fail(format!("upload connect {i}: {e}")));
        s.write_all(format!("POST /upload/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| srv.fail(format!("upload {i}: {e}")));
        uploads.push(Some(s));
    }
    let mut readers = Vec::new();
    for i in 0..5 {
        let mut s = connect(port).unwrap_or_else(|e| srv.fail(format!("reader connect {i}: {e}")));
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.write_all(format!("GET /big?size=5242880&r={i} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| srv.fail(format!("reader {i}: {e}")));
        readers.push(Some(s));
    }
    let stop2 = stop.clone();
    let attacker = thread::spawn(move || {
        let mut st = AttackStats {
            reader_bytes: vec![0; readers.len()],
            ..Default::default()
        };
        let line = b"X-Slow: y\r\n";
        let mut next_tick = Instant::now();
        let mut buf = [0u8; 1024];
        while !stop2.load(Ordering::SeqCst) {
            let k = (st.ticks as usize) % line.len();
            for s in slowloris.iter_mut() {
                if let Some(c) = s {
                    if c.write_all(&line[k..k + 1]).is_err() {
                        *s = None;
                        st.slowloris_dropped += 1;
                    }
                }
            }
            for s in uploads.iter_mut() {
                if let Some(c) = s {
                    if c.write_all(&[b'u'; 100]).is_err() {
                        *s = None;
                        st.uploads_dropped += 1;
                    } else {
                        st.upload_bytes += 100;
                    }
                }
            }
            for (i, s) in readers.iter_mut().enumerate() {
                if let Some(c) = s {
                    match c.read(&mut buf) {
                        Ok(0) => *s = None,
                        Ok(n) => st.reader_bytes[i] += n as u64,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => {
                            *s = None;
                            st.reader_errors += 1;
                        }
                    }
                }
            }
            st.ticks += 1;
            next_tick += Duration::from_secs(1);
            while Instant::now() < next_tick && !stop2.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        st.slowloris_open = slowloris.iter().filter(|s| s.is_some()).count();
        (st, slowloris, uploads, readers)
    });

    // Let the attack settle in, then the normal client.
    thread::sleep(Duration::from_millis(1500));
    let mut rss_peak = vm_rss_kib(edge).unwrap_or(0);
    let mut during = Vec::new();
    let mut failures = Vec::new();
    let t0 = Instant::now();
    for i in 0..30 {
        match timed_get(port, &format!("/normal/attack/{i}")) {
            Ok(d) => {
                if d > limit {
                    failures.push(format!("GET #{i} took {d:?} (limit {limit:?})"));
                }
                during.push(d);
            }
            Err(e) => failures.push(format!("GET #{i}: {e}")),
        }
        rss_peak = rss_peak.max(vm_rss_kib(edge).unwrap_or(0));
        thread::sleep(Duration::from_millis(300));
    }
    let attack_secs = t0.elapsed();
    rss_peak = rss_peak.max(vm_rss_kib(edge).unwrap_or(0));
    stop.store(true, Ordering::SeqCst);
    let (st, slowloris, uploads, readers) = attacker.join().expect("attacker thread panicked");
    drop((slowloris, uploads, readers));
    eprintln!(
        "during the attack ({attack_secs:?}): GET latencies {:?}; edge VmRSS peak {rss_peak} KiB (+{} KiB); {st:?}",
        during,
        rss_peak.saturating_sub(rss0)
    );
    if rss_peak > rss0 + 150 * 1024 {
        failures.push(format!(
            "edge VmRSS grew from {rss0} KiB to {rss_peak} KiB (limit +150 MiB)"
        ));
    }
    if st.reader_bytes.contains(&0) {
        failures.push(format!(
            "a slow reader got no data at all: {:?}",
            st.reader_bytes
        ));
    }
    // The edge buffers bodies in full: no incomplete upload, and no
    // incomplete head, ever reached a worker.
    let rec = recorded(&srv);
    let early: Vec<String> = rec
        .iter()
        .map(|j| jstr(j, "path").to_string())
        .filter(|p| p.starts_with("/upload/") || p.starts_with("/slowloris/"))
        .collect();
    if !early.is_empty() {
        failures.push(format!("incomplete requests reached the app: {early:?}"));
    }
    // Still healthy once the attackers are gone.
    if let Err(e) = timed_get(port, "/normal/after") {
        failures.push(format!("GET after the attack: {e}"));
    }
    if !failures.is_empty() {
        srv.fail(format!(
            "slow clients hurt a normal client (baseline p90 {p90:?}, limit {limit:?}):\n  {}",
            failures.join("\n  ")
        ));
    }
}

// ---------------------------------------------------------------------------
// 5. [limits] and trusted_proxies
// ---------------------------------------------------------------------------

/// Send `raw`, expect exactly one response with `status`, then a close;
/// returns the response and how long it took.
#[track_caller]
fn expect_refusal(
    srv: &Running,
    what: &str,
    raw: &[u8],
    status: u16,
    wait: Duration,
) -> (Response, Duration) {
    let out = raw_exchange(srv.port, raw, false, wait)
        .unwrap_or_else(|e| srv.fail(format!("{what}: {e}")));
    let (resps, garbage) = parse_responses(&out.bytes, &["POST"]);
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    if statuses != [status] || garbage.is_some() || !out.closed {
        srv.fail(format!(
            "{what}: expected {status} then close; got statuses {statuses:?} after {:?}, closed: {}, write error: {:?}, extra: {garbage:?}\nsent: {}",
            out.elapsed,
            out.closed,
            out.write_error,
            escaped(raw, 200)
        ));
    }
    (resps.into_iter().next().unwrap(), out.elapsed)
}

fn head_with(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

#[test]
fn limits_are_enforced_with_the_right_status() {
    let _g = serial();
    let srv = recorder_server(
        2,
        "",
        "max_body = \"64KiB\"\nmax_request_line = \"1KiB\"\nmax_header_size = \"8KiB\"\nmax_headers = 20\nbody_timeout = \"1s\"\nkeepalive_timeout = \"1s\"",
    );
    let port = srv.port;
    let w = Duration::from_secs(6);
    let ok = |path: &str, raw: &[u8]| {
        let r = try_request_timeout(port, raw, Duration::from_secs(10))
            .unwrap_or_else(|e| srv.fail(format!("{path}: {e}")));
        srv.assert_status(&r, 200, path);
    };

    // 414: request line.
    let p = format!("/lim/line-ok/{}", "a".repeat(900));
    ok("request line of ~930 bytes", &head_with(&p, ""));
    let p = format!("/lim/line-long/{}", "a".repeat(1100));
    let (r, _) = expect_refusal(&srv, "request line over 1 KiB", &head_with(&p, ""), 414, w);
    assert!(r.closes(), "414 without Connection: close:\n{r}");
    let q = format!("/lim/line-long-query?{}", "q".repeat(3000));
    expect_refusal(&srv, "query string over 1 KiB", &head_with(&q, ""), 414, w);

    // 431: head size and header count.
    ok(
        "7 KiB head",
        &head_with("/lim/head-ok", &format!("X-Big: {}\r\n", "b".repeat(7000))),
    );
    expect_refusal(
        &srv,
        "9 KiB header value",
        &head_with("/lim/head-big", &format!("X-Big: {}\r\n", "b".repeat(9000))),
        431,
        w,
    );
    let many: String = (0..12)
        .map(|i| format!("X-Many-{i}: {}\r\n", "m".repeat(800)))
        .collect();
    expect_refusal(
        &srv,
        "12 headers of 800 bytes (head over 8 KiB)",
        &head_with("/lim/head-many-big", &many),
        431,
        w,
    );
    // head_with adds Host and Connection.
    let h18: String = (0..18).map(|i| format!("X-H{i}: 1\r\n")).collect();
    ok("20 header fields", &head_with("/lim/count-ok", &h18));
    let h19: String = (0..19).map(|i| format!("X-H{i}: 1\r\n")).collect();
    expect_refusal(
        &srv,
        "21 header fields",
        &head_with("/lim/count-21", &h19),
        431,
        w,
    );
    let h100: String = (0..100).map(|i| format!("X-H{i}: 1\r\n")).collect();
    expect_refusal(
        &srv,
        "102 header fields",
        &head_with("/lim/count-102", &h100),
        431,
        w,
    );

    // 413: Content-Length over max_body, answered before the body is sent
    // (without the early answer this would be a 408 after body_timeout).
    let (_, took) = expect_refusal(
        &srv,
        "Content-Length 70000 > 64 KiB, body not sent",
        b"POST /lim/cl-big HTTP/1.1\r\nHost: h\r\nContent-Length: 70000\r\n\r\n",
        413,
        w,
    );
    assert!(
        took < Duration::from_millis(900),
        "413 took {took:?}: not before reading the body"
    );
    let exact = vec![b'e'; 65536];
    ok(
        "body of exactly 64 KiB",
        &post_req(
            port,
            "/lim/cl-exact",
            "application/octet-stream",
            &exact,
            true,
        ),
    );
    // Chunked: 413 as soon as the limit is passed, without the last chunk.
    let mut raw =
        b"POST /lim/chunked-big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(b"4000\r\n");
        raw.extend_from_slice(&[b'c'; 0x4000]);
        raw.extend_from_slice(b"\r\n");
    }
    let (_, took) = expect_refusal(
        &srv,
        "chunked body passing 64 KiB (no last chunk)",
        &raw,
        413,
        w,
    );
    assert!(
        took < Duration::from_millis(900),
        "chunked 413 took {took:?}"
    );
    ok(
        "chunked body of exactly 64 KiB",
        &chunked_post_req(
            port,
            "/lim/chunked-exact",
            "application/octet-stream",
            &[&exact[..32768], &exact[32768..]],
            true,
        ),
    );

    // 408: a body that stalls, in total and between reads.
    let (_, took) = expect_refusal(
        &srv,
        "Content-Length body stalls",
        b"POST /lim/stall-cl HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789",
        408,
        w,
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "408 after {took:?} with body_timeout 1s"
    );
    let (_, took) = expect_refusal(&srv, "chunked body stalls", b"POST /lim/stall-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 408, w);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "chunked 408 after {took:?}"
    );
    // A trickle (a byte every 200 ms) never stalls between reads, but the
    // total passes 1 s long before 100 bytes are in.
    let mut s = connect(port).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"POST /lim/trickle HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(8) {
        if s.write_all(b"x").is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let took = t.elapsed();
    let (resps, _) = parse_responses(&got, &["POST"]);
    if resps.first().map(|r| r.status) != Some(408) || took > Duration::from_secs(4) {
        srv.fail(format!(
            "trickled body: expected 408 within ~1 s, got {:?} after {took:?}",
            resps.first().map(|r| r.status)
        ));
    }
    drop(s);

    // keepalive_timeout: an idle keep-alive connection is closed after ~1 s,
    // one reused sooner still works.
    let mut c = Conn::open(port).unwrap();
    let r = c
        .get("/lim/ka/1")
        .unwrap_or_else(|e| srv.fail(format!("keep-alive GET: {e}")));
    srv.assert_status(&r, 200, "keep-alive GET 1");
    thread::sleep(Duration::from_millis(400));
    let r = c
        .get("/lim/ka/2")
        .unwrap_or_else(|e| srv.fail(format!("keep-alive GET after 0.4 s idle: {e}")));
    srv.assert_status(&r, 200, "keep-alive GET 2 (0.4 s idle)");
    let t = Instant::now();
    let closed = c.closed_by_peer(Duration::from_secs(5));
    let idle = t.elapsed();
    if !closed || idle < Duration::from_millis(700) || idle > Duration::from_secs(3) {
        srv.fail(format!(
            "keepalive_timeout 1s: idle connection closed: {closed} after {idle:?}"
        ));
    }

    // Nothing refused reached the app.
    thread::sleep(Duration::from_millis(200));
    let seen: Vec<String> = recorded(&srv)
        .iter()
        .map(|j| jstr(j, "path").to_string())
        .collect();
    let refused = [
        "line-long",
        "head-big",
        "head-many-big",
        "count-21",
        "count-102",
        "cl-big",
        "chunked-big",
        "stall",
        "trickle",
    ];
    let leaked: Vec<&String> = seen
        .iter()
        .filter(|p| refused.iter().any(|r| p.contains(r)))
        .collect();
    if !leaked.is_empty() {
        srv.fail(format!("refused requests reached the app: {leaked:?}"));
    }
    for want in [
        "/lim/head-ok",
        "/lim/count-ok",
        "/lim/cl-exact",
        "/lim/chunked-exact",
        "/lim/ka/2",
    ] {
        if !seen.iter().any(|p| p == want) {
            srv.fail(format!("{want} was answered but not recorded: {seen:?}"));
        }
    }
}

/// Heads far beyond max_header_size / max_headers (past what pingora's own
/// parser takes: 1 MiB, 256 fields) are still refused, and the
/// connection closed. RFC 9110 allows 400 as well as 431 here.
#[test]
fn oversized_heads_beyond_the_parser_limits_are_refused() {
    let _g = serial();
    let srv = recorder_server(1, "", "max_header_size = \"8KiB\"\nmax_headers = 20");
    let w = Duration::from_secs(8);
    let huge = head_with(
        "/lim/huge",
        &format!("X-Huge: {}\r\n", "h".repeat(2 * 1024 * 1024)),
    );
    let h300: String = (0..300).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let many = head_with("/lim/300", &h300);
    for (what, raw) in [("2 MiB head", huge), ("300 header fields", many)] {
        let out = raw_exchange(srv.port, &raw, false, w)
            .unwrap_or_else(|e| srv.fail(format!("{what}: {e}")));
        let (resps, _) = parse_responses(&out.bytes, &["GET"]);
        let status = resps.first().map(|r| r.status);
        let refused = matches!(status, Some(400) | Some(431)) || (status.is_none() && out.reset);
        if !out.closed || !refused {
            srv.fail(format!(
                "{what}: expected 431 (or 400) and a close, got {status:?}, closed {}",
                out.closed
            ));
        }
        eprintln!("{what}: {status:?}");
    }
    thread::sleep(Duration::from_millis(200));
    assert!(
        recorded(&srv).is_empty(),
        "an oversized head reached the app"
    );
}

/// max_header_size is documented without an upper bound: a head below the
/// configured limit is accepted even past 1 MiB.
#[test]
fn max_header_size_above_one_mib_is_refused_by_check() {
    // pingora's parser stops at 1 MiB, so a larger limit could never be
    // honoured: the config refuses it instead of silently ignoring it.
    let _g = serial();
    let site = Site::new().app("recorder.py").config(&recorder_config(
        1,
        "",
        "max_header_size = \"4MiB\"",
    ));
    let out = site.check();
    assert!(
        !out.success() && out.stderr.contains("limits.max_header_size"),
        "check should refuse max_header_size = 4MiB naming the key; got {:?}\n{}",
        out.code(),
        out.stderr
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let _g = serial();
    let srv = recorder_server(2, "", "rate = \"2r/s\"\nburst = 1");
    let port = srv.port;
    let w = Duration::from_secs(5);
    // Five quick requests: the bucket holds 1 + burst = 2.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let out =
            raw_exchange(port, &head_with(&format!("/rate/quick/{i}"), ""), false, w).unwrap();
        let (resps, _) = parse_responses(&out.bytes, &["GET"]);
        let r = resps
            .into_iter()
            .next()
            .unwrap_or_else(|| srv.fail(format!("quick request {i}: no response")));
        if r.status == 429 {
            let ra: Option<u64> = r.header("retry-after").and_then(|v| v.trim().parse().ok());
            if !matches!(ra, Some(1..=5)) {
                srv.fail(format!("429 without a sensible Retry-After:\n{r}"));
            }
            if !r.closes() || !out.closed {
                srv.fail(format!("429 did not close the connection:\n{r}"));
            }
        }
        statuses.push(r.status);
    }
    let oks = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    if statuses[..2] != [200, 200] || limited < 2 || oks + limited != 5 {
        srv.fail(format!(
            "rate 2r/s burst 1, five quick requests: {statuses:?}"
        ));
    }
    // While limited: refused before the body is read (no 408 wait), and a
    // client-sent X-Forwarded-For (no trusted proxies) changes nothing.
    let (_, took) = expect_refusal(
        &srv,
        "POST while limited, body not sent",
        b"POST /rate/limited-post HTTP/1.1\r\nHost: h\r\nContent-Length: 50000\r\n\r\n",
        429,
        w,
    );
    assert!(took < Duration::from_millis(400), "429 took {took:?}");
    expect_refusal(
        &srv,
        "X-Forwarded-For from an untrusted peer",
        &head_with("/rate/xff", "X-Forwarded-For: 10.9.9.9\r\n"),
        429,
        w,
    );
    // After a pause the client is served again.
    thread::sleep(Duration::from_millis(1300));
    let r = try_request_timeout(port, &head_with("/rate/later", ""), w).unwrap();
    srv.assert_status(&r, 200, "request after waiting");
    thread::sleep(Duration::from_millis(200));
    let seen: Vec<String> = recorded(&srv)
        .iter()
        .map(|j| jstr(j, "path").to_string())
        .collect();
    let expected: usize = oks + 1;
    if seen.len() != expected
        || seen
            .iter()
            .any(|p| p.contains("limited") || p.contains("xff"))
    {
        srv.fail(format!(
            "the app saw {seen:?}; expected only the {expected} answered requests"
        ));
    }
}

#[test]
fn trusted_proxies_off_replaces_forwarded_headers() {
    let _g = serial();
    let srv = recorder_server(1, "trusted_proxies = []", "");
    let r = srv.request(&head_with(
        "/tp/off",
        "X-Forwarded-For: 6.6.6.6, 7.7.7.7\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\n",
    ));
    srv.assert_status(&r, 200, "GET with X-Forwarded-*");
    let rec = recorded(&srv);
    let j = rec.last().unwrap_or_else(|| srv.fail("nothing recorded"));
    let got = (
        jstr(j, "remote_addr"),
        jstr(j, "xff"),
        jstr(j, "scheme"),
        jstr(j, "xfp"),
    );
    if got != ("127.0.0.1", "127.0.0.1", "http", "http") {
        srv.fail(format!("untrusted X-Forwarded-* believed: (REMOTE_ADDR, X-Forwarded-For, url_scheme, X-Forwarded-Proto) = {got:?}"));
    }
}

#[test]
fn trusted_proxies_on_believes_forwarded_headers() {
    let _g = serial();
    let srv = recorder_server(
        1,
        "trusted_proxies = [\"127.0.0.1\"]",
        "rate = \"2r/s\"\nburst = 1",
    );
    let port = srv.port;
    // (X-Forwarded-* lines, expected REMOTE_ADDR, expected url_scheme)
    let cases: &[(&str, &str, &str)] = &[
        ("X-Forwarded-For: 203.0.113.7\r\n", "203.0.113.7", "http"),
        (
            "X-Forwarded-For: 198.51.100.1, 203.0.113.8\r\n",
            "203.0.113.8",
            "http",
        ),
        (
            "X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n",
            "203.0.113.9",
            "http",
        ),
        (
            "X-Forwarded-For: 198.51.100.2\r\nX-Forwarded-For: 203.0.113.10\r\n",
            "203.0.113.10",
            "http",
        ),
        ("X-Forwarded-For: 2001:db8::1\r\n", "2001:db8::1", "http"),
        (
            "X-Forwarded-For: 203.0.113.11\r\nX-Forwarded-Proto: https\r\n",
            "203.0.113.11",
            "https",
        ),
        (
            "X-Forwarded-For: 203.0.113.12\r\nX-Forwarded-Proto: HTTP\r\n",
            "203.0.113.12",
            "http",
        ),
        (
            "X-Forwarded-For: 203.0.113.13\r\nX-Forwarded-Proto: gopher\r\n",
            "203.0.113.13",
            "http",
        ),
        ("X-Forwarded-For: not-an-ip\r\n", "127.0.0.1", "http"),
        ("X-Forwarded-Proto: https\r\n", "127.0.0.1", "https"),
    ];
    let mut failures = Vec::new();
    for (i, (xf, addr, scheme)) in cases.iter().enumerate() {
        let path = format!("/tp/on/{i}");
        let r = srv.request(&head_with(&path, xf));
        if r.status != 200 {
            failures.push(format!("{xf:?}: status {}", r.status));
            continue;
        }
        let rec = recorded(&srv);
        match rec.iter().find(|j| jstr(j, "path") == path) {
            Some(j) if (jstr(j, "remote_addr"), jstr(j, "scheme")) == (*addr, *scheme) => {}
            Some(j) => failures.push(format!(
                "{xf:?}: REMOTE_ADDR {:?} url_scheme {:?}, expected {addr:?} {scheme:?}",
                jstr(j, "remote_addr"),
                jstr(j, "scheme")
            )),
            None => failures.push(format!("{xf:?}: not recorded")),
        }
    }
    // The rate limit counts the forwarded client, not the proxy.
    let mut a = Vec::new();
    for i in 0..4 {
        let out = raw_exchange(
            port,
            &head_with(&format!("/tp/rate/a{i}"), "X-Forwarded-For: 192.0.2.1\r\n"),
            false,
            Duration::from_secs(5),
        )
        .unwrap();
        a.push(
            parse_responses(&out.bytes, &["GET"])
                .0
                .first()
                .map(|r| r.status),
        );
    }
    let b = try_request_timeout(
        port,
        &head_with("/tp/rate/b", "X-Forwarded-For: 192.0.2.2\r\n"),
        Duration::from_secs(5),
    )
    .map(|r| r.status)
    .ok();
    if !a.contains(&Some(429)) || b != Some(200) {
        failures.push(format!(
            "per-client rate limit behind a trusted proxy: client A {a:?}, then client B {b:?}"
        ));
    }
    if !failures.is_empty() {
        srv.fail(format!(
            "trusted_proxies = [\"127.0.0.1\"]:\n  {}",
            failures.join("\n  ")
        ));
    }
}

#[test]
fn route_limits_override_the_site_wide_ones() {
    let _g = serial();
    let srv = recorder_server(
        2,
        "",
        "max_body = \"1KiB\"\nrate = \"1r/m\"\nburst = 2\n\n\
         [[limits.route]]\npath = \"/upload/\"\nmax_body = \"64KiB\"\nrate = \"\"\n\n\
         [[limits.route]]\npath = \"/upload/tiny/\"\nmax_body = \"10\"\n",
    );
    let body = vec![b'x'; 8 << 10];
    let post = |path: &str| {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        srv.request(&raw)
    };
    // 8 KiB: over the site's 1 KiB, within /upload/'s 64 KiB (decoded
    // path: a percent-encoded prefix gets the same limits).
    for path in ["/upload/a", "/%75pload/b", "/upload/c", "/upload/d"] {
        let r = post(path);
        srv.assert_status(
            &r,
            200,
            &format!("8 KiB POST {path} (route max_body 64KiB, no rate)"),
        );
    }
    let r = post("/upload/tiny/x");
    srv.assert_status(
        &r,
        413,
        "8 KiB POST to /upload/tiny/ (route max_body 10 bytes)",
    );
    let r = post("/elsewhere");
    srv.assert_status(
        &r,
        413,
        "8 KiB POST outside the routes (site max_body 1 KiB)",
    );
    // The site-wide rate (1 a minute, burst 2) applies outside /upload/ only:
    // the 413 above took one token, two more GETs get through at most.
    let statuses: Vec<u16> = (0..3)
        .map(|i| srv.get(&format!("/page/{i}")).status)
        .collect();
    if !statuses.contains(&429) {
        srv.fail(format!(
            "site-wide rate not applied outside the route: {statuses:?}"
        ));
    }
    let r = post("/upload/e");
    srv.assert_status(
        &r,
        200,
        "/upload/ is exempt from the site-wide rate (rate = \"\")",
    );
}
