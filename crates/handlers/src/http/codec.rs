//! Sans-IO HTTP proxy request heads, as V2Ray 4.34's `proxy/http` server
//! reads them: parse a request head (httparse), find where it goes,
//! check `Proxy-Authorization: Basic`, and rewrite a plain request for
//! the origin server. No sockets, no tasks.
//!
//! | request | destination |
//! |---|---|
//! | `CONNECT host:port HTTP/1.1` | `host:port` |
//! | `GET http://host[:port]/path HTTP/1.1` | `host`, port 80 (443 for `https://`) |
//! | `GET /path` + `Host: host` | only with `allowTransparent`; else 400 |
//!
//! A plain request goes on in origin form (`GET /path HTTP/1.1`) with
//! `Host` set to the URL's host, without the hop-by-hop headers 4.34
//! drops (`Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`,
//! `TE`, `Trailers`, `Upgrade`, `Connection` and the headers it names),
//! with `Connection: close` added, as 4.34 sends it. Unlike 4.34,
//! `Transfer-Encoding` is kept: the body is passed on as received.

use rayback_core::{Address, Destination};

/// The most headers a request head may have.
pub const MAX_HEADERS: usize = 100;
/// The longest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// The reply to a CONNECT, as 4.34 sends it.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
/// The reply to missing or wrong credentials, as 4.34 sends it.
pub const PROXY_AUTH_REQUIRED: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\n\r\n";
/// The reply to a request that is not in absolute form (without
/// `allowTransparent`).
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\nProxy-Connection: close\r\n\r\n";

/// Why a request head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpProxyError {
    #[error("malformed http request: {0}")]
    Malformed(String),
    #[error("http request head longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("request target {0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("malformed proxy host {0:?}")]
    BadHost(String),
}

/// One parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// HTTP/1.`minor`.
    pub minor: u8,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    pub fn is_connect(&self) -> bool {
        self.method.eq_ignore_ascii_case("CONNECT")
    }

    /// Whether the client asked to keep the connection (`Proxy-Connection:
    /// keep-alive`), which 4.34 honours.
    pub fn wants_keep_alive(&self) -> bool {
        self.header("Proxy-Connection")
            .is_some_and(|value| value.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
    }
}

/// Parses a request head; `Ok(None)` until the blank line arrives.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let head = RequestHead {
                method: request.method.unwrap_or_default().to_owned(),
                target: request.path.unwrap_or_default().to_owned(),
                minor: request.version.unwrap_or(1),
                headers: request
                    .headers
                    .iter()
                    .map(|header| (header.name.to_owned(), header.value.to_vec()))
                    .collect(),
            };
            Ok(Some((head, used)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpProxyError::TooLong),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(error) => Err(HttpProxyError::Malformed(error.to_string())),
    }
}

/// Where a request goes, and the origin-form path of a plain request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub destination: Destination,
    /// The `Host` the origin gets (`host[:port]` as written).
    pub host: String,
    /// Origin form (`/path?query`); `None` for CONNECT.
    pub path: Option<String>,
}

/// Finds where `head` goes.
pub fn target(head: &RequestHead, allow_transparent: bool) -> Result<Target, HttpProxyError> {
    if head.is_connect() {
        let destination = parse_host(&head.target, 443)?;
        return Ok(Target {
            destination,
            host: head.target.clone(),
            path: None,
        });
    }
    let lower = head.target.to_ascii_lowercase();
    let (scheme_len, default_port) = if lower.starts_with("http://") {
        (7, 80)
    } else if lower.starts_with("https://") {
        (8, 443)
    } else {
        if !allow_transparent {
            return Err(HttpProxyError::NotAbsolute(head.target.clone()));
        }
        let host = head
            .header("Host")
            .map(|value| String::from_utf8_lossy(value).trim().to_owned())
            .unwrap_or_default();
        let destination = parse_host(&host, 80)?;
        return Ok(Target {
            destination,
            host,
            path: Some(head.target.clone()),
        });
    };
    let rest = &head.target[scheme_len..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // Userinfo is not part of the host.
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let mut path = rest[authority_end..].to_owned();
    if let Some(fragment) = path.find('#') {
        path.truncate(fragment);
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let destination = parse_host(host, default_port)?;
    Ok(Target {
        destination,
        host: host.to_owned(),
        path: Some(path),
    })
}

/// `host[:port]` (IPv6 in brackets) with a default port, as 4.34's
/// `ParseHost`.
pub fn parse_host(text: &str, default_port: u16) -> Result<Destination, HttpProxyError> {
    let bad = || HttpProxyError::BadHost(text.to_owned());
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, default_port),
            _ => {
                let port = after.strip_prefix(':').ok_or_else(bad)?;
                (host, port.parse().map_err(|_| bad())?)
            }
        }
    } else {
        match text.rsplit_once(':') {
            Some((_, _)) if text.matches(':').count() > 1 => return Err(bad()),
            Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
            None => (text, default_port),
        }
    };
    if host.is_empty() || host.bytes().any(|byte| byte <= b' ' || byte == b'/') {
        return Err(bad());
    }
    let address = Address::parse(host).map_err(|_| bad())?;
    Ok(Destination::tcp(address, port))
}

/// The user and password of `Proxy-Authorization: Basic …`, if well
/// formed.
pub fn basic_credentials(head: &RequestHead) -> Option<(String, String)> {
    let value = std::str::from_utf8(head.header("Proxy-Authorization")?).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding, as Go's `StdEncoding`.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|&&byte| byte == b'=').count();
        if padding > 2 || (padding > 0 && index + 1 != chunks) {
            return None;
        }
        let mut word = 0u32;
        for &byte in &chunk[..4 - padding] {
            word = (word << 6) | value(byte)?;
        }
        word <<= 6 * padding as u32;
        let decoded = word.to_be_bytes();
        out.extend_from_slice(&decoded[1..4 - padding]);
    }
    Some(out)
}

/// Headers 4.34 removes on the way through (`RemoveHopByHopHeaders`), in
/// lower case, besides those `Connection` names.
const HOP_BY_HOP: &[&str] = &[
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "upgrade",
    "connection",
];

/// Appends the headers that go on: not hop-by-hop, not named by
/// `Connection`, not in `also_dropped` (lower case).
fn append_kept_headers(headers: &[(String, Vec<u8>)], also_dropped: &[&str], out: &mut Vec<u8>) {
    let named_by_connection: Vec<String> = headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("Connection"))
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value)
                .split(',')
                .map(|name| name.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for (key, value) in headers {
        let lower = key.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || also_dropped.contains(&lower.as_str())
            || named_by_connection.contains(&lower)
        {
            continue;
        }
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// The head a plain request is sent on with: origin form, `Host`,
/// hop-by-hop headers dropped, `Connection: close`.
pub fn rewrite_plain(head: &RequestHead, target: &Target) -> Vec<u8> {
    let path = target.path.as_deref().unwrap_or("/");
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", head.method, path).as_bytes());
    out.extend_from_slice(format!("Host: {}\r\n", target.host).as_bytes());
    append_kept_headers(&head.headers, &["host"], &mut out);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// How a message body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Fixed(u64),
    /// `Transfer-Encoding: chunked`: passed on as received; the connection
    /// ends after it.
    Chunked,
    /// A response without a length: it ends when the origin closes.
    UntilClose,
}

fn content_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, HttpProxyError> {
    let mut found = None;
    for (key, value) in headers {
        if !key.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let text = std::str::from_utf8(value).unwrap_or_default().trim();
        let length: u64 = text
            .parse()
            .map_err(|_| HttpProxyError::Malformed(format!("bad Content-Length {text:?}")))?;
        if found.is_some_and(|earlier| earlier != length) {
            return Err(HttpProxyError::Malformed(
                "conflicting Content-Length".into(),
            ));
        }
        found = Some(length);
    }
    Ok(found)
}

fn is_chunked(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("Transfer-Encoding")
            && !value.trim_ascii().eq_ignore_ascii_case(b"identity")
    })
}

/// How a request's body ends (a request without a length has none).
pub fn request_body(head: &RequestHead) -> Result<BodyLength, HttpProxyError> {
    if is_chunked(&head.headers) {
        return Ok(BodyLength::Chunked);
    }
    Ok(match content_length(&head.headers)? {
        Some(0) | None => BodyLength::Empty,
        Some(length) => BodyLength::Fixed(length),
    })
}

/// One parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Parses a response head; `Ok(None)` until the blank line arrives.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let head = ResponseHead {
                code: response.code.unwrap_or_default(),
                reason: response.reason.unwrap_or_default().to_owned(),
                headers: response
                    .headers
                    .iter()
                    .map(|header| (header.name.to_owned(), header.value.to_vec()))
                    .collect(),
            };
            Ok(Some((head, used)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpProxyError::TooLong),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(error) => Err(HttpProxyError::Malformed(error.to_string())),
    }
}

/// Whether `head` is an interim answer (1xx other than 101), which a
/// final one follows. 4.34 would pass it on as the answer; Rayback waits
/// for the final one.
pub fn is_interim(head: &ResponseHead) -> bool {
    (100..200).contains(&head.code) && head.code != 101
}

/// How a response to a `method` request ends.
pub fn response_body(head: &ResponseHead, method: &str) -> Result<BodyLength, HttpProxyError> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.code)
        || head.code == 204
        || head.code == 304
    {
        return Ok(BodyLength::Empty);
    }
    if is_chunked(&head.headers) {
        return Ok(BodyLength::Chunked);
    }
    Ok(match content_length(&head.headers)? {
        Some(0) => BodyLength::Empty,
        Some(length) => BodyLength::Fixed(length),
        None => BodyLength::UntilClose,
    })
}

/// The response head the client gets, as 4.34 writes it: hop-by-hop
/// headers dropped; with a known length the connection may stay
/// (`Connection`/`Proxy-Connection: keep-alive`, `Keep-Alive:
/// timeout=4`), without one it ends (`Connection: close`).
pub fn rewrite_response(head: &ResponseHead, body: BodyLength) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", head.code, head.reason).as_bytes());
    // A chunked body is passed on as received, so its header stays.
    let mut transfer_encoding = Vec::new();
    if body == BodyLength::Chunked {
        transfer_encoding.extend(
            head.headers
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case("Transfer-Encoding"))
                .cloned(),
        );
    }
    append_kept_headers(
        &head.headers,
        &["transfer-encoding", "keep-alive"],
        &mut out,
    );
    append_kept_headers(&transfer_encoding, &[], &mut out);
    match body {
        BodyLength::Empty | BodyLength::Fixed(_) => out.extend_from_slice(
            b"Connection: keep-alive\r\nKeep-Alive: timeout=4\r\nProxy-Connection: keep-alive\r\n\r\n",
        ),
        BodyLength::Chunked | BodyLength::UntilClose => {
            out.extend_from_slice(b"Connection: close\r\n\r\n")
        }
    }
    out
}

/// What the client gets when the origin's answer does not parse.
pub const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nProxy-Connection: close\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::Network;

    fn head(text: &str) -> RequestHead {
        let (head, used) = parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(used, text.len());
        head
    }

    #[test]
    fn a_head_needs_its_blank_line() {
        let text = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        for end in 0..text.len() {
            assert_eq!(parse_head(&text[..end]), Ok(None), "prefix {end}");
        }
        assert!(parse_head(text).unwrap().is_some());
    }

    #[test]
    fn garbage_and_oversize_are_refused() {
        assert!(matches!(
            parse_head(b"\x05\x01\x00\r\n\r\n"),
            Err(HttpProxyError::Malformed(_))
        ));
        let mut long = b"GET http://a/ HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse_head(&long), Err(HttpProxyError::TooLong));
    }

    #[test]
    fn connect_targets_its_authority() {
        let head = head("CONNECT example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n");
        let target = target(&head, false).unwrap();
        assert_eq!(
            target.destination,
            Destination::tcp(Address::Domain("example.com".into()), 8443)
        );
        assert_eq!(target.path, None);
    }

    #[test]
    fn absolute_uris_give_host_port_and_origin_form() {
        let head = head("GET http://127.0.0.1:8080/a/b?c=d#frag HTTP/1.1\r\n\r\n");
        let target = target(&head, false).unwrap();
        assert_eq!(target.destination.to_string(), "tcp:127.0.0.1:8080");
        assert_eq!(target.destination.network, Network::Tcp);
        assert_eq!(target.path.as_deref(), Some("/a/b?c=d"));
        let head = self::head("GET https://[::1]?x HTTP/1.1\r\n\r\n");
        let target = self::target(&head, false).unwrap();
        assert_eq!(target.destination.port, 443);
        assert_eq!(target.path.as_deref(), Some("/?x"));
    }

    #[test]
    fn origin_form_needs_allow_transparent() {
        let head = head("GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(
            target(&head, false),
            Err(HttpProxyError::NotAbsolute("/x".into()))
        );
        let target = target(&head, true).unwrap();
        assert_eq!(target.destination.port, 80);
        assert_eq!(target.path.as_deref(), Some("/x"));
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in ["", "a:b", "a:1:2", "[::1", "a:99999"] {
            assert!(parse_host(host, 80).is_err(), "{host:?}");
        }
        assert_eq!(parse_host("[::1]:5", 80).unwrap().port, 5);
    }

    #[test]
    fn basic_credentials_are_decoded() {
        // "bob:s3:cret" in base64.
        let head =
            head("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic Ym9iOnMzOmNyZXQ=\r\n\r\n");
        assert_eq!(
            basic_credentials(&head),
            Some(("bob".into(), "s3:cret".into()))
        );
        let head = self::head("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic !!!!\r\n\r\n");
        assert_eq!(basic_credentials(&head), None);
        let head = self::head("GET http://a/ HTTP/1.1\r\n\r\n");
        assert_eq!(basic_credentials(&head), None);
        assert_eq!(decode_base64("YQ=="), Some(b"a".to_vec()));
        assert_eq!(decode_base64("YQ==YQ=="), None);
    }

    #[test]
    fn plain_requests_are_rewritten_for_the_origin() {
        let head = head(
            "POST http://example.com:81/p HTTP/1.1\r\nHost: wrong\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nConnection: X-Drop, keep-alive\r\nX-Drop: 1\r\nContent-Length: 2\r\nAccept: */*\r\n\r\n",
        );
        assert!(head.wants_keep_alive());
        let target = target(&head, false).unwrap();
        let rewritten = String::from_utf8(rewrite_plain(&head, &target)).unwrap();
        assert_eq!(
            rewritten,
            "POST /p HTTP/1.1\r\nHost: example.com:81\r\nContent-Length: 2\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn body_lengths() {
        let head = self::head("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(request_body(&head), Ok(BodyLength::Fixed(5)));
        let head = self::head("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(request_body(&head), Ok(BodyLength::Chunked));
        let head = self::head("GET http://a/ HTTP/1.1\r\n\r\n");
        assert_eq!(request_body(&head), Ok(BodyLength::Empty));
        let head = self::head("POST http://a/ HTTP/1.1\r\nContent-Length: x\r\n\r\n");
        assert!(request_body(&head).is_err());
        let head =
            self::head("POST http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(request_body(&head).is_err());
    }

    fn response(text: &str) -> ResponseHead {
        let (head, used) = parse_response_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(used, text.len());
        head
    }

    #[test]
    fn responses_and_their_bodies() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        for end in 0..text.len() {
            assert_eq!(parse_response_head(&text[..end]), Ok(None));
        }
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(response_body(&head, "GET"), Ok(BodyLength::Fixed(3)));
        assert_eq!(response_body(&head, "HEAD"), Ok(BodyLength::Empty));
        assert!(!is_interim(&head));
        assert!(is_interim(&response("HTTP/1.1 100 Continue\r\n\r\n")));
        assert!(!is_interim(&response(
            "HTTP/1.1 101 Switching Protocols\r\n\r\n"
        )));
        let head = response("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(response_body(&head, "GET"), Ok(BodyLength::Empty));
        let head = response("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(response_body(&head, "GET"), Ok(BodyLength::UntilClose));
        let head = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(response_body(&head, "GET"), Ok(BodyLength::Chunked));
        assert!(parse_response_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn responses_are_rewritten_as_4_34_writes_them() {
        let head = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\nServer: s\r\n\r\n",
        );
        let text = String::from_utf8(rewrite_response(&head, BodyLength::Fixed(3))).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: s\r\nConnection: keep-alive\r\nKeep-Alive: timeout=4\r\nProxy-Connection: keep-alive\r\n\r\n"
        );
        let head = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let text = String::from_utf8(rewrite_response(&head, BodyLength::Chunked)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn canned_replies() {
        assert!(CONNECT_ESTABLISHED.starts_with(b"HTTP/1.1 200 Connection established"));
        assert!(parse_response_status(PROXY_AUTH_REQUIRED) == Some(407));
        assert!(parse_response_status(BAD_REQUEST) == Some(400));
        assert!(parse_response_status(SERVICE_UNAVAILABLE) == Some(503));
    }

    fn parse_response_status(bytes: &[u8]) -> Option<u16> {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        response.parse(bytes).ok()?;
        response.code
    }
}
