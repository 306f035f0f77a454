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
