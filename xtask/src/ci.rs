//! `cargo xtask ci`: the gate every change passes, the same locally and in
//! CI (`.ci/run` calls it).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// One step of the gate: a name and a command line.
struct Step {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        name: "format",
        program: "cargo",
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    Step {
        name: "lints",
        program: "cargo",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "docs",
        program: "cargo",
        args: &["doc", "--workspace", "--no-deps", "--quiet"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    Step {
        name: "tests (unit, integration, interop with the real v2ray)",
        program: "cargo",
        args: &["test", "--workspace", "--all-targets"],
        env: &[],
    },
    Step {
        // `--all-targets` builds every example but runs no doctest.
        name: "doctests",
        program: "cargo",
        args: &["test", "--workspace", "--doc"],
        env: &[],
    },
    Step {
        name: "example against the real v2ray",
        program: "cargo",
        args: &["xtask", "examples"],
        env: &[],
    },
    Step {
        name: "fuzz corpus and regressions replayed (stable)",
        program: "cargo",
        args: &[
            "test",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--no-default-features",
            "--target-dir",
            "target",
        ],
        env: &[],
    },
    Step {
        name: "fuzz targets compile",
        program: "cargo",
        args: &[
            "check",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--bins",
            "--target-dir",
            "target",
        ],
        env: &[],
    },
    Step {
        name: "demo, once",
        program: "cargo",
        args: &["xtask", "demo", "--once"],
        env: &[],
    },
    Step {
        name: "benchmark smoke run (figures not asserted)",
        program: "cargo",
        args: &["xtask", "bench", "--quick", "--dev-build"],
        env: &[],
    },
];

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask ci` takes no arguments, got {arg:?}");
    }
    let started = Instant::now();
    for step in STEPS {
        let step_started = Instant::now();
        eprintln!(
            "==> {}: {} {}",
            step.name,
            step.program,
            step.args.join(" ")
        );
        let status = Command::new(step.program)
            .args(step.args)
            .envs(step.env.iter().copied())
            .status()
            .with_context(|| format!("starting {}", step.program))?;
        if !status.success() {
            bail!("step {:?} failed ({status})", step.name);
        }
        eprintln!(
            "<== {} ok in {:.1} s",
            step.name,
            step_started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "ci: all steps passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
