//! The text layer: V2Ray's JSON dialect and TOML, read into an ordered tree.
//!
//! This module turns a configuration text into a [`Node`] tree and nothing
//! more: it knows comments, syntax and positions, not what any key means
//! (that is `build`). It is not a general JSON library.
//!
//! V2Ray 4.34 reads JSON with Go's `encoding/json` after a pass that drops
//! comments (`infra/conf/json/reader.go`). We do the same, except that every
//! comment byte becomes a space (newlines stay), so the line and column of
//! a syntax error point into the file the person wrote:
//!
//! | input | kept as |
//! |---|---|
//! | `// text` and `# text` up to the end of the line | spaces, then the newline |
//! | `/* text */` (may span lines) | spaces, newlines kept |
//! | the same markers inside `"…"` or `'…'` | unchanged |
//!
//! Objects keep every entry in document order, duplicates included, so the
//! reader can apply Go's rule: the last key that matches a field without
//! regard to case wins.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ConfigError;

/// A JSON (or TOML) value with object entries kept in document order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A number as the parser saw it: integers stay exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    /// A non-negative integer literal.
    Unsigned(u64),
    /// A negative integer literal.
    Signed(i64),
    /// Anything with a fraction or exponent, or too large for 64 bits.
    Float(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Unsigned(value) => write!(f, "{value}"),
            Number::Signed(value) => write!(f, "{value}"),
            Number::Float(value) => write!(f, "{value}"),
        }
    }
}

impl Node {
    /// A short description of the value for error messages: strings quoted,
    /// numbers and booleans as written, containers by kind.
    pub(crate) fn describe(&self) -> String {
        match self {
            Node::Null => "null".to_owned(),
            Node::Bool(value) => value.to_string(),
            Node::Number(number) => number.to_string(),
            Node::String(text) => format!("{text:?}"),
            Node::Array(_) => "an array".to_owned(),
            Node::Object(_) => "an object".to_owned(),
        }
    }

    /// The kind of value, as a person would name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Node, E> {
        Ok(match u64::try_from(value) {
            Ok(unsigned) => Node::Number(Number::Unsigned(unsigned)),
            Err(_) => Node::Number(Number::Signed(value)),
        })
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Node, E> {
        Ok(Node::Number(Number::Unsigned(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Node, E> {
        Ok(Node::Number(Number::Float(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Node, E> {
        Ok(Node::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Node, E> {
        Ok(Node::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((key, value));
        }
        Ok(Node::Object(entries))
    }
}

/// Replaces every comment with spaces, keeping newlines and every byte
/// offset, so positions in the result are positions in `text`.
pub(crate) fn strip_comments(text: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Content,
        DoubleQuote,
        DoubleQuoteEscape,
        SingleQuote,
        SingleQuoteEscape,
        Slash,
        LineComment,
        BlockComment,
        BlockCommentStar,
    }

    let mut out = text.as_bytes().to_vec();
    let mut state = State::Content;
    for (index, &byte) in text.as_bytes().iter().enumerate() {
        state = match state {
            State::Content => match byte {
                b'"' => State::DoubleQuote,
                b'\'' => State::SingleQuote,
                b'#' => {
                    out[index] = b' ';
                    State::LineComment
                }
                b'/' => State::Slash,
                _ => State::Content,
            },
            State::DoubleQuote => match byte {
                b'"' => State::Content,
                b'\\' => State::DoubleQuoteEscape,
                _ => State::DoubleQuote,
            },
            State::DoubleQuoteEscape => State::DoubleQuote,
            State::SingleQuote => match byte {
                b'\'' => State::Content,
                b'\\' => State::SingleQuoteEscape,
                _ => State::SingleQuote,
            },
            State::SingleQuoteEscape => State::SingleQuote,
            State::Slash => match byte {
                b'/' => {
                    out[index - 1] = b' ';
                    out[index] = b' ';
                    State::LineComment
                }
                b'*' => {
                    out[index - 1] = b' ';
                    out[index] = b' ';
                    State::BlockComment
                }
                // A lone slash is content (and a syntax error later); the
                // byte after it is looked at again as content.
                b'"' => State::DoubleQuote,
                b'\'' => State::SingleQuote,
                b'#' => {
                    out[index] = b' ';
                    State::LineComment
                }
                _ => State::Content,
            },
            State::LineComment => {
                if byte == b'\n' {
                    State::Content
                } else {
                    out[index] = b' ';
                    State::LineComment
                }
            }
            State::BlockComment | State::BlockCommentStar => {
                let star = state == State::BlockCommentStar;
                if byte == b'\n' {
                    State::BlockComment
                } else {
                    out[index] = b' ';
                    if star && byte == b'/' {
                        State::Content
                    } else if byte == b'*' {
                        State::BlockCommentStar
                    } else {
                        State::BlockComment
                    }
                }
            }
        };
    }
    // Only ASCII bytes were replaced, by ASCII spaces, and never a byte of
    // a multi-byte character (those are >= 0x80 and belong to no marker),
    // except inside comments: a comment's multi-byte characters become
    // several spaces, which is still valid UTF-8.
    String::from_utf8(out)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// Parses V2Ray-dialect JSON (comments allowed) into a tree. `name` is the
/// file name used in error messages.
pub(crate) fn parse_json(name: &str, text: &str) -> Result<Node, ConfigError> {
    let stripped = strip_comments(text);
    serde_json::from_str::<Node>(&stripped).map_err(|error| {
        let error_offset = offset_of(&stripped, error.line(), error.column());
        // serde_json stops at the first look-alike outside a string; one
        // at (or just before) where it stopped is the cause, named here
        // instead of "expected value".
        if let Some((offset, look_alike)) = first_look_alike(&stripped) {
            if offset <= error_offset + look_alike.character.len_utf8() {
                let (line, column) = line_column(text, offset);
                return syntax_error(name, text, line, column, look_alike.message(offset));
            }
        }
        let message = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
        syntax_error(name, text, error.line(), error.column(), message)
    })
}

/// A character that passes for JSON syntax on a web page (a space, a
/// quote) but is none, so a configuration copied from a page fails on
/// something the person cannot see.
struct LookAlike {
    character: char,
    /// What to call it: "a non-breaking space".
    name: &'static str,
    /// What it is mistaken for.
    kind: LookAlikeKind,
}

enum LookAlikeKind {
    /// Looks like a space: replace it with one.
    Space,
    /// Shows as nothing: delete it.
    Invisible,
    /// Looks like `"`: replace it with one.
    Quote,
}

const LOOK_ALIKES: &[LookAlike] = &[
    LookAlike {
        character: '\u{00A0}',
        name: "a non-breaking space",
        kind: LookAlikeKind::Space,
    },
    LookAlike {
        character: '\u{202F}',
        name: "a narrow non-breaking space",
        kind: LookAlikeKind::Space,
    },
    LookAlike {
        character: '\u{3000}',
        name: "an ideographic space",
        kind: LookAlikeKind::Space,
    },
    LookAlike {
        character: '\u{200B}',
        name: "a zero-width space",
        kind: LookAlikeKind::Invisible,
    },
    LookAlike {
        character: '\u{FEFF}',
        name: "a byte order mark",
        kind: LookAlikeKind::Invisible,
    },
    LookAlike {
        character: '\u{201C}',
        name: "a curly quote",
        kind: LookAlikeKind::Quote,
    },
    LookAlike {
        character: '\u{201D}',
        name: "a curly quote",
        kind: LookAlikeKind::Quote,
    },
];

impl LookAlike {
    /// The syntax error's message for this character at byte `offset`.
    fn message(&self, offset: usize) -> String {
        let named = format!("{} (U+{:04X})", self.name, u32::from(self.character));
        match self.kind {
            // V2Ray rejects a leading BOM too; editors call the fix "UTF-8
            // without BOM".
            LookAlikeKind::Invisible if self.character == '\u{FEFF}' && offset == 0 => {
                format!("{named} starts the file; save it as UTF-8 without a BOM")
            }
            LookAlikeKind::Space => {
                format!("{named} is not JSON whitespace; replace it with a normal space")
            }
            LookAlikeKind::Invisible => format!("{named} is not JSON whitespace; delete it"),
            LookAlikeKind::Quote => {
                format!("{named} is not a JSON quote; replace it with a straight quote (\")")
            }
        }
    }
}

/// The byte offset and kind of the first look-alike outside a `"…"`
/// string of comment-free JSON `text` (inside a string it is content).
fn first_look_alike(text: &str) -> Option<(usize, &'static LookAlike)> {
    let mut in_string = false;
    let mut escaped = false;
    for (offset, character) in text.char_indices() {
        if in_string {
            match (escaped, character) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if character == '"' {
            in_string = true;
            continue;
        }
        if let Some(look_alike) = LOOK_ALIKES
            .iter()
            .find(|look_alike| look_alike.character == character)
        {
            return Some((offset, look_alike));
        }
    }
    None
}

/// The byte offset of 1-based `line` and byte `column` in `text`
/// (serde_json's way of counting; column 0 means before the line).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// Parses TOML into the same tree. TOML reports a byte span, which becomes
/// a line and column like JSON's.
pub(crate) fn parse_toml(name: &str, text: &str) -> Result<Node, ConfigError> {
    toml::from_str::<Node>(text).map_err(|error| {
        let (line, column) = match error.span() {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        let message = error.message().trim().to_owned();
        syntax_error(name, text, line, column, message)
    })
}

/// 1-based line and byte column of `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |index| index + 1);
    (line, before.len() - line_start + 1)
}

/// Builds a syntax error with the offending line and a caret under the
/// column (`column` counts bytes from 1, as both parsers do).
fn syntax_error(
    name: &str,
    text: &str,
    line: usize,
    column: usize,
    message: String,
) -> ConfigError {
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let line_text = line_text.trim_end_matches('\r');
    // Count the characters before the column so the caret lands under the
    // right character even after multi-byte ones.
    let mut byte_end = column.saturating_sub(1).min(line_text.len());
    while !line_text.is_char_boundary(byte_end) {
        byte_end -= 1;
    }
    let caret_offset: usize = line_text[..byte_end]
        .chars()
        .map(|character| if character == '\t' { 0 } else { 1 })
        .sum();
    // Tabs are echoed as tabs under the line so the caret stays aligned.
    let tabs: String = line_text[..byte_end]
        .chars()
        .filter(|&c| c == '\t')
        .collect();
    let snippet = format!("    {line_text}\n    {tabs}{}^", " ".repeat(caret_offset));
    ConfigError::Syntax {
        file: name.to_owned(),
        line,
        column: column.max(1),
        message,
        snippet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_become_spaces_and_keep_offsets() {
        let text = "{ // one\n \"a\": 1, # two\n /* three\n four */ \"b\": 2 }";
        let stripped = strip_comments(text);
        assert_eq!(stripped.len(), text.len());
        assert_eq!(stripped.lines().count(), text.lines().count());
        assert_eq!(
            stripped,
            "{       \n \"a\": 1,      \n         \n         \"b\": 2 }"
        );
    }

    #[test]
    fn comment_markers_inside_strings_are_kept() {
        let text = r#"{"a": "http://x/#y /* z */", "b": "q\"//"}"#;
        assert_eq!(strip_comments(text), text);
        let node = parse_json("t.json", text).expect("parses");
        let Node::Object(entries) = node else {
            panic!("object")
        };
        assert_eq!(entries[0].1, Node::String("http://x/#y /* z */".into()));
        assert_eq!(entries[1].1, Node::String("q\"//".into()));
    }

    #[test]
    fn multibyte_characters_in_comments_stay_valid() {
        let text = "{ // 入站代理\n \"a\": 1 }";
        let node = parse_json("t.json", text).expect("parses");
        assert_eq!(
            node,
            Node::Object(vec![("a".into(), Node::Number(Number::Unsigned(1)))])
        );
    }

    #[test]
    fn block_comment_with_stars() {
        let text = "{ /** x **/ \"a\": /* * / */ 2 }";
        let node = parse_json("t.json", text).expect("parses");
        assert_eq!(
            node,
            Node::Object(vec![("a".into(), Node::Number(Number::Unsigned(2)))])
        );
    }

    #[test]
    fn duplicates_are_kept_in_order() {
        let node = parse_json("t.json", r#"{"a": 1, "A": 2, "a": 3}"#).expect("parses");
        let Node::Object(entries) = node else {
            panic!("object")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].0, "A");
    }

    #[test]
    fn trailing_comma_names_line_and_column() {
        let text = "{\n  \"a\": [1, 2],\n  \"b\": 3,\n}\n";
        let error = parse_json("x.json", text).expect_err("trailing comma");
        let shown = error.to_string();
        assert!(shown.starts_with("x.json:4:1: trailing comma"), "{shown}");
        assert!(shown.contains("\n    }\n    ^"), "{shown}");
    }

    #[test]
    fn caret_after_multibyte_text() {
        let error = parse_json("x.json", "{\"é\": 1 x}").expect_err("bad");
        let shown = error.to_string();
        // 'x' is the 9th character but the 10th byte.
        assert!(shown.starts_with("x.json:1:10: "), "{shown}");
        assert!(
            shown.ends_with("    {\"é\": 1 x}\n            ^"),
            "{shown:?}"
        );
    }

    #[test]
    fn look_alikes_are_named_where_they_are() {
        for (character, message) in [
            ('\u{00A0}', "a non-breaking space (U+00A0) is not JSON whitespace; replace it with a normal space"),
            ('\u{202F}', "a narrow non-breaking space (U+202F) is not JSON whitespace; replace it with a normal space"),
            ('\u{3000}', "an ideographic space (U+3000) is not JSON whitespace; replace it with a normal space"),
            ('\u{200B}', "a zero-width space (U+200B) is not JSON whitespace; delete it"),
            ('\u{FEFF}', "a byte order mark (U+FEFF) is not JSON whitespace; delete it"),
            ('\u{201C}', "a curly quote (U+201C) is not a JSON quote; replace it with a straight quote (\")"),
        ] {
            // Before a value, a key, a comma and after the last value: each
            // place serde_json stops differently.
            for (text, line, column) in [
                (format!("{{\n  \"a\":{character}1}}"), 2, 7),
                (format!("{{\n{character}\"a\": 1}}"), 2, 1),
                (format!("{{\"a\": 1{character}, \"b\": 2}}"), 1, 8),
                (format!("{{\"a\": tr{character}ue}}"), 1, 9),
                (format!("{{}}\n{character}"), 2, 1),
            ] {
                let error = parse_json("x.json", &text).expect_err(&text);
                assert_eq!(error.position(), Some((line, column)), "{text:?}: {error}");
                let shown = error.to_string();
                let first = shown.lines().next().unwrap();
                assert_eq!(first, format!("x.json:{line}:{column}: {message}"), "{text:?}");
            }
        }
    }

    #[test]
    fn a_leading_byte_order_mark_is_named() {
        let error = parse_json("x.json", "\u{FEFF}{}").expect_err("BOM");
        assert!(
            error.to_string().starts_with(
                "x.json:1:1: a byte order mark (U+FEFF) starts the file; save it as UTF-8 without a BOM"
            ),
            "{error}"
        );
    }

    #[test]
    fn look_alikes_in_strings_and_comments_are_content() {
        let text = "{\"a\": \"x\u{00A0}y \\\" \u{201C}\u{FEFF}\"} // \u{00A0}\n";
        let node = parse_json("x.json", text).expect("parses");
        assert_eq!(
            node,
            Node::Object(vec![(
                "a".into(),
                Node::String("x\u{00A0}y \" \u{201C}\u{FEFF}".into())
            )])
        );
        // An earlier, different error keeps its own message.
        let error = parse_json("x.json", "{\"a\": 1,,\n \u{00A0}}").expect_err("bad");
        assert!(
            error
                .to_string()
                .starts_with("x.json:1:9: key must be a string"),
            "{error}"
        );
        assert!(!error.to_string().contains("U+00A0"), "{error}");
    }

    #[test]
    fn numbers_keep_their_kind() {
        let node = parse_json("n.json", "[1, -2, 1.5, 1e3]").expect("parses");
        assert_eq!(
            node,
            Node::Array(vec![
                Node::Number(Number::Unsigned(1)),
                Node::Number(Number::Signed(-2)),
                Node::Number(Number::Float(1.5)),
                Node::Number(Number::Float(1000.0)),
            ])
        );
    }

    #[test]
    fn toml_parses_into_the_same_tree() {
        let node = parse_toml("t.toml", "a = 1\n[b]\nc = \"x\"\n").expect("parses");
        assert_eq!(
            node,
            Node::Object(vec![
                ("a".into(), Node::Number(Number::Unsigned(1))),
                (
                    "b".into(),
                    Node::Object(vec![("c".into(), Node::String("x".into()))])
                ),
            ])
        );
    }

    #[test]
    fn toml_errors_have_positions() {
        let error = parse_toml("t.toml", "a = 1\nb = \n").expect_err("bad");
        let shown = error.to_string();
        assert!(shown.starts_with("t.toml:2:"), "{shown}");
    }
}
