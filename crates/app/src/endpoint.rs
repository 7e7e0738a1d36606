//! The observability endpoint: the status page (`/`), `/metrics`
//! (Prometheus text), `/status` (JSON) and the health checks `/live` and
//! `/ready` (200 or 503 with the reasons) over HTTP/1.1 (hyper), on the
//! address of `rayback.metrics` or `--metrics`. `HEAD` works on each
//! (hyper sends the head only).
//!
//! The status page is one self-contained HTML file (`status_page.html`,
//! inline CSS and script, nothing loaded from elsewhere) built into the
//! binary. Its script polls `/status` every second and draws the tunnels,
//! sessions, bytes, a throughput chart and the handshake failures.
//!
//! With `rayback.metricsAuth` (or `--metrics-auth`) set, everything but
//! `/live` and `/ready` asks for HTTP basic auth (401 with
//! `WWW-Authenticate: Basic realm="rayback"`); the health checks stay open
//! for load balancers. The credentials are compared in constant time.
//! Basic auth sends the password in the clear: off loopback, put the
//! listener behind TLS, an SSH tunnel or a firewall as well.
//!
//! It reads a [`Published`] snapshot of the running parts, which a reload
//! replaces, so the endpoint survives reloads (and a reload's new
//! `metricsAuth` applies to the next request).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rayback_config::MetricsAuth;
use rayback_reverse::{Bridge, Portal};
use rayback_vmess::VmessMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{prometheus, ready_text, status_json, Metrics, Sources};

/// The status page, served at `/`.
pub const STATUS_PAGE: &str = include_str!("status_page.html");

/// The page loads nothing from elsewhere and may only fetch from here.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The parts a scrape reads.
#[derive(Clone, Default)]
pub struct Published {
    pub metrics: Arc<Metrics>,
    pub vmess: Arc<VmessMetrics>,
    pub bridges: Vec<Arc<Bridge>>,
    pub portals: Vec<Arc<Portal>>,
    /// `rayback.metricsAuth`: when set, every path but `/live` and
    /// `/ready` needs these credentials.
    pub auth: Option<MetricsAuth>,
}

/// What one request is answered with, before it becomes a response.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type,
            body: body.into(),
        }
    }
}

impl Published {
    /// The snapshot as what a scrape reads.
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            metrics: &self.metrics,
            bridges: &self.bridges,
            portals: &self.portals,
            vmess: &self.vmess,
        }
    }

    /// The answer to `path` for a request whose `Authorization` header is
    /// `authorization`.
    fn answer(&self, path: &str, authorization: Option<&HeaderValue>) -> Answer {
        let plain = "text/plain; charset=utf-8";
        let open = matches!(path, "/live" | "/ready");
        if !open {
            if let Some(auth) = &self.auth {
                if !authorized(auth, authorization) {
                    return Answer::new(
                        StatusCode::UNAUTHORIZED,
                        plain,
                        Bytes::from_static(b"authorization required\n"),
                    );
                }
            }
        }
        let sources = self.sources();
        match path {
            "/" => Answer::new(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(STATUS_PAGE.as_bytes()),
            ),
            "/metrics" => Answer::new(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                prometheus(&sources),
            ),
            "/status" => Answer::new(
                StatusCode::OK,
                "application/json",
                status_json(&sources).to_string(),
            ),
            "/live" => Answer::new(StatusCode::OK, plain, Bytes::from_static(b"live\n")),
            "/ready" => {
                let (ready, body) = ready_text(&sources);
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Answer::new(status, plain, body)
            }
            _ => Answer::new(
                StatusCode::NOT_FOUND,
                plain,
                Bytes::from_static(b"try /, /metrics, /status, /live or /ready\n"),
            ),
        }
    }
}

/// The HTTP response for `answer`.
fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(answer.status)
        .header("content-type", answer.content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff");
    if answer.status == StatusCode::UNAUTHORIZED {
        response = response.header("www-authenticate", "Basic realm=\"rayback\"");
    }
    if answer.content_type.starts_with("text/html") {
        response = response
            .header("content-security-policy", PAGE_POLICY)
            .header("referrer-policy", "no-referrer");
    }
    response
        .body(Full::new(answer.body))
        .expect("static headers are valid")
}

/// Whether `header` (an `Authorization` value) carries `auth`'s user and
/// password as HTTP basic auth. The decoded credentials are compared in
/// constant time, so the time taken does not tell how much matched.
pub fn authorized(auth: &MetricsAuth, header: Option<&HeaderValue>) -> bool {
    let Some(value) = header.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(given) = rayback_handlers::http::codec::decode_base64(encoded.trim()) else {
        return false;
    };
    constant_time_eq(&given, auth.to_text().as_bytes())
}

/// `a == b`, looking at every byte of the longer one whatever differs.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() ^ b.len()) as u64;
    for index in 0..a.len().max(b.len()) {
        let x = a.get(index).copied().unwrap_or(0);
        let y = b.get(index).copied().unwrap_or(0);
        difference |= u64::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    published: Arc<RwLock<Published>>,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("rayback.metrics: listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let protected = if published.read().expect("not poisoned").auth.is_some() {
        " (basic auth)"
    } else {
        ""
    };
    tracing::info!(
        "status page on http://{bound}/{protected}; also /metrics, /status, /live and /ready"
    );
    if !bound.ip().is_loopback() && protected.is_empty() {
        tracing::warn!(
            "the status page and /metrics on {bound} are open to anyone who can reach it: \
             set rayback.metricsAuth (--metrics-auth) and/or keep it behind a firewall"
        );
    }
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let Ok((socket, _)) = accepted else {
                continue;
            };
            let published = published.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let snapshot = published.read().expect("not poisoned").clone();
                    let answer = snapshot.answer(
                        request.uri().path(),
                        request.headers().get(hyper::header::AUTHORIZATION),
                    );
                    async move { Ok::<_, Infallible>(respond(answer)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> MetricsAuth {
        "ops:pa:ss".parse().unwrap()
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn basic_auth_takes_the_right_credentials_only() {
        // "ops:pa:ss" in base64.
        let right = header("Basic b3BzOnBhOnNz");
        assert!(authorized(&auth(), Some(&right)));
        assert!(authorized(&auth(), Some(&header("basic   b3BzOnBhOnNz "))));
        for wrong in [
            "Basic b3BzOnBhOnN6",     // ops:pa:sz
            "Basic b3BzOnBhOnNzcw==", // ops:pa:sss
            "Basic b3BzOnBh",         // ops:pa
            "Basic b3Bz",             // ops
            "Basic ",
            "Basic !!!!",
            "Bearer b3BzOnBhOnNz",
            "b3BzOnBhOnNz",
            "",
        ] {
            assert!(!authorized(&auth(), Some(&header(wrong))), "{wrong:?}");
        }
        assert!(!authorized(&auth(), None));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        for (a, b) in [
            (&b""[..], &b""[..]),
            (b"a", b"a"),
            (b"a", b"b"),
            (b"ab", b"a"),
            (b"", b"a"),
            (b"secret", b"secret"),
        ] {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }

    fn status_of(published: &Published, path: &str, authorization: Option<&str>) -> StatusCode {
        let header = authorization.map(header);
        published.answer(path, header.as_ref()).status
    }

    #[test]
    fn auth_guards_everything_but_the_health_checks() {
        let open = Published::default();
        let guarded = Published {
            auth: Some(auth()),
            ..Published::default()
        };
        for path in ["/", "/status", "/metrics"] {
            assert_eq!(status_of(&open, path, None), StatusCode::OK, "{path}");
            assert_eq!(
                status_of(&guarded, path, None),
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
            assert_eq!(
                status_of(&guarded, path, Some("Basic b3BzOnBhOnN6")),
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
            assert_eq!(
                status_of(&guarded, path, Some("Basic b3BzOnBhOnNz")),
                StatusCode::OK,
                "{path}"
            );
        }
        for path in ["/live", "/ready"] {
            assert_eq!(status_of(&guarded, path, None), StatusCode::OK, "{path}");
        }
        let refused = respond(guarded.answer("/", None));
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Basic realm=\"rayback\""
        );
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = respond(Published::default().answer("/", None));
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(page.headers().contains_key("content-security-policy"));
        assert!(STATUS_PAGE.contains("name=\"viewport\""));
        // Nothing from elsewhere: no scheme-qualified or protocol-relative
        // URL in a src, href, url() or import.
        for needle in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "url(http",
            "url(//",
            "@import",
        ] {
            assert!(!STATUS_PAGE.contains(needle), "the page loads {needle}…");
        }
        assert!(
            STATUS_PAGE.contains("fetch('status'"),
            "the page polls /status"
        );
    }
}
