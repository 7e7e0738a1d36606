//! [`VmessOutbound`]: the VMess client. It dials a `vnext` server through
//! its transport (TCP, TLS, WebSocket: `rayback-transport`), seals a
//! request header the way a 4.34 client does, and returns the body as a
//! [`VmessStream`].
//!
//! | choice | as 4.34 |
//! |---|---|
//! | header | AEAD when the user's `alterId` is 0, legacy (MD5) otherwise |
//! | command | 0x03 Mux for TCP to `v1.mux.cool`, 0x02 for UDP sessions, 0x01 otherwise |
//! | options | S M P (0x0D) for the AEAD ciphers, S M (0x05) for none; never P without M |
//! | security | the user's; `auto` resolves by CPU architecture |
//! | padding / response auth / body key and IV | random per connection |
//! | servers | as 4.34 ([`rayback_transport::vnext`]): round robin, or the server the session names; a random user of the server |
//! | header flush | with the first payload, or 100 ms after connecting once the stream is read, or on flush |
//!
//! UDP sessions use packet streams ([`rayback_core::packet`]): every packet
//! written becomes one chunk.

use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::{Rng, RngCore};
use rayback_core::{Address, Outbound, Session, Stream};
use rayback_transport::vnext::{self, Endpoint};
use rayback_transport::{Conn, Transport};

use crate::body::{BodyFraming, ChunkOpener, ChunkSealer};
use crate::crypto::AuthIdCipher;
use crate::error::VmessError;
use crate::header::{
    self, BodySecurity, Command, DirectionKeys, HeaderMode, Options, RequestHeader,
    ResponseDecoder, Security,
};
use crate::id::UserId;
use crate::metrics::{increment, VmessMetrics};
use crate::stream::VmessStream;

/// A user of a `vnext` server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundUser {
    pub id: UserId,
    /// 0: AEAD header; above 0: legacy header with a random alter ID.
    pub alter_id: u16,
    pub security: Security,
    pub level: u32,
    pub email: String,
}

/// One `vnext` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessServer {
    pub address: Address,
    pub port: u16,
    pub users: Vec<OutboundUser>,
}

/// Everything a VMess outbound needs.
#[derive(Clone, Debug)]
pub struct VmessOutboundSettings {
    pub servers: Vec<VmessServer>,
    /// Bound on each TCP connection attempt (and again on the transport's
    /// handshakes).
    pub connect_timeout: Duration,
    /// What carries the connections (`streamSettings`).
    pub transport: Arc<Transport>,
}

struct PreparedUser {
    user: OutboundUser,
    cmd_key: [u8; 16],
    auth_id: AuthIdCipher,
    alter_ids: Vec<UserId>,
}

struct PreparedServer {
    address: Address,
    port: u16,
    users: Vec<PreparedUser>,
}

impl Endpoint for PreparedServer {
    fn address(&self) -> &Address {
        &self.address
    }

    fn port(&self) -> u16 {
        self.port
    }
}

/// A VMess client.
pub struct VmessOutbound {
    servers: Vec<PreparedServer>,
    next_server: AtomicUsize,
    connect_timeout: Duration,
    transport: Arc<Transport>,
    metrics: Arc<VmessMetrics>,
}

impl VmessOutbound {
    /// Checks the config (at least one server, each with a user) and
    /// derives the users' keys.
    pub fn new(
        config: VmessOutboundSettings,
        metrics: Arc<VmessMetrics>,
    ) -> Result<VmessOutbound, VmessError> {
        if config.servers.is_empty() {
            return Err(VmessError::NoServer);
        }
        let mut servers = Vec::with_capacity(config.servers.len());
        for server in config.servers {
            if server.users.is_empty() {
                return Err(VmessError::NoUser(format!(
                    "{}:{}",
                    server.address, server.port
                )));
            }
            let users = server
                .users
                .into_iter()
                .map(|user| {
                    let cmd_key = user.id.cmd_key();
                    PreparedUser {
                        cmd_key,
                        auth_id: AuthIdCipher::new(&header::auth_id_key(&cmd_key)),
                        alter_ids: user.id.alter_ids(user.alter_id),
                        user,
                    }
                })
                .collect();
            servers.push(PreparedServer {
                address: server.address,
                port: server.port,
                users,
            });
        }
        Ok(VmessOutbound {
            servers,
            next_server: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            transport: config.transport,
            metrics,
        })
    }

    /// Dials a server and returns the VMess body toward
    /// `session.destination`, unboxed (for [`VmessStream::budget_watch`]).
    ///
    /// Cancelling the future drops any socket being dialled.
    pub async fn connect_stream(&self, session: &Session) -> io::Result<VmessStream<Conn>> {
        let (socket, server) = vnext::dial(
            &self.transport,
            &self.servers,
            session,
            &self.next_server,
            self.connect_timeout,
            "vmess",
        )
        .await?;
        increment(&self.metrics.connections_opened);
        let user = &server.users[rand::thread_rng().gen_range(0..server.users.len())];
        self.wrap(socket, user, session)
    }

    fn wrap(
        &self,
        socket: Conn,
        user: &PreparedUser,
        session: &Session,
    ) -> io::Result<VmessStream<Conn>> {
        let mut rng = rand::thread_rng();
        let security = BodySecurity::resolve(user.user.security);
        let command = Command::for_destination(&session.destination);
        let destination = if command == Command::Mux {
            header::mux_cool_destination()
        } else {
            session.destination.clone()
        };
        let mut body_iv = [0u8; 16];
        let mut body_key = [0u8; 16];
        rng.fill_bytes(&mut body_iv);
        rng.fill_bytes(&mut body_key);
        let request = RequestHeader {
            version: 1,
            body_iv,
            body_key,
            response_auth: rng.gen(),
            // Offer Rayback's rekey, visitor-source and large-packet
            // extensions; a V2Ray server ignores all three and answers 0.
            options: Options(
                security.client_options().0
                    | Options::REKEY
                    | Options::SOURCE
                    | Options::LARGE_PACKETS,
            ),
            padding_len: rng.gen_range(0..16),
            security,
            command,
            destination,
        };
        let mut padding = [0u8; 15];
        rng.fill_bytes(&mut padding);
        let mut plain = Vec::with_capacity(128);
        request.encode(&padding, &mut plain)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        let mut sealed = Vec::with_capacity(plain.len() + 64);
        let mode = if user.alter_ids.is_empty() {
            let auth_id = header::create_auth_id(&user.auth_id, now, rng.gen());
            header::seal_aead_request(&user.cmd_key, &auth_id, &rng.gen(), &plain, &mut sealed);
            HeaderMode::Aead
        } else {
            let timestamp = (now + rng.gen_range(-30..=29)).max(0) as u64;
            let alter_id = &user.alter_ids[rng.gen_range(0..user.alter_ids.len())];
            header::seal_legacy_request(alter_id, &user.cmd_key, timestamp, &plain, &mut sealed);
            HeaderMode::Legacy
        };
        let request_keys = DirectionKeys::request(&request);
        let response_keys = DirectionKeys::response(&request, mode);
        let framing = BodyFraming::new(request.security, request.options, request.command);
        let mut stream = VmessStream::client(
            socket,
            sealed,
            ChunkSealer::new(framing, &request_keys),
            ChunkOpener::new(framing, &response_keys),
            ResponseDecoder::new(response_keys, mode, request.response_auth),
            self.metrics.clone(),
        );
        if let Some(agreed) = &session.agreed_by_server {
            stream.report_agreed(agreed.clone());
        }
        Ok(stream)
    }
}

#[async_trait]
impl Outbound for VmessOutbound {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        Ok(Box::new(self.connect_stream(session).await?))
    }

    fn servers(&self) -> Vec<String> {
        vnext::names(&self.servers)
    }
}
