#![doc = include_str!("../README.md")]

pub mod admission;
pub mod conn;
pub mod http;
pub mod proxy;
pub mod socket;
pub mod tls;
pub mod vnext;
pub mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rayback_core::{Address, HttpDisguise, StreamSettings, TransportNetwork, WsSettings};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

pub use conn::{Base, Conn, Secured};
pub use tls::TlsError;

/// How connections of one inbound or outbound are carried.
pub struct Transport {
    ws: Option<WsSettings>,
    http: Option<HttpDisguise>,
    tls_client: Option<ClientTls>,
    tls_server: Option<TlsAcceptor>,
    accept_proxy_protocol: bool,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transport").field(&self.describe()).finish()
    }
}

struct ClientTls {
    connector: TlsConnector,
    server_name: Option<String>,
}

/// A connection a listener accepted, after its transport handshake.
pub struct Accepted {
    pub conn: Conn,
    /// Who the connection is from: the socket's peer, or the address a
    /// PROXY header or an `X-Forwarded-For` header named.
    pub source: SocketAddr,
}

impl Transport {
    /// Plain TCP.
    pub fn tcp() -> Transport {
        Transport {
            ws: None,
            http: None,
            tls_client: None,
            tls_server: None,
            accept_proxy_protocol: false,
        }
    }

    /// The dialling side of `settings` (PROXY protocol ignored, as in
    /// V2Ray).
    pub fn client(settings: &StreamSettings) -> Result<Transport, TlsError> {
        let ws = ws_settings(settings);
        let tls_client = match &settings.tls {
            Some(tls) => {
                let config = tls::client_config(tls, under(&ws))?;
                Some(ClientTls {
                    connector: TlsConnector::from(Arc::new(config)),
                    server_name: tls.server_name.clone(),
                })
            }
            None => None,
        };
        Ok(Transport {
            ws,
            http: settings.http_disguise.clone(),
            tls_client,
            ..Transport::tcp()
        })
    }

    /// The listening side of `settings`.
    pub fn server(settings: &StreamSettings) -> Result<Transport, TlsError> {
        let ws = ws_settings(settings);
        let tls_server = match &settings.tls {
            Some(tls) => Some(TlsAcceptor::from(Arc::new(tls::server_config(
                tls,
                under(&ws),
            )?))),
            None => None,
        };
        Ok(Transport {
            ws,
            http: settings.http_disguise.clone(),
            tls_server,
            accept_proxy_protocol: settings.accept_proxy_protocol,
            ..Transport::tcp()
        })
    }

    /// Connects to `address:port` (bounded by `timeout` for the TCP
    /// connect and again for the TLS and WebSocket handshakes).
    pub async fn dial(&self, address: &Address, port: u16, timeout: Duration) -> io::Result<Conn> {
        let tcp = bounded(timeout, "connecting", address, port, connect(address, port)).await?;
        socket::tune(&tcp);
        if self.is_plain_tcp() {
            return Ok(Conn::Plain(Secured::Tcp(Base::new(tcp, Vec::new()))));
        }
        // Boxed: the handshakes' state is large, and a caller that holds
        // this future's space for a connection's life (a relay awaiting
        // after its dial) should not pay it for plain TCP.
        let handshake = Box::pin(self.handshake_client(tcp, address, port));
        bounded(timeout, "the transport handshake", address, port, handshake).await
    }

    async fn handshake_client(
        &self,
        tcp: TcpStream,
        address: &Address,
        port: u16,
    ) -> io::Result<Conn> {
        let base = Base::new(tcp, Vec::new());
        let secured = match &self.tls_client {
            Some(tls) => {
                let name = server_name(tls.server_name.as_deref(), address)?;
                let stream = tls.connector.connect(name, base).await.map_err(|error| {
                    context(error, &format!("TLS handshake with {address}:{port}"))
                })?;
                Secured::Tls(Box::new(TlsStream::Client(stream)))
            }
            None => Secured::Tcp(base),
        };
        if let Some(disguise) = &self.http {
            return Ok(Conn::Http(Box::new(http::connect(
                secured,
                &disguise.request,
            ))));
        }
        match &self.ws {
            Some(ws) => {
                let tls = self.tls_client.is_some();
                Ok(Conn::Ws(Box::new(
                    ws::connect(secured, ws, address, port, tls).await?,
                )))
            }
            None => Ok(Conn::Plain(secured)),
        }
    }

    /// Runs the listening side's handshakes on an accepted socket. The
    /// caller bounds the time (the inbound's handshake policy).
    pub async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> io::Result<Accepted> {
        socket::tune(&tcp);
        if self.is_plain_tcp() {
            return Ok(Accepted {
                conn: Conn::Plain(Secured::Tcp(Base::new(tcp, Vec::new()))),
                source: peer,
            });
        }
        // Boxed for the same reason as in `dial`: a connection's task keeps
        // the space of its handshake's future for its whole life.
        Box::pin(self.accept_layers(tcp, peer)).await
    }

    async fn accept_layers(&self, mut tcp: TcpStream, peer: SocketAddr) -> io::Result<Accepted> {
        let mut source = peer;
        let mut prefix = Vec::new();
        if self.accept_proxy_protocol {
            let (named, rest) = proxy::read_header(&mut tcp)
                .await
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            if let Some(named) = named {
                source = named;
            }
            prefix = rest;
        }
        let base = Base::new(tcp, prefix);
        let secured = match &self.tls_server {
            Some(acceptor) => {
                let stream = acceptor
                    .accept(base)
                    .await
                    .map_err(|error| context(error, "TLS handshake"))?;
                Secured::Tls(Box::new(TlsStream::Server(stream)))
            }
            None => Secured::Tcp(base),
        };
        if let Some(disguise) = &self.http {
            let disguised = http::accept(secured, &disguise.request, &disguise.response).await?;
            return Ok(Accepted {
                conn: Conn::Http(Box::new(disguised)),
                source,
            });
        }
        let conn = match &self.ws {
            Some(settings) => {
                let (ws, forwarded) = ws::accept(secured, settings).await?;
                if let Some(forwarded) = forwarded {
                    source = forwarded;
                }
                Conn::Ws(Box::new(ws))
            }
            None => Conn::Plain(secured),
        };
        Ok(Accepted { conn, source })
    }

    /// The layers, for logs: `tcp`, `tls`, `ws`, `ws+tls`, with `+proxy`
    /// when a PROXY header is expected.
    pub fn describe(&self) -> String {
        let tls = self.tls_client.is_some() || self.tls_server.is_some();
        let mut text = match (self.ws.is_some(), tls) {
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "ws+tls",
        }
        .to_owned();
        if self.http.is_some() {
            text.push_str("+http");
        }
        if self.accept_proxy_protocol {
            text.push_str("+proxy");
        }
        text
    }

    /// No TLS, no WebSocket, no PROXY header: the socket is the stream.
    pub fn is_plain_tcp(&self) -> bool {
        self.ws.is_none()
            && self.http.is_none()
            && self.tls_client.is_none()
            && self.tls_server.is_none()
            && !self.accept_proxy_protocol
    }
}

fn ws_settings(settings: &StreamSettings) -> Option<WsSettings> {
    match &settings.network {
        TransportNetwork::Tcp => None,
        TransportNetwork::WebSocket(ws) => Some(ws.clone()),
    }
}

fn under(ws: &Option<WsSettings>) -> tls::Under {
    if ws.is_some() {
        tls::Under::WebSocket
    } else {
        tls::Under::Tcp
    }
}

async fn connect(address: &Address, port: u16) -> io::Result<TcpStream> {
    match address {
        Address::Domain(domain) => TcpStream::connect((domain.as_str(), port)).await,
        other => match other.ip() {
            Some(ip) => TcpStream::connect((ip, port)).await,
            None => Err(io::Error::other("no address to dial")),
        },
    }
}

/// The name a TLS client sends and verifies: `serverName`, else the
/// dialled domain or IP.
fn server_name(configured: Option<&str>, address: &Address) -> io::Result<ServerName<'static>> {
    let text = match (configured, address) {
        (Some(name), _) => name.to_owned(),
        (None, Address::Domain(domain)) => domain.clone(),
        (None, other) => match other.ip() {
            Some(ip) => return Ok(ServerName::IpAddress(ip.into())),
            None => return Err(io::Error::other("no server name for TLS")),
        },
    };
    ServerName::try_from(text.clone()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} is not a valid TLS server name"),
        )
    })
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    address: &Address,
    port: u16,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, future).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} with {address}:{port} took over {timeout:?}"),
        )
    })?
}

fn context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
