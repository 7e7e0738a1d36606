//! The top-level `dns` object, read as V2Ray 4.34 reads it
//! (`infra/conf/dns.go`) into core's [`DnsSettings`].
//!
//! | key | accepted |
//! |---|---|
//! | `servers` | an array; each a string (the address) or an object with `address` (required), `port`, `domains` (an array), `expectIps` (a string list), `clientIp` (an IP) |
//! | `hosts` | an object: key a domain rule (`domain:`, `full:`, `keyword:`, `regexp:`, `dotless:`, `geosite:`, `ext:file:list`, or bare = full), value an IP or a domain (a "proxied domain": that name is looked up instead) |
//! | `clientIp` | an IP |
//! | `tag` | a string |
//!
//! A server address is an IP or a name (UDP, port 53 unless `port`; a
//! name's address comes from the system resolver), `localhost` (the system
//! resolver), `https://…` or `https+local://…` (DNS over HTTPS). Refused
//! as unsupported: `quic+local://` and other URLs. Warned: `https://` is dialled directly (Rayback does not
//! route DoH through its outbounds), `clientIp` is not sent and `tag` has
//! nothing to name. Rule syntax inside `domains`, `expectIps` and the
//! hosts keys is checked when the `routing` crate compiles it, as for the
//! `routing` object.

use std::net::IpAddr;

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::{DnsSettings, HostMapping, HostValue, NameServerAddress, NameServerSettings};
use crate::reader::{index_path, key_path, Cx, Obj};

const DNS_KEYS: &[&str] = &["servers", "hosts", "clientIp", "tag"];
const SERVER_KEYS: &[&str] = &["address", "port", "domains", "expectIps", "clientIp"];

pub(crate) fn build_dns(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<DnsSettings, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, DNS_KEYS);
    let mut dns = DnsSettings::default();
    if let Some(node) = object.get("clientIp") {
        dns.client_ip = Some(ip_field(cx, node, &object.at("clientIp"))?);
        cx.warn(
            WarningKind::Ignored,
            &object.at("clientIp"),
            "dns.clientIp (EDNS client subnet) is not sent by Rayback's resolver",
        );
    }
    if let Some(node) = object.get("tag") {
        let tag = cx.string(node, &object.at("tag"))?;
        if !tag.is_empty() {
            cx.warn(
                WarningKind::Ignored,
                &object.at("tag"),
                "dns.tag has no effect: Rayback's resolver does not route its queries",
            );
            dns.tag = Some(tag);
        }
    }
    if let Some(node) = object.get("servers") {
        let list_path = object.at("servers");
        for (index, item) in cx.array(node, &list_path)?.iter().enumerate() {
            dns.servers
                .push(server(cx, item, &index_path(&list_path, index))?);
        }
    }
    if let Some(node) = object.get("hosts") {
        let hosts = cx.object(node, &object.at("hosts"))?;
        // A Go map: the last of equal keys wins; 4.34 then sorts the keys.
        for (index, (key, value)) in hosts.entries().iter().enumerate() {
            if hosts.entries()[index + 1..]
                .iter()
                .any(|(later, _)| later == key)
            {
                continue;
            }
            dns.hosts.push(host(cx, &hosts, key, value)?);
        }
        dns.hosts.sort_by(|a, b| a.rule.cmp(&b.rule));
    }
    Ok(dns)
}

fn server(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<NameServerSettings, ConfigError> {
    let mut server = NameServerSettings {
        address: NameServerAddress::Localhost,
        port: 0,
        domains: Vec::new(),
        expect_ips: Vec::new(),
        client_ip: None,
    };
    let address_path = match node {
        Node::String(text) => {
            server.address = address(cx, text, path)?;
            path.to_owned()
        }
        Node::Object(_) => {
            let object = cx.object(node, path)?;
            object.warn_unknown(cx, SERVER_KEYS);
            let Some(address_node) = object.get("address") else {
                return Err(cx.invalid(path, "NameServer address is not specified"));
            };
            let address_path = object.at("address");
            let text = match address_node {
                Node::String(text) => text.clone(),
                other => {
                    return Err(cx.invalid(
                        &address_path,
                        format!(
                            "failed to parse name server: expected a string, found {}",
                            other.kind()
                        ),
                    ))
                }
            };
            server.address = address(cx, &text, &address_path)?;
            if let Some(node) = object.get("port") {
                server.port = cx.u16(node, &object.at("port"))?;
            }
            if let Some(node) = object.get("domains") {
                let domains_path = object.at("domains");
                for (index, item) in cx.array(node, &domains_path)?.iter().enumerate() {
                    server
                        .domains
                        .push(cx.string(item, &index_path(&domains_path, index))?);
                }
            }
            if let Some(node) = object.get("expectIps") {
                server.expect_ips = cx.string_list(node, &object.at("expectIps"))?;
            }
            if let Some(node) = object.get("clientIp") {
                server.client_ip = Some(ip_field(cx, node, &object.at("clientIp"))?);
                cx.warn(
                    WarningKind::Ignored,
                    &object.at("clientIp"),
                    "clientIp (EDNS client subnet) is not sent by Rayback's resolver",
                );
            }
            address_path
        }
        other => {
            return Err(cx.invalid(
                path,
                format!(
                    "failed to parse name server: expected a string or an object, found {}",
                    other.kind()
                ),
            ))
        }
    };
    if matches!(server.address, NameServerAddress::Https(_)) {
        cx.warn(
            WarningKind::Ignored,
            &address_path,
            "an https:// DNS server is dialled directly by Rayback (as https+local://), not through its outbounds",
        );
    }
    Ok(server)
}

/// A server's `address` text.
fn address(cx: &Cx<'_>, text: &str, path: &str) -> Result<NameServerAddress, ConfigError> {
    if let Some(ip) = parse_ip(text) {
        return Ok(NameServerAddress::Ip(ip));
    }
    if text == "localhost" {
        return Ok(NameServerAddress::Localhost);
    }
    let lower = text.to_ascii_lowercase();
    let url_host = |rest: &str| rest.split(['/', '?', '#']).next().unwrap_or("").to_owned();
    if let Some(rest) = lower.strip_prefix("https+local://") {
        if url_host(rest).is_empty() {
            return Err(cx.invalid(path, format!("{text:?}: the DoH URL has no host")));
        }
        return Ok(NameServerAddress::HttpsLocal(text.to_owned()));
    }
    if let Some(rest) = lower.strip_prefix("https://") {
        if url_host(rest).is_empty() {
            return Err(cx.invalid(path, format!("{text:?}: the DoH URL has no host")));
        }
        return Ok(NameServerAddress::Https(text.to_owned()));
    }
    if lower.starts_with("quic+local://") {
        return Err(cx.unsupported(
            path,
            "DNS over QUIC (quic+local://)",
            "use an IP, localhost or https+local://",
        ));
    }
    if text.is_empty() || text.contains("://") {
        return Err(cx.unsupported(
            path,
            format!("the DNS server address {text:?}"),
            "use an IP, a name, localhost, https:// or https+local://",
        ));
    }
    Ok(NameServerAddress::Domain(text.to_owned()))
}

/// V2Ray's `Address` for an IP: plain or in brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

fn ip_field(cx: &Cx<'_>, node: &Node, path: &str) -> Result<IpAddr, ConfigError> {
    let text = cx.string(node, path)?;
    parse_ip(&text).ok_or_else(|| cx.invalid(path, format!("not an IP address: {text:?}")))
}

/// One `hosts` entry: its key as a routing-syntax rule, and its value.
fn host(cx: &Cx<'_>, hosts: &Obj<'_>, key: &str, value: &Node) -> Result<HostMapping, ConfigError> {
    let path = key_path(&hosts.path, key);
    let nonempty = |prefix: &str, rest: &str, what: &str| {
        if rest.is_empty() {
            Err(cx.invalid(&path, format!("empty {what} rule: {key:?}")))
        } else {
            Ok(format!("{prefix}{rest}"))
        }
    };
    let rule = if let Some(rest) = key.strip_prefix("domain:") {
        nonempty("domain:", rest, "domain type of")?
    } else if let Some(rest) = key.strip_prefix("geosite:") {
        nonempty("geosite:", rest, "geosite")?
    } else if let Some(rest) = key.strip_prefix("regexp:") {
        nonempty("regexp:", rest, "regexp type of")?
    } else if let Some(rest) = key.strip_prefix("keyword:") {
        nonempty("keyword:", rest, "keyword type of")?
    } else if let Some(rest) = key.strip_prefix("full:") {
        nonempty("full:", rest, "full domain type of")?
    } else if let Some(rest) = key.strip_prefix("dotless:") {
        if rest.is_empty() {
            "regexp:^[^.]*$".to_owned()
        } else if rest.contains('.') {
            return Err(cx.invalid(
                &path,
                format!("substr in dotless rule should not contain a dot: {rest:?}"),
            ));
        } else {
            format!("regexp:^[^.]*{rest}[^.]*$")
        }
    } else if let Some(rest) = key.strip_prefix("ext:") {
        if rest.split(':').count() != 2 {
            return Err(cx.invalid(&path, format!("invalid external resource: {key:?}")));
        }
        key.to_owned()
    } else {
        format!("full:{key}")
    };
    let text = match value {
        Node::String(text) => text.clone(),
        other => {
            return Err(cx.invalid(
                &path,
                format!("invalid address: expected a string, found {}", other.kind()),
            ))
        }
    };
    let value = match parse_ip(&text) {
        Some(ip) => HostValue::Ip(ip),
        None if text.is_empty() => {
            return Err(cx.invalid(&path, "neither an IP address nor a domain"))
        }
        None => HostValue::Domain(text),
    };
    Ok(HostMapping { rule, value })
}
