//! Virtual hosts through one public port: a Rayback portal sniffs the
//! HTTP `Host` and the TLS server name on its one public dokodemo-door
//! port and routes each name to the bridge that serves it, with real
//! processes:
//!
//! ```text
//!                                                                    ┌══ tunnel a.tunnel ══▶ bridge A ─▶ freedom (redirect) ─▶ site A (HTTP or TLS)
//! client ─▶ portal :public (dokodemo-door, sniffing http+tls) ─▶ router
//!                                                                    └══ tunnel b.tunnel ══▶ bridge B ─▶ freedom (redirect) ─▶ site B (HTTP or TLS)
//!            portal :tunnel (VMess) ◀═════ dialled by both bridges ═════╝
//! ```
//!
//! `a.example` goes to portal `portal-a` (bridge A's tunnels), `b.example`
//! to `portal-b`; any other name to the first outbound, a blackhole. Each
//! site answers plain HTTP, or TLS with its own certificate (for its own
//! name only) when the first byte is a TLS record: the TLS passes through
//! the portal and the tunnel untouched, and the client verifies the
//! certificate, so an HTTPS request that reached the wrong site fails.
//! The bridges are Rayback, or the real v2ray 4.34.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bridge_binary, portal_binary, start, Kind};
use rayback_testkit::free_port;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const READY_LIMIT: Duration = Duration::from_secs(30);

/// rustls with ring, as in Rayback (crates/transport/src/tls.rs): rustls
/// 0.23.48 marks ring's provider deprecated for lacking post-quantum key
/// exchange, which V2Ray 4.34's TLS lacks too.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A site's certificate, for `name` only.
struct Certificate {
    der: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

fn certificate(name: &str) -> Certificate {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    Certificate {
        der: generated.cert.der().clone(),
        key: generated.signing_key.serialize_der(),
    }
}

/// Reads an HTTP/1 head and answers `"<name> <scheme> <path>"`, then closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, name: &str, scheme: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("?").to_owned();
    let body = format!("{name} {scheme} {path}");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A site on 127.0.0.1: TLS with `certificate` when the first byte is a
/// TLS handshake record, plain HTTP otherwise.
async fn site(name: &'static str, certificate: &Certificate) -> SocketAddr {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certificate.key.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.der.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(REQUEST_TIMEOUT, socket.peek(&mut first)).await;
                if !matches!(peeked, Ok(Ok(1))) {
                    return;
                }
                if first[0] == 0x16 {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(socket)).await
                    {
                        answer(tls, name, "https").await;
                    }
                } else {
                    answer(socket, name, "http").await;
                }
            });
        }
    });
    addr
}

fn portal_config(public: u16, tunnel: u16) -> String {
    format!(
        r#"{{
  "reverse": {{"portals": [
    {{"tag": "portal-a", "domain": "a.tunnel"}},
    {{"tag": "portal-b", "domain": "b.tunnel"}}
  ]}},
  "inbounds": [
    {{"tag": "public", "listen": "127.0.0.1", "port": {public}, "protocol": "dokodemo-door",
      "settings": {{"address": "127.0.0.1", "port": 443, "network": "tcp"}},
      "sniffing": {{"enabled": true, "destOverride": ["http", "tls"]}}}},
    {{"tag": "interconn", "listen": "127.0.0.1", "port": {tunnel}, "protocol": "vmess",
      "settings": {{"clients": [{{"id": "{ID}"}}]}}}}
  ],
  "outbounds": [{{"tag": "nowhere", "protocol": "blackhole"}}],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["interconn"], "domain": ["full:a.tunnel"], "outboundTag": "portal-a"}},
    {{"type": "field", "inboundTag": ["interconn"], "domain": ["full:b.tunnel"], "outboundTag": "portal-b"}},
    {{"type": "field", "inboundTag": ["public"], "domain": ["full:a.example"], "outboundTag": "portal-a"}},
    {{"type": "field", "inboundTag": ["public"], "domain": ["full:b.example"], "outboundTag": "portal-b"}}
  ]}}
}}"#
    )
}

/// A bridge for `domain`: its tunnels to the portal, everything the portal
/// sends to `site`.
fn bridge_config(domain: &str, tunnel: u16, site: SocketAddr) -> String {
    format!(
        r#"{{
  "reverse": {{"bridges": [{{"tag": "bridge", "domain": "{domain}"}}]}},
  "outbounds": [
    {{"tag": "site", "protocol": "freedom", "settings": {{"redirect": "{site}"}}}},
    {{"tag": "interconn", "protocol": "vmess",
      "settings": {{"vnext": [{{"address": "127.0.0.1", "port": {tunnel}, "users": [{{"id": "{ID}"}}]}}]}}}}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["bridge"], "domain": ["full:{domain}"], "outboundTag": "interconn"}},
    {{"type": "field", "inboundTag": ["bridge"], "outboundTag": "site"}}
  ]}}
}}"#
    )
}

/// `GET path` for `host` through `public`, over TLS (verified, SNI =
/// `host`) when `tls` is given; the body.
async fn get(
    public: SocketAddr,
    host: &str,
    path: &str,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let socket = TcpStream::connect(public).await?;
        let mut response = Vec::new();
        match tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
                let mut stream = connector.connect(name, socket).await?;
                stream.write_all(request.as_bytes()).await?;
                stream.read_to_end(&mut response).await?;
            }
            None => {
                let mut socket = socket;
                socket.write_all(request.as_bytes()).await?;
                socket.read_to_end(&mut response).await?;
            }
        }
        anyhow::Ok(response)
    })
    .await??;
    let text = String::from_utf8_lossy(&response);
    Ok(text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_public_port_two_rayback_bridges_by_host_and_by_sni() {
    virtual_hosts(Kind::Rayback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_public_port_two_v2ray_bridges_by_host_and_by_sni() {
    if !rayback_testkit::v2ray_path().exists() {
        eprintln!("skipped: no v2ray binary");
        return;
    }
    virtual_hosts(Kind::V2Ray).await;
}

/// The Rayback portal with two bridges of `bridges`' kind.
async fn virtual_hosts(bridges: Kind) {
    let certificates = [certificate("a.example"), certificate("b.example")];
    let site_a = site("site-a", &certificates[0]).await;
    let site_b = site("site-b", &certificates[1]).await;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots.add(certificate.der.clone()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));

    let (public_port, tunnel) = (free_port(), free_port());
    let _portal = start(
        Kind::Rayback,
        portal_binary(),
        &portal_config(public_port, tunnel),
        &[public_port, tunnel],
    )
    .await
    .unwrap();
    let _bridge_a = start(
        bridges,
        bridge_binary(),
        &bridge_config("a.tunnel", tunnel, site_a),
        &[],
    )
    .await
    .unwrap();
    let _bridge_b = start(
        bridges,
        bridge_binary(),
        &bridge_config("b.tunnel", tunnel, site_b),
        &[],
    )
    .await
    .unwrap();
    let public = SocketAddr::from(([127, 0, 0, 1], public_port));

    // Until both bridges' tunnels are up, wait (bounded) for an answer
    // from each site.
    let started = Instant::now();
    for (host, want) in [
        ("a.example", "site-a http /ready"),
        ("b.example", "site-b http /ready"),
    ] {
        loop {
            match get(public, host, "/ready", None).await {
                Ok(body) if body == want => break,
                other => assert!(
                    started.elapsed() < READY_LIMIT,
                    "{host}: no answer within {READY_LIMIT:?}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "{bridges:?} bridges: both sites answer after {:?}",
        started.elapsed()
    );

    for round in 0..4 {
        for (host, name) in [("a.example", "site-a"), ("b.example", "site-b")] {
            let path = format!("/round{round}");
            let body = get(public, host, &path, None).await.unwrap();
            assert_eq!(body, format!("{name} http {path}"), "http {host}");
            let body = get(public, host, &path, Some(&connector))
                .await
                .unwrap_or_else(|error| panic!("https {host}: {error:#}"));
            assert_eq!(body, format!("{name} https {path}"), "https {host}");
        }
    }
    // A name no rule knows goes to the blackhole: no answer.
    let body = get(public, "c.example", "/", None)
        .await
        .unwrap_or_default();
    assert_eq!(body, "", "c.example reached a site");
}
