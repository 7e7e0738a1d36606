//! Loads configuration files the way the Rayback binaries do and prints the
//! verdict, the warnings, and optionally the merged config as V2Ray JSON.
//!
//! `cargo run -p rayback-config --example check -- [--print] [--repeat N] FILE...`
//! (several files merge like `v2ray -config a -config b`; `--repeat N`
//! parses N times and prints the mean time per parse).

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
