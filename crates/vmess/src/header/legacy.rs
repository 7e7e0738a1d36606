//! Sans-IO codec of the VMess legacy request envelope (client alterId > 0):
//! the HMAC-MD5 auth hash of an ID and time, then the header plaintext
//! under AES-128-CFB.
//!
//! It is not the plaintext inside (`request.rs`) nor the choice of who may
//! use it ([`crate::validator`] accepts it only for users with alterId > 0).
//! Part of [`crate::header`].
//!
//! Legacy request (client alterId > 0):
//!
//! | bytes | field |
//! |---|---|
//! | 16 | HMAC-MD5(key = an ID, message = timestamp BE64) |
//! | n | header plaintext, AES-128-CFB(key = main cmdKey, IV = MD5(ts ‖ ts ‖ ts ‖ ts)) |

use super::request::RequestHeader;
use super::FIXED_HEADER_LEN;
use crate::crypto::{self, Cfb128};
use crate::error::HandshakeError;
use crate::id::UserId;

/// The legacy auth hash of `id` at `timestamp`.
pub fn legacy_auth(id: &UserId, timestamp: u64) -> [u8; 16] {
    crypto::hmac_md5(id.as_bytes(), &timestamp.to_be_bytes())
}

/// The legacy header's CFB IV: `MD5(ts ‖ ts ‖ ts ‖ ts)`.
pub fn legacy_header_iv(timestamp: u64) -> [u8; 16] {
    let ts = timestamp.to_be_bytes();
    crypto::md5(&[&ts, &ts, &ts, &ts])
}

/// Appends a legacy request: the auth hash of `auth_id_user` (an alter ID
/// or the main ID) at `timestamp`, then the header plaintext encrypted with
/// the **main** ID's cmdKey.
pub fn seal_legacy_request(
    auth_id_user: &UserId,
    main_cmd_key: &[u8; 16],
    timestamp: u64,
    header_plain: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&legacy_auth(auth_id_user, timestamp));
    let start = out.len();
    out.extend_from_slice(header_plain);
    Cfb128::new(main_cmd_key, &legacy_header_iv(timestamp)).encrypt(&mut out[start..]);
}

/// Decodes a legacy request header whose auth hash already matched a user
/// (main `cmd_key`) at `timestamp`. `data` starts right after the hash.
pub fn open_legacy_request(
    cmd_key: &[u8; 16],
    timestamp: u64,
    data: &[u8],
) -> Result<Option<(RequestHeader, usize)>, HandshakeError> {
    // The longest header: 38 + 3 + 1 + 255 + 15 + 4 = 316 bytes. Decrypt a
    // copy of what is there; a short read is retried from the start.
    let take = data.len().min(FIXED_HEADER_LEN + 3 + 256 + 15 + 4);
    let mut plain = [0u8; FIXED_HEADER_LEN + 3 + 256 + 15 + 4];
    plain[..take].copy_from_slice(&data[..take]);
    Cfb128::new(cmd_key, &legacy_header_iv(timestamp)).decrypt(&mut plain[..take]);
    RequestHeader::decode(&plain[..take])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_vectors::{hex, spec_header, spec_user, unhex, SPEC_PLAIN};

    #[test]
    fn legacy_values_match_spec() {
        let user = spec_user();
        assert_eq!(
            hex(&legacy_auth(&user, 1_700_000_000)),
            "a965548db6bc114289eecbc893ca0c6f"
        );
        assert_eq!(
            hex(&legacy_header_iv(1_700_000_000)),
            "7a29d7bdc972aaefb1f54e5205589e78"
        );
        let mut out = Vec::new();
        seal_legacy_request(
            &user.alter_ids(1)[0],
            &user.cmd_key(),
            1_700_000_000,
            &unhex(SPEC_PLAIN),
            &mut out,
        );
        let (header, used) = open_legacy_request(&user.cmd_key(), 1_700_000_000, &out[16..])
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len() - 16);
        assert_eq!(header, spec_header());
    }
}
