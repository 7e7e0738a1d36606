//! Fuzz target: the reverse proxy's control message decoder never panics,
//! and whatever it decodes encodes and decodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayback_reverse::control::Control;

fuzz_target!(|data: &[u8]| {
    if let Ok(control) = Control::decode(data) {
        let mut encoded = Vec::new();
        control.encode(&mut encoded);
        assert_eq!(Control::decode(&encoded).as_ref(), Ok(&control));
    }
});
