//! The `dns` object turned into a resolver: the `dns` crate resolves, the
//! `routing` crate's matchers (domain index, IP sets, geodata) compile its
//! rules, so both objects read domain and IP rules with one
//! implementation. Without a `dns` object the system resolver answers, as
//! in 4.34.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use rayback_config as config;
use rayback_core::Resolve;
use rayback_dns::{CompileRules, DnsResolver, DomainRules, IpRules, SystemResolver};
use rayback_routing::geodata::AssetCache;
use rayback_routing::{
    ip_condition, parse_entry, AssetLocator, DomainIndex, DomainIndexBuilder, IpSet, ParseContext,
};

/// The resolver `config` asks for: its `dns` object's, or the system's.
pub fn resolver(config: &config::Config) -> Result<Arc<dyn Resolve>> {
    match &config.dns {
        None => Ok(Arc::new(SystemResolver)),
        Some(settings) => {
            let rules = RoutingRules {
                assets: AssetLocator::from_env(),
            };
            Ok(Arc::new(DnsResolver::new(settings, &rules).context("dns")?))
        }
    }
}

/// Compiles the `dns` object's rules with the routing crate.
pub struct RoutingRules {
    pub assets: AssetLocator,
}

struct Domains(DomainIndex);

impl DomainRules for Domains {
    fn matching(&self, domain: &str, out: &mut Vec<u32>) {
        self.0.matches(domain, out);
    }
}

struct Ips(Option<IpSet>);

impl IpRules for Ips {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(ip))
    }
}

impl CompileRules for RoutingRules {
    fn domain_groups(&self, groups: &[Vec<String>]) -> Result<Box<dyn DomainRules>, String> {
        let mut cache = AssetCache::default();
        let mut builder = DomainIndexBuilder::default();
        let mut patterns = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            let mut context = ParseContext {
                rule: index,
                assets: &self.assets,
                cache: &mut cache,
            };
            for entry in group {
                parse_entry(&mut context, entry, &mut patterns)
                    .map_err(|error| format!("{entry:?}: {error}"))?;
            }
            for pattern in patterns.drain(..) {
                builder.add(index as u32, pattern);
            }
        }
        let index = builder.build().map_err(|error| error.to_string())?;
        Ok(Box::new(Domains(index)))
    }

    fn ips(&self, entries: &[String]) -> Result<Box<dyn IpRules>, String> {
        let mut cache = AssetCache::default();
        let set = ip_condition(0, entries, &self.assets, &mut cache)
            .map_err(|error| format!("{entries:?}: {error}"))?;
        Ok(Box::new(Ips(set)))
    }
}
