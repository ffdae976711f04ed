//! Serving `[[static]]` mounts from the edge, as nginx would: GET/HEAD,
//! validators (ETag, Last-Modified, 304/412), single byte ranges (206/416),
//! precompressed siblings or compression by the edge (`compressed.rs`),
//! index files, trailing-slash redirects, optional listings. File reads run
//! on tokio's blocking pool (small files are then served from
//! `static_cache` while unchanged) and large bodies stream in 512 KiB
//! pieces, so a 2 GiB download costs a buffer, not 2 GiB.

pub(crate) mod autoindex;
mod burst;
pub(crate) mod cache;
mod compressed;
pub(crate) mod mount_dir;
pub(crate) mod read;
pub(crate) mod replay;

use crate::config::schema::Compression;
use crate::config::Mount;
use crate::edge::files::mount_dir::{FileMeta, MountDir};
use crate::edge::reply::{self, After};
use crate::edge::state::EdgeState;
use crate::proto::accept_encoding;
use crate::proto::conditional::{self, Outcome};
use crate::proto::ranges::{self, Ranges};
use crate::proto::target::{self, Refused};
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Read size for streaming large files: each read is one trip to tokio's
/// blocking pool, so fewer, larger reads; memory per download stays bounded.
const CHUNK: usize = 512 * 1024;

pub enum Served {
    /// A response was written (or the client went away while it was).
    Done(u16),
    /// Nothing here, and the mount falls back to the app.
    Fallback,
}

/// A `[[static]]` mount as the edge serves it: its settings and its
/// folder, held open.
pub struct StaticMount {
    mount: Mount,
    dir: MountDir,
    /// Tells the cached heads of one mount's files from another's (two
    /// mounts may share a folder with different Cache-Control), and their
    /// looks in `burst`'s memo.
    id: u64,
}

impl StaticMount {
    pub fn new(mount: Mount) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = MountDir::new(mount.dir.clone());
        StaticMount { mount, dir, id }
    }
}

/// The mount for a request's decoded path (mounts are sorted longest
/// first; absolute-form targets match by their path too).
pub fn find<'a>(mounts: &'a [StaticMount], decoded: &[u8]) -> Option<&'a StaticMount> {
    mounts.iter().find(|StaticMount { mount: m, .. }| {
        let prefix = m.url.as_bytes();
        decoded.starts_with(prefix) || decoded == &prefix[..prefix.len() - 1]
    })
}

/// `decoded` is the request path, percent-decoded once. `replayable`: the
/// route left nothing but the file to decide (no rate limit), so a cached
/// answer may be given again to the same request (`replay`).
pub async fn serve(
    st: &EdgeState,
    session: &mut Session,
    sm: &StaticMount,
    compression: &Compression,
    decoded: &[u8],
    replayable: bool,
) -> Result<Served> {
    let mount = &sm.mount;
    let method = session.req_header().method.clone();
    let fallback = mount.settings.fallback == "app";
    // "/static" without the slash: send the browser to the folder.
    if decoded.len() < mount.url.len() {
        return redirect(st, session, &with_slash(session)).await;
    }
    let rel = &decoded[mount.url.len()..];
    let (mut rel_path, dir_request) = match target::resolve(rel, mount.settings.dotfiles) {
        Ok(r) => r,
        Err(Refused::Hidden) if fallback => return Ok(Served::Fallback),
        Err(Refused::Hidden) => return error(st, session, 404).await,
        Err(Refused::Invalid) => return error(st, session, 400).await,
    };
    let meta = match look_within(sm, &rel_path) {
        Lookup::Found(m) => m,
        Lookup::Outside => return error(st, session, 403).await,
        Lookup::Missing if fallback => return Ok(Served::Fallback),
        Lookup::Missing => return error(st, session, 404).await,
    };
    if method != http::Method::GET && method != http::Method::HEAD {
        let allow = [("Allow", "GET, HEAD")];
        return answer(st, session, 405, "Method Not Allowed\n", &allow).await;
    }
    // Looks at the path and its siblings must have decided the file, not
    // a folder's index files.
    let replayable = replayable && !meta.is_dir();
    let meta = if meta.is_dir() {
        if !dir_request {
            return redirect(st, session, &with_slash(session)).await;
        }
        let mut found = None;
        for name in &mount.settings.index {
            let candidate = rel_path.join(name);
            if let Lookup::Found(m) = look_within(sm, &candidate) {
                if m.is_file() {
                    found = Some((candidate, m));
                    break;
                }
            }
        }
        match found {
            Some((p, m)) => {
                rel_path = p;
                m
            }
            None if mount.settings.autoindex => {
                let shown = String::from_utf8_lossy(session.req_header().uri.path().as_bytes());
                let shown = shown.into_owned();
                let folder = mount.dir.join(&rel_path);
                return Box::pin(autoindex::serve(st, session, &folder, &shown)).await;
            }
            None if fallback => return Ok(Served::Fallback),
            None => return error(st, session, 404).await,
        }
    } else if dir_request {
        // "/file.css/" is not a folder.
        return if fallback {
            Ok(Served::Fallback)
        } else {
            error(st, session, 404).await
        };
    } else {
        meta
    };
    if !meta.is_file() {
        return error(st, session, 404).await;
    }
    let asked = Ask {
        head: method == http::Method::HEAD,
        replayable,
    };
    send_file(st, session, sm, compression, &rel_path, meta, asked).await
}

/// How a found file was asked for.
#[derive(Clone, Copy)]
struct Ask {
    /// HEAD: no body.
    head: bool,
    /// A whole cached answer may be remembered (`serve`).
    replayable: bool,
}

/// The request's path with a slash added (and its query kept): where a
/// folder asked for without its slash is.
fn with_slash(session: &Session) -> String {
    let uri = &session.req_header().uri;
    match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    }
}

/// The version of a file that is sent: a precompressed sibling the client
/// takes (and that is not stale), or the file itself.
struct Version {
    rel: PathBuf,
    /// Full path: the cache serves every mount, so it knows files by it.
    path: PathBuf,
    meta: FileMeta,
    encoding: Option<&'static str>,
    /// Its bytes from memory, when small, cached and unchanged (always,
    /// when the edge compressed it).
    cached: Option<std::sync::Arc<cache::Entry>>,
    facts: cache::Facts,
    /// The bytes sent for the whole of it.
    size: u64,
    /// Other clients may get another encoding: `Vary: Accept-Encoding`.
    varies: bool,
    /// The precompressed siblings looked at, and what was found.
    siblings: Siblings,
}

impl Version {
    fn small(&self) -> bool {
        self.size <= cache::MAX_FILE
    }
}

/// What to answer, from the file's validators and the request's
/// conditionals and Range (RFC 9110 §13.2.2: conditionals first).
enum Plan {
    NotModified,
    PreconditionFailed,
    Unsatisfiable,
    /// `len` bytes from `start`; `partial`: a 206 for a Range.
    Bytes {
        start: u64,
        len: u64,
        partial: bool,
    },
}

async fn send_file(
    st: &EdgeState,
    session: &mut Session,
    sm: &StaticMount,
    compression: &Compression,
    original: &Path,
    meta: FileMeta,
    asked: Ask,
) -> Result<Served> {
    let v = version(st, session, sm, compression, original, meta).await?;
    let size = v.size;
    let (start, len, partial) = match plan(session, &v.facts, size) {
        Plan::NotModified => {
            let mut resp = validator_head(&sm.mount, &v)?;
            resp.set_status(304)?;
            return head_only(st, session, resp).await;
        }
        Plan::PreconditionFailed => {
            let mut resp = ResponseHeader::build(412, Some(2))?;
            resp.insert_header("Content-Length", "0")?;
            return head_only(st, session, resp).await;
        }
        Plan::Unsatisfiable => {
            let mut resp = ResponseHeader::build(416, Some(3))?;
            resp.insert_header("Content-Range", format!("bytes */{size}"))?;
            resp.insert_header("Content-Length", "0")?;
            return head_only(st, session, resp).await;
        }
        Plan::Bytes {
            start,
            len,
            partial,
        } => (start, len, partial),
    };
    let whole = v
        .cached
        .as_ref()
        .filter(|e| !partial && e.body.len() as u64 == size);
    let resp = match whole {
        Some(entry) => {
            // The common answer of a static site: over HTTP/1 written from
            // its prepared head; over HTTP/2 from a clone of its header.
            let head = whole_head(sm, &v, entry)?;
            if reply::prepared(st, session, &head.wire, &entry.body).await? {
                if asked.replayable && matches!(head, std::borrow::Cow::Borrowed(_)) {
                    let looks = [(original.to_path_buf(), Lookup::Found(meta))];
                    let looks = looks.into_iter().chain(v.siblings.iter().cloned());
                    remember(session, sm, looks.collect(), entry);
                }
                return Ok(Served::Done(200));
            }
            head.header.clone()
        }
        None => file_head(&sm.mount, &v, start, len, partial)?,
    };
    let status = resp.status.as_u16();
    if asked.head || len == 0 {
        reply::header(st, session, resp, true).await?;
        return Ok(Served::Done(status));
    }
    if v.small() {
        send_small(st, session, sm, v, resp, start, len).await
    } else {
        Box::pin(send_stream(st, session, sm, &v, resp, start, len)).await
    }
}

/// Keeps a cached whole answer for the shortcut (`replay`).
/// `looks`: every look that decided the answer, and what it found.
fn remember(
    session: &Session,
    sm: &StaticMount,
    looks: Box<[(PathBuf, Lookup)]>,
    entry: &std::sync::Arc<cache::Entry>,
) {
    if let Some(h1) = session.as_downstream().as_http1() {
        let raw = h1.get_headers_raw_bytes();
        replay::remember(&raw, reply::is_tls(session), sm, looks, entry);
    }
}

async fn version(
    st: &EdgeState,
    session: &Session,
    sm: &StaticMount,
    compression: &Compression,
    original: &Path,
    meta: FileMeta,
) -> Result<Version> {
    let compressible = compressed::eligible(compression, original, &meta);
    let varies = sm.mount.settings.precompressed || compressible;
    let mut siblings = Vec::new();
    let picked = pick_encoding(session, sm, original, &meta, &mut siblings);
    let (rel, meta, encoding) = match picked {
        Some((p, m, enc)) => (p, m, Some(enc)),
        None => (original.to_path_buf(), meta, None),
    };
    let path = sm.mount.dir.join(&rel);
    let made = match (encoding, compressible) {
        (None, true) => {
            compressed::entry(st, session, sm, compression, original, &path, &meta).await
        }
        _ => None,
    };
    if let Some((token, entry)) = made {
        return Ok(Version {
            path,
            rel,
            meta,
            encoding: Some(token),
            facts: entry.facts.clone(),
            size: entry.body.len() as u64,
            cached: Some(entry),
            varies,
            siblings,
        });
    }
    let cached = (meta.len() <= cache::MAX_FILE)
        .then(|| st.files_cache.get(&path, encoding, &meta))
        .flatten();
    let facts = match &cached {
        Some(entry) => entry.facts.clone(),
        None => facts_of(original, &meta, encoding).map_err(|e| {
            pingora_core::Error::because(
                pingora_core::ErrorType::InternalError,
                "static file header",
                e,
            )
        })?,
    };
    Ok(Version {
        rel,
        path,
        size: meta.len(),
        meta,
        encoding,
        cached,
        facts,
        varies,
        siblings,
    })
}

fn plan(session: &Session, facts: &cache::Facts, size: u64) -> Plan {
    let asked = Asked::of(&session.req_header().headers);
    // Built from ASCII by facts_of, so never empty here.
    let etag = facts.etag.to_str().unwrap_or_default();
    let cond = conditional::Request {
        if_match: asked.if_match,
        if_none_match: asked.if_none_match,
        if_modified_since: asked.if_modified_since,
        if_unmodified_since: asked.if_unmodified_since,
        is_get_or_head: true,
    };
    match conditional::evaluate(&cond, etag, facts.modified) {
        Outcome::NotModified => return Plan::NotModified,
        Outcome::PreconditionFailed => return Plan::PreconditionFailed,
        Outcome::Proceed => {}
    }
    let honour_range = match asked.if_range {
        Some(v) => conditional::if_range_matches(v, etag, facts.modified),
        None => true,
    };
    match asked
        .range
        .filter(|_| honour_range)
        .map(|r| ranges::parse(r, size))
    {
        Some(Ranges::Single(first, last)) => Plan::Bytes {
            start: first,
            len: last - first + 1,
            partial: true,
        },
        Some(Ranges::Unsatisfiable) => Plan::Unsatisfiable,
        _ => Plan::Bytes {
            start: 0,
            len: size,
            partial: false,
        },
    }
}

/// The request fields `plan` reads: the first value of each, as text (a
/// value that is not is taken as absent). Found in one walk over the
/// request's fields, since most requests carry none of them and six lookups
/// by name cost more than the walk.
struct Asked<'a> {
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    if_unmodified_since: Option<&'a str>,
    if_range: Option<&'a str>,
    range: Option<&'a str>,
}

impl<'a> Asked<'a> {
    fn of(headers: &'a http::HeaderMap) -> Asked<'a> {
        use http::header::{
            IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
        };
        const NAMES: [http::HeaderName; 6] = [
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ];
        // A name's values come together in `iter`, first value first.
        let mut first = [None; 6];
        for (name, value) in headers {
            if let Some(i) = NAMES.iter().position(|n| n == name) {
                first[i].get_or_insert(value);
            }
        }
        let text = |i: usize| first[i].and_then(|v: &http::HeaderValue| v.to_str().ok());
        Asked {
            if_match: text(0),
            if_none_match: text(1),
            if_modified_since: text(2),
            if_unmodified_since: text(3),
            if_range: text(4),
            range: text(5),
        }
    }
}

/// The headers a 200 and a 304 share: validators and caching.
fn validator_head(mount: &Mount, v: &Version) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(10))?;
    resp.insert_header("ETag", v.facts.etag.clone())?;
    resp.insert_header("Last-Modified", v.facts.last_modified.clone())?;
    if !mount.settings.cache_control.is_empty() {
        resp.insert_header("Cache-Control", &mount.settings.cache_control)?;
    }
    if v.varies {
        resp.insert_header("Vary", "Accept-Encoding")?;
    }
    Ok(resp)
}

/// The head of a 200 (or a 206 for `len` bytes from `start`).
fn file_head(
    mount: &Mount,
    v: &Version,
    start: u64,
    len: u64,
    partial: bool,
) -> Result<ResponseHeader> {
    let size = v.size;
    let mut resp = validator_head(mount, v)?;
    resp.insert_header("Content-Type", v.facts.content_type.clone())?;
    if let Some(enc) = v.encoding {
        resp.insert_header("Content-Encoding", enc)?;
    }
    resp.insert_header("Accept-Ranges", "bytes")?;
    if partial {
        resp.set_status(206)?;
        let last = start + len - 1;
        resp.insert_header("Content-Range", format!("bytes {start}-{last}/{size}"))?;
    }
    if len == size {
        resp.insert_header("Content-Length", v.facts.content_length.clone())?;
    } else {
        resp.insert_header("Content-Length", len.to_string())?;
    }
    Ok(resp)
}

/// A cached file's whole-file head, built on first use for the mount that
/// first served it (another mount sharing the file, with other settings,
/// gets one built for each answer).
fn whole_head<'e>(
    sm: &StaticMount,
    v: &Version,
    entry: &'e cache::Entry,
) -> Result<std::borrow::Cow<'e, cache::Head>> {
    let (mount, head) = match entry.head.get() {
        Some(built) => built,
        None => {
            let head = build_head(sm, v)?;
            entry.head.get_or_init(|| (sm.id, head))
        }
    };
    if *mount != sm.id {
        return Ok(std::borrow::Cow::Owned(build_head(sm, v)?));
    }
    Ok(std::borrow::Cow::Borrowed(head))
}

fn build_head(sm: &StaticMount, v: &Version) -> Result<cache::Head> {
    let header = file_head(&sm.mount, v, 0, v.size, false)?;
    let mut wire = bytes::BytesMut::with_capacity(256);
    header.header_to_h1_wire(&mut wire);
    Ok(cache::Head {
        wire: wire.freeze(),
        header: with_room(header)?,
    })
}

/// Reserves, in a head that is cloned for every answer, the places of the
/// fields every answer gets later: the request's id (`reply::header`, which
/// drops it for a request without one), Date and Connection (pingora;
/// HTTP/2 drops Connection). A clone's maps have no spare room: a field
/// added to a full map grows both of pingora's (value and case) maps, which
/// cost more than the seven insertions the cached head saves, while a field
/// already there is replaced in place. Added in the order the fields were
/// before, so the head reads as it did.
fn with_room(mut head: ResponseHeader) -> Result<ResponseHeader> {
    head.insert_header(reply::ECHO_FIELD, "-")?;
    head.insert_header(http::header::DATE, "-")?;
    head.insert_header(http::header::CONNECTION, "keep-alive")?;
    Ok(head)
}

/// Small files: from memory while unchanged, else opened here and read in
/// one trip to the blocking pool, then cached.
async fn send_small(
    st: &EdgeState,
    session: &mut Session,
    sm: &StaticMount,
    v: Version,
    resp: ResponseHeader,
    start: u64,
    len: u64,
) -> Result<Served> {
    let status = resp.status.as_u16();
    let entry = match v.cached {
        Some(entry) => entry,
        None => match Box::pin(load_small(st, sm, v)).await {
            Ok(entry) => entry,
            Err(e) => return open_failed(st, session, e).await,
        },
    };
    let data = &entry.body;
    let Some(body) = data.get(start as usize..(start + len) as usize) else {
        // The file shrank between its stat and its read.
        return error(st, session, 404).await;
    };
    let body = data.slice_ref(body);
    reply::header(st, session, resp, false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(Served::Done(status))
}

/// A small file not in the cache (or changed): opened, read in one trip to
/// the blocking pool, and cached. Boxed where it is awaited: a cache hit's
/// future need not carry this one's state.
async fn load_small(
    st: &EdgeState,
    sm: &StaticMount,
    v: Version,
) -> Result<std::sync::Arc<cache::Entry>, NotOpened> {
    let file = open_found(sm, &v.rel, &v.meta)?;
    let size = v.meta.len() as usize;
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut data = Vec::with_capacity(size);
        (&file).read_to_end(&mut data).map(|_| data)
    })
    .await;
    let Ok(Ok(data)) = read else {
        return Err(NotOpened::Gone);
    };
    let entry = std::sync::Arc::new(cache::Entry::new(v.facts, Bytes::from(data)));
    st.files_cache
        .put(&v.path, v.encoding, &v.meta, entry.clone());
    Ok(entry)
}

/// Larger files: read a chunk at a time, each straight into the buffer
/// that goes out (no copies), positioned (no seek state), off the async
/// threads.
async fn send_stream(
    st: &EdgeState,
    session: &mut Session,
    sm: &StaticMount,
    v: &Version,
    resp: ResponseHeader,
    start: u64,
    len: u64,
) -> Result<Served> {
    let status = resp.status.as_u16();
    let file = match open_found(sm, &v.rel, &v.meta) {
        Ok(f) => std::sync::Arc::new(f),
        Err(e) => return open_failed(st, session, e).await,
    };
    reply::header(st, session, resp, false).await?;
    let (mut offset, mut left) = (start, len);
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        // Allocated here, not on the blocking thread: memory then stays
        // with the edge's own threads, which free it once it is sent.
        let mut buf = Vec::with_capacity(want);
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            read::pread_into(&f, &mut buf, offset)?;
            Ok::<_, std::io::Error>(Bytes::from(buf))
        })
        .await;
        let chunk = read
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| {
                pingora_core::Error::because(
                    pingora_core::ErrorType::ReadError,
                    "static file read",
                    e,
                )
            })?;
        if chunk.is_empty() {
            // The file shrank under us: cut the response rather than lie.
            return Err(pingora_core::Error::explain(
                pingora_core::ErrorType::ReadError,
                "static file truncated",
            ));
        }
        offset += chunk.len() as u64;
        left -= chunk.len() as u64;
        session.write_response_body(Some(chunk), left == 0).await?;
    }
    Ok(Served::Done(status))
}

/// Opens the file a lookup found, through the same open folder, and makes
/// sure it is still that version: the bytes sent and the headers (and the
/// cache entry) must describe one file, even while a deploy swaps folders.
///
/// Inline, like the lookup: an open of a page-cached file is microseconds.
fn open_found(sm: &StaticMount, rel: &Path, meta: &FileMeta) -> Result<std::fs::File, NotOpened> {
    let by_path = || -> std::io::Result<(std::fs::File, FileMeta)> {
        let f = std::fs::File::open(sm.mount.dir.join(rel))?;
        let m = FileMeta::from_std(&f.metadata()?);
        Ok((f, m))
    };
    let opened = if sm.mount.settings.follow_symlinks {
        by_path()
    } else {
        match sm.dir.open_file(rel) {
            // A symlink as the last part, which the lookup resolved and
            // found inside the mount: opened by path as before.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => by_path(),
            other => other,
        }
    };
    match opened {
        Ok((file, m)) if m == *meta => Ok(file),
        Ok(_) => Err(NotOpened::Changed),
        Err(_) => Err(NotOpened::Gone),
    }
}

enum NotOpened {
    Gone,
    /// Replaced between its lookup and its open.
    Changed,
}

/// 404 for a file gone, 503 (retry in a second) for one that changed
/// under the request: not a 404 a cache could keep.
async fn open_failed(st: &EdgeState, session: &mut Session, e: NotOpened) -> Result<Served> {
    if let NotOpened::Gone = e {
        return error(st, session, 404).await;
    }
    let why = "Service Unavailable: file changed, retry\n";
    answer(st, session, 503, why, &[("Retry-After", "1")]).await
}

/// Precompressed siblings looked at, with what each look found.
type Siblings = Vec<(PathBuf, Lookup)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Found(FileMeta),
    Missing,
    Outside,
}

/// Metadata of `rel` (a path inside the mount's folder), refusing a symlink
/// that leads outside it unless the mount has `follow_symlinks`.
///
/// Done inline, as nginx does its open/stat: on the page-cached inodes a
/// site serves these are microseconds, while a trip to the blocking pool
/// costs more than the call. Reads of file contents never happen inline.
fn look_within(sm: &StaticMount, rel: &Path) -> Lookup {
    let root = &sm.mount.dir;
    if rel.has_root() {
        // Never from proto::target; an absolute path would ignore the folder.
        return Lookup::Outside;
    }
    // Each stat below is shared by the requests of one burst
    // (`files/burst.rs`). A mount follows symlinks or lstat()s, never both,
    // so both kinds of look are kept under the mount's id.
    if sm.mount.settings.follow_symlinks {
        let followed = || std::fs::metadata(root.join(rel)).map(|m| FileMeta::from_std(&m));
        return match burst::look(sm.id, rel, followed) {
            Ok(m) => Lookup::Found(m),
            Err(_) => Lookup::Missing,
        };
    }
    // `rel` has no `..` (proto::target refuses it): unless some part of it is
    // a symlink, it cannot lead outside the (canonical) root. One lstat per
    // part, from the open folder, is cheaper than canonicalizing (a
    // readlink for every part from `/`); symlinks take the slow, exact way.
    let mut part = PathBuf::new();
    let mut last = None;
    for c in rel.components() {
        part.push(c);
        match burst::look(sm.id, &part, || sm.dir.lstat(&part)) {
            Ok(m) if m.is_symlink() => {
                last = None;
                break;
            }
            Ok(m) => last = Some(m),
            Err(_) => return Lookup::Missing,
        }
    }
    if let Some(m) = last {
        return Lookup::Found(m);
    }
    let Ok(real) = root.join(rel).canonicalize() else {
        return Lookup::Missing;
    };
    if !real.starts_with(root) {
        return Lookup::Outside;
    }
    match std::fs::metadata(&real) {
        Ok(m) => Lookup::Found(FileMeta::from_std(&m)),
        Err(_) => Lookup::Missing,
    }
}

/// Chooses `.br`, `.zst` or `.gz` by the client's Accept-Encoding when such
/// a sibling exists and is at least as new as the original: the highest q
/// wins, and among equals the smallest file (which is what a precompressed
/// sibling is for).
/// Each sibling looked at goes into `looked`, with what was found.
fn pick_encoding(
    session: &Session,
    sm: &StaticMount,
    rel: &Path,
    meta: &FileMeta,
    looked: &mut Siblings,
) -> Option<(PathBuf, FileMeta, &'static str)> {
    if !sm.mount.settings.precompressed {
        return None;
    }
    let accept = session
        .req_header()
        .headers
        .get(http::header::ACCEPT_ENCODING)?
        .to_str()
        .ok()?
        .to_string();
    let original_mtime = meta.modified();
    let mut best: Option<(PathBuf, FileMeta, &'static str, f32)> = None;
    // Best q first: once a sibling is found, only equal q can still win.
    for ((enc, ext), q) in accept_encoding::accepted(&accept) {
        if best.as_ref().is_some_and(|b| q < b.3) {
            break;
        }
        let mut candidate = rel.as_os_str().to_owned();
        candidate.push(ext);
        let candidate = PathBuf::from(candidate);
        let found = look_within(sm, &candidate);
        looked.push((candidate.clone(), found));
        if let Lookup::Found(m) = found {
            let fresh = m.is_file() && m.modified() >= original_mtime;
            if fresh && best.as_ref().is_none_or(|b| m.len() < b.1.len()) {
                best = Some((candidate, m, enc, q));
            }
        }
    }
    best.map(|(path, m, enc, _)| (path, m, enc))
}

/// Header values for one version of a file (`original` names the type even
/// when a precompressed sibling is sent).
fn facts_of(
    original: &Path,
    meta: &FileMeta,
    encoding: Option<&str>,
) -> std::result::Result<crate::edge::files::cache::Facts, http::header::InvalidHeaderValue> {
    // HTTP dates run from 1970 to 9999 (httpdate panics outside): a file
    // touched to 1969 or to the year 10000 is served with the nearest.
    let latest = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    let modified = meta.modified().clamp(SystemTime::UNIX_EPOCH, latest);
    Ok(crate::edge::files::cache::Facts {
        modified,
        etag: make_etag(meta.len(), modified, encoding).try_into()?,
        last_modified: httpdate::fmt_http_date(modified).try_into()?,
        content_type: content_type(original).try_into()?,
        content_length: meta.len().into(),
    })
}

fn make_etag(size: u64, modified: SystemTime, encoding: Option<&str>) -> String {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    match encoding {
        Some(e) => format!("\"{nanos:x}-{size:x}-{e}\""),
        None => format!("\"{nanos:x}-{size:x}\""),
    }
}

/// The type a file's name says it has.
fn mime_of(path: &Path) -> mime_guess::Mime {
    mime_guess::from_path(path).first_or_octet_stream()
}

/// The same type's essence ("text/css"), remembered per thread by the
/// name's extension: compression asks it for every request, and the
/// lookup (a case-folded search of ~1,500 extensions) cost as much as
/// everything else in deciding what to send.
fn type_named(path: &Path) -> &'static str {
    const OCTETS: &str = "application/octet-stream";
    /// Extensions remembered per thread; past it, looked up each time.
    const KEPT: usize = 64;
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(std::ffi::OsString, &'static str)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let Some(ext) = path.extension() else {
        return OCTETS;
    };
    SEEN.with_borrow_mut(|seen| {
        if let Some((_, t)) = seen.iter().find(|(e, _)| e == ext) {
            return *t;
        }
        let named = ext
            .to_str()
            .and_then(|e| mime_guess::from_ext(e).first_raw());
        let t = named.unwrap_or(OCTETS);
        if seen.len() < KEPT {
            seen.push((ext.to_owned(), t));
        }
        t
    })
}

fn content_type(path: &Path) -> String {
    let mime = mime_of(path);
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "image/svg+xml"
                | "application/manifest+json"
        );
    if text && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    }
}

async fn redirect(st: &EdgeState, session: &mut Session, location: &str) -> Result<Served> {
    let extra = [("Location", location)];
    answer(st, session, 301, "Moved Permanently\n", &extra).await
}

/// 400/403/404 with a short body that reveals no paths.
pub async fn error(st: &EdgeState, session: &mut Session, status: u16) -> Result<Served> {
    let text = match status {
        400 => "Bad Request\n",
        403 => "Forbidden\n",
        _ => "Not Found\n",
    };
    answer(st, session, status, text, &[]).await
}

/// A small answer about a file; the request was a plain GET or HEAD, so
/// the connection carries on.
///
/// Boxed, like every answer but a file's: an async fn's future is as large
/// as its largest state and is built and moved for every request, so the
/// rare answers stay out of the common path's future.
fn answer<'a>(
    st: &'a EdgeState,
    session: &'a mut Session,
    status: u16,
    text: &'static str,
    extra: &'a [(&'static str, &'a str)],
) -> Boxed<'a> {
    Box::pin(async move {
        reply::text(st, session, status, text, extra, After::KeepAlive).await?;
        Ok(Served::Done(status))
    })
}

type Boxed<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Served>> + Send + 'a>>;

/// A head with no body (304, 412, 416).
fn head_only<'a>(st: &'a EdgeState, session: &'a mut Session, resp: ResponseHeader) -> Boxed<'a> {
    Box::pin(async move {
        let status = resp.status.as_u16();
        reply::header(st, session, resp, true).await?;
        Ok(Served::Done(status))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    /// The remembered essence is the looked-up one, the second time too,
    /// for known, unknown, upper-case and missing extensions.
    #[test]
    fn a_remembered_type_is_the_looked_up_one() {
        for name in [
            "a.css", "b.CSS", "c.svg", "d.json", "e.weird", "noext", "f.tar.gz",
        ] {
            let path = Path::new(name);
            let want = mime_of(path);
            for _ in 0..2 {
                assert_eq!(type_named(path), want.essence_str(), "{name}");
            }
        }
    }
}
