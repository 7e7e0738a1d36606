//! IP sets of the `ip` and `source` conditions: CIDRs from the config and
//! from geoip files, compiled into sorted, merged ranges searched in
//! O(log n).
//!
//! IPv4 and IPv6 are kept apart as in V2Ray: an IPv4 address never matches
//! an IPv6 CIDR (not even `::ffff:0:0/96`), and an IPv4-mapped IPv6
//! address is treated as the IPv4 host before matching. Not here: where
//! the CIDRs come from (config text or `.dat` files) beyond parsing one
//! config entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One CIDR: an address and a prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cidr {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Cidr {
    /// Parses a config entry the way V2Ray's `ParseIP` does: `addr[/bits]`
    /// where a missing or empty mask means a host route, IPv6 may be in
    /// brackets, an IPv4-mapped IPv6 address is IPv4 (so its mask must be
    /// ≤ 32), and surrounding spaces are ignored. `None` when invalid.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, mask) = match text.split_once('/') {
            Some((addr, mask)) => (addr, mask),
            None => (text, ""),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr)
            .trim();
        let ip: IpAddr = addr.parse().ok()?;
        let bits = if mask.is_empty() {
            None
        } else {
            if !mask.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(mask.parse::<u32>().ok()?)
        };
        match normalize(ip) {
            IpAddr::V4(v4) => {
                let bits = bits.unwrap_or(32);
                (bits <= 32).then_some(Cidr::V4(v4, bits as u8))
            }
            IpAddr::V6(v6) => {
                let bits = bits.unwrap_or(128);
                (bits <= 128).then_some(Cidr::V6(v6, bits as u8))
            }
        }
    }

    /// From a geoip file's raw bytes (4 or 16) and prefix.
    pub fn from_bytes(ip: &[u8], prefix: u32) -> Option<Cidr> {
        match ip.len() {
            4 if prefix <= 32 => {
                let octets: [u8; 4] = ip.try_into().ok()?;
                Some(Cidr::V4(Ipv4Addr::from(octets), prefix as u8))
            }
            16 if prefix <= 128 => {
                let octets: [u8; 16] = ip.try_into().ok()?;
                Some(Cidr::V6(Ipv6Addr::from(octets), prefix as u8))
            }
            _ => None,
        }
    }
}

/// An IPv4-mapped IPv6 address becomes the IPv4 address, as V2Ray's
/// `net.IPAddress` does.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A set of CIDRs as disjoint, sorted, inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new(cidrs: &[Cidr]) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            match *cidr {
                Cidr::V4(ip, bits) => {
                    let host_bits = 32 - u32::from(bits);
                    let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                    let start = u32::from(ip) & mask;
                    v4.push((start, start | !mask));
                }
                Cidr::V6(ip, bits) => {
                    let host_bits = 128 - u32::from(bits);
                    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                    let start = u128::from(ip) & mask;
                    v6.push((start, start | !mask));
                }
            }
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalize(ip) {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }
    }
}

/// Sorts ranges and merges the overlapping or adjacent ones.
fn merge<T>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)>
where
    T: Ord + Copy + bound::Bound,
{
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = merged.last_mut() {
            if last.1 == T::MAX || start <= last.1.plus_one() {
                if end > last.1 {
                    last.1 = end;
                }
                continue;
            }
        }
        merged.push((start, end));
    }
    merged.shrink_to_fit();
    merged
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], ip: T) -> bool {
    // The last range starting at or before `ip` is the only candidate.
    let after = ranges.partition_point(|&(start, _)| start <= ip);
    after > 0 && ranges[after - 1].1 >= ip
}

/// The two integer widths the ranges use.
mod bound {
    pub trait Bound {
        const MAX: Self;
        fn plus_one(self) -> Self;
    }

    impl Bound for u32 {
        const MAX: u32 = u32::MAX;
        fn plus_one(self) -> u32 {
            self.saturating_add(1)
        }
    }

    impl Bound for u128 {
        const MAX: u128 = u128::MAX;
        fn plus_one(self) -> u128 {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_config_entries() {
        let cases = [
            ("10.0.0.0/8", Some(Cidr::V4(Ipv4Addr::new(10, 0, 0, 0), 8))),
            ("10.0.0.1", Some(Cidr::V4(Ipv4Addr::new(10, 0, 0, 1), 32))),
            ("10.0.0.1/", Some(Cidr::V4(Ipv4Addr::new(10, 0, 0, 1), 32))),
            ("0.0.0.0/0", Some(Cidr::V4(Ipv4Addr::UNSPECIFIED, 0))),
            ("::1", Some(Cidr::V6(Ipv6Addr::LOCALHOST, 128))),
            ("[::1]/64", Some(Cidr::V6(Ipv6Addr::LOCALHOST, 64))),
            ("2001:db8::/32", Some(Cidr::V6(ip6("2001:db8::"), 32))),
            (
                "::ffff:10.1.2.3/24",
                Some(Cidr::V4(Ipv4Addr::new(10, 1, 2, 3), 24)),
            ),
            ("::ffff:10.1.2.3/120", None),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/x", None),
            ("example.com", None),
            ("", None),
            ("10.0.0", None),
        ];
        for (text, want) in cases {
            assert_eq!(Cidr::parse(text), want, "{text}");
        }
    }

    fn ip6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn matches_v4_and_v6_apart() {
        let cidrs: Vec<Cidr> = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"]
            .iter()
            .map(|t| Cidr::parse(t).unwrap())
            .collect();
        let set = IpSet::new(&cidrs);
        for (addr, want) in [
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("9.255.255.255", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("2001:db8::1", true),
            ("2001:db9::", false),
            ("::1", true),
            ("::2", false),
            ("::ffff:10.1.1.1", true),
            ("::a01:101", false),
        ] {
            assert_eq!(set.contains(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn nested_and_adjacent_cidrs_merge() {
        let cidrs: Vec<Cidr> = [
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.2.3.0/24",
            "11.0.0.0/8",
            "0.0.0.0/1",
        ]
        .iter()
        .map(|t| Cidr::parse(t).unwrap())
        .collect();
        let set = IpSet::new(&cidrs);
        assert_eq!(set.v4, vec![(0, 0x7fff_ffff)]);
        assert!(set.contains(ip("10.2.0.0")));
        assert!(!set.contains(ip("128.0.0.0")));
        let all = IpSet::new(&[
            Cidr::parse("0.0.0.0/0").unwrap(),
            Cidr::parse("::/0").unwrap(),
        ]);
        assert!(all.contains(ip("255.255.255.255")));
        assert!(all.contains(ip("ffff::1")));
    }
}
