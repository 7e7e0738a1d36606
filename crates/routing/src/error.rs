//! Why a routing configuration does not compile. Every message names the rule (as
//! `rules[i]`, the index in evaluation order) and the bad value.

use std::fmt;
use std::path::PathBuf;

/// A routing configuration that [`crate::Router::new`] refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    #[error("rules[{rule}]: invalid regexp {value:?}: {reason}")]
    BadRegexp {
        rule: usize,
        value: String,
        reason: String,
    },
    #[error("rules[{rule}]: invalid ip or cidr {value:?}")]
    BadCidr { rule: usize, value: String },
    #[error("rules[{rule}]: invalid port {value:?}")]
    BadPort { rule: usize, value: String },
    #[error("rules[{rule}]: empty value after {prefix:?} in {value:?}")]
    EmptyValue {
        rule: usize,
        prefix: &'static str,
        value: String,
    },
    #[error("rules[{rule}]: substring in dotless rule {value:?} must not contain a dot")]
    DotlessWithDot { rule: usize, value: String },
    #[error("rules[{rule}]: invalid external resource {value:?}, want ext:file:list")]
    BadExternal { rule: usize, value: String },
    #[error("rules[{rule}]: balancer {tag:?} not found")]
    UndefinedBalancer { rule: usize, tag: String },
    #[error("rules[{rule}]: empty outbound or balancer tag")]
    EmptyTarget { rule: usize },
    #[error(
        "rules[{rule}]: {field:?} needs request attributes, which is not supported by Rayback"
    )]
    Unsupported { rule: usize, field: &'static str },
    #[error("rules[{rule}]: this rule has no effective fields")]
    NoEffectiveFields { rule: usize },
    #[error("balancers[{index}]: empty balancer tag")]
    EmptyBalancerTag { index: usize },
    #[error("balancer {tag:?}: empty selector list")]
    EmptySelector { tag: String },
    #[error(
        "rules[{rule}]: asset file {file:?} not found; looked in {}",
        Places(looked_in)
    )]
    AssetNotFound {
        rule: usize,
        file: String,
        looked_in: Vec<PathBuf>,
    },
    #[error("rules[{rule}]: cannot read {}: {reason}", path.display())]
    AssetUnreadable {
        rule: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("rules[{rule}]: {} is not a valid geo data file: {reason}", path.display())]
    BadAssetFile {
        rule: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("rules[{rule}]: list {list:?} not found in {}", path.display())]
    ListNotFound {
        rule: usize,
        path: PathBuf,
        list: String,
    },
}

/// Prints a list of paths as `a, b, c`.
struct Places<'a>(&'a [PathBuf]);

impl fmt::Display for Places<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, path) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}
