//! CloudWatch's three metric reads in their awsJson 1.0 shapes (PascalCase
//! members, epoch-second timestamps), and AWS's refusals of bad queries.
//! A namespace other than `AWS/Lambda`, or a dimension Lambda does not
//! have, simply has no data, as on AWS.

use std::collections::HashSet;

use nimbus_metrics::{check_datapoints, check_period, Dimensions, Metrics, Stat, StatSet, METRICS, NAMESPACE};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::json_front::Failure;

/// GetMetricData's limit on the datapoints of one page, over all its
/// queries (and MaxDatapoints' default): more are paged with NextToken.
const DATA_MAX_DATAPOINTS: i64 = 100_800;
/// GetMetricData's limit on queries in one call.
const DATA_MAX_QUERIES: usize = 500;
/// ListMetrics' page size.
const LIST_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Dimension {
    name: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricStatistics {
    namespace: String,
    metric_name: String,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    start_time: f64,
    end_time: f64,
    period: u32,
    #[serde(default)]
    statistics: Vec<String>,
    #[serde(default)]
    extended_statistics: Vec<String>,
    unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricData {
    metric_data_queries: Vec<DataQuery>,
    start_time: f64,
    end_time: f64,
    scan_by: Option<String>,
    max_datapoints: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataQuery {
    id: String,
    metric_stat: Option<MetricStat>,
    expression: Option<String>,
    label: Option<String>,
    return_data: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricStat {
    metric: Metric,
    period: u32,
    stat: String,
    unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Metric {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMetrics {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    next_token: Option<String>,
    /// `PT3H` (the model's only value): metrics with data in the last three hours.
    recently_active: Option<String>,
}

pub(super) async fn execute(metrics: &Metrics, op: &str, input: Value) -> Result<Value, Failure> {
    match op {
        "GetMetricStatistics" => get_metric_statistics(metrics, parse(input)?).await,
        "GetMetricData" => {
            let request = request_digest(&input);
            get_metric_data(metrics, parse(input)?, &request).await
        }
        "ListMetrics" => list_metrics(metrics, parse(input)?).await,
        _ => Err(Failure::new(
            "InvalidAction",
            format!("Nimbus serves GetMetricData, GetMetricStatistics and ListMetrics of CloudWatch, not {op}"),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure::new("SerializationException", e.to_string()))
}

fn invalid(message: String) -> Failure {
    Failure::new("InvalidParameterValue", message)
}

/// The metric's unit, if the namespace has it.
fn unit_of(metric: &str) -> Option<&'static str> {
    METRICS.iter().find(|(m, _)| *m == metric).map(|(_, u)| *u)
}

/// The series a query names, or `None` when nothing can match it.
fn series(
    namespace: Option<&str>,
    metric: Option<&str>,
    dims: &[Dimension],
    unit: Option<&str>,
) -> Option<(String, Dimensions)> {
    let metric = metric?;
    let own_unit = unit_of(metric)?;
    if namespace != Some(NAMESPACE) || unit.is_some_and(|u| u != own_unit) {
        return None;
    }
    let mut d = Dimensions::default();
    for dim in dims {
        let slot = match dim.name.as_str() {
            "FunctionName" => &mut d.function,
            "Resource" => &mut d.resource,
            "ExecutedVersion" => &mut d.executed_version,
            _ => return None,
        };
        *slot = Some(dim.value.clone()?);
    }
    Some((metric.to_string(), d))
}

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn check_range(start_ms: i64, end_ms: i64) -> Result<(), Failure> {
    if start_ms >= end_ms {
        return Err(invalid("The parameter StartTime must be less than the parameter EndTime.".into()));
    }
    Ok(())
}

async fn get_metric_statistics(metrics: &Metrics, q: GetMetricStatistics) -> Result<Value, Failure> {
    if q.statistics.is_empty() == q.extended_statistics.is_empty() {
        return Err(Failure::new(
            "InvalidParameterCombination",
            "Must specify either Statistics or ExtendedStatistics, but not both.",
        ));
    }
    let extended = q
        .extended_statistics
        .iter()
        .map(|s| match Stat::parse(s) {
            Ok(p @ Stat::Percentile(_)) => Ok((s.clone(), p)),
            _ => Err(invalid(format!("The value {s} for parameter ExtendedStatistics is not valid."))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let statistics =
        q.statistics.iter().map(|s| Ok((s.clone(), Stat::parse(s)?))).collect::<Result<Vec<_>, Failure>>()?;
    let (start, end) = (ms(q.start_time), ms(q.end_time));
    check_range(start, end)?;
    check_period(q.period)?;
    check_datapoints(q.period, start, end, nimbus_metrics::MAX_DATAPOINTS)?;
    let Some((metric, dims)) = series(Some(&q.namespace), Some(&q.metric_name), &q.dimensions, q.unit.as_deref())
    else {
        return Ok(json!({ "Label": q.metric_name, "Datapoints": [] }));
    };
    let unit = unit_of(&metric).unwrap_or("None");
    let datapoints: Vec<Value> = metrics
        .statistics(&metric, &dims, q.period, start, end)
        .await?
        .into_iter()
        .map(|(t, s)| datapoint(t, &s, &statistics, &extended, unit))
        .collect();
    Ok(json!({ "Label": metric, "Datapoints": datapoints }))
}

fn datapoint(t: i64, s: &StatSet, statistics: &[(String, Stat)], extended: &[(String, Stat)], unit: &str) -> Value {
    let mut p = Map::new();
    p.insert("Timestamp".into(), json!(t / 1000));
    for (name, stat) in statistics {
        p.insert(name.clone(), json!(s.value(*stat)));
    }
    if !extended.is_empty() {
        let ext: Map<String, Value> =
            extended.iter().map(|(name, stat)| (name.clone(), json!(s.value(*stat)))).collect();
        p.insert("ExtendedStatistics".into(), Value::Object(ext));
    }
    p.insert("Unit".into(), json!(unit));
    Value::Object(p)
}

async fn get_metric_data(metrics: &Metrics, q: GetMetricData, request: &str) -> Result<Value, Failure> {
    let (start, end) = (ms(q.start_time), ms(q.end_time));
    check_range(start, end)?;
    if q.metric_data_queries.len() > DATA_MAX_QUERIES {
        return Err(invalid(format!(
            "The collection MetricDataQueries must not have a size greater than {DATA_MAX_QUERIES}."
        )));
    }
    let page_size = match q.max_datapoints {
        None => DATA_MAX_DATAPOINTS,
        Some(n) if n >= 1 => n.min(DATA_MAX_DATAPOINTS),
        Some(n) => return Err(invalid(format!("The value {n} for parameter MaxDatapoints must be greater than 0."))),
    };
    let mut ids = HashSet::new();
    for (i, d) in q.metric_data_queries.iter().enumerate() {
        // AWS's pattern for an Id: it names the query in metric math.
        let mut chars = d.id.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Failure::new(
                "ValidationError",
                format!(
                    "The value {} for parameter MetricDataQueries.member.{}.Id is not matching the expected pattern ^[a-z][a-zA-Z0-9_]*$.",
                    d.id,
                    i + 1
                ),
            ));
        }
        if !ids.insert(d.id.as_str()) {
            return Err(Failure::new(
                "ValidationError",
                format!("The value {} for parameter MetricDataQueries.member.{}.Id is not unique.", d.id, i + 1),
            ));
        }
        if d.expression.is_some() {
            return Err(Failure::new(
                "ValidationError",
                format!(
                    "Metric math expressions are not supported by this node (MetricDataQueries.member.{}.Expression).",
                    i + 1
                ),
            ));
        }
        let Some(stat) = &d.metric_stat else {
            return Err(Failure::new(
                "ValidationError",
                format!("Exactly one of MetricStat and Expression must be set in MetricDataQueries.member.{}.", i + 1),
            ));
        };
        Stat::parse(&stat.stat).map_err(|_| {
            invalid(format!(
                "The value {} for parameter MetricDataQueries.member.{}.MetricStat.Stat is not valid.",
                stat.stat,
                i + 1
            ))
        })?;
        check_period(stat.period)?;
    }
    let ascending = match q.scan_by.as_deref() {
        None | Some("TimestampDescending") => false,
        Some("TimestampAscending") => true,
        Some(other) => return Err(invalid(format!("The value {other} for parameter ScanBy is not valid."))),
    };
    let returned: Vec<&DataQuery> = q.metric_data_queries.iter().filter(|d| d.return_data != Some(false)).collect();
    let resume = match &q.next_token {
        Some(t) => Cursor::parse(t, request, returned.len())?,
        None => Cursor { query: 0, after: None },
    };
    // Queries are answered in order, each in the scan's order, until the
    // page holds `page_size` datapoints; the query cut there is partial,
    // and the token resumes after its last timestamp.
    let mut budget = page_size;
    let mut results = Vec::new();
    let mut next = None;
    for (index, d) in returned.iter().enumerate().skip(resume.query) {
        let Some(s) = &d.metric_stat else { continue };
        let stat = Stat::parse(&s.stat)?;
        let m = &s.metric;
        let mut points: Vec<(i64, f64)> =
            match series(m.namespace.as_deref(), m.metric_name.as_deref(), &m.dimensions, s.unit.as_deref()) {
                Some((metric, dims)) => metrics
                    .statistics(&metric, &dims, s.period, start, end)
                    .await?
                    .into_iter()
                    .filter_map(|(t, set)| set.value(stat).map(|v| (t, v)))
                    .collect(),
                None => Vec::new(),
            };
        if !ascending {
            points.reverse();
        }
        if let Some(after) = resume.after.filter(|_| index == resume.query) {
            points.retain(|(t, _)| if ascending { *t > after } else { *t < after });
        }
        if !points.is_empty() && budget == 0 {
            // The page is full: the next one starts with this query.
            next = Some(Cursor { query: index, after: None });
            break;
        }
        let partial = points.len() as i64 > budget;
        points.truncate(budget.min(points.len() as i64) as usize);
        budget -= points.len() as i64;
        results.push(json!({
            "Id": d.id,
            "Label": d.label.clone().or_else(|| m.metric_name.clone()).unwrap_or_default(),
            "Timestamps": points.iter().map(|(t, _)| t / 1000).collect::<Vec<_>>(),
            "Values": points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "StatusCode": if partial { "PartialData" } else { "Complete" },
            "Messages": [],
        }));
        if partial {
            next = Some(Cursor { query: index, after: points.last().map(|(t, _)| *t) });
            break;
        }
    }
    let mut out = json!({ "MetricDataResults": results, "Messages": [] });
    if let Some(cursor) = next {
        out["NextToken"] = json!(cursor.token(request));
    }
    Ok(out)
}

/// Where a GetMetricData page resumes: the returned query it is in, and
/// the last timestamp (ms) of that query already sent. Its token carries
/// a digest of the request, so that a token is refused by another query.
#[derive(Debug, PartialEq)]
struct Cursor {
    query: usize,
    after: Option<i64>,
}

impl Cursor {
    fn token(&self, request: &str) -> String {
        let after = self.after.map_or_else(|| "-".to_string(), |t| t.to_string());
        format!("{}.{after}.{request}", self.query)
    }

    fn parse(token: &str, request: &str, queries: usize) -> Result<Self, Failure> {
        let bad =
            || Failure::new("InvalidNextToken", format!("The value {token} for parameter NextToken is not valid."));
        let mut parts = token.splitn(3, '.');
        let (Some(query), Some(after), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let query: usize = query.parse().map_err(|_| bad())?;
        let after = match after {
            "-" => None,
            t => Some(t.parse::<i64>().map_err(|_| bad())?),
        };
        if digest != request || query >= queries {
            return Err(bad());
        }
        Ok(Self { query, after })
    }
}

/// A digest of a GetMetricData request without its paging members: what a
/// token must have come from.
fn request_digest(input: &Value) -> String {
    use sha2::Digest;
    let mut request = input.clone();
    if let Some(members) = request.as_object_mut() {
        members.remove("NextToken");
        members.remove("MaxDatapoints");
    }
    hex::encode(&sha2::Sha256::digest(request.to_string().as_bytes())[..12])
}

async fn list_metrics(metrics: &Metrics, q: ListMetrics) -> Result<Value, Failure> {
    let skip: usize = match &q.next_token {
        Some(t) => t.parse().map_err(|_| invalid(format!("The value {t} for parameter NextToken is not valid.")))?,
        None => 0,
    };
    if q.namespace.as_deref().is_some_and(|n| n != NAMESPACE) {
        return Ok(json!({ "Metrics": [] }));
    }
    let matches = |name: &str, d: &Dimensions| {
        q.metric_name.as_deref().is_none_or(|m| m == name)
            && q.dimensions.iter().all(|f| {
                let have = match f.name.as_str() {
                    "FunctionName" => &d.function,
                    "Resource" => &d.resource,
                    "ExecutedVersion" => &d.executed_version,
                    _ => return false,
                };
                have.is_some() && (f.value.is_none() || have == &f.value)
            })
    };
    let recent = q.recently_active.is_some();
    let all: Vec<(String, Dimensions)> =
        metrics.list(recent).await?.into_iter().filter(|(m, d)| matches(m, d)).collect();
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(LIST_PAGE)
        .map(|(m, d)| {
            let dims: Vec<Value> =
                [("FunctionName", &d.function), ("Resource", &d.resource), ("ExecutedVersion", &d.executed_version)]
                    .into_iter()
                    .filter_map(|(n, v)| v.as_ref().map(|v| json!({ "Name": n, "Value": v })))
                    .collect();
            json!({ "Namespace": NAMESPACE, "MetricName": m, "Dimensions": dims })
        })
        .collect();
    let mut out = json!({ "Metrics": page });
    if skip + LIST_PAGE < all.len() {
        out["NextToken"] = json!((skip + LIST_PAGE).to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_resumes_its_own_request_only() {
        let request = request_digest(&json!({ "MetricDataQueries": [], "StartTime": 1, "EndTime": 2 }));
        let paged = request_digest(&json!({ "MetricDataQueries": [], "StartTime": 1, "EndTime": 2,
            "MaxDatapoints": 5, "NextToken": "x" }));
        assert_eq!(request, paged, "paging members are not part of the request");
        for cursor in [Cursor { query: 1, after: Some(1_700_000_040_000) }, Cursor { query: 0, after: None }] {
            assert_eq!(Cursor::parse(&cursor.token(&request), &request, 2).ok(), Some(cursor));
        }
        let token = Cursor { query: 1, after: None }.token(&request);
        let other = request_digest(&json!({ "MetricDataQueries": [], "StartTime": 0, "EndTime": 2 }));
        for (token, digest, queries) in
            [(token.as_str(), other.as_str(), 2), (&token, &request, 1), ("1.x.y", &request, 2)]
        {
            assert_eq!(Cursor::parse(token, digest, queries).err().map(|f| f.kind), Some("InvalidNextToken"));
        }
    }
}
