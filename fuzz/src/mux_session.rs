//! `mux_session`: the Mux.Cool session state machine (not only the frame
//! decoder) under a fuzzer-written script.
//!
//! ```text
//!   script ──▶ peer (frames, garbage) ══ tokio::io::duplex ══ MuxServer ──▶ fake handlers (hold, echo, drop, fail)
//!   script ──▶ peer (frames, garbage) ══ tokio::io::duplex ══ MuxClient ◀── sub-streams the script opens
//! ```
//!
//! The input is a script. Byte 0 picks the side under test (bit 0: client)
//! and the buffer sizes; byte 1 the stall timeout, the carrier's capacity,
//! the session limit and the client's idle check (see [`Settings::decode`]).
//! Then one operation per byte, each taking the argument bytes it needs
//! (missing bytes read as 0), at most [`MAX_STEPS`] of them: the peer sends
//! New, Keep (with or without data, up to 65535 bytes), End (error and
//! half-close bits), KeepAlive, an unknown status or raw garbage, and reads
//! what the other side wrote; sub-streams (the server's handlers, or the
//! client's opened streams) read, write, shut down, drop, echo; time
//! passes; the handle is closed or the peer shuts its writing half.
//!
//! Everything runs on a current-thread runtime with paused time, so stall
//! timeouts and idle checks fire at once and every input ends: each wait
//! has a timeout, and one timeout covers the whole script.
//!
//! # Invariants checked (a panic is a finding)
//!
//! The peer decodes its own output with a second codec (the *mirror*), so
//! it knows exactly which frames the side under test will see, garbage
//! included. From that:
//!
//! * everything the side under test writes decodes as frames; a server
//!   never sends New, nor data for an id the peer never opened; a client
//!   sends New once per stream it opened, with its destination, and data
//!   only after that New;
//! * the data a sub-stream writes reaches the peer, per session id, in
//!   order and unaltered (a prefix of it at every moment; all of it once
//!   the carrier is drained, as long as the connection is open);
//! * a sub-stream reads, in order and unaltered, a prefix of the data the
//!   peer sent for it before the peer's End (core packet framing on UDP),
//!   and when it reads EOF it has read all of that;
//! * `buffered_bytes()` stays within the bound `lib.rs` documents: per
//!   live sub-stream `max(receive_buffer, one frame)`, plus `send_queue`
//!   plus one write (64 KiB and its frame headers), plus an allowance of
//!   64 bytes per frame or step for End/KeepAlive/New frames, which are
//!   queued outside the bound;
//! * once the peer's end of the carrier is dropped, the connection
//!   reports closed, every handler task (server) or sub-stream read
//!   (client) ends, `active_sessions()` is 0 and `buffered_bytes()` is 0.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use rayback_core::{Address, Destination, Network, Stream};
use rayback_mux::settings::V2RAY_MAX_PACKET;
use rayback_mux::frame::encode_frame;
use rayback_mux::{
    ClientSettings, Frame, FrameCodec, FrameKind, MuxClient, MuxSettings, MuxServer, MuxStream,
    ServerSettings, ServerHandle, SessionHandler, SessionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Most operations one input runs.
pub const MAX_STEPS: usize = 256;
/// How long one read or write of the script waits (paused time).
const IO_WAIT: Duration = Duration::from_millis(1);
/// How long the script waits for a handler to carry out an order.
const ACK_WAIT: Duration = Duration::from_millis(10);
/// One round of the final drain waits this long for bytes.
const DRAIN_WAIT: Duration = Duration::from_millis(50);
/// Rounds of the final drain.
const DRAIN_ROUNDS: usize = 64;
/// How long the connection and its sub-streams may take to end once the
/// carrier is gone (the longest stall timeout is 1 s).
const END_WAIT: Duration = Duration::from_secs(10);
/// The whole script, in paused time: a cap, never reached by a healthy run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(3600);
/// The largest frame a receive buffer always takes: a 65535-byte datagram
/// and its 2-byte length.
const ONE_FRAME: usize = 65_537;
/// Most bytes one sub-stream write queues (`send::MAX_WRITE`).
const MAX_WRITE: usize = 64 * 1024;
/// Read buffer of a sub-stream: larger than any receive buffer, so a UDP
/// read always takes whole datagrams.
const READ_BUF: usize = 70 * 1024;
/// Allowance per peer frame or script step for frames queued outside the
/// send bound (End: 6 bytes, KeepAlive: 6, a client's New: under 64).
const SMALL_FRAME: usize = 64;

/// Runs one script (see the module docs).
pub fn run(data: &[u8]) {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let settings = Settings::decode(*a, *b);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut script = Script { bytes: rest, at: 0 };
        let finished = if settings.client {
            timeout(SCRIPT_LIMIT, client_script(&mut script, &settings)).await
        } else {
            timeout(SCRIPT_LIMIT, server_script(&mut script, &settings)).await
        };
        assert!(
            finished.is_ok(),
            "the script did not end within {SCRIPT_LIMIT:?} (paused time)"
        );
    });
}

// ---------------------------------------------------------------------------
// Script, settings, data

/// The side under test and its knobs, small so that limits are reached.
struct Settings {
    client: bool,
    mux: MuxSettings,
    /// Capacity of the in-memory carrier (each direction).
    duplex: usize,
    max_sessions: usize,
    idle_timeout: Option<Duration>,
}

impl Settings {
    fn decode(a: u8, b: u8) -> Settings {
        let pick = |bits: u8, options: &[usize]| options[bits as usize % options.len()];
        Settings {
            client: a & 1 != 0,
            mux: MuxSettings {
                receive_buffer: pick(a >> 1, &[256, 1024, 4096, 65536]),
                send_queue: pick(a >> 3, &[64, 512, 4096, 65536]),
                max_frame_data: pick(a >> 5, &[16, 256, 4096, 61440]),
                stall_timeout: Duration::from_millis(pick(b, &[10, 50, 1000]) as u64),
                max_packet: V2RAY_MAX_PACKET,
            },
            duplex: pick(b >> 2, &[64, 512, 4096, 65536]),
            max_sessions: pick(b >> 4, &[1, 2, 4, 64]),
            idle_timeout: (b & 0x40 != 0).then_some(Duration::from_millis(30)),
        }
    }

    /// The most `buffered_bytes()` may report with `alive` sub-streams
    /// after `events` peer frames and script steps.
    fn bound(&self, alive: usize, events: usize) -> usize {
        let frame_data = self.mux.max_frame_data.clamp(1, u16::MAX as usize);
        alive * self.mux.receive_buffer.max(ONE_FRAME)
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

impl<'a> Script<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// The next byte; 0 past the end.
    fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.bytes.len());
        let end = (start + n).min(self.bytes.len());
        self.at = start + n;
        &self.bytes[start..end]
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `len` bytes that differ from every other call's, so reordered or
/// misrouted data shows.
fn pattern(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *seed = splitmix(*seed);
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What a sub-stream reads for one data frame: the bytes (TCP; an empty
/// frame is nothing), or core packet framing (UDP).
fn as_read(network: Network, data: &[u8], out: &mut Vec<u8>) {
    match network {
        Network::Tcp => out.extend_from_slice(data),
        Network::Udp => {
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// A destination numbered `n`; its port also carries how the server's
/// fake handler starts ([`Start::of`]).
fn destination(network: Network, style: u8, n: u16, start: u8) -> Destination {
    let address = match style % 3 {
        0 => Address::Ipv4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
        1 => Address::Domain(format!("s{n}.fuzz")),
        _ => Address::Ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n)),
    };
    let port = n.wrapping_mul(4).wrapping_add(u16::from(start % 4));
    Destination::new(network, address, port)
}

fn network(bit: bool) -> Network {
    if bit {
        Network::Udp
    } else {
        Network::Tcp
    }
}

/// Where `got` first leaves `want`, for messages.
fn first_difference(want: &[u8], got: &[u8]) -> usize {
    want.iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A frame the peer writes, built from script bytes (shared by both modes).
enum PeerFrame {
    Frame(Frame),
    Raw(Vec<u8>),
}

/// Decodes the peer frame operations common to both modes: `op` 1..=6 and
/// 16. `id` picks a session id from an argument byte.
fn peer_frame(
    op: u8,
    script: &mut Script<'_>,
    seed: &mut u64,
    id: &mut dyn FnMut(u8) -> SessionId,
) -> Option<PeerFrame> {
    let frame = match op {
        1 => {
            let id = id(script.byte());
            let len = script.byte() as usize * 16;
            Frame::keep(id, pattern(seed, len).into())
        }
        2 => Frame {
            session_id: id(script.byte()),
            kind: FrameKind::Keep,
            data: None,
        },
        3 => {
            let id = id(script.byte());
            let flags = script.byte();
            Frame {
                session_id: id,
                kind: FrameKind::End {
                    error: flags & 1 != 0,
                    half_close: flags & 2 != 0,
                },
                data: None,
            }
        }
        4 => Frame {
            session_id: 0,
            kind: FrameKind::KeepAlive,
            data: None,
        },
        5 => {
            // An unknown status: fatal for the connection.
            let id = id(script.byte()).to_be_bytes();
            let status = 5 + script.byte() % 251;
            return Some(PeerFrame::Raw(vec![0, 4, id[0], id[1], status, 0]));
        }
        6 => {
            let len = script.byte() as usize % 32 + 1;
            return Some(PeerFrame::Raw(script.take(len).to_vec()));
        }
        16 => {
            let id = id(script.byte());
            let len = u16::MAX as usize - script.byte() as usize * 64;
            Frame::keep(id, pattern(seed, len).into())
        }
        _ => return None,
    };
    Some(PeerFrame::Frame(frame))
}

/// Time passing, from one argument byte.
fn pause(byte: u8) -> Duration {
    Duration::from_millis([0, 1, 5, 20, 100, 1000][byte as usize % 6])
}

// ---------------------------------------------------------------------------
// The peer: the other end of the carrier

struct Peer {
    io: Option<DuplexStream>,
    /// Bytes not yet taken by the carrier.
    outgoing: BytesMut,
    /// Decodes our own output as the side under test will.
    mirror: FrameCodec,
    mirror_buf: BytesMut,
    /// Our output no longer decodes: the other side stops there.
    mirror_dead: bool,
    /// Frames the other side will see (mirror), over the whole script.
    frames: usize,
    incoming: BytesMut,
    decoder: FrameCodec,
}

impl Peer {
    fn new(io: DuplexStream) -> Peer {
        Peer {
            io: Some(io),
            outgoing: BytesMut::new(),
            mirror: FrameCodec::new(),
            mirror_buf: BytesMut::new(),
            mirror_dead: false,
            frames: 0,
            incoming: BytesMut::new(),
            decoder: FrameCodec::new(),
        }
    }

    /// Queues `frame`; returns the frames the other side will see because
    /// of it (the mirror's view).
    fn send(&mut self, frame: PeerFrame) -> Vec<Frame> {
        match frame {
            PeerFrame::Frame(frame) => {
                let mut wire = BytesMut::new();
                encode_frame(&frame, &mut wire).expect("script frames encode");
                self.raw(&wire)
            }
            PeerFrame::Raw(bytes) => self.raw(&bytes),
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.outgoing.extend_from_slice(bytes);
        let mut seen = Vec::new();
        if self.mirror_dead {
            return seen;
        }
        self.mirror_buf.extend_from_slice(bytes);
        loop {
            match self.mirror.decode_frame(&mut self.mirror_buf) {
                Ok(Some(frame)) => seen.push(frame),
                Ok(None) => break,
                Err(_) => {
                    self.mirror_dead = true;
                    break;
                }
            }
        }
        self.frames += seen.len();
        seen
    }

    /// Writes what the carrier takes now.
    async fn flush(&mut self) {
        let Some(io) = self.io.as_mut() else {
            return;
        };
        while !self.outgoing.is_empty() {
            match timeout(IO_WAIT, io.write(&self.outgoing)).await {
                Ok(Ok(n)) if n > 0 => self.outgoing.advance(n),
                _ => break,
            }
        }
    }

    /// Reads what came (waiting up to `wait`) and decodes it; also returns
    /// whether any byte came. Output that does not decode is a finding.
    async fn read(&mut self, wait: Duration) -> (Vec<Frame>, bool) {
        let Some(io) = self.io.as_mut() else {
            return (Vec::new(), false);
        };
        self.incoming.reserve(4096);
        let got =
            matches!(timeout(wait, io.read_buf(&mut self.incoming)).await, Ok(Ok(n)) if n > 0);
        let mut frames = Vec::new();
        loop {
            match self.decoder.decode_frame(&mut self.incoming) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => panic!("the side under test wrote bytes that do not decode: {error}"),
            }
        }
        (frames, got)
    }

    /// Shuts our writing half: the other side reads EOF.
    async fn shutdown(&mut self) {
        if let Some(io) = self.io.as_mut() {
            let _ = timeout(IO_WAIT, io.shutdown()).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Server mode: a MuxServer and fake handlers

/// How a fake handler starts: the low two bits of the destination port.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Does nothing until ordered (a reader that stopped: stalls).
    Hold,
    /// Echoes what it reads.
    Echo,
    /// Drops the sub-stream at once (an abort).
    Drop,
    /// Returns an error at once.
    Fail,
}

impl Start {
    fn of(port: u16) -> Start {
        [Start::Hold, Start::Echo, Start::Drop, Start::Fail][port as usize % 4]
    }
}

/// One `New` the peer sent: a session the server may accept.
struct Generation {
    id: SessionId,
    network: Network,
    destination: Destination,
    /// What its sub-stream must read: the peer's data for it before its
    /// End, or before the next New with the same id.
    expected: Vec<u8>,
    /// The peer has not ended it nor reused its id.
    receiving: bool,
    /// What its handler has read.
    read: Vec<u8>,
    /// Another New had the same destination (garbage can make one), so
    /// which handler is which is not known: its data is not checked.
    ambiguous: bool,
    claimed: bool,
}

/// An order to one handler, with an acknowledgement.
enum Order {
    Read(usize),
    Write(u8),
    Shutdown,
    Drop,
    Echo(bool),
}

type Command = (Order, oneshot::Sender<()>);

/// What the script and the handlers know, shared (handlers run in tasks).
#[derive(Default)]
struct Book {
    gens: Vec<Generation>,
    /// Session id → the generation its next data belongs to (mirror view).
    current: HashMap<SessionId, usize>,
    /// Ids the peer sent New for, in order.
    opened: Vec<SessionId>,
    /// Per id: what handlers wrote (queued), in queue order.
    written: HashMap<SessionId, Vec<u8>>,
    /// Per id: data the peer received in Keep frames.
    received: HashMap<SessionId, Vec<u8>>,
    orders: Vec<mpsc::UnboundedSender<Command>>,
    /// The script ended: new handlers go straight to their last read.
    finished: bool,
    /// Handlers started and ended (each holds one sub-stream).
    started: usize,
    ended: usize,
    seed: u64,
    /// Findings made inside handler tasks, whose panics the runtime would
    /// swallow; the script panics with the first.
    violations: Vec<String>,
}

impl Book {
    /// The mirror saw the peer send these frames.
    fn peer_sent(&mut self, frames: Vec<Frame>) {
        for frame in frames {
            let id = frame.session_id;
            match frame.kind {
                FrameKind::New(destination) => {
                    let index = self.gens.len();
                    let mut ambiguous = false;
                    for gen in &mut self.gens {
                        if gen.destination == destination {
                            gen.ambiguous = true;
                            ambiguous = true;
                        }
                    }
                    if let Some(old) = self.current.insert(id, index) {
                        self.gens[old].receiving = false;
                    }
                    if !self.opened.contains(&id) {
                        self.opened.push(id);
                    }
                    let mut expected = Vec::new();
                    if let Some(data) = &frame.data {
                        as_read(destination.network, data, &mut expected);
                    }
                    self.gens.push(Generation {
                        id,
                        network: destination.network,
                        destination,
                        expected,
                        receiving: true,
                        read: Vec::new(),
                        ambiguous,
                        claimed: false,
                    });
                }
                FrameKind::Keep => {
                    if let (Some(data), Some(&index)) = (&frame.data, self.current.get(&id)) {
                        let gen = &mut self.gens[index];
                        if gen.receiving {
                            as_read(gen.network, data, &mut gen.expected);
                        }
                    }
                }
                FrameKind::End { .. } => {
                    if let Some(index) = self.current.remove(&id) {
                        self.gens[index].receiving = false;
                    }
                }
                FrameKind::KeepAlive => {}
            }
        }
    }

    /// The peer read these frames from the server.
    fn server_sent(&mut self, frames: Vec<Frame>) {
        for frame in frames {
            let id = frame.session_id;
            match frame.kind {
                FrameKind::New(destination) => self.violations.push(format!(
                    "the server sent a New frame (id {id}, {destination})"
                )),
                FrameKind::Keep => {
                    if !self.opened.contains(&id) {
                        self.violations.push(format!(
                            "the server sent data for id {id}, which the peer never opened"
                        ));
                    }
                    let received = self.received.entry(id).or_default();
                    received.extend_from_slice(frame.data.as_deref().unwrap_or_default());
                    let written = self.written.get(&id).map_or(&[][..], Vec::as_slice);
                    if !written.starts_with(received) {
                        let at = first_difference(written, received);
                        let message = format!(
                            "id {id}: the peer received {} bytes, handlers wrote {}; they differ at byte {at}",
                            received.len(),
                            written.len()
                        );
                        self.violations.push(message);
                    }
                }
                FrameKind::End { .. } | FrameKind::KeepAlive => {}
            }
        }
    }

    /// An id whose written data has not all reached the peer.
    fn missing(&self) -> Option<SessionId> {
        self.written.iter().find_map(|(id, written)| {
            let received = self.received.get(id).map_or(0, Vec::len);
            (received != written.len()).then_some(*id)
        })
    }

    fn check(&self) {
        if let Some(violation) = self.violations.first() {
            panic!("{violation}");
        }
    }
}

struct FakeHandler {
    book: Arc<Mutex<Book>>,
}

#[async_trait]
impl SessionHandler for FakeHandler {
    async fn handle(&self, destination: Destination, stream: Stream) -> io::Result<()> {
        let start = Start::of(destination.port);
        let mut sub = HandlerStream::claim(Arc::clone(&self.book), &destination, stream);
        match start {
            Start::Fail => Err(io::Error::other("refused by the script")),
            Start::Drop => Ok(()),
            Start::Hold | Start::Echo => {
                sub.serve(start == Start::Echo).await;
                Ok(())
            }
        }
    }
}

/// One handler's sub-stream and what it knows of it.
struct HandlerStream {
    book: Arc<Mutex<Book>>,
    /// Its generation, when known for sure; an unknown one never writes.
    gen: Option<usize>,
    id: SessionId,
    network: Network,
    stream: Stream,
    buf: Vec<u8>,
    echo: bool,
}

/// What woke a handler.
enum Next {
    Command(Option<Command>),
    Read(io::Result<usize>),
}

impl HandlerStream {
    fn claim(book: Arc<Mutex<Book>>, destination: &Destination, stream: Stream) -> HandlerStream {
        let (gen, id) = {
            let mut book = lock(&book);
            book.started += 1;
            let found: Vec<usize> = (0..book.gens.len())
                .filter(|&i| book.gens[i].destination == *destination && !book.gens[i].claimed)
                .collect();
            match found[..] {
                [index] if !book.gens[index].ambiguous => {
                    book.gens[index].claimed = true;
                    (Some(index), book.gens[index].id)
                }
                _ => (None, 0),
            }
        };
        HandlerStream {
            book,
            gen,
            id,
            network: destination.network,
            stream,
            buf: vec![0; READ_BUF],
            echo: false,
        }
    }

    async fn serve(&mut self, echo: bool) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut book = lock(&self.book);
            if book.finished {
                // No orders will come: straight to the last read.
                drop(tx);
            } else {
                book.orders.push(tx);
            }
        }
        self.echo = echo && self.gen.is_some();
        loop {
            let next = if self.echo {
                tokio::select! {
                    command = rx.recv() => Next::Command(command),
                    read = self.stream.read(&mut self.buf) => Next::Read(read),
                }
            } else {
                Next::Command(rx.recv().await)
            };
            match next {
                Next::Command(None) => break,
                Next::Command(Some((order, ack))) => {
                    let go_on = self.execute(order).await;
                    let _ = ack.send(());
                    if !go_on {
                        return;
                    }
                }
                Next::Read(read) => self.echo_back(read).await,
            }
        }
        // The script is over: read until the sub-stream ends, as a relay
        // would; the connection closing must end it.
        loop {
            match self.stream.read(&mut self.buf).await {
                Ok(0) => {
                    self.saw_eof();
                    break;
                }
                Ok(n) => self.saw_data(n),
                Err(_) => break,
            }
        }
    }

    /// Carries out one order; false when the handler is to end.
    async fn execute(&mut self, order: Order) -> bool {
        match order {
            Order::Read(limit) => {
                // Datagrams are read whole (see READ_BUF).
                let limit = match self.network {
                    Network::Tcp => limit.clamp(1, READ_BUF),
                    Network::Udp => READ_BUF,
                };
                match timeout(IO_WAIT, self.stream.read(&mut self.buf[..limit])).await {
                    Ok(Ok(0)) => self.saw_eof(),
                    Ok(Ok(n)) => self.saw_data(n),
                    _ => {}
                }
            }
            Order::Write(size) => self.write_fresh(size).await,
            Order::Shutdown => {
                let _ = timeout(IO_WAIT, self.stream.shutdown()).await;
            }
            Order::Drop => return false,
            Order::Echo(on) => self.echo = on && self.gen.is_some(),
        }
        true
    }

    /// Writes new data: TCP `size` × 32 bytes (255: more than one write
    /// takes), UDP one datagram of `size` × 9 bytes (over 2048: dropped).
    async fn write_fresh(&mut self, size: u8) {
        if self.gen.is_none() {
            return;
        }
        let len = match (self.network, size) {
            (Network::Tcp, 255) => MAX_WRITE + 4000,
            (Network::Tcp, size) => size as usize * 32,
            (Network::Udp, size) => size as usize * 9,
        };
        let payload = pattern(&mut lock(&self.book).seed, len);
        match self.network {
            Network::Tcp => {
                if let Ok(Ok(n)) = timeout(IO_WAIT, self.stream.write(&payload)).await {
                    self.written(&payload[..n]);
                }
            }
            Network::Udp => {
                let mut packet = (len as u16).to_be_bytes().to_vec();
                packet.extend_from_slice(&payload);
                if let Ok(Ok(n)) = timeout(IO_WAIT, self.stream.write(&packet)).await {
                    self.datagram_written(&packet, n);
                }
            }
        }
    }

    /// Writes back what was just read (echo mode).
    async fn echo_back(&mut self, read: io::Result<usize>) {
        let n = match read {
            Ok(0) => {
                self.saw_eof();
                self.echo = false;
                return;
            }
            Err(_) => {
                self.echo = false;
                return;
            }
            Ok(n) => n,
        };
        self.saw_data(n);
        let data = self.buf[..n].to_vec();
        let mut at = 0;
        while at < n {
            let end = match self.network {
                Network::Tcp => n,
                Network::Udp => {
                    let len = data.get(at..at + 2).map_or(usize::MAX, |len| {
                        u16::from_be_bytes([len[0], len[1]]) as usize
                    });
                    if at.saturating_add(2).saturating_add(len) > n {
                        self.violation(format!(
                            "id {}: a UDP read returned part of a datagram",
                            self.id
                        ));
                        return;
                    }
                    at + 2 + len
                }
            };
            match self.stream.write(&data[at..end]).await {
                Ok(k) if k > 0 => {
                    match self.network {
                        Network::Tcp => self.written(&data[at..at + k]),
                        Network::Udp => self.datagram_written(&data[at..end], k),
                    }
                    at += k;
                }
                _ => {
                    self.echo = false;
                    return;
                }
            }
        }
    }

    fn written(&self, bytes: &[u8]) {
        let mut book = lock(&self.book);
        book.written
            .entry(self.id)
            .or_default()
            .extend_from_slice(bytes);
    }

    /// A whole datagram (2-byte length + payload) was written and `n`
    /// bytes taken: all of it, queued or (over max_packet) dropped.
    fn datagram_written(&self, packet: &[u8], n: usize) {
        if n != packet.len() {
            self.violation(format!(
                "id {}: a datagram write of {} bytes took {n}",
                self.id,
                packet.len()
            ));
        } else if packet.len() - 2 <= V2RAY_MAX_PACKET {
            self.written(&packet[2..]);
        }
    }

    fn saw_data(&self, n: usize) {
        let Some(index) = self.gen else {
            return;
        };
        let mut book = lock(&self.book);
        let gen = &mut book.gens[index];
        gen.read.extend_from_slice(&self.buf[..n]);
        if !gen.ambiguous && !gen.expected.starts_with(&gen.read) {
            let message = format!(
                "session {} (id {}, {}): read {} bytes, not a prefix of the {} the peer sent; they differ at byte {}",
                index,
                gen.id,
                gen.destination,
                gen.read.len(),
                gen.expected.len(),
                first_difference(&gen.expected, &gen.read)
            );
            book.violations.push(message);
        }
    }

    fn saw_eof(&self) {
        let Some(index) = self.gen else {
            return;
        };
        let mut book = lock(&self.book);
        let gen = &book.gens[index];
        if !gen.ambiguous && gen.read != gen.expected {
            let message = format!(
                "session {} (id {}, {}): EOF after {} bytes, but the peer sent {} before its End",
                index,
                gen.id,
                gen.destination,
                gen.read.len(),
                gen.expected.len()
            );
            book.violations.push(message);
        }
    }

    fn violation(&self, message: String) {
        lock(&self.book).violations.push(message);
    }
}

impl Drop for HandlerStream {
    fn drop(&mut self) {
        lock(&self.book).ended += 1;
    }
}

/// Sends `order` to the handler `which` picks and waits (briefly) for it.
async fn order(book: &Mutex<Book>, which: u8, order: Order) {
    if lock(book).orders.is_empty() {
        // Let a New the server just read start its handler.
        tokio::time::sleep(IO_WAIT).await;
    }
    let sender = {
        let mut book = lock(book);
        book.orders.retain(|sender| !sender.is_closed());
        if book.orders.is_empty() {
            return;
        }
        let index = which as usize % book.orders.len();
        book.orders[index].clone()
    };
    let (ack, done) = oneshot::channel();
    if sender.send((order, ack)).is_ok() {
        let _ = timeout(ACK_WAIT, done).await;
    }
}

async fn server_script(script: &mut Script<'_>, settings: &Settings) {
    let (peer_io, carrier) = tokio::io::duplex(settings.duplex);
    let book = Arc::new(Mutex::new(Book::default()));
    let handler = Arc::new(FakeHandler {
        book: Arc::clone(&book),
    });
    let server = MuxServer::serve_with(
        Box::new(carrier),
        handler,
        ServerSettings {
            mux: settings.mux.clone(),
            max_sessions: settings.max_sessions,
        },
    );
    let mut peer = Peer::new(peer_io);
    let mut seed = 1u64;
    let mut fresh_id: SessionId = 1;
    let mut news: u16 = 0;
    let mut steps = 0;
    while !script.done() && steps < MAX_STEPS {
        steps += 1;
        let op = script.byte() % 20;
        let opened = lock(&book).opened.clone();
        // Mostly an id the peer opened; sometimes one of 0..16.
        let mut pick_id = |byte: u8| match opened.len() {
            n if n > 0 && byte & 0xc0 != 0xc0 => opened[byte as usize % n],
            _ => SessionId::from(byte & 0x0f),
        };
        match op {
            0 => {
                let which = script.byte();
                let kind = script.byte();
                let len = script.byte() as usize * 16;
                let id = if which & 0x80 != 0 {
                    pick_id(which)
                } else {
                    fresh_id = fresh_id.wrapping_add(1);
                    fresh_id.wrapping_sub(1)
                };
                news = news.wrapping_add(1);
                let destination = destination(network(kind & 1 != 0), kind >> 3, news, kind >> 1);
                let data = (kind & 0x20 != 0).then(|| pattern(&mut seed, len).into());
                let seen = peer.send(PeerFrame::Frame(Frame::new_session(id, destination, data)));
                lock(&book).peer_sent(seen);
                peer.flush().await;
            }
            1..=6 | 16 => {
                if let Some(frame) = peer_frame(op, script, &mut seed, &mut pick_id) {
                    let seen = peer.send(frame);
                    lock(&book).peer_sent(seen);
                    peer.flush().await;
                }
            }
            7 | 17 => {
                peer.flush().await;
                let (frames, _) = peer.read(IO_WAIT).await;
                lock(&book).server_sent(frames);
            }
            8 | 18 => {
                let which = script.byte();
                let limit = script.byte() as usize * 64 + 1;
                order(&book, which, Order::Read(limit)).await;
            }
            9 | 19 => {
                let which = script.byte();
                let size = script.byte();
                order(&book, which, Order::Write(size)).await;
            }
            10 => order(&book, script.byte(), Order::Shutdown).await,
            11 => order(&book, script.byte(), Order::Drop).await,
            12 => {
                let which = script.byte();
                let on = script.byte() & 1 == 0;
                order(&book, which, Order::Echo(on)).await;
            }
            13 => tokio::time::sleep(pause(script.byte())).await,
            14 => server.send_keepalive(),
            _ => {
                // 15: close the handle, or shut the peer's writing half.
                if script.byte() & 1 == 0 {
                    server.close();
                } else {
                    peer.shutdown().await;
                }
            }
        }
        let book = lock(&book);
        book.check();
        let alive = server.total_sessions() as usize - book.ended;
        let bound = settings.bound(alive, 2 * peer.frames + steps);
        let buffered = server.buffered_bytes();
        assert!(
            buffered <= bound,
            "server buffers {buffered} bytes, over the bound {bound} ({alive} live sub-streams)"
        );
    }
    finish_server(&server, &book, &mut peer).await;
}

/// One drain round's verdict: `true` when nothing is missing and nothing
/// moves any more. Data still missing must show progress within three
/// quiet rounds unless the connection closed (then it may be lost).
fn drained(
    missing: Option<u16>,
    got: bool,
    nothing_outgoing: bool,
    closed: bool,
    stuck: &mut u32,
) -> bool {
    match missing {
        None if !got && nothing_outgoing => return true,
        None => *stuck = 0,
        Some(_) if got => *stuck = 0,
        Some(id) => {
            *stuck += 1;
            assert!(
                *stuck < 3 || closed,
                "id {id}: data written for it never reached the open carrier"
            );
        }
    }
    false
}

async fn finish_server(server: &ServerHandle, book: &Arc<Mutex<Book>>, peer: &mut Peer) {
    // Drain: everything handlers wrote must reach the peer while the
    // connection stays open.
    let mut stuck = 0;
    for _ in 0..DRAIN_ROUNDS {
        if server.is_closed() {
            break;
        }
        peer.flush().await;
        let (frames, got) = peer.read(DRAIN_WAIT).await;
        let missing = {
            let mut book = lock(book);
            book.server_sent(frames);
            book.check();
            book.missing()
        };
        if drained(missing, got, peer.outgoing.is_empty(), server.is_closed(), &mut stuck) {
            break;
        }
    }
    {
        let mut book = lock(book);
        book.finished = true;
        book.orders.clear();
    }
    peer.io = None;
    let closed = timeout(END_WAIT, server.closed()).await;
    assert!(
        closed.is_ok(),
        "the server was still open {END_WAIT:?} after its carrier closed"
    );
    let total = server.total_sessions() as usize;
    let ended = timeout(END_WAIT, async {
        loop {
            {
                let book = lock(book);
                if book.ended == total && book.started == book.ended {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let book = lock(book);
    book.check();
    assert!(
        ended.is_ok(),
        "{} of {total} handlers still ran {END_WAIT:?} after the carrier closed",
        total - book.ended
    );
    assert_eq!(server.active_sessions(), 0, "sessions left after close");
    assert_eq!(server.buffered_bytes(), 0, "bytes left after close");
}

// ---------------------------------------------------------------------------
// Client mode: a MuxClient and the sub-streams the script opens

struct ClientSub {
    stream: Option<MuxStream>,
    id: SessionId,
    network: Network,
    destination: Destination,
    /// What the script wrote (queued), in order.
    written: Vec<u8>,
    /// What the peer received for it (New and Keep data).
    received: Vec<u8>,
    /// What it must read: the peer's data after the peer saw its New,
    /// until the peer's End.
    expected: Vec<u8>,
    read: Vec<u8>,
    peer_ended: bool,
}

#[derive(Default)]
struct ClientBook {
    subs: Vec<ClientSub>,
    /// Id → sub, once the peer read its New.
    announced: HashMap<SessionId, usize>,
    announced_ids: Vec<SessionId>,
    /// Ids the peer sent Keep or End for before it knew them: what such a
    /// sub-stream reads is not checked.
    tainted: HashSet<SessionId>,
    seed: u64,
}

impl ClientBook {
    fn peer_sent(&mut self, frames: Vec<Frame>) {
        for frame in frames {
            let id = frame.session_id;
            match frame.kind {
                // A client ignores New.
                FrameKind::New(_) | FrameKind::KeepAlive => {}
                FrameKind::Keep => {
                    let Some(data) = &frame.data else {
                        continue;
                    };
                    match self.announced.get(&id) {
                        Some(&index) => {
                            let sub = &mut self.subs[index];
                            if !sub.peer_ended {
                                as_read(sub.network, data, &mut sub.expected);
                            }
                        }
                        None => {
                            self.tainted.insert(id);
                        }
                    }
                }
                FrameKind::End { .. } => match self.announced.get(&id) {
                    Some(&index) => self.subs[index].peer_ended = true,
                    None => {
                        self.tainted.insert(id);
                    }
                },
            }
        }
    }

    /// The peer read these frames from the client.
    fn client_sent(&mut self, frames: Vec<Frame>) {
        for frame in frames {
            let id = frame.session_id;
            let data = frame.data.as_deref().unwrap_or_default();
            let index = match frame.kind {
                FrameKind::New(destination) => {
                    let index = self.subs.iter().position(|sub| sub.id == id);
                    let index = index.unwrap_or_else(|| {
                        panic!("the client sent New for id {id}, which it never opened")
                    });
                    assert_eq!(
                        destination, self.subs[index].destination,
                        "id {id}: New names another destination"
                    );
                    let again = self.announced.insert(id, index);
                    assert!(again.is_none(), "the client sent New for id {id} twice");
                    self.announced_ids.push(id);
                    index
                }
                FrameKind::Keep => *self
                    .announced
                    .get(&id)
                    .unwrap_or_else(|| panic!("the client sent data for id {id} before its New")),
                FrameKind::End { .. } | FrameKind::KeepAlive => continue,
            };
            let sub = &mut self.subs[index];
            sub.received.extend_from_slice(data);
            assert!(
                sub.written.starts_with(&sub.received),
                "id {id}: the peer received {} bytes, the stream wrote {}; they differ at byte {}",
                sub.received.len(),
                sub.written.len(),
                first_difference(&sub.written, &sub.received)
            );
        }
    }

    fn saw_data(&mut self, index: usize, bytes: &[u8]) {
        let sub = &mut self.subs[index];
        sub.read.extend_from_slice(bytes);
        if !self.tainted.contains(&sub.id) {
            assert!(
                sub.expected.starts_with(&sub.read),
                "id {}: read {} bytes, not a prefix of the {} the peer sent; they differ at byte {}",
                sub.id,
                sub.read.len(),
                sub.expected.len(),
                first_difference(&sub.expected, &sub.read)
            );
        }
    }

    fn saw_eof(&self, index: usize) {
        let sub = &self.subs[index];
        if !self.tainted.contains(&sub.id) {
            assert!(
                sub.read == sub.expected,
                "id {}: EOF after {} bytes, but the peer sent {} before its End",
                sub.id,
                sub.read.len(),
                sub.expected.len()
            );
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.subs.len())
            .filter(|&i| self.subs[i].stream.is_some())
            .collect()
    }

    fn pick(&self, byte: u8) -> Option<usize> {
        let alive = self.alive();
        (!alive.is_empty()).then(|| alive[byte as usize % alive.len()])
    }

    fn missing(&self) -> Option<SessionId> {
        self.subs
            .iter()
            .find(|sub| sub.received.len() != sub.written.len())
            .map(|sub| sub.id)
    }

    async fn read(
        &mut self,
        index: usize,
        limit: usize,
        wait: Duration,
    ) -> Option<io::Result<usize>> {
        let mut buf = vec![0; READ_BUF];
        let limit = match self.subs[index].network {
            Network::Tcp => limit.clamp(1, READ_BUF),
            Network::Udp => READ_BUF,
        };
        let stream = self.subs[index].stream.as_mut()?;
        let read = timeout(wait, stream.read(&mut buf[..limit])).await.ok()?;
        match read {
            Ok(0) => self.saw_eof(index),
            Ok(n) => self.saw_data(index, &buf[..n]),
            Err(_) => {}
        }
        Some(read)
    }

    async fn write(&mut self, index: usize, size: u8) {
        let sub = &mut self.subs[index];
        let Some(stream) = sub.stream.as_mut() else {
            return;
        };
        match sub.network {
            Network::Tcp => {
                let len = if size == 255 {
                    MAX_WRITE + 4000
                } else {
                    size as usize * 32
                };
                let data = pattern(&mut self.seed, len);
                if let Ok(Ok(n)) = timeout(IO_WAIT, stream.write(&data)).await {
                    sub.written.extend_from_slice(&data[..n]);
                }
            }
            Network::Udp => {
                let len = size as usize * 9;
                let mut packet = (len as u16).to_be_bytes().to_vec();
                packet.extend_from_slice(&pattern(&mut self.seed, len));
                if let Ok(Ok(n)) = timeout(IO_WAIT, stream.write(&packet)).await {
                    assert_eq!(n, packet.len(), "id {}: a datagram write took part", sub.id);
                    if len <= V2RAY_MAX_PACKET {
                        sub.written.extend_from_slice(&packet[2..]);
                    }
                }
            }
        }
    }
}

async fn client_script(script: &mut Script<'_>, settings: &Settings) {
    let (peer_io, carrier) = tokio::io::duplex(settings.duplex);
    let client = MuxClient::new(
        Box::new(carrier),
        ClientSettings {
            mux: settings.mux.clone(),
            max_concurrency: Some(settings.max_sessions),
            max_total: None,
            idle_timeout: settings.idle_timeout,
        },
    );
    let mut peer = Peer::new(peer_io);
    let mut book = ClientBook::default();
    let mut seed = 1u64;
    let mut opens: u16 = 0;
    let mut steps = 0;
    while !script.done() && steps < MAX_STEPS {
        steps += 1;
        let op = script.byte() % 20;
        let announced = book.announced_ids.clone();
        // Mostly an id the peer saw opened; sometimes one the client
        // cannot have (0xff00..).
        let mut pick_id = |byte: u8| match announced.len() {
            n if n > 0 && byte & 0xc0 != 0xc0 => announced[byte as usize % n],
            _ => 0xff00 | SessionId::from(byte & 0x0f),
        };
        match op {
            0 | 14 => {
                let kind = script.byte();
                opens = opens.wrapping_add(1);
                let destination = destination(network(kind & 1 != 0), kind >> 1, opens, 0);
                if let Ok(stream) = client.open_stream(&destination) {
                    book.subs.push(ClientSub {
                        id: stream.session_id(),
                        network: destination.network,
                        destination,
                        stream: Some(stream),
                        written: Vec::new(),
                        received: Vec::new(),
                        expected: Vec::new(),
                        read: Vec::new(),
                        peer_ended: false,
                    });
                }
            }
            1..=6 | 16 => {
                if let Some(frame) = peer_frame(op, script, &mut seed, &mut pick_id) {
                    let seen = peer.send(frame);
                    book.peer_sent(seen);
                    peer.flush().await;
                }
            }
            7 | 17 => {
                peer.flush().await;
                let (frames, _) = peer.read(IO_WAIT).await;
                book.client_sent(frames);
            }
            8 | 18 => {
                let which = script.byte();
                let limit = script.byte() as usize * 64 + 1;
                if let Some(index) = book.pick(which) {
                    book.read(index, limit, IO_WAIT).await;
                }
            }
            9 | 19 => {
                let which = script.byte();
                let size = script.byte();
                if let Some(index) = book.pick(which) {
                    book.write(index, size).await;
                }
            }
            10 => {
                if let Some(index) = book.pick(script.byte()) {
                    if let Some(stream) = book.subs[index].stream.as_mut() {
                        let _ = timeout(IO_WAIT, stream.shutdown()).await;
                    }
                }
            }
            11 => {
                if let Some(index) = book.pick(script.byte()) {
                    book.subs[index].stream = None;
                }
            }
            12 => {
                // A New toward the client, which ignores it.
                let id = pick_id(script.byte());
                let kind = script.byte();
                let destination = destination(network(kind & 1 != 0), kind >> 1, 0xffff, 0);
                let data = (kind & 0x20 != 0).then(|| pattern(&mut seed, 100).into());
                let seen = peer.send(PeerFrame::Frame(Frame::new_session(id, destination, data)));
                book.peer_sent(seen);
                peer.flush().await;
            }
            13 => tokio::time::sleep(pause(script.byte())).await,
            _ => {
                // 15: close the handle, or shut the peer's writing half.
                if script.byte() & 1 == 0 {
                    client.close();
                } else {
                    peer.shutdown().await;
                }
            }
        }
        let alive = book.alive().len();
        let bound = settings.bound(alive, 2 * peer.frames + steps);
        let buffered = client.buffered_bytes();
        assert!(
            buffered <= bound,
            "client buffers {buffered} bytes, over the bound {bound} ({alive} live sub-streams)"
        );
    }
    finish_client(&client, &mut book, &mut peer).await;
}

async fn finish_client(client: &MuxClient, book: &mut ClientBook, peer: &mut Peer) {
    let mut stuck = 0;
    for _ in 0..DRAIN_ROUNDS {
        if client.is_closed() {
            break;
        }
        peer.flush().await;
        let (frames, got) = peer.read(DRAIN_WAIT).await;
        book.client_sent(frames);
        let missing = book.missing();
        if drained(missing, got, peer.outgoing.is_empty(), client.is_closed(), &mut stuck) {
            break;
        }
    }
    peer.io = None;
    let closed = timeout(END_WAIT, client.closed()).await;
    assert!(
        closed.is_ok(),
        "the client was still open {END_WAIT:?} after its carrier closed"
    );
    for index in book.alive() {
        loop {
            match book.read(index, READ_BUF, END_WAIT).await {
                None => panic!(
                    "id {}: the sub-stream neither ended nor failed {END_WAIT:?} after its carrier closed",
                    book.subs[index].id
                ),
                Some(Ok(0)) | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
    for sub in &mut book.subs {
        sub.stream = None;
    }
    assert_eq!(client.active_sessions(), 0, "sessions left after close");
    assert_eq!(client.buffered_bytes(), 0, "bytes left after close");
}
