//! Reading typed values out of a [`Node`] tree the way Go's `encoding/json`
//! fills V2Ray's structs, with a JSON path for every error.
//!
//! Rules applied here (V2Ray 4.34 semantics):
//!
//! | rule | effect |
//! |---|---|
//! | key lookup | case-insensitive; the last matching entry wins |
//! | `null` | same as an absent key |
//! | unknown key | ignored, reported as a warning with "did you mean" |
//! | integer fields | integer literals in the type's range only (`1.0`, `"1"` are errors) |
//! | string lists | an array of strings, or one string split on `,` (not trimmed) |
//!
//! This module knows no V2Ray object; `build` says which keys exist.

use crate::dialect::{Node, Number};
use crate::error::{ConfigError, Warning, WarningKind};
use crate::model::PortRange;

/// The state of one build pass over one source: its name for messages and
/// where warnings go.
pub(crate) struct Cx<'w> {
    pub file: &'w str,
    pub warnings: &'w mut Vec<Warning>,
}

impl Cx<'_> {
    pub fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            path: display_path(path),
            message: message.into(),
        }
    }

    /// `what` is not supported by Rayback; `hint` says what is instead.
    pub fn unsupported(&self, path: &str, what: impl std::fmt::Display, hint: &str) -> ConfigError {
        let message = if hint.is_empty() {
            format!("{what} is not supported by Rayback")
        } else {
            format!("{what} is not supported by Rayback ({hint})")
        };
        ConfigError::Unsupported {
            file: self.file.to_owned(),
            path: display_path(path),
            message,
        }
    }

    pub fn warn(&mut self, kind: WarningKind, path: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            kind,
            file: self.file.to_owned(),
            path: display_path(path),
            message: message.into(),
        });
    }

    /// A JSON object at `path`, or an error naming what was there instead.
    pub fn object<'n>(&self, node: &'n Node, path: &str) -> Result<Obj<'n>, ConfigError> {
        match node {
            Node::Object(entries) => Ok(Obj {
                entries,
                path: path.to_owned(),
            }),
            other => Err(self.invalid(path, format!("expected an object, found {}", other.kind()))),
        }
    }

    /// An array at `path` (`null` reads as empty).
    pub fn array<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node], ConfigError> {
        match node {
            Node::Array(items) => Ok(items),
            Node::Null => Ok(&[]),
            other => Err(self.invalid(path, format!("expected an array, found {}", other.kind()))),
        }
    }

    pub fn string(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        match node {
            Node::String(text) => Ok(text.clone()),
            other => Err(self.invalid(
                path,
                format!("expected a string, found {}", other.describe()),
            )),
        }
    }

    pub fn bool(&self, node: &Node, path: &str) -> Result<bool, ConfigError> {
        match node {
            Node::Bool(value) => Ok(*value),
            other => Err(self.invalid(
                path,
                format!("expected true or false, found {}", other.describe()),
            )),
        }
    }

    /// An integer in `min..=max`, named `type_name` in messages.
    pub fn integer(&self, node: &Node, path: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let value = match node {
            Node::Number(Number::Unsigned(value)) => i64::try_from(*value).ok(),
            Node::Number(Number::Signed(value)) => Some(*value),
            Node::Number(Number::Float(_)) => {
                return Err(self.invalid(
                    path,
                    format!("expected an integer, found {}", node.describe()),
                ))
            }
            other => {
                return Err(self.invalid(
                    path,
                    format!("expected a number, found {}", other.describe()),
                ))
            }
        };
        match value {
            Some(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(self.invalid(
                path,
                format!("{} is out of range {min}..={max}", node.describe()),
            )),
        }
    }

    pub fn u32(&self, node: &Node, path: &str) -> Result<u32, ConfigError> {
        Ok(self.integer(node, path, 0, i64::from(u32::MAX))? as u32)
    }

    pub fn u16(&self, node: &Node, path: &str) -> Result<u16, ConfigError> {
        Ok(self.integer(node, path, 0, i64::from(u16::MAX))? as u16)
    }

    pub fn u8(&self, node: &Node, path: &str) -> Result<u8, ConfigError> {
        Ok(self.integer(node, path, 0, i64::from(u8::MAX))? as u8)
    }

    /// A V2Ray string list: an array of strings or one comma-separated string.
    pub fn string_list(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        match node {
            Node::String(text) => Ok(text.split(',').map(str::to_owned).collect()),
            Node::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.string(item, &index_path(path, index)))
                .collect(),
            Node::Null => Ok(Vec::new()),
            other => Err(self.invalid(
                path,
                format!(
                    "expected a string or an array of strings, found {}",
                    other.describe()
                ),
            )),
        }
    }
}

/// A JSON object with V2Ray's lookup rules.
pub(crate) struct Obj<'n> {
    entries: &'n [(String, Node)],
    pub path: String,
}

impl<'n> Obj<'n> {
    /// The value of `key` (case-insensitive, last match wins). `null` is
    /// skipped, as Go skips it for plain fields: `null` and absent are both
    /// `None`.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .rev()
            .find(|(name, value)| name.eq_ignore_ascii_case(key) && !matches!(value, Node::Null))
            .map(|(_, value)| value)
    }

    /// The value of an exactly spelled key (Go map lookups are exact).
    pub fn get_exact(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// The JSON path of `key` inside this object.
    pub fn at(&self, key: &str) -> String {
        key_path(&self.path, key)
    }

    /// Entries in document order.
    pub fn entries(&self) -> &'n [(String, Node)] {
        self.entries
    }

    /// Warns about every key not in `known` (compared without case).
    pub fn warn_unknown(&self, cx: &mut Cx<'_>, known: &[&str]) {
        for (name, _) in self.entries {
            if known.iter().any(|known| known.eq_ignore_ascii_case(name)) {
                continue;
            }
            let message = match suggest(name, known) {
                Some(close) => format!("unknown key {name:?} is ignored; did you mean {close:?}?"),
                None => format!("unknown key {name:?} is ignored"),
            };
            cx.warn(WarningKind::UnknownKey, &self.at(name), message);
        }
    }
}

/// The closest known key within edit distance 2, if any.
pub(crate) fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, _)| *distance <= 2 && *distance < name.chars().count())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

pub(crate) fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    }
}

/// Go's `strconv.ParseUint(s, 10, 32)` followed by the 65535 check.
pub(crate) fn parse_port_text(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{text:?} is not a port number"));
    }
    match text.parse::<u64>() {
        Ok(value) if value <= 65535 => Ok(value as u16),
        _ => Err(format!("port {text} is out of range 0..=65535")),
    }
}

/// `"443"` or `"1000-2000"` (V2Ray's `parseStringPort`), from ≤ to.
pub(crate) fn parse_port_range_text(text: &str) -> Result<PortRange, String> {
    let (from, to) = match text.split_once('-') {
        Some((from, to)) => (parse_port_text(from)?, parse_port_text(to)?),
        None => {
            let port = parse_port_text(text)?;
            (port, port)
        }
    };
    if from > to {
        return Err(format!("port range {text:?} runs backwards"));
    }
    Ok(PortRange { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::parse_json;

    #[test]
    fn lookup_is_case_insensitive_and_last_wins() {
        let node = parse_json(
            "t",
            r#"{"Tag": "a", "TAG": "b", "other": null, "x": 1, "X": null}"#,
        )
        .expect("json");
        let warnings = &mut Vec::new();
        let cx = Cx {
            file: "t",
            warnings,
        };
        let obj = cx.object(&node, "").expect("object");
        assert_eq!(obj.get("tag"), Some(&Node::String("b".into())));
        assert_eq!(obj.get("other"), None);
        assert_eq!(obj.get("x"), Some(&Node::Number(Number::Unsigned(1))));
        assert_eq!(obj.get("missing"), None);
    }

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        let node = parse_json("t", r#"{"outboundTga": "a", "zzz": 1, "tag": 2}"#).expect("json");
        let mut warnings = Vec::new();
        let mut cx = Cx {
            file: "t",
            warnings: &mut warnings,
        };
        let obj = cx.object(&node, "routing.rules[0]").expect("object");
        obj.warn_unknown(&mut cx, &["outboundTag", "tag"]);
        assert_eq!(warnings.len(), 2);
        assert_eq!(warnings[0].path, "routing.rules[0].outboundTga");
        assert!(
            warnings[0].message.contains("did you mean \"outboundTag\""),
            "{}",
            warnings[0].message
        );
        assert!(!warnings[1].message.contains("did you mean"));
    }

    #[test]
    fn string_lists_accept_both_forms() {
        let warnings = &mut Vec::new();
        let cx = Cx {
            file: "t",
            warnings,
        };
        let node = parse_json("t", r#"["a", "b"]"#).expect("json");
        assert_eq!(cx.string_list(&node, "x").expect("list"), ["a", "b"]);
        let node = parse_json("t", r#""a,b, c""#).expect("json");
        assert_eq!(cx.string_list(&node, "x").expect("list"), ["a", "b", " c"]);
        let node = parse_json("t", r#"["a", 1]"#).expect("json");
        let error = cx.string_list(&node, "x").expect_err("number in list");
        assert_eq!(error.path(), Some("x[1]"));
    }

    #[test]
    fn integers_are_checked() {
        let warnings = &mut Vec::new();
        let cx = Cx {
            file: "t",
            warnings,
        };
        let number = |text: &str| parse_json("t", text).expect("json");
        assert_eq!(cx.u16(&number("65535"), "p").expect("fits"), 65535);
        assert!(cx.u16(&number("65536"), "p").is_err());
        assert!(cx.u16(&number("-1"), "p").is_err());
        assert!(cx.u16(&number("1.0"), "p").is_err());
        assert!(cx.u16(&number("\"80\""), "p").is_err());
    }

    #[test]
    fn port_texts() {
        assert_eq!(
            parse_port_range_text("80"),
            Ok(PortRange { from: 80, to: 80 })
        );
        assert_eq!(
            parse_port_range_text("10-20"),
            Ok(PortRange { from: 10, to: 20 })
        );
        assert!(parse_port_range_text("20-10").is_err());
        assert!(parse_port_range_text("65536").is_err());
        assert!(parse_port_range_text("+1").is_err());
        assert!(parse_port_range_text("").is_err());
        assert!(parse_port_range_text("1-2-3").is_err());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(
            suggest("inboundtags", &["inboundTag", "outboundTag"]),
            Some("inboundTag")
        );
        assert_eq!(suggest("ab", &["ip"]), None);
    }
}
