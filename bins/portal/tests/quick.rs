//! The quick start and the packaging, as a user meets them: `portal` and
//! `bridge` started from flags alone, their `--print-config` files run by
//! the real v2ray, wrong flag combinations, `--new-id`, and the systemd
//! units checked by `systemd-analyze verify`.
//!
//! ```text
//! client ─▶ portal --public 127.0.0.1:A (dokodemo-door → marker 127.0.0.1:1) ─┐
//! client ─▶ portal --public 127.0.0.1:B (dokodemo-door → marker 127.0.0.1:2) ─┤ portal outbound
//!           portal --tunnel 127.0.0.1:T (VMess) ◀══ dialled by bridge --portal 127.0.0.1:T
//!                                            bridge: port 1 → --to backend 1, port 2 → --to backend 2
//! ```
//!
//! Each backend answers `GET /` with its own page, so a request that
//! reaches the wrong service fails the test.
//!
//! The tunnel over WebSocket in TLS (`--ws`, `--tls-cert`/`--tls-key` on
//! the portal; `--ws`, `--ca`, `--server-name` on the bridge), with a fresh
//! self-signed certificate for `localhost` and 127.0.0.1:
//!
//! ```text
//! client ─▶ portal --public 127.0.0.1:A ─┐
//!           portal --tunnel 127.0.0.1:T --ws /t --tls-cert C --tls-key K
//!               ◀══ wss://127.0.0.1:T/t ══ bridge --ws /t --ca C [--server-name localhost] ─▶ backend
//! ```
//!
//! Rayback on both sides; the printed files through `v2ray -test`; and the
//! real v2ray on either side, started from the other's printed file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{bridge_binary, loopback, portal_binary, print_config, Flagged};
use rayback_testkit::tls::SelfSigned;
use rayback_testkit::{free_port, http_get, v2ray_test, workspace_root, TempDir, V2Ray};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bound on every test here.
const TEST_LIMIT: Duration = Duration::from_secs(60);

const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

/// A web server on 127.0.0.1 that answers every `GET` with `page`.
async fn page_server(page: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buf[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Waits until `GET /` on `public` returns `page`.
async fn wait_page(public: SocketAddr, page: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let outcome = http_get(public, Duration::from_secs(3)).await;
        match outcome {
            Ok((200, body)) if body == page.as_bytes() => return Ok(started.elapsed()),
            Ok((200, body)) => bail!(
                "{public} answered another service's page: {:?} instead of {page:?}",
                String::from_utf8_lossy(&body)
            ),
            _ if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok((code, _)) => bail!("{public} answered {code} after {limit:?}"),
            Err(error) => bail!("no page through {public} within {limit:?}: {error:#}"),
        }
    }
}

/// Two services: their backends and the portal's public ports for them.
struct Services {
    pages: [&'static str; 2],
    backends: [SocketAddr; 2],
    public: [u16; 2],
    tunnel: u16,
}

impl Services {
    async fn new() -> Result<Services> {
        let pages = ["service one\n", "service two, a longer page\n"];
        Ok(Services {
            pages,
            backends: [page_server(pages[0]).await?, page_server(pages[1]).await?],
            public: [free_port(), free_port()],
            tunnel: free_port(),
        })
    }

    fn portal_args(&self) -> Vec<String> {
        let mut args = vec!["--tunnel".to_owned(), loopback(self.tunnel).to_string()];
        for public in self.public {
            args.extend(["--public".to_owned(), loopback(public).to_string()]);
        }
        args.extend(["--id".to_owned(), ID.to_owned()]);
        args
    }

    fn bridge_args(&self) -> Vec<String> {
        let mut args = vec!["--portal".to_owned(), loopback(self.tunnel).to_string()];
        for backend in self.backends {
            args.extend(["--to".to_owned(), backend.to_string()]);
        }
        args.extend(["--id".to_owned(), ID.to_owned()]);
        args
    }

    fn portal_ports(&self) -> [u16; 3] {
        [self.public[0], self.public[1], self.tunnel]
    }

    /// Each public port serves its own backend's page, several times.
    async fn check(&self, what: &str, logs: impl Fn() -> String) {
        for round in 0..3 {
            for (public, page) in self.public.iter().zip(self.pages) {
                let took = wait_page(loopback(*public), page, Duration::from_secs(20))
                    .await
                    .unwrap_or_else(|error| panic!("{what}: {error:#}\n{}", logs()));
                if round == 0 {
                    eprintln!("{what}: :{public} serving after {took:?}");
                }
            }
        }
    }
}

/// The page behind the WebSocket-in-TLS tunnel.
const WS_TLS_PAGE: &str = "the service behind WebSocket and TLS\n";

/// One service whose tunnel is WebSocket on `/t` inside TLS.
struct WsTls {
    /// The portal's certificate, which the bridge trusts with `--ca`.
    certificate: SelfSigned,
    backend: SocketAddr,
    public: u16,
    tunnel: u16,
}

impl WsTls {
    async fn new() -> Result<WsTls> {
        Ok(WsTls {
            certificate: SelfSigned::localhost()?,
            backend: page_server(WS_TLS_PAGE).await?,
            public: free_port(),
            tunnel: free_port(),
        })
    }

    fn portal_args(&self) -> Vec<String> {
        vec![
            "--tunnel".to_owned(),
            loopback(self.tunnel).to_string(),
            "--public".to_owned(),
            loopback(self.public).to_string(),
            "--id".to_owned(),
            ID.to_owned(),
            "--ws".to_owned(),
            "/t".to_owned(),
            "--tls-cert".to_owned(),
            self.certificate.cert_path.display().to_string(),
            "--tls-key".to_owned(),
            self.certificate.key_path.display().to_string(),
        ]
    }

    /// With `server_name`, `--server-name localhost`; without, the
    /// certificate is verified against the portal's IP, 127.0.0.1.
    fn bridge_args(&self, server_name: bool) -> Vec<String> {
        let mut args = vec![
            "--portal".to_owned(),
            loopback(self.tunnel).to_string(),
            "--to".to_owned(),
            self.backend.to_string(),
            "--id".to_owned(),
            ID.to_owned(),
            "--ws".to_owned(),
            "/t".to_owned(),
            "--ca".to_owned(),
            self.certificate.cert_path.display().to_string(),
        ];
        if server_name {
            args.extend(["--server-name".to_owned(), "localhost".to_owned()]);
        }
        args
    }

    async fn check(&self, what: &str, logs: impl Fn() -> String) {
        let took = wait_page(loopback(self.public), WS_TLS_PAGE, Duration::from_secs(20))
            .await
            .unwrap_or_else(|error| panic!("{what}: {error:#}\n{}", logs()));
        eprintln!("{what}: serving after {took:?}");
    }
}

/// Runs a binary to completion (bounded).
fn run(binary: &Path, args: &[&str]) -> Output {
    common::run_bounded(Command::new(binary).args(args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_from_flags_alone() {
    tokio::time::timeout(TEST_LIMIT, async {
        let backend = page_server("the only service\n").await.unwrap();
        let (public, tunnel) = (free_port(), free_port());
        let mut portal = Flagged::start(
            &portal_binary(),
            &[
                "-tunnel".into(),
                format!("127.0.0.1:{tunnel}"),
                "-public".into(),
                format!("127.0.0.1:{public}"),
                "-id".into(),
                ID.into(),
            ],
        )
        .unwrap();
        portal.wait_ports(&[public, tunnel]).await.unwrap();
        let bridge = Flagged::start(
            &bridge_binary(),
            &[
                format!("--portal=127.0.0.1:{tunnel}"),
                format!("--to={backend}"),
                format!("--id={ID}"),
            ],
        )
        .unwrap();
        let took = wait_page(
            loopback(public),
            "the only service\n",
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error:#}\nportal:\n{}\nbridge:\n{}",
                portal.output(),
                bridge.output()
            )
        });
        eprintln!("quick portal + quick bridge: serving after {took:?}");
    })
    .await
    .expect("the test ran over its time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_pair_in_order() {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::new().await.unwrap();
        let mut portal = Flagged::start(&portal_binary(), &services.portal_args()).unwrap();
        portal.wait_ports(&services.portal_ports()).await.unwrap();
        let bridge = Flagged::start(&bridge_binary(), &services.bridge_args()).unwrap();
        services
            .check("Rayback portal + Rayback bridge", || {
                format!("portal:\n{}\nbridge:\n{}", portal.output(), bridge.output())
            })
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// The portal's `--print-config` run by the real v2ray, a bridge from flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_portal() {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::new().await.unwrap();
        let config = print_config(&portal_binary(), &services.portal_args()).unwrap();
        let _portal = V2Ray::start_text(&config, &services.portal_ports())
            .await
            .unwrap();
        let bridge = Flagged::start(&bridge_binary(), &services.bridge_args()).unwrap();
        services
            .check("v2ray portal (printed) + Rayback bridge", || {
                format!("portal config:\n{config}\nbridge:\n{}", bridge.output())
            })
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// The bridge's `--print-config` run by the real v2ray, a portal from flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_bridge() {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::new().await.unwrap();
        let mut portal = Flagged::start(&portal_binary(), &services.portal_args()).unwrap();
        portal.wait_ports(&services.portal_ports()).await.unwrap();
        let config = print_config(&bridge_binary(), &services.bridge_args()).unwrap();
        let _bridge = V2Ray::start_text(&config, &[]).await.unwrap();
        services
            .check("Rayback portal + v2ray bridge (printed)", || {
                format!("bridge config:\n{config}\nportal:\n{}", portal.output())
            })
            .await;
    })
    .await
    .expect("the test ran over its time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_tls_from_flags_alone() {
    // Outside the time bound: building the bridge may wait for cargo's lock.
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let setup = WsTls::new().await.unwrap();
        let mut portal = Flagged::start(&portal_binary(), &setup.portal_args()).unwrap();
        portal
            .wait_ports(&[setup.public, setup.tunnel])
            .await
            .unwrap();
        let bridge = Flagged::start(&bridge_binary, &setup.bridge_args(true)).unwrap();
        setup
            .check("quick portal + quick bridge over ws+tls", || {
                format!("portal:\n{}\nbridge:\n{}", portal.output(), bridge.output())
            })
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// Both sides' `--print-config` with the transport flags, through
/// `v2ray -test`; and the certificate paths are written absolute, so the
/// portal's file is the same whether it was printed with relative paths
/// from the certificate's directory or with absolute ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_ws_and_tls_configs_pass_v2ray_test() {
    let setup = WsTls::new().await.unwrap();
    let configs = [
        (
            "portal",
            print_config(&portal_binary(), &setup.portal_args()).unwrap(),
        ),
        (
            "bridge",
            print_config(&bridge_binary(), &setup.bridge_args(true)).unwrap(),
        ),
        (
            "bridge",
            print_config(&bridge_binary(), &setup.bridge_args(false)).unwrap(),
        ),
    ];
    for (role, config) in &configs {
        assert!(
            config.contains(r#""network": "ws""#) && config.contains(r#""security": "tls""#),
            "{role}: {config}"
        );
        let (code, output) = v2ray_test(config, &format!("{role}.json")).unwrap();
        assert_eq!(
            code, 0,
            "v2ray -test refused the {role}'s {config}\n{output}"
        );
    }
    let cert = setup.certificate.cert_path.display().to_string();
    assert!(configs[0]
        .1
        .contains(&format!(r#""certificateFile": "{cert}""#)));
    assert!(configs[1].1.contains(r#""serverName": "localhost""#));
    assert!(configs[2].1.contains(r#""serverName": "127.0.0.1""#));

    let relative: Vec<String> = setup
        .portal_args()
        .into_iter()
        .map(|arg| {
            let path = Path::new(&arg);
            match path.file_name() {
                Some(name) if path.parent() == setup.certificate.cert_path.parent() => {
                    name.to_string_lossy().into_owned()
                }
                _ => arg,
            }
        })
        .chain(["--print-config".to_owned()])
        .collect();
    assert!(relative.contains(&"cert.pem".to_owned()), "{relative:?}");
    let output = Command::new(portal_binary())
        .args(&relative)
        .current_dir(setup.certificate.cert_path.parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), configs[0].1);
}

/// The bridge's printed ws+tls file run by the real v2ray against a quick
/// Rayback portal: with `--server-name localhost`, and without it (the
/// file names the portal's IP, which V2Ray's TLS over TCP would
/// otherwise lack; over WebSocket it names the host itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_ws_and_tls_bridge() {
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        for server_name in [true, false] {
            let setup = WsTls::new().await.unwrap();
            let mut portal = Flagged::start(&portal_binary(), &setup.portal_args()).unwrap();
            portal
                .wait_ports(&[setup.public, setup.tunnel])
                .await
                .unwrap();
            let config = print_config(&bridge_binary, &setup.bridge_args(server_name)).unwrap();
            let _bridge = V2Ray::start_text(&config, &[]).await.unwrap();
            setup
                .check(
                    &format!("Rayback portal + v2ray bridge (printed, server name {server_name})"),
                    || format!("bridge config:\n{config}\nportal:\n{}", portal.output()),
                )
                .await;
        }
    })
    .await
    .expect("the test ran over its time");
}

/// The portal's printed ws+tls file run by the real v2ray, a quick Rayback
/// bridge dialling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_ws_and_tls_portal() {
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let setup = WsTls::new().await.unwrap();
        let config = print_config(&portal_binary(), &setup.portal_args()).unwrap();
        let _portal = V2Ray::start_text(&config, &[setup.public, setup.tunnel])
            .await
            .unwrap();
        let bridge = Flagged::start(&bridge_binary, &setup.bridge_args(true)).unwrap();
        setup
            .check(
                "v2ray portal (printed) + Rayback bridge over ws+tls",
                || format!("portal config:\n{config}\nbridge:\n{}", bridge.output()),
            )
            .await;
    })
    .await
    .expect("the test ran over its time");
}

#[test]
fn quick_flags_pass_test() {
    let output = run(
        &bridge_binary(),
        &[
            "--portal",
            "portal.example:1024",
            "--to",
            "127.0.0.1:80",
            "--id",
            ID,
            "-test",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("Configuration OK."), "{stdout}");
}

#[test]
fn new_id_prints_a_random_uuid() {
    let first = run(&portal_binary(), &["--new-id"]);
    let second = run(&bridge_binary(), &["-new-id"]);
    for output in [&first, &second] {
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        let id = text.trim_end();
        assert_eq!(text.len(), id.len() + 1, "one line: {text:?}");
        let groups: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "version 4: {id}");
        assert!(
            matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
            "variant: {id}"
        );
        // The printed ID is one the quick start takes.
        let output = run(
            &portal_binary(),
            &["--tunnel", "1024", "--public", "80", "--id", id, "-test"],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_ne!(first.stdout, second.stdout);
}

#[test]
fn wrong_combinations_exit_2_and_say_why() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "portal",
            &[
                "-config",
                "portal.json",
                "--tunnel",
                "1024",
                "--public",
                "80",
                "--id",
                ID,
            ],
            "-config and --tunnel, --public, --id cannot be combined",
        ),
        (
            "portal",
            &["--tunnel", "1024", "--id", ID],
            "missing: --public",
        ),
        ("portal", &["--to", "127.0.0.1:80"], "--to is a bridge flag"),
        ("bridge", &["--public", "80"], "--public is a portal flag"),
        (
            "bridge",
            &[
                "--portal",
                "example.com",
                "--to",
                "127.0.0.1:80",
                "--id",
                ID,
            ],
            "\"example.com\" is not HOST:PORT",
        ),
        (
            "bridge",
            &["--portal", "h:1", "--to", "127.0.0.1:80", "--id", "nope"],
            "invalid value 'nope' for '--id <UUID>'",
        ),
        ("bridge", &["--security", "rot13"], "invalid value 'rot13'"),
        ("portal", &["--new-id", "--tunnel", "1"], "--new-id"),
        (
            "portal",
            &[
                "--tunnel", "1024", "--public", "80", "--public", "80", "--id", ID,
            ],
            "0.0.0.0:80 is given twice",
        ),
        (
            "portal",
            &[
                "--tunnel",
                "1024",
                "--public",
                "80",
                "--id",
                ID,
                "--tls-key",
                "key.pem",
            ],
            "--tls-key needs --tls-cert",
        ),
        (
            "bridge",
            &[
                "--portal",
                "h.example:443",
                "--to",
                "127.0.0.1:80",
                "--id",
                ID,
                "--ca",
                "ca.pem",
                "--insecure",
            ],
            "--insecure accepts any certificate",
        ),
        ("bridge", &["--ws", "/a?b"], "is not a WebSocket path"),
        (
            "bridge",
            &["--tls-cert", "c.pem"],
            "--tls-cert is a portal flag",
        ),
    ];
    let portal = portal_binary();
    let bridge = bridge_binary();
    for (binary, args, expected) in cases {
        let binary = if *binary == "portal" {
            &portal
        } else {
            &bridge
        };
        let output = run(binary, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn completions_and_man_pages_print() {
    for (binary, name) in [(portal_binary(), "portal"), (bridge_binary(), "bridge")] {
        for shell in ["bash", "zsh", "fish"] {
            let output = run(&binary, &["--completions", shell]);
            assert!(output.status.success(), "{name} {shell}");
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                text.contains(name) && text.contains("print-config"),
                "{name} {shell}"
            );
        }
        let output = run(&binary, &["--man"]);
        assert!(output.status.success());
        let page = String::from_utf8_lossy(&output.stdout);
        assert!(page.contains(&format!(".TH {name} 1")), "{page}");
    }
}

/// The units in config-examples/systemd, with ExecStart pointed at the
/// built binaries (verify wants the program to exist), through
/// `systemd-analyze verify`, and their exposure score through
/// `systemd-analyze security --offline`. The man pages the units name
/// are generated into a MANPATH when `man` is there to look them up.
#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian package `systemd`); \
             the units were not verified"
        );
        return;
    }
    let dir = TempDir::new("units").unwrap();
    let units = workspace_root().join("config-examples/systemd");
    let man_dir = dir.path.join("man/man1");
    std::fs::create_dir_all(&man_dir).unwrap();
    let mut names = Vec::new();
    for (role, binary) in [("bridge", bridge_binary()), ("portal", portal_binary())] {
        let name = format!("rayback-{role}.service");
        let text = std::fs::read_to_string(units.join(&name)).unwrap();
        let installed = format!("ExecStart=/usr/local/bin/{role} -config /etc/rayback/{role}.json");
        assert!(text.contains(&installed), "{name} lacks {installed:?}");
        for hardening in [
            "NoNewPrivileges=yes",
            "DynamicUser=yes",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "Restart=on-failure",
            "ExecReload=kill -HUP $MAINPID",
        ] {
            assert!(text.contains(hardening), "{name} lacks {hardening}");
        }
        let text = text.replace(
            &format!("ExecStart=/usr/local/bin/{role} "),
            &format!("ExecStart={} ", binary.display()),
        );
        std::fs::write(dir.path.join(&name), text).unwrap();
        let page = run(&binary, &["--man"]);
        std::fs::write(man_dir.join(format!("{role}.1")), page.stdout).unwrap();
        names.push(name);
    }
    let has_man = Command::new("man").arg("--version").output().is_ok();
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").current_dir(&dir.path);
    if has_man {
        verify.env("MANPATH", dir.path.join("man"));
    } else {
        eprintln!("note: `man` is not installed (Debian `man-db`); the Documentation= pages are not looked up");
        verify.arg("--man=no");
    }
    let output = verify.args(&names).output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "systemd-analyze verify: {report}");
    assert!(
        report.trim().is_empty(),
        "systemd-analyze verify warned: {report}"
    );

    for name in &names {
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(name)
            .current_dir(&dir.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let score = text
            .lines()
            .find_map(|line| line.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|score| score.parse::<f32>().ok());
        match score {
            Some(score) => {
                eprintln!("{name}: exposure {score}");
                assert!(score <= 2.0, "{name}: exposure {score}:\n{text}");
            }
            None => eprintln!(
                "note: no exposure score from `systemd-analyze security --offline` (older systemd?): {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}
