//! Fuzz target bodies, one function per target, so that the libFuzzer
//! binaries (`fuzz_targets/*.rs`, built by `cargo fuzz`) and the stable-Rust
//! replay test (`tests/replay.rs`, which runs every checked-in corpus and
//! regression input) exercise the same code.
//!
//! Each function must never panic on any input (a panic is a finding),
//! except on the internal consistency asserts it makes itself.

pub mod mux_frame {
    use bytes::BytesMut;
    use rayback_mux::frame::encode_frame;
    use rayback_mux::{Frame, FrameCodec};

    fn decode(chunks: &[&[u8]]) -> (Vec<Frame>, bool) {
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            src.extend_from_slice(chunk);
            loop {
                match codec.decode_frame(&mut src) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
            }
        }
        (frames, false)
    }

    /// Fuzzes the Mux.Cool frame decoder: any bytes, fed whole and split at a
    /// fuzzer-chosen point, must decode to the same frames or the same error,
    /// never panic; every decoded frame must re-encode to bytes that decode
    /// back to it.
    pub fn run(data: &[u8]) {
        let Some((&split, input)) = data.split_first() else {
            return;
        };
        let whole = decode(&[input]);
        let at = (split as usize * input.len()) / 255;
        let (head, tail) = input.split_at(at.min(input.len()));
        assert_eq!(decode(&[head, tail]), whole);
        for frame in &whole.0 {
            let mut wire = BytesMut::new();
            encode_frame(frame, &mut wire).expect("a decoded frame re-encodes");
            let (again, failed) = decode(&[&wire]);
            assert!(!failed);
            assert_eq!(again.as_slice(), std::slice::from_ref(frame));
        }
    }
}

pub mod vmess_header {
    use std::sync::OnceLock;

    use rayback_vmess::header::{
        open_aead_request, open_legacy_request, DirectionKeys, HeaderMode, RequestHeader,
        ResponseDecoder,
    };
    use rayback_vmess::validator::{RequestDecoder, ServerUser, Validator};
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

    /// Fuzzes the VMess request-header decoders (plaintext, AEAD envelope,
    /// legacy envelope, the whole server-side decoder) and the client's
    /// response-header decoder on arbitrary bytes: none may panic.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod vmess_body {
    use rayback_vmess::body::{BodyFraming, ChunkOpener, Opened};
    use rayback_vmess::header::{BodySecurity, Command, DirectionKeys, Options};

    /// Fuzzes the VMess body decoder (chunk opener) on arbitrary bytes under
    /// every framing the first byte selects: it may refuse, never panic or
    /// loop.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod reverse_control {
    use rayback_reverse::control::Control;

    /// Fuzz target: the reverse proxy's control message decoder never panics,
    /// and whatever it decodes encodes and decodes back to the same message.
    pub fn run(data: &[u8]) {
        if let Ok(control) = Control::decode(data) {
            let mut encoded = Vec::new();
            control.encode(&mut encoded);
            assert_eq!(Control::decode(&encoded).as_ref(), Ok(&control));
        }
    }
}

pub mod config_parse {
    /// Loads `data` as a JSON (with comments) and as a TOML configuration;
    /// whatever loads must also write back as V2Ray JSON that loads again.
    pub fn run(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        for name in ["fuzz.json", "fuzz.toml"] {
            if let Ok(loaded) = rayback_config::parse_str(name, text) {
                let json = loaded.config.to_v2ray_json().to_string();
                let again = rayback_config::parse_str("again.json", &json);
                assert!(again.is_ok(), "written-back config does not load: {json}");
            }
        }
    }
}

pub mod mux_session;
