//! One ACME order (RFC 8555 §7.4) with instant-acme: the account (made
//! once per CA and kept), a challenge per host published where the edge
//! answers it, then a fresh P-256 key, its CSR, and the issued chain.

use super::served::Served;
use crate::config::{AcmeSite, Challenge};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use std::time::Duration;
use tracing::info;

/// A certificate chain and its key, both PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How the CA is polled while it validates, and while it signs: after
/// 1 s, then every 1.5× longer, for at most 2 minutes.
const PATIENCE: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_secs(1))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

pub async fn obtain(site: &AcmeSite, served: &Served) -> Result<Issued, String> {
    let account = account(site, served).await?;
    let ids: Vec<Identifier> = site
        .hosts
        .iter()
        .map(|h| Identifier::Dns(h.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("the CA refused the order: {e}"))?;
    let mut published = Vec::new();
    let answered = answer_challenges(site, served, &mut order, &mut published).await;
    let issued = match answered {
        Ok(()) => finish(site, &mut order).await,
        Err(e) => Err(e),
    };
    served.withdraw(&published);
    issued
}

async fn account(site: &AcmeSite, served: &Served) -> Result<Account, String> {
    let http = super::client::build(site.ca_roots.as_deref())?;
    let builder = Account::builder_with_http(http);
    if let Some(creds) = served.store.load_account(&site.directory)? {
        return builder
            .from_credentials(creds)
            .await
            .map_err(|e| format!("cannot reach the CA at {}: {e}", site.directory));
    }
    let contact: Vec<String> = site.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, creds) = builder
        .create(&new, site.directory.clone(), None)
        .await
        .map_err(|e| format!("cannot open an account at {}: {e}", site.directory))?;
    served.store.save_account(&site.directory, &creds)?;
    info!("acme: opened an account at {}", site.directory);
    Ok(account)
}

async fn answer_challenges(
    site: &AcmeSite,
    served: &Served,
    order: &mut instant_acme::Order,
    published: &mut Vec<String>,
) -> Result<(), String> {
    let kind = match site.challenge {
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("cannot read an authorization: {e}"))?;
        let host = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the CA's authorization for {host} is {other:?}")),
        }
        // Both become file names in state_dir: only what was asked for.
        if !site.hosts.contains(&host) {
            return Err(format!("the CA asks about {host}, which was not ordered"));
        }
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            format!(
                "the CA offers no {} challenge for {host}",
                site.challenge.as_str()
            )
        })?;
        if !super::served::is_token(&challenge.token) {
            return Err(format!("the CA's token for {host} is not base64url"));
        }
        let key_auth = challenge.key_authorization();
        let name = match site.challenge {
            Challenge::Http01 => served.publish_http(&challenge.token, key_auth.as_str())?,
            Challenge::TlsAlpn01 => served.publish_alpn(&host, key_auth.digest().as_ref())?,
        };
        published.push(name);
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("the CA did not take the {host} challenge: {e}"))?;
    }
    Ok(())
}

async fn finish(site: &AcmeSite, order: &mut instant_acme::Order) -> Result<Issued, String> {
    match order.poll_ready(&PATIENCE).await {
        Ok(OrderStatus::Ready) => {}
        Ok(other) => return Err(failed_validation(order, &format!("{other:?}")).await),
        Err(e) => return Err(failed_validation(order, &e.to_string()).await),
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(site.hosts.clone()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("the CA refused to finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&PATIENCE)
        .await
        .map_err(|e| format!("waiting for the certificate: {e}"))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Why the CA did not validate: its problem documents, per host.
async fn failed_validation(order: &mut instant_acme::Order, status: &str) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        // The states read before validation are stale: ask again.
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for c in &state.challenges {
            if let Some(problem) = &c.error {
                reasons.push(format!("{}: {problem}", state.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        format!("waiting for the CA to validate: {status}")
    } else {
        format!("the CA could not validate: {}", reasons.join("; "))
    }
}
