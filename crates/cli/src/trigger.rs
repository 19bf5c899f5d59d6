//! `nimbus function deploy --trigger s3://bucket/prefix*suffix`: the two
//! calls AWS's tutorial makes by hand to have uploads invoke a function
//! (AddPermission for `s3.amazonaws.com`, then
//! PutBucketNotificationConfiguration), made through the public APIs so the
//! server applies its usual checks. The bucket's other notification rules
//! are kept; this function's rule (Id `nimbus-<function>`) is replaced.

use anyhow::{bail, Context};
use serde_json::json;

use crate::client::{label, AwsError, Client};

/// A parsed `--trigger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub bucket: String,
    pub prefix: String,
    pub suffix: String,
}

impl std::str::FromStr for Trigger {
    type Err = anyhow::Error;

    /// `s3://bucket`, `s3://bucket/prefix`, `s3://bucket/prefix*suffix`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let rest = s.strip_prefix("s3://").context("a trigger is s3://bucket/prefix*suffix")?;
        let (bucket, pattern) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("the trigger {s} names no bucket");
        }
        let (prefix, suffix) = match pattern.split_once('*') {
            Some((_, s)) if s.contains('*') => bail!("a trigger's key pattern takes one * at most: {pattern}"),
            Some((p, s)) => (p, s),
            None => (pattern, ""),
        };
        Ok(Self { bucket: bucket.into(), prefix: prefix.into(), suffix: suffix.into() })
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Trigger {
    fn rule(&self, id: &str, function_arn: &str) -> String {
        let mut filters = String::new();
        for (name, value) in [("prefix", &self.prefix), ("suffix", &self.suffix)] {
            if !value.is_empty() {
                filters
                    .push_str(&format!("<FilterRule><Name>{name}</Name><Value>{}</Value></FilterRule>", escape(value)));
            }
        }
        let filter =
            if filters.is_empty() { String::new() } else { format!("<Filter><S3Key>{filters}</S3Key></Filter>") };
        format!(
            "<CloudFunctionConfiguration><Id>{id}</Id><CloudFunction>{function_arn}</CloudFunction><Event>s3:ObjectCreated:*</Event>{filter}</CloudFunctionConfiguration>"
        )
    }
}

/// The bucket's configuration with this function's rule replaced by `rule`.
/// The server's XML is regular (no comments, no CDATA), so the rules are
/// found by their element names.
fn merged(current: &str, id: &str, rule: &str) -> String {
    const OPEN: &str = "<CloudFunctionConfiguration>";
    const CLOSE: &str = "</CloudFunctionConfiguration>";
    let body = current
        .find("<NotificationConfiguration")
        .and_then(|at| current[at..].find('>').map(|end| &current[at + end + 1..]))
        .and_then(|inner| inner.rfind("</NotificationConfiguration>").map(|end| &inner[..end]))
        .unwrap_or_default();
    let mut kept = String::new();
    let mut rest = body;
    while let Some(start) = rest.find(OPEN) {
        let Some(len) = rest[start..].find(CLOSE) else { break };
        let end = start + len + CLOSE.len();
        kept.push_str(&rest[..start]);
        if !rest[start..end].contains(&format!("<Id>{id}</Id>")) {
            kept.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    kept.push_str(rest);
    format!(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{kept}{rule}</NotificationConfiguration>"
    )
}

/// Lets `trigger`'s bucket invoke the function and has its uploads notify it.
pub async fn set_up(client: &Client, function_arn: &str, trigger: &Trigger) -> anyhow::Result<()> {
    let name = function_arn.rsplit(':').next().unwrap_or(function_arn);
    let account = function_arn.split(':').nth(4).unwrap_or_default();
    let grant = json!({
        "StatementId": format!("s3-{}", trigger.bucket),
        "Action": "lambda:InvokeFunction",
        "Principal": "s3.amazonaws.com",
        "SourceArn": format!("arn:aws:s3:::{}", trigger.bucket),
        "SourceAccount": account,
    });
    let policy = format!("/2015-03-31/functions/{}/policy", label(name));
    match client.call("POST", &policy, Some(serde_json::to_vec(&grant)?)).await {
        Ok(_) => {}
        // Deployed with this trigger before: the statement is already there.
        Err(e) if e.downcast_ref::<AwsError>().is_some_and(|a| a.kind == "ResourceConflictException") => {}
        Err(e) => return Err(e),
    }
    let path = format!("/{}?notification", label(&trigger.bucket));
    let (_, current) =
        client.send("s3", "GET", &path, None, &[]).await.context("reading the bucket's notifications")?;
    let id = format!("nimbus-{name}");
    let config = merged(&String::from_utf8_lossy(&current), &id, &trigger.rule(&id, function_arn));
    client
        .send("s3", "PUT", &path, Some(config.into_bytes()), &[("content-type", "application/xml")])
        .await
        .context("setting the bucket's notification")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_split_into_prefix_and_suffix() {
        let t = |s: &str| s.parse::<Trigger>().unwrap();
        let want = |b: &str, p: &str, s: &str| Trigger { bucket: b.into(), prefix: p.into(), suffix: s.into() };
        assert_eq!(t("s3://photos/uploads/*.jpg"), want("photos", "uploads/", ".jpg"));
        assert_eq!(t("s3://photos/*.jpg"), want("photos", "", ".jpg"));
        assert_eq!(t("s3://photos/raw/"), want("photos", "raw/", ""));
        assert_eq!(t("s3://photos"), want("photos", "", ""));
        for bad in ["photos/x", "s3:///x", "s3://b/a*b*c"] {
            assert!(bad.parse::<Trigger>().is_err(), "{bad}");
        }
    }

    #[test]
    fn merging_keeps_other_rules_and_replaces_its_own() {
        let other = "<CloudFunctionConfiguration><Id>other</Id><CloudFunction>arn:o</CloudFunction><Event>s3:ObjectRemoved:*</Event></CloudFunctionConfiguration>";
        let mine_old = "<CloudFunctionConfiguration><Id>nimbus-f</Id><CloudFunction>arn:f</CloudFunction><Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration>";
        let current = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><NotificationConfiguration xmlns=\"x\">{other}{mine_old}</NotificationConfiguration>"
        );
        let out = merged(&current, "nimbus-f", "<NEW/>");
        assert!(out.contains(other) && !out.contains(mine_old) && out.ends_with("<NEW/></NotificationConfiguration>"));
        let empty = merged("<?xml version=\"1.0\"?><NotificationConfiguration/>", "nimbus-f", "<NEW/>");
        assert!(empty.ends_with("\"><NEW/></NotificationConfiguration>"), "{empty}");
    }
}
