//! A throwaway self-signed TLS certificate for loopback tests: valid for
//! `localhost` and `127.0.0.1`, written as PEM files into a [`TempDir`]
//! that lives as long as the [`SelfSigned`] value.
//!
//! The certificate is its own issuer, so a client that lists it as trusted
//! (V2Ray's `tlsSettings.certificates` on the client side) verifies it; a
//! client using only the system roots refuses it. Not a CA: it signs
//! nothing else.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::TempDir;

/// A fresh self-signed certificate and its private key, as PEM text and as
/// files (removed on drop).
pub struct SelfSigned {
    /// PEM `CERTIFICATE`.
    pub cert_pem: String,
    /// PEM PKCS#8 `PRIVATE KEY` (ECDSA P-256).
    pub key_pem: String,
    /// Where `cert_pem` is written (`certificateFile`).
    pub cert_path: PathBuf,
    /// Where `key_pem` is written (`keyFile`).
    pub key_path: PathBuf,
    /// Holds the files; removed with them on drop.
    _dir: TempDir,
}

impl SelfSigned {
    /// Generates a certificate for `localhost` and IP `127.0.0.1` and
    /// writes `cert.pem` and `key.pem` into a new temporary directory.
    pub fn localhost() -> Result<SelfSigned> {
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("generating a self-signed certificate")?;
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        let dir = TempDir::new("tls")?;
        let cert_path = dir.path.join("cert.pem");
        let key_path = dir.path.join("key.pem");
        std::fs::write(&cert_path, &cert_pem)
            .with_context(|| format!("writing {}", cert_path.display()))?;
        std::fs::write(&key_path, &key_pem)
            .with_context(|| format!("writing {}", key_path.display()))?;
        Ok(SelfSigned {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
            _dir: dir,
        })
    }

    /// `cert_pem` as lines, the form of V2Ray's inline `certificate`.
    pub fn cert_lines(&self) -> Vec<&str> {
        self.cert_pem.lines().collect()
    }

    /// `key_pem` as lines, the form of V2Ray's inline `key`.
    pub fn key_lines(&self) -> Vec<&str> {
        self.key_pem.lines().collect()
    }
}

/// The WebSocket path of a seed tunnel over ws+tls.
pub const TUNNEL_WS_PATH: &str = "/tunnel";

/// How a seed tunnel ([`crate::with_tunnel_stream`]) runs over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelTls {
    /// WebSocket on [`TUNNEL_WS_PATH`] inside TLS, ALPN `http/1.1`; the
    /// bridge sends `Host: localhost` and verifies `serverName: localhost`
    /// against the certificate it lists (V2Ray 4.34 trusts listed
    /// certificates).
    WsTls,
    /// TLS over TCP, default ALPN; the bridge does not verify
    /// (`allowInsecure`).
    Tls,
}

/// The bridge outbound's `streamSettings` (JSON text) toward a portal
/// serving the certificate at `cert`.
pub fn tunnel_bridge_stream(tunnel: TunnelTls, cert: &Path) -> String {
    match tunnel {
        TunnelTls::WsTls => json!({
            "network": "ws",
            "wsSettings": {"path": TUNNEL_WS_PATH, "headers": {"Host": "localhost"}},
            "security": "tls",
            "tlsSettings": {
                "serverName": "localhost",
                "alpn": ["http/1.1"],
                "certificates": [{"certificateFile": cert.display().to_string()}],
            },
        }),
        TunnelTls::Tls => json!({
            "network": "tcp",
            "security": "tls",
            "tlsSettings": {"allowInsecure": true},
        }),
    }
    .to_string()
}

/// The portal inbound's `streamSettings` (JSON text): it serves `cert`
/// with `key`.
pub fn tunnel_portal_stream(tunnel: TunnelTls, cert: &Path, key: &Path) -> String {
    let certificates = json!([{
        "certificateFile": cert.display().to_string(),
        "keyFile": key.display().to_string(),
    }]);
    match tunnel {
        TunnelTls::WsTls => json!({
            "network": "ws",
            "wsSettings": {"path": TUNNEL_WS_PATH},
            "security": "tls",
            "tlsSettings": {"alpn": ["http/1.1"], "certificates": certificates},
        }),
        TunnelTls::Tls => json!({
            "network": "tcp",
            "security": "tls",
            "tlsSettings": {"certificates": certificates},
        }),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_pem_files() {
        let tls = SelfSigned::localhost().unwrap();
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            std::fs::read_to_string(&tls.cert_path).unwrap(),
            tls.cert_pem
        );
        assert_eq!(std::fs::read_to_string(&tls.key_path).unwrap(), tls.key_pem);
        assert_eq!(
            tls.cert_lines().first(),
            Some(&"-----BEGIN CERTIFICATE-----")
        );
        let dir = tls.cert_path.parent().unwrap().to_path_buf();
        drop(tls);
        assert!(!dir.exists());
    }
}
