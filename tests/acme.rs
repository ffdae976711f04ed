//! Automatic HTTPS (`[tls.acme]`) end to end against pebble, Let's
//! Encrypt's test CA (Debian package `pebble`), with its challenge ports
//! pointed at corral's listeners and `pebble-challtestsrv` as its DNS
//! (every name resolves to 127.0.0.1):
//!
//! * first issuance by tls-alpn-01 and by http-01 (behind the https
//!   redirect), checked with curl against pebble's own root; the issuer
//!   is pebble's; `corral status` shows it; a `[[tls.cert]]` file beside
//!   it serves its own host (SNI picks);
//! * a restart serves the stored certificate at once, without an order;
//! * renewal (pebble's 60-second certificates) swaps the certificate
//!   under HTTPS load with 0 failed requests;
//! * pebble down at start: HTTP serves, HTTPS for the host fails its
//!   handshake, and the log and `corral status` say why;
//! * two instances sharing a `state_dir` order once, and an instance that
//!   did not order answers the CA for the one that did.
mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const HOSTS: [&str; 2] = ["a.test", "b.test"];
const HELLO: &str = "Hello, World!";
/// With pebble's 60-second certificates: renewal ~15 s after issuance.
const RENEW_SOON: &str = "challenge = \"tls-alpn-01\"\nrenew_before = \"45s\"";

/// pebble and its DNS, stopped on drop.
struct Pebble {
    dir: tempfile::TempDir,
    port: u16,
    management: u16,
    _dns: KillOnDrop,
    _ca: KillOnDrop,
}

impl Pebble {
    /// `validity`: pebble's certificate lifetime in seconds (None: its
    /// default, 5 years).
    fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = tempfile::tempdir().expect("pebble dir");
        listener_certificate(dir.path());
        let (port, management, dns, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let validity = validity.map_or(String::new(), |v| {
            format!(", \"certificateValidityPeriod\": {v}")
        });
        let config = format!(
            "{{\"pebble\": {{\"listenAddress\": \"127.0.0.1:{port}\", \
             \"managementListenAddress\": \"127.0.0.1:{management}\", \
             \"certificate\": \"pebble.pem\", \"privateKey\": \"pebble.key\", \
             \"httpPort\": {http_port}, \"tlsPort\": {tls_port}, \"ocspResponderURL\": \"\", \
             \"externalAccountBindingRequired\": false{validity}}}}}"
        );
        fs::write(dir.path().join("pebble.json"), config).unwrap();
        let log = |name: &str| Stdio::from(fs::File::create(dir.path().join(name)).unwrap());
        let dns_child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .stdout(log("dns.log"))
            .stderr(log("dns.err"))
            .spawn()
            .expect("pebble-challtestsrv (scripts/deps.sh --test installs pebble)");
        let dns_child = KillOnDrop(dns_child);
        assert!(
            wait_until(Duration::from_secs(10), || port_open(dns_mgmt)),
            "challtestsrv never listened"
        );
        let ca = Command::new("pebble")
            .args(["-config", "pebble.json", "-strict=false"])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .current_dir(dir.path())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (scripts/deps.sh --test installs it)");
        let pebble = Pebble {
            dir,
            port,
            management,
            _dns: dns_child,
            _ca: KillOnDrop(ca),
        };
        assert!(
            wait_until(Duration::from_secs(10), || port_open(port)
                && port_open(management)),
            "pebble never listened:\n{}",
            pebble.log()
        );
        pebble
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA pebble's own HTTPS listener is signed by (`ca_roots`).
    fn listener_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root of what pebble issues, for clients to verify with.
    fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let out = curl(&[
            "-sS",
            "--fail",
            "--cacert",
            self.listener_ca().to_str().unwrap(),
            "-o",
            path.to_str().unwrap(),
            &url,
        ]);
        assert!(out.success(), "fetching pebble's root: {out}");
        path
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// New orders pebble took. (Not its `POST /order-plz` lines: pebble
    /// rejects 5% of good nonces, and the client's retry of such a POST
    /// is one order.)
    fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }
}

/// A CA and a localhost certificate for pebble's HTTPS listener (the
/// Debian package ships none).
fn listener_certificate(dir: &Path) {
    let run = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("openssl").args(args).current_dir(dir),
            Duration::from_secs(30),
        );
        assert!(out.success(), "openssl: {out}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pebble listener CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "pebble.key",
            "-out",
            "pebble.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "pebble.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "pebble.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A hello site with a TLS listener on `tls_port` and `[tls.acme]` for
/// a.test and b.test from `directory`.
fn acme_site(
    port: u16,
    tls_port: u16,
    directory: &str,
    ca: &Path,
    state: &Path,
    acme_extra: &str,
    tls_extra: &str,
) -> Site {
    let config = app_config("hello:application", 1, "").replacen(
        "[server]\n",
        "[server]\ncontrol_socket = \"corral.sock\"\n",
        1,
    ) + &format!(
        "\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n{tls_extra}\n\
         [tls.acme]\nhosts = [\"a.test\", \"b.test\"]\nemail = \"ops@example.com\"\n\
         directory = \"{directory}\"\nca_roots = \"{}\"\nstate_dir = \"{}\"\n{acme_extra}\n",
        ca.display(),
        state.display()
    );
    Site::new().on_port(port).app("hello.py").config(&config)
}

/// One test's ports and state folder.
struct Setup {
    port: u16,
    tls_port: u16,
    home: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            port: free_port(),
            tls_port: free_port(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.home.path().join("acme")
    }

    /// The hello site ordering from `pebble`.
    fn site(&self, pebble: &Pebble, acme_extra: &str, tls_extra: &str) -> Site {
        let (dir, ca) = (pebble.directory(), pebble.listener_ca());
        let state = self.state();
        acme_site(
            self.port,
            self.tls_port,
            &dir,
            &ca,
            &state,
            acme_extra,
            tls_extra,
        )
    }
}

/// GET https://<host>:<tls_port>/ with curl, verified against `root`:
/// (status, body, curl's verbose stderr).
fn https_get(host: &str, tls_port: u16, root: &Path) -> (u16, String, String) {
    let url = format!("https://{host}:{tls_port}/");
    let resolve = format!("{host}:{tls_port}:127.0.0.1");
    let (status, body, out) = curl_fetch(
        &url,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            root.to_str().unwrap(),
            "-v",
        ],
    );
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        out.stderr,
    )
}

fn status_json(srv: &Running) -> serde_json::Value {
    let cfg = srv.config_path();
    let out = corral(
        &["status", "--json", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(out.success(), "corral status: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}"))
}

fn acme_certificate(srv: &Running) -> serde_json::Value {
    let status = status_json(srv);
    let certs = status["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    certs
        .into_iter()
        .find(|c| c["source"] == "acme")
        .unwrap_or_else(|| srv.fail(format!("no acme certificate in status: {status}")))
}

/// Waits for `needle` in corral's log, failing with the log after `secs`.
#[track_caller]
fn expect_log(srv: &Running, needle: &str, secs: u64) {
    if !srv.wait_for_stderr(needle, Duration::from_secs(secs)) {
        srv.fail(format!("no {needle:?} in the log within {secs} s"));
    }
}

#[track_caller]
fn wait_issued(srv: &Running) {
    expect_log(srv, "acme: serving the certificate", 60);
}

#[test]
fn tls_alpn_01_issues_and_a_restart_reuses_the_stored_certificate() {
    let setup = Setup::new();
    let (tls_port, state) = (setup.tls_port, setup.state());
    let pebble = Pebble::start(setup.port, tls_port, None);
    let site = |extra: &str| setup.site(&pebble, extra, "");
    let first = site("challenge = \"tls-alpn-01\"");
    let check = first.check();
    assert!(
        check.success()
            && check
                .stdout
                .contains("by tls-alpn-01 (set in tls.acme.challenge)"),
        "{check}"
    );
    let srv = first.start();
    wait_issued(&srv);
    let root = pebble.issuing_root();
    for host in HOSTS {
        let (status, body, verbose) = https_get(host, tls_port, &root);
        assert_eq!(
            (status, body.as_str()),
            (200, HELLO),
            "{host}: {verbose}\n{}",
            srv.stderr_tail()
        );
        assert!(
            verbose.contains("issuer: CN=Pebble Intermediate CA"),
            "{host}'s issuer:\n{verbose}"
        );
    }
    let cert = acme_certificate(&srv);
    assert!(
        cert["issuer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Pebble Intermediate CA"),
        "{cert}"
    );
    assert_eq!(cert["hosts"], serde_json::json!(HOSTS), "{cert}");
    assert!(
        cert["days_left"].as_i64().unwrap_or_default() > 300,
        "pebble's default is 5 years: {cert}"
    );
    let text = corral(
        &["status", "--config", srv.config_path().to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(
        text.stdout
            .contains("acme a.test, b.test: issued by Pebble Intermediate CA"),
        "{text}"
    );
    // The keys are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("a.test.pem")), 0o600);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    let serial = cert["serial"].clone();
    drop(srv);

    // Restarted: HTTPS at once, the same certificate, no new order.
    let srv = site("challenge = \"tls-alpn-01\"").start();
    let (status, body, verbose) = https_get("b.test", tls_port, &root);
    assert_eq!(
        (status, body.as_str()),
        (200, HELLO),
        "{verbose}\n{}",
        srv.stderr_tail()
    );
    assert_eq!(acme_certificate(&srv)["serial"], serial);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pebble.orders(),
        1,
        "a restart ordered again:\n{}",
        srv.stderr()
    );
    assert!(!srv.stderr().contains("acme: ordering"), "{}", srv.stderr());
}

#[test]
fn http_01_issues_behind_the_https_redirect() {
    let setup = Setup::new();
    let (port, tls_port) = (setup.port, setup.tls_port);
    let pebble = Pebble::start(port, tls_port, None);
    // A certificate file for c.test beside the ACME hosts: SNI picks.
    let own = setup.home.path();
    let cert_file = format!(
        "redirect_http = true\n[[tls.cert]]\ncert = \"{0}/c.pem\"\nkey = \"{0}/c.key\"\nhosts = [\"c.test\"]\n",
        own.display()
    );
    self_signed_cert_as(own, ("c.pem", "c.key"), "c.test", "DNS:c.test");
    let site = setup.site(&pebble, "challenge = \"http-01\"", &cert_file);
    let srv = site.start();
    wait_issued(&srv);
    // The CA fetched its tokens over plain HTTP and got them, not a 301.
    let log = srv.stdout();
    let checks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/.well-known/acme-challenge/"))
        .collect();
    assert!(
        !checks.is_empty(),
        "no challenge fetch in the access log:\n{log}"
    );
    assert!(
        checks
            .iter()
            .all(|l| l.contains("\" 200 ") && l.contains("Pebble")),
        "{checks:#?}"
    );
    // Everything else is still redirected; unknown tokens for an ACME
    // host are 404; the prefix on another host is the site's own.
    let (status, _, _) = curl_fetch(&format!("http://127.0.0.1:{port}/page"), &[]);
    assert_eq!(status, 301);
    let challenge = format!("http://127.0.0.1:{port}/.well-known/acme-challenge/nope");
    let (status, _, _) = curl_fetch(&challenge, &["-H", "Host: a.test"]);
    assert_eq!(status, 404);
    let (status, _, _) = curl_fetch(&challenge, &["-H", "Host: c.test"]);
    assert_eq!(status, 301, "not an ACME host: redirected like any path");
    let root = pebble.issuing_root();
    let (status, body, verbose) = https_get("a.test", tls_port, &root);
    assert_eq!((status, body.as_str()), (200, HELLO), "{verbose}");
    assert!(
        verbose.contains("issuer: CN=Pebble Intermediate CA"),
        "{verbose}"
    );
    let (status, body, verbose) = https_get("c.test", tls_port, &own.join("c.pem"));
    assert_eq!((status, body.as_str()), (200, HELLO), "{verbose}");
    assert!(
        verbose.contains("issuer: CN=c.test"),
        "the file's certificate: {verbose}"
    );
}

#[test]
fn renewal_swaps_the_certificate_under_load_with_no_failed_request() {
    let setup = Setup::new();
    let tls_port = setup.tls_port;
    // 60-second certificates renewed with 45 s left: a swap ~15 s in.
    let pebble = Pebble::start(setup.port, tls_port, Some(60));
    let srv = setup.site(&pebble, RENEW_SOON, "").start();
    wait_issued(&srv);
    let root = pebble.issuing_root();
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/tls_watch.py"
            ))
            .args(["--port", &tls_port.to_string(), "--host", "a.test"])
            .args(["--cafile", root.to_str().unwrap(), "--expect", HELLO])
            .args(["--seconds", "40", "--threads", "4", "--until", "2"]),
        Duration::from_secs(90),
    );
    assert!(out.success(), "tls_watch.py: {out}");
    let result: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("renewal under load: {result}");
    let sent = result["sent"].as_u64().unwrap_or_default();
    assert!(sent > 100, "too little load to mean anything: {result}");
    assert_eq!(result["failed"], 0, "{result}\n{}", srv.stderr_tail());
    assert_eq!(
        result["serials"].as_array().map(Vec::len),
        Some(2),
        "no swap seen: {result}\n{}",
        srv.stderr()
    );
    assert!(
        srv.stderr()
            .contains("(the certificate is due for renewal)"),
        "{}",
        srv.stderr()
    );
}

#[test]
fn pebble_down_at_start_serves_http_and_says_why() {
    let setup = Setup::new();
    let tls_port = setup.tls_port;
    let pebble = Pebble::start(setup.port, tls_port, None);
    let closed = free_port();
    let directory = format!("https://127.0.0.1:{closed}/dir");
    let ca = pebble.listener_ca();
    let srv = acme_site(
        setup.port,
        tls_port,
        &directory,
        &ca,
        &setup.state(),
        "",
        "",
    )
    .start();
    assert_eq!(
        srv.get("/").status,
        200,
        "HTTP serves while there is no certificate"
    );
    expect_log(&srv, "acme: no certificate for a.test, b.test: cannot ", 20);
    assert!(
        srv.stderr().contains("trying again in 120s"),
        "{}",
        srv.stderr()
    );
    let (status, _, verbose) = https_get("a.test", tls_port, &pebble.issuing_root());
    assert_eq!(
        status, 0,
        "a handshake with no certificate must fail: {verbose}"
    );
    assert!(
        srv.wait_for_stderr(
            "TLS handshake for `a.test` refused: no certificate yet",
            Duration::from_secs(5)
        ),
        "{}",
        srv.stderr()
    );
    let cert = acme_certificate(&srv);
    assert!(cert["issuer"].is_null(), "{cert}");
    assert!(
        cert["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&closed.to_string()),
        "{cert}"
    );
    assert!(cert["next_order"].is_string(), "{cert}");
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn instances_sharing_a_state_dir_order_once_and_answer_for_each_other() {
    let (port_a, tls_a, port_b, tls_b) = (free_port(), free_port(), free_port(), free_port());
    // The CA checks instance A's ports only, as if A were the one the
    // load balancer sent it to.
    let pebble = Pebble::start(port_a, tls_a, None);
    let state_home = tempfile::tempdir().unwrap();
    let state = state_home.path().join("acme");
    let dir = pebble.directory();
    let ca = pebble.listener_ca();
    let http01 = "challenge = \"http-01\"";
    let a = acme_site(port_a, tls_a, &dir, &ca, &state, http01, "").spawn();
    let b = acme_site(port_b, tls_b, &dir, &ca, &state, http01, "").spawn();
    wait_issued(&a);
    wait_issued(&b);
    let orderers = [&a, &b]
        .iter()
        .filter(|s| s.stderr().contains("acme: ordering"))
        .count();
    assert_eq!(orderers, 1, "A:\n{}\nB:\n{}", a.stderr(), b.stderr());
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert_eq!(
        acme_certificate(&a)["serial"],
        acme_certificate(&b)["serial"]
    );
    let root = pebble.issuing_root();
    for tls_port in [tls_a, tls_b] {
        let (status, body, verbose) = https_get("a.test", tls_port, &root);
        assert_eq!((status, body.as_str()), (200, HELLO), "{verbose}");
    }
    // An answer published by another instance (a file in state_dir) is
    // served by this one.
    fs::write(
        state.join("challenges/http-Tok_en-1"),
        "Tok_en-1.thumbprint",
    )
    .unwrap();
    let (status, body, _) = curl_fetch(
        &format!("http://127.0.0.1:{port_a}/.well-known/acme-challenge/Tok_en-1"),
        &["-H", "Host: b.test:80"],
    );
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"Tok_en-1.thumbprint"[..])
    );
    let (status, _, _) = curl_fetch(
        &format!("http://127.0.0.1:{port_b}/.well-known/acme-challenge/..%2Fa.test.pem"),
        &["-H", "Host: a.test"],
    );
    assert_eq!(status, 404, "a token is a name, never a path");
}

#[test]
fn check_explains_bad_acme_settings() {
    let site = Site::new().app("hello.py").config(
        &(app_config("hello:application", 1, "")
            + "\n[tls]\nlisten = [\"127.0.0.1:0\"]\n\n[tls.acme]\nhosts = [\"*.example.com\", \"ok.example.com\", \"ok.example.com\"]\n\
               email = \"nobody\"\ndirectory = \"http://ca.example/dir\"\nchallenge = \"dns-01\"\nrenew_before = \"0s\"\n"),
    );
    let out = site.check();
    assert!(!out.success(), "{out}");
    for (key, words) in [
        ("tls.acme.hosts[0]", "dns-01"),
        ("tls.acme.hosts[2]", "listed twice"),
        ("tls.acme.email", "not an email address"),
        ("tls.acme.directory", "not an https URL"),
        ("tls.acme.challenge", "\"tls-alpn-01\", \"http-01\""),
        ("tls.acme.renew_before", "more than 0"),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"));
        assert!(line.contains(words), "{key}: {line}\n{out}");
    }
}

#[test]
fn a_failed_renewal_keeps_the_current_certificate_and_backs_off() {
    let setup = Setup::new();
    let tls_port = setup.tls_port;
    let pebble = Pebble::start(setup.port, tls_port, Some(60));
    // Kept apart: the CA's folder goes with it.
    let ca = setup.home.path().join("listener-ca.pem");
    fs::copy(pebble.listener_ca(), &ca).unwrap();
    let directory = pebble.directory();
    let state = setup.state();
    let srv = acme_site(
        setup.port, tls_port, &directory, &ca, &state, RENEW_SOON, "",
    )
    .start();
    wait_issued(&srv);
    let root = setup.home.path().join("root.pem");
    fs::copy(pebble.issuing_root(), &root).unwrap();
    let serial = acme_certificate(&srv)["serial"].clone();
    drop(pebble); // the CA goes away before the renewal, ~15 s in
    expect_log(
        &srv,
        "acme: renewing the certificate for a.test, b.test failed: ",
        40,
    );
    assert!(
        srv.stderr().contains("still serving the current one"),
        "{}",
        srv.stderr()
    );
    let (status, body, verbose) = https_get("a.test", tls_port, &root);
    assert_eq!((status, body.as_str()), (200, HELLO), "{verbose}");
    let cert = acme_certificate(&srv);
    assert_eq!(cert["serial"], serial, "{cert}");
    assert!(cert["last_error"].is_string(), "{cert}");
    // Backed off (2 minutes), not looping on the failing CA.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        srv.stderr().matches("acme: ordering").count(),
        2,
        "{}",
        srv.stderr()
    );
}

#[test]
fn a_failed_validation_logs_the_cas_problem_document() {
    let setup = Setup::new();
    // The CA checks a port nobody listens on.
    let pebble = Pebble::start(setup.port, free_port(), None);
    let srv = setup
        .site(&pebble, "challenge = \"tls-alpn-01\"", "")
        .start();
    expect_log(&srv, "acme: no certificate for a.test, b.test: ", 30);
    let log = srv.stderr();
    assert!(
        log.contains("urn:ietf:params:acme:error:"),
        "the CA's problem type:\n{log}"
    );
    assert!(log.contains("tls-alpn-01"), "{log}");
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn check_refuses_tls_alpn_01_behind_required_client_certificates() {
    let site = Site::new().app("hello.py");
    self_signed_cert_as(site.path(), ("ca.pem", "ca.key"), "clients", "DNS:clients");
    let site = site.config(
        &(app_config("hello:application", 1, "")
            + "\n[tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca = \"ca.pem\"\n\n[tls.acme]\nhosts = [\"a.test\"]\n"),
    );
    let out = site.check();
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("tls.acme.challenge: tls-alpn-01 cannot pass tls.client_auth = \"required\""),
        "{out}"
    );
}
