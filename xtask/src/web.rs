//! A small web server (hyper) for the demo and the end-to-end benchmark:
//! the "service beside the bridge".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Serves: `/` the demo page, `/1k` 1 KiB and `/1m` 1 MiB of bytes,
/// `/open` the number of other connections it holds open (the benchmark's
/// count of held connections that reached the backend), anything else
/// 404. Binds 127.0.0.1 on `port` (0 for any) and returns the address.
///
/// Out of file descriptors, it waits a moment and accepts again: a
/// benchmark holding thousands of connections may run a process out of
/// them, and the server must serve again once they close.
pub async fn serve(port: u16) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let one_k = Bytes::from(vec![b'k'; 1024]);
    let one_m = Bytes::from(vec![b'm'; 1024 * 1024]);
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let (one_k, one_m) = (one_k.clone(), one_m.clone());
            let counted = OpenConnection::count(&open);
            tokio::spawn(async move {
                let open = counted.0.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let body = match request.uri().path() {
                        "/" => Some(Bytes::from_static(PAGE.as_bytes())),
                        "/1k" => Some(one_k.clone()),
                        "/1m" => Some(one_m.clone()),
                        "/open" => {
                            let others = open.load(Ordering::Relaxed).saturating_sub(1);
                            Some(Bytes::from(others.to_string()))
                        }
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
                drop(counted);
            });
        }
    });
    Ok(addr)
}

/// `cargo xtask web PORT`: [`serve`] in a process of its own until killed.
/// The benchmark runs its backend so, so that the connections it holds
/// open count against this process's file limit, not the benchmark's.
pub fn run(args: &[String]) -> Result<()> {
    let port: u16 = match args {
        [port] => port.parse()?,
        _ => anyhow::bail!("usage: cargo xtask web PORT"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = serve(port).await?;
        eprintln!("web: serving on http://{addr}");
        std::future::pending::<Result<()>>().await
    })
}

/// One accepted connection in the server's count until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(counter: &Arc<AtomicUsize>) -> OpenConnection {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenConnection(counter.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
