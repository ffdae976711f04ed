//! `[tls.acme]`: the hosts are names a CA can issue for, the directory is
//! an https URL (or a known alias), the challenge can be answered by one of
//! the site's listeners.

use super::schema::TlsAcme;
use super::validate::Checker;
use super::{AcmeSite, Challenge};
use std::net::SocketAddr;
use std::time::Duration;

const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Where certificates live unless `state_dir` says otherwise: kept across
/// restarts and reboots (a CA limits how often it reissues).
const DEFAULT_STATE_DIR: &str = "/var/lib/corral/acme";
/// Let's Encrypt's advice: renew with a third of a 90-day life left.
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

pub(super) fn validate(
    ck: &mut Checker,
    cfg: &TlsAcme,
    plain: &[SocketAddr],
    tls: &[SocketAddr],
) -> Option<AcmeSite> {
    let hosts = hosts(ck, &cfg.hosts);
    let email = email(ck, &cfg.email);
    let directory = directory(ck, &cfg.directory);
    let ca_roots = (!cfg.ca_roots.is_empty()).then(|| {
        let path = ck.resolve(&cfg.ca_roots);
        if let Err(e) = super::tls::read_chain(&path) {
            ck.bad("tls.acme.ca_roots", e);
        }
        path
    });
    let state_dir = ck.resolve(if cfg.state_dir.is_empty() {
        DEFAULT_STATE_DIR
    } else {
        &cfg.state_dir
    });
    if state_dir.exists() && !state_dir.is_dir() {
        ck.bad(
            "tls.acme.state_dir",
            format!("{} exists and is not a folder", state_dir.display()),
        );
    }
    let renew_before = cfg.renew_before.map_or(DEFAULT_RENEW_BEFORE, |s| s.0);
    if renew_before.is_zero() {
        ck.bad(
            "tls.acme.renew_before",
            "must be more than 0, e.g. \"30d\"".into(),
        );
    }
    let (challenge, challenge_why) = challenge(ck, &cfg.challenge, plain, tls)?;
    Some(AcmeSite {
        hosts,
        email,
        directory,
        ca_roots,
        state_dir,
        challenge,
        challenge_why,
        renew_before,
    })
}

fn hosts(ck: &mut Checker, given: &[String]) -> Vec<String> {
    if given.is_empty() {
        ck.bad(
            "tls.acme.hosts",
            "needs at least one name, e.g. [\"example.com\", \"www.example.com\"]".into(),
        );
    }
    let mut hosts: Vec<String> = Vec::new();
    for (i, h) in given.iter().enumerate() {
        let host = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let key = format!("tls.acme.hosts[{i}]");
        if let Err(why) = issuable(&host) {
            ck.bad(&key, format!("`{h}` {why}"));
        } else if hosts.contains(&host) {
            ck.bad(&key, format!("`{h}` is listed twice"));
        } else {
            hosts.push(host);
        }
    }
    hosts
}

/// A DNS name a CA issues for by the HTTP or TLS-ALPN challenge.
fn issuable(host: &str) -> Result<(), &'static str> {
    if host.starts_with("*.") {
        return Err("is a wildcard: a CA checks those only by DNS (dns-01), which corral does not answer; list each name");
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address: list DNS names");
    }
    if host.is_empty() || host.len() > 253 {
        return Err("is not a DNS name");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err("is not a DNS name (letters, digits, `-` and dots; IDNs in their xn-- form)");
    }
    Ok(())
}

fn email(ck: &mut Checker, email: &str) -> Option<String> {
    let email = email.trim();
    if email.is_empty() {
        return None;
    }
    let ok = email
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !ok {
        ck.bad(
            "tls.acme.email",
            format!("`{email}` is not an email address"),
        );
    }
    Some(email.to_string())
}

fn directory(ck: &mut Checker, given: &str) -> String {
    match given.trim() {
        "" | "letsencrypt" => LETSENCRYPT.to_string(),
        "letsencrypt-staging" => LETSENCRYPT_STAGING.to_string(),
        url => {
            let parsed = url.parse::<http::Uri>();
            if !matches!(&parsed, Ok(u) if u.scheme_str() == Some("https") && u.host().is_some()) {
                ck.bad(
                    "tls.acme.directory",
                    format!(
                        "`{url}` is not an https URL (or \"letsencrypt\", \"letsencrypt-staging\")"
                    ),
                );
            }
            url.to_string()
        }
    }
}

/// The challenge named, or the one the listeners suggest: TLS-ALPN when
/// the CA can reach a TLS listener as port 443, HTTP when only port 80 is
/// there.
fn challenge(
    ck: &mut Checker,
    given: &str,
    plain: &[SocketAddr],
    tls: &[SocketAddr],
) -> Option<(Challenge, &'static str)> {
    match given {
        "tls-alpn-01" => Some((Challenge::TlsAlpn01, "set in tls.acme.challenge")),
        "http-01" if plain.is_empty() => {
            ck.bad(
                "tls.acme.challenge",
                "http-01 is answered on a plain-HTTP listener: add one to server.listen".into(),
            );
            None
        }
        "http-01" => Some((Challenge::Http01, "set in tls.acme.challenge")),
        "" if tls.iter().any(|a| a.port() == 443) => Some((
            Challenge::TlsAlpn01,
            "a TLS listener is on port 443",
        )),
        "" if plain.iter().any(|a| a.port() == 80) => Some((
            Challenge::Http01,
            "a plain listener is on port 80 and no TLS listener is on 443",
        )),
        "" => Some((
            Challenge::TlsAlpn01,
            "no listener is on 443 or 80: the CA must reach a TLS listener as port 443 (a port forward or load balancer)",
        )),
        other => {
            ck.bad(
                "tls.acme.challenge",
                format!("`{other}` is not one of \"tls-alpn-01\", \"http-01\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::issuable;

    #[test]
    fn names_a_ca_can_check_by_http_or_tls() {
        assert!(issuable("example.com").is_ok());
        assert!(issuable("a-b.xn--bcher-kva.example").is_ok());
        assert!(issuable("*.example.com").is_err());
        assert!(issuable("127.0.0.1").is_err());
        assert!(issuable("exa mple.com").is_err());
        assert!(issuable("-bad.example").is_err());
        assert!(issuable("").is_err());
    }
}
