//! Sniffing: naming the protocol of a TCP session from its first bytes,
//! and the domain it is for, as V2Ray 4.34's dispatcher does for an
//! inbound with `sniffing` enabled.
//!
//! Sans-IO: the caller reads, appends to one buffer and asks again; each
//! sniffer answers "need more" (`Ok(None)`), "not this protocol"
//! ([`NotThisProtocol`]) or a [`Sniffed`] result. [`Sniffer`] runs the three
//! of 4.34 in its order (HTTP, TLS, BitTorrent) and forgets those that said
//! no, as 4.34's does.
//!
//! | protocol   | first bytes                                   | domain                         |
//! |------------|-----------------------------------------------|--------------------------------|
//! | `http1`    | a method: GET POST HEAD PUT DELETE OPTIONS CONNECT (any case) | `Host`, port stripped, lowercased |
//! | `tls`      | record `16 03 xx`, a ClientHello inside the first record | `server_name` (type 0), as sent |
//! | `bittorrent` | `13` "BitTorrent protocol"                  | none                           |
//!
//! The TLS ClientHello as read here (one record; a hello split across
//! records is not sniffed, as in 4.34):
//!
//! | bytes | field                                                  |
//! |-------|--------------------------------------------------------|
//! | 1     | record type `0x16` (handshake)                         |
//! | 2     | record version, major `3`                              |
//! | 2     | record length                                          |
//! | 1     | handshake type `0x01` (client_hello)                   |
//! | 3     | handshake length                                       |
//! | 2+32  | client version, random                                 |
//! | 1+n   | session id (n ≤ 32)                                    |
//! | 2+n   | cipher suites (n even)                                 |
//! | 1+n   | compression methods                                    |
//! | 2+n   | extensions, exactly to the record's end; `server_name` (0) holds a list of (type, 2-byte length, name) |
//!
//! Where this differs from 4.34, it is stricter, never looser: HTTP
//! headers are read only to the empty line and only whole lines count (4.34
//! also reads a `Host:` line in a body or cut mid-name); a handshake that is
//! not a ClientHello is not TLS; a host or server name that is not UTF-8 or
//! not a valid address is no result.

use rayback_core::Address;

/// How many bytes the dispatcher reads at most while sniffing: 4.34's one
/// buffer (2048 bytes). A ClientHello larger than one buffer is not
/// sniffed, as in 4.34.
pub const SNIFF_BUFFER: usize = 2048;

/// What the first bytes of a session were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sniffed {
    /// V2Ray's name for the protocol: "http1", "tls" or "bittorrent".
    /// Routing's `protocol` condition and `destOverride` match it by prefix.
    pub protocol: &'static str,
    /// The address the session is for (the HTTP `Host`, the TLS server
    /// name); `None` for BitTorrent.
    pub address: Option<Address>,
}

/// The bytes are not this sniffer's protocol (or are malformed for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not {0}")]
pub struct NotThisProtocol(pub &'static str);

/// Every sniffer ruled the bytes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown content")]
pub struct UnknownContent;

type SniffFn = fn(&[u8]) -> Result<Option<Sniffed>, NotThisProtocol>;

/// The sniffers still in the running for one session.
#[derive(Clone, Debug)]
pub struct Sniffer {
    pending: Vec<SniffFn>,
}

impl Default for Sniffer {
    fn default() -> Sniffer {
        Sniffer::new()
    }
}

impl Sniffer {
    pub fn new() -> Sniffer {
        Sniffer {
            pending: vec![sniff_http, sniff_tls, sniff_bittorrent],
        }
    }

    /// Sniffs `bytes`, everything read so far. `Ok(None)`: some sniffer
    /// needs more bytes; ask again with more. A sniffer that said no is
    /// not asked again.
    pub fn sniff(&mut self, bytes: &[u8]) -> Result<Option<Sniffed>, UnknownContent> {
        let mut still_pending = Vec::with_capacity(self.pending.len());
        for sniffer in &self.pending {
            match sniffer(bytes) {
                Ok(Some(sniffed)) => return Ok(Some(sniffed)),
                Ok(None) => still_pending.push(*sniffer),
                Err(NotThisProtocol(_)) => {}
            }
        }
        self.pending = still_pending;
        if self.pending.is_empty() {
            Err(UnknownContent)
        } else {
            Ok(None)
        }
    }
}

const HTTP_METHODS: [&str; 7] = ["get", "post", "head", "put", "delete", "options", "connect"];

/// HTTP/1: a known method, then the `Host` header. `Ok(None)` until the
/// bytes could still be a method, and until a `Host` line is whole.
pub fn sniff_http(bytes: &[u8]) -> Result<Option<Sniffed>, NotThisProtocol> {
    const NOT: NotThisProtocol = NotThisProtocol("http");
    // 4.34's order: a shorter input than the next method is "need more",
    // even when an earlier, shorter method already failed to match.
    let mut is_method = false;
    for method in HTTP_METHODS {
        if bytes.len() >= method.len()
            && bytes[..method.len()].eq_ignore_ascii_case(method.as_bytes())
        {
            is_method = true;
            break;
        }
        if bytes.len() < method.len() {
            return Ok(None);
        }
    }
    if !is_method {
        return Err(NOT);
    }

    // Whole lines only (those a '\n' ends); the request line is skipped.
    let Some(last_newline) = bytes.iter().rposition(|&byte| byte == b'\n') else {
        return Ok(None);
    };
    let mut host = None;
    for line in bytes[..last_newline].split(|&byte| byte == b'\n').skip(1) {
        if line.is_empty() || line == b"\r" {
            // The end of the head.
            return match host {
                Some(address) => Ok(Some(http_result(address))),
                None => Err(NOT),
            };
        }
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"host") {
            continue;
        }
        let value = std::str::from_utf8(&line[colon + 1..]).map_err(|_| NOT)?;
        let value = value.trim().to_ascii_lowercase();
        // An empty Host is no host, as in 4.34; a later Host line wins.
        if let Some(address) = parse_host(&value).ok_or(NOT)? {
            host = Some(address);
        }
    }
    Ok(host.map(http_result))
}

fn http_result(address: Address) -> Sniffed {
    Sniffed {
        protocol: "http1",
        address: Some(address),
    }
}

/// The address in a `Host` value, as Go's `net.SplitHostPort` and V2Ray's
/// `ParseHost` read it: the port is stripped (and must be a number when
/// present), `[v6]` unbracketed. `Ok(None)` for an empty host; `None`
/// (outer) when the value is malformed.
fn parse_host(value: &str) -> Option<Option<Address>> {
    let host = match split_host_port(value) {
        SplitHost::NoPort => value,
        SplitHost::Split { host, port } => {
            if !port.is_empty() && parse_go_port(port).is_none() {
                return None;
            }
            host
        }
        SplitHost::Malformed => return None,
    };
    if host.is_empty() {
        return Some(None);
    }
    Address::parse(host).ok().map(Some)
}

enum SplitHost<'a> {
    NoPort,
    Split { host: &'a str, port: &'a str },
    Malformed,
}

/// Go's `net.SplitHostPort`, telling "missing port" (the whole value is
/// the host) apart from the other errors.
fn split_host_port(value: &str) -> SplitHost<'_> {
    let Some(last_colon) = value.rfind(':') else {
        return SplitHost::NoPort;
    };
    let host;
    let (mut from_open, mut from_close) = (0, 0);
    if value.starts_with('[') {
        let Some(end) = value.find(']') else {
            return SplitHost::Malformed;
        };
        if end + 1 == value.len() {
            return SplitHost::NoPort;
        }
        if end + 1 != last_colon {
            return if value.as_bytes()[end + 1] == b':' {
                SplitHost::Malformed
            } else {
                SplitHost::NoPort
            };
        }
        host = &value[1..end];
        (from_open, from_close) = (1, end + 1);
    } else {
        host = &value[..last_colon];
        if host.contains(':') {
            return SplitHost::Malformed;
        }
    }
    if value[from_open..].contains('[') || value[from_close..].contains(']') {
        return SplitHost::Malformed;
    }
    SplitHost::Split {
        host,
        port: &value[last_colon + 1..],
    }
}

/// A port as Go's `strconv.ParseUint(text, 0, 16)` reads it: decimal,
/// `0x`/`0o`/`0b` prefixes or a leading `0` for octal.
fn parse_go_port(text: &str) -> Option<u16> {
    let lower = text.to_ascii_lowercase();
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u16::from_str_radix(digits, radix).ok()
}

/// A big-endian cursor that fails on every read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<usize> {
        let high = self.u8()?;
        let low = self.u8()?;
        Some(usize::from(high) << 8 | usize::from(low))
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }
}

const TLS_RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXTENSION_SERVER_NAME: usize = 0;
const NAME_TYPE_HOST: u8 = 0;

/// TLS: the server name of a ClientHello in the first record. `Ok(None)`
/// until that record is whole.
pub fn sniff_tls(bytes: &[u8]) -> Result<Option<Sniffed>, NotThisProtocol> {
    const NOT: NotThisProtocol = NotThisProtocol("tls");
    if bytes.len() < TLS_RECORD_HEADER {
        // 4.34 waits for five bytes before looking at the first.
        return Ok(None);
    }
    if bytes[0] != CONTENT_HANDSHAKE || bytes[1] != 3 {
        return Err(NOT);
    }
    let record_length = usize::from(bytes[3]) << 8 | usize::from(bytes[4]);
    let Some(record) = bytes.get(TLS_RECORD_HEADER..TLS_RECORD_HEADER + record_length) else {
        return Ok(None);
    };
    let name = client_hello_server_name(record).ok_or(NOT)?;
    let name = std::str::from_utf8(name).map_err(|_| NOT)?;
    // RFC 6066: no trailing dot; 4.34 refuses one.
    if name.is_empty() || name.ends_with('.') {
        return Err(NOT);
    }
    let address = Address::parse(name).map_err(|_| NOT)?;
    Ok(Some(Sniffed {
        protocol: "tls",
        address: Some(address),
    }))
}

/// The host name in a ClientHello handshake message (`record` is the
/// first record's body); `None` when it is malformed or has none.
fn client_hello_server_name(record: &[u8]) -> Option<&[u8]> {
    let mut reader = Reader { bytes: record };
    if reader.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let _handshake_length = reader.take(3)?;
    let _version_and_random = reader.take(2 + 32)?;
    let session_id_length = usize::from(reader.u8()?);
    if session_id_length > 32 {
        return None;
    }
    reader.take(session_id_length)?;
    let cipher_suites_length = reader.u16()?;
    if cipher_suites_length % 2 == 1 {
        return None;
    }
    reader.take(cipher_suites_length)?;
    let compression_length = usize::from(reader.u8()?);
    reader.take(compression_length)?;
    let extensions_length = reader.u16()?;
    if extensions_length != reader.bytes.len() {
        return None;
    }
    while !reader.bytes.is_empty() {
        let extension = reader.u16()?;
        let length = reader.u16()?;
        let body = reader.take(length)?;
        if extension != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut names = Reader { bytes: body };
        let list_length = names.u16()?;
        if list_length != names.bytes.len() {
            return None;
        }
        while !names.bytes.is_empty() {
            let name_type = names.u8()?;
            let name_length = names.u16()?;
            let name = names.take(name_length)?;
            if name_type == NAME_TYPE_HOST {
                return Some(name);
            }
        }
    }
    None
}

const BITTORRENT_HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";

/// BitTorrent's peer handshake; no domain.
pub fn sniff_bittorrent(bytes: &[u8]) -> Result<Option<Sniffed>, NotThisProtocol> {
    if bytes.len() < BITTORRENT_HANDSHAKE.len() {
        return Ok(None);
    }
    if bytes.starts_with(BITTORRENT_HANDSHAKE) {
        Ok(Some(Sniffed {
            protocol: "bittorrent",
            address: None,
        }))
    } else {
        Err(NotThisProtocol("bittorrent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> Option<Address> {
        Some(Address::Domain(name.to_owned()))
    }

    fn http(host: Option<Address>) -> Result<Option<Sniffed>, NotThisProtocol> {
        Ok(Some(Sniffed {
            protocol: "http1",
            address: host,
        }))
    }

    #[test]
    fn http_host_is_lowercased_without_port() {
        let request = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: WWW.Example.COM:8080\r\n\r\n";
        assert_eq!(sniff_http(request), http(domain("www.example.com")));
        let request = b"post /x HTTP/1.1\r\nhost:a.example\r\n\r\nbody";
        assert_eq!(sniff_http(request), http(domain("a.example")));
    }

    #[test]
    fn http_host_ip_literals_become_ips() {
        let request = b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n";
        assert_eq!(
            sniff_http(request),
            http(Some(Address::parse("::1").unwrap()))
        );
        let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        assert_eq!(
            sniff_http(request),
            http(Some(Address::parse("127.0.0.1").unwrap()))
        );
    }

    #[test]
    fn http_methods_and_need_more() {
        // Shorter than the next method in 4.34's order: need more.
        assert_eq!(sniff_http(b""), Ok(None));
        assert_eq!(sniff_http(b"P"), Ok(None));
        assert_eq!(sniff_http(b"XXXX"), Ok(None));
        assert_eq!(sniff_http(b"XXXXXXX"), Err(NotThisProtocol("http")));
        assert_eq!(
            sniff_http(b"\x16\x03\x01\x02\x00\x01\x00"),
            Err(NotThisProtocol("http"))
        );
        // A method, but no Host yet.
        assert_eq!(sniff_http(b"GET / HTTP/1.1\r\n"), Ok(None));
        // A Host line cut short is not read.
        assert_eq!(sniff_http(b"GET / HTTP/1.1\r\nHost: exam"), Ok(None));
        assert_eq!(
            sniff_http(b"GET / HTTP/1.1\r\nHost: example.com\r\n"),
            http(domain("example.com"))
        );
        for method in [
            "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "connect",
        ] {
            let request = format!("{method} / HTTP/1.1\r\nHost: m.example\r\n\r\n");
            assert_eq!(
                sniff_http(request.as_bytes()),
                http(domain("m.example")),
                "{method}"
            );
        }
    }

    #[test]
    fn http_without_host_or_with_bad_host_is_not_http() {
        assert_eq!(
            sniff_http(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"),
            Err(NotThisProtocol("http"))
        );
        assert_eq!(
            sniff_http(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            Err(NotThisProtocol("http"))
        );
        for bad in [
            "a:b:c",
            "a.example:http",
            "[::1",
            "a.example:99999",
            "x]:80",
        ] {
            let request = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(
                sniff_http(request.as_bytes()),
                Err(NotThisProtocol("http")),
                "{bad}"
            );
        }
        // Go's port syntax: hex is a port.
        assert_eq!(
            sniff_http(b"GET / HTTP/1.1\r\nHost: h.example:0x50\r\n\r\n"),
            http(domain("h.example"))
        );
        // The body is not read; a name with spaces around the colon is not Host.
        assert_eq!(
            sniff_http(b"GET / HTTP/1.1\r\nHost : a\r\n\r\nHost: b\r\n"),
            Err(NotThisProtocol("http"))
        );
    }

    /// A ClientHello record built field by field.
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([9u8; 32]);
        body.extend([0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
        body.extend([0x01, 0x00]);
        let mut extension_bytes = Vec::new();
        for (kind, data) in extensions {
            extension_bytes.extend(kind.to_be_bytes());
            extension_bytes.extend((data.len() as u16).to_be_bytes());
            extension_bytes.extend(data);
        }
        body.extend((extension_bytes.len() as u16).to_be_bytes());
        body.extend(extension_bytes);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    fn server_name(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(*name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        data
    }

    fn tls(name: &str) -> Result<Option<Sniffed>, NotThisProtocol> {
        Ok(Some(Sniffed {
            protocol: "tls",
            address: domain(name),
        }))
    }

    #[test]
    fn tls_server_name_is_found_among_extensions() {
        let hello = client_hello(&[
            (0x000a, vec![0, 2, 0, 0x1d]),
            (0x0000, server_name(&[(0, b"B.Example")])),
            (0x002b, vec![2, 3, 4]),
        ]);
        // The case is kept, as in 4.34.
        assert_eq!(sniff_tls(&hello), tls("B.Example"));
        // Trailing bytes after the first record do not matter.
        let mut more = hello.clone();
        more.extend(b"next record");
        assert_eq!(sniff_tls(&more), tls("B.Example"));
    }

    #[test]
    fn tls_every_truncation_needs_more() {
        let hello = client_hello(&[(0x0000, server_name(&[(0, b"a.example")]))]);
        for end in 0..hello.len() {
            assert_eq!(sniff_tls(&hello[..end]), Ok(None), "cut at {end}");
        }
        assert_eq!(sniff_tls(&hello), tls("a.example"));
    }

    #[test]
    fn tls_malformed_hellos_are_not_tls() {
        let not = Err(NotThisProtocol("tls"));
        // No server name at all, or only a non-host name type.
        assert_eq!(sniff_tls(&client_hello(&[(0x000a, vec![0, 0])])), not);
        assert_eq!(sniff_tls(&client_hello(&[])), not);
        assert_eq!(
            sniff_tls(&client_hello(&[(0, server_name(&[(1, b"x")]))])),
            not
        );
        assert_eq!(
            sniff_tls(&client_hello(&[(0, server_name(&[(0, b"dot.example.")]))])),
            not
        );
        assert_eq!(
            sniff_tls(&client_hello(&[(0, server_name(&[(0, b"")]))])),
            not
        );
        assert_eq!(
            sniff_tls(&client_hello(&[(0, server_name(&[(0, b"\xff\xfe")]))])),
            not
        );
        // Not a handshake record, not version 3, not a ClientHello.
        let good = client_hello(&[(0, server_name(&[(0, b"a.example")]))]);
        for (at, value) in [(0, 0x17), (1, 0x02), (5, 0x02)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(sniff_tls(&bad), not, "byte {at} = {value}");
        }
    }

    #[test]
    fn tls_lengths_that_lie_are_not_tls() {
        let good = client_hello(&[(0, server_name(&[(0, b"a.example")]))]);
        // Offsets in `good`: session id length at 43, cipher suites at 76.
        let not = Err(NotThisProtocol("tls"));
        for (at, value) in [
            (43, 33u8), // session id longer than 32
            (43, 0xff), // and past the record
            (77, 0x03), // odd cipher suite length
            (76, 0xff), // cipher suites past the record
            (82, 0xff), // compression methods past the record
            (85, 0x00), // extensions length too short
            (84, 0xff), // extensions length too long
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(sniff_tls(&bad), not, "byte {at} = {value:#x}");
        }
        // An extension or a name longer than what holds it.
        let mut names = server_name(&[(0, b"a.example")]);
        names[4] = 0xff;
        assert_eq!(sniff_tls(&client_hello(&[(0, names)])), not);
        let mut names = server_name(&[(0, b"a.example")]);
        names[1] += 1;
        assert_eq!(sniff_tls(&client_hello(&[(0, names)])), not);
        let mut bad = good.clone();
        let ext_len_at = 88;
        bad[ext_len_at] = 0xff;
        assert_eq!(sniff_tls(&bad), not);
    }

    #[test]
    fn a_real_curl_client_hello() {
        // curl 7.88 (OpenSSL 3.0) to https://curl.example:PORT/, captured
        // on loopback; also a fuzz corpus seed.
        let hello = include_bytes!("../../../fuzz/corpus/sniff/curl-client-hello");
        assert_eq!(sniff_tls(hello), tls("curl.example"));
        assert_eq!(
            Sniffer::new().sniff(hello),
            tls("curl.example").map_err(|_| UnknownContent)
        );
    }

    #[test]
    fn bittorrent_handshake() {
        let mut handshake = BITTORRENT_HANDSHAKE.to_vec();
        assert_eq!(sniff_bittorrent(&handshake[..19]), Ok(None));
        handshake.extend([0; 8]);
        assert_eq!(
            sniff_bittorrent(&handshake),
            Ok(Some(Sniffed {
                protocol: "bittorrent",
                address: None
            }))
        );
        assert_eq!(
            sniff_bittorrent(b"\x13BitTorrent protocoX"),
            Err(NotThisProtocol("bittorrent"))
        );
    }

    #[test]
    fn sniffer_forgets_sniffers_that_said_no() {
        let mut sniffer = Sniffer::new();
        // Could still be HTTP ("XXXX" is shorter than "delete") or BitTorrent.
        assert_eq!(sniffer.sniff(b"\x13BitT"), Ok(None));
        assert_eq!(sniffer.pending.len(), 2);
        assert_eq!(sniffer.sniff(b"\x13BitTorrent"), Ok(None));
        assert_eq!(sniffer.pending.len(), 1);
        assert_eq!(
            sniffer.sniff(b"\x13BitTorrent protocol"),
            Ok(Some(Sniffed {
                protocol: "bittorrent",
                address: None
            }))
        );
        let mut sniffer = Sniffer::new();
        assert_eq!(
            sniffer.sniff(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Err(UnknownContent)
        );
        let mut sniffer = Sniffer::new();
        let hello = client_hello(&[(0, server_name(&[(0, b"t.example")]))]);
        assert_eq!(sniffer.sniff(&hello[..3]), Ok(None));
        assert_eq!(
            sniffer.sniff(&hello),
            tls("t.example").map_err(|_| UnknownContent)
        );
    }

    #[test]
    fn byte_at_a_time_and_garbage_never_panic() {
        let hello = client_hello(&[(0, server_name(&[(0, b"a.example")]))]);
        let request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        for input in [hello, request] {
            let mut sniffer = Sniffer::new();
            let mut found = None;
            for end in 0..=input.len() {
                match sniffer.sniff(&input[..end]) {
                    Ok(Some(sniffed)) => {
                        found = Some(sniffed);
                        break;
                    }
                    Ok(None) => {}
                    Err(UnknownContent) => panic!("gave up at {end}"),
                }
            }
            assert_eq!(found.and_then(|s| s.address), domain("a.example"));
        }
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as usize
        };
        // A real hello with a few bytes changed: every length field lies
        // sooner or later.
        let real = include_bytes!("../../../fuzz/corpus/sniff/curl-client-hello");
        for _ in 0..20_000 {
            let mut bytes = real.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate(next() % (bytes.len() + 1));
            let _ = Sniffer::new().sniff(&bytes);
        }
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut bytes = vec![0x16, 0x03, 0x01];
            for _ in 0..(state % 300) {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                bytes.push((state >> 16) as u8);
            }
            let _ = Sniffer::new().sniff(&bytes);
            bytes[0] = b'G';
            let _ = Sniffer::new().sniff(&bytes);
        }
    }
}
