//! Link the binary with an RPATH to the libpython pyo3 found, so `corral`
//! starts without LD_LIBRARY_PATH on machines where libpython is not in the
//! loader's default path (pyenv, custom prefixes). Also records the Python
//! version, so a virtualenv from another minor version is refused clearly.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    println!(
        "cargo:rustc-env=CORRAL_PYTHON_VERSION={}.{}",
        cfg.version().major,
        cfg.version().minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
