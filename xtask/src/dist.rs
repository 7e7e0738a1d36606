//! `cargo xtask dist [--debug]`: what a package of Rayback holds, in
//! `target/dist/`.
//!
//! | path | what |
//! |---|---|
//! | `bin/bridge`, `bin/portal` | the binaries (release build unless `--debug`) |
//! | `completions/bash/{bridge,portal}` | bash completions (for `/usr/share/bash-completion/completions/`) |
//! | `completions/zsh/_{bridge,portal}` | zsh completions (for a directory on `$fpath`) |
//! | `completions/fish/{bridge,portal}.fish` | fish completions (for `/usr/share/fish/vendor_completions.d/`) |
//! | `man/man1/{bridge,portal}.1` | the man pages |
//! | `systemd/rayback-{bridge,portal}.service` | the units of `config-examples/systemd/` |
//!
//! The completions and man pages come from the binaries themselves
//! (`--completions SHELL`, `--man`), which generate them from their clap
//! definition, so they never drift from the flags. Not here: building a
//! .deb or a tarball.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use rayback_testkit::workspace_root;

const ROLES: [&str; 2] = ["bridge", "portal"];

/// The shells to write completions for (`--completions` values).
const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// The file name `shell` looks for when completing `name`.
fn completion_file(shell: &str, name: &str) -> String {
    match shell {
        "zsh" => format!("_{name}"),
        "fish" => format!("{name}.fish"),
        _ => name.to_owned(),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let release = match args {
        [] => true,
        [flag] if flag == "--debug" => false,
        other => bail!("usage: cargo xtask dist [--debug], got {other:?}"),
    };
    let root = workspace_root();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "bridge", "-p", "portal"]);
    if release {
        build.arg("--release");
    }
    if !build.current_dir(&root).status()?.success() {
        bail!("building bridge and portal failed");
    }
    let built = root.join(if release {
        "target/release"
    } else {
        "target/debug"
    });
    let dist = root.join("target/dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    for role in ROLES {
        let binary = built.join(role);
        copy(&binary, &dist.join("bin").join(role))?;
        for shell in SHELLS {
            let text = output(&binary, &["--completions", shell])?;
            let file = completion_file(shell, role);
            write(&dist.join("completions").join(shell).join(file), &text)?;
        }
        let page = output(&binary, &["--man"])?;
        write(&dist.join("man/man1").join(format!("{role}.1")), &page)?;
        let unit = format!("rayback-{role}.service");
        copy(
            &root.join("config-examples/systemd").join(&unit),
            &dist.join("systemd").join(&unit),
        )?;
    }
    println!("wrote {}", dist.display());
    for entry in walk(&dist)? {
        println!(
            "  {}",
            entry.strip_prefix(&dist).unwrap_or(&entry).display()
        );
    }
    Ok(())
}

fn output(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let output = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !output.status.success() || output.stdout.is_empty() {
        bail!(
            "{} {args:?} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
