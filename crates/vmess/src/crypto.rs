//! The cryptographic building blocks VMess is made of, each behind a small
//! named type: the ring AEAD wrapper, the nested-HMAC KDF, MD5 and
//! HMAC-MD5, AES-128 (one block and CFB-128), SHAKE128 chunk masks, and the
//! two checksums (CRC-32 of the AuthID, FNV-1a of the request header).
//!
//! This module knows no wire layout; [`crate::header`] and [`crate::body`]
//! put these pieces together. Nothing here does IO or allocates per call on
//! the body path.

use aes::cipher::{BlockEncrypt, KeyInit};
use md5::{Digest, Md5};
use ring::aead;
use sha3::digest::{ExtendableOutput, Update, XofReader};

/// Bytes of an AEAD key for AES-128-GCM (and of every VMess direction key).
pub const AES_KEY_LEN: usize = 16;
/// Bytes of a ChaCha20-Poly1305 key.
pub const CHACHA_KEY_LEN: usize = 32;
/// Bytes of an AEAD nonce (both ciphers).
pub const NONCE_LEN: usize = aead::NONCE_LEN;
/// Bytes of an AEAD tag (both ciphers).
pub const TAG_LEN: usize = 16;

/// The two AEAD algorithms VMess uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeadAlgorithm {
    Aes128Gcm,
    ChaCha20Poly1305,
}

/// An AEAD failure. Deliberately opaque: a caller learns that the bytes are
/// not authentic, nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct Unauthentic;

/// A keyed AEAD cipher (ring), sealing and opening in place.
pub struct AeadCipher {
    key: aead::LessSafeKey,
}

impl AeadCipher {
    /// AES-128-GCM with a 16-byte key.
    pub fn aes_128_gcm(key: &[u8; AES_KEY_LEN]) -> AeadCipher {
        AeadCipher::new(&aead::AES_128_GCM, key)
    }

    /// ChaCha20-Poly1305 with a 32-byte key.
    pub fn chacha20_poly1305(key: &[u8; CHACHA_KEY_LEN]) -> AeadCipher {
        AeadCipher::new(&aead::CHACHA20_POLY1305, key)
    }

    /// The cipher VMess uses for a body direction: AES-128-GCM keyed by the
    /// direction key, or ChaCha20-Poly1305 keyed by
    /// `MD5(key) ‖ MD5(MD5(key))`.
    pub fn for_body(algorithm: AeadAlgorithm, key: &[u8; AES_KEY_LEN]) -> AeadCipher {
        match algorithm {
            AeadAlgorithm::Aes128Gcm => AeadCipher::aes_128_gcm(key),
            AeadAlgorithm::ChaCha20Poly1305 => AeadCipher::chacha20_poly1305(&chacha_key(key)),
        }
    }

    fn new(algorithm: &'static aead::Algorithm, key: &[u8]) -> AeadCipher {
        // The key length is fixed by the constructors' array types, so ring
        // cannot refuse it.
        let unbound = aead::UnboundKey::new(algorithm, key).expect("key length matches algorithm");
        AeadCipher {
            key: aead::LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `in_out` in place and returns the tag to append.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                in_out,
            )
            // ring fails only for inputs over ~64 GiB.
            .expect("aead input within limits");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place and
    /// returns the plaintext length (`in_out.len() - TAG_LEN`).
    pub fn open_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, Unauthentic> {
        if in_out.len() < TAG_LEN {
            return Err(Unauthentic);
        }
        self.key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                in_out,
            )
            .map(|plain| plain.len())
            .map_err(|_| Unauthentic)
    }
}

/// `MD5(key) ‖ MD5(MD5(key))`: the ChaCha20-Poly1305 key of a body direction.
pub fn chacha_key(key: &[u8; AES_KEY_LEN]) -> [u8; CHACHA_KEY_LEN] {
    let first = md5(&[key]);
    let second = md5(&[&first]);
    let mut out = [0u8; CHACHA_KEY_LEN];
    out[..16].copy_from_slice(&first);
    out[16..].copy_from_slice(&second);
    out
}

/// MD5 over the concatenation of `parts`.
pub fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = Md5::new();
    for part in parts {
        Digest::update(&mut hasher, part);
    }
    hasher.finalize().into()
}

/// HMAC-MD5 with a key of at most 64 bytes (VMess keys are 16).
pub fn hmac_md5(key: &[u8], message: &[u8]) -> [u8; 16] {
    debug_assert!(key.len() <= 64);
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, byte) in key.iter().take(64).enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let inner = md5(&[&inner_pad, message]);
    md5(&[&outer_pad, &inner])
}

/// SHA-256 (ring) over one buffer.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The root label of every KDF chain.
pub const KDF_ROOT: &[u8] = b"VMess AEAD KDF";

/// VMess's KDF: nested HMACs whose innermost hash is SHA-256 keyed with
/// `"VMess AEAD KDF"` and whose outermost is keyed with the last element of
/// `path`; `secret` is the message. See spec/vmess.md §2.
pub fn kdf(secret: &[u8], path: &[&[u8]]) -> [u8; 32] {
    // Level 0 is SHA-256; level j is HMAC over level j-1 keyed with label j.
    let mut labels: Vec<&[u8]> = Vec::with_capacity(path.len() + 1);
    labels.push(KDF_ROOT);
    labels.extend_from_slice(path);
    nested_hash(&labels, &[secret])
}

/// `KDF(..)[0..16]`.
pub fn kdf16(secret: &[u8], path: &[&[u8]]) -> [u8; 16] {
    let full = kdf(secret, path);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// `KDF(..)[0..12]`: the nonces of the AEAD headers.
pub fn kdf12(secret: &[u8], path: &[&[u8]]) -> [u8; 12] {
    let full = kdf(secret, path);
    let mut out = [0u8; 12];
    out.copy_from_slice(&full[..12]);
    out
}

/// Hash of the concatenated `message` pieces at level `labels.len()`
/// (level 0 = SHA-256).
fn nested_hash(labels: &[&[u8]], message: &[&[u8]]) -> [u8; 32] {
    let Some((last, lower)) = labels.split_last() else {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for piece in message {
            context.update(piece);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        return out;
    };
    // Labels are short ASCII or 16/8-byte binary values: never over the
    // 64-byte block, so no key hashing step is needed.
    debug_assert!(last.len() <= 64);
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, byte) in last.iter().take(64).enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let mut inner_message: Vec<&[u8]> = Vec::with_capacity(message.len() + 1);
    inner_message.push(&inner_pad);
    inner_message.extend_from_slice(message);
    let inner = nested_hash(lower, &inner_message);
    nested_hash(lower, &[&outer_pad, &inner])
}

/// A precomputed AES-128 key for decrypting many AuthIDs with one user key.
#[derive(Clone)]
pub struct AuthIdCipher {
    cipher: aes::Aes128,
}

impl AuthIdCipher {
    pub fn new(key: &[u8; 16]) -> AuthIdCipher {
        AuthIdCipher {
            cipher: aes::Aes128::new(key.into()),
        }
    }

    pub fn encrypt(&self, block: &[u8; 16]) -> [u8; 16] {
        let mut data = aes::Block::from(*block);
        self.cipher.encrypt_block(&mut data);
        data.into()
    }

    pub fn decrypt(&self, block: &[u8; 16]) -> [u8; 16] {
        use aes::cipher::BlockDecrypt;
        let mut data = aes::Block::from(*block);
        self.cipher.decrypt_block(&mut data);
        data.into()
    }
}

/// AES-128-CFB with full 128-bit feedback, as a resumable stream: the
/// legacy header and the legacy response header.
pub struct Cfb128 {
    cipher: aes::Aes128,
    /// The last ciphertext block (the IV at first).
    register: [u8; 16],
    /// Keystream for the current block: `E(register)` once computed.
    keystream: [u8; 16],
    /// Bytes of the current block already used; 16 = compute a new block.
    used: usize,
}

impl Cfb128 {
    pub fn new(key: &[u8; 16], iv: &[u8; 16]) -> Cfb128 {
        Cfb128 {
            cipher: aes::Aes128::new(key.into()),
            register: *iv,
            keystream: [0; 16],
            used: 16,
        }
    }

    fn next_keystream(&mut self) {
        let mut block = aes::Block::from(self.register);
        self.cipher.encrypt_block(&mut block);
        self.keystream = block.into();
        self.used = 0;
    }

    pub fn encrypt(&mut self, data: &mut [u8]) {
        for byte in data {
            if self.used == 16 {
                self.next_keystream();
            }
            *byte ^= self.keystream[self.used];
            self.register[self.used] = *byte;
            self.used += 1;
        }
    }

    pub fn decrypt(&mut self, data: &mut [u8]) {
        for byte in data {
            if self.used == 16 {
                self.next_keystream();
            }
            let cipher_byte = *byte;
            *byte ^= self.keystream[self.used];
            self.register[self.used] = cipher_byte;
            self.used += 1;
        }
    }
}

/// A SHAKE128 stream read two bytes at a time: VMess's chunk length masks
/// and padding lengths.
pub struct ShakeMask {
    reader: sha3::Shake128Reader,
}

impl ShakeMask {
    pub fn new(iv: &[u8; 16]) -> ShakeMask {
        let mut hasher = sha3::Shake128::default();
        hasher.update(iv);
        ShakeMask {
            reader: hasher.finalize_xof(),
        }
    }

    /// The next big-endian `u16` of the stream.
    pub fn next_u16(&mut self) -> u16 {
        let mut two = [0u8; 2];
        self.reader.read(&mut two);
        u16::from_be_bytes(two)
    }
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut value = i as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 != 0 {
                0xedb8_8320 ^ (value >> 1)
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[i] = value;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();

/// CRC-32/IEEE (the zlib polynomial).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC32_TABLE[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// FNV-1a, 32 bits: the request header checksum.
pub fn fnv1a32(data: &[u8]) -> u32 {
    let mut hash = 0x811c_9dc5u32;
    for &byte in data {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn kdf_vectors_from_spec() {
        let cmd_key = [
            0x6f, 0x87, 0xe1, 0xb1, 0x9f, 0x8d, 0xa2, 0x5d, 0xf7, 0x15, 0xd6, 0x55, 0xae, 0x9a,
            0x17, 0x64,
        ];
        assert_eq!(
            hex(&kdf(&cmd_key, &[])),
            "7a8a95cc2671e89395999ce8ef49797d6f3d123cb4206da24993bf88b99e437f"
        );
        assert_eq!(
            hex(&kdf(&cmd_key, &[b"AES Auth ID Encryption"])),
            "1d3a02ab9f56cff3ec46c641e6b897160d6fd5eeab938ccaca9b6c4baaa2d95b"
        );
        assert_eq!(
            hex(&kdf(
                b"Demo Key for Auth ID Test",
                &[b"Demo Path for Auth ID Test"]
            )),
            "66e41ad47fa745fbfd1e97325e93dbf4a04daac03e50fdf3052da7136662dfe1"
        );
        assert_eq!(
            hex(&kdf(b"", &[b"a", b"b"])),
            "34ee034a5af9146bc5cbfb270c6178e18a8703546c51bc7bd81ab6441a321fb0"
        );
    }

    #[test]
    fn checksums_match_spec() {
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"v2ray"), 0x6f4d9673);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn shake_mask_matches_spec() {
        let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
        let mut mask = ShakeMask::new(&iv);
        let draws: Vec<u16> = (0..4).map(|_| mask.next_u16()).collect();
        assert_eq!(draws, [38984, 6470, 56965, 50800]);
    }

    #[test]
    fn chacha_key_matches_spec() {
        let key: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
        assert_eq!(
            hex(&chacha_key(&key)),
            "1bf42e241816ba29ff5f307bb1bc1d168b39e04ece3e33ab822442d7e6cefd5f"
        );
    }

    #[test]
    fn cfb_round_trips_in_pieces() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let plain: Vec<u8> = (0..100u8).collect();
        let mut whole = plain.clone();
        Cfb128::new(&key, &iv).encrypt(&mut whole);
        let mut pieces = whole.clone();
        let mut decryptor = Cfb128::new(&key, &iv);
        for piece in pieces.chunks_mut(7) {
            decryptor.decrypt(piece);
        }
        assert_eq!(pieces, plain);
        assert_ne!(whole, plain);
    }

    #[test]
    fn aead_rejects_flipped_bits_opaquely() {
        let cipher = AeadCipher::aes_128_gcm(&[1; 16]);
        let mut data = b"hello world".to_vec();
        let tag = cipher.seal_in_place([0; 12], b"", &mut data);
        data.extend_from_slice(&tag);
        let mut good = data.clone();
        assert_eq!(cipher.open_in_place([0; 12], b"", &mut good), Ok(11));
        assert_eq!(&good[..11], b"hello world");
        data[3] ^= 1;
        assert_eq!(
            cipher.open_in_place([0; 12], b"", &mut data),
            Err(Unauthentic)
        );
        assert_eq!(
            cipher.open_in_place([0; 12], b"", &mut [0u8; 5]),
            Err(Unauthentic)
        );
    }
}
