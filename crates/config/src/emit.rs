//! Writing a [`Config`] back as V2Ray 4.34 JSON (for `--print-config`).
//!
//! The output uses the modern form (top-level `rules`, `inbounds`,
//! `outbounds`), spells every value out (defaults included), and keeps the
//! Rayback-only keys (`rayback`, `controlDomain`), which V2Ray ignores. It
//! reveals VMess IDs and inline TLS keys: the result is a configuration,
//! not a log line. A certificate or key read from a file is written as
//! that file's name, so it is read again when the output is loaded.
//!
//! Parsing the output gives back an equal `Config`, with two exceptions
//! the JSON cannot carry: WebSocket `headers` come back sorted by name
//! (a `serde_json::Map` sorts its keys), and a certificate's origin names
//! its place in the output (`inbounds[i]`), which differs from the input's
//! when that used the deprecated `inbound`/`inboundDetour` forms or merged
//! several files.

use serde_json::{json, Map, Value};

use crate::model::*;

impl Config {
    /// The configuration as V2Ray JSON that `v2ray -test` accepts.
    pub fn to_v2ray_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("log".into(), log(&self.log));
        top.insert(
            "inbounds".into(),
            self.inbounds.iter().map(inbound).collect(),
        );
        top.insert(
            "outbounds".into(),
            self.outbounds.iter().map(outbound).collect(),
        );
        top.insert("routing".into(), routing(&self.routing));
        if let Some(settings) = &self.dns {
            top.insert("dns".into(), dns(settings));
        }
        top.insert("reverse".into(), reverse(&self.reverse));
        top.insert("policy".into(), policy(&self.policy));
        top.insert("rayback".into(), rayback(&self.rayback));
        Value::Object(top)
    }
}

fn log(log: &Log) -> Value {
    let target = |target: &LogTarget| match target {
        LogTarget::Console => String::new(),
        LogTarget::None => "none".to_owned(),
        LogTarget::File(path) => path.clone(),
    };
    let level = match log.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
        LogLevel::None => "none",
    };
    json!({ "access": target(&log.access), "error": target(&log.error), "loglevel": level })
}

fn network_names(networks: &[Network]) -> Value {
    networks
        .iter()
        .map(|network| match network {
            Network::Tcp => "tcp",
            Network::Udp => "udp",
        })
        .collect()
}

fn inbound(inbound: &Inbound) -> Value {
    let mut object = Map::new();
    if let Some(tag) = &inbound.tag {
        object.insert("tag".into(), json!(tag.as_str()));
    }
    if let Some(listen) = inbound.listen {
        object.insert("listen".into(), json!(listen.to_string()));
    }
    let port = match &inbound.port {
        InboundPort::Range(range) if range.from == range.to => json!(range.from),
        InboundPort::Range(range) => json!(range.to_string()),
        InboundPort::Env(name) => json!(format!("env:{name}")),
    };
    object.insert("port".into(), port);
    if !inbound.stream.is_plain_tcp() {
        object.insert("streamSettings".into(), stream_settings(&inbound.stream));
    }
    if let Some(sniffing) = &inbound.sniffing {
        let names: Vec<&str> = sniffing.dest_override.iter().map(|p| p.as_str()).collect();
        object.insert(
            "sniffing".into(),
            json!({"enabled": true, "destOverride": names}),
        );
    }
    let (protocol, settings) = match &inbound.settings {
        InboundSettings::DokodemoDoor(door) => {
            let mut settings = Map::new();
            if let Some(address) = &door.address {
                settings.insert("address".into(), json!(address));
            }
            settings.insert("port".into(), json!(door.port));
            settings.insert("network".into(), network_names(&door.network));
            settings.insert("timeout".into(), json!(door.timeout));
            settings.insert("followRedirect".into(), json!(door.follow_redirect));
            settings.insert("userLevel".into(), json!(door.user_level));
            ("dokodemo-door", Value::Object(settings))
        }
        InboundSettings::Vmess(vmess) => {
            let clients: Vec<Value> = vmess
                .clients
                .iter()
                .map(|client| {
                    let mut user = Map::new();
                    user.insert("id".into(), json!(client.id.reveal()));
                    user.insert("level".into(), json!(client.level));
                    user.insert("alterId".into(), json!(client.alter_id));
                    if let Some(email) = &client.email {
                        user.insert("email".into(), json!(email));
                    }
                    Value::Object(user)
                })
                .collect();
            let mut settings = Map::new();
            settings.insert("clients".into(), Value::Array(clients));
            if let Some(default) = vmess.default {
                settings.insert(
                    "default".into(),
                    json!({ "alterId": default.alter_id, "level": default.level }),
                );
            }
            settings.insert(
                "disableInsecureEncryption".into(),
                json!(vmess.disable_insecure_encryption),
            );
            ("vmess", Value::Object(settings))
        }
        InboundSettings::Vless(vless) => {
            let clients: Vec<Value> = vless.clients.iter().map(vless_user).collect();
            let fallbacks: Vec<Value> = vless
                .fallbacks
                .iter()
                .map(|fallback| {
                    let dest = match &fallback.dest {
                        VlessFallbackDest::Tcp(dest) | VlessFallbackDest::Unix(dest) => dest,
                    };
                    json!({ "path": fallback.path, "dest": dest, "xver": fallback.xver })
                })
                .collect();
            (
                "vless",
                json!({ "clients": clients, "decryption": "none", "fallbacks": fallbacks }),
            )
        }
        InboundSettings::Socks(socks) => {
            let mut settings = Map::new();
            settings.insert("auth".into(), json!(socks.auth.v2ray_name()));
            settings.insert("accounts".into(), proxy_accounts(&socks.accounts));
            settings.insert("udp".into(), json!(socks.udp));
            if let Some(ip) = &socks.ip {
                settings.insert("ip".into(), json!(ip));
            }
            settings.insert("timeout".into(), json!(socks.timeout));
            settings.insert("userLevel".into(), json!(socks.user_level));
            ("socks", Value::Object(settings))
        }
        InboundSettings::Http(http) => (
            "http",
            json!({
                "timeout": http.timeout,
                "accounts": proxy_accounts(&http.accounts),
                "allowTransparent": http.allow_transparent,
                "userLevel": http.user_level,
            }),
        ),
    };
    object.insert("protocol".into(), json!(protocol));
    object.insert("settings".into(), settings);
    Value::Object(object)
}

/// A SOCKS or HTTP inbound's `accounts`.
fn proxy_accounts(accounts: &[ProxyAccount]) -> Value {
    accounts
        .iter()
        .map(|account| json!({ "user": account.user, "pass": account.pass }))
        .collect()
}

fn outbound(outbound: &Outbound) -> Value {
    let mut object = Map::new();
    if let Some(tag) = &outbound.tag {
        object.insert("tag".into(), json!(tag.as_str()));
    }
    if let Some(address) = outbound.send_through {
        object.insert("sendThrough".into(), json!(address.to_string()));
    }
    if let Some(mux) = outbound.mux {
        object.insert(
            "mux".into(),
            json!({ "enabled": mux.enabled, "concurrency": mux.concurrency }),
        );
    }
    if !outbound.stream.is_plain_tcp() {
        object.insert("streamSettings".into(), stream_settings(&outbound.stream));
    }
    let (protocol, settings) = match &outbound.settings {
        OutboundSettings::Freedom(freedom) => {
            let strategy = freedom.domain_strategy.v2ray_name();
            let mut settings = Map::new();
            settings.insert("domainStrategy".into(), json!(strategy));
            if let Some(redirect) = &freedom.redirect {
                settings.insert("redirect".into(), json!(redirect.to_string()));
            }
            settings.insert("userLevel".into(), json!(freedom.user_level));
            if let Some(timeout) = freedom.timeout {
                settings.insert("timeout".into(), json!(timeout));
            }
            if freedom.proxy_protocol != ProxyProtocol::Off {
                let version = freedom.proxy_protocol.version();
                settings.insert("proxyProtocol".into(), json!(version));
            }
            ("freedom", Value::Object(settings))
        }
        OutboundSettings::Vmess(vmess) => {
            let vnext: Vec<Value> = vmess
                .vnext
                .iter()
                .map(|server| {
                    let users: Vec<Value> = server
                        .users
                        .iter()
                        .map(|user| {
                            let security = user.security.v2ray_name();
                            let mut object = Map::new();
                            object.insert("id".into(), json!(user.id.reveal()));
                            object.insert("alterId".into(), json!(user.alter_id));
                            object.insert("security".into(), json!(security));
                            object.insert("level".into(), json!(user.level));
                            if let Some(email) = &user.email {
                                object.insert("email".into(), json!(email));
                            }
                            Value::Object(object)
                        })
                        .collect();
                    json!({ "address": server.address, "port": server.port, "users": users })
                })
                .collect();
            ("vmess", json!({ "vnext": vnext }))
        }
        OutboundSettings::Vless(vless) => {
            let vnext: Vec<Value> = vless
                .vnext
                .iter()
                .map(|server| {
                    let users: Vec<Value> = server
                        .users
                        .iter()
                        .map(|user| {
                            let mut object = vless_user(user);
                            object["encryption"] = json!("none");
                            object
                        })
                        .collect();
                    json!({ "address": server.address, "port": server.port, "users": users })
                })
                .collect();
            ("vless", json!({ "vnext": vnext }))
        }
        OutboundSettings::Blackhole(blackhole) => {
            let kind = blackhole.response.v2ray_name();
            ("blackhole", json!({ "response": { "type": kind } }))
        }
    };
    object.insert("protocol".into(), json!(protocol));
    object.insert("settings".into(), settings);
    Value::Object(object)
}

/// `streamSettings`. The PROXY protocol flag goes into the transport's own
/// settings (`tcpSettings`, `wsSettings`): V2Ray 4.34's listeners copy
/// that flag over `sockopt`'s, so only there does it work in both.
fn stream_settings(stream: &StreamSettings) -> Value {
    let mut object = Map::new();
    match &stream.network {
        TransportNetwork::Tcp => {
            object.insert("network".into(), json!("tcp"));
            let mut tcp = Map::new();
            if stream.accept_proxy_protocol {
                tcp.insert("acceptProxyProtocol".into(), json!(true));
            }
            if let Some(disguise) = &stream.http_disguise {
                tcp.insert("header".into(), http_disguise(disguise));
            }
            if !tcp.is_empty() {
                object.insert("tcpSettings".into(), Value::Object(tcp));
            }
        }
        TransportNetwork::WebSocket(ws) => {
            let headers: Map<String, Value> = ws
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            object.insert("network".into(), json!("ws"));
            object.insert(
                "wsSettings".into(),
                json!({
                    "path": ws.path,
                    "headers": headers,
                    "acceptProxyProtocol": stream.accept_proxy_protocol,
                }),
            );
        }
    }
    if let Some(tls) = &stream.tls {
        object.insert("security".into(), json!("tls"));
        object.insert("tlsSettings".into(), tls_settings(tls));
    }
    Value::Object(object)
}

/// `tcpSettings.header` of type `http`. Headers are written only when
/// they are not V2Ray's defaults: configured ones replace the defaults and
/// come back sorted by name, which the defaults are not.
fn http_disguise(disguise: &HttpDisguise) -> Value {
    fn headers(list: &[(String, Vec<String>)]) -> Value {
        Value::Object(
            list.iter()
                .map(|(name, values)| (name.clone(), json!(values)))
                .collect(),
        )
    }
    let (request, response) = (&disguise.request, &disguise.response);
    let mut request_json = json!({
        "version": request.version,
        "method": request.method,
        "path": request.paths,
    });
    if request.headers != HttpRequestHead::default().headers {
        request_json["headers"] = headers(&request.headers);
    }
    let mut response_json = json!({
        "version": response.version,
        "status": response.status,
        "reason": response.reason,
    });
    if response.headers != HttpResponseHead::default().headers {
        response_json["headers"] = headers(&response.headers);
    }
    json!({ "type": "http", "request": request_json, "response": response_json })
}

fn tls_settings(tls: &TlsSettings) -> Value {
    let mut object = Map::new();
    if let Some(name) = &tls.server_name {
        object.insert("serverName".into(), json!(name));
    }
    if !tls.alpn.is_empty() {
        object.insert("alpn".into(), json!(tls.alpn));
    }
    object.insert("allowInsecure".into(), json!(tls.allow_insecure));
    object.insert("disableSystemRoot".into(), json!(tls.disable_system_root));
    let certificates: Vec<Value> = tls
        .certificates
        .iter()
        .map(|certificate| {
            let mut entry = Map::new();
            pem(
                &mut entry,
                &certificate.certificate,
                "certificateFile",
                "certificate",
            );
            if let Some(key) = &certificate.key {
                pem(&mut entry, key, "keyFile", "key");
            }
            Value::Object(entry)
        })
        .collect();
    object.insert("certificates".into(), Value::Array(certificates));
    Value::Object(object)
}

/// A PEM as V2Ray reads it back: the file's name, or the text as lines
/// (which V2Ray joins with `"\n"`, giving the same text).
fn pem(entry: &mut Map<String, Value>, pem: &Pem, file_key: &str, lines_key: &str) {
    match &pem.file {
        Some(file) => entry.insert(file_key.into(), json!(file)),
        None => entry.insert(
            lines_key.into(),
            json!(pem.text.split('\n').collect::<Vec<_>>()),
        ),
    };
}

fn routing(routing: &RoutingSettings) -> Value {
    let strategy = routing.domain_strategy.v2ray_name();
    let rules: Vec<Value> = routing.rules.iter().map(rule).collect();
    let balancers: Vec<Value> = routing
        .balancers
        .iter()
        .map(|balancer| json!({ "tag": balancer.tag, "selector": balancer.selector }))
        .collect();
    json!({ "domainStrategy": strategy, "rules": rules, "balancers": balancers })
}

fn rule(rule: &RuleSettings) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), json!("field"));
    object.insert(rule.target.v2ray_key().into(), json!(rule.target.tag()));
    let mut list = |key: &str, values: &[String]| {
        if !values.is_empty() {
            object.insert(key.into(), json!(values));
        }
    };
    list("domain", &rule.domain);
    list("ip", &rule.ip);
    list("source", &rule.source);
    list("user", &rule.user);
    list("inboundTag", &rule.inbound_tag);
    list("protocol", &rule.protocol);
    if let Some(port) = &rule.port {
        object.insert("port".into(), json!(port));
    }
    if let Some(port) = &rule.source_port {
        object.insert("sourcePort".into(), json!(port));
    }
    if !rule.network.is_empty() {
        let names: Vec<&str> = rule.network.iter().map(RuleNetwork::v2ray_name).collect();
        object.insert("network".into(), json!(names));
    }
    if let Some(attrs) = &rule.attrs {
        object.insert("attrs".into(), json!(attrs));
    }
    Value::Object(object)
}

fn reverse(reverse: &Reverse) -> Value {
    let bridges: Vec<Value> = reverse
        .bridges
        .iter()
        .map(|bridge| json!({ "tag": bridge.tag, "domain": bridge.domain }))
        .collect();
    let portals: Vec<Value> = reverse
        .portals
        .iter()
        .map(|portal| {
            json!({ "tag": portal.tag, "domain": portal.domain, "controlDomain": portal.control_domain.as_str() })
        })
        .collect();
    json!({ "bridges": bridges, "portals": portals })
}

fn policy(policy: &Policy) -> Value {
    let mut levels = Map::new();
    for (level, values) in &policy.levels {
        let buffer_kib: i64 = match values.buffer_size {
            BufferSize::Unlimited => -1,
            BufferSize::Bytes(bytes) => (bytes / 1024) as i64,
        };
        levels.insert(
            level.to_string(),
            json!({
                "handshake": values.handshake.as_secs(),
                "connIdle": values.conn_idle.as_secs(),
                "uplinkOnly": values.uplink_only.as_secs(),
                "downlinkOnly": values.downlink_only.as_secs(),
                "bufferSize": buffer_kib,
            }),
        );
    }
    json!({ "levels": levels })
}

fn rayback(extras: &RaybackExtras) -> Value {
    let mut object = Map::new();
    if let Some(metrics) = extras.metrics {
        object.insert("metrics".into(), json!(metrics.to_string()));
    }
    if let Some(auth) = &extras.metrics_auth {
        object.insert("metricsAuth".into(), json!(auth.to_text()));
    }
    object.insert(
        "noBridgeWait".into(),
        json!(extras.no_bridge_wait.as_millis() as u64),
    );
    object.insert(
        "drainDelay".into(),
        json!(extras.drain_delay.as_millis() as u64),
    );
    object.insert("workers".into(), json!(extras.workers));
    let limits = &extras.limits;
    object.insert(
        "limits".into(),
        json!({
            "streamsPerConnection": limits.streams_per_connection,
            "connectionsPerBridge": limits.connections_per_bridge,
            "unauthenticatedPerSource": limits.unauthenticated_per_source,
            "streamStallTimeout": limits.stream_stall_timeout.as_secs(),
            "streamBuffer": limits.stream_buffer,
        }),
    );
    Value::Object(object)
}

/// A VLESS user as V2Ray JSON (`id`, `level`, `email`).
fn vless_user(user: &VlessClient) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(user.id.reveal()));
    object.insert("level".into(), json!(user.level));
    if let Some(email) = &user.email {
        object.insert("email".into(), json!(email));
    }
    Value::Object(object)
}

fn dns(settings: &DnsSettings) -> Value {
    let mut object = Map::new();
    let servers: Vec<Value> = settings
        .servers
        .iter()
        .map(|server| {
            let mut entry = Map::new();
            entry.insert("address".into(), server.address.v2ray_text().into());
            entry.insert("port".into(), server.port.into());
            entry.insert("domains".into(), server.domains.clone().into());
            entry.insert("expectIps".into(), server.expect_ips.clone().into());
            if let Some(ip) = server.client_ip {
                entry.insert("clientIp".into(), ip.to_string().into());
            }
            Value::Object(entry)
        })
        .collect();
    object.insert("servers".into(), servers.into());
    let mut hosts = Map::new();
    for mapping in &settings.hosts {
        let value = match &mapping.value {
            HostValue::Ip(ip) => ip.to_string(),
            HostValue::Domain(name) => name.clone(),
        };
        hosts.insert(mapping.rule.clone(), value.into());
    }
    object.insert("hosts".into(), Value::Object(hosts));
    if let Some(ip) = settings.client_ip {
        object.insert("clientIp".into(), ip.to_string().into());
    }
    if let Some(tag) = &settings.tag {
        object.insert("tag".into(), tag.clone().into());
    }
    Value::Object(object)
}
