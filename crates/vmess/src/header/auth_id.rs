//! Sans-IO codec of the VMess AuthID: the 16 bytes that open an AEAD
//! request, by which the server finds the user and checks the time.
//!
//! It is not the envelope behind it (`aead.rs`) nor the replay filter that
//! remembers AuthIDs ([`crate::validator`]). Part of [`crate::header`].
//!
//! The AuthID, the first row of the AEAD request table in `aead.rs`:
//!
//! | bytes | field |
//! |---|---|
//! | 16 | AuthID: AES-128(`KDF16(cmdKey, "AES Auth ID Encryption")`, time(8) ‖ random(4) ‖ CRC-32(4)) |

use crate::crypto::{self, AuthIdCipher};

const AUTH_ID_KEY_LABEL: &[u8] = b"AES Auth ID Encryption";

/// How far an AuthID's time may be from the server's clock (inclusive).
pub const AUTH_ID_WINDOW_SECS: i64 = 120;

/// The AuthID key of a user: `KDF16(cmdKey, "AES Auth ID Encryption")`.
pub fn auth_id_key(cmd_key: &[u8; 16]) -> [u8; 16] {
    crypto::kdf16(cmd_key, &[AUTH_ID_KEY_LABEL])
}

/// Builds an AuthID for time `now` (Unix seconds) and 4 random bytes.
pub fn create_auth_id(cipher: &AuthIdCipher, now: i64, random: [u8; 4]) -> [u8; 16] {
    let mut plain = [0u8; 16];
    plain[..8].copy_from_slice(&now.to_be_bytes());
    plain[8..12].copy_from_slice(&random);
    let crc = crypto::crc32(&plain[..12]);
    plain[12..].copy_from_slice(&crc.to_be_bytes());
    cipher.encrypt(&plain)
}

/// What an AuthID says when decrypted with one user's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthIdCheck {
    /// Not this user's (CRC mismatch).
    NotMine,
    /// This user's, but its time is out of the window (seconds away).
    Stale(i64),
    /// This user's and fresh.
    Fresh,
}

/// Checks an AuthID against one user's key at time `now`.
pub fn check_auth_id(cipher: &AuthIdCipher, auth_id: &[u8; 16], now: i64) -> AuthIdCheck {
    let plain = cipher.decrypt(auth_id);
    let crc = u32::from_be_bytes([plain[12], plain[13], plain[14], plain[15]]);
    if crc != crypto::crc32(&plain[..12]) {
        return AuthIdCheck::NotMine;
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&plain[..8]);
    let time = i64::from_be_bytes(time);
    let away = time.saturating_sub(now);
    if time < 0 || away.unsigned_abs() > AUTH_ID_WINDOW_SECS as u64 {
        return AuthIdCheck::Stale(away);
    }
    AuthIdCheck::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_vectors::{hex, spec_user};
    use crate::id::UserId;

    #[test]
    fn auth_id_matches_spec() {
        let key = auth_id_key(&spec_user().cmd_key());
        let cipher = AuthIdCipher::new(&key);
        let auth_id = create_auth_id(&cipher, 1_700_000_000, [1, 2, 3, 4]);
        assert_eq!(hex(&auth_id), "6868c12572a3ce177baac5f08cc54ec3");
        assert_eq!(
            hex(&cipher.decrypt(&auth_id)),
            "000000006553f10001020304b85575f7"
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 + 120),
            AuthIdCheck::Fresh
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 - 120),
            AuthIdCheck::Fresh
        );
        assert_eq!(
            check_auth_id(&cipher, &auth_id, 1_700_000_000 + 121),
            AuthIdCheck::Stale(-121)
        );
        let other = AuthIdCipher::new(&auth_id_key(
            &UserId::parse("b831381d-6324-4d53-ad4f-8cda48b30811")
                .unwrap()
                .cmd_key(),
        ));
        assert_eq!(
            check_auth_id(&other, &auth_id, 1_700_000_000),
            AuthIdCheck::NotMine
        );
    }
}
