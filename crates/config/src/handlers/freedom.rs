//! The `settings` of a `freedom` outbound: the domain strategy, the
//! connection timeout, the user level, `redirect` (split like Go's
//! `net.SplitHostPort`) and `proxyProtocol` (Xray's key, which V2Ray 4.34
//! ignores: 0, 1 or 2, any other value refused).
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
    object.warn_unknown(
        cx,
        &[
            "domainStrategy",
            "timeout",
            "redirect",
            "userLevel",
            "proxyProtocol",
        ],
    );
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
    let proxy_protocol = proxy_protocol(
        cx,
        optional_u32(cx, &object, "proxyProtocol")?,
        &object.at("proxyProtocol"),
    )?;
    Ok(Freedom {
        domain_strategy,
        redirect,
        user_level: optional_u32(cx, &object, "userLevel")?,
        timeout,
        proxy_protocol,
    })
}

/// freedom's `proxyProtocol`: 0 (off), 1 or 2.
fn proxy_protocol(cx: &Cx<'_>, version: u32, path: &str) -> Result<ProxyProtocol, ConfigError> {
    ProxyProtocol::from_version(u64::from(version)).ok_or_else(|| {
        cx.invalid(
            path,
            format!("PROXY protocol version {version} is not 0 (off), 1 or 2"),
        )
    })
}

/// freedom's `redirect`, split like Go's `net.SplitHostPort`.
fn redirect(cx: &Cx<'_>, text: &str, path: &str) -> Result<Redirect, ConfigError> {
    Redirect::parse(text).map_err(|error| cx.invalid(path, error.to_string()))
}
