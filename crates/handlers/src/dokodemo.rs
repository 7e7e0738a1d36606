//! The `dokodemo-door` inbound: every connection (TCP) or client (UDP)
//! accepted on the listen address becomes a session toward one fixed
//! destination, as V2Ray 4.34's `proxy/dokodemo` with its TCP and UDP
//! workers.
//!
//! TCP: each accepted socket (TCP_NODELAY on) is dispatched in a task of
//! its own on the context's tracker; a failed connection is logged there
//! and never stops the listener. With `follow_redirect` the destination is
//! the socket's original destination (`SO_ORIGINAL_DST`, iptables
//! `REDIRECT`), when there is one that differs from the listener itself.
//!
//! UDP: datagrams from one client address form one session, whose stream
//! is a packet stream (see `crate::datagram`): reading yields the client's
//! datagrams, each frame written is sent back to the client from the
//! listening socket. A client's queue holds [`UDP_QUEUE`] datagrams and
//! drops the overflow, as 4.34's pipe does. A session whose client has
//! been quiet for `udp_idle` (both directions) ends: reads see end of
//! stream and a later datagram starts a new session. 4.34 drops sessions
//! idle over 8 s at a sweep every 16 s; Rayback's default is 16 s. When
//! the inbound stops, every session's reads see end of stream after the
//! datagrams already queued.
//! `follow_redirect` (TPROXY) is not supported for UDP.
//!
//! Not here: the policy timeouts of an established session (the
//! dispatcher's relay applies them) and the deprecated `timeout` field
//! (the app folds it into the level's policy).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rayback_core::packet::MAX_PACKET;
use rayback_core::{
    unmap, Address, Destination, Inbound, InboundContext, Network, Session, Stream, Tag, User,
};
use rayback_transport::{Accepted, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::datagram::FrameWriter;
use crate::error::HandlersError;

/// Datagrams queued per UDP client before new ones are dropped.
pub const UDP_QUEUE: usize = 64;

/// Receive buffers are carved from chunks this big, so a datagram costs no
/// allocation of its own.
const RECV_CHUNK: usize = 256 * 1024;

/// The bound on a connection's transport handshake (TLS, WebSocket, PROXY
/// header), V2Ray's default `policy.handshake`.
const TRANSPORT_HANDSHAKE: Duration = Duration::from_secs(60);

/// dokodemo-door's settings plus where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DokodemoSettings {
    /// The inbound's tag, copied into every session.
    pub tag: Option<Tag>,
    /// `listen` and `port` of the inbound object.
    pub listen: SocketAddr,
    /// `settings.address`: `None` makes every session fail with "unable
    /// to get destination" (unless `follow_redirect` finds one).
    pub address: Option<Address>,
    /// `settings.port`.
    pub port: u16,
    /// `settings.network`: which listeners to open; not empty.
    pub networks: Vec<Network>,
    /// `settings.followRedirect` (TCP only).
    pub follow_redirect: bool,
    /// `settings.userLevel`: the level of every session's user.
    pub user_level: u32,
    /// How long a quiet UDP client keeps its session.
    pub udp_idle: Duration,
}

impl DokodemoSettings {
    /// TCP on `listen` toward `address:port`, level 0.
    pub fn new(listen: SocketAddr, address: Option<Address>, port: u16) -> DokodemoSettings {
        DokodemoSettings {
            tag: None,
            listen,
            address,
            port,
            networks: vec![Network::Tcp],
            follow_redirect: false,
            user_level: 0,
            udp_idle: Duration::from_secs(16),
        }
    }
}

/// A bound dokodemo-door inbound; [`Inbound::run`] serves it, once (its
/// TCP listener closes when that run stops accepting).
#[derive(Debug)]
pub struct DokodemoDoor {
    settings: DokodemoSettings,
    /// Taken by [`Inbound::run`], so that the listener closes as soon as
    /// accepting stops, while connections (which hold the door) may still
    /// be open: a stopped door refuses new connections and frees its port.
    tcp: Mutex<Option<TcpListener>>,
    /// `streamSettings` other than plain TCP: run on each accepted socket.
    transport: Option<Arc<Transport>>,
    /// Taken by `run`, so that the port is free once it and the sessions
    /// using the socket have ended.
    udp: Mutex<Option<Arc<UdpSocket>>>,
    local_addr: SocketAddr,
}

impl DokodemoDoor {
    /// Opens the listeners now, so that a busy port fails at start. With
    /// both networks and port 0, UDP binds the port TCP got.
    pub async fn bind(settings: DokodemoSettings) -> io::Result<DokodemoDoor> {
        let name = settings
            .tag
            .as_ref()
            .map(Tag::to_string)
            .unwrap_or_default();
        if settings.networks.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                HandlersError::NoNetwork(name),
            ));
        }
        let mut local_addr = settings.listen;
        let tcp = if settings.networks.contains(&Network::Tcp) {
            let listener = rayback_transport::socket::listen(settings.listen)?;
            local_addr = listener.local_addr()?;
            Some(listener)
        } else {
            None
        };
        let udp = if settings.networks.contains(&Network::Udp) {
            let socket = UdpSocket::bind(local_addr).await?;
            local_addr = socket.local_addr()?;
            Some(Arc::new(socket))
        } else {
            None
        };
        Ok(DokodemoDoor {
            settings,
            tcp: Mutex::new(tcp),
            transport: None,
            udp: Mutex::new(udp),
            local_addr,
        })
    }

    /// Runs `transport` (TLS, WebSocket, PROXY protocol) on every accepted
    /// TCP connection before it is dispatched; the source it reports is
    /// the session's. Plain TCP needs none.
    pub fn with_transport(mut self, transport: Arc<Transport>) -> DokodemoDoor {
        self.transport = (!transport.is_plain_tcp()).then_some(transport);
        self
    }

    /// The bound address (the TCP and UDP listeners share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn settings(&self) -> &DokodemoSettings {
        &self.settings
    }

    fn session(
        &self,
        network: Network,
        address: Address,
        port: u16,
        source: SocketAddr,
    ) -> Session {
        let mut session = Session::new(Destination::new(network, address, port))
            .with_source(unmap(source))
            .with_user(User {
                email: String::new(),
                level: self.settings.user_level,
            });
        session.inbound_tag = self.settings.tag.clone();
        session
    }

    async fn accept_loop(self: &Arc<Self>, listener: &TcpListener, context: &InboundContext) {
        let what = format!("dokodemo-door on {}", self.local_addr);
        context
            .accept_each(listener, &what, |socket, peer| {
                let door = Arc::clone(self);
                let dispatch = Arc::clone(&context.dispatch);
                context.tracker.spawn(async move {
                    // The destination and any transport handshake are
                    // worked out in a boxed future, freed before dispatch:
                    // what a held connection keeps is this task's few
                    // words and the dispatch's own future.
                    let served = match Box::pin(door.accept_tcp(socket, peer)).await {
                        Ok((session, stream)) => dispatch.dispatch(session, stream).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = served {
                        tracing::info!(tag = ?door.settings.tag, %peer, %error, "dokodemo-door connection ends");
                    }
                });
            })
            .await;
    }

    /// The session of an accepted TCP connection and its stream, once any
    /// transport handshake is done.
    async fn accept_tcp(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(Session, Stream)> {
        socket.set_nodelay(true)?;
        let redirected = if self.settings.follow_redirect {
            original_destination(&socket)
        } else {
            None
        };
        let (address, port) = match (redirected, &self.settings.address) {
            (Some(original), _) => (Address::from(original.ip()), original.port()),
            (None, Some(address)) => (address.clone(), self.settings.port),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "unable to get destination",
                ));
            }
        };
        let Some(transport) = &self.transport else {
            let session = self.session(Network::Tcp, address, port, peer);
            return Ok((session, Box::new(socket)));
        };
        let Accepted { conn, source } =
            tokio::time::timeout(TRANSPORT_HANDSHAKE, transport.accept(socket, peer))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "transport handshake timed out")
                })??;
        let session = self.session(Network::Tcp, address, port, source);
        Ok((session, Box::new(conn)))
    }

    async fn udp_loop(self: &Arc<Self>, socket: &Arc<UdpSocket>, context: &InboundContext) {
        let clients: Arc<Clients> = Arc::default();
        let mut buffer = BytesMut::with_capacity(RECV_CHUNK);
        loop {
            if buffer.capacity() < MAX_PACKET {
                buffer = BytesMut::with_capacity(RECV_CHUNK);
            }
            let received = tokio::select! {
                () = context.shutdown.cancelled() => {
                    // Closing every client's queue ends its session's
                    // request side (after what is queued), so a stop does
                    // not wait for quiet clients to time out.
                    clients.table.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    return;
                }
                received = socket.recv_buf_from(&mut buffer) => received,
            };
            match received {
                Ok((_, client)) => {
                    let datagram = buffer.split().freeze();
                    self.deliver(datagram, client, socket, &clients, context);
                }
                Err(error) => {
                    // Errors of unconnected UDP sockets concern one peer
                    // (ICMP); the socket itself goes on.
                    tracing::debug!(tag = ?self.settings.tag, %error, "dokodemo-door udp receive failed");
                }
            }
        }
    }

    /// Queues `datagram` on `client`'s session, starting one if needed.
    fn deliver(
        self: &Arc<Self>,
        datagram: Bytes,
        client: SocketAddr,
        socket: &Arc<UdpSocket>,
        clients: &Arc<Clients>,
        context: &InboundContext,
    ) {
        let mut table = clients.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get(&client) {
            match entry.sender.try_send(datagram) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => return,
                Err(mpsc::error::TrySendError::Closed(datagram)) => {
                    table.remove(&client);
                    drop(table);
                    return self.deliver(datagram, client, socket, clients, context);
                }
            }
        }
        let Some(address) = self.settings.address.clone() else {
            tracing::info!(tag = ?self.settings.tag, %client, "dokodemo-door udp: unable to get destination");
            return;
        };
        let (sender, receiver) = mpsc::channel(UDP_QUEUE);
        // A fresh channel has room for the first datagram.
        let _ = sender.try_send(datagram);
        let id = clients.next_id.fetch_add(1, Ordering::Relaxed);
        table.insert(client, ClientEntry { id, sender });
        drop(table);
        let stream = ClientStream {
            datagrams: receiver,
            current: None,
            position: 0,
            socket: Arc::clone(socket),
            client,
            writer: FrameWriter::default(),
            idle_limit: self.settings.udp_idle,
            last_activity: Instant::now(),
            idle_timer: Box::pin(tokio::time::sleep(self.settings.udp_idle)),
            expired: false,
            clients: Arc::clone(clients),
            id,
        };
        let session = self.session(Network::Udp, address, self.settings.port, client);
        let dispatch = Arc::clone(&context.dispatch);
        let tag = self.settings.tag.clone();
        let shutdown = context.shutdown.clone();
        context.tracker.spawn(async move {
            // A stop ends UDP sessions at once, as V2Ray does: each holds
            // the listening socket (replies must come from its port), and
            // a restart or reload needs that port; a datagram has no
            // delivery promise to keep.
            tokio::select! {
                result = dispatch.dispatch(session, Box::new(stream)) => {
                    if let Err(error) = result {
                        tracing::info!(?tag, %client, %error, "dokodemo-door udp session ends");
                    }
                }
                () = shutdown.cancelled() => {
                    tracing::debug!(?tag, %client, "dokodemo-door udp session ended by the stop");
                }
            }
        });
    }
}

#[async_trait]
impl Inbound for DokodemoDoor {
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()> {
        let listener = self
            .tcp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let tcp = async {
            if let Some(listener) = listener {
                self.accept_loop(&listener, &context).await;
            }
        };
        let socket = self
            .udp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let udp = async {
            if let Some(socket) = socket {
                self.udp_loop(&socket, &context).await;
            }
        };
        tokio::join!(tcp, udp);
        Ok(())
    }
}

/// Where an iptables-`REDIRECT`ed connection was going (`SO_ORIGINAL_DST`
/// or `IP6T_SO_ORIGINAL_DST`), through socket2's safe wrapper. `None` when
/// the kernel knows none, or when it is the listener itself (a connection
/// that was not redirected), so that the configured destination applies.
pub fn original_destination(socket: &TcpStream) -> Option<SocketAddr> {
    let local = socket.local_addr().ok()?;
    let original = original_destination_raw(socket, local)?;
    let original = unmap(original);
    (original != unmap(local)).then_some(original)
}

#[cfg(target_os = "linux")]
fn original_destination_raw(socket: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(socket);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    original.ok()?.as_socket()
}

#[cfg(not(target_os = "linux"))]
fn original_destination_raw(_socket: &TcpStream, _local: SocketAddr) -> Option<SocketAddr> {
    None
}

/// The UDP clients with a live session.
#[derive(Default)]
struct Clients {
    table: Mutex<HashMap<SocketAddr, ClientEntry>>,
    next_id: AtomicU64,
}

struct ClientEntry {
    /// Tells this session from a later one of the same client.
    id: u64,
    sender: mpsc::Sender<Bytes>,
}

/// One UDP client's session, as a packet stream.
struct ClientStream {
    datagrams: mpsc::Receiver<Bytes>,
    /// The datagram being read out, and how much of its frame (2-byte
    /// header, then payload) was read.
    current: Option<Bytes>,
    position: usize,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    writer: FrameWriter,
    idle_limit: Duration,
    last_activity: Instant,
    /// Re-armed lazily: only when it fires is `last_activity` looked at.
    idle_timer: Pin<Box<Sleep>>,
    expired: bool,
    clients: Arc<Clients>,
    id: u64,
}

impl ClientStream {
    /// Forgets this session so the client's next datagram starts another.
    fn unregister(&self) {
        let mut table = self
            .clients
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table
            .get(&self.client)
            .is_some_and(|entry| entry.id == self.id)
        {
            table.remove(&self.client);
        }
    }

    /// Copies the current datagram's frame into `out`.
    fn copy_out(&mut self, out: &mut ReadBuf<'_>) {
        let Some(datagram) = &self.current else {
            return;
        };
        let header = (datagram.len().min(MAX_PACKET) as u16).to_be_bytes();
        while self.position < 2 && out.remaining() > 0 {
            out.put_slice(&header[self.position..self.position + 1]);
            self.position += 1;
        }
        let start = self.position - 2;
        let take = out.remaining().min(datagram.len() - start);
        out.put_slice(&datagram[start..start + take]);
        self.position += take;
        if self.position == datagram.len() + 2 {
            self.current = None;
        }
    }
}

impl rayback_core::AsyncStream for ClientStream {}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.current.is_some() {
                this.copy_out(out);
                return Poll::Ready(Ok(()));
            }
            if this.expired {
                return Poll::Ready(Ok(()));
            }
            match this.datagrams.poll_recv(cx) {
                Poll::Ready(Some(datagram)) => {
                    this.current = Some(datagram);
                    this.position = 0;
                    this.last_activity = Instant::now();
                    continue;
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
            return Poll::Pending;
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (socket, client) = (&this.socket, this.client);
        let written = this.writer.poll_write(cx, data, |cx, payload| {
            socket.poll_send_to(cx, payload, client)
        });
        if let Poll::Ready(Ok(_)) = written {
            this.last_activity = Instant::now();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (socket, client) = (&this.socket, this.client);
        this.writer
            .poll_flush(cx, |cx, payload| socket.poll_send_to(cx, payload, client))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_no_original_destination() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(original_destination(&server), None);
        assert_eq!(original_destination(&client), None);
    }

    #[test]
    fn unmaps_ipv4_mapped_peers() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(unmap(mapped), "10.0.0.1:5".parse::<SocketAddr>().unwrap());
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn bind_refuses_no_network_and_busy_ports() {
        let mut settings = DokodemoSettings::new("127.0.0.1:0".parse().unwrap(), None, 80);
        settings.networks.clear();
        let error = DokodemoDoor::bind(settings.clone()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "dokodemo-door inbound \"\" has no network to listen on"
        );
        settings.networks = vec![Network::Tcp, Network::Udp];
        let door = DokodemoDoor::bind(settings.clone()).await.unwrap();
        settings.listen = door.local_addr();
        assert!(DokodemoDoor::bind(settings).await.is_err());
    }
}
