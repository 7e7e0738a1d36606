//! From parsed sources to a validated [`Config`]: V2Ray's multi-file merge,
//! the top-level object, `log`, `policy`, `reverse`, `rayback`, and the
//! cross-checks that only warn.
//!
//! Merging follows V2Ray 4.34 (`Config.Override` in `infra/conf/v2ray.go`)
//! and happens on the raw trees, before any validation, exactly as V2Ray
//! does: a part replaced by a later file is never looked at.
//!
//! | top-level key in a later file | effect on the merged config |
//! |---|---|
//! | `log`, `routing`, `policy`, `reverse`, `dns`, `transport`, `api`, `stats`, `rayback` | replaces the earlier value |
//! | `inbound`, `outbound`, `inboundDetour`, `outboundDetour` (deprecated) | replaces the earlier value |
//! | `inbounds` with exactly one element, base has some | replaces the base inbound with the same tag, else appended |
//! | `outbounds` with exactly one element, base has some | replaces the same tag, else **prepended** (appended if the file name contains `tail`) |
//! | `inbounds` / `outbounds` otherwise (non-empty) | replaces the list |
//! | `port` (deprecated) | only the first file's counts |
//!
//! Inbound and outbound objects are built in `handlers`, routing in
//! `routing`; this module does not know protocols.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::dialect::Node;
use crate::error::{ConfigError, Warning, WarningKind};
use crate::handlers::{build_inbound, build_outbound};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};
use crate::routing::{build_routing, RuleOrigin};

/// A parsed source: its name and tree.
pub(crate) struct Document {
    pub name: String,
    pub root: Node,
}

/// A piece of one document: the node, which document, and its JSON path.
#[derive(Clone)]
pub(crate) struct Piece<'d> {
    pub node: &'d Node,
    pub source: usize,
    pub path: String,
}

/// The raw merged configuration (V2Ray's `conf.Config` after `Override`).
#[derive(Default)]
struct Merged<'d> {
    port: Option<Piece<'d>>,
    log: Option<Piece<'d>>,
    routing: Option<Piece<'d>>,
    dns: Option<Piece<'d>>,
    transport: Option<Piece<'d>>,
    policy: Option<Piece<'d>>,
    api: Option<Piece<'d>>,
    stats: Option<Piece<'d>>,
    reverse: Option<Piece<'d>>,
    rayback: Option<Piece<'d>>,
    inbound: Option<Piece<'d>>,
    outbound: Option<Piece<'d>>,
    inbound_detour: Option<Vec<Piece<'d>>>,
    outbound_detour: Option<Vec<Piece<'d>>>,
    inbounds: Vec<Piece<'d>>,
    outbounds: Vec<Piece<'d>>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "port",
    "inbound",
    "outbound",
    "inboundDetour",
    "outboundDetour",
    "log",
    "routing",
    "dns",
    "inbounds",
    "outbounds",
    "transport",
    "policy",
    "api",
    "stats",
    "reverse",
    "rayback",
];

/// Merges and builds `documents` (in command-line order).
pub(crate) fn build(
    documents: &[Document],
    warnings: &mut Vec<Warning>,
) -> Result<Config, ConfigError> {
    let mut merged = Merged::default();
    for (index, document) in documents.iter().enumerate() {
        let mut cx = Cx {
            file: &document.name,
            warnings,
        };
        let top = cx.object(&document.root, "")?;
        top.warn_unknown(&mut cx, TOP_LEVEL_KEYS);
        override_with(&mut merged, &top, index, &cx, index == 0)?;
    }
    build_merged(documents, &merged, warnings)
}

fn piece<'d>(top: &Obj<'d>, key: &str, source: usize) -> Option<Piece<'d>> {
    top.get(key).map(|node| Piece {
        node,
        source,
        path: top.at(key),
    })
}

fn pieces<'d>(
    cx: &Cx<'_>,
    top: &Obj<'d>,
    key: &str,
    source: usize,
) -> Result<Option<Vec<Piece<'d>>>, ConfigError> {
    let Some(node) = top.get(key) else {
        return Ok(None);
    };
    let path = top.at(key);
    let items = cx.array(node, &path)?;
    Ok(Some(
        items
            .iter()
            .enumerate()
            .map(|(index, node)| Piece {
                node,
                source,
                path: index_path(&path, index),
            })
            .collect(),
    ))
}

/// The raw `tag` of an inbound or outbound object, for merging.
fn raw_tag(cx: &Cx<'_>, piece: &Piece<'_>) -> Result<String, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    match object.get("tag") {
        Some(node) => cx.string(node, &object.at("tag")),
        None => Ok(String::new()),
    }
}

/// V2Ray's `Config.Override`: applies one more file to the merged config.
fn override_with<'d>(
    merged: &mut Merged<'d>,
    top: &Obj<'d>,
    source: usize,
    cx: &Cx<'_>,
    first: bool,
) -> Result<(), ConfigError> {
    if first {
        merged.port = piece(top, "port", source);
    }
    let replace = |slot: &mut Option<Piece<'d>>, key: &str| {
        if let Some(new) = piece(top, key, source) {
            *slot = Some(new);
        }
    };
    replace(&mut merged.log, "log");
    replace(&mut merged.routing, "routing");
    replace(&mut merged.dns, "dns");
    replace(&mut merged.transport, "transport");
    replace(&mut merged.policy, "policy");
    replace(&mut merged.api, "api");
    replace(&mut merged.stats, "stats");
    replace(&mut merged.reverse, "reverse");
    replace(&mut merged.rayback, "rayback");
    replace(&mut merged.inbound, "inbound");
    replace(&mut merged.outbound, "outbound");
    if let Some(list) = pieces(cx, top, "inboundDetour", source)? {
        merged.inbound_detour = Some(list);
    }
    if let Some(list) = pieces(cx, top, "outboundDetour", source)? {
        merged.outbound_detour = Some(list);
    }

    let inbounds = pieces(cx, top, "inbounds", source)?.unwrap_or_default();
    if !inbounds.is_empty() {
        if !merged.inbounds.is_empty() && inbounds.len() == 1 {
            let new = inbounds[0].clone();
            let tag = raw_tag(cx, &new)?;
            match find_tag(cx, &merged.inbounds, &tag)? {
                Some(index) => merged.inbounds[index] = new,
                None => merged.inbounds.push(new),
            }
        } else {
            merged.inbounds = inbounds;
        }
    }

    let outbounds = pieces(cx, top, "outbounds", source)?.unwrap_or_default();
    if !outbounds.is_empty() {
        if !merged.outbounds.is_empty() && outbounds.len() == 1 {
            let new = outbounds[0].clone();
            let tag = raw_tag(cx, &new)?;
            match find_tag(cx, &merged.outbounds, &tag)? {
                Some(index) => merged.outbounds[index] = new,
                None if cx.file.to_lowercase().contains("tail") => merged.outbounds.push(new),
                None => merged.outbounds.insert(0, new),
            }
        } else {
            merged.outbounds = outbounds;
        }
    }
    Ok(())
}

/// Index of the first piece whose raw tag is `tag` (V2Ray compares the
/// strings exactly, empty tags included).
fn find_tag(cx: &Cx<'_>, list: &[Piece<'_>], tag: &str) -> Result<Option<usize>, ConfigError> {
    for (index, piece) in list.iter().enumerate() {
        // A piece from an earlier file is checked in that file's terms only
        // for its tag; a malformed one is reported when it is built.
        let object_tag = match piece.node {
            Node::Object(_) => raw_tag(cx, piece).unwrap_or_default(),
            _ => String::new(),
        };
        if object_tag == tag {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

fn build_merged(
    documents: &[Document],
    merged: &Merged<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Config, ConfigError> {
    let name = |piece: &Piece<'_>| documents[piece.source].name.as_str();
    let first_name = documents
        .first()
        .map_or("", |document| document.name.as_str());

    let log = match &merged.log {
        Some(piece) => build_log(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece,
        )?,
        None => Log::default(),
    };

    // Services V2Ray has and Rayback does not.
    if let Some(piece) = &merged.api {
        let cx = Cx {
            file: name(piece),
            warnings,
        };
        return Err(cx.unsupported(&piece.path, "the api service", "Rayback has /metrics"));
    }
    if let Some(piece) = &merged.dns {
        let mut cx = Cx {
            file: name(piece),
            warnings,
        };
        let object = cx.object(piece.node, &piece.path)?;
        if object.entries().is_empty() {
            cx.warn(
                WarningKind::Ignored,
                &piece.path,
                "an empty dns object is ignored: Rayback uses the system resolver",
            );
        } else {
            return Err(cx.unsupported(
                &piece.path,
                "V2Ray's built-in DNS client",
                "Rayback uses the system resolver",
            ));
        }
    }
    if let Some(piece) = &merged.transport {
        let cx = Cx {
            file: name(piece),
            warnings,
        };
        let object = cx.object(piece.node, &piece.path)?;
        if !object.entries().is_empty() {
            return Err(cx.unsupported(&piece.path, "global transport settings", ""));
        }
    }
    if let Some(piece) = &merged.stats {
        let mut cx = Cx {
            file: name(piece),
            warnings,
        };
        cx.object(piece.node, &piece.path)?;
        cx.warn(
            WarningKind::Ignored,
            &piece.path,
            "V2Ray's statistics counters are ignored: Rayback has /metrics",
        );
    }

    let policy = match &merged.policy {
        Some(piece) => build_policy(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece,
        )?,
        None => Policy::default(),
    };
    let reverse = match &merged.reverse {
        Some(piece) => build_reverse(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece,
        )?,
        None => Reverse::default(),
    };
    let rayback = match &merged.rayback {
        Some(piece) => build_rayback(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece,
        )?,
        None => RaybackExtras::default(),
    };

    // Inbounds: `inbound`, then `inboundDetour`, then `inbounds`.
    let mut inbound_pieces: Vec<&Piece<'_>> = Vec::new();
    inbound_pieces.extend(merged.inbound.iter());
    inbound_pieces.extend(merged.inbound_detour.iter().flatten());
    inbound_pieces.extend(merged.inbounds.iter());
    let fallback_port = match &merged.port {
        Some(piece) => {
            let cx = Cx {
                file: name(piece),
                warnings,
            };
            Some(cx.u16(piece.node, &piece.path)?).filter(|port| *port > 0)
        }
        None => None,
    };
    let mut inbounds = Vec::with_capacity(inbound_pieces.len());
    for (index, piece) in inbound_pieces.iter().enumerate() {
        let mut cx = Cx {
            file: name(piece),
            warnings,
        };
        let port = if index == 0 { fallback_port } else { None };
        inbounds.push(build_inbound(&mut cx, piece.node, &piece.path, port)?);
    }

    let mut outbound_pieces: Vec<&Piece<'_>> = Vec::new();
    outbound_pieces.extend(merged.outbound.iter());
    outbound_pieces.extend(merged.outbound_detour.iter().flatten());
    outbound_pieces.extend(merged.outbounds.iter());
    let mut outbounds = Vec::with_capacity(outbound_pieces.len());
    let mut outbound_origins = Vec::with_capacity(outbound_pieces.len());
    for piece in &outbound_pieces {
        let mut cx = Cx {
            file: name(piece),
            warnings,
        };
        outbounds.push(build_outbound(&mut cx, piece.node, &piece.path)?);
        outbound_origins.push((name(piece), piece.path.as_str()));
    }

    let (routing, rule_origins) = match &merged.routing {
        Some(piece) => build_routing(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece.node,
            &piece.path,
        )?,
        None => (Routing::default(), Vec::new()),
    };

    let config = Config {
        log,
        inbounds,
        outbounds,
        routing,
        reverse,
        policy,
        rayback,
    };
    let reverse_file = merged
        .reverse
        .as_ref()
        .map_or(first_name, |piece| name(piece));
    let reverse_path = merged
        .reverse
        .as_ref()
        .map_or("reverse", |piece| piece.path.as_str());
    cross_check(
        &config,
        &CrossOrigins {
            outbounds: &outbound_origins,
            rules: &rule_origins,
            reverse_file,
            reverse_path,
            routing_file: merged
                .routing
                .as_ref()
                .map_or(first_name, |piece| name(piece)),
        },
        warnings,
    );
    Ok(config)
}

// ---------------------------------------------------------------- log

fn build_log(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Log, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(cx, &["access", "error", "loglevel"]);
    let target = |cx: &Cx<'_>, key: &str| -> Result<LogTarget, ConfigError> {
        let text = match object.get(key) {
            Some(node) => cx.string(node, &object.at(key))?,
            None => String::new(),
        };
        Ok(match text.as_str() {
            "" => LogTarget::Console,
            "none" => LogTarget::None,
            _ => LogTarget::File(text),
        })
    };
    let mut log = Log {
        access: target(cx, "access")?,
        error: target(cx, "error")?,
        level: LogLevel::Warning,
    };
    let level = match object.get("loglevel") {
        Some(node) => cx.string(node, &object.at("loglevel"))?,
        None => String::new(),
    };
    log.level = match level.to_ascii_lowercase().as_str() {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "error" => LogLevel::Error,
        "warning" | "" => LogLevel::Warning,
        "none" => {
            log.access = LogTarget::None;
            log.error = LogTarget::None;
            LogLevel::None
        }
        _ => {
            cx.warn(
                WarningKind::Suspicious,
                &object.at("loglevel"),
                format!("unknown log level {level:?} means \"warning\" (known: debug, info, warning, error, none)"),
            );
            LogLevel::Warning
        }
    };
    Ok(log)
}

// ---------------------------------------------------------------- policy

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

fn build_policy(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Policy, ConfigError> {
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

// ---------------------------------------------------------------- reverse

fn build_reverse(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Reverse, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(cx, &["bridges", "portals"]);
    let mut reverse = Reverse::default();
    if let Some(node) = object.get("bridges") {
        let list_path = object.at("bridges");
        for (index, item) in cx.array(node, &list_path)?.iter().enumerate() {
            let path = index_path(&list_path, index);
            let entry = cx.object(item, &path)?;
            entry.warn_unknown(cx, &["tag", "domain"]);
            let tag = required_text(cx, &entry, "tag", "bridge tag is empty")?;
            let domain = required_text(cx, &entry, "domain", "bridge domain is empty")?;
            reverse.bridges.push(Bridge { tag, domain });
        }
    }
    if let Some(node) = object.get("portals") {
        let list_path = object.at("portals");
        for (index, item) in cx.array(node, &list_path)?.iter().enumerate() {
            let path = index_path(&list_path, index);
            let entry = cx.object(item, &path)?;
            entry.warn_unknown(cx, &["tag", "domain", "controlDomain"]);
            let tag = required_text(cx, &entry, "tag", "portal tag is empty")?;
            let domain = required_text(cx, &entry, "domain", "portal domain is empty")?;
            let control_domain = match entry.get("controlDomain") {
                None => ControlDomain::default(),
                Some(node) => {
                    let control_path = entry.at("controlDomain");
                    let text = cx.string(node, &control_path)?;
                    match text.as_str() {
                        ControlDomain::V2RAY_DOMAIN => ControlDomain::V2Ray,
                        ControlDomain::V2FLY_DOMAIN => ControlDomain::V2Fly,
                        _ => {
                            return Err(cx.invalid(
                                &control_path,
                                format!(
                                    "{text:?} is not a control domain (use {:?} for V2Ray up to 4.34 or {:?} for v2fly 4.35 and later)",
                                    ControlDomain::V2RAY_DOMAIN,
                                    ControlDomain::V2FLY_DOMAIN
                                ),
                            ))
                        }
                    }
                }
            };
            reverse.portals.push(Portal {
                tag,
                domain,
                control_domain,
            });
        }
    }
    Ok(reverse)
}

/// A string that must be present and non-empty.
fn required_text(
    cx: &Cx<'_>,
    object: &Obj<'_>,
    key: &str,
    empty: &str,
) -> Result<String, ConfigError> {
    let path = object.at(key);
    let text = match object.get(key) {
        Some(node) => cx.string(node, &path)?,
        None => String::new(),
    };
    if text.is_empty() {
        return Err(cx.invalid(&path, empty));
    }
    Ok(text)
}

// ---------------------------------------------------------------- rayback

const LIMIT_KEYS: &[&str] = &[
    "streamsPerConnection",
    "connectionsPerBridge",
    "unauthenticatedPerSource",
    "streamStallTimeout",
    "streamBuffer",
];

fn build_rayback(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<RaybackExtras, ConfigError> {
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

// ---------------------------------------------------------------- cross-checks

struct CrossOrigins<'a> {
    outbounds: &'a [(&'a str, &'a str)],
    rules: &'a [RuleOrigin],
    reverse_file: &'a str,
    reverse_path: &'a str,
    routing_file: &'a str,
}

fn warning(kind: WarningKind, file: &str, path: &str, message: String) -> Warning {
    Warning {
        kind,
        file: file.to_owned(),
        path: path.to_owned(),
        message,
    }
}

/// Warnings that need the whole configuration: tags, bridge wiring.
fn cross_check(config: &Config, origins: &CrossOrigins<'_>, warnings: &mut Vec<Warning>) {
    let mut outbound_tags: HashMap<&str, usize> = HashMap::new();
    for (index, outbound) in config.outbounds.iter().enumerate() {
        let Some(tag) = outbound.tag.as_deref() else {
            continue;
        };
        if let Some(first) = outbound_tags.insert(tag, index) {
            let (file, path) = origins.outbounds[index];
            warnings.push(warning(
                WarningKind::DuplicateTag,
                file,
                &format!("{path}.tag"),
                format!(
                    "outbound tag {tag:?} is also used by {}; the last one wins",
                    origins.outbounds[first].1
                ),
            ));
        }
    }

    let mut portal_tags = HashSet::new();
    for (index, portal) in config.reverse.portals.iter().enumerate() {
        let path = format!("{}.portals[{index}].tag", origins.reverse_path);
        if !portal_tags.insert(portal.tag.as_str()) {
            warnings.push(warning(
                WarningKind::DuplicateTag,
                origins.reverse_file,
                &path,
                format!("portal tag {:?} is used twice", portal.tag),
            ));
        }
        if outbound_tags.contains_key(portal.tag.as_str()) {
            warnings.push(warning(
                WarningKind::PortalShadowsOutbound,
                origins.reverse_file,
                &path,
                format!(
                    "portal tag {:?} is also an outbound's tag; the portal replaces that outbound",
                    portal.tag
                ),
            ));
        }
    }
    let mut bridge_tags = HashSet::new();
    for (index, bridge) in config.reverse.bridges.iter().enumerate() {
        if !bridge_tags.insert(bridge.tag.as_str()) {
            warnings.push(warning(
                WarningKind::DuplicateTag,
                origins.reverse_file,
                &format!("{}.bridges[{index}].tag", origins.reverse_path),
                format!("bridge tag {:?} is used twice", bridge.tag),
            ));
        }
    }

    for (rule, origin) in config.routing.rules.iter().zip(origins.rules) {
        if let RuleTarget::Outbound(tag) = &rule.target {
            if !outbound_tags.contains_key(tag.as_str()) && !portal_tags.contains(tag.as_str()) {
                warnings.push(warning(
                    WarningKind::UnknownOutboundTag,
                    origins.routing_file,
                    &format!("{}.outboundTag", origin.path),
                    format!(
                        "no outbound or portal has tag {tag:?}; V2Ray sends these connections to the default (first) outbound"
                    ),
                ));
            }
        }
    }

    for (index, bridge) in config.reverse.bridges.iter().enumerate() {
        check_bridge_routing(config, bridge, index, origins, warnings);
    }
}

/// The reverse-proxy guide's bridge wiring: a rule with the bridge's tag in
/// `inboundTag` and `full:<domain>` in `domain` (to the tunnel outbound),
/// before a catch-all rule with the bridge's tag (to the local service).
fn check_bridge_routing(
    config: &Config,
    bridge: &Bridge,
    index: usize,
    origins: &CrossOrigins<'_>,
    warnings: &mut Vec<Warning>,
) {
    let path = format!("{}.bridges[{index}]", origins.reverse_path);
    let tunnel_entries = [
        format!("full:{}", bridge.domain),
        format!("domain:{}", bridge.domain),
    ];
    let has_tag = |rule: &Rule| rule.inbound_tag.contains(&bridge.tag);
    let tunnel_rule = config.routing.rules.iter().position(|rule| {
        has_tag(rule)
            && rule
                .domain
                .iter()
                .any(|entry| tunnel_entries.contains(entry))
    });
    let catch_all = config.routing.rules.iter().position(|rule| {
        has_tag(rule)
            && rule.domain.is_empty()
            && rule.ip.is_empty()
            && rule.port.is_none()
            && rule.network.is_empty()
            && rule.protocol.is_empty()
            && rule.attrs.is_none()
    });
    let advice = format!(
        "add a rule {{inboundTag: [{tag:?}], domain: [\"full:{domain}\"]}} to the outbound that reaches the portal, followed by {{inboundTag: [{tag:?}]}} to the local service",
        tag = bridge.tag,
        domain = bridge.domain
    );
    let problem = match (tunnel_rule, catch_all) {
        (None, _) => Some(format!(
            "no routing rule sends the bridge's own connections (inboundTag {:?}, domain full:{}) to the portal; ",
            bridge.tag, bridge.domain
        )),
        (Some(_), None) => Some(format!(
            "no catch-all rule routes the bridge's sessions (inboundTag {:?}); they go to the default outbound; ",
            bridge.tag
        )),
        (Some(tunnel), Some(catch_all)) if catch_all < tunnel => Some(format!(
            "the catch-all rule for inboundTag {:?} comes before the rule for domain full:{}, so the bridge cannot reach the portal; ",
            bridge.tag, bridge.domain
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        warnings.push(warning(
            WarningKind::BridgeRouting,
            origins.reverse_file,
            &path,
            format!("{problem}{advice}"),
        ));
    }

    // The guide warns against mux on the outbound the tunnel uses.
    if let Some(tunnel) = tunnel_rule {
        if let RuleTarget::Outbound(tag) = &config.routing.rules[tunnel].target {
            if let Some(outbound) = config.outbound(tag) {
                if outbound.mux.is_some_and(|mux| mux.enabled) {
                    warnings.push(warning(
                        WarningKind::Suspicious,
                        origins.routing_file,
                        &format!("{}.outboundTag", origins.rules[tunnel].path),
                        format!("outbound {tag:?} carries a bridge tunnel and has mux enabled; the reverse proxy multiplexes already, so disable mux there"),
                    ));
                }
            }
        }
    }
}
