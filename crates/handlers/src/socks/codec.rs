//! Sans-IO SOCKS 4, 4a and 5 server codec, as V2Ray 4.34's
//! `proxy/socks/protocol.go` reads and answers them: decoders take the
//! bytes received so far and return `Ok(None)` until a message is whole;
//! encoders return the bytes to send. No sockets, no tasks, no time.
//!
//! The first two bytes pick the version:
//!
//! | version | bytes after the version |
//! |---|---|
//! | 4 | CMD(1) PORT(2) IPv4(4) USERID NUL [DOMAIN NUL when IPv4 is 0.x.x.x: 4a] |
//! | 5 | NMETHODS(1) METHODS(NMETHODS) |
//!
//! SOCKS 5 then goes on (RFC 1928, RFC 1929):
//!
//! | message | bytes |
//! |---|---|
//! | method choice (sent) | VER=5 METHOD (0 none, 2 password, 0xFF none acceptable) |
//! | password (read) | VER ULEN UNAME PLEN PASSWD (VER not checked, as 4.34) |
//! | password reply (sent) | 1 STATUS (0 ok, 0xFF refused) |
//! | request (read) | VER CMD RSV ATYP ADDR PORT (VER, RSV not checked) |
//! | reply (sent) | 5 REP 0 ATYP ADDR PORT |
//! | UDP datagram | RSV(2) FRAG(1)=0 ATYP ADDR PORT DATA |
//!
//! ATYP is 1 (IPv4), 3 (domain: length byte then name) or 4 (IPv6). A
//! domain that reads as an IP is that IP; any other domain must be
//! letters, digits, `-`, `.` or `_`, as 4.34 checks. SOCKS 4 is refused
//! when the inbound requires a password (4.34 does); SOCKS 4 knows only
//! CONNECT. SOCKS 5 CONNECT, Tor's RESOLVE and RESOLVE_PTR (treated as
//! CONNECT, as 4.34 does) and UDP ASSOCIATE (when enabled) are accepted;
//! BIND and the rest are answered "command not supported".
//!
//! Each refusal is a [`SocksError`] whose [`SocksError::reply`] gives the
//! bytes 4.34 sends before closing, if any.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use rayback_core::options::SocksAuth;
use rayback_core::Address;

pub const SOCKS4: u8 = 4;
pub const SOCKS5: u8 = 5;
pub const METHOD_NONE: u8 = 0x00;
pub const METHOD_PASSWORD: u8 = 0x02;
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
pub const REPLY_SUCCEEDED: u8 = 0x00;
pub const REPLY_COMMAND_NOT_SUPPORTED: u8 = 0x07;
pub const SOCKS4_GRANTED: u8 = 90;
pub const SOCKS4_REJECTED: u8 = 91;

const CMD_CONNECT: u8 = 0x01;
const CMD_BIND: u8 = 0x02;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const CMD_TOR_RESOLVE: u8 = 0xF0;
const CMD_TOR_RESOLVE_PTR: u8 = 0xF1;

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The longest SOCKS 4 user ID or 4a domain (NUL excluded): 4.34 reads
/// them into one 2048-byte buffer and refuses a full one.
pub const MAX_NUL_TERMINATED: usize = 2047;

/// What a SOCKS 5 client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// CONNECT (and Tor's RESOLVE / RESOLVE_PTR, as 4.34 treats them).
    Connect,
    UdpAssociate,
}

/// The first message of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// A whole SOCKS 4 or 4a CONNECT request; it is granted at once.
    Socks4 {
        address: Address,
        port: u16,
        /// The user ID field (4.34 reads and ignores it).
        user_id: Vec<u8>,
    },
    /// A SOCKS 5 greeting; the reply is [`choose_method`]'s.
    Socks5 { methods: Vec<u8> },
}

/// A SOCKS 5 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub address: Address,
    pub port: u16,
}

/// RFC 1929 credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Why a SOCKS handshake or datagram was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocksError {
    #[error("unknown socks version {0}")]
    UnknownVersion(u8),
    #[error("socks 4 is not allowed when auth is required")]
    Socks4NeedsNoAuth,
    #[error("socks 4 command {0} is not supported")]
    Socks4Command(u8),
    #[error("socks 4 user id or domain longer than 2047 bytes")]
    Socks4Overrun,
    #[error("no matching auth method (client offers {0:?})")]
    NoMatchingMethod(Vec<u8>),
    #[error("invalid username or password for {0:?}")]
    BadCredentials(String),
    #[error("udp is not enabled")]
    UdpDisabled,
    #[error("tcp bind is not supported")]
    Bind,
    #[error("unknown socks 5 command {0}")]
    UnknownCommand(u8),
    #[error("unknown address type {0}")]
    AddressType(u8),
    #[error("empty domain name")]
    EmptyDomain,
    #[error("invalid domain name {0:?}")]
    InvalidDomain(String),
    #[error("udp datagram shorter than its header")]
    ShortDatagram,
    #[error("fragmented udp datagram (fragment {0})")]
    Fragmented(u8),
}

impl SocksError {
    /// The bytes 4.34 writes before closing on this refusal, if any.
    pub fn reply(&self) -> Option<Vec<u8>> {
        match self {
            SocksError::Socks4NeedsNoAuth | SocksError::Socks4Command(_) => {
                Some(encode_socks4_reply(SOCKS4_REJECTED).to_vec())
            }
            SocksError::NoMatchingMethod(_) => Some(vec![SOCKS5, METHOD_NO_ACCEPTABLE]),
            SocksError::BadCredentials(_) => Some(vec![0x01, 0xFF]),
            SocksError::UdpDisabled | SocksError::Bind | SocksError::UnknownCommand(_) => {
                Some(encode_reply(
                    REPLY_COMMAND_NOT_SUPPORTED,
                    &Address::Ipv4(Ipv4Addr::UNSPECIFIED),
                    0,
                ))
            }
            _ => None,
        }
    }
}

/// A decoder's answer: the message and the bytes it took, `None` for
/// "need more bytes", or the refusal.
pub type Decoded<T> = Result<Option<(T, usize)>, SocksError>;

/// Decodes the first message: a SOCKS 4/4a request or a SOCKS 5 greeting.
pub fn decode_hello(buf: &[u8], auth: SocksAuth) -> Decoded<Hello> {
    let [version, second, ..] = *buf else {
        return Ok(None);
    };
    match version {
        SOCKS5 => {
            let count = usize::from(second);
            let Some(methods) = buf.get(2..2 + count) else {
                return Ok(None);
            };
            Ok(Some((
                Hello::Socks5 {
                    methods: methods.to_vec(),
                },
                2 + count,
            )))
        }
        SOCKS4 => {
            if auth == SocksAuth::Password {
                return Err(SocksError::Socks4NeedsNoAuth);
            }
            decode_socks4(buf, second)
        }
        other => Err(SocksError::UnknownVersion(other)),
    }
}

fn decode_socks4(buf: &[u8], command: u8) -> Decoded<Hello> {
    let Some(fixed) = buf.get(2..8) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ip = Ipv4Addr::new(fixed[2], fixed[3], fixed[4], fixed[5]);
    let Some((user_id, used)) = until_nul(&buf[8..])? else {
        return Ok(None);
    };
    let mut end = 8 + used;
    let address = if fixed[2] == 0 {
        let Some((domain, used)) = until_nul(&buf[end..])? else {
            return Ok(None);
        };
        end += used;
        Address::Domain(String::from_utf8_lossy(domain).into_owned())
    } else {
        Address::Ipv4(ip)
    };
    if command != CMD_CONNECT {
        return Err(SocksError::Socks4Command(command));
    }
    Ok(Some((
        Hello::Socks4 {
            address,
            port,
            user_id: user_id.to_vec(),
        },
        end,
    )))
}

/// The bytes before the first NUL and how many bytes that took (NUL
/// included).
fn until_nul(buf: &[u8]) -> Result<Option<(&[u8], usize)>, SocksError> {
    match buf.iter().position(|&byte| byte == 0) {
        Some(index) if index > MAX_NUL_TERMINATED => Err(SocksError::Socks4Overrun),
        Some(index) => Ok(Some((&buf[..index], index + 1))),
        None if buf.len() > MAX_NUL_TERMINATED => Err(SocksError::Socks4Overrun),
        None => Ok(None),
    }
}

/// The method to answer a greeting with, or the refusal (whose reply is
/// `05 FF`).
pub fn choose_method(methods: &[u8], auth: SocksAuth) -> Result<u8, SocksError> {
    let wanted = match auth {
        SocksAuth::NoAuth => METHOD_NONE,
        SocksAuth::Password => METHOD_PASSWORD,
    };
    if methods.contains(&wanted) {
        Ok(wanted)
    } else {
        Err(SocksError::NoMatchingMethod(methods.to_vec()))
    }
}

/// Decodes an RFC 1929 username/password message.
pub fn decode_credentials(buf: &[u8]) -> Decoded<Credentials> {
    let Some(&user_len) = buf.get(1) else {
        return Ok(None);
    };
    let user_end = 2 + usize::from(user_len);
    let Some(&pass_len) = buf.get(user_end) else {
        return Ok(None);
    };
    let pass_end = user_end + 1 + usize::from(pass_len);
    if buf.len() < pass_end {
        return Ok(None);
    }
    let credentials = Credentials {
        username: String::from_utf8_lossy(&buf[2..user_end]).into_owned(),
        password: String::from_utf8_lossy(&buf[user_end + 1..pass_end]).into_owned(),
    };
    Ok(Some((credentials, pass_end)))
}

/// The RFC 1929 status reply.
pub fn encode_credentials_reply(accepted: bool) -> [u8; 2] {
    [0x01, if accepted { 0x00 } else { 0xFF }]
}

/// Decodes a SOCKS 5 request. The command is judged as soon as it is
/// there, before the address, as 4.34 does.
pub fn decode_request(buf: &[u8], udp_enabled: bool) -> Decoded<Request> {
    let Some(&command) = buf.get(1) else {
        return Ok(None);
    };
    let command = match command {
        CMD_CONNECT | CMD_TOR_RESOLVE | CMD_TOR_RESOLVE_PTR => Command::Connect,
        CMD_UDP_ASSOCIATE if udp_enabled => Command::UdpAssociate,
        CMD_UDP_ASSOCIATE => return Err(SocksError::UdpDisabled),
        CMD_BIND => return Err(SocksError::Bind),
        other => return Err(SocksError::UnknownCommand(other)),
    };
    if buf.len() < 3 {
        return Ok(None);
    }
    let Some(((address, port), used)) = decode_address_port(&buf[3..])? else {
        return Ok(None);
    };
    Ok(Some((
        Request {
            command,
            address,
            port,
        },
        3 + used,
    )))
}

/// Decodes ATYP ADDR PORT.
pub fn decode_address_port(buf: &[u8]) -> Decoded<(Address, u16)> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let (address, end) = match kind {
        ATYP_IPV4 => {
            let Some(octets) = buf.get(1..5) else {
                return Ok(None);
            };
            let octets: [u8; 4] = octets.try_into().unwrap_or_default();
            (Address::Ipv4(Ipv4Addr::from(octets)), 5)
        }
        ATYP_IPV6 => {
            let Some(octets) = buf.get(1..17) else {
                return Ok(None);
            };
            let octets: [u8; 16] = octets.try_into().unwrap_or_default();
            (Address::from(IpAddr::V6(Ipv6Addr::from(octets))), 17)
        }
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(1) else {
                return Ok(None);
            };
            let end = 2 + usize::from(len);
            let Some(name) = buf.get(2..end) else {
                return Ok(None);
            };
            (domain_address(name)?, end)
        }
        other => return Err(SocksError::AddressType(other)),
    };
    let Some(port) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    Ok(Some((
        (address, u16::from_be_bytes([port[0], port[1]])),
        end + 2,
    )))
}

/// A domain field as 4.34 reads it ([`Address::from_wire_domain`]).
fn domain_address(name: &[u8]) -> Result<Address, SocksError> {
    if name.is_empty() {
        return Err(SocksError::EmptyDomain);
    }
    Address::from_wire_domain(name)
        .ok_or_else(|| SocksError::InvalidDomain(String::from_utf8_lossy(name).into_owned()))
}

/// Appends ATYP ADDR PORT. A domain longer than 255 bytes is cut (core
/// addresses never are that long).
pub fn encode_address_port(address: &Address, port: u16, out: &mut Vec<u8>) {
    match address {
        Address::Ipv4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Address::Ipv6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Address::Domain(domain) => {
            let bytes = &domain.as_bytes()[..domain.len().min(255)];
            out.push(ATYP_DOMAIN);
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
}

/// A SOCKS 5 reply: `05 REP 00 ATYP ADDR PORT`.
pub fn encode_reply(status: u8, address: &Address, port: u16) -> Vec<u8> {
    let mut out = vec![SOCKS5, status, 0];
    encode_address_port(address, port, &mut out);
    out
}

/// A SOCKS 4 reply as 4.34 sends it: status, port 0, address 0.0.0.0.
pub fn encode_socks4_reply(status: u8) -> [u8; 8] {
    [0, status, 0, 0, 0, 0, 0, 0]
}

/// Decodes a UDP ASSOCIATE datagram's header: the destination and where
/// the payload starts.
pub fn decode_datagram(datagram: &[u8]) -> Result<(Address, u16, usize), SocksError> {
    if datagram.len() < 5 {
        return Err(SocksError::ShortDatagram);
    }
    if datagram[2] != 0 {
        return Err(SocksError::Fragmented(datagram[2]));
    }
    match decode_address_port(&datagram[3..])? {
        Some(((address, port), used)) => Ok((address, port, 3 + used)),
        None => Err(SocksError::ShortDatagram),
    }
}

/// Appends a UDP datagram's header (`00 00 00 ATYP ADDR PORT`).
pub fn encode_datagram_header(address: &Address, port: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    encode_address_port(address, port, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> Address {
        Address::Domain(name.to_owned())
    }

    /// Every proper prefix of a whole message needs more bytes.
    fn assert_prefixes_need_more<T: std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) {
        for end in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..end]), Ok(None)),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn socks5_greeting() {
        let bytes = [5, 2, 0, 2, 0xAA];
        let (hello, used) = decode_hello(&bytes, SocksAuth::NoAuth).unwrap().unwrap();
        assert_eq!(
            hello,
            Hello::Socks5 {
                methods: vec![0, 2]
            }
        );
        assert_eq!(used, 4);
        assert_prefixes_need_more(&bytes[..4], |b| decode_hello(b, SocksAuth::NoAuth));
        assert_eq!(choose_method(&[0, 2], SocksAuth::NoAuth), Ok(0));
        assert_eq!(choose_method(&[0, 2], SocksAuth::Password), Ok(2));
    }

    #[test]
    fn a_greeting_without_the_wanted_method_is_refused_with_ff() {
        let error = choose_method(&[0], SocksAuth::Password).unwrap_err();
        assert_eq!(error.reply(), Some(vec![5, 0xFF]));
        let error = choose_method(&[], SocksAuth::NoAuth).unwrap_err();
        assert_eq!(error, SocksError::NoMatchingMethod(vec![]));
    }

    #[test]
    fn unknown_versions_are_refused_without_reply() {
        let error = decode_hello(b"GET / HTTP/1.1", SocksAuth::NoAuth).unwrap_err();
        assert_eq!(error, SocksError::UnknownVersion(b'G'));
        assert_eq!(error.reply(), None);
    }

    #[test]
    fn socks4_connect() {
        let bytes = [4, 1, 0, 80, 127, 0, 0, 1, b'b', b'o', b'b', 0, 9];
        let (hello, used) = decode_hello(&bytes, SocksAuth::NoAuth).unwrap().unwrap();
        assert_eq!(
            hello,
            Hello::Socks4 {
                address: Address::Ipv4(Ipv4Addr::LOCALHOST),
                port: 80,
                user_id: b"bob".to_vec()
            }
        );
        assert_eq!(used, 12);
        assert_prefixes_need_more(&bytes[..12], |b| decode_hello(b, SocksAuth::NoAuth));
        assert_eq!(
            encode_socks4_reply(SOCKS4_GRANTED),
            [0, 90, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn socks4a_connect_keeps_the_domain() {
        let mut bytes = vec![4, 1, 1, 187, 0, 0, 0, 7, 0];
        bytes.extend_from_slice(b"example.com\0");
        let (hello, used) = decode_hello(&bytes, SocksAuth::NoAuth).unwrap().unwrap();
        assert_eq!(
            hello,
            Hello::Socks4 {
                address: domain("example.com"),
                port: 443,
                user_id: vec![]
            }
        );
        assert_eq!(used, bytes.len());
        assert_prefixes_need_more(&bytes, |b| decode_hello(b, SocksAuth::NoAuth));
    }

    #[test]
    fn socks4_refusals_answer_91() {
        let error = decode_hello(&[4, 1], SocksAuth::Password).unwrap_err();
        assert_eq!(error, SocksError::Socks4NeedsNoAuth);
        assert_eq!(error.reply(), Some(vec![0, 91, 0, 0, 0, 0, 0, 0]));
        let bind = [4, 2, 0, 80, 127, 0, 0, 1, 0];
        let error = decode_hello(&bind, SocksAuth::NoAuth).unwrap_err();
        assert_eq!(error, SocksError::Socks4Command(2));
        assert_eq!(error.reply(), Some(vec![0, 91, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn socks4_user_id_overrun_is_refused() {
        let mut bytes = vec![4, 1, 0, 80, 127, 0, 0, 1];
        bytes.extend(std::iter::repeat_n(b'a', MAX_NUL_TERMINATED));
        assert_eq!(decode_hello(&bytes, SocksAuth::NoAuth), Ok(None));
        bytes.push(b'a');
        assert_eq!(
            decode_hello(&bytes, SocksAuth::NoAuth),
            Err(SocksError::Socks4Overrun)
        );
    }

    #[test]
    fn credentials() {
        let bytes = [1, 3, b'b', b'o', b'b', 2, b'p', b'w', 7];
        let (credentials, used) = decode_credentials(&bytes).unwrap().unwrap();
        assert_eq!(credentials.username, "bob");
        assert_eq!(credentials.password, "pw");
        assert_eq!(used, 8);
        assert!(!format!("{credentials:?}").contains("pw\""));
        assert_prefixes_need_more(&bytes[..8], decode_credentials);
        assert_eq!(encode_credentials_reply(true), [1, 0]);
        assert_eq!(encode_credentials_reply(false), [1, 0xFF]);
        assert_eq!(
            SocksError::BadCredentials("bob".into()).reply(),
            Some(vec![1, 0xFF])
        );
    }

    #[test]
    fn connect_requests_of_each_address_type() {
        let ipv4 = [5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
        let (request, used) = decode_request(&ipv4, false).unwrap().unwrap();
        assert_eq!(request.address, Address::Ipv4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            (request.command, request.port, used),
            (Command::Connect, 80, 10)
        );
        assert_prefixes_need_more(&ipv4, |b| decode_request(b, false));

        let mut ipv6 = vec![5, 1, 0, 4];
        ipv6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ipv6.extend_from_slice(&[1, 0]);
        let (request, _) = decode_request(&ipv6, false).unwrap().unwrap();
        assert_eq!(request.address, Address::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(request.port, 256);

        let mut named = vec![5, 0xF0, 0, 3, 11];
        named.extend_from_slice(b"example.com");
        named.extend_from_slice(&[0, 80]);
        let (request, used) = decode_request(&named, false).unwrap().unwrap();
        assert_eq!(request.address, domain("example.com"));
        assert_eq!(used, named.len());
        assert_prefixes_need_more(&named, |b| decode_request(b, false));
    }

    #[test]
    fn a_domain_spelling_an_ip_is_the_ip() {
        let mut bytes = vec![5, 1, 0, 3, 9];
        bytes.extend_from_slice(b"127.0.0.1");
        bytes.extend_from_slice(&[0, 80]);
        let (request, _) = decode_request(&bytes, false).unwrap().unwrap();
        assert_eq!(request.address, Address::Ipv4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn bad_domains_and_address_types_are_refused() {
        let bytes = [5, 1, 0, 3, 0, 0, 80];
        assert_eq!(decode_request(&bytes, false), Err(SocksError::EmptyDomain));
        let mut bytes = vec![5, 1, 0, 3, 5];
        bytes.extend_from_slice(b"a b/c");
        bytes.extend_from_slice(&[0, 80]);
        assert!(matches!(
            decode_request(&bytes, false),
            Err(SocksError::InvalidDomain(_))
        ));
        assert_eq!(
            decode_request(&[5, 1, 0, 9], false),
            Err(SocksError::AddressType(9))
        );
    }

    #[test]
    fn udp_associate_only_when_enabled() {
        let bytes = [5, 3, 0, 1, 0, 0, 0, 0, 0, 0];
        let (request, _) = decode_request(&bytes, true).unwrap().unwrap();
        assert_eq!(request.command, Command::UdpAssociate);
        let error = decode_request(&bytes[..2], false).unwrap_err();
        assert_eq!(error, SocksError::UdpDisabled);
        assert_eq!(error.reply(), Some(vec![5, 7, 0, 1, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn bind_and_unknown_commands_answer_7_before_the_address() {
        assert_eq!(decode_request(&[5, 2], true), Err(SocksError::Bind));
        let error = decode_request(&[5, 9], true).unwrap_err();
        assert_eq!(error, SocksError::UnknownCommand(9));
        assert_eq!(error.reply(), Some(vec![5, 7, 0, 1, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(0, &Address::Ipv4(Ipv4Addr::LOCALHOST), 1080),
            vec![5, 0, 0, 1, 127, 0, 0, 1, 4, 56]
        );
        let reply = encode_reply(0, &domain("ab"), 1);
        assert_eq!(reply, vec![5, 0, 0, 3, 2, b'a', b'b', 0, 1]);
    }

    #[test]
    fn datagram_round_trip() {
        let mut datagram = Vec::new();
        encode_datagram_header(&domain("echo.test"), 53, &mut datagram);
        datagram.extend_from_slice(b"payload");
        let (address, port, start) = decode_datagram(&datagram).unwrap();
        assert_eq!((address, port), (domain("echo.test"), 53));
        assert_eq!(&datagram[start..], b"payload");
    }

    #[test]
    fn bad_datagrams_are_refused() {
        assert_eq!(
            decode_datagram(&[0, 0, 0, 1]),
            Err(SocksError::ShortDatagram)
        );
        assert_eq!(
            decode_datagram(&[0, 0, 1, 1, 0, 0, 0, 0, 0, 0]),
            Err(SocksError::Fragmented(1))
        );
        assert_eq!(
            decode_datagram(&[0, 0, 0, 1, 1, 2, 3]),
            Err(SocksError::ShortDatagram)
        );
        assert_eq!(
            decode_datagram(&[0, 0, 0, 7, 1, 2, 3]),
            Err(SocksError::AddressType(7))
        );
    }
}
