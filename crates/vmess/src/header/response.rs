//! Sans-IO codec of the VMess response header, and the key and IV of each
//! body direction derived from the request header.
//!
//! It is not the body ([`crate::body`] seals and opens chunks under these
//! keys) nor the request header the keys come from (`request.rs`). Part of
//! [`crate::header`]; [`crate::inbound`] seals it, [`crate::outbound`] and
//! [`crate::stream`] decode it on the client side.
//!
//! Response header plaintext: `V | 0 | 0 | 0` (commands are never sent by
//! Rayback and are skipped when received). AEAD mode seals its length (18
//! bytes) and then the plaintext (+16); legacy mode encrypts it with
//! AES-128-CFB under the response key and IV.

use super::request::RequestHeader;
use super::{HeaderMode, SEALED_LENGTH_LEN};
use crate::crypto::{self, AeadCipher, Cfb128, TAG_LEN};
use crate::error::VmessError;

const RESPONSE_LENGTH_KEY_LABEL: &[u8] = b"AEAD Resp Header Len Key";
const RESPONSE_LENGTH_NONCE_LABEL: &[u8] = b"AEAD Resp Header Len IV";
const RESPONSE_PAYLOAD_KEY_LABEL: &[u8] = b"AEAD Resp Header Key";
const RESPONSE_PAYLOAD_NONCE_LABEL: &[u8] = b"AEAD Resp Header IV";

/// The key and IV of the response direction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirectionKeys {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(******)")
    }
}

impl DirectionKeys {
    /// The request direction: the body key and IV of the header.
    pub fn request(header: &RequestHeader) -> DirectionKeys {
        DirectionKeys {
            key: header.body_key,
            iv: header.body_iv,
        }
    }

    /// The response direction: SHA-256 (AEAD mode) or MD5 (legacy mode) of
    /// the request key and IV.
    pub fn response(header: &RequestHeader, mode: HeaderMode) -> DirectionKeys {
        match mode {
            HeaderMode::Aead => {
                let mut key = [0u8; 16];
                key.copy_from_slice(&crypto::sha256(&header.body_key)[..16]);
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&crypto::sha256(&header.body_iv)[..16]);
                DirectionKeys { key, iv }
            }
            HeaderMode::Legacy => DirectionKeys {
                key: crypto::md5(&[&header.body_key]),
                iv: crypto::md5(&[&header.body_iv]),
            },
        }
    }
}

/// Appends the response header `V 0 0 0` sealed for `mode` under the
/// response direction's keys.
pub fn seal_response(
    keys: &DirectionKeys,
    mode: HeaderMode,
    response_auth: u8,
    option: u8,
    out: &mut Vec<u8>,
) {
    let plain = [response_auth, option, 0, 0];
    match mode {
        HeaderMode::Aead => {
            let length_cipher =
                AeadCipher::aes_128_gcm(&crypto::kdf16(&keys.key, &[RESPONSE_LENGTH_KEY_LABEL]));
            let length_nonce = crypto::kdf12(&keys.iv, &[RESPONSE_LENGTH_NONCE_LABEL]);
            let mut length = (plain.len() as u16).to_be_bytes();
            let tag = length_cipher.seal_in_place(length_nonce, &[], &mut length);
            out.extend_from_slice(&length);
            out.extend_from_slice(&tag);
            let payload_cipher =
                AeadCipher::aes_128_gcm(&crypto::kdf16(&keys.key, &[RESPONSE_PAYLOAD_KEY_LABEL]));
            let payload_nonce = crypto::kdf12(&keys.iv, &[RESPONSE_PAYLOAD_NONCE_LABEL]);
            let mut payload = plain;
            let tag = payload_cipher.seal_in_place(payload_nonce, &[], &mut payload);
            out.extend_from_slice(&payload);
            out.extend_from_slice(&tag);
        }
        HeaderMode::Legacy => {
            let mut payload = plain;
            Cfb128::new(&keys.key, &keys.iv).encrypt(&mut payload);
            out.extend_from_slice(&payload);
        }
    }
}

/// Reads a response header on the client side.
pub struct ResponseDecoder {
    keys: DirectionKeys,
    mode: HeaderMode,
    expected_auth: u8,
    /// AEAD: the opened plaintext length, once the sealed length was read.
    payload_len: Option<u16>,
    /// The response's option byte, once decoded.
    option: u8,
}

impl ResponseDecoder {
    pub fn new(keys: DirectionKeys, mode: HeaderMode, expected_auth: u8) -> ResponseDecoder {
        ResponseDecoder {
            keys,
            mode,
            expected_auth,
            payload_len: None,
            option: 0,
        }
    }

    /// The option byte of the decoded response (0 before it is decoded).
    pub fn option(&self) -> u8 {
        self.option
    }

    /// Decodes the response header at the start of `data`; returns how many
    /// bytes it took, or `None` for more. Commands (SwitchAccount) are
    /// skipped, as a reimplementation may.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        match self.mode {
            HeaderMode::Aead => self.decode_aead(data),
            HeaderMode::Legacy => self.decode_legacy(data),
        }
    }

    fn decode_aead(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        let payload_len = match self.payload_len {
            Some(len) => len,
            None => {
                let Some(sealed) = data.get(..SEALED_LENGTH_LEN) else {
                    return Ok(None);
                };
                let cipher = AeadCipher::aes_128_gcm(&crypto::kdf16(
                    &self.keys.key,
                    &[RESPONSE_LENGTH_KEY_LABEL],
                ));
                let nonce = crypto::kdf12(&self.keys.iv, &[RESPONSE_LENGTH_NONCE_LABEL]);
                let mut length = [0u8; SEALED_LENGTH_LEN];
                length.copy_from_slice(sealed);
                cipher
                    .open_in_place(nonce, &[], &mut length)
                    .map_err(|_| VmessError::ResponseUnauthentic)?;
                let len = u16::from_be_bytes([length[0], length[1]]);
                // V, option, command, command length, then up to 255 bytes.
                if !(4..=4 + 255).contains(&len) {
                    return Err(VmessError::ResponseLength(len));
                }
                self.payload_len = Some(len);
                len
            }
        };
        let total = SEALED_LENGTH_LEN + payload_len as usize + TAG_LEN;
        let Some(sealed) = data.get(SEALED_LENGTH_LEN..total) else {
            return Ok(None);
        };
        let cipher = AeadCipher::aes_128_gcm(&crypto::kdf16(
            &self.keys.key,
            &[RESPONSE_PAYLOAD_KEY_LABEL],
        ));
        let nonce = crypto::kdf12(&self.keys.iv, &[RESPONSE_PAYLOAD_NONCE_LABEL]);
        let mut plain = [0u8; 4 + 255 + TAG_LEN];
        let plain = &mut plain[..sealed.len()];
        plain.copy_from_slice(sealed);
        cipher
            .open_in_place(nonce, &[], plain)
            .map_err(|_| VmessError::ResponseUnauthentic)?;
        self.check_auth(plain[0])?;
        self.option = plain[1];
        Ok(Some(total))
    }

    fn decode_legacy(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        let Some(head) = data.get(..4) else {
            return Ok(None);
        };
        let mut plain = [0u8; 4];
        plain.copy_from_slice(head);
        Cfb128::new(&self.keys.key, &self.keys.iv).decrypt(&mut plain);
        self.check_auth(plain[0])?;
        self.option = plain[1];
        // Command bytes follow when a command is present; they only need
        // to be skipped (the body does not continue this CFB stream for
        // the AEAD body ciphers).
        let total = if plain[2] != 0 {
            4 + plain[3] as usize
        } else {
            4
        };
        if data.len() < total {
            return Ok(None);
        }
        Ok(Some(total))
    }

    fn check_auth(&self, found: u8) -> Result<(), VmessError> {
        if found != self.expected_auth {
            return Err(VmessError::ResponseAuthMismatch {
                expected: self.expected_auth,
                found,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_vectors::{hex, spec_header};

    #[test]
    fn response_header_matches_spec() {
        let header = spec_header();
        let aead_keys = DirectionKeys::response(&header, HeaderMode::Aead);
        assert_eq!(hex(&aead_keys.key), "fc2e2c73072bfa2bda03ff9307472deb");
        assert_eq!(hex(&aead_keys.iv), "be45cb2605bf36bebde684841a28f0fd");
        let legacy_keys = DirectionKeys::response(&header, HeaderMode::Legacy);
        assert_eq!(hex(&legacy_keys.key), "1bf42e241816ba29ff5f307bb1bc1d16");
        assert_eq!(hex(&legacy_keys.iv), "1ac1ef01e96caf1be0d329331a4fc2a8");
        let mut sealed = Vec::new();
        seal_response(&aead_keys, HeaderMode::Aead, 0x42, 0, &mut sealed);
        assert_eq!(
            hex(&sealed),
            "9bdfb1639712b6a6348d0087b8d1af379ecf70afb5ebb377066e79586918c758b5afc6888061"
        );
        for mode in [HeaderMode::Aead, HeaderMode::Legacy] {
            let keys = DirectionKeys::response(&header, mode);
            let mut sealed = Vec::new();
            seal_response(&keys, mode, 0x42, 0, &mut sealed);
            sealed.extend_from_slice(b"body");
            let mut decoder = ResponseDecoder::new(keys, mode, 0x42);
            for cut in 0..sealed.len() - 4 {
                assert_eq!(decoder.decode(&sealed[..cut]).unwrap(), None);
            }
            assert_eq!(decoder.decode(&sealed).unwrap(), Some(sealed.len() - 4));
            let mut wrong = ResponseDecoder::new(keys, mode, 0x43);
            assert!(wrong.decode(&sealed).is_err());
        }
    }
}
