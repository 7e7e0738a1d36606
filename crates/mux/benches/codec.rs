//! Frame codec throughput: 16 KiB Keep frames encoded into a reused buffer
//! and decoded back (sans-IO; no sockets, no tasks).
//!
//! Run: `cargo bench -p rayback-mux --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rayback_mux::frame::{encode_frame, put_keep_header};
use rayback_mux::{Frame, FrameCodec};

const PAYLOAD: usize = 16 * 1024;
const FRAMES: usize = 64;

fn codec(c: &mut Criterion) {
    let payload = Bytes::from((0..PAYLOAD).map(|i| i as u8).collect::<Vec<u8>>());
    let mut group = c.benchmark_group("mux_codec_16k");
    group.throughput(Throughput::Bytes((PAYLOAD * FRAMES) as u64));

    // What a sub-stream write does: header + copy into the shared queue.
    let mut out = BytesMut::with_capacity(FRAMES * (PAYLOAD + 8));
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..FRAMES {
                put_keep_header(&mut out, i as u16, PAYLOAD as u16);
                out.extend_from_slice(&payload);
            }
            black_box(out.len())
        })
    });

    let mut wire = BytesMut::new();
    for i in 0..FRAMES {
        encode_frame(&Frame::keep(i as u16, payload.clone()), &mut wire).unwrap();
    }
    let wire = wire.freeze();
    let mut input = BytesMut::with_capacity(wire.len());
    group.bench_function("decode", |b| {
        let mut codec = FrameCodec::new();
        b.iter(|| {
            input.clear();
            input.extend_from_slice(&wire);
            let mut bytes = 0;
            while let Some(frame) = codec.decode_frame(&mut input).unwrap() {
                bytes += frame.data.map_or(0, |data| data.len());
            }
            black_box(bytes)
        })
    });

    let mut buf = BytesMut::with_capacity(FRAMES * (PAYLOAD + 8));
    group.bench_function("encode_decode", |b| {
        let mut codec = FrameCodec::new();
        b.iter(|| {
            for i in 0..FRAMES {
                put_keep_header(&mut buf, i as u16, PAYLOAD as u16);
                buf.extend_from_slice(&payload);
            }
            let mut bytes = 0;
            while let Some(frame) = codec.decode_frame(&mut buf).unwrap() {
                bytes += frame.data.map_or(0, |data| data.len());
            }
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
