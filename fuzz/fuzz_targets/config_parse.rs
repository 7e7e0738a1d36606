//! Fuzzes the configuration loader on arbitrary text: JSON with comments
//! and TOML must load or fail with an error, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::config_parse::run(data));
