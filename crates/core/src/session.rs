//! What routing and handlers know about one connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::address::Destination;

/// The name of an inbound, outbound, bridge or portal, as written in the
/// config. Cheap to clone: sessions carry it everywhere.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

impl Tag {
    pub fn new(name: &str) -> Tag {
        Tag(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Tag {
    fn from(name: &str) -> Tag {
        Tag::new(name)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated user of a session (VMess), or just a policy level
/// (dokodemo-door's `userLevel`). Routing's `user` condition matches `email`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The `email` of the VMess client entry; empty when there is none.
    pub email: String,
    /// The policy level whose timeouts apply to this session.
    pub level: u32,
}

/// One proxied connection, as the router sees it: its fields
/// ([`SessionFields`]) behind one pointer, read and written through
/// `Deref` (`session.destination`).
///
/// Boxed because a session is passed by value down every layer a
/// connection crosses (inbound, dispatcher, outbound) and an async
/// function keeps room for its parameters for as long as its future
/// lives: inline, each layer a held connection still waits in carried
/// 176 bytes for a session it had already handed on or dropped; boxed, 8,
/// and the fields are freed when the last layer lets the session go.
///
/// Mux sub-streams inherit `inbound_tag`, `source` and `user` from the
/// connection that carries them, as in V2Ray; a bridge's own connections
/// have its tag and no source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session(Box<SessionFields>);

/// What a [`Session`] knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFields {
    /// The tag of the inbound (or bridge) the connection came from.
    pub inbound_tag: Option<Tag>,
    /// Where the connection wants to go.
    pub destination: Destination,
    /// The peer address of the accepted socket, when there is one.
    pub source: Option<SocketAddr>,
    /// The user, when the inbound knows one.
    pub user: Option<User>,
    /// The send budget of the connection the session arrived on, when
    /// that connection has one (a VMess body's 16-bit nonce counter). A
    /// portal reads it to retire a tunnel connection before it runs out.
    pub send_budget: Option<SendBudget>,
    /// The application protocol sniffed from the first bytes ("http",
    /// "tls", "bittorrent"), when the inbound sniffs and one was found.
    /// Routing's `protocol` condition matches it.
    pub protocol: Option<Arc<str>>,
    /// Which of the chosen outbound's servers to dial (its `vnext` index),
    /// when the caller picks: a bridge keeps a tunnel to every portal its
    /// tunnel outbound lists. `None`: the outbound's own choice.
    pub server: Option<usize>,
    /// The Rayback-only extensions the peer that opened this connection
    /// asked for and the inbound agreed to (in its VMess request): a
    /// portal adopting the connection as a tunnel then sends each public
    /// session's source ([`Extensions::SOURCE`]) and datagrams over 2048
    /// bytes ([`Extensions::LARGE_PACKETS`]). Empty for a V2Ray peer, which
    /// never asks.
    pub peer_extensions: Extensions,
    /// Where the outbound that dials this connection records the
    /// Rayback-only extensions its server agreed to, once the answer
    /// arrives (VMess: the response header, which comes before any body
    /// byte is read). A caller that wants to know (a bridge) puts a fresh
    /// one here before dialling; `None`: nobody asks. Not inherited by
    /// sessions carried inside the connection ([`Session::redirected`]).
    pub agreed_by_server: Option<AgreedExtensions>,
}

/// A set of Rayback-only wire extensions, negotiated per connection: a
/// Rayback client offers them, a Rayback server answers those it agrees
/// to, and a V2Ray peer on either end neither offers nor answers any (see
/// ARCHITECTURE.md for their wire signals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extensions(u8);

impl Extensions {
    pub const NONE: Extensions = Extensions(0);
    /// The client (a bridge) reads the visitor's source that a portal
    /// appends to Mux.Cool New frames.
    pub const SOURCE: Extensions = Extensions(0x01);
    /// Both ends take Mux.Cool packet frames of up to 65,535 bytes of
    /// data, where V2Ray 4.34 refuses any over 2048 (and drops the whole
    /// connection): UDP datagrams up to 65,507 bytes cross the tunnel.
    pub const LARGE_PACKETS: Extensions = Extensions(0x02);

    /// Whether every extension of `other` is in this set.
    pub fn contains(self, other: Extensions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Extensions {
    type Output = Extensions;

    fn bitor(self, other: Extensions) -> Extensions {
        Extensions(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Extensions {
    fn bitor_assign(&mut self, other: Extensions) {
        self.0 |= other.0;
    }
}

/// The extensions a connection's server agreed to, as learnt by the
/// outbound that dialled it: a cheap, cloneable cell whose clones all see
/// one value. Empty until the outbound records the answer, and for good
/// when the server is V2Ray (or the outbound negotiates nothing).
#[derive(Clone, Default)]
pub struct AgreedExtensions(Arc<AtomicU8>);

impl AgreedExtensions {
    pub fn new() -> AgreedExtensions {
        AgreedExtensions::default()
    }

    /// Records the server's answer (the outbound's side).
    pub fn record(&self, agreed: Extensions) {
        self.0.store(agreed.0, Ordering::Release);
    }

    /// What the server agreed to so far.
    pub fn get(&self) -> Extensions {
        Extensions(self.0.load(Ordering::Acquire))
    }
}

impl fmt::Debug for AgreedExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AgreedExtensions")
            .field(&self.get())
            .finish()
    }
}

impl PartialEq for AgreedExtensions {
    fn eq(&self, other: &AgreedExtensions) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for AgreedExtensions {}

/// An inbound's `sniffing` when enabled (or its legacy `domainOverride`):
/// the dispatcher reads the first bytes of each TCP session, names the
/// protocol ([`SessionFields::protocol`]) and, for the protocols listed here,
/// routes and dials the domain it found instead of the destination's
/// address (the port is kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sniffing {
    /// `destOverride`, each name once, in config order.
    pub dest_override: Vec<SniffOverride>,
}

impl Sniffing {
    /// Whether a session sniffed as `protocol` ("http1", "tls", ...) takes
    /// the sniffed domain as its address. V2Ray compares by prefix, so
    /// "http" covers "http1".
    pub fn overrides(&self, protocol: &str) -> bool {
        self.dest_override
            .iter()
            .any(|name| protocol.starts_with(name.as_str()))
    }
}

/// A protocol `destOverride` may name. V2Ray reads "http", and "tls",
/// "https" or "ssl" for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SniffOverride {
    Http,
    Tls,
}

impl SniffOverride {
    /// The name V2Ray prints and matches by prefix: "http" or "tls".
    pub fn as_str(self) -> &'static str {
        match self {
            SniffOverride::Http => "http",
            SniffOverride::Tls => "tls",
        }
    }

    /// Reads a `destOverride` entry, case-insensitively; `None` for a name
    /// V2Ray does not know.
    pub fn parse(name: &str) -> Option<SniffOverride> {
        match name.to_ascii_lowercase().as_str() {
            "http" => Some(SniffOverride::Http),
            "tls" | "https" | "ssl" => Some(SniffOverride::Tls),
            _ => None,
        }
    }
}

/// Whether a connection is close to the end of what it may send.
///
/// A cheap, cloneable view that outlives the boxed stream it describes.
#[derive(Clone)]
pub struct SendBudget(Arc<dyn Fn() -> bool + Send + Sync>);

impl SendBudget {
    /// `is_low` answers whether the connection should take no new work.
    pub fn new(is_low: impl Fn() -> bool + Send + Sync + 'static) -> SendBudget {
        SendBudget(Arc::new(is_low))
    }

    pub fn is_low(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for SendBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBudget")
            .field("low", &self.is_low())
            .finish()
    }
}

impl PartialEq for SendBudget {
    fn eq(&self, other: &SendBudget) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SendBudget {}

impl Session {
    pub fn new(destination: Destination) -> Session {
        Session(Box::new(SessionFields {
            inbound_tag: None,
            destination,
            source: None,
            user: None,
            send_budget: None,
            protocol: None,
            server: None,
            peer_extensions: Extensions::NONE,
            agreed_by_server: None,
        }))
    }

    pub fn with_inbound_tag(mut self, tag: Tag) -> Session {
        self.inbound_tag = Some(tag);
        self
    }

    pub fn with_source(mut self, source: SocketAddr) -> Session {
        self.source = Some(source);
        self
    }

    pub fn with_user(mut self, user: User) -> Session {
        self.user = Some(user);
        self
    }

    pub fn with_protocol(mut self, protocol: &str) -> Session {
        self.protocol = Some(Arc::from(protocol));
        self
    }

    /// The index of the server to dial among `count`: the one the session
    /// names ([`SessionFields::server`]), else the next in round robin.
    pub fn server_index(&self, round_robin: &AtomicUsize, count: usize) -> usize {
        match self.server {
            Some(index) => index % count.max(1),
            None => round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1),
        }
    }

    /// The policy level: the user's, else 0.
    pub fn level(&self) -> u32 {
        self.user.as_ref().map_or(0, |user| user.level)
    }

    /// A copy of this session's origin (tag, source, user) going somewhere
    /// else: what a mux sub-stream gets from its carrying connection.
    pub fn redirected(&self, destination: Destination) -> Session {
        let mut session = self.clone();
        session.destination = destination;
        // The cell describes the carrying connection's own dial.
        session.agreed_by_server = None;
        session
    }
}

impl std::ops::Deref for Session {
    type Target = SessionFields;

    fn deref(&self) -> &SessionFields {
        &self.0
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut SessionFields {
        &mut self.0
    }
}
