//! The status page (`/` on the metrics listener) as a browser renders it:
//! a real headless Chromium against the real `portal` and `bridge`
//! binaries, started from quick-start flags on loopback, and basic auth
//! (`--metrics-auth`) through the real binary with raw HTTP requests.
//!
//! ```text
//! client ×3 ─▶ portal --public :P ═ tunnel :T ═▶ bridge --to echo ─▶ echo service
//!              portal --metrics :M ◀─ chromium --dump-dom / --screenshot
//!                                       bridge --metrics :N ◀─ chromium --dump-dom
//! ```
//!
//! The page's DOM shows the bridge with the tunnel count `/status` gives,
//! its open sessions go from 0 to 3 while three connections are held open
//! through the public port, and no UUID (the shared `--id`, or anything
//! shaped like one) appears anywhere. The screenshots go to
//! `target/status-page/`.
//!
//! Without Chromium (`chromium` on PATH or /usr/bin/chromium) the browser
//! test prints "skipped: chromium not installed" and passes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{bridge_binary, loopback, portal_binary, Flagged};
use rayback_testkit::{echo_server, free_port, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The bound on one Chromium run.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(30);

const ID: &str = "5f0c8e51-2b7a-4c1e-9d3f-7a6b5c4d3e2f";

/// The connections held open through the public port.
const HELD: usize = 3;

/// One `GET` with extra header lines: (status, head, body).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> Result<(u16, String, String)> {
    common::http_request(addr, "GET", path, headers).await
}

async fn status(metrics: SocketAddr) -> serde_json::Value {
    let (code, _, body) = get(metrics, "/status", "").await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/status` until `check` holds (up to 20 s); returns that document.
async fn status_until(
    metrics: SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let document = status(metrics).await;
        if check(&document) {
            return document;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/status on {metrics} never showed {what}: {document}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection through the public port, echoed end to end once (so its
/// session is open on both sides), then held.
async fn held_connection(public: SocketAddr) -> Result<TcpStream> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut socket = TcpStream::connect(public).await?;
        socket.write_all(b"ping").await?;
        let mut echoed = [0u8; 4];
        socket.read_exact(&mut echoed).await?;
        anyhow::ensure!(&echoed == b"ping", "echoed {echoed:?}");
        anyhow::Ok(socket)
    })
    .await
    .context("echo through the public port took over 10 s")?
}

// ------------------------------------------------------------- chromium

/// The Chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium run: its own process group (killed whole, by its
/// PID, when the run ends or overruns) and a fresh profile.
struct Browser {
    binary: PathBuf,
    profiles: TempDir,
    runs: usize,
}

impl Browser {
    fn new(binary: PathBuf) -> Result<Browser> {
        Ok(Browser {
            binary,
            profiles: TempDir::new("chromium")?,
            runs: 0,
        })
    }

    /// Runs Chromium on `url` with `extra` flags; returns its standard output.
    ///
    /// In this Chromium (Debian's, 120 and later) `--headless` is the new
    /// headless mode (the old one left the browser as chrome-headless-shell);
    /// `--dump-dom` and `--screenshot` work with it. `--virtual-time-budget`
    /// lets the page's one-second polls run several times before the dump or
    /// the shot: virtual time races through the waits and stops while a
    /// fetch is pending, so a 4 s budget takes well under a second.
    fn run(&mut self, url: &str, extra: &[String]) -> Result<String> {
        use std::os::unix::process::CommandExt;
        self.runs += 1;
        let profile = self.profiles.path.join(format!("profile-{}", self.runs));
        let stdout_path = self.profiles.path.join(format!("stdout-{}", self.runs));
        let stderr_path = self.profiles.path.join(format!("stderr-{}", self.runs));
        let mut child = Command::new(&self.binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?)
            // Chromium forks helpers (zygote, renderer, GPU, crashpad):
            // a group of their own, so that one kill ends them all.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > CHROMIUM_LIMIT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The group goes in any case: helpers may outlive the browser.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        match status {
            None => bail!(
                "chromium ran over {CHROMIUM_LIMIT:?} on {url}; killed. stderr:\n{}",
                tail(&stderr)
            ),
            Some(status) if !status.success() => {
                bail!(
                    "chromium exited {status} on {url}; stderr:\n{}",
                    tail(&stderr)
                )
            }
            Some(_) => Ok(std::fs::read_to_string(&stdout_path)?),
        }
    }

    /// The page's DOM once its first poll has rendered (`data-ready="1"`
    /// on body) and a few more polls have run; tried up to three times.
    fn dump_dom(&mut self, url: &str) -> Result<String> {
        let mut last = String::new();
        for _ in 0..3 {
            last = self.run(
                url,
                &[
                    "--dump-dom".to_owned(),
                    "--virtual-time-budget=4000".to_owned(),
                ],
            )?;
            if last.contains("data-ready=\"1\"") {
                return Ok(last);
            }
        }
        bail!("the page never rendered a poll: {}", tail(&last))
    }

    /// A screenshot of `url` at `width`×`height` into `path`.
    fn screenshot(&mut self, url: &str, path: &Path, width: u32, height: u32) -> Result<()> {
        std::fs::create_dir_all(path.parent().expect("a directory"))?;
        let _ = std::fs::remove_file(path);
        self.run(
            url,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={width},{height}"),
                "--virtual-time-budget=30000".to_owned(),
            ],
        )?;
        let size = std::fs::metadata(path)
            .with_context(|| format!("no screenshot at {}", path.display()))?
            .len();
        anyhow::ensure!(size > 1000, "a {size}-byte screenshot");
        Ok(())
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Where the screenshots go: `target/status-page/`.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("status-page")
}

// ------------------------------------------------------------- the DOM

/// The attributes of every element whose opening tag has `hook` (e.g.
/// `data-bridge`), in document order.
fn hooked(dom: &str, hook: &str) -> Vec<Vec<(String, String)>> {
    let mut found = Vec::new();
    let needle = format!(" {hook}=\"");
    let mut from = 0;
    while let Some(at) = dom[from..].find(&needle) {
        let at = from + at;
        let start = dom[..at].rfind('<').expect("inside a tag");
        let end = at + dom[at..].find('>').expect("a tag ends");
        found.push(attributes(&dom[start..end]));
        from = end;
    }
    found
}

/// `name="value"` pairs of one opening tag (the DOM dump quotes them all).
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_owned();
        let value_start = eq + 2;
        let Some(value_len) = rest[value_start..].find('"') else {
            break;
        };
        out.push((name, rest[value_start..value_start + value_len].to_owned()));
        rest = &rest[value_start + value_len + 1..];
    }
    out
}

fn attribute<'a>(element: &'a [(String, String)], name: &str) -> Option<&'a str> {
    element
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The element whose `hook` is `value`: its (data-tunnels, data-sessions).
fn counts(dom: &str, hook: &str, value: &str) -> (u64, u64) {
    let elements = hooked(dom, hook);
    let element = elements
        .iter()
        .find(|element| attribute(element, hook) == Some(value))
        .unwrap_or_else(|| panic!("no [{hook}={value:?}] in the page: {elements:?}"));
    let number = |name: &str| {
        attribute(element, name)
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("[{hook}={value:?}] has no numeric {name}: {element:?}"))
    };
    (number("data-tunnels"), number("data-sessions"))
}

/// Every 8-4-4-4-12 hex run in `text`.
fn uuids_in(text: &str) -> Vec<String> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for start in 0..bytes.len().saturating_sub(35) {
        let mut at = start;
        let matches = GROUPS.iter().enumerate().all(|(index, group)| {
            if index > 0 {
                if bytes[at] != b'-' {
                    return false;
                }
                at += 1;
            }
            let ok = bytes[at..at + group].iter().all(u8::is_ascii_hexdigit);
            at += group;
            ok
        });
        if matches {
            found.push(text[start..start + 36].to_owned());
        }
    }
    found
}

/// What a rendering slip leaves in the text (the script itself, which
/// says `undefined`, left out).
fn assert_rendered_cleanly(what: &str, dom: &str) {
    let rendered = dom.split("<script").next().unwrap_or_default();
    for slip in ["[object ", "undefined", "NaN", "Infinity"] {
        assert!(
            !rendered.contains(slip),
            "{what} shows {slip:?}: {}",
            tail(rendered)
        );
    }
}

fn assert_no_uuid(what: &str, text: &str) {
    let found = uuids_in(text);
    assert!(found.is_empty(), "{what} shows UUIDs: {found:?}");
    let lower = text.to_ascii_lowercase();
    assert!(!lower.contains(ID), "{what} shows the --id");
    // Nor its 32-digit form, nor its first group on its own.
    assert!(
        !lower.contains(&ID.replace('-', "")),
        "{what} shows the --id"
    );
    assert!(!lower.contains(&ID[..8]), "{what} shows part of the --id");
}

#[test]
fn uuid_scan_finds_uuids_and_nothing_else() {
    assert_eq!(uuids_in(&format!("a {ID} b")), [ID]);
    assert!(uuids_in("5f0c…3e2f 127.0.0.1:1024 rayback.internal").is_empty());
    let tag = r#"<tr data-bridge="127.0.0.1" data-tunnels="2" data-sessions="0">"#;
    assert_eq!(counts(tag, "data-bridge", "127.0.0.1"), (2, 0));
}

// ------------------------------------------------------------- the tests

/// A quick-start portal's flags: tunnel and public ports on loopback,
/// the test's id, and `/metrics` (with the page) on `metrics`.
fn portal_flags(tunnel: u16, public: u16, metrics: SocketAddr) -> Vec<String> {
    vec![
        "--tunnel".into(),
        loopback(tunnel).to_string(),
        "--public".into(),
        loopback(public).to_string(),
        "--id".into(),
        ID.into(),
        "--metrics".into(),
        metrics.to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_tunnels_and_sessions_live() {
    let Some(binary) = chromium() else {
        eprintln!("skipped: chromium not installed");
        return;
    };
    // Built (or found fresh) before the clock starts.
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let started = Instant::now();
        let echo = echo_server().await.unwrap();
        let (public, tunnel) = (free_port(), free_port());
        let (portal_metrics, bridge_metrics) = (loopback(free_port()), loopback(free_port()));
        let mut portal = Flagged::start(
            &portal_binary(),
            &portal_flags(tunnel, public, portal_metrics),
        )
        .unwrap();
        portal
            .wait_ports(&[public, tunnel, portal_metrics.port()])
            .await
            .unwrap();
        let mut bridge = Flagged::start(
            &bridge_binary,
            &[
                "--portal".into(),
                loopback(tunnel).to_string(),
                "--to".into(),
                echo.to_string(),
                "--id".into(),
                ID.into(),
                "--metrics".into(),
                bridge_metrics.to_string(),
            ],
        )
        .unwrap();
        bridge.wait_ports(&[bridge_metrics.port()]).await.unwrap();
        let logs = || format!("portal:\n{}\nbridge:\n{}", portal.output(), bridge.output());
        // Serving end to end; that first connection then closes.
        drop(
            held_connection(loopback(public))
                .await
                .unwrap_or_else(|error| panic!("{error:#}\n{}", logs())),
        );

        eprintln!("serving after {:?}", started.elapsed());
        let mut browser = Browser::new(binary).unwrap();
        let portal_page = format!("http://{portal_metrics}/");
        let bridge_page = format!("http://{bridge_metrics}/");

        // Idle: the bridge is there with its tunnels, no session open.
        let idle = status_until(portal_metrics, "an idle tunnel", |status| {
            status["portals"][0]["tunnels"].as_u64() >= Some(1)
                && status["portals"][0]["sessions"] == 0
        })
        .await;
        let tunnels_at = |status: &serde_json::Value| {
            status["portals"][0]["bridges"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|tunnel| {
                    tunnel["peer"]
                        .as_str()
                        .is_some_and(|peer| peer.starts_with("127.0.0.1:"))
                })
                .count() as u64
        };
        let expected_tunnels = tunnels_at(&idle);
        assert!(expected_tunnels >= 1, "{idle}");
        let dom = browser.dump_dom(&portal_page).unwrap();
        assert_eq!(
            counts(&dom, "data-bridge", "127.0.0.1"),
            (expected_tunnels, 0),
            "the idle portal page"
        );
        assert_eq!(counts(&dom, "data-portal", "portal").0, expected_tunnels);
        assert_no_uuid("the portal page", &dom);
        assert_rendered_cleanly("the portal page", &dom);

        // Three connections held open: three sessions on both pages.
        let mut held = Vec::new();
        for _ in 0..HELD {
            held.push(
                held_connection(loopback(public))
                    .await
                    .unwrap_or_else(|error| panic!("{error:#}\n{}", logs())),
            );
        }
        let busy = status_until(portal_metrics, "the held sessions", |status| {
            status["portals"][0]["sessions"] == HELD
        })
        .await;
        let dom = browser.dump_dom(&portal_page).unwrap();
        assert_eq!(
            counts(&dom, "data-bridge", "127.0.0.1"),
            (tunnels_at(&busy), HELD as u64),
            "the portal page with {HELD} connections held"
        );
        assert_no_uuid("the portal page", &dom);
        assert_rendered_cleanly("the portal page", &dom);

        let bridge_status = status_until(bridge_metrics, "the held sessions", |status| {
            status["bridges"][0]["sessions"] == HELD
        })
        .await;
        let dom = browser.dump_dom(&bridge_page).unwrap();
        assert_eq!(
            counts(&dom, "data-bridge", "bridge"),
            (
                bridge_status["bridges"][0]["connections"].as_u64().unwrap(),
                HELD as u64
            ),
            "the bridge page with {HELD} connections held"
        );
        assert!(
            dom.contains("reconnects"),
            "the bridge page names reconnects"
        );
        assert!(
            dom.contains("since last control message"),
            "the bridge page shows the control age"
        );
        assert_no_uuid("the bridge page", &dom);
        assert_rendered_cleanly("the bridge page", &dom);

        eprintln!("pages checked after {:?}", started.elapsed());

        // Screenshots while bytes flow through the held connections.
        let flowing = tokio::spawn(async move {
            let chunk = vec![7u8; 64 << 10];
            let mut back = vec![0u8; 64 << 10];
            loop {
                for socket in &mut held {
                    if socket.write_all(&chunk).await.is_err()
                        || socket.read_exact(&mut back).await.is_err()
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let dir = screenshot_dir();
        for (page, name, width, height) in [
            (&portal_page, "portal.png", 1100, 1500),
            (&portal_page, "portal-phone.png", 390, 1600),
            (&bridge_page, "bridge.png", 1100, 1400),
        ] {
            let path = dir.join(name);
            browser
                .screenshot(page, &path, width, height)
                .unwrap_or_else(|error| panic!("{error:#}"));
            println!("status page screenshot: {}", path.display());
        }
        flowing.abort();
        eprintln!("screenshots taken after {:?}", started.elapsed());

        // The connections closed: back to no session.
        let _ = flowing.await;
        status_until(portal_metrics, "the sessions ended", |status| {
            status["portals"][0]["sessions"] == 0
        })
        .await;
        let dom = browser.dump_dom(&portal_page).unwrap();
        assert_eq!(counts(&dom, "data-bridge", "127.0.0.1").1, 0);
    })
    .await
    .expect("the test ran over its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_auth_guards_the_page_status_and_metrics_but_not_health() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (public, tunnel, metrics) = (free_port(), free_port(), loopback(free_port()));
        let mut flags = portal_flags(tunnel, public, metrics);
        flags.extend(["--metrics-auth".into(), "ops:s3cret:pw".into()]);
        let mut portal = Flagged::start(&portal_binary(), &flags).unwrap();
        portal.wait_ports(&[metrics.port()]).await.unwrap();
        // "ops:s3cret:pw" and "ops:wrong" in base64.
        let right = "Authorization: Basic b3BzOnMzY3JldDpwdw==\r\n";
        let wrong = "Authorization: Basic b3BzOndyb25n\r\n";
        for path in ["/", "/status", "/metrics"] {
            for refused in ["", wrong] {
                let (code, head, _) = get(metrics, path, refused).await.unwrap();
                assert_eq!(code, 401, "{path} {refused:?}: {head}");
                assert!(
                    head.to_ascii_lowercase()
                        .contains("www-authenticate: basic realm=\"rayback\""),
                    "{head}"
                );
            }
            let (code, head, body) = get(metrics, path, right).await.unwrap();
            assert_eq!(code, 200, "{path}: {head}");
            match path {
                "/" => assert!(body.contains("<title>Rayback status</title>"), "{body}"),
                "/status" => {
                    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(status["portals"][0]["tag"], "portal");
                }
                _ => assert!(body.contains("rayback_uptime_seconds"), "{body}"),
            }
            assert_no_uuid(path, &body);
        }
        // The health checks stay open (no bridge yet: not ready, but not 401).
        assert_eq!(get(metrics, "/live", "").await.unwrap().0, 200);
        assert_eq!(get(metrics, "/ready", "").await.unwrap().0, 503);
        assert!(
            !portal.output().contains("s3cret"),
            "the password is not logged:\n{}",
            portal.output()
        );
    })
    .await
    .expect("the test ran over its limit");
}

/// Runs `command` to completion, bounded by 20 s.
fn output_of(command: &mut Command) -> std::process::Output {
    common::run_bounded(command).unwrap()
}

#[test]
fn a_bad_metrics_auth_is_refused_with_the_reason() {
    for (bad, why) in [("nocolon", "no colon"), (":pw", "the user is empty")] {
        let output = output_of(Command::new(portal_binary()).args([
            "--tunnel",
            "127.0.0.1:1",
            "--public",
            "127.0.0.1:2",
            "--id",
            ID,
            "--metrics-auth",
            bad,
        ]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--metrics-auth") && stderr.contains(why),
            "{bad}: {stderr}"
        );
    }
    // In a file: the configuration is unusable (V2Ray's exit code 23).
    let dir = TempDir::new("metrics-auth").unwrap();
    let path = dir.path.join("config.json");
    std::fs::write(&path, r#"{"rayback": {"metricsAuth": "nocolon"}}"#).unwrap();
    let output = output_of(
        Command::new(portal_binary())
            .arg("-test")
            .arg("-config")
            .arg(&path),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(23), "{text}");
    assert!(
        text.contains("rayback.metricsAuth") && text.contains("no colon"),
        "{text}"
    );
}
