//! Listing keys with a prefix and a delimiter in constant memory: the store
//! is read in key order a batch at a time, and the keys under a common
//! prefix are skipped in one step rather than read.

use nimbus_core::objects::ObjectInfo;
use nimbus_store::ObjectMeta;

const BATCH: usize = 1000;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    pub objects: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    /// Where the next page starts (the last key or common prefix given),
    /// when there is more.
    pub next: Option<String>,
}

/// Sorts after every key that starts with `prefix`: the largest character
/// follows it.
pub fn past(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

/// Up to `max` keys and common prefixes after `after`.
pub async fn list(
    meta: &dyn ObjectMeta,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: &str,
    max: usize,
) -> Result<Page, nimbus_store::Error> {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut page = Page::default();
    let mut cursor = after.to_string();
    let mut last: Option<String> = None;
    'read: loop {
        let batch = meta.list_objects(bucket, prefix, &cursor, BATCH).await?;
        let full = batch.len() == BATCH;
        for o in batch {
            if page.objects.len() + page.prefixes.len() == max {
                // Something follows the last entry given: there is a next page.
                page.next = last;
                return Ok(page);
            }
            let rest = &o.key[prefix.len()..];
            if let Some(i) = delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
                let common = format!("{prefix}{}", &rest[..i]);
                cursor = past(&common);
                last = Some(cursor.clone());
                page.prefixes.push(common);
                continue 'read;
            }
            cursor.clone_from(&o.key);
            last = Some(o.key.clone());
            page.objects.push(o);
        }
        if !full {
            return Ok(page);
        }
    }
}
