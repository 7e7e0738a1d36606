//! The `dns` object end to end, run by Rayback and by the real v2ray 4.34
//! with the same configuration: both must reach the same places.
//!
//! ```text
//!                       dnsmasq (127.0.0.1:PD): svc.test → 127.0.0.77, svc2.test → 127.0.0.1
//!                          ▲ dns.servers
//! client ─▶ dokodemo "by-ip" → svc.test:80 ─router (IPIfNonMatch, ip 127.0.0.77/32)─▶ freedom "right" (redirect) ─▶ greeter "right"
//! client ─▶ dokodemo "use-ip" → svc2.test:PG ─router (inboundTag)─▶ freedom "useip" (UseIP) ─▶ 127.0.0.1:PG greeter "useip"
//! client ─▶ dokodemo "hosts" → host.test:80   (dns.hosts: 127.0.0.77)     ─▶ "right"
//! client ─▶ dokodemo "alias" → alias.test:80  (dns.hosts: → svc.test)     ─▶ "right"
//! client ─▶ dokodemo "nowhere" → nowhere.test:80 (no answer) ─▶ "direct" dials the name, fails: nothing
//! ```
//!
//! Neither name exists outside dnsmasq: without the `dns` object the
//! first connection would go to the default outbound and fail, the second
//! would dial an unknown name and fail. Skipped (with a message) when
//! dnsmasq or v2ray is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use rayback_testkit::{free_port, v2ray_path, wait_for_port, V2Ray};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bound of one exchange (DNS included).
const TIMEOUT: Duration = Duration::from_secs(15);

/// A dnsmasq child on 127.0.0.1, killed (by PID) when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq_path() -> Option<PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

async fn dnsmasq(records: &[(&str, &str)]) -> Result<Option<Dnsmasq>> {
    let Some(path) = dnsmasq_path() else {
        return Ok(None);
    };
    let port = free_port();
    let mut command = Command::new(path);
    command.args([
        "--no-daemon",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
    ]);
    command.arg(format!("--port={port}"));
    for (name, address) in records {
        command.arg(format!("--address=/{name}/{address}"));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    let server = Dnsmasq { child, port };
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    Ok(Some(server))
}

/// A server on 127.0.0.1 that writes `name` to every connection, then
/// closes it.
async fn greeter(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(name.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// What a connection to 127.0.0.1:`port` reads before it ends (an error
/// ends it too).
async fn read_all(port: u16) -> Result<Vec<u8>> {
    tokio::time::timeout(TIMEOUT, async {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.write_all(b"hello").await?;
        let mut got = Vec::new();
        let _ = socket.read_to_end(&mut got).await;
        anyhow::Ok(got)
    })
    .await
    .with_context(|| format!("127.0.0.1:{port} stayed open over {TIMEOUT:?}"))?
}

/// A dokodemo-door inbound on 127.0.0.1:`port` toward `name`:80.
fn toward(tag: &str, port: u16, name: &str) -> Value {
    json!({"tag": tag, "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
           "settings": {"address": name, "port": 80, "network": "tcp"}})
}

/// The configuration under test, with its inbound ports: the two of the
/// picture's first lines, then `hosts`, `alias`, `nowhere`.
fn config(dns_port: u16, right: SocketAddr, useip: SocketAddr) -> (Value, Vec<u16>) {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (by_ip, use_ip) = (ports[0], ports[1]);
    let config = json!({
        "log": {"loglevel": "warning"},
        "dns": {
            "servers": [{"address": "127.0.0.1", "port": dns_port}],
            "hosts": {"host.test": "127.0.0.77", "alias.test": "svc.test"},
        },
        "inbounds": [
            toward("hosts", ports[2], "host.test"),
            toward("alias", ports[3], "alias.test"),
            toward("nowhere", ports[4], "nowhere.test"),
            {"tag": "by-ip", "listen": "127.0.0.1", "port": by_ip, "protocol": "dokodemo-door",
             "settings": {"address": "svc.test", "port": 80, "network": "tcp"}},
            {"tag": "use-ip", "listen": "127.0.0.1", "port": use_ip, "protocol": "dokodemo-door",
             "settings": {"address": "svc2.test", "port": useip.port(), "network": "tcp"}},
        ],
        "outbounds": [
            {"tag": "direct", "protocol": "freedom"},
            {"tag": "right", "protocol": "freedom", "settings": {"redirect": right.to_string()}},
            {"tag": "useip", "protocol": "freedom", "settings": {"domainStrategy": "UseIP"}},
        ],
        "routing": {
            "domainStrategy": "IPIfNonMatch",
            "rules": [
                {"type": "field", "inboundTag": ["use-ip"], "outboundTag": "useip"},
                {"type": "field", "ip": ["127.0.0.77/32"], "outboundTag": "right"},
            ],
        },
    });
    (config, ports)
}

/// What each inbound of `ports` reads, in order.
async fn read_each(ports: &[u16]) -> Result<Vec<Vec<u8>>> {
    let mut got = Vec::with_capacity(ports.len());
    for port in ports {
        got.push(read_all(*port).await?);
    }
    Ok(got)
}

#[tokio::test]
async fn rayback_and_v2ray_resolve_through_the_same_dns() -> Result<()> {
    let Some(dns) = dnsmasq(&[("svc.test", "127.0.0.77"), ("svc2.test", "127.0.0.1")]).await?
    else {
        println!("skipped: dnsmasq not installed");
        return Ok(());
    };
    let right = greeter("right").await?;
    let useip = greeter("useip").await?;

    let (text, ports) = config(dns.port, right, useip);
    let loaded = rayback_config::parse_str("dns.json", &serde_json::to_string_pretty(&text)?)?;
    let running = rayback_app::start(&loaded.config).await?;
    let rayback = read_each(&ports).await?;
    drop(running);
    assert_eq!(rayback[0], b"right", "rayback: routing by the resolved IP");
    assert_eq!(rayback[1], b"useip", "rayback: freedom UseIP");
    assert_eq!(rayback[2], b"right", "rayback: an address from dns.hosts");
    assert_eq!(rayback[3], b"right", "rayback: a domain value in dns.hosts");
    assert_eq!(rayback[4], b"", "rayback: a name no server knows");

    if !v2ray_path().exists() {
        println!("skipped the v2ray side: v2ray not installed");
        return Ok(());
    }
    let (text, ports) = config(dns.port, right, useip);
    let _v2ray = V2Ray::start(&text, &ports).await?;
    let v2ray = read_each(&ports).await?;
    assert_eq!(v2ray, rayback, "v2ray reaches other places than Rayback");
    Ok(())
}
