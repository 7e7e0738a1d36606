//! The `settings` of a `freedom` outbound: the domain strategy, the
//! connection timeout, the user level and `redirect` (split like Go's
//! `net.SplitHostPort`).
//!
//! Only the settings object is read here; the outbound object around it is
//! `handlers`'s `mod.rs`, which dispatches here on the protocol name.
//! Resolving and dialing are the `handlers` crate's, not this one's.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::Cx;

use super::{optional_string, optional_u32};

pub(super) fn freedom(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Freedom, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["domainStrategy", "timeout", "redirect", "userLevel"]);
    let strategy = optional_string(cx, &object, "domainStrategy")?.unwrap_or_default();
    let domain_strategy = ResolveStrategy::parse(&strategy).unwrap_or_else(|| {
        cx.warn(
            WarningKind::Suspicious,
            &object.at("domainStrategy"),
            format!("unknown domain strategy {strategy:?} means \"AsIs\" (known: AsIs, UseIP, UseIPv4, UseIPv6)"),
        );
        ResolveStrategy::AsIs
    });
    let timeout = object
        .get("timeout")
        .map(|node| cx.u32(node, &object.at("timeout")))
        .transpose()?;
    let redirect = match optional_string(cx, &object, "redirect")? {
        Some(text) if !text.is_empty() => Some(redirect(cx, &text, &object.at("redirect"))?),
        _ => None,
    };
    Ok(Freedom {
        domain_strategy,
        redirect,
        user_level: optional_u32(cx, &object, "userLevel")?,
        timeout,
    })
}

/// freedom's `redirect`, split like Go's `net.SplitHostPort`.
fn redirect(cx: &Cx<'_>, text: &str, path: &str) -> Result<Redirect, ConfigError> {
    Redirect::parse(text).map_err(|error| cx.invalid(path, error.to_string()))
}
