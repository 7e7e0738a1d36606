//! Sans-IO codecs for VMess handshakes: the request header plaintext, its
//! AEAD and legacy (MD5) envelopes, the AuthID, and the response header.
//!
//! Everything here takes bytes, the current time and random values as
//! arguments and returns bytes; sockets live in [`crate::inbound`] and
//! [`crate::outbound`]. "Need more bytes" is `Ok(None)`, never an error.
//!
//! This file holds what the wire units share (the lengths several of them
//! use and [`HeaderMode`]) and re-exports every item, so each is named
//! `header::X` whichever file it lives in. The units themselves, each with
//! its wire layout in its opening doc:
//!
//! | file | wire unit |
//! |---|---|
//! | `request.rs` | the request header plaintext, inside either envelope: [`RequestHeader`], [`Options`], [`BodySecurity`], [`Command`] (and the config's [`Security`]) |
//! | `auth_id.rs` | the AuthID that opens an AEAD request: [`create_auth_id`], [`check_auth_id`] |
//! | `aead.rs` | the AEAD request envelope (client alterId = 0): [`seal_aead_request`], [`open_aead_request`] |
//! | `legacy.rs` | the legacy (MD5) request envelope (client alterId > 0): [`seal_legacy_request`], [`open_legacy_request`] |
//! | `response.rs` | the response header and the keys of both body directions: [`DirectionKeys`], [`seal_response`], [`ResponseDecoder`] |
//!
//! A request is `AuthID ‖ AEAD envelope(plaintext)` or
//! `legacy auth hash ‖ legacy envelope(plaintext)`; the server answers with
//! a response header sealed the same way ([`HeaderMode`]), and the bodies
//! ([`crate::body`]) follow both.

mod aead;
mod auth_id;
mod legacy;
mod request;
mod response;

pub use aead::{open_aead_request, seal_aead_request, CONNECTION_NONCE_LEN, MAX_SEALED_HEADER};
pub use auth_id::{auth_id_key, check_auth_id, create_auth_id, AuthIdCheck, AUTH_ID_WINDOW_SECS};
pub use legacy::{legacy_auth, legacy_header_iv, open_legacy_request, seal_legacy_request};
pub use request::{
    mux_cool_destination, BodySecurity, Command, Options, RequestHeader, Security, MUX_COOL_DOMAIN,
};
pub use response::{seal_response, DirectionKeys, ResponseDecoder};

use crate::crypto::TAG_LEN;

/// Bytes of an AuthID (and of a legacy auth hash).
pub const AUTH_ID_LEN: usize = 16;
/// Bytes of the sealed length of an AEAD request or response header.
pub const SEALED_LENGTH_LEN: usize = 2 + TAG_LEN;
/// The fixed part of a request header plaintext, up to the command.
pub const FIXED_HEADER_LEN: usize = 38;

/// Whether a request came (or goes) in the AEAD or the legacy envelope.
/// It also decides how the response keys are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderMode {
    Aead,
    Legacy,
}

/// The spec's test vectors, shared by the tests of every unit.
#[cfg(test)]
mod test_vectors {
    use rayback_core::{Address, Destination};

    use super::{BodySecurity, Command, Options, RequestHeader};
    use crate::id::UserId;

    pub(super) fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    pub(super) fn spec_user() -> UserId {
        UserId::parse("27848739-7e62-4138-9fd3-098a63964b6b").unwrap()
    }

    pub(super) fn spec_header() -> RequestHeader {
        RequestHeader {
            version: 1,
            body_iv: std::array::from_fn(|i| i as u8),
            body_key: std::array::from_fn(|i| 0x10 + i as u8),
            response_auth: 0x42,
            options: Options(0x0d),
            padding_len: 0,
            security: BodySecurity::Aes128Gcm,
            command: Command::Tcp,
            destination: Destination::tcp(Address::Domain("www.v2ray.com".into()), 443),
        }
    }

    pub(super) const SPEC_PLAIN: &str = "01000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f420d03000101bb020d7777772e76327261792e636f6d5c81b8e2";
    pub(super) const SPEC_SEALED: &str = "6868c12572a3ce177baac5f08cc54ec34fc5a085864f4fe955c9b3bcf0e9187f4a86a0a1a2a3a4a5a6a7cc17d05e6998c430cb3239bb14b6b7efdfe28993f18530c61f2c862463f8b5822203dd586ee7a2e28dcfebbda874a828f181f68583a673a28ad96dcfb0b273eaa91b341da38d9ff3958cda";
}
