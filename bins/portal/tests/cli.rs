//! The `portal` and `bridge` binaries as a user meets them: `-test` on the
//! seed page's files and on the whole config corpus, compared with the
//! real `v2ray -test`; the uncorrected seed snippet; flags and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use rayback_testkit::{v2ray_test, workspace_root};

fn portal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portal"))
}

/// The bridge binary sits beside the portal's in the target directory.
fn bridge() -> Command {
    let portal = PathBuf::from(env!("CARGO_BIN_EXE_portal"));
    Command::new(portal.with_file_name("bridge"))
}

fn run_test(mut binary: Command, file: &Path) -> (i32, String) {
    let output = binary
        .arg("-test")
        .arg("-c")
        .arg(file)
        .output()
        .expect("binary runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

fn seed(file: &str) -> PathBuf {
    workspace_root().join("config-examples/seed").join(file)
}

#[test]
fn seed_files_pass_test_here_and_in_v2ray() {
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "bridge"])
        .status()
        .expect("cargo build runs");
    assert!(build.success());
    for (file, binary) in [
        ("bridge.json", bridge()),
        ("portal.json", portal()),
        ("bridge.modern.json", bridge()),
        ("portal.modern.json", portal()),
    ] {
        let path = seed(file);
        let (code, output) = run_test(binary, &path);
        assert_eq!(code, 0, "{file}: {output}");
        assert!(output.contains("Configuration OK."), "{file}: {output}");
        let text = std::fs::read_to_string(&path).unwrap();
        let (v2ray_code, v2ray_output) = v2ray_test(&text, file).unwrap();
        assert_eq!(v2ray_code, 0, "v2ray -test {file}: {v2ray_output}");
    }
}

#[test]
fn the_uncorrected_seed_snippet_fails_with_file_line_and_column() {
    let path = seed("bridge-outbounds-snippet.json");
    let (code, output) = run_test(portal(), &path);
    assert_eq!(code, 23, "{output}");
    assert!(
        output.contains("bridge-outbounds-snippet.json:4:5"),
        "{output}"
    );
    assert!(output.contains("expected"), "{output}");
}

#[test]
fn a_pasted_non_breaking_space_is_named_with_line_and_column() {
    let dir = rayback_testkit::TempDir::new("nbsp").expect("temp dir");
    let path = dir.path.join("config.json");
    let text = "{\n  \"outbounds\": [\n    \u{A0}{\"protocol\": \"freedom\"}\n  ]\n}\n";
    std::fs::write(&path, text).expect("config written");
    let (code, output) = run_test(portal(), &path);
    assert_eq!(code, 23, "{output}");
    assert!(
        output.contains(
            "config.json:3:5: a non-breaking space (U+00A0) is not JSON whitespace; replace it with a normal space"
        ),
        "{output}"
    );
}

#[test]
fn a_config_without_the_role_runs_as_a_plain_proxy_and_says_so() {
    let path = seed("bridge.json");
    let (code, output) = run_test(portal(), &path);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("has no reverse.portals"), "{output}");
}

#[test]
fn flags_and_exit_codes() {
    let output = portal().arg("-version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Rayback portal"));
    let output = portal().arg("-bogus").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = portal()
        .args(["-test", "-config", "/nonexistent/x.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(23));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/x.json"));
}

struct Case {
    file: String,
    v2ray: String,
    rayback: String,
}

fn corpus() -> Vec<Case> {
    let dir = workspace_root().join("config-examples/corpus");
    let text = std::fs::read_to_string(dir.join("expect.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["case"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            file: case["file"].as_str().unwrap().to_owned(),
            v2ray: case["v2ray"].as_str().unwrap().to_owned(),
            rayback: case["rayback"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Every corpus file through `portal -test`. The v2ray verdicts in
/// expect.toml are checked against the real binary by the config crate's
/// corpus test; here the binary's verdict must agree with them wherever
/// Rayback has the features, and reject naming the feature where not.
#[test]
fn corpus_verdicts_agree_with_v2ray() {
    let cases = corpus();
    assert!(cases.len() >= 30, "only {} corpus files", cases.len());
    let dir = workspace_root().join("config-examples/corpus");
    let mut disagreements = Vec::new();
    for case in &cases {
        let (code, output) = run_test(portal(), &dir.join(&case.file));
        let v2ray_accepts = case.v2ray == "ok";
        match case.rayback.as_str() {
            "unsupported" | "routing-unsupported" => {
                if code != 23 || !output.contains("not supported by Rayback") {
                    disagreements.push(format!(
                        "{}: expected an unsupported error, got {code}: {output}",
                        case.file
                    ));
                }
            }
            // Rayback-only keys: V2Ray ignores them, Rayback checks them.
            verdict if case.file.starts_with("rayback-") => {
                if (code == 0) != (verdict == "ok") {
                    disagreements.push(format!(
                        "{}: expected {verdict}, got {code}: {output}",
                        case.file
                    ));
                }
            }
            _ => {
                let accepted = code == 0;
                if accepted != v2ray_accepts {
                    disagreements.push(format!(
                        "{}: v2ray {}, portal exit {code}: {output}",
                        case.file, case.v2ray
                    ));
                }
            }
        }
        if code != 0 {
            let names_a_place = output.contains(&format!("{}:", case.file))
                || output.contains("routing")
                || output.contains("rayback.")
                || output.contains("inbounds[")
                || output.contains("outbounds[");
            if !names_a_place {
                disagreements.push(format!(
                    "{}: the rejection names no field: {output}",
                    case.file
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{}",
        disagreements.join("\n---\n")
    );
}

/// The soft and hard "Max open files" of a process, from /proc.
fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Like v2ray (Go raises it at start), a Rayback process lifts its soft
/// open-file limit to the hard one, so a default soft limit of 1024 does
/// not cap it near a thousand connections.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = std::env::temp_dir().join(format!("rayback-nofile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("plain.json");
    std::fs::write(&config, r#"{"outbounds": [{"protocol": "freedom"}]}"#).expect("config");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -S -n 256 && exec "$0" -c "$1""#)
        .arg(env!("CARGO_BIN_EXE_portal"))
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("portal starts");
    let started = std::time::Instant::now();
    let mut seen = None;
    while started.elapsed() < std::time::Duration::from_secs(10) {
        // Only once the shell has lowered the limit and become the portal,
        // and the portal has had a moment to start.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id()));
        if comm.is_ok_and(|name| name.trim() == "portal") {
            seen = open_file_limits(child.id());
            if seen.is_some_and(|(soft, _)| soft != 256) {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (soft, hard) = seen.expect("the portal's /proc limits were readable");
    assert_eq!(
        soft, hard,
        "soft limit {soft} not raised to the hard {hard}"
    );
}
