//! The servers of a VMess or VLESS outbound (`vnext`), dialled as V2Ray
//! 4.34 dials them: round robin over the list, or the one server the
//! session names ([`Session::server`](rayback_core::SessionFields::server): a bridge keeps a tunnel to each
//! portal); up to 5 attempts with 0/200/400/600/800 ms pauses.

use std::io;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use rayback_core::{Address, Session};

use crate::{Conn, Transport};

/// Connection attempts per dial, and the pause before each.
const ATTEMPT_PAUSES_MS: [u64; 5] = [0, 200, 400, 600, 800];

/// A `vnext` entry: where it is.
pub trait Endpoint {
    fn address(&self) -> &Address;
    fn port(&self) -> u16;
}

/// The servers named `host:port`, in list order (what
/// [`rayback_core::Outbound::servers`] returns).
pub fn names<S: Endpoint>(servers: &[S]) -> Vec<String> {
    servers
        .iter()
        .map(|server| format!("{}:{}", server.address(), server.port()))
        .collect()
}

/// Dials one of `servers` (non-empty) through `transport` for `session`,
/// each attempt bounded by `timeout`; returns the connection and the server
/// it reached, or the last attempt's error. `protocol` names the outbound
/// in logs. Cancelling the future drops any socket being dialled.
pub async fn dial<'a, S: Endpoint>(
    transport: &Transport,
    servers: &'a [S],
    session: &Session,
    round_robin: &AtomicUsize,
    timeout: Duration,
    protocol: &str,
) -> io::Result<(Conn, &'a S)> {
    let mut last_error = None;
    for pause in ATTEMPT_PAUSES_MS {
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let server = &servers[session.server_index(round_robin, servers.len())];
        match transport
            .dial(server.address(), server.port(), timeout)
            .await
        {
            Ok(socket) => return Ok((socket, server)),
            Err(error) => {
                tracing::debug!(server = %server.address(), port = server.port(), %error, "{protocol} dial failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other(format!("no {protocol} server to dial"))))
}
