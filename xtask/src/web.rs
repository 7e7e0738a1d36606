//! A small web server (hyper) for the demo and the end-to-end benchmark:
//! the "service beside the bridge".

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The demo page's body.
pub const PAGE: &str = "<!doctype html>\n<title>Rayback demo</title>\n<h1>Hello from the service beside the bridge</h1>\n<p>This page crossed the portal and came back through the bridge's tunnel.</p>\n";

/// Serves: `/` the demo page, `/1k` 1 KiB and `/1m` 1 MiB of bytes, anything
/// else 404. Binds 127.0.0.1 on `port` (0 for any) and returns the address.
pub async fn serve(port: u16) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let one_k = Bytes::from(vec![b'k'; 1024]);
    let one_m = Bytes::from(vec![b'm'; 1024 * 1024]);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let (one_k, one_m) = (one_k.clone(), one_m.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let body = match request.uri().path() {
                        "/" => Some(Bytes::from_static(PAGE.as_bytes())),
                        "/1k" => Some(one_k.clone()),
                        "/1m" => Some(one_m.clone()),
                        _ => None,
                    };
                    async move {
                        let response = match body {
                            Some(body) => Response::new(Full::new(body)),
                            None => {
                                let mut response =
                                    Response::new(Full::new(Bytes::from_static(b"not found\n")));
                                *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                                response
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
