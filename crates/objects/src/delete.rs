//! DeleteObjects: up to 1,000 keys in one request, each removed as
//! DeleteObject removes it (with its `ObjectRemoved:Delete`
//! notifications), and a failure of one key reported for that key alone.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use nimbus_store::Precondition;

use crate::s3::check_key;
use crate::Objects;

/// The most keys one DeleteObjects names.
const KEYS_MAX: usize = 1000;

impl Objects {
    pub(crate) async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        let origin = self.origin(&req);
        let delete = &req.input.delete;
        if delete.objects.is_empty() || delete.objects.len() > KEYS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let quiet = delete.quiet == Some(true);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for id in &delete.objects {
            // An entry's ETag makes its delete conditional, as `If-Match` does DeleteObject's.
            let condition = id.e_tag.as_ref().map(|e| Precondition::Present(Some(format!("\"{}\"", e.value()))));
            let result = match check_key(&id.key).and_then(|()| crate::s3::check_version(id.version_id.as_deref())) {
                Ok(()) => self.remove_object(&bucket, &id.key, condition, &origin).await,
                Err(e) => Err(e),
            };
            match result {
                // Quiet mode reports only the failures.
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(id.key.clone()),
                    version_id: id.version_id.clone(),
                    ..Default::default()
                }),
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(id.key.clone()),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }
}
