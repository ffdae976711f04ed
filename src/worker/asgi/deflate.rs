//! permessage-deflate (RFC 7692) for `rt.WebSocket`.
//!
//! tungstenite has no extension hook, so this sits beside it at the frame
//! level: compressed messages from the client are inflated into one plain
//! frame before tungstenite reads them (it still does every other rule),
//! and messages to the client are deflated into a frame with RSV1 set.
//!
//! Both directions are agreed with *no context takeover*: every message is
//! its own deflate stream. That costs some ratio on runs of small messages,
//! but one compressor and one decompressor per worker then serve all of its
//! sockets, so an idle socket costs no zlib state (thousands of idle
//! sockets per worker is the usual case, and a context is ~300 KiB).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// Messages shorter than this go out uncompressed (RFC 7692 §6 lets the
/// sender choose per message): without a shared context they would not shrink.
const MIN_SIZE: usize = 128;

/// The tail every sync-flushed message ends with; the RFC strips it on the
/// wire and the receiver appends it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Our answer to the first acceptable `permessage-deflate` offer in the
/// client's `Sec-WebSocket-Extensions`, or None to decline them all.
pub fn negotiate(offers: &str) -> Option<String> {
    offers.split(',').find_map(accept_offer)
}

/// One offer: `permessage-deflate` and its parameters. An unknown or
/// repeated parameter, or a bad value, declines it (RFC 7692 §7.1).
fn accept_offer(offer: &str) -> Option<String> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            // We compress with a 32 KiB window; a client that can hold less
            // is declined rather than sent what it cannot inflate.
            ("server_max_window_bits", Some(v)) if window_bits(v)? == 15 => {
                answer.push_str("; server_max_window_bits=15");
            }
            _ => return None,
        }
    }
    Some(answer)
}

fn window_bits(value: &str) -> Option<u8> {
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Why a client's compressed message ends the socket: the close code.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// RSV1 where it may not be, or a new message inside a fragmented one.
    Protocol,
    /// Inflated (or compressed) past `[websocket] max_message`.
    TooBig,
    /// Not a deflate stream.
    Corrupt,
}

impl Refusal {
    pub fn close_code(&self) -> (u16, &'static str) {
        match self {
            Refusal::Protocol => (1002, "protocol error"),
            Refusal::TooBig => (1009, "message too big"),
            Refusal::Corrupt => (1007, "invalid compressed data"),
        }
    }
}

/// A compressed message whose frames are still arriving.
struct Gathering {
    opcode: OpCode,
    mask: [u8; 4],
    payload: Vec<u8>,
}

/// What to do with the frame whose header was just read.
enum Step {
    /// Not ours: the header and payload go to tungstenite as they came.
    Pass,
    /// A compressed message's frame: gather its payload.
    Gather,
}

/// The client's bytes on their way to tungstenite.
#[derive(Default)]
pub struct Inflating {
    /// Bytes not yet handled: a partial header, or a compressed frame
    /// waiting for the rest of its payload.
    pending: Vec<u8>,
    /// Bytes of a passed-through frame's payload still to come.
    passing: u64,
    message: Option<Gathering>,
}

impl Inflating {
    /// Feeds bytes from the edge; appends what tungstenite should read to `out`.
    pub fn feed(&mut self, data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        let result = self.frames(&mut at, limit, out);
        self.pending.drain(..at);
        if self.pending.is_empty() {
            super::websocket::empty(&mut self.pending);
        }
        result
    }

    fn frames(&mut self, at: &mut usize, limit: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        loop {
            let rest = &self.pending[*at..];
            if self.passing > 0 {
                let n = rest.len().min(self.passing as usize);
                out.extend_from_slice(&rest[..n]);
                *at += n;
                self.passing -= n as u64;
                if self.passing > 0 {
                    return Ok(());
                }
                continue;
            }
            let mut cursor = Cursor::new(rest);
            let Some((header, len)) =
                FrameHeader::parse(&mut cursor).map_err(|_| Refusal::Protocol)?
            else {
                return Ok(());
            };
            let head = cursor.position() as usize;
            match self.step(&header)? {
                Step::Pass => {
                    out.extend_from_slice(&rest[..head]);
                    *at += head;
                    self.passing = len;
                }
                Step::Gather => {
                    let gathered = self.message.as_ref().map_or(0, |m| m.payload.len());
                    if len > (compressed_limit(limit).saturating_sub(gathered)) as u64 {
                        return Err(Refusal::TooBig);
                    }
                    let end = head + len as usize;
                    if rest.len() < end {
                        return Ok(()); // the rest of this frame is still coming
                    }
                    let payload = rest[head..end].to_vec();
                    *at += end;
                    self.gather(&header, payload);
                    if header.is_final {
                        self.finish(limit, out)?;
                    }
                }
            }
        }
    }

    /// RFC 7692 §6: RSV1 marks a message's first frame as compressed; its
    /// continuations carry no RSV1; control frames never have it.
    fn step(&self, header: &FrameHeader) -> Result<Step, Refusal> {
        let starts = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let continues = header.opcode == OpCode::Data(Data::Continue);
        match (self.message.is_some(), starts, continues) {
            (true, true, _) => Err(Refusal::Protocol),
            (true, _, true) if header.rsv1 => Err(Refusal::Protocol),
            (true, _, true) => Ok(Step::Gather),
            (false, true, _) if header.rsv1 => Ok(Step::Gather),
            // Plain frames, and RSV1 on anything else: tungstenite judges.
            _ => Ok(Step::Pass),
        }
    }

    fn gather(&mut self, header: &FrameHeader, mut payload: Vec<u8>) {
        let mask = header.mask.unwrap_or_default();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match &mut self.message {
            Some(m) => m.payload.extend_from_slice(&payload),
            None => {
                self.message = Some(Gathering {
                    opcode: header.opcode,
                    mask,
                    payload,
                })
            }
        }
    }

    /// The last frame came: one plain frame, masked as the client's was
    /// (tungstenite insists a client's frames are masked).
    fn finish(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let Some(m) = self.message.take() else {
            return Ok(());
        };
        let plain = inflate(m.payload, limit)?;
        let header = FrameHeader {
            opcode: m.opcode,
            mask: Some(m.mask),
            ..FrameHeader::default()
        };
        Frame::from_payload(header, plain.into())
            .format(out)
            .map_err(|_| Refusal::Protocol)
    }
}

/// How large a compressed message may be for one of `limit` bytes once
/// inflated. Incompressible data grows a little: a deflate stored block
/// costs 5 bytes, and a client with a small memory level (python
/// websockets uses 5) stores 8 KiB or less per block, some as little as
/// 512 bytes. The inflated size is what `max_message` limits.
fn compressed_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 64).saturating_add(1024)
}

/// The worker's one compressor and decompressor (all Python, and so all
/// WebSocket work, runs on one thread).
struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

thread_local! {
    static CODEC: RefCell<Codec> = RefCell::new(Codec {
        // Level 1, like nginx's default gzip_comp_level: most of the gain
        // for a fraction of the CPU.
        deflate: Compress::new(Compression::fast(), false),
        inflate: Decompress::new(false),
    });
}

/// One message's deflate stream, inflated up to `limit` bytes.
fn inflate(mut data: Vec<u8>, limit: usize) -> Result<Vec<u8>, Refusal> {
    data.extend_from_slice(&TAIL);
    CODEC.with_borrow_mut(|codec| {
        let z = &mut codec.inflate;
        z.reset(false);
        let mut out = Vec::with_capacity((data.len() * 3).clamp(64, limit + 1));
        loop {
            let read = z.total_in() as usize;
            let status = z
                .decompress_vec(&data[read..], &mut out, FlushDecompress::Sync)
                .map_err(|_| Refusal::Corrupt)?;
            if out.len() > limit {
                return Err(Refusal::TooBig);
            }
            let done = z.total_in() as usize == data.len() && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() < out.capacity() && z.total_in() as usize == read {
                return Err(Refusal::Corrupt); // no progress with room to spare
            }
            let more = out.capacity().min(limit + 1 - out.len()).max(64);
            out.reserve(more);
        }
    })
}

/// A message for the client: a frame with RSV1 and a deflated payload, or
/// None when it is too short to be worth it.
pub fn deflate_frame(payload: &[u8], opcode: Data) -> Option<Frame> {
    if payload.len() < MIN_SIZE {
        return None;
    }
    let mut frame = Frame::message(deflate(payload), OpCode::Data(opcode), true);
    frame.header_mut().rsv1 = true;
    Some(frame)
}

fn deflate(payload: &[u8]) -> Vec<u8> {
    CODEC.with_borrow_mut(|codec| {
        let z = &mut codec.deflate;
        z.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let read = z.total_in() as usize;
            // Compressing memory to memory cannot fail; a flate2 error here
            // would be a bug in it, so the (valid) output so far is sent.
            if z.compress_vec(&payload[read..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            if z.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn offers_from_real_clients_are_accepted() {
        // Chromium, python websockets, aiohttp.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=12; server_max_window_bits=15",
            "permessage-deflate",
            "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
        ] {
            let answer = negotiate(offer).expect(offer);
            assert!(answer.contains("server_no_context_takeover; client_no_context_takeover"));
        }
    }

    #[test]
    fn offers_we_cannot_honour_are_declined() {
        for offer in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(offer), None, "{offer}");
        }
        // The second offer is taken when the first cannot be.
        let two = "permessage-deflate; server_max_window_bits=9, permessage-deflate";
        assert!(negotiate(two).is_some());
    }

    /// A client's compressed message, as `pieces` masked frames.
    fn client_frames(text: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        z.write_all(text).unwrap();
        let data = z.finish().unwrap();
        let step = data.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = data.chunks(step).collect();
        let count = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let opcode = if i == 0 { Data::Text } else { Data::Continue };
                let mut f = Frame::message(chunk.to_vec(), OpCode::Data(opcode), i + 1 == count);
                f.header_mut().rsv1 = i == 0;
                f.header_mut().mask = Some([9, 8, 7, 6]);
                let mut out = Vec::new();
                f.format(&mut out).unwrap();
                out
            })
            .collect()
    }

    fn read_plain(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let at = cursor.position() as usize;
        let mut payload = bytes[at..at + len as usize].to_vec();
        let mask = header.mask.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (header, payload)
    }

    #[test]
    fn a_fragmented_compressed_message_becomes_one_plain_frame() {
        let text = "hello hello hello hello, compressed world ".repeat(20);
        let bytes = client_frames(text.as_bytes(), 3).concat();
        let mut inflating = Inflating::default();
        let mut out = Vec::new();
        // Byte by byte: headers and payloads split anywhere.
        for b in &bytes {
            inflating.feed(&[*b], 1 << 20, &mut out).unwrap();
        }
        let (header, payload) = read_plain(&out);
        assert!(!header.rsv1 && header.is_final);
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert_eq!(payload, text.as_bytes());
    }

    #[test]
    fn plain_frames_pass_unchanged() {
        let mut bytes = Vec::new();
        let mut f = Frame::message(b"plain".to_vec(), OpCode::Data(Data::Binary), true);
        f.header_mut().mask = Some([1, 2, 3, 4]);
        f.format(&mut bytes).unwrap();
        let mut out = Vec::new();
        Inflating::default().feed(&bytes, 1024, &mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn bombs_garbage_and_misplaced_rsv1_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = client_frames(&zeros, 1).concat();
        let mut out = Vec::new();
        let refused = Inflating::default().feed(&bomb, 64 << 10, &mut out);
        assert_eq!(refused, Err(Refusal::TooBig));

        let mut garbage = Vec::new();
        let mut f = Frame::message(vec![0xff; 40], OpCode::Data(Data::Text), true);
        f.header_mut().rsv1 = true;
        f.header_mut().mask = Some([1, 2, 3, 4]);
        f.format(&mut garbage).unwrap();
        let refused = Inflating::default().feed(&garbage, 1024, &mut out);
        assert_eq!(refused, Err(Refusal::Corrupt));

        // A new message while a compressed one is still in pieces.
        let frames = client_frames("abc".repeat(100).as_bytes(), 2);
        let mut inflating = Inflating::default();
        inflating.feed(&frames[0], 1 << 20, &mut out).unwrap();
        let again = inflating.feed(&client_frames(b"x", 1)[0], 1 << 20, &mut out);
        assert_eq!(again, Err(Refusal::Protocol));
    }

    #[test]
    fn deflated_frames_round_trip() {
        let text = "{\"price\": 101.25, \"symbol\": \"CRRL\"} ".repeat(30);
        let frame = deflate_frame(text.as_bytes(), Data::Text).unwrap();
        assert!(frame.header().rsv1);
        assert!(frame.payload().len() < text.len() / 4);
        let plain = inflate(frame.payload().to_vec(), 1 << 20).unwrap();
        assert_eq!(plain, text.as_bytes());
        assert!(deflate_frame(b"short", Data::Text).is_none());
    }
}
