//! The initramfs, made once, off the critical path and cached by what it is
//! made from.
//!
//! mkinitramfs reads a known set of inputs (kernel modules, firmware,
//! initramfs-tools hooks and config, modprobe and udev config) and copies
//! binaries and libraries from the root. The inputs' digest and the key of
//! the layer it was made over key a cached result
//! (`<cache>/initramfs/<key>/`: the initrd files and initramfs-tools'
//! state). Right after the base layer exists, a background thread makes the
//! initramfs over the base alone while the upper layers install; finalize
//! uses it when the final tree has the same inputs digest and no upper layer
//! replaced a file of the base under usr/, and runs update-initramfs itself
//! otherwise. A one-file change on top therefore costs no mkinitramfs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::mounts::Mounts;
use nib_host::Cmd;

/// Paths mkinitramfs and its hooks read (usr-merged: /lib is usr/lib).
const INPUTS: &[&str] = &[
    "etc/initramfs-tools",
    "usr/share/initramfs-tools",
    "usr/lib/modules",
    "usr/lib/firmware",
    "etc/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/udev",
    "usr/lib/udev",
    "etc/crypttab",
    "etc/fstab",
    "etc/mdadm",
    "etc/lvm",
    "etc/ld.so.conf",
    "etc/ld.so.conf.d",
    "usr/lib/klibc",
    "etc/default/keyboard",
    "etc/console-setup",
    "usr/sbin/update-initramfs",
    "usr/sbin/mkinitramfs",
];

/// A fork-light copy_file for mkinitramfs, appended to a build-time copy of
/// hook-functions (see the file's own comment).
const FAST_HOOKS: &str = include_str!("initramfs-fast.sh");

/// sha256 of the stock `copy_file() {` … `}` that FAST_HOOKS was written
/// against and checked equal with: initramfs-tools 0.142 (Debian 12).
/// Another version's initramfs is made with the stock functions.
const KNOWN_COPY_FILE: &str = "51544bd45a9588e55bc4e0360c984bffb32384200502abecb9dfd99d068d0aa1";

/// Where mkinitramfs and its hooks read their helper functions from.
const HOOK_FUNCTIONS: &str = "usr/share/initramfs-tools/hook-functions";

/// The build-time hook-functions for a root whose own is `stock`: the
/// stock text, its copy_file again as `nib_stock_copy_file` (the fast one
/// falls back to it), then FAST_HOOKS. None when the stock copy_file is not
/// the one with digest `known`.
fn fast_hook_functions(stock: &str, known: &str) -> Option<String> {
    let start = stock.find("\ncopy_file() {\n")? + 1;
    let len = stock[start..].find("\n}\n")? + 3;
    let body = &stock[start..start + len];
    if hex::encode(Sha256::digest(body.as_bytes())) != known {
        return None;
    }
    let renamed = body.replacen("copy_file() {", "nib_stock_copy_file() {", 1);
    Some(format!("{stock}\n{renamed}{FAST_HOOKS}"))
}

/// What update-initramfs writes.
const OUTPUTS: &[&str] = &["boot", "var/lib/initramfs-tools"];

/// Files above this size are keyed by size + mtime + mode (modules and
/// firmware come from packages with their own mtimes; a file changed by a
/// layer gets a new, clamped mtime). Smaller ones by content.
const CONTENT_LIMIT: u64 = 64 * 1024;

fn hash_path(root: &Path, rel: &Path, h: &mut Sha256) -> Result<()> {
    let p = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&p) else {
        return Ok(());
    };
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update(format!("\0{:o}:{}:{}:", meta.mode(), meta.uid(), meta.gid()).as_bytes());
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.update(fs::read_link(&p)?.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            hash_path(root, &rel.join(n), h)?;
        }
    } else if ft.is_file() {
        if meta.len() <= CONTENT_LIMIT {
            h.update(fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        } else {
            h.update(format!("{}:{}", meta.len(), meta.mtime()).as_bytes());
        }
    }
    h.update(b"\n");
    Ok(())
}

/// Digest of the initramfs inputs in `root`; None when there is no kernel
/// or no initramfs-tools (nothing to make).
pub fn inputs_digest(root: &Path, epoch: u64) -> Result<Option<String>> {
    let has_kernel = fs::read_dir(root.join("usr/lib/modules"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_kernel || !root.join("usr/sbin/update-initramfs").exists() {
        return Ok(None);
    }
    let mut h = Sha256::new();
    h.update(format!("nib-initramfs-1 epoch={epoch}\n").as_bytes());
    for i in INPUTS {
        hash_path(root, Path::new(i), &mut h)?;
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// Cache key of an initramfs made over a stack of layers whose top has key
/// `layer_key`. The inputs digest alone is not enough: a build whose base
/// packages changed (busybox, udev, libc: what hooks copy) with the same
/// inputs would get an initramfs holding the old binaries.
pub fn cache_key(inputs: &str, layer_key: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "nib-initramfs-key-1\n{inputs}\n{layer_key}\n"
    )))
}

/// Whether a tree of `uppers` replaces or removes a file under usr/ that one
/// of `lowers` has: then an initramfs made over `lowers` may hold a copy of
/// something the final image no longer has. (Layers above the base add
/// files; replacing one is what this catches.)
pub fn shadows(uppers: &[PathBuf], lowers: &[PathBuf]) -> Result<bool> {
    fn walk(dir: &Path, rel: &Path, lowers: &[PathBuf]) -> Result<bool> {
        let Ok(rd) = fs::read_dir(dir) else {
            return Ok(false);
        };
        for e in rd {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                if walk(&e.path(), &r, lowers)? {
                    return Ok(true);
                }
            } else if lowers
                .iter()
                .any(|l| fs::symlink_metadata(l.join(&r)).is_ok_and(|m| !m.is_dir()))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
    for u in uppers {
        if walk(&u.join("usr"), Path::new("usr"), lowers)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn cached_dir(cache_root: &Path, digest: &str) -> PathBuf {
    cache_root.join("initramfs").join(digest)
}

/// Copy a cached result into `root`. False when there is none.
pub fn install_cached(cache_root: &Path, digest: &str, root: &Path) -> Result<bool> {
    let dir = cached_dir(cache_root, digest);
    if !dir.join("complete").is_file() {
        return Ok(false);
    }
    // Entry by entry, never the directories themselves: the result must not
    // depend on where the cached copy came from.
    for o in OUTPUTS {
        let src = dir.join(o);
        let Ok(rd) = fs::read_dir(&src) else { continue };
        let mut names: Vec<_> = rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        fs::create_dir_all(root.join(o))?;
        for n in names {
            let dst = root.join(o).join(&n);
            crate::fsutil::remove_any(&dst)?;
            Cmd::new("cp").arg("-a").arg(src.join(&n)).arg(&dst).run()?;
        }
    }
    Ok(true)
}

/// Keep what update-initramfs wrote in `root` under the cache.
pub fn store(cache_root: &Path, digest: &str, root: &Path) -> Result<()> {
    let dir = cached_dir(cache_root, digest);
    let tmp = cache_root.join("initramfs").join(format!(".tmp-{digest}"));
    crate::fsutil::remove_any(&tmp)?;
    for o in OUTPUTS {
        let src = root.join(o);
        let dst = tmp.join(o);
        fs::create_dir_all(&dst)?;
        if src.is_dir() {
            for e in fs::read_dir(&src)? {
                let e = e?;
                let name = e.file_name();
                let n = name.to_string_lossy();
                // only what update-initramfs made, not the kernel itself
                if *o == "boot" && !n.starts_with("initrd.img-") {
                    continue;
                }
                Cmd::new("cp")
                    .arg("-a")
                    .arg(e.path())
                    .arg(dst.join(&name))
                    .run()?;
            }
        }
    }
    fs::write(tmp.join("complete"), b"")?;
    crate::fsutil::remove_any(&dir)?;
    // the initrd and its marker on disk before the name: after a crash the
    // cache holds a whole initrd or none, never a short one marked complete
    nib_host::write::publish(&tmp, &dir)?;
    Ok(())
}

/// Run update-initramfs for every kernel in `root` (mounted chroot).
pub fn generate(root: &Path, epoch: u64) -> Result<()> {
    let mut m = Mounts::default();
    m.chroot_basics(root)?;
    let r = Cmd::new("chroot")
        .env_clear()
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        // C, not C.UTF-8: the same initramfs, and each of mkinitramfs's
        // ~13,000 short-lived coreutils processes skips loading a locale
        // (~12% of its CPU time)
        .env("LC_ALL", "C")
        .arg(root)
        .args(["update-initramfs", "-c", "-k", "all"])
        .run();
    m.unmount_all()?;
    Ok(r?)
}

/// Make (or find) the initramfs over `lowers` (top first), in `work`, and
/// keep it in the cache under `key` (see `cache_key`). The only way an initramfs is
/// made, so the image does not depend on which build made it.
pub fn make(
    cache_root: &Path,
    lowers: &[PathBuf],
    digest: &str,
    work: &Path,
    epoch: u64,
) -> Result<()> {
    if cached_dir(cache_root, digest).join("complete").is_file() {
        return Ok(());
    }
    let upper = work.join("upper");
    let ovl = work.join("work");
    let merged = work.join("merged");
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&ovl)?;
    let mut m = Mounts::default();
    // overlay needs two lowers or an upper: give it the upper
    m.overlay(lowers, &upper, &ovl, &merged)?;
    let hf = merged.join(HOOK_FUNCTIONS);
    if let Some(fast) = fs::read_to_string(&hf)
        .ok()
        .and_then(|stock| fast_hook_functions(&stock, KNOWN_COPY_FILE))
    {
        let copy = work.join("hook-functions");
        fs::write(&copy, fast).with_context(|| format!("writing {}", copy.display()))?;
        m.bind(&copy, &hf)?;
    }
    generate(&merged, epoch)?;
    store(cache_root, digest, &merged)?;
    m.unmount_all()?;
    crate::fsutil::remove_any(work)?;
    Ok(())
}

/// Whether a layer's tree (or a layer's `files/`) holds any initramfs input.
pub fn touches(dir: &Path) -> bool {
    INPUTS
        .iter()
        .any(|i| fs::symlink_metadata(dir.join(i)).is_ok())
}

/// What a background run made: for which inputs, under which cache key.
pub struct Speculated {
    pub inputs: String,
    pub key: String,
}

/// The background run over a stack of layers (top first, the top one's key
/// `layer_key`), seen read-only.
pub fn speculate(
    cache_root: &Path,
    lowers: &[PathBuf],
    layer_key: &str,
    work: &Path,
    epoch: u64,
) -> Result<Option<Speculated>> {
    let view = work.join("view");
    let mut m = Mounts::default();
    m.overlay_ro(lowers, &view)?;
    let digest = inputs_digest(&view, epoch);
    m.unmount_all()?;
    let Some(inputs) = digest? else {
        return Ok(None);
    };
    let key = cache_key(&inputs, layer_key);
    make(cache_root, lowers, &key, &work.join("make"), epoch)?;
    Ok(Some(Speculated { inputs, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadows_sees_replaced_files_not_added_ones() {
        let t = tempfile::tempdir().expect("tmp");
        let (low, up) = (t.path().join("low"), t.path().join("up"));
        for f in ["usr/bin/busybox", "usr/lib/x86_64-linux-gnu/libc.so.6"] {
            fs::create_dir_all(low.join(f).parent().expect("parent")).expect("mkdir");
            fs::write(low.join(f), b"x").expect("write");
        }
        fs::create_dir_all(up.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
        fs::write(up.join("usr/lib/x86_64-linux-gnu/libmariadb.so.3"), b"y").expect("write");
        let (u, l) = (vec![up.clone()], vec![low.clone()]);
        assert!(!shadows(&u, &l).expect("added only"));
        fs::write(up.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"z").expect("write");
        assert!(shadows(&u, &l).expect("replaced"));
    }

    #[test]
    fn fast_hook_functions_only_over_the_known_copy_file() {
        let stock = "#!/bin/sh\nfoo() {\n\t:\n}\n\ncopy_file() {\n\tcp \"$2\" \"$DESTDIR/$2\"\n}\n\nbar() {\n\t:\n}\n";
        let body = "copy_file() {\n\tcp \"$2\" \"$DESTDIR/$2\"\n}\n";
        let known = hex::encode(Sha256::digest(body.as_bytes()));
        let fast = fast_hook_functions(stock, &known).expect("known copy_file");
        assert!(fast.starts_with(stock), "the stock text comes first");
        assert!(fast.contains("\nnib_stock_copy_file() {\n\tcp \"$2\""));
        assert!(fast.ends_with(FAST_HOOKS));
        // the fast copy_file is defined after (and so replaces) the stock one
        let last = fast.rfind("\ncopy_file() {").expect("fast copy_file");
        assert!(last > fast.find("nib_stock_copy_file").expect("stock kept"));
        assert_eq!(fast_hook_functions(stock, KNOWN_COPY_FILE), None);
        assert_eq!(fast_hook_functions("#!/bin/sh\n", &known), None);
    }

    #[test]
    fn cache_key_follows_the_layer_as_well_as_the_inputs() {
        assert_ne!(cache_key("i", "base-1"), cache_key("i", "base-2"));
        assert_ne!(cache_key("i", "base-1"), cache_key("j", "base-1"));
        assert_eq!(cache_key("i", "base-1"), cache_key("i", "base-1"));
    }
}
