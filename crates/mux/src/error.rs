//! The crate's one error type: bad frames from the peer, a closed or full
//! connection, a bad `concurrency` value. Not the place for sub-stream IO
//! errors, which travel as `io::Error` through `AsyncRead`/`AsyncWrite`.

use std::io;

/// Why a frame could not be decoded or encoded, or a session not opened.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// V2Ray refuses metadata over 512 bytes; so do we, before allocating.
    #[error("frame metadata length {0} is over 512")]
    MetadataTooLong(u16),
    /// Every frame's metadata holds at least session ID, status, option.
    #[error("frame metadata length {0} is under 4")]
    MetadataTooShort(u16),
    /// A `New` frame's metadata must also hold network, port, address type.
    #[error("new frame metadata length {0} is under 8")]
    NewMetadataTooShort(u16),
    #[error("unknown frame status {0:#04x}")]
    UnknownStatus(u8),
    #[error("unknown network {0:#04x} in new frame")]
    UnknownNetwork(u8),
    #[error("unknown address type {0:#04x} in new frame")]
    UnknownAddressType(u8),
    /// The address of a `New` frame runs past the end of its metadata.
    #[error("address truncated in new frame of session {0}")]
    TruncatedAddress(u16),
    /// A domain that is not an IP literal and has characters outside
    /// `A-Z a-z 0-9 - . _` (V2Ray's rule), or is empty.
    #[error("invalid domain name {0:?}")]
    InvalidDomain(String),
    /// The domain length byte caps at 255.
    #[error("domain of {0} bytes is over 255")]
    DomainTooLong(usize),
    /// The data length field caps at 65535.
    #[error("frame data of {0} bytes is over 65535")]
    DataTooLong(usize),
    /// A window update carries no data (the decoder would read it as data).
    #[error("a window frame carries no data")]
    DataOnWindow,
    /// The carrying connection is gone or was closed.
    #[error("mux connection is closed")]
    Closed,
    /// The connection's session limit (concurrency, total or ID space) is
    /// reached.
    #[error("mux connection is full ({0} sessions)")]
    Full(usize),
    /// V2Ray's `mux.concurrency` must be at most 1024.
    #[error("invalid mux concurrency: {0}")]
    InvalidConcurrency(i64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl MuxError {
    /// True when the connection is closed (no session can be opened on it
    /// again).
    pub fn is_closed(&self) -> bool {
        matches!(self, MuxError::Closed)
    }

    /// True when the connection is alive but takes no more sessions.
    pub fn is_full(&self) -> bool {
        matches!(self, MuxError::Full(_))
    }
}

impl From<MuxError> for io::Error {
    fn from(error: MuxError) -> io::Error {
        match error {
            MuxError::Io(error) => error,
            MuxError::Closed => io::Error::new(io::ErrorKind::NotConnected, error),
            MuxError::Full(_) => io::Error::new(io::ErrorKind::WouldBlock, error),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
