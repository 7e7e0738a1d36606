//! `cargo xtask demo`: the README's "run it" command.
//!
//! Starts, on loopback only, a small web server, a Rayback bridge and a
//! Rayback portal from the seed page's configurations (ports moved to free
//! high ones), fetches a page through the portal's public port, and says
//! what happened and how to try it by hand. Runs until Ctrl-C, or exits
//! after the request with `--once` (what `cargo xtask ci` does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayback_testkit::{seed_configs, wait_for_port, workspace_root, SeedPorts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::web;

/// A child process killed by PID when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> Result<Guard> {
    let log_file = std::fs::File::create(log)?;
    let child = Command::new(binary)
        .arg("-config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Guard(child))
}

/// `GET path` over a new connection; returns (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(String, String)> {
    let mut socket = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP response: {} bytes", response.len());
    };
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

fn build_binaries(root: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "bridge", "-p", "portal"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building bridge and portal failed");
    }
    Ok(root.join("target/debug"))
}

pub fn run(args: &[String]) -> Result<()> {
    let once = match args {
        [] => false,
        [flag] if flag == "--once" => true,
        other => bail!("usage: cargo xtask demo [--once], got {other:?}"),
    };
    let root = workspace_root();
    let bin = build_binaries(&root)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(&root, &bin, once))
}

async fn demo(root: &Path, bin: &Path, once: bool) -> Result<()> {
    let ports = SeedPorts::free();
    let service = web::serve(ports.service).await?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let (bridge_config, portal_config) = seed_configs(ports)?;
    let bridge_path = dir.join("bridge.json");
    let portal_path = dir.join("portal.json");
    std::fs::write(&bridge_path, bridge_config)?;
    std::fs::write(&portal_path, portal_config)?;

    println!("Rayback demo: the V2Ray reverse-proxy page's setup, on loopback.");
    println!("  web server   http://{service}/            (the service beside the bridge)");
    println!("  bridge       {}", bridge_path.display());
    println!(
        "  portal       {}   public port {}, tunnel port {}",
        portal_path.display(),
        ports.public,
        ports.tunnel
    );

    // The page recommends starting the bridge first; Rayback does not mind.
    let _bridge = spawn(&bin.join("bridge"), &bridge_path, &dir.join("bridge.log"))?;
    let _portal = spawn(&bin.join("portal"), &portal_path, &dir.join("portal.log"))?;
    let public = SocketAddr::from(([127, 0, 0, 1], ports.public));
    wait_for_port(public).await?;

    let started = Instant::now();
    let (status, body) = loop {
        match http_get(public, "/").await {
            Ok((status, body)) if status.contains(" 200 ") => break (status, body),
            Ok(_) | Err(_) if started.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((status, _)) => bail!("the portal answered {status:?} instead of 200"),
            Err(error) => bail!(
                "no page through the portal within 15 s: {error:#} (logs in {})",
                dir.display()
            ),
        }
    };
    if body != web::PAGE {
        bail!("the page came back altered: {body:?}");
    }
    println!();
    println!("GET http://{public}/ -> {status}  ({} bytes, first success {:.0} ms after the portal was up)", body.len(), started.elapsed().as_secs_f64() * 1000.0);
    println!("The request went: curl -> portal dokodemo-door :{} -> portal outbound -> Mux.Cool sub-stream", ports.public);
    println!(
        "  on the bridge's VMess connection -> bridge -> freedom (redirect) -> web server :{}",
        ports.service
    );
    for line in body.lines().filter(|line| line.starts_with("<h1>")) {
        println!(
            "  page says: {}",
            line.trim_start_matches("<h1>").trim_end_matches("</h1>")
        );
    }
    if once {
        println!("\ndemo ok (--once): stopping bridge, portal and web server.");
        return Ok(());
    }
    println!("\nTry it by hand:  curl http://{public}/");
    println!(
        "Logs: {}/bridge.log, portal.log. Ctrl-C stops everything.",
        dir.display()
    );
    tokio::signal::ctrl_c().await?;
    println!("stopping.");
    Ok(())
}
