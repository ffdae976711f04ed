//! contrib/ holds what users copy into production (a container image, a
//! Kubernetes Deployment); these checks keep it true to corral: the
//! container's site.toml passes `corral check`, and the Deployment's probes,
//! port and grace period agree with it.
mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_container_site_toml_passes_check() {
    let text = std::fs::read_to_string(format!("{MANIFEST_DIR}/contrib/container/site.toml"))
        .expect("contrib/container/site.toml");
    // The image's /srv/site is the demo and its static folder here; the
    // venv is the tests' own (the image makes one with its Python).
    let text = text
        .replace(
            "chdir = \"/srv/site\"",
            &format!("chdir = \"{MANIFEST_DIR}/demo\""),
        )
        .replace(
            "\"/srv/site/static\"",
            &format!("\"{MANIFEST_DIR}/static\""),
        )
        .replace("\"/srv/site/.venv\"", &format!("\"{}\"", venv().display()))
        .replace("0.0.0.0:8080", "127.0.0.1:{port}");
    let site = Site::new().config(&text);
    let out = site.check();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("app:application is WSGI"), "{out}");
}

#[test]
fn the_kubernetes_deployment_agrees_with_the_site() {
    let out = run_with_timeout(
        Command::new(venv().join("bin/python"))
            .arg(format!("{MANIFEST_DIR}/tests/clients/contrib_facts.py"))
            .arg(MANIFEST_DIR),
        Duration::from_secs(30),
    );
    assert!(out.success(), "{out}");
    let f: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(f["kinds"], serde_json::json!(["Deployment", "Service"]));
    assert_eq!(
        f["probe_paths"],
        serde_json::json!([f["health_path"]]),
        "{f}"
    );
    assert_eq!(f["container_port"], f["listen_port"], "{f}");
    let grace = f["grace"].as_f64().expect("grace");
    let needed = f["drain_delay"].as_f64().expect("drain")
        + f["graceful_timeout"].as_f64().expect("graceful");
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}: {f}"
    );
}
