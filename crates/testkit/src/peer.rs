//! Hostile and scripted peers for the battery: sockets dialled from a
//! chosen loopback source address, hand-built Mux.Cool frames, and a raw
//! VMess peer (the real `v2ray` as the VMess client, so the crypto is the
//! reference's) whose payload the test writes byte by byte.
//!
//! ```text
//! test ──raw bytes──▶ v2ray dokodemo-door ──VMess, command TCP, dest test.v2ray.com:0──▶ portal
//! ```
//!
//! A portal adopts such a connection as a bridge tunnel, so the bytes the
//! test writes are read by the portal's Mux.Cool client. The frame
//! builders here are independent of `rayback-mux` on purpose (they must be
//! able to write what that codec refuses).
//!
//! | bytes | Mux.Cool frame (big-endian) |
//! |---|---|
//! | 2 | metadata length |
//! | 2 | session id |
//! | 1 | status: 1 New, 2 Keep, 3 End, 4 KeepAlive |
//! | 1 | option: 1 data follows, 2 error |
//! | New only | network (1 TCP, 2 UDP), port (2), address type, address |
//! | 2 + n | data length and data, when option bit 1 |

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{free_port, V2Ray};

/// Connects to `addr` from `source` (any 127.x.y.z works on Linux), so a
/// per-source limit sees the attacker apart from the real bridge.
pub async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    socket.connect(addr).await
}

/// A Keep/End/KeepAlive frame with optional data.
pub fn mux_short(session_id: u16, status: u8, option: u8, data: Option<&[u8]>) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.map_or(0, <[u8]>::len));
    frame.extend_from_slice(&4u16.to_be_bytes());
    frame.extend_from_slice(&session_id.to_be_bytes());
    frame.push(status);
    frame.push(option | u8::from(data.is_some()));
    if let Some(data) = data {
        frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
        frame.extend_from_slice(data);
    }
    frame
}

pub fn mux_keep_alive() -> Vec<u8> {
    mux_short(0, 4, 0, None)
}

pub fn mux_keep(session_id: u16, data: &[u8]) -> Vec<u8> {
    mux_short(session_id, 2, 0, Some(data))
}

pub fn mux_end(session_id: u16, error: bool) -> Vec<u8> {
    mux_short(session_id, 3, if error { 2 } else { 0 }, None)
}

/// A New frame for TCP to `target` (IPv4), carrying `data`.
pub fn mux_new_tcp(session_id: u16, target: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&12u16.to_be_bytes());
    frame.extend_from_slice(&session_id.to_be_bytes());
    frame.push(1);
    frame.push(1);
    frame.push(1);
    frame.extend_from_slice(&target.port().to_be_bytes());
    frame.push(1);
    frame.extend_from_slice(&target.ip().octets());
    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// A frame header claiming `metadata_len` bytes of metadata (over 512 is
/// illegal), followed by that many bytes of filler.
pub fn mux_oversize(metadata_len: u16) -> Vec<u8> {
    let mut frame = metadata_len.to_be_bytes().to_vec();
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.push(2);
    frame.push(0);
    frame.resize(2 + metadata_len as usize, 0);
    frame
}

/// One frame as read from a Mux.Cool stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub session_id: u16,
    pub status: u8,
    pub option: u8,
    /// New frames: 1 TCP, 2 UDP.
    pub network: Option<u8>,
    pub data: Option<Vec<u8>>,
}

/// Reads one frame; `Ok(None)` at a clean end of the stream.
pub async fn read_mux_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<RawFrame>> {
    let mut length = [0u8; 2];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u16::from_be_bytes(length) as usize;
    if !(4..=512).contains(&length) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("metadata length {length}"),
        ));
    }
    let mut metadata = vec![0u8; length];
    reader.read_exact(&mut metadata).await?;
    let option = metadata[3];
    let status = metadata[2];
    let data = if option & 1 == 1 {
        let mut data_length = [0u8; 2];
        reader.read_exact(&mut data_length).await?;
        let mut data = vec![0u8; u16::from_be_bytes(data_length) as usize];
        reader.read_exact(&mut data).await?;
        Some(data)
    } else {
        None
    };
    Ok(Some(RawFrame {
        session_id: u16::from_be_bytes([metadata[0], metadata[1]]),
        status,
        option,
        network: (status == 1).then(|| metadata.get(4).copied()).flatten(),
        data,
    }))
}

/// The real `v2ray` as a VMess client: every connection to
/// [`RawVmessPeer::addr`] becomes a VMess connection to `server` (command
/// TCP, destination `domain:0`, user `id`) carrying the connection's bytes
/// unchanged.
pub struct RawVmessPeer {
    v2ray: V2Ray,
    port: u16,
}

impl RawVmessPeer {
    pub async fn start(server: SocketAddr, id: &str, domain: &str) -> Result<RawVmessPeer> {
        let port = free_port();
        let config = serde_json::json!({
            "log": {"loglevel": "none"},
            "inbounds": [{
                "listen": "127.0.0.1",
                "port": port,
                "protocol": "dokodemo-door",
                "settings": {"address": domain, "port": 0, "network": "tcp"}
            }],
            "outbounds": [{
                "protocol": "vmess",
                "settings": {"vnext": [{
                    "address": server.ip().to_string(),
                    "port": server.port(),
                    "users": [{"id": id, "alterId": 0}]
                }]}
            }]
        });
        let v2ray = V2Ray::start(&config, &[port]).await?;
        Ok(RawVmessPeer { v2ray, port })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.v2ray.pid()
    }

    /// A new raw connection (one VMess connection behind it).
    pub async fn connect(&self) -> io::Result<TcpStream> {
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr()))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the peer"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back() {
        let mut bytes = mux_keep(7, b"abc");
        bytes.extend(mux_end(7, true));
        bytes.extend(mux_keep_alive());
        bytes.extend(mux_new_tcp(
            9,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80),
            b"x",
        ));
        let mut reader = bytes.as_slice();
        let keep = read_mux_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((keep.session_id, keep.status), (7, 2));
        assert_eq!(keep.data.as_deref(), Some(&b"abc"[..]));
        let end = read_mux_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((end.status, end.option, end.data), (3, 2, None));
        let alive = read_mux_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(alive.status, 4);
        let new = read_mux_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((new.session_id, new.status, new.network), (9, 1, Some(1)));
        assert_eq!(new.data.as_deref(), Some(&b"x"[..]));
        assert!(read_mux_frame(&mut reader).await.unwrap().is_none());
        let mut oversize = mux_oversize(600).as_slice().to_vec();
        assert_eq!(oversize.len(), 602);
        assert!(read_mux_frame(&mut oversize.as_slice()).await.is_err());
        oversize.clear();
    }

    #[tokio::test]
    async fn connect_from_uses_the_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Ipv4Addr::new(127, 0, 0, 9);
        let _client = connect_from(source, addr).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);
    }
}
