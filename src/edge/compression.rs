//! Dynamic compression of app responses (brotli, zstd, gzip), gated per
//! response by `[compression]`: only listed content types, only above
//! `min_size`, never for ranges, already-encoded bodies or
//! `Cache-Control: no-transform`, always with one merged `Vary`.
//!
//! corral does this itself rather than through pingora's module: that one
//! flushed instead of finishing a brotli stream (clients got truncated
//! bodies) and buffered streamed responses until their end.

use crate::config::schema::Compression;
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use std::io::{self, Write};

/// A coding corral can produce, in the order it prefers at equal q.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

/// What the response's own head says about compressing it.
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub headers: &'a [(String, Vec<u8>)],
    /// The body length when known (for HEAD: the length GET would have).
    pub len: Option<u64>,
}

impl ResponseFacts<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Whether this response may be compressed at all, whoever asks: then it
/// carries `Vary: Accept-Encoding` even to clients that get it plain, so a
/// cache never hands the plain copy to one that wanted it compressed.
pub fn eligible(cfg: &Compression, resp: &ResponseFacts) -> bool {
    if !cfg.enabled
        || resp.status < 200
        || matches!(resp.status, 204 | 206 | 304)
        || resp.get("content-encoding").is_some()
        || resp.get("content-range").is_some()
        || resp.len.is_some_and(|n| n < cfg.min_size.0)
    {
        return false;
    }
    let no_transform = resp.get("cache-control").is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    let content_type = resp.get("content-type").unwrap_or_default();
    !no_transform && listed_type(cfg, content_type)
}

/// Whether `content_type` is one of `[compression] types` (parameters
/// such as charset ignored).
pub fn listed_type(cfg: &Compression, content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    cfg.types
        .iter()
        .any(|t| t.as_bytes().eq_ignore_ascii_case(essence))
}

/// The coding this client takes best (q-values honoured, `q=0` refused).
pub fn choose(req: &RequestHeader) -> Option<Coding> {
    let accept = req
        .headers
        .get(http::header::ACCEPT_ENCODING)?
        .to_str()
        .ok()?;
    let ((best, _), _) = crate::proto::accept_encoding::accepted(accept)
        .into_iter()
        .next()?;
    match best {
        "br" => Some(Coding::Brotli),
        "zstd" => Some(Coding::Zstd),
        "gzip" => Some(Coding::Gzip),
        _ => None,
    }
}

/// Adds `Accept-Encoding` to the response's Vary, as one merged header.
pub fn add_vary(resp: &mut ResponseHeader) -> Result<()> {
    let mut tokens: Vec<String> = Vec::new();
    for v in resp.headers.get_all(http::header::VARY) {
        for t in String::from_utf8_lossy(v.as_bytes()).split(',') {
            let t = t.trim();
            if !t.is_empty() && !tokens.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                tokens.push(t.to_string());
            }
        }
    }
    let has = |name: &str| {
        tokens
            .iter()
            .any(|x| x == "*" || x.eq_ignore_ascii_case(name))
    };
    if !has("accept-encoding") {
        tokens.push("Accept-Encoding".to_string());
    }
    resp.insert_header("Vary", tokens.join(", "))
}

/// Rewrites a response head for an encoded body: the length is no longer
/// known, and a strong ETag no longer names these bytes (nginx weakens it
/// too, so conditional requests still work).
pub fn encoded_head(resp: &mut ResponseHeader, coding: Coding, h1_chunked: bool) -> Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header("Content-Encoding", coding.token())?;
    if let Some(etag) = resp.headers.get(http::header::ETAG) {
        let etag = etag.as_bytes();
        if !etag.starts_with(b"W/") {
            let weak = [b"W/".as_slice(), etag].concat();
            resp.insert_header("ETag", weak)?;
        }
    }
    if h1_chunked {
        resp.insert_header("Transfer-Encoding", "chunked")?;
    }
    Ok(())
}

/// One response body's encoder. Output is taken out after every call, so
/// memory held is the codec's window, never the body.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// `level` is `[compression] level`, 1 (fast) to 9 (small), used as
    /// gzip's level, brotli's quality and zstd's level alike.
    pub fn new(coding: Coding, level: u32) -> io::Result<Encoder> {
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                level.min(11),
                22,
            ))),
            Coding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level as i32)?)
            }
        })
    }

    /// Encodes `data`; with `flush`, everything so far is made decodable
    /// now (a streamed response's chunk reaches the client when the app
    /// yields it, at a small cost in ratio).
    pub fn push(&mut self, data: &[u8], flush: bool) -> io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => write_then(e, data, flush),
            Encoder::Brotli(e) => write_then(e.as_mut(), data, flush),
            Encoder::Zstd(e) => write_then(e, data, flush),
        }?;
        Ok(self.take())
    }

    /// Ends the stream (brotli's last meta-block, gzip's trailer, zstd's
    /// epilogue) and returns the rest of the encoded bytes.
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }

    fn take(&mut self) -> Bytes {
        let buf = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(buf))
    }
}

fn write_then(w: &mut impl Write, data: &[u8], flush: bool) -> io::Result<()> {
    w.write_all(data)?;
    if flush {
        w.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode_in_pieces(coding: Coding, body: &[u8], piece: usize, flush: bool) -> Vec<u8> {
        let mut enc = Encoder::new(coding, 5).unwrap();
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            out.extend_from_slice(&enc.push(chunk, flush).unwrap());
        }
        out.extend_from_slice(&enc.finish().unwrap());
        out
    }

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map(|_| ()),
            Coding::Brotli => brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .map(|_| ()),
            Coding::Zstd => zstd::stream::read::Decoder::new(data)
                .unwrap()
                .read_to_end(&mut out)
                .map(|_| ()),
        }
        .unwrap();
        out
    }

    #[test]
    fn every_coding_round_trips_whole_and_streamed() {
        let body: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            for (piece, flush) in [(body.len(), false), (65536, false), (1000, true)] {
                let enc = encode_in_pieces(coding, &body, piece, flush);
                assert_eq!(decode(coding, &enc), body, "{coding:?} piece {piece}");
            }
            assert_eq!(
                decode(coding, &encode_in_pieces(coding, b"", 1, false)),
                b""
            );
        }
    }

    #[test]
    fn a_flushed_chunk_is_decodable_before_the_end() {
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let mut enc = Encoder::new(coding, 5).unwrap();
            let first = enc.push(b"hello streaming world\n", true).unwrap();
            assert!(!first.is_empty(), "{coding:?} flushed nothing");
        }
    }
}
