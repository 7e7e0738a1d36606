//! Seal + open throughput of one write through the VMess chunk codec, per
//! security, beside ring's bare AEAD seal + open of the same bytes.
//!
//! `cargo bench -p rayback-vmess --bench seal_open`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::mock::StepRng;
use rayback_vmess::body::{BodyFraming, ChunkOpener, ChunkSealer, Opened};
use rayback_vmess::crypto::{chacha_key, AeadCipher, TAG_LEN};
use rayback_vmess::header::{BodySecurity, Command, DirectionKeys};

const SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];

fn keys() -> DirectionKeys {
    DirectionKeys {
        key: [7; 16],
        iv: [9; 16],
    }
}

/// A sealer/opener pair, replaced before its nonce budget runs out.
struct Codec {
    framing: BodyFraming,
    sealer: ChunkSealer,
    opener: ChunkOpener,
}

impl Codec {
    fn new(security: BodySecurity) -> Codec {
        let framing = BodyFraming::new(security, security.client_options(), Command::Tcp);
        Codec {
            framing,
            sealer: ChunkSealer::new(framing, &keys()),
            opener: ChunkOpener::new(framing, &keys()),
        }
    }

    fn round(&mut self, data: &[u8], wire: &mut Vec<u8>, rng: &mut StepRng) -> usize {
        if self.sealer.remaining_chunks() < 8 {
            self.sealer = ChunkSealer::new(self.framing, &keys());
            self.opener = ChunkOpener::new(self.framing, &keys());
        }
        wire.clear();
        self.sealer.seal(data, wire, rng).expect("budget");
        let mut at = 0;
        let mut opened = 0;
        while at < wire.len() {
            match self.opener.open(&mut wire[at..]).expect("authentic") {
                Opened::Chunk { payload, consumed } => {
                    opened += payload.len();
                    at += consumed;
                }
                _ => unreachable!("whole chunks only"),
            }
        }
        opened
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = StepRng::new(1, 1);
    for size in SIZES {
        let mut group = c.benchmark_group(format!("seal_open/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let data = vec![0x5au8; size];

        for (name, cipher) in [
            ("ring-aes-128-gcm", AeadCipher::aes_128_gcm(&keys().key)),
            (
                "ring-chacha20-poly1305",
                AeadCipher::chacha20_poly1305(&chacha_key(&keys().key)),
            ),
        ] {
            let mut buffer = vec![0u8; size + TAG_LEN];
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    buffer[..size].copy_from_slice(&data);
                    let tag = cipher.seal_in_place([1; 12], &[], &mut buffer[..size]);
                    buffer[size..].copy_from_slice(&tag);
                    cipher
                        .open_in_place([1; 12], &[], &mut buffer)
                        .expect("authentic")
                })
            });
        }

        for (name, security) in [
            ("vmess-aes-128-gcm", BodySecurity::Aes128Gcm),
            ("vmess-chacha20-poly1305", BodySecurity::ChaCha20Poly1305),
            ("vmess-none", BodySecurity::None),
        ] {
            let mut codec = Codec::new(security);
            let mut wire = Vec::with_capacity(2 * size + 1024);
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| codec.round(&data, &mut wire, &mut rng))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
