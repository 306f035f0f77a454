//! Decide: which layers the cache can serve, which must be built, and which
//! cached trees must be on disk. Decided from the plan's keys before
//! anything is built; a blob found corrupt when a tree is unpacked turns
//! its hit into a miss (`restore_tree`).

use std::fs;

use anyhow::{Context, Result};

use super::plan::LayerPlan;
use crate::cache::{Cache, LayerRecord};
use crate::image::ImageDefinition;
use crate::index::PackageIndex;
use crate::progress::Progress;
use crate::seal;

/// What the cache holds for a plan.
#[derive(Debug)]
pub struct Decision {
    /// Per layer: the cached record that serves it; None: build it.
    pub reuse: Vec<Option<LayerRecord>>,
    /// Per layer: whether its tree must be on disk (a lower of a layer to
    /// build, or part of a rootfs or output to make).
    pub needs_tree: Vec<bool>,
    /// Cache key of the rootfs tarball of the final layer.
    pub rootfs_key: String,
    /// The cached rootfs tarball for that key, when its blob is there.
    pub rootfs: Option<LayerRecord>,
}

/// Whether a cached layer may serve: its blob is there and every package it
/// installed is still the version the index offers.
pub fn reusable(cache: &Cache, idx: &PackageIndex, key: &str) -> Option<LayerRecord> {
    let rec = cache.record(key)?;
    if !cache.blob(&rec.digest).is_file() {
        return None;
    }
    let current = rec
        .packages
        .iter()
        .all(|p| idx.get(&p.name).is_some_and(|q| q.version == p.version));
    current.then_some(rec)
}

/// `bootable`: outputs other than the rootfs tarball are asked for (they
/// are made from the trees, so every tree is needed).
pub fn decide(cache: &Cache, idx: &PackageIndex, plans: &[LayerPlan], bootable: bool) -> Decision {
    let n = plans.len();
    let reuse: Vec<Option<LayerRecord>> =
        plans.iter().map(|l| reusable(cache, idx, &l.key)).collect();
    let final_key = plans.last().map(|l| l.key.as_str()).unwrap_or_default();
    let rootfs_key = format!("rootfs-{}-{final_key}", seal::ROOTFS_FORMAT);
    let rootfs = cache
        .record(&rootfs_key)
        .filter(|r| cache.blob(&r.digest).is_file());
    let need_all_trees = rootfs.is_none() || bootable;
    let needs_tree: Vec<bool> = (0..n)
        .map(|i| need_all_trees || reuse[i + 1..].iter().any(|r| r.is_none()))
        .collect();
    Decision {
        reuse,
        needs_tree,
        rootfs_key,
        rootfs,
    }
}

impl Decision {
    /// Layers to build that install packages (a layer of files only, like
    /// firstboot, touches no package): their packages are fetched up front.
    pub fn to_fetch(&self, img: &ImageDefinition, plans: &[LayerPlan]) -> Vec<usize> {
        (0..plans.len())
            .filter(|i| self.reuse[*i].is_none())
            .filter(|i| {
                plans[*i]
                    .layer
                    .is_some_and(|l| l == 0 || !img.layers[l].packages.is_empty())
            })
            .collect()
    }

    /// The cached rootfs tarball, when every layer under it was reused.
    pub fn rootfs_for(&self, records: &[LayerRecord]) -> Option<&LayerRecord> {
        let same = records.len() == self.reuse.len()
            && records
                .iter()
                .zip(&self.reuse)
                .all(|(a, b)| Some(a) == b.as_ref());
        self.rootfs.as_ref().filter(|_| same)
    }
}

/// Put the tree of a reused layer on disk from its blob, checking the
/// digest. Ok(false): the blob is corrupt; it and the record are gone and
/// the layer is to be built.
pub fn restore_tree(
    cache: &Cache,
    plan: &LayerPlan,
    rec: &LayerRecord,
    p: &mut Progress,
) -> Result<bool> {
    let tree = cache.tree(&plan.key);
    let tmp = cache.trees().join(format!(".x-{}", plan.key));
    let r = p.step(&plan.name, "extract", || {
        seal::extract(&cache.blob(&rec.digest), &rec.digest, &tmp)
    });
    match r {
        Ok(()) => {
            fs::rename(&tmp, &tree).with_context(|| format!("renaming into {}", tree.display()))?;
            Ok(true)
        }
        Err(e) if e.downcast_ref::<seal::Corrupt>().is_some() => {
            p.line(&plan.name, &format!("{e:#}; rebuilding"));
            crate::fsutil::remove_any(&tmp)?;
            crate::fsutil::remove_any(&cache.blob(&rec.digest))?;
            cache.drop_record(&plan.key)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::plan::tests::image;
    use crate::cache::InstalledPackage;
    use crate::progress::Mode;

    fn index(text: &str) -> PackageIndex {
        let mut idx = PackageIndex::default();
        idx.parse(text, "amd64");
        idx
    }

    const INDEX: &str = "Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 2\nArchitecture: amd64\n";

    fn plans(names: &[&str]) -> Vec<LayerPlan> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| LayerPlan {
                name: n.to_string(),
                key: format!("key-{n}"),
                packages: Vec::new(),
                layer: (i + 1 < names.len()).then_some(i),
                closure: Vec::new(),
            })
            .collect()
    }

    /// A record of `key` whose blob holds `blob`, with packages a and b.
    fn cached(cache: &Cache, key: &str, blob: &[u8]) -> LayerRecord {
        let digest = crate::image::sha256_hex(blob);
        fs::write(cache.blob(&digest), blob).expect("blob");
        let rec = LayerRecord {
            name: key.into(),
            key: key.into(),
            digest,
            size: blob.len() as u64,
            packages: ["a 1", "b 2"]
                .iter()
                .map(|s| {
                    let (name, version) = s.split_once(' ').expect("pair");
                    InstalledPackage {
                        name: name.into(),
                        version: version.into(),
                        arch: "all".into(),
                    }
                })
                .collect(),
        };
        cache.put_record(&rec).expect("record");
        rec
    }

    #[test]
    fn a_valid_record_with_its_blob_is_a_hit() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let rec = cached(&cache, "key-base", b"layer");
        assert_eq!(reusable(&cache, &index(INDEX), "key-base"), Some(rec));
        assert_eq!(reusable(&cache, &index(INDEX), "key-other"), None);
    }

    #[test]
    fn a_missing_blob_or_a_corrupt_record_is_a_miss() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let rec = cached(&cache, "key-base", b"layer");
        fs::remove_file(cache.blob(&rec.digest)).expect("rm");
        assert_eq!(reusable(&cache, &index(INDEX), "key-base"), None);
        cached(&cache, "key-top", b"top");
        fs::write(cache.layers().join("key-top.json"), b"{\"name\": ").expect("write");
        assert_eq!(reusable(&cache, &index(INDEX), "key-top"), None);
    }

    #[test]
    fn a_package_the_index_moved_or_dropped_is_a_miss() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        cached(&cache, "key-base", b"layer");
        let moved = "Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 3\nArchitecture: amd64\n";
        assert_eq!(reusable(&cache, &index(moved), "key-base"), None);
        let dropped = "Package: a\nVersion: 1\nArchitecture: all\n";
        assert_eq!(reusable(&cache, &index(dropped), "key-base"), None);
    }

    #[test]
    fn a_corrupt_blob_is_a_miss_once_unpacked() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let rec = cached(&cache, "key-base", b"layer");
        // same name, other bytes: the digest no longer matches
        fs::write(cache.blob(&rec.digest), b"rotten").expect("write");
        let plan = &plans(&["base", "finalize"])[0];
        let mut p = Progress::new(Mode::Quiet);
        assert!(!restore_tree(&cache, plan, &rec, &mut p).expect("restore"));
        assert!(!cache.blob(&rec.digest).exists());
        assert!(cache.record("key-base").is_none());
        assert!(!cache.tree("key-base").exists());
        assert_eq!(fs::read_dir(cache.trees()).expect("ls").count(), 0);
        assert_eq!(reusable(&cache, &index(INDEX), "key-base"), None);
        assert_eq!(p.timings.len(), 1, "timed as extract");
        assert_eq!(p.timings[0].step, "extract");
    }

    #[test]
    fn trees_are_needed_below_a_layer_to_build_or_for_a_new_rootfs() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let idx = index(INDEX);
        let plans = plans(&["base", "db", "top", "finalize"]);
        for key in ["key-base", "key-db", "key-finalize"] {
            cached(&cache, key, key.as_bytes());
        }
        let d = decide(&cache, &idx, &plans, false);
        let hits: Vec<bool> = d.reuse.iter().map(Option::is_some).collect();
        assert_eq!(hits, [true, true, false, true]);
        // no rootfs cached: every tree goes into the new one
        assert_eq!(d.rootfs, None);
        assert_eq!(d.needs_tree, [true; 4]);
        let rootfs_key = format!("rootfs-{}-key-finalize", seal::ROOTFS_FORMAT);
        assert_eq!(d.rootfs_key, rootfs_key);
        let rootfs = cached(&cache, &rootfs_key, b"rootfs");
        let d = decide(&cache, &idx, &plans, false);
        assert_eq!(d.rootfs, Some(rootfs));
        // the lowers of top, which is built (and makes its own tree)
        assert_eq!(d.needs_tree, [true, true, false, false]);
        // everything cached: no tree is needed, unless outputs are made from them
        cached(&cache, "key-top", b"top");
        let d = decide(&cache, &idx, &plans, false);
        assert_eq!(d.needs_tree, [false; 4]);
        assert_eq!(decide(&cache, &idx, &plans, true).needs_tree, [true; 4]);
    }

    #[test]
    fn the_cached_rootfs_serves_only_the_layers_it_was_sealed_from() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let idx = index(INDEX);
        let plans = plans(&["base", "finalize"]);
        let base = cached(&cache, "key-base", b"base");
        let fin = cached(&cache, "key-finalize", b"fin");
        cached(
            &cache,
            &format!("rootfs-{}-key-finalize", seal::ROOTFS_FORMAT),
            b"r",
        );
        let d = decide(&cache, &idx, &plans, false);
        assert!(d.rootfs_for(&[base.clone(), fin.clone()]).is_some());
        let rebuilt = LayerRecord {
            digest: "other".into(),
            ..fin
        };
        assert!(d.rootfs_for(&[base, rebuilt]).is_none());
    }

    #[test]
    fn only_layers_to_build_that_install_packages_are_fetched_for() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(t.path(), None).expect("cache");
        let mut img = image(&["base", "db", "files"]);
        img.layers[2].packages.clear();
        let plans = plans(&["base", "db", "files", "finalize"]);
        let d = decide(&cache, &index(INDEX), &plans, false);
        assert_eq!(d.to_fetch(&img, &plans), [0, 1]);
        cached(&cache, "key-base", b"base");
        let d = decide(&cache, &index(INDEX), &plans, false);
        assert_eq!(d.to_fetch(&img, &plans), [1]);
        // the base installs minbase even when it asks for nothing
        img.layers[0].packages.clear();
        fs::remove_file(cache.layers().join("key-base.json")).expect("rm");
        let d = decide(&cache, &index(INDEX), &plans, false);
        assert_eq!(d.to_fetch(&img, &plans), [0, 1]);
    }
}
