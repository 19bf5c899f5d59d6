//! Client commands: `function` (deploy, list, get, delete, url), `layer`
//! (publish, list, delete), `invoke`, `logs` and `console`.
//! (`deploy --trigger` is in [`crate::trigger`].)

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::client::{label, AwsError, Client};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum FunctionCommand {
    /// Create a function from a directory or zip, or update it if it exists.
    Deploy {
        /// A directory (zipped deterministically) or a .zip file.
        path: PathBuf,
        /// The function's name.
        #[arg(long)]
        name: String,
        /// Runtime identifier, e.g. python3.11, nodejs20.x or provided.al2023.
        #[arg(long)]
        runtime: Option<String>,
        /// Handler, e.g. app.handler (module.function).
        #[arg(long)]
        handler: Option<String>,
        /// Memory in MB (128-10240).
        #[arg(long)]
        memory: Option<i64>,
        /// Timeout in seconds (1-900).
        #[arg(long)]
        timeout: Option<i64>,
        /// Environment variable, KEY=VALUE; repeatable. Replaces the whole set.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Layer version ARN, merged at /opt in the order given; repeatable.
        /// Replaces the function's layers.
        #[arg(long = "layer", value_name = "ARN")]
        layers: Vec<String>,
        /// A description of the function.
        #[arg(long)]
        description: Option<String>,
        /// Execution role ARN (recorded; Nimbus does not use IAM).
        #[arg(long, default_value = "arn:aws:iam::000000000000:role/nimbus-function")]
        role: String,
        /// Invoke the function for each object created in the bucket whose
        /// key matches (one `*` at most, e.g. s3://photos/uploads/*.jpg):
        /// allows s3.amazonaws.com to invoke it for that bucket
        /// (AddPermission) and sets the bucket's notification rule for it
        /// (s3:ObjectCreated:*, prefix and suffix from the pattern), keeping
        /// the bucket's other rules. Repeatable.
        #[arg(long = "trigger", value_name = "s3://BUCKET/PREFIX*SUFFIX")]
        triggers: Vec<crate::trigger::Trigger>,
    },
    /// List functions.
    List,
    /// Show one function.
    Get {
        /// Function name or ARN, optionally with `:qualifier`.
        name: String,
    },
    /// Delete a function and all its versions.
    Delete {
        /// Function name or ARN.
        name: String,
    },
    /// Print a function's URL, creating the URL first if it has none.
    Url {
        /// Function name or ARN.
        name: String,
        /// The alias the URL serves (default: the unqualified function, `$LATEST`).
        #[arg(long)]
        qualifier: Option<String>,
        /// Auth type: `AWS_IAM` (SigV4-signed callers; a new URL's default) or
        /// `NONE` (anyone; the resource policy is opened for it, as the AWS
        /// console does). An existing URL is changed to it.
        #[arg(long, value_parser = ["AWS_IAM", "NONE"])]
        auth_type: Option<String>,
        /// Invoke mode: `BUFFERED` (a new URL's default) or `RESPONSE_STREAM`.
        /// An existing URL is changed to it.
        #[arg(long, value_parser = ["BUFFERED", "RESPONSE_STREAM"])]
        invoke_mode: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum LayerCommand {
    /// Publish a new layer version from a directory or zip.
    Publish {
        /// The layer's name.
        name: String,
        /// A directory (zipped deterministically) or a .zip file.
        path: PathBuf,
        /// Runtime the layer is compatible with; repeatable.
        #[arg(long = "compatible-runtime")]
        compatible_runtimes: Vec<String>,
        /// A description of the layer version.
        #[arg(long)]
        description: Option<String>,
    },
    /// List layers with their newest version.
    List,
    /// Delete one version of a layer (functions using it keep their copy).
    Delete {
        /// The layer's name or ARN.
        name: String,
        /// The version number to delete.
        version: u64,
    },
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Function name or ARN, optionally with `:qualifier`.
    name: String,
    /// The event: JSON text, or `@file` to read it from a file (default `{}`).
    payload: Option<String>,
    /// Version or alias to invoke (default $LATEST).
    #[arg(long)]
    qualifier: Option<String>,
    /// Queue the event and return at once (InvocationType Event).
    #[arg(long = "async")]
    is_async: bool,
    /// Print the last 4 KB of the invocation's log to stderr.
    #[arg(long)]
    tail: bool,
}

pub async fn invoke(args: InvokeArgs, client_args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&client_args)?;
    let payload = match args.payload.as_deref() {
        None => b"{}".to_vec(),
        Some(p) => match p.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
            None => p.as_bytes().to_vec(),
        },
    };
    let mut path = format!("/2015-03-31/functions/{}/invocations", label(&args.name));
    if let Some(q) = &args.qualifier {
        path.push_str(&format!("?Qualifier={}", label(q)));
    }
    let kind = if args.is_async { "Event" } else { "RequestResponse" };
    let mut headers = vec![("x-amz-invocation-type", kind)];
    if args.tail {
        headers.push(("x-amz-log-type", "Tail"));
    }
    let (resp, body) = client.send("lambda", "POST", &path, Some(payload), &headers).await?;
    let header = |name: &str| resp.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(log) = header("x-amz-log-result") {
        let text = base64::engine::general_purpose::STANDARD.decode(log).unwrap_or_default();
        eprint!("{}", String::from_utf8_lossy(&text));
    }
    if client_args.json {
        let result = json!({
            "StatusCode": if args.is_async { 202 } else { 200 },
            "RequestId": header("x-amzn-requestid"),
            "ExecutedVersion": header("x-amz-executed-version"),
            "FunctionError": header("x-amz-function-error"),
            "Payload": serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| String::from_utf8_lossy(&body).into()),
        });
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if !body.is_empty() {
        println!("{}", String::from_utf8_lossy(&body));
    }
    if args.is_async && !client_args.json {
        let id = header("x-amzn-requestid").unwrap_or_default();
        println!("Queued: the event will run asynchronously (request id {id})");
    }
    if let Some(err) = header("x-amz-function-error") {
        anyhow::bail!("the function failed ({err})");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Function name.
    name: String,
    /// Keep printing new lines as they arrive.
    #[arg(long)]
    follow: bool,
    /// Only lines from then on: a duration back from now (`90s`, `30m`,
    /// `12h`, `7d`; a bare number is seconds), a date (`2026-12-01`,
    /// midnight UTC) or an RFC 3339 time, as `nimbus usage --since` takes.
    #[arg(long, value_parser = crate::since::parse)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only lines matching this CloudWatch Logs filter pattern (terms, ?terms, -terms, { JSON }).
    #[arg(long)]
    filter: Option<String>,
}

/// Prints a function's log lines through the CloudWatch Logs API.
pub async fn logs(args: LogsArgs, client_args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&client_args)?;
    // A function's logs outlive it, as in CloudWatch: a deleted function's
    // are in its default group.
    let (group, function_exists) =
        match client.call("GET", &format!("/2015-03-31/functions/{}/configuration", label(&args.name)), None).await {
            Ok(cfg) => (cfg["LoggingConfig"]["LogGroup"].as_str().unwrap_or_default().to_string(), true),
            Err(e) if AwsError::is_not_found(&e) => {
                // A name, or an ARN whose seventh field is the name.
                let name = args.name.split(':').nth(6).unwrap_or(&args.name);
                (format!("/aws/lambda/{name}"), false)
            }
            Err(e) => return Err(e),
        };
    let mut start = args.since.map(|s| s.timestamp_millis());
    let mut token: Option<String> = None;
    // (timestamp, event id) of the last line printed: following resumes
    // from its millisecond and skips what was printed of it.
    let mut seen: (i64, i64) = (0, 0);
    loop {
        let mut req = json!({ "logGroupName": group });
        if let Some(s) = start {
            req["startTime"] = s.into();
        }
        if let Some(f) = &args.filter {
            req["filterPattern"] = f.clone().into();
        }
        if let Some(t) = &token {
            req["nextToken"] = t.clone().into();
        }
        let headers =
            [("x-amz-target", "Logs_20140328.FilterLogEvents"), ("content-type", "application/x-amz-json-1.1")];
        let page: Value = match client.send("logs", "POST", "/", Some(serde_json::to_vec(&req)?), &headers).await {
            Ok((_, body)) => serde_json::from_slice(&body)?,
            // A function that has not logged yet has no log group yet; a
            // name with neither (a typo) is said so, unless following waits for it.
            Err(e) if AwsError::is_not_found(&e) && !function_exists && !args.follow => {
                anyhow::bail!("no function named {} and no log group {group}", args.name)
            }
            Err(e) if AwsError::is_not_found(&e) => json!({}),
            Err(e) => return Err(e),
        };
        for e in page["events"].as_array().cloned().unwrap_or_default() {
            let id: i64 = e["eventId"].as_str().and_then(|i| i.parse().ok()).unwrap_or(0);
            let at = (e["timestamp"].as_i64().unwrap_or(0), id);
            if at <= seen {
                continue;
            }
            seen = at;
            if client_args.json {
                println!("{e}");
            } else {
                // A printed line keeps its newline in its event, as on AWS.
                let message = e["message"].as_str().unwrap_or_default();
                println!("{}", message.strip_suffix('\n').unwrap_or(message));
            }
        }
        token = page["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            if !args.follow {
                return Ok(());
            }
            start = Some(seen.0.max(start.unwrap_or(0)));
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

fn read_package(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.is_dir() {
        crate::zipdir::zip_dir(path)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn parse_env(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("--env expects KEY=VALUE, got {p:?}"))?;
            Ok((k.to_string(), Value::String(v.to_string())))
        })
        .collect()
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn show(value: &Value, as_json: bool, keys: &[&str]) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![k.to_string(), text(&value[*k])]).collect();
        table(&["FIELD", "VALUE"], &rows);
    }
    Ok(())
}

const CONFIG_KEYS: &[&str] = &[
    "FunctionName",
    "FunctionArn",
    "Runtime",
    "Handler",
    "MemorySize",
    "Timeout",
    "CodeSize",
    "CodeSha256",
    "Version",
    "State",
    "LastModified",
];

pub async fn function(cmd: FunctionCommand, args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    match cmd {
        FunctionCommand::Deploy {
            path,
            name,
            runtime,
            handler,
            memory,
            timeout,
            env,
            layers,
            description,
            role,
            triggers,
        } => {
            let zip = read_package(&path)?;
            for t in &triggers {
                crate::trigger::check_bucket(&client, t).await?;
            }
            let mut config = Map::new();
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    config.insert(k.to_string(), v);
                }
            };
            set("Runtime", runtime.map(Value::from));
            set("Handler", handler.map(Value::from));
            set("MemorySize", memory.map(Value::from));
            set("Timeout", timeout.map(Value::from));
            set("Description", description.map(Value::from));
            if !env.is_empty() {
                set("Environment", Some(json!({ "Variables": parse_env(&env)? })));
            }
            if !layers.is_empty() {
                set("Layers", Some(json!(layers)));
            }
            let path_of = |suffix: &str| format!("/2015-03-31/functions/{}{suffix}", label(&name));
            let exists = match client.call("GET", &path_of("/configuration"), None).await {
                Ok(_) => true,
                Err(e) if AwsError::is_not_found(&e) => false,
                Err(e) => return Err(e),
            };
            // Each change is waited out before the next, and the deploy ends
            // when the function is ready to invoke.
            let result = if exists {
                let code = json!({ "ZipFile": b64(&zip) });
                client.call("PUT", &path_of("/code"), Some(serde_json::to_vec(&code)?)).await?;
                if !config.is_empty() {
                    client.wait_ready(&name).await?;
                    client
                        .call("PUT", &path_of("/configuration"), Some(serde_json::to_vec(&Value::Object(config))?))
                        .await?;
                }
                client.wait_ready(&name).await?
            } else {
                config.insert("FunctionName".into(), name.clone().into());
                config.insert("Role".into(), role.into());
                config.insert("Code".into(), json!({ "ZipFile": b64(&zip) }));
                client.call("POST", "/2015-03-31/functions", Some(serde_json::to_vec(&Value::Object(config))?)).await?;
                client.wait_ready(&name).await?
            };
            if !args.json {
                eprintln!("{} {name} ({} bytes)", if exists { "Updated" } else { "Created" }, zip.len());
            }
            for (i, t) in triggers.iter().enumerate() {
                let arn = result["FunctionArn"].as_str().context("the function has no ARN")?;
                let nth = triggers[..i].iter().filter(|earlier| earlier.bucket == t.bucket).count();
                crate::trigger::set_up(&client, arn, t, nth).await?;
                if !args.json {
                    eprintln!("Triggered by objects created in s3://{}/{}*{}", t.bucket, t.prefix, t.suffix);
                }
            }
            show(&result, args.json, CONFIG_KEYS)
        }
        FunctionCommand::List => {
            let functions = list_all(&client, "/2015-03-31/functions", "Functions").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "Functions": functions }))?);
            } else {
                let rows: Vec<Vec<String>> = functions
                    .iter()
                    .map(|f| {
                        ["FunctionName", "Runtime", "MemorySize", "Timeout", "LastModified"]
                            .iter()
                            .map(|k| text(&f[*k]))
                            .collect()
                    })
                    .collect();
                table(&["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "LAST MODIFIED"], &rows);
            }
            Ok(())
        }
        FunctionCommand::Get { name } => {
            let resp = client.call("GET", &format!("/2015-03-31/functions/{}", label(&name)), None).await?;
            show(&resp["Configuration"], args.json, CONFIG_KEYS)
        }
        FunctionCommand::Url { name, qualifier, auth_type, invoke_mode } => {
            let query = qualifier.as_ref().map(|q| format!("?Qualifier={}", label(q))).unwrap_or_default();
            let url_path = format!("/2021-10-31/functions/{}/url{query}", label(&name));
            let config = match client.call("GET", &url_path, None).await {
                Ok(config) => {
                    let mut change = serde_json::Map::new();
                    for (field, wanted) in [("AuthType", &auth_type), ("InvokeMode", &invoke_mode)] {
                        if let Some(w) = wanted.as_deref().filter(|w| config[field] != *w) {
                            change.insert(field.into(), w.into());
                        }
                    }
                    if change.is_empty() {
                        config
                    } else {
                        let changed = client.call("PUT", &url_path, Some(serde_json::to_vec(&change)?)).await?;
                        if !args.json {
                            let what: Vec<String> = change.iter().map(|(k, v)| format!("{k} {}", text(v))).collect();
                            eprintln!("Changed the function URL of {name}: {}", what.join(", "));
                        }
                        changed
                    }
                }
                Err(e) if AwsError::is_not_found(&e) => {
                    let auth = auth_type.as_deref().unwrap_or("AWS_IAM");
                    let mode = invoke_mode.as_deref().unwrap_or("BUFFERED");
                    let body = json!({ "AuthType": auth, "InvokeMode": mode });
                    let created = client.call("POST", &url_path, Some(serde_json::to_vec(&body)?)).await?;
                    if !args.json {
                        eprintln!("Created a {auth} function URL for {name}");
                    }
                    created
                }
                Err(e) => return Err(e),
            };
            // Asked for NONE: anyone may call it, which takes the grant too
            // (kept if it is there already).
            if auth_type.as_deref() == Some("NONE") {
                let grant = json!({
                    "StatementId": "FunctionURLAllowPublicAccess",
                    "Action": "lambda:InvokeFunctionUrl",
                    "Principal": "*",
                    "FunctionUrlAuthType": "NONE",
                });
                let policy_path = format!("/2015-03-31/functions/{}/policy{query}", label(&name));
                match client.call("POST", &policy_path, Some(serde_json::to_vec(&grant)?)).await {
                    Err(e) if !AwsError::is_conflict(&e) => return Err(e),
                    _ => {}
                }
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                println!("{}", text(&config["FunctionUrl"]));
            }
            Ok(())
        }
        FunctionCommand::Delete { name } => {
            client.call("DELETE", &format!("/2015-03-31/functions/{}", label(&name)), None).await?;
            if args.json {
                println!("{}", json!({ "Deleted": name }));
            } else {
                println!("Deleted function {name}");
            }
            Ok(())
        }
    }
}

pub async fn layer(cmd: LayerCommand, args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    match cmd {
        LayerCommand::Publish { name, path, compatible_runtimes, description } => {
            let zip = read_package(&path)?;
            let mut body = json!({ "Content": { "ZipFile": b64(&zip) }, "CompatibleRuntimes": compatible_runtimes });
            if let Some(d) = description {
                body["Description"] = d.into();
            }
            let resp = client
                .call(
                    "POST",
                    &format!("/2018-10-31/layers/{}/versions", label(&name)),
                    Some(serde_json::to_vec(&body)?),
                )
                .await?;
            show(&resp, args.json, &["LayerArn", "LayerVersionArn", "Version", "CompatibleRuntimes", "CreatedDate"])
        }
        LayerCommand::List => {
            let layers = list_all(&client, "/2018-10-31/layers", "Layers").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "Layers": layers }))?);
            } else {
                let rows: Vec<Vec<String>> = layers
                    .iter()
                    .map(|l| {
                        let newest = &l["LatestMatchingVersion"];
                        vec![
                            text(&l["LayerName"]),
                            text(&newest["Version"]),
                            text(&newest["CompatibleRuntimes"]),
                            text(&newest["LayerVersionArn"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "VERSION", "RUNTIMES", "ARN"], &rows);
            }
            Ok(())
        }
        LayerCommand::Delete { name, version } => {
            // A layer ARN names the layer in its seventh field.
            let name = name.split(':').nth(6).unwrap_or(&name).to_string();
            client.call("DELETE", &format!("/2018-10-31/layers/{}/versions/{version}", label(&name)), None).await?;
            if args.json {
                println!("{}", json!({ "Deleted": { "LayerName": name, "Version": version } }));
            } else {
                println!("Deleted layer {name} version {version}");
            }
            Ok(())
        }
    }
}

/// Every item of a paginated List operation, following `NextMarker`.
async fn list_all(client: &Client, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let q = marker.as_deref().map(|m| format!("?Marker={}", label(m))).unwrap_or_default();
        let page = client.call("GET", &format!("{path}{q}"), None).await?;
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["NextMarker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => return Ok(items),
        }
    }
}

/// Asks the server for a one-time web console link (a call signed with the
/// node's key pair for service `console`) and prints it.
pub async fn console(client_args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&client_args)?;
    let (_, body) = client.send("console", "POST", "/console/api/links", Some(b"{}".to_vec()), &[]).await?;
    let answer: Value = serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    let path = answer["path"].as_str().context("the server's answer has no link")?;
    let url = format!("{}{path}", client.endpoint());
    if client_args.json {
        println!("{}", json!({ "url": url, "expiresInSeconds": answer["expiresInSeconds"] }));
    } else {
        println!("{url}");
        let minutes = answer["expiresInSeconds"].as_u64().unwrap_or(0) / 60;
        eprintln!("Open it in a browser within {minutes} minutes; it signs in once.");
    }
    Ok(())
}
