//! Answers given again: a cached file's whole 200 over HTTP/1, for a
//! request that asks for it in the same words as one answered before.
//!
//! Why: for a small cached file, pingora's per-request session (the head
//! read into a header map, its phases, its finish) and the checks on that
//! map cost twice what deciding and sending the answer does. The shortcut
//! (`conn::shortcut`) answers a repeated request without them.
//!
//! Why the answer is the same: the full request path (`route`, then
//! `files`) decides every answer first, and one is remembered only
//! - for a head of the plain shape (`shape`): GET or HEAD, HTTP/1.1, a
//!   path target, one Host, at most one Accept-Encoding, and no field
//!   outside `INERT`, which no rule reads for a static answer
//!   (conditionals, Range, forwarding, upgrades, bodies and
//!   `Connection: close` all take the full path);
//! - when its route had no rate limit and looks at the file and its
//!   precompressed siblings decided it (not a folder's index files);
//!
//! and it is keyed by everything the rules read from such a head: method,
//! Host, target, Accept-Encoding and TLS. It is given again only while
//! looks at the file and those siblings find what the first looks found (`burst`: at most
//! 1 ms old under load, fresh after an idle moment) and while its bytes
//! are still in memory (in the cache, or held by an answer on its way). Each edge thread keeps its own answers: a
//! connection stays on the thread that accepted it.

use super::cache::Entry;
use super::{look_within, Lookup, StaticMount};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

/// Fields a static answer never depends on (the access log reads Referer
/// and User-Agent). Anything else sends the request the full way.
const INERT: &[&str] = &[
    "accept",
    "accept-language",
    "cache-control",
    "cookie",
    "dnt",
    "origin",
    "pragma",
    "priority",
    "referer",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "sec-gpc",
    "upgrade-insecure-requests",
    "user-agent",
];
/// Fields parsed at most; a longer head takes the full path.
const MAX_FIELDS: usize = 32;
/// Answers kept per thread; past it, they are forgotten and relearned.
const MAX_ANSWERS: usize = 1024;
/// Longer keys (long query strings) are not kept: with `MAX_ANSWERS`, a
/// client asking for a file under ever new targets holds a few MiB per
/// thread at most (each answer's key, and its paths, at most as long).
const MAX_KEY: usize = 1024;

/// A request head of the plain shape.
#[derive(Debug)]
pub struct Plain<'h> {
    /// The head's length in bytes (it has no body).
    pub len: usize,
    /// HEAD: the answer without its body.
    pub head_only: bool,
    pub target: &'h [u8],
    pub referer: Option<&'h [u8]>,
    pub user_agent: Option<&'h [u8]>,
    host: &'h [u8],
    accept_encoding: Option<&'h [u8]>,
}

/// Whether `raw` may start with a request answered before: this thread
/// remembers answers, and its request line asks GET or HEAD of a target
/// under a mount. Cheap, so the app's requests do not pay for `shape`.
pub fn worth_a_look(raw: &[u8], mounts: &[StaticMount]) -> bool {
    let target = raw
        .strip_prefix(b"GET ")
        .or_else(|| raw.strip_prefix(b"HEAD "));
    let Some(target) = target else {
        return false;
    };
    let under = |sm: &StaticMount| target.starts_with(sm.mount.url.as_bytes());
    mounts.iter().any(under) && MEMO.with_borrow(|memo| !memo.answers.is_empty())
}

/// `raw` as a plain head, if it starts with a whole one of that shape
/// with at most `max_fields` fields.
pub fn shape(raw: &[u8], max_fields: usize) -> Option<Plain<'_>> {
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let httparse::Status::Complete(len) = req.parse_with_uninit_headers(raw, &mut fields).ok()?
    else {
        return None;
    };
    let head_only = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = req.path?.as_bytes();
    // A fragment is dropped by pingora's parser (and so from its log),
    // kept here: such a target takes the full path.
    let pathlike = target.starts_with(b"/") && !target.contains(&b'#');
    if req.version != Some(1) || !pathlike || req.headers.len() > max_fields {
        return None;
    }
    let mut plain = Plain {
        len,
        head_only,
        target,
        referer: None,
        user_agent: None,
        host: b"",
        accept_encoding: None,
    };
    let mut hosts = 0;
    for field in req.headers.iter() {
        let (name, value) = (field.name, field.value);
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            plain.host = value;
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            if plain.accept_encoding.replace(value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if !value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if !INERT.iter().any(|i| name.eq_ignore_ascii_case(i)) {
            return None;
        } else if name.eq_ignore_ascii_case("referer") {
            // The first, as the full path's log takes it.
            plain.referer.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            plain.user_agent.get_or_insert(value);
        }
    }
    (hosts == 1).then_some(plain)
}

/// What the full path answered a key with.
struct Answer {
    mount: u64,
    /// Paths in the mount whose looks decided it (the file's first, then
    /// its siblings'), and what each found.
    looks: Box<[(PathBuf, Lookup)]>,
    /// Weak: the cache decides how long the bytes are kept.
    entry: Weak<Entry>,
}

#[derive(Default)]
struct Memo {
    answers: HashMap<Box<[u8]>, Answer>,
    /// Where a key is written to be looked up (no allocation per request).
    key: Vec<u8>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::default();
}

/// Everything of a plain head the rules read, in bytes no field holds
/// (the framer refuses line ends inside a head's values).
fn key_into(plain: &Plain, tls: bool, key: &mut Vec<u8>) {
    key.clear();
    key.push(if plain.head_only { b'H' } else { b'G' });
    key.push(if tls { b'S' } else { b'P' });
    key.extend_from_slice(plain.host);
    key.push(b'\n');
    key.extend_from_slice(plain.target);
    if let Some(accepted) = plain.accept_encoding {
        key.push(b'\n');
        key.extend_from_slice(accepted);
    }
}

/// After the full path answered `raw` (a request head) with a cached
/// file's whole 200 from `entry`, decided by `looks` in `sm`.
pub(super) fn remember(
    raw: &[u8],
    tls: bool,
    sm: &StaticMount,
    looks: Box<[(PathBuf, Lookup)]>,
    entry: &Arc<Entry>,
) {
    // The full path has held this head to `max_headers`; the shortcut
    // does so for the heads it answers.
    let Some(plain) = shape(raw, usize::MAX) else {
        return;
    };
    let mut key = Vec::new();
    key_into(&plain, tls, &mut key);
    if key.len() > MAX_KEY {
        return;
    }
    MEMO.with_borrow_mut(|memo| {
        if memo.answers.len() >= MAX_ANSWERS {
            memo.answers.clear();
        }
        let answer = Answer {
            mount: sm.id,
            looks,
            entry: Arc::downgrade(entry),
        };
        memo.answers.insert(key.into_boxed_slice(), answer);
    });
}

/// The entry to answer `plain` with again, if the full path answered it
/// before and the file is still as it was then. Its whole head
/// (`Entry::head`) is the mount's.
pub fn recall(plain: &Plain, tls: bool, mounts: &[StaticMount]) -> Option<Arc<Entry>> {
    MEMO.with_borrow_mut(|memo| {
        let mut key = std::mem::take(&mut memo.key);
        key_into(plain, tls, &mut key);
        let found = memo.answers.get(&key[..]).map(still_true(mounts));
        if let Some(None) = found {
            memo.answers.remove(&key[..]); // no longer true
        }
        memo.key = key;
        found.flatten()
    })
}

/// An answer's entry, if its mount still serves its file as it was and
/// the cache still holds the bytes.
fn still_true(mounts: &[StaticMount]) -> impl Fn(&Answer) -> Option<Arc<Entry>> + '_ {
    move |answer| {
        let sm = mounts.iter().find(|sm| sm.id == answer.mount)?;
        let entry = answer.entry.upgrade()?;
        let same = answer
            .looks
            .iter()
            .all(|(rel, seen)| look_within(sm, rel) == *seen);
        let own_head = entry.head.get().is_some_and(|(id, _)| *id == sm.id);
        (same && own_head).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(raw: &str) -> Option<Plain<'_>> {
        shape(raw.as_bytes(), 100)
    }

    fn key(raw: &str, tls: bool) -> Vec<u8> {
        let mut key = Vec::new();
        key_into(&plain(raw).expect("plain"), tls, &mut key);
        key
    }

    #[test]
    fn what_a_browser_sends_is_plain() {
        let head = "GET /static/app.css?v=3 HTTP/1.1\r\nHost: example.com\r\n\
            User-Agent: Mozilla/5.0\r\nAccept: text/css,*/*;q=0.1\r\n\
            Accept-Language: en\r\nAccept-Encoding: gzip, br\r\nReferer: https://example.com/\r\n\
            Connection: keep-alive\r\nSec-Fetch-Dest: style\r\nCookie: a=b\r\n\r\nGET /next";
        let p = plain(head).expect("plain");
        assert_eq!(p.len, head.len() - "GET /next".len());
        assert_eq!(p.target, b"/static/app.css?v=3");
        assert_eq!(p.user_agent, Some(&b"Mozilla/5.0"[..]));
        assert_eq!(p.referer, Some(&b"https://example.com/"[..]));
        assert!(!p.head_only);
        assert!(
            plain("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
                .expect("HEAD")
                .head_only
        );
        // Repeated fields the log reads: the first, as the full path's.
        let twice = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: A\r\nUser-Agent: B\r\n\r\n";
        assert_eq!(plain(twice).expect("plain").user_agent, Some(&b"A"[..]));
    }

    #[test]
    fn a_head_any_rule_reads_more_of_takes_the_full_path() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a#top HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert!(plain(head).is_none(), "{head:?}");
        }
        let many = "GET / HTTP/1.1\r\nHost: a\r\nAccept: x\r\nDNT: 1\r\n\r\n";
        assert!(shape(many.as_bytes(), 3).is_some());
        assert!(shape(many.as_bytes(), 2).is_none());
    }

    #[test]
    fn the_key_holds_all_the_rules_read() {
        let base = key("GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\n\r\n", false);
        // Fields no rule reads do not change it...
        assert_eq!(
            base,
            key("GET /a HTTP/1.1\r\nuser-agent: y\r\nhost: h\r\n\r\n", false)
        );
        // ...anything a rule reads does.
        for other in [
            key("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", true),
            key("HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", false),
            key("GET /a HTTP/1.1\r\nHost: h2\r\n\r\n", false),
            key("GET /a?x HTTP/1.1\r\nHost: h\r\n\r\n", false),
            key(
                "GET /a HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n",
                false,
            ),
            key(
                "GET /a HTTP/1.1\r\nHost: h\r\nAccept-Encoding:\r\n\r\n",
                false,
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
