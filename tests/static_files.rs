//! Static files served by the edge (`[[static]]`) and compression of app
//! responses (`[compression]`): validators and 304/412, byte ranges,
//! precompressed siblings, index files and redirects, listings, the app
//! fallback, path traversal and symlinks, methods, content types, constant
//! memory for huge files, and gzip/br/zstd of app responses decoded by real
//! clients (Python's gzip, curl).
//!
//! Every test starts its own corral (1 worker) on a temporary folder of real
//! files; the app is tests/apps/static_app.py.
mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const APP: &str = "static_app:application";

/// 2024-01-02 03:04:05 UTC: a fixed mtime, so Last-Modified is predictable.
const T0_SECS: u64 = 1_704_164_645;
const T0_HTTP: &str = "Tue, 02 Jan 2024 03:04:05 GMT";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0_SECS)
}

fn http_date(t: SystemTime) -> String {
    // RFC 7231 IMF-fixdate, computed by hand (no httpdate crate in tests).
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

/// The app config plus `extra` (e.g. `[[static]]` tables) appended.
fn cfg(extra: &str) -> String {
    let mut s = app_config(APP, 1, "");
    s.push('\n');
    s.push_str(extra);
    s
}

/// One `[[static]]` table.
fn mount(url: &str, dir: &str, extra: &str) -> String {
    format!("\n[[static]]\nurl = \"{url}\"\ndir = \"{dir}\"\n{extra}\n")
}

/// What tests/apps/static_app.py's `text_body(size)` returns.
fn text_body(size: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < size {
        out.push_str(&format!(
            "<p>line {i:05}: corral compresses this text</p>\n"
        ));
        i += 1;
    }
    out.truncate(size);
    out.into_bytes()
}

fn hdr<'a>(r: &'a Response, name: &str) -> &'a str {
    r.header(name).unwrap_or("")
}

fn has_vary_accept_encoding(r: &Response) -> bool {
    r.header_all("vary").iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
    })
}

/// Status line and headers only (for failure messages about binary bodies).
fn head_only(r: &Response) -> String {
    let mut s = format!("{} {} {}\n", r.version, r.status, r.reason);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\n"));
    }
    s.push_str(&format!("[{} body bytes]", r.body.len()));
    s
}

/// Headers that legitimately differ between two responses.
fn comparable_headers(r: &Response) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        // Each response has its own date and request id.
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date") && !k.eq_ignore_ascii_case("x-request-id"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    v.sort();
    v
}

/// A brotli stream made of uncompressed meta-blocks (RFC 7932 §9.2):
/// valid brotli that any decoder (curl's libbrotli) accepts, without
/// needing a brotli encoder on the test machine.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, v: u64, bits: u32) {
            self.acc |= v << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn align(&mut self) {
            if self.n > 0 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    b.put(0, 1); // WBITS = 16
    for chunk in data.chunks(32 * 1024) {
        b.put(0, 1); // ISLAST = 0
        b.put(0, 2); // MNIBBLES = 4
        b.put((chunk.len() - 1) as u64, 16); // MLEN - 1
        b.put(1, 1); // ISUNCOMPRESSED
        b.align();
        b.out.extend_from_slice(chunk);
    }
    b.put(1, 1); // ISLAST
    b.put(1, 1); // ISLASTEMPTY
    b.align();
    b.out
}

/// A zstd frame made of raw blocks (RFC 8878): valid zstd without an encoder.
fn zstd_raw(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD]; // magic
    out.push(0xE0); // FCS 8 bytes, single segment, no checksum, no dict
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(64 * 1024).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let last = (i + 1 == n) as u32;
        let h = last | ((c.len() as u32) << 3); // block type 0 = raw
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

// ---------------------------------------------------------------------------
// validators, 304, 412
// ---------------------------------------------------------------------------

#[test]
fn validators_and_conditional_requests() {
    let data = pattern_bytes(5000, 1);
    let site = Site::new()
        .app("static_app.py")
        .file("files/data.bin", &data)
        .config(&cfg(&mount(
            "/static/",
            "files",
            "cache_control = \"public, max-age=60\"",
        )));
    let file = site.path().join("files/data.bin");
    let site_path = site.path().to_path_buf();
    set_mtime(&file, t0());
    let srv = site.start();

    let r = srv.get("/static/data.bin");
    srv.assert_status(&r, 200, "GET /static/data.bin");
    assert!(r.body == data, "body differs from the file\n{r}");
    let etag = hdr(&r, "etag").to_string();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "ETag must be a strong quoted entity tag, got {etag:?}\n{r}"
    );
    assert_eq!(hdr(&r, "last-modified"), T0_HTTP, "Last-Modified\n{r}");
    assert_eq!(hdr(&r, "cache-control"), "public, max-age=60", "{r}");
    assert_eq!(hdr(&r, "content-length"), "5000", "{r}");
    assert_eq!(hdr(&r, "accept-ranges"), "bytes", "{r}");
    let again = srv.get("/static/data.bin");
    assert_eq!(hdr(&again, "etag"), etag, "ETag must be stable");

    let weak = format!("W/{etag}");
    let list = format!("\"nope\", W/\"other\", {etag}");
    let list_nospace = format!("\"nope\",{etag}");
    let match_list = format!("\"nope\", {etag}");
    let hour_before = http_date(t0() - Duration::from_secs(3600));
    let day_before = http_date(t0() - Duration::from_secs(86_400));
    let day_after = http_date(t0() + Duration::from_secs(86_400));
    assert_eq!(http_date(t0()), T0_HTTP, "test's own date formatter");

    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<(&str, &str)>, u16)> = vec![
        ("INM exact", vec![("If-None-Match", &etag)], 304),
        (
            "INM weak W/ (weak comparison)",
            vec![("If-None-Match", &weak)],
            304,
        ),
        ("INM list", vec![("If-None-Match", &list)], 304),
        (
            "INM list without spaces",
            vec![("If-None-Match", &list_nospace)],
            304,
        ),
        ("INM *", vec![("If-None-Match", "*")], 304),
        ("INM other tag", vec![("If-None-Match", "\"nope\"")], 200),
        (
            "IMS = Last-Modified",
            vec![("If-Modified-Since", T0_HTTP)],
            304,
        ),
        ("IMS later", vec![("If-Modified-Since", &day_after)], 304),
        (
            "IMS earlier",
            vec![("If-Modified-Since", &hour_before)],
            200,
        ),
        (
            "IMS garbage",
            vec![("If-Modified-Since", "yesterday-ish")],
            200,
        ),
        (
            "INM mismatch wins over a matching IMS",
            vec![
                ("If-None-Match", "\"nope\""),
                ("If-Modified-Since", T0_HTTP),
            ],
            200,
        ),
        (
            "INM match wins over an old IMS",
            vec![("If-None-Match", &etag), ("If-Modified-Since", &day_before)],
            304,
        ),
        ("If-Match exact", vec![("If-Match", &etag)], 200),
        ("If-Match *", vec![("If-Match", "*")], 200),
        ("If-Match list", vec![("If-Match", &match_list)], 200),
        ("If-Match mismatch", vec![("If-Match", "\"nope\"")], 412),
        (
            "If-Match weak (strong comparison)",
            vec![("If-Match", &weak)],
            412,
        ),
        (
            "IUS in the past",
            vec![("If-Unmodified-Since", &day_before)],
            412,
        ),
        (
            "IUS = Last-Modified",
            vec![("If-Unmodified-Since", T0_HTTP)],
            200,
        ),
        (
            "IUS in the future",
            vec![("If-Unmodified-Since", &day_after)],
            200,
        ),
        (
            "If-Match match: IUS is ignored",
            vec![("If-Match", &etag), ("If-Unmodified-Since", &day_before)],
            200,
        ),
        (
            "If-Match fails before INM is looked at",
            vec![("If-Match", "\"nope\""), ("If-None-Match", &etag)],
            412,
        ),
    ];

    // All on one keep-alive connection: a 304/412 that carried a body would
    // garble the next response.
    let mut conn = srv.connect();
    for (what, headers, want) in &cases {
        for method in ["GET", "HEAD"] {
            let raw = raw_req_keepalive(method, srv.port, "/static/data.bin", headers, false);
            let r = conn
                .roundtrip(&raw)
                .unwrap_or_else(|e| srv.fail(format!("{method} {what}: {e}")));
            srv.assert_status(
                &r,
                *want,
                &format!("{method} /static/data.bin, {what} {headers:?}"),
            );
            match (*want, method) {
                (200, "GET") => assert!(r.body == data, "{what}: full body expected\n{r}"),
                (304, _) => {
                    assert!(r.body.is_empty(), "{what}: 304 with a body\n{r}");
                    assert_eq!(
                        hdr(&r, "etag"),
                        etag,
                        "{what}: 304 must carry the ETag\n{r}"
                    );
                    assert_eq!(hdr(&r, "last-modified"), T0_HTTP, "{what}\n{r}");
                    assert_eq!(
                        hdr(&r, "cache-control"),
                        "public, max-age=60",
                        "{what}\n{r}"
                    );
                }
                (412, _) => assert!(r.body.is_empty(), "{what}: 412 with a body\n{r}"),
                _ => {}
            }
        }
    }
    let r = conn
        .get("/static/data.bin")
        .unwrap_or_else(|e| srv.fail(format!("GET after the conditional requests: {e}")));
    srv.assert_status(&r, 200, "plain GET after 304s/412s on the same connection");
    assert!(r.body == data, "connection out of sync after 304/412\n{r}");

    // Sub-second mtimes: HTTP dates have whole seconds, so the date sent in
    // Last-Modified must validate (304 / If-Range 206).
    let frac = site_path.join("files/frac.bin");
    fs::write(&frac, &data).expect("write frac.bin");
    set_mtime(&frac, t0() + Duration::from_millis(600));
    let r = srv.get("/static/frac.bin");
    srv.assert_status(&r, 200, "GET /static/frac.bin");
    assert_eq!(hdr(&r, "last-modified"), T0_HTTP, "{r}");
    let r = srv.get_with("/static/frac.bin", &[("If-Modified-Since", T0_HTTP)]);
    srv.assert_status(
        &r,
        304,
        "IMS = Last-Modified of a file with a sub-second mtime",
    );
    let r = srv.get_with(
        "/static/frac.bin",
        &[("Range", "bytes=0-3"), ("If-Range", T0_HTTP)],
    );
    srv.assert_status(&r, 206, "If-Range = Last-Modified, sub-second mtime");
    let r = srv.get_with("/static/frac.bin", &[("If-Unmodified-Since", T0_HTTP)]);
    srv.assert_status(&r, 200, "IUS = Last-Modified, sub-second mtime");

    // A changed file gets a new validator: the old ETag no longer matches.
    set_mtime(&file, t0() + Duration::from_secs(10));
    let r = srv.get_with("/static/data.bin", &[("If-None-Match", &etag)]);
    srv.assert_status(&r, 200, "INM with the ETag from before the file changed");
    assert_ne!(
        hdr(&r, "etag"),
        etag,
        "ETag must change with the mtime\n{r}"
    );
    assert_eq!(
        hdr(&r, "last-modified"),
        http_date(t0() + Duration::from_secs(10)),
        "{r}"
    );
    let r = srv.get_with("/static/data.bin", &[("If-Modified-Since", T0_HTTP)]);
    srv.assert_status(&r, 200, "IMS older than the new mtime");
}

// ---------------------------------------------------------------------------
// ranges
// ---------------------------------------------------------------------------

#[test]
fn byte_ranges() {
    let data = pattern_bytes(1000, 2);
    let site = Site::new()
        .app("static_app.py")
        .file("files/data.bin", &data)
        .file("files/empty.txt", b"")
        .config(&cfg(&mount("/static/", "files", "")));
    set_mtime(&site.path().join("files/data.bin"), t0());
    let srv = site.start();
    let etag = hdr(&srv.get("/static/data.bin"), "etag").to_string();
    assert!(!etag.is_empty(), "no ETag");
    let weak = format!("W/{etag}");
    let old_date = http_date(t0() - Duration::from_secs(3600));

    // (Range, If-Range, expected: Some((first, last)) for 206, None for 200, or 416)
    enum Want {
        Part(u64, u64),
        Whole,
        Unsatisfiable,
    }
    use Want::*;
    let cases: Vec<(&str, Option<&str>, Want)> = vec![
        ("bytes=0-9", None, Part(0, 9)),
        ("bytes=0-0", None, Part(0, 0)),
        ("bytes=10-", None, Part(10, 999)),
        ("bytes=999-", None, Part(999, 999)),
        ("bytes=-5", None, Part(995, 999)),
        ("bytes=-1000", None, Part(0, 999)),
        ("bytes=-5000", None, Part(0, 999)),
        ("bytes=990-5000", None, Part(990, 999)),
        ("bytes=500-500", None, Part(500, 500)),
        ("bytes= 100-199", None, Part(100, 199)),
        ("bytes=1000-", None, Unsatisfiable),
        ("bytes=1000-1005", None, Unsatisfiable),
        ("bytes=5000-6000", None, Unsatisfiable),
        ("bytes=-0", None, Unsatisfiable),
        ("bytes=0-1,5-6", None, Whole),
        ("bytes=0-9, 20-29, 40-49", None, Whole),
        ("bytes=5-1", None, Whole),
        ("bytes=a-b", None, Whole),
        ("items=0-9", None, Whole),
        ("bytes=0-9", Some(&etag), Part(0, 9)),
        ("bytes=0-9", Some("\"stale-etag\""), Whole),
        ("bytes=0-9", Some(&weak), Whole),
        ("bytes=0-9", Some(T0_HTTP), Part(0, 9)),
        ("bytes=0-9", Some(&old_date), Whole),
        ("bytes=5000-", Some("\"stale-etag\""), Whole),
    ];
    let mut conn = srv.connect();
    for (range, if_range, want) in &cases {
        let mut headers = vec![("Range", *range)];
        if let Some(ir) = if_range {
            headers.push(("If-Range", ir));
        }
        let what = format!("GET /static/data.bin with {headers:?}");
        let raw = raw_req_keepalive("GET", srv.port, "/static/data.bin", &headers, false);
        let r = conn
            .roundtrip(&raw)
            .unwrap_or_else(|e| srv.fail(format!("{what}: {e}")));
        match want {
            Part(first, last) => {
                srv.assert_status(&r, 206, &what);
                assert_eq!(
                    hdr(&r, "content-range"),
                    format!("bytes {first}-{last}/1000"),
                    "{what}\n{r}"
                );
                assert_eq!(
                    hdr(&r, "content-length"),
                    (last - first + 1).to_string(),
                    "{what}\n{r}"
                );
                assert!(
                    r.body == data[*first as usize..=*last as usize],
                    "{what}: wrong bytes\n{r}"
                );
                assert_eq!(hdr(&r, "etag"), etag, "{what}: 206 keeps the ETag\n{r}");
            }
            Whole => {
                srv.assert_status(&r, 200, &what);
                assert!(r.header("content-range").is_none(), "{what}\n{r}");
                assert!(r.body == data, "{what}: whole file expected\n{r}");
            }
            Unsatisfiable => {
                srv.assert_status(&r, 416, &what);
                assert_eq!(hdr(&r, "content-range"), "bytes */1000", "{what}\n{r}");
                assert!(r.body.is_empty(), "{what}: 416 body\n{r}");
            }
        }
    }

    // HEAD with a Range: the 206 headers, no body (the next response on the
    // connection proves it).
    let raw = raw_req_keepalive(
        "HEAD",
        srv.port,
        "/static/data.bin",
        &[("Range", "bytes=0-9")],
        false,
    );
    let h = conn
        .roundtrip(&raw)
        .unwrap_or_else(|e| srv.fail(format!("HEAD with Range: {e}")));
    srv.assert_status(&h, 206, "HEAD with Range: bytes=0-9");
    assert_eq!(hdr(&h, "content-range"), "bytes 0-9/1000", "{h}");
    assert_eq!(hdr(&h, "content-length"), "10", "{h}");
    assert!(h.body.is_empty(), "{h}");
    let r = conn
        .get("/static/data.bin")
        .unwrap_or_else(|e| srv.fail(format!("GET after HEAD+Range: {e}")));
    srv.assert_status(&r, 200, "GET after HEAD with Range on the same connection");
    assert!(r.body == data, "connection out of sync\n{r}");

    // A real client.
    let url = srv.url("/static/data.bin");
    let (st, body, out) = curl_fetch(&url, &["-r", "100-149"]);
    assert!(
        st == 206 && body == data[100..150],
        "curl -r 100-149: {st}\n{out}"
    );
    let (st, body, out) = curl_fetch(&url, &["-r", "-7"]);
    assert!(st == 206 && body == data[993..], "curl -r -7: {st}\n{out}");

    // An empty file has no satisfiable range.
    let r = srv.get("/static/empty.txt");
    srv.assert_status(&r, 200, "GET an empty file");
    assert_eq!(hdr(&r, "content-length"), "0", "{r}");
    assert!(r.body.is_empty());
    for range in ["bytes=0-0", "bytes=-5", "bytes=0-"] {
        let r = srv.get_with("/static/empty.txt", &[("Range", range)]);
        srv.assert_status(&r, 416, &format!("empty file, Range: {range}"));
        assert_eq!(hdr(&r, "content-range"), "bytes */0", "{r}");
    }
}

// ---------------------------------------------------------------------------
// precompressed siblings
// ---------------------------------------------------------------------------

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let original = text_body(3000);
    let gz = gzip_bytes(&original);
    let br = brotli_stored(&original);
    let zst = zstd_raw(&original);
    assert!(gz != original && br != original && zst != original);
    let g_original = text_body(2500);
    let g_gz = gzip_bytes(&g_original);
    let g_br = brotli_stored(&g_original);
    let mounts = mount("/static/", "files", "precompressed = true")
        + &mount("/plain/", "files", "precompressed = false");
    let site = Site::new()
        .app("static_app.py")
        .file("files/f.css", &original)
        .file("files/f.css.gz", &gz)
        .file("files/f.css.br", &br)
        .file("files/f.css.zst", &zst)
        .file("files/g.css", &g_original)
        .file("files/g.css.gz", &g_gz)
        .file("files/g.css.br", &g_br)
        .file("files/h.js", &original)
        .file("files/h.js.gz", &gz)
        .config(&cfg(&mounts));
    let files = site.path().join("files");
    for f in [
        "f.css",
        "f.css.gz",
        "f.css.br",
        "f.css.zst",
        "g.css",
        "h.js",
        "h.js.gz",
    ] {
        set_mtime(&files.join(f), t0()); // same mtime: "not older" -> usable
    }
    set_mtime(&files.join("g.css.gz"), t0() - Duration::from_secs(3600)); // stale
    set_mtime(&files.join("g.css.br"), t0() + Duration::from_secs(60)); // newer: fine
    let srv = site.start();

    let variant = |enc: Option<&str>| -> &[u8] {
        match enc {
            None => &original,
            Some("gzip") => &gz,
            Some("br") => &br,
            Some("zstd") => &zst,
            Some(other) => panic!("no variant {other}"),
        }
    };
    // The highest q wins; among equal q the smallest sibling (here the
    // real gzip: the .br and .zst are stored, uncompressed, so larger).
    assert!(gz.len() < br.len() && gz.len() < zst.len());
    let cases: Vec<(Option<&str>, Option<&str>)> = vec![
        (None, None),
        (Some("gzip"), Some("gzip")),
        (Some("br;q=0.5, gzip"), Some("gzip")),
        (Some("br, gzip"), Some("gzip")),
        (Some("gzip, br"), Some("gzip")),
        (Some("br"), Some("br")),
        (Some("br, zstd;q=0.5"), Some("br")),
        (Some("zstd"), Some("zstd")),
        (Some("gzip, zstd"), Some("gzip")),
        (Some("gzip, deflate, br, zstd"), Some("gzip")),
        (Some("gzip;q=0.8, zstd;q=0.9, br;q=0.1"), Some("zstd")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("gzip;q=0"), None),
        (Some("identity"), None),
        (Some("deflate"), None),
        (Some("*"), Some("gzip")),
        (Some("*;q=0.5, gzip"), Some("gzip")),
        (Some("x-gzip"), Some("gzip")),
        (Some("GZIP"), Some("gzip")),
        (Some(""), None),
    ];
    let mut etags = BTreeSet::new();
    for (ae, want) in &cases {
        let headers: Vec<(&str, &str)> = ae.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let what = format!("GET /static/f.css with Accept-Encoding {ae:?}");
        let r = srv.get_with("/static/f.css", &headers);
        srv.assert_status(&r, 200, &what);
        assert_eq!(r.header("content-encoding"), *want, "{what}\n{r}");
        assert!(
            r.body == variant(*want),
            "{what}: expected the {} bytes\n{r}",
            want.unwrap_or("original")
        );
        assert_eq!(
            hdr(&r, "content-length"),
            r.body.len().to_string(),
            "{what}\n{r}"
        );
        assert_eq!(
            hdr(&r, "content-type"),
            "text/css; charset=utf-8",
            "{what}: the type of the original\n{r}"
        );
        assert!(
            has_vary_accept_encoding(&r),
            "{what}: Vary: Accept-Encoding missing\n{r}"
        );
        etags.insert((want.map(str::to_string), hdr(&r, "etag").to_string()));
    }
    // One ETag per representation, and different representations differ.
    let distinct: BTreeSet<&String> = etags.iter().map(|(_, e)| e).collect();
    assert_eq!(
        etags.len(),
        4,
        "expected exactly one ETag per variant: {etags:?}"
    );
    assert_eq!(
        distinct.len(),
        4,
        "variants must not share an ETag: {etags:?}"
    );

    // The gzip variant is real gzip of the original.
    let r = srv.get_with("/static/f.css", &[("Accept-Encoding", "gzip")]);
    assert!(
        gunzip_bytes(&r.body) == original,
        "gunzip of the .gz variant"
    );
    // The same .gz asked for by name (just after it went out as the gzip of
    // f.css, so anything remembered about it is warm) is a file of its own:
    // its own type and ETag, no Content-Encoding.
    for ae in ["gzip", "identity"] {
        let r = srv.get_with("/static/f.css.gz", &[("Accept-Encoding", ae)]);
        let what = format!("GET /static/f.css.gz by name, Accept-Encoding {ae}");
        srv.assert_status(&r, 200, &what);
        assert!(r.body == gz, "{what}: the .gz bytes\n{r}");
        assert_eq!(r.header("content-encoding"), None, "{what}\n{r}");
        assert_eq!(hdr(&r, "content-type"), "application/gzip", "{what}\n{r}");
        assert!(
            !etags.iter().any(|(_, e)| e == hdr(&r, "etag")),
            "{what}: shares an ETag with a variant of f.css\n{r}"
        );
    }

    // A .gz older than the original is ignored (the edge compresses the
    // file itself instead); a newer .br is used.
    for (ae, want) in [
        ("gzip", "gzip"),
        ("br, gzip", "br"),
        ("gzip;q=1, br;q=0.1", "br"),
    ] {
        let r = srv.get_with("/static/g.css", &[("Accept-Encoding", ae)]);
        let what = format!("GET /static/g.css (stale .gz, newer .br), Accept-Encoding {ae}");
        srv.assert_status(&r, 200, &what);
        assert_eq!(r.header("content-encoding"), Some(want), "{what}\n{r}");
        let sent = match want {
            "br" => r.body.clone(),
            _ => gunzip_bytes(&r.body),
        };
        let expect: &[u8] = if want == "br" { &g_br } else { &g_original };
        assert!(sent == expect, "{what}: wrong bytes\n{r}");
    }

    // precompressed = false: siblings are never used (the edge compresses
    // the file itself).
    let r = srv.get_with("/plain/f.css", &[("Accept-Encoding", "gzip")]);
    srv.assert_status(&r, 200, "/plain/f.css");
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r}");
    assert!(
        r.body != gz,
        "precompressed = false sent the .gz sibling\n{r}"
    );
    assert!(gunzip_bytes(&r.body) == original, "{r}");
    let r = srv.get_with("/plain/f.css", &[("Accept-Encoding", "identity")]);
    assert!(r.body == original, "{r}");

    // Ranges and validators apply to the variant that is sent.
    let r = srv.get_with(
        "/static/f.css",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")],
    );
    srv.assert_status(&r, 206, "Range on the gzip variant");
    assert_eq!(hdr(&r, "content-encoding"), "gzip", "{r}");
    assert_eq!(
        hdr(&r, "content-range"),
        format!("bytes 0-9/{}", gz.len()),
        "{r}"
    );
    assert!(r.body == gz[..10], "{r}");
    let gz_etag = hdr(
        &srv.get_with("/static/f.css", &[("Accept-Encoding", "gzip")]),
        "etag",
    )
    .to_string();
    let r = srv.get_with(
        "/static/f.css",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &gz_etag)],
    );
    srv.assert_status(&r, 304, "INM with the gzip variant's ETag, gzip accepted");
    let r = srv.get_with("/static/f.css", &[("If-None-Match", &gz_etag)]);
    srv.assert_status(&r, 200, "INM with the gzip variant's ETag, identity wanted");
    assert!(r.body == original);

    // Real clients decode what they get back to the original.
    let url = srv.url("/static/f.css");
    for (extra, enc) in [
        // curl offers all it decodes at q=1: the smallest sibling wins.
        (vec!["--compressed"], "gzip"),
        (vec!["--compressed", "-H", "Accept-Encoding: gzip"], "gzip"),
        (vec!["--compressed", "-H", "Accept-Encoding: zstd"], "zstd"),
        (vec!["--compressed", "-H", "Accept-Encoding: br"], "br"),
    ] {
        let (st, headers, body, out) = curl_fetch_headers(&url, &extra);
        assert_eq!(st, 200, "curl {extra:?}\n{out}");
        assert_eq!(
            header_in(&headers, "content-encoding"),
            Some(enc),
            "curl {extra:?}: {headers:?}"
        );
        assert!(
            body == original,
            "curl {extra:?} decoded {} bytes, not the original {}\n{out}",
            body.len(),
            original.len()
        );
    }
    // Only a .gz sibling: curl's default Accept-Encoding gets gzip.
    let (st, headers, body, out) = curl_fetch_headers(&srv.url("/static/h.js"), &["--compressed"]);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        header_in(&headers, "content-encoding"),
        Some("gzip"),
        "{headers:?}"
    );
    assert_eq!(
        header_in(&headers, "content-type"),
        Some("text/javascript; charset=utf-8"),
        "{headers:?}"
    );
    assert!(body == original, "curl --compressed /static/h.js\n{out}");
}

// ---------------------------------------------------------------------------
// HEAD
// ---------------------------------------------------------------------------

#[test]
fn head_is_get_without_the_body() {
    let original = text_body(4000);
    let mounts = mount("/static/", "files", "cache_control = \"no-cache\"")
        + &mount("/browse/", "files", "autoindex = true");
    let site = Site::new()
        .app("static_app.py")
        .file("files/data.bin", pattern_bytes(7777, 3))
        .file("files/f.css", &original)
        .file("files/f.css.gz", gzip_bytes(&original))
        .file("files/docs/index.html", "<h1>docs</h1>\n")
        .file("files/list/a.txt", "a\n")
        .config(&cfg(&mounts));
    let srv = site.start();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/static/data.bin", vec![]),
        ("/static/f.css", vec![]),
        ("/static/f.css", vec![("Accept-Encoding", "gzip")]),
        ("/static/data.bin", vec![("Range", "bytes=100-199")]),
        ("/static/data.bin", vec![("Range", "bytes=9000-")]),
        ("/static/docs/", vec![]),
        ("/static/docs", vec![]),
        ("/static/docs?a=1", vec![]),
        ("/static/missing.txt", vec![]),
        ("/static/.env", vec![]),
        ("/static/../x", vec![]),
        ("/browse/list/", vec![]),
    ];
    for (path, headers) in &cases {
        let g = srv.get_with(path, headers);
        let h = srv.head_with(path, headers);
        let what = format!("{path} {headers:?}");
        assert_eq!(
            h.status, g.status,
            "{what}: HEAD and GET status\nGET:{g}\nHEAD:{h}"
        );
        assert!(h.body.is_empty(), "{what}: HEAD with a body\n{h}");
        assert_eq!(
            comparable_headers(&h),
            comparable_headers(&g),
            "{what}: HEAD headers must equal GET's (minus Date)\nGET:{g}\nHEAD:{h}"
        );
        if g.status == 200 || g.status == 206 {
            assert_eq!(
                hdr(&h, "content-length"),
                g.body.len().to_string(),
                "{what}: HEAD Content-Length must be the GET body size\n{h}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// folders: index, redirect, listing
// ---------------------------------------------------------------------------

#[test]
fn index_files_redirects_and_autoindex() {
    let weird = "<b>&x.txt";
    let mounts = mount("/static/", "files", "") + &mount("/browse/", "files", "autoindex = true");
    let site = Site::new()
        .app("static_app.py")
        .file("files/docs/index.html", "<h1>the docs index</h1>\n")
        .file(&format!("files/list/{weird}"), "weird file content\n")
        .file("files/list/plain.txt", "plain\n")
        .file("files/list/.hidden", "HIDDEN-MARKER\n")
        .file("files/list/sub/inner.txt", "inner\n")
        .file("files/<script>/x.txt", "x\n")
        .config(&cfg(&mounts));
    fs::create_dir_all(site.path().join("files/empty")).expect("mkdir files/empty");
    let srv = site.start();

    // Slash redirects keep the query string.
    for (from, to) in [
        ("/static/docs", "/static/docs/"),
        ("/static/docs?x=1&y=%20z", "/static/docs/?x=1&y=%20z"),
        ("/static", "/static/"),
        ("/static/list/sub", "/static/list/sub/"),
        ("/browse/list", "/browse/list/"),
    ] {
        let r = srv.get(from);
        srv.assert_status(&r, 301, &format!("GET {from}"));
        assert_eq!(hdr(&r, "location"), to, "GET {from}\n{r}");
    }

    // The index file.
    for path in [
        "/static/docs/",
        "/static/docs/?v=2",
        "/static/docs/index.html",
        "/browse/docs/",
    ] {
        let r = srv.get(path);
        srv.assert_status(&r, 200, &format!("GET {path}"));
        assert_eq!(r.text(), "<h1>the docs index</h1>\n", "GET {path}\n{r}");
        assert_eq!(
            hdr(&r, "content-type"),
            "text/html; charset=utf-8",
            "GET {path}\n{r}"
        );
        assert!(
            r.header("etag").is_some(),
            "GET {path}: index files have validators\n{r}"
        );
    }
    // No index, no listing: 404 (and no names leak).
    for path in [
        "/static/list/",
        "/static/empty/",
        "/static/",
        "/static/docs/index.html/",
    ] {
        let r = srv.get(path);
        srv.assert_status(&r, 404, &format!("GET {path} without autoindex"));
        assert!(!r.text().contains("plain.txt"), "GET {path}\n{r}");
    }

    // The listing: names escaped, dotfiles hidden, folders with a slash.
    let r = srv.get("/browse/list/");
    srv.assert_status(&r, 200, "GET /browse/list/ with autoindex");
    assert_eq!(hdr(&r, "content-type"), "text/html; charset=utf-8", "{r}");
    let html = r.text();
    assert!(
        html.contains("&lt;b&gt;&amp;x.txt"),
        "escaped name missing\n{html}"
    );
    assert!(
        !html.contains(weird),
        "unescaped file name in the listing\n{html}"
    );
    assert!(!html.contains("<b>"), "raw <b> in the listing\n{html}");
    assert!(html.contains("plain.txt"), "{html}");
    assert!(html.contains("sub/"), "folders end with a slash\n{html}");
    assert!(!html.contains(".hidden"), "dotfile listed\n{html}");
    // Every link works, including the one for the odd name.
    let hrefs: Vec<String> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect();
    let weird_href = html
        .lines()
        .find(|l| l.contains("&lt;b&gt;"))
        .and_then(|l| l.split("href=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no link for {weird}\n{html}"))
        .to_string();
    assert!(
        !weird_href.contains('<') && !weird_href.contains('>') && !weird_href.contains('"'),
        "href not encoded: {weird_href:?}"
    );
    let r = srv.get(&format!("/browse/list/{weird_href}"));
    srv.assert_status(
        &r,
        200,
        &format!("following the listing's link {weird_href}"),
    );
    assert_eq!(r.text(), "weird file content\n", "{r}");
    for href in &hrefs {
        if href == "../" {
            continue;
        }
        let r = srv.get(&format!("/browse/list/{href}"));
        assert!(
            r.status == 200 || r.status == 301,
            "link {href} from the listing: {}\n{r}",
            r.status
        );
    }
    let r = srv.get("/browse/empty/");
    srv.assert_status(&r, 200, "listing of an empty folder");
    // The title shows the (still encoded) URL path, never raw markup.
    for path in ["/browse/%3Cscript%3E/", "/browse/<script>/"] {
        let r = srv.get(path);
        if r.status == 200 {
            assert!(
                !r.text().contains("<script>"),
                "GET {path}: unescaped markup\n{r}"
            );
            assert!(r.text().contains("x.txt"), "GET {path}\n{r}");
        } else {
            assert!(
                r.status == 400 || r.status == 404,
                "GET {path}: unexpected {}\n{r}",
                r.status
            );
        }
    }
}

/// `/static?a=b` is the mount's own folder without its slash: it must be
/// redirected like `/static` is, keeping the query.
#[test]
fn mount_root_without_slash_keeps_redirecting_with_a_query() {
    let srv = Site::new()
        .app("static_app.py")
        .file("files/index.html", "root index\n")
        .config(&cfg(&mount("/static/", "files", "")))
        .start();
    let r = srv.get("/static");
    srv.assert_status(&r, 301, "GET /static");
    assert_eq!(hdr(&r, "location"), "/static/", "{r}");
    let r = srv.get("/static/?a=b");
    srv.assert_status(&r, 200, "GET /static/?a=b");
    assert_eq!(r.text(), "root index\n", "{r}");
    let r = srv.get("/static?a=b");
    srv.assert_status(
        &r,
        301,
        "GET /static?a=b (the mount root without its slash, with a query)",
    );
    assert_eq!(hdr(&r, "location"), "/static/?a=b", "{r}");
}

// ---------------------------------------------------------------------------
// fallback = "app"
// ---------------------------------------------------------------------------

#[test]
fn fallback_app_and_plain_404() {
    let mounts = mount("/assets/", "files", "fallback = \"app\"") + &mount("/static/", "files", "");
    let site = Site::new()
        .app("static_app.py")
        .file("files/style.css", "body{color:red}\n")
        .file("files/.env", "ENV-MARKER-9c2d\n")
        .file("files/sub/a.txt", "a\n")
        .config(&cfg(&mounts));
    fs::create_dir_all(site.path().join("files/empty")).expect("mkdir");
    let srv = site.start();

    // Hits are still served from disk.
    let r = srv.get("/assets/style.css");
    srv.assert_status(&r, 200, "GET /assets/style.css");
    assert_eq!(r.text(), "body{color:red}\n", "{r}");
    assert!(
        r.header("x-served-by").is_none(),
        "a hit must not reach the app\n{r}"
    );
    assert!(r.header("etag").is_some(), "{r}");

    // Misses go to the app with the request intact.
    for (target, want) in [
        (
            "/assets/missing.txt?a=1",
            "app fallback: GET /assets/missing.txt ?a=1",
        ),
        (
            "/assets/sub/missing/",
            "app fallback: GET /assets/sub/missing/ ?",
        ),
        ("/assets/empty/", "app fallback: GET /assets/empty/ ?"),
        (
            "/assets/style.css/",
            "app fallback: GET /assets/style.css/ ?",
        ),
        (
            "/assets/caf%C3%A9.txt",
            "app fallback: GET /assets/café.txt ?",
        ),
        ("/assets/.env", "app fallback: GET /assets/.env ?"),
    ] {
        let r = srv.get(target);
        srv.assert_status(&r, 200, &format!("GET {target} (fallback = \"app\")"));
        assert_eq!(
            r.header("x-served-by"),
            Some("static_app"),
            "GET {target}\n{r}"
        );
        assert_eq!(r.text(), want, "GET {target}: what the app saw\n{r}");
        assert!(!r.text().contains("ENV-MARKER"), "{r}");
    }
    let r = srv.request(&method_req(
        "POST",
        srv.port,
        "/assets/form",
        "text/plain",
        b"hello",
        true,
    ));
    srv.assert_status(&r, 200, "POST to a missing /assets/ file");
    assert_eq!(r.text(), "app fallback: POST /assets/form ?", "{r}");
    let r = srv.head("/assets/missing.txt");
    srv.assert_status(&r, 200, "HEAD of a missing /assets/ file");
    assert_eq!(r.header("x-served-by"), Some("static_app"), "{r}");
    // Invalid paths are refused, not handed to the app.
    let r = srv.get("/assets/../secret.txt");
    srv.assert_status(&r, 400, "GET /assets/../secret.txt");

    // Without fallback: a plain 404 from the edge.
    for target in [
        "/static/missing.txt",
        "/static/empty/",
        "/static/.env",
        "/static/style.css/",
    ] {
        let r = srv.get(target);
        srv.assert_status(&r, 404, &format!("GET {target} (no fallback)"));
        assert!(
            r.header("x-served-by").is_none(),
            "GET {target} reached the app\n{r}"
        );
        assert!(!r.text().contains("ENV-MARKER"), "{r}");
    }
}

// ---------------------------------------------------------------------------
// traversal, dotfiles, symlinks
// ---------------------------------------------------------------------------

const SECRET: &str = "TOP-SECRET-MARKER-5b1e8f";
const ENV_SECRET: &str = "ENV-SECRET-MARKER-77aa";

fn traversal_site(follow_symlinks: bool) -> Site {
    let site = Site::new()
        .app("static_app.py")
        .file("secret.txt", format!("{SECRET}\n"))
        .file(
            "secret.txt.gz",
            gzip_bytes(format!("{SECRET} gz\n").as_bytes()),
        )
        .file("files/style.css", "body{color:red}\n")
        .file("files/page.css", "page\n")
        .file("files/docs/index.html", "<h1>docs</h1>\n")
        .file("files/.env", format!("{ENV_SECRET}\n"))
        .file("files/.git/config", format!("{ENV_SECRET}\n"))
        .config(&cfg(&mount(
            "/static/",
            "files",
            &format!("follow_symlinks = {follow_symlinks}"),
        )));
    let files = site.path().join("files");
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, files.join(name))
            .unwrap_or_else(|e| panic!("symlink {name} -> {target}: {e}"));
    };
    link("../secret.txt", "link.txt"); // file outside the mount
    link("..", "linkdir"); // folder outside the mount
    link(
        &site.path().join("secret.txt").display().to_string(),
        "abs.txt",
    );
    link("style.css", "inner.css"); // stays inside: fine
    link("../secret.txt.gz", "page.css.gz"); // a "precompressed sibling" outside
    set_mtime(&files.join("page.css"), t0());
    site
}

#[test]
fn traversal_attempts_are_refused() {
    let srv = traversal_site(false).start();
    let port = srv.port;
    let targets: Vec<String> = vec![
        "/static/../secret.txt".into(),
        "/static/%2e%2e/secret.txt".into(),
        "/static/%2E%2E/secret.txt".into(),
        "/static/%2E%2E%2Fsecret.txt".into(),
        "/static/..%2fsecret.txt".into(),
        "/static/..%2Fsecret.txt".into(),
        "/static/%2e%2e%5csecret.txt".into(),
        "/static/..\\secret.txt".into(),
        "/static/..%5csecret.txt".into(),
        "/static/docs/..\\..\\secret.txt".into(),
        "/static/%c0%ae%c0%ae/secret.txt".into(),
        "/static/%c0%ae%c0%ae%c0%afsecret.txt".into(),
        "/static/%e0%80%ae%e0%80%ae/secret.txt".into(),
        "/static/..%c0%afsecret.txt".into(),
        "/static/%252e%252e/secret.txt".into(),
        "/static/%252e%252e%252fsecret.txt".into(),
        "/static/..%252fsecret.txt".into(),
        "/static/.%2e/secret.txt".into(),
        "/static/%2e./secret.txt".into(),
        "/static/./../secret.txt".into(),
        "/static/docs/../../secret.txt".into(),
        "/static/docs/%2e%2e/%2e%2e/secret.txt".into(),
        "/static/../static/../secret.txt".into(),
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt".into(),
        "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd".into(),
        "/static/%00../secret.txt".into(),
        "/static/..%00/secret.txt".into(),
        "/static/secret.txt%00.css".into(),
        "/static/%0d%0a/../secret.txt".into(),
        "/static//secret.txt".into(),
        "/static///..//secret.txt".into(),
        "/static/%2fsecret.txt".into(),
        "/static/%2F..%2Fsecret.txt".into(),
        "/static/..;/secret.txt".into(),
        "/static/.../secret.txt".into(),
        "/static/....//secret.txt".into(),
        "/static/%uff0e%uff0e/secret.txt".into(),
        "/static/%EF%BC%8E%EF%BC%8E/secret.txt".into(), // fullwidth dots
        "/static/link.txt".into(),
        "/static/abs.txt".into(),
        "/static/linkdir/secret.txt".into(),
        "/static/linkdir/".into(),
        "/static/.env".into(),
        "/static/%2eenv".into(),
        "/static/%2Eenv".into(),
        "/static/.git/config".into(),
        "/static/docs/../.env".into(),
        "/static/docs/%2e%2e/.env".into(),
        "/static%2f..%2fsecret.txt".into(),
        "//secret.txt".into(),
        "/../secret.txt".into(),
        "/%2e%2e/secret.txt".into(),
        format!("http://127.0.0.1:{port}/static/../secret.txt"),
        format!("http://127.0.0.1:{port}/static/%2e%2e/secret.txt"),
        format!("http://127.0.0.1:{port}/static/link.txt"),
    ];
    assert!(targets.len() >= 30);
    let mut report = Vec::new();
    for target in &targets {
        for method in ["GET", "HEAD"] {
            let raw = raw_req(method, port, target, &[("Accept-Encoding", "gzip")]);
            let r = match try_request(port, &raw) {
                Ok(r) => r,
                // Dropping a hostile request outright is a refusal too.
                Err(e) => {
                    report.push(format!("{method} {target} -> connection error: {e}"));
                    continue;
                }
            };
            report.push(format!("{method} {target} -> {}", r.status));
            let text = String::from_utf8_lossy(&r.body);
            if text.contains(SECRET) || text.contains(ENV_SECRET) || text.contains("root:x:0:0") {
                srv.fail(format!("{method} {target} LEAKED a secret\n{r}"));
            }
            if !matches!(r.status, 400 | 403 | 404) {
                srv.fail(format!(
                    "{method} {target}: expected 400/403/404, got {}\n{r}\nall so far:\n{}",
                    r.status,
                    report.join("\n")
                ));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    // Specific answers where the reason is known.
    for (target, want) in [
        ("/static/link.txt", 403),
        ("/static/abs.txt", 403),
        ("/static/linkdir/secret.txt", 403),
        ("/static/.env", 404),
        ("/static/.git/config", 404),
        ("/static/../secret.txt", 400),
        ("/static/%2e%2e/secret.txt", 400),
        ("/static/%c0%ae%c0%ae/secret.txt", 400),
        ("/static/%252e%252e/secret.txt", 404), // decoded once: a folder named "%2e%2e"
    ] {
        let r = srv.request(&raw_req("GET", port, target, &[]));
        srv.assert_status(&r, want, &format!("GET {target}"));
    }
    // Same refusals through a real client that does not normalise.
    for target in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/link.txt",
    ] {
        let (st, body, out) = curl_fetch(&srv.url(target), &["--path-as-is"]);
        assert!(
            matches!(st, 400 | 403 | 404) && !String::from_utf8_lossy(&body).contains(SECRET),
            "curl --path-as-is {target}: {st}\n{out}"
        );
    }
    // A symlink that stays inside the mount is fine.
    let r = srv.get("/static/inner.css");
    srv.assert_status(&r, 200, "symlink inside the mount");
    assert_eq!(r.text(), "body{color:red}\n", "{r}");
    // A "precompressed sibling" that is a symlink out of the mount is not used.
    let r = srv.get_with("/static/page.css", &[("Accept-Encoding", "gzip")]);
    srv.assert_status(&r, 200, "page.css whose .gz points outside the mount");
    assert!(
        r.header("content-encoding").is_none() && r.text() == "page\n",
        "the outside .gz must not be served\n{r}"
    );
    // Listing the folder is not possible either (no autoindex).
    let r = srv.get("/static/");
    srv.assert_status(&r, 404, "GET /static/ without index/autoindex");
}

/// RFC 9112 §3.2.2: a server MUST accept the absolute-form target. It names
/// the same resource as the origin-form, so it must get the same static
/// handling: the file, or at least a refusal, never a detour to the app that
/// skips the mount's checks.
#[test]
fn absolute_form_targets_get_the_same_static_handling() {
    let mounts = mount("/static/", "files", "") + &mount("/assets/", "files", "fallback = \"app\"");
    let srv = Site::new()
        .app("static_app.py")
        .file("secret.txt", format!("{SECRET}\n"))
        .file("files/style.css", "body{color:red}\n")
        .config(&cfg(&mounts))
        .start();
    let port = srv.port;
    let auth = format!("127.0.0.1:{port}");
    // Origin-form first, for reference.
    let r = srv.get("/static/style.css");
    srv.assert_status(&r, 200, "origin-form GET /static/style.css");
    let r = srv.get("/assets/../secret.txt");
    srv.assert_status(&r, 400, "origin-form GET /assets/../secret.txt");

    let target = format!("http://{auth}/static/style.css");
    let r = srv.request(&raw_req("GET", port, &target, &[]));
    assert!(
        (r.status == 200 && r.text() == "body{color:red}\n") || r.status == 400,
        "GET {target} (Host: {auth}): expected the static file (or a 400), got {}\n{r}",
        r.status
    );
    for path in ["/assets/../secret.txt", "/assets/%2e%2e/secret.txt"] {
        let target = format!("http://{auth}{path}");
        let r = srv.request(&raw_req("GET", port, &target, &[]));
        assert!(
            r.status == 400 && r.header("x-served-by").is_none(),
            "GET {target} (Host: {auth}): the origin-form is refused with 400 by the edge, \
             the absolute-form got {} {}\n{r}",
            r.status,
            if r.header("x-served-by").is_some() {
                "FROM THE APP (PATH_INFO with `..`)"
            } else {
                ""
            }
        );
        assert!(!r.text().contains(SECRET), "{r}");
    }
}

/// `%61` is `a` (RFC 3986 §6.2.2.2): `/st%61tic/style.css` is the same URL
/// as `/static/style.css` and belongs to the mount (nginx decodes before
/// matching locations). Handing it to the app instead skips the mount's
/// rules (dotfiles, traversal checks) and serves nothing.
#[test]
fn percent_encoded_mount_prefix_is_the_same_mount() {
    let mounts = mount("/static/", "files", "") + &mount("/assets/", "files", "fallback = \"app\"");
    let srv = Site::new()
        .app("static_app.py")
        .file("files/style.css", "body{color:red}\n")
        .file("files/.env", format!("{ENV_SECRET}\n"))
        .config(&cfg(&mounts))
        .start();
    let r = srv.get("/st%61tic/style.css");
    assert!(
        r.status == 200 && r.text() == "body{color:red}\n",
        "GET /st%61tic/style.css: expected the file, got {}\n{r}",
        r.status
    );
    // dotfiles = false: /assets/.env is handed to the app only as a miss;
    // through an encoded prefix it must not be treated differently.
    let plain = srv.get("/assets/.env");
    let encoded = srv.get("/%61ssets/.env");
    assert!(!encoded.text().contains(ENV_SECRET), "{encoded}");
    assert_eq!(
        (encoded.status, encoded.text()),
        (plain.status, plain.text()),
        "/%61ssets/.env and /assets/.env must be answered alike"
    );
}

#[test]
fn follow_symlinks_true_serves_links_outside() {
    let srv = traversal_site(true).start();
    for target in [
        "/static/link.txt",
        "/static/abs.txt",
        "/static/linkdir/secret.txt",
    ] {
        let r = srv.get(target);
        srv.assert_status(
            &r,
            200,
            &format!("GET {target} with follow_symlinks = true"),
        );
        assert_eq!(r.text(), format!("{SECRET}\n"), "{r}");
    }
    // follow_symlinks is about links only: `..` and dotfiles stay refused.
    for (target, want) in [
        ("/static/../secret.txt", 400),
        ("/static/%2e%2e/secret.txt", 400),
        ("/static/.env", 404),
    ] {
        let r = srv.request(&raw_req("GET", srv.port, target, &[]));
        srv.assert_status(
            &r,
            want,
            &format!("GET {target} with follow_symlinks = true"),
        );
        assert!(
            !r.text().contains(SECRET) && !r.text().contains(ENV_SECRET),
            "{r}"
        );
    }
}

// ---------------------------------------------------------------------------
// methods
// ---------------------------------------------------------------------------

#[test]
fn other_methods_get_405_with_allow() {
    let site = Site::new()
        .app("static_app.py")
        .file("files/style.css", "FILE-CONTENT-MARKER\n")
        .file("files/docs/index.html", "FILE-CONTENT-MARKER\n")
        .config(&cfg(&mount("/static/", "files", "")));
    let srv = site.start();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/static/style.css", "/static/docs/"] {
            let raw = method_req(method, srv.port, path, "text/plain", b"data", true);
            let r = srv.request(&raw);
            srv.assert_status(&r, 405, &format!("{method} {path}"));
            assert_eq!(hdr(&r, "allow"), "GET, HEAD", "{method} {path}\n{r}");
            assert!(
                !r.text().contains("FILE-CONTENT-MARKER"),
                "{method} {path}\n{r}"
            );
        }
    }
    for method in ["GET", "HEAD"] {
        let r = srv.request(&simple_req(method, srv.port, "/static/style.css", true));
        srv.assert_status(&r, 200, method);
    }
    // A 405'd request's body is not read as the next request (no smuggling).
    let smuggled = format!(
        "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        srv.port
    );
    let mut raw = method_req(
        "POST",
        srv.port,
        "/static/style.css",
        "text/plain",
        smuggled.as_bytes(),
        false,
    );
    raw.extend_from_slice(&simple_req("GET", srv.port, "/static/style.css", true));
    let mut conn = srv.connect();
    conn.send(&raw)
        .unwrap_or_else(|e| srv.fail(format!("send: {e}")));
    let first = conn
        .read_response("POST")
        .unwrap_or_else(|e| srv.fail(format!("POST with a body: {e}")));
    srv.assert_status(&first, 405, "POST with a body");
    if !first.closes() {
        // Closing the connection instead is fine.
        if let Ok(second) = conn.read_response("GET") {
            {
                assert!(
                    !second.text().contains("/smuggled"),
                    "the POST body was parsed as a request\n{second}"
                );
                srv.assert_status(
                    &second,
                    200,
                    "GET after a 405'd POST on the same connection",
                );
                assert_eq!(second.text(), "FILE-CONTENT-MARKER\n", "{second}");
            }
        }
    }
    assert!(
        !srv.stdout().contains("/smuggled"),
        "the smuggled request was processed:\n{}",
        srv.stdout()
    );
}

/// A deploy that replaces the whole folder (`rm -rf static && cp -r ...`)
/// is served from the new folder without a reload, as nginx would.
#[test]
fn a_folder_deleted_and_made_again_is_served_anew() {
    let site = Site::new()
        .app("static_app.py")
        .file("files/app.css", "old{}")
        .config(&cfg(&mount("/static/", "files", "")));
    let files = site.path().join("files");
    let srv = site.start();
    let r = srv.get("/static/app.css");
    srv.assert_status(&r, 200, "before the deploy");
    assert_eq!(r.body, b"old{}");
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("app.css"), "new{}!").unwrap();
    std::fs::write(files.join("added.js"), "x").unwrap();
    // corral holds the folder open and checks its path once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = srv.get("/static/app.css");
        if r.status == 200 && r.body == b"new{}!" {
            break;
        }
        assert!(
            r.body != b"old{}",
            "the deleted folder's file was served\n{r}"
        );
        assert!(
            Instant::now() < deadline,
            "new folder not served in 5 s\n{r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.assert_status(
        &srv.get("/static/added.js"),
        200,
        "a file only the new folder has",
    );
}

/// A deploy that swaps folders by renaming: every response is one version
/// of the file whole (its length, its bytes), never the headers of one and
/// the bytes of the other, and a file only the new folder has is found at
/// once. The file is large, so it is opened for each request (not cached).
#[test]
fn a_folder_swapped_by_renames_serves_whole_versions() {
    let old_body = vec![b'a'; 300_000];
    let new_body = vec![b'b'; 400_000];
    let site = Site::new()
        .app("static_app.py")
        .file("files/app.bin", &old_body)
        .file("next/app.bin", &new_body)
        .file("next/only-new.css", "n{}")
        .config(&cfg(&mount("/static/", "files", "")));
    let (files, next, old) = (
        site.path().join("files"),
        site.path().join("next"),
        site.path().join("files.old"),
    );
    let srv = site.start();
    let r = srv.get("/static/app.bin");
    srv.assert_status(&r, 200, "before the swap");
    assert!(r.body == old_body);
    std::fs::rename(&files, &old).unwrap();
    std::fs::rename(&next, &files).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = srv.get("/static/app.bin");
        srv.assert_status(&r, 200, "during the swap");
        let whole_old = r.body == old_body && hdr(&r, "content-length") == "300000";
        let whole_new = r.body == new_body && hdr(&r, "content-length") == "400000";
        assert!(
            whole_old || whole_new,
            "a mixed response: content-length {}, {} bytes",
            hdr(&r, "content-length"),
            r.body.len()
        );
        if whole_new {
            break;
        }
        assert!(Instant::now() < deadline, "the new version never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.assert_status(
        &srv.get("/static/only-new.css"),
        200,
        "a file only the new folder has",
    );
}

/// A file dated before 1970 (HTTP dates cannot say so) is served, dated
/// 1970, rather than breaking the connection.
#[test]
fn a_file_dated_before_1970_is_served() {
    let site = Site::new()
        .app("static_app.py")
        .file("files/old.txt", "old")
        .config(&cfg(&mount("/static/", "files", "")));
    set_mtime(
        &site.path().join("files/old.txt"),
        SystemTime::UNIX_EPOCH - Duration::from_secs(86_400),
    );
    let srv = site.start();
    let r = srv.get("/static/old.txt");
    srv.assert_status(&r, 200, "a 1969 file");
    assert_eq!(r.body, b"old");
    assert_eq!(hdr(&r, "last-modified"), "Thu, 01 Jan 1970 00:00:00 GMT");
}

// ---------------------------------------------------------------------------
// content types
// ---------------------------------------------------------------------------

#[test]
fn content_types_and_cache_control() {
    let mut site = Site::new().app("static_app.py");
    let cases = [
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.html", "text/html; charset=utf-8"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.json", "application/json; charset=utf-8"),
        ("a.svg", "image/svg+xml; charset=utf-8"),
        ("a.png", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.woff2", "font/woff2"),
        ("a.wasm", "application/wasm"),
        ("a.pdf", "application/pdf"),
        ("noext", "application/octet-stream"),
        ("UPPER.CSS", "text/css; charset=utf-8"),
    ];
    for (name, _) in &cases {
        site = site.file(&format!("files/{name}"), format!("content of {name}\n"));
    }
    let mounts = mount(
        "/static/",
        "files",
        "cache_control = \"public, max-age=31536000, immutable\"",
    ) + &mount("/nocache/", "files", "cache_control = \"\"");
    let srv = site.config(&cfg(&mounts)).start();
    for (name, ct) in &cases {
        let r = srv.get(&format!("/static/{name}"));
        srv.assert_status(&r, 200, &format!("GET /static/{name}"));
        assert_eq!(hdr(&r, "content-type"), *ct, "Content-Type of {name}\n{r}");
        assert_eq!(
            hdr(&r, "cache-control"),
            "public, max-age=31536000, immutable",
            "{name}\n{r}"
        );
        assert_eq!(r.text(), format!("content of {name}\n"));
    }
    let r = srv.get("/nocache/a.css");
    srv.assert_status(&r, 200, "GET /nocache/a.css");
    assert!(
        r.header("cache-control").is_none(),
        "cache_control = \"\"\n{r}"
    );
    // The longest mount prefix wins, and a prefix without the slash is not a mount.
    let r = srv.get("/staticx/a.css");
    srv.assert_status(&r, 404, "/staticx/ is not the /static/ mount");
    assert!(r.text().starts_with("app 404"), "{r}");
}

/// A small file's head is built once and kept with the cached file: later
/// answers clone it, with places kept for the request's id, Date and
/// Connection. Seen by curl on one keep-alive connection, the first answer
/// (built) and the cached ones carry the same fields in the same order and
/// case; each has its own request id and a real date, never a kept place's
/// stand-in. A second mount of the same folder keeps its own Cache-Control
/// (the cache serves both), and HTTP/2 (httpx) gets no Connection field.
#[test]
fn a_cached_files_head_reads_as_a_built_one() {
    let mounts = mount(
        "/static/",
        "files",
        "cache_control = \"public, max-age=60\"",
    ) + &mount("/plain/", "files", "cache_control = \"\"");
    let config = cfg(&mounts).replacen("[server]\n", "[server]\nh2c = true\n", 1);
    let srv = Site::new()
        .app("static_app.py")
        .file("files/a.css", "body{}\n")
        .config(&config)
        .start();
    // Three answers on one connection, then three from the other mount.
    let heads = |path: &str| {
        let url = srv.url(path);
        let null = "/dev/null";
        let out = curl(&[
            "-D", "-", "-o", null, &url, "-o", null, &url, "-o", null, &url,
        ]);
        assert!(out.success(), "{out}");
        let blocks: Vec<Vec<(String, String)>> = out
            .stdout
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/1.1 200"))
            .map(|b| {
                b.lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        assert_eq!(blocks.len(), 3, "three 200s for {path}\n{out}");
        blocks
    };
    let names = |h: &[(String, String)]| h.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let steady = |h: &[(String, String)]| {
        h.iter()
            .filter(|(k, _)| k != "Date" && k != "X-Request-ID")
            .cloned()
            .collect::<Vec<_>>()
    };
    for (path, cache_control) in [
        ("/static/a.css", Some("public, max-age=60")),
        ("/plain/a.css", None),
        ("/static/a.css", Some("public, max-age=60")),
    ] {
        let blocks = heads(path);
        let mut ids = BTreeSet::new();
        for h in &blocks {
            assert_eq!(names(h), names(&blocks[0]), "{path}: {blocks:?}");
            assert_eq!(steady(h), steady(&blocks[0]), "{path}: {blocks:?}");
            assert_eq!(
                header_in(h, "Cache-Control"),
                cache_control,
                "{path}: {h:?}"
            );
            assert_eq!(header_in(h, "Connection"), Some("keep-alive"), "{h:?}");
            assert_eq!(header_in(h, "Content-Length"), Some("7"), "{h:?}");
            assert_eq!(
                header_in(h, "Content-Type"),
                Some("text/css; charset=utf-8")
            );
            let date = header_in(h, "Date").unwrap_or_default();
            assert!(date.ends_with(" GMT") && date.len() == 29, "Date {date:?}");
            let id = header_in(h, "X-Request-ID").unwrap_or_default();
            assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id:?}"
            );
            ids.insert(id.to_string());
        }
        assert_eq!(ids.len(), 3, "each answer has its own id: {ids:?}");
    }
    // HEAD of the cached file: the same fields, no body.
    let out = curl(&["-I", &srv.url("/static/a.css")]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.stdout.contains("Content-Length: 7\r\n"), "{out}");
    assert!(out.stdout.contains("X-Request-ID: "), "{out}");
    // HTTP/2: the kept Connection place is dropped, the rest as over 1.1.
    let script = r#"
import httpx, sys
with httpx.Client(http1=False, http2=True, timeout=10) as c:
    for _ in range(3):
        r = c.get(sys.argv[1])
        print(r.http_version, r.status_code, repr(r.content), "connection" in r.headers,
              r.headers.get("cache-control"), len(r.headers.get("x-request-id", "")),
              r.headers.get("date", "-").endswith(" GMT"))
"#;
    let out = run_with_timeout(
        std::process::Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .arg(srv.url("/static/a.css")),
        Duration::from_secs(60),
    );
    let want = "HTTP/2 200 b'body{}\\n' False public, max-age=60 16 True";
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, vec![want; 3], "{out}\n{}", srv.stderr_tail());
}

// ---------------------------------------------------------------------------
// memory: a 1 GiB file streams through a small buffer
// ---------------------------------------------------------------------------

/// A client with a small receive window that waits before reading: the
/// edge's writes go out only in part, and every later piece must continue
/// exactly where the last one stopped.
#[test]
fn a_slow_small_window_client_gets_every_byte() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let small: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 241) as u8).collect();
    // Cached (at most 256 KiB) and larger than the window: the second
    // answer goes out from memory in one writev the socket takes in part.
    let mid: Vec<u8> = (0..200_000u32).map(|i| (i * 11 % 239) as u8).collect();
    let site = Site::new()
        .app("static_app.py")
        .file("files/big.bin", &data)
        .file("files/small.bin", &small)
        .file("files/mid.bin", &mid)
        .config(&cfg(&mount("/static/", "files", "")));
    let srv = site.start();
    // Cached before the slow client asks: its first answer then comes from
    // memory too.
    for path in ["/static/small.bin", "/static/mid.bin"] {
        let out = curl(&["-sf", "-o", "/dev/null", &srv.url(path)]);
        assert!(out.success(), "{out}");
    }
    // Thirty answers of the cached 200 KB file outgrow the socket's
    // buffers (4 MiB at most here): later ones go out in part, and continue
    // where they stopped.
    for (path, want, asks) in [
        ("/static/big.bin", &data, 2),
        ("/static/small.bin", &small, 2),
        ("/static/mid.bin", &mid, 30),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let rcvbuf: libc::c_int = 64 << 10;
        // SAFETY: a valid socket and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&rcvbuf as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        // Requests on one connection, each answered in full and framed
        // exactly (nothing of one response leaks into the next).
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(asks - 1);
        req += &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(300));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let mut piece = [0u8; 16384];
        loop {
            match s.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&piece[..n]),
                Err(e) => panic!("{path}: read failed after {} bytes: {e}", got.len()),
            }
        }
        let mut rest = &got[..];
        for round in 0..asks {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("{path} #{round}: no head"));
            let head = String::from_utf8_lossy(&rest[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{path} #{round}: {head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("content-length: {}", want.len())),
                "{path} #{round}: {head}"
            );
            let body = &rest[end + 4..];
            assert!(body.len() >= want.len(), "{path} #{round}: short body");
            assert!(
                body[..want.len()] == want[..],
                "{path} #{round}: body differs from the file"
            );
            rest = &body[want.len()..];
        }
        assert!(
            rest.is_empty(),
            "{path}: {} bytes after the responses",
            rest.len()
        );
    }
}

#[test]
fn one_gib_sparse_file_streams_in_constant_memory() {
    const SIZE: u64 = 1 << 30;
    const LIMIT_KIB: u64 = 64 * 1024;
    let site = Site::new()
        .app("static_app.py")
        .file("files/small.txt", "warm up\n")
        .config(&cfg(&mount("/static/", "files", "")));
    let big = site.path().join("files/big.bin");
    let f = fs::File::create(&big).expect("create big.bin");
    f.set_len(SIZE).expect("set_len 1 GiB (sparse)");
    // A few non-zero bytes at known places, to check the stream's order.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        for (pos, tag) in [(0u64, b"HEAD"), (SIZE / 2, b"MIDL"), (SIZE - 4, b"TAIL")] {
            f.seek(SeekFrom::Start(pos)).unwrap();
            f.write_all(tag).unwrap();
        }
    }
    let srv = site.start();
    let edge = srv
        .edge_pid()
        .unwrap_or_else(|| srv.fail("no `edge <pid> listening on` line in stderr"));
    assert!(
        srv.children().contains(&edge),
        "edge {edge} is not a child of the master {}",
        srv.pid()
    );
    let r = srv.get("/static/small.txt");
    srv.assert_status(&r, 200, "warm-up GET");
    thread::sleep(Duration::from_millis(300));
    let base = vm_rss_kib(edge).unwrap_or_else(|| srv.fail("cannot read the edge's VmRSS"));

    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        thread::spawn(move || {
            let mut samples = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = vm_rss_kib(edge) {
                    max_rss.fetch_max(kib, Ordering::SeqCst);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };

    let started = Instant::now();
    let mut conn = srv.connect();
    conn.send(&get_req(srv.port, "/static/big.bin"))
        .unwrap_or_else(|e| srv.fail(format!("send: {e}")));
    let (status, headers) = conn
        .read_head()
        .unwrap_or_else(|e| srv.fail(format!("reading the head: {e}")));
    let cl = header_in(&headers, "content-length")
        .unwrap_or("")
        .to_string();
    let mut got: u64 = 0;
    let mut marks = 0u32;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = started + Duration::from_secs(60);
    let mut err = None;
    while got < SIZE {
        let want = ((SIZE - got) as usize).min(buf.len());
        let n = match conn.read_into(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        };
        if n == 0 {
            err = Some("EOF".into());
            break;
        }
        let chunk = &buf[..n];
        // Marker bytes, checked one by one (a marker may straddle two reads).
        for (pos, tag) in [
            (0u64, &b"HEAD"[..]),
            (SIZE / 2, b"MIDL"),
            (SIZE - 4, b"TAIL"),
        ] {
            for (k, &b) in tag.iter().enumerate() {
                let p = pos + k as u64;
                if p >= got && p < got + n as u64 {
                    marks += (chunk[(p - got) as usize] == b) as u32;
                }
            }
        }
        got += chunk.len() as u64;
        if Instant::now() > deadline {
            err = Some(format!("still reading after 60 s ({got} bytes)"));
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().expect("sampler thread");
    drop(conn);
    let peak = max_rss.load(Ordering::SeqCst);
    eprintln!(
        "1 GiB in {elapsed:?}; edge VmRSS base {base} KiB, peak {peak} KiB (+{} KiB), {samples} samples",
        peak - base
    );
    if status != 200 || cl != SIZE.to_string() {
        srv.fail(format!(
            "GET big.bin: status {status}, Content-Length {cl:?}, headers {headers:?}"
        ));
    }
    if let Some(e) = err {
        srv.fail(format!("stream broke after {got} of {SIZE} bytes: {e}"));
    }
    assert_eq!(got, SIZE, "byte count");
    assert_eq!(marks, 12, "marker bytes at 0, 512 MiB and the end");
    assert!(samples >= 3, "too few RSS samples ({samples})");
    assert!(
        peak - base < LIMIT_KIB,
        "the edge's RSS grew by {} KiB (base {base}, peak {peak}) while streaming 1 GiB",
        peak - base
    );

    // A client that stops reading: the edge must wait for it (backpressure),
    // not read the rest of the file into memory.
    let mut slow = srv.connect();
    slow.send(&get_req(srv.port, "/static/big.bin"))
        .unwrap_or_else(|e| srv.fail(format!("send: {e}")));
    let (status, _) = slow
        .read_head()
        .unwrap_or_else(|e| srv.fail(format!("slow client head: {e}")));
    assert_eq!(status, 200);
    let mut first = 0usize;
    while first < 1 << 20 {
        let n = slow.read_into(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        first += n;
    }
    let mut slow_peak = 0;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        slow_peak = slow_peak.max(vm_rss_kib(edge).unwrap_or(0));
    }
    drop(slow); // hang up mid-body
    eprintln!("stalled client: edge VmRSS peak {slow_peak} KiB (base {base} KiB)");
    assert!(
        slow_peak.saturating_sub(base) < LIMIT_KIB,
        "the edge's RSS grew by {} KiB while a client stalled on a 1 GiB file",
        slow_peak.saturating_sub(base)
    );
    // The edge carries on after the client went away.
    let r = srv.get("/static/small.txt");
    srv.assert_status(&r, 200, "GET after a client hung up mid-download");
    assert_eq!(r.text(), "warm up\n");
    assert!(pid_alive(edge), "the edge process died");
}

// ---------------------------------------------------------------------------
// compression of app responses
// ---------------------------------------------------------------------------

#[test]
fn app_responses_are_compressed_for_clients_that_accept_it() {
    let big_css = text_body(10_000);
    let site = Site::new()
        .app("static_app.py")
        .file("files/big.css", &big_css)
        .config(&cfg(&mount("/static/", "files", "")));
    let srv = site.start();
    let original = text_body(10_000);

    // No Accept-Encoding: identity, but caches are told it varies.
    let r = srv.get("/html?size=10000");
    srv.assert_status(&r, 200, "GET /html without Accept-Encoding");
    assert!(r.header("content-encoding").is_none(), "{r}");
    assert!(r.body == original, "{r}");
    assert!(
        has_vary_accept_encoding(&r),
        "compressible response without Vary\n{r}"
    );

    // gzip, decoded by Python's gzip module.
    let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", "gzip")]);
    srv.assert_status(&r, 200, "GET /html, Accept-Encoding: gzip");
    assert_eq!(hdr(&r, "content-encoding"), "gzip", "{r}");
    assert!(has_vary_accept_encoding(&r), "{r}");
    assert!(
        r.body.len() < original.len() / 2,
        "not really compressed: {} bytes",
        r.body.len()
    );
    assert!(
        gunzip_bytes(&r.body) == original,
        "gunzip(body) != original"
    );
    assert_eq!(hdr(&r, "content-type"), "text/html; charset=utf-8", "{r}");

    // br and zstd on the wire, decoded by curl.
    for enc in ["br", "zstd"] {
        let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", enc)]);
        srv.assert_status(&r, 200, &format!("Accept-Encoding: {enc}"));
        assert_eq!(hdr(&r, "content-encoding"), enc, "{r}");
        assert!(has_vary_accept_encoding(&r), "{r}");
        assert!(r.body != original);
        let (st, headers, body, out) = curl_fetch_headers(
            &srv.url("/html?size=10000"),
            &["--compressed", "-H", &format!("Accept-Encoding: {enc}")],
        );
        assert_eq!(st, 200, "{out}");
        assert_eq!(
            header_in(&headers, "content-encoding"),
            Some(enc),
            "{headers:?}"
        );
        assert!(
            body == original,
            "curl --compressed ({enc}) decoded something else\n{out}"
        );
    }
    let (st, body, out) = curl_fetch(&srv.url("/html?size=10000"), &["--compressed"]);
    assert!(st == 200 && body == original, "curl --compressed\n{out}");

    // Streamed (chunked) app bodies are compressed too.
    let r = srv.get_with("/html-stream?size=10000", &[("Accept-Encoding", "gzip")]);
    srv.assert_status(&r, 200, "GET /html-stream, gzip");
    assert_eq!(hdr(&r, "content-encoding"), "gzip", "{r}");
    assert!(gunzip_bytes(&r.body) == original);

    // Not compressed: small, not a listed type, 206, already encoded, static.
    for (path, why) in [
        ("/html?size=100", "100 bytes < min_size"),
        ("/html?size=1023", "1023 bytes < 1 KiB"),
        (
            "/typed?type=image/png&size=10000",
            "image/png is not in types",
        ),
        (
            "/typed?type=application/octet-stream&size=10000",
            "octet-stream",
        ),
        ("/partial", "a 206 from the app"),
    ] {
        let r = srv.get_with(path, &[("Accept-Encoding", "gzip, br, zstd")]);
        assert!(
            r.header("content-encoding").is_none(),
            "{path} ({why}) must not be compressed\n{r}"
        );
        let size: usize = path
            .split("size=")
            .nth(1)
            .map(|s| s.parse().unwrap())
            .unwrap_or(10_000);
        assert!(r.body == text_body(size), "{path}: body changed\n{r}");
    }
    let r = srv.get_with("/html?size=1024", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "1024 bytes = min_size\n{r}"
    );
    let r = srv.get_with(
        "/typed?type=application/json&size=10000",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "application/json\n{r}"
    );
    // An app's own Content-Encoding passes through untouched, whatever is accepted.
    for ae in ["gzip", "br", "identity", ""] {
        let r = srv.get_with("/encoded", &[("Accept-Encoding", ae)]);
        assert_eq!(
            r.header_all("content-encoding"),
            ["gzip"],
            "/encoded, {ae:?}\n{}",
            head_only(&r)
        );
        assert!(
            gunzip_bytes(&r.body) == original,
            "/encoded, {ae:?}: body changed"
        );
    }
    // Static files of the listed types too (tests/compression.rs has more).
    let r = srv.get_with("/static/big.css", &[("Accept-Encoding", "gzip")]);
    srv.assert_status(&r, 200, "a static file");
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r}");
    assert!(gunzip_bytes(&r.body) == big_css);
    let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", "identity")]);
    assert!(r.header("content-encoding").is_none(), "identity\n{r}");

    // Several compressed responses on one keep-alive connection.
    let mut conn = srv.connect();
    for i in 0..5 {
        let raw = raw_req_keepalive(
            "GET",
            srv.port,
            &format!("/html?size={}", 5000 + i * 1000),
            &[("Accept-Encoding", "gzip")],
            false,
        );
        let r = conn
            .roundtrip(&raw)
            .unwrap_or_else(|e| srv.fail(format!("keep-alive #{i}: {e}")));
        assert_eq!(hdr(&r, "content-encoding"), "gzip", "#{i}\n{r}");
        assert!(gunzip_bytes(&r.body) == text_body(5000 + i * 1000), "#{i}");
    }
}

#[test]
fn compression_settings_are_honoured() {
    let comp = "\n[compression]\nenabled = true\nlevel = 1\nmin_size = \"2000\"\ntypes = [\"text/html\"]\n";
    let srv = Site::new().app("static_app.py").config(&cfg(comp)).start();
    for (path, compressed) in [
        ("/html?size=1999", false),
        ("/html?size=2000", true),
        ("/typed?type=application/json&size=10000", false),
        ("/typed?type=text/plain&size=10000", false),
    ] {
        let r = srv.get_with(path, &[("Accept-Encoding", "gzip")]);
        srv.assert_status(&r, 200, path);
        assert_eq!(
            r.header("content-encoding").is_some(),
            compressed,
            "{path}: compressed = {compressed} expected\n{r}"
        );
    }
    drop(srv);
    let off = "\n[compression]\nenabled = false\n";
    let srv = Site::new().app("static_app.py").config(&cfg(off)).start();
    let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", "gzip, br, zstd")]);
    srv.assert_status(&r, 200, "compression disabled");
    assert!(
        r.header("content-encoding").is_none(),
        "enabled = false\n{r}"
    );
    assert!(r.body == text_body(10_000));
}

/// RFC 9110 §12.5.3: `q=0` means "not acceptable"; a preference order by q.
#[test]
fn app_compression_never_uses_a_refused_coding() {
    let srv = Site::new().app("static_app.py").config(&cfg("")).start();
    let original = text_body(10_000);
    for ae in [
        "gzip;q=0",
        "gzip;q=0, identity",
        "br;q=0, zstd;q=0, gzip;q=0",
        "*;q=0, identity",
    ] {
        let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", ae)]);
        srv.assert_status(&r, 200, ae);
        assert!(
            r.header("content-encoding").is_none() && r.body == original,
            "Accept-Encoding: {ae} refuses every coding, yet the response is {:?}-encoded\n{}",
            r.header("content-encoding"),
            head_only(&r)
        );
    }
    let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", "gzip;q=0, br")]);
    assert_eq!(
        r.header("content-encoding"),
        Some("br"),
        "gzip;q=0, br\n{}",
        head_only(&r)
    );
}

#[test]
fn app_compression_prefers_the_highest_q() {
    let srv = Site::new().app("static_app.py").config(&cfg("")).start();
    for (ae, want) in [
        ("br;q=0.5, gzip", "gzip"),
        ("zstd;q=0.1, br;q=0.2, gzip;q=0.9", "gzip"),
    ] {
        let r = srv.get_with("/html?size=10000", &[("Accept-Encoding", ae)]);
        srv.assert_status(&r, 200, ae);
        assert_eq!(
            r.header("content-encoding"),
            Some(want),
            "Accept-Encoding: {ae} prefers {want}\n{}",
            head_only(&r)
        );
    }
}

/// A file edited while the edge serves it under load is served new to a
/// request that comes a few milliseconds after the edit, and at once when
/// the edge was idle (`files/burst.rs`: one look at a path serves only the
/// requests of one busy stretch, at most 1 ms long). h2load keeps both edge
/// threads busy with the same file for the first part. (Its load still
/// lets them wait for events now and then, which ends a stretch too, so
/// the 1 ms bound itself is checked by burst.rs's unit test.)
#[test]
fn an_edited_file_is_served_new_under_load_and_when_idle() {
    let site = Site::new()
        .app("static_app.py")
        .file("files/a.css", "v0")
        .config(&cfg(&mount("/static/", "files", "")));
    let file = site.path().join("files/a.css");
    let srv = site.start();
    let url = format!("http://127.0.0.1:{}/static/a.css", srv.port);
    // Each version is longer than the last: a file's times can stay the same
    // across two quick writes, its size cannot.
    let version = |i: usize| format!("v{i} {}", "x".repeat(i)).into_bytes();
    let mut load = std::process::Command::new("h2load")
        .args(["--h1", "-D", "3", "-c", "8", &url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("h2load (nghttp2-client) is installed by scripts/deps.sh --test");
    thread::sleep(Duration::from_millis(300));
    for i in 1..=40 {
        fs::write(&file, version(i)).unwrap();
        thread::sleep(Duration::from_millis(5));
        let r = srv.get("/static/a.css");
        srv.assert_status(&r, 200, "under load");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            String::from_utf8_lossy(&version(i)),
            "5 ms after edit {i}, under load"
        );
    }
    let _ = load.wait();
    for i in 41..=80 {
        fs::write(&file, version(i)).unwrap();
        let r = srv.get("/static/a.css");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            String::from_utf8_lossy(&version(i)),
            "right after edit {i}, idle"
        );
    }
}
