//! The dispatcher: the router plus the outbounds it chooses from.
//!
//! Every session ends up here — from an inbound, from a bridge (its own
//! tunnel dials and the sessions the portal opens), from a mux server. The
//! dispatcher routes it to an outbound tag (resolving a domain first when
//! the domain strategy asks), applies the session's policy, writes the
//! access line, and lets the outbound carry the stream. A session for
//! V2Ray's mux destination (`v1.mux.cool`) starts a Mux.Cool server on the
//! stream instead, whose sub-sessions come back here.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use rayback_core::policy::Policies;
use rayback_core::{Dispatch, Outbound, Resolve, ResolveStrategy, Session, Stream};
use rayback_mux::{is_mux_cool, serve_mux_with, ServerSettings};
use rayback_routing::{Route, Router};

use crate::access::AccessLog;
use crate::metrics::Metrics;

/// A named outbound.
#[derive(Clone)]
pub struct Handler {
    pub tag: String,
    pub outbound: Arc<dyn Outbound>,
}

/// The dispatcher in force: inbounds and bridges hold this, so a reload
/// that swaps the dispatcher reaches them without a restart. Sessions
/// already dispatched keep the dispatcher (and outbounds) they started with.
pub struct SharedDispatch(RwLock<Arc<Dispatcher>>);

impl SharedDispatch {
    pub fn new(dispatcher: Arc<Dispatcher>) -> SharedDispatch {
        SharedDispatch(RwLock::new(dispatcher))
    }

    pub fn current(&self) -> Arc<Dispatcher> {
        self.0.read().expect("not poisoned").clone()
    }

    pub fn replace(&self, dispatcher: Arc<Dispatcher>) {
        *self.0.write().expect("not poisoned") = dispatcher;
    }
}

#[async_trait]
impl Dispatch for SharedDispatch {
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()> {
        self.current().dispatch(session, stream).await
    }

    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        self.current().connect(session).await
    }

    async fn servers(&self, session: &Session) -> Vec<String> {
        self.current().servers(session).await
    }
}

/// Routes sessions and hands them to outbounds.
pub struct Dispatcher {
    router: Router,
    outbounds: HashMap<String, Handler>,
    default: Option<Handler>,
    policies: Policies,
    access: AccessLog,
    mux: ServerSettings,
    metrics: Arc<Metrics>,
    /// Resolves domains for `IPIfNonMatch`/`IPOnDemand`; `None` is the
    /// system resolver.
    resolver: Option<Arc<dyn Resolve>>,
    me: Weak<Dispatcher>,
}

/// What the dispatcher is built from.
pub struct DispatcherParts {
    pub router: Router,
    /// In config order; a later tag replaces an earlier one, as in V2Ray.
    pub outbounds: Vec<Handler>,
    /// The default outbound: the first configured one, else the first portal.
    pub default: Option<Handler>,
    pub policies: Policies,
    pub access: AccessLog,
    /// Settings of mux servers started for `v1.mux.cool` sessions.
    pub mux: ServerSettings,
    pub metrics: Arc<Metrics>,
    /// The `dns` object's resolver; `None` is the system resolver.
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Arc<Dispatcher> {
        let outbounds = parts
            .outbounds
            .into_iter()
            .map(|handler| (handler.tag.clone(), handler))
            .collect();
        Arc::new_cyclic(|me| Dispatcher {
            router: parts.router,
            outbounds,
            default: parts.default,
            policies: parts.policies,
            access: parts.access,
            mux: parts.mux,
            metrics: parts.metrics,
            resolver: parts.resolver,
            me: me.clone(),
        })
    }

    /// The settings of the mux servers this dispatcher starts.
    pub fn mux_settings(&self) -> ServerSettings {
        self.mux.clone()
    }

    /// The outbound for `session`.
    pub async fn route(&self, session: &Session) -> io::Result<&Handler> {
        let mut route = self.router.route(session, None);
        if route == Route::NeedsResolve {
            let ips = resolve(self.resolver.as_deref(), session).await;
            route = self.router.route(session, Some(&ips));
        }
        let handler = match route {
            Route::Outbound(tag) => match self.outbounds.get(tag.as_str()) {
                Some(handler) => Some(handler),
                None => {
                    tracing::warn!("routing: non existing tag: {tag}; using the default outbound");
                    self.default.as_ref()
                }
            },
            Route::Default | Route::NeedsResolve => self.default.as_ref(),
        };
        handler.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no outbound for {}: the configuration has none",
                    session.destination
                ),
            )
        })
    }
}

/// The IPs of a domain destination; empty when it does not resolve.
async fn resolve(resolver: Option<&dyn Resolve>, session: &Session) -> Vec<IpAddr> {
    let Some(domain) = session.destination.address.domain() else {
        return Vec::new();
    };
    let resolver = resolver.unwrap_or(&rayback_dns::SystemResolver);
    match resolver.resolve(domain, ResolveStrategy::UseIp).await {
        Ok(ips) => ips,
        Err(error) => {
            tracing::debug!("routing: resolving {domain} failed: {error}");
            Vec::new()
        }
    }
}

#[async_trait]
impl Dispatch for Dispatcher {
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()> {
        if is_mux_cool(&session.destination) {
            let me: Arc<dyn Dispatch> = self.me.upgrade().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the app is shutting down")
            })?;
            // Boxed: a mux server's state is large, and inline it would
            // size every session's dispatch future.
            return Box::pin(serve_mux_with(stream, session, me, self.mux.clone())).await;
        }
        // Boxed: routing may resolve a domain, and that state, inline,
        // would size the future every held connection keeps.
        let handler = Box::pin(self.route(&session)).await?;
        self.access.accepted(&session, &handler.tag);
        let policy = self.policies.level(session.level());
        let inbound_tag = session.inbound_tag.as_ref().map_or("", |tag| tag.as_str());
        let stream = Box::new(self.metrics.count(stream, inbound_tag, &handler.tag));
        handler.outbound.handle(session, stream, &policy).await
    }

    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        let handler = self.route(session).await?;
        self.access.accepted(session, &handler.tag);
        handler.outbound.connect(session).await
    }

    async fn servers(&self, session: &Session) -> Vec<String> {
        match self.route(session).await {
            Ok(handler) => handler.outbound.servers(),
            Err(_) => Vec::new(),
        }
    }
}
