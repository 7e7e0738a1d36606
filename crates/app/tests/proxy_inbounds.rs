//! The `socks` and `http` inbounds against real clients, on loopback:
//!
//! ```text
//! curl --socks5-hostname / --socks5 / --socks4 / --socks4a ─▶ Rayback socks inbound ─▶ freedom ─▶ HTTP server
//! curl -x http://… (plain) / -p -x (CONNECT)              ─▶ Rayback http inbound  ─▶ freedom ─▶ HTTP server
//! client ─▶ v2ray dokodemo-door ─▶ v2ray socks outbound (TCP + UDP ASSOCIATE) ─▶ Rayback socks inbound ─▶ freedom ─▶ TCP / UDP echo
//! client ─▶ v2ray dokodemo-door ─▶ v2ray http outbound (CONNECT)             ─▶ Rayback http inbound  ─▶ freedom ─▶ TCP echo
//! ```
//!
//! Bodies and echoed bytes are compared; refusals (wrong password, SOCKS 4
//! on a password inbound, wrong or missing HTTP credentials) are checked
//! by curl's outcome. A missing `curl` or `v2ray` prints "skipped".

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use rayback_app::{start, Running};
use rayback_config::parse_str;
use rayback_testkit::{echo_server, exchange, free_port, seeded_bytes, v2ray_path, V2Ray};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const USER: &str = "alice";
const PASS: &str = "s3cret";
const STEP: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn have_curl() -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: curl is not installed");
    }
    found
}

fn have_v2ray() -> bool {
    let found = v2ray_path().exists();
    if !found {
        eprintln!("skipped: no v2ray at {}", v2ray_path().display());
    }
    found
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with
/// `"<name> <path>"` (plus `"+<body>"` when it has one) and closing. Runs until the runtime ends.
async fn http_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split(' ').nth(1).unwrap_or("?").to_owned();
                let mut body = format!("{name} {path}");
                // A request body is answered back after a '+'.
                let length = text
                    .lines()
                    .find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if length > 0 {
                    let mut request_body = vec![0u8; length];
                    if socket.read_exact(&mut request_body).await.is_err() {
                        return;
                    }
                    body.push('+');
                    body.push_str(&String::from_utf8_lossy(&request_body));
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// A UDP echo on 127.0.0.1.
async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..len], peer).await;
        }
    });
    addr
}

async fn start_rayback(config: &Value) -> Running {
    let loaded = parse_str("rayback.json", &config.to_string())
        .unwrap_or_else(|error| panic!("Rayback refused its config: {error}"));
    start(&loaded.config)
        .await
        .unwrap_or_else(|error| panic!("Rayback did not start: {error:#}"))
}

/// Rayback with a SOCKS inbound (`socks_settings`) and an HTTP inbound
/// (`http_settings`), both to freedom. Returns it and the two ports.
async fn rayback_proxies(socks_settings: Value, http_settings: Value) -> (Running, u16, u16) {
    let (socks_port, http_port) = (free_port(), free_port());
    let config = json!({
        "inbounds": [
            {"tag": "socks-in", "listen": "127.0.0.1", "port": socks_port, "protocol": "socks", "settings": socks_settings},
            {"tag": "http-in", "listen": "127.0.0.1", "port": http_port, "protocol": "http", "settings": http_settings}
        ],
        "outbounds": [{"protocol": "freedom"}]
    });
    (start_rayback(&config).await, socks_port, http_port)
}

/// Runs curl with `args` (bounded in time); returns (exit code, stdout).
async fn curl(args: &[String]) -> (i32, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-s", "--max-time", "15"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(STEP, command.output())
        .await
        .expect("curl ran too long")
        .expect("curl did not run");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| (*arg).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_socks_inbound_without_auth() {
    if !have_curl() {
        return;
    }
    let server = http_server("web").await;
    let (_rayback, socks, _) = rayback_proxies(json!({"auth": "noauth"}), json!({})).await;
    let url = format!("http://{server}/page");
    for flag in ["--socks5-hostname", "--socks5", "--socks4", "--socks4a"] {
        let proxy = format!("127.0.0.1:{socks}");
        let (code, body) = curl(&args(&[flag, &proxy, &url])).await;
        assert_eq!((code, body.as_str()), (0, "web /page"), "{flag}");
    }
    // A host name travels as a name (SOCKS 5 domain, SOCKS 4a) and is
    // resolved at freedom.
    let named = format!("http://localhost:{}/named", server.port());
    for flag in ["--socks5-hostname", "--socks4a"] {
        let proxy = format!("127.0.0.1:{socks}");
        let (code, body) = curl(&args(&[flag, &proxy, &named])).await;
        assert_eq!((code, body.as_str()), (0, "web /named"), "{flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_socks_inbound_with_a_password() {
    if !have_curl() {
        return;
    }
    let server = http_server("web").await;
    let socks_settings = json!({"auth": "password", "accounts": [{"user": USER, "pass": PASS}]});
    let (_rayback, socks, _) = rayback_proxies(socks_settings, json!({})).await;
    let url = format!("http://{server}/secret");
    let good = format!("socks5h://{USER}:{PASS}@127.0.0.1:{socks}");
    let (code, body) = curl(&args(&["-x", &good, &url])).await;
    assert_eq!((code, body.as_str()), (0, "web /secret"));
    let good = format!("socks5://{USER}:{PASS}@127.0.0.1:{socks}");
    let (code, body) = curl(&args(&["-x", &good, &url])).await;
    assert_eq!((code, body.as_str()), (0, "web /secret"));

    let wrong = format!("socks5h://{USER}:nope@127.0.0.1:{socks}");
    let (code, body) = curl(&args(&["-x", &wrong, &url])).await;
    assert_ne!(code, 0, "a wrong password passed");
    assert_eq!(body, "");
    let none = format!("socks5h://127.0.0.1:{socks}");
    let (code, _) = curl(&args(&["-x", &none, &url])).await;
    assert_ne!(code, 0, "no password passed");
    // SOCKS 4 has no password: 4.34 refuses it on a password inbound.
    let proxy = format!("127.0.0.1:{socks}");
    for flag in ["--socks4", "--socks4a"] {
        let (code, _) = curl(&args(&[flag, &proxy, &url])).await;
        assert_ne!(code, 0, "{flag} passed a password inbound");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_http_inbound() {
    if !have_curl() {
        return;
    }
    let server = http_server("web").await;
    let (_rayback, _, http) = rayback_proxies(json!({}), json!({})).await;
    let proxy = format!("http://127.0.0.1:{http}");
    // Plain forwarding of an absolute URI, twice on fresh connections.
    for path in ["/plain", "/again?x=1"] {
        let url = format!("http://{server}{path}");
        let (code, body) = curl(&args(&["-x", &proxy, &url])).await;
        assert_eq!((code, body), (0, format!("web {path}")));
    }
    // Keep-alive across requests to different hosts, as 4.34: curl sends
    // `Proxy-Connection: Keep-Alive` and reuses the connection for the
    // second URL (0 new connections), which goes to another server.
    let other = http_server("other").await;
    let first = format!("http://{server}/one");
    let second = format!("http://{other}/two");
    let (code, body) = curl(&args(&[
        "-x",
        &proxy,
        "-w",
        " [%{num_connects}]\n",
        &first,
        &second,
    ]))
    .await;
    assert_eq!((code, body.as_str()), (0, "web /one [1]\nother /two [0]\n"));
    // A POST body travels, and the connection still serves the next one.
    let (code, body) = curl(&args(&[
        "-x",
        &proxy,
        "--data-binary",
        "hello",
        &first,
        "--next",
        "-x",
        &proxy,
        &second,
    ]))
    .await;
    assert_eq!((code, body.as_str()), (0, "web /one+helloother /two"));
    // A 2 MiB body (curl asks `Expect: 100-continue` first) arrives whole.
    let dir = rayback_testkit::TempDir::new("http-body").unwrap();
    let big: String = (0..2 << 20)
        .map(|index| (b'a' + (index % 26) as u8) as char)
        .collect();
    let file = dir.path.join("body");
    std::fs::write(&file, &big).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{server}/big");
    let (code, body) = curl(&args(&["-x", &proxy, "--data-binary", &data, &url])).await;
    assert_eq!(code, 0);
    assert!(
        body == format!("web /big+{big}"),
        "the big body came back changed"
    );
    // CONNECT.
    let url = format!("http://{server}/tunnel");
    let (code, body) = curl(&args(&["-p", "-x", &proxy, &url])).await;
    assert_eq!((code, body.as_str()), (0, "web /tunnel"));
    // Not an absolute URI, without allowTransparent: 400.
    let direct = format!("http://127.0.0.1:{http}/x");
    let (code, status) = curl(&args(&["-o", "/dev/null", "-w", "%{http_code}", &direct])).await;
    assert_eq!((code, status.as_str()), (0, "400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_http_inbound_with_credentials() {
    if !have_curl() {
        return;
    }
    let server = http_server("web").await;
    let http_settings = json!({"accounts": [{"user": USER, "pass": PASS}]});
    let (_rayback, _, http) = rayback_proxies(json!({}), http_settings).await;
    let proxy = format!("http://127.0.0.1:{http}");
    let url = format!("http://{server}/auth");
    let credentials = format!("{USER}:{PASS}");
    let (code, body) = curl(&args(&["-x", &proxy, "-U", &credentials, &url])).await;
    assert_eq!((code, body.as_str()), (0, "web /auth"));
    let (code, body) = curl(&args(&["-p", "-x", &proxy, "-U", &credentials, &url])).await;
    assert_eq!((code, body.as_str()), (0, "web /auth"));

    let status_of = ["-o", "/dev/null", "-w", "%{http_code}"];
    let mut wrong = args(&status_of);
    wrong.extend(args(&["-x", &proxy, "-U", "alice:nope", &url]));
    let (_, status) = curl(&wrong).await;
    assert_eq!(status, "407");
    let mut missing = args(&status_of);
    missing.extend(args(&["-x", &proxy, &url]));
    let (_, status) = curl(&missing).await;
    assert_eq!(status, "407");
}

/// v2ray: dokodemo-door on `entry` (TCP and UDP) toward `target`, out
/// through `outbound`.
fn v2ray_client(entry: u16, target: SocketAddr, network: &str, outbound: Value) -> Value {
    json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": "127.0.0.1", "port": entry, "protocol": "dokodemo-door",
            "settings": {"address": target.ip().to_string(), "port": target.port(), "network": network}
        }],
        "outbounds": [outbound]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_socks_outbound_through_rayback_socks_inbound() {
    if !have_v2ray() {
        return;
    }
    let echo = echo_server().await.unwrap();
    let socks_settings = json!({
        "auth": "password", "accounts": [{"user": USER, "pass": PASS}],
        "udp": true, "ip": "127.0.0.1"
    });
    let (_rayback, socks, _) = rayback_proxies(socks_settings, json!({})).await;
    let outbound = json!({
        "protocol": "socks",
        "settings": {"servers": [{"address": "127.0.0.1", "port": socks, "users": [{"user": USER, "pass": PASS}]}]}
    });
    let entry = free_port();
    let _v2ray = V2Ray::start(
        &v2ray_client(entry, echo, "tcp", outbound.clone()),
        &[entry],
    )
    .await
    .unwrap();
    for seed in 0..4u64 {
        let data = seeded_bytes(seed, 1 << 20);
        let back = exchange(loopback(entry), &data, STEP).await.unwrap();
        assert!(
            back == data,
            "echo {seed} differs ({} bytes back)",
            back.len()
        );
    }

    // UDP: v2ray's socks outbound asks UDP ASSOCIATE and sends datagrams
    // to the address the reply names.
    let udp_target = udp_echo().await;
    let udp_entry = free_port();
    let _v2ray_udp = V2Ray::start(&v2ray_client(udp_entry, udp_target, "udp", outbound), &[])
        .await
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buffer = vec![0u8; 2048];
    let mut echoed = 0;
    // Datagrams may be lost (v2ray may not listen yet): ask a bounded
    // number of times, each answer compared.
    for attempt in 0..40u8 {
        let payload = seeded_bytes(u64::from(attempt) + 100, 1000);
        client.send_to(&payload, loopback(udp_entry)).await.unwrap();
        if let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buffer)).await
        {
            // A late answer to an earlier attempt is still one of ours.
            let matches = (0..=attempt)
                .any(|earlier| buffer[..len] == seeded_bytes(u64::from(earlier) + 100, 1000)[..]);
            assert!(matches, "a datagram came back changed");
            echoed += 1;
            if echoed == 5 {
                break;
            }
        }
    }
    assert_eq!(
        echoed, 5,
        "UDP through v2ray's socks outbound did not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_http_outbound_through_rayback_http_inbound() {
    if !have_v2ray() {
        return;
    }
    let echo = echo_server().await.unwrap();
    let http_settings = json!({"accounts": [{"user": USER, "pass": PASS}]});
    let (_rayback, _, http) = rayback_proxies(json!({}), http_settings).await;
    let outbound = json!({
        "protocol": "http",
        "settings": {"servers": [{"address": "127.0.0.1", "port": http, "users": [{"user": USER, "pass": PASS}]}]}
    });
    let entry = free_port();
    let _v2ray = V2Ray::start(&v2ray_client(entry, echo, "tcp", outbound), &[entry])
        .await
        .unwrap();
    for seed in 10..14u64 {
        let data = seeded_bytes(seed, 1 << 20);
        let back = exchange(loopback(entry), &data, STEP).await.unwrap();
        assert!(
            back == data,
            "echo {seed} differs ({} bytes back)",
            back.len()
        );
    }
}
