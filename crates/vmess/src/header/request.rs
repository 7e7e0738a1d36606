//! Sans-IO codec of the VMess request header plaintext: what a client asks
//! for (body keys, options, body security, command, destination), and
//! which body security a user's [`Security`] choice means on this machine
//! ([`BodySecurity::resolve`]).
//!
//! It is not an envelope: the plaintext travels sealed by `aead.rs` or
//! encrypted by `legacy.rs`, and it is checked only by its FNV-1a checksum
//! here. Part of [`crate::header`]; [`crate::validator`] and
//! [`crate::outbound`] drive it, [`crate::body`] uses its options.
//!
//! Header plaintext (both):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version (1) |
//! | 16 | request body IV |
//! | 16 | request body key |
//! | 1 | response auth `V` |
//! | 1 | options (S 0x01, M 0x04, P 0x08; Rayback only: large packets 0x20, source 0x40, rekey 0x80) |
//! | 1 | padding length `P` << 4 ‖ security |
//! | 1 | reserved (0) |
//! | 1 | command: 1 TCP, 2 UDP, 3 Mux |
//! | 2 | port (not for Mux) |
//! | 1 | address type: 1 IPv4, 2 domain, 3 IPv6 (not for Mux) |
//! | 4 / 1+n / 16 | address (not for Mux) |
//! | P | padding |
//! | 4 | FNV-1a 32 of everything before |

use std::net::{Ipv4Addr, Ipv6Addr};

use rayback_core::{Address, Destination, Extensions, Network};

use super::FIXED_HEADER_LEN;
use crate::crypto;
use crate::error::{HandshakeError, VmessError};

/// The domain that stands for a Mux.Cool connection (command 0x03).
pub const MUX_COOL_DOMAIN: &str = "v1.mux.cool";

/// The request options byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Options(pub u8);

impl Options {
    /// S: the body is chunked and ends with an empty chunk.
    pub const CHUNK_STREAM: u8 = 0x01;
    /// R: obsolete connection reuse, ignored.
    pub const CONNECTION_REUSE: u8 = 0x02;
    /// M: chunk lengths are XOR-masked with a SHAKE128 stream.
    pub const CHUNK_MASKING: u8 = 0x04;
    /// P: every chunk carries random padding; requires M.
    pub const GLOBAL_PADDING: u8 = 0x08;
    /// Rayback's extension, unknown to V2Ray (whose server ignores option
    /// bits it does not know, and whose client ignores the response's
    /// option byte): the client can rekey its body ciphers. A Rayback
    /// server that sees it answers with the same bit in the response
    /// header's option byte, and from then on both sides of both
    /// directions replace the body key after every 65536 chunks (see
    /// [`crate::body::rekeyed`]) instead of running out of nonces. Without
    /// the answer (a V2Ray server) nothing changes.
    pub const REKEY: u8 = 0x80;
    /// Rayback's extension, unknown to V2Ray (which gives meaning to bits
    /// 0x01–0x10 only): the client (a bridge) reads the visitor's source
    /// that a Rayback portal may append to Mux.Cool New frames (see
    /// `rayback_mux::frame`). A Rayback server answers it with the same
    /// bit in the response option byte and marks the session
    /// (`Session::peer_extensions`); whatever it carries, a portal then
    /// names each public session's source. A V2Ray server neither answers
    /// nor sends sources, and a V2Ray client never asks.
    pub const SOURCE: u8 = 0x40;
    /// Rayback's extension, unknown to V2Ray 4.34 (which gives meaning to
    /// bits 0x01–0x08 only and answers every request with option byte 0):
    /// the client takes Mux.Cool packet frames of up to 65,535 bytes of
    /// data and would send them, where V2Ray refuses any over 2048 and
    /// drops the whole connection. A Rayback server answers it with the
    /// same bit and marks the session (`Session::peer_extensions`); a
    /// portal then lets datagrams up to 65,507 bytes cross that tunnel
    /// both ways, and a bridge that reads the answer does the same. A
    /// V2Ray server never answers and a V2Ray client never asks, so every
    /// tunnel with a V2Ray end keeps the 2048-byte limit.
    pub const LARGE_PACKETS: u8 = 0x20;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// The connection-level Rayback extensions these bits name (request
    /// and response option bytes use the same bits); rekeying, which
    /// stays inside the VMess body, is not one of them.
    pub fn extensions(self) -> Extensions {
        let mut extensions = Extensions::NONE;
        if self.has(Options::SOURCE) {
            extensions |= Extensions::SOURCE;
        }
        if self.has(Options::LARGE_PACKETS) {
            extensions |= Extensions::LARGE_PACKETS;
        }
        extensions
    }
}

/// The body security on the wire (the header's low nibble).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodySecurity {
    Aes128Gcm,
    ChaCha20Poly1305,
    None,
}

impl BodySecurity {
    pub fn wire_value(self) -> u8 {
        match self {
            BodySecurity::Aes128Gcm => 3,
            BodySecurity::ChaCha20Poly1305 => 4,
            BodySecurity::None => 5,
        }
    }

    /// The security of a wire nibble. 0/1 (legacy AES-CFB bodies), 2 (auto,
    /// never valid on the wire) and 6-15 are refused.
    pub fn from_wire(value: u8) -> Option<BodySecurity> {
        match value {
            3 => Some(BodySecurity::Aes128Gcm),
            4 => Some(BodySecurity::ChaCha20Poly1305),
            5 => Some(BodySecurity::None),
            _ => None,
        }
    }

    /// The options a 4.34 client sends with this security: S M P for the
    /// AEAD ciphers, S M for none.
    pub fn client_options(self) -> Options {
        match self {
            BodySecurity::None => Options(Options::CHUNK_STREAM | Options::CHUNK_MASKING),
            _ => Options(Options::CHUNK_STREAM | Options::CHUNK_MASKING | Options::GLOBAL_PADDING),
        }
    }
}

/// The `security` of a client user in the config: core's
/// [`VmessSecurity`](rayback_core::VmessSecurity), which also owns its
/// names (`VmessSecurity::parse`; 4.34 takes an unknown name as `auto`).
pub use rayback_core::VmessSecurity as Security;

impl BodySecurity {
    /// The concrete body security this machine uses for a user's
    /// `security`. `Auto` is what 4.34 picks by CPU architecture:
    /// AES-128-GCM on amd64, arm64 and s390x, ChaCha20-Poly1305 elsewhere.
    /// 4.34 looks at `GOARCH` only, not at AES-NI; Rayback does the same
    /// with `target_arch`.
    pub fn resolve(security: Security) -> BodySecurity {
        match security {
            Security::Auto => {
                if cfg!(any(
                    target_arch = "x86_64",
                    target_arch = "aarch64",
                    target_arch = "s390x"
                )) {
                    BodySecurity::Aes128Gcm
                } else {
                    BodySecurity::ChaCha20Poly1305
                }
            }
            Security::Aes128Gcm => BodySecurity::Aes128Gcm,
            Security::ChaCha20Poly1305 => BodySecurity::ChaCha20Poly1305,
            Security::None => BodySecurity::None,
        }
    }
}

/// The request command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Tcp,
    Udp,
    /// Mux.Cool: the destination is `v1.mux.cool:0` and is not on the wire.
    Mux,
}

impl Command {
    pub fn wire_value(self) -> u8 {
        match self {
            Command::Tcp => 1,
            Command::Udp => 2,
            Command::Mux => 3,
        }
    }

    /// The command that carries a session toward `destination`: Mux for
    /// TCP to `v1.mux.cool`, else the destination's network.
    pub fn for_destination(destination: &Destination) -> Command {
        match destination.network {
            Network::Udp => Command::Udp,
            Network::Tcp if destination.address.domain() == Some(MUX_COOL_DOMAIN) => Command::Mux,
            Network::Tcp => Command::Tcp,
        }
    }
}

/// A decoded (or to-be-encoded) request header.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub version: u8,
    pub body_iv: [u8; 16],
    pub body_key: [u8; 16],
    pub response_auth: u8,
    pub options: Options,
    /// 0..=15 random bytes before the checksum.
    pub padding_len: u8,
    pub security: BodySecurity,
    pub command: Command,
    /// For [`Command::Mux`] this is `tcp:v1.mux.cool:0` and is not encoded.
    pub destination: Destination,
}

impl std::fmt::Debug for RequestHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Body keys are secrets: leave them out.
        f.debug_struct("RequestHeader")
            .field("version", &self.version)
            .field("options", &self.options)
            .field("padding_len", &self.padding_len)
            .field("security", &self.security)
            .field("command", &self.command)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// The fixed destination of a Mux.Cool request.
pub fn mux_cool_destination() -> Destination {
    Destination::tcp(Address::Domain(MUX_COOL_DOMAIN.to_owned()), 0)
}

impl RequestHeader {
    /// Appends the plaintext (with padding and checksum) to `out`.
    /// `padding` supplies the `padding_len` random bytes (only that many
    /// are used). Fails for a domain longer than 255 bytes.
    pub fn encode(&self, padding: &[u8; 15], out: &mut Vec<u8>) -> Result<(), VmessError> {
        let start = out.len();
        out.push(self.version);
        out.extend_from_slice(&self.body_iv);
        out.extend_from_slice(&self.body_key);
        out.push(self.response_auth);
        out.push(self.options.0);
        let padding_len = self.padding_len.min(15);
        out.push((padding_len << 4) | self.security.wire_value());
        out.push(0);
        out.push(self.command.wire_value());
        if self.command != Command::Mux {
            out.extend_from_slice(&self.destination.port.to_be_bytes());
            match &self.destination.address {
                Address::Ipv4(ip) => {
                    out.push(1);
                    out.extend_from_slice(&ip.octets());
                }
                Address::Domain(domain) => {
                    let len = u8::try_from(domain.len()).map_err(|_| {
                        out.truncate(start);
                        VmessError::BadDestination(self.destination.to_string())
                    })?;
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
        out.extend_from_slice(&padding[..padding_len as usize]);
        let checksum = crypto::fnv1a32(&out[start..]);
        out.extend_from_slice(&checksum.to_be_bytes());
        Ok(())
    }

    /// Decodes a plaintext header from the start of `data`. Returns the
    /// header and the bytes it took, or `None` when `data` is too short to
    /// tell. Trailing bytes are left alone.
    pub fn decode(data: &[u8]) -> Result<Option<(RequestHeader, usize)>, HandshakeError> {
        if data.len() < FIXED_HEADER_LEN {
            return Ok(None);
        }
        let mut body_iv = [0u8; 16];
        body_iv.copy_from_slice(&data[1..17]);
        let mut body_key = [0u8; 16];
        body_key.copy_from_slice(&data[17..33]);
        let response_auth = data[33];
        let options = Options(data[34]);
        let padding_len = data[35] >> 4;
        let security_value = data[35] & 0x0f;
        let command_value = data[37];
        let mut at = FIXED_HEADER_LEN;
        // Where the address is: (port, address) for TCP/UDP, or none.
        let mut target: Option<(u16, Address)> = None;
        let mut domain_error: Option<String> = None;
        let command = match command_value {
            1 => Some(Command::Tcp),
            2 => Some(Command::Udp),
            3 => Some(Command::Mux),
            _ => None,
        };
        if matches!(command, Some(Command::Tcp | Command::Udp)) {
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
                    match Address::from_wire_domain(name) {
                        Some(address) => address,
                        None => {
                            domain_error = Some(String::from_utf8_lossy(name).into_owned());
                            Address::Domain(String::new())
                        }
                    }
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
                other => return Err(HandshakeError::UnknownAddressType(other)),
            };
            target = Some((port, address));
        }
        let checksum_at = at + padding_len as usize;
        let Some(checksum) = data.get(checksum_at..checksum_at + 4) else {
            return Ok(None);
        };
        let found = u32::from_be_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
        let expected = crypto::fnv1a32(&data[..checksum_at]);
        if found != expected {
            return Err(HandshakeError::BadChecksum { expected, found });
        }
        let consumed = checksum_at + 4;
        let command = command.ok_or(HandshakeError::UnknownCommand(command_value))?;
        if let Some(domain) = domain_error {
            return Err(HandshakeError::InvalidDomain(domain));
        }
        let security = BodySecurity::from_wire(security_value)
            .ok_or(HandshakeError::UnsupportedSecurity(security_value))?;
        if options.has(Options::GLOBAL_PADDING) && !options.has(Options::CHUNK_MASKING) {
            // 4.34 panics on this; Rayback refuses it.
            return Err(HandshakeError::PaddingWithoutMasking(options.0));
        }
        let destination = match (command, target) {
            (Command::Tcp, Some((port, address))) => Destination::tcp(address, port),
            (Command::Udp, Some((port, address))) => Destination::udp(address, port),
            _ => mux_cool_destination(),
        };
        Ok(Some((
            RequestHeader {
                version: data[0],
                body_iv,
                body_key,
                response_auth,
                options,
                padding_len,
                security,
                command,
                destination,
            },
            consumed,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rayback_core::{Address, Destination};

    use super::*;
    use crate::crypto;
    use crate::error::HandshakeError;
    use crate::header::test_vectors::{hex, spec_header, SPEC_PLAIN};

    #[test]
    fn request_header_matches_spec() {
        let mut plain = Vec::new();
        spec_header().encode(&[0; 15], &mut plain).unwrap();
        assert_eq!(hex(&plain), SPEC_PLAIN);
        let (decoded, used) = RequestHeader::decode(&plain).unwrap().unwrap();
        assert_eq!(used, plain.len());
        assert_eq!(decoded, spec_header());
        // Every strict prefix asks for more.
        for cut in 0..plain.len() {
            assert_eq!(RequestHeader::decode(&plain[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn decodes_every_command_and_address() {
        let mut header = spec_header();
        for (command, destination) in [
            (
                Command::Udp,
                Destination::udp(Address::Ipv4(Ipv4Addr::new(1, 2, 3, 4)), 53),
            ),
            (
                Command::Tcp,
                Destination::tcp(Address::Ipv6(Ipv6Addr::LOCALHOST), 8080),
            ),
            (Command::Mux, mux_cool_destination()),
        ] {
            header.command = command;
            header.destination = destination;
            header.padding_len = 7;
            let mut plain = Vec::new();
            header.encode(&[9; 15], &mut plain).unwrap();
            let (decoded, used) = RequestHeader::decode(&plain).unwrap().unwrap();
            assert_eq!(used, plain.len());
            assert_eq!(decoded, header);
        }
    }

    #[test]
    fn refuses_bad_requests() {
        let encode = |header: &RequestHeader| {
            let mut plain = Vec::new();
            header.encode(&[0; 15], &mut plain).unwrap();
            plain
        };
        let mut plain = encode(&spec_header());
        let last = plain.len() - 1;
        plain[last] ^= 1;
        assert!(matches!(
            RequestHeader::decode(&plain),
            Err(HandshakeError::BadChecksum { .. })
        ));
        let mut header = spec_header();
        header.options = Options(Options::CHUNK_STREAM | Options::GLOBAL_PADDING);
        assert_eq!(
            RequestHeader::decode(&encode(&header)),
            Err(HandshakeError::PaddingWithoutMasking(0x09))
        );
        header = spec_header();
        header.destination = Destination::tcp(Address::Domain("bad domain!".into()), 1);
        assert_eq!(
            RequestHeader::decode(&encode(&header)),
            Err(HandshakeError::InvalidDomain("bad domain!".into()))
        );
        // Security nibbles other than 3, 4, 5.
        for security in [0u8, 1, 2, 6, 15] {
            let mut plain = encode(&spec_header());
            plain[35] = (plain[35] & 0xf0) | security;
            let body = plain.len() - 4;
            let checksum = crypto::fnv1a32(&plain[..body]).to_be_bytes();
            plain[body..].copy_from_slice(&checksum);
            assert_eq!(
                RequestHeader::decode(&plain),
                Err(HandshakeError::UnsupportedSecurity(security))
            );
        }
    }

    #[test]
    fn securities_resolve_as_434_does() {
        // The names are core's (`VmessSecurity::parse`, tested there).
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            BodySecurity::resolve(Security::Auto),
            BodySecurity::Aes128Gcm
        );
        assert_eq!(BodySecurity::resolve(Security::None), BodySecurity::None);
        assert_eq!(
            BodySecurity::None.client_options(),
            Options(Options::CHUNK_STREAM | Options::CHUNK_MASKING)
        );
        assert_eq!(BodySecurity::Aes128Gcm.client_options(), Options(0x0d));
    }
}
