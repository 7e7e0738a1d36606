//! Sans-IO codec of VLESS's request and response headers and of its UDP
//! packet framing, as V2Ray 4.34 (`proxy/vless/encoding`) writes them. No
//! sockets, no tasks: bytes in, a decoded header or bytes out, and
//! "need more bytes" is `Ok(None)`.
//!
//! Request (client → server), sent once before the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, 0 |
//! | 16 | user ID (UUID) |
//! | 1 | addons length `n` |
//! | n | addons, protobuf `Addons { string Flow = 1; bytes Seed = 2; }` |
//! | 1 | command: 0x01 TCP, 0x02 UDP, 0x03 Mux |
//! | 2 | port, big-endian (TCP and UDP only) |
//! | 1 | address type: 0x01 IPv4, 0x02 domain, 0x03 IPv6 (TCP and UDP only) |
//! | 4 / 1 + len / 16 | address |
//!
//! Response (server → client), sent once before the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, the request's (0) |
//! | 1 | addons length `n` |
//! | n | addons (as above) |
//!
//! A 4.34 encoder always writes empty addons (length 0). The decoder reads
//! the protobuf, refuses a malformed one, and ignores `Flow` and `Seed`,
//! as 4.34 does (its VLESS has no flows). A Mux request carries no address: its destination is
//! `v1.mux.cool:0`.
//!
//! After a UDP request every packet in either direction is framed as
//! 2 bytes of big-endian length + payload ([`encode_packet`],
//! [`decode_packet`]) — the same form as Rayback's packet streams
//! ([`rayback_core::packet`]), so the handlers pass UDP bodies through
//! unchanged.

use std::net::{Ipv4Addr, Ipv6Addr};

use rayback_core::{Address, Destination, Network};

/// The only VLESS version 4.34 speaks.
pub const VERSION: u8 = 0;

/// The destination of a Mux.Cool request (V2Ray's `v1.mux.cool:0`).
pub const MUX_COOL_DOMAIN: &str = "v1.mux.cool";

/// The longest request header: 1 + 16 + 1 + 255 + 1 + 2 + 1 + 1 + 255.
pub const MAX_REQUEST_LEN: usize = 533;

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("unsupported vless version {0}")]
    Version(u8),
    #[error("no user has this id")]
    UnknownUser,
    #[error("malformed addons: {0}")]
    Addons(&'static str),
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    #[error("unknown address type {0:#04x}")]
    UnknownAddressType(u8),
    #[error("invalid domain {0:?}")]
    InvalidDomain(String),
    #[error("the response version {0} is not the request's (0)")]
    ResponseVersion(u8),
    #[error("a domain of {0} bytes does not fit the header (at most 255)")]
    DomainTooLong(usize),
    #[error("a packet of {0} bytes does not fit a 2-byte length")]
    PacketTooLong(usize),
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Tcp = 1,
    Udp = 2,
    Mux = 3,
}

impl Command {
    /// The command a 4.34 client sends for a session toward `destination`:
    /// Mux for TCP to `v1.mux.cool`, UDP for UDP sessions, TCP otherwise.
    pub fn for_destination(destination: &Destination) -> Command {
        match destination.network {
            Network::Udp => Command::Udp,
            Network::Tcp if destination.address.domain() == Some(MUX_COOL_DOMAIN) => Command::Mux,
            Network::Tcp => Command::Tcp,
        }
    }

    fn from_wire(value: u8) -> Option<Command> {
        match value {
            1 => Some(Command::Tcp),
            2 => Some(Command::Udp),
            3 => Some(Command::Mux),
            _ => None,
        }
    }
}

/// `v1.mux.cool:0` over TCP, what a Mux request stands for.
pub fn mux_cool_destination() -> Destination {
    Destination::tcp(Address::Domain(MUX_COOL_DOMAIN.to_owned()), 0)
}

/// A request header: who, what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub id: [u8; 16],
    pub command: Command,
    /// For [`Command::Mux`], [`mux_cool_destination`] (not on the wire).
    pub destination: Destination,
}

impl RequestHeader {
    /// A request for a session toward `destination` (command chosen as a
    /// 4.34 client chooses it).
    pub fn for_session(id: [u8; 16], destination: &Destination) -> RequestHeader {
        let command = Command::for_destination(destination);
        let destination = if command == Command::Mux {
            mux_cool_destination()
        } else {
            destination.clone()
        };
        RequestHeader {
            id,
            command,
            destination,
        }
    }

    /// Appends the header to `out`, with empty addons (as 4.34).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HeaderError> {
        let start = out.len();
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.push(0);
        out.push(self.command as u8);
        if self.command != Command::Mux {
            out.extend_from_slice(&self.destination.port.to_be_bytes());
            match &self.destination.address {
                Address::Ipv4(ip) => {
                    out.push(1);
                    out.extend_from_slice(&ip.octets());
                }
                Address::Domain(domain) => {
                    let Ok(len) = u8::try_from(domain.len()) else {
                        out.truncate(start);
                        return Err(HeaderError::DomainTooLong(domain.len()));
                    };
                    out.push(2);
                    out.push(len);
                    out.extend_from_slice(domain.as_bytes());
                }
                Address::Ipv6(ip) => {
                    out.push(3);
                    out.extend_from_slice(&ip.octets());
                }
            }
        }
        Ok(())
    }

    /// Decodes a request at the start of `data`. `is_known` says whether
    /// an ID belongs to a user; it is asked as soon as the ID has arrived,
    /// so a stranger is refused without waiting for the rest. Returns the
    /// header and how many bytes it took.
    pub fn decode(
        data: &[u8],
        mut is_known: impl FnMut(&[u8; 16]) -> bool,
    ) -> Result<Option<(RequestHeader, usize)>, HeaderError> {
        let Some(&version) = data.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let Some(id_bytes) = data.get(1..17) else {
            return Ok(None);
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(id_bytes);
        if !is_known(&id) {
            return Err(HeaderError::UnknownUser);
        }
        let Some(at) = decode_addons(data, 17)? else {
            return Ok(None);
        };
        let Some(&command_value) = data.get(at) else {
            return Ok(None);
        };
        let command =
            Command::from_wire(command_value).ok_or(HeaderError::UnknownCommand(command_value))?;
        let mut at = at + 1;
        let destination = if command == Command::Mux {
            mux_cool_destination()
        } else {
            let Some(fixed) = data.get(at..at + 3) else {
                return Ok(None);
            };
            let port = u16::from_be_bytes([fixed[0], fixed[1]]);
            let address_type = fixed[2];
            at += 3;
            let address = match address_type {
                1 => {
                    let Some(octets) = data.get(at..at + 4) else {
                        return Ok(None);
                    };
                    at += 4;
                    Address::Ipv4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
                }
                2 => {
                    let Some(&len) = data.get(at) else {
                        return Ok(None);
                    };
                    let Some(name) = data.get(at + 1..at + 1 + len as usize) else {
                        return Ok(None);
                    };
                    at += 1 + len as usize;
                    Address::from_wire_domain(name).ok_or_else(|| {
                        HeaderError::InvalidDomain(String::from_utf8_lossy(name).into_owned())
                    })?
                }
                3 => {
                    let Some(octets) = data.get(at..at + 16) else {
                        return Ok(None);
                    };
                    at += 16;
                    let mut ip = [0u8; 16];
                    ip.copy_from_slice(octets);
                    Address::Ipv6(Ipv6Addr::from(ip))
                }
                other => return Err(HeaderError::UnknownAddressType(other)),
            };
            match command {
                Command::Udp => Destination::udp(address, port),
                _ => Destination::tcp(address, port),
            }
        };
        Ok(Some((
            RequestHeader {
                id,
                command,
                destination,
            },
            at,
        )))
    }
}

/// Appends a response header (version 0, empty addons) to `out`.
pub fn encode_response(out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, 0]);
}

/// Decodes a response header at the start of `data`; returns how many
/// bytes it took.
pub fn decode_response(data: &[u8]) -> Result<Option<usize>, HeaderError> {
    let Some(&version) = data.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(HeaderError::ResponseVersion(version));
    }
    decode_addons(data, 1)
}

/// Appends one UDP packet (2-byte length + payload) to `out`.
pub fn encode_packet(payload: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
    let len =
        u16::try_from(payload.len()).map_err(|_| HeaderError::PacketTooLong(payload.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes one UDP packet at the start of `data`: its payload and how many
/// bytes it took.
pub fn decode_packet(data: &[u8]) -> Option<(&[u8], usize)> {
    let len = u16::from_be_bytes([*data.first()?, *data.get(1)?]) as usize;
    let payload = data.get(2..2 + len)?;
    Some((payload, 2 + len))
}

/// Reads the addons (length byte + protobuf) at `at`; returns where they
/// end.
fn decode_addons(data: &[u8], at: usize) -> Result<Option<usize>, HeaderError> {
    let Some(&len) = data.get(at) else {
        return Ok(None);
    };
    let Some(addons) = data.get(at + 1..at + 1 + len as usize) else {
        return Ok(None);
    };
    // Checked for well-formedness, then ignored, as 4.34 ignores a flow.
    read_flow(addons)?;
    Ok(Some(at + 1 + len as usize))
}

/// Walks a protobuf `Addons` message and returns its `Flow` bytes (empty
/// when absent). Unknown fields are skipped as protobuf decoders do.
fn read_flow(mut message: &[u8]) -> Result<&[u8], HeaderError> {
    let mut flow: &[u8] = &[];
    while !message.is_empty() {
        let key = read_varint(&mut message)?;
        let field = key >> 3;
        if field == 0 {
            return Err(HeaderError::Addons("field number 0"));
        }
        match key & 7 {
            0 => {
                read_varint(&mut message)?;
            }
            1 => message = skip(message, 8)?,
            2 => {
                let len = read_varint(&mut message)?;
                let len =
                    usize::try_from(len).map_err(|_| HeaderError::Addons("length overflow"))?;
                let value = message
                    .get(..len)
                    .ok_or(HeaderError::Addons("truncated field"))?;
                if field == 1 {
                    flow = value;
                }
                message = &message[len..];
            }
            5 => message = skip(message, 4)?,
            _ => return Err(HeaderError::Addons("unsupported wire type")),
        }
        if field == 1 && key & 7 != 2 {
            return Err(HeaderError::Addons("Flow is not a string"));
        }
    }
    Ok(flow)
}

fn skip(message: &[u8], len: usize) -> Result<&[u8], HeaderError> {
    message
        .get(len..)
        .ok_or(HeaderError::Addons("truncated field"))
}

fn read_varint(message: &mut &[u8]) -> Result<u64, HeaderError> {
    let mut value = 0u64;
    for (index, byte) in message.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *message = &message[index + 1..];
            return Ok(value);
        }
    }
    Err(HeaderError::Addons("truncated or overlong varint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [
        0x27, 0x84, 0x87, 0x39, 0x7e, 0x62, 0x41, 0x38, 0x9f, 0xd3, 0x09, 0x8a, 0x63, 0x96, 0x4b,
        0x6b,
    ];

    fn known(id: &[u8; 16]) -> bool {
        *id == ID
    }

    fn encoded(header: &RequestHeader) -> Vec<u8> {
        let mut out = Vec::new();
        header.encode(&mut out).unwrap();
        out
    }

    fn tcp_domain() -> RequestHeader {
        RequestHeader::for_session(
            ID,
            &Destination::tcp(Address::Domain("example.com".into()), 443),
        )
    }

    #[test]
    fn golden_tcp_domain_request() {
        let mut expected = vec![0u8];
        expected.extend_from_slice(&ID);
        expected.extend_from_slice(&[0, 1, 0x01, 0xbb, 2, 11]);
        expected.extend_from_slice(b"example.com");
        assert_eq!(encoded(&tcp_domain()), expected);
    }

    #[test]
    fn golden_mux_request_has_no_address() {
        let header = RequestHeader::for_session(
            ID,
            &Destination::tcp(Address::Domain(MUX_COOL_DOMAIN.into()), 9527),
        );
        assert_eq!(header.command, Command::Mux);
        let bytes = encoded(&header);
        assert_eq!(bytes.len(), 19);
        assert_eq!(&bytes[17..], &[0, 3]);
        let (decoded, used) = RequestHeader::decode(&bytes, known).unwrap().unwrap();
        assert_eq!(used, 19);
        assert_eq!(decoded.destination, mux_cool_destination());
    }

    #[test]
    fn round_trips_every_address_and_command() {
        let destinations = [
            Destination::tcp(Address::Ipv4(Ipv4Addr::new(127, 0, 0, 1)), 80),
            Destination::udp(Address::Ipv6(Ipv6Addr::LOCALHOST), 53),
            Destination::udp(Address::Domain("a-b_c.example".into()), 0),
            Destination::tcp(Address::Domain("x".repeat(255)), 65535),
        ];
        for destination in destinations {
            let header = RequestHeader::for_session(ID, &destination);
            let mut bytes = encoded(&header);
            let len = bytes.len();
            bytes.extend_from_slice(b"payload");
            let (decoded, used) = RequestHeader::decode(&bytes, known).unwrap().unwrap();
            assert_eq!(used, len);
            assert_eq!(decoded, header);
            assert_eq!(decoded.destination, destination);
        }
    }

    #[test]
    fn byte_at_a_time_needs_more_then_decodes() {
        let bytes = encoded(&tcp_domain());
        for end in 0..bytes.len() {
            assert_eq!(
                RequestHeader::decode(&bytes[..end], known),
                Ok(None),
                "{end}"
            );
        }
        assert!(RequestHeader::decode(&bytes, known).unwrap().is_some());
    }

    #[test]
    fn refuses_other_versions_and_strangers() {
        let mut bytes = encoded(&tcp_domain());
        bytes[0] = 1;
        assert_eq!(
            RequestHeader::decode(&bytes, known),
            Err(HeaderError::Version(1))
        );
        let bytes = encoded(&tcp_domain());
        // Refused as soon as the ID is there.
        assert_eq!(
            RequestHeader::decode(&bytes[..17], |_| false),
            Err(HeaderError::UnknownUser)
        );
    }

    #[test]
    fn refuses_unknown_command_and_address_type() {
        let mut bytes = encoded(&tcp_domain());
        bytes[18] = 4;
        assert_eq!(
            RequestHeader::decode(&bytes, known),
            Err(HeaderError::UnknownCommand(4))
        );
        let mut bytes = encoded(&tcp_domain());
        bytes[21] = 4;
        assert_eq!(
            RequestHeader::decode(&bytes, known),
            Err(HeaderError::UnknownAddressType(4))
        );
    }

    #[test]
    fn refuses_bad_domains() {
        // "::1" too: 4.34 tries an IP only for a name starting with a digit
        // or `[`.
        for name in [&b""[..], b"bad domain", b"\xff\xfe", b"a:b", b"::1"] {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&ID);
            bytes.extend_from_slice(&[0, 1, 0, 80, 2, name.len() as u8]);
            bytes.extend_from_slice(name);
            assert!(
                matches!(
                    RequestHeader::decode(&bytes, known),
                    Err(HeaderError::InvalidDomain(_))
                ),
                "{name:?}"
            );
        }
        // An IP written as a domain is that IP, as 4.34 reads it.
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&ID);
        bytes.extend_from_slice(&[0, 1, 0, 80, 2, 5]);
        bytes.extend_from_slice(b"[::1]");
        let (decoded, _) = RequestHeader::decode(&bytes, known).unwrap().unwrap();
        assert_eq!(
            decoded.destination.address,
            Address::Ipv6(Ipv6Addr::LOCALHOST)
        );
    }

    fn with_addons(addons: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&ID);
        bytes.push(addons.len() as u8);
        bytes.extend_from_slice(addons);
        bytes.push(3);
        bytes
    }

    #[test]
    fn addons_empty_flow_and_seed_are_accepted() {
        // Flow = "" and Seed = 0x01 0x02, plus an unknown varint field 3.
        let addons = [0x0a, 0x00, 0x12, 0x02, 0x01, 0x02, 0x18, 0x96, 0x01];
        let bytes = with_addons(&addons);
        let (decoded, used) = RequestHeader::decode(&bytes, known).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded.command, Command::Mux);
    }

    #[test]
    fn addons_with_a_flow_are_read_and_ignored_as_4_34_does() {
        let mut addons = vec![0x0a, 16];
        addons.extend_from_slice(b"xtls-rprx-direct");
        let bytes = with_addons(&addons);
        let (decoded, used) = RequestHeader::decode(&bytes, known).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded.command, Command::Mux);
    }

    #[test]
    fn malformed_addons_are_refused() {
        for addons in [
            &[0x0a, 0x05, b'a'][..], // truncated string
            &[0x08, 0x01],           // Flow as a varint
            &[0x18],                 // truncated varint
            &[0x00, 0x00],           // field 0
            &[0x0b],                 // group
            &[0x19, 1, 2, 3],        // truncated fixed64
            &[
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            assert!(
                matches!(
                    RequestHeader::decode(&with_addons(addons), known),
                    Err(HeaderError::Addons(_))
                ),
                "{addons:?}"
            );
        }
    }

    #[test]
    fn response_round_trip_and_refusals() {
        let mut out = Vec::new();
        encode_response(&mut out);
        assert_eq!(out, [0, 0]);
        assert_eq!(decode_response(&[]), Ok(None));
        assert_eq!(decode_response(&[0]), Ok(None));
        assert_eq!(decode_response(&[0, 0, 9]), Ok(Some(2)));
        assert_eq!(decode_response(&[0, 2, 0x12]), Ok(None));
        assert_eq!(decode_response(&[0, 2, 0x12, 0]), Ok(Some(4)));
        assert_eq!(
            decode_response(&[1, 0]),
            Err(HeaderError::ResponseVersion(1))
        );
        assert_eq!(decode_response(&[0, 3, 0x0a, 1, b'x']), Ok(Some(5)));
    }

    #[test]
    fn packets_frame_with_a_big_endian_length() {
        let mut out = Vec::new();
        encode_packet(b"hello", &mut out).unwrap();
        encode_packet(b"", &mut out).unwrap();
        assert_eq!(&out[..7], b"\x00\x05hello");
        let (payload, used) = decode_packet(&out).unwrap();
        assert_eq!((payload, used), (&b"hello"[..], 7));
        assert_eq!(decode_packet(&out[7..]), Some((&b""[..], 2)));
        assert_eq!(decode_packet(&out[..6]), None);
        assert_eq!(decode_packet(&out[..1]), None);
        assert_eq!(
            encode_packet(&vec![0; 65536], &mut out),
            Err(HeaderError::PacketTooLong(65536))
        );
    }

    #[test]
    fn too_long_domain_is_refused_when_encoding() {
        let header =
            RequestHeader::for_session(ID, &Destination::tcp(Address::Domain("x".repeat(256)), 1));
        let mut out = vec![9];
        assert_eq!(
            header.encode(&mut out),
            Err(HeaderError::DomainTooLong(256))
        );
        assert_eq!(out, [9]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = RequestHeader::decode(&data, |_| true);
            let _ = decode_response(&data);
            let _ = decode_packet(&data);
        }
    }
}
