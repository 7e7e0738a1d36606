//! Fuzzes the Mux.Cool frame decoder: any bytes, fed whole and split at a
//! fuzzer-chosen point, must decode to the same frames or the same error,
//! never panic; every decoded frame must re-encode to bytes that decode
//! back to it.
#![no_main]

use bytes::BytesMut;
use rayback_mux::frame::encode_frame;
use rayback_mux::{Frame, FrameCodec};

fn decode(chunks: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut codec = FrameCodec::new();
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        src.extend_from_slice(chunk);
        loop {
            match codec.decode_frame(&mut src) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = decode(&[input]);
    let at = (split as usize * input.len()) / 255;
    let (head, tail) = input.split_at(at.min(input.len()));
    assert_eq!(decode(&[head, tail]), whole);
    for frame in &whole.0 {
        let mut wire = BytesMut::new();
        encode_frame(frame, &mut wire).expect("a decoded frame re-encodes");
        let (again, failed) = decode(&[&wire]);
        assert!(!failed);
        assert_eq!(again.as_slice(), std::slice::from_ref(frame));
    }
});
