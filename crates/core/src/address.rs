//! Network addresses as V2Ray sees them: an IP or a domain, a port, and
//! whether the session is TCP or UDP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The transport of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    Tcp,
    Udp,
}

impl Network {
    /// The lower-case name V2Ray prints and accepts (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Tcp => "tcp",
            Network::Udp => "udp",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host: an IPv4 or IPv6 address, or a domain name kept as written
/// (V2Ray compares domains case-sensitively, so no lowercasing here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Domain(String),
}

/// Why a string is not an [`Address`] or [`Destination`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("domain longer than 255 bytes: {0:?}")]
    DomainTooLong(String),
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    #[error("{0:?} is not a port number (0-65535)")]
    BadPort(String),
}

impl Address {
    /// Parses an IP literal (IPv6 with or without brackets) or else takes
    /// the text as a domain.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = IpAddr::from_str(unbracketed) {
            return Ok(Address::from(ip));
        }
        if text.len() > 255 {
            return Err(AddressError::DomainTooLong(text.to_owned()));
        }
        Ok(Address::Domain(text.to_owned()))
    }

    /// The domain field of V2Ray's wire formats (VMess, VLESS, Mux.Cool,
    /// SOCKS) as 4.34 reads it (`common/protocol/address.go`): a name
    /// starting with a digit or `[` that spells an IP is that IP; any other
    /// name may hold only `A-Z a-z 0-9 - . _`. `None` for an empty or
    /// invalid name (4.34 crashes on an empty one).
    pub fn from_wire_domain(name: &[u8]) -> Option<Address> {
        let &first = name.first()?;
        if first == b'[' || first.is_ascii_digit() {
            if let Ok(text) = std::str::from_utf8(name) {
                if let Ok(address @ (Address::Ipv4(_) | Address::Ipv6(_))) = Address::parse(text) {
                    return Some(address);
                }
            }
        }
        let valid = name
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'));
        // Only ASCII passed, so this is valid UTF-8.
        valid.then(|| Address::Domain(String::from_utf8_lossy(name).into_owned()))
    }

    /// The IP, when this address is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ipv4(ip) => Some(IpAddr::V4(*ip)),
            Address::Ipv6(ip) => Some(IpAddr::V6(*ip)),
            Address::Domain(_) => None,
        }
    }

    /// The domain, when this address is one.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Address::Domain(domain) => Some(domain),
            _ => None,
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Address {
        match ip {
            IpAddr::V4(v4) => Address::Ipv4(v4),
            // An IPv4-mapped IPv6 address is the IPv4 host, as V2Ray treats it.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Address::Ipv4(v4),
                None => Address::Ipv6(v6),
            },
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ipv4(ip) => write!(f, "{ip}"),
            Address::Ipv6(ip) => write!(f, "[{ip}]"),
            Address::Domain(domain) => f.write_str(domain),
        }
    }
}

/// An IPv4-mapped IPv6 peer (a dual-stack listener's IPv4 client) as the
/// IPv4 address it is; any other address unchanged. Inbounds record their
/// peers this way, so `source` rules and PROXY headers see plain IPv4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Where a session goes: network, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub network: Network,
    pub address: Address,
    pub port: u16,
}

impl Destination {
    pub fn new(network: Network, address: Address, port: u16) -> Destination {
        Destination {
            network,
            address,
            port,
        }
    }

    pub fn tcp(address: Address, port: u16) -> Destination {
        Destination::new(Network::Tcp, address, port)
    }

    pub fn udp(address: Address, port: u16) -> Destination {
        Destination::new(Network::Udp, address, port)
    }

    /// The socket address, when the host is an IP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.address.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Parses `host:port` (IPv6 as `[::1]:80`), the form of freedom's
    /// `redirect` and of a VMess `vnext` entry.
    pub fn parse_host_port(network: Network, text: &str) -> Result<Destination, AddressError> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NotHostPort(text.to_owned()))?;
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(AddressError::NotHostPort(text.to_owned()));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| AddressError::BadPort(port.to_owned()))?;
        Ok(Destination::new(network, Address::parse(host)?, port))
    }
}

impl From<SocketAddr> for Destination {
    fn from(addr: SocketAddr) -> Destination {
        Destination::tcp(Address::from(addr.ip()), addr.port())
    }
}

impl fmt::Display for Destination {
    /// V2Ray's shape: `tcp:127.0.0.1:80`, `udp:[::1]:53`, `tcp:example.com:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.network, self.address, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ips_and_domains() {
        assert_eq!(
            Address::parse("127.0.0.1").unwrap(),
            Address::Ipv4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            Address::parse("[::1]").unwrap(),
            Address::Ipv6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            Address::parse("::ffff:10.0.0.1").unwrap(),
            Address::Ipv4(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            Address::parse("Test.V2Ray.com").unwrap(),
            Address::Domain("Test.V2Ray.com".into())
        );
        assert_eq!(Address::parse(""), Err(AddressError::Empty));
        assert!(Address::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn parses_host_port() {
        let dest = Destination::parse_host_port(Network::Tcp, "[::1]:80").unwrap();
        assert_eq!(dest.to_string(), "tcp:[::1]:80");
        let dest = Destination::parse_host_port(Network::Tcp, "127.0.0.1:80").unwrap();
        assert_eq!(dest.socket_addr().unwrap().to_string(), "127.0.0.1:80");
        assert!(Destination::parse_host_port(Network::Tcp, "127.0.0.1").is_err());
        assert!(Destination::parse_host_port(Network::Tcp, "h:70000").is_err());
        assert!(Destination::parse_host_port(Network::Tcp, "::1:80").is_err());
    }
}
