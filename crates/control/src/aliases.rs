//! Aliases: named pointers to a version, optionally splitting traffic with a
//! second version by weight.

use std::collections::BTreeMap;

use nimbus_core::function::{Alias, Function};
use nimbus_core::FunctionRef;

use crate::*;

impl Control {
    /// Checks an alias target: `$LATEST` or an existing version, plus at most
    /// one extra published version with a weight in [0, 1].
    async fn check_alias_target(&self, f: &Function, version: &str, weights: &BTreeMap<String, f64>) -> Result<()> {
        let q = Qualifier::parse(version).map_err(rule)?;
        if matches!(q, Qualifier::Alias(_)) {
            return Err(invalid(format!("Alias cannot point to another alias: {version}")));
        }
        self.check_qualifier(f, &q).await?;
        if weights.len() > 1 {
            return Err(invalid("Number of items in AdditionalVersionWeights cannot be greater than 1"));
        }
        for (v, w) in weights {
            if version == LATEST {
                return Err(invalid("$LATEST is not supported for an alias pointing to more than 1 version"));
            }
            if !(0.0..=1.0).contains(w) || w.is_nan() {
                return Err(invalid(format!(
                    "Invalid weight {w} for version {v}: weights must be between 0.0 and 1.0"
                )));
            }
            if v == version {
                return Err(invalid(format!(
                    "Invalid function version {v}. Function version {v} is already included in routing configuration."
                )));
            }
            let n: u64 =
                v.parse().map_err(|_| invalid(format!("Additional version {v} must be a published version number")))?;
            self.check_qualifier(f, &Qualifier::Version(n)).await?;
        }
        Ok(())
    }

    fn alias_not_found(&self, name: &str, alias: &str) -> Error {
        not_found(format!("Cannot find alias arn: {}", self.account().qualified_arn(name, alias)))
    }

    pub async fn create_alias(
        &self,
        raw: &str,
        alias: &str,
        version: &str,
        description: Option<String>,
        weights: BTreeMap<String, f64>,
    ) -> Result<Alias> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let description = description.unwrap_or_default();
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        if f.aliases.contains_key(alias) {
            return Err(conflict(format!("Alias already exists: {}", self.account().qualified_arn(&r.name, alias))));
        }
        self.check_alias_target(&f, version, &weights).await?;
        let a = Alias {
            name: alias.to_string(),
            function_version: version.to_string(),
            description,
            additional_weights: weights,
            revision_id: new_revision(),
        };
        f.aliases.insert(alias.to_string(), a.clone());
        self.save(&f).await?;
        Ok(a)
    }

    pub async fn get_alias(&self, raw: &str, alias: &str) -> Result<Alias> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        f.aliases.get(alias).cloned().ok_or_else(|| self.alias_not_found(&r.name, alias))
    }

    pub async fn update_alias(
        &self,
        raw: &str,
        alias: &str,
        version: Option<String>,
        description: Option<String>,
        weights: Option<BTreeMap<String, f64>>,
        revision_id: Option<&str>,
    ) -> Result<Alias> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        let mut a = f.aliases.get(alias).cloned().ok_or_else(|| self.alias_not_found(&r.name, alias))?;
        check_revision(revision_id, &a.revision_id)?;
        let before = a.function_version.clone();
        if let Some(v) = version {
            a.function_version = v;
        }
        if let Some(d) = description {
            a.description = d;
        }
        if let Some(w) = weights {
            a.additional_weights = w;
        }
        self.check_alias_target(&f, &a.function_version, &a.additional_weights).await?;
        a.revision_id = new_revision();
        f.aliases.insert(alias.to_string(), a.clone());
        self.save(&f).await?;
        // As on AWS, the alias's provisioned concurrency moves with it: the
        // old version's environments go, the new version's are started.
        if let Some(p) = f.provisioned.get(alias).filter(|_| a.function_version != before) {
            self.start_provisioning(&f, alias, p.requested).await?;
        }
        Ok(a)
    }

    pub async fn delete_alias(&self, raw: &str, alias: &str) -> Result<()> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        if f.aliases.remove(alias).is_none() {
            return Err(self.alias_not_found(&r.name, alias));
        }
        f.url_configs.remove(alias);
        f.event_invoke_configs.remove(alias);
        let provisioned = f.provisioned.remove(alias).is_some();
        f.policy.retain(|s| s.qualifier.as_deref() != Some(alias));
        self.save(&f).await?;
        if let (true, Some(invoker)) = (provisioned, &self.invoker) {
            invoker.unprovision(&r.name, Some(alias)).await;
        }
        Ok(())
    }

    pub async fn list_aliases(
        &self,
        raw: &str,
        function_version: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<Alias>> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        let all: Vec<Alias> =
            f.aliases.into_values().filter(|a| function_version.is_none_or(|v| a.function_version == v)).collect();
        let (items, next_marker) = crate::paginate_after(all, |a| a.name.clone(), marker, max_items)?;
        Ok(Page { items, next_marker })
    }
}
