//! The side configurations of a function: reserved and provisioned
//! concurrency, tags, the resource policy, function URLs, asynchronous
//! invocation settings; and the account's settings.

use std::collections::BTreeMap;

use nimbus_core::function::{
    Cors, EventInvokeConfig, Function, ProvisionedConfig, RuntimeManagement, Statement, UrlConfig,
};
use nimbus_core::limits::*;
use nimbus_core::{service_rules, FunctionRef};
use rand::Rng;

use crate::*;

/// AddPermission's input.
#[derive(Debug, Clone, Default)]
pub struct NewPermission {
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    pub principal_org_id: Option<String>,
    pub event_source_token: Option<String>,
    pub function_url_auth_type: Option<String>,
    /// `InvokedViaFunctionUrl`: the grant holds only for calls through a function URL.
    pub invoked_via_function_url: bool,
    pub revision_id: Option<String>,
}

/// Put/UpdateFunctionEventInvokeConfig's input: the settings, and which of
/// the destination members the request named (`{}` names one, empty).
#[derive(Debug, Clone, Default)]
pub struct EventInvokeChange {
    pub config: EventInvokeConfig,
    pub destination_config: bool,
    pub on_success_given: bool,
    pub on_failure_given: bool,
}

/// Create/UpdateFunctionUrlConfig's input; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UrlConfigInput {
    pub auth_type: Option<String>,
    pub cors: Option<Cors>,
    pub invoke_mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountSettings {
    pub concurrency_limit: u32,
    pub unreserved_concurrency: u32,
    pub function_count: u64,
    pub total_code_size: u64,
}

/// A provisioned-concurrency configuration with the node's progress on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedReport {
    pub config: ProvisionedConfig,
    /// Environments initialized and ready.
    pub ready: u32,
    /// `IN_PROGRESS`, `READY` or `FAILED`.
    pub status: &'static str,
    pub reason: Option<String>,
}

/// The policy key of a qualifier: the function itself and `$LATEST` share one.
fn policy_key(q: &Option<Qualifier>) -> Option<String> {
    match q {
        None | Some(Qualifier::Latest) => None,
        Some(q) => Some(q.to_string()),
    }
}

fn event_key(q: &Option<Qualifier>) -> String {
    q.as_ref().map_or_else(|| LATEST.to_string(), ToString::to_string)
}

/// 32 random lowercase alphanumerics, like AWS's URL ids.
fn new_url_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..32).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

impl Control {
    async fn function_and_ref(&self, raw: &str, qualifier: Option<&str>) -> Result<(FunctionRef, Function)> {
        let r = self.parse_ref(raw, qualifier)?;
        let f = self.function(&r.name).await?;
        if let Some(q) = &r.qualifier {
            self.check_qualifier(&f, q).await?;
        }
        Ok((r, f))
    }

    /// One page of a side configuration of a function, keyed by qualifier.
    async fn list_side<T>(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
        pick: impl FnOnce(Function) -> BTreeMap<String, T>,
    ) -> Result<Page<(String, T)>> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        let (items, next_marker) =
            paginate_after(pick(f).into_iter().collect(), |(qualifier, _)| qualifier.clone(), marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    fn no_event_invoke_config(&self, name: &str, key: &str) -> Error {
        not_found(format!("The function {} doesn't have an EventInvokeConfig", self.account().qualified_arn(name, key)))
    }

    // ---- reserved concurrency ----

    /// The function a concurrency operation names: AWS refuses versions and aliases.
    fn concurrency_target(&self, raw: &str) -> Result<FunctionRef> {
        let r = self.parse_ref(raw, None)?;
        if r.qualifier.is_some() {
            return Err(invalid(
                "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. Please specify either a function name or an unqualified function ARN.",
            ));
        }
        Ok(r)
    }

    pub async fn put_function_concurrency(&self, raw: &str, reserved: i64) -> Result<u32> {
        let r = self.concurrency_target(raw)?;
        let reserved =
            service_rules::at_most("ReservedConcurrentExecutions", reserved, i64::from(u32::MAX)).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        let usage = self.meta.usage().await?;
        let others = usage.reserved_concurrency - u64::from(f.reserved_concurrency.unwrap_or(0));
        let limit = u64::from(self.settings.concurrency_limit);
        let minimum = unreserved_min(self.settings.concurrency_limit);
        if others + u64::from(reserved) + u64::from(minimum) > limit {
            return Err(invalid(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{minimum}]."
            )));
        }
        let provisioned: u32 = f.provisioned.values().map(|p| p.requested).sum();
        if provisioned > reserved {
            // AWS's wording, leading space and double space included.
            return Err(invalid(format!(
                " ReservedConcurrentExecutions  {reserved} should not be lower than function's total provisioned concurrency [{provisioned}]."
            )));
        }
        f.reserved_concurrency = Some(reserved);
        self.save(&f).await?;
        if let Some(invoker) = &self.invoker {
            invoker.set_reserved(&r.name, Some(reserved));
        }
        Ok(reserved)
    }

    pub async fn get_function_concurrency(&self, raw: &str) -> Result<Option<u32>> {
        let r = self.concurrency_target(raw)?;
        Ok(self.function(&r.name).await?.reserved_concurrency)
    }

    pub async fn delete_function_concurrency(&self, raw: &str) -> Result<()> {
        let r = self.concurrency_target(raw)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        f.reserved_concurrency = None;
        self.save(&f).await?;
        if let Some(invoker) = &self.invoker {
            invoker.set_reserved(&r.name, None);
        }
        Ok(())
    }

    // ---- provisioned concurrency ----

    /// The qualifier a provisioned-concurrency operation names. `$LATEST`
    /// gets a different message from Put than from Get and Delete, as on AWS.
    fn provisioned_qualifier(r: &FunctionRef, put: bool) -> Result<String> {
        match &r.qualifier {
            None => Err(Error::Rule(nimbus_core::Error::Validation(
                "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null".into(),
            ))),
            Some(Qualifier::Latest) if put => Err(invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            )),
            Some(Qualifier::Latest) => Err(invalid("The function resource provided must be an alias or a published version.")),
            Some(q) => Ok(q.to_string()),
        }
    }

    /// AWS's rules between a new provisioned configuration, the function's
    /// reserved concurrency and the other configurations.
    fn check_provisioned(f: &Function, key: &str, requested: u32) -> Result<()> {
        let others: u32 = f.provisioned.iter().filter(|(q, _)| q.as_str() != key).map(|(_, p)| p.requested).sum();
        if f.reserved_concurrency.is_some_and(|r| r < others + requested) {
            return Err(invalid(
                "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function",
            ));
        }
        if let Some(alias) = f.aliases.get(key) {
            if f.provisioned.contains_key(&alias.function_version) {
                return Err(conflict(
                    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version",
                ));
            }
        } else if f.aliases.values().any(|a| a.function_version == key && f.provisioned.contains_key(&a.name)) {
            return Err(conflict("Version is pointed by a Provisioned Concurrency alias"));
        }
        Ok(())
    }

    pub async fn put_provisioned_concurrency(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        requested: i64,
    ) -> Result<ProvisionedReport> {
        // The model's minimum (1) is checked at the front door; the node's limit is ours.
        let requested = service_rules::at_most(
            "ProvisionedConcurrentExecutions",
            requested,
            i64::from(self.settings.concurrency_limit),
        )
        .map_err(rule)?;
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::provisioned_qualifier(&r, true)?;
        Self::check_provisioned(&f, &key, requested)?;
        let pc = ProvisionedConfig { requested, modified_ms: now_ms() };
        f.provisioned.insert(key.clone(), pc.clone());
        self.save(&f).await?;
        self.start_provisioning(&f, &key, requested).await?;
        Ok(self.provisioned_report(&r.name, &key, pc))
    }

    /// Replaces whatever environments a qualifier had with `count` new ones,
    /// started in the background.
    pub(crate) async fn start_provisioning(&self, f: &Function, qualifier: &str, count: u32) -> Result<()> {
        let Some(invoker) = self.invoker.clone() else { return Ok(()) };
        let q = Qualifier::parse(qualifier).map_err(rule)?;
        let config = self.config_at(f, Some(&q)).await?.config;
        let name = f.name().to_string();
        invoker.unprovision(&name, Some(qualifier)).await;
        let p = nimbus_worker::Provision {
            invoked_arn: self.account().qualified_arn(&name, qualifier),
            config,
            qualifier: qualifier.to_string(),
            count,
        };
        tokio::spawn(async move { invoker.provision(p).await });
        Ok(())
    }

    /// Provisions every stored configuration again (after a start).
    pub async fn restore_scaling(&self) -> Result<()> {
        let Some(invoker) = &self.invoker else { return Ok(()) };
        let configs = self.meta.list_configs(None, false, usize::MAX).await?;
        for c in configs {
            let Some(f) = self.meta.get_function(&c.name).await? else { continue };
            if let Some(r) = f.reserved_concurrency {
                invoker.set_reserved(&c.name, Some(r));
            }
            for (q, p) in &f.provisioned {
                if let Err(e) = self.start_provisioning(&f, q, p.requested).await {
                    tracing::warn!(function = %c.name, qualifier = %q, error = %e, "cannot provision");
                }
            }
        }
        Ok(())
    }

    fn provisioned_report(&self, name: &str, qualifier: &str, config: ProvisionedConfig) -> ProvisionedReport {
        let status = self.invoker.as_ref().and_then(|i| i.provisioned_status(name, qualifier));
        let ready = status.as_ref().map_or(0, |s| s.ready);
        let (state, reason) = match status.and_then(|s| s.failed) {
            Some(reason) => ("FAILED", Some(reason)),
            None if ready >= config.requested => ("READY", None),
            None => ("IN_PROGRESS", None),
        };
        ProvisionedReport { config, ready, status: state, reason }
    }

    pub async fn get_provisioned_concurrency(&self, raw: &str, qualifier: Option<&str>) -> Result<ProvisionedReport> {
        let (r, f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::provisioned_qualifier(&r, false)?;
        let pc = f.provisioned.get(&key).cloned().ok_or_else(|| {
            Error::Rule(nimbus_core::Error::ProvisionedConcurrencyNotFound(
                "No Provisioned Concurrency Config found for this function".into(),
            ))
        })?;
        Ok(self.provisioned_report(&r.name, &key, pc))
    }

    /// Deleting a configuration that does not exist succeeds, as on AWS.
    pub async fn delete_provisioned_concurrency(&self, raw: &str, qualifier: Option<&str>) -> Result<()> {
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::provisioned_qualifier(&r, false)?;
        if f.provisioned.remove(&key).is_none() {
            return Ok(());
        }
        self.save(&f).await?;
        if let Some(invoker) = &self.invoker {
            invoker.unprovision(&r.name, Some(&key)).await;
        }
        Ok(())
    }

    /// Provisioned configurations as (qualifier, report).
    pub async fn list_provisioned_concurrency(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<(String, ProvisionedReport)>> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let page = self.list_side(raw, marker, max_items, |f| f.provisioned).await?;
        let items = page.items.into_iter().map(|(q, p)| (q.clone(), self.provisioned_report(&r.name, &q, p))).collect();
        Ok(Page { items, next_marker: page.next_marker })
    }

    // ---- tags ----

    /// The function a taggable resource ARN names (unqualified function ARNs only).
    async fn tagged(&self, arn: &str) -> Result<Function> {
        let r = FunctionRef::parse(self.account(), arn, None).map_err(rule)?;
        if !arn.starts_with("arn:") {
            return Err(invalid(format!("Resource {arn} is not a valid ARN.")));
        }
        if r.qualifier.is_some() {
            return Err(invalid(
                "Tagging operations are permitted on Lambda functions only. Tags on aliases and versions are not supported. Please specify either a function name or a function ARN.",
            ));
        }
        self.function(&r.name).await
    }

    pub async fn tag_resource(&self, arn: &str, tags: BTreeMap<String, String>) -> Result<()> {
        if tags.is_empty() {
            return Err(invalid("An error occurred and the request cannot be processed."));
        }
        let _guard = self.lock().await;
        let mut f = self.tagged(arn).await?;
        f.tags.extend(tags);
        service_rules::tag_count(f.tags.len()).map_err(rule)?;
        self.save(&f).await
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        let _guard = self.lock().await;
        let mut f = self.tagged(arn).await?;
        for k in keys {
            f.tags.remove(k);
        }
        self.save(&f).await
    }

    pub async fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        Ok(self.tagged(arn).await?.tags)
    }

    // ---- resource policy ----

    pub async fn add_permission(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        p: NewPermission,
    ) -> Result<serde_json::Value> {
        if p.principal.is_empty() || p.principal.chars().any(char::is_whitespace) {
            return Err(invalid(format!("The provided principal was invalid: '{}'", p.principal)));
        }
        if let Some(acct) = &p.source_account {
            if acct.len() != 12 || !acct.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("Invalid SourceAccount {acct}: it must be 12 digits.")));
            }
        }
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        if r.qualifier == Some(Qualifier::Latest) {
            return Err(invalid("We currently do not support adding policies for $LATEST."));
        }
        check_revision(p.revision_id.as_deref(), &f.latest.revision_id)?;
        let key = policy_key(&r.qualifier);
        if f.policy.iter().any(|s| s.qualifier == key && s.sid == p.statement_id) {
            return Err(conflict(format!(
                "The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.",
                p.statement_id
            )));
        }
        // A service (`*.amazonaws.com`, and Alexa's `*.amazon.com`), an
        // account, or an IAM ARN; anything else AWS refuses.
        let principal = if p.principal == "*" {
            serde_json::json!("*")
        } else if [".amazonaws.com", ".amazonaws.com.cn", ".amazon.com"].iter().any(|s| p.principal.ends_with(s)) {
            serde_json::json!({ "Service": p.principal })
        } else if p.principal.len() == 12 && p.principal.bytes().all(|b| b.is_ascii_digit()) {
            serde_json::json!({ "AWS": format!("arn:aws:iam::{}:root", p.principal) })
        } else if p.principal.starts_with("arn:") {
            serde_json::json!({ "AWS": p.principal })
        } else {
            return Err(invalid("The provided principal was invalid. Please check the principal and try again."));
        };
        let resource = match &key {
            Some(q) => self.account().qualified_arn(&r.name, q),
            None => self.account().function_arn(&r.name),
        };
        let mut string_equals = serde_json::Map::new();
        if let Some(a) = &p.source_account {
            string_equals.insert("AWS:SourceAccount".into(), a.clone().into());
        }
        if let Some(o) = &p.principal_org_id {
            string_equals.insert("aws:PrincipalOrgID".into(), o.clone().into());
        }
        if let Some(t) = &p.event_source_token {
            string_equals.insert("lambda:EventSourceToken".into(), t.clone().into());
        }
        if let Some(t) = &p.function_url_auth_type {
            string_equals.insert("lambda:FunctionUrlAuthType".into(), t.clone().into());
        }
        let mut condition = serde_json::Map::new();
        if !string_equals.is_empty() {
            condition.insert("StringEquals".into(), string_equals.into());
        }
        if let Some(arn) = &p.source_arn {
            condition.insert("ArnLike".into(), serde_json::json!({ "AWS:SourceArn": arn }));
        }
        if p.invoked_via_function_url {
            condition.insert("Bool".into(), serde_json::json!({ "lambda:InvokedViaFunctionUrl": "true" }));
        }
        let mut statement = serde_json::json!({
            "Sid": p.statement_id,
            "Effect": "Allow",
            "Principal": principal,
            "Action": p.action,
            "Resource": resource,
        });
        if !condition.is_empty() {
            statement["Condition"] = condition.into();
        }
        f.policy.push(Statement { sid: p.statement_id, qualifier: key.clone(), json: statement.clone() });
        if self.policy_document(&f, &key).map_or(0, |d| d.to_string().len()) > POLICY_MAX_BYTES {
            return Err(Error::Rule(nimbus_core::Error::PolicyLengthExceeded(
                "The final policy size is bigger than the limit.".into(),
            )));
        }
        f.latest.revision_id = new_revision();
        self.save(&f).await?;
        Ok(statement)
    }

    fn policy_document(&self, f: &Function, key: &Option<String>) -> Option<serde_json::Value> {
        let statements: Vec<&serde_json::Value> =
            f.policy.iter().filter(|s| &s.qualifier == key).map(|s| &s.json).collect();
        (!statements.is_empty())
            .then(|| serde_json::json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements }))
    }

    /// GetPolicy: the policy document and the function's revision.
    pub async fn get_policy(&self, raw: &str, qualifier: Option<&str>) -> Result<(serde_json::Value, String)> {
        let (r, f) = self.function_and_ref(raw, qualifier).await?;
        let doc = self
            .policy_document(&f, &policy_key(&r.qualifier))
            .ok_or_else(|| not_found("The resource you requested does not exist."))?;
        Ok((doc, f.latest.revision_id))
    }

    pub async fn remove_permission(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<()> {
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        check_revision(revision_id, &f.latest.revision_id)?;
        let key = policy_key(&r.qualifier);
        if !f.policy.iter().any(|s| s.qualifier == key) {
            return Err(not_found("No policy is associated with the given resource."));
        }
        let before = f.policy.len();
        f.policy.retain(|s| !(s.qualifier == key && s.sid == sid));
        if f.policy.len() == before {
            return Err(not_found(format!("Statement {sid} is not found in resource policy.")));
        }
        f.latest.revision_id = new_revision();
        self.save(&f).await
    }

    // ---- function URLs ----

    fn url_key(r: &FunctionRef) -> Result<String> {
        match &r.qualifier {
            None => Ok(String::new()),
            Some(Qualifier::Latest) => Err(Error::Rule(nimbus_core::Error::Validation(
                "1 validation error detected: Value '$LATEST' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)".into(),
            ))),
            Some(Qualifier::Alias(a)) => Ok(a.clone()),
            Some(Qualifier::Version(v)) => Err(Error::Rule(nimbus_core::Error::Validation(format!(
                "1 validation error detected: Value '{v}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)"
            )))),
        }
    }

    fn url_missing() -> Error {
        not_found("The resource you requested does not exist.")
    }

    pub async fn create_url_config(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        input: UrlConfigInput,
    ) -> Result<UrlConfig> {
        let auth = input.auth_type.ok_or_else(|| invalid("AuthType is required."))?;
        let mode = input.invoke_mode.unwrap_or_else(|| "BUFFERED".into());
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::url_key(&r)?;
        if f.url_configs.contains_key(&key) {
            let arn = if key.is_empty() {
                self.account().function_arn(&r.name)
            } else {
                self.account().qualified_arn(&r.name, &key)
            };
            return Err(conflict(format!(
                "Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig exists for this Lambda function"
            )));
        }
        let url_id = new_url_id();
        let now = now_ms();
        let cfg = UrlConfig {
            url_id,
            auth_type: auth,
            cors: input.cors,
            invoke_mode: mode,
            created_ms: now,
            modified_ms: now,
        };
        f.url_configs.insert(key, cfg.clone());
        self.save(&f).await?;
        Ok(cfg)
    }

    /// Returns the config and the qualifier it is keyed by.
    pub async fn get_url_config(&self, raw: &str, qualifier: Option<&str>) -> Result<(UrlConfig, String)> {
        let (r, f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::url_key(&r)?;
        let cfg = f.url_configs.get(&key).cloned().ok_or_else(Self::url_missing)?;
        Ok((cfg, key))
    }

    pub async fn update_url_config(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        input: UrlConfigInput,
    ) -> Result<(UrlConfig, String)> {
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::url_key(&r)?;
        let cfg = f.url_configs.get_mut(&key).ok_or_else(Self::url_missing)?;
        if let Some(a) = input.auth_type {
            cfg.auth_type = a;
        }
        if let Some(c) = input.cors {
            cfg.cors = Some(c);
        }
        if let Some(m) = input.invoke_mode {
            cfg.invoke_mode = m;
        }
        cfg.modified_ms = now_ms();
        let out = cfg.clone();
        self.save(&f).await?;
        Ok((out, key))
    }

    pub async fn delete_url_config(&self, raw: &str, qualifier: Option<&str>) -> Result<()> {
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = Self::url_key(&r)?;
        f.url_configs.remove(&key).ok_or_else(Self::url_missing)?;
        self.save(&f).await
    }

    pub async fn list_url_configs(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<(String, UrlConfig)>> {
        self.list_side(raw, marker, max_items, |f| f.url_configs).await
    }

    // ---- asynchronous invocation settings ----

    /// Put (replace) or Update (merge) a function's event-invoke config.
    pub async fn put_event_invoke_config(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        change: EventInvokeChange,
        merge: bool,
    ) -> Result<(EventInvokeConfig, String)> {
        let input = change.config;
        // Ranges and destination ARNs' shapes are checked at the front door
        // (the model and service_rules); an empty config is refused here.
        if input.maximum_retry_attempts.is_none() && input.maximum_event_age.is_none() && !change.destination_config {
            return Err(invalid("You must specify at least one of error handling or destination setting."));
        }
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let own = self.account().function_arn(&r.name);
        let is_own = |d: &String| d == &own || d.strip_prefix(own.as_str()).is_some_and(|q| q.starts_with(':'));
        for d in input.on_success.iter().chain(input.on_failure.iter()) {
            if is_own(d) {
                return Err(invalid("You can't specify the function as a destination for itself."));
            }
            // A function destination is one this node can reach: of its
            // partition, region and account, and existing (AWS refuses a
            // missing one). Delivery reads only the name.
            let parts: Vec<&str> = d.split(':').collect();
            if parts.get(2) == Some(&"lambda") {
                let reachable = parts.len() >= 7
                    && !nimbus_core::arn::of_other_partition(d)
                    && parts[3] == self.account().region
                    && parts[4] == self.account().id
                    && self.meta.get_function(parts[6]).await?.is_some();
                if !reachable {
                    return Err(invalid(format!("The destination ARN {d} is invalid.")));
                }
            }
        }
        let key = event_key(&r.qualifier);
        let cfg = match (merge, f.event_invoke_configs.get(&key)) {
            (true, None) => return Err(self.no_event_invoke_config(&r.name, &key)),
            // An update changes what it names: a destination given as `{}` is removed.
            (true, Some(old)) => EventInvokeConfig {
                maximum_retry_attempts: input.maximum_retry_attempts.or(old.maximum_retry_attempts),
                maximum_event_age: input.maximum_event_age.or(old.maximum_event_age),
                on_success: if change.on_success_given { input.on_success } else { old.on_success.clone() },
                on_failure: if change.on_failure_given { input.on_failure } else { old.on_failure.clone() },
                modified_ms: now_ms(),
            },
            (false, _) => EventInvokeConfig { modified_ms: now_ms(), ..input },
        };
        f.event_invoke_configs.insert(key.clone(), cfg.clone());
        self.save(&f).await?;
        Ok((cfg, key))
    }

    pub async fn get_event_invoke_config(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> Result<(EventInvokeConfig, String)> {
        let (r, f) = self.function_and_ref(raw, qualifier).await?;
        let key = event_key(&r.qualifier);
        let cfg =
            f.event_invoke_configs.get(&key).cloned().ok_or_else(|| self.no_event_invoke_config(&r.name, &key))?;
        Ok((cfg, key))
    }

    pub async fn delete_event_invoke_config(&self, raw: &str, qualifier: Option<&str>) -> Result<()> {
        let _guard = self.lock().await;
        let (r, mut f) = self.function_and_ref(raw, qualifier).await?;
        let key = event_key(&r.qualifier);
        if f.event_invoke_configs.remove(&key).is_none() {
            return Err(self.no_event_invoke_config(&r.name, &key));
        }
        self.save(&f).await
    }

    pub async fn list_event_invoke_configs(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<(String, EventInvokeConfig)>> {
        self.list_side(raw, marker, max_items, |f| f.event_invoke_configs).await
    }

    // ---- recursive loop detection ----

    /// GetFunctionRecursionConfig: `Terminate` unless set.
    pub async fn get_recursion_config(&self, raw: &str) -> Result<String> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        Ok(f.recursive_loop.unwrap_or_else(|| "Terminate".into()))
    }

    pub async fn put_recursion_config(&self, raw: &str, recursive_loop: &str) -> Result<String> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        f.recursive_loop = Some(recursive_loop.to_string());
        self.save(&f).await?;
        Ok(recursive_loop.to_string())
    }

    // ---- runtime management ----

    /// The configuration a runtime-management operation names: `$LATEST`
    /// (also when unqualified) or a published version.
    async fn runtime_target(&self, raw: &str, qualifier: Option<&str>) -> Result<(FunctionRef, Function)> {
        let (r, f) = self.function_and_ref(raw, qualifier).await?;
        if let Some(Qualifier::Alias(a)) = &r.qualifier {
            return Err(invalid(format!(
                "The qualifier {a} is an alias: runtime management configurations belong to $LATEST or a published version."
            )));
        }
        Ok((r, f))
    }

    /// The ARN a runtime-management answer carries: qualified as asked.
    fn runtime_target_arn(&self, r: &FunctionRef) -> String {
        match &r.qualifier {
            Some(q) => self.account().qualified_arn(&r.name, &q.to_string()),
            None => self.account().function_arn(&r.name),
        }
    }

    /// GetRuntimeManagementConfig: the setting and the ARN it is reported under.
    pub async fn get_runtime_management(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> Result<(RuntimeManagement, String)> {
        let (r, f) = self.runtime_target(raw, qualifier).await?;
        let config = self.config_at(&f, r.qualifier.as_ref()).await?.config;
        let setting = config
            .runtime_management
            .unwrap_or(RuntimeManagement { update_runtime_on: "Auto".into(), runtime_version_arn: None });
        Ok((setting, self.runtime_target_arn(&r)))
    }

    pub async fn put_runtime_management(
        &self,
        raw: &str,
        qualifier: Option<&str>,
        setting: RuntimeManagement,
    ) -> Result<(RuntimeManagement, String)> {
        match (setting.update_runtime_on.as_str(), &setting.runtime_version_arn) {
            ("Manual", None) => {
                return Err(invalid("RuntimeVersionArn must be specified when UpdateRuntimeOn is Manual."))
            }
            ("Auto" | "FunctionUpdate", Some(_)) => {
                return Err(invalid("RuntimeVersionArn can be specified only when UpdateRuntimeOn is Manual."))
            }
            _ => {}
        }
        let _guard = self.lock().await;
        let (r, mut f) = self.runtime_target(raw, qualifier).await?;
        let mut config = self.config_at(&f, r.qualifier.as_ref()).await?.config;
        if let Some(arn) = &setting.runtime_version_arn {
            let Some(runtime) = &config.runtime else {
                return Err(invalid("Runtime management configurations apply to functions with a runtime only."));
            };
            if *arn != nimbus_core::runtime::version_arn(&self.account().region, runtime) {
                return Err(invalid(format!(
                    "The runtime version {arn} does not exist or is not compatible with runtime {runtime} on this node."
                )));
            }
        }
        config.runtime_management = Some(setting.clone());
        if config.version == LATEST {
            f.latest = config;
            self.save(&f).await?;
        } else {
            self.meta.apply(vec![nimbus_store::Write::PutVersion(Box::new(config))]).await?;
        }
        Ok((setting, self.runtime_target_arn(&r)))
    }

    // ---- account ----

    pub async fn account_settings(&self) -> Result<AccountSettings> {
        let usage = self.meta.usage().await?;
        let limit = self.settings.concurrency_limit;
        Ok(AccountSettings {
            concurrency_limit: limit,
            unreserved_concurrency: limit.saturating_sub(u32::try_from(usage.reserved_concurrency).unwrap_or(u32::MAX)),
            function_count: usage.function_count,
            total_code_size: usage.total_code_size,
        })
    }
}
