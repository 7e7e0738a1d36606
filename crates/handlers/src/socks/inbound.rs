//! The `socks` inbound's driver: accepts TCP connections, runs the
//! handshake of `codec` on them under the handshake deadline, and
//! dispatches what the client asked for, as V2Ray 4.34's
//! `proxy/socks/server.go`.
//!
//! - CONNECT (SOCKS 4, 4a, 5): the reply goes out as soon as the request
//!   is read, before anything is dialled (4.34 does the same); a SOCKS 5
//!   reply names the inbound's listen address and port (4.34's
//!   "gateway": `0.0.0.0` when `listen` is not set). The destination is dispatched as given, a
//!   domain kept a domain.
//! - UDP ASSOCIATE (with `udp`): the reply names `ip` when configured,
//!   else the client's own loopback address when it is 127.0.0.1 or ::1,
//!   else the listen address; the port is the inbound's, where a UDP socket
//!   listens beside the TCP one. The TCP connection is then only read
//!   (and discarded) until the client closes it. As in 4.34, datagrams on
//!   the UDP socket are served whether or not an association is open:
//!   each client address and destination form one UDP session (a packet
//!   stream), ended after `udp_idle` without traffic or when the inbound
//!   stops. Replies carry the destination the client addressed.
//!
//! The session's user has the inbound's `userLevel` and, after a password
//! handshake, the username as its email (4.34 does so for SOCKS).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rayback_core::{
    unmap, Address, Destination, Inbound, InboundContext, Prefixed, Session, Tag, User,
};
use rayback_transport::{Accepted, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::codec::{self, Command, Decoded, Hello, SocksAuth, SocksError};
use crate::datagram::{FrameReader, FrameWriter};

/// Datagrams queued per UDP session before new ones are dropped.
const UDP_QUEUE: usize = 64;
/// The largest datagram read from the UDP socket.
const MAX_DATAGRAM: usize = 65_535;

/// The `socks` inbound's settings plus where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksSettings {
    /// The inbound's tag, copied into every session.
    pub tag: Option<Tag>,
    /// `listen` and `port` of the inbound object.
    pub listen: SocketAddr,
    /// `settings.auth`.
    pub auth: SocksAuth,
    /// `settings.accounts`: username → password (a later duplicate wins,
    /// as in 4.34's map).
    pub accounts: HashMap<String, String>,
    /// `settings.udp`: accept UDP ASSOCIATE and listen on UDP.
    pub udp: bool,
    /// `settings.ip`: the address a UDP ASSOCIATE reply names.
    pub ip: Option<Address>,
    /// `settings.userLevel`.
    pub user_level: u32,
    /// The bound on the transport and SOCKS handshakes (the level's
    /// `policy.handshake`).
    pub handshake: Duration,
    /// How long a quiet UDP session lives.
    pub udp_idle: Duration,
}

impl SocksSettings {
    /// No authentication, no UDP, level 0, on `listen`.
    pub fn new(listen: SocketAddr) -> SocksSettings {
        SocksSettings {
            tag: None,
            listen,
            auth: SocksAuth::NoAuth,
            accounts: HashMap::new(),
            udp: false,
            ip: None,
            user_level: 0,
            handshake: Duration::from_secs(4),
            udp_idle: Duration::from_secs(16),
        }
    }
}

/// A bound SOCKS inbound; [`Inbound::run`] serves it once.
#[derive(Debug)]
pub struct SocksInbound {
    settings: SocksSettings,
    tcp: Mutex<Option<TcpListener>>,
    udp: Mutex<Option<Arc<UdpSocket>>>,
    transport: Option<Arc<Transport>>,
    local_addr: SocketAddr,
}

/// What a finished handshake asks for.
struct Handshake {
    command: Command,
    address: Address,
    port: u16,
    /// The authenticated username, if any.
    username: Option<String>,
}

impl SocksInbound {
    /// Opens the listeners now (UDP on the TCP port when `udp` is on).
    pub async fn bind(settings: SocksSettings) -> io::Result<SocksInbound> {
        let listener = rayback_transport::socket::listen(settings.listen)?;
        let local_addr = listener.local_addr()?;
        let udp = if settings.udp {
            Some(Arc::new(UdpSocket::bind(local_addr).await?))
        } else {
            None
        };
        Ok(SocksInbound {
            settings,
            tcp: Mutex::new(Some(listener)),
            udp: Mutex::new(udp),
            transport: None,
            local_addr,
        })
    }

    /// Runs `transport` (TLS, WebSocket, PROXY protocol) on every accepted
    /// connection before the SOCKS handshake.
    pub fn with_transport(mut self, transport: Arc<Transport>) -> SocksInbound {
        self.transport = (!transport.is_plain_tcp()).then_some(transport);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn user(&self, username: Option<String>) -> User {
        User {
            email: username.unwrap_or_default(),
            level: self.settings.user_level,
        }
    }

    fn session(&self, destination: Destination, source: SocketAddr, user: User) -> Session {
        let mut session = Session::new(destination)
            .with_source(unmap(source))
            .with_user(user);
        if let Some(tag) = &self.settings.tag {
            session = session.with_inbound_tag(tag.clone());
        }
        session
    }

    async fn accept_loop(self: &Arc<Self>, listener: &TcpListener, context: &InboundContext) {
        let what = format!("socks inbound on {}", self.local_addr);
        context
            .accept_each(listener, &what, |socket, peer| {
                let inbound = Arc::clone(self);
                let context = context.clone();
                context.tracker.clone().spawn(async move {
                    if let Err(error) = inbound.serve_tcp(socket, peer, &context).await {
                        tracing::info!(tag = ?inbound.settings.tag, %peer, %error, "socks connection ends");
                    }
                });
            })
            .await;
    }

    async fn serve_tcp(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        context: &InboundContext,
    ) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let deadline = Instant::now() + self.settings.handshake;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "socks handshake timed out");
        let (mut conn, source): (rayback_core::Stream, SocketAddr) = match &self.transport {
            None => (Box::new(socket), peer),
            Some(transport) => {
                let Accepted { conn, source } =
                    tokio::time::timeout_at(deadline, transport.accept(socket, peer))
                        .await
                        .map_err(|_| timed_out())??;
                (Box::new(conn), source)
            }
        };
        let mut buffer = BytesMut::with_capacity(512);
        let handshake =
            tokio::time::timeout_at(deadline, self.handshake(&mut conn, &mut buffer, source))
                .await
                .map_err(|_| timed_out())??;
        let user = self.user(handshake.username);
        match handshake.command {
            Command::Connect => {
                let destination = Destination::tcp(handshake.address, handshake.port);
                let session = self.session(destination, source, user);
                let stream = Prefixed::new(buffer.to_vec(), conn);
                context.dispatch.dispatch(session, Box::new(stream)).await
            }
            Command::UdpAssociate => {
                // The association is the TCP connection's life; its bytes
                // mean nothing.
                let mut sink = [0u8; 1024];
                loop {
                    let read = tokio::select! {
                        () = context.shutdown.cancelled() => return Ok(()),
                        read = conn.read(&mut sink) => read?,
                    };
                    if read == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads and answers the handshake; leaves bytes past it in `buffer`.
    async fn handshake(
        &self,
        conn: &mut rayback_core::Stream,
        buffer: &mut BytesMut,
        source: SocketAddr,
    ) -> io::Result<Handshake> {
        let auth = self.settings.auth;
        match read_message(conn, buffer, |bytes| codec::decode_hello(bytes, auth)).await? {
            Hello::Socks4 { address, port, .. } => {
                conn.write_all(&codec::encode_socks4_reply(codec::SOCKS4_GRANTED))
                    .await?;
                Ok(Handshake {
                    command: Command::Connect,
                    address,
                    port,
                    username: None,
                })
            }
            Hello::Socks5 { methods } => {
                let method = match codec::choose_method(&methods, auth) {
                    Ok(method) => method,
                    Err(error) => return Err(refuse(conn, error).await),
                };
                conn.write_all(&[codec::SOCKS5, method]).await?;
                let mut username = None;
                if auth == SocksAuth::Password {
                    let credentials = read_message(conn, buffer, codec::decode_credentials).await?;
                    let known = self.settings.accounts.get(&credentials.username);
                    if known != Some(&credentials.password) {
                        let error = SocksError::BadCredentials(credentials.username);
                        return Err(refuse(conn, error).await);
                    }
                    conn.write_all(&codec::encode_credentials_reply(true))
                        .await?;
                    username = Some(credentials.username).filter(|name| !name.is_empty());
                }
                let udp = self.settings.udp;
                let request =
                    read_message(conn, buffer, |bytes| codec::decode_request(bytes, udp)).await?;
                // 4.34's gateway: the listener's address, not the
                // accepted socket's.
                let local = unmap(self.local_addr);
                let reply_address = match request.command {
                    Command::Connect => Address::from(local.ip()),
                    Command::UdpAssociate => match &self.settings.ip {
                        Some(ip) => ip.clone(),
                        None => {
                            let client = unmap(source).ip();
                            if client == IpAddr::V4(Ipv4Addr::LOCALHOST)
                                || client == IpAddr::V6(Ipv6Addr::LOCALHOST)
                            {
                                Address::from(client)
                            } else {
                                Address::from(local.ip())
                            }
                        }
                    },
                };
                conn.write_all(&codec::encode_reply(
                    codec::REPLY_SUCCEEDED,
                    &reply_address,
                    local.port(),
                ))
                .await?;
                Ok(Handshake {
                    command: request.command,
                    address: request.address,
                    port: request.port,
                    username,
                })
            }
        }
    }

    async fn udp_loop(self: &Arc<Self>, socket: &Arc<UdpSocket>, context: &InboundContext) {
        let sessions: Arc<UdpSessions> = Arc::default();
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                () = context.shutdown.cancelled() => {
                    sessions.table.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    return;
                }
                received = socket.recv_from(&mut buffer) => received,
            };
            let (len, client) = match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(tag = ?self.settings.tag, %error, "socks udp receive failed");
                    continue;
                }
            };
            let datagram = &buffer[..len];
            let (address, port, start) = match codec::decode_datagram(datagram) {
                Ok(header) => header,
                Err(error) => {
                    tracing::debug!(tag = ?self.settings.tag, %client, %error, "socks udp datagram dropped");
                    continue;
                }
            };
            if start == len {
                continue;
            }
            let payload = Bytes::copy_from_slice(&datagram[start..]);
            let destination = Destination::udp(address, port);
            self.deliver(payload, client, destination, socket, &sessions, context);
        }
    }

    /// Queues `payload` on the session of `client` toward `destination`,
    /// starting one if needed.
    fn deliver(
        self: &Arc<Self>,
        payload: Bytes,
        client: SocketAddr,
        destination: Destination,
        socket: &Arc<UdpSocket>,
        sessions: &Arc<UdpSessions>,
        context: &InboundContext,
    ) {
        let key = (client, destination);
        let mut table = sessions
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get(&key) {
            match entry.sender.try_send(payload) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => return,
                Err(mpsc::error::TrySendError::Closed(payload)) => {
                    table.remove(&key);
                    drop(table);
                    let (client, destination) = key;
                    return self.deliver(payload, client, destination, socket, sessions, context);
                }
            }
        }
        let (sender, receiver) = mpsc::channel(UDP_QUEUE);
        // A fresh channel has room for the first datagram.
        let _ = sender.try_send(payload);
        let id = sessions.next_id.fetch_add(1, Ordering::Relaxed);
        table.insert(key.clone(), UdpEntry { id, sender });
        drop(table);
        let (client, destination) = key;
        let mut header = Vec::with_capacity(32);
        codec::encode_datagram_header(&destination.address, destination.port, &mut header);
        let stream = UdpSessionStream {
            datagrams: receiver,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
            socket: Arc::clone(socket),
            client,
            header,
            scratch: Vec::new(),
            idle_limit: self.settings.udp_idle,
            last_activity: Instant::now(),
            idle_timer: Box::pin(tokio::time::sleep(self.settings.udp_idle)),
            expired: false,
            sessions: Arc::clone(sessions),
            key: (client, destination.clone()),
            id,
        };
        let session = self.session(destination, client, self.user(None));
        let dispatch = Arc::clone(&context.dispatch);
        let tag = self.settings.tag.clone();
        let shutdown = context.shutdown.clone();
        context.tracker.spawn(async move {
            tokio::select! {
                result = dispatch.dispatch(session, Box::new(stream)) => {
                    if let Err(error) = result {
                        tracing::info!(?tag, %client, %error, "socks udp session ends");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

#[async_trait]
impl Inbound for SocksInbound {
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()> {
        let listener = self
            .tcp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let socket = self
            .udp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let tcp = async {
            if let Some(listener) = listener {
                self.accept_loop(&listener, &context).await;
            }
        };
        let udp = async {
            if let Some(socket) = socket {
                self.udp_loop(&socket, &context).await;
            }
        };
        tokio::join!(tcp, udp);
        Ok(())
    }
}

/// Reads until `decode` has a whole message; a refusal's reply is sent
/// before the error returns.
async fn read_message<T>(
    conn: &mut rayback_core::Stream,
    buffer: &mut BytesMut,
    decode: impl Fn(&[u8]) -> Decoded<T>,
) -> io::Result<T> {
    loop {
        match decode(buffer) {
            Ok(Some((message, used))) => {
                let _ = buffer.split_to(used);
                return Ok(message);
            }
            Ok(None) => {
                if conn.read_buf(buffer).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "socks client left during the handshake",
                    ));
                }
            }
            Err(error) => return Err(refuse(conn, error).await),
        }
    }
}

/// Sends `error`'s reply (if it has one) and turns it into an `io::Error`.
async fn refuse(conn: &mut rayback_core::Stream, error: SocksError) -> io::Error {
    if let Some(reply) = error.reply() {
        // The client may already be gone; the refusal is the error.
        let _ = conn.write_all(&reply).await;
        let _ = conn.flush().await;
    }
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The live UDP sessions, by client and destination.
#[derive(Default)]
struct UdpSessions {
    table: Mutex<HashMap<(SocketAddr, Destination), UdpEntry>>,
    next_id: AtomicU64,
}

struct UdpEntry {
    /// Tells this session from a later one of the same key.
    id: u64,
    sender: mpsc::Sender<Bytes>,
}

/// One UDP session as a packet stream: reads are the client's payloads,
/// each frame written goes back to the client behind the SOCKS header.
struct UdpSessionStream {
    datagrams: mpsc::Receiver<Bytes>,
    reader: FrameReader,
    writer: FrameWriter,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    /// The SOCKS UDP header every reply starts with.
    header: Vec<u8>,
    /// A reply's header and payload, reused.
    scratch: Vec<u8>,
    idle_limit: Duration,
    last_activity: Instant,
    idle_timer: Pin<Box<Sleep>>,
    expired: bool,
    sessions: Arc<UdpSessions>,
    key: (SocketAddr, Destination),
    id: u64,
}

impl UdpSessionStream {
    fn unregister(&self) {
        let mut table = self
            .sessions
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table
            .get(&self.key)
            .is_some_and(|entry| entry.id == self.id)
        {
            table.remove(&self.key);
        }
    }
}

impl rayback_core::AsyncStream for UdpSessionStream {}

impl AsyncRead for UdpSessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.reader.is_empty() {
            this.reader.copy_out(out);
            return Poll::Ready(Ok(()));
        }
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        match this.datagrams.poll_recv(cx) {
            Poll::Ready(Some(payload)) => {
                this.reader.load(&payload);
                this.reader.copy_out(out);
                this.last_activity = Instant::now();
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => {}
        }
        while this.idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = this.last_activity + this.idle_limit;
            if deadline <= Instant::now() {
                this.expired = true;
                this.unregister();
                return Poll::Ready(Ok(()));
            }
            this.idle_timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl UdpSessionStream {
    fn send(
        socket: &UdpSocket,
        client: SocketAddr,
        header: &[u8],
        scratch: &mut Vec<u8>,
        cx: &mut Context<'_>,
        payload: &[u8],
    ) -> Poll<io::Result<usize>> {
        scratch.clear();
        scratch.extend_from_slice(header);
        scratch.extend_from_slice(payload);
        socket.poll_send_to(cx, scratch, client)
    }
}

impl AsyncWrite for UdpSessionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (socket, client, header, scratch) =
            (&this.socket, this.client, &this.header, &mut this.scratch);
        let written = this.writer.poll_write(cx, data, |cx, payload| {
            UdpSessionStream::send(socket, client, header, scratch, cx, payload)
        });
        if let Poll::Ready(Ok(_)) = written {
            this.last_activity = Instant::now();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (socket, client, header, scratch) =
            (&this.socket, this.client, &this.header, &mut this.scratch);
        this.writer.poll_flush(cx, |cx, payload| {
            UdpSessionStream::send(socket, client, header, scratch, cx, payload)
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for UdpSessionStream {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::Network;
    use rayback_testkit::doubles::{RecordingDispatch, Then};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    const LIMIT: Duration = Duration::from_secs(10);

    async fn serve(settings: SocksSettings) -> (SocketAddr, Arc<RecordingDispatch>) {
        let inbound = Arc::new(SocksInbound::bind(settings).await.unwrap());
        let addr = inbound.local_addr();
        let dispatch = Arc::new(RecordingDispatch::new(Then::Echo));
        let context = InboundContext {
            dispatch: dispatch.clone(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        tokio::spawn(inbound.run(context));
        (addr, dispatch)
    }

    fn password_settings() -> SocksSettings {
        let mut settings = SocksSettings::new("127.0.0.1:0".parse().unwrap());
        settings.auth = SocksAuth::Password;
        settings.accounts.insert("bob".into(), "pw".into());
        settings.user_level = 3;
        settings
    }

    /// Sends `request`, then reads until the server closes.
    async fn answer_to(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, client.read_to_end(&mut answer))
            .await
            .expect("the server closes")
            .ok();
        answer
    }

    #[tokio::test]
    async fn connect_with_a_password_replies_before_dispatch_and_names_the_user() {
        let (addr, dispatch) = serve(password_settings()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Greeting, credentials, request and payload in one write.
        let mut bytes = vec![5, 1, 2, 1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        bytes.extend_from_slice(&[5, 1, 0, 3, 4, b'h', b'o', b's', b't', 0, 80]);
        bytes.extend_from_slice(b"ping");
        client.write_all(&bytes).await.unwrap();
        let mut reply = [0u8; 2 + 2 + 10 + 4];
        tokio::time::timeout(LIMIT, client.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let port = addr.port().to_be_bytes();
        assert_eq!(
            reply,
            [5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 1, port[0], port[1], b'p', b'i', b'n', b'g']
        );
        let session = &dispatch.sessions()[0];
        assert_eq!(
            session.destination,
            Destination::new(Network::Tcp, Address::Domain("host".into()), 80)
        );
        let user = session.user.as_ref().unwrap();
        assert_eq!((user.email.as_str(), user.level), ("bob", 3));
    }

    #[tokio::test]
    async fn refusals_answer_as_4_34_and_close() {
        let (addr, dispatch) = serve(password_settings()).await;
        // Wrong password.
        let wrong = [5, 1, 2, 1, 3, b'b', b'o', b'b', 2, b'n', b'o'];
        assert_eq!(answer_to(addr, &wrong).await, vec![5, 2, 1, 0xFF]);
        // No acceptable method.
        assert_eq!(answer_to(addr, &[5, 1, 0]).await, vec![5, 0xFF]);
        // SOCKS 4 on a password inbound.
        let socks4 = [4, 1, 0, 80, 127, 0, 0, 1, 0];
        assert_eq!(
            answer_to(addr, &socks4).await,
            vec![0, 91, 0, 0, 0, 0, 0, 0]
        );
        // Garbage: closed without an answer.
        assert_eq!(
            answer_to(addr, b"GET / HTTP/1.1\r\n\r\n").await,
            Vec::<u8>::new()
        );
        let (addr, _) = serve(SocksSettings::new("127.0.0.1:0".parse().unwrap())).await;
        // BIND, and UDP ASSOCIATE while UDP is off.
        for command in [2, 3] {
            let request = [5, 1, 0, 5, command, 0, 1, 0, 0, 0, 0, 0, 0];
            assert_eq!(
                answer_to(addr, &request).await,
                vec![5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
            );
        }
        assert!(dispatch.sessions().is_empty());
    }

    #[tokio::test]
    async fn a_stalled_handshake_ends_at_the_deadline() {
        let mut settings = SocksSettings::new("127.0.0.1:0".parse().unwrap());
        settings.handshake = Duration::from_millis(200);
        let (addr, _) = serve(settings).await;
        // Half a greeting, then silence: the server closes.
        assert_eq!(answer_to(addr, &[5, 2, 0]).await, Vec::<u8>::new());
    }

    #[tokio::test]
    async fn socks4a_and_udp_associate() {
        let mut settings = SocksSettings::new("127.0.0.1:0".parse().unwrap());
        settings.udp = true;
        let (addr, dispatch) = serve(settings).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut request = vec![4, 1, 0, 80, 0, 0, 0, 1, b'u', 0];
        request.extend_from_slice(b"example.com\0hi");
        client.write_all(&request).await.unwrap();
        let mut reply = [0u8; 10];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0, 90, 0, 0, 0, 0, 0, 0, b'h', b'i']);
        assert_eq!(
            dispatch.sessions()[0].destination.address,
            Address::Domain("example.com".into())
        );

        // UDP ASSOCIATE from 127.0.0.1: the reply names 127.0.0.1 and the
        // inbound's port; a datagram there comes back (echo) behind the
        // header naming its destination.
        let mut control = TcpStream::connect(addr).await.unwrap();
        control
            .write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut reply = [0u8; 12];
        control.read_exact(&mut reply).await.unwrap();
        let port = addr.port().to_be_bytes();
        assert_eq!(reply, [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, port[0], port[1]]);
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut datagram = Vec::new();
        codec::encode_datagram_header(
            &Address::Ipv4(Ipv4Addr::new(10, 0, 0, 9)),
            53,
            &mut datagram,
        );
        datagram.extend_from_slice(b"query");
        udp.send_to(&datagram, addr).await.unwrap();
        let mut back = [0u8; 64];
        let (len, _) = tokio::time::timeout(LIMIT, udp.recv_from(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back[..len], &datagram[..]);
        let udp_session = dispatch
            .sessions()
            .into_iter()
            .find(|session| session.destination.network == Network::Udp)
            .unwrap();
        assert_eq!(udp_session.destination.port, 53);
    }
}
