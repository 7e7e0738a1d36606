//! The resolver against real DNS servers: dnsmasq instances started as
//! child processes on 127.0.0.1, each answering a few names its own way.
//!
//! ```text
//! test ──DnsResolver──▶ dnsmasq A (127.0.0.1:PA)   site.test → 127.0.0.9 …
//!                  └──▶ dnsmasq B (127.0.0.1:PB)   site.test → 127.0.0.10 …
//!                  └──▶ 127.0.0.1:PD               nothing listens
//! ```
//!
//! Skipped (with a message) when dnsmasq is not installed. The DoH test
//! runs its own RFC 8484 server in the test (HTTP/2 over rustls, answers
//! built with hickory-proto) and needs no dnsmasq.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_resolver::proto::op::{Message, MessageType, OpCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use rayback_app::dns::RoutingRules;
use rayback_core::{
    DnsSettings, HostMapping, HostValue, NameServerAddress, NameServerSettings, ResolveStrategy,
};
use rayback_dns::DnsResolver;
use rayback_routing::geodata::{encode, DomainKind, GeoDomain};
use rayback_routing::AssetLocator;
use rayback_testkit::tls::SelfSigned;
use rayback_testkit::{free_port, wait_for_port, TempDir};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The bound of every test.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// A dnsmasq child on 127.0.0.1, killed (by PID) when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq_path() -> Option<PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Starts dnsmasq answering `records` (`name`, `address`): `name` and its
/// subdomains; every other name gets no answer from it.
async fn dnsmasq(path: &Path, records: &[(&str, &str)]) -> Result<Dnsmasq> {
    let port = free_port();
    let mut command = Command::new(path);
    command.args([
        "--no-daemon",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--cache-size=0",
    ]);
    command.arg(format!("--port={port}"));
    for (name, address) in records {
        command.arg(format!("--address=/{name}/{address}"));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    let server = Dnsmasq { child, port };
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    Ok(server)
}

fn server(port: u16) -> NameServerSettings {
    NameServerSettings {
        address: NameServerAddress::Ip(IpAddr::from([127, 0, 0, 1])),
        port,
        domains: Vec::new(),
        expect_ips: Vec::new(),
        client_ip: None,
    }
}

fn rules() -> RoutingRules {
    RoutingRules {
        assets: AssetLocator::with_dirs(Vec::new()),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a test address")
}

async fn lookup(resolver: &DnsResolver, name: &str, strategy: ResolveStrategy) -> Vec<IpAddr> {
    let mut ips = resolver
        .lookup(name, strategy)
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    ips.sort();
    ips
}

/// Runs `body` with the dnsmasq path, or prints why it is skipped.
async fn with_dnsmasq<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let Some(path) = dnsmasq_path() else {
        println!("skipped: dnsmasq not installed");
        return Ok(());
    };
    tokio::time::timeout(TEST_LIMIT, body(path))
        .await
        .context("the test took too long")?
}

#[tokio::test]
async fn a_server_by_ip_and_port_answers() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(&path, &[("site.test", "127.0.0.9")]).await?;
        let settings = DnsSettings {
            servers: vec![server(a.port)],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::new(&settings, &rules())?;
        assert_eq!(
            lookup(&resolver, "site.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.9")]
        );
        assert_eq!(
            lookup(&resolver, "www.site.test.", ResolveStrategy::UseIpv4).await,
            [ip("127.0.0.9")]
        );
        // A name the server does not know ends the query with an error.
        assert!(resolver
            .lookup("other.example", ResolveStrategy::UseIp)
            .await
            .is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn matching_domains_pick_the_server_first() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(
            &path,
            &[("site.test", "127.0.0.9"), ("prio.test", "127.0.0.9")],
        )
        .await?;
        let b = dnsmasq(
            &path,
            &[("site.test", "127.0.0.10"), ("prio.test", "127.0.0.10")],
        )
        .await?;
        let mut second = server(b.port);
        second.domains = vec!["domain:prio.test".to_owned()];
        let settings = DnsSettings {
            servers: vec![server(a.port), second],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::new(&settings, &rules())?;
        assert_eq!(
            lookup(&resolver, "x.prio.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.10")]
        );
        assert_eq!(
            lookup(&resolver, "site.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.9")]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn expect_ips_filter_falls_through_to_the_next_server() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(
            &path,
            &[("site.test", "127.0.0.9"), ("kept.test", "127.0.8.1")],
        )
        .await?;
        let b = dnsmasq(&path, &[("site.test", "127.0.0.10")]).await?;
        let mut first = server(a.port);
        first.expect_ips = vec!["127.0.8.0/24".to_owned()];
        let settings = DnsSettings {
            servers: vec![first, server(b.port)],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::new(&settings, &rules())?;
        // A's answer is outside expectIps: B answers.
        assert_eq!(
            lookup(&resolver, "site.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.10")]
        );
        // Inside expectIps: A's answer stands.
        assert_eq!(
            lookup(&resolver, "kept.test", ResolveStrategy::UseIp).await,
            [ip("127.0.8.1")]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_dead_server_falls_to_the_next_in_bounded_time() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(&path, &[("site.test", "127.0.0.9")]).await?;
        let dead = free_port();
        let settings = DnsSettings {
            servers: vec![server(dead), server(a.port)],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::new(&settings, &rules())?;
        // Bounded by rayback_dns::QUERY_TIMEOUT per server (and TEST_LIMIT).
        assert_eq!(
            lookup(&resolver, "site.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.9")]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_strategy_picks_a_or_aaaa() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(
            &path,
            &[("both.test", "127.0.0.7"), ("both.test", "fd00::7")],
        )
        .await?;
        let settings = DnsSettings {
            servers: vec![server(a.port)],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::new(&settings, &rules())?;
        assert_eq!(
            lookup(&resolver, "both.test", ResolveStrategy::UseIpv4).await,
            [ip("127.0.0.7")]
        );
        assert_eq!(
            lookup(&resolver, "both.test", ResolveStrategy::UseIpv6).await,
            [ip("fd00::7")]
        );
        assert_eq!(
            lookup(&resolver, "both.test", ResolveStrategy::UseIp).await,
            [ip("127.0.0.7"), ip("fd00::7")]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn hosts_of_every_prefix_answer_before_the_servers() -> Result<()> {
    with_dnsmasq(|path| async move {
        let a = dnsmasq(
            &path,
            &[("site.test", "127.0.0.9"), ("h.test", "127.0.0.99")],
        )
        .await?;
        let assets = TempDir::new("dns-assets")?;
        let site = |value: &str| GeoDomain {
            kind: DomainKind::Full,
            value: value.to_owned(),
            attributes: Vec::new(),
        };
        std::fs::write(
            assets.path.join("geosite.dat"),
            encode::site_list(&[("GEO", vec![site("geo.test")])]),
        )?;
        std::fs::write(
            assets.path.join("mine.dat"),
            encode::site_list(&[("LIST", vec![site("ext.test")])]),
        )?;
        let host = |rule: &str, value: HostValue| HostMapping {
            rule: rule.to_owned(),
            value,
        };
        let settings = DnsSettings {
            servers: vec![server(a.port)],
            hosts: vec![
                host("domain:h.test", HostValue::Ip(ip("127.1.0.1"))),
                host("full:f.test", HostValue::Ip(ip("127.1.0.2"))),
                host("keyword:kwd", HostValue::Ip(ip("127.1.0.3"))),
                host("regexp:^re[0-9]+\\.test$", HostValue::Ip(ip("127.1.0.4"))),
                // What config makes of `dotless:dl`.
                host("regexp:^[^.]*dl[^.]*$", HostValue::Ip(ip("127.1.0.5"))),
                host("geosite:geo", HostValue::Ip(ip("127.1.0.6"))),
                host("ext:mine.dat:list", HostValue::Ip(ip("fd00::8"))),
                host("full:alias.test", HostValue::Domain("site.test".to_owned())),
                host("full:chain.test", HostValue::Domain("f.test".to_owned())),
                host("full:local.test", HostValue::Ip(ip("127.0.0.1"))),
            ],
            ..DnsSettings::default()
        };
        let rules = RoutingRules {
            assets: AssetLocator::with_dirs(vec![assets.path.clone()]),
        };
        let resolver = DnsResolver::new(&settings, &rules)?;
        let any = ResolveStrategy::UseIp;
        assert_eq!(
            lookup(&resolver, "www.h.test", any).await,
            [ip("127.1.0.1")]
        );
        assert_eq!(lookup(&resolver, "h.test", any).await, [ip("127.1.0.1")]);
        assert_eq!(lookup(&resolver, "f.test", any).await, [ip("127.1.0.2")]);
        assert_eq!(
            lookup(&resolver, "a.kwd.example", any).await,
            [ip("127.1.0.3")]
        );
        assert_eq!(lookup(&resolver, "re42.test", any).await, [ip("127.1.0.4")]);
        assert_eq!(lookup(&resolver, "xdlx", any).await, [ip("127.1.0.5")]);
        assert_eq!(lookup(&resolver, "geo.test", any).await, [ip("127.1.0.6")]);
        assert_eq!(lookup(&resolver, "ext.test", any).await, [ip("fd00::8")]);
        // A domain value: that name is asked of the servers instead.
        assert_eq!(
            lookup(&resolver, "alias.test", any).await,
            [ip("127.0.0.9")]
        );
        // … or answered by the hosts themselves.
        assert_eq!(
            lookup(&resolver, "chain.test", any).await,
            [ip("127.1.0.2")]
        );
        // 127.0.0.1 brings ::1, as in 4.34; the strategy filters.
        assert_eq!(
            lookup(&resolver, "local.test", any).await,
            [ip("127.0.0.1"), ip("::1")]
        );
        assert_eq!(
            lookup(&resolver, "local.test", ResolveStrategy::UseIpv6).await,
            [ip("::1")]
        );
        // Recorded without an address of the wanted family: an error, the
        // servers are not asked.
        assert!(resolver
            .lookup("f.test", ResolveStrategy::UseIpv6)
            .await
            .is_err());
        // Not in the hosts: the server answers.
        assert_eq!(lookup(&resolver, "site.test", any).await, [ip("127.0.0.9")]);
        Ok(())
    })
    .await
}

/// rustls with ring, as the workspace builds it (rustls marks ring's
/// provider deprecated for lacking post-quantum key exchange; see
/// `crates/transport/src/tls.rs`).
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An RFC 8484 server on 127.0.0.1 (HTTP/2 over TLS with `cert`) that
/// answers every A question with `answer` and every other with nothing.
async fn doh_server(cert: &SelfSigned, answer: Ipv4Addr) -> Result<u16> {
    let certs = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the test certificate")?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).context("the test key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(answer_doh(request, respond, answer));
                }
            });
        }
    });
    Ok(port)
}

async fn answer_doh(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    answer: Ipv4Addr,
) {
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let Ok(query) = Message::from_vec(&data) else {
        return;
    };
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .set_recursion_available(true);
    for question in query.queries() {
        response.add_query(question.clone());
        if question.query_type() == RecordType::A {
            response.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(answer)),
            ));
        }
    }
    let Ok(bytes) = response.to_vec() else {
        return;
    };
    let Ok(head) = http::Response::builder()
        .status(200)
        .header("content-type", "application/dns-message")
        .header("content-length", bytes.len())
        .body(())
    else {
        return;
    };
    if let Ok(mut send) = respond.send_response(head, false) {
        let _ = send.send_data(bytes::Bytes::from(bytes), true);
    }
}

#[tokio::test]
async fn doh_answers_over_https() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let cert = SelfSigned::localhost()?;
        let port = doh_server(&cert, Ipv4Addr::new(127, 0, 0, 53)).await?;
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()) {
            roots.add(der?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut doh = server(0);
        doh.address =
            NameServerAddress::HttpsLocal(format!("https+local://127.0.0.1:{port}/dns-query"));
        let settings = DnsSettings {
            servers: vec![doh],
            ..DnsSettings::default()
        };
        let resolver = DnsResolver::with_tls(&settings, &rules(), Some(tls))?;
        assert_eq!(
            lookup(&resolver, "doh.test", ResolveStrategy::UseIpv4).await,
            [ip("127.0.0.53")]
        );
        anyhow::Ok(())
    })
    .await
    .context("the test took too long")?
}
