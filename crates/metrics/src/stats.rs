//! Statistic sets: what one metric's samples in one minute (or one period)
//! come to, as CloudWatch keeps them: sample count, sum, minimum, maximum,
//! and a log-scale histogram for percentiles. Owns the statistics' names
//! (`Sum`, `p99`, ...) and their values; knows nothing of metrics or time.
//!
//! The histogram has one bucket per factor of [`GAMMA`] (2 %): a bucket
//! holds the samples in (GAMMA^(i-1), GAMMA^i], so a percentile is off by at
//! most 2 % of its value, whatever the range of durations, in a few hundred
//! buckets at most. Zero and negative samples share one bucket.

use std::collections::BTreeMap;

use crate::MetricsError;

const GAMMA: f64 = 1.02;
/// The bucket of samples <= 0.
const ZERO_BUCKET: i32 = i32::MIN;

/// A statistic CloudWatch can answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    SampleCount,
    Sum,
    Average,
    Minimum,
    Maximum,
    /// `pNN` or `pNN.NN`: the percentile, 0..=100.
    Percentile(f64),
}

impl Stat {
    /// Parses a statistic as GetMetricData's `Stat` names it.
    pub fn parse(s: &str) -> Result<Self, MetricsError> {
        Ok(match s {
            "SampleCount" => Stat::SampleCount,
            "Sum" => Stat::Sum,
            "Average" => Stat::Average,
            "Minimum" => Stat::Minimum,
            "Maximum" => Stat::Maximum,
            _ => match s.strip_prefix('p').and_then(parse_percentile) {
                Some(p) => Stat::Percentile(p),
                None => {
                    return Err(MetricsError::InvalidParameterValue(format!(
                        "The value {s} for parameter Stat is not valid."
                    )))
                }
            },
        })
    }
}

/// `99`, `99.9`, `99.99`: at most two decimals, within 0..=100.
fn parse_percentile(p: &str) -> Option<f64> {
    let (whole, frac) = p.split_once('.').unwrap_or((p, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || frac.len() > 2 || !digits(whole) || !digits(frac) {
        return None;
    }
    if p.ends_with('.') {
        return None;
    }
    let v: f64 = p.parse().ok()?;
    (0.0..=100.0).contains(&v).then_some(v)
}

/// Samples of one metric over some time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatSet {
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
    /// Bucket index -> samples.
    pub histogram: BTreeMap<i32, u64>,
}

impl StatSet {
    /// Adds one sample.
    pub fn add(&mut self, value: f64) {
        if self.sample_count == 0.0 {
            self.minimum = value;
            self.maximum = value;
        } else {
            self.minimum = self.minimum.min(value);
            self.maximum = self.maximum.max(value);
        }
        self.sample_count += 1.0;
        self.sum += value;
        *self.histogram.entry(bucket(value)).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &StatSet) {
        if other.sample_count == 0.0 {
            return;
        }
        if self.sample_count == 0.0 {
            self.minimum = other.minimum;
            self.maximum = other.maximum;
        } else {
            self.minimum = self.minimum.min(other.minimum);
            self.maximum = self.maximum.max(other.maximum);
        }
        self.sample_count += other.sample_count;
        self.sum += other.sum;
        for (b, n) in &other.histogram {
            *self.histogram.entry(*b).or_insert(0) += n;
        }
    }

    /// The statistic's value; `None` for a percentile of samples without
    /// a histogram (none are stored so, but a statistic set may be built so).
    pub fn value(&self, stat: Stat) -> Option<f64> {
        Some(match stat {
            Stat::SampleCount => self.sample_count,
            Stat::Sum => self.sum,
            Stat::Average => self.sum / self.sample_count,
            Stat::Minimum => self.minimum,
            Stat::Maximum => self.maximum,
            Stat::Percentile(p) => self.percentile(p)?,
        })
    }

    /// The nearest-rank percentile, as the upper bound of its bucket
    /// (clamped to the samples' range, so p0 and p100 are exact).
    fn percentile(&self, p: f64) -> Option<f64> {
        let total: u64 = self.histogram.values().sum();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in &self.histogram {
            seen += n;
            if seen >= rank {
                let upper = if *b == ZERO_BUCKET { 0.0 } else { GAMMA.powi(*b) };
                return Some(upper.clamp(self.minimum, self.maximum));
            }
        }
        Some(self.maximum)
    }

    /// The histogram as the store keeps it.
    pub fn encode_histogram(&self) -> String {
        let pairs: Vec<(i32, u64)> = self.histogram.iter().map(|(b, n)| (*b, *n)).collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
    }

    pub fn decode_histogram(s: &str) -> Result<BTreeMap<i32, u64>, serde_json::Error> {
        let pairs: Vec<(i32, u64)> = serde_json::from_str(s)?;
        Ok(pairs.into_iter().collect())
    }
}

fn bucket(value: f64) -> i32 {
    if value <= 0.0 || !value.is_finite() {
        return ZERO_BUCKET;
    }
    (value.ln() / GAMMA.ln()).ceil() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_names_parse_as_cloudwatch_spells_them() {
        assert_eq!(Stat::parse("Sum").unwrap(), Stat::Sum);
        assert_eq!(Stat::parse("p99").unwrap(), Stat::Percentile(99.0));
        assert_eq!(Stat::parse("p99.9").unwrap(), Stat::Percentile(99.9));
        assert_eq!(Stat::parse("p0").unwrap(), Stat::Percentile(0.0));
        for bad in ["sum", "p101", "p", "p99.999", "p-1", "p9.", "Avg", "tm99"] {
            assert!(Stat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_are_within_two_percent_and_merge() {
        let mut a = StatSet::default();
        let mut b = StatSet::default();
        for i in 1..=1000 {
            let v = f64::from(i) * 0.5;
            if i % 2 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        let encoded = a.encode_histogram();
        a.histogram = StatSet::decode_histogram(&encoded).unwrap();
        a.merge(&b);
        assert_eq!(a.sample_count, 1000.0);
        assert_eq!(a.minimum, 0.5);
        assert_eq!(a.maximum, 500.0);
        assert_eq!(a.value(Stat::Average), Some(250.25));
        for (p, exact) in [(50.0, 250.0), (90.0, 450.0), (99.0, 495.0)] {
            let got = a.value(Stat::Percentile(p)).unwrap();
            assert!((got - exact).abs() / exact <= 0.02, "p{p}: {got} vs {exact}");
        }
        assert_eq!(a.value(Stat::Percentile(100.0)), Some(500.0));
        let mut zeros = StatSet::default();
        zeros.add(0.0);
        zeros.add(1.0);
        assert_eq!(zeros.value(Stat::Percentile(50.0)), Some(0.0));
        assert_eq!(zeros.value(Stat::Percentile(99.0)), Some(1.0));
        assert_eq!(StatSet::default().value(Stat::Percentile(99.0)), None);
    }
}
