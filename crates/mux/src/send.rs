//! The send side of one mux connection, sans-IO: what each sub-stream may
//! queue for the carrier, and in which order frames leave.
//!
//! Sub-stream writes encode frames straight into this queue (no allocation
//! and no message per frame); the connection's writer task takes
//! everything queued since its last write as one batch and writes it. This
//! module decides who gets into a batch. It does no IO and knows no
//! runtime: callers pass bytes in, take batches out, and wake the wakers it
//! hands back after they release its lock.
//!
//! # Sharing one carrier fairly
//!
//! Without a rule, a bulk sub-stream takes the whole queue: its relay task
//! refills the queue the moment the writer empties it (on a one-thread
//! runtime it always runs before the others it was woken with), and a
//! small request beside it waits for seconds. So admission works per
//! batch:
//!
//! | rule | why |
//! |---|---|
//! | a sub-stream's first write into a batch is taken (up to [`MAX_WRITE`] bytes) while the queue is under `limit` | a request, a datagram or a new connection's first bytes never wait behind a busy neighbour for more than one batch |
//! | further writes of a sub-stream already in the batch stop at `limit − reserve`, and at its share of that (divided by the sub-streams in the batch or waiting) | the reserve keeps room for first writes; the share keeps two bulk streams even |
//! | sub-streams that found no room are woken when the writer takes the batch: those that got nothing into it first, then those that did, each group oldest first | a one-thread runtime runs woken tasks in that order, so the sub-streams that just wrote cannot take the next batch before the others; shares count the woken as contenders before they write |
//! | control frames (New with the first data riding in it, End of a sub-stream with no data in the batch, KeepAlive) leave ahead of the batch's data | a new connection or a liveness probe does not queue behind bulk data |
//! | an End of a sub-stream with data in the batch leaves after that data | an End never overtakes bytes of its own sub-stream |
//!
//! Inside one batch, data frames leave in the order they were admitted;
//! since every sub-stream's part of a batch is bounded by its share, the
//! bytes of one sub-stream between two frames of another are bounded by
//! about `limit` (see the tests). The queue never holds more than
//! `limit + MAX_WRITE` bytes of data and frame headers, plus control
//! frames.
//!
//! Receiving has no such lever: Mux.Cool has no per-stream window, so
//! with a V2Ray peer the only back-pressure on a sender is the carrier;
//! between Rayback peers the engine adds windows (crate docs,
//! "Head-of-line blocking"). Window and Hello frames leave with the
//! control frames.
//!
//! Not here: the writer task and the sub-stream handles (the private
//! `conn` module and [`crate::stream`]), frame layouts ([`crate::frame`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::task::Waker;

use bytes::{BufMut, BytesMut};
use rayback_core::Destination;

use crate::error::MuxError;
use crate::frame::{self, SessionId, Status};

/// Most bytes one write takes, so the queue's overshoot is bounded.
pub(crate) const MAX_WRITE: usize = 64 * 1024;
/// Bytes of Ends and KeepAlives queued since the writer's last take beyond
/// which the connection's reader should wait: frames the peer provokes (an
/// End for an unknown ID, the answer to its End) are queued without
/// waiting, so a peer that sends them but never reads would otherwise grow
/// the queue without bound. Waiting pushes back on the peer through TCP,
/// as V2Ray does.
pub(crate) const ANSWER_SLACK: usize = 64 * 1024;
/// Data this small is copied behind the control frames so that a batch is
/// one write; larger data is written as a second buffer.
const COALESCE: usize = 16 * 1024;
/// A write this large is taken for bulk: the queue's empty buffer is
/// then sized for a whole batch ([`SendQueue::reserve_data`]).
const BULK_WRITE: usize = 16 * 1024;
/// The smallest piece a sub-stream already in the batch is given, so that
/// shares never shred data into tiny frames.
const MIN_TAKE: usize = 4 * 1024;

/// Result of offering bytes to the queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// This many bytes were taken (all of a packet).
    Taken(usize),
    /// No room for this sub-stream now: register with [`SendQueue::wait`].
    Full,
    /// The connection is closed.
    Closed,
}

/// The frames queued for the carrier and who waits to add more.
pub(crate) struct SendQueue {
    /// Bytes of data the queue holds before writers wait (`send_queue`).
    limit: usize,
    /// Largest data section of one stream frame.
    frame_data: usize,
    /// New, KeepAlive and End frames that leave ahead of `data`.
    control: BytesMut,
    /// Keep frames (and Ends behind their sub-stream's data), in the order
    /// they were admitted.
    data: BytesMut,
    /// Bytes of Ends and KeepAlives queued since the last take.
    answers: usize,
    /// Data bytes each sub-stream put into the current batch.
    in_batch: HashMap<SessionId, usize>,
    /// Sub-streams waiting for room, oldest first, and their wakers.
    waiting: VecDeque<SessionId>,
    wakers: HashMap<SessionId, Waker>,
    /// Sub-streams woken by the last take: they are about to write, and
    /// count as contenders for shares before they have.
    woken_last: usize,
    /// The connection's reader, waiting for answers to drain.
    reader: Option<Waker>,
    /// The writer task, waiting for something to write.
    writer: Option<Waker>,
    /// The last frame in `control` is a data-less New for this session,
    /// its option byte at this offset: the session's first data may still
    /// ride in it.
    tail_new: Option<(SessionId, usize)>,
    closed: bool,
    /// Write out what is queued, shut the carrier down, close.
    draining: bool,
}

impl SendQueue {
    /// A queue holding about `limit` bytes of data, writing stream frames
    /// of at most `frame_data` bytes (clamped to 1..=65535).
    pub(crate) fn new(limit: usize, frame_data: usize) -> SendQueue {
        SendQueue {
            limit: limit.max(1),
            frame_data: frame_data.clamp(1, frame::MAX_DATA),
            control: BytesMut::new(),
            data: BytesMut::new(),
            answers: 0,
            in_batch: HashMap::new(),
            waiting: VecDeque::new(),
            wakers: HashMap::new(),
            woken_last: 0,
            reader: None,
            writer: None,
            tail_new: None,
            closed: false,
            draining: false,
        }
    }

    /// Bytes queued and not yet taken by the writer.
    pub(crate) fn len(&self) -> usize {
        self.control.len() + self.data.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    /// The writer's waker, to wake once the caller let go of the queue.
    pub(crate) fn take_writer(&mut self) -> Option<Waker> {
        self.writer.take()
    }

    /// Bytes kept back for sub-streams' first writes into a batch.
    fn reserve(&self) -> usize {
        (self.limit / 4).min(MAX_WRITE)
    }

    /// How many bytes `id` may add now; `None` when it has to wait.
    fn room_for(&self, id: SessionId) -> Option<usize> {
        let queued = self.len();
        if queued >= self.limit {
            return None;
        }
        let Some(&mine) = self.in_batch.get(&id) else {
            return Some(MAX_WRITE);
        };
        let shared = self.limit - self.reserve();
        let contenders = (self.in_batch.len() + self.waiting.len()).max(self.woken_last);
        let share = shared / contenders.max(1);
        if queued >= shared || mine >= share {
            return None;
        }
        Some(
            (shared - queued)
                .min(share - mine)
                .clamp(MIN_TAKE, MAX_WRITE),
        )
    }

    /// Queues `id`'s New (no data yet: its first write rides in it while
    /// it is the last control frame), naming the visitor's `source` when
    /// given (the Rayback extension).
    pub(crate) fn push_new(
        &mut self,
        id: SessionId,
        destination: &Destination,
        source: Option<&SocketAddr>,
    ) -> Result<(), MuxError> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        let option_at = frame::put_new_header(&mut self.control, id, destination, source, None)?;
        self.tail_new = Some((id, option_at));
        Ok(())
    }

    /// Offers stream bytes of `id`; what is taken is queued as frames of
    /// at most `frame_data` bytes.
    pub(crate) fn push_stream(&mut self, id: SessionId, data: &[u8]) -> Push {
        if self.closed {
            return Push::Closed;
        }
        let Some(room) = self.room_for(id) else {
            return Push::Full;
        };
        let data = &data[..data.len().min(room)];
        if data.is_empty() {
            return Push::Taken(0);
        }
        let frame_data = self.frame_data;
        let frames = data.len().div_ceil(frame_data);
        let mut chunks = data.chunks(frame_data);
        if let Some(first) = self.ride_new(id, &mut chunks) {
            self.put_data(first);
        }
        self.reserve_data(data.len() + 8 * frames);
        for chunk in chunks {
            frame::put_keep_header(&mut self.data, id, chunk.len() as u16);
            self.data.extend_from_slice(chunk);
        }
        *self.in_batch.entry(id).or_default() += data.len();
        Push::Taken(data.len())
    }

    /// Offers one datagram of `id` as one frame (all or nothing).
    pub(crate) fn push_packet(&mut self, id: SessionId, packet: &[u8]) -> Push {
        if self.closed {
            return Push::Closed;
        }
        if self.room_for(id).is_none() {
            return Push::Full;
        }
        let mut packets = [packet].into_iter();
        match self.ride_new(id, &mut packets) {
            Some(packet) => self.put_data(packet),
            None => {
                frame::put_keep_header(&mut self.data, id, packet.len() as u16);
                self.data.extend_from_slice(packet);
            }
        }
        *self.in_batch.entry(id).or_default() += packet.len();
        Push::Taken(packet.len())
    }

    /// When `id`'s New is the last control frame, sets its data bit and
    /// returns the first piece of `pieces` to append to `control` right
    /// after it.
    fn ride_new<'a>(
        &mut self,
        id: SessionId,
        pieces: &mut impl Iterator<Item = &'a [u8]>,
    ) -> Option<&'a [u8]> {
        match self.tail_new {
            Some((new_id, option_at)) if new_id == id => {
                self.tail_new = None;
                let piece = pieces.next()?;
                frame::set_option_data(&mut self.control, option_at);
                Some(piece)
            }
            _ => None,
        }
    }

    /// Makes room for `need` more bytes of data frames. A bulk write into
    /// an empty buffer gets room for a whole batch at once: growing by
    /// doubling copied what was queued at every step (3 % of a portal's
    /// time under `iperf3`, `perf record`), and `realloc` copies even an
    /// empty buffer's old capacity. Small writes grow it as needed.
    fn reserve_data(&mut self, need: usize) {
        if self.data.capacity() - self.data.len() >= need {
            return;
        }
        if self.data.is_empty() {
            // The most data a batch holds, and room for frame headers.
            let batch = if need >= BULK_WRITE {
                self.limit + MAX_WRITE + MAX_WRITE / 1024 * 8
            } else {
                need
            };
            self.data = BytesMut::with_capacity(need.max(batch));
        } else {
            self.data.reserve(need);
        }
    }

    /// Appends the data section of the New just marked by [`Self::ride_new`].
    fn put_data(&mut self, piece: &[u8]) {
        self.control.reserve(2 + piece.len());
        self.control.put_u16(piece.len() as u16);
        self.control.extend_from_slice(piece);
    }

    /// Queues an End for `id`: after its data if the batch holds some,
    /// else ahead of all data. Never refused: it is 6 bytes and frees
    /// resources on both sides. `half_close` sets the Rayback-only bit.
    pub(crate) fn push_end(&mut self, id: SessionId, error: bool, half_close: bool) {
        if self.closed {
            return;
        }
        if self.in_batch.contains_key(&id) {
            frame::put_end(&mut self.data, id, error, half_close);
        } else {
            frame::put_end(&mut self.control, id, error, half_close);
            self.tail_new = None;
        }
        self.answers += 6;
    }

    /// Queues a KeepAlive (6 bytes; V2Ray reads and ignores it).
    pub(crate) fn push_keepalive(&mut self) {
        if self.closed {
            return;
        }
        frame::put_short_header(&mut self.control, 0, Status::KeepAlive, 0);
        self.tail_new = None;
        self.answers += 6;
    }

    /// Queues a Hello (12 bytes): the KeepAlive that offers or accepts
    /// per-stream flow control (a Rayback extension).
    pub(crate) fn push_hello(&mut self, window: u32) {
        if self.closed {
            return;
        }
        frame::put_hello(&mut self.control, 0, window);
        self.tail_new = None;
    }

    /// Queues a Window for `id` (15 bytes, ahead of data): the peer may
    /// send up to `limit`. Not counted as an answer: it follows our own
    /// reads, at most one per half window.
    pub(crate) fn push_window(&mut self, id: SessionId, limit: u64) {
        if self.closed {
            return;
        }
        frame::put_window(&mut self.control, id, limit);
        self.tail_new = None;
    }

    /// Registers `id`'s writer to be woken when the writer next takes a
    /// batch. A sub-stream keeps its place in line if it was waiting
    /// already.
    pub(crate) fn wait(&mut self, id: SessionId, waker: &Waker) {
        match self.wakers.get_mut(&id) {
            Some(old) if old.will_wake(waker) => {}
            Some(old) => {
                // A stale waker under this ID (the handle moved to another
                // task, or an ID the peer reused): wake it so that its
                // owner never hangs, and keep the new one.
                std::mem::replace(old, waker.clone()).wake();
            }
            None => {
                self.wakers.insert(id, waker.clone());
                self.waiting.push_back(id);
            }
        }
    }

    /// Whether the connection's reader should stop reading the peer until
    /// the writer takes the answers it provoked.
    pub(crate) fn answers_full(&self) -> bool {
        !self.closed && self.answers >= ANSWER_SLACK
    }

    /// Registers the connection's reader (see [`Self::answers_full`]).
    pub(crate) fn wait_reader(&mut self, waker: &Waker) {
        self.reader = Some(waker.clone());
    }

    /// Registers the writer task, to be woken when there is something to
    /// write or the connection closes or drains.
    pub(crate) fn wait_writer(&mut self, waker: &Waker) {
        self.writer = Some(waker.clone());
    }

    /// Moves everything queued into the writer's two buffers (both empty
    /// on entry): control frames first, then data; small data is copied
    /// behind the control frames so that it is one write. Starts a new
    /// batch and adds the wakers of everyone waiting, oldest first, to
    /// `woken`. Returns false (and changes nothing) when nothing is queued.
    pub(crate) fn take(
        &mut self,
        first: &mut BytesMut,
        second: &mut BytesMut,
        woken: &mut Vec<Waker>,
    ) -> bool {
        if self.len() == 0 {
            return false;
        }
        debug_assert!(first.is_empty() && second.is_empty());
        if self.control.is_empty() {
            std::mem::swap(first, &mut self.data);
        } else {
            std::mem::swap(first, &mut self.control);
            if self.data.len() <= COALESCE {
                first.extend_from_slice(&self.data);
                self.data.clear();
            } else {
                std::mem::swap(second, &mut self.data);
            }
        }
        self.tail_new = None;
        self.answers = 0;
        // Those that got nothing into this batch go first next time, so
        // that on a one-thread runtime (which runs woken tasks in order)
        // the sub-streams that just wrote cannot take the next batch
        // before them.
        let (starved, served): (Vec<SessionId>, Vec<SessionId>) = self
            .waiting
            .drain(..)
            .partition(|id| !self.in_batch.contains_key(id));
        self.waiting.extend(starved);
        self.waiting.extend(served);
        self.in_batch.clear();
        self.woken_last = self.wake_all(woken);
        true
    }

    /// Adds every waiter's waker to `woken` (sub-streams in line order,
    /// then the reader); returns how many sub-streams that was.
    fn wake_all(&mut self, woken: &mut Vec<Waker>) -> usize {
        let before = woken.len();
        for id in self.waiting.drain(..) {
            if let Some(waker) = self.wakers.remove(&id) {
                woken.push(waker);
            }
        }
        let sessions = woken.len() - before;
        woken.extend(self.reader.take());
        sessions
    }

    /// Asks the writer to write out what is queued, shut the carrier down
    /// and close; returns its waker.
    pub(crate) fn start_draining(&mut self) -> Option<Waker> {
        self.draining = true;
        self.writer.take()
    }

    /// Closes: queued frames are dropped, and everyone waiting (writer
    /// included) is added to `woken`.
    pub(crate) fn close(&mut self, woken: &mut Vec<Waker>) {
        self.closed = true;
        self.control = BytesMut::new();
        self.data = BytesMut::new();
        self.in_batch = HashMap::new();
        self.tail_new = None;
        self.answers = 0;
        self.woken_last = 0;
        self.wake_all(woken);
        woken.extend(self.writer.take());
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use bytes::Bytes;
    use rayback_core::{Address, Network};
    use rayback_testkit::doubles::WakeCount;

    use super::*;
    use crate::frame::{FrameCodec, FrameKind};

    const LIMIT: usize = 256 * 1024;
    const FRAME: usize = 60 * 1024;

    fn destination() -> Destination {
        Destination {
            network: Network::Tcp,
            address: Address::Ipv4(Ipv4Addr::LOCALHOST),
            port: 80,
        }
    }

    /// One decoded frame: its session, kind and data.
    #[derive(Debug, PartialEq)]
    enum Seen {
        New(SessionId, usize),
        Keep(SessionId, usize),
        End(SessionId),
        KeepAlive,
    }

    /// Takes a batch and decodes it in wire order.
    fn take(queue: &mut SendQueue) -> (Vec<Seen>, Vec<Waker>) {
        let (mut first, mut second, mut woken) = (BytesMut::new(), BytesMut::new(), Vec::new());
        if !queue.take(&mut first, &mut second, &mut woken) {
            return (Vec::new(), woken);
        }
        first.extend_from_slice(&second);
        let mut codec = FrameCodec::new();
        let mut seen = Vec::new();
        while let Some(frame) = codec.decode_frame(&mut first).expect("valid frames") {
            let len = frame.data.as_ref().map_or(0, Bytes::len);
            seen.push(match frame.kind {
                FrameKind::New { .. } => Seen::New(frame.session_id, len),
                FrameKind::Keep => Seen::Keep(frame.session_id, len),
                FrameKind::End { .. } => Seen::End(frame.session_id),
                FrameKind::KeepAlive | FrameKind::Hello { .. } => Seen::KeepAlive,
                FrameKind::Window { .. } => Seen::Keep(frame.session_id, 0),
            });
        }
        assert!(first.is_empty(), "a batch ends on a frame boundary");
        (seen, woken)
    }

    /// Offers `len` bytes of `id` until the queue refuses; returns the
    /// bytes taken.
    fn fill(queue: &mut SendQueue, id: SessionId, len: usize) -> usize {
        let data = vec![7u8; len];
        let mut taken = 0;
        while let Push::Taken(n) = queue.push_stream(id, &data) {
            assert!(n > 0);
            taken += n;
        }
        taken
    }

    #[test]
    fn a_session_that_fills_the_queue_cannot_keep_another_out() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        // What a one-thread runtime does: the bulk stream always runs
        // first after the writer takes a batch, and fills what it can.
        for _ in 0..20 {
            let bulk = fill(&mut queue, 1, MAX_WRITE);
            assert!(
                bulk >= LIMIT / 2,
                "a lone bulk stream still gets most of the queue"
            );
            assert_eq!(queue.push_stream(2, &[1u8; 1024]), Push::Taken(1024));
            assert!(queue.len() <= LIMIT + MAX_WRITE + 16);
            let (seen, _) = take(&mut queue);
            assert!(seen.contains(&Seen::Keep(2, 1024)));
        }
    }

    #[test]
    fn frames_of_sessions_with_data_interleave() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        let mut order = Vec::new();
        // Three bulk streams offering 64 KiB writes, in turn, every batch
        // started by the same one.
        for _ in 0..50 {
            let mut progress = true;
            while progress {
                progress = false;
                for id in [1, 2, 3] {
                    if let Push::Taken(_) = queue.push_stream(id, &[0u8; MAX_WRITE]) {
                        progress = true;
                    }
                }
            }
            order.extend(take(&mut queue).0);
        }
        // Between two frames of one session, the others sent a bounded
        // number of bytes.
        for id in [1, 2, 3] {
            let mut others = 0;
            let mut seen_self = false;
            let mut worst = 0;
            for frame in &order {
                match frame {
                    Seen::Keep(sid, _) if *sid == id => {
                        if seen_self {
                            worst = worst.max(others);
                        }
                        seen_self = true;
                        others = 0;
                    }
                    Seen::Keep(_, len) => others += len,
                    _ => {}
                }
            }
            assert!(seen_self);
            assert!(
                worst <= LIMIT,
                "session {id}: {worst} bytes of others between two frames"
            );
        }
        // And each got about a third.
        let total = |id| -> usize {
            order
                .iter()
                .map(|frame| match frame {
                    Seen::Keep(sid, len) if *sid == id => *len,
                    _ => 0,
                })
                .sum()
        };
        let (a, b, c) = (total(1), total(2), total(3));
        let most = a.max(b).max(c);
        let least = a.min(b).min(c);
        assert!(least * 10 >= most * 8, "shares {a}, {b}, {c}");
    }

    /// What a one-thread runtime does with many bulk senders: the writer
    /// takes a batch and wakes the waiters in the order it hands out; each
    /// then runs its relay loop, writing until the queue refuses it, and
    /// waits again.
    #[test]
    fn many_bulk_sessions_on_one_thread_all_get_their_turn() {
        const SESSIONS: u16 = 50;
        let mut queue = SendQueue::new(LIMIT, FRAME);
        let mut wakers: Vec<(Arc<WakeCount>, Waker)> =
            (0..SESSIONS).map(|_| WakeCount::waker()).collect();
        let mut order: Vec<SessionId> = (0..SESSIONS).collect();
        let mut sent = vec![0usize; SESSIONS as usize];
        for _ in 0..200 {
            for &id in &order {
                sent[id as usize] += fill(&mut queue, id, MAX_WRITE);
                queue.wait(id, &wakers[id as usize].1);
            }
            let (_, woken) = take(&mut queue);
            order = woken
                .iter()
                .map(|waker| {
                    let id = wakers.iter().position(|(_, w)| w.will_wake(waker)).unwrap();
                    id as SessionId
                })
                .collect();
            assert_eq!(
                order.len(),
                SESSIONS as usize,
                "everyone waited, everyone is woken"
            );
            // Fresh wakers, as a task that re-registers would have.
            wakers = (0..SESSIONS).map(|_| WakeCount::waker()).collect();
        }
        let most = *sent.iter().max().unwrap();
        let least = *sent.iter().min().unwrap();
        assert!(
            least * 10 >= most * 8,
            "50 bulk sessions: least {least}, most {most} bytes"
        );
    }

    #[test]
    fn control_frames_leave_ahead_of_data_and_first_data_rides_in_new() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        fill(&mut queue, 1, MAX_WRITE);
        queue.push_keepalive();
        queue.push_new(9, &destination(), None).unwrap();
        assert_eq!(
            queue.push_stream(9, b"GET / HTTP/1.1\r\n\r\n"),
            Push::Taken(18)
        );
        queue.push_end(5, false, false);
        let (seen, _) = take(&mut queue);
        assert_eq!(seen[0], Seen::KeepAlive);
        assert_eq!(seen[1], Seen::New(9, 18));
        assert_eq!(seen[2], Seen::End(5));
        assert!(matches!(seen[3], Seen::Keep(1, _)));
    }

    #[test]
    fn an_end_never_overtakes_its_own_data() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        assert_eq!(queue.push_stream(3, &[1u8; 100]), Push::Taken(100));
        queue.push_end(3, false, true);
        fill(&mut queue, 4, MAX_WRITE);
        let (seen, _) = take(&mut queue);
        let data = seen.iter().position(|f| *f == Seen::Keep(3, 100)).unwrap();
        let end = seen.iter().position(|f| *f == Seen::End(3)).unwrap();
        assert!(data < end);
        // A New whose data rode in it, then its End.
        queue.push_new(7, &destination(), None).unwrap();
        assert_eq!(queue.push_stream(7, &[1u8; 10]), Push::Taken(10));
        queue.push_end(7, false, false);
        let (seen, _) = take(&mut queue);
        assert_eq!(seen, [Seen::New(7, 10), Seen::End(7)]);
    }

    #[test]
    fn datagrams_and_new_sessions_get_in_beside_a_full_queue() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        fill(&mut queue, 1, MAX_WRITE);
        assert_eq!(queue.push_packet(2, &[0u8; 64]), Push::Taken(64));
        queue.push_new(3, &destination(), None).unwrap();
        assert_eq!(queue.push_stream(3, &[0u8; 1]), Push::Taken(1));
        // A second datagram of the same session in the same batch waits.
        assert_eq!(queue.push_packet(2, &[0u8; 64]), Push::Full);
    }

    #[test]
    fn waiters_are_woken_starved_first_then_oldest_first() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        fill(&mut queue, 1, MAX_WRITE);
        let (first, first_waker) = WakeCount::waker();
        let (second, second_waker) = WakeCount::waker();
        let (third, third_waker) = WakeCount::waker();
        queue.wait(1, &first_waker);
        queue.wait(2, &second_waker);
        queue.wait(1, &first_waker);
        queue.wait(3, &third_waker);
        let (_, woken) = take(&mut queue);
        // 2 and 3 got nothing into the batch: they go first, in the order
        // they came; 1, which filled it, after them.
        assert_eq!(woken.len(), 3);
        assert!(woken[0].will_wake(&second_waker));
        assert!(woken[1].will_wake(&third_waker));
        assert!(woken[2].will_wake(&first_waker));
        woken.into_iter().for_each(Waker::wake);
        for waiter in [first, second, third] {
            assert_eq!(waiter.count(), 1);
        }
        // Nothing queued: nothing taken, no one woken.
        assert!(take(&mut queue).1.is_empty());
    }

    #[test]
    fn a_replaced_waker_is_woken_not_lost() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        let (old, old_waker) = WakeCount::waker();
        let (_new, new_waker) = WakeCount::waker();
        queue.wait(4, &old_waker);
        queue.wait(4, &new_waker);
        assert_eq!(old.count(), 1);
    }

    #[test]
    fn answers_past_the_slack_stop_the_reader_until_taken() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        for id in 0..ANSWER_SLACK.div_ceil(6) as u16 {
            assert!(!queue.answers_full());
            queue.push_end(id, false, false);
        }
        assert!(queue.answers_full());
        let (reader, reader_waker) = WakeCount::waker();
        queue.wait_reader(&reader_waker);
        let (_, woken) = take(&mut queue);
        woken.into_iter().for_each(Waker::wake);
        assert_eq!(reader.count(), 1);
        assert!(!queue.answers_full());
    }

    #[test]
    fn the_queue_stays_within_its_bound_whatever_the_mix() {
        for limit in [64, 1024, 16 * 1024, LIMIT] {
            for frame_data in [1, 100, FRAME] {
                let mut queue = SendQueue::new(limit, frame_data);
                for round in 0..4 {
                    for id in 0..40u16 {
                        let len =
                            [1, 10, 1000, MAX_WRITE, 3 * MAX_WRITE][(id as usize + round) % 5];
                        let _ = queue.push_stream(id, &vec![0u8; len]);
                        let _ = queue.push_packet(id + 100, &[0u8; 2048]);
                        let headers = 8 * MAX_WRITE.div_ceil(frame_data);
                        assert!(
                            queue.len() < limit + MAX_WRITE + headers + 2048 + 8,
                            "limit {limit}, frame {frame_data}: {} queued",
                            queue.len()
                        );
                    }
                    take(&mut queue);
                }
            }
        }
    }

    #[test]
    fn closing_drops_everything_and_wakes_everyone() {
        let mut queue = SendQueue::new(LIMIT, FRAME);
        fill(&mut queue, 1, MAX_WRITE);
        let (waiter, waker) = WakeCount::waker();
        queue.wait(1, &waker);
        queue.wait_writer(&waker);
        let mut woken = Vec::new();
        queue.close(&mut woken);
        assert_eq!(woken.len(), 2);
        woken.into_iter().for_each(Waker::wake);
        assert_eq!(waiter.count(), 2);
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.push_stream(1, b"x"), Push::Closed);
        assert!(queue.push_new(2, &destination(), None).is_err());
    }
}
