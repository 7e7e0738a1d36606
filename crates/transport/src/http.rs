//! The TCP HTTP header disguise (`tcpSettings.header`, `type: "http"`), as
//! V2Ray 4.34 runs it (`transport/internet/headers/http`): before its
//! first byte a client sends an HTTP request head, before its first byte a
//! server sends a response head; each side reads the other's head and
//! throws it away. Nothing else changes: after the heads the bytes are the
//! protocol's.
//!
//! | side | sends | reads |
//! |---|---|---|
//! | client | `{method} {path} HTTP/{version}`, one value of each header picked at random, before its first write | the response head, up to the blank line, before its first read |
//! | server | `HTTP/{version} {status} {reason}`, headers, `Date` unless set, before its first write | the request head (up to 8 KiB): a path not listed gets `404`, a malformed head `400`, then the connection closes |
//!
//! Heads are parsed with httparse.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use rand::Rng;
use rayback_core::{HttpRequestHead, HttpResponseHead};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use rayback_core::ReadAhead;

/// Longest head read (V2Ray's `maxHeaderLength`).
const MAX_HEAD: usize = 8192;
const END: &[u8] = b"\r\n\r\n";

fn pick<'a>(values: &'a [String], rng: &mut impl Rng) -> &'a str {
    match values.len() {
        0 => "",
        n => &values[rng.gen_range(0..n)],
    }
}

fn put_headers(head: &mut String, headers: &[(String, Vec<String>)], rng: &mut impl Rng) {
    for (name, values) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(pick(values, rng));
        head.push_str("\r\n");
    }
}

/// The request head a client sends.
pub fn request_head(request: &HttpRequestHead) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut head = format!(
        "{} {} HTTP/{}\r\n",
        request.method,
        pick(&request.paths, &mut rng),
        request.version
    );
    put_headers(&mut head, &request.headers, &mut rng);
    head.push_str("\r\n");
    head.into_bytes()
}

/// The response head a server sends, with a `Date` unless one is set.
pub fn response_head(response: &HttpResponseHead) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut head = format!(
        "HTTP/{} {} {}\r\n",
        response.version, response.status, response.reason
    );
    put_headers(&mut head, &response.headers, &mut rng);
    if !response
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("date"))
    {
        head.push_str("Date: ");
        head.push_str(&http_date(SystemTime::now()));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// What a server answers a head it refuses with, before closing.
fn refusal(status: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nCache-Control: private\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `Mon, 07 Dec 2026 10:04:05 GMT` (RFC 7231's IMF-fixdate).
fn http_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (secs / 86_400) as i64;
    let (hour, minute, second) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
    )
}

/// A head being read: bytes collect until the blank line that ends it.
#[derive(Default)]
struct HeadScan {
    scanned: Vec<u8>,
}

impl HeadScan {
    /// Adds `bytes`; once the blank line has come, the head and what was
    /// read past it. An error past [`MAX_HEAD`] bytes or at EOF (`bytes`
    /// empty).
    fn feed(&mut self, bytes: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside the HTTP head",
            ));
        }
        let searched_from = self.scanned.len().saturating_sub(END.len() - 1);
        self.scanned.extend_from_slice(bytes);
        if let Some(at) = find(&self.scanned[searched_from..], END) {
            let mut head = std::mem::take(&mut self.scanned);
            let rest = head.split_off(searched_from + at + END.len());
            return Ok(Some((head, rest)));
        }
        if self.scanned.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("HTTP head longer than {MAX_HEAD} bytes"),
            ));
        }
        Ok(None)
    }
}

/// Reads up to and including the blank line that ends a head. Returns the
/// head and what was read past it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut scan = HeadScan::default();
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if let Some(found) = scan.feed(&chunk[..n])? {
            return Ok(found);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Server: reads the client's request head and checks its path against
/// `request.paths`. A refused head is answered (404 for a path not
/// listed, 400 otherwise) before the error returns. On success the stream
/// to use and the bytes read past the head.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &HttpRequestHead,
    response: &HttpResponseHead,
) -> io::Result<Disguised<S>> {
    let (head, rest) = match read_head(&mut stream).await {
        Ok(found) => found,
        Err(error) => {
            if error.kind() == io::ErrorKind::InvalidData {
                let _ = stream.write_all(&refusal("400 Bad Request")).await;
            }
            return Err(error);
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let path = match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => parsed.path.unwrap_or_default(),
        _ => {
            let _ = stream.write_all(&refusal("400 Bad Request")).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP request head",
            ));
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !request.paths.iter().any(|listed| listed == path) {
        let _ = stream.write_all(&refusal("404 Not Found")).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("HTTP disguise: path {path:?} is not one of the configured paths"),
        ));
    }
    Ok(Disguised {
        inner: stream,
        out: response_head(response),
        out_at: 0,
        skipping: None,
        read_ahead: ReadAhead::new(rest),
    })
}

/// Client: the stream that sends the request head before its first byte
/// and skips the response head before its first read.
pub fn connect<S>(stream: S, request: &HttpRequestHead) -> Disguised<S> {
    Disguised {
        inner: stream,
        out: request_head(request),
        out_at: 0,
        skipping: Some(HeadScan::default()),
        read_ahead: ReadAhead::default(),
    }
}

/// A stream behind the HTTP heads.
pub struct Disguised<S> {
    inner: S,
    /// Our head, sent before the first byte written.
    out: Vec<u8>,
    out_at: usize,
    /// Client: the server's head, while it is still being read (to be
    /// dropped).
    skipping: Option<HeadScan>,
    /// Bytes read past the peer's head, handed out first.
    read_ahead: ReadAhead,
}

impl<S: AsyncWrite + Unpin> Disguised<S> {
    /// Writes what is left of our head.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if !self.out.is_empty() {
            self.out = Vec::new();
            self.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Disguised<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while let Some(scan) = &mut this.skipping {
            let mut chunk = [0u8; 2048];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            if let Some((_head, rest)) = scan.feed(chunk_buf.filled())? {
                this.read_ahead = ReadAhead::new(rest);
                this.skipping = None;
            }
        }
        if this.read_ahead.read_into(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Disguised<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out_at < this.out.len() {
            // Head and first bytes in one write when the socket takes both.
            let rest = this.out.len() - this.out_at;
            let slices = [IoSlice::new(&this.out[this.out_at..]), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < rest {
                this.out_at += n;
                ready!(this.poll_head(cx))?;
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            this.out = Vec::new();
            this.out_at = 0;
            if n > rest {
                return Poll::Ready(Ok(n - rest));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_head(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_head(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_head(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_637_845);
        assert_eq!(http_date(at), "Mon, 07 Dec 2026 10:04:05 GMT");
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn heads_have_v2rays_shape() {
        let request = HttpRequestHead::default();
        let head = String::from_utf8(request_head(&request)).unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\nHost: www."), "{head}");
        assert!(head.ends_with("Pragma: no-cache\r\n\r\n"), "{head}");
        let response = HttpResponseHead::default();
        let head = String::from_utf8(response_head(&response)).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: "),
            "{head}"
        );
        assert!(head.contains("\r\nDate: "), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_client_and_a_server_carry_bytes_behind_the_heads() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let request = HttpRequestHead::default();
        let response = HttpResponseHead::default();
        let client_side = tokio::spawn(async move {
            let mut client = connect(client, &HttpRequestHead::default());
            client.write_all(b"ping").await.unwrap();
            client.flush().await.unwrap();
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).await.unwrap();
            answer
        });
        let mut server = accept(server, &request, &response).await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(&client_side.await.unwrap(), b"pong");
    }

    /// What a server answers `sent` before refusing it.
    async fn refusal_of(sent: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(sent).await.unwrap();
        let refused = accept(
            server,
            &HttpRequestHead::default(),
            &HttpResponseHead::default(),
        )
        .await;
        assert!(refused.is_err());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_path_not_listed_is_answered_404() {
        let answer = refusal_of(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }

    #[tokio::test]
    async fn garbage_is_answered_400() {
        let answer = refusal_of(&[0x16; 9000]).await;
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}
