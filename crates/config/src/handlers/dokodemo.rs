//! The `settings` of a `dokodemo-door` inbound: where every accepted
//! connection goes (`address`, `port`), on which networks it listens, and
//! the user level its connections get.
//!
//! Only the settings object is read here; `listen`, `port` and the rest of
//! the inbound object are `handlers`'s `mod.rs`, which dispatches here on
//! the protocol name. Networks other than `tcp` and `udp` are unsupported.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx};

use super::{optional_bool, optional_string, optional_u16, optional_u32};
use super::{parse_address, ParsedAddress};

pub(super) fn dokodemo(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<DokodemoDoor, ConfigError> {
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
