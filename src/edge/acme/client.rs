//! The HTTPS client orders go out on: hyper over rustls, trusting the
//! Mozilla roots built into corral (a fresh VM may lack ca-certificates)
//! plus `[tls.acme] ca_roots` (a private CA, or pebble in tests).

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, HttpClient};
use std::path::Path;
use std::sync::Arc;

pub fn build(ca_roots: Option<&Path>) -> Result<Box<dyn HttpClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_roots {
        for cert in crate::config::tls::read_chain(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable root: {e}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(crate::config::tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A CA that does not answer must not hold the ordering lock forever.
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_connect_timeout(Some(std::time::Duration::from_secs(15)));
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    let client: Client<_, BodyWrapper<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}
