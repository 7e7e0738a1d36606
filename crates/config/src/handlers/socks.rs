//! The `settings` of a `socks` inbound (`auth`, `accounts`, `udp`, `ip`,
//! `timeout`, `userLevel`), read as V2Ray 4.34's `SocksServerConfig`:
//! an unknown `auth` means no authentication (4.34 does not refuse it),
//! `ip` is an IP or a domain. Also `accounts`, which the `http` inbound
//! shares. The SOCKS outbound is unsupported (`mod.rs`).

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

use super::{optional_bool, optional_string, optional_u32};
use super::{parse_address, ParsedAddress};

pub(super) fn socks_inbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<SocksInbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(
        cx,
        &["auth", "accounts", "udp", "ip", "timeout", "userLevel"],
    );
    let auth = match optional_string(cx, &object, "auth")? {
        Some(name) => {
            let auth = SocksAuth::parse(&name);
            if auth.v2ray_name() != name {
                cx.warn(
                    WarningKind::Suspicious,
                    &object.at("auth"),
                    format!("unknown socks auth method {name:?}: no authentication"),
                );
            }
            auth
        }
        None => SocksAuth::NoAuth,
    };
    let accounts = accounts(cx, &object)?;
    if auth == SocksAuth::Password && accounts.is_empty() {
        cx.warn(
            WarningKind::Suspicious,
            &object.at("accounts"),
            "password auth with no accounts refuses every client",
        );
    }
    let ip = optional_string(cx, &object, "ip")?.map(|text| match parse_address(&text) {
        ParsedAddress::Ip(ip) => ip.to_string(),
        ParsedAddress::Domain(domain) => domain,
    });
    Ok(SocksInbound {
        auth,
        accounts,
        udp: optional_bool(cx, &object, "udp")?,
        ip,
        timeout: optional_u32(cx, &object, "timeout")?,
        user_level: optional_u32(cx, &object, "userLevel")?,
    })
}

/// `accounts`: `{"user", "pass"}` objects (missing fields are empty, as
/// in 4.34).
pub(super) fn accounts(
    cx: &mut Cx<'_>,
    object: &Obj<'_>,
) -> Result<Vec<ProxyAccount>, ConfigError> {
    let Some(node) = object.get("accounts") else {
        return Ok(Vec::new());
    };
    let accounts_path = object.at("accounts");
    let mut accounts = Vec::new();
    for (index, item) in cx.array(node, &accounts_path)?.iter().enumerate() {
        let account = cx.object(item, &index_path(&accounts_path, index))?;
        account.warn_unknown(cx, &["user", "pass"]);
        accounts.push(ProxyAccount {
            user: optional_string(cx, &account, "user")?.unwrap_or_default(),
            pass: optional_string(cx, &account, "pass")?.unwrap_or_default(),
        });
    }
    Ok(accounts)
}
