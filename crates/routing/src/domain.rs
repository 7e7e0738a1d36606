//! Domain conditions: parsing `domain` entries and one index over every
//! rule's domain patterns, so a lookup costs about the same for ten rules
//! as for ten thousand.
//!
//! | entry | pattern | matches a target domain `d` when |
//! |---|---|---|
//! | `full:x` | full | `d == x` |
//! | `domain:x` | domain | `d == x` or `d` ends with `.x` |
//! | `keyword:x`, or plain `x` | substring | `d` contains `x` |
//! | `regexp:re` | regex | `re` finds a match anywhere in `d` |
//! | `dotless:` / `dotless:x` | regex | `^[^.]*$` / `^[^.]*x[^.]*$` |
//! | `geosite:list[@attr…]` | from `geosite.dat` | any domain of the list (with all attrs) |
//! | `ext:file:list`, `ext-domain:file:list` | from `file` | as geosite |
//!
//! Everything is case-sensitive, as in V2Ray 4.34. Regexes use Rust's
//! `regex` syntax, which accepts the RE2 syntax V2Ray's Go `regexp` does
//! except for rarities (`\C`, `\Q…\E`); classes like `\d` and `\w` are
//! Unicode-aware here and ASCII in Go, which only matters for non-ASCII
//! names.
//!
//! The index ([`DomainIndex`]) answers "which rules' domain conditions hold
//! for `d`": full patterns by one hash lookup, domain patterns by one
//! lookup per label suffix of `d`, substrings by one Aho-Corasick pass.
//! Regexes are prefiltered: every match of `^re1\.` starts with `re1.`, so
//! one Aho-Corasick pass over the literal prefixes of all regexes picks
//! the few regexes worth running; only regexes without a usable prefix
//! (`.*x`, `[a-z]+`) run on every lookup. Not here: the other conditions
//! and rule order (see `router`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aho_corasick::AhoCorasick;
use regex_automata::meta;
use regex_automata::util::syntax;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::error::RoutingError;
use crate::geodata::{AssetCache, AssetError, AssetLocator, DomainKind, GeoDomain};

/// One compiled-to-be domain pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    Full(String),
    Domain(String),
    Substring(String),
    Regex(String),
}

impl DomainPattern {
    /// Whether `domain` matches, one pattern at a time: the reference the
    /// index is tested against.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Full(full) => domain == full,
            DomainPattern::Domain(suffix) => {
                domain.ends_with(suffix.as_str())
                    && (domain.len() == suffix.len()
                        || domain.as_bytes()[domain.len() - suffix.len() - 1] == b'.')
            }
            DomainPattern::Substring(part) => domain.contains(part.as_str()),
            DomainPattern::Regex(pattern) => build_regex(pattern)
                .map(|re| re.is_match(domain))
                .unwrap_or(false),
        }
    }
}

/// Where the rule is and how to read its asset files.
pub struct ParseContext<'a> {
    pub rule: usize,
    pub assets: &'a AssetLocator,
    pub cache: &'a mut AssetCache,
}

/// The routing error for an asset problem of rule `rule`.
pub fn asset_error(rule: usize, file: &str, list: &str, error: AssetError) -> RoutingError {
    match error {
        AssetError::NotFound(looked_in) => RoutingError::AssetNotFound {
            rule,
            file: file.to_owned(),
            looked_in,
        },
        AssetError::Unreadable(path, reason) => {
            RoutingError::AssetUnreadable { rule, path, reason }
        }
        AssetError::Malformed(path, reason) => RoutingError::BadAssetFile { rule, path, reason },
        AssetError::ListNotFound(path) => RoutingError::ListNotFound {
            rule,
            path,
            list: list.to_owned(),
        },
    }
}

impl ParseContext<'_> {
    fn empty(&self, prefix: &'static str, entry: &str) -> RoutingError {
        RoutingError::EmptyValue {
            rule: self.rule,
            prefix,
            value: entry.to_owned(),
        }
    }
}

/// Parses one `domain` entry into `out` (geosite entries add many).
pub fn parse_entry(
    context: &mut ParseContext<'_>,
    entry: &str,
    out: &mut Vec<DomainPattern>,
) -> Result<(), RoutingError> {
    if let Some(list) = entry.strip_prefix("geosite:") {
        if list.is_empty() {
            return Err(context.empty("geosite:", entry));
        }
        return load_site(context, "geosite.dat", list, entry, out);
    }
    let external = entry
        .strip_prefix("ext:")
        .or_else(|| entry.strip_prefix("ext-domain:"));
    if let Some(resource) = external {
        let parts: Vec<&str> = resource.split(':').collect();
        let [file, list] = parts[..] else {
            return Err(RoutingError::BadExternal {
                rule: context.rule,
                value: entry.to_owned(),
            });
        };
        if file.is_empty() || list.is_empty() {
            return Err(context.empty("ext:", entry));
        }
        return load_site(context, file, list, entry, out);
    }
    let pattern = if let Some(value) = entry.strip_prefix("regexp:") {
        if value.is_empty() {
            return Err(context.empty("regexp:", entry));
        }
        check_regex(context.rule, value)?;
        DomainPattern::Regex(value.to_owned())
    } else if let Some(value) = entry.strip_prefix("domain:") {
        if value.is_empty() {
            return Err(context.empty("domain:", entry));
        }
        DomainPattern::Domain(value.to_owned())
    } else if let Some(value) = entry.strip_prefix("full:") {
        if value.is_empty() {
            return Err(context.empty("full:", entry));
        }
        DomainPattern::Full(value.to_owned())
    } else if let Some(value) = entry.strip_prefix("keyword:") {
        if value.is_empty() {
            return Err(context.empty("keyword:", entry));
        }
        DomainPattern::Substring(value.to_owned())
    } else if let Some(value) = entry.strip_prefix("dotless:") {
        if value.contains('.') {
            return Err(RoutingError::DotlessWithDot {
                rule: context.rule,
                value: entry.to_owned(),
            });
        }
        if value.is_empty() {
            DomainPattern::Regex("^[^.]*$".to_owned())
        } else {
            let pattern = format!("^[^.]*{value}[^.]*$");
            check_regex(context.rule, &pattern)?;
            DomainPattern::Regex(pattern)
        }
    } else {
        // V2Ray treats anything else, even the empty string, as a substring.
        DomainPattern::Substring(entry.to_owned())
    };
    out.push(pattern);
    Ok(())
}

fn check_regex(rule: usize, pattern: &str) -> Result<(), RoutingError> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(drop)
        .map_err(|error| RoutingError::BadRegexp {
            rule,
            value: pattern.to_owned(),
            reason: error
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
}

/// `list[@attr…]` from `file`: the domains of the list that carry every
/// attribute (attribute names compared ignoring case).
fn load_site(
    context: &mut ParseContext<'_>,
    file: &str,
    list_with_attrs: &str,
    entry: &str,
    out: &mut Vec<DomainPattern>,
) -> Result<(), RoutingError> {
    let mut parts = list_with_attrs.split('@');
    let list = parts.next().unwrap_or_default().trim();
    if list.is_empty() {
        return Err(context.empty("geosite:", entry));
    }
    let wanted: Vec<String> = parts
        .map(|attr| attr.trim().to_ascii_lowercase())
        .filter(|attr| !attr.is_empty())
        .collect();
    let domains = context
        .cache
        .site(context.assets, file, list)
        .map_err(|error| asset_error(context.rule, file, list, error))?;
    for GeoDomain {
        kind,
        value,
        attributes,
    } in domains
    {
        let has_all = wanted.iter().all(|want| {
            attributes
                .iter()
                .any(|have| have.eq_ignore_ascii_case(want))
        });
        if !has_all {
            continue;
        }
        out.push(match kind {
            DomainKind::Full => DomainPattern::Full(value),
            DomainKind::Domain => DomainPattern::Domain(value),
            DomainKind::Plain => DomainPattern::Substring(value),
            DomainKind::Regex => {
                check_regex(context.rule, &value)?;
                DomainPattern::Regex(value)
            }
        });
    }
    Ok(())
}

/// A fast non-cryptographic hash (the Fx hash of rustc) for the pattern
/// tables. Keys come from the config; lookups with hostile domains only
/// probe, so collision attacks cannot grow the tables.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = 0u64;
        for (index, byte) in chunks.remainder().iter().enumerate() {
            tail |= u64::from(*byte) << (8 * index);
        }
        self.add(tail);
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Regex prefixes shorter than this pick too many regexes to be worth a
/// prefilter entry; such regexes run on every lookup.
const MIN_PREFIX: usize = 2;

/// At most this many prefix literals per regex (`(a|b|c)x` has three).
const MAX_PREFIXES: usize = 32;

/// Rule indices of each distinct pattern: `rules[starts[p]..starts[p+1]]`.
#[derive(Default)]
struct RuleLists {
    starts: Vec<u32>,
    rules: Vec<u32>,
}

impl RuleLists {
    fn from_lists(lists: Vec<Vec<u32>>) -> RuleLists {
        let mut starts = Vec::with_capacity(lists.len() + 1);
        let mut rules = Vec::new();
        for list in lists {
            starts.push(rules.len() as u32);
            rules.extend(list);
        }
        starts.push(rules.len() as u32);
        RuleLists { starts, rules }
    }

    fn get(&self, pattern: usize) -> &[u32] {
        let start = self.starts[pattern] as usize;
        let end = self.starts[pattern + 1] as usize;
        &self.rules[start..end]
    }
}

/// Collects patterns of many rules, then builds the index.
#[derive(Default)]
pub struct DomainIndexBuilder {
    full: FxMap<Box<str>, Vec<u32>>,
    domain: FxMap<Box<str>, Vec<u32>>,
    substring: Vec<(String, Vec<u32>)>,
    substring_ids: FxMap<String, usize>,
    regex: Vec<(String, Vec<u32>)>,
    regex_ids: FxMap<String, usize>,
}

fn add_rule(list: &mut Vec<u32>, rule: u32) {
    if list.last() != Some(&rule) {
        list.push(rule);
    }
}

impl DomainIndexBuilder {
    /// Adds a pattern of rule `rule`; rules must be added in ascending order.
    pub fn add(&mut self, rule: u32, pattern: DomainPattern) {
        match pattern {
            DomainPattern::Full(text) => add_rule(self.full.entry(text.into()).or_default(), rule),
            DomainPattern::Domain(text) => {
                add_rule(self.domain.entry(text.into()).or_default(), rule)
            }
            DomainPattern::Substring(text) => {
                let next = self.substring.len();
                let id = *self.substring_ids.entry(text.clone()).or_insert(next);
                if id == next {
                    self.substring.push((text, Vec::new()));
                }
                add_rule(&mut self.substring[id].1, rule);
            }
            DomainPattern::Regex(text) => {
                let next = self.regex.len();
                let id = *self.regex_ids.entry(text.clone()).or_insert(next);
                if id == next {
                    self.regex.push((text, Vec::new()));
                }
                add_rule(&mut self.regex[id].1, rule);
            }
        }
    }

    /// Compiles the automata. Fails only if a regex that parsed does not
    /// compile (size limits): the error names its first rule.
    pub fn build(self) -> Result<DomainIndex, RoutingError> {
        let substrings = if self.substring.is_empty() {
            None
        } else {
            let patterns: Vec<&str> = self
                .substring
                .iter()
                .map(|(text, _)| text.as_str())
                .collect();
            let automaton = AhoCorasick::builder().build(&patterns).map_err(|error| {
                RoutingError::BadRegexp {
                    rule: self.substring[0].1.first().copied().unwrap_or_default() as usize,
                    value: patterns[0].to_owned(),
                    reason: error.to_string(),
                }
            })?;
            let lists = self.substring.into_iter().map(|(_, rules)| rules).collect();
            Some((automaton, RuleLists::from_lists(lists)))
        };
        let regexes = RegexIndex::new(self.regex)?;
        Ok(DomainIndex {
            full: self.full,
            domain: self.domain,
            substrings,
            regexes,
        })
    }
}

/// One regex, compiled for short haystacks: no DFA (domains are short,
/// and thousands of lazy DFA caches would cost memory), a bounded
/// backtracker or PikeVM instead.
fn build_regex(pattern: &str) -> Result<meta::Regex, String> {
    let config = meta::Config::new()
        .utf8_empty(true)
        .which_captures(regex_automata::nfa::thompson::WhichCaptures::None)
        .hybrid(false)
        .dfa(false);
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new().utf8(true))
        .build(pattern)
        .map_err(|error| error.to_string())
}

/// The literals every match of `pattern` starts with, when there are few
/// and none is shorter than [`MIN_PREFIX`].
fn prefixes(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    if literals.is_empty() || literals.len() > MAX_PREFIXES || seq.min_literal_len()? < MIN_PREFIX {
        return None;
    }
    Some(
        literals
            .iter()
            .map(|literal| literal.as_bytes().to_vec())
            .collect(),
    )
}

/// Every distinct regex of every rule, with a prefix prefilter.
struct RegexIndex {
    regexes: Vec<meta::Regex>,
    /// Rules of each regex.
    rules: RuleLists,
    /// Prefix literals; a match of literal `l` names regexes `by_prefix.get(l)`.
    prefilter: Option<(AhoCorasick, RuleLists)>,
    /// Regexes without a usable prefix: tried on every lookup.
    always: Vec<u32>,
}

thread_local! {
    /// Regexes a lookup must run; reused so lookups allocate nothing.
    static REGEX_CANDIDATES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl RegexIndex {
    fn new(patterns: Vec<(String, Vec<u32>)>) -> Result<RegexIndex, RoutingError> {
        let mut regexes = Vec::with_capacity(patterns.len());
        let mut literal_ids: FxMap<Vec<u8>, usize> = FxMap::default();
        let mut literal_regexes: Vec<Vec<u32>> = Vec::new();
        let mut always = Vec::new();
        let mut rules = Vec::with_capacity(patterns.len());
        for (id, (pattern, pattern_rules)) in patterns.into_iter().enumerate() {
            let regex = build_regex(&pattern).map_err(|error| RoutingError::BadRegexp {
                rule: pattern_rules.first().copied().unwrap_or_default() as usize,
                value: pattern.clone(),
                reason: error,
            })?;
            match prefixes(&pattern) {
                Some(literals) => {
                    for literal in literals {
                        let next = literal_regexes.len();
                        let literal_id = *literal_ids.entry(literal).or_insert(next);
                        if literal_id == next {
                            literal_regexes.push(Vec::new());
                        }
                        add_rule(&mut literal_regexes[literal_id], id as u32);
                    }
                }
                None => always.push(id as u32),
            }
            regexes.push(regex);
            rules.push(pattern_rules);
        }
        let prefilter = if literal_ids.is_empty() {
            None
        } else {
            let mut literals: Vec<(&Vec<u8>, usize)> =
                literal_ids.iter().map(|(l, id)| (l, *id)).collect();
            literals.sort_unstable_by_key(|(_, id)| *id);
            let automaton = AhoCorasick::builder()
                .build(literals.iter().map(|(literal, _)| literal.as_slice()))
                .map_err(|error| RoutingError::BadRegexp {
                    rule: 0,
                    value: String::new(),
                    reason: error.to_string(),
                })?;
            Some((automaton, RuleLists::from_lists(literal_regexes)))
        };
        Ok(RegexIndex {
            regexes,
            rules: RuleLists::from_lists(rules),
            prefilter,
            always,
        })
    }

    fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    fn matches(&self, domain: &str, out: &mut Vec<u32>) {
        REGEX_CANDIDATES.with(|cell| {
            let mut fresh = Vec::new();
            let mut borrowed = cell.try_borrow_mut();
            let candidates = match borrowed.as_mut() {
                Ok(candidates) => &mut **candidates,
                Err(_) => &mut fresh,
            };
            candidates.clear();
            if let Some((automaton, by_literal)) = &self.prefilter {
                for found in automaton.find_overlapping_iter(domain) {
                    candidates.extend_from_slice(by_literal.get(found.pattern().as_usize()));
                }
                candidates.sort_unstable();
                candidates.dedup();
            }
            for &id in candidates.iter().chain(&self.always) {
                if self.regexes[id as usize].is_match(domain) {
                    out.extend_from_slice(self.rules.get(id as usize));
                }
            }
        });
    }
}

/// Every rule's domain patterns, searchable at once.
pub struct DomainIndex {
    full: FxMap<Box<str>, Vec<u32>>,
    domain: FxMap<Box<str>, Vec<u32>>,
    substrings: Option<(AhoCorasick, RuleLists)>,
    regexes: RegexIndex,
}

impl DomainIndex {
    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
            && self.domain.is_empty()
            && self.substrings.is_none()
            && self.regexes.is_empty()
    }

    /// Pushes onto `out` the index of every rule with a pattern matching
    /// `domain`, unordered and possibly repeated.
    pub fn matches(&self, domain: &str, out: &mut Vec<u32>) {
        if let Some(rules) = self.full.get(domain) {
            out.extend_from_slice(rules);
        }
        if !self.domain.is_empty() {
            let mut suffix = domain;
            loop {
                if let Some(rules) = self.domain.get(suffix) {
                    out.extend_from_slice(rules);
                }
                match suffix.find('.') {
                    Some(dot) => suffix = &suffix[dot + 1..],
                    None => break,
                }
            }
        }
        if let Some((automaton, lists)) = &self.substrings {
            for found in automaton.find_overlapping_iter(domain) {
                out.extend_from_slice(lists.get(found.pattern().as_usize()));
            }
        }
        if !self.regexes.is_empty() {
            self.regexes.matches(domain, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entry: &str) -> Result<Vec<DomainPattern>, RoutingError> {
        let assets = AssetLocator::with_dirs(vec![]);
        let mut cache = AssetCache::default();
        let mut context = ParseContext {
            rule: 7,
            assets: &assets,
            cache: &mut cache,
        };
        let mut out = Vec::new();
        parse_entry(&mut context, entry, &mut out).map(|()| out)
    }

    #[test]
    fn parses_every_prefix() {
        use DomainPattern::*;
        let cases = [
            ("full:a.com", Full("a.com".into())),
            ("domain:a.com", Domain("a.com".into())),
            ("keyword:goo", Substring("goo".into())),
            ("regexp:^a+\\.com$", Regex("^a+\\.com$".into())),
            ("dotless:", Regex("^[^.]*$".into())),
            ("dotless:lo", Regex("^[^.]*lo[^.]*$".into())),
            ("plain", Substring("plain".into())),
            ("", Substring("".into())),
            ("Full:a.com", Substring("Full:a.com".into())),
        ];
        for (entry, want) in cases {
            assert_eq!(parse(entry).unwrap(), vec![want], "{entry}");
        }
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        for prefix in ["full:", "domain:", "keyword:", "regexp:", "geosite:"] {
            let error = parse(prefix).unwrap_err();
            assert!(
                matches!(error, RoutingError::EmptyValue { rule: 7, .. }),
                "{prefix}: {error}"
            );
        }
        let error = parse("regexp:a(").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("rules[7]: invalid regexp \"a(\""),
            "{error}"
        );
        assert!(matches!(
            parse("dotless:a.b").unwrap_err(),
            RoutingError::DotlessWithDot { .. }
        ));
        assert!(matches!(
            parse("ext:onlyfile").unwrap_err(),
            RoutingError::BadExternal { .. }
        ));
        assert!(matches!(
            parse("ext:a:b:c").unwrap_err(),
            RoutingError::BadExternal { .. }
        ));
        let error = parse("geosite:cn").unwrap_err();
        assert!(
            matches!(error, RoutingError::AssetNotFound { rule: 7, .. }),
            "{error}"
        );
    }

    #[test]
    fn single_patterns_follow_v2ray() {
        use DomainPattern::*;
        let cases = [
            (Full("a.com".into()), "a.com", true),
            (Full("a.com".into()), "b.a.com", false),
            (Full("a.com".into()), "A.com", false),
            (Domain("a.com".into()), "a.com", true),
            (Domain("a.com".into()), "b.a.com", true),
            (Domain("a.com".into()), "ba.com", false),
            (Domain("a.com".into()), "a.com.cn", false),
            (Domain("a.com".into()), "x.A.com", false),
            (Substring("oo".into()), "google.com", true),
            (Substring("OO".into()), "google.com", false),
            (Regex("^g.*e\\.com$".into()), "google.com", true),
            (Regex("oo".into()), "google.com", true),
            (Regex("^[^.]*$".into()), "localhost", true),
            (Regex("^[^.]*$".into()), "a.b", false),
        ];
        for (pattern, domain, want) in cases {
            assert_eq!(pattern.matches(domain), want, "{pattern:?} {domain}");
        }
    }

    #[test]
    fn index_agrees_with_single_patterns() {
        use DomainPattern::*;
        let patterns = vec![
            Full("a.com".into()),
            Domain("a.com".into()),
            Domain("com".into()),
            Domain(".com".into()),
            Substring("oo".into()),
            Substring("o".into()),
            Substring("".into()),
            Regex("^www\\.".into()),
            Regex("e\\.c".into()),
            Full("a.com".into()),
        ];
        let mut builder = DomainIndexBuilder::default();
        for (rule, pattern) in patterns.iter().enumerate() {
            builder.add(rule as u32, pattern.clone());
        }
        let index = builder.build().unwrap();
        for domain in [
            "a.com",
            "b.a.com",
            "google.com",
            "www.example.com",
            "x..com",
            "com",
            "local",
            "a.co",
        ] {
            let mut got = Vec::new();
            index.matches(domain, &mut got);
            got.sort_unstable();
            got.dedup();
            let want: Vec<u32> = patterns
                .iter()
                .enumerate()
                .filter(|(_, pattern)| pattern.matches(domain))
                .map(|(rule, _)| rule as u32)
                .collect();
            assert_eq!(got, want, "{domain}");
        }
    }

    #[test]
    fn regex_prefixes_only_when_every_match_starts_with_one() {
        let want = |list: &[&str]| {
            Some(
                list.iter()
                    .map(|l| l.as_bytes().to_vec())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(prefixes("^re1\\.x"), want(&["re1.x"]));
        assert_eq!(prefixes("(ab|cd)e"), want(&["abe", "cde"]));
        assert_eq!(prefixes("a?bc"), want(&["abc", "bc"]));
        assert_eq!(prefixes(".*abc"), None);
        assert_eq!(prefixes("[a-z]+x"), None);
        assert_eq!(prefixes("x*"), None);
        assert_eq!(prefixes("a|bc"), None);
        assert_eq!(prefixes("^[^.]*$"), None);
    }

    #[test]
    fn prefiltered_and_plain_regexes_both_match() {
        let mut builder = DomainIndexBuilder::default();
        for rule in 0..200u32 {
            builder.add(rule, DomainPattern::Regex(format!("^r{rule}\\.")));
        }
        builder.add(200, DomainPattern::Regex("[0-9]{3}\\.example$".into()));
        builder.add(201, DomainPattern::Regex("(?i)R15".into()));
        let index = builder.build().unwrap();
        assert!(index.regexes.always.contains(&200));
        let mut got = Vec::new();
        index.matches("r150.example", &mut got);
        got.sort_unstable();
        assert_eq!(got, vec![150, 200, 201]);
    }
}
