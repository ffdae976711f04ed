//! The certificates a site serves, for `corral status`: each one's hosts,
//! issuer and expiry, and for `[tls.acme]` when it renews next or why the
//! last order failed.

use crate::config::tls::CertFacts;
use crate::edge::acme::served::Served;
use serde::Serialize;
use std::fmt::Write;
use std::time::SystemTime;

#[derive(Serialize, Default)]
pub struct CertificateStatus {
    /// "file" (`[[tls.cert]]`) or "acme".
    pub source: &'static str,
    pub hosts: Vec<String>,
    /// None while `[tls.acme]` has not obtained one yet.
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    /// `[tls.acme]`: the next order or renewal check.
    pub next_order: Option<String>,
    pub last_error: Option<String>,
}

pub fn list(files: &[CertFacts], acme: Option<&Served>) -> Vec<CertificateStatus> {
    let mut out: Vec<CertificateStatus> = files.iter().map(|f| of_facts("file", f)).collect();
    if let Some(served) = acme {
        let mut status = match served.facts() {
            Some(f) => of_facts("acme", &f),
            None => CertificateStatus {
                source: "acme",
                hosts: served.hosts.clone(),
                ..Default::default()
            },
        };
        if let Ok(p) = served.progress.lock() {
            status.next_order = p.next.map(rfc3339);
            status.last_error = p.last_error.clone();
        }
        out.push(status);
    }
    out
}

fn of_facts(source: &'static str, f: &CertFacts) -> CertificateStatus {
    let days_left = match f.not_after.duration_since(SystemTime::now()) {
        Ok(left) => left.as_secs() as i64 / 86_400,
        Err(past) => -(past.duration().as_secs() as i64 / 86_400) - 1,
    };
    CertificateStatus {
        source,
        hosts: f.names.clone(),
        issuer: Some(f.issuer.clone()),
        serial: Some(f.serial.clone()),
        not_after: Some(rfc3339(f.not_after)),
        days_left: Some(days_left),
        ..Default::default()
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The certificates' lines of `corral status` on a terminal.
pub fn text(out: &mut String, certs: &[CertificateStatus]) {
    if certs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ncertificates:");
    for c in certs {
        let _ = match (&c.issuer, &c.not_after) {
            (Some(issuer), Some(until)) => writeln!(
                out,
                "  {:<4} {}: issued by {issuer}, expires {until} ({} days)",
                c.source,
                c.hosts.join(", "),
                c.days_left.unwrap_or_default()
            ),
            _ => writeln!(out, "  {:<4} {}: none yet", c.source, c.hosts.join(", ")),
        };
        if let Some(next) = &c.next_order {
            let _ = writeln!(out, "       next order: {next}");
        }
        if let Some(e) = &c.last_error {
            let _ = writeln!(out, "       last order failed: {e}");
        }
    }
}
