//! Fuzzes the Mux.Cool session state machine: a real MuxServer (or
//! MuxClient) driven by a script of frames and sub-stream actions over an
//! in-memory carrier, checking data integrity, bounds and clean shutdown
//! (see `rayback_fuzz::mux_session`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::mux_session::run(data));
