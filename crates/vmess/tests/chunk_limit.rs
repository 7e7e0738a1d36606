//! Finds (and pins) the largest body chunk the real v2ray 4.34 reads: the
//! full 16-bit `Len` (65535 bytes of payload + tag + padding), both when
//! v2ray is the server reading requests and when it is the client reading
//! responses.
//!
//! ```text
//! request side:  test ─VmessStream (hand-built, chosen options)─▶ v2ray vmess inbound ─freedom─▶ echo
//! response side: test ──TCP──▶ v2ray dokodemo ─VMess─▶ Rayback VmessInbound ─BlastDispatch (one big write)
//! ```

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use async_trait::async_trait;
use common::*;
use rayback_core::{Destination, Dispatch, Inbound, InboundContext, Policy, Session, Stream, Tag};
use rayback_testkit::{echo_server, free_port, seeded_bytes, V2Ray};
use rayback_vmess::body::{BodyFraming, ChunkOpener, ChunkSealer, MAX_CHUNK_LEN};
use rayback_vmess::crypto::AuthIdCipher;
use rayback_vmess::header::{
    self, BodySecurity, Command, DirectionKeys, HeaderMode, Options, RequestHeader, ResponseDecoder,
};
use rayback_vmess::{UserId, VmessInbound, VmessInboundSettings, VmessMetrics, VmessStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A client stream with hand-picked options (AEAD header).
async fn raw_client(
    server: SocketAddr,
    target: SocketAddr,
    security: BodySecurity,
    options: Options,
) -> Result<VmessStream<TcpStream>> {
    let socket = TcpStream::connect(server).await?;
    socket.set_nodelay(true)?;
    let id = UserId::parse(AEAD_UUID)?;
    let request = RequestHeader {
        version: 1,
        body_iv: rand::random(),
        body_key: rand::random(),
        response_auth: 0x5a,
        options,
        padding_len: 0,
        security,
        command: Command::Tcp,
        destination: Destination::from(target),
    };
    let mut plain = Vec::new();
    request.encode(&[0; 15], &mut plain)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let cmd_key = id.cmd_key();
    let auth_id = header::create_auth_id(
        &AuthIdCipher::new(&header::auth_id_key(&cmd_key)),
        now,
        rand::random(),
    );
    let mut sealed = Vec::new();
    header::seal_aead_request(&cmd_key, &auth_id, &rand::random(), &plain, &mut sealed);
    let framing = BodyFraming::new(security, options, Command::Tcp);
    let response_keys = DirectionKeys::response(&request, HeaderMode::Aead);
    Ok(VmessStream::client(
        socket,
        sealed,
        ChunkSealer::new(framing, &DirectionKeys::request(&request)),
        ChunkOpener::new(framing, &response_keys),
        ResponseDecoder::new(response_keys, HeaderMode::Aead, 0x5a),
        Arc::new(VmessMetrics::new()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_server_reads_chunks_up_to_the_16_bit_limit() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let echo = echo_server().await?;
        let port = free_port();
        let _v2ray = V2Ray::start(&v2ray_server_config(port), &[port]).await?;
        let server: SocketAddr = ([127, 0, 0, 1], port).into();
        // S only: no mask, no padding, so a payload of 65535 - 16 bytes
        // makes a chunk whose Len is exactly 65535. None: Len = payload.
        for (security, options) in [
            (BodySecurity::Aes128Gcm, Options(Options::CHUNK_STREAM)),
            (BodySecurity::ChaCha20Poly1305, Options(0x0d)),
            (BodySecurity::None, Options(0x05)),
        ] {
            let mut stream = raw_client(server, echo, security, options).await?;
            let tag = if security == BodySecurity::None {
                0
            } else {
                16
            };
            let largest = MAX_CHUNK_LEN - tag - if options.0 & 0x08 != 0 { 63 } else { 0 };
            for (i, size) in [1usize, 2048, 2049, 16_384, 32_768, 65_000, largest]
                .into_iter()
                .enumerate()
            {
                let data = seeded_bytes(i as u64, size);
                stream.write_all(&data).await?;
                stream.flush().await?;
                let mut back = vec![0u8; size];
                tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
                    .await??;
                ensure!(
                    back == data,
                    "{security:?} chunk of {size} came back changed"
                );
            }
            stream.shutdown().await?;
        }
        anyhow::Ok(())
    })
    .await
    .expect("test timed out")
    .unwrap();
}

/// Answers every session with one large write of seeded bytes.
struct BlastDispatch {
    len: usize,
}

#[async_trait]
impl Dispatch for BlastDispatch {
    async fn dispatch(&self, _session: Session, mut stream: Stream) -> io::Result<()> {
        let data = seeded_bytes(7, self.len);
        stream.write_all(&data).await?;
        stream.shutdown().await?;
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
        Ok(())
    }

    async fn connect(&self, _session: &Session) -> io::Result<Stream> {
        Err(io::Error::other("not used"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_reads_chunks_up_to_the_16_bit_limit() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let len = 1 << 20;
        let inbound = Arc::new(
            VmessInbound::bind(
                VmessInboundSettings {
                    tag: Some(Tag::new("blast")),
                    listen: "127.0.0.1:0".parse()?,
                    users: server_users(),
                    policy: Policy::default(),
                    disable_insecure_encryption: false,
                    transport: std::sync::Arc::new(rayback_transport::Transport::tcp()),
                },
                Arc::new(VmessMetrics::new()),
            )
            .await?,
        );
        let server = inbound.local_addr();
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        tokio::spawn(inbound.run(InboundContext {
            dispatch: Arc::new(BlastDispatch { len }),
            shutdown,
            tracker: TaskTracker::new(),
        }));
        for security in ["aes-128-gcm", "chacha20-poly1305", "none"] {
            let port = free_port();
            // The destination does not matter to BlastDispatch.
            let target: SocketAddr = ([127, 0, 0, 1], 9).into();
            let config = v2ray_client_config(port, target, "tcp", server, security, false);
            let _v2ray = V2Ray::start(&config, &[port]).await?;
            let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
            socket.write_all(b"go").await?;
            let mut back = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut back)).await??;
            ensure!(
                back.len() == len,
                "{security}: {} of {len} bytes",
                back.len()
            );
            ensure!(back == seeded_bytes(7, len), "{security}: bytes differ");
        }
        anyhow::Ok(())
    })
    .await
    .expect("test timed out")
    .unwrap();
}
