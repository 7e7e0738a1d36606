//! The compiled router: first matching rule wins, no match means the
//! default outbound.
//!
//! Each rule's conditions are checked in V2Ray 4.34's order (domain, user,
//! inbound tag, port, source port, network, ip, source) and all must hold.
//! Rules are tried in order. Domain conditions of all rules are answered
//! at once by a [`DomainIndex`]: the router then walks, in rule order, only
//! the rules whose domain condition held plus the rules without one.
//!
//! Routing is pure: it never resolves names. When the domain strategy
//! needs the IPs of a domain target, [`Router::route`] returns
//! [`Route::NeedsResolve`] and the caller asks again with the addresses
//! (an empty slice if resolution failed). Resolution for routing never
//! changes the session's destination. Not here: falling back to the
//! default outbound when a rule names a tag no handler has (the
//! dispatcher does that, see [`Router::unknown_tags`]).

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use rayback_core::{Network, Session, Tag};

use crate::domain::{asset_error, parse_entry, DomainIndex, DomainIndexBuilder, ParseContext};
use crate::error::RoutingError;
use crate::geodata::{AssetCache, AssetLocator};
use crate::ip::{Cidr, IpSet};
use crate::port::PortList;
use rayback_core::{DomainStrategy, RoutingSettings, RuleNetwork, RuleSettings, RuleTarget};

/// The router's verdict for one session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// A rule matched: use the outbound with this tag (a balancer's pick
    /// for balancer rules).
    Outbound(Tag),
    /// No rule matched, or the balancer found no outbound: use the default
    /// outbound (the first one in the config).
    Default,
    /// The domain target must be resolved before routing can finish: call
    /// [`Router::route`] again with its IPs.
    NeedsResolve,
}

/// A rule's target after compilation.
#[derive(Debug)]
enum CompiledTarget {
    Outbound(Tag),
    /// The outbound tags the balancer's selectors pick from.
    Balancer(Box<[Tag]>),
}

/// A set of exact strings (inbound tags, user emails).
#[derive(Debug)]
struct Names(Box<[Box<str>]>);

impl Names {
    fn new(names: &[String]) -> Names {
        let mut kept: Vec<Box<str>> = names
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| name.as_str().into())
            .collect();
        kept.sort_unstable();
        kept.dedup();
        Names(kept.into_boxed_slice())
    }

    fn contains(&self, name: &str) -> bool {
        if self.0.len() <= 8 {
            self.0.iter().any(|have| &**have == name)
        } else {
            self.0.binary_search_by(|have| (**have).cmp(name)).is_ok()
        }
    }
}

/// One compiled rule; `None` fields are absent conditions.
#[derive(Debug)]
struct Rule {
    has_domain: bool,
    user: Option<Names>,
    inbound_tag: Option<Names>,
    port: Option<PortList>,
    source_port: Option<PortList>,
    /// Whether TCP and UDP sessions match.
    network: Option<[bool; 2]>,
    ip: Option<IpSet>,
    source: Option<IpSet>,
    /// Sniffed protocol names, matched by prefix ("http" covers "http1");
    /// empty names dropped, as in V2Ray.
    protocol: Option<Vec<String>>,
    target: CompiledTarget,
}

/// The IPs the `ip` condition sees for the current session.
#[derive(Clone, Copy)]
enum TargetIps<'a> {
    /// The target is an IP.
    Direct(IpAddr),
    /// The resolved addresses of a domain target.
    Resolved(&'a [IpAddr]),
    /// A domain target under `AsIs`, or the first pass of `IPIfNonMatch`.
    Nothing,
    /// A domain target under `IPOnDemand`, not resolved yet.
    Unresolved,
}

/// Why evaluation stopped without a rule.
enum Stop {
    NoMatch,
    NeedsResolve,
}

/// Rules compiled for fast matching. Cheap to share (`Arc<Router>`);
/// routing takes `&self` and never blocks.
pub struct Router {
    strategy: DomainStrategy,
    rules: Vec<Rule>,
    domains: DomainIndex,
    /// Indices of rules with no domain condition, ascending.
    rules_without_domain: Vec<u32>,
    unknown_tags: Vec<String>,
    random: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("strategy", &self.strategy)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Rule indices whose domain condition held; reused between lookups.
    static CANDIDATES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl Router {
    /// Checks and compiles `spec`. `outbound_tags` are the tags of every
    /// outbound handler (including portals); balancers choose among them.
    /// Geo data files are looked up through `assets`.
    pub fn new(
        spec: &RoutingSettings,
        outbound_tags: &[String],
        assets: &AssetLocator,
    ) -> Result<Router, RoutingError> {
        for (index, balancer) in spec.balancers.iter().enumerate() {
            if balancer.tag.is_empty() {
                return Err(RoutingError::EmptyBalancerTag { index });
            }
            if balancer.selector.is_empty() {
                return Err(RoutingError::EmptySelector {
                    tag: balancer.tag.clone(),
                });
            }
        }
        let mut cache = AssetCache::default();
        let mut domains = DomainIndexBuilder::default();
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut rules_without_domain = Vec::new();
        let mut unknown_tags = Vec::new();
        let mut patterns = Vec::new();
        for (index, rule_spec) in spec.rules.iter().enumerate() {
            let target = compile_target(index, rule_spec, spec, outbound_tags)?;
            if let RuleTarget::Outbound(tag) = &rule_spec.target {
                if !outbound_tags.contains(tag) && !unknown_tags.contains(tag) {
                    unknown_tags.push(tag.clone());
                }
            }
            patterns.clear();
            let mut context = ParseContext {
                rule: index,
                assets,
                cache: &mut cache,
            };
            for entry in &rule_spec.domain {
                parse_entry(&mut context, entry, &mut patterns)?;
            }
            let has_domain = !patterns.is_empty();
            for pattern in patterns.drain(..) {
                domains.add(index as u32, pattern);
            }
            let rule = compile_rule(index, rule_spec, has_domain, target, assets, &mut cache)?;
            if !has_domain {
                rules_without_domain.push(index as u32);
            }
            rules.push(rule);
        }
        let domains = domains.build()?;
        let seed = RandomState::new().build_hasher().finish();
        Ok(Router {
            strategy: spec.domain_strategy,
            rules,
            domains,
            rules_without_domain,
            unknown_tags,
            random: AtomicU64::new(seed),
        })
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Outbound tags named by rules but absent from `outbound_tags`. V2Ray
    /// accepts them and falls back to the default outbound at runtime with
    /// a warning; the caller may warn once at start.
    pub fn unknown_tags(&self) -> &[String] {
        &self.unknown_tags
    }

    /// Routes `session`. `resolved` are the IPs of a domain target when the
    /// caller has them (after a [`Route::NeedsResolve`]); balancers pick
    /// with the router's own cheap random numbers.
    pub fn route(&self, session: &Session, resolved: Option<&[IpAddr]>) -> Route {
        self.route_with_random(session, resolved, self.next_random())
    }

    /// [`Router::route`] with the balancer's randomness given: a balancer
    /// with `n` outbounds picks number `random % n`.
    pub fn route_with_random(
        &self,
        session: &Session,
        resolved: Option<&[IpAddr]>,
        random: u64,
    ) -> Route {
        let address = &session.destination.address;
        let domain = address.domain();
        let outcome = self.with_candidates(domain, |candidates| {
            match (address.ip(), self.strategy, resolved) {
                (Some(ip), _, _) => self.first_match(session, candidates, TargetIps::Direct(ip)),
                (None, DomainStrategy::IpOnDemand, Some(ips)) => {
                    self.first_match(session, candidates, TargetIps::Resolved(ips))
                }
                (None, DomainStrategy::IpOnDemand, None) => {
                    self.first_match(session, candidates, TargetIps::Unresolved)
                }
                (None, DomainStrategy::IpIfNonMatch, _) => {
                    match self.first_match(session, candidates, TargetIps::Nothing) {
                        Err(Stop::NoMatch) => match resolved {
                            Some(ips) => {
                                self.first_match(session, candidates, TargetIps::Resolved(ips))
                            }
                            None => Err(Stop::NeedsResolve),
                        },
                        other => other,
                    }
                }
                (None, DomainStrategy::AsIs | DomainStrategy::AlwaysIp, _) => {
                    self.first_match(session, candidates, TargetIps::Nothing)
                }
            }
        });
        match outcome {
            Ok(index) => match &self.rules[index].target {
                CompiledTarget::Outbound(tag) => Route::Outbound(tag.clone()),
                CompiledTarget::Balancer(tags) if tags.is_empty() => Route::Default,
                CompiledTarget::Balancer(tags) => {
                    let pick = (random % tags.len() as u64) as usize;
                    Route::Outbound(tags[pick].clone())
                }
            },
            Err(Stop::NoMatch) => Route::Default,
            Err(Stop::NeedsResolve) => Route::NeedsResolve,
        }
    }

    /// A splitmix64 step over an atomic counter: cheap, lock-free, and good
    /// enough to spread sessions over a balancer's outbounds.
    fn next_random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Runs `body` with the sorted indices of the rules whose domain
    /// condition holds for `domain`.
    fn with_candidates<R>(&self, domain: Option<&str>, body: impl FnOnce(&[u32]) -> R) -> R {
        let domain = match domain {
            Some(domain) if !self.domains.is_empty() => domain,
            _ => return body(&[]),
        };
        CANDIDATES.with(|cell| {
            let mut fresh = Vec::new();
            let mut borrowed = cell.try_borrow_mut();
            let candidates = match borrowed.as_mut() {
                Ok(candidates) => &mut **candidates,
                Err(_) => &mut fresh,
            };
            candidates.clear();
            self.domains.matches(domain, candidates);
            candidates.sort_unstable();
            candidates.dedup();
            body(candidates)
        })
    }

    /// The first rule, in order, whose conditions all hold.
    fn first_match(
        &self,
        session: &Session,
        candidates: &[u32],
        ips: TargetIps<'_>,
    ) -> Result<usize, Stop> {
        let mut with_domain = candidates.iter().copied().peekable();
        let mut without_domain = self.rules_without_domain.iter().copied().peekable();
        loop {
            let next = match (with_domain.peek(), without_domain.peek()) {
                (Some(&a), Some(&b)) if a < b => with_domain.next(),
                (Some(_), None) => with_domain.next(),
                (_, Some(_)) => without_domain.next(),
                (None, None) => return Err(Stop::NoMatch),
            };
            let Some(index) = next else {
                return Err(Stop::NoMatch);
            };
            let index = index as usize;
            if self.rules[index].matches(session, ips)? {
                return Ok(index);
            }
        }
    }
}

impl Rule {
    /// Every condition but the domain one (the index answered that), in
    /// V2Ray's order so that `IPOnDemand` asks for resolution exactly
    /// when V2Ray would resolve.
    fn matches(&self, session: &Session, ips: TargetIps<'_>) -> Result<bool, Stop> {
        if let Some(users) = &self.user {
            match &session.user {
                Some(user) if !user.email.is_empty() && users.contains(&user.email) => {}
                _ => return Ok(false),
            }
        }
        if let Some(tags) = &self.inbound_tag {
            match &session.inbound_tag {
                Some(tag) if !tag.as_str().is_empty() && tags.contains(tag.as_str()) => {}
                _ => return Ok(false),
            }
        }
        if let Some(ports) = &self.port {
            if !ports.contains(session.destination.port) {
                return Ok(false);
            }
        }
        if let Some(ports) = &self.source_port {
            // A session without a source has source port 0, as in V2Ray.
            if !ports.contains(session.source.map_or(0, |source| source.port())) {
                return Ok(false);
            }
        }
        if let Some([tcp, udp]) = self.network {
            let matched = match session.destination.network {
                Network::Tcp => tcp,
                Network::Udp => udp,
            };
            if !matched {
                return Ok(false);
            }
        }
        if let Some(set) = &self.ip {
            let matched = match ips {
                TargetIps::Direct(ip) => set.contains(ip),
                TargetIps::Resolved(ips) => ips.iter().any(|&ip| set.contains(ip)),
                TargetIps::Nothing => false,
                TargetIps::Unresolved => return Err(Stop::NeedsResolve),
            };
            if !matched {
                return Ok(false);
            }
        }
        if let Some(set) = &self.source {
            match session.source {
                Some(source) if set.contains(source.ip()) => {}
                _ => return Ok(false),
            }
        }
        // Last, as in V2Ray: the protocol the inbound sniffed, if any.
        if let Some(names) = &self.protocol {
            match session.protocol.as_deref() {
                Some(sniffed) if names.iter().any(|name| sniffed.starts_with(name.as_str())) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

fn compile_target(
    index: usize,
    rule: &RuleSettings,
    spec: &RoutingSettings,
    outbound_tags: &[String],
) -> Result<CompiledTarget, RoutingError> {
    match &rule.target {
        RuleTarget::Outbound(tag) if tag.is_empty() => {
            Err(RoutingError::EmptyTarget { rule: index })
        }
        RuleTarget::Outbound(tag) => Ok(CompiledTarget::Outbound(Tag::new(tag))),
        RuleTarget::Balancer(tag) if tag.is_empty() => {
            Err(RoutingError::EmptyTarget { rule: index })
        }
        RuleTarget::Balancer(tag) => {
            let balancer = spec
                .balancers
                .iter()
                .find(|balancer| &balancer.tag == tag)
                .ok_or_else(|| RoutingError::UndefinedBalancer {
                    rule: index,
                    tag: tag.clone(),
                })?;
            let mut tags: Vec<&String> = outbound_tags
                .iter()
                .filter(|outbound| {
                    balancer
                        .selector
                        .iter()
                        .any(|prefix| outbound.starts_with(prefix.as_str()))
                })
                .collect();
            // Duplicate outbound tags name one handler, as in V2Ray's table.
            tags.sort_unstable();
            tags.dedup();
            Ok(CompiledTarget::Balancer(
                tags.into_iter().map(|tag| Tag::new(tag)).collect(),
            ))
        }
    }
}

fn compile_rule(
    index: usize,
    spec: &RuleSettings,
    has_domain: bool,
    target: CompiledTarget,
    assets: &AssetLocator,
    cache: &mut AssetCache,
) -> Result<Rule, RoutingError> {
    if spec.attrs.as_deref().is_some_and(|attrs| !attrs.is_empty()) {
        return Err(RoutingError::Unsupported {
            rule: index,
            field: "attrs",
        });
    }
    let ports = |text: &Option<String>| -> Result<Option<PortList>, RoutingError> {
        text.as_deref()
            .map(|text| {
                PortList::parse(text).map_err(|value| RoutingError::BadPort { rule: index, value })
            })
            .transpose()
    };
    let network = (!spec.network.is_empty()).then(|| {
        let mut matched = [false; 2];
        for network in &spec.network {
            match network {
                RuleNetwork::Tcp => matched[0] = true,
                RuleNetwork::Udp => matched[1] = true,
                RuleNetwork::Unix | RuleNetwork::Unknown(_) => {}
            }
        }
        matched
    });
    let rule = Rule {
        has_domain,
        user: (!spec.user.is_empty()).then(|| Names::new(&spec.user)),
        inbound_tag: (!spec.inbound_tag.is_empty()).then(|| Names::new(&spec.inbound_tag)),
        port: ports(&spec.port)?,
        source_port: ports(&spec.source_port)?,
        network,
        ip: ip_condition(index, &spec.ip, assets, cache)?,
        source: ip_condition(index, &spec.source, assets, cache)?,
        protocol: (!spec.protocol.is_empty()).then(|| {
            spec.protocol
                .iter()
                .filter(|name| !name.is_empty())
                .cloned()
                .collect()
        }),
        target,
    };
    let effective = rule.has_domain
        || rule.user.is_some()
        || rule.inbound_tag.is_some()
        || rule.port.is_some()
        || rule.source_port.is_some()
        || rule.network.is_some()
        || rule.ip.is_some()
        || rule.source.is_some()
        || rule.protocol.is_some();
    if !effective {
        return Err(RoutingError::NoEffectiveFields { rule: index });
    }
    Ok(rule)
}

/// An `ip` or `source` list: CIDRs, `geoip:CC`, `ext:file:tag`,
/// `ext-ip:file:tag`. An empty list is no condition. Also compiles the
/// `dns` object's `expectIps` (in `app`).
pub fn ip_condition(
    index: usize,
    entries: &[String],
    assets: &AssetLocator,
    cache: &mut AssetCache,
) -> Result<Option<IpSet>, RoutingError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut cidrs: Vec<Cidr> = Vec::new();
    for entry in entries {
        let (file, code) = if let Some(code) = entry.strip_prefix("geoip:") {
            if code.is_empty() {
                return Err(RoutingError::EmptyValue {
                    rule: index,
                    prefix: "geoip:",
                    value: entry.clone(),
                });
            }
            ("geoip.dat", code)
        } else if let Some(resource) = entry
            .strip_prefix("ext:")
            .or_else(|| entry.strip_prefix("ext-ip:"))
        {
            let parts: Vec<&str> = resource.split(':').collect();
            let [file, code] = parts[..] else {
                return Err(RoutingError::BadExternal {
                    rule: index,
                    value: entry.clone(),
                });
            };
            if file.is_empty() || code.is_empty() {
                return Err(RoutingError::EmptyValue {
                    rule: index,
                    prefix: "ext:",
                    value: entry.clone(),
                });
            }
            (file, code)
        } else {
            let cidr = Cidr::parse(entry).ok_or_else(|| RoutingError::BadCidr {
                rule: index,
                value: entry.clone(),
            })?;
            cidrs.push(cidr);
            continue;
        };
        let loaded = cache
            .ip(assets, file, code)
            .map_err(|error| asset_error(index, file, code, error))?;
        cidrs.extend(loaded);
    }
    Ok(Some(IpSet::new(&cidrs)))
}
