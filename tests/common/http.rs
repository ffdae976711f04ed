//! A small HTTP/1.1 client on `std::net::TcpStream` (keep-alive, chunked,
//! HEAD/204/304 without a body), request builders and raw exchanges.

use super::*;

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

pub fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

pub fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One line without its CRLF; `None` at a clean EOF.
pub fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
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

pub fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
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
    self_signed_cert_as(
        dir,
        ("cert.pem", "key.pem"),
        "localhost",
        "DNS:localhost,IP:127.0.0.1",
    );
}

/// A self-signed ECDSA certificate with this CN and subjectAltName, valid
/// for 2 days, written to `files` (certificate, key) in `dir`.
pub fn self_signed_cert_as(dir: &Path, files: (&str, &str), cn: &str, san: &str) {
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
            .args(["-nodes", "-keyout", files.1, "-out", files.0, "-days", "2"])
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", &format!("subjectAltName={san}")])
            .current_dir(dir),
        Duration::from_secs(30),
    );
    assert!(out.success(), "openssl in {}: {out}", dir.display());
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

impl Conn {
    /// One `read` into `buf` (through the connection's buffer); 0 at EOF.
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}
