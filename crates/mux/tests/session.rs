//! Session-manager tests: a MuxClient and a MuxServer (or a scripted raw
//! peer) wired over `tokio::io::duplex` in memory.
//!
//! ```text
//!   test ──open()──▶ MuxClient ══ duplex ══ MuxServer ──handler──▶ test handler
//! ```

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use bytes::BytesMut;
use rayback_core::{
    packet, Address, AgreedExtensions, Destination, Extensions, Network, Outbound, Session, Stream,
    Tag, User,
};
use rayback_mux::settings::LARGE_MAX_PACKET;
use rayback_mux::{
    frame, serve_mux, ClientSettings, Frame, FrameCodec, FrameKind, MuxClient, MuxOutbound,
    MuxServer, MuxSettings, ServerHandle, ServerSettings, SessionHandler,
};
use rayback_testkit::doubles::{self, RecordingDispatch, Then};
use rayback_testkit::{seeded_bytes, sha256_hex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// Echoes every sub-stream; records destinations.
#[derive(Default)]
struct Echo {
    seen: Mutex<Vec<Destination>>,
}

#[async_trait]
impl SessionHandler for Echo {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        self.seen.lock().unwrap().push(destination.clone());
        doubles::echo(&destination, stream).await
    }
}

fn pair(
    handler: Arc<dyn SessionHandler>,
    client: ClientSettings,
    server: ServerSettings,
) -> (MuxClient, ServerHandle) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let client = MuxClient::new(Box::new(a), client);
    let server = MuxServer::serve_with(Box::new(b), handler, server);
    (client, server)
}

fn dest(i: u16) -> Destination {
    match i % 3 {
        0 => Destination::tcp(Address::Domain(format!("s{i}.example")), i),
        1 => Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), i),
        _ => Destination::tcp(Address::Ipv6(Ipv6Addr::LOCALHOST), i),
    }
}

/// Writes `data` while reading back `data.len()` bytes; returns them.
async fn write_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
) -> Result<Vec<u8>> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut got = vec![0u8; data.len()];
    let (written, read) = tokio::join!(writer.write_all(data), reader.read_exact(&mut got));
    written?;
    read?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sub_streams_echo() -> Result<()> {
    timeout(LIMIT, async {
        let echo = Arc::new(Echo::default());
        let (client, server) = pair(
            echo.clone(),
            ClientSettings::default(),
            ServerSettings::default(),
        );
        let mut tasks = Vec::new();
        for i in 0..100u16 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let data = seeded_bytes(i as u64, 64 * 1024 + i as usize * 37);
                let mut stream = client.open(dest(i)).await?;
                let got = write_and_read(&mut stream, &data).await?;
                ensure!(
                    sha256_hex(&got) == sha256_hex(&data),
                    "stream {i} corrupted"
                );
                stream.shutdown().await?;
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await?;
                ensure!(
                    rest.is_empty(),
                    "stream {i} got {} bytes after the echo",
                    rest.len()
                );
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        assert_eq!(client.total_opened(), 100);
        assert_eq!(server.total_sessions(), 100);
        let mut seen = echo.seen.lock().unwrap().clone();
        seen.sort_by_key(|d| d.port);
        assert_eq!(seen, (0..100).map(dest).collect::<Vec<_>>());
        // Every session ends on both sides.
        let started = Instant::now();
        while client.active_sessions() + server.active_sessions() > 0 {
            ensure!(
                started.elapsed() < Duration::from_secs(5),
                "sessions left open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(client.buffered_bytes(), 0);
        assert_eq!(server.buffered_bytes(), 0);
        anyhow::Ok(())
    })
    .await?
}

/// Server writes its own data (size and seed from the port) while reading
/// the client's; both directions verified independently.
struct Talker;

#[async_trait]
impl SessionHandler for Talker {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        let port = destination.port as u64;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let expected = seeded_bytes(port, 100_000 + port as usize);
        let reply = seeded_bytes(1000 + port, 150_000 + port as usize * 3);
        let read = async {
            let mut got = vec![0u8; expected.len()];
            reader.read_exact(&mut got).await?;
            if got != expected {
                return Err(io::Error::other("server got corrupted data"));
            }
            io::Result::Ok(())
        };
        let write = async {
            writer.write_all(&reply).await?;
            io::Result::Ok(())
        };
        let (read, write) = tokio::join!(read, write);
        read?;
        write?;
        writer.shutdown().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_both_ways_and_end_gives_eof() -> Result<()> {
    timeout(LIMIT, async {
        let (client, _server) = pair(
            Arc::new(Talker),
            ClientSettings::default(),
            ServerSettings::default(),
        );
        let mut tasks = Vec::new();
        for i in 1..=40u16 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let port = i as u64;
                let stream = client
                    .open(Destination::tcp(Address::Domain("talk".into()), i))
                    .await?;
                let (mut reader, mut writer) = tokio::io::split(stream);
                let data = seeded_bytes(port, 100_000 + port as usize);
                let (written, got) = tokio::join!(writer.write_all(&data), async {
                    let mut got = Vec::new();
                    reader.read_to_end(&mut got).await.map(|_| got)
                });
                written?;
                let got = got?;
                ensure!(
                    got == seeded_bytes(1000 + port, 150_000 + port as usize * 3),
                    "reply {i} corrupted"
                );
                // The server half-closed, then its handler dropped the
                // sub-stream: that plain End closed the session, so writes
                // fail (at once, or as soon as that End arrives).
                let started = Instant::now();
                let error = loop {
                    match writer.write_all(b"late").await {
                        Err(error) => break error,
                        Ok(()) => {
                            ensure!(
                                started.elapsed() < Duration::from_secs(5),
                                "late writes still accepted"
                            );
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                };
                ensure!(
                    error.kind() == io::ErrorKind::BrokenPipe,
                    "late write: {error}"
                );
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })
    .await?
}

/// Hands each sub-stream to the test.
struct Collect(tokio::sync::mpsc::UnboundedSender<(Destination, Stream)>);

#[async_trait]
impl SessionHandler for Collect {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        let _ = self.0.send((destination, stream));
        Ok(())
    }
}

fn collecting(
    client: ClientSettings,
    server: ServerSettings,
) -> (
    MuxClient,
    ServerHandle,
    tokio::sync::mpsc::UnboundedReceiver<(Destination, Stream)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (client, server) = pair(Arc::new(Collect(tx)), client, server);
    (client, server, rx)
}

#[tokio::test]
async fn end_semantics() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());

        // Client shuts down (a half-close, both sides Rayback): the server
        // reads the data then EOF and can still write; its shutdown then
        // ends the session: the client reads the reply, then EOF.
        let mut a = client.open(dest(1)).await?;
        a.write_all(b"request").await?;
        a.shutdown().await?;
        let (_, mut a_server) = accepted.recv().await.context("no session")?;
        let mut got = Vec::new();
        a_server.read_to_end(&mut got).await?;
        assert_eq!(got, b"request");
        assert_eq!(
            a.write_all(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        a_server.write_all(b"reply").await?;
        a_server.shutdown().await?;
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await?;
        assert_eq!(rest, b"reply");
        let error = a_server.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);

        // Server shuts down after a reply: the client reads it, then EOF,
        // and can still write until its own shutdown, which the server
        // reads as EOF.
        let mut b = client.open(dest(2)).await?;
        let (_, mut b_server) = accepted.recv().await.context("no session")?;
        b_server.write_all(b"greeting").await?;
        b_server.shutdown().await?;
        let mut got = Vec::new();
        b.read_to_end(&mut got).await?;
        assert_eq!(got, b"greeting");
        b.write_all(b"thanks").await?;
        b.shutdown().await?;
        let mut got = Vec::new();
        b_server.read_to_end(&mut got).await?;
        assert_eq!(got, b"thanks");
        assert_eq!(
            b.write_all(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );

        // Server drops without shutdown: an abort (End+error) → reset.
        let mut c = client.open(dest(3)).await?;
        c.write_all(b"hello").await?;
        let (_, c_server) = accepted.recv().await.context("no session")?;
        drop(c_server);
        let mut buf = [0u8; 16];
        let error = c.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);

        // An End closes exactly its own sub-stream: d still works.
        let mut d = client.open(dest(4)).await?;
        let (_, mut d_server) = accepted.recv().await.context("no session")?;
        d.write_all(b"ping").await?;
        let mut got = [0u8; 4];
        d_server.read_exact(&mut got).await?;
        assert_eq!(&got, b"ping");
        d_server.write_all(b"pong").await?;
        d.read_exact(&mut got).await?;
        assert_eq!(&got, b"pong");

        drop((a, a_server, b, b_server, c));
        let started = Instant::now();
        while client.active_sessions() != 1 || server.active_sessions() != 1 {
            ensure!(
                started.elapsed() < Duration::from_secs(5),
                "ended sessions still counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop((d, d_server));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_carrier_closes_every_sub_stream_promptly() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let mut streams = Vec::new();
        for i in 0..20 {
            streams.push(client.open(dest(i)).await?);
        }
        // The far end vanishes (as a dead TCP connection would, once noticed).
        let mut b = b;
        let mut sink = vec![0u8; 4096];
        let _ = b.read(&mut sink).await?;
        let lost_at = Instant::now();
        drop(b);
        for stream in &mut streams {
            let mut buf = [0u8; 8];
            let error = stream.read(&mut buf).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
            assert!(stream.write_all(b"x").await.is_err());
        }
        client.closed().await;
        assert!(client.is_closed());
        assert!(
            lost_at.elapsed() < Duration::from_millis(500),
            "took {:?}",
            lost_at.elapsed()
        );
        assert!(matches!(client.open(dest(99)).await, Err(error) if error.is_closed()));
        assert_eq!(client.active_sessions(), 0);

        // Same on the server side, and close() works like a lost carrier.
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let (client, server) = pair(
            Arc::new(Collect(tx)),
            ClientSettings::default(),
            ServerSettings::default(),
        );
        let mut opened = Vec::new();
        for i in 0..5 {
            let mut stream = client.open(dest(i)).await?;
            stream.write_all(b"x").await?;
            opened.push(stream);
        }
        let mut served = Vec::new();
        for _ in 0..5 {
            served.push(accepted.recv().await.context("no session")?.1);
        }
        client.close();
        for stream in &mut served {
            let mut buf = [0u8; 8];
            // The byte that arrived is still readable, then the error.
            assert_eq!(stream.read(&mut buf).await?, 1);
            assert_eq!(
                stream.read(&mut buf).await.unwrap_err().kind(),
                io::ErrorKind::ConnectionAborted
            );
        }
        server.closed().await;
        assert_eq!(server.active_sessions(), 0);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn udp_sub_streams_keep_packet_boundaries() -> Result<()> {
    timeout(LIMIT, async {
        let (client, _server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());
        let target = Destination::udp(Address::Ipv4(Ipv4Addr::new(127, 0, 0, 53)), 53);
        let mut stream = client.open(target.clone()).await?;
        let packets: Vec<Vec<u8>> = [0usize, 1, 100, 1400, 2048]
            .iter()
            .map(|&n| seeded_bytes(n as u64, n))
            .collect();
        for p in &packets {
            packet::write_packet(&mut stream, p).await?;
        }
        // Over V2Ray's 2048-byte limit: dropped, not sent.
        packet::write_packet(&mut stream, &[9u8; 2049]).await?;
        // A packet written one byte at a time still goes as one frame.
        let mut framed = vec![0u8, 3];
        framed.extend_from_slice(b"abc");
        for byte in &framed {
            stream.write_all(std::slice::from_ref(byte)).await?;
        }
        let (seen, mut server_stream) = accepted.recv().await.context("no session")?;
        assert_eq!(seen, target);
        let mut buf = Vec::new();
        for p in &packets {
            assert!(packet::read_packet(&mut server_stream, &mut buf).await?);
            assert_eq!(&buf, p);
        }
        assert!(packet::read_packet(&mut server_stream, &mut buf).await?);
        assert_eq!(buf, b"abc");
        // And back.
        for p in &packets {
            packet::write_packet(&mut server_stream, p).await?;
        }
        for p in &packets {
            assert!(packet::read_packet(&mut stream, &mut buf).await?);
            assert_eq!(&buf, p);
        }
        anyhow::Ok(())
    })
    .await?
}

// Rayback's large-packet extension: a client with `max_packet` raised (a
// portal whose bridge asked) and a server that learns the agreement from
// its dial (a bridge) carry a 60 KiB datagram each way, in one frame. The
// server sends no large datagram before the answer is recorded.
#[tokio::test]
async fn large_packets_cross_once_agreed() -> Result<()> {
    timeout(LIMIT, async {
        let agreed = AgreedExtensions::new();
        let client_settings = ClientSettings {
            mux: MuxSettings {
                max_packet: LARGE_MAX_PACKET,
                ..MuxSettings::default()
            },
            ..ClientSettings::default()
        };
        let server_settings = ServerSettings {
            mux: MuxSettings {
                large_packets_agreed: Some(agreed.clone()),
                ..MuxSettings::default()
            },
            ..ServerSettings::default()
        };
        let (client, _server, mut accepted) = collecting(client_settings, server_settings);
        let target = Destination::udp(Address::Ipv4(Ipv4Addr::new(127, 0, 0, 53)), 53);
        let mut stream = client.open(target).await?;
        let big = seeded_bytes(60, 60 * 1024);
        packet::write_packet(&mut stream, &big).await?;
        let (_, mut server_stream) = accepted.recv().await.context("no session")?;
        let mut buf = Vec::new();
        ensure!(packet::read_packet(&mut server_stream, &mut buf).await?);
        ensure!(buf == big, "client to server: {} bytes", buf.len());
        // Not agreed yet: dropped; then a small one goes as usual.
        packet::write_packet(&mut server_stream, &big).await?;
        packet::write_packet(&mut server_stream, b"small").await?;
        ensure!(packet::read_packet(&mut stream, &mut buf).await?);
        ensure!(buf == b"small", "got {} bytes", buf.len());
        agreed.record(Extensions::SOURCE | Extensions::LARGE_PACKETS);
        let largest = seeded_bytes(65, LARGE_MAX_PACKET);
        for datagram in [&big, &largest] {
            packet::write_packet(&mut server_stream, datagram).await?;
            ensure!(packet::read_packet(&mut stream, &mut buf).await?);
            ensure!(&buf == datagram, "server to client: {} bytes", buf.len());
        }
        anyhow::Ok(())
    })
    .await?
}

/// Reads frames from a raw peer.
struct RawPeer {
    io: DuplexStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> RawPeer {
        RawPeer {
            io,
            codec: FrameCodec::new(),
            buf: BytesMut::new(),
        }
    }

    async fn frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.codec.decode_frame(&mut self.buf)? {
                return Ok(frame);
            }
            ensure!(self.io.read_buf(&mut self.buf).await? > 0, "peer closed");
        }
    }

    async fn send(&mut self, frame: &Frame) -> Result<()> {
        let mut out = BytesMut::new();
        frame::encode_frame(frame, &mut out)?;
        self.io.write_all(&out).await?;
        Ok(())
    }

    async fn raw_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            ensure!(self.io.read_buf(&mut self.buf).await? > 0, "peer closed");
        }
        Ok(self.buf.split_to(n).to_vec())
    }
}

#[tokio::test]
async fn first_data_rides_in_the_new_frame() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let mut peer = RawPeer::new(b);
        let mut stream = client
            .open(Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), 80))
            .await?;
        stream.write_all(b"GET").await?;
        // Exactly spec §11 example 1.
        let wire = peer.raw_bytes(19).await?;
        assert_eq!(
            wire,
            [
                0x00, 0x0c, 0x00, 0x01, 0x01, 0x01, 0x01, 0x00, 0x50, 0x01, 0x7f, 0x00, 0x00, 0x01,
                0x00, 0x03, b'G', b'E', b'T'
            ]
        );
        // Server speaks first: a session with no data still gets its New at once.
        let started = Instant::now();
        let _quiet = client.open(dest(7)).await?;
        let frame = peer.frame().await?;
        assert_eq!(frame, Frame::new_session(2, dest(7), None));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "new took {:?}",
            started.elapsed()
        );
        // Responses come as Keep frames, End closes.
        peer.send(&Frame::keep(2, "welcome".into())).await?;
        peer.send(&Frame::end(2, false)).await?;
        let mut got = Vec::new();
        let mut quiet = _quiet;
        quiet.read_to_end(&mut got).await?;
        assert_eq!(got, b"welcome");
        // We answer the peer's End with ours.
        assert_eq!(peer.frame().await?, Frame::end(2, false));
        // Large writes are split into frames of max_frame_data.
        let max = MuxSettings::default().max_frame_data;
        let big = seeded_bytes(5, 2 * max + 1000);
        stream.write_all(&big).await?;
        let mut sizes = Vec::new();
        let mut joined = Vec::new();
        while joined.len() < big.len() {
            let frame = peer.frame().await?;
            assert_eq!(frame.kind, FrameKind::Keep);
            let data = frame.data.context("keep without data")?;
            sizes.push(data.len());
            joined.extend_from_slice(&data);
        }
        assert_eq!(joined, big);
        assert!(
            sizes.len() >= 3 && sizes.iter().all(|&n| n <= max),
            "{sizes:?}"
        );
        anyhow::Ok(())
    })
    .await?
}

/// reverse.md §6: the portal's control session open, with its first
/// Control message riding in the New.
#[tokio::test]
async fn control_session_new_matches_the_captured_bytes() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let mut peer = RawPeer::new(b);
        let control = Destination::udp(Address::Domain("reverse.internal.v2ray.com".into()), 0);
        let mut stream = client.open(control).await?;
        let message = [
            0x9a, 0x06, 0x08, 0x05, 0xe8, 0xa7, 0x3a, 0x01, 0x0f, 0x38, 0x4a,
        ];
        packet::write_packet(&mut stream, &message).await?;
        let mut expected = vec![
            0x00, 0x23, 0x00, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x02, 0x1a,
        ];
        expected.extend_from_slice(b"reverse.internal.v2ray.com");
        expected.extend_from_slice(&[0x00, 0x0b]);
        expected.extend_from_slice(&message);
        assert_eq!(peer.raw_bytes(expected.len()).await?, expected);
        // Later messages are Keep frames, one per packet; DRAIN then End.
        packet::write_packet(&mut stream, &[0x08, 0x01]).await?;
        stream.shutdown().await?;
        assert_eq!(
            peer.raw_bytes(16).await?,
            [0, 4, 0, 1, 2, 1, 0, 2, 8, 1, 0, 4, 0, 1, 3, 0]
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn server_answers_like_v2ray() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let config = ServerSettings {
            max_sessions: 2,
            ..ServerSettings::default()
        };
        let server = MuxServer::serve_with(Box::new(b), Arc::new(Echo::default()), config);
        let mut peer = RawPeer::new(a);
        // Data for an unknown session → End (option 0).
        peer.send(&Frame::keep(9, "lost".into())).await?;
        assert_eq!(peer.frame().await?, Frame::end(9, false));
        // KeepAlive (with data) and Keep without data are ignored; End for an
        // unknown session too.
        peer.send(&Frame {
            session_id: 0,
            kind: FrameKind::KeepAlive,
            data: Some("x".into()),
        })
        .await?;
        peer.send(&Frame {
            session_id: 9,
            kind: FrameKind::Keep,
            data: None,
        })
        .await?;
        peer.send(&Frame::end(12, false)).await?;
        // New with data: echoed back as Keep.
        peer.send(&Frame::new_session(1, dest(1), Some("one".into())))
            .await?;
        assert_eq!(peer.frame().await?, Frame::keep(1, "one".into()));
        peer.send(&Frame::new_session(2, dest(2), None)).await?;
        // Over max_sessions: End+error, data discarded.
        peer.send(&Frame::new_session(3, dest(3), Some("three".into())))
            .await?;
        assert_eq!(peer.frame().await?, Frame::end(3, true));
        assert_eq!(server.active_sessions(), 2);
        // End closes session 1; the echo handler answers with its own End.
        peer.send(&Frame::end(1, false)).await?;
        assert_eq!(peer.frame().await?, Frame::end(1, false));
        assert_eq!(server.active_sessions(), 1);
        // A malformed frame is fatal for the connection.
        peer.io
            .write_all(&[0x00, 0x04, 0x00, 0x02, 0x07, 0x00])
            .await?;
        timeout(Duration::from_secs(2), server.closed()).await?;
        assert!(server
            .close_error()
            .context("no close error")?
            .to_string()
            .contains("unknown frame status 0x07"));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn client_limits_and_idle_close() -> Result<()> {
    timeout(LIMIT, async {
        let config = ClientSettings {
            max_concurrency: Some(2),
            max_total: Some(3),
            idle_timeout: Some(Duration::from_millis(200)),
            ..ClientSettings::default()
        };
        let (client, _server, _accepted) = collecting(config, ServerSettings::default());
        let a = client.open(dest(1)).await?;
        let b = client.open(dest(2)).await?;
        assert!(client.is_full());
        assert!(matches!(client.open(dest(3)).await, Err(error) if error.is_full()));
        drop(a);
        let c = client.open(dest(3)).await?;
        drop((b, c));
        assert_eq!(client.total_opened(), 3);
        assert!(matches!(client.open(dest(4)).await, Err(error) if error.is_full()));
        // No session left: closes itself at the next idle check.
        let started = Instant::now();
        client.closed().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn dropping_the_last_client_handle_closes_once_idle() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());
        let mut stream = client.open(dest(1)).await?;
        drop(client);
        // The open sub-stream keeps working.
        stream.write_all(b"still here").await?;
        let (_, mut served) = accepted.recv().await.context("no session")?;
        let mut got = [0u8; 10];
        served.read_exact(&mut got).await?;
        assert_eq!(&got, b"still here");
        assert!(!server.is_closed());
        drop(stream);
        timeout(Duration::from_secs(2), server.closed()).await?;
        anyhow::Ok(())
    })
    .await?
}

/// An inner outbound whose every connect is an in-memory mux server that
/// echoes.
#[derive(Default)]
struct MemoryCarrier {
    dials: AtomicUsize,
    servers: Mutex<Vec<ServerHandle>>,
    last_session: Mutex<Option<Session>>,
}

#[async_trait]
impl Outbound for MemoryCarrier {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        *self.last_session.lock().unwrap() = Some(session.clone());
        let (a, b) = tokio::io::duplex(64 * 1024);
        self.servers
            .lock()
            .unwrap()
            .push(MuxServer::serve(Box::new(b), Arc::new(Echo::default())));
        Ok(Box::new(a))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_outbound_pools_carriers_by_concurrency() -> Result<()> {
    timeout(LIMIT, async {
        let inner = Arc::new(MemoryCarrier::default());
        let outbound = Arc::new(MuxOutbound::new(inner.clone(), 4));
        let session = Session::new(dest(1)).with_inbound_tag(Tag::new("in"));
        // 10 sessions at once → 3 carriers (4 + 4 + 2), even when they all
        // arrive together.
        let mut streams = Vec::new();
        let opens: Vec<_> = (0..10u16)
            .map(|i| {
                let outbound = outbound.clone();
                let session = session.redirected(dest(i));
                tokio::spawn(async move { outbound.connect(&session).await })
            })
            .collect();
        for open in opens {
            streams.push(open.await??);
        }
        assert_eq!(inner.dials.load(Ordering::SeqCst), 3);
        assert_eq!(outbound.carriers(), 3);
        let carrier_session = inner
            .last_session
            .lock()
            .unwrap()
            .clone()
            .context("no dial")?;
        assert_eq!(
            carrier_session.destination,
            rayback_mux::mux_cool_destination()
        );
        assert_eq!(carrier_session.inbound_tag, Some(Tag::new("in")));
        for (i, stream) in streams.iter_mut().enumerate() {
            let data = seeded_bytes(i as u64, 10_000);
            assert_eq!(write_and_read(stream, &data).await?, data);
        }
        let sessions: usize = inner
            .servers
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.active_sessions())
            .sum();
        assert_eq!(sessions, 10);
        // Freed places are reused: no new dial.
        streams.truncate(5);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..5u16 {
            streams.push(outbound.connect(&session.redirected(dest(100 + i))).await?);
        }
        assert_eq!(inner.dials.load(Ordering::SeqCst), 3);
        // The default `handle` relays through a sub-stream.
        let (mut user, inbound) = tokio::io::duplex(4096);
        let relay = {
            let outbound = outbound.clone();
            let session = session.clone();
            tokio::spawn(async move {
                outbound
                    .handle(session, Box::new(inbound), &rayback_core::Policy::default())
                    .await
            })
        };
        user.write_all(b"through the pool").await?;
        let mut got = [0u8; 16];
        user.read_exact(&mut got).await?;
        assert_eq!(&got, b"through the pool");
        drop(user);
        let _ = relay.await?;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn mux_outbound_stops_at_128_sessions_per_carrier() -> Result<()> {
    timeout(LIMIT, async {
        let inner = Arc::new(MemoryCarrier::default());
        let outbound = MuxOutbound::new(inner.clone(), 1024);
        let session = Session::new(dest(1));
        for i in 0..130u16 {
            let stream = outbound.connect(&session.redirected(dest(i))).await?;
            drop(stream);
        }
        assert_eq!(inner.dials.load(Ordering::SeqCst), 2);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn serve_mux_dispatches_sub_sessions_with_the_carriers_origin() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let dispatch = Arc::new(RecordingDispatch::new(Then::Echo));
        let source: SocketAddr = "127.0.0.1:40000".parse()?;
        let user = User {
            email: "u@example".into(),
            level: 1,
        };
        let carrier = Session::new(rayback_mux::mux_cool_destination())
            .with_inbound_tag(Tag::new("vmess-in"))
            .with_source(source)
            .with_user(user.clone());
        let served = tokio::spawn(serve_mux(Box::new(b), carrier, dispatch.clone()));
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let udp = Destination::udp(Address::Domain("dns.example".into()), 53);
        let mut tcp_stream = client.open(dest(5)).await?;
        let _udp_stream = client.open(udp.clone()).await?;
        assert_eq!(write_and_read(&mut tcp_stream, b"abc").await?, b"abc");
        let sessions = dispatch.sessions();
        assert_eq!(sessions.len(), 2);
        for s in &sessions {
            assert_eq!(s.inbound_tag, Some(Tag::new("vmess-in")));
            assert_eq!(s.source, Some(source));
            assert_eq!(s.user.as_ref(), Some(&user));
        }
        assert_eq!(sessions[0].destination, dest(5));
        assert_eq!(sessions[1].destination, udp);
        assert_eq!(sessions[1].destination.network, Network::Udp);
        client.close();
        timeout(Duration::from_secs(2), served).await???;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn small_frames_config_is_honoured() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let config = ClientSettings {
            mux: MuxSettings {
                max_frame_data: 8192,
                ..MuxSettings::default()
            },
            ..ClientSettings::default()
        };
        let client = MuxClient::new(Box::new(a), config);
        let mut peer = RawPeer::new(b);
        let mut stream = client.open(dest(1)).await?;
        stream.write_all(&[1u8; 20_000]).await?;
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 20_000 {
            let frame = peer.frame().await?;
            sizes.push(frame.data.map_or(0, |d| d.len()));
        }
        assert_eq!(sizes, vec![8192, 8192, 20_000 - 16_384]);
        anyhow::Ok(())
    })
    .await?
}

// ---------------------------------------------------------------------------
// Half-close (Rayback extension: End with option bit 0x80)

/// Waits until neither side counts a session.
async fn sessions_gone(client: &MuxClient, server: &ServerHandle) -> Result<()> {
    let started = Instant::now();
    while client.active_sessions() + server.active_sessions() > 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "sessions left open: client {}, server {}",
            client.active_sessions(),
            server.active_sessions()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.buffered_bytes(), 0);
    assert_eq!(server.buffered_bytes(), 0);
    Ok(())
}

/// Reads to EOF, and only then writes everything back and shuts down.
async fn echo_after_eof<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> io::Result<usize> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await?;
    stream.write_all(&got).await?;
    stream.shutdown().await?;
    Ok(got.len())
}

const HALF_CLOSE_SIZE: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_by_the_client_keeps_the_reply_direction() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());
        let data = seeded_bytes(41, HALF_CLOSE_SIZE);
        let mut stream = client.open(dest(1)).await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        let echo = tokio::spawn(async move {
            let n = echo_after_eof(&mut far).await?;
            io::Result::Ok((n, far))
        });
        stream.write_all(&data).await?;
        stream.shutdown().await?;
        // The session stays open on both sides while the echo is pending.
        assert_eq!(client.active_sessions(), 1);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await?;
        ensure!(
            sha256_hex(&got) == sha256_hex(&data),
            "echo differs: {} bytes back",
            got.len()
        );
        let (n, far) = echo.await??;
        assert_eq!(n, HALF_CLOSE_SIZE);
        // Both directions are done: gone on both sides, even while the
        // handles live.
        sessions_gone(&client, &server).await?;
        drop((stream, far));
        assert!(!client.is_closed() && !server.is_closed());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_by_the_server_keeps_the_request_direction() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());
        let data = seeded_bytes(42, HALF_CLOSE_SIZE);
        let mut stream = client.open(dest(2)).await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        let expected = data.clone();
        let speaker = tokio::spawn(async move {
            far.write_all(&data).await?;
            far.shutdown().await?;
            let mut got = Vec::new();
            far.read_to_end(&mut got).await?;
            anyhow::Ok((got == expected, far))
        });
        let n = echo_after_eof(&mut stream).await?;
        assert_eq!(n, HALF_CLOSE_SIZE);
        let (same, far) = speaker.await??;
        ensure!(same, "the server got a different echo");
        sessions_gone(&client, &server).await?;
        drop((stream, far));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_echo_through_session_handlers() -> Result<()> {
    /// The server's handler: read everything, then answer.
    struct AnswerAfterEof;

    #[async_trait]
    impl SessionHandler for AnswerAfterEof {
        async fn handle(
            &self,
            _destination: Destination,
            _source: Option<SocketAddr>,
            mut stream: Stream,
        ) -> io::Result<()> {
            echo_after_eof(&mut stream).await.map(drop)
        }
    }

    timeout(LIMIT, async {
        let (client, server) = pair(
            Arc::new(AnswerAfterEof),
            ClientSettings::default(),
            ServerSettings::default(),
        );
        let mut tasks = Vec::new();
        for i in 0..8u16 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let data = seeded_bytes(100 + i as u64, HALF_CLOSE_SIZE / 4 + i as usize);
                let mut stream = client.open(dest(i)).await?;
                stream.write_all(&data).await?;
                stream.shutdown().await?;
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await?;
                ensure!(got == data, "stream {i}: echo differs");
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        sessions_gone(&client, &server).await
    })
    .await?
}

#[tokio::test]
async fn both_sides_half_close() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());
        let mut stream = client.open(dest(3)).await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        stream.write_all(b"from client").await?;
        far.write_all(b"from server").await?;
        stream.shutdown().await?;
        far.shutdown().await?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await?;
        assert_eq!(got, b"from server");
        let mut got = Vec::new();
        far.read_to_end(&mut got).await?;
        assert_eq!(got, b"from client");
        sessions_gone(&client, &server).await?;
        anyhow::Ok(())
    })
    .await?
}

/// The side that received the half-close drops its sub-stream (without a
/// shutdown): a plain End completes the close; nothing leaks.
#[tokio::test]
async fn dropping_after_the_peers_half_close_ends_the_session() -> Result<()> {
    timeout(LIMIT, async {
        let (client, server, mut accepted) =
            collecting(ClientSettings::default(), ServerSettings::default());

        // The server reads to EOF, answers part of it, then drops.
        let mut a = client.open(dest(1)).await?;
        a.write_all(b"request").await?;
        a.shutdown().await?;
        let (_, mut a_far) = accepted.recv().await.context("no session")?;
        let mut got = Vec::new();
        a_far.read_to_end(&mut got).await?;
        assert_eq!(got, b"request");
        assert_eq!(server.active_sessions(), 1, "half-closed session counts");
        a_far.write_all(b"partial").await?;
        drop(a_far);
        let mut got = Vec::new();
        a.read_to_end(&mut got).await?;
        assert_eq!(got, b"partial");
        sessions_gone(&client, &server).await?;

        // The server drops at once, whether or not the half-close arrived
        // yet: either End ends the session; the client reads EOF or a reset.
        for i in 0..20u16 {
            let mut b = client.open(dest(i)).await?;
            b.write_all(b"hello").await?;
            b.shutdown().await?;
            let (_, b_far) = accepted.recv().await.context("no session")?;
            if i % 2 == 0 {
                tokio::task::yield_now().await;
            }
            drop(b_far);
            let mut got = Vec::new();
            match b.read_to_end(&mut got).await {
                Ok(_) => ensure!(got.is_empty(), "unexpected bytes {got:?}"),
                Err(error) => ensure!(
                    error.kind() == io::ErrorKind::ConnectionReset,
                    "read: {error}"
                ),
            }
            drop(b);
            sessions_gone(&client, &server).await?;
        }

        // The half-closing side drops before the peer answers: its plain
        // End ends the peer's side too.
        let mut c = client.open(dest(5)).await?;
        c.shutdown().await?;
        let (_, mut c_far) = accepted.recv().await.context("no session")?;
        let mut got = Vec::new();
        c_far.read_to_end(&mut got).await?;
        drop(c);
        let started = Instant::now();
        let error = loop {
            match c_far.write_all(b"anyone?").await {
                Err(error) => break error,
                Ok(()) => {
                    ensure!(
                        started.elapsed() < Duration::from_secs(5),
                        "writes accepted"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        sessions_gone(&client, &server).await?;
        anyhow::Ok(())
    })
    .await?
}

/// On the wire: shutdown sends `03 80`; a peer that treats it as a plain
/// End (V2Ray) and answers with its own End closes the session fully.
#[tokio::test]
async fn half_close_on_the_wire_and_against_a_v2ray_like_peer() -> Result<()> {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let mut peer = RawPeer::new(b);
        let mut stream = client.open(dest(1)).await?;
        stream.write_all(b"req").await?;
        stream.shutdown().await?;
        let new = peer.frame().await?;
        assert_eq!(new, Frame::new_session(1, dest(1), Some("req".into())));
        assert_eq!(peer.raw_bytes(6).await?, [0, 4, 0, 1, 3, 0x80]);
        // V2Ray: full close, answers with a plain End (possibly after data
        // it had sent already).
        peer.send(&Frame::keep(1, "resp".into())).await?;
        peer.send(&Frame::end(1, false)).await?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await?;
        assert_eq!(got, b"resp");
        let started = Instant::now();
        while client.active_sessions() > 0 {
            ensure!(started.elapsed() < Duration::from_secs(5), "session left");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Dropping sends nothing more: the next frame is session 2's New.
        drop(stream);
        let _other = client.open(dest(2)).await?;
        assert_eq!(peer.frame().await?, Frame::new_session(2, dest(2), None));

        // A half-close from a (Rayback) peer to a server: its handler still
        // writes; the session ends with the handler's plain End.
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let server = MuxServer::serve_with(
            Box::new(b),
            Arc::new(Collect(tx)),
            ServerSettings::default(),
        );
        let mut peer = RawPeer::new(a);
        peer.send(&Frame::new_session(7, dest(7), Some("ping".into())))
            .await?;
        peer.send(&Frame::end_half_close(7)).await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        let mut got = Vec::new();
        far.read_to_end(&mut got).await?;
        assert_eq!(got, b"ping");
        assert_eq!(server.active_sessions(), 1);
        far.write_all(b"pong").await?;
        far.shutdown().await?;
        assert_eq!(peer.frame().await?, Frame::keep(7, "pong".into()));
        assert_eq!(peer.frame().await?, Frame::end(7, false));
        assert_eq!(server.active_sessions(), 0);
        // Dropped after the peer's half-close, without shutdown: plain End.
        peer.send(&Frame::new_session(8, dest(8), None)).await?;
        peer.send(&Frame::end_half_close(8)).await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        let mut got = Vec::new();
        far.read_to_end(&mut got).await?;
        drop(far);
        assert_eq!(peer.frame().await?, Frame::end(8, false));
        assert_eq!(server.active_sessions(), 0);
        // Half-close plus error is an abort: reset, End+error answered.
        peer.send(&Frame::new_session(9, dest(9), Some("x".into())))
            .await?;
        peer.send(&Frame {
            session_id: 9,
            kind: FrameKind::End {
                error: true,
                half_close: true,
            },
            data: None,
        })
        .await?;
        let (_, mut far) = accepted.recv().await.context("no session")?;
        let mut byte = [0u8; 1];
        let started = Instant::now();
        loop {
            match far.read(&mut byte).await {
                Err(error) => {
                    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
                    break;
                }
                Ok(_) => ensure!(started.elapsed() < Duration::from_secs(5), "no reset"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(peer.frame().await?, Frame::end(9, true));
        assert_eq!(server.active_sessions(), 0);
        anyhow::Ok(())
    })
    .await?
}

/// Echoes every sub-stream; records the source each New named.
#[derive(Default)]
struct Sources {
    seen: Mutex<Vec<Option<SocketAddr>>>,
}

#[async_trait]
impl SessionHandler for Sources {
    async fn handle(
        &self,
        destination: Destination,
        source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        self.seen.lock().unwrap().push(source);
        doubles::echo(&destination, stream).await
    }
}

// The visitor's source travels only from a client made with `send_source`;
// `open` (no source) and a client without the setting send V2Ray's New.
#[tokio::test]
async fn the_source_reaches_the_handler_only_when_the_client_sends_it() -> Result<()> {
    timeout(LIMIT, async {
        let visitor: SocketAddr = "127.0.0.5:40000".parse()?;
        let visitor6: SocketAddr = "[::1]:40001".parse()?;
        for send_source in [true, false] {
            let handler = Arc::new(Sources::default());
            let (client, _server) = pair(
                handler.clone(),
                ClientSettings {
                    send_source,
                    ..ClientSettings::default()
                },
                ServerSettings::default(),
            );
            for (i, source) in [Some(visitor), None, Some(visitor6)]
                .into_iter()
                .enumerate()
            {
                let mut stream = client.open_from(dest(i as u16), source).await?;
                let back = write_and_read(&mut stream, b"ping").await?;
                ensure!(back == b"ping", "echo {i}");
            }
            let mut seen = handler.seen.lock().unwrap().clone();
            seen.sort();
            let mut expected = if send_source {
                vec![Some(visitor), None, Some(visitor6)]
            } else {
                vec![None, None, None]
            };
            expected.sort();
            ensure!(seen == expected, "send_source {send_source}: {seen:?}");
        }
        anyhow::Ok(())
    })
    .await?
}
