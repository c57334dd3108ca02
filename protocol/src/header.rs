//! Message headers: ids, types, sessions and ISO 8601 timestamps.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The Jupyter messaging protocol version zpar speaks.
pub const PROTOCOL_VERSION: &str = "5.3";

/// A Jupyter message header.
///
/// ```
/// let h = zpar_protocol::Header::new("execute_request", "session-1", "alice");
/// assert_eq!(h.version, "5.3");
/// assert!(h.date.ends_with('Z'));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// A fresh UUID v4 for every message.
    pub msg_id: String,
    /// The message type, e.g. `execute_request`.
    pub msg_type: String,
    /// The sending session's id.
    pub session: String,
    /// The sending user.
    pub username: String,
    /// When the message was made, ISO 8601 in UTC.
    pub date: String,
    /// The protocol version.
    pub version: String,
}

impl Header {
    /// A new header with a fresh msg id and the current time.
    pub fn new(msg_type: &str, session: &str, username: &str) -> Header {
        Header {
            msg_id: new_id(),
            msg_type: msg_type.to_string(),
            session: session.to_string(),
            username: username.to_string(),
            date: iso8601_now(),
            version: PROTOCOL_VERSION.to_string(),
        }
    }
}

/// A fresh UUID v4 as a hyphenated lowercase string.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The current time as ISO 8601 with microseconds in UTC, e.g.
/// `2026-11-26T08:48:37.123456Z`.
pub fn iso8601_now() -> String {
    iso8601(SystemTime::now())
}

/// Formats a time as ISO 8601 with microseconds in UTC.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Parses the ISO 8601 forms zpar and Jupyter write (`Z` or `+00:00`,
/// optional fraction) into seconds since the Unix epoch.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600
                + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + se - offset) as f64 + frac)
}

// Howard Hinnant's civil calendar algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_683_600, 123_456_000);
        assert_eq!(iso8601(t), "2026-11-26T09:00:00.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&iso8601(leap)[..10], "2000-02-29");
    }

    #[test]
    fn parses_what_it_writes_and_jupyter_offsets() {
        let t = UNIX_EPOCH + Duration::new(1_795_683_600, 250_000_000);
        assert_eq!(parse_iso8601(&iso8601(t)), Some(1_795_683_600.25));
        assert_eq!(
            parse_iso8601("2026-11-26T10:00:00+01:00"),
            Some(1_795_683_600.0)
        );
        assert_eq!(parse_iso8601("not a date"), None);
        assert_eq!(parse_iso8601("2026-11-26T10:00:00 junk"), None);
    }

    #[test]
    fn headers_have_fresh_ids() {
        let a = Header::new("x", "s", "u");
        let b = Header::new("x", "s", "u");
        assert_ne!(a.msg_id, b.msg_id);
        assert_eq!(a.msg_id.len(), 36);
    }
}
