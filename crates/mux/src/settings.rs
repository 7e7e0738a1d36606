//! Knobs of a mux connection: buffer bounds, the stall timeout, frame
//! sizes, session limits. Plain structs with V2Ray-compatible defaults;
//! no parsing here (the `config` crate turns JSON into these).

use std::time::Duration;

use rayback_core::{AgreedExtensions, Extensions};

use crate::error::MuxError;
use crate::frame::MAX_DATA;

/// V2Ray 4.34 refuses a packet data frame over this many bytes (and kills
/// the whole connection), so a UDP datagram larger than this is dropped
/// instead of sent.
pub const V2RAY_MAX_PACKET: usize = 2048;

/// The largest packet frame a Rayback peer that agreed to
/// [`Extensions::LARGE_PACKETS`] takes: a frame's whole 16-bit data length,
/// which holds any UDP datagram (at most 65,507 bytes over IPv4). Rayback
/// itself decodes packet frames up to this size from any peer.
pub const LARGE_MAX_PACKET: usize = MAX_DATA;

/// Outbound mux: a connection takes at most this many sessions over its
/// life, then closes when idle (V2Ray 4.34's `MaxConnection`).
pub const OUTBOUND_MAX_TOTAL: u64 = 128;

/// Outbound mux: `concurrency` omitted or 0 means this many.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Outbound mux: the largest `concurrency` V2Ray accepts.
pub const MAX_CONCURRENCY: usize = 1024;

/// Settings both roles share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuxSettings {
    /// Most bytes buffered for one sub-stream whose reader is slower than
    /// the peer. When a sub-stream's buffer is full the connection stops
    /// reading (back-pressure; see the crate docs on head-of-line blocking).
    /// A single frame is always accepted into an empty buffer, so the real
    /// bound is `max(receive_buffer, one frame)`.
    pub receive_buffer: usize,
    /// How long the connection waits for a full sub-stream to make room
    /// before ending it with End+error, so one stuck reader cannot hold
    /// every other sub-stream hostage.
    pub stall_timeout: Duration,
    /// Bytes of encoded frames queued for the carrier before sub-stream
    /// writers wait. A write is accepted while the queue is under this
    /// bound, so it can overshoot by one write (at most 64 KiB of data plus
    /// 8 header bytes per frame). Control frames the peer provokes may
    /// add 64 KiB more before the connection stops reading the peer.
    pub send_queue: usize,
    /// Largest data section Rayback writes in one stream frame (1..=65535).
    /// V2Ray accepts any 16-bit length on stream sessions and itself writes
    /// 8 KiB; larger frames cost fewer headers, smaller ones interleave
    /// sub-streams more finely.
    pub max_frame_data: usize,
    /// Largest UDP datagram sent; bigger ones are dropped (and logged).
    /// [`V2RAY_MAX_PACKET`] unless the peer is known to be Rayback (a
    /// portal raises it for a bridge that asked for large packets).
    pub max_packet: usize,
    /// Where the dial of this connection records what its server agreed
    /// to: once that includes [`Extensions::LARGE_PACKETS`], datagrams up
    /// to [`LARGE_MAX_PACKET`] are sent whatever `max_packet` says. A
    /// bridge needs this because it starts serving before the portal's
    /// VMess response arrives, though always before the first frame it
    /// could answer. `None`: `max_packet` alone decides.
    pub large_packets_agreed: Option<AgreedExtensions>,
    /// Client: offer per-stream flow control in the connection's first
    /// frame (a Rayback extension, see [`crate::frame`]); only for a peer
    /// known to be Rayback (V2Ray is never sent it). A server answers any
    /// offer. Each side then grants every sub-stream `receive_buffer`
    /// bytes to start with, and a window that a fast reader keeps empty
    /// grows up to `max_window`.
    pub offer_flow_control: bool,
    /// Most bytes one sub-stream's window may grow to: what a receiver may
    /// hold for a sub-stream whose reader slows after its window grew, and
    /// what one sub-stream may have in flight (4 MiB: 40 MB/s per
    /// sub-stream over a 100 ms path).
    pub max_window: usize,
}

impl Default for MuxSettings {
    fn default() -> MuxSettings {
        MuxSettings {
            receive_buffer: 256 * 1024,
            stall_timeout: Duration::from_secs(30),
            send_queue: 256 * 1024,
            // One relay read (60 KiB) per frame, and a frame plus its
            // header within one VMess chunk.
            max_frame_data: 60 * 1024,
            max_packet: V2RAY_MAX_PACKET,
            large_packets_agreed: None,
            offer_flow_control: false,
            max_window: 4 * 1024 * 1024,
        }
    }
}

impl MuxSettings {
    /// The frame data size actually used: `max_frame_data` kept within
    /// 1..=65535.
    pub(crate) fn frame_data(&self) -> usize {
        self.max_frame_data.clamp(1, u16::MAX as usize)
    }

    /// The window each sub-stream is granted to start with (see
    /// [`MuxSettings::offer_flow_control`]): `receive_buffer`, within
    /// 1..=`max_window` and a u32.
    pub(crate) fn initial_window(&self) -> u32 {
        let max = self.max_window.clamp(1, u32::MAX as usize);
        self.receive_buffer.clamp(1, max) as u32
    }

    /// [`MuxSettings::max_window`] as a u32, at least the initial window.
    pub(crate) fn window_cap(&self) -> u32 {
        (self.max_window.min(u32::MAX as usize) as u32).max(self.initial_window())
    }

    /// The largest datagram sent now: `max_packet` (at most a frame's
    /// data), or [`LARGE_MAX_PACKET`] once the server agreed to large
    /// packets.
    pub(crate) fn packet_limit(&self) -> usize {
        let agreed = self
            .large_packets_agreed
            .as_ref()
            .is_some_and(|agreed| agreed.get().contains(Extensions::LARGE_PACKETS));
        if agreed {
            LARGE_MAX_PACKET
        } else {
            self.max_packet.min(MAX_DATA)
        }
    }
}

/// Settings of the side that sends `New` (portal, outbound mux).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    pub mux: MuxSettings,
    /// Most sessions open at once; `None` = no limit (the portal).
    pub max_concurrency: Option<usize>,
    /// Most sessions over the connection's life; `None` = no limit. Once
    /// reached the connection takes no new session and closes when idle.
    pub max_total: Option<u64>,
    /// The connection closes itself when it has no session at a check made
    /// this often (V2Ray: every 16 s). `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Name the visitor's source in each New opened with one
    /// ([`crate::MuxClient::open_from`]): a Rayback-only extension (see
    /// [`crate::frame`]) that V2Ray ignores. The portal turns it on for a
    /// bridge that asked for it; off by default.
    pub send_source: bool,
}

impl Default for ClientSettings {
    /// The portal's client: no limits, V2Ray's 16 s idle check.
    fn default() -> ClientSettings {
        ClientSettings {
            mux: MuxSettings::default(),
            max_concurrency: None,
            max_total: None,
            idle_timeout: Some(Duration::from_secs(16)),
            send_source: false,
        }
    }
}

impl ClientSettings {
    /// An outbound mux connection as V2Ray 4.34 runs it: `concurrency`
    /// sessions at once, 128 over its life, closed when idle at a 16 s check.
    pub fn outbound(concurrency: usize) -> ClientSettings {
        ClientSettings {
            max_concurrency: Some(concurrency),
            max_total: Some(OUTBOUND_MAX_TOTAL),
            ..ClientSettings::default()
        }
    }
}

/// Settings of the side that receives `New` (bridge, mux inbound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub mux: MuxSettings,
    /// Most sessions open at once; a `New` beyond it is answered with
    /// End+error. V2Ray has no limit; a 4.34 peer never has more than 1024
    /// (outbound mux) or a few hundred (portal, which drains after 256)
    /// open on one connection.
    pub max_sessions: usize,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            mux: MuxSettings::default(),
            max_sessions: 4096,
        }
    }
}

/// V2Ray's `"mux": {"concurrency": N}` rule: negative → mux off (`None`),
/// 0 → 8, 1..=1024 → N, above → error `invalid mux concurrency: N`.
pub fn concurrency_from_config(value: i64) -> Result<Option<usize>, MuxError> {
    match value {
        v if v < 0 => Ok(None),
        0 => Ok(Some(DEFAULT_CONCURRENCY)),
        v if v as u64 <= MAX_CONCURRENCY as u64 => Ok(Some(v as usize)),
        v => Err(MuxError::InvalidConcurrency(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_follows_v2ray() {
        assert_eq!(concurrency_from_config(-1).unwrap(), None);
        assert_eq!(concurrency_from_config(0).unwrap(), Some(8));
        assert_eq!(concurrency_from_config(1).unwrap(), Some(1));
        assert_eq!(concurrency_from_config(1024).unwrap(), Some(1024));
        let error = concurrency_from_config(1025).unwrap_err();
        assert_eq!(error.to_string(), "invalid mux concurrency: 1025");
    }

    #[test]
    fn frame_data_is_clamped() {
        let mut config = MuxSettings::default();
        assert_eq!(config.frame_data(), 60 * 1024);
        config.max_frame_data = 0;
        assert_eq!(config.frame_data(), 1);
        config.max_frame_data = 1 << 20;
        assert_eq!(config.frame_data(), 65535);
    }

    // The packet limit follows the server's answer as soon as it is
    // recorded; an answer without large packets leaves `max_packet`.
    #[test]
    fn packet_limit_follows_the_agreed_extensions() {
        let agreed = AgreedExtensions::new();
        let mut config = MuxSettings {
            large_packets_agreed: Some(agreed.clone()),
            ..MuxSettings::default()
        };
        assert_eq!(config.packet_limit(), V2RAY_MAX_PACKET);
        agreed.record(Extensions::SOURCE);
        assert_eq!(config.packet_limit(), V2RAY_MAX_PACKET);
        agreed.record(Extensions::SOURCE | Extensions::LARGE_PACKETS);
        assert_eq!(config.packet_limit(), 65535);
        config.large_packets_agreed = None;
        config.max_packet = 1 << 20;
        assert_eq!(config.packet_limit(), 65535);
    }
}
