//! Seal and publish: layer blobs sealed in the background, the rootfs as
//! one normalized tarball, the outputs, manifest.json and the lock. What is
//! published is on disk (file and directory fsynced) before the rename
//! that makes it visible.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::decide::Decision;
use super::execute::Layers;
use crate::cache::{Cache, InstalledPackage, LayerRecord};
use crate::cli::OutputKind;
use crate::fsutil;
use crate::image::ImageDefinition;
use crate::manifest::{BuilderInfo, Lock, Manifest, ManifestLayer};
use crate::mounts::Mounts;
use crate::outputs::{OutputContext, OutputRecord};
use crate::progress::Progress;
use crate::seal::{self, TreeKind};

/// A layer built, its blob still being sealed in the background.
pub struct PendingSeal {
    rec: LayerRecord,
    handle: std::thread::JoinHandle<(Result<seal::Sealed>, f64)>,
}

impl PendingSeal {
    pub fn finish(self, cache: &Cache, p: &mut Progress) -> Result<LayerRecord> {
        let (r, secs) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the seal thread of {} panicked", self.rec.name))?;
        let sealed = r.with_context(|| format!("sealing layer {}", self.rec.name))?;
        p.timings.push(crate::progress::Timing {
            layer: self.rec.name.clone(),
            step: "seal-bg".into(),
            seconds: secs,
        });
        let rec = LayerRecord {
            digest: sealed.digest,
            size: sealed.size,
            ..self.rec
        };
        cache.put_record(&rec)?;
        p.line(
            &rec.name,
            &format!(
                "sealed sha256:{} ({:.1} MB, {secs:.1}s in the background)",
                &rec.digest[..16],
                rec.size as f64 / 1e6
            ),
        );
        Ok(rec)
    }
}

/// Seal the finished tree `dest` of `rec` into a blob in the background.
pub fn seal_layer(cache: &Cache, dest: PathBuf, rec: LayerRecord, epoch: u64) -> PendingSeal {
    let blobs = cache.blobs();
    let handle = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = seal::seal(&dest, TreeKind::Layer, epoch, &blobs);
        (r, t.elapsed().as_secs_f64())
    });
    PendingSeal { rec, handle }
}

/// The rootfs tarball of `layers`: the cached one when every layer was
/// reused, else sealed from their overlay. Its bool: just sealed.
pub fn rootfs(
    cache: &Cache,
    img: &ImageDefinition,
    layers: &Layers,
    decision: &Decision,
    p: &mut Progress,
) -> Result<(LayerRecord, bool)> {
    if let Some(r) = decision.rootfs_for(&layers.records) {
        p.line("rootfs", "reused");
        return Ok((r.clone(), false));
    }
    let work = cache.work_dir("rootfs")?;
    let merged = work.join("merged");
    let top_first = layers.top_first();
    let (sealed, stats) = p.step("rootfs", "seal", || {
        let mut m = Mounts::default();
        m.overlay_ro(&top_first, &merged)?;
        let s = seal::seal_chunked(&merged, img.epoch, &cache.blobs(), &cache.chunks())?;
        m.unmount_all()?;
        Ok(s)
    })?;
    p.line(
        "rootfs",
        &format!(
            "built ({} of {} zstd frames reused)",
            stats.reused, stats.chunks
        ),
    );
    let rec = LayerRecord {
        name: "rootfs".into(),
        key: decision.rootfs_key.clone(),
        digest: sealed.digest,
        size: sealed.size,
        packages: Vec::new(),
    };
    cache.put_record(&rec)?;
    Ok((rec, true))
}

/// `<out_dir>/rootfs.tar.zst`: the blob, hard-linked (or copied) beside it,
/// fsynced, renamed into place. A blob taken from the cache (`fresh`
/// false) is checked first; one just sealed was hashed as written.
pub fn rootfs_output(
    cache: &Cache,
    rootfs: &LayerRecord,
    fresh: bool,
    out_dir: &Path,
) -> Result<OutputRecord> {
    let blob = cache.blob(&rootfs.digest);
    if !fresh && !seal::verify_blob(&blob, &rootfs.digest)? {
        fsutil::remove_any(&blob)?;
        cache.drop_record(&rootfs.key)?;
        bail!(
            "cached rootfs blob {} is corrupt; it was removed, run the build again",
            blob.display()
        );
    }
    let dest = out_dir.join("rootfs.tar.zst");
    let tmp = out_dir.join(".rootfs.tar.zst.tmp");
    fsutil::remove_any(&tmp)?;
    if fs::hard_link(&blob, &tmp).is_err() {
        fs::copy(&blob, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    // a copy's bytes and the mode are on disk before the name is
    nib_host::write::publish(&tmp, &dest)?;
    Ok(OutputRecord {
        path: "rootfs.tar.zst".into(),
        sha256: rootfs.digest.clone(),
        size: rootfs.size,
    })
}

/// The outputs other than the rootfs tarball, made from the layers' overlay.
pub fn outputs(
    cache: &Cache,
    img: &ImageDefinition,
    layers: &Layers,
    rootfs: &LayerRecord,
    kinds: &[OutputKind],
    out_dir: &Path,
) -> Result<Vec<OutputRecord>> {
    let work = cache.work_dir("outputs")?;
    let merged = work.join("merged");
    let mut m = Mounts::default();
    m.overlay_ro(&layers.top_first(), &merged)?;
    let ctx = OutputContext {
        rootfs: &merged,
        out_dir,
        image: &img.name,
        epoch: img.epoch,
        rootfs_digest: &rootfs.digest,
    };
    let r = crate::outputs::build_outputs(&ctx, kinds)?;
    m.unmount_all()?;
    Ok(r)
}

/// `--locked`: the packages installed must be exactly the lock's.
pub fn check_locked(
    img: &ImageDefinition,
    lock: &Lock,
    packages: &[InstalledPackage],
) -> Result<()> {
    let want: BTreeSet<_> = lock.packages.iter().collect();
    let got: BTreeSet<_> = packages.iter().collect();
    if want == got {
        return Ok(());
    }
    let extra: Vec<String> = got
        .difference(&want)
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    let lacking: Vec<String> = want
        .difference(&got)
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    bail!(
        "--locked: the build differs from {}: not in the lock: [{}]; in the lock but not installed: [{}]",
        img.lock_path().display(),
        extra.join(", "),
        lacking.join(", ")
    );
}

pub fn manifest(
    img: &ImageDefinition,
    definition_digest: String,
    records: &[LayerRecord],
    packages: Vec<InstalledPackage>,
    outputs: Vec<OutputRecord>,
) -> Manifest {
    Manifest {
        image: img.name.clone(),
        builder: BuilderInfo {
            name: "nib".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        epoch: img.epoch,
        suite: img.suite.clone(),
        mirror: img.mirror.clone(),
        architecture: img.architecture.clone(),
        definition_digest,
        layers: records
            .iter()
            .map(|r| ManifestLayer {
                name: r.name.clone(),
                key: r.key.clone(),
                digest: format!("sha256:{}", r.digest),
                size: r.size,
            })
            .collect(),
        packages,
        outputs,
    }
}

/// `images/<name>.lock` from the packages of a build that was not locked.
pub fn write_lock(
    img: &ImageDefinition,
    packages: Vec<InstalledPackage>,
    p: &Progress,
) -> Result<()> {
    let l = Lock {
        image: img.name.clone(),
        suite: img.suite.clone(),
        packages,
    };
    if l.write_if_changed(&img.lock_path())? {
        p.line("lock", &format!("wrote {}", img.lock_path().display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_record(cache: &Cache, bytes: &[u8]) -> LayerRecord {
        let digest = crate::image::sha256_hex(bytes);
        fs::write(cache.blob(&digest), bytes).expect("blob");
        let rec = LayerRecord {
            name: "rootfs".into(),
            key: "rootfs-key".into(),
            digest,
            size: bytes.len() as u64,
            packages: Vec::new(),
        };
        cache.put_record(&rec).expect("record");
        rec
    }

    #[test]
    fn the_rootfs_output_is_the_blob_under_its_name_and_nothing_else() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(&t.path().join("cache"), None).expect("cache");
        let out = t.path().join("out");
        fs::create_dir_all(&out).expect("mkdir");
        let rec = rootfs_record(&cache, b"tarball");
        let o = rootfs_output(&cache, &rec, false, &out).expect("output");
        assert_eq!(o.path, Path::new("rootfs.tar.zst"));
        assert_eq!((o.sha256.as_str(), o.size), (rec.digest.as_str(), 7));
        let dest = out.join("rootfs.tar.zst");
        assert_eq!(fs::read(&dest).expect("read"), b"tarball");
        let mode = fs::metadata(&dest).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            fs::read_dir(&out).expect("ls").count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_corrupt_cached_rootfs_is_refused_and_dropped() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(&t.path().join("cache"), None).expect("cache");
        let out = t.path().join("out");
        fs::create_dir_all(&out).expect("mkdir");
        let rec = rootfs_record(&cache, b"tarball");
        fs::write(cache.blob(&rec.digest), b"rotten!").expect("write");
        let err = rootfs_output(&cache, &rec, false, &out).expect_err("corrupt");
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
        assert!(!cache.blob(&rec.digest).exists());
        assert!(cache.record("rootfs-key").is_none());
        assert!(!out.join("rootfs.tar.zst").exists());
    }

    #[test]
    fn a_locked_build_must_install_exactly_the_lock() {
        use crate::build::plan::tests::{image, lock, pkg};
        let img = image(&["base"]);
        let lock = lock(&[("a", "1"), ("b", "2")]);
        check_locked(&img, &lock, &[pkg("a", "1"), pkg("b", "2")]).expect("same");
        let err = check_locked(&img, &lock, &[pkg("a", "1"), pkg("c", "3")]).expect_err("differs");
        let msg = format!("{err:#}");
        assert!(
            msg.ends_with("not in the lock: [c 3]; in the lock but not installed: [b 2]"),
            "{msg}"
        );
    }
}
