//! The observability endpoint: `/metrics` (Prometheus text), `/status`
//! (JSON) and the health checks `/live` and `/ready` (200 or 503 with the
//! reasons) over HTTP/1.1 (hyper), on the address of `rayback.metrics` or
//! `--metrics`. `HEAD` works on each (hyper sends the head only).
//!
//! It reads a [`Published`] snapshot of the running parts, which a reload
//! replaces, so the endpoint survives reloads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rayback_reverse::{Bridge, Portal};
use rayback_vmess::VmessMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{prometheus, ready_text, status_json, Metrics, Sources};

/// The parts a scrape reads.
#[derive(Clone, Default)]
pub struct Published {
    pub metrics: Arc<Metrics>,
    pub vmess: Arc<VmessMetrics>,
    pub bridges: Vec<Arc<Bridge>>,
    pub portals: Vec<Arc<Portal>>,
}

impl Published {
    /// The snapshot as what a scrape reads.
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            metrics: &self.metrics,
            bridges: &self.bridges,
            portals: &self.portals,
            vmess: &self.vmess,
        }
    }

    fn render(&self, path: &str) -> Option<(StatusCode, &'static str, String)> {
        let sources = self.sources();
        let plain = "text/plain; charset=utf-8";
        match path {
            "/metrics" => Some((
                StatusCode::OK,
                "text/plain; version=0.0.4",
                prometheus(&sources),
            )),
            "/status" => Some((
                StatusCode::OK,
                "application/json",
                status_json(&sources).to_string(),
            )),
            "/live" => Some((StatusCode::OK, plain, "live\n".to_owned())),
            "/ready" => {
                let (ready, body) = ready_text(&sources);
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Some((status, plain, body))
            }
            _ => None,
        }
    }
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    published: Arc<RwLock<Published>>,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("rayback.metrics: listening on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("metrics on http://{bound}/metrics, /status, /live and /ready");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let Ok((socket, _)) = accepted else {
                continue;
            };
            let published = published.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let snapshot = published.read().expect("not poisoned").clone();
                    let rendered = snapshot.render(request.uri().path());
                    async move {
                        let response =
                            match rendered {
                                Some((status, content_type, body)) => Response::builder()
                                    .status(status)
                                    .header("content-type", content_type)
                                    .header("cache-control", "no-store")
                                    .body(Full::new(Bytes::from(body))),
                                None => Response::builder().status(StatusCode::NOT_FOUND).body(
                                    Full::new(Bytes::from_static(
                                        b"try /metrics, /status, /live or /ready\n",
                                    )),
                                ),
                            };
                        Ok::<_, Infallible>(response.expect("static headers are valid"))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
