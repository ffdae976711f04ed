//! Repeated static requests. A request that repeats one answered before
//! from a cached file is answered by the edge's shortcut (`conn::shortcut`,
//! `files::replay`) instead of the full request path; a client must not be
//! able to tell. Checked with Python's http.client on one keep-alive
//! connection (so the repeats reach the edge thread that answered the
//! first), strict decoders for every coding, and raw pipelined requests:
//! the same head field for field and in order, the same bytes; every file
//! change seen at once; rate limits and draining as on the full path.
mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const APP: &str = "static_app:application";

/// One keep-alive connection (TLS when `tls`; its certificate is not
/// checked), driven by Python's http.client through
/// `plan`: requests (`method`, `target`, `headers`), and file changes
/// between them (`write` a file with `data` as latin-1 text, `remove` one,
/// both relative to the site folder). One JSON object per request: status,
/// headers in order, the body's sha256 as sent and as decoded by its
/// Content-Encoding, and whether the server closed the connection.
const DRIVER: &str = r#"
import brotli, gzip, hashlib, http.client, json, os, ssl, sys, time, zstandard
port, site, plan, tls = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "tls"
decode = {None: lambda b: b, "gzip": gzip.decompress, "br": brotli.decompress,
          "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)}
if tls:
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                    context=ssl._create_unverified_context())
else:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for step in plan:
    if "write" in step:
        with open(os.path.join(site, step["write"]), "wb") as f:
            f.write(step["data"].encode("latin-1"))
        time.sleep(0.05)
        continue
    if "remove" in step:
        os.remove(os.path.join(site, step["remove"]))
        time.sleep(0.05)
        continue
    c.putrequest(step["method"], step["target"], skip_host=True, skip_accept_encoding=True)
    for k, v in step["headers"]:
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    plain = decode[r.getheader("content-encoding")](body) if body else b""
    print(json.dumps({"status": r.status, "headers": r.getheaders(),
                      "sha": hashlib.sha256(body).hexdigest(),
                      "plain": hashlib.sha256(plain).hexdigest(),
                      "closed": r.will_close}), flush=True)
    if r.will_close:
        c.close()
"#;

fn drive(srv: &Running, plan: &Value) -> Vec<Value> {
    drive_on(srv, srv.port, false, plan)
}

fn drive_on(srv: &Running, port: u16, tls: bool, plan: &Value) -> Vec<Value> {
    let out = run_with_timeout(
        std::process::Command::new(venv().join("bin/python"))
            .args(["-c", DRIVER])
            .arg(port.to_string())
            .arg(srv.path())
            .arg(plan.to_string())
            .arg(if tls { "tls" } else { "plain" }),
        Duration::from_secs(90),
    );
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn get(target: &str, headers: &[(&str, &str)]) -> Value {
    json!({"method": "GET", "target": target, "headers": headers})
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn header<'a>(answer: &'a Value, name: &str) -> Option<&'a str> {
    answer["headers"].as_array()?.iter().find_map(|pair| {
        let k = pair[0].as_str()?;
        k.eq_ignore_ascii_case(name).then(|| pair[1].as_str())?
    })
}

/// Everything of an answer but what each answer has of its own (Date and
/// X-Request-ID), with the fields in order.
fn steady(answer: &Value) -> Value {
    let mut a = answer.clone();
    if let Some(fields) = a["headers"].as_array_mut() {
        fields.retain(|p| {
            let k = p[0].as_str().unwrap_or_default();
            !k.eq_ignore_ascii_case("date") && !k.eq_ignore_ascii_case("x-request-id")
        });
    }
    a
}

/// A browser's request for a stylesheet, less what would take it off the
/// shortcut (conditionals).
const BROWSER: &[(&str, &str)] = &[
    ("Host", "example.test"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"),
    ("Accept", "text/css,*/*;q=0.1"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Referer", "http://example.test/page"),
    ("Sec-Fetch-Dest", "style"),
    ("Cookie", "session=abc"),
    ("Connection", "keep-alive"),
];

fn css(size: usize) -> String {
    (0..)
        .map(|i| format!(".rule-{i} {{ color: #{:06x}; margin: 0 auto; }}\n", i * 37))
        .take_while({
            let mut total = 0;
            move |line| {
                total += line.len();
                total <= size
            }
        })
        .collect()
}

/// Every kind of cached answer, four times each on one connection: the
/// first from the full path, the rest given again. They carry the same
/// fields in the same order, the same bytes, each its own request id and
/// date; the access log has a line for each, as for the first.
#[test]
fn repeated_requests_get_the_first_answer_field_for_field_and_byte_for_byte() {
    let style = css(6000);
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
    let sibling = "precompressed, not really gzip but what the file says";
    let gz = gzip_bytes(sibling.as_bytes());
    let config = app_config(APP, 1, "") + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let srv = Site::new()
        .app("static_app.py")
        .file("files/app.css", &style)
        .file("files/blob.bin", &binary)
        .file("files/note.txt", sibling)
        .file("files/note.txt.gz", &gz)
        .config(&config)
        .start();
    let minimal: &[(&str, &str)] = &[("Host", "127.0.0.1")];
    let head = |target: &str, headers: &[(&str, &str)]| json!({"method": "HEAD", "target": target, "headers": headers});
    let asks = [
        (get("/static/app.css", BROWSER), sha(style.as_bytes())),
        (get("/static/app.css", minimal), sha(style.as_bytes())),
        (head("/static/app.css", BROWSER), sha(b"")),
        (get("/static/blob.bin?v=3", BROWSER), sha(&binary)),
        (
            get(
                "/static/note.txt",
                &[("Host", "a"), ("Accept-Encoding", "gzip")],
            ),
            sha(sibling.as_bytes()),
        ),
    ];
    let plan: Vec<Value> = asks
        .iter()
        .flat_map(|(ask, _)| std::iter::repeat_n(ask.clone(), 4))
        .collect();
    let answers = drive(&srv, &json!(plan));
    assert_eq!(answers.len(), plan.len(), "{answers:?}");
    let mut ids = std::collections::BTreeSet::new();
    for (i, (ask, plain)) in asks.iter().enumerate() {
        let four = &answers[i * 4..i * 4 + 4];
        for a in four {
            assert_eq!(a["status"], 200, "{ask}: {a}");
            assert_eq!(steady(a), steady(&four[0]), "{ask}: repeat differs");
            assert_eq!(a["plain"].as_str(), Some(plain.as_str()), "{ask}: {a}");
            assert_eq!(header(a, "Connection"), Some("keep-alive"), "{a}");
            assert!(
                header(a, "Date").is_some_and(|d| d.ends_with(" GMT")),
                "{a}"
            );
            ids.insert(header(a, "X-Request-ID").unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        ids.len(),
        answers.len(),
        "each answer has its own id: {ids:?}"
    );
    // The codings a browser asks for were used: the edge's own for the
    // stylesheet, the sibling for the note.
    assert!(
        header(&answers[0], "Content-Encoding").is_some(),
        "{}",
        answers[0]
    );
    assert_eq!(header(&answers[16], "Content-Encoding"), Some("gzip"));
    assert_eq!(answers[16]["sha"].as_str(), Some(sha(&gz).as_str()));
    // One access-log line per request, the repeats like the first.
    let line = "\"GET /static/app.css HTTP/1.1\" 200 ";
    assert!(
        srv.wait_for_stdout(
            "\"GET /static/note.txt HTTP/1.1\" 200",
            Duration::from_secs(5)
        ),
        "{}",
        srv.stdout()
    );
    let logged = srv.stdout();
    let browser_lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(line) && l.contains("\"http://example.test/page\""))
        .collect();
    assert_eq!(browser_lines.len(), 4, "{logged}");
    assert!(browser_lines.iter().all(|l| l.starts_with("127.0.0.1 ")
        && l.ends_with("\"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0\"")));
    assert_eq!(
        logged
            .matches("\"HEAD /static/app.css HTTP/1.1\" 200 0 ")
            .count(),
        4
    );
}

/// Pipelined repeats in one write: each answered in order, all the same.
#[test]
fn pipelined_repeats_are_answered_in_order() {
    let config = app_config(APP, 1, "") + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let srv = Site::new()
        .app("static_app.py")
        .file("files/x.bin", &data)
        .config(&config)
        .start();
    let one = b"GET /static/x.bin HTTP/1.1\r\nHost: a\r\nUser-Agent: pipe\r\n\r\n";
    let mut conn = srv.connect();
    // Learned first, then five at once, the last for what the app serves.
    conn.send(one).expect("send");
    let first = conn.read_response("GET").expect("first answer");
    let mut five = one.repeat(4);
    five.extend_from_slice(b"HEAD /static/x.bin HTTP/1.1\r\nHost: a\r\n\r\n");
    conn.send(&five).expect("send");
    for i in 0..5 {
        let method = if i == 4 { "HEAD" } else { "GET" };
        let r = conn.read_response(method).expect("pipelined answer");
        assert_eq!(r.status, 200, "#{i}");
        assert_eq!(r.header("content-length"), Some("3000"), "#{i}");
        if method == "GET" {
            assert_eq!(sha(&r.body), sha(&data), "#{i}");
            assert_eq!(r.header("etag"), first.header("etag"));
        } else {
            assert!(r.body.is_empty());
        }
    }
}

/// A file changed between two repeats is answered as it is now: new
/// bytes, a new precompressed sibling taken up and a removed one dropped,
/// and a removed file is a 404.
#[test]
fn a_change_between_repeats_is_seen_at_once() {
    let config = app_config(APP, 1, "") + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let srv = Site::new()
        .app("static_app.py")
        .file("files/v.bin", "version one\n")
        .config(&config)
        .start();
    let ask = get(
        "/static/v.bin",
        &[("Host", "a"), ("Accept-Encoding", "gzip")],
    );
    let gz = gzip_bytes(b"version two, same file\n");
    // Latin-1 text carries the gzip bytes through JSON as they are.
    let gz_text: String = gz.iter().map(|&b| b as char).collect();
    let plan = json!([
        ask, ask,
        {"write": "files/v.bin", "data": "version two, same file\n"},
        ask, ask,
        {"write": "files/v.bin.gz", "data": gz_text},
        ask, ask,
        {"remove": "files/v.bin.gz"},
        ask, ask,
        {"remove": "files/v.bin"},
        ask,
    ]);
    let a = drive(&srv, &plan);
    assert_eq!(a.len(), 9, "{a:?}");
    let one = sha(b"version one\n");
    let two = sha(b"version two, same file\n");
    let bodies: Vec<(i64, Option<&str>, &str)> = a
        .iter()
        .map(|x| {
            let status = x["status"].as_i64().unwrap_or(0);
            (
                status,
                header(x, "Content-Encoding"),
                x["plain"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let want = [
        (200, None, one.as_str()),
        (200, None, &one),
        (200, None, &two),
        (200, None, &two),
        (200, Some("gzip"), &two),
        (200, Some("gzip"), &two),
        (200, None, &two),
        (200, None, &two),
    ];
    assert_eq!(&bodies[..8], &want[..], "{a:#?}");
    assert_eq!(a[8]["status"], 404, "{}", a[8]);
}

/// A rate limit counts repeats too: past the rate they are refused, on
/// the shortcut's connection as on any other.
#[test]
fn repeats_count_against_the_rate_limit() {
    let config = app_config(APP, 1, "")
        + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n"
        + "\n[[limits.route]]\npath = \"/static/\"\nrate = \"2r/s\"\nburst = 2\n";
    let srv = Site::new()
        .app("static_app.py")
        .file("files/r.txt", "rate\n")
        .config(&config)
        .start();
    let plan: Vec<Value> = (0..10)
        .map(|_| get("/static/r.txt", &[("Host", "a")]))
        .collect();
    let answers = drive(&srv, &json!(plan));
    let refused = answers.iter().filter(|a| a["status"] == 429).count();
    let served = answers.iter().filter(|a| a["status"] == 200).count();
    assert!(
        served >= 1 && refused >= 5,
        "{served} served, {refused} refused: {answers:?}"
    );
    assert_eq!(served + refused, answers.len(), "{answers:?}");
}

/// While the edge drains (a reload), a repeat on a kept-alive connection
/// is answered with `Connection: close`, and the connection ends.
#[test]
fn a_repeat_while_draining_closes_its_connection() {
    let config = app_config(APP, 1, "") + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let mut srv = Site::new()
        .app("static_app.py")
        .file("files/d.txt", "drain\n")
        .config(&config)
        .start();
    srv.wait_ready(Duration::from_secs(30));
    let ask = b"GET /static/d.txt HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut conn = srv.connect();
    for _ in 0..3 {
        let r = conn.roundtrip(ask).expect("answer before the reload");
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    srv.signal("HUP");
    assert!(
        srv.wait_for_stderr("edge draining", Duration::from_secs(20)),
        "{}",
        srv.stderr_tail()
    );
    let r = conn.roundtrip(ask).expect("answer while draining");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "drain\n");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(conn.closed_by_peer(Duration::from_secs(5)), "still open");
}

/// Over TLS every repeat carries HSTS, as the first did; over plain HTTP
/// none does.
#[test]
fn repeats_over_tls_carry_hsts_and_plain_ones_do_not() {
    let tls_port = free_port();
    let config = app_config(APP, 1, "")
        + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n"
        + &format!("\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\nhsts = \"max-age=60\"\n")
        + "\n[[tls.cert]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nhosts = [\"localhost\"]\n";
    let site = Site::new()
        .app("static_app.py")
        .file("files/t.txt", "secret\n")
        .config(&config);
    self_signed_cert(site.path());
    let srv = site.start();
    let plan: Vec<Value> = (0..4)
        .map(|_| get("/static/t.txt", &[("Host", "localhost")]))
        .collect();
    for (port, tls) in [(tls_port, true), (srv.port, false)] {
        let answers = drive_on(&srv, port, tls, &json!(plan));
        assert_eq!(answers.len(), 4, "{answers:?}");
        for a in &answers {
            assert_eq!(a["plain"].as_str(), Some(sha(b"secret\n").as_str()), "{a}");
            assert_eq!(steady(a), steady(&answers[0]), "tls {tls}");
            let hsts = header(a, "Strict-Transport-Security");
            assert_eq!(hsts, tls.then_some("max-age=60"), "tls {tls}: {a}");
        }
    }
}

/// A real browser (headless Chromium) fetching a stylesheet twenty times
/// on its kept-alive connection: every answer decodes (br, by what it
/// offers) to the file's exact bytes, and each has its log line.
#[test]
fn a_browser_fetching_a_file_again_and_again_gets_its_exact_bytes() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("chromium is not installed: run scripts/deps.sh --test");
    };
    let style = css(5000);
    let page = r#"<!doctype html><html><body><pre id=out>pending</pre><script>
(async () => {
  const lines = [];
  for (let i = 0; i < 20; i++) {
    const r = await fetch("/static/app.css", {cache: "no-store"});
    const digest = await crypto.subtle.digest("SHA-256", await r.arrayBuffer());
    const hex = [...new Uint8Array(digest)].map(x => x.toString(16).padStart(2, "0")).join("");
    lines.push(hex + " " + r.status + " " + r.headers.get("content-encoding"));
  }
  document.getElementById("out").textContent = lines.join("|");
})();
</script></body></html>"#;
    let config = app_config(APP, 1, "") + "\n[[static]]\nurl = \"/static/\"\ndir = \"files\"\n";
    let srv = Site::new()
        .app("static_app.py")
        .file("files/app.css", &style)
        .file("files/page.html", page)
        .config(&config)
        .start();
    let profile = tempfile::tempdir().expect("tempdir");
    let out = run_with_timeout(
        std::process::Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=20000", "--dump-dom"])
            .arg(format!("http://127.0.0.1:{}/static/page.html", srv.port)),
        Duration::from_secs(90),
    );
    let dom = out.stdout.clone();
    let report = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no report in the page: {out}"));
    let want = format!("{} 200 br", sha(style.as_bytes()));
    let lines: Vec<&str> = report.split('|').collect();
    assert_eq!(lines, vec![want.as_str(); 20], "{}", srv.stderr_tail());
    let logged = "\"GET /static/app.css HTTP/1.1\" 200 ";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while srv.stdout().matches(logged).count() < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = srv.stdout();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(logged)).collect();
    assert_eq!(lines.len(), 20, "{log}");
    assert!(lines.iter().all(|l| l.contains("HeadlessChrome")), "{log}");
}
