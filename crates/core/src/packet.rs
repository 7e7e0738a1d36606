//! Packet framing on streams of UDP sessions.
//!
//! A UDP session travels through Rayback as a [`crate::Stream`] like any
//! other. To keep packet boundaries, every packet on such a stream is
//! preceded by its length:
//!
//! | bytes | field |
//! |---|---|
//! | 2 | payload length, big-endian |
//! | n | payload |
//!
//! Protocols turn this into their own packet form at the edge: a datagram
//! (freedom, dokodemo-door), one VMess chunk, or one Mux.Cool data frame
//! (whose wire form happens to be the same length + payload).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload a packet stream carries (a UDP datagram's limit).
pub const MAX_PACKET: usize = u16::MAX as usize;

/// Reads one packet into `buf` (cleared first). `Ok(false)` on a clean end
/// of stream before a packet started.
pub async fn read_packet<R>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<bool>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; 2];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error),
    }
    reader.read_exact(&mut header[1..]).await?;
    let len = u16::from_be_bytes(header) as usize;
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(true)
}

/// Writes one packet. Fails for payloads over [`MAX_PACKET`].
pub async fn write_packet<W>(writer: &mut W, payload: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let len = u16::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("packet of {} bytes is over {MAX_PACKET}", payload.len()),
        )
    })?;
    let mut framed = Vec::with_capacity(2 + payload.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(payload);
    writer.write_all(&framed).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_packets_of_any_size() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        for len in [0usize, 1, 1400, MAX_PACKET] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            write_packet(&mut a, &payload).await.unwrap();
            let mut got = Vec::new();
            assert!(read_packet(&mut b, &mut got).await.unwrap());
            assert_eq!(got, payload);
        }
        drop(a);
        let mut got = Vec::new();
        assert!(!read_packet(&mut b, &mut got).await.unwrap());
    }

    #[tokio::test]
    async fn refuses_oversize_and_truncated() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        assert!(write_packet(&mut a, &vec![0; MAX_PACKET + 1])
            .await
            .is_err());
        a.write_all(&[0, 5, 1, 2]).await.unwrap();
        drop(a);
        let mut got = Vec::new();
        let error = read_packet(&mut b, &mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
