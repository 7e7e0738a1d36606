//! The PROXY protocol, received (`acceptProxyProtocol`): a load balancer
//! or nginx puts a v1 (text) or v2 (binary) header in front of the
//! connection naming the visitor's address. Parsing is the `ppp` crate's;
//! this module only reads until a header is whole.
//!
//! And sent ([`encode_header`], freedom's `proxyProtocol`): the header a
//! dialling side writes first, built with `ppp`'s formatter (v1) and
//! builder (v2). Pure: the caller writes the bytes.
//!
//! As in V2Ray 4.34 (which wraps its listener in go-proxyproto), a
//! connection on such a listener must start with a header: one that does
//! not is refused. A v2 `LOCAL` header (a balancer's health check) and v1
//! `UNKNOWN` keep the socket's own peer address.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};
use rayback_core::ProxyProtocol;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header read: a v1 line is at most 107 bytes; v2 carries
/// TLVs, which a balancer keeps short.
const MAX_HEADER: usize = 1024;

/// Reads a PROXY header from `tcp`. Returns the visitor's address (`None`
/// for LOCAL/UNKNOWN) and any bytes read past the header, which belong to
/// the next layer.
pub async fn read_header(
    tcp: &mut TcpStream,
) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyHeaderError> {
    let mut buffer = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 256];
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|error| ProxyHeaderError(format!("reading it: {error}")))?;
        if n == 0 {
            return Err(ProxyHeaderError(
                "the connection ended before a whole header".to_owned(),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buffer);
        if parsed.is_incomplete() {
            if buffer.len() >= MAX_HEADER {
                return Err(ProxyHeaderError(format!(
                    "no complete header in the first {MAX_HEADER} bytes"
                )));
            }
            continue;
        }
        let (source, len) = match parsed {
            HeaderResult::V1(Ok(header)) => (v1_source(&header.addresses), header.header.len()),
            HeaderResult::V2(Ok(header)) => (v2_source(&header), header.len()),
            HeaderResult::V1(Err(error)) => {
                return Err(ProxyHeaderError(format!("not a PROXY header: {error}")))
            }
            HeaderResult::V2(Err(error)) => {
                return Err(ProxyHeaderError(format!("not a PROXY header: {error}")))
            }
        };
        let rest = buffer.split_off(len.min(buffer.len()));
        return Ok((source, rest));
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match &header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// The PROXY header of version `protocol` for a TCP connection from
/// `source` (the visitor) to `destination` (the address dialled); empty
/// for [`ProxyProtocol::Off`].
///
/// Without a source, v1 is `PROXY UNKNOWN` and v2 a `LOCAL` command with
/// no addresses. When the families differ, the IPv4 address is written as
/// IPv4-mapped IPv6, since a header carries one family.
pub fn encode_header(
    protocol: ProxyProtocol,
    source: Option<SocketAddr>,
    destination: SocketAddr,
) -> Vec<u8> {
    let addresses = source.map(|source| same_family(source, destination));
    match (protocol, addresses) {
        (ProxyProtocol::Off, _) => Vec::new(),
        (ProxyProtocol::V1, None) => v1::Addresses::Unknown.to_string().into_bytes(),
        (ProxyProtocol::V1, Some(pair)) => v1::Addresses::from(pair).to_string().into_bytes(),
        (ProxyProtocol::V2, None) => v2_header(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        ),
        (ProxyProtocol::V2, Some(pair)) => v2_header(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::Addresses::from(pair),
        ),
    }
}

/// `ppp`'s v2 builder; its one failure, a body over 64 KiB, cannot happen
/// without TLVs.
fn v2_header(version_command: u8, protocol: v2::Protocol, addresses: v2::Addresses) -> Vec<u8> {
    v2::Builder::with_addresses(version_command, protocol, addresses)
        .build()
        .unwrap_or_default()
}

/// The two addresses in one family: both as they are when they match, else
/// both IPv6 (the IPv4 one mapped).
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let as_v6 = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (as_v6(source), as_v6(destination))
    }
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
#[error("PROXY protocol header: {0}")]
pub struct ProxyHeaderError(String);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn received(sent: &[u8]) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyHeaderError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = sent.to_vec();
        let client = tokio::spawn(async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            socket.write_all(&sent).await.unwrap();
            socket.shutdown().await.unwrap();
            // Keep the socket until the server has read.
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        let result = read_header(&mut socket).await;
        drop(socket);
        client.await.unwrap();
        result
    }

    #[tokio::test]
    async fn v1_names_the_visitor_and_keeps_what_follows() {
        let (source, rest) = received(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nhello")
            .await
            .unwrap();
        assert_eq!(source, Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"hello");
    }

    #[tokio::test]
    async fn v2_names_the_visitor_and_local_keeps_the_peer() {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12]);
        header.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1]);
        header.extend_from_slice(&40000u16.to_be_bytes());
        header.extend_from_slice(&443u16.to_be_bytes());
        header.extend_from_slice(b"rest");
        let (source, rest) = received(&header).await.unwrap();
        assert_eq!(source, Some("198.51.100.9:40000".parse().unwrap()));
        assert_eq!(rest, b"rest");

        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let (source, rest) = received(&local).await.unwrap();
        assert_eq!(source, None);
        assert!(rest.is_empty());
    }

    /// `encode_header`'s bytes, parsed by `ppp`: (source, destination)
    /// for a PROXY command, `None` for LOCAL/UNKNOWN.
    fn parsed(bytes: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
        let pair = |source: SocketAddr, destination: SocketAddr| Some((source, destination));
        match HeaderResult::parse(bytes) {
            HeaderResult::V1(Ok(header)) => {
                assert_eq!(header.header.len(), bytes.len(), "the whole header");
                match header.addresses {
                    v1::Addresses::Tcp4(a) => pair(
                        (a.source_address, a.source_port).into(),
                        (a.destination_address, a.destination_port).into(),
                    ),
                    v1::Addresses::Tcp6(a) => pair(
                        (a.source_address, a.source_port).into(),
                        (a.destination_address, a.destination_port).into(),
                    ),
                    v1::Addresses::Unknown => None,
                }
            }
            HeaderResult::V2(Ok(header)) => {
                assert_eq!(header.len(), bytes.len(), "the whole header");
                if header.command == v2::Command::Local {
                    assert_eq!(header.addresses, v2::Addresses::Unspecified);
                    return None;
                }
                assert_eq!(header.protocol, v2::Protocol::Stream);
                match header.addresses {
                    v2::Addresses::IPv4(a) => pair(
                        (a.source_address, a.source_port).into(),
                        (a.destination_address, a.destination_port).into(),
                    ),
                    v2::Addresses::IPv6(a) => pair(
                        (a.source_address, a.source_port).into(),
                        (a.destination_address, a.destination_port).into(),
                    ),
                    other => panic!("unexpected addresses {other:?}"),
                }
            }
            other => panic!("not a header: {other:?}"),
        }
    }

    #[test]
    fn encoded_headers_golden_v1_and_off() {
        let source: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let backend: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            encode_header(ProxyProtocol::V1, Some(source), backend),
            b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 8080\r\n"
        );
        assert_eq!(
            encode_header(ProxyProtocol::V1, None, backend),
            b"PROXY UNKNOWN\r\n"
        );
        let mut v2_golden = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2_golden.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 5, 127, 0, 0, 1]);
        v2_golden.extend_from_slice(&40000u16.to_be_bytes());
        v2_golden.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            encode_header(ProxyProtocol::V2, Some(source), backend),
            v2_golden
        );
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encode_header(ProxyProtocol::V2, None, backend), local);
        assert!(encode_header(ProxyProtocol::Off, Some(source), backend).is_empty());
    }

    #[test]
    fn encoded_headers_parse_back_with_both_addresses() {
        let v4: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let v4_backend: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let v6_backend: SocketAddr = "[::1]:8443".parse().unwrap();
        let mapped = |addr: SocketAddr| -> SocketAddr {
            match addr {
                SocketAddr::V4(a) => (a.ip().to_ipv6_mapped(), a.port()).into(),
                other => other,
            }
        };
        for protocol in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let cases = [
                (v4, v4_backend, (v4, v4_backend)),
                (v6, v6_backend, (v6, v6_backend)),
                (v4, v6_backend, (mapped(v4), v6_backend)),
                (v6, v4_backend, (v6, mapped(v4_backend))),
            ];
            for (source, destination, want) in cases {
                let bytes = encode_header(protocol, Some(source), destination);
                assert_eq!(
                    parsed(&bytes),
                    Some(want),
                    "{protocol:?} {source} {destination}"
                );
            }
            assert_eq!(parsed(&encode_header(protocol, None, v6_backend)), None);
        }
    }

    #[tokio::test]
    async fn encoded_headers_round_trip_through_read_header() {
        let source: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let backend: SocketAddr = "[::1]:8080".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.5]:40000".parse().unwrap();
        for protocol in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let mut sent = encode_header(protocol, Some(source), backend);
            sent.extend_from_slice(b"payload");
            let (read, rest) = received(&sent).await.unwrap();
            assert_eq!(read, Some(mapped), "{protocol:?}");
            assert_eq!(rest, b"payload");

            let mut sent = encode_header(protocol, None, backend);
            sent.extend_from_slice(b"payload");
            let (read, rest) = received(&sent).await.unwrap();
            assert_eq!(read, None, "{protocol:?}");
            assert_eq!(rest, b"payload");
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert!(received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err());
        assert!(received(b"PROXY TCP4 1.2.3.4").await.is_err());
        assert!(
            received(&[0x16, 0x03, 0x01, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
                .await
                .is_err()
        );
    }
}
