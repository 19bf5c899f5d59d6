//! Code signing configurations and what they mean on a node without a
//! signing service.
//!
//! On AWS, a function with a code signing configuration has every code
//! deployment (its zip, and the layers it adds) checked against the trusted
//! signing profiles; an artifact none of them signed is refused under
//! `Enforce` and accepted with a warning under `Warn`. Nimbus has no AWS
//! Signer, so no upload can carry a signature it could verify: every
//! deployment to such a function is an unsigned artifact. `Enforce` therefore
//! refuses it with `CodeVerificationFailedException`, as AWS does for an
//! unsigned zip, and `Warn` accepts it and logs a warning.

use nimbus_core::function::{CodeSigningConfig, Function};
use nimbus_core::FunctionRef;
use nimbus_store::Write;
use rand::Rng;

use crate::*;

/// Create/UpdateCodeSigningConfig's input; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct CodeSigningInput {
    pub description: Option<String>,
    pub signing_profile_version_arns: Option<Vec<String>>,
    pub untrusted_artifact_on_deployment: Option<String>,
}

/// `csc-` and 17 random lowercase alphanumerics, like AWS's ids.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..17).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("csc-{tail}")
}

impl Control {
    pub fn code_signing_config_arn(&self, id: &str) -> String {
        let a = self.account();
        format!("arn:aws:lambda:{}:{}:code-signing-config:{id}", a.region, a.id)
    }

    /// The id an ARN of this account names, if it is one.
    fn code_signing_config_id<'a>(&self, arn: &'a str) -> Option<&'a str> {
        let prefix = self.code_signing_config_arn("");
        arn.strip_prefix(prefix.as_str()).filter(|id| id.starts_with("csc-"))
    }

    /// The configuration an ARN names (GetCodeSigningConfig and friends).
    async fn code_signing_config(&self, arn: &str) -> Result<CodeSigningConfig> {
        let missing = || not_found(format!("The Lambda code signing configuration {arn} can not be found."));
        let id = self.code_signing_config_id(arn).ok_or_else(missing)?;
        self.meta.get_code_signing_config(id).await?.ok_or_else(missing)
    }

    /// The configuration a function is to use (CreateFunction,
    /// PutFunctionCodeSigningConfig): a missing one is its own error.
    pub(crate) async fn code_signing_config_named(&self, arn: &str) -> Result<CodeSigningConfig> {
        self.code_signing_config(arn).await.map_err(|_| {
            Error::Rule(nimbus_core::Error::CodeSigningConfigNotFound(format!(
                "The code signing configuration cannot be found. Check that the provided configuration is not deleted: {arn}."
            )))
        })
    }

    /// Applies a signing policy to an unsigned deployment (see the module
    /// documentation).
    pub(crate) fn check_signature(csc: &CodeSigningConfig, function: &str) -> Result<()> {
        if csc.untrusted_artifact_on_deployment == "Enforce" {
            return Err(Error::Rule(nimbus_core::Error::CodeVerificationFailed(
                "The code signature failed one or more of the validation checks for signature mismatch or expiry, and the code signing policy is set to ENFORCE. Lambda blocks the deployment.".into(),
            )));
        }
        tracing::warn!(function, code_signing_config = %csc.id, "deploying unsigned code: the code signing policy is Warn");
        Ok(())
    }

    /// Checks a deployment to an existing function against its configuration.
    pub(crate) async fn check_deployment_signature(&self, f: &Function) -> Result<()> {
        let Some(arn) = &f.code_signing_config_arn else { return Ok(()) };
        match self.code_signing_config(arn).await {
            Ok(csc) => Self::check_signature(&csc, f.name()),
            // Deleted since it was attached: nothing left to enforce.
            Err(_) => Ok(()),
        }
    }

    pub async fn create_code_signing_config(&self, input: CodeSigningInput) -> Result<CodeSigningConfig> {
        if input.signing_profile_version_arns.is_none() {
            return Err(Error::Rule(nimbus_core::Error::Validation(
                "1 validation error detected: Value null at 'allowedPublishers' failed to satisfy constraint: Member must not be null".into(),
            )));
        }
        let csc = CodeSigningConfig {
            id: new_id(),
            description: input.description.unwrap_or_default(),
            signing_profile_version_arns: input.signing_profile_version_arns.unwrap_or_default(),
            untrusted_artifact_on_deployment: input.untrusted_artifact_on_deployment.unwrap_or_else(|| "Warn".into()),
            modified_ms: now_ms(),
        };
        let _guard = self.lock().await;
        self.meta.apply(vec![Write::PutCodeSigningConfig(Box::new(csc.clone()))]).await?;
        Ok(csc)
    }

    pub async fn get_code_signing_config(&self, arn: &str) -> Result<CodeSigningConfig> {
        self.code_signing_config(arn).await
    }

    pub async fn update_code_signing_config(&self, arn: &str, input: CodeSigningInput) -> Result<CodeSigningConfig> {
        let _guard = self.lock().await;
        let mut csc = self.code_signing_config(arn).await?;
        if let Some(d) = input.description {
            csc.description = d;
        }
        if let Some(a) = input.signing_profile_version_arns {
            csc.signing_profile_version_arns = a;
        }
        if let Some(p) = input.untrusted_artifact_on_deployment {
            csc.untrusted_artifact_on_deployment = p;
        }
        csc.modified_ms = now_ms();
        self.meta.apply(vec![Write::PutCodeSigningConfig(Box::new(csc.clone()))]).await?;
        Ok(csc)
    }

    pub async fn delete_code_signing_config(&self, arn: &str) -> Result<()> {
        let _guard = self.lock().await;
        let csc = self.code_signing_config(arn).await?;
        if !self.functions_signed_by(arn).await?.is_empty() {
            return Err(conflict(format!(
                "The code signing configuration {arn} cannot be deleted because it is used by one or more functions."
            )));
        }
        self.meta.apply(vec![Write::DeleteCodeSigningConfig(csc.id)]).await?;
        Ok(())
    }

    pub async fn list_code_signing_configs(
        &self,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<CodeSigningConfig>> {
        let all = self.meta.list_code_signing_configs().await?;
        // By id, as the store lists them.
        let (items, next_marker) = paginate_after(all, |c| c.id.clone(), marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    /// Names of the functions a configuration is attached to.
    async fn functions_signed_by(&self, arn: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for c in self.meta.list_configs(None, false, usize::MAX).await? {
            if let Some(f) = self.meta.get_function(&c.name).await? {
                if f.code_signing_config_arn.as_deref() == Some(arn) {
                    names.push(c.name);
                }
            }
        }
        Ok(names)
    }

    /// ListFunctionsByCodeSigningConfig: unqualified function ARNs.
    pub async fn list_functions_by_code_signing_config(
        &self,
        arn: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<String>> {
        self.code_signing_config(arn).await?;
        let mut arns: Vec<String> =
            self.functions_signed_by(arn).await?.iter().map(|n| self.account().function_arn(n)).collect();
        arns.sort();
        let (items, next_marker) = paginate_after(arns, String::clone, marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    /// PutFunctionCodeSigningConfig: returns the function's name.
    pub async fn put_function_code_signing_config(&self, raw: &str, arn: &str) -> Result<String> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        self.code_signing_config_named(arn).await?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        f.code_signing_config_arn = Some(arn.to_string());
        self.save(&f).await?;
        Ok(r.name)
    }

    /// GetFunctionCodeSigningConfig: the function's name and its
    /// configuration's ARN, if it has one.
    pub async fn get_function_code_signing_config(&self, raw: &str) -> Result<(String, Option<String>)> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        Ok((r.name, f.code_signing_config_arn))
    }

    pub async fn delete_function_code_signing_config(&self, raw: &str) -> Result<()> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        if f.code_signing_config_arn.take().is_some() {
            self.save(&f).await?;
        }
        Ok(())
    }
}
