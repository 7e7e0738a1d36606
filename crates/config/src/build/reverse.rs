//! The top-level `reverse` object: `bridges` and `portals`, with a portal's
//! Rayback-only `controlDomain`.
//!
//! Only each entry's own fields are checked here, from the piece `build`'s
//! `mod.rs` kept after merging; duplicate tags, portals that shadow an
//! outbound and a bridge's routing need the whole configuration and are
//! `cross_check`'s warnings.

use crate::error::ConfigError;
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

use super::Piece;

pub(super) fn build_reverse(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Reverse, ConfigError> {
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
