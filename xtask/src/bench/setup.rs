//! The setups under test and how each one's tunnel is started on loopback.
//!
//! Every tunnel forwards a public port to one backend port (the web server
//! or an iperf3 server); a workload connects to [`Tunnel::public`] and
//! cannot tell the setups apart.
//!
//! | setup | processes | configuration |
//! |---|---|---|
//! | direct | none | the workload connects to the backend itself |
//! | Rayback | `target/release/portal`, `target/release/bridge` | the seed page's configs, ports moved (`seed_configs`); the default runtime (one thread on 1–2 CPUs, else one per CPU) |
//! | Rayback 2 threads (`rayback-2t`) | the same | the same plus `"rayback": {"workers": 2}` in both files: two runtime threads on any machine |
//! | v2ray | `/usr/bin/v2ray` twice | the seed page's two files, unchanged otherwise (no `rayback` key) |
//! | Rayback ws+tls (`rayback-wstls`) | `target/release/portal`, `target/release/bridge` | the seed page's configs plus `streamSettings` on both `interconn` handlers: WebSocket on `/tunnel` inside TLS, a fresh self-signed `localhost` certificate (testkit's `SelfSigned`) that the bridge trusts |
//! | v2ray ws+tls (`v2ray-wstls`) | `/usr/bin/v2ray` twice | the same two files as Rayback ws+tls |
//! | rathole | `rathole` server and client | generated TOML: one service to the backend, TCP transport |
//! | rathole noise | the same | plus `transport.type = "noise"` (Noise_NK, key from `rathole --genkey`) |
//!
//! The ws+tls setups' `streamSettings`, on the portal's VMess inbound and
//! the bridge's VMess outbound (both tagged `interconn` in the seed files):
//!
//! ```text
//! portal: {"network": "ws", "wsSettings": {"path": "/tunnel"}, "security": "tls",
//!          "tlsSettings": {"alpn": ["http/1.1"],
//!                          "certificates": [{"certificateFile": CERT, "keyFile": KEY}]}}
//! bridge: {"network": "ws", "wsSettings": {"path": "/tunnel", "headers": {"Host": "localhost"}},
//!          "security": "tls",
//!          "tlsSettings": {"serverName": "localhost", "alpn": ["http/1.1"],
//!                          "certificates": [{"certificateFile": CERT}]}}
//! ```
//!
//! It does not judge whether a tunnel works: the workloads find that out.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayback_testkit::tls::{tunnel_bridge_stream, tunnel_portal_stream, SelfSigned, TunnelTls};
use rayback_testkit::{free_port, seed_configs, wait_for_port, with_tunnel_stream, SeedPorts};

use super::system::{cpu_ticks, rss_kib, Daemon};

/// One way of getting from the client to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetupKind {
    Direct,
    Rayback,
    RaybackTwoThreads,
    V2Ray,
    /// Rayback with the tunnel over WebSocket inside TLS.
    RaybackWsTls,
    /// v2ray with the same WebSocket-inside-TLS tunnel.
    V2RayWsTls,
    Rathole,
    RatholeNoise,
}

/// What carries the tunnel between the bridge and the portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelTransport {
    /// VMess straight on TCP, as the seed page has it.
    Tcp,
    /// VMess inside WebSocket (`/tunnel`) inside TLS.
    WsTls,
}

impl SetupKind {
    pub const ALL: [SetupKind; 8] = [
        SetupKind::Direct,
        SetupKind::Rayback,
        SetupKind::RaybackTwoThreads,
        SetupKind::V2Ray,
        SetupKind::RaybackWsTls,
        SetupKind::V2RayWsTls,
        SetupKind::Rathole,
        SetupKind::RatholeNoise,
    ];

    /// The name used on the command line (`--only`) and in file names.
    pub fn name(self) -> &'static str {
        match self {
            SetupKind::Direct => "direct",
            SetupKind::Rayback => "rayback",
            SetupKind::RaybackTwoThreads => "rayback-2t",
            SetupKind::V2Ray => "v2ray",
            SetupKind::RaybackWsTls => "rayback-wstls",
            SetupKind::V2RayWsTls => "v2ray-wstls",
            SetupKind::Rathole => "rathole",
            SetupKind::RatholeNoise => "rathole-noise",
        }
    }

    /// The name used in the table and the chart.
    pub fn title(self) -> &'static str {
        match self {
            SetupKind::Direct => "direct",
            SetupKind::Rayback => "Rayback",
            SetupKind::RaybackTwoThreads => "Rayback 2 threads",
            SetupKind::V2Ray => "v2ray 4.34",
            SetupKind::RaybackWsTls => "Rayback ws+tls",
            SetupKind::V2RayWsTls => "v2ray 4.34 ws+tls",
            SetupKind::Rathole => "rathole plain",
            SetupKind::RatholeNoise => "rathole noise",
        }
    }

    pub fn parse(name: &str) -> Option<SetupKind> {
        SetupKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the setup runs Rayback's own binaries.
    pub fn is_rayback(self) -> bool {
        matches!(
            self,
            SetupKind::Rayback | SetupKind::RaybackTwoThreads | SetupKind::RaybackWsTls
        )
    }

    /// Whether `--quick` runs the setup when `--only` does not name it: the
    /// ws+tls pair would take CI's smoke run well past a minute, and their
    /// harness is the seed pair's, which the plain setups already check.
    pub fn in_quick_plan(self) -> bool {
        self.transport() == TunnelTransport::Tcp
    }

    /// What carries the tunnel of a portal/bridge setup (TCP for the
    /// others, which have no VMess tunnel).
    pub fn transport(self) -> TunnelTransport {
        match self {
            SetupKind::RaybackWsTls | SetupKind::V2RayWsTls => TunnelTransport::WsTls,
            _ => TunnelTransport::Tcp,
        }
    }

    /// Whether the setup has tunnel processes whose memory and CPU count.
    pub fn has_processes(self) -> bool {
        self != SetupKind::Direct
    }

    /// Whether the setup is a VMess reverse pair on plain TCP, whose portal
    /// is measured with many bridges dialling it ([`start_many_bridges`]).
    pub fn has_reverse_tcp(self) -> bool {
        matches!(
            self,
            SetupKind::Rayback | SetupKind::RaybackTwoThreads | SetupKind::V2Ray
        )
    }
}

/// A Noise key pair from `rathole --genkey` (base64, as rathole wants it).
#[derive(Clone)]
pub struct NoiseKeys {
    pub private: String,
    pub public: String,
}

impl std::fmt::Debug for NoiseKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NoiseKeys")
            .field("private", &"********")
            .field("public", &self.public)
            .finish()
    }
}

/// Parses `rathole --genkey`'s output: a `Private Key:` line and a
/// `Public Key:` line, each followed (on the same or the next non-empty
/// line) by the base64 key.
pub fn parse_genkey(output: &str) -> Option<NoiseKeys> {
    let key_after = |label: &str| -> Option<String> {
        let mut lines = output.lines().map(str::trim);
        let line = lines.find(|line| line.starts_with(label))?;
        let rest = line[label.len()..].trim_start_matches(':').trim();
        let key = if rest.is_empty() {
            lines.find(|line| !line.is_empty())?
        } else {
            rest
        };
        Some(key.to_owned())
    };
    Some(NoiseKeys {
        private: key_after("Private Key")?,
        public: key_after("Public Key")?,
    })
}

/// Where the programs of each setup are; `None` means not available.
pub struct Programs {
    /// The directory holding release `bridge` and `portal`.
    pub rayback: Option<PathBuf>,
    pub v2ray: PathBuf,
    pub rathole: Option<PathBuf>,
    pub noise_keys: Option<NoiseKeys>,
}

/// A running tunnel: its public address and its processes (killed on drop).
pub struct Tunnel {
    pub public: SocketAddr,
    /// Declared before `_certificate`, so dropped (killed) before the
    /// certificate's files go.
    daemons: Vec<Daemon>,
    /// The ws+tls setups' certificate, whose files the configurations
    /// name: kept (and its temporary folder with it) until the tunnel goes.
    _certificate: Option<SelfSigned>,
}

impl Tunnel {
    /// Starts `kind`'s tunnel toward `127.0.0.1:backend_port`, writing
    /// configurations and logs into `dir`, and waits until its public port
    /// accepts TCP (which does not yet mean the tunnel carries traffic).
    pub async fn start(
        kind: SetupKind,
        backend_port: u16,
        programs: &Programs,
        dir: &Path,
    ) -> Result<Tunnel> {
        std::fs::create_dir_all(dir)?;
        let tunnel = match kind {
            SetupKind::Direct => Tunnel {
                public: SocketAddr::from(([127, 0, 0, 1], backend_port)),
                daemons: Vec::new(),
                _certificate: None,
            },
            SetupKind::Rayback | SetupKind::RaybackTwoThreads | SetupKind::RaybackWsTls => {
                let bin = programs
                    .rayback
                    .as_ref()
                    .context("the Rayback binaries were not built")?;
                let members = match kind {
                    SetupKind::RaybackTwoThreads => Some(TWO_THREADS),
                    _ => None,
                };
                let pair = SeedPair {
                    bridge_program: &bin.join("bridge"),
                    portal_program: &bin.join("portal"),
                    members,
                    transport: kind.transport(),
                };
                start_seed_pair(&pair, backend_port, dir)?
            }
            SetupKind::V2Ray | SetupKind::V2RayWsTls => {
                let pair = SeedPair {
                    bridge_program: &programs.v2ray,
                    portal_program: &programs.v2ray,
                    members: None,
                    transport: kind.transport(),
                };
                start_seed_pair(&pair, backend_port, dir)?
            }
            SetupKind::Rathole | SetupKind::RatholeNoise => {
                let rathole = programs
                    .rathole
                    .as_ref()
                    .context("rathole is not installed")?;
                let keys = match kind {
                    SetupKind::RatholeNoise => Some(
                        programs
                            .noise_keys
                            .as_ref()
                            .context("no noise keys from rathole --genkey")?,
                    ),
                    _ => None,
                };
                start_rathole(rathole, keys, backend_port, dir)?
            }
        };
        let mut tunnel = tunnel;
        if let Err(error) = wait_for_port(tunnel.public).await {
            tunnel.check_alive()?;
            return Err(error);
        }
        tunnel.check_alive()?;
        Ok(tunnel)
    }

    pub fn has_processes(&self) -> bool {
        !self.daemons.is_empty()
    }

    /// An error if any of the tunnel's processes has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.daemons.iter_mut().try_for_each(Daemon::check_alive)
    }

    /// Resident memory of all the tunnel's processes, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.daemons
            .iter()
            .map(|daemon| rss_kib(daemon.pid()))
            .sum()
    }

    /// Resident memory of the portal (or rathole server), in KiB.
    pub fn portal_rss_kib(&self) -> Result<u64> {
        rss_kib(self.daemons.first().context("no processes")?.pid())
    }

    /// CPU time of the portal (or rathole server), in ticks.
    pub fn portal_cpu_ticks(&self) -> Result<u64> {
        cpu_ticks(self.daemons.first().context("no processes")?.pid())
    }

    /// CPU time (user + system) of all the tunnel's processes, in ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        self.daemons
            .iter()
            .map(|daemon| cpu_ticks(daemon.pid()))
            .sum()
    }
}

/// The top-level member `rayback-2t` adds to both of its files.
const TWO_THREADS: &str = r#""rayback": {"workers": 2}"#;

/// `config` (a seed file, whose top-level object opens on a line of its
/// own) with the top-level `members` (JSON text without braces) added.
pub fn with_members(config: &str, members: &str) -> Result<String> {
    if config.matches("\n{\n").count() != 1 {
        bail!("the seed config has no top-level object opening on a line of its own");
    }
    Ok(config.replacen("\n{\n", &format!("\n{{\n  {members},\n"), 1))
}

/// How to run the seed page's bridge and portal.
struct SeedPair<'a> {
    /// Rayback's `bridge`, or v2ray.
    bridge_program: &'a Path,
    /// Rayback's `portal`, or v2ray.
    portal_program: &'a Path,
    /// Top-level members added to both files, when given.
    members: Option<&'a str>,
    transport: TunnelTransport,
}

/// Writes the seed page's bridge and portal, changed as `pair` says, into
/// `dir` and starts them.
fn start_seed_pair(pair: &SeedPair<'_>, backend_port: u16, dir: &Path) -> Result<Tunnel> {
    let ports = SeedPorts {
        public: free_port(),
        tunnel: free_port(),
        service: backend_port,
    };
    let (mut bridge_config, mut portal_config) = seed_configs(ports)?;
    if let Some(members) = pair.members {
        bridge_config = with_members(&bridge_config, members)?;
        portal_config = with_members(&portal_config, members)?;
    }
    let certificate = match pair.transport {
        TunnelTransport::Tcp => None,
        TunnelTransport::WsTls => {
            let certificate = SelfSigned::localhost()?;
            bridge_config = with_tunnel_stream(
                &bridge_config,
                &tunnel_bridge_stream(TunnelTls::WsTls, &certificate.cert_path),
            )?;
            portal_config = with_tunnel_stream(
                &portal_config,
                &tunnel_portal_stream(
                    TunnelTls::WsTls,
                    &certificate.cert_path,
                    &certificate.key_path,
                ),
            )?;
            Some(certificate)
        }
    };
    Ok(Tunnel {
        public: SocketAddr::from(([127, 0, 0, 1], ports.public)),
        daemons: spawn_pair(
            pair.portal_program,
            &portal_config,
            pair.bridge_program,
            &bridge_config,
            dir,
        )?,
        _certificate: certificate,
    })
}

/// Writes `portal.json` and `bridge.json` into `dir` and starts the portal,
/// then the bridge (so that the bridge's first dial finds the portal),
/// each logging beside its file: `[portal, bridge]`.
fn spawn_pair(
    portal_program: &Path,
    portal_config: &str,
    bridge_program: &Path,
    bridge_config: &str,
    dir: &Path,
) -> Result<Vec<Daemon>> {
    let mut daemons = Vec::with_capacity(2);
    for (name, program, config) in [
        ("portal", portal_program, portal_config),
        ("bridge", bridge_program, bridge_config),
    ] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, config)?;
        daemons.push(Daemon::spawn(
            name,
            program,
            &[OsStr::new("-config"), path.as_os_str()],
            &[],
            &dir.join(format!("{name}.log")),
        )?);
    }
    Ok(daemons)
}

/// The seed page's bridge with `count` bridges in one file: tags
/// `bridge-0` … all on the seed's domain, both routing rules naming every
/// tag. One process then keeps `count` tunnels to the portal, as `count`
/// bridge hosts would (a V2Ray-style config does this with one `bridges`
/// entry per tunnel); each idle bridge holds one tunnel.
pub fn many_bridges_config(
    count: usize,
    tunnel_port: u16,
    backend_port: u16,
    members: Option<&str>,
) -> Result<String> {
    let tags: Vec<String> = (0..count).map(|index| format!("bridge-{index}")).collect();
    let bridges: Vec<serde_json::Value> = tags
        .iter()
        .map(|tag| serde_json::json!({"tag": tag, "domain": "test.v2ray.com"}))
        .collect();
    let mut config = serde_json::json!({
        "reverse": {"bridges": bridges},
        "outbounds": [
            {"tag": "out", "protocol": "freedom",
             "settings": {"redirect": format!("127.0.0.1:{backend_port}")}},
            {"tag": "interconn", "protocol": "vmess",
             "settings": {"vnext": [{"address": "127.0.0.1", "port": tunnel_port,
                                     "users": [{"id": SEED_ID}]}]}}
        ],
        "routing": {"rules": [
            {"type": "field", "inboundTag": tags, "domain": ["full:test.v2ray.com"],
             "outboundTag": "interconn"},
            {"type": "field", "inboundTag": tags, "outboundTag": "out"}
        ]}
    });
    if let Some(members) = members {
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{members}}}"))?;
        config
            .as_object_mut()
            .context("a JSON object")?
            .extend(extra);
    }
    Ok(serde_json::to_string_pretty(&config)?)
}

/// The user id of the seed page's configs.
const SEED_ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

/// A portal (the seed page's, on `kind`'s program) with one bridge process
/// holding `count` bridges ([`many_bridges_config`]); the tunnel's port.
/// The portal is `daemons[0]`.
pub fn start_many_bridges(
    kind: SetupKind,
    count: usize,
    backend_port: u16,
    programs: &Programs,
    dir: &Path,
) -> Result<(Tunnel, u16)> {
    std::fs::create_dir_all(dir)?;
    let (bridge_program, portal_program) = match kind {
        SetupKind::Rayback | SetupKind::RaybackTwoThreads => {
            let bin = programs
                .rayback
                .as_ref()
                .context("the Rayback binaries were not built")?;
            (bin.join("bridge"), bin.join("portal"))
        }
        SetupKind::V2Ray => (programs.v2ray.clone(), programs.v2ray.clone()),
        other => bail!("{} has no VMess reverse pair on TCP", other.title()),
    };
    let members = (kind == SetupKind::RaybackTwoThreads).then_some(TWO_THREADS);
    let ports = SeedPorts {
        public: free_port(),
        tunnel: free_port(),
        service: backend_port,
    };
    let (_, mut portal_config) = seed_configs(ports)?;
    if let Some(members) = members {
        portal_config = with_members(&portal_config, members)?;
    }
    let bridge_config = many_bridges_config(count, ports.tunnel, backend_port, members)?;
    let tunnel = Tunnel {
        public: SocketAddr::from(([127, 0, 0, 1], ports.public)),
        daemons: spawn_pair(
            &portal_program,
            &portal_config,
            &bridge_program,
            &bridge_config,
            dir,
        )?,
        _certificate: None,
    };
    Ok((tunnel, ports.tunnel))
}

/// The rathole server's and client's TOML for one service.
pub fn rathole_configs(
    control_port: u16,
    public_port: u16,
    backend_port: u16,
    keys: Option<&NoiseKeys>,
) -> (String, String) {
    let token = "rayback-bench-token";
    let (server_transport, client_transport) = match keys {
        Some(keys) => (
            format!("\n[server.transport]\ntype = \"noise\"\n\n[server.transport.noise]\nlocal_private_key = \"{}\"\n", keys.private),
            format!("\n[client.transport]\ntype = \"noise\"\n\n[client.transport.noise]\nremote_public_key = \"{}\"\n", keys.public),
        ),
        None => (String::new(), String::new()),
    };
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control_port}\"\ndefault_token = \"{token}\"\n{server_transport}\n\
         [server.services.backend]\nbind_addr = \"127.0.0.1:{public_port}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control_port}\"\ndefault_token = \"{token}\"\n{client_transport}\n\
         [client.services.backend]\nlocal_addr = \"127.0.0.1:{backend_port}\"\n"
    );
    (server, client)
}

fn start_rathole(
    rathole: &Path,
    keys: Option<&NoiseKeys>,
    backend_port: u16,
    dir: &Path,
) -> Result<Tunnel> {
    let (control_port, public_port) = (free_port(), free_port());
    if control_port == public_port {
        bail!("free_port gave {control_port} twice");
    }
    let (server, client) = rathole_configs(control_port, public_port, backend_port, keys);
    let server_path = dir.join("server.toml");
    let client_path = dir.join("client.toml");
    std::fs::write(&server_path, server)?;
    std::fs::write(&client_path, client)?;
    // rathole logs each connection at info level; keep the logs to warnings
    // so that writing them costs nothing measurable.
    let envs = [("RUST_LOG", "warn")];
    let server = Daemon::spawn(
        "rathole server",
        rathole,
        &[OsStr::new("--server"), server_path.as_os_str()],
        &envs,
        &dir.join("server.log"),
    )?;
    let client = Daemon::spawn(
        "rathole client",
        rathole,
        &[OsStr::new("--client"), client_path.as_os_str()],
        &envs,
        &dir.join("client.log"),
    )?;
    Ok(Tunnel {
        public: SocketAddr::from(([127, 0, 0, 1], public_port)),
        daemons: vec![server, client],
        _certificate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_names_round_trip() {
        for kind in SetupKind::ALL {
            assert_eq!(SetupKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(SetupKind::parse("xray"), None);
        assert_eq!(
            SetupKind::parse("rayback-2t"),
            Some(SetupKind::RaybackTwoThreads)
        );
        assert_eq!(
            SetupKind::parse("rayback-wstls"),
            Some(SetupKind::RaybackWsTls)
        );
        assert_eq!(SetupKind::parse("v2ray-wstls"), Some(SetupKind::V2RayWsTls));
        assert_eq!(SetupKind::RaybackWsTls.title(), "Rayback ws+tls");
        assert_eq!(SetupKind::V2RayWsTls.title(), "v2ray 4.34 ws+tls");
        assert!(SetupKind::RaybackWsTls.is_rayback() && !SetupKind::V2RayWsTls.is_rayback());
        let quick: Vec<&str> = SetupKind::ALL
            .into_iter()
            .filter(|kind| !kind.in_quick_plan())
            .map(SetupKind::name)
            .collect();
        assert_eq!(quick, ["rayback-wstls", "v2ray-wstls"]);
    }

    /// A seed file as JSON, its `//` comments stripped.
    fn parse_seed(config: &str) -> serde_json::Value {
        let json: String = config
            .lines()
            .map(|line| match line.find("//") {
                Some(at) => &line[..at],
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        serde_json::from_str(&json).expect("valid JSON")
    }

    #[test]
    fn two_threads_go_into_both_seed_files_as_valid_json() {
        let ports = SeedPorts {
            public: 1001,
            tunnel: 1002,
            service: 1003,
        };
        let (bridge, portal) = seed_configs(ports).expect("seed configs");
        for config in [bridge, portal] {
            let changed = with_members(&config, TWO_THREADS).expect("members added");
            let value = parse_seed(&changed);
            assert_eq!(value["rayback"]["workers"], 2);
            assert!(value.get("reverse").is_some());
        }
        assert!(with_members("{}", TWO_THREADS).is_err());
    }

    #[test]
    fn ws_tls_goes_on_both_interconn_handlers_as_valid_json() {
        let ports = SeedPorts {
            public: 1001,
            tunnel: 1002,
            service: 1003,
        };
        let (bridge, portal) = seed_configs(ports).expect("seed configs");
        let (cert, key) = (
            Path::new("/tmp/tls/cert.pem"),
            Path::new("/tmp/tls/key.pem"),
        );
        let bridge = with_tunnel_stream(&bridge, &tunnel_bridge_stream(TunnelTls::WsTls, cert))
            .expect("bridge");
        let portal =
            with_tunnel_stream(&portal, &tunnel_portal_stream(TunnelTls::WsTls, cert, key))
                .expect("portal");
        let (bridge, portal) = (parse_seed(&bridge), parse_seed(&portal));

        let outbound = &bridge["outbounds"][1];
        assert_eq!(
            (&outbound["tag"], &outbound["protocol"]),
            (&"interconn".into(), &"vmess".into())
        );
        let stream = &outbound["streamSettings"];
        assert_eq!(stream["network"], "ws");
        assert_eq!(stream["wsSettings"]["path"], "/tunnel");
        assert_eq!(stream["wsSettings"]["headers"]["Host"], "localhost");
        assert_eq!(stream["security"], "tls");
        assert_eq!(stream["tlsSettings"]["serverName"], "localhost");
        assert_eq!(stream["tlsSettings"]["alpn"][0], "http/1.1");
        let trusted = &stream["tlsSettings"]["certificates"][0];
        assert_eq!(trusted["certificateFile"], "/tmp/tls/cert.pem");
        assert!(trusted.get("keyFile").is_none());

        let inbound = &portal["inbounds"][1];
        assert_eq!(
            (&inbound["tag"], &inbound["protocol"]),
            (&"interconn".into(), &"vmess".into())
        );
        let stream = &inbound["streamSettings"];
        assert_eq!(stream["network"], "ws");
        assert_eq!(stream["wsSettings"]["path"], "/tunnel");
        assert_eq!(stream["security"], "tls");
        assert_eq!(stream["tlsSettings"]["alpn"][0], "http/1.1");
        let served = &stream["tlsSettings"]["certificates"][0];
        assert_eq!(served["certificateFile"], "/tmp/tls/cert.pem");
        assert_eq!(served["keyFile"], "/tmp/tls/key.pem");
        // The public inbound keeps plain TCP.
        assert!(portal["inbounds"][0].get("streamSettings").is_none());

        let twice = "\"tag\": \"interconn\" \"tag\": \"interconn\"";
        assert!(with_tunnel_stream(twice, "{}").is_err());
        assert!(with_tunnel_stream("{}", "{}").is_err());
    }

    #[test]
    fn many_bridges_share_one_domain_and_both_rules_name_every_tag() {
        let config = many_bridges_config(3, 1002, 1003, Some(TWO_THREADS)).expect("config");
        let value: serde_json::Value = serde_json::from_str(&config).expect("valid JSON");
        let bridges = value["reverse"]["bridges"].as_array().expect("bridges");
        assert_eq!(bridges.len(), 3);
        assert!(bridges
            .iter()
            .all(|bridge| bridge["domain"] == "test.v2ray.com"));
        assert_eq!(bridges[2]["tag"], "bridge-2");
        let rules = value["routing"]["rules"].as_array().expect("rules");
        for rule in rules {
            assert_eq!(rule["inboundTag"].as_array().map(Vec::len), Some(3));
        }
        assert_eq!(rules[0]["outboundTag"], "interconn");
        assert_eq!(rules[1]["outboundTag"], "out");
        assert_eq!(
            value["outbounds"][0]["settings"]["redirect"],
            "127.0.0.1:1003"
        );
        assert_eq!(value["outbounds"][1]["settings"]["vnext"][0]["port"], 1002);
        assert_eq!(value["rayback"]["workers"], 2);
        let (_, portal) = seed_configs(SeedPorts {
            public: 1001,
            tunnel: 1002,
            service: 1003,
        })
        .expect("seed configs");
        assert!(
            portal.contains(SEED_ID),
            "the portal's user is the bridges' user"
        );
    }

    #[test]
    fn genkey_output_is_parsed_on_one_or_two_lines() {
        let two_lines = "Private Key:\nAAAA+priv=\n\nPublic Key:\nBBBB/pub=\n";
        let keys = parse_genkey(two_lines).expect("keys");
        assert_eq!(
            (keys.private.as_str(), keys.public.as_str()),
            ("AAAA+priv=", "BBBB/pub=")
        );
        let one_line = "Private Key: AAAA\nPublic Key: BBBB\n";
        let keys = parse_genkey(one_line).expect("keys");
        assert_eq!(
            (keys.private.as_str(), keys.public.as_str()),
            ("AAAA", "BBBB")
        );
        assert!(parse_genkey("error: unknown flag\n").is_none());
        assert!(
            !format!("{keys:?}").contains("AAAA"),
            "the private key is masked"
        );
    }

    #[test]
    fn rathole_configs_name_the_ports_and_the_noise_keys() {
        let (server, client) = rathole_configs(1001, 1002, 1003, None);
        assert!(
            server.contains("bind_addr = \"127.0.0.1:1001\"")
                && server.contains("bind_addr = \"127.0.0.1:1002\"")
        );
        assert!(
            client.contains("remote_addr = \"127.0.0.1:1001\"")
                && client.contains("local_addr = \"127.0.0.1:1003\"")
        );
        assert!(!server.contains("noise"));
        let keys = NoiseKeys {
            private: "PRIV".into(),
            public: "PUB".into(),
        };
        let (server, client) = rathole_configs(1001, 1002, 1003, Some(&keys));
        assert!(server.contains("local_private_key = \"PRIV\"") && !server.contains("PUB\""));
        assert!(client.contains("remote_public_key = \"PUB\"") && !client.contains("PRIV"));
    }
}
