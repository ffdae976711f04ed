//! Starting the embedded CPython in a freshly forked child the way a
//! gunicorn user expects: in `chdir`, with `chdir` and `pythonpath` on
//! sys.path, inside the configured virtualenv, with `[app.env]` set.
//!
//! Python is initialised only after fork, so each worker has its own
//! interpreter and the master never holds one.

use crate::config::{schema, Site};
use crate::ipc::Interface;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::path::Path;

/// Prepares the process environment and initialises Python. Must run while
/// the process is still single-threaded (it sets environment variables).
pub fn start(site: &Site) -> Result<(), String> {
    for (k, v) in &site.config.app.env {
        // SAFETY (edition 2021: safe fn): no other thread exists yet.
        std::env::set_var(k, v);
    }
    if let Some(venv) = &site.virtualenv {
        std::env::set_var("VIRTUAL_ENV", venv);
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", venv.join("bin").display()));
    }
    std::env::set_current_dir(&site.chdir)
        .map_err(|e| format!("cannot enter app.chdir {}: {e}", site.chdir.display()))?;
    Python::initialize();
    Python::attach(|py| configure_sys(py, site))
        .map_err(|e| Python::attach(|py| format!("cannot set up Python: {}", format_err(py, &e))))
}

fn configure_sys(py: Python<'_>, site: &Site) -> PyResult<()> {
    let sys = py.import("sys")?;
    // Embedded interpreters have no argv; many libraries read sys.argv[0].
    sys.setattr("argv", vec!["corral"])?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    let mut front = vec![site.chdir.display().to_string()];
    front.extend(site.pythonpath.iter().map(|p| p.display().to_string()));
    for (i, p) in front.iter().enumerate() {
        path.insert(i, p)?;
    }
    let version = format!("python{}", crate::config::units::python_version());
    if let Some(venv) = &site.virtualenv {
        let site_packages = venv.join("lib").join(&version).join("site-packages");
        let system_too = std::fs::read_to_string(venv.join("pyvenv.cfg"))
            .map(|t| {
                t.lines().any(|l| {
                    l.split_once('=').is_some_and(|(k, v)| {
                        k.trim() == "include-system-site-packages" && v.trim() == "true"
                    })
                })
            })
            .unwrap_or(false);
        let site_mod = py.import("site")?;
        if !system_too {
            // Same isolation as running the venv's own python.
            let system: Vec<String> = site_mod.call_method0("getsitepackages")?.extract()?;
            let user: Option<String> = site_mod.call_method0("getusersitepackages")?.extract().ok();
            for p in system.iter().chain(user.iter()) {
                while path.contains(p)? {
                    path.call_method1("remove", (p,))?;
                }
            }
        }
        site_mod.call_method1("addsitedir", (site_packages.display().to_string(),))?;
        sys.setattr("prefix", venv.display().to_string())?;
        sys.setattr("exec_prefix", venv.display().to_string())?;
        let exe = venv.join("bin").join("python");
        sys.setattr("executable", exe.display().to_string())?;
    } else {
        // sys.executable would be the corral binary: point it at the real
        // interpreter so subprocess/multiprocessing users get Python.
        let base: String = sys.getattr("base_exec_prefix")?.extract()?;
        let exe = Path::new(&base).join("bin").join(&version);
        if exe.exists() {
            sys.setattr("executable", exe.display().to_string())?;
        }
    }
    // Segfaults in C extensions then print the Python stack to the error log,
    // and SIGUSR2 (sent by the master when a request overruns app.timeout)
    // prints every thread's stack, at C level, even while the app holds the GIL.
    let faulthandler = py.import("faulthandler")?;
    faulthandler.call_method0("enable")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("all_threads", true)?;
    faulthandler.call_method("register", (libc::SIGUSR2,), Some(&kwargs))?;
    Ok(())
}

/// Imports the app; returns it with the interface it speaks, or the
/// traceback text.
pub fn load_app(py: Python<'_>, site: &Site) -> Result<Loaded, String> {
    let spec = &site.app;
    let module = py
        .import("importlib")
        .and_then(|m| m.call_method1("import_module", (&spec.module,)))
        .map_err(|e| format_err(py, &e))?;
    let mut obj = module;
    for part in spec.callable.split('.') {
        obj = obj.getattr(part).map_err(|_| {
            format!(
                "AttributeError: module `{}` has no attribute `{}` (app.module = \"{}:{}\")",
                spec.module, spec.callable, spec.module, spec.callable
            )
        })?;
    }
    if spec.factory {
        obj = obj.call0().map_err(|e| format_err(py, &e))?;
    }
    if !obj.is_callable() {
        return Err(format!(
            "TypeError: `{}:{}` is a {}, not a WSGI or ASGI callable",
            spec.module,
            spec.callable,
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ));
    }
    let (interface, why) = interface_of(py, &obj, site)?;
    import_django_urlconf(py)?;
    Ok(Loaded {
        app: obj.unbind(),
        interface,
        why,
    })
}

/// Django imports its URLconf (urls.py, and through it the views) only on
/// the first request: a deploy with a broken views.py would boot, pass a
/// reload's canary and then answer 500 to everything. Import it now, as
/// `manage.py check` and `runserver` do, so such a deploy fails to boot
/// and a reload keeps the running code. Nothing for an app without Django
/// (or without a ROOT_URLCONF).
fn import_django_urlconf(py: Python<'_>) -> Result<(), String> {
    let loaded = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|m| m.contains("django.conf"))
        .unwrap_or(false);
    if !loaded {
        return Ok(());
    }
    let Ok(settings) = py.import("django.conf").and_then(|m| m.getattr("settings")) else {
        return Ok(());
    };
    let configured = settings
        .getattr("configured")
        .and_then(|c| c.extract::<bool>())
        .unwrap_or(false);
    if !configured || settings.getattr("ROOT_URLCONF").is_err() {
        return Ok(());
    }
    py.import("django.urls")
        .and_then(|urls| urls.call_method0("get_resolver"))
        .and_then(|resolver| resolver.getattr("url_patterns"))
        .map(|_| ())
        .map_err(|e| format_err(py, &e))
}

/// An imported app.
pub struct Loaded {
    pub app: Py<PyAny>,
    pub interface: Interface,
    /// How the interface was decided, for `corral check` and the log.
    pub why: String,
}

impl Loaded {
    pub fn clone_ref(&self, py: Python<'_>) -> Loaded {
        Loaded {
            app: self.app.clone_ref(py),
            interface: self.interface,
            why: self.why.clone(),
        }
    }
}

/// `[app] interface`, or for `auto` what the callable looks like.
fn interface_of(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    site: &Site,
) -> Result<(Interface, String), String> {
    let spec = &site.app;
    let found = asgi_kind(py, obj);
    match (site.config.app.interface, found) {
        (schema::Interface::Asgi, _) => Ok((Interface::Asgi, "app.interface = \"asgi\"".into())),
        (schema::Interface::Wsgi, Some(kind)) => Err(format!(
            "TypeError: `{}:{}` is an ASGI app ({kind}) but app.interface = \"wsgi\": \
             set app.interface = \"asgi\" (or \"auto\"), or point app.module at the WSGI app \
             (Django: \"myproject.wsgi:application\")",
            spec.module, spec.callable
        )),
        (schema::Interface::Wsgi, None) => Ok((Interface::Wsgi, "app.interface = \"wsgi\"".into())),
        (schema::Interface::Auto, Some(kind)) => Ok((Interface::Asgi, kind)),
        (schema::Interface::Auto, None) => Ok((
            Interface::Wsgi,
            "a callable that is not async (set app.interface = \"asgi\" if it is one)".into(),
        )),
    }
}

/// Names what makes `obj` an ASGI app, if it is one: an `async def`
/// callable, or an object whose `__call__` is one (FastAPI, Starlette,
/// Django's ASGIHandler).
fn asgi_kind(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<String> {
    let inspect = py.import("inspect").ok()?;
    let is_coro = |o: &Bound<'_, PyAny>| -> bool {
        inspect
            .call_method1("iscoroutinefunction", (o,))
            .and_then(|r| r.extract::<bool>())
            .unwrap_or(false)
    };
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    if is_coro(obj) {
        return Some("an async def function".to_string());
    }
    let call = obj.getattr("__call__").ok()?;
    is_coro(&call).then(|| format!("{} object with an async __call__", a_or_an(&type_name)))
}

/// "a Starlette", "an ASGIHandler": the article the name is said with (by
/// its first letter; an acronym's vowel sound is not guessed).
fn a_or_an(name: &str) -> String {
    let vowel = name
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {name}", if vowel { "an" } else { "a" })
}

pub use super::wsgi::format_err;

/// The last line of a traceback: `ModuleNotFoundError: No module named 'x'`.
pub fn last_line(traceback: &str) -> &str {
    traceback.trim_end().lines().last().unwrap_or(traceback)
}

/// The last line and where it happened, for one-line reports (`corral
/// reload`'s answer): `SyntaxError: '(' was never closed
/// (/srv/mysite/views.py, line 4)`. The place is the traceback's last
/// `File "...", line N`: the innermost frame, or the file a SyntaxError
/// is in.
pub fn summary(traceback: &str) -> String {
    let last = last_line(traceback);
    let place = traceback.lines().rev().find_map(|l| {
        let rest = l.trim_start().strip_prefix("File \"")?;
        let (file, after) = rest.split_once('"')?;
        let digits = after.strip_prefix(", line ")?;
        let n = digits.split(|c: char| !c.is_ascii_digit()).next()?;
        (!n.is_empty()).then(|| format!("{file}, line {n}"))
    });
    match place {
        Some(p) => format!("{last} ({p})"),
        None => last.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn a_summary_says_what_and_where() {
        let syntax = "Traceback (most recent call last):\n  File \"<frozen importlib._bootstrap>\", line 1204, in _gcd_import\n  File \"/srv/mysite/views.py\", line 4\n    def index(request:\n             ^\nSyntaxError: '(' was never closed\n";
        assert_eq!(
            summary(syntax),
            "SyntaxError: '(' was never closed (/srv/mysite/views.py, line 4)"
        );
        let raised = "Traceback (most recent call last):\n  File \"/srv/app.py\", line 9, in <module>\n    import missing\nModuleNotFoundError: No module named 'missing'\n";
        assert_eq!(
            summary(raised),
            "ModuleNotFoundError: No module named 'missing' (/srv/app.py, line 9)"
        );
        assert_eq!(summary("AttributeError: no app"), "AttributeError: no app");
    }
}
