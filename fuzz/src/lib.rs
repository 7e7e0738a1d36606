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

pub mod sniff {
    use rayback_routing::sniff::{sniff_bittorrent, sniff_http, sniff_tls, Sniffer};

    /// Fuzz target: the sniffers never panic on any bytes, fed whole or a
    /// prefix at a time; a TLS answer other than "need more" on a prefix
    /// is final (it depends on the first record only), as is an HTTP or
    /// BitTorrent "no"; a found HTTP or TLS result names an address.
    pub fn run(data: &[u8]) {
        let whole_tls = sniff_tls(data);
        let whole_http = sniff_http(data);
        let whole_bittorrent = sniff_bittorrent(data);
        if let Ok(Some(sniffed)) = &whole_tls {
            assert!(sniffed.address.is_some());
        }
        if let Ok(Some(sniffed)) = &whole_http {
            assert!(sniffed.address.is_some());
        }
        let mut sniffer = Sniffer::new();
        let step = (data.len() / 64).max(1);
        let mut end = 0;
        loop {
            let prefix = &data[..end];
            match sniff_tls(prefix) {
                Ok(None) => {}
                answer => assert_eq!(answer, whole_tls, "tls at {end}"),
            }
            if sniff_http(prefix).is_err() {
                assert!(whole_http.is_err(), "http at {end}");
            }
            if sniff_bittorrent(prefix).is_err() {
                assert!(whole_bittorrent.is_err(), "bittorrent at {end}");
            }
            if !matches!(sniffer.sniff(prefix), Ok(None)) {
                break;
            }
            if end == data.len() {
                break;
            }
            end = (end + step).min(data.len());
        }
    }
}

pub mod vless_header {
    use rayback_vless::header::{decode_packet, decode_response, RequestHeader};

    /// Fuzzes the VLESS request decoder (every ID known, and none), the
    /// response decoder and the packet framing: none may panic; a decoded
    /// request re-encodes to bytes that decode back to it (addons aside,
    /// which the encoder leaves empty); every prefix of a decodable input
    /// needs more bytes or fails, never decodes to something else.
    pub fn run(data: &[u8]) {
        let _ = RequestHeader::decode(data, |_| false);
        if let Ok(Some((header, used))) = RequestHeader::decode(data, |_| true) {
            assert!(used <= data.len());
            let mut wire = Vec::new();
            header
                .encode(&mut wire)
                .expect("a decoded request re-encodes");
            let (again, again_used) = RequestHeader::decode(&wire, |_| true)
                .expect("a re-encoded request decodes")
                .expect("a re-encoded request is whole");
            assert_eq!(again, header);
            assert_eq!(again_used, wire.len());
            for end in 0..used {
                assert!(!matches!(
                    RequestHeader::decode(&data[..end], |_| true),
                    Ok(Some(_))
                ));
            }
        }
        if let Ok(Some(used)) = decode_response(data) {
            assert!(used <= data.len());
        }
        if let Some((payload, used)) = decode_packet(data) {
            assert_eq!(payload.len() + 2, used);
        }
        if let Some(path) = rayback_vless::fallback::request_path(data) {
            assert!(path.starts_with('/'));
        }
    }
}

pub mod socks_request {
    use rayback_handlers::socks::codec::{
        choose_method, decode_credentials, decode_datagram, decode_hello, decode_request,
        encode_address_port, encode_datagram_header, SocksAuth,
    };

    /// Fuzzes every SOCKS server decoder (greeting or SOCKS 4 request,
    /// with and without password auth; RFC 1929 credentials; the SOCKS 5
    /// request with UDP on and off; the UDP datagram header): none may
    /// panic or claim more bytes than given; every proper prefix of a
    /// decodable request needs more bytes or fails; a decoded destination
    /// re-encodes to a header that decodes back to it.
    pub fn run(data: &[u8]) {
        for auth in [SocksAuth::NoAuth, SocksAuth::Password] {
            if let Ok(Some((hello, used))) = decode_hello(data, auth) {
                assert!(used <= data.len());
                if let rayback_handlers::socks::codec::Hello::Socks5 { methods } = hello {
                    let _ = choose_method(&methods, auth);
                }
            }
        }
        if let Ok(Some((_, used))) = decode_credentials(data) {
            assert!(used <= data.len());
        }
        for udp in [false, true] {
            if let Ok(Some((request, used))) = decode_request(data, udp) {
                assert!(used <= data.len());
                for end in 0..used {
                    assert!(!matches!(decode_request(&data[..end], udp), Ok(Some(_))));
                }
                let mut wire = vec![5, 1, 0];
                encode_address_port(&request.address, request.port, &mut wire);
                let (again, again_used) = decode_request(&wire, udp)
                    .expect("a re-encoded request decodes")
                    .expect("a re-encoded request is whole");
                assert_eq!((again.address, again.port), (request.address, request.port));
                assert_eq!(again_used, wire.len());
            }
        }
        if let Ok((address, port, start)) = decode_datagram(data) {
            assert!(start <= data.len());
            let mut header = Vec::new();
            encode_datagram_header(&address, port, &mut header);
            let (again, again_port, again_start) =
                decode_datagram(&header).expect("a re-encoded header decodes");
            assert_eq!(
                (again, again_port, again_start),
                (address, port, header.len())
            );
        }
    }
}

pub mod http_proxy_request {
    use rayback_handlers::http::codec::{
        basic_credentials, parse_head, parse_response_head, request_body, response_body,
        rewrite_plain, rewrite_response, target,
    };

    /// Fuzzes the HTTP proxy's head handling: parsing, the target
    /// (with and without `allowTransparent`), Basic credentials and the
    /// rewrite for the origin: none may panic; a rewritten head parses
    /// again, in origin form, and goes to the same destination when sent
    /// transparently. Response heads (the origin's answer) parse, get a
    /// body length and a rewrite that parses again, or fail.
    pub fn run(data: &[u8]) {
        if let Ok(Some((response, used))) = parse_response_head(data) {
            assert!(used <= data.len());
            for method in ["GET", "HEAD"] {
                if let Ok(body) = response_body(&response, method) {
                    let rewritten = rewrite_response(&response, body);
                    if let Ok(Some((_, again_used))) = parse_response_head(&rewritten) {
                        assert_eq!(again_used, rewritten.len());
                    }
                }
            }
        }
        let Ok(Some((head, used))) = parse_head(data) else {
            return;
        };
        let _ = request_body(&head);
        assert!(used <= data.len());
        let _ = basic_credentials(&head);
        let _ = head.wants_keep_alive();
        for transparent in [false, true] {
            let Ok(found) = target(&head, transparent) else {
                continue;
            };
            if head.is_connect() {
                continue;
            }
            let rewritten = rewrite_plain(&head, &found);
            if let Ok(Some((again, again_used))) = parse_head(&rewritten) {
                assert_eq!(again_used, rewritten.len());
                assert_eq!(Some(again.target.as_str()), found.path.as_deref());
            }
        }
    }
}
