//! `autoindex = true`: an HTML listing of a folder, names escaped, dotfiles
//! hidden. Off by default, as in nginx.

use crate::edge::files::Served;
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::path::Path;

pub async fn serve(
    st: &crate::edge::state::EdgeState,
    session: &mut Session,
    dir: &Path,
    url_path: &str,
) -> Result<Served> {
    let dir = dir.to_path_buf();
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, bool)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            v.push((name, e.file_type().map(|t| t.is_dir()).unwrap_or(false)));
        }
        v.sort();
        Ok(v)
    })
    .await;
    let Ok(Ok(entries)) = entries else {
        return crate::edge::files::error(st, session, 404).await;
    };
    let title = escape(url_path);
    let mut html = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>Index of {title}</title>\n<h1>Index of {title}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n"
    );
    for (name, is_dir) in entries {
        let slash = if is_dir { "/" } else { "" };
        let href: String =
            percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        html.push_str(&format!(
            "<li><a href=\"{href}{slash}\">{}{slash}</a></li>\n",
            escape(&name)
        ));
    }
    html.push_str("</ul>\n");
    let body = Bytes::from(html);
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    let head = session.req_header().method == http::Method::HEAD;
    crate::edge::reply::header(st, session, resp, head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(Served::Done(200))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
