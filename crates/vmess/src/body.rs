//! The sans-IO VMess body codec: one [`ChunkSealer`] per sending direction,
//! one [`ChunkOpener`] per receiving direction. Bytes in, bytes out, no IO;
//! randomness (padding bytes) comes from the caller's RNG.
//!
//! A chunk (option S, or always for the AEAD ciphers):
//!
//! | bytes | field |
//! |---|---|
//! | 2 | `Len` = (payload + tag + pad) XOR mask, big-endian |
//! | payload + 16 | AEAD ciphertext and tag (none: just the payload, no tag) |
//! | pad | random padding |
//!
//! * mask: the next BE16 of SHAKE128(direction IV) when option M is set,
//!   else 0. With option P the padding length (`draw % 64`) is drawn
//!   first, then the mask. Security none on a stream command never pads
//!   and draws only the mask.
//! * nonce: 16-bit chunk counter (BE) ‖ IV[2..12]; AES-128-GCM keyed with
//!   the direction key, ChaCha20-Poly1305 with `MD5(k) ‖ MD5(MD5(k))`.
//! * end of stream: a chunk whose `Len` is just the overhead (`16 + pad`,
//!   none: `0` on streams, `pad` on UDP), i.e. an empty payload. Rayback
//!   reads it whole and checks its tag (4.34 stops after `Len`), so a
//!   forged end cannot truncate a body.
//! * security none without S: the raw bytes, no framing.
//!
//! Sizes. V2Ray 4.34 writes chunks of at most 2048 bytes but reads any
//! `Len` up to 65535 (its `AuthenticationReader` takes a pooled buffer for
//! chunks over 2 KiB). Rayback therefore writes chunks up to
//! [`MAX_CHUNK_LEN`] = 65535 bytes of `Len`, which cuts per-chunk costs by
//! 32x against 2 KiB chunks; the interop tests push such chunks into the
//! real binary in both directions.
//!
//! Nonce budget. The counter is 16 bits and there is no rekeying, so one
//! direction of one connection can seal 65536 chunks before a (key, nonce)
//! pair would repeat. A [`ChunkSealer`] seals at most 65535 data chunks
//! plus the end chunk and then refuses ([`VmessError::BudgetExhausted`]);
//! with full chunks that is about 4 GiB per connection and direction. A
//! 4.34 peer simply wraps; a [`ChunkOpener`] tolerates that (the nonce is
//! the counter modulo 65536) and reports the chunk count so the caller can
//! count wraps.

use std::ops::Range;

use rand::RngCore;

use crate::crypto::{AeadAlgorithm, AeadCipher, ShakeMask, NONCE_LEN, TAG_LEN};
use crate::error::VmessError;
use crate::header::{BodySecurity, Command, DirectionKeys, Options};

/// The largest `Len` field (payload + tag + padding) a chunk may carry:
/// the 16-bit limit, which the 4.34 reader accepts.
pub const MAX_CHUNK_LEN: usize = u16::MAX as usize;
/// The largest padding a chunk can have (`draw % 64`).
pub const MAX_PADDING: usize = 63;
/// Nonces available per direction: the 16-bit counter's range.
pub const NONCE_BUDGET: u32 = 1 << 16;
/// Data chunks one sealer writes at most: the budget less the end chunk.
pub const DATA_CHUNK_BUDGET: u32 = NONCE_BUDGET - 1;
/// Under this many remaining chunks, [`ChunkSealer::near_budget`] is true
/// (one sixteenth of the budget: ~256 MiB of full chunks left).
pub const NEAR_BUDGET_CHUNKS: u32 = NONCE_BUDGET / 16;
/// Bytes of the `Len` field.
pub const LEN_FIELD: usize = 2;

/// How a body direction is framed: fixed by the request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyFraming {
    pub security: BodySecurity,
    pub options: Options,
    /// UDP (command 0x02): one chunk per datagram, none security pads.
    pub packet: bool,
}

impl BodyFraming {
    pub fn new(security: BodySecurity, options: Options, command: Command) -> BodyFraming {
        BodyFraming {
            security,
            options,
            packet: command == Command::Udp,
        }
    }

    pub(crate) fn algorithm(self) -> Option<AeadAlgorithm> {
        match self.security {
            BodySecurity::Aes128Gcm => Some(AeadAlgorithm::Aes128Gcm),
            BodySecurity::ChaCha20Poly1305 => Some(AeadAlgorithm::ChaCha20Poly1305),
            BodySecurity::None => None,
        }
    }

    /// Whether the body is framed in chunks at all (AEAD ciphers always;
    /// none only with S).
    pub fn chunked(self) -> bool {
        self.security != BodySecurity::None || self.options.has(Options::CHUNK_STREAM)
    }

    fn masked(self) -> bool {
        self.options.has(Options::CHUNK_MASKING)
    }

    /// Whether chunks carry padding: P (which requires M), except for
    /// security none on streams.
    fn padded(self) -> bool {
        self.options.has(Options::GLOBAL_PADDING)
            && self.masked()
            && (self.security != BodySecurity::None || self.packet)
    }

    /// Bytes of authentication tag per chunk.
    pub fn tag_len(self) -> usize {
        if self.algorithm().is_some() {
            TAG_LEN
        } else {
            0
        }
    }

    /// The largest payload one chunk carries, padding reserved.
    pub fn max_payload(self) -> usize {
        if !self.chunked() {
            return usize::MAX;
        }
        let padding = if self.padded() { MAX_PADDING } else { 0 };
        MAX_CHUNK_LEN - self.tag_len() - padding
    }
}

/// The per-chunk random draws of one direction.
struct Draws {
    mask: Option<ShakeMask>,
    padded: bool,
}

impl Draws {
    fn new(framing: BodyFraming, iv: &[u8; 16]) -> Draws {
        Draws {
            mask: framing.masked().then(|| ShakeMask::new(iv)),
            padded: framing.padded(),
        }
    }

    /// (padding length, mask) for the next chunk, drawn in 4.34's order.
    fn next(&mut self) -> (usize, u16) {
        match &mut self.mask {
            Some(shake) => {
                let padding = if self.padded {
                    (shake.next_u16() % 64) as usize
                } else {
                    0
                };
                (padding, shake.next_u16())
            }
            None => (0, 0),
        }
    }
}

fn chunk_nonce(counter: u16, iv: &[u8; 16]) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..2].copy_from_slice(&counter.to_be_bytes());
    nonce[2..].copy_from_slice(&iv[2..12]);
    nonce
}

/// Seals one sending direction of a body.
pub struct ChunkSealer {
    framing: BodyFraming,
    cipher: Option<AeadCipher>,
    iv: [u8; 16],
    draws: Draws,
    /// Chunks sealed with the current key (data and end), = the next nonce
    /// counter.
    sealed: u32,
    ended: bool,
    /// The current body key, for [`rekeyed`].
    key: [u8; 16],
    /// Both sides agreed to rekey (Rayback's extension).
    rekey: bool,
    generation: u32,
}

/// Moves `key` to its next generation and returns the cipher for it.
fn rotate(key: &mut [u8; 16], generation: &mut u32, framing: BodyFraming) -> Option<AeadCipher> {
    *generation += 1;
    *key = rekeyed(key, *generation);
    framing
        .algorithm()
        .map(|algorithm| AeadCipher::for_body(algorithm, key))
}

/// The body key after `generation` rekeys (Rayback's extension, agreed in
/// the header): the first 16 bytes of SHA-256 over a label, the previous
/// key and the generation. Both sides switch keys after exactly 65536
/// chunks, so a (key, nonce) pair is never used twice.
pub fn rekeyed(key: &[u8; 16], generation: u32) -> [u8; 16] {
    let mut input = Vec::with_capacity(24 + 16 + 4);
    input.extend_from_slice(b"rayback vmess body rekey");
    input.extend_from_slice(key);
    input.extend_from_slice(&generation.to_be_bytes());
    let digest = crate::crypto::sha256(&input);
    let mut next = [0u8; 16];
    next.copy_from_slice(&digest[..16]);
    next
}

impl ChunkSealer {
    pub fn new(framing: BodyFraming, keys: &DirectionKeys) -> ChunkSealer {
        ChunkSealer {
            framing,
            cipher: framing
                .algorithm()
                .map(|algorithm| AeadCipher::for_body(algorithm, &keys.key)),
            iv: keys.iv,
            draws: Draws::new(framing, &keys.iv),
            sealed: 0,
            ended: false,
            key: keys.key,
            rekey: false,
            generation: 0,
        }
    }

    /// Turns on rekeying (both sides agreed in the header): the send budget
    /// no longer runs out.
    pub fn enable_rekey(&mut self) {
        self.rekey = true;
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Data chunks this direction can still seal (`u32::MAX` for security
    /// none, which uses no nonces).
    pub fn remaining_chunks(&self) -> u32 {
        if self.cipher.is_none() || self.rekey {
            return u32::MAX;
        }
        DATA_CHUNK_BUDGET.saturating_sub(self.sealed)
    }

    /// True once fewer than [`NEAR_BUDGET_CHUNKS`] data chunks remain: time
    /// to move new sessions to a fresh connection.
    pub fn near_budget(&self) -> bool {
        self.remaining_chunks() < NEAR_BUDGET_CHUNKS
    }

    /// Whether the end chunk was sealed.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Seals `data` as few full-size chunks as possible (one chunk for a
    /// packet), appending them to `out`. Returns how many bytes of `data`
    /// were taken: all of them unless the budget ran out first, then the
    /// bytes before the point it ran out (an error if that is none).
    /// Empty `data` seals nothing.
    pub fn seal<R: RngCore + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        rng: &mut R,
    ) -> Result<usize, VmessError> {
        if data.is_empty() {
            return Ok(0);
        }
        if !self.framing.chunked() {
            out.extend_from_slice(data);
            return Ok(data.len());
        }
        let max = self.framing.max_payload();
        let mut taken = 0;
        for piece in data.chunks(max) {
            if self.remaining_chunks() == 0 {
                if taken == 0 {
                    return Err(VmessError::BudgetExhausted(NONCE_BUDGET));
                }
                break;
            }
            self.seal_one(piece, out, rng);
            taken += piece.len();
        }
        Ok(taken)
    }

    /// Seals the end-of-stream chunk (once; later calls do nothing). For
    /// security none without S there is no end chunk.
    pub fn seal_end<R: RngCore + ?Sized>(&mut self, out: &mut Vec<u8>, rng: &mut R) {
        if self.ended || !self.framing.chunked() {
            self.ended = true;
            return;
        }
        self.ended = true;
        self.seal_one(&[], out, rng);
    }

    /// Test hook: seals one chunk letting the counter wrap, as a 4.34
    /// writer does after 65536 chunks.
    #[cfg(test)]
    pub(crate) fn seal_wrapping<R: RngCore + ?Sized>(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        rng: &mut R,
    ) {
        self.sealed %= NONCE_BUDGET;
        self.seal_one(payload, out, rng);
    }

    fn seal_one<R: RngCore + ?Sized>(&mut self, payload: &[u8], out: &mut Vec<u8>, rng: &mut R) {
        if self.rekey && self.sealed == NONCE_BUDGET {
            self.cipher = rotate(&mut self.key, &mut self.generation, self.framing);
            self.sealed = 0;
        }
        let (padding, mask) = self.draws.next();
        let tag_len = self.framing.tag_len();
        let len = payload.len() + tag_len + padding;
        debug_assert!(len <= MAX_CHUNK_LEN);
        out.reserve(LEN_FIELD + len);
        out.extend_from_slice(&((len as u16) ^ mask).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(cipher) = &self.cipher {
            let nonce = chunk_nonce(self.sealed as u16, &self.iv);
            let tag = cipher.seal_in_place(nonce, &[], &mut out[start..]);
            out.extend_from_slice(&tag);
        }
        if padding > 0 {
            let pad_start = out.len();
            out.resize(pad_start + padding, 0);
            rng.fill_bytes(&mut out[pad_start..]);
        }
        self.sealed += 1;
    }
}

/// What [`ChunkOpener::open`] found at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A data chunk: its plaintext is `buf[payload]` (decrypted in place);
    /// the chunk took `consumed` bytes from the start of the buffer.
    Chunk {
        payload: Range<usize>,
        consumed: usize,
    },
    /// The end-of-stream chunk, read whole (the body is over; later bytes
    /// are not part of it).
    End,
    /// The next chunk needs at least this many bytes from the buffer start.
    NeedMore(usize),
}

/// Opens one receiving direction of a body.
pub struct ChunkOpener {
    framing: BodyFraming,
    cipher: Option<AeadCipher>,
    iv: [u8; 16],
    draws: Draws,
    /// The decoded (`Len`, padding) of the chunk at the buffer start, once
    /// its length field was read (the draws are taken only once).
    pending: Option<(usize, usize)>,
    opened: u64,
    ended: bool,
    /// The current body key, for [`rekeyed`].
    key: [u8; 16],
    rekey: bool,
    generation: u32,
    /// Chunks opened with the current key (rekeying only).
    with_key: u32,
}

impl ChunkOpener {
    pub fn new(framing: BodyFraming, keys: &DirectionKeys) -> ChunkOpener {
        ChunkOpener {
            framing,
            cipher: framing
                .algorithm()
                .map(|algorithm| AeadCipher::for_body(algorithm, &keys.key)),
            iv: keys.iv,
            draws: Draws::new(framing, &keys.iv),
            pending: None,
            opened: 0,
            ended: false,
            key: keys.key,
            rekey: false,
            generation: 0,
            with_key: 0,
        }
    }

    /// Turns on rekeying (both sides agreed in the header): the key changes
    /// after every 65536 chunks, exactly where the sealer changes it.
    pub fn enable_rekey(&mut self) {
        self.rekey = true;
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Data chunks opened so far (the end chunk is not counted). The nonce
    /// counter wrapped each time this passes a multiple of 65536.
    pub fn chunks_opened(&self) -> u64 {
        self.opened
    }

    /// Whether the end chunk was seen.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Opens the chunk at the start of `buf`, decrypting it in place.
    /// Call again with the same start (plus more bytes) after `NeedMore`,
    /// and with the buffer advanced by `consumed` after `Chunk`.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, VmessError> {
        if self.ended {
            return Ok(Opened::End);
        }
        if !self.framing.chunked() {
            if buf.is_empty() {
                return Ok(Opened::NeedMore(1));
            }
            return Ok(Opened::Chunk {
                payload: 0..buf.len(),
                consumed: buf.len(),
            });
        }
        let len = match self.awaiting_body() {
            Some(len) => len,
            None => {
                let Some(field) = buf.get(..LEN_FIELD) else {
                    return Ok(Opened::NeedMore(LEN_FIELD));
                };
                self.read_len([field[0], field[1]])?
            }
        };
        // The end chunk is read whole too (and its tag checked, which 4.34
        // skips): a forged short end cannot truncate the stream, and the
        // writer's last bytes are consumed.
        let total = LEN_FIELD + len;
        if buf.len() < total {
            return Ok(Opened::NeedMore(total));
        }
        Ok(match self.open_body(&mut buf[LEN_FIELD..total])? {
            Opened::Chunk { payload, .. } => Opened::Chunk {
                payload: LEN_FIELD + payload.start..LEN_FIELD + payload.end,
                consumed: total,
            },
            other => other,
        })
    }

    /// The `Len` (sealed bytes plus padding) of the chunk whose length
    /// field [`ChunkOpener::open`] has read and whose body it waits for.
    /// A reader that knows it can put that body elsewhere (straight into
    /// the buffer its caller reads into) and open it there with
    /// [`ChunkOpener::open_body`].
    pub fn awaiting_body(&self) -> Option<usize> {
        self.pending.map(|(len, _)| len)
    }

    /// Decodes a length field: the draws are taken once, here.
    fn read_len(&mut self, field: [u8; LEN_FIELD]) -> Result<usize, VmessError> {
        let (padding, mask) = self.draws.next();
        let len = (u16::from_be_bytes(field) ^ mask) as usize;
        if len < self.framing.tag_len() + padding {
            return Err(VmessError::ChunkTooShort(len as u16));
        }
        self.pending = Some((len, padding));
        Ok(len)
    }

    /// Opens, in place, the body of the chunk whose length field was read
    /// (see [`ChunkOpener::awaiting_body`]): `body` starts right after the
    /// length field and holds at least `Len` bytes. The payload range and
    /// `consumed` count from the start of `body`.
    pub fn open_body(&mut self, body: &mut [u8]) -> Result<Opened, VmessError> {
        if self.ended {
            return Ok(Opened::End);
        }
        let Some((len, padding)) = self.pending else {
            return Ok(Opened::NeedMore(LEN_FIELD));
        };
        if body.len() < len {
            return Ok(Opened::NeedMore(len));
        }
        self.pending = None;
        if self.rekey && self.with_key == NONCE_BUDGET {
            self.cipher = rotate(&mut self.key, &mut self.generation, self.framing);
            self.with_key = 0;
        }
        let sealed_end = len - padding;
        let payload_end = match &self.cipher {
            Some(cipher) => {
                let counter = if self.rekey {
                    self.with_key as u16
                } else {
                    self.opened as u16
                };
                let nonce = chunk_nonce(counter, &self.iv);
                cipher
                    .open_in_place(nonce, &[], &mut body[..sealed_end])
                    .map_err(|_| VmessError::ChunkUnauthentic { chunk: self.opened })?
            }
            None => sealed_end,
        };
        self.with_key += 1;
        if payload_end == 0 {
            self.ended = true;
            return Ok(Opened::End);
        }
        self.opened += 1;
        Ok(Opened::Chunk {
            payload: 0..payload_end,
            consumed: len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    fn spec_keys() -> DirectionKeys {
        DirectionKeys {
            key: std::array::from_fn(|i| 0x10 + i as u8),
            iv: std::array::from_fn(|i| i as u8),
        }
    }

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn framing(security: BodySecurity, options: u8) -> BodyFraming {
        BodyFraming::new(security, Options(options), Command::Tcp)
    }

    #[test]
    fn chunks_match_spec_vectors() {
        let mut rng = StepRng::new(0, 0);
        let mut out = Vec::new();
        let mut sealer = ChunkSealer::new(framing(BodySecurity::Aes128Gcm, 0x0d), &spec_keys());
        sealer.seal(b"hello", &mut out, &mut rng).unwrap();
        assert_eq!(
            hex(&out),
            "195bc76e58df1d1b6686ac14fce9bcc0f768b9c8beb10f0000000000000000"
        );
        out.clear();
        let mut sealer = ChunkSealer::new(framing(BodySecurity::Aes128Gcm, 0x05), &spec_keys());
        sealer.seal(b"hello", &mut out, &mut rng).unwrap();
        assert_eq!(hex(&out), "985dc76e58df1d1b6686ac14fce9bcc0f768b9c8beb10f");
        out.clear();
        let mut sealer =
            ChunkSealer::new(framing(BodySecurity::ChaCha20Poly1305, 0x05), &spec_keys());
        sealer.seal(b"hello", &mut out, &mut rng).unwrap();
        assert_eq!(hex(&out), "985d8aa8b3dd9185f30769fd06639baa587ae610a3c4d5");
        out.clear();
        let mut sealer = ChunkSealer::new(framing(BodySecurity::None, 0x05), &spec_keys());
        sealer.seal(b"hello", &mut out, &mut rng).unwrap();
        sealer.seal_end(&mut out, &mut rng);
        assert_eq!(hex(&out), "984d68656c6c6f1946");
    }

    #[test]
    fn second_chunk_uses_the_next_nonce() {
        assert_eq!(
            hex(&chunk_nonce(0, &spec_keys().iv)),
            "000002030405060708090a0b"
        );
        assert_eq!(
            hex(&chunk_nonce(1, &spec_keys().iv)),
            "000102030405060708090a0b"
        );
    }

    fn round_trip(framing: BodyFraming, pieces: &[Vec<u8>]) {
        let mut rng = rand::thread_rng();
        let mut sealer = ChunkSealer::new(framing, &spec_keys());
        let mut wire = Vec::new();
        for piece in pieces {
            assert_eq!(
                sealer.seal(piece, &mut wire, &mut rng).unwrap(),
                piece.len()
            );
        }
        sealer.seal_end(&mut wire, &mut rng);
        let mut opener = ChunkOpener::new(framing, &spec_keys());
        let mut got = Vec::new();
        let mut at = 0;
        loop {
            match opener.open(&mut wire[at..]).unwrap() {
                Opened::Chunk { payload, consumed } => {
                    got.extend_from_slice(&wire[at + payload.start..at + payload.end]);
                    at += consumed;
                }
                Opened::End => break,
                Opened::NeedMore(_) => panic!("whole body is there"),
            }
        }
        assert_eq!(got, pieces.concat());
    }

    #[test]
    fn round_trips_every_framing() {
        let pieces = vec![
            vec![1u8; 1],
            vec![2u8; 70_000],
            vec![3u8; 65_456],
            vec![4; 100],
        ];
        for security in [
            BodySecurity::Aes128Gcm,
            BodySecurity::ChaCha20Poly1305,
            BodySecurity::None,
        ] {
            for options in [0x01, 0x05, 0x0d] {
                for command in [Command::Tcp, Command::Udp] {
                    round_trip(
                        BodyFraming::new(security, Options(options), command),
                        &pieces,
                    );
                }
            }
        }
    }

    #[test]
    fn largest_chunks_fill_the_length_field() {
        let framing = framing(BodySecurity::Aes128Gcm, 0x0d);
        assert_eq!(framing.max_payload(), 65535 - 16 - 63);
        let mut sealer = ChunkSealer::new(framing, &spec_keys());
        let mut wire = Vec::new();
        let data = vec![7u8; framing.max_payload() * 2];
        sealer
            .seal(&data, &mut wire, &mut rand::thread_rng())
            .unwrap();
        assert_eq!(sealer.sealed, 2);
    }

    #[test]
    fn refuses_to_reuse_a_nonce() {
        let mut rng = rand::thread_rng();
        let mut sealer = ChunkSealer::new(framing(BodySecurity::Aes128Gcm, 0x05), &spec_keys());
        let mut wire = Vec::new();
        for _ in 0..DATA_CHUNK_BUDGET - 1 {
            sealer.seal(b"x", &mut wire, &mut rng).unwrap();
            wire.clear();
        }
        assert_eq!(sealer.remaining_chunks(), 1);
        assert!(sealer.near_budget());
        // Two bytes in one-byte chunks: only one fits.
        let mut sealer_small = sealer;
        assert_eq!(sealer_small.seal(b"y", &mut wire, &mut rng).unwrap(), 1);
        assert!(matches!(
            sealer_small.seal(b"z", &mut wire, &mut rng),
            Err(VmessError::BudgetExhausted(_))
        ));
        // The end chunk still has its nonce: counter 65535.
        wire.clear();
        sealer_small.seal_end(&mut wire, &mut rng);
        assert_eq!(sealer_small.sealed, NONCE_BUDGET);
    }

    #[test]
    fn tolerates_a_peer_that_wraps_its_counter() {
        // A peer that seals 65536 + 2 chunks reuses nonces 0 and 1; the
        // opener follows it.
        let framing = framing(BodySecurity::ChaCha20Poly1305, 0x05);
        let mut sealer = ChunkSealer::new(framing, &spec_keys());
        let mut opener = ChunkOpener::new(framing, &spec_keys());
        let mut rng = rand::thread_rng();
        let mut wire = Vec::new();
        for i in 0..(NONCE_BUDGET as u64 + 2) {
            wire.clear();
            // Bypass the budget as a wrapping 4.34 writer would.
            sealer.sealed %= NONCE_BUDGET;
            sealer.seal_one(&[i as u8], &mut wire, &mut rng);
            match opener.open(&mut wire).unwrap() {
                Opened::Chunk { payload, .. } => assert_eq!(wire[payload.start], i as u8),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(opener.chunks_opened(), NONCE_BUDGET as u64 + 2);
    }

    #[test]
    fn rekeying_sides_never_reuse_a_nonce_and_stay_in_step() {
        for security in [BodySecurity::Aes128Gcm, BodySecurity::ChaCha20Poly1305] {
            let framing = framing(security, 0x0d);
            let mut sealer = ChunkSealer::new(framing, &spec_keys());
            let mut opener = ChunkOpener::new(framing, &spec_keys());
            sealer.enable_rekey();
            opener.enable_rekey();
            // A reader that does not rekey must fail right at the switch.
            let mut plain_reader = ChunkOpener::new(framing, &spec_keys());
            let mut rng = rand::thread_rng();
            let mut wire = Vec::new();
            let total = 2 * NONCE_BUDGET as u64 + 3;
            for i in 0..total {
                assert_eq!(
                    sealer.remaining_chunks(),
                    u32::MAX,
                    "no budget with rekeying"
                );
                wire.clear();
                sealer.seal(&[i as u8], &mut wire, &mut rng).unwrap();
                let mut copy = wire.clone();
                match opener.open(&mut wire).unwrap() {
                    Opened::Chunk { payload, .. } => assert_eq!(wire[payload.start], i as u8),
                    other => panic!("{other:?}"),
                }
                let old_key = plain_reader.open(&mut copy);
                if i < NONCE_BUDGET as u64 {
                    assert!(old_key.is_ok(), "chunk {i} under the first key");
                } else if i == NONCE_BUDGET as u64 {
                    assert!(old_key.is_err(), "chunk {i} is sealed under a new key");
                    plain_reader = ChunkOpener::new(framing, &spec_keys());
                }
            }
            wire.clear();
            sealer.seal_end(&mut wire, &mut rng);
            assert_eq!(opener.open(&mut wire).unwrap(), Opened::End);
            assert_eq!(opener.chunks_opened(), total);
            assert_ne!(rekeyed(&spec_keys().key, 1), spec_keys().key);
            assert_ne!(rekeyed(&spec_keys().key, 1), rekeyed(&spec_keys().key, 2));
        }
    }

    #[test]
    fn reports_tampering_and_short_chunks() {
        let mut rng = rand::thread_rng();
        let framing = framing(BodySecurity::Aes128Gcm, 0x0d);
        let mut sealer = ChunkSealer::new(framing, &spec_keys());
        let mut wire = Vec::new();
        sealer.seal(b"hello world", &mut wire, &mut rng).unwrap();
        wire[5] ^= 0x80;
        let mut opener = ChunkOpener::new(framing, &spec_keys());
        assert!(matches!(
            opener.open(&mut wire),
            Err(VmessError::ChunkUnauthentic { chunk: 0 })
        ));
        // A Len shorter than the tag: no mask (opt S only), Len 3.
        let framing = BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x01), Command::Tcp);
        let mut opener = ChunkOpener::new(framing, &spec_keys());
        assert!(matches!(
            opener.open(&mut [0, 3, 1, 2, 3]),
            Err(VmessError::ChunkTooShort(3))
        ));
    }
}
