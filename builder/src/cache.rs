//! The content-addressed cache (`--cache`, default `.cache/nib`):
//!
//! ```text
//! blobs/sha256/<hex>      layer and rootfs tarballs (tar.zst), OCI layout
//! debs/sha256/<hex>       .deb files by the sha256 the Packages index gives
//! layers/<key>.json       which blob a layer key produced, and its packages
//! trees/<key>/            that blob unpacked: an overlay lower dir
//! chunks/<key>            zstd frames of rootfs tarballs (seal::seal_chunked)
//! initramfs/<digest>/     initrd made from inputs with that digest
//! index/<mirror_suite>/   InRelease + Packages, named as apt names them
//! tmp/                    work dirs of the running build (wiped at start)
//! lock                    flock: one build per cache at a time
//! ```
//!
//! Everything lands by rename, so an interrupted build leaves only `tmp/`
//! behind, which the next build wipes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use nib_host::Cmd;

pub struct Cache {
    pub root: PathBuf,
    /// Package store; shared with another cache by `nib verify`.
    pub debs: PathBuf,
    _lock: Flock<fs::File>,
}

/// What a layer key produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    pub name: String,
    pub key: String,
    /// sha256 hex of the blob.
    pub digest: String,
    pub size: u64,
    /// Every package installed once this layer is applied (dpkg status).
    pub packages: Vec<InstalledPackage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl Cache {
    /// Open (creating) and lock the cache; wipe what a killed build left.
    pub fn open(root: &Path, debs: Option<&Path>) -> Result<Cache> {
        fs::create_dir_all(root).with_context(|| format!("creating cache {}", root.display()))?;
        let lockf = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))
            .with_context(|| format!("opening {}/lock", root.display()))?;
        let lock = match Flock::lock(lockf, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, _)) => {
                eprintln!("nib: waiting for another build using {}", root.display());
                Flock::lock(f, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("locking {}/lock", root.display()))?
            }
        };
        let root =
            fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
        let debs = match debs {
            Some(d) => d.to_path_buf(),
            None => root.join("debs"),
        };
        let c = Cache {
            root,
            debs,
            _lock: lock,
        };
        // We hold the lock: whatever is in tmp/ belongs to a dead build.
        // (Its mounts died with its private mount namespace.)
        fsutil::remove_any(&c.tmp())?;
        for d in [
            c.tmp(),
            c.blobs(),
            c.deb_blobs(),
            c.plain_blobs(),
            c.layers(),
            c.trees(),
            c.index(),
            c.chunks(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // A build creates ~100,000 files under tmp/ (trees are renamed from
        // there) right after the previous ones were deleted. ext4 without a
        // journal (VMs, CI) skips every inode deleted in the last minutes
        // when it allocates one, so filling the groups the deleted trees
        // left scans them over and over: here ~20% of a clean rebuild's CPU
        // (64 -> 34 s). Directories flagged "top of a hierarchy" (chattr +T)
        // have their subdirectories placed in other, emptier groups by the
        // Orlov allocator (see work_dir). Best effort: other file systems
        // refuse the flag.
        for d in [&c.root, &c.tmp(), &c.trees()] {
            let _ = Cmd::new("chattr").arg("+T").arg(d).run();
        }
        // Partial files of a killed build are dot-temp files beside the blobs.
        fs::create_dir_all(c.root.join("initramfs"))?;
        for d in [
            c.blobs(),
            c.deb_blobs(),
            c.plain_blobs(),
            c.trees(),
            c.chunks(),
            c.root.join("initramfs"),
        ] {
            for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
                let e = e?;
                if e.file_name().to_string_lossy().starts_with('.') {
                    fsutil::remove_any(&e.path())?;
                }
            }
        }
        Ok(c)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.blobs().join(digest)
    }
    pub fn deb_blobs(&self) -> PathBuf {
        self.debs.join("sha256")
    }
    /// Uncompressed package data, by package sha256 (see plain.rs).
    pub fn plain_blobs(&self) -> PathBuf {
        self.debs.join("plain")
    }
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }
    pub fn tree(&self, key: &str) -> PathBuf {
        self.trees().join(key)
    }
    /// zstd frames of rootfs tarballs, by chunk key.
    pub fn chunks(&self) -> PathBuf {
        self.root.join("chunks")
    }
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    pub fn record(&self, key: &str) -> Option<LayerRecord> {
        let p = self.layers().join(format!("{key}.json"));
        let text = fs::read_to_string(p).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn put_record(&self, rec: &LayerRecord) -> Result<()> {
        let p = self.layers().join(format!("{}.json", rec.key));
        Ok(nib_host::write::write_file(
            &p,
            &serde_json::to_vec_pretty(rec)?,
            0o644,
        )?)
    }

    pub fn drop_record(&self, key: &str) -> Result<()> {
        fsutil::remove_any(&self.layers().join(format!("{key}.json")))?;
        fsutil::remove_any(&self.tree(key))
    }

    /// A fresh work dir under tmp/, `<name>.<pid>.<ns>`. A name that differs
    /// from build to build matters: ext4's Orlov allocator starts looking
    /// for a new directory's group at a hash of its name, so a fixed name
    /// would put this build's ~100,000 new files in the groups where the
    /// previous build's (just deleted) ones were, the slow case `open`
    /// describes.
    pub fn work_dir(&self, name: &str) -> Result<PathBuf> {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let d = self
            .tmp()
            .join(format!("{name}.{}.{ns}", std::process::id()));
        fsutil::remove_any(&d)?;
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }
}

/// Parse a dpkg status file: installed packages, sorted.
pub fn dpkg_status(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = ("", "", "", false);
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = v.trim();
            } else if let Some(v) = line.strip_prefix("Architecture: ") {
                arch = v.trim();
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if installed && !name.is_empty() {
            out.push(InstalledPackage {
                name: name.into(),
                version: version.into(),
                arch: arch.into(),
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_installed_only() {
        let s = "Package: b\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\nPackage: a\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: amd64\n\nPackage: c\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:3\n";
        let v = dpkg_status(s);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "b");
        assert_eq!(v[1].version, "1:3");
    }

    #[test]
    fn open_wipes_tmp_and_partial_blobs() {
        let t = tempfile::tempdir().expect("tempdir");
        {
            let c = Cache::open(t.path(), None).expect("open");
            fs::write(c.tmp().join("stale"), "x").expect("write");
            fs::write(c.blobs().join(".seal-123"), "x").expect("write");
            fs::write(c.blobs().join("abc"), "x").expect("write");
        }
        let c = Cache::open(t.path(), None).expect("reopen");
        assert!(!c.tmp().join("stale").exists());
        assert!(!c.blobs().join(".seal-123").exists());
        assert!(c.blobs().join("abc").exists());
    }
}
