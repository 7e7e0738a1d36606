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
//!
//! This file merges and reads the top level (unsupported services such as
//! `api` included; `dns` is `crate::dns`); each top-level object Rayback keeps has a file
//! of its own (`log`, `policy`, `reverse`, `rayback`), and `cross_check`
//! adds the warnings that need the whole configuration.

mod cross_check;
mod log;
mod policy;
mod rayback;
mod reverse;

use crate::dialect::Node;
use crate::dns::build_dns;
use crate::error::{ConfigError, Warning, WarningKind};
use crate::handlers::{build_inbound, build_outbound};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};
use crate::routing::build_routing;

use self::cross_check::{cross_check, CrossOrigins};
use self::log::build_log;
use self::policy::build_policy;
use self::rayback::build_rayback;
use self::reverse::build_reverse;

/// A parsed source: its name and tree.
pub(crate) struct Document {
    pub name: String,
    pub root: Node,
}

/// A piece of one document: the node, which document, and its JSON path.
#[derive(Clone)]
struct Piece<'d> {
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
    let dns = match &merged.dns {
        Some(piece) => Some(build_dns(
            &mut Cx {
                file: name(piece),
                warnings,
            },
            piece.node,
            &piece.path,
        )?),
        None => None,
    };
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
        None => (RoutingSettings::default(), Vec::new()),
    };

    let config = Config {
        log,
        inbounds,
        outbounds,
        routing,
        dns,
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
