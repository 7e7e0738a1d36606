//! The Mux.Cool session engine of one connection, sans-IO: every
//! sub-stream's state, the IDs the peer can name, the receive buffers and
//! the send queue, and every transition between them as a method. Frames
//! and time come in as arguments ([`Engine::handle_frame`],
//! [`Engine::handle_timeout`]); bytes to send leave through
//! [`Engine::poll_transmit`]; the wakers of tasks that can make progress
//! collect in [`Engine::take_wakes`] for the driver to wake after it lets
//! go of the engine.
//!
//! Not here: sockets, tasks and timers (the driver, the private `conn` module),
//! the `AsyncRead`/`AsyncWrite` face ([`crate::stream`]), which frames go
//! into a write (the private `send` module).
//!
//! A sub-stream is a slot named by a [`Key`] that is never reused; the
//! peer names it by its wire ID while it is *attached* (in `ids`). A slot
//! lives as long as its handle (the `MuxStream`), so that a reader can
//! still take what was received after the session's ID is free again.
//!
//! Each direction of a sub-stream is an enum:
//!
//! | ours ([`Local`]) | meaning |
//! |---|---|
//! | `Open` | we may write |
//! | `HalfClosed` | we sent End with the half-close bit (TCP, Rayback extension); we still read until the peer's End |
//! | `Ended` | we sent (or owe no more than) a plain End |
//!
//! | the peer's ([`Remote`]) | meaning |
//! |---|---|
//! | `Open` | the peer may send data |
//! | `HalfClosed` | the peer sent End with the half-close bit: our reader gets EOF, our writes go on |
//! | `Ended` | the peer sent a plain End: EOF, and writes fail |
//!
//! plus a [`Fault`] that overrides both (reset by End+error, a stall or a
//! replaced ID; or the connection lost).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rayback_core::{Address, Destination, Network};

use crate::error::MuxError;
use crate::frame::{Frame, FrameKind, SessionId};
use crate::send::{Push, SendQueue};
use crate::settings::MuxSettings;

/// Flow control: a sub-stream that received data this recently makes the
/// others' grants stay within the initial window (a request beside a bulk
/// transfer then waits behind at most that much of it). Short, so that a
/// lone transfer is not held to the initial window for long by a
/// neighbour's one exchange (iperf3's control connection at its start:
/// 1 s cost a single-stream run about a tenth of its throughput here);
/// long enough to span the gaps of a page's requests.
const CONTENDED_FOR: Duration = Duration::from_millis(250);

/// Which end of Mux.Cool a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Allocates session IDs and sends `New` (portal, outbound mux).
    Client,
    /// Accepts `New` (bridge, mux inbound).
    Server,
}

/// Names one sub-stream for its whole life. A released key names nothing:
/// its slot's index comes back only with a new generation (after 2^32
/// reuses of one index would a key repeat).
pub type Key = u64;

/// Our side of a sub-stream (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Open,
    HalfClosed,
    Ended,
}

/// The peer's side of a sub-stream (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Open,
    HalfClosed,
    Ended,
}

/// Why a sub-stream fails whatever its directions say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Aborted: End+error from the peer, a stall, an ID the peer reused.
    /// Reads and writes fail at once; buffered bytes are dropped.
    Reset(io::ErrorKind),
    /// The connection closed: reads return what was buffered, then fail.
    Lost,
}

/// One sub-stream.
struct Slot {
    id: SessionId,
    network: Network,
    local: Local,
    remote: Remote,
    fault: Option<Fault>,
    /// In `ids`: the peer can still name it.
    attached: bool,
    recv: RecvBuffer,
    /// The sub-stream's reader, waiting for bytes.
    reader: Option<Waker>,
    /// The connection's reader, waiting for room in `recv`.
    space: Option<Waker>,
    /// Both ends of per-stream flow control (TCP sub-streams only).
    flow: SlotFlow,
}

/// A sub-stream's offsets under per-stream flow control (the Rayback
/// extension; see [`Flow`]). Offsets count stream bytes from the first.
#[derive(Default)]
struct SlotFlow {
    /// Bytes we queued to send.
    sent: u64,
    /// The highest limit the peer's Windows named (0: none yet).
    peer_limit: u64,
    /// The sub-stream's writer, waiting for the peer's window.
    credit: Option<Waker>,
    /// Bytes received, and read by the sub-stream's reader.
    received: u64,
    consumed: u64,
    /// The limit we last granted the peer, and the one before it.
    granted: u64,
    previous_grant: u64,
    /// What each grant adds to what was read.
    window: u32,
    /// When the peer last used up a grant (it waits for our next Window),
    /// until its next bytes come.
    exhausted_at: Option<Instant>,
    /// When the peer's bytes started coming after its last wait.
    sending_since: Option<Instant>,
    /// The peer waited for a Window long enough to matter: the next grant
    /// doubles the window.
    grow: bool,
    /// Another TCP sub-stream received data lately (see
    /// [`Engine::note_activity`]): grants stay within the initial window.
    contended: bool,
}

impl SlotFlow {
    /// What the next grant adds: the window, or within `initial` while
    /// another sub-stream is active (a window grown for one busy
    /// sub-stream would put that much ahead of every other one's bytes).
    fn effective_window(&self, initial: u32) -> u32 {
        if self.contended {
            self.window.min(initial)
        } else {
            self.window
        }
    }

    /// Receiving side: `len` bytes arrived at `now`; `reader_idle` says
    /// our reader had read everything before them. Decides whether the
    /// window grows. A sender cuts its frames at its limit, so bytes that
    /// end exactly at a grant mean the peer used it up and waits for the
    /// next. When its next bytes come, if our reader had read everything
    /// meanwhile (the window, not the reader, held the peer back) and the
    /// peer waited over a quarter of the time it had been sending, the
    /// window costs throughput (a long path, or grants that come late)
    /// and doubles. A slow reader never makes it grow, so it never has
    /// more than a window buffered.
    fn on_data(&mut self, len: usize, reader_idle: bool, now: Instant) {
        if let Some(exhausted_at) = self.exhausted_at.take() {
            let waited = now.saturating_duration_since(exhausted_at);
            let sending = exhausted_at.saturating_duration_since(self.sending_since.unwrap_or(now));
            if reader_idle && waited * 4 > sending {
                self.grow = true;
            }
            self.sending_since = Some(now);
        }
        self.sending_since.get_or_insert(now);
        self.received += len as u64;
        if self.received == self.granted || self.received == self.previous_grant {
            self.exhausted_at = Some(now);
        }
    }
}

impl Slot {
    fn new(id: SessionId, network: Network, window: Option<u32>) -> Slot {
        let window = window.unwrap_or(0);
        Slot {
            id,
            network,
            local: Local::Open,
            remote: Remote::Open,
            fault: None,
            attached: true,
            recv: RecvBuffer::default(),
            reader: None,
            space: None,
            flow: SlotFlow {
                granted: u64::from(window),
                window,
                ..SlotFlow::default()
            },
        }
    }

    /// Attached and neither reset nor lost.
    fn is_live(&self) -> bool {
        self.attached && self.fault.is_none()
    }

    /// Ends our side; returns whether an End must still be sent: none was
    /// sent yet, or only a half-close the peer has not answered.
    fn take_end(&mut self) -> bool {
        let owed = match self.local {
            Local::Open => true,
            Local::HalfClosed => self.remote == Remote::Open,
            Local::Ended => false,
        };
        self.local = Local::Ended;
        owed
    }
}

/// What a frame from the peer asks of the driver.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Nothing more to do.
    Done,
    /// Server: a new sub-stream; the driver hands a handle for `key` to the
    /// session handler, then delivers `data` (if any) to it. `source` is
    /// the visitor the New named (the Rayback extension), if it did.
    Accepted {
        key: Key,
        destination: Destination,
        source: Option<SocketAddr>,
        data: Option<Bytes>,
    },
    /// Data for sub-stream `key`: the driver delivers it with
    /// [`Engine::deliver`], waiting while that says `Pending`.
    Data { key: Key, data: Bytes },
}

/// What the writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write the two buffers (the second may be empty), then ask again.
    Write,
    /// Nothing queued: wait for the registered waker.
    Idle,
    /// Drain requested and everything written: shut the carrier down.
    Shutdown,
    /// Closed: stop.
    Closed,
}

/// A connection's load, read under one lock: what a picker choosing among
/// many connections needs of each (a portal with a thousand bridges reads
/// this once per tunnel per public connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Closed or draining: takes no new sub-stream.
    pub refusing: bool,
    /// Sub-streams open now.
    pub active_sessions: usize,
    /// Received bytes not yet read plus frames queued for the carrier.
    pub buffered_bytes: usize,
    /// Time since the peer's last KeepAlive; `None` if it never sent one.
    pub since_keepalive: Option<Duration>,
    /// How long the reader has waited on a silent carrier; `None` while
    /// it is busy or data just came (the connection's clock, not the
    /// engine's).
    pub silent_for: Option<Duration>,
}

/// One Mux.Cool connection's sessions.
pub struct Engine {
    role: Role,
    settings: MuxSettings,
    /// Server: most sub-streams attached at once.
    max_sessions: usize,
    slots: Slots,
    /// Wire ID → the slot the peer means by it.
    ids: HashMap<SessionId, Key>,
    /// Client: the last allocated ID.
    next_id: SessionId,
    /// No new sub-streams (draining or closed).
    refusing: bool,
    closed: bool,
    send: SendQueue,
    /// Sum of every sub-stream's receive buffer.
    recv_buffered: usize,
    total_opened: u64,
    /// Client handles alive; at zero the connection drains once idle.
    handles: usize,
    /// When the peer's last KeepAlive came; V2Ray never sends one, a
    /// Rayback bridge does.
    last_keepalive: Option<Instant>,
    /// A delivery that found its sub-stream full: which and since when.
    blocked: Option<(Key, Instant)>,
    /// Per-stream flow control, once agreed.
    flow: Flow,
    /// The last two TCP sub-streams that received data, and when (flow
    /// control's [`Engine::note_activity`]).
    recent: [Option<(Key, Instant)>; 2],
    /// Tasks to wake once the driver lets go of the engine.
    wakes: Vec<Waker>,
}

/// Per-stream flow control, a Rayback extension (frames in
/// [`crate::frame`]). Mux.Cool alone has no window: a receiver whose
/// sub-stream is full stops reading the connection and every sub-stream
/// waits (the stall rule in [`Engine::deliver`]). With it:
///
/// | side | rule |
/// |---|---|
/// | client | offers in its first frame (a Hello granting its initial window), when [`MuxSettings::offer_flow_control`] says the peer is Rayback; grants from then on, obeys once the server's Hello comes |
/// | server | answers the first Hello with its own; grants and obeys from then on (the Hello comes before any New) |
/// | receiver | grants each TCP sub-stream the initial window; each time its reader has read a quarter of a window since the last grant, sends a Window: limit = bytes read + window |
/// | sender | sends a sub-stream's bytes up to the larger of the peer's initial window and its last Window, then waits for the next |
/// | growth | a grant the sender used up, then waited for long enough to cost throughput while our reader had read everything (the window, not the reader, held it back), doubles the next window, up to [`MuxSettings::max_window`] (see `SlotFlow::on_data`) |
/// | sharing | while another TCP sub-stream received data within [`CONTENDED_FOR`], grants stay within the initial window, so a grown window never queues megabytes ahead of a neighbour's request |
///
/// A receiver's buffer then holds at most a window per sub-stream, so a
/// slow reader never stops the connection's reader. Before the client
/// learns that the server agreed, it sends without limit and the old
/// stall rule still bounds the server's buffer.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    /// We grant windows (send Windows) starting with this many bytes.
    grant: Option<u32>,
    /// The peer grants windows starting with this many: we obey them.
    peer: Option<u32>,
}

impl Engine {
    pub fn new(role: Role, settings: MuxSettings, max_sessions: usize) -> Engine {
        let send = SendQueue::new(settings.send_queue, settings.frame_data());
        Engine {
            role,
            settings,
            max_sessions,
            slots: Slots::default(),
            ids: HashMap::new(),
            next_id: 0,
            refusing: false,
            closed: false,
            send,
            recv_buffered: 0,
            total_opened: 0,
            handles: 0,
            last_keepalive: None,
            blocked: None,
            flow: Flow::default(),
            recent: [None, None],
            wakes: Vec::new(),
        }
        .offering_flow_control()
    }

    /// A client that offers flow control queues its Hello first of all.
    fn offering_flow_control(mut self) -> Engine {
        if self.role == Role::Client && self.settings.offer_flow_control {
            let window = self.settings.initial_window();
            self.send.push_hello(window);
            self.flow.grant = Some(window);
        }
        self
    }

    /// Whether flow control is agreed both ways (both Hellos seen).
    pub fn flow_control(&self) -> bool {
        self.flow.grant.is_some() && self.flow.peer.is_some()
    }

    /// The wakers collected since the last call; wake them after letting
    /// go of the engine.
    pub fn take_wakes(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.wakes)
    }

    /// Whether a waker is waiting to be taken: most calls collect none, and
    /// the driver then skips the hand-over.
    pub fn has_wakes(&self) -> bool {
        !self.wakes.is_empty()
    }

    /// Moves the wakers collected since the last call into `out`, keeping
    /// the engine's list allocated (the driver's hot path).
    pub fn move_wakes(&mut self, out: &mut Wakes) {
        for waker in self.wakes.drain(..) {
            out.push(waker);
        }
    }

    fn wake(&mut self, waker: Option<Waker>) {
        self.wakes.extend(waker);
    }

    fn wake_writer(&mut self) {
        let writer = self.send.take_writer();
        self.wake(writer);
    }

    // -------------------------------------------------------------- gauges

    /// The state of sub-stream `key`: ours, the peer's, a fault, and
    /// whether the peer can still name it; `None` once its handle is
    /// released.
    pub fn state(&self, key: Key) -> Option<(Local, Remote, Option<Fault>, bool)> {
        self.slots
            .get(key)
            .map(|slot| (slot.local, slot.remote, slot.fault, slot.attached))
    }

    /// Bytes received for `key` and not yet read.
    pub fn received(&self, key: Key) -> usize {
        self.slots.get(key).map_or(0, |slot| slot.recv.len())
    }

    /// The wire ID of sub-stream `key` (0 once released).
    pub fn session_id(&self, key: Key) -> SessionId {
        self.slots.get(key).map_or(0, |slot| slot.id)
    }

    /// Sub-streams the peer can name.
    pub fn active_sessions(&self) -> usize {
        self.ids.len()
    }

    pub fn total_opened(&self) -> u64 {
        self.total_opened
    }

    /// Received bytes not yet read plus frames queued for the carrier.
    pub fn buffered_bytes(&self) -> usize {
        self.recv_buffered + self.send.len()
    }

    /// No new sub-streams: draining or closed.
    pub fn is_refusing(&self) -> bool {
        self.refusing
    }

    /// Time since the peer's last KeepAlive; `None` if it never sent one.
    pub fn since_keepalive(&self, now: Instant) -> Option<Duration> {
        self.last_keepalive
            .map(|at| now.saturating_duration_since(at))
    }

    // ------------------------------------------------------------ lifecycle

    pub fn add_handle(&mut self) {
        self.handles += 1;
    }

    /// A client handle is gone; at zero an idle connection drains.
    pub fn drop_handle(&mut self) {
        self.handles = self.handles.saturating_sub(1);
        self.drain_if_abandoned();
    }

    /// Drains if no sub-stream is attached: no new ones, write out what is
    /// queued, shut the carrier down. Returns whether it did.
    pub fn drain_if_idle(&mut self) -> bool {
        if !self.ids.is_empty() {
            return false;
        }
        self.refusing = true;
        let writer = self.send.start_draining();
        self.wake(writer);
        true
    }

    fn drain_if_abandoned(&mut self) {
        if self.role == Role::Client && self.handles == 0 {
            self.drain_if_idle();
        }
    }

    /// Closes at once: every sub-stream fails (after handing out bytes it
    /// already received), queued frames are dropped, everyone waiting is
    /// woken.
    pub fn close(&mut self) {
        self.refusing = true;
        self.closed = true;
        self.ids.clear();
        self.blocked = None;
        for slot in self.slots.iter_mut() {
            slot.attached = false;
            slot.fault.get_or_insert(Fault::Lost);
            self.wakes.extend(slot.reader.take());
            self.wakes.extend(slot.space.take());
            self.wakes.extend(slot.flow.credit.take());
        }
        self.send.close(&mut self.wakes);
    }

    /// Queues a KeepAlive frame (V2Ray reads and ignores it).
    pub fn queue_keepalive(&mut self) {
        self.send.push_keepalive();
        self.wake_writer();
    }

    // ------------------------------------------------------------ opening

    /// Client: allocates an ID, attaches a sub-stream and queues its New.
    pub fn open(
        &mut self,
        destination: &Destination,
        max_concurrency: Option<usize>,
        max_total: Option<u64>,
    ) -> Result<Key, MuxError> {
        self.open_from(destination, None, max_concurrency, max_total)
    }

    /// [`Engine::open`] whose New names the visitor's `source` after the
    /// destination when given (the Rayback extension; V2Ray ignores it).
    /// Whether the peer reads it is the caller's business.
    pub fn open_from(
        &mut self,
        destination: &Destination,
        source: Option<&SocketAddr>,
        max_concurrency: Option<usize>,
        max_total: Option<u64>,
    ) -> Result<Key, MuxError> {
        if let Address::Domain(domain) = &destination.address {
            if domain.len() > 255 {
                return Err(MuxError::DomainTooLong(domain.len()));
            }
        }
        if self.refusing {
            return Err(MuxError::Closed);
        }
        let active = self.ids.len();
        if max_concurrency.is_some_and(|max| active >= max)
            || max_total.is_some_and(|max| self.total_opened >= max)
            || active > u16::MAX as usize
        {
            return Err(MuxError::Full(active));
        }
        // IDs count up from 1 and wrap; one still in use is skipped.
        let mut id = self.next_id.wrapping_add(1);
        while self.ids.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.send.push_new(id, destination, source)?;
        self.next_id = id;
        self.total_opened += 1;
        let key = self.insert(Slot::new(id, destination.network, self.flow.grant));
        self.wake_writer();
        Ok(key)
    }

    fn insert(&mut self, slot: Slot) -> Key {
        let id = slot.id;
        let key = self.slots.insert(slot);
        self.ids.insert(id, key);
        key
    }

    // ------------------------------------------------------------ receiving

    /// A frame from the peer. `now` stamps KeepAlives.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Incoming {
        let id = frame.session_id;
        match frame.kind {
            FrameKind::New {
                destination,
                source,
            } => {
                if self.role == Role::Server {
                    return self.accept(id, destination, source, frame.data);
                }
                // A client ignores New (V2Ray discards its data).
                Incoming::Done
            }
            FrameKind::Keep => match frame.data {
                Some(data) => match self.ids.get(&id) {
                    Some(&key) => Incoming::Data { key, data },
                    None => {
                        // V2Ray: unknown ID → End (option 0), data discarded.
                        self.send.push_end(id, false, false);
                        self.wake_writer();
                        Incoming::Done
                    }
                },
                None => Incoming::Done,
            },
            FrameKind::End { error, half_close } => {
                self.remote_end(id, error, half_close);
                Incoming::Done
            }
            FrameKind::KeepAlive => {
                self.last_keepalive = Some(now);
                Incoming::Done
            }
            FrameKind::Hello { window } => {
                self.last_keepalive = Some(now);
                self.hello(window);
                Incoming::Done
            }
            FrameKind::Window { limit } => {
                self.window(id, limit);
                Incoming::Done
            }
        }
    }

    /// The peer's Hello: a server answers the first with its own; either
    /// side then obeys the peer's windows (see [`Flow`]).
    fn hello(&mut self, window: u32) {
        if self.flow.peer.is_some() {
            return;
        }
        if self.role == Role::Server {
            let ours = self.settings.initial_window();
            self.send.push_hello(ours);
            self.flow.grant = Some(ours);
            self.wake_writer();
        } else if self.flow.grant.is_none() {
            // An answer to an offer never made: ignore it.
            return;
        }
        self.flow.peer = Some(window);
        tracing::debug!(
            role = ?self.role,
            peer_window = window,
            "mux per-stream flow control agreed"
        );
        // Every sub-stream has been granted its window from its start (a
        // client grants from its offer on, and a server has none before
        // the Hello); this only guards a peer that breaks that order.
        for slot in self.slots.iter_mut() {
            if slot.flow.window == 0 {
                if let Some(grant) = self.flow.grant {
                    slot.flow.window = grant;
                    slot.flow.granted = slot.flow.consumed + u64::from(grant);
                }
            }
        }
    }

    /// The peer's Window for sub-stream `id`: it may send up to `limit`.
    fn window(&mut self, id: SessionId, limit: u64) {
        let Some(&key) = self.ids.get(&id) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let before = slot
            .flow
            .peer_limit
            .max(self.flow.peer.map_or(0, u64::from));
        slot.flow.peer_limit = slot.flow.peer_limit.max(limit);
        if limit > before {
            let credit = slot.flow.credit.take();
            self.wake(credit);
        }
    }

    /// Server: a New frame.
    fn accept(
        &mut self,
        id: SessionId,
        destination: Destination,
        source: Option<SocketAddr>,
        data: Option<Bytes>,
    ) -> Incoming {
        if self.refusing {
            return Incoming::Done;
        }
        if self.ids.len() >= self.max_sessions && !self.ids.contains_key(&id) {
            self.send.push_end(id, true, false);
            self.wake_writer();
            return Incoming::Done;
        }
        self.total_opened += 1;
        if let Some(old) = self.ids.get(&id).copied() {
            // The peer reused a live ID: V2Ray silently replaces the old
            // session; we end the old sub-stream locally, without an End on
            // the wire (that would close the new one).
            self.abort(old, io::ErrorKind::ConnectionReset);
        }
        let key = self.insert(Slot::new(id, destination.network, self.flow.grant));
        Incoming::Accepted {
            key,
            destination,
            source,
            data,
        }
    }

    /// Puts `data` into sub-stream `key`'s receive buffer. `Pending` (with
    /// `waker` registered and the stall clock started at `now`) while the
    /// buffer is full; data for a sub-stream that can no longer receive is
    /// dropped.
    pub fn deliver(&mut self, key: Key, data: &Bytes, now: Instant, waker: &Waker) -> Poll<()> {
        let granting = self.flow.grant.is_some();
        let contended = granting
            && self
                .slots
                .get(key)
                .is_some_and(|slot| slot.network == Network::Tcp)
            && self.note_activity(key, now);
        let Some(slot) = self.slots.get_mut(key) else {
            return Poll::Ready(());
        };
        // A window that grew may put more than `receive_buffer` in flight.
        let limit = self.settings.receive_buffer.max(slot.flow.window as usize);
        if slot.network == Network::Tcp && data.is_empty() {
            return Poll::Ready(());
        }
        // After the peer's End (or half-close) nothing more may come.
        if !slot.is_live() || slot.remote != Remote::Open {
            self.unblock(key);
            return Poll::Ready(());
        }
        let framed = data.len() + if slot.network == Network::Udp { 2 } else { 0 };
        if slot.recv.is_empty() || slot.recv.len() + framed <= limit {
            if granting && slot.network == Network::Tcp {
                slot.flow.on_data(data.len(), slot.recv.is_empty(), now);
                slot.flow.contended = contended;
            }
            if slot.network == Network::Udp {
                let framing = (data.len() as u16).to_be_bytes();
                slot.recv.push(Bytes::copy_from_slice(&framing));
            }
            slot.recv.push(data.clone());
            self.recv_buffered += framed;
            let reader = slot.reader.take();
            self.wake(reader);
            self.unblock(key);
            return Poll::Ready(());
        }
        slot.space = Some(waker.clone());
        if !matches!(self.blocked, Some((blocked, _)) if blocked == key) {
            self.blocked = Some((key, now));
        }
        Poll::Pending
    }

    fn unblock(&mut self, key: Key) {
        if matches!(self.blocked, Some((blocked, _)) if blocked == key) {
            self.blocked = None;
        }
    }

    /// When [`Self::handle_timeout`] has something to do: the stall deadline
    /// of a delivery that waits for room.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.blocked
            .map(|(_, since)| since + self.settings.stall_timeout)
    }

    /// Ends a sub-stream whose full buffer held the connection's reader for
    /// the stall timeout, with End+error, so one stuck reader cannot hold
    /// every other sub-stream hostage. Returns the stalled sub-stream's ID.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<SessionId> {
        let (key, since) = self.blocked?;
        if now < since + self.settings.stall_timeout {
            return None;
        }
        self.blocked = None;
        let id = self.slots.get(key)?.id;
        if self.abort(key, io::ErrorKind::TimedOut) {
            self.send.push_end(id, true, false);
            self.wake_writer();
        }
        Some(id)
    }

    /// End received. A half-close (bit `80`, without the error bit) on a
    /// sub-stream we still write to only ends its receive direction; any
    /// other End closes the sub-stream.
    fn remote_end(&mut self, id: SessionId, error: bool, half_close: bool) {
        let Some(&key) = self.ids.get(&id) else {
            return;
        };
        let slot = self.slots.get_mut(key).expect("attached IDs name slots");
        let reader = slot.reader.take();
        let space = slot.space.take();
        let credit = slot.flow.credit.take();
        self.wakes.extend(credit);
        if half_close && !error && slot.local == Local::Open {
            // The peer is done writing and still reads: EOF for our reader
            // once `recv` drains; our writes go on, and our own End
            // completes the close.
            slot.remote = Remote::HalfClosed;
        } else {
            slot.remote = Remote::Ended;
            slot.attached = false;
            if error {
                slot.fault = Some(Fault::Reset(io::ErrorKind::ConnectionReset));
                self.recv_buffered -= slot.recv.len();
                slot.recv = RecvBuffer::default();
            }
            // Normally each side sends one End: answer one we have not sent.
            let reply = slot.local == Local::Open;
            slot.local = Local::Ended;
            self.ids.remove(&id);
            self.unblock(key);
            if reply {
                self.send.push_end(id, error, false);
                self.wake_writer();
            }
            self.drain_if_abandoned();
        }
        self.wake(reader);
        self.wake(space);
    }

    /// Fails a sub-stream now (buffered bytes dropped) and detaches it.
    /// Returns whether an End still has to be sent for it.
    fn abort(&mut self, key: Key, kind: io::ErrorKind) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        if slot.attached && self.ids.get(&slot.id) == Some(&key) {
            self.ids.remove(&slot.id);
        }
        slot.attached = false;
        slot.fault = Some(Fault::Reset(kind));
        self.recv_buffered -= slot.recv.len();
        slot.recv = RecvBuffer::default();
        let owed = slot.take_end();
        let reader = slot.reader.take();
        let space = slot.space.take();
        self.wakes.extend(slot.flow.credit.take());
        self.unblock(key);
        self.wake(reader);
        self.wake(space);
        owed
    }

    // ------------------------------------------------ the sub-stream's side

    /// Reads received bytes of `key` into `out`: `Ready(Ok(0))` is EOF
    /// (when `out` had room); `Pending` registers `waker`.
    pub fn read(
        &mut self,
        key: Key,
        out: &mut dyn ReadInto,
        waker: &Waker,
    ) -> Poll<io::Result<usize>> {
        self.read_with(key, waker, |recv| recv.pop_into(out))
    }

    /// Takes the oldest piece of received bytes of `key` whole, without a
    /// copy (a slice of the frame it came in): an empty piece is EOF;
    /// `Pending` registers `waker`. For a stream sub-stream's lent buffer;
    /// the piece counts as read (for windows) when taken.
    pub fn read_piece(&mut self, key: Key, waker: &Waker) -> Poll<io::Result<Bytes>> {
        let mut piece = Bytes::new();
        self.read_with(key, waker, |recv| {
            piece = recv.pop_front();
            piece.len()
        })
        .map_ok(|_| piece)
    }

    /// What [`Engine::read`] and [`Engine::read_piece`] share: `take`
    /// moves bytes out of a non-empty buffer and says how many.
    fn read_with(
        &mut self,
        key: Key,
        waker: &Waker,
        take: impl FnOnce(&mut RecvBuffer) -> usize,
    ) -> Poll<io::Result<usize>> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Poll::Ready(Ok(0));
        };
        let limit = self.settings.receive_buffer.max(slot.flow.window as usize);
        if let Some(Fault::Reset(kind)) = slot.fault {
            return Poll::Ready(Err(io::Error::new(kind, "mux session reset")));
        }
        if !slot.recv.is_empty() {
            let n = take(&mut slot.recv);
            self.recv_buffered -= n;
            if slot.recv.len() < limit {
                let space = slot.space.take();
                self.wake(space);
            }
            self.grant_after_read(key, n);
            return Poll::Ready(Ok(n));
        }
        if slot.remote != Remote::Open {
            return Poll::Ready(Ok(0));
        }
        if slot.fault == Some(Fault::Lost) {
            return Poll::Ready(Err(connection_closed()));
        }
        if !slot.attached {
            return Poll::Ready(Ok(0));
        }
        slot.reader = Some(waker.clone());
        Poll::Pending
    }

    /// Flow control, receiving side: `n` more bytes of `key` were read;
    /// once a quarter of the window was read since the last grant, grant
    /// a window beyond what was read (doubled first if the peer was held
    /// back by it, see [`SlotFlow::on_data`]; within the initial window
    /// while another sub-stream is active). Granting each quarter keeps a
    /// sender that is ahead of us from running dry while a grant travels.
    fn grant_after_read(&mut self, key: Key, n: usize) {
        let Some(initial) = self.flow.grant else {
            return;
        };
        let cap = self.settings.window_cap();
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        // Only while the peer may still send: attached, not reset, no End.
        if slot.network != Network::Tcp || !slot.is_live() || slot.remote != Remote::Open {
            return;
        }
        let flow = &mut slot.flow;
        flow.consumed += n as u64;
        let window = flow.effective_window(initial);
        if flow.granted.saturating_sub(flow.consumed) > u64::from(window - window / 4) {
            return;
        }
        if flow.grow {
            flow.grow = false;
            flow.window = flow.window.saturating_mul(2).min(cap);
        }
        let window = flow.effective_window(initial);
        flow.previous_grant = flow.granted;
        flow.granted = flow.consumed + u64::from(window);
        let (id, limit) = (slot.id, flow.granted);
        self.send.push_window(id, limit);
        self.wake_writer();
    }

    /// Flow control: `key` (a TCP sub-stream) received data at `now`.
    /// Returns whether another one did within [`CONTENDED_FOR`]. The
    /// engine remembers the last two sub-streams that received, so this
    /// costs the same with one sub-stream or thousands.
    fn note_activity(&mut self, key: Key, now: Instant) -> bool {
        let [latest, before] = &mut self.recent;
        match latest {
            Some((last, at)) if *last == key => *at = now,
            _ => {
                *before = latest.take();
                *latest = Some((key, now));
            }
        }
        before.is_some_and(|(other, at)| {
            other != key && now.saturating_duration_since(at) < CONTENDED_FOR
        })
    }

    /// Flow control, sending side: how many bytes `key` may send now
    /// (`usize::MAX` when the peer grants no windows, or for datagrams).
    fn credit(&self, key: Key) -> usize {
        let (Some(initial), Some(slot)) = (self.flow.peer, self.slots.get(key)) else {
            return usize::MAX;
        };
        if slot.network != Network::Tcp {
            return usize::MAX;
        }
        let limit = slot.flow.peer_limit.max(u64::from(initial));
        usize::try_from(limit.saturating_sub(slot.flow.sent)).unwrap_or(usize::MAX)
    }

    /// Fails when `key` can no longer send.
    pub fn check_writable(&self, key: Key) -> io::Result<SessionId> {
        let Some(slot) = self.slots.get(key) else {
            return Err(connection_closed());
        };
        match slot.fault {
            Some(Fault::Reset(kind)) => return Err(io::Error::new(kind, "mux session reset")),
            Some(Fault::Lost) => return Err(connection_closed()),
            None => {}
        }
        if slot.local != Local::Open || slot.remote == Remote::Ended {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "mux session ended",
            ));
        }
        Ok(slot.id)
    }

    /// Queues up to a frame's worth of stream data of `key`, as much as
    /// its fair share allows; `Pending` (waker registered) while the queue
    /// has no room for it.
    pub fn write_stream(
        &mut self,
        key: Key,
        data: &[u8],
        waker: &Waker,
    ) -> Poll<io::Result<usize>> {
        let id = match self.check_writable(key) {
            Ok(id) => id,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let credit = self.credit(key);
        let Some(slot) = self.slots.get_mut(key) else {
            return Poll::Ready(Err(connection_closed()));
        };
        if credit == 0 && !data.is_empty() {
            slot.flow.credit = Some(waker.clone());
            return Poll::Pending;
        }
        let push = self.send.push_stream(id, &data[..data.len().min(credit)]);
        if let Push::Taken(taken) = push {
            slot.flow.sent += taken as u64;
        }
        self.after_push(push, id, waker)
    }

    /// Queues one datagram of `key` as one frame; `Pending` while the queue
    /// has no room for it. A datagram over `max_packet` (65,535 bytes once
    /// the peer agreed to large packets, see
    /// [`MuxSettings::large_packets_agreed`]) is dropped, as an oversize
    /// datagram would be.
    pub fn write_packet(&mut self, key: Key, packet: &[u8], waker: &Waker) -> Poll<io::Result<()>> {
        let id = match self.check_writable(key) {
            Ok(id) => id,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let max_packet = self.settings.packet_limit();
        if packet.len() > max_packet {
            tracing::debug!(
                id,
                len = packet.len(),
                max_packet,
                "dropping an oversize datagram"
            );
            return Poll::Ready(Ok(()));
        }
        let push = self.send.push_packet(id, packet);
        self.after_push(push, id, waker).map_ok(|_| ())
    }

    fn after_push(&mut self, push: Push, id: SessionId, waker: &Waker) -> Poll<io::Result<usize>> {
        match push {
            Push::Taken(taken) => {
                self.wake_writer();
                Poll::Ready(Ok(taken))
            }
            Push::Full => {
                self.send.wait(id, waker);
                Poll::Pending
            }
            Push::Closed => Poll::Ready(Err(connection_closed())),
        }
    }

    /// The sub-stream's writer is done. TCP: End with the half-close bit,
    /// reads go on until the peer's End; UDP: a plain End (datagram
    /// sessions have no half-close, as in V2Ray); after the peer's
    /// half-close: a plain End that completes the close.
    pub fn shutdown(&mut self, key: Key) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if !slot.is_live() || slot.local != Local::Open {
            return;
        }
        let id = slot.id;
        if slot.remote == Remote::HalfClosed {
            slot.local = Local::Ended;
            slot.attached = false;
            self.ids.remove(&id);
            self.send.push_end(id, false, false);
            self.wake_writer();
            self.drain_if_abandoned();
        } else if slot.network == Network::Tcp {
            slot.local = Local::HalfClosed;
            self.send.push_end(id, false, true);
            self.wake_writer();
        } else {
            slot.local = Local::Ended;
            self.send.push_end(id, false, false);
            self.wake_writer();
        }
    }

    /// The sub-stream's handle is gone: its buffered bytes are dropped and
    /// its ID freed. Dropped before any shutdown it is an abort (End+error);
    /// after either side's half-close a plain End ends it without
    /// discarding what the peer has yet to read.
    pub fn release(&mut self, key: Key) {
        let Some(mut slot) = self.slots.remove(key) else {
            return;
        };
        self.recv_buffered -= slot.recv.len();
        self.unblock(key);
        self.wake(slot.space.take());
        let live = slot.is_live();
        let error = slot.local == Local::Open && slot.remote != Remote::HalfClosed;
        let owed = live && slot.take_end();
        if slot.attached && self.ids.get(&slot.id) == Some(&key) {
            self.ids.remove(&slot.id);
        }
        if owed {
            self.send.push_end(slot.id, error, false);
            self.wake_writer();
        }
        self.drain_if_abandoned();
    }

    // --------------------------------------------------------------- sending

    /// Moves the next batch into the writer's two buffers (both empty on
    /// entry), or says why there is none; registers `waker` when idle.
    pub fn poll_transmit(
        &mut self,
        first: &mut BytesMut,
        second: &mut BytesMut,
        waker: &Waker,
    ) -> Transmit {
        if self.send.take(first, second, &mut self.wakes) {
            return Transmit::Write;
        }
        if self.send.is_closed() {
            return Transmit::Closed;
        }
        if self.send.is_draining() {
            return Transmit::Shutdown;
        }
        self.send.wait_writer(waker);
        Transmit::Idle
    }

    /// Whether the connection's reader may decode the next frame: not while
    /// the answers it provoked are over the slack (registers `waker`).
    pub fn poll_read_room(&mut self, waker: &Waker) -> Poll<()> {
        if !self.send.answers_full() {
            return Poll::Ready(());
        }
        self.send.wait_reader(waker);
        Poll::Pending
    }
}

/// Wakers to wake once the engine is let go: the first two inline, so
/// that the common case (a reader, a writer) allocates nothing.
#[derive(Default)]
pub struct Wakes {
    inline: [Option<Waker>; 2],
    len: usize,
    more: Vec<Waker>,
}

impl Wakes {
    fn push(&mut self, waker: Waker) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(waker),
            None => self.more.push(waker),
        }
        self.len += 1;
    }

    /// Wakes them all.
    pub fn wake_all(self) {
        self.inline.into_iter().flatten().for_each(Waker::wake);
        self.more.into_iter().for_each(Waker::wake);
    }
}

/// The error of every operation on a closed connection.
pub fn connection_closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "mux connection closed")
}

/// Where a read puts bytes: the caller's `ReadBuf` in [`crate::stream`], a
/// `Vec` (up to its capacity) in tests.
pub trait ReadInto {
    /// Bytes that still fit.
    fn room(&self) -> usize;
    /// Appends `bytes` (at most [`Self::room`] of them).
    fn put(&mut self, bytes: &[u8]);
}

impl ReadInto for Vec<u8> {
    fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The sub-streams by [`Key`]: a slab, so that the lookups every read and
/// write makes index a vector instead of hashing. A key is the slot's
/// index (low 32 bits) and its generation (high 32 bits), which moves on
/// each release so an old key names nothing.
#[derive(Default)]
struct Slots {
    entries: Vec<Entry>,
    /// Indexes of empty entries, reused before the vector grows.
    free: Vec<u32>,
}

#[derive(Default)]
struct Entry {
    generation: u32,
    slot: Option<Slot>,
}

impl Slots {
    fn split(key: Key) -> (usize, u32) {
        ((key & u64::from(u32::MAX)) as usize, (key >> 32) as u32)
    }

    fn insert(&mut self, slot: Slot) -> Key {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry::default());
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.slot = Some(slot);
        u64::from(entry.generation) << 32 | u64::from(index)
    }

    fn get(&self, key: Key) -> Option<&Slot> {
        let (index, generation) = Slots::split(key);
        let entry = self.entries.get(index)?;
        (entry.generation == generation).then_some(entry.slot.as_ref())?
    }

    fn get_mut(&mut self, key: Key) -> Option<&mut Slot> {
        let (index, generation) = Slots::split(key);
        let entry = self.entries.get_mut(index)?;
        (entry.generation == generation).then_some(entry.slot.as_mut())?
    }

    fn remove(&mut self, key: Key) -> Option<Slot> {
        let (index, generation) = Slots::split(key);
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        let slot = entry.slot.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index as u32);
        Some(slot)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.entries
            .iter_mut()
            .filter_map(|entry| entry.slot.as_mut())
    }
}

/// A sub-stream's received bytes: a FIFO of frame data.
///
/// Frames of at least [`ZERO_COPY_MIN`] bytes are kept as the `Bytes` the
/// decoder split off the connection's read buffer, so bulk data is copied
/// once less on its way to the reader; smaller ones are copied into a
/// right-sized allocation, so that a few stored bytes never pin a whole
/// read block. An empty buffer holds no allocation, so an idle sub-stream
/// costs no memory.
#[derive(Default)]
struct RecvBuffer {
    chunks: VecDeque<Bytes>,
    len: usize,
}

/// Frames this large are queued without a copy (see [`RecvBuffer`]).
const ZERO_COPY_MIN: usize = 8 * 1024;
/// Most bytes of small pieces [`RecvBuffer::pop_front`] hands out as one.
const GATHER: usize = 60 * 1024;

impl RecvBuffer {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() >= ZERO_COPY_MIN {
            self.chunks.push_back(bytes);
        } else {
            self.chunks.push_back(Bytes::copy_from_slice(&bytes));
        }
    }

    /// Takes the oldest piece whole (empty when there is none); a run of
    /// small pieces (copied when queued anyway) comes as one, up to
    /// [`GATHER`] bytes, so that whoever writes them onward makes one
    /// write of them, not one each.
    fn pop_front(&mut self) -> Bytes {
        let small = |piece: &Bytes| piece.len() < ZERO_COPY_MIN;
        let mut piece = self.chunks.pop_front().unwrap_or_default();
        if small(&piece) && self.chunks.front().is_some_and(small) {
            let mut run = BytesMut::with_capacity(GATHER);
            run.extend_from_slice(&piece);
            while let Some(next) = self.chunks.front() {
                if !small(next) || run.len() + next.len() > GATHER {
                    break;
                }
                run.extend_from_slice(next);
                self.chunks.pop_front();
            }
            piece = run.freeze();
        }
        self.len -= piece.len();
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        piece
    }

    /// Moves as many bytes as fit into `out`; returns how many.
    fn pop_into(&mut self, out: &mut dyn ReadInto) -> usize {
        let mut moved = 0;
        while out.room() > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(out.room());
            out.put(&front[..n]);
            moved += n;
            if n == front.len() {
                self.chunks.pop_front();
            } else {
                front.advance(n);
            }
        }
        self.len -= moved;
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_out_whole_and_runs_of_small_ones_together() {
        let mut recv = RecvBuffer::default();
        let sizes = [100, 200, 9_000, 50, 60, 20_000, 7_000];
        let mut all = Vec::new();
        for (i, len) in sizes.into_iter().enumerate() {
            let piece = vec![i as u8; len];
            all.extend_from_slice(&piece);
            recv.push(Bytes::from(piece));
        }
        // Many small ones: a run stops at GATHER bytes.
        for i in 0..20u8 {
            let piece = vec![100 + i; 4_000];
            all.extend_from_slice(&piece);
            recv.push(Bytes::from(piece));
        }
        let mut lens = Vec::new();
        let mut got = Vec::new();
        loop {
            let piece = recv.pop_front();
            if piece.is_empty() {
                break;
            }
            lens.push(piece.len());
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, all);
        assert_eq!(recv.len(), 0);
        assert_eq!(
            lens,
            [300, 9_000, 110, 20_000, 7_000 + 13 * 4_000, 7 * 4_000]
        );
    }
}
