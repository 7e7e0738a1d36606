//! The seed page's reverse proxy with a real nginx in front of the
//! portal's tunnel port, as a portal is often deployed: nginx terminates
//! TLS, the portal speaks plain WebSocket behind it.
//!
//! ```text
//! test client ─▶ portal :public (dokodemo-door) ═══ VMess + Mux.Cool over the tunnel ═══▶ bridge ─▶ freedom (redirect) ─▶ backend (echo)
//! bridge ══ ws+tls ══▶ nginx :443-ish (TLS ends here) ── PROXY v1 + ws ──▶ portal :tunnel (ws, acceptProxyProtocol)
//! ```
//!
//! Two fronts, each with its own nginx (a child process with its own
//! config, logs and pid file in a temporary directory, ports from
//! `free_port`):
//!
//! - `stream`: nginx's stream module (`listen ... ssl; proxy_pass ...;
//!   proxy_protocol on;`) passes the bytes on with a PROXY v1 header; the
//!   portal's inbound has `wsSettings.acceptProxyProtocol`.
//! - `http`: nginx's http module proxies the WebSocket upgrade and adds
//!   `X-Forwarded-For`; the portal's inbound is plain `ws`.
//!
//! Each front carries 16 concurrent 4 MiB echoes through the portal's
//! public port, SHA-256 compared. Then the portal's access log (V2Ray's
//! `log.access`) must name, as the source of the bridge's tunnel sessions,
//! the address nginx passed on, not nginx's own: everything is on
//! loopback, so the proof is by port. Behind the stream front the logged
//! ports are the bridge's own local ports toward nginx (read from /proc
//! while the tunnel is up, and from nginx's `$remote_port` once it is
//! down) and none of nginx's outgoing ports toward the portal. Behind the
//! http front `X-Forwarded-For` names an IP only, so the logged source is
//! `127.0.0.1:0`, as in V2Ray 4.34.
//!
//! Without nginx installed both tests print "skipped: nginx not installed"
//! and return; `.ci/run` installs it (and `libnginx-mod-stream`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{
    bridge_binary, bridge_stream, check_config, configs, local_ports_of, portal_binary, public,
    start_serving, with_members, End, Kind,
};
use rayback_testkit::tls::{SelfSigned, TunnelTls, TUNNEL_WS_PATH as WS_PATH};
use rayback_testkit::with_tunnel_stream;
use rayback_testkit::{
    backend, echo_many, free_port, seed_configs, wait_for_port, SeedPorts, TempDir,
};

const CONNECTIONS: usize = 16;
const SIZE: usize = 4 << 20;
/// The tunnel's domain in the seed configs: the portal's access line for
/// a bridge's tunnel session names it as the destination.
const TUNNEL_DOMAIN: &str = "test.v2ray.com";
/// Debian's place for nginx's dynamic modules (`libnginx-mod-stream`).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The nginx binary: on `PATH`, or in an sbin directory that a non-root
/// `PATH` often lacks.
fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// A running nginx, stopped by PID on drop.
///
/// It runs with `master_process off`: one process that accepts and
/// proxies itself, so killing that PID leaves no worker behind holding
/// the port (a SIGKILLed master's workers would live on), and its sockets
/// are that PID's in /proc.
struct Nginx {
    child: Child,
    dir: TempDir,
}

impl Nginx {
    /// Starts `binary` with `config` written to `dir/nginx.conf` (the
    /// prefix is `dir`; `-e` keeps even the start-up errors there), then
    /// waits for `ready_port` on 127.0.0.1.
    async fn start(binary: &Path, dir: TempDir, config: &str, ready_port: u16) -> Result<Nginx> {
        let conf = dir.path.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let stderr = std::fs::File::create(dir.path.join("stderr.log"))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(format!("{}/", dir.path.display()))
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut nginx = Nginx { child, dir };
        let ready = wait_for_port(SocketAddr::from(([127, 0, 0, 1], ready_port))).await;
        if let Some(status) = nginx.child.try_wait()? {
            bail!(
                "nginx exited ({status}):\n{}\n{}\nconfig:\n{config}",
                nginx.read("stderr.log"),
                nginx.read("error.log")
            );
        }
        ready.with_context(|| format!("nginx: {}", nginx.read("error.log")))?;
        Ok(nginx)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A file of nginx's directory, as text (empty when absent).
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path.join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What stands in front of the portal's tunnel port.
#[derive(Clone, Copy, Debug)]
enum Front {
    /// nginx's stream module: TLS ended, bytes passed on after a PROXY v1
    /// header.
    Stream,
    /// nginx's http module: TLS ended, the WebSocket upgrade proxied with
    /// `X-Forwarded-For`.
    Http,
}

/// nginx's config for `front`, listening on `listen` (TLS with
/// `certificate`) and passing to the portal's `portal_tunnel`; every
/// path nginx writes is in `dir`.
fn nginx_config(
    front: Front,
    dir: &Path,
    listen: u16,
    portal_tunnel: u16,
    certificate: &SelfSigned,
) -> String {
    let dir = dir.display();
    let cert = certificate.cert_path.display();
    let key = certificate.key_path.display();
    // A Debian nginx has the stream module as a dynamic module; a build
    // with it compiled in has no such file and needs no load_module.
    let load = if Path::new(STREAM_MODULE).exists() {
        format!("load_module {STREAM_MODULE};")
    } else {
        String::new()
    };
    let head = format!(
        "{load}
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
"
    );
    let body = match front {
        Front::Stream => format!(
            "stream {{
    log_format tunnel '$remote_addr:$remote_port $upstream_addr $status';
    access_log {dir}/access.log tunnel;
    server {{
        listen 127.0.0.1:{listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        proxy_pass 127.0.0.1:{portal_tunnel};
        proxy_protocol on;
    }}
}}
"
        ),
        Front::Http => format!(
            "http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location {WS_PATH} {{
            proxy_pass http://127.0.0.1:{portal_tunnel};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection \"upgrade\";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"
        ),
    };
    head + &body
}

/// `text` as a JSON string (paths and PEM lines need no escapes here).
fn quoted(text: &str) -> String {
    assert!(
        !text.contains(['"', '\\']) && !text.contains(|c: char| c.is_control()),
        "{text:?} needs JSON escapes"
    );
    format!("\"{text}\"")
}

/// The portal's `streamSettings`: plain ws, with the PROXY protocol behind
/// the stream front.
fn portal_stream(front: Front) -> String {
    let proxy = matches!(front, Front::Stream);
    format!(
        r#"{{"network": "ws", "wsSettings": {{"path": {path}, "acceptProxyProtocol": {proxy}}}}}"#,
        path = quoted(WS_PATH),
    )
}

/// The sources of the portal's access lines for tunnel sessions (V2Ray's
/// shape: `date time source accepted tcp:test.v2ray.com:0 [portal]`).
fn tunnel_sources(access_log: &str) -> Result<Vec<SocketAddr>> {
    let mut sources = Vec::new();
    for line in access_log.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_date, _time, source, "accepted", destination, _tag] = fields.as_slice() else {
            bail!("an access line not in V2Ray's shape: {line:?}");
        };
        if destination
            .strip_prefix("tcp:")
            .is_some_and(|rest| rest.starts_with(&format!("{TUNNEL_DOMAIN}:")))
        {
            sources.push(
                source
                    .parse()
                    .with_context(|| format!("the source of {line:?}"))?,
            );
        }
    }
    Ok(sources)
}

/// The `$remote_port`s of the stream front's access log (one line per
/// finished session: `addr:port upstream status`) whose upstream is the
/// portal's tunnel port.
fn nginx_client_ports(access_log: &str, portal_tunnel: u16) -> BTreeSet<u16> {
    access_log
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let client: SocketAddr = fields.next()?.parse().ok()?;
            let upstream: SocketAddr = fields.next()?.parse().ok()?;
            (upstream.port() == portal_tunnel).then_some(client.port())
        })
        .collect()
}

/// Bridge ─ws+tls─▶ nginx (`front`) ─▶ portal: serving, 16 × 4 MiB
/// echoes, then the portal's record of where its tunnel came from.
async fn behind_nginx(front: Front, seed: u64) {
    let Some(nginx_binary) = nginx_binary() else {
        eprintln!("skipped: nginx not installed");
        return;
    };
    let started = Instant::now();
    let certificate = SelfSigned::localhost().unwrap();
    let backend = backend().await.unwrap();
    let (ports, _, portal_config) = configs(backend).unwrap();
    let nginx_port = free_port();
    // The bridge dials nginx; the portal's tunnel port is nginx's upstream.
    let (bridge_config, _) = seed_configs(SeedPorts {
        tunnel: nginx_port,
        ..ports
    })
    .unwrap();
    let logs = TempDir::new("nginx-portal-log").unwrap();
    let access_path = logs.path.join("access.log");
    let portal_config = with_members(
        &portal_config,
        &format!(
            r#""log": {{"access": {}, "loglevel": "warning"}}"#,
            quoted(&access_path.display().to_string())
        ),
    );
    let portal_config = with_tunnel_stream(&portal_config, &portal_stream(front)).unwrap();
    let bridge_config = with_tunnel_stream(
        &bridge_config,
        &bridge_stream(TunnelTls::WsTls, &certificate),
    )
    .unwrap();
    check_config(Kind::Rayback, &bridge_binary(), &bridge_config).unwrap();
    check_config(Kind::Rayback, &portal_binary(), &portal_config).unwrap();

    let dir = TempDir::new("nginx").unwrap();
    let config = nginx_config(front, &dir.path, nginx_port, ports.tunnel, &certificate);
    let nginx = Nginx::start(&nginx_binary, dir, &config, nginx_port)
        .await
        .unwrap();
    let (portal, bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    echo_many(
        public(ports),
        CONNECTIONS,
        SIZE,
        seed,
        Duration::from_secs(120),
    )
    .await
    .unwrap();

    // While the tunnel is up: the bridge's ports toward nginx, and
    // nginx's toward the portal (the portal's TCP peers).
    let bridge_ports: BTreeSet<u16> = local_ports_of(bridge.pid(), End::Remote, nginx_port)
        .into_iter()
        .collect();
    let nginx_ports: BTreeSet<u16> = local_ports_of(nginx.pid(), End::Remote, ports.tunnel)
        .into_iter()
        .collect();
    let access = std::fs::read_to_string(&access_path).unwrap_or_default();
    let sources = tunnel_sources(&access).unwrap();
    let logged: BTreeSet<u16> = sources.iter().map(SocketAddr::port).collect();
    let summary = format!(
        "{front:?} front: bridge → nginx from {bridge_ports:?}; nginx → portal from {nginx_ports:?}; \
         the portal logged tunnel sources {sources:?}"
    );
    let context = format!("{summary}\nportal access log:\n{access}");
    assert!(!bridge_ports.is_empty(), "no bridge tunnel: {context}");
    assert!(
        !nginx_ports.is_empty(),
        "nginx holds no portal connection: {context}"
    );
    assert!(!sources.is_empty(), "no tunnel session logged: {context}");
    assert!(
        sources.iter().all(|source| source.ip().is_loopback()),
        "{context}"
    );
    assert!(
        logged.is_disjoint(&nginx_ports),
        "the portal logged nginx's own address: {context}"
    );
    match front {
        Front::Stream => {
            assert!(
                bridge_ports.is_subset(&logged),
                "a live tunnel's source (the bridge's port) is not in the portal's log: {context}"
            );
            // Tunnels that came and went before the snapshot: nginx logs
            // each session's client port when it ends, so stop the bridge
            // and every logged source must be one of them.
            drop(bridge);
            let limit = Instant::now() + Duration::from_secs(10);
            let seen = loop {
                let seen = nginx_client_ports(&nginx.read("access.log"), ports.tunnel);
                if logged.is_subset(&seen) || Instant::now() > limit {
                    break seen;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(
                logged.is_subset(&seen),
                "the portal logged sources nginx never had as clients ({seen:?}): {context}\nnginx's log:\n{}",
                nginx.read("access.log")
            );
        }
        Front::Http => {
            // X-Forwarded-For carries an IP only: V2Ray 4.34 (and Rayback)
            // make it the source with port 0.
            assert_eq!(logged, BTreeSet::from([0]), "{context}");
        }
    }
    eprintln!("{summary}; passed in {:?}", started.elapsed());
    drop(portal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_behind_nginx_stream_logs_the_bridge_from_the_proxy_header() {
    behind_nginx(Front::Stream, 700).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_behind_nginx_http_logs_the_forwarded_for_address() {
    behind_nginx(Front::Http, 800).await;
}

/// The parsers read what they are meant to, so an empty match above is
/// never a parser that matches nothing.
#[test]
fn the_log_parsers_read_their_lines() {
    let portal = "2026/11/24 22:04:43 127.0.0.1:53496 accepted tcp:test.v2ray.com:0 [portal]\n\
                  2026/11/24 22:04:44 127.0.0.1:53500 accepted tcp:127.0.0.1:80 [portal]\n";
    assert_eq!(
        tunnel_sources(portal).unwrap(),
        vec!["127.0.0.1:53496".parse::<SocketAddr>().unwrap()]
    );
    assert!(tunnel_sources("not an access line\n").is_err());
    let nginx = "127.0.0.1:40000 127.0.0.1:1024 200\n127.0.0.1:40001 - 400\n";
    assert_eq!(nginx_client_ports(nginx, 1024), BTreeSet::from([40000]));
}
