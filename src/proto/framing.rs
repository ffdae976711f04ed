//! The edge's own HTTP/1 framing check, run on the raw bytes of every
//! connection *below* pingora's parser (see `guard.rs`).
//!
//! Why: pingora's parser is lenient where RFC 9112 is not (chunk sizes with
//! trailing spaces, nameless chunk extensions, trailers without a colon,
//! spaces inside the request target, unknown versions answered 400). A
//! lenient reader facing the internet directly is how request smuggling
//! starts: whatever it accepts that a front proxy reads differently can
//! desynchronise the two. So every byte pingora sees has first been framed
//! here by the strict grammar, and anything ambiguous is refused before
//! pingora could read it at all.
//!
//! This module is pure (bytes in, decisions out) so the fuzz targets and
//! unit tests drive it directly. It decides message *boundaries* and the
//! syntax that governs them; header semantics (Host rules, duplicate
//! headers, limits per header) stay in `strict.rs`, on the parsed head.

use super::length::{self, trim_ows};
/// What the caller does with the unchecked bytes it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next `n` bytes are well-framed: hand them on.
    Pass(usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
    /// Hand on the next `n` bytes (a complete head), then nothing more: the
    /// head is well-formed but its body cannot be framed safely (e.g. a
    /// transfer coding other than chunked). `strict.rs` answers it and
    /// closes the connection.
    StopAfter(usize),
    /// A head that must be answered here with this status, then closed.
    Refuse(u16, &'static str),
    /// A malformed body: the read fails (the request path answers 400).
    BadBody(&'static str),
}

/// The limits the framing check enforces on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_request_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
}

#[derive(Debug)]
enum Phase {
    Head,
    /// Bytes left of a Content-Length body.
    Fixed(u64),
    Chunked(Chunk),
    /// HTTP/2 (prior knowledge): its own framing, checked by the h2 codec.
    Opaque,
    /// After `StopAfter`.
    Stopped,
}

/// Where the chunked-body reader is (RFC 9112 §7.1 grammar, no leniency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size; `digits` read so far.
    Size {
        digits: u8,
        value: u64,
    },
    /// Whitespace after the size: only legal before a `;`.
    BwsBeforeSemi {
        value: u64,
    },
    ExtNameStart {
        value: u64,
    },
    ExtName {
        value: u64,
    },
    AfterExtName {
        value: u64,
    },
    ExtValueStart {
        value: u64,
    },
    ExtToken {
        value: u64,
    },
    ExtQuoted {
        value: u64,
    },
    ExtQuotedEscape {
        value: u64,
    },
    AfterExtValue {
        value: u64,
    },
    /// CR seen at the end of a size line.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    /// The final CRLF is in: the message is complete.
    Done,
}

/// Longest chunk-size line (size plus extensions) accepted, as nginx's
/// parser bounds extensions rather than buffering them without limit.
const MAX_CHUNK_LINE: usize = 4096;
/// Empty lines tolerated before a request line (RFC 9112 §2.2 asks servers
/// to ignore at least one).
const MAX_LEADING_EMPTY_LINES: u8 = 8;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug)]
pub struct Framer {
    phase: Phase,
    limits: HeadLimits,
    /// Bytes of the current chunk-size line / trailer section so far.
    line_len: usize,
    trailer_len: usize,
    empty_lines: u8,
    /// Nothing has been framed on this connection yet (the h2c preface may
    /// only come first).
    first: bool,
    h2c: bool,
    /// Request line of the current message, for logging a refusal.
    request_line: Vec<u8>,
    /// How much of the pending head has been scanned, and where its
    /// request line ends.
    scanned: usize,
    line_end: Option<usize>,
    heads: u64,
    /// Where, in the head just passed, a `HTTP/1.x` (x > 1) minor digit is
    /// to be written as `1`.
    version_fix: Option<usize>,
}

impl Framer {
    pub fn new(limits: HeadLimits, h2c: bool) -> Self {
        Framer {
            phase: Phase::Head,
            limits,
            line_len: 0,
            trailer_len: 0,
            empty_lines: 0,
            first: true,
            h2c,
            request_line: Vec::new(),
            scanned: 0,
            line_end: None,
            heads: 0,
            version_fix: None,
        }
    }

    /// A framer for a connection that is not HTTP/1 (h2 negotiated by ALPN).
    pub fn opaque() -> Self {
        let mut f = Framer::new(
            HeadLimits {
                max_request_line: 0,
                max_head: 0,
                max_headers: 0,
            },
            false,
        );
        f.phase = Phase::Opaque;
        f
    }

    /// After a head is passed: the offset (from the head's first byte) of
    /// a version digit the caller must set to `1` (see `parse_head`).
    pub fn take_version_fix(&mut self) -> Option<usize> {
        self.version_fix.take()
    }

    /// Request heads completed so far on this connection.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Waiting for (the rest of) a request head: the header timeout runs.
    pub fn in_head(&self) -> bool {
        matches!(self.phase, Phase::Head)
    }

    pub fn is_opaque(&self) -> bool {
        matches!(self.phase, Phase::Opaque)
    }

    /// Bytes of a Content-Length body still expected (reads can go
    /// straight to the caller's buffer for these).
    pub fn fixed_left(&self) -> Option<u64> {
        match self.phase {
            Phase::Fixed(n) => Some(n),
            _ => None,
        }
    }

    /// A request body has started and not ended: the client may still be
    /// sending it.
    pub fn body_unfinished(&self) -> bool {
        matches!(self.phase, Phase::Fixed(_) | Phase::Chunked(_))
    }

    /// Consumes `n` bytes of a Content-Length body read directly.
    pub fn take_fixed(&mut self, n: usize) {
        if let Phase::Fixed(left) = &mut self.phase {
            *left -= (n as u64).min(*left);
            if *left == 0 {
                self.phase = Phase::Head;
            }
        }
    }

    /// The request line of the message being refused (for the access log).
    pub fn request_line(&self) -> &[u8] {
        &self.request_line
    }

    /// Looks at `buf`, the bytes after everything already passed on.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        if buf.is_empty() {
            return Step::NeedMore;
        }
        match self.phase {
            Phase::Opaque => Step::Pass(buf.len()),
            Phase::Stopped => Step::NeedMore,
            Phase::Head => self.head(buf),
            Phase::Fixed(left) => {
                let n = (buf.len() as u64).min(left) as usize;
                self.take_fixed(n);
                Step::Pass(n)
            }
            Phase::Chunked(state) => self.chunked(state, buf),
        }
    }

    fn head(&mut self, buf: &[u8]) -> Step {
        if self.first && self.h2c && self.scanned == 0 {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] == H2_PREFACE[..n] {
                if n < H2_PREFACE.len() {
                    return Step::NeedMore;
                }
                self.phase = Phase::Opaque;
                return Step::Pass(buf.len());
            }
        }
        if self.scanned == 0 {
            // Empty lines before a request line are skipped by pingora too.
            if buf.starts_with(b"\r\n") {
                self.empty_lines += 1;
                if self.empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Step::Refuse(400, "too many empty lines before the request");
                }
                return Step::Pass(2);
            }
            if buf == b"\r" {
                return Step::NeedMore;
            }
        }
        // Scan only what is new since the last call (a head trickling in
        // byte by byte must not cost quadratic time), plus the last byte: a
        // CR whose follower had not arrived yet.
        // Only CR and LF matter here: memchr jumps to them.
        let mut end = None;
        let from = self.scanned.saturating_sub(1);
        for i in memchr::memchr2_iter(b'\r', b'\n', &buf[from..]).map(|i| i + from) {
            match buf[i] {
                b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                    // A bare LF or CR would make the line ends (and so the
                    // head's end) depend on the reader: refuse at once.
                    return Step::Refuse(400, "bare LF in the request head");
                }
                b'\n' => {
                    self.line_end.get_or_insert(i - 1);
                    if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" {
                        end = Some(i - 3);
                        break;
                    }
                }
                b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                    return Step::Refuse(400, "bare CR in the request head");
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        // (A CR last may be the start of the line's CRLF.)
        let line_len = self
            .line_end
            .unwrap_or(buf.len() - usize::from(buf.ends_with(b"\r")));
        if line_len > self.limits.max_request_line {
            return Step::Refuse(414, "request line too long");
        }
        let Some(end) = end else {
            if buf.len() > self.limits.max_head {
                return Step::Refuse(431, "request head too large");
            }
            return Step::NeedMore;
        };
        self.scanned = 0;
        self.line_end = None;
        self.heads += 1;
        let head_len = end + 4;
        if head_len > self.limits.max_head {
            return Step::Refuse(431, "request head too large");
        }
        self.first = false;
        self.empty_lines = 0;
        match self.parse_head(&buf[..end]) {
            Err((status, why)) => Step::Refuse(status, why),
            Ok(Body::Fixed(0)) => {
                self.phase = Phase::Head;
                Step::Pass(head_len)
            }
            Ok(Body::Fixed(n)) => {
                self.phase = Phase::Fixed(n);
                Step::Pass(head_len)
            }
            Ok(Body::Chunked) => {
                self.phase = Phase::Chunked(Chunk::Size {
                    digits: 0,
                    value: 0,
                });
                self.line_len = 0;
                self.trailer_len = 0;
                Step::Pass(head_len)
            }
            Ok(Body::Unframed) => {
                self.phase = Phase::Stopped;
                Step::StopAfter(head_len)
            }
            Ok(Body::Upgrade) => {
                self.phase = Phase::Opaque;
                Step::Pass(head_len)
            }
        }
    }

    /// The request line and header lines of a head (without its final
    /// CRLFCRLF; line ends are known to be CRLF).
    fn parse_head(&mut self, head: &[u8]) -> Result<Body, (u16, &'static str)> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = lines.next().unwrap_or_default();
        // Kept for refusals' messages; its buffer is reused.
        self.request_line.clear();
        self.request_line.extend_from_slice(line);
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err((400, "malformed request line"));
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err((400, "invalid method"));
        }
        if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
            return Err((400, "malformed request target"));
        }
        match version {
            b"HTTP/1.1" | b"HTTP/1.0" => {}
            // RFC 9110 §2.5: a later HTTP/1.x is answered as the highest
            // 1.x we speak. Its minor digit is rewritten before pingora
            // (which knows only 1.0 and 1.1) reads the line.
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
                self.version_fix = Some(line.len() - 1);
            }
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                return Err((505, "HTTP version not supported"))
            }
            _ => return Err((400, "malformed HTTP version")),
        }
        let mut content_length: Option<u64> = None;
        let mut codings: Vec<&[u8]> = Vec::new();
        let mut websocket = false;
        let mut count = 0usize;
        for line in lines {
            count += 1;
            if count > self.limits.max_headers {
                return Err((431, "too many header fields"));
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err((400, "header line without a colon"));
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                // Includes obs-fold (a line starting with whitespace) and
                // whitespace before the colon (RFC 9112 §5.1).
                return Err((400, "invalid header name"));
            }
            if value.iter().any(|&b| !is_field_byte(b)) {
                return Err((400, "control character in a header value"));
            }
            let value = trim_ows(value);
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length =
                    Some(length::add_field(content_length, value).map_err(|e| (400, e.reason()))?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                codings.push(value);
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                websocket |= value
                    .split(|&b| b == b',')
                    .any(|t| trim_ows(t).eq_ignore_ascii_case(b"websocket"));
            }
        }
        if !codings.is_empty() && content_length.is_some() {
            // RFC 9112 §6.1: a smuggling attempt or a broken client either way.
            return Err((400, "both Transfer-Encoding and Content-Length"));
        }
        let http11 = version == b"HTTP/1.1";
        Ok(match transfer_coding(codings) {
            Coding::Identity if websocket && http11 && content_length.unwrap_or(0) == 0 => {
                Body::Upgrade
            }
            Coding::Identity => Body::Fixed(content_length.unwrap_or(0)),
            Coding::Chunked => Body::Chunked,
            // The head is passed on and answered with the reason by the
            // request path (`strict::check`), which asks this function.
            Coding::Refused(..) => Body::Unframed,
        })
    }

    fn chunked(&mut self, mut state: Chunk, buf: &[u8]) -> Step {
        let mut i = 0;
        while i < buf.len() {
            if let Chunk::Data { left } = state {
                let n = (buf.len() - i).min(left.min(usize::MAX as u64) as usize);
                i += n;
                state = if left == n as u64 {
                    Chunk::DataCr
                } else {
                    Chunk::Data {
                        left: left - n as u64,
                    }
                };
                continue;
            }
            let b = buf[i];
            i += 1;
            if matches!(
                state,
                Chunk::TrailerLineStart
                    | Chunk::TrailerName
                    | Chunk::TrailerValue
                    | Chunk::TrailerLf
                    | Chunk::EndLf
            ) {
                self.trailer_len += 1;
                if self.trailer_len > self.limits.max_head {
                    return self.bad_at(state, i - 1, "trailer section too large");
                }
            } else if !matches!(state, Chunk::DataCr | Chunk::DataLf) {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return self.bad_at(state, i - 1, "chunk-size line too long");
                }
            }
            let next = match Chunk::step(state, b) {
                Ok(next) => next,
                Err(why) => return self.bad_at(state, i - 1, why),
            };
            match (state, next) {
                (_, Chunk::Done) => {
                    self.phase = Phase::Head;
                    return Step::Pass(i);
                }
                (Chunk::SizeLf { .. }, Chunk::TrailerLineStart) => self.trailer_len = 0,
                (Chunk::DataLf, _) => self.line_len = 0,
                _ => {}
            }
            state = next;
        }
        self.phase = Phase::Chunked(state);
        Step::Pass(buf.len())
    }

    /// A malformed body byte at `at`: the bytes before it are still
    /// handed on (so the outcome does not depend on how reads split the
    /// input), the failure comes with the next look.
    fn bad_at(&mut self, state: Chunk, at: usize, why: &'static str) -> Step {
        if at > 0 {
            self.phase = Phase::Chunked(state);
            Step::Pass(at)
        } else {
            Step::BadBody(why)
        }
    }
}

enum Body {
    Fixed(u64),
    Chunked,
    Unframed,
    /// A bodiless WebSocket handshake: if the server answers 101, what
    /// follows is frames, not HTTP (the edge closes the connection after
    /// any other answer).
    Upgrade,
}

/// What a request's Transfer-Encoding fields make of its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Coding {
    /// No Transfer-Encoding: Content-Length (or nothing) frames the body.
    Identity,
    Chunked,
    /// Answered with this status and reason, then the connection closes.
    Refused(u16, &'static str),
}

/// Transfer-Encoding (RFC 9112 §6.1): exactly one field, and exactly
/// `chunked`. Anything else is refused rather than guessed at: codings
/// stacked under chunked (501, corral does not decode them) and oddities
/// like `chunked, chunked` or `identity, chunked` (400), which other HTTP
/// parsers read differently (request smuggling). `values` are the fields'
/// values, in order.
pub fn transfer_coding<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Coding {
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Coding::Identity;
    };
    if values.next().is_some() {
        return Coding::Refused(400, "more than one Transfer-Encoding header");
    }
    let codings: Vec<&[u8]> = value.split(|&b| b == b',').map(trim_ows).collect();
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    let known = |c: &&[u8]| {
        [
            &b"gzip"[..],
            b"x-gzip",
            b"deflate",
            b"compress",
            b"br",
            b"zstd",
        ]
        .iter()
        .any(|k| c.eq_ignore_ascii_case(k))
    };
    match codings.split_last() {
        Some((last, [])) if chunked(last) => Coding::Chunked,
        Some((last, before)) if chunked(last) && before.iter().all(known) => {
            Coding::Refused(501, "transfer codings other than chunked are not supported")
        }
        _ => Coding::Refused(400, "Transfer-Encoding must be exactly \"chunked\""),
    }
}

impl Chunk {
    /// One byte of the chunked grammar (RFC 9112 §7.1, no leniency): the
    /// next state, or why the byte cannot be there.
    fn step(self, b: u8) -> Result<Chunk, &'static str> {
        let state = self;
        Ok(match (state, b) {
            (Chunk::Size { digits, value }, b) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err("chunk size too large");
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunk::Size {
                    digits: digits + 1,
                    value: value << 4 | d,
                }
            }
            (Chunk::Size { digits: 0, .. }, _) => return Err("missing chunk size"),
            (Chunk::Size { value, .. }, b'\r') => Chunk::SizeLf { value },
            (Chunk::Size { value, .. }, b';') => Chunk::ExtNameStart { value },
            (Chunk::Size { value, .. } | Chunk::BwsBeforeSemi { value }, b' ' | b'\t') => {
                Chunk::BwsBeforeSemi { value }
            }
            (Chunk::BwsBeforeSemi { value }, b';') => Chunk::ExtNameStart { value },
            (Chunk::ExtNameStart { value }, b' ' | b'\t') => Chunk::ExtNameStart { value },
            (Chunk::ExtNameStart { value } | Chunk::ExtName { value }, b) if is_tchar(b) => {
                Chunk::ExtName { value }
            }
            (Chunk::ExtName { value } | Chunk::AfterExtName { value }, b' ' | b'\t') => {
                Chunk::AfterExtName { value }
            }
            (Chunk::ExtName { value } | Chunk::AfterExtName { value }, b'=') => {
                Chunk::ExtValueStart { value }
            }
            (Chunk::ExtValueStart { value }, b' ' | b'\t') => Chunk::ExtValueStart { value },
            (Chunk::ExtValueStart { value }, b'"') => Chunk::ExtQuoted { value },
            (Chunk::ExtValueStart { value } | Chunk::ExtToken { value }, b) if is_tchar(b) => {
                Chunk::ExtToken { value }
            }
            (Chunk::ExtQuoted { value }, b'"') => Chunk::AfterExtValue { value },
            (Chunk::ExtQuoted { value }, b'\\') => Chunk::ExtQuotedEscape { value },
            (Chunk::ExtQuoted { value }, b) if is_field_byte(b) => Chunk::ExtQuoted { value },
            (Chunk::ExtQuotedEscape { value }, b) if is_field_byte(b) => Chunk::ExtQuoted { value },
            (Chunk::ExtToken { value } | Chunk::AfterExtValue { value }, b' ' | b'\t') => {
                Chunk::AfterExtValue { value }
            }
            (
                Chunk::ExtName { value }
                | Chunk::AfterExtName { value }
                | Chunk::ExtToken { value }
                | Chunk::AfterExtValue { value },
                b';',
            ) => Chunk::ExtNameStart { value },
            (
                Chunk::ExtName { value }
                | Chunk::AfterExtName { value }
                | Chunk::ExtToken { value }
                | Chunk::AfterExtValue { value },
                b'\r',
            ) => Chunk::SizeLf { value },
            (Chunk::SizeLf { value: 0 }, b'\n') => Chunk::TrailerLineStart,
            (Chunk::SizeLf { value }, b'\n') => Chunk::Data { left: value },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size {
                digits: 0,
                value: 0,
            },
            (Chunk::TrailerLineStart, b'\r') => Chunk::EndLf,
            (Chunk::TrailerLineStart | Chunk::TrailerName, b) if is_tchar(b) => Chunk::TrailerName,
            (Chunk::TrailerName, b':') => Chunk::TrailerValue,
            (Chunk::TrailerValue, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerValue, b) if is_field_byte(b) => Chunk::TrailerValue,
            (Chunk::TrailerLf, b'\n') => Chunk::TrailerLineStart,
            // The message is complete: what follows is the next head.
            (Chunk::EndLf, b'\n') => Chunk::Done,
            (Chunk::Size { .. } | Chunk::BwsBeforeSemi { .. }, _) => {
                return Err("malformed chunk size")
            }
            (Chunk::DataCr | Chunk::DataLf, _) => return Err("chunk data not followed by CRLF"),
            (Chunk::SizeLf { .. } | Chunk::TrailerLf | Chunk::EndLf, _) => {
                return Err("bare CR in a chunked body")
            }
            (Chunk::TrailerLineStart | Chunk::TrailerName | Chunk::TrailerValue, _) => {
                return Err("malformed trailer field")
            }
            _ => return Err("malformed chunk extension"),
        })
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// RFC 9110 tchar as a table: every byte of every method and field name
/// is checked, and a search of the 15 symbols cost more than the rest.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

/// Bytes allowed in a field value: HTAB, SP, VCHAR, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tchar_table_is_rfc_9110s_tchar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "byte {b:#04x}");
        }
    }

    fn framer() -> Framer {
        framer_h2c(false)
    }

    fn framer_h2c(h2c: bool) -> Framer {
        Framer::new(
            HeadLimits {
                max_request_line: 8192,
                max_head: 65536,
                max_headers: 100,
            },
            h2c,
        )
    }

    /// Feeds `input` in pieces of `piece` bytes, as a caller holding
    /// unchecked bytes would; returns how many bytes were passed and the
    /// final step that was not a Pass.
    fn run(input: &[u8], piece: usize) -> (usize, Step) {
        let mut f = framer();
        let mut held: Vec<u8> = Vec::new();
        let mut passed = 0;
        let mut fed = 0;
        loop {
            match f.step(&held) {
                Step::Pass(n) => {
                    passed += n;
                    held.drain(..n);
                }
                Step::NeedMore => {
                    if fed >= input.len() {
                        return (passed, Step::NeedMore);
                    }
                    let end = (fed + piece).min(input.len());
                    held.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                other => return (passed, other),
            }
        }
    }

    fn accepted(input: &[u8]) {
        for piece in [1, 3, 7, input.len()] {
            let (passed, last) = run(input, piece);
            assert_eq!(
                (passed, last),
                (input.len(), Step::NeedMore),
                "piece {piece}: {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn refused(input: &[u8]) -> Step {
        let (_, a) = run(input, 1);
        let (_, b) = run(input, input.len());
        assert_eq!(a, b, "{:?}", String::from_utf8_lossy(input));
        assert!(
            matches!(a, Step::Refuse(..) | Step::BadBody(_)),
            "{:?} -> {a:?}",
            String::from_utf8_lossy(input)
        );
        a
    }

    #[test]
    fn well_framed_requests_pass_whole() {
        accepted(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        accepted(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        accepted(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
        );
        accepted(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=val;q=\"a\\\"b\" ; x\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
              GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        accepted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc");
    }

    #[test]
    fn framing_ambiguities_are_refused() {
        let te = |body: &str| {
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
                .into_bytes()
        };
        for body in [
            "5 \r\nhello\r\n0\r\n\r\n",
            "\r\nhello\r\n0\r\n\r\n",
            "5;a\x01b\r\nhello\r\n0\r\n\r\n",
            "5;a\0\r\nhello\r\n0\r\n\r\n",
            "5;=x\r\nhello\r\n0\r\n\r\n",
            "5;\r\nhello\r\n0\r\n\r\n",
            "5;a\nhello\r\n0\r\n\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhelloX\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "-5\r\nhello\r\n0\r\n\r\n",
            "11111111111111111\r\n",
            "0\r\nno colon\r\n\r\n",
            "0\r\nX-T : 1\r\n\r\n",
            "0\r\n folded\r\n\r\n",
            "0\r\nX-T: a\x01\r\n\r\n",
        ] {
            assert!(matches!(refused(&te(body)), Step::BadBody(_)), "{body:?}");
        }
        for (head, status) in [
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ] {
            let got = refused(head.as_bytes());
            assert!(
                matches!(got, Step::Refuse(s, _) if s == status),
                "{head:?} -> {got:?}"
            );
        }
    }

    #[test]
    fn transfer_coding_is_exactly_one_chunked() {
        let tc = |vs: &[&[u8]]| transfer_coding(vs.iter().copied());
        assert_eq!(tc(&[]), Coding::Identity);
        assert_eq!(tc(&[b"chunked"]), Coding::Chunked);
        assert_eq!(tc(&[b"Chunked"]), Coding::Chunked);
        let status = |vs: &[&[u8]]| match tc(vs) {
            Coding::Refused(s, _) => s,
            other => panic!("{vs:?} -> {other:?}"),
        };
        assert_eq!(status(&[b"chunked, chunked"]), 400);
        assert_eq!(status(&[b"gzip, chunked"]), 501);
        assert_eq!(status(&[b"GZIP, chunked"]), 501);
        assert_eq!(status(&[b"identity, chunked"]), 400);
        assert_eq!(status(&[b"chunked", b"chunked"]), 400);
        assert_eq!(status(&[b"gzip"]), 400);
    }

    #[test]
    fn request_line_rules() {
        accepted(b"GET / HTTP/1.2\r\n\r\n");
        assert_eq!(
            refused(b"GET / HTTP/2.0\r\n\r\n"),
            Step::Refuse(505, "HTTP version not supported")
        );
        assert!(matches!(
            refused(b"GET /a\x01 HTTP/1.1\r\n\r\n"),
            Step::Refuse(400, _)
        ));
        assert!(matches!(
            refused(b"GET / HTTP/1.1\nHost: a\n\n"),
            Step::Refuse(400, _)
        ));
        // A line exactly max_request_line long (without its CRLF) passes.
        let line = format!("GET /{} HTTP/1.1", "a".repeat(8192 - 14));
        assert_eq!(line.len(), 8192);
        accepted(format!("{line}\r\nHost: a\r\n\r\n").as_bytes());
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192));
        assert_eq!(
            refused(long.as_bytes()),
            Step::Refuse(414, "request line too long")
        );
    }

    #[test]
    fn unknown_codings_stop_after_the_head() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let mut input = head.to_vec();
        input.extend_from_slice(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
        let (passed, last) = run(&input, input.len());
        assert_eq!((passed, last), (0, Step::StopAfter(head.len())));
        let mut f = framer();
        assert_eq!(f.step(&input), Step::StopAfter(head.len()));
        assert_eq!(f.step(&input[head.len()..]), Step::NeedMore);
    }

    fn small() -> Framer {
        Framer::new(
            HeadLimits {
                max_request_line: 20,
                max_head: 64,
                max_headers: 2,
            },
            false,
        )
    }

    #[test]
    fn limits_are_enforced_before_the_head_is_complete() {
        let mut f = small();
        assert_eq!(
            f.step(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa"),
            Step::Refuse(414, "request line too long")
        );
        let mut f = small();
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(80));
        assert_eq!(
            f.step(long.as_bytes()),
            Step::Refuse(431, "request head too large")
        );
        let mut f = small();
        assert_eq!(
            f.step(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            Step::Refuse(431, "too many header fields")
        );
    }

    #[test]
    fn h2c_preface_switches_to_opaque_only_when_enabled_and_first() {
        let mut f = framer_h2c(true);
        assert_eq!(f.step(&H2_PREFACE[..10]), Step::NeedMore);
        assert_eq!(f.step(H2_PREFACE), Step::Pass(H2_PREFACE.len()));
        assert!(f.is_opaque());
        let mut f = framer();
        assert_eq!(
            f.step(H2_PREFACE),
            Step::Refuse(505, "HTTP version not supported")
        );
    }
}
