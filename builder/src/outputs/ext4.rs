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
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cmd;

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

/// Walk the tree (not following symlinks), every path relative to `root`,
/// sorted, with `/` first: the list debugfs fixes times on.
pub fn walk(root: &Path) -> Result<(TreeSize, Vec<PathBuf>)> {
    let mut size = TreeSize::default();
    let mut seen = std::collections::HashSet::new();
    let mut paths = vec![PathBuf::from("/")];
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
            paths.push(Path::new("/").join(&child));
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
    paths: &[PathBuf],
    p: &Ext4Params<'_>,
    scratch: &Path,
) -> Result<()> {
    let conf = scratch.join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF).with_context(|| format!("writing {}", conf.display()))?;
    cmd::run(
        Command::new("mkfs.ext4")
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
            .arg(format!("{}k", size / 1024)),
    )
    .context("making the root filesystem")?;

    // mke2fs copies ctime and atime from the build host's inodes, which no
    // tool can set to the epoch; debugfs rewrites them (and checksums).
    let script = scratch.join("debugfs-times");
    let mut s = fs::File::create(&script)?;
    let t = format!("0x{:x}", p.epoch);
    for path in paths {
        let b = path.as_os_str().as_bytes();
        if b.iter().any(|c| *c == b'"' || *c == b'\n') {
            bail!(
                "{}: a file name with a double quote or newline cannot be given to debugfs",
                path.display()
            );
        }
        let q = String::from_utf8_lossy(b);
        writeln!(s, "sif \"{q}\" ctime {t}")?;
        writeln!(s, "sif \"{q}\" atime {t}")?;
    }
    s.sync_all()?;
    drop(s);
    let (_, err) = cmd::run_both(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", p.epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(img),
    )
    .context("resetting inode times with debugfs")?;
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
