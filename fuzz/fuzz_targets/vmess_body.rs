//! Fuzzes the VMess body decoder (chunk opener) on arbitrary bytes under
//! every framing the first byte selects: it may refuse, never panic or
//! loop.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::vmess_body::run(data));
