//! Sans-IO codecs for VMess handshakes: the request header plaintext, its
//! AEAD and legacy (MD5) envelopes, the AuthID, and the response header.
//!
//! Everything here takes bytes, the current time and random values as
//! arguments and returns bytes; sockets live in [`crate::inbound`] and
//! [`crate::outbound`]. "Need more bytes" is `Ok(None)`, never an error.
//!
//! AEAD request (client alterId = 0):
//!
//! | bytes | field |
//! |---|---|
//! | 16 | AuthID: AES-128(`KDF16(cmdKey, "AES Auth ID Encryption")`, time(8) ‖ random(4) ‖ CRC-32(4)) |
//! | 18 | header length `L` (BE16) sealed with AES-128-GCM, AAD = AuthID |
//! | 8 | connection nonce (random) |
//! | L + 16 | header plaintext sealed with AES-128-GCM, AAD = AuthID |
//!
//! Legacy request (client alterId > 0):
//!
//! | bytes | field |
//! |---|---|
//! | 16 | HMAC-MD5(key = an ID, message = timestamp BE64) |
//! | n | header plaintext, AES-128-CFB(key = main cmdKey, IV = MD5(ts ‖ ts ‖ ts ‖ ts)) |
//!
//! Header plaintext (both):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version (1) |
//! | 16 | request body IV |
//! | 16 | request body key |
//! | 1 | response auth `V` |
//! | 1 | options (S 0x01, M 0x04, P 0x08) |
//! | 1 | padding length `P` << 4 ‖ security |
//! | 1 | reserved (0) |
//! | 1 | command: 1 TCP, 2 UDP, 3 Mux |
//! | 2 | port (not for Mux) |
//! | 1 | address type: 1 IPv4, 2 domain, 3 IPv6 (not for Mux) |
//! | 4 / 1+n / 16 | address (not for Mux) |
//! | P | padding |
//! | 4 | FNV-1a 32 of everything before |
//!
//! Response header plaintext: `V | 0 | 0 | 0` (commands are never sent by
//! Rayback and are skipped when received). AEAD mode seals its length (18
//! bytes) and then the plaintext (+16); legacy mode encrypts it with
//! AES-128-CFB under the response key and IV.

use std::net::{Ipv4Addr, Ipv6Addr};

use rayback_core::{Address, Destination, Network};

use crate::crypto::{self, AeadCipher, AuthIdCipher, Cfb128, TAG_LEN};
use crate::error::{HandshakeError, VmessError};
use crate::id::UserId;

const AUTH_ID_KEY_LABEL: &[u8] = b"AES Auth ID Encryption";
const LENGTH_KEY_LABEL: &[u8] = b"VMess Header AEAD Key_Length";
const LENGTH_NONCE_LABEL: &[u8] = b"VMess Header AEAD Nonce_Length";
const PAYLOAD_KEY_LABEL: &[u8] = b"VMess Header AEAD Key";
const PAYLOAD_NONCE_LABEL: &[u8] = b"VMess Header AEAD Nonce";
const RESPONSE_LENGTH_KEY_LABEL: &[u8] = b"AEAD Resp Header Len Key";
const RESPONSE_LENGTH_NONCE_LABEL: &[u8] = b"AEAD Resp Header Len IV";
const RESPONSE_PAYLOAD_KEY_LABEL: &[u8] = b"AEAD Resp Header Key";
const RESPONSE_PAYLOAD_NONCE_LABEL: &[u8] = b"AEAD Resp Header IV";

/// Bytes of an AuthID (and of a legacy auth hash).
pub const AUTH_ID_LEN: usize = 16;
/// Bytes of the sealed length of an AEAD request or response header.
pub const SEALED_LENGTH_LEN: usize = 2 + TAG_LEN;
/// Bytes of the connection nonce of an AEAD request.
pub const CONNECTION_NONCE_LEN: usize = 8;
/// The fixed part of a request header plaintext, up to the command.
pub const FIXED_HEADER_LEN: usize = 38;
/// The largest sealed header a server accepts. A 4.34 client's largest is
/// 38 + 4 + 255 (domain) + 15 (padding) + 4 = 316 bytes.
pub const MAX_SEALED_HEADER: u16 = 1024;
/// How far an AuthID's time may be from the server's clock (inclusive).
pub const AUTH_ID_WINDOW_SECS: i64 = 120;
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

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
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

/// The `security` of a client user in the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Security {
    /// What 4.34 picks by CPU architecture: AES-128-GCM on amd64, arm64 and
    /// s390x, ChaCha20-Poly1305 elsewhere. 4.34 looks at `GOARCH` only,
    /// not at AES-NI; Rayback does the same with `target_arch`.
    #[default]
    Auto,
    Aes128Gcm,
    ChaCha20Poly1305,
    None,
}

impl Security {
    /// The security named in a config. As in 4.34, any unknown name
    /// (`zero`, `aes-128-cfb`, `legacy`, a typo) means `auto`.
    pub fn from_name(name: &str) -> Security {
        match name.to_ascii_lowercase().as_str() {
            "aes-128-gcm" => Security::Aes128Gcm,
            "chacha20-poly1305" => Security::ChaCha20Poly1305,
            "none" => Security::None,
            _ => Security::Auto,
        }
    }

    /// The concrete body security this machine uses for it.
    pub fn resolve(self) -> BodySecurity {
        match self {
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

/// Whether a request came (or goes) in the AEAD or the legacy envelope.
/// It also decides how the response keys are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderMode {
    Aead,
    Legacy,
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
                    match parse_domain(name) {
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

/// A domain as 4.34 accepts it: `A-Za-z0-9-._` only, non-empty; an IP
/// literal becomes the IP.
fn parse_domain(name: &[u8]) -> Option<Address> {
    if name.is_empty()
        || !name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return None;
    }
    // Only ASCII passed the check above, so this is valid UTF-8.
    let text = std::str::from_utf8(name).ok()?;
    Address::parse(text).ok()
}

/// The AuthID key of a user: `KDF16(cmdKey, "AES Auth ID Encryption")`.
pub fn auth_id_key(cmd_key: &[u8; 16]) -> [u8; 16] {
    crypto::kdf16(cmd_key, &[AUTH_ID_KEY_LABEL])
}

/// Builds an AuthID for time `now` (Unix seconds) and 4 random bytes.
pub fn create_auth_id(cipher: &AuthIdCipher, now: i64, random: [u8; 4]) -> [u8; 16] {
    let mut plain = [0u8; 16];
    plain[..8].copy_from_slice(&now.to_be_bytes());
    plain[8..12].copy_from_slice(&random);
    let crc = crypto::crc32(&plain[..12]);
    plain[12..].copy_from_slice(&crc.to_be_bytes());
    cipher.encrypt(&plain)
}

/// What an AuthID says when decrypted with one user's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthIdCheck {
    /// Not this user's (CRC mismatch).
    NotMine,
    /// This user's, but its time is out of the window (seconds away).
    Stale(i64),
    /// This user's and fresh.
    Fresh,
}

/// Checks an AuthID against one user's key at time `now`.
pub fn check_auth_id(cipher: &AuthIdCipher, auth_id: &[u8; 16], now: i64) -> AuthIdCheck {
    let plain = cipher.decrypt(auth_id);
    let crc = u32::from_be_bytes([plain[12], plain[13], plain[14], plain[15]]);
    if crc != crypto::crc32(&plain[..12]) {
        return AuthIdCheck::NotMine;
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&plain[..8]);
    let time = i64::from_be_bytes(time);
    let away = time.saturating_sub(now);
    if time < 0 || away.unsigned_abs() > AUTH_ID_WINDOW_SECS as u64 {
        return AuthIdCheck::Stale(away);
    }
    AuthIdCheck::Fresh
}

/// The four keys and nonces of an AEAD request envelope.
struct RequestSealKeys {
    length: AeadCipher,
    length_nonce: [u8; 12],
    payload: AeadCipher,
    payload_nonce: [u8; 12],
}

impl RequestSealKeys {
    fn derive(cmd_key: &[u8; 16], auth_id: &[u8; 16], nonce: &[u8; 8]) -> RequestSealKeys {
        RequestSealKeys {
            length: AeadCipher::aes_128_gcm(&crypto::kdf16(
                cmd_key,
                &[LENGTH_KEY_LABEL, auth_id, nonce],
            )),
            length_nonce: crypto::kdf12(cmd_key, &[LENGTH_NONCE_LABEL, auth_id, nonce]),
            payload: AeadCipher::aes_128_gcm(&crypto::kdf16(
                cmd_key,
                &[PAYLOAD_KEY_LABEL, auth_id, nonce],
            )),
            payload_nonce: crypto::kdf12(cmd_key, &[PAYLOAD_NONCE_LABEL, auth_id, nonce]),
        }
    }
}

/// Appends a sealed AEAD request: AuthID, sealed length, connection nonce,
/// sealed header plaintext.
pub fn seal_aead_request(
    cmd_key: &[u8; 16],
    auth_id: &[u8; 16],
    connection_nonce: &[u8; 8],
    header_plain: &[u8],
    out: &mut Vec<u8>,
) {
    let keys = RequestSealKeys::derive(cmd_key, auth_id, connection_nonce);
    out.extend_from_slice(auth_id);
    // Headers are at most a few hundred bytes, so the length fits 16 bits.
    let mut length = (header_plain.len() as u16).to_be_bytes();
    let tag = keys
        .length
        .seal_in_place(keys.length_nonce, auth_id, &mut length);
    out.extend_from_slice(&length);
    out.extend_from_slice(&tag);
    out.extend_from_slice(connection_nonce);
    let start = out.len();
    out.extend_from_slice(header_plain);
    let tag = keys
        .payload
        .seal_in_place(keys.payload_nonce, auth_id, &mut out[start..]);
    out.extend_from_slice(&tag);
}

/// Opens the rest of an AEAD request whose AuthID already matched `cmd_key`.
/// `data` starts right after the AuthID. Returns the header plaintext and
/// the bytes of `data` it took, or `None` when more bytes are needed.
pub fn open_aead_request(
    cmd_key: &[u8; 16],
    auth_id: &[u8; 16],
    data: &[u8],
) -> Result<Option<(Vec<u8>, usize)>, HandshakeError> {
    let prefix = SEALED_LENGTH_LEN + CONNECTION_NONCE_LEN;
    if data.len() < prefix {
        return Ok(None);
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&data[SEALED_LENGTH_LEN..prefix]);
    let keys = RequestSealKeys::derive(cmd_key, auth_id, &nonce);
    let mut length = [0u8; SEALED_LENGTH_LEN];
    length.copy_from_slice(&data[..SEALED_LENGTH_LEN]);
    keys.length
        .open_in_place(keys.length_nonce, auth_id, &mut length)
        .map_err(|_| HandshakeError::HeaderUnauthentic)?;
    let header_len = u16::from_be_bytes([length[0], length[1]]);
    if header_len > MAX_SEALED_HEADER {
        return Err(HandshakeError::HeaderLength(header_len));
    }
    let total = prefix + header_len as usize + TAG_LEN;
    let Some(sealed) = data.get(prefix..total) else {
        return Ok(None);
    };
    let mut plain = sealed.to_vec();
    let len = keys
        .payload
        .open_in_place(keys.payload_nonce, auth_id, &mut plain)
        .map_err(|_| HandshakeError::HeaderUnauthentic)?;
    plain.truncate(len);
    Ok(Some((plain, total)))
}

/// The legacy auth hash of `id` at `timestamp`.
pub fn legacy_auth(id: &UserId, timestamp: u64) -> [u8; 16] {
    crypto::hmac_md5(id.as_bytes(), &timestamp.to_be_bytes())
}

/// The legacy header's CFB IV: `MD5(ts ‖ ts ‖ ts ‖ ts)`.
pub fn legacy_header_iv(timestamp: u64) -> [u8; 16] {
    let ts = timestamp.to_be_bytes();
    crypto::md5(&[&ts, &ts, &ts, &ts])
}

/// Appends a legacy request: the auth hash of `auth_id_user` (an alter ID
/// or the main ID) at `timestamp`, then the header plaintext encrypted with
/// the **main** ID's cmdKey.
pub fn seal_legacy_request(
    auth_id_user: &UserId,
    main_cmd_key: &[u8; 16],
    timestamp: u64,
    header_plain: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&legacy_auth(auth_id_user, timestamp));
    let start = out.len();
    out.extend_from_slice(header_plain);
    Cfb128::new(main_cmd_key, &legacy_header_iv(timestamp)).encrypt(&mut out[start..]);
}

/// Decodes a legacy request header whose auth hash already matched a user
/// (main `cmd_key`) at `timestamp`. `data` starts right after the hash.
pub fn open_legacy_request(
    cmd_key: &[u8; 16],
    timestamp: u64,
    data: &[u8],
) -> Result<Option<(RequestHeader, usize)>, HandshakeError> {
    // The longest header: 38 + 3 + 1 + 255 + 15 + 4 = 316 bytes. Decrypt a
    // copy of what is there; a short read is retried from the start.
    let take = data.len().min(FIXED_HEADER_LEN + 3 + 256 + 15 + 4);
    let mut plain = [0u8; FIXED_HEADER_LEN + 3 + 256 + 15 + 4];
    plain[..take].copy_from_slice(&data[..take]);
    Cfb128::new(cmd_key, &legacy_header_iv(timestamp)).decrypt(&mut plain[..take]);
    RequestHeader::decode(&plain[..take])
}

/// The key and IV of the response direction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirectionKeys {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(******)")
    }
}

impl DirectionKeys {
    /// The request direction: the body key and IV of the header.
    pub fn request(header: &RequestHeader) -> DirectionKeys {
        DirectionKeys {
            key: header.body_key,
            iv: header.body_iv,
        }
    }

    /// The response direction: SHA-256 (AEAD mode) or MD5 (legacy mode) of
    /// the request key and IV.
    pub fn response(header: &RequestHeader, mode: HeaderMode) -> DirectionKeys {
        match mode {
            HeaderMode::Aead => {
                let mut key = [0u8; 16];
                key.copy_from_slice(&crypto::sha256(&header.body_key)[..16]);
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&crypto::sha256(&header.body_iv)[..16]);
                DirectionKeys { key, iv }
            }
            HeaderMode::Legacy => DirectionKeys {
                key: crypto::md5(&[&header.body_key]),
                iv: crypto::md5(&[&header.body_iv]),
            },
        }
    }
}

/// Appends the response header `V 0 0 0` sealed for `mode` under the
/// response direction's keys.
pub fn seal_response(
    keys: &DirectionKeys,
    mode: HeaderMode,
    response_auth: u8,
    option: u8,
    out: &mut Vec<u8>,
) {
    let plain = [response_auth, option, 0, 0];
    match mode {
        HeaderMode::Aead => {
            let length_cipher =
                AeadCipher::aes_128_gcm(&crypto::kdf16(&keys.key, &[RESPONSE_LENGTH_KEY_LABEL]));
            let length_nonce = crypto::kdf12(&keys.iv, &[RESPONSE_LENGTH_NONCE_LABEL]);
            let mut length = (plain.len() as u16).to_be_bytes();
            let tag = length_cipher.seal_in_place(length_nonce, &[], &mut length);
            out.extend_from_slice(&length);
            out.extend_from_slice(&tag);
            let payload_cipher =
                AeadCipher::aes_128_gcm(&crypto::kdf16(&keys.key, &[RESPONSE_PAYLOAD_KEY_LABEL]));
            let payload_nonce = crypto::kdf12(&keys.iv, &[RESPONSE_PAYLOAD_NONCE_LABEL]);
            let mut payload = plain;
            let tag = payload_cipher.seal_in_place(payload_nonce, &[], &mut payload);
            out.extend_from_slice(&payload);
            out.extend_from_slice(&tag);
        }
        HeaderMode::Legacy => {
            let mut payload = plain;
            Cfb128::new(&keys.key, &keys.iv).encrypt(&mut payload);
            out.extend_from_slice(&payload);
        }
    }
}

/// Reads a response header on the client side.
pub struct ResponseDecoder {
    keys: DirectionKeys,
    mode: HeaderMode,
    expected_auth: u8,
    /// AEAD: the opened plaintext length, once the sealed length was read.
    payload_len: Option<u16>,
    /// The response's option byte, once decoded.
    option: u8,
}

impl ResponseDecoder {
    pub fn new(keys: DirectionKeys, mode: HeaderMode, expected_auth: u8) -> ResponseDecoder {
        ResponseDecoder {
            keys,
            mode,
            expected_auth,
            payload_len: None,
            option: 0,
        }
    }

    /// The option byte of the decoded response (0 before it is decoded).
    pub fn option(&self) -> u8 {
        self.option
    }

    /// Decodes the response header at the start of `data`; returns how many
    /// bytes it took, or `None` for more. Commands (SwitchAccount) are
    /// skipped, as a reimplementation may.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        match self.mode {
            HeaderMode::Aead => self.decode_aead(data),
            HeaderMode::Legacy => self.decode_legacy(data),
        }
    }

    fn decode_aead(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        let payload_len = match self.payload_len {
            Some(len) => len,
            None => {
                let Some(sealed) = data.get(..SEALED_LENGTH_LEN) else {
                    return Ok(None);
                };
                let cipher = AeadCipher::aes_128_gcm(&crypto::kdf16(
                    &self.keys.key,
                    &[RESPONSE_LENGTH_KEY_LABEL],
                ));
                let nonce = crypto::kdf12(&self.keys.iv, &[RESPONSE_LENGTH_NONCE_LABEL]);
                let mut length = [0u8; SEALED_LENGTH_LEN];
                length.copy_from_slice(sealed);
                cipher
                    .open_in_place(nonce, &[], &mut length)
                    .map_err(|_| VmessError::ResponseUnauthentic)?;
                let len = u16::from_be_bytes([length[0], length[1]]);
                // V, option, command, command length, then up to 255 bytes.
                if !(4..=4 + 255).contains(&len) {
                    return Err(VmessError::ResponseLength(len));
                }
                self.payload_len = Some(len);
                len
            }
        };
        let total = SEALED_LENGTH_LEN + payload_len as usize + TAG_LEN;
        let Some(sealed) = data.get(SEALED_LENGTH_LEN..total) else {
            return Ok(None);
        };
        let cipher = AeadCipher::aes_128_gcm(&crypto::kdf16(
            &self.keys.key,
            &[RESPONSE_PAYLOAD_KEY_LABEL],
        ));
        let nonce = crypto::kdf12(&self.keys.iv, &[RESPONSE_PAYLOAD_NONCE_LABEL]);
        let mut plain = [0u8; 4 + 255 + TAG_LEN];
        let plain = &mut plain[..sealed.len()];
        plain.copy_from_slice(sealed);
        cipher
            .open_in_place(nonce, &[], plain)
            .map_err(|_| VmessError::ResponseUnauthentic)?;
        self.check_auth(plain[0])?;
        self.option = plain[1];
        Ok(Some(total))
    }

    fn decode_legacy(&mut self, data: &[u8]) -> Result<Option<usize>, VmessError> {
        let Some(head) = data.get(..4) else {
            return Ok(None);
        };
        let mut plain = [0u8; 4];
        plain.copy_from_slice(head);
        Cfb128::new(&self.keys.key, &self.keys.iv).decrypt(&mut plain);
        self.check_auth(plain[0])?;
        self.option = plain[1];
        // Command bytes follow when a command is present; they only need
        // to be skipped (the body does not continue this CFB stream for
        // the AEAD body ciphers).
        let total = if plain[2] != 0 {
            4 + plain[3] as usize
        } else {
            4
        };
        if data.len() < total {
            return Ok(None);
        }
        Ok(Some(total))
    }

    fn check_auth(&self, found: u8) -> Result<(), VmessError> {
        if found != self.expected_auth {
            return Err(VmessError::ResponseAuthMismatch {
                expected: self.expected_auth,
                found,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn spec_user() -> UserId {
        UserId::parse("27848739-7e62-4138-9fd3-098a63964b6b").unwrap()
    }

    fn spec_header() -> RequestHeader {
        RequestHeader {
            version: 1,
            body_iv: std::array::from_fn(|i| i as u8),
            body_key: std::array::from_fn(|i| 0x10 + i as u8),
            response_auth: 0x42,
            options: Options(0x0d),
            padding_len: 0,
            security: BodySecurity::Aes128Gcm,
            command: Command::Tcp,
            destination: Destination::tcp(Address::Domain("www.v2ray.com".into()), 443),
        }
    }

    const SPEC_PLAIN: &str = "01000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f420d03000101bb020d7777772e76327261792e636f6d5c81b8e2";
    const SPEC_SEALED: &str = "6868c12572a3ce177baac5f08cc54ec34fc5a085864f4fe955c9b3bcf0e9187f4a86a0a1a2a3a4a5a6a7cc17d05e6998c430cb3239bb14b6b7efdfe28993f18530c61f2c862463f8b5822203dd586ee7a2e28dcfebbda874a828f181f68583a673a28ad96dcfb0b273eaa91b341da38d9ff3958cda";

    #[test]
    fn auth_id_matches_spec() {
        let key = auth_id_key(&spec_user().cmd_key());
        let cipher = AuthIdCipher::new(&key);
        let auth_id = create_auth_id(&cipher, 1_700_000_000, [1, 2, 3, 4]);
        assert_eq!(hex(&auth_id), "6868c12572a3ce177baac5f08cc54ec3");
        assert_eq!(
            hex(&cipher.decrypt(&auth_id)),
            "000000006553f10001020304b85575f7"
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 + 120),
            AuthIdCheck::Fresh
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 - 120),
            AuthIdCheck::Fresh
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 + 121),
            AuthIdCheck::Stale(-121)
        );
        let other = AuthIdCipher::new(&auth_id_key(
            &UserId::parse("b831381d-6324-4d53-ad4f-8cda48b30811")
                .unwrap()
                .cmd_key(),
        ));
        assert_eq!(
            check_auth_id(&other, &auth_id, 1_700_000_000),
            AuthIdCheck::NotMine
        );
    }

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
    fn sealed_request_matches_spec() {
        let user = spec_user();
        let auth_id: [u8; 16] = unhex("6868c12572a3ce177baac5f08cc54ec3")
            .try_into()
            .unwrap();
        let nonce: [u8; 8] = unhex("a0a1a2a3a4a5a6a7").try_into().unwrap();
        let mut out = Vec::new();
        seal_aead_request(
            &user.cmd_key(),
            &auth_id,
            &nonce,
            &unhex(SPEC_PLAIN),
            &mut out,
        );
        assert_eq!(hex(&out), SPEC_SEALED);
        let (plain, used) = open_aead_request(&user.cmd_key(), &auth_id, &out[16..])
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len() - 16);
        assert_eq!(hex(&plain), SPEC_PLAIN);
        for cut in 16..out.len() {
            assert_eq!(
                open_aead_request(&user.cmd_key(), &auth_id, &out[16..cut]),
                Ok(None)
            );
        }
        let mut flipped = out.clone();
        flipped[60] ^= 0x01;
        assert_eq!(
            open_aead_request(&user.cmd_key(), &auth_id, &flipped[16..]),
            Err(HandshakeError::HeaderUnauthentic)
        );
    }

    #[test]
    fn response_header_matches_spec() {
        let header = spec_header();
        let aead_keys = DirectionKeys::response(&header, HeaderMode::Aead);
        assert_eq!(hex(&aead_keys.key), "fc2e2c73072bfa2bda03ff9307472deb");
        assert_eq!(hex(&aead_keys.iv), "be45cb2605bf36bebde684841a28f0fd");
        let legacy_keys = DirectionKeys::response(&header, HeaderMode::Legacy);
        assert_eq!(hex(&legacy_keys.key), "1bf42e241816ba29ff5f307bb1bc1d16");
        assert_eq!(hex(&legacy_keys.iv), "1ac1ef01e96caf1be0d329331a4fc2a8");
        let mut sealed = Vec::new();
        seal_response(&aead_keys, HeaderMode::Aead, 0x42, 0, &mut sealed);
        assert_eq!(
            hex(&sealed),
            "9bdfb1639712b6a6348d0087b8d1af379ecf70afb5ebb377066e79586918c758b5afc6888061"
        );
        for mode in [HeaderMode::Aead, HeaderMode::Legacy] {
            let keys = DirectionKeys::response(&header, mode);
            let mut sealed = Vec::new();
            seal_response(&keys, mode, 0x42, 0, &mut sealed);
            sealed.extend_from_slice(b"body");
            let mut decoder = ResponseDecoder::new(keys, mode, 0x42);
            for cut in 0..sealed.len() - 4 {
                assert_eq!(decoder.decode(&sealed[..cut]).unwrap(), None);
            }
            assert_eq!(decoder.decode(&sealed).unwrap(), Some(sealed.len() - 4));
            let mut wrong = ResponseDecoder::new(keys, mode, 0x43);
            assert!(wrong.decode(&sealed).is_err());
        }
    }

    #[test]
    fn legacy_values_match_spec() {
        let user = spec_user();
        assert_eq!(
            hex(&legacy_auth(&user, 1_700_000_000)),
            "a965548db6bc114289eecbc893ca0c6f"
        );
        assert_eq!(
            hex(&legacy_header_iv(1_700_000_000)),
            "7a29d7bdc972aaefb1f54e5205589e78"
        );
        let mut out = Vec::new();
        seal_legacy_request(
            &user.alter_ids(1)[0],
            &user.cmd_key(),
            1_700_000_000,
            &unhex(SPEC_PLAIN),
            &mut out,
        );
        let (header, used) = open_legacy_request(&user.cmd_key(), 1_700_000_000, &out[16..])
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len() - 16);
        assert_eq!(header, spec_header());
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
    fn security_names_follow_434() {
        assert_eq!(Security::from_name("AES-128-GCM"), Security::Aes128Gcm);
        assert_eq!(Security::from_name("none"), Security::None);
        assert_eq!(Security::from_name("zero"), Security::Auto);
        assert_eq!(Security::from_name("aes-128-cfb"), Security::Auto);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Security::Auto.resolve(), BodySecurity::Aes128Gcm);
        assert_eq!(
            BodySecurity::None.client_options(),
            Options(Options::CHUNK_STREAM | Options::CHUNK_MASKING)
        );
        assert_eq!(BodySecurity::Aes128Gcm.client_options(), Options(0x0d));
    }
}
