//! Fuzzes the VLESS request and response header decoders and the UDP
//! packet framing on arbitrary bytes: none may panic, and a decoded
//! request must re-encode to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::vless_header::run(data));
