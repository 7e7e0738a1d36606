//! Replays every checked-in fuzz input on stable Rust, as an ordinary test:
//! `fuzz/corpus/<target>/*` (seeds and what fuzzing found interesting) and
//! `fuzz/regressions/<target>/*` (inputs that once failed), plus the config
//! corpus for the config loader and a few thousand seeded random inputs
//! per target.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("mux_frame", rayback_fuzz::mux_frame::run),
    ("mux_session", rayback_fuzz::mux_session::run),
    ("vmess_header", rayback_fuzz::vmess_header::run),
    ("vmess_body", rayback_fuzz::vmess_body::run),
    ("vless_header", rayback_fuzz::vless_header::run),
    ("reverse_control", rayback_fuzz::reverse_control::run),
    ("config_parse", rayback_fuzz::config_parse::run),
    ("sniff", rayback_fuzz::sniff::run),
    ("socks_request", rayback_fuzz::socks_request::run),
    ("http_proxy_request", rayback_fuzz::http_proxy_request::run),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_checked_in_input_replays_without_a_finding() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, run) in TARGETS {
        let mut files = inputs(&root.join("corpus").join(name));
        files.extend(inputs(&root.join("regressions").join(name)));
        if *name == "config_parse" {
            files.extend(inputs(&root.join("../config-examples/corpus")));
        }
        assert!(!files.is_empty(), "{name}: no corpus found");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            run(&data);
        }
        eprintln!("{name}: replayed {} inputs", files.len());
    }
}

#[test]
fn seeded_random_inputs_find_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for (name, run) in TARGETS {
        for _ in 0..3000 {
            let len = rng.gen_range(0..600);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            run(&data);
        }
        eprintln!("{name}: 3000 random inputs");
    }
}
