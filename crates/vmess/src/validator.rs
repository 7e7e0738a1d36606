//! The sans-IO server side of a VMess handshake: who the users are, which
//! request headers are authentic, fresh and not replayed.
//!
//! [`Validator`] holds the users and the shared replay state (AuthID filter,
//! legacy auth table, session history); a [`RequestDecoder`] per connection
//! feeds it the bytes read so far plus the current time and gets back
//! `Ok(None)` (need more), the accepted request, or the reason to refuse.
//! The inbound handler ([`crate::inbound`]) does the reading and the
//! silent drain on refusal.
//!
//! Checks, in order (spec/vmess.md §3.1, §5, §6):
//!
//! | step | AEAD request | legacy request |
//! |---|---|---|
//! | 1 | AuthID decrypts with a user's key, CRC-32 matches, time within ±120 s | auth hash is in the table of (ID, second) hashes for `now ± 120 s`, **only for users with alterId > 0**, entry not burnt |
//! | 2 | AuthID not seen in the last 120–240 s | — |
//! | 3 | sealed length and header open | header decrypts (CFB) |
//! | 4 | FNV-1a checksum, command, address, security (3/4/5), no P without M | same; a bad checksum burns the auth entry |
//! | 5 | (user, body key, body IV) not seen in the last 3 minutes | same; a duplicate burns the auth entry |
//!
//! Stricter than 4.34, on purpose: 4.34 accepts legacy headers from every
//! user (it has no switch to refuse them); Rayback accepts them only for
//! users whose own `alterId` is above 0, so a user configured for AEAD
//! cannot be reached through the weaker MD5 authentication. Legacy
//! (AES-CFB) body security (nibbles 0 and 1) is refused; 4.34 clients
//! never send it from a config.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::crypto::AuthIdCipher;
use crate::error::HandshakeError;
use crate::header::{self, AuthIdCheck, BodySecurity, HeaderMode, RequestHeader, AUTH_ID_LEN};
use crate::id::UserId;

/// How long an AuthID is remembered at least (it is kept 120–240 s).
pub const AUTH_ID_MEMORY_SECS: i64 = 120;
/// How far from the server clock a legacy timestamp may be.
pub const LEGACY_WINDOW_SECS: i64 = 120;
/// How long a (user, body key, body IV) triple is remembered.
pub const SESSION_HISTORY_SECS: i64 = 180;
/// How often expired session history entries are swept.
const SESSION_SWEEP_SECS: i64 = 30;

/// A user of a VMess inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUser {
    pub id: UserId,
    /// Above 0: legacy (MD5) headers are accepted for this user, from its
    /// main ID and its `alter_id` alter IDs.
    pub alter_id: u16,
    pub level: u32,
    pub email: String,
}

struct UserKeys {
    cmd_key: [u8; 16],
    auth_id: AuthIdCipher,
}

/// An accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Index of the user in the list the validator was built with.
    pub user: usize,
    pub header: RequestHeader,
    pub mode: HeaderMode,
    /// Bytes of the input the handshake took; body bytes follow.
    pub consumed: usize,
}

/// The users of one inbound and its replay state. Shared by all of the
/// inbound's connections.
pub struct Validator {
    users: Vec<ServerUser>,
    keys: Vec<UserKeys>,
    auth_ids: Mutex<AuthIdFilter>,
    legacy: Mutex<LegacyTable>,
    sessions: Mutex<SessionHistory>,
    /// 4.34's `disableInsecureEncryption`: refuse security none.
    refuse_none: bool,
}

impl Validator {
    pub fn new(users: Vec<ServerUser>) -> Validator {
        let keys = users
            .iter()
            .map(|user| {
                let cmd_key = user.id.cmd_key();
                UserKeys {
                    cmd_key,
                    auth_id: AuthIdCipher::new(&header::auth_id_key(&cmd_key)),
                }
            })
            .collect();
        let legacy_ids = users
            .iter()
            .enumerate()
            .filter(|(_, user)| user.alter_id > 0)
            .map(|(index, user)| {
                let mut ids = vec![user.id];
                ids.extend(user.id.alter_ids(user.alter_id));
                (index, ids)
            })
            .collect();
        Validator {
            users,
            keys,
            auth_ids: Mutex::new(AuthIdFilter::default()),
            legacy: Mutex::new(LegacyTable::new(legacy_ids)),
            sessions: Mutex::new(SessionHistory::default()),
            refuse_none: false,
        }
    }

    /// As 4.34's `disableInsecureEncryption: true`: requests with security
    /// none are refused (legacy AES-CFB bodies always are).
    pub fn disable_insecure_encryption(mut self, disable: bool) -> Validator {
        self.refuse_none = disable;
        self
    }

    /// The checks after the checksum that do not depend on the envelope.
    fn check_request(
        &self,
        user: usize,
        header: &RequestHeader,
        now: i64,
    ) -> Result<(), HandshakeError> {
        if self.refuse_none && header.security == BodySecurity::None {
            return Err(HandshakeError::UnsupportedSecurity(
                BodySecurity::None.wire_value(),
            ));
        }
        if !self.fresh_session(user, header, now) {
            return Err(HandshakeError::DuplicateSession);
        }
        Ok(())
    }

    pub fn users(&self) -> &[ServerUser] {
        &self.users
    }

    /// Checks a session key triple; true when it is new (and now known).
    fn fresh_session(&self, user: usize, header: &RequestHeader, now: i64) -> bool {
        lock(&self.sessions).check_and_insert((user, header.body_key, header.body_iv), now)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these leaves consistent (if stale) sets.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum DecoderState {
    Auth,
    Aead {
        user: usize,
        auth_id: [u8; 16],
    },
    Legacy {
        user: usize,
        timestamp: u64,
        auth: [u8; 16],
    },
}

/// Decodes one connection's request header, step by step.
pub struct RequestDecoder {
    state: DecoderState,
}

impl Default for RequestDecoder {
    fn default() -> RequestDecoder {
        RequestDecoder::new()
    }
}

impl RequestDecoder {
    pub fn new() -> RequestDecoder {
        RequestDecoder {
            state: DecoderState::Auth,
        }
    }

    /// Looks at everything read so far (`data` always starts at the first
    /// byte of the connection) at time `now` (Unix seconds).
    pub fn decode(
        &mut self,
        validator: &Validator,
        data: &[u8],
        now: i64,
    ) -> Result<Option<Accepted>, HandshakeError> {
        if let DecoderState::Auth = self.state {
            let Some(auth) = data.get(..AUTH_ID_LEN) else {
                return Ok(None);
            };
            let mut auth_bytes = [0u8; AUTH_ID_LEN];
            auth_bytes.copy_from_slice(auth);
            self.state = match_user(validator, &auth_bytes, now)?;
        }
        let rest = &data[AUTH_ID_LEN..];
        match self.state {
            DecoderState::Auth => Ok(None),
            DecoderState::Aead { user, auth_id } => {
                let Some((plain, used)) =
                    header::open_aead_request(&validator.keys[user].cmd_key, &auth_id, rest)?
                else {
                    return Ok(None);
                };
                let (header, _) = RequestHeader::decode(&plain)?
                    .ok_or(HandshakeError::HeaderLength(plain.len() as u16))?;
                validator.check_request(user, &header, now)?;
                Ok(Some(Accepted {
                    user,
                    header,
                    mode: HeaderMode::Aead,
                    consumed: AUTH_ID_LEN + used,
                }))
            }
            DecoderState::Legacy {
                user,
                timestamp,
                auth,
            } => {
                let decoded =
                    header::open_legacy_request(&validator.keys[user].cmd_key, timestamp, rest);
                let (header, used) = match decoded {
                    Ok(Some(found)) => found,
                    Ok(None) => return Ok(None),
                    Err(error) => {
                        if matches!(error, HandshakeError::BadChecksum { .. }) {
                            lock(&validator.legacy).taint(&auth);
                        }
                        return Err(error);
                    }
                };
                if let Err(error) = validator.check_request(user, &header, now) {
                    if error == HandshakeError::DuplicateSession {
                        lock(&validator.legacy).taint(&auth);
                    }
                    return Err(error);
                }
                Ok(Some(Accepted {
                    user,
                    header,
                    mode: HeaderMode::Legacy,
                    consumed: AUTH_ID_LEN + used,
                }))
            }
        }
    }
}

fn match_user(
    validator: &Validator,
    auth: &[u8; 16],
    now: i64,
) -> Result<DecoderState, HandshakeError> {
    let mut stale = None;
    for (user, keys) in validator.keys.iter().enumerate() {
        match header::check_auth_id(&keys.auth_id, auth, now) {
            AuthIdCheck::Fresh => {
                if !lock(&validator.auth_ids).check_and_insert(auth, now) {
                    return Err(HandshakeError::ReplayedAuthId);
                }
                return Ok(DecoderState::Aead {
                    user,
                    auth_id: *auth,
                });
            }
            AuthIdCheck::Stale(away) => stale = Some(away),
            AuthIdCheck::NotMine => {}
        }
    }
    match lock(&validator.legacy).lookup(auth, now) {
        LegacyLookup::Found { user, timestamp } => Ok(DecoderState::Legacy {
            user,
            timestamp,
            auth: *auth,
        }),
        LegacyLookup::Tainted => Err(HandshakeError::TaintedAuth),
        LegacyLookup::Missing => Err(match stale {
            Some(away) => HandshakeError::StaleTimestamp(away),
            None => HandshakeError::UnknownUser,
        }),
    }
}

/// AuthIDs seen recently: two generations swapped every 120 s, so each is
/// remembered for 120–240 s (longer than the ±120 s it stays valid).
#[derive(Default)]
struct AuthIdFilter {
    current: HashSet<[u8; 16]>,
    previous: HashSet<[u8; 16]>,
    rotated_at: Option<i64>,
}

impl AuthIdFilter {
    /// True when `auth_id` is new (it is remembered from now on).
    fn check_and_insert(&mut self, auth_id: &[u8; 16], now: i64) -> bool {
        let rotated_at = *self.rotated_at.get_or_insert(now);
        let age = now.saturating_sub(rotated_at);
        if age >= 2 * AUTH_ID_MEMORY_SECS {
            self.previous.clear();
            self.current.clear();
            self.rotated_at = Some(now);
        } else if age >= AUTH_ID_MEMORY_SECS {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at = Some(now);
        }
        if self.previous.contains(auth_id) {
            return false;
        }
        self.current.insert(*auth_id)
    }
}

struct LegacyEntry {
    user: usize,
    timestamp: u64,
    tainted: bool,
}

enum LegacyLookup {
    Found { user: usize, timestamp: u64 },
    Tainted,
    Missing,
}

/// HMAC-MD5 auth hashes of every legacy-enabled ID for every second of the
/// window around now.
struct LegacyTable {
    ids: Vec<(usize, Vec<UserId>)>,
    entries: HashMap<[u8; 16], LegacyEntry>,
    /// The hashes added for each second, oldest first, to drop them later.
    seconds: VecDeque<(i64, Vec<[u8; 16]>)>,
}

impl LegacyTable {
    fn new(ids: Vec<(usize, Vec<UserId>)>) -> LegacyTable {
        LegacyTable {
            ids,
            entries: HashMap::new(),
            seconds: VecDeque::new(),
        }
    }

    /// Makes the table cover `now - 120 ..= now + 120`.
    fn refresh(&mut self, now: i64) {
        if self.ids.is_empty() {
            return;
        }
        let low = now - LEGACY_WINDOW_SECS;
        let high = now + LEGACY_WINDOW_SECS;
        while let Some((second, _)) = self.seconds.front() {
            if *second >= low {
                break;
            }
            if let Some((_, hashes)) = self.seconds.pop_front() {
                for hash in hashes {
                    self.entries.remove(&hash);
                }
            }
        }
        let mut next = self.seconds.back().map_or(low, |(second, _)| second + 1);
        if next < low {
            next = low;
        }
        while next <= high {
            let timestamp = next as u64;
            let mut hashes = Vec::new();
            for (user, ids) in &self.ids {
                for id in ids {
                    let hash = header::legacy_auth(id, timestamp);
                    self.entries.insert(
                        hash,
                        LegacyEntry {
                            user: *user,
                            timestamp,
                            tainted: false,
                        },
                    );
                    hashes.push(hash);
                }
            }
            self.seconds.push_back((next, hashes));
            next += 1;
        }
    }

    fn lookup(&mut self, auth: &[u8; 16], now: i64) -> LegacyLookup {
        // Legacy timestamps are unsigned; a clock beyond 2^40 s is broken.
        if self.ids.is_empty() || !(LEGACY_WINDOW_SECS..1 << 40).contains(&now) {
            return LegacyLookup::Missing;
        }
        self.refresh(now);
        match self.entries.get(auth) {
            Some(entry) if entry.tainted => LegacyLookup::Tainted,
            Some(entry) => LegacyLookup::Found {
                user: entry.user,
                timestamp: entry.timestamp,
            },
            None => LegacyLookup::Missing,
        }
    }

    fn taint(&mut self, auth: &[u8; 16]) {
        if let Some(entry) = self.entries.get_mut(auth) {
            entry.tainted = true;
        }
    }
}

type SessionKey = (usize, [u8; 16], [u8; 16]);

/// (user, body key, body IV) triples seen in the last 3 minutes.
#[derive(Default)]
struct SessionHistory {
    entries: HashMap<SessionKey, i64>,
    swept_at: i64,
}

impl SessionHistory {
    fn check_and_insert(&mut self, key: SessionKey, now: i64) -> bool {
        if now.saturating_sub(self.swept_at) >= SESSION_SWEEP_SECS {
            self.entries.retain(|_, expiry| *expiry > now);
            self.swept_at = now;
        }
        if let Some(expiry) = self.entries.get(&key) {
            if *expiry > now {
                return false;
            }
        }
        self.entries
            .insert(key, now.saturating_add(SESSION_HISTORY_SECS));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{BodySecurity, Command, Options};
    use rayback_core::{Address, Destination};

    const NOW: i64 = 1_700_000_000;

    fn user(text: &str, alter_id: u16) -> ServerUser {
        ServerUser {
            id: UserId::parse(text).unwrap(),
            alter_id,
            level: 1,
            email: format!("{alter_id}@test"),
        }
    }

    fn validator() -> Validator {
        Validator::new(vec![
            user("27848739-7e62-4138-9fd3-098a63964b6b", 0),
            user("b831381d-6324-4d53-ad4f-8cda48b30811", 2),
        ])
    }

    fn plain_header(seed: u8) -> Vec<u8> {
        let header = RequestHeader {
            version: 1,
            body_iv: [seed; 16],
            body_key: [seed.wrapping_add(1); 16],
            response_auth: 7,
            options: Options(0x0d),
            padding_len: 3,
            security: BodySecurity::Aes128Gcm,
            command: Command::Tcp,
            destination: Destination::tcp(Address::Domain("example.com".into()), 80),
        };
        let mut plain = Vec::new();
        header.encode(&[1; 15], &mut plain).unwrap();
        plain
    }

    fn aead_request(id: &UserId, time: i64, seed: u8) -> Vec<u8> {
        let cmd_key = id.cmd_key();
        let cipher = AuthIdCipher::new(&header::auth_id_key(&cmd_key));
        let auth_id = header::create_auth_id(&cipher, time, [seed, 2, 3, 4]);
        let mut out = Vec::new();
        header::seal_aead_request(
            &cmd_key,
            &auth_id,
            &[seed; 8],
            &plain_header(seed),
            &mut out,
        );
        out
    }

    fn legacy_request(id: &UserId, auth_with: &UserId, time: u64, seed: u8) -> Vec<u8> {
        let mut out = Vec::new();
        header::seal_legacy_request(
            auth_with,
            &id.cmd_key(),
            time,
            &plain_header(seed),
            &mut out,
        );
        out
    }

    fn decode_all(
        validator: &Validator,
        data: &[u8],
        now: i64,
    ) -> Result<Accepted, HandshakeError> {
        let mut decoder = RequestDecoder::new();
        // Byte at a time, as the worst network would deliver it: accepted
        // exactly when the header is complete.
        for end in 0..=data.len() {
            if let Some(accepted) = decoder.decode(validator, &data[..end], now)? {
                assert_eq!(accepted.consumed, end);
                return Ok(accepted);
            }
        }
        panic!("request never completed");
    }

    #[test]
    fn accepts_aead_and_refuses_its_replay() {
        let validator = validator();
        let id = validator.users()[0].id;
        let mut request = aead_request(&id, NOW, 1);
        request.extend_from_slice(b"body");
        let accepted = decode_all(&validator, &request, NOW + 5).unwrap();
        assert_eq!(accepted.user, 0);
        assert_eq!(accepted.mode, HeaderMode::Aead);
        assert_eq!(accepted.consumed, request.len() - 4);
        assert_eq!(
            decode_all(&validator, &request, NOW + 6),
            Err(HandshakeError::ReplayedAuthId)
        );
        // Still remembered after one rotation, forgotten after the window.
        let fresh = aead_request(&id, NOW + 100, 2);
        decode_all(&validator, &fresh, NOW + 130).unwrap();
        assert_eq!(
            decode_all(&validator, &fresh, NOW + 140),
            Err(HandshakeError::ReplayedAuthId)
        );
    }

    #[test]
    fn refuses_stale_and_unknown() {
        let validator = validator();
        let id = validator.users()[0].id;
        assert_eq!(
            decode_all(&validator, &aead_request(&id, NOW - 121, 3), NOW),
            Err(HandshakeError::StaleTimestamp(-121))
        );
        let stranger = UserId::parse("00000000-0000-0000-0000-000000000001").unwrap();
        assert_eq!(
            decode_all(&validator, &aead_request(&stranger, NOW, 4), NOW),
            Err(HandshakeError::UnknownUser)
        );
        assert_eq!(
            decode_all(&validator, &[0u8; 100], NOW),
            Err(HandshakeError::UnknownUser)
        );
    }

    #[test]
    fn refuses_flipped_bits() {
        let id = validator().users()[0].id;
        let request = aead_request(&id, NOW, 5);
        for bit in 16 * 8..request.len() * 8 {
            // A fresh validator each time: the AuthID itself is intact and
            // would otherwise be refused as a replay.
            let validator = validator();
            let mut flipped = request.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut decoder = RequestDecoder::new();
            let result = decoder.decode(&validator, &flipped, NOW);
            assert!(
                matches!(result, Err(HandshakeError::HeaderUnauthentic)),
                "bit {bit}: {result:?}"
            );
        }
    }

    #[test]
    fn legacy_only_for_users_with_alter_ids() {
        let validator = validator();
        let aead_only = validator.users()[0].id;
        let legacy_user = validator.users()[1].id;
        let now = NOW as u64;
        let alter = legacy_user.alter_ids(2)[1];
        let accepted = decode_all(
            &validator,
            &legacy_request(&legacy_user, &alter, now - 30, 6),
            NOW,
        )
        .unwrap();
        assert_eq!((accepted.user, accepted.mode), (1, HeaderMode::Legacy));
        let main = decode_all(
            &validator,
            &legacy_request(&legacy_user, &legacy_user, now + 29, 7),
            NOW,
        )
        .unwrap();
        assert_eq!(main.user, 1);
        // A legacy header for an alterId-0 user is not accepted.
        assert_eq!(
            decode_all(
                &validator,
                &legacy_request(&aead_only, &aead_only, now, 8),
                NOW
            ),
            Err(HandshakeError::UnknownUser)
        );
        // Out of the window.
        assert_eq!(
            decode_all(
                &validator,
                &legacy_request(&legacy_user, &alter, now - 200, 9),
                NOW
            ),
            Err(HandshakeError::UnknownUser)
        );
        // The same keys again: a duplicate session, and the auth is burnt.
        let replay = legacy_request(&legacy_user, &alter, now - 30, 6);
        assert_eq!(
            decode_all(&validator, &replay, NOW),
            Err(HandshakeError::DuplicateSession)
        );
        assert_eq!(
            decode_all(
                &validator,
                &legacy_request(&legacy_user, &alter, now - 30, 10),
                NOW
            ),
            Err(HandshakeError::TaintedAuth)
        );
    }

    #[test]
    fn can_refuse_security_none() {
        let id = validator().users()[0].id;
        let mut plain = Vec::new();
        let mut header = RequestHeader::decode(&plain_header(11)).unwrap().unwrap().0;
        header.security = BodySecurity::None;
        header.encode(&[0; 15], &mut plain).unwrap();
        let seal = |plain: &[u8]| {
            let cmd_key = id.cmd_key();
            let cipher = AuthIdCipher::new(&header::auth_id_key(&cmd_key));
            let auth_id = header::create_auth_id(&cipher, NOW, rand::random());
            let mut out = Vec::new();
            header::seal_aead_request(&cmd_key, &auth_id, &[0; 8], plain, &mut out);
            out
        };
        let strict = validator().disable_insecure_encryption(true);
        assert_eq!(
            decode_all(&strict, &seal(&plain), NOW),
            Err(HandshakeError::UnsupportedSecurity(5))
        );
        let lenient = validator();
        assert!(decode_all(&lenient, &seal(&plain), NOW).is_ok());
    }

    #[test]
    fn session_history_expires() {
        let mut history = SessionHistory::default();
        let key = (0, [1; 16], [2; 16]);
        assert!(history.check_and_insert(key, NOW));
        assert!(!history.check_and_insert(key, NOW + 179));
        assert!(history.check_and_insert(key, NOW + 181));
    }
}
