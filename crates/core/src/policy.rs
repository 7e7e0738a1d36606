//! Per-level connection policy: the timeouts and buffer V2Ray's `policy`
//! object sets, with V2Ray 4.34's defaults.

use std::collections::HashMap;
use std::time::Duration;

/// The limits that apply to one session, chosen by its user level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long an inbound waits for a complete handshake (VMess header).
    pub handshake: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub conn_idle: Duration,
    /// Once the response side has ended, how long the request side may
    /// stay idle before the connection is closed.
    pub uplink_only: Duration,
    /// Once the request side has ended, how long the response side may
    /// stay idle before the connection is closed.
    pub downlink_only: Duration,
    /// Bytes buffered per direction of a connection. `None` = no limit set.
    pub buffer_size: Option<usize>,
}

impl Default for Policy {
    /// V2Ray 4.34's level-0 defaults (`features/policy/policy.go`):
    /// 60 s handshake, 300 s idle, 1 s uplink-only and downlink-only,
    /// 512 KiB per direction.
    fn default() -> Policy {
        Policy {
            handshake: Duration::from_secs(60),
            conn_idle: Duration::from_secs(300),
            uplink_only: Duration::from_secs(1),
            downlink_only: Duration::from_secs(1),
            buffer_size: Some(512 * 1024),
        }
    }
}

/// The policy of every configured level; unconfigured levels get defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    levels: HashMap<u32, Policy>,
}

impl Policies {
    pub fn new(levels: HashMap<u32, Policy>) -> Policies {
        Policies { levels }
    }

    /// The policy of `level`.
    pub fn level(&self, level: u32) -> Policy {
        self.levels.get(&level).copied().unwrap_or_default()
    }
}
