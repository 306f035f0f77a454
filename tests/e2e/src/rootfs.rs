//! The image's root filesystem, unpacked once per content digest: it is the
//! read-only lower dir of every node's overlay, so it must never change.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use nib_host::Cmd;

/// sha256 of `src`, memoised by (inode, size, mtime) so a 1 GiB tarball is
/// hashed once, not on every run.
pub fn digest(src: &Path, cache: &Path) -> Result<String> {
    let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let memo_dir = cache.join("digests");
    let memo = memo_dir.join(format!(
        "{}-{}-{}.{}",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ));
    if let Ok(hex) = fs::read_to_string(&memo) {
        let hex = hex.trim();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(hex.to_string());
        }
    }
    // coreutils' sha256sum: several times faster than a debug-built hasher
    // on a 1 GiB tarball.
    let out = Cmd::new("sha256sum")
        .arg("--binary")
        .arg(src)
        .stdout_text()
        .with_context(|| format!("hashing {}", src.display()))?;
    let hex = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if hex.len() != 64 {
        bail!("sha256sum printed `{}` for {}", out.trim(), src.display());
    }
    fs::create_dir_all(&memo_dir).with_context(|| format!("creating {}", memo_dir.display()))?;
    fs::write(&memo, &hex).with_context(|| format!("writing {}", memo.display()))?;
    Ok(hex)
}

/// Directories that are the lower dir of a mounted overlay right now.
fn lowers_in_use() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter(|l| l.contains(" - overlay "))
        .flat_map(|l| {
            l.split(',')
                .filter_map(|opt| {
                    opt.rsplit(' ')
                        .next()
                        .and_then(|o| o.strip_prefix("lowerdir="))
                })
                .flat_map(|v| v.split(':').map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Unpack `src` (a tar, optionally zstd-compressed) into `cache/<sha256>/rootfs`
/// unless it is there already, and return that directory. Older unpacked
/// roots that no overlay uses are removed so the cache holds one image.
pub fn prepare(src: &Path, cache: &Path) -> Result<PathBuf> {
    let (root, hex) = unpack(src, cache)?;
    prune(cache, &[hex]);
    Ok(root)
}

/// [`prepare`] for several images at once (the controllers' and the
/// arbiter's): none of them is pruned for another.
pub fn prepare_all(srcs: &[&Path], cache: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    let mut keep = Vec::new();
    for src in srcs {
        let (root, hex) = unpack(src, cache)?;
        roots.push(root);
        keep.push(hex);
    }
    prune(cache, &keep);
    Ok(roots)
}

fn unpack(src: &Path, cache: &Path) -> Result<(PathBuf, String)> {
    if !src.is_file() {
        bail!(
            "rootfs {} does not exist: build the image first (`make image IMAGE=controller-bookworm`, \
             `make image IMAGE=arbiter-bookworm OUTPUTS=rootfs`) or point NIB_E2E_ROOTFS / NIB_E2E_ARBITER_ROOTFS \
             at a rootfs tarball",
            src.display()
        );
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let hex = digest(src, cache)?;
    let entry = cache.join(&hex);
    let root = entry.join("rootfs");
    let done = entry.join(".unpacked");
    if !done.exists() {
        crate::log(&format!(
            "unpacking {} (sha256 {}) into {}",
            src.display(),
            &hex[..12],
            entry.display()
        ));
        let tmp = cache.join(format!("{hex}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        let tmp_root = tmp.join("rootfs");
        fs::create_dir_all(&tmp_root)
            .with_context(|| format!("creating {}", tmp_root.display()))?;
        let mut tar = Cmd::new("tar")
            .arg("--extract")
            .arg("--file")
            .arg(src)
            .arg("--directory")
            .arg(&tmp_root)
            .args([
                "--numeric-owner",
                "--preserve-permissions",
                "--same-owner",
                "--xattrs",
                "--xattrs-include=*",
            ]);
        if src.extension().is_some_and(|e| e == "zst") {
            tar = tar.arg("--zstd");
        }
        if let Err(e) = tar.run() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(anyhow::Error::new(e).context(format!("unpacking {}", src.display())));
        }
        fs::write(tmp.join(".unpacked"), src.display().to_string())
            .with_context(|| format!("marking {}", tmp.display()))?;
        if entry.exists() {
            // A previous attempt died half-way (no marker): replace it.
            fs::remove_dir_all(&entry).with_context(|| format!("removing {}", entry.display()))?;
        }
        fs::rename(&tmp, &entry)
            .with_context(|| format!("renaming {} to {}", tmp.display(), entry.display()))?;
    }
    // "used just now": a run that prepared this root but has not mounted
    // its overlays yet must not see it pruned by another run
    fs::OpenOptions::new()
        .write(true)
        .open(&done)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .with_context(|| format!("touching {}", done.display()))?;
    Ok((root, hex))
}

/// How long a root stays kept after a run prepared it, mounted or not.
const RECENT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Remove unpacked roots other than `keep` that no mounted overlay uses
/// and no run prepared in the last [`RECENT`], and unpack dirs
/// (`<sha256>.tmp-<pid>`) whose process is gone: two runs at once (two
/// checkouts, two images) never delete each other's root.
fn prune(cache: &Path, keep: &[String]) {
    let in_use = lowers_in_use();
    let Ok(rd) = fs::read_dir(cache) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_root = name.len() >= 64 && name[..64].bytes().all(|b| b.is_ascii_hexdigit());
        if !is_root || keep.contains(&name) {
            continue;
        }
        let path = e.path();
        if in_use.iter().any(|l| l.starts_with(&path)) {
            continue;
        }
        if let Some(pid) = name
            .split_once(".tmp-")
            .and_then(|(_, p)| p.parse::<i32>().ok())
        {
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue; // another run is unpacking it
            }
        } else if fs::metadata(path.join(".unpacked"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < RECENT))
        {
            continue;
        }
        crate::log(&format!("removing old unpacked root {}", path.display()));
        let _ = fs::remove_dir_all(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_and_memoised() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("x.tar");
        fs::write(&f, b"abc")?;
        let cache = dir.path().join("cache");
        let d = digest(&f, &cache)?;
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fs::read_dir(cache.join("digests"))?.count(), 1);
        assert_eq!(digest(&f, &cache)?, d);
        Ok(())
    }

    #[test]
    fn prepare_unpacks_once_and_prunes_old_roots() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let content = dir.path().join("content");
        fs::create_dir_all(content.join("etc"))?;
        fs::write(content.join("etc/os-release"), "ID=test\n")?;
        let tarball = dir.path().join("root.tar");
        Cmd::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&content)
            .arg(".")
            .run()?;
        let cache = dir.path().join("cache");
        let stale = cache.join("0".repeat(64));
        fs::create_dir_all(stale.join("rootfs"))?;
        // another run's: just prepared (not mounted yet), and one unpacking now
        let recent = cache.join("1".repeat(64));
        fs::create_dir_all(recent.join("rootfs"))?;
        fs::write(recent.join(".unpacked"), "x")?;
        let unpacking = cache.join(format!("{}.tmp-{}", "2".repeat(64), std::process::id()));
        fs::create_dir_all(&unpacking)?;
        let abandoned = cache.join(format!("{}.tmp-{}", "3".repeat(64), i32::MAX));
        fs::create_dir_all(&abandoned)?;
        let root = prepare(&tarball, &cache)?;
        assert!(
            recent.exists() && unpacking.exists(),
            "another run's root pruned"
        );
        assert!(!abandoned.exists(), "a dead run's unpack dir kept");
        assert_eq!(
            fs::read_to_string(root.join("etc/os-release"))?,
            "ID=test\n"
        );
        assert!(!stale.exists(), "old root not pruned");
        // Second call reuses the unpacked tree (marker present, content kept).
        fs::write(root.join("marker"), "x")?;
        assert_eq!(prepare(&tarball, &cache)?, root);
        assert!(root.join("marker").exists());
        Ok(())
    }

    #[test]
    fn prepare_names_missing_rootfs() {
        let err = prepare(Path::new("/nonexistent/rootfs.tar.zst"), Path::new("/tmp"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/rootfs.tar.zst"), "{err}");
        assert!(err.contains("make image"), "{err}");
    }
}
