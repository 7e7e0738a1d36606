//! The static `hosts` of a `dns` object, as 4.34's `StaticHosts`: every
//! entry whose key matches contributes its addresses; a single domain
//! value replaces the name (followed through the hosts up to five times).
//! Keys arrive as routing-syntax rules, compiled by the caller.

use std::net::{IpAddr, Ipv6Addr};

use rayback_core::dns::family_wanted;
use rayback_core::{HostMapping, HostValue, ResolveStrategy};

use crate::{CompileRules, DnsError, DomainRules};

/// How deep a chain of domain values is followed (4.34's `maxDepth`).
const MAX_DEPTH: usize = 5;

/// What the hosts say about a name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostAnswer {
    /// No key matches: ask the servers.
    NotFound,
    /// Ask the servers for this name instead.
    Replaced(String),
    /// These addresses (empty: recorded, but none of the wanted family).
    Addresses(Vec<IpAddr>),
}

/// One entry's value, with 4.34's `127.0.0.1` → also `::1`.
enum Value {
    Ips(Vec<IpAddr>),
    Domain(String),
}

pub(crate) struct Hosts {
    rules: Box<dyn DomainRules>,
    values: Vec<Value>,
}

impl Hosts {
    pub(crate) fn new(
        mappings: &[HostMapping],
        compile: &dyn CompileRules,
    ) -> Result<Hosts, DnsError> {
        let mut groups = Vec::with_capacity(mappings.len());
        let mut values = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            // Checked one by one so the error names the entry.
            compile
                .domain_groups(&[vec![mapping.rule.clone()]])
                .map_err(|reason| DnsError::BadHost {
                    rule: mapping.rule.clone(),
                    reason,
                })?;
            groups.push(vec![mapping.rule.clone()]);
            values.push(match &mapping.value {
                HostValue::Ip(ip) if *ip == IpAddr::from([127, 0, 0, 1]) => {
                    Value::Ips(vec![*ip, IpAddr::V6(Ipv6Addr::LOCALHOST)])
                }
                HostValue::Ip(ip) => Value::Ips(vec![*ip]),
                HostValue::Domain(name) => Value::Domain(name.clone()),
            });
        }
        let rules = compile
            .domain_groups(&groups)
            .map_err(|reason| DnsError::BadHost {
                rule: String::new(),
                reason,
            })?;
        Ok(Hosts { rules, values })
    }

    pub(crate) fn lookup(&self, domain: &str, strategy: ResolveStrategy) -> HostAnswer {
        self.lookup_depth(domain, strategy, MAX_DEPTH)
    }

    fn lookup_depth(&self, domain: &str, strategy: ResolveStrategy, depth: usize) -> HostAnswer {
        if self.values.is_empty() {
            return HostAnswer::NotFound;
        }
        let mut matched = Vec::new();
        self.rules.matching(domain, &mut matched);
        matched.sort_unstable();
        matched.dedup();
        let values: Vec<&Value> = matched
            .iter()
            .filter_map(|index| self.values.get(*index as usize))
            .collect();
        match values[..] {
            [] => HostAnswer::NotFound,
            [Value::Domain(name)] => {
                if depth > 0 {
                    let unwrapped = self.lookup_depth(name, strategy, depth - 1);
                    if unwrapped != HostAnswer::NotFound {
                        return unwrapped;
                    }
                }
                HostAnswer::Replaced(name.clone())
            }
            _ => {
                // Several entries: their addresses together (a domain
                // value among them adds none, as in 4.34).
                let mut ips = Vec::new();
                for value in values {
                    if let Value::Ips(list) = value {
                        ips.extend(
                            list.iter()
                                .copied()
                                .filter(|ip| family_wanted(strategy, *ip)),
                        );
                    }
                }
                HostAnswer::Addresses(ips)
            }
        }
    }
}
