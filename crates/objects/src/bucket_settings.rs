//! A bucket's access and versioning configurations as S3 reports them:
//! the public access block, object ownership controls and versioning.
//! Each only records what is asked and what S3 would report; none changes
//! what the node does, and each must describe it truly: no bucket here can
//! be public (every request is signed), objects have no ACLs, and no object
//! versions are kept. So versioning may be `Suspended` (every object stays
//! the `null` version) but not `Enabled`, and ownership may be
//! `BucketOwnerEnforced` (ACLs off) only.

use nimbus_core::objects::Bucket;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::Objects;

/// A 404 whose code s3s does not name.
fn not_found(code: &str, message: &str) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.to_string().into()), message.to_string());
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

impl Objects {
    async fn settings_of(&self, bucket: &str) -> S3Result<nimbus_core::objects::BucketSettings> {
        Ok(self.bucket(bucket).await?.settings)
    }

    async fn edit_settings(
        &self,
        bucket: &str,
        edit: impl FnOnce(&mut nimbus_core::objects::BucketSettings),
    ) -> S3Result<()> {
        self.edit_bucket(bucket, |b: &mut Bucket| edit(&mut b.settings)).await
    }

    pub(crate) async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let c = req.input.public_access_block_configuration;
        let settings = [c.block_public_acls, c.ignore_public_acls, c.block_public_policy, c.restrict_public_buckets]
            .map(|s| s.unwrap_or(false));
        self.edit_settings(&req.input.bucket, |s| s.public_access_block = Some(settings)).await?;
        Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
    }

    pub(crate) async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let Some([acls, ignore, policy, restrict]) = self.settings_of(&req.input.bucket).await?.public_access_block
        else {
            return Err(not_found(
                "NoSuchPublicAccessBlockConfiguration",
                "The public access block configuration was not found",
            ));
        };
        Ok(S3Response::new(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: Some(acls),
                ignore_public_acls: Some(ignore),
                block_public_policy: Some(policy),
                restrict_public_buckets: Some(restrict),
            }),
        }))
    }

    pub(crate) async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        self.edit_settings(&req.input.bucket, |s| s.public_access_block = None).await?;
        Ok(S3Response::new(DeletePublicAccessBlockOutput {}))
    }

    pub(crate) async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        self.bucket(&req.input.bucket).await?;
        let rules = req.input.ownership_controls.rules;
        let enforced =
            |r: &OwnershipControlsRule| r.object_ownership.as_str() == ObjectOwnership::BUCKET_OWNER_ENFORCED;
        if !(rules.len() == 1 && rules.iter().all(enforced)) {
            return Err(s3_error!(
                NotImplemented,
                "Only BucketOwnerEnforced is offered by Nimbus: objects here have no ACLs."
            ));
        }
        self.edit_settings(&req.input.bucket, |s| s.owner_enforced = true).await?;
        Ok(S3Response::new(PutBucketOwnershipControlsOutput::default()))
    }

    pub(crate) async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        if !self.settings_of(&req.input.bucket).await?.owner_enforced {
            return Err(not_found("OwnershipControlsNotFoundError", "The bucket ownership controls were not found"));
        }
        let rule = OwnershipControlsRule {
            object_ownership: ObjectOwnership::from_static(ObjectOwnership::BUCKET_OWNER_ENFORCED),
        };
        Ok(S3Response::new(GetBucketOwnershipControlsOutput {
            ownership_controls: Some(OwnershipControls { rules: vec![rule] }),
        }))
    }

    pub(crate) async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        self.edit_settings(&req.input.bucket, |s| s.owner_enforced = false).await?;
        Ok(S3Response::new(DeleteBucketOwnershipControlsOutput {}))
    }

    pub(crate) async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.bucket(&req.input.bucket).await?;
        let c = req.input.versioning_configuration;
        if c.mfa_delete.as_ref().is_some_and(|m| m.as_str() == MFADelete::ENABLED) {
            return Err(s3_error!(NotImplemented, "MFA delete is not offered by Nimbus."));
        }
        match c.status.as_ref().map(BucketVersioningStatus::as_str) {
            Some(BucketVersioningStatus::SUSPENDED) => {
                self.edit_settings(&req.input.bucket, |s| s.versioning_suspended = true).await?;
            }
            Some(BucketVersioningStatus::ENABLED) => {
                return Err(s3_error!(
                    NotImplemented,
                    "Versioning is not offered by Nimbus: objects are not versioned (Suspended is, as it keeps one version)."
                ))
            }
            _ => {}
        }
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    /// Never versioned: no status until versioning is suspended, as S3
    /// reports a bucket that was never versioned.
    pub(crate) async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let suspended = self.settings_of(&req.input.bucket).await?.versioning_suspended;
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: suspended.then(|| BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
            ..Default::default()
        }))
    }
}
