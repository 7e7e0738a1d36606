//! The top-level `rayback` object, Rayback's own keys that V2Ray ignores:
//! the `/metrics` listen address, `noBridgeWait`, `workers` and `limits`,
//! each checked against its bounds.
//!
//! Only the object is read here, from the piece `build`'s `mod.rs` kept
//! after merging; the defaults are the model's `RaybackExtras`.

use std::time::Duration;

use crate::error::ConfigError;
use crate::model::*;
use crate::reader::Cx;

use super::Piece;

const LIMIT_KEYS: &[&str] = &[
    "streamsPerConnection",
    "connectionsPerBridge",
    "unauthenticatedPerSource",
    "streamStallTimeout",
    "streamBuffer",
];

pub(super) fn build_rayback(
    cx: &mut Cx<'_>,
    piece: &Piece<'_>,
) -> Result<RaybackExtras, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(cx, &["metrics", "noBridgeWait", "workers", "limits"]);
    let mut extras = RaybackExtras::default();
    if let Some(node) = object.get("metrics") {
        let path = object.at("metrics");
        let text = cx.string(node, &path)?;
        extras.metrics = Some(text.parse().map_err(|_| {
            cx.invalid(&path, format!("{text:?} is not an IP:port listen address"))
        })?);
    }
    if let Some(node) = object.get("noBridgeWait") {
        extras.no_bridge_wait =
            Duration::from_millis(u64::from(cx.u32(node, &object.at("noBridgeWait"))?));
    }
    if let Some(node) = object.get("workers") {
        extras.workers = cx.integer(node, &object.at("workers"), 0, 1024)? as u32;
    }
    if let Some(node) = object.get("limits") {
        let path = object.at("limits");
        let limits = cx.object(node, &path)?;
        limits.warn_unknown(cx, LIMIT_KEYS);
        let value =
            |cx: &Cx<'_>, key: &str, min: i64, max: i64| -> Result<Option<u32>, ConfigError> {
                match limits.get(key) {
                    Some(node) => Ok(Some(cx.integer(node, &limits.at(key), min, max)? as u32)),
                    None => Ok(None),
                }
            };
        let target = &mut extras.limits;
        if let Some(count) = value(cx, "streamsPerConnection", 1, 65535)? {
            target.streams_per_connection = count;
        }
        if let Some(count) = value(cx, "connectionsPerBridge", 1, 65535)? {
            target.connections_per_bridge = count;
        }
        if let Some(count) = value(cx, "unauthenticatedPerSource", 1, i64::from(u32::MAX))? {
            target.unauthenticated_per_source = count;
        }
        // At most 60: a stall keeps the tunnel's TCP window shut, and the
        // tunnel sockets give up after 90 s of that (TCP_USER_TIMEOUT).
        if let Some(seconds) = value(cx, "streamStallTimeout", 1, 60)? {
            target.stream_stall_timeout = Duration::from_secs(u64::from(seconds));
        }
        if let Some(bytes) = value(cx, "streamBuffer", 1024, i64::from(u32::MAX))? {
            target.stream_buffer = bytes;
        }
    }
    Ok(extras)
}
