//! Checks of the tree's shape that `cargo test` enforces: the one-way crate
//! picture of ARCHITECTURE.md, and a `//!` doc opening every library module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// ARCHITECTURE.md's picture: crate folder → the workspace crates it may use.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut allowed = BTreeMap::new();
    allowed.insert("core", BTreeSet::new());
    for leaf in ["config", "routing", "mux", "transport", "dns"] {
        allowed.insert(leaf, BTreeSet::from(["core"]));
    }
    for protocol in ["vmess", "vless"] {
        allowed.insert(protocol, BTreeSet::from(["core", "transport"]));
    }
    allowed.insert("handlers", BTreeSet::from(["core", "transport", "dns"]));
    allowed.insert("reverse", BTreeSet::from(["core", "mux"]));
    allowed.insert(
        "app",
        BTreeSet::from([
            "core",
            "config",
            "routing",
            "mux",
            "transport",
            "vmess",
            "vless",
            "handlers",
            "reverse",
            "dns",
        ]),
    );
    allowed
}

#[test]
fn crates_depend_only_down_the_picture() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let root = workspace_root();
    let mut folder_of = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let dir = manifest
            .parent()
            .unwrap()
            .strip_prefix(&root)
            .unwrap()
            .to_path_buf();
        folder_of.insert(package["name"].as_str().unwrap().to_owned(), dir);
    }
    let allowed = allowed();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let dir = &folder_of[name];
        let parts: Vec<String> = dir
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        for dependency in package["dependencies"].as_array().unwrap() {
            if dependency["kind"].as_str() == Some("dev") {
                continue;
            }
            let target = dependency["name"].as_str().unwrap();
            if parts.first().map(String::as_str) == Some("crates")
                && ["config", "routing"].contains(&parts[1].as_str())
                && target == "tokio"
            {
                wrong.push(format!(
                    "{name} depends on tokio; ARCHITECTURE.md keeps it pure"
                ));
            }
            let Some(target_dir) = folder_of.get(target) else {
                continue;
            };
            let target_parts: Vec<String> = target_dir
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            checked += 1;
            match parts[0].as_str() {
                "crates" => {
                    if let Some(may) = allowed.get(parts[1].as_str()) {
                        if target_parts[0] != "crates" || !may.contains(target_parts[1].as_str()) {
                            wrong.push(format!(
                                "{name} -> {target}: ARCHITECTURE.md has no such arrow"
                            ));
                        }
                    }
                }
                "bins"
                    if !(target_parts[0] == "crates"
                        && ["app", "config", "core"].contains(&target_parts[1].as_str())) =>
                {
                    wrong.push(format!("{name} -> {target}: binaries stay thin"));
                }
                _ => {}
            }
        }
    }
    assert!(checked > 0, "found no workspace dependency edges to check");
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_library_module_opens_with_a_doc_comment() {
    let root = workspace_root();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        rust_files(&entry.path().join("src"), &mut files);
    }
    assert!(files.len() >= 8, "found only {} library files", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let opening = text.trim_start();
            // A crate root may open with its README instead: one text for
            // the crates.io page, the docs' front page and the doctest.
            !(opening.starts_with("//!")
                || opening.starts_with("#![doc = include_str!(\"../README.md\")]"))
        })
        .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "modules without a //! opening:\n{}",
        undocumented.join("\n")
    );
}

/// What a sans-IO module must not contain: sockets, files, clocks, tasks,
/// sleeping or awaiting. (Wakers are plain `std::task` values and allowed:
/// the send queue hands them back for its driver to wake.)
const IO_MARKERS: &[&str] = &[
    "tokio::io",
    "tokio::net",
    "tokio::time",
    "tokio::spawn",
    "tokio::task",
    "tokio::sync",
    "std::net::Tcp",
    "std::net::Udp",
    "std::fs",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
    ".await",
    "async fn",
];

/// The sans-IO modules: the codecs and state machines of STYLE.md, which
/// take bytes, `now` and randomness as inputs and leave sockets, clocks
/// and tasks to their drivers.
const SANS_IO: &[&str] = &[
    "crates/mux/src/frame.rs",
    "crates/mux/src/send.rs",
    "crates/mux/src/engine.rs",
    "crates/vmess/src/body.rs",
    "crates/vmess/src/header/mod.rs",
    "crates/vmess/src/header/request.rs",
    "crates/vmess/src/header/auth_id.rs",
    "crates/vmess/src/header/aead.rs",
    "crates/vmess/src/header/legacy.rs",
    "crates/vmess/src/header/response.rs",
    "crates/vmess/src/validator.rs",
    "crates/vless/src/header.rs",
    "crates/vless/src/fallback.rs",
    "crates/reverse/src/control.rs",
    "crates/routing/src/sniff.rs",
    "crates/handlers/src/socks/codec.rs",
    "crates/handlers/src/http/codec.rs",
];

/// Each sans-IO module says so in its opening doc and stays free of IO, so
/// it can be unit-tested, fuzzed and benchmarked without a runtime. Test
/// modules inside are not checked.
#[test]
fn sans_io_modules_do_no_io() {
    let root = workspace_root();
    let mut wrong = Vec::new();
    for name in SANS_IO {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let opening = text
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if !opening.contains("sans-io") {
            wrong.push(format!("{name}: its opening doc does not say sans-IO"));
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for marker in IO_MARKERS {
                if line.contains(marker) {
                    wrong.push(format!("{name}:{}: {marker}", number + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "IO in sans-IO modules:\n{}",
        wrong.join("\n")
    );
}

/// ARCHITECTURE.md is the code map: every path it names in backticks
/// exists, every library crate has a section, and the README links it. A
/// rename that forgets the map fails here.
#[test]
fn architecture_map_names_real_paths() {
    let root = workspace_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let roots = ["crates/", "bins/", "xtask/", "fuzz/"];
    let mut named = 0;
    let mut missing = Vec::new();
    for (index, quoted) in map.split('`').enumerate() {
        // Odd pieces are inside backticks.
        if index % 2 == 0 || !roots.iter().any(|prefix| quoted.starts_with(prefix)) {
            continue;
        }
        named += 1;
        if !root.join(quoted).exists() {
            missing.push(quoted.to_owned());
        }
    }
    assert!(named >= 20, "found only {named} paths in ARCHITECTURE.md");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist:\n{}",
        missing.join("\n")
    );
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            map.contains(&format!("### `crates/{name}`"))
                || map.contains(&format!("`crates/{name}`")),
            "ARCHITECTURE.md has no entry for crates/{name}"
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("ARCHITECTURE.md"),
        "README.md does not link ARCHITECTURE.md"
    );
}

/// The files of `crate`'s `src` that `file` names with `crate::module`.
fn crate_imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (index, _) in line.match_indices("crate::") {
            let rest = &line[index + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

/// Inside the crates whose modules are layered (the Mux.Cool engine and
/// its driver, the VMess codecs and handlers), no two files import each
/// other, directly or around a circle: each module can be read knowing
/// only those below it.
#[test]
fn layered_crates_have_no_import_circles() {
    let root = workspace_root();
    for krate in ["mux", "vmess", "vless", "reverse", "routing", "transport"] {
        let src = root.join("crates").join(krate).join("src");
        let modules: BTreeSet<String> = std::fs::read_dir(&src)
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_stem()?.to_string_lossy().into_owned();
                (name != "lib" && name != "main").then_some(name)
            })
            .collect();
        assert!(modules.len() >= 3, "crates/{krate}/src has too few modules");
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for module in &modules {
            let file = if src.join(format!("{module}.rs")).exists() {
                src.join(format!("{module}.rs"))
            } else {
                src.join(module).join("mod.rs")
            };
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut imports = crate_imports(&text, &modules);
            imports.remove(module);
            edges.insert(module.clone(), imports);
        }
        // Depth-first search for a path back to the start.
        for start in &modules {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((node, path)) = stack.pop() {
                for next in &edges[&node] {
                    if next == start {
                        panic!(
                            "crates/{krate}: import circle {} -> {start}",
                            path.join(" -> ")
                        );
                    }
                    if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
}
