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
                // A marker that is this common prefix (ListObjects' NextMarker)
                // had it given already: the keys under it are skipped, not
                // given again as the same prefix.
                if common == after {
                    continue 'read;
                }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nimbus_core::objects::Bucket;
    use nimbus_store::SqliteMetadata;

    use super::*;

    async fn store(keys: &[&str]) -> (tempfile::TempDir, SqliteMetadata) {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("db.sqlite")).await.unwrap();
        let bucket =
            Bucket { name: "b".into(), created_ms: 0, notifications: vec![], tags: BTreeMap::new(), lifecycle: vec![] };
        meta.create_bucket(&bucket).await.unwrap();
        for k in keys {
            let o = ObjectInfo {
                bucket: "b".into(),
                key: k.to_string(),
                file: format!("file-{k}"),
                size: 0,
                etag: String::new(),
                modified_ms: 0,
                headers: Default::default(),
                tags: BTreeMap::new(),
                checksum: None,
                part_sizes: vec![],
                data: None,
            };
            meta.put_object(&o, &[]).await.unwrap();
        }
        (dir, meta)
    }

    fn names(page: &Page) -> Vec<&str> {
        page.objects.iter().map(|o| o.key.as_str()).chain(page.prefixes.iter().map(String::as_str)).collect()
    }

    #[tokio::test]
    async fn delimited_pages_give_each_prefix_once() {
        let (_dir, meta) = store(&["a", "p/1", "p/2", "p/q/3", "z"]).await;
        let first = list(&meta, "b", "", Some("/"), "", 2).await.unwrap();
        assert_eq!(names(&first), ["a", "p/"]);
        // The next page starts after the prefix, by continuation token or by
        // the prefix itself as a marker (ListObjects' NextMarker).
        let next = list(&meta, "b", "", Some("/"), first.next.as_deref().unwrap(), 2).await.unwrap();
        assert_eq!(names(&next), ["z"]);
        let by_marker = list(&meta, "b", "", Some("/"), "p/", 2).await.unwrap();
        assert_eq!(names(&by_marker), ["z"]);
        let nested = list(&meta, "b", "p/", Some("/"), "", 10).await.unwrap();
        assert_eq!(names(&nested), ["p/1", "p/2", "p/q/"]);
        assert!(nested.next.is_none());
    }
}
