//! The `settings` of a `blackhole` outbound: its `response` (`none`, or
//! `http` for a 403 before closing).
//!
//! Only the settings object is read here; the outbound object around it is
//! `handlers`'s `mod.rs`, which dispatches here on the protocol name.

use crate::dialect::Node;
use crate::error::ConfigError;
use crate::model::*;
use crate::reader::Cx;

pub(super) fn blackhole(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<Blackhole, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["response"]);
    let response = match object.get("response") {
        None => BlackholeResponse::None,
        Some(node) => {
            let response_path = object.at("response");
            let response = cx.object(node, &response_path)?;
            response.warn_unknown(cx, &["type"]);
            // V2Ray reads `type` with an exact (case-sensitive) map lookup.
            let type_path = response.at("type");
            let name = match response.get_exact("type") {
                Some(node) => cx.string(node, &type_path)?,
                None => {
                    return Err(cx.invalid(
                        &type_path,
                        "response type is missing (\"none\" or \"http\")",
                    ))
                }
            };
            match BlackholeResponse::parse(&name) {
                Some(response) => response,
                None => {
                    return Err(cx.invalid(
                        &type_path,
                        format!("unknown response type {name:?} (known: none, http)"),
                    ))
                }
            }
        }
    };
    Ok(Blackhole { response })
}
