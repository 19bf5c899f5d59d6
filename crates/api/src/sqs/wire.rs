//! The two wire protocols SQS speaks, reduced to one: a query-protocol
//! request (`Action=...&Attribute.1.Name=...`) becomes the JSON document the
//! JSON 1.0 protocol would have sent, and a JSON response becomes the query
//! protocol's XML. Operations are written once, against JSON.
//!
//! The query protocol flattens lists and maps (`Tag.1.Key`, repeated
//! `<Attribute>` elements) under singular names; the tables below are those
//! names (from the 2012-11-05 query API, which botocore's JSON model no
//! longer spells out).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Query name of a flattened map → (key member, value member, JSON name).
const MAPS: &[(&str, &str, &str, &str)] = &[
    ("Attribute", "Name", "Value", "Attributes"),
    ("Tag", "Key", "Value", "Tags"),
    ("MessageAttribute", "Name", "Value", "MessageAttributes"),
    ("MessageSystemAttribute", "Name", "Value", "MessageSystemAttributes"),
];

/// Query name of a flattened list → JSON name.
const LISTS: &[(&str, &str)] = &[
    ("AttributeName", "AttributeNames"),
    ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ("MessageAttributeName", "MessageAttributeNames"),
    ("TagKey", "TagKeys"),
    ("SendMessageBatchRequestEntry", "Entries"),
    ("DeleteMessageBatchRequestEntry", "Entries"),
    ("ChangeMessageVisibilityBatchRequestEntry", "Entries"),
    ("AWSAccountId", "AWSAccountIds"),
    ("ActionName", "Actions"),
];

/// Members that are integers in the JSON protocol.
const INTEGERS: &[&str] = &[
    "DelaySeconds",
    "MaxNumberOfMessages",
    "VisibilityTimeout",
    "WaitTimeSeconds",
    "MaxResults",
    "MaxNumberOfMessagesPerSecond",
];

/// The most segments a parameter's name has
/// (`SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue`
/// has six).
const DEPTH_MAX: usize = 8;

#[derive(Default)]
struct Node {
    leaf: Option<String>,
    children: BTreeMap<String, Node>,
}

/// The JSON input a query-protocol request's parameters stand for; the
/// action is returned separately.
pub fn query_to_json(pairs: &[(String, String)]) -> (Option<String>, Value) {
    let mut root = Node::default();
    let mut action = None;
    for (k, v) in pairs {
        match k.as_str() {
            "Action" => action = Some(v.clone()),
            "Version" => {}
            // No member of SQS's input lies deeper; the tree is walked
            // (and dropped) recursively, so a deeper key is left out
            // before it could make one.
            _ if k.split('.').nth(DEPTH_MAX).is_some() => {}
            _ => {
                let mut node = &mut root;
                for seg in k.split('.') {
                    node = node.children.entry(seg.to_string()).or_default();
                }
                node.leaf = Some(v.clone());
            }
        }
    }
    let mut out = Map::new();
    for (name, node) in &root.children {
        let (json_name, value) = convert(name, node);
        out.insert(json_name, value);
    }
    if action.as_deref() == Some("CreateQueue") {
        // CreateQueue alone names its tags in lower case.
        if let Some(tags) = out.remove("Tags") {
            out.insert("tags".into(), tags);
        }
    }
    (action, Value::Object(out))
}

/// The indexed children (`1`, `2`, …) of a node in index order.
fn indexed(node: &Node) -> Vec<&Node> {
    let mut items: Vec<(u64, &Node)> =
        node.children.iter().filter_map(|(k, n)| k.parse::<u64>().ok().map(|i| (i, n))).collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, n)| n).collect()
}

fn convert(name: &str, node: &Node) -> (String, Value) {
    if let Some((_, key, value, json)) = MAPS.iter().find(|(n, ..)| *n == name) {
        let mut map = Map::new();
        for entry in indexed(node) {
            let k = entry.children.get(*key).and_then(|n| n.leaf.clone()).unwrap_or_default();
            let v = entry.children.get(*value).map_or(Value::Null, |n| convert(value, n).1);
            map.insert(k, v);
        }
        return (json.to_string(), Value::Object(map));
    }
    if let Some((_, json)) = LISTS.iter().find(|(n, _)| *n == name) {
        let items = indexed(node).into_iter().map(|n| convert("member", n).1).collect();
        return (json.to_string(), Value::Array(items));
    }
    if let Some(leaf) = &node.leaf {
        if INTEGERS.contains(&name) {
            if let Ok(i) = leaf.parse::<i64>() {
                return (name.to_string(), Value::from(i));
            }
        }
        return (name.to_string(), Value::String(leaf.clone()));
    }
    let mut map = Map::new();
    for (k, child) in &node.children {
        let (json_name, value) = convert(k, child);
        map.insert(json_name, value);
    }
    (name.to_string(), Value::Object(map))
}

/// JSON name of a response member → the element each item is written as.
fn flattened(op: &str, name: &str) -> Option<&'static str> {
    Some(match name {
        "QueueUrls" | "queueUrls" => "QueueUrl",
        "Messages" => "Message",
        "Failed" => "BatchResultErrorEntry",
        "Results" => "ListMessageMoveTasksResultEntry",
        "Successful" => match op {
            "SendMessageBatch" => "SendMessageBatchResultEntry",
            "DeleteMessageBatch" => "DeleteMessageBatchResultEntry",
            _ => "ChangeMessageVisibilityBatchResultEntry",
        },
        _ => return None,
    })
}

/// A JSON-protocol response as the query protocol's XML document.
pub fn json_to_xml(op: &str, result: &Value, request_id: &str) -> String {
    let mut body = String::new();
    // An operation with an output has its result element even when it is
    // empty (a receive from an empty queue): botocore's query parser, and
    // older SDKs with it, look it up unconditionally.
    if !NO_OUTPUT.contains(&op) {
        body.push_str(&format!("<{op}Result>"));
        if let Value::Object(members) = result {
            write_members(op, members, &mut body);
        }
        body.push_str(&format!("</{op}Result>"));
    }
    format!(
        "<?xml version=\"1.0\"?><{op}Response xmlns=\"{NAMESPACE}\">{body}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{op}Response>"
    )
}

pub const NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// The operations whose model has no output shape [botocore sqs service-2.json].
const NO_OUTPUT: &[&str] = &[
    "AddPermission",
    "ChangeMessageVisibility",
    "DeleteMessage",
    "DeleteQueue",
    "PurgeQueue",
    "RemovePermission",
    "SetQueueAttributes",
    "TagQueue",
    "UntagQueue",
];

fn write_members(op: &str, members: &Map<String, Value>, out: &mut String) {
    for (name, value) in members {
        if let (Some(item), Value::Array(items)) = (flattened(op, name), value) {
            for v in items {
                element(op, item, v, out);
            }
            continue;
        }
        match (name.as_str(), value) {
            ("Attributes", Value::Object(map)) => pairs(op, "Attribute", "Name", "Value", map, out),
            ("MessageAttributes", Value::Object(map)) => pairs(op, "MessageAttribute", "Name", "Value", map, out),
            ("Tags", Value::Object(map)) => pairs(op, "Tag", "Key", "Value", map, out),
            _ => element(op, name, value, out),
        }
    }
}

fn pairs(op: &str, item: &str, key: &str, value: &str, map: &Map<String, Value>, out: &mut String) {
    for (k, v) in map {
        out.push_str(&format!("<{item}><{key}>{}</{key}>", escape(k)));
        element(op, value, v, out);
        out.push_str(&format!("</{item}>"));
    }
}

fn element(op: &str, name: &str, value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Object(members) => {
            out.push_str(&format!("<{name}>"));
            write_members(op, members, out);
            out.push_str(&format!("</{name}>"));
        }
        Value::Array(items) => {
            for v in items {
                element(op, name, v, out);
            }
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", escape(s))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// XML text escaping; characters SQS allows but XML 1.0 text cannot carry
/// as-is (carriage returns) are written as references.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_key_nested_past_any_member_is_left_out() {
        // 200,000 levels overflowed the stack of the thread that walked them (the node aborted).
        let deep = format!("{}1", "a.".repeat(200_000));
        let (action, v) = query_to_json(&pairs(&[("Action", "ListQueues"), (&deep, "1"), ("QueueNamePrefix", "p")]));
        assert_eq!((action.as_deref(), v), (Some("ListQueues"), json!({"QueueNamePrefix": "p"})));
    }

    #[test]
    fn query_parameters_become_the_json_input() {
        let (action, v) = query_to_json(&pairs(&[
            ("Action", "CreateQueue"),
            ("QueueName", "q"),
            ("Attribute.2.Name", "DelaySeconds"),
            ("Attribute.2.Value", "5"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "10"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "a"),
        ]));
        assert_eq!(action.as_deref(), Some("CreateQueue"));
        assert_eq!(
            v,
            json!({"QueueName": "q", "Attributes": {"DelaySeconds": "5", "VisibilityTimeout": "10"}, "tags": {"team": "a"}})
        );
        let (_, v) = query_to_json(&pairs(&[
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            ("SendMessageBatchRequestEntry.1.DelaySeconds", "3"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Name", "n"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue", "v"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType", "String"),
            ("AttributeName.1", "All"),
        ]));
        assert_eq!(
            v,
            json!({"Entries": [{"Id": "a", "DelaySeconds": 3,
                    "MessageAttributes": {"n": {"StringValue": "v", "DataType": "String"}}}],
                   "AttributeNames": ["All"]})
        );
    }

    #[test]
    fn json_results_become_query_xml() {
        let xml = json_to_xml(
            "ReceiveMessage",
            &json!({"Messages": [{"Body": "a<b", "Attributes": {"SenderId": "1"}}]}),
            "rid",
        );
        assert!(xml.contains(
            "<ReceiveMessageResult><Message><Attribute><Name>SenderId</Name><Value>1</Value></Attribute><Body>a&lt;b</Body></Message></ReceiveMessageResult>"
        ), "{xml}");
        let xml = json_to_xml("DeleteQueue", &json!({}), "rid");
        assert!(xml.contains("<DeleteQueueResponse xmlns=") && !xml.contains("Result"), "{xml}");
        let xml = json_to_xml("ReceiveMessage", &json!({}), "rid");
        assert!(xml.contains("<ReceiveMessageResult></ReceiveMessageResult><ResponseMetadata>"), "{xml}");
    }
}
