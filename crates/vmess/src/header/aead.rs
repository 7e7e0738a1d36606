//! Sans-IO codec of the VMess AEAD request envelope (client alterId = 0):
//! the sealed length, the connection nonce and the sealed header plaintext
//! that follow the AuthID (sealing writes the AuthID in front).
//!
//! It is not the AuthID (`auth_id.rs`, which builds and checks the first 16
//! bytes) nor the plaintext inside (`request.rs`). Part of
//! [`crate::header`]; [`crate::validator`] opens it, [`crate::outbound`]
//! seals it.
//!
//! AEAD request (client alterId = 0):
//!
//! | bytes | field |
//! |---|---|
//! | 16 | AuthID: AES-128(`KDF16(cmdKey, "AES Auth ID Encryption")`, time(8) ‖ random(4) ‖ CRC-32(4)) |
//! | 18 | header length `L` (BE16) sealed with AES-128-GCM, AAD = AuthID |
//! | 8 | connection nonce (random) |
//! | L + 16 | header plaintext sealed with AES-128-GCM, AAD = AuthID |

use super::SEALED_LENGTH_LEN;
use crate::crypto::{self, AeadCipher, TAG_LEN};
use crate::error::HandshakeError;

const LENGTH_KEY_LABEL: &[u8] = b"VMess Header AEAD Key_Length";
const LENGTH_NONCE_LABEL: &[u8] = b"VMess Header AEAD Nonce_Length";
const PAYLOAD_KEY_LABEL: &[u8] = b"VMess Header AEAD Key";
const PAYLOAD_NONCE_LABEL: &[u8] = b"VMess Header AEAD Nonce";

/// Bytes of the connection nonce of an AEAD request.
pub const CONNECTION_NONCE_LEN: usize = 8;
/// The largest sealed header a server accepts. A 4.34 client's largest is
/// 38 + 4 + 255 (domain) + 15 (padding) + 4 = 316 bytes.
pub const MAX_SEALED_HEADER: u16 = 1024;

/// The four keys and nonces of an AEAD request envelope.
struct RequestSealKeys {
    length: AeadCipher,
    length_nonce: [u8; 12],
    payload: AeadCipher,
    payload_nonce: [u8; 12],
}

impl RequestSealKeys {
    fn derive(cmd_key: &[u8; 16], auth_id: &[u8; 16], nonce: &[u8; 8]) -> RequestSealKeys {
        RequestSealKeys {
            length: AeadCipher::aes_128_gcm(&crypto::kdf16(
                cmd_key,
                &[LENGTH_KEY_LABEL, auth_id, nonce],
            )),
            length_nonce: crypto::kdf12(cmd_key, &[LENGTH_NONCE_LABEL, auth_id, nonce]),
            payload: AeadCipher::aes_128_gcm(&crypto::kdf16(
                cmd_key,
                &[PAYLOAD_KEY_LABEL, auth_id, nonce],
            )),
            payload_nonce: crypto::kdf12(cmd_key, &[PAYLOAD_NONCE_LABEL, auth_id, nonce]),
        }
    }
}

/// Appends a sealed AEAD request: AuthID, sealed length, connection nonce,
/// sealed header plaintext.
pub fn seal_aead_request(
    cmd_key: &[u8; 16],
    auth_id: &[u8; 16],
    connection_nonce: &[u8; 8],
    header_plain: &[u8],
    out: &mut Vec<u8>,
) {
    let keys = RequestSealKeys::derive(cmd_key, auth_id, connection_nonce);
    out.extend_from_slice(auth_id);
    // Headers are at most a few hundred bytes, so the length fits 16 bits.
    let mut length = (header_plain.len() as u16).to_be_bytes();
    let tag = keys
        .length
        .seal_in_place(keys.length_nonce, auth_id, &mut length);
    out.extend_from_slice(&length);
    out.extend_from_slice(&tag);
    out.extend_from_slice(connection_nonce);
    let start = out.len();
    out.extend_from_slice(header_plain);
    let tag = keys
        .payload
        .seal_in_place(keys.payload_nonce, auth_id, &mut out[start..]);
    out.extend_from_slice(&tag);
}

/// Opens the rest of an AEAD request whose AuthID already matched `cmd_key`.
/// `data` starts right after the AuthID. Returns the header plaintext and
/// the bytes of `data` it took, or `None` when more bytes are needed.
pub fn open_aead_request(
    cmd_key: &[u8; 16],
    auth_id: &[u8; 16],
    data: &[u8],
) -> Result<Option<(Vec<u8>, usize)>, HandshakeError> {
    let prefix = SEALED_LENGTH_LEN + CONNECTION_NONCE_LEN;
    if data.len() < prefix {
        return Ok(None);
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&data[SEALED_LENGTH_LEN..prefix]);
    let keys = RequestSealKeys::derive(cmd_key, auth_id, &nonce);
    let mut length = [0u8; SEALED_LENGTH_LEN];
    length.copy_from_slice(&data[..SEALED_LENGTH_LEN]);
    keys.length
        .open_in_place(keys.length_nonce, auth_id, &mut length)
        .map_err(|_| HandshakeError::HeaderUnauthentic)?;
    let header_len = u16::from_be_bytes([length[0], length[1]]);
    if header_len > MAX_SEALED_HEADER {
        return Err(HandshakeError::HeaderLength(header_len));
    }
    let total = prefix + header_len as usize + TAG_LEN;
    let Some(sealed) = data.get(prefix..total) else {
        return Ok(None);
    };
    let mut plain = sealed.to_vec();
    let len = keys
        .payload
        .open_in_place(keys.payload_nonce, auth_id, &mut plain)
        .map_err(|_| HandshakeError::HeaderUnauthentic)?;
    plain.truncate(len);
    Ok(Some((plain, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_vectors::{hex, spec_user, unhex, SPEC_PLAIN, SPEC_SEALED};

    #[test]
    fn sealed_request_matches_spec() {
        let user = spec_user();
        let auth_id: [u8; 16] = unhex("6868c12572a3ce177baac5f08cc54ec3")
            .try_into()
            .unwrap();
        let nonce: [u8; 8] = unhex("a0a1a2a3a4a5a6a7").try_into().unwrap();
        let mut out = Vec::new();
        seal_aead_request(
            &user.cmd_key(),
            &auth_id,
            &nonce,
            &unhex(SPEC_PLAIN),
            &mut out,
        );
        assert_eq!(hex(&out), SPEC_SEALED);
        let (plain, used) = open_aead_request(&user.cmd_key(), &auth_id, &out[16..])
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len() - 16);
        assert_eq!(hex(&plain), SPEC_PLAIN);
        for cut in 16..out.len() {
            assert_eq!(
                open_aead_request(&user.cmd_key(), &auth_id, &out[16..cut]),
                Ok(None)
            );
        }
        let mut flipped = out.clone();
        flipped[60] ^= 0x01;
        assert_eq!(
            open_aead_request(&user.cmd_key(), &auth_id, &flipped[16..]),
            Err(HandshakeError::HeaderUnauthentic)
        );
    }
}
