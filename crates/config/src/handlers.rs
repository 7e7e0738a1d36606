//! Inbound and outbound objects: the protocols Rayback has (inbounds
//! `dokodemo-door`, `vmess`; outbounds `freedom`, `vmess`, `blackhole`),
//! plus `streamSettings`, `sniffing`, `allocate`, `mux`.
//!
//! Every V2Ray 4.34 setting is either built, rejected as V2Ray rejects it,
//! or rejected as unsupported by Rayback with the field's path; none is
//! dropped silently (settings with no effect produce a warning).
//! Merging and routing are elsewhere (`build`, `routing`).

use std::net::{IpAddr, Ipv4Addr};

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, parse_port_range_text, parse_port_text, Cx, Obj};

const SUPPORTED_INBOUNDS: &str = "dokodemo-door, vmess";
const SUPPORTED_OUTBOUNDS: &str = "freedom, vmess, blackhole";
/// Inbound protocols V2Ray 4.34 has and Rayback does not.
const OTHER_V2RAY_INBOUNDS: &[&str] =
    &["http", "shadowsocks", "socks", "vless", "trojan", "mtproto"];
/// Outbound protocols V2Ray 4.34 has and Rayback does not.
const OTHER_V2RAY_OUTBOUNDS: &[&str] = &[
    "http",
    "shadowsocks",
    "socks",
    "vless",
    "trojan",
    "mtproto",
    "dns",
];

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
    let tag = optional_string(cx, &object, "tag")?.filter(|tag| !tag.is_empty());

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
    if let Some(node) = object.get("streamSettings") {
        stream_settings(cx, node, &object.at("streamSettings"))?;
    }
    if let Some(node) = object.get("sniffing") {
        sniffing(cx, node, &object.at("sniffing"))?;
    }
    if let Some(node) = object.get("domainOverride") {
        let override_path = object.at("domainOverride");
        let list = cx.string_list(node, &override_path)?;
        check_sniff_protocols(cx, &list, &override_path)?;
        if !list.is_empty() {
            return Err(cx.unsupported(&override_path, "sniffing", "remove domainOverride"));
        }
    }

    let protocol = protocol_name(cx, &object)?;
    let settings_path = object.at("settings");
    let empty = Node::Object(Vec::new());
    let settings_node = object.get("settings").unwrap_or(&empty);
    let settings = match protocol.as_str() {
        "dokodemo-door" => {
            InboundSettings::DokodemoDoor(dokodemo(cx, settings_node, &settings_path)?)
        }
        "vmess" => InboundSettings::Vmess(vmess_inbound(cx, settings_node, &settings_path)?),
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
    let tag = optional_string(cx, &object, "tag")?.filter(|tag| !tag.is_empty());

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
    if let Some(node) = object.get("streamSettings") {
        stream_settings(cx, node, &object.at("streamSettings"))?;
    }
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
        "freedom" => OutboundSettings::Freedom(freedom(cx, settings_node, &settings_path)?),
        "vmess" => OutboundSettings::Vmess(vmess_outbound(cx, settings_node, &settings_path)?),
        "blackhole" => OutboundSettings::Blackhole(blackhole(cx, settings_node, &settings_path)?),
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
pub(crate) enum ParsedAddress {
    Ip(IpAddr),
    Domain(String),
}

/// V2Ray's `net.ParseAddress`: `[v6]` brackets dropped, surrounding spaces
/// trimmed, then an IP if it parses, else a domain.
pub(crate) fn parse_address(text: &str) -> ParsedAddress {
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

const STREAM_KEYS: &[&str] = &[
    "network",
    "security",
    "tlsSettings",
    "tcpSettings",
    "kcpSettings",
    "wsSettings",
    "httpSettings",
    "dsSettings",
    "quicSettings",
    "sockopt",
];

/// `streamSettings`: only plain TCP without TLS, header or socket options.
fn stream_settings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, STREAM_KEYS);
    if let Some(node) = object.get("network") {
        let network_path = object.at("network");
        let name = cx.string(node, &network_path)?;
        let transport = match name.to_ascii_lowercase().as_str() {
            "tcp" => None,
            "kcp" | "mkcp" => Some("mKCP"),
            "ws" | "websocket" => Some("WebSocket"),
            "h2" | "http" => Some("HTTP/2"),
            "ds" | "domainsocket" => Some("domain socket"),
            "quic" => Some("QUIC"),
            _ => {
                return Err(cx.invalid(
                    &network_path,
                    format!("unknown transport protocol {name:?} (known: tcp, kcp, ws, http, domainsocket, quic)"),
                ))
            }
        };
        if let Some(transport) = transport {
            return Err(cx.unsupported(
                &network_path,
                format!("the {transport} transport ({name:?})"),
                "only \"tcp\" is",
            ));
        }
    }
    let security = optional_string(cx, &object, "security")?.unwrap_or_default();
    if security.eq_ignore_ascii_case("tls") {
        return Err(cx.unsupported(
            &object.at("security"),
            "TLS",
            "terminate TLS in front of Rayback",
        ));
    }
    if !security.is_empty() && !security.eq_ignore_ascii_case("none") {
        cx.warn(
            WarningKind::Ignored,
            &object.at("security"),
            format!("security {security:?} is not \"tls\"; V2Ray 4.34 uses no security"),
        );
    }
    if object.get("tlsSettings").is_some() {
        cx.warn(
            WarningKind::Ignored,
            &object.at("tlsSettings"),
            "tlsSettings is ignored without security \"tls\"",
        );
    }
    if let Some(node) = object.get("tcpSettings") {
        tcp_settings(cx, node, &object.at("tcpSettings"))?;
    }
    for key in [
        "kcpSettings",
        "wsSettings",
        "httpSettings",
        "dsSettings",
        "quicSettings",
    ] {
        if object.get(key).is_some() {
            cx.warn(
                WarningKind::Ignored,
                &object.at(key),
                format!("{key} is ignored: the network is tcp"),
            );
        }
    }
    if let Some(node) = object.get("sockopt") {
        let sockopt_path = object.at("sockopt");
        let sockopt = cx.object(node, &sockopt_path)?;
        sockopt.warn_unknown(cx, &["mark", "tcpFastOpen", "tproxy"]);
        if let Some(node) = sockopt.get("mark") {
            let mark = cx.integer(
                node,
                &sockopt.at("mark"),
                i64::from(i32::MIN),
                i64::from(i32::MAX),
            )?;
            if mark != 0 {
                return Err(cx.unsupported(&sockopt.at("mark"), "SO_MARK", ""));
            }
        }
        if optional_bool(cx, &sockopt, "tcpFastOpen")? {
            return Err(cx.unsupported(&sockopt.at("tcpFastOpen"), "TCP Fast Open", ""));
        }
        let tproxy = optional_string(cx, &sockopt, "tproxy")?.unwrap_or_default();
        if !tproxy.is_empty() && !tproxy.eq_ignore_ascii_case("off") {
            return Err(cx.unsupported(
                &sockopt.at("tproxy"),
                format!("transparent proxy mode {tproxy:?}"),
                "",
            ));
        }
    }
    Ok(())
}

fn tcp_settings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["header", "acceptProxyProtocol"]);
    if let Some(node) = object.get("header") {
        let header_path = object.at("header");
        let header = cx.object(node, &header_path)?;
        // V2Ray reads `type` with an exact (case-sensitive) map lookup.
        let type_path = header.at("type");
        let name = match header.get_exact("type") {
            Some(node) => cx.string(node, &type_path)?,
            None => {
                return Err(cx.invalid(&type_path, "header type is missing (\"none\" or \"http\")"))
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "none" => {}
            "http" => {
                return Err(cx.unsupported(
                    &type_path,
                    "the HTTP header disguise",
                    "only \"none\" is",
                ))
            }
            _ => {
                return Err(cx.invalid(
                    &type_path,
                    format!("unknown tcp header type {name:?} (known: none, http)"),
                ))
            }
        }
    }
    if optional_bool(cx, &object, "acceptProxyProtocol")? {
        return Err(cx.unsupported(&object.at("acceptProxyProtocol"), "the PROXY protocol", ""));
    }
    Ok(())
}

fn sniffing(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["enabled", "destOverride"]);
    if let Some(node) = object.get("destOverride") {
        let override_path = object.at("destOverride");
        let list = cx.string_list(node, &override_path)?;
        check_sniff_protocols(cx, &list, &override_path)?;
    }
    if optional_bool(cx, &object, "enabled")? {
        return Err(cx.unsupported(&object.at("enabled"), "sniffing", "set enabled to false"));
    }
    Ok(())
}

fn check_sniff_protocols(cx: &Cx<'_>, list: &[String], path: &str) -> Result<(), ConfigError> {
    for (index, name) in list.iter().enumerate() {
        if !matches!(
            name.to_ascii_lowercase().as_str(),
            "http" | "tls" | "https" | "ssl"
        ) {
            return Err(cx.invalid(
                &index_path(path, index),
                format!("unknown protocol {name:?} (known: http, tls)"),
            ));
        }
    }
    Ok(())
}

fn mux(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Option<Mux>, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["enabled", "concurrency"]);
    let enabled = optional_bool(cx, &object, "enabled")?;
    let concurrency = match object.get("concurrency") {
        Some(node) => cx.integer(
            node,
            &object.at("concurrency"),
            i64::from(i16::MIN),
            i64::from(i16::MAX),
        )?,
        None => 0,
    };
    if concurrency < 0 {
        return Ok(None);
    }
    if concurrency > 1024 {
        return Err(cx.invalid(
            &object.at("concurrency"),
            format!("invalid mux concurrency {concurrency}: at most 1024"),
        ));
    }
    let concurrency = if concurrency == 0 {
        8
    } else {
        concurrency as u16
    };
    Ok(Some(Mux {
        enabled,
        concurrency,
    }))
}

// ---------------------------------------------------------------- inbound protocols

fn dokodemo(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<DokodemoDoor, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(
        cx,
        &[
            "address",
            "port",
            "network",
            "timeout",
            "followRedirect",
            "userLevel",
        ],
    );
    let address = match optional_string(cx, &object, "address")? {
        Some(text) => match parse_address(&text) {
            ParsedAddress::Ip(ip) => Some(ip.to_string()),
            ParsedAddress::Domain(domain) if domain.is_empty() => None,
            ParsedAddress::Domain(domain) => Some(domain),
        },
        None => None,
    };
    let network = match object.get("network") {
        Some(node) => {
            let network_path = object.at("network");
            let names = cx.string_list(node, &network_path)?;
            let mut networks = Vec::with_capacity(2);
            for (index, name) in names.iter().enumerate() {
                let network = match name.to_ascii_lowercase().as_str() {
                    "tcp" => Network::Tcp,
                    "udp" => Network::Udp,
                    _ => {
                        let item_path = if matches!(node, Node::Array(_)) {
                            index_path(&network_path, index)
                        } else {
                            network_path.clone()
                        };
                        return Err(cx.unsupported(
                            &item_path,
                            format!("dokodemo-door network {name:?}"),
                            "only \"tcp\" and \"udp\" are",
                        ));
                    }
                };
                if !networks.contains(&network) {
                    networks.push(network);
                }
            }
            if networks.is_empty() {
                cx.warn(
                    WarningKind::Suspicious,
                    &network_path,
                    "no network given: this inbound opens no listener",
                );
            }
            networks
        }
        None => vec![Network::Tcp],
    };
    Ok(DokodemoDoor {
        address,
        port: optional_u16(cx, &object, "port")?,
        network,
        timeout: optional_u32(cx, &object, "timeout")?,
        follow_redirect: optional_bool(cx, &object, "followRedirect")?,
        user_level: optional_u32(cx, &object, "userLevel")?,
    })
}

const VMESS_USER_KEYS: &[&str] = &["id", "alterId", "security", "level", "email"];

fn vmess_inbound(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<VmessInbound, ConfigError> {
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
pub(crate) fn parse_go_uuid(text: &str) -> Option<(uuid::Uuid, &str)> {
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

// ---------------------------------------------------------------- outbound protocols

fn freedom(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Freedom, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["domainStrategy", "timeout", "redirect", "userLevel"]);
    let strategy = optional_string(cx, &object, "domainStrategy")?.unwrap_or_default();
    let domain_strategy = match strategy.to_ascii_lowercase().as_str() {
        "useip" | "use_ip" => FreedomDomainStrategy::UseIp,
        "useip4" | "useipv4" | "use_ipv4" | "use_ip_v4" | "use_ip4" => {
            FreedomDomainStrategy::UseIpv4
        }
        "useip6" | "useipv6" | "use_ipv6" | "use_ip_v6" | "use_ip6" => {
            FreedomDomainStrategy::UseIpv6
        }
        "asis" | "as_is" | "" => FreedomDomainStrategy::AsIs,
        _ => {
            cx.warn(
                WarningKind::Suspicious,
                &object.at("domainStrategy"),
                format!("unknown domain strategy {strategy:?} means \"AsIs\" (known: AsIs, UseIP, UseIPv4, UseIPv6)"),
            );
            FreedomDomainStrategy::AsIs
        }
    };
    let timeout = object
        .get("timeout")
        .map(|node| cx.u32(node, &object.at("timeout")))
        .transpose()?;
    let redirect = match optional_string(cx, &object, "redirect")? {
        Some(text) if !text.is_empty() => Some(redirect(cx, &text, &object.at("redirect"))?),
        _ => None,
    };
    Ok(Freedom {
        domain_strategy,
        redirect,
        user_level: optional_u32(cx, &object, "userLevel")?,
        timeout,
    })
}

/// freedom's `redirect`, split like Go's `net.SplitHostPort`.
fn redirect(cx: &Cx<'_>, text: &str, path: &str) -> Result<Redirect, ConfigError> {
    let bad =
        |reason: &str| cx.invalid(path, format!("invalid redirect address {text:?}: {reason}"));
    let (host, port) = if let Some(after_bracket) = text.strip_prefix('[') {
        let Some((host, after)) = after_bracket.split_once(']') else {
            return Err(bad("missing ']'"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(bad("missing port (use host:port, e.g. \"127.0.0.1:80\")"));
        };
        (host, port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(bad("missing port (use host:port, e.g. \"127.0.0.1:80\")"));
        };
        if host.contains(':') {
            return Err(bad("too many colons (write an IPv6 host as [::1]:80)"));
        }
        (host, port)
    };
    if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
        return Err(bad("misplaced brackets"));
    }
    let port = parse_port_text(port)
        .map_err(|message| cx.invalid(path, format!("invalid redirect port: {message}")))?;
    let host = match parse_address(host) {
        ParsedAddress::Ip(ip) => Some(ip.to_string()),
        ParsedAddress::Domain(domain) if domain.is_empty() => None,
        ParsedAddress::Domain(domain) => Some(domain),
    };
    Ok(Redirect { host, port })
}

fn vmess_outbound(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<VmessOutbound, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["vnext"]);
    let vnext_path = object.at("vnext");
    let items = match object.get("vnext") {
        Some(node) => cx.array(node, &vnext_path)?,
        None => &[],
    };
    if items.is_empty() {
        return Err(cx.invalid(
            &vnext_path,
            "no VMess server configured: vnext needs at least one entry",
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
            return Err(cx.invalid(&users_path, "no user configured for this VMess server"));
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
            let user_path = index_path(&users_path, user_index);
            let user = cx.object(user_node, &user_path)?;
            user.warn_unknown(cx, VMESS_USER_KEYS);
            let id = vmess_id(cx, &user)?;
            let security_text = optional_string(cx, &user, "security")?.unwrap_or_default();
            let security = match security_text.to_ascii_lowercase().as_str() {
                "aes-128-gcm" => VmessSecurity::Aes128Gcm,
                "chacha20-poly1305" => VmessSecurity::Chacha20Poly1305,
                "none" => VmessSecurity::None,
                "auto" | "" => VmessSecurity::Auto,
                _ => {
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
            users.push(VmessUser {
                id,
                alter_id: optional_u16(cx, &user, "alterId")?,
                security,
                level: optional_u32(cx, &user, "level")?,
                email: optional_string(cx, &user, "email")?.filter(|email| !email.is_empty()),
            });
        }
        vnext.push(VmessServer {
            address,
            port,
            users,
        });
    }
    Ok(VmessOutbound { vnext })
}

fn blackhole(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Blackhole, ConfigError> {
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
            match name.to_ascii_lowercase().as_str() {
                "none" => BlackholeResponse::None,
                "http" => BlackholeResponse::Http,
                _ => {
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
