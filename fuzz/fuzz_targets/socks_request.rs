//! Fuzzes the SOCKS 4/4a/5 server decoders of the `socks` inbound (see
//! `rayback_fuzz::socks_request`): any bytes must decode or fail, never
//! panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::socks_request::run(data));
