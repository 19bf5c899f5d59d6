//! `--since`, one grammar for every command that takes it (`nimbus logs`,
//! `nimbus usage`): a duration back from now, a date or a time.

use chrono::{DateTime, NaiveDate, Utc};

/// The forms, as an error names them.
const FORMS: &str = "a duration back from now (`90s`, `30m`, `12h`, `7d`; a bare number is seconds), \
                         a date (`2026-12-01`, midnight UTC) or an RFC 3339 time";

/// Parses `--since` as of now: a clap value parser.
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    at(text, Utc::now())
}

/// `text` as a time, durations counted back from `now`.
fn at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    if !number.is_empty() {
        let seconds = match unit {
            "" | "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3_600),
            "d" => Some(86_400),
            _ => None,
        };
        if let Some(per) = seconds {
            return number
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(per))
                .and_then(chrono::Duration::try_seconds)
                .and_then(|back| now.checked_sub_signed(back))
                .ok_or_else(|| format!("{text:?} is too far back"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!("{text:?} is not {FORMS}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_dates_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z").unwrap().with_timezone(&Utc);
        let t = |s: &str| at(s, now).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        assert_eq!(t("90").as_deref(), Ok("2026-12-05T11:58:30Z"));
        assert_eq!(t("90s").as_deref(), Ok("2026-12-05T11:58:30Z"));
        assert_eq!(t("30m").as_deref(), Ok("2026-12-05T11:30:00Z"));
        assert_eq!(t("12h").as_deref(), Ok("2026-12-05T00:00:00Z"));
        assert_eq!(t("7d").as_deref(), Ok("2026-11-28T12:00:00Z"));
        assert_eq!(t("2026-12-01").as_deref(), Ok("2026-12-01T00:00:00Z"));
        assert_eq!(t("2026-12-01T10:00:00+02:00").as_deref(), Ok("2026-12-01T08:00:00Z"));
        for bad in ["", "7x", "d", "-5", "7 d", "yesterday", "2026-13-01", "99999999999999999999d"] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
    }
}
