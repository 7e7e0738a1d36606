//! The `settings` of an `http` inbound (`timeout`, `accounts`,
//! `allowTransparent`, `userLevel`), read as V2Ray 4.34's
//! `HTTPServerConfig`. The HTTP outbound is unsupported (`mod.rs`).

use crate::dialect::Node;
use crate::error::ConfigError;
use crate::model::*;
use crate::reader::Cx;

use super::socks::accounts;
use super::{optional_bool, optional_u32};

pub(super) fn http_inbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<HttpInbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(
        cx,
        &["timeout", "accounts", "allowTransparent", "userLevel"],
    );
    Ok(HttpInbound {
        timeout: optional_u32(cx, &object, "timeout")?,
        accounts: accounts(cx, &object)?,
        allow_transparent: optional_bool(cx, &object, "allowTransparent")?,
        user_level: optional_u32(cx, &object, "userLevel")?,
    })
}
