//! `nimbus function deploy --trigger s3://bucket/prefix*suffix`: the two
//! calls AWS's tutorial makes by hand to have uploads invoke a function
//! (AddPermission for `s3.amazonaws.com`, then
//! PutBucketNotificationConfiguration), made through the public APIs so the
//! server applies its usual checks. The bucket's other notification rules
//! are kept; this function's rule (Id `nimbus-<function>`) is replaced.

use anyhow::{bail, Context};
use s3s::dto::{
    Event, FilterRule, FilterRuleName, LambdaFunctionConfiguration, NotificationConfiguration,
    NotificationConfigurationFilter, S3KeyFilter,
};
use s3s::xml::{Deserialize, Serialize};
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

impl Trigger {
    fn rule(&self, id: &str, function_arn: &str) -> LambdaFunctionConfiguration {
        let rules: Vec<FilterRule> = [("prefix", &self.prefix), ("suffix", &self.suffix)]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| FilterRule {
                name: Some(FilterRuleName::from(name.to_string())),
                value: Some(value.clone()),
            })
            .collect();
        LambdaFunctionConfiguration {
            id: Some(id.to_string()),
            lambda_function_arn: function_arn.to_string(),
            events: vec![Event::from("s3:ObjectCreated:*".to_string())],
            filter: (!rules.is_empty())
                .then_some(NotificationConfigurationFilter { key: Some(S3KeyFilter { filter_rules: Some(rules) }) }),
        }
    }
}

/// The bucket's notification configuration (GetBucketNotificationConfiguration's
/// XML) with the rule of `rule`'s Id replaced by `rule`.
fn merged(current: &[u8], rule: LambdaFunctionConfiguration) -> anyhow::Result<Vec<u8>> {
    let mut config = NotificationConfiguration::deserialize(&mut s3s::xml::Deserializer::new(current))
        .context("the bucket's notification configuration is not S3's XML")?;
    let rules = config.lambda_function_configurations.get_or_insert_default();
    rules.retain(|r| r.id != rule.id);
    rules.push(rule);
    let mut out = Vec::new();
    config.serialize(&mut s3s::xml::Serializer::new(&mut out))?;
    Ok(out)
}

/// Fails unless `trigger`'s bucket exists: checked before the function is
/// deployed, which a trigger that cannot be set up would leave half done.
pub async fn check_bucket(client: &Client, trigger: &Trigger) -> anyhow::Result<()> {
    let path = format!("/{}?notification", label(&trigger.bucket));
    match client.send("s3", "GET", &path, None, &[]).await {
        Ok(_) => Ok(()),
        Err(e) if e.downcast_ref::<AwsError>().is_some_and(|a| a.kind == "NoSuchBucket") => bail!(
            "the trigger's bucket {} does not exist; create it first (aws s3 mb s3://{})",
            trigger.bucket,
            trigger.bucket
        ),
        Err(e) => Err(e.context(format!("reading the notifications of the trigger's bucket {}", trigger.bucket))),
    }
}

/// Lets `trigger`'s bucket invoke the function and has its uploads notify
/// it. `nth` counts the deploy's triggers on the same bucket (from 0): each
/// is a rule of its own, so that a second pattern does not replace the first.
pub async fn set_up(client: &Client, function_arn: &str, trigger: &Trigger, nth: usize) -> anyhow::Result<()> {
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
    let id = if nth == 0 { format!("nimbus-{name}") } else { format!("nimbus-{name}-{}", nth + 1) };
    let config = merged(&current, trigger.rule(&id, function_arn))?;
    client
        .send("s3", "PUT", &path, Some(config), &[("content-type", "application/xml")])
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
        let trigger: Trigger = "s3://b/in/*.jpg".parse().unwrap();
        let out = String::from_utf8(merged(current.as_bytes(), trigger.rule("nimbus-f", "arn:new")).unwrap()).unwrap();
        let other_kept = "<Event>s3:ObjectRemoved:*</Event><Id>other</Id><CloudFunction>arn:o</CloudFunction>";
        assert!(out.contains(other_kept) && !out.contains("arn:f"), "{out}");
        assert!(out.contains("<Id>nimbus-f</Id><CloudFunction>arn:new</CloudFunction>"), "{out}");
        assert!(out.contains("<FilterRule><Name>suffix</Name><Value>.jpg</Value></FilterRule>"), "{out}");
        let empty = merged(b"<?xml version=\"1.0\"?><NotificationConfiguration/>", trigger.rule("nimbus-f", "arn:new"));
        assert!(String::from_utf8(empty.unwrap()).unwrap().contains("<Id>nimbus-f</Id>"));
        assert!(merged(b"<Nonsense/>", trigger.rule("nimbus-f", "arn:new")).is_err());
    }
}
