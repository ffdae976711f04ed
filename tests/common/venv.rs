//! The test virtualenv (Flask and the third-party clients).

use super::*;

// ---------------------------------------------------------------------------
// The Flask virtualenv
// ---------------------------------------------------------------------------

/// `$CORRAL_TEST_VENV`, or `<repo>/target/test-venv`.
pub fn venv_path() -> PathBuf {
    match std::env::var_os("CORRAL_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv")),
    }
}

/// A virtualenv with Flask installed, created on first use.  Safe with many
/// test processes at once (nextest): a lock file serialises creation, the
/// venv is built in a temporary folder and renamed into place.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let p = venv_path();
        ensure_venv(&p);
        p
    })
    .clone()
}

pub fn venv_has_flask(venv: &Path) -> bool {
    let py = venv.join("bin").join("python");
    py.exists()
        && run_with_timeout(
            Command::new(&py).args(["-c", "import flask"]),
            Duration::from_secs(60),
        )
        .success()
}

pub fn ensure_venv(path: &Path) {
    if venv_has_flask(path) {
        return;
    }
    let parent = path.parent().expect("venv path has a parent").to_path_buf();
    fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let name = path
        .file_name()
        .expect("venv path has a file name")
        .to_string_lossy()
        .into_owned();
    let _lock = LockFile::acquire(
        &parent.join(format!("{name}.lock")),
        Duration::from_secs(900),
    );
    if venv_has_flask(path) {
        return; // another test process made it while we waited
    }
    let pip_install = |py: &Path| {
        let out = run_with_timeout(
            Command::new(py).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "flask",
            ]),
            Duration::from_secs(600),
        );
        assert!(
            out.success(),
            "installing Flask into the test venv failed:\n{out}"
        );
    };
    if path.join("bin").join("python").exists() {
        // A venv without Flask (e.g. made by hand): just add Flask to it.
        pip_install(&path.join("bin").join("python"));
        assert!(
            venv_has_flask(path),
            "Flask still not importable in {}",
            path.display()
        );
        return;
    }
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    // The same interpreter corral embeds (scripts/test.sh exports PYO3_PYTHON).
    let python = std::env::var("PYO3_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string());
    let out = run_with_timeout(
        Command::new(&python).arg("-m").arg("venv").arg(&tmp),
        Duration::from_secs(300),
    );
    assert!(out.success(), "{python} -m venv failed:\n{out}");
    pip_install(&tmp.join("bin").join("python"));
    if path.exists() {
        // Leftover without a python (half-made?): move it out of the way.
        let aside = parent.join(format!("{name}.broken-{}", std::process::id()));
        let _ = fs::rename(path, &aside);
        let _ = fs::remove_dir_all(&aside);
    }
    match fs::rename(&tmp, path) {
        Ok(()) => fix_venv_paths(&tmp, path),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            assert!(
                venv_has_flask(path),
                "renaming the new venv to {} failed ({e}) and there is no usable venv there",
                path.display()
            );
        }
    }
    assert!(
        venv_has_flask(path),
        "Flask not importable in the new venv {}",
        path.display()
    );
}

/// After the rename, scripts in bin/ (pip, flask, activate) still name the
/// temporary folder: point them at the final one.
pub fn fix_venv_paths(from: &Path, to: &Path) {
    let from_s = from.display().to_string();
    let to_s = to.display().to_string();
    let mut files = vec![to.join("pyvenv.cfg")];
    if let Ok(rd) = fs::read_dir(to.join("bin")) {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    for p in files {
        let is_file = fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false);
        if !is_file {
            continue; // bin/python* are symlinks to the base interpreter
        }
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        if text.contains(&from_s) {
            let _ = fs::write(&p, text.replace(&from_s, &to_s));
        }
    }
}

/// A lock file made with create_new; removed on drop.  Stale locks (holder
/// process gone, or older than 20 minutes) are broken.
pub struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path, max_wait: Duration) -> LockFile {
        let deadline = Instant::now() + max_wait;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return LockFile(path.to_path_buf());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        panic!("timed out waiting for lock {}", path.display());
                    }
                    thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("creating lock {}: {e}", path.display()),
            }
        }
    }
}

pub fn lock_is_stale(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO);
    if age > Duration::from_secs(20 * 60) {
        return true;
    }
    match fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        // Not written yet (the holder is between create and write), unless old.
        None => age > Duration::from_secs(30),
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs a client script from tests/clients with the venv's python; every
/// check it prints must pass ("0 failures"), else the test fails with its
/// output and the server's log. Returns its output for further checks.
pub fn run_checks(srv: &Running, script: &str, args: &[String], limit: Duration) -> CmdOutput {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(path.join(script))
            .args(args),
        limit,
    );
    eprintln!("{}", out.stdout);
    assert!(
        out.success() && out.stdout.contains("\n0 failures"),
        "{script}: checks failed:\n{out}\n{}",
        srv.stderr_tail()
    );
    out
}
