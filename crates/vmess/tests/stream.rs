//! `VmessStream` in memory: a client and a server stream joined by a small
//! tokio duplex pipe (so reads and writes split anywhere), with random
//! write sizes, packet framing, header flush timing and the send budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rayback_core::packet::{read_packet, write_packet};
use rayback_core::{Address, Destination};
use rayback_vmess::body::{BodyFraming, ChunkOpener, ChunkSealer, DATA_CHUNK_BUDGET};
use rayback_vmess::header::{
    self, BodySecurity, Command, DirectionKeys, HeaderMode, Options, RequestHeader, ResponseDecoder,
};
use rayback_vmess::{VmessMetrics, VmessStream};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

fn request(security: BodySecurity, options: u8, command: Command) -> RequestHeader {
    RequestHeader {
        version: 1,
        body_iv: [1; 16],
        body_key: [2; 16],
        response_auth: 0x77,
        options: Options(options),
        padding_len: 0,
        security,
        command,
        destination: Destination::tcp(Address::Domain("example.com".into()), 80),
    }
}

/// The client side of `request` over `inner`; `request_bytes` stands in
/// for the sealed request header.
fn client_stream(
    request: &RequestHeader,
    inner: DuplexStream,
    request_bytes: Vec<u8>,
    metrics: Arc<VmessMetrics>,
) -> VmessStream<DuplexStream> {
    let framing = BodyFraming::new(request.security, request.options, request.command);
    let response_keys = DirectionKeys::response(request, HeaderMode::Aead);
    VmessStream::client(
        inner,
        request_bytes,
        ChunkSealer::new(framing, &DirectionKeys::request(request)),
        ChunkOpener::new(framing, &response_keys),
        ResponseDecoder::new(response_keys, HeaderMode::Aead, request.response_auth),
        metrics,
    )
}

/// A client and a server stream over one duplex of `capacity` bytes.
/// `request_bytes` stands in for the sealed request header.
fn pair(
    request: &RequestHeader,
    capacity: usize,
    request_bytes: Vec<u8>,
    metrics: Arc<VmessMetrics>,
) -> (VmessStream<DuplexStream>, VmessStream<DuplexStream>) {
    let (a, b) = duplex(capacity);
    let framing = BodyFraming::new(request.security, request.options, request.command);
    let request_keys = DirectionKeys::request(request);
    let response_keys = DirectionKeys::response(request, HeaderMode::Aead);
    let mut response = Vec::new();
    header::seal_response(
        &response_keys,
        HeaderMode::Aead,
        request.response_auth,
        0,
        &mut response,
    );
    let client = client_stream(request, a, request_bytes, metrics.clone());
    let server = VmessStream::server(
        b,
        &response,
        &[],
        ChunkSealer::new(framing, &response_keys),
        ChunkOpener::new(framing, &request_keys),
        metrics,
    );
    (client, server)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Client writes `sizes` pieces and closes; the server echoes everything
/// back and closes; the client must read exactly what it wrote.
async fn echo_through(security: BodySecurity, options: u8, capacity: usize, sizes: Vec<usize>) {
    let (client, mut server) = pair(
        &request(security, options, Command::Tcp),
        capacity,
        Vec::new(),
        Arc::new(VmessMetrics::new()),
    );
    let data: Vec<u8> = (0..sizes.iter().sum::<usize>())
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let echo = tokio::spawn(async move {
        let mut buffer = vec![0u8; 5000];
        loop {
            let n = server.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            server.write_all(&buffer[..n]).await.unwrap();
        }
        server.shutdown().await.unwrap();
    });
    let (mut reader, mut writer) = tokio::io::split(client);
    let expected = data.clone();
    let writer_task = tokio::spawn(async move {
        let mut at = 0;
        for size in sizes {
            writer.write_all(&data[at..at + size]).await.unwrap();
            at += size;
        }
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer_task.await.unwrap();
    echo.await.unwrap();
    assert_eq!(back.len(), expected.len());
    assert!(back == expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn streams_round_trip_random_writes(
        security in prop_oneof![
            Just(BodySecurity::Aes128Gcm),
            Just(BodySecurity::ChaCha20Poly1305),
            Just(BodySecurity::None)
        ],
        options in prop_oneof![Just(0x0du8), Just(0x05), Just(0x01), Just(0x00)],
        capacity in 1usize..3000,
        sizes in prop::collection::vec(1usize..150_000, 1..5),
    ) {
        runtime().block_on(echo_through(security, options, capacity, sizes));
    }
}

#[test]
fn one_byte_pipe_still_carries_full_chunks() {
    runtime().block_on(echo_through(
        BodySecurity::Aes128Gcm,
        0x0d,
        1,
        vec![200_000],
    ));
}

#[test]
fn packets_keep_their_boundaries_whatever_the_write_split() {
    runtime().block_on(async {
        let (mut client, mut server) = pair(
            &request(BodySecurity::Aes128Gcm, 0x0d, Command::Udp),
            777,
            Vec::new(),
            Arc::new(VmessMetrics::new()),
        );
        let packets: Vec<Vec<u8>> = (0..40)
            .map(|i: usize| (0..(i * 211 % 1500 + 1)).map(|b| (b ^ i) as u8).collect())
            .collect();
        // Frame them all, then write the framing in odd-sized slices.
        let mut framed = Vec::new();
        for packet in &packets {
            framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            framed.extend_from_slice(packet);
        }
        let writer = tokio::spawn(async move {
            for piece in framed.chunks(7).collect::<Vec<_>>().chunks(13) {
                for slice in piece {
                    client.write_all(slice).await.unwrap();
                }
                client.flush().await.unwrap();
            }
            // And a packet through the helper, then the echo.
            write_packet(&mut client, b"last").await.unwrap();
            let mut echoed = Vec::new();
            assert!(read_packet(&mut client, &mut echoed).await.unwrap());
            assert_eq!(echoed, b"back");
            client.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        for packet in &packets {
            assert!(read_packet(&mut server, &mut got).await.unwrap());
            assert_eq!(&got, packet);
        }
        assert!(read_packet(&mut server, &mut got).await.unwrap());
        assert_eq!(got, b"last");
        write_packet(&mut server, b"back").await.unwrap();
        assert!(!read_packet(&mut server, &mut got).await.unwrap());
        writer.await.unwrap();
    });
}

#[tokio::test(start_paused = true)]
async fn request_header_waits_100ms_for_payload_then_goes_alone() {
    let (a, mut peer) = duplex(1 << 16);
    let request = request(BodySecurity::Aes128Gcm, 0x0d, Command::Tcp);
    let mut client = client_stream(
        &request,
        a,
        b"HEADER".to_vec(),
        Arc::new(VmessMetrics::new()),
    );
    let started = tokio::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let _ = client.read(&mut byte).await;
    });
    let mut header = [0u8; 6];
    peer.read_exact(&mut header).await.unwrap();
    assert_eq!(&header, b"HEADER");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    reader.abort();
}

#[tokio::test(start_paused = true)]
async fn request_header_leaves_with_the_first_payload() {
    let (a, mut peer) = duplex(1 << 16);
    let request = request(BodySecurity::None, 0x01, Command::Tcp);
    let mut client = client_stream(
        &request,
        a,
        b"HEADER".to_vec(),
        Arc::new(VmessMetrics::new()),
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    client.write_all(b"hi").await.unwrap();
    // One write: header, then the unmasked none chunk `00 02 h i`.
    let mut wire = [0u8; 10];
    peer.read_exact(&mut wire).await.unwrap();
    assert_eq!(&wire, b"HEADER\x00\x02hi");
}

#[test]
fn a_spent_send_budget_closes_the_stream_and_is_counted() {
    runtime().block_on(async {
        let metrics = Arc::new(VmessMetrics::new());
        let (mut client, mut server) = pair(
            &request(BodySecurity::Aes128Gcm, 0x05, Command::Tcp),
            1 << 20,
            Vec::new(),
            metrics.clone(),
        );
        let watch = client.budget_watch();
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            let mut total = 0usize;
            while let Ok(n) = server.read(&mut sink).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        for _ in 0..DATA_CHUNK_BUDGET {
            client.write_all(b"x").await.unwrap();
        }
        assert_eq!(client.remaining_chunks(), 0);
        assert_eq!(watch.remaining_chunks(), 0);
        assert!(watch.near_budget());
        let error = client.write_all(b"y").await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(metrics.send_budget_exhausted.load(Ordering::Relaxed), 1);
        // The end chunk still goes out cleanly with the reserved nonce.
        client.shutdown().await.unwrap();
        drop(client);
        assert_eq!(drain.await.unwrap(), DATA_CHUNK_BUDGET as usize);
    });
}
