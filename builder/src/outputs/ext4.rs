//! The ext4 root filesystem as an image file, made by `mkfs.ext4 -d` from the
//! finished root tree (no loop device, no mount). Everything mke2fs would
//! pick at random or from the clock is pinned: UUID and directory hash seed
//! come from the image digest, E2FSPROGS_FAKE_TIME is the build epoch, the
//! feature set comes from our own mke2fs.conf (not the build host's), and
//! the inode times that mke2fs copies from the host (ctime, atime) are reset
//! to the epoch with debugfs afterwards.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use nib_host::Cmd;

/// Features every e2fsprogs since 1.45 (focal) checks and resizes online.
/// Not orphan_file / metadata_csum_seed: older e2fsck refuses them.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 1

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t}
\tfloppy = {
\t}
\tdefault = {
\t}
\tbig = {
\t}
\thuge = {
\t}
";

/// What the tree holds: bytes in 4 KiB blocks and inode count.
#[derive(Debug, Default, Clone, Copy)]
pub struct TreeSize {
    pub bytes: u64,
    pub inodes: u64,
}

/// One path of the tree as the image sees it, with its mtime (seconds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreePath {
    pub path: PathBuf,
    pub mtime: i64,
}

/// Walk the tree (not following symlinks), every path relative to `root`,
/// sorted, with `/` first: the list debugfs fixes times on.
pub fn walk(root: &Path) -> Result<(TreeSize, Vec<TreePath>)> {
    let mut size = TreeSize::default();
    let mut seen = std::collections::HashSet::new();
    let root_meta =
        fs::symlink_metadata(root).with_context(|| format!("stat {}", root.display()))?;
    let mut paths = vec![TreePath {
        path: PathBuf::from("/"),
        mtime: root_meta.mtime(),
    }];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let m = e
                .metadata()
                .with_context(|| format!("stat {}", e.path().display()))?;
            let child = rel.join(e.file_name());
            paths.push(TreePath {
                path: Path::new("/").join(&child),
                mtime: m.mtime(),
            });
            if !seen.insert((m.dev(), m.ino())) {
                continue; // hard link: counted once
            }
            size.inodes += 1;
            size.bytes += m.len().div_ceil(4096) * 4096;
            if m.is_dir() {
                size.bytes += 4096;
                stack.push(child);
            }
        }
    }
    paths.sort();
    Ok((size, paths))
}

/// Size in bytes of the root filesystem for a tree: its content plus a
/// quarter and 512 MiB (journal, metadata, first-boot writes before the
/// root has grown), in MiB.
pub fn size_for(t: TreeSize) -> u64 {
    const MIB: u64 = 1 << 20;
    let want = t.bytes + t.bytes / 4 + t.inodes * 256 * 2 + 512 * MIB;
    want.div_ceil(MIB) * MIB
}

pub struct Ext4Params<'a> {
    pub uuid: &'a str,
    pub hash_seed: &'a str,
    pub label: &'a str,
    pub epoch: u64,
}

/// Make `img` (size bytes) from `tree`; `paths` from [`walk`].
pub fn make(
    img: &Path,
    size: u64,
    tree: &Path,
    paths: &[TreePath],
    p: &Ext4Params<'_>,
    scratch: &Path,
) -> Result<()> {
    let conf = scratch.join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF).with_context(|| format!("writing {}", conf.display()))?;
    Cmd::new("mkfs.ext4")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", p.epoch.to_string())
        .args(["-q", "-F", "-t", "ext4", "-L", p.label, "-U", p.uuid])
        .arg("-E")
        .arg(format!(
            "root_owner=0:0,hash_seed={},lazy_itable_init=0,lazy_journal_init=0,nodiscard",
            p.hash_seed
        ))
        .arg("-d")
        .arg(tree)
        .arg(img)
        .arg(format!("{}k", size / 1024))
        .run()
        .context("making the root filesystem")?;

    // mke2fs copies ctime and atime (with nanoseconds) from the build host's
    // inodes, which no tool can set to the epoch; debugfs rewrites them (and
    // the inode checksums). mtimes newer than the epoch (a directory touched
    // while the tree was assembled) are clamped to it, as SOURCE_DATE_EPOCH
    // does for the squashfs; nanoseconds are dropped.
    let script = scratch.join("debugfs-times");
    let mut s = fs::File::create(&script)?;
    let t = format!("0x{:x}", p.epoch);
    for tp in paths {
        let path = &tp.path;
        let b = path.as_os_str().as_bytes();
        if b.iter().any(|c| *c == b'"' || *c == b'\n') {
            bail!(
                "{}: a file name with a double quote or newline cannot be given to debugfs",
                path.display()
            );
        }
        let q = String::from_utf8_lossy(b);
        for field in ["ctime", "atime"] {
            writeln!(s, "sif \"{q}\" {field} {t}")?;
        }
        if tp.mtime > p.epoch as i64 {
            writeln!(s, "sif \"{q}\" mtime {t}")?;
        }
        for field in ["ctime_extra", "atime_extra", "mtime_extra"] {
            writeln!(s, "sif \"{q}\" {field} 0")?;
        }
    }
    s.sync_all()?;
    drop(s);
    let err = Cmd::new("debugfs")
        .env("E2FSPROGS_FAKE_TIME", p.epoch.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(img)
        .output()
        .context("resetting inode times with debugfs")?
        .stderr;
    // debugfs reports per-command failures on stderr but exits 0
    let text = String::from_utf8_lossy(&err);
    if let Some(line) = text
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        bail!("debugfs on {}: {line}", img.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("usr/lib/modules/x")).expect("mkdir");
        fs::write(dir.join("usr/lib/modules/x/a.ko"), vec![7u8; 10000]).expect("write");
        fs::write(dir.join("etc-file"), b"hello").expect("write");
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).expect("symlink");
        fs::hard_link(dir.join("etc-file"), dir.join("hard")).expect("link");
        // old package mtimes stay; the directory keeps "now" (newer than
        // the epoch), as a tree assembled at build time does
        for p in ["usr/lib/modules/x/a.ko", "etc-file"] {
            let st = Command::new("touch")
                .args(["-h", "-d", "@1600000000"])
                .arg(dir.join(p))
                .status()
                .expect("touch");
            assert!(st.success());
        }
    }

    /// Two trees with the same content made at different times (different
    /// ctime, atime with nanoseconds, directory mtimes after the epoch)
    /// give the same filesystem image, and e2fsck finds it clean.
    #[test]
    fn same_content_at_different_times_gives_identical_image() {
        // mkfs.ext4, e2fsck: e2fsprogs is in make's APT_BUILD.
        let d = tempfile::tempdir().expect("tempdir");
        let mut imgs = Vec::new();
        for n in 0..2 {
            let t = d.path().join(format!("t{n}"));
            tree(&t);
            let (size, paths) = walk(&t).expect("walk");
            assert!(size.inodes >= 6, "{size:?}");
            let img = d.path().join(format!("r{n}.img"));
            let scratch = d.path().join(format!("s{n}"));
            fs::create_dir_all(&scratch).expect("mkdir");
            make(
                &img,
                64 << 20,
                &t,
                &paths,
                &Ext4Params {
                    uuid: "11111111-2222-5333-8444-555555555555",
                    hash_seed: "11111111-2222-5333-8444-555555555556",
                    label: "t",
                    epoch: 1_700_000_000,
                },
                &scratch,
            )
            .expect("make ext4");
            imgs.push(fs::read(&img).expect("read"));
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert!(imgs[0] == imgs[1], "images differ");
        let img = d.path().join("r0.img");
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .expect("e2fsck");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stat = Command::new("debugfs")
            .args(["-R", "stat /usr/lib/modules/x/a.ko"])
            .arg(&img)
            .output()
            .expect("debugfs");
        let text = String::from_utf8_lossy(&stat.stdout);
        // the package file keeps its own (older) mtime
        assert!(text.contains("mtime: 0x5f5e1000:00000000"), "{text}");
    }
}
