//! `nimbus usage`: requests, GB-seconds and their cost per function and
//! day, from `GET /_nimbus/usage` (the server prices them with its table);
//! the global `--json` prints the report as the API returns it.

use serde_json::Value;

use crate::client::Client;
use crate::ClientArgs;

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// From when: a duration back from now (`90s`, `30m`, `12h`, `7d`; a
    /// bare number is seconds), a date (`2026-12-01`, midnight UTC) or an
    /// RFC 3339 time. Default: 30 days ago.
    #[arg(long, value_parser = crate::since::parse)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Take AWS's monthly free tier off the cost.
    #[arg(long)]
    free_tier: bool,
}

pub async fn usage(args: UsageArgs, client_args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&client_args)?;
    let mut query = vec![];
    if let Some(f) = &args.function {
        query.push(format!("function={}", crate::client::label(f)));
    }
    if let Some(since) = &args.since {
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        query.push(format!("start={}", crate::client::label(&since)));
    }
    if args.free_tier {
        query.push("freeTier=true".into());
    }
    let report = client.call("GET", &format!("/_nimbus/usage?{}", query.join("&")), None).await?;
    if client_args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", table(&report));
    Ok(())
}

fn table(r: &Value) -> String {
    let mut out = format!(
        "{:<10}  {:<24}  {:<6}  {:>10}  {:>12}  {:>12}  {:>12}\n",
        "DAY", "FUNCTION", "ARCH", "REQUESTS", "BILLED MS", "GB-SECONDS", "COST (USD)"
    );
    for d in r["functions"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<10}  {:<24}  {:<6}  {:>10}  {:>12}  {:>12.3}  {:>12.7}\n",
            d["day"].as_str().unwrap_or_default(),
            d["function"].as_str().unwrap_or_default(),
            d["architecture"].as_str().unwrap_or_default(),
            d["requests"].as_u64().unwrap_or(0),
            d["billedMs"].as_u64().unwrap_or(0),
            d["gbSeconds"].as_f64().unwrap_or(0.0),
            d["cost"].as_f64().unwrap_or(0.0),
        );
    }
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    // The functions' own: the report's gross cost counts tasks too, which
    // have their table below.
    let functions_cost: f64 = r["functions"].as_array().into_iter().flatten().filter_map(|d| d["cost"].as_f64()).sum();
    out += &format!(
        "{:<10}  {:<24}  {:<6}  {:>10}  {:>12}  {:>12.3}  {:>12.7}\n",
        "TOTAL",
        "",
        "",
        r["requests"].as_u64().unwrap_or(0),
        r["billedMs"].as_u64().unwrap_or(0),
        f("gbSeconds"),
        functions_cost
    );
    let tasks = r["tasks"].as_array().filter(|t| !t.is_empty());
    if let Some(tasks) = tasks {
        out += &format!(
            "{:<10}  {:<24}  {:>6}  {:>10}  {:>12}  {:>12}  {:>12}\n",
            "DAY", "TASK FAMILY", "TASKS", "BILLED S", "VCPU-SECONDS", "GB-SECONDS", "COST (USD)"
        );
        for t in tasks {
            out += &format!(
                "{:<10}  {:<24}  {:>6}  {:>10}  {:>12.1}  {:>12.1}  {:>12.7}\n",
                t["day"].as_str().unwrap_or_default(),
                t["family"].as_str().unwrap_or_default(),
                t["tasks"].as_u64().unwrap_or(0),
                t["billedSeconds"].as_i64().unwrap_or(0),
                t["vcpuSeconds"].as_f64().unwrap_or(0.0),
                t["gbSeconds"].as_f64().unwrap_or(0.0),
                t["cost"].as_f64().unwrap_or(0.0),
            );
        }
    }
    out += &format!(
        "cost at list prices: ${:.7}, free tier -${:.7}, total ${:.7}\n",
        f("grossCost"),
        f("freeTierCredit"),
        f("cost")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_total_leaves_tasks_to_their_own_table() {
        let report = serde_json::json!({
            "functions": [{"day": "2026-12-02", "function": "f", "requests": 2, "billedMs": 10, "gbSeconds": 0.01, "cost": 0.25}],
            "tasks": [{"day": "2026-12-02", "family": "web", "tasks": 1, "billedSeconds": 60, "cost": 1.0}],
            "requests": 2, "billedMs": 10, "gbSeconds": 0.01, "grossCost": 1.25, "freeTierCredit": 0.0, "cost": 1.25,
        });
        let out = table(&report);
        let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
        assert!(total.ends_with("0.2500000"), "{total}");
        assert!(out.ends_with("total $1.2500000\n"), "{out}");
    }
}
