//! Test doubles for the traits in `rayback-core`: a [`RecordingDispatch`]
//! that keeps every session it is handed and then echoes, relays to the
//! destination or hands the stream to an outbound; and the two behaviours
//! on their own ([`echo`], [`relay_to_destination`]) for tests that
//! implement a crate's own handler trait (mux's `SessionHandler`) around
//! them; and a [`WakeCount`] waker for sans-IO state machines driven
//! without a runtime.
//!
//! Not here: anything that needs a Rayback crate above `core` (testkit
//! would import in a circle with the crates that use it as a
//! dev-dependency). Every socket is on loopback; every UDP relay is bounded in
//! time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::packet::{read_packet, write_packet};
use rayback_core::relay::relay;
use rayback_core::{Destination, Dispatch, Network, Outbound, Policy, Session, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// How long a UDP relay of [`relay_to_destination`] lasts at most (a
/// test's exchange is over well before).
const UDP_LIMIT: Duration = Duration::from_secs(5);

/// A waker that counts how often it was woken: what a test of a sans-IO
/// state machine (mux's engine and send queue) asserts instead of a task
/// being scheduled.
#[derive(Debug, Default)]
pub struct WakeCount(AtomicUsize);

impl WakeCount {
    /// A fresh count and a waker that adds to it.
    pub fn waker() -> (Arc<WakeCount>, Waker) {
        let count = Arc::new(WakeCount::default());
        (Arc::clone(&count), Waker::from(count))
    }

    /// Wakes so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a [`RecordingDispatch`] does with a session after recording it.
pub enum Then {
    /// Sends every byte (TCP) or packet (UDP) back: [`echo`].
    Echo,
    /// Connects to the session's destination, which must be an IP address:
    /// [`relay_to_destination`]; `connect` dials it over TCP.
    Relay,
    /// Hands the session to `outbound` (its `handle`, or its `connect`).
    Outbound {
        outbound: Arc<dyn Outbound>,
        policy: Policy,
    },
}

/// A `Dispatch` that records each session it is given to dispatch, then
/// does [`Then`] (its `connect` records nothing).
pub struct RecordingDispatch {
    sessions: Mutex<Vec<Session>>,
    then: Then,
}

impl RecordingDispatch {
    pub fn new(then: Then) -> RecordingDispatch {
        RecordingDispatch {
            sessions: Mutex::default(),
            then,
        }
    }

    /// Every session dispatched so far, oldest first.
    pub fn sessions(&self) -> Vec<Session> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Dispatch for RecordingDispatch {
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()> {
        self.lock().push(session.clone());
        match &self.then {
            Then::Echo => echo(&session.destination, stream).await,
            Then::Relay => relay_to_destination(&session.destination, stream).await,
            Then::Outbound { outbound, policy } => outbound.handle(session, stream, policy).await,
        }
    }

    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        match &self.then {
            Then::Echo => Err(io::Error::other(
                "a recording dispatch that echoes connects nowhere",
            )),
            Then::Relay => {
                let target = socket_addr(&session.destination)?;
                Ok(Box::new(TcpStream::connect(target).await?))
            }
            Then::Outbound { outbound, .. } => outbound.connect(session).await,
        }
    }
}

/// Echoes `stream` to itself until its peer ends: bytes for TCP, packets
/// in core's packet framing for UDP; then shuts the write side down.
pub async fn echo(destination: &Destination, stream: Stream) -> io::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    match destination.network {
        Network::Tcp => {
            tokio::io::copy(&mut reader, &mut writer).await?;
        }
        Network::Udp => {
            let mut packet = Vec::new();
            while read_packet(&mut reader, &mut packet).await? {
                write_packet(&mut writer, &packet).await?;
            }
        }
    }
    writer.shutdown().await
}

/// Carries `stream` to `destination` (an IP address): TCP with core's
/// relay; UDP as datagrams from a loopback socket, until the stream ends or
/// 5 s pass.
pub async fn relay_to_destination(destination: &Destination, stream: Stream) -> io::Result<()> {
    let target = socket_addr(destination)?;
    match destination.network {
        Network::Tcp => {
            let outbound = TcpStream::connect(target).await?;
            outbound.set_nodelay(true)?;
            relay(stream, outbound, &Policy::default()).await.map(drop)
        }
        Network::Udp => udp_relay(stream, target).await,
    }
}

fn socket_addr(destination: &Destination) -> io::Result<SocketAddr> {
    destination.socket_addr().ok_or_else(|| {
        io::Error::other(format!(
            "a test double needs an IP destination, not {destination}"
        ))
    })
}

async fn udp_relay(stream: Stream, target: SocketAddr) -> io::Result<()> {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    socket.connect(target).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let send_socket = Arc::clone(&socket);
    let uplink = async move {
        let mut packet = Vec::new();
        while read_packet(&mut reader, &mut packet).await? {
            send_socket.send(&packet).await?;
        }
        io::Result::Ok(())
    };
    let downlink = async move {
        let mut datagram = vec![0u8; 65536];
        loop {
            let len = socket.recv(&mut datagram).await?;
            write_packet(&mut writer, &datagram[..len]).await?;
        }
    };
    let _ = tokio::time::timeout(UDP_LIMIT, async {
        tokio::select! {
            result = uplink => result,
            result = downlink => result,
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::Address;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn records_and_echoes() {
        let dispatch = RecordingDispatch::new(Then::Echo);
        let (mut near, far) = tokio::io::duplex(1024);
        let destination = Destination::tcp(Address::Domain("echo.example".into()), 7);
        let served = tokio::spawn({
            let session = Session::new(destination.clone());
            async move {
                let dispatch = dispatch;
                dispatch.dispatch(session, Box::new(far)).await?;
                io::Result::Ok(dispatch.sessions())
            }
        });
        near.write_all(b"ping").await.unwrap();
        near.shutdown().await.unwrap();
        let mut back = Vec::new();
        near.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ping");
        let sessions = served.await.unwrap().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].destination, destination);
    }
}
