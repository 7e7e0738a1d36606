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
//! | rathole | `rathole` server and client | generated TOML: one service to the backend, TCP transport |
//! | rathole noise | the same | plus `transport.type = "noise"` (Noise_NK, key from `rathole --genkey`) |
//!
//! It does not judge whether a tunnel works: the workloads find that out.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayback_testkit::{free_port, seed_configs, wait_for_port, SeedPorts};

use super::system::{cpu_ticks, rss_kib, Daemon};

/// One way of getting from the client to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetupKind {
    Direct,
    Rayback,
    RaybackTwoThreads,
    V2Ray,
    Rathole,
    RatholeNoise,
}

impl SetupKind {
    pub const ALL: [SetupKind; 6] = [
        SetupKind::Direct,
        SetupKind::Rayback,
        SetupKind::RaybackTwoThreads,
        SetupKind::V2Ray,
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
            SetupKind::Rathole => "rathole plain",
            SetupKind::RatholeNoise => "rathole noise",
        }
    }

    pub fn parse(name: &str) -> Option<SetupKind> {
        SetupKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the setup runs Rayback's own binaries.
    pub fn is_rayback(self) -> bool {
        matches!(self, SetupKind::Rayback | SetupKind::RaybackTwoThreads)
    }

    /// Whether the setup has tunnel processes whose memory and CPU count.
    pub fn has_processes(self) -> bool {
        self != SetupKind::Direct
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
    daemons: Vec<Daemon>,
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
            },
            SetupKind::Rayback | SetupKind::RaybackTwoThreads => {
                let bin = programs
                    .rayback
                    .as_ref()
                    .context("the Rayback binaries were not built")?;
                let members = match kind {
                    SetupKind::RaybackTwoThreads => Some(TWO_THREADS),
                    _ => None,
                };
                start_seed_pair(
                    &bin.join("bridge"),
                    &bin.join("portal"),
                    members,
                    backend_port,
                    dir,
                )?
            }
            SetupKind::V2Ray => {
                start_seed_pair(&programs.v2ray, &programs.v2ray, None, backend_port, dir)?
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

/// The seed page's bridge and portal, run by `bridge_program` and
/// `portal_program` (Rayback's two binaries, or v2ray for both), with
/// `members` added at the top level of both files when given.
fn start_seed_pair(
    bridge_program: &Path,
    portal_program: &Path,
    members: Option<&str>,
    backend_port: u16,
    dir: &Path,
) -> Result<Tunnel> {
    let ports = SeedPorts {
        public: free_port(),
        tunnel: free_port(),
        service: backend_port,
    };
    let (mut bridge_config, mut portal_config) = seed_configs(ports)?;
    if let Some(members) = members {
        bridge_config = with_members(&bridge_config, members)?;
        portal_config = with_members(&portal_config, members)?;
    }
    let bridge_path = dir.join("bridge.json");
    let portal_path = dir.join("portal.json");
    std::fs::write(&bridge_path, bridge_config)?;
    std::fs::write(&portal_path, portal_config)?;
    // The portal first, so that the bridge's first dial finds it.
    let portal = Daemon::spawn(
        "portal",
        portal_program,
        &[OsStr::new("-config"), portal_path.as_os_str()],
        &[],
        &dir.join("portal.log"),
    )?;
    let bridge = Daemon::spawn(
        "bridge",
        bridge_program,
        &[OsStr::new("-config"), bridge_path.as_os_str()],
        &[],
        &dir.join("bridge.log"),
    )?;
    Ok(Tunnel {
        public: SocketAddr::from(([127, 0, 0, 1], ports.public)),
        daemons: vec![portal, bridge],
    })
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
            // The seed files have comments: strip them to parse the JSON.
            let json: String = changed
                .lines()
                .map(|line| match line.find("//") {
                    Some(at) => &line[..at],
                    None => line,
                })
                .collect::<Vec<_>>()
                .join("\n");
            let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            assert_eq!(value["rayback"]["workers"], 2);
            assert!(value.get("reverse").is_some());
        }
        assert!(with_members("{}", TWO_THREADS).is_err());
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
