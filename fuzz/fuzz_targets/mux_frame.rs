//! Fuzzes the Mux.Cool frame decoder: any bytes, fed whole and split at a
//! fuzzer-chosen point, must decode to the same frames or the same error,
//! never panic; every decoded frame must re-encode to bytes that decode
//! back to it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::mux_frame::run(data));
