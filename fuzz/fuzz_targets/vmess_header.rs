//! Fuzzes the VMess request-header decoders (plaintext, AEAD envelope,
//! legacy envelope, the whole server-side decoder) and the client's
//! response-header decoder on arbitrary bytes: none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::vmess_header::run(data));
