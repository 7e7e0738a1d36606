//! Rayback client against Rayback server, in process:
//!
//! ```text
//! test ──VmessOutbound::connect──VMess──▶ VmessInbound ──RecordingDispatch──▶ echo (TCP or UDP)
//! ```
//!
//! Covers what v2ray interop does not pin: the Mux command's session, the
//! session's user and tag for legacy users, and both securities' UDP.

mod common;

use std::time::Duration;

use common::*;
use rayback_core::packet::{read_packet, write_packet};
use rayback_core::{Address, Destination, Outbound, Session};
use rayback_testkit::{echo_server, seeded_bytes};
use rayback_vmess::Security;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_every_security_and_header() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await.unwrap();
        let inbound = start_inbound(Duration::from_secs(5)).await.unwrap();
        for security in [
            Security::Aes128Gcm,
            Security::ChaCha20Poly1305,
            Security::None,
            Security::Auto,
        ] {
            for legacy in [false, true] {
                let client = rayback_outbound(security, legacy, inbound.addr);
                let mut stream = client
                    .connect(&Session::new(Destination::from(echo)))
                    .await
                    .unwrap();
                let data = seeded_bytes(9, 1 << 20);
                let (mut reader, mut writer) = tokio::io::split(&mut stream);
                let sent = data.clone();
                let (back, ()) = tokio::join!(
                    async {
                        let mut back = Vec::new();
                        reader.read_to_end(&mut back).await.unwrap();
                        back
                    },
                    async {
                        writer.write_all(&sent).await.unwrap();
                        writer.shutdown().await.unwrap();
                    }
                );
                assert!(back == data, "{security:?} legacy={legacy}");
            }
        }
        let sessions = inbound.dispatch.sessions();
        assert_eq!(sessions.len(), 8);
        for (i, session) in sessions.iter().enumerate() {
            let user = session.user.as_ref().unwrap();
            let (email, level) = if i % 2 == 1 {
                ("legacy@rayback", 1)
            } else {
                ("aead@rayback", 0)
            };
            assert_eq!((user.email.as_str(), user.level), (email, level));
            assert_eq!(session.inbound_tag.as_ref().unwrap().as_str(), "vmess-in");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_destination_travels_as_command_3() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let inbound = start_inbound(Duration::from_secs(5)).await.unwrap();
        let client = rayback_outbound(Security::Aes128Gcm, false, inbound.addr);
        let mux = Destination::tcp(Address::Domain("v1.mux.cool".into()), 0);
        let mut stream = client.connect(&Session::new(mux.clone())).await.unwrap();
        stream.write_all(b"mux frames").await.unwrap();
        stream.flush().await.unwrap();
        // The test dispatcher cannot reach a domain and closes; the
        // session it saw is what matters.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        let sessions = inbound.dispatch.sessions();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].destination, mux);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_keeps_datagrams() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let echo = udp_echo_server().await.unwrap();
        let inbound = start_inbound(Duration::from_secs(5)).await.unwrap();
        for security in [
            Security::Aes128Gcm,
            Security::ChaCha20Poly1305,
            Security::None,
        ] {
            let client = rayback_outbound(security, false, inbound.addr);
            let session = Session::new(Destination::udp(echo.ip().into(), echo.port()));
            let mut stream = client.connect(&session).await.unwrap();
            let mut packet = Vec::new();
            for i in 0..30usize {
                let datagram = seeded_bytes(i as u64, 1 + i * 331 % 8000);
                write_packet(&mut stream, &datagram).await.unwrap();
                assert!(read_packet(&mut stream, &mut packet).await.unwrap());
                assert_eq!(packet, datagram, "{security:?} datagram {i}");
            }
        }
    })
    .await
    .expect("test timed out");
}
