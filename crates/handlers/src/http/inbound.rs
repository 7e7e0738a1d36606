//! The `http` inbound's driver: accepts TCP connections, reads one
//! request head under the handshake deadline, checks Basic credentials
//! when `accounts` are set (407 with `Proxy-Authenticate` otherwise), and
//! dispatches, as V2Ray 4.34's `proxy/http/server.go`:
//!
//! - CONNECT: `HTTP/1.1 200 Connection established` goes out before
//!   anything is dialled, then the connection is the tunnel's stream.
//! - A plain request (absolute URI, or origin form with
//!   `allowTransparent`): each request is a session of its own (so one
//!   connection may reach different hosts), its head rewritten for the
//!   origin (see `codec`, `Connection: close` toward the origin) and its
//!   `Content-Length` body passed on; the origin's answer head is
//!   rewritten as 4.34 writes it. With a known answer length the client
//!   connection stays for a next request when it asked `Proxy-Connection:
//!   keep-alive` (each next head under the handshake deadline, as 4.34);
//!   otherwise it ends after the answer. An answer that does not parse
//!   gets 503. A request that is not absolute without
//!   `allowTransparent` gets 400; a head that does not parse is closed
//!   without an answer, as 4.34 does.
//!
//! Deviation from 4.34: a chunked request body is passed on as received
//! (4.34 re-chunks it) and that request's connection then carries nothing
//! else.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use rayback_core::{unmap, Inbound, InboundContext, Prefixed, Session, Stream, Tag, User};
use rayback_transport::{Accepted, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::codec::{self, BodyLength, HttpProxyError, RequestHead};

/// The in-memory pipe between a plain request and its session.
const PIPE: usize = 64 * 1024;

/// The `http` inbound's settings plus where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    pub tag: Option<Tag>,
    /// `listen` and `port` of the inbound object.
    pub listen: SocketAddr,
    /// `settings.accounts`: username → password; empty means no
    /// authentication.
    pub accounts: std::collections::HashMap<String, String>,
    /// `settings.allowTransparent`: accept origin-form requests, sent to
    /// their `Host`.
    pub allow_transparent: bool,
    /// `settings.userLevel`.
    pub user_level: u32,
    /// The bound on the transport handshake and the request head.
    pub handshake: Duration,
}

impl HttpSettings {
    pub fn new(listen: SocketAddr) -> HttpSettings {
        HttpSettings {
            tag: None,
            listen,
            accounts: Default::default(),
            allow_transparent: false,
            user_level: 0,
            handshake: Duration::from_secs(4),
        }
    }
}

/// A bound HTTP proxy inbound; [`Inbound::run`] serves it once.
#[derive(Debug)]
pub struct HttpInbound {
    settings: HttpSettings,
    tcp: Mutex<Option<TcpListener>>,
    transport: Option<Arc<Transport>>,
    local_addr: SocketAddr,
}

impl HttpInbound {
    pub async fn bind(settings: HttpSettings) -> io::Result<HttpInbound> {
        let listener = rayback_transport::socket::listen(settings.listen)?;
        let local_addr = listener.local_addr()?;
        Ok(HttpInbound {
            settings,
            tcp: Mutex::new(Some(listener)),
            transport: None,
            local_addr,
        })
    }

    /// Runs `transport` on every accepted connection before HTTP.
    pub fn with_transport(mut self, transport: Arc<Transport>) -> HttpInbound {
        self.transport = (!transport.is_plain_tcp()).then_some(transport);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn accept_loop(self: &Arc<Self>, listener: &TcpListener, context: &InboundContext) {
        let what = format!("http proxy inbound on {}", self.local_addr);
        context
            .accept_each(listener, &what, |socket, peer| {
                let inbound = Arc::clone(self);
                let context = context.clone();
                context.tracker.clone().spawn(async move {
                    if let Err(error) = inbound.serve(socket, peer, &context).await {
                        tracing::info!(tag = ?inbound.settings.tag, %peer, %error, "http proxy connection ends");
                    }
                });
            })
            .await;
    }

    async fn serve(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        context: &InboundContext,
    ) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let deadline = Instant::now() + self.settings.handshake;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "http proxy request timed out");
        let (mut conn, source): (Stream, SocketAddr) = match &self.transport {
            None => (Box::new(socket), peer),
            Some(transport) => {
                let Accepted { conn, source } =
                    tokio::time::timeout_at(deadline, transport.accept(socket, peer))
                        .await
                        .map_err(|_| timed_out())??;
                (Box::new(conn), source)
            }
        };
        let mut buffer = BytesMut::with_capacity(4096);
        let mut first = true;
        loop {
            // Each request head, the first and those on a kept
            // connection, is read under the handshake deadline, as 4.34
            // sets it at every request.
            let deadline = Instant::now() + self.settings.handshake;
            let head =
                match tokio::time::timeout_at(deadline, read_head(&mut conn, &mut buffer)).await {
                    Ok(Ok(head)) => head,
                    // A kept connection that stays quiet or closes between
                    // requests simply ends.
                    Err(_) | Ok(Err(_)) if !first && buffer.is_empty() => return Ok(()),
                    Err(_) => return Err(timed_out()),
                    Ok(Err(error)) => return Err(error),
                };
            first = false;
            let mut user = User {
                email: String::new(),
                level: self.settings.user_level,
            };
            if !self.settings.accounts.is_empty() {
                let known = codec::basic_credentials(&head)
                    .filter(|(name, password)| self.settings.accounts.get(name) == Some(password));
                let Some((name, _)) = known else {
                    conn.write_all(codec::PROXY_AUTH_REQUIRED).await?;
                    conn.shutdown().await?;
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "http proxy: missing or wrong credentials",
                    ));
                };
                user.email = name;
            }
            let target = match codec::target(&head, self.settings.allow_transparent) {
                Ok(target) => target,
                Err(error @ HttpProxyError::NotAbsolute(_)) => {
                    conn.write_all(codec::BAD_REQUEST).await?;
                    conn.shutdown().await?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            };
            let mut session = Session::new(target.destination.clone())
                .with_source(unmap(source))
                .with_user(user);
            if let Some(tag) = &self.settings.tag {
                session = session.with_inbound_tag(tag.clone());
            }
            if head.is_connect() {
                conn.write_all(codec::CONNECT_ESTABLISHED).await?;
                let stream = Prefixed::new(buffer.to_vec(), conn);
                return context.dispatch.dispatch(session, Box::new(stream)).await;
            }
            let body = codec::request_body(&head)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            if body == BodyLength::Chunked {
                // The chunked body goes on as received and the connection
                // is this request's alone.
                let mut prefix = codec::rewrite_plain(&head, &target);
                prefix.extend_from_slice(&buffer);
                let stream = Prefixed::new(prefix, conn);
                return context.dispatch.dispatch(session, Box::new(stream)).await;
            }
            let keep_alive = head.wants_keep_alive();
            let reusable = forward_plain(
                &head,
                &target,
                body,
                session,
                &mut conn,
                &mut buffer,
                context,
            )
            .await?;
            if !(keep_alive && reusable) {
                return conn.shutdown().await;
            }
        }
    }
}

/// Carries one plain request (head rewritten, `body` bytes from the
/// client) to its own session and the origin's answer back, rewritten.
/// Returns whether the connection may carry another request (the answer
/// had a known length).
async fn forward_plain(
    head: &RequestHead,
    target: &codec::Target,
    body: BodyLength,
    session: Session,
    conn: &mut Stream,
    buffer: &mut BytesMut,
    context: &InboundContext,
) -> io::Result<bool> {
    let (near, far) = tokio::io::duplex(PIPE);
    let dispatch = Arc::clone(&context.dispatch);
    let destination = session.destination.clone();
    context.tracker.spawn(async move {
        if let Err(error) = dispatch.dispatch(session, Box::new(far)).await {
            tracing::debug!(%destination, %error, "http proxy request session ends");
        }
    });
    let (mut from_origin, mut to_origin) = tokio::io::split(near);
    let send = async {
        to_origin
            .write_all(&codec::rewrite_plain(head, target))
            .await?;
        if let BodyLength::Fixed(length) = body {
            copy_exact(buffer, conn, &mut to_origin, length).await?;
        }
        to_origin.flush().await
    };
    let mut answer = BytesMut::with_capacity(4096);
    let receive = async {
        loop {
            match codec::parse_response_head(&answer) {
                Ok(Some((head, used))) => {
                    let _ = answer.split_to(used);
                    // An interim answer (100 Continue) is not the answer:
                    // the body was sent anyway, so it is dropped.
                    if !codec::is_interim(&head) {
                        return Ok(head);
                    }
                }
                Ok(None) => {
                    if from_origin.read_buf(&mut answer).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "no answer from the origin",
                        ));
                    }
                }
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            }
        }
    };
    let (sent, received) = tokio::join!(send, receive);
    let response = match (sent, received) {
        (Ok(()), Ok(response)) => response,
        (Err(error), _) => return Err(error),
        (Ok(()), Err(error)) => {
            conn.write_all(codec::SERVICE_UNAVAILABLE).await?;
            return Err(error);
        }
    };
    let response_body = match codec::response_body(&response, &head.method) {
        Ok(body) => body,
        Err(error) => {
            conn.write_all(codec::SERVICE_UNAVAILABLE).await?;
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
    };
    conn.write_all(&codec::rewrite_response(&response, response_body))
        .await?;
    match response_body {
        BodyLength::Empty => Ok(true),
        BodyLength::Fixed(length) => {
            copy_exact(&mut answer, &mut from_origin, conn, length).await?;
            conn.flush().await?;
            Ok(true)
        }
        BodyLength::Chunked | BodyLength::UntilClose => {
            conn.write_all(&answer).await?;
            tokio::io::copy(&mut from_origin, conn).await?;
            Ok(false)
        }
    }
}

/// Copies exactly `length` bytes: first from `buffered`, then from
/// `reader` (through `buffered`, which keeps what comes after).
async fn copy_exact<R, W>(
    buffered: &mut BytesMut,
    reader: &mut R,
    writer: &mut W,
    length: u64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut left = length;
    while left > 0 {
        if buffered.is_empty() && reader.read_buf(buffered).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "http message body cut short",
            ));
        }
        let take = buffered
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        writer.write_all(&buffered.split_to(take)).await?;
        left -= take as u64;
    }
    Ok(())
}

#[async_trait]
impl Inbound for HttpInbound {
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()> {
        let listener = self
            .tcp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            self.accept_loop(&listener, &context).await;
        }
        Ok(())
    }
}

/// Reads until a whole request head is in `buffer`; removes it from there.
async fn read_head(conn: &mut Stream, buffer: &mut BytesMut) -> io::Result<RequestHead> {
    loop {
        match codec::parse_head(buffer) {
            Ok(Some((head, used))) => {
                let _ = buffer.split_to(used);
                return Ok(head);
            }
            Ok(None) => {
                if conn.read_buf(buffer).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "http proxy client left before a whole request",
                    ));
                }
            }
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::{Address, Destination};
    use rayback_testkit::doubles::{RecordingDispatch, Then};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    const LIMIT: Duration = Duration::from_secs(10);

    async fn serve(settings: HttpSettings) -> (SocketAddr, Arc<RecordingDispatch>) {
        let inbound = Arc::new(HttpInbound::bind(settings).await.unwrap());
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

    fn settings() -> HttpSettings {
        HttpSettings::new("127.0.0.1:0".parse().unwrap())
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
    async fn connect_answers_200_and_carries_what_follows() {
        let mut settings = settings();
        settings.accounts.insert("bob".into(), "pw".into());
        settings.user_level = 2;
        let (addr, dispatch) = serve(settings).await;
        // "bob:pw" in base64.
        let request =
            b"CONNECT example.com:8443 HTTP/1.1\r\nProxy-Authorization: Basic Ym9iOnB3\r\n\r\nping";
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut answer = vec![0u8; codec::CONNECT_ESTABLISHED.len() + 4];
        tokio::time::timeout(LIMIT, client.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&answer[..answer.len() - 4], codec::CONNECT_ESTABLISHED);
        assert_eq!(&answer[answer.len() - 4..], b"ping");
        let session = &dispatch.sessions()[0];
        assert_eq!(
            session.destination,
            Destination::tcp(Address::Domain("example.com".into()), 8443)
        );
        let user = session.user.as_ref().unwrap();
        assert_eq!((user.email.as_str(), user.level), ("bob", 2));
    }

    #[tokio::test]
    async fn refusals() {
        let mut with_accounts = settings();
        with_accounts.accounts.insert("bob".into(), "pw".into());
        let (addr, dispatch) = serve(with_accounts).await;
        let wrong = b"GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic Ym9iOm5v\r\n\r\n";
        assert_eq!(answer_to(addr, wrong).await, codec::PROXY_AUTH_REQUIRED);
        assert_eq!(
            answer_to(addr, b"GET http://a/ HTTP/1.1\r\n\r\n").await,
            codec::PROXY_AUTH_REQUIRED
        );
        assert!(dispatch.sessions().is_empty());
        let (addr, dispatch) = serve(settings()).await;
        assert_eq!(
            answer_to(addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await,
            codec::BAD_REQUEST
        );
        assert_eq!(answer_to(addr, b"\x05\x01\x00\r\n\r\n").await, b"");
        assert_eq!(
            answer_to(addr, b"CONNECT a:b:c HTTP/1.1\r\n\r\n").await,
            b""
        );
        assert!(dispatch.sessions().is_empty());
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_gets_503() {
        // The echo dispatch sends the request back as the "answer": a
        // request line does not parse as a status line.
        let (addr, dispatch) = serve(settings()).await;
        let answer = answer_to(addr, b"GET http://10.0.0.1:81/p HTTP/1.1\r\n\r\n").await;
        assert_eq!(answer, codec::SERVICE_UNAVAILABLE);
        assert_eq!(
            dispatch.sessions()[0].destination.to_string(),
            "tcp:10.0.0.1:81"
        );
    }

    #[tokio::test]
    async fn a_stalled_head_ends_at_the_deadline() {
        let mut settings = settings();
        settings.handshake = Duration::from_millis(200);
        let (addr, _) = serve(settings).await;
        assert_eq!(answer_to(addr, b"GET http://a/ HTTP/1.1\r\n").await, b"");
    }
}
