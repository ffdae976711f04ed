//! `[app] root_path`: an app mounted under a path prefix, as gunicorn's
//! SCRIPT_NAME and uvicorn's --root-path mount one. The app sees the
//! prefix as SCRIPT_NAME (WSGI) or root_path (ASGI) and builds its links
//! with it; paths outside it never reach the app (404 from the edge), while
//! static files and the health check keep their own paths.
mod common;

use common::*;

const FLASK: &str = r#"
from flask import Flask, request, url_for, redirect
app = Flask(__name__)

@app.get("/where")
def where():
    return {"script_name": request.environ["SCRIPT_NAME"],
            "path_info": request.environ["PATH_INFO"],
            "link": url_for("where")}

@app.get("/")
def home():
    return "home"

@app.get("/old")
def old():
    return redirect(url_for("where"))
"#;

const FASTAPI: &str = r#"
from fastapi import FastAPI, Request
app = FastAPI()

@app.get("/where")
async def where(request: Request):
    return {"root_path": request.scope["root_path"], "path": request.scope["path"],
            "link": str(request.url_for("where"))}
"#;

fn mounted(file: &str, source: &str, module: &str) -> Running {
    let extra = "virtualenv = \"{venv}\"\nroot_path = \"/blog\"";
    let config = app_config(module, 1, extra).replacen(
        "[server]\n",
        "[server]\nhealth_path = \"/healthz\"\n",
        1,
    );
    Site::new().file(file, source).config(&config).start()
}

/// curl's status and body for `path`.
fn fetch(srv: &Running, path: &str) -> (u16, String) {
    let (status, body, out) = curl_fetch(&format!("http://127.0.0.1:{}{path}", srv.port), &[]);
    assert!(out.success(), "{out}");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The app's JSON answer at `path` (a 200).
fn json_at(srv: &Running, path: &str) -> serde_json::Value {
    let (status, body) = fetch(srv, path);
    assert_eq!(status, 200, "{body}\n{}", srv.stderr_tail());
    serde_json::from_str(&body).expect("json")
}

#[test]
fn a_flask_app_under_a_prefix_sees_it_as_script_name() {
    let srv = mounted("blog.py", FLASK, "blog:app");
    let j = json_at(&srv, "/blog/where");
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/where", "{j}");
    assert_eq!(j["link"], "/blog/where", "{j}");
    assert_eq!(fetch(&srv, "/blog/"), (200, "home".into()));
    let (status, body) = fetch(&srv, "/blog/old");
    assert_eq!(status, 302, "{body}");
    // Outside the prefix: the edge answers, the app never sees it.
    for path in ["/where", "/", "/blogger", "/other/blog/where"] {
        assert_eq!(fetch(&srv, path).0, 404, "{path}");
    }
    assert_eq!(fetch(&srv, "/healthz").0, 200);
}

#[test]
fn a_fastapi_app_under_a_prefix_gets_it_as_root_path() {
    let srv = mounted("blog.py", FASTAPI, "blog:app");
    let j = json_at(&srv, "/blog/where?x=1");
    assert_eq!(j["root_path"], "/blog", "{j}");
    assert_eq!(j["path"], "/blog/where", "{j}");
    assert_eq!(
        j["link"],
        format!("http://127.0.0.1:{}/blog/where", srv.port),
        "{j}"
    );
    assert_eq!(fetch(&srv, "/where").0, 404);
}
