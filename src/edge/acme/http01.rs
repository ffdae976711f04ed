//! HTTP-01 (RFC 8555 §8.3): the CA fetches
//! `http://<host>/.well-known/acme-challenge/<token>` and expects the key
//! authorization. Answered before rate limits and the https redirect (a
//! CA follows a redirect, but a 429 would fail the order).

use crate::edge::reply;
use crate::edge::request::{Ctx, Edge};
use bytes::Bytes;
use pingora_core::Result;
use pingora_proxy::Session;

const PREFIX: &[u8] = b"/.well-known/acme-challenge/";

impl Edge {
    /// The target may be a CA's check some day (when an order starts):
    /// an answer to it now must not be given again (`files::replay`).
    pub(crate) fn may_be_acme_challenge(&self, target: &[u8]) -> bool {
        self.acme.is_some() && target.starts_with(PREFIX)
    }

    /// The request is the CA's HTTP-01 check: the prefix, for an ACME
    /// host, with `challenge = "http-01"`.
    pub(crate) fn is_acme_challenge(&self, req: &pingora_http::RequestHeader) -> bool {
        let Some(acme) = self
            .acme
            .as_ref()
            .filter(|_| self.may_be_acme_challenge(req.raw_path()))
        else {
            return false;
        };
        let name = crate::edge::request::host_name(req);
        acme.answers_http(&name.to_ascii_lowercase())
    }

    pub(crate) async fn acme_challenge(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        let target = session.req_header().raw_path();
        let token = std::str::from_utf8(&target[PREFIX.len()..]).unwrap_or_default();
        let answer = self.acme.as_ref().and_then(|a| a.http_answer(token));
        ctx.status = if answer.is_some() { 200 } else { 404 };
        let body = answer.unwrap_or_else(|| b"no such challenge\n".to_vec());
        let body = ("text/plain", Bytes::from(body));
        reply::uncached(&self.state, session, ctx.status, body).await?;
        Ok(true)
    }
}
