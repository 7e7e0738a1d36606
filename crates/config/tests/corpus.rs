//! Data-driven check of config-examples/corpus/ against the real V2Ray.
//!
//! For every file listed in `expect.toml`: `v2ray -test` must give the
//! listed verdict, `rayback_config::parse` must give its listed verdict,
//! and the two must be consistent — where Rayback has the features they
//! agree; where it lacks one, it rejects naming the field; every rejection
//! names a JSON path or a line and column.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rayback_config::{parse, ConfigError, Source};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config-examples/corpus")
}

struct Case {
    file: String,
    v2ray: String,
    rayback: String,
    message: Option<String>,
}

fn cases() -> Vec<Case> {
    let text =
        std::fs::read_to_string(corpus_dir().join("expect.toml")).expect("expect.toml readable");
    let table: toml::Table = toml::from_str(&text).expect("expect.toml parses");
    let list = table
        .get("case")
        .and_then(|value| value.as_array())
        .expect("[[case]] entries");
    list.iter()
        .map(|entry| {
            let field = |key: &str| {
                entry
                    .get(key)
                    .and_then(|value| value.as_str())
                    .map(str::to_owned)
            };
            Case {
                file: field("file").expect("file"),
                v2ray: field("v2ray").expect("v2ray verdict"),
                rayback: field("rayback").expect("rayback verdict"),
                message: field("message"),
            }
        })
        .collect()
}

#[test]
fn corpus_has_enough_files_and_every_file_is_listed() {
    let files: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert!(files.len() >= 35, "only {} corpus files", files.len());
    let listed: BTreeSet<String> = cases().into_iter().map(|case| case.file).collect();
    assert_eq!(files, listed, "expect.toml and the corpus files differ");
}

fn check_rayback(
    case: &Case,
    result: Result<rayback_config::Loaded, ConfigError>,
) -> Result<(), String> {
    let fragment = case.message.as_deref().unwrap_or("");
    match (case.rayback.as_str(), result) {
        ("ok" | "routing-level" | "routing-unsupported", Ok(loaded)) => {
            if fragment.is_empty() {
                return Ok(());
            }
            if loaded
                .warnings
                .iter()
                .any(|warning| warning.to_string().contains(fragment))
            {
                Ok(())
            } else {
                Err(format!(
                    "no warning contains {fragment:?}: {:#?}",
                    loaded.warnings
                ))
            }
        }
        ("ok" | "routing-level" | "routing-unsupported", Err(error)) => {
            Err(format!("expected to load, got: {error}"))
        }
        (verdict @ ("invalid" | "syntax" | "unsupported"), Err(error)) => {
            let shown = error.to_string();
            if !shown.starts_with(&case.file) && !shown.contains(&format!("/{}", case.file)) {
                return Err(format!("error does not name the file: {shown}"));
            }
            if error.path().is_none() && error.position().is_none() {
                return Err(format!(
                    "error names neither a path nor a position: {shown}"
                ));
            }
            let kind_ok = match verdict {
                "syntax" => error.is_syntax(),
                "unsupported" => error.is_unsupported(),
                _ => !error.is_syntax() && !error.is_unsupported(),
            };
            if !kind_ok {
                return Err(format!("expected a {verdict} error, got: {shown}"));
            }
            if !shown.contains(fragment) {
                return Err(format!("error lacks {fragment:?}: {shown}"));
            }
            Ok(())
        }
        (verdict, Ok(_)) => Err(format!("expected {verdict}, but it loaded")),
        (verdict, Err(_)) => Err(format!(
            "unknown rayback verdict {verdict:?} in expect.toml"
        )),
    }
}

#[test]
fn corpus_verdicts_hold_for_v2ray_and_rayback() {
    let cases = cases();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let text =
            std::fs::read_to_string(corpus_dir().join(&case.file)).expect("corpus file readable");

        // Consistency of the expectations themselves.
        let consistent = match case.rayback.as_str() {
            "ok" => case.v2ray == "ok",
            "invalid" | "syntax" => case.v2ray != "ok" || case.file.starts_with("rayback-"),
            "routing-level" => case.v2ray == "exit23",
            "unsupported" | "routing-unsupported" => true,
            _ => false,
        };
        if !consistent {
            failures.push(format!(
                "{}: v2ray {} and rayback {} disagree",
                case.file, case.v2ray, case.rayback
            ));
        }

        let (code, output) = rayback_testkit::v2ray_test(&text, &case.file).expect("v2ray runs");
        let expected_code = match case.v2ray.as_str() {
            "ok" => 0,
            "exit23" => 23,
            "exit2" => 2,
            other => panic!("{}: unknown v2ray verdict {other:?}", case.file),
        };
        if code != expected_code {
            let last = output
                .lines()
                .rfind(|line| !line.trim().is_empty())
                .unwrap_or("");
            failures.push(format!(
                "{}: v2ray exited {code}, expected {expected_code}: {last}",
                case.file
            ));
        }

        let source = Source::new(corpus_dir().join(&case.file).display().to_string(), text);
        if let Err(problem) = check_rayback(case, parse(&[source])) {
            failures.push(format!("{}: {problem}", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every corpus file Rayback loads survives `to_v2ray_json` → `parse`
/// unchanged, and the real V2Ray accepts the printed JSON.
#[test]
fn loadable_corpus_files_round_trip_through_v2ray_json() {
    let mut checked = 0;
    for case in cases().iter().filter(|case| case.rayback == "ok") {
        let text =
            std::fs::read_to_string(corpus_dir().join(&case.file)).expect("corpus file readable");
        let config = rayback_config::parse_str(&case.file, &text)
            .expect("loads")
            .config;
        let printed = serde_json::to_string_pretty(&config.to_v2ray_json()).expect("serializes");
        let again = rayback_config::parse_str("printed.json", &printed).unwrap_or_else(|error| {
            panic!("{}: printed config fails: {error}\n{printed}", case.file)
        });
        assert_eq!(
            again.config, config,
            "{}: round trip changed the config\n{printed}",
            case.file
        );
        let (code, output) =
            rayback_testkit::v2ray_test(&printed, "printed.json").expect("v2ray runs");
        assert_eq!(
            code, 0,
            "{}: v2ray rejects the printed config: {output}\n{printed}",
            case.file
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} loadable corpus files");
}
