//! Every shared routing table through the real v2ray 4.34, compared with
//! `Router` case by case.
//!
//! ```text
//!  test client ──▶ v2ray dokodemo-door "in…" (one per case: the case's
//!                   destination, inbound tag, network)
//!                    │ v2ray's router
//!                    ├─▶ freedom "out-x", redirect ──▶ tag server: writes "out-x", closes
//!                    └─▶ blackhole "blocked" ──▶ connection closed, nothing read
//! ```
//!
//! What the client reads is v2ray's verdict; `Router::route` on the same
//! session must give the same one. One v2ray process per table.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rayback_core::Network;
use rayback_routing::geodata::{encode, DomainKind, GeoDomain};
use rayback_routing::{AssetLocator, Cidr, Router, RuleSettings};
use rayback_testkit::{free_port, v2ray_path, v2ray_test, wait_for_port, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use common::{Case, Table, OUTBOUNDS};

const CASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a UDP client waits before calling the session blocked.
const UDP_WAIT: Duration = Duration::from_millis(1500);

/// A real v2ray started with extra environment, killed by PID on drop.
struct V2RayProcess {
    child: Child,
    _dir: TempDir,
}

impl V2RayProcess {
    async fn start(config: &Value, env: &[(&str, &Path)], ready: &[u16]) -> Result<V2RayProcess> {
        let dir = TempDir::new("routing-interop")?;
        let path = dir.path.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        let log_path = dir.path.join("output.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(v2ray_path());
        command
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().context("starting v2ray")?;
        let process = V2RayProcess { child, _dir: dir };
        for port in ready {
            if let Err(error) = wait_for_port(SocketAddr::from(([127, 0, 0, 1], *port))).await {
                let output = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{error:#}; v2ray said: {output}");
            }
        }
        Ok(process)
    }
}

impl Drop for V2RayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP and UDP servers on one port that answer with their outbound's name.
async fn tag_server(name: &'static str) -> Result<u16> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)).await else {
            continue;
        };
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = socket.write_all(name.as_bytes()).await;
                    let _ = socket.shutdown().await;
                    let mut sink = [0u8; 256];
                    let _ = tokio::time::timeout(CASE_TIMEOUT, socket.read(&mut sink)).await;
                });
            }
        });
        tokio::spawn(async move {
            let mut buffer = [0u8; 2048];
            while let Ok((_, from)) = udp.recv_from(&mut buffer).await {
                let _ = udp.send_to(name.as_bytes(), from).await;
            }
        });
        return Ok(port);
    }
    bail!("no port free for both TCP and UDP")
}

fn config(table_routing: Value, cases: &[Case], inbound_ports: &[u16], tag_ports: &[u16]) -> Value {
    let inbounds: Vec<Value> = cases
        .iter()
        .zip(inbound_ports)
        .map(|(case, port)| {
            json!({
                "tag": case.inbound_tag,
                "listen": "127.0.0.1",
                "port": port,
                "protocol": "dokodemo-door",
                "settings": {
                    "address": case.address,
                    "port": case.port,
                    "network": if case.network == Network::Udp { "tcp,udp" } else { "tcp" },
                },
            })
        })
        .collect();
    let mut outbounds: Vec<Value> = OUTBOUNDS[..4]
        .iter()
        .zip(tag_ports)
        .map(|(tag, port)| {
            json!({
                "tag": tag,
                "protocol": "freedom",
                "settings": {"redirect": format!("127.0.0.1:{port}")},
            })
        })
        .collect();
    outbounds.push(json!({"tag": "blocked", "protocol": "blackhole"}));
    json!({
        "log": {"loglevel": "none"},
        "inbounds": inbounds,
        "outbounds": outbounds,
        "routing": table_routing,
    })
}

/// Sends one session through v2ray; returns the outbound name it reached
/// and the client's address (the session's source).
async fn probe(case: &Case, inbound_port: u16) -> Result<(String, SocketAddr)> {
    let inbound = SocketAddr::from(([127, 0, 0, 1], inbound_port));
    match case.network {
        Network::Tcp => {
            let socket = TcpSocket::new_v4()?;
            if let Some(port) = case.source_port {
                socket.set_reuseaddr(true)?;
                socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
            }
            let mut stream = socket.connect(inbound).await?;
            let source = stream.local_addr()?;
            let mut answer = Vec::new();
            tokio::time::timeout(CASE_TIMEOUT, stream.read_to_end(&mut answer))
                .await
                .context("v2ray kept the connection open")??;
            let name = if answer.is_empty() {
                "blocked".to_owned()
            } else {
                String::from_utf8(answer)?
            };
            Ok((name, source))
        }
        Network::Udp => {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            let source = socket.local_addr()?;
            socket.send_to(b"hello", inbound).await?;
            let mut buffer = [0u8; 64];
            let name = match tokio::time::timeout(UDP_WAIT, socket.recv(&mut buffer)).await {
                Ok(read) => String::from_utf8(buffer[..read?].to_vec())?,
                Err(_) => "blocked".to_owned(),
            };
            Ok((name, source))
        }
    }
}

/// Runs `table` through v2ray and `Router`; returns the mismatches as text.
///
/// v2ray 4.34 starts only the last of several inbounds sharing a tag (its
/// inbound manager keys handlers by tag), so each v2ray process gets
/// inbounds with distinct tags: tables without `inboundTag` rules get a
/// unique tag per case, the others run in as many rounds as needed.
async fn compare(table: &Table, assets: Option<&Path>) -> Result<Vec<String>> {
    let mut tag_ports = Vec::new();
    for name in &OUTBOUNDS[..4] {
        tag_ports.push(tag_server(name).await?);
    }
    let locator = AssetLocator::with_dirs(assets.map(Path::to_path_buf).into_iter().collect());
    let tags: Vec<String> = OUTBOUNDS.iter().map(|tag| tag.to_string()).collect();
    let router = Router::new(&table.spec(), &tags, &locator)?;

    let tags_matter = table.rules.iter().any(|rule| !rule.inbound_tag.is_empty());
    let mut cases: Vec<Case> = table
        .cases
        .iter()
        .enumerate()
        .map(|(index, case)| Case {
            inbound_tag: if tags_matter {
                case.inbound_tag
            } else {
                Box::leak(format!("in-{index}").into_boxed_str())
            },
            ..*case
        })
        .collect();
    let mut mismatches = Vec::new();
    while !cases.is_empty() {
        let mut round = Vec::new();
        let mut rest = Vec::new();
        for case in cases {
            if round
                .iter()
                .any(|taken: &Case| taken.inbound_tag == case.inbound_tag)
            {
                rest.push(case);
            } else {
                round.push(case);
            }
        }
        cases = rest;
        mismatches.extend(compare_round(table, &round, &router, &tag_ports, assets).await?);
    }
    Ok(mismatches)
}

async fn compare_round(
    table: &Table,
    cases: &[Case],
    router: &Router,
    tag_ports: &[u16],
    assets: Option<&Path>,
) -> Result<Vec<String>> {
    let inbound_ports: Vec<u16> = cases.iter().map(|_| free_port()).collect();
    let config = config(table.json(), cases, &inbound_ports, tag_ports);
    let env: Vec<(&str, &Path)> = assets
        .map(|dir| ("V2RAY_LOCATION_ASSET", dir))
        .into_iter()
        .collect();
    let _v2ray = V2RayProcess::start(&config, &env, &inbound_ports).await?;

    let probes = cases
        .iter()
        .zip(&inbound_ports)
        .map(|(case, port)| probe(case, *port));
    let results = futures_join_all(probes).await;
    let mut mismatches = Vec::new();
    for (case, result) in cases.iter().zip(results) {
        let (v2ray_says, source) = result?;
        let rayback_says = common::verdict(router, &common::session(case, source));
        let label = format!(
            "{} {} {}:{} via {}",
            table.name, case.network, case.address, case.port, case.inbound_tag
        );
        if rayback_says != case.want {
            mismatches.push(format!(
                "{label}: rayback {rayback_says}, table says {}",
                case.want
            ));
        }
        let v2ray_want = case.v2ray_differs.unwrap_or(case.want);
        if v2ray_says != v2ray_want {
            mismatches.push(format!(
                "{label}: v2ray {v2ray_says}, table says {v2ray_want}"
            ));
        }
    }
    Ok(mismatches)
}

/// Polls all futures together (the cases of a table run concurrently).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_route_like_v2ray() -> Result<()> {
    let source_port = free_port();
    let tables = common::tables(source_port);
    let mut mismatches = Vec::new();
    let mut cases = 0;
    for table in &tables {
        let found = tokio::time::timeout(Duration::from_secs(30), compare(table, None))
            .await
            .with_context(|| format!("table {} timed out", table.name))??;
        mismatches.extend(found);
        cases += table.cases.len();
    }
    assert!(cases > 40, "only {cases} cases");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    Ok(())
}

fn site(kind: DomainKind, value: &str, attributes: &[&str]) -> GeoDomain {
    GeoDomain {
        kind,
        value: value.to_owned(),
        attributes: attributes.iter().map(|a| a.to_string()).collect(),
    }
}

fn cidrs(texts: &[&str]) -> Vec<Cidr> {
    texts
        .iter()
        .map(|text| Cidr::parse(text).expect("cidr"))
        .collect()
}

/// Writes small geo files into `dir`: what the geo table reads.
fn write_geo_files(dir: &Path) -> Result<()> {
    let geosite = encode::site_list(&[
        ("other", vec![site(DomainKind::Full, "other.test", &[])]),
        (
            "TEST",
            vec![
                site(DomainKind::Full, "ad.geo.test", &["ads"]),
                site(DomainKind::Domain, "geo.test", &[]),
                site(DomainKind::Plain, "geokw", &[]),
                site(DomainKind::Regex, "^georx[0-9]$", &["ADS"]),
            ],
        ),
    ]);
    std::fs::write(dir.join("geosite.dat"), geosite)?;
    let extra = encode::site_list(&[("mine", vec![site(DomainKind::Domain, "mine.example", &[])])]);
    std::fs::write(dir.join("extra.dat"), extra)?;
    let geoip = encode::ip_list(&[
        ("CN", cidrs(&["1.0.1.0/24"])),
        ("PRIVATE", cidrs(&["10.0.0.0/8", "fd00::/8"])),
    ]);
    std::fs::write(dir.join("geoip.dat"), geoip)?;
    let extra_ip = encode::ip_list(&[("set", cidrs(&["203.0.113.0/24"]))]);
    std::fs::write(dir.join("extraip.dat"), extra_ip)?;
    Ok(())
}

fn geo_table() -> Table {
    let rule = |target: &str, domain: &[&str], ip: &[&str]| RuleSettings {
        domain: domain.iter().map(|d| d.to_string()).collect(),
        ip: ip.iter().map(|d| d.to_string()).collect(),
        ..RuleSettings::outbound(target)
    };
    let tcp = |address: &'static str, want: &'static str| Case {
        inbound_tag: "in",
        address,
        port: 80,
        network: Network::Tcp,
        source_port: None,
        want,
        v2ray_differs: None,
    };
    Table {
        name: "geo",
        strategy: "AsIs",
        rules: vec![
            rule("out-a", &["geosite:test@ads"], &[]),
            rule("out-b", &["geosite:TEST"], &[]),
            rule("out-c", &["ext:extra.dat:mine"], &[]),
            rule("out-a", &[], &["geoip:private"]),
            rule("out-b", &[], &["ext-ip:extraip.dat:set"]),
        ],
        balancers: vec![],
        cases: vec![
            tcp("ad.geo.test", "out-a"),
            tcp("georx5", "out-a"),
            tcp("x.geo.test", "out-b"),
            tcp("mygeokw.io", "out-b"),
            tcp("georx55", "out-default"),
            tcp("other.test", "out-default"),
            tcp("a.mine.example", "out-c"),
            tcp("10.2.3.4", "out-a"),
            tcp("fd00::1", "out-a"),
            tcp("203.0.113.9", "out-b"),
            tcp("1.0.1.1", "out-default"),
            tcp("8.8.8.8", "out-default"),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_files_route_like_v2ray() -> Result<()> {
    let dir = TempDir::new("routing-geo")?;
    write_geo_files(&dir.path)?;
    let table = geo_table();
    let mismatches =
        tokio::time::timeout(Duration::from_secs(30), compare(&table, Some(&dir.path)))
            .await
            .context("geo table timed out")??;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    Ok(())
}

/// A rule JSON and whether v2ray 4.34 and Rayback refuse it, checked with
/// `v2ray -test`. `attrs` is the deliberate difference: v2ray accepts it,
/// Rayback (no request attributes) refuses it with a clear error rather
/// than never matching.
#[test]
fn build_errors_agree_with_v2ray_test() -> Result<()> {
    let cases: Vec<(Value, bool, bool)> = vec![
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["regexp:("]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["full:"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["dotless:a.b"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["geosite:cn"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["ext:x.dat"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "ip": ["10.0.0.0/33"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "ip": ["not-an-ip"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "ip": ["geoip:private"]}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "port": "abc"}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "sourcePort": "1-x"}),
            false,
            false,
        ),
        (
            json!({"type": "field", "balancerTag": "nope", "port": "1"}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a"}),
            false,
            false,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "domain": ["keyword:x", "plain", "dotless:"]}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "ghost", "port": "53,1000-2000"}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "inboundTag": [""]}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "network": "unix"}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "ip": ["::1", "10.0.0.1/"]}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "port": "2000-1000"}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "protocol": ["http"]}),
            true,
            true,
        ),
        (
            json!({"type": "field", "outboundTag": "out-a", "attrs": "attrs[':method'] == 'GET'"}),
            true,
            false,
        ),
    ];
    let tags: Vec<String> = OUTBOUNDS.iter().map(|tag| tag.to_string()).collect();
    let mut wrong = Vec::new();
    for (rule, v2ray_accepts, rayback_accepts) in cases {
        let config = json!({
            "log": {"loglevel": "none"},
            "inbounds": [{"port": free_port(), "listen": "127.0.0.1", "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": 1}}],
            "outbounds": [{"tag": "out-a", "protocol": "freedom"}],
            "routing": {"rules": [rule.clone()]},
        });
        let (code, output) = v2ray_test(&config.to_string(), "config.json")?;
        if (code == 0) != v2ray_accepts {
            wrong.push(format!("v2ray exit {code} for {rule}: {output}"));
        }
        let spec = json_rule_spec(&rule);
        let built = Router::new(&spec, &tags, &AssetLocator::with_dirs(vec![]));
        if built.is_ok() != rayback_accepts {
            wrong.push(format!("rayback {:?} for {rule}", built.err()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// The spec the app would build from one rule object of the cases above.
fn json_rule_spec(rule: &Value) -> rayback_routing::RoutingSettings {
    let list = |key: &str| -> Vec<String> {
        match &rule[key] {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::String(text) => text.split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let text = |key: &str| rule[key].as_str().map(str::to_owned);
    let target = match text("outboundTag") {
        Some(tag) => rayback_routing::RuleTarget::Outbound(tag),
        None => rayback_routing::RuleTarget::Balancer(text("balancerTag").unwrap_or_default()),
    };
    rayback_routing::RoutingSettings {
        rules: vec![RuleSettings {
            inbound_tag: list("inboundTag"),
            domain: list("domain"),
            ip: list("ip"),
            port: text("port"),
            source_port: text("sourcePort"),
            network: list("network")
                .iter()
                .map(|name| rayback_routing::RuleNetwork::parse(name))
                .collect(),
            source: list("source"),
            user: list("user"),
            protocol: list("protocol"),
            attrs: text("attrs"),
            target,
        }],
        ..Default::default()
    }
}
