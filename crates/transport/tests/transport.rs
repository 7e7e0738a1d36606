//! A `Transport` client against a `Transport` server on loopback, every
//! combination of layers, plus the errors a user meets: a key that does
//! not match its certificate, a wrong server name, plain bytes on a TLS
//! port, a PROXY header and an `X-Forwarded-For` naming the visitor.
//!
//! (Interop with the real v2ray is in `crates/app/tests/transport_interop.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use rayback_core::{
    Address, HttpDisguise, Pem, StreamSettings, TlsCertificate, TlsSettings, TransportNetwork,
    WsSettings,
};
use rayback_testkit::tls::SelfSigned;
use rayback_transport::{TlsError, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

fn pem(text: &str, origin: &str) -> Pem {
    Pem {
        text: text.to_owned(),
        origin: origin.to_owned(),
        file: None,
    }
}

fn server_tls(certificate: &SelfSigned) -> TlsSettings {
    TlsSettings {
        certificates: vec![TlsCertificate {
            certificate: pem(&certificate.cert_pem, "certificate"),
            key: Some(pem(&certificate.key_pem, "key")),
        }],
        ..TlsSettings::default()
    }
}

fn client_tls(certificate: &SelfSigned, server_name: &str) -> TlsSettings {
    TlsSettings {
        server_name: Some(server_name.to_owned()),
        disable_system_root: true,
        certificates: vec![TlsCertificate {
            certificate: pem(&certificate.cert_pem, "trusted"),
            key: None,
        }],
        ..TlsSettings::default()
    }
}

/// Every combination: (ws, http disguise, tls).
fn layer_sets() -> Vec<(bool, bool, bool)> {
    let mut sets = Vec::new();
    for tls in [false, true] {
        sets.push((false, false, tls));
        sets.push((true, false, tls));
        sets.push((false, true, tls));
    }
    sets
}

fn settings(ws: bool, http: bool, tls: Option<TlsSettings>) -> StreamSettings {
    StreamSettings {
        network: if ws {
            TransportNetwork::WebSocket(WsSettings {
                path: "/t".to_owned(),
                headers: vec![("Host".to_owned(), "localhost".to_owned())],
            })
        } else {
            TransportNetwork::Tcp
        },
        tls,
        accept_proxy_protocol: false,
        http_disguise: http.then(HttpDisguise::default),
    }
}

/// Serves one connection on `listener` with `server`: echoes everything
/// back until the client ends; returns the source the transport reported
/// (an error only when the transport refused the connection).
async fn serve_one(listener: TcpListener, server: Transport) -> std::io::Result<SocketAddr> {
    let (socket, peer) = listener.accept().await?;
    let accepted = server.accept(socket, peer).await?;
    let source = accepted.source;
    let mut conn = accepted.conn;
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = conn.read(&mut buffer).await {
        if n == 0 || conn.write_all(&buffer[..n]).await.is_err() || conn.flush().await.is_err() {
            break;
        }
    }
    conn.shutdown().await.ok();
    Ok(source)
}

/// A loopback listener served once by `server` ([`serve_one`]): its
/// address and the task's outcome.
async fn listening(
    server: Transport,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<SocketAddr>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(serve_one(listener, server)))
}

#[tokio::test]
async fn every_layer_combination_carries_bytes_both_ways() {
    let certificate = SelfSigned::localhost().unwrap();
    for (ws, http, tls) in layer_sets() {
        let server =
            Transport::server(&settings(ws, http, tls.then(|| server_tls(&certificate)))).unwrap();
        let client = Transport::client(&settings(
            ws,
            http,
            tls.then(|| client_tls(&certificate, "localhost")),
        ))
        .unwrap();
        let (addr, served) = listening(server).await;
        let port = addr.port();
        let mut conn = client
            .dial(&Address::parse("127.0.0.1").unwrap(), port, TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("ws {ws} http {http} tls {tls}: {error}"));
        let data = rayback_testkit::seeded_bytes(7, 1 << 20);
        let (mut read, mut write) = tokio::io::split(&mut conn);
        let sent = data.clone();
        let writer = async move {
            write.write_all(&sent).await.unwrap();
            write.flush().await.unwrap();
        };
        let reader = async move {
            let mut got = vec![0u8; 1 << 20];
            read.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert!(got == data, "ws {ws} http {http} tls {tls}: bytes differ");
        conn.shutdown().await.unwrap();
        drop(conn);
        let source = served.await.unwrap().unwrap();
        assert!(source.ip().is_loopback());
    }
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_named() {
    let one = SelfSigned::localhost().unwrap();
    let other = SelfSigned::localhost().unwrap();
    let mut tls = server_tls(&one);
    tls.certificates[0].key = Some(pem(
        &other.key_pem,
        "inbounds[0].streamSettings.tlsSettings.certificates[0].keyFile (/etc/other.key)",
    ));
    let error = Transport::server(&settings(false, false, Some(tls))).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("/etc/other.key"), "{text}");
    assert!(text.contains("does not match"), "{text}");
}

#[test]
fn pem_without_a_certificate_or_key_is_named() {
    let one = SelfSigned::localhost().unwrap();
    let mut tls = server_tls(&one);
    tls.certificates[0].certificate = pem("not pem", "certificates[0].certificate (inline)");
    let error = Transport::server(&settings(false, false, Some(tls))).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    assert!(error.to_string().contains("certificates[0].certificate"));

    let mut tls = server_tls(&one);
    tls.certificates[0].key = Some(pem(&one.cert_pem, "certificates[0].key (inline)"));
    let error = Transport::server(&settings(false, false, Some(tls))).unwrap_err();
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
}

#[tokio::test]
async fn a_wrong_server_name_fails_the_dial_with_a_clear_error() {
    let certificate = SelfSigned::localhost().unwrap();
    let server =
        Transport::server(&settings(false, false, Some(server_tls(&certificate)))).unwrap();
    let client = Transport::client(&settings(
        false,
        false,
        Some(client_tls(&certificate, "wrong.example")),
    ))
    .unwrap();
    let (addr, served) = listening(server).await;
    let port = addr.port();
    let error = match client
        .dial(&Address::parse("127.0.0.1").unwrap(), port, TIMEOUT)
        .await
    {
        Ok(_) => panic!("a certificate for localhost passed as wrong.example"),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(text.to_lowercase().contains("name"), "{text}");
    assert!(served.await.unwrap().is_err());
}

#[tokio::test]
async fn plain_bytes_on_a_tls_port_are_refused_at_once() {
    let certificate = SelfSigned::localhost().unwrap();
    let server =
        Transport::server(&settings(false, false, Some(server_tls(&certificate)))).unwrap();
    let (addr, served) = listening(server).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let refused = tokio::time::timeout(TIMEOUT, served)
        .await
        .unwrap()
        .unwrap();
    let error = refused.unwrap_err();
    assert!(error.to_string().contains("TLS handshake"), "{error}");
}

#[tokio::test]
async fn a_proxy_header_and_x_forwarded_for_name_the_visitor() {
    // PROXY v1 before a plain TCP stream.
    let mut proxied = settings(false, false, None);
    proxied.accept_proxy_protocol = true;
    let server = Transport::server(&proxied).unwrap();
    let (addr, served) = listening(server).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 40001 443\r\nhello")
        .await
        .unwrap();
    let mut echoed = [0u8; 5];
    socket.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    drop(socket);
    let source = served.await.unwrap().unwrap();
    assert_eq!(source, "203.0.113.9:40001".parse().unwrap());

    // A connection without the header on such a listener is refused.
    let server = Transport::server(&proxied).unwrap();
    let (addr, served) = listening(server).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"hello, no header here\r\n")
        .await
        .unwrap();
    drop(socket);
    assert!(served.await.unwrap().is_err());

    // X-Forwarded-For on a WebSocket upgrade.
    let server = Transport::server(&settings(true, false, None)).unwrap();
    let (addr, served) = listening(server).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            b"GET /t HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              X-Forwarded-For: 198.51.100.20, 10.0.0.1\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    drop(socket);
    let source = served.await.unwrap().unwrap();
    assert_eq!(source.ip().to_string(), "198.51.100.20");
}

#[tokio::test]
async fn a_websocket_upgrade_to_another_path_gets_404() {
    let server = Transport::server(&settings(true, false, None)).unwrap();
    let (addr, served) = listening(server).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            b"GET /other HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(served.await.unwrap().is_err());
}
