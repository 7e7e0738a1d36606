//! `streamSettings`: how a connection travels below its protocol, as V2Ray
//! 4.34 spells it (`infra/conf/transport_internet.go`). `config` fills
//! these values; the `transport` crate acts on them (dials, listens,
//! handshakes). Plain data: nothing here opens a file or a socket.
//!
//! | JSON | here |
//! |---|---|
//! | `network` `"tcp"` (default) / `"ws"` + `wsSettings` | [`TransportNetwork`] |
//! | `security` `"tls"` + `tlsSettings` | [`StreamSettings::tls`] |
//! | `tcpSettings.header` `type: "http"` | [`StreamSettings::http_disguise`] |
//! | `tcpSettings.acceptProxyProtocol`, `wsSettings.acceptProxyProtocol`, `sockopt.acceptProxyProtocol` | [`StreamSettings::accept_proxy_protocol`] |

use std::fmt;

/// One inbound's or outbound's `streamSettings`. The default is plain TCP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSettings {
    pub network: TransportNetwork,
    /// `Some` when `security` is `"tls"`.
    pub tls: Option<TlsSettings>,
    /// A listener reads a PROXY protocol header (v1 or v2) before anything
    /// else; the address in it becomes the connection's source. Ignored
    /// when dialling, as in V2Ray.
    pub accept_proxy_protocol: bool,
    /// `tcpSettings.header` with `type: "http"` (TCP only): the HTTP
    /// request and response heads each connection starts with.
    pub http_disguise: Option<HttpDisguise>,
}

impl StreamSettings {
    /// Plain TCP, no TLS, no PROXY protocol: what a missing
    /// `streamSettings` means.
    pub fn is_plain_tcp(&self) -> bool {
        *self == StreamSettings::default()
    }
}

/// `network`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TransportNetwork {
    #[default]
    Tcp,
    /// `"ws"` / `"websocket"`.
    WebSocket(WsSettings),
}

/// `wsSettings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsSettings {
    /// The request path, normalised as V2Ray does: `"/"` when empty, a
    /// leading `/` added when missing (`path`, or the old key `Path`).
    pub path: String,
    /// Request headers a client sends (`headers`), `Host` among them, in
    /// the order given.
    pub headers: Vec<(String, String)>,
}

impl Default for WsSettings {
    fn default() -> WsSettings {
        WsSettings {
            path: "/".to_owned(),
            headers: Vec::new(),
        }
    }
}

impl WsSettings {
    /// The `Host` header set in `headers`, if any (case-insensitive name).
    pub fn host(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.as_str())
    }
}

/// `tlsSettings` (with `security: "tls"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `serverName`: the name a client sends (SNI) and verifies; `None`
    /// means the dialled address.
    pub server_name: Option<String>,
    /// `alpn`; empty means V2Ray's default (`h2`, `http/1.1` on TCP;
    /// `http/1.1` on WebSocket).
    pub alpn: Vec<String>,
    /// `allowInsecure`: a client accepts any server certificate.
    pub allow_insecure: bool,
    /// `disableSystemRoot`: a client trusts only the listed certificates.
    pub disable_system_root: bool,
    /// `certificates` (usage `encipherment`): a server presents them; a
    /// client trusts them besides the system roots.
    pub certificates: Vec<TlsCertificate>,
}

/// One entry of `certificates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCertificate {
    /// The certificate chain, PEM.
    pub certificate: Pem,
    /// The private key, PEM (`None` when neither `keyFile` nor `key` is set).
    pub key: Option<Pem>,
}

/// PEM text and where it came from, so an error can name the place.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub text: String,
    /// The config path of the field, and the file when it came from one:
    /// `inbounds[0].streamSettings.tlsSettings.certificates[0].certificateFile
    /// (/etc/rayback/cert.pem)`, or `(inline)` for lines in the config.
    pub origin: String,
    /// The file as the config names it (`certificateFile`, `keyFile`), so
    /// the configuration can be written back naming the file rather than
    /// its contents; `None` for inline lines (`certificate`, `key`).
    pub file: Option<String>,
}

impl fmt::Debug for Pem {
    /// The origin only: a key's text must not reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("origin", &self.origin)
            .field("len", &self.text.len())
            .finish()
    }
}

/// `tcpSettings.header` with `type: "http"`: the heads a connection
/// pretends to be HTTP with. Defaults are V2Ray 4.34's
/// (`infra/conf/transport_authenticators.go`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpDisguise {
    pub request: HttpRequestHead,
    pub response: HttpResponseHead,
}

/// `header.request`: what a client sends first; a server accepts only
/// these paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequestHead {
    /// `version`, without `HTTP/` (default `1.1`).
    pub version: String,
    /// `method` (default `GET`).
    pub method: String,
    /// `path`: a client picks one at random; a server accepts any of them
    /// (default `["/"]`).
    pub paths: Vec<String>,
    /// `headers`: a client sends each name with one of its values, picked
    /// at random. Configured headers replace the defaults and are sorted
    /// by name, as V2Ray sorts them.
    pub headers: Vec<(String, Vec<String>)>,
}

/// `header.response`: what a server sends first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponseHead {
    /// `version`, without `HTTP/` (default `1.1`).
    pub version: String,
    /// `status` (default `200`).
    pub status: String,
    /// `reason` (default `OK`).
    pub reason: String,
    /// `headers`, as for the request (a `Date` is added unless named).
    pub headers: Vec<(String, Vec<String>)>,
}

fn header_list(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .map(|(name, values)| {
            (
                (*name).to_owned(),
                values.iter().map(|value| (*value).to_owned()).collect(),
            )
        })
        .collect()
}

impl Default for HttpRequestHead {
    fn default() -> HttpRequestHead {
        HttpRequestHead {
            version: "1.1".to_owned(),
            method: "GET".to_owned(),
            paths: vec!["/".to_owned()],
            headers: header_list(&[
                ("Host", &["www.baidu.com", "www.bing.com"]),
                (
                    "User-Agent",
                    &[
                        "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/53.0.2785.143 Safari/537.36",
                        "Mozilla/5.0 (iPhone; CPU iPhone OS 10_0_2 like Mac OS X) AppleWebKit/601.1 (KHTML, like Gecko) CriOS/53.0.2785.109 Mobile/14A456 Safari/601.1.46",
                    ],
                ),
                ("Accept-Encoding", &["gzip, deflate"]),
                ("Connection", &["keep-alive"]),
                ("Pragma", &["no-cache"]),
            ]),
        }
    }
}

impl Default for HttpResponseHead {
    fn default() -> HttpResponseHead {
        HttpResponseHead {
            version: "1.1".to_owned(),
            status: "200".to_owned(),
            reason: "OK".to_owned(),
            headers: header_list(&[
                ("Content-Type", &["application/octet-stream", "video/mpeg"]),
                ("Transfer-Encoding", &["chunked"]),
                ("Connection", &["keep-alive"]),
                ("Pragma", &["no-cache"]),
                ("Cache-Control", &["private", "no-cache"]),
            ]),
        }
    }
}
