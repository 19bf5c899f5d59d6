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

/// Sorts after every key that starts with `prefix`, and before every other
/// key after them: `prefix` followed by more of the largest character
/// (U+10FFFF) than a key, at most 1,024 bytes, can hold after it. (One of
/// them was not past a key that has one, whose listing then gave the same
/// common prefix over and over.)
pub fn past(prefix: &str) -> String {
    let mut cursor = String::with_capacity(prefix.len() + 4 * padding(prefix.len()));
    cursor.push_str(prefix);
    cursor.extend(std::iter::repeat_n(char::MAX, padding(prefix.len())));
    cursor
}

/// How many U+10FFFF [`past`] puts after a prefix of `len` bytes.
fn padding(len: usize) -> usize {
    crate::s3::KEY_MAX.saturating_sub(len) / 4 + 1
}

/// The prefix a cursor made by [`past`] goes past, or the cursor itself (a key).
pub fn before_past(cursor: &str) -> &str {
    let run = cursor.chars().rev().take_while(|c| *c == char::MAX).count();
    let prefix = |k: usize| &cursor[..cursor.len() - 4 * k];
    // The shortest such prefix: a cursor past `p/` is also one past `p/`
    // and 255 U+10FFFF (which a key of 1,024 bytes cannot go past).
    (1..=run).rev().map(prefix).find(|p| padding(p.len()) == (cursor.len() - p.len()) / 4).unwrap_or(cursor)
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
    loop {
        let batch = meta.list_objects(bucket, prefix, &cursor, BATCH).await?;
        let full = batch.len() == BATCH;
        // The common prefix whose keys are being passed over: those in this
        // batch one by one, the rest (once it runs out) by reading on from
        // past it. Reading on at each prefix instead made a page of 1,000
        // prefixes read a million rows.
        let mut skipping: Option<String> = None;
        for o in batch {
            if let Some(common) = &skipping {
                if o.key.starts_with(common.as_str()) {
                    continue;
                }
                skipping = None;
            }
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
                if common != after {
                    last = Some(cursor.clone());
                    page.prefixes.push(common.clone());
                }
                skipping = Some(common);
                continue;
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
        let bucket = Bucket {
            name: "b".into(),
            created_ms: 0,
            notifications: vec![],
            tags: BTreeMap::new(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        meta.create_bucket(&bucket, usize::MAX).await.unwrap();
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

    #[tokio::test]
    async fn prefixes_within_a_batch_and_across_batches_are_given_once_each() {
        // `a/` holds more than a batch; `f/…` are many small prefixes in one.
        let mut keys: Vec<String> = (0..BATCH + 500).map(|i| format!("a/{i:05}")).collect();
        keys.extend(["b".to_string(), "c/1".into(), "c/2".into(), "d".into()]);
        keys.extend((0..300).flat_map(|i| [format!("f/{i:03}/x"), format!("f/{i:03}/y")]));
        let (_dir, meta) = store(&keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let whole = list(&meta, "b", "", Some("/"), "", 1000).await.unwrap();
        assert_eq!(names(&whole), ["b", "d", "a/", "c/", "f/"]);
        for size in [1, 7, 1000] {
            let (mut seen, mut after) = (Vec::new(), String::new());
            loop {
                let page = list(&meta, "b", "f/", Some("/"), &after, size).await.unwrap();
                seen.extend(page.prefixes);
                match page.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
            assert_eq!(seen, (0..300).map(|i| format!("f/{i:03}/")).collect::<Vec<_>>(), "pages of {size}");
        }
    }

    #[tokio::test]
    async fn keys_holding_the_largest_character_are_listed_once() {
        let max = char::MAX;
        let odd = format!("p/{max}x");
        let longest = format!("q/{}", max.to_string().repeat(255));
        let (_dir, meta) = store(&["p/1", &odd, &longest, "z"]).await;
        let all = list(&meta, "b", "", Some("/"), "", 10).await.unwrap();
        assert_eq!(names(&all), ["z", "p/", "q/"], "objects, then common prefixes");
        let first = list(&meta, "b", "", Some("/"), "", 1).await.unwrap();
        let next = list(&meta, "b", "", Some("/"), first.next.as_deref().unwrap(), 10).await.unwrap();
        assert_eq!(names(&next), ["z", "q/"]);
        let by_marker = list(&meta, "b", "", Some("/"), &past("p/"), 10).await.unwrap();
        assert_eq!(names(&by_marker), ["z", "q/"]);
        let nested = list(&meta, "b", "p/", Some("/"), "", 10).await.unwrap();
        assert_eq!(names(&nested), ["p/1", odd.as_str()]);
        assert_eq!(before_past(&past("p/")), "p/");
        assert_eq!(before_past(&odd), odd, "a key is its own");
    }
}
