//! Anti-probing: whatever a client sends that is not a valid, fresh,
//! unreplayed request, the Rayback server answers nothing and closes at the
//! handshake deadline (2 s here, counted from accept) — never earlier after
//! some byte count. A client that leaves is let go at once.
//!
//! ```text
//! test client ──TCP──▶ Rayback VmessInbound (handshake 2 s) ──RecordingDispatch──▶ echo
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use common::*;
use rayback_core::Destination;
use rayback_testkit::{echo_server, seeded_bytes};
use rayback_vmess::crypto::AuthIdCipher;
use rayback_vmess::header::{self, BodySecurity, Command, Options, RequestHeader};
use rayback_vmess::{FailureReason, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE: Duration = Duration::from_secs(2);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A complete AEAD request for `id` at `time`, toward `target`.
fn request(id: &str, time: i64, target: SocketAddr) -> Vec<u8> {
    let id = UserId::parse(id).unwrap();
    let request = RequestHeader {
        version: 1,
        body_iv: rand::random(),
        body_key: rand::random(),
        response_auth: 1,
        options: Options(0x0d),
        padding_len: 5,
        security: BodySecurity::Aes128Gcm,
        command: Command::Tcp,
        destination: Destination::from(target),
    };
    let mut plain = Vec::new();
    request.encode(&[3; 15], &mut plain).unwrap();
    let cmd_key = id.cmd_key();
    let auth_id = header::create_auth_id(
        &AuthIdCipher::new(&header::auth_id_key(&cmd_key)),
        time,
        rand::random(),
    );
    let mut sealed = Vec::new();
    header::seal_aead_request(&cmd_key, &auth_id, &rand::random(), &plain, &mut sealed);
    sealed
}

/// What the server did with a probe.
#[derive(Debug)]
struct Outcome {
    received: usize,
    closed_after: Duration,
}

/// Connects, sends `probe`, optionally half-closes, and waits (≤ 10 s)
/// for the server to close, counting what it sent back.
async fn probe(server: SocketAddr, probe: Vec<u8>, leave: bool) -> Result<Outcome> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(server).await?;
    socket.write_all(&probe).await?;
    if leave {
        socket.shutdown().await?;
    }
    let mut received = 0;
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await?;
    Ok(Outcome {
        received,
        closed_after: started.elapsed(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_handshake_is_silent_until_the_same_deadline() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await?;
        let inbound = start_inbound(HANDSHAKE).await?;
        let now = unix_now();

        // A good request first: it is accepted and echoes; its exact bytes
        // are then the replay probe.
        let good = request(AEAD_UUID, now, echo);
        let mut socket = TcpStream::connect(inbound.addr).await?;
        socket.write_all(&good).await?;
        let mut response = [0u8; 1];
        let answered =
            tokio::time::timeout(Duration::from_secs(1), socket.read(&mut response)).await;
        // The server answers only with data; nothing was sent, so nothing yet.
        ensure!(
            answered.is_err(),
            "server answered before any payload: {answered:?}"
        );
        drop(socket);

        let mut probes: Vec<(String, Vec<u8>)> = vec![
            (
                "wrong uuid".into(),
                request("00000000-1111-2222-3333-444444444444", now, echo),
            ),
            ("replayed header".into(), good.clone()),
            (
                "stale timestamp".into(),
                request(AEAD_UUID, now - 300, echo),
            ),
            (
                "future timestamp".into(),
                request(AEAD_UUID, now + 300, echo),
            ),
        ];
        let mut flipped = request(AEAD_UUID, now, echo);
        flipped[40] ^= 0x10;
        probes.push(("flipped bit in sealed length".into(), flipped));
        let mut flipped = request(AEAD_UUID, now, echo);
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        probes.push(("flipped bit in header tag".into(), flipped));
        for len in [1usize, 15, 16, 17, 53, 54, 100, 500, 4000, 20_000] {
            probes.push((format!("garbage of {len}"), seeded_bytes(len as u64, len)));
        }
        probes.push(("nothing at all".into(), Vec::new()));

        let started = Instant::now();
        let tasks: Vec<_> = probes
            .into_iter()
            .map(|(name, bytes)| {
                let server = inbound.addr;
                tokio::spawn(async move { (name, probe(server, bytes, false).await) })
            })
            .collect();
        for task in tasks {
            let (name, outcome) = task.await?;
            let outcome = outcome?;
            ensure!(
                outcome.received == 0,
                "{name}: server sent {} bytes",
                outcome.received
            );
            ensure!(
                outcome.closed_after >= HANDSHAKE - Duration::from_millis(50)
                    && outcome.closed_after <= HANDSHAKE + Duration::from_secs(1),
                "{name}: closed after {:?}, not at the {HANDSHAKE:?} deadline",
                outcome.closed_after
            );
        }
        ensure!(started.elapsed() < HANDSHAKE + Duration::from_secs(2));
        let metrics = &inbound.metrics;
        ensure!(
            metrics.failures(FailureReason::ReplayedAuthId) == 1,
            "replays counted"
        );
        ensure!(
            metrics.failures(FailureReason::StaleTimestamp) == 2,
            "stale counted"
        );
        ensure!(
            metrics.failures(FailureReason::HeaderUnauthentic) == 2,
            "bit flips counted"
        );
        // wrong uuid + every garbage probe of 16 bytes or more.
        ensure!(
            metrics.failures(FailureReason::UnknownUser) == 9,
            "unknown users: {}",
            metrics.failures(FailureReason::UnknownUser)
        );
        // 1 and 15 bytes and nothing: never a complete AuthID.
        ensure!(
            metrics.failures(FailureReason::Timeout) == 3,
            "timeouts: {}",
            metrics.failures(FailureReason::Timeout)
        );
        anyhow::Ok(())
    })
    .await
    .expect("test timed out")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_closed_at_once() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await?;
        let inbound = start_inbound(HANDSHAKE).await?;
        let now = unix_now();
        let probes = vec![
            Vec::new(),
            seeded_bytes(1, 10),
            seeded_bytes(2, 54),
            seeded_bytes(3, 4000),
            request("00000000-1111-2222-3333-444444444444", now, echo),
            request(AEAD_UUID, now - 300, echo),
        ];
        let tasks: Vec<_> = probes
            .into_iter()
            .map(|bytes| {
                let server = inbound.addr;
                tokio::spawn(async move { (bytes.len(), probe(server, bytes, true).await) })
            })
            .collect();
        for task in tasks {
            let (len, outcome) = task.await?;
            let outcome = outcome?;
            ensure!(
                outcome.received == 0,
                "{len} bytes: server sent {}",
                outcome.received
            );
            ensure!(
                outcome.closed_after < Duration::from_millis(500),
                "{len} bytes: a leaving client was held {:?}",
                outcome.closed_after
            );
        }
        anyhow::Ok(())
    })
    .await
    .expect("test timed out")
    .unwrap();
}
