//! HTTPS at the edge, checked with real clients (curl, `openssl s_client`,
//! Python's ssl module) against certificates made in each test with the
//! `openssl` command line (a test CA, ECDSA P-256 and RSA 2048 leaves with
//! subjectAltName, client certificates, an expired certificate):
//!
//! * SNI: exact names, wildcards, the first certificate as the default;
//! * ALPN h2 with 100 concurrent streams on one connection (GET, POST
//!   bodies, a 1 MiB response, HEAD), and HTTP/1.1;
//! * TLS 1.2 and 1.3 only, forward-secret AEAD suites only;
//! * session resumption (TLS 1.2 and 1.3);
//! * `redirect_http` (301/308 to https://host:port/same-target) and HSTS
//!   on TLS responses only;
//! * wsgi.url_scheme / HTTPS, client certificates (required / optional)
//!   and SSL_CLIENT_VERIFY / SSL_CLIENT_S_DN;
//! * bad certificate/key files as config errors, expiry and uncovered
//!   hosts as warnings;
//! * SIGHUP reloads certificates without failing a request;
//! * h2c (cleartext HTTP/2 with prior knowledge) on plain listeners.
mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HSTS: &str = "max-age=63072000; includeSubDomains";

// ---------------------------------------------------------------------------
// certificates, made with the openssl command line
// ---------------------------------------------------------------------------

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) -> CmdOutput {
    let out = run_with_timeout(
        Command::new("openssl").args(args).current_dir(dir),
        Duration::from_secs(30),
    );
    assert!(out.success(), "openssl failed in {}\n{out}", dir.display());
    out
}

#[derive(Clone, Copy, PartialEq)]
enum KeyType {
    /// ECDSA P-256
    Ec,
    /// RSA 2048
    Rsa,
}

/// `<name>.key` (PKCS#8 PEM).
fn genkey(dir: &Path, name: &str, kt: KeyType) {
    let out = format!("{name}.key");
    match kt {
        KeyType::Ec => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &out,
            ],
        ),
        KeyType::Rsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &out,
            ],
        ),
    };
}

/// A serial number no other certificate of this test run has.
fn unique_serial() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "0x{:x}{:04x}{:04x}",
        nanos,
        std::process::id() & 0xffff,
        N.fetch_add(1, Ordering::SeqCst) & 0xffff
    )
}

/// A self-signed CA: `<name>.pem` + `<name>.key`.
fn make_ca(dir: &Path, name: &str, cn: &str) {
    genkey(dir, name, KeyType::Ec);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate signed by CA `ca`: `<name>.pem` + `<name>.key`.
/// `subject` like "/CN=a.test" (UTF-8 allowed); `sans` are DNS names;
/// `client`: extendedKeyUsage clientAuth instead of serverAuth.
fn make_leaf(
    dir: &Path,
    name: &str,
    kt: KeyType,
    subject: &str,
    sans: &[&str],
    ca: &str,
    client: bool,
) {
    genkey(dir, name, kt);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-utf8",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    let mut ext = String::from("basicConstraints=CA:FALSE\n");
    ext.push_str(if client {
        "extendedKeyUsage=clientAuth\n"
    } else {
        "extendedKeyUsage=serverAuth\n"
    });
    if !sans.is_empty() {
        let list: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        ext.push_str(&format!("subjectAltName={}\n", list.join(",")));
    }
    fs::write(dir.join(format!("{name}.ext")), ext).expect("write .ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &unique_serial(),
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A server certificate for `host` that expired in 2020 (`openssl ca` can
/// set -startdate/-enddate, `openssl x509 -req` cannot backdate).
fn make_expired(dir: &Path, name: &str, host: &str, ca: &str) {
    genkey(dir, name, KeyType::Ec);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={host}"),
        ],
    );
    let db = format!("{name}-cadb");
    fs::create_dir_all(dir.join(&db)).expect("create ca db dir");
    fs::write(dir.join(&db).join("index.txt"), "").expect("write index.txt");
    fs::write(dir.join(&db).join("serial"), "1000\n").expect("write serial");
    let cnf = format!(
        "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\ndefault_md = sha256\npolicy = policy_any\nunique_subject = no\nemail_in_dn = no\nx509_extensions = ext\n[ policy_any ]\ncommonName = supplied\n[ ext ]\nsubjectAltName = DNS:{host}\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
    );
    fs::write(dir.join(format!("{name}-ca.cnf")), cnf).expect("write ca.cnf");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &format!("{name}-ca.cnf"),
            "-cert",
            &format!("{ca}.pem"),
            "-keyfile",
            &format!("{ca}.key"),
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        ],
    );
}

/// ca.pem (the test CA), a.pem (ECDSA, a.test + *.a.test), b.pem (RSA, b.test).
fn make_standard_pki(dir: &Path) {
    make_ca(dir, "ca", "corral test CA");
    make_leaf(
        dir,
        "a",
        KeyType::Ec,
        "/CN=a.test",
        &["a.test", "*.a.test"],
        "ca",
        false,
    );
    make_leaf(
        dir,
        "b",
        KeyType::Rsa,
        "/CN=b.test",
        &["b.test"],
        "ca",
        false,
    );
}

// ---------------------------------------------------------------------------
// site.toml with [tls]
// ---------------------------------------------------------------------------

struct TlsConf {
    h2c: bool,
    redirect_http: bool,
    hsts: &'static str,
    /// "required" / "optional" (with client_ca = "ca.pem"); None: no client certs.
    client_auth: Option<&'static str>,
    /// (cert, key, hosts as a TOML array)
    certs: Vec<(String, String, String)>,
    /// The TLS listener expects a PROXY protocol header.
    proxy_protocol: bool,
}

impl Default for TlsConf {
    fn default() -> Self {
        TlsConf {
            h2c: false,
            redirect_http: false,
            hsts: "",
            client_auth: None,
            certs: vec![
                (
                    "a.pem".into(),
                    "a.key".into(),
                    r#"["a.test", "*.a.test"]"#.into(),
                ),
                ("b.pem".into(), "b.key".into(), r#"["b.test"]"#.into()),
            ],
            proxy_protocol: false,
        }
    }
}

impl TlsConf {
    /// The config text; `{port}` (the plain listener) is left for Site::render.
    fn text(&self, tls_port: u16) -> String {
        let mut s = String::new();
        s.push_str("[server]\nlisten = [\"127.0.0.1:{port}\"]\n");
        s.push_str(&format!("h2c = {}\n", self.h2c));
        if self.proxy_protocol {
            s.push_str(&format!("proxy_protocol = [\"127.0.0.1:{tls_port}\"]\n"));
        }
        s.push('\n');
        s.push_str("[app]\nmodule = \"echo_environ:application\"\nchdir = \".\"\nworkers = 2\ngraceful_timeout = \"10s\"\n\n");
        s.push_str("[limits]\nmax_body = \"16MiB\"\n\n");
        s.push_str("[log]\naccess = \"stdout\"\nlevel = \"info\"\n\n");
        s.push_str("[tls]\n");
        s.push_str(&format!("listen = [\"127.0.0.1:{tls_port}\"]\n"));
        s.push_str(&format!("redirect_http = {}\n", self.redirect_http));
        s.push_str(&format!("hsts = \"{}\"\n", self.hsts));
        if let Some(mode) = self.client_auth {
            s.push_str(&format!(
                "client_ca = \"ca.pem\"\nclient_auth = \"{mode}\"\n"
            ));
        }
        for (cert, key, hosts) in &self.certs {
            s.push_str(&format!(
                "\n[[tls.cert]]\ncert = \"{cert}\"\nkey = \"{key}\"\nhosts = {hosts}\n"
            ));
        }
        s
    }
}

/// A port for the TLS listener, different from the plain one.
fn tls_port_besides(plain: u16) -> u16 {
    loop {
        let p = free_port();
        if p != plain {
            return p;
        }
    }
}

struct TlsServer {
    srv: Running,
    tls: u16,
}

impl TlsServer {
    fn dir(&self) -> &Path {
        self.srv.path()
    }

    fn ca(&self) -> String {
        self.dir().join("ca.pem").display().to_string()
    }

    fn file(&self, name: &str) -> String {
        self.dir().join(name).display().to_string()
    }

    /// curl to https://<host>:<tls><path>, verifying against the test CA,
    /// with <host> resolved to 127.0.0.1.
    fn https(&self, host: &str, path: &str, extra: &[&str]) -> Fetched {
        let url = format!("https://{host}:{}{path}", self.tls);
        let resolve = format!("{host}:{}:127.0.0.1", self.tls);
        let ca = self.ca();
        let mut args: Vec<&str> = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        fetch(&url, &args)
    }

    /// curl to http://127.0.0.1:<plain><path>.
    fn http(&self, path: &str, extra: &[&str]) -> Fetched {
        fetch(&self.srv.url(path), extra)
    }

    /// `openssl s_client -connect 127.0.0.1:<tls> -CAfile ca.pem <extra>`.
    fn s_client(&self, extra: &[&str]) -> CmdOutput {
        let addr = format!("127.0.0.1:{}", self.tls);
        let ca = self.ca();
        let mut args: Vec<&str> = vec!["s_client", "-connect", &addr, "-CAfile", &ca];
        args.extend_from_slice(extra);
        run_with_timeout(
            Command::new("openssl").args(&args).current_dir(self.dir()),
            Duration::from_secs(20),
        )
    }

    /// Run one of the Python client scripts below (prelude + `script`) and
    /// parse the JSON object it prints last.
    fn python(&self, name: &str, script: &str, args: &[&str]) -> Json {
        let path = self.dir().join(name);
        fs::write(&path, format!("{PY_PRELUDE}\n{script}")).expect("write python script");
        let out = run_with_timeout(
            Command::new("python3")
                .arg(&path)
                .args(args)
                .current_dir(self.dir()),
            Duration::from_secs(60),
        );
        if !out.success() {
            self.srv.fail(format!("python client {name} failed\n{out}"));
        }
        let last = out.stdout.lines().last().unwrap_or("").to_string();
        match Json::parse(&last) {
            Ok(j) => j,
            Err(e) => self
                .srv
                .fail(format!("python client {name}: no JSON result ({e})\n{out}")),
        }
    }
}

/// Start corral on the echo app with `conf`, after the standard PKI and
/// `prepare(site folder)` made the files it needs.
#[track_caller]
fn start_tls(conf: &TlsConf, prepare: impl FnOnce(&Path)) -> TlsServer {
    let site = Site::new().app("echo_environ.py");
    make_standard_pki(site.path());
    prepare(site.path());
    let tls = tls_port_besides(site.port());
    let site = site.config(&conf.text(tls));
    let srv = site.start();
    if !wait_until(Duration::from_secs(10), || port_open(tls)) {
        srv.fail(format!(
            "the TLS listener 127.0.0.1:{tls} does not accept connections"
        ));
    }
    TlsServer { srv, tls }
}

// ---------------------------------------------------------------------------
// curl with status, HTTP version, headers and body
// ---------------------------------------------------------------------------

struct Fetched {
    /// 0 when no response arrived (curl's 000).
    status: u16,
    /// curl's %{http_version}: "1.1", "2", or "0" without a response.
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    out: CmdOutput,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    fn json(&self) -> Option<Json> {
        Json::parse(&String::from_utf8_lossy(&self.body)).ok()
    }

    /// environ[key] from the echo app's JSON (None if absent / not JSON).
    fn env(&self, key: &str) -> Option<String> {
        self.json()?
            .get("environ")?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }
}

impl fmt::Display for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "---- curl: status {} HTTP/{} ----",
            self.status, self.version
        )?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        writeln!(
            f,
            "[{} body bytes] {}",
            self.body.len(),
            snippet(&self.body, 1500)
        )?;
        write!(f, "{}", self.out)
    }
}

fn fetch(url: &str, extra: &[&str]) -> Fetched {
    let hdr = tempfile::NamedTempFile::new().expect("temp file for headers");
    let body = tempfile::NamedTempFile::new().expect("temp file for body");
    let hdr_path = hdr.path().display().to_string();
    let body_path = body.path().display().to_string();
    let mut args: Vec<&str> = vec![
        "-sS",
        "--max-time",
        "30",
        "-D",
        &hdr_path,
        "-o",
        &body_path,
        "-w",
        "%{http_code} %{http_version}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run_with_timeout(Command::new("curl").args(&args), Duration::from_secs(40));
    let mut w = out.stdout.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = w.next().unwrap_or("0").to_string();
    let headers = last_header_block(&fs::read_to_string(&hdr_path).unwrap_or_default());
    Fetched {
        status,
        version,
        headers,
        body: fs::read(&body_path).unwrap_or_default(),
        out,
    }
}

/// The `subject=...` line of `openssl s_client` output.
fn subject_line(out: &CmdOutput) -> Option<String> {
    out.stdout
        .lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.trim().to_string())
}

/// Fail with every collected problem at once (plus the server's stderr).
#[track_caller]
fn report(srv: &Running, problems: &[String]) {
    if !problems.is_empty() {
        srv.fail(format!(
            "{} problem(s):\n\n{}",
            problems.len(),
            problems.join("\n\n")
        ));
    }
}

// ---------------------------------------------------------------------------
// Python clients (stdlib ssl)
// ---------------------------------------------------------------------------

const PY_PRELUDE: &str = r##"
import hashlib, json, socket, ssl, sys, threading, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)

def context(ca, version=None, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if version is not None:
        if version in ("TLSv1", "TLSv1_1"):
            # let the client offer them, so that a refusal is the server's
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        v = getattr(ssl.TLSVersion, version)
        ctx.minimum_version = v
        ctx.maximum_version = v
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx

def connect(ctx, port, host="a.test", session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        return ctx.wrap_socket(raw, server_hostname=host, session=session)
    except BaseException:
        raw.close()
        raise

def send_get(s, path, host="a.test", close=True):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: corral-tests\r\n%s\r\n"
               % (path, host, "Connection: close\r\n" if close else "")).encode("latin-1"))

def read_response(f):
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a status line")
    status = int(line.split()[1])
    headers = {}
    while True:
        l = f.readline()
        if not l:
            raise EOFError("connection closed inside the headers")
        if l in (b"\r\n", b"\n"):
            break
        k, _, v = l.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(f.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return status, headers, body

def get(ctx, port, path, host="a.test", session=None):
    """One request on a fresh connection (Connection: close)."""
    s = connect(ctx, port, host, session)
    try:
        send_get(s, path, host)
        f = s.makefile("rb")
        status, headers, body = read_response(f)
        try:
            f.read()  # to EOF: TLS 1.3 session tickets come after the handshake
        except Exception:
            pass
        facts = {"version": s.version(), "reused": s.session_reused,
                 "session": s.session, "der": s.getpeercert(binary_form=True)}
        f.close()
        return status, headers, body, facts
    finally:
        s.close()

def environ(body):
    try:
        return json.loads(body)["environ"]
    except Exception:
        return {}

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
"##;

/// argv: port ca [cert key]. Three connections per TLS version, each
/// offering the previous one's session.
const PY_RESUME: &str = r##"
port, ca = int(sys.argv[1]), sys.argv[2]
cert, key = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
out = {}
for version in ("TLSv1_2", "TLSv1_3"):
    ctx = context(ca, version, cert, key)
    session, rounds = None, []
    for i in range(3):
        try:
            status, headers, body, facts = get(ctx, port, "/resume?i=%d" % i, session=session)
            env = environ(body)
            rounds.append({"status": status, "version": facts["version"], "reused": facts["reused"],
                           "offered": session is not None, "got_session": facts["session"] is not None,
                           "verify": env.get("SSL_CLIENT_VERIFY"), "dn": env.get("SSL_CLIENT_S_DN")})
            session = facts["session"]
        except Exception as e:
            rounds.append({"error": repr(e), "offered": session is not None})
    out[version] = rounds
emit(out)
"##;

/// argv: port ca. One request per protocol version, client limited to it.
const PY_VERSIONS: &str = r##"
port, ca = int(sys.argv[1]), sys.argv[2]
out = {}
for version in ("TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"):
    try:
        status, headers, body, facts = get(context(ca, version), port, "/v")
        out[version] = {"ok": True, "status": status, "version": facts["version"]}
    except Exception as e:
        out[version] = {"ok": False, "error": repr(e)}
emit(out)
"##;

/// argv: port ca old.pem new.pem. Driven through stdin by the reload test:
/// prints READY, waits for "hup", ... (see `sighup_reloads_certificates`).
const PY_RELOAD: &str = r##"
port, ca = int(sys.argv[1]), sys.argv[2]
OLD = ssl.PEM_cert_to_DER_cert(open(sys.argv[3]).read())
NEW = ssl.PEM_cert_to_DER_cert(open(sys.argv[4]).read())
ctx = context(ca)

def which(der):
    return "old" if der == OLD else "new" if der == NEW else "other:" + hashlib.sha256(der).hexdigest()[:16]

out = {}
c1 = connect(ctx, port)
f1 = c1.makefile("rb")
send_get(c1, "/pid", close=False)
st, h, b = read_response(f1)
out["c1_first_status"] = st
out["c1_cert"] = which(c1.getpeercert(binary_form=True))

# fresh connections all along the reload: none may fail
bg = {"ok": 0, "fail": [], "certs": {}}
stop = threading.Event()
def stamp():
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + ("%.3f" % (t % 1))[1:] + "Z"
def background():
    while not stop.is_set():
        started, cert = stamp(), None
        try:
            s = connect(ctx, port)
            cert = which(s.getpeercert(binary_form=True))
            try:
                send_get(s, "/pid")
                status, headers, body = read_response(s.makefile("rb"))
            finally:
                s.close()
            bg["certs"][cert] = bg["certs"].get(cert, 0) + 1
            if status == 200:
                bg["ok"] += 1
            else:
                bg["fail"].append("connection opened %s (%s certificate): status %d" % (started, cert, status))
        except Exception as e:
            bg["fail"].append("connection opened %s (%s certificate), failed %s: %r"
                              % (started, cert or "no", stamp(), e))
        time.sleep(0.03)
t = threading.Thread(target=background, daemon=True)
t.start()
time.sleep(0.3)
print("READY", flush=True)

sys.stdin.readline()  # "hup": SIGHUP was just sent
t0 = time.time()
try:
    send_get(c1, "/sleep?s=3", close=False)
    st, h, b = read_response(f1)
    out["c1_inflight_status"] = st
    out["c1_inflight_body"] = b.decode("latin-1")
except Exception as e:
    out["c1_inflight_error"] = repr(e)
out["c1_inflight_secs"] = round(time.time() - t0, 2)
# the old edge drains: once the request is done, the idle connection closes
c1.settimeout(15)
t0 = time.time()
try:
    out["c1_after"] = "eof" if f1.read(1) == b"" else "data"
except Exception as e:
    out["c1_after"] = repr(e)
out["c1_close_secs"] = round(time.time() - t0, 2)

sys.stdin.readline()  # "ready": the log says the new edge is ready
t0 = time.time()
out["new_conn"] = []
while True:
    try:
        status, headers, body, facts = get(ctx, port, "/pid")
        out["new_conn"].append({"status": status, "cert": which(facts["der"]),
                                "after": round(time.time() - t0, 2)})
        if which(facts["der"]) == "new" or time.time() - t0 > 5:
            break
    except Exception as e:
        out["new_conn"].append({"error": repr(e), "after": round(time.time() - t0, 2)})
        if time.time() - t0 > 5:
            break
    time.sleep(0.1)
stop.set()
t.join(30)
out["bg_ok"], out["bg_fail"], out["bg_certs"] = bg["ok"], bg["fail"][:20], bg["certs"]
emit(out)

sys.stdin.readline()  # "refused": a reload with a broken key was refused
try:
    status, headers, body, facts = get(ctx, port, "/pid")
    emit({"status": status, "cert": which(facts["der"])})
except Exception as e:
    emit({"error": repr(e)})
"##;

/// argv: port ca. Driven through stdin by
/// `reload_finishes_a_request_whose_head_is_still_arriving`.
const PY_PARTIAL: &str = r##"
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = context(ca)
partial = connect(ctx, port)
partial.sendall(b"GET /pid?partial=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: corral-tests\r\n")
fresh = connect(ctx, port)  # handshake done, no request yet
print("READY", flush=True)
sys.stdin.readline()  # "go": the old edge was told to drain a moment ago
out = {}
for name, s, rest in (("partial", partial, b"Connection: close\r\n\r\n"),
                      ("fresh", fresh, b"GET /pid?fresh=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")):
    try:
        s.sendall(rest)
        status, headers, body = read_response(s.makefile("rb"))
        out[name] = {"status": status, "body": body.decode("latin-1")}
    except Exception as e:
        out[name] = {"error": repr(e)}
emit(out)
"##;

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[test]
fn sni_picks_the_certificate() {
    let t = start_tls(&TlsConf::default(), |_| {});
    // (what, SNI, name to verify, expected subject, key size)
    let cases: [(&str, Option<&str>, &str, &str, &str); 6] = [
        ("SNI a.test", Some("a.test"), "a.test", "a.test", "256 bit"),
        (
            "SNI x.a.test (wildcard *.a.test)",
            Some("x.a.test"),
            "x.a.test",
            "a.test",
            "256 bit",
        ),
        ("SNI b.test", Some("b.test"), "b.test", "b.test", "2048 bit"),
        (
            "SNI B.TEST (names are case-insensitive)",
            Some("B.TEST"),
            "b.test",
            "b.test",
            "2048 bit",
        ),
        (
            "no SNI (default = first certificate)",
            None,
            "a.test",
            "a.test",
            "256 bit",
        ),
        (
            "SNI nobody.test (no certificate names it)",
            Some("nobody.test"),
            "a.test",
            "a.test",
            "256 bit",
        ),
    ];
    let mut problems = Vec::new();
    for (what, sni, verify, subject, bits) in cases {
        let mut args: Vec<&str> = match sni {
            Some(n) => vec!["-servername", n],
            None => vec!["-noservername"],
        };
        args.extend_from_slice(&["-verify_return_error", "-verify_hostname", verify]);
        let out = t.s_client(&args);
        let want = format!("subject=CN = {subject}");
        let got = subject_line(&out);
        if !out.success()
            || got.as_deref() != Some(want.as_str())
            || !out.stdout.contains("Verify return code: 0 (ok)")
            || !out.stdout.contains(&format!("Server public key is {bits}"))
        {
            problems.push(format!(
                "{what}: expected `{want}` ({bits} key, verified for {verify}), got {got:?}\n{out}"
            ));
        }
    }
    // The RSA certificate end to end: a request to b.test.
    let f = t.https("b.test", "/sni-b", &[]);
    if f.status != 200 || f.env("SERVER_NAME").as_deref() != Some("b.test") {
        problems.push(format!(
            "GET https://b.test/sni-b: expected 200 with SERVER_NAME b.test\n{f}"
        ));
    }
    report(&t.srv, &problems);
}

#[test]
fn only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
    let t = start_tls(&TlsConf::default(), |_| {});
    let mut problems = Vec::new();
    // openssl s_client, allowed (SECLEVEL=0) to offer the old versions.
    for v in ["-tls1", "-tls1_1"] {
        let out = t.s_client(&["-servername", "a.test", v, "-cipher", "DEFAULT@SECLEVEL=0"]);
        let all = format!("{}\n{}", out.stdout, out.stderr);
        let negotiated =
            out.stdout.contains("Cipher is ") && !out.stdout.contains("Cipher is (NONE)");
        if out.success() || negotiated || !all.to_ascii_lowercase().contains("alert") {
            problems.push(format!(
                "openssl s_client {v}: expected the server to refuse with an alert\n{out}"
            ));
        }
    }
    for host in ["a.test", "b.test"] {
        for (v, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let out = t.s_client(&["-servername", host, v, "-verify_return_error"]);
            if !out.success() || !out.stdout.contains(&format!("New, {name}, Cipher is ")) {
                problems.push(format!(
                    "openssl s_client {v} to {host}: expected {name}\n{out}"
                ));
            }
        }
    }
    // TLS 1.2 suites without forward secrecy or AEAD are not offered.
    for cipher in [
        "AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ] {
        let host = if cipher.contains("ECDSA") {
            "a.test"
        } else {
            "b.test"
        };
        let out = t.s_client(&["-servername", host, "-tls1_2", "-cipher", cipher]);
        if out.success() {
            problems.push(format!(
                "openssl s_client -tls1_2 -cipher {cipher} to {host}: should be refused\n{out}"
            ));
        }
    }
    // The server's suite order: AES-128-GCM even when the client lists
    // AES-256 first, and a client that only offers ChaCha20 still gets it.
    for (v, offer, want) in [
        (
            "-tls1_3",
            "-ciphersuites=TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ),
        (
            "-tls1_3",
            "-ciphersuites=TLS_CHACHA20_POLY1305_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            "-tls1_2",
            "-cipher=ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
    ] {
        let (flag, list) = offer.split_once('=').unwrap_or((offer, ""));
        let out = t.s_client(&["-servername", "a.test", v, flag, list]);
        if !out.success() || !out.stdout.contains(&format!("Cipher is {want}")) {
            problems.push(format!(
                "openssl s_client {v} {flag} {list}: expected {want}\n{out}"
            ));
        }
    }
    // Python's ssl module.
    let r = t.python("versions.py", PY_VERSIONS, &[&t.tls.to_string(), &t.ca()]);
    for v in ["TLSv1", "TLSv1_1"] {
        let err = r[v]["error"].as_str().unwrap_or("");
        if r[v]["ok"].as_bool() != Some(false) || !err.to_ascii_uppercase().contains("ALERT") {
            problems.push(format!(
                "python ssl limited to {v}: expected a refusal alert from the server, got {:?}",
                r[v]
            ));
        }
    }
    for (v, name) in [("TLSv1_2", "TLSv1.2"), ("TLSv1_3", "TLSv1.3")] {
        if r[v]["ok"].as_bool() != Some(true)
            || r[v]["status"].as_i64() != Some(200)
            || r[v]["version"].as_str() != Some(name)
        {
            problems.push(format!(
                "python ssl limited to {v}: expected 200 over {name}, got {:?}",
                r[v]
            ));
        }
    }
    report(&t.srv, &problems);
}

#[test]
fn alpn_h2_with_100_concurrent_streams_on_one_connection() {
    let t = start_tls(&TlsConf::default(), |_| {});
    let mut problems = Vec::new();

    let f = t.https("a.test", "/alpn", &["--http2"]);
    if f.status != 200 || f.version != "2" {
        problems.push(format!("curl --http2: expected HTTP/2 200\n{f}"));
    }
    let f = t.https("a.test", "/alpn", &["--http1.1"]);
    if f.status != 200 || f.version != "1.1" {
        problems.push(format!("curl --http1.1: expected HTTP/1.1 200\n{f}"));
    }
    let out = t.s_client(&["-servername", "a.test", "-alpn", "h2,http/1.1"]);
    if !out.stdout.contains("ALPN protocol: h2") {
        problems.push(format!(
            "openssl s_client -alpn h2,http/1.1: h2 not selected\n{out}"
        ));
    }
    let out = t.s_client(&["-servername", "a.test", "-alpn", "http/1.1"]);
    if !out.stdout.contains("ALPN protocol: http/1.1") {
        problems.push(format!(
            "openssl s_client -alpn http/1.1: http/1.1 not selected\n{out}"
        ));
    }

    // 100 transfers in parallel; curl multiplexes them on one connection.
    #[derive(Clone, PartialEq)]
    enum Kind {
        Get,
        Post(Vec<u8>),
        Head,
        Big,
    }
    let work = t.dir().join("h2");
    fs::create_dir_all(&work).expect("create h2 work dir");
    let ca = t.ca();
    let resolve = format!("a.test:{}:127.0.0.1", t.tls);
    let mut kinds = Vec::new();
    let mut args: Vec<String> = vec!["--parallel".into(), "--parallel-max".into(), "100".into()];
    for i in 0..100usize {
        let kind = match i {
            50 => Kind::Big,
            _ if i % 10 == 3 => Kind::Post(pattern_bytes(2048 + 97 * i, i as u64 + 1)),
            _ if i % 10 == 7 => Kind::Head,
            _ => Kind::Get,
        };
        if i > 0 {
            args.push("--next".into());
        }
        let out_file = work.join(format!("out-{i}")).display().to_string();
        args.extend(
            [
                "-sS",
                "--max-time",
                "60",
                "--http2",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-o",
                &out_file,
                "-w",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.push(format!(
            "%{{http_code}} %{{num_connects}} %{{http_version}} %{{size_download}} #{i}\n"
        ));
        let base = format!("https://a.test:{}", t.tls);
        match &kind {
            Kind::Get => args.push(format!("{base}/get?i={i}")),
            Kind::Post(data) => {
                let p = work.join(format!("post-{i}.bin"));
                fs::write(&p, data).expect("write POST body");
                args.push("--data-binary".into());
                args.push(format!("@{}", p.display()));
                args.push(format!("{base}/post?i={i}"));
            }
            Kind::Head => {
                args.push("-I".into());
                args.push(format!("{base}/head?i={i}"));
            }
            Kind::Big => args.push(format!("{base}/sleep?s=0&size=1048576&i={i}")),
        }
        kinds.push(kind);
    }
    let started = Instant::now();
    let out = run_with_timeout(Command::new("curl").args(&args), Duration::from_secs(90));
    let took = started.elapsed();
    // "<code> <connects> <version> <size> #<i>"
    let mut lines: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for l in out.stdout.lines() {
        let f: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if let Some(i) = f
            .last()
            .and_then(|s| s.strip_prefix('#'))
            .and_then(|s| s.parse().ok())
        {
            lines.insert(i, f);
        }
    }
    let mut connects = 0u64;
    let mut remote_ports = BTreeSet::new();
    for (i, kind) in kinds.iter().enumerate() {
        let Some(w) = lines.get(&i) else {
            problems.push(format!("transfer #{i}: curl reported nothing"));
            continue;
        };
        connects += w[1].parse::<u64>().unwrap_or(0);
        if w[0] != "200" || w[2] != "2" {
            problems.push(format!("transfer #{i}: expected HTTP/2 200, got {w:?}"));
            continue;
        }
        let body = fs::read(work.join(format!("out-{i}"))).unwrap_or_default();
        match kind {
            Kind::Get | Kind::Post(_) => {
                let text = String::from_utf8_lossy(&body);
                let Ok(j) = Json::parse(&text) else {
                    problems.push(format!(
                        "transfer #{i}: body is not JSON: {}",
                        snippet(&body, 300)
                    ));
                    continue;
                };
                let env = &j["environ"];
                if env["QUERY_STRING"].as_str() != Some(&format!("i={i}")) {
                    problems.push(format!(
                        "transfer #{i}: got the answer to another stream: QUERY_STRING {:?}",
                        env["QUERY_STRING"]
                    ));
                }
                if let Some(p) = env["REMOTE_PORT"].as_str() {
                    remote_ports.insert(p.to_string());
                }
                if let Kind::Post(data) = kind {
                    if env["REQUEST_METHOD"].as_str() != Some("POST")
                        || j["body_len"].as_i64() != Some(data.len() as i64)
                        || j["body_sha256"].as_str() != Some(sha256_hex(data).as_str())
                    {
                        problems.push(format!(
                            "transfer #{i}: POST of {} bytes arrived as {} {:?} bytes (sha256 {:?})",
                            data.len(),
                            env["REQUEST_METHOD"].as_str().unwrap_or("?"),
                            j["body_len"].as_i64(),
                            j["body_sha256"].as_str()
                        ));
                    }
                }
            }
            Kind::Head => {
                let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
                if w[3] != "0"
                    || !text.starts_with("http/2 200")
                    || !text.contains("content-length: 1234")
                {
                    problems.push(format!(
                        "transfer #{i} (HEAD): expected HTTP/2 200 headers with content-length: 1234 and no body, got size {} and:\n{text}",
                        w[3]
                    ));
                }
            }
            Kind::Big => {
                if body.len() != 1 << 20 || body.iter().any(|&b| b != b'z') {
                    problems.push(format!(
                        "transfer #{i}: expected 1048576 bytes of 'z', got {} bytes",
                        body.len()
                    ));
                }
            }
        }
    }
    if connects != 1 {
        problems.push(format!(
            "curl made {connects} connections for the 100 transfers, expected 1 (all streams multiplexed)"
        ));
    }
    if remote_ports.len() != 1 {
        problems.push(format!(
            "the app saw the requests come from {} client ports ({remote_ports:?}), expected one connection",
            remote_ports.len()
        ));
    }
    if !problems.is_empty() {
        problems.push(format!("curl --parallel took {took:?}\n{out}"));
    }
    report(&t.srv, &problems);
}

#[test]
fn session_resumption_tls_1_2_and_1_3() {
    let t = start_tls(&TlsConf::default(), |_| {});
    let r = t.python("resume.py", PY_RESUME, &[&t.tls.to_string(), &t.ca()]);
    let mut problems = Vec::new();
    for (v, name) in [("TLSv1_2", "TLSv1.2"), ("TLSv1_3", "TLSv1.3")] {
        let rounds = r[v].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for (i, round) in rounds.iter().enumerate() {
            let want_reused = i > 0;
            if round["status"].as_i64() != Some(200)
                || round["version"].as_str() != Some(name)
                || round["reused"].as_bool() != Some(want_reused)
                || round["got_session"].as_bool() != Some(true)
            {
                problems.push(format!(
                    "{name} connection #{} ({}): expected 200, session_reused == {want_reused} and a session to resume, got {round:?}",
                    i + 1,
                    if want_reused { "offering the previous session" } else { "full handshake" }
                ));
            }
        }
        if rounds.len() != 3 {
            problems.push(format!("{name}: expected 3 rounds, got {:?}", r[v]));
        }
    }
    report(&t.srv, &problems);
}

/// Raw HTTP/1.1 request with a chosen Host (and body).
fn raw_host_req(method: &str, target: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corral-tests\r\nConnection: close\r\n"
    )
    .into_bytes();
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.extend_from_slice(
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

#[test]
fn redirect_http_to_https_and_hsts_on_tls_only() {
    let conf = TlsConf {
        redirect_http: true,
        hsts: HSTS,
        ..TlsConf::default()
    };
    let t = start_tls(&conf, |_| {});
    let plain = t.srv.port;
    let tls = t.tls;
    let mut problems = Vec::new();
    // (method, target, Host, body, status, Location)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, String, String, &[u8], u16, String)> = vec![
        (
            "GET",
            "/p?q=1".into(),
            "a.test".into(),
            b"",
            301,
            format!("https://a.test:{tls}/p?q=1"),
        ),
        (
            "GET",
            "/p?q=1".into(),
            format!("a.test:{plain}"),
            b"",
            301,
            format!("https://a.test:{tls}/p?q=1"),
        ),
        (
            "HEAD",
            "/p?q=1".into(),
            "a.test".into(),
            b"",
            301,
            format!("https://a.test:{tls}/p?q=1"),
        ),
        (
            "GET",
            "/a%20b/c?x=%2F&y".into(),
            "b.test".into(),
            b"",
            301,
            format!("https://b.test:{tls}/a%20b/c?x=%2F&y"),
        ),
        (
            "POST",
            "/form?x=2".into(),
            "a.test".into(),
            b"k=v",
            308,
            format!("https://a.test:{tls}/form?x=2"),
        ),
        (
            "PUT",
            "/doc".into(),
            "a.test".into(),
            b"data",
            308,
            format!("https://a.test:{tls}/doc"),
        ),
        (
            "DELETE",
            "/doc?id=3".into(),
            "a.test".into(),
            b"",
            308,
            format!("https://a.test:{tls}/doc?id=3"),
        ),
    ];
    for (method, target, host, body, status, location) in &cases {
        let raw = raw_host_req(method, target, host, body);
        let what = format!("plain {method} {target} (Host: {host})");
        match try_request(plain, &raw) {
            Err(e) => problems.push(format!("{what}: request failed: {e}")),
            Ok(r) => {
                if r.status != *status || r.header("location") != Some(location.as_str()) {
                    problems.push(format!("{what}: expected {status} to {location}\n{r}"));
                }
                if r.header("strict-transport-security").is_some() {
                    problems.push(format!(
                        "{what}: HSTS must not be sent over plain HTTP\n{r}"
                    ));
                }
                if *method == "HEAD" && !r.body.is_empty() {
                    problems.push(format!("{what}: a HEAD response has no body\n{r}"));
                }
            }
        }
    }
    // Over TLS the app answers, with HSTS, on HTTP/1.1 and HTTP/2.
    for proto in ["--http1.1", "--http2"] {
        let f = t.https("a.test", "/p?q=1", &[proto]);
        if f.status != 200
            || f.header("strict-transport-security") != Some(HSTS)
            || f.env("wsgi.url_scheme").as_deref() != Some("https")
            || f.env("HTTPS").as_deref() != Some("on")
            || f.env("QUERY_STRING").as_deref() != Some("q=1")
            || f.env("PATH_INFO").as_deref() != Some("/p")
        {
            problems.push(format!(
                "https GET /p?q=1 {proto}: expected 200 with HSTS `{HSTS}`, wsgi.url_scheme https, HTTPS on\n{f}"
            ));
        }
    }
    let f = t.https("a.test", "/status/404", &[]);
    if f.status != 404 || f.header("strict-transport-security") != Some(HSTS) {
        problems.push(format!(
            "https GET /status/404: HSTS belongs on every TLS response\n{f}"
        ));
    }
    // curl -L from plain HTTP ends up on https, keeping a POST's method and body (308).
    let ca = t.ca();
    let r_plain = format!("a.test:{plain}:127.0.0.1");
    let r_tls = format!("a.test:{tls}:127.0.0.1");
    let url = format!("http://a.test:{plain}/follow?z=9");
    let follow = [
        "-L",
        "--cacert",
        ca.as_str(),
        "--resolve",
        &r_plain,
        "--resolve",
        &r_tls,
    ];
    let f = fetch(&url, &follow);
    if f.status != 200
        || f.env("wsgi.url_scheme").as_deref() != Some("https")
        || f.env("QUERY_STRING").as_deref() != Some("z=9")
    {
        problems.push(format!(
            "curl -L {url}: expected to land on https with the query\n{f}"
        ));
    }
    let mut post_follow: Vec<&str> = follow.to_vec();
    post_follow.extend_from_slice(&["--data-binary", "k=v"]);
    let f = fetch(&url, &post_follow);
    if f.status != 200
        || f.env("REQUEST_METHOD").as_deref() != Some("POST")
        || f.json()
            .and_then(|j| j["body_text"].as_str().map(str::to_string))
            .as_deref()
            != Some("k=v")
    {
        problems.push(format!(
            "curl -L -d k=v {url}: the 308 must keep POST and its body\n{f}"
        ));
    }
    report(&t.srv, &problems);
}

#[test]
fn without_redirect_plain_http_is_served_with_scheme_http() {
    let conf = TlsConf {
        redirect_http: false,
        hsts: HSTS,
        ..TlsConf::default()
    };
    let t = start_tls(&conf, |_| {});
    let mut problems = Vec::new();
    let f = t.http(
        "/s?x=1",
        &["-H", "Host: a.test", "-H", "X-Forwarded-Proto: https"],
    );
    if f.status != 200
        || f.env("wsgi.url_scheme").as_deref() != Some("http")
        || f.env("HTTPS").is_some()
        || f.env("SSL_CLIENT_VERIFY").is_some()
        || f.header("strict-transport-security").is_some()
        || f.header("location").is_some()
    {
        problems.push(format!(
            "plain GET /s?x=1 with redirect_http = false: expected 200 from the app with wsgi.url_scheme http, no HTTPS / SSL_CLIENT_VERIFY, no HSTS\n{f}"
        ));
    }
    for proto in ["--http1.1", "--http2"] {
        let f = t.https("a.test", "/s?x=1", &[proto]);
        if f.status != 200
            || f.env("wsgi.url_scheme").as_deref() != Some("https")
            || f.env("HTTPS").as_deref() != Some("on")
            || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("NONE")
            || f.header("strict-transport-security") != Some(HSTS)
        {
            problems.push(format!(
                "https GET /s?x=1 {proto}: expected wsgi.url_scheme https, HTTPS on, SSL_CLIENT_VERIFY NONE, HSTS\n{f}"
            ));
        }
    }
    report(&t.srv, &problems);
}

#[test]
fn h2c_prior_knowledge_on_the_plain_listener() {
    let conf = TlsConf {
        h2c: true,
        redirect_http: false,
        hsts: HSTS,
        ..TlsConf::default()
    };
    let t = start_tls(&conf, |_| {});
    let mut problems = Vec::new();
    let f = t.http("/h2c?x=1", &["--http2-prior-knowledge"]);
    if f.status != 200
        || f.version != "2"
        || f.env("wsgi.url_scheme").as_deref() != Some("http")
        || f.env("QUERY_STRING").as_deref() != Some("x=1")
        || f.header("strict-transport-security").is_some()
    {
        problems.push(format!(
            "curl --http2-prior-knowledge http://127.0.0.1:{}/h2c?x=1: expected HTTP/2 200 from the app (scheme http, no HSTS)\n{f}",
            t.srv.port
        ));
    }
    let f = t.http("/h1?x=2", &["--http1.1"]);
    if f.status != 200 || f.version != "1.1" || f.env("QUERY_STRING").as_deref() != Some("x=2") {
        problems.push(format!("HTTP/1.1 on the h2c listener: expected 200\n{f}"));
    }
    let f = t.https("a.test", "/tls?x=3", &["--http2"]);
    if f.status != 200 || f.version != "2" || f.env("wsgi.url_scheme").as_deref() != Some("https") {
        problems.push(format!(
            "h2 over TLS next to h2c: expected HTTP/2 200 with scheme https\n{f}"
        ));
    }
    report(&t.srv, &problems);
}

/// client1 (signed by the test CA) and rogue (same subject, another CA).
fn make_client_certs(dir: &Path) {
    make_leaf(dir, "client1", KeyType::Ec, "/CN=client1", &[], "ca", true);
    make_ca(dir, "rogue-ca", "rogue CA");
    make_leaf(
        dir,
        "rogue",
        KeyType::Ec,
        "/CN=client1",
        &[],
        "rogue-ca",
        true,
    );
}

#[test]
fn client_certificates_required() {
    let conf = TlsConf {
        client_auth: Some("required"),
        ..TlsConf::default()
    };
    let t = start_tls(&conf, make_client_certs);
    let mut problems = Vec::new();
    let (c1, k1) = (t.file("client1.pem"), t.file("client1.key"));
    let (rc, rk) = (t.file("rogue.pem"), t.file("rogue.key"));
    for (what, extra) in [
        ("no client certificate, TLS 1.3", vec!["--tlsv1.3"]),
        (
            "no client certificate, TLS 1.2",
            vec!["--tlsv1.2", "--tls-max", "1.2"],
        ),
        (
            "a certificate from another CA",
            vec!["--cert", rc.as_str(), "--key", rk.as_str()],
        ),
    ] {
        let f = t.https("a.test", "/secret", &extra);
        if f.status != 0 || f.out.success() {
            problems.push(format!(
                "{what}: the connection must be refused, but got a response\n{f}"
            ));
        }
    }
    for proto in ["--http1.1", "--http2"] {
        let f = t.https("a.test", "/secret", &[proto, "--cert", &c1, "--key", &k1]);
        let dn = f.env("SSL_CLIENT_S_DN").unwrap_or_default();
        if f.status != 200
            || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("SUCCESS")
            || !dn.contains("CN=client1")
        {
            problems.push(format!(
                "client1's certificate {proto}: expected 200, SSL_CLIENT_VERIFY SUCCESS, SSL_CLIENT_S_DN with CN=client1\n{f}"
            ));
        }
    }
    // A resumed session still carries the verified certificate.
    let r = t.python(
        "resume.py",
        PY_RESUME,
        &[&t.tls.to_string(), &t.ca(), &c1, &k1],
    );
    for v in ["TLSv1_2", "TLSv1_3"] {
        for (i, round) in r[v]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            if round["status"].as_i64() != Some(200)
                || round["verify"].as_str() != Some("SUCCESS")
                || !round["dn"].as_str().unwrap_or("").contains("CN=client1")
                || round["reused"].as_bool() != Some(i > 0)
            {
                problems.push(format!(
                    "{v} connection #{} with client1 ({}): expected 200, SUCCESS, CN=client1, session_reused {}; got {round:?}",
                    i + 1,
                    if i > 0 { "resumed" } else { "full handshake" },
                    i > 0
                ));
            }
        }
    }
    report(&t.srv, &problems);
}

#[test]
fn client_certificates_optional() {
    let conf = TlsConf {
        client_auth: Some("optional"),
        ..TlsConf::default()
    };
    let t = start_tls(&conf, make_client_certs);
    let mut problems = Vec::new();
    // Without a certificate, with headers that try to pass for one.
    let spoof = [
        "-H",
        "X-Corral-Client-Cert: CN=admin",
        "-H",
        "X-Corral-Scheme: http",
        "-H",
        "SSL-Client-Verify: SUCCESS",
        "-H",
        "SSL_CLIENT_S_DN: CN=admin",
    ];
    for proto in ["--http1.1", "--http2"] {
        let mut extra = vec![proto];
        extra.extend_from_slice(&spoof);
        let f = t.https("a.test", "/open", &extra);
        if f.status != 200
            || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("NONE")
            || f.env("SSL_CLIENT_S_DN").is_some()
            || f.env("wsgi.url_scheme").as_deref() != Some("https")
        {
            problems.push(format!(
                "no client certificate {proto} (and forged headers): expected 200 with SSL_CLIENT_VERIFY NONE, no SSL_CLIENT_S_DN, scheme https\n{f}"
            ));
        }
    }
    let (c1, k1) = (t.file("client1.pem"), t.file("client1.key"));
    let f = t.https("a.test", "/open", &["--cert", &c1, "--key", &k1]);
    if f.status != 200
        || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("SUCCESS")
        || !f
            .env("SSL_CLIENT_S_DN")
            .unwrap_or_default()
            .contains("CN=client1")
    {
        problems.push(format!(
            "client1's certificate: expected SUCCESS with CN=client1\n{f}"
        ));
    }
    // A certificate the CA did not sign is refused, or at least not "SUCCESS".
    let (rc, rk) = (t.file("rogue.pem"), t.file("rogue.key"));
    let f = t.https("a.test", "/open", &["--cert", &rc, "--key", &rk]);
    if f.status != 0
        && (f.env("SSL_CLIENT_VERIFY").as_deref() == Some("SUCCESS")
            || f.env("SSL_CLIENT_S_DN").is_some())
    {
        problems.push(format!(
            "a certificate from another CA was accepted as verified\n{f}"
        ));
    }
    report(&t.srv, &problems);
}

/// Verified client certificates whose subject is not plain ASCII, or holds
/// DN syntax characters, reach the app as what they are.
#[test]
fn client_subject_dn_is_reported_faithfully() {
    let conf = TlsConf {
        client_auth: Some("required"),
        ..TlsConf::default()
    };
    let t = start_tls(&conf, |dir| {
        make_leaf(
            dir,
            "umlaut",
            KeyType::Ec,
            "/CN=J\u{fc}rgen",
            &[],
            "ca",
            true,
        );
        make_leaf(
            dir,
            "comma",
            KeyType::Ec,
            "/CN=client3, O=Admins/O=Users",
            &[],
            "ca",
            true,
        );
    });
    let mut problems = Vec::new();
    let f = t.https(
        "a.test",
        "/dn",
        &[
            "--cert",
            &t.file("umlaut.pem"),
            "--key",
            &t.file("umlaut.key"),
        ],
    );
    if f.status != 200
        || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("SUCCESS")
        || !f
            .env("SSL_CLIENT_S_DN")
            .unwrap_or_default()
            .contains("rgen")
    {
        problems.push(format!(
            "a verified client certificate with subject CN=J\u{fc}rgen (UTF-8): expected SSL_CLIENT_VERIFY SUCCESS and SSL_CLIENT_S_DN naming it (nginx: \"CN=J\\\\C3\\\\BCrgen\"), got SSL_CLIENT_VERIFY={:?} SSL_CLIENT_S_DN={:?}\n{f}",
            f.env("SSL_CLIENT_VERIFY"),
            f.env("SSL_CLIENT_S_DN")
        ));
    }
    let f = t.https(
        "a.test",
        "/dn",
        &[
            "--cert",
            &t.file("comma.pem"),
            "--key",
            &t.file("comma.key"),
        ],
    );
    let dn = f.env("SSL_CLIENT_S_DN").unwrap_or_default();
    let escaped = dn.contains("client3\\,") || dn.contains("\"client3, O=Admins\"");
    if f.status != 200 || f.env("SSL_CLIENT_VERIFY").as_deref() != Some("SUCCESS") || !escaped {
        problems.push(format!(
            "a client certificate with subject CN=\"client3, O=Admins\", O=Users: SSL_CLIENT_S_DN must escape the comma inside the CN (RFC 4514 `\\,`, nginx: \"O=Users,CN=client3\\, O=Admins\"), else it reads as a certificate with O=Admins; got {dn:?}\n{f}"
        ));
    }
    report(&t.srv, &problems);
}

/// 1-based lines of the `[[tls.cert]]` table number `idx` in `text`
/// (its header through its last line).
fn cert_block_lines(text: &str, idx: usize) -> std::ops::RangeInclusive<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[tls.cert]]")
        .map(|(i, _)| i)
        .collect();
    let start = headers[idx];
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map(|p| start + p)
        .unwrap_or(lines.len() - 1);
    start + 1..=end + 1
}

/// The line `corral: <kind>: <cfg>:<line>:<col>: <key>: <message>` in
/// `text` for `key`, as (line, message).
fn diagnostic(text: &str, kind: &str, cfg: &Path, key: &str) -> Option<(usize, String)> {
    let mut spellings = vec![cfg.display().to_string()];
    if let Ok(c) = cfg.canonicalize() {
        spellings.push(c.display().to_string());
    }
    for l in text.lines() {
        for p in &spellings {
            let prefix = format!("corral: {kind}: {p}:");
            let Some(at) = l.find(&prefix) else { continue };
            let rest = &l[at + prefix.len()..];
            let mut parts = rest.splitn(3, ':');
            let (Some(line), Some(_col), Some(tail)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(line) = line.parse::<usize>() else {
                continue;
            };
            if let Some(msg) = tail.trim_start().strip_prefix(&format!("{key}: ")) {
                return Some((line, msg.to_string()));
            }
        }
    }
    None
}

#[test]
fn bad_certificate_or_key_files_are_config_errors() {
    let site = Site::new().app("echo_environ.py");
    let dir = site.path().to_path_buf();
    make_standard_pki(&dir);
    genkey(&dir, "other", KeyType::Ec); // an ECDSA key of no certificate
    fs::write(dir.join("junk.pem"), "this is not PEM at all\n").expect("write junk.pem");
    let enc = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            "a.key",
            "-out",
            "enc.key",
            "-aes256",
            "-passout",
            "pass:secret",
        ])
        .current_dir(&dir)
        .status()
        .expect("openssl");
    assert!(
        enc.success(),
        "openssl could not write a passphrase-protected key"
    );
    let plain = site.port();
    let tls = tls_port_besides(plain);
    // (what, index of the bad [[tls.cert]], cert, key, message needle, file named)
    let cases: [(&str, usize, &str, &str, &str, &str); 8] = [
        (
            "a passphrase-protected key",
            0,
            "a.pem",
            "enc.key",
            "holds a passphrase-protected private key",
            "enc.key",
        ),
        (
            "a missing certificate file",
            1,
            "missing.pem",
            "b.key",
            "cannot read",
            "missing.pem",
        ),
        (
            "a missing key file",
            0,
            "a.pem",
            "missing.key",
            "cannot read",
            "missing.key",
        ),
        (
            "a certificate file that is not PEM",
            1,
            "junk.pem",
            "b.key",
            "holds no certificate",
            "junk.pem",
        ),
        (
            "a certificate file holding only a key",
            0,
            "other.key",
            "a.key",
            "holds no certificate",
            "other.key",
        ),
        (
            "a key file holding only a certificate",
            1,
            "b.pem",
            "a.pem",
            "holds no private key",
            "a.pem",
        ),
        (
            "the key of another certificate (both ECDSA)",
            0,
            "a.pem",
            "other.key",
            "does not match the certificate",
            "other.key",
        ),
        (
            "an ECDSA key for an RSA certificate",
            1,
            "b.pem",
            "a.key",
            "does not match the certificate",
            "a.key",
        ),
    ];
    let mut problems = Vec::new();
    for (n, (what, idx, cert, key, needle, file)) in cases.iter().enumerate() {
        let mut conf = TlsConf::default();
        conf.certs[*idx].0 = cert.to_string();
        conf.certs[*idx].1 = key.to_string();
        let text = conf.text(tls).replace("{port}", &plain.to_string());
        let cfg = dir.join(format!("bad-{n}.toml"));
        fs::write(&cfg, &text).expect("write config");
        let block = cert_block_lines(&text, *idx);
        let key_name = format!("tls.cert[{idx}]");
        let expect = format!(
            "corral: error: {}:<line {}-{}>:<col>: {key_name}: ...{needle}... naming {file}",
            cfg.display(),
            block.start(),
            block.end()
        );
        let check = run_with_timeout(
            Command::new(CORRAL).arg("check").arg("--config").arg(&cfg),
            CMD_TIMEOUT,
        );
        let serve = run_with_timeout(
            Command::new(CORRAL).arg("serve").arg("--config").arg(&cfg),
            Duration::from_secs(15),
        );
        for (cmd, out) in [("check", &check), ("serve", &serve)] {
            let found = diagnostic(&out.stderr, "error", &cfg, &key_name);
            let ok = out.code() == Some(1)
                && matches!(&found, Some((line, msg)) if block.contains(line) && msg.contains(needle) && msg.contains(file))
                && !out.stderr.contains("corral ready");
            if !ok {
                problems.push(format!(
                    "{what}: `corral {cmd}` should exit 1 with `{expect}`; found {found:?}\n{out}\n---- {} ----\n{text}",
                    cfg.display()
                ));
            }
        }
    }
    if !problems.is_empty() {
        panic!(
            "{} problem(s):\n\n{}",
            problems.len(),
            problems.join("\n\n")
        );
    }
}

#[test]
fn expired_certificate_and_uncovered_hosts_are_warnings() {
    let site = Site::new().app("echo_environ.py");
    let dir = site.path().to_path_buf();
    make_standard_pki(&dir);
    make_expired(&dir, "old", "old.test", "ca");
    let plain = site.port();
    let tls = tls_port_besides(plain);
    let mut problems = Vec::new();

    let mut expired = TlsConf::default();
    expired.certs[1] = ("old.pem".into(), "old.key".into(), r#"["old.test"]"#.into());
    let mut uncovered = TlsConf::default();
    uncovered.certs[1].2 = r#"["b.test", "c.test"]"#.into();
    let cases: [(&str, TlsConf, &[&str], &str); 2] = [
        (
            "an expired certificate",
            expired,
            &["old.pem", "expired on"],
            "cert = \"old.pem\"",
        ),
        (
            "a host the certificate does not cover",
            uncovered,
            &["b.pem", "does not cover host", "c.test"],
            "cert = \"b.pem\"",
        ),
    ];
    for (n, (what, conf, needles, cert_line)) in cases.iter().enumerate() {
        let text = conf.text(tls).replace("{port}", &plain.to_string());
        let cfg = dir.join(format!("warn-{n}.toml"));
        fs::write(&cfg, &text).expect("write config");
        let want_line = line_of(&text, cert_line);
        let out = run_with_timeout(
            Command::new(CORRAL).arg("check").arg("--config").arg(&cfg),
            CMD_TIMEOUT,
        );
        let found = diagnostic(&out.stderr, "warning", &cfg, "tls.cert[1].cert");
        let ok = out.code() == Some(0)
            && matches!(&found, Some((line, msg)) if *line == want_line && needles.iter().all(|w| msg.contains(w)));
        if !ok {
            problems.push(format!(
                "{what}: `corral check` should exit 0 with `corral: warning: {}:{want_line}:<col>: tls.cert[1].cert: ...{needles:?}...`; found {found:?}\n{out}\n---- config ----\n{text}",
                cfg.display()
            ));
        }
        if n == 1 && out.stderr.contains("`b.test`") {
            problems.push(format!(
                "b.test is covered by b.pem and must not be warned about\n{out}"
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "{} problem(s):\n\n{}",
            problems.len(),
            problems.join("\n\n")
        );
    }
}

/// A child process with line-wise stdout (through a channel) and stdin;
/// killed on drop.
struct Driven {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr_path: PathBuf,
}

impl Driven {
    fn spawn(cmd: &mut Command, stderr_path: PathBuf) -> Driven {
        let err = fs::File::create(&stderr_path).expect("create stderr file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Driven {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            stderr_path,
        }
    }

    /// The next stdout line, or an error describing what was seen.
    fn next_line(&mut self, timeout: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Ok(l)
            }
            Err(e) => Err(format!(
                "no line from the python client within {timeout:?} ({e}); stdout so far: {:?}\n---- python stderr ----\n{}",
                self.seen,
                fs::read_to_string(&self.stderr_path).unwrap_or_default()
            )),
        }
    }

    fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
            let _ = stdin.flush();
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_certificates_without_failing_a_request() {
    let t = start_tls(&TlsConf::default(), |dir| {
        // The replacement for a.pem: same names, new key, new serial.
        make_leaf(
            dir,
            "a2",
            KeyType::Ec,
            "/CN=a.test",
            &["a.test", "*.a.test"],
            "ca",
            false,
        );
        genkey(dir, "stray", KeyType::Ec);
        fs::copy(dir.join("a.pem"), dir.join("a-old.pem")).expect("copy a.pem");
    });
    let dir = t.dir().to_path_buf();
    let script = dir.join("reload.py");
    fs::write(&script, format!("{PY_PRELUDE}\n{PY_RELOAD}")).expect("write reload.py");
    let mut py = Driven::spawn(
        Command::new("python3")
            .arg(&script)
            .arg(t.tls.to_string())
            .arg(t.ca())
            .arg(t.file("a-old.pem"))
            .arg(t.file("a2.pem"))
            .current_dir(&dir),
        dir.join("reload.py.stderr"),
    );
    let step = |py: &mut Driven, t: &TlsServer, timeout: u64| -> String {
        py.next_line(Duration::from_secs(timeout))
            .unwrap_or_else(|e| t.srv.fail(e))
    };
    let ready = step(&mut py, &t, 30);
    if ready != "READY" {
        t.srv
            .fail(format!("python client: expected READY, got {ready:?}"));
    }
    let old_edge = t.srv.edge_pid();
    let drained_before = count_lines(&t.srv.stderr(), "draining the previous edge");

    // New certificate in place (rename: no half-written file is ever seen).
    for (src, dst) in [("a2.pem", "a.pem"), ("a2.key", "a.key")] {
        let tmp = dir.join(format!("{dst}.tmp"));
        fs::copy(dir.join(src), &tmp).expect("copy new cert");
        fs::rename(&tmp, dir.join(dst)).expect("rename new cert");
    }
    t.srv.signal("HUP");
    py.send("hup");
    if !t.srv.wait_for_stderr_count(
        "draining the previous edge",
        drained_before + 1,
        Duration::from_secs(30),
    ) {
        t.srv
            .fail("after SIGHUP, no `edge <pid> ready; draining the previous edge` within 30 s");
    }
    py.send("ready");
    let line = step(&mut py, &t, 60);
    let r = Json::parse(&line)
        .unwrap_or_else(|e| t.srv.fail(format!("python client: bad JSON {line:?}: {e}")));
    let mut problems = Vec::new();
    if r["c1_first_status"].as_i64() != Some(200) || r["c1_cert"].as_str() != Some("old") {
        problems.push(format!(
            "before the reload: expected 200 with the old certificate, got {r:?}"
        ));
    }
    if r["c1_inflight_status"].as_i64() != Some(200)
        || !r["c1_inflight_body"]
            .as_str()
            .unwrap_or("")
            .starts_with("slept 3")
    {
        problems.push(format!(
            "the request sent on the old keep-alive connection right after SIGHUP (GET /sleep?s=3) must complete with 200 `slept 3...` while the old edge drains; got status {:?} body {:?} error {:?} after {:?} s",
            r["c1_inflight_status"], r["c1_inflight_body"], r["c1_inflight_error"], r["c1_inflight_secs"]
        ));
    }
    if r["c1_after"].as_str() != Some("eof") {
        problems.push(format!(
            "the old edge should close the idle keep-alive connection once drained; got {:?} after {:?} s",
            r["c1_after"], r["c1_close_secs"]
        ));
    }
    let new_conn = r["new_conn"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .to_vec();
    let first_new = new_conn
        .iter()
        .position(|c| c["cert"].as_str() == Some("new"));
    match first_new {
        None => problems.push(format!(
            "new connections after `draining the previous edge` never saw the new certificate: {new_conn:?}"
        )),
        Some(_) => {
            // The old edge may still accept for a moment after being told to drain.
            let late_old: Vec<&Json> = new_conn
                .iter()
                .filter(|c| c["cert"].as_str() != Some("new") && c["after"].as_f64().unwrap_or(0.0) > 1.0)
                .collect();
            if !late_old.is_empty() {
                problems.push(format!(
                    "more than 1 s after `draining the previous edge`, new connections still got the old certificate: {new_conn:?}"
                ));
            }
        }
    }
    if new_conn.iter().any(|c| c["status"].as_i64() != Some(200)) {
        problems.push(format!(
            "a new connection after the reload failed: {new_conn:?}"
        ));
    }
    let bg_fail = r["bg_fail"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .to_vec();
    if !bg_fail.is_empty() || r["bg_ok"].as_i64().unwrap_or(0) < 10 {
        problems.push(format!(
            "fresh connections during the reload: {:?} succeeded, failures: {bg_fail:?} (certificates seen: {:?})",
            r["bg_ok"], r["bg_certs"]
        ));
    }
    if r["bg_certs"].get("new").is_none() || r["bg_certs"].get("old").is_none() {
        problems.push(format!(
            "fresh connections during the reload should have seen both certificates: {:?}",
            r["bg_certs"]
        ));
    }
    if let Some(old) = old_edge {
        let stopped = format!("edge {old} stopped");
        if !t.srv.wait_for_stderr(&stopped, Duration::from_secs(15)) {
            problems.push(format!(
                "the previous edge {old} did not stop (no `{stopped}` in the log)"
            ));
        }
    }

    // A reload with a key that does not match is refused; the running
    // certificates stay in service.
    let edges_before = edge_pids_in(&t.srv.stderr()).len();
    let refused_before = count_lines(&t.srv.stderr(), "reload refused");
    fs::copy(dir.join("stray.key"), dir.join("a.key.tmp")).expect("copy stray key");
    fs::rename(dir.join("a.key.tmp"), dir.join("a.key")).expect("rename stray key");
    t.srv.signal("HUP");
    if !t.srv.wait_for_stderr_count(
        "reload refused",
        refused_before + 1,
        Duration::from_secs(15),
    ) {
        problems.push(
            "SIGHUP with a key that does not match a.pem: no `reload refused` in the log"
                .to_string(),
        );
    } else {
        let err = t.srv.stderr();
        let line = err
            .lines()
            .rev()
            .find(|l| l.contains("reload refused"))
            .unwrap_or("");
        if !line.contains("a.key") || !line.contains("does not match") {
            problems.push(format!(
                "the refused reload should name a.key and say it does not match: {line:?}"
            ));
        }
    }
    py.send("refused");
    let line = step(&mut py, &t, 30);
    let r2 = Json::parse(&line).unwrap_or(Json::Null);
    if r2["status"].as_i64() != Some(200) || r2["cert"].as_str() != Some("new") {
        problems.push(format!(
            "after the refused reload, new connections should still be served with the last good certificate: {line}"
        ));
    }
    thread::sleep(Duration::from_millis(300));
    if edge_pids_in(&t.srv.stderr()).len() != edges_before {
        problems.push("a refused reload must not start a new edge".to_string());
    }
    report(&t.srv, &problems);
}

/// A request whose head is still arriving when the old edge starts to drain
/// is in flight, not an idle connection: it must be answered.
#[test]
fn reload_finishes_a_request_whose_head_is_still_arriving() {
    let t = start_tls(&TlsConf::default(), |_| {});
    let dir = t.dir().to_path_buf();
    let script = dir.join("partial.py");
    fs::write(&script, format!("{PY_PRELUDE}\n{PY_PARTIAL}")).expect("write partial.py");
    let mut py = Driven::spawn(
        Command::new("python3")
            .arg(&script)
            .arg(t.tls.to_string())
            .arg(t.ca())
            .current_dir(&dir),
        dir.join("partial.py.stderr"),
    );
    let ready = py
        .next_line(Duration::from_secs(30))
        .unwrap_or_else(|e| t.srv.fail(e));
    if ready != "READY" {
        t.srv
            .fail(format!("python client: expected READY, got {ready:?}"));
    }
    let drained_before = count_lines(&t.srv.stderr(), "draining the previous edge");
    t.srv.signal("HUP");
    if !t.srv.wait_for_stderr_count(
        "draining the previous edge",
        drained_before + 1,
        Duration::from_secs(30),
    ) {
        t.srv
            .fail("after SIGHUP, no `edge <pid> ready; draining the previous edge` within 30 s");
    }
    // The old edge has had its SIGTERM; the client sends the rest of the head.
    thread::sleep(Duration::from_millis(500));
    py.send("go");
    let line = py
        .next_line(Duration::from_secs(30))
        .unwrap_or_else(|e| t.srv.fail(e));
    let r = Json::parse(&line).unwrap_or(Json::Null);
    if r["partial"]["status"].as_i64() != Some(200) {
        t.srv.fail(format!(
            "a request whose head was half sent (request line + Host, no final CRLF) when the old edge was told to drain was dropped instead of answered: {:?}\n(for information, a connection with a finished handshake and no request yet: {:?})",
            r["partial"], r["fresh"]
        ));
    }
}

/// A client behind a load balancer: PROXY v1 header, then the TLS handshake.
const PY_PROXY_TLS: &str = r##"
port, ca = int(sys.argv[1]), sys.argv[2]
out = {}
for name, header in (("proxied", b"PROXY TCP4 203.0.113.50 127.0.0.1 40000 443\r\n"), ("bare", b"")):
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(header)
        s = context(ca).wrap_socket(raw, server_hostname="a.test")
        send_get(s, "/pp")
        status, headers, body = read_response(s.makefile("rb"))
        out[name] = {"status": status, "environ": environ(body)}
    except Exception as e:
        out[name] = {"error": repr(e)}
emit(out)
"##;

#[test]
fn proxy_protocol_header_comes_before_the_tls_handshake() {
    let conf = TlsConf {
        proxy_protocol: true,
        ..TlsConf::default()
    };
    let t = start_tls(&conf, |_| {});
    let r = t.python("proxy_tls.py", PY_PROXY_TLS, &[&t.tls.to_string(), &t.ca()]);
    let proxied = &r["proxied"];
    if proxied["status"].as_i64() != Some(200)
        || proxied["environ"]["REMOTE_ADDR"].as_str() != Some("203.0.113.50")
        || proxied["environ"]["wsgi.url_scheme"].as_str() != Some("https")
    {
        t.srv.fail(format!(
            "PROXY header + TLS: want 200, REMOTE_ADDR 203.0.113.50, https; got {proxied:?}"
        ));
    }
    if r["bare"]["status"].as_i64().is_some() {
        t.srv.fail(format!(
            "a TLS connection without the PROXY header was served: {:?}",
            r["bare"]
        ));
    }
    // The plain listener has no PROXY protocol and works as before.
    let plain = t.http("/plain", &[]);
    if plain.status != 200 {
        t.srv.fail(format!("plain listener: {plain}"));
    }
}
