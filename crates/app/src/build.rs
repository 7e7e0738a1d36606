//! Configuration → components: the one place where config types become
//! handlers, the router and the reverse proxy's parts.
//!
//! [`build`] does everything that needs no socket, so `-test` runs it to
//! check a configuration as fully as V2Ray's `-test` does (rules compiled,
//! geo files found, users' keys derived); [`crate::run::start`] then binds
//! the listeners it describes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rayback_config as config;
use rayback_core::policy::{Policies, Policy};
use rayback_core::{Address, Outbound, Resolve, Tag};
use rayback_handlers::{Blackhole, DokodemoSettings, Freedom, FreedomSettings};
use rayback_mux::{MuxOutbound, MuxSettings, ServerSettings};
use rayback_reverse::{BridgeSettings, Portal, PortalSettings};
use rayback_routing::{AssetLocator, Router};
use rayback_transport::Transport;
use rayback_vmess::{
    OutboundUser, ServerUser, UserId, VmessInboundSettings, VmessMetrics, VmessOutbound,
    VmessOutboundSettings, VmessServer,
};

use crate::access::AccessLog;
use crate::dispatcher::{Dispatcher, DispatcherParts, Handler};
use crate::metrics::Metrics;

/// How long a VMess outbound waits for one TCP connect.
const VMESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener to open.
pub enum InboundPlan {
    /// With the transport of its `streamSettings`.
    Dokodemo(DokodemoSettings, Arc<Transport>),
    /// The metrics every VMess inbound shares, and the most handshakes
    /// one source address may have open at once.
    Vmess(VmessInboundSettings, Arc<VmessMetrics>, usize),
    /// The most handshakes one source address may have open at once.
    Vless(rayback_vless::VlessInboundSettings, usize),
    /// With the transport of its `streamSettings`.
    Socks(rayback_handlers::SocksSettings, Arc<Transport>),
    /// With the transport of its `streamSettings`.
    Http(rayback_handlers::HttpSettings, Arc<Transport>),
}

/// The listeners of one configured inbound (one per port of its range).
pub struct InboundGroup {
    /// The inbound as configured: a reload keeps the listeners of an
    /// inbound whose configuration did not change.
    pub config: config::Inbound,
    /// Where in the configuration it is, for messages.
    pub place: String,
    pub plans: Vec<InboundPlan>,
}

/// A bridge to run, with the configuration it came from.
pub struct BridgePlan {
    pub config: config::Bridge,
    pub settings: BridgeSettings,
}

/// Components that outlive a reload when their configuration is unchanged:
/// outbounds (a mux outbound's carriers, say) and portals (their adopted
/// tunnel connections), and the process-wide counters.
#[derive(Clone, Default)]
pub struct Kept {
    pub metrics: Arc<Metrics>,
    pub vmess_metrics: Arc<VmessMetrics>,
    pub outbounds: Vec<(config::Outbound, Arc<dyn Outbound>)>,
    pub portals: Vec<(config::Portal, Arc<Portal>)>,
    /// The limits the kept parts were built with; they are rebuilt when
    /// the limits change.
    pub limits: Option<config::Limits>,
    /// The `dns` object the kept outbounds resolve with; they are rebuilt
    /// when it changes.
    pub dns: Option<config::DnsSettings>,
}

/// Everything a configuration describes, ready to run.
pub struct Built {
    pub dispatcher: Arc<Dispatcher>,
    pub inbounds: Vec<InboundGroup>,
    pub bridges: Vec<BridgePlan>,
    pub portals: Vec<Arc<Portal>>,
    /// What the next reload may keep.
    pub kept: Kept,
}

/// Checks a configuration as far as it can be without opening sockets.
pub fn check(config: &config::Config) -> Result<()> {
    build(config, AccessLog::disabled(), &Kept::default()).map(drop)
}

/// The policy of each configured level, in core's terms.
fn policies(policy: &config::Policy) -> Policies {
    Policies::new(
        policy
            .levels
            .iter()
            .map(|(level, settings)| (*level, level_policy(settings)))
            .collect(),
    )
}

fn level_policy(level: &config::LevelPolicy) -> Policy {
    Policy {
        handshake: level.handshake,
        conn_idle: level.conn_idle,
        uplink_only: level.uplink_only,
        downlink_only: level.downlink_only,
        buffer_size: match level.buffer_size {
            config::BufferSize::Unlimited => None,
            config::BufferSize::Bytes(bytes) => Some(bytes as usize),
        },
    }
}

/// Mux settings from the Rayback limits.
fn mux_config(limits: &config::Limits) -> MuxSettings {
    MuxSettings {
        receive_buffer: limits.stream_buffer as usize,
        stall_timeout: limits.stream_stall_timeout,
        ..MuxSettings::default()
    }
}

fn server_config(limits: &config::Limits) -> ServerSettings {
    ServerSettings {
        mux: mux_config(limits),
        max_sessions: limits.streams_per_connection as usize,
    }
}

fn user_id(id: &config::VmessId) -> UserId {
    UserId::from_bytes(*id.as_bytes())
}

fn outbound(
    index: usize,
    outbound: &config::Outbound,
    metrics: &Arc<VmessMetrics>,
    limits: &config::Limits,
    resolver: &Arc<dyn Resolve>,
) -> Result<Arc<dyn Outbound>> {
    let inner: Arc<dyn Outbound> = match &outbound.settings {
        config::OutboundSettings::Freedom(freedom) => Arc::new(
            Freedom::new(FreedomSettings {
                domain_strategy: freedom.domain_strategy,
                redirect: freedom.redirect.clone(),
                proxy_protocol: freedom.proxy_protocol,
                ..FreedomSettings::default()
            })
            .with_transport(client_transport(index, outbound)?)
            .with_resolver(resolver.clone()),
        ),
        config::OutboundSettings::Blackhole(blackhole) => {
            Arc::new(Blackhole::new(blackhole.response))
        }
        config::OutboundSettings::Vmess(vmess) => {
            let servers = vmess
                .vnext
                .iter()
                .map(|server| {
                    Ok(VmessServer {
                        address: Address::parse(&server.address).with_context(|| {
                            format!("outbounds[{index}].settings.vnext: address")
                        })?,
                        port: server.port,
                        users: server
                            .users
                            .iter()
                            .map(|user| OutboundUser {
                                id: user_id(&user.id),
                                alter_id: user.alter_id,
                                security: user.security,
                                level: user.level,
                                email: user.email.clone().unwrap_or_default(),
                            })
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let config = VmessOutboundSettings {
                servers,
                connect_timeout: VMESS_CONNECT_TIMEOUT,
                transport: client_transport(index, outbound)?,
            };
            Arc::new(
                VmessOutbound::new(config, metrics.clone())
                    .with_context(|| format!("outbounds[{index}]"))?,
            )
        }
        config::OutboundSettings::Vless(vless) => {
            let servers = vless
                .vnext
                .iter()
                .map(|server| {
                    Ok(rayback_vless::VlessServer {
                        address: Address::parse(&server.address).with_context(|| {
                            format!("outbounds[{index}].settings.vnext: address")
                        })?,
                        port: server.port,
                        users: server
                            .users
                            .iter()
                            .map(|user| rayback_vless::VlessUser {
                                id: *user.id.as_bytes(),
                                level: user.level,
                                email: user.email.clone().unwrap_or_default(),
                            })
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let config = rayback_vless::VlessOutboundSettings {
                servers,
                connect_timeout: VMESS_CONNECT_TIMEOUT,
                transport: client_transport(index, outbound)?,
            };
            Arc::new(
                rayback_vless::VlessOutbound::new(config, rayback_vless::VlessMetrics::process())
                    .with_context(|| format!("outbounds[{index}]"))?,
            )
        }
    };
    Ok(match outbound.mux {
        Some(mux) if mux.enabled => {
            let mut client =
                rayback_mux::ClientSettings::outbound(usize::from(mux.concurrency.max(1)));
            client.mux = mux_config(limits);
            Arc::new(MuxOutbound::with_config(inner, client))
        }
        _ => inner,
    })
}

/// The dialling side of an outbound's `streamSettings` (a blackhole never
/// dials; V2Ray ignores them there).
fn client_transport(index: usize, outbound: &config::Outbound) -> Result<Arc<Transport>> {
    Ok(Arc::new(Transport::client(&outbound.stream).with_context(
        || format!("outbounds[{index}].streamSettings"),
    )?))
}

/// A SOCKS or HTTP inbound's accounts by username (a later duplicate
/// wins, as in 4.34's map).
fn proxy_accounts(accounts: &[config::ProxyAccount]) -> std::collections::HashMap<String, String> {
    accounts
        .iter()
        .map(|account| (account.user.clone(), account.pass.clone()))
        .collect()
}

/// A VLESS inbound's `fallbacks`, in the vless crate's terms.
fn vless_fallbacks(fallbacks: &[config::VlessFallback]) -> rayback_vless::fallback::Fallbacks {
    use rayback_vless::fallback::{Fallback, FallbackDest, Fallbacks};
    Fallbacks::new(
        fallbacks
            .iter()
            .map(|fallback| Fallback {
                path: fallback.path.clone(),
                dest: match &fallback.dest {
                    config::VlessFallbackDest::Tcp(dest) => FallbackDest::Tcp(dest.clone()),
                    config::VlessFallbackDest::Unix(path) => FallbackDest::Unix(path.into()),
                },
                xver: fallback.xver,
            })
            .collect(),
    )
}

fn inbound_groups(
    config: &config::Config,
    metrics: &Arc<VmessMetrics>,
) -> Result<Vec<InboundGroup>> {
    let level_zero = level_policy(&config.policy.level(0));
    let mut groups = Vec::new();
    for (index, inbound) in config.inbounds.iter().enumerate() {
        let mut plans = Vec::new();
        let place = match &inbound.tag {
            Some(tag) => format!("inbounds[{index}] ({tag})"),
            None => format!("inbounds[{index}]"),
        };
        let ports = inbound
            .port
            .resolve(|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{place}.port"))?;
        let ip = inbound.listen.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let tag = inbound.tag.clone();
        // One transport for every port of the range: certificates are read
        // and checked once.
        let transport = Arc::new(
            Transport::server(&inbound.stream)
                .with_context(|| format!("{place}.streamSettings"))?,
        );
        for port in ports.from..=ports.to {
            let listen = SocketAddr::new(ip, port);
            let plan = match &inbound.settings {
                config::InboundSettings::DokodemoDoor(door) => {
                    let address = match &door.address {
                        Some(address) => Some(
                            Address::parse(address)
                                .with_context(|| format!("{place}.settings.address"))?,
                        ),
                        None => None,
                    };
                    let mut settings = DokodemoSettings::new(listen, address, door.port);
                    settings.tag = tag.clone();
                    settings.networks = door.network.clone();
                    settings.follow_redirect = door.follow_redirect;
                    settings.user_level = door.user_level;
                    InboundPlan::Dokodemo(settings, transport.clone())
                }
                config::InboundSettings::Vmess(vmess) => InboundPlan::Vmess(
                    VmessInboundSettings {
                        tag: tag.clone(),
                        listen,
                        users: vmess
                            .clients
                            .iter()
                            .map(|client| ServerUser {
                                id: user_id(&client.id),
                                alter_id: client.alter_id,
                                level: client.level,
                                email: client.email.clone().unwrap_or_default(),
                            })
                            .collect(),
                        policy: level_zero,
                        disable_insecure_encryption: vmess.disable_insecure_encryption,
                        transport: transport.clone(),
                    },
                    metrics.clone(),
                    config.rayback.limits.unauthenticated_per_source as usize,
                ),
                config::InboundSettings::Vless(vless) => InboundPlan::Vless(
                    rayback_vless::VlessInboundSettings {
                        tag: tag.clone(),
                        listen,
                        clients: vless
                            .clients
                            .iter()
                            .map(|client| rayback_vless::VlessClient {
                                id: *client.id.as_bytes(),
                                level: client.level,
                                email: client.email.clone().unwrap_or_default(),
                            })
                            .collect(),
                        policy: level_zero,
                        transport: transport.clone(),
                        fallbacks: vless_fallbacks(&vless.fallbacks),
                    },
                    config.rayback.limits.unauthenticated_per_source as usize,
                ),
                config::InboundSettings::Socks(socks) => {
                    let mut settings = rayback_handlers::SocksSettings::new(listen);
                    settings.tag = tag.clone();
                    settings.auth = socks.auth;
                    settings.accounts = proxy_accounts(&socks.accounts);
                    settings.udp = socks.udp;
                    settings.ip = match &socks.ip {
                        Some(ip) => Some(
                            Address::parse(ip).with_context(|| format!("{place}.settings.ip"))?,
                        ),
                        None => None,
                    };
                    settings.user_level = socks.user_level;
                    settings.handshake = config.policy.level(socks.user_level).handshake;
                    InboundPlan::Socks(settings, transport.clone())
                }
                config::InboundSettings::Http(http) => {
                    let mut settings = rayback_handlers::HttpSettings::new(listen);
                    settings.tag = tag.clone();
                    settings.accounts = proxy_accounts(&http.accounts);
                    settings.allow_transparent = http.allow_transparent;
                    settings.user_level = http.user_level;
                    settings.handshake = config.policy.level(http.user_level).handshake;
                    InboundPlan::Http(settings, transport.clone())
                }
            };
            plans.push(plan);
        }
        groups.push(InboundGroup {
            config: inbound.clone(),
            place,
            plans,
        });
    }
    Ok(groups)
}

/// Builds every component of `config` except listeners, which are only
/// described. Outbounds and portals whose configuration equals one in
/// `kept` are reused rather than built anew.
pub fn build(config: &config::Config, access: AccessLog, kept: &Kept) -> Result<Built> {
    let limits = &config.rayback.limits;
    let same_limits = kept.limits.as_ref() == Some(limits);
    let mut next = Kept {
        metrics: kept.metrics.clone(),
        vmess_metrics: kept.vmess_metrics.clone(),
        outbounds: Vec::new(),
        portals: Vec::new(),
        limits: Some(*limits),
        dns: config.dns.clone(),
    };
    let resolver = crate::dns::resolver(config)?;
    let same_dns = kept.dns == config.dns;
    let mut handlers = Vec::new();
    for (index, configured) in config.outbounds.iter().enumerate() {
        let tag = configured
            .tag
            .as_ref()
            .map_or_else(String::new, Tag::to_string);
        let reused = (same_limits && same_dns)
            .then(|| kept.outbounds.iter().find(|(old, _)| old == configured))
            .flatten()
            .map(|(_, outbound)| outbound.clone());
        let outbound = match reused {
            Some(outbound) => outbound,
            None => outbound(index, configured, &kept.vmess_metrics, limits, &resolver)?,
        };
        next.outbounds.push((configured.clone(), outbound.clone()));
        handlers.push(Handler { tag, outbound });
    }
    let mut portals = Vec::new();
    for portal_config in &config.reverse.portals {
        let reused = kept
            .portals
            .iter()
            .find(|(old, portal)| {
                old == portal_config
                    && same_limits
                    && portal.settings().no_bridge_wait == config.rayback.no_bridge_wait
            })
            .map(|(_, portal)| portal.clone());
        let portal = match reused {
            Some(portal) => portal,
            None => {
                let mut settings =
                    PortalSettings::new(Tag::new(&portal_config.tag), portal_config.domain.clone());
                settings.control_domain = portal_config.control_domain.as_str().to_owned();
                settings.no_bridge_wait = config.rayback.no_bridge_wait;
                settings.max_streams = limits.streams_per_connection as usize;
                settings.mux = mux_config(limits);
                Arc::new(Portal::new(settings))
            }
        };
        next.portals.push((portal_config.clone(), portal.clone()));
        portals.push(portal.clone());
        handlers.push(Handler {
            tag: portal_config.tag.clone(),
            outbound: portal,
        });
    }
    // The first configured outbound is the default; with none, the first
    // portal (V2Ray registers portals after the configured outbounds).
    let default = handlers.first().cloned();
    let tags: Vec<String> = handlers.iter().map(|handler| handler.tag.clone()).collect();
    let router =
        Router::new(&config.routing, &tags, &AssetLocator::from_env()).context("routing")?;
    let mut bridges = Vec::new();
    for (index, bridge) in config.reverse.bridges.iter().enumerate() {
        if bridge.tag.is_empty() || bridge.domain.is_empty() {
            bail!("reverse.bridges[{index}]: tag and domain must not be empty");
        }
        let mut settings = BridgeSettings::new(Tag::new(&bridge.tag), bridge.domain.clone());
        settings.max_connections = limits.connections_per_bridge as usize;
        settings.mux = server_config(limits);
        bridges.push(BridgePlan {
            config: bridge.clone(),
            settings,
        });
    }
    let dispatcher = Dispatcher::new(DispatcherParts {
        router,
        outbounds: handlers,
        default,
        policies: policies(&config.policy),
        access,
        mux: server_config(limits),
        metrics: kept.metrics.clone(),
        resolver: Some(resolver),
    });
    Ok(Built {
        dispatcher,
        inbounds: inbound_groups(config, &kept.vmess_metrics)?,
        bridges,
        portals,
        kept: next,
    })
}
