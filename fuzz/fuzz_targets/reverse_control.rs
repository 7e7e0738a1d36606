//! Fuzz target: the reverse proxy's control message decoder never panics,
//! and whatever it decodes encodes and decodes back to the same message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::reverse_control::run(data));
