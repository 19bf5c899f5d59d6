use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// One tar entry as a test writes it; the name is written raw, so hostile
/// names (`..`, absolute) get through as a hostile tool would write them.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match e {
            E::File(n, d) => (n, tar::EntryType::Regular, d, None),
            E::Dir(n) => (n, tar::EntryType::Directory, b"", None),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
            E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t)),
            E::Char(n) => (n, tar::EntryType::Char, b"", None),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if matches!(e, E::Dir(_)) { 0o755 } else { 0o4755 });
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

#[derive(Clone, Copy)]
enum Z {
    Plain,
    Gzip,
    Zstd,
}

/// Writes a layer blob; returns it with its real diff_id.
fn layer(dir: &Path, tar: &[u8], z: Z) -> Layer {
    let (bytes, media_type) = match z {
        Z::Plain => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Z::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            (e.finish().expect("gzip"), "application/vnd.oci.image.layer.v1.tar+gzip")
        }
        Z::Zstd => (zstd::encode_all(tar, 1).expect("zstd"), "application/vnd.oci.image.layer.v1.tar+zstd"),
    };
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let path = dir.join(digest.replace(':', "-"));
    std::fs::write(&path, &bytes).expect("write layer");
    Layer {
        digest,
        media_type: media_type.into(),
        path,
        diff_id: format!("sha256:{}", hex::encode(Sha256::digest(tar))),
    }
}

fn digest(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

/// Nothing of a refused image is left: no root, no staging leftovers.
fn assert_nothing_left(data: &Path) {
    let roots = std::fs::read_dir(data.join("roots")).map(|d| d.count()).unwrap_or(0);
    let staging = std::fs::read_dir(data.join("staging")).map(|d| d.count()).unwrap_or(0);
    assert_eq!((roots, staging), (0, 0), "partial state left behind");
}

#[tokio::test]
async fn layers_of_every_compression_flatten_with_whiteouts_and_opaque_directories() {
    let t = tempfile::tempdir().expect("tmp");
    let lower = tar_of(&[
        E::Dir("etc"),
        E::File("etc/keep", b"keep"),
        E::File("etc/gone", b"gone"),
        E::Dir("app"),
        E::File("app/old", b"old"),
        E::Dir("app/sub"),
        E::File("app/sub/x", b"x"),
        E::File("bin/tool", b"v1"),
    ]);
    let middle = tar_of(&[
        E::File("etc/.wh.gone", b""),
        // Opaque after one of its own entries: that entry stays.
        E::File("app/new", b"new"),
        E::File("app/.wh..wh..opq", b""),
        E::Symlink("etc/link", "/etc/keep"),
    ]);
    let top = tar_of(&[E::File("./bin/tool", b"v2"), E::Hardlink("bin/same", "bin/tool"), E::Char("dev/null")]);
    let layers =
        vec![layer(t.path(), &lower, Z::Gzip), layer(t.path(), &middle, Z::Zstd), layer(t.path(), &top, Z::Plain)];
    let images = Images::open(t.path().join("data"), Limits::default());
    let root = images.root(&digest(1), &layers).await.expect("flattened").path().to_path_buf();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    assert_eq!(read("etc/keep").as_deref(), Some("keep"));
    assert_eq!(read("etc/gone"), None, "whiteout applied");
    assert_eq!(read("app/new").as_deref(), Some("new"), "the opaque layer's own entry stays");
    assert!(!root.join("app/old").exists() && !root.join("app/sub").exists(), "opaque directory hid lower entries");
    assert_eq!(std::fs::read_link(root.join("etc/link")).expect("link"), Path::new("/etc/keep"));
    assert_eq!(read("bin/tool").as_deref(), Some("v2"));
    assert_eq!(read("bin/same").as_deref(), Some("v2"), "hardlink inside the root");
    assert!(!root.join("dev/null").exists(), "device node skipped");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("bin/tool")).expect("meta").permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
    for dir in MOUNT_POINTS {
        assert!(root.join(dir).is_dir(), "{dir} exists for the sandbox to mount on");
    }
    assert_eq!(root, t.path().join("data/roots").join(hex::encode([1u8; 32])));
}

#[tokio::test]
async fn a_layer_not_matching_its_diff_id_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().expect("tmp");
    let mut l = layer(t.path(), &tar_of(&[E::File("a", b"a")]), Z::Gzip);
    l.diff_id = digest(9);
    let images = Images::open(t.path().join("data"), Limits::default());
    let err = images.root(&digest(1), &[l]).await.expect_err("refused");
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
    assert_nothing_left(&t.path().join("data"));
}

#[tokio::test]
async fn hostile_entries_never_escape_the_root() {
    let t = tempfile::tempdir().expect("tmp");
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    let out = outside.display().to_string();
    let link_out = tar_of(&[E::Symlink("esc", &out)]);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("dot-dot", vec![tar_of(&[E::File("a/../../evil", b"x")])]),
        ("absolute", vec![tar_of(&[E::File(&format!("{out}/evil"), b"x")])]),
        ("through a symlink of the same layer", vec![tar_of(&[E::Symlink("esc", &out), E::File("esc/evil", b"x")])]),
        ("through a lower layer's symlink", vec![link_out.clone(), tar_of(&[E::File("esc/evil", b"x")])]),
        ("whiteout through a symlink", vec![link_out.clone(), tar_of(&[E::File("esc/.wh.victim", b"")])]),
        ("whiteout of the root's parent", vec![tar_of(&[E::File(".wh..", b"")])]),
        ("whiteout of a directory's parent", vec![tar_of(&[E::Dir("a"), E::File("a/.wh..", b"")])]),
        ("hardlink out", vec![tar_of(&[E::Hardlink("h", "../outside/victim")])]),
        ("hardlink through a symlink", vec![link_out, tar_of(&[E::Hardlink("h", "esc/victim")])]),
    ];
    std::fs::write(outside.join("victim"), b"safe").expect("victim");
    for (i, (what, tars)) in cases.into_iter().enumerate() {
        let data = t.path().join(format!("data{i}"));
        let layers: Vec<Layer> = tars.iter().map(|tar| layer(t.path(), tar, Z::Plain)).collect();
        let err = Images::open(data.clone(), Limits::default()).root(&digest(1), &layers).await.expect_err(what);
        assert!(matches!(err, ImageError::Escape { .. }), "{what}: {err}");
        assert_nothing_left(&data);
        assert!(!outside.join("evil").exists(), "{what} wrote outside");
        assert_eq!(std::fs::read(outside.join("victim")).expect("victim"), b"safe", "{what}");
    }
}

#[tokio::test]
async fn a_layer_inflating_past_the_limit_is_refused_as_it_inflates() {
    let t = tempfile::tempdir().expect("tmp");
    let zeros = vec![0u8; 8 << 20];
    let l = layer(t.path(), &tar_of(&[E::File("bomb", &zeros)]), Z::Gzip);
    // The blob is within the limit; what it inflates to is not.
    assert!(std::fs::metadata(&l.path).expect("blob").len() < 1 << 20, "a small blob");
    let images = Images::open(t.path().join("data"), Limits { max_unpacked_bytes: 1 << 20, ..Limits::default() });
    let err = images.root(&digest(1), &[l]).await.expect_err("refused");
    assert!(matches!(err, ImageError::TooLarge { limit } if limit == 1 << 20), "{err}");
    assert_nothing_left(&t.path().join("data"));
}

#[tokio::test]
async fn layers_of_more_entries_than_the_limit_are_refused() {
    let t = tempfile::tempdir().expect("tmp");
    // Two layers of three empty files each: six entries, one past the limit.
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let layers: Vec<Layer> = names
        .chunks(3)
        .map(|c| {
            let entries: Vec<E> = c.iter().map(|n| E::File(n, b"")).collect();
            layer(t.path(), &tar_of(&entries), Z::Gzip)
        })
        .collect();
    let images = Images::open(t.path().join("data"), Limits { max_entries: 5, ..Limits::default() });
    let err = images.root(&digest(1), &layers).await.expect_err("refused");
    assert!(matches!(err, ImageError::TooManyEntries { limit: 5 }), "{err}");
    assert_nothing_left(&t.path().join("data"));
    let images = Images::open(t.path().join("data"), Limits { max_entries: 6, ..Limits::default() });
    images.root(&digest(1), &layers).await.expect("six are allowed");
}

#[tokio::test]
async fn unknown_media_types_and_bad_digests_are_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let mut l = layer(t.path(), &tar_of(&[E::File("a", b"a")]), Z::Plain);
    l.media_type = "application/vnd.oci.image.layer.v1.tar+lz4".into();
    let images = Images::open(t.path().join("data"), Limits::default());
    let err = images.root(&digest(1), std::slice::from_ref(&l)).await.expect_err("media type");
    assert!(matches!(err, ImageError::UnknownMediaType { .. }), "{err}");
    let err = images.root("sha256:../../etc", &[l]).await.expect_err("digest");
    assert!(matches!(err, ImageError::BadDigest(_)), "{err}");
    assert_nothing_left(&t.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_unpack_once_and_retain_removes_the_unused() {
    let t = tempfile::tempdir().expect("tmp");
    let files: Vec<(String, Vec<u8>)> = (0..200).map(|i| (format!("f{i}"), vec![i as u8; 4096])).collect();
    let entries: Vec<E> = files.iter().map(|(n, d)| E::File(n, d)).collect();
    let layers = vec![layer(t.path(), &tar_of(&entries), Z::Gzip)];
    let images = Arc::new(Images::open(t.path().join("data"), Limits::default()));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (images, layers) = (images.clone(), layers.clone());
            tokio::spawn(async move { images.root(&digest(1), &layers).await })
        })
        .collect();
    let mut roots = HashSet::new();
    for task in tasks {
        // A second unpacking would fail to rename over the first.
        roots.insert(task.await.expect("join").expect("root").path().to_path_buf());
    }
    assert_eq!(roots.len(), 1);
    // Known from disk once unpacked: the blobs are no longer read.
    std::fs::remove_file(&layers[0].path).expect("rm blob");
    let again = Images::open(t.path().join("data"), Limits::default());
    assert!(again.root(&digest(1), &layers).await.is_ok());
    let other = vec![layer(t.path(), &tar_of(&[E::File("b", b"b")]), Z::Plain)];
    let kept = again.root(&digest(2), &other).await.expect("second image");
    let removed = again.retain(&HashSet::from([digest(2)])).await.expect("retain");
    assert_eq!(removed, 1);
    assert!(kept.path().is_dir() && !roots.iter().any(|r| r.exists()));
    assert_eq!(std::fs::read_dir(t.path().join("data/staging")).map(|d| d.count()).unwrap_or(0), 0);
    // A root something runs in stays until its last holder lets go.
    assert_eq!(again.retain(&HashSet::new()).await.expect("retain"), 0);
    assert!(kept.path().is_dir());
    let path = kept.path().to_path_buf();
    drop(kept);
    assert_eq!(again.retain(&HashSet::new()).await.expect("retain"), 1);
    assert!(!path.exists());
}

/// The unpack rate of a rootfs-like image (many small files, some large),
/// printed for BENCHMARKS.md; asserts only that it unpacked everything.
#[tokio::test]
async fn unpack_rate() {
    let t = tempfile::tempdir().expect("tmp");
    let small = vec![7u8; 16 << 10];
    let large = vec![9u8; 16 << 20];
    let mut names: Vec<String> = (0..2000).map(|i| format!("usr/lib/d{}/f{i}", i % 50)).collect();
    names.extend((0..4).map(|i| format!("usr/bin/big{i}")));
    let entries: Vec<E> = names.iter().map(|n| E::File(n, if n.contains("big") { &large } else { &small })).collect();
    let tar = tar_of(&entries);
    let layers = vec![layer(t.path(), &tar, Z::Gzip)];
    let began = std::time::Instant::now();
    let images = Images::open(t.path().join("data"), Limits::default());
    let root = images.root(&digest(1), &layers).await.expect("root").path().to_path_buf();
    let secs = began.elapsed().as_secs_f64();
    println!("unpacked {} MB of rootfs in {secs:.2} s: {:.0} MB/s", tar.len() >> 20, tar.len() as f64 / 1e6 / secs);
    assert!(root.join("usr/bin/big3").is_file() && root.join("usr/lib/d49/f1999").is_file());
}
