//! Usage and cost: requests and GB-seconds per function and UTC day from
//! the invocation records (so they add up to the REPORT lines' billed
//! durations), priced with a configurable table of AWS's list prices.
//!
//! GB-seconds are billed milliseconds (already rounded up to 1 ms, as the
//! REPORT line says) times memory: summed as integer MB-milliseconds and
//! divided once, so a report's total equals the sum of its rows. The free
//! tier (1 million requests and 400,000 GB-seconds a month, for the whole
//! node as for an AWS account) is taken off per calendar month, from x86_64
//! first, as used: a window that begins within a month gets what the
//! month's earlier use left of it.
//!
//! Container tasks are billed as Fargate bills them: vCPU-seconds and
//! GB-seconds from each task's metering row (per second, a minute at
//! least), per task family and UTC day of the task's stop, at the
//! `fargate` prices; Fargate has no free tier.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike};
use nimbus_store::{TaskUsage, UsageRow};
use serde::{Deserialize, Serialize};

/// Prices in USD (AWS Lambda's list prices, US East, first tier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    #[serde(rename = "x86_64")]
    pub x86_64: ArchPrices,
    pub arm64: ArchPrices,
    pub free_tier: FreeTier,
    /// Container tasks (absent from an older price file: AWS's).
    #[serde(default)]
    pub fargate: FargatePrices,
}

/// Fargate's Linux/x86_64 list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FargatePrices {
    pub per_vcpu_hour: f64,
    pub per_gb_hour: f64,
}

impl Default for FargatePrices {
    fn default() -> Self {
        Self { per_vcpu_hour: 0.040_48, per_gb_hour: 0.004_445 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchPrices {
    pub per_million_requests: f64,
    pub per_gb_second: f64,
}

/// What each calendar month gives free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreeTier {
    pub requests: u64,
    pub gb_seconds: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            x86_64: ArchPrices { per_million_requests: 0.20, per_gb_second: 0.000_016_666_7 },
            arm64: ArchPrices { per_million_requests: 0.20, per_gb_second: 0.000_013_333_4 },
            free_tier: FreeTier { requests: 1_000_000, gb_seconds: 400_000.0 },
            fargate: FargatePrices::default(),
        }
    }
}

impl Prices {
    fn of(&self, arch: &str) -> &ArchPrices {
        if arch == "arm64" {
            &self.arm64
        } else {
            &self.x86_64
        }
    }
}

#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// One function, or all.
    pub function: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Whether the monthly free tier is taken off the cost.
    pub free_tier: bool,
}

/// One function's use on one UTC day with one architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDay {
    pub function: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub architecture: String,
    pub requests: u64,
    /// Sum of billed milliseconds (the REPORT lines' "Billed Duration").
    pub billed_ms: u64,
    /// Sum of billed milliseconds times memory in MB: exact.
    pub mb_ms: u64,
    pub gb_seconds: f64,
    /// At list price, before the free tier.
    pub cost: f64,
}

/// One task family's use on one UTC day (of its tasks' stops).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsageDay {
    pub family: String,
    pub day: String,
    pub tasks: u64,
    pub billed_seconds: i64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub functions: Vec<UsageDay>,
    /// Container tasks (with no function asked for).
    pub tasks: Vec<TaskUsageDay>,
    pub requests: u64,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    /// Before the free tier.
    pub gross_cost: f64,
    /// Taken off by the free tier (0 without it).
    pub free_tier_credit: f64,
    pub cost: f64,
    pub prices: Prices,
}

fn gb_seconds(mb_ms: u64) -> f64 {
    mb_ms as f64 / 1024.0 / 1000.0
}

/// The midnight (UTC) that began the calendar month of `ms`.
pub(crate) fn month_start_ms(ms: i64) -> i64 {
    DateTime::from_timestamp_millis(ms)
        .and_then(|t| t.date_naive().with_day(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(ms, |t| t.and_utc().timestamp_millis())
}

fn day_of(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// Tasks' bills per family and day of stop.
fn task_days(tasks: &[TaskUsage], prices: &FargatePrices) -> Vec<TaskUsageDay> {
    let mut days: BTreeMap<(String, String), TaskUsageDay> = BTreeMap::new();
    for t in tasks {
        let day = day_of(t.stopped_ms);
        let d = days.entry((t.family.clone(), day.clone())).or_insert_with(|| TaskUsageDay {
            family: t.family.clone(),
            day,
            tasks: 0,
            billed_seconds: 0,
            vcpu_seconds: 0.0,
            gb_seconds: 0.0,
            cost: 0.0,
        });
        d.tasks += 1;
        d.billed_seconds += t.billed_seconds;
        d.vcpu_seconds += t.vcpu_seconds;
        d.gb_seconds += t.gb_seconds;
    }
    let mut out: Vec<TaskUsageDay> = days.into_values().collect();
    for d in &mut out {
        d.cost = d.vcpu_seconds / 3600.0 * prices.per_vcpu_hour + d.gb_seconds / 3600.0 * prices.per_gb_hour;
    }
    out
}

/// Prices the store's rows (one per function, day, architecture and memory
/// size) and tasks' bills. `earlier` is every function's use in the window's
/// first month before the window: what it took of that month's free tier.
pub(crate) fn report(
    rows: &[UsageRow],
    earlier: &[UsageRow],
    tasks: &[TaskUsage],
    prices: &Prices,
    free_tier: bool,
) -> UsageReport {
    let mut days: BTreeMap<(String, i64, String), UsageDay> = BTreeMap::new();
    for r in rows {
        let d = days.entry((r.function.clone(), r.day_ms, r.architecture.clone())).or_insert_with(|| UsageDay {
            function: r.function.clone(),
            day: day_of(r.day_ms),
            architecture: r.architecture.clone(),
            requests: 0,
            billed_ms: 0,
            mb_ms: 0,
            gb_seconds: 0.0,
            cost: 0.0,
        });
        d.requests += r.requests;
        d.billed_ms += r.billed_ms;
        d.mb_ms += r.billed_ms * u64::from(r.memory_mb);
    }
    // (month, architecture) -> (requests, MB-ms), for the free tier.
    let mut months: BTreeMap<(i32, u32), BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    let mut functions = Vec::with_capacity(days.len());
    for ((_, day_ms, _), mut d) in days {
        let p = prices.of(&d.architecture);
        d.gb_seconds = gb_seconds(d.mb_ms);
        d.cost = d.requests as f64 / 1e6 * p.per_million_requests + d.gb_seconds * p.per_gb_second;
        if let Some(t) = DateTime::from_timestamp_millis(day_ms) {
            let m = months.entry((t.year(), t.month())).or_default().entry(d.architecture.clone()).or_default();
            m.0 += d.requests;
            m.1 += d.mb_ms;
        }
        functions.push(d);
    }
    let mut taken: BTreeMap<(i32, u32), (u64, u64)> = BTreeMap::new();
    for r in earlier {
        if let Some(t) = DateTime::from_timestamp_millis(r.day_ms) {
            let m = taken.entry((t.year(), t.month())).or_default();
            m.0 += r.requests;
            m.1 += r.billed_ms * u64::from(r.memory_mb);
        }
    }
    let mut credit = 0.0;
    if free_tier {
        for (month, by_arch) in &months {
            let (requests_taken, mb_ms_taken) = taken.get(month).copied().unwrap_or_default();
            let mut requests_left = prices.free_tier.requests.saturating_sub(requests_taken);
            let mut gbs_left = (prices.free_tier.gb_seconds - gb_seconds(mb_ms_taken)).max(0.0);
            // x86_64 before arm64: BTreeMap order is arm64 first, so reverse.
            for (arch, (requests, mb_ms)) in by_arch.iter().rev() {
                let p = prices.of(arch);
                let free_requests = (*requests).min(requests_left);
                requests_left -= free_requests;
                let free_gbs = gb_seconds(*mb_ms).min(gbs_left);
                gbs_left -= free_gbs;
                credit += free_requests as f64 / 1e6 * p.per_million_requests + free_gbs * p.per_gb_second;
            }
        }
    }
    let requests = functions.iter().map(|d| d.requests).sum();
    let billed_ms = functions.iter().map(|d| d.billed_ms).sum();
    let gb = gb_seconds(functions.iter().map(|d| d.mb_ms).sum());
    let tasks = task_days(tasks, &prices.fargate);
    // `+ 0.0`: an empty f64 sum is -0.0, which a report would print as "-0.0000000".
    let gross: f64 = functions.iter().map(|d| d.cost).chain(tasks.iter().map(|t| t.cost)).sum::<f64>() + 0.0;
    let credit = credit + 0.0;
    UsageReport {
        functions,
        tasks,
        requests,
        billed_ms,
        gb_seconds: gb,
        gross_cost: gross,
        free_tier_credit: credit,
        cost: after_credit(gross, credit),
        prices: prices.clone(),
    }
}

/// What is left to pay. The credit and the gross cost sum the same prices
/// in other orders, so a credit that covers everything can fall short by
/// the last bits (4e-22 dollars, which the console showed as "$0."): a
/// difference that small is rounding, and nothing is owed.
fn after_credit(gross: f64, credit: f64) -> f64 {
    let left = gross - credit;
    if left <= gross * 1e-9 {
        0.0
    } else {
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credit_short_of_the_cost_by_rounding_leaves_nothing_to_pay() {
        assert_eq!(after_credit(3.1579430242187506e-06, 3.15794302421875e-06), 0.0);
        assert_eq!(after_credit(2.0, 1.0), 1.0);
        assert_eq!(after_credit(1.0, 2.0), 0.0);
        assert_eq!(after_credit(0.0, 0.0), 0.0);
    }

    // 2026-12-05T12:00:00Z and its month's first midnight.
    const NOON: i64 = 1_796_472_000_000;
    const DECEMBER: i64 = 1_796_083_200_000;

    fn row(day_ms: i64, requests: u64) -> UsageRow {
        UsageRow {
            function: "f".into(),
            day_ms,
            architecture: "x86_64".into(),
            memory_mb: 128,
            requests,
            billed_ms: 10,
        }
    }

    #[test]
    fn a_window_gets_what_its_month_left_of_the_free_tier() {
        // A dollar a request, GB-seconds free: the credit counts requests.
        let prices = Prices {
            x86_64: ArchPrices { per_million_requests: 1e6, per_gb_second: 0.0 },
            free_tier: FreeTier { requests: 3, gb_seconds: 0.0 },
            ..Prices::default()
        };
        let day = NOON - NOON % 86_400_000;
        let window = [row(day, 2)];
        assert_eq!(report(&window, &[], &[], &prices, true).free_tier_credit, 2.0);
        let empty = report(&window, &[], &[], &prices, false);
        assert!(empty.gross_cost.is_sign_positive() && empty.free_tier_credit.is_sign_positive(), "no -0.0");
        assert_eq!(report(&window, &[row(DECEMBER, 2)], &[], &prices, true).free_tier_credit, 1.0);
        assert_eq!(report(&window, &[row(DECEMBER, 5)], &[], &prices, true).free_tier_credit, 0.0);
        // Earlier use of another month leaves this one's whole.
        assert_eq!(report(&window, &[row(DECEMBER - 86_400_000, 5)], &[], &prices, true).free_tier_credit, 2.0);
        assert_eq!(report(&window, &[row(DECEMBER, 5)], &[], &prices, false).free_tier_credit, 0.0);
    }

    #[test]
    fn a_month_begins_at_its_first_midnight() {
        assert_eq!(month_start_ms(NOON), DECEMBER);
        assert_eq!(month_start_ms(DECEMBER), DECEMBER);
        assert_eq!(day_of(DECEMBER), "2026-12-01");
    }
}
