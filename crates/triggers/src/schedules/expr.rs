//! Schedule expressions (`at(...)`, `rate(...)`, `cron(...)`) as
//! EventBridge Scheduler reads them, and the due times they give in a time
//! zone between a start and an end date. Pure: no clock, no I/O.
//!
//! Cron is AWS's six-field dialect (`min hour dom month dow year`, day of
//! week 1–7 = SUN–SAT as in Quartz, `L`, `W`, `#`, `0/15`), evaluated by
//! `croner` configured for it; the rules croner does not know (exactly one
//! `?` of day-of-month and day-of-week, years 1970–2199) are checked here.
//! Nothing can be faster than a minute: there is no seconds field.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

const MINUTE_MS: i64 = 60_000;
/// Past this many missed due times the count is reported as "at least".
const COUNT_MAX: u64 = 100_000;

#[derive(Debug, Clone)]
pub enum Expression {
    /// A wall-clock time in the schedule's time zone.
    At(NaiveDateTime),
    /// A period in milliseconds.
    Rate(i64),
    Cron(Box<Cron>),
}

/// AWS's message for an expression it cannot read.
pub fn invalid(expr: &str) -> String {
    format!("Invalid Schedule Expression {expr}.")
}

impl Expression {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let inner = |prefix: &str| expr.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        let parsed = if let Some(at) = inner("at(") {
            // Exactly `yyyy-mm-ddThh:mm:ss`: chrono alone also takes unpadded
            // fields, a sign, spaces and a leap second.
            let shape: Vec<u8> = at.bytes().map(|b| if b.is_ascii_digit() { b'9' } else { b }).collect();
            let shaped = shape == b"9999-99-99T99:99:99";
            let t = NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S").ok();
            // chrono reads second 60 as a leap second: 59 with a second's worth of nanoseconds.
            t.filter(|t| shaped && chrono::Timelike::nanosecond(t) == 0).map(Self::At)
        } else if let Some(rate) = inner("rate(") {
            parse_rate(rate).map(Self::Rate)
        } else if let Some(cron) = inner("cron(") {
            parse_cron(cron).map(|c| Self::Cron(Box::new(c)))
        } else {
            None
        };
        parsed.ok_or_else(|| invalid(expr))
    }

    pub fn is_one_time(&self) -> bool {
        matches!(self, Self::At(_))
    }
}

fn parse_rate(s: &str) -> Option<i64> {
    let (value, unit) = s.split_once(' ')?;
    let value: i64 = value.parse().ok().filter(|v| *v > 0 && !value.starts_with('+'))?;
    let unit_ms = match unit {
        "minute" | "minutes" => MINUTE_MS,
        "hour" | "hours" => 60 * MINUTE_MS,
        "day" | "days" => 24 * 60 * MINUTE_MS,
        _ => return None,
    };
    value.checked_mul(unit_ms)
}

fn parse_cron(s: &str) -> Option<Cron> {
    let fields: Vec<&str> = s.split(' ').collect();
    let [_min, _hour, dom, _month, dow, year] = fields[..] else { return None };
    if (dom == "?") == (dow == "?") {
        return None;
    }
    let years_ok = year.split(',').all(|part| {
        let base = part.split_once('/').map_or(part, |(base, _step)| base);
        base == "*" || base.split('-').all(|y| y.parse::<u32>().is_ok_and(|y| (1970..=2199).contains(&y)))
    });
    if !years_ok {
        return None;
    }
    // A bare `L` in day-of-week is the week's last day, Saturday (Quartz's
    // 7); croner reads it as a "last" flag without a day, which never matches.
    let s = if dow == "L" { [_min, _hour, dom, _month, "7", year].join(" ") } else { s.to_string() };
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .alternative_weekdays(true)
        .sloppy_ranges(true)
        .dom_and_dow(false)
        .build()
        .parse(&format!("0 {s}"))
        .ok()
}

/// An expression with the settings that place it in time.
#[derive(Debug, Clone)]
pub struct Timing {
    pub expression: Expression,
    pub tz: Tz,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Where a rate counts from when there is no start date: when the
    /// schedule was created or last replaced.
    pub anchor_ms: i64,
}

impl Timing {
    fn rate_origin(&self) -> i64 {
        self.start_ms.unwrap_or(self.anchor_ms)
    }

    fn in_range(&self, t: i64) -> Option<i64> {
        (self.end_ms.is_none_or(|end| t <= end)).then_some(t)
    }

    /// The first due time at or after `from_ms`. A one-time schedule has
    /// its one time, which may be past (it is then due at once), and
    /// ignores the start and end dates, as AWS does.
    pub fn first_due(&self, from_ms: i64) -> Option<i64> {
        match &self.expression {
            Expression::At(at) => local_ms(&self.tz, at),
            _ => self.at_or_after(from_ms.max(self.start_ms.unwrap_or(i64::MIN))),
        }
    }

    /// The due time after `after_ms` (a recurring schedule's next one).
    pub fn next_due(&self, after_ms: i64) -> Option<i64> {
        match &self.expression {
            Expression::At(_) => None,
            _ => self.at_or_after(after_ms.saturating_add(1).max(self.start_ms.unwrap_or(i64::MIN))),
        }
    }

    fn at_or_after(&self, from: i64) -> Option<i64> {
        let t = match &self.expression {
            Expression::At(_) => return None,
            // Checked: a period of up to `i64::MAX` ms parses, and a due
            // time past the clock's range is none (wrapped, it was a time
            // long past, due again and again at once).
            Expression::Rate(period) => {
                let origin = self.rate_origin();
                let periods =
                    i64::try_from((from.saturating_sub(origin).max(0) as u64).div_ceil(*period as u64)).ok()?;
                origin.checked_add(periods.checked_mul(*period)?)?
            }
            Expression::Cron(cron) => self.cron_at_or_after(cron, from)?,
        };
        self.in_range(t)
    }

    /// A cron's next time on the local clock, as AWS keeps it across
    /// daylight saving changes: a time the clock skips is skipped (croner
    /// would run it at the end of the gap), and a time the clock shows
    /// twice runs once, the first time.
    fn cron_at_or_after(&self, cron: &Cron, from: i64) -> Option<i64> {
        // croner counts in whole seconds: a start within a second would
        // find that second's own match again.
        let mut from = (from + 999).div_euclid(1000) * 1000;
        // Each pass skips at most one gap or one repeated hour.
        for _ in 0..8 {
            let start = self.tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_millis(from)?.naive_utc());
            let found = cron.find_next_occurrence(&start, true).ok()?;
            let in_gap = !cron.is_time_matching(&found).unwrap_or(true);
            let repeated = matches!(
                self.tz.from_local_datetime(&found.naive_local()),
                chrono::LocalResult::Ambiguous(first, _) if first != found
            );
            if !in_gap && !repeated {
                return Some(found.timestamp_millis());
            }
            from = found.timestamp_millis() + 1000;
        }
        None
    }

    /// The latest due time at or before `now_ms`, given that `due_ms` (at
    /// or before it) was one, and how many due times came before that one
    /// from `due_ms` on: what a node that was down has missed.
    pub fn latest_due(&self, due_ms: i64, now_ms: i64) -> (i64, Missed) {
        let latest = match &self.expression {
            Expression::At(_) => due_ms,
            Expression::Rate(period) => {
                let origin = self.rate_origin();
                let end = self.end_ms.map_or(now_ms, |e| e.min(now_ms));
                let passed = end.saturating_sub(origin).div_euclid(*period).checked_mul(*period);
                passed.and_then(|p| origin.checked_add(p)).map_or(due_ms, |t| t.max(due_ms))
            }
            Expression::Cron(_) => {
                let mut latest = due_ms;
                let mut count = 0;
                while let Some(n) = self.next_due(latest).filter(|n| *n <= now_ms) {
                    latest = n;
                    count += 1;
                    if count == COUNT_MAX {
                        return (self.cron_before(now_ms).unwrap_or(latest).max(latest), Missed::AtLeast(count));
                    }
                }
                return (latest, Missed::Exactly(count));
            }
        };
        let count = match &self.expression {
            Expression::Rate(period) => ((latest - due_ms) / period) as u64,
            _ => 0,
        };
        (latest, Missed::Exactly(count))
    }

    fn cron_before(&self, now_ms: i64) -> Option<i64> {
        let Expression::Cron(cron) = &self.expression else { return None };
        let now = self.tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_millis(now_ms)?.naive_utc());
        cron.find_previous_occurrence(&now, true).ok().map(|t| t.timestamp_millis())
    }
}

/// How many due times were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    Exactly(u64),
    AtLeast(u64),
}

impl Missed {
    pub fn any(self) -> bool {
        self != Self::Exactly(0)
    }
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exactly(n) => write!(f, "{n}"),
            Self::AtLeast(n) => write!(f, "at least {n}"),
        }
    }
}

/// A wall-clock time in `tz` as epoch milliseconds; in a gap (the hour
/// daylight saving skips) the time after it, in a fold the first.
fn local_ms(tz: &Tz, t: &NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(t) {
        chrono::LocalResult::Single(d) | chrono::LocalResult::Ambiguous(d, _) => Some(d.timestamp_millis()),
        chrono::LocalResult::None => local_ms(tz, &(*t + chrono::Duration::hours(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn timing(expr: &str, tz: &str) -> Timing {
        Timing {
            expression: Expression::parse(expr).unwrap(),
            tz: tz.parse().unwrap(),
            start_ms: None,
            end_ms: None,
            anchor_ms: ms("2026-12-02T00:00:00Z"),
        }
    }

    fn next(expr: &str, tz: &str, from: &str) -> String {
        let t = timing(expr, tz).first_due(ms(from)).unwrap();
        DateTime::from_timestamp_millis(t).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn aws_cron_dialect_with_l_w_and_hash() {
        let from = "2026-12-02T00:00:00Z";
        assert_eq!(next("cron(0 10 * * ? *)", "UTC", from), "2026-12-02T10:00:00Z");
        assert_eq!(next("cron(0/15 * * * ? *)", "UTC", from), "2026-12-02T00:00:00Z");
        assert_eq!(next("cron(0/15 * * * ? *)", "UTC", "2026-12-02T00:00:01Z"), "2026-12-02T00:15:00Z");
        assert_eq!(next("cron(0 18 ? * MON-FRI *)", "UTC", from), "2026-12-02T18:00:00Z");
        assert_eq!(next("cron(0 9 L * ? *)", "UTC", from), "2026-12-31T09:00:00Z");
        assert_eq!(next("cron(0 9 15W * ? *)", "UTC", from), "2026-12-15T09:00:00Z");
        assert_eq!(next("cron(0 9 LW * ? *)", "UTC", from), "2026-12-31T09:00:00Z");
        assert_eq!(next("cron(0 10 ? * 6L *)", "UTC", from), "2026-12-25T10:00:00Z");
        assert_eq!(next("cron(0 10 ? * 3#2 *)", "UTC", from), "2026-12-08T10:00:00Z");
        // 2 is Monday, as in Quartz (Unix would read Tuesday).
        assert_eq!(next("cron(0 10 ? * 2 *)", "UTC", from), "2026-12-07T10:00:00Z");
        assert_eq!(next("cron(0 12 1 1 ? 2027)", "UTC", from), "2027-01-01T12:00:00Z");
        assert_eq!(next("cron(0 12 * * ? 2026-2027)", "UTC", from), "2026-12-02T12:00:00Z");
    }

    #[test]
    fn time_zones_place_cron_and_at_on_the_local_clock() {
        assert_eq!(next("cron(0 9 * * ? *)", "Europe/Berlin", "2026-12-02T00:00:00Z"), "2026-12-02T08:00:00Z");
        assert_eq!(next("cron(0 9 * * ? *)", "Europe/Berlin", "2026-07-02T00:00:00Z"), "2026-07-02T07:00:00Z");
        assert_eq!(next("cron(0 9 * * ? *)", "America/New_York", "2026-12-02T00:00:00Z"), "2026-12-02T14:00:00Z");
        assert_eq!(next("at(2027-03-01T08:30:00)", "Asia/Tokyo", "2026-12-02T00:00:00Z"), "2027-02-28T23:30:00Z");
        // 02:30 does not exist in Berlin on 2027-03-28: the time after the gap.
        assert_eq!(next("at(2027-03-28T02:30:00)", "Europe/Berlin", "2026-12-02T00:00:00Z"), "2027-03-28T01:30:00Z");
    }

    #[test]
    fn cron_skips_the_times_daylight_saving_skips_and_runs_repeated_ones_once() {
        // 02:30 does not exist in New York on 2027-03-14: the next is the 15th's.
        let spring = "2027-03-14T06:00:00Z";
        assert_eq!(next("cron(30 2 * * ? *)", "America/New_York", spring), "2027-03-15T06:30:00Z");
        // On 2027-11-07 01:00–01:59 comes twice: each time runs the first time only.
        let fall = "2027-11-07T05:50:00Z";
        // (05:50Z is 01:50 EDT; 06:00Z is 01:00 again, EST; 07:00Z is 02:00 EST.)
        assert_eq!(next("cron(0 1-3 * * ? *)", "America/New_York", fall), "2027-11-07T07:00:00Z");
        let t = timing("cron(0/15 * * * ? *)", "America/New_York");
        let mut at = ms("2027-11-07T05:00:00Z");
        let mut seen = vec![];
        while at < ms("2027-11-07T07:00:00Z") {
            seen.push(DateTime::from_timestamp_millis(at).unwrap().format("%H:%M").to_string());
            at = t.next_due(at).unwrap();
        }
        // 01:00–01:45 EDT (05:00–05:45Z), then 02:00 EST (07:00Z): the repeated 01:xx EST are not run.
        assert_eq!(seen, ["05:00", "05:15", "05:30", "05:45"]);
        assert_eq!(DateTime::from_timestamp_millis(at).unwrap().format("%H:%M").to_string(), "07:00");
    }

    #[test]
    fn a_bare_l_in_day_of_week_is_saturday() {
        assert_eq!(next("cron(33 18 ? * L *)", "UTC", "2026-12-02T00:00:00Z"), "2026-12-05T18:33:00Z");
    }

    #[test]
    fn a_rate_past_the_clocks_range_comes_due_once_not_over_and_over() {
        // 106,751,991,167 days is `i64::MAX` ms, less a little: the next due
        // time wrapped to one long past, due at once, again and again.
        let t = timing("rate(106751991167 days)", "UTC");
        let now = ms("2026-12-02T00:00:00Z");
        let first = t.first_due(now).unwrap();
        assert_eq!(t.next_due(first), None);
        assert_eq!(t.latest_due(first, now + 60_000).0, first);
    }

    #[test]
    fn rates_count_from_the_start_date_or_the_anchor_and_stop_at_the_end_date() {
        let mut t = timing("rate(5 minutes)", "UTC");
        assert_eq!(t.first_due(ms("2026-12-02T00:00:00Z")), Some(ms("2026-12-02T00:00:00Z")));
        assert_eq!(t.first_due(ms("2026-12-02T00:00:01Z")), Some(ms("2026-12-02T00:05:00Z")));
        assert_eq!(t.next_due(ms("2026-12-02T00:05:00Z")), Some(ms("2026-12-02T00:10:00Z")));
        t.start_ms = Some(ms("2026-12-03T00:00:30Z"));
        assert_eq!(t.first_due(ms("2026-12-02T00:00:00Z")), Some(ms("2026-12-03T00:00:30Z")));
        t.end_ms = Some(ms("2026-12-03T00:06:00Z"));
        assert_eq!(t.next_due(ms("2026-12-03T00:00:30Z")), Some(ms("2026-12-03T00:05:30Z")));
        assert_eq!(t.next_due(ms("2026-12-03T00:05:30Z")), None);

        let mut c = timing("cron(0 10 * * ? *)", "UTC");
        c.start_ms = Some(ms("2026-12-05T11:00:00Z"));
        c.end_ms = Some(ms("2026-12-07T09:00:00Z"));
        assert_eq!(c.first_due(ms("2026-12-02T00:00:00Z")), Some(ms("2026-12-06T10:00:00Z")));
        assert_eq!(c.next_due(ms("2026-12-06T10:00:00Z")), None);
        // A one-time schedule ignores both dates.
        let mut a = timing("at(2026-12-01T00:00:00)", "UTC");
        a.start_ms = c.start_ms;
        a.end_ms = c.end_ms;
        assert_eq!(a.first_due(ms("2026-12-02T00:00:00Z")), Some(ms("2026-12-01T00:00:00Z")));
        assert_eq!(a.next_due(ms("2026-12-01T00:00:00Z")), None);
    }

    #[test]
    fn a_node_that_was_down_fires_the_latest_due_time_and_counts_the_rest() {
        let r = timing("rate(1 minute)", "UTC");
        let due = ms("2026-12-02T00:01:00Z");
        assert_eq!(r.latest_due(due, due + 500), (due, Missed::Exactly(0)));
        assert_eq!(r.latest_due(due, ms("2026-12-02T00:10:30Z")), (ms("2026-12-02T00:10:00Z"), Missed::Exactly(9)));
        let c = timing("cron(0 * * * ? *)", "UTC");
        let due = ms("2026-12-02T01:00:00Z");
        assert_eq!(c.latest_due(due, ms("2026-12-02T05:59:59Z")), (ms("2026-12-02T05:00:00Z"), Missed::Exactly(4)));
        let a = timing("at(2026-12-01T00:00:00)", "UTC");
        assert_eq!(a.latest_due(5, 10_000), (5, Missed::Exactly(0)));
    }

    #[test]
    fn bad_expressions_are_refused_with_aws_message() {
        for bad in [
            "cron(0 10 * * * *)",
            "cron(0 10 ? * ? *)",
            "cron(0 10 * * ?)",
            "cron(* * * * ? * *)",
            "cron(0 10 * * ? 1969)",
            "cron(0 10 * * ? 2200)",
            "cron(61 10 * * ? *)",
            "cron(0 10 * * ? *",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(5 seconds)",
            "rate(1.5 hours)",
            "rate(minutes)",
            "at(2026-13-01T00:00:00)",
            "at(2027-1-1T00:00:00)",
            "at( 2027-01-01T00:00:00)",
            "at(2027-01-01T00:00:60)",
            "at(+2027-01-01T00:00:00)",
            "at(2026-12-01 00:00:00)",
            "at(2026-12-01T00:00)",
            "every(5 minutes)",
        ] {
            assert_eq!(Expression::parse(bad).unwrap_err(), invalid(bad), "{bad}");
        }
        for good in [
            "rate(1 minute)",
            "rate(2 hours)",
            "rate(1 day)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "at(2030-01-01T00:00:00)",
        ] {
            assert!(Expression::parse(good).is_ok(), "{good}");
        }
    }
}
