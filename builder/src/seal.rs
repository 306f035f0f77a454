//! Normalized tarballs: a directory tree walked once, in byte order, into
//! tar → multithreaded zstd → sha256 + file, with no uncompressed copy.
//! Numeric owners only, mtimes clamped to SOURCE_DATE_EPOCH, no atime/ctime,
//! xattrs (but overlayfs' own) as PAX records, hard links kept.
//!
//! An overlayfs upper dir becomes an OCI layer: a whiteout (char 0:0)
//! becomes `.wh.<name>`, an opaque dir gets `.wh..wh..opq`. Extraction does the
//! reverse, so a cached blob can serve again as an overlay lower dir.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// What kind of tree is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// An overlay upper dir (or a bootstrap dir): whiteouts become OCI
    /// whiteouts, and mtimes are clamped in place too, so that the tree on
    /// disk equals what extracting its blob gives.
    Layer,
    /// A finished, read-only root (a merged overlay): taken as it is.
    Root,
}

/// A sealed blob: sha256 hex of the compressed bytes, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub digest: String,
    pub size: u64,
}

/// Writer that hashes and counts what goes through it.
pub struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hash.finalize()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashReader<R: Read> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// zstd level and threads of the rootfs frames: level 3 (zstd's default) keeps the
/// seal well under the time dpkg takes; the output depends on neither the
/// thread count nor the machine.
pub const ZSTD_LEVEL: i32 = 3;

/// Layer blobs live only in the cache (the outputs are made from the trees):
/// level 1 takes half of level 3's CPU, which the build's other work needs.
pub const LAYER_ZSTD_LEVEL: i32 = 1;

fn zstd_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Seal `src` into `blobs/<sha256>`; returns its digest. Atomic: written to
/// a temp file in `blobs/`, renamed once complete.
pub fn seal(src: &Path, kind: TreeKind, epoch: u64, blobs: &Path) -> Result<Sealed> {
    fs::create_dir_all(blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".seal-")
        .tempfile_in(blobs)
        .with_context(|| format!("creating a temp file in {}", blobs.display()))?;
    let file = tmp.reopen().context("reopening seal temp file")?;
    let hw = HashWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let mut enc = zstd::stream::Encoder::new(hw, LAYER_ZSTD_LEVEL).context("starting zstd")?;
    enc.multithread(zstd_threads()).context("zstd threads")?;
    enc.include_checksum(true).context("zstd checksum")?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut w = Walker {
        tar: &mut tar,
        kind,
        epoch,
        links: HashMap::new(),
    };
    w.entry(src, Path::new("."))
        .with_context(|| format!("sealing {}", src.display()))?;
    let enc = tar.into_inner().context("finishing tar")?;
    let hw = enc.finish().context("finishing zstd")?;
    let (buf, digest, size) = hw.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().context("syncing blob")?;
    let dest = blobs.join(&digest);
    tmp.persist(&dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    nib_host::write::sync_dir(blobs)?;
    Ok(Sealed { digest, size })
}

struct Walker<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    kind: TreeKind,
    epoch: u64,
    links: HashMap<(u64, u64), PathBuf>,
}

fn tar_name(rel: &Path, dir: bool) -> PathBuf {
    if dir {
        let mut s = rel.as_os_str().to_os_string();
        s.push("/");
        PathBuf::from(s)
    } else {
        rel.to_path_buf()
    }
}

impl<W: Write> Walker<'_, W> {
    fn header(&self, meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime((meta.mtime().max(0) as u64).min(self.epoch));
        h.set_size(0);
        h
    }

    fn clamp(&self, path: &Path, meta: &fs::Metadata) -> Result<()> {
        if self.kind == TreeKind::Layer && meta.mtime() as i128 > self.epoch as i128 {
            let t = TimeSpec::new(self.epoch as i64, 0);
            utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
                .with_context(|| format!("setting mtime of {}", path.display()))?;
        }
        Ok(())
    }

    fn xattrs(&mut self, path: &Path) -> Result<bool> {
        let mut opaque = false;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let names = match xattr::list(path) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| format!("listing xattrs of {}", path.display()))
            }
        };
        let mut names: Vec<_> = names.collect();
        names.sort();
        for n in names {
            let ns = n.to_string_lossy();
            if ns == OPAQUE_XATTR {
                if xattr::get(path, &n).ok().flatten().as_deref() == Some(b"y".as_slice()) {
                    opaque = true;
                }
                continue;
            }
            if ns.starts_with("trusted.overlay.") || ns.starts_with("user.overlay.") {
                continue;
            }
            if let Some(v) = xattr::get(path, &n)
                .with_context(|| format!("reading xattr {ns} of {}", path.display()))?
            {
                pax.push((format!("SCHILY.xattr.{ns}"), v));
            }
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(opaque && self.kind == TreeKind::Layer)
    }

    fn entry(&mut self, path: &Path, rel: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let opaque = self.xattrs(path)?;
            let mut h = self.header(&meta, tar::EntryType::Directory);
            self.tar
                .append_data(&mut h, tar_name(rel, true), io::empty())?;
            if opaque {
                let mut wh = self.header(&meta, tar::EntryType::Regular);
                wh.set_mode(0o600);
                wh.set_uid(0);
                wh.set_gid(0);
                wh.set_mtime(self.epoch);
                self.tar
                    .append_data(&mut wh, rel.join(WH_OPAQUE), io::empty())?;
            }
            let mut names: Vec<_> = fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .with_context(|| format!("reading {}", path.display()))?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for n in names {
                self.entry(&path.join(&n), &rel.join(&n))?;
            }
            self.clamp(path, &meta)?;
        } else if ft.is_symlink() {
            self.xattrs(path)?;
            let target =
                fs::read_link(path).with_context(|| format!("reading {}", path.display()))?;
            let mut h = self.header(&meta, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, rel, &target)?;
            self.clamp(path, &meta)?;
        } else if ft.is_char_device() && meta.rdev() == 0 && self.kind == TreeKind::Layer {
            // overlayfs whiteout → OCI whiteout
            let name = rel.file_name().unwrap_or(OsStr::new(""));
            let mut wh_name = OsStr::new(WH_PREFIX).to_os_string();
            wh_name.push(name);
            let mut h = self.header(&meta, tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(self.epoch);
            self.tar
                .append_data(&mut h, rel.with_file_name(wh_name), io::empty())?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key).cloned() {
                    let mut h = self.header(&meta, tar::EntryType::Link);
                    self.tar.append_link(&mut h, rel, &first)?;
                    return Ok(());
                }
                self.links.insert(key, rel.to_path_buf());
            }
            self.xattrs(path)?;
            let mut h = self.header(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            self.tar
                .append_data(&mut h, rel, f.take(meta.len()))
                .with_context(|| format!("archiving {}", path.display()))?;
            self.clamp(path, &meta)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = self.header(&meta, kind);
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            self.tar.append_data(&mut h, rel, io::empty())?;
            self.clamp(path, &meta)?;
        }
        // Sockets are runtime objects: never part of an image.
        Ok(())
    }
}

/// Clamp every mtime in `root` to `epoch`, in place (children first, so a
/// directory keeps its clamped time). What `seal` of a layer does too; done
/// up front when the tree must be final before its seal runs.
pub fn clamp_tree(root: &Path, epoch: u64) -> Result<()> {
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if meta.is_dir() {
        for e in fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
            clamp_tree(&e?.path(), epoch)?;
        }
    }
    if meta.mtime() as i128 > epoch as i128 {
        let t = TimeSpec::new(epoch as i64, 0);
        utimensat(None, root, &t, &t, UtimensatFlags::NoFollowSymlink)
            .with_context(|| format!("setting mtime of {}", root.display()))?;
    }
    Ok(())
}

/// Why an extraction failed: the caller rebuilds on `Corrupt`.
#[derive(Debug, thiserror::Error)]
#[error("blob {path} is corrupt: sha256 {found}, expected {expected}")]
pub struct Corrupt {
    pub path: PathBuf,
    pub expected: String,
    pub found: String,
}

/// Unpack blob `digest` into the new directory `dest` (an overlay lower dir:
/// OCI whiteouts become overlay whiteouts), checking the digest on the way.
pub fn extract(blob: &Path, digest: &str, dest: &Path) -> Result<()> {
    let file = fs::File::open(blob).with_context(|| format!("opening {}", blob.display()))?;
    let mut hr = HashReader {
        inner: io::BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    let result = (|| -> Result<()> {
        let dec = zstd::stream::Decoder::with_buffer(io::BufReader::new(&mut hr))
            .context("starting zstd")?;
        let mut ar = tar::Archive::new(dec);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(true);
        ar.set_overwrite(true);
        for e in ar.entries().context("reading tar")? {
            let mut e = e.context("reading tar entry")?;
            let p = e.path().context("entry path")?.into_owned();
            let rel: PathBuf = p
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            let name = rel
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            if name == WH_OPAQUE.as_bytes() {
                xattr::set(&parent, OPAQUE_XATTR, b"y")
                    .with_context(|| format!("marking {} opaque", parent.display()))?;
                continue;
            }
            if name.starts_with(WH_PREFIX.as_bytes()) {
                let target = parent.join(OsStr::from_bytes(&name[WH_PREFIX.len()..]));
                nix::sys::stat::mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
                    .with_context(|| format!("making whiteout {}", target.display()))?;
                continue;
            }
            let mtime = e.header().mtime().unwrap_or(0) as i64;
            let is_dir = e.header().entry_type() == tar::EntryType::Directory;
            if rel.as_os_str().is_empty() {
                // the root itself
                let h = e.header();
                let mode = h.mode().unwrap_or(0o755);
                nix::unistd::chown(
                    dest,
                    Some(nix::unistd::Uid::from_raw(h.uid().unwrap_or(0) as u32)),
                    Some(nix::unistd::Gid::from_raw(h.gid().unwrap_or(0) as u32)),
                )
                .with_context(|| format!("chown {}", dest.display()))?;
                fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .with_context(|| format!("chmod {}", dest.display()))?;
                dirs.push((dest.to_path_buf(), mtime));
                continue;
            }
            e.unpack_in(dest)
                .with_context(|| format!("unpacking {}", rel.display()))?;
            if is_dir {
                dirs.push((dest.join(&rel), mtime));
            }
        }
        // Drain: the digest covers the whole blob.
        let mut inner = ar.into_inner();
        io::copy(&mut inner, &mut io::sink()).context("reading blob end")?;
        Ok(())
    })();
    io::copy(&mut hr, &mut io::sink()).context("reading blob")?;
    let found = hex::encode(hr.hash.finalize());
    if found != digest {
        return Err(Corrupt {
            path: blob.to_path_buf(),
            expected: digest.to_string(),
            found,
        }
        .into());
    }
    result?;
    // Directory mtimes last: unpacking their children changed them.
    for (d, m) in dirs.iter().rev() {
        let t = TimeSpec::new(*m, 0);
        utimensat(None, d, &t, &t, UtimensatFlags::NoFollowSymlink)
            .with_context(|| format!("setting mtime of {}", d.display()))?;
    }
    Ok(())
}

/// Check a blob's digest without unpacking it.
pub fn verify_blob(blob: &Path, digest: &str) -> Result<bool> {
    let found = crate::image::sha256_file(blob)?;
    Ok(found == digest)
}

pub fn ensure_no_dotdot(p: &Path) -> Result<()> {
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        bail!("path {} leaves the tree", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("etc/sub")).expect("mkdir");
        fs::write(root.join("etc/b"), "bee").expect("write");
        fs::write(root.join("etc/a"), "ay").expect("write");
        fs::set_permissions(root.join("etc/a"), fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::symlink("a", root.join("etc/link")).expect("symlink");
        fs::hard_link(root.join("etc/b"), root.join("etc/sub/b2")).expect("hardlink");
    }

    fn list(blob: &Path) -> Vec<(String, u64, u64)> {
        let f = fs::File::open(blob).expect("open");
        let mut ar = tar::Archive::new(zstd::stream::Decoder::new(f).expect("zstd"));
        ar.entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.mtime().expect("mtime"),
                    h.uid().expect("uid"),
                )
            })
            .collect()
    }

    #[test]
    fn same_tree_same_digest_sorted_and_clamped() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        tree(&a);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tree(&b);
        let blobs = t.path().join("blobs");
        let sa = seal(&a, TreeKind::Root, 1_000_000, &blobs).expect("seal a");
        let sb = seal(&b, TreeKind::Root, 1_000_000, &blobs).expect("seal b");
        assert_eq!(
            sa, sb,
            "identical trees made at different times must seal identically"
        );
        let names: Vec<String> = list(&blobs.join(&sa.digest))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            vec![
                "./",
                "etc/",
                "etc/a",
                "etc/b",
                "etc/link",
                "etc/sub/",
                "etc/sub/b2"
            ]
        );
        assert!(list(&blobs.join(&sa.digest))
            .iter()
            .all(|e| e.1 == 1_000_000));
        fs::write(b.join("etc/a"), "changed").expect("write");
        let sc = seal(&b, TreeKind::Root, 1_000_000, &blobs).expect("seal c");
        assert_ne!(sa.digest, sc.digest);
    }

    #[test]
    fn corrupt_blob_is_detected() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("a");
        tree(&a);
        let blobs = t.path().join("blobs");
        let s = seal(&a, TreeKind::Layer, 1_000_000, &blobs).expect("seal");
        let out = t.path().join("out");
        extract(&blobs.join(&s.digest), &s.digest, &out).expect("extract");
        assert_eq!(fs::read(out.join("etc/sub/b2")).expect("read"), b"bee");
        assert_eq!(
            fs::metadata(out.join("etc/a"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        // Re-sealing the extracted tree gives the same blob.
        let s2 = seal(&out, TreeKind::Layer, 1_000_000, &blobs).expect("reseal");
        assert_eq!(s, s2);
        let p = blobs.join(&s.digest);
        let mut bytes = fs::read(&p).expect("read blob");
        let n = bytes.len() / 2;
        bytes[n] ^= 0xff;
        fs::write(&p, bytes).expect("corrupt");
        let err = extract(&p, &s.digest, &t.path().join("out2")).expect_err("corrupt");
        assert!(
            err.downcast_ref::<Corrupt>().is_some() || format!("{err:#}").contains("corrupt"),
            "{err:#}"
        );
        assert!(!verify_blob(&p, &s.digest).expect("verify"));
    }
}

// ---------------------------------------------------------------------------
// Chunked sealing of a finished root (rootfs.tar.zst).
//
// The tar stream is cut into chunks at content-defined points (after an
// entry whose path hash hits, once the chunk is big enough), each chunk is
// compressed as its own zstd frame, and frames are cached by a key over the
// entries' metadata and the identity (inode + ctime) of the files they
// hold. Layer trees never change once made, so an unchanged file keeps its
// identity: a rebuild that changed one file recompresses one chunk, and
// reads no other file. Concatenated frames are one valid zstd stream, and
// the bytes do not depend on which frames came from the cache.
// ---------------------------------------------------------------------------

const CHUNK_MIN: u64 = 4 << 20;
const CHUNK_MAX: u64 = 64 << 20;
const CHUNK_FORMAT: &str = "nib-chunk-1";
/// Part of the rootfs record key: bump when the rootfs byte layout changes.
pub const ROOTFS_FORMAT: &str = "c2";

enum ItemKind {
    Dir,
    File,
    Symlink(PathBuf),
    HardLink(PathBuf),
    Device(tar::EntryType, u64),
}

struct Item {
    path: PathBuf,
    rel: PathBuf,
    meta: fs::Metadata,
    kind: ItemKind,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn item_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", path.display())),
    };
    let mut names: Vec<_> = names.collect();
    names.sort();
    for n in names {
        let ns = n.to_string_lossy().into_owned();
        if ns.starts_with("trusted.overlay.") || ns.starts_with("user.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(path, &n)? {
            out.push((format!("SCHILY.xattr.{ns}"), v));
        }
    }
    Ok(out)
}

fn collect(
    path: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    out: &mut Vec<Item>,
) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        ItemKind::Dir
    } else if ft.is_symlink() {
        ItemKind::Symlink(fs::read_link(path)?)
    } else if ft.is_file() {
        let key = (meta.dev(), meta.ino());
        match (meta.nlink() > 1)
            .then(|| links.get(&key).cloned())
            .flatten()
        {
            Some(first) => ItemKind::HardLink(first),
            None => {
                if meta.nlink() > 1 {
                    links.insert(key, rel.to_path_buf());
                }
                ItemKind::File
            }
        }
    } else if ft.is_char_device() {
        ItemKind::Device(tar::EntryType::Char, meta.rdev())
    } else if ft.is_block_device() {
        ItemKind::Device(tar::EntryType::Block, meta.rdev())
    } else if ft.is_fifo() {
        ItemKind::Device(tar::EntryType::Fifo, 0)
    } else {
        return Ok(()); // sockets
    };
    let xattrs = match kind {
        ItemKind::HardLink(_) => Vec::new(),
        _ => item_xattrs(path)?,
    };
    let is_dir = matches!(kind, ItemKind::Dir);
    out.push(Item {
        path: path.to_path_buf(),
        rel: rel.to_path_buf(),
        meta,
        kind,
        xattrs,
    });
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            collect(&path.join(&n), &rel.join(&n), links, out)?;
        }
    }
    Ok(())
}

fn path_hash(p: &Path) -> u64 {
    // FNV-1a: cheap, stable across runs and machines
    let mut h: u64 = 0xcbf29ce484222325;
    for b in p.as_os_str().as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn chunk_key(items: &[Item], epoch: u64) -> String {
    let mut h = Sha256::new();
    h.update(format!("{CHUNK_FORMAT} level={ZSTD_LEVEL} epoch={epoch}\n").as_bytes());
    for it in items {
        let m = &it.meta;
        h.update(it.rel.as_os_str().as_bytes());
        h.update(
            format!(
                "\0{:o}:{}:{}:{}:{}",
                m.mode(),
                m.uid(),
                m.gid(),
                (m.mtime().max(0) as u64).min(epoch),
                m.len()
            )
            .as_bytes(),
        );
        match &it.kind {
            ItemKind::Dir => h.update(b"d"),
            ItemKind::File => h.update(
                // not st_dev: every overlay mount gets a new one; the trees
                // all live on the cache's filesystem
                format!(
                    "f{}:{}.{}:{}",
                    m.ino(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.mtime_nsec()
                )
                .as_bytes(),
            ),
            ItemKind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_os_str().as_bytes());
            }
            ItemKind::HardLink(t) => {
                h.update(b"h");
                h.update(t.as_os_str().as_bytes());
            }
            ItemKind::Device(k, r) => h.update(format!("c{:?}{r}", k).as_bytes()),
        }
        for (k, v) in &it.xattrs {
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_le_bytes());
            h.update(v);
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn chunk_tar(items: &[Item], epoch: u64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for it in items {
        let m = &it.meta;
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime((m.mtime().max(0) as u64).min(epoch));
        h.set_size(0);
        if !it.xattrs.is_empty() {
            tar.append_pax_extensions(it.xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        match &it.kind {
            ItemKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, tar_name(&it.rel, true), io::empty())?;
            }
            ItemKind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(m.len());
                let f = fs::File::open(&it.path)
                    .with_context(|| format!("opening {}", it.path.display()))?;
                tar.append_data(&mut h, &it.rel, f.take(m.len()))
                    .with_context(|| format!("archiving {}", it.path.display()))?;
            }
            ItemKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, &it.rel, t)?;
            }
            ItemKind::HardLink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                tar.append_link(&mut h, &it.rel, t)?;
            }
            ItemKind::Device(k, rdev) => {
                h.set_entry_type(*k);
                if *k != tar::EntryType::Fifo {
                    h.set_device_major(nix::sys::stat::major(*rdev) as u32)?;
                    h.set_device_minor(nix::sys::stat::minor(*rdev) as u32)?;
                }
                tar.append_data(&mut h, &it.rel, io::empty())?;
            }
        }
    }
    let mut bytes = tar.into_inner()?;
    // into_inner() appends the end-of-archive blocks: only the last frame has them
    bytes.truncate(bytes.len().saturating_sub(1024));
    Ok(bytes)
}

fn compress_frame(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 3), ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Make the frame of one chunk into `chunks/<key>` (with `<key>.sha256`).
fn make_chunk(items: &[Item], epoch: u64, chunks: &Path, key: &str) -> Result<()> {
    let frame = compress_frame(&chunk_tar(items, epoch)?)?;
    let sha = hex::encode(Sha256::digest(&frame));
    let tmp = chunks.join(format!(".tmp-{key}"));
    fs::write(&tmp, &frame).with_context(|| format!("writing {}", tmp.display()))?;
    fs::write(chunks.join(format!("{key}.sha256")), sha.as_bytes())?;
    fs::rename(&tmp, chunks.join(key))?;
    Ok(())
}

/// Statistics of a chunked seal.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkStats {
    pub chunks: usize,
    pub reused: usize,
}

/// Seal a finished root into `blobs/<sha256>` from cached or new frames.
pub fn seal_chunked(
    src: &Path,
    epoch: u64,
    blobs: &Path,
    chunks: &Path,
) -> Result<(Sealed, ChunkStats)> {
    fs::create_dir_all(blobs)?;
    fs::create_dir_all(chunks)?;
    let mut items = Vec::new();
    collect(src, Path::new("."), &mut HashMap::new(), &mut items)?;
    // content-defined cut points
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut acc) = (0usize, 0u64);
    for (i, it) in items.iter().enumerate() {
        let size = if matches!(it.kind, ItemKind::File) {
            it.meta.len()
        } else {
            0
        };
        acc += 512 + size.div_ceil(512) * 512;
        if (acc >= CHUNK_MIN && path_hash(&it.rel) % 16 == 0) || acc >= CHUNK_MAX {
            ranges.push(start..i + 1);
            start = i + 1;
            acc = 0;
        }
    }
    if start < items.len() {
        ranges.push(start..items.len());
    }
    let keys: Vec<String> = ranges
        .iter()
        .map(|r| chunk_key(&items[r.clone()], epoch))
        .collect();
    let todo: Vec<usize> = (0..ranges.len())
        .filter(|i| {
            !chunks.join(&keys[*i]).is_file()
                || !chunks.join(format!("{}.sha256", keys[*i])).is_file()
        })
        .collect();
    let stats = ChunkStats {
        chunks: ranges.len(),
        reused: ranges.len() - todo.len(),
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = zstd_threads() as usize;
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let t = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(&i) = todo.get(t) else { return Ok(()) };
                        make_chunk(&items[ranges[i].clone()], epoch, chunks, &keys[i])?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a compression thread panicked"))??;
        }
        Ok(())
    })?;
    // assemble, checking every frame against its recorded digest
    let tmp = tempfile::Builder::new()
        .prefix(".seal-")
        .tempfile_in(blobs)?;
    let mut hw = HashWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.reopen()?));
    for (i, key) in keys.iter().enumerate() {
        let mut frame =
            fs::read(chunks.join(key)).with_context(|| format!("reading chunk {key}"))?;
        let want = fs::read_to_string(chunks.join(format!("{key}.sha256"))).unwrap_or_default();
        if hex::encode(Sha256::digest(&frame)) != want.trim() {
            // corrupt cached frame: make it again
            make_chunk(&items[ranges[i].clone()], epoch, chunks, key)?;
            frame = fs::read(chunks.join(key))?;
        }
        hw.write_all(&frame)?;
    }
    hw.write_all(&compress_frame(&[0u8; 1024])?)?;
    let (buf, digest, size) = hw.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let dest = blobs.join(&digest);
    tmp.persist(&dest).map_err(|e| e.error)?;
    nib_host::write::sync_dir(blobs)?;
    Ok((Sealed { digest, size }, stats))
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn chunked_seal_is_a_valid_tar_and_reuses_frames() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        for i in 0..200 {
            let d = root.join(format!("d{}", i % 7));
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(
                d.join(format!("f{i}")),
                vec![(i % 251) as u8; 40_000 + i * 100],
            )
            .expect("write");
        }
        std::os::unix::fs::symlink("d0/f0", root.join("link")).expect("symlink");
        let (blobs, chunks) = (t.path().join("blobs"), t.path().join("chunks"));
        let (a, sa) = seal_chunked(&root, 1_000_000, &blobs, &chunks).expect("seal");
        assert!(sa.chunks > 1, "{sa:?}");
        let (b, sb) = seal_chunked(&root, 1_000_000, &blobs, &chunks).expect("reseal");
        assert_eq!(a, b);
        assert_eq!(sb.reused, sb.chunks);
        // bytes do not depend on the frame cache
        let (c, _) =
            seal_chunked(&root, 1_000_000, &blobs, &t.path().join("chunks2")).expect("cold");
        assert_eq!(a, c);
        // one file changed: its chunk (and at most the next, whose cut
        // point may move) made again, the rest reused
        fs::write(root.join("d3/f10"), b"changed").expect("write");
        let (d, sd) = seal_chunked(&root, 1_000_000, &blobs, &chunks).expect("warm");
        assert_ne!(a, d);
        assert!(sd.reused >= 1 && sd.chunks - sd.reused <= 2, "{sd:?}");
        let (e, _) =
            seal_chunked(&root, 1_000_000, &blobs, &t.path().join("chunks3")).expect("cold");
        assert_eq!(d, e, "warm and cold seal agree");
        // a valid tar with all entries
        let f = fs::File::open(blobs.join(&d.digest)).expect("open");
        let mut ar = tar::Archive::new(zstd::stream::Decoder::new(f).expect("zstd"));
        let names: Vec<String> = ar
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names.len(), 1 + 7 + 200 + 1);
        assert!(names.contains(&"d3/f10".to_string()));
    }
}
