//! The settings around a connection that are not its protocol's:
//! `streamSettings` (with `tcpSettings`, `wsSettings`, `tlsSettings` and
//! `sockopt`), an inbound's `sniffing` and an outbound's `mux`.
//!
//! `streamSettings` becomes a [`StreamSettings`]: plain TCP (optionally
//! with the HTTP header disguise) or WebSocket, optionally TLS, and on a
//! listener optionally the PROXY protocol. The
//! other transports (mKCP, HTTP/2, domain socket, QUIC), certificate usages other than `encipherment`, socket marks,
//! TCP Fast Open and transparent proxying are rejected as
//! unsupported with the field's path. Settings with no effect warn: those
//! of a transport that is not selected, `tlsSettings` without TLS, the PROXY
//! protocol on an outbound, session resumption.
//!
//! The same JSON means different things on the two ends ([`Direction`]):
//! an inbound's certificates are what it presents and each needs its key;
//! an outbound's are roots it trusts besides the system's.
//!
//! Certificate and key files (`certificateFile`, `keyFile`) are read here,
//! while loading, relative to the current directory as V2Ray reads them;
//! the model keeps their text. Nothing here speaks TLS or WebSocket (the
//! `transport` crate does), and a protocol's `settings` are read elsewhere
//! (one file per protocol beside this one; `handlers`'s `mod.rs` reads the
//! object around them and calls these readers).

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

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

/// Settings of transports Rayback lacks: with a network Rayback has they
/// only warn, as V2Ray builds and then ignores them.
const OTHER_TRANSPORT_KEYS: &[&str] =
    &["kcpSettings", "httpSettings", "dsSettings", "quicSettings"];

const TLS_KEYS: &[&str] = &[
    "allowInsecure",
    "certificates",
    "serverName",
    "alpn",
    "enableSessionResumption",
    "disableSystemRoot",
];

const CERTIFICATE_KEYS: &[&str] = &["certificateFile", "certificate", "keyFile", "key", "usage"];

/// Which end of a connection a `streamSettings` is for: V2Ray reads the
/// same keys differently when listening and when dialling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// An inbound: listens, presents its certificates, may read a PROXY
    /// protocol header.
    Inbound,
    /// An outbound: dials, trusts its certificates, never reads a PROXY
    /// protocol header.
    Outbound,
}

/// The `network` names Rayback has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selected {
    Tcp,
    WebSocket,
}

impl Selected {
    fn name(self) -> &'static str {
        match self {
            Selected::Tcp => "tcp",
            Selected::WebSocket => "ws",
        }
    }
}

/// `streamSettings` of an inbound or an outbound, as V2Ray 4.34 builds it
/// (`StreamConfig.Build` in `infra/conf/transport_internet.go`).
pub(super) fn stream_settings(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    direction: Direction,
) -> Result<StreamSettings, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, STREAM_KEYS);
    let selected = match object.get("network") {
        Some(node) => network(cx, node, &object.at("network"))?,
        None => Selected::Tcp,
    };
    let tls = security(cx, &object, direction)?;
    let tcp = match object.get("tcpSettings") {
        Some(node) => Some(tcp_settings(cx, node, &object.at("tcpSettings"))?),
        None => None,
    };
    let ws = match object.get("wsSettings") {
        Some(node) => Some(ws_settings(cx, node, &object.at("wsSettings"))?),
        None => None,
    };
    for key in OTHER_TRANSPORT_KEYS {
        if object.get(key).is_some() {
            cx.warn(
                WarningKind::Ignored,
                &object.at(key),
                format!("{key} is ignored: the network is {}", selected.name()),
            );
        }
    }

    // Only the selected transport's settings count; the other's warn.
    let mut http_disguise = None;
    let (network, transport_proxy) = match selected {
        Selected::Tcp => {
            if ws.is_some() {
                cx.warn(
                    WarningKind::Ignored,
                    &object.at("wsSettings"),
                    "wsSettings is ignored: the network is tcp",
                );
            }
            let tcp = tcp.unwrap_or_default();
            http_disguise = tcp.http_disguise;
            (TransportNetwork::Tcp, tcp.accept_proxy_protocol)
        }
        Selected::WebSocket => {
            if tcp.is_some() {
                cx.warn(
                    WarningKind::Ignored,
                    &object.at("tcpSettings"),
                    "tcpSettings is ignored: the network is ws",
                );
            }
            let ws = ws.unwrap_or_default();
            (
                TransportNetwork::WebSocket(ws.settings),
                ws.accept_proxy_protocol,
            )
        }
    };

    let sockopt_proxy = match object.get("sockopt") {
        Some(node) => sockopt(cx, node, &object.at("sockopt"))?,
        None => None,
    };
    // V2Ray 4.34's TCP and WebSocket listeners copy their own flag over
    // sockopt's, so there `sockopt.acceptProxyProtocol` alone does nothing.
    // Rayback honours either: a config that sets sockopt's flag means it.
    let requested: Vec<String> = [transport_proxy, sockopt_proxy]
        .into_iter()
        .flatten()
        .collect();
    let accept_proxy_protocol = match direction {
        Direction::Inbound => !requested.is_empty(),
        Direction::Outbound => {
            for flag_path in &requested {
                cx.warn(
                    WarningKind::Ignored,
                    flag_path,
                    "acceptProxyProtocol has no effect on an outbound",
                );
            }
            false
        }
    };

    Ok(StreamSettings {
        network,
        tls,
        accept_proxy_protocol,
        http_disguise,
    })
}

/// `network`: V2Ray's `TransportProtocol.Build`, names compared without case.
fn network(cx: &Cx<'_>, node: &Node, path: &str) -> Result<Selected, ConfigError> {
    let name = cx.string(node, path)?;
    let other = match name.to_ascii_lowercase().as_str() {
        "tcp" => return Ok(Selected::Tcp),
        "ws" | "websocket" => return Ok(Selected::WebSocket),
        "kcp" | "mkcp" => "mKCP",
        "h2" | "http" => "HTTP/2",
        "ds" | "domainsocket" => "domain socket",
        "quic" => "QUIC",
        _ => {
            return Err(cx.invalid(
                path,
                format!("unknown transport protocol {name:?} (known: tcp, kcp, ws, http, domainsocket, quic)"),
            ))
        }
    };
    Err(cx.unsupported(
        path,
        format!("the {other} transport ({name:?})"),
        "only \"tcp\" and \"ws\" are",
    ))
}

/// `security` and `tlsSettings`: TLS settings when `security` is `"tls"`.
fn security(
    cx: &mut Cx<'_>,
    object: &Obj<'_>,
    direction: Direction,
) -> Result<Option<TlsSettings>, ConfigError> {
    let security = optional_string(cx, object, "security")?.unwrap_or_default();
    if security.eq_ignore_ascii_case("tls") {
        let settings = match object.get("tlsSettings") {
            Some(node) => tls_settings(cx, node, &object.at("tlsSettings"), direction)?,
            None => TlsSettings::default(),
        };
        if direction == Direction::Inbound && settings.certificates.is_empty() {
            cx.warn(
                WarningKind::Suspicious,
                &object.at("security"),
                "a TLS listener without certificates fails every handshake",
            );
        }
        return Ok(Some(settings));
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
    Ok(None)
}

/// `tlsSettings` (V2Ray's `TLSConfig.Build`).
fn tls_settings(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    direction: Direction,
) -> Result<TlsSettings, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, TLS_KEYS);
    let mut certificates = Vec::new();
    if let Some(node) = object.get("certificates") {
        let list_path = object.at("certificates");
        for (index, node) in cx.array(node, &list_path)?.iter().enumerate() {
            let entry_path = index_path(&list_path, index);
            certificates.push(tls_certificate(cx, node, &entry_path, direction)?);
        }
    }
    let server_name = optional_string(cx, &object, "serverName")?.filter(|name| !name.is_empty());
    let alpn = match object.get("alpn") {
        Some(node) => cx.string_list(node, &object.at("alpn"))?,
        None => Vec::new(),
    };
    let allow_insecure = optional_bool(cx, &object, "allowInsecure")?;
    if optional_bool(cx, &object, "enableSessionResumption")? {
        cx.warn(
            WarningKind::Ignored,
            &object.at("enableSessionResumption"),
            "Rayback does not resume TLS sessions; every connection makes a full handshake",
        );
    }
    let disable_system_root = optional_bool(cx, &object, "disableSystemRoot")?;
    Ok(TlsSettings {
        server_name,
        alpn,
        allow_insecure,
        disable_system_root,
        certificates,
    })
}

/// One `certificates` entry (V2Ray's `TLSCertConfig.Build`).
fn tls_certificate(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    direction: Direction,
) -> Result<TlsCertificate, ConfigError> {
    let entry = cx.object(node, path)?;
    entry.warn_unknown(cx, CERTIFICATE_KEYS);
    // V2Ray treats a usage it does not know as `encipherment`.
    let usage = optional_string(cx, &entry, "usage")?.unwrap_or_default();
    if matches!(usage.to_ascii_lowercase().as_str(), "verify" | "issue") {
        return Err(cx.unsupported(
            &entry.at("usage"),
            format!("certificate usage {usage:?}"),
            "only \"encipherment\" is",
        ));
    }
    let Some(certificate) = file_or_lines(cx, &entry, "certificateFile", "certificate")? else {
        return Err(cx.invalid(
            path,
            "the certificate is missing: set certificateFile or certificate",
        ));
    };
    let key = file_or_lines(cx, &entry, "keyFile", "key")?;
    if key.is_none() && direction == Direction::Inbound {
        return Err(cx.invalid(path, "a server certificate needs keyFile or key"));
    }
    Ok(TlsCertificate { certificate, key })
}

/// V2Ray's `readFileOrString`: the file `file_key` names when it is set,
/// else the lines of `lines_key` joined with `"\n"`; `None` when neither is.
fn file_or_lines(
    cx: &mut Cx<'_>,
    entry: &Obj<'_>,
    file_key: &str,
    lines_key: &str,
) -> Result<Option<Pem>, ConfigError> {
    let file = optional_string(cx, entry, file_key)?.unwrap_or_default();
    let lines_path = entry.at(lines_key);
    let lines = match entry.get(lines_key) {
        Some(node) => cx
            .array(node, &lines_path)?
            .iter()
            .enumerate()
            .map(|(index, line)| cx.string(line, &index_path(&lines_path, index)))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if !file.is_empty() {
        if !lines.is_empty() {
            cx.warn(
                WarningKind::Ignored,
                &lines_path,
                format!("{lines_key} is ignored: {file_key} is set"),
            );
        }
        let file_path = entry.at(file_key);
        let text = std::fs::read_to_string(&file)
            .map_err(|error| cx.invalid(&file_path, format!("cannot read {file}: {error}")))?;
        return Ok(Some(Pem {
            text,
            origin: format!("{file_path} ({file})"),
            file: Some(file),
        }));
    }
    if lines.is_empty() {
        return Ok(None);
    }
    Ok(Some(Pem {
        text: lines.join("\n"),
        origin: format!("{lines_path} (inline)"),
        file: None,
    }))
}

/// What `tcpSettings` asks for; the caller decides what counts, as only
/// the selected transport's settings do.
#[derive(Default)]
struct TcpRequest {
    /// `header` with `type: "http"`.
    http_disguise: Option<HttpDisguise>,
    /// The path of `acceptProxyProtocol` when it is true.
    accept_proxy_protocol: Option<String>,
}

fn tcp_settings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<TcpRequest, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["header", "acceptProxyProtocol"]);
    let mut request = TcpRequest::default();
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
            "http" => request.http_disguise = Some(http_disguise(cx, &header)?),
            _ => {
                return Err(cx.invalid(
                    &type_path,
                    format!("unknown tcp header type {name:?} (known: none, http)"),
                ))
            }
        }
    }
    if optional_bool(cx, &object, "acceptProxyProtocol")? {
        request.accept_proxy_protocol = Some(object.at("acceptProxyProtocol"));
    }
    Ok(request)
}

/// `header` with `type: "http"` (V2Ray's `Authenticator.Build`): each of
/// `request` and `response` starts from V2Ray's defaults; configured
/// headers replace the default ones and are sorted by name.
fn http_disguise(cx: &mut Cx<'_>, header: &Obj<'_>) -> Result<HttpDisguise, ConfigError> {
    header.warn_unknown(cx, &["type", "request", "response"]);
    let mut disguise = HttpDisguise::default();
    if let Some(node) = header.get("request") {
        let path = header.at("request");
        let object = cx.object(node, &path)?;
        object.warn_unknown(cx, &["version", "method", "path", "headers"]);
        let request = &mut disguise.request;
        if let Some(version) = non_empty(cx, &object, "version")? {
            request.version = version;
        }
        if let Some(method) = non_empty(cx, &object, "method")? {
            request.method = method;
        }
        if let Some(node) = object.get("path") {
            let paths = cx.string_list(node, &object.at("path"))?;
            if !paths.is_empty() {
                request.paths = paths;
            }
        }
        if let Some(headers) = http_headers(cx, &object)? {
            request.headers = headers;
        }
    }
    if let Some(node) = header.get("response") {
        let path = header.at("response");
        let object = cx.object(node, &path)?;
        object.warn_unknown(cx, &["version", "status", "reason", "headers"]);
        let response = &mut disguise.response;
        if let Some(version) = non_empty(cx, &object, "version")? {
            response.version = version;
        }
        if let Some(status) = non_empty(cx, &object, "status")? {
            response.status = status;
        }
        if let Some(reason) = non_empty(cx, &object, "reason")? {
            response.reason = reason;
        }
        if let Some(headers) = http_headers(cx, &object)? {
            response.headers = headers;
        }
    }
    Ok(disguise)
}

fn non_empty(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<Option<String>, ConfigError> {
    Ok(optional_string(cx, object, key)?.filter(|text| !text.is_empty()))
}

/// A disguise head's headers: each name with the values to pick from.
type HeadHeaders = Vec<(String, Vec<String>)>;

/// `headers` of a disguise head: name → a string or a list of strings;
/// `None` when absent or empty (the defaults stay).
fn http_headers(cx: &Cx<'_>, object: &Obj<'_>) -> Result<Option<HeadHeaders>, ConfigError> {
    let Some(node) = object.get("headers") else {
        return Ok(None);
    };
    let mut list: HeadHeaders = header_map(
        cx,
        node,
        &object.at("headers"),
        |name, value, value_path| {
            if matches!(value, Node::Null) {
                return Err(cx.invalid(value_path, format!("empty HTTP header value: {name}")));
            }
            cx.string_list(value, value_path)
        },
    )?;
    if list.is_empty() {
        return Ok(None);
    }
    list.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(list))
}

/// What `wsSettings` asks for.
#[derive(Default)]
struct WsRequest {
    settings: WsSettings,
    /// The path of `acceptProxyProtocol` when it is true.
    accept_proxy_protocol: Option<String>,
}

/// `wsSettings` (V2Ray's `WebSocketConfig.Build`).
fn ws_settings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<WsRequest, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["path", "headers", "acceptProxyProtocol"]);
    // Go's decoder gives the exactly spelled key `Path` to the legacy field
    // and every other spelling of "path" to `path`, which wins when set.
    let mut current = String::new();
    let mut legacy = String::new();
    for (name, value) in object.entries() {
        if matches!(value, Node::Null) || !name.eq_ignore_ascii_case("path") {
            continue;
        }
        let text = cx.string(value, &object.at(name))?;
        if name == "Path" {
            legacy = text;
        } else {
            current = text;
        }
    }
    let raw = if current.is_empty() { legacy } else { current };
    let headers = match object.get("headers") {
        Some(node) => ws_headers(cx, node, &object.at("headers"))?,
        None => Vec::new(),
    };
    let accept_proxy_protocol = optional_bool(cx, &object, "acceptProxyProtocol")?
        .then(|| object.at("acceptProxyProtocol"));
    Ok(WsRequest {
        settings: WsSettings {
            path: normalized_ws_path(raw),
            headers,
        },
        accept_proxy_protocol,
    })
}

/// V2Ray's `GetNormalizedPath`: `"/"` for an empty path, a leading `/`
/// added when missing.
fn normalized_ws_path(path: String) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

/// `headers`, a string-to-string object (a Go map), in document order.
fn ws_headers(cx: &Cx<'_>, node: &Node, path: &str) -> Result<Vec<(String, String)>, ConfigError> {
    header_map(cx, node, path, |_name, value, value_path| match value {
        // Go decodes `null` into a map entry as the empty string.
        Node::Null => Ok(String::new()),
        other => cx.string(other, value_path),
    })
}

/// A headers object (a Go map: name → value), each value read by `value`
/// (given the name, the node and its path), in
/// document order. A repeated name (compared exactly, as map keys are)
/// keeps its first place and takes the last value.
fn header_map<T>(
    cx: &Cx<'_>,
    node: &Node,
    path: &str,
    value: impl Fn(&str, &Node, &str) -> Result<T, ConfigError>,
) -> Result<Vec<(String, T)>, ConfigError> {
    let object = cx.object(node, path)?;
    let mut headers: Vec<(String, T)> = Vec::new();
    for (name, node) in object.entries() {
        let read = value(name, node, &object.at(name))?;
        match headers.iter_mut().find(|(known, _)| known == name) {
            Some(entry) => entry.1 = read,
            None => headers.push((name.clone(), read)),
        }
    }
    Ok(headers)
}

/// `sockopt`: returns the path of `acceptProxyProtocol` when it is true.
fn sockopt(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<Option<String>, ConfigError> {
    let sockopt = cx.object(node, path)?;
    sockopt.warn_unknown(
        cx,
        &["mark", "tcpFastOpen", "tproxy", "acceptProxyProtocol"],
    );
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
    Ok(optional_bool(cx, &sockopt, "acceptProxyProtocol")?
        .then(|| sockopt.at("acceptProxyProtocol")))
}

/// An inbound's `sniffing`: `None` when not enabled. As in 4.34, an
/// unknown `destOverride` name is an error even when sniffing is off.
pub(super) fn sniffing(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<Option<Sniffing>, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["enabled", "destOverride"]);
    let mut dest_override = Vec::new();
    if let Some(node) = object.get("destOverride") {
        let override_path = object.at("destOverride");
        let list = cx.string_list(node, &override_path)?;
        dest_override = sniff_protocols(cx, &list, &override_path)?;
    }
    if !optional_bool(cx, &object, "enabled")? {
        return Ok(None);
    }
    Ok(Some(Sniffing { dest_override }))
}

/// `destOverride` (or the legacy `domainOverride`) names: "http", and
/// "tls", "https" or "ssl", in any case; each kept once, in order.
pub(super) fn sniff_protocols(
    cx: &Cx<'_>,
    list: &[String],
    path: &str,
) -> Result<Vec<SniffOverride>, ConfigError> {
    let mut protocols = Vec::new();
    for (index, name) in list.iter().enumerate() {
        let Some(protocol) = SniffOverride::parse(name) else {
            return Err(cx.invalid(
                &index_path(path, index),
                format!("unknown protocol {name:?} (known: http, tls)"),
            ));
        };
        if !protocols.contains(&protocol) {
            protocols.push(protocol);
        }
    }
    Ok(protocols)
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
