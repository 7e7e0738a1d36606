//! [`VlessOutbound`]: the VLESS client. It dials a `vnext` server through
//! its transport (TCP, TLS, WebSocket: `rayback-transport`), writes a
//! request header as a 4.34 client does, and returns the connection as a
//! [`VlessStream`].
//!
//! | choice | as 4.34 |
//! |---|---|
//! | command | 0x03 Mux for TCP to `v1.mux.cool` (no address), 0x02 for UDP sessions, 0x01 otherwise |
//! | addons | empty |
//! | servers | as 4.34 ([`rayback_transport::vnext`]): round robin, or the server the session names; a random user of the server |
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
use rayback_transport::vnext::{self, Endpoint};
use rayback_transport::{Conn, Transport};

use crate::header::RequestHeader;
use crate::metrics::{increment, VlessMetrics};
use crate::stream::VlessStream;
use crate::VlessError;

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

impl Endpoint for VlessServer {
    fn address(&self) -> &Address {
        &self.address
    }

    fn port(&self) -> u16 {
        self.port
    }
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
        let (socket, server) = vnext::dial(
            &self.transport,
            &self.servers,
            session,
            &self.next_server,
            self.connect_timeout,
            "vless",
        )
        .await?;
        increment(&self.metrics.connections_opened);
        let user = &server.users[rand::thread_rng().gen_range(0..server.users.len())];
        let mut request = Vec::with_capacity(64);
        RequestHeader::for_session(user.id, &session.destination)
            .encode(&mut request)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(VlessStream::client(socket, request))
    }
}

#[async_trait]
impl Outbound for VlessOutbound {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        Ok(Box::new(self.connect_stream(session).await?))
    }

    fn servers(&self) -> Vec<String> {
        vnext::names(&self.servers)
    }
}
