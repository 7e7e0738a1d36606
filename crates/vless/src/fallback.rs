//! Sans-IO part of VLESS `fallbacks` as 4.34 serves them: which fallback
//! a connection that is not VLESS goes to (by the HTTP request path in its
//! first bytes), and the PROXY protocol header written in front of it. The
//! inbound ([`crate::inbound`]) does the dialling and relaying.
//!
//! Choice, as 4.34's `proxy/vless/inbound` makes it (ALPN aside: Rayback
//! refuses fallbacks keyed by `alpn` in the config):
//!
//! 1. With only a default fallback (`path` empty), that one.
//! 2. Otherwise the path is read from the first bytes read: when at least
//!    18 bytes came and byte 4 is not `*` (HTTP/2's preface), a `/` at
//!    index 4..=8 preceded by a space starts it, and it ends at the next
//!    space within the first 64 bytes (a CR or LF first means no path).
//!    A fallback with that exact path wins; else the default; else none.
//!
//! PROXY header (`xver`): 1 is the text form `PROXY TCP4|TCP6 <src> <dst>
//! <sport> <dport>\r\n`, 2 the binary form (PROXY command, TCP over IPv4
//! or IPv6). Source is the client, destination the inbound's own address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Where a fallback sends the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FallbackDest {
    /// `host:port` over TCP.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// One `fallbacks` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Empty, or the exact HTTP path (starting with `/`) it serves.
    pub path: String,
    pub dest: FallbackDest,
    /// PROXY protocol version to send first: 0 (none), 1 or 2.
    pub xver: u8,
}

/// The fallbacks of one inbound, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fallbacks {
    by_path: HashMap<String, Fallback>,
}

impl Fallbacks {
    /// A later entry with the same path replaces an earlier one (as 4.34).
    pub fn new(list: Vec<Fallback>) -> Fallbacks {
        let mut by_path = HashMap::new();
        for fallback in list {
            by_path.insert(fallback.path.clone(), fallback);
        }
        Fallbacks { by_path }
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The fallback for a connection whose first read was `first`.
    pub fn choose(&self, first: &[u8]) -> Option<&Fallback> {
        let default = self.by_path.get("");
        if self.by_path.len() == 1 && default.is_some() {
            return default;
        }
        request_path(first)
            .and_then(|path| self.by_path.get(path))
            .or(default)
    }
}

/// The HTTP request path in `first`, found the way 4.34 finds it.
pub fn request_path(first: &[u8]) -> Option<&str> {
    if first.len() < 18 || first[4] == b'*' {
        return None;
    }
    let start = (4..=8).find(|&i| first[i] == b'/')?;
    if first[start - 1] != b' ' {
        return None;
    }
    let search = first.len().min(64);
    for end in start + 1..search {
        match first[end] {
            b'\r' | b'\n' => return None,
            b' ' => return std::str::from_utf8(&first[start..end]).ok(),
            _ => {}
        }
    }
    None
}

/// Appends the PROXY protocol header of version `xver` (1 or 2; nothing
/// for others) for a connection from `source` to `local`.
pub fn proxy_header(xver: u8, source: SocketAddr, local: SocketAddr, out: &mut Vec<u8>) {
    // IPv4 only when both ends are: a mixed pair goes as IPv6, with the
    // IPv4 side mapped.
    let both_v4 = match (source.ip(), local.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => Some((from, to)),
        _ => None,
    };
    match xver {
        1 => {
            let family = if both_v4.is_some() { "TCP4" } else { "TCP6" };
            let (from, to) = match both_v4 {
                Some((from, to)) => (from.to_string(), to.to_string()),
                None => (v6(source.ip()).to_string(), v6(local.ip()).to_string()),
            };
            out.extend_from_slice(
                format!(
                    "PROXY {family} {from} {to} {} {}\r\n",
                    source.port(),
                    local.port()
                )
                .as_bytes(),
            );
        }
        2 => {
            out.extend_from_slice(b"\r\n\r\n\x00\r\nQUIT\n\x21");
            match both_v4 {
                Some((from, to)) => {
                    out.extend_from_slice(&[0x11, 0x00, 0x0c]);
                    out.extend_from_slice(&from.octets());
                    out.extend_from_slice(&to.octets());
                }
                None => {
                    out.extend_from_slice(&[0x21, 0x00, 0x24]);
                    out.extend_from_slice(&v6(source.ip()).octets());
                    out.extend_from_slice(&v6(local.ip()).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
        }
        _ => {}
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback(path: &str, port: u16) -> Fallback {
        Fallback {
            path: path.into(),
            dest: FallbackDest::Tcp(format!("127.0.0.1:{port}")),
            xver: 0,
        }
    }

    #[test]
    fn paths_are_found_as_434_finds_them() {
        assert_eq!(
            request_path(b"GET /ws HTTP/1.1\r\nHost: a\r\n"),
            Some("/ws")
        );
        assert_eq!(
            request_path(b"OPTIONS /a/b?c HTTP/1.1\r\n\r\n"),
            Some("/a/b?c")
        );
        assert_eq!(request_path(b"GET / HTTP/1.1\r\n\r\n"), Some("/"));
        // Too short, HTTP/2's preface, no space before, a line end first.
        assert_eq!(request_path(b"GET /ws HTTP/1.1"), None);
        assert_eq!(request_path(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        assert_eq!(request_path(b"GETT/ws HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_path(b"GET /ws\r\nHTTP/1.1 xxxxxxxx"), None);
        // The method may be at most 7 letters (the slash at index ≤ 8).
        assert_eq!(request_path(b"PROPFIND /x HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            request_path(&[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn a_lone_default_takes_everything() {
        let fallbacks = Fallbacks::new(vec![fallback("", 80)]);
        assert_eq!(fallbacks.choose(b"x").unwrap().dest, fallback("", 80).dest);
        assert_eq!(
            fallbacks.choose(b"GET /ws HTTP/1.1\r\n\r\n").unwrap().dest,
            fallback("", 80).dest
        );
    }

    #[test]
    fn paths_pick_and_the_default_catches_the_rest() {
        let fallbacks = Fallbacks::new(vec![
            fallback("", 80),
            fallback("/ws", 81),
            fallback("/ws", 82),
        ]);
        assert_eq!(
            fallbacks.choose(b"GET /ws HTTP/1.1\r\n\r\n").unwrap().dest,
            fallback("", 82).dest
        );
        assert_eq!(
            fallbacks
                .choose(b"GET /other HTTP/1.1\r\n\r\n")
                .unwrap()
                .dest,
            fallback("", 80).dest
        );
        assert_eq!(
            fallbacks.choose(b"short").unwrap().dest,
            fallback("", 80).dest
        );
        let only_paths = Fallbacks::new(vec![fallback("/ws", 81)]);
        assert!(only_paths.choose(b"GET /other HTTP/1.1\r\n\r\n").is_none());
        assert!(only_paths.choose(b"GET /ws HTTP/1.1\r\n\r\n").is_some());
    }

    #[test]
    fn proxy_headers_v1_and_v2() {
        let source: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let mut out = Vec::new();
        proxy_header(1, source, local, &mut out);
        assert_eq!(out, b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 443\r\n");
        out.clear();
        proxy_header(2, source, local, &mut out);
        let mut expected = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        expected.extend_from_slice(&[192, 0, 2, 1, 127, 0, 0, 1, 0x13, 0x88, 0x01, 0xbb]);
        assert_eq!(out, expected);
        out.clear();
        let source6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        proxy_header(1, source6, local, &mut out);
        assert_eq!(out, b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 5000 443\r\n");
        out.clear();
        proxy_header(2, source6, local, &mut out);
        assert_eq!(out.len(), 16 + 36);
        assert_eq!(&out[12..16], &[0x21, 0x21, 0x00, 0x24]);
        out.clear();
        proxy_header(0, source, local, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn proxy_headers_parse_with_ppp() {
        use ppp::{v1, v2, HeaderResult};
        let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
        for source in ["192.0.2.1:5000", "[2001:db8::1]:5000"] {
            let source: SocketAddr = source.parse().unwrap();
            for xver in [1u8, 2] {
                let mut out = Vec::new();
                proxy_header(xver, source, local, &mut out);
                let named = match HeaderResult::parse(&out) {
                    HeaderResult::V1(Ok(header)) => match header.addresses {
                        v1::Addresses::Tcp4(a) => {
                            SocketAddr::from((a.source_address, a.source_port))
                        }
                        v1::Addresses::Tcp6(a) => {
                            SocketAddr::from((a.source_address, a.source_port))
                        }
                        v1::Addresses::Unknown => panic!("unknown"),
                    },
                    HeaderResult::V2(Ok(header)) => match header.addresses {
                        v2::Addresses::IPv4(a) => {
                            SocketAddr::from((a.source_address, a.source_port))
                        }
                        v2::Addresses::IPv6(a) => {
                            SocketAddr::from((a.source_address, a.source_port))
                        }
                        _ => panic!("no address"),
                    },
                    other => panic!("xver {xver}: {other:?}"),
                };
                assert_eq!(named, source, "xver {xver}");
            }
        }
    }
}
