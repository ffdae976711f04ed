//! How an app response goes out to the client: its head adjusted for the
//! client (compression, framing, `X-Accel-Buffering`), then its body through
//! an optional encoder.

use crate::config::schema::Compression;
use crate::edge::app::upstream::{Framing, ResponseHead};
use crate::edge::compression::{self, Coding, Encoder, ResponseFacts};
use bytes::Bytes;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Where a response body goes: straight to the client or through an encoder.
pub struct Sink {
    encoder: Option<Encoder>,
    /// Make each piece decodable as it arrives: streamed responses (the app
    /// yields as it goes) and `X-Accel-Buffering: no`.
    flush_each: bool,
}

/// Builds the head sent to the client and the sink its body goes through.
pub fn prepare(
    session: &mut Session,
    cfg: &Compression,
    resp: &ResponseHead,
) -> Result<(ResponseHeader, Sink)> {
    let mut header = crate::edge::app::forward::response_header(session, resp)?;
    let unbuffered = header
        .headers
        .get("x-accel-buffering")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"));
    // An instruction to the proxy, as with nginx: never passed on.
    header.remove_header("x-accel-buffering");
    let streamed = matches!(resp.framing, Framing::Chunked | Framing::UntilClose);
    let coding = choose_coding(session, cfg, resp, &mut header)?;
    if let Some(coding) = coding {
        let h1_chunked =
            !session.is_http2() && session.req_header().version == http::Version::HTTP_11;
        compression::encoded_head(&mut header, coding, h1_chunked)?;
    }
    let close_delimited = header.headers.get(http::header::CONTENT_LENGTH).is_none()
        && header
            .headers
            .get(http::header::TRANSFER_ENCODING)
            .is_none()
        && resp.framing != Framing::Empty;
    if close_delimited && !session.is_http2() {
        // An HTTP/1.0 client learns where the body ends from the close.
        session.set_keepalive(None);
    }
    let encoder = match coding {
        Some(c) => Some(
            Encoder::new(c, cfg.level)
                .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?,
        ),
        None => None,
    };
    let flush_each = streamed || unbuffered;
    Ok((
        header,
        Sink {
            encoder,
            flush_each,
        },
    ))
}

/// The coding for this response, if any; adds `Vary` whenever the response
/// could have been compressed.
fn choose_coding(
    session: &Session,
    cfg: &Compression,
    resp: &ResponseHead,
    header: &mut ResponseHeader,
) -> Result<Option<Coding>> {
    let facts = ResponseFacts {
        status: resp.status,
        headers: &resp.headers,
        len: known_length(resp),
    };
    if !compression::eligible(cfg, &facts) {
        return Ok(None);
    }
    compression::add_vary(header)?;
    Ok(compression::choose(session.req_header()))
}

/// The body length, when the head tells it. A HEAD response has no body
/// but its Content-Length says what GET would send (and without one, GET
/// would stream it), and HEAD must get the headers GET would.
fn known_length(resp: &ResponseHead) -> Option<u64> {
    match resp.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty => resp.declared_len,
        Framing::Chunked | Framing::UntilClose => None,
    }
}

impl Sink {
    /// Sends one piece of the body.
    pub async fn send(&mut self, session: &mut Session, data: Bytes) -> Result<()> {
        let out = match &mut self.encoder {
            None => data,
            Some(enc) => enc.push(&data, self.flush_each).map_err(encode_error)?,
        };
        if !out.is_empty() {
            session.write_response_body(Some(out), false).await?;
        }
        Ok(())
    }

    /// Ends the body: the encoder's last bytes, then the end of the stream.
    pub async fn end(self, session: &mut Session) -> Result<()> {
        let tail = match self.encoder {
            None => None,
            Some(enc) => Some(enc.finish().map_err(encode_error)?),
        };
        session.write_response_body(tail, true).await
    }

    /// A body that is already whole: encoded in one go.
    pub async fn whole(mut self, session: &mut Session, body: Bytes) -> Result<()> {
        self.flush_each = false;
        if self.encoder.is_none() {
            return session.write_response_body(Some(body), true).await;
        }
        self.send(session, body).await?;
        self.end(session).await
    }
}

fn encode_error(e: std::io::Error) -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        format!("compressing the response: {e}"),
    )
}
