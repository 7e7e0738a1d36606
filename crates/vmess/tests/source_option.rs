//! The Rayback source and large-packet extensions in the VMess handshake
//! (request option bits 0x40 and 0x20): a client that sets one gets it
//! back in the response option byte, its session is marked
//! (`Session::peer_extensions`), and a Rayback client learns the answer
//! (`Session::agreed_by_server`); one that sets none (any V2Ray client)
//! gets nothing.
//!
//! ```text
//! raw AEAD request (options 0x0d / 0x4d / 0xcd / 0x2d / 0xed) ──TCP──▶ Rayback VmessInbound ──RecordingDispatch──▶ echo
//! VmessOutbound ──VMess──▶ Rayback VmessInbound ──RecordingDispatch──▶ echo
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use common::*;
use rayback_core::{AgreedExtensions, Destination, Extensions, Outbound, Session};
use rayback_testkit::echo_server;
use rayback_vmess::crypto::AuthIdCipher;
use rayback_vmess::header::{
    self, BodySecurity, Command, DirectionKeys, HeaderMode, Options, RequestHeader, ResponseDecoder,
};
use rayback_vmess::{Security, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Sends an AEAD request with `options` toward `target` and returns the
/// response header's option byte.
async fn response_option(server: SocketAddr, target: SocketAddr, options: u8) -> Result<u8> {
    let id = UserId::parse(AEAD_UUID)?;
    let request = RequestHeader {
        version: 1,
        body_iv: rand::random(),
        body_key: rand::random(),
        response_auth: 7,
        options: Options(options),
        padding_len: 3,
        security: BodySecurity::Aes128Gcm,
        command: Command::Tcp,
        destination: Destination::from(target),
    };
    let mut plain = Vec::new();
    request.encode(&[3; 15], &mut plain)?;
    let cmd_key = id.cmd_key();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let auth_id = header::create_auth_id(
        &AuthIdCipher::new(&header::auth_id_key(&cmd_key)),
        now,
        rand::random(),
    );
    let mut sealed = Vec::new();
    header::seal_aead_request(&cmd_key, &auth_id, &rand::random(), &plain, &mut sealed);

    let mut socket = TcpStream::connect(server).await?;
    socket.write_all(&sealed).await?;
    let mut decoder = ResponseDecoder::new(
        DirectionKeys::response(&request, HeaderMode::Aead),
        HeaderMode::Aead,
        request.response_auth,
    );
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        if decoder.decode(&received)?.is_some() {
            return Ok(decoder.option());
        }
        let n = socket.read(&mut buffer).await?;
        ensure!(n > 0, "the server closed before its response header");
        received.extend_from_slice(&buffer[..n]);
    }
}

/// A TCP server on 127.0.0.1 that greets every connection at once, so the
/// VMess server has body bytes to send right after its response header.
async fn greeting_server() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(b"hello").await;
                let mut sink = [0u8; 64];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_bit_is_answered_and_marks_the_session() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let greeter = greeting_server().await?;
        let inbound = start_inbound(Duration::from_secs(5)).await?;
        let cases = [
            (0x0d, 0x00),
            (0x4d, 0x40),
            (0xcd, 0xc0),
            (0x8d, 0x80),
            (0x2d, 0x20),
            (0xed, 0xe0),
        ];
        for (asked, answered) in cases {
            let option = response_option(inbound.addr, greeter, asked)
                .await
                .with_context(|| format!("options {asked:#04x}"))?;
            ensure!(
                option == answered,
                "options {asked:#04x}: answered {option:#04x}"
            );
        }
        // The sessions, in order, say which clients read sources.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while inbound.dispatch.sessions().len() < cases.len() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "sessions not dispatched"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let marks: Vec<Extensions> = inbound
            .dispatch
            .sessions()
            .iter()
            .map(|session| session.peer_extensions)
            .collect();
        let both = Extensions::SOURCE | Extensions::LARGE_PACKETS;
        let expected = [
            Extensions::NONE,
            Extensions::SOURCE,
            Extensions::SOURCE,
            Extensions::NONE,
            Extensions::LARGE_PACKETS,
            both,
        ];
        ensure!(marks == expected, "marks {marks:?}");
        anyhow::Ok(())
    })
    .await?
}

// The Rayback client always asks: every session it opens, TCP or Mux,
// legacy header or AEAD, is marked, and the client learns the answer
// before the first body byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rayback_client_always_asks() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let echo = echo_server().await?;
        let inbound = start_inbound(Duration::from_secs(5)).await?;
        for legacy in [false, true] {
            for security in [Security::Aes128Gcm, Security::None] {
                let client = rayback_outbound(security, legacy, inbound.addr);
                let agreed = AgreedExtensions::new();
                let mut session = Session::new(Destination::from(echo));
                session.agreed_by_server = Some(agreed.clone());
                let mut stream = client.connect(&session).await?;
                stream.write_all(b"ping").await?;
                ensure!(agreed.get().is_empty(), "answer known before the response");
                let mut back = [0u8; 4];
                stream.read_exact(&mut back).await?;
                ensure!(&back == b"ping", "{security:?} legacy={legacy}");
                ensure!(
                    agreed.get() == Extensions::SOURCE | Extensions::LARGE_PACKETS,
                    "{security:?} legacy={legacy}: agreed {:?}",
                    agreed.get()
                );
            }
        }
        let sessions = inbound.dispatch.sessions();
        ensure!(sessions.len() == 4, "{} sessions", sessions.len());
        let both = Extensions::SOURCE | Extensions::LARGE_PACKETS;
        ensure!(sessions
            .iter()
            .all(|session| session.peer_extensions == both));
        anyhow::Ok(())
    })
    .await?
}
