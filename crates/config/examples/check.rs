//! Loads V2Ray configuration files the way the Rayback binaries do, checks
//! them, and prints the verdict, the warnings, and optionally the merged
//! config as V2Ray JSON: Rayback's `v2ray -test -config FILE`.
//!
//! ```text
//! cargo run -p rayback-config --example check -- [--print] [--repeat N] FILE...
//! cargo run -p rayback-config --example check -- config-examples/seed/portal.json
//! ```
//!
//! Any V2Ray 4.34 JSON (comments allowed) or TOML file will do; several
//! files merge like `v2ray -config a -config b`, and `-` reads standard
//! input. It prints "Configuration OK." and exits 0, or prints the error
//! (file, JSON path or line and column) and exits 23, as v2ray does.
//! `--print` prints the merged config as V2Ray JSON instead; `--repeat N`
//! parses N times and prints the mean time per parse. `cargo xtask
//! examples` runs it on the config it then starts the real v2ray with.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut print = false;
    let mut repeat = 0u32;
    let mut sources = Vec::new();
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        if argument == "--print" {
            print = true;
            continue;
        }
        if argument == "--repeat" {
            repeat = arguments
                .next()
                .and_then(|count| count.parse().ok())
                .unwrap_or(1000);
            continue;
        }
        match rayback_config::load_file(&argument) {
            Ok(source) => sources.push(source),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(23);
            }
        }
    }
    if repeat > 0 {
        let started = std::time::Instant::now();
        for _ in 0..repeat {
            std::hint::black_box(rayback_config::parse(std::hint::black_box(&sources)).is_ok());
        }
        let bytes: usize = sources.iter().map(|source| source.text.len()).sum();
        println!(
            "{repeat} parses of {bytes} bytes: {:?} per parse",
            started.elapsed() / repeat
        );
    }
    match rayback_config::parse(&sources) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            if print {
                let json = loaded.config.to_v2ray_json();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                );
            } else {
                println!("Configuration OK.");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(23)
        }
    }
}
