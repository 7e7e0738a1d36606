//! `cargo xtask examples`: runs crate examples the way a stranger would,
//! against the real `v2ray` 4.34 and one config file:
//!
//! ```text
//! check example ─reads─▶ config.json ◀─reads─ v2ray: vmess inbound  ─▶ freedom ─▶ web server (a thread here)
//!                                                    dokodemo-door(v1.mux.cool) ─┘
//! fetch example (rayback-vmess) ══VMess (AEAD, fresh UUID)══▶ vmess inbound
//! client example (rayback-mux)  ══Mux.Cool over plain TCP══▶ dokodemo-door
//! ```
//!
//! `rayback-config`'s `check` must accept the config v2ray runs, `fetch`
//! must print the page the web server serves, and `client` must get it on
//! two sub-streams of one connection. Everything binds 127.0.0.1 and every
//! wait is bounded; v2ray is killed (by PID) when this returns, on error
//! too. Without a `v2ray` binary (`V2RAY`, else `/usr/bin/v2ray`) it prints
//! "skipped" and passes. The test step (`--all-targets`) builds every
//! example; this one builds these three again (cached then) and runs them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rayback_testkit::{free_port, v2ray_path, TempDir, V2Ray};
use serde_json::json;

/// Bound on each example's run once built (v2ray is already listening).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask examples` takes no arguments, got {arg:?}");
    }
    let v2ray = v2ray_path();
    if !v2ray.exists() {
        println!(
            "skipped: no v2ray at {} (set V2RAY to its path to run the examples against it)",
            v2ray.display()
        );
        return Ok(());
    }
    against_v2ray()
}

fn against_v2ray() -> Result<()> {
    let started = Instant::now();
    // Built first, so the runs' timeouts do not count compile time.
    let [check, fetch, client] = build_examples([
        ("rayback-config", "check"),
        ("rayback-vmess", "fetch"),
        ("rayback-mux", "client"),
    ])?;
    let built = started.elapsed();

    let body = format!("rayback example check {}\n", fresh_uuid()?);
    let web = serve_page(body.clone())?;
    let uuid = fresh_uuid()?;
    let vmess_port = free_port();
    let mux_port = free_port();
    let config = json!({
        "log": { "loglevel": "warning" },
        "inbounds": [{
            "tag": "vmess-in",
            "listen": "127.0.0.1",
            "port": vmess_port,
            "protocol": "vmess",
            "settings": { "clients": [{ "id": uuid, "alterId": 0 }] }
        }, {
            "tag": "mux-in",
            "listen": "127.0.0.1",
            "port": mux_port,
            "protocol": "dokodemo-door",
            "settings": { "address": "v1.mux.cool", "port": 9527, "network": "tcp" }
        }],
        "outbounds": [{ "protocol": "freedom" }]
    });
    let dir = TempDir::new("examples")?;
    let config_path = dir.path.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;

    let config_arg = config_path.display().to_string();
    let output = run_example(&check, "rayback-config", "check", &[&config_arg], &dir.path)?;
    ensure!(
        output.contains("Configuration OK."),
        "check did not accept the config; its output:\n{output}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Dropping it kills v2ray, whichever way this function returns.
    let _v2ray = runtime
        .block_on(V2Ray::start(&config, &[vmess_port, mux_port]))
        .context("starting v2ray with a VMess and a Mux.Cool inbound")?;

    let server = format!("127.0.0.1:{vmess_port}");
    let url = format!("http://{web}/page.txt");
    let output = run_example(
        &fetch,
        "rayback-vmess",
        "fetch",
        &[&server, &uuid, &url],
        &dir.path,
    )?;
    ensure!(
        output.starts_with("HTTP/1.") && output.contains(&body),
        "fetch did not print the page; its output:\n{output}"
    );

    let server = format!("127.0.0.1:{mux_port}");
    let target = web.to_string();
    let output = run_example(
        &client,
        "rayback-mux",
        "client",
        &[&server, &target, &target],
        &dir.path,
    )?;
    ensure!(
        output.matches(" -> HTTP/1.0 200 OK").count() == 2
            && output.contains("2 sub-streams over one TCP connection"),
        "client did not get the page on two sub-streams; its output:\n{output}"
    );
    eprintln!(
        "    3 examples ran against v2ray in {:.1} s (after {:.1} s building)",
        (started.elapsed() - built).as_secs_f64(),
        built.as_secs_f64()
    );
    Ok(())
}

/// Runs a built example with `args` (bounded by [`RUN_TIMEOUT`]) and
/// returns its standard output; a failed run is an error showing it.
fn run_example(
    executable: &Path,
    package: &str,
    name: &str,
    args: &[&str],
    dir: &Path,
) -> Result<String> {
    // What a stranger types; the built binary runs directly, so that a
    // cargo lock held by another build cannot eat the timeout.
    eprintln!(
        "    cargo run -q -p {package} --example {name} -- {}",
        args.join(" ")
    );
    let output_path = dir.join(format!("{name}.stdout"));
    let mut child = Command::new(executable)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output_path)?)
        .spawn()
        .with_context(|| format!("starting {}", executable.display()))?;
    let run_started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if run_started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("example {name} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&output_path)?;
    ensure!(
        status.success(),
        "example {name} failed ({status}); its output:\n{output}"
    );
    Ok(output)
}

/// Builds the `(package, example)` pairs in one cargo run (one feature
/// resolution, so shared crates are built once) and returns their
/// executables in the same order.
fn build_examples<const N: usize>(examples: [(&str, &str); N]) -> Result<[PathBuf; N]> {
    let mut command = Command::new("cargo");
    command.args(["build", "-q"]);
    for (package, name) in examples {
        command.args(["-p", package, "--example", name]);
    }
    let output = command
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo build")?;
    ensure!(
        output.status.success(),
        "building the examples failed ({})",
        output.status
    );
    let built: Vec<(String, String, PathBuf)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["kind"][0] == "example"
        })
        .filter_map(|message| {
            let executable = PathBuf::from(message["executable"].as_str()?);
            let package = message["package_id"].as_str()?.to_owned();
            Some((
                message["target"]["name"].as_str()?.to_owned(),
                package,
                executable,
            ))
        })
        .collect();
    let mut executables = Vec::with_capacity(N);
    for (package, name) in examples {
        let (_, _, executable) = built
            .iter()
            .find(|(built_name, id, _)| built_name == name && id.contains(package))
            .with_context(|| {
                format!("cargo build named no executable for example {name} of {package}")
            })?;
        executables.push(executable.clone());
    }
    Ok(executables.try_into().expect("one executable per example"))
}

/// A fresh random UUID from the kernel (Linux, where CI runs).
fn fresh_uuid() -> Result<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("reading /proc/sys/kernel/random/uuid")?;
    Ok(text.trim().to_owned())
}

/// Serves `body` as `text/plain` to every GET on a 127.0.0.1 port, from a
/// thread that lives as long as the process (xtask exits soon after).
fn serve_page(body: String) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                continue;
            };
            let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
            // Read the request head (it ends with an empty line), then answer.
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match connection.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = connection.write_all(response.as_bytes());
        }
    });
    Ok(addr)
}
