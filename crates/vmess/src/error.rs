//! The crate's errors: one enum for configuration and codec failures, a
//! handshake-rejection enum whose variants double as metric reasons, and
//! the conversion to `io::Error` for everything that passes through
//! `AsyncRead`/`AsyncWrite`.

use std::io;

/// Why a request header was refused by a server. Every one of these leads
/// to the same silent drain (see [`crate::inbound`]); the variant only feeds
/// logs and [`crate::VmessMetrics`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("no user matches the auth id")]
    UnknownUser,
    #[error("auth id time is {0} s away from the server clock")]
    StaleTimestamp(i64),
    #[error("replayed auth id")]
    ReplayedAuthId,
    #[error("sealed header does not authenticate")]
    HeaderUnauthentic,
    #[error("sealed header length {0} is out of range")]
    HeaderLength(u16),
    #[error("header checksum {found:08x} does not match {expected:08x}")]
    BadChecksum { expected: u32, found: u32 },
    #[error("duplicate session (same user, body key and iv)")]
    DuplicateSession,
    #[error("legacy auth entry was burnt by an earlier failure")]
    TaintedAuth,
    #[error("unsupported body security {0}")]
    UnsupportedSecurity(u8),
    #[error("options {0:#04x} ask for padding without masking")]
    PaddingWithoutMasking(u8),
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    #[error("unknown address type {0:#04x}")]
    UnknownAddressType(u8),
    #[error("invalid domain {0:?}")]
    InvalidDomain(String),
}

/// The reasons a server counts handshake failures under: the variants of
/// [`HandshakeError`] plus the ways a connection can end mid-handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    UnknownUser,
    StaleTimestamp,
    ReplayedAuthId,
    HeaderUnauthentic,
    BadChecksum,
    DuplicateSession,
    UnsupportedRequest,
    /// The handshake deadline passed before a complete header arrived.
    Timeout,
    /// The client closed (or reset) before a complete header arrived.
    ClientLeft,
    /// The source address already had its limit of connections in their
    /// handshake; this one was closed at once.
    TooManyFromSource,
    /// The transport's handshake failed (TLS, WebSocket upgrade, PROXY
    /// header) before any VMess byte.
    Transport,
}

impl FailureReason {
    /// Every reason, in metric order.
    pub const ALL: [FailureReason; 11] = [
        FailureReason::UnknownUser,
        FailureReason::StaleTimestamp,
        FailureReason::ReplayedAuthId,
        FailureReason::HeaderUnauthentic,
        FailureReason::BadChecksum,
        FailureReason::DuplicateSession,
        FailureReason::UnsupportedRequest,
        FailureReason::Timeout,
        FailureReason::ClientLeft,
        FailureReason::TooManyFromSource,
        FailureReason::Transport,
    ];

    /// A short snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::StaleTimestamp => "stale_timestamp",
            FailureReason::ReplayedAuthId => "replayed_auth_id",
            FailureReason::HeaderUnauthentic => "header_unauthentic",
            FailureReason::BadChecksum => "bad_checksum",
            FailureReason::DuplicateSession => "duplicate_session",
            FailureReason::UnsupportedRequest => "unsupported_request",
            FailureReason::Timeout => "timeout",
            FailureReason::ClientLeft => "client_left",
            FailureReason::TooManyFromSource => "too_many_from_source",
            FailureReason::Transport => "transport",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl HandshakeError {
    /// The metric reason this rejection is counted under.
    pub fn reason(&self) -> FailureReason {
        match self {
            HandshakeError::UnknownUser => FailureReason::UnknownUser,
            HandshakeError::StaleTimestamp(_) => FailureReason::StaleTimestamp,
            HandshakeError::ReplayedAuthId => FailureReason::ReplayedAuthId,
            HandshakeError::HeaderUnauthentic | HandshakeError::HeaderLength(_) => {
                FailureReason::HeaderUnauthentic
            }
            HandshakeError::BadChecksum { .. } | HandshakeError::TaintedAuth => {
                FailureReason::BadChecksum
            }
            HandshakeError::DuplicateSession => FailureReason::DuplicateSession,
            HandshakeError::UnsupportedSecurity(_)
            | HandshakeError::PaddingWithoutMasking(_)
            | HandshakeError::UnknownCommand(_)
            | HandshakeError::UnknownAddressType(_)
            | HandshakeError::InvalidDomain(_) => FailureReason::UnsupportedRequest,
        }
    }
}

/// Everything else that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum VmessError {
    #[error("invalid uuid {0:?}")]
    InvalidUuid(String),
    #[error("0 vmess receiver configured")]
    NoServer,
    #[error("0 user configured for vmess server {0}")]
    NoUser(String),
    #[error("handshake rejected: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("body chunk {chunk} does not authenticate")]
    ChunkUnauthentic { chunk: u64 },
    #[error("body chunk length {0} is shorter than its overhead")]
    ChunkTooShort(u16),
    #[error("connection ended inside a body chunk")]
    TruncatedChunk,
    #[error("send budget of {0} chunks is spent; the connection must be replaced")]
    BudgetExhausted(u32),
    #[error("response header does not authenticate")]
    ResponseUnauthentic,
    #[error("response auth byte {found:#04x} is not the request's {expected:#04x}")]
    ResponseAuthMismatch { expected: u8, found: u8 },
    #[error("response header length {0} is out of range")]
    ResponseLength(u16),
    #[error("destination {0} cannot be carried by vmess")]
    BadDestination(String),
}

impl From<VmessError> for io::Error {
    fn from(error: VmessError) -> io::Error {
        let kind = match &error {
            VmessError::TruncatedChunk => io::ErrorKind::UnexpectedEof,
            VmessError::BudgetExhausted(_) => io::ErrorKind::BrokenPipe,
            VmessError::InvalidUuid(_)
            | VmessError::NoServer
            | VmessError::NoUser(_)
            | VmessError::BadDestination(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}
