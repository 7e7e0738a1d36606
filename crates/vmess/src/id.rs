//! VMess user IDs: the UUID, the command key derived from it, and the
//! legacy alter IDs.
//!
//! | value | definition (spec/vmess.md §1) |
//! |---|---|
//! | `cmdKey` | `MD5(uuid ‖ "c48619fe-8f02-49e0-b9e9-edf763e17e21")` |
//! | `A_0` | the UUID |
//! | `A_{k+1}` | `MD5(A_k ‖ "16167dc8-16b6-4e6d-b8bb-65dd68113a81")`, re-fed with `"533eff8a-…"` while equal to `A_k` |
//!
//! Not here: how IDs authenticate a request ([`crate::header`]).

use std::fmt;

use md5::{Digest, Md5};

use crate::error::VmessError;

const CMD_KEY_SALT: &[u8] = b"c48619fe-8f02-49e0-b9e9-edf763e17e21";
const ALTER_ID_SALT: &[u8] = b"16167dc8-16b6-4e6d-b8bb-65dd68113a81";
const ALTER_ID_RETRY_SALT: &[u8] = b"533eff8a-4113-4b10-b5ce-0f5d76b98cd2";

/// A VMess user ID (a UUID). `Debug` masks it: IDs are secrets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId {
    bytes: [u8; 16],
}

impl UserId {
    pub fn from_bytes(bytes: [u8; 16]) -> UserId {
        UserId { bytes }
    }

    /// Parses a UUID as V2Ray 4.34 does: 32 hex digits in groups of
    /// 8-4-4-4-12, each group optionally preceded by one `-` (so both the
    /// dashed and the plain 32-digit forms work).
    pub fn parse(text: &str) -> Result<UserId, VmessError> {
        let invalid = || VmessError::InvalidUuid(text.to_owned());
        let mut bytes = [0u8; 16];
        let mut rest = text.as_bytes();
        let mut out = 0;
        for group in [8usize, 4, 4, 4, 12] {
            if let Some(after_dash) = rest.strip_prefix(b"-") {
                rest = after_dash;
            }
            if rest.len() < group {
                return Err(invalid());
            }
            for pair in rest[..group].chunks(2) {
                let high = hex_digit(pair[0]).ok_or_else(invalid)?;
                let low = hex_digit(pair[1]).ok_or_else(invalid)?;
                bytes[out] = (high << 4) | low;
                out += 1;
            }
            rest = &rest[group..];
        }
        if !rest.is_empty() {
            return Err(invalid());
        }
        Ok(UserId { bytes })
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// The command key: the secret every AEAD header key derives from.
    pub fn cmd_key(&self) -> [u8; 16] {
        let mut hasher = Md5::new();
        hasher.update(self.bytes);
        hasher.update(CMD_KEY_SALT);
        hasher.finalize().into()
    }

    /// The alter IDs `A_1..A_count` (legacy authentication only).
    pub fn alter_ids(&self, count: u16) -> Vec<UserId> {
        let mut ids = Vec::with_capacity(count as usize);
        let mut previous = self.bytes;
        for _ in 0..count {
            let next = next_alter_id(&previous);
            ids.push(UserId { bytes: next });
            previous = next;
        }
        ids
    }

    /// The dashed lowercase text form. Kept off `Display` so that a
    /// careless `{}` cannot print a secret.
    pub fn to_uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.bytes).hyphenated().to_string()
    }
}

impl From<uuid::Uuid> for UserId {
    fn from(uuid: uuid::Uuid) -> UserId {
        UserId {
            bytes: *uuid.as_bytes(),
        }
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first byte is enough to tell users apart in a log.
        write!(f, "UserId({:02x}******)", self.bytes[0])
    }
}

fn next_alter_id(previous: &[u8; 16]) -> [u8; 16] {
    let mut hasher = Md5::new();
    hasher.update(previous);
    hasher.update(ALTER_ID_SALT);
    loop {
        let digest: [u8; 16] = hasher.clone().finalize().into();
        if &digest != previous {
            return digest;
        }
        // Keep feeding the same running hash, as V2Ray does.
        hasher.update(ALTER_ID_RETRY_SALT);
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn parses_uuid_forms() {
        let dashed = UserId::parse("2418d087-648d-4990-86e8-19dca1d006d3").unwrap();
        assert_eq!(hex(dashed.as_bytes()), "2418d087648d499086e819dca1d006d3");
        let plain = UserId::parse("2418D087648D499086E819DCA1D006D3").unwrap();
        assert_eq!(plain, dashed);
        for bad in [
            "",
            "2418d087-648d-4990-86e8-19dca1d006d",
            "2418d087-648d-4990-86e8-19dca1d006d3a",
            "2418d087--648d-4990-86e8-19dca1d006d3",
            "x418d087-648d-4990-86e8-19dca1d006d3",
            "not a uuid at all, just some text!!",
        ] {
            let error = UserId::parse(bad).unwrap_err();
            assert!(error.to_string().contains("invalid uuid"), "{bad}: {error}");
        }
    }

    #[test]
    fn cmd_keys_and_alter_ids_match_spec() {
        let id = UserId::parse("27848739-7e62-4138-9fd3-098a63964b6b").unwrap();
        assert_eq!(hex(&id.cmd_key()), "6f87e1b19f8da25df715d655ae9a1764");
        let other = UserId::parse("b831381d-6324-4d53-ad4f-8cda48b30811").unwrap();
        assert_eq!(hex(&other.cmd_key()), "b50d916ac0cec067981af8e5f38a758f");
        let alter = id.alter_ids(2);
        assert_eq!(
            alter[0].to_uuid_string(),
            "2bbd2628-154d-0411-51a5-488b24b9fc33"
        );
        assert_eq!(hex(&alter[0].cmd_key()), "5050d1c501ad14b2c9223832dbdc84e1");
        assert_ne!(alter[0], alter[1]);
    }

    #[test]
    fn debug_masks_the_id() {
        let id = UserId::parse("27848739-7e62-4138-9fd3-098a63964b6b").unwrap();
        let printed = format!("{id:?}");
        assert!(!printed.contains("7e62"), "{printed}");
    }
}
