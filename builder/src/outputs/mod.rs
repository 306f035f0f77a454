//! Bootable outputs beside `rootfs.tar.zst`: `disk.raw` (+ `.bmap`, `.zst`),
//! `pxe/` (kernel, initrd, squashfs root, iPXE script) and `disk.qcow2`.
//! Each is bit-identical across builds of the same root tree: identifiers
//! derive from `rootfs_digest`, times are the build epoch.

pub mod bmap;
pub mod bootfiles;
pub mod cpio;
pub mod disk;
pub mod esp;
pub mod ext4;
pub mod files;
pub mod gpt;
pub mod pxe;
pub mod qcow2;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::OutputKind;

/// What the build knows when it makes the bootable outputs.
#[derive(Debug, Clone)]
pub struct OutputContext<'a> {
    /// The finished root filesystem as a directory tree (root-owned, final).
    pub rootfs: &'a Path,
    /// `out/<image>/`: outputs are written below it.
    pub out_dir: &'a Path,
    /// Image name, e.g. `controller-bookworm`.
    pub image: &'a str,
    /// SOURCE_DATE_EPOCH of the build: every timestamp is clamped to it.
    pub epoch: u64,
    /// sha256 hex of the rootfs tarball: seeds UUIDs and other identifiers so
    /// that they are stable across rebuilds and differ between images.
    pub rootfs_digest: &'a str,
}

/// One file the build produced, for `manifest.json` and `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputRecord {
    /// Path relative to `out/<image>/`, e.g. `pxe/root.squashfs`.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// zstd level of disk.raw.zst: fast, and the holes compress to nothing anyway.
const ZSTD_LEVEL: i32 = 6;

/// Make every requested output other than `Rootfs` (the builder writes that
/// one itself). Everything is made in a staging directory inside `out_dir`
/// and renamed into place only when all of it succeeded, so a failure
/// leaves no partial output behind.
pub fn build_outputs(
    ctx: &OutputContext<'_>,
    kinds: &[OutputKind],
) -> anyhow::Result<Vec<OutputRecord>> {
    let raw = kinds.contains(&OutputKind::Raw);
    let pxe = kinds.contains(&OutputKind::Pxe);
    let qcow2 = kinds.contains(&OutputKind::Qcow2);
    if !(raw || pxe || qcow2) {
        return Ok(Vec::new());
    }
    fs::create_dir_all(ctx.out_dir)
        .with_context(|| format!("creating {}", ctx.out_dir.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".nib-outputs.")
        .tempdir_in(ctx.out_dir)
        .with_context(|| format!("creating a staging directory in {}", ctx.out_dir.display()))?;
    let scratch = stage.path().join(".scratch");
    fs::create_dir(&scratch)?;
    let mut made: Vec<PathBuf> = Vec::new(); // relative paths, staged under `stage`

    if raw || qcow2 {
        let disk_raw = stage.path().join("disk.raw");
        let layout = disk::build(ctx, &disk_raw, &scratch)?;
        if raw {
            let map = bmap::create(&disk_raw, &layout.written)?;
            files::write_staged(
                &stage.path().join("disk.raw.bmap"),
                bmap::to_xml(&map).as_bytes(),
            )?;
            compress_zstd(&disk_raw, &stage.path().join("disk.raw.zst"))?;
            made.extend(["disk.raw", "disk.raw.bmap", "disk.raw.zst"].map(PathBuf::from));
        }
        if qcow2 {
            qcow2::convert(&disk_raw, &stage.path().join("disk.qcow2"))?;
            made.push("disk.qcow2".into());
        }
    }

    if pxe {
        let dir = stage.path().join("pxe");
        fs::create_dir(&dir)?;
        let boot = bootfiles::find(ctx.rootfs)?;
        fs::copy(&boot.kernel, dir.join("vmlinuz"))
            .with_context(|| format!("copying {}", boot.kernel.display()))?;
        files::write_staged(&dir.join("initrd.img"), &pxe::initrd(ctx, &boot)?)?;
        pxe::squashfs(ctx, &dir.join("root.squashfs"))?;
        files::write_staged(
            &dir.join("boot.ipxe"),
            pxe::ipxe_script(ctx.image, &boot.kernel_version).as_bytes(),
        )?;
        made.extend(
            ["vmlinuz", "initrd.img", "root.squashfs", "boot.ipxe"]
                .map(|n| Path::new("pxe").join(n)),
        );
    }

    made.sort();
    let mut records = Vec::new();
    for rel in &made {
        let (sha256, size) = files::sha256_file(&stage.path().join(rel))?;
        records.push(OutputRecord {
            path: rel.clone(),
            sha256,
            size,
        });
    }
    for rel in &made {
        let dst = ctx.out_dir.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        nib_host::write::publish(&stage.path().join(rel), &dst)?;
    }
    Ok(records)
}

/// disk.raw.zst: one frame, fixed level and worker count (zstd's output
/// depends on both), content checksum on.
fn compress_zstd(src: &Path, dst: &Path) -> Result<()> {
    let mut input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let out = File::create_new(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut enc =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, out), ZSTD_LEVEL)?;
    enc.multithread(2)?;
    enc.include_checksum(true)?;
    io::copy(&mut input, &mut enc).with_context(|| format!("compressing {}", src.display()))?;
    let mut w = enc.finish()?;
    w.flush()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", dst.display()))
}
