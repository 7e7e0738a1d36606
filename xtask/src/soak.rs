//! `cargo xtask soak [--only tests|fuzz] [--fuzz-seconds N]`: the long
//! tier, outside CI. It runs the battery suites of `bins/portal/tests/`
//! in release mode with `RAYBACK_SOAK=1` (each suite then takes its bigger
//! sizes), one test at a time so they do not compete for the machine, then
//! every fuzz target for N seconds each (default 300; 0 skips fuzzing)
//! through [`crate::fuzz`]. Every step runs even when an earlier one failed;
//! a summary gives each step's wall time and result, and the command fails
//! if any step did.
//!
//! Not here: what the larger sizes are (each battery file reads
//! `RAYBACK_SOAK` itself) and the short tier (`cargo xtask ci`).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayback_testkit::workspace_root;

use crate::fuzz;

/// The battery suites, test files of the `portal` package.
const BATTERY: &[&str] = &[
    "battery_integrity",
    "battery_load",
    "battery_faults",
    "battery_hostile",
];

/// What a run includes (`--only`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    Everything,
    Tests,
    Fuzz,
}

/// One finished step: its name, wall time and result (a short note).
struct Outcome {
    name: String,
    took: Duration,
    result: Result<String>,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut only = Only::Everything;
    let mut fuzz_seconds = 300u64;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => {
                only = match args.next().map(String::as_str) {
                    Some("tests") => Only::Tests,
                    Some("fuzz") => Only::Fuzz,
                    other => bail!("--only takes `tests` or `fuzz`, got {other:?}"),
                };
            }
            "--fuzz-seconds" => {
                fuzz_seconds = args
                    .next()
                    .context("--fuzz-seconds needs a number")?
                    .parse()
                    .context("--fuzz-seconds needs a number")?;
            }
            other => bail!(
                "unknown soak flag {other:?}; usage: cargo xtask soak [--only tests|fuzz] [--fuzz-seconds N]"
            ),
        }
    }
    let started = Instant::now();
    let mut outcomes = Vec::new();
    if only != Only::Fuzz {
        battery(&mut outcomes);
    }
    if only != Only::Tests && fuzz_seconds > 0 {
        fuzzing(&mut outcomes, fuzz_seconds);
    }
    println!("\nsoak summary ({} in all):", minutes(started.elapsed()));
    for outcome in &outcomes {
        let (status, note) = match &outcome.result {
            Ok(note) => ("ok", note.clone()),
            Err(error) => ("FAILED", format!("{error:#}")),
        };
        println!(
            "  {status:<6} {:>9}  {}: {note}",
            minutes(outcome.took),
            outcome.name
        );
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if outcomes.is_empty() {
        println!("  (nothing to run)");
    }
    if failed > 0 {
        bail!("{failed} of {} soak steps failed", outcomes.len());
    }
    Ok(())
}

/// Builds the battery in release mode, then runs each suite with
/// `RAYBACK_SOAK=1`, one test at a time.
fn battery(outcomes: &mut Vec<Outcome>) {
    let mut build = vec!["test", "--release", "-p", "portal"];
    for suite in BATTERY {
        build.extend(["--test", suite]);
    }
    build.push("--no-run");
    let built = step(outcomes, "battery build (release)", || cargo(&build));
    for suite in BATTERY {
        let name = format!("{suite} (RAYBACK_SOAK=1)");
        if !built {
            outcomes.push(Outcome {
                name,
                took: Duration::ZERO,
                result: Err(anyhow::anyhow!("not run: the build failed")),
            });
            continue;
        }
        step(outcomes, &name, || {
            cargo(&[
                "test",
                "--release",
                "-p",
                "portal",
                "--test",
                suite,
                "--",
                "--test-threads=1",
            ])
        });
    }
}

/// Every fuzz target for `seconds`.
fn fuzzing(outcomes: &mut Vec<Outcome>, seconds: u64) {
    if !step(outcomes, "cargo-fuzz present", || {
        fuzz::ensure_cargo_fuzz().map(|()| "yes".to_owned())
    }) {
        return;
    }
    for target in fuzz::TARGETS {
        step(outcomes, &format!("fuzz {target} for {seconds} s"), || {
            fuzz::fuzz_target(target, seconds).map(|runs| format!("{runs} executions, no finding"))
        });
    }
}

/// Runs one step, records its outcome; returns whether it succeeded.
fn step(outcomes: &mut Vec<Outcome>, name: &str, body: impl FnOnce() -> Result<String>) -> bool {
    eprintln!("==> soak: {name}");
    let started = Instant::now();
    let result = body();
    let took = started.elapsed();
    match &result {
        Ok(_) => eprintln!("<== {name}: ok in {}", minutes(took)),
        Err(error) => eprintln!("<== {name}: FAILED in {}: {error:#}", minutes(took)),
    }
    let ok = result.is_ok();
    outcomes.push(Outcome {
        name: name.to_owned(),
        took,
        result,
    });
    ok
}

/// `cargo ARGS` in the workspace root with `RAYBACK_SOAK=1`; output goes
/// to the terminal.
fn cargo(args: &[&str]) -> Result<String> {
    let status = Command::new("cargo")
        .args(args)
        .env("RAYBACK_SOAK", "1")
        .current_dir(workspace_root())
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok("passed".to_owned())
}

/// `1m05s`, or `12.3s` under a minute.
fn minutes(took: Duration) -> String {
    let seconds = took.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{}m{:02}s", took.as_secs() / 60, took.as_secs() % 60)
    }
}
