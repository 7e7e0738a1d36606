//! Inbound and outbound objects: the protocols Rayback has (inbounds
//! `dokodemo-door`, `vmess`, `socks`, `http`; outbounds `freedom`,
//! `vmess`, `blackhole`), plus `streamSettings`, `sniffing`, `allocate`, `mux`.
//!
//! Every V2Ray 4.34 setting is either built, rejected as V2Ray rejects it,
//! or rejected as unsupported by Rayback with the field's path; none is
//! dropped silently (settings with no effect produce a warning).
//! Merging and routing are elsewhere (`build`, `routing`).
//!
//! This file reads the object around a protocol (`protocol`, `tag`,
//! `listen`, `port`, `allocate`, `sendThrough`, `proxySettings`) and holds
//! the small readers the others share; `stream` reads `streamSettings`,
//! `sniffing` and `mux`; each protocol's `settings` has a file of its own
//! (`dokodemo`, `vmess`, `freedom`, `blackhole`). A new protocol is a new
//! file, its `mod` line, one arm in [`build_inbound`] or [`build_outbound`],
//! and its name moved from `OTHER_V2RAY_*` to `SUPPORTED_*`.

mod blackhole;
mod dokodemo;
mod freedom;
mod http;
mod socks;
mod stream;
mod vless;
mod vmess;

use std::net::{IpAddr, Ipv4Addr};

use crate::dialect::Node;
use crate::error::ConfigError;
use crate::model::*;
use crate::reader::{index_path, parse_port_range_text, Cx, Obj};

use self::stream::{mux, sniff_protocols, sniffing, stream_settings, Direction};

const SUPPORTED_INBOUNDS: &str = "dokodemo-door, vmess, vless, socks, http";
const SUPPORTED_OUTBOUNDS: &str = "freedom, vmess, blackhole, vless";
/// Inbound protocols V2Ray 4.34 has and Rayback does not.
const OTHER_V2RAY_INBOUNDS: &[&str] = &["shadowsocks", "trojan", "mtproto"];
/// Outbound protocols V2Ray 4.34 has and Rayback does not.
const OTHER_V2RAY_OUTBOUNDS: &[&str] =
    &["http", "shadowsocks", "socks", "trojan", "mtproto", "dns"];

const INBOUND_KEYS: &[&str] = &[
    "protocol",
    "port",
    "listen",
    "settings",
    "tag",
    "allocate",
    "streamSettings",
    "domainOverride",
    "sniffing",
];

const OUTBOUND_KEYS: &[&str] = &[
    "protocol",
    "sendThrough",
    "tag",
    "settings",
    "streamSettings",
    "proxySettings",
    "mux",
];

/// Builds one inbound object. `fallback_port` is the deprecated top-level
/// `port`, which fills the first inbound's port when it has none.
pub(crate) fn build_inbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    fallback_port: Option<u16>,
) -> Result<Inbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, INBOUND_KEYS);
    let tag = optional_string(cx, &object, "tag")?
        .filter(|tag| !tag.is_empty())
        .map(|tag| Tag::new(&tag));

    let port_node = object.get("port");
    let port = match port_node {
        Some(node) => Some(inbound_port(cx, node, &object.at("port"))?),
        None => fallback_port.map(|port| {
            InboundPort::Range(PortRange {
                from: port,
                to: port,
            })
        }),
    };
    let listen = match object.get("listen") {
        Some(node) => Some(listen_address(cx, node, &object.at("listen"))?),
        None => None,
    };
    let Some(port) = port else {
        let message = match listen {
            Some(address) => format!("listening on {address} needs a port"),
            None => "listening on all interfaces needs a port".to_owned(),
        };
        return Err(cx.invalid(&object.at("port"), format!("port is missing: {message}")));
    };

    if let Some(node) = object.get("allocate") {
        allocation(cx, node, &object.at("allocate"))?;
    }
    let stream = match object.get("streamSettings") {
        Some(node) => stream_settings(cx, node, &object.at("streamSettings"), Direction::Inbound)?,
        None => StreamSettings::default(),
    };
    let mut sniffing_settings = match object.get("sniffing") {
        Some(node) => Some(sniffing(cx, node, &object.at("sniffing"))?),
        None => None,
    };
    if let Some(node) = object.get("domainOverride") {
        // The legacy spelling: enabled sniffing with these overrides, unless
        // a `sniffing` object is present, which wins (as in 4.34).
        let override_path = object.at("domainOverride");
        let list = cx.string_list(node, &override_path)?;
        let dest_override = sniff_protocols(cx, &list, &override_path)?;
        if sniffing_settings.is_none() && !dest_override.is_empty() {
            sniffing_settings = Some(Some(Sniffing { dest_override }));
        }
    }

    let protocol = protocol_name(cx, &object)?;
    let settings_path = object.at("settings");
    let empty = Node::Object(Vec::new());
    let settings_node = object.get("settings").unwrap_or(&empty);
    let settings = match protocol.as_str() {
        "dokodemo-door" => {
            InboundSettings::DokodemoDoor(dokodemo::dokodemo(cx, settings_node, &settings_path)?)
        }
        "vmess" => InboundSettings::Vmess(vmess::vmess_inbound(cx, settings_node, &settings_path)?),
        "vless" => InboundSettings::Vless(vless::vless_inbound(cx, settings_node, &settings_path)?),
        "socks" => InboundSettings::Socks(socks::socks_inbound(cx, settings_node, &settings_path)?),
        "http" => InboundSettings::Http(http::http_inbound(cx, settings_node, &settings_path)?),
        other => {
            return Err(unknown_protocol(
                cx,
                &object,
                other,
                OTHER_V2RAY_INBOUNDS,
                SUPPORTED_INBOUNDS,
                "inbound",
            ))
        }
    };

    Ok(Inbound {
        tag,
        listen,
        port,
        stream,
        sniffing: sniffing_settings.flatten(),
        settings,
    })
}

/// Builds one outbound object.
pub(crate) fn build_outbound(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<Outbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, OUTBOUND_KEYS);
    let tag = optional_string(cx, &object, "tag")?
        .filter(|tag| !tag.is_empty())
        .map(|tag| Tag::new(&tag));

    let send_through = match object.get("sendThrough") {
        Some(node) => {
            let through_path = object.at("sendThrough");
            let text = cx.string(node, &through_path)?;
            match parse_address(&text) {
                ParsedAddress::Ip(ip) => Some(ip),
                ParsedAddress::Domain(_) => {
                    return Err(cx.invalid(
                        &through_path,
                        format!("unable to send through {text:?}: not an IP address"),
                    ))
                }
            }
        }
        None => None,
    };
    let stream = match object.get("streamSettings") {
        Some(node) => stream_settings(cx, node, &object.at("streamSettings"), Direction::Outbound)?,
        None => StreamSettings::default(),
    };
    if object.get("proxySettings").is_some() {
        return Err(cx.unsupported(
            &object.at("proxySettings"),
            "dialing through another outbound",
            "",
        ));
    }
    let mux = match object.get("mux") {
        Some(node) => mux(cx, node, &object.at("mux"))?,
        None => None,
    };

    let protocol = protocol_name(cx, &object)?;
    let settings_path = object.at("settings");
    let empty = Node::Object(Vec::new());
    let settings_node = object.get("settings").unwrap_or(&empty);
    let settings = match protocol.as_str() {
        "freedom" => {
            OutboundSettings::Freedom(freedom::freedom(cx, settings_node, &settings_path)?)
        }
        "vmess" => {
            OutboundSettings::Vmess(vmess::vmess_outbound(cx, settings_node, &settings_path)?)
        }
        "vless" => {
            OutboundSettings::Vless(vless::vless_outbound(cx, settings_node, &settings_path)?)
        }
        "blackhole" => {
            OutboundSettings::Blackhole(blackhole::blackhole(cx, settings_node, &settings_path)?)
        }
        other => {
            return Err(unknown_protocol(
                cx,
                &object,
                other,
                OTHER_V2RAY_OUTBOUNDS,
                SUPPORTED_OUTBOUNDS,
                "outbound",
            ))
        }
    };
    Ok(Outbound {
        tag,
        send_through,
        mux,
        stream,
        settings,
    })
}

fn optional_string(
    cx: &Cx<'_>,
    object: &Obj<'_>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    object
        .get(key)
        .map(|node| cx.string(node, &object.at(key)))
        .transpose()
}

fn optional_u32(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<u32, ConfigError> {
    Ok(object
        .get(key)
        .map(|node| cx.u32(node, &object.at(key)))
        .transpose()?
        .unwrap_or(0))
}

fn optional_u16(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<u16, ConfigError> {
    Ok(object
        .get(key)
        .map(|node| cx.u16(node, &object.at(key)))
        .transpose()?
        .unwrap_or(0))
}

fn optional_bool(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<bool, ConfigError> {
    Ok(object
        .get(key)
        .map(|node| cx.bool(node, &object.at(key)))
        .transpose()?
        .unwrap_or(false))
}

/// The lower-cased `protocol`, required.
fn protocol_name(cx: &Cx<'_>, object: &Obj<'_>) -> Result<String, ConfigError> {
    match optional_string(cx, object, "protocol")? {
        Some(name) if !name.is_empty() => Ok(name.to_ascii_lowercase()),
        _ => Err(cx.invalid(&object.at("protocol"), "protocol is missing")),
    }
}

fn unknown_protocol(
    cx: &Cx<'_>,
    object: &Obj<'_>,
    name: &str,
    other_v2ray: &[&str],
    supported: &str,
    direction: &str,
) -> ConfigError {
    let path = object.at("protocol");
    if other_v2ray.contains(&name) {
        cx.unsupported(
            &path,
            format!("{direction} protocol {name:?}"),
            &format!("supported: {supported}"),
        )
    } else {
        cx.invalid(
            &path,
            format!("unknown {direction} protocol {name:?} (supported: {supported})"),
        )
    }
}

/// What V2Ray's `net.ParseAddress` makes of a string.
enum ParsedAddress {
    Ip(IpAddr),
    Domain(String),
}

/// V2Ray's `net.ParseAddress`: `[v6]` brackets dropped, surrounding spaces
/// trimmed, then an IP if it parses, else a domain.
fn parse_address(text: &str) -> ParsedAddress {
    let mut text = text;
    if text.len() >= 2 && text.starts_with('[') && text.ends_with(']') {
        text = &text[1..text.len() - 1];
    }
    let text = text.trim();
    match text.parse::<IpAddr>() {
        Ok(ip) => ParsedAddress::Ip(ip),
        Err(_) => ParsedAddress::Domain(text.to_owned()),
    }
}

fn listen_address(cx: &Cx<'_>, node: &Node, path: &str) -> Result<IpAddr, ConfigError> {
    let text = cx.string(node, path)?;
    match parse_address(&text) {
        ParsedAddress::Ip(ip) => Ok(ip),
        ParsedAddress::Domain(domain) if domain == "localhost" => {
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        ParsedAddress::Domain(domain) if domain.starts_with('/') || domain.starts_with('@') => {
            Err(cx.unsupported(
                path,
                format!("listening on the unix socket {domain:?}"),
                "listen on an IP address",
            ))
        }
        ParsedAddress::Domain(domain) => Err(cx.invalid(
            path,
            format!("unable to listen on {domain:?}: listen takes an IP address"),
        )),
    }
}

/// An inbound `port`: a number, `"a-b"`, or `"env:NAME"`.
fn inbound_port(cx: &Cx<'_>, node: &Node, path: &str) -> Result<InboundPort, ConfigError> {
    match node {
        Node::Number(_) => {
            let port = cx.integer(node, path, 0, 65535).map_err(|_| {
                cx.invalid(
                    path,
                    format!("port {} is out of range 0..=65535", node.describe()),
                )
            })?;
            let port = port as u16;
            Ok(InboundPort::Range(PortRange {
                from: port,
                to: port,
            }))
        }
        Node::String(text) => {
            if let Some(name) = text.strip_prefix("env:") {
                return Ok(InboundPort::Env(name.to_owned()));
            }
            parse_port_range_text(text)
                .map(InboundPort::Range)
                .map_err(|message| cx.invalid(path, message))
        }
        other => Err(cx.invalid(
            path,
            format!(
                "expected a port number or range, found {}",
                other.describe()
            ),
        )),
    }
}

fn allocation(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["strategy", "concurrency", "refresh"]);
    let strategy = optional_string(cx, &object, "strategy")?.unwrap_or_default();
    match strategy.to_ascii_lowercase().as_str() {
        "always" => Ok(()),
        "random" | "external" => Err(cx.unsupported(
            &object.at("strategy"),
            format!("port allocation strategy {strategy:?}"),
            "only \"always\" is",
        )),
        _ => Err(cx.invalid(
            &object.at("strategy"),
            format!("unknown allocation strategy {strategy:?} (known: always, random, external)"),
        )),
    }
}

/// One `vnext` entry of a VMess or VLESS outbound: address, port, users.
pub(super) struct VnextEntry<U> {
    pub address: String,
    pub port: u16,
    pub users: Vec<U>,
}

/// Reads an outbound's `vnext` as VMess and VLESS spell it: at least one
/// server, each with an address, a port and at least one user, each user
/// read by `read_user`. `protocol` names the protocol in errors.
pub(super) fn vnext<U>(
    cx: &mut Cx<'_>,
    object: &Obj<'_>,
    protocol: &str,
    mut read_user: impl FnMut(&mut Cx<'_>, &Obj<'_>) -> Result<U, ConfigError>,
) -> Result<Vec<VnextEntry<U>>, ConfigError> {
    let vnext_path = object.at("vnext");
    let items = match object.get("vnext") {
        Some(node) => cx.array(node, &vnext_path)?,
        None => &[],
    };
    if items.is_empty() {
        return Err(cx.invalid(
            &vnext_path,
            format!("no {protocol} server configured: vnext needs at least one entry"),
        ));
    }
    let mut vnext = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let server_path = index_path(&vnext_path, index);
        let server = cx.object(item, &server_path)?;
        server.warn_unknown(cx, &["address", "port", "users"]);
        let users_path = server.at("users");
        let user_items = match server.get("users") {
            Some(node) => cx.array(node, &users_path)?,
            None => &[],
        };
        if user_items.is_empty() {
            return Err(cx.invalid(
                &users_path,
                format!("no user configured for this {protocol} server"),
            ));
        }
        let address = match optional_string(cx, &server, "address")? {
            None => return Err(cx.invalid(&server.at("address"), "address is missing")),
            Some(text) => match parse_address(&text) {
                ParsedAddress::Ip(ip) => ip.to_string(),
                ParsedAddress::Domain(domain) if domain.is_empty() => {
                    return Err(cx.invalid(&server.at("address"), "address is empty"))
                }
                ParsedAddress::Domain(domain) => domain,
            },
        };
        let port = optional_u16(cx, &server, "port")?;
        let mut users = Vec::with_capacity(user_items.len());
        for (user_index, user_node) in user_items.iter().enumerate() {
            let user = cx.object(user_node, &index_path(&users_path, user_index))?;
            users.push(read_user(cx, &user)?);
        }
        vnext.push(VnextEntry {
            address,
            port,
            users,
        });
    }
    Ok(vnext)
}
