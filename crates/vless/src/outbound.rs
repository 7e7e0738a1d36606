//! [`VlessOutbound`]: the VLESS client. It dials a `vnext` server through
//! its transport (TCP, TLS, WebSocket: `rayback-transport`), writes a
//! request header as a 4.34 client does, and returns the connection as a
//! [`VlessStream`].
//!
//! | choice | as 4.34 |
//! |---|---|
//! | command | 0x03 Mux for TCP to `v1.mux.cool` (no address), 0x02 for UDP sessions, 0x01 otherwise |
//! | addons | empty |
//! | servers | round robin over `vnext` (or the one the session names: a bridge's tunnel to each portal), a random user of the server; up to 5 attempts with 0/200/400/600/800 ms pauses |
//! | header flush | with the first payload, or 100 ms after connecting once the stream is read, or on flush |
//! | response header | read on the first read |
//!
//! UDP sessions are packet streams ([`rayback_core::packet`]), whose
//! framing is VLESS's own: they pass through unchanged.

use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rayback_core::{Address, Outbound, Session, Stream};
use rayback_transport::{Conn, Transport};

use crate::header::RequestHeader;
use crate::metrics::{increment, VlessMetrics};
use crate::stream::VlessStream;
use crate::VlessError;

/// Connection attempts per `connect`, and the pause before each.
const ATTEMPT_PAUSES_MS: [u64; 5] = [0, 200, 400, 600, 800];

/// A user of a `vnext` server (`encryption` is always `none`).
#[derive(Clone, PartialEq, Eq)]
pub struct VlessUser {
    pub id: [u8; 16],
    pub level: u32,
    pub email: String,
}

impl std::fmt::Debug for VlessUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ID is the only secret VLESS has: never in logs whole.
        f.debug_struct("VlessUser")
            .field("id", &format_args!("{:02x}{:02x}…", self.id[0], self.id[1]))
            .field("level", &self.level)
            .field("email", &self.email)
            .finish()
    }
}

/// One `vnext` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessServer {
    pub address: Address,
    pub port: u16,
    pub users: Vec<VlessUser>,
}

/// Everything a VLESS outbound needs.
#[derive(Clone, Debug)]
pub struct VlessOutboundSettings {
    pub servers: Vec<VlessServer>,
    /// Bound on each connection attempt (TCP and the transport's
    /// handshakes).
    pub connect_timeout: Duration,
    /// What carries the connections (`streamSettings`).
    pub transport: Arc<Transport>,
}

/// A VLESS client.
pub struct VlessOutbound {
    servers: Vec<VlessServer>,
    next_server: AtomicUsize,
    connect_timeout: Duration,
    transport: Arc<Transport>,
    metrics: Arc<VlessMetrics>,
}

impl VlessOutbound {
    /// Checks the config: at least one server, each with a user.
    pub fn new(
        config: VlessOutboundSettings,
        metrics: Arc<VlessMetrics>,
    ) -> Result<VlessOutbound, VlessError> {
        if config.servers.is_empty() {
            return Err(VlessError::NoServer);
        }
        if let Some(server) = config.servers.iter().find(|server| server.users.is_empty()) {
            return Err(VlessError::NoUser(format!(
                "{}:{}",
                server.address, server.port
            )));
        }
        Ok(VlessOutbound {
            servers: config.servers,
            next_server: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            transport: config.transport,
            metrics,
        })
    }

    /// Dials a server and returns the connection toward
    /// `session.destination`, unboxed.
    ///
    /// Cancelling the future drops any socket being dialled.
    pub async fn connect_stream(&self, session: &Session) -> io::Result<VlessStream<Conn>> {
        let mut last_error = None;
        for pause in ATTEMPT_PAUSES_MS {
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let index = session.server_index(&self.next_server, self.servers.len());
            let server = &self.servers[index];
            match self
                .transport
                .dial(&server.address, server.port, self.connect_timeout)
                .await
            {
                Ok(socket) => {
                    increment(&self.metrics.connections_opened);
                    let user = &server.users[rand::thread_rng().gen_range(0..server.users.len())];
                    let mut request = Vec::with_capacity(64);
                    RequestHeader::for_session(user.id, &session.destination)
                        .encode(&mut request)
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
                    return Ok(VlessStream::client(socket, request));
                }
                Err(error) => {
                    tracing::debug!(server = %server.address, port = server.port, %error, "vless dial failed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no vless server to dial")))
    }
}

#[async_trait]
impl Outbound for VlessOutbound {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        Ok(Box::new(self.connect_stream(session).await?))
    }

    fn servers(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| format!("{}:{}", server.address, server.port))
            .collect()
    }
}
