//! Properties of the sans-IO codecs: round trips with random chunk sizes
//! and input split at every byte, and no panic on any input.

use proptest::prelude::*;
use rayback_vmess::body::{BodyFraming, ChunkOpener, ChunkSealer, Opened};
use rayback_vmess::header::{
    BodySecurity, Command, DirectionKeys, HeaderMode, Options, RequestHeader, ResponseDecoder,
};
use rayback_vmess::validator::{RequestDecoder, ServerUser, Validator};
use rayback_vmess::UserId;

fn keys(seed: u8) -> DirectionKeys {
    DirectionKeys {
        key: [seed; 16],
        iv: [seed.wrapping_mul(3); 16],
    }
}

fn framings() -> impl Strategy<Value = BodyFraming> {
    (
        prop_oneof![
            Just(BodySecurity::Aes128Gcm),
            Just(BodySecurity::ChaCha20Poly1305),
            Just(BodySecurity::None)
        ],
        prop_oneof![Just(0x01u8), Just(0x05), Just(0x0d), Just(0x00), Just(0x04)],
        prop_oneof![Just(Command::Tcp), Just(Command::Udp), Just(Command::Mux)],
    )
        .prop_map(|(security, options, command)| {
            BodyFraming::new(security, Options(options), command)
        })
}

/// Opens `wire` delivered `step` bytes at a time; returns the plaintext
/// and whether the end chunk was seen.
fn open_in_steps(framing: BodyFraming, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
    let mut opener = ChunkOpener::new(framing, &keys(9));
    let mut buffer: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut got = Vec::new();
    let mut fed = 0;
    loop {
        match opener.open(&mut buffer[at..]).unwrap() {
            Opened::Chunk { payload, consumed } => {
                got.extend_from_slice(&buffer[at + payload.start..at + payload.end]);
                at += consumed;
            }
            Opened::End => return (got, true),
            Opened::NeedMore(_) => {
                if fed == wire.len() {
                    return (got, false);
                }
                let next = (fed + step).min(wire.len());
                buffer.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn body_round_trips_with_any_split(
        framing in framings(),
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..6),
        step in 1usize..700,
    ) {
        let mut sealer = ChunkSealer::new(framing, &keys(9));
        let mut wire = Vec::new();
        let mut rng = rand::thread_rng();
        for piece in &pieces {
            prop_assert_eq!(sealer.seal(piece, &mut wire, &mut rng).unwrap(), piece.len());
        }
        sealer.seal_end(&mut wire, &mut rng);
        let (got, ended) = open_in_steps(framing, &wire, step);
        prop_assert_eq!(got, pieces.concat());
        // Without S, security none has no framing and so no end chunk.
        prop_assert_eq!(ended, framing.chunked());
    }

    #[test]
    fn body_split_at_every_byte(
        framing in framings(),
        piece in prop::collection::vec(any::<u8>(), 1..200),
    ) {
        let mut sealer = ChunkSealer::new(framing, &keys(9));
        let mut wire = Vec::new();
        let mut rng = rand::thread_rng();
        sealer.seal(&piece, &mut wire, &mut rng).unwrap();
        sealer.seal(&piece, &mut wire, &mut rng).unwrap();
        sealer.seal_end(&mut wire, &mut rng);
        let (got, _) = open_in_steps(framing, &wire, 1);
        prop_assert_eq!(got, [piece.clone(), piece].concat());
    }

    #[test]
    fn body_opener_never_panics(framing in framings(), data in prop::collection::vec(any::<u8>(), 0..5000)) {
        let mut opener = ChunkOpener::new(framing, &keys(1));
        let mut data = data;
        let mut at = 0;
        while at <= data.len() {
            match opener.open(&mut data[at..]) {
                Ok(Opened::Chunk { consumed, .. }) => at += consumed.max(1),
                _ => break,
            }
        }
    }

    #[test]
    fn request_header_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = RequestHeader::decode(&data);
    }

    #[test]
    fn server_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..1200), now in any::<i64>()) {
        let validator = Validator::new(vec![ServerUser {
            id: UserId::from_bytes([7; 16]),
            alter_id: 1,
            level: 0,
            email: String::new(),
        }]);
        let mut decoder = RequestDecoder::new();
        for end in [0, 15, 16, 17, 60, data.len()] {
            if end > data.len() { break; }
            if decoder.decode(&validator, &data[..end], now).is_err() { break; }
        }
    }

    #[test]
    fn response_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..400), legacy in any::<bool>()) {
        let mode = if legacy { HeaderMode::Legacy } else { HeaderMode::Aead };
        let mut decoder = ResponseDecoder::new(keys(3), mode, data.first().copied().unwrap_or(0));
        let _ = decoder.decode(&data);
    }
}
