//! The PROXY protocol, received (`acceptProxyProtocol`): a load balancer
//! or nginx puts a v1 (text) or v2 (binary) header in front of the
//! connection naming the visitor's address. Parsing is the `ppp` crate's;
//! this module only reads until a header is whole.
//!
//! As in V2Ray 4.34 (which wraps its listener in go-proxyproto), a
//! connection on such a listener must start with a header: one that does
//! not is refused. A v2 `LOCAL` header (a balancer's health check) and v1
//! `UNKNOWN` keep the socket's own peer address.

use std::net::SocketAddr;

use ppp::{v1, v2, HeaderResult, PartialResult};
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
