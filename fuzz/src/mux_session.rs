//! `mux_session`: the Mux.Cool session engine (`rayback_mux::engine`, every
//! sub-stream's state and transition) under a fuzzer-written script. The
//! engine is sans-IO, so this drives it directly, as the connection's
//! driver (`conn.rs`) does: no runtime, no sockets, made-up time.
//!
//! ```text
//!   script ──▶ the peer's frames ──▶ handle_frame / deliver ──▶ Engine ──▶ poll_transmit ──▶ FrameCodec ──▶ checks
//!   script ──▶ the sub-streams' reads, writes, shutdowns, releases ──┘
//! ```
//!
//! # The script
//!
//! Byte 0 picks the role (bit 0: client) and small settings (bits 1–2 the
//! receive buffer, 3–4 the send queue, 5–6 the frame size, 7 the session
//! limit; a client with bit 7 also offers per-stream flow control); see
//! [`Settings::decode`]. Then one operation per byte (the byte modulo 16),
//! each taking the argument bytes it needs (missing bytes read as 0), at
//! most [`MAX_STEPS`] of them:
//!
//! * the peer sends New (with or without data), Keep (up to 4 KiB, near
//!   64 KiB, or without data), End (error and half-close bits),
//!   KeepAlive, or flow control's Hello (any window, 0 included) and
//!   Window (below, at or past what the sub-stream sent); or, obeying our
//!   windows, exactly as much as a sub-stream's last grant allows. Frames
//!   queue up as on a carrier; the reader hands them to `handle_frame` one
//!   by one and delivers the data they carry, and stops while a delivery
//!   waits for room (as the driver does);
//! * a sub-stream (the client's opened ones, the server's accepted ones)
//!   reads, writes (stream bytes or one datagram), shuts down or is
//!   released; a client opens a new one or drops and adds handles;
//! * the writer takes a batch (`poll_transmit`); time passes and the stall
//!   deadline is handled; the connection closes, drains if idle, or queues
//!   a KeepAlive.
//!
//! At the end every queued batch is written, the connection closes, every
//! sub-stream reads what is left and is released.
//!
//! # Invariants (a panic is a finding)
//!
//! * everything transmitted decodes as whole frames, batch by batch; a
//!   server never sends New, nor data for an ID the peer never opened; a
//!   client sends one New per sub-stream it opened, with its destination,
//!   data only after that New and never after its own End;
//! * the data sub-streams wrote reaches the wire per session ID in order
//!   and unaltered (a prefix at every moment; all of it once the queue is
//!   written, unless the connection closed);
//! * every End on the wire is one a transition queued, with its bits, in
//!   order per ID: our shutdown (half-close bit on TCP), a release that
//!   still owed one (error bit unless a side half-closed), the answer to
//!   the peer's End (its error bit), a stall (error), a New over the limit
//!   (error), a Keep for an unknown ID (plain); all of them are written
//!   unless the connection closed; `shutdown` moves the states as the
//!   table in `engine.rs` says;
//! * a sub-stream reads, in order and unaltered, a prefix of what the peer
//!   sent that session before its End (core packet framing on UDP), all of
//!   it when it reads EOF; errors match the sub-stream's fault;
//! * at most one sub-stream per ID is attached, and `active_sessions()`
//!   counts them; a stall deadline exists exactly while a delivery waits,
//!   and `handle_timeout` acts exactly when it has passed;
//! * `buffered_bytes()` stays within the bound `lib.rs` documents: per
//!   live sub-stream `max(receive_buffer, one frame)`, plus `send_queue`,
//!   plus one write (64 KiB and its frame headers), plus 64 bytes per
//!   step or peer frame for the End, KeepAlive and New frames queued
//!   outside the bound;
//! * after `close()` and the release of every sub-stream,
//!   `active_sessions()` and `buffered_bytes()` are 0.
//!
//! Per-stream flow control (the Rayback extension, `engine.rs` `Flow`):
//!
//! * a client sends one Hello, only if it offered, before any New; a
//!   server sends one, only after the peer's first Hello; flow control is
//!   agreed exactly then (`flow_control()`);
//! * once the peer's Hello is obeyed, a TCP sub-stream's writes never take
//!   it past the larger of the peer's window and its highest Window, and
//!   a write with no credit left waits;
//! * a Window leaves only after our Hello, names a TCP sub-stream, and
//!   grants at most the window cap beyond what that ID's readers read;
//! * a sub-stream granted windows from its start that read everything its
//!   peer sent is always granted more than that (a reader that keeps up
//!   never leaves its peer without credit), once the queue is written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rayback_core::{Address, Destination, Network};
use rayback_mux::engine::{Engine, Fault, Incoming, Key, Local, Remote, Role, Transmit};
use rayback_mux::settings::V2RAY_MAX_PACKET;
use rayback_mux::{Frame, FrameCodec, FrameKind, MuxSettings, SessionId};

/// Most operations one input runs.
pub const MAX_STEPS: usize = 256;
/// The largest frame a receive buffer always takes: a 65535-byte datagram
/// and its 2-byte length.
const ONE_FRAME: usize = 65_537;
/// Most bytes one sub-stream write queues.
const MAX_WRITE: usize = 64 * 1024;
/// Allowance per step or peer frame for frames queued outside the send
/// bound (End: 6 bytes, KeepAlive: 6, a client's New: under 64).
const SMALL_FRAME: usize = 64;
/// How long a full receive buffer may hold the reader.
const STALL: Duration = Duration::from_secs(1);

/// Runs one script (see the module docs).
pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut sim = Sim::new(Settings::decode(first), rest);
    let mut steps = 0;
    while steps < MAX_STEPS && !sim.script.done() {
        sim.step();
        steps += 1;
        sim.events += 1;
        sim.pump();
        sim.check();
    }
    sim.finish();
}

// ---------------------------------------------------------------------------
// Script, settings, data

/// The side under test and its knobs, small so that limits are reached.
struct Settings {
    role: Role,
    mux: MuxSettings,
    /// Server: the session limit; client: the concurrency (`None` above 2).
    max_sessions: usize,
}

impl Settings {
    fn decode(byte: u8) -> Settings {
        let pick = |bits: u8, options: &[usize]| options[bits as usize % options.len()];
        Settings {
            role: if byte & 1 != 0 {
                Role::Client
            } else {
                Role::Server
            },
            mux: MuxSettings {
                receive_buffer: pick(byte >> 1, &[256, 1024, 4096, 65536]),
                send_queue: pick(byte >> 3, &[64, 512, 4096, 65536]),
                max_frame_data: pick(byte >> 5, &[16, 256, 4096, 61440]),
                stall_timeout: STALL,
                max_packet: V2RAY_MAX_PACKET,
                large_packets_agreed: None,
                // A client with many sessions offers per-stream windows (a
                // server answers whenever the peer's Hello comes).
                offer_flow_control: byte & 0x81 == 0x81,
                // Small, so that growth reaches the cap.
                max_window: 4 * pick(byte >> 1, &[256, 1024, 4096, 65536]),
            },
            max_sessions: if byte & 0x80 != 0 { 64 } else { 2 },
        }
    }

    /// The most `buffered_bytes()` may report with `alive` sub-streams
    /// after `events` steps and peer frames.
    fn bound(&self, alive: usize, events: usize) -> usize {
        let frame_data = self.mux.max_frame_data.clamp(1, u16::MAX as usize);
        // A window that grew lets a sub-stream buffer up to the cap.
        let per_stream = self.mux.receive_buffer.max(self.mux.max_window);
        alive * per_stream.max(ONE_FRAME)
            + self.mux.send_queue
            + MAX_WRITE
            + 8 * MAX_WRITE.div_ceil(frame_data)
            + SMALL_FRAME * events
    }
}

struct Script<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Script<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// The next byte; 0 past the end.
    fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a sub-stream reads for one data frame: the bytes (TCP), or core
/// packet framing (UDP).
fn as_read(network: Network, data: &[u8], out: &mut Vec<u8>) {
    if network == Network::Udp {
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(data);
}

/// Whether a sub-stream in `state` still owes the peer an End when it is
/// released or reset: it is live and sent none, or only a half-close the
/// peer has not answered.
fn owes_end((local, remote, fault, attached): (Local, Remote, Option<Fault>, bool)) -> bool {
    fault.is_none()
        && attached
        && (local == Local::Open || (local == Local::HalfClosed && remote == Remote::Open))
}

/// A frame without data.
fn short(session_id: SessionId, kind: FrameKind) -> Frame {
    let data = None;
    Frame {
        session_id,
        kind,
        data,
    }
}

fn destination(flags: u8, n: u16) -> Destination {
    let network = if flags & 1 != 0 {
        Network::Udp
    } else {
        Network::Tcp
    };
    let address = match (flags >> 1) % 3 {
        0 => Address::Ipv4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
        1 => Address::Domain(format!("s{n}.fuzz")),
        _ => Address::Ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n)),
    };
    Destination::new(network, address, n)
}

/// The visitor a New names (the Rayback source extension), by `flags`:
/// none, an IPv4 or an IPv6 source.
fn source(flags: u8, n: u16) -> Option<SocketAddr> {
    match flags >> 6 {
        0 | 1 => None,
        2 => Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, n as u8), n))),
        _ => Some(SocketAddr::from((
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n),
            n,
        ))),
    }
}

// ---------------------------------------------------------------------------
// The simulation

/// A sub-stream the script holds (its handle), and what it knows of it.
struct Sub {
    key: Key,
    id: SessionId,
    network: Network,
    /// What the peer sent it before its End, as the reader sees it.
    expected: Vec<u8>,
    /// What it read.
    got: Vec<u8>,
    /// The peer sent End (of any kind) while this sub-stream had its ID.
    peer_ended: bool,
    /// Stream bytes its writes queued (flow control counts from the first).
    sent: u64,
    /// The highest limit the peer's Windows named for it.
    peer_limit: u64,
    /// We granted it windows from its start (our Hello came first).
    windowed: bool,
}

impl Sub {
    fn new(key: Key, id: SessionId, network: Network) -> Sub {
        let (expected, got) = (Vec::new(), Vec::new());
        let peer_ended = false;
        Sub {
            key,
            id,
            network,
            expected,
            got,
            peer_ended,
            sent: 0,
            peer_limit: 0,
            windowed: false,
        }
    }
}

struct Sim<'a> {
    script: Script<'a>,
    settings: Settings,
    engine: Engine,
    now: Instant,
    seed: u64,
    /// Steps plus peer frames handled (for the bound).
    events: usize,
    subs: Vec<Sub>,
    /// The peer's frames the reader has not handled yet.
    inbound: VecDeque<Frame>,
    /// A delivery waiting for room: the reader reads nothing meanwhile.
    pending: Option<(Key, Bytes)>,
    closed: bool,
    /// Per ID: what sub-streams wrote (queued), in order.
    written: HashMap<SessionId, Vec<u8>>,
    /// Per ID: how much of `written` reached the wire.
    on_wire: HashMap<SessionId, usize>,
    /// Server: IDs the engine accepted.
    accepted: HashSet<SessionId>,
    /// Client: opened, New not yet on the wire, with the destination.
    unannounced: HashMap<SessionId, (Destination, Option<SocketAddr>)>,
    /// Client: New on the wire, no End of ours after it.
    announced: HashSet<SessionId>,
    /// Per ID: the Ends transitions queued and the wire has not shown yet,
    /// in order.
    owed_ends: HashMap<SessionId, VecDeque<FrameKind>>,
    /// Flow control: we grant windows (our Hello is queued).
    granting: bool,
    /// The peer's Hello we obey: its window.
    peer_window: Option<u32>,
    /// Hellos and News of ours on the wire.
    hellos_on_wire: usize,
    news_on_wire: usize,
    /// Per ID: the highest Window limit on the wire since its New was
    /// handled or opened.
    granted: HashMap<SessionId, u64>,
    /// Per ID: TCP bytes its sub-streams read.
    read_by_id: HashMap<SessionId, u64>,
}

impl<'a> Sim<'a> {
    fn new(settings: Settings, bytes: &'a [u8]) -> Sim<'a> {
        let mut engine = Engine::new(settings.role, settings.mux.clone(), settings.max_sessions);
        let offer = settings.mux.offer_flow_control;
        if settings.role == Role::Client {
            // The `MuxClient` handle.
            engine.add_handle();
        }
        Sim {
            script: Script { bytes, at: 0 },
            settings,
            engine,
            now: Instant::now(),
            seed: bytes.len() as u64,
            events: 0,
            subs: Vec::new(),
            inbound: VecDeque::new(),
            pending: None,
            closed: false,
            written: HashMap::new(),
            on_wire: HashMap::new(),
            accepted: HashSet::new(),
            unannounced: HashMap::new(),
            announced: HashSet::new(),
            owed_ends: HashMap::new(),
            granting: offer,
            peer_window: None,
            hellos_on_wire: 0,
            news_on_wire: 0,
            granted: HashMap::new(),
            read_by_id: HashMap::new(),
        }
    }

    fn client(&self) -> bool {
        self.settings.role == Role::Client
    }

    /// `len` bytes that differ from every other call's, so reordered or
    /// misrouted data shows.
    fn pattern(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.seed = splitmix(self.seed);
            out.extend_from_slice(&self.seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A session ID for a peer frame: mostly one a sub-stream has.
    fn peer_id(&mut self) -> SessionId {
        let byte = self.script.byte();
        if byte < 0xa0 && !self.subs.is_empty() {
            self.subs[byte as usize % self.subs.len()].id
        } else {
            SessionId::from(byte % 16)
        }
    }

    /// The index of a sub-stream, from an argument byte.
    fn pick(&mut self) -> Option<usize> {
        let byte = self.script.byte() as usize;
        (!self.subs.is_empty()).then(|| byte % self.subs.len())
    }

    fn state(&self, key: Key) -> (Local, Remote, Option<Fault>, bool) {
        self.engine
            .state(key)
            .expect("a sub-stream is known until released")
    }

    /// The sub-stream the engine attaches to `id`, checking there is at
    /// most one.
    fn attached(&self, id: SessionId) -> Option<usize> {
        let mut found = self
            .subs
            .iter()
            .enumerate()
            .filter(|(_, sub)| sub.id == id && self.state(sub.key).3)
            .map(|(index, _)| index);
        let first = found.next();
        assert!(
            found.next().is_none(),
            "two sub-streams attached to id {id}"
        );
        first
    }

    fn step(&mut self) {
        let op = self.script.byte() % 16;
        match op {
            0 => {
                let id = self.peer_id();
                let flags = self.script.byte();
                let len = self.script.byte() as usize * 8;
                self.peer_new(id, flags, len);
            }
            1 | 2 => {
                let id = self.peer_id();
                let byte = self.script.byte() as usize;
                let len = if op == 1 {
                    byte * 16
                } else {
                    u16::MAX as usize - byte * 64
                };
                let data = self.pattern(len);
                self.peer(Frame::keep(id, data.into()));
            }
            3 => {
                let id = self.peer_id();
                self.peer(short(id, FrameKind::Keep));
            }
            4 => {
                let id = self.peer_id();
                let flags = self.script.byte();
                let error = flags & 1 != 0;
                let half_close = flags & 2 != 0;
                self.peer(short(id, FrameKind::End { error, half_close }));
            }
            5 => self.peer(short(0, FrameKind::KeepAlive)),
            6 => {
                let flags = self.script.byte();
                if self.client() {
                    self.open(flags);
                } else {
                    let id = SessionId::from(flags >> 4);
                    self.peer_new(id, flags, 0);
                }
            }
            7 | 15 => {
                let Some(index) = self.pick() else { return };
                let room = [1, 7, 64, 1000, 70 * 1024][self.script.byte() as usize % 5];
                self.read(index, room);
            }
            8 => {
                let Some(index) = self.pick() else { return };
                let byte = self.script.byte();
                self.write(index, byte);
            }
            9 => {
                let Some(index) = self.pick() else { return };
                self.shutdown(index);
            }
            10 => {
                let Some(index) = self.pick() else { return };
                let sub = self.subs.swap_remove(index);
                let (local, remote, ..) = self.state(sub.key);
                if owes_end(self.state(sub.key)) {
                    // An abort unless either side half-closed.
                    let error = local == Local::Open && remote != Remote::HalfClosed;
                    self.owe_end(sub.id, error, false);
                }
                self.engine.release(sub.key);
                assert!(self.engine.state(sub.key).is_none());
            }
            11 => {
                self.transmit();
            }
            12 => {
                let by = [0, 1, 10, 500, 999, 1000, 2000, 60_000][self.script.byte() as usize % 8];
                self.advance(Duration::from_millis(by));
            }
            13 => {
                if self.script.byte() < 0x40 {
                    self.close();
                } else {
                    let idle = self.engine.active_sessions() == 0;
                    assert_eq!(self.engine.drain_if_idle(), idle);
                    if idle {
                        assert!(self.engine.is_refusing());
                    }
                }
            }
            _ => match self.script.byte() % 6 {
                0 => self.engine.queue_keepalive(),
                1 => self.engine.add_handle(),
                2 => self.engine.drop_handle(),
                3 => {
                    let pick = self.script.byte() as usize % 7;
                    let window = [0, 1, 300, 4096, 65_536, 1 << 20, u32::MAX][pick];
                    self.peer(short(0, FrameKind::Hello { window }));
                }
                4 => {
                    let id = self.peer_id();
                    let sent = self.attached(id).map_or(0, |index| self.subs[index].sent);
                    let limit = match self.script.byte() % 7 {
                        0 => 0,
                        1 => sent / 2,
                        2 => sent,
                        3 => sent + 1,
                        4 => sent + 1000,
                        5 => sent + 65_536,
                        _ => u64::MAX,
                    };
                    self.peer(short(id, FrameKind::Window { limit }));
                }
                _ => self.peer_up_to_grant(),
            },
        }
    }

    // ------------------------------------------------------------ the peer

    fn peer_new(&mut self, id: SessionId, flags: u8, len: usize) {
        let n = id.wrapping_add(self.events as u16);
        let to = destination(flags, n);
        let data = (flags & 8 != 0).then(|| self.pattern(len).into());
        let mut frame = Frame::new_session(id, to, data);
        if let FrameKind::New { source: from, .. } = &mut frame.kind {
            *from = source(flags, n);
        }
        self.peer(frame);
    }

    /// A peer that obeys our windows: as much data as our grant for a
    /// sub-stream still allows (the grant it last saw on the wire).
    fn peer_up_to_grant(&mut self) {
        let id = self.peer_id();
        let Some(index) = self.attached(id) else {
            return;
        };
        let sub = &self.subs[index];
        if !sub.windowed || sub.network != Network::Tcp {
            return;
        }
        let left = self
            .peer_may_send(id)
            .saturating_sub(sub.expected.len() as u64);
        if left > 0 {
            let data = self.pattern(left.min(u64::from(u16::MAX)) as usize);
            self.peer(Frame::keep(id, data.into()));
        }
    }

    /// How far the peer may send on `id` by what our grants on the wire
    /// said: the initial window (our Hello's), or a later Window.
    fn peer_may_send(&self, id: SessionId) -> u64 {
        let initial = self.settings.mux.receive_buffer.max(1) as u64;
        self.granted.get(&id).copied().unwrap_or(0).max(initial)
    }

    /// The peer sends `frame`: it waits on the carrier for the reader.
    fn peer(&mut self, frame: Frame) {
        if !self.closed {
            self.inbound.push_back(frame);
        }
    }

    /// The reader: finishes a waiting delivery, then hands frames to the
    /// engine until one's delivery waits or answers stop it.
    fn pump(&mut self) {
        loop {
            if let Some((key, data)) = &self.pending {
                match self.engine.deliver(*key, data, self.now, Waker::noop()) {
                    Poll::Ready(()) => self.pending = None,
                    Poll::Pending => break,
                }
            }
            if self.closed || self.engine.poll_read_room(Waker::noop()).is_pending() {
                break;
            }
            let Some(frame) = self.inbound.pop_front() else {
                break;
            };
            self.events += 1;
            self.handle(frame);
        }
        assert_eq!(
            self.pending.is_some(),
            self.engine.next_timeout().is_some(),
            "a stall deadline exists exactly while a delivery waits"
        );
    }

    fn handle(&mut self, frame: Frame) {
        let id = frame.session_id;
        let before = self.attached(id);
        let state_before = before.map(|index| self.state(self.subs[index].key));
        let sent = frame.clone();
        let incoming = self.engine.handle_frame(frame, self.now);
        match (sent.kind, incoming) {
            (
                FrameKind::New {
                    destination: to,
                    source: from,
                },
                Incoming::Accepted {
                    key,
                    destination,
                    source,
                    data,
                },
            ) => {
                assert_eq!(self.settings.role, Role::Server, "a client accepted a New");
                assert_eq!(destination, to);
                assert_eq!(source, from, "the New's source not handed on");
                assert_eq!(data, sent.data);
                assert!(self.subs.iter().all(|sub| sub.key != key), "a reused key");
                assert_eq!(self.state(key), (Local::Open, Remote::Open, None, true));
                if let Some(old) = before {
                    let reset = Some(Fault::Reset(io::ErrorKind::ConnectionReset));
                    assert_eq!(self.state(self.subs[old].key).2, reset);
                }
                self.accepted.insert(id);
                self.granted.remove(&id);
                let mut sub = Sub::new(key, id, to.network);
                sub.windowed = self.granting;
                if let Some(data) = data {
                    as_read(sub.network, &data, &mut sub.expected);
                    self.pending = Some((key, data));
                }
                self.subs.push(sub);
            }
            (FrameKind::New { .. }, Incoming::Done) => {
                let refusing = self.client() || self.engine.is_refusing();
                let full =
                    before.is_none() && self.engine.active_sessions() >= self.settings.max_sessions;
                assert!(refusing || full, "a New neither accepted nor refused");
                if !refusing {
                    self.owe_end(id, true, false);
                }
            }
            (FrameKind::Keep, Incoming::Data { key, data }) => {
                let index = before.expect("data for a sub-stream not attached");
                let sub = &mut self.subs[index];
                assert_eq!(sub.key, key, "data routed to the wrong sub-stream");
                assert_eq!(Some(&data), sent.data.as_ref());
                if !sub.peer_ended {
                    as_read(sub.network, &data, &mut sub.expected);
                }
                self.pending = Some((key, data));
            }
            (FrameKind::Keep, Incoming::Done) => {
                assert!(
                    sent.data.is_none() || before.is_none(),
                    "data for attached id {id} dropped"
                );
                if sent.data.is_some() {
                    self.owe_end(id, false, false);
                }
            }
            (FrameKind::End { error, half_close }, Incoming::Done) => {
                let Some(index) = before else { return };
                self.subs[index].peer_ended = true;
                let key = self.subs[index].key;
                let (local, remote, fault, attached) = self.state(key);
                if !attached && state_before.map(|state| state.0) == Some(Local::Open) {
                    // Answered once, with the same error bit.
                    self.owe_end(id, error, false);
                }
                if error {
                    let reset = Some(Fault::Reset(io::ErrorKind::ConnectionReset));
                    assert_eq!((fault, self.engine.received(key)), (reset, 0));
                }
                if half_close && !error && remote == Remote::HalfClosed {
                    assert_eq!((local, attached), (Local::Open, true));
                } else {
                    assert_eq!(
                        (local, remote, attached),
                        (Local::Ended, Remote::Ended, false)
                    );
                }
            }
            (FrameKind::KeepAlive, Incoming::Done) => {
                assert_eq!(self.engine.since_keepalive(self.now), Some(Duration::ZERO));
            }
            (FrameKind::Hello { window }, Incoming::Done) => {
                assert_eq!(self.engine.since_keepalive(self.now), Some(Duration::ZERO));
                // A server answers the first; a client obeys the answer to
                // its offer; later ones change nothing.
                if self.peer_window.is_none() && (self.granting || !self.client()) {
                    self.granting = true;
                    self.peer_window = Some(window);
                }
                assert_eq!(self.engine.flow_control(), self.peer_window.is_some());
            }
            (FrameKind::Window { limit }, Incoming::Done) => {
                if let Some(index) = before {
                    let sub = &mut self.subs[index];
                    sub.peer_limit = sub.peer_limit.max(limit);
                }
            }
            (kind, incoming) => panic!("{kind:?} answered with {incoming:?}"),
        }
    }

    // ------------------------------------------------------- the sub-streams

    fn open(&mut self, flags: u8) {
        let concurrency = (self.settings.max_sessions == 2).then_some(2);
        let to = destination(flags, self.events as u16);
        let from = source(flags, self.events as u16);
        match self.engine.open_from(&to, from.as_ref(), concurrency, None) {
            Ok(key) => {
                let id = self.engine.session_id(key);
                assert!(self.attached(id).is_none(), "id {id} allocated twice");
                assert!(self.unannounced.insert(id, (to.clone(), from)).is_none());
                self.granted.remove(&id);
                let mut sub = Sub::new(key, id, to.network);
                sub.windowed = self.granting;
                self.subs.push(sub);
            }
            Err(error) if error.is_closed() => assert!(self.engine.is_refusing()),
            Err(error) => {
                assert!(error.is_full(), "open failed: {error}");
                assert!(self.engine.active_sessions() >= 2);
            }
        }
    }

    /// One read of up to `room` bytes; returns whether it may go on
    /// (bytes came).
    fn read(&mut self, index: usize, room: usize) -> bool {
        let key = self.subs[index].key;
        let (_, remote, fault, attached) = self.state(key);
        let buffered = self.engine.received(key);
        let mut out = Vec::with_capacity(room);
        let result = self.engine.read(key, &mut out, Waker::noop());
        let sub = &mut self.subs[index];
        match result {
            Poll::Ready(Ok(0)) => {
                assert!(!matches!(fault, Some(Fault::Reset(_))), "EOF on a reset");
                assert!(
                    remote != Remote::Open || !attached,
                    "EOF on an open sub-stream"
                );
                assert!(
                    sub.got == sub.expected,
                    "id {}: EOF after {} of {} bytes the peer sent",
                    sub.id,
                    sub.got.len(),
                    sub.expected.len()
                );
                false
            }
            Poll::Ready(Ok(n)) => {
                assert_eq!(n, out.len());
                assert!(n <= room);
                if sub.network == Network::Tcp {
                    *self.read_by_id.entry(sub.id).or_default() += n as u64;
                }
                sub.got.extend_from_slice(&out);
                assert!(
                    sub.expected.starts_with(&sub.got),
                    "id {}: read {} bytes, not a prefix of the {} the peer sent",
                    sub.id,
                    sub.got.len(),
                    sub.expected.len()
                );
                true
            }
            Poll::Ready(Err(error)) => {
                match fault {
                    Some(Fault::Reset(kind)) => assert_eq!(error.kind(), kind),
                    Some(Fault::Lost) => {
                        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
                        assert_eq!(buffered, 0, "an error before the buffered bytes");
                    }
                    None => panic!("read failed on a healthy sub-stream: {error}"),
                }
                false
            }
            Poll::Pending => {
                assert_eq!(
                    (remote, fault, attached, buffered),
                    (Remote::Open, None, true, 0)
                );
                false
            }
        }
    }

    fn write(&mut self, index: usize, byte: u8) {
        let (key, id, network) = {
            let sub = &self.subs[index];
            (sub.key, sub.id, sub.network)
        };
        let writable = self
            .engine
            .check_writable(key)
            .map_err(|error| error.kind());
        if network == Network::Tcp && writable.is_ok() && self.credit(index) == 0 {
            let data = self.pattern(1 + byte as usize);
            let result = self.engine.write_stream(key, &data, Waker::noop());
            assert!(result.is_pending(), "id {id}: a write without credit taken");
            return;
        }
        let written = match network {
            Network::Tcp => {
                let len = if byte & 0x80 != 0 {
                    48 * 1024 + (byte as usize & 0x7f) * 256
                } else {
                    byte as usize * 8
                };
                let data = self.pattern(len);
                let credit = self.credit(index);
                match self.engine.write_stream(key, &data, Waker::noop()) {
                    Poll::Ready(Ok(n)) => {
                        assert!(n <= len.min(MAX_WRITE) && (n > 0 || len == 0));
                        assert!(
                            n as u64 <= credit,
                            "id {id}: {n} bytes written past the peer's window ({credit} left)"
                        );
                        self.subs[index].sent += n as u64;
                        Ok(data[..n].to_vec())
                    }
                    Poll::Ready(Err(error)) => Err(error.kind()),
                    Poll::Pending => return,
                }
            }
            Network::Udp => {
                let len = byte as usize * 9 % (V2RAY_MAX_PACKET + 1);
                let data = self.pattern(len);
                match self.engine.write_packet(key, &data, Waker::noop()) {
                    Poll::Ready(Ok(())) => Ok(data),
                    Poll::Ready(Err(error)) => Err(error.kind()),
                    Poll::Pending => return,
                }
            }
        };
        match written {
            Ok(data) => {
                assert_eq!(writable, Ok(id), "a write taken on a closed sub-stream");
                self.written.entry(id).or_default().extend(data);
            }
            Err(kind) => assert_eq!(writable, Err(kind)),
        }
    }

    /// Bytes sub-stream `index` may still send under the peer's windows.
    fn credit(&self, index: usize) -> u64 {
        let sub = &self.subs[index];
        match self.peer_window {
            Some(window) if sub.network == Network::Tcp => sub
                .peer_limit
                .max(u64::from(window))
                .saturating_sub(sub.sent),
            _ => u64::MAX,
        }
    }

    /// Our writer is done: the transition of the module table in
    /// `engine.rs`, and the End it queues.
    fn shutdown(&mut self, index: usize) {
        let (key, id, network) = (
            self.subs[index].key,
            self.subs[index].id,
            self.subs[index].network,
        );
        let before = self.state(key);
        self.engine.shutdown(key);
        let (local, remote, fault, attached) = before;
        let after = if fault.is_some() || !attached || local != Local::Open {
            before
        } else if remote == Remote::HalfClosed {
            (Local::Ended, remote, None, false)
        } else if network == Network::Tcp {
            (Local::HalfClosed, remote, None, true)
        } else {
            (Local::Ended, remote, None, true)
        };
        assert_eq!(
            self.state(key),
            after,
            "shutdown of id {id} from {before:?}"
        );
        if after != before {
            self.owe_end(id, false, after.0 == Local::HalfClosed);
        }
    }

    /// A transition queued an End for `id` with these option bits.
    fn owe_end(&mut self, id: SessionId, error: bool, half_close: bool) {
        let owed = self.owed_ends.entry(id).or_default();
        owed.push_back(FrameKind::End { error, half_close });
    }

    // ------------------------------------------------------------ the writer

    /// One batch: decoded and checked. Returns what `poll_transmit` said.
    fn transmit(&mut self) -> Transmit {
        let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
        let result = self
            .engine
            .poll_transmit(&mut first, &mut second, Waker::noop());
        match result {
            Transmit::Write => assert!(!self.closed && !first.is_empty()),
            Transmit::Idle => assert!(!self.closed),
            Transmit::Shutdown => assert!(!self.closed && self.engine.is_refusing()),
            Transmit::Closed => assert!(self.closed),
        }
        if result != Transmit::Write {
            assert!(first.is_empty() && second.is_empty());
            return result;
        }
        first.extend_from_slice(&second);
        let mut codec = FrameCodec::new();
        loop {
            match codec.decode_frame(&mut first) {
                Ok(Some(frame)) => self.on_the_wire(frame),
                Ok(None) => break,
                Err(error) => panic!("transmitted bytes do not decode: {error}"),
            }
        }
        assert!(first.is_empty(), "a batch ends inside a frame");
        result
    }

    fn on_the_wire(&mut self, frame: Frame) {
        let id = frame.session_id;
        match frame.kind {
            FrameKind::New {
                destination: to,
                source: from,
            } => {
                assert!(self.client(), "a server sent New (id {id})");
                let opened = self.unannounced.remove(&id);
                assert_eq!(opened, Some((to, from)), "New {id} not opened so");
                self.announced.insert(id);
                self.news_on_wire += 1;
            }
            FrameKind::Keep => {
                if self.client() {
                    assert!(
                        self.announced.contains(&id),
                        "data for id {id} outside its New..End"
                    );
                } else {
                    assert!(
                        self.accepted.contains(&id),
                        "data for id {id}, never opened"
                    );
                }
            }
            kind @ FrameKind::End { .. } => {
                self.announced.remove(&id);
                let owed = self.owed_ends.entry(id).or_default().pop_front();
                assert_eq!(owed, Some(kind), "id {id}: not the End a transition queued");
                return;
            }
            FrameKind::KeepAlive => return,
            FrameKind::Hello { window } => {
                self.hellos_on_wire += 1;
                assert_eq!(self.hellos_on_wire, 1, "a second Hello");
                assert!(self.granting, "a Hello without an offer or a peer's Hello");
                assert_eq!(self.news_on_wire, 0, "a Hello after a New");
                assert_eq!(window as usize, self.settings.mux.receive_buffer.max(1));
                return;
            }
            FrameKind::Window { limit } => {
                assert_eq!(self.hellos_on_wire, 1, "a Window before our Hello");
                let tcp = self
                    .subs
                    .iter()
                    .any(|sub| sub.id == id && sub.network == Network::Tcp);
                let read = self.read_by_id.get(&id).copied().unwrap_or(0);
                assert!(tcp || read > 0, "a Window for id {id}, no TCP sub-stream");
                let cap = self.settings.mux.max_window as u64;
                assert!(
                    limit <= read + cap,
                    "id {id}: a Window to {limit}, over {cap} past the {read} bytes read"
                );
                let granted = self.granted.entry(id).or_default();
                *granted = (*granted).max(limit);
                return;
            }
        }
        let data = frame.data.unwrap_or_default();
        let written = self.written.get(&id).map_or(&[][..], Vec::as_slice);
        let at = self.on_wire.entry(id).or_default();
        assert!(
            written.get(*at..*at + data.len()) == Some(&data[..]),
            "id {id}: wire data at {at} is not what was written ({} bytes)",
            written.len()
        );
        *at += data.len();
    }

    // ------------------------------------------------------------ time, close

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let due = self
            .engine
            .next_timeout()
            .is_some_and(|deadline| deadline <= self.now);
        let owed = self
            .pending
            .as_ref()
            .is_some_and(|(key, _)| owes_end(self.state(*key)));
        let stalled = self.engine.handle_timeout(self.now);
        assert_eq!(
            stalled.is_some(),
            due,
            "handle_timeout acts exactly when due"
        );
        if let Some(id) = stalled {
            let (key, _) = self
                .pending
                .take()
                .expect("a stall needs a waiting delivery");
            assert_eq!(self.engine.session_id(key), id);
            let (local, _, fault, attached) = self.state(key);
            let timed_out = Some(Fault::Reset(io::ErrorKind::TimedOut));
            assert_eq!((local, fault, attached), (Local::Ended, timed_out, false));
            assert_eq!(self.engine.received(key), 0);
            if owed {
                self.owe_end(id, true, false);
            }
        }
    }

    fn close(&mut self) {
        self.engine.close();
        self.closed = true;
        self.pending = None;
        self.inbound.clear();
        assert_eq!(self.engine.active_sessions(), 0);
        assert_eq!(self.engine.next_timeout(), None);
        for sub in &self.subs {
            let (_, _, fault, attached) = self.state(sub.key);
            assert!(fault.is_some() && !attached);
        }
    }

    // ------------------------------------------------------------ checks

    fn check(&mut self) {
        let attached = (0..self.subs.len())
            .filter(|&index| self.state(self.subs[index].key).3)
            .count();
        assert_eq!(self.engine.active_sessions(), attached);
        let ids: HashSet<SessionId> = self
            .subs
            .iter()
            .filter(|sub| self.state(sub.key).3)
            .map(|sub| sub.id)
            .collect();
        assert_eq!(ids.len(), attached, "two sub-streams attached to one id");
        let bound = self.settings.bound(self.subs.len(), self.events);
        let buffered = self.engine.buffered_bytes();
        assert!(
            buffered <= bound,
            "{buffered} bytes buffered, over the bound {bound} ({} sub-streams, {} events)",
            self.subs.len(),
            self.events
        );
        drop(self.engine.take_wakes());
    }

    /// Flow control's liveness, once the queue is written: a live TCP
    /// sub-stream granted windows from its start that read everything its
    /// peer sent has granted the peer more than that.
    fn check_credit_left(&self) {
        for sub in &self.subs {
            let (_, remote, fault, attached) = self.state(sub.key);
            let live = attached && fault.is_none() && remote == Remote::Open;
            if !(sub.windowed && sub.network == Network::Tcp && live) || sub.got != sub.expected {
                continue;
            }
            let limit = self.peer_may_send(sub.id);
            assert!(
                limit > sub.got.len() as u64,
                "id {}: read all {} bytes, and the peer may send only up to {limit}",
                sub.id,
                sub.got.len()
            );
        }
    }

    /// Writes out what is queued, closes, reads what is left, releases.
    fn finish(&mut self) {
        self.pump();
        if !self.closed {
            while self.transmit() == Transmit::Write {}
            for (id, written) in &self.written {
                let sent = self.on_wire.get(id).copied().unwrap_or(0);
                assert_eq!(sent, written.len(), "id {id}: written bytes never sent");
            }
            for (id, owed) in &self.owed_ends {
                assert!(owed.is_empty(), "id {id}: {owed:?} never sent");
            }
            self.check_credit_left();
            self.close();
        }
        for index in 0..self.subs.len() {
            let mut reads = 0;
            while self.read(index, 70 * 1024) {
                reads += 1;
                assert!(reads < 16, "reads after close never end");
            }
        }
        for sub in std::mem::take(&mut self.subs) {
            self.engine.release(sub.key);
        }
        assert_eq!(self.engine.active_sessions(), 0);
        assert_eq!(self.engine.buffered_bytes(), 0);
        assert_eq!(self.transmit(), Transmit::Closed);
    }
}
