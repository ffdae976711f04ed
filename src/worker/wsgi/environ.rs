//! The PEP 3333 environ: the request line, the header fields (and what
//! the edge told in `x-corral-*` fields), the connection, `wsgi.input`.

use super::super::request::Body;
use super::super::request::Request;
use super::Wsgi;
use crate::wire;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::os::fd::IntoRawFd;

impl Wsgi {
    pub(super) fn environ<'py>(
        &self,
        py: Python<'py>,
        req: Request,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base_environ.bind(py).copy()?;
        set_target(&env, &req, &self.root_path)?;
        let Fields {
            info,
            host,
            content_type,
            http,
        } = fields(&req);
        if let Some(ct) = content_type {
            env.set_item("CONTENT_TYPE", ct)?;
        }
        for (k, v) in http {
            env.set_item(k, v)?;
        }
        let body_len = req.body.len();
        if body_len > 0 || !matches!(req.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            env.set_item("CONTENT_LENGTH", body_len.to_string())?;
        }
        set_connection(&env, info, host)?;
        let input = match req.body {
            Body::Memory(v) => self.bytes_io.bind(py).call1((PyBytes::new(py, &v),))?,
            Body::File(f, _) => {
                let fd = f.into_raw_fd();
                self.io_open.bind(py).call1((fd, "rb"))?
            }
        };
        env.set_item("wsgi.input", input)?;
        Ok(env)
    }
}

/// What the edge told us about the connection, carried in `x-corral-*`
/// headers that it strips from client requests first.
#[derive(Default)]
pub(super) struct EdgeInfo {
    pub(super) client: Option<(String, String)>,
    pub(super) local: Option<(String, String)>,
    pub(super) scheme: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_verified: bool,
}

/// REQUEST_METHOD, PATH_INFO (decoded, as latin-1), QUERY_STRING and the
/// raw target.
pub(super) fn set_target(env: &Bound<'_, PyDict>, req: &Request, root: &str) -> PyResult<()> {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target.as_str(), ""),
    };
    let path = match path.split_once("://") {
        // Absolute-form targets (`http://host/path`) carry the path after
        // the authority; an origin-form path (starting with "/") is taken
        // as it is, even if it contains "://".
        Some((_, rest)) if !path.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => path,
    };
    env.set_item("REQUEST_METHOD", &req.method)?;
    let decoded = percent_decode(path.as_bytes());
    env.set_item("PATH_INFO", latin1(under_root(&decoded, root.as_bytes())))?;
    // Raw bytes past ASCII (a client that sent `?q=café` unencoded) are
    // latin-1 characters in a WSGI environ, as in PATH_INFO (PEP 3333);
    // frameworks encode them back to bytes and decode those as UTF-8.
    env.set_item("QUERY_STRING", latin1(query.as_bytes()))?;
    let target = latin1(req.target.as_bytes());
    env.set_item("REQUEST_URI", &target)?;
    env.set_item("RAW_URI", target)?;
    Ok(())
}

/// The request's header fields, sorted for the environ.
pub(super) struct Fields {
    /// What the edge told about the connection (`x-corral-*`).
    pub(super) info: EdgeInfo,
    pub(super) host: Option<String>,
    pub(super) content_type: Option<String>,
    /// HTTP_* keys in arrival order; duplicates joined as PEP 3333 asks.
    pub(super) http: Vec<(String, String)>,
}

pub(super) fn fields(req: &Request) -> Fields {
    let mut f = Fields {
        info: EdgeInfo::default(),
        host: None,
        content_type: None,
        http: Vec::with_capacity(req.headers.len()),
    };
    for (name, value) in &req.headers {
        let lname = name.to_ascii_lowercase();
        let value = latin1(value);
        match lname.as_str() {
            wire::CLIENT => f.info.client = split_host_port(&value),
            wire::LOCAL => f.info.local = split_host_port(&value),
            wire::SCHEME => f.info.scheme = Some(value),
            wire::PROTOCOL => f.info.protocol = Some(value),
            wire::REQUEST_ID => f.info.request_id = Some(value),
            wire::CLIENT_CERT => {
                let utf8 = percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy();
                f.info.client_cert = Some(utf8.into_owned());
            }
            wire::CLIENT_VERIFY => f.info.client_verified = value == "SUCCESS",
            // The edge's other words to the worker (`x-corral-trailers`,
            // which WSGI has no use for) are not the client's headers.
            _ if lname.starts_with(wire::PREFIX) => {}
            "content-type" => f.content_type = Some(value),
            "content-length" => {}
            // Underscored names could spoof dashed ones (X_Forwarded_For
            // vs X-Forwarded-For both map to HTTP_X_FORWARDED_FOR): drop
            // them, as nginx and gunicorn do.
            _ if lname.contains('_') => {}
            _ => {
                if lname == "host" {
                    f.host = Some(value.clone());
                }
                let key = format!("HTTP_{}", lname.to_ascii_uppercase().replace('-', "_"));
                match f.http.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => {
                        v.push_str(if key == "HTTP_COOKIE" { "; " } else { ", " });
                        v.push_str(&value);
                    }
                    None => f.http.push((key, value)),
                }
            }
        }
    }
    f
}

/// REMOTE_*, SERVER_*, the scheme, TLS client certificates, the protocol
/// and the request id, from what the edge told.
pub(super) fn set_connection(
    env: &Bound<'_, PyDict>,
    info: EdgeInfo,
    host: Option<String>,
) -> PyResult<()> {
    let (client_ip, client_port) = info.client.unwrap_or_default();
    env.set_item("REMOTE_ADDR", client_ip)?;
    env.set_item("REMOTE_PORT", client_port)?;
    let (local_ip, local_port) = info.local.unwrap_or_default();
    let server_name = host
        .as_deref()
        .and_then(|h| {
            split_host_port(h)
                .map(|(n, _)| n)
                .or_else(|| Some(h.to_string()))
        })
        .unwrap_or(local_ip);
    env.set_item("SERVER_NAME", server_name)?;
    env.set_item("SERVER_PORT", local_port)?;
    let scheme = info.scheme.unwrap_or_else(|| "http".into());
    if scheme == "https" {
        env.set_item("HTTPS", "on")?;
        // The names nginx (uwsgi_param) and Apache use for client certificates.
        if info.client_verified {
            env.set_item("SSL_CLIENT_VERIFY", "SUCCESS")?;
            env.set_item("SSL_CLIENT_S_DN", info.client_cert.unwrap_or_default())?;
        } else {
            env.set_item("SSL_CLIENT_VERIFY", "NONE")?;
        }
    }
    env.set_item("wsgi.url_scheme", scheme)?;
    env.set_item(
        "SERVER_PROTOCOL",
        info.protocol.unwrap_or_else(|| "HTTP/1.1".into()),
    )?;
    if let Some(id) = info.request_id {
        env.set_item("corral.request_id", id)?;
    }
    Ok(())
}

/// Header bytes as a Python str, one char per byte (PEP 3333's latin-1 rule).
/// PATH_INFO: the path after SCRIPT_NAME (`[app] root_path`, which the
/// edge checked the path starts with; "/blog" itself gives "").
fn under_root<'a>(path: &'a [u8], root: &[u8]) -> &'a [u8] {
    match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest[0] == b'/' => rest,
        _ => path,
    }
}

pub(super) fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

pub(super) fn percent_decode(b: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(b).collect()
}

/// `"1.2.3.4:80"` or `"[::1]:80"` into host and port.
pub(super) fn split_host_port(s: &str) -> Option<(String, String)> {
    let (host, port) = s.rsplit_once(':')?;
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.is_empty() {
        return None;
    }
    if host.contains(':') && !host.starts_with('[') {
        return None; // a bare IPv6 address without a port
    }
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_to_latin1() {
        assert_eq!(latin1(&percent_decode(b"/caf%C3%A9")), "/caf\u{c3}\u{a9}");
        assert_eq!(latin1(&percent_decode(b"/a%2Fb%zz")), "/a/b%zz");
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("[::1]:80"),
            Some(("::1".into(), "80".into()))
        );
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com".into(), "8080".into()))
        );
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port("::1"), None);
    }
}
