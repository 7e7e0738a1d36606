//! The Mux.Cool frame codec: bytes in, [`Frame`]s out, and back.
//!
//! Sans-IO: nothing here touches a socket, a clock or a task, so it can be
//! fuzzed and benchmarked alone. The session managers ([`crate::MuxClient`],
//! [`crate::MuxServer`]) drive it. It knows nothing about sessions: whether
//! a `Keep` frame belongs to a UDP session is the caller's business.
//!
//! # Wire layout (V2Ray 4.34, all integers big-endian)
//!
//! | bytes | field | notes |
//! |---|---|---|
//! | 2 | `metaLen` | length of the metadata that follows; 4..=512 |
//! | 2 | session ID | chosen by the client, 1, 2, 3, … |
//! | 1 | status | `01` New, `02` Keep, `03` End, `04` KeepAlive; else fatal |
//! | 1 | option | bit `01` data follows; bit `02` error (on End); bit `80` half-close (on End, Rayback only); other bits ignored |
//! | 1 | network | New only: `01` TCP, `02` UDP; else fatal |
//! | 2 | port | New only (port *before* address) |
//! | 1 | address type | New only: `01` IPv4, `02` domain, `03` IPv6; else fatal |
//! | 4, 16 or 1+n | address | New only; a domain is a length byte and n bytes |
//! | 2 | source port | New only, optional (Rayback only): the visitor's port |
//! | 1 | source address type | `01` IPv4, `03` IPv6 (no domains) |
//! | 4 or 16 | source address | the visitor's address |
//! | … | ignored | metadata bytes after the fields above are skipped |
//! | 2 | `dataLen` | only when option bit `01` is set; 0..=65535 |
//! | `dataLen` | data | stream bytes, or exactly one datagram on a UDP session |
//!
//! Decoding follows V2Ray's reader: metadata over 512 or under 4 bytes,
//! a `New` under 8, an unknown status, network or address type, an address
//! running past the metadata, and a domain that is neither an IP literal
//! nor made of `A-Z a-z 0-9 - . _` are errors (fatal for the connection).
//! "Need more bytes" is `Ok(None)`. Lengths are checked before any buffer
//! grows, so the most a decoder ever reserves is one frame (≤ 2 + 512 + 2 +
//! 65535 bytes).
//!
//! # The half-close bit (a Rayback extension)
//!
//! V2Ray 4.34 gives meaning only to option bits `01` and `02` and ignores
//! the others, so an End with bit `80` ([`OPTION_HALF_CLOSE`]) is an
//! ordinary End to it: a full close (spec §6). Rayback sends that bit when
//! a sub-stream's writer shuts down while its reader still wants data, and
//! a Rayback receiver then keeps its own write direction open (see
//! [`crate::stream`]). The codec only carries the bit:
//! [`FrameKind::End`]'s `half_close`.
//!
//! # The visitor's source (a Rayback extension)
//!
//! V2Ray 4.34 reads `metaLen` bytes of metadata, parses the fields it
//! knows and ignores the rest (`UnmarshalFromBuffer` in
//! `common/mux/frame.go`). A Rayback portal uses that room to tell a
//! Rayback bridge who the public visitor is: after a New frame's address
//! it may append the visitor's source, laid out as the destination is
//! (port, then type, then address; IPv4 `01` or IPv6 `03` only):
//!
//! ```text
//! 00 13  00 02  01  00  01  00 50  01 7f 00 00 01  d4 31  01 7f 00 00 05
//! len    id     New opt TCP port   dest 127.0.0.1  port   src 127.0.0.5:54321
//! ```
//!
//! A peer that does not read it (V2Ray) sees an ordinary New; a New
//! whose trailing bytes do not form such a source is decoded without one,
//! as V2Ray would. The codec writes a source only when the frame carries
//! one ([`FrameKind::New`]'s `source`); whether to send it at all is the
//! client's setting ([`crate::ClientSettings::send_source`]), turned on by
//! the portal only for a bridge that asked for it in its VMess request.
//!
//! # Large packet frames (a Rayback extension)
//!
//! V2Ray 4.34 reads a UDP session's data into one 2048-byte buffer and
//! kills the whole connection when `dataLen` is larger (`PacketReader` in
//! `common/mux/reader.go`), so Rayback sends no packet frame over
//! [`crate::settings::V2RAY_MAX_PACKET`] unless the peer is known to be
//! Rayback: a portal and a bridge that agreed on VMess option bit `0x20`
//! send datagrams up to the full 65,535 (`MuxSettings::max_packet`,
//! `MuxSettings::large_packets_agreed`). The layout is unchanged, and this
//! codec decodes any `dataLen` up to 65,535 from any peer.
//!
//! # Per-stream flow control (a Rayback extension)
//!
//! Mux.Cool has no window: a receiver whose sub-stream cannot take more
//! stops reading the whole connection, and every other sub-stream waits
//! behind it (crate docs, "Head-of-line blocking"). Two Rayback peers
//! agree on windows in-band, with frames a V2Ray 4.34 peer would ignore
//! but is never sent (the portal offers only to a bridge that asked for
//! a Rayback extension in its VMess request):
//!
//! | frame | layout after the 4 usual metadata bytes | meaning |
//! |---|---|---|
//! | KeepAlive, ID 0, [`FrameKind::Hello`] | `52 57` ("RW"), 4 bytes: window | the client's first frame offers flow control and grants `window` bytes to every sub-stream; a server that understands answers with its own Hello once |
//! | Keep without data, [`FrameKind::Window`] | `57` ("W"), 8 bytes: limit | the sender may send sub-stream bytes up to offset `limit` (counted from its first byte) |
//!
//! A peer that does not know them sees a KeepAlive and an empty Keep, and
//! ignores both (an older Rayback does). The rules live in the engine
//! (`crate::engine`); this codec only carries the frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rayback_core::{Address, Destination, Network};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::MuxError;

/// A session's number on one connection.
pub type SessionId = u16;

/// V2Ray rejects frame metadata longer than this.
pub const MAX_METADATA: usize = 512;
/// The data length field is 16 bits.
pub const MAX_DATA: usize = u16::MAX as usize;
/// Option bit: a data section follows the metadata.
pub const OPTION_DATA: u8 = 0x01;
/// Option bit: the session ended with an error (meaningful on End).
pub const OPTION_ERROR: u8 = 0x02;
/// Option bit, Rayback only: on End, the sender finished writing but still
/// reads (a half-close). V2Ray 4.34 ignores it and sees a plain End.
pub const OPTION_HALF_CLOSE: u8 = 0x80;

/// Metadata length of Keep/End/KeepAlive frames (ID, status, option).
const SHORT_METADATA: u16 = 4;

/// The length on the wire of the frame at the start of `buf` (metadata
/// length field, metadata, and the data section if its option says so);
/// `None` when `buf` is too short to tell. For cutting a batch this side
/// encoded, which holds whole frames, at frame boundaries.
pub(crate) fn wire_len(buf: &[u8]) -> Option<usize> {
    let meta = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    // The option byte follows the ID (2 bytes) and the status (1).
    let option = *buf.get(2 + 3)?;
    let at = 2 + meta;
    if option & OPTION_DATA == 0 {
        return Some(at);
    }
    let data = u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]) as usize;
    Some(at + 2 + data)
}
/// What follows the short metadata of a [`FrameKind::Hello`].
const HELLO_TAG: [u8; 2] = *b"RW";
/// What follows the short metadata of a [`FrameKind::Window`].
const WINDOW_TAG: u8 = b'W';
/// Metadata length of a Hello: the short metadata, the tag, the window.
const HELLO_METADATA: u16 = SHORT_METADATA + 2 + 4;
/// Metadata length of a Window: the short metadata, the tag, the limit.
const WINDOW_METADATA: u16 = SHORT_METADATA + 1 + 8;

/// The status byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    New = 0x01,
    Keep = 0x02,
    End = 0x03,
    KeepAlive = 0x04,
}

impl Status {
    fn from_byte(byte: u8) -> Result<Status, MuxError> {
        match byte {
            0x01 => Ok(Status::New),
            0x02 => Ok(Status::Keep),
            0x03 => Ok(Status::End),
            0x04 => Ok(Status::KeepAlive),
            other => Err(MuxError::UnknownStatus(other)),
        }
    }
}

/// What a frame says about its session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Opens a session toward `destination` (client → server only);
    /// `source` is the visitor a Rayback portal names after the address
    /// (a Rayback extension V2Ray ignores; see the module docs).
    New {
        destination: Destination,
        source: Option<SocketAddr>,
    },
    /// More data for an open session.
    Keep,
    /// Closes the session, both directions; `error` is option bit `02`.
    /// With `half_close` (option bit `80`, a Rayback extension V2Ray
    /// ignores) only the sender's direction ends: it still reads.
    End { error: bool, half_close: bool },
    /// Nothing; V2Ray 4.34 accepts it and never sends it.
    KeepAlive,
    /// A KeepAlive that offers (client) or accepts (server) per-stream
    /// flow control and grants each sub-stream `window` bytes to start
    /// with (a Rayback extension; see the module docs).
    Hello { window: u32 },
    /// A data-less Keep: the peer may send this sub-stream's bytes up to
    /// offset `limit` (a Rayback extension; see the module docs).
    Window { limit: u64 },
}

impl FrameKind {
    /// The status byte this kind is written with.
    pub fn status(&self) -> Status {
        match self {
            FrameKind::New { .. } => Status::New,
            FrameKind::Keep => Status::Keep,
            FrameKind::End { .. } => Status::End,
            FrameKind::KeepAlive | FrameKind::Hello { .. } => Status::KeepAlive,
            FrameKind::Window { .. } => Status::Keep,
        }
    }
}

/// One Mux.Cool frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub session_id: SessionId,
    pub kind: FrameKind,
    /// The data section, present iff option bit `01` is set. An empty
    /// section is legal (an empty datagram on a UDP session).
    pub data: Option<Bytes>,
}

impl Frame {
    /// A New without a source, as V2Ray sends it.
    pub fn new_session(
        session_id: SessionId,
        destination: Destination,
        data: Option<Bytes>,
    ) -> Frame {
        Frame {
            session_id,
            kind: FrameKind::New {
                destination,
                source: None,
            },
            data,
        }
    }

    /// A New that names the visitor's `source` after its destination (the
    /// Rayback extension; V2Ray ignores the extra metadata).
    pub fn new_session_from(
        session_id: SessionId,
        destination: Destination,
        source: SocketAddr,
        data: Option<Bytes>,
    ) -> Frame {
        Frame {
            session_id,
            kind: FrameKind::New {
                destination,
                source: Some(source),
            },
            data,
        }
    }

    pub fn keep(session_id: SessionId, data: Bytes) -> Frame {
        Frame {
            session_id,
            kind: FrameKind::Keep,
            data: Some(data),
        }
    }

    /// An End (a full close; `error` sets option bit `02`).
    pub fn end(session_id: SessionId, error: bool) -> Frame {
        Frame {
            session_id,
            kind: FrameKind::End {
                error,
                half_close: false,
            },
            data: None,
        }
    }

    /// An End with the half-close bit (`80`): the sender is done writing
    /// and still reads. V2Ray sees a plain End.
    pub fn end_half_close(session_id: SessionId) -> Frame {
        Frame {
            session_id,
            kind: FrameKind::End {
                error: false,
                half_close: true,
            },
            data: None,
        }
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let metadata = match &self.kind {
            FrameKind::New {
                destination,
                source,
            } => new_metadata_len(destination, source.as_ref()),
            FrameKind::Hello { .. } => HELLO_METADATA as usize,
            FrameKind::Window { .. } => WINDOW_METADATA as usize,
            _ => SHORT_METADATA as usize,
        };
        2 + metadata + self.data.as_ref().map_or(0, |data| 2 + data.len())
    }
}

/// Bytes the port + address of a New frame take: 2 + 1 + address.
fn address_len(address: &Address) -> usize {
    3 + match address {
        Address::Ipv4(_) => 4,
        Address::Ipv6(_) => 16,
        Address::Domain(domain) => 1 + domain.len(),
    }
}

/// Bytes the port + type + address of a source take.
fn source_len(source: &SocketAddr) -> usize {
    3 + match source {
        SocketAddr::V4(_) => 4,
        SocketAddr::V6(_) => 16,
    }
}

/// A New frame's metadata length: ID, status, option, network (5), the
/// destination and, when given, the source. At most 5 + 259 + 19 = 283,
/// well under [`MAX_METADATA`].
fn new_metadata_len(destination: &Destination, source: Option<&SocketAddr>) -> usize {
    5 + address_len(&destination.address) + source.map_or(0, source_len)
}

// ---------------------------------------------------------------------------
// Encoding

/// Appends a whole frame to `dst`. Fails (writing nothing) for a domain
/// over 255 bytes or data over 65535 bytes.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<(), MuxError> {
    let data_len = match &frame.data {
        Some(data) => Some(data_len_u16(data.len())?),
        None => None,
    };
    match &frame.kind {
        FrameKind::New {
            destination,
            source,
        } => {
            put_new_header(
                dst,
                frame.session_id,
                destination,
                source.as_ref(),
                data_len,
            )?;
        }
        FrameKind::Hello { window } => {
            put_hello(dst, frame.session_id, *window);
            if let Some(len) = data_len {
                set_option_data(dst, dst.len() - 7);
                dst.put_u16(len);
            }
        }
        FrameKind::Window { limit } => {
            if data_len.is_some() {
                return Err(MuxError::DataOnWindow);
            }
            put_window(dst, frame.session_id, *limit);
        }
        kind => {
            let mut option = if data_len.is_some() { OPTION_DATA } else { 0 };
            if let FrameKind::End { error, half_close } = *kind {
                if error {
                    option |= OPTION_ERROR;
                }
                if half_close {
                    option |= OPTION_HALF_CLOSE;
                }
            }
            put_short_header(dst, frame.session_id, kind.status(), option);
            if let Some(len) = data_len {
                dst.put_u16(len);
            }
        }
    }
    if let Some(data) = &frame.data {
        dst.extend_from_slice(data);
    }
    Ok(())
}

fn data_len_u16(len: usize) -> Result<u16, MuxError> {
    u16::try_from(len).map_err(|_| MuxError::DataTooLong(len))
}

/// Appends the 6 metadata bytes of a Keep/End/KeepAlive frame.
pub fn put_short_header(dst: &mut BytesMut, session_id: SessionId, status: Status, option: u8) {
    put_header(dst, SHORT_METADATA, session_id, status, option);
}

/// Appends `metaLen` and the four bytes every frame's metadata starts
/// with, reserving room for `meta_len` bytes of metadata in all.
fn put_header(
    dst: &mut BytesMut,
    meta_len: u16,
    session_id: SessionId,
    status: Status,
    option: u8,
) {
    dst.reserve(2 + meta_len as usize);
    dst.put_u16(meta_len);
    dst.put_u16(session_id);
    dst.put_u8(status as u8);
    dst.put_u8(option);
}

/// Appends a Keep frame's header for `data_len` bytes of data (the caller
/// appends the data): 8 bytes.
pub fn put_keep_header(dst: &mut BytesMut, session_id: SessionId, data_len: u16) {
    put_short_header(dst, session_id, Status::Keep, OPTION_DATA);
    dst.put_u16(data_len);
}

/// Appends an End frame (6 bytes); `half_close` sets the Rayback-only
/// bit [`OPTION_HALF_CLOSE`].
pub fn put_end(dst: &mut BytesMut, session_id: SessionId, error: bool, half_close: bool) {
    let mut option = if error { OPTION_ERROR } else { 0 };
    if half_close {
        option |= OPTION_HALF_CLOSE;
    }
    put_short_header(dst, session_id, Status::End, option);
}

/// Appends a Hello (12 bytes; see the module docs): the KeepAlive that
/// offers or accepts flow control, granting `window` bytes per sub-stream.
/// Sent with session ID 0.
pub fn put_hello(dst: &mut BytesMut, session_id: SessionId, window: u32) {
    put_header(dst, HELLO_METADATA, session_id, Status::KeepAlive, 0);
    dst.extend_from_slice(&HELLO_TAG);
    dst.put_u32(window);
}

/// Appends a Window (15 bytes; see the module docs): `session_id` may
/// send up to offset `limit`.
pub fn put_window(dst: &mut BytesMut, session_id: SessionId, limit: u64) {
    put_header(dst, WINDOW_METADATA, session_id, Status::Keep, 0);
    dst.put_u8(WINDOW_TAG);
    dst.put_u64(limit);
}

/// Appends a New frame's metadata (with the visitor's `source` after the
/// address when given: the Rayback extension), and the data length field
/// when `data_len` is given (the caller appends the data). Returns the
/// offset of the option byte within `dst`, so that a caller may later turn
/// a data-less New into one carrying data (see [`set_option_data`]).
pub fn put_new_header(
    dst: &mut BytesMut,
    session_id: SessionId,
    destination: &Destination,
    source: Option<&SocketAddr>,
    data_len: Option<u16>,
) -> Result<usize, MuxError> {
    if let Address::Domain(domain) = &destination.address {
        if domain.len() > 255 {
            return Err(MuxError::DomainTooLong(domain.len()));
        }
    }
    let metadata = new_metadata_len(destination, source);
    dst.reserve(2 + metadata + 2);
    dst.put_u16(metadata as u16);
    dst.put_u16(session_id);
    dst.put_u8(Status::New as u8);
    let option_at = dst.len();
    dst.put_u8(if data_len.is_some() { OPTION_DATA } else { 0 });
    dst.put_u8(match destination.network {
        Network::Tcp => 0x01,
        Network::Udp => 0x02,
    });
    dst.put_u16(destination.port);
    match &destination.address {
        Address::Ipv4(ip) => {
            dst.put_u8(0x01);
            dst.extend_from_slice(&ip.octets());
        }
        Address::Ipv6(ip) => {
            dst.put_u8(0x03);
            dst.extend_from_slice(&ip.octets());
        }
        Address::Domain(domain) => {
            dst.put_u8(0x02);
            dst.put_u8(domain.len() as u8);
            dst.extend_from_slice(domain.as_bytes());
        }
    }
    if let Some(source) = source {
        dst.put_u16(source.port());
        match source.ip() {
            IpAddr::V4(ip) => {
                dst.put_u8(0x01);
                dst.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                dst.put_u8(0x03);
                dst.extend_from_slice(&ip.octets());
            }
        }
    }
    if let Some(len) = data_len {
        dst.put_u16(len);
    }
    Ok(option_at)
}

/// Sets the data bit of the frame whose option byte is at `option_at`
/// (as returned by [`put_new_header`]); the caller then appends the data
/// length and data right after that frame's metadata.
pub fn set_option_data(dst: &mut BytesMut, option_at: usize) {
    if let Some(option) = dst.get_mut(option_at) {
        *option |= OPTION_DATA;
    }
}

// ---------------------------------------------------------------------------
// Decoding

/// Where the decoder is within the current frame.
#[derive(Debug, Default)]
enum DecodeState {
    /// Waiting for `metaLen` and the metadata.
    #[default]
    Metadata,
    /// Metadata decoded, option bit `01` set: waiting for `dataLen`.
    DataLength(Header),
    /// Waiting for `len` data bytes.
    Data(Header, usize),
}

/// Decoded metadata of the frame in progress.
#[derive(Debug)]
struct Header {
    session_id: SessionId,
    kind: FrameKind,
}

/// Decodes a byte stream into frames; also encodes (tokio-util codec).
#[derive(Debug, Default)]
pub struct FrameCodec {
    state: DecodeState,
}

impl FrameCodec {
    pub fn new() -> FrameCodec {
        FrameCodec::default()
    }

    /// The next frame in `src`, consuming its bytes; `Ok(None)` when more
    /// bytes are needed (then `src` has room reserved for the rest of the
    /// frame). After an error the stream is unusable.
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, MuxError> {
        loop {
            match std::mem::take(&mut self.state) {
                DecodeState::Metadata => {
                    if src.len() < 2 {
                        return Ok(None);
                    }
                    let meta_len = u16::from_be_bytes([src[0], src[1]]);
                    if meta_len as usize > MAX_METADATA {
                        return Err(MuxError::MetadataTooLong(meta_len));
                    }
                    if meta_len < SHORT_METADATA {
                        return Err(MuxError::MetadataTooShort(meta_len));
                    }
                    let total = 2 + meta_len as usize;
                    if src.len() < total {
                        src.reserve(total - src.len());
                        return Ok(None);
                    }
                    let (header, has_data) = parse_metadata(&src[2..total])?;
                    src.advance(total);
                    if !has_data {
                        return Ok(Some(Frame {
                            session_id: header.session_id,
                            kind: header.kind,
                            data: None,
                        }));
                    }
                    self.state = DecodeState::DataLength(header);
                }
                DecodeState::DataLength(header) => {
                    if src.len() < 2 {
                        self.state = DecodeState::DataLength(header);
                        return Ok(None);
                    }
                    let len = src.get_u16() as usize;
                    self.state = DecodeState::Data(header, len);
                }
                DecodeState::Data(header, len) => {
                    if src.len() < len {
                        src.reserve(len - src.len());
                        self.state = DecodeState::Data(header, len);
                        return Ok(None);
                    }
                    let data = src.split_to(len).freeze();
                    let Header { session_id, kind } = header;
                    return Ok(Some(Frame {
                        session_id,
                        kind,
                        data: Some(data),
                    }));
                }
            }
        }
    }
}

/// Parses metadata (without its length field). Returns the header and
/// whether a data section follows.
fn parse_metadata(meta: &[u8]) -> Result<(Header, bool), MuxError> {
    // The caller checked 4 <= meta.len() <= 512.
    let session_id = u16::from_be_bytes([meta[0], meta[1]]);
    let status = Status::from_byte(meta[2])?;
    let option = meta[3];
    let kind = match status {
        Status::New => {
            let (destination, rest) = parse_destination(session_id, meta)?;
            FrameKind::New {
                destination,
                source: parse_source(rest),
            }
        }
        // A window rides only in a data-less Keep, so that data is never
        // lost to trailing metadata that merely looks like one.
        Status::Keep => match parse_window(&meta[4..]) {
            Some(limit) if option & OPTION_DATA == 0 => FrameKind::Window { limit },
            _ => FrameKind::Keep,
        },
        Status::End => FrameKind::End {
            error: option & OPTION_ERROR != 0,
            half_close: option & OPTION_HALF_CLOSE != 0,
        },
        Status::KeepAlive => match parse_hello(&meta[4..]) {
            Some(window) => FrameKind::Hello { window },
            None => FrameKind::KeepAlive,
        },
    };
    Ok((Header { session_id, kind }, option & OPTION_DATA != 0))
}

/// Network, port and address of a New frame's metadata, and the
/// metadata bytes after them.
fn parse_destination(session_id: SessionId, meta: &[u8]) -> Result<(Destination, &[u8]), MuxError> {
    if meta.len() < 8 {
        return Err(MuxError::NewMetadataTooShort(meta.len() as u16));
    }
    let network = meta[4];
    let port = u16::from_be_bytes([meta[5], meta[6]]);
    let address_type = meta[7];
    let rest = &meta[8..];
    let truncated = || MuxError::TruncatedAddress(session_id);
    // V2Ray reads the address before it looks at the network byte, so a bad
    // address wins over a bad network; the order matters only for which
    // error is reported.
    let (address, used) = match address_type {
        0x01 => {
            let octets: [u8; 4] = rest
                .get(..4)
                .ok_or_else(truncated)?
                .try_into()
                .map_err(|_| truncated())?;
            (Address::Ipv4(Ipv4Addr::from(octets)), 4)
        }
        0x03 => {
            let octets: [u8; 16] = rest
                .get(..16)
                .ok_or_else(truncated)?
                .try_into()
                .map_err(|_| truncated())?;
            (Address::from(IpAddr::V6(Ipv6Addr::from(octets))), 16)
        }
        0x02 => {
            let len = *rest.first().ok_or_else(truncated)? as usize;
            let name = rest.get(1..1 + len).ok_or_else(truncated)?;
            (parse_domain(name)?, 1 + len)
        }
        other => return Err(MuxError::UnknownAddressType(other)),
    };
    let network = match network {
        0x01 => Network::Tcp,
        0x02 => Network::Udp,
        other => return Err(MuxError::UnknownNetwork(other)),
    };
    Ok((Destination::new(network, address, port), &rest[used..]))
}

/// The visitor's source after a New frame's address (the Rayback
/// extension): port, type `01`/`03`, address. Anything else there (too
/// short, another type) is ignored, as V2Ray ignores all of it; bytes
/// after a source are ignored too.
fn parse_source(rest: &[u8]) -> Option<SocketAddr> {
    let (head, rest) = rest.split_first_chunk::<3>()?;
    let port = u16::from_be_bytes([head[0], head[1]]);
    let ip = match head[2] {
        0x01 => IpAddr::V4(Ipv4Addr::from(*rest.first_chunk::<4>()?)),
        0x03 => IpAddr::V6(Ipv6Addr::from(*rest.first_chunk::<16>()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The window of a Hello's trailing metadata (see the module docs);
/// bytes after it are ignored.
fn parse_hello(rest: &[u8]) -> Option<u32> {
    let (tag, rest) = rest.split_first_chunk::<2>()?;
    (*tag == HELLO_TAG).then_some(u32::from_be_bytes(*rest.first_chunk::<4>()?))
}

/// The limit of a Window's trailing metadata; bytes after it are ignored.
fn parse_window(rest: &[u8]) -> Option<u64> {
    let (&tag, rest) = rest.split_first()?;
    (tag == WINDOW_TAG).then_some(u64::from_be_bytes(*rest.first_chunk::<8>()?))
}

/// A domain field as 4.34 reads it ([`Address::from_wire_domain`]).
fn parse_domain(name: &[u8]) -> Result<Address, MuxError> {
    Address::from_wire_domain(name)
        .ok_or_else(|| MuxError::InvalidDomain(String::from_utf8_lossy(name).into_owned()))
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = MuxError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, MuxError> {
        self.decode_frame(src)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = MuxError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), MuxError> {
        encode_frame(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = MuxError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), MuxError> {
        encode_frame(frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out).unwrap();
        assert_eq!(out.len(), frame.encoded_len());
        out.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, MuxError> {
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode_frame(&mut src)? {
            frames.push(frame);
        }
        assert!(src.is_empty(), "{} bytes left over", src.len());
        Ok(frames)
    }

    fn localhost_80() -> Destination {
        Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), 80)
    }

    fn new_kind(destination: Destination) -> FrameKind {
        FrameKind::New {
            destination,
            source: None,
        }
    }

    // The Rayback source extension, as drawn in the module docs: 127.0.0.5
    // port 54321 after the destination 127.0.0.1:80.
    #[test]
    fn golden_new_with_ipv4_source() {
        let wire = hex("00 13 00 02 01 00 01 00 50 01 7f 00 00 01 d4 31 01 7f 00 00 05");
        let visitor: SocketAddr = "127.0.0.5:54321".parse().unwrap();
        let frame = Frame::new_session_from(2, localhost_80(), visitor, None);
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
        // With data riding in it: the data length follows the source.
        let wire =
            hex("00 13 00 02 01 01 01 00 50 01 7f 00 00 01 d4 31 01 7f 00 00 05 00 02 68 69");
        let frame =
            Frame::new_session_from(2, localhost_80(), visitor, Some(Bytes::from_static(b"hi")));
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
    }

    #[test]
    fn golden_new_with_ipv6_source_after_a_domain() {
        let mut wire = hex("00 1f 00 03 01 00 02 00 35 02 03");
        wire.extend_from_slice(b"a.b");
        wire.extend_from_slice(&hex(
            "01 bb 03 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01",
        ));
        let visitor: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let frame = Frame::new_session_from(
            3,
            Destination::udp(Address::Domain("a.b".into()), 53),
            visitor,
            None,
        );
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
        let mut out = BytesMut::new();
        put_new_header(
            &mut out,
            3,
            &Destination::udp(Address::Domain("a.b".into()), 53),
            Some(&visitor),
            None,
        )
        .unwrap();
        assert_eq!(out.to_vec(), wire);
    }

    // What V2Ray does with trailing metadata we do too: bytes after the
    // address that are no source (too short, a domain or unknown type)
    // leave the New without one, and bytes after a source are skipped.
    #[test]
    fn trailing_bytes_that_are_no_source_are_ignored() {
        let base = hex("00 01 01 00 01 00 50 01 7f 00 00 01");
        let tails = [
            "d4 31 01 7f",                   // truncated IPv4
            "d4 31 01",                      // type, no address
            "d4 31",                         // port only
            "d4",                            // one byte
            "d4 31 02 03 61 2e 62",          // a domain
            "d4 31 04 7f 00 00 05",          // unknown type
            "d4 31 03 00 00 00 00 00 00 00", // truncated IPv6
        ];
        for tail in tails {
            let mut meta = base.clone();
            meta.extend_from_slice(&hex(tail));
            let mut wire = (meta.len() as u16).to_be_bytes().to_vec();
            wire.extend_from_slice(&meta);
            let frames = decode_all(&wire).unwrap_or_else(|error| panic!("{tail}: {error}"));
            assert_eq!(
                frames,
                vec![Frame::new_session(1, localhost_80(), None)],
                "{tail}"
            );
        }
        let wire = hex("00 15 00 01 01 00 01 00 50 01 7f 00 00 01 d4 31 01 7f 00 00 05 ee ff");
        assert_eq!(
            decode_all(&wire).unwrap(),
            vec![Frame::new_session_from(
                1,
                localhost_80(),
                "127.0.0.5:54321".parse().unwrap(),
                None
            )]
        );
    }

    // Spec §11 example 1.
    #[test]
    fn golden_new_with_data() {
        let wire = hex("00 0c 00 01 01 01 01 00 50 01 7f 00 00 01 00 03 47 45 54");
        let frame = Frame::new_session(1, localhost_80(), Some(Bytes::from_static(b"GET")));
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
    }

    // Spec §11 example 2.
    #[test]
    fn golden_new_ipv6_without_data() {
        let wire = hex("00 18 00 02 01 00 01 01 bb 03 00000000000000000000000000000001");
        let frame = Frame::new_session(
            2,
            Destination::tcp(Address::Ipv6(Ipv6Addr::LOCALHOST), 443),
            None,
        );
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
    }

    // Spec §11 example 3.
    #[test]
    fn golden_keep_and_end() {
        let keep = hex("00 04 00 05 02 01 00 02 68 69");
        let end = hex("00 04 00 05 03 00");
        let end_error = hex("00 04 00 05 03 02");
        assert_eq!(encode(&Frame::keep(5, Bytes::from_static(b"hi"))), keep);
        assert_eq!(encode(&Frame::end(5, false)), end);
        assert_eq!(encode(&Frame::end(5, true)), end_error);
        let mut all = keep.clone();
        all.extend_from_slice(&end);
        all.extend_from_slice(&end_error);
        assert_eq!(
            decode_all(&all).unwrap(),
            vec![
                Frame::keep(5, Bytes::from_static(b"hi")),
                Frame::end(5, false),
                Frame::end(5, true)
            ]
        );
    }

    // The Rayback half-close End: option bit 0x80.
    #[test]
    fn golden_half_close_end() {
        let wire = hex("00 04 00 05 03 80");
        let frame = Frame::end_half_close(5);
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
        let mut out = BytesMut::new();
        put_end(&mut out, 5, false, true);
        assert_eq!(out.to_vec(), wire);
        // Error and half-close bits are carried independently.
        let both = hex("00 04 00 05 03 82");
        let frame = Frame {
            session_id: 5,
            kind: FrameKind::End {
                error: true,
                half_close: true,
            },
            data: None,
        };
        assert_eq!(encode(&frame), both);
        assert_eq!(decode_all(&both).unwrap(), vec![frame]);
    }

    // What V2Ray does with the bit: ignore it. Other unknown End bits are
    // ignored by us too, and a plain End still decodes as before.
    #[test]
    fn end_option_bits_other_than_data_error_half_are_ignored() {
        let wire = hex("00 04 00 05 03 7c  00 04 00 06 03 fd 00 01 7a");
        let frames = decode_all(&wire).unwrap();
        assert_eq!(frames[0], Frame::end(5, false));
        assert_eq!(
            frames[1].kind,
            FrameKind::End {
                error: false,
                half_close: true
            }
        );
        assert_eq!(frames[1].data.as_deref(), Some(&b"z"[..]));
    }

    // Spec §11 example 4 and reverse.md §6: the control session's New.
    #[test]
    fn golden_control_new() {
        let domain = Address::Domain("reverse.internal.v2ray.com".into());
        let mut wire = hex("00 23 00 01 01 00 02 00 00 02 1a");
        wire.extend_from_slice(b"reverse.internal.v2ray.com");
        let frame = Frame::new_session(1, Destination::udp(domain.clone(), 0), None);
        assert_eq!(encode(&frame), wire);
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);

        let mut with_data = hex("00 23 00 01 01 01 02 00 00 02 1a");
        with_data.extend_from_slice(b"reverse.internal.v2ray.com");
        with_data.extend_from_slice(&hex("00 0b 9a 06 08 05 e8 a7 3a 01 0f 38 4a"));
        let control = Bytes::from(hex("9a 06 08 05 e8 a7 3a 01 0f 38 4a"));
        let frame = Frame::new_session(1, Destination::udp(domain, 0), Some(control));
        assert_eq!(encode(&frame), with_data);
        assert_eq!(decode_all(&with_data).unwrap(), vec![frame]);
    }

    // Spec §11 example 5: metadata captured from the real portal.
    #[test]
    fn golden_captured_portal_new() {
        let wire = hex("00 0c 00 02 01 00 01 71 47 01 7f 00 00 01");
        let frame = Frame::new_session(
            2,
            Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), 28999),
            None,
        );
        assert_eq!(decode_all(&wire).unwrap(), vec![frame.clone()]);
        assert_eq!(encode(&frame), wire);
    }

    #[test]
    fn keep_alive_and_extra_metadata_are_accepted() {
        // KeepAlive with data; a Keep whose metadata has 3 extra bytes.
        let wire = hex("00 04 00 00 04 01 00 01 ff  00 07 00 09 02 01 aa bb cc 00 01 7a");
        let frames = decode_all(&wire).unwrap();
        assert_eq!(frames[0].kind, FrameKind::KeepAlive);
        assert_eq!(frames[0].data.as_deref(), Some(&[0xff][..]));
        assert_eq!(frames[1], Frame::keep(9, Bytes::from_static(b"z")));
    }

    // The flow-control frames of the module docs, and what a peer that
    // does not know them reads: a KeepAlive and an empty Keep.
    #[test]
    fn golden_hello_and_window() {
        let hello = hex("00 0a 00 00 04 00 52 57 00 04 00 00");
        let frame = Frame {
            session_id: 0,
            kind: FrameKind::Hello { window: 256 * 1024 },
            data: None,
        };
        assert_eq!(encode(&frame), hello);
        assert_eq!(decode_all(&hello).unwrap(), vec![frame]);
        let window = hex("00 0d 00 07 02 00 57 00 00 00 00 00 06 00 00");
        let frame = Frame {
            session_id: 7,
            kind: FrameKind::Window { limit: 0x60000 },
            data: None,
        };
        assert_eq!(encode(&frame), window);
        assert_eq!(decode_all(&window).unwrap(), vec![frame]);
        // A Keep with data whose metadata happens to hold a window's tag is
        // data, never a window.
        let wire = hex("00 0d 00 07 02 01 57 00 00 00 00 00 06 00 00 00 01 7a");
        assert_eq!(
            decode_all(&wire).unwrap(),
            vec![Frame::keep(7, Bytes::from_static(b"z"))]
        );
        // Other trailing bytes leave a plain KeepAlive or Keep.
        let wire = hex("00 06 00 00 04 00 52 58  00 05 00 07 02 00 58");
        let frames = decode_all(&wire).unwrap();
        assert_eq!(frames[0].kind, FrameKind::KeepAlive);
        assert_eq!(frames[1].kind, FrameKind::Keep);
        let mut out = BytesMut::new();
        let with_data = Frame {
            session_id: 7,
            kind: FrameKind::Window { limit: 1 },
            data: Some(Bytes::from_static(b"z")),
        };
        assert!(matches!(
            encode_frame(&with_data, &mut out),
            Err(MuxError::DataOnWindow)
        ));
    }

    /// A New frame for session 1, port 53, domain-typed address `name`.
    fn new_with_domain(network: u8, name: &[u8]) -> Vec<u8> {
        let mut wire = vec![
            0,
            9 + name.len() as u8,
            0,
            1,
            1,
            0,
            network,
            0,
            53,
            2,
            name.len() as u8,
        ];
        wire.extend_from_slice(name);
        wire
    }

    #[test]
    fn domains_that_look_like_ips_become_ips() {
        let frames = decode_all(&new_with_domain(1, b"127.0.0.1")).unwrap();
        assert_eq!(
            frames[0].kind,
            new_kind(Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), 53))
        );
        let frames = decode_all(&new_with_domain(2, b"[::1]")).unwrap();
        assert_eq!(
            frames[0].kind,
            new_kind(Destination::udp(Address::Ipv6(Ipv6Addr::LOCALHOST), 53))
        );
        // A digit-led name that is no IP is an ordinary domain.
        let frames = decode_all(&new_with_domain(1, b"1a.com")).unwrap();
        assert_eq!(
            frames[0].kind,
            new_kind(Destination::tcp(Address::Domain("1a.com".into()), 53))
        );
        let frames = decode_all(&new_with_domain(1, b"Under_score-1.example")).unwrap();
        assert_eq!(
            frames[0].kind,
            new_kind(Destination::tcp(
                Address::Domain("Under_score-1.example".into()),
                53
            ))
        );
        assert!(matches!(
            decode_all(&new_with_domain(1, b"a b")),
            Err(MuxError::InvalidDomain(_))
        ));
        assert!(matches!(
            decode_all(&new_with_domain(1, b"[::1")),
            Err(MuxError::InvalidDomain(_))
        ));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("metadata over 512", hex("02 01")),
            ("metadata under 4", hex("00 03 00 01 02")),
            ("unknown status", hex("00 04 00 01 05 00")),
            ("status zero", hex("00 04 00 01 00 00")),
            ("new under 8", hex("00 07 00 01 01 00 01 00 50")),
            (
                "unknown network",
                hex("00 0c 00 01 01 00 03 00 50 01 7f 00 00 01"),
            ),
            (
                "unknown address type",
                hex("00 0c 00 01 01 00 01 00 50 04 7f 00 00 01"),
            ),
            ("truncated ipv4", hex("00 0a 00 01 01 00 01 00 50 01 7f 00")),
            (
                "truncated ipv6",
                hex("00 0c 00 01 01 00 01 00 50 03 7f 00 00 01"),
            ),
            (
                "truncated domain",
                hex("00 0b 00 01 01 00 01 00 50 02 05 61 62"),
            ),
            ("empty domain", hex("00 09 00 01 01 00 01 00 50 02 00")),
            (
                "bad domain byte",
                hex("00 0b 00 01 01 00 01 00 50 02 02 61 2f"),
            ),
        ];
        for (name, wire) in cases {
            let result = decode_all(&wire);
            assert!(result.is_err(), "{name}: decoded {result:?}");
            let message = result.unwrap_err().to_string();
            assert!(
                !message.is_empty() && message.chars().next().unwrap().is_lowercase(),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn truncated_input_needs_more_bytes() {
        let frame = Frame::new_session(7, localhost_80(), Some(Bytes::from_static(b"hello")));
        let wire = encode(&frame);
        for cut in 0..wire.len() {
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&wire[..cut]);
            assert!(
                codec.decode_frame(&mut src).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn encoder_refuses_oversize() {
        let long = Destination::tcp(Address::Domain("a".repeat(256)), 1);
        let mut out = BytesMut::new();
        assert!(matches!(
            encode_frame(&Frame::new_session(1, long, None), &mut out),
            Err(MuxError::DomainTooLong(256))
        ));
        let big = Bytes::from(vec![0u8; MAX_DATA + 1]);
        assert!(matches!(
            encode_frame(&Frame::keep(1, big), &mut out),
            Err(MuxError::DataTooLong(_))
        ));
        assert!(out.is_empty());
        // The largest legal frame encodes and decodes.
        let max = Frame::keep(1, Bytes::from(vec![7u8; MAX_DATA]));
        assert_eq!(decode_all(&encode(&max)).unwrap(), vec![max]);
    }

    #[test]
    fn a_data_less_new_can_be_given_data_later() {
        let mut out = BytesMut::new();
        let at = put_new_header(&mut out, 1, &localhost_80(), None, None).unwrap();
        set_option_data(&mut out, at);
        out.put_u16(3);
        out.extend_from_slice(b"GET");
        assert_eq!(
            out.to_vec(),
            hex("00 0c 00 01 01 01 01 00 50 01 7f 00 00 01 00 03 47 45 54")
        );
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| Address::Ipv4(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| Address::from(IpAddr::V6(Ipv6Addr::from(o)))),
            "[a-zA-Z_.-][a-zA-Z0-9_.-]{0,254}".prop_map(Address::Domain),
        ]
    }

    fn arb_source() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(o, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(o, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let kind = prop_oneof![
            (
                any::<bool>(),
                arb_address(),
                any::<u16>(),
                proptest::option::of(arb_source())
            )
                .prop_map(|(udp, address, port, source)| {
                    let network = if udp { Network::Udp } else { Network::Tcp };
                    FrameKind::New {
                        destination: Destination::new(network, address, port),
                        source,
                    }
                }),
            Just(FrameKind::Keep),
            (any::<bool>(), any::<bool>())
                .prop_map(|(error, half_close)| FrameKind::End { error, half_close }),
            Just(FrameKind::KeepAlive),
            any::<u32>().prop_map(|window| FrameKind::Hello { window }),
            any::<u64>().prop_map(|limit| FrameKind::Window { limit }),
        ];
        let data = proptest::option::of(
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from),
        );
        (any::<u16>(), kind, data).prop_map(|(session_id, kind, data)| Frame {
            session_id,
            // A window never carries data (the encoder refuses it).
            data: data.filter(|_| !matches!(kind, FrameKind::Window { .. })),
            kind,
        })
    }

    proptest! {
        #[test]
        fn round_trip_and_every_split(frames in proptest::collection::vec(arb_frame(), 1..8), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut wire = BytesMut::new();
            for frame in &frames {
                encode_frame(frame, &mut wire).unwrap();
            }
            prop_assert_eq!(&decode_all(&wire).unwrap(), &frames);
            // Feed the same bytes split at arbitrary points.
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.push(wire.len());
            points.sort_unstable();
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            for to in points {
                src.extend_from_slice(&wire[from..to]);
                from = to;
                while let Some(frame) = codec.decode_frame(&mut src).unwrap() {
                    got.push(frame);
                }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn no_panic_on_any_input(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode_frame(&mut src) {}
        }

        #[test]
        fn no_panic_on_plausible_headers(status in 0u8..6, option in any::<u8>(), meta in proptest::collection::vec(any::<u8>(), 0..40), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut bytes = vec![0u8, (meta.len() + 4) as u8, 0, 1, status, option];
            bytes.extend_from_slice(&meta);
            bytes.extend_from_slice(&tail);
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode_frame(&mut src) {}
        }
    }

    #[test]
    fn every_split_of_the_golden_stream() {
        // Byte-at-a-time and every two-way split of a mixed stream.
        let mut wire = hex("00 0c 00 01 01 01 01 00 50 01 7f 00 00 01 00 03 47 45 54");
        wire.extend_from_slice(&hex("00 04 00 05 02 01 00 02 68 69 00 04 00 05 03 02"));
        let expected = decode_all(&wire).unwrap();
        for cut in 0..=wire.len() {
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(frame) = codec.decode_frame(&mut src).unwrap() {
                got.push(frame);
            }
            src.extend_from_slice(&wire[cut..]);
            while let Some(frame) = codec.decode_frame(&mut src).unwrap() {
                got.push(frame);
            }
            assert_eq!(got, expected, "cut at {cut}");
        }
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for byte in &wire {
            src.put_u8(*byte);
            while let Some(frame) = codec.decode_frame(&mut src).unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, expected);
    }
}
