//! Outbound mux: an [`Outbound`] that carries every session as a sub-stream
//! of a few pooled connections made by an inner outbound (V2Ray's
//! `"mux": {"enabled": true, "concurrency": N}`, spec §10).
//!
//! Each carrier is `inner.connect(session → v1.mux.cool:9527)`; VMess turns
//! that destination into its mux command. A carrier takes at most
//! `concurrency` sessions at once and 128 over its life, then closes when
//! idle (16 s check), as in V2Ray 4.34. Unlike V2Ray's picker (which has a
//! swap quirk, spec §10), Rayback takes the first carrier with room, and
//! sessions arriving while a carrier is being dialed share that carrier
//! instead of each dialing one.
//!
//! Not here: the mux inbound side ([`crate::serve_mux`]).

use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rayback_core::{Outbound, Session, Stream};
use tokio::sync::OnceCell;

use crate::client::MuxClient;
use crate::conn::lock;
use crate::server::mux_cool_destination;
use crate::settings::ClientSettings;

/// How many times `connect` looks for a carrier before giving up (V2Ray: 16).
const ATTEMPTS: usize = 16;

/// Wraps an outbound so that its sessions share mux connections.
pub struct MuxOutbound {
    inner: Arc<dyn Outbound>,
    config: ClientSettings,
    pool: Mutex<Vec<Arc<Carrier>>>,
}

/// One pooled carrier, possibly still being dialed.
struct Carrier {
    client: OnceCell<MuxClient>,
    /// Sessions promised to this carrier but not yet opened on it (under the
    /// pool lock).
    reserved: Mutex<usize>,
}

impl Carrier {
    fn is_closed(&self) -> bool {
        self.client.get().is_some_and(MuxClient::is_closed)
    }

    /// Room for one more session, counting reservations.
    fn has_room(&self, config: &ClientSettings) -> bool {
        let reserved = *lock(&self.reserved);
        let (active, total) = match self.client.get() {
            Some(client) if client.is_closed() => return false,
            Some(client) => (client.active_sessions(), client.total_opened()),
            None => (0, 0),
        };
        let under_concurrency = match config.max_concurrency {
            Some(max) => active + reserved < max,
            None => true,
        };
        let under_total = match config.max_total {
            Some(max) => total + (reserved as u64) < max,
            None => true,
        };
        under_concurrency && under_total
    }
}

impl MuxOutbound {
    /// Mux over `inner` with `concurrency` sessions per connection (1..=1024;
    /// see [`crate::concurrency_from_config`] for V2Ray's config rule).
    pub fn new(inner: Arc<dyn Outbound>, concurrency: usize) -> MuxOutbound {
        MuxOutbound::with_config(inner, ClientSettings::outbound(concurrency.max(1)))
    }

    pub fn with_config(inner: Arc<dyn Outbound>, config: ClientSettings) -> MuxOutbound {
        MuxOutbound {
            inner,
            config,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Live carriers (dialing ones included).
    pub fn carriers(&self) -> usize {
        let mut pool = lock(&self.pool);
        pool.retain(|carrier| !carrier.is_closed());
        pool.len()
    }

    /// Picks a carrier with room and reserves a place on it, or adds a new
    /// (not yet dialed) one.
    fn reserve(&self) -> Arc<Carrier> {
        let mut pool = lock(&self.pool);
        pool.retain(|carrier| !carrier.is_closed());
        let carrier = match pool.iter().find(|carrier| carrier.has_room(&self.config)) {
            Some(carrier) => Arc::clone(carrier),
            None => {
                let carrier = Arc::new(Carrier {
                    client: OnceCell::new(),
                    reserved: Mutex::new(0),
                });
                pool.push(Arc::clone(&carrier));
                carrier
            }
        };
        *lock(&carrier.reserved) += 1;
        carrier
    }

    fn release(&self, carrier: &Arc<Carrier>, failed: bool) {
        let mut pool = lock(&self.pool);
        *lock(&carrier.reserved) -= 1;
        if failed && carrier.client.get().is_none() {
            pool.retain(|other| !Arc::ptr_eq(other, carrier));
        }
    }
}

#[async_trait]
impl Outbound for MuxOutbound {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        for _ in 0..ATTEMPTS {
            let carrier = self.reserve();
            let client = carrier
                .client
                .get_or_try_init(|| async {
                    let stream = self
                        .inner
                        .connect(&session.redirected(mux_cool_destination()))
                        .await?;
                    tracing::debug!("new mux carrier");
                    io::Result::Ok(MuxClient::new(stream, self.config.clone()))
                })
                .await;
            let client = match client {
                Ok(client) => client,
                Err(error) => {
                    self.release(&carrier, true);
                    return Err(error);
                }
            };
            let opened = client.open(session.destination.clone()).await;
            self.release(&carrier, false);
            match opened {
                Ok(stream) => return Ok(stream),
                Err(error) if error.is_full() || error.is_closed() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(io::Error::other("unable to find an available mux client"))
    }
}
