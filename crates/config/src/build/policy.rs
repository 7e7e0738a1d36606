//! The top-level `policy` object: per-level timeouts (`handshake`,
//! `connIdle`, `uplinkOnly`, `downlinkOnly`) and `bufferSize`, plus V2Ray's
//! statistics switches, which Rayback ignores with a warning.
//!
//! Only the object is read here, from the piece `build`'s `mod.rs` kept
//! after merging; the defaults are the model's and applying the timeouts
//! is the handlers'.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::Cx;

use super::Piece;

const LEVEL_KEYS: &[&str] = &[
    "handshake",
    "connIdle",
    "uplinkOnly",
    "downlinkOnly",
    "statsUserUplink",
    "statsUserDownlink",
    "bufferSize",
];

const SYSTEM_KEYS: &[&str] = &[
    "statsInboundUplink",
    "statsInboundDownlink",
    "statsOutboundUplink",
    "statsOutboundDownlink",
];

pub(super) fn build_policy(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Policy, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(cx, &["levels", "system"]);
    let mut levels = BTreeMap::new();
    if let Some(node) = object.get("levels") {
        let levels_path = object.at("levels");
        let levels_object = cx.object(node, &levels_path)?;
        for (key, value) in levels_object.entries() {
            let path = format!("{levels_path}.{key:?}");
            let level: u32 = match key.parse() {
                Ok(level) if key.bytes().all(|byte| byte.is_ascii_digit()) => level,
                _ => {
                    return Err(cx.invalid(&path, format!("level {key:?} is not a decimal number")))
                }
            };
            if matches!(value, Node::Null) {
                continue;
            }
            levels.insert(level, build_level(cx, value, &path)?);
        }
    }
    if let Some(node) = object.get("system") {
        let path = object.at("system");
        let system = cx.object(node, &path)?;
        system.warn_unknown(cx, SYSTEM_KEYS);
        for key in SYSTEM_KEYS {
            if let Some(node) = system.get(key) {
                if cx.bool(node, &system.at(key))? {
                    cx.warn(
                        WarningKind::Ignored,
                        &system.at(key),
                        "statistics are ignored: Rayback has /metrics",
                    );
                }
            }
        }
    }
    Ok(Policy { levels })
}

fn build_level(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<LevelPolicy, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, LEVEL_KEYS);
    let mut level = LevelPolicy::default();
    let seconds = |cx: &Cx<'_>, key: &str, slot: &mut Duration| -> Result<(), ConfigError> {
        if let Some(node) = object.get(key) {
            *slot = Duration::from_secs(u64::from(cx.u32(node, &object.at(key))?));
        }
        Ok(())
    };
    seconds(cx, "handshake", &mut level.handshake)?;
    seconds(cx, "connIdle", &mut level.conn_idle)?;
    seconds(cx, "uplinkOnly", &mut level.uplink_only)?;
    seconds(cx, "downlinkOnly", &mut level.downlink_only)?;
    if let Some(node) = object.get("bufferSize") {
        let kib = cx.integer(
            node,
            &object.at("bufferSize"),
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        )?;
        level.buffer_size = match u64::try_from(kib) {
            Ok(kib) => BufferSize::Bytes(kib * 1024),
            Err(_) => BufferSize::Unlimited,
        };
    }
    for key in ["statsUserUplink", "statsUserDownlink"] {
        if let Some(node) = object.get(key) {
            if cx.bool(node, &object.at(key))? {
                cx.warn(
                    WarningKind::Ignored,
                    &object.at(key),
                    "statistics are ignored: Rayback has /metrics",
                );
            }
        }
    }
    Ok(level)
}
