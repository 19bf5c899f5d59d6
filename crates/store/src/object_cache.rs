//! The object store's read cache: buckets, and the objects read last (with
//! the bytes of small ones), so that a GET of a hot object reads nothing
//! from SQLite. Bounded in entries and in bytes; the least recently read go
//! first.
//!
//! This process is the database's only writer, and every bucket and object
//! write goes through [`crate::ObjectMeta`], which forgets what it touches
//! before and after committing. A generation, taken before a read of the
//! database, stops that read from caching what a write replaced meanwhile.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use nimbus_core::objects::{Bucket, ObjectInfo};

const MAX_OBJECTS: usize = 8192;
const MAX_BUCKETS: usize = 4096;
/// What the objects' entries may hold: their keys, metadata, tags and
/// small objects' bytes.
const MAX_BYTES: usize = 64 << 20;

pub(crate) struct ObjectCache {
    inner: Mutex<Inner>,
}

struct Inner {
    generation: u64,
    /// Names looked up, found or not (any name reaches a lookup).
    buckets: lru::LruCache<String, Option<Bucket>>,
    objects: lru::LruCache<(String, String), Option<ObjectInfo>>,
    /// What `objects` holds, by [`size`].
    bytes: usize,
}

/// What an object's entry holds beyond its fixed size: its name (a key
/// looked up and not found too), metadata, tags, part sizes and a small
/// object's bytes.
fn size((bucket, key): &(String, String), o: &Option<ObjectInfo>) -> usize {
    let held = o.as_ref().map_or(0, |o| {
        let pairs =
            |m: &std::collections::BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        o.data.as_ref().map_or(0, |d| d.len())
            + pairs(&o.headers.metadata)
            + pairs(&o.tags)
            + o.part_sizes.len() * 8
            + o.etag.len()
            + o.file.len()
    });
    bucket.len() + key.len() + held
}

impl Default for ObjectCache {
    fn default() -> Self {
        let cap = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let inner = Inner {
            generation: 0,
            buckets: lru::LruCache::new(cap(MAX_BUCKETS)),
            objects: lru::LruCache::new(cap(MAX_OBJECTS)),
            bytes: 0,
        };
        Self { inner: Mutex::new(inner) }
    }
}

impl ObjectCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before reading the database; see [`ObjectCache::keep_object`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub fn bucket(&self, name: &str) -> Option<Option<Bucket>> {
        self.lock().buckets.get(name).cloned()
    }

    pub fn keep_bucket(&self, generation: u64, name: &str, b: Option<Bucket>) {
        let mut c = self.lock();
        if c.generation == generation {
            c.buckets.put(name.to_string(), b);
        }
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<Option<ObjectInfo>> {
        self.lock().objects.get(&(bucket.to_string(), key.to_string())).cloned()
    }

    /// Caches what a read found, unless a write came since `generation`.
    pub fn keep_object(&self, generation: u64, bucket: &str, key: &str, o: Option<ObjectInfo>) {
        let mut c = self.lock();
        if c.generation != generation {
            return;
        }
        let name = (bucket.to_string(), key.to_string());
        c.bytes += size(&name, &o);
        if let Some((old_name, old)) = c.objects.push(name, o) {
            c.bytes -= size(&old_name, &old);
        }
        while c.bytes > MAX_BYTES {
            match c.objects.pop_lru() {
                Some((old_name, old)) => c.bytes -= size(&old_name, &old),
                None => break,
            }
        }
    }

    /// Forgets a bucket (with `key: None`) or an object now, and again when
    /// the guard is dropped: held around a write, so that no reader keeps
    /// what it read before the commit.
    pub fn around<'a>(&'a self, bucket: &'a str, key: Option<&'a str>) -> Around<'a> {
        let around = Around { cache: self, bucket, key };
        around.forget();
        around
    }
}

pub(crate) struct Around<'a> {
    cache: &'a ObjectCache,
    bucket: &'a str,
    key: Option<&'a str>,
}

impl Around<'_> {
    fn forget(&self) {
        let mut c = self.cache.lock();
        c.generation += 1;
        match self.key {
            None => {
                c.buckets.pop(self.bucket);
            }
            Some(key) => {
                let name = (self.bucket.to_string(), key.to_string());
                if let Some(old) = c.objects.pop(&name) {
                    c.bytes -= size(&name, &old);
                }
            }
        }
    }
}

impl Drop for Around<'_> {
    fn drop(&mut self) {
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, bytes: usize) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: key.into(),
            file: key.into(),
            size: bytes as u64,
            etag: String::new(),
            modified_ms: 0,
            headers: Default::default(),
            tags: Default::default(),
            checksum: None,
            part_sizes: vec![],
            data: Some(vec![0; bytes].into()),
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = ObjectCache::default();
        let before = cache.generation();
        drop(cache.around("b", Some("k")));
        cache.keep_object(before, "b", "k", Some(object("k", 1)));
        assert_eq!(cache.object("b", "k"), None);
        cache.keep_object(cache.generation(), "b", "k", Some(object("k", 1)));
        assert!(cache.object("b", "k").is_some());
        drop(cache.around("b", Some("k")));
        assert_eq!(cache.object("b", "k"), None, "a write forgets what it touched");
    }

    #[test]
    fn bytes_held_stay_bounded() {
        let cache = ObjectCache::default();
        for i in 0..(MAX_BYTES / (1 << 20) + 8) {
            cache.keep_object(cache.generation(), "b", &i.to_string(), Some(object(&i.to_string(), 1 << 20)));
        }
        let c = cache.lock();
        assert!(c.bytes <= MAX_BYTES && c.bytes >= MAX_BYTES - (1 << 20), "{}", c.bytes);
        assert!(c.objects.peek(&("b".into(), "0".into())).is_none(), "the least recently read went first");
    }

    #[test]
    fn names_looked_up_and_not_found_are_bounded_too() {
        // Any name reaches a lookup: 16 KB keys and bucket names that do not exist.
        let cache = ObjectCache::default();
        let long = "k".repeat(16 << 10);
        for i in 0..MAX_BYTES / (16 << 10) + 100 {
            cache.keep_object(cache.generation(), "b", &format!("{long}{i}"), None);
            cache.keep_bucket(cache.generation(), &format!("{long}{i}"), None);
        }
        let c = cache.lock();
        assert!(c.bytes <= MAX_BYTES, "{}", c.bytes);
        assert!(c.objects.len() < MAX_BYTES / (16 << 10) && c.buckets.len() == MAX_BUCKETS);
    }
}
