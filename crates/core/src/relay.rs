//! Copying a session's bytes both ways under its policy's timeouts.
//!
//! [`relay`] is the default body of [`crate::Outbound::handle`] and the
//! hot path of every proxied connection, so it avoids per-read work: one
//! buffer per direction, borrowed from a small per-thread pool only while
//! bytes are in flight, so that thousands of idle connections hold no
//! buffers at all. A source that lends its own buffer of received bytes
//! ([`AsyncStream::buffered`]: a Mux.Cool sub-stream, whose buffer holds
//! slices of the opened VMess chunks) is written onward from there, with
//! no buffer of ours and no copy.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::policy::Policy;
use crate::stream::AsyncStream;

/// Bytes one direction buffer holds: large enough for bulk transfers to
/// move in few syscalls, and sized so that one read becomes one Mux.Cool
/// frame and one VMess chunk (at most 65535 bytes with its tag, length and
/// padding): a VMess connection may seal only 65536 chunks per direction,
/// so fuller chunks carry more bytes before a tunnel must be replaced.
pub const RELAY_BUFFER: usize = 60 * 1024;

/// How many idle buffers a thread keeps for reuse.
const POOL_LIMIT: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; RELAY_BUFFER].into_boxed_slice())
}

fn give_buffer(buffer: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            pool.push(buffer);
        }
    });
}

/// What a finished relay moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes from the inbound side to the outbound side (the request).
    pub uplink: u64,
    /// Bytes from the outbound side back to the inbound side.
    pub downlink: u64,
}

/// One direction's copy state.
#[derive(Default)]
struct Direction {
    buffer: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    bytes: u64,
}

impl Direction {
    /// Copies until the reader would block (returns `Pending`), or the
    /// direction is finished (`Ready(Ok)`), or an error happens. Sets
    /// `activity` when bytes moved.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        activity: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncStream,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.start == self.end && !self.read_done {
                if let Some(lender) = reader.as_mut().get_mut().buffered() {
                    ready!(self.poll_copy_lent(cx, lender, writer.as_mut(), activity))?;
                }
            }
            if self.start == self.end && !self.read_done {
                let buffer = self.buffer.get_or_insert_with(take_buffer);
                let mut read_buf = ReadBuf::new(buffer);
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let filled = read_buf.filled().len();
                        if filled == 0 {
                            self.read_done = true;
                        } else {
                            self.start = 0;
                            self.end = filled;
                            self.bytes += filled as u64;
                            *activity = true;
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing buffered: hand the buffer back so an idle
                        // connection costs no buffer memory.
                        if let Some(buffer) = self.buffer.take() {
                            give_buffer(buffer);
                        }
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let buffer = self.buffer.as_ref().expect("bytes are buffered");
                let written = ready!(writer
                    .as_mut()
                    .poll_write(cx, &buffer[self.start..self.end]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += written;
                self.need_flush = true;
                *activity = true;
            }
            if self.read_done {
                if let Some(buffer) = self.buffer.take() {
                    give_buffer(buffer);
                }
                // A peer that already went away cannot be shut down; the
                // direction is over either way.
                let _ = ready!(writer.as_mut().poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl Direction {
    /// Writes what `lender` has received straight from its buffer until it
    /// has nothing more now (`Pending`, after a flush) or ends (sets
    /// `read_done`, `Ready`). What a write does not take stays lent.
    fn poll_copy_lent<W>(
        &mut self,
        cx: &mut Context<'_>,
        lender: &mut (dyn AsyncBufRead + Unpin + Send),
        mut writer: Pin<&mut W>,
        activity: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        loop {
            let lent = match Pin::new(&mut *lender).poll_fill_buf(cx) {
                Poll::Ready(Ok(lent)) => lent,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            };
            if lent.is_empty() {
                self.read_done = true;
                return Poll::Ready(Ok(()));
            }
            let written = ready!(writer.as_mut().poll_write(cx, lent))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            Pin::new(&mut *lender).consume(written);
            self.bytes += written as u64;
            self.need_flush = true;
            *activity = true;
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            give_buffer(buffer);
        }
    }
}

struct Relay<A, B> {
    inbound: A,
    outbound: B,
    uplink: Direction,
    downlink: Direction,
    policy: Policy,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<A, B> Relay<A, B> {
    /// The idle limit for the current phase, V2Ray's rule: `connIdle`
    /// while both directions run, `downlinkOnly` once the request side
    /// ended, `uplinkOnly` once the response side ended.
    fn idle_limit(&self) -> Duration {
        match (self.uplink.done, self.downlink.done) {
            (false, false) => self.policy.conn_idle,
            (true, _) => self.policy.downlink_only,
            (false, true) => self.policy.uplink_only,
        }
    }
}

impl<A: AsyncStream, B: AsyncStream> Future for Relay<A, B> {
    type Output = io::Result<RelayStats>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut activity = false;
        let up_was_done = this.uplink.done;
        let down_was_done = this.downlink.done;
        let up = this.uplink.poll_copy(
            cx,
            Pin::new(&mut this.inbound),
            Pin::new(&mut this.outbound),
            &mut activity,
        );
        if let Poll::Ready(Err(error)) = up {
            return Poll::Ready(Err(error));
        }
        let down = this.downlink.poll_copy(
            cx,
            Pin::new(&mut this.outbound),
            Pin::new(&mut this.inbound),
            &mut activity,
        );
        if let Poll::Ready(Err(error)) = down {
            return Poll::Ready(Err(error));
        }
        if this.uplink.done && this.downlink.done {
            return Poll::Ready(Ok(RelayStats {
                uplink: this.uplink.bytes,
                downlink: this.downlink.bytes,
            }));
        }
        let phase_changed = up_was_done != this.uplink.done || down_was_done != this.downlink.done;
        if activity || phase_changed {
            this.last_activity = Instant::now();
        }
        if phase_changed {
            let deadline = this.last_activity + this.idle_limit();
            this.timer.as_mut().reset(deadline);
        }
        // The timer is re-armed lazily: only when it fires do we look at
        // when the last byte moved, so busy connections never touch it.
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = this.last_activity + this.idle_limit();
            if deadline <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {:?}", this.idle_limit()),
                )));
            }
            this.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

/// Copies `inbound` → `outbound` (uplink) and back (downlink) until both
/// directions reach end of stream, then returns the byte counts. When one
/// side ends, its peer's write half is shut down. Fails with
/// `ErrorKind::TimedOut` when the policy's idle limit passes with no bytes
/// moving, or with the first read or write error of either side.
///
/// Cancelling the future stops copying; bytes read but not yet written
/// are lost, as with any dropped connection.
///
/// One future, not an `async fn`: it owns the two streams once, and a
/// held connection keeps exactly this state.
pub fn relay<A, B>(
    inbound: A,
    outbound: B,
    policy: &Policy,
) -> impl Future<Output = io::Result<RelayStats>>
where
    A: AsyncStream,
    B: AsyncStream,
{
    let now = Instant::now();
    Relay {
        inbound,
        outbound,
        uplink: Direction::default(),
        downlink: Direction::default(),
        policy: *policy,
        last_activity: now,
        timer: Box::pin(tokio::time::sleep_until(now + policy.conn_idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_bytes_both_ways_and_counts_them() {
        let (mut client, inbound) = duplex(4096);
        let (outbound, mut server) = duplex(4096);
        let task = tokio::spawn(async move { relay(inbound, outbound, &Policy::default()).await });
        let request: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let request_copy = request.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&request_copy).await.unwrap();
            client.shutdown().await.unwrap();
            let mut response = Vec::new();
            client.read_to_end(&mut response).await.unwrap();
            response
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, request);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.uplink, 200_000);
        assert_eq!(stats.downlink, 4);
    }

    /// A source that only lends: it hands out `pieces` one at a time
    /// through `AsyncBufRead` (sometimes `Pending` first) and fails the
    /// test if read through `poll_read`.
    struct Lender {
        pieces: std::collections::VecDeque<Vec<u8>>,
        at: usize,
        stall: bool,
    }

    impl AsyncStream for Lender {
        fn buffered(&mut self) -> Option<&mut (dyn AsyncBufRead + Unpin + Send)> {
            Some(self)
        }
    }

    impl AsyncBufRead for Lender {
        fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
            let this = self.get_mut();
            this.stall = !this.stall;
            if this.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if this
                .pieces
                .front()
                .is_some_and(|piece| this.at == piece.len())
            {
                this.pieces.pop_front();
                this.at = 0;
            }
            Poll::Ready(Ok(this
                .pieces
                .front()
                .map_or(&[][..], |piece| &piece[this.at..])))
        }

        fn consume(self: Pin<&mut Self>, amt: usize) {
            self.get_mut().at += amt;
        }
    }

    impl AsyncRead for Lender {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            panic!("a lender was read through poll_read");
        }
    }

    impl AsyncWrite for Lender {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Total(std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl crate::stream::Tally for Total {
        fn add(&self, read: u64, _: u64) {
            self.0.fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn writes_a_lenders_bytes_from_its_buffer_and_counts_them() {
        let pieces: Vec<Vec<u8>> = (0..50u32)
            .map(|i| (0..(i * 997 % 70_000 + 1)).map(|b| (b ^ i) as u8).collect())
            .collect();
        let expected = pieces.concat();
        let lender = Lender {
            pieces: pieces.into_iter().collect(),
            at: 0,
            stall: false,
        };
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let inbound: crate::Stream = Box::new(crate::stream::Counted::new(
            Box::new(lender) as crate::Stream,
            Total(counted.clone()),
        ));
        // A small pipe: writes are partial and wait, so lent bytes stay
        // lent across calls.
        let (outbound, mut server) = duplex(1000);
        let task = tokio::spawn(async move { relay(inbound, outbound, &Policy::default()).await });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(
            got == expected,
            "{} bytes, {} expected",
            got.len(),
            expected.len()
        );
        drop(server);
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.uplink, expected.len() as u64);
        assert_eq!(
            counted.load(std::sync::atomic::Ordering::Relaxed),
            expected.len() as u64
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closes_an_idle_connection() {
        let (_client, inbound) = duplex(64);
        let (outbound, _server) = duplex(64);
        let policy = Policy {
            conn_idle: Duration::from_secs(5),
            ..Policy::default()
        };
        let started = Instant::now();
        let error = relay(inbound, outbound, &policy).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn switches_to_downlink_only_after_request_ends() {
        let (mut client, inbound) = duplex(64);
        let (outbound, mut server) = duplex(64);
        let policy = Policy {
            conn_idle: Duration::from_secs(300),
            downlink_only: Duration::from_secs(2),
            ..Policy::default()
        };
        client.shutdown().await.unwrap();
        let started = Instant::now();
        let error = relay(inbound, outbound, &policy).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
