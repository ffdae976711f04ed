//! `rt.WebSocket`: one WebSocket's frames (RFC 6455), parsed and made by
//! tungstenite, driven sans-IO: the event loop feeds it the bytes the edge
//! relays and writes out what it produces. tungstenite does the protocol's
//! rules — masking, fragmentation, control frames between fragments, UTF-8
//! of text, the size limit, pong replies, the close handshake — so a
//! broken client becomes a close code here, never a Python exception.
//! permessage-deflate, which tungstenite lacks, is `deflate.rs`'s.

use super::deflate::{self, Inflating};
use crate::wire::framer::write_field;
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::io::{self, Read, Write};
use tungstenite::error::{CapacityError, Error};
use tungstenite::protocol::frame::coding::{CloseCode, Data};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

/// What a socket's buffers may keep once empty. Thousands of sockets sit
/// idle per worker; a buffer sized by a past large message is given back.
const KEEP_EMPTY: usize = 1024;

/// Empties `buf`, giving its memory back when it holds more than `KEEP_EMPTY`.
pub(super) fn empty(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_EMPTY {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// Bytes in from the edge, bytes out to it.
#[derive(Default)]
struct Wire {
    input: Vec<u8>,
    read_at: usize,
    output: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.read_at..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read_at += n;
        if self.read_at == self.input.len() {
            empty(&mut self.input);
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[pyclass(name = "WebSocket")]
pub struct WebSocket {
    ctx: WebSocketContext,
    wire: Wire,
    max_message: usize,
    /// Our `Sec-WebSocket-Extensions` answer when permessage-deflate was agreed.
    deflate: Option<String>,
    inflating: Inflating,
}

/// What one fed message means for the app.
enum Event {
    Text(String),
    Binary(Bytes),
    /// The peer closed (its code), or we closed on its protocol error.
    Closed(u16, String),
}

#[pymethods]
impl WebSocket {
    /// `offer` is the client's `Sec-WebSocket-Extensions`; compression is
    /// agreed when `compress` allows it and the offer is one we can honour.
    #[new]
    #[pyo3(signature = (max_message, offer=None, compress=true))]
    fn new(max_message: usize, offer: Option<&str>, compress: bool) -> Self {
        // Small buffers: thousands of idle sockets per worker must be cheap.
        // tungstenite holds its read buffer for the socket's life, touched
        // in full by the first message; a larger message grows it as it
        // comes, read from memory (`Wire`) 1 KiB at a time: a 4 MB echo
        // takes ~3% longer than with 4 KiB reads, 512 bytes would be ~15%.
        let config = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        WebSocket {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            wire: Wire::default(),
            max_message,
            deflate: offer.filter(|_| compress).and_then(deflate::negotiate),
            inflating: Inflating::default(),
        }
    }

    /// The 101 that accepts this WebSocket: the accept key for the client's
    /// `Sec-WebSocket-Key`, the chosen subprotocol, the agreed extension,
    /// the app's extra fields (checked like a response's).
    fn handshake<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        subprotocol: Option<&str>,
        headers: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut fields = Vec::new();
        for item in headers.try_iter()? {
            fields.push(super::framer::field(&item?)?);
        }
        if let Some(answer) = &self.deflate {
            fields.push((
                b"Sec-WebSocket-Extensions".to_vec(),
                answer.as_bytes().to_vec(),
            ));
        }
        let out = handshake_response(key, subprotocol, &fields);
        Ok(PyBytes::new(py, &out))
    }

    /// Whether permessage-deflate was agreed.
    #[getter]
    fn compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Feeds bytes from the edge. Returns the complete messages as
    /// `("text", str)`, `("bytes", bytes)` or `("close", (code, reason))`.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let refused = match self.deflate {
            Some(_) => (self.inflating)
                .feed(data, self.max_message, &mut self.wire.input)
                .err(),
            None => {
                self.wire.input.extend_from_slice(data);
                None
            }
        };
        let mut out = Vec::new();
        let mut closed = false;
        while let Some(event) = self.next_event() {
            closed = matches!(event, Event::Closed(..));
            out.push(event_tuple(py, event)?);
            if closed {
                break;
            }
        }
        // Messages before a bad compressed one are delivered, then the close.
        if let (Some(refusal), false) = (refused, closed) {
            let (code, reason) = refusal.close_code();
            tracing::debug!("websocket closed on a client error ({code}): {reason}");
            self.close(code, reason.to_string());
            out.push(event_tuple(py, Event::Closed(code, reason.to_string()))?);
        }
        // Pongs and the reply to a close go out with the next write.
        let _ = self.ctx.flush(&mut self.wire);
        Ok(out)
    }

    fn send_text(&mut self, text: String) -> bool {
        match self.compress(text.as_bytes(), Data::Text) {
            Some(frame) => self.send(frame),
            None => self.send(Message::text(text)),
        }
    }

    fn send_bytes(&mut self, data: &[u8]) -> bool {
        match self.compress(data, Data::Binary) {
            Some(frame) => self.send(frame),
            None => self.send(Message::binary(Bytes::copy_from_slice(data))),
        }
    }

    fn ping(&mut self) -> bool {
        self.send(Message::Ping(Bytes::new()))
    }

    /// Starts the close handshake with this code.
    fn close(&mut self, code: u16, reason: String) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ctx.close(&mut self.wire, Some(frame));
        let _ = self.ctx.flush(&mut self.wire);
    }

    /// The bytes to write to the edge now.
    fn take_output<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let out = PyBytes::new(py, &self.wire.output);
        empty(&mut self.wire.output);
        out
    }
}

impl WebSocket {
    /// The message as one compressed frame, when deflate was agreed and it pays.
    fn compress(&self, payload: &[u8], opcode: Data) -> Option<Message> {
        self.deflate.as_ref()?;
        deflate::deflate_frame(payload, opcode).map(Message::Frame)
    }

    fn send(&mut self, msg: Message) -> bool {
        self.ctx.write(&mut self.wire, msg).is_ok() && self.ctx.flush(&mut self.wire).is_ok()
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            return match self.ctx.read(&mut self.wire) {
                Ok(Message::Text(t)) => Some(Event::Text(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => Some(Event::Binary(b)),
                Ok(Message::Close(frame)) => Some(match frame {
                    Some(f) => Event::Closed(f.code.into(), f.reason.as_str().to_owned()),
                    None => Event::Closed(1005, String::new()),
                }),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => None,
                Err(e) => Some(self.refuse(e)),
            };
        }
    }

    /// A protocol error from the peer: close with the code that names it.
    fn refuse(&mut self, e: Error) -> Event {
        let (code, reason) = match e {
            Error::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big"),
            Error::Utf8(_) => (1007, "invalid UTF-8 in a text message"),
            _ => (1002, "protocol error"),
        };
        tracing::debug!("websocket closed on a client error ({code}): {e}");
        self.close(code, reason.to_string());
        Event::Closed(code, reason.to_string())
    }
}

fn event_tuple(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyTuple>> {
    match event {
        Event::Text(t) => PyTuple::new(
            py,
            [
                PyString::new(py, "text").into_any(),
                PyString::new(py, &t).into_any(),
            ],
        ),
        Event::Binary(b) => PyTuple::new(
            py,
            [
                PyString::new(py, "bytes").into_any(),
                PyBytes::new(py, &b).into_any(),
            ],
        ),
        Event::Closed(code, reason) => {
            let detail = (code, reason).into_pyobject(py)?.into_any();
            PyTuple::new(py, [PyString::new(py, "close").into_any(), detail])
        }
    }
}

/// The 101 answer to a WebSocket handshake: the accept key for the
/// client's `Sec-WebSocket-Key`, the chosen subprotocol, the app's fields.
pub fn handshake_response(
    key: &[u8],
    subprotocol: Option<&str>,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(tungstenite::handshake::derive_accept_key(key.trim_ascii()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = subprotocol {
        write_field(&mut out, b"Sec-WebSocket-Protocol", p.as_bytes());
    }
    for (name, value) in fields {
        write_field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![
            (if fin { 0x80 } else { 0 }) | opcode,
            0x80 | payload.len() as u8,
        ];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn fragments_join_and_pings_interleave() {
        let mut ws = WebSocket::new(1 << 20, None, true);
        let mut bytes = frame(0x1, false, b"hel");
        bytes.extend(frame(0x9, true, b"p"));
        bytes.extend(frame(0x0, true, b"lo"));
        ws.wire.input.extend_from_slice(&bytes);
        assert!(matches!(ws.next_event(), Some(Event::Text(t)) if t == "hello"));
        let _ = ws.ctx.flush(&mut ws.wire);
        // The pong went out, unmasked (server to client): opcode 0xA.
        assert_eq!(ws.wire.output.first(), Some(&0x8A));
    }

    #[test]
    fn bad_utf8_and_oversize_and_unmasked_get_their_close_codes() {
        for (bytes, code) in [
            (frame(0x1, true, &[0xff, 0xfe]), 1007),
            (frame(0x2, true, &[0u8; 100]), 1009),
            (vec![0x81, 0x02, b'h', b'i'], 1002),
        ] {
            let mut ws = WebSocket::new(64, None, true);
            ws.wire.input.extend_from_slice(&bytes);
            assert!(
                matches!(ws.next_event(), Some(Event::Closed(c, _)) if c == code),
                "want {code}"
            );
            // A close frame with the code went out.
            assert_eq!(ws.wire.output.first(), Some(&0x88));
            assert_eq!(&ws.wire.output[2..4], &code.to_be_bytes());
        }
    }

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        let r = handshake_response(b"dGhlIHNhbXBsZSBub25jZQ==", None, &[]);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }
}
