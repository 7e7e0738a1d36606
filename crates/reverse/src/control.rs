//! The reverse proxy's control message, sans-IO.
//!
//! The portal sends one `Control` protobuf message per data frame of the
//! UDP-typed mux session to the internal control domain
//! (`reverse.internal.v2ray.com:0`, session 1). V2Ray 4.34's schema
//! (`app/reverse/config.proto`):
//!
//! | field | number | wire | meaning |
//! |---|---|---|---|
//! | `state` | 1 | tag `0x08`, varint | `ACTIVE = 0` (omitted, proto3 default), `DRAIN = 1` |
//! | `random` | 99 | tag `0x9a 0x06`, length varint, bytes | 0..63 random bytes of padding |
//!
//! V2Ray writes fields in number order and skips the message entirely when
//! it serializes to nothing (ACTIVE with no padding). Rayback always pads
//! with 1..=63 bytes, so every heartbeat is sent: a Rayback bridge can then
//! treat missing heartbeats as a dead tunnel, and a V2Ray bridge sees
//! nothing unusual. Decoding is a real protobuf reader: unknown fields are
//! skipped, fields may come in any order, a repeated `state` wins last.

/// The tunnel connection's state, as the portal announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Open for new sessions.
    Active,
    /// No new sessions; the connection ends when its sessions have.
    Drain,
}

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub state: State,
    pub random: Vec<u8>,
}

/// Why bytes are not a control message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("control message truncated")]
    Truncated,
    #[error("control message has a varint over 10 bytes")]
    VarintTooLong,
    #[error("control message field {field} has wire type {wire_type}, which is not allowed there")]
    WireType { field: u64, wire_type: u8 },
    #[error("control message uses unsupported wire type {0}")]
    UnknownWireType(u8),
}

const FIELD_STATE: u64 = 1;
const FIELD_RANDOM: u64 = 99;
/// The largest padding V2Ray draws (`dice.Roll(64)`).
pub const MAX_RANDOM: usize = 63;

impl Control {
    /// Appends the protobuf encoding, fields in number order as V2Ray does.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if self.state == State::Drain {
            out.extend_from_slice(&[0x08, 0x01]);
        }
        if !self.random.is_empty() {
            put_varint(out, (FIELD_RANDOM << 3) | 2);
            put_varint(out, self.random.len() as u64);
            out.extend_from_slice(&self.random);
        }
    }

    /// Decodes one message (the whole of one packet).
    pub fn decode(mut bytes: &[u8]) -> Result<Control, ControlError> {
        let mut control = Control {
            state: State::Active,
            random: Vec::new(),
        };
        while !bytes.is_empty() {
            let key = take_varint(&mut bytes)?;
            let field = key >> 3;
            let wire_type = (key & 7) as u8;
            match wire_type {
                0 => {
                    let value = take_varint(&mut bytes)?;
                    if field == FIELD_STATE {
                        // proto3 open enums keep unknown values; V2Ray acts only
                        // on DRAIN, so anything else is as good as ACTIVE.
                        control.state = if value == 1 {
                            State::Drain
                        } else {
                            State::Active
                        };
                    } else if field == FIELD_RANDOM {
                        return Err(ControlError::WireType { field, wire_type });
                    }
                }
                1 => take(&mut bytes, 8).map(drop)?,
                2 => {
                    let len = take_varint(&mut bytes)?;
                    let len = usize::try_from(len).map_err(|_| ControlError::Truncated)?;
                    let value = take(&mut bytes, len)?;
                    if field == FIELD_RANDOM {
                        control.random = value.to_vec();
                    } else if field == FIELD_STATE {
                        return Err(ControlError::WireType { field, wire_type });
                    }
                }
                5 => take(&mut bytes, 4).map(drop)?,
                other => return Err(ControlError::UnknownWireType(other)),
            }
        }
        Ok(control)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, ControlError> {
    let mut value = 0u64;
    for index in 0..10 {
        let (&byte, rest) = bytes.split_first().ok_or(ControlError::Truncated)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ControlError::VarintTooLong)
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], ControlError> {
    if bytes.len() < len {
        return Err(ControlError::Truncated);
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(control: &Control) -> Vec<u8> {
        let mut out = Vec::new();
        control.encode(&mut out);
        out
    }

    #[test]
    fn matches_the_spec_bytes() {
        let active = Control {
            state: State::Active,
            random: vec![0, 1, 2],
        };
        assert_eq!(encoded(&active), [0x9a, 0x06, 0x03, 0x00, 0x01, 0x02]);
        let drain = Control {
            state: State::Drain,
            random: vec![0xff],
        };
        assert_eq!(encoded(&drain), [0x08, 0x01, 0x9a, 0x06, 0x01, 0xff]);
        let bare = Control {
            state: State::Drain,
            random: vec![],
        };
        assert_eq!(encoded(&bare), [0x08, 0x01]);
    }

    #[test]
    fn round_trips_and_reads_any_order() {
        for len in 0..=MAX_RANDOM {
            for state in [State::Active, State::Drain] {
                let control = Control {
                    state,
                    random: (0..len as u8).collect(),
                };
                assert_eq!(Control::decode(&encoded(&control)).unwrap(), control);
            }
        }
        // random first, then state, then an unknown fixed32 field 7.
        let bytes = [0x9a, 0x06, 0x01, 0xaa, 0x08, 0x01, 0x3d, 1, 2, 3, 4];
        let control = Control::decode(&bytes).unwrap();
        assert_eq!(control.state, State::Drain);
        assert_eq!(control.random, [0xaa]);
        assert_eq!(Control::decode(&[]).unwrap().state, State::Active);
    }

    #[test]
    fn rejects_malformed_without_panicking() {
        assert_eq!(Control::decode(&[0x9a]), Err(ControlError::Truncated));
        assert_eq!(
            Control::decode(&[0x9a, 0x06, 0x05, 1]),
            Err(ControlError::Truncated)
        );
        assert_eq!(
            Control::decode(&[0x0f]),
            Err(ControlError::UnknownWireType(7))
        );
        assert_eq!(
            Control::decode(&[0x80; 11]),
            Err(ControlError::VarintTooLong)
        );
        // Every byte string up to 3 bytes long decodes or errs, never panics.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = Control::decode(&[a, b]);
                let _ = Control::decode(&[a, b, 0x80]);
            }
        }
    }
}
