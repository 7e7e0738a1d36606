//! `cargo xtask fuzz [TARGET...] [--seconds N]`: runs the libFuzzer targets
//! of `fuzz/` for a while each (default 60 s; all targets when none are
//! named), with `cargo fuzz` on a nightly toolchain, and reports executions.
//!
//! New corpus entries land in `fuzz/corpus/<target>/`; a crash leaves its
//! input in `fuzz/artifacts/<target>/`; copy it to
//! `fuzz/regressions/<target>/` so the stable replay test keeps it.

use std::process::Command;

use anyhow::{bail, Context, Result};
use rayback_testkit::workspace_root;

pub const TARGETS: &[&str] = &[
    "mux_frame",
    "mux_session",
    "vmess_header",
    "vmess_body",
    "vless_header",
    "reverse_control",
    "config_parse",
    "socks_request",
    "http_proxy_request",
    "sniff",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a number")?;
            }
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => bail!(
                "unknown fuzz target or flag {other:?}; targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    ensure_cargo_fuzz()?;
    for target in &targets {
        let runs = fuzz_target(target, seconds)?;
        println!("{target}: {runs} executions in {seconds} s, no finding");
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo +nightly fuzz` is missing.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let has_cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_cargo_fuzz {
        eprintln!("installing cargo-fuzz from crates.io (once)");
        let status = Command::new("cargo")
            .args(["install", "--locked", "cargo-fuzz"])
            .status()?;
        if !status.success() {
            bail!("cargo install cargo-fuzz failed; fuzzing needs it and a nightly toolchain");
        }
    }
    Ok(())
}

/// Fuzzes one target for `seconds` (cargo-fuzz must be there, see
/// [`ensure_cargo_fuzz`]); returns how many inputs ran, or an error naming
/// the finding.
pub fn fuzz_target(target: &str, seconds: u64) -> Result<String> {
    let fuzz_dir = workspace_root().join("fuzz");
    std::fs::create_dir_all(fuzz_dir.join("corpus").join(target))?;
    eprintln!("==> fuzzing {target} for {seconds} s");
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", target])
        .arg(format!("corpus/{target}"))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ])
        .current_dir(&fuzz_dir)
        .output()
        .with_context(|| format!("running cargo fuzz for {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let runs = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    if !output.status.success() {
        eprintln!("{log}");
        bail!("{target}: finding after {runs} executions (input in fuzz/artifacts/{target}/)");
    }
    Ok(runs)
}
