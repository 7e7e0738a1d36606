//! `cargo xtask`: the project's own commands, in Rust so they run the same
//! on every machine.
//!
//! | command | what it does |
//! |---|---|
//! | `ci` | the whole gate: format, lints, docs, every test (interop with the real v2ray included), the demo once |
//! | `bench [--quick] [--runs N] [--only SETUP,...]` | the end-to-end benchmark: Rayback, v2ray, rathole and no tunnel under iperf3, wrk and curl; writes `target/bench/results.md` and `chart.svg` |
//! | `demo [--once]` | a web server, a bridge and a portal on loopback from the seed configs, and a request through them |
//! | `fuzz [TARGET...] [--seconds N]` | runs the libFuzzer targets of `fuzz/` (nightly, cargo-fuzz) |
//! | `soak [--only tests\|fuzz] [--fuzz-seconds N]` | the long tier, outside CI: the battery suites in release with `RAYBACK_SOAK=1`, then every fuzz target N s (default 300) |
//! | `dist [--debug]` | binaries, completions, man pages and systemd units in `target/dist/` |
//! | `web PORT` | the benchmark's web server (`/`, `/1k`, `/1m`, `/open`) in a process of its own, until killed |
//! | `examples` | runs crate examples (config `check`, VMess `fetch`, Mux.Cool `client`) against the real v2ray; skipped without one |
//!
//! It is not part of the product: it builds and runs the binaries, the
//! real `v2ray`, tests and benchmarks.

mod bench;
mod ci;
mod demo;
mod dist;
mod examples;
mod fuzz;
mod soak;
mod web;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "bench" => bench::run(&rest),
        "ci" => ci::run(&rest),
        "demo" => demo::run(&rest),
        "dist" => dist::run(&rest),
        "examples" => examples::run(&rest),
        "fuzz" => fuzz::run(&rest),
        "soak" => soak::run(&rest),
        "web" => web::run(&rest),
        "" | "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <ci | demo [--once] | bench [--quick] [--runs N] [--only SETUP,...] | fuzz [TARGET...] [--seconds N] | soak [--only tests|fuzz] [--fuzz-seconds N] | dist [--debug] | examples>");
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}; try `cargo xtask help`"),
    }
}
