//! Fuzzes the `http` inbound's request-head handling (see
//! `rayback_fuzz::http_proxy_request`): any bytes must parse, route and
//! rewrite or fail, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rayback_fuzz::http_proxy_request::run(data));
