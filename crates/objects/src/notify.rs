//! Bucket notifications: the S3 event records a write produces for the
//! bucket's matching LambdaFunctionConfigurations, as asynchronous
//! invocations to queue with the write. The record's shape is AWS's
//! (eventVersion 2.1, the key URL-encoded with `+` for spaces, no size or
//! eTag on deletes, a sequencer that grows with each event).

use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_core::objects::{Bucket, LambdaNotification, ObjectInfo};
use nimbus_store::AsyncEvent;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;

/// What AWS leaves unescaped in an event's key besides alphanumerics (a
/// space becomes `+`).
const KEY_ESCAPE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'*').remove(b' ').remove(b'/');

fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_ESCAPE).to_string().replace(' ', "+")
}

/// Orders events of this node: the time in nanoseconds, kept increasing.
fn sequencer() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let next = |last: u64| last.max(now.saturating_sub(1)) + 1;
    let last = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(next(l))).unwrap_or_default();
    format!("{:016X}", next(last))
}

/// Who and where an event came from, taken from the request before its
/// input is consumed (`Objects::origin`).
pub struct Origin<'a> {
    pub region: &'a str,
    /// The account the bucket is of: a rule's function must be of it too.
    pub account: &'a str,
    pub principal: String,
    pub source_ip: String,
    pub request_id: String,
    /// The writer's place in a chain of invocations (see [`lineage`]).
    pub lineage: u32,
}

/// What the listener knows of an S3 request and the object store does not:
/// the request id it answers with and the client's address (put in the
/// request's extensions, for the events its writes trigger).
#[derive(Debug, Clone)]
pub struct Requested {
    pub request_id: String,
    pub source_ip: String,
}

/// How many invocations led to a request: the count in its
/// `X-Amzn-Trace-Id`'s `Lineage=<hash>:<count>` field, which Lambda puts in
/// an invocation's trace id and AWS's SDKs send on from within a function
/// (`_X_AMZN_TRACE_ID`); 0 for a request from outside a function.
pub fn lineage(headers: &http::HeaderMap) -> u32 {
    let trace = headers.get("x-amzn-trace-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    trace
        .split(';')
        .find_map(|f| f.trim().strip_prefix("Lineage="))
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .unwrap_or(0)
}

/// The asynchronous invocations an event (`ObjectCreated:Put`,
/// `ObjectRemoved:Delete`, …) on `object` triggers in `bucket`.
pub fn events(bucket: &Bucket, event_name: &str, object: &ObjectInfo, origin: &Origin<'_>) -> Vec<AsyncEvent> {
    // Most buckets notify nothing: their writes make no strings for it.
    if bucket.notifications.is_empty() {
        return Vec::new();
    }
    let full = format!("s3:{event_name}");
    let now = chrono::Utc::now();
    // Rules' prefixes and suffixes are matched against the key as events
    // carry it, URL-encoded, as AWS matches them (`my+folder/` for a space).
    let key = encode_key(&object.key);
    let account = nimbus_core::arn::Account { id: origin.account.into(), region: origin.region.into() };
    bucket
        .notifications
        .iter()
        .filter(|n| n.matches(&full, &key))
        .filter_map(|n| {
            // A rule saved with SkipDestinationValidation may name another
            // region's or account's function, which this node cannot invoke
            // (AWS's delivery would be refused); it must not reach a local
            // function of the same name.
            let parsed = match nimbus_core::arn::of_other_partition(&n.function_arn) {
                true => Err(nimbus_core::Error::NotFound("the function is of another partition".into())),
                false => nimbus_core::arn::FunctionRef::parse(&account, &n.function_arn, None),
            };
            let target = match parsed {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(bucket = %bucket.name, rule = %n.id, function = %n.function_arn, error = %e,
                        "the notification's function cannot be invoked from this node; the event is not delivered");
                    return None;
                }
            };
            let mut object_json = json!({ "key": key, "sequencer": sequencer() });
            if event_name.starts_with("ObjectCreated") {
                object_json["size"] = json!(object.size);
                object_json["eTag"] = json!(object.etag.trim_matches('"'));
            }
            let record = json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": origin.region,
                "eventTime": now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "eventName": event_name,
                "userIdentity": { "principalId": origin.principal },
                "requestParameters": { "sourceIPAddress": origin.source_ip },
                "responseElements": { "x-amz-request-id": origin.request_id, "x-amz-id-2": origin.request_id },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": n.id,
                    "bucket": {
                        "name": bucket.name,
                        "ownerIdentity": { "principalId": origin.principal },
                        "arn": format!("arn:aws:s3:::{}", bucket.name),
                    },
                    "object": object_json,
                },
            });
            Some(AsyncEvent {
                id: uuid::Uuid::new_v4().to_string(),
                function: target.name,
                qualifier: target.qualifier.map(|q| q.to_string()),
                payload: json!({ "Records": [record] }).to_string().into_bytes(),
                attempts: 0,
                not_before_ms: now.timestamp_millis(),
                created_ms: now.timestamp_millis(),
                // The invocation this event starts is one more in the writer's chain.
                lineage: origin.lineage.saturating_add(1),
            })
        })
        .collect()
}

/// Refuses rules that could both match one event, as AWS does: their
/// events intersect and so do their key filters.
pub fn check_overlaps(rules: &[LambdaNotification]) -> s3s::S3Result<()> {
    let events_meet = |a: &str, b: &str| {
        let stem = |e: &str| e.strip_suffix('*').map(str::to_string);
        match (stem(a), stem(b)) {
            (Some(x), Some(y)) => x.starts_with(&y) || y.starts_with(&x),
            (Some(x), None) => b.starts_with(&x),
            (None, Some(y)) => a.starts_with(&y),
            (None, None) => a == b,
        }
    };
    let meet = |a: &Option<String>, b: &Option<String>, f: fn(&str, &str) -> bool| match (a, b) {
        (Some(x), Some(y)) => f(x, y) || f(y, x),
        _ => true,
    };
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let events = a.events.iter().any(|x| b.events.iter().any(|y| events_meet(x, y)));
            if events
                && meet(&a.prefix, &b.prefix, |x, y| x.starts_with(y))
                && meet(&a.suffix, &b.suffix, |x, y| x.ends_with(y))
            {
                return Err(s3s::s3_error!(
                    InvalidArgument,
                    "Configurations overlap. Configurations on the same bucket cannot share a common event type."
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_aws_encodes_them() {
        assert_eq!(encode_key("path/my file+x=é.jpg"), "path/my+file%2Bx%3D%C3%A9.jpg");
    }

    #[test]
    fn rules_match_the_encoded_key() {
        let rule = |prefix: &str| nimbus_core::objects::LambdaNotification {
            id: "r".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: Some(prefix.into()),
            suffix: None,
        };
        let key = encode_key("my folder/k=1.txt");
        assert!(rule("my+folder/").matches("s3:ObjectCreated:Put", &key));
        assert!(!rule("my folder/").matches("s3:ObjectCreated:Put", &key));
        assert!(rule("my+folder/k%3D1").matches("s3:ObjectCreated:Put", &key));
    }

    #[test]
    fn lineage_is_read_from_the_trace_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(lineage(&h), 0);
        h.insert("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a87bd80c:7".parse().unwrap());
        assert_eq!(lineage(&h), 7);
        h.insert("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".parse().unwrap());
        assert_eq!(lineage(&h), 0);
    }

    #[test]
    fn sequencers_grow() {
        let a = sequencer();
        let b = sequencer();
        assert!(b > a, "{a} {b}");
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let rule = |events: &[&str], prefix: Option<&str>, suffix: Option<&str>| LambdaNotification {
            id: "r".into(),
            function_arn: "f".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.map(str::to_string),
            suffix: suffix.map(str::to_string),
        };
        let jpg = rule(&["s3:ObjectCreated:*"], Some("images/"), Some(".jpg"));
        assert!(check_overlaps(&[jpg.clone(), rule(&["s3:ObjectCreated:Put"], Some("images/raw/"), None)]).is_err());
        assert!(check_overlaps(&[jpg.clone(), rule(&["s3:ObjectCreated:*"], Some("images/"), Some(".png"))]).is_ok());
        assert!(check_overlaps(&[jpg.clone(), rule(&["s3:ObjectRemoved:*"], Some("images/"), None)]).is_ok());
        assert!(check_overlaps(&[jpg, rule(&["s3:ObjectCreated:Copy"], Some("docs/"), None)]).is_ok());
    }

    #[test]
    fn a_rule_reaches_only_this_nodes_function_it_names() {
        let rule = |id: &str, arn: &str| LambdaNotification {
            id: id.into(),
            function_arn: arn.into(),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: Some(id.into()),
            suffix: None,
        };
        let bucket = Bucket {
            name: "b".into(),
            created_ms: 0,
            notifications: vec![
                rule("here", "arn:aws:lambda:us-east-1:123456789012:function:f:live"),
                // Saved with SkipDestinationValidation: not this node's.
                rule("other-region", "arn:aws:lambda:eu-west-1:123456789012:function:f"),
                rule("other-account", "arn:aws:lambda:us-east-1:999999999999:function:f"),
                rule("other-partition", "arn:aws-cn:lambda:us-east-1:123456789012:function:f"),
            ],
            tags: Default::default(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        let object = |key: &str| ObjectInfo {
            bucket: "b".into(),
            key: key.into(),
            file: String::new(),
            size: 1,
            etag: "\"e\"".into(),
            modified_ms: 0,
            headers: Default::default(),
            tags: Default::default(),
            checksum: None,
            part_sizes: vec![],
            data: None,
        };
        let origin = Origin {
            region: "us-east-1",
            account: "123456789012",
            principal: "p".into(),
            source_ip: "127.0.0.1".into(),
            request_id: "r".into(),
            lineage: 0,
        };
        let here = events(&bucket, "ObjectCreated:Put", &object("here/k"), &origin);
        let [e] = here.as_slice() else { panic!("{here:?}") };
        assert_eq!((e.function.as_str(), e.qualifier.as_deref()), ("f", Some("live")));
        for key in ["other-region/k", "other-account/k", "other-partition/k"] {
            assert!(events(&bucket, "ObjectCreated:Put", &object(key), &origin).is_empty(), "{key}");
        }
    }
}
