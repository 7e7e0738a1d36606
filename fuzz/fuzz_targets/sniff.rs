//! Fuzz target: the protocol sniffers (HTTP Host, TLS ClientHello server
//! name, BitTorrent) never panic, and their answers on prefixes agree with
//! the whole input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::sniff::run(data));
