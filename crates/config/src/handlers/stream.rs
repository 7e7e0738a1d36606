//! The settings around a connection that are not its protocol's:
//! `streamSettings` (with `tcpSettings` and `sockopt`), an inbound's
//! `sniffing` and an outbound's `mux`.
//!
//! Today only plain TCP passes: every other transport, TLS, the HTTP header
//! disguise, socket options, the PROXY protocol and sniffing are rejected as
//! unsupported with the field's path (settings with no effect warn). The
//! transports to come (WebSocket, TLS) grow here.
//!
//! This is not where a protocol's `settings` are read (one file per
//! protocol beside this one) nor the object around them (`handlers`'s
//! `mod.rs`, which calls these readers); nothing here is kept in the model
//! except `mux`.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx};

use super::{optional_bool, optional_string};

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
pub(super) fn stream_settings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
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

pub(super) fn sniffing(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<(), ConfigError> {
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

pub(super) fn check_sniff_protocols(
    cx: &Cx<'_>,
    list: &[String],
    path: &str,
) -> Result<(), ConfigError> {
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

pub(super) fn mux(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Option<Mux>, ConfigError> {
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
