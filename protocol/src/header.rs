//! Message headers: ids, types, sessions and ISO 8601 timestamps.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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
    /// The type its `msg_type` names; None for a type zpar does not know.
    ///
    /// ```
    /// use zpar_protocol::{Header, MessageType};
    /// let h = Header::new("stream_chunk", "session", "user");
    /// assert_eq!(h.message_type(), Some(MessageType::StreamChunk));
    /// ```
    pub fn message_type(&self) -> Option<crate::content::MessageType> {
        crate::content::MessageType::parse(&self.msg_type)
    }

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

/// What [`iso8601`] writes: `2026-11-26T08:48:37.123456Z`.
const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats a time as ISO 8601 with microseconds in UTC. Times before the
/// Unix epoch are written as the epoch, as are times past the year 9999.
pub fn iso8601(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let utc = i64::try_from(since.as_secs())
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .filter(|d| d.year() <= 9999)
        .and_then(|d| d.replace_microsecond(since.subsec_micros()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    utc.format(FORMAT)
        .expect("a UTC date-time has every component the ISO 8601 format names")
}

/// Parses the ISO 8601 forms zpar and Jupyter write (`T` or a space between
/// date and time, optional fraction of any length, then `Z`, `z`, nothing
/// for UTC, or `+HH:MM`/`-HH:MM`) into seconds since the Unix epoch. `None`
/// for anything else, an impossible date (month 13, February 30) included.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    // `get` rather than indexing: a peer's date may hold multi-byte text.
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i32>().ok();
    let small = |r: std::ops::Range<usize>| u8::try_from(num(r)?).ok();
    let month = Month::try_from(small(5..7)?).ok()?;
    let date = Date::from_calendar_date(num(0..4)?, month, small(8..10)?).ok()?;
    let time = Time::from_hms(small(11..13)?, small(14..16)?, small(17..19)?).ok()?;
    let mut rest = s.get(19..)?;
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "" | "Z" | "z" => UtcOffset::UTC,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let part = |r: std::ops::Range<usize>| tz.get(r)?.parse::<i8>().ok();
            UtcOffset::from_hms(sign * part(1..3)?, sign * part(4..6)?, 0).ok()?
        }
        _ => return None,
    };
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    Some(at.unix_timestamp() as f64 + frac)
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
        assert_eq!(
            parse_iso8601("2026-11-26 09:00:00.5z"),
            Some(1_795_683_600.5)
        );
        assert_eq!(
            parse_iso8601("2026-11-26T04:30:00-04:30"),
            Some(1_795_683_600.0)
        );
        assert_eq!(parse_iso8601("2026-11-26T09:00:00"), Some(1_795_683_600.0));
        assert_eq!(parse_iso8601("2026-02-30T09:00:00Z"), None);
        assert_eq!(parse_iso8601("2026-11-26T09:00:00+0100"), None);
    }

    #[test]
    fn out_of_range_times_write_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(iso8601(before), "1970-01-01T00:00:00.000000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(iso8601(far), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn headers_have_fresh_ids() {
        let a = Header::new("x", "s", "u");
        let b = Header::new("x", "s", "u");
        assert_ne!(a.msg_id, b.msg_id);
        assert_eq!(a.msg_id.len(), 36);
    }
}
