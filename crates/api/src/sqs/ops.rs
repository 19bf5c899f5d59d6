//! SQS operations against `nimbus-queues`, written once for both protocols:
//! each takes the JSON-protocol input and returns the JSON-protocol output.
//! Queues are addressed by QueueUrl (any host: only `/<account>/<name>` is
//! read) or, for query clients that POST to the queue URL, by the path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use nimbus_core::queues::AttributeValue;
use nimbus_queues::{rules, Error, OutgoingMessage, Queues, ReceivedMessage, SentMessage};
use serde_json::{json, Map, Value};

pub struct Ctx<'a> {
    pub queues: &'a Arc<Queues>,
    /// The Host the client used: queue URLs point back at it.
    pub host: &'a str,
    pub path: &'a str,
}

pub enum Failure {
    Queue(Error),
    UnknownOperation,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Queue(e)
    }
}

type Out = Result<Value, Failure>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub async fn execute(ctx: &Ctx<'_>, op: &str, input: &Value) -> Out {
    let q = ctx.queues;
    match op {
        "CreateQueue" => {
            let name = required(input, "QueueName")?;
            let info = q.create_queue(name, &string_map(input, "Attributes")?, &string_map(input, "tags")?).await?;
            Ok(json!({"QueueUrl": ctx.url(&info.name)}))
        }
        "GetQueueUrl" => {
            let name = required(input, "QueueName")?;
            if text(input, "QueueOwnerAWSAccountId").is_some_and(|a| a != q.account()) {
                return Err(Error::QueueDoesNotExist.into());
            }
            Ok(json!({"QueueUrl": ctx.url(&q.queue_by_name(name)?.name)}))
        }
        "ListQueues" => {
            let prefix = text(input, "QueueNamePrefix").unwrap_or_default();
            let names = q.list_queues(prefix, token(input)?.as_deref());
            Ok(page(names.into_iter().map(|n| ctx.url(&n)).collect(), int(input, "MaxResults", 1, 1000)?, "QueueUrls"))
        }
        "DeleteQueue" => {
            q.delete_queue(&ctx.arn(input)?).await?;
            Ok(json!({}))
        }
        "PurgeQueue" => {
            q.purge(&ctx.arn(input)?).await?;
            Ok(json!({}))
        }
        "GetQueueAttributes" => get_attributes(ctx, input),
        "SetQueueAttributes" => {
            q.set_attributes(&ctx.arn(input)?, &string_map(input, "Attributes")?).await?;
            Ok(json!({}))
        }
        "TagQueue" => {
            q.tag(&ctx.arn(input)?, &string_map(input, "Tags")?).await?;
            Ok(json!({}))
        }
        "UntagQueue" => {
            q.untag(&ctx.arn(input)?, &strings(input, "TagKeys")).await?;
            Ok(json!({}))
        }
        "ListQueueTags" => {
            let info = q.queue_by_name(&ctx.name(input)?)?;
            Ok(if info.tags.is_empty() { json!({}) } else { json!({"Tags": info.tags}) })
        }
        "ListDeadLetterSourceQueues" => {
            let after = token(input)?;
            let names: Vec<String> = q
                .dead_letter_sources(&ctx.arn(input)?)?
                .into_iter()
                .filter_map(|arn| arn.rsplit(':').next().map(str::to_string))
                .filter(|n| after.as_deref().is_none_or(|a| n.as_str() > a))
                .collect();
            let mut out =
                page(names.iter().map(|n| ctx.url(n)).collect(), int(input, "MaxResults", 1, 1000)?, "queueUrls");
            out.as_object_mut().map(|o| o.entry("queueUrls").or_insert(json!([])));
            Ok(out)
        }
        "SendMessage" => {
            let msg = outgoing(input)?;
            let sent = q.send(&ctx.arn(input)?, msg).await?;
            Ok(sent_json(&sent, None))
        }
        "SendMessageBatch" => send_batch(ctx, input).await,
        "ReceiveMessage" => receive(ctx, input).await,
        "DeleteMessage" => {
            let handle = required(input, "ReceiptHandle")?.to_string();
            match q.delete(&ctx.arn(input)?, &[handle]).await?.pop() {
                Some(Err(e)) => Err(e.into()),
                _ => Ok(json!({})),
            }
        }
        "DeleteMessageBatch" => {
            let arn = ctx.arn(input)?;
            let entries = entries(input, "DeleteMessageBatch")?;
            let handles: Vec<String> =
                entries.iter().map(|e| text(e, "ReceiptHandle").unwrap_or_default().to_string()).collect();
            let results = q.delete(&arn, &handles).await?;
            Ok(batch_result(&entries, results.into_iter().map(|r| r.map(|()| json!({}))).collect()))
        }
        "ChangeMessageVisibility" => {
            let arn = ctx.arn(input)?;
            let handle = required(input, "ReceiptHandle")?;
            let timeout = int(input, "VisibilityTimeout", 0, 43_200)?
                .ok_or_else(|| Error::MissingParameter("VisibilityTimeout".into()))?;
            q.change_visibility(&arn, handle, Duration::from_secs(timeout)).await?;
            Ok(json!({}))
        }
        "ChangeMessageVisibilityBatch" => {
            let arn = ctx.arn(input)?;
            let entries = entries(input, "ChangeMessageVisibilityBatch")?;
            let mut results = Vec::with_capacity(entries.len());
            for e in &entries {
                let handle = text(e, "ReceiptHandle").ok_or_else(|| Error::MissingParameter("ReceiptHandle".into()));
                let timeout = int(e, "VisibilityTimeout", 0, 43_200).map(|t| t.unwrap_or(0));
                results.push(match (handle, timeout) {
                    (Ok(h), Ok(t)) => q.change_visibility(&arn, h, Duration::from_secs(t)).await.map(|()| json!({})),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                });
            }
            Ok(batch_result(&entries, results))
        }
        "StartMessageMoveTask" => {
            let source = required(input, "SourceArn")?;
            let rate = int(input, "MaxNumberOfMessagesPerSecond", 1, 500)?.map(|r| r as u32);
            let handle = q.start_move_task(source, text(input, "DestinationArn"), rate)?;
            Ok(json!({"TaskHandle": handle}))
        }
        "CancelMessageMoveTask" => {
            let moved = q.cancel_move_task(required(input, "TaskHandle")?)?;
            Ok(json!({"ApproximateNumberOfMessagesMoved": moved}))
        }
        "ListMessageMoveTasks" => {
            let max = int(input, "MaxResults", 1, 10)?.unwrap_or(1) as usize;
            let tasks = q.list_move_tasks(required(input, "SourceArn")?, max)?;
            let results: Vec<Value> = tasks
                .into_iter()
                .map(|t| {
                    let mut v = json!({
                        "Status": t.status,
                        "SourceArn": t.source_arn,
                        "ApproximateNumberOfMessagesMoved": t.moved,
                        "ApproximateNumberOfMessagesToMove": t.to_move,
                        "StartedTimestamp": t.started_ms,
                    });
                    let o = v.as_object_mut().expect("an object");
                    if t.status == "RUNNING" {
                        o.insert("TaskHandle".into(), t.handle.into());
                    }
                    o.extend(t.destination_arn.map(|d| ("DestinationArn".to_string(), d.into())));
                    o.extend(t.max_per_second.map(|r| ("MaxNumberOfMessagesPerSecond".to_string(), r.into())));
                    o.extend(t.failure.map(|f| ("FailureReason".to_string(), f.into())));
                    v
                })
                .collect();
            Ok(json!({"Results": results}))
        }
        _ => Err(Failure::UnknownOperation),
    }
}

impl Ctx<'_> {
    fn url(&self, name: &str) -> String {
        format!("http://{}/{}/{name}", self.host, self.queues.account())
    }

    /// The queue a request names: its QueueUrl, else the request path.
    fn name(&self, input: &Value) -> Result<String, Error> {
        let url = match text(input, "QueueUrl") {
            Some(u) => u,
            None if self.path.trim_matches('/').contains('/') => self.path,
            None => return Err(Error::MissingParameter("QueueUrl".into())),
        };
        let path = url.split_once("://").map_or(url, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [account, name] if *account == self.queues.account() => Ok((*name).to_string()),
            _ => Err(Error::QueueDoesNotExist),
        }
    }

    fn arn(&self, input: &Value) -> Result<String, Error> {
        Ok(self.queues.arn(&self.name(input)?))
    }
}

fn text<'v>(input: &'v Value, key: &str) -> Option<&'v str> {
    input.get(key).and_then(Value::as_str)
}

fn required<'v>(input: &'v Value, key: &str) -> Result<&'v str, Error> {
    text(input, key).ok_or_else(|| Error::MissingParameter(key.into()))
}

/// An integer member within AWS's range for it.
fn int(input: &Value, key: &str, min: u64, max: u64) -> Result<Option<u64>, Error> {
    let Some(v) = input.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    let n = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    match n.and_then(|n| u64::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(Error::InvalidParameterValue(format!(
            "Value {} for parameter {key} is invalid. Reason: Must be between {min} and {max}, if provided.",
            v.as_str().map_or_else(|| v.to_string(), str::to_string)
        ))),
    }
}

fn string_map(input: &Value, key: &str) -> Result<BTreeMap<String, String>, Error> {
    let Some(Value::Object(map)) = input.get(key) else { return Ok(BTreeMap::new()) };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(Error::InvalidParameterValue(format!("Value for parameter {k} must be a string."))),
        })
        .collect()
}

fn strings(input: &Value, key: &str) -> Vec<String> {
    input
        .get(key)
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
}

fn token(input: &Value) -> Result<Option<String>, Error> {
    let Some(t) = text(input, "NextToken") else { return Ok(None) };
    B64.decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| Error::InvalidParameterValue("Invalid NextToken value.".into()))
}

/// A page of names (as URLs) and the token for the next, when a page size was asked for.
fn page(urls: Vec<String>, max: Option<u64>, key: &str) -> Value {
    let limit = max.unwrap_or(1000) as usize;
    let more = urls.len() > limit;
    let shown: Vec<String> = urls.into_iter().take(limit).collect();
    let mut out = Map::new();
    if max.is_some() && more {
        if let Some(last) = shown.last().and_then(|u| u.rsplit('/').next()) {
            out.insert("NextToken".into(), B64.encode(last).into());
        }
    }
    if !shown.is_empty() {
        out.insert(key.into(), shown.into());
    }
    Value::Object(out)
}

fn get_attributes(ctx: &Ctx<'_>, input: &Value) -> Out {
    let arn = ctx.arn(input)?;
    let all = ctx.queues.attributes(&arn)?;
    let wanted = strings(input, "AttributeNames");
    let standard = !all.contains_key("FifoQueue");
    for name in &wanted {
        if name != "All" && (!rules::is_queue_attribute(name) || standard && rules::is_fifo_attribute(name)) {
            return Err(Error::InvalidAttributeName(name.clone()).into());
        }
    }
    let chosen: BTreeMap<&String, &String> =
        all.iter().filter(|(k, _)| wanted.iter().any(|w| w == "All" || w == *k)).collect();
    Ok(if chosen.is_empty() { json!({}) } else { json!({"Attributes": chosen}) })
}

/// Message attributes in the JSON protocol's shape (binary as base64).
fn attribute_map(input: &Value, key: &str) -> Result<BTreeMap<String, AttributeValue>, Error> {
    let Some(Value::Object(map)) = input.get(key) else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for (name, v) in map {
        let data_type = text(v, "DataType").ok_or_else(|| {
            Error::InvalidParameterValue(format!(
                "The message attribute '{name}' must contain a non-empty message attribute type."
            ))
        })?;
        let binary = match text(v, "BinaryValue") {
            Some(b) => Some(B64.decode(b).map_err(|_| {
                Error::InvalidParameterValue(format!("The message attribute '{name}' has an invalid binary value."))
            })?),
            None => None,
        };
        out.insert(
            name.clone(),
            AttributeValue {
                data_type: data_type.to_string(),
                string: text(v, "StringValue").map(str::to_string),
                binary,
            },
        );
    }
    Ok(out)
}

fn attribute_json(v: &AttributeValue) -> Value {
    let mut o = Map::new();
    o.insert("DataType".into(), v.data_type.clone().into());
    if let Some(s) = &v.string {
        o.insert("StringValue".into(), s.clone().into());
    }
    if let Some(b) = &v.binary {
        o.insert("BinaryValue".into(), B64.encode(b).into());
    }
    Value::Object(o)
}

fn outgoing(input: &Value) -> Result<OutgoingMessage, Error> {
    let body = text(input, "MessageBody").ok_or_else(|| Error::MissingParameter("MessageBody".into()))?;
    Ok(OutgoingMessage {
        body: body.to_string(),
        attributes: attribute_map(input, "MessageAttributes")?,
        system_attributes: attribute_map(input, "MessageSystemAttributes")?,
        delay: int(input, "DelaySeconds", 0, 900)?.map(Duration::from_secs),
        group_id: text(input, "MessageGroupId").map(str::to_string),
        dedup_id: text(input, "MessageDeduplicationId").map(str::to_string),
    })
}

fn sent_json(sent: &SentMessage, id: Option<&str>) -> Value {
    let mut o = Map::new();
    o.extend(id.map(|i| ("Id".to_string(), Value::from(i))));
    o.insert("MessageId".into(), sent.message_id.clone().into());
    o.insert("MD5OfMessageBody".into(), sent.md5_of_body.clone().into());
    o.extend(sent.md5_of_attributes.clone().map(|m| ("MD5OfMessageAttributes".to_string(), m.into())));
    o.extend(sent.md5_of_system_attributes.clone().map(|m| ("MD5OfMessageSystemAttributes".to_string(), m.into())));
    o.extend(sent.sequence_number.clone().map(|s| ("SequenceNumber".to_string(), s.into())));
    Value::Object(o)
}

/// A batch's entries after the checks every batch gets (count, ids).
fn entries(input: &Value, action: &'static str) -> Result<Vec<Value>, Error> {
    let entries = input.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default();
    rules::check_batch_ids(entries.iter().map(|e| text(e, "Id").unwrap_or_default()), action)?;
    Ok(entries)
}

/// Successful and Failed lists from one result per entry.
fn batch_result(entries: &[Value], results: Vec<Result<Value, Error>>) -> Value {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (entry, result) in entries.iter().zip(results) {
        let id = text(entry, "Id").unwrap_or_default();
        match result {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("Id".into(), id.into());
                }
                ok.push(v);
            }
            Err(e) => {
                let code = match &e {
                    Error::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
                    Error::MissingParameter(_) => "MissingParameter",
                    Error::InvalidMessageContents => "InvalidMessageContents",
                    _ => "InvalidParameterValue",
                };
                let internal = matches!(e, Error::Internal(_));
                failed.push(json!({"Id": id, "SenderFault": !internal, "Code": code, "Message": e.to_string()}));
            }
        }
    }
    json!({"Successful": ok, "Failed": failed})
}

async fn send_batch(ctx: &Ctx<'_>, input: &Value) -> Out {
    let arn = ctx.arn(input)?;
    let entries = entries(input, "SendMessageBatch")?;
    let total: usize = entries
        .iter()
        .map(|e| {
            text(e, "MessageBody").map_or(0, str::len)
                + attribute_map(e, "MessageAttributes").ok().map_or(0, |a| {
                    a.iter()
                        .map(|(k, v)| {
                            k.len()
                                + v.data_type.len()
                                + v.string.as_ref().map_or(0, String::len)
                                + v.binary.as_ref().map_or(0, Vec::len)
                        })
                        .sum()
                })
        })
        .sum();
    if total > rules::MAX_MESSAGE_BYTES {
        return Err(Error::BatchRequestTooLong(total).into());
    }
    // Entries that fail to parse fail alone; the rest are sent together.
    let parsed: Vec<Result<OutgoingMessage, Error>> = entries.iter().map(outgoing).collect();
    let valid: Vec<OutgoingMessage> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let mut sent = ctx.queues.send_batch(&arn, valid).await?.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Ok(_) => sent
                .next()
                .unwrap_or_else(|| Err(Error::Internal("missing result".into())))
                .map(|s| sent_json(&s, None)),
            Err(e) => Err(e),
        })
        .collect();
    Ok(batch_result(&entries, results))
}

async fn receive(ctx: &Ctx<'_>, input: &Value) -> Out {
    let arn = ctx.arn(input)?;
    let info = ctx.queues.queue_by_name(&ctx.name(input)?)?;
    let max = int(input, "MaxNumberOfMessages", 1, 10)?.unwrap_or(1) as u32;
    let visibility = int(input, "VisibilityTimeout", 0, 43_200)?.map(Duration::from_secs);
    let wait = match int(input, "WaitTimeSeconds", 0, 20)? {
        Some(w) => w,
        None => info.attributes.get("ReceiveMessageWaitTimeSeconds").and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let mut system = strings(input, "AttributeNames");
    system.extend(strings(input, "MessageSystemAttributeNames"));
    let user = strings(input, "MessageAttributeNames");
    let got = ctx.queues.receive(&arn, max, visibility, Duration::from_secs(wait)).await?;
    let messages: Vec<Value> = got.into_iter().map(|m| message_json(m, &system, &user)).collect();
    Ok(if messages.is_empty() { json!({}) } else { json!({"Messages": messages}) })
}

fn message_json(m: ReceivedMessage, system: &[String], user: &[String]) -> Value {
    let mut o = Map::new();
    o.insert("MessageId".into(), m.message_id.into());
    o.insert("ReceiptHandle".into(), m.receipt_handle.into());
    o.insert("MD5OfBody".into(), m.md5_of_body.into());
    o.insert("Body".into(), m.body.into());
    let attrs: Map<String, Value> = m
        .attributes
        .into_iter()
        .filter(|(k, _)| system.iter().any(|s| s == "All" || s == k))
        .map(|(k, v)| (k, v.into()))
        .collect();
    if !attrs.is_empty() {
        o.insert("Attributes".into(), Value::Object(attrs));
    }
    let chosen: BTreeMap<String, AttributeValue> =
        m.message_attributes.into_iter().filter(|(k, _)| rules::selects(user, k)).collect();
    if !chosen.is_empty() {
        // The digest covers the attributes returned, as AWS computes it.
        o.extend(rules::md5_of_attributes(&chosen).map(|d| ("MD5OfMessageAttributes".to_string(), d.into())));
        let json: Map<String, Value> = chosen.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect();
        o.insert("MessageAttributes".into(), Value::Object(json));
    }
    Value::Object(o)
}
