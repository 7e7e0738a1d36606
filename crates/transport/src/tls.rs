//! TLS (`security: "tls"`) on rustls with ring, built from `tlsSettings`
//! as V2Ray 4.34 reads them (`transport/internet/tls/config.go`):
//!
//! | setting | client | server |
//! |---|---|---|
//! | `serverName` | SNI and the name verified; else the dialled domain (or IP) | — |
//! | `alpn` | offered; default `h2`, `http/1.1` (`http/1.1` under WebSocket) | accepted; same defaults |
//! | `allowInsecure` | any certificate is accepted (signatures still checked) | — |
//! | `certificates` | trusted besides the system roots | presented (the first) |
//! | `disableSystemRoot` | only the listed certificates are trusted | — |
//!
//! Every problem with a certificate or key is a [`TlsError`] naming where
//! it came from (the config field and file).

use std::sync::Arc;

use rayback_core::{Pem, TlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Which transport TLS sits under, for the ALPN default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Under {
    Tcp,
    WebSocket,
}

/// A certificate, key or trust store that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{origin}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")")]
    NoCertificate { origin: String },
    #[error("{origin}: no private key in it (expected PEM \"BEGIN PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")")]
    NoKey { origin: String },
    #[error("{origin}: {message}")]
    Rejected { origin: String, message: String },
    #[error("tlsSettings.certificates: a server needs a certificate with keyFile or key")]
    NoServerCertificate,
}

/// rustls with ring. rustls 0.23.48 marks ring's provider deprecated
/// because it lacks post-quantum key exchange (aws-lc-rs has it); Rayback
/// keeps one crypto library (ring, as for VMess) and V2Ray 4.34's Go TLS
/// offers no post-quantum group either.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn alpn(settings: &TlsSettings, under: Under) -> Vec<Vec<u8>> {
    if !settings.alpn.is_empty() {
        return settings
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
    }
    match under {
        Under::Tcp => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Under::WebSocket => vec![b"http/1.1".to_vec()],
    }
}

fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem.text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::Rejected {
            origin: pem.origin.clone(),
            message: format!("unreadable PEM: {error}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: pem.origin.clone(),
        });
    }
    Ok(chain)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.text.as_bytes()).map_err(|_| TlsError::NoKey {
        origin: pem.origin.clone(),
    })
}

/// The client side: roots, verification and ALPN.
pub fn client_config(settings: &TlsSettings, under: Under) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions");
    let mut config = if settings.allow_insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        if !settings.disable_system_root {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system root certificate could not be loaded");
            }
            roots.add_parsable_certificates(found.certs);
        }
        for entry in &settings.certificates {
            for certificate in certificates(&entry.certificate)? {
                roots.add(certificate).map_err(|error| TlsError::Rejected {
                    origin: entry.certificate.origin.clone(),
                    message: format!("not usable as a trusted certificate: {error}"),
                })?;
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "TLS client with no trusted certificate: the system has none (or \
                 disableSystemRoot is set) and tlsSettings.certificates lists none; \
                 every handshake will fail"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = alpn(settings, under);
    Ok(config)
}

/// The server side: the first certificate with a key, and ALPN.
pub fn server_config(settings: &TlsSettings, under: Under) -> Result<ServerConfig, TlsError> {
    let entry = settings
        .certificates
        .iter()
        .find(|entry| entry.key.is_some())
        .ok_or(TlsError::NoServerCertificate)?;
    if settings.certificates.len() > 1 {
        tracing::warn!(
            "tlsSettings.certificates lists {}; Rayback presents the first one with a key ({})",
            settings.certificates.len(),
            entry.certificate.origin
        );
    }
    let key_pem = entry.key.as_ref().expect("found with a key");
    let chain = certificates(&entry.certificate)?;
    let key = private_key(key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Rejected {
            origin: key_pem.origin.clone(),
            message: match error {
                rustls::Error::InconsistentKeys(_) => {
                    format!(
                        "the key does not match the certificate {}",
                        entry.certificate.origin
                    )
                }
                other => format!("unusable key or certificate: {other}"),
            },
        })?;
    config.alpn_protocols = alpn(settings, under);
    Ok(config)
}

/// `allowInsecure`: any certificate, any name; the handshake's signatures
/// are still verified, so the connection is encrypted to whoever holds the
/// key of the certificate shown.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
