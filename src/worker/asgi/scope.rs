//! The ASGI scope of a request, built from the head the edge wrote
//! (`wire::request`'s rules, shared with the WSGI worker). What the edge
//! knows about the connection arrives in `x-corral-*` fields; they become
//! `client`, `server` and `scheme`, and are not passed on as headers.

use crate::wire::{self, request};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// What `parse_head` hands the Python side: the scope, the body length,
/// whether the hop stays open after the response, and whether it is a
/// WebSocket handshake.
pub type Parsed = (Py<PyDict>, u64, bool);

/// Parses one request head into its scope. A head the edge would never
/// write raises ValueError((status, reason)).
pub fn parse_head(
    py: Python<'_>,
    head: &[u8],
    state: &Bound<'_, PyDict>,
    root_path: &Bound<'_, PyString>,
) -> PyResult<Parsed> {
    let head = request::parse(head)
        .map_err(|request::Bad(status, why)| PyValueError::new_err((status, why)))?;
    let scope = PyDict::new(py);
    let edge = EdgeFields::of(&head);
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let websocket = head.upgrade && edge.websocket;
    scope.set_item(
        intern!(py, "type"),
        if websocket {
            intern!(py, "websocket")
        } else {
            intern!(py, "http")
        },
    )?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(
        intern!(py, "http_version"),
        interned(py, http_version(edge.protocol.as_deref())),
    )?;
    if !websocket {
        scope.set_item(intern!(py, "method"), method(py, &head.method))?;
    }
    scope.set_item(
        intern!(py, "scheme"),
        interned(py, scheme(edge.https, websocket)),
    )?;
    let decoded = percent_encoding::percent_decode(path.as_bytes()).decode_utf8_lossy();
    scope.set_item(intern!(py, "path"), decoded)?;
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, path.as_bytes()))?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, query.as_bytes()),
    )?;
    // The full path stays in `path` (ASGI 2.x; Starlette and Django take
    // root_path off themselves).
    scope.set_item(intern!(py, "root_path"), root_path)?;
    scope.set_item(intern!(py, "headers"), headers(py, &head)?)?;
    scope.set_item(intern!(py, "client"), address(py, edge.client.as_deref())?)?;
    scope.set_item(intern!(py, "server"), address(py, edge.local.as_deref())?)?;
    if websocket {
        scope.set_item(intern!(py, "subprotocols"), subprotocols(&head))?;
    }
    scope.set_item(intern!(py, "state"), state.copy()?)?;
    let extensions = PyDict::new(py);
    if websocket {
        // The app may deny the handshake with a full HTTP response.
        extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    } else {
        extensions.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
        extensions.set_item(intern!(py, "http.response.early_hint"), PyDict::new(py))?;
        // Only to clients that can take them (the edge says which).
        if edge.trailers {
            extensions.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
        }
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok((scope.unbind(), head.content_length, head.keep_alive))
}

/// The `x-corral-*` facts, and whether the Upgrade is to WebSocket.
#[derive(Default)]
struct EdgeFields {
    client: Option<String>,
    local: Option<String>,
    protocol: Option<String>,
    https: bool,
    websocket: bool,
    trailers: bool,
}

impl EdgeFields {
    fn of(head: &request::RequestHead) -> Self {
        let mut f = EdgeFields::default();
        for (name, value) in &head.headers {
            let text = || String::from_utf8_lossy(value).into_owned();
            if name.eq_ignore_ascii_case(wire::CLIENT) {
                f.client = Some(text());
            } else if name.eq_ignore_ascii_case(wire::LOCAL) {
                f.local = Some(text());
            } else if name.eq_ignore_ascii_case(wire::PROTOCOL) {
                f.protocol = Some(text());
            } else if name.eq_ignore_ascii_case(wire::SCHEME) {
                f.https = value.eq_ignore_ascii_case(b"https");
            } else if name.eq_ignore_ascii_case(wire::TRAILERS) {
                f.trailers = true;
            } else if name.eq_ignore_ascii_case("upgrade") {
                f.websocket = value.eq_ignore_ascii_case(b"websocket");
            }
        }
        f
    }
}

/// The common methods as interned strings (no new str per request).
fn method<'py>(py: Python<'py>, m: &str) -> Bound<'py, PyString> {
    match m {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        "PUT" => intern!(py, "PUT").clone(),
        "DELETE" => intern!(py, "DELETE").clone(),
        _ => PyString::new(py, m),
    }
}

/// A `'static` value as a Python str, interned once per process.
fn interned<'py>(py: Python<'py>, s: &'static str) -> Bound<'py, PyString> {
    PyString::intern(py, s)
}

fn http_version(protocol: Option<&str>) -> &'static str {
    match protocol {
        Some("HTTP/2.0") => "2",
        Some("HTTP/1.0") => "1.0",
        _ => "1.1",
    }
}

fn scheme(https: bool, websocket: bool) -> &'static str {
    match (https, websocket) {
        (true, true) => "wss",
        (false, true) => "ws",
        (true, false) => "https",
        (false, false) => "http",
    }
}

/// `[name, value]` pairs, names lower-case, the edge's own fields left out.
fn headers<'py>(py: Python<'py>, head: &request::RequestHead) -> PyResult<Bound<'py, PyList>> {
    // Cookies come as one field: the edge joins an h2 client's separate
    // cookie fields with "; " (`edge::app::forward`).
    let list = PyList::empty(py);
    for (name, value) in &head.headers {
        let lname = name.to_ascii_lowercase();
        if lname.starts_with(wire::PREFIX) {
            continue;
        }
        let pair = PyTuple::new(py, [header_name(py, &lname), PyBytes::new(py, value)])?;
        list.append(pair)?;
    }
    Ok(list)
}

/// Header names seen so far, as shared bytes objects (immutable, so
/// sharing is safe). A site's requests carry the same few names, and an
/// open WebSocket keeps its scope for its whole life: one object per name
/// instead of one per header per request. Bounded, so names a client
/// makes up cannot grow it.
const NAMES_KEPT: usize = 256;
const NAME_KEPT_MAX_LEN: usize = 48;

thread_local! {
    static NAMES: std::cell::RefCell<std::collections::HashMap<Box<str>, Py<PyBytes>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn header_name<'py>(py: Python<'py>, lname: &str) -> Bound<'py, PyBytes> {
    NAMES.with_borrow_mut(|names| {
        if let Some(name) = names.get(lname) {
            return name.bind(py).clone();
        }
        let name = PyBytes::new(py, lname.as_bytes());
        if names.len() < NAMES_KEPT && lname.len() <= NAME_KEPT_MAX_LEN {
            names.insert(lname.into(), name.clone().unbind());
        }
        name
    })
}

/// `"1.2.3.4:80"` or `"[::1]:80"` as `(host, port)`; None if absent.
fn address<'py>(py: Python<'py>, addr: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    let parsed = addr.and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    match parsed {
        Some(a) => Ok(PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any()),
        None => Ok(py.None().into_bound(py)),
    }
}

fn subprotocols(head: &request::RequestHead) -> Vec<String> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}
