//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec) on listeners
//! named in `[server] proxy_protocol`: a load balancer in front says who the
//! client is before the connection's first byte of TLS or HTTP.
//!
//! The header is read exactly (never a byte of what follows), so the TLS
//! handshake or the HTTP parser starts where the header ends. Parsing is
//! the `ppp` crate's.

use ppp::v1;
use ppp::v2;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest v2 header accepted (addresses plus TLVs); v1 is at most 107 bytes.
const MAX_V2: usize = 4096;
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the header; returns the client it names, or `None` when it names
/// none (v1 `UNKNOWN`, v2 `LOCAL` such as a health check): then the
/// connection's own peer is the client.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    // Both versions are at least 15 bytes long; 8 tell them apart.
    let mut buf = vec![0u8; 8];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("reading the PROXY header: {e}"))?;
    if buf.starts_with(b"PROXY ") {
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err("PROXY v1 header too long".into());
            }
            stream
                .read_exact(&mut byte)
                .await
                .map_err(|e| format!("reading the PROXY header: {e}"))?;
            buf.push(byte[0]);
        }
        return parse(&buf);
    }
    if V2_SIGNATURE.starts_with(&buf) {
        buf.resize(16, 0);
        stream
            .read_exact(&mut buf[8..])
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if 16 + len > MAX_V2 {
            return Err("PROXY v2 header too long".into());
        }
        buf.resize(16 + len, 0);
        stream
            .read_exact(&mut buf[16..])
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        return parse(&buf);
    }
    Err("the connection did not start with a PROXY protocol header".into())
}

/// The client a complete header names.
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, String> {
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        }),
        ppp::HeaderResult::V1(Err(e)) => Err(format!("bad PROXY v1 header: {e}")),
        ppp::HeaderResult::V2(Err(e)) => Err(format!("bad PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_name_the_client() {
        assert_eq!(
            parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n"),
            Ok(Some("203.0.113.7:51000".parse().unwrap()))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 51000 443\r\n"),
            Ok(Some("[2001:db8::1]:51000".parse().unwrap()))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(None));
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "198.51.100.9:4000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:80".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&v2), Ok(Some("198.51.100.9:4000".parse().unwrap())));
        assert!(parse(b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n").is_err());
    }
}
