//! Sniffing before routing: an inbound with `sniffing` enabled hands its
//! sessions to a [`SniffingDispatch`], which reads the first bytes of each
//! TCP session, names the protocol (`Session::protocol`, which routing's
//! `protocol` condition matches) and, for the protocols in `destOverride`,
//! replaces the destination's address with the sniffed domain (the port is
//! kept) before the dispatcher routes it and the outbound dials it.
//!
//! As V2Ray 4.34's dispatcher does: at most two waits of 100 ms for bytes,
//! at most one buffer (2048 bytes); when nothing is recognised in that
//! time the session goes on unsniffed. UDP sessions and the Mux.Cool
//! connection itself (`v1.mux.cool`) are not sniffed; its TCP sub-streams
//! are, each on its own (4.34 keeps one sniffed protocol for all the
//! sub-streams of a connection, so one it cannot sniff inherits an
//! earlier one's; Rayback does not copy that). Whatever was read is handed
//! to the outbound first, unchanged (core's [`Prefixed`]). The recognising itself
//! is sans-IO, in `rayback_routing::sniff`.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::{Dispatch, Network, Prefixed, Session, Sniffing, Stream};
use rayback_mux::{is_mux_cool, serve_mux_with};
use rayback_routing::sniff::{Sniffer, SNIFF_BUFFER};
use tokio::io::AsyncReadExt;

use crate::dispatcher::SharedDispatch;

/// How long one attempt waits for bytes, and how many attempts there are
/// (4.34: 100 ms, twice).
const ATTEMPT_WAIT: Duration = Duration::from_millis(100);
const ATTEMPTS: usize = 2;

/// The dispatch of one inbound that sniffs: sniffs, then hands the session
/// to the shared dispatcher. A Mux.Cool connection is served here, so that
/// its sub-streams are sniffed too, as in 4.34 (the mux server dispatches
/// them with the inbound's sniffing request).
pub struct SniffingDispatch {
    shared: Arc<SharedDispatch>,
    sniffing: Sniffing,
    me: Weak<SniffingDispatch>,
}

impl SniffingDispatch {
    pub fn new(shared: Arc<SharedDispatch>, sniffing: Sniffing) -> Arc<SniffingDispatch> {
        Arc::new_cyclic(|me| SniffingDispatch {
            shared,
            sniffing,
            me: me.clone(),
        })
    }
}

#[async_trait]
impl Dispatch for SniffingDispatch {
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()> {
        if is_mux_cool(&session.destination) {
            let me: Arc<dyn Dispatch> = self.me.upgrade().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the app is shutting down")
            })?;
            let settings = self.shared.current().mux_settings();
            return serve_mux_with(stream, session, me, settings).await;
        }
        if session.destination.network != Network::Tcp {
            return self.shared.dispatch(session, stream).await;
        }
        let (session, stream) = sniff(session, stream, &self.sniffing).await;
        self.shared.dispatch(session, Box::new(stream)).await
    }

    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        // Nothing has been sent yet: there is nothing to sniff.
        self.shared.connect(session).await
    }
}

/// Reads the first bytes of `stream` and names them: the session gains
/// the protocol and, when `sniffing` overrides it, the sniffed address.
/// Never fails: a read error is kept for the outbound to see.
pub async fn sniff(
    mut session: Session,
    mut stream: Stream,
    sniffing: &Sniffing,
) -> (Session, Prefixed<Stream>) {
    let mut buffer = vec![0; SNIFF_BUFFER];
    let mut filled = 0;
    let mut sniffer = Sniffer::new();
    let mut end = None;
    for _ in 0..ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_WAIT, stream.read(&mut buffer[filled..])).await {
            Ok(Ok(0)) => end = Some(Ok(())),
            Ok(Ok(read)) => filled += read,
            Ok(Err(error)) => end = Some(Err(error)),
            Err(_elapsed) => {}
        }
        if filled > 0 {
            match sniffer.sniff(&buffer[..filled]) {
                Ok(Some(sniffed)) => {
                    session = session.with_protocol(sniffed.protocol);
                    match sniffed.address {
                        Some(address) if sniffing.overrides(sniffed.protocol) => {
                            tracing::debug!(
                                "sniffed {} domain {address} for {}",
                                sniffed.protocol,
                                session.destination
                            );
                            session.destination.address = address;
                        }
                        _ => tracing::debug!("sniffed {}", sniffed.protocol),
                    }
                    break;
                }
                Ok(None) => {}
                Err(unknown) => {
                    tracing::debug!("sniffing {}: {unknown}", session.destination);
                    break;
                }
            }
        }
        if filled == buffer.len() || end.is_some() {
            break;
        }
    }
    buffer.truncate(filled);
    let stream = match end {
        None => Prefixed::new(buffer, stream),
        Some(end) => Prefixed::ended(buffer, stream, end),
    };
    (session, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::{Address, Destination, SniffOverride};
    use tokio::io::AsyncWriteExt;

    fn plain_session() -> Session {
        Session::new(Destination::tcp(Address::parse("10.0.0.1").unwrap(), 8443))
    }

    fn overriding(protocols: &[SniffOverride]) -> Sniffing {
        Sniffing {
            dest_override: protocols.to_vec(),
        }
    }

    #[tokio::test]
    async fn http_host_overrides_the_address_and_the_bytes_are_replayed() {
        let (mut client, server) = tokio::io::duplex(4096);
        let request = b"GET / HTTP/1.1\r\nHost: A.Example:81\r\n\r\nbody";
        client.write_all(request).await.unwrap();
        let (session, mut stream) = sniff(
            plain_session(),
            Box::new(server),
            &overriding(&[SniffOverride::Http]),
        )
        .await;
        assert_eq!(session.protocol.as_deref(), Some("http1"));
        assert_eq!(
            session.destination,
            Destination::tcp(Address::parse("a.example").unwrap(), 8443)
        );
        client.write_all(b" more").await.unwrap();
        drop(client);
        let mut replayed = Vec::new();
        stream.read_to_end(&mut replayed).await.unwrap();
        assert_eq!(
            replayed,
            b"GET / HTTP/1.1\r\nHost: A.Example:81\r\n\r\nbody more"
        );
    }

    #[tokio::test]
    async fn a_protocol_not_in_dest_override_keeps_the_address() {
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        let (session, _stream) = sniff(
            plain_session(),
            Box::new(server),
            &overriding(&[SniffOverride::Tls]),
        )
        .await;
        assert_eq!(session.protocol.as_deref(), Some("http1"));
        assert_eq!(
            session.destination.address,
            Address::parse("10.0.0.1").unwrap()
        );
    }

    #[tokio::test]
    async fn silence_and_unknown_bytes_go_on_unsniffed() {
        let (client, server) = tokio::io::duplex(4096);
        let (session, _stream) = sniff(plain_session(), Box::new(server), &overriding(&[])).await;
        assert_eq!(session.protocol, None);
        drop(client);

        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        drop(client);
        let (session, mut stream) =
            sniff(plain_session(), Box::new(server), &overriding(&[])).await;
        assert_eq!(session.protocol, None);
        let mut replayed = Vec::new();
        stream.read_to_end(&mut replayed).await.unwrap();
        assert_eq!(replayed, b"SSH-2.0-x\r\n");
    }
}
