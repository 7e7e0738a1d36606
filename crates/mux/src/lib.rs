//! Mux.Cool, V2Ray 4.34's multiplexer: many sub-streams over one stream.
//!
//! Where it sits (ARCHITECTURE.md): above `core`, below `reverse` and `app`. The
//! portal drives a [`MuxClient`] over each bridge connection and the bridge
//! a [`MuxServer`]; [`MuxOutbound`] and [`serve_mux`] are V2Ray's ordinary
//! outbound mux and its inbound side. It knows nothing of VMess, routing or
//! config files: carriers come in as core [`Stream`](rayback_core::Stream)s.
//!
//! | module | what |
//! |---|---|
//! | [`frame`] | sans-IO frame codec (wire layout table there) |
//! | [`client`] | [`MuxClient`]: opens sessions (sends `New`) |
//! | [`server`] | [`MuxServer`], [`serve_mux`]; [`SessionHandler`] is what a server calls per session |
//! | [`stream`] | [`MuxStream`]: one sub-stream as `AsyncRead + AsyncWrite` |
//! | [`outbound`] | [`MuxOutbound`]: a pool of client connections behind an `Outbound` |
//! | [`settings`] | buffer bounds, timeouts, limits |
//! | [`engine`] | sans-IO session engine: every sub-stream's state and transition, the receive buffers, the send queue |
//! | `send` (private) | sans-IO send queue: fair admission, control frames first |
//! | `conn` (private) | the driver: the engine behind a mutex, the reader and writer tasks |
//!
//! Imports run one way: `stream`, `client`, `server` → `conn` → `engine`
//! → `send` → `frame`.
//!
//! # One connection, two tasks
//!
//! Every decision about a session is the engine's, taken on frames and
//! time passed in; the tasks and handles only move bytes and wake. A
//! reader task decodes frames, hands each to the engine and copies data
//! into the receive buffer of the sub-stream it names; a writer task writes
//! everything sub-streams queued since its last write in one write call
//! (two when large data follows control frames; frames of many
//! sub-streams batched together), then flushes. Sub-stream
//! writes encode frames straight into the shared queue: no allocation and
//! no channel message per frame.
//!
//! # Sharing the send direction
//!
//! The queue admits writers per batch (the private `send` module has the
//! rules): a sub-stream's first write into a batch is always taken while
//! the queue is under [`MuxSettings::send_queue`], a sub-stream already in
//! the batch stops at its share of three quarters of it, sub-streams that
//! found no room are woken those that got nothing in first, and New,
//! KeepAlive and Ends leave
//! ahead of the batch's data (an End never ahead of its own sub-stream's
//! data). So a bulk transfer cannot keep a request, a datagram or a new
//! connection's first bytes out of the carrier for longer than one batch
//! (≤ `send_queue` + 64 KiB), on a one-thread runtime too. V2Ray 4.34
//! gets its fairness from Go's scheduler instead: every sub-stream's
//! goroutine writes 8 KiB frames into one small shared pipe (16 KiB in
//! the reverse proxy), each waiting its turn at the pipe's lock.
//!
//! # Head-of-line blocking, and what Rayback does about it
//!
//! Mux.Cool has no per-stream window or credit (spec §9): a sender may
//! send any amount for any session, and the only back-pressure is the
//! carrier's TCP window. A receiver whose consumer of one sub-stream is slow
//! can therefore only (a) buffer without limit, (b) stop reading the
//! carrier, which stalls every sub-stream behind the slow one
//! (head-of-line blocking; what V2Ray does, with 64–512 KiB pipes), or
//! (c) drop the slow sub-stream.
//!
//! Rayback combines (b) and (c) and keeps the wire unchanged:
//!
//! * each sub-stream has a bounded receive buffer
//!   ([`MuxSettings::receive_buffer`], default 256 KiB). A sub-stream that is
//!   merely slower than the carrier for a moment never blocks the others:
//!   256 KiB absorbs bursts that V2Ray's 64 KiB outbound pipes do not;
//! * when that buffer is full, the reader stops reading the carrier
//!   (memory stays bounded; TCP pushes back on the sender);
//! * if the buffer stays full for [`MuxSettings::stall_timeout`] (default
//!   30 s), the stuck sub-stream is ended with End+error and the others
//!   resume. One stuck consumer costs the others at most that long.
//!
//! What a slow consumer does to the others, then: a consumer slower than
//! the sender, but moving, costs the other sub-streams on the connection
//! the time the carrier is not read while its 256 KiB buffer is full, i.e.
//! they run at the slow one's pace while it has data in flight; a stopped
//! one holds them for at most `stall_timeout`. A consumer that keeps up
//! costs nothing: sub-streams with room are served frame by frame in the
//! order the sender interleaved them. In V2Ray 4.34 each sub-stream's
//! pipe holds 64–512 KiB and a full one blocks the connection's reader
//! with no timeout, so a stopped consumer holds every other sub-stream
//! until it resumes or its connection idles out.
//!
//! Anything better (per-stream credit, window updates) would need frames
//! V2Ray does not know, so it is out of reach while staying compatible. The
//! memory a connection can hold is at most `receive_buffer` (or one frame,
//! if larger) per open sub-stream plus about `send_queue` + 128 KiB queued
//! for the carrier; [`MuxClient::buffered_bytes`] and
//! [`ServerHandle::buffered_bytes`] report it.
//!
//! # Compatibility choices (see each item's docs)
//!
//! * `New` is queued at once; first data written before it leaves rides in
//!   it ([`client`] explains why not V2Ray's 100 ms wait).
//! * Stream data goes in frames of at most [`MuxSettings::max_frame_data`]
//!   (60 KiB, one relay read; V2Ray writes 8 KiB and accepts up to
//!   65535). Datagrams over 2048 bytes are dropped rather than sent, since
//!   V2Ray would kill the whole connection on them; Rayback accepts up to
//!   65535 on receive.
//! * Half-close, a Rayback extension: `shutdown` of a TCP sub-stream
//!   sends End with option bit `80`, which V2Ray ignores. To a V2Ray peer
//!   that End is a full close, as in V2Ray itself (spec §6: no
//!   half-close); a Rayback peer instead reads EOF and keeps writing until
//!   its own End. Either way we still read until the peer's End
//!   ([`stream`] has the table).
//! * The visitor's source, a Rayback extension: a client made with
//!   [`ClientSettings::send_source`] (a portal whose bridge asked for it)
//!   appends the source given to [`MuxClient::open_from`] to the New's
//!   metadata, where V2Ray reads nothing; a server hands it to its
//!   [`SessionHandler`] ([`frame`] has the layout).

pub mod client;
mod conn;
pub mod engine;
pub mod error;
pub mod frame;
mod handler;
pub mod outbound;
mod send;
pub mod server;
pub mod settings;
pub mod stream;

pub use client::MuxClient;
pub use error::MuxError;
pub use frame::{Frame, FrameCodec, FrameKind, SessionId, Status};
pub use handler::SessionHandler;
pub use outbound::MuxOutbound;
pub use server::{
    is_mux_cool, mux_cool_destination, serve_mux, serve_mux_with, MuxServer, ServerHandle,
    MUX_COOL_DOMAIN, MUX_COOL_PORT,
};
pub use settings::{concurrency_from_config, ClientSettings, MuxSettings, ServerSettings};
pub use stream::MuxStream;
