//! The access log: one line per accepted session, in V2Ray's shape.
//!
//! ```text
//! 2026/11/24 22:04:43 127.0.0.1:53496 accepted tcp:127.0.0.1:18999 [portal]
//! ```
//!
//! Times are UTC. Writing is a short locked append of one line; with no
//! access log configured (V2Ray's default when `log` is absent) nothing is
//! formatted at all.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayback_config::LogTarget;
use rayback_core::Session;

/// Where access lines go.
pub struct AccessLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl AccessLog {
    /// Opens the configured target (a file is appended to).
    pub fn open(target: &LogTarget) -> io::Result<AccessLog> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            LogTarget::None => None,
            LogTarget::Console => Some(Box::new(io::stdout())),
            LogTarget::File(path) => Some(Box::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        Ok(AccessLog {
            sink: sink.map(Mutex::new),
        })
    }

    pub fn disabled() -> AccessLog {
        AccessLog { sink: None }
    }

    /// Logs that `session` was accepted and sent to `outbound_tag`.
    pub fn accepted(&self, session: &Session, outbound_tag: &str) {
        let Some(sink) = &self.sink else {
            return;
        };
        let source = session
            .source
            .map(|source| source.to_string())
            .unwrap_or_default();
        let line = format!(
            "{} {} accepted {} [{}]\n",
            timestamp(SystemTime::now()),
            source,
            session.destination,
            outbound_tag
        );
        if let Ok(mut sink) = sink.lock() {
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.flush();
        }
    }
}

/// `YYYY/MM/DD hh:mm:ss` in UTC.
fn timestamp(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_v2ray() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_557_883);
        assert_eq!(timestamp(at), "2026/11/24 22:04:43");
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000/02/29 00:00:00");
    }
}
