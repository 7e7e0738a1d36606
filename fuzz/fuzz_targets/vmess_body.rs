//! Fuzzes the VMess body decoder (chunk opener) on arbitrary bytes under
//! every framing the first byte selects: it may refuse, never panic or
//! loop.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rayback_vmess::body::{BodyFraming, ChunkOpener, Opened};
use rayback_vmess::header::{BodySecurity, Command, DirectionKeys, Options};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let security = match selector % 3 {
        0 => BodySecurity::Aes128Gcm,
        1 => BodySecurity::ChaCha20Poly1305,
        _ => BodySecurity::None,
    };
    let options = [0x00, 0x01, 0x05, 0x0d][(selector as usize >> 2) % 4];
    let command = if selector & 0x10 != 0 {
        Command::Udp
    } else {
        Command::Tcp
    };
    let framing = BodyFraming::new(security, Options(options), command);
    let keys = DirectionKeys {
        key: [5; 16],
        iv: [6; 16],
    };
    let mut opener = ChunkOpener::new(framing, &keys);
    let mut buffer = rest.to_vec();
    let mut at = 0;
    while let Ok(Opened::Chunk { consumed, .. }) = opener.open(&mut buffer[at..]) {
        assert!(consumed > 0, "a chunk always consumes bytes");
        at += consumed;
    }
});
