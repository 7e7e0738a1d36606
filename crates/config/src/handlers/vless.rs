//! The `settings` of a `vless` inbound (`clients`, `decryption`, and the
//! refused `fallback`/`fallbacks`) and a `vless` outbound (`vnext` servers
//! and their users), read as 4.34's `infra/conf/vless.go` reads them.
//!
//! | setting | 4.34 | Rayback |
//! |---|---|---|
//! | inbound `decryption` | must be `"none"` | same |
//! | inbound client `encryption` | must be absent or empty | same |
//! | outbound user `encryption` | must be `"none"` | same |
//! | `flow` | any string, ignored (v2fly 4.34 has no flows) | same, with a warning |
//! | `fallback` | refused ("use fallbacks") | same |
//! | `fallbacks` | served, by `alpn` and `path` | served by `path`; `alpn`, abstract Unix sockets and `serve-ws-none` refused as not supported |
//! | user `id` | `uuid.ParseString` | same (VMess's lenient reader) |
//! | duplicate `email` | refused (case-insensitive) | same |
//!
//! Nothing here speaks VLESS: that is the `vless` crate.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

use super::vmess::parse_go_uuid;
use super::vnext;
use super::{optional_string, optional_u32};

const VLESS_USER_KEYS: &[&str] = &["id", "flow", "encryption", "level", "email"];

pub(super) fn vless_inbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<VlessInbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["clients", "decryption", "fallback", "fallbacks"]);
    let mut clients: Vec<VlessClient> = Vec::new();
    if let Some(node) = object.get("clients") {
        let clients_path = object.at("clients");
        for (index, item) in cx.array(node, &clients_path)?.iter().enumerate() {
            let client_path = index_path(&clients_path, index);
            let client = cx.object(item, &client_path)?;
            let user = vless_user(cx, &client)?;
            let encryption = optional_string(cx, &client, "encryption")?.unwrap_or_default();
            if !encryption.is_empty() {
                return Err(cx.invalid(
                    &client.at("encryption"),
                    "\"encryption\" does not belong in a VLESS inbound's clients (use \"decryption\" in settings)",
                ));
            }
            if let Some(email) = &user.email {
                let earlier = clients.iter().position(|other| {
                    other
                        .email
                        .as_deref()
                        .is_some_and(|other| other.eq_ignore_ascii_case(email))
                });
                if let Some(earlier) = earlier {
                    return Err(cx.invalid(
                        &client.at("email"),
                        format!(
                            "user {email:?} already exists (clients[{earlier}] has the same email)"
                        ),
                    ));
                }
            }
            clients.push(user);
        }
    }
    let decryption = optional_string(cx, &object, "decryption")?;
    if decryption.as_deref() != Some("none") {
        return Err(cx.invalid(
            &object.at("decryption"),
            format!(
                "a VLESS inbound needs \"decryption\": \"none\" (found {})",
                decryption.map_or_else(|| "nothing".to_owned(), |text| format!("{text:?}"))
            ),
        ));
    }
    if object.get("fallback").is_some() {
        return Err(cx.invalid(
            &object.at("fallback"),
            "use \"fallbacks\": [{}] instead of \"fallback\": {}",
        ));
    }
    let mut fallbacks = Vec::new();
    if let Some(node) = object.get("fallbacks") {
        let fallbacks_path = object.at("fallbacks");
        for (index, item) in cx.array(node, &fallbacks_path)?.iter().enumerate() {
            fallbacks.push(fallback(cx, item, &index_path(&fallbacks_path, index))?);
        }
    }
    if clients.is_empty() {
        cx.warn(
            WarningKind::Suspicious,
            &object.at("clients"),
            "this VLESS inbound has no clients and will refuse every connection",
        );
    }
    Ok(VlessInbound { clients, fallbacks })
}

/// One `fallbacks` entry, read as 4.34 reads it: `dest` a port number
/// (then on 127.0.0.1), `host:port`, or a Unix socket path; `path` empty
/// or starting with `/`; `xver` 0, 1 or 2.
fn fallback(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<VlessFallback, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["alpn", "path", "type", "dest", "xver"]);
    let alpn = optional_string(cx, &object, "alpn")?.unwrap_or_default();
    if !alpn.is_empty() {
        return Err(cx.unsupported(
            &object.at("alpn"),
            "VLESS fallbacks chosen by alpn",
            "keep fallbacks by path and a default one",
        ));
    }
    let http_path = optional_string(cx, &object, "path")?.unwrap_or_default();
    if !http_path.is_empty() && !http_path.starts_with('/') {
        return Err(cx.invalid(
            &object.at("path"),
            format!("a fallback's path must be empty or start with \"/\" (found {http_path:?})"),
        ));
    }
    let dest_path = object.at("dest");
    let dest_text = match object.get("dest") {
        None | Some(Node::Null) => String::new(),
        Some(node @ Node::String(_)) => cx.string(node, &dest_path)?,
        Some(node) => cx.u16(node, &dest_path)?.to_string(),
    };
    let kind = optional_string(cx, &object, "type")?.unwrap_or_default();
    let dest = match kind.as_str() {
        "" => fallback_dest(cx, &dest_text, &dest_path)?,
        "tcp" | "tcp4" | "tcp6" if !dest_text.is_empty() => VlessFallbackDest::Tcp(dest_text),
        "unix" if !dest_text.is_empty() => VlessFallbackDest::Unix(dest_text),
        "tcp" | "tcp4" | "tcp6" | "unix" => {
            return Err(cx.invalid(
                &dest_path,
                "please fill in a valid value for every \"dest\"",
            ))
        }
        other => {
            return Err(cx.unsupported(
                &object.at("type"),
                format!("VLESS fallback type {other:?}"),
                "use tcp or unix",
            ))
        }
    };
    let xver = match object.get("xver") {
        Some(node) => cx.u32(node, &object.at("xver"))?,
        None => 0,
    };
    if xver > 2 {
        return Err(cx.invalid(
            &object.at("xver"),
            format!("invalid PROXY protocol version {xver}: xver only accepts 0, 1, 2"),
        ));
    }
    Ok(VlessFallback {
        path: http_path,
        dest,
        xver: xver as u8,
    })
}

/// A `dest` without `type`: a port, `host:port` or a Unix socket path.
fn fallback_dest(cx: &Cx<'_>, text: &str, path: &str) -> Result<VlessFallbackDest, ConfigError> {
    if text == "serve-ws-none" {
        return Err(cx.unsupported(path, "VLESS fallback \"serve-ws-none\"", ""));
    }
    if text.starts_with('@') {
        return Err(cx.unsupported(path, "abstract Unix sockets as VLESS fallbacks", ""));
    }
    if text.starts_with('/') {
        return Ok(VlessFallbackDest::Unix(text.to_owned()));
    }
    let host_port = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{text}")
    } else {
        text.to_owned()
    };
    match rayback_core::Destination::parse_host_port(rayback_core::Network::Tcp, &host_port) {
        Ok(_) => Ok(VlessFallbackDest::Tcp(host_port)),
        Err(_) => Err(cx.invalid(
            path,
            format!("please fill in a valid value for every \"dest\" (found {text:?})"),
        )),
    }
}

pub(super) fn vless_outbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<VlessOutbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["vnext"]);
    let vnext = vnext(cx, &object, "VLESS", |cx, user| {
        let parsed = vless_user(cx, user)?;
        let encryption = optional_string(cx, user, "encryption")?;
        if encryption.as_deref() != Some("none") {
            return Err(cx.invalid(
                &user.at("encryption"),
                format!(
                    "every VLESS user needs \"encryption\": \"none\" (found {})",
                    encryption.map_or_else(|| "nothing".to_owned(), |text| format!("{text:?}"))
                ),
            ));
        }
        Ok(parsed)
    })?
    .into_iter()
    .map(|entry| VlessServer {
        address: entry.address,
        port: entry.port,
        users: entry.users,
    })
    .collect();
    Ok(VlessOutbound { vnext })
}

/// A VLESS user's `id`, `level` and `email` (`flow` is read and ignored).
fn vless_user(cx: &mut Cx<'_>, user: &Obj<'_>) -> Result<VlessClient, ConfigError> {
    user.warn_unknown(cx, VLESS_USER_KEYS);
    let path = user.at("id");
    let text = match user.get("id") {
        Some(node) => cx.string(node, &path)?,
        None => return Err(cx.invalid(&path, "id is missing: a VLESS user needs a UUID")),
    };
    let Some((id, rest)) = parse_go_uuid(&text) else {
        return Err(cx.invalid(&path, format!("{text:?} is not a UUID")));
    };
    if !rest.is_empty() {
        cx.warn(
            WarningKind::Suspicious,
            &path,
            format!("text after the UUID is ignored: {rest:?}"),
        );
    }
    let flow = optional_string(cx, user, "flow")?.unwrap_or_default();
    if !flow.is_empty() {
        // 4.34's JSON has no `flow`: it reads the key as unknown and sends
        // empty addons. Load the config as it does, and say so.
        cx.warn(
            WarningKind::Ignored,
            &user.at("flow"),
            format!(
                "VLESS flow {flow:?} is ignored, as V2Ray 4.34 ignores it (its VLESS has no flows)"
            ),
        );
    }
    Ok(VlessClient {
        id: VmessId(id),
        level: optional_u32(cx, user, "level")?,
        email: optional_string(cx, user, "email")?.filter(|email| !email.is_empty()),
    })
}
