//! CloudWatch's three metric reads in their awsJson 1.0 shapes (PascalCase
//! members, epoch-second timestamps), and AWS's refusals of bad queries.
//! A namespace other than `AWS/Lambda`, or a dimension Lambda does not
//! have, simply has no data, as on AWS.

use std::collections::HashSet;

use nimbus_metrics::{
    check_datapoints, check_period, too_many_datapoints, Dimensions, Metrics, Stat, StatSet, METRICS, NAMESPACE,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::json_front::Failure;

/// GetMetricData's limit on the datapoints of one call, over all its queries.
const DATA_MAX_DATAPOINTS: i64 = 100_800;
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
}

pub(super) async fn execute(metrics: &Metrics, op: &str, input: Value) -> Result<Value, Failure> {
    match op {
        "GetMetricStatistics" => get_metric_statistics(metrics, parse(input)?).await,
        "GetMetricData" => get_metric_data(metrics, parse(input)?).await,
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

async fn get_metric_data(metrics: &Metrics, q: GetMetricData) -> Result<Value, Failure> {
    let (start, end) = (ms(q.start_time), ms(q.end_time));
    check_range(start, end)?;
    let mut ids = HashSet::new();
    let mut total = 0i64;
    for (i, d) in q.metric_data_queries.iter().enumerate() {
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
        total += (end - start).div_euclid(i64::from(stat.period) * 1000) + 1;
    }
    if total > DATA_MAX_DATAPOINTS {
        return Err(too_many_datapoints(total, DATA_MAX_DATAPOINTS).into());
    }
    let ascending = q.scan_by.as_deref() == Some("TimestampAscending");
    let mut results = Vec::new();
    for d in q.metric_data_queries.iter().filter(|d| d.return_data != Some(false)) {
        let Some(s) = &d.metric_stat else { continue };
        let stat = Stat::parse(&s.stat)?;
        let m = &s.metric;
        let mut points =
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
        results.push(json!({
            "Id": d.id,
            "Label": d.label.clone().or_else(|| m.metric_name.clone()).unwrap_or_default(),
            "Timestamps": points.iter().map(|(t, _)| t / 1000).collect::<Vec<_>>(),
            "Values": points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "StatusCode": "Complete",
            "Messages": [],
        }));
    }
    Ok(json!({ "MetricDataResults": results, "Messages": [] }))
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
    let all: Vec<(String, Dimensions)> = metrics.list().await?.into_iter().filter(|(m, d)| matches(m, d)).collect();
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
