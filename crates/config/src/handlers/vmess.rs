//! The `settings` of a `vmess` inbound (`clients`, `default`, no `detour`)
//! and a `vmess` outbound (`vnext` servers and their users), and the user
//! `id` both share, read with V2Ray's lenient UUID rules.
//!
//! Only the settings objects are read here; the inbound or outbound object
//! around them is `handlers`'s `mod.rs`, which dispatches here on the
//! protocol name. Nothing here speaks VMess: that is the `vmess` crate.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

use super::vnext;
use super::{optional_bool, optional_string, optional_u16, optional_u32};

const VMESS_USER_KEYS: &[&str] = &["id", "alterId", "security", "level", "email"];

pub(super) fn vmess_inbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<VmessInbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(
        cx,
        &[
            "clients",
            "features",
            "default",
            "detour",
            "disableInsecureEncryption",
        ],
    );
    if object.get("detour").is_some() {
        return Err(cx.unsupported(&object.at("detour"), "VMess detour (dynamic ports)", ""));
    }
    if let Some(node) = object.get("features") {
        let features = cx.object(node, &object.at("features"))?;
        features.warn_unknown(cx, &["detour"]);
        if features.get("detour").is_some() {
            return Err(cx.unsupported(&features.at("detour"), "VMess detour (dynamic ports)", ""));
        }
    }
    let default = match object.get("default") {
        Some(node) => {
            let default = cx.object(node, &object.at("default"))?;
            default.warn_unknown(cx, &["alterId", "level"]);
            let level = match default.get("level") {
                Some(node) => cx.u8(node, &default.at("level"))?,
                None => 0,
            };
            Some(VmessDefault {
                alter_id: optional_u16(cx, &default, "alterId")?,
                level,
            })
        }
        None => None,
    };
    let mut clients = Vec::new();
    if let Some(node) = object.get("clients") {
        let clients_path = object.at("clients");
        for (index, item) in cx.array(node, &clients_path)?.iter().enumerate() {
            let client_path = index_path(&clients_path, index);
            let client = cx.object(item, &client_path)?;
            client.warn_unknown(cx, VMESS_USER_KEYS);
            let id = vmess_id(cx, &client)?;
            let email = optional_string(cx, &client, "email")?.filter(|email| !email.is_empty());
            if let Some(email) = &email {
                let earlier = clients.iter().position(|other: &VmessClient| {
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
            // `security` of an inbound client is parsed by V2Ray and unused.
            optional_string(cx, &client, "security")?;
            clients.push(VmessClient {
                id,
                level: optional_u32(cx, &client, "level")?,
                alter_id: optional_u16(cx, &client, "alterId")?,
                email,
            });
        }
    }
    if clients.is_empty() {
        cx.warn(
            WarningKind::Suspicious,
            &object.at("clients"),
            "this VMess inbound has no clients and will refuse every connection",
        );
    }
    Ok(VmessInbound {
        clients,
        default,
        disable_insecure_encryption: optional_bool(cx, &object, "disableInsecureEncryption")?,
    })
}

/// The required `id` of a VMess user, read as V2Ray's `uuid.ParseString`
/// does: 32 hex digits in groups of 8-4-4-4-12, a dash allowed before each
/// group; anything after the last group is ignored (with a warning).
fn vmess_id(cx: &mut Cx<'_>, user: &Obj<'_>) -> Result<VmessId, ConfigError> {
    let path = user.at("id");
    let text = match user.get("id") {
        Some(node) => cx.string(node, &path)?,
        None => return Err(cx.invalid(&path, "id is missing: a VMess user needs a UUID")),
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
    Ok(VmessId(id))
}

/// V2Ray's lenient UUID parser; returns the ID and the ignored rest.
pub(super) fn parse_go_uuid(text: &str) -> Option<(uuid::Uuid, &str)> {
    if text.len() < 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut rest = text.as_bytes();
    let mut out = 0;
    for group in [8usize, 4, 4, 4, 12] {
        if rest.first() == Some(&b'-') {
            rest = &rest[1..];
        }
        if rest.len() < group {
            return None;
        }
        for pair in rest[..group].chunks(2) {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            bytes[out] = (high * 16 + low) as u8;
            out += 1;
        }
        rest = &rest[group..];
    }
    let consumed = text.len() - rest.len();
    Some((
        uuid::Uuid::from_bytes(bytes),
        text.get(consumed..).unwrap_or(""),
    ))
}

pub(super) fn vmess_outbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<VmessOutbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["vnext"]);
    let vnext = vnext(cx, &object, "VMess", |cx, user| {
        user.warn_unknown(cx, VMESS_USER_KEYS);
        let id = vmess_id(cx, user)?;
        let security_text = optional_string(cx, user, "security")?.unwrap_or_default();
        let security = match VmessSecurity::parse(&security_text) {
            Some(security) => security,
            None => {
                cx.warn(
                    WarningKind::VmessSecurity,
                    &user.at("security"),
                    format!(
                        "unknown security {security_text:?} means \"auto\" (known: aes-128-gcm, chacha20-poly1305, none, auto)"
                    ),
                );
                VmessSecurity::Auto
            }
        };
        Ok(VmessUser {
            id,
            alter_id: optional_u16(cx, user, "alterId")?,
            security,
            level: optional_u32(cx, user, "level")?,
            email: optional_string(cx, user, "email")?.filter(|email| !email.is_empty()),
        })
    })?
    .into_iter()
    .map(|entry| VmessServer {
        address: entry.address,
        port: entry.port,
        users: entry.users,
    })
    .collect();
    Ok(VmessOutbound { vnext })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_uuid_rules() {
        let canonical = "27848739-7e62-4138-9fd3-098a63964b6b";
        let (id, rest) = parse_go_uuid(canonical).expect("canonical");
        assert_eq!(id.hyphenated().to_string(), canonical);
        assert_eq!(rest, "");
        let (simple, _) = parse_go_uuid("278487397e6241389fd3098a63964b6b").expect("no dashes");
        assert_eq!(simple, id);
        let (upper, _) = parse_go_uuid("27848739-7E62-4138-9FD3-098A63964B6B").expect("upper case");
        assert_eq!(upper, id);
        let (_, rest) = parse_go_uuid("27848739-7e62-4138-9fd3-098a63964b6bxyz").expect("trailing");
        assert_eq!(rest, "xyz");
        assert!(parse_go_uuid("not-a-uuid").is_none());
        assert!(parse_go_uuid("27848739-7e62-4138-9fd3-098a63964b6").is_none());
        assert!(parse_go_uuid("g7848739-7e62-4138-9fd3-098a63964b6b").is_none());
        assert!(parse_go_uuid("{27848739-7e62-4138-9fd3-098a63964b6b}").is_none());
        assert!(parse_go_uuid("--------------------------------------").is_none());
        assert!(parse_go_uuid("é7848739-7e62-4138-9fd3-098a63964b6bé").is_none());
    }
}
