//! Client traffic for the battery: full-duplex echoes checked by SHA-256
//! while they stream, half-close echoes, connections proven and then held,
//! and an echo backend for a separate process.
//!
//! Every client here writes and reads at the same time (no half-close
//! unless its name says so: V2Ray's Mux.Cool has none) and is bounded by
//! the timeout it is given. Not a benchmark: it checks bytes, not speed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::sha256_hex;

/// Write chunk of the clients.
const CHUNK: usize = 64 * 1024;

/// Sends `data` on a new connection to `addr` while reading as many bytes
/// back, hashing them as they come; fails unless the hashes are equal.
/// Closes without half-closing first.
pub async fn duplex_echo(addr: SocketAddr, data: Arc<Vec<u8>>, timeout: Duration) -> Result<()> {
    tokio::time::timeout(timeout, async {
        let socket = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = socket.into_split();
        let sent = data.clone();
        let sender = tokio::spawn(async move {
            for chunk in sent.chunks(CHUNK) {
                writer.write_all(chunk).await?;
            }
            anyhow::Ok(writer)
        });
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0usize;
        while got < data.len() {
            let want = (data.len() - got).min(buf.len());
            let read = reader.read(&mut buf[..want]).await?;
            if read == 0 {
                bail!("the connection ended after {got} of {} bytes", data.len());
            }
            hasher.update(&buf[..read]);
            got += read;
        }
        let mut writer = sender.await??;
        let _ = writer.shutdown().await;
        if hex::encode(hasher.finalize()) != sha256_hex(&data) {
            bail!("{} bytes came back with another SHA-256", data.len());
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| {
        format!(
            "duplex echo of {} bytes via {addr} took over {timeout:?}",
            data.len()
        )
    })?
}

/// Sends `data`, then shuts down the write half, and reads until the end;
/// fails unless exactly `data` came back.
pub async fn half_close_echo(addr: SocketAddr, data: &[u8], timeout: Duration) -> Result<()> {
    let got = crate::exchange(addr, data, timeout).await?;
    if got.len() != data.len() || sha256_hex(&got) != sha256_hex(data) {
        bail!(
            "sent {} bytes and half-closed; got {} back{}",
            data.len(),
            got.len(),
            if got.len() == data.len() {
                " with another SHA-256"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Opens a connection to `addr`, proves it with a `data` echo, and returns
/// it open.
pub async fn held_echo(addr: SocketAddr, data: &[u8], timeout: Duration) -> Result<TcpStream> {
    tokio::time::timeout(timeout, async {
        let mut socket = TcpStream::connect(addr).await?;
        socket.write_all(data).await?;
        let mut got = vec![0u8; data.len()];
        socket.read_exact(&mut got).await?;
        if got != data {
            bail!("the echo of {} bytes differs", data.len());
        }
        anyhow::Ok(socket)
    })
    .await
    .with_context(|| format!("held echo via {addr} took over {timeout:?}"))?
}

/// Runs `count` tasks made by `task(index)`, at most `batch` at a time;
/// returns the failures' messages.
pub async fn in_batches<F, Fut, T>(count: usize, batch: usize, task: F) -> (Vec<T>, Vec<String>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut done = Vec::with_capacity(count);
    let mut failures = Vec::new();
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let tasks: Vec<_> = (start..end)
            .map(|index| tokio::spawn(task(index)))
            .collect();
        for (offset, joined) in tasks.into_iter().enumerate() {
            match joined.await {
                Ok(Ok(value)) => done.push(value),
                Ok(Err(error)) => failures.push(format!("#{}: {error:#}", start + offset)),
                Err(error) => failures.push(format!("#{}: {error}", start + offset)),
            }
        }
        start = end;
    }
    (done, failures)
}

/// Serves echo on `listener` until the process ends (the body of a
/// backend run in its own process, to keep its descriptors out of the
/// test process).
pub async fn serve_echo(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut reader, mut writer) = socket.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
        });
    }
}

/// Writes `piece` on an open echo connection and reads as many bytes
/// back; fails unless they are equal or when `timeout` passes first.
/// For transfers checked in steps (e.g. half before a reload, the rest
/// after).
pub async fn echo_piece(socket: &mut TcpStream, piece: &[u8], timeout: Duration) -> Result<()> {
    socket.write_all(piece).await?;
    let mut got = vec![0u8; piece.len()];
    tokio::time::timeout(timeout, socket.read_exact(&mut got))
        .await
        .context("echo did not come back in time")??;
    if got != piece {
        bail!("{} bytes came back altered", piece.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{echo_server, seeded_bytes};

    #[tokio::test]
    async fn echoes_check_their_bytes() {
        let echo = echo_server().await.unwrap();
        let data = Arc::new(seeded_bytes(5, 300_000));
        duplex_echo(echo, data.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        half_close_echo(echo, &data, Duration::from_secs(5))
            .await
            .unwrap();
        let _held = held_echo(echo, b"ping", Duration::from_secs(5))
            .await
            .unwrap();
        // A target that answers something else fails the check.
        let relay = crate::fault::FaultRelay::start(echo).await.unwrap();
        relay.flip_bit(crate::fault::Direction::Down, 1000);
        let error = duplex_echo(relay.addr(), data, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("SHA-256"), "{error:#}");
    }

    #[tokio::test]
    async fn batches_report_failures() {
        let (done, failures) = in_batches(10, 3, |index| async move {
            if index == 4 {
                bail!("four");
            }
            Ok(index)
        })
        .await;
        assert_eq!(done.len(), 9);
        assert_eq!(failures, vec!["#4: four".to_owned()]);
    }
}
