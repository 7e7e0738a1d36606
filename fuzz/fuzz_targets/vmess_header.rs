//! Fuzzes the VMess request-header decoders (plaintext, AEAD envelope,
//! legacy envelope, the whole server-side decoder) and the client's
//! response-header decoder on arbitrary bytes: none may panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rayback_vmess::header::{
    open_aead_request, open_legacy_request, DirectionKeys, HeaderMode, RequestHeader,
    ResponseDecoder,
};
use rayback_vmess::server::{RequestDecoder, ServerUser, Validator};
use rayback_vmess::UserId;

const NOW: i64 = 1_700_000_000;

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        Validator::new(vec![
            ServerUser {
                id: UserId::from_bytes([1; 16]),
                alter_id: 0,
                level: 0,
                email: "aead".into(),
            },
            ServerUser {
                id: UserId::from_bytes([2; 16]),
                alter_id: 2,
                level: 0,
                email: "legacy".into(),
            },
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = RequestHeader::decode(data);
    let _ = open_aead_request(&[1; 16], &[2; 16], data);
    let _ = open_legacy_request(&[1; 16], NOW as u64, data);

    // The server decoder, fed in two reads as a socket would deliver them.
    let mut decoder = RequestDecoder::new();
    let split = data
        .first()
        .map_or(0, |byte| *byte as usize)
        .min(data.len());
    if let Ok(None) = decoder.decode(validator(), &data[..split], NOW) {
        let _ = decoder.decode(validator(), data, NOW);
    }

    let keys = DirectionKeys {
        key: [3; 16],
        iv: [4; 16],
    };
    for mode in [HeaderMode::Aead, HeaderMode::Legacy] {
        let _ = ResponseDecoder::new(keys, mode, 0).decode(data);
    }
});
