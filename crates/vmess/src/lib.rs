//! VMess as V2Ray 4.34 speaks it: sans-IO header and body codecs, and the
//! inbound (server) and outbound (client) handlers built on them.
//!
//! Where it sits (ARCHITECTURE.md): above `core` only. `app` builds a
//! [`VmessInbound`] or [`VmessOutbound`] from the config; the reverse proxy
//! uses [`VmessOutbound::connect_stream`] for its tunnel connections and
//! watches their [`BudgetWatch`]. It knows nothing of JSON, routing or
//! Mux.Cool (a Mux request is just a session to `v1.mux.cool:0`).
//!
//! | module | what |
//! |---|---|
//! | [`crypto`] | ring AEAD wrapper, KDF, MD5/HMAC-MD5, AES block/CFB, SHAKE128 masks, CRC-32, FNV-1a |
//! | [`id`] | user IDs, command keys, alter IDs |
//! | [`header`] | request header (AEAD and legacy envelopes), AuthID, response header |
//! | [`body`] | chunk sealer/opener: masking, padding, nonces, end of stream, nonce budget |
//! | [`validator`] | request validation: users, replay filters, session history |
//! | [`stream`] | [`VmessStream`], the body as `AsyncRead + AsyncWrite` |
//! | [`inbound`] / [`outbound`] | the handlers (sockets, timeouts, dispatch) |
//! | [`metrics`] | [`VmessMetrics`] counters |
//!
//! Compatibility notes, all checked against the real `v2ray` 4.34:
//! * Rayback writes body chunks of up to 65535 bytes of `Len` (4.34 writes
//!   ≤ 2 KiB but reads any 16-bit length); see [`body`].
//! * A connection never reuses a chunk nonce: after 65535 data chunks in
//!   one direction it is closed with a warning ([`body::DATA_CHUNK_BUDGET`]).
//! * The server accepts legacy (MD5) headers only for users with
//!   `alterId > 0` (4.34 accepts them for all), and refuses legacy AES-CFB
//!   bodies; see [`validator`].
//! * On any failed handshake the server stays silent until the handshake
//!   deadline or until the client leaves; see [`inbound`].

pub mod body;
pub mod crypto;
pub mod error;
pub mod header;
pub mod id;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod stream;
pub mod validator;

pub use error::{FailureReason, HandshakeError, VmessError};
pub use header::{BodySecurity, Security};
pub use id::UserId;
pub use inbound::{VmessInbound, VmessInboundSettings};
pub use metrics::VmessMetrics;
pub use outbound::{OutboundUser, VmessOutbound, VmessOutboundSettings, VmessServer};
pub use stream::{BudgetWatch, VmessStream};
pub use validator::ServerUser;
